/**
 * The requirement rows of a posture, one evaluator each, in the order they are reported. Each reads the
 * shared context (./posture-context.ts: the counted copies, failure domains, remedies) and returns its row,
 * or nothing when the rule does not ask for it and the row would only be noise (sites, networks). Adding a
 * requirement is adding an evaluator to ROW_EVALUATORS (and its id to RequirementId in ./posture.ts).
 *
 * A row the rule does not require is still evaluated (it is useful to see) but does not decide compliance:
 * `required` says which, and ./posture.ts takes the worst status of the required rows.
 */

import { formatAge } from "../config/duration.js";
import type { Target } from "../config/types.js";
import { iso, plural, shortId, word, type PostureContext } from "./posture-context.js";
import type { PostureRow, RequirementId } from "./posture.js";

export interface RowEvaluator {
  id: RequirementId;
  evaluate(ctx: PostureContext): PostureRow | undefined;
}

/** A pass with its evidence, or a fail with the same evidence and why, computed only when it fails. */
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

/** Copies: counted failure domains, plus production when it counts. */
export function evaluateCopies(ctx: PostureContext): PostureRow {
  const { byDomain, production, shared, jobNames } = ctx;
  const have = byDomain.size + production;
  const need = ctx.policy.counts.copies;
  const ev = [
    ...(production ? ["production data (counts as one copy)"] : []),
    ...[...byDomain.values()].map((list) => list.map(ctx.snapshotLine).join(" + ")),
  ];
  return row("copies", `${word(need)} copies of data exist`, need > 0, have >= need, ev, () => ({
    reason: `${have} of ${need} ${plural(need, "copy", "copies")} count: ${ctx.failureReasons().join("; ") || "too few copy targets"}`,
    remedy: ctx.failureRemedies(
      shared.length > 0
        ? `move ${shared.join(", ")} to a failure domain of its own (targets.<name>.labels.failureDomain) or add a copy target in another failure domain to job ${jobNames}`
        : `add copy targets in other failure domains to job ${jobNames} (jobs.<name>.copies)`,
    ),
  }));
}

/** Media: distinct storage media among the counted copies; at least two are always shown as the aim. */
export function evaluateMedia(ctx: PostureContext): PostureRow {
  const { counted, notCounted, jobNames } = ctx;
  const counts = ctx.policy.counts;
  const media = [...new Set(counted.map((t) => t.labels.medium))];
  const need = Math.max(counts.media, 2);
  return row(
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
      remedy: ctx.failureRemedies(
        `add a copy target on another medium (e.g. object storage or a NAS) to job ${jobNames}`,
      ),
    }),
  );
}

/** Offsite: failure domains with at least one counted offsite copy. */
export function evaluateOffsite(ctx: PostureContext): PostureRow {
  const { byDomain, targets, copies, jobNames } = ctx;
  const counts = ctx.policy.counts;
  const offsite = [...byDomain.values()].filter((list) => list.some((t) => t.labels.offsite));
  const need = Math.max(counts.offsite, 1);
  return row(
    "offsite",
    need === 1 ? "One copy stored offsite" : `${word(need)} copies stored offsite`,
    counts.offsite >= 1,
    offsite.length >= need,
    offsite.map((list) =>
      list
        .filter((t) => t.labels.offsite)
        .map(ctx.snapshotLine)
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
            : ctx.failureRemedies(`add another offsite target to job ${jobNames}`),
      };
    },
  );
}

/** Immutable or air-gapped: failure domains with a counted copy whose isolation holds (see assessLock). */
export function evaluateImmutable(ctx: PostureContext): PostureRow {
  const { counted, notCounted, targets, jobNames } = ctx;
  const counts = ctx.policy.counts;
  const assessed = counted.map((t) => ({ t, ...assessLock(ctx, t) }));
  const locked = assessed.filter((a) => a.ok);
  const domains = new Set(locked.map((a) => a.t.labels.failureDomain));
  const need = Math.max(counts.immutableOrIsolated, 1);
  const isolatedTargets = targets.filter((t) => t.labels.isolation !== "none");
  return row(
    "immutable",
    need === 1
      ? "Immutable or air-gapped copy retained"
      : `${word(need)} immutable or air-gapped copies retained`,
    counts.immutableOrIsolated >= 1,
    domains.size >= need,
    locked.map((a) => `${ctx.snapshotLine(a.t)}; ${a.detail}`),
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
                    `restore the lock on ${a.t.name} (check its Object Lock or vault configuration), then ${ctx.runJob(a.t.name)} to copy and lock a new snapshot`,
                ),
                ...missed.map((c) => c.remedy ?? ""),
              ]
                .filter((x) => x !== "")
                .join("; ") || `add another immutable target to job ${jobNames}`,
      };
    },
  );
}

/**
 * Whether a counted copy's isolation holds: an immutable or append-only copy only when its lock was read
 * back from the target and covers the snapshot now and for the policy's immutability period; an offline
 * copy on its label, which the evidence cannot confirm, and says so.
 */
function assessLock(ctx: PostureContext, target: Target): { ok: boolean; detail: string } {
  const { policy, now } = ctx;
  const ev = ctx.evidence.copies[target.name];
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
      // The locked data is intact, but what a plain read sees is not it: the copy was attacked.
      if (lock.tampering !== undefined) {
        return { ok: false, detail: `${lock.tampering} on ${target.name} (run \`bulwark untamper\` on it)` };
      }
      // What a restore of the snapshot needs that is locked the shortest (the config, a key, an index file,
      // the snapshot, a pack), when the evidence names it.
      const of = lock.earliest !== undefined ? `${lock.earliest} (needed by ${what})` : what;
      if (lock.retainUntil === undefined || lock.retainUntil.getTime() <= now.getTime()) {
        return {
          ok: false,
          detail: `the retention of ${of} ${lock.retainUntil ? `ended at ${iso(lock.retainUntil)}` : "is not set"}: the lock was dropped`,
        };
      }
      if (policy.immutabilityDays !== undefined && snap !== undefined) {
        const wanted = snap.time.getTime() + policy.immutabilityDays * 86_400_000;
        // A minute of slack: retention is set when the copy lands, a little after the snapshot time.
        if (lock.retainUntil.getTime() < wanted - 60_000) {
          return {
            ok: false,
            detail: `${of} is retained until ${iso(lock.retainUntil)}, shorter than the policy's ${policy.immutabilityDays} days`,
          };
        }
      }
      const over =
        lock.objects !== undefined
          ? `, the earliest end among the ${lock.objects} objects a restore needs${lock.earliest !== undefined ? ` (${lock.earliest})` : ""}`
          : "";
      return {
        ok: true,
        detail: `retained${lock.mode ? ` (${lock.mode})` : ""} until ${iso(lock.retainUntil)}${over}, read back from the target`,
      };
    }
  }
}

/** Sites (4-3-2): distinct sites of the counted copies, plus production's; only when the rule counts sites. */
export function evaluateSites(ctx: PostureContext): PostureRow | undefined {
  const counts = ctx.policy.counts;
  if (counts.sites <= 0) return undefined;
  const sites = new Set(ctx.counted.map((t) => t.labels.site));
  if (ctx.production && ctx.dataset?.site !== undefined) sites.add(ctx.dataset.site);
  return row(
    "sites",
    `${word(counts.sites)} sites used`,
    true,
    sites.size >= counts.sites,
    [...sites].map((s) => `site ${s}`),
    () => ({
      reason: `copies at ${sites.size} of ${counts.sites} sites (${[...sites].join(", ") || "none"})`,
      remedy: ctx.failureRemedies(`add copy targets at other sites to job ${ctx.jobNames}`),
    }),
  );
}

/** Isolated networks (4-3-2): as sites, by network; only when the rule counts networks. */
export function evaluateNetworks(ctx: PostureContext): PostureRow | undefined {
  const counts = ctx.policy.counts;
  if (counts.isolatedNetworks <= 0) return undefined;
  const networks = new Set(ctx.counted.map((t) => t.labels.network));
  if (ctx.production && ctx.dataset?.network !== undefined) networks.add(ctx.dataset.network);
  return row(
    "networks",
    `${word(counts.isolatedNetworks)} isolated networks used`,
    true,
    networks.size >= counts.isolatedNetworks,
    [...networks].map((n) => `network ${n}`),
    () => ({
      reason: `copies on ${networks.size} of ${counts.isolatedNetworks} isolated networks (${[...networks].join(", ") || "none"})`,
      remedy: ctx.failureRemedies(
        `add a copy target on an isolated network (labels.network) to job ${ctx.jobNames}`,
      ),
    }),
  );
}

/**
 * Recovery validation (the 0 of 3-2-1-1-0), from the catalog's evidence. It passes only when every counted
 * copy (a) has a latest verification with no error, within the verification cadence, (b) has every pack
 * read soundly within `fullEvery` (all packs at least once without one) and none recorded damaged, and (c)
 * the dataset's latest drill passed, within `drills.every`. Unknown while no verification and no drill of
 * the dataset exist at all; otherwise every unmet condition is a reason naming the copy, the time and what
 * was found.
 */
export function evaluateValidation(ctx: PostureContext): PostureRow {
  const { policy, now } = ctx;
  const val = ctx.evidence.validation;
  const base = {
    id: "validation" as const,
    requirement: "Automated recovery validation in place (0 errors)",
    required: policy.counts.zeroErrors,
  };
  const verified = Object.values(val?.copies ?? {}).some((c) => c.verification !== undefined);
  if (val === undefined || (!verified && val.drill === undefined)) {
    return {
      ...base,
      status: "unknown",
      evidence: [],
      reason: "no verification or restore drill has been recorded for this dataset",
      remedy: `run bulwark verify -c CONFIG and bulwark drill -c CONFIG --dataset ${ctx.datasetName} (schedule them: policies.${policy.name}.verification, drills)`,
    };
  }
  const evidence: string[] = [];
  const reasons: string[] = [];
  const remedies = new Set<string>();
  if (ctx.counted.length === 0) reasons.push("no copy counts, so none is validated");
  for (const t of ctx.counted) {
    const copy = val.copies[t.name] ?? {};
    const v = copy.verification;
    // One evidence line per copy: its last verification, then its coverage.
    const parts: string[] = [];
    if (v === undefined) {
      reasons.push(`${t.name} has never been verified`);
      remedies.add(`bulwark verify -c CONFIG --target ${t.name}`);
    } else {
      parts.push(`verified at ${iso(v.time)}, ${v.errors} ${plural(v.errors, "error", "errors")}`);
      const age = now.getTime() - v.time.getTime();
      if (v.errors > 0) {
        reasons.push(
          `the verification of ${t.name} at ${iso(v.time)} found ${v.errors} ${plural(v.errors, "error", "errors")}`,
        );
        remedies.add(
          `bulwark repair -c CONFIG --target ${t.name}, then bulwark verify -c CONFIG --target ${t.name}`,
        );
      } else if (policy.verification?.cadenceMs !== undefined && age > policy.verification.cadenceMs) {
        reasons.push(
          `${t.name} was last verified ${formatAge(age)} ago; the cadence is ${policy.verification.cadence}`,
        );
        remedies.add("check that scheduled verification runs");
      }
    }
    const c = copy.coverage;
    if (c === undefined) {
      if (parts.length > 0) evidence.push(`${t.name}: ${parts.join("; ")}`);
      reasons.push(
        `the verification coverage of ${t.name} is unknown${copy.coverageError ? `: ${copy.coverageError}` : ""}`,
      );
      continue;
    }
    const within = c.fullEvery !== undefined ? ` within ${c.fullEvery}` : "";
    parts.push(
      `${c.covered} of ${c.packs} ${plural(c.packs, "pack", "packs")} read soundly${within}` +
        (c.oldestRead ? ` (oldest read ${iso(c.oldestRead)})` : ""),
    );
    evidence.push(`${t.name}: ${parts.join("; ")}`);
    if (c.damaged > 0) {
      reasons.push(`${t.name} has ${c.damaged} damaged ${plural(c.damaged, "pack", "packs")} not repaired`);
      remedies.add(`bulwark repair -c CONFIG --target ${t.name}`);
    } else if (c.covered < c.packs) {
      reasons.push(`only ${c.covered} of ${c.packs} packs of ${t.name} were read${within}`);
      remedies.add(
        `run bulwark verify -c CONFIG daily with a budget that reads every pack${within} (policies.${policy.name}.verification)`,
      );
    }
  }
  const d = val.drill;
  if (d === undefined) {
    reasons.push("no restore drill has been recorded");
    remedies.add(`bulwark drill -c CONFIG --dataset ${ctx.datasetName}`);
  } else {
    evidence.push(drillLine(d));
    if (d.status !== "pass") {
      reasons.push(
        `the last drill (from ${d.target} at ${iso(d.time)}) failed: ${d.findings.slice(0, 3).join("; ") || d.description}`,
      );
      remedies.add(`read bulwark report drill --dataset ${ctx.datasetName}, fix the cause, drill again`);
    } else if (policy.drills !== undefined && now.getTime() - d.time.getTime() > policy.drills.everyMs) {
      reasons.push(
        `the last drill is ${formatAge(now.getTime() - d.time.getTime())} old; drills.every is ${policy.drills.every}`,
      );
      remedies.add("check that scheduled drills run");
    }
  }
  if (reasons.length === 0) return { ...base, status: "pass", evidence };
  return { ...base, status: "fail", evidence, reason: reasons.join("; "), remedy: [...remedies].join("; ") };
}

function drillLine(d: NonNullable<NonNullable<PostureContext["evidence"]["validation"]>["drill"]>): string {
  const rto = d.restoreMs !== undefined ? `, restore ${(d.restoreMs / 1000).toFixed(1)} s` : "";
  const rpo = d.rpoMs !== undefined ? `, snapshot ${formatAge(d.rpoMs)} old` : "";
  return `drill of ${shortId(d.snapshot)} from ${d.target} at ${iso(d.time)}: ${d.status}${rto}${rpo}`;
}

/**
 * DR: unknown until a DR drill of a runbook covering the dataset is recorded; then it passes only when that
 * drill passed, ran the runbook's current definition, and is within the policy's `drills.runbookEvery`.
 */
export function evaluateDr(ctx: PostureContext): PostureRow {
  const d = ctx.evidence.dr;
  const base = {
    id: "dr" as const,
    requirement: "DR orchestration supports full service recovery",
    required: ctx.policy.counts.disasterRecovery,
  };
  if (d === undefined) {
    return {
      ...base,
      status: "unknown",
      evidence: [],
      reason: "no DR drill has been recorded for this dataset",
      remedy: "define a runbook that restores the dataset (runbooks:) and run bulwark dr drill RUNBOOK",
    };
  }
  const line = `dr drill of runbook ${d.runbook} at ${iso(d.time)}: ${d.status} (${d.description})`;
  const fail = (reason: string, remedy: string): PostureRow => ({
    ...base,
    status: "fail",
    evidence: [line],
    reason,
    remedy,
  });
  if (d.status !== "pass") {
    return fail(
      "the last DR drill failed",
      `read \`bulwark dr status\` for the failing step, fix it, run bulwark dr drill ${d.runbook}`,
    );
  }
  if (d.definitionChanged) {
    return fail(
      `runbook ${d.runbook} changed since its last DR drill`,
      `run bulwark dr drill ${d.runbook} on the new definition`,
    );
  }
  const every = ctx.policy.drills?.runbookEveryMs;
  const age = ctx.now.getTime() - d.time.getTime();
  if (every !== undefined && age > every) {
    return fail(
      `the last DR drill is ${formatAge(age)} old; drills.runbookEvery is ${ctx.policy.drills?.runbookEvery ?? ""}`,
      `run bulwark dr drill ${d.runbook} (schedule it)`,
    );
  }
  return { ...base, status: "pass", evidence: [line] };
}

/** Every requirement, in report order. */
export const ROW_EVALUATORS: readonly RowEvaluator[] = [
  { id: "copies", evaluate: evaluateCopies },
  { id: "media", evaluate: evaluateMedia },
  { id: "offsite", evaluate: evaluateOffsite },
  { id: "immutable", evaluate: evaluateImmutable },
  { id: "sites", evaluate: evaluateSites },
  { id: "networks", evaluate: evaluateNetworks },
  { id: "validation", evaluate: evaluateValidation },
  { id: "dr", evaluate: evaluateDr },
];
