/**
 * A Backend that keeps files in a Map, for unit tests of the logic above backends.
 *
 * It follows the same contract as the real backends (checked by the shared conformance suite), so a test
 * that passes against it is not relying on some accident of memory: names are validated, buffers are
 * copied on the way in and out, a save becomes visible only once complete, and ranges past the end are
 * short. With `retentionModes` it also models object-lock retention, so logic that depends on immutable
 * storage can be tested without a cloud account; `now` lets such tests move the clock.
 */

import {
  FILE_TYPES,
  handleToString,
  type Backend,
  type BackendCapabilities,
  checkRange,
  clampRange,
  FILE_NAME_PATTERN,
  type ByteRange,
  type FileHandle,
  type FileInfo,
  type FileType,
  type Retention,
  type RetentionMode,
  type SaveOptions,
  type SaveSource,
} from "../backend.js";
import { BulwarkError } from "../../core/errors.js";

export interface MemoryBackendOptions {
  readonly connections?: number;
  /** Retention modes to enforce; empty (the default) means no immutability, like a plain disk. */
  readonly retentionModes?: readonly RetentionMode[];
  /** The clock retention is judged by, in milliseconds since the epoch. */
  readonly now?: () => number;
}

const FILE_TYPE_SET: ReadonlySet<string> = new Set<string>(FILE_TYPES);
/** openRead's piece size, the same as the local backend's so consumers see realistic chunking. */
const READ_PIECE_BYTES = 1024 * 1024;

let instanceCount = 0;

export class MemoryBackend implements Backend {
  readonly location: string;
  readonly capabilities: BackendCapabilities;

  getRetention?: (h: FileHandle, signal?: AbortSignal) => Promise<Retention | undefined>;
  extendRetention?: (h: FileHandle, retention: Retention, signal?: AbortSignal) => Promise<void>;

  private readonly files = new Map<string, Buffer>();
  private readonly retentions = new Map<string, Retention>();
  private readonly now: () => number;
  private closed = false;

  constructor(options: MemoryBackendOptions = {}) {
    this.location = `memory:${++instanceCount}`;
    this.now = options.now ?? Date.now;
    const retentionModes = Object.freeze([...(options.retentionModes ?? [])]);
    this.capabilities = Object.freeze({
      connections: options.connections ?? 8,
      atomicReplace: true,
      retentionModes,
    });
    // Only a backend with immutability has the retention methods, as callers test for their presence.
    if (retentionModes.length > 0) {
      this.getRetention = (h, signal) => this.readRetention(h, signal);
      this.extendRetention = (h, retention, signal) => this.putRetention(h, retention, signal);
    }
  }

  stat(h: FileHandle, signal?: AbortSignal): Promise<FileInfo> {
    return settle(() => {
      signal?.throwIfAborted();
      return { name: h.name, size: this.existing(h).length };
    });
  }

  async *list(type: FileType, signal?: AbortSignal): AsyncIterable<FileInfo> {
    this.assertOpen();
    if (!FILE_TYPE_SET.has(type)) throw new Error(`unknown file type "${type}"`);
    signal?.throwIfAborted();
    // A snapshot of the keys: saves and removes during the listing must not make it yield a file twice.
    const prefix = `${type}/`;
    const entries = [...this.files].filter(([key]) => key.startsWith(prefix));
    for (const [key, data] of entries) {
      await Promise.resolve();
      signal?.throwIfAborted();
      yield { name: key.slice(prefix.length), size: data.length };
    }
  }

  load(h: FileHandle, range?: ByteRange, signal?: AbortSignal): Promise<Buffer> {
    return settle(() => {
      checkRange(range);
      signal?.throwIfAborted();
      const { start, end } = clampRange(range, this.existing(h).length);
      // A copy, so a caller that scribbles on what it loaded cannot change what is stored.
      return Buffer.from(this.existing(h).subarray(start, end));
    });
  }

  async *openRead(h: FileHandle, range?: ByteRange, signal?: AbortSignal): AsyncIterable<Uint8Array> {
    checkRange(range);
    signal?.throwIfAborted();
    // Keep the buffer as it was when the read began: a concurrent replace must not mix two versions.
    const data = this.existing(h);
    const { start, end } = clampRange(range, data.length);
    for (let position = start; position < end; position += READ_PIECE_BYTES) {
      await Promise.resolve();
      signal?.throwIfAborted();
      yield Buffer.from(data.subarray(position, Math.min(end, position + READ_PIECE_BYTES)));
    }
  }

  async save(h: FileHandle, source: SaveSource, options: SaveOptions = {}): Promise<void> {
    const key = this.keyOf(h);
    const { signal, ifAbsent = false } = options;
    signal?.throwIfAborted();
    const what = handleToString(h);
    const pieces: Buffer[] = [];
    let received = 0;
    for await (const piece of source.open()) {
      signal?.throwIfAborted();
      received += piece.length;
      if (received > source.length) {
        throw new Error(`the source for ${what} yielded more than its declared ${source.length} bytes`);
      }
      // Copied now, not at the end: a source may reuse its buffer once asked for the next piece.
      pieces.push(Buffer.from(piece));
    }
    if (received !== source.length) {
      throw new Error(`the source for ${what} yielded ${received} bytes, not its declared ${source.length}`);
    }
    signal?.throwIfAborted();
    // Checked only now, like a rename or conditional PUT at the end of an upload: concurrent saves race here.
    if (this.files.has(key)) {
      if (ifAbsent) throw new BulwarkError("ALREADY_EXISTS", `${what} already exists in ${this.location}`);
      this.assertNotRetained(key, what, "replace");
    }
    this.files.set(key, Buffer.concat(pieces, received));
  }

  remove(h: FileHandle, signal?: AbortSignal): Promise<void> {
    return settle(() => {
      signal?.throwIfAborted();
      const key = this.keyOf(h);
      this.existing(h);
      this.assertNotRetained(key, handleToString(h), "remove");
      this.files.delete(key);
      this.retentions.delete(key);
    });
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  /** How many files are stored, across all types: lets tests assert nothing leaked. */
  get fileCount(): number {
    return this.files.size;
  }

  private readRetention(h: FileHandle, signal?: AbortSignal): Promise<Retention | undefined> {
    return settle(() => {
      signal?.throwIfAborted();
      this.existing(h);
      const retention = this.retentions.get(this.keyOf(h));
      return retention === undefined ? undefined : { mode: retention.mode, until: new Date(retention.until) };
    });
  }

  private putRetention(h: FileHandle, retention: Retention, signal?: AbortSignal): Promise<void> {
    return settle(() => {
      signal?.throwIfAborted();
      const key = this.keyOf(h);
      const what = handleToString(h);
      if (!this.capabilities.retentionModes.includes(retention.mode)) {
        throw new Error(`retention mode "${retention.mode}" is not supported by ${this.location}`);
      }
      this.existing(h);
      const current = this.retentions.get(key);
      if (current !== undefined && current.until.getTime() > this.now()) {
        if (retention.until.getTime() < current.until.getTime()) {
          throw new BulwarkError(
            "RETENTION_LOCKED",
            `${what} is retained until ${current.until.toISOString()}`,
          );
        }
        if (current.mode === "compliance" && retention.mode !== "compliance") {
          throw new BulwarkError("RETENTION_LOCKED", `${what} is under compliance retention`);
        }
      }
      this.retentions.set(key, { mode: retention.mode, until: new Date(retention.until) });
    });
  }

  private assertNotRetained(key: string, what: string, action: "remove" | "replace"): void {
    const retention = this.retentions.get(key);
    if (retention !== undefined && retention.until.getTime() > this.now()) {
      throw new BulwarkError(
        "RETENTION_LOCKED",
        `cannot ${action} ${what}: it is under ${retention.mode} retention until ${retention.until.toISOString()}`,
      );
    }
  }

  /** The stored bytes of a file, or NOT_FOUND. Not a copy: callers must copy before handing them out. */
  private existing(h: FileHandle): Buffer {
    const data = this.files.get(this.keyOf(h));
    if (data === undefined) {
      throw new BulwarkError("NOT_FOUND", `${handleToString(h)} not found in ${this.location}`);
    }
    return data;
  }

  /** The map key of a file; throws a plain Error for a malformed handle, which is a bug in the caller. */
  private keyOf(h: FileHandle): string {
    this.assertOpen();
    if (!FILE_TYPE_SET.has(h.type)) throw new Error(`unknown file type "${h.type}"`);
    if (h.type === "config") {
      if (h.name !== "") throw new Error(`invalid config name "${h.name}": the config file's name is ""`);
    } else if (!FILE_NAME_PATTERN.test(h.name)) {
      throw new Error(`invalid ${h.type} name "${h.name}": expected 64 lowercase hex digits`);
    }
    return `${h.type}/${h.name}`;
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`the memory backend ${this.location} is closed`);
  }
}

/** Runs synchronous backend logic as a promise, so a throw becomes a rejection as with a real backend. */
function settle<T>(body: () => T): Promise<T> {
  try {
    return Promise.resolve(body());
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
}
