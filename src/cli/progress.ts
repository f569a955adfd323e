/**
 * A one-line live status for long commands (backup, restore, check), redrawn in place on a terminal.
 *
 * Work code reports through a ProgressSink and never asks whether anyone is watching: the CLI decides
 * (a TTY, not --json, not --quiet) and passes `enabled`. Disabled, the sink prints only log lines, so
 * the same code path serves scripts and pipes. Time comes from an injectable clock so tests can check
 * exact output, and redraws are throttled because a backup reports thousands of updates a second.
 */

import type { Writable } from "node:stream";

import { formatBytes, formatClock, formatCount, formatRate } from "../core/format.js";

export interface ProgressUpdate {
  filesDone: number;
  /** Absent while the total is unknown (the scan is still running); then no percentage or ETA. */
  filesTotal?: number;
  bytesDone: number;
  bytesTotal?: number;
  /** The path being worked on, shown at the end of the line. */
  current?: string;
  errors?: number;
}

export interface ProgressSink {
  update(p: ProgressUpdate): void;
  /** Prints a line above the status line (a warning, a verbose file name) without garbling it. */
  log(line: string): void;
  /** Removes the status line; afterwards updates are ignored and log lines print plainly. */
  done(): void;
}

export interface ProgressOptions {
  enabled: boolean;
  /** What is being done ("backup", "restore"); shown after the elapsed time. May be empty. */
  label: string;
  /** Milliseconds from any fixed origin; Date.now by default. */
  clock?: () => number;
}

/** Carriage return plus "erase whole line": the cursor stays on the status line's row. */
const CLEAR_LINE = "\r\x1b[2K";
const REDRAW_INTERVAL_MS = 100;
/** Rate samples closer together than this are mostly noise from bursty reads. */
const RATE_SAMPLE_INTERVAL_MS = 250;
/** How fast the smoothed rate forgets: after this long, an old rate weighs 1/e. */
const RATE_TIME_CONSTANT_MS = 5000;
const DEFAULT_COLUMNS = 80;
/** Below this many columns a truncated path says nothing useful, so it is left out. */
const MIN_PATH_COLUMNS = 10;

/** An exponentially weighted moving average of a counter's rate, robust to irregular sampling. */
class SmoothedRate {
  private perSecond: number | undefined;
  private lastTime: number;
  private lastValue = 0;

  constructor(startTime: number) {
    this.lastTime = startTime;
  }

  sample(now: number, value: number): void {
    const elapsedMs = now - this.lastTime;
    if (elapsedMs < RATE_SAMPLE_INTERVAL_MS) return;
    // A counter that went backwards (a caller restarting a phase) contributes no negative rate.
    const instant = (Math.max(0, value - this.lastValue) / elapsedMs) * 1000;
    // Weighting by elapsed time keeps the average independent of how often updates arrive.
    const weight = 1 - Math.exp(-elapsedMs / RATE_TIME_CONSTANT_MS);
    this.perSecond =
      this.perSecond === undefined ? instant : this.perSecond + weight * (instant - this.perSecond);
    this.lastTime = now;
    this.lastValue = value;
  }

  /** Units per second; undefined until the first full sample interval has passed. */
  get value(): number | undefined {
    return this.perSecond;
  }
}

export function createProgress(stream: NodeJS.WriteStream | Writable, opts: ProgressOptions): ProgressSink {
  if (!opts.enabled) {
    return {
      update: () => undefined,
      log: (line) => void stream.write(withNewline(line)),
      done: () => undefined,
    };
  }
  return new TerminalProgress(stream, opts.label, opts.clock ?? Date.now);
}

class TerminalProgress implements ProgressSink {
  private readonly startTime: number;
  private readonly byteRate: SmoothedRate;
  private readonly fileRate: SmoothedRate;
  private latest: ProgressUpdate | undefined;
  private lastDrawTime = Number.NEGATIVE_INFINITY;
  private barVisible = false;
  private finished = false;

  constructor(
    private readonly stream: NodeJS.WriteStream | Writable,
    private readonly label: string,
    private readonly clock: () => number,
  ) {
    this.startTime = clock();
    this.byteRate = new SmoothedRate(this.startTime);
    this.fileRate = new SmoothedRate(this.startTime);
  }

  update(p: ProgressUpdate): void {
    if (this.finished) return;
    const now = this.clock();
    this.latest = { ...p };
    this.byteRate.sample(now, p.bytesDone);
    this.fileRate.sample(now, p.filesDone);
    if (now - this.lastDrawTime >= REDRAW_INTERVAL_MS) this.draw(now);
  }

  log(line: string): void {
    if (this.finished || !this.barVisible) {
      this.stream.write(withNewline(line));
      return;
    }
    this.stream.write(CLEAR_LINE + withNewline(line));
    this.draw(this.clock());
  }

  done(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.barVisible) this.stream.write(CLEAR_LINE);
    this.barVisible = false;
  }

  private draw(now: number): void {
    if (this.latest === undefined) return;
    this.stream.write(CLEAR_LINE + this.render(this.latest, now));
    this.lastDrawTime = now;
    this.barVisible = true;
  }

  private render(p: ProgressUpdate, now: number): string {
    const parts = [`[${formatClock(now - this.startTime)}]`];
    if (this.label !== "") parts.push(this.label);

    const fraction = completedFraction(p);
    if (fraction !== undefined) parts.push(`${(Math.min(fraction, 1) * 100).toFixed(1)}%`);

    const filesNoun = (p.filesTotal ?? p.filesDone) === 1 ? "file" : "files";
    parts.push(
      p.filesTotal === undefined
        ? `${formatCount(p.filesDone)} ${filesNoun}`
        : `${formatCount(p.filesDone)} / ${formatCount(p.filesTotal)} ${filesNoun}`,
    );
    parts.push(
      p.bytesTotal === undefined
        ? formatBytes(p.bytesDone)
        : `${formatBytes(p.bytesDone)} / ${formatBytes(p.bytesTotal)}`,
    );

    const bytesPerSecond = this.byteRate.value;
    if (bytesPerSecond !== undefined) parts.push(formatRate(bytesPerSecond));

    const etaMs = this.estimateRemainingMs(p);
    if (etaMs !== undefined) parts.push(`ETA ${formatClock(etaMs)}`);

    if (p.errors !== undefined && p.errors > 0) {
      parts.push(p.errors === 1 ? "1 error" : `${formatCount(p.errors)} errors`);
    }

    // The last column is left empty: writing there makes some terminals wrap, and the next
    // redraw would then clear the wrong row.
    const width = terminalColumns(this.stream) - 1;
    const status = parts.join(" ");
    const statusLength = codePointLength(status);
    if (p.current !== undefined && p.current !== "") {
      const pathRoom = width - statusLength - 1;
      if (pathRoom >= MIN_PATH_COLUMNS) return `${status} ${truncateStart(printable(p.current), pathRoom)}`;
    }
    return truncateEnd(status, width);
  }

  /** Bytes decide when their total is known (files differ wildly in size); files otherwise. */
  private estimateRemainingMs(p: ProgressUpdate): number | undefined {
    const estimate = (done: number, total: number, perSecond: number | undefined): number | undefined => {
      if (perSecond === undefined || perSecond <= 0) return undefined;
      // Whole seconds rounded up, so the ETA shows 0:00 only when nothing is left.
      return Math.ceil(Math.max(0, total - done) / perSecond) * 1000;
    };
    if (p.bytesTotal !== undefined) return estimate(p.bytesDone, p.bytesTotal, this.byteRate.value);
    if (p.filesTotal !== undefined) return estimate(p.filesDone, p.filesTotal, this.fileRate.value);
    return undefined;
  }
}

function completedFraction(p: ProgressUpdate): number | undefined {
  if (p.bytesTotal !== undefined && p.bytesTotal > 0) return p.bytesDone / p.bytesTotal;
  if (p.filesTotal !== undefined && p.filesTotal > 0) return p.filesDone / p.filesTotal;
  return undefined;
}

function terminalColumns(stream: NodeJS.WriteStream | Writable): number {
  const columns = (stream as { columns?: unknown }).columns;
  return typeof columns === "number" && columns > 0 ? columns : DEFAULT_COLUMNS;
}

function withNewline(line: string): string {
  return line.endsWith("\n") ? line : `${line}\n`;
}

/** File names may contain newlines or escape sequences; printed raw they would break the line. */
function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\x00-\x1f\x7f-\x9f]/g, "?");
}

function codePointLength(text: string): number {
  let length = 0;
  for (const _ of text) length++;
  return length;
}

/** Keeps the end of a path, where the file name is: "…/deep/dir/file.txt". */
function truncateStart(text: string, maxLength: number): string {
  const codePoints = Array.from(text);
  if (codePoints.length <= maxLength) return text;
  return `…${codePoints.slice(codePoints.length - (maxLength - 1)).join("")}`;
}

function truncateEnd(text: string, maxLength: number): string {
  const codePoints = Array.from(text);
  return codePoints.length <= maxLength ? text : codePoints.slice(0, Math.max(0, maxLength)).join("");
}
