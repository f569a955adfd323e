/**
 * Encoding of one blob's bytes inside a pack (docs/design.md, "Blobs"):
 * `seal(key, flag || payload)` where flag 0 means payload is the plaintext and flag 1 means payload is a
 * zstd frame of it. Incompressible data (random, media, already compressed) is stored raw, decided on a
 * sample first so we do not spend a full compression pass to learn that.
 *
 * Used on the main thread and in worker threads; each thread keeps its own zstd contexts.
 */
import zstd from "zstd-napi/binding.js";
import { ENVELOPE_OVERHEAD, open, seal, sealParts, sealPieces } from "../crypto/crypto.js";
import { BulwarkError } from "../core/errors.js";

const FLAG_RAW = new Uint8Array([0]);
const FLAG_ZSTD = new Uint8Array([1]);
const SAMPLE_BYTES = 64 * 1024;
/** Stored raw unless compression saves at least this fraction. */
const MIN_SAVING = 0.03;

export class BlobCodec {
  // Contexts and output buffers are reused: per-blob garbage of chunk size would make memory follow the
  // garbage collector instead of the work.
  private readonly compressor = new zstd.CCtx();
  private readonly sampler = new zstd.CCtx();
  private readonly decompressor = new zstd.DCtx();
  private scratch = Buffer.alloc(0);
  private decodeScratch = Buffer.alloc(0);
  private readonly sampleScratch = Buffer.allocUnsafe(zstd.compressBound(SAMPLE_BYTES));

  constructor(
    private readonly key: Uint8Array,
    readonly compressionLevel: number,
  ) {
    this.compressor.setParameter(zstd.CParameter.compressionLevel, compressionLevel);
    this.compressor.setParameter(zstd.CParameter.contentSizeFlag, 1);
    this.compressor.setParameter(zstd.CParameter.checksumFlag, 0);
    this.sampler.setParameter(zstd.CParameter.compressionLevel, 1);
  }

  /** Returns the envelope to store for a blob. */
  encode(data: Uint8Array): Buffer {
    const [flag, payload] = this.compress(data);
    return sealParts(this.key, flag, payload);
  }

  /** The envelope as pieces in order (see sealPieces): for the hot path, where joining would copy. */
  encodePieces(data: Uint8Array): Buffer[] {
    const [flag, payload] = this.compress(data);
    return sealPieces(this.key, flag, payload);
  }

  /** The flag and payload to seal; the payload may live in the scratch buffer until the next call. */
  private compress(data: Uint8Array): [Uint8Array, Uint8Array] {
    if (this.compressionLevel > 0 && data.length >= 64 && this.looksCompressible(data)) {
      const bound = zstd.compressBound(data.length);
      if (this.scratch.length < bound) this.scratch = Buffer.allocUnsafe(bound);
      const length = this.compressor.compress2(this.scratch, data);
      if (length <= data.length * (1 - MIN_SAVING)) return [FLAG_ZSTD, this.scratch.subarray(0, length)];
    }
    return [FLAG_RAW, data];
  }

  /** Decrypts and decompresses; throws INVALID_DATA naming `what` on any inconsistency. */
  decode(envelope: Uint8Array, rawLength: number | undefined, what: string): Buffer {
    return this.decodeOpened(this.open(envelope, what), rawLength, what);
  }

  /**
   * Only decrypts: the flag and payload as sealed. A copy re-seals them under another key as they are, so
   * moving a blob between repositories costs no second compression.
   */
  open(envelope: Uint8Array, what: string): Buffer {
    return open(this.key, envelope, what);
  }

  /** Seals what `open` returned (a flag and payload) under this codec's key. */
  seal(opened: Uint8Array): Buffer {
    return seal(this.key, opened);
  }

  /**
   * The plaintext of what `open` returned. With `transient`, a compressed payload is decompressed into a
   * buffer this codec reuses: the result is valid only until the next call (enough to hash it, as a copy
   * does for every blob it moves, without a chunk-sized allocation each time).
   */
  decodeOpened(plain: Buffer, rawLength: number | undefined, what: string, transient = false): Buffer {
    const flag = plain[0];
    const payload = plain.subarray(1);
    let data: Buffer;
    if (flag === 0) {
      data = payload;
    } else if (flag === 1) {
      try {
        const size = rawLength ?? zstd.getFrameContentSize(payload);
        if (size === null || size === undefined || size > 1 << 30)
          throw new Error("frame has no usable content size");
        if (transient) {
          if (this.decodeScratch.length < size) this.decodeScratch = Buffer.allocUnsafe(size);
          data = this.decodeScratch.subarray(0, size);
        } else {
          data = Buffer.allocUnsafe(size);
        }
        const n = this.decompressor.decompress(data, payload);
        if (n !== size) data = data.subarray(0, n);
      } catch (cause) {
        throw new BulwarkError("INVALID_DATA", `${what}: zstd payload does not decompress`, { cause });
      }
    } else {
      throw new BulwarkError("INVALID_DATA", `${what}: unknown compression flag ${flag}`);
    }
    if (rawLength !== undefined && data.length !== rawLength) {
      throw new BulwarkError(
        "INVALID_DATA",
        `${what}: decoded to ${data.length} bytes, the index says ${rawLength}`,
      );
    }
    return data;
  }

  private looksCompressible(data: Uint8Array): boolean {
    if (data.length <= SAMPLE_BYTES * 2) return true;
    // A sample from the middle avoids being fooled by a compressible file header.
    const start = Math.floor(data.length / 2) - SAMPLE_BYTES / 2;
    const sample = data.subarray(start, start + SAMPLE_BYTES);
    return this.sampler.compress2(this.sampleScratch, sample) <= SAMPLE_BYTES * (1 - MIN_SAVING);
  }
}

/** Upper bound of an encoded blob's size, for buffer planning. */
export function maxEncodedLength(rawLength: number): number {
  return rawLength + ENVELOPE_OVERHEAD + 1;
}
