/**
 * Human-readable numbers for everything Bulwark prints: sizes, durations, rates and counts.
 *
 * One module so every command shows a size the same way. Output is locale-independent on purpose:
 * scripts and tests compare these strings, and a German locale must not turn "1,234" into "1.234".
 */

import { errorMessage } from "./errors.js";

const IEC_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"] as const;

/**
 * Bytes with binary (IEC) units: "0 B", "1023 B", "1.5 KiB", "12.3 MiB", "1.00 GiB".
 *
 * KiB and MiB get one decimal; GiB and larger get two, because a backup's size is mostly quoted in
 * GiB and 0.1 GiB (100 MiB) is too coarse to see it move.
 */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return `${bytes} B`;
  if (bytes < 0) return `-${formatBytes(-bytes)}`;
  if (bytes < 1024) return `${Math.round(bytes)} B`;

  let unitIndex = 0;
  let value = bytes;
  while (value >= 1024 && unitIndex < IEC_UNITS.length - 1) {
    value /= 1024;
    unitIndex++;
  }
  let decimals = unitIndex >= 3 ? 2 : 1;
  // Rounding can carry into the next unit (1023.96 KiB would print as "1024.0 KiB").
  if (Number(value.toFixed(decimals)) >= 1024 && unitIndex < IEC_UNITS.length - 1) {
    value /= 1024;
    unitIndex++;
    decimals = unitIndex >= 3 ? 2 : 1;
  }
  return `${value.toFixed(decimals)} ${IEC_UNITS[unitIndex]}`;
}

/** A transfer rate: "123.4 MiB/s". */
export function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(bytesPerSecond)}/s`;
}

/**
 * A duration for summaries: "850 ms", "12.4 s", "3m05s", "2h03m".
 *
 * The precision shrinks as the duration grows: nobody cares about the seconds of a two-hour backup.
 * Negative durations (a clock stepped backwards) print as zero.
 */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) ms = 0;
  if (Math.round(ms) < 1000) return `${Math.round(ms)} ms`;

  const tenthsOfSecond = Math.round(ms / 100);
  if (tenthsOfSecond < 600) return `${(tenthsOfSecond / 10).toFixed(1)} s`;

  const totalSeconds = Math.round(ms / 1000);
  if (totalSeconds < 3600) {
    return `${Math.floor(totalSeconds / 60)}m${pad2(totalSeconds % 60)}s`;
  }

  const totalMinutes = Math.round(ms / 60_000);
  return `${Math.floor(totalMinutes / 60)}h${pad2(totalMinutes % 60)}m`;
}

/**
 * A stopwatch reading for live progress: "0:07", "12:34", "1:02:03".
 * Whole seconds, truncated, so the display never runs ahead of the real elapsed time.
 */
export function formatClock(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) ms = 0;
  const totalSeconds = Math.floor(ms / 1000);
  const hours = Math.floor(totalSeconds / 3600);
  const minutes = Math.floor((totalSeconds % 3600) / 60);
  const seconds = totalSeconds % 60;
  return hours > 0 ? `${hours}:${pad2(minutes)}:${pad2(seconds)}` : `${minutes}:${pad2(seconds)}`;
}

/** An integer count with "," between thousands: "1,234,567". Fractions are rounded. */
export function formatCount(count: number): string {
  if (!Number.isFinite(count)) return String(count);
  const rounded = Math.round(count);
  const digits = String(Math.abs(rounded));
  const grouped = digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return rounded < 0 ? `-${grouped}` : grouped;
}

/**
 * The reason part of a Node file system error, without the errno code and path that Node puts
 * around it ("ENOENT: no such file or directory, open '/x'" -> "no such file or directory"), so
 * callers can write "cannot read X <path>: <reason>" without repeating the path.
 */
export function formatIoReason(err: unknown): string {
  const message = errorMessage(err);
  const match = /^[A-Z][A-Z0-9_]*: (.+?), [a-z_]+(?: '.*')?$/s.exec(message);
  return match?.[1] ?? message;
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}
