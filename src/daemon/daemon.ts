/**
 * `bulwark daemon` (issue 14, docs/design.md §25): runs the config's scheduled work by the same operations as
 * the CLI, records it in the catalog, and keeps the state the API and `/metrics` read.
 *
 * Tasks come from the config (`tasksOf`): every job with a `schedule` is `job:NAME` and touches its primary
 * and copies; the policies' cadences add `verify:DATASET` (verification.cadence: `verifyTargets` of the
 * dataset's targets), `drill:DATASET` (drills.every: `drillDataset`) and `dr-drill:RUNBOOK` (the shortest
 * drills.runbookEvery of the policies of its datasets: `drillRunbook`), each every that long after its last
 * record in the catalog. The scheduler (./scheduler.ts) decides what is due: on time, never a task beside itself,
 * catch-up of a run missed while the daemon was down (from the catalog's last start), retries with backoff,
 * at most `targetConcurrency` runs per target. This module only waits for the next wake-up, starts what is
 * due and tells the scheduler how it ended.
 *
 * Alerts (./alerts.ts): after each run, the conditions of its job (a failed step: `run-failed:job:NAME:KIND:TARGET`),
 * the RPO watch of every dataset and copy (./rpo-watch.ts: `rpo:DATASET:TARGET` when beyond the RPO or never
 * backed up), and missed schedules (`missed:TASK`: an occurrence that passed while the task still ran or
 * waited for a target, or fell while the daemon was down) go to the Alerter, which tells each condition once
 * and its recovery once; a job's healthchecks-style pings mark its start and end. The RPO watch is also looked
 * at every minute, so a job that stopped running is noticed without one.
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
import { catalogRecorder } from "../ops/catalog-recorder.js";
import { drillRunbook } from "../ops/dr-drill.js";
import { drillDataset } from "../ops/drill.js";
import { verifyTargets } from "../ops/verify-targets.js";
import { runJob, type JobResult } from "../ops/run-job.js";
import { scrub, type TargetAccess } from "../ops/targets.js";
import type { Catalog } from "../catalog/catalog.js";
import { Alerter, type AlertCondition } from "./alerts.js";
import { describeRpo, rpoWatch } from "./rpo-watch.js";
import { parseSchedule } from "../config/schedule.js";
import { Scheduler, type Due, type Task, type TaskState } from "./scheduler.js";

/** The catalog: the daemon records runs and evidence, and reads the last of each to plan. */
export type DaemonStore = Catalog;

export interface DaemonInput {
  config: BulwarkConfig;
  access: TargetAccess;
  clock: Clock;
  store: DaemonStore;
  /** The daemon's own log: what started, ended, failed (the CLI prints it). */
  events?: EventSink;
  hostname?: string;
  /** Where the alerts' dedupe state is kept (STATE_DIR/daemon-alerts.json). */
  alertState: string;
  env: Readonly<Record<string, string | undefined>>;
}

/** A task as `daemon status` and the API show it. */
export type TaskKind = "job" | "verify" | "drill" | "dr-drill";

export interface TaskStatus extends TaskState {
  kind: TaskKind;
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
    /** The occurrence it ran for (started minus this: how late it was). */
    scheduledFor: string;
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
  const every = (id: string, text: string, ms: number, targets: string[]): void => {
    out.push({ task: { id, schedule: { kind: "every", ms }, targets }, schedule: `@every ${text}` });
  };
  for (const dataset of Object.keys(config.datasets).sort()) {
    const jobs = Object.values(config.jobs).filter((j) => j.dataset === dataset);
    const targets = [...new Set(jobs.flatMap((j) => [j.primary, ...j.copies]))];
    const policies = jobs.map((j) => config.policies[j.policy]).filter((p) => p !== undefined);
    const shortest = (pick: (p: (typeof policies)[number]) => { text: string; ms: number } | undefined) =>
      policies
        .map(pick)
        .filter((x) => x !== undefined)
        .sort((a, b) => a.ms - b.ms)[0];
    const verify = shortest((p) =>
      p.verification?.cadenceMs !== undefined
        ? { text: p.verification.cadence!, ms: p.verification.cadenceMs }
        : undefined,
    );
    if (verify !== undefined) every(`verify:${dataset}`, verify.text, verify.ms, targets);
    const drill = shortest((p) =>
      p.drills !== undefined ? { text: p.drills.every, ms: p.drills.everyMs } : undefined,
    );
    if (drill !== undefined) every(`drill:${dataset}`, drill.text, drill.ms, targets);
  }
  for (const runbook of Object.values(config.runbooks)) {
    const datasets = new Set(Object.values(runbook.services).flatMap((s) => s.restore.map((r) => r.dataset)));
    const policies = Object.values(config.jobs)
      .filter((j) => datasets.has(j.dataset))
      .map((j) => config.policies[j.policy]?.drills)
      .filter((d) => d?.runbookEveryMs !== undefined)
      .sort((a, b) => a!.runbookEveryMs! - b!.runbookEveryMs!);
    const first = policies[0];
    if (first === undefined) continue;
    const targets = [
      ...new Set(
        Object.values(config.jobs)
          .filter((j) => datasets.has(j.dataset))
          .flatMap((j) => [j.primary, ...j.copies]),
      ),
    ];
    every(`dr-drill:${runbook.name}`, first.runbookEvery!, first.runbookEveryMs!, targets);
  }
  return out;
}

/** The alert keys a task's outcome decides (a run clears what its previous one raised). */
function scopeOf(id: string): string {
  const name = id.slice(id.indexOf(":") + 1);
  switch (id.slice(0, id.indexOf(":"))) {
    case "verify":
      return `damaged-data:${name}`;
    case "drill":
      return `drill-failed:${name}`;
    case "dr-drill":
      return `drill-failed:runbook:${name}`;
    default:
      return `run-failed:${id}`;
  }
}

const RECENT = 50;
/** How often the RPO watch is looked at between runs. */
const WATCH_EVERY_MS = 60_000;
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
  private schedules = new Map<string, { schedule: string; targets: string[] }>();
  private readonly listeners = new Set<EventSink>();
  private alerter: Alerter;
  private lastWatch = 0;
  /** Per task: the missed count already alerted on, and the miss that is still open. */
  private readonly missedSeen = new Map<string, number>();
  private readonly missedOpen = new Map<string, AlertCondition>();

  constructor(private readonly input: DaemonInput) {
    this.config = input.config;
    this.clock = input.clock;
    this.started = this.clock.now();
    this.configLoaded = this.started;
    this.record = catalogRecorder(input.store, (err) =>
      this.say("warning", `the catalog failed; runs are no longer recorded in it: ${errorMessage(err)}`),
    );
    this.scheduler = new Scheduler(this.plan(this.config), this.schedulerOptions(this.config));
    this.alerter = this.alerterFor(this.config);
  }

  private alerterFor(config: BulwarkConfig): Alerter {
    return new Alerter(config.alerts, {
      clock: this.clock,
      env: this.input.env,
      stateFile: this.input.alertState,
      events: (e) => {
        this.input.events?.(e);
        this.publish(e);
      },
      ...(this.input.access.secrets !== undefined ? { secrets: this.input.access.secrets } : {}),
      ...(this.input.hostname !== undefined ? { hostname: this.input.hostname } : {}),
    });
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
    this.alerter = this.alerterFor(config);
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
      tasks: this.scheduler.states().map((s) => ({
        ...s,
        kind: s.id.slice(0, s.id.indexOf(":")) as TaskKind,
        name: s.id.slice(s.id.indexOf(":") + 1),
        schedule: this.schedules.get(s.id)?.schedule ?? "",
        targets: this.schedules.get(s.id)?.targets ?? [],
      })),
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
    this.schedules = new Map(
      planned.map((p) => [p.task.id, { schedule: p.schedule, targets: p.task.targets }]),
    );
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
        const store = this.input.store;
        const name = id.slice(id.indexOf(":") + 1);
        switch (id.slice(0, id.indexOf(":"))) {
          case "job":
            return store.runs({ job: name, kind: "backup", limit: 1 })[0]?.startedAt;
          case "verify":
            return store.latestVerification(name)?.time;
          case "drill":
            return store.latestDrill(name)?.time;
          case "dr-drill":
            return store.drRuns({ runbook: name, mode: "drill", limit: 1 })[0]?.time;
          default:
            return undefined;
        }
      },
    };
  }

  private async loop(): Promise<void> {
    while (!this.stopping) {
      for (const due of this.scheduler.due()) this.launch(due);
      this.noticeMisses();
      if (this.clock.now().getTime() - this.lastWatch >= WATCH_EVERY_MS) void this.watch();
      const next = this.scheduler.nextWake();
      const ms = Math.min(
        WATCH_EVERY_MS,
        next === undefined
          ? MAX_SLEEP_MS
          : Math.min(MAX_SLEEP_MS, Math.max(0, next.getTime() - this.clock.now().getTime())),
      );
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
    const job = due.id.slice(due.id.indexOf(":") + 1);
    if (due.reason === "catch-up") {
      this.missedOpen.set(due.id, {
        key: `missed:${due.id}`,
        kind: "missed-schedule",
        severity: "warning",
        summary: `${due.id} did not run at ${due.scheduledFor.toISOString()} (the daemon was not running); caught up now`,
        details: { task: due.id, scheduledFor: due.scheduledFor.toISOString() },
      });
      void this.alertMisses();
    }
    const run = (async () => {
      let ok = false;
      let message = "";
      let conditions: AlertCondition[] = [];
      if (due.id.startsWith("job:")) await this.alerter.ping(job, "start");
      try {
        const outcome = await this.execute(due);
        ok = outcome.ok;
        message = outcome.message;
        conditions = outcome.conditions;
      } catch (err) {
        message = scrub(errorMessage(err), this.input.access.secrets ?? []);
        conditions = [
          {
            key: `${scopeOf(due.id)}:run`,
            kind: "run-failed",
            severity: "critical",
            summary: `${due.id} could not run: ${message}`,
          },
        ];
      }
      this.scheduler.finished(due.id, ok, message);
      if (due.id.startsWith("job:")) await this.alerter.ping(job, ok ? "success" : "fail", message);
      await this.alerter.update(conditions, [scopeOf(due.id)]);
      if (ok && this.missedOpen.delete(due.id)) await this.alertMisses();
      await this.watch();
      this.recent.unshift({
        id: due.id,
        reason: due.reason,
        scheduledFor: due.scheduledFor.toISOString(),
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
  private async execute(due: Due): Promise<{ ok: boolean; message: string; conditions: AlertCondition[] }> {
    const config = this.config;
    const name = due.id.slice(due.id.indexOf(":") + 1);
    const kind = due.id.slice(0, due.id.indexOf(":"));
    const events = fanOut(
      (e) => this.track(e),
      this.record,
      (e) => this.publish(e),
    );
    if (kind === "verify") {
      const r = await verifyTargets({
        config,
        access: this.input.access,
        clock: this.clock,
        events,
        store: this.input.store,
        dataset: name,
      });
      const bad = r.targets.filter((t) => t.error !== undefined || (t.errors ?? 0) > 0);
      return {
        ok: r.ok,
        message: r.ok
          ? `${r.targets.length} target${r.targets.length === 1 ? "" : "s"} verified, no errors`
          : [
              ...bad.map((t) => `${t.target}: ${t.error ?? `${t.errors} errors`}`),
              ...r.crossCopy.map((f) => f.message),
            ].join("; "),
        conditions: [
          ...bad.map((t) => ({
            key: `damaged-data:${name}:${t.target}`,
            kind: "damaged-data" as const,
            severity: "critical" as const,
            summary:
              t.error !== undefined
                ? `verification of ${name} on ${t.target} could not run: ${t.error}`
                : `verification of ${name} on ${t.target} found ${t.errors} error${t.errors === 1 ? "" : "s"}: run bulwark repair`,
            details: { dataset: name, target: t.target },
          })),
          ...r.crossCopy.map((f, i) => ({
            key: `damaged-data:${name}:copies:${i}`,
            kind: "damaged-data" as const,
            severity: "critical" as const,
            summary: f.message,
          })),
        ],
      };
    }
    if (kind === "drill") {
      const r = await drillDataset({
        config,
        dataset: name,
        access: this.input.access,
        clock: this.clock,
        events,
        store: this.input.store,
        env: { ...this.input.env },
      });
      const ok = r.status === "pass";
      return {
        ok,
        message: `drill of ${name} from ${r.target}: ${r.status}`,
        conditions: ok
          ? []
          : [
              {
                key: `drill-failed:${name}`,
                kind: "drill-failed",
                severity: "critical",
                summary: `the restore drill of ${name} from ${r.target} failed`,
                details: { dataset: name, target: r.target, snapshot: r.snapshot },
              },
            ],
      };
    }
    if (kind === "dr-drill") {
      const r = await drillRunbook({
        config,
        runbook: name,
        access: this.input.access,
        clock: this.clock,
        env: this.input.env,
        events,
        store: this.input.store,
      });
      const ok = r.status === "pass";
      return {
        ok,
        message: ok
          ? `dr drill of ${name} passed`
          : `dr drill of ${name} failed: ${r.failed?.step ?? "?"}: ${r.failed?.message ?? ""}`,
        conditions: ok
          ? []
          : [
              {
                key: `drill-failed:runbook:${name}`,
                kind: "drill-failed",
                severity: "critical",
                summary: `the DR drill of runbook ${name} failed at ${r.failed?.step ?? "?"}: ${r.failed?.message ?? ""}`,
              },
            ],
      };
    }
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
    const steps = [
      { kind: "backup", ...result.backup },
      ...result.copies.map((c) => ({ kind: "copy", ...c })),
      ...result.forget.map((f) => ({ kind: "forget", ...f })),
    ];
    const failed = steps.filter((s) => s.status === "failed");
    return {
      conditions: failed.map((s) => ({
        key: `run-failed:${due.id}:${s.kind}:${s.target}`,
        kind: "run-failed",
        severity: s.kind === "backup" ? "critical" : "warning",
        summary: `${s.kind} of ${name} ${s.kind === "copy" ? "to" : "on"} ${s.target} failed: ${s.error ?? "failed"}`,
        details: { job: name, step: s.kind, target: s.target },
      })),
      ok: result.status !== "failed",
      message:
        failed.length > 0
          ? failed.map((s) => `${s.target}: ${s.error ?? "failed"}`).join("; ")
          : `${result.status}${result.backup.snapshot !== undefined ? `, snapshot ${result.backup.snapshot.slice(0, 8)}` : ""} in ${result.durationMs} ms`,
    };
  }

  /** Occurrences that passed while a task ran or waited: one open miss per task until it next succeeds. */
  private noticeMisses(): void {
    let changed = false;
    for (const t of this.scheduler.states()) {
      const seen = this.missedSeen.get(t.id) ?? 0;
      if (t.missed > seen) {
        this.missedOpen.set(t.id, {
          key: `missed:${t.id}`,
          kind: "missed-schedule",
          severity: "warning",
          summary: `${t.id} missed ${t.missed - seen} scheduled run${t.missed - seen === 1 ? "" : "s"}: ${t.waitingFor !== undefined ? `waiting for ${t.waitingFor}` : "still running from before"}`,
          details: { task: t.id, missed: t.missed },
        });
        changed = true;
      }
      this.missedSeen.set(t.id, t.missed);
    }
    if (changed) void this.alertMisses();
  }

  private alertMisses(): Promise<unknown> {
    return this.alerter.update([...this.missedOpen.values()], ["missed"]);
  }

  /** The RPO watch: every dataset's copies beyond their RPO, or never made, are conditions. */
  private async watch(): Promise<void> {
    this.lastWatch = this.clock.now().getTime();
    try {
      const conditions: AlertCondition[] = rpoWatch(
        this.config,
        this.input.store.snapshots(),
        this.clock.now(),
      )
        .filter((w) => w.state !== "within")
        .map((w) => ({
          key: `rpo:${w.dataset}:${w.target}`,
          kind: "rpo",
          severity: w.state === "exceeded" ? "warning" : "critical",
          summary: describeRpo(w),
          details: { dataset: w.dataset, target: w.target, state: w.state, ratio: w.ratio },
        }));
      await this.alerter.update(conditions, ["rpo"]);
    } catch (err) {
      this.say("warning", `RPO watch: ${errorMessage(err)}`);
    }
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
