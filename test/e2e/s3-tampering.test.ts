/**
 * Versioned-bucket tampering (issue 12, item 1), end to end through the built CLI against real Ceph RadosGW
 * with Object Lock. The attacker holds the host's own S3 keys: it cannot delete or shorten a locked version,
 * but puts a delete marker over every file of the immutable copy and then junk versions over some of them
 * (one unlocked, one governance-locked, one compliance-locked over the config). Before the fix Bulwark read
 * the attacker's versions or nothing ("no repository ... `bulwark init`") and init wrote a new repository
 * over the hidden one. Now: the restore from the S3 copy is byte-identical, posture's immutable row is red
 * naming the tampering, init on the prefix is refused, and `bulwark untamper` removes the markers and the
 * foreign versions it may and names what the compliance-locked one needs.
 */
import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

import {
  DeleteObjectCommand,
  ListObjectVersionsCommand,
  PutObjectCommand,
  type S3Client,
  type ObjectVersion,
} from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  describeRun,
  makeTempDir,
  randomData,
  removeTempDirs,
  runCli,
  scanTree,
  writeFiles,
  type RunResult,
} from "./helpers.js";
import { createLockedBucket, startService, testS3Client } from "../helpers/services.js";

const PASSWORD = "pw-offsite-tamper";

let base: string;
let src: string;
let bucket: string;
let location: string;
let config: string;
let client: S3Client;
/** The keys and version ids Bulwark wrote, before the attack. */
let genuine: Map<string, string>;
const junk = { config: "", pack: "", snapshot: "" };

function env(): Record<string, string | undefined> {
  return {
    AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY,
    AWS_REGION: process.env.AWS_REGION,
    BULWARK_PASSWORD: PASSWORD,
    BULWARK_CATALOG: join(base, "state", "catalog.db"),
    HOME: base,
  };
}

function cli(args: string[], extra: Record<string, string | undefined> = {}): Promise<RunResult> {
  return runCli(args, { env: { ...env(), ...extra }, timeoutMs: 240_000 });
}

async function allVersions(): Promise<{
  versions: ObjectVersion[];
  markers: { Key?: string; VersionId?: string }[];
}> {
  const versions: ObjectVersion[] = [];
  const markers: { Key?: string; VersionId?: string }[] = [];
  let keyMarker: string | undefined;
  let versionIdMarker: string | undefined;
  for (;;) {
    const page = await client.send(
      new ListObjectVersionsCommand({
        Bucket: bucket,
        Prefix: "app/",
        KeyMarker: keyMarker,
        VersionIdMarker: versionIdMarker,
      }),
    );
    versions.push(...(page.Versions ?? []));
    markers.push(...(page.DeleteMarkers ?? []));
    if (page.IsTruncated !== true) return { versions, markers };
    keyMarker = page.NextKeyMarker;
    versionIdMarker = page.NextVersionIdMarker;
  }
}

function immutableRow(r: RunResult): { status: string; reason?: string } {
  const json = r.stdout;
  let p: { datasets: { rows: { id: string; status: string; reason?: string }[] }[] };
  try {
    p = JSON.parse(json) as typeof p;
  } catch {
    throw new Error(`posture printed no JSON:\n${describeRun(["posture"], r)}`);
  }
  const row = p.datasets[0]?.rows.find((r) => r.id === "immutable");
  if (row === undefined) throw new Error(`no immutable row in ${json}`);
  return row;
}

beforeAll(async () => {
  await startService("ceph", "S3_ENDPOINT");
  base = await makeTempDir("s3-tampering");
  src = join(base, "src");
  await writeFiles(src, {
    "a.txt": "the service's data\n",
    "db/big.bin": randomData(3 * 1024 * 1024),
    "conf/app.yaml": "port: 8080\n",
  });
  await writeFile(join(base, "pw"), PASSWORD + "\n");
  client = await testS3Client();
  bucket = await createLockedBucket("bulwark-tamper");
  location = `s3:${process.env.S3_ENDPOINT}/${bucket}/app`;
  config = join(base, "bulwark.yaml");
  await writeFile(
    config,
    [
      "version: 1",
      "targets:",
      "  local:",
      `    location: ${join(base, "local")}`,
      "    labels: { medium: disk, site: home, failureDomain: server-1 }",
      `    password: { file: ${join(base, "pw")} }`,
      "  offsite:",
      `    location: ${location}`,
      "    labels: { medium: object, site: ceph-dc2, offsite: true, failureDomain: dc2, isolation: immutable }",
      `    password: { file: ${join(base, "pw")} }`,
      "    immutability: { mode: governance, days: 1 }",
      "datasets:",
      `  app: { sources: [{ type: files, paths: [${src}] }] }`,
      "policies:",
      "  standard: { rule: 3-2-1-1-0, productionCounts: false, rpo: 24h, immutabilityDays: 1 }",
      "jobs:",
      "  app-nightly: { dataset: app, policy: standard, primary: local, copies: [offsite] }",
      "",
    ].join("\n"),
  );
}, 600_000);

afterAll(async () => {
  client?.destroy();
  // The compliance-locked junk keeps the bucket until its date; radosgw-admin (root on our cluster) purges it.
  if (process.env.CEPH_CONF !== undefined && bucket !== undefined) {
    await promisify(execFile)("radosgw-admin", [
      "-c",
      process.env.CEPH_CONF,
      "bucket",
      "rm",
      `--bucket=${bucket}`,
      "--purge-objects",
    ]).catch(() => undefined);
  }
  await removeTempDirs();
});

describe("an attacker with the host's S3 keys hides the immutable copy behind delete markers and junk versions", () => {
  it("before the attack: run copies to the locked bucket and posture's immutable row passes", async () => {
    const r = await cli(["--json", "run", "--init", "-c", config]);
    expect(r.code, describeRun(["run"], r)).toBe(0);
    const p = await cli(["--json", "posture", "-c", config]);
    expect(immutableRow(p).status, describeRun(["posture"], p)).toBe("pass");
  }, 300_000);

  it("the attack: a delete marker over every file, then junk versions over the config (compliance), a pack (governance) and the snapshot", async () => {
    const { versions } = await allVersions();
    genuine = new Map(
      versions.filter((v) => !(v.Key ?? "").includes("/locks/")).map((v) => [v.Key!, v.VersionId!]),
    );
    expect(genuine.size).toBeGreaterThanOrEqual(5);
    for (const key of genuine.keys())
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
    const keys = [...genuine.keys()];
    junk.config = keys.find((k) => k === "app/config")!;
    junk.pack = keys.find((k) => k.includes("/data/"))!;
    junk.snapshot = keys.find((k) => k.includes("/snapshots/"))!;
    const until = new Date(Date.now() + 15 * 60_000);
    await client.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: junk.config,
        Body: "pay us",
        ObjectLockMode: "COMPLIANCE",
        ObjectLockRetainUntilDate: until,
      }),
    );
    await client.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: junk.pack,
        Body: randomData(4096),
        ObjectLockMode: "GOVERNANCE",
        ObjectLockRetainUntilDate: until,
      }),
    );
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: junk.snapshot, Body: "{}" }));
    // The locked versions are all still there: the attack only hid them.
    const after = await allVersions();
    for (const [key, id] of genuine) {
      expect(
        after.versions.some((v) => v.Key === key && v.VersionId === id),
        key,
      ).toBe(true);
    }
  });

  it("the restore from the S3 copy alone is byte-identical", async () => {
    const expected = await scanTree(src, { hash: true });
    const out = join(base, "restored");
    const r = await cli(["-r", location, "restore", "latest", "--target", out]);
    expect(r.code, describeRun(["restore"], r)).toBe(0);
    const got = await scanTree(join(out, src), { hash: true });
    expect(got.size).toBe(expected.size);
    for (const [path, entry] of expected) expect(got.get(path)?.sha256, path).toBe(entry.sha256);
  }, 300_000);

  it("posture turns the immutable row red and names the tampering", async () => {
    const p = await cli(["--json", "posture", "-c", config]);
    const row = immutableRow(p);
    expect(row.status, describeRun(["posture"], p)).toBe("fail");
    expect(row.reason).toMatch(new RegExp(`tampering detected: ${genuine.size} files hidden`));
    expect(row.reason).toContain("the config (foreign version over it)");
    expect(row.reason).toMatch(/delete marker over it/);
  }, 300_000);

  it("init on the prefix is refused, and nothing is written", async () => {
    const before = await allVersions();
    const r = await cli(["-r", location, "init"], { BULWARK_S3_IMMUTABLE: "governance:1" });
    expect(r.code, describeRun(["init"], r)).not.toBe(0);
    expect(r.stderr).toMatch(/tampering detected at .*: \d+ files of a repository are hidden/);
    expect(r.stderr).toMatch(/bulwark untamper/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    const after = await allVersions();
    expect(after.versions.length).toBe(before.versions.length);
    expect(after.markers.length).toBe(before.markers.length);
    // And a fresh, empty prefix in the same bucket still initialises.
    const fresh = await cli(["-r", `s3:${process.env.S3_ENDPOINT}/${bucket}/other`, "init"]);
    expect(fresh.code, describeRun(["init"], fresh)).toBe(0);
  }, 120_000);

  it("untamper --dry-run lists it, untamper removes what the credentials allow and names what needs more", async () => {
    const dry = await cli(["--json", "-r", location, "untamper", "--dry-run"]);
    expect(dry.code, describeRun(["untamper"], dry)).toBe(3);
    const plan = JSON.parse(dry.stdout) as {
      tampered: { file: string }[];
      actions: { file: string; outcome: string; needs?: string }[];
    };
    expect(plan.tampered.length).toBe(genuine.size);
    // One marker per file plus the three junk versions; only the compliance one is out of reach.
    expect(plan.actions.length).toBe(genuine.size + 3);
    expect(plan.actions.filter((a) => a.outcome === "refused").map((a) => a.file)).toEqual(["config"]);
    const unchanged = await allVersions();
    expect(unchanged.markers.length).toBe(genuine.size);

    const r = await cli(["-r", location, "untamper"]);
    expect(r.code, describeRun(["untamper"], r)).toBe(3);
    expect(r.stdout).toMatch(new RegExp(`removed ${genuine.size + 2} of ${genuine.size + 3}`));
    expect(r.stdout).toMatch(/cannot remove config version .*compliance-locked/);
    expect(r.stdout).toMatch(/needs: the storage administrator, outside S3 \(Ceph: radosgw-admin object rm/);
    const { versions, markers } = await allVersions();
    expect(markers).toEqual([]);
    // Every genuine version is current again, except the config, under the junk nobody may delete yet.
    for (const [key, id] of genuine) {
      const current = versions.find((v) => v.Key === key && v.IsLatest === true);
      if (key === junk.config) expect(current?.VersionId).not.toBe(id);
      else expect(current?.VersionId, key).toBe(id);
      expect(versions.some((v) => v.Key === key && v.VersionId === id)).toBe(true);
    }
    expect(versions.filter((v) => !genuine.has(v.Key!) || genuine.get(v.Key!) !== v.VersionId).length).toBe(
      1,
    );

    // The copy still restores, and posture names what is left.
    const out = join(base, "restored-2");
    const again = await cli(["-r", location, "restore", "latest", "--target", out]);
    expect(again.code, describeRun(["restore"], again)).toBe(0);
    const p = await cli(["--json", "posture", "-c", config]);
    expect(immutableRow(p).reason).toMatch(/tampering detected: 1 file hidden .*the config/);
  }, 300_000);
});
