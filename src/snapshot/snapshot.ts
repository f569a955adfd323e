/**
 * Snapshots (docs/design.md, "Snapshots"): the record of one backup, pointing at the root tree.
 */
import { BulwarkError, errorMessage, findBulwarkError, hasCode, isNotFound } from "../core/errors.js";
import type { Repository } from "../repository/repository.js";

export interface SnapshotSummary {
  filesNew: number;
  filesChanged: number;
  filesUnmodified: number;
  dirsNew: number;
  dirsChanged: number;
  dirsUnmodified: number;
  /** Bytes of all files in the snapshot. */
  totalBytes: number;
  /** Bytes of files read (new or changed). */
  bytesRead: number;
  /** Plaintext bytes of blobs that were new to the repository. */
  dataAdded: number;
  /** Bytes of pack files written. */
  dataAddedStored: number;
  blobsAdded: number;
  durationMs: number;
}

export interface SkippedEntry {
  path: string;
  error: string;
}

export interface Snapshot {
  version: 1;
  time: string;
  tree: string;
  paths: string[];
  hostname: string;
  username: string;
  uid: number;
  gid: number;
  tags: string[];
  /** The config dataset this snapshot protects (`bulwark run`). */
  dataset?: string;
  /** The snapshot this one is a copy of, on the first repository it was made in (`bulwark copy`). */
  original?: string;
  excludes?: string[];
  parent?: string;
  program: string;
  summary?: SnapshotSummary;
  /** Entries that could not be read: the snapshot is partial. */
  skipped?: SkippedEntry[];
}

export interface SnapshotWithId extends Snapshot {
  id: string;
}

export type OnDamagedSnapshot = (name: string, err: unknown) => void;

/**
 * Loads every snapshot. With `onDamaged`, a damaged snapshot file is left out and reported to it, so one bad
 * file does not make every other snapshot unreachable (`check` reports it as an error). Without it, damage
 * throws: prune must never decide what is unused on a partial picture.
 */
export async function loadAllSnapshots(
  repo: Repository,
  onDamaged?: OnDamagedSnapshot,
): Promise<SnapshotWithId[]> {
  const names = await repo.listNames("snapshot");
  const out: SnapshotWithId[] = [];
  for (const name of names) {
    try {
      out.push({ ...(await repo.loadDocument<Snapshot>("snapshot", name)), id: name });
    } catch (err) {
      if (isNotFound(err)) continue; // forgotten while we listed
      if (onDamaged && hasCode(err, "INVALID_DATA")) {
        onDamaged(name, err);
        continue;
      }
      throw err;
    }
  }
  return out.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0));
}

export interface SnapshotFilter {
  hosts?: string[];
  tags?: string[];
  paths?: string[];
}

export function matchesFilter(s: Snapshot, f: SnapshotFilter): boolean {
  if (f.hosts?.length && !f.hosts.includes(s.hostname)) return false;
  if (f.tags?.length && !f.tags.every((t) => s.tags.includes(t))) return false;
  if (f.paths?.length && !f.paths.every((p) => s.paths.includes(p))) return false;
  return true;
}

/** Resolves "latest", a full id or a unique prefix of at least 4 hex digits. */
export async function findSnapshot(
  repo: Repository,
  ref: string,
  filter: SnapshotFilter = {},
  onDamaged?: OnDamagedSnapshot,
): Promise<SnapshotWithId> {
  const all = (await loadAllSnapshots(repo, onDamaged)).filter((s) => matchesFilter(s, filter));
  if (ref === "latest") {
    const latest = all.at(-1);
    if (!latest) throw new BulwarkError("NOT_FOUND", "the repository has no snapshot matching the filter");
    return latest;
  }
  if (!/^[0-9a-f]{4,64}$/.test(ref)) {
    throw new BulwarkError("USAGE", `${JSON.stringify(ref)} is not a snapshot id`, {
      hint: "give `latest` or at least 4 hex digits of an id from `bulwark snapshots`",
    });
  }
  const matches = all.filter((s) => s.id.startsWith(ref));
  if (matches.length === 0) throw new BulwarkError("NOT_FOUND", `no snapshot ${ref}`);
  if (matches.length > 1) {
    throw new BulwarkError("USAGE", `snapshot prefix ${ref} is ambiguous (${matches.length} snapshots)`, {
      hint: "give more digits",
    });
  }
  return matches[0]!;
}

/** A snapshot the target refused to delete because its retention runs, with the target's reason. */
export interface LockedSnapshot {
  id: string;
  error: string;
  hint?: string;
}

/**
 * Removes snapshot files. One under retention (Object Lock, a vault's retention) stays and is listed, as
 * prune lists the files it cannot delete yet; one already gone counts as removed; any other error throws.
 */
export async function removeSnapshots(
  repo: Repository,
  ids: readonly string[],
): Promise<{ removed: string[]; locked: LockedSnapshot[] }> {
  const removed: string[] = [];
  const locked: LockedSnapshot[] = [];
  for (const id of ids) {
    try {
      await repo.backend.remove({ type: "snapshot", name: id });
    } catch (err) {
      if (!isNotFound(err)) {
        if (!hasCode(err, "RETENTION_LOCKED")) throw err;
        const hint = findBulwarkError(err)?.hint;
        locked.push({ id, error: errorMessage(err), ...(hint !== undefined ? { hint } : {}) });
        continue;
      }
    }
    removed.push(id);
  }
  return { removed, locked };
}
