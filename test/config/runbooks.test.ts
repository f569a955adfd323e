/**
 * Runbooks in the config (src/config/runbooks.ts), through the real loader: defaults, waves, and every rule
 * that spans fields (unknown service, dataset or source, a dataset no job copies, a source restored to the
 * wrong kind of place, a cycle, a port two services claim), each with file, line and field.
 */
import { describe, expect, it } from "vitest";

import { formatDiagnostic } from "../../src/config/diagnostic.js";
import { resolveConfig } from "../../src/config/load.js";
import { runbookWaves } from "../../src/config/runbooks.js";

const ENV = { BULWARK_PASSWORD: "x", PGPASS: "x" };

const base = `version: 1
targets:
  local: { location: /var/backups/b, labels: { medium: disk, site: home, failureDomain: s1 } }
datasets:
  shop:
    sources:
      - { type: postgres, database: shop }
      - { type: files, paths: [/srv/app] }
  orphan:
    sources: [{ type: files, paths: [/srv/other] }]
policies:
  p: { rule: { copies: 1 }, rpo: 24h, drills: { every: 7d, runbookEvery: 30d } }
jobs:
  shop: { dataset: shop, policy: p, primary: local }
`;

function load(runbooks: string) {
  return resolveConfig(base + runbooks, "bulwark.yaml", { env: ENV, fileReadable: () => true });
}

describe("runbooks in the config", () => {
  it("normalises a runbook: defaults, commands as argv, waves in dependency order", () => {
    const r = load(`runbooks:
  shop:
    rto: 15m
    services:
      db:
        restore: [{ dataset: shop, source: shop, to: { postgres: "postgres://postgres@127.0.0.1:5432/shop", password: { env: PGPASS } } }]
        health: [{ type: tcp, port: 5432 }, { type: sql, postgres: "postgres://postgres@127.0.0.1:5432/shop", query: "select 1", expect: "1" }]
      app:
        dependsOn: [db]
        restore: [{ dataset: shop, to: { directory: /srv/restored } }]
        start: { command: "node server.js", env: [APP_MODE], setEnv: { PORT: "8080" }, cwd: /srv/restored/srv/app }
        health: [{ type: http, url: "http://127.0.0.1:8080/health", body: ok, retries: 5 }]
        after: [{ type: approval, message: "is the shop open?" }, { type: command, command: ["true"], critical: false }]
      cache:
        start: [redis-server, --port, "6380"]
`);
    expect(r.errors.map(formatDiagnostic)).toEqual([]);
    const rb = r.config!.runbooks.shop!;
    expect(rb.rtoMs).toBe(15 * 60_000);
    expect(runbookWaves(rb)).toEqual([["cache", "db"], ["app"]]);
    const app = rb.services.app!;
    expect(app.start).toEqual({
      kind: "command",
      command: ["sh", "-c", "node server.js"],
      passEnv: ["APP_MODE"],
      setEnv: { PORT: "8080" },
      cwd: "/srv/restored/srv/app",
    });
    expect(app.health[0]).toMatchObject({
      type: "http",
      status: 200,
      body: "ok",
      retries: 5,
      timeoutMs: 10_000,
      intervalMs: 1000,
    });
    expect(app.ports).toEqual([8080]);
    expect(app.after.map((s) => [s.type, s.critical, s.inDrill])).toEqual([
      ["approval", true, "skip"],
      ["command", false, "run"],
    ]);
    expect(rb.services.db!.ports).toEqual([5432]);
    expect(r.config!.policies.p!.drills?.runbookEveryMs).toBe(30 * 86_400_000);
  });

  it("names each cross-field problem with its line and field", () => {
    const r = load(`runbooks:
  broken:
    services:
      db:
        dependsOn: [web]
        restore:
          - { dataset: shp, to: { directory: /x } }
          - { dataset: orphan, to: { directory: /y } }
          - { dataset: shop, source: nope, to: { sqlite: /z } }
          - { dataset: shop, source: shop, to: { sqlite: /z } }
          - { dataset: shop, to: { sqlite: /z } }
        health: [{ type: tcp, port: 8080 }]
      web:
        dependsOn: [db, ghost]
        health: [{ type: http, url: "http://localhost:8080/" }]
`);
    expect(r.errors.map(formatDiagnostic)).toEqual([
      'bulwark.yaml:21:15 runbooks.broken.services.db.restore[0].dataset: unknown dataset "shp" — use one of shop, orphan, or define it under datasets',
      "bulwark.yaml:22:15 runbooks.broken.services.db.restore[1].dataset: dataset orphan has no copy to restore from: no job backs it up — add a job for the dataset with a primary and copies",
      'bulwark.yaml:23:30 runbooks.broken.services.db.restore[2].source: dataset shop has no source "nope" — use one of shop',
      "bulwark.yaml:24:44 runbooks.broken.services.db.restore[3].to: a postgres source cannot be restored to sqlite — use to: { postgres } or { directory }",
      "bulwark.yaml:25:30 runbooks.broken.services.db.restore[4].to: restoring the whole dataset needs to: { directory: PATH }, not sqlite — name the source (source: NAME) to restore one database",
      'bulwark.yaml:28:25 runbooks.broken.services.web.dependsOn[1]: unknown service "ghost" — use one of db, web',
      "bulwark.yaml:27:7 runbooks.broken.services.web: port 8080 is claimed by services db and web — two services of a runbook cannot listen on one port; fix the ports or the checks",
      "bulwark.yaml:19:9 runbooks.broken.services.db.dependsOn: services db, web cannot be ordered: their dependsOn form a cycle — remove a dependsOn of the cycle so the services can be started in order",
    ]);
  });

  it("refuses a misspelt key and an invalid duration", () => {
    const r = load(`runbooks:
  shop:
    rto: soon
    services:
      db: { healthcheck: [] }
`);
    const lines = r.errors.map(formatDiagnostic);
    expect(lines.some((l) => l.includes("runbooks.shop.services.db") && l.includes("healthcheck"))).toBe(
      true,
    );
    const r2 = load(`runbooks:
  shop:
    rto: soon
    services:
      db: {}
`);
    expect(r2.errors.map(formatDiagnostic).join("\n")).toMatch(
      /runbooks\.shop\.rto: invalid duration "soon"/,
    );
  });
});
