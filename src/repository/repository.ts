/**
 * A Repository: a Backend plus the keys that make sense of it (docs/design.md, "Repository").
 *
 * Opening one reads the key files and unwraps the master key with the password, then reads the config.
 * Every object but key files is sealed under the master key; every blob is verified against its id on load.
 */
import { randomBytes } from "node:crypto";
import { bufferSource, type Backend, type FileType } from "../backend/backend.js";
import { BulwarkError, errorMessage, hasCode, isNotFound } from "../core/errors.js";
import { blobId, randomKey, sha256Hex, type ScryptParams } from "../crypto/crypto.js";
import { BlobCodec } from "./blob-codec.js";
import {
  assertListableKeyFile,
  createKeyFile,
  parseKeyFile,
  unwrapKeyFile,
  type KeyFile,
  type MasterKey,
} from "./keys.js";
import { MasterIndex, type IndexEntry, type IndexFile } from "./master-index.js";
import type { BlobType } from "./pack.js";

export interface ChunkerConfig {
  minSize: number;
  avgSize: number;
  maxSize: number;
  /** hex, 32 bytes: derives the chunker's gear table, so boundaries do not leak content. */
  seed: string;
}

export interface RepoConfig {
  version: 1;
  id: string;
  chunker: ChunkerConfig;
  /** hex, 32 bytes: the HMAC key of blob ids. Shared by a copy set so blobs move without re-hashing. */
  idKey: string;
  compression: { algorithm: "zstd"; level: number };
  /** Target size of a pack file in bytes. */
  packSize: number;
}

export const DEFAULT_PACK_SIZE = 16 * 1024 * 1024;
export const DEFAULT_COMPRESSION_LEVEL = 2;

export interface InitOptions {
  chunker?: Partial<Omit<ChunkerConfig, "seed">>;
  compressionLevel?: number;
  packSize?: number;
  /** Share chunker seed and id key with this repository's config, so copies move blobs as they are. */
  copyParamsFrom?: RepoConfig;
  kdf?: ScryptParams;
}

/** File types whose contents are sealed JSON documents. */
export type DocumentType = "snapshot" | "index" | "lock";

/** Tree packs kept in memory: trees are read again and again by walks, and are small. */
const TREE_PACK_CACHE_BYTES = 64 * 1024 * 1024;

export class Repository {
  readonly index = new MasterIndex();
  private readonly treePacks = new Map<string, Buffer>();
  private readonly treePacksLoading = new Map<string, Promise<Buffer>>();
  private treePackBytes = 0;
  readonly codec: BlobCodec;
  readonly idKey: Buffer;

  private constructor(
    readonly backend: Backend,
    readonly master: MasterKey,
    readonly config: RepoConfig,
    /** Name of the key file the password opened. */
    readonly keyName: string,
    /** Index files read while the password was being stretched: the two wait on different resources. */
    private indexPrefetch?: Promise<Map<string, Buffer>>,
  ) {
    this.codec = new BlobCodec(master.encrypt, config.compression.level);
    this.idKey = Buffer.from(config.idKey, "hex");
  }

  get id(): string {
    return this.config.id;
  }

  static async init(backend: Backend, password: string, options: InitOptions = {}): Promise<Repository> {
    // A versioned store can hide a repository behind delete markers: a prefix holding any version of a
    // repository file is not empty, and a new repository must never be written over a hidden one.
    const versions = await backend.tampering?.();
    if (versions !== undefined && versions.storedVersions > 0) {
      const tampered = versions.files.length;
      throw new BulwarkError(
        "ALREADY_EXISTS",
        tampered > 0
          ? `tampering detected at ${backend.location}: ${tampered} file${tampered === 1 ? "" : "s"} of a repository ${tampered === 1 ? "is" : "are"} hidden behind delete markers or foreign versions; refusing to create a repository over it`
          : `${backend.location} holds ${versions.storedVersions} stored version${versions.storedVersions === 1 ? "" : "s"} of repository files (a repository, or what is left of one); refusing to create a repository there`,
        {
          hint:
            tampered > 0
              ? "the repository is still there and readable: `bulwark untamper -r LOCATION --dry-run` lists what was put over it and `bulwark untamper -r LOCATION` removes it"
              : "open it with the other commands, or create the new repository under another (empty) prefix",
        },
      );
    }
    if (await exists(backend, { type: "config", name: "" })) {
      throw new BulwarkError("ALREADY_EXISTS", `a repository already exists at ${backend.location}`);
    }
    const from = options.copyParamsFrom;
    const config: RepoConfig = {
      version: 1,
      id: randomBytes(32).toString("hex"),
      chunker: from
        ? { ...from.chunker }
        : {
            minSize: options.chunker?.minSize ?? 512 * 1024,
            avgSize: options.chunker?.avgSize ?? 1024 * 1024,
            maxSize: options.chunker?.maxSize ?? 8 * 1024 * 1024,
            seed: randomBytes(32).toString("hex"),
          },
      idKey: from ? from.idKey : randomBytes(32).toString("hex"),
      compression: { algorithm: "zstd", level: options.compressionLevel ?? DEFAULT_COMPRESSION_LEVEL },
      packSize: options.packSize ?? from?.packSize ?? DEFAULT_PACK_SIZE,
    };
    const master: MasterKey = { encrypt: randomKey() };
    const key = await createKeyFile(master, password, options.kdf);
    // The key goes first: a config without a key would be a repository nobody can open.
    await backend.save({ type: "key", name: key.name }, bufferSource(key.bytes), { ifAbsent: true });
    const repo = new Repository(backend, master, config, key.name);
    const sealed = repo.sealDocument(config);
    await backend.save({ type: "config", name: "" }, bufferSource(sealed), { ifAbsent: true });
    return repo;
  }

  static async open(backend: Backend, password: string): Promise<Repository> {
    let configBytes: Buffer;
    try {
      configBytes = await backend.load({ type: "config", name: "" });
    } catch (err) {
      if (isNotFound(err)) {
        throw new BulwarkError("NO_REPOSITORY", `no repository at ${backend.location}`, {
          cause: err,
          hint: "create one with `bulwark init`, or check --repo / BULWARK_REPOSITORY",
        });
      }
      throw err;
    }
    const indexPrefetch = prefetch(backend, "index");
    // A damaged key file, or the key of an interrupted `init` whose config was never written, must not stop
    // the other keys from opening the repository: each problem is remembered and reported only if no key works.
    const problems: string[] = [];
    for await (const info of backend.list("key")) {
      const what = `key/${info.name.slice(0, 12)}`;
      let file: KeyFile;
      try {
        file = parseKeyFile(await backend.load({ type: "key", name: info.name }), what);
      } catch (err) {
        if (!isNotFound(err)) problems.push(errorMessage(err)); // not found: removed while we listed
        continue;
      }
      let master;
      try {
        master = await unwrapKeyFile(file, password);
      } catch (err) {
        problems.push(`${what}: ${errorMessage(err)}`);
        continue;
      }
      if (master === undefined) continue;
      let config: RepoConfig;
      try {
        config = parseConfig(new BlobCodec(master.encrypt, 0).decode(configBytes, undefined, "config"));
      } catch (err) {
        problems.push(
          `${what} opens with this password but does not decrypt the config: ${errorMessage(err)}`,
        );
        continue;
      }
      return new Repository(backend, master, config, info.name, indexPrefetch);
    }
    if (problems.some((p) => p.includes("does not decrypt the config"))) {
      throw new BulwarkError(
        "INVALID_DATA",
        `the config of ${backend.location} cannot be read: ${problems.join("; ")}`,
        {
          hint: "the config file is damaged, or belongs to another repository; restore it from a copy",
        },
      );
    }
    throw new BulwarkError("WRONG_PASSWORD", `wrong password: no key in ${backend.location} opens with it`, {
      hint:
        "check BULWARK_PASSWORD, BULWARK_PASSWORD_FILE or --password-file" +
        (problems.length > 0 ? ` (also: ${problems.join("; ")})` : ""),
    });
  }

  /** Seals a JSON document (compressed when worth it). */
  sealDocument(doc: unknown): Buffer {
    return this.codec.encode(Buffer.from(JSON.stringify(doc)));
  }

  openDocument<T>(bytes: Uint8Array, what: string): T {
    const plain = this.codec.decode(bytes, undefined, what);
    try {
      return JSON.parse(plain.toString("utf8")) as T;
    } catch (cause) {
      throw new BulwarkError("INVALID_DATA", `${what}: not valid JSON`, { cause });
    }
  }

  /** Saves a sealed document under the SHA-256 of its stored bytes and returns that name. */
  async saveDocument(type: DocumentType, doc: unknown): Promise<string> {
    const sealed = this.sealDocument(doc);
    const name = sha256Hex(sealed);
    await this.backend.save({ type, name }, bufferSource(sealed), { ifAbsent: true });
    return name;
  }

  async loadDocument<T>(type: DocumentType, name: string): Promise<T> {
    return this.openVerifiedDocument<T>(type, name, await this.backend.load({ type, name }));
  }

  private openVerifiedDocument<T>(type: DocumentType, name: string, bytes: Buffer): T {
    const what = `${type}/${name.slice(0, 12)}`;
    if (sha256Hex(bytes) !== name) {
      throw new BulwarkError("INVALID_DATA", `${what}: contents do not match the file name (damaged)`);
    }
    return this.openDocument<T>(bytes, what);
  }

  async listNames(type: FileType): Promise<string[]> {
    const names: string[] = [];
    for await (const info of this.backend.list(type)) names.push(info.name);
    return names;
  }

  /**
   * Reads every index file into the master index. Returns damaged index files instead of failing. `exclude`:
   * files left unread (`repair --index --distrust`, which replaces them).
   */
  async loadIndex(
    options: { exclude?: ReadonlySet<string> } = {},
  ): Promise<{ files: number; damaged: { name: string; error: string }[] }> {
    const prefetched = (await this.indexPrefetch) ?? new Map<string, Buffer>();
    this.indexPrefetch = undefined;
    const names = (await this.listNames("index")).filter((n) => options.exclude?.has(n) !== true);
    const damaged: { name: string; error: string }[] = [];
    const files: { name: string; file: IndexFile }[] = [];
    await forEachLimit(names, 8, async (name) => {
      try {
        const bytes = prefetched.get(name);
        files.push({
          name,
          file: bytes
            ? this.openVerifiedDocument<IndexFile>("index", name, bytes)
            : await this.loadDocument<IndexFile>("index", name),
        });
      } catch (err) {
        if (isNotFound(err)) return; // replaced by a concurrent prune; its successor is listed too
        damaged.push({ name, error: errorMessage(err) });
      }
    });
    // Merged once all are read: which of a blob's locations is read must not depend on network timing.
    this.index.addFiles(files);
    return { files: names.length, damaged };
  }

  computeId(data: Uint8Array): string {
    return blobId(this.idKey, data);
  }

  /**
   * Loads, decrypts and verifies one blob; throws INVALID_DATA or NOT_FOUND naming the blob and pack. A blob
   * the index lists in several packs is read from the next when a copy fails (a damaged pack, or junk that
   * claims the id, §19, "Index poisoning"); the error of the first copy is thrown when none verifies.
   */
  async loadBlob(id: string, type?: BlobType): Promise<Buffer> {
    const entry = this.index.get(id);
    if (entry === undefined) {
      throw new BulwarkError("NOT_FOUND", `${type ?? "blob"} ${id.slice(0, 12)} is not in the index`);
    }
    try {
      return await this.loadBlobAt(id, entry);
    } catch (first) {
      // Only what a copy of the data can cause: a dead backend fails the same way for every pack. The other
      // locations are looked up only then: every tree of every backup and restore comes through here.
      if (!hasCode(first, "INVALID_DATA") && !hasCode(first, "NOT_FOUND")) throw first;
      for (const other of this.index.locations(id).slice(1)) {
        try {
          return await this.loadBlobAt(id, other);
        } catch (err) {
          if (!hasCode(err, "INVALID_DATA") && !hasCode(err, "NOT_FOUND")) throw err;
        }
      }
      throw first;
    }
  }

  private async loadBlobAt(id: string, entry: IndexEntry): Promise<Buffer> {
    const what = `blob ${id.slice(0, 12)} in pack ${entry.pack.slice(0, 12)}`;
    const envelope = this.index.isTreePack(entry.pack)
      ? (await this.loadTreePack(entry.pack)).subarray(entry.offset, entry.offset + entry.length)
      : await this.backend.load({ type: "pack", name: entry.pack }, entry);
    if (envelope.length !== entry.length) {
      throw new BulwarkError("INVALID_DATA", `${what}: pack is truncated`);
    }
    const data = this.codec.decode(envelope, entry.rawLength, what);
    if (this.computeId(data) !== id) {
      throw new BulwarkError("INVALID_DATA", `${what}: contents do not match the blob id`);
    }
    return data;
  }

  private async loadTreePack(pack: string): Promise<Buffer> {
    const cached = this.treePacks.get(pack);
    if (cached) {
      // Re-insert to mark it most recently used.
      this.treePacks.delete(pack);
      this.treePacks.set(pack, cached);
      return cached;
    }
    let loading = this.treePacksLoading.get(pack);
    if (!loading) {
      loading = this.backend.load({ type: "pack", name: pack });
      this.treePacksLoading.set(pack, loading);
    }
    try {
      const data = await loading;
      if (!this.treePacks.has(pack)) {
        this.treePacks.set(pack, data);
        this.treePackBytes += data.length;
        for (const [name, buf] of this.treePacks) {
          if (this.treePackBytes <= TREE_PACK_CACHE_BYTES || name === pack) break;
          this.treePacks.delete(name);
          this.treePackBytes -= buf.length;
        }
      }
      return data;
    } finally {
      this.treePacksLoading.delete(pack);
    }
  }

  // --- keys ---

  async listKeys(): Promise<{ name: string; file: KeyFile; current: boolean }[]> {
    const out: { name: string; file: KeyFile; current: boolean }[] = [];
    for (const name of await this.listNames("key")) {
      const what = `key/${name.slice(0, 12)}`;
      const file = parseKeyFile(await this.backend.load({ type: "key", name }), what);
      assertListableKeyFile(file, what);
      out.push({ name, file, current: name === this.keyName });
    }
    return out;
  }

  async addKey(password: string, kdf?: ScryptParams): Promise<string> {
    const key = await createKeyFile(this.master, password, kdf);
    await this.backend.save({ type: "key", name: key.name }, bufferSource(key.bytes), { ifAbsent: true });
    return key.name;
  }

  async removeKey(name: string): Promise<void> {
    if (name === this.keyName) {
      throw new BulwarkError("USAGE", "refusing to remove the key this command was opened with", {
        hint: "open the repository with another password to remove this key, or use `bulwark key passwd`",
      });
    }
    await this.backend.remove({ type: "key", name });
  }
}

/** Reads all files of a type; failures are left for the real read to report. */
async function prefetch(backend: Backend, type: FileType): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  try {
    const names: string[] = [];
    for await (const info of backend.list(type)) names.push(info.name);
    await forEachLimit(names, 8, async (name) => {
      try {
        out.set(name, await backend.load({ type, name }));
      } catch {
        // reported by the real read
      }
    });
  } catch {
    // reported by the real read
  }
  return out;
}

function parseConfig(plain: Buffer): RepoConfig {
  const config = JSON.parse(plain.toString("utf8")) as RepoConfig;
  if (config.version !== 1) {
    throw new BulwarkError(
      "INVALID_DATA",
      `repository format version ${String(config.version)} is not supported`,
      {
        hint: "upgrade Bulwark",
      },
    );
  }
  return config;
}

async function exists(backend: Backend, h: { type: FileType; name: string }): Promise<boolean> {
  try {
    await backend.stat(h);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/** Runs fn over items with at most `limit` in flight; the first failure rejects after the others settle. */
export async function forEachLimit<T>(
  items: Iterable<T>,
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  const iterator = items[Symbol.iterator]();
  let failure: { err: unknown } | undefined;
  const run = async (): Promise<void> => {
    for (let next = iterator.next(); !next.done && failure === undefined; next = iterator.next()) {
      try {
        await fn(next.value);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: limit }, run));
  if (failure) throw failure.err;
}
