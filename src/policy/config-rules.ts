/**
 * The config rules that need the posture (src/config/rules.ts `ConfigRule`): config sits below policy, so
 * src/ops/config.ts hands these to the config loader, and `config check`, `posture` and every command that
 * loads the file warn with the file, line and field.
 *
 * Satisfiability: a job's policy evaluated as if every copy were fresh, reachable and locked. What still
 * fails is a config problem (too few targets, shared failure domains, no immutable copy), and because it is
 * the posture's own evaluation, `config check` and `posture` can never disagree.
 */

import type { Diagnostic, MakeDiagnostic } from "../config/diagnostic.js";
import { jobIsComplete, type ConfigRule } from "../config/rules.js";
import type { BulwarkConfig } from "../config/types.js";
import { evaluateDataset, type DatasetEvidence } from "./posture.js";

/** Warns for each job (whose references resolve) whose targets can never meet its policy. */
export const satisfiability: ConfigRule = (config, { warning }) =>
  Object.keys(config.jobs)
    .filter((name) => jobIsComplete(config, name))
    .flatMap((name) => jobSatisfiability(config, name, warning));

/** The rules src/ops/config.ts loads every config with. */
export const policyRules: readonly ConfigRule[] = [satisfiability];

function jobSatisfiability(config: BulwarkConfig, jobName: string, warning: MakeDiagnostic): Diagnostic[] {
  const job = config.jobs[jobName];
  if (job === undefined) return [];
  const policy = config.policies[job.policy];
  if (policy === undefined) return [];
  const now = new Date(0);
  const far = new Date(8.64e15);
  const evidence: DatasetEvidence = { copies: {} };
  for (const t of [job.primary, ...job.copies]) {
    const target = config.targets[t];
    evidence.copies[t] = {
      reachable: true,
      snapshot: { id: "ideal", time: now },
      ...(target?.labels.isolation === "append-only"
        ? { lock: { kind: "append-only" as const, readBack: true } }
        : { lock: { kind: "retention" as const, readBack: true, retainUntil: far } }),
    };
  }
  const posture = evaluateDataset(config, job.dataset, policy, [job], evidence, now);
  const out: Diagnostic[] = [];
  for (const w of posture.warnings) {
    out.push(warning(["jobs", jobName, "copies"], w, "put the job's targets in distinct failure domains"));
  }
  for (const r of posture.rows) {
    if (!r.required || r.status !== "fail" || r.id === "validation" || r.id === "dr") continue;
    out.push(
      warning(
        ["jobs", jobName, "policy"],
        `policy ${policy.name} (rule ${policy.preset ?? "custom"}) cannot be met by this job's targets: "${r.requirement}" fails (${r.reason ?? ""})`,
        r.remedy ?? "change the job's targets or its policy",
      ),
    );
  }
  return out;
}
