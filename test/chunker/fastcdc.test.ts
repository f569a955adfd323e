import { createHash, createHmac } from "node:crypto";
import { describe, it, expect } from "vitest";
import {
  Chunker,
  type ChunkerParams,
  DEFAULT_CHUNKER,
  chunkBuffer,
  gearTable,
  validateChunkerParams,
} from "../../src/chunker/fastcdc.js";

const KiB = 1024;
const MiB = 1024 * KiB;

const SMALL = { minSize: 2 * KiB, avgSize: 8 * KiB, maxSize: 64 * KiB };
/** Sizes whose scan regions end in the unrolled loop's remainder (see the test that uses it). */
const TAIL_LOOP_SIZES = { minSize: 65, avgSize: 128, maxSize: 259 };

/** Deterministic bytes from xorshift32, written byte by byte so they do not depend on platform endianness. */
function pseudoRandomBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
    if (i + 1 < length) out[i + 1] = (x >>> 8) & 0xff;
    if (i + 2 < length) out[i + 2] = (x >>> 16) & 0xff;
    if (i + 3 < length) out[i + 3] = x >>> 24;
  }
  return out;
}

function seedFrom(n: number): Uint8Array {
  return pseudoRandomBytes(32, 0x9e3779b9 ^ n);
}

const SEED_COUNTING = Uint8Array.from({ length: 32 }, (_, i) => i);
const SEED_A = seedFrom(1);
const SEED_B = seedFrom(2);

let cachedRandom64MiB: Uint8Array | undefined;
function random64MiB(): Uint8Array {
  cachedRandom64MiB ??= pseudoRandomBytes(64 * MiB, 12345);
  return cachedRandom64MiB;
}

/** Random data with runs of zeros and of a short repeating pattern: exercises maxSize cuts and low entropy. */
function mixedData(length: number, seed: number): Uint8Array {
  const data = pseudoRandomBytes(length, seed);
  const pattern = pseudoRandomBytes(37, seed + 1);
  for (let regionStart = 0; regionStart < length; regionStart += 1_000_003) {
    data.fill(0, regionStart + 200_000, Math.min(length, regionStart + 330_000));
    for (let i = regionStart + 500_000; i < Math.min(length, regionStart + 620_000); i++) {
      data[i] = pattern[i % pattern.length]!;
    }
  }
  return data;
}

/**
 * The algorithm exactly as the module header states it, byte by byte with uint32 math and no tricks.
 * The optimized scan must produce identical boundaries.
 */
function referenceChunkLengths(params: ChunkerParams, data: Uint8Array): number[] {
  const gear = gearTable(params.seed);
  const bits = Math.log2(params.avgSize);
  const maskS = (0xffffffff << (32 - (bits + 2))) >>> 0;
  const maskL = (0xffffffff << (32 - (bits - 2))) >>> 0;
  const lengths: number[] = [];
  for (let start = 0; start < data.length; ) {
    const limit = Math.min(data.length - start, params.maxSize);
    let length = limit;
    let h = 0;
    for (let j = params.minSize; j < limit; j++) {
      h = ((h << 1) + gear[data[start + j]!]!) >>> 0;
      const mask = j < params.avgSize ? maskS : maskL;
      if ((h & mask) >>> 0 === 0) {
        length = j + 1;
        break;
      }
    }
    lengths.push(length);
    start += length;
  }
  return lengths;
}

function popcount32(x: number): number {
  let count = 0;
  for (let v = x >>> 0; v !== 0; v >>>= 1) count += v & 1;
  return count;
}

function chunkHashes(data: Uint8Array, lengths: number[]): string[] {
  const hashes: string[] = [];
  let offset = 0;
  for (const length of lengths) {
    hashes.push(
      createHash("sha256")
        .update(data.subarray(offset, offset + length))
        .digest("hex"),
    );
    offset += length;
  }
  return hashes;
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

function expectSizesWithinBounds(lengths: number[], params: { minSize: number; maxSize: number }): void {
  expect(lengths.length).toBeGreaterThan(0);
  lengths.forEach((length, index) => {
    const isLast = index === lengths.length - 1;
    expect(length).toBeGreaterThanOrEqual(isLast ? 1 : params.minSize);
    expect(length).toBeLessThanOrEqual(params.maxSize);
  });
}

/**
 * What the streaming backup worker does: a fixed buffer holding the current chunk's start, compacted
 * (unconsumed bytes moved to the front) and refilled in odd-sized reads whenever the chunker asks for more.
 * EOF is only learned from a read that returns nothing, as with a real file.
 */
function chunkStreaming(
  chunker: Chunker,
  source: Uint8Array,
  bufferSize: number,
  readSize: number,
): { lengths: number[]; refills: number } {
  const buffer = new Uint8Array(bufferSize);
  let start = 0;
  let end = 0;
  let sourceOffset = 0;
  let atEof = false;
  let refills = 0;
  const lengths: number[] = [];
  for (;;) {
    const length = chunker.nextChunkLength(buffer, start, end, atEof);
    if (length > 0) {
      lengths.push(length);
      start += length;
      continue;
    }
    if (atEof) break;
    buffer.copyWithin(0, start, end);
    end -= start;
    start = 0;
    const readLength = Math.min(readSize, buffer.length - end, source.length - sourceOffset);
    if (readLength === 0 && end === buffer.length)
      throw new Error("chunker wants more than the buffer holds");
    buffer.set(source.subarray(sourceOffset, sourceOffset + readLength), end);
    end += readLength;
    sourceOffset += readLength;
    refills++;
    if (readLength === 0) atEof = true;
  }
  return { lengths, refills };
}

describe("gearTable", () => {
  it("follows the HMAC-SHA256 derivation (values checked independently with openssl)", () => {
    const table = gearTable(SEED_COUNTING);
    expect(table).toBeInstanceOf(Uint32Array);
    expect(table.length).toBe(256);
    // printf 'bulwark-gear\x00\x00' | openssl dgst -sha256 -mac HMAC -macopt hexkey:000102...1f
    expect(table[0]).toBe(0x727831fc);
    expect(table[1]).toBe(0x427345d3);
    expect(table[255]).toBe(0xf735238c);
    for (const i of [0, 7, 128, 200, 255]) {
      const message = Buffer.concat([Buffer.from("bulwark-gear"), Buffer.from([i >> 8, i & 0xff])]);
      expect(table[i]).toBe(createHmac("sha256", SEED_COUNTING).update(message).digest().readUInt32BE(0));
    }
  });

  it("is deterministic per seed and differs between seeds", () => {
    expect(gearTable(SEED_A)).toEqual(gearTable(Uint8Array.from(SEED_A)));
    expect(gearTable(SEED_A)).not.toEqual(gearTable(SEED_B));
    expect(new Set(gearTable(SEED_A)).size).toBe(256);
  });

  it("rejects a seed that is not 32 bytes", () => {
    expect(() => gearTable(new Uint8Array(16))).toThrow(
      /seed must be a Uint8Array of 32 bytes, got 16 bytes/,
    );
    expect(() => gearTable([1, 2, 3] as unknown as Uint8Array)).toThrow(/seed must be a Uint8Array/);
  });
});

describe("chunker parameters", () => {
  it("exports the default sizes", () => {
    expect(DEFAULT_CHUNKER).toEqual({ minSize: 512 * KiB, avgSize: 1 * MiB, maxSize: 8 * MiB });
    expect(() => new Chunker({ ...DEFAULT_CHUNKER, seed: SEED_A })).not.toThrow();
  });

  it("accepts the extreme valid values", () => {
    expect(() =>
      validateChunkerParams({ minSize: 64, avgSize: 128, maxSize: 64 * MiB, seed: SEED_A }),
    ).not.toThrow();
  });

  const invalid: [string, Partial<ChunkerParams>, RegExp][] = [
    ["avgSize not a power of two", { avgSize: 3 * MiB }, /avgSize must be a power of two, got 3145728/],
    ["minSize equal to avgSize", { minSize: 1 * MiB }, /minSize < avgSize < maxSize/],
    ["minSize above avgSize", { minSize: 2 * MiB }, /minSize < avgSize < maxSize/],
    ["avgSize equal to maxSize", { maxSize: 1 * MiB }, /minSize < avgSize < maxSize/],
    ["maxSize above 64 MiB", { maxSize: 64 * MiB + 1 }, /maxSize must be at most 67108864 bytes/],
    ["minSize below 64", { minSize: 32, avgSize: 128, maxSize: 1024 }, /minSize must be at least 64/],
    ["non-integer size", { minSize: 1000.5 }, /minSize must be a positive integer, got 1000.5/],
    ["NaN size", { maxSize: Number.NaN }, /maxSize must be a positive integer, got NaN/],
    ["negative size", { avgSize: -4 }, /avgSize must be a positive integer/],
    ["short seed", { seed: new Uint8Array(31) }, /seed must be a Uint8Array of 32 bytes, got 31 bytes/],
    [
      "seed of the wrong type",
      { seed: "x".repeat(32) as unknown as Uint8Array },
      /seed must be a Uint8Array/,
    ],
  ];
  for (const [name, override, message] of invalid) {
    it(`rejects ${name}`, () => {
      const params = { ...DEFAULT_CHUNKER, seed: SEED_A, ...override };
      expect(() => validateChunkerParams(params)).toThrow(message);
      expect(() => new Chunker(params)).toThrow(message);
    });
  }

  it("uses the high bits for its masks, with bits+2 and bits-2 ones", () => {
    // White-box check of step 2 through the reference model's own masks: a chunker whose boundaries match
    // the reference (tested below) must be using these masks.
    const bits = Math.log2(DEFAULT_CHUNKER.avgSize);
    const maskS = (0xffffffff << (32 - (bits + 2))) >>> 0;
    const maskL = (0xffffffff << (32 - (bits - 2))) >>> 0;
    expect([popcount32(maskS), popcount32(maskL)]).toEqual([22, 18]);
    expect(maskS >>> 31).toBe(1);
    expect(maskL & 1).toBe(0);
  });

  it("is not affected by later changes to the caller's seed array", () => {
    const seed = Uint8Array.from(SEED_A);
    const chunker = new Chunker({ ...SMALL, seed });
    seed.fill(0);
    const data = pseudoRandomBytes(512 * KiB, 5);
    expect(chunkBuffer(chunker, data)).toEqual(referenceChunkLengths({ ...SMALL, seed: SEED_A }, data));
    expect(chunker.params.seed).toEqual(SEED_A);
  });
});

describe("FastCDC boundaries", () => {
  it("match a literal implementation of the specification", () => {
    const paramSets = [
      { ...SMALL },
      { minSize: 64, avgSize: 128, maxSize: 256 },
      { minSize: 1001, avgSize: 4096, maxSize: 10_003 },
      // Both scan regions (65..128, 128..259) end 3 bytes past a multiple of 4 from their start, so cuts
      // land in the byte-at-a-time loop after the unrolled one (checked below).
      TAIL_LOOP_SIZES,
      { ...DEFAULT_CHUNKER },
    ];
    for (const sizes of paramSets) {
      const params = { ...sizes, seed: SEED_A };
      const chunker = new Chunker(params);
      const inputs = [pseudoRandomBytes(3 * MiB + 5, 77), mixedData(3 * MiB, 78)];
      if (sizes.maxSize === DEFAULT_CHUNKER.maxSize) inputs.push(pseudoRandomBytes(24 * MiB, 79));
      for (const data of inputs) {
        const expected = referenceChunkLengths(params, data);
        expect(expected.length).toBeGreaterThanOrEqual(2);
        expect(chunkBuffer(chunker, data)).toEqual(expected);
      }
      // Every tail length around the interesting sizes, including the unrolled loop's remainders.
      const edges = [0, 1, 2, 3, 4, 5, sizes.minSize, sizes.avgSize, sizes.maxSize];
      for (const edge of edges) {
        for (let delta = -5; delta <= 5; delta++) {
          const length = edge + delta;
          if (length < 0) continue;
          const data = pseudoRandomBytes(length, 1000 + length);
          expect(chunkBuffer(chunker, data)).toEqual(referenceChunkLengths(params, data));
        }
      }
    }
  });

  it("cut inside the byte-at-a-time remainder of each scan region, not only in the unrolled part", () => {
    const lengths = referenceChunkLengths(
      { ...TAIL_LOOP_SIZES, seed: SEED_A },
      pseudoRandomBytes(3 * MiB + 5, 77),
    );
    // Cuts after relative bytes 125..127 (maskS region) and 256..257 (maskL region; 259 is also maxSize).
    for (const length of [126, 127, 128, 257, 258]) expect(lengths).toContain(length);
  });

  it("pins the boundaries for a fixed seed and input (they are part of the repository format)", () => {
    const lengths = chunkBuffer(
      new Chunker({ ...SMALL, seed: SEED_COUNTING }),
      pseudoRandomBytes(128 * KiB, 42),
    );
    expect(lengths).toEqual([
      9203, 8425, 11838, 8438, 7765, 11874, 8770, 8799, 12544, 9277, 9842, 11111, 10659, 2527,
    ]);
  });

  it("are deterministic: same data and seed give the same cuts", () => {
    const data = mixedData(8 * MiB, 3);
    const first = chunkBuffer(new Chunker({ ...SMALL, seed: SEED_A }), data);
    const second = chunkBuffer(
      new Chunker({ ...SMALL, seed: Uint8Array.from(SEED_A) }),
      Uint8Array.from(data),
    );
    expect(first.length).toBeGreaterThan(100);
    expect(second).toEqual(first);
  });

  it("depend on the seed", () => {
    const data = pseudoRandomBytes(8 * MiB, 4);
    const cutsA = chunkBuffer(new Chunker({ ...SMALL, seed: SEED_A }), data);
    const cutsB = chunkBuffer(new Chunker({ ...SMALL, seed: SEED_B }), data);
    expect(cutsB).not.toEqual(cutsA);
    // Not just shifted a little: most boundary offsets differ.
    const offsets = (lengths: number[]) => new Set(lengths.map((_, i) => sum(lengths.slice(0, i + 1))));
    const offsetsA = offsets(cutsA);
    const shared = [...offsets(cutsB)].filter((offset) => offsetsA.has(offset)).length;
    expect(shared).toBeLessThan(cutsA.length / 4);
  });

  it("keep every chunk between minSize and maxSize except the tail, and cover the input exactly", () => {
    const data = random64MiB();
    const defaults = chunkBuffer(new Chunker({ ...DEFAULT_CHUNKER, seed: SEED_A }), data);
    expectSizesWithinBounds(defaults, DEFAULT_CHUNKER);
    expect(sum(defaults)).toBe(data.length);

    const mixed = mixedData(8 * MiB + 123, 9);
    const small = chunkBuffer(new Chunker({ ...SMALL, seed: SEED_A }), mixed);
    expectSizesWithinBounds(small, SMALL);
    expect(sum(small)).toBe(mixed.length);
    expect(small).toContain(SMALL.maxSize); // the zero runs force maxSize cuts
  });

  it("average close to avgSize on random data (64 MiB, default sizes)", () => {
    const lengths = chunkBuffer(new Chunker({ ...DEFAULT_CHUNKER, seed: SEED_A }), random64MiB());
    const mean = sum(lengths) / lengths.length;
    expect(mean).toBeGreaterThanOrEqual(0.7 * DEFAULT_CHUNKER.avgSize);
    expect(mean).toBeLessThanOrEqual(1.6 * DEFAULT_CHUNKER.avgSize);
  });

  it("work with small sizes (2 KiB / 8 KiB / 64 KiB)", () => {
    const data = pseudoRandomBytes(16 * MiB, 6);
    const lengths = chunkBuffer(new Chunker({ ...SMALL, seed: SEED_B }), data);
    expectSizesWithinBounds(lengths, SMALL);
    expect(sum(lengths)).toBe(data.length);
    const mean = sum(lengths) / lengths.length;
    expect(mean).toBeGreaterThanOrEqual(0.7 * SMALL.avgSize);
    expect(mean).toBeLessThanOrEqual(1.6 * SMALL.avgSize);
  });

  it("cut all-zero input at maxSize", () => {
    // For zeros the gear hash settles at a constant; with this seed it never matches a mask (as for
    // all but a ~2^-17 fraction of seeds), so only maxSize cuts apply.
    const lengths = chunkBuffer(new Chunker({ ...DEFAULT_CHUNKER, seed: SEED_A }), new Uint8Array(20 * MiB));
    expect(lengths).toEqual([8 * MiB, 8 * MiB, 4 * MiB]);
  });

  it("resist shifts: inserting 100 bytes in the middle of 64 MiB changes at most 2 chunks", () => {
    const original = random64MiB();
    const middle = original.length / 2 + 12_345;
    const edited = new Uint8Array(original.length + 100);
    edited.set(original.subarray(0, middle), 0);
    edited.set(pseudoRandomBytes(100, 999), middle);
    edited.set(original.subarray(middle), middle + 100);

    const chunker = new Chunker({ ...DEFAULT_CHUNKER, seed: SEED_A });
    const before = chunkHashes(original, chunkBuffer(chunker, original));
    const after = chunkHashes(edited, chunkBuffer(chunker, edited));
    const beforeSet = new Set(before);
    const afterSet = new Set(after);
    expect(before.length).toBeGreaterThan(40);
    const newChunks = after.filter((hash) => !beforeSet.has(hash));
    const lostChunks = before.filter((hash) => !afterSet.has(hash));
    expect(newChunks.length).toBeGreaterThanOrEqual(1);
    expect(newChunks.length).toBeLessThanOrEqual(2);
    expect(lostChunks.length).toBeLessThanOrEqual(2);
  });
});

describe("Chunker.nextChunkLength (streaming contract)", () => {
  const chunker = new Chunker({ ...SMALL, seed: SEED_A });

  it("waits for maxSize bytes unless at end of file", () => {
    const data = pseudoRandomBytes(SMALL.maxSize + 10, 8);
    expect(chunker.nextChunkLength(data, 0, SMALL.maxSize - 1, false)).toBe(0);
    expect(chunker.nextChunkLength(data, 10, SMALL.maxSize + 9, false)).toBe(0);
    const decided = chunker.nextChunkLength(data, 0, SMALL.maxSize, false);
    expect(decided).toBeGreaterThanOrEqual(SMALL.minSize);
    expect(decided).toBe(chunkBuffer(chunker, data)[0]);
    expect(chunker.nextChunkLength(data, 0, data.length, false)).toBe(decided);
  });

  it("returns the remainder at end of file, and 0 only for an empty remainder", () => {
    const data = pseudoRandomBytes(4 * KiB, 9);
    expect(chunker.nextChunkLength(data, 100, 110, true)).toBe(10);
    expect(chunker.nextChunkLength(data, 0, SMALL.minSize, true)).toBe(SMALL.minSize);
    expect(chunker.nextChunkLength(data, 7, 7, true)).toBe(0);
    expect(chunker.nextChunkLength(data, 7, 7, false)).toBe(0);
    expect(chunkBuffer(chunker, new Uint8Array(0))).toEqual([]);
  });

  it("depends only on bytes from the chunk start, not on the buffer position", () => {
    const data = pseudoRandomBytes(SMALL.maxSize * 2, 10);
    const padded = new Uint8Array(data.length + 777);
    padded.set(data, 777);
    expect(chunker.nextChunkLength(padded, 777, padded.length, false)).toBe(
      chunker.nextChunkLength(data, 0, data.length, false),
    );
  });

  it("rejects ranges outside the buffer", () => {
    const data = new Uint8Array(100);
    expect(() => chunker.nextChunkLength(data, 0, 101, true)).toThrow(RangeError);
    expect(() => chunker.nextChunkLength(data, 50, 40, true)).toThrow(RangeError);
    expect(() => chunker.nextChunkLength(data, -1, 10, true)).toThrow(RangeError);
    expect(() => chunker.nextChunkLength(data, 0.5, 10, true)).toThrow(RangeError);
  });

  it("gives the same cuts through a 16 MiB streaming buffer refilled in 3 MiB + 7 byte reads", () => {
    const data = mixedData(56 * MiB + 4321, 11);
    for (const sizes of [DEFAULT_CHUNKER, SMALL]) {
      const streamingChunker = new Chunker({ ...sizes, seed: SEED_B });
      const whole = chunkBuffer(streamingChunker, data);
      const streamed = chunkStreaming(streamingChunker, data, 16 * MiB, 3 * MiB + 7);
      expect(streamed.refills).toBeGreaterThan(18);
      expect(streamed.lengths).toEqual(whole);
    }
  });
});

describe.skipIf(!process.env.BULWARK_BENCH)("chunker throughput (BULWARK_BENCH=1)", () => {
  it("prints MB/s on random data", () => {
    const data = pseudoRandomBytes(256 * MiB, 2024);
    const report: string[] = [];
    const measure = (label: string, params: Omit<ChunkerParams, "seed">, input: Uint8Array) => {
      const chunker = new Chunker({ ...params, seed: SEED_A });
      let best = Number.POSITIVE_INFINITY;
      let chunks = 0;
      for (let round = 0; round < 7; round++) {
        const started = performance.now();
        chunks = chunkBuffer(chunker, input).length;
        best = Math.min(best, performance.now() - started);
      }
      const mbPerSecond = input.length / 1e6 / (best / 1000);
      report.push(`${label}: ${mbPerSecond.toFixed(0)} MB/s (${chunks} chunks in ${input.length / MiB} MiB)`);
      return mbPerSecond;
    };
    const defaultSpeed = measure("default 512K/1M/8M, Uint8Array", DEFAULT_CHUNKER, data);
    measure("default 512K/1M/8M, Buffer", DEFAULT_CHUNKER, Buffer.from(data.buffer, 0, data.length));
    measure("small 2K/8K/64K", SMALL, data);
    console.log(`chunker throughput (best of 7, one core):\n  ${report.join("\n  ")}`);
    expect(defaultSpeed).toBeGreaterThan(0);
  });
});
