/**
 * `bulwark repair` through the built CLI against real servers on 127.0.0.1: a job backs up to a local
 * primary and copies to an SFTP "nas" (real sshd) and an S3 "offsite" bucket with Object Lock (real Ceph
 * RadosGW). A flipped byte in one pack of the nas copy is found by `verify` (with the snapshot and file it
 * affects), healed by `repair --target nas --from offsite`, and `verify` and `check --read-data` then pass on
 * it; a pack deleted from the local copy is healed from the other copies by default. A repair killed with
 * SIGKILL leaves its copy consistent and the next run finishes it. Bad inputs are clear errors.
 */
import { createHash } from "node:crypto";
import { rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { LocalBackend } from "../../src/backend/local/local-backend.js";
import { systemClock } from "../../src/core/clock.js";
import { backupOperation } from "../../src/ops/backup.js";
import { Repository } from "../../src/repository/repository.js";
import { WorkerPool } from "../../src/repository/worker-pool.js";
import {
  CLI,
  describeRun,
  flipByte,
  makeTempDir,
  packFiles,
  randomData,
  removeTempDirs,
  runCli,
  spawnNode,
  writeFiles,
  type RunResult,
} from "./helpers.js";
import { createLockedBucket, startService, testS3Client } from "../helpers/services.js";

interface RepairJson {
  target: string;
  adoptedPacks: number;
  ok: boolean;
  dryRun: boolean;
  damagedPacks: { pack: string; foundBy: string; stored: boolean }[];
  blobsNeeded: number;
  salvaged: number;
  fetched: { source: string; blobs: number; bytes: number }[];
  unrepairable: { blobs: string[]; snapshots: { snapshot: string; files: string[] }[] };
  packsWritten: number;
  retired: string[];
  deleted: string[];
  locked: { file: string; until?: string }[];
}

interface VerifyJson {
  ok: boolean;
  targets: {
    target: string;
    ok?: boolean;
    findings?: { pack?: string; kind: string; severity: string; snapshots?: string[]; files?: string[] }[];
  }[];
}

interface CheckJson {
  ok?: boolean;
  findings: { kind: string; severity: string; pack?: string; blobs?: string[] }[];
}

const PASSWORDS = { local: "pw-local-r1", nas: "pw-nas-r2", offsite: "pw-offsite-r3" };
let base: string;
let src: string;
let config: string;
let sftpDir: string;
let sftpLocation: string;
let s3Location: string;
let bucket: string;
let env: Record<string, string | undefined>;

function cli(args: string[]): Promise<RunResult> {
  return runCli(args, { env, timeoutMs: 240_000 });
}

async function json<T>(args: string[], code: number): Promise<T> {
  const full = ["--json", ...args];
  const r = await cli(full);
  expect(r.code, describeRun(full, r)).toBe(code);
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`stdout is not JSON:\n${describeRun(full, r)}`);
  }
}

/** `check --read-data` of a config target, by location and password as a user would run it. */
async function checkReadData(location: string, password: string): Promise<RunResult> {
  return runCli(["--json", "-r", location, "check", "--read-data"], {
    env: {
      ...env,
      BULWARK_PASSWORD: password,
      BULWARK_SFTP_KEY: process.env.SFTP_KEY,
      BULWARK_SFTP_KNOWN_HOSTS: process.env.SFTP_KNOWN_HOSTS,
    },
    timeoutMs: 240_000,
  });
}

async function largestPack(dir: string): Promise<string> {
  const sizes = await Promise.all(
    (await packFiles(dir)).map(async (p) => [p, (await stat(p)).size] as const),
  );
  return sizes.sort((a, b) => b[1] - a[1])[0]![0];
}

const packName = (path: string): string => path.split("/").at(-1)!;

beforeAll(async () => {
  await Promise.all([startService("sshd", "SFTP_KEY"), startService("ceph", "S3_ENDPOINT")]);
  base = await makeTempDir("repair");
  src = join(base, "src");
  await writeFiles(src, {
    "notes.txt": "the service's data\n",
    "db/a.bin": randomData(6 * 1024 * 1024),
    "db/b.bin": randomData(6 * 1024 * 1024),
    "db/c.bin": randomData(6 * 1024 * 1024),
    "conf/app.yaml": "port: 8080\n",
  });
  await writeFile(join(base, "pw-local"), PASSWORDS.local + "\n");
  await writeFile(join(base, "pw-nas"), PASSWORDS.nas + "\n");
  await writeFile(join(base, "pw-offsite"), PASSWORDS.offsite + "\n");
  sftpDir = `${process.env.SFTP_ROOT}/repair-${Date.now().toString(36)}`;
  sftpLocation = `sftp:${process.env.SFTP_USER}@127.0.0.1:${process.env.SFTP_PORT}${sftpDir}`;
  bucket = await createLockedBucket("bulwark-repair");
  s3Location = `s3:${process.env.S3_ENDPOINT}/${bucket}/app`;
  env = {
    AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY,
    AWS_REQUEST_CHECKSUM_CALCULATION: process.env.AWS_REQUEST_CHECKSUM_CALCULATION,
    AWS_REGION: process.env.AWS_REGION,
    BULWARK_CATALOG: join(base, "state", "catalog.db"),
    HOME: base,
  };
  config = join(base, "bulwark.yaml");
  await writeFile(
    config,
    [
      "version: 1",
      "targets:",
      "  local:",
      `    location: ${join(base, "local")}`,
      "    labels: { medium: disk, site: home, failureDomain: server-1 }",
      `    password: { file: ${join(base, "pw-local")} }`,
      "  nas:",
      `    location: ${sftpLocation}`,
      "    labels: { medium: nas, site: home, failureDomain: nas-1 }",
      `    password: { file: ${join(base, "pw-nas")} }`,
      "    credentials:",
      `      privateKey: { file: ${process.env.SFTP_KEY} }`,
      `      knownHosts: { file: ${process.env.SFTP_KNOWN_HOSTS} }`,
      "  offsite:",
      `    location: ${s3Location}`,
      "    labels: { medium: object, site: ceph-dc2, offsite: true, failureDomain: dc2, isolation: immutable }",
      `    password: { file: ${join(base, "pw-offsite")} }`,
      "    immutability: { mode: governance, days: 1 }",
      "datasets:",
      `  app: { sources: [{ type: files, paths: [${src}] }] }`,
      "policies:",
      "  standard: { rule: 3-2-1-1-0, productionCounts: false, rpo: 24h, immutabilityDays: 1 }",
      "jobs:",
      "  app-nightly: { dataset: app, policy: standard, primary: local, copies: [nas, offsite] }",
      "",
    ].join("\n"),
  );
  const r = await cli(["--json", "run", "--init", "-c", config]);
  expect(r.code, describeRun(["run"], r)).toBe(0);
  // Evidence for posture's validation row: every copy verified whole, and a passing drill.
  const verified = await cli(["verify", "-c", config]);
  expect(verified.code, describeRun(["verify"], verified)).toBe(0);
  const drill = await cli(["drill", "-c", config, "--dataset", "app"]);
  expect(drill.code, describeRun(["drill"], drill)).toBe(0);
}, 600_000);

/** Posture's validation row (the 0 of 3-2-1-1-0) for the dataset. */
async function validationRow(): Promise<{ status: string; reason?: string }> {
  const r = await cli(["--json", "posture", "-c", config]);
  const posture = JSON.parse(r.stdout) as {
    datasets: { rows: { id: string; status: string; reason?: string }[] }[];
  };
  const row = posture.datasets[0]!.rows.find((x) => x.id === "validation");
  if (row === undefined) throw new Error(`no validation row:\n${describeRun(["posture"], r)}`);
  return row;
}

afterAll(removeTempDirs);

describe("bulwark repair", () => {
  it("a flipped byte on the SFTP copy: verify names it, repair heals it from S3, verify and check pass", async () => {
    expect(await validationRow()).toMatchObject({ status: "pass" });
    const pack = await largestPack(sftpDir);
    await flipByte(pack, 1000);
    const found = await json<VerifyJson>(["verify", "-c", config, "--target", "nas"], 1);
    const red = await validationRow();
    expect(red.status).toBe("fail");
    expect(red.reason).toMatch(/verification of nas .* found 1 error/);
    const finding = found.targets[0]!.findings!.find((f) => f.pack === packName(pack));
    expect(finding?.severity).toBe("error");
    expect(finding?.snapshots).toHaveLength(1);
    expect(finding?.files?.some((f) => /db\/[abc]\.bin$/.test(f))).toBe(true);

    const plan = await json<RepairJson>(
      ["repair", "-c", config, "--target", "nas", "--from", "offsite", "--dry-run"],
      0,
    );
    expect(plan.dryRun).toBe(true);
    expect(plan.damagedPacks.map((d) => [d.pack, d.foundBy])).toEqual([[packName(pack), "catalog"]]);
    expect(plan.fetched.map((f) => f.source)).toEqual(["offsite"]);
    expect(plan.packsWritten).toBe(0);

    const r = await json<RepairJson>(["repair", "-c", config, "--target", "nas", "--from", "offsite"], 0);
    expect(r.ok).toBe(true);
    expect(r.damagedPacks.map((d) => d.pack)).toEqual([packName(pack)]);
    // One blob had the flipped byte: it came from the bucket; its intact neighbours from the pack itself.
    expect(r.fetched).toEqual([{ source: "offsite", blobs: 1, bytes: expect.any(Number) as number }]);
    expect(r.salvaged).toBe(r.blobsNeeded - 1);
    expect(r.retired).toEqual([packName(pack)]);
    expect(r.deleted).toEqual([packName(pack)]);
    expect((await packFiles(sftpDir)).map(packName)).not.toContain(packName(pack));

    const verified = await json<VerifyJson>(["verify", "-c", config, "--target", "nas"], 0);
    expect(verified.ok).toBe(true);
    // Green again: the verification after the repair found nothing, and every pack of nas is covered.
    expect(await validationRow()).toMatchObject({ status: "pass" });
    const checked = await checkReadData(sftpLocation, PASSWORDS.nas);
    expect(checked.code, describeRun(["check", "--read-data"], checked)).toBe(0);
    expect((JSON.parse(checked.stdout) as CheckJson).findings).toEqual([]);
  }, 600_000);

  it("on the Object Lock bucket: healed with new objects; the locked damaged pack stays, never read", async () => {
    // Damage at rest in the bucket: an administrator with the governance bypass replaces a pack's only
    // version by one with a flipped byte (reads go to a file's genuine, oldest version: now the damaged one).
    const {
      ListObjectsV2Command,
      ListObjectVersionsCommand,
      GetObjectCommand,
      DeleteObjectCommand,
      PutObjectCommand,
    } = await import("@aws-sdk/client-s3");
    const client = await testS3Client();
    const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: "app/data/" }));
    const largest = [...(listed.Contents ?? [])].sort((x, y) => (y.Size ?? 0) - (x.Size ?? 0))[0]!;
    const key = largest.Key!;
    const got = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    const bytes = Buffer.from(await got.Body!.transformToByteArray());
    bytes[1000] = bytes[1000]! ^ 0xff;
    const versions = await client.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: key }));
    for (const v of versions.Versions ?? []) {
      await client.send(
        new DeleteObjectCommand({
          Bucket: bucket,
          Key: key,
          VersionId: v.VersionId,
          BypassGovernanceRetention: true,
        }),
      );
    }
    const until = new Date(Date.now() + 86_400_000);
    await client.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: key,
        Body: bytes,
        ContentMD5: createHash("md5").update(bytes).digest("base64"),
        ObjectLockMode: "GOVERNANCE",
        ObjectLockRetainUntilDate: until,
      }),
    );
    const pack = key.split("/").at(-1)!;
    const found = await json<VerifyJson>(["verify", "-c", config, "--target", "offsite"], 1);
    expect(found.targets[0]!.findings!.some((f) => f.pack === pack && f.severity === "error")).toBe(true);

    const r = await json<RepairJson>(["repair", "-c", config, "--target", "offsite", "--from", "nas"], 0);
    expect(r.ok).toBe(true);
    expect(r.fetched.map((f) => [f.source, f.blobs])).toEqual([["nas", 1]]);
    expect(r.retired).toEqual([pack]);
    expect(r.deleted).toEqual([]);
    expect(r.locked).toHaveLength(1);
    expect(r.locked[0]!.file).toBe(`pack/${pack.slice(0, 12)}`);
    expect(r.packsWritten).toBeGreaterThan(0);
    const human = await cli(["repair", "-c", config, "--target", "offsite", "--from", "nas"]);
    expect(human.code, describeRun(["repair"], human)).toBe(0);
    expect(human.stdout).toMatch(/kept because the target does not allow deleting them \(retention until/);

    const verified = await json<VerifyJson>(["verify", "-c", config, "--target", "offsite"], 0);
    expect(verified.ok).toBe(true);
    const checked = await runCli(["--json", "-r", s3Location, "check", "--read-data"], {
      env: { ...env, BULWARK_PASSWORD: PASSWORDS.offsite },
      timeoutMs: 240_000,
    });
    expect(checked.code, describeRun(["check", "--read-data"], checked)).toBe(0);
    expect(
      (JSON.parse(checked.stdout) as CheckJson).findings.map((f) => [f.severity, f.kind, f.pack]),
    ).toEqual([["warning", "pack-retired", pack]]);
  }, 600_000);

  it("a pack deleted from the local copy is healed from the other copies (no --from)", async () => {
    const pack = await largestPack(join(base, "local"));
    await rm(pack);
    const found = await json<VerifyJson>(["verify", "-c", config, "--target", "local"], 1);
    expect(
      found.targets[0]!.findings!.some((f) => f.pack === packName(pack) && f.kind === "pack-missing"),
    ).toBe(true);
    const red = await validationRow();
    expect(red.status).toBe("fail");
    expect(red.reason).toMatch(/verification of local .* found \d+ errors?/);
    const r = await json<RepairJson>(["repair", "-c", config, "--target", "local"], 0);
    expect(r.ok).toBe(true);
    expect(r.damagedPacks).toMatchObject([{ pack: packName(pack), stored: false }]);
    expect(r.salvaged).toBe(0);
    // The sources are tried in order (the nas first, an SFTP copy, then the bucket): the nas has them all.
    expect(r.fetched.map((f) => [f.source, f.blobs])).toEqual([["nas", r.blobsNeeded]]);
    expect(r.retired).toEqual([packName(pack)]);
    const verified = await json<VerifyJson>(["verify", "-c", config, "--target", "local"], 0);
    expect(verified.ok).toBe(true);
    expect(await validationRow()).toMatchObject({ status: "pass" });
    const checked = await checkReadData(join(base, "local"), PASSWORDS.local);
    expect(checked.code, describeRun(["check", "--read-data"], checked)).toBe(0);
    const again = await json<RepairJson>(["repair", "-c", config, "--target", "local"], 0);
    expect(again).toMatchObject({ ok: true, blobsNeeded: 0, packsWritten: 0, damagedPacks: [] });
  }, 600_000);

  it("killed with SIGKILL mid-repair, the copy stays consistent and the next run finishes", async () => {
    // Two local copies of 1 MiB packs, so the repair writes dozens of packs and a kill lands between two.
    const dir = await makeTempDir("repair-kill");
    const password = "pw-kill";
    await writeFile(join(dir, "pw"), password + "\n");
    const aBackend = await LocalBackend.create(join(dir, "a"));
    const a = await Repository.init(aBackend, password, { packSize: 1024 * 1024 });
    const pool = new WorkerPool(a);
    const files: Record<string, Buffer> = {};
    for (let i = 0; i < 60; i++) files[`f${i}.bin`] = randomData(1024 * 1024);
    await writeFiles(join(dir, "src"), files);
    try {
      await backupOperation({
        repo: a,
        pool,
        clock: systemClock,
        what: { kind: "paths", paths: [join(dir, "src")], virtualFiles: [], excludes: [], excludeFiles: [] },
        env: {},
        hostname: "h",
      });
    } finally {
      await pool.close();
      await aBackend.close();
    }
    const killEnv = { ...env, BULWARK_CATALOG: join(dir, "state", "catalog.db") };
    const b = join(dir, "b");
    const copy = await runCli(
      ["-p", join(dir, "pw"), "copy", "--from", join(dir, "a"), "--to", b, "--init"],
      {
        env: killEnv,
      },
    );
    expect(copy.code, describeRun(["copy"], copy)).toBe(0);
    const packs = await packFiles(b);
    const removed = packs.filter((_, i) => i % 3 !== 0);
    for (const p of removed) await rm(p);
    const original = new Set(packs.map(packName));
    const errorsOf = async (): Promise<Set<string>> => {
      const r = await runCli(["--json", "-r", b, "-p", join(dir, "pw"), "--no-lock", "check"], {
        env: killEnv,
      });
      const found = (JSON.parse(r.stdout) as CheckJson).findings.filter((f) => f.severity === "error");
      return new Set(found.map((f) => `${f.kind} ${f.pack ?? [...(f.blobs ?? [])].sort().join(",")}`));
    };
    const damage = await errorsOf();
    expect(damage.size).toBeGreaterThan(0);
    const planned = await runCli(
      ["--json", "-r", b, "-p", join(dir, "pw"), "repair", "--dry-run", "--from-repo", join(dir, "a")],
      { env: killEnv },
    );
    expect(planned.code, describeRun(["repair", "--dry-run"], planned)).toBe(0);
    const before = JSON.parse(planned.stdout) as RepairJson;
    expect(before.blobsNeeded).toBeGreaterThan(30);
    const args = ["-r", b, "-p", join(dir, "pw"), "repair", "--from-repo", join(dir, "a")];
    const { child, result } = spawnNode([CLI, ...args], { env: killEnv });
    const started = Date.now();
    for (;;) {
      await new Promise((res) => setTimeout(res, 5));
      const now = (await packFiles(b).catch(() => [])).map(packName);
      if (now.filter((p) => !original.has(p)).length >= 3 || Date.now() - started > 60_000) break;
    }
    child.kill("SIGKILL");
    const killed = await result;
    expect(killed.signal, describeRun(args, killed)).toBe("SIGKILL");

    // Consistent: no error but the damage the repair was healing (some of it may be healed already).
    const mid = await errorsOf();
    for (const e of mid) expect(damage.has(e), `${e} is new after the kill`).toBe(true);
    // The next run finishes the job (the killed run's lock is stale: same host, dead process).
    const next = await runCli(["--json", ...args], { env: killEnv, timeoutMs: 240_000 });
    expect(next.code, describeRun(args, next)).toBe(0);
    const nextJson = JSON.parse(next.stdout) as RepairJson;
    expect(nextJson.ok).toBe(true);
    // What the killed run wrote was kept (indexed by a checkpoint, or adopted now) and not fetched again.
    expect(nextJson.blobsNeeded).toBeLessThan(before.blobsNeeded);
    console.log(
      `[repair kill] ${removed.length} of ${packs.length} packs deleted, ${before.blobsNeeded} blobs needed; ` +
        `after SIGKILL the next run needed ${nextJson.blobsNeeded} (${nextJson.adoptedPacks} packs adopted), ` +
        `fetched ${nextJson.fetched[0]?.blobs ?? 0}`,
    );
    expect(nextJson.fetched[0]!.blobs).toBeLessThan(before.blobsNeeded);
    const checked = await runCli(["--json", "-r", b, "-p", join(dir, "pw"), "check", "--read-data"], {
      env: killEnv,
    });
    expect(checked.code, describeRun(["check", "--read-data"], checked)).toBe(0);
    expect((JSON.parse(checked.stdout) as CheckJson).findings.filter((f) => f.severity === "error")).toEqual(
      [],
    );
    // A third run has nothing to do.
    const third = await runCli(["--json", ...args], { env: killEnv });
    expect(JSON.parse(third.stdout) as RepairJson).toMatchObject({
      ok: true,
      blobsNeeded: 0,
      packsWritten: 0,
    });
  }, 600_000);

  it("bad inputs are clear errors", async () => {
    const unknown = await cli(["repair", "-c", config, "--target", "tape"]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/unknown target "tape"/);
    expect(unknown.stderr).toMatch(/local, nas, offsite/);
    const none = await cli(["repair", "-c", config]);
    expect(none.stderr).toMatch(/repair needs --target/);
    const same = await cli(["repair", "-c", config, "--target", "nas", "--from", "nas"]);
    expect(same.code).toBe(1);
    expect(same.stderr).toMatch(/--from nas is the target being repaired/);
    const bare = await runCli(["-r", join(base, "local"), "-p", join(base, "pw-local"), "repair"], { env });
    expect(bare.code).toBe(1);
    expect(bare.stderr).toMatch(/no source to repair from/);
    // A source of another copy set: its blob ids differ.
    const other = await makeTempDir("repair-other");
    const init = await runCli(["-r", join(other, "r"), "-p", join(base, "pw-local"), "init"], { env });
    expect(init.code, describeRun(["init"], init)).toBe(0);
    const pack = await largestPack(join(base, "local"));
    await rm(pack);
    const stranger = await runCli(
      ["-r", join(base, "local"), "-p", join(base, "pw-local"), "repair", "--from-repo", join(other, "r")],
      { env },
    );
    expect(stranger.code, describeRun(["repair"], stranger)).toBe(1);
    expect(stranger.stderr).toMatch(/blob ids differ/);
    expect(stranger.stderr).toMatch(/copy-chunker-params-from/);
    // No copy has the data (an empty member of the copy set): the snapshot and files are named, exit 1.
    const empty = join(other, "empty");
    const made = await runCli(
      [
        "-r",
        empty,
        "-p",
        join(base, "pw-local"),
        "init",
        "--copy-chunker-params-from",
        join(base, "local"),
        "--from-password-file",
        join(base, "pw-local"),
      ],
      { env },
    );
    expect(made.code, describeRun(["init"], made)).toBe(0);
    const lost = await runCli(
      ["--json", "-r", join(base, "local"), "-p", join(base, "pw-local"), "repair", "--from-repo", empty],
      { env },
    );
    expect(lost.code, describeRun(["repair"], lost)).toBe(1);
    const lostJson = JSON.parse(lost.stdout) as RepairJson;
    expect(lostJson.ok).toBe(false);
    expect(lostJson.unrepairable.snapshots.length).toBeGreaterThan(0);
    expect(lostJson.unrepairable.snapshots[0]!.files.some((f) => /db\/[abc]\.bin$/.test(f))).toBe(true);
    expect(lost.stderr).toMatch(/blobs? (was|were) on no copy/);
    expect(lost.stderr).toMatch(/what next/);
    // The copies of the config still have it.
    const healed = await json<RepairJson>(["repair", "-c", config, "--target", "local"], 0);
    expect(healed.ok).toBe(true);
  }, 600_000);
});
