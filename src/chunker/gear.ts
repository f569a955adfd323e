/**
 * The gear table of the FastCDC rolling hash: 256 pseudo-random 32-bit words, one per byte value.
 *
 * The table is derived from the repository's secret chunker seed, so chunk boundaries (and with them chunk
 * sizes, which an observer of the encrypted pack files could see) cannot be predicted without the seed:
 * this blunts fingerprinting attacks that recognise a known file from the sizes of its chunks.
 *
 * Entry i = the first 4 bytes, big endian, of HMAC-SHA256(key = seed, message = "bulwark-gear" || uint16BE(i)).
 * This derivation is part of the repository format: changing it changes every chunk boundary and so breaks
 * deduplication against existing snapshots.
 */

import { createHmac } from "node:crypto";

/** Length of the per-repository chunker seed, in bytes. */
export const CHUNKER_SEED_BYTES = 32;

const GEAR_LABEL = "bulwark-gear";

export function assertChunkerSeed(seed: unknown): asserts seed is Uint8Array {
  if (!(seed instanceof Uint8Array) || seed.length !== CHUNKER_SEED_BYTES) {
    const got = seed instanceof Uint8Array ? `${seed.length} bytes` : typeof seed;
    throw new Error(`chunker seed must be a Uint8Array of ${CHUNKER_SEED_BYTES} bytes, got ${got}`);
  }
}

/** The 256-entry gear table for a seed (see the module comment for the exact derivation). */
export function gearTable(seed: Uint8Array): Uint32Array {
  assertChunkerSeed(seed);
  const label = Buffer.from(GEAR_LABEL, "latin1");
  const message = Buffer.alloc(label.length + 2);
  label.copy(message, 0);
  const table = new Uint32Array(256);
  for (let byteValue = 0; byteValue < 256; byteValue++) {
    message.writeUInt16BE(byteValue, label.length);
    table[byteValue] = createHmac("sha256", seed).update(message).digest().readUInt32BE(0);
  }
  return table;
}
