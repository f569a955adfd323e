/**
 * The API's HTTP framework against a real server on 127.0.0.1, with real tokens written by addToken, read
 * with fetch (and node:http where fetch cannot say what is needed: a body without Content-Length, TLS
 * with a private CA).
 */
import { execFileSync } from "node:child_process";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { afterAll, beforeAll, describe, expect, expectTypeOf, it } from "vitest";
import { z } from "zod";

import {
  API_ROLES,
  clientKey,
  createApiServer,
  eventStream,
  openApiDocument,
  route,
  textResponse,
  toHttpError,
  type ApiRole,
  type ApiServerOptions,
  type OpenApiDocument,
  type RequestLog,
  type Route,
} from "../../src/api/http.js";
import { PROMETHEUS_CONTENT_TYPE } from "../../src/api/prometheus.js";
import { ManualClock } from "../../src/core/clock.js";
import { BulwarkError, type ErrorCode } from "../../src/core/errors.js";
import { addToken, loadTokens, type StoredToken, type TokenKind } from "../../src/core/tokens.js";

const KIND: TokenKind<ApiRole> = {
  roles: API_ROLES,
  prefix: "bwd_",
  addHint: "bulwark daemon token add --tokens FILE --name NAME --role read",
};

/** What the streaming handlers saw, for the tests to check. */
const stream = { returned: 0, aborted: 0 };

const Job = z.object({ name: z.string(), schedule: z.string() }).meta({ id: "TestJob" });
interface Node {
  label: string;
  children: Node[];
}
const TreeNode: z.ZodType<Node> = z.object({
  label: z.string(),
  get children() {
    return z.array(TreeNode);
  },
});

const ROUTES: Route[] = [
  route({
    method: "GET",
    path: "/v1/health",
    role: "none",
    summary: "Liveness",
    response: z.object({ ok: z.boolean() }),
    handler: () => ({ ok: true }),
  }),
  route({
    method: "GET",
    path: "/v1/jobs",
    role: "read",
    summary: "List jobs",
    query: z.object({ limit: z.coerce.number().int().min(1).optional().describe("at most this many") }),
    response: z.object({ jobs: z.array(Job), by: z.string() }),
    handler: ({ query, token }) => {
      const jobs = [
        // The extra key is not in the schema: it must not reach the client.
        { name: "web", schedule: "daily", password: "hunter2" },
        { name: "db", schedule: "hourly", password: "hunter2" },
      ];
      return { jobs: jobs.slice(0, query.limit ?? jobs.length), by: token.name };
    },
  }),
  route({
    method: "GET",
    path: "/v1/jobs/status",
    role: "read",
    summary: "Literal beats parameter",
    response: z.object({ status: z.literal("fine") }),
    handler: () => ({ status: "fine" as const }),
  }),
  route({
    method: "GET",
    path: "/v1/jobs/{name}",
    role: "read",
    summary: "One job",
    params: z.object({ name: z.string().regex(/^[a-z]+$/, "lowercase letters only") }),
    response: Job,
    handler: ({ params }) => {
      if (params.name === "missing") {
        throw new BulwarkError("NOT_FOUND", `no job named "${params.name}"`, {
          hint: "list them with GET /v1/jobs",
        });
      }
      return { name: params.name, schedule: "daily" };
    },
  }),
  route({
    method: "DELETE",
    path: "/v1/jobs/{name}",
    role: "admin",
    summary: "Forget a job",
    params: z.object({ name: z.string() }),
    response: z.object({ deleted: z.string() }),
    handler: ({ params }) => ({ deleted: params.name }),
  }),
  route({
    method: "POST",
    path: "/v1/jobs/{name}/run",
    role: "operate",
    summary: "Run a job now",
    status: 202,
    params: z.object({ name: z.string() }),
    body: z.object({
      reason: z.string().min(1),
      items: z.array(z.object({ n: z.number() })).optional(),
      tree: TreeNode.optional(),
    }),
    response: z.object({ accepted: z.literal(true), job: z.string(), by: z.string(), reason: z.string() }),
    handler: ({ params, body, token }) => ({
      accepted: true as const,
      job: params.name,
      by: token.name,
      reason: body.reason,
    }),
  }),
  route({
    method: "GET",
    path: "/v1/fail/{code}",
    role: "read",
    summary: "Fails as told",
    params: z.object({ code: z.string() }),
    response: z.object({ never: z.string() }),
    handler: ({ params }): { never: string } => {
      if (params.code === "bug") throw new Error("database password is hunter2");
      if (params.code === "wrapped") {
        throw new Error("wrapper", { cause: new BulwarkError("REPO_LOCKED", "locked by host x") });
      }
      if (params.code === "badanswer") return { wrong: 1 } as unknown as { never: string };
      throw new BulwarkError(params.code as ErrorCode, `failed with ${params.code}`, {
        hint: "do something",
      });
    },
  }),
  route({
    method: "GET",
    path: "/metrics",
    role: "read",
    summary: "Prometheus metrics",
    response: textResponse(PROMETHEUS_CONTENT_TYPE),
    handler: () => "# TYPE up gauge\nup 1\n",
  }),
  route({
    method: "GET",
    path: "/v1/events",
    role: "read",
    summary: "Events, forever",
    response: eventStream(z.object({ n: z.number() })),
    handler: async function* ({ signal }) {
      try {
        for (let n = 0; ; n++) {
          yield { event: "tick", id: String(n), data: { n } };
          await sleep(20);
        }
      } finally {
        stream.returned++;
        if (signal.aborted) stream.aborted++;
      }
    },
  }),
  route({
    method: "GET",
    path: "/v1/events/short",
    role: "read",
    summary: "Two events, then an error",
    query: z.object({ done: z.string().optional() }),
    response: eventStream(z.object({ n: z.number() })),
    handler: async ({ query }) => {
      await Promise.resolve();
      return (async function* () {
        yield { data: { n: 1 } };
        await sleep(1);
        yield { event: "tick", data: { n: 2 } };
        if (query.done === undefined) throw new BulwarkError("REPO_LOCKED", "the repository is locked");
      })();
    },
  }),
  route({
    method: "GET",
    path: "/v1/events/quiet",
    role: "read",
    summary: "No events: heartbeats only",
    response: eventStream(z.object({ n: z.number() })),
    handler: ({ signal }) => ({
      [Symbol.asyncIterator]: () => ({
        // Never yields: only the signal ends the wait.
        next: () =>
          new Promise<IteratorResult<{ data: { n: number } }>>((resolve) =>
            signal.addEventListener("abort", () => resolve({ done: true, value: undefined })),
          ),
        return: () => {
          stream.returned++;
          return Promise.resolve({ done: true as const, value: undefined });
        },
      }),
    }),
  }),
  route({
    method: "GET",
    path: "/v1/tree",
    role: "read",
    summary: "A recursive schema",
    response: z.object({ root: TreeNode, job: Job }),
    handler: () => ({
      root: { label: "a", children: [{ label: "b", children: [] }] },
      job: { name: "x", schedule: "y" },
    }),
  }),
];

let dir: string;
let tokensFile: string;
let tokens: StoredToken<ApiRole>[];
const T = { reader: "", operator: "", admin: "" };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bulwark-api-http-"));
  tokensFile = join(dir, "tokens.json");
  T.reader = await addToken(KIND, tokensFile, "reader", "read");
  T.operator = await addToken(KIND, tokensFile, "operator", "operate");
  T.admin = await addToken(KIND, tokensFile, "boss", "admin");
  tokens = await loadTokens(KIND, tokensFile);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Running {
  base: string;
  port: number;
  clock: ManualClock;
  logs: RequestLog[];
  close: () => Promise<void>;
}

async function start(over: Partial<ApiServerOptions> = {}): Promise<Running> {
  const clock = new ManualClock("2030-01-01T00:00:00Z");
  const logs: RequestLog[] = [];
  const server = createApiServer({
    routes: ROUTES,
    tokens: () => tokens,
    clock,
    onRequest: (entry) => logs.push(entry),
    ...over,
  });
  const { port, url } = await server.listen("127.0.0.1", 0);
  return { base: url, port, clock, logs, close: () => server.close() };
}

/** JSON read back without a schema, which the tests index into freely. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the assertions are the type check
type Loose = any;

const bearer = (token: string): Record<string, string> => ({ Authorization: `Bearer ${token}` });

async function call(
  s: Running,
  method: string,
  path: string,
  init: { token?: string; body?: unknown; raw?: string | Buffer; headers?: Record<string, string> } = {},
): Promise<{ status: number; headers: Headers; json: Loose; text: string }> {
  const headers: Record<string, string> = {
    ...(init.token !== undefined ? bearer(init.token) : {}),
    ...init.headers,
  };
  let body: string | Buffer | undefined = init.raw;
  if (init.body !== undefined) {
    body = JSON.stringify(init.body);
    headers["Content-Type"] ??= "application/json";
  }
  const res = await fetch(s.base + path, { method, headers, body });
  const text = await res.text();
  let json: Loose;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, json, text };
}

describe("the API server", () => {
  let s: Running;
  beforeAll(async () => {
    s = await start();
  });
  afterAll(async () => {
    await s.close();
  });

  it("401 without a token or with an unknown one; the token is never echoed", async () => {
    const none = await call(s, "GET", "/v1/jobs");
    expect(none.status).toBe(401);
    expect(none.json.error.code).toBe("UNAUTHENTICATED");
    expect(none.json.error.message).toBe("a bearer token is required");
    expect(none.headers.get("www-authenticate")).toMatch(/^Bearer /);
    const guess = "bwd_not-a-real-token";
    const unknown = await call(s, "GET", "/v1/jobs", { token: guess });
    expect(unknown.status).toBe(401);
    expect(unknown.json.error.message).toBe("unknown token");
    expect(unknown.text).not.toContain(guess);
    const basic = await call(s, "GET", "/v1/jobs", { headers: { Authorization: `Basic ${T.admin}` } });
    expect(basic.status).toBe(401);
  });

  it("403 when the role is too low, naming the role needed and the token's name", async () => {
    const r = await call(s, "POST", "/v1/jobs/web/run", { token: T.reader, body: { reason: "now" } });
    expect(r.status).toBe(403);
    expect(r.json.error.code).toBe("FORBIDDEN");
    expect(r.json.error.message).toBe('the token "reader" has the role read; this needs operate or higher');
    expect(r.text).not.toContain(T.reader);
    const del = await call(s, "DELETE", "/v1/jobs/web", { token: T.operator });
    expect(del.status).toBe(403);
    expect(del.json.error.message).toMatch(/"operator".*needs admin/);
  });

  it("answers each role what it may do, and public routes without a token", async () => {
    expect((await call(s, "GET", "/v1/health")).json).toEqual({ ok: true });
    for (const token of [T.reader, T.operator, T.admin]) {
      const r = await call(s, "GET", "/v1/jobs/web", { token });
      expect(r.status).toBe(200);
      expect(r.json).toEqual({ name: "web", schedule: "daily" });
    }
    for (const [token, name] of [
      [T.operator, "operator"],
      [T.admin, "boss"],
    ] as const) {
      const run = await call(s, "POST", "/v1/jobs/web/run", { token, body: { reason: "test" } });
      expect(run.status).toBe(202);
      expect(run.json).toEqual({ accepted: true, job: "web", by: name, reason: "test" });
    }
    const del = await call(s, "DELETE", "/v1/jobs/web", { token: T.admin });
    expect(del.status).toBe(200);
    expect(del.json).toEqual({ deleted: "web" });
  });

  it("answers JSON that is never cached, and only what the answer schema names", async () => {
    const r = await call(s, "GET", "/v1/jobs?limit=1", { token: T.reader });
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("application/json; charset=utf-8");
    expect(r.headers.get("cache-control")).toBe("no-store");
    expect(r.json).toEqual({ jobs: [{ name: "web", schedule: "daily" }], by: "reader" });
    expect(r.text).not.toContain("hunter2");
    const err = await call(s, "GET", "/v1/nowhere");
    expect(err.headers.get("cache-control")).toBe("no-store");
    expect(err.headers.get("content-type")).toBe("application/json; charset=utf-8");
  });

  it("prefers a literal segment to a parameter", async () => {
    expect((await call(s, "GET", "/v1/jobs/status", { token: T.reader })).json).toEqual({ status: "fine" });
  });

  it("400 names the field that is wrong, in params, query and body", async () => {
    const query = await call(s, "GET", "/v1/jobs?limit=0", { token: T.reader });
    expect(query.status).toBe(400);
    expect(query.json.error.code).toBe("USAGE");
    expect(query.json.error.message).toMatch(/^query\.limit: Too small/);

    const params = await call(s, "GET", "/v1/jobs/Web1", { token: T.reader });
    expect(params.status).toBe(400);
    expect(params.json.error.message).toBe("params.name: lowercase letters only");

    const body = await call(s, "POST", "/v1/jobs/web/run", {
      token: T.operator,
      body: { reason: "", items: [{ n: 1 }, { n: "two" }] },
    });
    expect(body.status).toBe(400);
    expect(body.json.error.message).toMatch(
      /^body\.reason: Too small.*; body\.items\[1\]\.n: Invalid input: expected number/,
    );

    const missing = await call(s, "POST", "/v1/jobs/web/run", { token: T.operator });
    expect(missing.status).toBe(400);
    expect(missing.json.error.message).toMatch(/^body: Invalid input: expected object/);

    const notJson = await call(s, "POST", "/v1/jobs/web/run", {
      token: T.operator,
      raw: "{reason",
      headers: { "Content-Type": "application/json" },
    });
    expect(notJson.status).toBe(400);
    expect(notJson.json.error.message).toMatch(/^body: not valid JSON/);

    const form = await call(s, "POST", "/v1/jobs/web/run", {
      token: T.operator,
      raw: "reason=x",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
    });
    expect(form.status).toBe(415);
    expect(form.json.error.code).toBe("UNSUPPORTED_MEDIA_TYPE");

    const encoding = await call(s, "GET", "/v1/jobs/%E0%A4%A", { token: T.reader });
    expect(encoding.status).toBe(400);
  });

  it("404 for an unknown path, 405 with Allow for a known path's other methods", async () => {
    const unknown = await call(s, "GET", "/v1/nowhere", { token: T.admin });
    expect(unknown.status).toBe(404);
    expect(unknown.json.error.code).toBe("NOT_FOUND");
    expect((await call(s, "GET", "/v1/jobs/web/run/extra", { token: T.admin })).status).toBe(404);
    expect((await call(s, "GET", "/v1/jobs//run", { token: T.admin })).status).toBe(404);

    const method = await call(s, "PUT", "/v1/jobs/web", { token: T.admin });
    expect(method.status).toBe(405);
    expect(method.json.error.code).toBe("METHOD_NOT_ALLOWED");
    expect(method.headers.get("allow")).toBe("GET, DELETE");
    expect((await call(s, "GET", "/v1/jobs/web/run", { token: T.admin })).headers.get("allow")).toBe("POST");
  });

  it("413 for a body over 1 MiB, declared or not, and reads no body before authentication", async () => {
    const big = { reason: "x".repeat(1024 * 1024) };
    const declared = await call(s, "POST", "/v1/jobs/web/run", { token: T.operator, body: big });
    expect(declared.status).toBe(413);
    expect(declared.json.error.code).toBe("PAYLOAD_TOO_LARGE");

    // Chunked, without Content-Length: the limit holds while reading.
    const chunked = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest(`${s.base}/v1/jobs/web/run`, {
        method: "POST",
        headers: { ...bearer(T.operator), "Content-Type": "application/json" },
      });
      req.on("response", (res) => {
        let text = "";
        res.on("data", (c: Buffer) => (text += c.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
      });
      req.on("error", reject);
      const piece = Buffer.alloc(64 * 1024, 0x20);
      for (let i = 0; i < 20; i++) req.write(piece);
      req.end();
    });
    expect(chunked.status).toBe(413);
    expect(JSON.parse(chunked.body).error.code).toBe("PAYLOAD_TOO_LARGE");

    const anonymous = await call(s, "POST", "/v1/jobs/web/run", { body: big });
    expect(anonymous.status).toBe(401);

    // A body just under the limit is read whole.
    const fits = await call(s, "POST", "/v1/jobs/web/run", {
      token: T.operator,
      body: { reason: "y".repeat(1024 * 1024 - 100) },
    });
    expect(fits.status).toBe(202);
  });

  it("maps Bulwark errors to statuses, keeping message and hint; a bug is 500 'internal error'", async () => {
    const expected: [string, number][] = [
      ["NOT_FOUND", 404],
      ["USAGE", 400],
      ["CONFIG_INVALID", 400],
      ["ALREADY_EXISTS", 409],
      ["REPO_LOCKED", 409],
      ["RETENTION_LOCKED", 409],
      ["AUTH", 502],
      ["TRANSIENT", 503],
      ["IO", 500],
    ];
    for (const [code, status] of expected) {
      const r = await call(s, "GET", `/v1/fail/${code}`, { token: T.reader });
      expect([code, r.status]).toEqual([code, status]);
      expect(r.json).toEqual({ error: { code, message: `failed with ${code}`, hint: "do something" } });
    }
    const notFound = await call(s, "GET", "/v1/jobs/missing", { token: T.reader });
    expect(notFound.status).toBe(404);
    expect(notFound.json.error).toEqual({
      code: "NOT_FOUND",
      message: 'no job named "missing"',
      hint: "list them with GET /v1/jobs",
    });

    const wrapped = await call(s, "GET", "/v1/fail/wrapped", { token: T.reader });
    expect([wrapped.status, wrapped.json.error.code]).toEqual([409, "REPO_LOCKED"]);

    const bug = await call(s, "GET", "/v1/fail/bug", { token: T.reader });
    expect(bug.status).toBe(500);
    expect(bug.json).toEqual({ error: { code: "INTERNAL", message: "internal error" } });
    expect(bug.text).not.toContain("hunter2");
    const logged = s.logs.find((l) => l.path === "/v1/fail/bug");
    expect(logged?.status).toBe(500);
    expect(String(logged?.error)).toContain("hunter2");

    const badAnswer = await call(s, "GET", "/v1/fail/badanswer", { token: T.reader });
    expect(badAnswer.status).toBe(500);
    expect(String(s.logs.find((l) => l.path === "/v1/fail/badanswer")?.error)).toMatch(
      /does not match its schema/,
    );
  });

  it("serves text routes with their own content type", async () => {
    const r = await call(s, "GET", "/metrics", { token: T.reader });
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe(PROMETHEUS_CONTENT_TYPE);
    expect(r.headers.get("cache-control")).toBe("no-store");
    expect(r.text).toBe("# TYPE up gauge\nup 1\n");
  });

  it("logs every request with the token's name, never a token", async () => {
    await call(s, "GET", "/v1/jobs/web?x=1", { token: T.reader });
    const entry = s.logs.find((l) => l.path === "/v1/jobs/web" && l.status === 200);
    expect(entry).toMatchObject({ method: "GET", token: "reader", client: "127.0.0.1" });
    const all = JSON.stringify(s.logs);
    for (const token of Object.values(T)) expect(all).not.toContain(token);
  });
});

describe("server-sent events", () => {
  let s: Running;
  beforeAll(async () => {
    s = await start({ heartbeatMs: 30 });
  });
  afterAll(async () => {
    await s.close();
  });

  /** Reads the stream until `enough` says so, then aborts the request. */
  async function readEvents(
    path: string,
    enough: (text: string) => boolean,
  ): Promise<{ text: string; headers: Headers }> {
    const abort = new AbortController();
    const res = await fetch(s.base + path, { headers: bearer(T.reader), signal: abort.signal });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = "";
    try {
      while (!enough(text)) {
        const { value, done } = await reader.read();
        if (done) break;
        text += decoder.decode(value, { stream: true });
      }
    } finally {
      abort.abort();
    }
    return { text, headers: res.headers };
  }

  async function until(what: () => boolean): Promise<void> {
    for (let i = 0; i < 200 && !what(); i++) await sleep(10);
    expect(what()).toBe(true);
  }

  it("writes events as they come, and stops the source when the client goes away", async () => {
    const before = { ...stream };
    const { text, headers } = await readEvents(
      "/v1/events",
      (t) => (t.match(/^event: tick$/gm) ?? []).length >= 2,
    );
    expect(headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    expect(headers.get("cache-control")).toBe("no-store");
    expect(text).toMatch(/^event: tick\nid: 0\ndata: \{"n":0\}\n\n/);
    expect(text).toContain('event: tick\nid: 1\ndata: {"n":1}\n\n');
    await until(() => stream.returned === before.returned + 1);
    expect(stream.aborted).toBe(before.aborted + 1);
    await until(() => s.logs.some((l) => l.path === "/v1/events"));
  });

  it("sends an error event when the source fails after it started, then ends", async () => {
    const { text } = await readEvents("/v1/events/short", () => false);
    expect(text).toBe(
      'data: {"n":1}\n\n' +
        'event: tick\ndata: {"n":2}\n\n' +
        'event: error\ndata: {"error":{"code":"REPO_LOCKED","message":"the repository is locked"}}\n\n',
    );
    const clean = await readEvents("/v1/events/short?done=1", () => false);
    expect(clean.text).not.toContain("event: error");
  });

  it("sends heartbeats while the source is quiet", async () => {
    const before = stream.returned;
    const { text } = await readEvents(
      "/v1/events/quiet",
      (t) => (t.match(/^: heartbeat$/gm) ?? []).length >= 2,
    );
    expect(text).toMatch(/^(: heartbeat\n\n){2,}$/);
    await until(() => stream.returned === before + 1);
  });

  it("refuses a stream like any route: 401 without a token", async () => {
    expect((await fetch(s.base + "/v1/events")).status).toBe(401);
  });
});

describe("closing the server", () => {
  it("ends open event streams and stops listening", async () => {
    const s = await start();
    const before = stream.returned;
    const res = await fetch(s.base + "/v1/events", { headers: bearer(T.reader) });
    const reader = res.body!.getReader();
    await reader.read();
    await s.close();
    // The stream ends rather than hangs.
    for (;;) if ((await reader.read()).done) break;
    expect(stream.returned).toBe(before + 1);
    await expect(fetch(s.base + "/v1/health")).rejects.toThrow();
  });
});

describe("rate limiting failed authentication", () => {
  it("refuses an address after 5 failures in 60 s, valid tokens too, until the window passes", async () => {
    const s = await start();
    try {
      // No token at all is not a guess.
      for (let i = 0; i < 6; i++) expect((await call(s, "GET", "/v1/jobs")).status).toBe(401);
      for (let i = 0; i < 5; i++) {
        expect((await call(s, "GET", "/v1/jobs", { token: `bwd_guess${i}` })).status).toBe(401);
        s.clock.advance(1000);
      }
      const limited = await call(s, "GET", "/v1/jobs", { token: "bwd_guess5" });
      expect(limited.status).toBe(429);
      expect(limited.json.error.code).toBe("RATE_LIMITED");
      expect(limited.headers.get("retry-after")).toBe("55");
      const valid = await call(s, "GET", "/v1/jobs", { token: T.admin });
      expect(valid.status).toBe(429);
      // Public routes are not behind the limit.
      expect((await call(s, "GET", "/v1/health")).status).toBe(200);

      s.clock.advance(50_000);
      expect((await call(s, "GET", "/v1/jobs", { token: T.admin })).headers.get("retry-after")).toBe("5");
      // The oldest failure leaves the window: one more attempt is allowed, and fails again.
      s.clock.advance(5_000);
      expect((await call(s, "GET", "/v1/jobs", { token: T.admin })).status).toBe(200);
      expect((await call(s, "GET", "/v1/jobs", { token: "bwd_guess6" })).status).toBe(401);
      expect((await call(s, "GET", "/v1/jobs", { token: T.admin })).status).toBe(429);

      // Once the window has passed, everything is back.
      s.clock.advance(61_000);
      expect((await call(s, "GET", "/v1/jobs", { token: T.admin })).status).toBe(200);
    } finally {
      await s.close();
    }
  });

  it("counts IPv6 clients by their /64 and v4-mapped addresses as IPv4", () => {
    expect(clientKey("2001:db8:1:2:aaaa::1")).toBe("2001:db8:1:2::/64");
    expect(clientKey("2001:db8:1:2:ffff:ffff:ffff:ffff")).toBe("2001:db8:1:2::/64");
    expect(clientKey("2001:db8::1")).toBe("2001:db8:0:0::/64");
    expect(clientKey("fe80::1%eth0")).toBe("fe80:0:0:0::/64");
    expect(clientKey("::1")).toBe("0:0:0:0::/64");
    expect(clientKey("::ffff:10.1.2.3")).toBe("10.1.2.3");
    expect(clientKey("10.1.2.3")).toBe("10.1.2.3");
    expect(clientKey(undefined)).toBe("unknown");
  });
});

describe("toHttpError", () => {
  it("has a status for every Bulwark code, and hides what is not one", () => {
    const codes: ErrorCode[] = [
      "NOT_FOUND",
      "ALREADY_EXISTS",
      "TRANSIENT",
      "AUTH",
      "RETENTION_LOCKED",
      "NO_REPOSITORY",
      "REPO_LOCKED",
      "WRONG_PASSWORD",
      "INVALID_DATA",
      "CONFIG_INVALID",
      "USAGE",
      "IO",
      "CANCELLED",
    ];
    const statuses = Object.fromEntries(codes.map((c) => [c, toHttpError(new BulwarkError(c, "m")).status]));
    expect(statuses).toEqual({
      NOT_FOUND: 404,
      ALREADY_EXISTS: 409,
      TRANSIENT: 503,
      AUTH: 502,
      RETENTION_LOCKED: 409,
      NO_REPOSITORY: 409,
      REPO_LOCKED: 409,
      WRONG_PASSWORD: 502,
      INVALID_DATA: 502,
      CONFIG_INVALID: 400,
      USAGE: 400,
      IO: 500,
      CANCELLED: 503,
    });
    const bug = toHttpError(new TypeError("x is undefined"));
    expect(bug).toMatchObject({
      status: 500,
      internal: true,
      body: { error: { code: "INTERNAL", message: "internal error" } },
    });
    expect(toHttpError("a string").status).toBe(500);
  });
});

describe("route declarations", () => {
  it("type the handler's context and answer from the schemas (checked by the typecheck)", () => {
    const typed = route({
      method: "POST",
      path: "/x/{id}",
      role: "operate",
      summary: "typed",
      params: z.object({ id: z.coerce.number() }),
      query: z.object({ q: z.string().optional() }),
      body: z.object({ list: z.array(z.string()) }),
      response: z.object({ ok: z.boolean() }),
      handler: (ctx) => {
        expectTypeOf(ctx.params).toEqualTypeOf<{ id: number }>();
        expectTypeOf(ctx.query).toEqualTypeOf<{ q?: string | undefined }>();
        expectTypeOf(ctx.body).toEqualTypeOf<{ list: string[] }>();
        expectTypeOf(ctx.token).toEqualTypeOf<StoredToken<ApiRole>>();
        return { ok: true };
      },
    });
    const bare = route({
      method: "GET",
      path: "/y",
      role: "none",
      summary: "public",
      response: textResponse("text/plain"),
      handler: (ctx) => {
        expectTypeOf(ctx.token).toEqualTypeOf<undefined>();
        expectTypeOf(ctx.body).toEqualTypeOf<undefined>();
        return "text";
      },
    });
    route({
      method: "GET",
      path: "/z",
      role: "read",
      summary: "wrong answer",
      response: z.object({ ok: z.boolean() }),
      // @ts-expect-error the answer must match the response schema
      handler: () => ({ ok: "yes" }),
    });
    route({
      method: "GET",
      path: "/e",
      role: "read",
      summary: "events",
      response: eventStream(z.object({ n: z.number() })),
      // @ts-expect-error event data must match the stream's schema
      handler: async function* () {
        await Promise.resolve();
        yield { data: { n: "one" } };
      },
    });
    expect([typed.path, bare.path]).toEqual(["/x/{id}", "/y"]);
  });

  const handler = (): { ok: boolean } => ({ ok: true });
  it("refuse path parameters the params schema does not declare, and repeats", () => {
    const base = {
      method: "GET" as const,
      role: "read" as const,
      summary: "s",
      response: z.object({ ok: z.boolean() }),
      handler,
    };
    expect(() =>
      createApiServer({
        routes: [route({ ...base, path: "/v1/{name}" })],
        tokens: () => [],
        clock: new ManualClock(0),
      }),
    ).toThrow(/path parameters \[name\] but params schema \[\]/);
    expect(() =>
      createApiServer({
        routes: [route({ ...base, path: "/v1/x", params: z.object({ name: z.string() }) })],
        tokens: () => [],
        clock: new ManualClock(0),
      }),
    ).toThrow(/params schema \[name\]/);
    expect(() =>
      createApiServer({
        routes: [route({ ...base, path: "/v1/x" }), route({ ...base, path: "/v1/x" })],
        tokens: () => [],
        clock: new ManualClock(0),
      }),
    ).toThrow(/declared twice/);
    expect(() =>
      createApiServer({
        routes: [route({ ...base, path: "/v1/a b" })],
        tokens: () => [],
        clock: new ManualClock(0),
      }),
    ).toThrow(/bad segment/);
  });
});

describe("TLS", () => {
  const hasOpenssl = (() => {
    try {
      execFileSync("openssl", ["version"], { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  })();

  it.skipIf(!hasOpenssl)("serves HTTPS with the given certificate", async () => {
    const key = join(dir, "key.pem");
    const cert = join(dir, "cert.pem");
    execFileSync("openssl", [
      "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
      "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
    ], { stdio: "ignore" }); // prettier-ignore
    const ca = await readFile(cert);
    const s = await start({ tls: { cert: ca, key: await readFile(key) } });
    try {
      expect(s.base).toMatch(/^https:\/\/127\.0\.0\.1:/);
      const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = httpsRequest(`${s.base}/v1/jobs/web`, { ca, headers: bearer(T.reader) }, (res) => {
          let body = "";
          res.on("data", (c: Buffer) => (body += c.toString()));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on("error", reject);
        req.end();
      });
      expect(answer.status).toBe(200);
      expect(JSON.parse(answer.body)).toEqual({ name: "web", schedule: "daily" });
    } finally {
      await s.close();
    }
  });
});

describe("openApiDocument", () => {
  const doc = openApiDocument(ROUTES, { title: "Bulwark daemon", version: "1" });

  /** Every `$ref` in the document, with where it was found. */
  function refs(value: unknown, at = "#"): [string, string][] {
    if (Array.isArray(value)) return value.flatMap((v, i) => refs(v, `${at}/${i}`));
    if (value === null || typeof value !== "object") return [];
    return Object.entries(value).flatMap(([k, v]): [string, string][] =>
      k === "$ref" && typeof v === "string" ? [[at, v]] : refs(v, `${at}/${k}`),
    );
  }

  function resolve(document: OpenApiDocument, ref: string): unknown {
    if (!ref.startsWith("#/")) return undefined;
    let node: unknown = document;
    for (const part of ref.slice(2).split("/")) {
      const key = part.replace(/~1/g, "/").replace(/~0/g, "~");
      node = node !== null && typeof node === "object" ? (node as Record<string, unknown>)[key] : undefined;
    }
    return node;
  }

  it("is a structurally valid OpenAPI 3.1 document", () => {
    expect(doc.openapi).toBe("3.1.0");
    expect(doc.info).toEqual({ title: "Bulwark daemon", version: "1" });
    expect(doc.components.securitySchemes.bearer).toMatchObject({ type: "http", scheme: "bearer" });
    // It is plain JSON: nothing is lost serialising it.
    expect(JSON.parse(JSON.stringify(doc))).toEqual(doc);
    const ids = new Set<string>();
    for (const [path, item] of Object.entries(doc.paths)) {
      expect(path).toMatch(/^\//);
      for (const [method, op] of Object.entries(item)) {
        expect(["get", "put", "post", "delete", "patch"]).toContain(method);
        expect(typeof op.operationId).toBe("string");
        expect(ids.has(op.operationId as string)).toBe(false);
        ids.add(op.operationId as string);
        const responses = op.responses as Record<string, unknown>;
        expect(Object.keys(responses).some((k) => /^2\d\d$/.test(k))).toBe(true);
        for (const key of Object.keys(responses)) expect(key).toMatch(/^([1-5]\d\d|default)$/);
        for (const scheme of (op.security ?? doc.security) as Record<string, unknown>[]) {
          for (const name of Object.keys(scheme)) expect(doc.components.securitySchemes).toHaveProperty(name);
        }
        const params = (op.parameters ?? []) as {
          name: string;
          in: string;
          required?: boolean;
          schema?: unknown;
        }[];
        const seen = new Set(params.map((p) => `${p.in}:${p.name}`));
        expect(seen.size).toBe(params.length);
        for (const p of params) {
          expect(["path", "query", "header", "cookie"]).toContain(p.in);
          expect(p.schema).toBeTypeOf("object");
          if (p.in === "path") expect(p.required).toBe(true);
        }
        // Every {param} of the path is declared, and nothing else is a path parameter.
        const inPath = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]).sort();
        expect(
          params
            .filter((p) => p.in === "path")
            .map((p) => p.name)
            .sort(),
        ).toEqual(inPath);
      }
    }
    for (const [at, ref] of refs(doc)) expect([at, resolve(doc, ref)]).not.toEqual([at, undefined]);
    for (const schema of Object.values(doc.components.schemas)) expect(schema).not.toHaveProperty("$schema");
  });

  it("lists every route, with its parameters, body, answer and errors", () => {
    for (const r of ROUTES)
      expect(doc.paths[r.path]?.[r.method.toLowerCase()], `${r.method} ${r.path}`).toBeDefined();
    const count = Object.values(doc.paths).reduce((n, item) => n + Object.keys(item).length, 0);
    expect(count).toBe(ROUTES.length);

    const run = doc.paths["/v1/jobs/{name}/run"]?.post as Loose;
    expect(run.operationId).toBe("postV1JobsByNameRun");
    expect(run["x-bulwark-role"]).toBe("operate");
    expect(run.requestBody.required).toBe(true);
    expect(run.requestBody.content["application/json"].schema.required).toEqual(["reason"]);
    expect(run.responses["202"].content["application/json"].schema.properties.by).toEqual({ type: "string" });
    for (const status of ["400", "401", "403", "404", "413", "415", "429", "default"]) {
      expect(run.responses[status], status).toHaveProperty("$ref");
    }

    const list = doc.paths["/v1/jobs"]?.get as Loose;
    expect(list.parameters).toEqual([
      {
        name: "limit",
        in: "query",
        required: false,
        description: "at most this many",
        schema: expect.objectContaining({ type: "integer", minimum: 1 }),
      },
    ]);
    const health = doc.paths["/v1/health"]?.get as Loose;
    expect(health.security).toEqual([]);
    expect(health.responses).not.toHaveProperty("401");
    expect(doc.security).toEqual([{ bearer: [] }]);

    const metrics = doc.paths["/metrics"]?.get as Loose;
    expect(metrics.responses["200"].content).toEqual({
      [PROMETHEUS_CONTENT_TYPE]: { schema: { type: "string" } },
    });
    const events = doc.paths["/v1/events"]?.get as Loose;
    expect(events.responses["200"].content["text/event-stream"]["x-bulwark-event-data"].properties.n).toEqual(
      {
        type: "number",
      },
    );

    const error = doc.components.schemas.Error as Loose;
    expect(error.properties.error.required).toEqual(["code", "message"]);
    expect(error.properties.error.properties.code.enum).toEqual(
      expect.arrayContaining(["NOT_FOUND", "RATE_LIMITED", "INTERNAL"]),
    );
    expect((doc.components.responses.TooManyRequests as Loose).headers).toHaveProperty("Retry-After");
  });

  it("names the route whose schema has no JSON Schema form; a date is an ISO 8601 string", () => {
    const big = route({
      method: "GET",
      path: "/v1/count",
      role: "read",
      summary: "a bigint",
      response: z.object({ n: z.bigint() }),
      handler: () => ({ n: 1n }),
    });
    expect(() => openApiDocument([big], { title: "t", version: "1" })).toThrow(/^GET \/v1\/count: /);
    const dated = route({
      method: "GET",
      path: "/v1/when",
      role: "read",
      summary: "a date",
      response: z.object({ at: z.date() }),
      handler: () => ({ at: new Date(0) }),
    });
    const doc = openApiDocument([dated], { title: "t", version: "1" }) as unknown as Loose;
    const schema = doc.paths["/v1/when"].get.responses["200"].content["application/json"].schema;
    expect(schema.properties.at).toMatchObject({ type: "string", format: "date-time" });
  });

  it("puts shared and recursive schemas in components, with refs that resolve in the document", () => {
    // The job schema has an id: one component, referred to from every answer that holds it.
    expect(doc.components.schemas.TestJob).toMatchObject({ type: "object", required: ["name", "schedule"] });
    const tree = doc.paths["/v1/tree"]?.get as Loose;
    const answer = tree.responses["200"].content["application/json"].schema;
    expect(answer.properties.job).toEqual({ $ref: "#/components/schemas/TestJob" });
    const nodeRef: string = answer.properties.root.$ref;
    expect(nodeRef).toMatch(/^#\/components\/schemas\//);
    const node = resolve(doc, nodeRef) as Loose;
    expect(node.properties.children.items).toEqual({ $ref: nodeRef });
    // The same recursive schema in a request body is its own component (input and output may differ) or
    // the same one, but always one that resolves.
    const body = (doc.paths["/v1/jobs/{name}/run"]?.post as Loose).requestBody.content["application/json"]
      .schema;
    expect(resolve(doc, body.properties.tree.$ref)).toBeDefined();
  });
});
