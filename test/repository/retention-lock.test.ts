/**
 * Retention that follows the data, and prune on a target that holds files under retention, on the
 * in-memory backend with its retention model (the S3 behaviour is tested against Ceph in test/e2e).
 */
import { afterAll, describe, expect, it } from "vitest";
import { mkdtemp, rm, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { usedBlobs } from "../../src/snapshot/used-blobs.js";
import { MemoryBackend } from "../../src/backend/memory/memory-backend.js";
import { Repository } from "../../src/repository/repository.js";
import { WorkerPool } from "../../src/repository/worker-pool.js";
import { backup } from "../../src/snapshot/archiver.js";
import { prune } from "../../src/repository/prune.js";
import { maintainRetentionLocks } from "../../src/repository/retention-lock.js";
import { check } from "../../src/verify/checker.js";
import { walkTree } from "../../src/snapshot/walker.js";

const weakKdf = { N: 1024, r: 8, p: 1 };
const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function tree(files: Record<string, Buffer>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "bulwark-retention-"));
  dirs.push(dir);
  for (const [name, data] of Object.entries(files)) {
    await mkdir(join(dir, name, ".."), { recursive: true });
    await writeFile(join(dir, name), data);
  }
  return dir;
}

describe("retention on a target with immutability", () => {
  it("extends what kept snapshots need, reports drift, and prune leaves locked files in place", async () => {
    const backend = new MemoryBackend({ retentionModes: ["governance", "compliance"] });
    const repo = await Repository.init(backend, "pw", { kdf: weakKdf, packSize: 256 * 1024 });
    const pool = new WorkerPool(repo);
    try {
      const a = await tree({ "a.bin": randomBytes(600_000), "b.txt": Buffer.from("keep me\n") });
      const b = await tree({ "c.bin": randomBytes(700_000) });
      const first = await backup(repo, pool, { paths: [a] });
      const second = await backup(repo, pool, { paths: [b] });

      // Nothing is locked yet: everything the snapshots need drifts.
      const dry = await maintainRetentionLocks(repo, {
        mode: "governance",
        days: 30,
        dryRun: true,
        usedBlobs: () => usedBlobs(repo),
      });
      expect(dry.drift.length).toBe(dry.checked);
      expect(dry.extended).toBe(0);
      const done = await maintainRetentionLocks(repo, {
        mode: "governance",
        days: 30,
        usedBlobs: () => usedBlobs(repo),
      });
      expect(done.extended).toBe(dry.drift.length);
      expect(done.errors).toEqual([]);
      const again = await maintainRetentionLocks(repo, {
        mode: "governance",
        days: 30,
        dryRun: true,
        usedBlobs: () => usedBlobs(repo),
      });
      expect(again.drift).toEqual([]);

      // The first snapshot's file is locked: forgetting it is refused by the target.
      await expect(backend.remove({ type: "snapshot", name: first.id })).rejects.toThrow();
      expect(second.id).not.toBe(first.id);
    } finally {
      await pool.close();
    }
  });

  it("prune does not try to delete locked packs, reports them, and keeps the repository consistent", async () => {
    let clock = Date.now();
    const backend = new MemoryBackend({ retentionModes: ["governance"], now: () => clock });
    const repo = await Repository.init(backend, "pw", { kdf: weakKdf, packSize: 256 * 1024 });
    const pool = new WorkerPool(repo);
    try {
      const a = await tree({ "a.bin": randomBytes(900_000) });
      const b = await tree({ "c.bin": randomBytes(500_000) });
      const first = await backup(repo, pool, { paths: [a] });
      await backup(repo, pool, { paths: [b] });
      // Lock only the first snapshot's data packs for a day; the snapshot file itself stays removable.
      await repo.loadIndex();
      const firstPacks = new Set<string>();
      for await (const { node } of walkTree(repo, first.snapshot.tree)) {
        for (const id of node.content ?? []) firstPacks.add(repo.index.get(id)!.pack);
      }
      expect(firstPacks.size).toBeGreaterThan(0);
      const until = new Date(clock + 86_400_000);
      for (const pack of firstPacks)
        await backend.extendRetention!({ type: "pack", name: pack }, { mode: "governance", until });
      await backend.remove({ type: "snapshot", name: first.id });

      const reopened = await Repository.open(backend, "pw");
      const result = await prune(reopened, { now: () => clock, usedBlobs: () => usedBlobs(reopened) });
      expect(result.locked.length).toBeGreaterThan(0);
      for (const l of result.locked) expect(l.until).toBe(until.toISOString());
      const stillThere = new Set<string>();
      for await (const info of backend.list("pack")) stillThere.add(info.name);
      for (const pack of firstPacks) expect(stillThere.has(pack)).toBe(true);

      const verify = await Repository.open(backend, "pw");
      const checked = await check(verify, pool, { readData: { kind: "all" } });
      expect(checked.findings.filter((f) => f.severity === "error")).toEqual([]);

      // After the locks expire, a prune frees them.
      clock += 2 * 86_400_000;
      const afterRepo = await Repository.open(backend, "pw");
      const after = await prune(afterRepo, { now: () => clock, usedBlobs: () => usedBlobs(afterRepo) });
      expect(after.locked).toEqual([]);
      for await (const info of backend.list("pack")) expect(firstPacks.has(info.name)).toBe(false);
    } finally {
      await pool.close();
    }
  });
});
