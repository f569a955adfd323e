import { describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { ENVELOPE_OVERHEAD, blobId, open, seal } from "../../src/crypto/crypto.js";
import { hasCode } from "../../src/core/errors.js";
import { BlobCodec } from "../../src/repository/blob-codec.js";
import { decodePackHeader, encodePackHeader, type PackedBlob } from "../../src/repository/pack.js";
import { MemoryBackend } from "../../src/backend/memory/memory-backend.js";
import { Repository } from "../../src/repository/repository.js";
import { PackWriter } from "../../src/repository/pack-writer.js";
import { decodeTree, encodeTree, type Node } from "../../src/snapshot/tree.js";

const weakKdf = { N: 1024, r: 8, p: 1 };

describe("envelope", () => {
  it("round-trips and detects any flipped byte", () => {
    const key = randomBytes(32);
    const plain = randomBytes(1000);
    const sealed = seal(key, plain);
    expect(sealed.length).toBe(plain.length + ENVELOPE_OVERHEAD);
    expect(open(key, sealed, "x").equals(plain)).toBe(true);
    for (const pos of [0, 5, 20, 500, sealed.length - 1]) {
      const bad = Buffer.from(sealed);
      bad[pos] = bad[pos]! ^ 0x01;
      expect(() => open(key, bad, "x")).toThrow();
    }
    expect(() => open(randomBytes(32), sealed, "x")).toThrow(/authentication failed/);
    expect(() => open(key, sealed.subarray(0, 10), "x")).toThrow(/truncated/);
  });

  it("never reuses a nonce", () => {
    const key = randomBytes(32);
    const nonces = new Set<string>();
    for (let i = 0; i < 10_000; i++) nonces.add(seal(key, Buffer.alloc(1)).subarray(1, 13).toString("hex"));
    expect(nonces.size).toBe(10_000);
  });

  it("keys blob ids: the same data has different ids under different keys", () => {
    const data = Buffer.from("hello");
    expect(blobId(Buffer.alloc(32, 1), data)).not.toBe(blobId(Buffer.alloc(32, 2), data));
    expect(blobId(Buffer.alloc(32, 1), data)).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe("blob codec", () => {
  const codec = new BlobCodec(randomBytes(32), 2);
  it("compresses compressible data and stores random data raw", () => {
    const text = Buffer.from("all work and no play ".repeat(50_000));
    const random = randomBytes(1 << 20);
    const t = codec.encode(text);
    const r = codec.encode(random);
    expect(t.length).toBeLessThan(text.length / 10);
    expect(r.length).toBe(random.length + ENVELOPE_OVERHEAD + 1);
    expect(codec.decode(t, text.length, "t").equals(text)).toBe(true);
    expect(codec.decode(r, random.length, "r").equals(random)).toBe(true);
  });
  it("rejects a length that does not match the index", () => {
    const data = Buffer.from("abc".repeat(100));
    expect(() => codec.decode(codec.encode(data), data.length + 1, "blob")).toThrow(/index says/);
  });
});

describe("pack header", () => {
  const key = randomBytes(32);
  const blobs: PackedBlob[] = [
    { type: "data", id: "a".repeat(64), offset: 0, length: 100, rawLength: 150 },
    { type: "tree", id: "b".repeat(64), offset: 100, length: 50, rawLength: 60 },
  ];
  const pack = Buffer.concat([randomBytes(150), encodePackHeader(key, blobs)]);

  it("round-trips", () => {
    expect(decodePackHeader(key, pack, "p")).toEqual(blobs);
  });
  it("reports a damaged header or a wrong length as INVALID_DATA", () => {
    const bad = Buffer.from(pack);
    bad[160] = bad[160]! ^ 0xff;
    expect(() => decodePackHeader(key, bad, "p")).toThrow(/header/);
    const shortened = Buffer.concat([pack.subarray(0, 10), pack.subarray(150)]);
    try {
      decodePackHeader(key, shortened, "p");
      expect.unreachable();
    } catch (err) {
      expect(hasCode(err, "INVALID_DATA")).toBe(true);
    }
  });
});

describe("trees", () => {
  const node = (name: string, extra: Partial<Node> = {}): Node => ({
    name,
    type: "file",
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtime: "1",
    ctime: "1",
    content: [],
    ...extra,
  });
  it("encodes deterministically, whatever the order of nodes and keys", () => {
    const a = encodeTree([node("b"), node("a", { size: 1 })]);
    const b = encodeTree([{ size: 1, ...node("a") }, node("b")]);
    expect(a.equals(b)).toBe(true);
  });
  it.each([[".."], ["."], [""], ["a/b"], ["a\0b"]])("rejects the unsafe name %j", (name) => {
    const data = Buffer.from(JSON.stringify({ nodes: [node(name)] }));
    expect(() => decodeTree(data, "t")).toThrow(/unsafe entry name/);
  });
  it("rejects duplicate names", () => {
    const data = Buffer.from(JSON.stringify({ nodes: [node("x"), { ...node("x"), type: "symlink" }] }));
    expect(() => decodeTree(data, "t")).toThrow(/duplicate/);
  });
});

describe("repository", () => {
  it("opens with the right password only, and with every added key", async () => {
    const backend = new MemoryBackend();
    const repo = await Repository.init(backend, "right", { kdf: weakKdf });
    await expect(Repository.open(backend, "wrong")).rejects.toSatisfy((e: unknown) =>
      hasCode(e, "WRONG_PASSWORD"),
    );
    await repo.addKey("second", weakKdf);
    expect((await Repository.open(backend, "second")).id).toBe(repo.id);
    expect((await Repository.open(backend, "right")).config).toEqual(repo.config);
    expect(await repo.listKeys()).toHaveLength(2);
  });

  it("reports NO_REPOSITORY for an empty location", async () => {
    await expect(Repository.open(new MemoryBackend(), "x")).rejects.toSatisfy((e: unknown) =>
      hasCode(e, "NO_REPOSITORY"),
    );
  });

  it("stores blobs in packs, indexes them, and verifies them on load", async () => {
    const backend = new MemoryBackend();
    const repo = await Repository.init(backend, "pw", { kdf: weakKdf, packSize: 4096 });
    const writer = new PackWriter(repo);
    const blobs = Array.from({ length: 20 }, (_, i) => randomBytes(1000 + i));
    const ids: string[] = [];
    for (const b of blobs) ids.push(await writer.addPlain("data", b));
    const treeId = await writer.addPlain("tree", encodeTree([]));
    await writer.flush();
    await repo.saveDocument("index", { version: 1, packs: writer.takeNewPacks() });

    const reopened = await Repository.open(backend, "pw");
    await reopened.loadIndex();
    expect(reopened.index.blobCount).toBe(21);
    expect(reopened.index.isTreePack(reopened.index.get(treeId)!.pack)).toBe(true);
    for (let i = 0; i < blobs.length; i++)
      expect((await reopened.loadBlob(ids[i]!)).equals(blobs[i]!)).toBe(true);
    // Dedup: the same bytes are not stored twice.
    expect(writer.claim(ids[0]!)).toBe(false);
  });
});
