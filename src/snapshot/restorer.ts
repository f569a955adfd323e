/**
 * The restorer: writes a snapshot's files into a target directory (docs/design.md, "Restore").
 *
 * 1. Walk the snapshot, keep what --include selects, plan: directories, files (pre-sized, so zero ranges
 *    stay holes), hard links, then symlinks and special files. An entry that cannot be restored as recorded
 *    is refused alone and reported: a malformed field (decodeTreeEntries), a file whose size is not its
 *    blobs' total. A hard link recorded with other data than its first link is restored as its own file.
 * 2. Create directories and empty files. Nothing is ever created through a symlink: every directory on the
 *    way is created by us or checked with lstat, files are opened with O_NOFOLLOW, and symlinks from the
 *    snapshot are created only after every file is written. Tree names were validated on decode (no `..`,
 *    `/`, NUL or duplicates), so every path stays inside the target.
 * 3. Read packs in order, merging nearby blobs into one ranged read; workers decrypt, verify and write. A
 *    blob whose copy fails is read again from the next pack the index lists it in.
 * 4. A file with a missing or damaged blob is removed and reported: never left silently wrong.
 * 5. Set metadata: files, links, then directories deepest first (writing into a directory changes its mtime).
 */
import {
  chmodSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  rmSync,
  symlinkSync,
  utimesSync,
} from "node:fs";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { BulwarkError, errnoCode, errorMessage } from "../core/errors.js";
import { makeDirectoriesSync } from "../core/make-directories.js";
import type { Repository } from "../repository/repository.js";
import type { WorkerPool } from "../repository/worker-pool.js";
import type { BlobToRestore, FileMetadata, FileOp } from "../repository/worker-protocol.js";
import type { Node } from "./tree.js";
import { walkTree } from "./walker.js";

export interface RestoreReporter {
  planned?(files: number, bytes: number): void;
  progress?(bytesWritten: number): void;
  fileDone?(path: string): void;
  error?(path: string, error: string): void;
}

export interface RestoreOptions {
  target: string;
  /** Snapshot paths to restore (with everything below them); all when empty. */
  include?: string[];
  reporter?: RestoreReporter;
}

export interface RestoreResult {
  files: number;
  dirs: number;
  links: number;
  bytes: number;
  errors: { path: string; error: string }[];
}

interface PlannedFile {
  rel: string;
  node: Node;
  failed: boolean;
}

const MERGE_GAP = 256 * 1024;
const MAX_RANGE = 16 * 1024 * 1024;
const IN_FLIGHT_RANGES = 3;

export async function restore(
  repo: Repository,
  pool: WorkerPool,
  treeId: string,
  options: RestoreOptions,
): Promise<RestoreResult> {
  const target = options.target;
  const result: RestoreResult = { files: 0, dirs: 0, links: 0, bytes: 0, errors: [] };
  const reporter = options.reporter ?? {};
  const fail = (rel: string, error: string): void => {
    result.errors.push({ path: rel, error });
    reporter.error?.(rel, error);
  };
  const includes = (options.include ?? []).map((p) => "/" + p.split("/").filter(Boolean).join("/"));
  const selected = (path: string): "yes" | "ancestor" | "no" => {
    if (includes.length === 0) return "yes";
    if (includes.some((inc) => inc === "/" || path === inc || path.startsWith(inc + "/"))) return "yes";
    if (includes.some((inc) => inc.startsWith(path + "/"))) return "ancestor";
    return "no";
  };

  ensureDirectory(target);

  // 1. plan
  const dirs: { rel: string; node: Node; depth: number }[] = [];
  const files: PlannedFile[] = [];
  const hardlinks: { rel: string; node: Node; first: PlannedFile }[] = [];
  const specials: { rel: string; node: Node }[] = [];
  const byInode = new Map<string, PlannedFile>();
  let totalBytes = 0;
  const walkErrors: { path: string; error: string }[] = [];
  const walk = walkTree(
    repo,
    treeId,
    "",
    (p, _t, err) => {
      walkErrors.push({ path: p, error: `directory contents unreadable: ${errorMessage(err)}` });
    },
    (p, error) => {
      if (selected(p) === "yes") walkErrors.push({ path: p, error: `not restored: ${error}` });
    },
  );
  for await (const { path, node } of walk) {
    const sel = selected(path);
    if (sel === "no") continue;
    if (sel === "ancestor" && node.type !== "dir") continue;
    if (node.type === "dir") dirs.push({ rel: path, node, depth: path.split("/").length });
    else if (node.type === "file") {
      const inconsistent = sizeMismatch(repo, node);
      if (inconsistent !== undefined) {
        walkErrors.push({ path, error: `not restored: ${inconsistent}` });
        continue;
      }
      const key = node.links !== undefined && node.links > 1 ? `${node.device}:${node.inode}` : undefined;
      const first = key === undefined ? undefined : byInode.get(key);
      // A link recorded with other data than the first (the file changed between the two reads, or a crafted
      // tree) is restored as its own file with its own data: linking it would restore the other's bytes.
      if (first && sameContent(first.node, node)) {
        hardlinks.push({ rel: path, node, first });
        continue;
      }
      const planned: PlannedFile = { rel: path, node, failed: false };
      files.push(planned);
      if (key !== undefined && !first) byInode.set(key, planned);
      totalBytes += node.size ?? 0;
    } else specials.push({ rel: path, node });
  }
  for (const e of walkErrors) fail(e.path, e.error);
  reporter.planned?.(files.length, totalBytes);

  // 2. directories and empty, pre-sized files. An entry is only created in a directory that is known to be
  // a real directory (created by us or checked with lstat): a directory that could not be restored (say a
  // symlink is in its place in the target) must not be entered, or everything below it would go wherever
  // that symlink points.
  const okDirs = new Set<string>([""]);
  const parentOk = (rel: string): boolean => {
    if (okDirs.has(rel.slice(0, rel.lastIndexOf("/")))) return true;
    fail(rel, "not restored: its parent directory could not be restored");
    return false;
  };
  for (const d of dirs) {
    if (!parentOk(d.rel)) continue;
    try {
      ensureDirectory(join(target, d.rel));
      okDirs.add(d.rel);
      result.dirs++;
    } catch (err) {
      fail(d.rel, errorMessage(err));
    }
  }
  const creatable = files.filter((f) => {
    if (parentOk(f.rel)) return true;
    f.failed = true;
    return false;
  });
  const root = process.getuid?.() === 0;
  const metaOf = (node: Node): FileMetadata => ({
    mode: node.mode,
    mtime: utimesSeconds(node.mtime),
    ...(root ? { owner: { uid: node.uid, gid: node.gid } } : {}),
  });
  // Creating thousands of files is system-call bound: the workers do it in parallel. A file of one blob is
  // created by the worker that writes it, with its metadata, in one open; an empty file is done right here.
  const precreated = creatable.filter((f) => (f.node.content?.length ?? 0) !== 1);
  await runFileOps(
    pool,
    precreated.map((f) => ({
      kind: "create",
      path: join(target, f.rel),
      size: f.node.size ?? 0,
      ...((f.node.content?.length ?? 0) === 0 ? { meta: metaOf(f.node) } : {}),
    })),
    (index, error, code) => {
      const f = precreated[index]!;
      f.failed = true;
      fail(f.rel, code === "ELOOP" ? "a symlink is in the way in the target" : error);
    },
  );
  const packs = new Map<string, Map<string, BlobToRestore>>();
  const filesByPath = new Map<string, PlannedFile>();
  for (const f of creatable) {
    if (f.failed) continue;
    const abs = join(target, f.rel);
    filesByPath.set(abs, f);
    const whole = f.node.content?.length === 1 ? { size: f.node.size ?? 0, meta: metaOf(f.node) } : undefined;
    let offset = 0;
    for (const id of f.node.content ?? []) {
      const entry = repo.index.get(id);
      if (!entry) {
        f.failed = true;
        fail(f.rel, `blob ${id.slice(0, 12)} is missing from the repository`);
        break;
      }
      let blobs = packs.get(entry.pack);
      if (!blobs) packs.set(entry.pack, (blobs = new Map()));
      let blob = blobs.get(id);
      if (!blob) {
        blob = { id, offset: entry.offset, length: entry.length, rawLength: entry.rawLength, writes: [] };
        blobs.set(id, blob);
      }
      blob.writes.push(whole ? { path: abs, offset, whole } : { path: abs, offset });
      offset += entry.rawLength;
    }
  }

  // 3. data, pack by pack. A blob whose copy fails (the pack is damaged or missing, or it holds junk that
  // claims the id, §19, "Index poisoning") is read again from the next pack the index lists it in; its files fail only when no
  // copy verifies, with the first copy's error.
  const blobFailure = (blob: BlobToRestore, error: string): void => {
    for (const w of blob.writes) {
      const f = filesByPath.get(w.path);
      if (f && !f.failed) {
        f.failed = true;
        fail(f.rel, error);
      }
    }
  };
  const tried = new Map<string, { packs: Set<string>; error: string }>();
  let failed = new Map<string, BlobToRestore>();
  const copyFailed = (pack: string, blob: BlobToRestore, error: string): void => {
    const t = tried.get(blob.id);
    if (t === undefined)
      tried.set(blob.id, { packs: new Set([pack]), error: `pack ${pack.slice(0, 12)}: ${error}` });
    else t.packs.add(pack);
    failed.set(blob.id, blob);
  };
  for (let round: Map<string, Map<string, BlobToRestore>> | undefined = packs; round !== undefined; ) {
    await restoreRanges(repo, pool, coalesce(round), copyFailed, (bytes) => {
      result.bytes += bytes;
      reporter.progress?.(result.bytes);
    });
    const retry = new Map<string, Map<string, BlobToRestore>>();
    for (const [id, blob] of failed) {
      const t = tried.get(id)!;
      // Only a copy of the same length: the file's later blobs were placed by the planned one's.
      const next = repo.index
        .locations(id)
        .find((e) => !t.packs.has(e.pack) && e.rawLength === blob.rawLength);
      if (next === undefined) {
        blobFailure(blob, t.error);
        continue;
      }
      let blobs = retry.get(next.pack);
      if (!blobs) retry.set(next.pack, (blobs = new Map()));
      blobs.set(id, { ...blob, offset: next.offset, length: next.length });
    }
    failed = new Map();
    round = retry.size > 0 ? retry : undefined;
  }

  // 4. damaged files go; 5. metadata
  const finished: PlannedFile[] = [];
  for (const f of files) {
    if (!f.failed) finished.push(f);
    else if (okDirs.has(f.rel.slice(0, f.rel.lastIndexOf("/")))) rmSync(join(target, f.rel), { force: true });
  }
  // Files of several blobs get their metadata now that all their data is written.
  const multiBlob = finished.filter((f) => (f.node.content?.length ?? 0) > 1);
  const metadataFailed = new Set<PlannedFile>();
  await runFileOps(
    pool,
    multiBlob.map((f) => ({ kind: "finish", path: join(target, f.rel), ...metaOf(f.node) })),
    (index, error) => {
      metadataFailed.add(multiBlob[index]!);
      fail(multiBlob[index]!.rel, `metadata: ${error}`);
    },
  );
  for (const f of finished) {
    if (metadataFailed.has(f)) continue;
    result.files++;
    reporter.fileDone?.(f.rel);
  }
  for (const h of hardlinks) {
    if (h.first.failed) {
      fail(h.rel, `hard link to ${h.first.rel}, which could not be restored`);
      continue;
    }
    if (!parentOk(h.rel)) continue;
    try {
      const abs = join(target, h.rel);
      rmSync(abs, { force: true });
      linkSync(join(target, h.first.rel), abs);
      result.links++;
    } catch (err) {
      fail(h.rel, errorMessage(err));
    }
  }
  for (const s of specials) {
    const abs = join(target, s.rel);
    if (!parentOk(s.rel)) continue;
    try {
      if (!createSpecial(abs, s.node, root)) continue;
      applyMetadata(abs, s.node, root);
    } catch (err) {
      fail(s.rel, errorMessage(err));
    }
  }
  for (const d of [...dirs].sort((a, b) => b.depth - a.depth)) {
    // chmod and utimes follow symlinks: never apply metadata to a path that was not verified as ours.
    if (!okDirs.has(d.rel)) continue;
    try {
      applyMetadata(join(target, d.rel), d.node, root);
    } catch (err) {
      fail(d.rel, `metadata: ${errorMessage(err)}`);
    }
  }
  return result;
}

/** A pack range to read in one request, and the blobs in it. */
interface PackRange {
  pack: string;
  offset: number;
  length: number;
  blobs: BlobToRestore[];
}

/** Merges nearby blobs of each pack into ranged reads, packs in name order. */
function coalesce(packs: Map<string, Map<string, BlobToRestore>>): PackRange[] {
  const ranges: PackRange[] = [];
  for (const [pack, blobs] of [...packs].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const sorted = [...blobs.values()].sort((a, b) => a.offset - b.offset);
    let current: PackRange | undefined;
    for (const blob of sorted) {
      const end = blob.offset + blob.length;
      if (
        current &&
        blob.offset - (current.offset + current.length) <= MERGE_GAP &&
        end - current.offset <= MAX_RANGE
      ) {
        current.length = end - current.offset;
        current.blobs.push(blob);
      } else {
        current = { pack, offset: blob.offset, length: blob.length, blobs: [blob] };
        ranges.push(current);
      }
    }
  }
  return ranges;
}

/** Reads the ranges, a few at a time; the workers decrypt, verify and write each blob. */
async function restoreRanges(
  repo: Repository,
  pool: WorkerPool,
  ranges: PackRange[],
  copyFailed: (pack: string, blob: BlobToRestore, error: string) => void,
  written: (bytes: number) => void,
): Promise<void> {
  let next = 0;
  const run = async (): Promise<void> => {
    while (next < ranges.length) {
      const range = ranges[next++]!;
      let data: Buffer;
      try {
        data = await repo.backend.load({ type: "pack", name: range.pack }, range);
      } catch (err) {
        for (const b of range.blobs) copyFailed(range.pack, b, errorMessage(err));
        continue;
      }
      // A truncated pack loses the blobs past its end; those before it are intact and still restored.
      const blobs: BlobToRestore[] = [];
      for (const b of range.blobs) {
        if (b.offset - range.offset + b.length <= data.length)
          blobs.push({ ...b, offset: b.offset - range.offset });
        else copyFailed(range.pack, b, "pack is shorter than the index says (truncated)");
      }
      if (blobs.length === 0) continue;
      const { errors, bytesWritten } = await pool.restoreBlobs(data, blobs, true);
      for (const e of errors) {
        const blob = range.blobs.find((b) => b.id === e.id);
        if (blob) copyFailed(range.pack, blob, e.error);
      }
      written(bytesWritten);
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT_RANGES }, run));
}

const FILE_OPS_BATCH = 512;

/** Spreads file operations over the workers in batches; reports each failure by its index in `ops`. */
async function runFileOps(
  pool: WorkerPool,
  ops: FileOp[],
  onError: (index: number, error: string, code: string | undefined) => void,
): Promise<void> {
  const batches: Promise<void>[] = [];
  for (let start = 0; start < ops.length; start += FILE_OPS_BATCH) {
    const batch = ops.slice(start, start + FILE_OPS_BATCH);
    batches.push(
      pool.fileOps(batch).then((errors) => {
        for (const e of errors) onError(start + e.index, e.error, e.code);
      }),
    );
  }
  await Promise.all(batches);
}

/** Creates a directory, or accepts an existing one; refuses anything else in the way, symlinks above all. */
function ensureDirectory(path: string): void {
  try {
    mkdirSync(path, { mode: 0o700 });
    return;
  } catch (err) {
    if (errnoCode(err) === "ENOENT") {
      makeDirectoriesSync(path, 0o700); // not mkdir's recursive: it loops under /proc
      return;
    }
    if (errnoCode(err) !== "EEXIST") throw err;
  }
  const st = lstatSync(path);
  if (!st.isDirectory()) {
    throw new BulwarkError(
      "IO",
      `${path} exists and is not a directory${st.isSymbolicLink() ? " (a symlink)" : ""}`,
      {
        hint: "restore into an empty directory",
      },
    );
  }
}

/** Returns false for entries that cannot be recreated and are skipped (sockets, devices when not root). */
function createSpecial(abs: string, node: Node, root: boolean): boolean {
  rmSync(abs, { force: true });
  switch (node.type) {
    case "symlink":
      symlinkSync(node.linkTarget ?? "", abs);
      return true;
    case "fifo":
      execFileSync("mkfifo", ["--", abs]);
      return true;
    case "chardev":
    case "blockdev": {
      if (!root) return false;
      const rdev = node.rdev ?? 0;
      const major = (rdev >> 8) & 0xfff;
      const minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
      execFileSync("mknod", ["--", abs, node.type === "chardev" ? "c" : "b", String(major), String(minor)]);
      return true;
    }
    default:
      return false;
  }
}

function applyMetadata(abs: string, node: Node, root: boolean): void {
  if (root) lchownSync(abs, node.uid, node.gid);
  const mtime = utimesSeconds(node.mtime);
  if (node.type === "symlink") {
    lutimesSync(abs, mtime, mtime);
    return;
  }
  // chown clears setuid bits, so the mode comes after it.
  chmodSync(abs, node.mode);
  utimesSync(abs, mtime, mtime);
}

/**
 * Nanoseconds since the epoch (a decimal string) as the seconds utimes takes. libuv keeps whole
 * microseconds (it truncates), and a double near 1.7e9 s has a resolution of about 0.24 µs: aiming at the
 * middle of the microsecond keeps the rounding from landing in the microsecond before.
 */
/**
 * Why a file node cannot be restored as recorded: its size is not the sum of its indexed blobs' lengths.
 * Blobs missing from the index are left to the data phase, which reports them by id.
 */
export function sizeMismatch(repo: Repository, node: Node): string | undefined {
  if (node.size === undefined) return undefined;
  let total = 0;
  for (const id of node.content ?? []) {
    const entry = repo.index.get(id);
    if (!entry) return undefined;
    total += entry.rawLength;
  }
  return total === node.size
    ? undefined
    : `its size (${node.size} bytes) disagrees with its blobs (${total} bytes)`;
}

/** True when two hard-linked nodes record the same data (the same blobs and size). */
function sameContent(a: Node, b: Node): boolean {
  const ca = a.content ?? [];
  const cb = b.content ?? [];
  return a.size === b.size && ca.length === cb.length && ca.every((id, i) => id === cb[i]);
}

function utimesSeconds(ns: string): number {
  const n = BigInt(ns);
  let seconds = n / 1_000_000_000n;
  let rest = n % 1_000_000_000n;
  if (rest < 0n) {
    rest += 1_000_000_000n;
    seconds -= 1n;
  }
  return Number(seconds) + (Number(rest / 1000n) * 1000 + 500) / 1e9;
}
