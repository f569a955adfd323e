/**
 * The content check of a drill: every entry of the snapshot is looked up in the sandbox it was restored
 * into, independently of the restorer. A file's bytes on disk are cut at the lengths of its recorded blobs
 * and each piece's keyed id recomputed (src/crypto blobId), so a file passes only when every byte on disk is
 * what the snapshot recorded, whatever the restorer believed it wrote. Directories and symlinks are checked
 * for their type and link target, files for size and permission bits.
 *
 * Streaming: one blob-sized buffer per file being compared, a few files at a time; nothing holds a file.
 */
import { lstat, open, readlink } from "node:fs/promises";
import { join } from "node:path";

import { errnoCode, errorMessage } from "../core/errors.js";
import type { Repository } from "../repository/repository.js";
import type { Node } from "../snapshot/tree.js";
import { walkTree } from "../snapshot/walker.js";

export interface CompareMismatch {
  path: string;
  reason: string;
}

export interface CompareResult {
  files: number;
  dirs: number;
  links: number;
  bytes: number;
  mismatches: CompareMismatch[];
}

export interface CompareOptions {
  /** After each file: the bytes compared so far. */
  progress?: (bytes: number) => void;
  /** Asked between files: true stops the comparison (the drill was interrupted). */
  stopped?: () => boolean;
}

const PARALLEL_FILES = 4;

/** Compares the sandbox `root` with the snapshot tree `treeId` (see the module header). */
export async function compareRestored(
  repo: Repository,
  treeId: string,
  root: string,
  options: CompareOptions = {},
): Promise<CompareResult> {
  const result: CompareResult = { files: 0, dirs: 0, links: 0, bytes: 0, mismatches: [] };
  const mismatch = (path: string, reason: string): void => void result.mismatches.push({ path, reason });
  const running = new Set<Promise<void>>();
  for await (const { path, node } of walkTree(repo, treeId, "", (p, _t, err) =>
    mismatch(p, `its directory could not be read from the repository: ${errorMessage(err)}`),
  )) {
    if (options.stopped?.() === true) break;
    const onDisk = join(root, path);
    if (node.type === "file") {
      const task = compareFile(repo, node, onDisk)
        .then((reason) => {
          result.files++;
          result.bytes += node.size ?? 0;
          if (reason !== undefined) mismatch(path, reason);
          options.progress?.(result.bytes);
        })
        .finally(() => running.delete(task));
      running.add(task);
      if (running.size >= PARALLEL_FILES) await Promise.race(running);
      continue;
    }
    const reason = await compareOther(node, onDisk);
    if (node.type === "dir") result.dirs++;
    else if (node.type === "symlink") result.links++;
    if (reason !== undefined) mismatch(path, reason);
  }
  await Promise.all(running);
  result.mismatches.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return result;
}

async function compareOther(node: Node, path: string): Promise<string | undefined> {
  let st;
  try {
    st = await lstat(path);
  } catch (err) {
    return `missing after the restore (${errnoCode(err) ?? errorMessage(err)})`;
  }
  switch (node.type) {
    case "dir":
      return st.isDirectory() ? undefined : "should be a directory";
    case "symlink": {
      if (!st.isSymbolicLink()) return "should be a symlink";
      const target = await readlink(path);
      return target === node.linkTarget
        ? undefined
        : `links to ${target}, the snapshot says ${node.linkTarget}`;
    }
    default:
      // fifos, sockets and devices: their presence is what a restore can give back
      return undefined;
  }
}

/**
 * Undefined when the file on disk is exactly the recorded content (and, with `mode`, has its permission
 * bits), else why not. Also the spot check's comparison of a live file (./spot-check.ts).
 */
export async function compareFile(
  repo: Repository,
  node: Node,
  path: string,
  options: { mode?: boolean } = { mode: true },
): Promise<string | undefined> {
  let st;
  try {
    st = await lstat(path);
  } catch (err) {
    return `missing after the restore (${errnoCode(err) ?? errorMessage(err)})`;
  }
  if (!st.isFile()) return "should be a regular file";
  if (st.size !== (node.size ?? 0)) return `${st.size} bytes on disk, the snapshot says ${node.size ?? 0}`;
  if (options.mode === true && (st.mode & 0o7777) !== (node.mode & 0o7777))
    return `mode ${(st.mode & 0o7777).toString(8)}, the snapshot says ${(node.mode & 0o7777).toString(8)}`;
  const content = node.content ?? [];
  const lengths: number[] = [];
  for (const id of content) {
    const entry = repo.index.get(id);
    if (entry === undefined) return `blob ${id.slice(0, 12)} of its content is not in the index`;
    lengths.push(entry.rawLength);
  }
  if (lengths.reduce((a, b) => a + b, 0) !== st.size) return "its blobs do not add up to its size";
  const file = await open(path, "r");
  try {
    const buffer = Buffer.allocUnsafe(Math.max(0, ...lengths));
    let offset = 0;
    for (const [i, id] of content.entries()) {
      const length = lengths[i]!;
      let got = 0;
      while (got < length) {
        const { bytesRead } = await file.read(buffer, got, length - got, offset + got);
        if (bytesRead === 0) return `ends at byte ${offset + got}, before its recorded content`;
        got += bytesRead;
      }
      if (repo.computeId(buffer.subarray(0, length)) !== id)
        return `bytes ${offset}-${offset + length - 1} differ from the recorded content`;
      offset += length;
    }
  } finally {
    await file.close();
  }
  return undefined;
}
