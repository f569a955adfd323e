/**
 * The immutable flag (`chattr +i`) on files the vault stores, as hardened repositories do.
 *
 * An immutable file cannot be written, renamed, linked over or unlinked, not even by root, and its times
 * cannot be changed, until the flag is cleared. The vault sets it right after a file is saved and keeps it
 * while the file's retention runs (./server.ts: without --retention-days, until an admin deletes the file),
 * so a compromised client token, a bug in the server's own request handling, or an operator's stray
 * `rm -rf` cannot destroy stored data; only a deliberate `chattr -i` by root can.
 *
 * It needs root (CAP_LINUX_IMMUTABLE), the `chattr` tool and a file system that supports the flag (ext4,
 * xfs, btrfs, tmpfs on recent kernels). detectImmutability probes all three with a scratch file.
 */

import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { open, unlink } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

import { BulwarkError, errorMessage } from "../core/errors.js";

const run = promisify(execFile);

export type ImmutabilityMode = "auto" | "off" | "require";

export interface Immutability {
  readonly enabled: boolean;
  /** Why it is off, for the startup log. */
  readonly reason: string;
  set(path: string): Promise<void>;
  clear(path: string): Promise<void>;
}

const DISABLED = (reason: string): Immutability => ({
  enabled: false,
  reason,
  set: () => Promise.resolve(),
  clear: () => Promise.resolve(),
});

async function chattr(flag: "+i" | "-i", path: string): Promise<void> {
  await run("chattr", [flag, path], { timeout: 30_000 });
}

/** Whether the flag is on: lsattr prints the flags, then the path. */
export async function isImmutable(path: string): Promise<boolean> {
  const { stdout } = await run("lsattr", ["-d", path], { timeout: 30_000 });
  const flags = stdout.trim().split(/\s+/)[0] ?? "";
  return flags.includes("i");
}

/** lsattr arguments per call: far below ARG_MAX with the longest paths a repository has. */
const FLAG_BATCH = 500;

/**
 * The immutable flag of many files at once (one lsattr per FLAG_BATCH paths, not one per file). A path that
 * lsattr could not read (removed meanwhile) is absent from the result.
 */
export async function immutableFlags(paths: readonly string[]): Promise<Map<string, boolean>> {
  const flags = new Map<string, boolean>();
  for (let i = 0; i < paths.length; i += FLAG_BATCH) {
    const batch = paths.slice(i, i + FLAG_BATCH);
    let stdout: string;
    try {
      ({ stdout } = await run("lsattr", ["--", ...batch], { timeout: 120_000, maxBuffer: 64 * 1024 * 1024 }));
    } catch (err) {
      // A file that vanished makes lsattr fail, but it still printed the others.
      const partial = (err as { stdout?: unknown }).stdout;
      if (typeof partial !== "string") throw err;
      stdout = partial;
    }
    const wanted = new Set(batch);
    for (const line of stdout.split("\n")) {
      const space = line.indexOf(" ");
      if (space <= 0) continue;
      // lsattr prints "FLAGS PATH": the path is everything after the first space, spaces included.
      const path = line.slice(space + 1);
      if (wanted.has(path)) flags.set(path, line.slice(0, space).includes("i"));
    }
  }
  return flags;
}

/**
 * Decides whether files under `root` can be made immutable. "auto" turns it on when possible; "require"
 * throws when it is not; "off" never touches the flag.
 */
export async function detectImmutability(root: string, mode: ImmutabilityMode): Promise<Immutability> {
  if (mode === "off") return DISABLED("turned off");
  const reason = await probe(root);
  if (reason === undefined) {
    return { enabled: true, reason: "", set: (p) => chattr("+i", p), clear: (p) => chattr("-i", p) };
  }
  if (mode === "require") {
    throw new BulwarkError("USAGE", `cannot make stored files immutable in ${root}: ${reason}`, {
      hint: "run the vault as root on a file system that supports `chattr +i` (ext4, xfs, btrfs)",
    });
  }
  return DISABLED(reason);
}

/** Tries the flag on a scratch file; returns why it cannot be used, or undefined when it can. */
async function probe(root: string): Promise<string | undefined> {
  if (process.platform !== "linux") return "only supported on Linux";
  if (process.getuid?.() !== 0) return "the server does not run as root";
  const path = join(root, `.tmp-immutable-probe-${randomBytes(8).toString("hex")}`);
  try {
    await (await open(path, "wx", 0o444)).close();
  } catch (err) {
    return `cannot create a probe file: ${errorMessage(err)}`;
  }
  try {
    try {
      await chattr("+i", path);
    } catch (err) {
      return `chattr +i failed (${firstLine(err)})`;
    }
    const on = await isImmutable(path).catch(() => false);
    await chattr("-i", path).catch(() => undefined);
    return on ? undefined : "the file system ignores the immutable flag";
  } finally {
    await unlink(path).catch(() => undefined);
  }
}

function firstLine(err: unknown): string {
  const stderr = (err as { stderr?: unknown }).stderr;
  const text = typeof stderr === "string" && stderr.trim() !== "" ? stderr : errorMessage(err);
  return text.trim().split("\n")[0] ?? "";
}
