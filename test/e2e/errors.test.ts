/**
 * Errors a user meets: wrong or missing password, no repository, init over a repository, unreadable files,
 * malformed options. Each must give the documented exit code and a message that says what to do.
 *
 * Then the targets' errors (issue 3): an unreachable server (SFTP, S3, vault), wrong credentials (SFTP key,
 * S3 keys, vault token), a missing bucket, a bucket without Object Lock when immutability is asked for, and a
 * full disk (local, SFTP, vault). Each runs the built CLI against a real server started here (sshd.sh,
 * ceph.sh, the vault), asserts a message that names the target and shows no secret, and then proves that
 * nothing already stored was lost: the snapshots are all there and `check --read-data` is clean. A server
 * that cannot be started skips its cases with the reason, except under CI=true; the full-disk cases mount a
 * small tmpfs and so need root (skipped without it, except under CI=true).
 */
import { execFile, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, chown, mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

import { afterAll, beforeAll, describe, expect, it, type TestContext } from "vitest";

import {
  NOBODY,
  ROOT,
  TestRepo,
  describeRun,
  isRoot,
  makeTempDir,
  randomData,
  removeTempDirs,
  restoredPath,
  runCli,
  scanTree,
  sha256,
  spawnNode,
  writeFiles,
  type BackupJson,
  type RunOptions,
  type RunResult,
} from "./helpers.js";
import { freePort } from "../helpers/services.js";

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

// ---------------------------------------------------------------------------------------------------------
// Targets

const run = promisify(execFile);
const MiB = 1024 * 1024;
const underCi = process.env.CI === "true";

/** Starts a service script (`up`) and returns its `export NAME=value` lines, or why it could not. */
async function serviceEnv(script: string): Promise<Record<string, string> | { reason: string }> {
  try {
    const { stdout } = await run("bash", [join(ROOT, "scripts", "services", script), "up"], {
      timeout: 900_000,
      maxBuffer: 16 * MiB,
    });
    return Object.fromEntries(
      [...stdout.matchAll(/^export ([A-Z0-9_]+)=(.*)$/gm)].map((m) => [m[1] ?? "", m[2] ?? ""]),
    );
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? String(err);
    return { reason: `${script} up failed: ${stderr.trim().split("\n").slice(-3).join(" / ")}` };
  }
}

/** Skips (outside CI) or fails (under CI=true) a test that lacks what it needs. */
function requireOrSkip(ctx: TestContext, missing: string | undefined): void {
  if (missing === undefined) return;
  if (underCi) throw new Error(`cannot run under CI=true: ${missing}`);
  ctx.skip(true, missing);
}

/** A tmpfs of `size` at `dir` (created), owned by uid:gid; undefined when it is mounted, else why not. */
async function mountSmallDisk(dir: string, size: string, owner = "0:0"): Promise<string | undefined> {
  if (!isRoot) return "a full disk is simulated with a small tmpfs, which needs root";
  await mkdir(dir, { recursive: true });
  const [uid, gid] = owner.split(":");
  try {
    await run("mount", [
      "-t",
      "tmpfs",
      "-o",
      `size=${size},mode=0755,uid=${uid},gid=${gid}`,
      "bulwark-full",
      dir,
    ]);
    return undefined;
  } catch (err) {
    throw new Error(`root, but cannot mount a tmpfs at ${dir}: ${String(err)}`);
  }
}

async function unmount(dir: string): Promise<void> {
  await run("umount", [dir]).catch(() => undefined);
}

/** The message of a failed command: exit code 1 (or `code`), an `error:` line, no stack trace. */
function expectClearError(r: RunResult, args: string[], code = 1): string {
  expect(r.code, describeRun(args, r)).toBe(code);
  expect(r.stderr, describeRun(args, r)).toMatch(/^error: /m);
  expect(r.stderr).not.toMatch(/^\s+at /m);
  return r.stderr;
}

function expectNoSecret(r: RunResult, secrets: readonly string[]): void {
  for (const secret of secrets) {
    expect(secret.length).toBeGreaterThan(8);
    expect(r.stdout + r.stderr).not.toContain(secret);
  }
}

/** Nothing stored was lost: the same snapshots, a clean `check --read-data`, the first one restores. */
async function expectIntact(
  repo: TestRepo,
  opts: RunOptions,
  snapshots: string[],
  src: string,
): Promise<void> {
  const listed = await repo.json<{ id: string }[]>(["snapshots"], opts);
  expect(listed.map((s) => s.id).sort()).toEqual([...snapshots].sort());
  const check = await repo.json<{ ok: boolean }>(["check", "--read-data"], opts);
  expect(check.ok).toBe(true);
  const target = await makeTempDir("errors-restore");
  const restored = await repo.run(["restore", snapshots[0] ?? "latest", "--target", target], opts);
  expect(restored.code, describeRun(["restore"], restored)).toBe(0);
  expect((await scanTree(restoredPath(target, src))).get("a.txt")?.sha256).toBe(sha256("stored before\n"));
}

async function smallSource(label: string): Promise<string> {
  const src = join(await makeTempDir(label), "src");
  await writeFiles(src, { "a.txt": "stored before\n", "b.bin": randomData(200_000) });
  return src;
}

/** A file too big for the small disks below (random: it does not compress). */
async function bigSource(label: string): Promise<string> {
  const src = join(await makeTempDir(label), "big");
  await writeFiles(src, { "big.bin": randomData(24 * MiB) });
  return src;
}

describe("target errors: a clear message naming the target, no secret, nothing stored lost", () => {
  describe("local directory", () => {
    it("a full disk fails the backup with a message naming the repository", async (ctx) => {
      const base = await makeTempDir("errors-local-full");
      const disk = join(base, "disk");
      requireOrSkip(ctx, await mountSmallDisk(disk, "8m"));
      try {
        const location = join(disk, "repo");
        const src = await smallSource("errors-local-src");
        const repo = await TestRepo.init(location, { passwordFile: join(base, "pw") });
        const first = await repo.json<BackupJson>(["backup", src]);
        const args = ["backup", await bigSource("errors-local-big")];
        const stderr = expectClearError(await repo.run(args), args);
        expect(stderr).toContain(`the disk is full at ${location}`);
        expect(stderr).toContain("nothing already stored is lost");
        expect(stderr).toMatch(/^hint: free some space/m);
        await expectIntact(repo, {}, [first.snapshot], src);
        // No partial file was left behind to fill the disk further.
        const leftovers = spawnSync("find", [location, "-name", ".tmp-*"], {
          encoding: "utf8",
        }).stdout.trim();
        expect(leftovers).toBe("");
      } finally {
        await unmount(disk);
      }
    });
  });

  describe("SFTP", () => {
    let sftp: Record<string, string> | { reason: string } = { reason: "not started" };
    let env: Record<string, string> = {};
    let base = "";
    beforeAll(async () => {
      sftp = await serviceEnv("sshd.sh");
      if ("reason" in sftp) {
        if (underCi) throw new Error(sftp.reason);
        return;
      }
      env = { BULWARK_SFTP_KEY: sftp.SFTP_KEY ?? "", BULWARK_SFTP_KNOWN_HOSTS: sftp.SFTP_KNOWN_HOSTS ?? "" };
      base = await makeTempDir("errors-sftp");
    }, 900_000);
    const server = (ctx: TestContext): Record<string, string> => {
      if ("reason" in sftp) ctx.skip(true, sftp.reason);
      return sftp;
    };
    const locationAt = (s: Record<string, string>, path: string, port = s.SFTP_PORT): string =>
      `sftp:${s.SFTP_USER}@127.0.0.1:${port}${path}`;

    it("an unreachable server and a key the server refuses: errors naming the target, nothing lost", async (ctx) => {
      const s = server(ctx);
      const location = locationAt(s, `${s.SFTP_ROOT}/errors-${randomBytes(4).toString("hex")}`);
      const src = await smallSource("errors-sftp-src");
      const repo = await TestRepo.init(location, { passwordFile: join(base, "pw"), run: { env } });
      const first = await repo.json<BackupJson>(["backup", src], { env });

      const secret = `passphrase-${randomBytes(8).toString("hex")}`;
      const closed = locationAt(s, "/srv/repo", String(await freePort()));
      const unreachable = await runCli(["-r", closed, "-p", repo.passwordFile, "backup", src], {
        env: { ...env, BULWARK_SFTP_PASSPHRASE: secret },
      });
      const down = expectClearError(unreachable, ["backup"]);
      expect(down).toContain(closed);
      expect(down).toContain("connection refused");
      expectNoSecret(unreachable, [secret]);

      // A key the server does not know, protected by a passphrase that must never be shown.
      const wrongKey = join(base, "wrong_ed25519");
      await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", secret, "-f", wrongKey]);
      const wrong = { env: { ...env, BULWARK_SFTP_KEY: wrongKey, BULWARK_SFTP_PASSPHRASE: secret } };
      const refused = await repo.run(["backup", src], wrong);
      const auth = expectClearError(refused, ["backup"]);
      expect(auth).toContain(location);
      expect(auth).toContain(`authentication failed with key ${wrongKey}`);
      expect(auth).toContain("authorized_keys");
      expectNoSecret(refused, [secret, (await readFile(wrongKey, "utf8")).split("\n")[1] ?? ""]);

      await expectIntact(repo, { env }, [first.snapshot], src);
    });

    it("a full disk on the server fails the backup naming the target, and loses nothing", async (ctx) => {
      const s = server(ctx);
      const root = s.SFTP_ROOT ?? "";
      if (!existsSync(root)) requireOrSkip(ctx, `the SFTP server's files (${root}) are not on this machine`);
      const disk = join(root, `full-${randomBytes(4).toString("hex")}`);
      const uid = (await run("id", ["-u", s.SFTP_USER ?? ""])).stdout.trim();
      const gid = (await run("id", ["-g", s.SFTP_USER ?? ""])).stdout.trim();
      requireOrSkip(ctx, await mountSmallDisk(disk, "8m", `${uid}:${gid}`));
      try {
        const location = locationAt(s, `${disk}/repo`);
        const src = await smallSource("errors-sftp-full-src");
        const repo = await TestRepo.init(location, { passwordFile: join(base, "pw-full"), run: { env } });
        const first = await repo.json<BackupJson>(["backup", src], { env });
        const args = ["backup", await bigSource("errors-sftp-big")];
        const stderr = expectClearError(await repo.run(args, { env }), args);
        expect(stderr).toContain(`the disk is full at ${location}`);
        expect(stderr).toContain("nothing already stored is lost");
        await expectIntact(repo, { env }, [first.snapshot], src);
        const leftovers = spawnSync("find", [disk, "-name", ".tmp-*"], { encoding: "utf8" }).stdout.trim();
        expect(leftovers).toBe("");
      } finally {
        await unmount(disk);
        await rm(disk, { recursive: true, force: true });
      }
    });
  });

  describe("S3 (Ceph RadosGW)", () => {
    let ceph: Record<string, string> | { reason: string } = { reason: "not started" };
    /** Whether this file started the cluster: then it stops it (unless BULWARK_KEEP_SERVICES=1). */
    let startedHere = false;
    let env: Record<string, string> = {};
    let base = "";
    beforeAll(async () => {
      ceph =
        (process.env.S3_ENDPOINT ?? "") !== ""
          ? {
              S3_ENDPOINT: process.env.S3_ENDPOINT ?? "",
              AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID ?? "",
              AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY ?? "",
            }
          : await startCeph();
      if ("reason" in ceph) {
        if (underCi) throw new Error(ceph.reason);
        return;
      }
      env = {
        AWS_ACCESS_KEY_ID: ceph.AWS_ACCESS_KEY_ID ?? "",
        AWS_SECRET_ACCESS_KEY: ceph.AWS_SECRET_ACCESS_KEY ?? "",
        AWS_REGION: "us-east-1",
        AWS_REQUEST_CHECKSUM_CALCULATION: "WHEN_REQUIRED",
      };
      base = await makeTempDir("errors-s3");
    }, 900_000);
    afterAll(async () => {
      if (startedHere && process.env.BULWARK_KEEP_SERVICES !== "1") {
        await run("bash", [join(ROOT, "scripts", "services", "ceph.sh"), "down"]).catch(() => undefined);
      }
    });
    const startCeph = async (): Promise<Record<string, string> | { reason: string }> => {
      const script = join(ROOT, "scripts", "services", "ceph.sh");
      startedHere = spawnSync("bash", [script, "env"], { stdio: "ignore" }).status !== 0;
      return serviceEnv("ceph.sh");
    };
    const endpointOf = (ctx: TestContext): string => {
      if ("reason" in ceph) ctx.skip(true, ceph.reason);
      return (ceph as Record<string, string>).S3_ENDPOINT ?? "";
    };
    const s3 = async () => {
      const sdk = await import("@aws-sdk/client-s3");
      const client = new sdk.S3Client({
        endpoint: (ceph as Record<string, string>).S3_ENDPOINT,
        region: "us-east-1",
        forcePathStyle: true,
        credentials: {
          accessKeyId: env.AWS_ACCESS_KEY_ID ?? "",
          secretAccessKey: env.AWS_SECRET_ACCESS_KEY ?? "",
        },
      });
      return { sdk, client };
    };
    const newBucket = async (objectLock: boolean): Promise<string> => {
      const { sdk, client } = await s3();
      const bucket = `bulwark-errors-${randomBytes(5).toString("hex")}`;
      await client.send(
        new sdk.CreateBucketCommand({ Bucket: bucket, ObjectLockEnabledForBucket: objectLock }),
      );
      client.destroy();
      return bucket;
    };

    it("an unreachable endpoint and wrong keys: errors naming the target without the secret, nothing lost", async (ctx) => {
      const endpoint = endpointOf(ctx);
      const bucket = await newBucket(false);
      const location = `s3:${endpoint}/${bucket}/repo`;
      const src = await smallSource("errors-s3-src");
      const repo = await TestRepo.init(location, { passwordFile: join(base, "pw"), run: { env } });
      const first = await repo.json<BackupJson>(["backup", src], { env });

      const closed = `s3:http://127.0.0.1:${await freePort()}/${bucket}/repo`;
      const unreachable = await runCli(["-r", closed, "-p", repo.passwordFile, "backup", src], { env });
      expect(expectClearError(unreachable, ["backup"])).toContain(closed);
      expectNoSecret(unreachable, [env.AWS_SECRET_ACCESS_KEY ?? ""]);

      const secret = `wrong-secret-${randomBytes(8).toString("hex")}`;
      for (const keys of [
        { AWS_SECRET_ACCESS_KEY: secret },
        { AWS_ACCESS_KEY_ID: "NOSUCHACCESSKEY", AWS_SECRET_ACCESS_KEY: secret },
      ]) {
        const refused = await repo.run(["backup", src], { env: { ...env, ...keys } });
        const auth = expectClearError(refused, ["backup"]);
        expect(auth).toContain(location);
        expect(auth).toMatch(/credentials|access key|signature/i);
        expectNoSecret(refused, [secret]);
      }
      await expectIntact(repo, { env }, [first.snapshot], src);
    });

    it("a missing bucket is named, and neither init nor backup creates it", async (ctx) => {
      const endpoint = endpointOf(ctx);
      const bucket = `bulwark-missing-${randomBytes(5).toString("hex")}`;
      const location = `s3:${endpoint}/${bucket}/repo`;
      const passwordFile = join(base, "pw-missing");
      await writeFile(passwordFile, "missing bucket\n");
      const snapshots = await runCli(["-r", location, "-p", passwordFile, "snapshots"], { env });
      const missing = expectClearError(snapshots, ["snapshots"], 10);
      expect(missing).toContain(`"${bucket}"`);
      expect(missing).toContain(endpoint);
      expectNoSecret(snapshots, [env.AWS_SECRET_ACCESS_KEY ?? ""]);
      const init = await runCli(["-r", location, "-p", passwordFile, "init"], { env });
      expect(expectClearError(init, ["init"], 10)).toContain(`"${bucket}"`);
      const { sdk, client } = await s3();
      try {
        await expect(client.send(new sdk.HeadBucketCommand({ Bucket: bucket }))).rejects.toThrow();
      } finally {
        client.destroy();
      }
    });

    it("immutability on a bucket without Object Lock is refused before anything is written, nothing lost", async (ctx) => {
      const endpoint = endpointOf(ctx);
      const bucket = await newBucket(false);
      const location = `s3:${endpoint}/${bucket}/repo`;
      const src = await smallSource("errors-s3-lock-src");
      const repo = await TestRepo.init(location, { passwordFile: join(base, "pw-lock"), run: { env } });
      const first = await repo.json<BackupJson>(["backup", src], { env });
      const immutable = { env: { ...env, BULWARK_S3_IMMUTABLE: "governance:1" } };
      for (const args of [
        ["backup", src],
        ["retention", "--days", "1"],
      ]) {
        const r = await repo.run(args, immutable);
        const stderr = expectClearError(r, args);
        expect(stderr).toContain(bucket);
        expect(stderr).toMatch(/Object Lock/);
        expectNoSecret(r, [env.AWS_SECRET_ACCESS_KEY ?? ""]);
      }
      // A new repository is refused too, and the bucket stays empty.
      const fresh = await newBucket(false);
      const init = await runCli(
        ["-r", `s3:${endpoint}/${fresh}/repo`, "-p", repo.passwordFile, "init"],
        immutable,
      );
      expect(expectClearError(init, ["init"])).toMatch(/Object Lock/);
      const { sdk, client } = await s3();
      try {
        const listed = await client.send(new sdk.ListObjectsV2Command({ Bucket: fresh }));
        expect(listed.KeyCount ?? 0).toBe(0);
      } finally {
        client.destroy();
      }
      await expectIntact(repo, { env }, [first.snapshot], src);
    });
  });

  describe("vault (rest:)", () => {
    const VAULT = join(ROOT, "dist", "cli", "vault-main.js");
    let base = "";
    let disk = "";
    let diskProblem: string | undefined;
    let tokens = "";
    let port = 0;
    let vault: ReturnType<typeof spawnNode> | undefined;
    let appendOnly = "";
    let repo: TestRepo;
    let src = "";
    let first = "";
    const env = (): Record<string, string> => ({ BULWARK_REST_TOKEN: appendOnly });
    const location = (): string => `rest:http://127.0.0.1:${port}/`;

    async function startVault(): Promise<void> {
      const args = [VAULT, "--json", "serve-repo", "--init", "--path", join(disk, "repo"), "--listen", `127.0.0.1:${port}`, "--tokens", tokens]; // prettier-ignore
      const started = spawnNode(args, { timeoutMs: 600_000 });
      let stdout = "";
      started.child.stdout.on("data", (piece: Buffer) => (stdout += piece.toString("utf8")));
      for (let i = 0; i < 300 && !stdout.includes("}"); i++) await new Promise((r) => setTimeout(r, 100));
      if (!stdout.includes("}"))
        throw new Error(`the vault did not start: ${(await stopVault(started)).stderr}`);
      vault = started;
    }

    async function stopVault(v = vault): Promise<RunResult> {
      v?.child.kill("SIGTERM");
      const result = await (v?.result ?? Promise.reject(new Error("no vault")));
      if (v === vault) vault = undefined;
      return result;
    }

    beforeAll(async () => {
      base = await makeTempDir("errors-vault");
      disk = join(base, "disk");
      // Room for the small backups, not for the big one.
      diskProblem = await mountSmallDisk(disk, "12m");
      if (diskProblem !== undefined) await mkdir(disk, { recursive: true });
      tokens = join(base, "tokens.json");
      const added = await spawnNode([VAULT, "--json", "serve-repo", "token", "add", "--tokens", tokens, "--name", "host"]).result; // prettier-ignore
      appendOnly = (JSON.parse(added.stdout) as { token: string }).token;
      port = await freePort();
      await startVault();
      src = await smallSource("errors-vault-src");
      repo = await TestRepo.init(location(), { passwordFile: join(base, "pw"), run: { env: env() } });
      first = (await repo.json<BackupJson>(["backup", src], { env: env() })).snapshot;
    }, 120_000);

    afterAll(async () => {
      if (vault !== undefined) await stopVault();
      if (diskProblem === undefined) await unmount(disk);
    });

    it("a vault that is down is named without the token; once back, nothing is lost", async () => {
      await stopVault();
      const down = await repo.run(["backup", src], { env: env() });
      const stderr = expectClearError(down, ["backup"]);
      expect(stderr).toContain(`cannot reach the vault ${location()}`);
      expect(stderr).toMatch(/^hint: check that the vault is running/m);
      expectNoSecret(down, [appendOnly]);
      await startVault();
      await expectIntact(repo, { env: env() }, [first], src);
    });

    it("a wrong token is refused naming the vault, without either token", async () => {
      const wrong = `bwv_${randomBytes(24).toString("base64url")}`;
      const r = await repo.run(["backup", src], { env: { BULWARK_REST_TOKEN: wrong } });
      const stderr = expectClearError(r, ["backup"]);
      expect(stderr).toContain(`the vault ${location()} refused the token`);
      expect(stderr).toMatch(/^hint: check BULWARK_REST_TOKEN/m);
      expectNoSecret(r, [wrong, appendOnly]);
      await expectIntact(repo, { env: env() }, [first], src);
    });

    it("a full vault disk fails the backup naming the vault, and loses nothing", async (ctx) => {
      requireOrSkip(ctx, diskProblem);
      const args = ["backup", await bigSource("errors-vault-big")];
      const r = await repo.run(args, { env: env() });
      const stderr = expectClearError(r, args);
      expect(stderr).toContain(`the vault ${location()} is out of disk space`);
      expect(stderr).toContain("nothing already stored is lost");
      expectNoSecret(r, [appendOnly]);
      await expectIntact(repo, { env: env() }, [first], src);
    });
  });
});
