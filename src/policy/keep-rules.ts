/**
 * Snapshot retention policy for `bulwark forget`, as pure logic: given snapshot summaries and a policy,
 * decide which snapshots to keep and why. Nothing here touches a repository.
 *
 * The semantics follow restic's `forget --keep-*` options so that people moving from restic get the
 * results they expect:
 *
 * - Snapshots are first split into groups (by default by host name and path set); the policy is applied to
 *   each group on its own.
 * - Within a group snapshots are ordered newest first. A snapshot is kept if at least one rule keeps it;
 *   every rule that keeps it is listed in its reasons.
 * - `last n` keeps the n newest snapshots.
 * - `hourly|daily|weekly|monthly|yearly n` walk the snapshots newest first and keep the newest snapshot of
 *   each calendar bucket (hour, day, ISO week, month, year) that has one, until n buckets have been used.
 *   Buckets only count periods that actually hold a snapshot. `-1` means no limit.
 *   When a counted rule still has budget left after the newest snapshot of every bucket was taken, it also
 *   keeps the oldest snapshot of the group (reason "oldest <kind> snapshot"), which stretches the history
 *   kept as far back as possible; restic does the same since 0.17.
 * - `within d` keeps every snapshot newer than (reference time - d).
 * - `withinHourly|...|withinYearly d` keep the newest snapshot of every bucket newer than (reference time - d),
 *   plus the group's oldest snapshot when it lies within the range (reason "oldest <kind> within <d>").
 * - The reference time is the time of the newest snapshot in the group that is not in the future (relative to
 *   `options.now`, default the current time). A snapshot with a bogus future time therefore cannot push every
 *   real snapshot out of a `within` window; future snapshots themselves are always inside it.
 * - `keepTags` keeps snapshots that carry every tag of at least one of the listed sets. The empty tag ""
 *   matches only snapshots without any tag; an empty set matches every snapshot.
 *
 * Calendar buckets use the local time zone of the process (as restic does), so "daily" means the user's
 * days. Set TZ (e.g. TZ=UTC) to make results independent of where the command runs.
 *
 * An empty policy (see {@link isEmptyKeepRules}) keeps everything here; the CLI must refuse to run `forget`
 * with one rather than interpret it as "forget all". The CLI should likewise refuse a non-empty policy that
 * would remove every snapshot of a group (only possible with `keepTags` alone), as restic does.
 */

import {
  formatDuration,
  isEmptyParsed,
  parseKeepRules,
  type BucketKind,
  type Duration,
  type ParsedKeepRules,
  type KeepRules,
} from "../config/keep-rules.js";
import { systemClock } from "../core/clock.js";
import { BulwarkError } from "../core/errors.js";

// The keep rules and their parser live in config (resolving a config validates them); the names callers
// of the retention engine use are re-exported from here.
export {
  formatDuration,
  isEmptyKeepRules,
  parseDuration,
  type Duration,
  type KeepRules,
} from "../config/keep-rules.js";

export interface SnapshotSummary {
  id: string;
  time: Date;
  hostname: string;
  paths: string[];
  tags: string[];
}

export type GroupBy = Array<"host" | "paths" | "tags">;

export const DEFAULT_GROUP_BY: readonly ("host" | "paths" | "tags")[] = ["host", "paths"];

export interface RetentionDecision {
  snapshot: SnapshotSummary;
  keep: boolean;
  /** Why the snapshot is kept, e.g. "last snapshot", "daily snapshot", "within 1y2m", "has tags [a,b]"; empty when removed. */
  reasons: string[];
}

export interface KeepGroup {
  /** Only the fields named in the group-by list are set; paths and tags are sorted copies. */
  key: { hostname?: string; paths?: string[]; tags?: string[] };
  /** Newest first. */
  decisions: RetentionDecision[];
}

export interface RetentionOptions {
  /** Snapshots after this instant are "in the future" and never serve as the reference time. Default: now. */
  now?: Date;
}

/** The instant `d` before `t`, calendar units in local time (month ends roll over, like Go's AddDate). */
function subtractDuration(t: Date, d: Duration): number {
  const c = new Date(t.getTime());
  c.setFullYear(c.getFullYear() - d.years, c.getMonth() - d.months, c.getDate() - d.days - 7 * d.weeks);
  const ms = c.getTime() - d.hours * 3_600_000;
  // Durations reaching beyond the representable range mean "everything".
  return Number.isNaN(ms) ? -Infinity : ms;
}

/** One-line description of a policy for "Applying policy: ..." output. */
export function describeKeepRules(p: KeepRules): string {
  const parsed = parseKeepRules(p);
  const parts: string[] = [];
  for (const { field, count } of parsed.counts) {
    const what = field === "last" ? "latest" : field;
    parts.push(count === -1 ? `all ${what} snapshots` : `${count} ${what} snapshots`);
  }
  for (const { kind, duration } of parsed.withinBuckets) {
    parts.push(`${kind} snapshots within ${formatDuration(duration)}`);
  }
  if (parsed.within !== undefined) {
    parts.push(`all snapshots within ${formatDuration(parsed.within)} of the newest`);
  }
  for (const set of parsed.keepTags) parts.push(`all snapshots with tags ${tagSetText(set)}`);
  return parts.length === 0 ? "empty policy (keeps everything)" : `keep ${parts.join(", ")}`;
}

// ---------------------------------------------------------------------------------------------------------
// Calendar buckets (local time)

const pad = (n: number, width = 2): string => String(n).padStart(width, "0");

function isoWeekKey(t: Date): string {
  // Calendar date in local time, then ISO week arithmetic on a UTC date (no DST surprises).
  const day = new Date(0);
  day.setUTCFullYear(t.getFullYear(), t.getMonth(), t.getDate());
  const mondayBased = (day.getUTCDay() + 6) % 7;
  day.setUTCDate(day.getUTCDate() - mondayBased + 3); // the Thursday of this week decides its year
  const weekYear = day.getUTCFullYear();
  const jan1 = new Date(0);
  jan1.setUTCFullYear(weekYear, 0, 1);
  const week = 1 + Math.floor((day.getTime() - jan1.getTime()) / (7 * 86_400_000));
  return `${pad(weekYear, 4)}-W${pad(week)}`;
}

function bucketKey(kind: BucketKind, t: Date): string {
  const y = pad(t.getFullYear(), 4);
  switch (kind) {
    case "hourly":
      return `${y}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ${pad(t.getHours())}`;
    case "daily":
      return `${y}-${pad(t.getMonth() + 1)}-${pad(t.getDate())}`;
    case "weekly":
      return isoWeekKey(t);
    case "monthly":
      return `${y}-${pad(t.getMonth() + 1)}`;
    case "yearly":
      return y;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Grouping

type GroupKey = KeepGroup["key"];

const byCodeUnits = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

function compareLists(a: string[] | undefined, b: string[] | undefined): number {
  const x = a ?? [];
  const y = b ?? [];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const c = byCodeUnits(x[i] ?? "", y[i] ?? "");
    if (c !== 0) return c;
  }
  return x.length - y.length;
}

function compareKeys(a: GroupKey, b: GroupKey): number {
  return (
    byCodeUnits(a.hostname ?? "", b.hostname ?? "") ||
    compareLists(a.paths, b.paths) ||
    compareLists(a.tags, b.tags)
  );
}

function groupKeyOf(s: SnapshotSummary, by: ReadonlySet<string>): GroupKey {
  const key: GroupKey = {};
  if (by.has("host")) key.hostname = s.hostname;
  if (by.has("paths")) key.paths = [...s.paths].sort(byCodeUnits);
  if (by.has("tags")) key.tags = [...s.tags].sort(byCodeUnits);
  return key;
}

function checkGroupBy(groupBy: readonly string[]): ReadonlySet<string> {
  for (const g of groupBy) {
    if (g !== "host" && g !== "paths" && g !== "tags") {
      throw new BulwarkError(
        "USAGE",
        `invalid group-by field ${JSON.stringify(g)}: expected any of "host", "paths", "tags"`,
      );
    }
  }
  return new Set(groupBy);
}

// ---------------------------------------------------------------------------------------------------------
// Applying the policy

function tagSetText(set: string[]): string {
  return `[${set.join(",")}]`;
}

function hasAllTags(s: SnapshotSummary, set: string[]): boolean {
  return set.every((tag) => (tag === "" ? s.tags.length === 0 : s.tags.includes(tag)));
}

/** Newest first; equal times ordered by id so the result does not depend on input order. */
function newestFirst(a: SnapshotSummary, b: SnapshotSummary): number {
  return b.time.getTime() - a.time.getTime() || byCodeUnits(b.id, a.id);
}

function decideGroup(sorted: SnapshotSummary[], p: ParsedKeepRules, now: number): RetentionDecision[] {
  let reference: number | undefined;
  for (const s of sorted) {
    const t = s.time.getTime();
    if (t <= now && (reference === undefined || t > reference)) reference = t;
  }
  const cutoff = (d: Duration): number =>
    reference === undefined ? -Infinity : subtractDuration(new Date(reference), d);

  const counters = p.counts.map(({ field, count }) => ({
    kind: field,
    remaining: count,
    lastBucket: undefined as string | undefined,
  }));
  const withinText = p.within === undefined ? "" : formatDuration(p.within);
  const withinCutoff = p.within === undefined ? Infinity : cutoff(p.within);
  const withinBuckets = p.withinBuckets.map(({ kind, duration }) => ({
    kind,
    text: formatDuration(duration),
    cutoff: cutoff(duration),
    lastBucket: undefined as string | undefined,
  }));

  return sorted.map((snapshot, index) => {
    const t = snapshot.time.getTime();
    const oldest = index === sorted.length - 1;
    const reasons: string[] = [];

    for (const set of p.keepTags) {
      if (hasAllTags(snapshot, set)) reasons.push(`has tags ${tagSetText(set)}`);
    }

    if (t > withinCutoff) reasons.push(`within ${withinText}`);

    for (const c of counters) {
      if (c.remaining === 0) continue;
      const bucket = c.kind === "last" ? `#${index}` : bucketKey(c.kind, snapshot.time);
      const fresh = bucket !== c.lastBucket;
      if (!fresh && !oldest) continue;
      reasons.push(`${fresh ? "" : "oldest "}${c.kind} snapshot`);
      c.lastBucket = bucket;
      if (c.remaining > 0) c.remaining--;
    }

    for (const w of withinBuckets) {
      if (!(t > w.cutoff)) continue;
      const bucket = bucketKey(w.kind, snapshot.time);
      const fresh = bucket !== w.lastBucket;
      if (!fresh && !oldest) continue;
      reasons.push(`${fresh ? "" : "oldest "}${w.kind} within ${w.text}`);
      w.lastBucket = bucket;
    }

    return { snapshot, keep: reasons.length > 0, reasons };
  });
}

/**
 * Groups the snapshots and decides for each whether the policy keeps it. Groups come out sorted by key,
 * decisions within a group newest first. The input array and its snapshots are not modified.
 *
 * Throws BulwarkError("USAGE") for a malformed policy or group-by list, and BulwarkError("INVALID_DATA") for a
 * snapshot whose time is not a valid date.
 */
export function applyKeepRules(
  snapshots: SnapshotSummary[],
  policy: KeepRules,
  groupBy: GroupBy = [...DEFAULT_GROUP_BY],
  options: RetentionOptions = {},
): KeepGroup[] {
  const parsed = parseKeepRules(policy);
  const empty = isEmptyParsed(parsed);
  const by = checkGroupBy(groupBy);
  const now = (options.now ?? systemClock.now()).getTime();

  const groups = new Map<string, { key: GroupKey; members: SnapshotSummary[] }>();
  for (const s of snapshots) {
    if (!(s.time instanceof Date) || Number.isNaN(s.time.getTime())) {
      throw new BulwarkError("INVALID_DATA", `snapshot ${s.id} has an invalid time`);
    }
    const key = groupKeyOf(s, by);
    const id = JSON.stringify([key.hostname ?? null, key.paths ?? null, key.tags ?? null]);
    let group = groups.get(id);
    if (group === undefined) {
      group = { key, members: [] };
      groups.set(id, group);
    }
    group.members.push(s);
  }

  const result: KeepGroup[] = [];
  for (const { key, members } of groups.values()) {
    const sorted = [...members].sort(newestFirst);
    const decisions = empty
      ? sorted.map((snapshot) => ({ snapshot, keep: true, reasons: ["policy is empty"] }))
      : decideGroup(sorted, parsed, now);
    result.push({ key, decisions });
  }
  return result.sort((a, b) => compareKeys(a.key, b.key));
}
