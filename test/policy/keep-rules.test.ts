// Calendar buckets use the process's local time zone; pin it so the expectations below are exact.
process.env.TZ = "UTC";

import { describe, expect, it } from "vitest";

import { BulwarkError } from "../../src/core/errors.js";
import {
  applyKeepRules,
  describeKeepRules,
  formatDuration,
  isEmptyKeepRules,
  parseDuration,
  type KeepGroup,
  type KeepRules,
  type SnapshotSummary,
} from "../../src/policy/keep-rules.js";

const NOW = new Date("2030-01-01T00:00:00Z");

function snap(id: string, iso: string, extra: Partial<SnapshotSummary> = {}): SnapshotSummary {
  return { id, time: new Date(iso), hostname: "host", paths: ["/data"], tags: [], ...extra };
}

/** One snapshot per day at 12:00 UTC from `from` to `to` inclusive, ids "dYYYY-MM-DD". */
function daily(from: string, to: string): SnapshotSummary[] {
  const out: SnapshotSummary[] = [];
  for (let t = Date.parse(`${from}T12:00:00Z`); t <= Date.parse(`${to}T12:00:00Z`); t += 86_400_000) {
    const day = new Date(t).toISOString().slice(0, 10);
    out.push(snap(`d${day}`, `${day}T12:00:00Z`));
  }
  return out;
}

function only(groups: KeepGroup[]): KeepGroup {
  expect(groups).toHaveLength(1);
  return groups[0]!;
}

function run(snapshots: SnapshotSummary[], policy: KeepRules) {
  const group = only(applyKeepRules(snapshots, policy, undefined, { now: NOW }));
  const kept = group.decisions.filter((d) => d.keep).map((d) => d.snapshot.id);
  const reasons = Object.fromEntries(group.decisions.map((d) => [d.snapshot.id, d.reasons]));
  return { group, kept, reasons };
}

function usageError(fn: () => unknown): BulwarkError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(BulwarkError);
    expect((err as BulwarkError).code).toBe("USAGE");
    return err as BulwarkError;
  }
  throw new Error("expected a USAGE error");
}

describe("parseDuration", () => {
  it("parses every unit", () => {
    expect(parseDuration("1y2m3d4h")).toEqual({ years: 1, months: 2, weeks: 0, days: 3, hours: 4 });
    expect(parseDuration("2w")).toEqual({ years: 0, months: 0, weeks: 2, days: 0, hours: 0 });
    expect(parseDuration(" 36h ")).toEqual({ years: 0, months: 0, weeks: 0, days: 0, hours: 36 });
    expect(parseDuration("5d1y")).toEqual({ years: 1, months: 0, weeks: 0, days: 5, hours: 0 });
    expect(parseDuration("0d")).toEqual({ years: 0, months: 0, weeks: 0, days: 0, hours: 0 });
  });

  it("formats canonically", () => {
    expect(formatDuration(parseDuration("4h3d2m1y1w"))).toBe("1y2m1w3d4h");
    expect(formatDuration(parseDuration("0y"))).toBe("0h");
  });

  it.each([
    ["", "empty"],
    ["   ", "empty"],
    ["abc", 'found "a" where a number was expected'],
    ["5", "the number 5 has no unit"],
    ["1y5", "the number 5 has no unit"],
    ["3x", 'unknown unit "x" after 3'],
    ["1D", 'unknown unit "D" after 1'],
    ["1.5d", 'unknown unit "." after 1'],
    ["-1d", 'found "-" where a number was expected'],
    ["d", 'found "d" where a number was expected'],
    ["1d 2h", 'found " " where a number was expected'],
    ["1d1d", 'the unit "d" appears more than once'],
    ["99999999999999999999d", "too large"],
  ])("rejects %j", (input, detail) => {
    const err = usageError(() => parseDuration(input));
    expect(err.message).toContain(`invalid duration ${JSON.stringify(input)}`);
    expect(err.message).toContain(detail);
    expect(err.message).toContain('e.g. "1y2m3d4h"');
  });
});

describe("calendar buckets", () => {
  it("keeps the documented set for a year of daily snapshots (daily 7, weekly 4, monthly 12, yearly 2)", () => {
    const snapshots = daily("2023-01-01", "2023-12-31");
    expect(snapshots).toHaveLength(365);
    const { group, kept, reasons } = run(snapshots, { daily: 7, weekly: 4, monthly: 12, yearly: 2 });

    expect(kept).toEqual([
      // daily 7
      "d2023-12-31",
      "d2023-12-30",
      "d2023-12-29",
      "d2023-12-28",
      "d2023-12-27",
      "d2023-12-26",
      "d2023-12-25",
      // weekly: 2023-12-31 is a Sunday, so the ISO weeks before it end on these Sundays
      "d2023-12-24",
      "d2023-12-17",
      "d2023-12-10",
      // monthly: the last day of each month
      "d2023-11-30",
      "d2023-10-31",
      "d2023-09-30",
      "d2023-08-31",
      "d2023-07-31",
      "d2023-06-30",
      "d2023-05-31",
      "d2023-04-30",
      "d2023-03-31",
      "d2023-02-28",
      "d2023-01-31",
      // yearly had one count left after 2023: the oldest snapshot stretches the history
      "d2023-01-01",
    ]);
    expect(reasons["d2023-12-31"]).toEqual([
      "daily snapshot",
      "weekly snapshot",
      "monthly snapshot",
      "yearly snapshot",
    ]);
    expect(reasons["d2023-12-25"]).toEqual(["daily snapshot"]);
    expect(reasons["d2023-12-24"]).toEqual(["weekly snapshot"]);
    expect(reasons["d2023-02-28"]).toEqual(["monthly snapshot"]);
    expect(reasons["d2023-01-01"]).toEqual(["oldest yearly snapshot"]);
    expect(reasons["d2023-12-23"]).toEqual([]);
    expect(group.decisions.filter((d) => !d.keep)).toHaveLength(365 - 22);
  });

  it("spends every count on real buckets across a year boundary and does not keep the oldest then", () => {
    const { kept, reasons } = run(daily("2023-07-01", "2024-06-30"), {
      daily: 7,
      weekly: 4,
      monthly: 12,
      yearly: 2,
    });
    expect(kept).toEqual([
      "d2024-06-30",
      "d2024-06-29",
      "d2024-06-28",
      "d2024-06-27",
      "d2024-06-26",
      "d2024-06-25",
      "d2024-06-24",
      "d2024-06-23",
      "d2024-06-16",
      "d2024-06-09",
      "d2024-05-31",
      "d2024-04-30",
      "d2024-03-31",
      "d2024-02-29",
      "d2024-01-31",
      "d2023-12-31",
      "d2023-11-30",
      "d2023-10-31",
      "d2023-09-30",
      "d2023-08-31",
      "d2023-07-31",
    ]);
    expect(reasons["d2023-12-31"]).toEqual(["monthly snapshot", "yearly snapshot"]);
    expect(reasons["d2023-07-01"]).toEqual([]);
  });

  it("uses ISO week years for weekly buckets", () => {
    // 2021-01-01..03 belong to ISO week 2020-W53; 2021-01-04 starts 2021-W01.
    const { kept } = run(daily("2020-12-20", "2021-01-05"), { weekly: 3 });
    expect(kept).toEqual(["d2021-01-05", "d2021-01-03", "d2020-12-27"]);
  });

  it("keeps the newest snapshot of each hour", () => {
    const snapshots = [
      snap("a", "2024-03-10T10:05:00Z"),
      snap("b", "2024-03-10T10:40:00Z"),
      snap("c", "2024-03-10T11:15:00Z"),
      snap("d", "2024-03-10T11:50:00Z"),
      snap("e", "2024-03-10T12:30:00Z"),
    ];
    expect(run(snapshots, { hourly: 2 }).kept).toEqual(["e", "d"]);
    expect(run(snapshots, { hourly: 3 }).kept).toEqual(["e", "d", "b"]);
  });

  it("treats -1 as unlimited, which also keeps the oldest snapshot", () => {
    const snapshots = [
      snap("a", "2024-03-10T10:05:00Z"),
      snap("b", "2024-03-10T10:40:00Z"),
      snap("c", "2024-03-10T11:15:00Z"),
      snap("d", "2024-03-10T11:50:00Z"),
      snap("e", "2024-03-10T12:30:00Z"),
    ];
    const { kept, reasons } = run(snapshots, { hourly: -1 });
    expect(kept).toEqual(["e", "d", "b", "a"]);
    expect(reasons["a"]).toEqual(["oldest hourly snapshot"]);

    const year = run(daily("2023-01-01", "2023-12-31"), { monthly: -1 });
    expect(year.kept).toHaveLength(13);
    expect(year.kept.at(-1)).toBe("d2023-01-01");

    expect(run(snapshots, { last: -1 }).kept).toEqual(["e", "d", "c", "b", "a"]);
  });

  it("uses the local time zone of the process", () => {
    const snapshots = [
      snap("late", "2023-06-02T02:00:00Z"), // 2023-06-01 22:00 in New York
      snap("early", "2023-06-01T20:00:00Z"), // 2023-06-01 16:00 in New York
      snap("before", "2023-05-31T12:00:00Z"),
    ];
    expect(run(snapshots, { daily: 2 }).kept).toEqual(["late", "early"]);
    process.env.TZ = "America/New_York";
    try {
      expect(run(snapshots, { daily: 2 }).kept).toEqual(["late", "before"]);
    } finally {
      process.env.TZ = "UTC";
    }
    expect(new Date("2023-06-02T02:00:00Z").getHours()).toBe(2);
  });
});

describe("last", () => {
  const snapshots = [
    snap("s3", "2024-01-03T00:00:00Z"),
    snap("s1", "2024-01-01T00:00:00Z"),
    snap("s5", "2024-01-05T00:00:00Z"),
    snap("s2", "2024-01-02T00:00:00Z"),
    snap("s4", "2024-01-04T00:00:00Z"),
  ];

  it("keeps the n newest, sorted newest first, without touching the input", () => {
    const before = snapshots.map((s) => s.id);
    const { group, kept, reasons } = run(snapshots, { last: 2 });
    expect(kept).toEqual(["s5", "s4"]);
    expect(group.decisions.map((d) => d.snapshot.id)).toEqual(["s5", "s4", "s3", "s2", "s1"]);
    expect(reasons["s5"]).toEqual(["last snapshot"]);
    expect(reasons["s3"]).toEqual([]);
    expect(group.decisions[0]!.snapshot).toBe(snapshots[2]);
    expect(snapshots.map((s) => s.id)).toEqual(before);
  });

  it("keeps everything when n exceeds the group, with no 'oldest' reason", () => {
    const { kept, reasons } = run(snapshots, { last: 10 });
    expect(kept).toEqual(["s5", "s4", "s3", "s2", "s1"]);
    expect(reasons["s1"]).toEqual(["last snapshot"]);
  });

  it("orders equal times by id so the input order does not matter", () => {
    const a = [snap("x", "2024-01-01T00:00:00Z"), snap("y", "2024-01-01T00:00:00Z")];
    expect(run(a, { last: 1 }).kept).toEqual(["y"]);
    expect(run([...a].reverse(), { last: 1 }).kept).toEqual(["y"]);
  });
});

describe("within durations", () => {
  it("keeps everything newer than the newest snapshot minus the duration, boundary excluded", () => {
    const { kept, reasons } = run(daily("2024-01-01", "2024-03-15"), { within: "1m" });
    // 2024-03-15 12:00 minus one month is 2024-02-15 12:00, which is not strictly newer.
    expect(kept).toHaveLength(29);
    expect(kept[0]).toBe("d2024-03-15");
    expect(kept.at(-1)).toBe("d2024-02-16");
    expect(reasons["d2024-02-20"]).toEqual(["within 1m"]);
    expect(reasons["d2024-02-15"]).toEqual([]);
  });

  it("supports weeks, days and hours and reports the canonical duration", () => {
    expect(run(daily("2024-01-01", "2024-01-31"), { within: "2w" }).kept).toHaveLength(14);
    const { kept, reasons } = run(daily("2024-01-01", "2024-01-31"), { within: "12h1d" });
    expect(kept).toEqual(["d2024-01-31", "d2024-01-30"]);
    expect(reasons["d2024-01-30"]).toEqual(["within 1d12h"]);
  });

  it("is relative to the newest snapshot, not to the current time", () => {
    const { kept } = run(daily("2001-01-01", "2001-01-10"), { within: "3d" });
    expect(kept).toEqual(["d2001-01-10", "d2001-01-09", "d2001-01-08"]);
  });

  it("ignores snapshots from the future when choosing the reference time, but keeps them", () => {
    const snapshots = [...daily("2024-01-01", "2024-01-10"), snap("future", "2099-01-01T00:00:00Z")];
    const group = only(
      applyKeepRules(snapshots, { within: "3d" }, undefined, { now: new Date("2024-06-01") }),
    );
    expect(group.decisions.filter((d) => d.keep).map((d) => d.snapshot.id)).toEqual([
      "future",
      "d2024-01-10",
      "d2024-01-09",
      "d2024-01-08",
    ]);
  });

  it("keeps the newest snapshot per bucket inside a withinX range", () => {
    const snapshots: SnapshotSummary[] = [];
    for (let day = 1; day <= 5; day++) {
      for (const hour of ["00", "06", "12", "18"]) {
        snapshots.push(snap(`0${day}T${hour}`, `2024-01-0${day}T${hour}:00:00Z`));
      }
    }
    // Cut-off 2024-01-03 18:00 (excluded).
    const twoDays = run(snapshots, { withinDaily: "2d" });
    expect(twoDays.kept).toEqual(["05T18", "04T18"]);
    expect(twoDays.reasons["05T18"]).toEqual(["daily within 2d"]);

    // When the range reaches the oldest snapshot, it is kept too.
    const tenDays = run(snapshots, { withinDaily: "10d" });
    expect(tenDays.kept).toEqual(["05T18", "04T18", "03T18", "02T18", "01T18", "01T00"]);
    expect(tenDays.reasons["01T00"]).toEqual(["oldest daily within 10d"]);

    const hourly = run(snapshots, { withinHourly: "12h" });
    expect(hourly.kept).toEqual(["05T18", "05T12"]);
    expect(hourly.reasons["05T12"]).toEqual(["hourly within 12h"]);
  });

  it("applies withinWeekly, withinMonthly and withinYearly buckets", () => {
    const year = daily("2022-01-01", "2023-12-31");
    expect(run(year, { withinMonthly: "3m" }).kept).toEqual(["d2023-12-31", "d2023-11-30", "d2023-10-31"]);
    expect(run(year, { withinWeekly: "15d" }).kept).toEqual(["d2023-12-31", "d2023-12-24", "d2023-12-17"]);
    const yearly = run(year, { withinYearly: "5y" });
    expect(yearly.kept).toEqual(["d2023-12-31", "d2022-12-31", "d2022-01-01"]);
    expect(yearly.reasons["d2022-12-31"]).toEqual(["yearly within 5y"]);
  });
});

describe("tags", () => {
  const snapshots = [
    snap("none", "2024-01-05T00:00:00Z"),
    snap("x", "2024-01-04T00:00:00Z", { tags: ["x"] }),
    snap("xy", "2024-01-03T00:00:00Z", { tags: ["y", "x"] }),
    snap("y", "2024-01-02T00:00:00Z", { tags: ["y"] }),
    snap("z", "2024-01-01T00:00:00Z", { tags: ["z"] }),
  ];

  it("keeps snapshots that carry all tags of any listed set", () => {
    const { kept, reasons } = run(snapshots, { keepTags: [["x", "y"], ["z"]] });
    expect(kept).toEqual(["xy", "z"]);
    expect(reasons["xy"]).toEqual(["has tags [x,y]"]);
    expect(reasons["z"]).toEqual(["has tags [z]"]);
    expect(run(snapshots, { keepTags: [["x"]] }).kept).toEqual(["x", "xy"]);
  });

  it("lists every matching set", () => {
    expect(run(snapshots, { keepTags: [["x"], ["y"]] }).reasons["xy"]).toEqual([
      "has tags [x]",
      "has tags [y]",
    ]);
  });

  it('matches only untagged snapshots with the empty tag ""', () => {
    expect(run(snapshots, { keepTags: [[""]] }).kept).toEqual(["none"]);
  });

  it("can remove every snapshot of a group (the CLI must guard against this)", () => {
    expect(run(snapshots, { keepTags: [["missing"]] }).kept).toEqual([]);
  });
});

describe("multiple reasons", () => {
  it("lists every rule that keeps a snapshot, in a fixed order", () => {
    const snapshots = [
      snap("new", "2024-05-01T10:00:00Z", { tags: ["important"] }),
      snap("old", "2024-04-01T10:00:00Z", { tags: ["important"] }),
    ];
    const { reasons } = run(snapshots, {
      keepTags: [["important"]],
      within: "1d",
      last: 1,
      daily: 1,
      withinHourly: "1h",
    });
    expect(reasons["new"]).toEqual([
      "has tags [important]",
      "within 1d",
      "last snapshot",
      "daily snapshot",
      "hourly within 1h",
    ]);
    expect(reasons["old"]).toEqual(["has tags [important]"]);
  });
});

describe("grouping", () => {
  const snapshots = [
    snap("h1a-old", "2024-01-01T00:00:00Z", { hostname: "h1", paths: ["/a"], tags: ["b", "a"] }),
    snap("h1a-new", "2024-01-03T00:00:00Z", { hostname: "h1", paths: ["/a"], tags: ["a", "b"] }),
    snap("h1b", "2024-01-02T00:00:00Z", { hostname: "h1", paths: ["/b"] }),
    snap("h2a", "2024-01-04T00:00:00Z", { hostname: "h2", paths: ["/a"] }),
    snap("h1xy-old", "2024-01-05T00:00:00Z", { hostname: "h1", paths: ["/y", "/x"] }),
    snap("h1xy-new", "2024-01-06T00:00:00Z", { hostname: "h1", paths: ["/x", "/y"] }),
  ];
  const summary = (groups: KeepGroup[]) =>
    groups.map((g) => ({
      key: g.key,
      ids: g.decisions.map((d) => d.snapshot.id),
      kept: g.decisions.filter((d) => d.keep).map((d) => d.snapshot.id),
    }));

  it("groups by host and paths by default, paths order-insensitive", () => {
    expect(summary(applyKeepRules(snapshots, { last: 1 }, undefined, { now: NOW }))).toEqual([
      { key: { hostname: "h1", paths: ["/a"] }, ids: ["h1a-new", "h1a-old"], kept: ["h1a-new"] },
      { key: { hostname: "h1", paths: ["/b"] }, ids: ["h1b"], kept: ["h1b"] },
      { key: { hostname: "h1", paths: ["/x", "/y"] }, ids: ["h1xy-new", "h1xy-old"], kept: ["h1xy-new"] },
      { key: { hostname: "h2", paths: ["/a"] }, ids: ["h2a"], kept: ["h2a"] },
    ]);
  });

  it("groups by host only", () => {
    expect(summary(applyKeepRules(snapshots, { last: 1 }, ["host"], { now: NOW }))).toEqual([
      {
        key: { hostname: "h1" },
        ids: ["h1xy-new", "h1xy-old", "h1a-new", "h1b", "h1a-old"],
        kept: ["h1xy-new"],
      },
      { key: { hostname: "h2" }, ids: ["h2a"], kept: ["h2a"] },
    ]);
  });

  it("groups by sorted tags", () => {
    const groups = applyKeepRules(snapshots, { last: 1 }, ["tags"], { now: NOW });
    expect(summary(groups).map((g) => [g.key, g.kept])).toEqual([
      [{ tags: [] }, ["h1xy-new"]],
      [{ tags: ["a", "b"] }, ["h1a-new"]],
    ]);
  });

  it("puts everything in one group with an empty group-by list", () => {
    expect(summary(applyKeepRules(snapshots, { last: 1 }, [], { now: NOW }))).toEqual([
      {
        key: {},
        ids: ["h1xy-new", "h1xy-old", "h2a", "h1a-new", "h1b", "h1a-old"],
        kept: ["h1xy-new"],
      },
    ]);
  });

  it("keeps within-durations relative to each group's own newest snapshot", () => {
    const groups = applyKeepRules(snapshots, { within: "1d" }, ["host"], { now: NOW });
    expect(summary(groups).map((g) => g.kept)).toEqual([["h1xy-new"], ["h2a"]]);
  });

  it("rejects unknown group-by fields", () => {
    const err = usageError(() => applyKeepRules(snapshots, { last: 1 }, ["host", "bogus" as "host"]));
    expect(err.message).toContain('"bogus"');
  });

  it("returns no groups for no snapshots", () => {
    expect(applyKeepRules([], { last: 1 })).toEqual([]);
  });
});

describe("empty and invalid policies", () => {
  it("detects empty policies", () => {
    expect(isEmptyKeepRules({})).toBe(true);
    expect(isEmptyKeepRules({ last: 0, daily: 0, within: "0d", withinDaily: "0h", keepTags: [] })).toBe(true);
    expect(isEmptyKeepRules({ last: 1 })).toBe(false);
    expect(isEmptyKeepRules({ yearly: -1 })).toBe(false);
    expect(isEmptyKeepRules({ within: "1h" })).toBe(false);
    expect(isEmptyKeepRules({ withinMonthly: "1y" })).toBe(false);
    expect(isEmptyKeepRules({ keepTags: [["a"]] })).toBe(false);
  });

  it("keeps everything under an empty policy", () => {
    const { kept, reasons } = run(daily("2024-01-01", "2024-01-03"), { daily: 0 });
    expect(kept).toEqual(["d2024-01-03", "d2024-01-02", "d2024-01-01"]);
    expect(reasons["d2024-01-01"]).toEqual(["policy is empty"]);
  });

  it.each([
    [{ daily: -2 }, "daily: -2"],
    [{ last: 1.5 }, "last: 1.5"],
    [{ weekly: Number.NaN }, "weekly: NaN"],
    [{ monthly: "3" as unknown as number }, 'monthly: "3"'],
  ])("rejects bad counts %j", (policy, shown) => {
    const err = usageError(() => applyKeepRules(daily("2024-01-01", "2024-01-02"), policy));
    expect(err.message).toContain(shown);
    usageError(() => isEmptyKeepRules(policy));
  });

  it("rejects bad durations, naming the option and the value", () => {
    const err = usageError(() => applyKeepRules(daily("2024-01-01", "2024-01-02"), { withinDaily: "3x" }));
    expect(err.message).toContain("withinDaily");
    expect(err.message).toContain('"3x"');
    usageError(() => isEmptyKeepRules({ within: "" }));
  });

  it("rejects snapshots with an invalid time", () => {
    expect(() => applyKeepRules([snap("bad", "not a date")], { last: 1 })).toThrow(
      expect.objectContaining({ code: "INVALID_DATA" }),
    );
  });
});

describe("describeKeepRules", () => {
  it("describes each rule", () => {
    expect(
      describeKeepRules({ last: 3, daily: -1, withinWeekly: "1m", within: "2w", keepTags: [["a", "b"]] }),
    ).toBe(
      "keep 3 latest snapshots, all daily snapshots, weekly snapshots within 1m, " +
        "all snapshots within 2w of the newest, all snapshots with tags [a,b]",
    );
    expect(describeKeepRules({})).toBe("empty policy (keeps everything)");
  });
});
