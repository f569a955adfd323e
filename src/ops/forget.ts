/**
 * Forget (and prune): the one implementation behind `bulwark forget`, `bulwark prune` and the retention step
 * of `bulwark run` (docs/design.md §18, §23). Keeping it in one place is what keeps the every-snapshot guard
 * in force for every caller: a keep rule that matches none of a group's snapshots must remove nothing.
 *
 * Steps:
 *  1. load the snapshots, keep those the caller's filter selects (host/tag/path, a job's dataset);
 *  2. plan: apply the keep rules per group (pure, with the clock's time) or take the named snapshots;
 *  3. refuse, before anything is removed, a plan that would leave a group empty;
 *  4. remove the planned snapshot files (one under a target's retention stays and is listed);
 *  5. prune when asked, unless a named snapshot stayed (a prune would only rewrite files that then start a
 *     retention of their own).
 */
import type { Clock } from "../core/clock.js";
import { BulwarkError } from "../core/errors.js";
import type { EventSink } from "../core/events.js";
import {
  applyKeepRules,
  describeKeepRules,
  isEmptyKeepRules,
  type GroupBy,
  type KeepGroup,
  type KeepRules,
} from "../policy/keep-rules.js";
import { prune, type PruneResult } from "../repository/prune.js";
import type { Repository } from "../repository/repository.js";
import { usedBlobs } from "../snapshot/used-blobs.js";
import {
  loadAllSnapshots,
  removeSnapshots,
  type LockedSnapshot,
  type OnDamagedSnapshot,
  type SnapshotWithId,
} from "../snapshot/snapshot.js";

/** The refusal every caller gives for keep rules that would empty a group (same message, same hint). */
export const EVERY_SNAPSHOT_MESSAGE = "the policy would remove every snapshot of a group; refusing";
export const EVERY_SNAPSHOT_HINT =
  "check the keep rules (the --keep-* options, or the policy's retention for this target in the config): " +
  "at least one snapshot of each group must match one";

export interface ForgetInput {
  repo: Repository;
  clock: Clock;
  events?: EventSink;
  /** Snapshots to remove by id (already resolved to full ids). With none, `policy` decides. */
  snapshots?: readonly string[];
  policy?: KeepRules;
  /** Which snapshots the policy looks at (the others are neither kept nor removed). */
  filter?: (s: SnapshotWithId) => boolean;
  groupBy?: GroupBy;
  dryRun?: boolean;
  /** Prune afterwards; `repackThreshold` as for prune. */
  prune?: boolean | { repackThreshold?: number };
  onDamagedSnapshot?: OnDamagedSnapshot;
  /** Target name for events. */
  target?: string;
}

export interface ForgetGroupReport {
  group: KeepGroup["key"];
  keep: { id: string; time: Date; reasons: string[] }[];
  remove: { id: string; time: Date }[];
}

export interface ForgetResult {
  dryRun: boolean;
  /** The groups the policy decided (empty when snapshots were named). */
  groups: ForgetGroupReport[];
  /** Ids of the snapshots the policy looked at that stay. */
  kept: string[];
  removed: string[];
  locked: LockedSnapshot[];
  /** Ids of every snapshot of the repository after the run (for the catalog). */
  remaining: string[];
  prune?: PruneResult;
  /** True when named snapshots stayed under retention: the caller reports a failure. */
  namedLocked: boolean;
}

/**
 * Plans the keep rules over snapshots: pure, and throws the every-snapshot refusal before anything happens.
 */
export function planKeepRules(
  snapshots: readonly SnapshotWithId[],
  policy: KeepRules,
  groupBy: GroupBy,
  now: Date,
): ForgetGroupReport[] {
  if (isEmptyKeepRules(policy)) {
    throw new BulwarkError("USAGE", "no policy given: refusing to remove every snapshot", {
      hint: "give --keep-* options, or snapshot ids to remove",
    });
  }
  const groups = applyKeepRules(
    snapshots.map((s) => ({
      id: s.id,
      time: new Date(s.time),
      hostname: s.hostname,
      paths: s.paths,
      tags: s.tags,
    })),
    policy,
    groupBy,
    { now },
  );
  for (const g of groups) {
    if (g.decisions.length > 0 && g.decisions.every((d) => !d.keep)) {
      throw new BulwarkError("USAGE", EVERY_SNAPSHOT_MESSAGE, { hint: EVERY_SNAPSHOT_HINT });
    }
  }
  return groups.map((g) => ({
    group: g.key,
    keep: g.decisions
      .filter((d) => d.keep)
      .map((d) => ({ id: d.snapshot.id, time: d.snapshot.time, reasons: d.reasons })),
    remove: g.decisions.filter((d) => !d.keep).map((d) => ({ id: d.snapshot.id, time: d.snapshot.time })),
  }));
}

/** The caller holds the repository's exclusive lock. */
export async function forget(input: ForgetInput): Promise<ForgetResult> {
  const dryRun = input.dryRun === true;
  const all = await loadAllSnapshots(input.repo, input.onDamagedSnapshot);
  const named = input.snapshots ?? [];
  let groups: ForgetGroupReport[] = [];
  let toRemove: string[];
  let kept: string[] = [];
  if (named.length > 0) {
    toRemove = [...named];
  } else {
    const considered = input.filter ? all.filter(input.filter) : all;
    const policy = input.policy ?? {};
    groups = planKeepRules(considered, policy, input.groupBy ?? ["host", "paths"], input.clock.now());
    input.events?.({
      type: "message",
      time: input.clock.now(),
      level: "info",
      message: `Applying policy: ${describeKeepRules(policy)}`,
      ...(input.target !== undefined ? { target: input.target } : {}),
    });
    toRemove = groups.flatMap((g) => g.remove.map((r) => r.id));
    kept = groups.flatMap((g) => g.keep.map((k) => k.id));
  }
  // Locked snapshots stay and are listed; a dry run removes nothing.
  const { removed, locked } = dryRun
    ? { removed: toRemove, locked: [] as LockedSnapshot[] }
    : await removeSnapshots(input.repo, toRemove);
  const namedLocked = locked.length > 0 && named.length > 0;
  const result: ForgetResult = {
    dryRun,
    groups,
    kept,
    removed,
    locked,
    remaining: all.map((s) => s.id).filter((id) => dryRun || !removed.includes(id)),
    namedLocked,
  };
  if (!dryRun) {
    input.events?.({ type: "snapshots-remaining", time: input.clock.now(), snapshots: result.remaining });
  }
  if (input.prune !== undefined && input.prune !== false && !namedLocked) {
    const threshold = typeof input.prune === "object" ? input.prune.repackThreshold : undefined;
    result.prune = await pruneRepository({
      repo: input.repo,
      clock: input.clock,
      dryRun,
      ...(input.events ? { events: input.events } : {}),
      ...(threshold !== undefined ? { repackThreshold: threshold } : {}),
      // A dry run removed nothing: its prune must still plan as if the snapshots were gone.
      ...(dryRun ? { ignoreSnapshots: removed } : {}),
    });
  }
  return result;
}

export interface PruneInput {
  repo: Repository;
  clock: Clock;
  events?: EventSink;
  dryRun?: boolean;
  repackThreshold?: number;
  ignoreSnapshots?: readonly string[];
}

/** Prune through the event stream. The caller holds the repository's exclusive lock. */
export async function pruneRepository(input: PruneInput): Promise<PruneResult> {
  return prune(input.repo, {
    dryRun: input.dryRun === true,
    usedBlobs: () =>
      usedBlobs(input.repo, input.ignoreSnapshots ? { ignoreSnapshots: input.ignoreSnapshots } : {}),
    ...(input.repackThreshold === undefined ? {} : { repackThreshold: input.repackThreshold }),
    now: () => input.clock.now().getTime(),
    reporter: {
      phase: (m) => input.events?.({ type: "message", time: input.clock.now(), level: "info", message: m }),
    },
  });
}
