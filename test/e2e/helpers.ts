/**
 * Shared helpers of the end-to-end tests: temporary directories, running the built CLI, fixture trees,
 * and comparing trees on disk.
 *
 * The tests run `node dist/cli/main.js` (build first with `npm run build`); worker threads load
 * dist/repository/worker.js. Key derivation is made fast with BULWARK_TEST_WEAK_KDF=1.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, lstatSync, readdirSync, readlinkSync, type BigIntStats } from "node:fs";
import { chmod, mkdir, open, readdir, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const CLI = join(ROOT, "dist", "cli", "main.js");
export const isRoot = process.getuid?.() === 0;
export const NOBODY = 65534;

// Temporary directories: test/helpers/temp.ts, shared with the unit tests.
export { makeTempDir, removeTempDirs } from "../helpers/temp.js";

// ---------------------------------------------------------------------------------------------------------
// Running the CLI

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Added to (or, with undefined, removed from) the clean environment. */
  env?: Record<string, string | undefined>;
  cwd?: string;
  uid?: number;
  gid?: number;
  /** Written to stdin, which is then closed. stdin is always a pipe: never a terminal. */
  input?: string;
  timeoutMs?: number;
}

/** The environment of the tests' processes: no BULWARK_* settings of the caller, fast key derivation. */
export function cleanEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("BULWARK_")) env[k] = v;
  env.BULWARK_TEST_WEAK_KDF = "1";
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

/** Starts a node process; `result` settles when it exits (killed after timeoutMs, default 3 minutes). */
export function spawnNode(
  args: string[],
  opts: RunOptions = {},
): { child: ChildProcessWithoutNullStreams; result: Promise<RunResult> } {
  const child = spawn(process.execPath, args, {
    env: cleanEnv(opts.env),
    stdio: ["pipe", "pipe", "pipe"],
    ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
    ...(opts.uid === undefined ? {} : { uid: opts.uid }),
    ...(opts.gid === undefined ? {} : { gid: opts.gid }),
  });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on("data", (b: Buffer) => out.push(b));
  child.stderr.on("data", (b: Buffer) => err.push(b));
  child.stdin.on("error", () => undefined);
  child.stdin.end(opts.input ?? "");
  const result = new Promise<RunResult>((resolve, reject) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 180_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
      });
    });
  });
  return { child, result };
}

/** Runs `bulwark ARGS` and collects its output. */
export function runCli(args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return spawnNode([CLI, ...args], opts).result;
}

export function describeRun(args: string[], r: RunResult): string {
  return `bulwark ${args.join(" ")} -> exit ${r.code}${r.signal ? ` (${r.signal})` : ""}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

/** A repository made by `bulwark init` with a password file, and shortcuts to run commands on it. */
export class TestRepo {
  constructor(
    readonly dir: string,
    readonly passwordFile: string,
    readonly password: string,
  ) {}

  /** `bulwark init` into `dir` (which must not hold a repository), password in a file beside it. */
  static async init(
    dir: string,
    opts: { password?: string; passwordFile?: string; run?: RunOptions } = {},
  ): Promise<TestRepo> {
    const password = opts.password ?? `pw-${randomBytes(6).toString("hex")}`;
    const passwordFile = opts.passwordFile ?? `${dir}.password`;
    await writeFile(passwordFile, password + "\n", { mode: 0o644 });
    const args = ["-r", dir, "-p", passwordFile, "--json", "init"];
    const r = await runCli(args, opts.run);
    if (r.code !== 0) throw new Error(describeRun(args, r));
    return new TestRepo(dir, passwordFile, password);
  }

  run(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return runCli(["-r", this.dir, "-p", this.passwordFile, ...args], opts);
  }

  /** Runs with --json and returns the parsed stdout; throws (with the output) unless the exit code is `code`. */
  async json<T = unknown>(args: string[], opts: RunOptions & { code?: number } = {}): Promise<T> {
    const full = ["--json", ...args];
    const r = await this.run(full, opts);
    if (r.code !== (opts.code ?? 0)) throw new Error(describeRun(full, r));
    try {
      return JSON.parse(r.stdout) as T;
    } catch {
      throw new Error(`stdout is not JSON:\n${describeRun(full, r)}`);
    }
  }

  /** Runs and throws (with the output) unless the exit code is 0. */
  async ok(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    const r = await this.run(args, opts);
    if (r.code !== 0) throw new Error(describeRun(args, r));
    return r;
  }

  async backup(paths: string[], extra: string[] = []): Promise<BackupJson> {
    return this.json<BackupJson>(["backup", ...extra, ...paths]);
  }

  async snapshots(extra: string[] = []): Promise<SnapshotJson[]> {
    return this.json<SnapshotJson[]>(["snapshots", ...extra]);
  }
}

export interface SnapshotSummaryJson {
  filesNew: number;
  filesChanged: number;
  filesUnmodified: number;
  dirsNew: number;
  dirsChanged: number;
  dirsUnmodified: number;
  totalBytes: number;
  bytesRead: number;
  dataAdded: number;
  dataAddedStored: number;
  blobsAdded: number;
  durationMs: number;
}

export interface SnapshotJson {
  id: string;
  time: string;
  tree: string;
  paths: string[];
  hostname: string;
  tags: string[];
  excludes?: string[];
  parent?: string;
  summary?: SnapshotSummaryJson;
  skipped?: { path: string; error: string }[];
}

export interface BackupJson extends Omit<SnapshotJson, "id"> {
  snapshot: string;
  summary: SnapshotSummaryJson;
  skipped: { path: string; error: string }[];
}

export interface Finding {
  severity: "error" | "warning";
  kind: string;
  message: string;
  pack?: string;
  blobs?: string[];
  snapshots?: string[];
  files?: string[];
}

export interface CheckJson {
  ok: boolean;
  errors: number;
  findings: Finding[];
  stats: Record<string, number>;
}

// ---------------------------------------------------------------------------------------------------------
// Lock holders: node processes that take a repository lock with the library (the built one in dist/)

const LOCK_SCRIPT = `
const [repoDir, mode, after] = process.argv.slice(1);
const { LocalBackend } = await import(${JSON.stringify(new URL("dist/backend/local/local-backend.js", `file://${ROOT}`).href)});
const { Repository } = await import(${JSON.stringify(new URL("dist/repository/repository.js", `file://${ROOT}`).href)});
const { RepoLock } = await import(${JSON.stringify(new URL("dist/repository/lock.js", `file://${ROOT}`).href)});
const repo = await Repository.open(await LocalBackend.open(repoDir), process.env.LOCK_PASSWORD);
const lock = await RepoLock.acquire(repo, mode === "exclusive");
process.stdout.write("locked " + process.pid + "\\n");
if (after === "exit") process.exit(0); // dies holding the lock: it goes stale
process.on("SIGTERM", () => void lock.release().then(() => process.exit(0)));
setInterval(() => undefined, 1000);
`;

/**
 * Starts a process that takes a lock on the repository. With `after: "hold"` it keeps the lock until
 * SIGTERM (then releases it); with `after: "exit"` it exits at once without releasing it (a stale lock).
 */
export async function lockHolder(
  repo: TestRepo,
  mode: "exclusive" | "shared",
  after: "hold" | "exit",
): Promise<{ child: ChildProcessWithoutNullStreams; pid: number; result: Promise<RunResult> }> {
  const { child, result } = spawnNode(["--input-type=module", "-e", LOCK_SCRIPT, repo.dir, mode, after], {
    env: { LOCK_PASSWORD: repo.password },
  });
  const locked = new Promise<number>((resolve, reject) => {
    let text = "";
    child.stdout.on("data", (b: Buffer) => {
      text += b.toString();
      const m = /locked (\d+)/.exec(text);
      if (m) resolve(Number(m[1]));
    });
    result.then((r) => reject(new Error(`lock holder exited before locking:\n${r.stderr}`)), reject);
  });
  const pid = await locked;
  return { child, pid, result };
}

// ---------------------------------------------------------------------------------------------------------
// Fixtures

/** Random bytes (not reproducible; tests keep hashes of what they wrote). */
export function randomData(size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  for (let pos = 0; pos < size; pos += 64 * MiB) {
    const n = Math.min(64 * MiB, size - pos);
    randomBytes(n).copy(out, pos);
  }
  return out;
}

/** Writes files given by relative path (creating parent directories); returns their absolute paths. */
export async function writeFiles(root: string, files: Record<string, string | Buffer>): Promise<string[]> {
  const written: string[] = [];
  for (const [rel, data] of Object.entries(files)) {
    const abs = join(root, rel);
    await mkdir(dirname(abs), { recursive: true });
    await writeFile(abs, data);
    written.push(abs);
  }
  return written;
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const piece of createReadStream(path, { highWaterMark: 4 * MiB })) hash.update(piece as Buffer);
  return hash.digest("hex");
}

export function sha256(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

export type EntryType = "file" | "dir" | "symlink" | "fifo" | "socket" | "other";

export interface Entry {
  /** Path relative to the scanned root, "" for the root itself. */
  rel: string;
  type: EntryType;
  /** st_mode & 0o7777 */
  mode: number;
  size: bigint;
  mtimeNs: bigint;
  uid: number;
  gid: number;
  ino: bigint;
  nlink: number;
  /** Bytes allocated on disk (st_blocks * 512). */
  allocated: bigint;
  linkTarget?: string;
  sha256?: string;
}

function typeOf(st: BigIntStats): EntryType {
  if (st.isFile()) return "file";
  if (st.isDirectory()) return "dir";
  if (st.isSymbolicLink()) return "symlink";
  if (st.isFIFO()) return "fifo";
  if (st.isSocket()) return "socket";
  return "other";
}

/** Every entry below `root` (and root itself), by relative path; file contents hashed unless hash=false. */
export async function scanTree(root: string, opts: { hash?: boolean } = {}): Promise<Map<string, Entry>> {
  const out = new Map<string, Entry>();
  const visit = async (rel: string): Promise<void> => {
    const abs = rel === "" ? root : join(root, rel);
    const st = lstatSync(abs, { bigint: true });
    const entry: Entry = {
      rel,
      type: typeOf(st),
      mode: Number(st.mode & 0o7777n),
      size: st.size,
      mtimeNs: st.mtimeNs,
      uid: Number(st.uid),
      gid: Number(st.gid),
      ino: st.ino,
      nlink: Number(st.nlink),
      allocated: st.blocks * 512n,
    };
    if (entry.type === "symlink") entry.linkTarget = readlinkSync(abs);
    if (entry.type === "file" && opts.hash !== false) entry.sha256 = await sha256File(abs);
    out.set(rel, entry);
    if (entry.type === "dir") {
      for (const name of readdirSync(abs).sort()) await visit(rel === "" ? name : `${rel}/${name}`);
    }
  };
  await visit("");
  return out;
}

/** All regular files below `dir`, recursively (absolute paths). */
export async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const visit = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await visit(p);
      else if (e.isFile()) out.push(p);
    }
  };
  await visit(dir);
  return out;
}

/** Total size of the regular files below `dir`. */
export async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  for (const f of await listFiles(dir)) total += (await stat(f)).size;
  return total;
}

/** Pack files of a repository (data/xx/<name>), by name. */
export async function packFiles(repoDir: string): Promise<string[]> {
  return (await listFiles(join(repoDir, "data"))).filter((p) => /\/[0-9a-f]{64}$/.test(p));
}

/** Flips every bit of the byte at `offset` (repository files are read-only: made writable first). */
export async function flipByte(path: string, offset: number): Promise<void> {
  await chmod(path, 0o644);
  const fh = await open(path, "r+");
  try {
    const b = Buffer.alloc(1);
    const { bytesRead } = await fh.read(b, 0, 1, offset);
    if (bytesRead !== 1) throw new Error(`${path} has no byte at ${offset}`);
    b[0] = b[0]! ^ 0xff;
    await fh.write(b, 0, 1, offset);
  } finally {
    await fh.close();
  }
}

/** Where a snapshot path ends up in a restore target (snapshots keep absolute paths). */
export function restoredPath(target: string, snapshotPath: string): string {
  return join(target, snapshotPath);
}

/** The vault's own entry point (`bulwark serve-repo` without the rest of the CLI). */
export const VAULT = join(ROOT, "dist", "cli", "vault-main.js");

/** `serve-repo token add` into `tokens`; returns the token (printed once by the vault). */
export async function addVaultToken(
  tokens: string,
  name: string,
  role: "append-only" | "admin",
): Promise<string> {
  const args = [
    VAULT,
    "--json",
    "serve-repo",
    "token",
    "add",
    "--tokens",
    tokens,
    "--name",
    name,
    "--role",
    role,
  ];
  const r = await spawnNode(args).result;
  if (r.code !== 0) throw new Error(`token add failed: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { token: string }).token;
}

export interface TestVault {
  /** The `rest:` location of the vault. */
  location: string;
  port: number;
  /** The server process (its output is in `result` once it ends). */
  server: ReturnType<typeof spawnNode>;
  /** SIGTERM, then waits for it to end. */
  stop(): Promise<void>;
}

/**
 * A vault serving `dir` (created) on a free loopback port with the tokens file `tokens`, not immutable (so a
 * test can damage what it stores, as bit rot would) unless `args` say otherwise; resolves once it accepts
 * connections.
 */
export async function startTestVault(dir: string, tokens: string, args: string[] = []): Promise<TestVault> {
  const { freePort } = await import("../helpers/services.js");
  const { connect } = await import("node:net");
  const port = await freePort();
  const server = spawnNode(
    [VAULT, "serve-repo", "--init", "--path", dir, "--listen", `127.0.0.1:${port}`, "--tokens", tokens, "--immutable", "off", ...args], // prettier-ignore
    { timeoutMs: 600_000 },
  );
  for (let i = 0; ; i++) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, "127.0.0.1");
      socket.on("connect", () => resolve(socket.end() !== undefined));
      socket.on("error", () => resolve(false));
    });
    if (open) break;
    if (i > 300) throw new Error(`the vault did not listen on 127.0.0.1:${port}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    location: `rest:http://127.0.0.1:${port}/`,
    port,
    server,
    stop: async () => {
      server.child.kill("SIGTERM");
      await server.result.catch(() => undefined);
    },
  };
}
