/**
 * Backup: the one implementation behind `bulwark backup` and the backup step of `bulwark run`
 * (docs/design.md §23). What to back up comes in one of two forms, the steps after that are shared:
 *  - `paths`: files and directories, with sources (virtual files) and hooks as `bulwark backup` parses them;
 *  - `dataset`: a config dataset, planned by src/sources/dataset.ts between its own and its sources' hooks.
 * Then:
 *  1. the index is loaded and the parent chosen: the one named, none when forced, else the newest snapshot
 *     of the same host, the same paths (sources included) and, for a dataset, the same dataset (a snapshot
 *     made before datasets were recorded counts too);
 *  2. the archiver stores the snapshot, reporting each file as a progress event and each unreadable entry
 *     as a warning;
 *  3. a `snapshot-saved` event says what the catalog indexes.
 * Before step 1, what interrupted writers left on the repository is removed (./leftovers.ts).
 * The caller has opened the repository and holds its write lock.
 */
import { existsSync } from "node:fs";

import type { Dataset } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import { BulwarkError } from "../core/errors.js";
import { emitMessage, type EventSink } from "../core/events.js";
import type { Repository } from "../repository/repository.js";
import { removeLeftovers } from "./leftovers.js";
import type { WorkerPool } from "../repository/worker-pool.js";
import { backup, normalisePaths, type BackupResult, type VirtualFile } from "../snapshot/archiver.js";
import { ExcludeMatcher } from "../snapshot/exclude.js";
import {
  findSnapshot,
  loadAllSnapshots,
  type OnDamagedSnapshot,
  type SnapshotWithId,
} from "../snapshot/snapshot.js";
import { runWithDatasetHooks } from "../sources/dataset.js";
import { withHooks, type Hooks } from "../sources/hooks.js";

export type Env = Readonly<Record<string, string | undefined>>;

/** Files and directories, sources and hooks, as `bulwark backup` takes them. */
export interface PathsToBackUp {
  kind: "paths";
  paths: string[];
  virtualFiles: VirtualFile[];
  hooks?: Hooks;
  excludes: string[];
  excludeFiles: string[];
}

/** A dataset of the config (its sources, excludes and hooks). */
export interface DatasetToBackUp {
  kind: "dataset";
  dataset: Dataset;
  /** Read the files sources' paths under this directory, recorded as they are (the archiver's readRoot). */
  readRoot?: string;
}

export interface BackupInput {
  repo: Repository;
  pool: WorkerPool;
  clock: Clock;
  events?: EventSink;
  what: PathsToBackUp | DatasetToBackUp;
  /** Environment of sources, hooks and exclude files. */
  env: Env;
  hostname: string;
  tags?: string[];
  /** A snapshot reference to compare against; `false` reads every file; default: chosen (see header). */
  parent?: string | false;
  onDamagedSnapshot?: OnDamagedSnapshot;
}

export interface BackupOutcome extends BackupResult {
  /** The parent compared against, if any. */
  parent?: string;
  /** Files processed (read or found unchanged). */
  files: number;
}

export async function backupOperation(input: BackupInput): Promise<BackupOutcome> {
  const { repo, clock, what } = input;
  const info = (message: string): void => emitMessage(input.events, clock.now(), "info", message);
  const damaged: OnDamagedSnapshot =
    input.onDamagedSnapshot ??
    ((name, err) =>
      emitMessage(
        input.events,
        clock.now(),
        "warning",
        `skipping damaged snapshot ${name.slice(0, 8)}: ${err instanceof Error ? err.message : String(err)}`,
      ));
  if (what.kind === "paths") assertSomethingToBackUp(what);
  await removeLeftovers({ repo, clock, ...(input.events ? { events: input.events } : {}) });
  await repo.loadIndex();
  let named: SnapshotWithId | undefined;
  let candidates: SnapshotWithId[] = [];
  if (typeof input.parent === "string") named = await findSnapshot(repo, input.parent, {}, damaged);
  else if (input.parent !== false) candidates = await loadAllSnapshots(repo, damaged);

  const run = async (
    paths: string[],
    virtualFiles: VirtualFile[],
    excludes: ExcludeMatcher,
    dataset: string | undefined,
    readRoot?: string,
  ): Promise<BackupOutcome> => {
    const parent =
      named ??
      selectParent(candidates, {
        hostname: input.hostname,
        paths: [...paths, ...virtualFiles.map((v) => v.path)],
        ...(dataset !== undefined ? { dataset } : {}),
      });
    if (parent) info(`using parent snapshot ${parent.id.slice(0, 8)}`);
    let files = 0;
    let bytes = 0;
    let errors = 0;
    const result = await backup(repo, input.pool, {
      paths,
      ...(virtualFiles.length > 0 ? { virtualFiles } : {}),
      ...(input.tags !== undefined ? { tags: input.tags } : {}),
      hostname: input.hostname,
      excludes,
      ...(dataset !== undefined ? { dataset } : {}),
      ...(readRoot !== undefined ? { readRoot } : {}),
      ...(parent ? { parent } : {}),
      now: () => clock.now(),
      reporter: {
        fileDone: (path, size) => {
          files++;
          bytes += size;
          input.events?.({
            type: "progress",
            time: clock.now(),
            kind: "backup",
            items: files,
            bytes,
            current: path,
            errors,
          });
        },
        skipped: (entry) => {
          errors++;
          emitMessage(input.events, clock.now(), "warning", `skipped ${entry.path}: ${entry.error}`);
        },
      },
    });
    input.events?.({
      type: "snapshot-saved",
      time: clock.now(),
      snapshot: result.id,
      original: result.id,
      ...(dataset !== undefined ? { dataset } : {}),
      snapshotTime: new Date(result.snapshot.time),
      hostname: result.snapshot.hostname,
      paths: result.snapshot.paths,
      tags: result.snapshot.tags,
    });
    return { ...result, ...(parent ? { parent: parent.id } : {}), files };
  };

  if (what.kind === "paths") {
    const paths = what.paths.length > 0 ? normalisePaths(what.paths) : [];
    const excludes = await ExcludeMatcher.fromOptions(what.excludes, what.excludeFiles, input.env);
    return withHooks({ ...(what.hooks ?? {}), log: info }, () =>
      run(paths, what.virtualFiles, excludes, undefined),
    );
  }
  return runWithDatasetHooks(
    what.dataset,
    input.env,
    async (plan) =>
      run(
        plan.paths,
        plan.virtualFiles,
        await ExcludeMatcher.fromOptions(plan.excludes, [], input.env),
        what.dataset.name,
        what.readRoot,
      ),
    info,
  );
}

/**
 * The parent of a new snapshot: the newest of the same host and the same paths (order does not matter) and,
 * when a dataset is given, of that dataset or of none (snapshots made before datasets were recorded).
 */
export function selectParent(
  snapshots: readonly SnapshotWithId[],
  want: { hostname: string; paths: readonly string[]; dataset?: string },
): SnapshotWithId | undefined {
  const key = JSON.stringify([...want.paths].sort());
  return snapshots
    .filter(
      (s) =>
        s.hostname === want.hostname &&
        (want.dataset === undefined || s.dataset === want.dataset || s.dataset === undefined) &&
        JSON.stringify([...s.paths].sort()) === key,
    )
    .at(-1);
}

/** A backup of only missing paths would save an empty snapshot: refuse it before anything runs. */
function assertSomethingToBackUp(what: PathsToBackUp): void {
  if (what.paths.length === 0 && what.virtualFiles.length === 0) {
    throw new BulwarkError("USAGE", "nothing to back up", {
      hint: "name at least one path, or a --source",
    });
  }
  if (what.paths.length === 0) return;
  const normalised = normalisePaths(what.paths);
  if (!normalised.some((p) => existsSync(p))) {
    throw new BulwarkError(
      "USAGE",
      `nothing to back up: ${normalised.join(", ")} ${normalised.length === 1 ? "does" : "do"} not exist`,
      { hint: "check the paths; a backup with only missing paths would save an empty snapshot" },
    );
  }
}
