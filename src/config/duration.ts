/**
 * Fixed-length durations for RPOs and cadences: "90s", "30m", "24h", "1d12h", "2w". Units: s, m (minutes),
 * h, d (24 hours), w (7 days), each at most once, largest first. Retention's `within` uses its own calendar
 * syntax (src/policy/keep-rules.ts, where m means months); an RPO is an age, so it is measured in fixed units.
 */

const UNIT_MS: Record<string, number> = { w: 604_800_000, d: 86_400_000, h: 3_600_000, m: 60_000, s: 1000 };
const ORDER = ["w", "d", "h", "m", "s"];

/** The duration in milliseconds, or an explanation of what is wrong with the text. */
export function parseFixedDuration(text: string): { ms: number } | { error: string } {
  const s = text.trim();
  if (s === "") return { error: "the duration is empty" };
  const part = /(\d+)([a-z]+)/y;
  let pos = 0;
  let ms = 0;
  let last = -1;
  while (pos < s.length) {
    part.lastIndex = pos;
    const m = part.exec(s);
    if (m === null)
      return { error: `cannot read ${JSON.stringify(s.slice(pos))} (expected a number and a unit)` };
    const unit = m[2] ?? "";
    const idx = ORDER.indexOf(unit);
    if (idx < 0) return { error: `unknown unit ${JSON.stringify(unit)} (use w, d, h, m or s)` };
    if (idx <= last) return { error: `units must appear once each, largest first (w d h m s)` };
    last = idx;
    ms += Number(m[1]) * (UNIT_MS[unit] ?? 0);
    pos = part.lastIndex;
  }
  if (!Number.isSafeInteger(ms)) return { error: "the duration is too large" };
  return { ms };
}

/** A short human form of an age, e.g. "3d4h", "25m", "0s". */
export function formatAge(ms: number): string {
  let rest = Math.max(0, Math.floor(ms / 1000)) * 1000;
  let out = "";
  for (const unit of ["d", "h", "m", "s"]) {
    const size = UNIT_MS[unit] ?? 1;
    const n = Math.floor(rest / size);
    if (n > 0) out += `${n}${unit}`;
    rest -= n * size;
    // Two units are precise enough for a report.
    if (out.length > 0 && /\d+[a-z]\d+[a-z]/.test(out)) break;
  }
  return out === "" ? "0s" : out;
}
