/**
 * Errors a user meets: wrong or missing password, no repository, init over a repository, unreadable files,
 * malformed options. Each must give the documented exit code and a message that says what to do.
 */
import { chmod, chown, mkdir, readFile, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  NOBODY,
  TestRepo,
  isRoot,
  makeTempDir,
  randomData,
  removeTempDirs,
  restoredPath,
  runCli,
  scanTree,
  sha256,
  writeFiles,
  type BackupJson,
  type RunOptions,
} from "./helpers.js";

let base: string;
let repo: TestRepo;
let src: string;

beforeAll(async () => {
  base = await makeTempDir("errors");
  src = join(base, "src");
  await writeFiles(src, { "a.txt": "a\n", "b/c.txt": "c\n" });
  repo = await TestRepo.init(join(base, "repo"), { password: "the-right-password-7f3a" });
  await repo.ok(["backup", src]);
});
afterAll(removeTempDirs);

describe("error handling", () => {
  it("a wrong password exits 12, says so, and never prints the password", async () => {
    const secret = "wrong-password-Zq81xT";
    const file = join(base, "wrong.password");
    await writeFile(file, secret + "\n");
    for (const args of [
      ["-r", repo.dir, "-p", file, "snapshots"],
      ["-r", repo.dir, "-p", file, "--json", "snapshots"],
      ["-r", repo.dir, "-p", file, "backup", src],
    ]) {
      const r = await runCli(args);
      expect(r.code, r.stderr).toBe(12);
      expect(r.stderr).toMatch(/wrong password/i);
      expect(r.stderr + r.stdout).not.toContain(secret);
    }
    const json = await runCli(["-r", repo.dir, "--json", "snapshots"], { env: { BULWARK_PASSWORD: secret } });
    expect(json.code).toBe(12);
    expect(JSON.parse(json.stdout)).toMatchObject({ error: { code: "WRONG_PASSWORD" } });
    expect(json.stdout + json.stderr).not.toContain(secret);
    // The right password from the environment works.
    const right = await runCli(["-r", repo.dir, "snapshots"], { env: { BULWARK_PASSWORD: repo.password } });
    expect(right.code, right.stderr).toBe(0);
    expect(right.stdout + right.stderr).not.toContain(repo.password);
  });

  it("no repository at the location exits 10 with a hint", async () => {
    const empty = join(base, "empty-dir");
    await mkdir(empty);
    for (const location of [join(base, "does-not-exist"), empty, `local:${empty}`]) {
      const r = await runCli(["-r", location, "-p", repo.passwordFile, "snapshots"]);
      expect(r.code, `${location}: ${r.stderr}`).toBe(10);
      expect(r.stderr).toMatch(/no repository/i);
      expect(r.stderr).toContain("bulwark init");
    }
    const env = await runCli(["--json", "snapshots"], {
      env: { BULWARK_REPOSITORY: join(base, "nope"), BULWARK_PASSWORD: "x" },
    });
    expect(env.code).toBe(10);
    expect(JSON.parse(env.stdout)).toMatchObject({ error: { code: "NO_REPOSITORY" } });
    // No location at all is a usage error.
    const none = await runCli(["snapshots"], { env: { BULWARK_PASSWORD: "x" } });
    expect(none.code).toBe(1);
    expect(none.stderr).toContain("no repository given");
  });

  it("init over an existing repository fails clearly and changes nothing", async () => {
    const config = await readFile(join(repo.dir, "config"));
    const keys = await readdir(join(repo.dir, "keys"));
    const r = await runCli(["-r", repo.dir, "-p", repo.passwordFile, "init"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/already exists/);
    expect(r.stderr).toContain(repo.dir);
    expect(await readFile(join(repo.dir, "config"))).toEqual(config);
    expect(await readdir(join(repo.dir, "keys"))).toEqual(keys);
    expect((await runCli(["-r", repo.dir, "-p", repo.passwordFile, "snapshots"])).code).toBe(0);
  });

  it("init rejects a bad --compression level with a message, not a stack trace", async () => {
    const r = await runCli([
      "-r",
      join(base, "repo-bad-level"),
      "-p",
      repo.passwordFile,
      "init",
      "--compression",
      "99",
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("--compression");
    expect(r.stderr).not.toMatch(/^\s+at /m);
  });

  it("an unreadable file makes a partial backup: exit 3, listed, recorded; the rest restores", async () => {
    // As root every file is readable: the backup then runs as nobody, on a tree and repository it can use.
    const as: RunOptions = isRoot ? { uid: NOBODY, gid: NOBODY } : {};
    const work = join(base, "unreadable");
    await mkdir(work);
    const tree = join(work, "src");
    const big = randomData(200_000);
    await writeFiles(tree, {
      "readable.txt": "readable\n",
      "sub/other.bin": big,
      "secret.txt": "top secret\n",
      "locked/inside.txt": "unlisted\n",
    });
    await chmod(join(tree, "secret.txt"), 0o000);
    await chmod(join(tree, "locked"), 0o000);
    if (isRoot) {
      await chmod(base, 0o755);
      await chown(work, NOBODY, NOBODY);
    }
    const r2 = await TestRepo.init(join(work, "repo"), { run: as });
    const r = await r2.run(["--json", "backup", tree], as);
    expect(r.code, r.stderr).toBe(3);
    const out = JSON.parse(r.stdout) as BackupJson;
    const skippedPaths = out.skipped.map((s) => s.path).sort();
    expect(skippedPaths).toEqual([join(tree, "locked"), join(tree, "secret.txt")]);
    expect(out.skipped.find((s) => s.path.endsWith("secret.txt"))!.error).toMatch(
      /permission denied|EACCES/i,
    );
    expect(r.stderr).toContain(join(tree, "secret.txt"));
    expect(r.stderr).toMatch(/could not be read/);

    const snaps = await r2.snapshots();
    expect(snaps).toHaveLength(1);
    expect(snaps[0]!.skipped!.map((s) => s.path).sort()).toEqual(skippedPaths);
    const human = await r2.ok(["snapshots"], as);
    expect(human.stdout).toContain("partial: 2 skipped");

    const target = join(base, "restore-unreadable");
    const restore = await r2.run(["restore", "latest", "-t", target]);
    expect(restore.code, restore.stderr).toBe(0);
    const restored = await scanTree(restoredPath(target, tree));
    expect(restored.get("readable.txt")!.sha256).toBe(sha256("readable\n"));
    expect(restored.get("sub/other.bin")!.sha256).toBe(sha256(big));
    expect(restored.has("secret.txt")).toBe(false);
    // The directory that could not be listed is there, empty.
    expect(restored.get("locked")!.type).toBe("dir");
    expect(restored.has("locked/inside.txt")).toBe(false);
  });

  it("a missing password without a terminal fails at once with a hint", async () => {
    for (const env of [{}, { BULWARK_PASSWORD: "" }]) {
      const r = await runCli(["-r", repo.dir, "snapshots"], { env, timeoutMs: 30_000 });
      expect(r.signal).toBeNull();
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/no password given/);
      expect(r.stderr).toMatch(/hint: .*BULWARK_PASSWORD/);
    }
    const missingFile = await runCli([
      "-r",
      repo.dir,
      "-p",
      join(base, "no-such-password-file"),
      "snapshots",
    ]);
    expect(missingFile.code).toBe(1);
    expect(missingFile.stderr).toContain("cannot read password file");
  });

  it("a malformed --read-data-subset is refused; valid ones work", async () => {
    for (const spec of ["abc", "0%", "101%", "-5%", "0/3", "4/3", "1/0", "1/", "50"]) {
      const r = await repo.run(["check", `--read-data-subset=${spec}`]);
      expect(r.code, spec).toBe(1);
      expect(r.stderr, spec).toContain("is not N% or n/t");
      expect(r.stderr, spec).toContain("hint:");
    }
    for (const spec of ["50%", "100%", "1/2", "2/2", "1/1"]) {
      const r = await repo.json<{ ok: boolean; stats: { packsRead: number; packs: number } }>([
        "check",
        "--read-data-subset",
        spec,
      ]);
      expect(r.ok, spec).toBe(true);
      if (spec === "100%" || spec === "1/1") expect(r.stats.packsRead).toBe(r.stats.packs);
    }
  });

  it("forget without a policy refuses and removes nothing", async () => {
    const before = await repo.snapshots();
    expect(before.length).toBeGreaterThan(0);
    for (const args of [["forget"], ["forget", "--keep-last", "0"], ["forget", "--prune"]]) {
      const r = await repo.run(args);
      expect(r.code, args.join(" ")).toBe(1);
      expect(r.stderr).toContain("no policy given");
    }
    const bad = await repo.run(["forget", "--keep-last", "two"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("--keep-last must be a whole number");
    expect(await repo.snapshots()).toEqual(before);
  });

  it("unknown or ambiguous snapshot references are reported", async () => {
    const target = join(base, "restore-none");
    const unknown = await repo.run(["restore", "ffffffff", "-t", target]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain("no snapshot ffffffff");
    const notHex = await repo.run(["restore", "../etc", "-t", target]);
    expect(notHex.code).toBe(1);
    expect(notHex.stderr).toContain("is not a snapshot id");
  });
});
