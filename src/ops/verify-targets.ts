/**
 * Verifying several copies (docs/design.md §17a, §17c): the one implementation behind `bulwark verify` and
 * the daemon's scheduled verification. `verifyTargets` chooses the targets of a config (those named, else
 * the targets of a dataset's jobs, else every job's) and takes what the command line leaves open from the
 * policies of each target's jobs; `verifySubjects` then, for each repository in turn:
 *  1. opens it (the caller says how: a configured target, or a bare location) and takes a shared lock;
 *  2. verifies its structure and data with coverage (`verifyRepository`, ./verify.ts);
 *  3. records the verification in the catalog with its evidence details, once per dataset it holds copies
 *     of (the cross-copy findings among the targets verified so far included);
 * and finally compares the copies of each snapshot across the targets (cross-copy consistency).
 *
 * A target that cannot be verified (unreachable, wrong password) is a report with an error, secrets
 * scrubbed, and the next target is verified all the same. Progress and messages go to the event stream,
 * each with the target as context; the reports are also handed to `onTarget` as each target ends, so a
 * caller can show them while the next one runs.
 */
import { redact } from "../backend/registry.js";
import type { Catalog } from "../catalog/catalog.js";
import type { Budget } from "../config/budget.js";
import type { BulwarkConfig, Target } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import { BulwarkError, errorMessage } from "../core/errors.js";
import { emitMessage, withContext, type EventSink } from "../core/events.js";
import { formatBytes, formatCount, formatDuration } from "../core/format.js";
import { RepoLock } from "../repository/lock.js";
import type { Repository } from "../repository/repository.js";
import { WorkerPool } from "../repository/worker-pool.js";
import { loadAllSnapshots } from "../snapshot/snapshot.js";
import type { Finding } from "../verify/checker.js";
import { verificationDetails } from "./evidence.js";
import { openTargetRepository, scrub, type TargetAccess } from "./targets.js";
import {
  crossCopyFindings,
  verifyRepository,
  type CopiedSnapshot,
  type CoverageStore,
  type CrossCopyFinding,
  type VerifyOutcome,
} from "./verify.js";

/** Where coverage and verifications are remembered: the catalog (a type-only dependency). */
export type VerificationStore = CoverageStore & Pick<Catalog, "recordVerification">;

/** How one repository is verified. */
export interface VerifyOptions {
  budget?: Budget | undefined;
  fullEveryMs?: number | undefined;
  newOnly: boolean;
  newFirst: boolean;
}

/** One target's verification: its outcome, or why it could not be verified. */
export interface TargetReport extends Partial<VerifyOutcome> {
  target: string;
  /** Why the target could not be verified (unreachable, wrong password), secrets scrubbed. */
  error?: string;
}

export interface VerifyTargetsResult {
  /** No target has errors or failed, and the copies agree. */
  ok: boolean;
  targets: TargetReport[];
  crossCopy: CrossCopyFinding[];
}

/** A repository to verify, however it is reached. */
export interface VerifySubject {
  /** The name shown and recorded: a target's name, or a bare location already redacted. */
  name: string;
  /** Where it is; recorded redacted. */
  location: string;
  /** Opens it; the operation closes `repo.backend`. */
  open: () => Promise<Repository>;
  /** The datasets it holds copies of: one record for each, or one without a dataset when none. */
  datasets: readonly string[];
  options: VerifyOptions;
}

export interface VerifySubjectsInput {
  subjects: readonly VerifySubject[];
  clock: Clock;
  events?: EventSink;
  /** Coverage memory and the evidence; without it every due pack is read and nothing is recorded. */
  store?: VerificationStore;
  /** Secrets read while opening (passwords, credentials): scrubbed from every error reported. */
  secrets?: readonly string[];
  /** Each report as soon as it is made (a target that fails after its outcome was reported gets a second). */
  onTarget?: (report: TargetReport) => void;
}

export interface VerifyTargetsInput {
  config: BulwarkConfig;
  access: TargetAccess;
  clock: Clock;
  events?: EventSink;
  store?: VerificationStore;
  /** Only these targets of the config (all must exist). */
  targets?: readonly string[];
  /** Only the targets of this dataset's jobs (when no target is named). */
  dataset?: string;
  /** These win over the policies of the targets' jobs. */
  budget?: Budget;
  fullEveryMs?: number;
  /** Only packs never read before (and damaged ones). */
  newOnly?: boolean;
  onTarget?: (report: TargetReport) => void;
}

/** Verifies the targets of a config (see the module header); USAGE for an unknown target or dataset. */
export async function verifyTargets(input: VerifyTargetsInput): Promise<VerifyTargetsResult> {
  const { config } = input;
  const secrets = input.access.secrets ?? [];
  const access: TargetAccess = { ...input.access, secrets };
  const subjects = targetsToVerify(config, {
    targets: input.targets ?? [],
    ...(input.dataset !== undefined ? { dataset: input.dataset } : {}),
  }).map((target): VerifySubject => {
    // The options not given by the caller come from the policies of the target's jobs.
    const policy = policyVerification(config, target.name);
    return {
      name: target.name,
      location: target.location,
      open: () => openTargetRepository(target, access, { readOnly: true }),
      datasets: datasetsOn(config, target.name),
      options: {
        budget: input.budget ?? policy.budget,
        fullEveryMs: input.fullEveryMs ?? policy.fullEveryMs,
        newOnly: input.newOnly === true,
        newFirst: policy.newFirst,
      },
    };
  });
  return verifySubjects({
    subjects,
    clock: input.clock,
    secrets,
    ...(input.events !== undefined ? { events: input.events } : {}),
    ...(input.store !== undefined ? { store: input.store } : {}),
    ...(input.onTarget !== undefined ? { onTarget: input.onTarget } : {}),
  });
}

/** Verifies each subject in turn, records the evidence, then compares the copies (see the module header). */
export async function verifySubjects(input: VerifySubjectsInput): Promise<VerifyTargetsResult> {
  const { clock, store } = input;
  const reports: TargetReport[] = [];
  const report = (r: TargetReport): void => {
    reports.push(r);
    input.onTarget?.(r);
  };
  const snapshotsByTarget = new Map<string, CopiedSnapshot[]>();
  for (const subject of input.subjects) {
    const label = subject.name;
    const events = withContext(input.events, { target: label });
    let repo: Repository | undefined;
    try {
      repo = await subject.open();
      const startedAt = clock.now();
      const outcome = await verifyOpened(repo, label, clock, events, store, subject.options);
      for (const f of outcome.findings) {
        emitMessage(events, clock.now(), f.severity, findingLines(label, f)[0]!);
      }
      emitMessage(events, clock.now(), "info", verifySummary(label, outcome));
      report(outcome);
      snapshotsByTarget.set(
        label,
        (await loadAllSnapshots(repo, () => undefined)).map((x) => ({
          id: x.id,
          original: x.original ?? x.id,
          tree: x.tree,
        })),
      );
      const time = clock.now();
      // The evidence (design §17c); cross-copy findings involving the targets verified so far.
      const details = verificationDetails(outcome, {
        target: label,
        location: redact(subject.location),
        repository: repo.id,
        startedAt,
        budget: subject.options.budget,
        fullEveryMs: subject.options.fullEveryMs,
        newOnly: subject.options.newOnly,
        newFirst: subject.options.newFirst,
        crossCopy: crossCopyFindings(snapshotsByTarget).filter((f) => f.targets.includes(label)),
      });
      for (const dataset of subject.datasets.length > 0 ? subject.datasets : [undefined]) {
        store?.recordVerification({
          target: label,
          ...(dataset !== undefined ? { dataset } : {}),
          time,
          kind: "verify",
          errors: outcome.errors,
          description: `verify of ${label}: ${formatCount(outcome.packsRead)} packs read, coverage ${formatCount(outcome.coverage.covered)} of ${formatCount(outcome.coverage.packs)} packs`,
          details: details as unknown as Record<string, unknown>,
        });
      }
    } catch (err) {
      const error = scrub(errorMessage(err), input.secrets ?? []);
      emitMessage(events, clock.now(), "error", `${label}: ${error}`);
      report({ target: label, error });
    } finally {
      await repo?.backend.close().catch(() => undefined);
    }
  }
  // The copies of one snapshot on several targets must be the same snapshot.
  const crossCopy = crossCopyFindings(snapshotsByTarget);
  for (const f of crossCopy) emitMessage(input.events, clock.now(), "error", f.message);
  return {
    ok: reports.every((r) => r.ok === true) && crossCopy.length === 0,
    targets: reports,
    crossCopy,
  };
}

async function verifyOpened(
  repo: Repository,
  label: string,
  clock: Clock,
  events: EventSink,
  coverage: CoverageStore | undefined,
  options: VerifyOptions,
): Promise<TargetReport & VerifyOutcome> {
  const lock = await RepoLock.acquire(repo, false, clock);
  const pool = new WorkerPool(repo);
  try {
    const r = await verifyRepository({
      repo,
      pool,
      clock,
      events,
      target: label,
      ...(coverage ? { coverage } : {}),
      ...(options.budget ? { budget: options.budget } : {}),
      ...(options.fullEveryMs !== undefined ? { fullEveryMs: options.fullEveryMs } : {}),
      ...(options.newOnly ? { newOnly: true } : {}),
      ...(options.newFirst ? {} : { newFirst: false }),
    });
    return { target: label, ...r };
  } finally {
    await pool.close();
    await lock.release().catch(() => undefined);
  }
}

/** How many files of a finding are listed; the rest are counted. */
const FILES_SHOWN = 50;

/** The lines that show a finding of a target: what is wrong, then the snapshots and files it affects. */
export function findingLines(label: string, f: Finding): string[] {
  const lines = [`${label}: ${f.severity}: ${f.message}`];
  if (f.snapshots?.length)
    lines.push(`  affects snapshots: ${f.snapshots.map((s) => s.slice(0, 8)).join(" ")}`);
  for (const file of (f.files ?? []).slice(0, FILES_SHOWN)) lines.push(`  affects ${file}`);
  if ((f.files?.length ?? 0) > FILES_SHOWN) lines.push(`  ... and ${f.files!.length - FILES_SHOWN} more`);
  return lines;
}

/** One line on what a target's verification read, skipped and covered. */
export function verifySummary(label: string, r: VerifyOutcome): string {
  const c = r.coverage;
  return (
    `${label}: read ${formatCount(r.packsRead)} packs (${formatBytes(r.bytesRead)}) in ${formatDuration(r.durationMs)}` +
    (r.plan.deferred > 0 ? `, ${formatCount(r.plan.deferred)} due packs left for the next run` : "") +
    (r.plan.fresh > 0 ? `, ${formatCount(r.plan.fresh)} fresh packs skipped` : "") +
    (r.digests.packs > 0
      ? `; checked ${formatCount(r.digests.packs)} more by the target's digest (${formatBytes(r.digests.bytes)} not downloaded)`
      : "") +
    `; coverage ${formatCount(c.covered)} of ${formatCount(c.packs)} packs (${(c.ratio * 100).toFixed(1)} %)` +
    (c.oldestRead ? `, oldest read ${c.oldestRead.toISOString()}` : "") +
    (r.errors > 0 ? `; ${r.errors} error${r.errors === 1 ? "" : "s"}` : "")
  );
}

/** The config targets to verify: those named, else those of the dataset's jobs, else every job's. */
export function targetsToVerify(
  config: BulwarkConfig,
  select: { targets: readonly string[]; dataset?: string },
): Target[] {
  const known = Object.keys(config.targets);
  for (const name of select.targets) {
    if (config.targets[name] === undefined) {
      throw new BulwarkError("USAGE", `unknown target ${JSON.stringify(name)}`, {
        hint: known.length > 0 ? `the targets are ${known.join(", ")}` : "the config declares no target",
      });
    }
  }
  if (select.dataset !== undefined && config.datasets[select.dataset] === undefined) {
    const datasets = Object.keys(config.datasets);
    throw new BulwarkError("USAGE", `unknown dataset ${JSON.stringify(select.dataset)}`, {
      hint:
        datasets.length > 0 ? `the datasets are ${datasets.join(", ")}` : "the config declares no dataset",
    });
  }
  const ofJobs: string[] = [];
  for (const job of Object.values(config.jobs)) {
    if (select.dataset !== undefined && job.dataset !== select.dataset) continue;
    for (const t of [job.primary, ...job.copies]) if (!ofJobs.includes(t)) ofJobs.push(t);
  }
  const names = select.targets.length > 0 ? select.targets : ofJobs;
  if (names.length === 0) {
    throw new BulwarkError("USAGE", "no target to verify", {
      hint: "name one with --target, or add a job that uses the targets",
    });
  }
  return names.map((n) => config.targets[n]!);
}

/**
 * What the policies of a target's jobs ask of its verification: the shortest period, the smallest budget of
 * the same kind as the first one given, and new packs first unless every policy says otherwise.
 */
export function policyVerification(
  config: BulwarkConfig,
  target: string,
): { fullEveryMs?: number; budget?: Budget; newFirst: boolean } {
  let fullEveryMs: number | undefined;
  let budget: Budget | undefined;
  let newFirst: boolean | undefined;
  for (const job of Object.values(config.jobs)) {
    if (job.primary !== target && !job.copies.includes(target)) continue;
    const v = config.policies[job.policy]?.verification;
    if (v === undefined) continue;
    if (v.fullEveryMs !== undefined) fullEveryMs = Math.min(fullEveryMs ?? Infinity, v.fullEveryMs);
    if (v.budget !== undefined) {
      if (budget === undefined) budget = v.budget;
      else if ("bytes" in budget && "bytes" in v.budget)
        budget = { bytes: Math.min(budget.bytes, v.budget.bytes) };
      else if ("ms" in budget && "ms" in v.budget) budget = { ms: Math.min(budget.ms, v.budget.ms) };
    }
    newFirst = (newFirst ?? false) || v.newPacks;
  }
  return {
    ...(fullEveryMs !== undefined ? { fullEveryMs } : {}),
    ...(budget !== undefined ? { budget } : {}),
    newFirst: newFirst ?? true,
  };
}

/** The datasets whose jobs keep copies on a target (a verification of it is evidence for each). */
export function datasetsOn(config: BulwarkConfig, target: string): string[] {
  const out: string[] = [];
  for (const job of Object.values(config.jobs)) {
    if ((job.primary === target || job.copies.includes(target)) && !out.includes(job.dataset)) {
      out.push(job.dataset);
    }
  }
  return out;
}
