/**
 * Retention policies as written: the keep rules (`keepDaily: 7` in the config, `--keep-daily 7` on the
 * command line) as one type, and their validation into the parsed form src/policy/keep-rules.ts applies.
 * Pure. It lives in config, the lower layer, because resolving a config rejects a retention that is
 * malformed or keeps nothing; the retention engine imports it from here (and re-exports the public names).
 *
 * Durations are calendar durations ("1y2m3d4h", m means months), unlike the fixed-unit ages of
 * ./duration.ts (an RPO).
 */

import { BulwarkError } from "../core/errors.js";

export interface KeepRules {
  last?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
  /** Duration like "1y2m3d4h" (y years, m months, w weeks, d days, h hours), relative to the newest snapshot. */
  within?: string;
  withinHourly?: string;
  withinDaily?: string;
  withinWeekly?: string;
  withinMonthly?: string;
  withinYearly?: string;
  /** Keep snapshots having all tags of any listed set. */
  keepTags?: string[][];
}

/** A calendar duration. Months and years are calendar units, so their length depends on the date. */
export interface Duration {
  years: number;
  months: number;
  weeks: number;
  days: number;
  hours: number;
}

const DURATION_FORM =
  'expected one or more <number><unit> parts with units y (years), m (months), w (weeks), d (days), h (hours), e.g. "1y2m3d4h" or "7d"';

const UNIT_FIELD: Record<string, keyof Duration> = {
  y: "years",
  m: "months",
  w: "weeks",
  d: "days",
  h: "hours",
};

const DURATION_ORDER: ReadonlyArray<[keyof Duration, string]> = [
  ["years", "y"],
  ["months", "m"],
  ["weeks", "w"],
  ["days", "d"],
  ["hours", "h"],
];

function badDuration(s: string, detail: string): BulwarkError {
  return new BulwarkError("USAGE", `invalid duration ${JSON.stringify(s)}: ${detail}; ${DURATION_FORM}`);
}

/**
 * Parses "1y2m3w4d5h"-style durations. Parts may come in any order but each unit at most once; numbers are
 * non-negative whole numbers. Surrounding white space is ignored. "0d" parses to a zero duration, which a
 * policy treats as unset.
 */
export function parseDuration(s: string): Duration {
  if (typeof s !== "string") throw badDuration(String(s), "not a string");
  const text = s.trim();
  if (text === "") throw badDuration(s, "it is empty");
  const d: Duration = { years: 0, months: 0, weeks: 0, days: 0, hours: 0 };
  const seen = new Set<string>();
  const part = /(\d*)(\D?)/y;
  let pos = 0;
  while (pos < text.length) {
    part.lastIndex = pos;
    const m = part.exec(text);
    const digits = m?.[1] ?? "";
    const unit = m?.[2] ?? "";
    if (digits === "") {
      throw badDuration(s, `found ${JSON.stringify(text[pos])} where a number was expected`);
    }
    if (unit === "") throw badDuration(s, `the number ${digits} has no unit`);
    const field = UNIT_FIELD[unit];
    if (field === undefined) throw badDuration(s, `unknown unit ${JSON.stringify(unit)} after ${digits}`);
    if (seen.has(unit)) throw badDuration(s, `the unit ${JSON.stringify(unit)} appears more than once`);
    seen.add(unit);
    const n = Number(digits);
    if (!Number.isSafeInteger(n)) throw badDuration(s, `the number ${digits} is too large`);
    d[field] = n;
    pos += digits.length + unit.length;
  }
  return d;
}

/** Canonical text of a duration, e.g. "1y2m3d"; "0h" for a zero duration. */
export function formatDuration(d: Duration): string {
  let out = "";
  for (const [field, unit] of DURATION_ORDER) {
    if (d[field] !== 0) out += `${d[field]}${unit}`;
  }
  return out === "" ? "0h" : out;
}

function isZeroDuration(d: Duration): boolean {
  return DURATION_ORDER.every(([field]) => d[field] === 0);
}

export type BucketKind = "hourly" | "daily" | "weekly" | "monthly" | "yearly";

const COUNT_FIELDS = ["last", "hourly", "daily", "weekly", "monthly", "yearly"] as const;
type CountField = (typeof COUNT_FIELDS)[number];

const WITHIN_FIELDS: ReadonlyArray<[keyof KeepRules, BucketKind]> = [
  ["withinHourly", "hourly"],
  ["withinDaily", "daily"],
  ["withinWeekly", "weekly"],
  ["withinMonthly", "monthly"],
  ["withinYearly", "yearly"],
];

export interface ParsedKeepRules {
  counts: Array<{ field: CountField; count: number }>;
  within: Duration | undefined;
  withinBuckets: Array<{ kind: BucketKind; duration: Duration }>;
  keepTags: string[][];
}

function checkCount(field: CountField, value: unknown): number {
  if (value === undefined) return 0;
  if (typeof value !== "number" || !Number.isInteger(value) || value < -1) {
    const shown = typeof value === "number" ? String(value) : (JSON.stringify(value) ?? typeof value);
    throw new BulwarkError(
      "USAGE",
      `invalid retention count for ${field}: ${shown}; expected a whole number >= 0, or -1 for unlimited`,
    );
  }
  return value;
}

function checkDuration(field: keyof KeepRules, value: unknown): Duration | undefined {
  if (value === undefined) return undefined;
  let d: Duration;
  try {
    d = parseDuration(value as string);
  } catch (err) {
    if (err instanceof BulwarkError)
      throw new BulwarkError("USAGE", `${field}: ${err.message}`, { cause: err });
    throw err;
  }
  return isZeroDuration(d) ? undefined : d;
}

export function parseKeepRules(p: KeepRules): ParsedKeepRules {
  const counts: ParsedKeepRules["counts"] = [];
  for (const field of COUNT_FIELDS) {
    const count = checkCount(field, p[field]);
    if (count !== 0) counts.push({ field, count });
  }
  const withinBuckets: ParsedKeepRules["withinBuckets"] = [];
  for (const [field, kind] of WITHIN_FIELDS) {
    const duration = checkDuration(field, p[field]);
    if (duration !== undefined) withinBuckets.push({ kind, duration });
  }
  const keepTags = p.keepTags ?? [];
  if (!Array.isArray(keepTags) || !keepTags.every((set) => Array.isArray(set))) {
    throw new BulwarkError("USAGE", "invalid keepTags: expected a list of tag lists");
  }
  return { counts, within: checkDuration("within", p.within), withinBuckets, keepTags };
}

/**
 * True if the policy keeps nothing by any rule: no count other than 0, no non-zero duration, no tag set.
 * Throws BulwarkError("USAGE") for malformed counts or durations, like {@link applyKeepRules}.
 */
export function isEmptyKeepRules(p: KeepRules): boolean {
  return isEmptyParsed(parseKeepRules(p));
}

export function isEmptyParsed(parsed: ParsedKeepRules): boolean {
  return (
    parsed.counts.length === 0 &&
    parsed.within === undefined &&
    parsed.withinBuckets.length === 0 &&
    parsed.keepTags.length === 0
  );
}
