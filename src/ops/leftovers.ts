/**
 * Leftovers: what interrupted writers (a SIGKILL, a crash, a dropped connection) left on a target, removed at
 * the start of the next writing run (docs/design.md §13, §14). Called by backupOperation and
 * copyToDestination, so `bulwark backup`, `bulwark copy` and every backup and copy step of `bulwark run` clean
 * each target they write to. It removes:
 *  1. the locks of processes of this host that no longer exist (never a live process's lock, nor another
 *     host's: only age makes those stale, and a suspended process may come back);
 *  2. temporary files of saves not touched for the grace (Backend.removeStaleTempFiles: `.tmp-*` files on a
 *     local directory or SFTP, unfinished multipart uploads on S3). A live save keeps touching its file, so
 *     the grace (prune's, an hour) never takes one from under another writer.
 * Housekeeping must not cost a backup: a failure here is a warning and the run goes on.
 */
import { redact } from "../backend/registry.js";
import type { Clock } from "../core/clock.js";
import { errorMessage } from "../core/errors.js";
import { emitMessage, type EventSink } from "../core/events.js";
import { removeDeadLocalLocks } from "../repository/lock.js";
import { TEMP_FILE_GRACE_MS } from "../repository/prune.js";
import type { Repository } from "../repository/repository.js";

export interface LeftoversInput {
  repo: Repository;
  /** "target nas", or a location (already redacted), for messages; default the redacted location. */
  label?: string;
  clock: Clock;
  events?: EventSink;
  /** Temporary files not modified for this long are removed (default TEMP_FILE_GRACE_MS, an hour). */
  graceMs?: number;
}

export interface LeftoversResult {
  /** Locks of dead processes of this host removed, with the pid that held them. */
  locks: { name: string; pid: number; time: string }[];
  /** Temporary files (or unfinished multipart uploads) removed. */
  tempFiles: number;
  /** Why the cleanup stopped, if it did (also emitted as a warning). */
  error?: string;
}

export async function removeLeftovers(input: LeftoversInput): Promise<LeftoversResult> {
  const { repo, clock } = input;
  const label = input.label ?? redact(repo.backend.location);
  const result: LeftoversResult = { locks: [], tempFiles: 0 };
  try {
    result.locks = (await removeDeadLocalLocks(repo)).map(({ name, lock }) => ({
      name,
      pid: lock.pid,
      time: lock.time,
    }));
    if (repo.backend.removeStaleTempFiles !== undefined)
      result.tempFiles = await repo.backend.removeStaleTempFiles(input.graceMs ?? TEMP_FILE_GRACE_MS);
  } catch (err) {
    result.error = errorMessage(err);
    emitMessage(
      input.events,
      clock.now(),
      "warning",
      `could not remove what interrupted runs left on ${label}: ${result.error}`,
    );
  }
  const parts: string[] = [];
  if (result.locks.length > 0)
    parts.push(
      `${result.locks.length === 1 ? "the lock" : `${result.locks.length} locks`} of dead process${result.locks.length === 1 ? "" : "es"} ${result.locks.map((l) => l.pid).join(", ")}`,
    );
  if (result.tempFiles > 0)
    parts.push(`${result.tempFiles} temporary file${result.tempFiles === 1 ? "" : "s"} of interrupted saves`);
  if (parts.length > 0)
    emitMessage(input.events, clock.now(), "info", `removed from ${label} ${parts.join(" and ")}`);
  return result;
}
