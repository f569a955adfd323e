/**
 * Running a job (`bulwark run [JOB]`, docs/config.md "Jobs"): back up the dataset to the primary target,
 * copy the new snapshot to every copy target, then apply each target's own retention.
 *
 * Order and failure rules, chosen so that a failure never costs a copy that already exists:
 *  - a failed backup stops the job (there is nothing new to copy), and nothing is forgotten anywhere;
 *  - a failed copy fails the job but the other copies still run; retention is then not applied on that
 *    target (its older snapshots may be the newest it has);
 *  - a copy sends every snapshot of the dataset that is newer than the newest the target holds, so a target
 *    that was down catches up, and snapshots its retention removed are never sent again;
 *  - with `init`, a target whose repository does not exist yet is created: the primary with default
 *    parameters, a copy target sharing the primary's chunker parameters and blob ids (so blobs move as they
 *    are). Without it a missing repository is an error: an unmounted NAS share must not silently become a
 *    fresh repository on the local disk.
 * Every step is recorded in the catalog when one is given; the repositories stay the truth.
 */
import { hostname as osHostname } from "node:os";

import type { Catalog } from "../catalog/catalog.js";
import type { BulwarkConfig, Dataset, Job, Policy, Target } from "../config/types.js";
import { BulwarkError, errorMessage, findBulwarkError, hasCode } from "../core/errors.js";
import { copySnapshots, snapshotIdentity, type CopyProgress } from "../copy/copier.js";
import { clockOf, type Clock } from "../core/clock.js";
import { forget } from "./forget.js";
import { isEmptyPolicy } from "../policy/retention.js";
import { RepoLock } from "../repository/lock.js";
import type { Repository } from "../repository/repository.js";
import { WorkerPool } from "../repository/worker-pool.js";
import { backup, type BackupReporter } from "../snapshot/archiver.js";
import { ExcludeMatcher } from "../snapshot/exclude.js";
import { loadAllSnapshots, type SnapshotSummary, type SnapshotWithId } from "../snapshot/snapshot.js";
import { runWithDatasetHooks } from "../sources/dataset.js";
import { initTargetRepository, openTargetRepository, scrub, type TargetAccess } from "./targets.js";

/** What the runner records in the catalog (a type-only dependency: SQLite is loaded by the CLI on demand). */
export type JobCatalog = Pick<
  Catalog,
  "startRun" | "finishRun" | "recordSnapshot" | "forgetSnapshots" | "recordCopy" | "recordEvent"
>;

export interface JobReporter {
  /** A step starts or ends: "backup of app to local", "copy to nas: 12 blobs". */
  info?(line: string): void;
  warn?(line: string): void;
  backupFile?(path: string, bytes: number): void;
  copyProgress?(target: string, p: CopyProgress): void;
}

export interface RunJobOptions {
  access: TargetAccess;
  catalog?: JobCatalog;
  reporter?: JobReporter;
  now?: () => Date;
  /** Apply each target's retention after the copies (default true). */
  forget?: boolean;
  /** Read every copied pack back from the copy target (default true). */
  verify?: boolean;
  /** Host name recorded in snapshots (default this machine's). */
  hostname?: string;
  /** Create the repository of a target that has none (default false: that is an error). */
  init?: boolean;
}

export type StepStatus = "ok" | "partial" | "failed" | "skipped";

export interface BackupStep {
  target: string;
  status: StepStatus;
  snapshot?: string;
  summary?: SnapshotSummary;
  skipped: { path: string; error: string }[];
  createdRepository?: boolean;
  error?: string;
}

export interface CopyStep {
  target: string;
  status: StepStatus;
  /** Target ids of the snapshots copied (or already there). */
  snapshots: { source: string; target: string; alreadyThere: boolean }[];
  blobsCopied: number;
  bytesCopied: number;
  adoptedPacks: number;
  verifiedPacks: number;
  createdRepository?: boolean;
  error?: string;
}

export interface ForgetStep {
  target: string;
  status: StepStatus;
  removed: string[];
  kept: number;
  /** Snapshots the policy removes but the target refuses to delete yet (retention lock). */
  locked: string[];
  error?: string;
}

export interface JobResult {
  job: string;
  dataset: string;
  policy: string;
  status: "ok" | "partial" | "failed";
  backup: BackupStep;
  copies: CopyStep[];
  forget: ForgetStep[];
  durationMs: number;
}

export async function runJob(
  config: BulwarkConfig,
  jobName: string,
  options: RunJobOptions,
): Promise<JobResult> {
  const job = config.jobs[jobName];
  if (job === undefined) throw new BulwarkError("USAGE", `unknown job ${JSON.stringify(jobName)}`);
  const dataset = config.datasets[job.dataset];
  const policy = config.policies[job.policy];
  const primary = config.targets[job.primary];
  if (dataset === undefined || policy === undefined || primary === undefined) {
    throw new BulwarkError(
      "CONFIG_INVALID",
      `job ${jobName} refers to a dataset, policy or target that does not exist`,
      {
        hint: "run `bulwark config check`",
      },
    );
  }
  const runner = new JobRunner(config, job, dataset, policy, options);
  return runner.run(primary);
}

class JobRunner {
  private readonly now: () => Date;
  private readonly clock: Clock;
  private readonly started: Date;
  private readonly secrets: string[];

  constructor(
    private readonly config: BulwarkConfig,
    private readonly job: Job,
    private readonly dataset: Dataset,
    private readonly policy: Policy,
    private options: RunJobOptions,
  ) {
    this.clock = clockOf(options.now);
    this.now = () => this.clock.now();
    this.started = this.now();
    this.secrets = options.access.secrets ?? [];
    options.access.secrets = this.secrets;
    if (options.catalog !== undefined) {
      this.options = { ...options, catalog: this.failSafe(options.catalog) };
    }
  }

  /**
   * The catalog with every call guarded: when it first fails (disk full, damaged), the failure is reported
   * once and the rest of the run goes on unrecorded. The repositories are the truth; a backup must not fail
   * for its index.
   */
  private failSafe(catalog: JobCatalog): JobCatalog {
    let broken = false;
    const guard =
      <A extends unknown[], R>(fn: (...args: A) => R) =>
      (...args: A): R => {
        if (!broken) {
          try {
            return fn.apply(catalog, args);
          } catch (err) {
            broken = true;
            this.options.reporter?.warn?.(
              `warning: the catalog failed; the rest of this run is not recorded in it: ${this.clean(err)}`,
            );
          }
        }
        // Only startRun returns a value its callers use, and they accept an unknown run id.
        return undefined as R;
      };
    return {
      startRun: guard(catalog.startRun),
      finishRun: guard(catalog.finishRun),
      recordSnapshot: guard(catalog.recordSnapshot),
      forgetSnapshots: guard(catalog.forgetSnapshots),
      recordCopy: guard(catalog.recordCopy),
      recordEvent: guard(catalog.recordEvent),
    };
  }

  /** The message and what to do about it, without secrets: a step's error is all the user sees of it. */
  private clean(err: unknown): string {
    const hint = findBulwarkError(err)?.hint;
    return scrub(errorMessage(err) + (hint !== undefined ? ` (${hint})` : ""), this.secrets);
  }

  private event(level: "info" | "warning" | "error", message: string, target?: string, runId?: number): void {
    if (level === "info") this.options.reporter?.info?.(message);
    else this.options.reporter?.warn?.(`${level}: ${message}`);
    this.options.catalog?.recordEvent({
      time: this.now(),
      level,
      message,
      job: this.job.name,
      dataset: this.dataset.name,
      ...(target !== undefined ? { target } : {}),
      ...(runId !== undefined ? { runId } : {}),
    });
  }

  async run(primaryTarget: Target): Promise<JobResult> {
    const result: JobResult = {
      job: this.job.name,
      dataset: this.dataset.name,
      policy: this.policy.name,
      status: "ok",
      backup: { target: primaryTarget.name, status: "failed", skipped: [] },
      copies: [],
      forget: [],
      durationMs: 0,
    };
    let primary: Repository | undefined;
    try {
      try {
        primary = await this.openOrCreate(primaryTarget, undefined, (created) => {
          result.backup.createdRepository = created;
        });
        result.backup = { ...result.backup, ...(await this.backupStep(primary, primaryTarget)) };
      } catch (err) {
        result.backup.status = "failed";
        result.backup.error = this.clean(err);
        this.event(
          "error",
          `backup of ${this.dataset.name} to ${primaryTarget.name} failed: ${result.backup.error}`,
          primaryTarget.name,
        );
      }
      if (primary !== undefined && result.backup.snapshot !== undefined) {
        for (const name of this.job.copies) {
          const target = this.config.targets[name];
          if (target === undefined) continue;
          result.copies.push(await this.copyStep(primary, primaryTarget, target));
        }
        if (this.options.forget !== false) {
          for (const name of [this.job.primary, ...this.job.copies]) {
            const rules = this.policy.retention[name];
            if (rules === undefined || isEmptyPolicy(rules)) continue;
            const copy = result.copies.find((c) => c.target === name);
            if (copy !== undefined && copy.status === "failed") {
              result.forget.push({
                target: name,
                status: "skipped",
                removed: [],
                kept: 0,
                locked: [],
                error:
                  "the copy to this target failed; its retention is applied after the next successful copy",
              });
              continue;
            }
            const target = this.config.targets[name]!;
            result.forget.push(
              await this.forgetStep(name === this.job.primary ? primary : undefined, target),
            );
          }
        }
      }
    } finally {
      await primary?.backend.close().catch(() => undefined);
    }
    const failed =
      result.backup.status === "failed" ||
      result.copies.some((c) => c.status === "failed") ||
      result.forget.some((f) => f.status === "failed");
    result.status = failed ? "failed" : result.backup.status === "partial" ? "partial" : "ok";
    result.durationMs = this.now().getTime() - this.started.getTime();
    return result;
  }

  /** Opens a target's repository, creating it when there is none (a copy target as a copy of `copyOf`). */
  private async openOrCreate(
    target: Target,
    copyOf: Repository | undefined,
    created: (yes: boolean) => void,
  ): Promise<Repository> {
    try {
      const repo = await openTargetRepository(target, this.options.access);
      created(false);
      return repo;
    } catch (err) {
      if (!hasCode(err, "NO_REPOSITORY")) throw err;
      if (this.options.init !== true) {
        throw new BulwarkError("NO_REPOSITORY", `target ${target.name} holds no repository`, {
          cause: err,
          hint:
            "if the target is new, create its repository with `bulwark run --init`; if it should hold one, " +
            "check that its storage is mounted or reachable",
        });
      }
    }
    const repo = await initTargetRepository(
      target,
      this.options.access,
      copyOf !== undefined ? { copyParamsFrom: copyOf.config } : {},
    );
    created(true);
    this.event(
      "info",
      `created the repository of target ${target.name} (${repo.id.slice(0, 10)})`,
      target.name,
    );
    return repo;
  }

  private async backupStep(repo: Repository, target: Target): Promise<Omit<BackupStep, "target">> {
    const runId = this.options.catalog?.startRun({
      kind: "backup",
      job: this.job.name,
      dataset: this.dataset.name,
      target: target.name,
      startedAt: this.now(),
    });
    this.event("info", `backup of ${this.dataset.name} to ${target.name}`, target.name, runId);
    const lock = await RepoLock.acquire(repo, false);
    const pool = new WorkerPool(repo);
    try {
      await repo.loadIndex();
      const host = this.options.hostname ?? osHostname();
      const snapshots = await loadAllSnapshots(repo, (name, err) =>
        this.event(
          "warning",
          `skipping damaged snapshot ${name.slice(0, 8)}: ${this.clean(err)}`,
          target.name,
        ),
      );
      const env = this.options.access.env;
      const result = await runWithDatasetHooks(
        this.dataset,
        env,
        async (plan) => {
          const key = JSON.stringify([...plan.paths, ...plan.virtualFiles.map((v) => v.path)].sort());
          const parent = snapshots
            .filter(
              (s) =>
                s.hostname === host &&
                (s.dataset === this.dataset.name || s.dataset === undefined) &&
                JSON.stringify([...s.paths].sort()) === key,
            )
            .at(-1);
          const excludes = await ExcludeMatcher.fromOptions(plan.excludes, [], env);
          const reporter: BackupReporter = {
            fileDone: (path, bytes) => this.options.reporter?.backupFile?.(path, bytes),
            skipped: (entry) =>
              this.options.reporter?.warn?.(`warning: skipped ${entry.path}: ${entry.error}`),
          };
          return backup(repo, pool, {
            paths: plan.paths,
            ...(plan.virtualFiles.length > 0 ? { virtualFiles: plan.virtualFiles } : {}),
            hostname: host,
            excludes,
            dataset: this.dataset.name,
            ...(parent ? { parent } : {}),
            reporter,
            now: this.now,
          });
        },
        (line) => this.options.reporter?.info?.(line),
      );
      const skipped = result.snapshot.skipped ?? [];
      const status: StepStatus = skipped.length > 0 ? "partial" : "ok";
      this.options.catalog?.recordSnapshot({
        target: target.name,
        snapshot: result.id,
        original: result.id,
        dataset: this.dataset.name,
        time: new Date(result.snapshot.time),
        hostname: result.snapshot.hostname,
        paths: result.snapshot.paths,
        tags: result.snapshot.tags,
        seenAt: this.now(),
      });
      if (runId !== undefined) {
        this.options.catalog?.finishRun(runId, {
          status,
          finishedAt: this.now(),
          snapshot: result.id,
          stats: { ...result.snapshot.summary, skipped: skipped.length },
        });
      }
      this.event("info", `snapshot ${result.id.slice(0, 8)} saved on ${target.name}`, target.name, runId);
      return {
        status,
        snapshot: result.id,
        ...(result.snapshot.summary ? { summary: result.snapshot.summary } : {}),
        skipped,
      };
    } catch (err) {
      if (runId !== undefined) {
        this.options.catalog?.finishRun(runId, {
          status: "failed",
          finishedAt: this.now(),
          error: this.clean(err),
        });
      }
      throw err;
    } finally {
      await pool.close();
      await lock.release().catch(() => undefined);
    }
  }

  private async copyStep(primary: Repository, from: Target, to: Target): Promise<CopyStep> {
    const step: CopyStep = {
      target: to.name,
      status: "failed",
      snapshots: [],
      blobsCopied: 0,
      bytesCopied: 0,
      adoptedPacks: 0,
      verifiedPacks: 0,
    };
    const runId = this.options.catalog?.startRun({
      kind: "copy",
      job: this.job.name,
      dataset: this.dataset.name,
      target: to.name,
      startedAt: this.now(),
    });
    this.event("info", `copy to ${to.name}`, to.name, runId);
    let repo: Repository | undefined;
    let targetLock: RepoLock | undefined;
    let sourceLock: RepoLock | undefined;
    try {
      repo = await this.openOrCreate(to, primary, (created) => {
        if (created) step.createdRepository = true;
      });
      sourceLock = await RepoLock.acquire(primary, false);
      targetLock = await RepoLock.acquire(repo, false);
      await repo.loadIndex();
      const wanted = await this.snapshotsToCopy(primary, repo);
      const result = await copySnapshots(primary, repo, {
        snapshots: wanted,
        verify: this.options.verify !== false,
        reporter: {
          progress: (p) => this.options.reporter?.copyProgress?.(to.name, p),
          warn: (m) => this.event("warning", scrub(m, this.secrets), to.name, runId),
        },
      });
      step.snapshots = result.snapshots.map((s) => ({
        source: s.source,
        target: s.target,
        alreadyThere: s.alreadyThere,
      }));
      step.blobsCopied = result.blobsCopied;
      step.bytesCopied = result.bytesCopied;
      step.adoptedPacks = result.adoptedPacks;
      step.verifiedPacks = result.verifiedPacks;
      for (const s of result.snapshots) {
        const source = wanted.find((w) => w.id === s.source);
        if (source === undefined) continue;
        this.options.catalog?.recordSnapshot({
          target: to.name,
          snapshot: s.target,
          original: snapshotIdentity(source),
          dataset: this.dataset.name,
          time: new Date(source.time),
          hostname: source.hostname,
          paths: source.paths,
          tags: source.tags,
          seenAt: this.now(),
        });
        if (!s.alreadyThere) {
          this.options.catalog?.recordCopy({
            dataset: this.dataset.name,
            from: from.name,
            to: to.name,
            sourceSnapshot: s.source,
            targetSnapshot: s.target,
            time: this.now(),
            blobs: s.blobsCopied,
            bytes: s.bytesCopied,
            verified: this.options.verify !== false,
            ...(runId !== undefined ? { runId } : {}),
          });
        }
      }
      if (result.failed.length > 0) {
        step.status = "failed";
        step.error = result.failed.map((f) => `${f.source.slice(0, 8)}: ${f.error}`).join("; ");
      } else {
        step.status = "ok";
      }
      this.event(
        step.status === "ok" ? "info" : "error",
        `copy to ${to.name}: ${result.snapshots.filter((s) => !s.alreadyThere).length} snapshots, ${result.blobsCopied} blobs sent` +
          (result.adoptedPacks > 0 ? `, ${result.adoptedPacks} packs of an interrupted copy resumed` : "") +
          (step.error !== undefined ? `; failed: ${step.error}` : ""),
        to.name,
        runId,
      );
    } catch (err) {
      step.status = "failed";
      step.error = this.clean(err);
      this.event("error", `copy to ${to.name} failed: ${step.error}`, to.name, runId);
    } finally {
      await targetLock?.release().catch(() => undefined);
      await sourceLock?.release().catch(() => undefined);
      await repo?.backend.close().catch(() => undefined);
    }
    if (runId !== undefined) {
      this.options.catalog?.finishRun(runId, {
        status: step.status === "ok" ? "ok" : "failed",
        finishedAt: this.now(),
        ...(step.snapshots.at(-1) ? { snapshot: step.snapshots.at(-1)!.target } : {}),
        ...(step.error !== undefined ? { error: step.error } : {}),
        stats: {
          blobs: step.blobsCopied,
          bytes: step.bytesCopied,
          adoptedPacks: step.adoptedPacks,
          verifiedPacks: step.verifiedPacks,
        },
      });
    }
    return step;
  }

  /** The dataset's snapshots on the primary newer than the newest the target holds (all, on a new target). */
  private async snapshotsToCopy(primary: Repository, target: Repository): Promise<SnapshotWithId[]> {
    const mine = (s: SnapshotWithId): boolean => s.dataset === this.dataset.name;
    const onPrimary = (await loadAllSnapshots(primary, () => undefined)).filter(mine);
    const onTarget = (await loadAllSnapshots(target, () => undefined)).filter(mine);
    const newest = onTarget.reduce<string | undefined>(
      (t, s) => (t === undefined || s.time > t ? s.time : t),
      undefined,
    );
    const there = new Set(onTarget.map(snapshotIdentity));
    return onPrimary.filter(
      (s) => !there.has(snapshotIdentity(s)) && (newest === undefined || s.time > newest),
    );
  }

  /** Applies the policy's retention for this target to the dataset's snapshots there. */
  private async forgetStep(open: Repository | undefined, target: Target): Promise<ForgetStep> {
    const step: ForgetStep = { target: target.name, status: "failed", removed: [], kept: 0, locked: [] };
    const rules = this.policy.retention[target.name]!;
    const runId = this.options.catalog?.startRun({
      kind: "forget",
      job: this.job.name,
      dataset: this.dataset.name,
      target: target.name,
      startedAt: this.now(),
    });
    let repo = open;
    let lock: RepoLock | undefined;
    try {
      repo ??= await openTargetRepository(target, this.options.access);
      lock = await RepoLock.acquire(repo, true);
      // The same operation as `bulwark forget`: a rule that keeps none of a group refuses, removing nothing.
      const result = await forget({
        repo,
        clock: this.clock,
        policy: rules,
        filter: (s) => s.dataset === this.dataset.name,
        groupBy: ["host", "paths"],
        target: target.name,
      });
      step.kept = result.kept.length;
      step.removed = result.removed;
      step.locked = result.locked.map((l) => l.id);
      this.options.catalog?.forgetSnapshots(target.name, new Set(result.remaining));
      step.status = "ok";
      this.event(
        "info",
        `retention on ${target.name}: ${step.removed.length} snapshots forgotten, ${step.kept} kept` +
          (step.locked.length > 0 ? `, ${step.locked.length} still under retention lock` : ""),
        target.name,
        runId,
      );
    } catch (err) {
      step.error = this.clean(err);
      this.event("error", `retention on ${target.name} failed: ${step.error}`, target.name, runId);
    } finally {
      await lock?.release().catch(() => undefined);
      if (open === undefined) await repo?.backend.close().catch(() => undefined);
    }
    if (runId !== undefined) {
      this.options.catalog?.finishRun(runId, {
        status: step.status === "ok" ? "ok" : "failed",
        finishedAt: this.now(),
        ...(step.error !== undefined ? { error: step.error } : {}),
        stats: { removed: step.removed.length, kept: step.kept, locked: step.locked.length },
      });
    }
    return step;
  }
}

/**
 * The jobs to run, in dependency order: the named ones (all when none is named) after the jobs they depend on
 * that are also being run. The config rules have already refused cycles.
 */
export function jobOrder(config: BulwarkConfig, names: readonly string[]): string[] {
  const wanted = names.length > 0 ? names : Object.keys(config.jobs);
  for (const name of wanted) {
    if (config.jobs[name] === undefined) {
      const known = Object.keys(config.jobs);
      throw new BulwarkError("USAGE", `unknown job ${JSON.stringify(name)}`, {
        hint: known.length > 0 ? `the jobs are ${known.join(", ")}` : "the config declares no job",
      });
    }
  }
  const order: string[] = [];
  const visiting = new Set<string>();
  const visit = (name: string): void => {
    if (order.includes(name) || visiting.has(name)) return;
    visiting.add(name);
    for (const dep of config.jobs[name]?.dependsOn ?? []) if (wanted.includes(dep)) visit(dep);
    visiting.delete(name);
    order.push(name);
  };
  for (const name of wanted) visit(name);
  return order;
}
