/**
 * The daemon's tasks from a config (src/daemon/daemon.ts tasksOf): a job with a schedule, and the policies'
 * cadences of verification, drills and DR drills, each on the targets it reads.
 */
import { describe, expect, it } from "vitest";

import { resolveConfig } from "../../src/config/load.js";
import { tasksOf } from "../../src/daemon/daemon.js";

const text = `version: 1
targets:
  local: { location: /var/backups/b, labels: { medium: disk, site: home, failureDomain: s1 } }
  far: { location: /mnt/far, labels: { medium: disk, site: far, offsite: true, failureDomain: s2 } }
datasets:
  app: { sources: [{ type: files, paths: [/srv/app] }] }
  logs: { sources: [{ type: files, paths: [/var/log/app] }] }
policies:
  p: { rule: { copies: 2 }, rpo: 24h, verification: { cadence: 7d }, drills: { every: 30d, runbookEvery: 90d } }
  q: { rule: { copies: 1 }, rpo: 24h, verification: { cadence: 1d } }
jobs:
  app: { dataset: app, policy: p, primary: local, copies: [far], schedule: "0 3 * * *" }
  logs: { dataset: logs, policy: q, primary: local }
runbooks:
  shop:
    services:
      web:
        restore: [{ dataset: app, to: { directory: /srv/restored } }]
`;

describe("tasksOf", () => {
  it("schedules the jobs that have a schedule, and verification, drills and DR drills by the policies' cadences", () => {
    const r = resolveConfig(text, "bulwark.yaml", {
      env: { BULWARK_PASSWORD: "x" },
      fileReadable: () => true,
    });
    expect(r.errors).toEqual([]);
    const tasks = tasksOf(r.config!).map((t) => ({
      id: t.task.id,
      schedule: t.schedule,
      targets: t.task.targets,
    }));
    expect(tasks).toEqual([
      { id: "job:app", schedule: "0 3 * * *", targets: ["local", "far"] },
      { id: "verify:app", schedule: "@every 7d", targets: ["local", "far"] },
      { id: "drill:app", schedule: "@every 30d", targets: ["local", "far"] },
      { id: "verify:logs", schedule: "@every 1d", targets: ["local"] },
      { id: "dr-drill:shop", schedule: "@every 90d", targets: ["local", "far"] },
    ]);
    const every = tasksOf(r.config!).find((t) => t.task.id === "verify:logs")!.task.schedule;
    expect(every).toEqual({ kind: "every", ms: 86_400_000 });
  });
});
