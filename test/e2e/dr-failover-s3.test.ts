/**
 * The DR scenario of issue 13 against real servers: a runbook of two services, PostgreSQL and a small HTTP app
 * that reads from it and depends on it, backed up to a local primary and an offsite S3 bucket with Object Lock
 * (Ceph RGW). The primary site is wiped: the app's files, the database (dropped from the server) and the local
 * repository. `bulwark dr failover` restores the database into the server and then the app from the offsite
 * S3 copy (the plan falls back from the lost primary), starts the app, and the checks pass with the app
 * answering from the restored database; the report gives the RTO achieved against the target.
 *
 * Then the primary site comes back with a stale database, and `bulwark dr failback` takes the shop home: the
 * recovery site's app is stopped, the recovered database (with an order taken at the recovery site) is dumped
 * into a new snapshot on the Object Lock bucket, the stale database is renamed aside, the snapshot restored
 * into the original database, and the app started at its original path on the original URL.
 */
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { createLockedBucket, freePort, startService } from "../helpers/services.js";
import { postgresAvailable, startTestPostgres, type TestPostgres } from "../sources/pg-helpers.js";
import { describeRun, makeTempDir, removeTempDirs, runCli, writeFiles, type RunResult } from "./helpers.js";

const PG_PORT = "55449";
if (!postgresAvailable() && process.env.CI === "true") throw new Error("PostgreSQL is needed under CI=true");

/** Answers "items=N" from the database at DBURL (psql; the password from the variable DBPASSWORD_VAR names). */
const SERVER = `
const http = require("node:http");
const { execFileSync } = require("node:child_process");
http.createServer((req, res) => {
  try {
    const n = execFileSync("psql", ["-X", "-At", "-d", process.env.DBURL, "-c", "select count(*) from items"], {
      env: { PATH: process.env.PATH, PGPASSWORD: process.env[process.env.DBPASSWORD_VAR] || "" },
      encoding: "utf8",
    }).trim();
    res.end("items=" + n + "\\n");
  } catch (err) {
    res.statusCode = 500;
    res.end(String(err));
  }
}).listen(Number(process.env.PORT), "127.0.0.1");
`;

let base: string;
let env: Record<string, string | undefined>;
let pg: TestPostgres;
/** The cluster's port: this file's own, or the one scripts/test.sh started for the whole run. */
const pgPort = (): string => pg.env.PGPORT ?? PG_PORT;
let webPort: number;
let s3Location: string;
const pids: number[] = [];

function asideDatabases(): string[] {
  const out = pg.psql(
    "postgres",
    "select datname from pg_database where datname like 'foshop_before_failback_%'",
  );
  return out === "" ? [] : out.split("\n");
}

const cli = (args: string[]): Promise<RunResult> => runCli(args, { env, timeoutMs: 300_000 });

async function writeConfig(): Promise<string> {
  const file = join(base, "bulwark.yaml");
  // The recovery site's database: beside the original in the same server, under its own name.
  const dbUrl = `postgresql://${pg.env.PGUSER}@127.0.0.1:${pgPort()}/foshop_dr`;
  const web = join(base, "prod", "web");
  await writeFile(
    file,
    `version: 1
targets:
  local: { location: ${base}/local, labels: { medium: disk, site: a, failureDomain: a1 }, password: { file: ${base}/pw } }
  offsite:
    location: ${s3Location}
    labels: { medium: object, site: ceph-dc2, offsite: true, failureDomain: dc2, isolation: immutable }
    password: { file: ${base}/pw }
    credentials: { accessKeyId: { env: TEST_OFFSITE_KEY_ID }, secretAccessKey: { env: TEST_OFFSITE_SECRET } }
    immutability: { mode: governance, days: 1 }
datasets:
  shopdb:
    sources: [{ type: postgres, name: shop, database: foshop, host: 127.0.0.1, port: ${pgPort()}, user: ${pg.env.PGUSER}, password: { env: BULWARK_TEST_PGPASSWORD } }]
  web:
    sources: [{ type: files, paths: ["${web}"] }]
policies:
  p: { rule: { copies: 2 }, rpo: 24h, productionCounts: false, immutabilityDays: 1 }
jobs:
  shopdb: { dataset: shopdb, policy: p, primary: local, copies: [offsite] }
  web: { dataset: web, policy: p, primary: local, copies: [offsite] }
runbooks:
  shop:
    rto: 10m
    services:
      db:
        restore: [{ dataset: shopdb, source: shop, to: { postgres: "${dbUrl}", password: { env: BULWARK_TEST_PGPASSWORD } } }]
        health: [{ type: sql, postgres: "${dbUrl}", password: { env: BULWARK_TEST_PGPASSWORD }, query: "select count(*) >= 3 from items", expect: "t", retries: 5 }]
      web:
        dependsOn: [db]
        restore: [{ dataset: web, to: { directory: ${base}/prod/recovered } }]
        start:
          command: [node, ${base}/prod/recovered${web}/server.js]
          env: [BULWARK_TEST_PGPASSWORD]
          setEnv: { DBURL: "${dbUrl}", DBPASSWORD_VAR: BULWARK_TEST_PGPASSWORD, PORT: "${webPort}" }
        health: [{ type: http, url: "http://127.0.0.1:${webPort}/", body: "items=", retries: 50, intervalSeconds: 0.2 }]
`,
  );
  return file;
}

beforeAll(async () => {
  await startService("ceph", "S3_ENDPOINT");
  base = await makeTempDir("dr-failover-s3");
  pg = startTestPostgres("dr-failover", PG_PORT);
  const bucket = await createLockedBucket("bulwark-dr");
  s3Location = `s3:${process.env.S3_ENDPOINT}/${bucket}/foshop`;
  env = {
    TEST_OFFSITE_KEY_ID: process.env.AWS_ACCESS_KEY_ID,
    TEST_OFFSITE_SECRET: process.env.AWS_SECRET_ACCESS_KEY,
    AWS_ACCESS_KEY_ID: undefined,
    AWS_SECRET_ACCESS_KEY: undefined,
    AWS_REQUEST_CHECKSUM_CALCULATION: process.env.AWS_REQUEST_CHECKSUM_CALCULATION,
    AWS_REGION: process.env.AWS_REGION,
    BULWARK_CATALOG: join(base, "state", "catalog.db"),
    BULWARK_TEST_PGPASSWORD: pg.env.BULWARK_TEST_PGPASSWORD,
    HOME: base,
  };
  await writeFile(join(base, "pw"), "dr-failover-s3-password\n");
  await writeFiles(join(base, "prod", "web"), { "server.js": SERVER });
  for (const db of ["foshop", "foshop_dr", ...asideDatabases()])
    pg.psql("postgres", `DROP DATABASE IF EXISTS ${db}`);
  pg.psql("postgres", "CREATE DATABASE foshop");
  pg.psql(
    "foshop",
    "CREATE TABLE items (id serial PRIMARY KEY, name text); INSERT INTO items (name) VALUES ('a'), ('b'), ('c')",
  );
  webPort = await freePort();
  const config = await writeConfig();
  const run = ["run", "--init", "-c", config];
  const r = await cli(run);
  expect(r.code, describeRun(run, r)).toBe(0);
}, 600_000);

afterAll(async () => {
  for (const pid of pids) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // gone
    }
  }
  pg?.stop();
  await removeTempDirs();
});

describe("dr failover from the offsite S3 copy", () => {
  it("with the primary site wiped, brings the database and then the app back; the app answers from the restored database", async () => {
    // The disaster: the app's files, the database and the local repository are gone.
    await rm(join(base, "prod"), { recursive: true, force: true });
    await rm(join(base, "local"), { recursive: true, force: true });
    pg.psql("postgres", "DROP DATABASE foshop");

    const config = await writeConfig();
    const args = ["--json", "dr", "failover", "shop", "-c", config, "--yes"];
    const r = await cli(args);
    const json = JSON.parse(r.stdout) as {
      runId: string;
      status: string;
      timeline: { id?: string; outcome: string }[];
      services: Record<string, { pid?: number }>;
      datasets: { dataset: string; target?: string }[];
      rtoMs?: number;
      rtoTargetMs?: number;
    };
    for (const s of Object.values(json.services)) if (s.pid !== undefined) pids.push(s.pid);
    expect(r.code, describeRun(args, r)).toBe(0);
    expect(json.status).toBe("passed");
    expect(json.datasets).toEqual([
      expect.objectContaining({ dataset: "shopdb", target: "offsite" }),
      expect.objectContaining({ dataset: "web", target: "offsite" }),
    ]);
    expect(json.timeline.map((e) => `${e.id}:${e.outcome}`)).toEqual([
      "db/restore/0:passed",
      "db/health/0:passed",
      "web/restore/0:passed",
      "web/start:passed",
      "web/health/0:passed",
    ]);
    expect(pg.psql("foshop_dr", "select count(*) from items")).toBe("3");
    expect(await (await fetch(`http://127.0.0.1:${webPort}/`)).text()).toBe("items=3\n");
    expect(json.rtoMs!).toBeLessThanOrEqual(json.rtoTargetMs!);

    const human = await cli(["dr", "status", json.runId]);
    expect(human.stdout).toContain(`run ${json.runId} (failover of shop): passed`);
    const log = await readFile(join(base, "state", "dr", json.runId, "web.log"), "utf8");
    expect(log).toBe("");
  });

  it("dr failback takes the shop home: the recovery site's order in the original database, the stale one kept aside", async () => {
    // An order taken at the recovery site; the primary site's server comes back with a stale database.
    pg.psql("foshop_dr", "INSERT INTO items (name) VALUES ('taken at the recovery site')");
    pg.psql("postgres", "CREATE DATABASE foshop");
    pg.psql(
      "foshop",
      "CREATE TABLE items (id serial PRIMARY KEY, name text); INSERT INTO items (name) VALUES ('stale')",
    );

    const config = await writeConfig();
    const args = ["--json", "dr", "failback", "shop", "-c", config, "--yes"];
    const r = await cli(args);
    let json: {
      runId: string;
      status: string;
      timeline: { id?: string; outcome: string }[];
      services: Record<string, { pid?: number }>;
      failback: {
        backups: Record<string, { target: string; snapshot?: string }>;
        places: Record<string, { kind: string; aside?: string }>;
      };
    };
    try {
      json = JSON.parse(r.stdout) as typeof json;
    } catch {
      throw new Error(describeRun(args, r));
    }
    for (const s of Object.values(json.services)) if (s.pid !== undefined) pids.push(s.pid);
    expect(r.code, describeRun(args, r)).toBe(0);
    expect(json.timeline.map((e) => `${e.id}:${e.outcome}`)).toEqual([
      "stop/web:passed",
      "stop/db:passed",
      "backup/shopdb:passed",
      "backup/web:passed",
      "db/restore/0:passed",
      "db/health/0:passed",
      "web/restore/0:passed",
      "web/start:passed",
      "web/health/0:passed",
    ]);
    expect(Object.values(json.failback.backups).map((b) => b.target)).toEqual(["offsite", "offsite"]);
    // The original database holds what the recovery site did; the stale one is kept under another name.
    expect(pg.psql("foshop", "select count(*) from items")).toBe("4");
    const [aside] = asideDatabases();
    expect(Object.values(json.failback.places).find((p) => p.kind === "postgres")?.aside).toBe(aside);
    expect(pg.psql(aside!, "select name from items")).toBe("stale");
    // The app runs from its original path on the original database, not the recovery site's.
    pg.psql("foshop", "INSERT INTO items (name) VALUES ('back home')");
    expect(await (await fetch(`http://127.0.0.1:${webPort}/`)).text()).toBe("items=5\n");
    expect(pg.psql("foshop_dr", "select count(*) from items")).toBe("4");
    const snaps = await cli(["--json", "snapshots", "-c", config, "-r", "offsite", "--tag", "failback"]);
    expect((JSON.parse(snaps.stdout) as { paths: string[] }[]).map((s) => s.paths).sort()).toEqual([
      ["/sources/shop/db.pgdump"],
      [join(base, "prod", "web")],
    ]);
  });
});
