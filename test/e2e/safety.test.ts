/**
 * Restore never writes outside its target.
 *
 * 1. Malicious snapshots, written with the library: tree blobs are hand-made JSON with names such as "..",
 *    "../x", "/abs", "a/b", "", "." and duplicates (a directory and a symlink to outside of the same name).
 *    Restoring them must report the problem (non-zero exit) and create nothing outside the target.
 * 2. Honest snapshots restored into a target that already holds a symlink where the snapshot has a
 *    directory or a file (planted, or left by restoring an earlier snapshot): nothing may be written,
 *    created or changed (mode, mtime) through it.
 */
import { lstatSync, existsSync } from "node:fs";
import { mkdir, readFile, readdir, rm, symlink, utimes, writeFile, chmod } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { LocalBackend } from "../../src/backend/local/local-backend.js";
import { PackWriter } from "../../src/repository/pack-writer.js";
import { Repository } from "../../src/repository/repository.js";
import {
  TestRepo,
  makeTempDir,
  removeTempDirs,
  restoredPath,
  scanTree,
  sha256,
  writeFiles,
  type RunResult,
} from "./helpers.js";

let base: string;
let repo: TestRepo;
/** A directory outside every restore target that nothing may touch. */
let outside: string;

beforeAll(async () => {
  base = await makeTempDir("safety");
  outside = await makeTempDir("safety-outside");
  repo = await TestRepo.init(join(base, "repo"));
});
afterAll(removeTempDirs);

type RawNode = Record<string, unknown>;

const uid = process.getuid?.() ?? 0;
const gid = process.getgid?.() ?? 0;
const meta = (name: string, type: string, mode: number): RawNode => ({
  name,
  type,
  mode,
  uid,
  gid,
  mtime: "1600000000000000000",
  ctime: "1600000000000000000",
});

/** Writes blobs and a snapshot through the library, with trees as raw JSON (no validation on the way). */
async function craftSnapshot(
  build: (b: {
    tree(nodes: RawNode[]): Promise<string>;
    file(name: string, text: string): Promise<RawNode>;
    dir(name: string, nodes: RawNode[]): Promise<RawNode>;
    symlink(name: string, target: string): RawNode;
  }) => Promise<RawNode[]>,
): Promise<string> {
  const backend = await LocalBackend.open(repo.dir);
  try {
    const r = await Repository.open(backend, repo.password);
    const writer = new PackWriter(r);
    const tree = (nodes: RawNode[]): Promise<string> =>
      writer.addPlain("tree", Buffer.from(JSON.stringify({ nodes })));
    const helpers = {
      tree,
      file: async (name: string, text: string): Promise<RawNode> => ({
        ...meta(name, "file", 0o644),
        size: Buffer.byteLength(text),
        content: [await writer.addPlain("data", Buffer.from(text))],
      }),
      dir: async (name: string, nodes: RawNode[]): Promise<RawNode> => ({
        ...meta(name, "dir", 0o755),
        subtree: await tree(nodes),
      }),
      symlink: (name: string, target: string): RawNode => ({
        ...meta(name, "symlink", 0o777),
        linkTarget: target,
      }),
    };
    const root = await tree(await build(helpers));
    await writer.flush();
    await r.saveDocument("index", { version: 1, packs: writer.takeNewPacks() });
    return await r.saveDocument("snapshot", {
      version: 1,
      time: new Date().toISOString(),
      tree: root,
      paths: ["/crafted"],
      hostname: "crafted",
      username: "crafted",
      uid,
      gid,
      tags: [],
      program: "crafted by safety.test.ts",
    });
  } finally {
    await backend.close();
  }
}

let cases = 0;

/** Restores into a fresh target inside a fresh case directory; returns the result and both paths. */
async function restoreCase(snapshot: string): Promise<{ r: RunResult; caseDir: string; target: string }> {
  const caseDir = join(base, `case-${++cases}`);
  await mkdir(caseDir);
  const target = join(caseDir, "target");
  const r = await repo.run(["restore", snapshot, "-t", target]);
  return { r, caseDir, target };
}

async function expectOutsideUntouched(): Promise<void> {
  expect(await readdir(outside)).toEqual([]);
}

describe("restore of malicious snapshots", () => {
  const evil: [string, (b: Parameters<Parameters<typeof craftSnapshot>[0]>[0]) => Promise<RawNode[]>][] = [
    ["a directory named ..", async (b) => [await b.dir("..", [await b.file("escaped-dotdot", "pwned")])]],
    ["a file named ../escaped", async (b) => [await b.file("../escaped-name", "pwned")]],
    [
      "nested .. directories",
      async (b) => [await b.dir("..", [await b.dir("..", [await b.file("escaped-deep", "pwned")])])],
    ],
    ["an absolute name", async (b) => [await b.file(`${outside}/escaped-abs`, "pwned")]],
    ["a name with a slash", async (b) => [await b.dir("a", []), await b.file("a/b", "pwned")]],
    ["an empty name", async (b) => [await b.file("", "pwned")]],
    ["a directory named .", async (b) => [await b.dir(".", [await b.file("dot-file", "pwned")])]],
    ["a NUL in a name", async (b) => [await b.file("nul\u0000name", "pwned")]],
    [
      "a directory and a symlink to outside with the same name",
      async (b) => [await b.dir("x", [await b.file("pwned", "pwned")]), b.symlink("x", outside)],
    ],
    [
      "a symlink to outside, then a directory of the same name with a file in it",
      async (b) => [b.symlink("link", outside), await b.dir("link", [await b.file("pwned", "pwned")])],
    ],
  ];

  for (const [what, build] of evil) {
    it(`refuses ${what} and writes nothing outside the target`, async () => {
      const snapshot = await craftSnapshot(build);
      const { r, caseDir, target } = await restoreCase(snapshot);
      expect(r.code, r.stderr).not.toBe(0);
      expect(r.stderr).toMatch(/unsafe entry name|duplicate entry/);
      expect(await readdir(caseDir)).toEqual(["target"]);
      for (const name of ["escaped-dotdot", "escaped-name", "escaped-deep", "escaped-abs"]) {
        expect(existsSync(join(caseDir, name)), name).toBe(false);
        expect(existsSync(join(base, name)), name).toBe(false);
      }
      await expectOutsideUntouched();
      // Nothing of the malicious tree was created inside the target either.
      const inside = await scanTree(target, { hash: false });
      expect([...inside.keys()]).toEqual([""]);
    });
  }

  it("restores the honest parts of a snapshot and refuses a malicious subtree", async () => {
    const snapshot = await craftSnapshot(async (b) => [
      await b.file("benign.txt", "benign"),
      await b.dir("evil", [await b.dir("..", [await b.dir("..", [await b.file("escaped-sub", "pwned")])])]),
    ]);
    const { r, caseDir, target } = await restoreCase(snapshot);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("/evil");
    expect(r.stderr).toMatch(/unsafe entry name/);
    expect(await readFile(join(target, "benign.txt"), "utf8")).toBe("benign");
    expect(existsSync(join(caseDir, "escaped-sub"))).toBe(false);
    expect(existsSync(join(target, "escaped-sub"))).toBe(false);
    expect(await readdir(join(target, "evil"))).toEqual([]);
    await expectOutsideUntouched();
  });
});

describe("restore into a target that already holds symlinks", () => {
  let src: string;
  let snapshot: string;

  beforeAll(async () => {
    src = join(base, "src");
    await writeFiles(src, {
      "top.txt": "top\n",
      "sub/file.txt": "in sub\n",
      "sub/deeper/f2.txt": "deeper\n",
    });
    snapshot = (await repo.backup([src])).snapshot;
  });

  /** mode and mtime of `outside`, which a restore following a symlink would change. */
  const outsideMeta = (): string => {
    const st = lstatSync(outside, { bigint: true });
    return `${st.mode}:${st.mtimeNs}`;
  };

  it("does not create directories or files through a symlink in place of a directory", async () => {
    await chmod(outside, 0o700);
    await utimes(outside, 1_000_000_000, 1_000_000_000);
    const before = outsideMeta();
    const target = join(base, "target-planted-dir");
    await mkdir(restoredPath(target, src), { recursive: true });
    await symlink(outside, join(restoredPath(target, src), "sub"));

    const r = await repo.run(["--json", "restore", snapshot, "-t", target]);
    expect(r.code).toBe(1);
    const errors = (JSON.parse(r.stdout) as { errors: { path: string; error: string }[] }).errors;
    expect(errors.find((e) => e.path === `${src}/sub`)?.error).toMatch(/symlink/);
    expect(errors.map((e) => e.path).sort()).toEqual(
      [`${src}/sub`, `${src}/sub/deeper`, `${src}/sub/deeper/f2.txt`, `${src}/sub/file.txt`].sort(),
    );
    await expectOutsideUntouched();
    expect(outsideMeta()).toBe(before);
    // The rest is restored.
    expect(await readFile(join(restoredPath(target, src), "top.txt"), "utf8")).toBe("top\n");
    expect(lstatSync(join(restoredPath(target, src), "sub")).isSymbolicLink()).toBe(true);
  });

  it("does not follow a symlink left by restoring an earlier snapshot", async () => {
    // The source first has `sub` as a symlink to outside (an attacker controls the source between
    // backups), then as a real directory. Restoring both into one target must not write into `outside`.
    const src2 = join(base, "src2");
    await writeFiles(src2, { "top.txt": "v1\n" });
    await symlink(outside, join(src2, "sub"));
    const first = (await repo.backup([src2])).snapshot;
    await rm(join(src2, "sub"));
    await writeFiles(src2, { "sub/payload.txt": "payload\n", "sub/deeper/more.txt": "more\n" });
    const second = (await repo.backup([src2])).snapshot;

    const target = join(base, "target-two-restores");
    const r1 = await repo.run(["restore", first, "-t", target]);
    expect(r1.code, r1.stderr).toBe(0);
    expect(lstatSync(join(restoredPath(target, src2), "sub")).isSymbolicLink()).toBe(true);
    const r2 = await repo.run(["restore", second, "-t", target]);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toContain(`${src2}/sub`);
    await expectOutsideUntouched();
  });

  it("does not write a file through a symlink in its place", async () => {
    const victim = join(outside, "victim.txt");
    await writeFile(victim, "original\n");
    try {
      const target = join(base, "target-planted-file");
      await mkdir(restoredPath(target, src), { recursive: true });
      await symlink(victim, join(restoredPath(target, src), "top.txt"));
      const r = await repo.run(["restore", snapshot, "-t", target]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`${src}/top.txt`);
      expect(await readFile(victim, "utf8")).toBe("original\n");
      // Everything else is restored.
      expect(sha256(await readFile(join(restoredPath(target, src), "sub", "deeper", "f2.txt")))).toBe(
        sha256("deeper\n"),
      );
    } finally {
      await rm(victim, { force: true });
    }
  });
});
