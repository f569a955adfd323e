/**
 * Copy: the one implementation behind `bulwark copy` and the copy steps of `bulwark run` (docs/design.md
 * §18a, §23). Given an open source repository and a destination it can open or create, it:
 *  1. opens the destination; one that holds no repository is created as a copy of the source (same chunker
 *     parameters and blob ids, its own password) when the caller allows it, and is an error otherwise (an
 *     unmounted share must not silently become a new repository);
 *  2. refuses, before any lock or write, a destination that is not of the source's copy set;
 *  3. takes a shared lock on both sides, removes what interrupted writers left on the destination (the locks
 *     of dead processes of this host, temporary files past the grace: ./leftovers.ts), loads both indexes;
 *  4. copies the snapshots the caller selects (with both repositories at hand: "those the destination
 *     lacks" needs both), verifying every pack on arrival unless told not to;
 *  5. reports through events: progress, one `snapshot-saved` per snapshot now on the destination and one
 *     `snapshot-copied` per snapshot sent (what the catalog records), warnings.
 * The caller owns the source; the destination is closed here.
 */
import type { Clock } from "../core/clock.js";
import { BulwarkError, hasCode } from "../core/errors.js";
import { formatBytes, formatCount } from "../core/format.js";
import { emitMessage, type EventSink } from "../core/events.js";
import { assertCopyCompatible, copySnapshots, snapshotIdentity, type CopyResult } from "../copy/copier.js";
import { RepoLock } from "../repository/lock.js";
import type { Repository } from "../repository/repository.js";
import { loadAllSnapshots, type SnapshotWithId } from "../snapshot/snapshot.js";
import { removeLeftovers } from "./leftovers.js";

/** One end of a copy: how to open (or create) its repository, and what to call it in messages. */
export interface CopyEndpoint {
  /** "target nas", or a location (already redacted). */
  label: string;
  open(): Promise<Repository>;
  /** Creates the repository as a copy of `from` (its chunker parameters and blob ids). */
  create(from: Repository): Promise<Repository>;
}

export interface CopyInput {
  source: Repository;
  /** The source's label for events (`from` of snapshot-copied). */
  sourceLabel: string;
  destination: CopyEndpoint;
  clock: Clock;
  events?: EventSink;
  /** Create the destination's repository when it has none (default false: an error). */
  init?: boolean;
  /** The hint of the error for a missing destination repository without `init`. */
  missingHint?: string;
  /** Which source snapshots to copy (default all); called with both sides locked and indexed. */
  select?: (source: Repository, destination: Repository) => Promise<SnapshotWithId[] | undefined>;
  /** Read every pack back from the destination (default true). */
  verify?: boolean;
  /** The caller already loaded the source's index (a backup just ran on it). */
  sourceIndexLoaded?: boolean;
  /** Messages are scrubbed of these before they are emitted (credentials read for the two sides). */
  scrub?: (message: string) => string;
}

export interface CopyOutcome extends CopyResult {
  /** The destination's repository was created by this copy. */
  createdRepository: boolean;
  /** The destination repository's id. */
  destinationId: string;
}

export async function copyToDestination(input: CopyInput): Promise<CopyOutcome> {
  const { source, destination, clock } = input;
  const say = (level: "info" | "warning" | "error", message: string): void =>
    emitMessage(input.events, clock.now(), level, input.scrub ? input.scrub(message) : message);
  let created = false;
  let target: Repository;
  try {
    target = await destination.open();
  } catch (err) {
    if (!hasCode(err, "NO_REPOSITORY")) throw err;
    if (input.init !== true) {
      if (input.missingHint === undefined) throw err;
      throw new BulwarkError("NO_REPOSITORY", `${destination.label} holds no repository`, {
        cause: err,
        hint: input.missingHint,
      });
    }
    target = await destination.create(source);
    created = true;
    say("info", `created the repository of ${destination.label} (${target.id.slice(0, 10)}) as a copy`);
  }
  let sourceLock: RepoLock | undefined;
  let targetLock: RepoLock | undefined;
  try {
    // Before any lock: a destination of another copy set must not be written to at all.
    assertCopyCompatible(source, target);
    sourceLock = await RepoLock.acquire(source, false, clock);
    targetLock = await RepoLock.acquire(target, false, clock);
    await removeLeftovers({
      repo: target,
      label: destination.label,
      clock,
      ...(input.events ? { events: input.events } : {}),
    });
    await Promise.all([
      input.sourceIndexLoaded === true ? undefined : source.loadIndex(),
      target.loadIndex(),
    ]);
    const wanted = input.select ? await input.select(source, target) : undefined;
    const verify = input.verify !== false;
    const result = await copySnapshots(source, target, {
      ...(wanted ? { snapshots: wanted } : {}),
      verify,
      reporter: {
        progress: (p) =>
          input.events?.({
            type: "progress",
            time: clock.now(),
            kind: "copy",
            items: p.blobsDone,
            itemsTotal: p.blobsTotal,
            bytes: p.bytesDone,
            bytesTotal: p.bytesTotal,
            current: `snapshot ${p.snapshot.slice(0, 8)} (${p.snapshotIndex + 1}/${p.snapshotCount})`,
          }),
        snapshotDone: (c) =>
          say(
            "info",
            c.alreadyThere
              ? `${c.source.slice(0, 8)} is already on ${destination.label} as ${c.target.slice(0, 8)}`
              : `${c.source.slice(0, 8)} copied to ${destination.label} as ${c.target.slice(0, 8)}: ` +
                  `${formatCount(c.blobsCopied)} blobs, ${formatBytes(c.bytesCopied)}`,
          ),
        warn: (m) => say("warning", m),
      },
    });
    const bySource = new Map(
      (wanted ?? (await loadAllSnapshots(source, () => undefined))).map((s) => [s.id, s]),
    );
    for (const s of result.snapshots) {
      const original = bySource.get(s.source);
      if (original === undefined) continue;
      const time = clock.now();
      input.events?.({
        type: "snapshot-saved",
        time,
        snapshot: s.target,
        original: snapshotIdentity(original),
        ...(original.dataset !== undefined ? { dataset: original.dataset } : {}),
        snapshotTime: new Date(original.time),
        hostname: original.hostname,
        paths: original.paths,
        tags: original.tags,
      });
      if (!s.alreadyThere) {
        input.events?.({
          type: "snapshot-copied",
          time,
          from: input.sourceLabel,
          to: destination.label,
          sourceSnapshot: s.source,
          targetSnapshot: s.target,
          blobs: s.blobsCopied,
          bytes: s.bytesCopied,
          verified: verify,
        });
      }
    }
    return { ...result, createdRepository: created, destinationId: target.id };
  } finally {
    await targetLock?.release().catch(() => undefined);
    await sourceLock?.release().catch(() => undefined);
    await target.backend.close().catch(() => undefined);
  }
}

/**
 * The snapshots of a dataset on `source` newer than the newest the destination holds (all of them on a new
 * destination): what a job's copy sends, so a destination that was down catches up and snapshots its own
 * retention removed are never sent again.
 */
export async function datasetSnapshotsToCopy(
  dataset: string,
  source: Repository,
  destination: Repository,
): Promise<SnapshotWithId[]> {
  const mine = (s: SnapshotWithId): boolean => s.dataset === dataset;
  const onSource = (await loadAllSnapshots(source, () => undefined)).filter(mine);
  const onDestination = (await loadAllSnapshots(destination, () => undefined)).filter(mine);
  const newest = onDestination.reduce<string | undefined>(
    (t, s) => (t === undefined || s.time > t ? s.time : t),
    undefined,
  );
  const there = new Set(onDestination.map(snapshotIdentity));
  return onSource.filter((s) => !there.has(snapshotIdentity(s)) && (newest === undefined || s.time > newest));
}
