/**
 * `bulwark repair --index` (docs/design.md §18b, "Index repair"): rebuilds the index from the pack headers
 * when index files are damaged, as restic's `repair index` does. Every pack is self-describing (§9), so what
 * a damaged index file said is recovered from the packs it named.
 *
 *  1. Lock exclusively (a dry run: shared); load every index file, the damaged ones reported, not read.
 *  2. Read the header of every pack that no readable index file lists (nor retires): two ranged reads per
 *     pack, or with `readData` the whole pack, every blob checked against its id (a damaged pack is then
 *     left out and reported, for `bulwark repair --from` to heal).
 *  3. Write new index files for those packs, each with `supersedes` = the damaged index files. Only then
 *  4. delete the damaged index files, where the target allows it (an Object Lock or an append-only token
 *     does not: the file stays, superseded, which prune and check tolerate, and prune deletes it later).
 *  5. Walk every snapshot: blobs a snapshot needs that are still not indexed are counted (`missing`): they
 *     were in packs that are gone or whose header does not read; `bulwark repair --from` fetches them.
 * Killed between 3 and 4, the damaged file and the new ones are side by side: readers skip the damaged one
 * (Repository.loadIndex) and a pack listed twice is a duplicate readers tolerate; a rerun finishes.
 *
 * `distrust` names readable index files to treat as damaged (§19, "Index poisoning"): an index file that retires intact packs
 * (check names it, `retired-intact`) was written by whoever holds the key, not by repair. It is left out in 1,
 * the packs it alone listed are indexed again from their headers in 2-3, and it is deleted in 4. Only a
 * deletion undoes it (readers honour any readable file), so a target that refuses it keeps it, and says so.
 */
import type { Clock } from "../core/clock.js";
import { BulwarkError, errorMessage } from "../core/errors.js";
import { emitMessage, type EventSink } from "../core/events.js";
import { formatCount } from "../core/format.js";
import { readUnindexedPacks } from "../copy/copier.js";
import { RepoLock } from "../repository/lock.js";
import type { IndexFile } from "../repository/master-index.js";
import type { PackedBlob } from "../repository/pack.js";
import { removeUnlessLocked } from "../repository/prune.js";
import type { Repository } from "../repository/repository.js";
import { usedBlobs } from "../snapshot/used-blobs.js";

export interface RepairIndexInput {
  repo: Repository;
  /** Its target name or location, for messages. */
  label: string;
  clock: Clock;
  events?: EventSink;
  /** Read every re-indexed pack whole and check each blob, instead of its header only. */
  readData?: boolean;
  /** Plan only: which index files are damaged and what the packs' headers hold; nothing is written. */
  dryRun?: boolean;
  /** Readable index files to replace as if damaged: full names or unique prefixes (see the header). */
  distrust?: readonly string[];
}

export interface RepairIndexOutcome {
  target: string;
  dryRun: boolean;
  /** True when, afterwards (or as planned), every blob a snapshot needs is indexed and no distrusted file stays. */
  ok: boolean;
  /** Index files that do not authenticate or parse. */
  damagedIndexFiles: { name: string; error: string }[];
  /** The index files `distrust` named, resolved to full names. */
  distrusted: string[];
  /** Packs no readable index file listed, indexed again from their headers. */
  packsIndexed: number;
  blobsIndexed: number;
  /** Packs no readable index lists whose header (or, with readData, content) does not read. */
  unreadablePacks: { pack: string; error: string }[];
  indexFilesWritten: number;
  /** Damaged index files deleted. */
  removed: string[];
  /** Damaged index files the target keeps (retention, append-only): superseded, deleted by a later prune. */
  locked: { file: string; until?: string }[];
  /** Blobs a snapshot needs that no index lists even now (the snapshots could not be walked: undefined). */
  missing?: number;
  /** Why the snapshots could not be walked (a tree that is not indexed or does not read). */
  walkError?: string;
  durationMs: number;
}

/** As prune's index files: one file per this many blobs. */
const INDEX_FILE_MAX_BLOBS = 50_000;

export async function repairIndex(input: RepairIndexInput): Promise<RepairIndexOutcome> {
  const { repo, clock } = input;
  const started = clock.now();
  const dryRun = input.dryRun === true;
  const say = (level: "info" | "warning" | "error", message: string): void =>
    emitMessage(input.events, clock.now(), level, message);
  const outcome: RepairIndexOutcome = {
    target: input.label,
    dryRun,
    ok: false,
    damagedIndexFiles: [],
    distrusted: [],
    packsIndexed: 0,
    blobsIndexed: 0,
    unreadablePacks: [],
    indexFilesWritten: 0,
    removed: [],
    locked: [],
    durationMs: 0,
  };
  const lock = await RepoLock.acquire(repo, !dryRun, clock);
  try {
    const distrusted = await resolveIndexNames(repo, input.distrust ?? []);
    outcome.distrusted = distrusted;
    const { damaged } = await repo.loadIndex({ exclude: new Set(distrusted) });
    outcome.damagedIndexFiles = damaged.sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const d of damaged) say("warning", `damaged index file: ${d.error}`);
    for (const name of distrusted)
      say("info", `index file ${name.slice(0, 12)} is distrusted: left unread, replaced`);

    const read = await readUnindexedPacks(repo, input.readData === true, (done, total, bytes) =>
      input.events?.({
        type: "progress",
        time: clock.now(),
        kind: "repair",
        items: done,
        itemsTotal: total,
        bytes,
        current: "reading pack headers",
      }),
    );
    outcome.packsIndexed = read.packs.length;
    outcome.blobsIndexed = read.blobs;
    outcome.unreadablePacks = read.unreadable;
    for (const u of read.unreadable) {
      say("warning", `pack ${u.pack.slice(0, 12)} is in no readable index and does not read: ${u.error}`);
    }

    const supersedes = [...damaged.map((d) => d.name), ...distrusted];
    // A damaged file an earlier run superseded (the target kept it) needs no new file: reruns add nothing.
    const fresh = supersedes.filter((name) => !repo.index.isSuperseded(name));
    if (!dryRun && (read.packs.length > 0 || fresh.length > 0)) {
      // 3. The new files first: a kill before 4 leaves duplicates, never a pack no index names.
      let batch: { id: string; blobs: PackedBlob[] }[] = [];
      let blobs = 0;
      const write = async (): Promise<void> => {
        await repo.saveDocument("index", {
          version: 1,
          packs: batch,
          ...(supersedes.length > 0 ? { supersedes } : {}),
        } satisfies IndexFile);
        outcome.indexFilesWritten++;
        batch = [];
        blobs = 0;
      };
      for (const p of read.packs) {
        batch.push(p);
        blobs += p.blobs.length;
        if (blobs >= INDEX_FILE_MAX_BLOBS) await write();
      }
      if (batch.length > 0 || outcome.indexFilesWritten === 0) await write();
    }
    for (const p of read.packs) repo.index.addPack(p.id, p.blobs);
    // 4. Then the damaged files, where the target lets go of them (an earlier run's too).
    if (!dryRun) {
      for (const name of supersedes) {
        if (await removeUnlessLocked(repo, "index", name, outcome.locked, () => clock.now().getTime())) {
          outcome.removed.push(name);
        }
      }
    }
    if (read.packs.length > 0) {
      say(
        "info",
        `${dryRun ? "would index" : "indexed"} ${formatCount(read.packs.length)} packs from their headers (${formatCount(read.blobs)} blobs)`,
      );
    }

    // 5. What the snapshots need that is still not indexed.
    try {
      const used = await usedBlobs(repo, { operation: "repair --index" });
      outcome.missing = [...used].filter((id) => !repo.index.has(id)).length;
    } catch (err) {
      outcome.walkError = errorMessage(err);
    }
    // A distrusted file the target kept still retires what it names for every reader: not repaired.
    const distrustKept =
      !dryRun && outcome.locked.some((l) => distrusted.some((d) => l.file === `index/${d.slice(0, 12)}`));
    outcome.ok = outcome.missing === 0 && !distrustKept;
  } finally {
    await lock.release();
  }
  outcome.durationMs = clock.now().getTime() - started.getTime();
  return outcome;
}

/** Full index file names for names or unique prefixes; USAGE for one that matches none or several. */
async function resolveIndexNames(repo: Repository, given: readonly string[]): Promise<string[]> {
  if (given.length === 0) return [];
  const names = await repo.listNames("index");
  return given.map((g) => {
    const matches = names.filter((n) => n.startsWith(g.toLowerCase()));
    if (matches.length === 1) return matches[0]!;
    throw new BulwarkError(
      "USAGE",
      matches.length === 0
        ? `--distrust ${g}: no index file of ${repo.backend.location} starts with it`
        : `--distrust ${g}: ${matches.length} index files start with it`,
      { hint: "give the name `bulwark check --read-data` printed, in full if a prefix is ambiguous" },
    );
  });
}
