/**
 * The blobs the snapshots of a repository use: every tree reachable from a snapshot and every data blob its
 * files reference. Prune deletes what is not in this set and retention maintenance locks the packs of what
 * is, so both receive it from here (as restic's prune planner receives the used blobs): the repository
 * layer knows packs and blobs, never snapshots or trees (docs/design.md §18).
 */
import { BulwarkError, errorMessage } from "../core/errors.js";
import type { Repository } from "../repository/repository.js";
import { loadAllSnapshots } from "./snapshot.js";
import { treeReferences } from "./tree.js";
import { loadTreeEntries } from "./walker.js";

export interface UsedBlobsOptions {
  /** Snapshots to leave out (a dry run of `forget --prune`, whose forget removed nothing). */
  ignoreSnapshots?: readonly string[];
  /** The operation named in errors ("prune", "retention"): an unreadable tree stops it. */
  operation?: string;
}

/** The index must be loaded. Throws INVALID_DATA naming the snapshot when a tree cannot be read. */
export async function usedBlobs(repo: Repository, options: UsedBlobsOptions = {}): Promise<Set<string>> {
  const used = new Set<string>();
  const ignored = new Set(options.ignoreSnapshots ?? []);
  for (const snapshot of await loadAllSnapshots(repo)) {
    if (ignored.has(snapshot.id)) continue;
    await addSnapshotBlobs(repo, snapshot, used, options.operation ?? "prune");
  }
  return used;
}

/**
 * Adds to `used` every tree and data blob one snapshot reaches (what a restore of it reads); trees already
 * in `used` are not walked again. The index must be loaded.
 */
export async function addSnapshotBlobs(
  repo: Repository,
  snapshot: { id: string; tree: string },
  used: Set<string>,
  operation: string,
): Promise<void> {
  const stack = [snapshot.tree];
  while (stack.length > 0) {
    const treeId = stack.pop()!;
    if (used.has(treeId)) continue;
    used.add(treeId);
    let nodes;
    try {
      // A malformed entry does not stop prune: the blobs it names are kept (treeReferences).
      nodes = treeReferences(await loadTreeEntries(repo, treeId));
    } catch (err) {
      throw new BulwarkError(
        "INVALID_DATA",
        `${operation} stopped: tree ${treeId.slice(0, 12)} of snapshot ${snapshot.id.slice(0, 8)} is unreadable: ${errorMessage(err)}`,
        { hint: "run `bulwark check --read-data`; nothing was deleted" },
      );
    }
    for (const node of nodes) {
      if (node.subtree) stack.push(node.subtree);
      for (const id of node.content ?? []) used.add(id);
    }
  }
}
