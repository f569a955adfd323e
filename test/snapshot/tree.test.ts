/**
 * Tree decoding (docs/design.md §11): unsafe names and duplicates fail the whole tree; every other field is
 * validated per entry, so decodeTreeEntries keeps the sound nodes and lists each malformed entry with its
 * reason, and the strict decodeTree fails on the first one.
 */
import { describe, expect, it } from "vitest";

import {
  decodeTree,
  decodeTreeEntries,
  encodeTree,
  nodeProblem,
  type Node,
} from "../../src/snapshot/tree.js";

const ID = "a".repeat(64);
const file = (name: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  name,
  type: "file",
  mode: 0o644,
  uid: 1000,
  gid: 1000,
  mtime: "1600000000000000000",
  ctime: "-1",
  size: 3,
  inode: "12",
  device: "34",
  links: 1,
  content: [ID],
  ...extra,
});
const tree = (nodes: unknown[]): Buffer => Buffer.from(JSON.stringify({ nodes }));

describe("decodeTreeEntries", () => {
  it("keeps what the archiver writes, for every type", () => {
    const nodes = [
      file("f"),
      file("d", { type: "dir", subtree: ID, content: undefined, size: undefined, links: 3 }),
      file("l", { type: "symlink", linkTarget: "../x", content: undefined }),
      file("p", { type: "fifo", content: undefined }),
      file("c", { type: "chardev", rdev: 259, content: undefined }),
      file("h", { links: 2 }),
    ];
    const decoded = decodeTreeEntries(encodeTree(nodes as unknown as Node[]), "t");
    expect(decoded.invalid).toEqual([]);
    expect(decoded.nodes.map((n) => n.name)).toEqual(["c", "d", "f", "h", "l", "p"]);
  });

  it.each([
    ["an mtime that is not a number", { mtime: "yesterday" }, /its mtime "yesterday" is not a time/],
    ["a numeric mtime", { mtime: 5 }, /its mtime 5 is not a time/],
    ["a content id that is not a string", { content: [42] }, /its content id 42 is not a blob id/],
    ["a content that is not a list", { content: ID }, /its content is not a list/],
    ["a short content id", { content: ["abc"] }, /its content id "abc" is not a blob id/],
    ["a negative size", { size: -1 }, /its size -1 is not a number of bytes/],
    ["a fractional uid", { uid: 1.5 }, /its uid 1.5 is not a number/],
    ["a mode beyond 0o7777", { mode: 0o170644 }, /its mode \d+ is not a permission mode/],
    ["an inode that is a number", { inode: 12 }, /its inode 12 is not a decimal number/],
    ["zero links", { links: 0 }, /its links 0 is not a count/],
    ["hard links without a device", { links: 2, device: undefined }, /2 hard links but no inode and device/],
    ["an unknown type", { type: "door" }, /its type "door" is unknown/],
    ["a directory without a subtree", { type: "dir", content: undefined }, /directory without a subtree/],
    ["a symlink without a target", { type: "symlink", content: undefined }, /symlink without a target/],
    ["a file without content", { content: undefined }, /file without a content list/],
  ])("%s fails that entry only", (_what, extra, reason) => {
    const decoded = decodeTreeEntries(tree([file("good"), file("bad", extra)]), "t");
    expect(decoded.nodes.map((n) => n.name)).toEqual(["good"]);
    expect(decoded.invalid).toHaveLength(1);
    expect(decoded.invalid[0]!.name).toBe("bad");
    expect(decoded.invalid[0]!.error).toMatch(reason);
    expect(() => decodeTree(tree([file("good"), file("bad", extra)]), "tree x")).toThrow(/^tree x: bad: /);
  });

  it.each([
    ["not JSON", Buffer.from("{"), /not valid JSON/],
    ["no node list", Buffer.from('{"nodes": 3}'), /no node list/],
    ["an entry that is not an object", tree([file("a"), 7]), /not an object/],
    ["an unsafe name", tree([file("..")]), /unsafe entry name/],
    ["a name that is not a string", tree([file("a", { name: 5 })]), /unsafe entry name 5/],
    ["duplicate names", tree([file("a"), file("a")]), /duplicate entry/],
  ])("%s fails the whole tree", (_what, data, reason) => {
    expect(() => decodeTreeEntries(data, "t")).toThrow(reason);
  });

  it("nodeProblem accepts a node as the archiver makes it", () => {
    expect(nodeProblem(file("x") as unknown as Node)).toBeUndefined();
  });
});
