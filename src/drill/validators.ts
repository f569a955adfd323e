/**
 * A drill's validators (the dataset's `drill.validators`, docs/config.md): what proves the restored data
 * usable beyond "the bytes are the recorded ones".
 *  - paths: each expected snapshot path exists in the sandbox; a file with at least `minSize` bytes, a
 *    directory with at least `minFiles` files below it;
 *  - sqlite: `PRAGMA integrity_check` says ok and each query prints what it expects (src/sources/sqlite.ts,
 *    read-only);
 *  - postgres: the source's dump restored into a throwaway cluster, then the queries (src/sources/postgres.ts);
 *  - command: run in the sandbox as its working directory, in a network namespace where possible
 *    (./isolation.ts), killed after its timeout; exit 0 passes.
 * A validator never throws: every failure, including one to start, is its outcome, with a message that says
 * what was expected and what was found. Commands get a clean environment (childEnv, src/sources/process.ts:
 * PATH, HOME, locale and the BULWARK_SANDBOX, BULWARK_SNAPSHOT, BULWARK_DATASET variables), never this
 * process's secrets.
 */
import { spawn } from "node:child_process";
import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";

import type { Clock } from "../core/clock.js";
import type { DrillValidator } from "../config/types.js";
import { errnoCode, errorMessage } from "../core/errors.js";
import type { Repository } from "../repository/repository.js";
import { DATABASES_DIR, databaseEntryName, validatePostgres } from "../sources/postgres.js";
import { childEnv, describeExit, killTree, succeeded, Tail, waitForExit } from "../sources/process.js";
import { validateSqlite } from "../sources/sqlite.js";
import { SOURCES_ROOT } from "../sources/dataset.js";
import type { Isolation } from "./isolation.js";

export interface ValidatorOutcome {
  name: string;
  kind: DrillValidator["type"];
  ok: boolean;
  durationMs: number;
  /** One line: what passed, or what was expected and found. */
  message: string;
  /** The checks' lines, or a command's output (its tail). */
  output?: string;
}

export interface ValidatorContext {
  repo: Repository;
  snapshot: { id: string; tree: string };
  dataset: string;
  sandbox: string;
  isolation: Isolation;
  clock: Clock;
  env: NodeJS.ProcessEnv;
  signal?: AbortSignal;
}

export async function runValidator(v: DrillValidator, ctx: ValidatorContext): Promise<ValidatorOutcome> {
  const started = ctx.clock.now().getTime();
  let r: Omit<ValidatorOutcome, "name" | "kind" | "durationMs">;
  try {
    r = await runOne(v, ctx);
  } catch (err) {
    r = { ok: false, message: errorMessage(err) };
  }
  return { name: v.name, kind: v.type, durationMs: ctx.clock.now().getTime() - started, ...r };
}

async function runOne(
  v: DrillValidator,
  ctx: ValidatorContext,
): Promise<Omit<ValidatorOutcome, "name" | "kind" | "durationMs">> {
  switch (v.type) {
    case "paths": {
      const problems: string[] = [];
      const lines: string[] = [];
      for (const e of v.expect) {
        const problem = await checkPath(ctx.sandbox, e);
        if (problem !== undefined) problems.push(`${e.path}: ${problem}`);
        lines.push(`${e.path}: ${problem ?? "ok"}`);
      }
      return problems.length === 0
        ? {
            ok: true,
            message: `${v.expect.length} expected ${v.expect.length === 1 ? "path" : "paths"} present`,
            output: lines.join("\n"),
          }
        : { ok: false, message: problems.join("; "), output: lines.join("\n") };
    }
    case "sqlite": {
      const validation = await validateSqlite(join(ctx.sandbox, v.path), v.queries);
      return checksOutcome(validation.checks);
    }
    case "postgres": {
      const dir =
        v.database === undefined
          ? `${SOURCES_ROOT}/${v.source}`
          : `${SOURCES_ROOT}/${v.source}/${DATABASES_DIR}/${databaseEntryName(v.database)}`;
      const validation = await validatePostgres(ctx.repo, ctx.snapshot, dir, {
        checks: v.queries,
        env: ctx.env,
        ...(v.timeoutMs !== undefined ? { timeoutMs: v.timeoutMs } : {}),
      });
      const restored = validation.restore?.tables.length ?? 0;
      const outcome = checksOutcome(validation.checks);
      return {
        ...outcome,
        message:
          `restored into a throwaway cluster (${restored} ${restored === 1 ? "table" : "tables"})` +
          (v.queries.length > 0 ? `; ${outcome.message}` : ""),
      };
    }
    case "command":
      return runCommand(v, ctx);
  }
}

function checksOutcome(
  checks: { name: string; ok: boolean; expected: string; actual: string }[],
): Omit<ValidatorOutcome, "name" | "kind" | "durationMs"> {
  const failed = checks.filter((c) => !c.ok);
  const output = checks
    .map((c) => `${c.ok ? "ok" : "FAILED"}: ${c.name} -> ${JSON.stringify(c.actual)}`)
    .join("\n");
  if (failed.length === 0)
    return {
      ok: true,
      message: `${checks.length} ${checks.length === 1 ? "check" : "checks"} passed`,
      output,
    };
  return {
    ok: false,
    message: failed
      .map((c) => `${c.name}: expected ${JSON.stringify(c.expected)}, got ${JSON.stringify(c.actual)}`)
      .join("; "),
    output,
  };
}

async function checkPath(
  sandbox: string,
  e: { path: string; minSize?: number; minFiles?: number },
): Promise<string | undefined> {
  const path = join(sandbox, e.path);
  let st;
  try {
    st = await lstat(path);
  } catch (err) {
    return `missing (${errnoCode(err) ?? errorMessage(err)})`;
  }
  if (e.minSize !== undefined) {
    if (!st.isFile()) return "expected a file";
    if (st.size < e.minSize) return `${st.size} bytes, expected at least ${e.minSize}`;
  }
  if (e.minFiles !== undefined) {
    if (!st.isDirectory()) return "expected a directory";
    const n = await countFiles(path);
    if (n < e.minFiles) return `${n} files below it, expected at least ${e.minFiles}`;
  }
  return undefined;
}

async function countFiles(dir: string): Promise<number> {
  let n = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) n += await countFiles(join(dir, entry.name));
    else if (entry.isFile()) n++;
  }
  return n;
}

async function runCommand(
  v: Extract<DrillValidator, { type: "command" }>,
  ctx: ValidatorContext,
): Promise<Omit<ValidatorOutcome, "name" | "kind" | "durationMs">> {
  const env = childEnv(ctx.env, {
    set: { BULWARK_SANDBOX: ctx.sandbox, BULWARK_SNAPSHOT: ctx.snapshot.id, BULWARK_DATASET: ctx.dataset },
  });
  const [file, ...args] = ctx.isolation.wrap(v.command);
  const child = spawn(file!, args, {
    cwd: ctx.sandbox,
    env,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  // Standard output and error together, as a user would see them in a terminal.
  const output = new Tail();
  child.stdout.on("data", (chunk: Buffer) => output.push(chunk));
  child.stderr.on("data", (chunk: Buffer) => output.push(chunk));
  const abort = (): void => killTree(child, "SIGKILL");
  ctx.signal?.addEventListener("abort", abort, { once: true });
  // An interrupted drill exits at once (the CLI's Ctrl-C): what the command started must not outlive it.
  process.once("exit", abort);
  try {
    const exit = await waitForExit(child, v.timeoutMs);
    const text = output.toString().trimEnd();
    if (succeeded(exit)) return { ok: true, message: "exited with code 0", output: text };
    const last = text.split("\n").pop() ?? "";
    return {
      ok: false,
      message: `${describeExit(exit, v.timeoutMs)}${last ? `: ${last}` : ""}`,
      output: text,
    };
  } finally {
    ctx.signal?.removeEventListener("abort", abort);
    process.removeListener("exit", abort);
  }
}
