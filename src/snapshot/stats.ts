/**
 * Repository statistics: raw size of the files in snapshots, deduplicated size of the blobs they need, and
 * what those blobs take in the repository after compression and encryption.
 */
import type { Repository } from "../repository/repository.js";
import type { SnapshotWithId } from "./snapshot.js";
import { loadTreeEntries } from "./walker.js";

export type StatsMode = "all";

export interface RepoStats {
  snapshots: number;
  files: number;
  rawBytes: number;
  blobs: number;
  dedupBytes: number;
  storedBytes: number;
  packs: number;
  repositoryBytes: number;
}

export async function computeStats(
  repo: Repository,
  snapshots: SnapshotWithId[],
  _mode: StatsMode,
): Promise<RepoStats> {
  const stats: RepoStats = {
    snapshots: snapshots.length,
    files: 0,
    rawBytes: 0,
    blobs: 0,
    dedupBytes: 0,
    storedBytes: 0,
    packs: 0,
    repositoryBytes: 0,
  };
  const seenBlobs = new Set<string>();
  const seenTrees = new Set<string>();
  const count = (id: string): void => {
    if (seenBlobs.has(id)) return;
    seenBlobs.add(id);
    const e = repo.index.get(id);
    if (!e) return;
    stats.blobs++;
    stats.dedupBytes += e.rawLength;
    stats.storedBytes += e.length;
  };
  // Raw size counts a file once per snapshot it is in; trees shared between snapshots still count per snapshot.
  const walk = async (treeId: string): Promise<void> => {
    count(treeId);
    const tree = await loadTreeEntries(repo, treeId);
    for (const node of tree.nodes) {
      if (node.type === "file") {
        stats.files++;
        stats.rawBytes += node.size ?? 0;
        for (const id of node.content ?? []) count(id);
      } else if (node.subtree) await walk(node.subtree);
    }
    // An entry with a malformed field (check reports it) still holds the data it names.
    for (const entry of tree.invalid) {
      for (const id of entry.content ?? []) count(id);
      if (entry.subtree) await walk(entry.subtree);
    }
  };
  for (const s of snapshots) {
    seenTrees.add(s.tree);
    await walk(s.tree);
  }
  for await (const info of repo.backend.list("pack")) {
    stats.packs++;
    stats.repositoryBytes += info.size;
  }
  return stats;
}
