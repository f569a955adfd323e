/**
 * Cryptographic primitives of the repository format (docs/design.md, "Encryption").
 *
 * - Envelope: AES-256-GCM with a unique 96-bit nonce per message (each thread starts at a random 96-bit
 *   value and counts up from it):
 *   `version (1 byte, 0x01) || nonce (12) || ciphertext || tag (16)`. Any change to a stored byte fails
 *   authentication, so corruption is always detected, never silently decrypted.
 * - Blob ids: HMAC-SHA256 under the repository's id key, so someone who can read the (decrypted) index but
 *   not the id key cannot confirm that a repository holds a file they know.
 * - Password-derived keys: scrypt (memory-hard), parameters stored with each key file.
 *
 * Pure functions over buffers: no I/O, safe to call from worker threads.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, scrypt } from "node:crypto";
import { BulwarkError } from "../core/errors.js";

export const ENVELOPE_VERSION = 0x01;
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
/** Bytes an envelope adds to its plaintext. */
export const ENVELOPE_OVERHEAD = 1 + NONCE_BYTES + TAG_BYTES;
export const KEY_BYTES = 32;

// Drawing 12 random bytes per blob cost more than encrypting small blobs. Counting up from a random 96-bit
// start is as safe: two threads collide only if their ranges of (at most billions of) nonces overlap in a
// 2^96 space, about as likely as two random nonces colliding.
const nonceState = randomBytes(NONCE_BYTES);

function nextNonce(): Buffer {
  const nonce = Buffer.from(nonceState);
  for (let i = NONCE_BYTES - 1; i >= 0; i--) {
    nonceState[i] = (nonceState[i]! + 1) & 0xff;
    if (nonceState[i] !== 0) break;
  }
  return nonce;
}

export function seal(key: Uint8Array, plaintext: Uint8Array): Buffer {
  const nonce = nextNonce();
  const cipher = createCipheriv("aes-256-gcm", key, nonce);
  const out = Buffer.allocUnsafe(ENVELOPE_OVERHEAD + plaintext.length);
  out[0] = ENVELOPE_VERSION;
  nonce.copy(out, 1);
  let pos = 1 + NONCE_BYTES;
  pos += cipher.update(plaintext).copy(out, pos);
  pos += cipher.final().copy(out, pos);
  cipher.getAuthTag().copy(out, pos);
  return out;
}

/**
 * Seals head || body and returns the envelope as a list of pieces, in order: no copy joins them. Large
 * blobs go from a worker to a pack file this way without a second pass over their bytes.
 */
export function sealPieces(key: Uint8Array, head: Uint8Array, body: Uint8Array): Buffer[] {
  const nonce = nextNonce();
  const cipher = createCipheriv("aes-256-gcm", key, nonce);
  const prefix = Buffer.allocUnsafe(1 + NONCE_BYTES);
  prefix[0] = ENVELOPE_VERSION;
  nonce.copy(prefix, 1);
  const pieces = [prefix, cipher.update(head), cipher.update(body), cipher.final(), cipher.getAuthTag()];
  return pieces.filter((p) => p.length > 0);
}

/** Seals the concatenation of two parts without joining them first (a flag byte and a body). */
export function sealParts(key: Uint8Array, head: Uint8Array, body: Uint8Array): Buffer {
  const nonce = nextNonce();
  const cipher = createCipheriv("aes-256-gcm", key, nonce);
  const out = Buffer.allocUnsafe(ENVELOPE_OVERHEAD + head.length + body.length);
  out[0] = ENVELOPE_VERSION;
  nonce.copy(out, 1);
  let pos = 1 + NONCE_BYTES;
  pos += cipher.update(head).copy(out, pos);
  pos += cipher.update(body).copy(out, pos);
  pos += cipher.final().copy(out, pos);
  cipher.getAuthTag().copy(out, pos);
  return out;
}

/** Throws INVALID_DATA when the envelope is truncated, of an unknown version or fails authentication. */
export function open(key: Uint8Array, envelope: Uint8Array, what: string): Buffer {
  if (envelope.length < ENVELOPE_OVERHEAD) {
    throw new BulwarkError("INVALID_DATA", `${what}: truncated (${envelope.length} bytes)`);
  }
  if (envelope[0] !== ENVELOPE_VERSION) {
    throw new BulwarkError("INVALID_DATA", `${what}: unknown envelope version ${envelope[0]}`);
  }
  const nonce = envelope.subarray(1, 1 + NONCE_BYTES);
  const tag = envelope.subarray(envelope.length - TAG_BYTES);
  const ciphertext = envelope.subarray(1 + NONCE_BYTES, envelope.length - TAG_BYTES);
  const decipher = createDecipheriv("aes-256-gcm", key, nonce);
  decipher.setAuthTag(tag);
  const body = decipher.update(ciphertext);
  try {
    decipher.final();
  } catch (cause) {
    throw new BulwarkError("INVALID_DATA", `${what}: authentication failed (data corrupted or altered)`, {
      cause,
    });
  }
  return body;
}

export function blobId(idKey: Uint8Array, data: Uint8Array): string {
  return createHmac("sha256", idKey).update(data).digest("hex");
}

export function sha256Hex(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

export interface ScryptParams {
  readonly N: number;
  readonly r: number;
  readonly p: number;
}

/**
 * N = 2^15, r = 8: 32 MiB and ~0.1 s here, the strength restic and the scrypt paper use for interactive
 * logins. Costly for a guesser, cheap enough for a CLI that opens the repository per command, and it keeps
 * the memory peak of every command (the KDF is its largest single allocation) near that of its real work.
 * Tests may lower it with BULWARK_TEST_WEAK_KDF=1 (never used outside tests).
 */
export function defaultScryptParams(env: NodeJS.ProcessEnv = process.env): ScryptParams {
  return env.BULWARK_TEST_WEAK_KDF === "1" ? { N: 2 ** 10, r: 8, p: 1 } : { N: 2 ** 15, r: 8, p: 1 };
}

export function deriveKey(password: string, salt: Uint8Array, params: ScryptParams): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(
      password.normalize("NFC"),
      salt,
      KEY_BYTES,
      { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r + 16 * 1024 * 1024 },
      (err, key) => (err ? reject(err) : resolve(key)),
    );
  });
}

export function randomKey(): Buffer {
  return randomBytes(KEY_BYTES);
}
