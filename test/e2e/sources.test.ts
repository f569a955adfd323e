/**
 * Sources end to end: a snapshot made by the library with command and sqlite sources, in a repository on
 * disk, is accepted by the real CLI: `check --read-data` finds it sound, `snapshots` lists its paths, and `restore`
 * writes the stored outputs back as ordinary files. (The `--source` options are registered by the backup
 * command; until then the backup itself runs through the library here.)
 */
import { execFileSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalBackend } from "../../src/backend/local/local-backend.js";
import { Repository } from "../../src/repository/repository.js";
import { WorkerPool } from "../../src/repository/worker-pool.js";
import { backup } from "../../src/snapshot/archiver.js";
import { sourcesFromFlags } from "../../src/cli/sources-options.js";
import { haveTool } from "../sources/helpers.js";
import { TestRepo, describeRun, makeTempDir, removeTempDirs } from "./helpers.js";

let base: string;
let repo: TestRepo;
const sqliteAvailable = haveTool("sqlite3", "sqlite3");

beforeAll(async () => {
  base = await makeTempDir("sources");
  repo = await TestRepo.init(join(base, "repo"));
});
afterAll(removeTempDirs);

describe.skipIf(!sqliteAvailable)("sources through the CLI", () => {
  it("a library backup of sources restores with the CLI and passes check --read-data", async () => {
    const db = join(base, "app.db");
    execFileSync("sqlite3", [
      db,
      "CREATE TABLE t (x); INSERT INTO t SELECT value FROM generate_series(1, 1000);",
    ]);
    await writeFile(join(base, "plain.txt"), "plain\n");
    const opened = await Repository.open(await LocalBackend.open(repo.dir), repo.password);
    await opened.loadIndex();
    const pool = new WorkerPool(opened, 2);
    let id: string;
    try {
      const { virtualFiles } = sourcesFromFlags({
        source: ["command:numbers=seq 1 100000", `sqlite:app=${db}`],
      });
      ({ id } = await backup(opened, pool, { paths: [join(base, "plain.txt")], virtualFiles }));
    } finally {
      await pool.close();
    }
    const check = await repo.run(["check", "--read-data"]);
    expect(check.code, describeRun(["check"], check)).toBe(0);
    const snapshots = await repo.snapshots();
    expect(snapshots.find((s) => s.id === id)?.paths).toEqual(
      [join(base, "plain.txt"), "/sources/app.sqlite", "/sources/numbers"].sort(),
    );

    const target = join(base, "restored");
    await repo.ok(["restore", id.slice(0, 8), "--target", target]);
    const numbers = await readFile(join(target, "sources", "numbers"), "utf8");
    expect(numbers).toBe(Array.from({ length: 100000 }, (_, i) => `${i + 1}\n`).join(""));
    expect(await readFile(join(target, base, "plain.txt"), "utf8")).toBe("plain\n");
    const count = execFileSync("sqlite3", [join(target, "sources", "app.sqlite"), "SELECT count(*) FROM t"], {
      encoding: "utf8",
    });
    expect(count.trim()).toBe("1000");
  });
});
