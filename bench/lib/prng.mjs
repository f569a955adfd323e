// Deterministic randomness for the bench scripts: no dependencies, no BigInt.
//
// Two sources, both derived from a seed string plus a stream name so that adding a
// new use of randomness never shifts the bytes of an existing one:
//  1. `rng(seed, stream)`: sfc32, a small 32-bit PRNG for decisions (sizes, names, offsets).
//  2. `keystream(seed, stream)`: AES-128-CTR over zeros, for bulk random bytes (GB/s).
import { createCipheriv, createHash } from "node:crypto";

function seedWords(seed, stream) {
  const h = createHash("sha256").update(`${seed}\u0000${stream}`).digest();
  return [h.readUInt32LE(0), h.readUInt32LE(4), h.readUInt32LE(8), h.readUInt32LE(12)];
}

/**
 * sfc32 generator with helpers. `r.u32()` is a uint32, `r.float()` in [0,1),
 * `r.int(n)` in [0,n), `r.range(a,b)` in [a,b], `r.pick(arr)`, `r.chance(p)`.
 */
export function rng(seed, stream) {
  let [a, b, c, d] = seedWords(seed, stream);
  const u32 = () => {
    a |= 0;
    b |= 0;
    c |= 0;
    d |= 0;
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return t >>> 0;
  };
  for (let i = 0; i < 16; i++) u32();
  const float = () => u32() / 4294967296;
  const int = (n) => Math.floor(float() * n);
  return {
    u32,
    float,
    int,
    range: (lo, hi) => lo + int(hi - lo + 1),
    pick: (arr) => arr[int(arr.length)],
    chance: (p) => float() < p,
    /** log-uniform in [lo, hi] */
    logUniform: (lo, hi) => Math.exp(Math.log(lo) + float() * (Math.log(hi) - Math.log(lo))),
    /** Fisher-Yates shuffle in place */
    shuffle(arr) {
      for (let i = arr.length - 1; i > 0; i--) {
        const j = int(i + 1);
        [arr[i], arr[j]] = [arr[j], arr[i]];
      }
      return arr;
    },
  };
}

const ZEROS = Buffer.alloc(4 << 20);

/** Incompressible bytes: AES-128-CTR keystream keyed from (seed, stream). */
export function keystream(seed, stream) {
  const h = createHash("sha256").update(`${seed}\u0000${stream}\u0000aes`).digest();
  const cipher = createCipheriv("aes-128-ctr", h.subarray(0, 16), h.subarray(16, 32));
  return {
    /** returns a new Buffer of n random bytes */
    bytes(n) {
      if (n <= ZEROS.length) return cipher.update(ZEROS.subarray(0, n));
      const parts = [];
      for (let left = n; left > 0; left -= ZEROS.length) {
        parts.push(cipher.update(ZEROS.subarray(0, Math.min(left, ZEROS.length))));
      }
      return Buffer.concat(parts, n);
    },
  };
}

/** Parses "1GiB", "64MiB", "500MB", "20M", "123456" into bytes. */
export function parseSize(s) {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$/i.exec(String(s));
  if (!m) throw new Error(`cannot parse size: ${s}`);
  const exp = { "": 0, k: 1, m: 2, g: 3, t: 4 }[m[2].toLowerCase()];
  const base = m[3] || m[2] === "" ? 1024 : 1000;
  return Math.round(Number(m[1]) * base ** exp);
}

/** Minimal --flag value parser: returns {flag: value}; boolean flags get true. */
export function parseArgs(argv, booleans = []) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) throw new Error(`unexpected argument: ${a}`);
    const eq = a.indexOf("=");
    if (eq > 0) out[a.slice(2, eq)] = a.slice(eq + 1);
    else if (booleans.includes(a.slice(2))) out[a.slice(2)] = true;
    else {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
      out[a.slice(2)] = argv[++i];
    }
  }
  return out;
}
