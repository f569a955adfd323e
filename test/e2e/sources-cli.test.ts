/**
 * Sources through the real command line: a command's output stored and piped back, and a failing dump that
 * fails the backup with its stderr and saves no snapshot.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { TestRepo, describeRun, makeTempDir, removeTempDirs } from "./helpers.js";

describe("backup --source command: through the CLI", () => {
  let repo: TestRepo;

  beforeAll(async () => {
    const base = await makeTempDir("sources-cli");
    repo = await TestRepo.init(join(base, "repo"));
  });
  afterAll(removeTempDirs);

  it("stores a command's output and pipes it back into a command", async () => {
    const backup = await repo.run(["backup", "--source", "command:numbers=seq 1 100000"]);
    expect(backup.code, describeRun(["backup"], backup)).toBe(0);
    const restore = await repo.run([
      "restore",
      "latest",
      "--source-path",
      "/sources/numbers",
      "--pipe-to",
      "wc -l",
    ]);
    expect(restore.code, describeRun(["restore"], restore)).toBe(0);
    expect(restore.stdout).toMatch(/^100000$/m);
  });

  it("a failing dump fails the backup with its stderr, and no snapshot is recorded", async () => {
    const before = await repo.snapshots();
    const r = await repo.run(["backup", "--source", "command:bad=echo half; echo 'dump broke' >&2; exit 3"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("dump broke");
    expect(r.stderr).toMatch(/code 3/);
    expect((await repo.snapshots()).length).toBe(before.length);
  });

  it("the after hook runs even when the before hook fails", async () => {
    const marker = join(repo.dir, "..", "after-ran");
    const r = await repo.run([
      "backup",
      "--source",
      "command:x=echo x",
      "--hook-before",
      "exit 4",
      "--hook-after",
      `touch ${marker}`,
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/before/);
    const { existsSync } = await import("node:fs");
    expect(existsSync(marker)).toBe(true);
  });
});
