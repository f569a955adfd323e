/**
 * Incremental backups: unchanged data is not stored again, a small edit in a large file stores only the
 * chunks around it, excludes keep files out, tags and host are recorded.
 */
import { lstatSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  KiB,
  MiB,
  TestRepo,
  listFiles,
  makeTempDir,
  packFiles,
  randomData,
  removeTempDirs,
  restoredPath,
  sha256,
  sha256File,
  writeFiles,
  type BackupJson,
} from "./helpers.js";

let base: string;

beforeAll(async () => {
  // Not under /tmp: the other test files create directories there all the time, which changes /tmp's
  // mtime, so the snapshot's ancestor trees, while this test needs an unchanged second backup.
  base = await makeTempDir("incremental", "/var/tmp");
});
afterAll(removeTempDirs);

/** mtime and ctime of every directory above `path`: the metadata a snapshot records for its ancestors. */
function ancestorStamp(path: string): string {
  const stamps: string[] = [];
  for (let p = dirname(path); ; p = dirname(p)) {
    const st = lstatSync(p, { bigint: true });
    stamps.push(`${p}:${st.mtimeNs}:${st.ctimeNs}`);
    if (p === "/") break;
  }
  return stamps.join(" ");
}

async function lsPaths(repo: TestRepo, ref = "latest"): Promise<string[]> {
  const ls = await repo.json<{ entries: { path: string }[] }>(["ls", ref]);
  return ls.entries.map((e) => e.path);
}

describe("incremental backups", () => {
  it("a second backup of unchanged data writes no new pack, index or data", async () => {
    const src = join(base, "unchanged");
    const files: Record<string, Buffer | string> = {};
    for (let i = 0; i < 12; i++) files[`dir${i % 3}/small-${i}.txt`] = `small file ${i}\n`.repeat(i + 1);
    for (let i = 0; i < 4; i++) files[`big-${i}.bin`] = randomData(MiB + i * 333 * KiB);
    files["empty"] = "";
    await writeFiles(src, files);
    const repo = await TestRepo.init(join(base, "repo-unchanged"));
    const fileCount = Object.keys(files).length;

    let before = ancestorStamp(src);
    const first = await repo.backup([src]);
    expect(first.summary.filesNew).toBe(fileCount);
    expect(first.summary.dataAdded).toBeGreaterThan(4 * MiB);

    // The snapshot records the metadata of the directories above `src` (/tmp among them), which other
    // processes may change at any time; that legitimately stores a new tree. A backup during which none of
    // it changed must store nothing at all: retry until one such backup happened.
    let strict: BackupJson | undefined;
    for (let attempt = 0; attempt < 10 && strict === undefined; attempt++) {
      const packsBefore = (await packFiles(repo.dir)).length;
      const indexBefore = (await listFiles(join(repo.dir, "index"))).length;
      const again = await repo.backup([src]);
      const after = ancestorStamp(src);
      expect(again.summary.filesUnmodified).toBe(fileCount);
      expect(again.summary.filesNew + again.summary.filesChanged).toBe(0);
      expect(again.summary.bytesRead).toBe(0);
      if (after === before) {
        strict = again;
        expect(again.summary.dataAdded).toBe(0);
        expect(again.summary.blobsAdded).toBe(0);
        expect(again.tree).toBe(first.tree);
        expect((await packFiles(repo.dir)).length).toBe(packsBefore);
        expect((await listFiles(join(repo.dir, "index"))).length).toBe(indexBefore);
      } else {
        // Only the trees above src may be new: no data blob.
        expect(again.summary.blobsAdded).toBeLessThanOrEqual(src.split("/").length);
        expect(again.summary.dataAdded).toBeLessThan(64 * KiB);
      }
      before = after;
    }
    expect(strict, "no backup ran while the directories above the source were unchanged").toBeDefined();
    const list = await repo.snapshots();
    expect(list.at(-1)!.id).toBe(strict!.snapshot);
    expect(list.at(-1)!.parent).toBe(list.at(-2)!.id);
  });

  it("inserting 100 bytes in the middle of a 64 MiB file stores only a few new blobs", async () => {
    const src = join(base, "bigfile");
    const big = join(src, "big.bin");
    const original = randomData(64 * MiB);
    await writeFiles(src, { "big.bin": original, "other.txt": "unchanged\n" });
    const repo = await TestRepo.init(join(base, "repo-bigfile"));
    const first = await repo.backup([src]);
    expect(first.summary.dataAdded).toBeGreaterThanOrEqual(64 * MiB);

    const middle = 32 * MiB + 12_345;
    const edited = Buffer.concat([original.subarray(0, middle), randomData(100), original.subarray(middle)]);
    await writeFile(big, edited);
    const second = await repo.backup([src]);
    expect(second.summary.filesChanged).toBe(1);
    expect(second.summary.filesUnmodified).toBe(1);
    expect(second.summary.bytesRead).toBe(edited.length);
    // New trees: the source directory's and one per ancestor up to the root (snapshots keep absolute
    // paths). Everything else must be new data chunks around the edit: one, rarely two or three.
    const trees = src.split("/").length; // "/a/b/src" -> 4 trees: /, /a, /a/b, /a/b/src
    const dataBlobs = second.summary.blobsAdded - trees;
    expect(dataBlobs, `blobsAdded ${second.summary.blobsAdded}`).toBeGreaterThanOrEqual(1);
    expect(dataBlobs, `blobsAdded ${second.summary.blobsAdded}`).toBeLessThanOrEqual(3);
    expect(second.summary.dataAdded).toBeLessThan(10 * MiB);

    // Both versions restore byte-identically.
    for (const [snap, data] of [
      [first.snapshot, original],
      [second.snapshot, edited],
    ] as const) {
      const target = join(base, `restore-big-${snap.slice(0, 8)}`);
      const r = await repo.run(["restore", snap, "-t", target]);
      expect(r.code, r.stderr).toBe(0);
      expect(await sha256File(join(restoredPath(target, src), "big.bin"))).toBe(sha256(data));
    }
  });

  it("--exclude and --exclude-file keep matching files out of the snapshot", async () => {
    const src = join(base, "excludes");
    await writeFiles(src, {
      "keep.txt": "keep",
      "a.log": "log",
      "important.log": "re-included",
      "sub/b.log": "log",
      "sub/keep.md": "keep",
      "node_modules/pkg/index.js": "js",
      "cache/blob.bin": "cache",
      "deep/cache/x": "cache anywhere",
      "secret.key": "key",
      "deep/not-a-cache.txt": "keep",
      "anchored/tmp.txt": "anchored exclude",
      "sub/anchored/tmp.txt": "kept: the anchor is at the root",
    });
    const excludeFile = join(base, "excludes.txt");
    await writeFile(
      excludeFile,
      ["# a comment", "", "cache", "*.key", "!important.log", `${src}/anchored`, ""].join("\n"),
    );
    const repo = await TestRepo.init(join(base, "repo-excludes"));
    const b = await repo.backup(
      [src],
      ["--exclude", "*.log", "-e", "node_modules", "--exclude-file", excludeFile],
    );
    expect(b.skipped).toEqual([]);
    const paths = (await lsPaths(repo))
      .filter((p) => p.startsWith(src + "/"))
      .map((p) => p.slice(src.length + 1));
    expect(paths.sort()).toEqual(
      [
        "keep.txt",
        "important.log",
        "sub",
        "sub/keep.md",
        "sub/anchored",
        "sub/anchored/tmp.txt",
        "deep",
        "deep/not-a-cache.txt",
      ].sort(),
    );
    const snap = (await repo.snapshots()).at(-1)!;
    expect(snap.excludes).toEqual([
      "*.log",
      "node_modules",
      "cache",
      "*.key",
      "!important.log",
      `${src}/anchored`,
    ]);

    // A missing exclude file is an error, not an empty list.
    const missing = await repo.run(["backup", "--exclude-file", join(base, "no-such-file"), src]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("cannot read exclude file");
  });

  it("--tag and --host are recorded and filter snapshots", async () => {
    const src = join(base, "tags");
    await writeFiles(src, { "f.txt": "tagged\n" });
    const repo = await TestRepo.init(join(base, "repo-tags"));
    const tagged = await repo.backup([src], ["--tag", "zeta", "--tag", "alpha", "--host", "backup-host-1"]);
    const plain = await repo.backup([src], ["--host", "other-host"]);

    const all = await repo.snapshots();
    expect(all.map((s) => s.id)).toEqual([tagged.snapshot, plain.snapshot]);
    expect(all[0]).toMatchObject({ hostname: "backup-host-1", tags: ["alpha", "zeta"], paths: [src] });
    expect(all[1]).toMatchObject({ hostname: "other-host", tags: [] });
    // A different host is not a parent: the second backup read the file again.
    expect(all[1]!.parent).toBeUndefined();

    expect((await repo.snapshots(["--tag", "alpha"])).map((s) => s.id)).toEqual([tagged.snapshot]);
    expect((await repo.snapshots(["--host", "other-host"])).map((s) => s.id)).toEqual([plain.snapshot]);
    expect(await repo.snapshots(["--tag", "alpha", "--host", "other-host"])).toEqual([]);

    const human = await repo.ok(["snapshots"]);
    expect(human.stdout).toContain("backup-host-1");
    expect(human.stdout).toContain("alpha,zeta");
    expect(human.stdout).toContain("2 snapshots");
  });
});
