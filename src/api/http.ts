/**
 * The HTTP framework of the daemon's API (issue 14): a small typed router over node:http. It knows no
 * daemon route; src/api/server.ts declares those as data and this module serves them.
 *
 * A route is a record: method, path (`/v1/jobs/{name}/run`), the role it needs, zod schemas for its path
 * parameters, query and JSON body, the schema of its answer, and a handler. The same table gives the
 * OpenAPI document (`openApiDocument`), so the document cannot drift from what is served.
 *
 * A request goes through, in order:
 *   1. the route: an unknown path is 404, a known path with another method 405 (with Allow);
 *   2. authentication (`Authorization: Bearer TOKEN`, constant-time lookup in the tokens' hashes): 429
 *      while the client's address has failed too often, 401 for no or an unknown token, 403 when the
 *      token's role is below the route's (read < operate < admin); routes with role "none" skip this;
 *   3. validation of the path parameters, query and body (at most 1 MiB of JSON, read only after step 2):
 *      400 naming the field, 413, 415;
 *   4. the handler; what it throws becomes a status in one place (`toHttpError`), what it returns is checked
 *      against the route's answer schema (an answer that does not match is a bug: 500) and written as JSON,
 *      as text (a `textResponse` route: /metrics), or as server-sent events (an `eventStream` route).
 *
 * Every error answer is `{ "error": { "code", "message", "hint"? } }`; nothing is cached (no-store); the
 * token itself is never logged nor echoed, only the name it was given in the tokens file.
 */

import { once } from "node:events";
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { isIPv6, type AddressInfo } from "node:net";

import { z } from "zod";

import type { Clock } from "../core/clock.js";
import { BulwarkError, errorMessage, findBulwarkError, type ErrorCode } from "../core/errors.js";
import { findToken, type StoredToken } from "../core/tokens.js";

// ---------------------------------------------------------------------------------------------------------
// Roles

export type ApiRole = "read" | "operate" | "admin";

/** Lowest first: a role may do everything the roles before it may. */
export const API_ROLES: readonly ApiRole[] = ["read", "operate", "admin"];

/** What a route needs; "none" only for routes that are public on purpose (a health probe). */
export type RouteRole = ApiRole | "none";

export function roleAllows(have: ApiRole, need: ApiRole): boolean {
  return API_ROLES.indexOf(have) >= API_ROLES.indexOf(need);
}

// ---------------------------------------------------------------------------------------------------------
// Routes

export type HttpMethod = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";

const RESPONSE_KIND: unique symbol = Symbol("bulwark.api.response");

/** An answer that is text of one content type (the Prometheus exposition format); the handler returns it. */
export interface TextResponseSpec {
  readonly [RESPONSE_KIND]: "text";
  readonly contentType: string;
}

/** An answer that is a stream of server-sent events whose `data` each match `data`. */
export interface EventStreamSpec<S extends z.ZodType = z.ZodType> {
  readonly [RESPONSE_KIND]: "events";
  readonly data: S;
}

/** A zod schema: the answer is JSON of that shape. */
export type ResponseSpec = z.ZodType | TextResponseSpec | EventStreamSpec;

export function textResponse(contentType: string): TextResponseSpec {
  return { [RESPONSE_KIND]: "text", contentType };
}

export function eventStream<S extends z.ZodType>(data: S): EventStreamSpec<S> {
  return { [RESPONSE_KIND]: "events", data };
}

/** One server-sent event. `event` and `id` are single lines; `data` is written as one line of JSON. */
export interface ServerEvent<D = unknown> {
  event?: string;
  id?: string;
  data: D;
}

type ObjectOf<S> = S extends z.ZodObject ? z.output<S> : Record<string, never>;
type BodyOf<S> = S extends z.ZodType ? z.output<S> : undefined;

/**
 * What a handler returns for its answer spec. JSON answers are the schema's input: the server parses them
 * with the schema, so keys the schema does not name never leave the daemon. An event stream may be
 * returned after awaiting (a handler that 404s before any event answers with a status, not a stream).
 */
export type HandlerResult<R extends ResponseSpec> =
  R extends EventStreamSpec<infer S>
    ? AsyncIterable<ServerEvent<z.input<S>>> | Promise<AsyncIterable<ServerEvent<z.input<S>>>>
    : R extends TextResponseSpec
      ? string | Promise<string>
      : R extends z.ZodType
        ? z.input<R> | Promise<z.input<R>>
        : never;

export interface RequestContext<P, Q, B, Ro extends RouteRole = RouteRole> {
  readonly params: P;
  readonly query: Q;
  readonly body: B;
  /** The token the request came with; undefined only on public routes. */
  readonly token: Ro extends "none" ? undefined : StoredToken<ApiRole>;
  /**
   * Aborted when the client goes away before the answer is complete, or the server closes: an event
   * stream's source stops waiting. Not aborted once the answer is sent.
   */
  readonly signal: AbortSignal;
  /** The client's address, for logs. */
  readonly client: string;
}

export interface RouteSpec<
  P extends z.ZodObject | undefined,
  Q extends z.ZodObject | undefined,
  B extends z.ZodType | undefined,
  R extends ResponseSpec,
  Ro extends RouteRole,
> {
  readonly method: HttpMethod;
  /** Literal segments and `{name}` parameters, each declared in `params`. */
  readonly path: string;
  readonly role: Ro;
  readonly summary: string;
  readonly description?: string;
  readonly tags?: readonly string[];
  /** The OpenAPI operationId; derived from the method and path when missing. */
  readonly operationId?: string;
  readonly params?: P;
  readonly query?: Q;
  readonly body?: B;
  readonly response: R;
  /** The status of a successful JSON answer: 202 for work started and not awaited. */
  readonly status?: 200 | 201 | 202;
  readonly handler: (ctx: RequestContext<ObjectOf<P>, ObjectOf<Q>, BodyOf<B>, Ro>) => HandlerResult<R>;
}

/** A route with its types erased, as the server and the OpenAPI builder see it. */
export interface Route {
  readonly method: HttpMethod;
  readonly path: string;
  readonly role: RouteRole;
  readonly summary: string;
  readonly description?: string;
  readonly tags?: readonly string[];
  readonly operationId?: string;
  readonly params?: z.ZodObject;
  readonly query?: z.ZodObject;
  readonly body?: z.ZodType;
  readonly response: ResponseSpec;
  readonly status?: number;
  readonly handler: (ctx: RequestContext<unknown, unknown, unknown>) => unknown;
}

/** Declares a route; the handler's `ctx.params`, `ctx.query`, `ctx.body` and answer take their types from the schemas. */
export function route<
  Ro extends RouteRole,
  R extends ResponseSpec,
  P extends z.ZodObject | undefined = undefined,
  Q extends z.ZodObject | undefined = undefined,
  B extends z.ZodType | undefined = undefined,
>(spec: RouteSpec<P, Q, B, R, Ro>): Route {
  return spec as unknown as Route;
}

// ---------------------------------------------------------------------------------------------------------
// Errors

/** The codes an error answer carries: Bulwark's own, and the API's for what happens before a handler. */
export type ApiErrorCode =
  | ErrorCode
  | "UNAUTHENTICATED"
  | "FORBIDDEN"
  | "RATE_LIMITED"
  | "METHOD_NOT_ALLOWED"
  | "PAYLOAD_TOO_LARGE"
  | "UNSUPPORTED_MEDIA_TYPE"
  | "INTERNAL";

export interface ErrorBody {
  error: { code: ApiErrorCode; message: string; hint?: string };
}

/** An answer the framework itself gives (auth, routing, limits): its status is decided where it is thrown. */
class ApiProblem extends Error {
  constructor(
    readonly status: number,
    readonly code: ApiErrorCode,
    message: string,
    readonly headers: Readonly<Record<string, string>> = {},
    readonly hint?: string,
  ) {
    super(message);
    this.name = "ApiProblem";
  }
}

/**
 * The status of each Bulwark error code. The client is the daemon's caller; what sits behind the daemon
 * (targets, repositories) is upstream of it, so a refusal from there is not the client's fault:
 *
 *   NOT_FOUND          404  the job, target, snapshot or run named does not exist
 *   USAGE              400  the request asks for something impossible
 *   CONFIG_INVALID     400  the config (or part of one) the request carries or names is malformed
 *   ALREADY_EXISTS     409  creating what exists
 *   REPO_LOCKED        409  another process holds a conflicting lock: retry once it is done
 *   RETENTION_LOCKED   409  the storage keeps the file under retention: nothing to retry until the date
 *   NO_REPOSITORY      409  the target exists but holds no repository (init it first)
 *   AUTH               502  the storage refused the daemon's credentials; a 401 would tell the client its
 *                          own token is wrong
 *   WRONG_PASSWORD     502  the daemon's password does not open the target's repository (same reasoning)
 *   INVALID_DATA       502  stored bytes fail authentication or parsing: the storage is damaged, the
 *                          request was fine
 *   TRANSIENT          503  a timeout or throttling behind the daemon: worth retrying
 *   CANCELLED          503  the operation was aborted (the daemon stopping)
 *   IO                 500  the daemon's own file system failed
 *
 * A Record, so a new code fails the typecheck until it is placed here.
 */
const STATUS_OF_CODE: Record<ErrorCode, number> = {
  NOT_FOUND: 404,
  USAGE: 400,
  CONFIG_INVALID: 400,
  ALREADY_EXISTS: 409,
  REPO_LOCKED: 409,
  RETENTION_LOCKED: 409,
  NO_REPOSITORY: 409,
  AUTH: 502,
  WRONG_PASSWORD: 502,
  INVALID_DATA: 502,
  TRANSIENT: 503,
  CANCELLED: 503,
  IO: 500,
};

export interface HttpError {
  status: number;
  body: ErrorBody;
  headers: Readonly<Record<string, string>>;
  /** True when the error is a bug (not a BulwarkError): the caller logs it, the client sees "internal error". */
  internal: boolean;
}

/**
 * The one place an error becomes an answer. A BulwarkError (anywhere in the cause chain) keeps its code,
 * message and hint, which are written for users and hold no secret; anything else is a bug, answered
 * 500 "internal error" with neither its message nor its stack, which may hold paths or secrets.
 */
export function toHttpError(err: unknown): HttpError {
  if (err instanceof ApiProblem) {
    const error: ErrorBody["error"] = { code: err.code, message: err.message };
    if (err.hint !== undefined) error.hint = err.hint;
    return { status: err.status, body: { error }, headers: err.headers, internal: false };
  }
  const known = findBulwarkError(err);
  if (known !== undefined) {
    const error: ErrorBody["error"] = { code: known.code, message: known.message };
    if (known.hint !== undefined) error.hint = known.hint;
    return { status: STATUS_OF_CODE[known.code], body: { error }, headers: {}, internal: false };
  }
  return {
    status: 500,
    body: { error: { code: "INTERNAL", message: "internal error" } },
    headers: {},
    internal: true,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Matching paths

const SEGMENT = /^[A-Za-z0-9._~-]+$/;
const PARAM = /^\{([A-Za-z_][A-Za-z0-9_]*)\}$/;

interface Pattern {
  readonly path: string;
  /** A literal segment, or a parameter's name. */
  readonly segments: readonly ({ literal: string } | { param: string })[];
  readonly routes: Map<string, Route>;
}

function compilePattern(path: string): Pattern {
  if (!path.startsWith("/")) throw new Error(`route path "${path}" must start with /`);
  const segments = path
    .slice(1)
    .split("/")
    .map((s) => {
      const param = PARAM.exec(s)?.[1];
      if (param !== undefined) return { param };
      if (!SEGMENT.test(s)) throw new Error(`route path "${path}": bad segment "${s}"`);
      return { literal: s };
    });
  return { path, segments, routes: new Map() };
}

function paramNames(pattern: Pattern): string[] {
  return pattern.segments.flatMap((s) => ("param" in s ? [s.param] : []));
}

/**
 * The patterns a path matches, the most specific first: at the first segment where two patterns differ,
 * a literal beats a parameter, so `/v1/jobs/status` is not taken for the job named "status".
 */
function matchPatterns(
  patterns: readonly Pattern[],
  segments: readonly string[],
): { pattern: Pattern; params: Record<string, string> }[] {
  const found: { pattern: Pattern; params: Record<string, string>; score: string }[] = [];
  for (const pattern of patterns) {
    if (pattern.segments.length !== segments.length) continue;
    const params: [string, string][] = [];
    let score = "";
    let ok = true;
    for (let i = 0; i < segments.length && ok; i++) {
      const want = pattern.segments[i];
      const got = segments[i] ?? "";
      if (want === undefined) ok = false;
      else if ("literal" in want) {
        ok = want.literal === got;
        score += "0";
      } else {
        ok = got.length > 0;
        params.push([want.param, got]);
        score += "1";
      }
    }
    if (ok) found.push({ pattern, params: Object.fromEntries(params), score });
  }
  return found.sort((a, b) => (a.score < b.score ? -1 : a.score > b.score ? 1 : 0));
}

// ---------------------------------------------------------------------------------------------------------
// Failed authentication, per client

const FAILURE_LIMIT = 5;
const FAILURE_WINDOW_MS = 60_000;
/** Beyond this many clients with recent failures, the oldest are forgotten: memory stays bounded in a flood. */
const MAX_TRACKED_CLIENTS = 10_000;

/**
 * Counts failed authentications per client. After FAILURE_LIMIT failures within FAILURE_WINDOW_MS, the
 * client is refused (429) until the oldest of them leaves the window. A success does not clear the count:
 * otherwise a holder of a read token could interleave valid requests with guesses at an admin token.
 */
class FailureLimiter {
  private readonly failures = new Map<string, number[]>();

  constructor(private readonly clock: Clock) {}

  /** Seconds until `client` may try again; 0 when it may now. */
  retryAfter(client: string): number {
    const now = this.clock.now().getTime();
    const recent = this.recent(client, now);
    if (recent.length < FAILURE_LIMIT) return 0;
    const oldest = recent[recent.length - FAILURE_LIMIT] ?? now;
    return Math.max(1, Math.ceil((oldest + FAILURE_WINDOW_MS - now) / 1000));
  }

  record(client: string): void {
    const now = this.clock.now().getTime();
    const recent = this.recent(client, now);
    recent.push(now);
    if (recent.length > FAILURE_LIMIT) recent.shift();
    // Deleted and set again, so the map's order is that of the latest failures, oldest first.
    this.failures.delete(client);
    this.failures.set(client, recent);
    if (this.failures.size <= MAX_TRACKED_CLIENTS) return;
    for (const [key, times] of this.failures) {
      if ((times.at(-1) ?? 0) <= now - FAILURE_WINDOW_MS) this.failures.delete(key);
    }
    for (const key of this.failures.keys()) {
      if (this.failures.size <= MAX_TRACKED_CLIENTS) break;
      this.failures.delete(key);
    }
  }

  private recent(client: string, now: number): number[] {
    const times = (this.failures.get(client) ?? []).filter((t) => t > now - FAILURE_WINDOW_MS);
    if (times.length === 0) this.failures.delete(client);
    return times;
  }
}

/**
 * The address failures are counted under. An IPv6 client counts by its /64, the smallest block a site is
 * given: one host can use every address in it, so counting single addresses would limit nothing.
 * Forwarded-for headers are ignored: any client can write them. Behind a reverse proxy every client
 * shares the proxy's address, and so its limit.
 */
export function clientKey(address: string | undefined): string {
  if (address === undefined || address === "") return "unknown";
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1] !== undefined) return mapped[1];
  const bare = address.split("%")[0] ?? address;
  if (!isIPv6(bare)) return address;
  const groupsOf = (part: string): string[] =>
    part === "" ? [] : part.split(":").flatMap((g) => (g.includes(".") ? ["0", "0"] : [g]));
  const [head = "", tail] = bare.split("::");
  const left = groupsOf(head);
  const right = tail === undefined ? [] : groupsOf(tail);
  const groups = [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right];
  return `${groups
    .slice(0, 4)
    .map((g) => parseInt(g, 16).toString(16))
    .join(":")}::/64`;
}

// ---------------------------------------------------------------------------------------------------------
// The server

export interface RequestLog {
  method: string;
  /** The path without the query. */
  path: string;
  status: number;
  durationMs: number;
  client: string;
  /** The name of the token used, never the token. */
  token?: string;
  /** A bug the client saw as 500 "internal error": for the daemon's log. */
  error?: unknown;
}

export interface ApiServerOptions {
  readonly routes: readonly Route[];
  /** The current tokens, asked on every request: a reload of the tokens file takes effect at once. */
  readonly tokens: () => readonly StoredToken<ApiRole>[];
  readonly clock: Clock;
  readonly tls?: { readonly cert: string | Buffer; readonly key: string | Buffer };
  /** Called once per request when its answer is complete (an event stream: when it ends). */
  readonly onRequest?: (entry: RequestLog) => void;
  /** Default 1 MiB. */
  readonly maxBodyBytes?: number;
  /** How often an event stream sends a comment line, so proxies and clients see it alive. Default 15 s. */
  readonly heartbeatMs?: number;
}

export interface ApiServer {
  listen(host: string, port: number): Promise<{ port: number; url: string }>;
  /** Ends the event streams, waits for the requests in progress, and stops listening. */
  close(): Promise<void>;
}

const MIB = 1024 * 1024;
const JSON_TYPE = "application/json; charset=utf-8";
const COMMON_HEADERS = { "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff" } as const;

export function createApiServer(options: ApiServerOptions): ApiServer {
  const patterns = compileRoutes(options.routes);
  const limiter = new FailureLimiter(options.clock);
  const maxBodyBytes = options.maxBodyBytes ?? MIB;
  const heartbeatMs = options.heartbeatMs ?? 15_000;
  const inFlight = new Set<Promise<void>>();
  const aborts = new Set<AbortController>();
  let closing: Promise<void> | undefined;

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const started = options.clock.now().getTime();
    const client = clientKey(req.socket.remoteAddress);
    const method = req.method ?? "GET";
    const rawUrl = req.url ?? "/";
    const queryAt = rawUrl.indexOf("?");
    const path = queryAt < 0 ? rawUrl : rawUrl.slice(0, queryAt);
    const log: RequestLog = { method, path, status: 0, durationMs: 0, client };
    const abort = new AbortController();
    aborts.add(abort);
    res.on("close", () => {
      if (!res.writableFinished) abort.abort();
    });
    try {
      const { found, params: rawParams } = findRoute(patterns, method, path);
      const token =
        found.role === "none" ? undefined : authenticate(req, found.role, client, options.tokens(), limiter);
      if (token !== undefined) log.token = token.name;
      const params = validate("params", found.params, rawParams);
      const query = validate("query", found.query, queryObject(queryAt < 0 ? "" : rawUrl.slice(queryAt + 1)));
      let body: unknown;
      if (found.body !== undefined) {
        body = validate("body", found.body, await readJsonBody(req, maxBodyBytes));
      } else {
        // A route without a body reads none: what the client sent anyway is dropped.
        req.resume();
      }
      const ctx: RequestContext<unknown, unknown, unknown> = {
        params,
        query,
        body,
        token,
        signal: abort.signal,
        client,
      };
      const result = await found.handler(ctx);
      const spec = found.response;
      if (isEvents(spec)) {
        await streamEvents(
          res,
          result as AsyncIterable<ServerEvent>,
          spec.data,
          abort.signal,
          heartbeatMs,
          (err) => {
            log.error = err;
          },
        );
      } else if (isText(spec)) {
        if (typeof result !== "string") throw new Error(`${method} ${found.path} must answer a string`);
        send(res, found.status ?? 200, spec.contentType, result);
      } else {
        const checked = spec.safeParse(result);
        if (!checked.success) {
          throw new Error(
            `the answer of ${method} ${found.path} does not match its schema: ${describeIssues("answer", checked.error)}`,
          );
        }
        send(res, found.status ?? 200, JSON_TYPE, JSON.stringify(checked.data));
      }
    } catch (err) {
      const answer = toHttpError(err);
      if (answer.internal) log.error = err;
      if (!res.headersSent) {
        send(res, answer.status, JSON_TYPE, JSON.stringify(answer.body), answer.headers);
      } else if (!res.writableEnded) {
        res.destroy();
      }
    } finally {
      aborts.delete(abort);
      log.status = res.statusCode;
      log.durationMs = options.clock.now().getTime() - started;
      options.onRequest?.(log);
    }
  };

  const listener = (req: IncomingMessage, res: ServerResponse): void => {
    // handle answers every failure itself; the catch keeps a bug (in onRequest, say) from becoming an
    // unhandled rejection that ends the daemon.
    const handling = handle(req, res)
      .catch(() => undefined)
      .finally(() => inFlight.delete(handling));
    inFlight.add(handling);
  };
  const server: Server =
    options.tls === undefined
      ? createHttpServer(listener)
      : createHttpsServer({ cert: options.tls.cert, key: options.tls.key }, listener);

  return {
    listen: (host, port) =>
      new Promise((resolve, reject) => {
        const failed = (err: Error): void =>
          reject(
            new BulwarkError("USAGE", `cannot listen on ${host}:${port}: ${errorMessage(err)}`, {
              cause: err,
              hint: "choose another address or port, or stop what uses it",
            }),
          );
        server.once("error", failed);
        server.listen(port, host, () => {
          server.off("error", failed);
          const address = server.address() as AddressInfo;
          const shown = address.family === "IPv6" ? `[${address.address}]` : address.address;
          resolve({
            port: address.port,
            url: `${options.tls === undefined ? "http" : "https"}://${shown}:${address.port}`,
          });
        });
      }),
    close: () =>
      (closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        for (const abort of aborts) abort.abort();
        server.closeIdleConnections();
        while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
        server.closeAllConnections();
        await closed;
      })()),
  };
}

function compileRoutes(routes: readonly Route[]): Pattern[] {
  const byPath = new Map<string, Pattern>();
  for (const r of routes) {
    const pattern = byPath.get(r.path) ?? compilePattern(r.path);
    byPath.set(r.path, pattern);
    if (pattern.routes.has(r.method)) throw new Error(`route ${r.method} ${r.path} is declared twice`);
    if (r.role !== "none" && !API_ROLES.includes(r.role))
      throw new Error(`route ${r.method} ${r.path}: role "${String(r.role)}"`);
    const inPath = paramNames(pattern).sort();
    const declared = Object.keys(r.params?.shape ?? {}).sort();
    if (inPath.join() !== declared.join()) {
      throw new Error(
        `route ${r.method} ${r.path}: path parameters [${inPath.join()}] but params schema [${declared.join()}]`,
      );
    }
    pattern.routes.set(r.method, r);
  }
  return [...byPath.values()];
}

function findRoute(
  patterns: readonly Pattern[],
  method: string,
  path: string,
): { found: Route; params: Record<string, string> } {
  const segments = path.slice(1).split("/");
  let decoded: string[];
  try {
    decoded = segments.map((s) => decodeURIComponent(s));
  } catch {
    throw new ApiProblem(400, "USAGE", "the path is not valid percent-encoding");
  }
  const matches = path.startsWith("/") ? matchPatterns(patterns, decoded) : [];
  if (matches.length === 0) throw new ApiProblem(404, "NOT_FOUND", `no such path: ${path}`);
  for (const { pattern, params } of matches) {
    const found = pattern.routes.get(method);
    if (found !== undefined) return { found, params };
  }
  const allow = [...new Set(matches.flatMap((m) => [...m.pattern.routes.keys()]))].join(", ");
  throw new ApiProblem(405, "METHOD_NOT_ALLOWED", `${path} does not take ${method}; it takes ${allow}`, {
    Allow: allow,
  });
}

function authenticate(
  req: IncomingMessage,
  need: ApiRole,
  client: string,
  tokens: readonly StoredToken<ApiRole>[],
  limiter: FailureLimiter,
): StoredToken<ApiRole> {
  // A limited client is refused before its token is looked at, even a valid one: answering valid tokens
  // normally would let a guesser tell a hit from a miss by the answer, so the limit would slow nothing.
  const wait = limiter.retryAfter(client);
  if (wait > 0) {
    throw new ApiProblem(
      429,
      "RATE_LIMITED",
      `too many failed authentications from this address; retry in ${wait} s`,
      { "Retry-After": String(wait) },
    );
  }
  const header = req.headers.authorization;
  const presented = header === undefined ? undefined : /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1];
  const token = presented === undefined ? undefined : findToken(tokens, presented);
  if (token === undefined) {
    // No header is not a guess; a header that names no token is, whatever its form.
    if (header !== undefined) limiter.record(client);
    throw new ApiProblem(
      401,
      "UNAUTHENTICATED",
      header === undefined ? "a bearer token is required" : "unknown token",
      { "WWW-Authenticate": 'Bearer realm="bulwark"' },
      "send `Authorization: Bearer TOKEN` with a token from the daemon's tokens file",
    );
  }
  if (!roleAllows(token.role, need)) {
    throw new ApiProblem(
      403,
      "FORBIDDEN",
      `the token "${token.name}" has the role ${token.role}; this needs ${need} or higher`,
    );
  }
  return token;
}

/** The query as an object: a repeated key gives an array. `fromEntries` keeps `__proto__` an ordinary key. */
function queryObject(search: string): Record<string, string | string[]> {
  const grouped = new Map<string, string[]>();
  for (const [key, value] of new URLSearchParams(search))
    grouped.set(key, [...(grouped.get(key) ?? []), value]);
  return Object.fromEntries([...grouped].map(([k, v]) => [k, v.length === 1 ? (v[0] ?? "") : v]));
}

function validate(where: string, schema: z.ZodType | undefined, value: unknown): unknown {
  if (schema === undefined) return where === "body" ? undefined : {};
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new ApiProblem(400, "USAGE", describeIssues(where, parsed.error));
  return parsed.data;
}

/** `body.items[2].name: Invalid input: expected string, received number`, one per issue. */
function describeIssues(where: string, error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const path = issue.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("");
      return `${where}${path}: ${issue.message}`;
    })
    .join("; ");
}

function readJsonBody(req: IncomingMessage, limit: number): Promise<unknown> {
  const tooLarge = new ApiProblem(413, "PAYLOAD_TOO_LARGE", `the body is larger than ${limit} bytes`, {
    Connection: "close",
  });
  const declared = Number(req.headers["content-length"] ?? 0);
  if (declared > limit) {
    req.resume();
    return Promise.reject(tooLarge);
  }
  const type = req.headers["content-type"];
  if (type !== undefined && !/^application\/([\w.+-]+\+)?json\s*(;|$)/i.test(type)) {
    req.resume();
    return Promise.reject(
      new ApiProblem(415, "UNSUPPORTED_MEDIA_TYPE", `the body must be application/json, not ${type}`),
    );
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size <= limit) {
        chunks.push(chunk);
        return;
      }
      // Keep reading and dropping what remains, so the client is not cut off before it reads the 413.
      req.off("data", onData);
      req.resume();
      reject(tooLarge);
    };
    req.on("data", onData);
    req.once("error", reject);
    req.once("end", () => {
      if (size > limit) return;
      if (size === 0) return resolve(undefined);
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")));
      } catch (err) {
        reject(new ApiProblem(400, "USAGE", `body: not valid JSON (${errorMessage(err)})`));
      }
    });
  });
}

function send(
  res: ServerResponse,
  status: number,
  contentType: string,
  text: string,
  headers: Readonly<Record<string, string>> = {},
): void {
  const body = Buffer.from(text, "utf8");
  res.writeHead(status, {
    ...COMMON_HEADERS,
    ...headers,
    "Content-Type": contentType,
    "Content-Length": String(body.length),
  });
  res.end(body);
}

function isEvents(spec: ResponseSpec): spec is EventStreamSpec {
  return (spec as Partial<EventStreamSpec>)[RESPONSE_KIND] === "events";
}

function isText(spec: ResponseSpec): spec is TextResponseSpec {
  return (spec as Partial<TextResponseSpec>)[RESPONSE_KIND] === "text";
}

const STOPPED = Symbol("stopped");

/**
 * Writes the handler's events as they come, with a comment every `heartbeatMs` between them. When the
 * client goes away or the server closes, the loop stops at once (it does not wait for a pending next()),
 * the answer ends, and the iterator's `return()` is called (an async generator runs its `finally`); a
 * source blocked on an event that never comes sees `ctx.signal` aborted. An error after the stream has
 * started is sent as an `error` event with the usual error body, and ends the stream.
 */
async function streamEvents(
  res: ServerResponse,
  source: AsyncIterable<ServerEvent>,
  data: z.ZodType,
  signal: AbortSignal,
  heartbeatMs: number,
  onBug: (err: unknown) => void,
): Promise<void> {
  const iterator = source[Symbol.asyncIterator]();
  res.writeHead(200, {
    ...COMMON_HEADERS,
    "Content-Type": "text/event-stream; charset=utf-8",
    // nginx buffers answers unless told not to; a buffered event stream shows nothing until it ends.
    "X-Accel-Buffering": "no",
  });
  res.flushHeaders();
  const stopped = new Promise<typeof STOPPED>((resolve) => {
    if (signal.aborted) resolve(STOPPED);
    signal.addEventListener("abort", () => resolve(STOPPED), { once: true });
  });
  const write = async (text: string): Promise<void> => {
    if (res.destroyed || res.writableEnded) return;
    if (!res.write(text)) await Promise.race([once(res, "drain").catch(() => undefined), stopped]);
  };
  const heartbeat = setInterval(() => {
    if (!res.destroyed && !res.writableEnded) res.write(": heartbeat\n\n");
  }, heartbeatMs);
  let finished = false;
  try {
    while (!signal.aborted) {
      const next = iterator.next();
      // If the client leaves first, nobody awaits this one: its rejection must not go unhandled.
      next.catch(() => undefined);
      const step = await Promise.race([next, stopped]);
      if (step === STOPPED) break;
      if (step.done === true) {
        finished = true;
        break;
      }
      let text: string;
      try {
        text = formatEvent(step.value, data);
      } catch (err) {
        // A bug in the source: the stream ends, and the source is told so by return().
        onBug(err);
        await write(errorEvent(err));
        break;
      }
      await write(text);
    }
  } catch (err) {
    // The iterator threw: it is finished, and its error is the stream's last event.
    finished = true;
    if (toHttpError(err).internal) onBug(err);
    await write(errorEvent(err));
  } finally {
    clearInterval(heartbeat);
    if (!res.writableEnded) res.end();
    if (!finished) await stopSource(iterator);
  }
}

/** How long a stopped source may take to clean up before the server stops waiting for it. */
const RETURN_GRACE_MS = 2_000;

/**
 * Calls the iterator's return() and waits for it a little: an async generator blocked on an await runs its
 * `finally` only once that await settles, which the source's own use of `ctx.signal` should make soon.
 * Waiting lets `close()` end with the sources cleaned up; the bound keeps a stuck one from holding it.
 */
async function stopSource(iterator: AsyncIterator<unknown>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const returned = Promise.resolve(iterator.return?.()).catch(() => undefined);
    const grace = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, RETURN_GRACE_MS);
    });
    await Promise.race([returned, grace]);
  } catch {
    // A return() that throws at once has nothing more to clean up.
  } finally {
    clearTimeout(timer);
  }
}

function errorEvent(err: unknown): string {
  return `event: error\ndata: ${JSON.stringify(toHttpError(err).body)}\n\n`;
}

const ONE_LINE = /^[^\r\n]*$/;

function formatEvent(event: ServerEvent, schema: z.ZodType): string {
  let text = "";
  if (event.event !== undefined) {
    if (!ONE_LINE.test(event.event))
      throw new Error(`the event name ${JSON.stringify(event.event)} has a line break`);
    text += `event: ${event.event}\n`;
  }
  if (event.id !== undefined) {
    if (!ONE_LINE.test(event.id))
      throw new Error(`the event id ${JSON.stringify(event.id)} has a line break`);
    text += `id: ${event.id}\n`;
  }
  const checked = schema.safeParse(event.data);
  if (!checked.success) {
    throw new Error(`an event does not match its schema: ${describeIssues("data", checked.error)}`);
  }
  // JSON.stringify escapes line breaks inside strings, so the data is one line.
  return `${text}data: ${JSON.stringify(checked.data)}\n\n`;
}

// ---------------------------------------------------------------------------------------------------------
// OpenAPI

export interface OpenApiInfo {
  title: string;
  version: string;
  description?: string;
}

type Json = Record<string, unknown>;

export interface OpenApiDocument {
  openapi: "3.1.0";
  info: OpenApiInfo;
  security: Json[];
  paths: Record<string, Record<string, Json>>;
  components: {
    schemas: Record<string, Json>;
    responses: Record<string, Json>;
    securitySchemes: Record<string, Json>;
  };
}

const ERROR_CODES: readonly ApiErrorCode[] = [
  ...(Object.keys(STATUS_OF_CODE) as ErrorCode[]),
  "UNAUTHENTICATED",
  "FORBIDDEN",
  "RATE_LIMITED",
  "METHOD_NOT_ALLOWED",
  "PAYLOAD_TOO_LARGE",
  "UNSUPPORTED_MEDIA_TYPE",
  "INTERNAL",
];

const errorBodySchema = z.object({
  error: z.object({
    code: z.enum(ERROR_CODES).describe("what went wrong, for programs"),
    message: z.string().describe("what went wrong, for people"),
    hint: z.string().optional().describe("what to do about it"),
  }),
});

const ERROR_RESPONSES: Record<string, { status: string; description: string; headers?: Json }> = {
  BadRequest: {
    status: "400",
    description: "A path parameter, query or body field is invalid (the message names it)",
  },
  Unauthorized: {
    status: "401",
    description: "No token, or one the daemon does not know",
    headers: { "WWW-Authenticate": { schema: { type: "string" } } },
  },
  Forbidden: { status: "403", description: "The token's role is below the one this operation needs" },
  NotFound: { status: "404", description: "The path, or what it names, does not exist" },
  PayloadTooLarge: {
    status: "413",
    description: "The body is larger than the server takes (1 MiB by default)",
  },
  UnsupportedMediaType: { status: "415", description: "The body is not JSON" },
  TooManyRequests: {
    status: "429",
    description: "Too many failed authentications from this address",
    headers: { "Retry-After": { description: "seconds to wait", schema: { type: "integer" } } },
  },
  Error: { status: "default", description: "Any other error: 409 conflicts, 5xx failures behind the daemon" },
};

/** The OpenAPI 3.1 document of a route table: the schemas are the ones the server validates with. */
export function openApiDocument(routes: readonly Route[], info: OpenApiInfo): OpenApiDocument {
  const components = new SchemaComponents();
  components.schemas.Error = components.embed(errorBodySchema, "output", "Error");
  const paths: Record<string, Record<string, Json>> = {};
  const usedIds = new Set<string>();
  for (const r of routes) {
    const operationId = r.operationId ?? operationIdOf(r.method, r.path);
    if (usedIds.has(operationId)) throw new Error(`operationId ${operationId} is used twice`);
    usedIds.add(operationId);
    // A schema with no JSON Schema form (a Date, a transform's output) fails here: name the route.
    try {
      const parameters: Json[] = [
        ...parametersOf(components, r.params, "path", `${operationId}Params`),
        ...parametersOf(components, r.query, "query", `${operationId}Query`),
      ];
      const ref = (name: string): Json => ({ $ref: `#/components/responses/${name}` });
      const responses: Json = {
        [String(r.status ?? 200)]: successResponse(components, r.response, `${operationId}Response`),
      };
      responses["400"] = ref("BadRequest");
      if (r.role !== "none") {
        responses["401"] = ref("Unauthorized");
        responses["403"] = ref("Forbidden");
        responses["429"] = ref("TooManyRequests");
      }
      responses["404"] = ref("NotFound");
      if (r.body !== undefined) {
        responses["413"] = ref("PayloadTooLarge");
        responses["415"] = ref("UnsupportedMediaType");
      }
      responses.default = ref("Error");
      const operation: Json = {
        operationId,
        summary: r.summary,
        description: [
          r.description,
          r.role === "none" ? "Public: no token needed." : `Needs a token with the role ${r.role} or higher.`,
        ]
          .filter((s) => s !== undefined)
          .join("\n\n"),
        "x-bulwark-role": r.role,
        ...(r.tags !== undefined ? { tags: [...r.tags] } : {}),
        ...(r.role === "none" ? { security: [] } : {}),
        ...(parameters.length > 0 ? { parameters } : {}),
        ...(r.body !== undefined
          ? {
              requestBody: {
                required: !r.body.safeParse(undefined).success,
                content: {
                  "application/json": { schema: components.embed(r.body, "input", `${operationId}Body`) },
                },
              },
            }
          : {}),
        responses,
      };
      (paths[r.path] ??= {})[r.method.toLowerCase()] = operation;
    } catch (err) {
      throw new Error(`${r.method} ${r.path}: ${errorMessage(err)}`, { cause: err });
    }
  }
  const errorRef = { $ref: "#/components/schemas/Error" };
  return {
    openapi: "3.1.0",
    info: { ...info },
    security: [{ bearer: [] }],
    paths,
    components: {
      schemas: components.schemas,
      responses: Object.fromEntries(
        Object.entries(ERROR_RESPONSES).map(([name, r]) => [
          name,
          {
            description: r.description,
            ...(r.headers !== undefined ? { headers: r.headers } : {}),
            content: { "application/json": { schema: errorRef } },
          },
        ]),
      ),
      securitySchemes: {
        bearer: {
          type: "http",
          scheme: "bearer",
          description:
            "A token from the daemon's tokens file; its role (read < operate < admin) decides what it may do",
        },
      },
    },
  };
}

function successResponse(components: SchemaComponents, spec: ResponseSpec, context: string): Json {
  if (isText(spec))
    return { description: "OK", content: { [spec.contentType]: { schema: { type: "string" } } } };
  if (isEvents(spec)) {
    return {
      description: "Server-sent events; each event's data is one line of JSON matching x-bulwark-event-data",
      content: {
        "text/event-stream": {
          schema: { type: "string" },
          "x-bulwark-event-data": components.embed(spec.data, "output", `${context}Event`),
        },
      },
    };
  }
  return {
    description: "OK",
    content: { "application/json": { schema: components.embed(spec, "output", context) } },
  };
}

function parametersOf(
  components: SchemaComponents,
  schema: z.ZodObject | undefined,
  where: "path" | "query",
  context: string,
): Json[] {
  if (schema === undefined) return [];
  const json = components.embed(schema, "input", context);
  const properties = (json.properties ?? {}) as Record<string, Json>;
  const required = new Set((json.required ?? []) as string[]);
  return Object.entries(properties).map(([name, property]) => ({
    name,
    in: where,
    required: where === "path" || required.has(name),
    ...(typeof property.description === "string" ? { description: property.description } : {}),
    schema: property,
  }));
}

/** `GET /v1/jobs/{name}/run` → `getV1JobsByNameRun`. */
function operationIdOf(method: string, path: string): string {
  const words = path
    .split("/")
    .filter((s) => s !== "")
    .flatMap((s) => {
      const param = PARAM.exec(s)?.[1];
      return param !== undefined ? ["by", ...param.split(/[^A-Za-z0-9]+/)] : s.split(/[^A-Za-z0-9]+/);
    })
    .filter((w) => w !== "");
  return method.toLowerCase() + words.map((w) => w[0]?.toUpperCase() + w.slice(1)).join("");
}

const COMPONENT_NAME = /[^A-Za-z0-9._-]/g;
const GENERATED_DEF = /^_*schema\d+$/;
/** zod types JSON Schema cannot describe (a date can: it is sent as its ISO 8601 string). */
const UNREPRESENTABLE = new Set([
  "bigint",
  "symbol",
  "undefined",
  "void",
  "map",
  "set",
  "nan",
  "custom",
  "function",
]);

/**
 * Turns zod schemas into schemas embedded in the document. `z.toJSONSchema` writes shared schemas (those
 * with `.meta({ id })`) and recursive ones as `$defs` with refs relative to its own root (`#/$defs/X`,
 * `#`), which inside an OpenAPI document would point at the document's root: they move to
 * components/schemas, renamed when a different schema already holds the name.
 */
class SchemaComponents {
  readonly schemas: Record<string, Json> = {};

  embed(schema: z.ZodType, io: "input" | "output", context: string): Json {
    const json = z.toJSONSchema(schema, {
      io,
      target: "draft-2020-12",
      // A Date answers as its JSON form, an ISO 8601 string; JSON Schema has no date type of its own.
      unrepresentable: "any",
      override: (ctx) => {
        const type = ctx.zodSchema._zod.def.type;
        if (type === "date") {
          ctx.jsonSchema.type = "string";
          ctx.jsonSchema.format = "date-time";
        } else if (UNREPRESENTABLE.has(type)) {
          throw new Error(`a ${type} has no JSON Schema form`);
        }
      },
    }) as Json;
    delete json.$schema;
    const defs = (json.$defs ?? {}) as Record<string, Json>;
    delete json.$defs;
    const rootIsReferenced = containsRef(json, "#") || Object.values(defs).some((d) => containsRef(d, "#"));
    const baseName = (local: string): string =>
      (GENERATED_DEF.test(local) ? `${context}_${local}` : local).replace(COMPONENT_NAME, "_");
    const locals = [...Object.keys(defs), ...(rootIsReferenced ? ["#"] : [])];
    const attempt = new Map(locals.map((l) => [l, 1]));
    const nameOf = (local: string): string => {
      const base = local === "#" ? context.replace(COMPONENT_NAME, "_") : baseName(local);
      const n = attempt.get(local) ?? 1;
      return n === 1 ? base : `${base}${n}`;
    };
    const rewrite = (value: unknown): unknown => {
      if (Array.isArray(value)) return value.map(rewrite);
      if (value === null || typeof value !== "object") return value;
      return Object.fromEntries(
        Object.entries(value).map(([k, v]) => {
          if (k === "$ref" && typeof v === "string") {
            if (v === "#") return [k, `#/components/schemas/${nameOf("#")}`];
            const local = /^#\/\$defs\/(.+)$/.exec(v)?.[1];
            if (local !== undefined && local in defs) return [k, `#/components/schemas/${nameOf(local)}`];
          }
          return [k, rewrite(v)];
        }),
      );
    };
    // A name is kept when it is free or holds the same schema; otherwise the next suffix is tried, and the
    // refs rewritten again, until every def has a name of its own.
    for (;;) {
      const root = rewrite(json) as Json;
      const rewritten = new Map(locals.map((l) => [l, l === "#" ? root : (rewrite(defs[l]) as Json)]));
      const clash = locals.find((l) => {
        const existing = this.schemas[nameOf(l)];
        return existing !== undefined && JSON.stringify(existing) !== JSON.stringify(rewritten.get(l));
      });
      if (clash !== undefined) {
        attempt.set(clash, (attempt.get(clash) ?? 1) + 1);
        continue;
      }
      for (const l of locals) this.schemas[nameOf(l)] = rewritten.get(l) ?? {};
      return rootIsReferenced ? { $ref: `#/components/schemas/${nameOf("#")}` } : root;
    }
  }
}

function containsRef(value: unknown, ref: string): boolean {
  if (Array.isArray(value)) return value.some((v) => containsRef(v, ref));
  if (value === null || typeof value !== "object") return false;
  return Object.entries(value).some(([k, v]) => (k === "$ref" && v === ref) || containsRef(v, ref));
}
