/**
 * Repository locks (docs/design.md, "Locks").
 *
 * Backups, checks and restores take a shared lock; prune takes an exclusive one. A lock is a sealed file
 * naming host, process and time, refreshed every few minutes. It is stale when it was not refreshed for
 * STALE_AFTER, or when it belongs to this host and its process is gone; stale locks never block anyone and
 * `bulwark unlock` removes them.
 *
 * Acquiring: write our lock first, then list the others; on conflict remove ours and fail. Two processes
 * racing for conflicting locks may both fail, never both succeed.
 */
import { hostname } from "node:os";
import { userInfo } from "node:os";
import { BulwarkError, errorMessage, isNotFound } from "../core/errors.js";
import type { Repository } from "./repository.js";
import { systemClock, type Clock } from "../core/clock.js";

export interface LockInfo {
  time: string;
  exclusive: boolean;
  hostname: string;
  username: string;
  pid: number;
}

export const REFRESH_EVERY_MS = 5 * 60 * 1000;
export const STALE_AFTER_MS = 30 * 60 * 1000;

export function isStale(lock: LockInfo, now = systemClock.now().getTime()): boolean {
  if (now - Date.parse(lock.time) > STALE_AFTER_MS) return true;
  return isOfDeadLocalProcess(lock);
}

/**
 * Written on this host by a process that no longer exists (`kill(pid, 0)` fails with ESRCH; EPERM means it
 * lives under another user). Unlike age, this is certain on this host, so writers remove such locks.
 */
export function isOfDeadLocalProcess(lock: LockInfo): boolean {
  if (lock.hostname !== hostname()) return false;
  try {
    process.kill(lock.pid, 0);
  } catch (err) {
    return (err as { code?: string }).code === "ESRCH";
  }
  return false;
}

export async function listLocks(
  repo: Repository,
): Promise<{ name: string; lock?: LockInfo; error?: string }[]> {
  const out: { name: string; lock?: LockInfo; error?: string }[] = [];
  for (const name of await repo.listNames("lock")) {
    try {
      out.push({ name, lock: await repo.loadDocument<LockInfo>("lock", name) });
    } catch (err) {
      if (isNotFound(err)) continue;
      out.push({ name, error: errorMessage(err) });
    }
  }
  return out;
}

/** Locks this process holds, so an interrupted command can remove them before it exits. */
const held = new Set<RepoLock>();

/** Releases every lock of this process (for signal handlers); never throws. */
export async function releaseAllLocks(): Promise<void> {
  await Promise.all([...held].map((lock) => lock.release().catch(() => undefined)));
}

export class RepoLock {
  private timer: NodeJS.Timeout | undefined;
  private released = false;

  private constructor(
    private readonly repo: Repository,
    private name: string,
    private readonly info: LockInfo,
    private readonly clock: Clock,
  ) {}

  /** `clock` decides both our lock's time and which other locks are stale (tests move it by hand). */
  static async acquire(repo: Repository, exclusive: boolean, clock: Clock = systemClock): Promise<RepoLock> {
    const info: LockInfo = {
      time: clock.now().toISOString(),
      exclusive,
      hostname: hostname(),
      username: safeUser(),
      pid: process.pid,
    };
    const name = await repo.saveDocument("lock", info);
    const lock = new RepoLock(repo, name, info, clock);
    try {
      for (const other of await listLocks(repo)) {
        if (other.name === name || !other.lock || isStale(other.lock, clock.now().getTime())) continue;
        if (exclusive || other.lock.exclusive) {
          const o = other.lock;
          throw new BulwarkError(
            "REPO_LOCKED",
            `repository is locked ${o.exclusive ? "exclusively " : ""}by pid ${o.pid} on ${o.hostname} (${o.username}) since ${o.time}`,
            { hint: "wait for it to finish; if that process is gone, `bulwark unlock` removes stale locks" },
          );
        }
      }
    } catch (err) {
      await lock.release();
      throw err;
    }
    lock.timer = setInterval(() => void lock.refresh(), REFRESH_EVERY_MS);
    lock.timer.unref();
    held.add(lock);
    return lock;
  }

  private async refresh(): Promise<void> {
    if (this.released) return;
    const old = this.name;
    try {
      this.name = await this.repo.saveDocument("lock", {
        ...this.info,
        time: this.clock.now().toISOString(),
      });
      await this.repo.backend.remove({ type: "lock", name: old });
    } catch {
      // A failed refresh is retried at the next interval; the lock only goes stale after STALE_AFTER.
    }
  }

  async release(): Promise<void> {
    this.released = true;
    held.delete(this);
    if (this.timer) clearInterval(this.timer);
    try {
      await this.repo.backend.remove({ type: "lock", name: this.name });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
}

/**
 * Removes the locks that processes of this host left when they died (SIGKILL, a crash): never one of a live
 * process, of another host, or one that cannot be read. Returns the removed locks.
 */
export async function removeDeadLocalLocks(repo: Repository): Promise<{ name: string; lock: LockInfo }[]> {
  const removed: { name: string; lock: LockInfo }[] = [];
  for (const { name, lock } of await listLocks(repo)) {
    if (lock === undefined || !isOfDeadLocalProcess(lock)) continue;
    try {
      await repo.backend.remove({ type: "lock", name });
      removed.push({ name, lock });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
  return removed;
}

/** Removes stale locks (all locks with `all`); returns the names removed. */
export async function removeLocks(repo: Repository, all: boolean): Promise<string[]> {
  const removed: string[] = [];
  for (const entry of await listLocks(repo)) {
    if (all || !entry.lock || isStale(entry.lock)) {
      try {
        await repo.backend.remove({ type: "lock", name: entry.name });
        removed.push(entry.name);
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
  }
  return removed;
}

function safeUser(): string {
  try {
    return userInfo().username;
  } catch {
    return "";
  }
}
