import { describe, expect, it } from "vitest";

import { ManualClock } from "../../src/core/clock.js";
import { BulwarkError } from "../../src/core/errors.js";
import {
  isTimeZone,
  jitterFor,
  nextOccurrence,
  parseSchedule,
  previousOccurrence,
  type Schedule,
} from "../../src/config/schedule.js";
import { Scheduler, type SchedulerOptions, type Task } from "../../src/daemon/scheduler.js";

const MIN = 60_000;
const HOUR = 60 * MIN;
const at = (iso: string): Date => new Date(iso);
const iso = (d: Date | undefined): string | undefined => d?.toISOString();

/** The wall-clock time of an instant in a time zone, "HH:MM". */
function localTime(d: Date, timeZone: string): string {
  return new Intl.DateTimeFormat("en-GB", {
    timeZone,
    hour: "2-digit",
    minute: "2-digit",
    hour12: false,
  }).format(d);
}

function parseError(text: string, timezone?: string): BulwarkError {
  try {
    parseSchedule(text, timezone);
  } catch (err) {
    if (err instanceof BulwarkError) return err;
    throw err;
  }
  throw new Error(`${text} parsed`);
}

describe("parseSchedule", () => {
  it("reads cron expressions, nicknames and @every durations", () => {
    expect(parseSchedule(" 0  3 * * * ", "Europe/Paris")).toEqual({
      kind: "cron",
      expression: "0 3 * * *",
      timezone: "Europe/Paris",
    });
    expect(parseSchedule("30 0 3 * * *")).toEqual({ kind: "cron", expression: "30 0 3 * * *" });
    expect(parseSchedule("@daily")).toEqual({ kind: "cron", expression: "@daily" });
    expect(parseSchedule("@every 10m")).toEqual({ kind: "every", ms: 10 * MIN });
    expect(parseSchedule("@every 90s")).toEqual({ kind: "every", ms: 90_000 });
    expect(parseSchedule("@every 1h30m")).toEqual({ kind: "every", ms: 90 * MIN });
  });

  it("says what is wrong with a schedule, with an example", () => {
    const fields = parseError("0 3 * *");
    expect(fields.code).toBe("CONFIG_INVALID");
    expect(fields.message).toBe('"0 3 * *" is not a cron expression: 4 fields, 5 or 6 expected');
    expect(fields.hint).toContain('"0 3 * * *"');
    expect(parseError("* * * * * * *").message).toContain("7 fields, 5 or 6 expected");
    expect(parseError("61 * * * *").message).toBe(
      '"61 * * * *" is not a cron expression: Invalid value for minute: 61',
    );
    expect(parseError("0 0 30 2 *").message).toContain("never occurs");
    expect(parseError("@reboot").message).toContain("unknown nickname");
    expect(parseError("@every 10x").message).toBe(
      '"@every 10x" is not a schedule: unknown unit "x" (use w, d, h, m or s)',
    );
    expect(parseError("@every").message).toContain("the duration is empty");
    expect(parseError("@every 0s").message).toContain("longer than 0s");
    const zone = parseError("0 3 * * *", "Mars/Olympus");
    expect(zone.code).toBe("CONFIG_INVALID");
    expect(zone.message).toContain('"Mars/Olympus"');
    expect(zone.hint).toBe("an IANA name such as Europe/Paris or UTC");
  });

  it("knows time zones", () => {
    expect(isTimeZone("Europe/Paris")).toBe(true);
    expect(isTimeZone("UTC")).toBe(true);
    expect(isTimeZone("Mars/Olympus")).toBe(false);
    expect(isTimeZone("")).toBe(false);
  });
});

describe("cron occurrences", () => {
  const paris = parseSchedule("0 3 * * *", "Europe/Paris");

  it("stays at 03:00 local across both DST changes", () => {
    // Spring forward on 2025-03-30 (UTC+1 to UTC+2), fall back on 2025-10-26.
    const spring = [at("2025-03-29T12:00:00Z")];
    for (let i = 0; i < 2; i++) spring.push(nextOccurrence(paris, spring[spring.length - 1]!));
    expect(spring.slice(1).map(iso)).toEqual(["2025-03-30T01:00:00.000Z", "2025-03-31T01:00:00.000Z"]);
    const autumn = nextOccurrence(paris, at("2025-10-25T12:00:00Z"));
    expect(iso(autumn)).toBe("2025-10-26T02:00:00.000Z");
    for (const d of [...spring.slice(1), autumn]) expect(localTime(d, "Europe/Paris")).toBe("03:00");
    // The same expression in UTC is an hour or two later.
    expect(iso(nextOccurrence(parseSchedule("0 3 * * *", "UTC"), at("2025-03-29T12:00:00Z")))).toBe(
      "2025-03-30T03:00:00.000Z",
    );
  });

  it("next is strictly after, previous is at or before", () => {
    const occurrence = at("2025-03-30T01:00:00Z");
    expect(iso(nextOccurrence(paris, occurrence))).toBe("2025-03-31T01:00:00.000Z");
    expect(iso(nextOccurrence(paris, new Date(occurrence.getTime() - 1)))).toBe(iso(occurrence));
    expect(iso(previousOccurrence(paris, occurrence))).toBe(iso(occurrence));
    expect(iso(previousOccurrence(paris, new Date(occurrence.getTime() + 1500)))).toBe(iso(occurrence));
    expect(iso(previousOccurrence(paris, new Date(occurrence.getTime() - 1)))).toBe(
      "2025-03-29T02:00:00.000Z",
    );
  });

  it("anchors @every at the anchor", () => {
    const every: Schedule = { kind: "every", ms: 10 * MIN };
    const anchor = at("2025-01-01T10:00:00Z");
    expect(iso(nextOccurrence(every, at("2025-01-01T10:25:00Z"), anchor))).toBe("2025-01-01T10:30:00.000Z");
    expect(iso(nextOccurrence(every, at("2025-01-01T10:30:00Z"), anchor))).toBe("2025-01-01T10:40:00.000Z");
    expect(iso(nextOccurrence(every, at("2025-01-01T09:00:00Z"), anchor))).toBe("2025-01-01T10:00:00.000Z");
    expect(iso(nextOccurrence(every, at("2025-01-01T10:25:00Z")))).toBe("2025-01-01T10:35:00.000Z");
    expect(iso(previousOccurrence(every, at("2025-01-01T10:30:00Z"), anchor))).toBe(
      "2025-01-01T10:30:00.000Z",
    );
    expect(iso(previousOccurrence(every, at("2025-01-01T10:29:59Z"), anchor))).toBe(
      "2025-01-01T10:20:00.000Z",
    );
    expect(previousOccurrence(every, at("2025-01-01T10:29:59Z"))).toBeUndefined();
    expect(previousOccurrence(every, at("2025-01-01T09:00:00Z"), anchor)).toBeUndefined();
  });
});

describe("jitterFor", () => {
  it("is stable per id, within [0, max), and spreads ids out", () => {
    const ids = Array.from({ length: 200 }, (_, i) => `job:app${i}`);
    const values = ids.map((id) => jitterFor(id, 30_000));
    expect(ids.map((id) => jitterFor(id, 30_000))).toEqual(values);
    for (const v of values) {
      expect(Number.isInteger(v)).toBe(true);
      expect(v).toBeGreaterThanOrEqual(0);
      expect(v).toBeLessThan(30_000);
    }
    expect(new Set(values).size).toBeGreaterThan(190);
    // Evenly spread: about half fall in each half of the window.
    const low = values.filter((v) => v < 15_000).length;
    expect(low).toBeGreaterThan(70);
    expect(low).toBeLessThan(130);
    expect(jitterFor("job:app", 0)).toBe(0);
    expect(jitterFor("job:app", 1)).toBe(0);
  });
});

const cron = (expression: string): Schedule => ({ kind: "cron", expression, timezone: "UTC" });
const every = (ms: number): Schedule => ({ kind: "every", ms });

function scheduler(
  tasks: Task[],
  clock: ManualClock,
  options: Partial<Omit<SchedulerOptions, "clock">> = {},
): Scheduler {
  return new Scheduler(tasks, {
    clock,
    catchUp: "none",
    jitterMs: 0,
    retries: { attempts: 0, backoffMs: MIN, maxBackoffMs: 30 * MIN },
    targetConcurrency: 1,
    lastStart: () => undefined,
    ...options,
  });
}

const state = (s: Scheduler, id: string) => s.states().find((t) => t.id === id);

describe("Scheduler", () => {
  it("starts a task at its occurrence and plans the next", () => {
    const clock = new ManualClock("2025-01-01T02:00:00Z");
    const s = scheduler([{ id: "job:app", schedule: cron("0 3 * * *"), targets: ["nas"] }], clock);
    expect(s.due()).toEqual([]);
    expect(iso(s.nextWake())).toBe("2025-01-01T03:00:00.000Z");
    clock.set("2025-01-01T02:59:59.999Z");
    expect(s.due()).toEqual([]);
    clock.set("2025-01-01T03:00:00Z");
    expect(s.due()).toEqual([
      { id: "job:app", reason: "schedule", attempt: 0, scheduledFor: at("2025-01-01T03:00:00Z") },
    ]);
    expect(s.due()).toEqual([]);
    expect(state(s, "job:app")?.running?.reason).toBe("schedule");
    clock.advance(5 * MIN);
    s.finished("job:app", true, "done");
    expect(state(s, "job:app")).toMatchObject({ missed: 0, lastResult: { ok: true, message: "done" } });
    expect(iso(s.nextWake())).toBe("2025-01-02T03:00:00.000Z");
  });

  it("adds the task's jitter to the start, not to the occurrence it runs for", () => {
    const clock = new ManualClock("2025-01-01T02:00:00Z");
    const jitter = jitterFor("job:app", 10 * MIN);
    expect(jitter).toBeGreaterThan(0);
    const s = scheduler([{ id: "job:app", schedule: cron("0 3 * * *"), targets: [] }], clock, {
      jitterMs: 10 * MIN,
    });
    const start = new Date(at("2025-01-01T03:00:00Z").getTime() + jitter);
    expect(iso(s.nextWake())).toBe(iso(start));
    clock.set(new Date(start.getTime() - 1));
    expect(s.due()).toEqual([]);
    clock.set(start);
    expect(s.due()).toEqual([
      { id: "job:app", reason: "schedule", attempt: 0, scheduledFor: at("2025-01-01T03:00:00Z") },
    ]);
  });

  it("never runs a task beside itself: occurrences during a run are missed, the next is after it", () => {
    const clock = new ManualClock("2025-01-01T00:00:00Z");
    const s = scheduler([{ id: "job:app", schedule: cron("*/10 * * * *"), targets: ["nas"] }], clock);
    expect(s.due().map((d) => d.reason)).toEqual(["schedule"]);
    clock.set("2025-01-01T00:35:00Z");
    expect(s.due()).toEqual([]);
    expect(s.trigger("job:app")).toBe(false);
    expect(state(s, "job:app")?.missed).toBe(3);
    // A running task does not wake the daemon.
    expect(s.nextWake()).toBeUndefined();
    s.finished("job:app", true);
    expect(s.due()).toEqual([]);
    expect(iso(s.nextWake())).toBe("2025-01-01T00:40:00.000Z");
    expect(state(s, "job:app")).toMatchObject({ missed: 3, next: at("2025-01-01T00:40:00Z") });
    clock.set("2025-01-01T00:40:00Z");
    expect(s.due()).toEqual([
      { id: "job:app", reason: "schedule", attempt: 0, scheduledFor: at("2025-01-01T00:40:00Z") },
    ]);
  });

  it("counts an occurrence that passes just before the run ends as missed", () => {
    const clock = new ManualClock("2025-01-01T00:00:00Z");
    const s = scheduler([{ id: "job:app", schedule: every(10 * MIN), targets: [] }], clock);
    expect(s.due().map((d) => d.reason)).toEqual(["schedule"]);
    clock.set("2025-01-01T00:25:00Z");
    s.finished("job:app", true);
    expect(state(s, "job:app")).toMatchObject({ missed: 2, next: at("2025-01-01T00:30:00Z") });
  });

  describe("catch-up", () => {
    const daily: Task = { id: "job:app", schedule: cron("0 3 * * *"), targets: [] };
    const lastStart = () => at("2025-01-01T03:00:00Z");

    it("once: an occurrence missed while the daemon was down runs at start, once", () => {
      const clock = new ManualClock("2025-01-03T10:00:00Z");
      const s = scheduler([daily], clock, { catchUp: "once", lastStart });
      expect(iso(s.nextWake())).toBe("2025-01-03T10:00:00.000Z");
      expect(s.due()).toEqual([
        { id: "job:app", reason: "catch-up", attempt: 0, scheduledFor: at("2025-01-03T03:00:00Z") },
      ]);
      s.finished("job:app", true);
      expect(s.due()).toEqual([]);
      expect(iso(s.nextWake())).toBe("2025-01-04T03:00:00.000Z");
    });

    it("none: it waits for the next occurrence", () => {
      const clock = new ManualClock("2025-01-03T10:00:00Z");
      const s = scheduler([daily], clock, { catchUp: "none", lastStart });
      expect(s.due()).toEqual([]);
      expect(iso(s.nextWake())).toBe("2025-01-04T03:00:00.000Z");
    });

    it("once: nothing to catch up when the task ran after its last occurrence; a never-run task catches up", () => {
      const clock = new ManualClock("2025-01-03T10:00:00Z");
      const ran = scheduler([daily], clock, { catchUp: "once", lastStart: () => at("2025-01-03T03:00:01Z") });
      expect(ran.due()).toEqual([]);
      const never = scheduler([daily], clock, { catchUp: "once" });
      expect(never.due().map((d) => [d.reason, iso(d.scheduledFor)])).toEqual([
        ["catch-up", "2025-01-03T03:00:00.000Z"],
      ]);
    });

    it("@every: runs at start if never run, catches up or waits on the grid of its last start", () => {
      const clock = new ManualClock("2025-01-01T12:30:00Z");
      const task: Task = { id: "job:app", schedule: every(HOUR), targets: [] };
      const last = () => at("2025-01-01T10:00:00Z");
      expect(
        scheduler([task], clock, { catchUp: "none" })
          .due()
          .map((d) => d.reason),
      ).toEqual(["schedule"]);
      expect(
        scheduler([task], clock, { catchUp: "once", lastStart: last })
          .due()
          .map((d) => d.reason),
      ).toEqual(["catch-up"]);
      const none = scheduler([task], clock, { catchUp: "none", lastStart: last });
      expect(none.due()).toEqual([]);
      expect(iso(none.nextWake())).toBe("2025-01-01T13:00:00.000Z");
      const recent = scheduler([task], clock, {
        catchUp: "once",
        lastStart: () => at("2025-01-01T12:00:00Z"),
      });
      expect(recent.due()).toEqual([]);
      expect(iso(recent.nextWake())).toBe("2025-01-01T13:00:00.000Z");
    });
  });

  describe("retries", () => {
    const retries = { attempts: 3, backoffMs: MIN, maxBackoffMs: 150_000 };

    it("backs off exponentially, capped, and stops when the attempts are spent", () => {
      const clock = new ManualClock("2025-01-01T03:00:00Z");
      const s = scheduler([{ id: "job:app", schedule: cron("0 3 * * *"), targets: [] }], clock, { retries });
      expect(s.due().map((d) => d.attempt)).toEqual([0]);
      const t0 = clock.now().getTime();
      // Failures at t0: retry 1 after 60 s; retry 2 after 120 s; retry 3 after 240 s capped at 150 s.
      const expected = [
        { delay: 60_000, attempt: 1 },
        { delay: 120_000, attempt: 2 },
        { delay: 150_000, attempt: 3 },
      ];
      let now = t0;
      for (const { delay, attempt } of expected) {
        s.finished("job:app", false, "boom");
        expect(state(s, "job:app")?.retryAt?.getTime()).toBe(now + delay);
        expect(s.nextWake()?.getTime()).toBe(now + delay);
        clock.set(now + delay - 1);
        expect(s.due()).toEqual([]);
        now += delay;
        clock.set(now);
        expect(s.due()).toEqual([{ id: "job:app", reason: "retry", attempt, scheduledFor: new Date(now) }]);
      }
      s.finished("job:app", false, "boom");
      expect(state(s, "job:app")?.retryAt).toBeUndefined();
      expect(state(s, "job:app")?.lastResult).toMatchObject({ ok: false, message: "boom" });
      expect(iso(s.nextWake())).toBe("2025-01-02T03:00:00.000Z");
    });

    it("a success clears the retries", () => {
      const clock = new ManualClock("2025-01-01T03:00:00Z");
      const s = scheduler([{ id: "job:app", schedule: cron("0 3 * * *"), targets: [] }], clock, { retries });
      s.due();
      s.finished("job:app", false);
      clock.advance(MIN);
      expect(s.due().map((d) => d.reason)).toEqual(["retry"]);
      s.finished("job:app", true);
      expect(state(s, "job:app")?.retryAt).toBeUndefined();
      expect(iso(s.nextWake())).toBe("2025-01-02T03:00:00.000Z");
    });

    it("no retry when the next regular occurrence comes first", () => {
      const clock = new ManualClock("2025-01-01T00:40:00Z");
      const s = scheduler([{ id: "job:app", schedule: cron("0 * * * *"), targets: [] }], clock, {
        retries: { attempts: 3, backoffMs: 30 * MIN, maxBackoffMs: HOUR },
      });
      expect(s.trigger("job:app")).toBe(true);
      expect(s.due().map((d) => d.reason)).toEqual(["trigger"]);
      s.finished("job:app", false);
      expect(state(s, "job:app")?.retryAt).toBeUndefined();
      clock.set("2025-01-01T01:00:00Z");
      expect(s.due()).toEqual([
        { id: "job:app", reason: "schedule", attempt: 0, scheduledFor: at("2025-01-01T01:00:00Z") },
      ]);
    });
  });

  describe("target concurrency", () => {
    const a: Task = { id: "job:a", schedule: every(HOUR), targets: ["nas", "s3"] };
    const b: Task = { id: "job:b", schedule: every(HOUR), targets: ["nas"] };
    const c: Task = { id: "job:c", schedule: every(HOUR), targets: ["b2"] };

    it("a task waits while its target is at the limit and starts when a slot frees", () => {
      const clock = new ManualClock("2025-01-01T00:00:00Z");
      const s = scheduler([a, b, c], clock);
      expect(s.due().map((d) => d.id)).toEqual(["job:a", "job:c"]);
      expect(state(s, "job:b")?.waitingFor).toBe("target nas busy (1 of 1)");
      expect(state(s, "job:b")?.running).toBeUndefined();
      // The waiting task does not make the daemon spin: the next wake is the others' next start.
      expect(s.nextWake()).toBeUndefined();
      clock.advance(10 * MIN);
      expect(s.due()).toEqual([]);
      s.finished("job:a", true);
      expect(iso(s.nextWake())).toBe("2025-01-01T00:10:00.000Z");
      expect(s.due()).toEqual([
        { id: "job:b", reason: "schedule", attempt: 0, scheduledFor: at("2025-01-01T00:00:00Z") },
      ]);
      expect(state(s, "job:b")?.waitingFor).toBeUndefined();
      // An @every task is anchored at its actual start.
      expect(iso(state(s, "job:b")?.next)).toBe("2025-01-01T01:10:00.000Z");
    });

    it("a limit of 2 lets both share the target", () => {
      const clock = new ManualClock("2025-01-01T00:00:00Z");
      const s = scheduler([a, b], clock, { targetConcurrency: 2 });
      expect(s.due().map((d) => d.id)).toEqual(["job:a", "job:b"]);
    });

    it("the task due first gets the slot", () => {
      const clock = new ManualClock("2025-01-01T00:00:00Z");
      const s = scheduler(
        [
          { id: "job:late", schedule: cron("30 * * * *"), targets: ["nas"] },
          { id: "job:early", schedule: cron("10 * * * *"), targets: ["nas"] },
        ],
        clock,
      );
      clock.set("2025-01-01T00:45:00Z");
      expect(s.due().map((d) => d.id)).toEqual(["job:early"]);
      expect(state(s, "job:late")?.waitingFor).toBe("target nas busy (1 of 1)");
    });
  });

  describe("trigger", () => {
    it("runs a task now, once, and refuses an unknown one", () => {
      const clock = new ManualClock("2025-01-01T10:00:00Z");
      const s = scheduler([{ id: "job:app", schedule: cron("0 3 * * *"), targets: [] }], clock);
      expect(() => s.trigger("job:nope")).toThrow(BulwarkError);
      try {
        s.trigger("job:nope");
      } catch (err) {
        expect((err as BulwarkError).code).toBe("USAGE");
        expect((err as BulwarkError).message).toContain("job:nope");
      }
      expect(s.trigger("job:app")).toBe(true);
      expect(s.trigger("job:app")).toBe(true);
      expect(iso(s.nextWake())).toBe("2025-01-01T10:00:00.000Z");
      expect(s.due()).toEqual([
        { id: "job:app", reason: "trigger", attempt: 0, scheduledFor: at("2025-01-01T10:00:00Z") },
      ]);
      expect(s.trigger("job:app")).toBe(false);
      s.finished("job:app", true);
      expect(s.due()).toEqual([]);
      expect(iso(s.nextWake())).toBe("2025-01-02T03:00:00.000Z");
    });
  });

  describe("setTasks", () => {
    it("keeps a running task's state, plans new tasks, and drops removed ones once they end", () => {
      const clock = new ManualClock("2025-01-01T00:00:00Z");
      const app: Task = { id: "job:app", schedule: every(HOUR), targets: ["nas"] };
      const old: Task = { id: "job:old", schedule: every(HOUR), targets: ["s3"] };
      const idle: Task = { id: "job:idle", schedule: cron("0 3 * * *"), targets: ["b2"] };
      const s = scheduler([app, old, idle], clock);
      expect(s.due().map((d) => d.id)).toEqual(["job:app", "job:old"]);
      clock.advance(5 * MIN);

      const fresh: Task = { id: "job:new", schedule: every(HOUR), targets: ["nas"] };
      s.setTasks([{ ...app, targets: ["nas", "b2"] }, fresh]);
      expect(s.states().map((t) => t.id)).toEqual(["job:app", "job:new", "job:old"]);
      expect(state(s, "job:app")?.running).toEqual({
        since: at("2025-01-01T00:00:00Z"),
        reason: "schedule",
        attempt: 0,
      });
      expect(iso(state(s, "job:app")?.next)).toBe("2025-01-01T01:00:00.000Z");
      expect(() => s.trigger("job:old")).toThrow(/no scheduled task/);
      // The kept task still runs: no second start; the new one waits for nas.
      expect(s.due()).toEqual([]);
      expect(state(s, "job:new")?.waitingFor).toBe("target nas busy (1 of 1)");

      s.finished("job:old", true);
      expect(s.states().map((t) => t.id)).toEqual(["job:app", "job:new"]);
      s.finished("job:app", true);
      expect(s.due().map((d) => d.id)).toEqual(["job:new"]);
    });

    it("replans a task whose schedule changed", () => {
      const clock = new ManualClock("2025-01-01T00:00:00Z");
      const s = scheduler([{ id: "job:app", schedule: cron("0 3 * * *"), targets: [] }], clock);
      expect(iso(s.nextWake())).toBe("2025-01-01T03:00:00.000Z");
      s.setTasks([{ id: "job:app", schedule: cron("0 1 * * *"), targets: [] }]);
      expect(iso(s.nextWake())).toBe("2025-01-01T01:00:00.000Z");
    });
  });
});
