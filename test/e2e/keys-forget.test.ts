/**
 * Keys (add, list, passwd, remove) and retention (forget with --dry-run and --prune).
 */
import { readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  MiB,
  TestRepo,
  makeTempDir,
  randomData,
  removeTempDirs,
  restoredPath,
  runCli,
  sha256,
  sha256File,
  treeBytes,
  writeFiles,
  type CheckJson,
  type RunResult,
} from "./helpers.js";

let base: string;

beforeAll(async () => {
  base = await makeTempDir("keys-forget");
});
afterAll(removeTempDirs);

interface KeyJson {
  id: string;
  current: boolean;
  created: string;
  hostname: string;
  username: string;
}

describe("keys", () => {
  it("add, list, passwd and remove keys", async () => {
    const repo = await TestRepo.init(join(base, "repo-keys"), { password: "first password" });
    const src = join(base, "src-keys");
    await writeFiles(src, { "f.txt": "keys\n" });
    await repo.ok(["backup", src]);
    const withPassword = (file: string, args: string[]): Promise<RunResult> =>
      runCli(["-r", repo.dir, "-p", file, ...args]);

    const secondFile = join(base, "second.password");
    await writeFile(secondFile, "second password\n");
    const added = await repo.json<{ id: string }>(["key", "add", "--new-password-file", secondFile]);
    expect(added.id).toMatch(/^[0-9a-f]{64}$/);

    const keys = await repo.json<KeyJson[]>(["key", "list"]);
    expect(keys).toHaveLength(2);
    expect(keys.filter((k) => k.current)).toHaveLength(1);
    expect(keys.find((k) => k.id === added.id)!.current).toBe(false);
    const firstKey = keys.find((k) => k.current)!.id;

    // The new password opens the repository and sees the same snapshots.
    const viaSecond = await withPassword(secondFile, ["--json", "key", "list"]);
    expect(viaSecond.code, viaSecond.stderr).toBe(0);
    const seenBySecond = JSON.parse(viaSecond.stdout) as KeyJson[];
    expect(seenBySecond.find((k) => k.current)!.id).toBe(added.id);
    const snaps = await withPassword(secondFile, ["--json", "snapshots"]);
    expect(snaps.code).toBe(0);
    expect(JSON.parse(snaps.stdout)).toHaveLength(1);

    // passwd: the second password is replaced by a third one.
    const thirdFile = join(base, "third.password");
    await writeFile(thirdFile, "third password\n");
    const passwd = await withPassword(secondFile, [
      "--json",
      "key",
      "passwd",
      "--new-password-file",
      thirdFile,
    ]);
    expect(passwd.code, passwd.stderr).toBe(0);
    const changed = JSON.parse(passwd.stdout) as { id: string; removed: string };
    expect(changed.removed).toBe(added.id);
    const old = await withPassword(secondFile, ["snapshots"]);
    expect(old.code).toBe(12);
    const viaThird = await withPassword(thirdFile, ["--json", "key", "list"]);
    expect(viaThird.code, viaThird.stderr).toBe(0);
    const afterPasswd = JSON.parse(viaThird.stdout) as KeyJson[];
    expect(afterPasswd.map((k) => k.id).sort()).toEqual([firstKey, changed.id].sort());
    expect((await repo.run(["snapshots"])).code).toBe(0);

    // The key a command was opened with cannot be removed by it.
    const self = await withPassword(thirdFile, ["key", "remove", changed.id.slice(0, 10)]);
    expect(self.code).toBe(1);
    expect(self.stderr).toContain("refusing to remove the key this command was opened with");
    expect(await readdir(join(repo.dir, "keys"))).toHaveLength(2);
    // Another key can be removed; then the only key left cannot.
    const other = await withPassword(thirdFile, ["--json", "key", "remove", firstKey]);
    expect(other.code, other.stderr).toBe(0);
    expect((await repo.run(["snapshots"])).code).toBe(12);
    const last = await withPassword(thirdFile, ["key", "remove", changed.id]);
    expect(last.code).toBe(1);
    expect(await readdir(join(repo.dir, "keys"))).toEqual([changed.id]);
    const unknown = await withPassword(thirdFile, ["key", "remove", "0000"]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain("no key 0000");
  });
});

describe("forget and prune", () => {
  let repo: TestRepo;
  let src: string;
  const ids: string[] = [];
  const contents: Buffer[] = [];
  let plannedDeletes: string[] = [];

  beforeAll(async () => {
    repo = await TestRepo.init(join(base, "repo-forget"));
    src = join(base, "src-forget");
    // Four snapshots of the same path, each with 3 MiB of its own data and one file common to all.
    for (let i = 0; i < 4; i++) {
      const data = randomData(3 * MiB);
      contents.push(data);
      await writeFiles(src, { "data.bin": data, "common.txt": "in every snapshot\n", "n.txt": `${i}\n` });
      ids.push((await repo.backup([src])).snapshot);
    }
  });

  it("forget --keep-last 2 --dry-run reports its decisions and removes nothing", async () => {
    const before = await readdir(join(repo.dir, "snapshots"));
    const packsBefore = await treeBytes(join(repo.dir, "data"));
    const plan = await repo.json<{
      dryRun: boolean;
      removed: string[];
      groups: { keep: { id: string; reasons: string[] }[]; remove: { id: string }[] }[];
      prune?: { packsToDelete: string[] };
    }>(["forget", "--keep-last", "2", "--dry-run", "--prune"]);
    expect(plan.dryRun).toBe(true);
    expect(plan.removed.sort()).toEqual([ids[0]!, ids[1]!].sort());
    expect(plan.groups).toHaveLength(1);
    expect(plan.groups[0]!.keep.map((k) => k.id)).toEqual([ids[3], ids[2]]);
    for (const k of plan.groups[0]!.keep) expect(k.reasons).toContain("last snapshot");
    expect(plan.groups[0]!.remove.map((k) => k.id).sort()).toEqual([ids[0]!, ids[1]!].sort());
    // The prune preview plans as if the two snapshots were gone (their packs are deleted).
    expect(plan.prune!.packsToDelete.length).toBeGreaterThan(0);
    plannedDeletes = plan.prune!.packsToDelete;
    expect(await readdir(join(repo.dir, "snapshots"))).toEqual(before);
    expect(await treeBytes(join(repo.dir, "data"))).toBe(packsBefore);

    const human = await repo.ok(["forget", "--keep-last", "2", "-n"]);
    expect(human.stdout).toContain("would remove 2 snapshots");
    expect(human.stdout).toMatch(new RegExp(`keep\\s+${ids[3]!.slice(0, 8)} .*last snapshot`));
    expect(human.stdout).toMatch(new RegExp(`remove ${ids[0]!.slice(0, 8)}`));
  });

  it("forget --keep-last 2 --prune removes the older snapshots and their data; the rest stays intact", async () => {
    const dataBefore = await treeBytes(join(repo.dir, "data"));
    const result = await repo.json<{
      dryRun: boolean;
      removed: string[];
      prune: { packsToDelete: string[] };
    }>(["forget", "--keep-last", "2", "--prune"]);
    expect(result.dryRun).toBe(false);
    expect(result.removed.sort()).toEqual([ids[0]!, ids[1]!].sort());
    expect([...result.prune.packsToDelete].sort()).toEqual([...plannedDeletes].sort());
    expect((await repo.snapshots()).map((s) => s.id)).toEqual([ids[2], ids[3]]);
    const dataAfter = await treeBytes(join(repo.dir, "data"));
    // Two snapshots' own data (2 x 3 MiB of random bytes) is gone.
    expect(dataBefore - dataAfter).toBeGreaterThan(2 * 3 * MiB - 64 * 1024);
    expect(dataAfter).toBeLessThan(dataBefore / 2 + MiB);

    const check = await repo.json<CheckJson>(["check", "--read-data"]);
    expect(check.ok).toBe(true);
    expect(check.findings).toEqual([]);

    for (const i of [2, 3]) {
      const target = join(base, `restore-kept-${i}`);
      const r = await repo.run(["restore", ids[i]!, "-t", target]);
      expect(r.code, r.stderr).toBe(0);
      const root = restoredPath(target, src);
      expect(await sha256File(join(root, "data.bin"))).toBe(sha256(contents[i]!));
      expect(await sha256File(join(root, "n.txt"))).toBe(sha256(`${i}\n`));
      expect(await sha256File(join(root, "common.txt"))).toBe(sha256("in every snapshot\n"));
    }
    // The forgotten ones are gone for good.
    const gone = await repo.run(["restore", ids[0]!, "-t", join(base, "restore-gone")]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain(`no snapshot ${ids[0]}`);
  });

  it("prune repacks a partly used pack, keeping exactly the data still needed", async () => {
    const r = await TestRepo.init(join(base, "repo-repack"));
    const dir = join(base, "src-repack");
    const keep = randomData(4 * MiB);
    await writeFiles(dir, { "keep.bin": keep, "drop.bin": randomData(4 * MiB), "small.txt": "small\n" });
    const s1 = (await r.backup([dir])).snapshot;
    await rm(join(dir, "drop.bin"));
    const second = await r.backup([dir]);
    expect(second.summary.dataAdded).toBeLessThan(64 * 1024);
    const before = await treeBytes(join(r.dir, "data"));

    const forgot = await r.json<{ removed: string[] }>(["forget", s1]);
    expect(forgot.removed).toEqual([s1]);
    const pruned = await r.json<{ packsToRepack: string[]; packsWritten: number; indexFilesWritten: number }>(
      ["prune"],
    );
    // The first backup's data pack holds keep.bin (needed) and drop.bin (not): half of it is waste.
    expect(pruned.packsToRepack).toHaveLength(1);
    expect(pruned.packsWritten).toBeGreaterThanOrEqual(1);
    const after = await treeBytes(join(r.dir, "data"));
    expect(before - after).toBeGreaterThan(4 * MiB - 64 * 1024);
    expect(after).toBeGreaterThan(4 * MiB);
    expect(await readdir(join(r.dir, "index"))).toHaveLength(pruned.indexFilesWritten);

    const check = await r.json<CheckJson>(["check", "--read-data"]);
    expect(check.findings).toEqual([]);
    const target = join(base, "restore-repack");
    const restore = await r.run(["restore", "latest", "-t", target]);
    expect(restore.code, restore.stderr).toBe(0);
    expect(await sha256File(join(restoredPath(target, dir), "keep.bin"))).toBe(sha256(keep));
    expect(await sha256File(join(restoredPath(target, dir), "small.txt"))).toBe(sha256("small\n"));
    // A second prune has nothing left to do.
    const again = await r.json<{ packsToRepack: string[]; packsToDelete: string[] }>(["prune"]);
    expect([again.packsToRepack, again.packsToDelete]).toEqual([[], []]);
  });
});
