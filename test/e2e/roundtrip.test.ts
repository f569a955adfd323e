/**
 * Backup and restore of a tree with every kind of entry, compared entry by entry; --include; and the
 * listing commands (ls, snapshots, diff, stats) on the same repository.
 */
import { execFileSync } from "node:child_process";
import {
  chmod,
  chown,
  lchown,
  link,
  lutimes,
  mkdir,
  open,
  rm,
  stat,
  symlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  GiB,
  MiB,
  TestRepo,
  isRoot,
  makeTempDir,
  packFiles,
  randomData,
  removeTempDirs,
  restoredPath,
  scanTree,
  type BackupJson,
  type Entry,
  type SnapshotJson,
} from "./helpers.js";

let base: string;
let src: string;
let repo: TestRepo;
let first: BackupJson;
let source: Map<string, Entry>;
let target: string;
let restoreJson: { files: number; dirs: number; links: number; errors: unknown[] };

const SPARSE_SIZE = 3 * GiB;
/** Data regions of the sparse file: odd offsets and lengths. */
const SPARSE_DATA: [number, number][] = [
  [12_345, MiB + 17],
  [GiB + 777, 777],
  [2 * GiB + 5_555_555, 2 * MiB + 3],
  [SPARSE_SIZE - 1001, 1000],
];

const NAMES = ["café é.txt", "日本語.txt", "emoji 🎉📦.txt", "with  spaces .txt", "new\nline.txt"];

/** A distinct past time with microsecond precision, in seconds. */
const pastTime = (i: number): number => 1_400_000_000 + i * 86_400 + ((i * 137_911) % 999_983) / 1e6;

async function buildFixture(root: string): Promise<void> {
  await mkdir(root);
  await writeFile(join(root, "empty.txt"), "");
  await writeFile(join(root, "small.txt"), "hello, world\n");
  await writeFile(join(root, "big.bin"), randomData(20 * MiB));
  for (const [i, name] of NAMES.entries()) await writeFile(join(root, name), `unicode name ${i}\n`);
  await mkdir(join(root, "nested", "a", "b", "c"), { recursive: true });
  await writeFile(join(root, "nested", "a", "b", "c", "deep.txt"), "deep\n");
  await writeFile(join(root, "nested", "a", "mid.bin"), randomData(100_000));
  await mkdir(join(root, "emptydir"));
  await mkdir(join(root, "nested", "empty-inner"));

  await symlink("small.txt", join(root, "rel-link"));
  await symlink(join(root, "big.bin"), join(root, "abs-link"));
  await symlink("does/not/exist", join(root, "dangling"));
  await symlink("nested", join(root, "dirlink"));

  await mkdir(join(root, "hard"));
  await writeFile(join(root, "hard", "one"), randomData(300_000));
  await link(join(root, "hard", "one"), join(root, "hard", "two"));
  await link(join(root, "hard", "one"), join(root, "nested", "three"));

  execFileSync("mkfifo", ["--", join(root, "fifo")]);

  await writeFile(join(root, "private.txt"), "secret\n");
  await chmod(join(root, "private.txt"), 0o600);
  await writeFile(join(root, "script.sh"), "#!/bin/sh\necho hi\n");
  await chmod(join(root, "script.sh"), 0o755);
  await writeFile(join(root, "setuid.bin"), "x");
  await mkdir(join(root, "setgid-dir"));
  await writeFile(join(root, "setgid-dir", "inside.txt"), "in setgid\n");
  await mkdir(join(root, "sticky-dir"));
  await writeFile(join(root, "sticky-dir", "inside.txt"), "in sticky\n");

  const sparse = await open(join(root, "sparse.img"), "w");
  try {
    await sparse.truncate(SPARSE_SIZE);
    for (const [offset, length] of SPARSE_DATA) await sparse.write(randomData(length), 0, length, offset);
  } finally {
    await sparse.close();
  }

  if (isRoot) {
    await chown(join(root, "small.txt"), 1234, 5678);
    await lchown(join(root, "rel-link"), 1234, 5678);
    await chown(join(root, "nested", "a"), 1234, 5678);
    await chown(join(root, "setuid.bin"), 1234, 5678);
  }
  // Modes after chown: chown clears setuid.
  await chmod(join(root, "setuid.bin"), 0o4755);
  await chmod(join(root, "setgid-dir"), 0o2775);
  await chmod(join(root, "sticky-dir"), 0o1777);

  // Past mtimes with sub-second precision: everything but directories first, then directories deepest
  // first (creating entries changes a directory's mtime, setting times does not).
  const entries = [...(await scanTree(root, { hash: false })).values()];
  let i = 0;
  for (const e of entries.filter((e) => e.type !== "dir")) {
    const t = pastTime(i++);
    if (e.type === "symlink") await lutimes(join(root, e.rel), t, t);
    else await utimes(join(root, e.rel), t, t);
  }
  const dirs = entries.filter((e) => e.type === "dir").sort((a, b) => b.rel.length - a.rel.length);
  for (const d of dirs) {
    const t = pastTime(i++);
    await utimes(d.rel === "" ? root : join(root, d.rel), t, t);
  }
}

beforeAll(async () => {
  base = await makeTempDir("roundtrip");
  src = join(base, "src");
  await buildFixture(src);
  source = await scanTree(src);
  repo = await TestRepo.init(join(base, "repo"));
  first = await repo.backup([src]);
  target = join(base, "restore");
  const r = await repo.run(["--json", "restore", "latest", "--target", target]);
  expect(r.code, r.stderr).toBe(0);
  restoreJson = JSON.parse(r.stdout) as typeof restoreJson;
}, 300_000);

afterAll(removeTempDirs);

describe("backup and restore of every kind of entry", () => {
  it("the fixture is what the test means it to be", () => {
    const sparse = source.get("sparse.img")!;
    expect(sparse.size).toBe(BigInt(SPARSE_SIZE));
    expect(sparse.allocated < 64n * BigInt(MiB), "the file system must support sparse files").toBe(true);
    expect(source.get("hard/one")!.nlink).toBe(3);
    expect(source.get("fifo")!.type).toBe("fifo");
    expect(source.get("setgid-dir")!.mode).toBe(0o2775);
    expect(source.get("setuid.bin")!.mode).toBe(0o4755);
  });

  it("backup reports every file and no skipped entry", () => {
    const files = [...source.values()].filter((e) => e.type === "file");
    const dirs = [...source.values()].filter((e) => e.type === "dir");
    expect(first.skipped).toEqual([]);
    expect(first.summary.filesNew).toBe(files.length);
    expect(first.summary.dirsNew).toBe(dirs.length);
    expect(first.summary.totalBytes).toBe(files.reduce((sum, f) => sum + Number(f.size), 0));
    expect(first.paths).toEqual([src]);
  });

  it("restore succeeds without errors and recreates the hard links", () => {
    expect(restoreJson.errors).toEqual([]);
    expect(restoreJson.links).toBe(2);
  });

  it("restores exactly the same set of entries with the same types", async () => {
    const restored = await scanTree(restoredPath(target, src), { hash: false });
    expect([...restored.keys()].sort()).toEqual([...source.keys()].sort());
    for (const [rel, s] of source) expect(restored.get(rel)!.type, JSON.stringify(rel)).toBe(s.type);
  });

  it("restores contents, modes, mtimes (to the microsecond), symlink targets and owners", async () => {
    const restored = await scanTree(restoredPath(target, src));
    for (const [rel, s] of source) {
      const d = restored.get(rel)!;
      const what = JSON.stringify(rel);
      expect(d, what).toBeDefined();
      if (s.type === "file") {
        expect(d.size, what).toBe(s.size);
        expect(d.sha256, what).toBe(s.sha256);
      }
      if (s.type === "symlink") expect(d.linkTarget, what).toBe(s.linkTarget);
      else expect(d.mode.toString(8), `mode of ${what}`).toBe(s.mode.toString(8));
      // Node (libuv) sets times in whole microseconds: that much must survive.
      expect(d.mtimeNs / 1000n, `mtime of ${what} in µs`).toBe(s.mtimeNs / 1000n);
      if (isRoot) {
        expect([d.uid, d.gid], `owner of ${what}`).toEqual([s.uid, s.gid]);
      }
    }
    if (isRoot) {
      expect([restored.get("small.txt")!.uid, restored.get("small.txt")!.gid]).toEqual([1234, 5678]);
      expect([restored.get("rel-link")!.uid, restored.get("rel-link")!.gid]).toEqual([1234, 5678]);
      expect(restored.get("setuid.bin")!.mode).toBe(0o4755);
    }
  });

  it("restores symlinks as symlinks, including dangling ones and links to directories", async () => {
    const restored = await scanTree(restoredPath(target, src), { hash: false });
    expect(restored.get("rel-link")).toMatchObject({ type: "symlink", linkTarget: "small.txt" });
    expect(restored.get("abs-link")).toMatchObject({ type: "symlink", linkTarget: join(src, "big.bin") });
    expect(restored.get("dangling")).toMatchObject({ type: "symlink", linkTarget: "does/not/exist" });
    expect(restored.get("dirlink")).toMatchObject({ type: "symlink", linkTarget: "nested" });
    // Nothing was restored through the directory link.
    expect(restored.has("dirlink/a")).toBe(false);
  });

  it("restores a group of three hard links as one inode", async () => {
    const restored = await scanTree(restoredPath(target, src), { hash: false });
    const group = ["hard/one", "hard/two", "nested/three"].map((p) => restored.get(p)!);
    expect(new Set(group.map((e) => e.ino)).size).toBe(1);
    expect(group.map((e) => e.nlink)).toEqual([3, 3, 3]);
    expect(restored.get("small.txt")!.nlink).toBe(1);
    expect(restored.get("small.txt")!.ino).not.toBe(group[0]!.ino);
  });

  it("restores the 3 GiB sparse file byte-identically and still sparse", async () => {
    const restored = await scanTree(restoredPath(target, src), { hash: false });
    const s = restored.get("sparse.img")!;
    expect(s.size).toBe(BigInt(SPARSE_SIZE));
    // sha256 of the content was compared above; here: the holes stayed holes.
    expect(s.allocated < 256n * BigInt(MiB), `allocated ${s.allocated} bytes`).toBe(true);
  });

  it("--include restores only the selected subtree (and its ancestors)", async () => {
    const partial = join(base, "restore-include");
    const r = await repo.run(["restore", "latest", "-t", partial, "--include", join(src, "nested")]);
    expect(r.code, r.stderr).toBe(0);
    const restored = await scanTree(restoredPath(partial, src));
    const expected = [...source.keys()].filter((k) => k === "" || k === "nested" || k.startsWith("nested/"));
    expect([...restored.keys()].sort()).toEqual(expected.sort());
    for (const rel of expected) {
      if (source.get(rel)!.type === "file") expect(restored.get(rel)!.sha256).toBe(source.get(rel)!.sha256);
    }
    // A single file works too, and nothing else of the snapshot appears.
    const single = join(base, "restore-single");
    const r2 = await repo.run(["restore", "latest", "-t", single, "-i", join(src, "hard", "two")]);
    expect(r2.code, r2.stderr).toBe(0);
    const only = await scanTree(restoredPath(single, src));
    expect([...only.keys()].sort()).toEqual(["", "hard", "hard/two"]);
    expect(only.get("hard/two")!.sha256).toBe(source.get("hard/one")!.sha256);
  });

  it("ls --json lists every entry with type, mode and size", async () => {
    const ls = await repo.json<{
      snapshot: string;
      entries: { path: string; type: string; mode: number; size?: number; mtime: string }[];
    }>(["ls", "latest"]);
    expect(ls.snapshot).toBe(first.snapshot);
    const byPath = new Map(ls.entries.map((e) => [e.path, e]));
    const ancestors = src.split("/").filter(Boolean).length; // /tmp, /tmp/bulwark-e2e-..., src
    expect(ls.entries.length).toBe(source.size - 1 + ancestors);
    for (const [rel, s] of source) {
      const p = rel === "" ? src : `${src}/${rel}`;
      const e = byPath.get(p);
      expect(e, JSON.stringify(p)).toBeDefined();
      expect(e!.type).toBe(s.type);
      if (s.type !== "symlink") expect(e!.mode).toBe(s.mode);
      if (s.type === "file") expect(e!.size).toBe(Number(s.size));
    }
    expect(byPath.get(`${src}/sparse.img`)!.size).toBe(SPARSE_SIZE);
    expect(byPath.get(`${src}/private.txt`)!.mode).toBe(0o600);
    // mtime is printed as ISO time of the source's mtime (milliseconds)
    const mt = Number(source.get("small.txt")!.mtimeNs / 1_000_000n);
    expect(byPath.get(`${src}/small.txt`)!.mtime).toBe(new Date(mt).toISOString());

    const sub = await repo.json<{ entries: { path: string }[] }>(["ls", "latest", join(src, "nested", "a")]);
    expect(sub.entries.map((e) => e.path).sort()).toEqual(
      [...source.keys()]
        .filter((k) => k === "nested/a" || k.startsWith("nested/a/"))
        .map((k) => `${src}/${k}`)
        .sort(),
    );

    const long = await repo.ok(["ls", "-l", "latest"]);
    expect(long.stdout).toContain(`${src}/rel-link -> small.txt`);
    expect(long.stdout).toMatch(/^-rw------- .* \S+\/private\.txt$/m);
  });

  it("snapshots --json describes the snapshot", async () => {
    const list = await repo.snapshots();
    expect(list).toHaveLength(1);
    const s: SnapshotJson = list[0]!;
    expect(s.id).toBe(first.snapshot);
    expect(s.id).toMatch(/^[0-9a-f]{64}$/);
    expect(s.tree).toBe(first.tree);
    expect(s.paths).toEqual([src]);
    expect(s.hostname).toBe(hostname());
    expect(s.summary!.filesNew).toBe(first.summary.filesNew);
    expect(s.skipped ?? []).toEqual([]);
  });

  it("diff --json shows added, removed and modified files between two snapshots", async () => {
    await writeFile(join(src, "small.txt"), "hello, changed world\n");
    await rm(join(src, "empty.txt"));
    await writeFile(join(src, "added.txt"), "new file\n");
    const second = await repo.backup([src]);
    expect(second.parent).toBe(first.snapshot);
    expect(second.summary.filesNew).toBe(1);
    expect(second.summary.filesChanged).toBe(1);
    // The 3 GiB file is unchanged: not read again.
    expect(second.summary.bytesRead).toBeLessThan(1000);

    const diff = await repo.json<{
      from: string;
      to: string;
      changes: { path: string; change: string }[];
      added: number;
      removed: number;
      modified: number;
    }>(["diff", first.snapshot.slice(0, 8), second.snapshot]);
    expect(diff.from).toBe(first.snapshot);
    expect(diff.to).toBe(second.snapshot);
    expect(diff.changes).toEqual([
      { path: `${src}/added.txt`, change: "+" },
      { path: `${src}/empty.txt`, change: "-" },
      { path: `${src}/small.txt`, change: "M" },
    ]);
    expect([diff.added, diff.removed, diff.modified]).toEqual([1, 1, 1]);

    const human = await repo.ok(["diff", first.snapshot, second.snapshot]);
    expect(human.stdout).toContain(`+    ${src}/added.txt`);
  });

  it("stats --json counts files, raw and stored sizes", async () => {
    const list = await repo.snapshots();
    expect(list).toHaveLength(2);
    const stats = await repo.json<{
      snapshots: number;
      files: number;
      rawBytes: number;
      blobs: number;
      dedupBytes: number;
      storedBytes: number;
      packs: number;
      repositoryBytes: number;
    }>(["stats"]);
    const filesOf = (s: SnapshotJson): number =>
      s.summary!.filesNew + s.summary!.filesChanged + s.summary!.filesUnmodified;
    expect(stats.snapshots).toBe(2);
    expect(stats.files).toBe(filesOf(list[0]!) + filesOf(list[1]!));
    expect(stats.rawBytes).toBe(list[0]!.summary!.totalBytes + list[1]!.summary!.totalBytes);
    expect(stats.rawBytes).toBeGreaterThan(2 * SPARSE_SIZE);
    // Deduplicated: the 3 GiB of zeros are a few blobs; everything else is stored once.
    expect(stats.dedupBytes).toBeLessThan(64 * MiB);
    expect(stats.dedupBytes).toBeGreaterThan(20 * MiB);
    const packs = await packFiles(repo.dir);
    expect(stats.packs).toBe(packs.length);
    let bytes = 0;
    for (const p of packs) bytes += (await stat(p)).size;
    expect(stats.repositoryBytes).toBe(bytes);

    const one = await repo.json<{ snapshots: number; files: number; rawBytes: number }>([
      "stats",
      first.snapshot,
    ]);
    expect(one).toMatchObject({ snapshots: 1, files: filesOf(list[0]!), rawBytes: first.summary.totalBytes });
  });
});
