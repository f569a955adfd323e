/**
 * The CLI against remote targets started on 127.0.0.1: a vault (`serve-repo`) reached with append-only and
 * admin tokens. Backup, restore and check go through the real command line, as a user would run them.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, utimes, writeFile } from "node:fs/promises";
import {
  ROOT,
  TestRepo,
  describeRun,
  makeTempDir,
  randomData,
  removeTempDirs,
  runCli,
  scanTree,
  spawnNode,
  writeFiles,
  VAULT,
  addVaultToken,
} from "./helpers.js";
import { freePort } from "../helpers/services.js";

describe("CLI against a vault (rest:)", () => {
  let base: string;
  let vault: ReturnType<typeof spawnNode> | undefined;
  let location: string;
  let appendToken: string;
  let adminToken: string;

  beforeAll(async () => {
    base = await makeTempDir("remote-cli");
    const tokens = join(base, "tokens.json");
    appendToken = await addVaultToken(tokens, "protected-host", "append-only");
    adminToken = await addVaultToken(tokens, "admin", "admin");
    const port = await freePort();
    vault = spawnNode(
      [
        VAULT,
        "serve-repo",
        "--path",
        join(base, "vault"),
        "--listen",
        `127.0.0.1:${port}`,
        "--tokens",
        tokens,
        "--init",
        "--immutable",
        "off",
      ],
      {
        timeoutMs: 600_000,
      },
    );
    location = `rest:http://127.0.0.1:${port}/`;
    // Wait until it answers.
    for (let i = 0; i < 100; i++) {
      const r = await runCli(["-r", location, "snapshots"], {
        env: { BULWARK_REST_TOKEN: appendToken, BULWARK_PASSWORD: "x" },
      });
      if (!/TRANSIENT|ECONNREFUSED|connect/i.test(r.stderr)) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  });

  afterAll(async () => {
    vault?.child.kill("SIGTERM");
    await vault?.result.catch(() => undefined);
    await removeTempDirs();
  });

  it("backs up with the append-only token, restores byte-identically, and refuses to forget", async () => {
    const src = join(base, "src");
    await mkdir(src, { recursive: true });
    await writeFiles(src, {
      "a.txt": "hello vault\n",
      "dir/b.bin": randomData(3 * 1024 * 1024),
      "dir/c.txt": "x".repeat(10_000),
    });
    const env = { BULWARK_REST_TOKEN: appendToken };
    const repo = await TestRepo.init(location, { passwordFile: join(base, "pw"), run: { env } });
    const opts = { env };
    const first = await repo.json<{ snapshot: string }>(["backup", src], opts);
    const target = join(base, "restore");
    const restore = await repo.run(["restore", first.snapshot, "--target", target], opts);
    expect(restore.code, describeRun(["restore"], restore)).toBe(0);
    const before = await scanTree(src, { hash: true });
    const after = await scanTree(join(target, src), { hash: true });
    expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
    for (const [path, entry] of before) expect(after.get(path)?.sha256, path).toBe(entry.sha256);
    const check = await repo.json<{ ok: boolean }>(["check", "--read-data"], opts);
    expect(check.ok).toBe(true);

    // The protected host's token cannot destroy what it wrote.
    const forget = await repo.run(["forget", first.snapshot, "--prune"], opts);
    expect(forget.code).not.toBe(0);
    expect(forget.stderr).toMatch(/append-only|refused/);
    const listed = await repo.json<{ id: string }[]>(["snapshots"], opts);
    expect(listed.map((s) => s.id)).toContain(first.snapshot);

    // The admin token, kept off the protected host, can.
    const adminForget = await repo.run(["forget", first.snapshot, "--prune"], {
      env: { BULWARK_REST_TOKEN: adminToken },
    });
    expect(adminForget.code, describeRun(["forget"], adminForget)).toBe(0);
  });

  it("posture counts the vault as append-only from what the vault says of the token in use", async () => {
    const src = join(base, "posture-src");
    await writeFiles(src, { "p.txt": "posture\n" });
    const pw = join(base, "pw"); // the repository's password file, written by the first test
    const repo = new TestRepo(location, pw, "");
    await repo.json(["backup", src], { env: { BULWARK_REST_TOKEN: appendToken } });
    const config = join(base, "vault-posture.yaml");
    const write = (tokenVar: string): Promise<void> =>
      writeFile(
        config,
        [
          "version: 1",
          "targets:",
          "  vault:",
          `    location: ${location}`,
          "    labels: { medium: vault, site: dc2, offsite: true, failureDomain: dc2, isolation: append-only }",
          `    password: { file: ${pw} }`,
          `    credentials: { token: { env: ${tokenVar} } }`,
          "datasets:",
          `  app: { sources: [{ type: files, paths: [${src}] }] }`,
          "policies:",
          "  p: { rule: { copies: 1, immutableOrIsolated: 1 }, productionCounts: false, rpo: 24h }",
          "jobs:",
          "  j: { dataset: app, policy: p, primary: vault }",
          "",
        ].join("\n"),
      );
    type Posture = {
      datasets: { rows: { id: string; status: string; evidence: string[]; reason?: string }[] }[];
    };
    const immutableRow = async (): Promise<{
      code: number | null;
      row: Posture["datasets"][0]["rows"][0];
    }> => {
      const r = await runCli(["--json", "posture", "-c", config], {
        env: { HOST_TOKEN: appendToken, ADMIN_TOKEN: adminToken },
      });
      const row = (JSON.parse(r.stdout) as Posture).datasets[0]!.rows.find((x) => x.id === "immutable")!;
      return { code: r.code, row };
    };
    await write("HOST_TOKEN");
    const asHost = await immutableRow();
    expect(asHost.row.status, JSON.stringify(asHost.row)).toBe("pass");
    expect(asHost.row.evidence.join(" ")).toMatch(/append-only, read back/);
    expect(asHost.code).toBe(0);
    await write("ADMIN_TOKEN");
    const asAdmin = await immutableRow();
    expect(asAdmin.row.status).toBe("fail");
    expect(JSON.stringify(asAdmin.row)).toMatch(/may delete/);
    expect(asAdmin.code).toBe(20);
  });

  it("a wrong token is an authentication error that names the target and not the token", async () => {
    const r = await runCli(["-r", location, "snapshots"], {
      env: { BULWARK_REST_TOKEN: "not-a-token", BULWARK_PASSWORD: "x" },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/127\.0\.0\.1/);
    expect(r.stderr).not.toContain("not-a-token");
  });
});

describe("CLI against S3 with Object Lock (s3:)", () => {
  let base: string;
  let bucket: string;
  let env: Record<string, string>;
  let startedHere = false;
  const CEPH = join(ROOT, "scripts", "services", "ceph.sh");

  beforeAll(async () => {
    base = await makeTempDir("remote-cli-s3");
    if (!process.env.S3_ENDPOINT) {
      const { execFile } = await import("node:child_process");
      const { promisify } = await import("node:util");
      const { stdout, stderr } = await promisify(execFile)("bash", [CEPH, "up"], { timeout: 280_000 });
      for (const line of stdout.split("\n")) {
        const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line.trim());
        if (m?.[1] && m[2] !== undefined) process.env[m[1]] = m[2];
      }
      startedHere = !stderr.includes("already running");
    }
    const { S3Client, CreateBucketCommand } = await import("@aws-sdk/client-s3");
    const client = new S3Client({
      endpoint: process.env.S3_ENDPOINT,
      region: process.env.AWS_REGION ?? "us-east-1",
      forcePathStyle: true,
      requestChecksumCalculation: "WHEN_REQUIRED",
    });
    bucket = `bulwark-cli-${Date.now().toString(36)}`;
    await client.send(new CreateBucketCommand({ Bucket: bucket, ObjectLockEnabledForBucket: true }));
    env = {};
    for (const k of [
      "S3_ENDPOINT",
      "AWS_ACCESS_KEY_ID",
      "AWS_SECRET_ACCESS_KEY",
      "AWS_REGION",
      "AWS_REQUEST_CHECKSUM_CALCULATION",
    ]) {
      const v = process.env[k];
      if (v !== undefined) env[k] = v;
    }
    // Governance, one day: the test cluster can still be cleaned up; the refusal is the same as compliance.
    env.BULWARK_S3_IMMUTABLE = "governance:1";
  }, 300_000);

  afterAll(async () => {
    if (startedHere) {
      const { execFile } = await import("node:child_process");
      const { promisify } = await import("node:util");
      await promisify(execFile)("bash", [CEPH, "down"]).catch(() => undefined);
    }
    await removeTempDirs();
  });

  it("backs up into a locked bucket, restores byte-identically, and the data cannot be deleted", async () => {
    const src = join(base, "src");
    await mkdir(src, { recursive: true });
    await writeFiles(src, { "a.txt": "hello object lock\n", "b.bin": randomData(2 * 1024 * 1024) });
    const location = `s3:${process.env.S3_ENDPOINT}/${bucket}/repo`;
    const repo = await TestRepo.init(location, { passwordFile: join(base, "pw"), run: { env } });
    const first = await repo.json<{ snapshot: string }>(["backup", src], { env });
    const target = join(base, "restore");
    const restore = await repo.run(["restore", "latest", "--target", target], { env });
    expect(restore.code, describeRun(["restore"], restore)).toBe(0);
    const before = await scanTree(src, { hash: true });
    const after = await scanTree(join(target, src), { hash: true });
    for (const [path, entry] of before) expect(after.get(path)?.sha256, path).toBe(entry.sha256);
    expect((await repo.json<{ ok: boolean }>(["check", "--read-data"], { env })).ok).toBe(true);

    // With the backup credentials, forgetting a snapshot whose file is under retention is refused.
    const forget = await repo.run(["forget", first.snapshot], { env });
    expect(forget.code).not.toBe(0);
    expect(forget.stderr).toMatch(/retention|lock/i);
    const still = await repo.json<{ id: string }[]>(["snapshots"], { env });
    expect(still.map((s) => s.id)).toContain(first.snapshot);

    // A retention policy expects locks: the locked snapshot stays, is listed, and the command succeeds.
    await repo.json(["backup", src], { env });
    const byPolicy = await repo.json<{ removed: string[]; locked: { id: string }[] }>(
      ["forget", "--keep-last", "1"],
      { env },
    );
    expect(byPolicy.removed).toEqual([]);
    expect(byPolicy.locked.map((l) => l.id)).toEqual([first.snapshot]);
    expect((await repo.json<{ id: string }[]>(["snapshots"], { env })).map((s) => s.id)).toContain(
      first.snapshot,
    );

    // Retention follows the data: everything kept snapshots need is extended to the new period.
    type Report = { checked: number; drift: unknown[]; extended: number; errors: unknown[] };
    const drift = await repo.json<Report>(["retention", "--days", "2", "--mode", "governance", "--dry-run"], {
      env,
    });
    expect(drift.checked).toBeGreaterThan(3);
    expect(drift.drift.length).toBe(drift.checked);
    const extended = await repo.json<Report>(["retention", "--days", "2", "--mode", "governance"], { env });
    expect(extended.extended).toBe(drift.drift.length);
    expect(extended.errors).toEqual([]);
    const settled = await repo.json<Report>(
      ["retention", "--days", "2", "--mode", "governance", "--dry-run"],
      {
        env,
      },
    );
    expect(settled.drift).toEqual([]);
  });
});

describe("CLI against an SFTP server (sftp:)", () => {
  let base: string;
  let env: Record<string, string>;
  let location: string;
  const SSHD = join(ROOT, "scripts", "services", "sshd.sh");

  beforeAll(async () => {
    base = await makeTempDir("remote-cli-sftp");
    if (!process.env.SFTP_KEY) {
      const { execFile } = await import("node:child_process");
      const { promisify } = await import("node:util");
      const { stdout } = await promisify(execFile)("bash", [SSHD, "up"], { timeout: 280_000 });
      for (const line of stdout.split("\n")) {
        const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line.trim());
        if (m?.[1] && m[2] !== undefined) process.env[m[1]] = m[2];
      }
    }
    env = {
      BULWARK_SFTP_KEY: process.env.SFTP_KEY ?? "",
      BULWARK_SFTP_KNOWN_HOSTS: process.env.SFTP_KNOWN_HOSTS ?? "",
    };
    location = `sftp:${process.env.SFTP_USER}@127.0.0.1:${process.env.SFTP_PORT}${process.env.SFTP_ROOT}/cli-${Date.now().toString(36)}`;
  }, 300_000);

  afterAll(removeTempDirs);

  it("init, backup, restore byte-identically and check over SFTP", async () => {
    const src = join(base, "src");
    await mkdir(src, { recursive: true });
    await writeFiles(src, { "a.txt": "over ssh\n", "big.bin": randomData(5 * 1024 * 1024) });
    const repo = await TestRepo.init(location, { passwordFile: join(base, "pw"), run: { env } });
    await repo.json(["backup", src], { env });
    const target = join(base, "restore");
    const restore = await repo.run(["restore", "latest", "--target", target], { env });
    expect(restore.code, describeRun(["restore"], restore)).toBe(0);
    const before = await scanTree(src, { hash: true });
    const after = await scanTree(join(target, src), { hash: true });
    for (const [path, entry] of before) expect(after.get(path)?.sha256, path).toBe(entry.sha256);
    expect((await repo.json<{ ok: boolean }>(["check", "--read-data"], { env })).ok).toBe(true);
  });

  it("refuses a server whose host key is not known, naming the fingerprint", async () => {
    const r = await runCli(["-r", location, "snapshots"], {
      env: {
        BULWARK_SFTP_KEY: env.BULWARK_SFTP_KEY,
        BULWARK_SFTP_KNOWN_HOSTS: "/dev/null",
        BULWARK_PASSWORD: "x",
      },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/SHA256:/);
    // The hint says what to set, in the environment and in bulwark.yaml.
    expect(r.stderr).toMatch(/^hint: .*BULWARK_SFTP_HOST_KEY=SHA256:/m);
    expect(r.stderr).toContain("credentials.hostKey");
  });

  it("without a key file, authenticates with a running ssh-agent (SSH_AUTH_SOCK)", async () => {
    const socket = join(base, "agent.sock");
    const agent = spawn("ssh-agent", ["-D", "-a", socket], { stdio: "ignore" });
    try {
      for (let i = 0; i < 100 && !existsSync(socket); i++) await sleep(50);
      const { execFile } = await import("node:child_process");
      const { promisify } = await import("node:util");
      await promisify(execFile)("ssh-add", ["-q", env.BULWARK_SFTP_KEY ?? ""], {
        env: { ...process.env, SSH_AUTH_SOCK: socket },
      });
      // An empty home: no default key file to fall back on, only the agent.
      const home = join(base, "empty-home");
      await mkdir(home, { recursive: true });
      const agentEnv = {
        BULWARK_SFTP_KEY: undefined,
        BULWARK_SFTP_KNOWN_HOSTS: env.BULWARK_SFTP_KNOWN_HOSTS,
        SSH_AUTH_SOCK: socket,
        HOME: home,
      };
      const r = await runCli(["-r", location, "-p", join(base, "pw"), "--json", "snapshots"], {
        env: agentEnv,
      });
      expect(r.code, describeRun(["snapshots"], r)).toBe(0);
      expect((JSON.parse(r.stdout) as unknown[]).length).toBeGreaterThan(0);
      // Without the agent there is nothing to authenticate with, and the message says what to set.
      const none = await runCli(["-r", location, "-p", join(base, "pw"), "snapshots"], {
        env: { ...agentEnv, SSH_AUTH_SOCK: undefined },
      });
      expect(none.code).toBe(1);
      expect(none.stderr).toContain("no private key found");
      expect(none.stderr).toMatch(/^hint: set BULWARK_SFTP_KEY/m);
    } finally {
      agent.kill();
    }
  });

  it("prune removes the temp files an interrupted upload left, and only old ones", async (ctx) => {
    // The server's files are on this machine (sshd.sh): plant what a killed upload leaves behind.
    const root = process.env.SFTP_ROOT ?? "";
    const dir = join(root, location.slice(location.indexOf(root) + root.length));
    ctx.skip(!existsSync(dir), `the SFTP server's files (${dir}) are not on this machine`);
    const killed = join(dir, "data", "7e", ".tmp-killed-upload");
    const live = join(dir, "data", "7f", ".tmp-live-upload");
    await writeFile(killed, "partial");
    const old = new Date(Date.now() - 2 * 3600_000);
    await utimes(killed, old, old);
    await writeFile(live, "partial");
    const r = await runCli(["-r", location, "-p", join(base, "pw"), "--json", "prune"], { env });
    expect(r.code, describeRun(["prune"], r)).toBe(0);
    expect((JSON.parse(r.stdout) as { tempFilesRemoved: number }).tempFilesRemoved).toBe(1);
    expect(existsSync(killed)).toBe(false);
    expect(existsSync(live)).toBe(true);
  });

  it("the next backup removes them too (src/ops/leftovers.ts), and only old ones", async (ctx) => {
    const root = process.env.SFTP_ROOT ?? "";
    const dir = join(root, location.slice(location.indexOf(root) + root.length));
    ctx.skip(!existsSync(dir), `the SFTP server's files (${dir}) are not on this machine`);
    const killed = join(dir, "data", "7e", ".tmp-killed-by-sigkill");
    const live = join(dir, "index", ".tmp-another-writer");
    await writeFile(killed, "partial");
    const old = new Date(Date.now() - 2 * 3600_000);
    await utimes(killed, old, old);
    await writeFile(live, "partial");
    const src = join(base, "src");
    const args = ["-r", location, "-p", join(base, "pw"), "backup", src];
    const r = await runCli(args, { env });
    expect(r.code, describeRun(args, r)).toBe(0);
    expect(r.stdout).toContain("1 temporary file of interrupted saves");
    expect(existsSync(killed)).toBe(false);
    expect(existsSync(live)).toBe(true);
  });
});

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
