/**
 * `bulwark daemon` (issue 14, docs/design.md §25): runs the config's scheduled work by the same operations as
 * the CLI, records it in the catalog, and keeps the state the API and `/metrics` read.
 *
 * Tasks come from the config (`tasksOf`): every job with a `schedule` is `job:NAME` and touches its primary
 * and copies. The scheduler (./scheduler.ts) decides what is due: on time, never a task beside itself,
 * catch-up of a run missed while the daemon was down (from the catalog's last start), retries with backoff,
 * at most `targetConcurrency` runs per target. This module only waits for the next wake-up, starts what is
 * due and tells the scheduler how it ended.
 *
 * `reload(config)` swaps the config: running tasks finish with the config they started with; `stop()` ends
 * the scheduling, gives running tasks a grace to finish, and then closes what they left open in the catalog
 * as failed ("interrupted: the daemon stopped"); the repositories stay consistent whatever is cut short
 * (docs/design.md §14), and the CLI releases the locks before the process exits.
 */
import { hostname as osHostname } from "node:os";

import type { BulwarkConfig } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import { errorMessage } from "../core/errors.js";
import { emitMessage, fanOut, type BulwarkEvent, type EventSink } from "../core/events.js";
import { catalogRecorder, type RecordingCatalog } from "../ops/catalog-recorder.js";
import { runJob, type JobResult } from "../ops/run-job.js";
import { scrub, type TargetAccess } from "../ops/targets.js";
import type { Catalog } from "../catalog/catalog.js";
import { parseSchedule } from "../config/schedule.js";
import { Scheduler, type Due, type Task, type TaskState } from "./scheduler.js";

export type DaemonStore = RecordingCatalog & Pick<Catalog, "runs">;

export interface DaemonInput {
  config: BulwarkConfig;
  access: TargetAccess;
  clock: Clock;
  store: DaemonStore;
  /** The daemon's own log: what started, ended, failed (the CLI prints it). */
  events?: EventSink;
  hostname?: string;
}

/** A task as `daemon status` and the API show it. */
export interface TaskStatus extends TaskState {
  kind: "job";
  name: string;
  schedule: string;
  targets: string[];
}

export interface DaemonStatus {
  started: string;
  /** The config the daemon runs (its last successful load). */
  configLoaded: string;
  tasks: TaskStatus[];
  /** The last runs that ended, newest first. */
  recent: {
    id: string;
    reason: Due["reason"];
    started: string;
    ended: string;
    ok: boolean;
    message: string;
  }[];
}

/** The scheduled tasks of a config (see the module header). */
export function tasksOf(config: BulwarkConfig): { task: Task; schedule: string }[] {
  const out: { task: Task; schedule: string }[] = [];
  for (const job of Object.values(config.jobs)) {
    if (job.schedule === undefined) continue;
    out.push({
      task: {
        id: `job:${job.name}`,
        schedule: parseSchedule(job.schedule, config.daemon.timezone),
        targets: [job.primary, ...job.copies],
      },
      schedule: job.schedule,
    });
  }
  return out;
}

const RECENT = 50;
/** The longest sleep between two looks at the scheduler: a clock jump is noticed within it. */
const MAX_SLEEP_MS = 30_000;

export class Daemon {
  private config: BulwarkConfig;
  private scheduler: Scheduler;
  private readonly clock: Clock;
  private readonly started: Date;
  private configLoaded: Date;
  private stopping = false;
  private wake: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private loopDone: Promise<void> | undefined;
  private readonly running = new Map<string, Promise<void>>();
  /** Steps started and not yet finished, by step id: closed as interrupted if the daemon stops first. */
  private readonly openSteps = new Map<string, BulwarkEvent & { type: "step-started" }>();
  private readonly recent: DaemonStatus["recent"] = [];
  private readonly record: EventSink;
  private schedules = new Map<string, string>();
  private readonly listeners = new Set<EventSink>();

  constructor(private readonly input: DaemonInput) {
    this.config = input.config;
    this.clock = input.clock;
    this.started = this.clock.now();
    this.configLoaded = this.started;
    this.record = catalogRecorder(input.store, (err) =>
      this.say("warning", `the catalog failed; runs are no longer recorded in it: ${errorMessage(err)}`),
    );
    this.scheduler = new Scheduler(this.plan(this.config), this.schedulerOptions(this.config));
  }

  /** Starts the loop; it runs until `stop()`. */
  start(): void {
    this.loopDone ??= this.loop();
    const tasks = this.scheduler.states();
    this.say(
      "info",
      tasks.length === 0
        ? "no job has a schedule: nothing to run (add schedule: to a job)"
        : `scheduling ${tasks.length} task${tasks.length === 1 ? "" : "s"}: ${tasks.map((t) => `${t.id} next ${t.next?.toISOString() ?? "now"}`).join(", ")}`,
    );
  }

  /** Takes a new config (SIGHUP): tasks keep their state by id; running ones finish with the old config. */
  reload(config: BulwarkConfig): void {
    const tasks = this.plan(config);
    this.config = config;
    this.configLoaded = this.clock.now();
    this.scheduler.setTasks(tasks);
    this.say("info", `config reloaded: ${tasks.length} scheduled task${tasks.length === 1 ? "" : "s"}`);
    this.poke();
  }

  /** Every event of the daemon and of the runs it starts, until the returned function is called. */
  subscribe(listener: EventSink): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Runs a task now (the API's trigger); false when it is already running. */
  trigger(id: string): boolean {
    const queued = this.scheduler.trigger(id);
    this.poke();
    return queued;
  }

  status(): DaemonStatus {
    return {
      started: this.started.toISOString(),
      configLoaded: this.configLoaded.toISOString(),
      tasks: this.scheduler.states().map((s) => {
        const name = s.id.slice(s.id.indexOf(":") + 1);
        const job = this.config.jobs[name];
        return {
          ...s,
          kind: "job" as const,
          name,
          schedule: this.schedules.get(s.id) ?? "",
          targets: job !== undefined ? [job.primary, ...job.copies] : [],
        };
      }),
      recent: [...this.recent],
    };
  }

  /**
   * Stops scheduling; waits up to `graceMs` for running tasks, then closes the steps they left open as
   * interrupted. Resolves when the loop has ended.
   */
  async stop(graceMs: number): Promise<{ interrupted: string[] }> {
    this.stopping = true;
    this.poke();
    await this.loopDone;
    const pending = [...this.running.values()];
    if (pending.length > 0) {
      this.say(
        "info",
        `waiting up to ${Math.round(graceMs / 1000)} s for ${[...this.running.keys()].join(", ")}`,
      );
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled(pending),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs))),
      ]);
      clearTimeout(timer);
    }
    const interrupted = [...this.running.keys()];
    for (const step of this.openSteps.values()) {
      this.record({
        ...step,
        type: "step-finished",
        time: this.clock.now(),
        status: "failed",
        error: "interrupted: the daemon stopped",
      });
    }
    this.openSteps.clear();
    if (interrupted.length > 0) this.say("warning", `interrupted: ${interrupted.join(", ")}`);
    return { interrupted };
  }

  private plan(config: BulwarkConfig): Task[] {
    const planned = tasksOf(config);
    this.schedules = new Map(planned.map((p) => [p.task.id, p.schedule]));
    return planned.map((p) => p.task);
  }

  private schedulerOptions(config: BulwarkConfig): ConstructorParameters<typeof Scheduler>[1] {
    const d = config.daemon;
    return {
      clock: this.clock,
      catchUp: d.catchUp,
      jitterMs: d.jitterMs,
      retries: d.retries,
      targetConcurrency: d.targetConcurrency,
      lastStart: (id) => {
        if (!id.startsWith("job:")) return undefined;
        const run = this.input.store.runs({ job: id.slice(4), kind: "backup", limit: 1 })[0];
        return run?.startedAt;
      },
    };
  }

  private async loop(): Promise<void> {
    while (!this.stopping) {
      for (const due of this.scheduler.due()) this.launch(due);
      const next = this.scheduler.nextWake();
      const ms =
        next === undefined
          ? MAX_SLEEP_MS
          : Math.min(MAX_SLEEP_MS, Math.max(0, next.getTime() - this.clock.now().getTime()));
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        this.timer = setTimeout(resolve, ms);
      });
      clearTimeout(this.timer);
      this.wake = undefined;
    }
  }

  private poke(): void {
    this.wake?.();
  }

  private launch(due: Due): void {
    const started = this.clock.now();
    const run = (async () => {
      let ok = false;
      let message = "";
      try {
        const outcome = await this.execute(due);
        ok = outcome.ok;
        message = outcome.message;
      } catch (err) {
        message = scrub(errorMessage(err), this.input.access.secrets ?? []);
      }
      this.scheduler.finished(due.id, ok, message);
      this.recent.unshift({
        id: due.id,
        reason: due.reason,
        started: started.toISOString(),
        ended: this.clock.now().toISOString(),
        ok,
        message,
      });
      this.recent.length = Math.min(this.recent.length, RECENT);
      this.say(ok ? "info" : "error", `${due.id} ${ok ? "finished" : "FAILED"}: ${message}`);
    })().finally(() => {
      this.running.delete(due.id);
      this.poke();
    });
    this.running.set(due.id, run);
    this.say("info", `${due.id} started (${due.reason}${due.attempt > 0 ? `, retry ${due.attempt}` : ""})`);
  }

  /** Runs one task with the config of the moment it starts. */
  private async execute(due: Due): Promise<{ ok: boolean; message: string }> {
    const config = this.config;
    const name = due.id.slice(due.id.indexOf(":") + 1);
    const result: JobResult = await runJob(config, name, {
      access: this.input.access,
      clock: this.clock,
      events: fanOut(
        (e) => this.track(e),
        this.record,
        (e) => this.publish(e),
      ),
      hostname: this.input.hostname ?? osHostname(),
    });
    const steps = [result.backup, ...result.copies, ...result.forget];
    const failed = steps.filter((s) => s.status === "failed");
    return {
      ok: result.status !== "failed",
      message:
        failed.length > 0
          ? failed.map((s) => `${s.target}: ${s.error ?? "failed"}`).join("; ")
          : `${result.status}${result.backup.snapshot !== undefined ? `, snapshot ${result.backup.snapshot.slice(0, 8)}` : ""} in ${result.durationMs} ms`,
    };
  }

  private track(e: BulwarkEvent): void {
    if (e.step === undefined) return;
    if (e.type === "step-started") this.openSteps.set(e.step, e);
    else if (e.type === "step-finished") this.openSteps.delete(e.step);
  }

  private publish(e: BulwarkEvent): void {
    for (const l of this.listeners) l(e);
  }

  private say(level: "info" | "warning" | "error", message: string): void {
    emitMessage(
      fanOut(this.input.events, (e) => this.publish(e)),
      this.clock.now(),
      level,
      message,
    );
  }
}
