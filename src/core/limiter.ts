/**
 * A weighted semaphore: bounds how much work (bytes, files) is in flight so memory stays flat however large
 * the input is.
 */
export class WeightedLimiter {
  private used = 0;
  private readonly waiters: { weight: number; resolve: () => void }[] = [];

  constructor(readonly capacity: number) {}

  get inUse(): number {
    return this.used;
  }

  /** Waits until `weight` fits (a weight above capacity is admitted alone, so it cannot starve). */
  async acquire(weight: number): Promise<void> {
    const w = Math.min(weight, this.capacity);
    if (this.waiters.length === 0 && this.used + w <= this.capacity) {
      this.used += w;
      return;
    }
    await new Promise<void>((resolve) => this.waiters.push({ weight: w, resolve }));
  }

  release(weight: number): void {
    this.used -= Math.min(weight, this.capacity);
    while (this.waiters.length > 0 && this.used + this.waiters[0]!.weight <= this.capacity) {
      const next = this.waiters.shift()!;
      this.used += next.weight;
      next.resolve();
    }
  }
}

/** Marks a promise as handled now (it is awaited later), so an early rejection is not "unhandled". */
export function handledLater<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}
