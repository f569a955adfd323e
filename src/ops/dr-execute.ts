/**
 * Running a runbook's plan (docs/design.md §24): the one sequence behind `dr drill` (./dr-drill.ts) and
 * `dr failover` / `dr resume` (./dr-failover.ts), which differ only in where things go (the `ExecMode`).
 *
 * The runbook's `before` steps; then wave by wave, the services of a wave side by side: each one's `before`
 * steps, its restores from the copies the plan chose, its start, its health checks in order, its `after`
 * steps; then the runbook's `after` steps. A failed restore, start, check or critical step fails the service;
 * the wave completes and no later wave starts. Every unit of work has a stable id (`db/restore/0`,
 * `web/health/1`, `after/0`); with `progress`, a unit that already passed (or was skipped) is not run again,
 * every outcome is saved as it happens, and an approval the caller has not given leaves the unit waiting.
 */
import type { BulwarkConfig, HealthCheck, Runbook, RunbookService, RunbookStep } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import { errorMessage } from "../core/errors.js";
import { emitMessage, type EventSink } from "../core/events.js";
import { formatBytes } from "../core/format.js";
import { remapPorts, runHealthCheck } from "../dr/health.js";
import type { RunningService } from "../dr/service.js";
import { runStep } from "../dr/steps.js";
import type { DrPlan } from "./dr-plan.js";
import { readSecret } from "./secrets.js";
import { scrub } from "./targets.js";

export interface TimelineEntry {
  at: string;
  /** Since the run started. */
  offsetMs: number;
  /** The unit's id (see the module header). */
  id?: string;
  wave?: number;
  service?: string;
  kind: "step" | "restore" | "start" | "health" | "stop" | "backup";
  name: string;
  outcome: "passed" | "failed" | "skipped" | "waiting";
  durationMs: number;
  message: string;
  output?: string;
  /** A restore's dataset and size: what `dr plan` scales its next estimate by. */
  dataset?: string;
  bytes?: number;
}

export interface RunFailure {
  id?: string;
  service?: string;
  step: string;
  message: string;
  output?: string;
  next: string;
}

export type UnitStatus = "passed" | "failed" | "skipped" | "running" | "waiting";

/** Saved progress of a run (a failover's; a drill has none). */
export interface RunProgress {
  status(id: string): UnitStatus | undefined;
  mark(id: string, status: UnitStatus): void;
  /** Whether `bulwark dr approve RUN ID` approved the unit. */
  approved(id: string): boolean;
}

/** A unit a mode runs before the runbook (a failback's stops and backups), with the same saved progress. */
export interface PreludeUnit {
  id: string;
  kind: "stop" | "backup";
  name: string;
  service?: string;
  dataset?: string;
  run: () => Promise<{ message: string; bytes?: number }>;
  /** What to do when it fails, before the command that runs it again. */
  next: string;
}

/** Where a mode puts things. */
export interface ExecMode {
  name: "drill" | "failover" | "failback";
  /** Units run first, in order; one that fails stops the run. */
  prelude?: PreludeUnit[];
  /** Paths as the services see them (a drill's sandbox; identity for a failover). */
  rewrite: (s: string) => string;
  netns?: string;
  portMap: ReadonlyMap<number, number>;
  vars: (service?: string) => Record<string, string>;
  /** Restores one restore entry; returns the bytes restored. `retry`: the unit was interrupted before. */
  restore: (service: RunbookService, index: number, retry: boolean) => Promise<number>;
  /** Starts a service (already rewritten); the handle is kept for checks and teardown. */
  start: (service: RunbookService) => Promise<RunningService>;
  /** Where a service's output can be read, for messages. */
  logOf: (service: string) => string;
  /** The command that runs the runbook again, for messages ("bulwark dr drill shop"). */
  again: string;
}

export interface ExecInput {
  config: BulwarkConfig;
  runbook: Runbook;
  plan: DrPlan;
  clock: Clock;
  env: Readonly<Record<string, string | undefined>>;
  events?: EventSink;
  signal?: AbortSignal;
  /** Approve approval steps without asking (`--yes`). */
  approveAll: boolean;
  /** Secrets read on the way (passwords), scrubbed from messages. */
  secrets: string[];
  progress?: RunProgress;
  /** Units failed before that are now skipped (`--skip-failed`), or run again (`--retry-failed`). */
  onFailedBefore?: "retry" | "skip";
  /** When the run started (offsets of the timeline); `timeline` continues an earlier one. */
  started: Date;
  timeline: TimelineEntry[];
  running: RunningService[];
}

export interface ExecOutcome {
  ok: boolean;
  failed?: RunFailure;
  /** The approval the run waits for. */
  waiting?: { id: string; step: string; message: string };
}

export async function executeRunbook(input: ExecInput, mode: ExecMode): Promise<ExecOutcome> {
  const { clock, runbook, plan } = input;
  let failed: RunFailure | undefined;
  let waiting: ExecOutcome["waiting"];
  const record = (e: Omit<TimelineEntry, "at" | "offsetMs">): void => {
    input.timeline.push({
      at: clock.now().toISOString(),
      offsetMs: clock.now().getTime() - input.started.getTime(),
      ...e,
    });
  };
  const fail = (f: RunFailure): void => {
    failed ??= f;
  };
  const aborted = (): boolean => input.signal?.aborted === true;
  const clean = (m: string): string => scrub(m, input.secrets);

  /** Whether the unit must run; marks it running. A unit passed or skipped before is done. */
  const begin = (id: string): { run: boolean; retry: boolean } => {
    const before = input.progress?.status(id);
    if (before === "passed" || before === "skipped") return { run: false, retry: false };
    if (before === "failed" && input.onFailedBefore === "skip") {
      input.progress?.mark(id, "skipped");
      record({
        id,
        kind: "step",
        name: id,
        outcome: "skipped",
        durationMs: 0,
        message: "failed before; skipped (--skip-failed)",
      });
      return { run: false, retry: false };
    }
    input.progress?.mark(id, "running");
    return { run: true, retry: before === "running" || before === "failed" };
  };
  const end = (id: string, status: UnitStatus): void => input.progress?.mark(id, status);
  /** Ends a unit: its status saved, then its timeline entry recorded. */
  const conclude = (e: Omit<TimelineEntry, "at" | "offsetMs"> & { id: string }): void => {
    end(e.id, e.outcome);
    record(e);
  };

  const steps = async (
    list: RunbookStep[],
    prefix: string,
    wave?: number,
    service?: string,
  ): Promise<boolean> => {
    for (const [i, step] of list.entries()) {
      if (aborted()) return false;
      const id = `${prefix}/${i}`;
      if (!begin(id).run) continue;
      const outcome = await runStep(rewriteStep(step, mode.rewrite), {
        clock,
        env: input.env,
        drill: mode.name === "drill",
        approve: () =>
          Promise.resolve(
            input.approveAll || input.progress?.approved(id) === true
              ? "approved"
              : input.progress !== undefined
                ? "pending"
                : "rejected",
          ),
        ...(mode.netns !== undefined ? { netns: mode.netns } : {}),
        ...(input.signal !== undefined ? { signal: input.signal } : {}),
        vars: mode.vars(service),
      });
      const at = {
        id,
        ...(wave !== undefined ? { wave } : {}),
        ...(service !== undefined ? { service } : {}),
      };
      if (outcome.outcome === "pending") {
        conclude({
          ...at,
          kind: "step",
          name: step.name,
          outcome: "waiting",
          durationMs: outcome.durationMs,
          message: outcome.message,
        });
        waiting ??= {
          id,
          step: step.name,
          message: step.type === "approval" ? step.message : outcome.message,
        };
        return false;
      }
      const status = outcome.outcome;
      conclude({
        ...at,
        kind: "step",
        name: step.name,
        outcome: status,
        durationMs: outcome.durationMs,
        message:
          step.type === "approval" && status === "failed" && mode.name === "drill"
            ? `${outcome.message} (a drill does not wait for approvals: mark it inDrill: skip, or pass --yes)`
            : outcome.message,
        ...(outcome.output !== undefined ? { output: outcome.output } : {}),
      });
      if (status === "failed" && step.critical) {
        fail({
          ...at,
          step: step.name,
          message: outcome.message,
          ...(outcome.output !== undefined ? { output: outcome.output } : {}),
          next: `fix step "${step.name}"${service !== undefined ? ` of ${service}` : ""} (or make it critical: false), then ${mode.again}`,
        });
        return false;
      }
    }
    return true;
  };

  const recoverService = async (service: RunbookService, wave: number): Promise<boolean> => {
    const name = service.name;
    if (!(await steps(service.before, `${name}/before`, wave, name))) return false;
    for (const [i, r] of service.restore.entries()) {
      if (aborted()) return false;
      const id = `${name}/restore/${i}`;
      const { run, retry } = begin(id);
      if (!run) continue;
      const choice = chosenFor(plan, name, r.dataset);
      const t0 = clock.now().getTime();
      const what = `restore ${r.dataset}${r.source !== undefined ? `/${r.source}` : ""} from ${choice?.target ?? "?"}`;
      try {
        const bytes = await mode.restore(service, i, retry);
        conclude({
          id,
          wave,
          service: name,
          kind: "restore",
          name: what,
          dataset: r.dataset,
          bytes,
          outcome: "passed",
          durationMs: clock.now().getTime() - t0,
          message: `snapshot ${choice?.snapshot?.slice(0, 8) ?? "?"}, ${formatBytes(bytes)}`,
        });
      } catch (err) {
        const message = clean(errorMessage(err));
        conclude({
          id,
          wave,
          service: name,
          kind: "restore",
          name: what,
          outcome: "failed",
          durationMs: clock.now().getTime() - t0,
          message,
        });
        fail({
          id,
          service: name,
          step: what,
          message,
          next: `check the copy (\`bulwark check -c CONFIG -r ${choice?.target ?? "TARGET"}\`) or what is in the way, then ${mode.again}`,
        });
        return false;
      }
    }
    if (service.start !== undefined) {
      const id = `${name}/start`;
      if (begin(id).run) {
        const t0 = clock.now().getTime();
        try {
          const handle = await mode.start(rewriteService(service, mode.rewrite));
          input.running.push(handle);
          conclude({
            id,
            wave,
            service: name,
            kind: "start",
            name: `start ${name}`,
            outcome: "passed",
            durationMs: clock.now().getTime() - t0,
            message: `started${handle.pid !== undefined ? ` (pid ${handle.pid})` : ""}`,
          });
        } catch (err) {
          const message = clean(errorMessage(err));
          conclude({
            id,
            wave,
            service: name,
            kind: "start",
            name: `start ${name}`,
            outcome: "failed",
            durationMs: clock.now().getTime() - t0,
            message,
          });
          fail({
            id,
            service: name,
            step: `start ${name}`,
            message,
            next: `fix the start command of ${name} (runbooks.${runbook.name}.services.${name}.start), then ${mode.again}`,
          });
          return false;
        }
      }
    }
    for (const [i, check] of service.health.entries()) {
      if (aborted()) return false;
      const id = `${name}/health/${i}`;
      if (!begin(id).run) continue;
      const outcome = await runHealthCheck(remapPorts(rewriteCheck(check, mode.rewrite), mode.portMap), {
        clock,
        env: input.env,
        readSecret: async (ref) => {
          const value = await readSecret(ref, input.env);
          input.secrets.push(value);
          return value;
        },
        ...(mode.netns !== undefined ? { netns: mode.netns } : {}),
        ...(input.signal !== undefined ? { signal: input.signal } : {}),
      });
      const exited = input.running.find((s) => s.name === name)?.exited();
      const message = outcome.ok
        ? outcome.message
        : `${outcome.message}${exited !== undefined ? ` (the service ${exited})` : ""}`;
      conclude({
        id,
        wave,
        service: name,
        kind: "health",
        name: check.name,
        outcome: outcome.ok ? "passed" : "failed",
        durationMs: outcome.durationMs,
        message,
        ...(outcome.output !== undefined ? { output: outcome.output } : {}),
      });
      if (!outcome.ok) {
        fail({
          id,
          service: name,
          step: `health ${check.name}`,
          message,
          ...(outcome.output !== undefined ? { output: outcome.output } : {}),
          next: `read the service's output (${mode.logOf(name)}), fix ${name} or its check, then ${mode.again}`,
        });
        return false;
      }
    }
    return steps(service.after, `${name}/after`, wave, name);
  };

  const prelude = async (): Promise<boolean> => {
    for (const unit of mode.prelude ?? []) {
      if (aborted()) return false;
      if (!begin(unit.id).run) continue;
      const t0 = clock.now().getTime();
      const at = {
        id: unit.id,
        kind: unit.kind,
        name: unit.name,
        ...(unit.service !== undefined ? { service: unit.service } : {}),
        ...(unit.dataset !== undefined ? { dataset: unit.dataset } : {}),
      };
      try {
        const done = await unit.run();
        conclude({
          ...at,
          outcome: "passed",
          durationMs: clock.now().getTime() - t0,
          message: done.message,
          ...(done.bytes !== undefined ? { bytes: done.bytes } : {}),
        });
      } catch (err) {
        const message = clean(errorMessage(err));
        conclude({ ...at, outcome: "failed", durationMs: clock.now().getTime() - t0, message });
        fail({
          id: unit.id,
          ...(unit.service !== undefined ? { service: unit.service } : {}),
          step: unit.name,
          message,
          next: `${unit.next}, then ${mode.again}`,
        });
        return false;
      }
    }
    return true;
  };

  let ok = (await prelude()) && (await steps(runbook.before, "before"));
  for (const wave of plan.waves) {
    if (!ok || aborted()) break;
    emitMessage(
      input.events,
      clock.now(),
      "info",
      `wave ${wave.wave}: ${wave.services.map((s) => s.name).join(", ")}`,
    );
    const results = await Promise.all(
      wave.services.map((s) => recoverService(runbook.services[s.name]!, wave.wave)),
    );
    ok = results.every(Boolean);
  }
  if (ok && !aborted()) ok = await steps(runbook.after, "after");
  if (aborted()) {
    fail({ step: "interrupted", message: `the ${mode.name} was interrupted`, next: mode.again });
    ok = false;
  }
  return {
    ok: ok && failed === undefined && waiting === undefined,
    ...(failed !== undefined ? { failed } : {}),
    ...(waiting !== undefined && failed === undefined ? { waiting } : {}),
  };
}

export function chosenFor(
  plan: DrPlan,
  service: string,
  dataset: string,
): DrPlan["waves"][number]["services"][number]["datasets"][number] | undefined {
  for (const w of plan.waves)
    for (const s of w.services) if (s.name === service) return s.datasets.find((d) => d.dataset === dataset);
  return undefined;
}

/** The datasets the plan restores, each once, with its copy, snapshot and RPO. */
export function chosenDatasets(
  plan: DrPlan,
): { dataset: string; target?: string; snapshot?: string; rpoMs?: number }[] {
  const seen = new Map<string, { dataset: string; target?: string; snapshot?: string; rpoMs?: number }>();
  for (const w of plan.waves)
    for (const s of w.services)
      for (const d of s.datasets) {
        if (seen.has(d.dataset)) continue;
        seen.set(d.dataset, {
          dataset: d.dataset,
          ...(d.target !== undefined ? { target: d.target } : {}),
          ...(d.snapshot !== undefined ? { snapshot: d.snapshot } : {}),
          ...(d.rpoMs !== undefined ? { rpoMs: d.rpoMs } : {}),
        });
      }
  return [...seen.values()];
}

function rewriteCommand<T extends { command: string[]; setEnv: Record<string, string>; cwd?: string }>(
  c: T,
  rewrite: (s: string) => string,
): T {
  return {
    ...c,
    command: c.command.map(rewrite),
    setEnv: Object.fromEntries(Object.entries(c.setEnv).map(([k, v]) => [k, rewrite(v)])),
    ...(c.cwd !== undefined ? { cwd: rewrite(c.cwd) } : {}),
  };
}

export { rewriteCommand };

function rewriteStep(step: RunbookStep, rewrite: (s: string) => string): RunbookStep {
  if (step.type === "command") return rewriteCommand(step, rewrite);
  if (step.type === "notify" && step.command !== undefined)
    return { ...step, command: rewriteCommand(step.command, rewrite) };
  return step;
}

function rewriteCheck(check: HealthCheck, rewrite: (s: string) => string): HealthCheck {
  if (check.type === "command") return rewriteCommand(check, rewrite);
  if (check.type === "sql")
    return {
      ...check,
      ...(check.sqlite !== undefined ? { sqlite: rewrite(check.sqlite) } : {}),
      ...(check.postgres !== undefined ? { postgres: rewrite(check.postgres) } : {}),
    };
  return check;
}

function rewriteService(service: RunbookService, rewrite: (s: string) => string): RunbookService {
  const control = (c: RunbookService["start"]): RunbookService["start"] =>
    c === undefined || c.kind === "systemd" ? c : rewriteCommand(c, rewrite);
  const start = control(service.start);
  const stop = control(service.stop);
  return { ...service, ...(start !== undefined ? { start } : {}), ...(stop !== undefined ? { stop } : {}) };
}
