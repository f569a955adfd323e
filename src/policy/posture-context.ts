/**
 * Posture context: what every requirement row of one dataset under one policy is judged from, computed once
 * (steps 1-4 of the algorithm in ./posture.ts) so that each row evaluator (./posture-rows.ts) only counts.
 * Pure, like the rest of posture: no I/O, and the time is passed in.
 *
 *  1. The targets are the primary and copy targets of the jobs, in job order; each remembers the first job
 *     that names it (the `bulwark run` a remedy points to).
 *  2. Each target's copy is assessed: it counts only if reachable, holding a snapshot of the dataset, within
 *     the RPO; otherwise it carries the reason and a remedy.
 *  3. The counted targets are grouped by failure domain; a domain holding several warns that they count once.
 *  4. Production counts as one copy when the policy says so.
 */

import { formatAge } from "../config/duration.js";
import type { BulwarkConfig, Dataset, Job, Policy, Target } from "../config/types.js";
import type { CopyAssessment, CopyEvidence, DatasetEvidence } from "./posture.js";

/** Functions are properties (not methods) so that rows may pass them on unbound, e.g. to `map`. */
export interface PostureContext {
  datasetName: string;
  /** Undefined only for a config the rules would reject; rows then ignore its site and network. */
  dataset: Dataset | undefined;
  policy: Policy;
  jobs: Job[];
  evidence: DatasetEvidence;
  now: Date;
  /** The targets of the jobs, in job order. */
  targets: Target[];
  /** One per target, in the same order: whether its copy counts, and why not. */
  copies: CopyAssessment[];
  counted: Target[];
  notCounted: CopyAssessment[];
  /** The counted targets by failure domain: a domain is one copy however many targets it holds. */
  byDomain: Map<string, Target[]>;
  /** The targets after the first in each shared failure domain: the ones to move. */
  shared: string[];
  warnings: string[];
  /** 1 when production counts as a copy, else 0. */
  production: number;
  /** The job names, comma-separated, for remedies. */
  jobNames: string;
  /** `bulwark run <job>` for the first job that writes to the target. */
  runJob: (target: string) => string;
  /** A counted target's snapshot, its age and labels, as one evidence line. */
  snapshotLine: (t: Target) => string;
  /** Why the copies that do not count do not, then the failure-domain warnings. */
  failureReasons: () => string[];
  /** The remedies of the copies that do not count, or `fallback` when none has one. */
  failureRemedies: (fallback: string) => string;
}

const WORDS = ["No", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten"];
export const word = (n: number): string => WORDS[n] ?? String(n);
export const plural = (n: number, one: string, many: string): string => (n === 1 ? one : many);
export const shortId = (id: string): string => id.slice(0, 8);
export const iso = (d: Date): string => d.toISOString().replace(/\.000Z$/, "Z");

function describeTarget(t: Target): string {
  const l = t.labels;
  return `${l.medium}, site ${l.site}${l.offsite ? " (offsite)" : ""}, failure domain ${l.failureDomain}`;
}

export function buildPostureContext(
  config: BulwarkConfig,
  datasetName: string,
  policy: Policy,
  jobs: Job[],
  evidence: DatasetEvidence,
  now: Date,
): PostureContext {
  // 1. the targets, and the job to run for each
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
  const notCounted = copies.filter((c) => !c.counted);

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
  const shared = [...byDomain.values()].flatMap((list) => list.slice(1).map((t) => t.name));

  return {
    datasetName,
    dataset: config.datasets[datasetName],
    policy,
    jobs,
    evidence,
    now,
    targets,
    copies,
    counted,
    notCounted,
    byDomain,
    shared,
    warnings,
    // 4. production
    production: policy.productionCounts ? 1 : 0,
    jobNames: jobs.map((j) => j.name).join(", "),
    runJob,
    snapshotLine: (t) => {
      const c = copies.find((x) => x.target === t.name);
      const s = c?.snapshot;
      return s
        ? `${t.name}: snapshot ${shortId(s.id)} at ${iso(s.time)} (${formatAge(c?.ageMs ?? 0)} old; ${describeTarget(t)})`
        : t.name;
    },
    failureReasons: () => [...notCounted.map((c) => c.reason ?? `${c.target} does not count`), ...warnings],
    failureRemedies: (fallback) => {
      const r = notCounted.map((c) => c.remedy).filter((x): x is string => x !== undefined);
      if (r.length > 0) return [...new Set(r)].join("; ");
      return fallback;
    },
  };
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
