/**
 * Repository locks: concurrent backups share the repository; a lock left by a dead process does not block
 * anyone and `unlock` removes it; a live exclusive lock makes other commands fail with exit 11.
 */
import { readdir } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  MiB,
  TestRepo,
  lockHolder,
  makeTempDir,
  randomData,
  removeTempDirs,
  restoredPath,
  scanTree,
  spawnNode,
  CLI,
  writeFiles,
  type BackupJson,
  type CheckJson,
} from "./helpers.js";

let base: string;

beforeAll(async () => {
  base = await makeTempDir("locking");
});
afterAll(removeTempDirs);

const locks = (repo: TestRepo): Promise<string[]> => readdir(join(repo.dir, "locks"));

describe("repository locks", () => {
  it("two backups into one repository at the same time both succeed and both restore", async () => {
    const repo = await TestRepo.init(join(base, "repo-concurrent"));
    const sources = [join(base, "src-a"), join(base, "src-b")];
    for (const [i, s] of sources.entries()) {
      await writeFiles(s, {
        "big.bin": randomData(32 * MiB),
        "shared.txt": "the same in both\n".repeat(1000),
        [`only-${i}.txt`]: `only in ${i}\n`,
        "sub/small.bin": randomData(300_000),
      });
    }
    const runs = sources.map(
      (s) => spawnNode([CLI, "-r", repo.dir, "-p", repo.passwordFile, "--json", "backup", s]).result,
    );
    const results = await Promise.all(runs);
    for (const r of results) expect(r.code, r.stderr).toBe(0);
    const out = results.map((r) => JSON.parse(r.stdout) as BackupJson);
    const ids = out.map((o) => o.snapshot);
    // They really ran at the same time (each holding its shared lock while the other did).
    const spans = out.map((o) => [Date.parse(o.time), Date.parse(o.time) + o.summary.durationMs] as const);
    expect(Math.max(...spans.map(([start]) => start))).toBeLessThan(Math.min(...spans.map(([, end]) => end)));
    expect(await locks(repo)).toEqual([]);

    const snaps = await repo.snapshots();
    expect(snaps.map((s) => s.id).sort()).toEqual([...ids].sort());
    const check = await repo.json<CheckJson>(["check", "--read-data"]);
    expect(check.ok).toBe(true);
    expect(check.findings.filter((f) => f.severity === "error")).toEqual([]);

    for (const [i, s] of sources.entries()) {
      const target = join(base, `restore-concurrent-${i}`);
      const r = await repo.run(["restore", ids[i]!, "-t", target]);
      expect(r.code, r.stderr).toBe(0);
      const want = await scanTree(s);
      const got = await scanTree(restoredPath(target, s));
      expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
      for (const [rel, e] of want) if (e.type === "file") expect(got.get(rel)!.sha256, rel).toBe(e.sha256);
    }
  });

  it("a lock left by a dead process is ignored, unlock removes it, and so does the next backup", async () => {
    const repo = await TestRepo.init(join(base, "repo-stale"));
    const src = join(base, "src-stale");
    await writeFiles(src, { "a.txt": "a\n", "b.bin": randomData(100_000) });
    await repo.ok(["backup", src]);
    await writeFiles(src, { "a.txt": "changed\n" });

    // An exclusive lock whose process is gone: it would block everything if it were live.
    const dead = await lockHolder(repo, "exclusive", "exit");
    const r = await dead.result;
    expect(r.code, r.stderr).toBe(0);
    const stale = await locks(repo);
    expect(stale).toHaveLength(1);

    expect((await repo.run(["snapshots"])).code).toBe(0);
    const c = await repo.run(["check"]);
    expect(c.code, c.stderr).toBe(0);
    const prune = await repo.run(["prune"]);
    expect(prune.code, prune.stderr).toBe(0);
    // Commands that only read, or prune, leave it.
    expect(await locks(repo)).toEqual(stale);

    const unlock = await repo.json<{ removed: string[]; remaining: unknown[] }>(["unlock"]);
    expect(unlock.removed).toEqual(stale);
    expect(unlock.remaining).toEqual([]);
    expect(await locks(repo)).toEqual([]);
    const again = await repo.json<{ removed: string[] }>(["unlock"]);
    expect(again.removed).toEqual([]);

    // A writing run removes a dead process's lock of this host by itself (src/ops/leftovers.ts).
    const dead2 = await lockHolder(repo, "exclusive", "exit");
    expect((await dead2.result).code).toBe(0);
    expect(await locks(repo)).toHaveLength(1);
    const b = await repo.run(["backup", src]);
    expect(b.code, b.stderr).toBe(0);
    expect(b.stdout).toContain("the lock of dead process");
    expect(await locks(repo)).toEqual([]);
  });

  it("a live exclusive lock makes backup exit 11 naming the holder; unlock leaves it alone", async () => {
    const repo = await TestRepo.init(join(base, "repo-live"));
    const src = join(base, "src-live");
    await writeFiles(src, { "a.txt": "a\n" });
    await repo.ok(["backup", src]);
    const holder = await lockHolder(repo, "exclusive", "hold");
    try {
      const b = await repo.run(["backup", src]);
      expect(b.code).toBe(11);
      expect(b.stderr).toContain(`locked exclusively by pid ${holder.pid}`);
      expect(b.stderr).toContain("bulwark unlock");
      for (const args of [
        ["check"],
        ["restore", "latest", "-t", join(base, "t-live")],
        ["forget", "--keep-last", "1"],
      ]) {
        const r = await repo.run(args);
        expect(r.code, args.join(" ")).toBe(11);
      }
      // Read-only listing takes no lock.
      expect((await repo.run(["snapshots"])).code).toBe(0);
      const unlock = await repo.json<{ removed: string[]; remaining: { pid: number; stale: boolean }[] }>([
        "unlock",
      ]);
      expect(unlock.removed).toEqual([]);
      expect(unlock.remaining).toMatchObject([{ pid: holder.pid, stale: false, exclusive: true }]);
      expect(await locks(repo)).toHaveLength(1);
      expect(await repo.snapshots()).toHaveLength(1);
    } finally {
      holder.child.kill("SIGTERM");
      await holder.result;
    }
    // Released: everything works again.
    expect(await locks(repo)).toEqual([]);
    const b = await repo.run(["backup", src]);
    expect(b.code, b.stderr).toBe(0);
  });

  it("--no-lock works for read-only commands and is refused for commands that change the repository", async () => {
    const repo = await TestRepo.init(join(base, "repo-nolock"));
    const src = join(base, "src-nolock");
    await writeFiles(src, { "a.txt": "a\n" });
    await repo.ok(["backup", src]);
    await writeFiles(src, { "b.txt": "b\n" });
    await repo.ok(["backup", src]);
    const holder = await lockHolder(repo, "shared", "hold");
    try {
      const indexFiles = await readdir(join(repo.dir, "index"));
      // Without a lock a prune would not see the running backup (the holder) and could delete its packs.
      for (const args of [["prune"], ["forget", "--keep-last", "1", "--prune"], ["backup", src]]) {
        const r = await repo.run(["--no-lock", ...args]);
        expect(r.code, args.join(" ")).toBe(1);
        expect(r.stderr).toContain("--no-lock cannot be used");
      }
      expect(await readdir(join(repo.dir, "index"))).toEqual(indexFiles);
      expect(await repo.snapshots()).toHaveLength(2);
      for (const args of [["snapshots"], ["check"], ["restore", "latest", "-t", join(base, "t-nolock")]]) {
        const r = await repo.run(["--no-lock", ...args]);
        expect(r.code, `${args.join(" ")}: ${r.stderr}`).toBe(0);
      }
      expect(await locks(repo)).toHaveLength(1);
    } finally {
      holder.child.kill("SIGTERM");
      await holder.result;
    }
  });

  it("a live shared lock (a running backup) blocks prune but not another backup", async () => {
    const repo = await TestRepo.init(join(base, "repo-shared"));
    const src = join(base, "src-shared");
    await writeFiles(src, { "a.txt": "a\n" });
    const holder = await lockHolder(repo, "shared", "hold");
    try {
      const b = await repo.run(["backup", src]);
      expect(b.code, b.stderr).toBe(0);
      const p = await repo.run(["prune"]);
      expect(p.code).toBe(11);
      expect(p.stderr).toContain(`pid ${holder.pid}`);
      expect(p.stderr).not.toContain("exclusively");
    } finally {
      holder.child.kill("SIGTERM");
      await holder.result;
    }
    expect((await repo.run(["prune"])).code).toBe(0);
  });
});
