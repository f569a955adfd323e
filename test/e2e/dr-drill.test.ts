/**
 * `bulwark dr drill` through the built CLI, while production runs: a runbook of two services, a SQLite
 * database (restored from a sqlite source) and a small HTTP app (restored from files) that reads it and
 * depends on it. Production serves the same app on the same port from the live database, which has changed
 * since the backup (4 items, the snapshot has 3). The drill's check expects the snapshot's 3 items, so it
 * passes only when it reached the recovered app, running on the recovered data: as root in a network
 * namespace on the production port, otherwise (and with --no-isolation) on a remapped port. Afterwards the
 * production data, files and app are unchanged, and nothing is left: no namespace, no process, no sandbox.
 * A failing health check stops the drill with the step, its output and what to do next. The passing drill
 * is recorded and makes posture's DR row pass until the runbook changes.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

import Database from "better-sqlite3";
import { freePort } from "../helpers/services.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  CLI,
  describeRun,
  makeTempDir,
  removeTempDirs,
  randomData,
  runCli,
  spawnNode,
  writeFiles,
  type RunResult,
} from "./helpers.js";

interface DrillJson {
  status: string;
  plan: { estimateMs?: number; waves: { services: { datasets: { estimateBasis?: string }[] }[] }[] };
  isolation: { netns: boolean; note: string; ports: Record<string, number> };
  timeline: {
    service?: string;
    kind: string;
    name: string;
    outcome: string;
    message: string;
    output?: string;
  }[];
  rtoMs?: number;
  rtoTargetMs?: number;
  datasets: { dataset: string; target?: string; snapshot?: string; rpoMs?: number }[];
  failed?: { service?: string; step: string; message: string; output?: string; next: string };
  leftovers: string[];
}

const BETTER_SQLITE3 = new URL("../../node_modules/better-sqlite3", import.meta.url).pathname;
/** Whether this machine gives a drill a network namespace (root, iproute2, a kernel that allows it). */
const canNetns = ((): boolean => {
  if (process.getuid?.() !== 0) return false;
  const name = `bulwark-probe-${process.pid}`;
  const added = spawnSync("ip", ["netns", "add", name]).status === 0;
  if (added) spawnSync("ip", ["netns", "delete", name]);
  return added;
})();

let base: string;
let env: Record<string, string>;
let port: number;
let production: ChildProcess;
const prod = () => join(base, "prod");

const cli = (args: string[]): Promise<RunResult> => runCli(args, { env, timeoutMs: 240_000 });

/** The app: answers "items=N" from the database DB; listens on PORT, or on the port a drill remapped it to. */
const SERVER = `
const http = require("node:http");
const Database = require(process.env.BS3);
const port = Number(process.env["BULWARK_DR_PORT_" + process.env.PORT] || process.env.PORT);
http.createServer((req, res) => {
  const db = new Database(process.env.DB, { readonly: true, fileMustExist: true });
  const n = db.prepare("select count(*) as n from items").get().n;
  db.close();
  res.end("items=" + n + "\\n");
}).listen(port, "127.0.0.1");
`;

async function writeConfig(name: string, expectBody = "items=3", rto = "10m", after = ""): Promise<string> {
  const file = join(base, `${name}.yaml`);
  const target = (t: string, fd: string) =>
    `  ${t}: { location: ${base}/${t}, labels: { medium: disk, site: ${t}, failureDomain: ${fd} }, password: { file: ${base}/pw } }`;
  const web = join(prod(), "web");
  await writeFile(
    file,
    `version: 1
targets:
${target("one", "d1")}
${target("two", "d2")}
datasets:
  web: { sources: [{ type: files, paths: ["${web}"] }] }
  db: { sources: [{ type: sqlite, name: shop, path: ${prod()}/shop.sqlite }] }
policies:
  p: { rule: { copies: 2, disasterRecovery: true }, rpo: 24h, productionCounts: false, drills: { every: 7d, runbookEvery: 30d } }
jobs:
  web: { dataset: web, policy: p, primary: one, copies: [two] }
  db: { dataset: db, policy: p, primary: one, copies: [two] }
runbooks:
  shop:
    rto: ${rto}
    services:
      db:
        restore: [{ dataset: db, source: shop, to: { sqlite: ${prod()}/shop.sqlite } }]
        health: [{ type: sql, sqlite: ${prod()}/shop.sqlite, query: "select count(*) from items", expect: "3", retries: 0 }]
      web:
        dependsOn: [db]
        restore: [{ dataset: web, to: { directory: ${prod()}/recovered } }]
        start:
          command: [node, ${prod()}/recovered${web}/server.js]
          setEnv: { DB: ${prod()}/shop.sqlite, PORT: "${port}", BS3: ${BETTER_SQLITE3} }
        health: [{ type: http, url: "http://127.0.0.1:${port}/", body: "${expectBody}", retries: ${expectBody === "items=3" ? 50 : 5}, intervalSeconds: 0.1, timeoutSeconds: 2 }]
${after}`,
  );
  return file;
}

async function drill(config: string, extra: string[] = []): Promise<{ r: RunResult; json: DrillJson }> {
  const args = [
    "--json",
    "dr",
    "drill",
    "shop",
    "-c",
    config,
    "--sandbox",
    join(base, "sandboxes"),
    ...extra,
  ];
  const r = await cli(args);
  try {
    return { r, json: JSON.parse(r.stdout) as DrillJson };
  } catch {
    throw new Error(describeRun(args, r));
  }
}

async function answer(): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/`);
  return (await res.text()).trim();
}

async function expectNothingLeft(): Promise<void> {
  expect(await readdir(join(base, "sandboxes"))).toEqual([]);
  if (canNetns) {
    const namespaces = execFileSync("ip", ["netns", "list"], { encoding: "utf8" });
    expect(namespaces).not.toMatch(/bulwark-dr-/);
  }
  const ps = execFileSync("ps", ["-eo", "args"], { encoding: "utf8" });
  expect(ps).not.toContain(join(base, "sandboxes"));
  // Production is untouched: its data, its files, its app.
  const db = new Database(join(prod(), "shop.sqlite"), { readonly: true });
  expect(db.prepare("select count(*) as n from items").get()).toEqual({ n: 4 });
  db.close();
  expect(await readdir(prod())).toEqual(["shop.sqlite", "web"]);
  expect(await answer()).toBe("items=4");
}

beforeAll(async () => {
  base = await makeTempDir("dr-drill");
  env = { BULWARK_CATALOG: join(base, "state", "catalog.db"), HOME: base };
  await writeFile(join(base, "pw"), "dr-drill-password\n");
  // Data enough that restoring it, not the jitter of a check's retries, is most of the recovery time.
  await writeFiles(join(prod(), "web"), { "server.js": SERVER, "assets.bin": randomData(48 * 1024 * 1024) });
  await mkdir(join(base, "sandboxes"));
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
  // Production moves on after the backup, and serves on the runbook's port.
  const live = new Database(join(prod(), "shop.sqlite"));
  live.exec("INSERT INTO items (name) VALUES ('d')");
  live.close();
  production = spawn(process.execPath, [join(prod(), "web", "server.js")], {
    env: {
      PATH: process.env.PATH ?? "",
      DB: join(prod(), "shop.sqlite"),
      PORT: String(port),
      BS3: BETTER_SQLITE3,
    },
    stdio: "ignore",
  });
  for (let i = 0; i < 50; i++) {
    try {
      if ((await answer()) === "items=4") break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  expect(await answer()).toBe("items=4");
}, 300_000);

afterAll(async () => {
  production?.kill("SIGKILL");
  await removeTempDirs();
});

describe("bulwark dr drill", () => {
  it("recovers both services in order beside production, passes their checks, and leaves nothing behind", async () => {
    const config = await writeConfig("base");
    const { r, json } = await drill(config);
    expect(r.code, describeRun(["dr", "drill"], r) + JSON.stringify(json.timeline, null, 2)).toBe(0);
    expect(json.status).toBe("pass");
    expect(json.isolation.netns).toBe(canNetns);
    if (canNetns) expect(json.isolation.ports).toEqual({});
    // In order: db restored and checked before web is restored and started.
    const order = json.timeline.filter((e) => e.kind !== "stop").map((e) => `${e.service}:${e.kind}`);
    expect(order).toEqual(["db:restore", "db:health", "web:restore", "web:start", "web:health"]);
    expect(json.timeline.every((e) => e.kind === "stop" || e.outcome === "passed")).toBe(true);
    expect(json.rtoMs).toBeGreaterThan(0);
    expect(json.rtoMs!).toBeLessThan(json.rtoTargetMs!);
    expect(json.datasets.map((d) => d.dataset).sort()).toEqual(["db", "web"]);
    expect(json.leftovers).toEqual([]);
    await expectNothingLeft();

    const human = await cli(["dr", "drill", "shop", "-c", config, "--sandbox", join(base, "sandboxes")]);
    expect(human.code, human.stdout + human.stderr).toBe(0);
    expect(human.stdout).toMatch(/dr drill of shop passed: recovered in .* against an RTO of 10m: within/);
    await expectNothingLeft();
  });

  it("with --no-isolation, runs on remapped ports, says so, and still never touches production", async () => {
    const config = await writeConfig("base");
    const { r, json } = await drill(config, ["--no-isolation"]);
    expect(r.code, describeRun(["dr", "drill"], r)).toBe(0);
    expect(json.isolation.netns).toBe(false);
    expect(json.isolation.note).toMatch(/without network isolation .* remapped ports/);
    expect(Object.keys(json.isolation.ports)).toEqual([String(port)]);
    expect(json.isolation.ports[String(port)]).not.toBe(port);
    await expectNothingLeft();
  });

  it("a failing health check stops the drill with the step, its output and what to do next", async () => {
    const config = await writeConfig("failing", "items=99");
    const { r, json } = await drill(config);
    expect(r.code).toBe(1);
    expect(json.status).toBe("fail");
    expect(json.failed).toMatchObject({ service: "web", step: `health http http://127.0.0.1:${port}/` });
    expect(json.failed!.message).toContain('"items=99"');
    expect(json.failed!.output).toContain("items=3");
    expect(json.failed!.next).toMatch(/fix web or its check, then run bulwark dr drill shop again/);
    await expectNothingLeft();
    const human = await cli(["dr", "drill", "shop", "-c", config, "--sandbox", join(base, "sandboxes")]);
    expect(human.code).toBe(1);
    expect(human.stdout).toContain(`dr drill of shop FAILED at web: health http http://127.0.0.1:${port}/`);
    expect(human.stdout).toContain("next: ");
    await expectNothingLeft();
  });

  it("a passing drill makes posture's DR row pass, until the runbook changes", async () => {
    const config = await writeConfig("posture");
    const { r } = await drill(config);
    expect(r.code).toBe(0);
    const dr = async (file: string) => {
      const p = await cli(["--json", "posture", "-c", file, "db"]);
      const json = JSON.parse(p.stdout) as {
        datasets: { rows: { id: string; status: string; reason?: string }[] }[];
      };
      return json.datasets[0]!.rows.find((row) => row.id === "dr")!;
    };
    expect((await dr(config)).status).toBe("pass");
    // The plan made before this drill estimated from the drills before it: within 2x of what it measured.
    const { json } = await drill(config);
    expect(json.status).toBe("pass");
    expect(
      json.plan.waves.flatMap((w) => w.services.flatMap((s) => s.datasets.map((d) => d.estimateBasis))),
    ).toEqual(["dr drill", "dr drill"]);
    const ratio = json.plan.estimateMs! / json.rtoMs!;
    expect(ratio, `estimate ${json.plan.estimateMs} ms, measured ${json.rtoMs} ms`).toBeGreaterThanOrEqual(
      0.5,
    );
    expect(ratio, `estimate ${json.plan.estimateMs} ms, measured ${json.rtoMs} ms`).toBeLessThanOrEqual(2);
    const changed = await writeConfig("posture", "items=3", "20m");
    const row = await dr(changed);
    expect(row.status).toBe("fail");
    expect(row.reason).toBe("runbook shop changed since its last DR drill");
    const chain = await cli(["catalog", "verify-chain"]);
    expect(chain.code, chain.stdout + chain.stderr).toBe(0);
  });

  it("a drill killed with SIGKILL leaves its services and namespace; the next drill removes them and passes", async () => {
    // A wait after the app is up, so the kill lands while everything runs.
    const slow = await writeConfig(
      "slow",
      "items=3",
      "10m",
      "        after: [{ type: wait, seconds: 60 }]\n",
    );
    const { child, result } = spawnNode(
      [CLI, "dr", "drill", "shop", "-c", slow, "--sandbox", join(base, "sandboxes")],
      {
        env,
      },
    );
    const sandboxes = join(base, "sandboxes");
    // The recovered app: node running server.js from under a sandbox (not the CLI, whose arguments name it too).
    const running = (): boolean =>
      execFileSync("ps", ["-eo", "args"], { encoding: "utf8" })
        .split("\n")
        .some((l) => l.includes(`${sandboxes}/bulwark-dr-`) && l.endsWith("server.js"));
    for (let i = 0; i < 300 && !running(); i++) await new Promise((r) => setTimeout(r, 100));
    expect(running()).toBe(true);
    child.kill("SIGKILL");
    await result;
    // Left behind: the recovered app, its sandbox and (as root) its namespace.
    expect(running()).toBe(true);
    expect((await readdir(sandboxes)).length).toBe(1);
    if (canNetns) expect(execFileSync("ip", ["netns", "list"], { encoding: "utf8" })).toMatch(/bulwark-dr-/);
    const { r, json } = await drill(await writeConfig("base"));
    expect(r.code, describeRun(["dr", "drill"], r)).toBe(0);
    expect((json as DrillJson & { leftoversRemoved: string[] }).leftoversRemoved.join("\n")).toMatch(
      /sandbox /,
    );
    if (canNetns) {
      expect((json as DrillJson & { leftoversRemoved: string[] }).leftoversRemoved.join("\n")).toMatch(
        /network namespace bulwark-dr-\d+-[0-9a-f]+ \(\d+ process/,
      );
    }
    expect(r.stderr).toContain("removed what an interrupted drill left");
    await expectNothingLeft();
  });
});
