/**
 * Hooks: a `before` command run ahead of a source's backup (freeze a file system, take an LVM or btrfs
 * snapshot) and an `after` command run once it ends (thaw, release).
 *
 * 1. Run `before`. If it fails or runs past its timeout, the work is not done.
 * 2. Run the work.
 * 3. Run `after`: always, also when `before` or the work failed (a half-done freeze must be thawed).
 *    It learns the outcome from BULWARK_HOOK_RESULT ("success" or "failure").
 * 4. The first failure is the error (with a failing `after` named too); a failing `after` alone fails the
 *    run as well: a file system left frozen must not go unnoticed.
 * Hooks run with `sh -c` in their own process group; a timeout kills the group (SIGTERM, then SIGKILL).
 * Their environment is scrubbed (childEnv, ./process.ts): PATH, HOME, locale and the like, the variables
 * the config names (`passEnv`), and Bulwark's own (BULWARK_HOOK, BULWARK_HOOK_RESULT, `vars`); never the
 * repository password, tokens or cloud keys of this process.
 */
import { spawn } from "node:child_process";
import { BulwarkError, errorMessage } from "../core/errors.js";
import { childEnv, exitError, succeeded, trackChild, waitForExit } from "./process.js";

export interface Hook {
  /** A shell command. */
  command: string;
  /** Default: DEFAULT_HOOK_TIMEOUT_MS. */
  timeoutMs?: number;
}

export interface Hooks {
  before?: Hook;
  after?: Hook;
  /** The environment the hooks' is taken from, scrubbed by childEnv (default: this process's). */
  env?: Readonly<Record<string, string | undefined>>;
  /** Variables of `env` passed through by name (the config's `env:` list). */
  passEnv?: readonly string[];
  /** Set for the hooks (BULWARK_DATASET, BULWARK_SOURCE). */
  vars?: Readonly<Record<string, string>>;
  /** Names the hooks in messages, e.g. the source ("hook before of source shop"). */
  label?: string;
  /** Receives each hook's standard output and error lines (default: dropped; stderr is in errors). */
  log?: (line: string) => void;
}

export const DEFAULT_HOOK_TIMEOUT_MS = 5 * 60 * 1000;

/** Runs `fn` between the hooks (see the module comment); resolves to what `fn` resolved to. */
export function withHooks<T>(hooks: Hooks, fn: () => Promise<T>): Promise<T> {
  return withNestedHooks([hooks], fn);
}

/**
 * Runs `fn` inside several sets of hooks, the first outermost (a dataset's, then each source's): every
 * `before` in order, `fn`, then every `after` in reverse order. A set is entered when its `before` is started
 * (or reached, when it has none), and the `after` of every entered set runs, also when `fn` or a later
 * `before` failed; a failing `before` stops the ones after it and `fn`. Errors as in withHooks: the first
 * failure is thrown, with failing `after`s named after it.
 */
export async function withNestedHooks<T>(sets: readonly Hooks[], fn: () => Promise<T>): Promise<T> {
  let failure: { error: unknown } | undefined;
  let value: T | undefined;
  const entered: Hooks[] = [];
  try {
    for (const hooks of sets) {
      entered.push(hooks);
      if (hooks.before) await runHook("before", hooks.before, hooks, {});
    }
    value = await fn();
  } catch (err) {
    failure = { error: err };
  }
  const afterErrors: unknown[] = [];
  for (const hooks of entered.reverse()) {
    if (!hooks.after) continue;
    try {
      await runHook("after", hooks.after, hooks, {
        BULWARK_HOOK_RESULT: failure || afterErrors.length > 0 ? "failure" : "success",
      });
    } catch (afterError) {
      afterErrors.push(afterError);
    }
  }
  const first = failure ? failure.error : afterErrors.shift();
  if (first === undefined && !failure) return value as T;
  if (afterErrors.length === 0) throw first;
  throw new BulwarkError("IO", [first, ...afterErrors].map(errorMessage).join("\nand then: "), {
    cause: first,
  });
}

/** Runs one hook; throws a message naming the hook, its command and how it ended. */
export async function runHook(
  which: "before" | "after",
  hook: Hook,
  hooks: Pick<Hooks, "env" | "passEnv" | "vars" | "label" | "log">,
  extraEnv: Record<string, string>,
): Promise<void> {
  const timeoutMs = hook.timeoutMs ?? DEFAULT_HOOK_TIMEOUT_MS;
  const child = trackChild(
    spawn("sh", ["-c", hook.command], {
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
      env: childEnv(hooks.env ?? process.env, {
        ...(hooks.passEnv ? { pass: hooks.passEnv } : {}),
        set: { ...hooks.vars, BULWARK_HOOK: which, ...extraEnv },
      }),
    }),
  );
  if (hooks.log) {
    const log = hooks.log;
    const where = hooks.label ? ` of ${hooks.label}` : "";
    const forward = (chunk: Buffer): void => {
      for (const line of chunk.toString("utf8").split("\n"))
        if (line !== "") log(`hook ${which}${where}: ${line}`);
    };
    child.stdout.on("data", forward);
    child.stderr.on("data", forward);
  } else {
    child.stdout.resume();
  }
  const exit = await waitForExit(child, timeoutMs);
  if (!succeeded(exit)) {
    const where = hooks.label ? ` of ${hooks.label}` : "";
    throw exitError(`hook ${which}${where} (\`${hook.command}\`)`, exit, timeoutMs);
  }
}
