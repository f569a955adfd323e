/**
 * The archiver: backs up directory trees into a snapshot (docs/design.md, "Backup").
 *
 * 1. Normalise the paths; build the skeleton of their ancestors (a snapshot keeps absolute paths).
 * 2. Walk depth first in name order. A file whose size, mtime, ctime and inode match the parent snapshot's
 *    node, and whose blobs are all indexed, keeps its content list without being read.
 * 3. Other files go to the blob workers in jobs (small files batched); the walk runs ahead of the workers
 *    only as far as a byte budget allows.
 * 4. A directory's tree is stored once all its entries are known; unchanged trees dedupe to the same id.
 * 5. Flush packs, write the index for them, then the snapshot: a snapshot never refers to unindexed data.
 * Unreadable entries are skipped, recorded in the snapshot and reported; the snapshot is then partial.
 *
 * Virtual files (src/sources/: a command's output, a database dump) have no place on disk: their producer is
 * started when the walk reaches them, a worker reads what it writes (a FIFO or a private temporary copy) to
 * EOF, and the producer must then report success. A failed producer fails the whole backup, before any
 * snapshot is saved: a truncated dump is never recorded as good. A producer may instead make a directory
 * whose entries it knows only once it ran (a dump in directory format): the entries are stored below the
 * virtual path like virtual files of their own.
 */
import { lstatSync, readdirSync, readlinkSync } from "node:fs";
import { hostname as osHostname, userInfo } from "node:os";
import { resolve as resolvePath, sep } from "node:path";
import type { BigIntStats } from "node:fs";
import { BulwarkError, errorMessage } from "../core/errors.js";
import { WeightedLimiter, handledLater } from "../core/limiter.js";
import { PackWriter } from "../repository/pack-writer.js";
import type { Repository } from "../repository/repository.js";
import type { ChunkedFile, WorkerPool } from "../repository/worker-pool.js";
import type { EncodedBlob, FileToChunk } from "../repository/worker-protocol.js";
import { decodeTreeEntries, encodeTree, isSafeName, sameNode, type Node, type NodeType } from "./tree.js";
import type { SkippedEntry, Snapshot, SnapshotSummary, SnapshotWithId } from "./snapshot.js";
import { systemClock } from "../core/clock.js";

export const PROGRAM = "bulwark 0.1.0";

export interface BackupReporter {
  fileDone?(path: string, bytes: number, reused: boolean): void;
  skipped?(entry: SkippedEntry): void;
}

export interface BackupOptions {
  paths: string[];
  tags?: string[];
  hostname?: string;
  excludes?: { isExcluded(absPath: string): boolean; readonly patterns: string[] };
  parent?: SnapshotWithId;
  reporter?: BackupReporter;
  now?: () => Date;
  /** Files that exist only in the snapshot, e.g. "/sources/db.pgdump" (see VirtualFile). */
  virtualFiles?: VirtualFile[];
  /** The config dataset being backed up, recorded in the snapshot. */
  dataset?: string;
  /**
   * Read every path P from READROOT + P on disk while recording it as P (`dr failback` backs up what a
   * failover restored under a directory as the dataset's own paths). Absolute; default: P is read as is.
   */
  readRoot?: string;
}

/**
 * A file whose content a producer writes while the archiver reads it. `path` is where it appears in the
 * snapshot (absolute, outside every backup path); `open` starts the producer.
 */
export interface VirtualFile {
  path: string;
  open(): Promise<OpenedVirtualFile | OpenedVirtualDirectory>;
}

export interface OpenedVirtualFile {
  /** What a worker opens and reads to EOF: a FIFO or a regular file. */
  path: string;
  /** Settles when the producer has finished; a rejection fails the backup. */
  done: Promise<void>;
  /** Stops the producer (the backup failed elsewhere); must be safe to call at any time. */
  abort?(): void;
  /** Releases what open() made (temporary files); called once the file was read or the backup failed. */
  close?(): Promise<void>;
}

/**
 * A producer whose output is a directory (a pg_dump in directory format, one dump per database of a server):
 * the virtual path becomes a directory holding `entries`, each stored like a virtual file (and each may
 * itself open to a directory).
 */
export interface OpenedVirtualDirectory {
  /** The entries once the producer knows them, each named by its `path`: one file name. A rejection fails the backup. */
  entries: Promise<VirtualFile[]>;
  /** Stops the producer (the backup failed elsewhere); must be safe to call at any time. */
  abort?(): void;
  /** Releases what open() made (a temporary directory); called once every entry was stored or the backup failed. */
  close?(): Promise<void>;
}

export interface BackupResult {
  id: string;
  snapshot: Snapshot;
}

/** Files below this size are batched into one worker job. */
const SMALL_FILE = 1024 * 1024;
const BATCH_BYTES = 8 * 1024 * 1024;
const BATCH_FILES = 256;
/** How far the walk may run ahead of the workers, in bytes of file data. */
const IN_FLIGHT_BYTES = 96 * 1024 * 1024;
/** A large file streams through a worker's buffer: it holds about this much memory, whatever its size. */
const STREAMED_FILE_WEIGHT = 16 * 1024 * 1024;
const FILE_OVERHEAD = 4096;
/** Packs between two index checkpoints (about 1 GiB of stored data with the default pack size). */
const CHECKPOINT_PACKS = 64;

export async function backup(
  repo: Repository,
  pool: WorkerPool,
  options: BackupOptions,
): Promise<BackupResult> {
  const archiver = new Archiver(repo, pool, options);
  return archiver.run();
}

/**
 * Scanning returns once the walk below an entry is done, with a promise of its finished node. The wrapper
 * object matters: an async function returning a bare promise would wait for it.
 */
interface Pending<T> {
  done: Promise<T>;
}

function pendingOf<T>(value: T): Pending<T> {
  return { done: Promise.resolve(value) };
}

interface PathTrie {
  children: Map<string, PathTrie>;
  /** True when this path itself was named for backup (its whole subtree is included). */
  target: boolean;
  /** Set on a virtual file's own entry. */
  virtual?: VirtualFile;
  /** True when a real (on-disk) backup path lies at or below this entry. */
  real: boolean;
}

class Archiver {
  private readonly packer: PackWriter;
  private readonly limiter = new WeightedLimiter(IN_FLIGHT_BYTES);
  private batch: { file: FileToChunk; resolve: (r: ChunkedFile) => void; reject: (e: unknown) => void }[] =
    [];
  private batchBytes = 0;
  private readonly skipped: SkippedEntry[] = [];
  private readonly summary: SnapshotSummary = {
    filesNew: 0,
    filesChanged: 0,
    filesUnmodified: 0,
    dirsNew: 0,
    dirsChanged: 0,
    dirsUnmodified: 0,
    totalBytes: 0,
    bytesRead: 0,
    dataAdded: 0,
    dataAddedStored: 0,
    blobsAdded: 0,
    durationMs: 0,
  };
  private readonly now: () => Date;

  constructor(
    private readonly repo: Repository,
    private readonly pool: WorkerPool,
    private readonly options: BackupOptions,
  ) {
    this.packer = new PackWriter(repo);
    this.now = options.now ?? (() => systemClock.now());
    const root = options.readRoot !== undefined ? resolvePath(options.readRoot) : "/";
    this.onDisk = root === "/" ? (p) => p : (p) => (p === "/" ? root : root + p);
  }

  /** Where a snapshot path is read on disk (see `readRoot`). */
  private readonly onDisk: (path: string) => string;

  /** Virtual files whose producer was started: stopped and released however the backup ends. */
  private readonly opened: Array<OpenedVirtualFile | OpenedVirtualDirectory> = [];
  /** Set once run() has returned or thrown: a producer started after that is stopped at once. */
  private finished = false;

  async run(): Promise<BackupResult> {
    try {
      return await this.runInner();
    } finally {
      this.finished = true;
      for (const o of this.opened.splice(0)) {
        o.abort?.();
        await o.close?.().catch(() => undefined);
      }
    }
  }

  private async runInner(): Promise<BackupResult> {
    const started = this.now();
    const virtualFiles = this.options.virtualFiles ?? [];
    const realPaths =
      virtualFiles.length > 0 && this.options.paths.length === 0 ? [] : normalisePaths(this.options.paths);
    const trie: PathTrie = { children: new Map(), target: false, real: realPaths.length > 0 };
    const insert = (p: string, real: boolean): PathTrie => {
      let node = trie;
      for (const part of p.split(sep).filter((s) => s !== "")) {
        if (node.target || node.virtual) break;
        let child = node.children.get(part);
        if (!child) node.children.set(part, (child = { children: new Map(), target: false, real }));
        child.real ||= real;
        node = child;
      }
      return node;
    };
    for (const p of realPaths) insert(p, true).target = true;
    for (const v of virtualFiles) {
      const node = insert(v.path, false);
      if (
        !v.path.startsWith("/") ||
        node === trie ||
        node.target ||
        node.virtual ||
        node.children.size > 0 ||
        realPaths.some((p) => p === "/" || v.path.startsWith(p + "/"))
      ) {
        throw new BulwarkError(
          "USAGE",
          `source path ${v.path} collides with a backup path or another source`,
          {
            hint: "give each source its own name",
          },
        );
      }
      node.virtual = v;
    }
    const paths = [...realPaths, ...virtualFiles.map((v) => v.path)].sort();
    const parentRoot = this.options.parent ? await this.loadTreeMap(this.options.parent.tree) : undefined;

    let rootTree: string;
    if (trie.target) {
      // Backing up "/": the root directory's own tree is the snapshot's tree.
      const root = await this.scanDir("/", parentRoot);
      await this.flushBatch();
      rootTree = (await root.done).subtree!;
    } else {
      const root = await this.scanSkeleton("", trie, parentRoot);
      await this.flushBatch();
      rootTree = await root.done;
    }

    await this.packer.flush();
    await Promise.all(this.checkpoints);
    const newPacks = this.packer.takeNewPacks();
    if (newPacks.length > 0) await this.repo.saveDocument("index", { version: 1, packs: newPacks });

    const user = currentUser();
    this.summary.dataAdded = this.packer.stats.rawBytes;
    this.summary.dataAddedStored = this.packer.stats.storedBytes;
    this.summary.blobsAdded = this.packer.stats.blobs;
    this.summary.durationMs = this.now().getTime() - started.getTime();
    const snapshot: Snapshot = {
      version: 1,
      time: started.toISOString(),
      tree: rootTree,
      paths,
      hostname: this.options.hostname ?? osHostname(),
      username: user.name,
      uid: user.uid,
      gid: user.gid,
      tags: [...(this.options.tags ?? [])].sort(),
      ...(this.options.dataset !== undefined ? { dataset: this.options.dataset } : {}),
      ...(this.options.excludes?.patterns.length ? { excludes: this.options.excludes.patterns } : {}),
      ...(this.options.parent ? { parent: this.options.parent.id } : {}),
      program: PROGRAM,
      summary: this.summary,
      ...(this.skipped.length > 0 ? { skipped: this.skipped } : {}),
    };
    const id = await this.repo.saveDocument("snapshot", snapshot);
    return { id, snapshot };
  }

  /** Directories above the named paths: real metadata, but only the children on the way to the paths. */
  private async scanSkeleton(
    path: string,
    trie: PathTrie,
    parent: PrevTree | undefined,
  ): Promise<Pending<string>> {
    const pending: Promise<Node | undefined>[] = [];
    for (const [name, child] of [...trie.children].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const childPath = `${path}/${name}`;
      const prev = parent?.nodes.get(name);
      if (child.virtual) {
        pending.push(handledLater(this.scanVirtual(childPath, name, child.virtual)));
        continue;
      }
      if (!child.real) {
        // A directory that holds only virtual files exists only in the snapshot.
        const subtree = await this.scanSkeleton(childPath, child, undefined);
        pending.push(
          handledLater(subtree.done.then((id) => ({ ...virtualNode(name, "dir", this.now()), subtree: id }))),
        );
        continue;
      }
      if (child.target) {
        pending.push((await this.scanEntry(childPath, name, prev)).done);
        continue;
      }
      const st = this.lstatOrSkip(childPath);
      if (!st) continue;
      if (!st.isDirectory()) {
        this.skip(childPath, "not a directory, but a backup path lies below it");
        continue;
      }
      const prevChildren = prev?.subtree ? await this.loadTreeMap(prev.subtree) : undefined;
      const subtree = await this.scanSkeleton(childPath, child, prevChildren);
      pending.push(
        handledLater(subtree.done.then((id) => ({ ...nodeFromStat(name, "dir", st), subtree: id }))),
      );
    }
    return { done: handledLater(this.storeTree(pending)) };
  }

  private async storeTree(pending: Promise<Node | undefined>[], prev?: PrevTree): Promise<string> {
    const nodes = (await Promise.all(pending)).filter((n): n is Node => n !== undefined);
    // An unchanged directory would encode to the parent's bytes: skip the encoding and hashing.
    if (prev && nodes.length === prev.nodes.size && nodes.every((n) => sameNode(n, prev.nodes.get(n.name)))) {
      return prev.id;
    }
    return this.packer.addPlain("tree", encodeTree(nodes));
  }

  /** Scans one entry; returns (once the walk below it is done) a promise of its finished node. */
  private async scanEntry(
    path: string,
    name: string,
    prev: Node | undefined,
  ): Promise<Pending<Node | undefined>> {
    if (this.options.excludes?.isExcluded(path)) return pendingOf(undefined);
    const st = this.lstatOrSkip(path);
    if (!st) return pendingOf(undefined);
    if (st.isDirectory()) {
      const prevChildren =
        prev?.type === "dir" && prev.subtree ? await this.loadTreeMap(prev.subtree) : undefined;
      const dir = await this.scanDir(path, prevChildren, name, st);
      return {
        done: handledLater(
          dir.done.then((node) => {
            if (!prev || prev.type !== "dir") this.summary.dirsNew++;
            else if (prev.subtree === node.subtree) this.summary.dirsUnmodified++;
            else this.summary.dirsChanged++;
            return node;
          }),
        ),
      };
    }
    if (st.isFile()) return this.scanFile(path, name, st, prev);
    const type = specialType(st);
    const node: Node = nodeFromStat(name, type, st);
    if (type === "symlink") {
      try {
        node.linkTarget = readlinkSync(this.onDisk(path));
      } catch (err) {
        this.skip(path, errorMessage(err));
        return pendingOf(undefined);
      }
    }
    if (type === "chardev" || type === "blockdev") node.rdev = Number(st.rdev);
    return pendingOf(node);
  }

  private async scanDir(
    path: string,
    prevChildren: PrevTree | undefined,
    name = "",
    st?: BigIntStats,
  ): Promise<Pending<Node>> {
    const dirStat = st ?? lstatSync(this.onDisk(path), { bigint: true });
    let names: string[];
    try {
      names = readdirSync(this.onDisk(path)).sort();
    } catch (err) {
      this.skip(path, `cannot list directory: ${errorMessage(err)}`);
      names = [];
    }
    const pending: Promise<Node | undefined>[] = [];
    const base = path === "/" ? "" : path;
    for (const child of names) {
      pending.push((await this.scanEntry(`${base}/${child}`, child, prevChildren?.nodes.get(child))).done);
    }
    const treeId = handledLater(this.storeTree(pending, prevChildren));
    return {
      done: handledLater(treeId.then((subtree) => ({ ...nodeFromStat(name, "dir", dirStat), subtree }))),
    };
  }

  private async scanFile(
    path: string,
    name: string,
    st: BigIntStats,
    prev: Node | undefined,
  ): Promise<Pending<Node | undefined>> {
    const node = nodeFromStat(name, "file", st);
    const size = Number(st.size);
    node.size = size;
    if (
      prev &&
      prev.type === "file" &&
      isUnchanged(prev, node) &&
      prev.content!.every((id) => this.repo.index.has(id))
    ) {
      node.content = prev.content;
      this.summary.filesUnmodified++;
      this.summary.totalBytes += size;
      this.options.reporter?.fileDone?.(path, size, true);
      return pendingOf(node);
    }
    const weight = Math.min(size, STREAMED_FILE_WEIGHT) + FILE_OVERHEAD;
    if (this.limiter.inUse + Math.min(weight, this.limiter.capacity) > this.limiter.capacity) {
      await this.flushBatch(); // the batch must go out, or the bytes we wait for are never released
    }
    await this.limiter.acquire(weight);
    const chunked = this.submit({ path: this.onDisk(path), size });
    const done = handledLater(
      chunked.then(
        (result) => {
          this.limiter.release(weight);
          if (result.error !== undefined) {
            this.skip(path, result.error);
            return undefined;
          }
          node.size = result.size;
          node.content = result.content;
          if (prev && prev.type === "file") this.summary.filesChanged++;
          else this.summary.filesNew++;
          this.summary.totalBytes += result.size;
          this.summary.bytesRead += result.size;
          this.options.reporter?.fileDone?.(path, result.size, false);
          return node;
        },
        (err: unknown) => {
          this.limiter.release(weight);
          throw err;
        },
      ),
    );
    return { done };
  }

  /**
   * Starts a virtual file's producer, has a worker read it to EOF in a job of its own, then waits for the
   * producer's verdict. Any failure throws: a virtual file is never skipped (its bytes would be a lie).
   */
  private async scanVirtual(path: string, name: string, file: VirtualFile): Promise<Node> {
    const opened = await file.open();
    if (this.finished) {
      opened.abort?.();
      await opened.close?.().catch(() => undefined);
      throw new BulwarkError("CANCELLED", `source ${path}: the backup ended before it was read`);
    }
    this.opened.push(opened);
    if ("entries" in opened) return this.scanVirtualDirectory(path, name, opened);
    opened.done.catch(() => undefined); // awaited below; a producer may fail before the read ends
    const weight = STREAMED_FILE_WEIGHT + FILE_OVERHEAD;
    await this.limiter.acquire(weight);
    let result: ChunkedFile;
    try {
      // At least SMALL_FILE: never batched, so a slow producer holds up no other file.
      result = await this.submit({ path: opened.path, size: SMALL_FILE });
    } finally {
      this.limiter.release(weight);
    }
    if (result.error !== undefined) {
      opened.abort?.();
      await opened.done.catch(() => undefined);
      throw new BulwarkError("IO", `source ${path}: reading its data failed: ${result.error}`);
    }
    await opened.done;
    await this.release(opened);
    const node: Node = {
      ...virtualNode(name, "file", this.now()),
      size: result.size,
      content: result.content,
    };
    this.summary.filesNew++;
    this.summary.totalBytes += result.size;
    this.summary.bytesRead += result.size;
    this.options.reporter?.fileDone?.(path, result.size, false);
    return node;
  }

  /** Stores a producer's directory: its entries as virtual files below `path`, in a tree of their own. */
  private async scanVirtualDirectory(
    path: string,
    name: string,
    opened: OpenedVirtualDirectory,
  ): Promise<Node> {
    opened.entries.catch(() => undefined); // awaited at once, but a rejection must not surface twice
    const entries = [...(await opened.entries)].sort((a, b) =>
      a.path < b.path ? -1 : a.path > b.path ? 1 : 0,
    );
    entries.forEach((e, i) => {
      if (!isSafeName(e.path) || entries[i - 1]?.path === e.path) {
        throw new BulwarkError("IO", `source ${path}: its producer named an entry ${JSON.stringify(e.path)}`);
      }
    });
    // Entries start together; the byte budget (scanVirtual) decides how many are read at once.
    const pending = entries.map((e) => handledLater(this.scanVirtual(`${path}/${e.path}`, e.path, e)));
    const subtree = await this.storeTree(pending);
    await this.release(opened);
    this.summary.dirsNew++;
    return { ...virtualNode(name, "dir", this.now()), subtree };
  }

  /** A producer done with: out of the list run() cleans up, and its resources released. */
  private async release(opened: OpenedVirtualFile | OpenedVirtualDirectory): Promise<void> {
    const index = this.opened.indexOf(opened);
    if (index >= 0) this.opened.splice(index, 1);
    await opened.close?.();
  }

  private submit(file: FileToChunk): Promise<ChunkedFile> {
    if (file.size >= SMALL_FILE) return this.pool.chunkFiles([file], this.handlers).then((r) => r[0]!);
    return new Promise<ChunkedFile>((resolve, reject) => {
      this.batch.push({ file, resolve, reject });
      this.batchBytes += file.size;
      if (this.batch.length >= BATCH_FILES || this.batchBytes >= BATCH_BYTES) void this.flushBatch();
    });
  }

  private async flushBatch(): Promise<void> {
    const batch = this.batch;
    this.batch = [];
    this.batchBytes = 0;
    if (batch.length === 0) return;
    try {
      const results = await this.pool.chunkFiles(
        batch.map((b) => b.file),
        this.handlers,
      );
      batch.forEach((b, i) => b.resolve(results[i]!));
    } catch (err) {
      for (const b of batch) b.reject(err);
    }
  }

  private readonly handlers = {
    decide: (ids: string[]): boolean[] => ids.map((id) => this.packer.claim(id)),
    store: async (blobs: EncodedBlob[]): Promise<void> => {
      for (const b of blobs) {
        const pieces = b.pieces.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength));
        await this.packer.add("data", b.id, pieces, b.rawLength);
      }
      this.checkpointIndex();
    },
  };

  /** Index files written during the backup. */
  private readonly checkpoints: Promise<unknown>[] = [];

  /**
   * Indexes saved packs every CHECKPOINT_PACKS packs, so an interrupted backup leaves its data usable: the
   * next backup finds those blobs in the index and does not send them again.
   */
  private checkpointIndex(): void {
    if (this.packer.unindexedPacks < CHECKPOINT_PACKS) return;
    const packs = this.packer.takeNewPacks();
    this.checkpoints.push(handledLater(this.repo.saveDocument("index", { version: 1, packs })));
  }

  private async loadTreeMap(treeId: string): Promise<PrevTree | undefined> {
    try {
      // An entry with a malformed field is not a parent to trust: its file is read again, the others not.
      const tree = decodeTreeEntries(await this.repo.loadBlob(treeId, "tree"), `tree ${treeId.slice(0, 12)}`);
      return { id: treeId, nodes: new Map(tree.nodes.map((n) => [n.name, n])) };
    } catch {
      // A damaged parent only costs re-reading files; it must not fail the backup.
      return undefined;
    }
  }

  private lstatOrSkip(path: string): BigIntStats | undefined {
    try {
      // Synchronous on purpose: a metadata lookup from cache costs microseconds, the promise API ten times more.
      return lstatSync(this.onDisk(path), { bigint: true });
    } catch (err) {
      this.skip(path, errorMessage(err));
      return undefined;
    }
  }

  private skip(path: string, error: string): void {
    const entry = { path, error };
    this.skipped.push(entry);
    this.options.reporter?.skipped?.(entry);
  }
}

/** A directory's tree in the parent snapshot. */
interface PrevTree {
  id: string;
  nodes: Map<string, Node>;
}

function isUnchanged(prev: Node, now: Node): boolean {
  return (
    prev.size === now.size &&
    prev.mtime === now.mtime &&
    prev.ctime === now.ctime &&
    prev.inode === now.inode &&
    Array.isArray(prev.content)
  );
}

export function nodeFromStat(name: string, type: NodeType, st: BigIntStats): Node {
  return {
    name,
    type,
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    mtime: st.mtimeNs.toString(),
    ctime: st.ctimeNs.toString(),
    inode: st.ino.toString(),
    device: st.dev.toString(),
    links: Number(st.nlink),
  };
}

/** Metadata of an entry that exists only in the snapshot: owned by the backup's user, private, dated now. */
function virtualNode(name: string, type: "file" | "dir", now: Date): Node {
  const user = currentUser();
  const ns = (BigInt(now.getTime()) * 1_000_000n).toString();
  return {
    name,
    type,
    mode: type === "dir" ? 0o700 : 0o600,
    uid: user.uid,
    gid: user.gid,
    mtime: ns,
    ctime: ns,
    inode: "0",
    device: "0",
    links: 1,
  };
}

function specialType(st: BigIntStats): NodeType {
  if (st.isSymbolicLink()) return "symlink";
  if (st.isFIFO()) return "fifo";
  if (st.isSocket()) return "socket";
  if (st.isCharacterDevice()) return "chardev";
  if (st.isBlockDevice()) return "blockdev";
  throw new BulwarkError("IO", "unknown file type");
}

/** Absolute, without trailing slashes, without paths contained in other given paths, sorted. */
export function normalisePaths(paths: string[]): string[] {
  if (paths.length === 0)
    throw new BulwarkError("USAGE", "no path to back up", { hint: "name at least one path" });
  // An empty path would resolve to the working directory: never what was meant (an unset variable, say).
  if (paths.includes("")) {
    throw new BulwarkError("USAGE", "an empty path to back up", {
      hint: "name the directory, e.g. . for the current one",
    });
  }
  const abs = [...new Set(paths.map((p) => resolvePath(p)))].sort();
  return abs.filter((p) => !abs.some((q) => q !== p && (q === "/" || p.startsWith(q + sep))));
}

function currentUser(): { name: string; uid: number; gid: number } {
  try {
    const u = userInfo();
    return { name: u.username, uid: u.uid, gid: u.gid };
  } catch {
    return { name: "", uid: process.getuid?.() ?? -1, gid: process.getgid?.() ?? -1 };
  }
}
