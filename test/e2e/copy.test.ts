/**
 * `bulwark copy`, end to end through the built CLI: a copy is a full repository under its own password that
 * restores alone; later copies send only what the destination lacks and recognise snapshots already there
 * (also through a chain of copies); named snapshots; destinations that are refused without being written to;
 * resuming after SIGKILL at several moments without sending again what arrived; a damaged source snapshot
 * that fails alone; and --no-verify.
 *
 * Runs the built CLI (dist/): `npm run build` first. Verification on arrival (a target that corrupts what is
 * written) is tested on the library, in test/copy/copier.test.ts.
 */
import { createWriteStream, existsSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { appendFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { once } from "node:events";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  CLI,
  KiB,
  MiB,
  TestRepo,
  describeRun,
  flipByte,
  makeTempDir,
  packFiles,
  randomData,
  removeTempDirs,
  restoredPath,
  runCli,
  scanTree,
  spawnNode,
  writeFiles,
  type CheckJson,
  type Entry,
  type RunResult,
  type SnapshotJson,
} from "./helpers.js";

let base: string;

beforeAll(async () => {
  base = await makeTempDir("copy");
});
afterAll(removeTempDirs);

// ---------------------------------------------------------------------------------------------------------
// Helpers

interface SnapshotCopyJson {
  source: string;
  target: string;
  alreadyThere: boolean;
  blobsCopied: number;
  bytesCopied: number;
  time: string;
  paths: string[];
  dataset?: string;
}

interface CopyJson {
  from: string;
  to: string;
  snapshots: SnapshotCopyJson[];
  failed: { source: string; error: string }[];
  blobsCopied: number;
  bytesCopied: number;
  blobsPresent: number;
  packsWritten: number;
  storedBytes: number;
  adoptedPacks: number;
  adoptedBlobs: number;
  verifiedPacks: number;
  verifiedBlobs: number;
  durationMs: number;
}

interface CopiedSnapshotJson extends SnapshotJson {
  original?: string;
}

/** `bulwark --json copy --from SOURCE --to DEST ...` with the source's password file. */
function copyArgs(from: TestRepo, to: string, extra: string[] = []): string[] {
  return ["-p", from.passwordFile, "--json", "copy", "--from", from.dir, "--to", to, ...extra];
}

async function copyRun(from: TestRepo, to: string, extra: string[] = []): Promise<RunResult> {
  return runCli(copyArgs(from, to, extra));
}

/** Runs a copy and parses its JSON; throws with the output unless the exit code is `code`. */
async function copyJson(from: TestRepo, to: string, extra: string[] = [], code = 0): Promise<CopyJson> {
  const args = copyArgs(from, to, extra);
  const r = await runCli(args);
  if (r.code !== code) throw new Error(describeRun(args, r));
  return JSON.parse(r.stdout) as CopyJson;
}

async function writePassword(name: string, password: string): Promise<string> {
  const file = join(base, `${name}.password`);
  await writeFile(file, password + "\n");
  return file;
}

/**
 * What a restore must reproduce, by relative path: type, permissions, size, content hash or link target,
 * and for files the modification time to the microsecond (a restore keeps microseconds).
 */
function contents(tree: Map<string, Entry>): Map<string, string> {
  const out = new Map<string, string>();
  for (const [rel, e] of tree) {
    const mtime = e.type === "file" ? String(e.mtimeNs / 1000n) : "";
    out.set(rel, [e.type, e.mode.toString(8), e.size, e.sha256 ?? e.linkTarget ?? "", mtime].join(" "));
  }
  return out;
}

let restores = 0;
/** Restores `snapshot` from `repo` into a new directory and compares it with what `src` held. */
async function expectRestores(
  repo: TestRepo,
  snapshot: string,
  src: string,
  expected: Map<string, string>,
): Promise<void> {
  const target = join(base, `restore-${++restores}`);
  await repo.ok(["restore", snapshot, "-t", target]);
  expect(contents(await scanTree(restoredPath(target, src)))).toEqual(expected);
  await rm(target, { recursive: true, force: true });
}

/** `check --read-data` finds no error (warnings, e.g. unreferenced packs, are allowed). */
async function expectCheckPasses(repo: TestRepo): Promise<CheckJson> {
  const result = await repo.json<CheckJson>(["check", "--read-data"]);
  expect(result.errors).toBe(0);
  expect(result.findings.filter((f) => f.severity === "error")).toEqual([]);
  return result;
}

async function sizeOfPacks(repoDir: string): Promise<number> {
  let total = 0;
  for (const p of await packFiles(repoDir)) total += (await stat(p)).size;
  return total;
}

async function packCount(repoDir: string): Promise<number> {
  try {
    return (await packFiles(repoDir)).length;
  } catch {
    return 0; // not created yet
  }
}

// ---------------------------------------------------------------------------------------------------------

describe("a copy is a full repository", () => {
  it("copies into a new repository with its own password, which restores alone after the source is gone", async () => {
    const src = join(base, "src-new");
    await writeFiles(src, {
      "big.bin": randomData(3 * MiB),
      "notes/readme.txt": "copied\n".repeat(1000),
      "notes/empty": "",
      "nested/a/b/c.txt": "deep\n",
    });
    const source = await TestRepo.init(join(base, "repo-new-source"));
    const snap = (await source.backup([src])).snapshot;
    const [sourceSnapshot] = await source.snapshots();
    const expected = contents(await scanTree(src));

    const destDir = join(base, "repo-new-copy");
    const destPassword = await writePassword("repo-new-copy", "the copy's own password");
    const json = await copyJson(source, destDir, ["--init", "--to-password-file", destPassword]);
    expect(json).toMatchObject({
      from: source.dir,
      to: destDir,
      failed: [],
      blobsPresent: 0,
      adoptedPacks: 0,
      adoptedBlobs: 0,
    });
    expect(json.snapshots).toHaveLength(1);
    const copied = json.snapshots[0]!;
    expect(copied).toMatchObject({
      source: snap,
      alreadyThere: false,
      paths: [src],
      time: sourceSnapshot!.time,
    });
    expect(copied.target).toMatch(/^[0-9a-f]{64}$/);
    expect(copied.target).not.toBe(snap);
    // Every data blob and tree of the snapshot was sent: 3 MiB of random data is at least 2 chunks.
    expect(copied.blobsCopied).toBeGreaterThanOrEqual(4);
    expect(json.blobsCopied).toBe(copied.blobsCopied);
    expect(copied.bytesCopied).toBeGreaterThanOrEqual(3 * MiB);
    expect(json.bytesCopied).toBe(copied.bytesCopied);
    expect(json.packsWritten).toBeGreaterThan(0);
    expect(json.storedBytes).toBe(await sizeOfPacks(destDir));
    expect(json.verifiedPacks).toBe(json.packsWritten);
    expect(json.verifiedBlobs).toBe(json.blobsCopied);
    expect(typeof json.durationMs).toBe("number");

    // The copy has its own key: the source's password does not open it, its own does.
    const dest = new TestRepo(destDir, destPassword, "the copy's own password");
    const wrong = await runCli(["-r", destDir, "-p", source.passwordFile, "snapshots"]);
    expect(wrong.code, wrong.stderr).toBe(12);
    const onDest = await dest.snapshots();
    expect(onDest.map((s) => s.id)).toEqual([copied.target]);
    const copy = onDest[0] as CopiedSnapshotJson;
    expect(copy.original).toBe(snap);
    // One copy set: the same data has the same blob ids, so the root tree has the same id.
    expect(copy.tree).toBe(sourceSnapshot!.tree);
    expect(copy.paths).toEqual([src]);

    await expectRestores(dest, copied.target, src, expected);
    // The source disappears entirely: the copy alone restores.
    await rm(source.dir, { recursive: true, force: true });
    expect(existsSync(source.dir)).toBe(false);
    await expectRestores(dest, "latest", src, expected);
    const verdict = await expectCheckPasses(dest);
    expect(verdict.findings).toEqual([]);
  });
});

describe("incremental copies", () => {
  let src: string;
  let source: TestRepo;
  let dest: TestRepo;
  const ids: string[] = [];
  let first: CopyJson;

  beforeAll(async () => {
    src = join(base, "src-incr");
    await writeFiles(src, { "big.bin": randomData(4 * MiB), "log.txt": "line 0\n", "keep.txt": "same\n" });
    source = await TestRepo.init(join(base, "repo-incr-source"));
    ids.push((await source.backup([src])).snapshot);
    // No --to-password-file: the destination takes the source's password.
    first = await copyJson(source, join(base, "repo-incr-copy"), ["--init"]);
    dest = new TestRepo(join(base, "repo-incr-copy"), source.passwordFile, source.password);
  });

  it("sends only the new blobs and reports the first snapshot as already there", async () => {
    expect(first.snapshots.map((s) => s.source)).toEqual([ids[0]]);
    await appendFile(join(src, "log.txt"), "line 1\n");
    ids.push((await source.backup([src])).snapshot);
    const indexBefore = (await dest.snapshots()).length;
    expect(indexBefore).toBe(1);

    const second = await copyJson(source, dest.dir);
    expect(second.failed).toEqual([]);
    expect(second.snapshots.map((s) => [s.source, s.alreadyThere])).toEqual([
      [ids[0], true],
      [ids[1], false],
    ]);
    expect(second.snapshots[0]!.target).toBe(first.snapshots[0]!.target);
    expect(second.snapshots[0]!.blobsCopied).toBe(0);
    // The changed log file (one blob) and the trees above it; the 4 MiB file is already there.
    expect(second.blobsCopied).toBeGreaterThan(0);
    expect(second.blobsCopied).toBeLessThanOrEqual(10);
    expect(second.blobsCopied).toBeLessThan(first.blobsCopied);
    expect(second.bytesCopied).toBeLessThan(64 * KiB);
    expect(second.blobsPresent).toBeGreaterThan(0);

    const onDest = (await dest.snapshots()) as CopiedSnapshotJson[];
    expect(onDest).toHaveLength(2);
    expect(onDest.map((s) => s.original)).toEqual(ids);
    expect(onDest.map((s) => s.id)).toEqual(second.snapshots.map((s) => s.target));

    // A third run finds everything there: nothing is sent, nothing is written but its lock.
    const indexFiles = (await scanTree(join(dest.dir, "index"), { hash: false })).size;
    const third = await copyJson(source, dest.dir);
    expect(third.snapshots.every((s) => s.alreadyThere)).toBe(true);
    expect(third).toMatchObject({ blobsCopied: 0, packsWritten: 0, blobsPresent: 0, adoptedPacks: 0 });
    expect((await scanTree(join(dest.dir, "index"), { hash: false })).size).toBe(indexFiles);
    expect(await dest.snapshots()).toHaveLength(2);
  });

  it("recognises a snapshot copied through a chain A -> B -> C when A is copied to C", async () => {
    expect(ids).toHaveLength(2);
    const chainDir = join(base, "repo-incr-chain");
    const viaB = await copyJson(dest, chainDir, ["--init"]);
    expect(viaB.snapshots.map((s) => [s.source, s.alreadyThere])).toEqual([
      [first.snapshots[0]!.target, false],
      [(await dest.snapshots())[1]!.id, false],
    ]);
    const chain = new TestRepo(chainDir, source.passwordFile, source.password);
    const onC = (await chain.snapshots()) as CopiedSnapshotJson[];
    // Copies of copies keep the first id.
    expect(onC.map((s) => s.original)).toEqual(ids);

    const direct = await copyJson(source, chainDir);
    expect(direct.snapshots.map((s) => [s.source, s.alreadyThere])).toEqual([
      [ids[0], true],
      [ids[1], true],
    ]);
    expect(direct.snapshots.map((s) => s.target)).toEqual(onC.map((s) => s.id));
    expect(direct.blobsCopied).toBe(0);
    expect(await chain.snapshots()).toHaveLength(2);
    // And back from C to A: A's own snapshots are recognised too.
    const back = await copyJson(chain, source.dir);
    expect(back.snapshots.every((s) => s.alreadyThere)).toBe(true);
    expect(await source.snapshots()).toHaveLength(2);
  });

  it("--no-verify copies without reading packs back", async () => {
    const dir = join(base, "repo-incr-noverify");
    const json = await copyJson(source, dir, ["--init", "--no-verify"]);
    expect(json.snapshots.filter((s) => !s.alreadyThere)).toHaveLength(2);
    expect(json.packsWritten).toBeGreaterThan(0);
    expect(json.verifiedPacks).toBe(0);
    expect(json.verifiedBlobs).toBe(0);
    const copy = new TestRepo(dir, source.passwordFile, source.password);
    await expectCheckPasses(copy);
    // The default verifies what it writes (the first copy above).
    expect(first.verifiedPacks).toBe(first.packsWritten);
  });
});

describe("named snapshots", () => {
  it("copies only the snapshots named by id prefix or `latest`", async () => {
    const src = join(base, "src-named");
    const source = await TestRepo.init(join(base, "repo-named-source"));
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      await writeFiles(src, { [`f${i}.bin`]: randomData(200 * KiB), "n.txt": `${i}\n` });
      ids.push((await source.backup([src])).snapshot);
    }
    const destDir = join(base, "repo-named-copy");
    const dest = new TestRepo(destDir, source.passwordFile, source.password);

    const one = await copyJson(source, destDir, ["--init", ids[1]!.slice(0, 8)]);
    expect(one.snapshots.map((s) => s.source)).toEqual([ids[1]]);
    expect(((await dest.snapshots()) as CopiedSnapshotJson[]).map((s) => s.original)).toEqual([ids[1]]);

    const latest = await copyJson(source, destDir, ["latest"]);
    expect(latest.snapshots.map((s) => [s.source, s.alreadyThere])).toEqual([[ids[2], false]]);
    // The second snapshot's data was there already: only what the third added is sent.
    expect(latest.blobsPresent).toBeGreaterThan(0);
    expect(((await dest.snapshots()) as CopiedSnapshotJson[]).map((s) => s.original)).toEqual([
      ids[1],
      ids[2],
    ]);

    // Several references, one of them twice and one already there.
    const many = await copyJson(source, destDir, ["latest", ids[0]!, ids[0]!.slice(0, 6)]);
    expect(many.snapshots.map((s) => [s.source, s.alreadyThere])).toEqual([
      [ids[0], false],
      [ids[2], true],
    ]);
    expect(await dest.snapshots()).toHaveLength(3);

    const unknown = await copyRun(source, destDir, ["ffffffff"]);
    expect(unknown.code, unknown.stderr).toBe(1);
    expect(await dest.snapshots()).toHaveLength(3);
  });
});

describe("refused destinations are not written to", () => {
  let src: string;
  let source: TestRepo;

  beforeAll(async () => {
    src = join(base, "src-refused");
    await writeFiles(src, { "a.bin": randomData(300 * KiB) });
    source = await TestRepo.init(join(base, "repo-refused-source"));
    await source.backup([src]);
  });

  it("a repository made by plain `bulwark init` is refused with the command that makes a compatible one", async () => {
    const dest = await TestRepo.init(join(base, "repo-refused-plain"), { password: source.password });
    // Every entry with its metadata: a file created and removed again still changes its directory's mtime.
    const before = await scanTree(dest.dir);
    for (const extra of [[], ["--init"]]) {
      const r = await copyRun(source, dest.dir, extra);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toContain("was not created as a copy of");
      expect(r.stderr).toContain("bulwark init --copy-chunker-params-from");
      expect(await scanTree(dest.dir)).toEqual(before);
    }
    expect(await dest.snapshots()).toEqual([]);
  });

  it("a wrong destination password exits 12 without writing; the right one copies", async () => {
    // A compatible destination with its own password, made the way the refusal above advises.
    const destDir = join(base, "repo-refused-password");
    const destPassword = await writePassword("repo-refused-password", "destination password");
    const init = await runCli([
      "-r",
      destDir,
      "-p",
      destPassword,
      "init",
      "--copy-chunker-params-from",
      source.dir,
      "--from-password-file",
      source.passwordFile,
    ]);
    expect(init.code, init.stderr).toBe(0);
    const before = await scanTree(destDir);
    const wrongFile = await writePassword("wrong", "not the destination password");
    for (const extra of [
      ["--to-password-file", wrongFile],
      ["--to-password-file", wrongFile, "--init"],
      [], // the source's password
    ]) {
      const r = await copyRun(source, destDir, extra);
      expect(r.code, r.stderr).toBe(12);
      expect(r.stderr).toContain("wrong password");
      expect(await scanTree(destDir)).toEqual(before);
    }
    const ok = await copyJson(source, destDir, ["--to-password-file", destPassword]);
    expect(ok.snapshots).toHaveLength(1);
  });

  it("a missing destination without --init exits 10 and is not created; the same repository is refused", async () => {
    const missing = join(base, "repo-refused-missing");
    const r = await copyRun(source, missing);
    expect(r.code, r.stderr).toBe(10);
    expect(existsSync(missing)).toBe(false);
    const before = await scanTree(source.dir);
    const self = await copyRun(source, source.dir);
    expect(self.code, self.stderr).toBe(1);
    expect(self.stderr).toContain("the same repository");
    expect(await scanTree(source.dir)).toEqual(before);
  });
});

describe("a damaged source snapshot", () => {
  it("fails alone: the others are copied, and the destination holds nothing of it and passes check", async () => {
    const src = join(base, "src-damaged");
    const source = await TestRepo.init(join(base, "repo-damaged-source"));
    await writeFiles(src, { "x.bin": randomData(100 * KiB) });
    const first = (await source.backup([src])).snapshot;
    const expectedFirst = contents(await scanTree(src));
    const packsBefore = new Set(await packFiles(source.dir));
    await writeFiles(src, { "y.bin": randomData(3 * MiB) });
    const second = (await source.backup([src])).snapshot;
    // The new packs are y's data and the new trees; the largest holds y's data, which only the second needs.
    const added = (await packFiles(source.dir)).filter((p) => !packsBefore.has(p));
    const sizes = await Promise.all(added.map(async (p) => ({ p, size: (await stat(p)).size })));
    const yPack = sizes.sort((a, b) => b.size - a.size)[0]!;
    expect(yPack.size).toBeGreaterThan(MiB);
    await flipByte(yPack.p, Math.floor(yPack.size / 2));

    const destDir = join(base, "repo-damaged-copy");
    const dest = new TestRepo(destDir, source.passwordFile, source.password);
    for (const attempt of [1, 2]) {
      const args = copyArgs(source, destDir, ["--init"]);
      const r = await runCli(args);
      expect(r.code, describeRun(args, r)).toBe(1);
      const json = JSON.parse(r.stdout) as CopyJson;
      expect(json.failed.map((f) => f.source)).toEqual([second]);
      expect(json.snapshots.map((s) => [s.source, s.alreadyThere])).toEqual([[first, attempt === 2]]);
      expect(r.stderr).toContain(`snapshot ${second.slice(0, 8)}`);
      const onDest = (await dest.snapshots()) as CopiedSnapshotJson[];
      expect(onDest.map((s) => s.original)).toEqual([first]);
      await expectCheckPasses(dest);
    }
    await expectRestores(dest, "latest", src, expectedFirst);
  });
});

// ---------------------------------------------------------------------------------------------------------

describe("resuming after SIGKILL", () => {
  const SIZE = 300 * 1000 * 1000;
  let src: string;
  let source: TestRepo;
  let totalBlobs: number;
  let sourcePacks: number;
  let sourcePackBytes: number;
  let expected: Map<string, string>;

  beforeAll(async () => {
    src = join(base, "src-big");
    await writeFiles(src, { "small.txt": "next to a big file\n" });
    const out = createWriteStream(join(src, "big.bin"));
    for (let done = 0; done < SIZE; done += 10 * MiB) {
      if (!out.write(randomBytes(Math.min(10 * MiB, SIZE - done)))) await once(out, "drain");
    }
    out.end();
    await once(out, "finish");
    source = await TestRepo.init(join(base, "repo-big-source"));
    const backup = await source.backup([src]);
    // A first backup into an empty repository adds every blob the snapshot has.
    totalBlobs = backup.summary.blobsAdded;
    sourcePacks = (await packFiles(source.dir)).length;
    sourcePackBytes = await sizeOfPacks(source.dir);
    expected = contents(await scanTree(src));
    expect(sourcePacks).toBeGreaterThanOrEqual(15);
  });

  /** Starts a copy (with --init) and kills it with SIGKILL as soon as `when` holds; it must not finish first. */
  async function killedCopy(destDir: string, when: () => Promise<boolean>): Promise<void> {
    const { child, result } = spawnNode([CLI, ...copyArgs(source, destDir, ["--init"])]);
    let exited = false;
    void result.then(() => (exited = true));
    while (!exited) {
      if (await when()) {
        child.kill("SIGKILL");
        break;
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    const r = await result;
    expect(r.signal, `the copy ended before it was killed:\n${r.stdout}\n${r.stderr}`).toBe("SIGKILL");
  }

  /** Runs the copy to its end after a kill; it must complete, send each blob at most once and pass check. */
  async function resume(destDir: string): Promise<CopyJson> {
    const json = await copyJson(source, destDir, ["--init"]);
    expect(json.failed).toEqual([]);
    expect(json.snapshots).toHaveLength(1);
    expect(json.snapshots[0]!.alreadyThere).toBe(false);
    expect(json.blobsCopied + json.blobsPresent).toBe(totalBlobs);
    // Nothing arrived twice: the destination holds the same blobs as the source, each once, so its packs
    // take the source's bytes (give or take pack headers); one duplicate chunk would add at least 512 KiB.
    expect(Math.abs((await sizeOfPacks(destDir)) - sourcePackBytes)).toBeLessThan(64 * KiB);
    const dest = new TestRepo(destDir, source.passwordFile, source.password);
    expect(await dest.snapshots()).toHaveLength(1);
    await expectCheckPasses(dest);
    return json;
  }

  it("a copy killed after its first packs arrived resumes without sending them again", async () => {
    const destDir = join(base, "repo-big-kill-early-packs");
    await killedCopy(destDir, async () => (await packCount(destDir)) >= 2);
    const json = await resume(destDir);
    expect(json.adoptedPacks).toBeGreaterThanOrEqual(1);
    expect(json.adoptedBlobs).toBeGreaterThanOrEqual(1);
    expect(json.blobsCopied).toBeLessThan(totalBlobs);
    expect(json.blobsPresent).toBeGreaterThanOrEqual(json.adoptedBlobs);
    const dest = new TestRepo(destDir, source.passwordFile, source.password);
    await expectRestores(dest, "latest", src, expected);
  });

  it("a copy killed right after it started (creating the destination) resumes", async () => {
    const destDir = join(base, "repo-big-kill-start");
    await killedCopy(destDir, () => Promise.resolve(existsSync(destDir)));
    await resume(destDir);
  });

  it("a copy killed mid-way, and another late, resume", async () => {
    const midDir = join(base, "repo-big-kill-mid");
    await killedCopy(midDir, async () => (await packCount(midDir)) >= Math.floor(sourcePacks / 2));
    const mid = await resume(midDir);
    expect(mid.blobsCopied).toBeLessThan(totalBlobs / 2 + 10);

    const lateDir = join(base, "repo-big-kill-late");
    await killedCopy(lateDir, async () => (await packCount(lateDir)) >= sourcePacks - 3);
    const late = await resume(lateDir);
    expect(late.blobsCopied).toBeLessThan(totalBlobs / 4);
  });
});
