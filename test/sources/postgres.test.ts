/**
 * Against a real PostgreSQL 15: the cluster of scripts/services/postgres.sh (started here, on its own data
 * directory and port, unless PGHOST is already set). Under CI=true a missing PostgreSQL fails these tests.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, type ChildProcess } from "node:child_process";
import { chmod, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { backup } from "../../src/snapshot/archiver.js";
import { loadTree } from "../../src/snapshot/walker.js";
import { findNode, readSnapshotFile } from "../../src/sources/command.js";
import { withHooks } from "../../src/sources/hooks.js";
import { startThrowawayCluster } from "../../src/sources/pg-cluster.js";
import { postgresSource, restorePostgres, validatePostgres } from "../../src/sources/postgres.js";
import { memoryRepository, snapshotCount, type TestRepository } from "./helpers.js";
import {
  PGBENCH_INVARIANT as INVARIANT,
  postgresAvailable,
  startPgbench,
  startTestPostgres,
  type TestPostgres,
} from "./pg-helpers.js";

/** Not 55432, where `postgres.sh up` puts a developer's cluster: the tests' own cluster must not collide. */
const PG_PORT = process.env.BULWARK_TEST_PG_PORT ?? "55433";
/** Database names of this run: a reused server (PGHOST set) may hold those of earlier runs. */
const RUN = `${process.pid}_${Date.now().toString(36)}`;
const BENCH = `bench_${RUN}`;
const BENCH_RESTORED = `bench_restored_${RUN}`;
const SMALL = `small_${RUN}`;
const SMALL_COPY = `small_copy_${RUN}`;
const PARALLEL = `parallel_${RUN}`;
const PARALLEL_RESTORED = `parallel_restored_${RUN}`;
const ALL_A = `all_a_${RUN}`;
const ALL_ODD = `all odd/${RUN}`;

const available = postgresAvailable();

let pg: TestPostgres;
let env: NodeJS.ProcessEnv;
let t: TestRepository;
let dir: string;

beforeAll(async () => {
  t = await memoryRepository();
  dir = await mkdtemp(join(tmpdir(), "bulwark-pg-work-"));
  if (!available) return;
  pg = startTestPostgres("test", PG_PORT);
  env = pg.env;
}, 300_000);

afterAll(async () => {
  await t?.close();
  await rm(dir, { recursive: true, force: true });
  if (available) pg?.stop();
});

const psql = (db: string, sql: string): string => pg.psql(db, sql);
const url = (db: string): string => pg.url(db);
const password = { env: "BULWARK_TEST_PGPASSWORD" };

describe.skipIf(!available)("postgres source", () => {
  it("a backup taken while pgbench runs restores into a new database whose pgbench invariant holds", async () => {
    let bench: ChildProcess | undefined;
    try {
      bench = await startPgbench(pg, BENCH);
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

describe.skipIf(!available)("postgres source, directory format and every database", () => {
  it("pg_dump -Fd -j 3 while pgbench runs: files under db.dir/, temp directory gone, pg_restore -j restores it consistently", async () => {
    const temp = await mkdtemp(join(dir, "dump-temp-"));
    let bench: ChildProcess | undefined;
    try {
      bench = await startPgbench(pg, PARALLEL);
      const historyBefore = Number(psql(PARALLEL, "SELECT count(*) FROM pgbench_history"));
      const result = await backup(t.repo, t.pool, {
        paths: [],
        virtualFiles: postgresSource({
          name: "parallel",
          url: url(PARALLEL),
          password,
          env,
          format: "directory",
          jobs: 3,
          tempDir: temp,
        }),
      });
      const historyAfter = Number(psql(PARALLEL, "SELECT count(*) FROM pgbench_history"));
      expect(historyAfter).toBeGreaterThan(historyBefore);
      expect(result.snapshot.paths).toEqual(["/sources/parallel/db.dir", "/sources/parallel/globals.sql"]);
      expect(await readdir(temp)).toEqual([]); // the private copy is gone
      // One data file per table with rows, beside the table of contents.
      const dumpDir = await findNode(t.repo, result.snapshot.tree, "/sources/parallel/db.dir");
      const names = (await loadTree(t.repo, dumpDir.subtree!)).map((n) => n.name);
      expect(names).toContain("toc.dat");
      expect(names.filter((n) => /^\d+\.dat(\.gz)?$/.test(n)).length).toBeGreaterThanOrEqual(4);

      const lines: string[] = [];
      const report = await restorePostgres(t.repo, result.snapshot, "/sources/parallel", {
        target: url(PARALLEL_RESTORED),
        password,
        env,
        jobs: 2,
        tempDir: temp,
        log: (l) => lines.push(l),
      });
      expect(lines).toContain("pg_restore ran with 2 jobs");
      expect(await readdir(temp)).toEqual([]);
      const rows = Object.fromEntries(report.tables.map((r) => [r.table, r.rows]));
      expect(rows).toMatchObject({ "public.pgbench_accounts": 200000, "public.pgbench_branches": 2 });
      const history = rows["public.pgbench_history"]!;
      expect(history).toBeGreaterThanOrEqual(historyBefore);
      expect(history).toBeLessThanOrEqual(historyAfter);
      const [a, tl, b, h] = psql(PARALLEL_RESTORED, INVARIANT).split("|");
      expect([a, tl, b]).toEqual([h, h, h]);
    } finally {
      bench?.kill("SIGTERM");
    }
  });

  it("a failing directory-format dump fails the backup and leaves no temporary directory", async () => {
    const temp = await mkdtemp(join(dir, "dump-temp-"));
    const before = await snapshotCount(t.repo);
    await expect(
      backup(t.repo, t.pool, {
        paths: [],
        virtualFiles: postgresSource({
          name: "gone",
          url: url("does_not_exist"),
          password,
          env,
          format: "directory",
          jobs: 2,
          globals: false,
          tempDir: temp,
        }),
      }),
    ).rejects.toThrow(
      /pg_dump of source gone exited with code 1[\s\S]*database "does_not_exist" does not exist/,
    );
    expect(await readdir(temp)).toEqual([]);
    expect(await snapshotCount(t.repo)).toBe(before);
    expect(() => postgresSource({ name: "x", url: url("x"), env, jobs: 2 })).toThrow(/directory format/);
  });

  it("all: every database one after the other under databases/, each restorable with the globals two levels up", async () => {
    psql("postgres", `CREATE DATABASE ${ALL_A}`);
    psql(ALL_A, "CREATE TABLE a (x int); INSERT INTO a SELECT generate_series(1, 100)");
    psql("postgres", `CREATE DATABASE "${ALL_ODD}"`);
    psql(ALL_ODD, "CREATE TABLE odd (y text); INSERT INTO odd VALUES ('one'), ('two')");
    for (const format of ["custom", "directory"] as const) {
      const result = await backup(t.repo, t.pool, {
        paths: [],
        virtualFiles: postgresSource({
          name: "cluster",
          url: url("postgres"),
          password,
          env,
          all: true,
          format,
        }),
      });
      expect(result.snapshot.paths).toEqual(["/sources/cluster/databases", "/sources/cluster/globals.sql"]);
      const databases = await findNode(t.repo, result.snapshot.tree, "/sources/cluster/databases");
      const names = (await loadTree(t.repo, databases.subtree!)).map((n) => n.name);
      const odd = encodeURIComponent(ALL_ODD);
      expect(names).toEqual(expect.arrayContaining(["postgres", ALL_A, odd]));
      expect(names).not.toContain("template0");
      expect(names).not.toContain("template1");
      const dump = format === "custom" ? "db.pgdump" : "db.dir";
      await findNode(t.repo, result.snapshot.tree, `/sources/cluster/databases/${odd}/${dump}`);

      const target = `${ALL_A}_${format}_restored`;
      const lines: string[] = [];
      const report = await restorePostgres(t.repo, result.snapshot, `/sources/cluster/databases/${ALL_A}`, {
        target: url(target),
        password,
        env,
        globals: true, // found at /sources/cluster/globals.sql
        log: (l) => lines.push(l),
      });
      expect(report.tables).toEqual([{ table: "public.a", rows: 100 }]);
      // globals.sql was read from /sources/cluster/ (a missing one fails the restore); its roles exist here.
      expect(lines[0]).toBe(`created database ${target}`);
      const oddReport = await restorePostgres(t.repo, result.snapshot, `/sources/cluster/databases/${odd}`, {
        target: url(`odd_${format}_${RUN}`),
        password,
        env,
      });
      expect(oddReport.tables).toEqual([{ table: "public.odd", rows: 2 }]);
    }
  });

  it("restore names what is missing when the path holds no dump", async () => {
    const result = await backup(t.repo, t.pool, {
      paths: [],
      virtualFiles: postgresSource({ name: "one", url: url(ALL_A), password, env, globals: false }),
    });
    await expect(
      restorePostgres(t.repo, result.snapshot, "/sources", { target: url(`nothing_${RUN}`), password, env }),
    ).rejects.toThrow(/\/sources holds no PostgreSQL dump \(db\.pgdump or db\.dir\/\)/);
  });
});

describe.skipIf(!available)("validatePostgres in a throwaway cluster", () => {
  let snapshot: { tree: string };
  beforeAll(async () => {
    await chmod(dir, 0o755); // as root, the cluster runs as another user, who must reach its directory
    const db = `validate_${RUN}`;
    psql("postgres", `CREATE DATABASE ${db}`);
    psql(
      db,
      "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g",
    );
    ({ snapshot } = await backup(t.repo, t.pool, {
      paths: [],
      virtualFiles: postgresSource({ name: "v", url: url(db), password, env, format: "directory", jobs: 2 }),
    }));
  });

  const clusterTemp = async (): Promise<string> => {
    const temp = await mkdtemp(join(dir, "cluster-"));
    await chmod(temp, 0o755);
    return temp;
  };

  /** Postmasters whose data directory is below `parent` (ps), to prove none is left running. */
  const postmastersBelow = (parent: string): string[] =>
    execFileSync("ps", ["-eo", "args"], { encoding: "utf8" })
      .split("\n")
      .filter((l) => l.includes(parent) && /postgres|postmaster/.test(l));

  it("starts a cluster, restores, runs the checks, stops it and removes its directory", async () => {
    const temp = await clusterTemp();
    const pass = await validatePostgres(t.repo, snapshot, "/sources/v", {
      cluster: { tempDir: temp },
      env,
      checks: [
        { sql: "SELECT count(*) FROM items", expect: "1000" },
        { sql: "SELECT name FROM items WHERE id = 7", expect: "item 7" },
        { sql: "SELECT current_setting('listen_addresses')", expect: "127.0.0.1" },
      ],
    });
    expect(pass, JSON.stringify(pass, null, 2)).toMatchObject({ ok: true });
    expect(pass.restore?.tables).toEqual([{ table: "public.items", rows: 1000 }]);
    expect(await readdir(temp)).toEqual([]);
    expect(postmastersBelow(temp)).toEqual([]);

    const fail = await validatePostgres(t.repo, snapshot, "/sources/v", {
      cluster: { tempDir: temp },
      env,
      checks: [
        { sql: "SELECT count(*) FROM items", expect: "999" },
        { sql: "SELECT nonsense FROM items", expect: "x" },
      ],
    });
    expect(fail.ok).toBe(false);
    expect(fail.checks[0]).toMatchObject({ ok: false, expected: "999", actual: "1000" });
    expect(fail.checks[1]!.actual).toMatch(/^error: .*column "nonsense" does not exist/s);
    expect(await readdir(temp)).toEqual([]);
    expect(postmastersBelow(temp)).toEqual([]);
  });

  it("a restore that fails or a validation past its timeout still stops the cluster and removes it", async () => {
    const temp = await clusterTemp();
    await expect(
      validatePostgres(t.repo, snapshot, "/sources/not-there", {
        cluster: { tempDir: temp },
        env,
        checks: [],
      }),
    ).rejects.toThrow(/\/sources\/not-there holds no PostgreSQL dump/);
    expect(await readdir(temp)).toEqual([]);

    const started = Date.now();
    await expect(
      validatePostgres(t.repo, snapshot, "/sources/v", {
        cluster: { tempDir: temp },
        env,
        checks: [{ sql: "SELECT pg_sleep(60)", expect: "" }],
        timeoutMs: 8000,
      }),
    ).rejects.toThrow(/did not finish within 8 s/);
    expect(Date.now() - started).toBeLessThan(40_000);
    expect(await readdir(temp)).toEqual([]);
    expect(postmastersBelow(temp)).toEqual([]);
  });

  it("a cluster that cannot start says why (the server's log) and leaves nothing behind", async () => {
    const temp = await clusterTemp();
    await expect(
      startThrowawayCluster({ tempDir: temp, settings: { shared_buffers: "'lots'" } }),
    ).rejects.toThrow(
      /pg_ctl start of the throwaway cluster exited with code 1[\s\S]*server log:[\s\S]*shared_buffers/,
    );
    expect(await readdir(temp)).toEqual([]);
    expect(postmastersBelow(temp)).toEqual([]);
    await expect(startThrowawayCluster({ tempDir: temp, bindir: temp })).rejects.toThrow(
      /holds no initdb and pg_ctl/,
    );
    if (process.getuid?.() === 0) {
      await expect(startThrowawayCluster({ tempDir: temp, runAs: "no-such-user-here" })).rejects.toThrow(
        /no user to run the throwaway cluster as/,
      );
    }
    expect(await readdir(temp)).toEqual([]);
  });

  it("the scratch-database mode on a configured server drops its database after a timeout", async () => {
    const before = psql(
      "postgres",
      "SELECT count(*) FROM pg_database WHERE datname LIKE 'bulwark_validate_%'",
    );
    await expect(
      validatePostgres(t.repo, snapshot, "/sources/v", {
        server: url("postgres"),
        password,
        env,
        checks: [{ sql: "SELECT pg_sleep(60)", expect: "" }],
        timeoutMs: 3000,
      }),
    ).rejects.toThrow(/did not finish within 3 s/);
    expect(psql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'bulwark_validate_%'")).toBe(
      before,
    );
  });
});
