/**
 * `bulwark verify` through the built CLI on a local repository: coverage is remembered in the catalog
 * between runs (a budget of one pack per run advances through the repository, never re-reading a fresh
 * pack), a flipped byte is found and named with its snapshot and file, and bad options are clear errors.
 */
import { stat } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import Database from "better-sqlite3";

import { LocalBackend } from "../../src/backend/local/local-backend.js";
import { systemClock } from "../../src/core/clock.js";
import { backupOperation } from "../../src/ops/backup.js";
import { Repository } from "../../src/repository/repository.js";
import { WorkerPool } from "../../src/repository/worker-pool.js";
import {
  CLI,
  describeRun,
  flipByte,
  makeTempDir,
  packFiles,
  randomData,
  removeTempDirs,
  spawnNode,
  TestRepo,
  writeFiles,
} from "./helpers.js";

interface VerifyJson {
  ok: boolean;
  targets: {
    target: string;
    ok?: boolean;
    errors?: number;
    packsRead?: number;
    plan?: { read: string[]; deferred: number; fresh: number };
    coverage?: { packs: number; covered: number; ratio: number; damaged: number };
    findings?: { pack?: string; snapshots?: string[]; files?: string[]; message: string }[];
    error?: string;
  }[];
}

let repo: TestRepo;
let env: Record<string, string>;
let src: string;

beforeAll(async () => {
  const dir = await makeTempDir("verify");
  env = { BULWARK_CATALOG: join(dir, "state", "catalog.db"), HOME: dir };
  src = join(dir, "src");
  // Several packs: the pack size is 16 MiB by default, so files of 6 MiB of random data fill three or more.
  await writeFiles(src, {
    "a.bin": randomData(6 * 1024 * 1024),
    "b.bin": randomData(6 * 1024 * 1024),
    "c.bin": randomData(6 * 1024 * 1024),
    "d.bin": randomData(6 * 1024 * 1024),
    "small.txt": "hello",
  });
  repo = await TestRepo.init(join(dir, "repo"), { run: { env } });
  await repo.ok(["backup", src], { env });
});
afterAll(removeTempDirs);

describe("bulwark verify", () => {
  it("remembers coverage: runs with a budget of one pack advance through the repository", async () => {
    const packs = await packFiles(repo.dir);
    expect(packs.length).toBeGreaterThanOrEqual(2);
    const seen: string[] = [];
    for (let i = 0; i < packs.length; i++) {
      const r = await repo.json<VerifyJson>(["verify", "--budget", "1B", "--full-every", "30d"], { env });
      expect(r.ok).toBe(true);
      const t = r.targets[0]!;
      expect(t.packsRead).toBe(1);
      seen.push(...t.plan!.read);
    }
    expect(new Set(seen).size).toBe(packs.length);
    const done = await repo.json<VerifyJson>(["verify", "--full-every", "30d"], { env });
    expect(done.targets[0]).toMatchObject({ packsRead: 0, coverage: { covered: packs.length, ratio: 1 } });
    expect(done.targets[0]!.plan!.fresh).toBe(packs.length);
  });

  it("a flipped byte is found, named with its snapshot and file; exit 1", async () => {
    // The largest pack holds file data only (the trees, which the structure pass reads, are in a small one).
    const sizes = await Promise.all(
      (await packFiles(repo.dir)).map(async (p) => [p, (await stat(p)).size] as const),
    );
    const pack = sizes.sort((a, b) => b[1] - a[1])[0]![0];
    await flipByte(pack, 100);
    const args = ["--json", "verify", "--full-every", "30d"];
    const r = await repo.run(args, { env });
    // The damaged pack was read before and is fresh: only a run that reads it again finds it.
    expect(r.code, describeRun(args, r)).toBe(0);
    const all = await repo.run(["--json", "verify"], { env });
    expect(all.code, describeRun(["verify"], all)).toBe(1);
    const json = JSON.parse(all.stdout) as VerifyJson;
    const finding = json.targets[0]!.findings!.find((f) => f.pack !== undefined);
    expect(finding?.snapshots).toHaveLength(1);
    expect(finding?.files?.some((f) => /\.bin$/.test(f))).toBe(true);
    expect(json.targets[0]!.coverage!.damaged).toBe(1);
    // From now on every run reads it again first, period or not.
    const again = await repo.run(["--json", "verify", "--full-every", "30d", "--budget", "1B"], { env });
    expect(again.code).toBe(1);
    const j2 = JSON.parse(again.stdout) as VerifyJson;
    expect(j2.targets[0]!.plan!.read).toEqual([pack.split("/").at(-1)]);
    await flipByte(pack, 100); // undo, for the next test
  });

  it("killed with SIGKILL mid-run, it keeps what it read; the next run reads exactly the rest", async () => {
    // Through the library: 1 MiB packs, so a run reads dozens of them and a kill lands between two.
    const dir = await makeTempDir("verify-kill");
    const backend = await LocalBackend.create(join(dir, "repo"));
    const lib = await Repository.init(backend, repo.password, { packSize: 1024 * 1024 });
    const pool = new WorkerPool(lib);
    const root = join(dir, "src");
    const files: Record<string, Buffer> = {};
    for (let i = 0; i < 40; i++) files[`f${i}.bin`] = randomData(1024 * 1024);
    await writeFiles(root, files);
    try {
      await backupOperation({
        repo: lib,
        pool,
        clock: systemClock,
        what: { kind: "paths", paths: [root], virtualFiles: [], excludes: [], excludeFiles: [] },
        env: {},
        hostname: "h",
      });
    } finally {
      await pool.close();
      await backend.close();
    }
    const killed = new TestRepo(join(dir, "repo"), repo.passwordFile, repo.password);
    const total = (await packFiles(killed.dir)).length;
    expect(total).toBeGreaterThanOrEqual(30);
    const recorded = (): number => {
      const db = new Database(join(dir, "state", "catalog.db"), { readonly: true });
      try {
        return (db.prepare("SELECT count(*) AS n FROM pack_reads").get() as { n: number }).n;
      } finally {
        db.close();
      }
    };
    const killEnv = { BULWARK_CATALOG: join(dir, "state", "catalog.db"), HOME: dir };
    // Kill as soon as a few packs are recorded, well before the run could end.
    const args = ["-r", killed.dir, "-p", killed.passwordFile, "verify", "--full-every", "30d"];
    const { child, result } = spawnNode([CLI, ...args], { env: killEnv });
    const started = Date.now();
    for (;;) {
      await new Promise((r) => setTimeout(r, 5));
      let n = 0;
      try {
        n = recorded();
      } catch {
        // the catalog or its table does not exist yet
      }
      if (n >= 3 || Date.now() - started > 60_000) break;
    }
    child.kill("SIGKILL");
    const r = await result;
    const kept = recorded();
    expect(r.signal, describeRun(args, r)).toBe("SIGKILL");
    expect(kept).toBeGreaterThanOrEqual(3);
    expect(kept).toBeLessThan(total);
    const next = await killed.json<VerifyJson>(["verify", "--full-every", "30d"], { env: killEnv });
    expect(next.ok).toBe(true);
    expect(next.targets[0]!.packsRead).toBe(total - kept);
    expect(next.targets[0]!.plan!.fresh).toBe(kept);
    expect(next.targets[0]!.coverage).toMatchObject({ packs: total, covered: total, ratio: 1 });
  });

  it("bad options are clear errors", async () => {
    const budget = await repo.run(["verify", "--budget", "lots"], { env });
    expect(budget.code).toBe(1);
    expect(budget.stderr).toMatch(/--budget lots: "lots" is neither a size .* nor a duration/);
    const period = await repo.run(["verify", "--full-every", "30x"], { env });
    expect(period.stderr).toMatch(/--full-every 30x: unknown unit "x"/);
  });
});
