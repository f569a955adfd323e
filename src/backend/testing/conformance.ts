/**
 * The conformance suite every Backend runs: the MUST/MAY contracts of src/backend/backend.ts as tests.
 *
 * Each backend's test file calls describeBackend with a factory; the suite knows nothing about where the
 * bytes go, so the same checks hold a local directory, SFTP, S3 and the HTTP vault to one behaviour. The
 * factory MUST return an empty backend each time (a fresh directory, bucket prefix, ...); the suite closes
 * the backend and then calls cleanup, which must cope with files still under retention.
 *
 * Besides the interface's explicit contracts the suite pins down two things callers rely on: a SaveSource
 * may reuse its buffer once the backend asks for the next piece, and an operation given an already aborted
 * signal has no effect.
 */

import { createCipheriv, createHash, randomBytes } from "node:crypto";

import { afterEach, beforeEach, describe, expect, it, type TestContext } from "vitest";

import {
  FILE_TYPES,
  type Backend,
  type FileDigest,
  type FileHandle,
  type FileInfo,
  type FileType,
  type SaveSource,
} from "../backend.js";
import { bufferSource } from "../backend.js";
import { hasCode, isAlreadyExists, isNotFound, type ErrorCode } from "../../core/errors.js";
import { systemClock } from "../../core/clock.js";

export interface BackendFixture {
  readonly backend: Backend;
  /** Removes whatever the test stored; called after the suite has closed the backend. */
  cleanup(): Promise<void>;
}

export interface ConformanceOptions {
  /** Size of the streamed round trip; 256 MiB by default. Backends that keep data in memory pass less. */
  readonly largeObjectBytes?: number;
}

const MiB = 1024 * 1024;
const DEFAULT_LARGE_OBJECT_BYTES = 256 * MiB;
/** How much the process may grow while streaming the large object: a bound that forbids buffering it. */
const MAX_RSS_GROWTH_BYTES = 128 * MiB;
const LARGE_OBJECT_TIMEOUT_MS = 600_000;

export function describeBackend(
  name: string,
  factory: () => Promise<BackendFixture>,
  options: ConformanceOptions = {},
): void {
  describe(`backend conformance: ${name}`, () => {
    let fixture: BackendFixture | undefined;
    let backend!: Backend;

    beforeEach(async () => {
      fixture = await factory();
      backend = fixture.backend;
    });

    afterEach(async () => {
      if (fixture === undefined) return;
      const current = fixture;
      fixture = undefined;
      try {
        await current.backend.close();
      } finally {
        await current.cleanup();
      }
    });

    describe("missing files", () => {
      it("starts empty: list yields nothing for every type", async () => {
        for (const type of FILE_TYPES) expect(await collect(backend.list(type)), type).toEqual([]);
      });

      it("stat, load, openRead and remove of a missing file throw NOT_FOUND", async () => {
        for (const type of FILE_TYPES) {
          const h = newHandle(type);
          await expectCode(backend.stat(h), "NOT_FOUND");
          await expectCode(backend.load(h), "NOT_FOUND");
          await expectCode(backend.load(h, { offset: 0, length: 1 }), "NOT_FOUND");
          await expectCode(collect(backend.openRead(h)), "NOT_FOUND");
          await expectCode(backend.remove(h), "NOT_FOUND");
        }
      });

      it("remove, then stat, load and list no longer see the file", async () => {
        const h = newHandle("index");
        await backend.save(h, bufferSource(randomBytes(1000)));
        await backend.remove(h);
        await expectCode(backend.stat(h), "NOT_FOUND");
        await expectCode(backend.load(h), "NOT_FOUND");
        await expectCode(backend.remove(h), "NOT_FOUND");
        expect(await collect(backend.list("index"))).toEqual([]);
      });
    });

    describe("save and load", () => {
      it("round-trips a file of each type, with stat reporting its size", async () => {
        for (const [i, type] of FILE_TYPES.entries()) {
          const h = newHandle(type);
          const data = randomBytes(100 + i * 777);
          await backend.save(h, bufferSource(data));
          expect(equalBytes(await backend.load(h), data), type).toBe(true);
          expect(await backend.stat(h)).toEqual({ name: h.name, size: data.length });
        }
      });

      it("round-trips an empty file", async () => {
        const h = newHandle("snapshot");
        await backend.save(h, bufferSource(new Uint8Array(0)));
        expect((await backend.load(h)).length).toBe(0);
        expect(await backend.stat(h)).toEqual({ name: h.name, size: 0 });
        expect(await collect(backend.list("snapshot"))).toEqual([{ name: h.name, size: 0 }]);
        expect(await readAll(backend.openRead(h))).toHaveLength(0);
      });

      it("stores a copy: changing the saved or the loaded buffer does not change the file", async () => {
        const h = newHandle("key");
        const data = randomBytes(4096);
        const original = Buffer.from(data);
        await backend.save(h, bufferSource(data));
        data.fill(0);
        const loaded = await backend.load(h);
        loaded.fill(1);
        expect(equalBytes(await backend.load(h), original)).toBe(true);
      });

      it("lets a source reuse its buffer once the next piece is asked for", async () => {
        const h = newHandle("pack");
        const pieceBytes = 64 * 1024;
        const pieces = 5;
        const source: SaveSource = {
          length: pieceBytes * pieces,
          async *open() {
            const buffer = Buffer.alloc(pieceBytes);
            for (let i = 0; i < pieces; i++) {
              await Promise.resolve();
              yield buffer.fill(i + 1);
            }
          },
        };
        await backend.save(h, source);
        const expected = Buffer.concat(
          Array.from({ length: pieces }, (_, i) => Buffer.alloc(pieceBytes, i + 1)),
        );
        expect(equalBytes(await backend.load(h), expected)).toBe(true);
      });

      it("save without ifAbsent replaces an existing file", async () => {
        const h = newHandle("lock");
        await backend.save(h, bufferSource(randomBytes(5000)));
        const replacement = randomBytes(1234);
        await backend.save(h, bufferSource(replacement));
        expect(equalBytes(await backend.load(h), replacement)).toBe(true);
        expect(await backend.stat(h)).toEqual({ name: h.name, size: replacement.length });
        expect(await collect(backend.list("lock"))).toEqual([{ name: h.name, size: replacement.length }]);
      });

      it("save with ifAbsent stores a new file, then refuses with ALREADY_EXISTS and keeps the old content", async () => {
        const h = newHandle("key");
        const original = randomBytes(3000);
        await backend.save(h, bufferSource(original), { ifAbsent: true });
        await expectCode(
          backend.save(h, bufferSource(randomBytes(10)), { ifAbsent: true }),
          "ALREADY_EXISTS",
        );
        expect(equalBytes(await backend.load(h), original)).toBe(true);
        expect(await collect(backend.list("key"))).toEqual([{ name: h.name, size: original.length }]);
      });

      it("of concurrent ifAbsent saves of one name exactly one wins, and its content is stored", async () => {
        const h = newHandle("lock");
        const contents = Array.from({ length: 8 }, () => randomBytes(64 * 1024));
        const results = await Promise.allSettled(
          contents.map((data) => backend.save(h, bufferSource(data), { ifAbsent: true })),
        );
        const winners = results.flatMap((r, i) => (r.status === "fulfilled" ? [i] : []));
        expect(winners).toHaveLength(1);
        for (const r of results) {
          if (r.status === "rejected") expect(isAlreadyExists(r.reason), describeError(r.reason)).toBe(true);
        }
        const winner = contents[winners[0] ?? -1];
        expect(winner).toBeDefined();
        expect(equalBytes(await backend.load(h), winner ?? Buffer.alloc(0))).toBe(true);
      });

      it("20 concurrent saves of distinct files all land", async () => {
        const files = Array.from({ length: 20 }, (_, i) => ({
          h: newHandle("pack"),
          data: randomBytes(1 + i * 3001),
        }));
        await Promise.all(files.map(({ h, data }) => backend.save(h, bufferSource(data))));
        expect(sortByName(await collect(backend.list("pack")))).toEqual(
          sortByName(files.map(({ h, data }) => ({ name: h.name, size: data.length }))),
        );
        for (const { h, data } of files) expect(equalBytes(await backend.load(h), data)).toBe(true);
      });

      it("refuses malformed names instead of storing them", async () => {
        const hex = "ab".repeat(32);
        const malformed: FileHandle[] = [
          { type: "pack", name: "" },
          { type: "pack", name: hex.toUpperCase() },
          { type: "pack", name: hex.slice(1) },
          { type: "key", name: `../${hex.slice(3)}` },
          { type: "snapshot", name: `${hex.slice(1)}/` },
          { type: "config", name: hex },
        ];
        for (const h of malformed) {
          await expect(backend.save(h, bufferSource(randomBytes(10))), h.name).rejects.toThrow();
          await expect(backend.stat(h), h.name).rejects.toThrow();
        }
        for (const type of FILE_TYPES) expect(await collect(backend.list(type)), type).toEqual([]);
      });
    });

    describe("ranges and streaming", () => {
      it("load with a range reads the middle, is short past the end and empty beyond it", async () => {
        const h = newHandle("pack");
        const data = randomBytes(10_000);
        await backend.save(h, bufferSource(data));
        const cases: [offset: number, length: number | undefined, expected: Buffer][] = [
          [0, undefined, data],
          [1234, 4321, data.subarray(1234, 1234 + 4321)],
          [5000, undefined, data.subarray(5000)],
          [9000, 5000, data.subarray(9000)],
          [9999, 1, data.subarray(9999)],
          [0, 0, Buffer.alloc(0)],
          [10_000, undefined, Buffer.alloc(0)],
          [10_000, 10, Buffer.alloc(0)],
          [20_000, 10, Buffer.alloc(0)],
        ];
        for (const [offset, length, expected] of cases) {
          const range = length === undefined ? { offset } : { offset, length };
          const what = `offset ${offset} length ${length}`;
          expect(equalBytes(await backend.load(h, range), expected), what).toBe(true);
          expect(equalBytes(await readAll(backend.openRead(h, range)), expected), `openRead ${what}`).toBe(
            true,
          );
        }
      });

      it("openRead streams a multi-piece file, whole and by range", async () => {
        const h = newHandle("pack");
        const data = randomBytes(3 * MiB + 12_345);
        await backend.save(h, bufferSource(data));
        expect(equalBytes(await readAll(backend.openRead(h)), data)).toBe(true);
        const range = { offset: MiB - 7, length: 2 * MiB + 11 };
        const expected = data.subarray(range.offset, range.offset + range.length);
        expect(equalBytes(await readAll(backend.openRead(h, range)), expected)).toBe(true);
      });

      it("a reader that stops early leaves the file usable", async () => {
        const h = newHandle("pack");
        await backend.save(h, bufferSource(randomBytes(3 * MiB)));
        for await (const piece of backend.openRead(h)) {
          expect(piece.length).toBeGreaterThan(0);
          break;
        }
        await backend.remove(h);
        await expectCode(backend.stat(h), "NOT_FOUND");
      });

      it(
        "streams a large object through save and openRead without holding it in memory",
        async () => {
          const size = options.largeObjectBytes ?? DEFAULT_LARGE_OBJECT_BYTES;
          const rss = new PeakRss();
          const source = deterministicSource(size, "conformance large object", () => rss.sample());
          const h = newHandle("pack");

          const sampler = setInterval(() => rss.sample(), 20);
          let digest: string;
          let stored: FileDigest | undefined;
          try {
            await backend.save(h, source);
            expect(await backend.stat(h)).toEqual({ name: h.name, size });
            digest = await sha256Of(backend.openRead(h), () => rss.sample());
            // Where the backend hashes remotely, its digest streams too: within the same memory bound.
            stored = await backend.digest?.(h);
          } finally {
            clearInterval(sampler);
          }
          const growth = rss.growth();
          // Computed afterwards so its garbage cannot inflate the baseline the growth is measured from.
          const expectedDigest = await sha256Of(source.open());
          expect(digest).toBe(expectedDigest);
          if (backend.digest) expect(stored).toEqual({ sha256: expectedDigest, size });
          expect(growth, `RSS grew by ${Math.round(growth / MiB)} MiB`).toBeLessThan(MAX_RSS_GROWTH_BYTES);
        },
        LARGE_OBJECT_TIMEOUT_MS,
      );
    });

    describe("list", () => {
      it("yields each file exactly once with its size, and keeps types apart", async () => {
        const expected = new Map<FileType, FileInfo[]>(FILE_TYPES.map((t) => [t, []]));
        const counts: Record<FileType, number> = {
          config: 1,
          key: 2,
          lock: 1,
          snapshot: 3,
          index: 2,
          pack: 7,
        };
        for (const type of FILE_TYPES) {
          for (let i = 0; i < counts[type]; i++) {
            const h = newHandle(type);
            const data = randomBytes(10 + i * 101 + type.length);
            await backend.save(h, bufferSource(data));
            expected.get(type)?.push({ name: h.name, size: data.length });
          }
        }
        for (const type of FILE_TYPES) {
          const listed = await collect(backend.list(type));
          expect(new Set(listed.map((f) => f.name)).size, `${type} listed twice`).toBe(listed.length);
          expect(sortByName(listed), type).toEqual(sortByName(expected.get(type) ?? []));
        }
      });

      it("a file being saved is invisible until its save completes", async () => {
        const h = newHandle("pack");
        const gate = new Gate();
        const firstPieceTaken = new Gate();
        const source: SaveSource = {
          length: 2 * MiB,
          async *open() {
            yield randomBytes(MiB);
            firstPieceTaken.open();
            await gate.wait();
            yield randomBytes(MiB);
          },
        };
        const saving = backend.save(h, source);
        try {
          await firstPieceTaken.wait();
          expect(await collect(backend.list("pack"))).toEqual([]);
          await expectCode(backend.stat(h), "NOT_FOUND");
        } finally {
          gate.open();
          await saving;
        }
        expect(await collect(backend.list("pack"))).toEqual([{ name: h.name, size: 2 * MiB }]);
      });
    });

    describe("temporary files", () => {
      it("removeStaleTempFiles, where offered, takes no stored file and no save in progress", async (ctx) => {
        const removeStale = backend.removeStaleTempFiles?.bind(backend);
        if (removeStale === undefined) return ctx.skip("the backend leaves no temporary files");
        const stored = new Map<FileType, FileInfo[]>();
        for (const type of FILE_TYPES) {
          const h = newHandle(type);
          const data = randomBytes(100 + type.length);
          await backend.save(h, bufferSource(data));
          stored.set(type, [{ name: h.name, size: data.length }]);
        }
        // A save paused half way has its temporary file (or upload) open: an hour's grace leaves it alone.
        const h = newHandle("pack");
        const gate = new Gate();
        const firstPieceTaken = new Gate();
        const saving = backend.save(h, {
          length: 2 * MiB,
          async *open() {
            yield randomBytes(MiB);
            firstPieceTaken.open();
            await gate.wait();
            yield randomBytes(MiB);
          },
        });
        try {
          await firstPieceTaken.wait();
          expect(await removeStale(60 * 60 * 1000)).toBe(0);
        } finally {
          gate.open();
          await saving;
        }
        stored.get("pack")?.push({ name: h.name, size: 2 * MiB });
        // Nothing left over once every save has finished, whatever the grace.
        expect(await removeStale(0)).toBe(0);
        for (const type of FILE_TYPES) {
          expect(sortByName(await collect(backend.list(type))), type).toEqual(
            sortByName(stored.get(type) ?? []),
          );
        }
      });
    });

    describe("digest", () => {
      it("digest, where offered, is the SHA-256 and size of each stored file's bytes", async (ctx) => {
        const digest = backend.digest?.bind(backend);
        if (digest === undefined) return ctx.skip("the backend cannot hash files itself");
        for (const [i, type] of FILE_TYPES.entries()) {
          const h = newHandle(type);
          const data = randomBytes(i === 0 ? 0 : 100 + i * 4099);
          await backend.save(h, bufferSource(data));
          expect(await digest(h), type).toEqual({
            sha256: createHash("sha256").update(data).digest("hex"),
            size: data.length,
          });
        }
      });

      it("digest follows a replacing save (it hashes what is stored, not what was once saved)", async (ctx) => {
        const digest = backend.digest?.bind(backend);
        if (digest === undefined) return ctx.skip("the backend cannot hash files itself");
        const h = newHandle("lock");
        await backend.save(h, bufferSource(randomBytes(3000)));
        const replacement = randomBytes(5000);
        await backend.save(h, bufferSource(replacement));
        expect((await digest(h)).sha256).toBe(createHash("sha256").update(replacement).digest("hex"));
      });

      it("digest of a missing file throws NOT_FOUND; an aborted signal rejects it", async (ctx) => {
        const digest = backend.digest?.bind(backend);
        if (digest === undefined) return ctx.skip("the backend cannot hash files itself");
        for (const type of FILE_TYPES) await expectCode(digest(newHandle(type)), "NOT_FOUND");
        const h = newHandle("index");
        await backend.save(h, bufferSource(randomBytes(100)));
        const aborted = AbortSignal.abort();
        await rejectionOf(digest(h, aborted));
      });
    });

    describe("failures and cancellation", () => {
      it("a save whose source throws half way leaves no file behind", async () => {
        const h = newHandle("pack");
        const failure = new Error("the source failed half way, on purpose");
        const err = await rejectionOf(backend.save(h, failingSource(4 * MiB, 2, failure)));
        expect(causeChain(err), describeError(err)).toContain(failure);
        expect(await collect(backend.list("pack"))).toEqual([]);
        await expectCode(backend.stat(h), "NOT_FOUND");
        await expectCode(backend.load(h), "NOT_FOUND");
      });

      it("a replacing save whose source throws half way keeps the old content", async () => {
        const h = newHandle("index");
        const original = randomBytes(2 * MiB);
        await backend.save(h, bufferSource(original));
        const failure = new Error("the replacement failed half way, on purpose");
        await rejectionOf(backend.save(h, failingSource(4 * MiB, 2, failure)));
        expect(equalBytes(await backend.load(h), original)).toBe(true);
        expect(await collect(backend.list("index"))).toEqual([{ name: h.name, size: original.length }]);
      });

      it("a source yielding fewer or more bytes than its length is refused and leaves nothing", async () => {
        const short = newHandle("pack");
        await rejectionOf(backend.save(short, { length: 1000, open: () => pieces([randomBytes(600)]) }));
        const long = newHandle("pack");
        await rejectionOf(
          backend.save(long, { length: 1000, open: () => pieces([randomBytes(600), randomBytes(600)]) }),
        );
        expect(await collect(backend.list("pack"))).toEqual([]);
        await expectCode(backend.stat(short), "NOT_FOUND");
        await expectCode(backend.stat(long), "NOT_FOUND");
      });

      it("an already aborted signal rejects every operation, which then has no effect", async () => {
        const signal = AbortSignal.abort();
        const existing = newHandle("snapshot");
        await backend.save(existing, bufferSource(randomBytes(100)));
        const fresh = newHandle("snapshot");

        await rejectionOf(backend.save(fresh, bufferSource(randomBytes(100)), { signal }));
        await rejectionOf(backend.stat(existing, signal));
        await rejectionOf(backend.load(existing, undefined, signal));
        await rejectionOf(collect(backend.openRead(existing, undefined, signal)));
        await rejectionOf(collect(backend.list("snapshot", signal)));
        await rejectionOf(backend.remove(existing, signal));

        await expectCode(backend.stat(fresh), "NOT_FOUND");
        expect(await collect(backend.list("snapshot"))).toEqual([{ name: existing.name, size: 100 }]);
      });

      it("aborting during a save rejects it and leaves no file", async () => {
        const h = newHandle("pack");
        const controller = new AbortController();
        const source: SaveSource = {
          length: 4 * MiB,
          async *open() {
            for (let i = 0; i < 4; i++) {
              if (i === 2) controller.abort();
              await Promise.resolve();
              yield randomBytes(MiB);
            }
          },
        };
        await rejectionOf(backend.save(h, source, { signal: controller.signal }));
        expect(await collect(backend.list("pack"))).toEqual([]);
        await expectCode(backend.stat(h), "NOT_FOUND");
      });
    });

    describe("retention", () => {
      it("a fresh file has no retention; extendRetention sets one that getRetention reads back", async (ctx) => {
        const api = retentionApi(ctx, backend);
        const h = newHandle("snapshot");
        await backend.save(h, bufferSource(randomBytes(100)));
        expect(await api.get(h)).toBeUndefined();
        const until = wholeSecondsFromNow(10 * 60);
        await api.extend(h, { mode: api.mode, until });
        const read = await api.get(h);
        expect(read?.mode).toBe(api.mode);
        expect(Math.abs((read?.until.getTime() ?? 0) - until.getTime())).toBeLessThan(1000);
      });

      it("extendRetention lengthens a retention and never shortens it", async (ctx) => {
        const api = retentionApi(ctx, backend);
        const h = newHandle("index");
        await backend.save(h, bufferSource(randomBytes(100)));
        await api.extend(h, { mode: api.mode, until: wholeSecondsFromNow(10 * 60) });
        const later = wholeSecondsFromNow(20 * 60);
        await api.extend(h, { mode: api.mode, until: later });
        expect(Math.abs(((await api.get(h))?.until.getTime() ?? 0) - later.getTime())).toBeLessThan(1000);

        // Shortening may be refused or ignored; either way the later date must stand.
        const shortened = api.extend(h, { mode: api.mode, until: wholeSecondsFromNow(5 * 60) });
        await shortened.catch((err: unknown) => {
          expect(hasCode(err, "RETENTION_LOCKED"), describeError(err)).toBe(true);
        });
        expect((await api.get(h))?.until.getTime() ?? 0).toBeGreaterThan(later.getTime() - 1000);
      });

      it("remove of a retained file is refused with RETENTION_LOCKED and the file survives", async (ctx) => {
        const api = retentionApi(ctx, backend);
        const h = newHandle("pack");
        const data = randomBytes(1000);
        await backend.save(h, bufferSource(data));
        await api.extend(h, { mode: api.mode, until: wholeSecondsFromNow(10 * 60) });
        await expectCode(backend.remove(h), "RETENTION_LOCKED");
        expect(equalBytes(await backend.load(h), data)).toBe(true);
        expect(await collect(backend.list("pack"))).toEqual([{ name: h.name, size: data.length }]);
      });

      it("getRetention and extendRetention of a missing file throw NOT_FOUND", async (ctx) => {
        const api = retentionApi(ctx, backend);
        const h = newHandle("pack");
        await expectCode(api.get(h), "NOT_FOUND");
        await expectCode(api.extend(h, { mode: api.mode, until: wholeSecondsFromNow(60) }), "NOT_FOUND");
      });
    });
  });
}

/**
 * A SaveSource of `length` pseudo-random bytes in 1 MiB pieces, the same on every open(), that never
 * exists in memory whole: AES-CTR over zeros is fast, deterministic and incompressible.
 */
export function deterministicSource(length: number, seed: string, onPiece?: () => void): SaveSource {
  const key = createHash("sha256").update(seed).digest();
  return {
    length,
    // eslint-disable-next-line @typescript-eslint/require-await
    async *open() {
      const cipher = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
      const zeros = Buffer.alloc(MiB);
      for (let produced = 0; produced < length; ) {
        const n = Math.min(MiB, length - produced);
        onPiece?.();
        yield cipher.update(n === MiB ? zeros : zeros.subarray(0, n));
        produced += n;
      }
    },
  };
}

type RetentionApi = {
  readonly mode: "governance" | "compliance";
  get: NonNullable<Backend["getRetention"]>;
  extend: NonNullable<Backend["extendRetention"]>;
};

/** Skips the test unless the backend enforces retention; prefers governance, which cleanup can bypass. */
function retentionApi(ctx: TestContext, backend: Backend): RetentionApi {
  const modes = backend.capabilities.retentionModes;
  ctx.skip(modes.length === 0, "the backend has no retention");
  const getRetention = backend.getRetention?.bind(backend);
  const extendRetention = backend.extendRetention?.bind(backend);
  if (getRetention === undefined || extendRetention === undefined) {
    throw new Error("capabilities.retentionModes is not empty but getRetention/extendRetention are missing");
  }
  return {
    mode: modes.includes("governance") ? "governance" : "compliance",
    get: getRetention,
    extend: extendRetention,
  };
}

function newHandle(type: FileType): FileHandle {
  return { type, name: type === "config" ? "" : randomBytes(32).toString("hex") };
}

/** A source that yields `piecesBeforeFailure` 1 MiB pieces of a `length`-byte file, then throws. */
function failingSource(length: number, piecesBeforeFailure: number, failure: Error): SaveSource {
  return {
    length,
    async *open() {
      for (let i = 0; i < piecesBeforeFailure; i++) {
        await Promise.resolve();
        yield randomBytes(MiB);
      }
      throw failure;
    },
  };
}

// eslint-disable-next-line @typescript-eslint/require-await
async function* pieces(list: readonly Uint8Array[]): AsyncIterable<Uint8Array> {
  yield* list;
}

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of iterable) items.push(item);
  return items;
}

async function readAll(iterable: AsyncIterable<Uint8Array>): Promise<Buffer> {
  return Buffer.concat(await collect(iterable));
}

async function sha256Of(iterable: AsyncIterable<Uint8Array>, onPiece?: () => void): Promise<string> {
  const hash = createHash("sha256");
  for await (const piece of iterable) {
    hash.update(piece);
    onPiece?.();
  }
  return hash.digest("hex");
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}

function sortByName(files: readonly FileInfo[]): FileInfo[] {
  return [...files].map((f) => ({ name: f.name, size: f.size })).sort((a, b) => a.name.localeCompare(b.name));
}

function wholeSecondsFromNow(seconds: number): Date {
  return new Date(Math.ceil(systemClock.now().getTime() / 1000) * 1000 + seconds * 1000);
}

const RESOLVED = Symbol("resolved");

/** The error a promise rejects with; fails the test if it resolves. */
async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  const outcome = await promise.then(
    () => RESOLVED,
    (err: unknown) => ({ err }),
  );
  if (outcome === RESOLVED) expect.fail("expected the operation to fail, but it succeeded");
  return (outcome as { err: unknown }).err;
}

async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  const err = await rejectionOf(promise);
  const matches = code === "NOT_FOUND" ? isNotFound(err) : hasCode(err, code);
  expect(matches, `expected ${code}, got ${describeError(err)}`).toBe(true);
}

function causeChain(err: unknown): unknown[] {
  const chain: unknown[] = [];
  for (
    let e = err;
    e !== undefined && e !== null && chain.length < 16;
    e = (e as { cause?: unknown }).cause
  ) {
    chain.push(e);
  }
  return chain;
}

function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  const shownCode = typeof code === "string" || typeof code === "number" ? ` ${code}` : "";
  return `${err.name}${shownCode}: ${err.message}`;
}

/** The highest resident set size seen since construction. */
class PeakRss {
  private readonly baseline = process.memoryUsage.rss();
  private peak = this.baseline;

  sample(): void {
    this.peak = Math.max(this.peak, process.memoryUsage.rss());
  }

  growth(): number {
    return this.peak - this.baseline;
  }
}

/** A one-shot latch: wait() resolves once open() has been called. */
class Gate {
  private release!: () => void;
  private readonly opened = new Promise<void>((resolve) => (this.release = resolve));

  open(): void {
    this.release();
  }

  wait(): Promise<void> {
    return this.opened;
  }
}
