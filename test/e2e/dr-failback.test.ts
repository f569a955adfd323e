/**
 * `bulwark dr failback` through the built CLI. The primary site is wiped; a failover brings the shop up at the
 * recovery site (its own directory and SQLite file) from the offsite copy; the app takes an order there. The
 * primary site comes back with stale data. The failback stops the recovery site's app (its port free again),
 * backs up what it did as new snapshots (tag failback, the original paths), puts the stale data aside rather
 * than over it, restores to the original places, starts the app there with its paths rewritten, and the
 * same check passes; the app answers with the order taken at the recovery site. Killed with SIGKILL during
 * the failback, `dr resume` completes it without redoing what finished.
 */

import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

import Database from "better-sqlite3";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

import { freePort } from "../helpers/services.js";
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
  mode: string;
  status: string;
  units: Record<string, string>;
  timeline: { id?: string; kind: string; name: string; outcome: string; message: string }[];
  services: Record<string, { pid?: number; log: string }>;
  datasets: { dataset: string; target?: string; snapshot?: string; rpoMs?: number }[];
  failback?: {
    failover: string;
    backups: Record<string, { target: string; snapshot?: string }>;
    places: Record<string, { kind: string; aside?: string }>;
  };
  failedBack?: string;
  failed?: { step: string; message: string; next: string };
}

const BETTER_SQLITE3 = new URL("../../node_modules/better-sqlite3", import.meta.url).pathname;

const SERVER = `
const http = require("node:http");
const Database = require(process.env.BS3);
http.createServer((req, res) => {
  const db = new Database(process.env.DB, { fileMustExist: true });
  if (req.method === "POST") db.prepare("insert into items (name) values (?)").run("order");
  const n = db.prepare("select count(*) as n from items").get().n;
  db.close();
  res.end("items=" + n + " pid=" + process.pid + "\\n");
}).listen(Number(process.env.PORT), "127.0.0.1");
`;

let base: string;
let env: Record<string, string>;
let port: number;
const started: number[] = [];
const prod = () => join(base, "prod");
const drSite = () => join(base, "dr-site");

const cli = (args: string[]): Promise<RunResult> => runCli(args, { env, timeoutMs: 240_000 });

async function writeConfig(name: string, extra = ""): Promise<string> {
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
${extra}    services:
      db:
        restore: [{ dataset: db, source: shop, to: { sqlite: ${drSite()}/shop.sqlite } }]
        health: [{ type: sql, sqlite: ${drSite()}/shop.sqlite, query: "select count(*) > 0 from items", expect: "1", retries: 0 }]
      web:
        dependsOn: [db]
        restore: [{ dataset: web, to: { directory: ${drSite()}/files } }]
        start:
          command: [node, ${drSite()}/files${web}/server.js]
          setEnv: { DB: ${drSite()}/shop.sqlite, PORT: "${port}", BS3: ${BETTER_SQLITE3} }
        health: [{ type: http, url: "http://127.0.0.1:${port}/", body: "items=", retries: 50, intervalSeconds: 0.1 }]
`,
  );
  return file;
}

async function ask(method = "GET"): Promise<string> {
  return (await (await fetch(`http://127.0.0.1:${port}/`, { method })).text()).trim();
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function killAll(): void {
  for (const pid of started.splice(0)) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // gone
    }
  }
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

/** The disaster, then a failover to the recovery site, where the app takes one order. */
async function failOver(config: string): Promise<RunJson & { items: number }> {
  killAll();
  await rm(prod(), { recursive: true, force: true });
  await rm(drSite(), { recursive: true, force: true });
  await rm(join(base, "local"), { recursive: true, force: true });
  const args = ["--json", "dr", "failover", "shop", "-c", config, "--yes"];
  const r = await cli(args);
  const json = parse(args, r);
  keep(json);
  expect(r.code, describeRun(args, r)).toBe(0);
  // The newest snapshot is restored: the first failover's 3 items, or what an earlier failback brought back.
  const before = Number(/^items=(\d+)/.exec(await ask())![1]);
  const items = Number(/^items=(\d+)/.exec(await ask("POST"))![1]);
  expect(items).toBe(before + 1);
  // The primary site is back, with what it had before the disaster: stale, and in the way.
  await writeFiles(prod(), { "shop.sqlite": "stale production data\n" });
  return { ...json, items };
}

beforeAll(async () => {
  base = await makeTempDir("dr-failback");
  env = { BULWARK_CATALOG: join(base, "state", "catalog.db"), HOME: base };
  await writeFile(join(base, "pw"), "dr-failback-password\n");
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

afterEach(() => killAll());

afterAll(async () => {
  killAll();
  await removeTempDirs();
});

describe("bulwark dr failback", () => {
  it("brings the services back to the original places with what they did at the recovery site", async () => {
    const config = await writeConfig("base");
    const failover = await failOver(config);
    const drPid = failover.services.web!.pid!;

    const args = ["--json", "dr", "failback", "shop", "-c", config, "--yes"];
    const r = await cli(args);
    const json = parse(args, r);
    keep(json);
    expect(r.code, describeRun(args, r)).toBe(0);
    expect(json.mode).toBe("failback");
    expect(json.status).toBe("passed");
    expect(json.failback!.failover).toBe(failover.runId);
    expect(json.timeline.map((e) => e.id)).toEqual([
      "stop/web",
      "stop/db",
      "backup/db",
      "backup/web",
      "db/restore/0",
      "db/health/0",
      "web/restore/0",
      "web/start",
      "web/health/0",
    ]);
    // The recovery site's app is stopped; the one at the original place answers, with the order it took.
    expect(alive(drPid)).toBe(false);
    const answer = await ask();
    expect(failover.items).toBe(4);
    expect(answer).toBe(`items=4 pid=${json.services.web!.pid}`);
    // It works on the original database, no longer on the recovery site's.
    expect(await ask("POST")).toBe(`items=5 pid=${json.services.web!.pid}`);
    const count = (file: string): unknown => {
      const db = new Database(file, { readonly: true });
      try {
        return db.prepare("select count(*) as n from items").get();
      } finally {
        db.close();
      }
    };
    expect(count(join(prod(), "shop.sqlite"))).toEqual({ n: 5 });
    expect(count(join(drSite(), "shop.sqlite"))).toEqual({ n: 4 });
    expect(await readFile(join(prod(), "web", "server.js"), "utf8")).toBe(SERVER);
    // The stale data was put aside, not overwritten; the recovery site's data is left as it was.
    const aside = json.failback!.places[join(prod(), "shop.sqlite")]!.aside!;
    expect(aside).toBe(join(prod(), `shop.sqlite.before-failback-${json.runId}`));
    expect(await readFile(aside, "utf8")).toBe("stale production data\n");
    expect(json.failback!.places[join(prod(), "web")]).toEqual({ kind: "directory" });

    // The failback snapshots are the datasets' own: the original paths, on the copy the failover used.
    expect(Object.keys(json.failback!.backups).sort()).toEqual(["db", "web"]);
    const list = ["--json", "snapshots", "-c", config, "-r", "offsite", "--tag", "failback"];
    const snaps = await cli(list);
    expect(snaps.code, describeRun(list, snaps)).toBe(0);
    const shown = (JSON.parse(snaps.stdout) as { id: string; paths: string[]; dataset?: string }[])
      .map((s) => [s.dataset, s.paths])
      .sort();
    expect(shown).toEqual([
      ["db", ["/sources/shop.sqlite"]],
      ["web", [join(prod(), "web")]],
    ]);
    expect(json.datasets.every((d) => d.rpoMs === 0)).toBe(true);

    // Recorded: the failover says it was failed back; a second failback is refused.
    const status = await cli(["--json", "dr", "status", failover.runId]);
    expect((JSON.parse(status.stdout) as RunJson).failedBack).toBe(json.runId);
    const list2 = await cli(["dr", "status"]);
    expect(list2.stdout).toContain(`${json.runId}  failback  passed`);
    const again = await cli(["dr", "failback", failover.runId, "-c", config]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`has a failback already: run ${json.runId} (passed)`);
    // The report an auditor reads: what was backed up from the recovery site, and what was put aside.
    const report = await cli(["report", "dr", "--runbook", "shop", "--mode", "failback", "-c", config]);
    expect(report.code, report.stderr).toBe(0);
    expect(report.stdout).toContain("DR failback of shop: PASS");
    expect(report.stdout).toContain(`failover run ${failover.runId}`);
    expect(report.stdout).toContain("Snapshots made from the recovery site");
    expect(report.stdout).toContain(json.failback!.backups.db!.snapshot!);
    expect(report.stdout).toContain(`${join(prod(), "shop.sqlite")} -\\> ${aside}`);
    expect(report.stdout).toContain(`sqlite ${join(prod(), "shop.sqlite")}`);
    const chain = await cli(["catalog", "verify-chain"]);
    expect(chain.code, chain.stdout + chain.stderr).toBe(0);
  });

  it("killed with SIGKILL mid-failback, dr resume completes it without redoing finished units", async () => {
    const config = await writeConfig("slow", "    after: [{ type: wait, seconds: 1 }]\n");
    const { items } = await failOver(config);
    const slow = await writeConfig("slow", "    after: [{ type: wait, seconds: 1 }]\n");
    const { child, result } = spawnNode([CLI, "--json", "dr", "failback", "shop", "-c", slow, "--yes"], {
      env,
    });
    // Wait until the database is back at its place and the app is being restored, then kill the orchestrator.
    let runId: string | undefined;
    for (let i = 0; i < 300; i++) {
      const list = await cli(["--json", "dr", "status"]);
      const runs = JSON.parse(list.stdout || "[]") as { runId: string; mode: string; status: string }[];
      runId = runs.find((x) => x.mode === "failback" && x.status === "running")?.runId;
      if (runId !== undefined) {
        const s = JSON.parse((await cli(["--json", "dr", "status", runId])).stdout) as RunJson;
        if (s.units["db/health/0"] === "passed") break;
      }
      await new Promise((res) => setTimeout(res, 50));
    }
    expect(runId).toBeDefined();
    child.kill("SIGKILL");
    await result;
    const killed = JSON.parse((await cli(["--json", "dr", "status", runId!])).stdout) as RunJson;
    expect(killed.status).toBe("running");
    expect(killed.units).toMatchObject({
      "stop/web": "passed",
      "backup/db": "passed",
      "db/restore/0": "passed",
    });

    const args = ["--json", "dr", "resume", runId!, "-c", slow, "--yes"];
    const r = await cli(args);
    const json = parse(args, r);
    keep(json);
    expect(r.code, describeRun(args, r)).toBe(0);
    expect(json.status).toBe("passed");
    const ids = json.timeline.map((e) => e.id!);
    for (const id of ["stop/web", "stop/db", "backup/db", "backup/web", "db/restore/0", "after/0"])
      expect(
        ids.filter((x) => x === id),
        id,
      ).toHaveLength(1);
    expect(await ask()).toMatch(new RegExp(`^items=${items} `));
    expect(await readFile(join(prod(), `shop.sqlite.before-failback-${runId}`), "utf8")).toBe(
      "stale production data\n",
    );
  }, 240_000);

  it("refuses an unknown run, and a runbook changed since the failover", async () => {
    const config = await writeConfig("base");
    const none = await cli(["dr", "failback", "nosuchrun", "-c", config]);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain('no DR run "nosuchrun" in the catalog');
    const failover = await failOver(config);
    const changed = await cli([
      "dr",
      "failback",
      failover.runId,
      "-c",
      await writeConfig("other", "    after: [{ type: wait, seconds: 0.1 }]\n"),
    ]);
    expect(changed.code).toBe(1);
    expect(changed.stderr).toContain(`runbook shop changed since failover ${failover.runId}`);
    // Nothing was touched: the recovery site still serves.
    expect(await ask()).toBe(`items=${failover.items} pid=${failover.services.web!.pid}`);
  });
});
