/**
 * Posture: every dataset evaluated against its rule, from live evidence, as data (rows with a status, the
 * evidence behind it and, when it fails, the reason and the remedy). Pure: the caller collects the evidence
 * from the targets (and later the catalog) and passes the time; nothing here does I/O or reads the clock.
 *
 * Algorithm, per dataset and policy (a dataset in jobs with two policies is evaluated once per policy):
 *  1. The targets are the primary and copy targets of the dataset's jobs under that policy, in job order.
 *  2. A target holds a copy that counts only if it was reachable, holds a snapshot of the dataset, and that
 *     snapshot is within the policy's RPO. Every other target is listed with the reason it does not count.
 *  3. Counted copies on targets sharing a failure domain count once (two disks in one rack are one copy),
 *     with a warning.
 *  4. Production counts as one copy when the policy says so (the default), and adds the dataset's site and
 *     network when the dataset declares them.
 *  5. Media, offsite copies, sites and networks are counted over the counted copies; offsite copies by
 *     failure domain.
 *  6. An immutable or append-only copy counts only when its lock was read back from the target and covers
 *     the snapshot now (and for the policy's immutability period); an offline (air-gapped) copy counts on its
 *     label, which the evidence cannot confirm, and says so.
 *  7. Recovery validation passes only when every counted copy was verified within the cadence with no
 *     error, every pack of it read soundly within `fullEvery`, and the dataset's latest drill passed within
 *     `drills.every`; it is "unknown" while no verification or drill exists at all. DR is "unknown" until
 *     its evidence exists.
 * A row the rule does not require is still evaluated (it is useful to see) but does not decide compliance.
 *
 * Steps 1-4 build the context shared by every row (./posture-context.ts); steps 5-7 are one evaluator per
 * requirement row, listed in ROW_EVALUATORS (./posture-rows.ts). This module holds the types and maps the
 * evaluators over each dataset.
 */

import type { BulwarkConfig, Job, Policy } from "../config/types.js";
import { buildPostureContext } from "./posture-context.js";
import { ROW_EVALUATORS } from "./posture-rows.js";

export interface SnapshotRef {
  id: string;
  time: Date;
}

/** What was read from one target about one dataset. */
export interface CopyEvidence {
  reachable: boolean;
  /** Why the target could not be reached. */
  error?: string;
  /** The newest snapshot of the dataset on the target, if any. */
  snapshot?: SnapshotRef;
  /** The lock on that snapshot as read back from the target (not as configured). */
  lock?: {
    kind: "retention" | "append-only";
    readBack: boolean;
    /**
     * For retention locks: until when everything a restore of the snapshot needs is retained (the earliest
     * end among the config, keys, index files, the snapshot file and its packs).
     */
    retainUntil?: Date;
    /** The object whose retention ends first ("index 1a2b3c4d5e6f", "the config"). */
    earliest?: string;
    /** How many objects the horizon was taken over. */
    objects?: number;
    mode?: string;
    /** Why it could not be read back. */
    error?: string;
    /** "tampering detected: ..." when versions were put over the copy's files (docs/design.md §21). */
    tampering?: string;
  };
}

export interface VerificationEvidence {
  time: Date;
  errors: number;
  /** What was verified, e.g. "verify of nas: 12 packs read, coverage 40 of 40 packs". */
  description: string;
}

/** How much of a copy's data verification has read (the catalog's pack reads against its index). */
export interface CoverageEvidence {
  packs: number;
  /** Packs whose last read was sound (and within `fullEvery` when the policy sets one). */
  covered: number;
  /** Packs whose last read found damage, not repaired since. */
  damaged: number;
  /** The oldest sound read, once every pack has been read. */
  oldestRead?: Date;
  /** The period the coverage was counted in (the shortest `fullEvery` of the dataset's policies). */
  fullEvery?: string;
}

/** The catalog's evidence about one copy's verification. */
export interface CopyValidationEvidence {
  /** Its latest verification. */
  verification?: VerificationEvidence;
  /** Absent when the copy could not be opened or there is no catalog. */
  coverage?: CoverageEvidence;
  /** Why the coverage could not be counted. */
  coverageError?: string;
}

export interface DrillEvidence {
  time: Date;
  status: "pass" | "fail";
  /** The copy drilled. */
  target: string;
  snapshot: string;
  description: string;
  /** Why it failed. */
  findings: string[];
  /** The restore's duration (an RTO data point) and size, and the snapshot's age (RPO). */
  restoreMs?: number;
  bytes?: number;
  rpoMs?: number;
}

export interface ValidationEvidence {
  /** Keyed by target name. */
  copies: Record<string, CopyValidationEvidence>;
  /** The latest drill of the dataset, from any copy. */
  drill?: DrillEvidence;
}

export interface DrEvidence {
  /** The runbook whose latest DR drill this is. */
  runbook: string;
  time: Date;
  status: "pass" | "fail";
  description: string;
  /** The runbook's definition changed since that drill: its verified state is reset. */
  definitionChanged: boolean;
}

export interface DatasetEvidence {
  /** Keyed by target name. */
  copies: Record<string, CopyEvidence>;
  /** From the catalog, when there is one. */
  validation?: ValidationEvidence;
  dr?: DrEvidence;
}

export interface PostureEvidence {
  /** Keyed by dataset name. */
  datasets: Record<string, DatasetEvidence>;
}

export type RowStatus = "pass" | "fail" | "unknown";

export type RequirementId =
  | "copies"
  | "media"
  | "offsite"
  | "immutable"
  | "sites"
  | "networks"
  | "validation"
  | "dr";

export interface PostureRow {
  id: RequirementId;
  requirement: string;
  /** Whether the rule asks for it; rows not required do not decide compliance. */
  required: boolean;
  status: RowStatus;
  evidence: string[];
  reason?: string;
  remedy?: string;
}

/** How one target's copy was judged. */
export interface CopyAssessment {
  target: string;
  counted: boolean;
  snapshot?: SnapshotRef;
  ageMs?: number;
  /** Why it does not count, and what to do. */
  reason?: string;
  remedy?: string;
}

export interface DatasetPosture {
  dataset: string;
  policy: string;
  rule: string;
  rpo: string;
  jobs: string[];
  status: RowStatus;
  rows: PostureRow[];
  copies: CopyAssessment[];
  /** Per target of the jobs: verification coverage and the latest verification (what the validation row judged). */
  validation: ({ target: string } & CopyValidationEvidence)[];
  /** The latest drill of the dataset. */
  drill?: DrillEvidence;
  warnings: string[];
}

export interface PostureReport {
  time: Date;
  status: RowStatus;
  datasets: DatasetPosture[];
}

export const POSTURE_EXIT = { COMPLIES: 0, FAILS: 20 } as const;

/**
 * 0 when every dataset complies, 20 when any fails a required row. Unknown rows (evidence that does not
 * exist yet) do not fail unless `strict` is set.
 */
export function postureExitCode(report: PostureReport, options: { strict?: boolean } = {}): number {
  const bad = report.datasets.some(
    (d) => d.status === "fail" || (options.strict === true && d.status === "unknown"),
  );
  return bad ? POSTURE_EXIT.FAILS : POSTURE_EXIT.COMPLIES;
}

/** Evaluates every dataset (or only `only`) that has a job. */
export function evaluatePosture(
  config: BulwarkConfig,
  evidence: PostureEvidence,
  now: Date,
  only?: string,
): PostureReport {
  const datasets: DatasetPosture[] = [];
  for (const dataset of Object.keys(config.datasets)) {
    if (only !== undefined && dataset !== only) continue;
    const jobs = Object.values(config.jobs).filter((j) => j.dataset === dataset);
    const policies = [...new Set(jobs.map((j) => j.policy))];
    for (const policyName of policies) {
      const policy = config.policies[policyName];
      if (policy === undefined) continue; // the config rules report unknown policies
      const policyJobs = jobs.filter((j) => j.policy === policyName);
      datasets.push(
        evaluateDataset(
          config,
          dataset,
          policy,
          policyJobs,
          evidence.datasets[dataset] ?? { copies: {} },
          now,
        ),
      );
    }
  }
  return { time: now, status: worst(datasets.map((d) => d.status)), datasets };
}

function worst(statuses: RowStatus[]): RowStatus {
  if (statuses.includes("fail")) return "fail";
  if (statuses.includes("unknown")) return "unknown";
  return "pass";
}

/**
 * One dataset under one policy: the shared context (which copies count, failure domains) computed once,
 * then every row evaluator of ./posture-rows.ts over it, in order.
 */
export function evaluateDataset(
  config: BulwarkConfig,
  datasetName: string,
  policy: Policy,
  jobs: Job[],
  evidence: DatasetEvidence,
  now: Date,
): DatasetPosture {
  const ctx = buildPostureContext(config, datasetName, policy, jobs, evidence, now);
  const rows = ROW_EVALUATORS.map((e) => e.evaluate(ctx)).filter((r): r is PostureRow => r !== undefined);
  const status = worst(rows.filter((r) => r.required).map((r) => r.status));
  return {
    dataset: datasetName,
    policy: policy.name,
    rule: policy.preset ?? "custom",
    rpo: policy.rpo,
    jobs: jobs.map((j) => j.name),
    status,
    rows,
    copies: ctx.copies,
    validation: ctx.targets.map((t) => ({ target: t.name, ...evidence.validation?.copies[t.name] })),
    ...(evidence.validation?.drill ? { drill: evidence.validation.drill } : {}),
    warnings: ctx.warnings,
  };
}
