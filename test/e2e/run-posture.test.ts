/**
 * The heart of Bulwark, end to end through the built CLI against real servers on 127.0.0.1: a config with a
 * dataset, a local primary, an SFTP "NAS" in another failure domain (real sshd) and an immutable S3 bucket
 * marked offsite (real Ceph RadosGW with Object Lock). `bulwark run` backs up and copies; `bulwark posture`
 * must then pass the first four rows of 3-2-1-1-0 from evidence read back from the targets. Then each way
 * of breaking the rule turns the right row red with the right reason: a target that is down, a copy older
 * than the RPO, two targets in one failure domain, and a lock that was dropped (governance retention
 * shortened with bypass, as an administrator could). Every copy restores alone.
 *
 * Credentials come from the config's references (credentials: { accessKeyId: { env: ... } }, privateKey:
 * { file: ... }), not from the variables the backends read by default.
 */
import { rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

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

interface PostureJson {
  status: string;
  datasets: Array<{
    dataset: string;
    status: string;
    rows: Array<{ id: string; status: string; required: boolean; evidence: string[]; reason?: string }>;
    copies: Array<{ target: string; counted: boolean; snapshot?: { id: string }; reason?: string }>;
    warnings: string[];
  }>;
}

interface RunJson {
  jobs: Array<{
    job: string;
    status: string;
    backup: { target: string; status: string; snapshot?: string };
    copies: Array<{
      target: string;
      status: string;
      snapshots: { source: string; target: string }[];
      blobsCopied: number;
      verifiedPacks: number;
      error?: string;
    }>;
    forget: Array<{ target: string; status: string; removed: string[]; locked: string[] }>;
  }>;
}

let base: string;
let src: string;
let bucket: string;
let sftpLocation: string;
let s3Location: string;
let env: Record<string, string | undefined>;

const PASSWORDS = { local: "pw-local-1", nas: "pw-nas-2", offsite: "pw-offsite-3" };

interface Variant {
  nasFailureDomain?: string;
  nasLocation?: string;
  rpo?: string;
}

function configText(v: Variant = {}): string {
  return [
    "version: 1",
    "targets:",
    "  local:",
    `    location: ${join(base, "local")}`,
    "    labels: { medium: disk, site: home, failureDomain: server-1 }",
    `    password: { file: ${join(base, "pw-local")} }`,
    "  nas:",
    `    location: ${v.nasLocation ?? sftpLocation}`,
    `    labels: { medium: nas, site: home, failureDomain: ${v.nasFailureDomain ?? "nas-1"} }`,
    `    password: { file: ${join(base, "pw-nas")} }`,
    "    credentials:",
    `      privateKey: { file: ${process.env.SFTP_KEY} }`,
    `      knownHosts: { file: ${process.env.SFTP_KNOWN_HOSTS} }`,
    "  offsite:",
    `    location: ${s3Location}`,
    "    labels: { medium: object, site: ceph-dc2, offsite: true, failureDomain: dc2, isolation: immutable }",
    `    password: { file: ${join(base, "pw-offsite")} }`,
    "    credentials:",
    "      accessKeyId: { env: TEST_OFFSITE_KEY_ID }",
    "      secretAccessKey: { env: TEST_OFFSITE_SECRET }",
    "    immutability: { mode: governance, days: 1 }",
    "datasets:",
    `  app: { sources: [{ type: files, paths: [${src}] }] }`,
    "policies:",
    "  standard:",
    "    rule: 3-2-1-1-0",
    "    productionCounts: false",
    `    rpo: ${v.rpo ?? "24h"}`,
    "    immutabilityDays: 1",
    "    retention: { local: { keepLast: 2 }, nas: { keepLast: 3 } }",
    "jobs:",
    "  app-nightly: { dataset: app, policy: standard, primary: local, copies: [nas, offsite] }",
    "",
  ].join("\n");
}

async function writeConfig(name: string, v: Variant = {}): Promise<string> {
  const file = join(base, name);
  await writeFile(file, configText(v));
  return file;
}

function cli(args: string[]): Promise<RunResult> {
  return runCli(args, { env, timeoutMs: 240_000 });
}

async function posture(file: string): Promise<{ r: RunResult; json: PostureJson }> {
  const r = await cli(["--json", "posture", "-c", file]);
  let json: PostureJson;
  try {
    json = JSON.parse(r.stdout) as PostureJson;
  } catch {
    throw new Error(`posture printed no JSON:\n${describeRun(["posture"], r)}`);
  }
  return { r, json };
}

function row(p: PostureJson, id: string): { status: string; reason?: string; evidence: string[] } {
  const found = p.datasets[0]?.rows.find((r) => r.id === id);
  if (found === undefined) throw new Error(`no row ${id} in ${JSON.stringify(p, null, 2)}`);
  return found;
}

beforeAll(async () => {
  await Promise.all([startService("sshd", "SFTP_KEY"), startService("ceph", "S3_ENDPOINT")]);
  base = await makeTempDir("run-posture");
  src = join(base, "src");
  await writeFiles(src, {
    "a.txt": "the service's data\n",
    "db/big.bin": randomData(6 * 1024 * 1024),
    "conf/app.yaml": "port: 8080\n",
  });
  await writeFile(join(base, "pw-local"), PASSWORDS.local + "\n");
  await writeFile(join(base, "pw-nas"), PASSWORDS.nas + "\n");
  await writeFile(join(base, "pw-offsite"), PASSWORDS.offsite + "\n");
  sftpLocation = `sftp:${process.env.SFTP_USER}@127.0.0.1:${process.env.SFTP_PORT}${process.env.SFTP_ROOT}/run-${Date.now().toString(36)}`;

  bucket = await createLockedBucket("bulwark-run");
  s3Location = `s3:${process.env.S3_ENDPOINT}/${bucket}/app`;
  // The backends' default variables are removed: the config's credentials must be what opens the targets.
  env = {
    TEST_OFFSITE_KEY_ID: process.env.AWS_ACCESS_KEY_ID,
    TEST_OFFSITE_SECRET: process.env.AWS_SECRET_ACCESS_KEY,
    AWS_ACCESS_KEY_ID: undefined,
    AWS_SECRET_ACCESS_KEY: undefined,
    AWS_REQUEST_CHECKSUM_CALCULATION: process.env.AWS_REQUEST_CHECKSUM_CALCULATION,
    AWS_REGION: process.env.AWS_REGION,
    BULWARK_CATALOG: join(base, "state", "catalog.db"),
    HOME: base,
  };
}, 600_000);

afterAll(removeTempDirs);

describe("bulwark run, then bulwark posture: local + SFTP NAS + immutable S3 offsite", () => {
  let config: string;
  let run1: RunJson;

  it("runs the job: backup to the primary, copies to the NAS and the bucket, each verified", async () => {
    config = await writeConfig("bulwark.yaml");
    const r = await cli(["--json", "run", "--init", "-c", config]);
    expect(r.code, describeRun(["run"], r)).toBe(0);
    run1 = JSON.parse(r.stdout) as RunJson;
    const job = run1.jobs[0]!;
    expect(job.status).toBe("ok");
    expect(job.backup.snapshot).toMatch(/^[0-9a-f]{64}$/);
    expect(job.copies.map((c) => [c.target, c.status])).toEqual([
      ["nas", "ok"],
      ["offsite", "ok"],
    ]);
    for (const c of job.copies) {
      expect(c.snapshots.map((s) => s.source)).toEqual([job.backup.snapshot]);
      expect(c.blobsCopied).toBeGreaterThan(0);
      expect(c.verifiedPacks).toBeGreaterThan(0);
    }
  }, 300_000);

  it("posture: copies, media, offsite and immutability pass from evidence read back", async () => {
    const { r, json } = await posture(config);
    expect(r.code, describeRun(["posture"], r)).toBe(0);
    for (const id of ["copies", "media", "offsite", "immutable"]) {
      expect(row(json, id).status, `${id}: ${JSON.stringify(row(json, id))}`).toBe("pass");
    }
    expect(row(json, "immutable").evidence.join(" ")).toMatch(/read back/);
    expect(row(json, "validation").status).toBe("unknown");
    expect(json.datasets[0]!.copies.every((c) => c.counted)).toBe(true);
  }, 120_000);

  it("a second run copies only what is new, and each target keeps its own retention", async () => {
    await writeFiles(src, { "a.txt": "changed\n" });
    for (let i = 0; i < 2; i++) {
      const r = await cli(["--json", "run", "--init", "-c", config]);
      expect(r.code, describeRun(["run"], r)).toBe(0);
      const job = (JSON.parse(r.stdout) as RunJson).jobs[0]!;
      for (const c of job.copies) {
        expect(c.snapshots.length).toBe(1);
        expect(c.blobsCopied).toBeLessThan(10);
      }
    }
    // Three runs: local keeps the last 2, the NAS 3, the bucket everything (no retention configured there).
    const count = async (
      location: string,
      password: string,
      extra: Record<string, string | undefined> = {},
    ): Promise<number> => {
      const r = await runCli(["--json", "-r", location, "snapshots"], {
        env: { ...env, ...extra, BULWARK_PASSWORD: password },
      });
      expect(r.code, describeRun(["snapshots"], r)).toBe(0);
      return (JSON.parse(r.stdout) as unknown[]).length;
    };
    expect(await count(join(base, "local"), PASSWORDS.local)).toBe(2);
    expect(
      await count(sftpLocation, PASSWORDS.nas, {
        BULWARK_SFTP_KEY: process.env.SFTP_KEY,
        BULWARK_SFTP_KNOWN_HOSTS: process.env.SFTP_KNOWN_HOSTS,
      }),
    ).toBe(3);
    expect(
      await count(s3Location, PASSWORDS.offsite, {
        AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY,
      }),
    ).toBe(3);
  }, 400_000);

  it("every copy restores alone, byte-identically, with its own password (the primary gone)", async () => {
    const expected = await scanTree(src, { hash: true });
    await rename(join(base, "local"), join(base, "local.gone"));
    const copies: Array<[string, string, Record<string, string | undefined>]> = [
      [
        sftpLocation,
        PASSWORDS.nas,
        { BULWARK_SFTP_KEY: process.env.SFTP_KEY, BULWARK_SFTP_KNOWN_HOSTS: process.env.SFTP_KNOWN_HOSTS },
      ],
      [
        s3Location,
        PASSWORDS.offsite,
        {
          AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID,
          AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY,
        },
      ],
    ];
    for (const [location, password, extra] of copies) {
      const out = join(base, `restore-${copies.findIndex((c) => c[0] === location)}`);
      const r = await runCli(["-r", location, "restore", "latest", "--target", out], {
        env: { ...env, ...extra, BULWARK_PASSWORD: password },
        timeoutMs: 120_000,
      });
      expect(r.code, describeRun(["restore"], r)).toBe(0);
      const got = await scanTree(join(out, src), { hash: true });
      for (const [path, entry] of expected)
        expect(got.get(path)?.sha256, `${location} ${path}`).toBe(entry.sha256);
    }
    await rename(join(base, "local.gone"), join(base, "local"));
  }, 300_000);

  it("a target that is down turns the copies row red, naming it", async () => {
    const down = await writeConfig("down.yaml", {
      nasLocation: `sftp:${process.env.SFTP_USER}@127.0.0.1:1${process.env.SFTP_ROOT}/nowhere`,
    });
    const { r, json } = await posture(down);
    expect(r.code).toBe(20);
    const copies = row(json, "copies");
    expect(copies.status).toBe("fail");
    expect(copies.reason).toMatch(/nas/);
    expect(copies.reason).toMatch(/unreachable|could not be reached|refused/i);
    expect(r.stdout + r.stderr).not.toContain(PASSWORDS.nas);
  }, 120_000);

  it("a copy older than the RPO does not count", async () => {
    await new Promise((resolve) => setTimeout(resolve, 2500));
    const stale = await writeConfig("stale.yaml", { rpo: "2s" });
    const { r, json } = await posture(stale);
    expect(r.code).toBe(20);
    const copies = row(json, "copies");
    expect(copies.status).toBe("fail");
    expect(copies.reason).toMatch(/RPO|older/i);
  }, 120_000);

  it("two targets in one failure domain count once, with a warning", async () => {
    const shared = await writeConfig("shared.yaml", { nasFailureDomain: "server-1" });
    const { r, json } = await posture(shared);
    expect(r.code).toBe(20);
    expect(row(json, "copies").status).toBe("fail");
    expect(json.datasets[0]!.warnings.join(" ")).toMatch(/failure domain/i);
  }, 120_000);

  it("a dropped lock turns the immutability row red", async () => {
    const { ListObjectVersionsCommand, PutObjectRetentionCommand } = await import("@aws-sdk/client-s3");
    const client = await testS3Client();
    // An administrator with governance bypass shortens the retention of every snapshot object to a minute.
    const versions = await client.send(
      new ListObjectVersionsCommand({ Bucket: bucket, Prefix: "app/snapshots/" }),
    );
    const until = new Date(Date.now() + 60_000);
    for (const v of versions.Versions ?? []) {
      await client.send(
        new PutObjectRetentionCommand({
          Bucket: bucket,
          Key: v.Key,
          VersionId: v.VersionId,
          BypassGovernanceRetention: true,
          Retention: { Mode: "GOVERNANCE", RetainUntilDate: until },
        }),
      );
    }
    const { r, json } = await posture(config);
    expect(r.code).toBe(20);
    const immutable = row(json, "immutable");
    expect(immutable.status).toBe("fail");
    expect(immutable.reason ?? "").toMatch(/shorter|retention|lock/i);
    expect(row(json, "copies").status).toBe("pass");
  }, 120_000);

  it("the next run extends the locks back; posture's horizon names what a restore needs that is locked the shortest", async () => {
    const { PutObjectRetentionCommand, ListObjectVersionsCommand } = await import("@aws-sdk/client-s3");
    const client = await testS3Client();
    const runOnce = async () => {
      const r = await cli(["--json", "run", "-c", config]);
      expect(r.code, describeRun(["run"], r)).toBe(0);
      return (
        JSON.parse(r.stdout) as { jobs: { locks: { target: string; status: string; extended: number }[] }[] }
      ).jobs[0]!.locks;
    };
    // The snapshot objects the previous test shortened are extended again by the job itself.
    const locks = await runOnce();
    expect(locks.map((l) => [l.target, l.status])).toEqual([["offsite", "ok"]]);
    expect(locks[0]!.extended).toBeGreaterThan(0);
    let p = await posture(config);
    expect(row(p.json, "immutable").status).toBe("pass");
    expect(row(p.json, "immutable").evidence.join("\n")).toMatch(
      /until .*, the earliest end among the \d+ objects a restore needs \(/,
    );

    // Only the config object's lock is shortened: every snapshot needs it, so posture names it.
    const versions = await client.send(
      new ListObjectVersionsCommand({ Bucket: bucket, Prefix: "app/config" }),
    );
    for (const v of versions.Versions ?? []) {
      if (v.Key !== "app/config") continue;
      await client.send(
        new PutObjectRetentionCommand({
          Bucket: bucket,
          Key: v.Key,
          VersionId: v.VersionId,
          BypassGovernanceRetention: true,
          Retention: { Mode: "GOVERNANCE", RetainUntilDate: new Date(Date.now() + 60_000) },
        }),
      );
    }
    p = await posture(config);
    expect(p.r.code).toBe(20);
    expect(row(p.json, "immutable").reason).toMatch(
      /^the config \(needed by snapshot [0-9a-f]{8} on offsite\) is retained until .*, shorter than the policy's 1 days$/,
    );
    const again = await runOnce();
    expect(again[0]!.extended).toBeGreaterThanOrEqual(1);
    p = await posture(config);
    expect(row(p.json, "immutable").status).toBe("pass");
  }, 240_000);

  it("the catalog recorded the runs and copies; rebuilt from the repositories it finds the snapshots again", async () => {
    const runs = await cli(["--json", "catalog", "runs", "--limit", "0"]);
    expect(runs.code, describeRun(["catalog runs"], runs)).toBe(0);
    const list = JSON.parse(runs.stdout) as Array<{ kind: string; status: string }>;
    expect(list.filter((x) => x.kind === "backup").length).toBe(5);
    expect(list.filter((x) => x.kind === "copy").length).toBe(10);
    expect(list.filter((x) => x.kind === "locks").length).toBe(5);
    await rm(join(base, "state"), { recursive: true, force: true });
    const rebuilt = await cli(["--json", "catalog", "rebuild", "-c", config]);
    expect(rebuilt.code, describeRun(["catalog rebuild"], rebuilt)).toBe(0);
    const snaps = await cli(["--json", "catalog", "snapshots", "--dataset", "app"]);
    expect(snaps.code, describeRun(["catalog snapshots"], snaps)).toBe(0);
    expect((JSON.parse(snaps.stdout) as unknown[]).length).toBe(2 + 3 + 5);
  }, 120_000);
});
