/**
 * Against a real PostgreSQL 15: the cluster of scripts/services/postgres.sh (started here, on its own data
 * directory and port, unless PGHOST is already set). Under CI=true a missing PostgreSQL fails these tests.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { backup } from "../../src/snapshot/archiver.js";
import { withHooks } from "../../src/sources/hooks.js";
import { postgresSource, restorePostgres, validatePostgres } from "../../src/sources/postgres.js";
import { readSnapshotFile } from "../../src/sources/command.js";
import { haveTool, memoryRepository, snapshotCount, type TestRepository } from "./helpers.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const SCRIPT = join(ROOT, "scripts", "services", "postgres.sh");
const ownCluster = process.env.PGHOST === undefined;
const PG_DIR = join(tmpdir(), `bulwark-pg-test-${process.pid}`);
/** Not 55432, where `postgres.sh up` puts a developer's cluster: the tests' own cluster must not collide. */
const PG_PORT = process.env.BULWARK_TEST_PG_PORT ?? "55433";
/** Database names of this run: a reused server (PGHOST set) may hold those of earlier runs. */
const RUN = `${process.pid}_${Date.now().toString(36)}`;
const BENCH = `bench_${RUN}`;
const BENCH_RESTORED = `bench_restored_${RUN}`;
const SMALL = `small_${RUN}`;
const SMALL_COPY = `small_copy_${RUN}`;

/** PostgreSQL is there, or can be installed and started by the service script (root only). */
function postgresAvailable(): boolean {
  if (!ownCluster) return haveTool("psql");
  if (process.getuid?.() === 0) return true; // the script installs what is missing
  return haveTool("pg_dump") && haveTool("pgbench") && haveTool("psql");
}
const available = postgresAvailable();

const env: NodeJS.ProcessEnv = { ...process.env };
let t: TestRepository;
let dir: string;

beforeAll(async () => {
  t = await memoryRepository();
  dir = await mkdtemp(join(tmpdir(), "bulwark-pg-work-"));
  if (!available) return;
  if (ownCluster) {
    const out = execFileSync("bash", [SCRIPT, "up"], {
      env: { ...process.env, PG_DIR, PG_PORT },
      encoding: "utf8",
      stdio: ["ignore", "pipe", "inherit"],
    });
    const exports = /export (.*)$/m.exec(out)?.[1] ?? "";
    for (const pair of exports.split(" ")) {
      const [k, v] = pair.split("=");
      if (k && v !== undefined) env[k] = v;
    }
  }
  // The password goes by reference: tests pass the variable's name, never the value.
  env.BULWARK_TEST_PGPASSWORD = env.PGPASSWORD;
  delete env.PGPASSWORD;
}, 300_000);

afterAll(async () => {
  await t?.close();
  await rm(dir, { recursive: true, force: true });
  if (available && ownCluster)
    execFileSync("bash", [SCRIPT, "down"], { env: { ...process.env, PG_DIR }, stdio: "inherit" });
});

const pgEnv = (): NodeJS.ProcessEnv => ({ ...env, PGPASSWORD: env.BULWARK_TEST_PGPASSWORD });
const psql = (db: string, sql: string): string =>
  execFileSync("psql", ["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql], {
    env: pgEnv(),
    encoding: "utf8",
  }).trim();
const url = (db: string): string => `postgresql://${env.PGUSER}@${env.PGHOST}:${env.PGPORT}/${db}`;
const password = { env: "BULWARK_TEST_PGPASSWORD" };

const INVARIANT = `SELECT (SELECT sum(abalance) FROM pgbench_accounts) || '|' || (SELECT sum(tbalance) FROM pgbench_tellers)
  || '|' || (SELECT sum(bbalance) FROM pgbench_branches) || '|' || (SELECT coalesce(sum(delta), 0) FROM pgbench_history)`;

describe.skipIf(!available)("postgres source", () => {
  it("a backup taken while pgbench runs restores into a new database whose pgbench invariant holds", async () => {
    psql("postgres", `CREATE DATABASE ${BENCH}`);
    execFileSync("pgbench", ["-i", "-q", "-s", "2", BENCH], { env: pgEnv(), stdio: "ignore" });
    let bench: ChildProcess | undefined;
    try {
      bench = spawn("pgbench", ["-n", "-c", "4", "-j", "2", "-T", "600", BENCH], {
        env: pgEnv(),
        stdio: "ignore",
      });
      await waitFor(() => Number(psql(BENCH, "SELECT count(*) FROM pgbench_history")) > 500);
      const historyBefore = Number(psql(BENCH, "SELECT count(*) FROM pgbench_history"));
      const result = await backup(t.repo, t.pool, {
        paths: [],
        virtualFiles: postgresSource({ name: "bench", url: url(BENCH), password, env }),
      });
      const historyAfter = Number(psql(BENCH, "SELECT count(*) FROM pgbench_history"));
      expect(historyAfter).toBeGreaterThan(historyBefore); // pgbench really wrote during the backup
      expect(result.snapshot.paths).toEqual(["/sources/bench/db.pgdump", "/sources/bench/globals.sql"]);

      const globals = [];
      for await (const c of readSnapshotFile(t.repo, result.snapshot.tree, "/sources/bench/globals.sql"))
        globals.push(c);
      expect(Buffer.concat(globals).toString()).toMatch(/CREATE ROLE postgres/);

      const report = await restorePostgres(t.repo, result.snapshot, "/sources/bench", {
        target: url(BENCH_RESTORED),
        password,
        env,
      });
      expect(report.database).toBe(BENCH_RESTORED);
      const rows = Object.fromEntries(report.tables.map((r) => [r.table, r.rows]));
      expect(rows).toMatchObject({
        "public.pgbench_accounts": 200000,
        "public.pgbench_branches": 2,
        "public.pgbench_tellers": 20,
      });
      // The dump's moment: some history, between what existed before and after the backup.
      const history = rows["public.pgbench_history"]!;
      expect(history).toBeGreaterThanOrEqual(historyBefore);
      expect(history).toBeLessThanOrEqual(historyAfter);
      const [a, tl, b, h] = psql(BENCH_RESTORED, INVARIANT).split("|");
      expect(a, "accounts = tellers = branches = history").toBe(h);
      expect(tl).toBe(h);
      expect(b).toBe(h);

      // The validator: a scratch database, configured queries with expected results.
      const validation = await validatePostgres(t.repo, result.snapshot, "/sources/bench", {
        server: url("postgres"),
        password,
        env,
        checks: [
          { sql: "SELECT count(*) FROM pgbench_accounts", expect: "200000" },
          {
            sql: `SELECT (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT coalesce(sum(delta), 0) FROM pgbench_history)`,
            expect: "t",
          },
          { sql: "SELECT count(*) FROM pgbench_history", expect: String(history) },
        ],
      });
      expect(validation, JSON.stringify(validation, null, 2)).toMatchObject({ ok: true });
      expect(
        psql("postgres", `SELECT count(*) FROM pg_database WHERE datname = '${validation.database}'`),
      ).toBe("0");
      const failing = await validatePostgres(t.repo, result.snapshot, "/sources/bench", {
        server: url("postgres"),
        password,
        env,
        checks: [{ sql: "SELECT count(*) FROM pgbench_branches", expect: "3" }],
      });
      expect(failing.ok).toBe(false);
      expect(failing.checks[0]).toMatchObject({ expected: "3", actual: "2" });
    } finally {
      bench?.kill("SIGTERM");
    }
  });

  it("restore refuses an existing database", async () => {
    psql("postgres", `CREATE DATABASE ${SMALL}`);
    psql(SMALL, "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2), (3)");
    const result = await backup(t.repo, t.pool, {
      paths: [],
      virtualFiles: postgresSource({ name: "small", url: url(SMALL), password, env, globals: false }),
    });
    await expect(
      restorePostgres(t.repo, result.snapshot, "/sources/small", { target: url(SMALL), password, env }),
    ).rejects.toThrow(new RegExp(`database "${SMALL}" already exists`));
    const report = await restorePostgres(t.repo, result.snapshot, "/sources/small", {
      target: SMALL_COPY,
      password,
      env, // libpq variables (PGHOST, PGPORT, PGUSER) instead of a URL
    });
    expect(report.tables).toEqual([{ table: "public.t", rows: 3 }]);
  });

  it("an unreachable server or a wrong password fails the backup clearly; the after hook runs; no snapshot", async () => {
    const before = await snapshotCount(t.repo);
    const log = join(dir, "after.log");
    await expect(
      withHooks({ after: { command: `echo "after $BULWARK_HOOK_RESULT" > '${log}'` } }, () =>
        backup(t.repo, t.pool, {
          paths: [],
          virtualFiles: postgresSource({
            name: "gone",
            url: "postgresql://postgres@127.0.0.1:1/nothing",
            password,
            env,
          }),
        }),
      ),
    ).rejects.toThrow(
      /pg_dump(all --globals-only)? of source gone exited with code 1[\s\S]*(Connection refused|connection to server)/,
    );
    expect(execFileSync("cat", [log], { encoding: "utf8" })).toBe("after failure\n");

    await writeFile(join(dir, "wrong-password"), "not-the-password\n");
    await expect(
      backup(t.repo, t.pool, {
        paths: [],
        virtualFiles: postgresSource({
          name: "bad",
          url: url(SMALL),
          password: { file: join(dir, "wrong-password") },
          env,
        }),
      }),
    ).rejects.toThrow(/password authentication failed/);
    await expect(
      backup(t.repo, t.pool, {
        paths: [],
        virtualFiles: postgresSource({
          name: "none",
          url: url("does_not_exist"),
          password,
          env,
          globals: false,
        }),
      }),
    ).rejects.toThrow(/database "does_not_exist" does not exist/);
    expect(await snapshotCount(t.repo)).toBe(before);
  });
});

async function waitFor(cond: () => boolean, timeoutMs = 60_000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 100));
  }
}
