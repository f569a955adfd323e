/**
 * The index: which pack holds each blob (docs/design.md, "Index").
 *
 * Index files are written after the packs they describe and before any snapshot that needs them; loading
 * all of them gives the master index. A blob may appear in several packs (concurrent backups, an
 * interrupted prune); any of its copies will do, with two exceptions written by repair (§18b):
 *  1. a pack named in any index file's `retires` is damaged and never read: its entries are left out;
 *  2. index files that carry `retires` (repair's) are merged before the others, so a blob repair rewrote
 *     is read from the repaired pack, whatever order the files were read in.
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
  /**
   * `sha256`: the SHA-256 of the pack's bytes as saved (written since issue 10; absent in older files). A
   * target that hashes files itself checks the pack at rest against it without a download (§17a).
   */
  packs: { id: string; blobs: PackedBlob[]; sha256?: string }[];
  /**
   * Index files this one replaces: readers may ignore them once this one is read (written by prune, and by
   * `repair --index` naming the damaged files it rebuilt, which prune and check then tolerate unreadable).
   */
  supersedes?: string[];
  /**
   * Packs found damaged and replaced (written by repair, carried on by prune): readers MUST NOT read them,
   * and this file's entries take precedence over those of files without the field.
   */
  retires?: string[];
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

export class MasterIndex {
  private readonly blobs = new Map<string, IndexEntry>();
  /** Pack id -> how many blobs the index lists in it, and how many of them are trees. */
  private readonly packs = new Map<string, { blobs: number; trees: number }>();
  /** Packs never to be read (repair retired them): left out of every lookup. */
  private readonly retired = new Set<string>();
  /** Other locations of blobs listed in several packs: where a read goes when a pack is retired. */
  private readonly alternates = new Map<string, IndexEntry[]>();
  /** Pack id -> the SHA-256 of its bytes, where an index file records it. */
  private readonly digests = new Map<string, string>();
  /** Pack id -> the index files whose `retires` name it (addFiles). */
  private readonly retiredBy = new Map<string, string[]>();
  /** Index file names a merged file `supersedes` (prune's, repair --index's). */
  private readonly superseded = new Set<string>();

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

  /**
   * Every readable location of a blob, the one `get` returns first: a reader whose copy fails to verify
   * (damaged, or an attacker's junk claiming the id, §19, "Index poisoning") tries the next before giving up.
   */
  locations(id: string): IndexEntry[] {
    const first = this.blobs.get(id);
    if (first === undefined) return [];
    const others = this.alternates.get(id) ?? [];
    return [first, ...others.filter((e) => e.pack !== first.pack && !this.retired.has(e.pack))];
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

  /** The SHA-256 of the pack's bytes as its index entry records it; undefined when none does. */
  packDigest(pack: string): string | undefined {
    return this.packs.has(pack) ? this.digests.get(pack) : undefined;
  }

  /**
   * True when a readable index file lists this one in `supersedes`: a damaged index file that
   * `repair --index` rebuilt from the pack headers, which the target did not let it delete. Prune and check
   * then tolerate it being unreadable (§18b).
   */
  isSuperseded(name: string): boolean {
    return this.superseded.has(name);
  }

  isRetired(pack: string): boolean {
    return this.retired.has(pack);
  }

  /**
   * The index files that retire a pack. Repair retires only packs it found damaged, so a file retiring a pack
   * that reads intact is not repair's (index poisoning, §19, "Index poisoning"): check names it, `repair --index --distrust` drops it.
   */
  retiringFiles(pack: string): string[] {
    return this.retiredBy.get(pack) ?? [];
  }

  retiredPacks(): string[] {
    return [...this.retired].sort();
  }

  addPack(pack: string, blobs: readonly PackedBlob[]): void {
    if (this.retired.has(pack)) return;
    const counts = this.packs.get(pack) ?? { blobs: 0, trees: 0 };
    counts.blobs += blobs.length;
    for (const b of blobs) if (b.type === "tree") counts.trees++;
    this.packs.set(pack, counts);
    for (const b of blobs) {
      const entry = { pack, type: b.type, offset: b.offset, length: b.length, rawLength: b.rawLength };
      const first = this.blobs.get(b.id);
      if (first === undefined) this.blobs.set(b.id, entry);
      else if (first.pack !== pack) this.alternates.set(b.id, [...(this.alternates.get(b.id) ?? []), entry]);
    }
  }

  /** Merges one index file; its `retires` apply to what is merged after it (use addFiles for a set). */
  addFile(file: IndexFile): void {
    this.retire(file.retires ?? []);
    for (const p of file.packs) {
      this.addPack(p.id, p.blobs);
      if (typeof p.sha256 === "string" && SHA256_HEX.test(p.sha256) && !this.digests.has(p.id)) {
        this.digests.set(p.id, p.sha256);
      }
    }
  }

  /**
   * Merges a set of index files deterministically: every `retires` first, then the files that carry one
   * (repair's), then the others, each group in name order.
   */
  addFiles(files: readonly { name: string; file: IndexFile }[]): void {
    for (const f of files) {
      for (const name of f.file.supersedes ?? []) this.superseded.add(name);
      for (const pack of f.file.retires ?? [])
        this.retiredBy.set(pack, [...this.retiringFiles(pack), f.name]);
    }
    this.retire(files.flatMap((f) => f.file.retires ?? []));
    const sorted = [...files].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const f of sorted) if (f.file.retires !== undefined) this.addFile(f.file);
    for (const f of sorted) if (f.file.retires === undefined) this.addFile(f.file);
  }

  /**
   * Stops reading these packs: a blob located in one is served from another pack that holds it, or is no
   * longer in the index.
   */
  retire(packs: Iterable<string>): void {
    const added = new Set<string>();
    for (const p of packs) {
      if (this.retired.has(p)) continue;
      this.retired.add(p);
      added.add(p);
      this.packs.delete(p);
    }
    if (added.size === 0) return;
    for (const [id, entry] of this.blobs) {
      const others = this.alternates.get(id)?.filter((e) => !this.retired.has(e.pack));
      if (others !== undefined) {
        if (others.length > 0) this.alternates.set(id, others);
        else this.alternates.delete(id);
      }
      if (!added.has(entry.pack)) continue;
      const next = this.alternates.get(id)?.shift();
      if (next === undefined) this.blobs.delete(id);
      else {
        this.blobs.set(id, next);
        if (this.alternates.get(id)?.length === 0) this.alternates.delete(id);
      }
    }
  }

  /**
   * Blobs listed in more than one pack, each with its packs (the one reads use first, then the others):
   * normal after concurrent backups or an interrupted prune, and the shape of an index-poisoning attack
   * (a pack of junk claiming existing ids), which is why prune verifies a copy before it drops the others.
   */
  *multiplyClaimed(): IterableIterator<[string, string[]]> {
    for (const [id, others] of this.alternates) {
      const first = this.blobs.get(id);
      if (first === undefined) continue;
      const packs = [...new Set([first.pack, ...others.map((e) => e.pack)])];
      if (packs.length > 1) yield [id, packs];
    }
  }

  entries(): IterableIterator<[string, IndexEntry]> {
    return this.blobs.entries();
  }
}
