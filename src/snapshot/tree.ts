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

/** An entry of a tree that names itself safely but whose other fields a restore cannot act on. */
export interface InvalidEntry {
  name: string;
  error: string;
  /** The blob ids its `subtree` and `content` still name (treeReferences): kept by prune, sent by a copy. */
  subtree?: string;
  content?: string[];
}

/** A tree as decodeTreeEntries reads it: the sound nodes, and the entries left out with their reason. */
export interface DecodedTree extends Tree {
  invalid: InvalidEntry[];
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
 * Parses a tree blob, strictly: any entry decodeTreeEntries would leave out fails the whole tree (prune,
 * copy and the archiver must not act on a tree they only partly understand). `what` names the tree in errors.
 */
export function decodeTree(data: Buffer, what: string): Tree {
  const tree = decodeTreeEntries(data, what);
  const first = tree.invalid[0];
  if (first) throw new BulwarkError("INVALID_DATA", `${what}: ${first.name}: ${first.error}`);
  return { nodes: tree.nodes };
}

/**
 * Parses a tree blob (docs/design.md §11). The whole tree is rejected for what makes every entry doubtful or
 * a path unsafe: not JSON, no node list, an entry that is not an object, a name that is empty, `.`, `..`, or
 * contains `/` or NUL, and duplicate names. Every other field is validated per entry (nodeProblem): an entry
 * with a malformed field is left out of `nodes` and listed in `invalid`, so a restore fails that entry only
 * and check reports it.
 */
export function decodeTreeEntries(data: Buffer, what: string): DecodedTree {
  let tree: { nodes?: unknown };
  try {
    tree = JSON.parse(data.toString("utf8")) as { nodes?: unknown };
  } catch (cause) {
    throw new BulwarkError("INVALID_DATA", `${what}: not valid JSON`, { cause });
  }
  if (!Array.isArray(tree?.nodes)) throw new BulwarkError("INVALID_DATA", `${what}: no node list`);
  const seen = new Set<string>();
  const nodes: Node[] = [];
  const invalid: InvalidEntry[] = [];
  for (const raw of tree.nodes as unknown[]) {
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      throw new BulwarkError("INVALID_DATA", `${what}: an entry is not an object`);
    }
    const node = raw as Node;
    if (typeof node.name !== "string" || !isSafeName(node.name)) {
      throw new BulwarkError("INVALID_DATA", `${what}: unsafe entry name ${JSON.stringify(node.name)}`);
    }
    if (seen.has(node.name)) {
      throw new BulwarkError("INVALID_DATA", `${what}: duplicate entry ${JSON.stringify(node.name)}`);
    }
    seen.add(node.name);
    const problem = nodeProblem(node);
    if (problem === undefined) nodes.push(node);
    else invalid.push({ name: node.name, error: problem, ...salvageReferences(raw) });
  }
  return { nodes, invalid };
}

const BLOB_ID = /^[0-9a-f]{64}$/;

/** The well-formed blob ids an entry with a malformed field still names. */
function salvageReferences(raw: object): { subtree?: string; content?: string[] } {
  const r = raw as Record<string, unknown>;
  const out: { subtree?: string; content?: string[] } = {};
  if (typeof r.subtree === "string" && BLOB_ID.test(r.subtree)) out.subtree = r.subtree;
  if (Array.isArray(r.content)) {
    const ids = (r.content as unknown[]).filter(
      (id): id is string => typeof id === "string" && BLOB_ID.test(id),
    );
    if (ids.length > 0) out.content = ids;
  }
  return out;
}

/**
 * Every blob a tree names, its malformed entries included: what prune must keep, retention must lock and a
 * copy must send, so one bad field in one entry neither stops them nor loses the data the entry names (a
 * copy carries the tree as it is, and check reports the entry on every copy).
 */
export function treeReferences(tree: DecodedTree): { name: string; subtree?: string; content?: string[] }[] {
  return [...tree.nodes, ...tree.invalid];
}
const NANOSECONDS = /^-?[0-9]{1,30}$/;
const DECIMAL = /^[0-9]{1,30}$/;

const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

/** What is wrong with a node's fields (besides its name), or undefined when a restore can act on it. */
export function nodeProblem(node: Node): string | undefined {
  const n = node as unknown as Record<string, unknown>;
  const show = (v: unknown): string => (typeof v === "string" ? JSON.stringify(v) : String(v));
  if (!NODE_TYPES.has(node.type)) return `its type ${show(n.type)} is unknown`;
  if (!isCount(n.mode) || n.mode > 0o7777) return `its mode ${show(n.mode)} is not a permission mode`;
  for (const key of ["uid", "gid"] as const)
    if (!isCount(n[key])) return `its ${key} ${show(n[key])} is not a number`;
  for (const key of ["mtime", "ctime"] as const) {
    if (typeof n[key] !== "string" || !NANOSECONDS.test(n[key])) {
      return `its ${key} ${show(n[key])} is not a time in nanoseconds`;
    }
  }
  if (n.size !== undefined && !isCount(n.size)) return `its size ${show(n.size)} is not a number of bytes`;
  for (const key of ["inode", "device"] as const) {
    if (n[key] !== undefined && (typeof n[key] !== "string" || !DECIMAL.test(n[key]))) {
      return `its ${key} ${show(n[key])} is not a decimal number`;
    }
  }
  if (n.links !== undefined && (!isCount(n.links) || n.links === 0))
    return `its links ${show(n.links)} is not a count`;
  if (n.links !== undefined && n.links > 1) {
    if (n.inode === undefined || n.device === undefined) {
      return `it has ${n.links} hard links but no inode and device to tie them together`;
    }
  }
  if (n.rdev !== undefined && !isCount(n.rdev)) return `its rdev ${show(n.rdev)} is not a device number`;
  if (n.linkTarget !== undefined && typeof n.linkTarget !== "string")
    return `its link target is not a string`;
  if (n.subtree !== undefined && (typeof n.subtree !== "string" || !BLOB_ID.test(n.subtree))) {
    return `its subtree ${show(n.subtree)} is not a blob id`;
  }
  if (n.content !== undefined) {
    if (!Array.isArray(n.content)) return "its content is not a list of blob ids";
    const bad = (n.content as unknown[]).find((id) => typeof id !== "string" || !BLOB_ID.test(id));
    if (bad !== undefined) return `its content id ${show(bad)} is not a blob id`;
  }
  switch (node.type) {
    case "dir":
      if (n.subtree === undefined) return "it is a directory without a subtree";
      break;
    case "file":
      if (n.content === undefined) return "it is a file without a content list";
      break;
    case "symlink":
      if (n.linkTarget === undefined) return "it is a symlink without a target";
      break;
    case "chardev":
    case "blockdev":
      if (n.rdev === undefined) return "it is a device without a device number";
      break;
  }
  return undefined;
}

export function isSafeName(name: string): boolean {
  return name !== "" && name !== "." && name !== ".." && !name.includes("/") && !name.includes("\0");
}
