/**
 * Trees and Nodes (docs/design.md, "Trees"): a Tree is the list of a directory's entries, stored as a tree
 * blob; a Node describes one entry.
 *
 * The encoding is deterministic (fixed key order, entries sorted by name, no wall-clock fields) so an
 * unchanged directory produces the same bytes, the same blob id, and is stored once.
 */
import { BulwarkError } from "../core/errors.js";

export type NodeType = "file" | "dir" | "symlink" | "fifo" | "socket" | "chardev" | "blockdev";

export interface Node {
  name: string;
  type: NodeType;
  /** Permission bits including setuid, setgid and sticky (st_mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Nanoseconds since the epoch, as a decimal string (beyond a double's precision). */
  mtime: string;
  ctime: string;
  size?: number;
  inode?: string;
  device?: string;
  links?: number;
  /** Data blob ids of a file, in order. */
  content?: string[];
  /** Tree blob id of a directory. */
  subtree?: string;
  linkTarget?: string;
  rdev?: number;
}

export interface Tree {
  nodes: Node[];
}

const KEY_ORDER: (keyof Node)[] = [
  "name",
  "type",
  "mode",
  "uid",
  "gid",
  "mtime",
  "ctime",
  "size",
  "inode",
  "device",
  "links",
  "content",
  "subtree",
  "linkTarget",
  "rdev",
];

const NODE_TYPES = new Set<NodeType>(["file", "dir", "symlink", "fifo", "socket", "chardev", "blockdev"]);

export function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** True when two nodes encode to the same bytes (content lists compared element by element). */
export function sameNode(a: Node, b: Node | undefined): boolean {
  if (!b) return false;
  for (const key of KEY_ORDER) {
    if (key === "content") continue;
    if (a[key] !== b[key]) return false;
  }
  const ca = a.content;
  const cb = b.content;
  if (ca === cb) return true;
  if (!ca || !cb || ca.length !== cb.length) return false;
  return ca.every((id, i) => id === cb[i]);
}

export function encodeTree(nodes: Node[]): Buffer {
  const sorted = [...nodes].sort((a, b) => compareNames(a.name, b.name));
  const canonical = sorted.map((node) => {
    const out: Record<string, unknown> = {};
    for (const key of KEY_ORDER) if (node[key] !== undefined) out[key] = node[key];
    return out;
  });
  return Buffer.from(JSON.stringify({ nodes: canonical }));
}

/**
 * Parses a tree blob and rejects what a restore must never act on: names that are empty, `.`, `..`, or
 * contain `/` or NUL, duplicate names, and unknown node types. `what` names the tree in errors.
 */
export function decodeTree(data: Buffer, what: string): Tree {
  let tree: Tree;
  try {
    tree = JSON.parse(data.toString("utf8")) as Tree;
  } catch (cause) {
    throw new BulwarkError("INVALID_DATA", `${what}: not valid JSON`, { cause });
  }
  if (!Array.isArray(tree?.nodes)) throw new BulwarkError("INVALID_DATA", `${what}: no node list`);
  const seen = new Set<string>();
  for (const node of tree.nodes) {
    if (typeof node.name !== "string" || !isSafeName(node.name)) {
      throw new BulwarkError("INVALID_DATA", `${what}: unsafe entry name ${JSON.stringify(node.name)}`);
    }
    if (seen.has(node.name)) {
      throw new BulwarkError("INVALID_DATA", `${what}: duplicate entry ${JSON.stringify(node.name)}`);
    }
    seen.add(node.name);
    if (!NODE_TYPES.has(node.type)) {
      throw new BulwarkError("INVALID_DATA", `${what}: ${node.name} has unknown type ${String(node.type)}`);
    }
    if (node.type === "dir" && typeof node.subtree !== "string") {
      throw new BulwarkError("INVALID_DATA", `${what}: directory ${node.name} has no subtree`);
    }
    if (node.type === "file" && !Array.isArray(node.content)) {
      throw new BulwarkError("INVALID_DATA", `${what}: file ${node.name} has no content list`);
    }
  }
  return tree;
}

export function isSafeName(name: string): boolean {
  return name !== "" && name !== "." && name !== ".." && !name.includes("/") && !name.includes("\0");
}
