/**
 * A config dataset with a PostgreSQL source in the directory format (pg_dump -Fd -j 3), backed up while
 * pgbench writes, into a repository on disk through planDatasetBackup/runWithDatasetHooks (what `bulwark run`
 * calls), then restored by the real CLI: `restore --to-postgres --pg-jobs 2` into a new database whose pgbench
 * invariant holds and whose history matches the dump's moment. Also compares the time of a single-process
 * custom-format dump with the parallel one (printed, not asserted: it depends on the machine).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { LocalBackend } from "../../src/backend/local/local-backend.js";
import { resolveConfig } from "../../src/config/load.js";
import { Repository } from "../../src/repository/repository.js";
import { WorkerPool } from "../../src/repository/worker-pool.js";
import { backup } from "../../src/snapshot/archiver.js";
import { runWithDatasetHooks } from "../../src/sources/dataset.js";
import {
  PGBENCH_INVARIANT,
  postgresAvailable,
  startPgbench,
  startTestPostgres,
  type TestPostgres,
} from "../sources/pg-helpers.js";
import { TestRepo, describeRun, makeTempDir, removeTempDirs } from "./helpers.js";

/** Its own port: test files run in parallel, each with its own cluster. */
const PG_PORT = process.env.BULWARK_TEST_PG_E2E_PORT ?? "55434";
/** Short: a long mix of letters and digits in the config would look like an inline secret. */
const RUN = Date.now().toString(36);
const BENCH = `e2e_bench_${RUN}`;
const RESTORED = `e2e_restored_${RUN}`;
const available = postgresAvailable();

let pg: TestPostgres;
let base: string;
let repo: TestRepo;

beforeAll(async () => {
  base = await makeTempDir("sources-pg");
  repo = await TestRepo.init(join(base, "repo"));
  if (available) pg = startTestPostgres("e2e", PG_PORT);
}, 300_000);
afterAll(async () => {
  await removeTempDirs();
  if (available) pg?.stop();
});

/** The dataset `db` of a config whose only source is `source` (YAML, indented as a list item). */
function dataset(source: string) {
  const text = `version: 1
targets:
  local:
    location: ${repo.dir}
    labels: { medium: disk, site: home, failureDomain: a }
datasets:
  db:
    hooks: { before: "echo freeze", after: "echo thaw" }
    sources:
${source}
policies:
  p: { rule: { copies: 1 }, rpo: 24h }
jobs:
  j: { dataset: db, policy: p, primary: local }
`;
  const r = resolveConfig(text, "bulwark.yaml", { env: pg.env, fileReadable: () => true });
  expect(r.errors).toEqual([]);
  return r.config!.datasets.db!;
}

/** Backs the dataset up into the repository on disk; returns the snapshot id and how long it took. */
async function backUp(source: string): Promise<{ id: string; ms: number; log: string[] }> {
  const opened = await Repository.open(await LocalBackend.open(repo.dir), repo.password);
  await opened.loadIndex();
  const pool = new WorkerPool(opened, 2);
  const log: string[] = [];
  try {
    const started = Date.now();
    const { id } = await runWithDatasetHooks(
      dataset(source),
      pg.env,
      (plan) => backup(opened, pool, { paths: plan.paths, virtualFiles: plan.virtualFiles, dataset: "db" }),
      (line) => log.push(line),
    );
    return { id, ms: Date.now() - started, log };
  } finally {
    await pool.close();
  }
}

const connection = (): string => `
        host: ${pg.env.PGHOST}
        port: ${pg.env.PGPORT}
        user: ${pg.env.PGUSER}
        password: { env: BULWARK_TEST_PGPASSWORD }`;

describe.skipIf(!available)("a directory-format PostgreSQL dump through restore --to-postgres", () => {
  it("backed up with -j 3 while pgbench runs, restored with -j 2: the invariant holds", async () => {
    let bench: ChildProcess | undefined;
    try {
      bench = await startPgbench(pg, BENCH, 5);
      const historyBefore = Number(pg.psql(BENCH, "SELECT count(*) FROM pgbench_history"));
      const parallel = await backUp(`      - type: postgres
        name: bench
        database: ${BENCH}${connection()}
        format: directory
        jobs: 3`);
      const historyAfter = Number(pg.psql(BENCH, "SELECT count(*) FROM pgbench_history"));
      expect(historyAfter).toBeGreaterThan(historyBefore);
      expect(parallel.log).toEqual(["hook before of dataset db: freeze", "hook after of dataset db: thaw"]);

      const snapshots = await repo.snapshots();
      expect(snapshots.find((s) => s.id === parallel.id)?.paths).toEqual([
        "/sources/bench/db.dir",
        "/sources/bench/globals.sql",
      ]);
      const check = await repo.run(["check", "--read-data"]);
      expect(check.code, describeRun(["check"], check)).toBe(0);

      const args = [
        "restore",
        parallel.id.slice(0, 8),
        "--source-path",
        "/sources/bench",
        "--to-postgres",
        pg.url(RESTORED),
        "--pg-password-env",
        "PG_TEST_PASSWORD",
        "--pg-jobs",
        "2",
      ];
      const restored = await repo.run(args, {
        env: { PG_TEST_PASSWORD: pg.env.BULWARK_TEST_PGPASSWORD, PGPASSWORD: undefined },
      });
      expect(restored.code, describeRun(args, restored)).toBe(0);
      expect(restored.stdout).toMatch(/pg_restore ran with 2 jobs/);
      expect(restored.stdout).toMatch(/public\.pgbench_accounts: 500000 rows/);
      const history = Number(/public\.pgbench_history: (\d+) rows/.exec(restored.stdout)?.[1]);
      expect(history).toBeGreaterThanOrEqual(historyBefore);
      expect(history).toBeLessThanOrEqual(historyAfter);
      const [a, t, b, h] = pg.psql(RESTORED, PGBENCH_INVARIANT).split("|");
      expect([a, t, b], "accounts, tellers, branches = history").toEqual([h, h, h]);

      // The same through the command line: backup --source postgres: --pg-format directory --pg-jobs 2.
      const cliEnv = { PG_TEST_PASSWORD: pg.env.BULWARK_TEST_PGPASSWORD, PGPASSWORD: undefined };
      const cliBackup = [
        "backup",
        "--source",
        `postgres:cli=${pg.url(BENCH)}`,
        "--pg-password-env",
        "PG_TEST_PASSWORD",
        "--pg-format",
        "directory",
        "--pg-jobs",
        "2",
      ];
      const backedUp = await repo.run(cliBackup, { env: cliEnv });
      expect(backedUp.code, describeRun(cliBackup, backedUp)).toBe(0);
      const cliRestore = [
        "restore",
        "latest",
        "--source-path",
        "/sources/cli",
        "--to-postgres",
        pg.url(`${RESTORED}_cli`),
        "--pg-password-env",
        "PG_TEST_PASSWORD",
      ];
      const cliRestored = await repo.run(cliRestore, { env: cliEnv });
      expect(cliRestored.code, describeRun(cliRestore, cliRestored)).toBe(0);
      const [a2, t2, b2, h2] = pg.psql(`${RESTORED}_cli`, PGBENCH_INVARIANT).split("|");
      expect([a2, t2, b2]).toEqual([h2, h2, h2]);

      // The same database with one pg_dump process and the custom format, for comparison.
      const single = await backUp(`      - type: postgres
        name: single
        database: ${BENCH}${connection()}`);
      console.log(
        `pgbench scale 5 under load: custom format (1 process) ${single.ms} ms, directory format -j 3 ${parallel.ms} ms`,
      );
    } finally {
      bench?.kill("SIGTERM");
    }
  });
});
