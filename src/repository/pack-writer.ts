/**
 * Collects encoded blobs into pack files and uploads them (docs/design.md, "Write ordering").
 *
 * Tree blobs and data blobs go to separate packs, so reading all trees (every incremental backup does)
 * touches a few small packs instead of every pack.
 *
 * Blobs are accepted once (a blob already indexed or pending is never stored twice by one writer), packed
 * until the target size, then saved under a random name (every byte of a pack is authenticated by the blob
 * and header envelopes). The SHA-256 of each pack's bytes goes into its index entry (docs/design.md §10),
 * so that a target that hashes files itself can check the pack at rest without a download. Packs become
 * visible to the master index only after their save completed; the caller writes index files for
 * `takeNewPacks()` before writing any snapshot that refers to their blobs.
 */
import { createHash, randomBytes } from "node:crypto";
import type { SaveSource } from "../backend/backend.js";
import { encodePackHeader, type BlobType, type PackedBlob } from "./pack.js";
import type { Repository } from "./repository.js";

export interface PackWriterStats {
  packs: number;
  blobs: number;
  /** Bytes of pack files written. */
  storedBytes: number;
  /** Plaintext bytes of the blobs added. */
  rawBytes: number;
}

interface OpenPack {
  parts: Buffer[];
  blobs: PackedBlob[];
  size: number;
}

export interface PackWriterOptions {
  /**
   * Runs after a pack was saved and before it joins the index; a rejection fails the writer. A copy reads the
   * pack back here, so nothing enters the target's index that did not arrive intact.
   */
  verifySaved?: (
    pack: string,
    blobs: readonly PackedBlob[],
    saved: { length: number; sha256: string },
  ) => Promise<void>;
}

/** A saved pack as its index entry records it. */
export interface NewPack {
  id: string;
  blobs: PackedBlob[];
  /** SHA-256 of the pack's bytes as saved (hex). */
  sha256: string;
}

const WRITE_GROUP_BYTES = 4 * 1024 * 1024;

const emptyPack = (): OpenPack => ({ parts: [], blobs: [], size: 0 });

export class PackWriter {
  private readonly open: Record<BlobType, OpenPack> = { data: emptyPack(), tree: emptyPack() };
  private readonly pending = new Set<string>();
  private readonly uploads = new Set<Promise<void>>();
  private failure: unknown;
  private finishedPacks: NewPack[] = [];
  readonly stats: PackWriterStats = { packs: 0, blobs: 0, storedBytes: 0, rawBytes: 0 };

  constructor(
    private readonly repo: Repository,
    private readonly maxUploads = 2,
    private readonly options: PackWriterOptions = {},
  ) {}

  /** True when the repository has the blob or this writer will store it. */
  has(id: string): boolean {
    return this.repo.index.has(id) || this.pending.has(id);
  }

  /** Claims a blob for storing: false when it is already stored or claimed. */
  claim(id: string): boolean {
    if (this.has(id)) return false;
    this.pending.add(id);
    return true;
  }

  /** Releases a claim that will not be fulfilled (the source could not be read). */
  release(id: string): void {
    this.pending.delete(id);
  }

  /** Adds an encoded blob claimed before. Resolves when there is room for more (back-pressure). */
  async add(type: BlobType, id: string, envelope: Buffer | Buffer[], rawLength: number): Promise<void> {
    this.throwIfFailed();
    this.pending.add(id);
    const pack = this.open[type];
    let length = 0;
    if (Array.isArray(envelope)) {
      for (const piece of envelope) length += piece.length;
      pack.parts.push(...envelope);
    } else {
      length = envelope.length;
      pack.parts.push(envelope);
    }
    pack.blobs.push({ type, id, offset: pack.size, length, rawLength });
    pack.size += length;
    this.stats.blobs++;
    this.stats.rawBytes += rawLength;
    if (pack.size >= this.repo.config.packSize) {
      this.finishPack(type);
      while (this.uploads.size >= this.maxUploads) await Promise.race(this.uploads);
      this.throwIfFailed();
    }
  }

  /** Encodes (compress + encrypt) and adds a blob on this thread; for small blobs such as trees. */
  async addPlain(type: BlobType, data: Buffer): Promise<string> {
    const id = this.repo.computeId(data);
    if (this.claim(id)) await this.add(type, id, this.repo.codec.encode(data), data.length);
    return id;
  }

  /** Uploads the partial pack and waits for every upload. */
  async flush(): Promise<void> {
    if (this.open.data.blobs.length > 0) this.finishPack("data");
    if (this.open.tree.blobs.length > 0) this.finishPack("tree");
    while (this.uploads.size > 0) await Promise.race(this.uploads);
    this.throwIfFailed();
  }

  /** How many saved packs await an index file. */
  get unindexedPacks(): number {
    return this.finishedPacks.length;
  }

  /** Packs saved since the last call, for an index file. */
  takeNewPacks(): NewPack[] {
    const packs = this.finishedPacks;
    this.finishedPacks = [];
    return packs;
  }

  private finishPack(type: BlobType): void {
    const { parts: blobParts, blobs, size } = this.open[type];
    this.open[type] = emptyPack();
    const header = encodePackHeader(this.repo.master.encrypt, blobs);
    const id = randomBytes(32).toString("hex");
    const parts = [...blobParts, header];
    const length = size + header.length;
    // What was sent: recorded in the index, and for a reader that checks what arrived. About 10 ms per
    // 16 MiB on the main thread, a small part of what encoding the pack's blobs cost.
    const digest = createHash("sha256");
    for (const part of parts) digest.update(part);
    const sha256 = digest.digest("hex");

    const source: SaveSource = {
      length,
      // eslint-disable-next-line @typescript-eslint/require-await
      async *open() {
        // Envelopes arrive as many small pieces: joined into a few large writes, the copy costs less than the
        // system calls it saves.
        let group: Buffer[] = [];
        let groupBytes = 0;
        for (const part of parts) {
          group.push(part);
          groupBytes += part.length;
          if (groupBytes >= WRITE_GROUP_BYTES) {
            yield group.length === 1 ? part : Buffer.concat(group, groupBytes);
            group = [];
            groupBytes = 0;
          }
        }
        if (group.length > 0) yield Buffer.concat(group, groupBytes);
      },
    };
    const upload = this.repo.backend
      .save({ type: "pack", name: id }, source)
      .then(() => this.options.verifySaved?.(id, blobs, { length, sha256 }))
      .then(() => {
        this.repo.index.addPack(id, blobs);
        for (const b of blobs) this.pending.delete(b.id);
        this.finishedPacks.push({ id, blobs, sha256 });
        this.stats.packs++;
        this.stats.storedBytes += length;
      })
      .catch((err: unknown) => {
        this.failure ??= err;
      })
      .finally(() => this.uploads.delete(upload));
    this.uploads.add(upload);
  }

  private throwIfFailed(): void {
    // eslint-disable-next-line @typescript-eslint/only-throw-error -- rethrows whatever the upload threw
    if (this.failure !== undefined) throw this.failure;
  }
}
