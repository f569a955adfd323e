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
  /** Pack id -> how many blobs the index lists in it, and how many of them are trees. */
  private readonly packs = new Map<string, { blobs: number; trees: number }>();

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

  /** True when every blob the index lists in the pack is a tree: such packs are worth reading whole. */
  isTreePack(pack: string): boolean {
    const counts = this.packs.get(pack);
    return counts !== undefined && counts.trees === counts.blobs;
  }

  addPack(pack: string, blobs: readonly PackedBlob[]): void {
    const counts = this.packs.get(pack) ?? { blobs: 0, trees: 0 };
    counts.blobs += blobs.length;
    for (const b of blobs) if (b.type === "tree") counts.trees++;
    this.packs.set(pack, counts);
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
