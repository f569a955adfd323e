/**
 * The RPO watch (src/daemon/rpo-watch.ts): the newest snapshot of each dataset on each of its jobs' targets
 * against the policy's RPO, on the scale within / exceeded (2x) / severe (4x) / critical, and never.
 */
import { describe, expect, it } from "vitest";

import { describeRpo, rpoWatch } from "../../src/daemon/rpo-watch.js";
import { exampleConfig } from "../policy/posture-fixture.js";

const H = 3_600_000;

describe("rpoWatch", () => {
  it("rates each dataset on each target against its policy's RPO, and tells never from late", () => {
    const config = exampleConfig();
    const job = Object.values(config.jobs)[0]!;
    const rpo = config.policies[job.policy]!.rpoMs;
    const now = new Date("2026-06-01T12:00:00Z");
    const targets = [job.primary, ...job.copies];
    expect(targets.length).toBeGreaterThanOrEqual(3);
    const ages = [0.5, 1.5, 3.5];
    const snapshots = targets.slice(0, 3).flatMap((target, i) => [
      { dataset: job.dataset, target, time: new Date(now.getTime() - ages[i]! * rpo) },
      { dataset: job.dataset, target, time: new Date(now.getTime() - 10 * rpo) },
    ]);
    snapshots.push({ dataset: "other", target: job.primary, time: now });
    const watch = rpoWatch(config, snapshots, now);
    const byTarget = new Map(watch.filter((w) => w.dataset === job.dataset).map((w) => [w.target, w]));
    expect(byTarget.get(targets[0]!)).toMatchObject({ role: "primary", state: "within", ratio: 0.5 });
    expect(byTarget.get(targets[1]!)).toMatchObject({ role: "copy", state: "exceeded" });
    expect(byTarget.get(targets[2]!)).toMatchObject({ state: "severe", ageMs: 3.5 * rpo });
    for (const t of targets.slice(3))
      expect(byTarget.get(t)).toMatchObject({ state: "never", ratio: Infinity });
    expect(describeRpo(byTarget.get(targets[2]!)!)).toContain("more than twice its RPO");

    const late = rpoWatch(
      config,
      [{ dataset: job.dataset, target: job.primary, time: new Date(now.getTime() - 5 * rpo) }],
      now,
    );
    expect(late.find((w) => w.target === job.primary)!.state).toBe("critical");
    expect(describeRpo(late.find((w) => w.target === targets[1])!)).toBe(
      `${job.dataset} has never been backed up to ${targets[1]}`,
    );
    expect(rpo).toBeGreaterThan(H / 2);
  });
});
