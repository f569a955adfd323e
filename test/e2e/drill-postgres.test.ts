/**
 * `bulwark drill` of a dataset with a PostgreSQL source, through the built CLI against a real PostgreSQL:
 * the dump of the snapshot is restored into a throwaway cluster (never into the server it came from) and the
 * validator's queries run there; a query with a wrong expected result fails the drill with both values.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { postgresAvailable, startTestPostgres, type TestPostgres } from "../sources/pg-helpers.js";
import { describeRun, makeTempDir, removeTempDirs, runCli } from "./helpers.js";

/** Its own port: test files run in parallel, each with its own cluster. */
const PG_PORT = process.env.BULWARK_TEST_PG_DRILL_PORT ?? "55438";
const DB = `drill_shop_${Date.now().toString(36)}`;
const available = postgresAvailable();

let pg: TestPostgres;
let base: string;
let env: Record<string, string | undefined>;

async function config(name: string, expect: string): Promise<string> {
  const file = join(base, `${name}.yaml`);
  await writeFile(
    file,
    `version: 1
targets:
  local: { location: ${base}/repo, labels: { medium: disk, site: home, failureDomain: a }, password: { file: ${base}/pw } }
datasets:
  shop:
    sources:
      - type: postgres
        name: shopdb
        database: ${DB}
        host: ${pg.env.PGHOST}
        port: ${pg.env.PGPORT}
        user: ${pg.env.PGUSER}
        password: { env: BULWARK_TEST_PGPASSWORD }
    drill:
      validators:
        - type: postgres
          source: shopdb
          queries:
            - { sql: "SELECT count(*), sum(cents) FROM orders", expect: "${expect}" }
          timeoutSeconds: 240
policies:
  p: { rule: { copies: 1 }, rpo: 24h }
jobs:
  j: { dataset: shop, policy: p, primary: local }
`,
  );
  return file;
}

beforeAll(async () => {
  if (!available) return;
  base = await makeTempDir("drill-pg");
  await writeFile(join(base, "pw"), "drill-pg-password\n");
  pg = startTestPostgres("drill", PG_PORT);
  pg.psql("postgres", `CREATE DATABASE ${DB}`);
  pg.psql(
    DB,
    "CREATE TABLE orders (id serial PRIMARY KEY, cents integer NOT NULL); " +
      "INSERT INTO orders (cents) SELECT i FROM generate_series(1, 300) AS i;",
  );
  env = {
    ...pg.env,
    BULWARK_CATALOG: join(base, "catalog.db"),
    HOME: base,
  };
  const file = await config("good", "300|45150");
  const r = await runCli(["run", "-c", file, "--init"], { env });
  expect(r.code, describeRun(["run"], r)).toBe(0);
}, 300_000);
afterAll(async () => {
  await removeTempDirs();
  if (available) {
    pg?.psql("postgres", `DROP DATABASE IF EXISTS ${DB}`);
    pg?.stop();
  }
});

describe.skipIf(!available)("bulwark drill with PostgreSQL", () => {
  it("restores the dump into a throwaway cluster and runs the queries there", async () => {
    const file = join(base, "good.yaml");
    const r = await runCli(["--json", "drill", "-c", file], { env });
    expect(r.code, describeRun(["drill"], r)).toBe(0);
    const d = (
      JSON.parse(r.stdout) as {
        drills: { status: string; validators: { ok: boolean; message: string; output: string }[] }[];
      }
    ).drills[0]!;
    expect(d.status).toBe("pass");
    expect(d.validators[0]!.message).toBe("restored into a throwaway cluster (1 table); 1 check passed");
    expect(d.validators[0]!.output).toBe('ok: SELECT count(*), sum(cents) FROM orders -> "300|45150"');
    // The production server was not written to: no scratch database was left on it.
    expect(
      pg.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'bulwark_validate_%'"),
    ).toBe("0");
  }, 300_000);

  it("a query with a wrong result fails the drill, naming both values", async () => {
    const file = await config("wrong", "301|45150");
    const r = await runCli(["--json", "drill", "-c", file], { env });
    expect(r.code).toBe(1);
    const d = (JSON.parse(r.stdout) as { drills: { status: string; findings: string[] }[] }).drills[0]!;
    expect(d.status).toBe("fail");
    expect(d.findings).toEqual([
      'validator postgres shopdb: restored into a throwaway cluster (1 table); SELECT count(*), sum(cents) FROM orders: expected "301|45150", got "300|45150"',
    ]);
  }, 300_000);
});
