/**
 * The copy engine (src/copy/copier.ts) on in-memory repositories, for what the CLI end-to-end tests cannot
 * provoke: a target that corrupts what is written to it, and index files that fail to save.
 *
 * Snapshots are built by hand (a PackWriter, one pack per file, a flat root tree) so every test knows which
 * pack holds which blob. check() reads packs through the worker pool, which runs dist/: build first.
 */
import { randomBytes } from "node:crypto";

import { afterAll, describe, expect, it } from "vitest";

import { bufferSource, type Backend, type FileHandle, type SaveSource } from "../../src/backend/backend.js";
import { MemoryBackend } from "../../src/backend/memory/memory-backend.js";
import { BulwarkError, hasCode } from "../../src/core/errors.js";
import { copySnapshots, type CopyOptions, type CopyResult } from "../../src/copy/copier.js";
import { decodePackHeader } from "../../src/repository/pack.js";
import { PackWriter } from "../../src/repository/pack-writer.js";
import { Repository } from "../../src/repository/repository.js";
import { WorkerPool } from "../../src/repository/worker-pool.js";
import { loadAllSnapshots, type Snapshot } from "../../src/snapshot/snapshot.js";
import { encodeTree, type Node } from "../../src/snapshot/tree.js";
import { check, type CheckResult } from "../../src/verify/checker.js";
import { rejection } from "../helpers/errors.js";

const weakKdf = { N: 1024, r: 8, p: 1 };
const KiB = 1024;
/** Small packs: a snapshot of a few hundred KiB spans several of them. */
const PACK_SIZE = 64 * KiB;

const pools: WorkerPool[] = [];
afterAll(async () => {
  for (const p of pools.splice(0)) await p.close();
});

// ---------------------------------------------------------------------------------------------------------
// Repositories and snapshots built by hand

async function sourceRepo(): Promise<{ backend: MemoryBackend; repo: Repository }> {
  const backend = new MemoryBackend();
  const repo = await Repository.init(backend, "source pw", { kdf: weakKdf, packSize: PACK_SIZE });
  return { backend, repo };
}

/** A target of the source's copy set, opened through `wrap` (the identity by default). */
async function targetRepo(
  source: Repository,
  wrap: (b: Backend) => Backend = (b) => b,
): Promise<{ inner: MemoryBackend; repo: Repository }> {
  const inner = new MemoryBackend();
  await Repository.init(inner, "target pw", { kdf: weakKdf, copyParamsFrom: source.config });
  return { inner, repo: await openFresh(wrap(inner), "target pw") };
}

/** Opens a repository anew with its index loaded: what the next command would see. */
async function openFresh(backend: Backend, password: string): Promise<Repository> {
  const repo = await Repository.open(backend, password);
  await repo.loadIndex();
  return repo;
}

/**
 * Saves a snapshot of a flat directory: each file is a list of chunks, stored (when new) in a pack of its
 * own, then one tree and an index file. Returns the snapshot id.
 */
async function makeSnapshot(
  repo: Repository,
  files: Record<string, Buffer[]>,
  time: string,
): Promise<string> {
  const writer = new PackWriter(repo);
  const nodes: Node[] = [];
  for (const [name, chunks] of Object.entries(files)) {
    const content: string[] = [];
    for (const chunk of chunks) content.push(await writer.addPlain("data", chunk));
    await writer.flush();
    const size = chunks.reduce((n, c) => n + c.length, 0);
    nodes.push({ name, type: "file", mode: 0o644, uid: 0, gid: 0, mtime: "0", ctime: "0", size, content });
  }
  const tree = await writer.addPlain("tree", encodeTree(nodes));
  await writer.flush();
  await repo.saveDocument("index", { version: 1, packs: writer.takeNewPacks() });
  const snapshot: Snapshot = {
    version: 1,
    time,
    tree,
    paths: ["/data"],
    hostname: "test-host",
    username: "test",
    uid: 0,
    gid: 0,
    tags: [],
    program: "copier.test",
  };
  return repo.saveDocument("snapshot", snapshot);
}

const chunks = (n: number, size = 40 * KiB): Buffer[] => Array.from({ length: n }, () => randomBytes(size));

/** Runs check on a freshly opened repository (packs read with --read-data semantics). */
async function checkFresh(backend: Backend, password: string): Promise<CheckResult> {
  const repo = await Repository.open(backend, password);
  const pool = new WorkerPool(repo, 1);
  pools.push(pool);
  return check(repo, pool, { readData: { kind: "all" } });
}

const errorsOf = (r: CheckResult) => r.findings.filter((f) => f.severity === "error");

/** Every blob id found in the headers of the packs stored on `backend`, with how many packs hold it. */
async function blobCopies(backend: Backend, repo: Repository): Promise<Map<string, number>> {
  const copies = new Map<string, number>();
  for await (const info of backend.list("pack")) {
    const bytes = await backend.load({ type: "pack", name: info.name });
    for (const b of decodePackHeader(repo.master.encrypt, bytes, info.name)) {
      copies.set(b.id, (copies.get(b.id) ?? 0) + 1);
    }
  }
  return copies;
}

async function packNames(backend: Backend): Promise<string[]> {
  const names: string[] = [];
  for await (const info of backend.list("pack")) names.push(info.name);
  return names.sort();
}

// ---------------------------------------------------------------------------------------------------------
// Backends that misbehave

interface Intercept {
  /** Replaces a save: return the bytes to store instead, or throw. Undefined: saved as given. */
  save?(h: FileHandle, bytes: Buffer): Buffer | undefined;
}

/** A Backend delegating everything to `inner`, except saves, which `intercept` may alter or refuse. */
function intercepting(inner: Backend, intercept: Intercept): Backend {
  return {
    location: inner.location,
    capabilities: inner.capabilities,
    stat: (h, signal) => inner.stat(h, signal),
    list: (type, signal) => inner.list(type, signal),
    load: (h, range, signal) => inner.load(h, range, signal),
    openRead: (h, range, signal) => inner.openRead(h, range, signal),
    remove: (h, signal) => inner.remove(h, signal),
    close: () => inner.close(),
    save: async (h, source: SaveSource, options) => {
      const parts: Uint8Array[] = [];
      for await (const p of source.open()) parts.push(p);
      const bytes = Buffer.concat(parts);
      const replaced = intercept.save?.(h, bytes);
      return inner.save(h, bufferSource(replaced ?? bytes), options);
    },
  };
}

/** Flips one byte of a stored file in place (a memory backend keeps no permissions to defeat). */
async function flipStored(backend: MemoryBackend, h: FileHandle, offset: number): Promise<void> {
  const bytes = await backend.load(h);
  bytes[offset] = bytes[offset]! ^ 0xff;
  await backend.remove(h);
  await backend.save(h, bufferSource(bytes));
}

// ---------------------------------------------------------------------------------------------------------

describe("verification on arrival", () => {
  it.each([
    ["a blob", (length: number) => Math.floor(length / 3)],
    ["the header", (length: number) => length - 10],
  ])(
    "a pack whose %s is corrupted on the way stops the copy, is named, and never enters the index",
    async (_what, where) => {
      const { repo: source } = await sourceRepo();
      await makeSnapshot(source, { a: chunks(4), b: chunks(4), c: chunks(4) }, "2026-01-01T00:00:00.000Z");
      await source.loadIndex();

      // The second pack saved on the target arrives with one byte flipped.
      let saved = 0;
      const corrupted: string[] = [];
      const { inner, repo: target } = await targetRepo(source, (b) =>
        intercepting(b, {
          save: (h, bytes) => {
            if (h.type !== "pack" || ++saved !== 2) return undefined;
            corrupted.push(h.name);
            const bad = Buffer.from(bytes);
            const at = where(bad.length);
            bad[at] = bad[at]! ^ 0xff;
            return bad;
          },
        }),
      );

      const err = await rejection(copySnapshots(source, target));
      expect(corrupted).toHaveLength(1);
      const bad = corrupted[0]!;
      expect(err).toBeInstanceOf(BulwarkError);
      expect(hasCode(err, "INVALID_DATA")).toBe(true);
      expect((err as Error).message).toContain(`pack ${bad.slice(0, 12)}`);
      expect((err as Error).message).toContain("read back");

      // The pack is stored, but no index lists it: not in memory, not in any index file.
      expect(await packNames(inner)).toContain(bad);
      expect(target.index.hasPack(bad)).toBe(false);
      const reopened = await openFresh(inner, "target pw");
      expect(reopened.index.hasPack(bad)).toBe(false);
      // The packs that arrived intact are indexed, so a new attempt does not send them again.
      expect(reopened.index.packCount).toBeGreaterThan(0);
      expect(await loadAllSnapshots(reopened)).toEqual([]);

      // A new attempt on healthy storage leaves the damaged pack out (with a warning naming it) and completes.
      const warnings: string[] = [];
      const again = await copySnapshots(source, reopened, { reporter: { warn: (m) => warnings.push(m) } });
      expect(again.failed).toEqual([]);
      expect(again.adoptedPacks).toBe(0);
      expect(warnings.join("\n")).toContain(`pack ${bad.slice(0, 12)}`);
      expect(again.verifiedPacks).toBe(again.packsWritten);
      const result = await checkFresh(inner, "target pw");
      expect(errorsOf(result)).toEqual([]);
      expect(result.findings.map((f) => [f.kind, f.pack])).toEqual([["pack-unreferenced", bad]]);
    },
  );

  it("without verification a corrupted pack is not noticed (verifiedPacks stays 0)", async () => {
    const { repo: source } = await sourceRepo();
    await makeSnapshot(source, { a: chunks(3) }, "2026-01-01T00:00:00.000Z");
    await source.loadIndex();
    const { repo: target } = await targetRepo(source);
    const result = await copySnapshots(source, target, { verify: false });
    expect(result.verifiedPacks).toBe(0);
    expect(result.verifiedBlobs).toBe(0);
    expect(result.packsWritten).toBeGreaterThan(0);
  });
});

describe("resuming", () => {
  it.each([true, false])(
    "packs saved by an interrupted copy are indexed, not sent again (verify: %s)",
    async (verify) => {
      const { repo: source } = await sourceRepo();
      await makeSnapshot(
        source,
        { a: chunks(6), b: chunks(6), c: chunks(6), d: chunks(6) },
        "2026-01-01T00:00:00.000Z",
      );
      await source.loadIndex();
      const total = source.index.blobCount;

      // The first attempt loses its storage for index files after the first checkpoint.
      let indexSaves = 0;
      const { inner, repo: target } = await targetRepo(source, (b) =>
        intercepting(b, {
          save: (h) => {
            if (h.type === "index" && ++indexSaves > 1) throw new BulwarkError("IO", "disk full (test)");
            return undefined;
          },
        }),
      );
      const options: CopyOptions = { verify, checkpointPacks: 2 };
      const err = await rejection(copySnapshots(source, target, options));
      expect((err as Error).message).toContain("disk full (test)");
      const afterFirst = await openFresh(inner, "target pw");
      const stored = await packNames(inner);
      const unindexed = stored.filter((p) => !afterFirst.index.hasPack(p));
      expect(afterFirst.index.packCount).toBeGreaterThan(0); // the first checkpoint
      expect(unindexed.length).toBeGreaterThan(0);

      const second: CopyResult = await copySnapshots(source, afterFirst, options);
      expect(second.failed).toEqual([]);
      expect(second.adoptedPacks).toBe(unindexed.length);
      expect(second.adoptedBlobs).toBeGreaterThan(0);
      // Every blob of the snapshot was either there (indexed or adopted) or sent now, and none twice.
      expect(second.blobsCopied + second.blobsPresent).toBe(total);
      expect(second.blobsCopied).toBeLessThan(total);
      expect(second.blobsPresent).toBeGreaterThanOrEqual(second.adoptedBlobs);
      const copies = await blobCopies(inner, afterFirst);
      expect(copies.size).toBe(total);
      expect([...copies.values()].every((n) => n === 1)).toBe(true);
      if (verify) expect(second.verifiedPacks).toBe(second.packsWritten);
      else expect(second.verifiedPacks).toBe(0);

      const result = await checkFresh(inner, "target pw");
      expect(result.findings).toEqual([]);
      expect(result.stats.snapshots).toBe(1);
    },
  );

  it("packs of a snapshot whose index file failed to save are indexed before a later snapshot that uses them", async () => {
    // Snapshot 2 holds b (intact) and d (damaged in the source); snapshot 3 holds b again. Copying 2 sends b,
    // then fails on d; the index file for b's pack cannot be saved at that moment. Snapshot 3 then finds b
    // present (the in-memory index has it), so its index file must name b's pack too.
    const { backend: sourceBackend, repo: source } = await sourceRepo();
    const b = chunks(2);
    await makeSnapshot(source, { a: chunks(2) }, "2026-01-01T00:00:00.000Z");
    const damaged = await makeSnapshot(source, { b, d: chunks(1) }, "2026-01-02T00:00:00.000Z");
    const third = await makeSnapshot(source, { b, e: chunks(1) }, "2026-01-03T00:00:00.000Z");
    await source.loadIndex();
    const dTree = await source.loadBlob((await source.loadDocument<Snapshot>("snapshot", damaged)).tree);
    const dId = (JSON.parse(dTree.toString()) as { nodes: Node[] }).nodes.find((n) => n.name === "d")!
      .content![0]!;
    await flipStored(sourceBackend, { type: "pack", name: source.index.get(dId)!.pack }, 40);

    let indexSaves = 0;
    const { inner, repo: target } = await targetRepo(source, (bk) =>
      intercepting(bk, {
        save: (h) => {
          // 1: snapshot 1's index; 2: the one written after snapshot 2 failed.
          if (h.type === "index" && ++indexSaves === 2) throw new BulwarkError("IO", "flaky storage (test)");
          return undefined;
        },
      }),
    );
    const result = await copySnapshots(source, target);
    expect(result.failed.map((f) => f.source)).toEqual([damaged]);
    expect(result.failed[0]!.error).toContain(dId.slice(0, 12));
    const copied = result.snapshots.filter((s) => !s.alreadyThere).map((s) => s.source);
    expect(copied).toHaveLength(2);
    expect(copied).toContain(third);

    // What a later command sees: every blob of every snapshot on the target is indexed.
    const verdict = await checkFresh(inner, "target pw");
    expect(errorsOf(verdict)).toEqual([]);
    expect(verdict.stats.snapshots).toBe(2);
  });
});
