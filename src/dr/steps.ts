/**
 * Runbook steps (a runbook's or service's `before:`/`after:`, docs/design.md §24): what an operator would
 * otherwise do by hand around the restores, made repeatable and timed.
 *
 *  1. In a drill, a step with `inDrill: skip` is skipped without running (approvals and notifications
 *     default to skip: a drill must not page anyone or wait for a human).
 *  2. command: the program with a scrubbed environment (childEnv: its `env:` names, its `setEnv`, then
 *     BULWARK_DR_STEP and the caller's `vars` such as BULWARK_DR_RUN), in its own process group, killed
 *     after `timeoutMs`; up to 1 + `retries` attempts, RETRY_PAUSE_MS apart; exit 0 passes.
 *  3. wait: sleeps `ms`.
 *  4. approval: asks `approve`; "pending" means the caller persists the run and waits for
 *     `bulwark dr approve RUN STEP` (this module never blocks on a human itself).
 *  5. notify: runs its command (the message in BULWARK_DR_MESSAGE) and/or hands the message to `notify`.
 *
 * A step never throws: every failure is its outcome. Its `critical` flag is reported back unchanged: the
 * orchestrator, not the step, decides whether a failure stops the runbook.
 */
import type { Clock } from "../core/clock.js";
import type { CommandSpec, RunbookStep } from "../config/types.js";
import { errorMessage } from "../core/errors.js";
import { childEnv } from "../sources/process.js";
import { retriesOf, runCommandSpec, sleepUnlessAborted, type CommandRun } from "./health.js";

export type ApprovalAnswer = "approved" | "rejected" | "pending";

export interface StepContext {
  clock: Clock;
  /** Where programs' variables come from (scrubbed by childEnv: only what the step names passes). */
  env: Readonly<Record<string, string | undefined>>;
  /** A drill (`dr drill`): steps with `inDrill: skip` are skipped. */
  drill: boolean;
  /** Asked for an approval step: "pending" leaves the step pending (the caller waits for `dr approve`). */
  approve: (step: RunbookStep) => Promise<ApprovalAnswer>;
  /** Delivers a notify step's message (the daemon's alert channels, the CLI's output). */
  notify?: (message: string) => Promise<void>;
  /** A named network namespace (`ip netns`) commands run in. */
  netns?: string;
  signal?: AbortSignal;
  /** How to wait (wait steps, the pause between retries; default: a timer, cut short by `signal`). */
  sleep?: (ms: number) => Promise<void>;
  /** Set for step commands (BULWARK_DR_RUN, sandbox directories, ...); BULWARK_DR_STEP is set here. */
  vars?: Readonly<Record<string, string>>;
}

export interface StepOutcome {
  name: string;
  type: RunbookStep["type"];
  outcome: "passed" | "failed" | "skipped" | "pending";
  /** The step's flag, unchanged: a failed critical step stops the runbook (the caller's decision). */
  critical: boolean;
  /** Commands run (0 for a skipped step, 1 for wait, approval and a notifier without a command). */
  attempts: number;
  startedAt: string;
  endedAt: string;
  durationMs: number;
  /** One line: what happened, or what failed and how. */
  message: string;
  /** A command's output tail (of its last attempt). */
  output?: string;
}

/** Between attempts of a failed command step: long enough for a service that is just starting. */
export const RETRY_PAUSE_MS = 1000;

type Result = Pick<StepOutcome, "outcome" | "attempts" | "message"> & { output?: string };

/** Runs `step` (see the module header). Never throws. */
export async function runStep(step: RunbookStep, ctx: StepContext): Promise<StepOutcome> {
  const startedAt = ctx.clock.now();
  let r: Result;
  try {
    r = await runOne(step, ctx);
  } catch (err) {
    r = { outcome: "failed", attempts: 0, message: errorMessage(err) };
  }
  const endedAt = ctx.clock.now();
  return {
    name: step.name,
    type: step.type,
    outcome: r.outcome,
    critical: step.critical,
    attempts: r.attempts,
    startedAt: startedAt.toISOString(),
    endedAt: endedAt.toISOString(),
    durationMs: endedAt.getTime() - startedAt.getTime(),
    message: r.message,
    ...(r.output !== undefined ? { output: r.output } : {}),
  };
}

async function runOne(step: RunbookStep, ctx: StepContext): Promise<Result> {
  if (ctx.drill && step.inDrill === "skip")
    return { outcome: "skipped", attempts: 0, message: "skipped in a drill (inDrill: skip)" };
  if (ctx.signal?.aborted) return { outcome: "failed", attempts: 0, message: "interrupted before it ran" };
  switch (step.type) {
    case "command":
      return withRetries(step, step, ctx, {}, "");
    case "wait":
      await sleep(step.ms, ctx);
      if (ctx.signal?.aborted)
        return { outcome: "failed", attempts: 1, message: "interrupted while waiting" };
      return { outcome: "passed", attempts: 1, message: `waited ${seconds(step.ms)}` };
    case "approval": {
      const answer = await ctx.approve(step);
      switch (answer) {
        case "approved":
          return { outcome: "passed", attempts: 1, message: "approved" };
        case "rejected":
          return { outcome: "failed", attempts: 1, message: "rejected" };
        case "pending":
          return {
            outcome: "pending",
            attempts: 1,
            message: `waiting for approval (bulwark dr approve RUN ${step.name}): ${step.message}`,
          };
      }
      return { outcome: "failed", attempts: 1, message: `unknown approval answer ${JSON.stringify(answer)}` };
    }
    case "notify": {
      const { command } = step;
      const parts: string[] = [];
      let failed = false;
      let commandResult: Result | undefined;
      if (command !== undefined) {
        commandResult = await withRetries(
          step,
          command,
          ctx,
          { BULWARK_DR_MESSAGE: step.message },
          "the notify command ",
        );
        failed = commandResult.outcome !== "passed";
        parts.push(commandResult.message);
      }
      if (ctx.notify) {
        try {
          await ctx.notify(step.message);
          parts.push("message delivered");
        } catch (err) {
          failed = true;
          parts.push(`the message could not be delivered: ${errorMessage(err)}`);
        }
      }
      if (parts.length === 0)
        return {
          outcome: "skipped",
          attempts: 0,
          message: "no notify command and no notifier: nothing sent",
        };
      return {
        outcome: failed ? "failed" : "passed",
        attempts: commandResult?.attempts ?? 1,
        message: parts.join("; "),
        ...(commandResult?.output !== undefined ? { output: commandResult.output } : {}),
      };
    }
  }
}

/** A command step (or a notify step's command): 1 + retries attempts, RETRY_PAUSE_MS apart. */
async function withRetries(
  step: RunbookStep,
  spec: CommandSpec,
  ctx: StepContext,
  extra: Readonly<Record<string, string>>,
  what: string,
): Promise<Result> {
  const env = childEnv(ctx.env, {
    pass: spec.passEnv,
    // Bulwark's own variables last: a config's setEnv cannot pretend to be another step or run.
    set: { ...spec.setEnv, ...ctx.vars, ...extra, BULWARK_DR_STEP: step.name },
  });
  const max = 1 + retriesOf(step.retries);
  let attempts = 0;
  let run: CommandRun | undefined;
  while (attempts < max) {
    if (attempts > 0) {
      await sleep(RETRY_PAUSE_MS, ctx);
      if (ctx.signal?.aborted) break;
    }
    attempts++;
    run = await runCommandSpec(spec, {
      env,
      timeoutMs: step.timeoutMs,
      ...(ctx.netns !== undefined ? { netns: ctx.netns } : {}),
      ...(ctx.signal ? { signal: ctx.signal } : {}),
    });
    if (run.ok || ctx.signal?.aborted) break;
  }
  if (run === undefined) return { outcome: "failed", attempts, message: "interrupted before it ran" };
  const tries = attempts > 1 ? (run.ok ? ` (attempt ${attempts})` : ` (after ${attempts} attempts)`) : "";
  const interrupted = !run.ok && ctx.signal?.aborted ? "interrupted: " : "";
  return {
    outcome: run.ok ? "passed" : "failed",
    attempts,
    message: `${interrupted}${what}${run.message}${tries}`,
    ...(run.output !== "" ? { output: run.output } : {}),
  };
}

function sleep(ms: number, ctx: StepContext): Promise<void> {
  if (ms <= 0) return Promise.resolve();
  return ctx.sleep ? ctx.sleep(ms) : sleepUnlessAborted(ms, ctx.signal);
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}
