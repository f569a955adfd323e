/**
 * Health checks of a recovered service (a runbook's `health:`, docs/design.md §24): the evidence that a
 * service came back, not merely that its processes started. A drill or failover is only as good as these.
 *
 *  1. With `portMap` (a drill on remapped ports, where no network namespace could be made), the check's port
 *     (a tcp port, the port of an http or PostgreSQL URL) is rewritten through the map first (`remapPorts`).
 *  2. Up to 1 + `retries` attempts, `intervalMs` apart, each bounded by `timeoutMs`; the first pass ends it.
 *  3. An attempt probes: tcp connects; http GETs the URL and compares the status and a body substring;
 *     command runs the program (exit 0 passes); sql runs the query with `psql` or on the SQLite file
 *     (better-sqlite3, read-only) and compares its output, rows on lines and columns joined by "|".
 *  4. With `netns`, the probe runs inside that named network namespace (`ip netns exec`): tcp and http as a
 *     small node script (PROBE_SCRIPT, which only observes; the comparison stays here), sql as psql, a
 *     command as itself. A SQLite file needs no network and is read in this process.
 *
 * A check never throws: every failure, including one to start a program or read a password, is its outcome,
 * with a message that says what was expected and what was found. Programs get a scrubbed environment
 * (childEnv); a PostgreSQL password reaches psql only as PGPASSWORD in its environment, never in argv, and is
 * masked in messages and output.
 */
import { spawn } from "node:child_process";
import * as http from "node:http";
import * as https from "node:https";
import * as net from "node:net";
import Database from "better-sqlite3";

import type { Clock } from "../core/clock.js";
import { describeSecretRef, type CommandSpec, type HealthCheck, type SecretRef } from "../config/types.js";
import { errorMessage } from "../core/errors.js";
import { redact } from "../sources/postgres.js";
import {
  childEnv,
  describeExit,
  killTree,
  succeeded,
  Tail,
  waitForExit,
  type Exit,
} from "../sources/process.js";

export interface HealthContext {
  clock: Clock;
  /** Where programs' variables come from (scrubbed by childEnv: only what the check names passes). */
  env: Readonly<Record<string, string | undefined>>;
  /** Reads a check's `password` reference; without it a check that names one fails. */
  readSecret?: (ref: SecretRef) => Promise<string>;
  /** A named network namespace (`ip netns`) the probes run in. */
  netns?: string;
  /** Ports the services were moved to: a check's port P is probed at portMap.get(P). */
  portMap?: ReadonlyMap<number, number>;
  signal?: AbortSignal;
  /** How to wait between attempts (default: a timer, cut short by `signal`). */
  sleep?: (ms: number) => Promise<void>;
}

export interface HealthOutcome {
  name: string;
  type: HealthCheck["type"];
  ok: boolean;
  attempts: number;
  durationMs: number;
  /** One line: what passed, or what was expected and what was found (of the last attempt). */
  message: string;
  /** A command's output tail, a query's output, a response body (its start). */
  output?: string;
}

/** Of one attempt. */
interface Probe {
  ok: boolean;
  message: string;
  output?: string;
}

/** A body is read up to this much; the rest is not needed to find a substring a user wrote. */
const MAX_BODY = 1024 * 1024;
/** What of a body or query output a message quotes. */
const QUOTE_CHARS = 200;
/** What of a response body the outcome keeps. */
const OUTPUT_BODY = 4096;
/** Beyond an attempt's timeout, how long a namespaced probe process gets before it is killed. */
const PROBE_GRACE_MS = 2000;

/** Runs `check` (see the module header). Never throws. */
export async function runHealthCheck(check: HealthCheck, ctx: HealthContext): Promise<HealthOutcome> {
  const started = ctx.clock.now().getTime();
  const done = (attempts: number, r: Probe, secret?: string): HealthOutcome => ({
    name: check.name,
    type: check.type,
    ok: r.ok,
    attempts,
    durationMs: ctx.clock.now().getTime() - started,
    message: mask(r.message, secret),
    ...(r.output !== undefined ? { output: mask(r.output, secret) } : {}),
  });

  const probed = ctx.portMap ? remapPorts(check, ctx.portMap) : check;
  // The password is read once for all attempts: a reference that cannot be read will not start working.
  let password: string | undefined;
  if (probed.type === "sql" && probed.postgres !== undefined && probed.password !== undefined) {
    const ref = probed.password;
    if (!ctx.readSecret)
      return done(0, { ok: false, message: `no way to read the password ${describeSecretRef(ref)}` });
    try {
      password = await ctx.readSecret(ref);
    } catch (err) {
      return done(0, {
        ok: false,
        message: `the password ${describeSecretRef(ref)} could not be read: ${errorMessage(err)}`,
      });
    }
  }

  const max = 1 + retriesOf(check.retries);
  let attempts = 0;
  let last: Probe = { ok: false, message: "interrupted before the first attempt" };
  while (attempts < max) {
    if (ctx.signal?.aborted) {
      last = { ...last, ok: false, message: `interrupted (last attempt: ${last.message})` };
      break;
    }
    attempts++;
    try {
      last = await probe(probed, ctx, password);
    } catch (err) {
      last = { ok: false, message: errorMessage(err) };
    }
    if (last.ok || attempts >= max) break;
    await pause(check.intervalMs, ctx);
  }
  if (attempts > 1) {
    last = {
      ...last,
      message: last.ok
        ? `${last.message} (attempt ${attempts})`
        : `${last.message} (after ${attempts} attempts)`,
    };
  }
  return done(attempts, last, password);
}

/**
 * The check with its port rewritten through `portMap`: a tcp check's port, the port of an http URL (80 or
 * 443 when it names none) or of a PostgreSQL URL (5432; also a `?port=` parameter or a conninfo `port=`).
 * Returns `check` itself when nothing is remapped. Pure.
 */
export function remapPorts(check: HealthCheck, portMap: ReadonlyMap<number, number>): HealthCheck {
  switch (check.type) {
    case "tcp": {
      const to = portMap.get(check.port);
      return to === undefined || to === check.port ? check : { ...check, port: to };
    }
    case "http": {
      const url = remapUrl(check.url, portMap, { "http:": 80, "https:": 443 });
      return url === check.url ? check : { ...check, url };
    }
    case "sql": {
      if (check.postgres === undefined) return check;
      const postgres = check.postgres.includes("://")
        ? remapUrl(check.postgres, portMap, { "postgresql:": 5432, "postgres:": 5432 })
        : remapConninfo(check.postgres, portMap);
      return postgres === check.postgres ? check : { ...check, postgres };
    }
    case "command":
      return check;
  }
}

function remapUrl(
  text: string,
  portMap: ReadonlyMap<number, number>,
  defaults: Record<string, number>,
): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return text; // probed as written; the attempt says what is wrong with it
  }
  let changed = false;
  const param = url.searchParams.get("port");
  if (param !== null && /^\d+$/.test(param)) {
    const to = portMap.get(Number(param));
    if (to !== undefined) {
      url.searchParams.set("port", String(to));
      changed = true;
    }
  }
  // A URL without a host (postgresql:///db, a Unix socket) has no port to move.
  if (url.hostname !== "") {
    const port = url.port !== "" ? Number(url.port) : defaults[url.protocol];
    const to = port === undefined ? undefined : portMap.get(port);
    if (to !== undefined && to !== port) {
      url.port = String(to);
      changed = true;
    }
  }
  return changed ? url.toString() : text;
}

function remapConninfo(text: string, portMap: ReadonlyMap<number, number>): string {
  return text.replace(/(^|\s)port\s*=\s*'?(\d+)'?/, (whole, lead: string, port: string) => {
    const to = portMap.get(Number(port));
    return to === undefined ? whole : `${lead}port=${to}`;
  });
}

async function probe(check: HealthCheck, ctx: HealthContext, password: string | undefined): Promise<Probe> {
  switch (check.type) {
    case "tcp": {
      const where = hostPort(check.host, check.port);
      const seen = await observe({ type: "tcp", host: check.host, port: check.port }, check.timeoutMs, ctx);
      if (seen.kind === "connected") return { ok: true, message: `${where} accepted a connection` };
      return { ok: false, message: describeFailure(seen, where, check.timeoutMs, "accept a connection") };
    }
    case "http":
      return probeHttp(check, ctx);
    case "command": {
      const run = await runCommandSpec(check, {
        env: childEnv(ctx.env, { pass: check.passEnv, set: check.setEnv }),
        timeoutMs: check.timeoutMs,
        ...(ctx.netns !== undefined ? { netns: ctx.netns } : {}),
        ...(ctx.signal ? { signal: ctx.signal } : {}),
      });
      return { ok: run.ok, message: run.message, output: run.output };
    }
    case "sql":
      if (check.postgres !== undefined) return probePostgres(check, check.postgres, ctx, password);
      if (check.sqlite !== undefined) return probeSqlite(check, check.sqlite);
      return { ok: false, message: "the check names neither a postgres URL nor a sqlite file" };
  }
}

async function probeHttp(check: Extract<HealthCheck, { type: "http" }>, ctx: HealthContext): Promise<Probe> {
  let url: URL;
  try {
    url = new URL(check.url);
  } catch {
    return { ok: false, message: `${JSON.stringify(check.url)} is not a URL` };
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    return { ok: false, message: `${check.url}: only http and https URLs can be checked` };
  const seen = await observe({ type: "http", url: url.toString() }, check.timeoutMs, ctx);
  if (seen.kind !== "answered") {
    const where = hostPort(url.hostname, Number(url.port || (url.protocol === "https:" ? 443 : 80)));
    return { ok: false, message: `${check.url}: ${describeFailure(seen, where, check.timeoutMs, "answer")}` };
  }
  const output = seen.body.slice(0, OUTPUT_BODY);
  if (seen.status !== check.status)
    return { ok: false, message: `${check.url} answered ${seen.status}, expected ${check.status}`, output };
  if (check.body !== undefined && !seen.body.includes(check.body)) {
    return {
      ok: false,
      message: `${check.url} answered ${seen.status} but its body does not contain ${JSON.stringify(check.body)} (got: ${quote(seen.body)})`,
      output,
    };
  }
  const matched = check.body !== undefined ? ` with ${JSON.stringify(check.body)} in its body` : "";
  return { ok: true, message: `${check.url} answered ${seen.status}${matched}`, output };
}

async function probePostgres(
  check: Extract<HealthCheck, { type: "sql" }>,
  target: string,
  ctx: HealthContext,
  password: string | undefined,
): Promise<Probe> {
  const env = childEnv(ctx.env, {
    prefixes: ["PG"],
    set: {
      // psql waits for a server that does not answer as long as the kernel lets it; the attempt does not.
      PGCONNECT_TIMEOUT: ctx.env.PGCONNECT_TIMEOUT ?? String(Math.max(2, Math.ceil(check.timeoutMs / 1000))),
      ...(password !== undefined ? { PGPASSWORD: password } : {}),
    },
  });
  const args = [
    "-X",
    "-A",
    "-t",
    "-q",
    "-v",
    "ON_ERROR_STOP=1",
    "--no-password",
    "-d",
    target,
    "-c",
    check.query,
  ];
  const argv = inNetns(ctx.netns, ["psql", ...args]);
  const child = spawn(argv[0]!, argv.slice(1), { env, stdio: ["ignore", "pipe", "pipe"], detached: true });
  const out = new Tail();
  child.stdout.on("data", (chunk: Buffer) => out.push(chunk));
  const exit = await waitWithSignal(child, check.timeoutMs, ctx.signal);
  const where = `the query on ${redact(target)}`;
  if (!succeeded(exit)) {
    const reason = psqlReason(exit.stderr);
    return {
      ok: false,
      message: `psql ${describeExit(exit, check.timeoutMs)}${reason ? `: ${reason}` : ""} (${where})`,
      ...(exit.stderr.trim() ? { output: exit.stderr.trim() } : {}),
    };
  }
  return compareOutput(out.toString(), check.expect, where);
}

/** The line of psql's standard error that says why ("ERROR: ...", "connection ... failed: ..."). */
function psqlReason(stderr: string): string {
  const lines = stderr
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "");
  const line = lines.find((l) => /^(psql: error:|ERROR:|FATAL:)/.test(l)) ?? lines[0] ?? "";
  return line.replace(/^psql: error:\s*/, "");
}

function probeSqlite(check: Extract<HealthCheck, { type: "sql" }>, path: string): Probe {
  const where = `the query on ${path}`;
  let db: Database.Database;
  try {
    // Read-only: a health check must never change the data it proves.
    db = new Database(path, { readonly: true, fileMustExist: true, timeout: check.timeoutMs });
  } catch (err) {
    return { ok: false, message: `${path} could not be opened: ${errorMessage(err)}` };
  }
  try {
    const stmt = db.prepare(check.query);
    const rows = stmt.reader ? (stmt.raw().all() as unknown[][]) : (stmt.run(), []);
    return compareOutput(rows.map((row) => row.map(sqliteValue).join("|")).join("\n"), check.expect, where);
  } catch (err) {
    return { ok: false, message: `${where} failed: ${errorMessage(err)}` };
  } finally {
    db.close();
  }
}

/** A value as `sqlite3 -list` prints it (NULL as nothing). */
function sqliteValue(v: unknown): string {
  if (v === null || v === undefined) return "";
  if (Buffer.isBuffer(v)) return v.toString("utf8");
  if (typeof v === "number" || typeof v === "bigint" || typeof v === "string") return String(v);
  return JSON.stringify(v);
}

/** The comparison of the sources' validators (validatePostgres, validateSqlite): both trimmed, equal. */
function compareOutput(actual: string, expected: string, where: string): Probe {
  const got = actual.trim();
  if (got === expected.trim()) return { ok: true, message: `${where} returned ${quote(got)}`, output: got };
  return {
    ok: false,
    message: `${where} returned ${quote(got)}, expected ${quote(expected.trim())}`,
    output: got,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Observing a port or URL, here or inside a network namespace.

type Observation =
  | { kind: "connected" }
  | { kind: "answered"; status: number; body: string }
  | { kind: "timeout" }
  | { kind: "error"; code: string; detail: string };

type Target = { type: "tcp"; host: string; port: number } | { type: "http"; url: string };

/**
 * The probe run inside a namespace (`node -e PROBE_SCRIPT JSON`): connects or GETs, prints one Observation
 * as JSON and exits. It judges nothing, so the rules stay in one place (probe above).
 */
const PROBE_SCRIPT = `
const spec = JSON.parse(process.argv[1]);
let over = false;
const done = (o) => { if (over) return; over = true; process.stdout.write(JSON.stringify(o)); process.exit(0); };
const fail = (e) => done({ kind: "error", code: e.code || "", detail: e.message });
setTimeout(() => done({ kind: "timeout" }), spec.timeoutMs);
if (spec.type === "tcp") {
  const s = require("node:net").connect({ host: spec.host, port: spec.port });
  s.on("connect", () => { s.destroy(); done({ kind: "connected" }); });
  s.on("error", fail);
} else {
  const u = new URL(spec.url);
  const mod = require(u.protocol === "https:" ? "node:https" : "node:http");
  const req = mod.get(u, { agent: false }, (res) => {
    const chunks = []; let n = 0;
    const end = () => done({ kind: "answered", status: res.statusCode, body: Buffer.concat(chunks).subarray(0, spec.maxBody).toString("utf8") });
    res.on("data", (c) => { chunks.push(c); n += c.length; if (n >= spec.maxBody) { end(); } });
    res.on("end", end);
    res.on("error", end);
  });
  req.on("error", fail);
}
`;

async function observe(target: Target, timeoutMs: number, ctx: HealthContext): Promise<Observation> {
  if (ctx.netns !== undefined) return observeInNetns(ctx.netns, target, timeoutMs, ctx);
  return target.type === "tcp"
    ? connectTcp(target.host, target.port, timeoutMs, ctx.signal)
    : getHttp(target.url, timeoutMs, ctx.signal);
}

function connectTcp(
  host: string,
  port: number,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<Observation> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const finish = settle(resolve, timeoutMs, signal, () => socket.destroy());
    socket.on("connect", () => finish({ kind: "connected" }));
    socket.on("error", (err: NodeJS.ErrnoException) =>
      finish({ kind: "error", code: err.code ?? "", detail: err.message }),
    );
  });
}

function getHttp(url: string, timeoutMs: number, signal?: AbortSignal): Promise<Observation> {
  return new Promise((resolve) => {
    const mod = url.startsWith("https:") ? https : http;
    // No keep-alive agent: a probe leaves no socket open behind it.
    const req = mod.get(url, { agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let bytes = 0;
      const end = (): void =>
        finish({
          kind: "answered",
          status: res.statusCode ?? 0,
          body: Buffer.concat(chunks).subarray(0, MAX_BODY).toString("utf8"),
        });
      res.on("data", (chunk: Buffer) => {
        chunks.push(chunk);
        bytes += chunk.length;
        if (bytes >= MAX_BODY) end();
      });
      res.on("end", end);
      res.on("error", end); // a body cut short is judged on what arrived
    });
    const finish = settle(resolve, timeoutMs, signal, () => req.destroy());
    req.on("error", (err: NodeJS.ErrnoException) =>
      finish({ kind: "error", code: err.code ?? "", detail: err.message }),
    );
  });
}

/** Resolves once: with the first observation, on timeout, or on abort; then `cleanup` (closes the socket). */
function settle(
  resolve: (o: Observation) => void,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  cleanup: () => void,
): (o: Observation) => void {
  let over = false;
  const finish = (o: Observation): void => {
    if (over) return;
    over = true;
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
    cleanup();
    resolve(o);
  };
  const onAbort = (): void => finish({ kind: "error", code: "ABORTED", detail: "interrupted" });
  const timer = setTimeout(() => finish({ kind: "timeout" }), timeoutMs);
  signal?.addEventListener("abort", onAbort, { once: true });
  if (signal?.aborted) onAbort();
  return finish;
}

async function observeInNetns(
  netns: string,
  target: Target,
  timeoutMs: number,
  ctx: HealthContext,
): Promise<Observation> {
  const spec = JSON.stringify({ ...target, timeoutMs, maxBody: MAX_BODY });
  const argv = inNetns(netns, [process.execPath, "-e", PROBE_SCRIPT, spec]);
  const child = spawn(argv[0]!, argv.slice(1), {
    env: childEnv(ctx.env),
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const chunks: Buffer[] = [];
  child.stdout.on("data", (chunk: Buffer) => chunks.push(chunk));
  const exit = await waitWithSignal(child, timeoutMs + PROBE_GRACE_MS, ctx.signal);
  const text = Buffer.concat(chunks).toString("utf8");
  if (succeeded(exit)) {
    try {
      return JSON.parse(text);
    } catch {
      // reported below
    }
  }
  const last = lastLine(exit.stderr);
  return {
    kind: "error",
    code: "NETNS",
    detail: `the probe in network namespace ${netns} ${describeExit(exit, timeoutMs + PROBE_GRACE_MS)}${last ? `: ${last}` : ""}`,
  };
}

/** "127.0.0.1:5432 refused the connection", "... did not answer within 2 s". */
function describeFailure(seen: Observation, where: string, timeoutMs: number, expected: string): string {
  if (seen.kind === "timeout") return `${where} did not ${expected} within ${seconds(timeoutMs)}`;
  if (seen.kind !== "error") return `${where}: unexpected ${seen.kind}`;
  switch (seen.code) {
    case "ECONNREFUSED":
      return `${where} refused the connection`;
    case "ECONNRESET":
      return `${where} closed the connection without answering`;
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return `${where}: the host name could not be resolved (${seen.code})`;
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return `${where} is unreachable (${seen.code})`;
    case "ABORTED":
      return `${where}: interrupted`;
    default:
      return `${where}: ${seen.detail}`;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Programs: a command check here, and the command steps of ./steps.ts.

export interface CommandRun {
  ok: boolean;
  /** "exited with code 0", or how it ended and the last line it printed. */
  message: string;
  /** The tail of standard output and error together, as a terminal shows them. */
  output: string;
  exit: Exit;
}

export interface CommandRunOptions {
  /** The whole environment of the program (childEnv of the caller's, plus what the caller sets). */
  env: NodeJS.ProcessEnv;
  timeoutMs: number;
  /** Run inside this named network namespace (`ip netns exec NAME argv...`). */
  netns?: string;
  signal?: AbortSignal;
}

/**
 * Runs `spec.command` in its own process group (a timeout or an abort kills everything it started) and
 * waits for it. Never throws: a program that cannot start is a failed run.
 */
export async function runCommandSpec(spec: CommandSpec, options: CommandRunOptions): Promise<CommandRun> {
  if (spec.command.length === 0) {
    const exit: Exit = { code: null, signal: null, timedOut: false, stderr: "" };
    return { ok: false, message: "no command to run", output: "", exit };
  }
  const argv = inNetns(options.netns, spec.command);
  const child = spawn(argv[0]!, argv.slice(1), {
    env: options.env,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
    ...(spec.cwd !== undefined ? { cwd: spec.cwd } : {}),
  });
  const output = new Tail();
  child.stdout.on("data", (chunk: Buffer) => output.push(chunk));
  child.stderr.on("data", (chunk: Buffer) => output.push(chunk));
  const exit = await waitWithSignal(child, options.timeoutMs, options.signal);
  const text = output.toString().trimEnd();
  if (succeeded(exit)) return { ok: true, message: "exited with code 0", output: text, exit };
  const last = lastLine(text);
  const cwd = exit.spawnError !== undefined && spec.cwd !== undefined ? ` (in ${spec.cwd})` : "";
  return {
    ok: false,
    message: `${describeExit(exit, options.timeoutMs)}${cwd}${last ? `: ${last}` : ""}`,
    output: text,
    exit,
  };
}

/** waitForExit, and on abort (or this process exiting: Ctrl-C in the CLI) the child's group is killed. */
async function waitWithSignal(
  child: ReturnType<typeof spawn>,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<Exit> {
  const abort = (): void => killTree(child, "SIGKILL");
  signal?.addEventListener("abort", abort, { once: true });
  process.once("exit", abort);
  try {
    if (signal?.aborted) abort();
    return await waitForExit(child, timeoutMs);
  } finally {
    signal?.removeEventListener("abort", abort);
    process.removeListener("exit", abort);
  }
}

/** Attempts after the first: a whole number, at least 0 (a missing or odd value is none). */
export function retriesOf(retries: number): number {
  return Number.isFinite(retries) ? Math.max(0, Math.floor(retries)) : 0;
}

/** `argv` as run inside the named network namespace, or as it is without one. */
export function inNetns(netns: string | undefined, argv: readonly string[]): string[] {
  return netns === undefined ? [...argv] : ["ip", "netns", "exec", netns, ...argv];
}

async function pause(ms: number, ctx: { sleep?: (ms: number) => Promise<void>; signal?: AbortSignal }) {
  if (ms <= 0) return;
  if (ctx.sleep) return ctx.sleep(ms);
  await sleepUnlessAborted(ms, ctx.signal);
}

/** A timer that ends early when `signal` aborts. */
export function sleepUnlessAborted(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

function hostPort(host: string, port: number): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]:${port}` : `${host}:${port}`;
}

function quote(text: string): string {
  return JSON.stringify(text.length > QUOTE_CHARS ? `${text.slice(0, QUOTE_CHARS)}...` : text);
}

function lastLine(text: string): string {
  return text.trimEnd().split("\n").pop()?.trim() ?? "";
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}

/** The password out of what is reported (psql does not print it; a wrapper script might). */
function mask(text: string, secret: string | undefined): string {
  return secret ? text.split(secret).join("***") : text;
}
