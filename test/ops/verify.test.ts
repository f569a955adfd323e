/**
 * Verification with coverage (ops/verify.ts) on an in-memory repository of many small packs, a real
 * SQLite catalog and a fake clock: daily budgeted runs over one period read every pack once and none twice
 * while fresh; new packs are read in the run after they are written; a run killed half-way keeps what it
 * read; a damaged pack is found, recorded, and read again by every later run.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { bufferSource, type Backend, type FileDigest } from "../../src/backend/backend.js";
import { MemoryBackend } from "../../src/backend/memory/memory-backend.js";
import { Catalog, type PackReadInput } from "../../src/catalog/catalog.js";
import { parseBudget } from "../../src/config/budget.js";
import { ManualClock } from "../../src/core/clock.js";
import { BulwarkError } from "../../src/core/errors.js";
import { backupOperation } from "../../src/ops/backup.js";
import {
  crossCopyFindings,
  planPackReads,
  verifyRepository,
  type CoverageStore,
  type VerifyInput,
} from "../../src/ops/verify.js";
import { Repository } from "../../src/repository/repository.js";
import { WorkerPool } from "../../src/repository/worker-pool.js";

const DAY = 86_400_000;
const weakKdf = { N: 1024, r: 8, p: 1 };
const base = mkdtempSync(join(tmpdir(), "bulwark-verify-"));
const pools: WorkerPool[] = [];
afterAll(async () => {
  for (const p of pools.splice(0)) await p.close();
  rmSync(base, { recursive: true, force: true });
});

let trees = 0;
/** A directory of `files` incompressible files of 40 KiB: one blob, so one small pack, each. */
function tree(files: number): string {
  const root = join(base, `tree-${++trees}`);
  mkdirSync(root, { recursive: true });
  for (let i = 0; i < files; i++) writeFileSync(join(root, `f${i}`), randomBytes(40 * 1024));
  return root;
}

async function setup(files: number) {
  const backend = new MemoryBackend();
  const repo = await Repository.init(backend, "pw", { kdf: weakKdf, packSize: 48 * 1024 });
  const pool = new WorkerPool(repo);
  pools.push(pool);
  const clock = new ManualClock("2035-01-01T03:00:00Z");
  const backupOf = async (root: string) =>
    backupOperation({
      repo,
      pool,
      clock,
      what: { kind: "paths", paths: [root], virtualFiles: [], excludes: [], excludeFiles: [] },
      env: {},
      hostname: "h",
    });
  await backupOf(tree(files));
  const catalog = Catalog.open(join(base, `catalog-${++trees}`, "catalog.db"));
  /** Every read recorded, in order. */
  const reads: PackReadInput[] = [];
  const coverage: CoverageStore = {
    packReads: (id) => catalog.packReads(id),
    recordPackRead: (r) => {
      reads.push(r);
      catalog.recordPackRead(r);
    },
    forgetPackReads: (id, keep) => catalog.forgetPackReads(id, keep),
  };
  const packs = async () => {
    const out: { name: string; size: number }[] = [];
    for await (const f of backend.list("pack")) out.push(f);
    return out;
  };
  /** A verification over a 30-day period, as the daily runs of the tests make it. */
  const verify = (extra: Partial<VerifyInput> = {}) =>
    verifyRepository({ repo, pool, clock, target: "local", coverage, fullEveryMs: 30 * DAY, ...extra });
  return { backend, repo, pool, clock, catalog, coverage, reads, packs, backupOf, verify };
}

describe("verification coverage", () => {
  it("daily runs with a period's share of budget read every pack once per period, none twice while fresh", async () => {
    const t = await setup(40);
    const packs = await t.packs();
    expect(packs.length).toBeGreaterThanOrEqual(15);
    const total = packs.reduce((n, p) => n + p.size, 0);
    const budget = Math.ceil(total / 20); // a twentieth a day: the period of 30 days is read in 20
    for (let day = 0; day < 30; day++) {
      const r = await t.verify({ budget: { bytes: budget } });
      expect(r.ok).toBe(true);
      t.clock.advance(DAY);
    }
    const byPack = new Map<string, Date[]>();
    for (const r of t.reads) byPack.set(r.pack, [...(byPack.get(r.pack) ?? []), r.time]);
    expect([...byPack.keys()].sort()).toEqual(packs.map((p) => p.name).sort());
    for (const [, times] of byPack) expect(times).toHaveLength(1);
    // No run read more than its budget's worth plus one pack.
    const perDay = new Map<number, number>();
    for (const r of t.reads) perDay.set(r.time.getTime(), (perDay.get(r.time.getTime()) ?? 0) + r.bytes);
    const largest = Math.max(...packs.map((p) => p.size));
    for (const bytes of perDay.values()) expect(bytes).toBeLessThanOrEqual(budget + largest);

    // Day 30: the packs read on day 0 are due again, and only those are read first.
    const again = await t.verify({ budget: { bytes: budget } });
    const firstDay = t.reads.filter((r) => r.time.getTime() === new Date("2035-01-01T03:00:00Z").getTime());
    expect(again.plan.read.slice(0, firstDay.length).sort()).toEqual(firstDay.map((r) => r.pack).sort());
    expect(again.coverage.packs).toBe(packs.length);
  });

  it("reads packs written since the last run first, and reports coverage", async () => {
    const t = await setup(10);
    const run = () => t.verify();
    const first = await run();
    expect(first.coverage).toMatchObject({ covered: first.coverage.packs, ratio: 1, damaged: 0 });
    const before = new Set((await t.packs()).map((p) => p.name));
    t.clock.advance(DAY);
    await t.backupOf(tree(5));
    const fresh = (await t.packs()).map((p) => p.name).filter((p) => !before.has(p));
    expect(fresh.length).toBeGreaterThan(0);
    t.clock.advance(DAY);
    const next = await run();
    expect(next.plan.read.sort()).toEqual(fresh.sort());
    expect(next.plan.fresh).toBe(before.size);
    expect(next.coverage.ratio).toBe(1);
  });

  it("a run killed half-way keeps what it read; the next goes on from there", async () => {
    const t = await setup(12);
    let allowed = 4;
    const dying: CoverageStore = {
      ...t.coverage,
      recordPackRead: (r) => {
        if (allowed-- <= 0) throw new Error("killed");
        t.coverage.recordPackRead(r);
      },
    };
    await expect(t.verify({ coverage: dying })).rejects.toThrow(/killed/);
    const kept = t.catalog.packReads(t.repo.id);
    expect(kept.size).toBe(4);
    t.clock.advance(60_000);
    const resumed = await t.verify();
    expect(resumed.plan.read.some((p) => kept.has(p))).toBe(false);
    expect(resumed.coverage.ratio).toBe(1);
  });

  it("a damaged pack is found, named with its snapshot, recorded, and read again by every later run", async () => {
    const t = await setup(6);
    const [victim] = await t.packs();
    const data = Buffer.from(await t.backend.load({ type: "pack", name: victim!.name }));
    data[10] = data[10]! ^ 0xff;
    await t.backend.save({ type: "pack", name: victim!.name }, bufferSource(data));
    const run = () => t.verify();
    const found = await run();
    expect(found.ok).toBe(false);
    const finding = found.findings.find((f) => f.pack === victim!.name);
    expect(finding?.snapshots?.length).toBe(1);
    expect(t.catalog.packReads(t.repo.id).get(victim!.name)?.outcome).toBe("damaged");
    expect(found.coverage.damaged).toBe(1);
    t.clock.advance(DAY);
    const later = await run();
    expect(later.plan.read).toEqual([victim!.name]);
    expect(later.ok).toBe(false);
  });

  it("planPackReads: damaged first, then never read, then oldest; budget keeps at least one; newOnly", () => {
    const now = new Date("2035-06-01T00:00:00Z");
    const at = (days: number) => new Date(now.getTime() - days * DAY);
    const packs = ["a", "b", "c", "d", "e"].map((name) => ({ name, size: 10 }));
    const records = new Map([
      ["a", { time: at(1), outcome: "ok" as const }],
      ["b", { time: at(40), outcome: "ok" as const }],
      ["c", { time: at(2), outcome: "damaged" as const }],
      ["d", { time: at(35), outcome: "ok" as const }],
    ]);
    expect(planPackReads(packs, records, { now, fullEveryMs: 30 * DAY })).toEqual({
      read: ["c", "e", "b", "d"],
      deferred: 0,
      fresh: 1,
    });
    expect(planPackReads(packs, records, { now, fullEveryMs: 30 * DAY, budgetBytes: 5 }).read).toEqual(["c"]);
    expect(planPackReads(packs, records, { now, newOnly: true }).read).toEqual(["c", "e"]);
    expect(planPackReads(packs, records, { now }).read).toEqual(["c", "e", "b", "d", "a"]);
  });

  it("parseBudget reads sizes and durations and explains what it cannot", () => {
    expect(parseBudget("2GiB")).toEqual({ bytes: 2 * 1024 ** 3 });
    expect(parseBudget("500MB")).toEqual({ bytes: 500e6 });
    expect(parseBudget("4096")).toEqual({ bytes: 4096 });
    expect(parseBudget("20m")).toEqual({ ms: 20 * 60_000 });
    expect(parseBudget("1h30m")).toEqual({ ms: 90 * 60_000 });
    expect(parseBudget("2 parsecs")).toMatchObject({ error: expect.stringMatching(/neither a size/) });
    expect(parseBudget("0.1B")).toMatchObject({ error: expect.stringMatching(/less than a byte/) });
  });
});

describe("digest checks at rest (the logic, with a fake that hashes in memory; the vault test is the evidence)", () => {
  /** Gives the in-memory backend a digest; `answer` may replace the true one for some packs. */
  function hashing(
    backend: MemoryBackend,
    answer: (name: string, real: FileDigest) => FileDigest | Error = (_n, real) => real,
  ): { calls: string[] } {
    const calls: string[] = [];
    const b = backend as MemoryBackend & { digest?: Backend["digest"] };
    b.digest = async (h) => {
      calls.push(h.name);
      const data = await backend.load(h);
      const got = answer(h.name, {
        sha256: createHash("sha256").update(data).digest("hex"),
        size: data.length,
      });
      if (got instanceof Error) throw got;
      return got;
    };
    return { calls };
  }

  it("without Backend.digest nothing is checked by digest and nothing changes", async () => {
    const t = await setup(6);
    const r = await t.verify({ budget: { bytes: 1 } });
    expect(r.digests).toEqual({ offered: false, packs: 0, bytes: 0, damaged: 0, withoutDigest: 0 });
    expect(r.packsRead).toBe(1);
  });

  it("every pack not read is digest-checked; a match records nothing, a mismatch or missing pack is damaged, a failure a warning", async () => {
    const t = await setup(10);
    const packs = (await t.packs()).map((p) => p.name).sort();
    expect(packs.length).toBeGreaterThanOrEqual(6);
    const calls = hashing(t.backend).calls;
    const first = await t.verify({ budget: { bytes: 1 } });
    expect(first.digests.offered).toBe(true);
    const read = first.plan.read;
    expect(read).toHaveLength(1);
    expect(calls.sort()).toEqual(packs.filter((p) => p !== read[0]));
    expect(first.digests).toMatchObject({ offered: true, packs: packs.length - 1, damaged: 0 });
    expect(t.reads.map((r) => r.pack)).toEqual(read); // digests are not reads
    expect(first.coverage.covered).toBe(1);

    const unread = packs.filter((p) => p !== read[0]);
    const [rotten, gone, silent] = unread.slice(-3) as [string, string, string];
    hashing(t.backend, (name, real) =>
      name === rotten
        ? { ...real, sha256: "0".repeat(64) }
        : name === gone
          ? new BulwarkError("NOT_FOUND", "gone")
          : name === silent
            ? new BulwarkError("TRANSIENT", "the target did not answer")
            : real,
    );
    t.clock.advance(DAY);
    const second = await t.verify({ budget: { bytes: 1 } });
    expect(second.plan.read).not.toContain(rotten);
    expect(second.ok).toBe(false);
    expect(second.digests).toMatchObject({ packs: packs.length - 2, damaged: 2 });
    const byPack = new Map(second.findings.map((f) => [f.pack, f]));
    expect(byPack.get(rotten)).toMatchObject({ severity: "error", kind: "pack-digest" });
    expect(byPack.get(rotten)?.snapshots).toHaveLength(1);
    expect(byPack.get(gone)).toMatchObject({ severity: "error", kind: "pack-missing" });
    expect(byPack.get(silent)).toMatchObject({ severity: "warning", kind: "pack-digest" });
    const records = t.catalog.packReads(t.repo.id);
    expect(records.get(rotten)?.outcome).toBe("damaged");
    expect(records.get(gone)?.outcome).toBe("damaged");
    expect(records.get(silent)).toBeUndefined();
    expect(second.coverage.damaged).toBe(2);

    // The next run reads the damaged packs first (the fake now answers truly: reading settles it).
    hashing(t.backend);
    t.clock.advance(DAY);
    const third = await t.verify();
    expect(third.plan.read.slice(0, 2).sort()).toEqual([rotten, gone].sort());
  });
});

describe("cross-copy consistency", () => {
  it("the copies of one snapshot must reference the same root tree", () => {
    const a = "a".repeat(64);
    const b = "b".repeat(64);
    const tree1 = "1".repeat(64);
    const tree2 = "2".repeat(64);
    const sound = new Map([
      ["local", [{ id: a, original: a, tree: tree1 }]],
      ["nas", [{ id: b, original: a, tree: tree1 }]],
    ]);
    expect(crossCopyFindings(sound)).toEqual([]);
    const differ = new Map([
      ["local", [{ id: a, original: a, tree: tree1 }]],
      ["nas", [{ id: b, original: a, tree: tree2 }]],
      ["offsite", [{ id: "c".repeat(64), original: "c".repeat(64), tree: tree2 }]],
    ]);
    const found = crossCopyFindings(differ);
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ original: a, targets: ["local", "nas"] });
    expect(found[0]!.message).toBe(
      "the copies of snapshot aaaaaaaa differ: local (aaaaaaaa) has tree 111111111111, nas (bbbbbbbb) has tree 222222222222",
    );
  });
});
