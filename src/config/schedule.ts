/**
 * A job's `schedule:` (docs/design.md §25): a cron expression read by croner in a time zone, a nickname
 * (@daily), or "@every DURATION" (fixed durations of src/config/duration.ts). This module answers when a
 * schedule next occurs and when it last did (catch-up after downtime), and gives each task a stable jitter;
 * it reads no clock: every instant is passed in, so the scheduler and its tests decide what "now" is.
 */
import { createHash } from "node:crypto";

import { Cron } from "croner";

import { parseFixedDuration } from "./duration.js";
import { BulwarkError } from "../core/errors.js";

export type Schedule =
  | { kind: "cron"; expression: string; timezone?: string }
  | { kind: "every"; ms: number };

const NICKNAMES = new Set(["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"]);
const EXAMPLE = 'write e.g. "0 3 * * *" (03:00 every day), "30 */6 * * 1-5", "@daily" or "@every 6h"';

/** Parses a job's `schedule:` string: a cron expression, a nickname, or "@every DURATION". */
export function parseSchedule(text: string, timezone?: string): Schedule {
  const s = text.trim().replace(/\s+/g, " ");
  if (timezone !== undefined && !isTimeZone(timezone)) {
    throw new BulwarkError("CONFIG_INVALID", `unknown time zone ${JSON.stringify(timezone)}`, {
      hint: "an IANA name such as Europe/Paris or UTC",
    });
  }
  const every = /^@every(?: (.*))?$/i.exec(s);
  if (every !== null) {
    const d = parseFixedDuration(every[1] ?? "");
    if ("error" in d || d.ms <= 0) {
      const reason = "error" in d ? d.error : "the interval must be longer than 0s";
      throw new BulwarkError("CONFIG_INVALID", `${JSON.stringify(text)} is not a schedule: ${reason}`, {
        hint: 'write "@every" and a duration such as 90s, 10m, 1h30m or 1d',
      });
    }
    return { kind: "every", ms: d.ms };
  }
  if (s.startsWith("@")) {
    if (!NICKNAMES.has(s.toLowerCase())) {
      throw new BulwarkError(
        "CONFIG_INVALID",
        `${JSON.stringify(text)} is not a schedule: unknown nickname (use @hourly, @daily, @weekly, @monthly, @yearly or @every DURATION)`,
        { hint: EXAMPLE },
      );
    }
  } else {
    // croner also takes a seventh (year) field; a job's schedule has the fields cron(5) users know.
    const fields = s === "" ? 0 : s.split(" ").length;
    if (fields !== 5 && fields !== 6) {
      throw new BulwarkError(
        "CONFIG_INVALID",
        `${JSON.stringify(text)} is not a cron expression: ${fields} field${fields === 1 ? "" : "s"}, 5 or 6 expected`,
        { hint: `${EXAMPLE}; 6 fields start with the seconds` },
      );
    }
  }
  const schedule: Schedule = { kind: "cron", expression: s, ...(timezone !== undefined ? { timezone } : {}) };
  let cron: Cron;
  try {
    cron = cronOf(schedule);
  } catch (err) {
    const reason = (err instanceof Error ? err.message : String(err)).replace(/^CronPattern: /, "");
    throw new BulwarkError("CONFIG_INVALID", `${JSON.stringify(text)} is not a cron expression: ${reason}`, {
      hint: EXAMPLE,
    });
  }
  // A pattern such as "0 0 30 2 *" parses but never occurs: the job would silently never run.
  if (cron.nextRun(new Date(0)) === null) {
    throw new BulwarkError("CONFIG_INVALID", `${JSON.stringify(text)} never occurs (no date matches it)`, {
      hint: EXAMPLE,
    });
  }
  return schedule;
}

/** The first occurrence strictly after `after`. For "every": anchor + k*ms (k >= 0) > after; no anchor: after + ms. */
export function nextOccurrence(s: Schedule, after: Date, anchor?: Date): Date {
  if (s.kind === "every") {
    const base = (anchor ?? after).getTime();
    const k = base > after.getTime() ? 0 : Math.floor((after.getTime() - base) / s.ms) + 1;
    return new Date(base + k * s.ms);
  }
  const next = cronOf(s).nextRun(after);
  // parseSchedule refuses patterns that never occur; one without a year field recurs within 28 years.
  if (next === null)
    throw new Error(
      `the schedule ${JSON.stringify(s.expression)} has no occurrence after ${after.toISOString()}`,
    );
  return next;
}

/** The last occurrence at or before `at`; undefined when none (an "every" schedule with no anchor, or before it). */
export function previousOccurrence(s: Schedule, at: Date, anchor?: Date): Date | undefined {
  if (s.kind === "every") {
    if (anchor === undefined || anchor.getTime() > at.getTime()) return undefined;
    const k = Math.floor((at.getTime() - anchor.getTime()) / s.ms);
    return new Date(anchor.getTime() + k * s.ms);
  }
  // croner's previousRuns excludes its reference and includes a run earlier in the same second, so one
  // millisecond later makes `at` itself count.
  return cronOf(s).previousRuns(1, new Date(at.getTime() + 1))[0];
}

/** A stable jitter in [0, maxMs) for a task id: a restart keeps each task's offset, tasks at one minute spread out. */
export function jitterFor(id: string, maxMs: number): number {
  if (!(maxMs > 0)) return 0;
  // 48 bits of a hash: evenly spread, and exactly representable as a double.
  const fraction = createHash("sha256").update(id).digest().readUIntBE(0, 6) / 2 ** 48;
  return Math.min(Math.floor(fraction * maxMs), Math.ceil(maxMs) - 1);
}

/** Whether a time zone name is known (Intl). */
export function isTimeZone(name: string): boolean {
  try {
    new Intl.DateTimeFormat("en", { timeZone: name });
    return true;
  } catch {
    return false;
  }
}

/** Parsed patterns by time zone and expression: nextOccurrence runs at every wake-up and reload. */
const cache = new Map<string, Cron>();
const CACHE_MAX = 1000;

function cronOf(s: Schedule & { kind: "cron" }): Cron {
  const key = `${s.timezone ?? ""}\u0000${s.expression}`;
  let cron = cache.get(key);
  if (cron === undefined) {
    cron = new Cron(s.expression, {
      paused: true,
      mode: "5-or-6-parts",
      ...(s.timezone !== undefined ? { timezone: s.timezone } : {}),
    });
    if (cache.size >= CACHE_MAX) cache.clear();
    cache.set(key, cron);
  }
  return cron;
}
