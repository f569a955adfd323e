/**
 * Starting and stopping a recovered service (a runbook's `start`/`stop`, docs/design.md §24). A start command
 * is a long-running process: it is spawned in its own process group (in the drill's network namespace when
 * there is one), with the scrubbed environment plus what the runbook names, its output appended to a log
 * file, and left running; `stop` runs the service's stop command if it has one, then ends the group (SIGTERM,
 * SIGKILL after a grace). An exit handler kills every group still running should this process end first, so
 * an interrupted drill leaves no service behind. A systemd unit is started and stopped with systemctl.
 *
 * A failover's services outlive the process that started it; `dr failback` stops them from another one by
 * what the run recorded (`stopRecordedService`): the group's pid and the leader's start time, so a pid the
 * system has since given to another program is never signalled.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";

import type { CommandSpec, RunbookService } from "../config/types.js";
import { childEnv, KILL_GRACE_MS, killTree } from "../sources/process.js";
import { inNetns, runCommandSpec } from "./health.js";

export interface RunningService {
  name: string;
  /** The process group leader's pid (undefined for a systemd unit). */
  pid?: number;
  /** When the leader started, in clock ticks since boot (/proc/PID/stat): tells the process from a reused pid. */
  startTicks?: number;
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
    const ticks = child.pid !== undefined ? processStartTicks(child.pid) : undefined;
    return {
      name: service.name,
      ...(child.pid !== undefined ? { pid: child.pid } : {}),
      ...(ticks !== undefined ? { startTicks: ticks } : {}),
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

/** When a process started, in clock ticks since boot (field 22 of /proc/PID/stat); undefined when gone. */
export function processStartTicks(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) is in parentheses and may hold spaces: count fields after its end.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[19]);
    return Number.isFinite(ticks) ? ticks : undefined;
  } catch {
    return undefined;
  }
}

/** A service another process started and left running, as its run recorded it. */
export interface RecordedService {
  pid?: number;
  startTicks?: number;
}

/**
 * Stops a service a failover left running (see the module header): a systemd unit with systemctl; otherwise
 * the service's stop command if it has one, then its process group ended (SIGTERM, SIGKILL after a grace).
 * Returns what was done, for the timeline; throws when the stop command or systemctl fails.
 */
export async function stopRecordedService(
  service: RunbookService,
  recorded: RecordedService | undefined,
  ctx: Pick<StartContext, "env" | "vars" | "stopTimeoutMs">,
): Promise<string> {
  const timeoutMs = ctx.stopTimeoutMs ?? 60_000;
  if (service.start?.kind === "systemd" || service.stop?.kind === "systemd") {
    const unit =
      service.stop?.kind === "systemd" ? service.stop.unit : (service.start as { unit: string }).unit;
    const r = await runCommandSpec(
      { command: ["systemctl", "stop", unit], passEnv: [], setEnv: {} },
      { env: childEnv(ctx.env), timeoutMs },
    );
    if (!r.ok) throw new Error(`systemctl stop ${unit}: ${r.message}`);
    return `stopped unit ${unit}`;
  }
  const said: string[] = [];
  if (service.stop?.kind === "command") {
    const r = await runCommandSpec(service.stop, { env: serviceEnv(service.stop, ctx), timeoutMs });
    if (!r.ok) throw new Error(`the stop command of ${service.name}: ${r.message}`);
    said.push("stop command ran");
  }
  const pid = recorded?.pid;
  if (pid === undefined) return said.length > 0 ? said.join(", ") : "nothing was started";
  const ticks = processStartTicks(pid);
  if (ticks !== undefined && recorded?.startTicks !== undefined && ticks !== recorded.startTicks) {
    said.push(`pid ${pid} is now another program: not signalled`);
    return said.join(", ");
  }
  if (!groupAlive(pid)) {
    said.push(`pid ${pid} was not running`);
    return said.join(", ");
  }
  signalGroup(pid, "SIGTERM");
  // Polled, not timed: a grace of KILL_GRACE_MS in steps of 50 ms.
  for (let i = 0; i < KILL_GRACE_MS / 50 && groupAlive(pid); i++) await new Promise((r) => setTimeout(r, 50));
  const forced = groupAlive(pid);
  if (forced) signalGroup(pid, "SIGKILL");
  for (let i = 0; i < 100 && groupAlive(pid); i++) await new Promise((r) => setTimeout(r, 20));
  said.push(`process group ${pid} ${forced ? "killed (it ignored SIGTERM)" : "stopped"}`);
  return said.join(", ");
}

function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, but is not ours to signal.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // gone meanwhile
  }
}
