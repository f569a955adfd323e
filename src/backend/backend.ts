/**
 * The Backend interface: a place that stores named files and knows nothing about what they mean.
 *
 * A repository is a handful of file types (see docs/design.md, "Repository layout"). A backend maps a
 * FileHandle to wherever it keeps bytes (a path, an object key, an HTTP resource). Everything above it
 * (encryption, packs, indexes) lives in src/repository. Retry, concurrency limits and read-only access are
 * wrappers around a Backend, not features of each backend.
 */

export type FileType = "config" | "key" | "lock" | "snapshot" | "index" | "pack";

export const FILE_TYPES: readonly FileType[] = ["config", "key", "lock", "snapshot", "index", "pack"];

export interface FileHandle {
  readonly type: FileType;
  /** The file's name: 64 lowercase hex digits for everything but `config`, whose name is "". */
  readonly name: string;
}

export interface FileInfo {
  readonly name: string;
  readonly size: number;
}

export interface ByteRange {
  readonly offset: number;
  /** Bytes to read; past the end of the file the read is short, never an error. Absent: to the end. */
  readonly length?: number;
}

/**
 * Bytes to save. `open` MAY be called more than once (a retry starts over), and each call MUST yield the
 * same `length` bytes, so a source never has to be held in memory whole.
 */
export interface SaveSource {
  readonly length: number;
  open(): AsyncIterable<Uint8Array>;
}

export interface SaveOptions {
  /** Refuse (ALREADY_EXISTS) when the file exists instead of replacing it. */
  readonly ifAbsent?: boolean;
  readonly signal?: AbortSignal;
}

export type RetentionMode = "governance" | "compliance";

export interface Retention {
  readonly mode: RetentionMode;
  readonly until: Date;
}

/** A stored file's SHA-256 as the storage computed it (Backend.digest). */
export interface FileDigest {
  /** 64 lowercase hex digits. */
  readonly sha256: string;
  /** The bytes hashed: the file's size when it was read. */
  readonly size: number;
}

/** A version that is not the one Bulwark wrote, over a file of the repository (Backend.tampering). */
export interface ForeignVersion {
  readonly versionId: string;
  readonly deleteMarker: boolean;
  readonly size: number;
  readonly lastModified?: Date;
}

export interface TamperedFile {
  readonly handle: FileHandle;
  /** The version Bulwark wrote, which reads return. */
  readonly genuineVersion: string;
  /** Newest first; the first is the current version. */
  readonly foreign: readonly ForeignVersion[];
}

export interface TamperReport {
  readonly files: readonly TamperedFile[];
  /** Versions and delete markers of repository files (locks excepted) stored at the location. */
  readonly storedVersions: number;
}

export interface UntamperOptions {
  readonly dryRun?: boolean;
  readonly signal?: AbortSignal;
  /** Called after each foreign version is handled, for progress. */
  readonly onVersion?: (done: number, total: number) => void;
}

export interface UntamperAction {
  readonly file: string;
  readonly versionId: string;
  readonly deleteMarker: boolean;
  /** removed; would-remove (dry run); refused (with reason and what it needs). */
  readonly outcome: "removed" | "would-remove" | "refused";
  readonly reason?: string;
  /** What removing it needs that these credentials lack. */
  readonly needs?: string;
}

export interface UntamperReport {
  readonly files: number;
  readonly actions: readonly UntamperAction[];
}

export interface BackendCapabilities {
  /** How many requests it is worth having in flight at once. */
  readonly connections: number;
  /** Whether save can atomically replace an existing file. */
  readonly atomicReplace: boolean;
  /** Retention modes the backend enforces; empty when it has no immutability. */
  readonly retentionModes: readonly RetentionMode[];
  /**
   * True when the server reports that the credentials in use can neither delete nor replace stored files (a
   * vault's append-only token): evidence for an append-only copy. Absent when the backend cannot tell.
   */
  readonly appendOnly?: boolean;
}

export interface Backend {
  /** Where this backend stores, for messages: never contains a secret. */
  readonly location: string;
  readonly capabilities: BackendCapabilities;

  /** MUST throw NOT_FOUND (BulwarkError) when the file does not exist. */
  stat(h: FileHandle, signal?: AbortSignal): Promise<FileInfo>;

  /** MUST yield every complete file of the type exactly once; MUST NOT yield temporary or partial files. */
  list(type: FileType, signal?: AbortSignal): AsyncIterable<FileInfo>;

  /** Reads a whole file or a range. MUST throw NOT_FOUND when the file does not exist. */
  load(h: FileHandle, range?: ByteRange, signal?: AbortSignal): Promise<Buffer>;

  /** Streams a file or a range, for files too large to hold in memory. */
  openRead(h: FileHandle, range?: ByteRange, signal?: AbortSignal): AsyncIterable<Uint8Array>;

  /**
   * Stores a file atomically: after a crash at any moment the file either does not exist or is complete.
   * With ifAbsent it MUST throw ALREADY_EXISTS rather than replace an existing file.
   */
  save(h: FileHandle, source: SaveSource, options?: SaveOptions): Promise<void>;

  /** Removes a file. MUST throw NOT_FOUND when it does not exist; RETENTION_LOCKED when retention forbids. */
  remove(h: FileHandle, signal?: AbortSignal): Promise<void>;

  /** Where immutability is supported: the retention currently on a file. */
  getRetention?(h: FileHandle, signal?: AbortSignal): Promise<Retention | undefined>;
  /** Where immutability is supported: extends (never shortens) a file's retention. */
  extendRetention?(h: FileHandle, retention: Retention, signal?: AbortSignal): Promise<void>;

  /**
   * Where the storage can hash a stored file itself (the vault): the SHA-256 of the file's bytes as the
   * storage holds them, computed next to the data, so checking a file at rest downloads nothing. It MUST
   * hash the stored bytes (never return a digest remembered from the save, never download to hash here: a
   * backend that cannot hash remotely does not offer it) and MUST throw NOT_FOUND when the file does not
   * exist. Wrappers pass it on exactly when the wrapped backend has it.
   */
  digest?(h: FileHandle, signal?: AbortSignal): Promise<FileDigest>;

  /**
   * Where saves leave temporary files behind when interrupted (a killed process, a dropped connection):
   * deletes those not modified for `olderThanMs` and returns how many. A live save keeps touching its
   * temporary file, so a grace of an hour never takes one from under a save in progress. Prune calls it.
   */
  removeStaleTempFiles?(olderThanMs: number, signal?: AbortSignal): Promise<number>;

  /**
   * Where the storage keeps versions the repository's own reads do not show (an S3 bucket with Object
   * Lock): the files whose current version is not the one Bulwark wrote (a delete marker or another
   * version over it), and how many versions and delete markers the location holds at all (init refuses a
   * location holding any). Reads of such a backend already return the genuine version (docs/design.md §21).
   */
  tampering?(signal?: AbortSignal): Promise<TamperReport>;
  /**
   * Removes the delete markers and foreign versions that tampering() finds, where the credentials allow;
   * what they do not allow is reported with what it needs. Never touches a genuine version.
   */
  untamper?(options?: UntamperOptions): Promise<UntamperReport>;

  /** Frees connections; the backend is unusable afterwards. */
  close(): Promise<void>;
}

export function bufferSource(data: Uint8Array): SaveSource {
  return {
    length: data.length,
    // eslint-disable-next-line @typescript-eslint/require-await
    async *open() {
      yield data;
    },
  };
}

export function handleToString(h: FileHandle): string {
  return h.type === "config" ? "config" : `${h.type}/${h.name}`;
}

/**
 * The directory of each file type in every backend's layout (docs/design.md, "Repository layout"); packs
 * go one level deeper, under the first two hex digits of their name.
 */
export const TYPE_DIRECTORIES: Readonly<Record<Exclude<FileType, "config">, string>> = {
  key: "keys",
  lock: "locks",
  snapshot: "snapshots",
  index: "index",
  pack: "data",
};

/** Names of every file but `config`: 64 lowercase hex digits. */
export const FILE_NAME_PATTERN = /^[0-9a-f]{64}$/;

/** Throws (a programming error, not a user's) on a negative or fractional range. */
export function checkRange(range: ByteRange | undefined): void {
  if (range === undefined) return;
  if (!Number.isSafeInteger(range.offset) || range.offset < 0) {
    throw new Error(`invalid range offset ${range.offset}`);
  }
  if (range.length !== undefined && (!Number.isSafeInteger(range.length) || range.length < 0)) {
    throw new Error(`invalid range length ${range.length}`);
  }
}

/** The byte span a range covers in a file of `size` bytes; past the end it is short or empty, never an error. */
export function clampRange(range: ByteRange | undefined, size: number): { start: number; end: number } {
  const start = Math.min(range?.offset ?? 0, size);
  const end = range?.length === undefined ? size : Math.min(size, start + range.length);
  return { start, end };
}
