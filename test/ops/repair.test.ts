/**
 * Repair (ops/repair.ts) on in-memory copies of one copy set, with a real SQLite catalog: a damaged pack
 * is healed from the other copy (its intact blobs taken from the pack itself), retired and deleted; on a
 * target that keeps its objects it is retired and left in place, never read again; a blob no copy holds is
 * reported with its snapshot and file and its pack stays recorded damaged; a dry run writes nothing; a source
 * of another copy set is refused. The master index's choice between two locations of a blob is deterministic.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { bufferSource } from "../../src/backend/backend.js";
import { MemoryBackend } from "../../src/backend/memory/memory-backend.js";
import { Catalog } from "../../src/catalog/catalog.js";
import { ManualClock } from "../../src/core/clock.js";
import { copySnapshots } from "../../src/copy/copier.js";
import { backupOperation } from "../../src/ops/backup.js";
import { repairRepository, type RepairInput } from "../../src/ops/repair.js";
import { MasterIndex } from "../../src/repository/master-index.js";
import { prune } from "../../src/repository/prune.js";
import { Repository } from "../../src/repository/repository.js";
import { WorkerPool } from "../../src/repository/worker-pool.js";
import { restore } from "../../src/snapshot/restorer.js";
import { loadAllSnapshots } from "../../src/snapshot/snapshot.js";
import { usedBlobs } from "../../src/snapshot/used-blobs.js";
import { check } from "../../src/verify/checker.js";
import { bulwarkRejection } from "../helpers/errors.js";

const weakKdf = { N: 1024, r: 8, p: 1 };
const base = mkdtempSync(join(tmpdir(), "bulwark-repair-"));
const pools: WorkerPool[] = [];
afterAll(async () => {
  for (const p of pools.splice(0)) await p.close();
  rmSync(base, { recursive: true, force: true });
});
let n = 0;

/** A source tree of 12 incompressible files of 12 KiB (one blob each, several per 48 KiB pack). */
function tree(): string {
  const root = join(base, `tree-${++n}`);
  mkdirSync(root, { recursive: true });
  for (let i = 0; i < 12; i++) writeFileSync(join(root, `f${i}`), randomBytes(12 * 1024));
  return root;
}

async function copySet(options: { immutable?: boolean } = {}) {
  const clock = new ManualClock("2035-01-01T03:00:00Z");
  const aBackend = new MemoryBackend();
  const a = await Repository.init(aBackend, "pw-a", { kdf: weakKdf, packSize: 48 * 1024 });
  const pool = new WorkerPool(a);
  pools.push(pool);
  await backupOperation({
    repo: a,
    pool,
    clock,
    what: { kind: "paths", paths: [tree()], virtualFiles: [], excludes: [], excludeFiles: [] },
    env: {},
    hostname: "h",
  });
  const bBackend = new MemoryBackend(
    options.immutable ? { retentionModes: ["compliance"], now: () => clock.now().getTime() } : {},
  );
  const b = await Repository.init(bBackend, "pw-b", { kdf: weakKdf, copyParamsFrom: a.config });
  await b.loadIndex();
  await copySnapshots(a, b);
  const bPool = new WorkerPool(b);
  pools.push(bPool);
  const catalog = Catalog.open(join(base, `catalog-${++n}`, "catalog.db"));
  /** The largest data pack of b, and the bytes it has. */
  const dataPack = async (): Promise<string> => {
    const packs: { name: string; size: number }[] = [];
    for await (const f of bBackend.list("pack")) packs.push(f);
    packs.sort((x, y) => y.size - x.size);
    return packs[0]!.name;
  };
  const flip = async (pack: string, offset: number): Promise<void> => {
    const bytes = Buffer.from(await bBackend.load({ type: "pack", name: pack }));
    bytes[offset] = bytes[offset]! ^ 0xff;
    await bBackend.save({ type: "pack", name: pack }, bufferSource(bytes));
  };
  /** A fresh view of b, as the next command opens it. */
  const reopen = async () => Repository.open(bBackend, "pw-b");
  const repair = async (extra: Partial<RepairInput> = {}) =>
    repairRepository({
      repo: await reopen(),
      label: "b",
      // Repair closes what it opened; the memory backend stays usable for the next run.
      sources: [{ label: "a", open: async () => Repository.open(unclosable(aBackend), "pw-a") }],
      pool: bPool,
      clock,
      coverage: catalog,
      ...extra,
    });
  const checkB = async () => {
    const repo = await reopen();
    const pool2 = new WorkerPool(repo);
    pools.push(pool2);
    return check(repo, pool2, { readData: { kind: "all" } });
  };
  return { a, aBackend, b, bBackend, clock, catalog, dataPack, flip, reopen, repair, checkB };
}

function unclosable(backend: MemoryBackend): MemoryBackend {
  return Object.create(backend, { close: { value: () => Promise.resolve() } }) as MemoryBackend;
}

describe("MasterIndex", () => {
  const blob = (id: string) => ({ type: "data" as const, id, offset: 0, length: 10, rawLength: 1 });
  it("reads a blob from the repaired pack, whatever order the index files come in, and never a retired one", () => {
    const old = {
      name: "aa",
      file: { version: 1 as const, packs: [{ id: "p-old", blobs: [blob("x"), blob("y")] }] },
    };
    const other = {
      name: "cc",
      file: { version: 1 as const, packs: [{ id: "p-other", blobs: [blob("x")] }] },
    };
    const repaired = {
      name: "bb",
      file: { version: 1 as const, packs: [{ id: "p-new", blobs: [blob("x")] }], retires: [] },
    };
    for (const files of [
      [old, other, repaired],
      [repaired, other, old],
      [other, repaired, old],
    ]) {
      const index = new MasterIndex();
      index.addFiles(files);
      expect(index.get("x")?.pack).toBe("p-new");
      expect(index.get("y")?.pack).toBe("p-old");
    }
    const index = new MasterIndex();
    index.addFiles([old, other, { ...repaired, file: { ...repaired.file, retires: ["p-old"] } }]);
    expect(index.get("x")?.pack).toBe("p-new");
    expect(index.has("y")).toBe(false);
    expect(index.hasPack("p-old")).toBe(false);
    expect(index.isRetired("p-old")).toBe(true);
    // Retiring in memory falls back to the next location of a blob.
    index.retire(["p-new"]);
    expect(index.get("x")?.pack).toBe("p-other");
  });
});

describe("repairRepository", () => {
  it("heals a flipped byte from the other copy: intact neighbours salvaged, pack retired and deleted", async () => {
    const s = await copySet();
    const pack = await s.dataPack();
    await s.flip(pack, 20);
    const before = await s.checkB();
    expect(before.findings.some((f) => f.pack === pack && f.severity === "error")).toBe(true);
    // Without --read-data only recorded damage counts: none is recorded yet.
    const blind = await s.repair();
    expect(blind).toMatchObject({ ok: true, damagedPacks: [], blobsNeeded: 0 });

    const r = await s.repair({ readData: true });
    expect(r.ok).toBe(true);
    expect(r.damagedPacks.map((d) => d.pack)).toEqual([pack]);
    expect(r.blobsNeeded).toBeGreaterThan(1);
    expect(r.fetched).toEqual([{ source: "a", blobs: 1, bytes: 12 * 1024 }]);
    expect(r.salvaged).toBe(r.blobsNeeded - 1);
    expect(r.retired).toEqual([pack]);
    expect(r.deleted).toEqual([pack]);
    expect(r.locked).toEqual([]);
    const after = await s.checkB();
    expect(after.findings).toEqual([]);
    // The catalog: the damaged record is gone, the new packs are recorded read and sound.
    const reads = s.catalog.packReads(s.b.id);
    expect(reads.has(pack)).toBe(false);
    expect([...reads.values()].filter((x) => x.outcome === "damaged")).toEqual([]);
    expect(r.packsWritten).toBeGreaterThan(0);
    // Everything restores from the repaired copy.
    const repo = await s.reopen();
    await repo.loadIndex();
    const [snapshot] = await loadAllSnapshots(repo);
    const out = join(base, `restore-${++n}`);
    const pool = new WorkerPool(repo);
    pools.push(pool);
    const restored = await restore(repo, pool, snapshot!.tree, { target: out });
    expect(restored.errors).toEqual([]);
    expect(restored.files).toBe(12);
    // A second run has nothing to do.
    const again = await s.repair();
    expect(again).toMatchObject({ ok: true, damagedPacks: [], blobsNeeded: 0, packsWritten: 0 });
  });

  it("on a target that keeps its objects, the damaged pack is retired and left in place, never read", async () => {
    const s = await copySet({ immutable: true });
    const pack = await s.dataPack();
    await s.flip(pack, 20);
    const until = new Date(s.clock.now().getTime() + 86_400_000);
    await s.bBackend.extendRetention!({ type: "pack", name: pack }, { mode: "compliance", until });
    const r = await s.repair({ readData: true });
    expect(r.ok).toBe(true);
    expect(r.retired).toEqual([pack]);
    expect(r.deleted).toEqual([]);
    expect(r.locked).toEqual([{ file: `pack/${pack.slice(0, 12)}`, until: until.toISOString() }]);
    const after = await s.checkB();
    expect(after.findings.map((f) => [f.severity, f.kind, f.pack])).toEqual([
      ["warning", "pack-retired", pack],
    ]);
    const again = await s.repair();
    expect(again).toMatchObject({ ok: true, blobsNeeded: 0, retired: [pack], deleted: [] });
  });

  it("prune later deletes the retired pack once its lock lapses, and an old index file kept by retention cannot bring it back", async () => {
    const s = await copySet({ immutable: true });
    const pack = await s.dataPack();
    await s.flip(pack, 20);
    const day = 86_400_000;
    const lock = async (type: "pack" | "index", name: string, ms: number) =>
      s.bBackend.extendRetention!(
        { type, name },
        { mode: "compliance", until: new Date(s.clock.now().getTime() + ms) },
      );
    await lock("pack", pack, day);
    // Every index file of b from before the repair is kept for a week: it names the damaged pack.
    const oldIndex: string[] = [];
    for await (const f of s.bBackend.list("index")) oldIndex.push(f.name);
    for (const name of oldIndex) await lock("index", name, 7 * day);
    expect((await s.repair({ readData: true })).retired).toEqual([pack]);

    s.clock.advance(2 * day);
    const repo = await s.reopen();
    const result = await prune(repo, {
      usedBlobs: () => usedBlobs(repo),
      now: () => s.clock.now().getTime(),
    });
    expect(result.unreferencedPacks).toContain(pack);
    expect(result.locked.map((l) => l.file).sort()).toEqual(
      oldIndex.map((n) => `index/${n.slice(0, 12)}`).sort(),
    );
    const packs: string[] = [];
    for await (const f of s.bBackend.list("pack")) packs.push(f.name);
    expect(packs).not.toContain(pack);
    // The old index files still name the pack, but the index prune wrote keeps it retired.
    const after = await s.checkB();
    expect(after.findings).toEqual([]);
    const reopened = await s.reopen();
    await reopened.loadIndex();
    expect(reopened.index.isRetired(pack)).toBe(true);
    expect(reopened.index.hasPack(pack)).toBe(false);
  });

  it("a blob no copy holds: reported with its snapshot and file; its pack stays recorded damaged", async () => {
    const s = await copySet();
    const pack = await s.dataPack();
    await s.flip(pack, 20);
    // The other copy lost its data too: an empty repository of the same copy set.
    const empty = await Repository.init(new MemoryBackend(), "pw-c", {
      kdf: weakKdf,
      copyParamsFrom: s.a.config,
    });
    const r = await s.repair({
      readData: true,
      sources: [{ label: "c", open: () => Promise.resolve(empty) }],
    });
    expect(r.ok).toBe(false);
    expect(r.unrepairable.blobs).toHaveLength(1);
    expect(r.unrepairable.snapshots).toHaveLength(1);
    expect(r.unrepairable.snapshots[0]!.files).toHaveLength(1);
    expect(r.unrepairable.snapshots[0]!.files[0]).toMatch(/\/f\d+$/);
    expect(r.retired).toEqual([]);
    expect(s.catalog.packReads(s.b.id).get(pack)?.outcome).toBe("damaged");
    // The blobs it could take are rewritten; the one that is lost stays an error of check.
    const after = await s.checkB();
    expect(after.findings.filter((f) => f.severity === "error").map((f) => f.pack)).toEqual([pack]);
  });

  it("a dry run lists what would be salvaged and fetched, and writes nothing", async () => {
    const s = await copySet();
    const pack = await s.dataPack();
    await s.flip(pack, 20);
    await s.repair({ readData: true, dryRun: true }); // records the damage in the catalog (verify's reading)
    const files = s.bBackend.fileCount;
    const r = await s.repair({ dryRun: true });
    expect(r).toMatchObject({ dryRun: true, ok: true, packsWritten: 0, deleted: [] });
    expect(r.fetched).toEqual([{ source: "a", blobs: 1, bytes: 12 * 1024 }]);
    expect(r.salvaged).toBe(r.blobsNeeded - 1);
    expect(s.bBackend.fileCount).toBe(files);
    expect(s.catalog.packReads(s.b.id).get(pack)?.outcome).toBe("damaged");
  });

  it("a chosen source of another copy set is refused before anything is written", async () => {
    const s = await copySet();
    const stranger = await Repository.init(new MemoryBackend(), "pw", { kdf: weakKdf });
    const pack = await s.dataPack();
    await s.flip(pack, 20);
    const files = s.bBackend.fileCount;
    const refused = await bulwarkRejection(
      s.repair({
        sources: [{ label: "x", open: () => Promise.resolve(stranger) }],
        sourcesChosen: true,
        readData: true,
      }),
    );
    expect(refused.code).toBe("USAGE");
    expect(refused.message).toMatch(/blob ids differ/);
    expect(s.bBackend.fileCount).toBe(files);
    expect((await s.checkB()).findings.some((f) => f.pack === pack)).toBe(true);
  });
});
