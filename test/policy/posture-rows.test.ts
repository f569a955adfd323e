/**
 * The row table of posture (src/policy/posture-rows.ts): one evaluator per requirement, each returning a row
 * of its own id (or none), reported in table order. The rows' content is covered by posture.test.ts and its
 * golden files; this checks the contract a new row has to meet.
 */
import { describe, expect, it } from "vitest";

import { evaluateDataset } from "../../src/policy/posture.js";
import { buildPostureContext } from "../../src/policy/posture-context.js";
import { ROW_EVALUATORS } from "../../src/policy/posture-rows.js";
import { presetCounts } from "../../src/policy/rule-presets.js";
import { NOW, exampleConfig, healthyEvidence } from "./posture-fixture.js";

function fixture(preset: "3-2-1-1-0" | "4-3-2") {
  const config = exampleConfig();
  const policy = config.policies.standard;
  const job = config.jobs["app-nightly"];
  if (policy === undefined || job === undefined) throw new Error("fixture");
  policy.preset = preset;
  policy.counts = presetCounts(preset);
  return { config, policy, job };
}

describe("posture row evaluators", () => {
  it("name each requirement once", () => {
    const ids = ROW_EVALUATORS.map((e) => e.id);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it.each(["3-2-1-1-0", "4-3-2"] as const)(
    "under %s each returns its own row or none, and the dataset lists them in table order",
    (preset) => {
      const { config, policy, job } = fixture(preset);
      const ctx = buildPostureContext(config, "app", policy, [job], healthyEvidence(), NOW);
      const rows = ROW_EVALUATORS.flatMap((e) => {
        const row = e.evaluate(ctx);
        if (row !== undefined) expect(row.id).toBe(e.id);
        return row === undefined ? [] : [row];
      });
      const posture = evaluateDataset(config, "app", policy, [job], healthyEvidence(), NOW);
      expect(posture.rows).toEqual(rows);
      // sites and networks appear only when the rule counts them (4-3-2)
      expect(rows.some((r) => r.id === "sites")).toBe(preset === "4-3-2");
    },
  );
});
