/**
 * The RPO watch (issue 14, docs/design.md §25): for every dataset and every target its jobs write or copy it
 * to, how old the newest snapshot there is against the policy's RPO, from what the catalog records the
 * targets hold (a backup or a copy records each snapshot it makes; `catalog rebuild` reads them back). The
 * scale: within the RPO; exceeded (up to 2x); severely (up to 4x); critically (beyond); and, distinct from all
 * of them, never backed up there. Pure: the caller passes the snapshots and the instant.
 */
import type { SnapshotRecord } from "../catalog/catalog.js";
import type { BulwarkConfig } from "../config/types.js";
import { formatDuration } from "../core/format.js";

export type RpoState = "within" | "exceeded" | "severe" | "critical" | "never";

export interface RpoStatus {
  dataset: string;
  target: string;
  /** The job's primary, or a copy. */
  role: "primary" | "copy";
  rpoMs: number;
  /** The newest snapshot of the dataset on the target, if any. */
  newest?: Date;
  /** Its age now; undefined when there is none. */
  ageMs?: number;
  /** age / RPO; Infinity when never backed up. */
  ratio: number;
  state: RpoState;
}

export function rpoWatch(
  config: BulwarkConfig,
  snapshots: readonly Pick<SnapshotRecord, "dataset" | "target" | "time">[],
  now: Date,
): RpoStatus[] {
  const newest = new Map<string, Date>();
  for (const s of snapshots) {
    if (s.dataset === undefined) continue;
    const key = `${s.dataset}\0${s.target}`;
    const seen = newest.get(key);
    if (seen === undefined || s.time > seen) newest.set(key, s.time);
  }
  const out: RpoStatus[] = [];
  const seen = new Set<string>();
  for (const job of Object.values(config.jobs)) {
    const policy = config.policies[job.policy];
    if (policy === undefined) continue;
    for (const [target, role] of [
      [job.primary, "primary"],
      ...job.copies.map((c) => [c, "copy"] as const),
    ] as const) {
      const key = `${job.dataset}\0${target}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const time = newest.get(key);
      const ageMs = time !== undefined ? Math.max(0, now.getTime() - time.getTime()) : undefined;
      const ratio = ageMs === undefined ? Infinity : ageMs / policy.rpoMs;
      out.push({
        dataset: job.dataset,
        target,
        role,
        rpoMs: policy.rpoMs,
        ...(time !== undefined ? { newest: time } : {}),
        ...(ageMs !== undefined ? { ageMs } : {}),
        ratio,
        state: stateOf(ageMs === undefined ? undefined : ratio),
      });
    }
  }
  return out.sort((a, b) => a.dataset.localeCompare(b.dataset) || a.target.localeCompare(b.target));
}

function stateOf(ratio: number | undefined): RpoState {
  if (ratio === undefined) return "never";
  if (ratio <= 1) return "within";
  if (ratio <= 2) return "exceeded";
  if (ratio <= 4) return "severe";
  return "critical";
}

/** How a state reads in an alert. */
export function describeRpo(s: RpoStatus): string {
  const rpo = formatDuration(s.rpoMs);
  switch (s.state) {
    case "never":
      return `${s.dataset} has never been backed up to ${s.target}`;
    case "within":
      return `${s.dataset} on ${s.target} is within its RPO of ${rpo}`;
    default:
      return `${s.dataset} on ${s.target}: newest snapshot ${formatDuration(s.ageMs!)} old, ${s.state === "exceeded" ? "beyond" : s.state === "severe" ? "more than twice" : "more than four times"} its RPO of ${rpo}`;
  }
}
