/**
 * `bulwark dr failover`, `dr resume`, `dr approve` and `dr status` through the built CLI. The primary site is
 * wiped (its data, its app and its repository deleted); the failover restores the database and then the app
 * that reads it from the offsite copy (the plan falls back from the lost primary), starts the app, which keeps
 * running after Bulwark exits, and its check passes with data from the restored database; the run is recorded
 * with its RTO against the target. Killed with SIGKILL mid-failover, `dr resume` completes it without redoing
 * the units that finished (the timeline shows each once). An approval step makes the run wait (exit 24) until
 * `dr approve`, and `dr resume` then finishes it.
 */

import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

import Database from "better-sqlite3";
import { freePort } from "../helpers/services.js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

import {
  CLI,
  describeRun,
  makeTempDir,
  removeTempDirs,
  runCli,
  spawnNode,
  writeFiles,
  type RunResult,
} from "./helpers.js";

interface RunJson {
  runId: string;
  status: string;
  units: Record<string, string>;
  timeline: { id?: string; service?: string; kind: string; name: string; outcome: string; message: string }[];
  services: Record<string, { pid?: number; log: string }>;
  datasets: { dataset: string; target?: string; snapshot?: string; rpoMs?: number }[];
  rtoMs?: number;
  rtoTargetMs?: number;
  waiting?: { id: string; step: string; message: string };
  failed?: { step: string; message: string; next: string };
  plan: {
    waves: {
      services: { name: string; datasets: { passedOver: { target: string; reason: string }[] }[] }[];
    }[];
  };
}

const BETTER_SQLITE3 = new URL("../../node_modules/better-sqlite3", import.meta.url).pathname;

const SERVER = `
const http = require("node:http");
const Database = require(process.env.BS3);
http.createServer((req, res) => {
  const db = new Database(process.env.DB, { readonly: true, fileMustExist: true });
  const n = db.prepare("select count(*) as n from items").get().n;
  db.close();
  res.end("items=" + n + "\\n");
}).listen(Number(process.env.PORT), "127.0.0.1");
`;

let base: string;
let env: Record<string, string>;
let port: number;
const started: number[] = [];
const prod = () => join(base, "prod");

const cli = (args: string[]): Promise<RunResult> => runCli(args, { env, timeoutMs: 240_000 });

async function writeConfig(
  name: string,
  extra: { dbAfter?: string; webBefore?: string } = {},
): Promise<string> {
  const file = join(base, `${name}.yaml`);
  const target = (t: string, site: string, offsite: boolean) =>
    `  ${t}: { location: ${base}/${t}, labels: { medium: disk, site: ${site}, offsite: ${offsite}, failureDomain: ${t} }, password: { file: ${base}/pw } }`;
  const web = join(prod(), "web");
  await writeFile(
    file,
    `version: 1
targets:
${target("local", "a", false)}
${target("offsite", "b", true)}
datasets:
  web: { sources: [{ type: files, paths: ["${web}"] }] }
  db: { sources: [{ type: sqlite, name: shop, path: ${prod()}/shop.sqlite }] }
policies:
  p: { rule: { copies: 2 }, rpo: 24h, productionCounts: false }
jobs:
  web: { dataset: web, policy: p, primary: local, copies: [offsite] }
  db: { dataset: db, policy: p, primary: local, copies: [offsite] }
runbooks:
  shop:
    rto: 10m
    services:
      db:
        restore: [{ dataset: db, source: shop, to: { sqlite: ${prod()}/shop.sqlite } }]
        health: [{ type: sql, sqlite: ${prod()}/shop.sqlite, query: "select count(*) from items", expect: "3", retries: 0 }]
${extra.dbAfter ?? ""}      web:
        dependsOn: [db]
        restore: [{ dataset: web, to: { directory: ${prod()}/recovered } }]
        start:
          command: [node, ${prod()}/recovered${web}/server.js]
          setEnv: { DB: ${prod()}/shop.sqlite, PORT: "${port}", BS3: ${BETTER_SQLITE3} }
        health: [{ type: http, url: "http://127.0.0.1:${port}/", body: "items=3", retries: 50, intervalSeconds: 0.1 }]
${extra.webBefore ?? ""}`,
  );
  return file;
}

async function answer(): Promise<string> {
  return (await (await fetch(`http://127.0.0.1:${port}/`)).text()).trim();
}

/** The disaster: the primary site's data, app and repository are gone. */
async function wipePrimarySite(): Promise<void> {
  for (const pid of started.splice(0)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
  await rm(prod(), { recursive: true, force: true });
  await rm(join(base, "local"), { recursive: true, force: true });
}

function parse(args: string[], r: RunResult): RunJson {
  try {
    return JSON.parse(r.stdout) as RunJson;
  } catch {
    throw new Error(describeRun(args, r));
  }
}

function keep(json: RunJson): void {
  for (const s of Object.values(json.services)) if (s.pid !== undefined) started.push(s.pid);
}

beforeAll(async () => {
  base = await makeTempDir("dr-failover");
  env = { BULWARK_CATALOG: join(base, "state", "catalog.db"), HOME: base };
  await writeFile(join(base, "pw"), "dr-failover-password\n");
  await writeFiles(join(prod(), "web"), { "server.js": SERVER });
  const db = new Database(join(prod(), "shop.sqlite"));
  db.exec(
    "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO items (name) VALUES ('a'), ('b'), ('c');",
  );
  db.close();
  port = await freePort();
  const config = await writeConfig("base");
  const run = ["run", "--init", "-c", config];
  const r = await cli(run);
  expect(r.code, describeRun(run, r)).toBe(0);
}, 300_000);

afterEach(async () => {
  await wipePrimarySite();
});

afterAll(async () => {
  await wipePrimarySite();
  await removeTempDirs();
});

describe("bulwark dr failover", () => {
  it("with the primary site wiped, restores the database then the app from the offsite copy; the app answers from the restored data", async () => {
    await wipePrimarySite();
    const config = await writeConfig("base");
    const args = ["--json", "dr", "failover", "shop", "-c", config, "--yes"];
    const r = await cli(args);
    const json = parse(args, r);
    keep(json);
    expect(r.code, describeRun(args, r)).toBe(0);
    expect(json.status).toBe("passed");
    expect(json.datasets.map((d) => [d.dataset, d.target])).toEqual([
      ["db", "offsite"],
      ["web", "offsite"],
    ]);
    const passedOver = json.plan.waves.flatMap((w) =>
      w.services.flatMap((s) => s.datasets.flatMap((d) => d.passedOver)),
    );
    expect(passedOver.map((p) => p.target)).toEqual(["local", "local"]);
    expect(json.timeline.map((e) => e.id)).toEqual([
      "db/restore/0",
      "db/health/0",
      "web/restore/0",
      "web/start",
      "web/health/0",
    ]);
    expect(json.rtoMs).toBeGreaterThan(0);
    expect(json.rtoMs!).toBeLessThanOrEqual(json.rtoTargetMs!);
    // Restored in place, and the app keeps serving after Bulwark exited.
    const db = new Database(join(prod(), "shop.sqlite"), { readonly: true });
    expect(db.prepare("select count(*) as n from items").get()).toEqual({ n: 3 });
    db.close();
    expect(await answer()).toBe("items=3");
    expect(await readFile(json.services.web!.log, "utf8")).toBe("");
    // Recorded; the human report says the RTO against the target.
    const status = await cli(["dr", "status"]);
    expect(status.stdout).toContain(`${json.runId}  failover  passed`);
    const again = await cli(["dr", "status", json.runId]);
    expect(again.stdout).toContain(`run ${json.runId} (failover of shop): passed`);
    // The evidence report of the real failover: RTO against the target, every unit, the copy passed over.
    const report = await cli(["report", "dr", "--runbook", "shop", "--mode", "failover", "-c", config]);
    expect(report.code, report.stderr).toBe(0);
    expect(report.stdout).toContain("DR failover of shop: PASS");
    expect(report.stdout).toMatch(/\| RTO \| .* achieved against a target of 10m: within \|/);
    for (const id of ["db/restore/0", "web/start", "web/health/0"])
      expect(report.stdout).toContain(`| ${id} |`);
    expect(report.stdout).toContain("Services left running");
    const chain = await cli(["catalog", "verify-chain"]);
    expect(chain.code, chain.stdout + chain.stderr).toBe(0);
  });

  it("killed with SIGKILL mid-failover, dr resume completes it without redoing finished units", async () => {
    await wipePrimarySite();
    const config = await writeConfig("slow", { dbAfter: "        after: [{ type: wait, seconds: 6 }]\n" });
    const { child, result } = spawnNode([CLI, "--json", "dr", "failover", "shop", "-c", config, "--yes"], {
      env,
    });
    // Wait until the database is restored and the wait after it runs, then kill the orchestrator.
    let runId: string | undefined;
    for (let i = 0; i < 300; i++) {
      const list = await cli(["--json", "dr", "status"]);
      const runs = JSON.parse(list.stdout || "[]") as { runId: string; status: string }[];
      runId = runs.find((x) => x.status === "running")?.runId;
      if (runId !== undefined) {
        const s = JSON.parse((await cli(["--json", "dr", "status", runId])).stdout) as RunJson;
        if (s.units["db/after/0"] === "running") break;
      }
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(runId).toBeDefined();
    child.kill("SIGKILL");
    await result;
    const killed = JSON.parse((await cli(["--json", "dr", "status", runId!])).stdout) as RunJson;
    expect(killed.status).toBe("running");
    expect(killed.units).toMatchObject({
      "db/restore/0": "passed",
      "db/health/0": "passed",
      "db/after/0": "running",
    });
    expect(killed.units["web/restore/0"]).toBeUndefined();

    // The plain config (no wait): a resume needs the definition the run started with.
    const changed = await cli(["dr", "resume", runId!, "-c", await writeConfig("base")]);
    expect(changed.code).toBe(1);
    expect(changed.stderr).toContain(`runbook shop changed since run ${runId} started`);

    const args = ["--json", "dr", "resume", runId!, "-c", config, "--yes"];
    const r = await runCli(args, { env, timeoutMs: 240_000 });
    const json = parse(args, r);
    keep(json);
    expect(r.code, describeRun(args, r)).toBe(0);
    expect(json.status).toBe("passed");
    // Each unit once: the database was not restored again.
    const ids = json.timeline.map((e) => e.id);
    expect(ids).toEqual([
      "db/restore/0",
      "db/health/0",
      "db/after/0",
      "web/restore/0",
      "web/start",
      "web/health/0",
    ]);
    expect(await answer()).toBe("items=3");
  }, 180_000);

  it("an approval step makes the run wait (exit 24) until dr approve; dr resume then finishes it", async () => {
    await wipePrimarySite();
    const config = await writeConfig("approval", {
      webBefore: '        before: [{ type: approval, message: "switch the DNS record to this site?" }]\n',
    });
    const first = ["--json", "dr", "failover", "shop", "-c", config];
    const r = await cli(first);
    const json = parse(first, r);
    expect(r.code, describeRun(first, r)).toBe(24);
    expect(json.status).toBe("waiting");
    expect(json.waiting).toMatchObject({
      id: "web/before/0",
      message: "switch the DNS record to this site?",
    });
    const human = await cli(["dr", "status", json.runId]);
    expect(human.stdout).toContain(`next: bulwark dr approve ${json.runId} web/before/0`);
    const bad = await cli(["dr", "approve", json.runId, "web/before/9"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("it waits on web/before/0");
    const ok = await cli(["dr", "approve", json.runId, "web/before/0"]);
    expect(ok.code, ok.stderr).toBe(0);
    const args = ["--json", "dr", "resume", json.runId, "-c", config];
    const done = await cli(args);
    const finished = parse(args, done);
    keep(finished);
    expect(done.code, describeRun(args, done)).toBe(0);
    expect(finished.status).toBe("passed");
    expect(finished.timeline.filter((e) => e.id === "db/restore/0")).toHaveLength(1);
    expect(await answer()).toBe("items=3");
  });

  it("a restore never overwrites what is at its place", async () => {
    await wipePrimarySite();
    await writeFiles(prod(), { "shop.sqlite": "live data, not to be touched\n" });
    const config = await writeConfig("base");
    const args = ["--json", "dr", "failover", "shop", "-c", config, "--yes"];
    const r = await cli(args);
    const json = parse(args, r);
    expect(r.code).toBe(1);
    expect(json.failed!.step).toBe("restore db/shop from offsite");
    expect(json.failed!.next).toContain(`bulwark dr resume ${json.runId} --retry-failed`);
    expect(await readFile(join(prod(), "shop.sqlite"), "utf8")).toBe("live data, not to be touched\n");
    const resume = await cli(["dr", "resume", json.runId, "-c", config]);
    expect(resume.code).toBe(1);
    expect(resume.stderr).toContain("pass --retry-failed".replace("pass ", "resume with "));
  });
});
