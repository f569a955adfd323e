/**
 * Damaged repositories: one flipped byte in a data blob, an index file, a snapshot file or a tree blob, and
 * a truncated pack. `check` must find and name the damage (and who needs the damaged data); `restore`
 * must restore everything that is intact byte-identically and leave out (and list) what is not, never
 * writing wrong content.
 *
 * One pristine repository with two snapshots (the second shares the subdirectories of the first) is
 * copied for each kind of damage. Where the damage goes is found through the library's view of the
 * repository (index, trees), so the tests do not depend on how blobs are laid out in packs.
 */
import { existsSync } from "node:fs";
import { cp, readFile, readdir, rm, stat, truncate } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { LocalBackend } from "../../src/backend/local/local-backend.js";
import type { IndexFile } from "../../src/repository/master-index.js";
import { Repository } from "../../src/repository/repository.js";
import { loadAllSnapshots } from "../../src/snapshot/snapshot.js";
import { walkTree } from "../../src/snapshot/walker.js";
import {
  KiB,
  MiB,
  TestRepo,
  flipByte,
  makeTempDir,
  randomData,
  removeTempDirs,
  restoredPath,
  scanTree,
  writeFiles,
  type CheckJson,
  type Entry,
  type Finding,
  type RunResult,
} from "./helpers.js";

interface BlobPlace {
  pack: string;
  offset: number;
  length: number;
  type: "data" | "tree";
}

interface Layout {
  /** Snapshot ids, oldest first. */
  snapshots: string[];
  /** Per snapshot: snapshot path of each file -> its data blobs; of each directory -> its tree blob. */
  files: Map<string, string[]>[];
  dirs: Map<string, string>[];
  roots: string[];
  blobs: Map<string, BlobPlace>;
  /** Index file name -> packs it lists. */
  indexFiles: Map<string, string[]>;
}

let base: string;
let src: string;
let pristine: TestRepo;
let layout: Layout;
/** The source as of the second snapshot (relative path -> entry). */
let source: Map<string, Entry>;
/** The source as of the first snapshot. */
let sourceFirst: Map<string, Entry>;

async function readLayout(repoDir: string, password: string): Promise<Layout> {
  const backend = await LocalBackend.open(repoDir);
  try {
    const repo = await Repository.open(backend, password);
    await repo.loadIndex();
    const out: Layout = {
      snapshots: [],
      files: [],
      dirs: [],
      roots: [],
      blobs: new Map(),
      indexFiles: new Map(),
    };
    for (const [id, e] of repo.index.entries()) {
      out.blobs.set(id, { pack: e.pack, offset: e.offset, length: e.length, type: e.type });
    }
    for (const name of await repo.listNames("index")) {
      const file = await repo.loadDocument<IndexFile>("index", name);
      out.indexFiles.set(
        name,
        file.packs.map((p) => p.id),
      );
    }
    for (const s of await loadAllSnapshots(repo)) {
      out.snapshots.push(s.id);
      out.roots.push(s.tree);
      const files = new Map<string, string[]>();
      const dirs = new Map<string, string>();
      for await (const { path, node } of walkTree(repo, s.tree)) {
        if (node.type === "file") files.set(path, node.content ?? []);
        if (node.type === "dir" && node.subtree) dirs.set(path, node.subtree);
      }
      out.files.push(files);
      out.dirs.push(dirs);
    }
    return out;
  } finally {
    await backend.close();
  }
}

let copies = 0;
async function damagedCopy(): Promise<TestRepo> {
  const dir = join(base, `repo-copy-${++copies}`);
  await cp(pristine.dir, dir, { recursive: true });
  return new TestRepo(dir, pristine.passwordFile, pristine.password);
}

const packPath = (repoDir: string, pack: string): string => join(repoDir, "data", pack.slice(0, 2), pack);

async function checkJson(repo: TestRepo, args: string[]): Promise<{ r: RunResult; json: CheckJson }> {
  const r = await repo.run(["--json", "check", ...args]);
  return { r, json: JSON.parse(r.stdout) as CheckJson };
}

const label = (snapshot: string, path: string): string => `${snapshot.slice(0, 8)}:${path}`;

/**
 * Restores `snapshot` and checks the outcome against the source: every restored file is byte-identical,
 * nothing unexpected appears, and every missing file is listed (itself or a directory above it) in the
 * errors and on stderr. Returns the snapshot paths of the missing files.
 */
async function restoreAndVerify(
  repo: TestRepo,
  snapshot: string,
  expected: Map<string, Entry>,
): Promise<{ r: RunResult; missing: string[]; listed: string[] }> {
  const target = join(base, `restore-${++copies}`);
  const r = await repo.run(["--json", "restore", snapshot, "-t", target]);
  let listed: string[] = [];
  if (r.stdout.trim() !== "") {
    const json = JSON.parse(r.stdout) as { errors?: { path: string }[]; error?: unknown };
    listed = (json.errors ?? []).map((e) => e.path);
  }
  const root = restoredPath(target, src);
  const restored = existsSync(root) ? await scanTree(root) : new Map<string, Entry>();
  for (const [rel, e] of restored) {
    const want = expected.get(rel);
    expect(want, `unexpected entry ${rel} in the restore`).toBeDefined();
    if (e.type === "file") expect(e.sha256, `content of ${rel}`).toBe(want!.sha256);
  }
  const missing: string[] = [];
  for (const [rel, e] of expected) {
    if (e.type !== "file" || restored.has(rel)) continue;
    const path = `${src}/${rel}`;
    missing.push(path);
    if (listed.length > 0) {
      const covered = listed.some((l) => l === "/" || path === l || path.startsWith(l + "/"));
      expect(covered, `${path} is missing but not listed in ${JSON.stringify(listed)}`).toBe(true);
    }
  }
  if (missing.length > 0) {
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr.trim()).not.toBe("");
  }
  for (const l of listed) expect(r.stderr).toContain(l);
  return { r, missing: missing.sort(), listed };
}

beforeAll(async () => {
  base = await makeTempDir("corruption");
  src = join(base, "src");
  await writeFiles(src, {
    "a.bin": randomData(3 * MiB),
    "b.txt": "compressible text\n".repeat(2000),
    "dir1/c.bin": randomData(1536 * KiB),
    "dir1/d.txt": "d\n",
    "dir2/e.bin": randomData(700 * KiB),
    "dir2/sub/f.txt": "f\n",
  });
  pristine = await TestRepo.init(join(base, "pristine"));
  await pristine.ok(["backup", src]);
  sourceFirst = await scanTree(src);
  await writeFiles(src, { "g.txt": "added for the second snapshot\n" });
  await pristine.ok(["backup", src]);
  source = await scanTree(src);
  layout = await readLayout(pristine.dir, pristine.password);
  expect(layout.snapshots).toHaveLength(2);
}, 120_000);
afterAll(removeTempDirs);

describe("damaged repositories", () => {
  it("a healthy repository checks clean and restores completely", async () => {
    for (const args of [[], ["--read-data"]]) {
      const { r, json } = await checkJson(pristine, args);
      expect(r.code, r.stdout).toBe(0);
      expect(json).toMatchObject({ ok: true, errors: 0, findings: [] });
    }
    const { r, missing } = await restoreAndVerify(pristine, layout.snapshots[1]!, source);
    expect(r.code).toBe(0);
    expect(missing).toEqual([]);
  });

  it("(a) a flipped byte in a data blob: check names pack, snapshots and files; restore leaves out that file", async () => {
    const repo = await damagedCopy();
    const [s1, s2] = layout.snapshots as [string, string];
    // dir1 is unchanged between the snapshots: both need its files.
    const path = `${src}/dir1/c.bin`;
    const blob = layout.files[1]!.get(path)![0]!;
    expect(layout.files[0]!.get(path)).toContain(blob);
    const place = layout.blobs.get(blob)!;
    await flipByte(packPath(repo.dir, place.pack), place.offset + Math.floor(place.length / 2));

    const { r, json } = await checkJson(repo, ["--read-data"]);
    expect(r.code).toBe(1);
    expect(json.ok).toBe(false);
    const errors = json.findings.filter((f) => f.severity === "error");
    expect(errors).toHaveLength(1);
    const f = errors[0]!;
    expect(f.kind).toBe("blob-damaged");
    expect(f.pack).toBe(place.pack);
    expect(f.blobs).toEqual([blob]);
    expect(f.snapshots).toEqual([s1, s2].sort());
    expect(f.files).toEqual([label(s1, path), label(s2, path)].sort());
    // Human output says the same.
    const human = await repo.run(["check", "--read-data"]);
    expect(human.code).toBe(1);
    expect(human.stdout).toContain(place.pack.slice(0, 12));
    expect(human.stdout).toContain(`affects ${label(s2, path)}`);

    for (const [snapshot, expected] of [
      [s1, sourceFirst],
      [s2, source],
    ] as const) {
      const { r: restore, missing, listed } = await restoreAndVerify(repo, snapshot, expected);
      expect(restore.code).toBe(1);
      expect(missing).toEqual([path]);
      expect(listed).toEqual([path]);
    }
  });

  it("(b) a flipped byte in an index file: check names it; data it described is reported missing", async () => {
    const repo = await damagedCopy();
    const [s1, s2] = layout.snapshots as [string, string];
    // The index of the second backup: it lists the packs holding the second snapshot's root tree.
    const rootPack = layout.blobs.get(layout.roots[1]!)!.pack;
    const [name] = [...layout.indexFiles].find(([, packs]) => packs.includes(rootPack))!;
    const file = join(repo.dir, "index", name);
    await flipByte(file, Math.floor((await stat(file)).size / 2));

    const { r, json } = await checkJson(repo, []);
    expect(r.code).toBe(1);
    const damaged = json.findings.filter((f) => f.kind === "index-damaged");
    expect(damaged).toHaveLength(1);
    expect(damaged[0]!.message).toContain(`index/${name.slice(0, 12)}`);
    // Its packs are now unreferenced (warnings), and what the second snapshot needs from them is missing.
    const unreferenced = json.findings.filter((f) => f.kind === "pack-unreferenced").map((f) => f.pack);
    expect(unreferenced.sort()).toEqual([...layout.indexFiles.get(name)!].sort());
    // The second snapshot's root tree is no longer indexed: its tree cannot be loaded.
    const lost = json.findings.filter((f) => f.kind === "tree-damaged" || f.kind === "blob-missing");
    expect(lost.length).toBeGreaterThan(0);
    for (const f of lost) expect(f.snapshots).toEqual([s2]);
    expect(lost.find((f) => f.blobs?.includes(layout.roots[1]!))?.files).toEqual([label(s2, "/")]);

    // The first snapshot is described by the other index: it restores completely.
    const first = await restoreAndVerify(repo, s1, sourceFirst);
    expect(first.r.code, first.r.stderr).toBe(0);
    expect(first.missing).toEqual([]);
    // The second cannot be read at all: nothing is written, the failure is reported.
    const second = await restoreAndVerify(repo, s2, source);
    expect(second.r.code).toBe(1);
    expect(second.listed).toEqual(["/"]);
    expect(second.missing).toHaveLength([...source.values()].filter((e) => e.type === "file").length);
  });

  it("(c) a flipped byte in a snapshot file: check names the snapshot; restoring it fails cleanly", async () => {
    const repo = await damagedCopy();
    const [s1] = layout.snapshots as [string, string];
    const file = join(repo.dir, "snapshots", s1);
    await flipByte(file, Math.floor((await stat(file)).size / 2));

    const { r, json } = await checkJson(repo, ["--read-data"]);
    expect(r.code).toBe(1);
    const errors = json.findings.filter((f) => f.severity === "error");
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ kind: "snapshot-damaged", snapshots: [s1] });
    expect(errors[0]!.message).toContain(s1.slice(0, 12));

    const target = join(base, "restore-damaged-snapshot");
    const restore = await repo.run(["restore", s1, "-t", target]);
    expect(restore.code).toBe(1);
    expect(restore.stderr).toMatch(/damaged/);
    expect(existsSync(restoredPath(target, src))).toBe(false);
  });

  // One damaged snapshot file must not make the intact ones unreachable: listing names it and lists the rest,
  // exiting 3 (partial) so a script does not take the shorter list for the whole repository.
  it("(c) with one snapshot file damaged, the other snapshots still list (exit 3, naming it) and restore", async () => {
    const repo = await damagedCopy();
    const [s1, s2] = layout.snapshots as [string, string];
    const file = join(repo.dir, "snapshots", s1);
    await flipByte(file, Math.floor((await stat(file)).size / 2));
    const list = await repo.run(["snapshots"]);
    expect(list.code, list.stderr).toBe(3);
    expect(list.stderr).toContain(`skipping damaged snapshot ${s1.slice(0, 8)}`);
    expect(list.stderr).toContain("1 snapshot file could not be read");
    expect(list.stdout).toContain(s2.slice(0, 8));
    expect(list.stdout).not.toContain(s1.slice(0, 8));
    const json = await repo.run(["snapshots", "--json"]);
    expect(json.code).toBe(3);
    expect((JSON.parse(json.stdout) as { id: string }[]).map((s) => s.id)).toEqual([s2]);
    const second = await restoreAndVerify(repo, s2, source);
    expect(second.r.code, second.r.stderr).toBe(0);
    expect(second.missing).toEqual([]);
  });

  it("(d) a flipped byte in a tree blob: check reports the damaged tree and who needs it; restore leaves out its contents", async () => {
    const repo = await damagedCopy();
    const [s1, s2] = layout.snapshots as [string, string];
    const dir = `${src}/dir2`;
    const tree = layout.dirs[1]!.get(dir)!;
    expect(layout.dirs[0]!.get(dir)).toBe(tree);
    const place = layout.blobs.get(tree)!;
    expect(place.type).toBe("tree");
    await flipByte(packPath(repo.dir, place.pack), place.offset + Math.floor(place.length / 2));

    // Without --read-data: the tree cannot be loaded.
    const { r, json } = await checkJson(repo, []);
    expect(r.code).toBe(1);
    const treeDamaged = json.findings.filter((f) => f.kind === "tree-damaged");
    expect(treeDamaged).toHaveLength(1);
    expect(treeDamaged[0]).toMatchObject({ blobs: [tree], snapshots: [s1, s2].sort() });
    expect(treeDamaged[0]!.files).toEqual([label(s1, dir), label(s2, dir)].sort());
    // With --read-data the pack's damage is named as well.
    const full = await checkJson(repo, ["--read-data"]);
    expect(full.r.code).toBe(1);
    const blobDamaged = full.json.findings.find((f: Finding) => f.kind === "blob-damaged");
    expect(blobDamaged).toMatchObject({ pack: place.pack, blobs: [tree] });

    const { r: restore, missing, listed } = await restoreAndVerify(repo, s2, source);
    expect(restore.code).toBe(1);
    expect(listed).toEqual([dir]);
    expect(missing).toEqual([`${dir}/e.bin`, `${dir}/sub/f.txt`]);
  });

  it("(e) a truncated pack: check names it even without --read-data; restore keeps what is intact", async () => {
    const repo = await damagedCopy();
    const [s1, s2] = layout.snapshots as [string, string];
    // The data pack holding a.bin: cut it in the middle of one of its blobs, keeping earlier blobs whole.
    const aPack = layout.blobs.get(layout.files[1]!.get(`${src}/a.bin`)![0]!)!.pack;
    const inPack = [...layout.blobs]
      .filter(([, p]) => p.pack === aPack)
      .sort(([, x], [, y]) => x.offset - y.offset);
    expect(inPack.length).toBeGreaterThan(2);
    const [, cutBlob] = inPack[Math.floor(inPack.length / 2)]!;
    const cut = cutBlob.offset + Math.floor(cutBlob.length / 2);
    await truncate(packPath(repo.dir, aPack), cut);
    const lost = new Set(inPack.filter(([, p]) => p.offset + p.length > cut).map(([id]) => id));

    const { r, json } = await checkJson(repo, []);
    expect(r.code).toBe(1);
    const size = json.findings.filter((f) => f.kind === "pack-size");
    expect(size).toHaveLength(1);
    expect(size[0]!.pack).toBe(aPack);
    expect(size[0]!.message).toMatch(/truncated/);
    expect(new Set(size[0]!.blobs)).toEqual(lost);
    const full = await checkJson(repo, ["--read-data"]);
    expect(full.r.code).toBe(1);
    expect(full.json.findings.filter((f) => f.severity === "error").every((f) => f.pack === aPack)).toBe(
      true,
    );

    for (const [i, snapshot, expected] of [
      [0, s1, sourceFirst],
      [1, s2, source],
    ] as const) {
      const expectLost = [...layout.files[i]!]
        .filter(([, content]) => content.some((id) => lost.has(id)))
        .map(([p]) => p)
        .sort();
      expect(expectLost.length).toBeGreaterThan(0);
      const { r: restore, missing, listed } = await restoreAndVerify(repo, snapshot, expected);
      expect(restore.code).toBe(1);
      expect(missing).toEqual(expectLost);
      expect(listed.sort()).toEqual(expectLost);
      // The files check traced to the damage are exactly those.
      expect(size[0]!.files!.filter((f) => f.startsWith(snapshot.slice(0, 8))).sort()).toEqual(
        expectLost.map((p) => label(snapshot, p)),
      );
    }
    expect(await readdir(join(repo.dir, "snapshots"))).toHaveLength(2);
    expect((await readFile(packPath(repo.dir, aPack))).length).toBe(cut);
  });

  it("(f) a deleted pack: check names it and the files that need it; restore leaves exactly those out", async () => {
    const repo = await damagedCopy();
    const [s1, s2] = layout.snapshots as [string, string];
    const path = `${src}/dir2/e.bin`;
    const pack = layout.blobs.get(layout.files[1]!.get(path)![0]!)!.pack;
    await rm(packPath(repo.dir, pack));
    const lost = new Set([...layout.blobs].filter(([, p]) => p.pack === pack).map(([id]) => id));

    const { r, json } = await checkJson(repo, []);
    expect(r.code).toBe(1);
    const missing = json.findings.filter((f) => f.severity === "error");
    expect(missing).toHaveLength(1);
    expect(missing[0]).toMatchObject({ kind: "pack-missing", pack });
    expect(new Set(missing[0]!.blobs)).toEqual(lost);
    for (const [i, snapshot, expected] of [
      [0, s1, sourceFirst],
      [1, s2, source],
    ] as const) {
      const expectLost = [...layout.files[i]!]
        .filter(([, content]) => content.some((id) => lost.has(id)))
        .map(([p]) => p)
        .sort();
      expect(expectLost).toContain(path);
      expect(missing[0]!.files!.filter((f) => f.startsWith(snapshot.slice(0, 8))).sort()).toEqual(
        expectLost.map((p) => label(snapshot, p)),
      );
      const { r: restore, missing: absent, listed } = await restoreAndVerify(repo, snapshot, expected);
      expect(restore.code).toBe(1);
      expect(absent).toEqual(expectLost);
      expect(listed.sort()).toEqual(expectLost);
    }
  });
});
