/**
 * Prune never deletes the last verified copy of a blob (design §18 step 3), for the shapes an index
 * poisoning can take besides the e2e attack (test/e2e/index-poisoning.test.ts): an index file that names the
 * genuine pack with no blobs (a later file must not hide what an earlier one placed there), one that places
 * a blob in the genuine pack at a wrong offset, and ordinary duplicates, whose copies all verify.
 */
import { randomBytes } from "node:crypto";

import { describe, expect, it } from "vitest";

import { MemoryBackend } from "../../src/backend/memory/memory-backend.js";
import type { IndexFile } from "../../src/repository/master-index.js";
import { PackWriter } from "../../src/repository/pack-writer.js";
import { prune } from "../../src/repository/prune.js";
import { Repository } from "../../src/repository/repository.js";

const WEAK_KDF = { N: 1024, r: 8, p: 1 };

async function setup(): Promise<{ backend: MemoryBackend; ids: string[]; data: Buffer[]; pack: string }> {
  const backend = new MemoryBackend();
  const repo = await Repository.init(backend, "pw", { kdf: WEAK_KDF });
  const writer = new PackWriter(repo);
  const data = Array.from({ length: 4 }, () => randomBytes(8 * 1024));
  const ids: string[] = [];
  for (const d of data) ids.push(await writer.addPlain("data", d));
  await writer.flush();
  const packs = writer.takeNewPacks();
  expect(packs).toHaveLength(1);
  await repo.saveDocument("index", { version: 1, packs } satisfies IndexFile);
  return { backend, ids, data, pack: packs[0]!.id };
}

async function reopen(backend: MemoryBackend): Promise<Repository> {
  const repo = await Repository.open(backend, "pw");
  await repo.loadIndex();
  return repo;
}

async function packNames(backend: MemoryBackend): Promise<string[]> {
  const out: string[] = [];
  for await (const f of backend.list("pack")) out.push(f.name);
  return out.sort();
}

describe("prune keeps a verified copy", () => {
  it("an index naming the genuine pack with no blobs does not make it look unused", async () => {
    const { backend, ids, data, pack } = await setup();
    const repo = await reopen(backend);
    await repo.saveDocument("index", { version: 1, packs: [{ id: pack, blobs: [] }] } satisfies IndexFile);
    const result = await prune(await reopen(backend), { usedBlobs: () => Promise.resolve(new Set(ids)) });
    expect(result.packsToDelete).toEqual([]);
    expect(await packNames(backend)).toEqual([pack]);
    const after = await reopen(backend);
    for (let i = 0; i < ids.length; i++) expect((await after.loadBlob(ids[i]!)).equals(data[i]!)).toBe(true);
  });

  it("a blob placed in the genuine pack at a wrong offset is rejected; the right entry is kept", async () => {
    const { backend, ids, data, pack } = await setup();
    const repo = await reopen(backend);
    const right = repo.index.get(ids[0]!)!;
    const other = repo.index.get(ids[1]!)!;
    // Sorts first, so readers would take the wrong entry.
    const wrong = { type: "data" as const, id: ids[0]!, offset: other.offset, length: other.length, rawLength: right.rawLength }; // prettier-ignore
    await repo.saveDocument("index", {
      version: 1,
      packs: [{ id: pack, blobs: [wrong] }],
      retires: [],
    } satisfies IndexFile);
    const result = await prune(await reopen(backend), { usedBlobs: () => Promise.resolve(new Set(ids)) });
    expect(result.copiesVerified).toBe(2);
    expect(result.copiesRejected).toEqual([{ pack, blob: ids[0]! }]);
    const after = await reopen(backend);
    expect(after.index.get(ids[0]!)!.offset).toBe(right.offset);
    expect((await after.loadBlob(ids[0]!)).equals(data[0]!)).toBe(true);
  });

  it("ordinary duplicates (two packs, both intact): every copy verifies, one pack goes", async () => {
    const { backend, ids, pack } = await setup();
    const repo = await reopen(backend);
    const writer = new PackWriter(repo);
    for (const id of ids) {
      const plain = await repo.loadBlob(id);
      await writer.add("data", id, repo.codec.encode(plain), plain.length);
    }
    await writer.flush();
    const second = writer.takeNewPacks();
    await repo.saveDocument("index", { version: 1, packs: second } satisfies IndexFile);
    const result = await prune(await reopen(backend), { usedBlobs: () => Promise.resolve(new Set(ids)) });
    expect(result.copiesVerified).toBe(2 * ids.length);
    expect(result.copiesRejected).toEqual([]);
    expect(result.packsToDelete).toHaveLength(1);
    const left = await packNames(backend);
    expect(left).toHaveLength(1);
    expect([pack, second[0]!.id]).toContain(left[0]);
  });
});
