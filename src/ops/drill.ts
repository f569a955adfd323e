/**
 * Drill (issue 10, docs/design.md §17b): a restore of one copy of a dataset into a sandbox, proven usable,
 * timed and recorded. The one implementation behind `bulwark drill` (and, next, the daemon's schedules).
 *
 *  1. The copy: the target given, else the dataset's targets (jobs' primaries and copies, in job order) in
 *     rotation: one never drilled first, else the one drilled least recently, so every copy is drilled in
 *     turn. A copy that cannot be opened is skipped for the next (and said so); none left is an error.
 *  2. The snapshot: the one given, else one of the dataset's chosen at random among those within
 *     `randomWithinMs`, else the newest.
 *  3. Restore into a fresh sandbox directory (mode 0700) with a shared lock on the repository; the duration
 *     and throughput are the RTO data point, the snapshot's age at the drill the RPO one.
 *  4. Compare every entry of the snapshot with the sandbox (src/drill/compare.ts).
 *  5. The dataset's validators (src/drill/validators.ts), commands in a network namespace where possible.
 *  6. The spot check of live files against the snapshot (src/drill/spot-check.ts), for file sources.
 *  7. The sandbox is removed: in a `finally`, and by an exit handler should the process end first (Ctrl-C
 *     in the CLI aborts the signal; the operation stops at the next step and cleans up).
 *  8. The outcome is recorded in the catalog (pass only when the restore had no error, every entry matched,
 *     every validator passed and the spot check found no mismatch), with every figure and finding.
 */
import { rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

import type { Catalog } from "../catalog/catalog.js";
import type { BulwarkConfig, Dataset, Target } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import { BulwarkError, errorMessage } from "../core/errors.js";
import { makeDirectories } from "../core/make-directories.js";
import type { EventSink } from "../core/events.js";
import { compareRestored } from "../drill/compare.js";
import { probeIsolation, type Isolation } from "../drill/isolation.js";
import { spotCheck, type SpotCheckResult } from "../drill/spot-check.js";
import { runValidator, type ValidatorOutcome } from "../drill/validators.js";
import { RepoLock } from "../repository/lock.js";
import type { Repository } from "../repository/repository.js";
import { WorkerPool } from "../repository/worker-pool.js";
import { loadAllSnapshots, type SnapshotWithId } from "../snapshot/snapshot.js";
import { datasetPaths, latestOf } from "./posture.js";
import { restoreFiles, snapshotToRestore } from "./restore.js";
import { openTargetRepository, scrub, type TargetAccess } from "./targets.js";

/** Where drills are remembered: the catalog (a fake in unit tests). */
export type DrillStore = Pick<Catalog, "latestDrill" | "recordDrill">;

export interface DrillInput {
  config: BulwarkConfig;
  dataset: string;
  access: TargetAccess;
  clock: Clock;
  events?: EventSink;
  /** The copy to drill (default: rotation, see the module header). */
  target?: string;
  /** A snapshot id or prefix on that copy (default: the newest of the dataset). */
  snapshot?: string;
  /** A random snapshot of the dataset taken within this many milliseconds. */
  randomWithinMs?: number;
  store?: DrillStore;
  /** Where the sandbox is made (default: the system's temporary directory). */
  sandboxRoot?: string;
  /** Keep the sandbox for inspection (the report says where). */
  keepSandbox?: boolean;
  /** Run validator commands without network isolation even where it is possible. */
  noIsolation?: boolean;
  /** Live files compared with the snapshot (default: the dataset's `drill.spotCheck`). */
  spotCheck?: number;
  env: NodeJS.ProcessEnv;
  signal?: AbortSignal;
  /** For the rotation's random snapshot and the spot check's sample (default Math.random). */
  random?: () => number;
}

/** What a drill recorded (the catalog's drill details; rendered by `bulwark report drill`). */
export interface DrillReport {
  dataset: string;
  target: string;
  location: string;
  snapshot: string;
  snapshotTime: string;
  /** The snapshot's age when the drill started: the RPO a recovery from it would have had. */
  rpoMs: number;
  time: string;
  sandbox: string;
  sandboxKept: boolean;
  restore: { files: number; bytes: number; durationMs: number; bytesPerSecond: number; errors: number };
  compare: { files: number; mismatches: number; examples: string[] };
  validators: ValidatorOutcome[];
  isolation: { netns: boolean; note: string };
  spotCheck?: { sampled: number; changedSince: number; mismatches: number; examples: string[] };
  /** Copies skipped by the rotation because they could not be opened. */
  skipped: { target: string; error: string }[];
  durationMs: number;
  status: "pass" | "fail";
  /** Why it failed, one line each (empty when it passed). */
  findings: string[];
}

const EXAMPLES = 20;

/** Drills one copy of a dataset (see the module header). Throws only when no copy could be drilled. */
export async function drillDataset(input: DrillInput): Promise<DrillReport> {
  const { config, clock } = input;
  const dataset = config.datasets[input.dataset];
  if (dataset === undefined) {
    const names = Object.keys(config.datasets);
    throw new BulwarkError("USAGE", `unknown dataset ${JSON.stringify(input.dataset)}`, {
      hint: names.length > 0 ? `the datasets are ${names.join(", ")}` : "the config declares no dataset",
    });
  }
  const started = clock.now();
  const candidates = drillCandidates(config, input.dataset, input.target, input.store);
  const skipped: { target: string; error: string }[] = [];
  const secrets = input.access.secrets ?? [];
  const access = { ...input.access, secrets };
  for (const target of candidates) {
    let repo: Repository | undefined;
    try {
      repo = await openTargetRepository(target, access, { readOnly: true });
    } catch (err) {
      const error = scrub(errorMessage(err), secrets);
      // A named copy that cannot be opened is the answer; in rotation, the next copy is tried.
      if (input.target !== undefined) throw err;
      skipped.push({ target: target.name, error });
      input.events?.({
        type: "message",
        time: clock.now(),
        level: "warning",
        message: `drill: skipping ${target.name}: ${error}`,
      });
      continue;
    }
    try {
      const report = await drillOpened(input, dataset, target, repo, started, skipped);
      input.store?.recordDrill({
        dataset: input.dataset,
        target: target.name,
        snapshot: report.snapshot,
        time: started,
        status: report.status,
        description:
          `drill of ${report.snapshot.slice(0, 8)} from ${target.name}: ` +
          (report.status === "pass"
            ? `restored ${report.restore.files} files in ${(report.restore.durationMs / 1000).toFixed(1)} s, ` +
              `${report.validators.length} validators passed`
            : report.findings.slice(0, 3).join("; ")),
        details: report as unknown as Record<string, unknown>,
      });
      return report;
    } finally {
      await repo.backend.close().catch(() => undefined);
    }
  }
  throw new BulwarkError("IO", `no copy of dataset ${input.dataset} could be opened for a drill`, {
    hint: skipped.map((s) => `${s.target}: ${s.error}`).join("; ") || "add a job for the dataset",
  });
}

/**
 * The copies to drill, in the order to try them: the one named, else the dataset's targets, never drilled
 * first (in job order), then least recently drilled first.
 */
export function drillCandidates(
  config: BulwarkConfig,
  dataset: string,
  named: string | undefined,
  store: Pick<DrillStore, "latestDrill"> | undefined,
): Target[] {
  const names: string[] = [];
  for (const job of Object.values(config.jobs)) {
    if (job.dataset !== dataset) continue;
    for (const t of [job.primary, ...job.copies]) if (!names.includes(t)) names.push(t);
  }
  if (named !== undefined) {
    const target = config.targets[named];
    if (target === undefined) {
      const known = Object.keys(config.targets);
      throw new BulwarkError("USAGE", `unknown target ${JSON.stringify(named)}`, {
        hint: known.length > 0 ? `the targets are ${known.join(", ")}` : "the config declares no target",
      });
    }
    if (!names.includes(named)) {
      throw new BulwarkError("USAGE", `target ${named} holds no copy of dataset ${dataset}`, {
        hint: names.length > 0 ? `its copies are on ${names.join(", ")}` : "add a job for the dataset",
      });
    }
    return [target];
  }
  if (names.length === 0) {
    throw new BulwarkError("USAGE", `dataset ${dataset} has no job, so no copy to drill`, {
      hint: "add a job that backs it up (jobs.<name>.dataset)",
    });
  }
  const last = new Map(names.map((n) => [n, store?.latestDrill(dataset, n)?.time.getTime() ?? -Infinity]));
  return names
    .map((n, i) => ({ n, i }))
    .sort((a, b) => last.get(a.n)! - last.get(b.n)! || a.i - b.i)
    .map(({ n }) => config.targets[n]!);
}

async function drillOpened(
  input: DrillInput,
  dataset: Dataset,
  target: Target,
  repo: Repository,
  started: Date,
  skipped: { target: string; error: string }[],
): Promise<DrillReport> {
  const { clock } = input;
  const findings: string[] = [];
  const lock = await RepoLock.acquire(repo, false, clock);
  const pool = new WorkerPool(repo);
  let sandbox: string | undefined;
  const removeNow = (): void => {
    if (sandbox !== undefined && input.keepSandbox !== true)
      rmSync(sandbox, { recursive: true, force: true });
  };
  // Should the process end before the finally runs (an interrupted CLI exits), the sandbox still goes.
  process.once("exit", removeNow);
  const stopped = (): boolean => input.signal?.aborted === true;
  const checkStopped = (): void => {
    if (stopped()) throw new BulwarkError("CANCELLED", "the drill was interrupted; the sandbox was removed");
  };
  try {
    const snapshot = await chooseSnapshot(repo, input, dataset);
    const root = resolve(input.sandboxRoot ?? tmpdir());
    await makeDirectories(root);
    sandbox = await mkdtemp(join(root, `bulwark-drill-${input.dataset}-`));
    const rpoMs = started.getTime() - new Date(snapshot.time).getTime();
    input.events?.({
      type: "message",
      time: clock.now(),
      level: "info",
      message: `drill: restoring snapshot ${snapshot.id.slice(0, 8)} of ${snapshot.time} from ${target.name} into ${sandbox}`,
    });

    // 3. restore
    const restored = await restoreFiles({
      repo,
      pool,
      clock,
      ...(input.events ? { events: input.events } : {}),
      snapshot,
      target: sandbox,
    });
    for (const e of restored.errors.slice(0, EXAMPLES)) findings.push(`restore: ${e.path}: ${e.error}`);
    if (restored.errors.length > EXAMPLES)
      findings.push(`restore: ... and ${restored.errors.length - EXAMPLES} more errors`);
    checkStopped();

    // 4. compare
    const compared = await compareRestored(repo, snapshot.tree, sandbox, {
      stopped,
      progress: (bytes) =>
        input.events?.({
          type: "progress",
          time: clock.now(),
          kind: "drill",
          items: 0,
          bytes,
          bytesTotal: restored.bytes,
          current: "comparing with the snapshot",
        }),
    });
    checkStopped();
    for (const m of compared.mismatches.slice(0, EXAMPLES)) findings.push(`content: ${m.path}: ${m.reason}`);
    if (compared.mismatches.length > EXAMPLES)
      findings.push(`content: ... and ${compared.mismatches.length - EXAMPLES} more mismatches`);

    // 5. validators
    const validators = dataset.drill?.validators ?? [];
    const isolation: Isolation = validators.some((v) => v.type === "command")
      ? probeIsolation({ ...(input.noIsolation === true ? { disabled: true } : {}), env: input.env })
      : {
          netns: false,
          note: "no validator command ran, so none needed isolating",
          wrap: (argv) => [...argv],
        };
    const outcomes: ValidatorOutcome[] = [];
    for (const v of validators) {
      checkStopped();
      input.events?.({
        type: "message",
        time: clock.now(),
        level: "info",
        message: `drill: validator ${v.name}`,
      });
      const outcome = await runValidator(v, {
        repo,
        snapshot,
        dataset: input.dataset,
        sandbox,
        isolation,
        clock,
        env: input.env,
        ...(input.signal ? { signal: input.signal } : {}),
      });
      outcomes.push(outcome);
      if (!outcome.ok) findings.push(`validator ${outcome.name}: ${outcome.message}`);
    }
    checkStopped();

    // 6. spot check
    const size = input.spotCheck ?? dataset.drill?.spotCheck ?? 0;
    let spot: SpotCheckResult | undefined;
    if (size > 0 && dataset.sources.some((s) => s.type === "files")) {
      spot = await spotCheck(repo, snapshot, dataset.sources, size, {
        random: input.random ?? Math.random,
        env: input.env,
      });
      for (const m of spot.mismatches.slice(0, EXAMPLES)) findings.push(`spot check: ${m.path}: ${m.reason}`);
    }

    const restoreMs = restored.durationMs;
    const report: DrillReport = {
      dataset: input.dataset,
      target: target.name,
      location: scrub(target.location, input.access.secrets ?? []),
      snapshot: snapshot.id,
      snapshotTime: snapshot.time,
      rpoMs,
      time: started.toISOString(),
      sandbox,
      sandboxKept: input.keepSandbox === true,
      restore: {
        files: restored.files,
        bytes: restored.bytes,
        durationMs: restoreMs,
        bytesPerSecond: restoreMs > 0 ? Math.round((restored.bytes * 1000) / restoreMs) : 0,
        errors: restored.errors.length,
      },
      compare: {
        files: compared.files,
        mismatches: compared.mismatches.length,
        examples: compared.mismatches.slice(0, EXAMPLES).map((m) => `${m.path}: ${m.reason}`),
      },
      validators: outcomes,
      isolation: { netns: isolation.netns, note: isolation.note },
      ...(spot
        ? {
            spotCheck: {
              sampled: spot.sampled,
              changedSince: spot.changedSince,
              mismatches: spot.mismatches.length,
              examples: spot.mismatches.slice(0, EXAMPLES).map((m) => `${m.path}: ${m.reason}`),
            },
          }
        : {}),
      skipped,
      durationMs: clock.now().getTime() - started.getTime(),
      status: findings.length === 0 ? "pass" : "fail",
      findings,
    };
    return report;
  } finally {
    await pool.close();
    await lock.release().catch(() => undefined);
    if (sandbox !== undefined && input.keepSandbox !== true)
      await rm(sandbox, { recursive: true, force: true });
    process.removeListener("exit", removeNow);
  }
}

async function chooseSnapshot(
  repo: Repository,
  input: DrillInput,
  dataset: Dataset,
): Promise<SnapshotWithId> {
  if (input.snapshot !== undefined) return snapshotToRestore(repo, input.snapshot);
  await repo.loadIndex();
  const all = await loadAllSnapshots(repo, () => undefined);
  const paths = datasetPaths(dataset);
  const ours = all.filter((s) => latestOf([s], paths, input.dataset) !== undefined);
  if (ours.length === 0) {
    throw new BulwarkError("NOT_FOUND", `no snapshot of dataset ${input.dataset} on this copy`, {
      hint: "back it up first (bulwark run JOB), or drill another copy with --target",
    });
  }
  if (input.randomWithinMs !== undefined) {
    const since = input.clock.now().getTime() - input.randomWithinMs;
    const recent = ours.filter((s) => new Date(s.time).getTime() >= since);
    if (recent.length === 0) {
      throw new BulwarkError("NOT_FOUND", `no snapshot of dataset ${input.dataset} within the period asked`, {
        hint: "widen --random-within, or drill the newest snapshot",
      });
    }
    return recent[Math.floor((input.random ?? Math.random)() * recent.length)]!;
  }
  return latestOf(ours, paths, input.dataset)!;
}
