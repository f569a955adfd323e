/**
 * Starting and stopping a recovered service (a runbook's `start`/`stop`, docs/design.md §24). A start command
 * is a long-running process: it is spawned in its own process group (in the drill's network namespace when
 * there is one), with the scrubbed environment plus what the runbook names, its output appended to a log
 * file, and left running; `stop` runs the service's stop command if it has one, then ends the group (SIGTERM,
 * SIGKILL after a grace). An exit handler kills every group still running should this process end first, so
 * an interrupted drill leaves no service behind. A systemd unit is started and stopped with systemctl.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync } from "node:fs";

import type { CommandSpec, RunbookService } from "../config/types.js";
import { childEnv, KILL_GRACE_MS, killTree } from "../sources/process.js";
import { inNetns, runCommandSpec } from "./health.js";

export interface RunningService {
  name: string;
  /** The process group leader's pid (undefined for a systemd unit). */
  pid?: number;
  /** Why it stopped by itself, if it did (a crash right after start shows here). */
  exited(): string | undefined;
  stop(): Promise<void>;
}

export interface StartContext {
  env: Readonly<Record<string, string | undefined>>;
  /** Variables Bulwark sets for the service (BULWARK_DR_*, port variables). */
  vars: Record<string, string>;
  netns?: string;
  /** The file the service's output is appended to. */
  log: string;
  /** How long the stop command may take (default 60 s). */
  stopTimeoutMs?: number;
  /**
   * A failover's service: it keeps running when this process ends (it is the recovered production), so no
   * exit handler kills it and this process does not wait for it.
   */
  persistent?: boolean;
}

const running = new Set<ChildProcess>();
let handlerInstalled = false;

export function serviceEnv(spec: CommandSpec, ctx: Pick<StartContext, "env" | "vars">): NodeJS.ProcessEnv {
  return childEnv(ctx.env, { pass: spec.passEnv, set: { ...spec.setEnv, ...ctx.vars } });
}

/** Starts a service (see the module header). Throws only when the program cannot be spawned at all. */
export async function startService(service: RunbookService, ctx: StartContext): Promise<RunningService> {
  const start = service.start;
  if (start === undefined)
    return { name: service.name, exited: () => undefined, stop: () => Promise.resolve() };
  if (start.kind === "systemd") {
    const unit = start.unit;
    const r = await runCommandSpec(
      { command: ["systemctl", "start", unit], passEnv: [], setEnv: {} },
      { env: childEnv(ctx.env), timeoutMs: 120_000 },
    );
    if (!r.ok) throw new Error(`systemctl start ${unit}: ${r.message}`);
    return {
      name: service.name,
      exited: () => undefined,
      stop: async () => {
        await runCommandSpec(
          { command: ["systemctl", "stop", unit], passEnv: [], setEnv: {} },
          { env: childEnv(ctx.env), timeoutMs: ctx.stopTimeoutMs ?? 60_000 },
        );
      },
    };
  }
  const argv = inNetns(ctx.netns, start.command);
  const out = openSync(ctx.log, "a", 0o600);
  let child: ChildProcess;
  try {
    child = spawn(argv[0]!, argv.slice(1), {
      env: serviceEnv(start, ctx),
      stdio: ["ignore", out, out],
      detached: true,
      ...(start.cwd !== undefined ? { cwd: start.cwd } : {}),
    });
  } finally {
    closeSync(out);
  }
  const spawned = await new Promise<Error | undefined>((resolve) => {
    child.once("spawn", () => resolve(undefined));
    child.once("error", (err) => resolve(err));
  });
  if (spawned !== undefined) throw new Error(`${start.command[0]}: ${spawned.message}`);
  if (ctx.persistent === true) {
    child.unref();
    return {
      name: service.name,
      ...(child.pid !== undefined ? { pid: child.pid } : {}),
      exited: () =>
        child.exitCode !== null || child.signalCode !== null
          ? `exited with code ${child.exitCode ?? child.signalCode}`
          : undefined,
      stop: () => Promise.resolve(),
    };
  }
  if (!handlerInstalled) {
    handlerInstalled = true;
    process.once("exit", () => {
      for (const c of running) killTree(c, "SIGKILL");
    });
  }
  running.add(child);
  let exit: string | undefined;
  const done = new Promise<void>((resolve) => {
    child.once("exit", (code, signal) => {
      exit = signal !== null ? `killed by ${signal}` : `exited with code ${code}`;
      resolve();
    });
  });
  const stopSpec = service.stop?.kind === "command" ? service.stop : undefined;
  return {
    name: service.name,
    ...(child.pid !== undefined ? { pid: child.pid } : {}),
    exited: () => exit,
    stop: async () => {
      if (exit !== undefined) {
        killTree(child, "SIGKILL"); // what the leader left in its group
        running.delete(child);
        return;
      }
      if (stopSpec !== undefined) {
        await runCommandSpec(stopSpec, {
          env: serviceEnv(stopSpec, ctx),
          timeoutMs: ctx.stopTimeoutMs ?? 60_000,
          ...(ctx.netns !== undefined ? { netns: ctx.netns } : {}),
        });
      }
      if (exit === undefined) killTree(child, "SIGTERM");
      const grace = new Promise<void>((resolve) => setTimeout(resolve, KILL_GRACE_MS).unref());
      await Promise.race([done, grace]);
      // Also when the leader went at SIGTERM: nothing of its group may outlive the drill.
      killTree(child, "SIGKILL");
      await done;
      running.delete(child);
    },
  };
}
