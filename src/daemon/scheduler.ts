/**
 * What the daemon runs when (docs/design.md §25): pure decisions over a list of tasks and a Clock, with no
 * timer and no I/O, so every rule below is tested by moving a ManualClock. The daemon calls `due()` when
 * `nextWake()` says and after each `finished()`, starts what it returns, and reports how each run ended.
 *
 * 1. Each task has its next regular start: a cron occurrence plus the task's stable jitter, or for
 *    "@every" the last start plus the interval (an "every" task that never ran starts at once).
 * 2. At start (and for a task a reload adds), a cron occurrence that fell while the daemon was down, after
 *    the task's last start, is run once ("catch-up") when `catchUp` is "once"; so is an "every" task whose
 *    interval since its last start has passed. With "none" they wait for their next occurrence.
 * 3. A task never runs beside itself: occurrences that pass while it runs (or while it waits for a target)
 *    are counted in `missed`, and the next one is planned after it ends.
 * 4. A failed run is retried after backoffMs * 2^(n-1) (capped at maxBackoffMs) for the n-th retry, up to
 *    `attempts` retries, unless the next regular start comes first. `attempt` is 0 for a first run and n
 *    for the n-th retry.
 * 5. At most `targetConcurrency` running tasks share a target; a due task that would exceed it stays due,
 *    with `waitingFor` saying why, and the earliest due starts first when a slot frees.
 */
import type { Clock } from "../core/clock.js";
import { BulwarkError } from "../core/errors.js";
import { jitterFor, nextOccurrence, previousOccurrence, type Schedule } from "../config/schedule.js";

export interface Task {
  /** "job:app", "verify:app", "drill:app", "dr-drill:shop". */
  id: string;
  schedule: Schedule;
  /** Targets it touches: no more than `targetConcurrency` running tasks may share a target. */
  targets: string[];
}

export interface SchedulerOptions {
  clock: Clock;
  /** "once": a task whose previous occurrence fell while the daemon was down (after its last start) runs once at start; "none": it waits for its next occurrence. */
  catchUp: "once" | "none";
  /** The most jitter added to each cron occurrence (0: none). */
  jitterMs: number;
  /** Retries after a failure; the n-th waits backoffMs * 2^(n-1), at most maxBackoffMs. */
  retries: { attempts: number; backoffMs: number; maxBackoffMs: number };
  /** At least 1. */
  targetConcurrency: number;
  /** When the task last started (from the catalog); undefined if never. */
  lastStart: (id: string) => Date | undefined;
}

export interface Due {
  id: string;
  reason: "schedule" | "catch-up" | "retry" | "trigger";
  /** 0 for a first run, n for the n-th retry. */
  attempt: number;
  /** The occurrence it runs for (without jitter); for a retry or a trigger, when it was due. */
  scheduledFor: Date;
}

export interface TaskState {
  id: string;
  /** The next regular start (jitter included). */
  next?: Date;
  running?: { since: Date; reason: Due["reason"]; attempt: number };
  lastResult?: { ok: boolean; at: Date; message?: string };
  retryAt?: Date;
  /** Why a due task could not start, e.g. "target nas busy (1 of 1)". */
  waitingFor?: string;
  /** Occurrences skipped because the task was still running (or waiting for a target). */
  missed: number;
}

interface Entry {
  task: Task;
  /** Position in the task list: ties between tasks due at the same instant go by it. */
  index: number;
  jitter: number;
  /** The next regular start: `occurrence` plus the jitter (none for "every"). */
  next?: { at: Date; occurrence: Date };
  /** The occurrence missed while the daemon was down, to run once. */
  catchUp?: Date;
  /** When the API asked for a run. */
  trigger?: Date;
  retry?: { at: Date; attempt: number };
  running?: { since: Date; reason: Due["reason"]; attempt: number };
  lastResult?: { ok: boolean; at: Date; message?: string };
  waitingFor?: string;
  missed: number;
  /** The anchor of an "every" schedule. */
  lastStart?: Date;
  /** Gone from the config while running: dropped when it ends. */
  removed: boolean;
}

interface Pending {
  reason: Due["reason"];
  attempt: number;
  scheduledFor: Date;
  /** Since when it is due: the earliest starts first. */
  since: Date;
}

/** More occurrences than this passing during one run are counted by jumping, not one by one. */
const MAX_STEPS = 10_000;

export class Scheduler {
  private entries = new Map<string, Entry>();
  private readonly options: SchedulerOptions;

  constructor(tasks: Task[], options: SchedulerOptions) {
    if (!Number.isInteger(options.targetConcurrency) || options.targetConcurrency < 1) {
      throw new Error(`targetConcurrency must be an integer >= 1, not ${options.targetConcurrency}`);
    }
    this.options = options;
    this.setTasks(tasks);
  }

  /** Replaces the task list (config reload): kept ids keep their state; new ones are planned; removed ones are dropped once not running. */
  setTasks(tasks: Task[]): void {
    const ids = new Set<string>();
    for (const t of tasks) {
      if (ids.has(t.id)) throw new Error(`two tasks have the id ${t.id}`);
      ids.add(t.id);
    }
    const now = this.options.clock.now();
    const kept = new Map<string, Entry>();
    tasks.forEach((task, index) => {
      const old = this.entries.get(task.id);
      if (old === undefined) {
        kept.set(task.id, this.plan(task, index, now));
        return;
      }
      const changed = JSON.stringify(old.task.schedule) !== JSON.stringify(task.schedule);
      old.task = task;
      old.index = index;
      old.removed = false;
      // A new schedule replans the next start from now; what already happened (retry, run) stands.
      if (changed) {
        old.next =
          task.schedule.kind === "every" && old.lastStart === undefined
            ? { at: now, occurrence: now }
            : this.regularAfter(old, now);
      }
      kept.set(task.id, old);
    });
    let index = tasks.length;
    for (const old of this.entries.values()) {
      if (kept.has(old.task.id) || old.running === undefined) continue;
      old.removed = true;
      old.index = index++;
      kept.set(old.task.id, old);
    }
    // Targets may have changed: every waiting task looks again at the next due().
    for (const e of kept.values()) e.waitingFor = undefined;
    this.entries = kept;
  }

  /** What must start now, earliest due first, each marked running (see the module header). */
  due(): Due[] {
    const now = this.options.clock.now();
    this.refresh(now);
    const candidates: { e: Entry; p: Pending }[] = [];
    for (const e of this.entries.values()) {
      if (e.running !== undefined) continue;
      const p = this.pending(e, now);
      if (p !== undefined) candidates.push({ e, p });
      else e.waitingFor = undefined;
    }
    candidates.sort((a, b) => a.p.since.getTime() - b.p.since.getTime() || a.e.index - b.e.index);
    const limit = this.options.targetConcurrency;
    const busy = this.busyTargets();
    const out: Due[] = [];
    for (const { e, p } of candidates) {
      const targets = new Set(e.task.targets);
      const full = [...targets].find((t) => (busy.get(t) ?? 0) >= limit);
      if (full !== undefined) {
        e.waitingFor = `target ${full} busy (${busy.get(full) ?? 0} of ${limit})`;
        continue;
      }
      for (const t of targets) busy.set(t, (busy.get(t) ?? 0) + 1);
      this.start(e, p, now);
      out.push({ id: e.task.id, reason: p.reason, attempt: p.attempt, scheduledFor: p.scheduledFor });
    }
    return out;
  }

  /** Asks for a task to run as soon as possible (the API); false when it is running (it is not queued twice). */
  trigger(id: string): boolean {
    const e = this.entries.get(id);
    if (e === undefined || e.removed) {
      throw new BulwarkError("USAGE", `no scheduled task ${JSON.stringify(id)}`, {
        hint: `the tasks are ${[...this.entries.values()]
          .filter((x) => !x.removed)
          .map((x) => x.task.id)
          .join(", ")}; \`bulwark daemon status\` lists them`,
      });
    }
    if (e.running !== undefined) return false;
    e.trigger ??= this.options.clock.now();
    return true;
  }

  /** A started task ended: a failure plans a retry (see the module header), a success clears it. */
  finished(id: string, ok: boolean, message?: string): void {
    const e = this.entries.get(id);
    if (e?.running === undefined) throw new Error(`finished(${id}): the task is not running`);
    const now = this.options.clock.now();
    const attempt = e.running.attempt;
    e.running = undefined;
    e.lastResult = { ok, at: now, ...(message !== undefined ? { message } : {}) };
    // The slots it held free up: tasks waiting for them look again at the next due().
    for (const other of this.entries.values()) {
      if (other.task.targets.some((t) => e.task.targets.includes(t))) other.waitingFor = undefined;
    }
    if (e.removed) {
      this.entries.delete(id);
      return;
    }
    this.skipPassed(e, now, false);
    e.retry = undefined;
    const { attempts, backoffMs, maxBackoffMs } = this.options.retries;
    if (!ok && attempt < attempts) {
      const n = attempt + 1;
      const at = new Date(now.getTime() + Math.min(backoffMs * 2 ** (n - 1), maxBackoffMs));
      if (e.next === undefined || e.next.at.getTime() > at.getTime()) e.retry = { at, attempt: n };
    }
  }

  /** When `due()` should next be called (never before now), or undefined when nothing is planned. */
  nextWake(): Date | undefined {
    const now = this.options.clock.now();
    let earliest: number | undefined;
    for (const e of this.entries.values()) {
      // A running task's next start is planned when it ends; a waiting one starts when a slot frees.
      if (e.running !== undefined || e.waitingFor !== undefined) continue;
      for (const t of [e.trigger, e.catchUp, e.retry?.at, e.next?.at]) {
        if (t !== undefined && (earliest === undefined || t.getTime() < earliest)) earliest = t.getTime();
      }
    }
    return earliest === undefined ? undefined : new Date(Math.max(earliest, now.getTime()));
  }

  /** Every task's state, for `daemon status` and metrics. */
  states(): TaskState[] {
    this.refresh(this.options.clock.now());
    return [...this.entries.values()].map((e) => ({
      id: e.task.id,
      ...(e.next !== undefined ? { next: e.next.at } : {}),
      ...(e.running !== undefined ? { running: { ...e.running } } : {}),
      ...(e.lastResult !== undefined ? { lastResult: { ...e.lastResult } } : {}),
      ...(e.retry !== undefined ? { retryAt: e.retry.at } : {}),
      ...(e.waitingFor !== undefined ? { waitingFor: e.waitingFor } : {}),
      missed: e.missed,
    }));
  }

  /** A new task's first plan: its next start, and a catch-up if a run was missed while the daemon was down. */
  private plan(task: Task, index: number, now: Date): Entry {
    const s = task.schedule;
    const last = this.options.lastStart(task.id);
    const e: Entry = {
      task,
      index,
      jitter: s.kind === "cron" ? jitterFor(task.id, this.options.jitterMs) : 0,
      missed: 0,
      removed: false,
      ...(last !== undefined ? { lastStart: last } : {}),
    };
    const catchUp = this.options.catchUp === "once";
    // An occurrence exactly at `now` is due now, not missed.
    const before = new Date(now.getTime() - 1);
    if (s.kind === "every") {
      if (last === undefined) {
        e.next = { at: now, occurrence: now };
        return e;
      }
      if (last.getTime() + s.ms <= now.getTime()) {
        if (catchUp) e.catchUp = previousOccurrence(s, now, last);
        e.next = this.regularAfter(e, before);
      } else {
        const at = new Date(last.getTime() + s.ms);
        e.next = { at, occurrence: at };
      }
      return e;
    }
    e.next = this.regularAfter(e, before);
    if (catchUp) {
      // The occurrence whose jittered start is the last before now.
      const prev = previousOccurrence(s, new Date(before.getTime() - e.jitter));
      if (prev !== undefined && (last === undefined || prev.getTime() + e.jitter > last.getTime())) {
        e.catchUp = prev;
      }
    }
    return e;
  }

  /** The first regular start strictly after `after`. */
  private regularAfter(e: Entry, after: Date): { at: Date; occurrence: Date } {
    const s = e.task.schedule;
    if (s.kind === "every") {
      const occurrence = nextOccurrence(s, after, e.lastStart ?? after);
      return { at: occurrence, occurrence };
    }
    const occurrence = nextOccurrence(s, new Date(after.getTime() - e.jitter));
    return { at: new Date(occurrence.getTime() + e.jitter), occurrence };
  }

  /** What is due for a task that is not running, the most pressing first. */
  private pending(e: Entry, now: Date): Pending | undefined {
    if (e.trigger !== undefined) {
      return { reason: "trigger", attempt: 0, scheduledFor: e.trigger, since: e.trigger };
    }
    if (e.retry !== undefined && e.retry.at.getTime() <= now.getTime()) {
      return { reason: "retry", attempt: e.retry.attempt, scheduledFor: e.retry.at, since: e.retry.at };
    }
    if (e.catchUp !== undefined) {
      return { reason: "catch-up", attempt: 0, scheduledFor: e.catchUp, since: e.catchUp };
    }
    if (e.next !== undefined && e.next.at.getTime() <= now.getTime()) {
      return { reason: "schedule", attempt: 0, scheduledFor: e.next.occurrence, since: e.next.at };
    }
    return undefined;
  }

  private start(e: Entry, p: Pending, now: Date): void {
    e.running = { since: now, reason: p.reason, attempt: p.attempt };
    // One run answers everything that was due: the trigger, the catch-up, the retry, the occurrence.
    e.trigger = undefined;
    e.catchUp = undefined;
    e.retry = undefined;
    e.waitingFor = undefined;
    this.skipPassed(e, now, true);
    if (e.task.schedule.kind === "every") {
      // An "every" schedule is anchored at the last start, whatever started it.
      e.lastStart = now;
      const at = new Date(now.getTime() + e.task.schedule.ms);
      e.next = { at, occurrence: at };
    }
  }

  /** Running tasks: occurrences that have passed meanwhile are missed. */
  private refresh(now: Date): void {
    for (const e of this.entries.values()) if (e.running !== undefined) this.skipPassed(e, now, false);
  }

  /**
   * Moves a task's next start past `now`, counting the starts passed over as missed; with `firstRuns`
   * the first of them is the run starting now.
   */
  private skipPassed(e: Entry, now: Date, firstRuns: boolean): void {
    let next = e.next;
    if (next === undefined || next.at.getTime() > now.getTime()) return;
    let passed = 0;
    const s = e.task.schedule;
    if (s.kind === "every") {
      passed = Math.floor((now.getTime() - next.at.getTime()) / s.ms) + 1;
      const at = new Date(next.at.getTime() + passed * s.ms);
      next = { at, occurrence: at };
    } else {
      while (next.at.getTime() <= now.getTime()) {
        if (++passed > MAX_STEPS) {
          next = this.regularAfter(e, now);
          break;
        }
        const occurrence = nextOccurrence(s, next.occurrence);
        next = { at: new Date(occurrence.getTime() + e.jitter), occurrence };
      }
    }
    e.next = next;
    e.missed += firstRuns ? passed - 1 : passed;
  }

  private busyTargets(): Map<string, number> {
    const busy = new Map<string, number>();
    for (const e of this.entries.values()) {
      if (e.running === undefined) continue;
      for (const t of new Set(e.task.targets)) busy.set(t, (busy.get(t) ?? 0) + 1);
    }
    return busy;
  }
}
