/**
 * `bulwark dr plan` through the built CLI: a runbook of two services (a database restored from a SQLite
 * source, a web app restored from files that depends on it), each dataset copied to three local targets and
 * drilled. The plan orders the services in waves, restores each dataset from the copy its drills measured
 * fastest, and falls back to the next when that copy is gone (named, with the reason); the estimate is the
 * snapshot's size over the drill's throughput. A missing program makes it not ready (exit 23), a port in use
 * is a warning, and a changed definition is a new version in the catalog's change log (an evidence record).
 */
import { rename, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { join } from "node:path";

import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  describeRun,
  makeTempDir,
  randomData,
  removeTempDirs,
  runCli,
  writeFiles,
  type RunResult,
} from "./helpers.js";

interface PlanJson {
  runbook: string;
  definitionHash: string;
  version: { id?: number; changed: boolean; previousHash?: string; versions: number };
  waves: {
    wave: number;
    services: {
      name: string;
      datasets: {
        dataset: string;
        target?: string;
        snapshot?: string;
        rpoMs?: number;
        bytes?: number;
        bytesPerSecond?: number;
        estimateMs?: number;
        estimateBasis?: string;
        passedOver: { target: string; reason: string }[];
        ranking: { target: string; bytesPerSecond?: number }[];
      }[];
      estimateMs?: number;
    }[];
    estimateMs?: number;
  }[];
  estimateMs?: number;
  planningMs: number;
  rtoMs?: number;
  ready: boolean;
  problems: { severity: string; service?: string; dataset?: string; message: string; remedy: string }[];
}

let base: string;
let env: Record<string, string>;
let busy: Server;
let busyPort: number;

const cli = (args: string[]): Promise<RunResult> => runCli(args, { env, timeoutMs: 180_000 });

async function writeConfig(name: string, runbook: string): Promise<string> {
  const file = join(base, `${name}.yaml`);
  const target = (t: string, fd: string) =>
    `  ${t}: { location: ${base}/${t}, labels: { medium: disk, site: ${t}, failureDomain: ${fd} }, password: { file: ${base}/pw } }`;
  await writeFile(
    file,
    `version: 1
targets:
${target("one", "d1")}
${target("two", "d2")}
${target("three", "d3")}
datasets:
  web:
    sources: [{ type: files, paths: ["${base}/src/web"] }]
  db:
    sources: [{ type: sqlite, path: ${base}/src/shop.sqlite }]
policies:
  p: { rule: { copies: 3 }, rpo: 24h, drills: { every: 7d } }
jobs:
  web: { dataset: web, policy: p, primary: one, copies: [two, three] }
  db: { dataset: db, policy: p, primary: one, copies: [two, three] }
runbooks:
${runbook}`,
  );
  return file;
}

const shopRunbook = (rto = "10m", extraStart = "node"): string => `  shop:
    rto: ${rto}
    services:
      db:
        restore: [{ dataset: db, source: shop, to: { sqlite: ${base}/recovered/shop.sqlite } }]
        health: [{ type: sql, sqlite: ${base}/recovered/shop.sqlite, query: "select count(*) from items", expect: "3" }]
      web:
        dependsOn: [db]
        restore: [{ dataset: web, to: { directory: ${base}/recovered/web } }]
        start: [${extraStart}, server.js]
        health: [{ type: http, url: "http://127.0.0.1:${busyPort}/", body: ok }]
`;

async function plan(config: string, extra: string[] = []): Promise<{ r: RunResult; json: PlanJson }> {
  const args = ["--json", "dr", "plan", "shop", "-c", config, ...extra];
  const r = await cli(args);
  let json: PlanJson;
  try {
    json = JSON.parse(r.stdout) as PlanJson;
  } catch {
    throw new Error(describeRun(args, r));
  }
  return { r, json };
}

const datasetOf = (p: PlanJson, name: string) =>
  p.waves.flatMap((w) => w.services.flatMap((s) => s.datasets)).find((d) => d.dataset === name)!;

beforeAll(async () => {
  base = await makeTempDir("dr-plan");
  env = { BULWARK_CATALOG: join(base, "state", "catalog.db"), HOME: base };
  await writeFile(join(base, "pw"), "dr-plan-password\n");
  await writeFiles(join(base, "src", "web"), {
    "server.js": "// app\n",
    "data.bin": randomData(3 * 1024 * 1024),
  });
  const db = new Database(join(base, "src", "shop.sqlite"));
  db.exec(
    "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO items (name) VALUES ('a'), ('b'), ('c');",
  );
  db.close();
  busy = createServer();
  await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve));
  busyPort = (busy.address() as { port: number }).port;
  const config = await writeConfig("base", shopRunbook());
  const run = ["run", "--init", "-c", config];
  const r = await cli(run);
  expect(r.code, describeRun(run, r)).toBe(0);
  for (const dataset of ["web", "db"]) {
    for (const target of ["one", "two", "three"]) {
      const args = ["drill", "-c", config, "--dataset", dataset, "--target", target];
      const d = await cli(args);
      expect(d.code, describeRun(args, d)).toBe(0);
    }
  }
}, 600_000);

afterAll(async () => {
  busy?.close();
  await removeTempDirs();
});

describe("bulwark dr plan", () => {
  it("orders services in waves, picks the fastest drilled copy and estimates from its throughput", async () => {
    const config = await writeConfig("base", shopRunbook());
    const { r, json } = await plan(config);
    expect(r.code, describeRun(["dr", "plan"], r)).toBe(0);
    expect(json.ready).toBe(true);
    expect(json.waves.map((w) => w.services.map((s) => s.name))).toEqual([["db"], ["web"]]);
    for (const name of ["db", "web"]) {
      const d = datasetOf(json, name);
      expect(d.target, name).toBeDefined();
      expect(d.passedOver).toEqual([]);
      // The fastest drilled copy, of the three ranked by their drills' throughput.
      expect(d.ranking.map((c) => c.target).sort()).toEqual(["one", "three", "two"]);
      const rates = d.ranking.map((c) => c.bytesPerSecond!);
      expect(rates).toEqual([...rates].sort((x, y) => y - x));
      expect(d.target).toBe(d.ranking[0]!.target);
      expect(d.bytesPerSecond).toBe(rates[0]);
      expect(d.bytesPerSecond).toBeGreaterThan(0);
      // No DR drill yet: the size over the drill's throughput, plus the fixed overhead of opening a copy.
      expect(d.estimateMs).toBe(Math.ceil((d.bytes! / d.bytesPerSecond!) * 1000) + 500);
      expect(d.estimateBasis).toBe("drill throughput");
      expect(d.rpoMs).toBeGreaterThanOrEqual(0);
    }
    const web = datasetOf(json, "web");
    expect(web.bytes).toBeGreaterThanOrEqual(3 * 1024 * 1024);
    expect(json.estimateMs).toBe(json.planningMs + json.waves.reduce((a, w) => a + w.estimateMs!, 0));
    expect(json.rtoMs).toBe(600_000);
    // The port the web service listens on is taken on this host: a failover would collide.
    expect(json.problems).toContainEqual(
      expect.objectContaining({
        severity: "warning",
        service: "web",
        message: `port ${busyPort} of web is in use on this host`,
      }),
    );
    const human = await cli(["dr", "plan", "shop", "-c", config]);
    expect(human.stdout).toContain("wave 1: db");
    expect(human.stdout).toContain("wave 2: web");
    expect(human.stdout).toContain("shop is ready");
  });

  it("falls back to the next copy when the fastest cannot be opened, and says why", async () => {
    const config = await writeConfig("base", shopRunbook());
    const first = datasetOf((await plan(config)).json, "db").target!;
    await rename(join(base, first), join(base, `${first}.gone`));
    try {
      const { r, json } = await plan(config);
      expect(r.code, describeRun(["dr", "plan"], r)).toBe(0);
      const db = datasetOf(json, "db");
      expect(db.target).toBeDefined();
      expect(db.target).not.toBe(first);
      expect(db.passedOver.map((p) => p.target)).toEqual([first]);
      expect(db.passedOver[0]!.reason).toMatch(/^unreachable: /);
      expect(json.problems.map((p) => p.message)).toContainEqual(
        expect.stringMatching(new RegExp(`^copy ${first} unreachable: .*; db falls back to ${db.target}$`)),
      );
      // Named with --from-target, the gone copy is the only one: not ready.
      const only = await plan(config, ["--from-target", first]);
      expect(only.r.code).toBe(23);
      expect(only.json.ready).toBe(false);
      expect(only.json.problems[0]!.message).toMatch(
        new RegExp(`^no copy of (db|web) can be restored: ${first} unreachable`),
      );
    } finally {
      await rename(join(base, `${first}.gone`), join(base, first));
    }
  });

  it("a program the runbook needs that is not installed makes it not ready (exit 23)", async () => {
    const config = await writeConfig("missing", shopRunbook("10m", "no-such-program-bulwark"));
    const { r, json } = await plan(config);
    expect(r.code, describeRun(["dr", "plan"], r)).toBe(23);
    expect(json.ready).toBe(false);
    expect(json.problems).toContainEqual(
      expect.objectContaining({
        severity: "error",
        service: "web",
        message: "no-such-program-bulwark is not installed (not on PATH), and starting web needs it",
      }),
    );
    const human = await cli(["dr", "plan", "shop", "-c", config]);
    expect(human.code).toBe(23);
    expect(human.stdout).toContain("shop is NOT ready");
  });

  it("a changed definition is a new version in the change log; the chain still verifies", async () => {
    const config = await writeConfig("versions", shopRunbook("10m"));
    const a = (await plan(config)).json;
    const again = (await plan(config)).json;
    expect(again.definitionHash).toBe(a.definitionHash);
    expect(again.version.changed).toBe(false);
    await writeConfig("versions", shopRunbook("20m"));
    const b = (await plan(config)).json;
    expect(b.definitionHash).not.toBe(a.definitionHash);
    expect(b.version).toMatchObject({
      changed: true,
      previousHash: a.definitionHash,
      versions: a.version.versions + 1,
    });
    const chain = await cli(["--json", "catalog", "verify-chain"]);
    expect(chain.code, chain.stdout + chain.stderr).toBe(0);
  });

  it("an unknown runbook is a clear error", async () => {
    const config = await writeConfig("base", shopRunbook());
    const r = await cli(["dr", "plan", "nope", "-c", config]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('error: unknown runbook "nope"');
    expect(r.stderr).toContain("hint: the runbooks are shop");
  });
});
