/**
 * The vault: an HTTP(S) repository server meant to run on a separate host, storing with a LocalBackend.
 * Protocol: src/backend/rest/protocol.ts. Tokens and roles: ./tokens.ts. Immutable files: ./immutable.ts.
 *
 * A request is handled in these steps:
 *   1. Authenticate the bearer token (hash, constant-time compare); no match is 401.
 *   2. Parse the route (type directory, 64-hex name); anything else is 400 or 404.
 *   3. Check the role: append-only may read, list and create; it may replace or delete lock files only.
 *   4. Reads stream from the backend with back-pressure. A digest (GET /{type}/{name}/sha256, either role)
 *      streams the stored file through SHA-256 on the vault, so a client checks a file at rest for the
 *      price of a few bytes on the wire; it stops when the client goes away.
 *   5. A save streams the body into LocalBackend.save (temp file, fsync, rename/link), hashing as it goes;
 *      the digest is checked after the last byte and before the file becomes visible, so a mismatched or
 *      truncated upload leaves nothing behind.
 *   6. Stored files other than locks are made immutable right after the save; an admin delete or replace
 *      clears the flag first and, if the replace fails, sets it back on the old file.
 *
 * Retention (with `retentionDays`): a stored file other than a lock is retained until its modification
 * time plus retentionDays. A new file's modification time is its write, so it is retained retentionDays
 * from then; PATCH extends a retention by moving the modification time forward (the flag is cleared for the
 * change and set again), and nothing moves it back. While a file is retained it stays immutable and no
 * token may delete or replace it (403). The sweep, at start-up and every sweepIntervalMs, releases (chattr
 * -i) the files whose retention ended, protects retained files that lost the flag (a crash between a save
 * and its chattr), and deletes temp files that interrupted uploads left. Without retentionDays a file stays
 * immutable until an admin deletes it, and the sweep protects every stored file that lacks the flag.
 * Keeping the date in the file's own inode means it is as protected as the data: the immutable flag
 * forbids changing the times, and there is no second record to lose or to disagree with the files.
 *
 * Logs go through the injected logger and never contain a token or a server path.
 */

import { createHash } from "node:crypto";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { Stats } from "node:fs";
import { readFile, stat, utimes } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

import {
  FILE_NAME_PATTERN,
  handleToString,
  type FileHandle,
  type FileType,
  type SaveSource,
} from "../backend/backend.js";
import { LocalBackend, removeStaleTempFiles } from "../backend/local/local-backend.js";
import {
  DIGEST_HEADER,
  DIGEST_PATH,
  FILE_DIGEST_HEADER,
  LENGTH_HEADER,
  RETAIN_UNTIL_HEADER,
  RETENTION_DAYS_HEADER,
  TOKEN_ROLE_HEADER,
  TYPE_PATHS,
  typeOfPath,
} from "../backend/rest/protocol.js";
import { BulwarkError, errnoCode, errorMessage, findBulwarkError, hasCode } from "../core/errors.js";
import { detectImmutability, immutableFlags, type Immutability, type ImmutabilityMode } from "./immutable.js";
import { findToken, loadTokens, type VaultToken } from "./tokens.js";
import { systemClock } from "../core/clock.js";

export interface VaultLogger {
  info(message: string): void;
  warn(message: string): void;
}

export interface VaultServerOptions {
  /** The repository directory. */
  readonly path: string;
  /** Create the directory layout when missing (an existing repository is kept). */
  readonly init?: boolean;
  /** Default 127.0.0.1; port 0 picks a free port. */
  readonly host?: string;
  readonly port?: number;
  /** Tokens, or the file holding them (read once, at start). */
  readonly tokens: readonly VaultToken[] | string;
  /** PEM certificate and key files: HTTPS when both are given. */
  readonly tlsCert?: string;
  readonly tlsKey?: string;
  /** Largest body a POST may carry; default 1 GiB. */
  readonly maxBodyBytes?: number;
  /** Whether stored files are made immutable (chattr +i); "auto" by default. */
  readonly immutable?: ImmutabilityMode;
  /**
   * Days each new file is retained (fractions allowed; 0: only what clients extend). Undefined: no
   * retention, files stay immutable until an admin deletes them.
   */
  readonly retentionDays?: number;
  /** How often the sweep runs after the one at start-up; default one hour. */
  readonly sweepIntervalMs?: number;
  readonly logger?: VaultLogger;
}

/** What one sweep changed. */
export interface SweepResult {
  /** Files whose retention ended: the immutable flag was cleared. */
  released: number;
  /** Retained files (or, without retention, any stored file) that lacked the flag: it was set. */
  protected: number;
  /** Temp files of interrupted uploads, older than TEMP_FILE_GRACE_MS, deleted. */
  tempFilesRemoved: number;
  /** Files the sweep could not handle, with why (also logged as warnings). */
  failures: string[];
}

export interface VaultServer {
  /** http(s)://host:port/ as clients reach it (the listen address). */
  readonly url: string;
  /** Whether stored files are being made immutable. */
  readonly immutable: boolean;
  /** Days each new file is retained; undefined when the vault keeps no retention. */
  readonly retentionDays: number | undefined;
  /** Runs a sweep now (after the one in progress, if any). */
  sweep(): Promise<SweepResult>;
  close(): Promise<void>;
}

const DEFAULT_MAX_BODY_BYTES = 1024 * 1024 * 1024;
/** A connection that sends or accepts nothing for this long is dropped (a stalled client holds a temp file). */
const IDLE_TIMEOUT_MS = 120_000;
const READ_HIGH_WATER_MARK = 256 * 1024;
const DAY_MS = 86_400_000;
const DEFAULT_SWEEP_INTERVAL_MS = 60 * 60 * 1000;
/** An upload touches its temp file with every piece and is dropped after IDLE_TIMEOUT_MS of silence. */
const TEMP_FILE_GRACE_MS = 60 * 60 * 1000;
/** The longest retention a vault may be started with (a typo of days for hours should not lock a disk). */
export const MAX_RETENTION_DAYS = 36_500;

const SILENT: VaultLogger = { info: () => undefined, warn: () => undefined };

/** An error with the status it is answered with; its message is sent to the client. */
class HttpProblem extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.name = "HttpProblem";
  }
}

interface Route {
  /** Undefined: the listing of `type`. */
  readonly handle?: FileHandle;
  readonly type: FileType;
  /** The file's digest resource (`/{type}/{name}/sha256`) rather than the file. */
  readonly digest?: true;
}

export async function startVaultServer(options: VaultServerOptions): Promise<VaultServer> {
  const logger = options.logger ?? SILENT;
  const tokens = typeof options.tokens === "string" ? await loadTokens(options.tokens) : [...options.tokens];
  if (tokens.length === 0) {
    throw new BulwarkError("CONFIG_INVALID", "the vault has no tokens: nobody could use it", {
      hint: "add one with `bulwark serve-repo token add --tokens FILE --name NAME --role append-only`",
    });
  }
  const retentionDays = options.retentionDays;
  if (
    retentionDays !== undefined &&
    !(Number.isFinite(retentionDays) && retentionDays >= 0 && retentionDays <= MAX_RETENTION_DAYS)
  ) {
    throw new BulwarkError(
      "USAGE",
      `the retention must be 0 to ${MAX_RETENTION_DAYS} days, got ${retentionDays}`,
    );
  }
  const sweepIntervalMs = options.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS;
  if (!(Number.isFinite(sweepIntervalMs) && sweepIntervalMs > 0)) {
    throw new BulwarkError("USAGE", `the sweep interval must be positive, got ${sweepIntervalMs} ms`);
  }
  const backend = await openRepositoryDirectory(options.path, options.init === true);
  const immutability = await detectImmutability(backend.location, options.immutable ?? "auto");
  if (!immutability.enabled) logger.warn(`stored files will not be made immutable: ${immutability.reason}`);

  const vault = new Vault(
    backend,
    tokens,
    immutability,
    retentionDays === undefined ? undefined : retentionDays * DAY_MS,
    options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
    logger,
  );
  const tls = options.tlsCert !== undefined && options.tlsKey !== undefined;
  if ((options.tlsCert === undefined) !== (options.tlsKey === undefined)) {
    throw new BulwarkError("USAGE", "TLS needs both a certificate and a key (--tls-cert and --tls-key)");
  }
  const listener = (req: IncomingMessage, res: ServerResponse): void => vault.serve(req, res);
  const server = tls
    ? createHttpsServer(
        { cert: await readPem(options.tlsCert ?? ""), key: await readPem(options.tlsKey ?? "") },
        listener,
      )
    : createHttpServer(listener);
  // Large uploads over slow links may take longer than Node's default 5 minutes; idleness is what matters.
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  server.setTimeout(IDLE_TIMEOUT_MS, (socket) => socket.destroy());

  const host = options.host ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) =>
      reject(
        new BulwarkError("USAGE", `cannot listen on ${host}:${options.port ?? 0}: ${errorMessage(err)}`, {
          cause: err,
        }),
      ),
    );
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
  const url = `${tls ? "https" : "http"}://${shownHost}:${address.port}/`;
  const retention = retentionDays === undefined ? "none" : `${retentionDays} days`;
  logger.info(
    `vault serving ${url} (${tokens.length} tokens, immutable files: ${immutability.enabled}, retention: ${retention})`,
  );

  // The first sweep runs in the background: a large repository must not delay serving. A timer that fires
  // while a sweep still runs (a huge repository, a slow disk) skips its turn rather than queue another.
  const background = (): void => {
    if (vault.sweeping === undefined) void vault.sweep().catch(() => undefined);
  };
  background();
  const timer = setInterval(background, sweepIntervalMs);
  timer.unref();

  let closing: Promise<void> | undefined;
  return {
    url,
    immutable: immutability.enabled,
    retentionDays,
    sweep: () => vault.sweep(),
    close: () =>
      (closing ??= (async () => {
        clearInterval(timer);
        vault.stopping = true;
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeAllConnections();
        await closed;
        while (vault.inFlight.size > 0) await Promise.allSettled([...vault.inFlight]);
        await vault.sweeping?.catch(() => undefined);
        await backend.close();
      })()),
  };
}

async function openRepositoryDirectory(path: string, init: boolean): Promise<LocalBackend> {
  if (!init) return LocalBackend.open(path);
  try {
    return await LocalBackend.create(path);
  } catch (err) {
    if (hasCode(err, "ALREADY_EXISTS")) return LocalBackend.open(path);
    throw err;
  }
}

async function readPem(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new BulwarkError("CONFIG_INVALID", `cannot read ${path}: ${errorMessage(err)}`, { cause: err });
  }
}

class Vault {
  /** Changes of one file's flag, retention or content run one at a time: clear flag, change, set flag. */
  private readonly busy = new Map<string, Promise<void>>();

  constructor(
    private readonly backend: LocalBackend,
    private readonly tokens: readonly VaultToken[],
    private readonly immutability: Immutability,
    /** How long each new file is retained; undefined: no retention (immutable until an admin deletes). */
    private readonly retentionMs: number | undefined,
    private readonly maxBodyBytes: number,
    private readonly logger: VaultLogger,
  ) {}

  /** Handlers still running: close waits for them, so nothing touches the directory afterwards. */
  readonly inFlight = new Set<Promise<void>>();
  /** The sweep in progress, if any. */
  sweeping: Promise<SweepResult> | undefined;
  /** Set by close: a sweep in progress stops at the next file. */
  stopping = false;

  serve(req: IncomingMessage, res: ServerResponse): void {
    // handle answers every failure itself; the catch only keeps a bug from becoming an unhandled rejection.
    const handling = this.handle(req, res)
      .catch((err: unknown) => this.logger.warn(`request failed: ${describe(err)}`))
      .finally(() => this.inFlight.delete(handling));
    this.inFlight.add(handling);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = systemClock.now().getTime();
    let who = "-";
    let path = "?";
    try {
      path = new URL(req.url ?? "/", "http://vault").pathname;
      const token = this.authenticate(req);
      who = token.name;
      res.setHeader(TOKEN_ROLE_HEADER, token.role);
      res.setHeader(FILE_DIGEST_HEADER, "sha256");
      if (this.retentionMs !== undefined) {
        res.setHeader(RETENTION_DAYS_HEADER, String(this.retentionMs / DAY_MS));
      }
      const route = parseRoute(path);
      await this.dispatch(req, res, route, token);
    } catch (err) {
      this.fail(req, res, err, path, who);
    } finally {
      const ms = systemClock.now().getTime() - started;
      // The path holds only a type and a file name; the Authorization header is never logged.
      this.logger.info(`${req.method ?? "?"} ${path} ${res.statusCode} ${ms}ms token=${who}`);
    }
  }

  private authenticate(req: IncomingMessage): VaultToken {
    const header = req.headers.authorization ?? "";
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    const token = match?.[1] === undefined ? undefined : findToken(this.tokens, match[1]);
    if (token === undefined) {
      throw new HttpProblem(401, match ? "unknown token" : "a bearer token is required", {
        "WWW-Authenticate": 'Bearer realm="bulwark vault"',
      });
    }
    return token;
  }

  private async dispatch(
    req: IncomingMessage,
    res: ServerResponse,
    route: Route,
    token: VaultToken,
  ): Promise<void> {
    const method = req.method ?? "";
    const h = route.handle;
    if (h === undefined) {
      if (method !== "GET") throw new HttpProblem(405, "a listing is read with GET", { Allow: "GET" });
      return this.list(res, route.type);
    }
    if (route.digest === true) {
      if (method !== "GET") throw new HttpProblem(405, "a digest is read with GET", { Allow: "GET" });
      return this.digest(req, res, h);
    }
    switch (method) {
      case "HEAD":
      case "GET":
        return this.read(req, res, h, method === "HEAD");
      case "POST":
        return this.save(req, res, h, token);
      case "DELETE":
        return this.remove(res, h, token);
      case "PATCH":
        return this.extend(req, res, h);
      default:
        throw new HttpProblem(405, `${method} is not supported`, {
          Allow: "HEAD, GET, POST, DELETE, PATCH",
        });
    }
  }

  private async list(res: ServerResponse, type: FileType): Promise<void> {
    const files: { name: string; size: number }[] = [];
    for await (const info of this.backend.list(type)) files.push({ name: info.name, size: info.size });
    const body = Buffer.from(JSON.stringify(files));
    res.writeHead(200, { "Content-Type": "application/json", "Content-Length": body.length });
    res.end(body);
  }

  private async read(
    req: IncomingMessage,
    res: ServerResponse,
    h: FileHandle,
    headOnly: boolean,
  ): Promise<void> {
    const { size } = await this.backend.stat(h);
    const range = headOnly ? undefined : parseRange(req.headers.range, size);
    if (range === "unsatisfiable") {
      throw new HttpProblem(416, "the range starts at or past the end of the file", {
        "Content-Range": `bytes */${size}`,
      });
    }
    const until = await this.retainedUntil(h);
    const common = {
      "Content-Type": "application/octet-stream",
      "Accept-Ranges": "bytes",
      ...(until === undefined ? {} : { [RETAIN_UNTIL_HEADER]: until.toISOString() }),
    };
    if (headOnly) {
      res.writeHead(200, { ...common, "Content-Length": size });
      res.end();
      return;
    }
    const start = range?.start ?? 0;
    const end = range?.end ?? size;
    const pieces = this.backend.openRead(h, { offset: start, length: end - start });
    res.writeHead(range === undefined ? 200 : 206, {
      ...common,
      "Content-Length": end - start,
      ...(range === undefined ? {} : { "Content-Range": `bytes ${start}-${end - 1}/${size}` }),
    });
    try {
      await pipeline(Readable.from(pieces, { objectMode: false, highWaterMark: READ_HIGH_WATER_MARK }), res);
    } catch (err) {
      // Headers are gone: all that is left is to cut the connection so the client sees a short body.
      res.destroy();
      if (!req.destroyed && !res.writableFinished) {
        this.logger.warn(`reading ${handleToString(h)} failed: ${describe(err)}`);
      }
    }
  }

  /**
   * The SHA-256 of a stored file as the vault's disk holds it, streamed through the hash (memory stays at a
   * piece whatever the file's size). Every role may ask: it reads, like GET. A client that goes away stops
   * the hashing. The answer is JSON { sha256, size } (size: the bytes hashed) and the digest in
   * X-Content-SHA256.
   */
  private async digest(req: IncomingMessage, res: ServerResponse, h: FileHandle): Promise<void> {
    const gone = new AbortController();
    const abandon = (): void => {
      if (!res.writableEnded) gone.abort();
    };
    res.once("close", abandon);
    try {
      const hash = createHash("sha256");
      let size = 0;
      for await (const piece of this.backend.openRead(h, undefined, gone.signal)) {
        hash.update(piece);
        size += piece.length;
      }
      const sha256 = hash.digest("hex");
      const body = Buffer.from(JSON.stringify({ sha256, size }));
      res.writeHead(200, {
        "Content-Type": "application/json",
        "Content-Length": body.length,
        [DIGEST_HEADER]: sha256,
      });
      res.end(body);
    } catch (err) {
      if (gone.signal.aborted) {
        res.destroy();
        return;
      }
      throw err;
    } finally {
      res.off("close", abandon);
    }
  }

  private async save(
    req: IncomingMessage,
    res: ServerResponse,
    h: FileHandle,
    token: VaultToken,
  ): Promise<void> {
    const length = declaredLength(req);
    if (length > this.maxBodyBytes) {
      throw new HttpProblem(
        413,
        `the body is ${length} bytes; this vault accepts at most ${this.maxBodyBytes}`,
      );
    }
    const ifAbsent = req.headers["if-none-match"] === "*";
    const mayReplace = token.role === "admin" || h.type === "lock";
    if (!ifAbsent && !mayReplace && (await this.exists(h))) {
      throw refused();
    }
    const source = bodySource(req, length, req.headers[DIGEST_HEADER]);
    // Files a role may not replace are saved with ifAbsent, so a racing create cannot replace them either.
    const saveIfAbsent = ifAbsent || !mayReplace;
    const guarded = h.type !== "lock" && (this.immutability.enabled || this.retentionMs !== undefined);
    try {
      if (guarded && !saveIfAbsent) {
        await this.exclusively(h, async () => {
          const existed = await this.exists(h);
          if (existed) {
            await this.refuseIfRetained(h);
            if (this.immutability.enabled) await this.immutability.clear(this.pathOf(h));
          }
          try {
            await this.backend.save(h, source);
          } finally {
            // The new file on success, the old one on failure: whichever is there stays protected.
            await this.protectIfRetained(h);
          }
        });
      } else {
        await this.backend.save(h, source, { ifAbsent: saveIfAbsent });
        if (guarded) await this.protectIfRetained(h);
      }
    } catch (err) {
      if (hasCode(err, "ALREADY_EXISTS") && !ifAbsent) throw refused();
      throw err;
    }
    res.writeHead(200, { "Content-Length": 0 });
    res.end();
  }

  private async remove(res: ServerResponse, h: FileHandle, token: VaultToken): Promise<void> {
    if (token.role !== "admin" && h.type !== "lock") throw refused();
    if (h.type !== "lock" && (this.immutability.enabled || this.retentionMs !== undefined)) {
      await this.exclusively(h, async () => {
        await this.backend.stat(h);
        await this.refuseIfRetained(h);
        if (this.immutability.enabled) await this.immutability.clear(this.pathOf(h));
        try {
          await this.backend.remove(h);
        } catch (err) {
          await this.protectIfRetained(h).catch(() => undefined);
          throw err;
        }
      });
    } else {
      await this.backend.remove(h);
    }
    res.writeHead(200, { "Content-Length": 0 });
    res.end();
  }

  /** PATCH: extends a file's retention to the date asked for; never shortens it. */
  private async extend(req: IncomingMessage, res: ServerResponse, h: FileHandle): Promise<void> {
    const retentionMs = this.retentionMs;
    if (retentionMs === undefined) {
      throw new HttpProblem(405, "this vault keeps no retention (it was started without --retention-days)", {
        Allow: "HEAD, GET, POST, DELETE",
      });
    }
    if (h.type === "lock") throw new HttpProblem(400, "lock files are never retained");
    const asked = headerValue(req.headers[RETAIN_UNTIL_HEADER]);
    const wanted = asked === undefined ? NaN : Date.parse(asked);
    if (!Number.isFinite(wanted)) {
      throw new HttpProblem(400, `a PATCH needs ${RETAIN_UNTIL_HEADER}: an ISO 8601 date`);
    }
    let inForce = wanted;
    await this.exclusively(h, async () => {
      const path = this.pathOf(h);
      const info = await this.statFile(h);
      const current = wholeMs(info.mtimeMs) + retentionMs;
      if (wanted <= current) {
        inForce = current;
        return;
      }
      if (this.immutability.enabled) await this.immutability.clear(path);
      try {
        // utimes takes seconds; the retention ends retentionMs after the modification time.
        await utimes(path, info.atimeMs / 1000, (wanted - retentionMs) / 1000);
      } finally {
        await this.protectIfRetained(h);
      }
    });
    res.writeHead(200, { "Content-Length": 0, [RETAIN_UNTIL_HEADER]: new Date(inForce).toISOString() });
    res.end();
  }

  /** Until when a stored file is retained, if its retention still runs; NOT_FOUND when it does not exist. */
  private async retainedUntil(h: FileHandle): Promise<Date | undefined> {
    if (this.retentionMs === undefined || h.type === "lock") return undefined;
    const until = wholeMs((await this.statFile(h)).mtimeMs) + this.retentionMs;
    return until > systemClock.now().getTime() ? new Date(until) : undefined;
  }

  private async refuseIfRetained(h: FileHandle): Promise<void> {
    const until = await this.retainedUntil(h);
    if (until === undefined) return;
    throw new HttpProblem(
      403,
      `it is retained until ${until.toISOString()}: no token may delete or replace it before then`,
      { [RETAIN_UNTIL_HEADER]: until.toISOString() },
    );
  }

  /**
   * Sets the immutable flag on a stored file whose retention runs (without retention: on any stored file).
   * A missing file, a lock, or a vault without the flag: nothing to do.
   */
  private async protectIfRetained(h: FileHandle): Promise<void> {
    if (!this.immutability.enabled || h.type === "lock") return;
    let info: Stats;
    try {
      info = await this.statFile(h);
    } catch (err) {
      if (hasCode(err, "NOT_FOUND")) return;
      throw err;
    }
    if (this.isRetained(info.mtimeMs)) await this.immutability.set(this.pathOf(h));
  }

  /** Whether a file modified at `mtimeMs` must stay immutable now. */
  private isRetained(mtimeMs: number, now = systemClock.now().getTime()): boolean {
    return this.retentionMs === undefined || mtimeMs + this.retentionMs > now;
  }

  private async statFile(h: FileHandle): Promise<Stats> {
    try {
      return await stat(this.pathOf(h));
    } catch (err) {
      if (errnoCode(err) === "ENOENT") {
        throw new BulwarkError("NOT_FOUND", `${handleToString(h)} not found`, { cause: err });
      }
      throw err;
    }
  }

  /** Runs a sweep once the one in progress (if any) has finished. */
  sweep(): Promise<SweepResult> {
    const previous = this.sweeping ?? Promise.resolve(undefined);
    const next = previous
      .catch(() => undefined)
      .then(() => this.sweepOnce())
      .finally(() => {
        if (this.sweeping === next) this.sweeping = undefined;
      });
    this.sweeping = next;
    return next;
  }

  /**
   * Brings every stored file's flag in line with its retention and removes stale temp files. Candidates
   * are found in bulk (a stat per file, one lsattr per batch); each change is made under the file's
   * exclusive section after a second look, so a PATCH or delete racing with the sweep always wins.
   */
  private async sweepOnce(): Promise<SweepResult> {
    const started = systemClock.now().getTime();
    const result: SweepResult = { released: 0, protected: 0, tempFilesRemoved: 0, failures: [] };
    const fail = (what: string, err: unknown): void => {
      const line = `${what}: ${describe(err)}`;
      result.failures.push(line);
      this.logger.warn(`sweep: ${line}`);
    };
    try {
      result.tempFilesRemoved = await removeStaleTempFiles(this.backend.location, TEMP_FILE_GRACE_MS);
    } catch (err) {
      fail("removing stale temp files", err);
    }
    if (this.immutability.enabled) {
      const files: { h: FileHandle; path: string; mtimeMs: number }[] = [];
      for (const type of SWEPT_TYPES) {
        if (this.stopping) return result;
        try {
          for await (const info of this.backend.list(type)) {
            const h: FileHandle = { type, name: info.name };
            const path = this.pathOf(h);
            const mtimeMs = await stat(path).then(
              (s) => s.mtimeMs,
              () => undefined, // deleted meanwhile
            );
            if (mtimeMs !== undefined) files.push({ h, path, mtimeMs });
          }
        } catch (err) {
          fail(`listing ${type} files`, err);
        }
      }
      let flags = new Map<string, boolean>();
      try {
        flags = await immutableFlags(files.map((f) => f.path));
      } catch (err) {
        fail("reading the immutable flags", err);
      }
      const now = systemClock.now().getTime();
      for (const file of files) {
        if (this.stopping) break;
        const flagged = flags.get(file.path);
        if (flagged === undefined) continue;
        const retained = this.isRetained(file.mtimeMs, now);
        if (retained === flagged) continue;
        try {
          const changed = await this.exclusivelyWithResult(file.h, () =>
            retained ? this.protectOne(file.h) : this.releaseOne(file.h),
          );
          if (changed && retained) result.protected++;
          else if (changed) result.released++;
        } catch (err) {
          fail(`${retained ? "protecting" : "releasing"} ${handleToString(file.h)}`, err);
        }
      }
    }
    const changed = result.released + result.protected + result.tempFilesRemoved;
    if (changed > 0) {
      this.logger.info(
        `sweep: released ${result.released} files whose retention ended, protected ${result.protected}, ` +
          `removed ${result.tempFilesRemoved} stale temp files (${systemClock.now().getTime() - started} ms)`,
      );
    }
    return result;
  }

  /** Sets the flag if the file is (still) retained; whether it did. */
  private async protectOne(h: FileHandle): Promise<boolean> {
    const info = await this.statFile(h).catch(() => undefined);
    if (info === undefined || !this.isRetained(info.mtimeMs)) return false;
    await this.immutability.set(this.pathOf(h));
    return true;
  }

  /** Clears the flag if the file's retention (still) has ended; whether it did. */
  private async releaseOne(h: FileHandle): Promise<boolean> {
    const info = await this.statFile(h).catch(() => undefined);
    if (info === undefined || this.isRetained(info.mtimeMs)) return false;
    await this.immutability.clear(this.pathOf(h));
    return true;
  }

  private async exists(h: FileHandle): Promise<boolean> {
    try {
      await this.backend.stat(h);
      return true;
    } catch (err) {
      if (hasCode(err, "NOT_FOUND")) return false;
      throw err;
    }
  }

  /** The file's path in the LocalBackend layout, for chattr. */
  private pathOf(h: FileHandle): string {
    const root = this.backend.location;
    if (h.type === "config") return join(root, "config");
    const directory = TYPE_PATHS[h.type];
    return h.type === "pack"
      ? join(root, directory, h.name.slice(0, 2), h.name)
      : join(root, directory, h.name);
  }

  private async exclusively(h: FileHandle, fn: () => Promise<void>): Promise<void> {
    await this.exclusivelyWithResult(h, fn);
  }

  private async exclusivelyWithResult<T>(h: FileHandle, fn: () => Promise<T>): Promise<T> {
    const key = handleToString(h);
    for (let current = this.busy.get(key); current !== undefined; current = this.busy.get(key)) {
      await current.catch(() => undefined);
    }
    const run = fn();
    const settled = run.then(
      () => undefined,
      () => undefined,
    );
    this.busy.set(key, settled);
    try {
      return await run;
    } finally {
      if (this.busy.get(key) === settled) this.busy.delete(key);
    }
  }

  private fail(req: IncomingMessage, res: ServerResponse, err: unknown, path: string, who: string): void {
    const { status, message, headers } = problemOf(err);
    if (status >= 500) this.logger.warn(`${req.method ?? "?"} ${path} token=${who}: ${describe(err)}`);
    if (res.headersSent || res.destroyed) {
      res.destroy();
      return;
    }
    const body = Buffer.from(message + "\n");
    const unread = !req.complete;
    res.writeHead(status, {
      ...headers,
      "Content-Type": "text/plain; charset=utf-8",
      "Content-Length": body.length,
    });
    res.end(body);
    if (unread) drainRequest(req);
  }
}

/** The most of an unwanted request body we read (and discard) so that the client sees our answer. */
const DRAIN_LIMIT_BYTES = 64 * 1024 * 1024;

/**
 * Reads the rest of a request body we answered early, so the client, still writing, receives the answer
 * instead of a reset connection; a client that keeps sending past the limit is cut off.
 */
function drainRequest(req: IncomingMessage): void {
  let drained = 0;
  req.on("data", (piece: Buffer) => {
    drained += piece.length;
    if (drained > DRAIN_LIMIT_BYTES) req.socket.destroy();
  });
  req.on("error", () => undefined);
  req.resume();
}

/** The stored files a sweep looks after: every type but locks, which are never protected. */
const SWEPT_TYPES: readonly FileType[] = ["config", "key", "snapshot", "index", "pack"];

/** A refusal by role; the message follows "…was refused by the vault: " on the client. */
function refused(): HttpProblem {
  return new HttpProblem(403, "this token is append-only: it may add files, never delete or replace them");
}

/** Maps an error to what the client is told; server paths and internals stay in the log. */
function problemOf(err: unknown): { status: number; message: string; headers: Record<string, string> } {
  if (err instanceof HttpProblem)
    return { status: err.status, message: err.message, headers: { ...err.headers } };
  const known = findBulwarkError(err);
  if (known?.code === "NOT_FOUND") return { status: 404, message: "not found", headers: {} };
  if (known?.code === "ALREADY_EXISTS")
    return { status: 409, message: "the file already exists", headers: {} };
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 16; depth++) {
    if (e instanceof HttpProblem) return { status: e.status, message: e.message, headers: { ...e.headers } };
    const code = errnoCode(e);
    if (code === "ENOSPC" || code === "EDQUOT") {
      return {
        status: 507,
        message: "the vault's disk is full; nothing already stored is lost",
        headers: {},
      };
    }
    e = (e as { cause?: unknown }).cause;
  }
  return { status: 500, message: "the vault failed to handle the request (see its log)", headers: {} };
}

function describe(err: unknown): string {
  const known = findBulwarkError(err);
  return known ? `${known.code}: ${known.message}` : errorMessage(err);
}

function parseRoute(path: string): Route {
  if (path === "/config") return { type: "config", handle: { type: "config", name: "" } };
  if (path === `/config/${DIGEST_PATH}`) {
    return { type: "config", handle: { type: "config", name: "" }, digest: true };
  }
  const match = /^\/([a-z]+)\/([^/]*)(\/[^/]*)?$/.exec(path);
  const type = match?.[1] === undefined ? undefined : typeOfPath(match[1]);
  if (match === null || type === undefined) throw new HttpProblem(404, "no such resource");
  const name = match[2] ?? "";
  const below = match[3];
  if (below !== undefined && below !== `/${DIGEST_PATH}`) throw new HttpProblem(404, "no such resource");
  if (name === "" && below === undefined) return { type };
  if (!FILE_NAME_PATTERN.test(name)) throw new HttpProblem(400, "a file name is 64 lowercase hex digits");
  return { type, handle: { type, name }, ...(below === undefined ? {} : { digest: true as const }) };
}

/** A single byte range, clamped to the file; undefined means the whole file (no or unsupported header). */
function parseRange(
  header: string | undefined,
  size: number,
): { start: number; end: number } | "unsatisfiable" | undefined {
  if (header === undefined) return undefined;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (match === null) return undefined; // several ranges or another unit: answered with the whole file
  const [, first = "", last = ""] = match;
  if (first === "") {
    const suffix = Number(last);
    if (last === "" || !Number.isSafeInteger(suffix)) return undefined;
    if (suffix === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - suffix), end: size };
  }
  const start = Number(first);
  const end = last === "" ? size : Number(last) + 1;
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end <= start) return undefined;
  if (start >= size) return "unsatisfiable";
  return { start, end: Math.min(end, size) };
}

function declaredLength(req: IncomingMessage): number {
  const text = req.headers["content-length"] ?? headerValue(req.headers[LENGTH_HEADER]);
  if (text === undefined) {
    throw new HttpProblem(411, `a POST needs Content-Length, or ${LENGTH_HEADER} with chunked encoding`);
  }
  const length = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(length)) throw new HttpProblem(400, "invalid body length");
  return length;
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/**
 * The request body as a SaveSource, read once. It hashes while it streams and checks length and digest
 * after the last byte, before LocalBackend makes the file visible; any failure aborts the save.
 */
function bodySource(
  req: IncomingMessage,
  length: number,
  headerDigest: string | string[] | undefined,
): SaveSource {
  let opened = false;
  return {
    length,
    async *open() {
      if (opened) throw new HttpProblem(500, "the request body cannot be read twice");
      opened = true;
      const hash = createHash("sha256");
      let received = 0;
      // Stopping early (the disk is full, the body is too long) must not destroy the request: the client is
      // still sending, and a reset connection would hide our answer from it behind a broken pipe.
      for await (const piece of req.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
        received += piece.length;
        if (received > length)
          throw new HttpProblem(400, `the body is longer than its declared ${length} bytes`);
        hash.update(piece);
        yield piece;
      }
      if (received !== length) {
        throw new HttpProblem(400, `the body ended after ${received} of its declared ${length} bytes`);
      }
      const expected = (headerValue(headerDigest) ?? headerValue(req.trailers[DIGEST_HEADER]))?.toLowerCase();
      if (expected === undefined) {
        throw new HttpProblem(400, `a POST needs ${DIGEST_HEADER} (a header or a trailer)`);
      }
      if (hash.digest("hex") !== expected) {
        throw new HttpProblem(400, "the body does not match its SHA-256: it was damaged in transit");
      }
    },
  };
}

/**
 * A modification time set through utimes (seconds as a double) reads back a fraction of a microsecond off
 * (…448.9999 for …449): rounded to the millisecond, a retention reads back exactly as it was set.
 */
function wholeMs(mtimeMs: number): number {
  return Math.round(mtimeMs);
}
