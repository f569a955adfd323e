/**
 * Check: the one implementation behind `bulwark check` (and, next, the verification and drill steps):
 * the repository's structure and, when asked, its data (src/verify/checker.ts does the reading). Returns the
 * findings as data; progress goes to the event stream. The caller holds a shared lock (or chose none with
 * --no-lock on a read-only command).
 */
import type { Clock } from "../core/clock.js";
import type { EventSink } from "../core/events.js";
import type { Repository } from "../repository/repository.js";
import type { WorkerPool } from "../repository/worker-pool.js";
import { check, type CheckOptions, type CheckResult } from "../verify/checker.js";

export interface CheckInput {
  repo: Repository;
  pool: WorkerPool;
  clock: Clock;
  events?: EventSink;
  readData?: CheckOptions["readData"];
}

export interface CheckOutcome extends CheckResult {
  ok: boolean;
  errors: number;
  durationMs: number;
}

export async function checkRepository(input: CheckInput): Promise<CheckOutcome> {
  const started = input.clock.now().getTime();
  const result = await check(input.repo, input.pool, {
    readData: input.readData ?? false,
    reporter: {
      progress: (done, total, bytes) =>
        input.events?.({
          type: "progress",
          time: input.clock.now(),
          kind: "check",
          items: done,
          itemsTotal: total,
          bytes,
        }),
    },
  });
  const errors = result.findings.filter((f) => f.severity === "error").length;
  return { ...result, ok: errors === 0, errors, durationMs: input.clock.now().getTime() - started };
}
