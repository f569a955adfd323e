/**
 * The index: which pack holds each blob (docs/design.md, "Index").
 *
 * Index files are written after the packs they describe and before any snapshot that needs them; loading
 * all of them gives the master index. A blob may appear in several packs (concurrent backups, an
 * interrupted prune); any of its copies will do.
 */
import type { BlobType, PackedBlob } from "./pack.js";

export interface IndexEntry {
  readonly pack: string;
  readonly type: BlobType;
  readonly offset: number;
  readonly length: number;
  readonly rawLength: number;
}

/** The JSON document stored (encrypted) in an index file. */
export interface IndexFile {
  version: 1;
  packs: { id: string; blobs: PackedBlob[] }[];
  /** Index files this one replaces: readers may ignore them once this one is read (written by prune). */
  supersedes?: string[];
}

export class MasterIndex {
  private readonly blobs = new Map<string, IndexEntry>();
  /** Pack id -> number of blobs the index lists in it. */
  private readonly packs = new Map<string, number>();

  get blobCount(): number {
    return this.blobs.size;
  }

  get packCount(): number {
    return this.packs.size;
  }

  has(id: string): boolean {
    return this.blobs.has(id);
  }

  get(id: string): IndexEntry | undefined {
    return this.blobs.get(id);
  }

  hasPack(pack: string): boolean {
    return this.packs.has(pack);
  }

  packIds(): IterableIterator<string> {
    return this.packs.keys();
  }

  addPack(pack: string, blobs: readonly PackedBlob[]): void {
    this.packs.set(pack, (this.packs.get(pack) ?? 0) + blobs.length);
    for (const b of blobs) {
      if (!this.blobs.has(b.id)) {
        this.blobs.set(b.id, {
          pack,
          type: b.type,
          offset: b.offset,
          length: b.length,
          rawLength: b.rawLength,
        });
      }
    }
  }

  addFile(file: IndexFile): void {
    for (const p of file.packs) this.addPack(p.id, p.blobs);
  }

  entries(): IterableIterator<[string, IndexEntry]> {
    return this.blobs.entries();
  }
}
