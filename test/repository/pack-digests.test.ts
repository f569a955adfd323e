/**
 * Index entries record each pack's SHA-256 (design §10): the pack writer puts the digest of the bytes it
 * saved there, the master index serves it, and prune carries it over for the packs it keeps (and records
 * it for the packs it writes), so a digest check at rest has its reference whatever rewrote the index.
 */
import { createHash, randomBytes } from "node:crypto";

import { describe, expect, it } from "vitest";

import { MemoryBackend } from "../../src/backend/memory/memory-backend.js";
import type { IndexFile } from "../../src/repository/master-index.js";
import { PackWriter } from "../../src/repository/pack-writer.js";
import { prune } from "../../src/repository/prune.js";
import { Repository } from "../../src/repository/repository.js";

const WEAK_KDF = { N: 1024, r: 8, p: 1 };

async function packDigestsOnDisk(backend: MemoryBackend): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const f of backend.list("pack")) {
    const data = await backend.load({ type: "pack", name: f.name });
    out.set(f.name, createHash("sha256").update(data).digest("hex"));
  }
  return out;
}

describe("pack digests in the index", () => {
  it("the writer records each pack's SHA-256; reopening serves it; prune keeps and adds them", async () => {
    const backend = new MemoryBackend();
    const repo = await Repository.init(backend, "pw", { kdf: WEAK_KDF, packSize: 32 * 1024 });
    const writer = new PackWriter(repo);
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push(await writer.addPlain("data", randomBytes(20 * 1024)));
    await writer.flush();
    const packs = writer.takeNewPacks();
    expect(packs.length).toBeGreaterThanOrEqual(4);
    await repo.saveDocument("index", { version: 1, packs } satisfies IndexFile);

    const onDisk = await packDigestsOnDisk(backend);
    for (const p of packs) expect(p.sha256, p.id).toBe(onDisk.get(p.id));
    const reopened = await Repository.open(backend, "pw");
    await reopened.loadIndex();
    for (const [pack, sha256] of onDisk) expect(reopened.index.packDigest(pack)).toBe(sha256);
    expect(reopened.index.packDigest("00".repeat(32))).toBeUndefined();

    // Two blobs a pack: dropping blobs 3, 4 and 5 deletes one pack, repacks another, keeps the rest.
    const used = new Set(ids.filter((_, i) => i < 3 || i > 5));
    const result = await prune(reopened, { usedBlobs: () => Promise.resolve(used), repackThreshold: 0.3 });
    expect(result.packsToRepack.length).toBeGreaterThan(0);
    expect(result.packsKept).toBeGreaterThan(0);
    expect(result.indexFilesWritten).toBeGreaterThan(0);
    const after = await Repository.open(backend, "pw");
    await after.loadIndex();
    const remaining = await packDigestsOnDisk(backend);
    expect(remaining.size).toBeGreaterThan(0);
    for (const [pack, sha256] of remaining) expect(after.index.packDigest(pack), pack).toBe(sha256);
  });
});
