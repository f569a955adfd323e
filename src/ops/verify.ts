/**
 * Verify (issue 10, docs/design.md §17a): check's structure pass, then data reading with coverage tracked
 * in the catalog, so that every pack of a copy is read within the policy's period instead of sampled at
 * random with no memory of what was read.
 *
 * Plan (pure, `planPackReads`), over the indexed packs that exist:
 *  1. a pack whose last read found damage is read again, first;
 *  2. then packs never read (new since the last run; after the others with `newFirst: false`), then the
 *     others, least recently read first;
 *  3. with a period (`fullEvery`), a pack read soundly within it is fresh and not read again; a run reads
 *     only what is due, so daily runs with a budget of a period's share read the copy in daily slices;
 *  4. `newOnly` reads only never-read packs (and damaged ones);
 *  5. a size budget takes packs in that order while they fit (at least one); a time budget stops starting
 *     packs once it has run out.
 * Every pack read is recorded at once (repository id, pack, time from the clock, outcome), so a run killed
 * half-way keeps what it read and the next starts where it stopped. Records of packs no longer in the
 * repository (pruned) are dropped. Without a catalog nothing is remembered and every due pack is read.
 *
 * Digests (§17a): where the target hashes files itself (Backend.digest, the vault), every pack this run did
 * not read is checked at rest against the SHA-256 its index entry records, downloading nothing. A mismatch
 * or a missing pack is a finding and is recorded `damaged`, so the next run reads it first; a matching
 * digest records nothing, because only a decryption read counts for coverage.
 */
import type { PackReadRecord, Catalog } from "../catalog/catalog.js";
import type { Clock } from "../core/clock.js";
import type { EventSink } from "../core/events.js";
import type { Repository } from "../repository/repository.js";
import type { WorkerPool } from "../repository/worker-pool.js";
import { check, type CheckResult } from "../verify/checker.js";

/** Where coverage is remembered: the catalog (a type-only dependency; a fake in unit tests). */
export type CoverageStore = Pick<Catalog, "packReads" | "recordPackRead" | "forgetPackReads">;

export interface PlanOptions {
  now: Date;
  /** A pack read soundly within this many milliseconds is fresh. */
  fullEveryMs?: number;
  /** Only packs never read (and damaged ones). */
  newOnly?: boolean;
  /** Never-read packs before the stale ones (default true); false: after them. */
  newFirst?: boolean;
  /** At most this many bytes (at least one pack is always read when any is due). */
  budgetBytes?: number;
}

export interface PackPlan {
  /** The packs to read, in order. */
  read: string[];
  /** Packs due (damaged, never read, or stale) but left for a later run by the budget. */
  deferred: number;
  /** Packs not read because they are fresh. */
  fresh: number;
}

/** The packs a run reads, in order (see the module header). Pure. */
export function planPackReads(
  packs: readonly { name: string; size: number }[],
  records: ReadonlyMap<string, Pick<PackReadRecord, "time" | "outcome">>,
  options: PlanOptions,
): PackPlan {
  const now = options.now.getTime();
  const rank = (name: string): [number, number] => {
    const r = records.get(name);
    if (r === undefined) return [options.newFirst === false ? 3 : 1, 0];
    if (r.outcome !== "ok") return [0, r.time.getTime()];
    return [2, r.time.getTime()];
  };
  let fresh = 0;
  const due = packs.filter(({ name }) => {
    const r = records.get(name);
    if (r === undefined || r.outcome !== "ok") return true;
    if (options.newOnly === true) return false;
    if (options.fullEveryMs !== undefined && now - r.time.getTime() < options.fullEveryMs) {
      fresh++;
      return false;
    }
    return true;
  });
  due.sort((a, b) => {
    const [ka, ta] = rank(a.name);
    const [kb, tb] = rank(b.name);
    return ka - kb || ta - tb || (a.name < b.name ? -1 : 1);
  });
  const read: string[] = [];
  let bytes = 0;
  for (const p of due) {
    if (options.budgetBytes !== undefined && read.length > 0 && bytes + p.size > options.budgetBytes) break;
    read.push(p.name);
    bytes += p.size;
  }
  return { read, deferred: due.length - read.length, fresh };
}

export interface VerifyInput {
  repo: Repository;
  pool: WorkerPool;
  clock: Clock;
  events?: EventSink;
  /** The target name or location, recorded with each read. */
  target: string;
  /** Coverage memory; without it every due pack is read and nothing is remembered. */
  coverage?: CoverageStore;
  fullEveryMs?: number;
  newOnly?: boolean;
  newFirst?: boolean;
  budget?: { bytes: number } | { ms: number };
  /** Check unread packs by the target's own digest where it offers one (default true). */
  digests?: boolean;
}

/** How many digest requests a run keeps in flight: each costs the target a read of its own disk. */
export const DIGEST_CONCURRENCY = 4;

/** The packs checked at rest by the target's digest (not read, not downloaded). */
export interface DigestFigures {
  /** Whether the target hashes files itself (and the run used it). */
  offered: boolean;
  /** Packs not read this run whose digest was compared with their index entry's. */
  packs: number;
  /** Their size: hashed by the target, not downloaded. */
  bytes: number;
  /** Of them, packs whose digest differed or that were missing: recorded damaged. */
  damaged: number;
  /** Packs not read whose index entry records no digest (written by an older Bulwark): not checked. */
  withoutDigest: number;
}

export interface CoverageFigures {
  packs: number;
  /** Packs whose last read was sound and (with a period) within it. */
  covered: number;
  ratio: number;
  /** The oldest sound read among the packs, if every pack has been read. */
  oldestRead?: Date;
  /** Packs whose last read found damage. */
  damaged: number;
}

export interface VerifyOutcome extends CheckResult {
  ok: boolean;
  errors: number;
  plan: PackPlan;
  /** Packs actually read this run (a time budget may stop before the plan's end). */
  packsRead: number;
  bytesRead: number;
  /** Packs checked at rest by the target's digest; a digest check never counts as a read for coverage. */
  digests: DigestFigures;
  coverage: CoverageFigures;
  durationMs: number;
}

export async function verifyRepository(input: VerifyInput): Promise<VerifyOutcome> {
  const { repo, clock } = input;
  const started = clock.now();
  const records = input.coverage?.packReads(repo.id) ?? new Map<string, PackReadRecord>();
  let plan: PackPlan = { read: [], deferred: 0, fresh: 0 };
  let present: readonly { name: string; size: number }[] = [];
  const timeBudget = input.budget !== undefined && "ms" in input.budget ? input.budget.ms : undefined;
  let packsRead = 0;
  const digests: DigestFigures = {
    offered: input.digests !== false && repo.backend.digest !== undefined,
    packs: 0,
    bytes: 0,
    damaged: 0,
    withoutDigest: 0,
  };
  const damagedRecord = (pack: string, error: string, bytes: number): void => {
    const record: PackReadRecord = {
      repository: repo.id,
      pack,
      target: input.target,
      time: clock.now(),
      outcome: "damaged",
      error,
      bytes,
    };
    input.coverage?.recordPackRead(record);
    records.set(pack, record);
  };
  const progressOf =
    (current?: string) =>
    (done: number, total: number, bytes: number): void =>
      input.events?.({
        type: "progress",
        time: clock.now(),
        kind: "check",
        items: done,
        itemsTotal: total,
        bytes,
        ...(current !== undefined ? { current } : {}),
      });
  const result = await check(repo, input.pool, {
    ...(digests.offered ? { digests: { concurrency: DIGEST_CONCURRENCY } } : {}),
    readData: {
      kind: "plan",
      choose: (packs) => {
        present = packs;
        plan = planPackReads(packs, records, {
          now: clock.now(),
          ...(input.fullEveryMs !== undefined ? { fullEveryMs: input.fullEveryMs } : {}),
          ...(input.newOnly === true ? { newOnly: true } : {}),
          ...(input.newFirst === false ? { newFirst: false } : {}),
          ...(input.budget !== undefined && "bytes" in input.budget
            ? { budgetBytes: input.budget.bytes }
            : {}),
        });
        return plan.read;
      },
    },
    stopReading: () =>
      timeBudget !== undefined && packsRead > 0 && clock.now().getTime() - started.getTime() >= timeBudget,
    reporter: {
      progress: progressOf(),
      digestProgress: progressOf("digests of the packs not read (hashed by the target)"),
      packDigested: (pack, outcome) => {
        digests.packs++;
        digests.bytes += outcome.bytes;
        if (outcome.ok) return; // not a read: coverage is untouched
        digests.damaged++;
        // At once, like a read: the next run reads it first, and repair finds it.
        damagedRecord(pack, outcome.error ?? "its digest differs from the index", 0);
      },
      packDone: (pack, outcome) => {
        packsRead++;
        const record: PackReadRecord = {
          repository: repo.id,
          pack,
          target: input.target,
          time: clock.now(),
          outcome: outcome.ok ? "ok" : "damaged",
          ...(outcome.error !== undefined ? { error: outcome.error } : {}),
          bytes: outcome.bytes,
        };
        // At once, not at the end: a killed run keeps what it read.
        input.coverage?.recordPackRead(record);
        records.set(pack, record);
      },
    },
  });
  // Packs the structure pass found missing or truncated are damaged whether or not they were read.
  for (const f of result.findings) {
    if (f.pack === undefined || f.severity !== "error" || records.get(f.pack)?.outcome === "damaged")
      continue;
    if (f.kind !== "pack-missing" && f.kind !== "pack-size") continue;
    damagedRecord(f.pack, f.message, 0);
  }
  digests.withoutDigest = result.stats.packsWithoutDigest;
  const indexed = new Set(repo.index.packIds());
  input.coverage?.forgetPackReads(repo.id, indexed);
  const errors = result.findings.filter((f) => f.severity === "error").length;
  return {
    ...result,
    ok: errors === 0,
    errors,
    plan,
    packsRead,
    bytesRead: result.stats.bytesRead,
    digests,
    coverage: coverageOf(
      present.map((p) => p.name),
      records,
      clock.now(),
      input.fullEveryMs,
    ),
    durationMs: clock.now().getTime() - started.getTime(),
  };
}

/** How much of a repository's data has been read (soundly, and within the period when one is given). */
export function coverageOf(
  packs: readonly string[],
  records: ReadonlyMap<string, Pick<PackReadRecord, "time" | "outcome">>,
  now: Date,
  fullEveryMs?: number,
): CoverageFigures {
  let covered = 0;
  let damaged = 0;
  let oldest: number | undefined;
  let allRead = true;
  for (const name of packs) {
    const r = records.get(name);
    if (r === undefined) {
      allRead = false;
      continue;
    }
    if (r.outcome !== "ok") {
      damaged++;
      allRead = false;
      continue;
    }
    oldest = oldest === undefined ? r.time.getTime() : Math.min(oldest, r.time.getTime());
    if (fullEveryMs === undefined || now.getTime() - r.time.getTime() < fullEveryMs) covered++;
  }
  return {
    packs: packs.length,
    covered,
    ratio: packs.length === 0 ? 1 : covered / packs.length,
    ...(allRead && oldest !== undefined ? { oldestRead: new Date(oldest) } : {}),
    damaged,
  };
}

/** A snapshot as cross-copy consistency compares it: its id on a target, its identity, its root tree. */
export interface CopiedSnapshot {
  id: string;
  /** The id on the repository it was first made in (its own id there). */
  original: string;
  tree: string;
}

export interface CrossCopyFinding {
  original: string;
  message: string;
  targets: string[];
}

/**
 * Cross-copy consistency: the copies of one snapshot on several targets must reference the same root tree.
 * Tree and blob ids are content-addressed and shared within a copy set, so one root tree id means identical
 * trees and blobs all the way down (each copy's own check proves its trees match their ids). Pure.
 */
export function crossCopyFindings(
  byTarget: ReadonlyMap<string, readonly CopiedSnapshot[]>,
): CrossCopyFinding[] {
  const copies = new Map<string, { target: string; snapshot: CopiedSnapshot }[]>();
  for (const [target, snapshots] of byTarget) {
    for (const s of snapshots)
      copies.set(s.original, [...(copies.get(s.original) ?? []), { target, snapshot: s }]);
  }
  const findings: CrossCopyFinding[] = [];
  for (const [original, list] of copies) {
    const trees = new Set(list.map((c) => c.snapshot.tree));
    if (trees.size < 2) continue;
    findings.push({
      original,
      targets: list.map((c) => c.target),
      message:
        `the copies of snapshot ${original.slice(0, 8)} differ: ` +
        list
          .map((c) => `${c.target} (${c.snapshot.id.slice(0, 8)}) has tree ${c.snapshot.tree.slice(0, 12)}`)
          .join(", "),
    });
  }
  return findings;
}
