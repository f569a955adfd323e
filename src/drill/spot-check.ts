/**
 * The spot check of a drill: a random sample of the live files of the dataset's file sources compared with
 * the snapshot, to catch what a restore of the snapshot alone cannot: excludes that leave out what matters,
 * and files that changed behind the backup's back (same size and modification time, other content, which
 * an incremental backup trusts and never rereads).
 *
 *  1. The source paths are walked (excludes applied, as the backup applies them), at most MAX_SCANNED
 *     entries, and a uniform sample of `size` regular files kept (reservoir sampling: one pass, O(size)).
 *  2. A live file modified at or after the snapshot's time changed since the backup: skipped, not a finding.
 *  3. Otherwise it must be in the snapshot, as a file of the same size, with the same content (each blob's
 *     keyed id recomputed from the live bytes, ./compare.ts). Anything else is a mismatch.
 */
import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";

import type { Source } from "../config/types.js";
import { errorMessage } from "../core/errors.js";
import type { Repository } from "../repository/repository.js";
import { normalisePaths } from "../snapshot/archiver.js";
import { ExcludeMatcher } from "../snapshot/exclude.js";
import type { Node } from "../snapshot/tree.js";
import { loadTree } from "../snapshot/walker.js";
import { compareFile, type CompareMismatch } from "./compare.js";

/** Entries walked at most: a spot check of a huge tree samples from its first part and says so. */
const MAX_SCANNED = 200_000;

export interface SpotCheckResult {
  /** Live files compared. */
  sampled: number;
  /** Skipped because they changed after the snapshot was taken. */
  changedSince: number;
  mismatches: CompareMismatch[];
  /** The walk stopped at MAX_SCANNED entries. */
  truncated: boolean;
}

export async function spotCheck(
  repo: Repository,
  snapshot: { tree: string; time: string },
  sources: readonly Source[],
  size: number,
  options: { random: () => number; env: NodeJS.ProcessEnv },
): Promise<SpotCheckResult> {
  const result: SpotCheckResult = { sampled: 0, changedSince: 0, mismatches: [], truncated: false };
  const sample: string[] = [];
  let seen = 0;
  let scanned = 0;
  const files = sources.filter((s): s is Extract<Source, { type: "files" }> => s.type === "files");
  for (const source of files) {
    const excludes = await ExcludeMatcher.fromOptions(source.excludes, [], options.env);
    const walk = async (path: string): Promise<void> => {
      if (scanned >= MAX_SCANNED) {
        result.truncated = true;
        return;
      }
      scanned++;
      if (excludes.isExcluded(path)) return;
      let st;
      try {
        st = await lstat(path);
      } catch {
        return; // gone while walking, or unreadable: the backup reports those
      }
      if (st.isFile()) {
        seen++;
        if (sample.length < size) sample.push(path);
        else {
          const j = Math.floor(options.random() * seen);
          if (j < size) sample[j] = path;
        }
      } else if (st.isDirectory()) {
        let names: string[];
        try {
          names = await readdir(path);
        } catch {
          return;
        }
        for (const name of names.sort()) await walk(join(path, name));
      }
    };
    for (const path of normalisePaths(source.paths)) await walk(path);
  }
  if (size === 0) return result;

  const snapshotTime = new Date(snapshot.time).getTime();
  const trees = new Map<string, Node[]>();
  const nodeAt = async (path: string): Promise<Node | undefined> => {
    let tree = snapshot.tree;
    let node: Node | undefined;
    for (const name of path.split("/").filter(Boolean)) {
      if (tree === "") return undefined;
      let nodes = trees.get(tree);
      if (nodes === undefined) trees.set(tree, (nodes = await loadTree(repo, tree)));
      node = nodes.find((n) => n.name === name);
      if (node === undefined) return undefined;
      tree = node.type === "dir" ? (node.subtree ?? "") : "";
    }
    return node;
  };
  for (const path of sample.sort()) {
    let st;
    try {
      st = await lstat(path, { bigint: true });
    } catch {
      continue;
    }
    if (Number(st.mtimeNs / 1_000_000n) >= snapshotTime) {
      result.changedSince++;
      continue;
    }
    result.sampled++;
    let node: Node | undefined;
    try {
      node = await nodeAt(path);
    } catch (err) {
      result.mismatches.push({
        path,
        reason: `its directory in the snapshot is unreadable: ${errorMessage(err)}`,
      });
      continue;
    }
    if (node === undefined) {
      result.mismatches.push({
        path,
        reason: "not in the snapshot although older than it: check the source's excludes and paths",
      });
      continue;
    }
    if (node.type !== "file") {
      result.mismatches.push({ path, reason: `a ${node.type} in the snapshot, a file on disk` });
      continue;
    }
    const reason = await compareFile(repo, node, path, { mode: false });
    if (reason !== undefined) {
      const behind = node.mtime === st.mtimeNs.toString();
      result.mismatches.push({
        path,
        reason: `${reason}${behind ? " (its modification time is unchanged: it changed behind the backup's back)" : ""}`,
      });
    }
  }
  return result;
}
