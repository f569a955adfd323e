/**
 * Depth-first walk of a snapshot's trees in name order, yielding each node with its absolute path in the
 * snapshot ("/home/ann/notes.txt").
 */
import type { Repository } from "../repository/repository.js";
import { decodeTree, decodeTreeEntries, type DecodedTree, type Node } from "./tree.js";

export interface WalkEntry {
  path: string;
  node: Node;
}

/** A tree's nodes; an entry with a malformed field fails the whole tree (decodeTree). */
export async function loadTree(repo: Repository, id: string): Promise<Node[]> {
  return decodeTree(await repo.loadBlob(id, "tree"), `tree ${id.slice(0, 12)}`).nodes;
}

/** A tree's sound nodes and the entries left out for malformed fields (decodeTreeEntries). */
export async function loadTreeEntries(repo: Repository, id: string): Promise<DecodedTree> {
  return decodeTreeEntries(await repo.loadBlob(id, "tree"), `tree ${id.slice(0, 12)}`);
}

/**
 * Yields every node below `treeId`. When a tree cannot be loaded, `onError` decides: return to skip that
 * subtree, throw to stop the walk. With `onInvalid`, an entry with a malformed field is passed to it (with
 * its path) and skipped, and the rest of its tree is walked; without, it fails its tree as loadTree does.
 */
export async function* walkTree(
  repo: Repository,
  treeId: string,
  prefix = "",
  onError: (path: string, treeId: string, err: unknown) => void = (_p, _t, err) => {
    throw err;
  },
  onInvalid?: (path: string, error: string) => void,
): AsyncGenerator<WalkEntry> {
  let nodes: Node[];
  try {
    if (onInvalid) {
      const tree = await loadTreeEntries(repo, treeId);
      for (const e of tree.invalid) onInvalid(`${prefix}/${e.name}`, e.error);
      nodes = tree.nodes;
    } else nodes = await loadTree(repo, treeId);
  } catch (err) {
    onError(prefix === "" ? "/" : prefix, treeId, err);
    return;
  }
  for (const node of nodes) {
    const path = `${prefix}/${node.name}`;
    yield { path, node };
    if (node.type === "dir" && node.subtree) yield* walkTree(repo, node.subtree, path, onError, onInvalid);
  }
}
