/**
 * Running a job (`bulwark run [JOB]`, docs/config.md "Jobs"): back up the dataset to the primary target,
 * copy the new snapshot to every copy target, then apply each target's own retention. Each step is one call
 * of the operation the CLI command of the same name makes (ops/backup.ts, ops/copy.ts, ops/forget.ts); the
 * runner only composes them, and reports each step on the event stream (step-started, step-finished, and
 * the operation's own events with the job, dataset, target and step added) for the CLI to render and the
 * catalog to record (ops/catalog-recorder.ts).
 *
 * Order and failure rules, chosen so that a failure never costs a copy that already exists:
 *  - a failed backup stops the job (there is nothing new to copy), and nothing is forgotten anywhere;
 *  - a failed copy fails the job but the other copies still run; retention is then not applied on that
 *    target (its older snapshots may be the newest it has);
 *  - a copy sends every snapshot of the dataset that is newer than the newest the target holds, so a target
 *    that was down catches up, and snapshots its retention removed are never sent again;
 *  - on every target with immutability (`targets.<name>.immutability`) that holds the dataset's snapshots
 *    after this run (the primary, and each copy target whose copy succeeded), the locks of everything the
 *    kept snapshots need are extended to the period from now (ops/extend-retention.ts, the operation of
 *    `bulwark retention`), so no object's lock lapses while a snapshot needing it is kept; a failure to
 *    extend fails the job, since the copy no longer counts as immutable;
 *  - with `init`, a target whose repository does not exist yet is created: the primary with default
 *    parameters, a copy target sharing the primary's chunker parameters and blob ids (so blobs move as they
 *    are). A primary that is gone while a copy target still holds a repository is re-created from the copy
 *    with the newest snapshot of the dataset (same parameters and blob ids, the dataset's snapshots copied
 *    back and verified) before the backup runs; a copy target that cannot be opened then stops the run. Without it a missing repository is an error: an unmounted NAS share must not silently become a
 *    fresh repository on the local disk.
 */
import { hostname as osHostname } from "node:os";

import type { BulwarkConfig, Dataset, Job, Policy, Target } from "../config/types.js";
import { systemClock, type Clock } from "../core/clock.js";
import { BulwarkError, errorMessage, findBulwarkError, hasCode } from "../core/errors.js";
import {
  emitMessage,
  withContext,
  type EventLevel,
  type EventSink,
  type StepKind,
  type StepStatus,
} from "../core/events.js";
import { isEmptyKeepRules } from "../policy/keep-rules.js";
import { RepoLock } from "../repository/lock.js";
import type { Repository } from "../repository/repository.js";
import { WorkerPool } from "../repository/worker-pool.js";
import { loadAllSnapshots, type SnapshotSummary } from "../snapshot/snapshot.js";
import { backupOperation } from "./backup.js";
import { copyToDestination, datasetSnapshotsToCopy } from "./copy.js";
import { extendRetention } from "./extend-retention.js";
import { forget } from "./forget.js";
import { initTargetRepository, openTargetRepository, scrub, type TargetAccess } from "./targets.js";

export type { StepStatus };

export interface RunJobOptions {
  access: TargetAccess;
  /** Where the run's events go: the CLI's renderer, the catalog recorder (fanOut for both). */
  events?: EventSink;
  clock?: Clock;
  /** Apply each target's retention after the copies (default true). */
  forget?: boolean;
  /** Read every copied pack back from the copy target (default true). */
  verify?: boolean;
  /** Host name recorded in snapshots (default this machine's). */
  hostname?: string;
  /** Create the repository of a target that has none (default false: that is an error). */
  init?: boolean;
}

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

/** Lock maintenance on an immutable target after the run. */
export interface LocksStep {
  target: string;
  status: StepStatus;
  /** Objects whose lock was read. */
  checked: number;
  /** Objects whose lock lapsed too early (before this step extended them). */
  drift: number;
  extended: number;
  /** Until when everything is now locked at least. */
  requiredUntil?: string;
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
  locks: LocksStep[];
  durationMs: number;
}

const MISSING_REPOSITORY_HINT =
  "if the target is new, create its repository with `bulwark run --init` (a lost primary is re-created " +
  "from its copies); if it should hold one, " +
  "check that its storage is mounted or reachable";

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

/** One step of the job as it runs: its events carry the step id, and it ends with step-finished. */
interface StepHandle {
  events: EventSink;
  say(level: EventLevel, message: string): void;
  finish(
    status: StepStatus,
    extra: { snapshot?: string; error?: string; stats?: Record<string, unknown> },
  ): void;
}

class JobRunner {
  private readonly clock: Clock;
  private readonly started: Date;
  private readonly secrets: string[];
  private readonly events: EventSink;
  private steps = 0;

  constructor(
    private readonly config: BulwarkConfig,
    private readonly job: Job,
    private readonly dataset: Dataset,
    private readonly policy: Policy,
    private readonly options: RunJobOptions,
  ) {
    this.clock = options.clock ?? systemClock;
    this.started = this.clock.now();
    this.secrets = options.access.secrets ?? [];
    options.access.secrets = this.secrets;
    // Every message leaves scrubbed of the secrets read for the targets: a step's error is all the user
    // (and the catalog) sees of it.
    const sink = options.events;
    this.events = (e) => sink?.(e.type === "message" ? { ...e, message: scrub(e.message, this.secrets) } : e);
  }

  /** The message and what to do about it, without secrets. */
  private clean(err: unknown): string {
    const hint = findBulwarkError(err)?.hint;
    return scrub(errorMessage(err) + (hint !== undefined ? ` (${hint})` : ""), this.secrets);
  }

  private step(kind: StepKind, target: string): StepHandle {
    const events = withContext(this.events, {
      job: this.job.name,
      dataset: this.dataset.name,
      target,
      step: `${this.job.name}/${++this.steps}/${kind}/${target}`,
    });
    events({ type: "step-started", time: this.clock.now(), kind });
    return {
      events,
      say: (level, message) => emitMessage(events, this.clock.now(), level, message),
      finish: (status, extra) =>
        events({ type: "step-finished", time: this.clock.now(), kind, status, ...extra }),
    };
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
      locks: [],
      durationMs: 0,
    };
    let primary: Repository | undefined;
    try {
      primary = await this.backupStep(primaryTarget, result);
      if (primary !== undefined && result.backup.snapshot !== undefined) {
        for (const name of this.job.copies) {
          const target = this.config.targets[name];
          if (target === undefined) continue;
          result.copies.push(await this.copyStep(primary, primaryTarget, target));
        }
        if (this.options.forget !== false) {
          for (const name of [this.job.primary, ...this.job.copies]) {
            const rules = this.policy.keepRules[name];
            if (rules === undefined || isEmptyKeepRules(rules)) continue;
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
      if (primary !== undefined && result.backup.snapshot !== undefined) {
        for (const name of [this.job.primary, ...this.job.copies]) {
          const target = this.config.targets[name];
          if (target?.immutability === undefined) continue;
          if (result.copies.find((c) => c.target === name)?.status === "failed") continue;
          result.locks.push(await this.locksStep(name === this.job.primary ? primary : undefined, target));
        }
      }
    } finally {
      await primary?.backend.close().catch(() => undefined);
    }
    const failed =
      result.backup.status === "failed" ||
      result.copies.some((c) => c.status === "failed") ||
      result.forget.some((f) => f.status === "failed") ||
      result.locks.some((l) => l.status === "failed");
    result.status = failed ? "failed" : result.backup.status === "partial" ? "partial" : "ok";
    result.durationMs = this.clock.now().getTime() - this.started.getTime();
    return result;
  }

  /** Opens a target's repository; with `init`, creates one where there is none. */
  private async openOrCreate(
    target: Target,
    step: StepHandle,
  ): Promise<{ repo: Repository; created: boolean }> {
    try {
      return { repo: await openTargetRepository(target, this.options.access), created: false };
    } catch (err) {
      if (!hasCode(err, "NO_REPOSITORY")) throw err;
      if (this.options.init !== true) {
        throw new BulwarkError("NO_REPOSITORY", `target ${target.name} holds no repository`, {
          cause: err,
          hint: MISSING_REPOSITORY_HINT,
        });
      }
    }
    // A primary that is gone while copies survive is re-created from a copy: a fresh repository would have
    // other blob ids, and every copy would then refuse it as not of its copy set.
    const survivor = await this.survivingCopy(step);
    if (survivor !== undefined)
      return { repo: await this.recreateFrom(target, survivor, step), created: true };
    const repo = await initTargetRepository(target, this.options.access, {});
    step.say("info", `created the repository of target ${target.name} (${repo.id.slice(0, 10)})`);
    return { repo, created: true };
  }

  /**
   * The copy to re-create a lost primary from: among the job's copy targets that hold a repository, the
   * one with the newest snapshot of the dataset (then the most snapshots of it). Undefined when no copy
   * target holds a repository (a first run: the primary is new). A copy target that cannot be opened for
   * another reason (down, wrong password) stops the run: which copy set the new primary must join cannot be
   * known, and a guess would split them.
   */
  private async survivingCopy(step: StepHandle): Promise<{ target: Target; repo: Repository } | undefined> {
    let best: { target: Target; repo: Repository; newest: string; count: number } | undefined;
    for (const name of this.job.copies) {
      const target = this.config.targets[name];
      if (target === undefined) continue;
      let repo: Repository;
      try {
        repo = await openTargetRepository(target, this.options.access, { readOnly: true });
      } catch (err) {
        if (hasCode(err, "NO_REPOSITORY")) continue;
        await best?.repo.backend.close().catch(() => undefined);
        throw new BulwarkError(
          "NO_REPOSITORY",
          `target ${this.job.primary} holds no repository, and copy target ${name} cannot be opened to re-create it from: ${this.clean(err)}`,
          {
            hint: `make ${name} reachable and run again with --init, or re-create the primary from another copy: bulwark copy -c CONFIG --from ${name} --to ${this.job.primary} --init`,
          },
        );
      }
      const ours = (await loadAllSnapshots(repo, () => undefined)).filter(
        (x) => x.dataset === this.dataset.name,
      );
      const newest = ours.reduce((t, x) => (x.time > t ? x.time : t), "");
      const better =
        best === undefined || newest > best.newest || (newest === best.newest && ours.length > best.count);
      if (better) {
        await best?.repo.backend.close().catch(() => undefined);
        best = { target, repo, newest, count: ours.length };
      } else {
        await repo.backend.close().catch(() => undefined);
      }
    }
    if (best !== undefined)
      step.say(
        "info",
        `target ${this.job.primary} holds no repository; copy target ${best.target.name} does (${best.count} snapshots of ${this.dataset.name}, the newest ${best.newest || "none"})`,
      );
    return best === undefined ? undefined : { target: best.target, repo: best.repo };
  }

  /**
   * Re-creates the primary as a member of the survivor's copy set (its chunker parameters and blob ids,
   * the primary's own password) and copies the dataset's snapshots back into it, verified, so the backup
   * that follows is incremental and every copy accepts what it sends next. Returns the primary, open.
   */
  private async recreateFrom(
    primary: Target,
    survivor: { target: Target; repo: Repository },
    step: StepHandle,
  ): Promise<Repository> {
    try {
      const outcome = await copyToDestination({
        source: survivor.repo,
        sourceLabel: survivor.target.name,
        destination: {
          label: `target ${primary.name}`,
          open: () => openTargetRepository(primary, this.options.access),
          create: (source) =>
            initTargetRepository(primary, this.options.access, { copyParamsFrom: source.config }),
        },
        clock: this.clock,
        events: step.events,
        init: true,
        verify: this.options.verify !== false,
        select: (source, destination) => datasetSnapshotsToCopy(this.dataset.name, source, destination),
        scrub: (m) => scrub(m, this.secrets),
      });
      if (outcome.failed.length > 0) {
        throw new BulwarkError(
          "IO",
          `re-creating ${primary.name} from ${survivor.target.name} copied ${outcome.snapshots.length - outcome.failed.length} of ${outcome.snapshots.length} snapshots: ${outcome.failed.map((f) => `${f.source.slice(0, 8)}: ${f.error}`).join("; ")}`,
          {
            hint: `run again with --init to finish (what was copied is kept), or bulwark copy -c CONFIG --from ${survivor.target.name} --to ${primary.name}`,
          },
        );
      }
      step.say(
        "info",
        `re-created the repository of target ${primary.name} from ${survivor.target.name}: ${outcome.snapshots.length} snapshots, ${outcome.blobsCopied} blobs copied back`,
      );
    } finally {
      await survivor.repo.backend.close().catch(() => undefined);
    }
    return openTargetRepository(primary, this.options.access);
  }

  /** The backup step; returns the primary's repository (open) when it could be opened. */
  private async backupStep(target: Target, result: JobResult): Promise<Repository | undefined> {
    const step = this.step("backup", target.name);
    step.say("info", `backup of ${this.dataset.name} to ${target.name}`);
    let repo: Repository | undefined;
    try {
      const opened = await this.openOrCreate(target, step);
      repo = opened.repo;
      result.backup.createdRepository = opened.created;
      const lock = await RepoLock.acquire(repo, false, this.clock);
      const pool = new WorkerPool(repo);
      try {
        const outcome = await backupOperation({
          repo,
          pool,
          clock: this.clock,
          events: step.events,
          what: { kind: "dataset", dataset: this.dataset },
          env: this.options.access.env,
          hostname: this.options.hostname ?? osHostname(),
          onDamagedSnapshot: (name, err) =>
            step.say("warning", `skipping damaged snapshot ${name.slice(0, 8)}: ${this.clean(err)}`),
        });
        const skipped = outcome.snapshot.skipped ?? [];
        const status: StepStatus = skipped.length > 0 ? "partial" : "ok";
        result.backup = {
          ...result.backup,
          status,
          snapshot: outcome.id,
          ...(outcome.snapshot.summary ? { summary: outcome.snapshot.summary } : {}),
          skipped,
        };
        step.say("info", `snapshot ${outcome.id.slice(0, 8)} saved on ${target.name}`);
        step.finish(status, {
          snapshot: outcome.id,
          stats: { ...outcome.snapshot.summary, skipped: skipped.length },
        });
      } finally {
        await pool.close();
        await lock.release().catch(() => undefined);
      }
      return repo;
    } catch (err) {
      result.backup.status = "failed";
      result.backup.error = this.clean(err);
      step.say("error", `backup of ${this.dataset.name} to ${target.name} failed: ${result.backup.error}`);
      step.finish("failed", { error: result.backup.error });
      return repo;
    }
  }

  private async copyStep(primary: Repository, from: Target, to: Target): Promise<CopyStep> {
    const step = this.step("copy", to.name);
    const result: CopyStep = {
      target: to.name,
      status: "failed",
      snapshots: [],
      blobsCopied: 0,
      bytesCopied: 0,
      adoptedPacks: 0,
      verifiedPacks: 0,
    };
    step.say("info", `copy to ${to.name}`);
    try {
      const outcome = await copyToDestination({
        source: primary,
        sourceLabel: from.name,
        destination: {
          label: to.name,
          open: () => openTargetRepository(to, this.options.access),
          create: (source) =>
            initTargetRepository(to, this.options.access, { copyParamsFrom: source.config }),
        },
        clock: this.clock,
        events: step.events,
        init: this.options.init === true,
        missingHint: MISSING_REPOSITORY_HINT,
        verify: this.options.verify !== false,
        sourceIndexLoaded: true,
        select: (source, destination) => datasetSnapshotsToCopy(this.dataset.name, source, destination),
      });
      if (outcome.createdRepository) result.createdRepository = true;
      result.snapshots = outcome.snapshots.map((s) => ({
        source: s.source,
        target: s.target,
        alreadyThere: s.alreadyThere,
      }));
      result.blobsCopied = outcome.blobsCopied;
      result.bytesCopied = outcome.bytesCopied;
      result.adoptedPacks = outcome.adoptedPacks;
      result.verifiedPacks = outcome.verifiedPacks;
      if (outcome.failed.length > 0) {
        result.error = outcome.failed.map((f) => `${f.source.slice(0, 8)}: ${f.error}`).join("; ");
      } else {
        result.status = "ok";
      }
      step.say(
        result.status === "ok" ? "info" : "error",
        `copy to ${to.name}: ${outcome.snapshots.filter((s) => !s.alreadyThere).length} snapshots, ${outcome.blobsCopied} blobs sent` +
          (outcome.adoptedPacks > 0 ? `, ${outcome.adoptedPacks} packs of an interrupted copy resumed` : "") +
          (result.error !== undefined ? `; failed: ${result.error}` : ""),
      );
    } catch (err) {
      result.status = "failed";
      result.error = this.clean(err);
      step.say("error", `copy to ${to.name} failed: ${result.error}`);
    }
    step.finish(result.status === "ok" ? "ok" : "failed", {
      ...(result.snapshots.at(-1) ? { snapshot: result.snapshots.at(-1)!.target } : {}),
      ...(result.error !== undefined ? { error: result.error } : {}),
      stats: {
        blobs: result.blobsCopied,
        bytes: result.bytesCopied,
        adoptedPacks: result.adoptedPacks,
        verifiedPacks: result.verifiedPacks,
      },
    });
    return result;
  }

  /**
   * Extends the locks on an immutable target to its period from now (the target's `immutability.days`, or
   * the policy's `immutabilityDays` when longer): what `bulwark retention` does, as a step of every job.
   */
  private async locksStep(open: Repository | undefined, target: Target): Promise<LocksStep> {
    const step = this.step("locks", target.name);
    const result: LocksStep = { target: target.name, status: "failed", checked: 0, drift: 0, extended: 0 };
    const immutability = target.immutability!;
    const days = Math.max(immutability.days, this.policy.immutabilityDays ?? 0);
    let repo = open;
    let lock: RepoLock | undefined;
    try {
      repo ??= await openTargetRepository(target, this.options.access);
      // Shared: extending a lock changes no data, and prune (which takes the exclusive lock) must not run
      // between reading what the snapshots need and extending it.
      lock = await RepoLock.acquire(repo, false, this.clock);
      // The primary's index is in memory since the backup (with what it added); a copy target's is read here.
      if (open === undefined) await repo.loadIndex();
      const report = await extendRetention({ repo, clock: this.clock, mode: immutability.mode, days });
      result.checked = report.checked;
      result.drift = report.drift.length;
      result.extended = report.extended;
      result.requiredUntil = report.requiredUntil;
      if (report.errors.length > 0) {
        result.error = `${report.errors.length} objects could not be locked: ${report.errors
          .slice(0, 3)
          .map((e) => `${e.file}: ${e.error}`)
          .join("; ")}`;
        step.say("error", `locks on ${target.name}: ${this.clean(result.error)}`);
      } else {
        result.status = "ok";
        step.say(
          "info",
          `locks on ${target.name}: ${report.checked} objects locked until at least ${report.requiredUntil}` +
            (report.extended > 0 ? `, ${report.extended} extended` : ""),
        );
      }
    } catch (err) {
      result.error = this.clean(err);
      step.say("error", `locks on ${target.name} failed: ${result.error}`);
    } finally {
      await lock?.release().catch(() => undefined);
      if (open === undefined) await repo?.backend.close().catch(() => undefined);
    }
    step.finish(result.status === "ok" ? "ok" : "failed", {
      ...(result.error !== undefined ? { error: result.error } : {}),
      stats: { checked: result.checked, drift: result.drift, extended: result.extended },
    });
    return result;
  }

  /** Applies the policy's retention for this target to the dataset's snapshots there. */
  private async forgetStep(open: Repository | undefined, target: Target): Promise<ForgetStep> {
    const step = this.step("forget", target.name);
    const result: ForgetStep = { target: target.name, status: "failed", removed: [], kept: 0, locked: [] };
    const rules = this.policy.keepRules[target.name]!;
    let repo = open;
    let lock: RepoLock | undefined;
    try {
      repo ??= await openTargetRepository(target, this.options.access);
      lock = await RepoLock.acquire(repo, true, this.clock);
      // The same operation as `bulwark forget`: a rule that keeps none of a group refuses, removing nothing.
      const outcome = await forget({
        repo,
        clock: this.clock,
        events: step.events,
        policy: rules,
        filter: (s) => s.dataset === this.dataset.name,
        groupBy: ["host", "paths"],
      });
      result.kept = outcome.kept.length;
      result.removed = outcome.removed;
      result.locked = outcome.locked.map((l) => l.id);
      result.status = "ok";
      step.say(
        "info",
        `retention on ${target.name}: ${result.removed.length} snapshots forgotten, ${result.kept} kept` +
          (result.locked.length > 0 ? `, ${result.locked.length} still under retention lock` : ""),
      );
    } catch (err) {
      result.error = this.clean(err);
      step.say("error", `retention on ${target.name} failed: ${result.error}`);
    } finally {
      await lock?.release().catch(() => undefined);
      if (open === undefined) await repo?.backend.close().catch(() => undefined);
    }
    step.finish(result.status === "ok" ? "ok" : "failed", {
      ...(result.error !== undefined ? { error: result.error } : {}),
      stats: { removed: result.removed.length, kept: result.kept, locked: result.locked.length },
    });
    return result;
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
