/**
 * `bulwark dr drill` of a runbook with PostgreSQL and a small HTTP app that reads from it and depends on it,
 * against a real PostgreSQL (production) and while production's app serves on the same port. The database is
 * restored into a throwaway cluster where the runbook's URL points as the services see it (in the drill's
 * network namespace on production's port; otherwise on a remapped one); the app answers from the restored
 * data (3 items, where production now has 4). Production's database and app are unchanged afterwards, and no
 * cluster, namespace, process or sandbox is left.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { freePort } from "../helpers/services.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { postgresAvailable, startTestPostgres, type TestPostgres } from "../sources/pg-helpers.js";
import { describeRun, makeTempDir, removeTempDirs, runCli, writeFiles, type RunResult } from "./helpers.js";

interface DrillJson {
  status: string;
  isolation: { netns: boolean };
  timeline: { service?: string; kind: string; name: string; outcome: string; message: string }[];
  failed?: { step: string; message: string; output?: string };
  leftovers: string[];
}

const PG_PORT = "55448";
const available = postgresAvailable();
if (!available && process.env.CI === "true")
  throw new Error("PostgreSQL is needed for this test under CI=true");

/** Answers "items=N" from the database at DBURL (psql, with the password the variable DBPASSWORD_VAR names). */
const SERVER = `
const http = require("node:http");
const { execFileSync } = require("node:child_process");
const port = Number(process.env["BULWARK_DR_PORT_" + process.env.PORT] || process.env.PORT);
const url = new URL(process.env.DBURL);
url.port = process.env["BULWARK_DR_PORT_" + url.port] || url.port;
http.createServer((req, res) => {
  try {
    const n = execFileSync("psql", ["-X", "-At", "-d", url.toString(), "-c", "select count(*) from items"], {
      env: { PATH: process.env.PATH, PGPASSWORD: process.env[process.env.DBPASSWORD_VAR] || "" },
      encoding: "utf8",
    }).trim();
    res.end("items=" + n + "\\n");
  } catch (err) {
    res.statusCode = 500;
    res.end(String(err));
  }
}).listen(port, "127.0.0.1");
`;

let base: string;
let env: Record<string, string>;
let pg: TestPostgres;
/** The cluster's port: this file's own, or the one scripts/test.sh started for the whole run. */
const pgPort = (): string => pg.env.PGPORT ?? PG_PORT;
let webPort: number;
let production: ChildProcess | undefined;

const cli = (args: string[]): Promise<RunResult> => runCli(args, { env, timeoutMs: 300_000 });

async function answer(): Promise<string> {
  return (await (await fetch(`http://127.0.0.1:${webPort}/`)).text()).trim();
}

async function writeConfig(): Promise<string> {
  const file = join(base, "bulwark.yaml");
  const dbUrl = `postgresql://${pg.env.PGUSER}@127.0.0.1:${pgPort()}/drshop`;
  const web = join(base, "prod", "web");
  const target = (t: string, fd: string) =>
    `  ${t}: { location: ${base}/${t}, labels: { medium: disk, site: ${t}, failureDomain: ${fd} }, password: { file: ${base}/pw } }`;
  await writeFile(
    file,
    `version: 1
targets:
${target("one", "d1")}
${target("two", "d2")}
datasets:
  shopdb:
    sources: [{ type: postgres, name: shop, database: drshop, host: 127.0.0.1, port: ${pgPort()}, user: ${pg.env.PGUSER}, password: { env: BULWARK_TEST_PGPASSWORD } }]
  web:
    sources: [{ type: files, paths: ["${web}"] }]
policies:
  p: { rule: { copies: 2 }, rpo: 24h, productionCounts: false }
jobs:
  shopdb: { dataset: shopdb, policy: p, primary: one, copies: [two] }
  web: { dataset: web, policy: p, primary: one, copies: [two] }
runbooks:
  shop:
    rto: 10m
    services:
      db:
        restore: [{ dataset: shopdb, source: shop, to: { postgres: "${dbUrl}", password: { env: BULWARK_TEST_PGPASSWORD } } }]
        health: [{ type: sql, postgres: "${dbUrl}", password: { env: BULWARK_TEST_PGPASSWORD }, query: "select count(*) from items", expect: "3", retries: 10, intervalSeconds: 0.5 }]
      web:
        dependsOn: [db]
        restore: [{ dataset: web, to: { directory: ${base}/prod/recovered } }]
        start:
          command: [node, ${base}/prod/recovered${web}/server.js]
          env: [BULWARK_TEST_PGPASSWORD]
          setEnv: { DBURL: "${dbUrl}", DBPASSWORD_VAR: BULWARK_TEST_PGPASSWORD, PORT: "${webPort}" }
        health: [{ type: http, url: "http://127.0.0.1:${webPort}/", body: "items=3", retries: 40, intervalSeconds: 0.25 }]
`,
  );
  return file;
}

beforeAll(async () => {
  if (!available) return;
  base = await makeTempDir("dr-drill-pg");
  pg = startTestPostgres("dr-drill", PG_PORT);
  env = {
    BULWARK_CATALOG: join(base, "state", "catalog.db"),
    HOME: base,
    BULWARK_TEST_PGPASSWORD: pg.env.BULWARK_TEST_PGPASSWORD ?? "",
  };
  await writeFile(join(base, "pw"), "dr-drill-pg-password\n");
  await writeFiles(join(base, "prod", "web"), { "server.js": SERVER });
  await mkdir(join(base, "sandboxes"));
  pg.psql("postgres", "DROP DATABASE IF EXISTS drshop");
  pg.psql("postgres", "CREATE DATABASE drshop");
  pg.psql(
    "drshop",
    "CREATE TABLE items (id serial PRIMARY KEY, name text); INSERT INTO items (name) VALUES ('a'), ('b'), ('c')",
  );
  webPort = await freePort();
  const config = await writeConfig();
  const run = ["run", "--init", "-c", config];
  const r = await cli(run);
  expect(r.code, describeRun(run, r)).toBe(0);
  pg.psql("drshop", "INSERT INTO items (name) VALUES ('d')");
  production = spawn(process.execPath, [join(base, "prod", "web", "server.js")], {
    env: {
      PATH: process.env.PATH ?? "",
      DBURL: `postgresql://${pg.env.PGUSER}@127.0.0.1:${pgPort()}/drshop`,
      DBPASSWORD_VAR: "P",
      P: pg.env.BULWARK_TEST_PGPASSWORD ?? "",
      PORT: String(webPort),
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
  pg?.stop();
  await removeTempDirs();
});

describe.skipIf(!available)("bulwark dr drill with PostgreSQL", () => {
  it("restores the database into a throwaway cluster where the app finds it, beside production, and leaves nothing", async () => {
    const config = await writeConfig();
    const args = ["--json", "dr", "drill", "shop", "-c", config, "--sandbox", join(base, "sandboxes")];
    const r = await cli(args);
    const json = JSON.parse(r.stdout) as DrillJson;
    expect(r.code, describeRun(args, r)).toBe(0);
    expect(json.status).toBe("pass");
    expect(
      json.timeline.filter((e) => e.kind !== "stop").map((e) => `${e.service}:${e.kind}:${e.outcome}`),
    ).toEqual([
      "db:restore:passed",
      "db:health:passed",
      "web:restore:passed",
      "web:start:passed",
      "web:health:passed",
    ]);
    expect(json.leftovers).toEqual([]);
    // Production: its database and its app are as they were.
    expect(pg.psql("drshop", "select count(*) from items")).toBe("4");
    expect(await answer()).toBe("items=4");
    // Nothing left: sandbox, cluster, namespace, processes.
    expect(await readdir(join(base, "sandboxes"))).toEqual([]);
    const ps = execFileSync("ps", ["-eo", "args"], { encoding: "utf8" });
    expect(ps).not.toMatch(/bulwark-pgcluster-/);
    expect(ps).not.toContain(join(base, "sandboxes"));
    if (json.isolation.netns) {
      expect(execFileSync("ip", ["netns", "list"], { encoding: "utf8" })).not.toMatch(/bulwark-dr-/);
    }
  });

  it("with --no-isolation, the cluster and the app run on remapped ports, and production is still untouched", async () => {
    const config = await writeConfig();
    const args = [
      "--json",
      "dr",
      "drill",
      "shop",
      "-c",
      config,
      "--sandbox",
      join(base, "sandboxes"),
      "--no-isolation",
    ];
    const r = await cli(args);
    expect(r.code, describeRun(args, r)).toBe(0);
    expect((JSON.parse(r.stdout) as DrillJson).isolation.netns).toBe(false);
    expect(pg.psql("drshop", "select count(*) from items")).toBe("4");
    expect(await answer()).toBe("items=4");
    expect(await readdir(join(base, "sandboxes"))).toEqual([]);
    expect(execFileSync("ps", ["-eo", "args"], { encoding: "utf8" })).not.toMatch(/bulwark-pgcluster-/);
  });
});
