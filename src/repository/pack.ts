/**
 * Pack files (docs/design.md, "Packs"): blobs concatenated, then an encrypted header listing them, then the
 * header's length.
 *
 *   pack   = blob_1 || ... || blob_n || seal(header) || uint32le(len(seal(header)))
 *   header = n × (type u8 || length u32le || rawLength u32le || id 32 bytes)
 *
 * A pack's name is random. Every byte is authenticated: each blob and the header are envelopes, and the
 * header's lengths must add up to exactly where it starts. The header makes every pack self-describing:
 * the index can be rebuilt from the packs alone.
 */
import { BulwarkError } from "../core/errors.js";
import { open, seal } from "../crypto/crypto.js";

export type BlobType = "data" | "tree";

export interface PackedBlob {
  readonly type: BlobType;
  readonly id: string;
  readonly offset: number;
  /** Stored (encrypted) length. */
  readonly length: number;
  /** Plaintext length. */
  readonly rawLength: number;
}

const ENTRY_BYTES = 1 + 4 + 4 + 32;
const TRAILER_BYTES = 4;

export function encodePackHeader(key: Uint8Array, blobs: readonly PackedBlob[]): Buffer {
  const plain = Buffer.alloc(blobs.length * ENTRY_BYTES);
  let pos = 0;
  for (const blob of blobs) {
    plain[pos] = blob.type === "tree" ? 1 : 0;
    plain.writeUInt32LE(blob.length, pos + 1);
    plain.writeUInt32LE(blob.rawLength, pos + 5);
    plain.write(blob.id, pos + 9, 32, "hex");
    pos += ENTRY_BYTES;
  }
  const sealed = seal(key, plain);
  const trailer = Buffer.alloc(TRAILER_BYTES);
  trailer.writeUInt32LE(sealed.length, 0);
  return Buffer.concat([sealed, trailer]);
}

/**
 * Parses the header at the end of a whole pack; `what` names the pack in errors. Given `blobsLength`, `pack`
 * is only the pack's tail (header and trailer) and the blobs are checked to end at `blobsLength`.
 */
export function decodePackHeader(
  key: Uint8Array,
  pack: Uint8Array,
  what: string,
  blobsLength?: number,
): PackedBlob[] {
  if (pack.length < TRAILER_BYTES) throw new BulwarkError("INVALID_DATA", `${what}: too short to be a pack`);
  const buf = Buffer.from(pack.buffer, pack.byteOffset, pack.byteLength);
  const headerLength = buf.readUInt32LE(buf.length - TRAILER_BYTES);
  const headerStart = buf.length - TRAILER_BYTES - headerLength;
  if (headerStart < 0) {
    throw new BulwarkError("INVALID_DATA", `${what}: header length ${headerLength} exceeds the pack`);
  }
  const plain = open(key, buf.subarray(headerStart, buf.length - TRAILER_BYTES), `${what} header`);
  if (plain.length % ENTRY_BYTES !== 0) {
    throw new BulwarkError("INVALID_DATA", `${what}: header has a partial entry`);
  }
  const blobs: PackedBlob[] = [];
  let offset = 0;
  for (let pos = 0; pos < plain.length; pos += ENTRY_BYTES) {
    const typeByte = plain[pos];
    if (typeByte !== 0 && typeByte !== 1) {
      throw new BulwarkError("INVALID_DATA", `${what}: unknown blob type ${typeByte}`);
    }
    const length = plain.readUInt32LE(pos + 1);
    blobs.push({
      type: typeByte === 1 ? "tree" : "data",
      id: plain.toString("hex", pos + 9, pos + 41),
      offset,
      length,
      rawLength: plain.readUInt32LE(pos + 5),
    });
    offset += length;
  }
  const expected = blobsLength ?? headerStart;
  if (offset !== expected) {
    throw new BulwarkError(
      "INVALID_DATA",
      `${what}: header describes ${offset} bytes of blobs but the pack holds ${expected}`,
    );
  }
  return blobs;
}
