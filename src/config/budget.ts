/**
 * A verification budget: how much one run may read, as a size ("2GiB", "500MB", "1073741824") or as a
 * fixed duration ("20m", "1h30m"; see duration.ts). Binary units (KiB, MiB, GiB, TiB) are powers of 1024,
 * decimal ones (kB, MB, GB, TB) powers of 1000; a bare number is bytes.
 */
import { parseFixedDuration } from "./duration.js";

export type Budget = { bytes: number } | { ms: number };

const SIZE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};

/** The budget, or an explanation of what is wrong with the text. */
export function parseBudget(text: string): Budget | { error: string } {
  const s = text.trim();
  const size = /^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$/.exec(s);
  if (size !== null) {
    const unit = (size[2] ?? "").toLowerCase();
    const factor = unit === "" ? 1 : SIZE_UNITS[unit];
    if (factor !== undefined) {
      const bytes = Math.floor(Number(size[1]) * factor);
      if (bytes < 1) return { error: `the budget ${JSON.stringify(text)} is less than a byte` };
      if (!Number.isSafeInteger(bytes)) return { error: `the budget ${JSON.stringify(text)} is too large` };
      return { bytes };
    }
  }
  const duration = parseFixedDuration(s);
  if ("ms" in duration) {
    if (duration.ms < 1000) return { error: `the budget ${JSON.stringify(text)} is shorter than a second` };
    return { ms: duration.ms };
  }
  return {
    error: `${JSON.stringify(text)} is neither a size (e.g. 2GiB, 500MB) nor a duration (e.g. 20m, 1h30m)`,
  };
}
