/**
 * Depth-first walk of a snapshot's trees in name order, yielding each node with its absolute path in the
 * snapshot ("/home/ann/notes.txt").
 */
import type { Repository } from "../repository/repository.js";
import { decodeTree, type Node } from "./tree.js";

export interface WalkEntry {
  path: string;
  node: Node;
}

export async function loadTree(repo: Repository, id: string): Promise<Node[]> {
  return decodeTree(await repo.loadBlob(id, "tree"), `tree ${id.slice(0, 12)}`).nodes;
}

/**
 * Yields every node below `treeId`. When a tree cannot be loaded, `onError` decides: return to skip that
 * subtree, throw to stop the walk.
 */
export async function* walkTree(
  repo: Repository,
  treeId: string,
  prefix = "",
  onError: (path: string, treeId: string, err: unknown) => void = (_p, _t, err) => {
    throw err;
  },
): AsyncGenerator<WalkEntry> {
  let nodes: Node[];
  try {
    nodes = await loadTree(repo, treeId);
  } catch (err) {
    onError(prefix === "" ? "/" : prefix, treeId, err);
    return;
  }
  for (const node of nodes) {
    const path = `${prefix}/${node.name}`;
    yield { path, node };
    if (node.type === "dir" && node.subtree) yield* walkTree(repo, node.subtree, path, onError);
  }
}
