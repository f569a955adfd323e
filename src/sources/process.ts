/**
 * Running the external programs sources depend on (hooks, sqlite3, pg_dump, psql): with a timeout, with the
 * tail of their standard error kept for the message, and with one error shape for every failure.
 *
 * A failure names what ran ("hook before", "pg_dump of shop"), how it ended (exit code, signal, timeout,
 * not found) and the last lines of its standard error, because that is where the reason is.
 */
import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { BulwarkError } from "../core/errors.js";

/**
 * Variables every child process gets from this process's environment (docs/design.md §19, "Child
 * processes"): what a program needs to run and print, never a secret. Everything else (BULWARK_PASSWORD, the
 * vault or REST token, AWS_* keys, a variable a config reference reads) stays behind unless the config names
 * it in an `env:` list or the child is one that needs its own family of variables (libpq's PG*).
 */
export const PASSED_ENV: readonly string[] = [
  "PATH",
  "HOME",
  "USER",
  "LOGNAME",
  "SHELL",
  "LANG",
  "LANGUAGE",
  "TZ",
  "TMPDIR",
  "TERM",
];

export interface ChildEnvOptions {
  /** Further variables passed through by name (a hook's or source's `env:` list in the config). */
  pass?: readonly string[];
  /** Variable families passed through by prefix, for programs configured by them ("PG" for libpq's). */
  prefixes?: readonly string[];
  /** Set by Bulwark for the child (BULWARK_HOOK, BULWARK_FIFO, PGPASSWORD from a reference, ...). */
  set?: Readonly<Record<string, string | undefined>>;
}

/**
 * The environment of a child process: from `from`, only PASSED_ENV, the LC_* locale variables and what
 * `options` names; then `options.set`. The one scrubbing rule for every program Bulwark starts.
 */
export function childEnv(
  from: Readonly<Record<string, string | undefined>>,
  options: ChildEnvOptions = {},
): NodeJS.ProcessEnv {
  const names = new Set([...PASSED_ENV, ...(options.pass ?? [])]);
  const prefixes = ["LC_", ...(options.prefixes ?? [])];
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(from)) {
    if (v !== undefined && (names.has(k) || prefixes.some((p) => k.startsWith(p)))) env[k] = v;
  }
  for (const [k, v] of Object.entries(options.set ?? {})) if (v !== undefined) env[k] = v;
  return env;
}

/** Standard error kept for messages, from the end. */
const STDERR_TAIL = 8 * 1024;
/** After SIGTERM, how long a process gets before SIGKILL. */
export const KILL_GRACE_MS = 2000;

/** How a process ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** Set when the program could not be started at all (ENOENT, EACCES). */
  spawnError?: Error;
  stderr: string;
}

/** Keeps the last STDERR_TAIL bytes of a stream. */
export class Tail {
  private chunks: Buffer[] = [];
  private bytes = 0;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    while (this.bytes - this.chunks[0]!.length >= STDERR_TAIL) this.bytes -= this.chunks.shift()!.length;
  }

  toString(): string {
    const all = Buffer.concat(this.chunks);
    return all.subarray(Math.max(0, all.length - STDERR_TAIL)).toString("utf8");
  }
}

/**
 * Waits for a started child to end; kills it (SIGTERM, then SIGKILL after a grace) once `timeoutMs` passed.
 * The child's stderr must be piped for it to be collected.
 */
export function waitForExit(child: ChildProcess, timeoutMs?: number): Promise<Exit> {
  const tail = new Tail();
  child.stderr?.on("data", (chunk: Buffer) => tail.push(chunk));
  return new Promise<Exit>((resolve) => {
    let timedOut = false;
    let spawnError: Error | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            killTree(child, "SIGTERM");
            killTimer = setTimeout(() => killTree(child, "SIGKILL"), KILL_GRACE_MS);
          }, timeoutMs);
    child.on("error", (err) => {
      spawnError = err;
    });
    child.on("close", (code, signal) => {
      if (timer) clearTimeout(timer);
      if (killTimer) clearTimeout(killTimer);
      resolve({
        code,
        signal,
        timedOut,
        ...(spawnError ? { spawnError } : {}),
        stderr: tail.toString(),
      });
    });
  });
}

/**
 * Signals a child and, when it leads its own process group (spawned `detached`), everything it started:
 * a shell's children must not outlive a timeout.
 */
/** Programs started for sources and hooks that are still running (see `killChildren`). */
const children = new Set<ChildProcess>();

/**
 * Remembers a started program until it exits, so `killChildren` can end it. A source's producer may hold a
 * FIFO open that a blob worker reads synchronously; a process that exits while it runs would wait for it.
 */
export function trackChild<C extends ChildProcess>(child: C): C {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

/** Ends every tracked program and what it started (its process group): for a process about to exit. */
export function killChildren(signal: NodeJS.Signals = "SIGKILL"): number {
  const n = children.size;
  for (const c of children) killTree(c, signal);
  return n;
}

export function killTree(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    // Also after the leader exited: what it left running in its group (a background job) goes too.
    process.kill(-child.pid, signal);
  } catch {
    if (child.exitCode !== null || child.signalCode !== null) return;
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}

export function succeeded(exit: Exit): boolean {
  return exit.code === 0 && !exit.timedOut && exit.spawnError === undefined;
}

/** "exited with code 2", "was killed by SIGKILL", "timed out after 5 s", "could not be started: ..." */
export function describeExit(exit: Exit, timeoutMs?: number): string {
  if (exit.spawnError) return `could not be started: ${exit.spawnError.message}`;
  if (exit.timedOut) return `timed out after ${formatSeconds(timeoutMs ?? 0)} and was killed`;
  if (exit.signal) return `was killed by ${exit.signal}`;
  return `exited with code ${exit.code}`;
}

/** The error for a failed process: what ran, how it ended, and its standard error. */
export function exitError(what: string, exit: Exit, timeoutMs?: number): BulwarkError {
  const stderr = exit.stderr.trim();
  return new BulwarkError(
    "IO",
    `${what} ${describeExit(exit, timeoutMs)}${stderr ? `; its standard error:\n${indent(stderr)}` : ""}`,
  );
}

export interface RunOptions {
  /** The program's environment, whole (default: childEnv of this process's). */
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  /** Written to standard input, which is then closed. */
  input?: string | Buffer;
  cwd?: string;
}

/** Runs a program to its end and returns its standard output; throws exitError unless it exits with 0. */
export async function run(
  what: string,
  file: string,
  args: string[],
  opts: RunOptions = {},
): Promise<string> {
  const child = trackChild(
    spawn(file, args, {
      stdio: ["pipe", "pipe", "pipe"],
      detached: true,
      env: opts.env ?? childEnv(process.env),
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
    } satisfies SpawnOptions),
  );
  const out: Buffer[] = [];
  child.stdout.on("data", (chunk: Buffer) => out.push(chunk));
  child.stdin.on("error", () => undefined); // a program that does not read its input ends with EPIPE
  child.stdin.end(opts.input ?? "");
  const exit = await waitForExit(child, opts.timeoutMs);
  if (!succeeded(exit)) throw exitError(what, exit, opts.timeoutMs);
  return Buffer.concat(out).toString("utf8");
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}

function indent(text: string): string {
  return text
    .split("\n")
    .map((l) => `  ${l}`)
    .join("\n");
}
