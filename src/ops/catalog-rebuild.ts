/**
 * `bulwark catalog rebuild`: the catalog's snapshots and copies recreated from the repositories, which are
 * the source of truth. This is what makes a lost or damaged catalog cost no backup: every target of the
 * config is opened and listed, and what the catalog says about it is made to match what is there.
 *
 * Rules (docs/design.md, "Catalog"):
 * - Every snapshot on a reachable target is recorded (seen at `now`). Its dataset is the one it records
 *   (`bulwark run` writes it), else the one dataset whose file-source paths are exactly its paths.
 * - Rows of a reachable target whose snapshot is no longer there are removed (forgotten or pruned since).
 *   A snapshot file that is there but damaged keeps its row: it was not forgotten, `check` reports it.
 * - An unreachable target keeps its rows: "cannot see it now" is not "it is gone". An event says so.
 * - Snapshots sharing one original on different targets are copies of each other: each becomes a copy from
 *   the target holding the original itself (when one does) to its own target. Copies recorded by
 *   `bulwark copy` are kept as they are (they know the size and the verification).
 * - Run history, verifications, drills and events exist only in the catalog and are left alone; each target
 *   gets an event with what the rebuild found (errors scrubbed of secrets).
 */
import type { BulwarkConfig, Dataset, Target } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import { errorMessage } from "../core/errors.js";
import { emitMessage, type EventSink } from "../core/events.js";
import { datasetPaths } from "./posture.js";
import { openTargetRepository, scrub, type TargetAccess } from "./targets.js";
import { loadAllSnapshots, type SnapshotWithId } from "../snapshot/snapshot.js";
import type { Catalog } from "../catalog/catalog.js";

export interface RebuildTargetSummary {
  name: string;
  reachable: boolean;
  /** Snapshots found on the target; for an unreachable one, the rows the catalog kept. */
  snapshots: number;
  /** Rows removed because their snapshot is no longer on the target. */
  removed?: number;
  /** Snapshot files that could not be read (their rows are kept). */
  damaged?: number;
  /** Why the target could not be read (secrets scrubbed). */
  error?: string;
}

export interface RebuildSummary {
  targets: RebuildTargetSummary[];
  /** Snapshots recorded from the reachable targets. */
  snapshots: number;
  /** Copy relations found (snapshots sharing an original on different targets). */
  copies: number;
}

export interface RebuildInput {
  catalog: Catalog;
  config: BulwarkConfig;
  access: TargetAccess;
  /** Its time is when every snapshot found was seen. */
  clock: Clock;
  /** A warning message (with the target) for each target that cannot be read or holds a damaged file. */
  events?: EventSink;
}

type RebuildProblem = (problem: { target: string; message: string }) => void;

export async function rebuildCatalog(input: RebuildInput): Promise<RebuildSummary> {
  const { catalog, config, access } = input;
  const now = input.clock.now();
  const onProblem: RebuildProblem = ({ target, message }) =>
    emitMessage(input.events, input.clock.now(), "warning", message, { target });
  const secrets = (access.secrets ??= []);
  const clean = (message: string): string => scrub(message, secrets);
  const datasetOf = datasetMatcher(config);
  const summary: RebuildSummary = { targets: [], snapshots: 0, copies: 0 };

  for (const target of Object.values(config.targets)) {
    const read = await readTarget(target, access, clean, onProblem);
    if (read.error !== undefined) {
      const kept = catalog.snapshots({ target: target.name }).length;
      catalog.recordEvent({
        time: now,
        level: "warning",
        target: target.name,
        message: `catalog rebuild: target ${target.name} is unreachable (${read.error}); its ${plural(kept, "snapshot row")} kept as they were`,
      });
      summary.targets.push({ name: target.name, reachable: false, snapshots: kept, error: read.error });
      continue;
    }
    const { snapshots, damaged } = read;
    // One transaction per target: a rebuild interrupted half-way leaves every target either as it was or
    // matching its repository.
    const removed = catalog.transaction(() => {
      for (const s of snapshots) {
        const dataset = s.dataset ?? datasetOf(s.paths);
        catalog.recordSnapshot({
          target: target.name,
          snapshot: s.id,
          original: s.original ?? s.id,
          ...(dataset !== undefined ? { dataset } : {}),
          time: new Date(s.time),
          hostname: s.hostname,
          paths: s.paths,
          tags: s.tags,
          seenAt: now,
        });
      }
      const removedRows = catalog.forgetSnapshots(
        target.name,
        new Set([...snapshots.map((s) => s.id), ...damaged]),
      );
      const parts = [
        `${plural(snapshots.length, "snapshot")}`,
        ...(removedRows > 0 ? [`${plural(removedRows, "row")} of snapshots no longer there removed`] : []),
        ...(damaged.length > 0 ? [`${plural(damaged.length, "damaged snapshot file")} skipped`] : []),
      ];
      catalog.recordEvent({
        time: now,
        level: damaged.length > 0 ? "warning" : "info",
        target: target.name,
        message: `catalog rebuild: target ${target.name}: ${parts.join(", ")}`,
      });
      return removedRows;
    });
    summary.snapshots += snapshots.length;
    summary.targets.push({
      name: target.name,
      reachable: true,
      snapshots: snapshots.length,
      ...(removed > 0 ? { removed } : {}),
      ...(damaged.length > 0 ? { damaged: damaged.length } : {}),
    });
  }

  summary.copies = catalog.transaction(() => deriveCopies(catalog, config));
  return summary;
}

interface TargetContents {
  snapshots: SnapshotWithId[];
  /** Ids of snapshot files that could not be read. */
  damaged: string[];
  error?: string;
}

/** Lists a target's snapshots. Never throws for the target: its failure is returned, scrubbed. */
async function readTarget(
  target: Target,
  access: TargetAccess,
  clean: (message: string) => string,
  onProblem: RebuildProblem,
): Promise<TargetContents> {
  const damaged: string[] = [];
  try {
    const repo = await openTargetRepository(target, access);
    try {
      const snapshots = await loadAllSnapshots(repo, (name, err) => {
        damaged.push(name);
        onProblem({
          target: target.name,
          message: `skipping damaged snapshot ${name.slice(0, 8)}: ${clean(errorMessage(err))}`,
        });
      });
      return { snapshots, damaged };
    } finally {
      await repo.backend.close().catch(() => undefined);
    }
  } catch (err) {
    const error = clean(errorMessage(err));
    onProblem({ target: target.name, message: `unreachable: ${error}` });
    return { snapshots: [], damaged, error };
  }
}

/**
 * The dataset a snapshot without a recorded dataset belongs to: the one whose file-source paths are exactly
 * the snapshot's (as posture matches them). None when no dataset or several match.
 */
function datasetMatcher(config: BulwarkConfig): (paths: string[]) => string | undefined {
  const byPaths = new Map<string, string[]>();
  for (const [name, dataset] of Object.entries(config.datasets)) {
    const key = pathsKey(safeDatasetPaths(dataset));
    if (key === undefined) continue;
    byPaths.set(key, [...(byPaths.get(key) ?? []), name]);
  }
  return (paths) => {
    const key = pathsKey(paths);
    const names = key === undefined ? undefined : byPaths.get(key);
    return names?.length === 1 ? names[0] : undefined;
  };
}

function safeDatasetPaths(dataset: Dataset): string[] {
  try {
    return datasetPaths(dataset);
  } catch {
    return []; // a dataset without file paths matches no snapshot by paths
  }
}

function pathsKey(paths: readonly string[]): string | undefined {
  return paths.length === 0 ? undefined : [...paths].sort().join("\0");
}

/**
 * Copies derived from the catalog's snapshots (all targets, including the rows kept for unreachable ones):
 * snapshots sharing one original on different targets. Returns how many copy relations were found.
 */
function deriveCopies(catalog: Catalog, config: BulwarkConfig): number {
  const order = Object.keys(config.targets);
  const rank = (t: string): number => (order.includes(t) ? order.indexOf(t) : order.length);
  const byOriginal = new Map<string, ReturnType<Catalog["snapshots"]>>();
  for (const s of catalog.snapshots()) byOriginal.set(s.original, [...(byOriginal.get(s.original) ?? []), s]);

  let found = 0;
  for (const [original, group] of byOriginal) {
    if (new Set(group.map((s) => s.target)).size < 2) continue;
    // The original itself, on the first target of the config that holds it.
    const source = group
      .filter((s) => s.snapshot === original)
      .sort((a, b) => rank(a.target) - rank(b.target))[0];
    for (const s of group) {
      if (s === source || (source !== undefined && s.target === source.target)) continue;
      const dataset = s.dataset ?? source?.dataset;
      catalog.recordDerivedCopy({
        ...(dataset !== undefined ? { dataset } : {}),
        ...(source !== undefined ? { from: source.target } : {}),
        to: s.target,
        sourceSnapshot: original,
        targetSnapshot: s.snapshot,
        time: s.time,
      });
      found++;
    }
  }
  return found;
}

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}
