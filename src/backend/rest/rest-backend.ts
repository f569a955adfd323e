/**
 * A Backend on a Bulwark vault (`bulwark serve-repo`) over HTTP(S): `rest:http(s)://host:port/[prefix/]`.
 * The protocol is in ./protocol.ts; it follows restic's REST backend, plus bearer tokens and digests.
 *
 * Saves stream the source in chunked encoding, hashing as they go, and send the SHA-256 as a trailer: the
 * vault stores nothing whose digest differs, and a source is read only once. Pieces are copied before they
 * are queued, because a source may reuse its buffer once the next piece is asked for.
 *
 * Errors are classified here: 401 AUTH, 403 RETENTION_LOCKED (the vault refused to delete or replace:
 * an append-only token, or a file whose retention runs), 404 NOT_FOUND, 409 ALREADY_EXISTS, connection
 * failures and 5xx TRANSIENT, 507 IO (the vault's disk is full). Messages name the vault by its URL; the
 * token appears nowhere.
 *
 * Retention: a vault started with --retention-days says so in every answer; opening notices it, and only
 * then does the backend declare the "compliance" mode and offer getRetention (a HEAD) and extendRetention
 * (a PATCH). The vault has one mode: nobody, admin included, deletes a file before its retention ends.
 *
 * Digests: a vault that hashes stored files on request says so in every answer; only then does the backend
 * offer digest (GET /{type}/{name}/sha256), which costs the vault a read of its disk and the wire a few bytes.
 */

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import {
  Agent as HttpAgent,
  request as httpRequest,
  type ClientRequest,
  type IncomingMessage,
} from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";

import {
  checkRange,
  clampRange,
  FILE_NAME_PATTERN,
  handleToString,
  type Backend,
  type BackendCapabilities,
  type ByteRange,
  type FileHandle,
  type FileDigest,
  type FileInfo,
  type FileType,
  type Retention,
  type RetentionMode,
  type SaveOptions,
  type SaveSource,
} from "../backend.js";
import { BulwarkError, errnoCode, errorMessage, type ErrorCode } from "../../core/errors.js";
import {
  DIGEST_HEADER,
  DIGEST_PATH,
  FILE_DIGEST_HEADER,
  LENGTH_HEADER,
  RETAIN_UNTIL_HEADER,
  RETENTION_DAYS_HEADER,
  TOKEN_ROLE_HEADER,
  TYPE_PATHS,
} from "./protocol.js";
import { parseRestLocation } from "./rest-location.js";

export interface RestBackendOptions {
  /** The vault token (rest-factory.ts reads it from BULWARK_REST_TOKEN or a target's credentials). */
  readonly token?: string;
  /** PEM CA certificate(s) to trust for an https vault with a private CA. */
  readonly ca?: string | Buffer;
  /** A file holding them (BULWARK_REST_CA, a target's credentials.ca); `ca` wins when both are given. */
  readonly caFile?: string;
  /** Requests worth having in flight at once; default 8. */
  readonly connections?: number;
  /** Give up on a request that has sent or received nothing for this long; default 120 s. */
  readonly idleTimeoutMs?: number;
}

const DEFAULT_IDLE_TIMEOUT_MS = 120_000;
const VAULT_RETENTION_MODES: readonly RetentionMode[] = Object.freeze(["compliance"]);
const MAX_ERROR_BODY_BYTES = 4096;

/**
 * Opens a vault: parses the location, then asks for the config with the token, so that an unreachable
 * vault or a wrong token is reported here (a missing config is fine: the repository may not exist yet),
 * and learns whether the vault keeps retention.
 */
export async function openRestBackend(
  location: string | URL,
  options: RestBackendOptions = {},
): Promise<RestBackend> {
  const backend = new RestBackend(location, options);
  try {
    await backend.probe();
  } catch (err) {
    await backend.close();
    throw err;
  }
  return backend;
}

export class RestBackend implements Backend {
  readonly location: string;
  capabilities: BackendCapabilities;
  /** Offered once the vault said it keeps retention (see probe). */
  getRetention?: (h: FileHandle, signal?: AbortSignal) => Promise<Retention | undefined>;
  extendRetention?: (h: FileHandle, retention: Retention, signal?: AbortSignal) => Promise<void>;
  /** Offered once the vault said it hashes stored files on request (see probe). */
  digest?: (h: FileHandle, signal?: AbortSignal) => Promise<FileDigest>;
  /** Days the vault retains each new file; undefined when it keeps no retention (or is not probed yet). */
  retentionDays: number | undefined;
  private readonly base: URL;
  private readonly authorization: string;
  private readonly agent: HttpAgent;
  private readonly request: typeof httpRequest;
  private readonly idleTimeoutMs: number;
  private closed = false;

  /** Parses the location without contacting the vault; prefer openRestBackend. */
  constructor(location: string | URL, options: RestBackendOptions = {}) {
    const url = typeof location === "string" ? parseRestLocation(location) : new URL(location.href);
    this.base = url;
    this.location = `rest:${url.href}`;
    const token = options.token;
    if (token === undefined || token === "") {
      throw new BulwarkError(
        "AUTH",
        `no token for the vault ${this.location}: BULWARK_REST_TOKEN is not set`,
        {
          hint: "set BULWARK_REST_TOKEN to a token made by `bulwark serve-repo token add`",
        },
      );
    }
    if (/\s/.test(token))
      throw new BulwarkError("AUTH", `the token for ${this.location} contains whitespace`);
    this.authorization = `Bearer ${token}`;
    const connections = options.connections ?? 8;
    this.capabilities = Object.freeze({
      connections,
      atomicReplace: true,
      retentionModes: Object.freeze([]),
    });
    this.idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    if (url.protocol === "https:") {
      const caPath = options.caFile;
      const ca = options.ca ?? (caPath === undefined || caPath === "" ? undefined : readCa(caPath));
      this.agent = new HttpsAgent({ keepAlive: true, maxSockets: connections, ...(ca ? { ca } : {}) });
      this.request = httpsRequest;
    } else {
      this.agent = new HttpAgent({ keepAlive: true, maxSockets: connections });
      this.request = httpRequest;
    }
  }

  /**
   * Asks for the config (HEAD), which proves the vault is reachable and takes the token, and reads whether
   * it keeps retention and whether it hashes files on request; a missing config is fine. openRestBackend
   * calls it.
   */
  async probe(signal?: AbortSignal): Promise<void> {
    const res = await this.send(
      "HEAD",
      "config",
      { type: "config", name: "" },
      { signal, accept: [200, 404] },
    );
    res.resume();
    const role = headerValue(res.headers[TOKEN_ROLE_HEADER]);
    if (role === "append-only" || role === "admin") {
      this.capabilities = Object.freeze({ ...this.capabilities, appendOnly: role === "append-only" });
    }
    const digests = (headerValue(res.headers[FILE_DIGEST_HEADER]) ?? "").split(/\s*,\s*/);
    if (digests.includes("sha256")) this.digest = (h, signal) => this.readDigest(h, signal);
    const days = Number(headerValue(res.headers[RETENTION_DAYS_HEADER]));
    if (headerValue(res.headers[RETENTION_DAYS_HEADER]) === undefined || !Number.isFinite(days) || days < 0) {
      return;
    }
    this.retentionDays = days;
    this.capabilities = Object.freeze({ ...this.capabilities, retentionModes: VAULT_RETENTION_MODES });
    this.getRetention = (h, signal) => this.readRetention(h, signal);
    this.extendRetention = (h, retention, signal) => this.lengthenRetention(h, retention, signal);
  }

  async stat(h: FileHandle, signal?: AbortSignal): Promise<FileInfo> {
    const path = this.pathOf(h);
    const res = await this.send("HEAD", path, h, { signal });
    res.resume();
    const size = Number(res.headers["content-length"]);
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new BulwarkError(
        "INVALID_DATA",
        `the vault ${this.location} sent no size for ${handleToString(h)}`,
      );
    }
    return { name: h.name, size };
  }

  async *list(type: FileType, signal?: AbortSignal): AsyncIterable<FileInfo> {
    this.assertOpen();
    signal?.throwIfAborted();
    if (type === "config") {
      try {
        yield await this.stat({ type: "config", name: "" }, signal);
      } catch (err) {
        if (!(err instanceof BulwarkError && err.code === "NOT_FOUND")) throw err;
      }
      return;
    }
    const directory = (TYPE_PATHS as Partial<Record<string, string>>)[type];
    if (directory === undefined) throw new Error(`unknown file type "${type}"`);
    const res = await this.send("GET", `${directory}/`, undefined, { signal });
    const body = await this.readBody(res, `listing ${directory}`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString("utf8"));
    } catch (err) {
      throw new BulwarkError("INVALID_DATA", `the vault ${this.location} sent a listing that is not JSON`, {
        cause: err,
      });
    }
    if (!Array.isArray(parsed)) {
      throw new BulwarkError(
        "INVALID_DATA",
        `the vault ${this.location} sent a listing that is not an array`,
      );
    }
    const seen = new Set<string>();
    for (const entry of parsed as { name?: unknown; size?: unknown }[]) {
      const { name, size } = entry ?? {};
      // Anything malformed is skipped, as the local backend skips strays, and names are yielded once.
      if (typeof name !== "string" || !FILE_NAME_PATTERN.test(name) || seen.has(name)) continue;
      if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) continue;
      seen.add(name);
      yield { name, size };
    }
  }

  async load(h: FileHandle, range?: ByteRange, signal?: AbortSignal): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const piece of this.openRead(h, range, signal)) parts.push(Buffer.from(piece));
    return parts.length === 1 && parts[0] !== undefined ? parts[0] : Buffer.concat(parts);
  }

  async *openRead(h: FileHandle, range?: ByteRange, signal?: AbortSignal): AsyncIterable<Uint8Array> {
    const path = this.pathOf(h);
    checkRange(range);
    signal?.throwIfAborted();
    if (range?.length === 0) {
      // No byte range expresses "nothing": the file must still exist.
      await this.stat(h, signal);
      return;
    }
    const headers: Record<string, string> = {};
    if (range !== undefined && (range.offset > 0 || range.length !== undefined)) {
      const last = range.length === undefined ? "" : String(range.offset + range.length - 1);
      headers.Range = `bytes=${range.offset}-${last}`;
    }
    const res = await this.send("GET", path, h, { signal, headers, accept: [200, 206, 416] });
    const what = handleToString(h);
    if (res.statusCode === 416) {
      res.resume();
      return; // the range starts at or past the end: an empty read, never an error
    }
    // A vault that ignored the range sent the whole file: cut the range out here.
    let skip = 0;
    let remaining = Number(res.headers["content-length"]);
    if (res.statusCode === 200 && headers.Range !== undefined) {
      const total = remaining;
      const span = clampRange(range, total);
      skip = span.start;
      remaining = span.end - span.start;
    }
    const expected = remaining;
    let received = 0;
    try {
      for await (const chunk of res as AsyncIterable<Buffer>) {
        let piece = chunk;
        if (skip > 0) {
          const dropped = Math.min(skip, piece.length);
          skip -= dropped;
          piece = piece.subarray(dropped);
        }
        if (Number.isSafeInteger(remaining) && piece.length > remaining) piece = piece.subarray(0, remaining);
        if (piece.length === 0) continue;
        received += piece.length;
        remaining -= piece.length;
        yield piece;
      }
    } catch (err) {
      throw this.transportError(err, `reading ${what}`, signal);
    } finally {
      // Only a reader that stopped early cuts the connection; a fully read response keeps it for reuse.
      if (!res.complete) res.destroy();
    }
    if (Number.isSafeInteger(expected) && received < expected) {
      throw new BulwarkError(
        "TRANSIENT",
        `reading ${what} from ${this.location} ended after ${received} of ${expected} bytes`,
      );
    }
  }

  async save(h: FileHandle, source: SaveSource, options: SaveOptions = {}): Promise<void> {
    const path = this.pathOf(h);
    const { signal, ifAbsent = false } = options;
    signal?.throwIfAborted();
    const what = handleToString(h);
    const req = this.start("POST", path, signal, {
      "Content-Type": "application/octet-stream",
      "Transfer-Encoding": "chunked",
      [LENGTH_HEADER]: String(source.length),
      Trailer: DIGEST_HEADER,
      ...(ifAbsent ? { "If-None-Match": "*" } : {}),
    });
    let response: IncomingMessage | undefined;
    const responded = new Promise<IncomingMessage>((resolve, reject) => {
      req.once("response", (res) => {
        response = res;
        resolve(res);
      });
      req.once("error", reject);
    });
    // Handled below; this keeps an early failure from being reported as unhandled meanwhile.
    responded.catch(() => undefined);

    try {
      const hash = createHash("sha256");
      let sent = 0;
      for await (const piece of source.open()) {
        // The vault answered before the end (refused, too large): the rest would be thrown away.
        if (response !== undefined) break;
        signal?.throwIfAborted();
        if (sent + piece.length > source.length) {
          throw new Error(`the source for ${what} yielded more than its declared ${source.length} bytes`);
        }
        hash.update(piece);
        sent += piece.length;
        if (piece.length === 0) continue;
        if (!req.write(Buffer.from(piece))) await drained(req, responded);
      }
      if (response === undefined) {
        if (sent !== source.length) {
          throw new Error(`the source for ${what} yielded ${sent} bytes, not its declared ${source.length}`);
        }
        req.addTrailers({ [DIGEST_HEADER]: hash.digest("hex") });
        req.end();
      }
    } catch (err) {
      // Cutting the connection mid-body is what tells the vault not to store the file.
      req.destroy();
      throw this.transportError(err, `saving ${what}`, signal);
    }

    let res: IncomingMessage;
    try {
      res = await responded;
    } catch (err) {
      throw this.transportError(err, `saving ${what}`, signal);
    }
    if (res.statusCode !== 200) {
      const error = await this.statusError(res, what, "save");
      req.destroy();
      throw error;
    }
    res.resume();
  }

  async remove(h: FileHandle, signal?: AbortSignal): Promise<void> {
    const path = this.pathOf(h);
    const res = await this.send("DELETE", path, h, { signal, action: "remove" });
    res.resume();
  }

  close(): Promise<void> {
    this.closed = true;
    this.agent.destroy();
    return Promise.resolve();
  }

  /** The vault's SHA-256 of a stored file, from the bytes on its disk. */
  private async readDigest(h: FileHandle, signal?: AbortSignal): Promise<FileDigest> {
    const res = await this.send("GET", `${this.pathOf(h)}/${DIGEST_PATH}`, h, { signal });
    const body = await this.readBody(res, `the digest of ${handleToString(h)}`, MAX_ERROR_BODY_BYTES);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString("utf8"));
    } catch {
      parsed = undefined;
    }
    const { sha256, size } = (parsed ?? {}) as { sha256?: unknown; size?: unknown };
    if (
      typeof sha256 !== "string" ||
      !FILE_NAME_PATTERN.test(sha256) ||
      typeof size !== "number" ||
      !Number.isSafeInteger(size) ||
      size < 0
    ) {
      throw new BulwarkError(
        "INVALID_DATA",
        `the vault ${this.location} sent an invalid digest for ${handleToString(h)}`,
      );
    }
    return { sha256, size };
  }

  /** The retention of a file whose retention runs; undefined when it has none (or none any more). */
  private async readRetention(h: FileHandle, signal?: AbortSignal): Promise<Retention | undefined> {
    const res = await this.send("HEAD", this.pathOf(h), h, { signal });
    res.resume();
    const until = this.untilOf(res, h);
    return until === undefined ? undefined : { mode: "compliance", until };
  }

  /** Extends (never shortens) a retention; the vault has one mode, so `retention.mode` is not sent. */
  private async lengthenRetention(h: FileHandle, retention: Retention, signal?: AbortSignal): Promise<void> {
    const res = await this.send("PATCH", this.pathOf(h), h, {
      signal,
      headers: { [RETAIN_UNTIL_HEADER]: retention.until.toISOString() },
    });
    res.resume();
  }

  private untilOf(res: IncomingMessage, h: FileHandle): Date | undefined {
    const text = headerValue(res.headers[RETAIN_UNTIL_HEADER]);
    if (text === undefined) return undefined;
    const until = new Date(text);
    if (Number.isNaN(until.getTime())) {
      throw new BulwarkError(
        "INVALID_DATA",
        `the vault ${this.location} sent an invalid retention date for ${handleToString(h)}`,
      );
    }
    return until;
  }

  /** The request path below the base URL; throws a plain Error for a malformed handle (a caller's bug). */
  private pathOf(h: FileHandle): string {
    this.assertOpen();
    if (h.type === "config") {
      if (h.name !== "") throw new Error(`invalid config name "${h.name}": the config file's name is ""`);
      return "config";
    }
    const directory = (TYPE_PATHS as Partial<Record<string, string>>)[h.type];
    if (directory === undefined) throw new Error(`unknown file type "${h.type}"`);
    if (!FILE_NAME_PATTERN.test(h.name)) {
      throw new Error(`invalid ${h.type} name "${h.name}": expected 64 lowercase hex digits`);
    }
    return `${directory}/${h.name}`;
  }

  private start(
    method: string,
    path: string,
    signal: AbortSignal | undefined,
    headers: Record<string, string> = {},
  ): ClientRequest {
    const url = new URL(path, this.base);
    const req = this.request(url, {
      method,
      agent: this.agent,
      headers: { ...headers, Authorization: this.authorization },
      ...(signal ? { signal } : {}),
    });
    req.setTimeout(this.idleTimeoutMs, () =>
      req.destroy(Object.assign(new Error("no response within the idle timeout"), { code: "ETIMEDOUT" })),
    );
    return req;
  }

  /** Sends a request without a body and returns the response if its status is accepted. */
  private async send(
    method: string,
    path: string,
    h: FileHandle | undefined,
    opts: {
      signal?: AbortSignal | undefined;
      headers?: Record<string, string>;
      accept?: readonly number[];
      action?: "read" | "remove";
    },
  ): Promise<IncomingMessage> {
    opts.signal?.throwIfAborted();
    const what = h === undefined ? path : handleToString(h);
    const req = this.start(method, path, opts.signal, opts.headers);
    let res: IncomingMessage;
    try {
      res = await new Promise<IncomingMessage>((resolve, reject) => {
        req.once("response", resolve);
        req.once("error", reject);
        req.end();
      });
    } catch (err) {
      throw this.transportError(err, `${method} ${what}`, opts.signal);
    }
    const status = res.statusCode ?? 0;
    if ((opts.accept ?? [200]).includes(status)) return res;
    throw await this.statusError(res, what, opts.action ?? "read");
  }

  private async readBody(res: IncomingMessage, what: string, limit = Infinity): Promise<Buffer> {
    const parts: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of res as AsyncIterable<Buffer>) {
        if (size < limit) parts.push(chunk);
        size += chunk.length;
      }
    } catch (err) {
      throw this.transportError(err, what, undefined);
    }
    return Buffer.concat(parts);
  }

  /** A BulwarkError for an unexpected status, with the vault's short explanation. */
  private async statusError(
    res: IncomingMessage,
    what: string,
    action: "read" | "save" | "remove",
  ): Promise<BulwarkError> {
    const status = res.statusCode ?? 0;
    const detail = (await this.readBody(res, what, MAX_ERROR_BODY_BYTES).catch(() => Buffer.alloc(0)))
      .subarray(0, MAX_ERROR_BODY_BYTES)
      .toString("utf8")
      .trim();
    const said = detail === "" ? "" : `: ${detail}`;
    const at = `${what} at ${this.location}`;
    const retainedUntil = headerValue(res.headers[RETAIN_UNTIL_HEADER]);
    const [code, message, hint]: [ErrorCode, string, string | undefined] =
      status === 401
        ? [
            "AUTH",
            `the vault ${this.location} refused the token (401)`,
            "check BULWARK_REST_TOKEN (in bulwark.yaml: the target's credentials.token)",
          ]
        : status === 403
          ? [
              "RETENTION_LOCKED",
              `${action === "remove" ? "deleting" : "replacing"} ${at} was refused by the vault${said}`,
              retainedUntil === undefined
                ? "only an admin token may delete or replace stored files"
                : `the vault releases it after ${retainedUntil}; a prune after that date can delete it`,
            ]
          : status === 404
            ? ["NOT_FOUND", `${what} not found at ${this.location}`, undefined]
            : status === 409
              ? ["ALREADY_EXISTS", `${at} already exists`, undefined]
              : status === 507
                ? [
                    "IO",
                    `the vault ${this.location} is out of disk space (${what})${said}`,
                    "free space on the vault",
                  ]
                : status === 413
                  ? ["IO", `${at} is larger than the vault accepts${said}`, undefined]
                  : status >= 500
                    ? [
                        "TRANSIENT",
                        `the vault ${this.location} failed on ${what} (${status})${said}`,
                        undefined,
                      ]
                    : [
                        "INVALID_DATA",
                        `the vault ${this.location} answered ${status} for ${what}${said}`,
                        undefined,
                      ];
    return new BulwarkError(code, message, hint === undefined ? undefined : { hint });
  }

  private transportError(err: unknown, doing: string, signal: AbortSignal | undefined): unknown {
    if (err instanceof BulwarkError) return err;
    if (signal?.aborted) {
      return new BulwarkError("CANCELLED", `${doing} at ${this.location} was cancelled`, { cause: err });
    }
    const code = errnoCode(err);
    if (code === undefined) return err;
    if (/CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO/.test(code)) {
      return new BulwarkError(
        "AUTH",
        `TLS verification of the vault ${this.location} failed: ${errorMessage(err)}`,
        {
          cause: err,
          hint: "give the vault's CA certificate with BULWARK_REST_CA",
        },
      );
    }
    if (!code.startsWith("E") && !code.startsWith("ERR_")) return err;
    return new BulwarkError(
      "TRANSIENT",
      `cannot reach the vault ${this.location} (${doing}): ${code} ${errorMessage(err)}`,
      { cause: err, hint: "check that the vault is running and reachable from here" },
    );
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`the rest backend for ${this.location} is closed`);
  }
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function readCa(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new BulwarkError("CONFIG_INVALID", `cannot read the CA certificate ${path}: ${errorMessage(err)}`, {
      cause: err,
    });
  }
}

/** Resolves when the request can take more, rejects if it fails or the vault answers meanwhile. */
function drained(req: ClientRequest, responded: Promise<IncomingMessage>): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = (): void => {
      req.off("drain", done);
      req.off("close", closed);
      resolve();
    };
    const closed = (): void => {
      req.off("drain", done);
      reject(Object.assign(new Error("the connection closed during the upload"), { code: "ECONNRESET" }));
    };
    req.once("drain", done);
    req.once("close", closed);
    responded.then(done, (err: unknown) => {
      req.off("drain", done);
      req.off("close", closed);
      reject(err instanceof Error ? err : new Error(String(err)));
    });
  });
}
