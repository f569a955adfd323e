/**
 * Retention-lock maintenance (`bulwark retention`, docs/design.md §21 "Retention that follows the data"):
 * every file a snapshot needs stays locked (S3 Object Lock, the vault's retention) for at least the period
 * from now; locks that drifted short are extended, never shortened. "Retention lock" here is the target's
 * immutability, distinct from the keep rules that forget applies (src/ops/forget.ts).
 */
import type { RetentionMode } from "../backend/backend.js";
import type { Clock } from "../core/clock.js";
import { maintainRetentionLocks, type RetentionReport } from "../repository/retention-lock.js";
import type { Repository } from "../repository/repository.js";
import { usedBlobs } from "../snapshot/used-blobs.js";

export interface ExtendRetentionInput {
  repo: Repository;
  clock: Clock;
  mode: RetentionMode;
  days: number;
  dryRun?: boolean;
}

export function extendRetention(input: ExtendRetentionInput): Promise<RetentionReport> {
  return maintainRetentionLocks(input.repo, {
    mode: input.mode,
    days: input.days,
    dryRun: input.dryRun === true,
    now: input.clock.now(),
    usedBlobs: () => usedBlobs(input.repo, { operation: "retention maintenance" }),
  });
}
