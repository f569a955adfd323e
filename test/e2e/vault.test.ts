/**
 * The vault in its own network namespace, reached over a veth pair (scripts/services/vault-netns.sh), the
 * built server (`node dist/cli/vault-main.js serve-repo`) storing on a tmpfs that exists only in the server's
 * private mount namespace: this process has no file system path to the vault's files, only HTTPS.
 *
 * With the append-only token a protected host would hold, the test backs up a tree through the library
 * (Repository, archiver, packs, index, snapshot, locks), then tries to delete, overwrite or shorten the
 * retention (--retention-days) of every stored file, then restores and compares byte for byte. Needs root, iproute2, util-linux and openssl; outside CI
 * a machine without them skips, under CI=true it fails.
 *
 * Then the vault's retention through the command line (`bulwark serve-repo --retention-days`, `backup`,
 * `forget --prune`, `retention`), on 127.0.0.1 with its files on a file system that takes chattr +i
 * (test/backend/chattr-dir.ts): files stay immutable and undeletable while retained, the vault releases them
 * itself, and only then does an admin prune free them. Needs root; skipped without it outside CI.
 */

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, symlink } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  bufferSource,
  FILE_TYPES,
  type FileHandle,
  type FileInfo,
  type FileType,
} from "../../src/backend/backend.js";
import { openRestBackend, type RestBackendOptions } from "../../src/backend/rest/rest-backend.js";
import { hasCode } from "../../src/core/errors.js";
import { RepoLock } from "../../src/repository/lock.js";
import { Repository } from "../../src/repository/repository.js";
import { WorkerPool } from "../../src/repository/worker-pool.js";
import { backup } from "../../src/snapshot/archiver.js";
import { restore } from "../../src/snapshot/restorer.js";
import { loadAllSnapshots } from "../../src/snapshot/snapshot.js";
import { check } from "../../src/verify/checker.js";
import { addToken } from "../../src/vault/tokens.js";
import { chattrCapableDir, type ChattrDir } from "../backend/chattr-dir.js";
import {
  describeRun,
  makeTempDir,
  MiB,
  randomData,
  removeTempDirs,
  restoredPath,
  ROOT,
  runCli,
  scanTree,
  spawnNode,
  TestRepo,
  writeFiles,
  type RunOptions,
} from "./helpers.js";

const SCRIPT = join(ROOT, "scripts", "services", "vault-netns.sh");
const SERVER = join(ROOT, "dist", "cli", "vault-main.js");
const PASSWORD = "vault e2e password";
const WEAK_KDF = { N: 2 ** 10, r: 8, p: 1 };

// Unique per run, so parallel runs on one machine do not meet: the /30 is inside 10.231.0.0/16.
const slot = (process.pid % 200) + 20;
const NET = {
  VAULT_NETNS: `bulwark-vault-${process.pid}`,
  VAULT_VETH: `bwv${process.pid % 100_000}`,
  VAULT_HOST_IP: `10.231.${slot}.1`,
  VAULT_NS_IP: `10.231.${slot}.2`,
};
const PORT = 8443;
/** Every stored file is retained this long: the attack also tries to shorten it. */
const RETENTION_DAYS = 7;
/** The vault's disk: room for the backup, not for the oversized upload of the full-disk test. */
const VAULT_DISK = { VAULT_TMPFS_SIZE: "48m" };

function missingPrerequisites(): string[] {
  const missing: string[] = [];
  if (process.platform !== "linux") return ["network namespaces need Linux"];
  if (process.getuid?.() !== 0) missing.push("root (to create a network namespace)");
  for (const [tool, args] of [
    ["ip", ["-V"]],
    ["unshare", ["--version"]],
    ["nsenter", ["--version"]],
    ["openssl", ["version"]],
  ] as const) {
    if (spawnSync(tool, [...args], { stdio: "ignore" }).status !== 0) missing.push(`\`${tool}\``);
  }
  if (
    missing.length === 0 &&
    spawnSync("unshare", ["--net", "--mount", "true"], { stdio: "ignore" }).status !== 0
  ) {
    missing.push("permission to create namespaces (CAP_SYS_ADMIN)");
  }
  if (!existsSync(SERVER)) missing.push(`${SERVER} (run \`npm run build\`)`);
  return missing;
}

const missing = missingPrerequisites();
// A skip outside CI is listed by scripts/test.sh; under CI a missing prerequisite fails in beforeAll.
const skip = missing.length > 0 && process.env.CI !== "true";

function sh(command: string, args: string[], env: Record<string, string> = {}): string {
  const r = spawnSync(command, args, { env: { ...process.env, ...env }, encoding: "utf8" });
  if (r.status !== 0) {
    throw new Error(`${command} ${args.join(" ")} failed (${r.status ?? r.signal}): ${r.stderr}${r.stdout}`);
  }
  return r.stdout;
}

describe.skipIf(skip)("vault in a network namespace, reached over a veth pair", () => {
  let server: ChildProcess | undefined;
  let serverLog = "";
  let url = "";
  let immutable = false;
  let tlsCa: Buffer;
  let appendOnlyToken = "";
  let vaultDir = "";
  let source = "";
  let pool: WorkerPool | undefined;
  let snapshotTree = "";

  const backendOptions = (): RestBackendOptions => ({ token: appendOnlyToken, ca: tlsCa });
  /** Runs a command in the vault's mount namespace: what an operator on the vault host sees. */
  const onVault = (args: string[]): ReturnType<typeof spawnSync> =>
    spawnSync("nsenter", ["-t", String(server?.pid ?? 0), "-m", "--", ...args], { encoding: "utf8" });

  beforeAll(async () => {
    if (missing.length > 0) throw new Error(`the vault e2e test cannot run: missing ${missing.join(", ")}`);
    const work = await makeTempDir("vault");
    // The vault's data directory: on the host an empty mount point that this test only ever lists.
    vaultDir = join(work, "vault-data");
    const config = join(work, "config");
    await mkdir(config);
    const tokens = join(config, "tokens.json");
    // Made by the command an operator runs, which prints the token once and stores only its hash.
    const added = JSON.parse(
      sh(process.execPath, [
        SERVER,
        "--json",
        "serve-repo",
        "token",
        "add",
        "--tokens",
        tokens,
        "--name",
        "protected-host",
      ]),
    ) as { token: string; role: string };
    expect(added.role).toBe("append-only");
    appendOnlyToken = added.token;
    expect(await readFile(tokens, "utf8")).not.toContain(appendOnlyToken);
    await addToken(tokens, "ops", "admin"); // exists on the vault, never used from the protected host

    const cert = join(config, "cert.pem");
    const key = join(config, "key.pem");
    sh("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=bulwark-vault",
      "-addext", `subjectAltName=IP:${NET.VAULT_NS_IP}`,
    ]); // prettier-ignore
    tlsCa = await readFile(cert);

    sh("bash", [SCRIPT, "up"], NET);
    server = spawn(
      "bash",
      [
        SCRIPT, "run", vaultDir, "--", process.execPath, SERVER, "--json", "serve-repo", "--init",
        "--path", join(vaultDir, "repo"), "--listen", `${NET.VAULT_NS_IP}:${PORT}`, "--tokens", tokens,
        "--tls-cert", cert, "--tls-key", key, "--retention-days", String(RETENTION_DAYS),
      ], // prettier-ignore
      { env: { ...process.env, ...NET, ...VAULT_DISK }, stdio: ["ignore", "pipe", "pipe"] },
    );
    const started = new Promise<{ url: string; immutable: boolean }>((resolve, reject) => {
      let stdout = "";
      const timer = setTimeout(
        () => reject(new Error(`the vault did not start in 30 s:\n${serverLog}`)),
        30_000,
      );
      server?.stdout?.setEncoding("utf8").on("data", (text: string) => {
        stdout += text;
        try {
          const parsed = JSON.parse(stdout) as { url: string; immutable: boolean };
          clearTimeout(timer);
          resolve(parsed);
        } catch {
          // not all of it yet
        }
      });
      server?.stderr?.setEncoding("utf8").on("data", (text: string) => (serverLog += text));
      server?.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`the vault exited (${code}) before it served:\n${serverLog}`));
      });
    });
    ({ url, immutable } = await started);
    expect(url).toBe(`https://${NET.VAULT_NS_IP}:${PORT}/`);
    if (process.env.BULWARK_E2E_VERBOSE === "1")
      process.stderr.write(`vault: immutable files ${immutable}\n`);

    source = join(work, "source");
    await writeFiles(source, {
      "docs/a.txt": "alpha\n",
      "docs/empty": "",
      "docs/deep/er/b.bin": randomData(300 * 1024),
      "media/big.bin": randomData(6 * MiB),
      "media/repeated.bin": Buffer.concat([randomData(MiB), randomData(MiB)]),
    });
    await symlink("../docs/a.txt", join(source, "media", "link"));
  }, 120_000);

  afterAll(async () => {
    await pool?.close();
    if (server !== undefined && server.exitCode === null) {
      const exited = new Promise<void>((resolve) => server?.once("exit", () => resolve()));
      server.kill("SIGTERM");
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5000))]);
      if (server.exitCode === null) server.kill("SIGKILL");
    }
    // Kills anything left in the namespace, deletes it and the veth pair; the tmpfs goes with its namespace.
    if (!skip) spawnSync("bash", [SCRIPT, "down"], { env: { ...process.env, ...NET }, stdio: "ignore" });
    await removeTempDirs();
  });

  it("a backup with the append-only token lands in the vault, and only there", async () => {
    const backend = await openRestBackend(`rest:${url}`, backendOptions());
    try {
      const repo = await Repository.init(backend, PASSWORD, { kdf: WEAK_KDF, packSize: 1 * MiB });
      pool = new WorkerPool(repo);
      const lock = await RepoLock.acquire(repo, false);
      const result = await backup(repo, pool, { paths: [source] });
      await lock.release();
      snapshotTree = result.snapshot.tree;
      await pool.close();
      pool = undefined;

      const stored = await listAll(backend);
      expect(stored.get("config")).toHaveLength(1);
      expect(stored.get("key")).toHaveLength(1);
      expect(stored.get("snapshot")?.map((f) => f.name)).toEqual([result.id]);
      expect(stored.get("index")?.length).toBeGreaterThan(0);
      expect(stored.get("pack")?.length).toBeGreaterThan(5); // 1 MiB packs for ~9.3 MiB of data
      expect(stored.get("lock")).toEqual([]); // released: deleting a lock is what append-only allows
    } finally {
      await backend.close();
    }

    // From the host the data directory is an empty mount point; on the vault it holds the repository.
    expect(await readdir(vaultDir)).toEqual([]);
    const files = onVault(["find", join(vaultDir, "repo"), "-type", "f"]);
    expect(files.status, String(files.stderr)).toBe(0);
    const paths = String(files.stdout).trim().split("\n");
    expect(paths.some((p) => p.includes("/data/"))).toBe(true);
    if (immutable) {
      const flags = onVault(["lsattr", ...paths]);
      expect(flags.status, String(flags.stderr)).toBe(0);
      for (const line of String(flags.stdout).trim().split("\n")) expect(line).toMatch(/^\S*i\S*\s/);
    }
  });

  it("with the append-only token every delete, overwrite and shortening is refused, and nothing changes", async () => {
    const backend = await openRestBackend(`rest:${url}`, backendOptions());
    try {
      expect(backend.capabilities.retentionModes).toEqual(["compliance"]);
      const before = await listAll(backend);
      let attempts = 0;
      for (const [type, files] of before) {
        for (const file of files) {
          const h: FileHandle = { type, name: file.name };
          const del = await backend.remove(h).then(() => undefined, (e: unknown) => e); // prettier-ignore
          expect(hasCode(del, "RETENTION_LOCKED"), `delete ${type}: ${String(del)}`).toBe(true);
          const over = await backend.save(h, bufferSource(randomBytes(64))).then(() => undefined, (e: unknown) => e); // prettier-ignore
          expect(hasCode(over, "RETENTION_LOCKED"), `overwrite ${type}: ${String(over)}`).toBe(true);
          // Asking for a retention that ends now changes nothing: a lock is never shortened.
          const held = await backend.getRetention?.(h);
          expect(held?.until.getTime() ?? 0, `retention of ${type}`).toBeGreaterThan(
            Date.now() + (RETENTION_DAYS - 1) * 86_400_000,
          );
          await backend.extendRetention?.(h, { mode: "governance", until: new Date() });
          expect((await backend.getRetention?.(h))?.until.getTime(), `retention of ${type}`).toBe(
            held?.until.getTime(),
          );
          attempts += 3;
        }
      }
      expect(attempts).toBe(3 * [...before.values()].flat().length);
      expect(attempts).toBeGreaterThanOrEqual(24); // config, key, snapshot, index files and packs
      expect(await listAll(backend)).toEqual(before);
    } finally {
      await backend.close();
    }
    if (immutable) {
      // Even root on the vault host cannot remove a stored file without first clearing the flag.
      const found = onVault(["find", join(vaultDir, "repo", "data"), "-type", "f"]);
      const pack = String(found.stdout).trim().split("\n")[0] ?? "";
      const rm = onVault(["rm", "-f", pack]);
      expect(rm.status).not.toBe(0);
      expect(String(rm.stderr)).toMatch(/not permitted/i);
    }
  });

  it("a wrong token and an unverified certificate are refused", async () => {
    const wrong = await openRestBackend(`rest:${url}`, { token: "bwv_wrong", ca: tlsCa }).catch(
      (e: unknown) => e,
    );
    expect(hasCode(wrong, "AUTH"), String(wrong)).toBe(true);
    const noCa = await openRestBackend(`rest:${url}`, { token: appendOnlyToken }).catch((e: unknown) => e);
    expect(hasCode(noCa, "AUTH"), String(noCa)).toBe(true);
    expect(String(noCa)).not.toContain(appendOnlyToken);
  });

  it("a full vault disk is a clear error naming the vault, and loses nothing stored", async () => {
    const backend = await openRestBackend(`rest:${url}`, backendOptions());
    try {
      const before = await listAll(backend);
      const h: FileHandle = { type: "pack", name: randomBytes(32).toString("hex") };
      const size = 64 * MiB;
      const err: unknown = await backend
        .save(h, {
          length: size,
          // eslint-disable-next-line @typescript-eslint/require-await
          async *open() {
            for (let sent = 0; sent < size; sent += MiB) yield randomBytes(MiB);
          },
        })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(hasCode(err, "IO"), String(err)).toBe(true);
      expect(String(err)).toContain("out of disk space");
      expect(String(err)).toContain(`rest:${url}`);
      expect(await listAll(backend)).toEqual(before);
    } finally {
      await backend.close();
    }
  });

  it("a restore afterwards is byte-identical, and check reads every pack without errors", async () => {
    const backend = await openRestBackend(`rest:${url}`, backendOptions());
    try {
      const repo = await Repository.open(backend, PASSWORD);
      await repo.loadIndex();
      const snapshots = await loadAllSnapshots(repo);
      expect(snapshots.map((s) => s.tree)).toEqual([snapshotTree]);
      pool = new WorkerPool(repo);
      const target = await makeTempDir("vault-restore");
      const result = await restore(repo, pool, snapshotTree, { target });
      expect(result.errors).toEqual([]);
      const original = await scanTree(source);
      const restored = await scanTree(restoredPath(target, source));
      expect([...restored.keys()]).toEqual([...original.keys()]);
      for (const [rel, entry] of original) {
        const copy = restored.get(rel);
        expect(
          { type: copy?.type, size: copy?.size, sha256: copy?.sha256, link: copy?.linkTarget },
          rel,
        ).toEqual({
          type: entry.type,
          size: entry.size,
          sha256: entry.sha256,
          link: entry.linkTarget,
        });
      }
      const checked = await check(repo, pool, { readData: { kind: "all" } });
      expect(checked.findings.filter((f) => f.severity === "error")).toEqual([]);
      expect(checked.stats.packsRead).toBeGreaterThan(5);
    } finally {
      await pool?.close();
      pool = undefined;
      await backend.close();
    }
  });
});

async function listAll(backend: {
  list(type: FileType): AsyncIterable<FileInfo>;
}): Promise<Map<FileType, FileInfo[]>> {
  const out = new Map<FileType, FileInfo[]>();
  for (const type of FILE_TYPES) {
    const files: FileInfo[] = [];
    for await (const f of backend.list(type)) files.push(f);
    out.set(
      type,
      files.sort((a, b) => a.name.localeCompare(b.name)),
    );
  }
  return out;
}

describe("vault retention through the command line", () => {
  const CLI_MAIN = join(ROOT, "dist", "cli", "main.js");
  /** Long enough for the backups and the refused prunes, short enough to wait for. */
  const RETENTION_S = 30;
  let where: ChattrDir = { reason: "not probed yet" };
  let vault: ReturnType<typeof spawnNode> | undefined;
  let vaultLog = "";
  let repoDir = "";
  let location = "";
  let appendOnly: RunOptions;
  let admin: RunOptions;
  let base = "";

  beforeAll(async () => {
    where = await chattrCapableDir();
    if ("reason" in where) {
      if (process.env.CI === "true") throw new Error(`cannot test the vault's retention: ${where.reason}`);
      return;
    }
    if (!existsSync(CLI_MAIN)) throw new Error(`${CLI_MAIN} is missing: run \`npm run build\``);
    base = await makeTempDir("vault-retention", where.dir);
    const tokens = join(base, "tokens.json");
    const token = async (name: string, role: string): Promise<string> => {
      const r = await runCli(["--json", "serve-repo", "token", "add", "--tokens", tokens, "--name", name, "--role", role]); // prettier-ignore
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { token: string }).token;
    };
    appendOnly = { env: { BULWARK_REST_TOKEN: await token("protected-host", "append-only") } };
    admin = { env: { BULWARK_REST_TOKEN: await token("ops", "admin") } };
    repoDir = join(base, "vault");
    const port = 20_000 + (process.pid % 20_000);
    vault = spawnNode(
      [
        CLI_MAIN, "--json", "serve-repo", "--init", "--path", repoDir, "--listen", `127.0.0.1:${port}`,
        "--tokens", tokens, "--immutable", "require", "--retention-days", String(RETENTION_S / 86_400),
        "--sweep-minutes", "0.02",
      ], // prettier-ignore
      { timeoutMs: 600_000 },
    );
    // Buffers, as spawnNode collects them too.
    vault.child.stderr.on("data", (piece: Buffer) => (vaultLog += piece.toString("utf8")));
    let stdout = "";
    vault.child.stdout.on("data", (piece: Buffer) => (stdout += piece.toString("utf8")));
    for (let i = 0; i < 300 && !stdout.includes("}"); i++) await sleep(100);
    const started = JSON.parse(stdout) as { url: string; immutable: boolean; retentionDays: number };
    expect(started).toMatchObject({ immutable: true, retentionDays: RETENTION_S / 86_400 });
    location = `rest:${started.url}`;
  }, 120_000);

  afterAll(async () => {
    if (vault !== undefined && vault.child.exitCode === null) vault.child.kill("SIGKILL");
    await vault?.result.catch(() => undefined);
    if ("dir" in where) spawnSync("chattr", ["-R", "-i", base], { stdio: "ignore" });
    await removeTempDirs();
    if ("cleanup" in where) await where.cleanup();
  });

  it("retained files cannot be deleted by any token; the vault releases them, then an admin prune frees them", async (ctx) => {
    if ("reason" in where) ctx.skip(true, where.reason);
    const src = join(base, "src");
    await writeFiles(src, { "kept.txt": "kept\n", "gone.bin": randomData(3 * MiB) });
    const repo = await TestRepo.init(location, { passwordFile: join(base, "pw"), run: appendOnly });
    const first = await repo.json<{ snapshot: string }>(["backup", src], appendOnly);
    await writeFiles(src, { "gone.bin": randomData(2 * MiB) });
    const second = await repo.json<{ snapshot: string }>(["backup", src], appendOnly);
    const wroteLast = Date.now();

    // Every stored file but locks is immutable on the vault's disk.
    const stored = await filesUnder(repoDir);
    expect(stored.length).toBeGreaterThan(6);
    expect(immutableOf(stored)).toEqual(stored.map(() => true));

    // The protected host's token can never delete; the admin's cannot while the retention runs.
    const byHost = await repo.run(["forget", first.snapshot, "--prune"], appendOnly);
    expect(byHost.code, describeRun(["forget"], byHost)).toBe(1);
    expect(byHost.stderr).toContain(location);
    expect(byHost.stderr).toContain("append-only");
    const early = await repo.run(["forget", first.snapshot, "--prune"], admin);
    expect(early.code, describeRun(["forget"], early)).toBe(1);
    expect(early.stderr).toMatch(/was refused by the vault: it is retained until \d{4}-/);
    expect(early.stderr).toContain("hint: the vault releases it after");
    for (const r of [byHost, early]) {
      for (const secret of [appendOnly.env?.BULWARK_REST_TOKEN, admin.env?.BULWARK_REST_TOKEN]) {
        expect(r.stdout + r.stderr).not.toContain(secret);
      }
    }
    const snapshots = await repo.json<{ id: string }[]>(["snapshots"], appendOnly);
    expect(snapshots.map((s) => s.id).sort()).toEqual([first.snapshot, second.snapshot].sort());

    // Once the retention ends the vault clears the flag by itself (its sweep), without being asked.
    await sleep(wroteLast + RETENTION_S * 1000 - Date.now());
    const deadline = Date.now() + 30_000;
    while (immutableOf(stored).some(Boolean) && Date.now() < deadline) await sleep(250);
    expect(immutableOf(stored)).toEqual(stored.map(() => false));
    expect(vaultLog).toMatch(/sweep: released \d+ files whose retention ended/);

    const stillRefused = await repo.run(["forget", first.snapshot, "--prune"], appendOnly);
    expect(stillRefused.code).toBe(1);
    expect(stillRefused.stderr).toContain("append-only");
    type ForgetJson = { removed: string[]; prune: { packsToDelete: string[]; packsToRepack: string[]; locked: unknown[] } }; // prettier-ignore
    const freed = await repo.json<ForgetJson>(["forget", first.snapshot, "--prune"], admin);
    expect(freed.removed).toEqual([first.snapshot]);
    expect(freed.prune.locked).toEqual([]);
    expect(freed.prune.packsToDelete.length + freed.prune.packsToRepack.length).toBeGreaterThan(0);

    // What is left restores byte for byte and checks clean.
    const target = join(base, "restore");
    const restored = await repo.run(["restore", second.snapshot, "--target", target], appendOnly);
    expect(restored.code, describeRun(["restore"], restored)).toBe(0);
    const original = await scanTree(src);
    const copy = await scanTree(restoredPath(target, src));
    for (const [rel, entry] of original) expect(copy.get(rel)?.sha256, rel).toBe(entry.sha256);
    expect((await repo.json<{ ok: boolean }>(["check", "--read-data"], appendOnly)).ok).toBe(true);

    // Retention follows the data: `bulwark retention` (with the host's token) protects what is kept again.
    type Report = { checked: number; drift: unknown[]; extended: number; errors: unknown[] };
    const extended = await repo.json<Report>(["retention", "--days", "1"], appendOnly);
    expect(extended.errors).toEqual([]);
    expect(extended.extended).toBe(extended.checked);
    expect((await repo.json<Report>(["retention", "--days", "1", "--dry-run"], appendOnly)).drift).toEqual(
      [],
    );
    const kept = await filesUnder(repoDir);
    expect(immutableOf(kept)).toEqual(kept.map(() => true));
    const protectedAgain = await repo.run(["forget", second.snapshot], admin);
    expect(protectedAgain.code).toBe(1);
    expect(protectedAgain.stderr).toContain("retained until");
  }, 240_000);

  it("stopping the vault says plainly that it stopped", async (ctx) => {
    if ("reason" in where) ctx.skip(true, where.reason);
    vault?.child.kill("SIGTERM");
    const result = await vault?.result;
    expect(result?.code).toBe(0);
    expect(result?.stderr).toMatch(/SIGTERM: stopping the vault/);
    expect(result?.stderr).toMatch(
      /the vault stopped \(SIGTERM\): http:\/\/127\.0\.0\.1:\d+\/ is no longer served/,
    );
    expect(result?.stderr).not.toContain("releasing locks");
  });
});

/** Every stored file but locks (and temp files) under a repository directory. */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || entry.name.startsWith(".")) continue;
    const path = join(entry.parentPath, entry.name);
    if (!path.includes("/locks/")) out.push(path);
  }
  return out.sort();
}

function immutableOf(paths: string[]): boolean[] {
  const r = spawnSync("lsattr", paths, { encoding: "utf8" });
  const flags = new Map<string, boolean>();
  for (const line of r.stdout.split("\n")) {
    const space = line.indexOf(" ");
    if (space > 0) flags.set(line.slice(space + 1), line.slice(0, space).includes("i"));
  }
  return paths.map((p) => flags.get(p) ?? false);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}
