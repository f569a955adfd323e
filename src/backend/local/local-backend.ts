/**
 * A Backend on a local (or locally mounted) directory, laid out like a restic repository (layout.ts):
 *
 *   config                 keys/<name>      locks/<name>      snapshots/<name>
 *   index/<name>           data/<first two hex digits of name>/<name>
 *
 * Crash safety comes from never writing a final name directly: save writes `.tmp-<random>` next to the
 * destination, fsyncs it, then renames (or, for ifAbsent, hard-links) it into place and fsyncs the directory.
 * After a crash at any moment the file is either absent or complete; the only debris is a `.tmp-*` file,
 * which list ignores and removeStaleTempFiles deletes. Files are written read-only (0o444), as restic does,
 * so a stray tool cannot modify stored data in place; unlinking still works because the directory is writable.
 */

import { randomBytes } from "node:crypto";
import {
  link,
  lstat,
  mkdir,
  open,
  readdir,
  rename,
  stat,
  unlink,
  type FileHandle as FsFileHandle,
} from "node:fs/promises";
import { dirname, join, resolve } from "node:path";

import {
  checkRange,
  clampRange,
  FILE_NAME_PATTERN,
  handleToString,
  TYPE_DIRECTORIES,
  type Backend,
  type BackendCapabilities,
  type ByteRange,
  type FileHandle,
  type FileInfo,
  type FileType,
  type SaveOptions,
  type SaveSource,
} from "../backend.js";
import { BulwarkError, errnoCode, errorMessage } from "../../core/errors.js";
import { makeDirectories } from "../../core/make-directories.js";
import { systemClock } from "../../core/clock.js";
import { directoryOf, layoutDirectories, layoutPath, PACK_PREFIXES } from "../layout.js";

export interface LocalBackendOptions {
  /** Saves worth running at once. Overlapping fsyncs is what makes parallelism pay off, even on one disk. */
  readonly connections?: number;
}

/** openRead's piece size: large enough to amortise a syscall, small enough to stream. */
const READ_PIECE_BYTES = 1024 * 1024;
const TEMP_PREFIX = ".tmp-";
/** How many stat calls list keeps in flight: a directory of 10 000 packs should not take 10 000 round trips. */
const LIST_STAT_BATCH = 32;

export class LocalBackend implements Backend {
  readonly location: string;
  readonly capabilities: BackendCapabilities;
  private closed = false;

  /** Uses `dir` as it is, without touching the disk; prefer open(), which checks the directory exists. */
  constructor(dir: string, options: LocalBackendOptions = {}) {
    this.location = resolve(dir);
    this.capabilities = Object.freeze({
      connections: options.connections ?? 8,
      atomicReplace: true,
      retentionModes: Object.freeze([]),
    });
  }

  /** Opens an existing directory; whether it holds a repository is for the repository layer to decide. */
  static async open(dir: string, options: LocalBackendOptions = {}): Promise<LocalBackend> {
    const root = resolve(dir);
    let isDirectory: boolean;
    try {
      isDirectory = (await stat(root)).isDirectory();
    } catch (err) {
      if (errnoCode(err) !== "ENOENT" && errnoCode(err) !== "ENOTDIR") {
        throw fsError(err, "open", "the repository directory", root);
      }
      isDirectory = false;
    }
    if (!isDirectory) {
      throw new BulwarkError("NO_REPOSITORY", `there is no repository at ${root}`, {
        hint: "check the path, or create a repository there with `bulwark init`",
      });
    }
    return new LocalBackend(root, options);
  }

  /**
   * Creates the directory layout (the directory itself may already exist, empty or half-created by an
   * interrupted create). Refuses with ALREADY_EXISTS when it already holds a repository's config.
   */
  static async create(dir: string, options: LocalBackendOptions = {}): Promise<LocalBackend> {
    const root = resolve(dir);
    try {
      await makeDirectories(root); // not mkdir's recursive, which loops forever under /proc
      if (await fileExists(join(root, "config"))) {
        throw new BulwarkError("ALREADY_EXISTS", `a repository already exists at ${root}`, {
          hint: "choose another directory, or use the existing repository",
        });
      }
      for (const sub of Object.values(TYPE_DIRECTORIES)) await mkdir(join(root, sub), { recursive: true });
      await Promise.all(PACK_PREFIXES.map((p) => mkdir(join(root, "data", p), { recursive: true })));
      // Make the new directory entries durable before anything is stored in them.
      await syncDirectory(join(root, "data"));
      await syncDirectory(root);
      // Best effort: we may create a repository inside a directory we cannot open for reading.
      await syncDirectory(dirname(root)).catch(ignore);
    } catch (err) {
      throw fsError(err, "create", "the repository layout", root);
    }
    return new LocalBackend(root, options);
  }

  async stat(h: FileHandle, signal?: AbortSignal): Promise<FileInfo> {
    const path = this.pathOf(h);
    signal?.throwIfAborted();
    try {
      const info = await stat(path);
      if (!info.isFile()) {
        // list skips such entries, so stat must not report them as files either.
        throw new BulwarkError("IO", `${handleToString(h)} in ${this.location} is not a regular file`);
      }
      return { name: h.name, size: info.size };
    } catch (err) {
      throw fsError(err, "read", handleToString(h), this.location);
    }
  }

  async *list(type: FileType, signal?: AbortSignal): AsyncIterable<FileInfo> {
    this.assertOpen();
    signal?.throwIfAborted();
    if (type === "config") {
      const info = await statIfFile(join(this.location, "config"), this.location);
      if (info !== undefined) yield { name: "", size: info.size };
      return;
    }
    const typeDirectory = join(this.location, directoryOf(type));
    if (type !== "pack") {
      yield* listDirectory(typeDirectory, "", this.location, signal);
      return;
    }
    for (const prefix of PACK_PREFIXES) {
      signal?.throwIfAborted();
      yield* listDirectory(join(typeDirectory, prefix), prefix, this.location, signal);
    }
  }

  async load(h: FileHandle, range?: ByteRange, signal?: AbortSignal): Promise<Buffer> {
    const path = this.pathOf(h);
    checkRange(range);
    signal?.throwIfAborted();
    const what = handleToString(h);
    const file = await this.openForReading(path, what);
    try {
      const { start, end } = clampRange(range, (await file.stat()).size);
      // Unpooled and not zero-filled: every byte is read over, and a buffer of its own can be handed to a
      // worker thread without a copy.
      const buffer = Buffer.allocUnsafeSlow(end - start);
      const filled = await readFully(file, buffer, start);
      return filled === buffer.length ? buffer : buffer.subarray(0, filled);
    } catch (err) {
      throw fsError(err, "read", what, this.location);
    } finally {
      await file.close().catch(ignore);
    }
  }

  async *openRead(h: FileHandle, range?: ByteRange, signal?: AbortSignal): AsyncIterable<Uint8Array> {
    const path = this.pathOf(h);
    checkRange(range);
    signal?.throwIfAborted();
    const what = handleToString(h);
    const file = await this.openForReading(path, what);
    try {
      const { start, end } = clampRange(range, (await file.stat()).size);
      for (let position = start; position < end; ) {
        signal?.throwIfAborted();
        // A fresh buffer per piece: the consumer may keep it after asking for the next one.
        const piece = Buffer.alloc(Math.min(READ_PIECE_BYTES, end - position));
        const filled = await readFully(file, piece, position);
        if (filled === 0) break;
        position += filled;
        yield filled === piece.length ? piece : piece.subarray(0, filled);
      }
    } catch (err) {
      throw fsError(err, "read", what, this.location);
    } finally {
      await file.close().catch(ignore);
    }
  }

  async save(h: FileHandle, source: SaveSource, options: SaveOptions = {}): Promise<void> {
    const finalPath = this.pathOf(h);
    const { signal, ifAbsent = false } = options;
    signal?.throwIfAborted();
    const what = handleToString(h);
    const directory = dirname(finalPath);
    const tempPath = join(directory, TEMP_PREFIX + randomBytes(12).toString("hex"));
    let tempExists = false;
    try {
      const file = await createTempFile(tempPath, directory);
      tempExists = true;
      try {
        await writeSource(file, source, what, signal);
        await file.sync();
      } catch (err) {
        await file.close().catch(ignore);
        throw err;
      }
      await file.close();
      // Last chance to cancel: after this the file is visible.
      signal?.throwIfAborted();
      if (ifAbsent) {
        // link() refuses an existing destination atomically, which rename() would silently replace.
        try {
          await link(tempPath, finalPath);
        } catch (err) {
          if (errnoCode(err) !== "EEXIST") throw err;
          throw new BulwarkError("ALREADY_EXISTS", `${what} already exists in ${this.location}`, {
            cause: err,
          });
        }
        await unlink(tempPath);
      } else {
        await rename(tempPath, finalPath);
      }
      tempExists = false;
      await syncDirectory(directory);
    } catch (err) {
      if (tempExists) await unlink(tempPath).catch(ignore);
      throw fsError(err, "save", what, this.location);
    }
  }

  async remove(h: FileHandle, signal?: AbortSignal): Promise<void> {
    const path = this.pathOf(h);
    signal?.throwIfAborted();
    try {
      await unlink(path);
      // Packs and locks: no directory fsync, a removal lost to a power cut only leaves a file that prune
      // (or staleness) takes care of. Index, snapshot and key removals must be durable before what follows:
      // prune deletes packs right after removing the index files that name them (and after forget removed
      // snapshots); an index or snapshot brought back by a power cut would name packs that are gone.
      if (h.type === "index" || h.type === "snapshot" || h.type === "key") {
        await syncDirectory(dirname(path));
      }
    } catch (err) {
      throw fsError(err, "remove", handleToString(h), this.location);
    }
  }

  /** Deletes `.tmp-*` files of interrupted saves not modified for `olderThanMs` (removeStaleTempFiles below). */
  removeStaleTempFiles(olderThanMs: number, signal?: AbortSignal): Promise<number> {
    this.assertOpen();
    signal?.throwIfAborted();
    return removeStaleTempFiles(this.location, olderThanMs);
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  /** The path of a file; throws a plain Error for a malformed handle, which is a bug in the caller. */
  private pathOf(h: FileHandle): string {
    this.assertOpen();
    return join(this.location, layoutPath(h));
  }

  private async openForReading(path: string, what: string): Promise<FsFileHandle> {
    try {
      return await open(path, "r");
    } catch (err) {
      throw fsError(err, "read", what, this.location);
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`the local backend for ${this.location} is closed`);
  }
}

/**
 * Deletes `.tmp-*` files that crashed writers left behind, if not modified for `olderThanMs`. A live
 * writer touches its temp file with every piece, so a generous age (prune uses hours, not seconds) keeps
 * this from pulling a file out from under a slow but healthy backup. Returns how many it removed.
 */
export async function removeStaleTempFiles(dir: string, olderThanMs: number): Promise<number> {
  const root = resolve(dir);
  const directories = [root, ...layoutDirectories().map((sub) => join(root, sub))];
  const cutoff = systemClock.now().getTime() - olderThanMs;
  let removed = 0;
  for (const directory of directories) {
    let names: string[];
    try {
      names = await readdir(directory);
    } catch (err) {
      if (errnoCode(err) === "ENOENT") continue;
      throw fsError(err, "clean", directory, root);
    }
    for (const name of names) {
      if (!name.startsWith(TEMP_PREFIX)) continue;
      const path = join(directory, name);
      try {
        if ((await lstat(path)).mtimeMs > cutoff) continue;
        await unlink(path);
        removed++;
      } catch (err) {
        // Gone already: its writer finished or another cleaner got there first.
        if (errnoCode(err) !== "ENOENT") throw fsError(err, "clean", path, root);
      }
    }
  }
  return removed;
}

/** Yields the complete files of one directory; names are checked so temp files and strays never show. */
async function* listDirectory(
  directory: string,
  requiredPrefix: string,
  location: string,
  signal: AbortSignal | undefined,
): AsyncIterable<FileInfo> {
  let names: string[];
  try {
    names = await readdir(directory);
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return;
    throw fsError(err, "list", directory, location);
  }
  // A pack in the wrong subdirectory could not be loaded by name, so listing it would break the contract.
  const candidates = names.filter((n) => FILE_NAME_PATTERN.test(n) && n.startsWith(requiredPrefix));
  for (let i = 0; i < candidates.length; i += LIST_STAT_BATCH) {
    signal?.throwIfAborted();
    const batch = candidates.slice(i, i + LIST_STAT_BATCH);
    const infos = await Promise.all(batch.map((name) => statIfFile(join(directory, name), location)));
    for (const [j, info] of infos.entries()) {
      const name = batch[j];
      if (info !== undefined && name !== undefined) yield { name, size: info.size };
    }
  }
}

/** The size of a regular file, or undefined when it is gone (removed since readdir) or not a file. */
async function statIfFile(path: string, location: string): Promise<{ size: number } | undefined> {
  try {
    const info = await stat(path);
    return info.isFile() ? { size: info.size } : undefined;
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return undefined;
    throw fsError(err, "list", path, location);
  }
}

async function fileExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return false;
    throw err;
  }
}

/** Creates the temp file, making a missing type directory (say a data/xx lost by a copy) on the way. */
async function createTempFile(tempPath: string, directory: string): Promise<FsFileHandle> {
  try {
    return await open(tempPath, "wx", 0o444);
  } catch (err) {
    if (errnoCode(err) !== "ENOENT") throw err;
  }
  // Not recursive: if the repository root itself is gone, recreating it silently would hide the problem.
  await mkdir(directory).catch((err: unknown) => {
    if (errnoCode(err) !== "EEXIST") throw err;
  });
  return await open(tempPath, "wx", 0o444);
}

async function writeSource(
  file: FsFileHandle,
  source: SaveSource,
  what: string,
  signal: AbortSignal | undefined,
): Promise<void> {
  let position = 0;
  for await (const piece of source.open()) {
    signal?.throwIfAborted();
    if (position + piece.length > source.length) {
      throw new Error(`the source for ${what} yielded more than its declared ${source.length} bytes`);
    }
    for (let offset = 0; offset < piece.length; ) {
      const { bytesWritten } = await file.write(piece, offset, piece.length - offset, position);
      offset += bytesWritten;
      position += bytesWritten;
    }
  }
  if (position !== source.length) {
    throw new Error(`the source for ${what} yielded ${position} bytes, not its declared ${source.length}`);
  }
}

/** Reads until `buffer` is full or the file ends; returns how many bytes were read. */
async function readFully(file: FsFileHandle, buffer: Buffer, position: number): Promise<number> {
  let filled = 0;
  while (filled < buffer.length) {
    const { bytesRead } = await file.read(buffer, filled, buffer.length - filled, position + filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return filled;
}

/** fsync on a directory makes renames and links in it durable. Not possible on Windows, nor needed there. */
async function syncDirectory(directory: string): Promise<void> {
  if (process.platform === "win32") return;
  const handle = await open(directory, "r");
  try {
    await handle.sync();
  } catch (err) {
    // Some file systems (and FUSE mounts) refuse fsync on a directory; their renames are as durable as they get.
    const code = errnoCode(err);
    if (code !== "EINVAL" && code !== "ENOTSUP" && code !== "EISDIR") throw err;
  } finally {
    await handle.close().catch(ignore);
  }
}

type FsAction = "open" | "create" | "read" | "save" | "remove" | "list" | "clean";

const ACTION_VERBS: Readonly<Record<FsAction, string>> = {
  open: "opening",
  create: "creating",
  read: "reading",
  save: "saving",
  remove: "removing",
  list: "listing",
  clean: "cleaning up",
};

/** errno codes that say "try again later", mostly from network file systems and exhausted descriptors. */
const TRANSIENT_ERRNOS = new Set(["EAGAIN", "EBUSY", "EMFILE", "ENFILE", "ETIMEDOUT"]);

/**
 * Turns a Node system error into a BulwarkError a user can act on. Anything else (BulwarkErrors, aborts,
 * a source's own failure, programming errors) passes through untouched.
 */
function fsError(err: unknown, action: FsAction, what: string, location: string): unknown {
  if (err instanceof BulwarkError) return err;
  const code = errnoCode(err);
  if (code === undefined || !code.startsWith("E")) return err;
  const verb = ACTION_VERBS[action];
  if (code === "ENOENT" && (action === "read" || action === "remove")) {
    return new BulwarkError("NOT_FOUND", `${what} not found in ${location}`, { cause: err });
  }
  if (code === "ENOENT" && action === "save") {
    return new BulwarkError("IO", `cannot save ${what}: a directory of ${location} is missing`, {
      cause: err,
      hint: "the repository looks damaged; check the path, or run `bulwark check`",
    });
  }
  if (code === "EACCES" || code === "EPERM") {
    return new BulwarkError("IO", `permission denied ${verb} ${what} in ${location}`, {
      cause: err,
      hint: `check that this user may read and write ${location}`,
    });
  }
  if (code === "ENOSPC" || code === "EDQUOT") {
    return new BulwarkError(
      "IO",
      `the disk is full at ${location} (${verb} ${what}); nothing already stored is lost`,
      { cause: err, hint: "free some space or raise the quota, then run the command again" },
    );
  }
  if (TRANSIENT_ERRNOS.has(code)) {
    return new BulwarkError("TRANSIENT", `${verb} ${what} in ${location} failed: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  return new BulwarkError("IO", `${verb} ${what} in ${location} failed: ${errorMessage(err)}`, {
    cause: err,
  });
}

function ignore(): void {}
