/**
 * A real PostgreSQL 15 for the tests: the cluster of scripts/services/postgres.sh, started on its own data
 * directory and port unless PGHOST is already set (a cluster the developer or test.sh started). Under CI=true
 * a missing PostgreSQL fails (haveTool), it never skips. The password is kept out of the programs'
 * environment: tests pass it by reference (the variable BULWARK_TEST_PGPASSWORD), as users do.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { haveTool } from "./helpers.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const SCRIPT = join(ROOT, "scripts", "services", "postgres.sh");

export interface TestPostgres {
  /** The environment reaching the server (PGHOST, PGPORT, PGUSER), the password only by reference. */
  env: NodeJS.ProcessEnv;
  /** The reference to the password. */
  password: { env: string };
  /** `postgresql://user@host:port/DB`, without the password. */
  url(db: string): string;
  /** Runs SQL with psql, returns its trimmed -At output. */
  psql(db: string, sql: string): string;
  /** The environment with PGPASSWORD, for the test's own programs (psql, pgbench). */
  pgEnv(): NodeJS.ProcessEnv;
  stop(): void;
}

/** PostgreSQL is there, or can be installed and started by the service script (root only). */
export function postgresAvailable(): boolean {
  if (process.env.PGHOST !== undefined) return haveTool("psql");
  if (process.getuid?.() === 0) return true; // the script installs what is missing
  return haveTool("pg_dump") && haveTool("pgbench") && haveTool("psql");
}

/**
 * Starts the test cluster (or uses PGHOST's). `port` must differ between test files that run at the same
 * time, and from 55432, where `postgres.sh up` puts a developer's cluster.
 */
export function startTestPostgres(label: string, port: string): TestPostgres {
  const ownCluster = process.env.PGHOST === undefined;
  const dir = join(tmpdir(), `bulwark-pg-${label}-${process.pid}`);
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (ownCluster) {
    const out = execFileSync("bash", [SCRIPT, "up"], {
      env: { ...process.env, PG_DIR: dir, PG_PORT: port },
      encoding: "utf8",
      stdio: ["ignore", "pipe", "inherit"],
    });
    const exports = /export (.*)$/m.exec(out)?.[1] ?? "";
    for (const pair of exports.split(" ")) {
      const [k, v] = pair.split("=");
      if (k && v !== undefined) env[k] = v;
    }
  }
  env.BULWARK_TEST_PGPASSWORD = env.PGPASSWORD;
  delete env.PGPASSWORD;
  const pgEnv = (): NodeJS.ProcessEnv => ({ ...env, PGPASSWORD: env.BULWARK_TEST_PGPASSWORD });
  return {
    env,
    password: { env: "BULWARK_TEST_PGPASSWORD" },
    url: (db) => `postgresql://${env.PGUSER}@${env.PGHOST}:${env.PGPORT}/${db}`,
    psql: (db, sql) =>
      execFileSync("psql", ["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql], {
        env: pgEnv(),
        encoding: "utf8",
      }).trim(),
    pgEnv,
    stop: () => {
      if (ownCluster)
        execFileSync("bash", [SCRIPT, "down"], { env: { ...process.env, PG_DIR: dir }, stdio: "inherit" });
    },
  };
}

/** pgbench's invariant: accounts, tellers, branches and history sums, as "a|t|b|h". */
export const PGBENCH_INVARIANT = `SELECT (SELECT sum(abalance) FROM pgbench_accounts) || '|' || (SELECT sum(tbalance) FROM pgbench_tellers)
  || '|' || (SELECT sum(bbalance) FROM pgbench_branches) || '|' || (SELECT coalesce(sum(delta), 0) FROM pgbench_history)`;

/** Creates `db`, initialises it for pgbench at `scale`, and starts pgbench writing to it (stop with kill). */
export async function startPgbench(pg: TestPostgres, db: string, scale = 2): Promise<ChildProcess> {
  pg.psql("postgres", `CREATE DATABASE ${db}`);
  execFileSync("pgbench", ["-i", "-q", "-s", String(scale), db], { env: pg.pgEnv(), stdio: "ignore" });
  const bench = spawn("pgbench", ["-n", "-c", "4", "-j", "2", "-T", "600", db], {
    env: pg.pgEnv(),
    stdio: "ignore",
  });
  await waitFor(() => Number(pg.psql(db, "SELECT count(*) FROM pgbench_history")) > 500);
  return bench;
}

export async function waitFor(cond: () => boolean, timeoutMs = 60_000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 100));
  }
}
