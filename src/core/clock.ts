/**
 * The clock: the one place that reads wall time (docs/design.md §23). Operations take a Clock so tests can
 * inject a fixed or advancing one (lock staleness, RPO, retention ages, schedules) instead of waiting.
 */
export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

/** A clock tests move by hand: `advance` adds milliseconds; `set` jumps to an instant. */
export class ManualClock implements Clock {
  private ms: number;
  constructor(start: Date | string | number) {
    this.ms = new Date(start).getTime();
  }
  now(): Date {
    return new Date(this.ms);
  }
  advance(ms: number): void {
    this.ms += ms;
  }
  set(at: Date | string | number): void {
    this.ms = new Date(at).getTime();
  }
}

/** A Clock from the `now?: () => Date` option older callers pass. */
export function clockOf(now: (() => Date) | undefined): Clock {
  return now === undefined ? systemClock : { now };
}
