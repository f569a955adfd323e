/**
 * A Backend on an SFTP server (OpenSSH's sftp-server or internal-sftp), laid out like the local backend
 * (layout.ts):
 *
 *   config                 keys/<name>      locks/<name>      snapshots/<name>
 *   index/<name>           data/<first two hex digits of name>/<name>
 *
 * Location: `sftp:user@host[:port]/path` or `sftp://user@host:port/path` (sftp-location.ts).
 * One SSH connection carries a pool of SFTP channels (sftp-connection.ts); the host key is verified against
 * known_hosts or a pinned fingerprint (host-keys.ts), and unknown hosts are refused unless told otherwise.
 *
 * Speed: SFTP is request/response, so one request at a time is bound by round trips (SERVICES.md measured a
 * stream with 64 KiB pieces ~30x slower than pipelined transfers). Every transfer here keeps many requests
 * of the server's maximum size (limits@openssh.com) in flight, with a bounded number of bytes outstanding,
 * so memory stays flat for files of any size. Reads of 8 MiB or more are also striped over up to three
 * channels, because one channel's flow-control window caps a download (about 2x faster, measured); writes
 * are not (measured no faster).
 *
 * Save, in numbered steps (crash safety as in the local backend):
 *   1. Open `.tmp-<random>` beside the destination with O_CREAT|O_EXCL, mode 0444 (a missing data/xx
 *      directory is created on the way).
 *   2. Write the source with pipelined WRITE requests; fsync@openssh.com when the server offers it.
 *   3. Move it into place:
 *      - replace: posix-rename@openssh.com (rename(2): atomic replace). Without that extension, plain SFTP
 *        RENAME refuses an existing target, so the old file is removed first: not atomic, and
 *        capabilities.atomicReplace says so.
 *      - ifAbsent: hardlink@openssh.com (link(2) refuses an existing target atomically), then unlink the temp
 *        file. Without it, plain SFTP RENAME, which SFTP v3 defines as failing when the target exists
 *        (OpenSSH implements it with link(2) + unlink(2)). Either way a refusal is checked with a stat, since
 *        the server reports it only as a generic failure, and becomes ALREADY_EXISTS.
 *   4. On any failure the temp file is removed; list never shows `.tmp-*` names.
 * SFTP has no directory fsync, so the rename's durability is the server file system's (ext4/xfs journal it).
 */

import { randomBytes } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { homedir, userInfo } from "node:os";
import { join, posix } from "node:path";

import ssh2, { type Stats } from "ssh2";

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
import { normaliseFingerprint, parseKnownHosts, type KnownHostEntry } from "./host-keys.js";
import { SftpConnection, type Channel } from "./sftp-connection.js";
import { formatSftpLocation, parseSftpLocation, type SftpLocation } from "./sftp-location.js";
import { systemClock } from "../../core/clock.js";
import { directoryOf, layoutDirectories, layoutPath, PACK_PREFIXES } from "../layout.js";

export interface SftpOptions {
  /**
   * Private key file. Without one: the keys of a running ssh-agent (see `agent`), and the first of
   * ~/.ssh/id_ed25519 and ~/.ssh/id_rsa that exists (skipped, when an agent is there, if it needs a passphrase
   * that was not given).
   */
  readonly privateKey?: string;
  /**
   * The ssh-agent socket to authenticate with when no privateKey is given; default SSH_AUTH_SOCK when it is a
   * socket. `false`: never use an agent.
   */
  readonly agent?: string | false;
  /** Passphrase of an encrypted private key. Never shown in messages. */
  readonly passphrase?: string;
  /** OpenSSH known_hosts file; ~/.ssh/known_hosts by default. Ignored when hostKeyFingerprint is given. */
  readonly knownHosts?: string;
  /** The server's key pinned as `SHA256:...` (as `ssh-keygen -lf` prints it); replaces known_hosts. */
  readonly hostKeyFingerprint?: string;
  /** Connect to a host known neither to known_hosts nor by a pinned key. Default false: refuse. */
  readonly acceptUnknownHost?: boolean;
  /** Time allowed for TCP connect, SSH handshake and login; 20 s by default. */
  readonly connectTimeoutMs?: number;
  /** SFTP channels on the one SSH connection (each a server process); 6 by default. */
  readonly connections?: number;
  /** Create the repository layout (mkdir -p); refuses with ALREADY_EXISTS when a config exists there. */
  readonly create?: boolean;
  /** The user when the location names none; the local user name by default, as ssh does. */
  readonly user?: string;
}

const TEMP_PREFIX = ".tmp-";
const DEFAULT_CONNECT_TIMEOUT_MS = 20_000;
const DEFAULT_CONNECTIONS = 6;
/** Bytes of WRITE / READ requests one transfer keeps in flight: deep enough to hide the round trip. */
const BYTES_IN_FLIGHT = 8 * 1024 * 1024;
/** Channels one large openRead is striped over, and the size from which it is worth it. */
const READ_STRIPES = 3;
const STRIPE_MIN_BYTES = 8 * 1024 * 1024;
/** How many data/xx directories list reads at once. */
const LIST_DIRECTORY_BATCH = 16;
/** SFTP status codes (draft-ietf-secsh-filexfer-02), as ssh2 puts them in `err.code`. */
const SSH_FX = {
  EOF: 1,
  NO_SUCH_FILE: 2,
  PERMISSION_DENIED: 3,
  FAILURE: 4,
  NO_CONNECTION: 6,
  CONNECTION_LOST: 7,
};

/** Opens (or with `create`, creates) the repository directory at an SFTP location (a string, or parsed). */
export async function openSftpBackend(
  location: string | SftpLocation,
  options: SftpOptions = {},
): Promise<SftpBackend> {
  const parsed = typeof location === "string" ? parseSftpLocation(location) : location;
  const user = parsed.user ?? options.user ?? userInfo().username;
  const shown = formatSftpLocation({ ...parsed, user });
  const credentials = await loadCredentials(options, shown);
  const knownHostsPath = options.knownHosts ?? join(homedir(), ".ssh", "known_hosts");
  let pinnedFingerprint: string | undefined;
  let knownHosts: KnownHostEntry[] = [];
  if (options.hostKeyFingerprint !== undefined) {
    pinnedFingerprint = normaliseFingerprint(options.hostKeyFingerprint);
    if (pinnedFingerprint === undefined) {
      throw new BulwarkError(
        "CONFIG_INVALID",
        `${shown}: "${options.hostKeyFingerprint}" is not a SHA256 host key fingerprint`,
        {
          hint: "give it as ssh-keygen -lf prints it: SHA256: followed by 43 base64 characters",
        },
      );
    }
  } else {
    knownHosts = await loadKnownHosts(knownHostsPath, shown);
  }
  const connections = options.connections ?? DEFAULT_CONNECTIONS;
  if (!Number.isInteger(connections) || connections < 1) {
    throw new BulwarkError(
      "CONFIG_INVALID",
      `${shown}: connections must be a positive integer, not ${connections}`,
    );
  }

  const connection = new SftpConnection({
    location: shown,
    host: parsed.host,
    port: parsed.port,
    user,
    ...credentials,
    passphrase: options.passphrase,
    pinnedFingerprint,
    knownHosts,
    knownHostsPath,
    acceptUnknownHost: options.acceptUnknownHost ?? false,
    connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    maxChannels: connections,
  });
  try {
    const channel = await connection.lease();
    let root: string;
    let atomicReplace: boolean;
    try {
      root = await resolveRoot(channel, parsed.path, shown);
      atomicReplace = channel.extensions.has("posix-rename@openssh.com");
    } finally {
      connection.release(channel);
    }
    const backend = new SftpBackend(shown, root, connection, { connections, atomicReplace });
    if (options.create === true) await backend.createLayout();
    else await backend.checkRoot();
    return backend;
  } catch (err) {
    await connection.close();
    throw err;
  }
}

export class SftpBackend implements Backend {
  readonly location: string;
  readonly capabilities: BackendCapabilities;
  private closed = false;

  /** Use openSftpBackend, which connects and checks the directory. */
  constructor(
    location: string,
    /** Absolute path of the repository directory on the server. */
    readonly root: string,
    private readonly connection: SftpConnection,
    capabilities: { connections: number; atomicReplace: boolean },
  ) {
    this.location = location;
    this.capabilities = Object.freeze({
      connections: capabilities.connections,
      atomicReplace: capabilities.atomicReplace,
      retentionModes: Object.freeze([]),
    });
  }

  /** NO_REPOSITORY unless the root is a directory. */
  async checkRoot(): Promise<void> {
    const info = await this.withChannel((ch) => statOrUndefined(ch, this.root)).catch((err: unknown) => {
      throw this.classify(err, "open", "the repository directory");
    });
    if (info === undefined || !info.isDirectory()) {
      throw new BulwarkError("NO_REPOSITORY", `there is no repository at ${this.location}`, {
        hint: "check the path, or create a repository there with `bulwark init`",
      });
    }
  }

  /**
   * Creates the directory layout (mkdir -p; the directory may exist, empty or half-created). Refuses with
   * ALREADY_EXISTS when it already holds a repository's config.
   */
  async createLayout(): Promise<void> {
    try {
      await this.withChannel(async (ch) => {
        await mkdirs(ch, this.root);
        if ((await statOrUndefined(ch, posix.join(this.root, "config"))) !== undefined) {
          throw new BulwarkError("ALREADY_EXISTS", `a repository already exists at ${this.location}`, {
            hint: "choose another directory, or use the existing repository",
          });
        }
        for (const sub of Object.values(TYPE_DIRECTORIES)) await mkdirs(ch, posix.join(this.root, sub));
      });
      const dataDirectories = PACK_PREFIXES.map((p) => posix.join(this.root, "data", p));
      await forEachLimit(dataDirectories, this.capabilities.connections, (directory) =>
        this.withChannel((ch) => mkdirs(ch, directory)),
      );
    } catch (err) {
      throw this.classify(err, "create", "the repository layout");
    }
  }

  async stat(h: FileHandle, signal?: AbortSignal): Promise<FileInfo> {
    const path = this.pathOf(h);
    signal?.throwIfAborted();
    const what = handleToString(h);
    const info = await this.withChannel((ch) => call<Stats>(ch, (cb) => ch.sftp.stat(path, cb))).catch(
      (err: unknown) => {
        throw this.classify(err, "read", what);
      },
    );
    if (!info.isFile()) throw new BulwarkError("IO", `${what} in ${this.location} is not a regular file`);
    return { name: h.name, size: info.size };
  }

  async *list(type: FileType, signal?: AbortSignal): AsyncIterable<FileInfo> {
    this.assertOpen();
    signal?.throwIfAborted();
    if (type === "config") {
      const path = posix.join(this.root, "config");
      const info = await this.withChannel((ch) => statOrUndefined(ch, path)).catch((err: unknown) => {
        throw this.classify(err, "list", "config");
      });
      if (info?.isFile() === true) yield { name: "", size: info.size };
      return;
    }
    const typeDirectory = posix.join(this.root, directoryOf(type));
    if (type !== "pack") {
      yield* await this.listDirectory(typeDirectory, "");
      return;
    }
    // Read several data/xx directories at once, but yield them in order as they arrive.
    const pending: Promise<FileInfo[]>[] = [];
    let next = 0;
    const refill = (): void => {
      while (pending.length < LIST_DIRECTORY_BATCH && next < PACK_PREFIXES.length) {
        const prefix = PACK_PREFIXES[next++] ?? "";
        const listing = this.listDirectory(posix.join(typeDirectory, prefix), prefix);
        listing.catch(ignore); // awaited below; this keeps an abandoned listing from going unhandled
        pending.push(listing);
      }
    };
    refill();
    while (pending.length > 0) {
      signal?.throwIfAborted();
      const files = await pending.shift();
      refill();
      yield* files ?? [];
    }
  }

  async load(h: FileHandle, range?: ByteRange, signal?: AbortSignal): Promise<Buffer> {
    const path = this.pathOf(h);
    checkRange(range);
    signal?.throwIfAborted();
    const what = handleToString(h);
    const lanes: Lane[] = [];
    try {
      const { start, end, chunk } = await this.openLanes(lanes, path, range);
      const buffer = Buffer.allocUnsafeSlow(end - start);
      const offsets: number[] = [];
      for (let o = 0; o < buffer.length; o += chunk) offsets.push(o);
      const filled = new Map<number, number>();
      await forEachLimit(offsets, maxRequests(chunk) * lanes.length, async (o) => {
        signal?.throwIfAborted();
        const lane = laneFor(lanes, o / chunk);
        const n = Math.min(chunk, buffer.length - o);
        filled.set(o, await readFully(lane.ch, lane.handle, buffer.subarray(o, o + n), start + o));
      });
      // The file may have shrunk since fstat: keep only the bytes read without a gap.
      let total = 0;
      for (const o of offsets) {
        const n = filled.get(o) ?? 0;
        total += n;
        if (n < Math.min(chunk, buffer.length - o)) break;
      }
      return total === buffer.length ? buffer : buffer.subarray(0, total);
    } catch (err) {
      throw this.classify(err, "read", what);
    } finally {
      await this.closeLanes(lanes);
    }
  }

  async *openRead(h: FileHandle, range?: ByteRange, signal?: AbortSignal): AsyncIterable<Uint8Array> {
    const path = this.pathOf(h);
    checkRange(range);
    signal?.throwIfAborted();
    const what = handleToString(h);
    const lanes: Lane[] = [];
    const pending: { reading: Promise<Buffer>; requested: number }[] = [];
    try {
      const { start, end, chunk } = await this.openLanes(lanes, path, range);
      const depth = maxRequests(chunk) * lanes.length;
      let next = start;
      let requests = 0;
      const refill = (): void => {
        while (pending.length < depth && next < end) {
          const lane = laneFor(lanes, requests++);
          const n = Math.min(chunk, end - next);
          // A fresh buffer per piece: the consumer may keep it after asking for the next one.
          const piece = Buffer.allocUnsafe(n);
          const reading = readFully(lane.ch, lane.handle, piece, next).then((filled) =>
            piece.subarray(0, filled),
          );
          reading.catch(ignore); // awaited in order below
          pending.push({ reading, requested: n });
          next += n;
        }
      };
      refill();
      for (let head = pending.shift(); head !== undefined; head = pending.shift()) {
        signal?.throwIfAborted();
        const piece = await head.reading;
        refill();
        if (piece.length > 0) yield piece;
        if (piece.length < head.requested) break; // the file ended early (it shrank)
      }
    } catch (err) {
      throw this.classify(err, "read", what);
    } finally {
      // A consumer that stopped early leaves requests in flight: let them land before closing the handles.
      await Promise.allSettled(pending.map((p) => p.reading));
      await this.closeLanes(lanes);
    }
  }

  async save(h: FileHandle, source: SaveSource, options: SaveOptions = {}): Promise<void> {
    const finalPath = this.pathOf(h);
    const { signal, ifAbsent = false } = options;
    signal?.throwIfAborted();
    const what = handleToString(h);
    const directory = posix.dirname(finalPath);
    const tempPath = posix.join(directory, TEMP_PREFIX + randomBytes(12).toString("hex"));
    await this.withChannel(async (ch) => {
      let tempExists = false;
      try {
        // One channel: unlike reads, striping writes over channels measured no faster (the server's
        // window is not what limits them), and it would need the temp file writable by other handles.
        const handle = await createTempFile(ch, tempPath, directory);
        tempExists = true;
        try {
          await writeSource(ch, handle, source, what, signal);
          if (ch.extensions.has("fsync@openssh.com")) {
            await call(ch, (cb) => ch.sftp.ext_openssh_fsync(handle, cb));
          }
        } catch (err) {
          await closeHandle(ch, handle).catch(ignore);
          throw err;
        }
        await closeHandle(ch, handle);
        // Last chance to cancel: after this the file is visible.
        signal?.throwIfAborted();
        if (ifAbsent) {
          await this.moveIfAbsent(ch, tempPath, finalPath, what);
          tempExists = false;
          // The file is saved; a temp name left behind is debris list ignores, not a failed save.
          await call(ch, (cb) => ch.sftp.unlink(tempPath, cb)).catch(ignore);
        } else {
          await this.moveReplacing(ch, tempPath, finalPath);
          tempExists = false;
        }
      } catch (err) {
        // Classified first: a full disk is only visible (statvfs) while the temp file still fills it.
        const classified = await this.classifySave(ch, err, what, directory);
        if (tempExists) await call(ch, (cb) => ch.sftp.unlink(tempPath, cb)).catch(ignore);
        throw classified;
      }
    });
  }

  async remove(h: FileHandle, signal?: AbortSignal): Promise<void> {
    const path = this.pathOf(h);
    signal?.throwIfAborted();
    await this.withChannel((ch) => call(ch, (cb) => ch.sftp.unlink(path, cb))).catch((err: unknown) => {
      throw this.classify(err, "remove", handleToString(h));
    });
  }

  /**
   * Deletes `.tmp-*` files that interrupted saves left behind, if not modified for `olderThanMs` (as
   * LocalBackend's removeStaleTempFiles: a live writer touches its temp file with every piece, so a generous
   * age keeps this from pulling a file from under a slow but healthy save). Returns how many it removed.
   */
  async removeStaleTempFiles(olderThanMs: number, signal?: AbortSignal): Promise<number> {
    signal?.throwIfAborted();
    const directories = [this.root, ...layoutDirectories().map((sub) => posix.join(this.root, sub))];
    // SFTP times are whole seconds.
    const cutoffSeconds = (systemClock.now().getTime() - olderThanMs) / 1000;
    let removed = 0;
    await forEachLimit(directories, this.capabilities.connections, async (directory) => {
      let entries: { filename: string; attrs: Stats }[];
      try {
        entries = await this.withChannel((ch) =>
          call<{ filename: string; attrs: Stats }[]>(ch, (cb) => ch.sftp.readdir(directory, cb)),
        );
      } catch (err) {
        if (sftpStatus(err) === SSH_FX.NO_SUCH_FILE) return;
        throw this.classify(err, "list", posix.relative(this.root, directory) || ".");
      }
      for (const e of entries) {
        signal?.throwIfAborted();
        if (!e.filename.startsWith(TEMP_PREFIX) || e.attrs.mtime > cutoffSeconds) continue;
        const path = posix.join(directory, e.filename);
        try {
          await this.withChannel((ch) => call(ch, (cb) => ch.sftp.unlink(path, cb)));
          removed++;
        } catch (err) {
          // Gone already: its writer finished or another cleaner got there first.
          if (sftpStatus(err) !== SSH_FX.NO_SUCH_FILE) throw this.classify(err, "remove", path);
        }
      }
    });
    return removed;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.connection.close();
  }

  private async moveIfAbsent(ch: Channel, tempPath: string, finalPath: string, what: string): Promise<void> {
    try {
      if (ch.extensions.has("hardlink@openssh.com")) {
        await call(ch, (cb) => ch.sftp.ext_openssh_hardlink(tempPath, finalPath, cb));
      } else {
        await call(ch, (cb) => ch.sftp.rename(tempPath, finalPath, cb));
      }
    } catch (err) {
      // Servers report EEXIST as a plain SSH_FX_FAILURE: look before calling it a conflict.
      if ((await statOrUndefined(ch, finalPath).catch(() => undefined)) === undefined) throw err;
      throw new BulwarkError("ALREADY_EXISTS", `${what} already exists in ${this.location}`, { cause: err });
    }
  }

  private async moveReplacing(ch: Channel, tempPath: string, finalPath: string): Promise<void> {
    if (this.capabilities.atomicReplace) {
      await call(ch, (cb) => ch.sftp.ext_openssh_rename(tempPath, finalPath, cb));
      return;
    }
    // Plain SFTP rename refuses an existing target: remove it first (not atomic; see the header).
    await call(ch, (cb) => ch.sftp.unlink(finalPath, cb)).catch((err: unknown) => {
      if (sftpStatus(err) !== SSH_FX.NO_SUCH_FILE) throw err;
    });
    await call(ch, (cb) => ch.sftp.rename(tempPath, finalPath, cb));
  }

  /** The complete files of one directory, with sizes from the listing itself (no stat per file). */
  private async listDirectory(directory: string, requiredPrefix: string): Promise<FileInfo[]> {
    let entries: { filename: string; attrs: Stats }[];
    try {
      entries = await this.withChannel((ch) =>
        call<{ filename: string; attrs: Stats }[]>(ch, (cb) => ch.sftp.readdir(directory, cb)),
      );
    } catch (err) {
      if (sftpStatus(err) === SSH_FX.NO_SUCH_FILE) return [];
      throw this.classify(err, "list", posix.relative(this.root, directory) || ".");
    }
    // A pack in the wrong subdirectory could not be loaded by name, so listing it would break the contract.
    return entries
      .filter((e) => FILE_NAME_PATTERN.test(e.filename) && e.filename.startsWith(requiredPrefix))
      .filter((e) => e.attrs.isFile())
      .map((e) => ({ name: e.filename, size: e.attrs.size }));
  }

  /**
   * Opens a file for reading on one channel, and for a large range on up to READ_STRIPES channels: each
   * channel has its own flow-control window (2 MiB in ssh2) and server process, and one window caps a
   * transfer (measured: one channel 60-80 MB/s, three 130-330 MB/s on loopback). Lanes are pushed to
   * `lanes` as they open, so the caller's closeLanes frees them whatever fails.
   */
  private async openLanes(
    lanes: Lane[],
    path: string,
    range: ByteRange | undefined,
  ): Promise<{ start: number; end: number; chunk: number }> {
    this.assertOpen();
    const first = await this.connection.lease();
    lanes.push({ ch: first, handle: EMPTY_HANDLE });
    const handle = await openFile(first, path, "r");
    lanes[0] = { ch: first, handle };
    const size = (await call<Stats>(first, (cb) => first.sftp.fstat(handle, cb))).size;
    const { start, end } = clampRange(range, size);
    const stripes = Math.min(READ_STRIPES, this.capabilities.connections);
    while (end - start >= STRIPE_MIN_BYTES && lanes.length < stripes) {
      const ch = await this.connection.lease();
      if (lanes.some((l) => l.ch === ch)) {
        this.connection.release(ch); // no other channel free right now
        break;
      }
      const index = lanes.push({ ch, handle: EMPTY_HANDLE }) - 1;
      lanes[index] = { ch, handle: await openFile(ch, path, "r") };
    }
    return { start, end, chunk: Math.min(...lanes.map((l) => l.ch.maxRead)) };
  }

  private async closeLanes(lanes: readonly Lane[]): Promise<void> {
    for (const lane of lanes) {
      if (lane.handle !== EMPTY_HANDLE) await closeHandle(lane.ch, lane.handle).catch(ignore);
      this.connection.release(lane.ch);
    }
  }

  private async withChannel<T>(fn: (ch: Channel) => Promise<T>): Promise<T> {
    this.assertOpen();
    const ch = await this.connection.lease();
    try {
      return await fn(ch);
    } finally {
      this.connection.release(ch);
    }
  }

  /** Adds what only a save can tell: a write that failed because the disk is full. */
  private async classifySave(ch: Channel, err: unknown, what: string, directory: string): Promise<unknown> {
    if (sftpStatus(err) === SSH_FX.FAILURE && !(err instanceof BulwarkError)) {
      const text = errorMessage(err);
      const free = await freeBytes(ch, directory);
      if (/no space|ENOSPC|quota|disk full/i.test(text) || (free !== undefined && free < 1024 * 1024)) {
        return new BulwarkError(
          "IO",
          `the disk is full at ${this.location} (saving ${what}${free === undefined ? "" : `, ${free} bytes free`}); nothing already stored is lost`,
          {
            cause: err,
            hint: "free some space or raise the quota on the server, then run the command again",
          },
        );
      }
      return new BulwarkError(
        "IO",
        `saving ${what} in ${this.location} failed: the server reported "${text}" (a full disk or quota is a common cause)`,
        { cause: err, hint: "check free space and quota on the server, then run the command again" },
      );
    }
    return this.classify(err, "save", what);
  }

  /**
   * Turns an SFTP status or a lost connection into a BulwarkError a user can act on. BulwarkErrors, aborts,
   * a source's own failure and programming errors pass through untouched.
   */
  private classify(err: unknown, action: Action, what: string): unknown {
    if (err instanceof BulwarkError) return err;
    const verb = ACTION_VERBS[action];
    const status = sftpStatus(err);
    if (status === SSH_FX.NO_SUCH_FILE) {
      if (action === "read" || action === "remove") {
        return new BulwarkError("NOT_FOUND", `${what} not found in ${this.location}`, { cause: err });
      }
      return new BulwarkError("IO", `${verb} ${what} in ${this.location}: a directory is missing`, {
        cause: err,
        hint: "the repository looks damaged; check the path, or run `bulwark check`",
      });
    }
    if (status === SSH_FX.PERMISSION_DENIED) {
      return new BulwarkError("IO", `permission denied ${verb} ${what} in ${this.location}`, {
        cause: err,
        hint: `check that the SSH user may read and write ${this.root} on the server`,
      });
    }
    if (status === SSH_FX.NO_CONNECTION || status === SSH_FX.CONNECTION_LOST || isConnectionLoss(err)) {
      return new BulwarkError(
        "TRANSIENT",
        `${verb} ${what} in ${this.location} failed: the SSH connection was lost (${errorMessage(err)})`,
        { cause: err },
      );
    }
    if (status !== undefined) {
      return new BulwarkError("IO", `${verb} ${what} in ${this.location} failed: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    return err;
  }

  /** The path of a file; throws a plain Error for a malformed handle, which is a bug in the caller. */
  private pathOf(h: FileHandle): string {
    this.assertOpen();
    return posix.join(this.root, layoutPath(h));
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`the SFTP backend for ${this.location} is closed`);
  }
}

type Action = "open" | "create" | "read" | "save" | "remove" | "list";

const ACTION_VERBS: Readonly<Record<Action, string>> = {
  open: "opening",
  create: "creating",
  read: "reading",
  save: "saving",
  remove: "removing",
  list: "listing",
};

interface Credentials {
  readonly privateKey: Buffer | undefined;
  readonly privateKeyPath: string | undefined;
  readonly agent: string | undefined;
}

/**
 * What to authenticate with: an explicit key file alone; otherwise a running ssh-agent and the first default
 * key file that exists. A default key that cannot be used without a passphrase is left to the agent, which
 * usually holds it unlocked; without an agent it is an error that says how to give the passphrase.
 */
async function loadCredentials(options: SftpOptions, location: string): Promise<Credentials> {
  const explicit = options.privateKey;
  if (explicit !== undefined) {
    try {
      return { privateKey: await readFile(explicit), privateKeyPath: explicit, agent: undefined };
    } catch (err) {
      throw new BulwarkError(
        "AUTH",
        `${location}: cannot read the private key ${explicit}: ${errorMessage(err)}`,
        { cause: err, hint: KEY_SETTINGS_HINT },
      );
    }
  }
  const agent = options.agent === false ? undefined : await agentSocket(options.agent);
  const candidates = ["id_ed25519", "id_rsa"].map((n) => join(homedir(), ".ssh", n));
  for (const path of candidates) {
    let privateKey: Buffer;
    try {
      privateKey = await readFile(path);
    } catch (err) {
      if (errnoCode(err) === "ENOENT") continue;
      if (agent !== undefined) continue;
      throw new BulwarkError(
        "AUTH",
        `${location}: cannot read the private key ${path}: ${errorMessage(err)}`,
        {
          cause: err,
          hint: KEY_SETTINGS_HINT,
        },
      );
    }
    if (agent !== undefined && ssh2.utils.parseKey(privateKey, options.passphrase) instanceof Error) continue;
    return { privateKey, privateKeyPath: path, agent };
  }
  if (agent !== undefined) return { privateKey: undefined, privateKeyPath: undefined, agent };
  throw new BulwarkError(
    "AUTH",
    `${location}: no private key found (tried ${candidates.join(", ")}) and no ssh-agent (SSH_AUTH_SOCK is ${
      process.env.SSH_AUTH_SOCK ? "not a socket" : "not set"
    })`,
    {
      hint: `${KEY_SETTINGS_HINT}; or create ~/.ssh/id_ed25519 with ssh-keygen -t ed25519; or start ssh-agent and ssh-add a key`,
    },
  );
}

const KEY_SETTINGS_HINT =
  "set BULWARK_SFTP_KEY to an OpenSSH private key file (in bulwark.yaml: the target's credentials.privateKey), " +
  "and BULWARK_SFTP_PASSPHRASE (credentials.passphrase) if the key has one";

/** The agent socket to use: the one given, else SSH_AUTH_SOCK; undefined unless it is a socket. */
async function agentSocket(given: string | undefined): Promise<string | undefined> {
  const path = given ?? process.env.SSH_AUTH_SOCK;
  if (path === undefined || path === "") return undefined;
  try {
    return (await stat(path)).isSocket() ? path : undefined;
  } catch {
    return undefined;
  }
}

async function loadKnownHosts(path: string, location: string): Promise<KnownHostEntry[]> {
  try {
    return parseKnownHosts(await readFile(path, "utf8"));
  } catch (err) {
    // A missing file knows no hosts: the connection then fails as "unknown host", which says what to do.
    if (errnoCode(err) === "ENOENT") return [];
    throw new BulwarkError(
      "CONFIG_INVALID",
      `${location}: cannot read known_hosts ${path}: ${errorMessage(err)}`,
      {
        cause: err,
      },
    );
  }
}

/** The absolute repository path: `~` and `~/x` are relative to the user's home directory on the server. */
async function resolveRoot(ch: Channel, path: string, location: string): Promise<string> {
  if (path !== "~" && !path.startsWith("~/")) return path;
  let home: string;
  try {
    home = await call<string>(ch, (cb) => ch.sftp.realpath(".", cb));
  } catch (err) {
    throw new BulwarkError(
      "IO",
      `${location}: cannot find the home directory on the server: ${errorMessage(err)}`,
      {
        cause: err,
      },
    );
  }
  return path === "~" ? home : posix.join(home, path.slice(2));
}

/** One channel with the file open on it. */
interface Lane {
  readonly ch: Channel;
  readonly handle: Buffer;
}

/** Marks a lane whose file is not open (yet): closeLanes only releases its channel. */
const EMPTY_HANDLE = Buffer.alloc(0);

function laneFor(lanes: readonly Lane[], request: number): Lane {
  const lane = lanes[request % lanes.length];
  if (lane === undefined) throw new Error("no lane to read on");
  return lane;
}

type Callback<T> = (err: Error | undefined | null, value: T) => void;

/**
 * Runs one ssh2 SFTP request as a promise. ssh2 silently drops requests on a closed channel (their
 * callbacks never run), so a closed channel is refused here instead.
 */
function call<T = void>(ch: Channel, request: (cb: Callback<T>) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (ch.closed) {
      reject(new ConnectionLost("the SFTP channel is closed"));
      return;
    }
    try {
      request((err, value) => (err === undefined || err === null ? resolve(value) : reject(err)));
    } catch (err) {
      reject(err instanceof Error ? err : new Error(String(err)));
    }
  });
}

class ConnectionLost extends Error {
  override readonly name = "ConnectionLost";
}

function openFile(ch: Channel, path: string, flags: "r"): Promise<Buffer> {
  return call<Buffer>(ch, (cb) => ch.sftp.open(path, flags, cb));
}

function closeHandle(ch: Channel, handle: Buffer): Promise<void> {
  return call(ch, (cb) => ch.sftp.close(handle, cb));
}

async function statOrUndefined(ch: Channel, path: string): Promise<Stats | undefined> {
  try {
    return await call<Stats>(ch, (cb) => ch.sftp.stat(path, cb));
  } catch (err) {
    if (sftpStatus(err) === SSH_FX.NO_SUCH_FILE) return undefined;
    throw err;
  }
}

/** mkdir -p: an existing directory is fine, a missing parent is made first. */
async function mkdirs(ch: Channel, path: string): Promise<void> {
  try {
    await call(ch, (cb) => ch.sftp.mkdir(path, cb));
    return;
  } catch (err) {
    if ((await statOrUndefined(ch, path))?.isDirectory() === true) return;
    const parent = posix.dirname(path);
    if (sftpStatus(err) !== SSH_FX.NO_SUCH_FILE || parent === path) throw err;
  }
  await mkdirs(ch, posix.dirname(path));
  try {
    await call(ch, (cb) => ch.sftp.mkdir(path, cb));
  } catch (err) {
    if ((await statOrUndefined(ch, path))?.isDirectory() !== true) throw err;
  }
}

/** Creates the temp file, making a missing type directory (say a data/xx lost by a copy) on the way. */
async function createTempFile(ch: Channel, tempPath: string, directory: string): Promise<Buffer> {
  const create = (): Promise<Buffer> =>
    call<Buffer>(ch, (cb) => ch.sftp.open(tempPath, "wx", { mode: 0o444 }, cb));
  try {
    return await create();
  } catch (err) {
    if (sftpStatus(err) !== SSH_FX.NO_SUCH_FILE) throw err;
  }
  // Not recursive: if the repository root itself is gone, recreating it silently would hide the problem.
  await call(ch, (cb) => ch.sftp.mkdir(directory, cb)).catch(async (err: unknown) => {
    if ((await statOrUndefined(ch, directory))?.isDirectory() !== true) throw err;
  });
  return await create();
}

function maxRequests(requestBytes: number): number {
  return Math.max(4, Math.floor(BYTES_IN_FLIGHT / requestBytes));
}

/** Writes the source with pipelined WRITE requests, each at most the server's maximum. */
async function writeSource(
  ch: Channel,
  handle: Buffer,
  source: SaveSource,
  what: string,
  signal: AbortSignal | undefined,
): Promise<void> {
  const chunk = ch.maxWrite;
  const depth = maxRequests(chunk);
  const inFlight = new Set<Promise<void>>();
  // An array rather than a variable: TypeScript does not see assignments made in callbacks.
  const failures: unknown[] = [];
  let position = 0;
  try {
    for await (const piece of source.open()) {
      signal?.throwIfAborted();
      if (failures.length > 0) throw failures[0];
      if (position + piece.length > source.length) {
        throw new Error(`the source for ${what} yielded more than its declared ${source.length} bytes`);
      }
      const bytes = Buffer.isBuffer(piece)
        ? piece
        : Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
      for (let offset = 0; offset < bytes.length; offset += chunk) {
        while (inFlight.size >= depth) await Promise.race(inFlight);
        if (failures.length > 0) throw failures[0];
        const n = Math.min(chunk, bytes.length - offset);
        // ssh2 copies a request of at most maxWrite bytes into its packet synchronously, so the source
        // may reuse `piece` as soon as it is asked for the next one.
        const writing: Promise<void> = call(ch, (cb) =>
          ch.sftp.write(handle, bytes, offset, n, position, cb),
        ).then(
          () => {
            inFlight.delete(writing);
          },
          (err: unknown) => {
            inFlight.delete(writing);
            failures.push(err);
          },
        );
        inFlight.add(writing);
        position += n;
      }
    }
  } finally {
    await Promise.all(inFlight);
  }
  if (failures.length > 0) throw failures[0];
  if (position !== source.length) {
    throw new Error(`the source for ${what} yielded ${position} bytes, not its declared ${source.length}`);
  }
}

/** Reads until `buffer` is full or the file ends; returns how many bytes were read. */
async function readFully(ch: Channel, handle: Buffer, buffer: Buffer, position: number): Promise<number> {
  let filled = 0;
  while (filled < buffer.length) {
    const n = await call<number>(ch, (cb) =>
      ch.sftp.read(handle, buffer, filled, buffer.length - filled, position + filled, (err, bytesRead) =>
        cb(err, bytesRead),
      ),
    );
    if (n === 0) break;
    filled += n;
  }
  return filled;
}

async function freeBytes(ch: Channel, directory: string): Promise<number | undefined> {
  if (!ch.extensions.has("statvfs@openssh.com")) return undefined;
  try {
    // ssh2 names the fields after struct statvfs; 64-bit values may come as bigint or string.
    const info = await call<Record<string, unknown>>(ch, (cb) => ch.sftp.ext_openssh_statvfs(directory, cb));
    const available = Number(info.f_bavail);
    const blockSize = Number(info.f_frsize) || Number(info.f_bsize);
    return Number.isFinite(available) && Number.isFinite(blockSize) ? available * blockSize : undefined;
  } catch {
    return undefined;
  }
}

function sftpStatus(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "number" ? code : undefined;
}

const LOST_CONNECTION_ERRNOS = new Set(["ECONNRESET", "EPIPE", "ETIMEDOUT", "ECONNABORTED"]);

function isConnectionLoss(err: unknown): boolean {
  if (err instanceof ConnectionLost) return true;
  const code = errnoCode(err);
  if (code !== undefined && LOST_CONNECTION_ERRNOS.has(code)) return true;
  return (
    err instanceof Error && /No response from server|Not connected|channel is not open/i.test(err.message)
  );
}

async function forEachLimit<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const failures: unknown[] = [];
  const worker = async (): Promise<void> => {
    while (failures.length === 0 && next < items.length) {
      const item = items[next++] as T;
      try {
        await fn(item);
      } catch (err) {
        failures.push(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failures.length > 0) throw failures[0];
}

function ignore(): void {}
