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
 *  7. Recovery validation and DR are "unknown" until their evidence exists.
 * A row the rule does not require is still evaluated (it is useful to see) but does not decide compliance.
 */

import { formatAge } from "../config/duration.js";
import type { BulwarkConfig, Job, Policy, Target } from "../config/types.js";

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
    /** For retention locks: until when the snapshot's files are retained. */
    retainUntil?: Date;
    mode?: string;
    /** Why it could not be read back. */
    error?: string;
  };
}

export interface VerificationEvidence {
  time: Date;
  errors: number;
  /** What was verified, e.g. "check --read-data on nas", "restore drill of 1a2b3c4d". */
  description: string;
}

export interface DrEvidence {
  time: Date;
  status: "pass" | "fail";
  description: string;
}

export interface DatasetEvidence {
  /** Keyed by target name. */
  copies: Record<string, CopyEvidence>;
  verification?: VerificationEvidence;
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

const WORDS = ["No", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten"];
const word = (n: number): string => WORDS[n] ?? String(n);
const plural = (n: number, one: string, many: string): string => (n === 1 ? one : many);
const shortId = (id: string): string => id.slice(0, 8);
const iso = (d: Date): string => d.toISOString().replace(/\.000Z$/, "Z");

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

function describeTarget(t: Target): string {
  const l = t.labels;
  return `${l.medium}, site ${l.site}${l.offsite ? " (offsite)" : ""}, failure domain ${l.failureDomain}`;
}

export function evaluateDataset(
  config: BulwarkConfig,
  datasetName: string,
  policy: Policy,
  jobs: Job[],
  evidence: DatasetEvidence,
  now: Date,
): DatasetPosture {
  const dataset = config.datasets[datasetName];
  const jobOf = new Map<string, string>();
  for (const j of jobs) {
    for (const t of [j.primary, ...j.copies]) if (!jobOf.has(t)) jobOf.set(t, j.name);
  }
  const targets = [...jobOf.keys()]
    .map((name) => config.targets[name])
    .filter((t): t is Target => t !== undefined);
  const runJob = (target: string): string => `bulwark run ${jobOf.get(target) ?? ""}`.trimEnd();

  // 2. which copies count
  const copies: CopyAssessment[] = targets.map((t) =>
    assessCopy(t, evidence.copies[t.name], policy, now, runJob),
  );
  const counted = copies.filter((c) => c.counted).map((c) => config.targets[c.target] as Target);

  // 3. one copy per failure domain
  const warnings: string[] = [];
  const byDomain = new Map<string, Target[]>();
  for (const t of counted) {
    const list = byDomain.get(t.labels.failureDomain) ?? [];
    list.push(t);
    byDomain.set(t.labels.failureDomain, list);
  }
  for (const [domain, list] of byDomain) {
    if (list.length > 1) {
      warnings.push(
        `targets ${list.map((t) => t.name).join(", ")} share failure domain ${domain}: their copies count once`,
      );
    }
  }
  // The targets after the first in each shared failure domain: the ones to move.
  const shared = [...byDomain.values()].flatMap((list) => list.slice(1).map((t) => t.name));
  const snapshotLine = (t: Target): string => {
    const c = copies.find((x) => x.target === t.name);
    const s = c?.snapshot;
    return s
      ? `${t.name}: snapshot ${shortId(s.id)} at ${iso(s.time)} (${formatAge(c?.ageMs ?? 0)} old; ${describeTarget(t)})`
      : t.name;
  };
  const notCounted = copies.filter((c) => !c.counted);
  const failureReasons = (): string[] => [
    ...notCounted.map((c) => c.reason ?? `${c.target} does not count`),
    ...warnings,
  ];
  const failureRemedies = (fallback: string): string => {
    const r = notCounted.map((c) => c.remedy).filter((x): x is string => x !== undefined);
    if (r.length > 0) return [...new Set(r)].join("; ");
    return fallback;
  };
  const jobNames = jobs.map((j) => j.name).join(", ");
  const counts = policy.counts;
  const production = policy.productionCounts ? 1 : 0;
  const rows: PostureRow[] = [];

  // copies
  {
    const have = byDomain.size + production;
    const need = counts.copies;
    const ev = [
      ...(production ? ["production data (counts as one copy)"] : []),
      ...[...byDomain.values()].map((list) => list.map(snapshotLine).join(" + ")),
    ];
    rows.push(
      row("copies", `${word(need)} copies of data exist`, need > 0, have >= need, ev, () => ({
        reason: `${have} of ${need} ${plural(need, "copy", "copies")} count: ${failureReasons().join("; ") || "too few copy targets"}`,
        remedy: failureRemedies(
          shared.length > 0
            ? `move ${shared.join(", ")} to a failure domain of its own (targets.<name>.labels.failureDomain) or add a copy target in another failure domain to job ${jobNames}`
            : `add copy targets in other failure domains to job ${jobNames} (jobs.<name>.copies)`,
        ),
      })),
    );
  }

  // media
  {
    const media = [...new Set(counted.map((t) => t.labels.medium))];
    const need = Math.max(counts.media, 2);
    rows.push(
      row(
        "media",
        `${word(need)} different storage media used`,
        counts.media >= 2,
        media.length >= need,
        media.map(
          (m) =>
            `${m}: ${counted
              .filter((t) => t.labels.medium === m)
              .map((t) => t.name)
              .join(", ")}`,
        ),
        () => ({
          reason: `${media.length} storage ${plural(media.length, "medium", "media")} among the counted copies (${media.join(", ") || "none"}), ${need} needed${notCounted.length ? `; not counted: ${notCounted.map((c) => c.target).join(", ")}` : ""}`,
          remedy: failureRemedies(
            `add a copy target on another medium (e.g. object storage or a NAS) to job ${jobNames}`,
          ),
        }),
      ),
    );
  }

  // offsite
  {
    const offsite = [...byDomain.values()].filter((list) => list.some((t) => t.labels.offsite));
    const need = Math.max(counts.offsite, 1);
    rows.push(
      row(
        "offsite",
        need === 1 ? "One copy stored offsite" : `${word(need)} copies stored offsite`,
        counts.offsite >= 1,
        offsite.length >= need,
        offsite.map((list) =>
          list
            .filter((t) => t.labels.offsite)
            .map(snapshotLine)
            .join(" + "),
        ),
        () => {
          const declared = targets.filter((t) => t.labels.offsite).map((t) => t.name);
          const missed = copies.filter((c) => !c.counted && declared.includes(c.target));
          return {
            reason:
              declared.length === 0
                ? "no target of this dataset is offsite"
                : `${offsite.length} of ${need} offsite ${plural(need, "copy counts", "copies count")}: ${missed.map((c) => c.reason).join("; ") || "too few offsite targets"}`,
            remedy:
              declared.length === 0
                ? `add a target at another site (labels.offsite: true) to the copies of job ${jobNames}`
                : failureRemedies(`add another offsite target to job ${jobNames}`),
          };
        },
      ),
    );
  }

  // immutable or air-gapped
  {
    const assessed = counted.map((t) => ({ t, ...assessLock(t, evidence.copies[t.name], policy, now) }));
    const locked = assessed.filter((a) => a.ok);
    const domains = new Set(locked.map((a) => a.t.labels.failureDomain));
    const need = Math.max(counts.immutableOrIsolated, 1);
    const isolatedTargets = targets.filter((t) => t.labels.isolation !== "none");
    rows.push(
      row(
        "immutable",
        need === 1
          ? "Immutable or air-gapped copy retained"
          : `${word(need)} immutable or air-gapped copies retained`,
        counts.immutableOrIsolated >= 1,
        domains.size >= need,
        locked.map((a) => `${snapshotLine(a.t)}; ${a.detail}`),
        () => {
          const lockProblems = assessed.filter((a) => !a.ok && a.t.labels.isolation !== "none");
          const missed = notCounted.filter((c) => isolatedTargets.some((t) => t.name === c.target));
          const reasons = [...lockProblems.map((a) => a.detail), ...missed.map((c) => c.reason ?? "")];
          return {
            reason:
              isolatedTargets.length === 0
                ? "no target of this dataset is immutable, append-only or offline"
                : reasons.join("; ") || "too few immutable or isolated copies",
            remedy:
              isolatedTargets.length === 0
                ? `add an immutable target (S3 Object Lock, labels.isolation: immutable) to the copies of job ${jobNames}`
                : [
                    ...lockProblems.map(
                      (a) =>
                        `restore the lock on ${a.t.name} (check its Object Lock or vault configuration), then ${runJob(a.t.name)} to copy and lock a new snapshot`,
                    ),
                    ...missed.map((c) => c.remedy ?? ""),
                  ]
                    .filter((x) => x !== "")
                    .join("; ") || `add another immutable target to job ${jobNames}`,
          };
        },
      ),
    );
  }

  // sites
  if (counts.sites > 0) {
    const sites = new Set(counted.map((t) => t.labels.site));
    if (production && dataset?.site !== undefined) sites.add(dataset.site);
    rows.push(
      row(
        "sites",
        `${word(counts.sites)} sites used`,
        true,
        sites.size >= counts.sites,
        [...sites].map((s) => `site ${s}`),
        () => ({
          reason: `copies at ${sites.size} of ${counts.sites} sites (${[...sites].join(", ") || "none"})`,
          remedy: failureRemedies(`add copy targets at other sites to job ${jobNames}`),
        }),
      ),
    );
  }

  // isolated networks
  if (counts.isolatedNetworks > 0) {
    const networks = new Set(counted.map((t) => t.labels.network));
    if (production && dataset?.network !== undefined) networks.add(dataset.network);
    rows.push(
      row(
        "networks",
        `${word(counts.isolatedNetworks)} isolated networks used`,
        true,
        networks.size >= counts.isolatedNetworks,
        [...networks].map((n) => `network ${n}`),
        () => ({
          reason: `copies on ${networks.size} of ${counts.isolatedNetworks} isolated networks (${[...networks].join(", ") || "none"})`,
          remedy: failureRemedies(
            `add a copy target on an isolated network (labels.network) to job ${jobNames}`,
          ),
        }),
      ),
    );
  }

  rows.push(validationRow(evidence.verification, policy, now));
  rows.push(drRow(evidence.dr, policy));

  const status = worst(rows.filter((r) => r.required).map((r) => r.status));
  return {
    dataset: datasetName,
    policy: policy.name,
    rule: policy.preset ?? "custom",
    rpo: policy.rpo,
    jobs: jobs.map((j) => j.name),
    status,
    rows,
    copies,
    warnings,
  };
}

function row(
  id: RequirementId,
  requirement: string,
  required: boolean,
  ok: boolean,
  evidence: string[],
  failure: () => { reason: string; remedy: string },
): PostureRow {
  if (ok) return { id, requirement, required, status: "pass", evidence };
  return { id, requirement, required, status: "fail", evidence, ...failure() };
}

function assessCopy(
  target: Target,
  ev: CopyEvidence | undefined,
  policy: Policy,
  now: Date,
  runJob: (target: string) => string,
): CopyAssessment {
  const name = target.name;
  if (ev === undefined) {
    return {
      target: name,
      counted: false,
      reason: `no evidence was collected from target ${name}`,
      remedy: `run bulwark posture where target ${name} can be read`,
    };
  }
  if (!ev.reachable) {
    return {
      target: name,
      counted: false,
      ...(ev.snapshot ? { snapshot: ev.snapshot } : {}),
      reason: `target ${name} is unreachable${ev.error ? ` (${ev.error})` : ""}`,
      remedy: `bring target ${name} (${target.location}) back online`,
    };
  }
  if (ev.snapshot === undefined) {
    return {
      target: name,
      counted: false,
      reason: `target ${name} holds no snapshot of the dataset`,
      remedy: runJob(name),
    };
  }
  const ageMs = now.getTime() - ev.snapshot.time.getTime();
  if (ageMs > policy.rpoMs) {
    return {
      target: name,
      counted: false,
      snapshot: ev.snapshot,
      ageMs,
      reason: `the newest snapshot on ${name} (${shortId(ev.snapshot.id)}, ${iso(ev.snapshot.time)}) is ${formatAge(ageMs)} old, older than the RPO ${policy.rpo}`,
      remedy: `${runJob(name)} and check why its schedule did not copy to ${name}`,
    };
  }
  return { target: name, counted: true, snapshot: ev.snapshot, ageMs };
}

function assessLock(
  target: Target,
  ev: CopyEvidence | undefined,
  policy: Policy,
  now: Date,
): { ok: boolean; detail: string } {
  const iso8601 = iso;
  switch (target.labels.isolation) {
    case "none":
      return { ok: false, detail: `${target.name} is not isolated` };
    case "offline":
      return { ok: true, detail: "declared offline (air-gapped), which cannot be confirmed from here" };
    case "append-only":
    case "immutable": {
      const lock = ev?.lock;
      const snap = ev?.snapshot;
      const what = `snapshot ${snap ? shortId(snap.id) : "?"} on ${target.name}`;
      if (lock === undefined || !lock.readBack) {
        return {
          ok: false,
          detail: `no lock could be read back for ${what}${lock?.error ? ` (${lock.error})` : ""}, though the target is labelled ${target.labels.isolation}`,
        };
      }
      if (lock.kind === "append-only") {
        return { ok: true, detail: "append-only, read back from the target" };
      }
      if (lock.retainUntil === undefined || lock.retainUntil.getTime() <= now.getTime()) {
        return {
          ok: false,
          detail: `the retention of ${what} ${lock.retainUntil ? `ended at ${iso8601(lock.retainUntil)}` : "is not set"}: the lock was dropped`,
        };
      }
      if (policy.immutabilityDays !== undefined && snap !== undefined) {
        const wanted = snap.time.getTime() + policy.immutabilityDays * 86_400_000;
        // A minute of slack: retention is set when the copy lands, a little after the snapshot time.
        if (lock.retainUntil.getTime() < wanted - 60_000) {
          return {
            ok: false,
            detail: `${what} is retained until ${iso8601(lock.retainUntil)}, shorter than the policy's ${policy.immutabilityDays} days`,
          };
        }
      }
      return {
        ok: true,
        detail: `retained${lock.mode ? ` (${lock.mode})` : ""} until ${iso8601(lock.retainUntil)}, read back from the target`,
      };
    }
  }
}

function validationRow(v: VerificationEvidence | undefined, policy: Policy, now: Date): PostureRow {
  const base = {
    id: "validation" as const,
    requirement: "Automated recovery validation in place (0 errors)",
    required: policy.counts.zeroErrors,
  };
  if (v === undefined) {
    return {
      ...base,
      status: "unknown",
      evidence: [],
      reason: "no verification or restore drill has been recorded for this dataset",
      remedy: "schedule verification (policies.<name>.verification.cadence) and run it",
    };
  }
  const line = `${v.description} at ${iso(v.time)}: ${v.errors} ${plural(v.errors, "error", "errors")}`;
  if (v.errors > 0) {
    return {
      ...base,
      status: "fail",
      evidence: [line],
      reason: `the last verification found ${v.errors} ${plural(v.errors, "error", "errors")}`,
      remedy: "run bulwark check to name the damaged snapshots and repair them from a healthy copy",
    };
  }
  const age = now.getTime() - v.time.getTime();
  if (policy.verification !== undefined && age > policy.verification.cadenceMs) {
    return {
      ...base,
      status: "fail",
      evidence: [line],
      reason: `the last verification is ${formatAge(age)} old; the cadence is ${policy.verification.cadence}`,
      remedy: "check that scheduled verification runs",
    };
  }
  return { ...base, status: "pass", evidence: [line] };
}

function drRow(d: DrEvidence | undefined, policy: Policy): PostureRow {
  const base = {
    id: "dr" as const,
    requirement: "DR orchestration supports full service recovery",
    required: policy.counts.disasterRecovery,
  };
  if (d === undefined) {
    return {
      ...base,
      status: "unknown",
      evidence: [],
      reason: "no DR drill has been recorded for this dataset",
      remedy: "define a runbook for the service and run a drill",
    };
  }
  const line = `${d.description} at ${iso(d.time)}: ${d.status}`;
  return d.status === "pass"
    ? { ...base, status: "pass", evidence: [line] }
    : {
        ...base,
        status: "fail",
        evidence: [line],
        reason: "the last DR drill failed",
        remedy: "read the drill report and fix the runbook",
      };
}
