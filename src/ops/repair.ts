/**
 * Repair (issue 10, docs/design.md §18b): heals one copy of a copy set from the others, blob by blob.
 * Copies share blob ids, so a blob damaged or missing on one copy is the same blob, by id, on every other.
 *
 *  1. Lock the damaged copy exclusively; find its damage: packs the catalog recorded damaged (verify), the
 *     structure pass of check (packs missing or truncated), with `readData` a verify that reads every pack
 *     first (and records what it read).
 *  2. Retire the damaged packs in memory: a blob they hold is served by another intact pack of the copy that
 *     holds it, or is missing. Adopt packs an interrupted repair (or copy, backup) saved but never indexed.
 *  3. Walk every snapshot's trees; every blob a snapshot needs that the copy no longer has intact is needed.
 *     (Blobs of damaged packs that no snapshot uses are not worth fetching: prune would delete them.)
 *  4. Obtain each needed blob, checked against its id: first from the damaged pack itself when that blob
 *     still reads intact there (a flipped byte spoils one blob, not its neighbours), then from the other
 *     copies in order (each under a shared lock), through the copier's blob transfer (re-sealed under this
 *     copy's key). Every pack written is read back before it is indexed.
 *  5. Write index files for the new packs, the last one naming the damaged packs in `retires`: from then on
 *     no reader reads them, and repair's entries win over the old ones (master-index.ts), also on a target
 *     that never deletes anything. A pack holding a needed blob no copy could provide is not retired.
 *  6. Delete the retired packs where the target allows it (never a locked object: reported instead); update
 *     the catalog: records of retired packs dropped, new packs recorded as read and sound.
 * Killed at any point, the copy stays consistent (packs -> index -> deletions, as §14), and the next run
 * finishes: new packs left unindexed are adopted, retired packs still stored are deleted.
 */
import type { Catalog, PackReadRecord } from "../catalog/catalog.js";
import type { Clock } from "../core/clock.js";
import { BulwarkError, errorMessage, hasCode } from "../core/errors.js";
import { emitMessage, type EventSink } from "../core/events.js";
import { formatCount } from "../core/format.js";
import { adoptUnindexedPacks, assertCopyCompatible, sendBlobs, verifyPack } from "../copy/copier.js";
import { RepoLock } from "../repository/lock.js";
import type { IndexEntry, IndexFile } from "../repository/master-index.js";
import type { BlobType, PackedBlob } from "../repository/pack.js";
import { PackWriter } from "../repository/pack-writer.js";
import { removeUnlessLocked } from "../repository/prune.js";
import type { Repository } from "../repository/repository.js";
import type { WorkerPool } from "../repository/worker-pool.js";
import { loadAllSnapshots, type SnapshotWithId } from "../snapshot/snapshot.js";
import { decodeTree, type Node } from "../snapshot/tree.js";
import { check, traceUsers, type Finding } from "../verify/checker.js";
import { verifyRepository } from "./verify.js";

/** Where coverage is remembered (the catalog; a type-only dependency). */
export type RepairCoverageStore = Pick<Catalog, "packReads" | "recordPackRead" | "forgetPackReads">;

/** Another copy of the copy set, opened (read-only) only when a blob is still needed. */
export interface RepairSource {
  /** The target name, or a location (redacted). */
  label: string;
  open(): Promise<Repository>;
}

export interface RepairInput {
  /** The damaged copy, opened read-write (read-only is enough for a dry run); the caller closes it. */
  repo: Repository;
  /** Its target name or location, for messages and the catalog. */
  label: string;
  /** The other copies, in the order to try them. */
  sources: readonly RepairSource[];
  /**
   * The user chose the sources (--from): one that is not of the copy set is an error. Otherwise such a
   * target is skipped with a warning.
   */
  sourcesChosen?: boolean;
  pool: WorkerPool;
  clock: Clock;
  events?: EventSink;
  coverage?: RepairCoverageStore;
  /** Read every pack of the damaged copy first (a verify without budget), to find damage no one recorded. */
  readData?: boolean;
  /** Plan only: what would be salvaged, fetched and from where; nothing is written or deleted. */
  dryRun?: boolean;
  /** Messages are scrubbed of these (credentials read for the sources). */
  scrub?: (message: string) => string;
}

export interface DamagedPack {
  pack: string;
  /** What found it: the catalog's record (verify), check's structure pass, or this run's reading. */
  foundBy: "catalog" | "structure" | "read" | "walk";
  reason: string;
  /** Whether the file is still stored on the target. */
  stored: boolean;
}

export interface UnrepairableSnapshot {
  snapshot: string;
  time: string;
  files: string[];
}

export interface RepairOutcome {
  target: string;
  dryRun: boolean;
  /** True when every blob a snapshot needs is intact on the target (after the repair, or planned). */
  ok: boolean;
  damagedPacks: DamagedPack[];
  /** Blobs snapshots need that the target does not hold intact. */
  blobsNeeded: number;
  /** Of those, read intact from the damaged packs themselves (dry run: found readable there). */
  salvaged: number;
  /** Per source, the blobs it provided (dry run: would provide, by its index) and their plaintext bytes. */
  fetched: { source: string; blobs: number; bytes: number }[];
  /** Sources that could not be used, and why. */
  sourceErrors: { source: string; error: string }[];
  /** Needed blobs no copy could provide, and the snapshots and files that need them. */
  unrepairable: { blobs: string[]; snapshots: UnrepairableSnapshot[] };
  /** Packs an interrupted run had saved but not indexed, indexed now (their blobs are not fetched again). */
  adoptedPacks: number;
  packsWritten: number;
  storedBytes: number;
  indexFilesWritten: number;
  /** Packs no reader reads any more (this run's and earlier runs'). */
  retired: string[];
  /** Retired packs deleted from the target. */
  deleted: string[];
  /** Retired packs the target does not let go of yet (retention, append-only): freed by a later prune. */
  locked: { file: string; until?: string }[];
  durationMs: number;
}

/** Index files are written every few new packs, so a killed repair keeps most of what it wrote. */
const CHECKPOINT_PACKS = 8;

/** Finding kinds that mean the pack they name cannot be trusted. */
const PACK_DAMAGE: ReadonlySet<Finding["kind"]> = new Set([
  "pack-missing",
  "pack-size",
  "pack-damaged",
  "pack-header",
  "blob-damaged",
  "blob-not-in-pack",
  "pack-digest",
]);

export async function repairRepository(input: RepairInput): Promise<RepairOutcome> {
  const { repo, clock } = input;
  const started = clock.now();
  const dryRun = input.dryRun === true;
  const clean = (m: string): string => (input.scrub ? input.scrub(m) : m);
  const say = (level: "info" | "warning" | "error", message: string): void =>
    emitMessage(input.events, clock.now(), level, clean(message));
  const progress = (items: number, itemsTotal: number | undefined, bytes: number, current: string): void =>
    input.events?.({
      type: "progress",
      time: clock.now(),
      kind: "repair",
      items,
      ...(itemsTotal !== undefined ? { itemsTotal } : {}),
      bytes,
      current,
    });
  const outcome: RepairOutcome = {
    target: input.label,
    dryRun,
    ok: false,
    damagedPacks: [],
    blobsNeeded: 0,
    salvaged: 0,
    fetched: [],
    sourceErrors: [],
    unrepairable: { blobs: [], snapshots: [] },
    adoptedPacks: 0,
    packsWritten: 0,
    storedBytes: 0,
    indexFilesWritten: 0,
    retired: [],
    deleted: [],
    locked: [],
    durationMs: 0,
  };

  const lock = await RepoLock.acquire(repo, !dryRun, clock);
  const opened: { source: RepairSource; repo: Repository; lock: RepoLock }[] = [];
  try {
    // 1. Damage: this run's structure pass (and reading), then what the catalog remembers.
    progress(0, undefined, 0, `checking ${input.label}`);
    const findings = input.readData
      ? (
          await verifyRepository({
            repo,
            pool: input.pool,
            clock,
            target: input.label,
            ...(input.coverage ? { coverage: input.coverage } : {}),
            ...(input.events ? { events: input.events } : {}),
          })
        ).findings
      : (await check(repo, input.pool)).findings;
    const stored = new Map<string, number>();
    for await (const info of repo.backend.list("pack")) stored.set(info.name, info.size);
    const damaged = new Map<string, DamagedPack>();
    const addDamaged = (pack: string, foundBy: DamagedPack["foundBy"], reason: string): void => {
      if (damaged.has(pack) || !repo.index.hasPack(pack)) return;
      damaged.set(pack, { pack, foundBy, reason: clean(reason), stored: stored.has(pack) });
    };
    for (const f of findings) {
      if (f.pack === undefined || !PACK_DAMAGE.has(f.kind)) continue;
      const structural = f.kind === "pack-missing" || f.kind === "pack-size";
      addDamaged(f.pack, structural ? "structure" : "read", f.message);
    }
    for (const [pack, r] of input.coverage?.packReads(repo.id) ?? []) {
      if (r.outcome === "damaged") addDamaged(pack, "catalog", r.error ?? "recorded damaged by verify");
    }

    // 2. Retire them in memory, remembering where their blobs were (to salvage the intact ones).
    const oldEntries = new Map<string, IndexEntry>();
    const retireNow = (packs: readonly string[]): void => {
      const set = new Set(packs);
      for (const [id, e] of repo.index.entries()) if (set.has(e.pack)) oldEntries.set(id, e);
      repo.index.retire(set);
    };
    retireNow([...damaged.keys()]);
    if (!dryRun) {
      const adopted = await adoptUnindexedPacks(repo, (m) => say("warning", m));
      outcome.adoptedPacks = adopted.packs;
      if (adopted.packs > 0) {
        say(
          "info",
          `indexed ${formatCount(adopted.packs)} packs an interrupted run had saved (${formatCount(adopted.blobs)} blobs)`,
        );
      }
    }

    // Sources, opened on first need, each under a shared lock, its index loaded.
    let nextSource = 0;
    const openNextSource = async (): Promise<boolean> => {
      while (nextSource < input.sources.length) {
        const source = input.sources[nextSource++]!;
        let src: Repository | undefined;
        try {
          src = await source.open();
          try {
            assertCopyCompatible(src, repo);
          } catch (err) {
            if (input.sourcesChosen === true) throw err;
            outcome.sourceErrors.push({ source: source.label, error: clean(errorMessage(err)) });
            say("warning", `${source.label} is not a copy of ${input.label}, skipped: ${errorMessage(err)}`);
            await src.backend.close().catch(() => undefined);
            continue;
          }
          const srcLock = await RepoLock.acquire(src, false, clock);
          opened.push({ source, repo: src, lock: srcLock });
          await src.loadIndex();
          return true;
        } catch (err) {
          if (input.sourcesChosen === true && hasCode(err, "USAGE")) {
            await src?.backend.close().catch(() => undefined);
            throw err;
          }
          if (!opened.some((o) => o.repo === src)) await src?.backend.close().catch(() => undefined);
          outcome.sourceErrors.push({ source: source.label, error: clean(errorMessage(err)) });
          say("warning", `${source.label} cannot be used as a source: ${errorMessage(err)}`);
        }
      }
      return false;
    };

    // 3. Walk every snapshot: which blobs are needed. A tree that does not read is damage found now.
    const obtainedTrees = new Map<string, { data: Buffer; envelope?: Buffer }>();
    // The damaged pack read whole once for all its blobs (they are taken in pack order), or one blob's range.
    let cached: { pack: string; bytes: Promise<Buffer | undefined> } | undefined;
    const salvage = async (id: string, whole = false): Promise<Buffer | undefined> => {
      const e = oldEntries.get(id);
      if (e === undefined || !stored.has(e.pack)) return undefined;
      try {
        let envelope: Buffer;
        if (whole) {
          if (cached?.pack !== e.pack) {
            const bytes = repo.backend.load({ type: "pack", name: e.pack });
            cached = { pack: e.pack, bytes: bytes.catch(() => undefined) };
          }
          const bytes = await cached.bytes;
          if (bytes === undefined) return undefined;
          envelope = bytes.subarray(e.offset, e.offset + e.length);
        } else envelope = await repo.backend.load({ type: "pack", name: e.pack }, e);
        if (envelope.length !== e.length) return undefined;
        const data = repo.codec.decode(envelope, e.rawLength, `blob ${id.slice(0, 12)}`);
        return repo.computeId(data) === id ? envelope : undefined;
      } catch {
        return undefined;
      }
    };
    const treeFromSources = async (id: string): Promise<Buffer | undefined> => {
      for (let i = 0; ; i++) {
        if (i >= opened.length && !(await openNextSource())) return undefined;
        const src = opened[i]!.repo;
        if (!src.index.has(id)) continue;
        try {
          return await src.loadBlob(id, "tree");
        } catch {
          // damaged there too: the next source
        }
      }
    };
    const loadTreeData = async (id: string): Promise<Buffer | undefined> => {
      const got = obtainedTrees.get(id);
      if (got !== undefined) return got.data;
      const entry = repo.index.get(id);
      if (entry !== undefined) {
        try {
          return await repo.loadBlob(id, "tree");
        } catch (err) {
          if (!hasCode(err, "INVALID_DATA") && !hasCode(err, "NOT_FOUND")) throw err;
          addDamaged(entry.pack, "walk", errorMessage(err));
          retireNow([entry.pack]);
        }
      }
      const envelope = await salvage(id);
      if (envelope !== undefined) {
        const data = repo.codec.decode(envelope, undefined, `tree ${id.slice(0, 12)}`);
        obtainedTrees.set(id, { data, envelope });
        return data;
      }
      const data = await treeFromSources(id);
      if (data !== undefined) obtainedTrees.set(id, { data });
      return data;
    };
    const nodesOf = async (id: string): Promise<readonly Node[]> => {
      const data = await loadTreeData(id);
      if (data === undefined) throw new BulwarkError("NOT_FOUND", `tree ${id.slice(0, 12)} is on no copy`);
      return decodeTree(data, `tree ${id.slice(0, 12)}`).nodes;
    };
    const snapshots: SnapshotWithId[] = await loadAllSnapshots(repo, (name, err) =>
      say(
        "warning",
        `snapshot ${name.slice(0, 8)} is damaged and cannot be repaired here: ${errorMessage(err)}`,
      ),
    );
    const used = new Map<string, BlobType>();
    for (const s of snapshots) {
      const stack = [s.tree];
      while (stack.length > 0) {
        const treeId = stack.pop()!;
        if (used.has(treeId)) continue;
        used.set(treeId, "tree");
        let nodes: readonly Node[];
        try {
          nodes = await nodesOf(treeId);
        } catch {
          continue; // unrepairable; traced below
        }
        for (const node of nodes) {
          if (node.subtree !== undefined) stack.push(node.subtree);
          for (const id of node.content ?? []) if (!used.has(id)) used.set(id, "data");
        }
      }
    }
    outcome.damagedPacks = [...damaged.values()].sort((a, b) => (a.pack < b.pack ? -1 : 1));
    const needed = [...used].filter(([id]) => !repo.index.has(id));
    outcome.blobsNeeded = needed.length;
    if (damaged.size > 0 || needed.length > 0) {
      say(
        "info",
        `${input.label}: ${formatCount(damaged.size)} damaged ${damaged.size === 1 ? "pack" : "packs"}, ${formatCount(needed.length)} ${needed.length === 1 ? "blob" : "blobs"} needed`,
      );
    }

    // 4. Obtain them: salvage, then the sources; write into new packs read back before they are indexed.
    const newPackBytes = new Map<string, number>();
    const writer = new PackWriter(repo, 2, {
      verifySaved: async (pack, _blobs, sent) => {
        await verifyPack(repo, pack, sent);
        newPackBytes.set(pack, sent.length);
      },
    });
    const written: { id: string; blobs: PackedBlob[] }[] = [];
    const writeIndex = async (retires: string[]): Promise<void> => {
      const packs = writer.takeNewPacks();
      if (packs.length === 0 && retires.length === 0) return;
      // Every file repair writes carries `retires`: its entries win over those of the damaged packs.
      await repo.saveDocument("index", { version: 1, packs, retires } satisfies IndexFile);
      outcome.indexFilesWritten++;
      written.push(...packs);
    };
    let done = 0;
    let doneBytes = 0;
    const afterAdd = async (rawLength: number): Promise<void> => {
      done++;
      doneBytes += rawLength;
      progress(done, needed.length, doneBytes, `repairing ${input.label}`);
      if (writer.unindexedPacks >= CHECKPOINT_PACKS) await writeIndex([]);
    };
    let remaining: [string, BlobType][] = [];
    const inPackOrder = (a: [string, BlobType], b: [string, BlobType]): number => {
      const ea = oldEntries.get(a[0]);
      const eb = oldEntries.get(b[0]);
      if (ea === undefined || eb === undefined) return ea === undefined ? (eb === undefined ? 0 : 1) : -1;
      return ea.pack < eb.pack ? -1 : ea.pack > eb.pack ? 1 : ea.offset - eb.offset;
    };
    for (const [id, type] of [...needed].sort(inPackOrder)) {
      const tree = type === "tree" ? obtainedTrees.get(id) : undefined;
      const envelope = tree?.envelope ?? (tree === undefined ? await salvage(id, true) : undefined);
      if (envelope !== undefined) {
        outcome.salvaged++;
        if (!dryRun) {
          await writer.add(type, id, Buffer.from(envelope), oldEntries.get(id)!.rawLength);
          await afterAdd(oldEntries.get(id)!.rawLength);
        }
      } else if (tree !== undefined) {
        // A tree the walk read from another copy: re-encoded under this copy's key.
        const from = opened.find((o) => o.repo.index.has(id))?.source.label ?? "another copy";
        countFetched(outcome, from, 0);
        if (!dryRun) {
          await writer.add("tree", id, repo.codec.encode(tree.data), tree.data.length);
          await afterAdd(0);
        }
      } else remaining.push([id, type]);
    }
    for (let i = 0; remaining.length > 0; i++) {
      if (i >= opened.length && !(await openNextSource())) break;
      const { source, repo: src } = opened[i]!;
      if (dryRun) {
        const there = remaining.filter(([id]) => src.index.has(id));
        for (const [id] of there) countFetched(outcome, source.label, src.index.get(id)!.rawLength);
        remaining = remaining.filter(([id]) => !src.index.has(id));
        continue;
      }
      const before = { blobs: done, bytes: doneBytes };
      const types = new Map(remaining);
      const left = await sendBlobs(
        src,
        repo,
        writer,
        remaining.map(([id]) => id),
        afterAdd,
      );
      for (const d of left.damaged) {
        say("warning", `${source.label}: blob ${d.id.slice(0, 12)} is damaged there too: ${d.error}`);
      }
      if (done > before.blobs) {
        const entry = outcome.fetched.find((f) => f.source === source.label);
        if (entry) {
          entry.blobs += done - before.blobs;
          entry.bytes += doneBytes - before.bytes;
        } else {
          outcome.fetched.push({
            source: source.label,
            blobs: done - before.blobs,
            bytes: doneBytes - before.bytes,
          });
        }
      }
      remaining = [...left.missing, ...left.damaged.map((d) => d.id)].map((id) => [id, types.get(id)!]);
    }
    cached = undefined;
    if (!dryRun) await writer.flush();

    // What no copy could provide: traced to the snapshots and files that need it.
    const lost = new Set(remaining.map(([id]) => id));
    outcome.unrepairable.blobs = [...lost].sort();
    if (lost.size > 0) {
      const users = await traceUsers(snapshots, lost, nodesOf);
      const bySnapshot = new Map<string, Set<string>>();
      for (const who of users.values()) {
        for (const w of who) {
          const colon = w.indexOf(":");
          const snapshot = w.slice(0, colon);
          bySnapshot.set(snapshot, (bySnapshot.get(snapshot) ?? new Set()).add(w.slice(colon + 1)));
        }
      }
      const times = new Map(snapshots.map((s) => [s.id, s.time]));
      outcome.unrepairable.snapshots = [...bySnapshot]
        .map(([snapshot, files]) => ({ snapshot, time: times.get(snapshot) ?? "", files: [...files].sort() }))
        .sort((a, b) => (a.time < b.time ? -1 : 1));
    }

    // 5. Retire every damaged pack whose needed blobs are all intact elsewhere now.
    const keep = new Set<string>();
    for (const id of lost) {
      const e = oldEntries.get(id);
      if (e !== undefined) keep.add(e.pack);
    }
    const retiring = [...damaged.keys()].filter((p) => !keep.has(p)).sort();
    if (!dryRun) await writeIndex(retiring);
    outcome.packsWritten = writer.stats.packs;
    outcome.storedBytes = writer.stats.storedBytes;

    // 6. Delete what is retired and still stored, where the target allows it; then the catalog.
    const retired = new Set([...repo.index.retiredPacks()].filter((p) => !keep.has(p)));
    outcome.retired = [...retired].sort();
    if (!dryRun) {
      for (const pack of outcome.retired) {
        if (!stored.has(pack)) continue;
        if (await removeUnlessLocked(repo, "pack", pack, outcome.locked, () => clock.now().getTime())) {
          outcome.deleted.push(pack);
        }
      }
      if (outcome.locked.length > 0) {
        say(
          "info",
          `${input.label} keeps ${formatCount(outcome.locked.length)} retired packs under retention: they are never read, and prune deletes them once it lapses`,
        );
      }
      if (input.coverage) {
        const time = clock.now();
        for (const p of written) {
          const record: PackReadRecord = {
            repository: repo.id,
            pack: p.id,
            target: input.label,
            time,
            outcome: "ok",
            bytes: newPackBytes.get(p.id) ?? 0,
          };
          input.coverage.recordPackRead(record);
        }
        // A pack kept for the blobs no copy has stays recorded damaged: verify reads it again first.
        input.coverage.forgetPackReads(repo.id, new Set([...repo.index.packIds(), ...keep]));
      }
    }
    outcome.ok = lost.size === 0;
    outcome.durationMs = clock.now().getTime() - started.getTime();
    return outcome;
  } finally {
    for (const o of opened) {
      await o.lock.release().catch(() => undefined);
      await o.repo.backend.close().catch(() => undefined);
    }
    await lock.release().catch(() => undefined);
  }
}

function countFetched(outcome: RepairOutcome, source: string, bytes: number): void {
  const entry = outcome.fetched.find((f) => f.source === source);
  if (entry) {
    entry.blobs++;
    entry.bytes += bytes;
  } else outcome.fetched.push({ source, blobs: 1, bytes });
}
