/**
 * Crash safety, end to end: `bulwark backup` and `bulwark prune` are killed with SIGKILL at 20+
 * pseudo-random moments each: deterministic fractions from 0 to 1.1 of the duration of an uninterrupted
 * run (measured first, updated by the runs that end before their kill). After every kill the repository
 * must pass `check --read-data` (unreferenced packs are allowed as warnings, errors are not), every
 * earlier snapshot must restore byte-identically, and the stale lock the dead process may leave must not
 * block the next command.
 *
 * The repositories are created through the library with 1 MiB packs and 256 KiB average chunks, so a
 * backup writes hundreds of packs and a kill lands between pack writes, index writes and the snapshot
 * write (and, for prune, between repacking, the index swap and the deletions).
 *
 * Runs the built CLI (dist/): `npm run build` first. Knobs: BULWARK_CRASH_KILLS (kills per command,
 * default 20), BULWARK_CRASH_SEED varies the kill moments, BULWARK_CRASH_KEEP=1 keeps the work directory.
 */
import { spawn } from "node:child_process";
import { createCipheriv, createHash } from "node:crypto";
import {
  closeSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { LocalBackend } from "../../src/backend/local/local-backend.js";
import { Repository } from "../../src/repository/repository.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const CLI = join(ROOT, "dist", "cli", "main.js");
const PASSWORD = "crash-test: correct horse battery staple";
const KILLS = Number(process.env.BULWARK_CRASH_KILLS ?? 20);
const KEEP = process.env.BULWARK_CRASH_KEEP === "1";
/** Varies the kill moments and samples (the fixture stays the same). */
const SEED = process.env.BULWARK_CRASH_SEED ?? "1";
const NAME = /^[0-9a-f]{64}$/;

// ---------------------------------------------------------------------------------------------------------
// Deterministic data

/** mulberry32: small, fast, good enough to pick sizes and files. */
class Rng {
  private state: number;
  constructor(seed: string) {
    this.state = createHash("sha256").update(seed).digest().readUInt32LE(0);
  }
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) | 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [items[i], items[j]] = [items[j]!, items[i]!];
    }
    return items;
  }
}

/** Incompressible bytes: the AES-256-CTR keystream of a key derived from the seed (GB/s, deterministic). */
function randomData(seed: string, length: number): Buffer {
  const key = createHash("sha256").update(seed).digest();
  return createCipheriv("aes-256-ctr", key, Buffer.alloc(16)).update(Buffer.alloc(length));
}

const WORDS = (
  "backup restore snapshot repository pack index blob tree chunk prune forget check lock key config " +
  "the a of and to in is it that for on with as was at by be this from or have an they which one you " +
  "data file directory error warning ok done time size bytes host path user group mode link device " +
  "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa"
).split(" ");

let textPoolCache: Buffer | undefined;
/** 4 MiB of log-like text made of a small vocabulary: compresses well, unlike randomData. */
function textPool(): Buffer {
  if (textPoolCache) return textPoolCache;
  const bytes = randomData("text-pool", 2 * MiB);
  const lines: string[] = [];
  let length = 0;
  for (let i = 0; length < 4 * MiB; ) {
    const n = 6 + (bytes[i++ % bytes.length]! % 10);
    const words: string[] = [`${lines.length.toString().padStart(7, "0")}`];
    for (let w = 0; w < n; w++) words.push(WORDS[bytes[i++ % bytes.length]! % WORDS.length]!);
    const line = words.join(" ") + "\n";
    lines.push(line);
    length += line.length;
  }
  textPoolCache = Buffer.from(lines.join(""), "latin1");
  return textPoolCache;
}

/** Compressible text: random slices of the pool, so files differ from each other. */
function textData(rng: Rng, length: number): Buffer {
  const pool = textPool();
  const parts: Buffer[] = [];
  for (let left = length; left > 0; ) {
    const n = Math.min(left, 1024 + rng.int(63 * KiB));
    const at = rng.int(pool.length - n);
    parts.push(pool.subarray(at, at + n));
    left -= n;
  }
  return Buffer.concat(parts, length);
}

interface TreeSpec {
  big: number[];
  text: number[];
  dirs: number;
  filesPerDir: number;
  maxSmall: number;
}

function smallFile(rng: Rng, seed: string, maxSmall: number): Buffer {
  const size = rng.next() < 0.05 ? 0 : rng.int(maxSmall);
  return rng.next() < 0.5 ? randomData(seed, size) : textData(rng, size);
}

/** Many small files, a few large random files, compressible text, a deep path, a symlink, empties. */
function generateTree(dir: string, seed: string, spec: TreeSpec): void {
  const rng = new Rng(seed);
  mkdirSync(join(dir, "big"), { recursive: true });
  spec.big.forEach((size, i) =>
    writeFileSync(join(dir, "big", `rand-${i}.bin`), randomData(`${seed}/big/${i}`, size)),
  );
  mkdirSync(join(dir, "text"), { recursive: true });
  spec.text.forEach((size, i) => writeFileSync(join(dir, "text", `log-${i}.txt`), textData(rng, size)));
  for (let d = 0; d < spec.dirs; d++) {
    const sub = join(dir, "small", `d${d.toString().padStart(3, "0")}`);
    mkdirSync(sub, { recursive: true });
    for (let f = 0; f < spec.filesPerDir; f++) {
      const name = `f${f.toString().padStart(4, "0")}`;
      writeFileSync(join(sub, name), smallFile(rng, `${seed}/${d}/${f}`, spec.maxSmall));
    }
  }
  mkdirSync(join(dir, "deep", "a", "b", "c", "d", "e"), { recursive: true });
  writeFileSync(join(dir, "deep", "a", "b", "c", "d", "e", "leaf.txt"), textData(rng, 3000));
  mkdirSync(join(dir, "empty-dir"), { recursive: true });
  writeFileSync(join(dir, "empty-file"), "");
  symlinkSync("big/rand-0.bin", join(dir, "link-to-big"));
}

/**
 * Changes a tree the way a working day does: `rewriteBig` large files replaced, a region of another
 * patched in place, text appended, ~30% of the small files rewritten, some deleted, a new directory.
 */
function mutateTree(dir: string, seed: string, spec: TreeSpec, rewriteBig: number): void {
  const rng = new Rng(seed);
  const order = rng.shuffle(spec.big.map((_, i) => i));
  order.slice(0, rewriteBig).forEach((i) => {
    writeFileSync(join(dir, "big", `rand-${i}.bin`), randomData(`${seed}/big/${i}`, spec.big[i]!));
  });
  const patched = order[rewriteBig % order.length]!;
  const fd = openSync(join(dir, "big", `rand-${patched}.bin`), "r+");
  try {
    writeSync(fd, randomData(`${seed}/patch`, 2 * MiB), 0, 2 * MiB, rng.int(spec.big[patched]! - 2 * MiB));
  } finally {
    closeSync(fd);
  }
  const log = join(dir, "text", `log-${rng.int(spec.text.length)}.txt`);
  writeFileSync(log, textData(rng, MiB), { flag: "a" });
  for (const sub of readdirSync(join(dir, "small")).sort()) {
    for (const name of readdirSync(join(dir, "small", sub)).sort()) {
      const r = rng.next();
      const path = join(dir, "small", sub, name);
      if (r < 0.05) unlinkSync(path);
      else if (r < 0.35) writeFileSync(path, smallFile(rng, `${seed}/${sub}/${name}`, spec.maxSmall));
    }
  }
  const fresh = join(dir, "small", `new-${createHash("sha256").update(seed).digest("hex").slice(0, 8)}`);
  mkdirSync(fresh, { recursive: true });
  for (let f = 0; f < 40; f++) {
    writeFileSync(join(fresh, `n${f}`), smallFile(rng, `${seed}/new/${f}`, spec.maxSmall));
  }
  writeFileSync(join(dir, "deep", "a", "b", "c", "d", "e", "leaf.txt"), textData(rng, 3000 + rng.int(3000)));
}

/** Relative path -> "d", "l:<target>" or "f:<sha256>", for everything below dir. */
type TreeHashes = Map<string, string>;

function hashTree(dir: string): TreeHashes {
  const out: TreeHashes = new Map();
  const walk = (abs: string, rel: string): void => {
    for (const e of readdirSync(abs, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const childAbs = join(abs, e.name);
      const childRel = rel === "" ? e.name : `${rel}/${e.name}`;
      if (e.isDirectory()) {
        out.set(childRel, "d");
        walk(childAbs, childRel);
      } else if (e.isSymbolicLink()) out.set(childRel, `l:${readlinkSync(childAbs)}`);
      else if (e.isFile()) {
        out.set(childRel, `f:${createHash("sha256").update(readFileSync(childAbs)).digest("hex")}`);
      } else out.set(childRel, `other:${e.name}`);
    }
  };
  walk(dir, "");
  return out;
}

function treeBytes(dir: string): number {
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += statSync(join(e.parentPath, e.name)).size;
  }
  return total;
}

/** Differences between two hash maps, at most 20, readable in a failure message. */
function treeDiff(actual: TreeHashes, expected: TreeHashes): string[] {
  const diffs: string[] = [];
  for (const [path, want] of expected) {
    const got = actual.get(path);
    if (got === undefined) diffs.push(`missing ${path}`);
    else if (got !== want) diffs.push(`differs ${path}: ${got.slice(0, 14)} != ${want.slice(0, 14)}`);
  }
  for (const path of actual.keys()) if (!expected.has(path)) diffs.push(`unexpected ${path}`);
  return diffs.slice(0, 20);
}

// ---------------------------------------------------------------------------------------------------------
// Running the CLI

function cliEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, BULWARK_TEST_WEAK_KDF: "1", BULWARK_PASSWORD: PASSWORD };
  delete env.BULWARK_REPOSITORY;
  delete env.BULWARK_PASSWORD_FILE;
  return env;
}

interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

interface RunOptions {
  /** SIGKILL the process this many milliseconds after spawning it, unless it exited before. */
  killAfterMs?: number;
}

function runCli(repo: string, args: string[], options: RunOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, [CLI, "--repo", repo, ...args], {
      env: cliEnv(),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    let timer: NodeJS.Timeout | undefined;
    if (options.killAfterMs !== undefined) {
      timer = setTimeout(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      }, options.killAfterMs);
    }
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    // "close": the process is gone (reaped) and its output is complete.
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - started });
    });
  });
}

/** Runs a command that must succeed. */
async function cliOk(repo: string, args: string[]): Promise<CliResult> {
  const r = await runCli(repo, args);
  expect(r.code, `bulwark ${args.join(" ")} failed:\n${r.stderr}\n${r.stdout.slice(0, 2000)}`).toBe(0);
  return r;
}

interface Finding {
  severity: "error" | "warning";
  kind: string;
  message: string;
}

/** `check --read-data` must exit 0 without errors; returns the warnings (unreferenced packs are fine). */
async function checkRepository(repo: string, label: string): Promise<Finding[]> {
  const r = await runCli(repo, ["--json", "check", "--read-data"]);
  let report: { ok?: boolean; findings?: Finding[]; error?: unknown } = {};
  try {
    report = JSON.parse(r.stdout) as typeof report;
  } catch {
    // reported below
  }
  const errors = (report.findings ?? []).filter((f) => f.severity === "error");
  expect(errors, `${label}: check found errors`).toEqual([]);
  expect(r.code, `${label}: check exited ${r.code}:\n${r.stderr}\n${r.stdout.slice(0, 2000)}`).toBe(0);
  expect(report.ok, `${label}: check output: ${r.stdout.slice(0, 2000)}`).toBe(true);
  const warnings = (report.findings ?? []).filter((f) => f.severity === "warning");
  // Leftovers of an interrupted run are the only acceptable warnings: packs no index names, and blobs two
  // packs claim (a prune killed after indexing its repacked packs, before deleting the old index; readers
  // use the first, and the next prune verifies the copy it keeps, docs/design.md §18).
  expect(warnings.filter((f) => f.kind !== "pack-unreferenced" && f.kind !== "blob-multiple")).toEqual([]);
  return warnings.filter((f) => f.kind === "pack-unreferenced");
}

/**
 * Restores a snapshot (or only `sample`, relative paths of files) and compares it with what was backed up.
 * `source` is the absolute path that was backed up: restore puts it below the target as it is.
 */
async function verifyRestore(
  repo: string,
  work: string,
  snapshot: string,
  source: string,
  expected: TreeHashes,
  sample?: string[],
): Promise<void> {
  const target = mkdtempSync(join(work, "restore-"));
  try {
    const includes = (sample ?? []).flatMap((rel) => ["--include", `${source}/${rel}`]);
    const r = await cliOk(repo, ["restore", snapshot, "--target", target, ...includes]);
    const restoredRoot = join(target, source);
    const actual = existsSync(restoredRoot) ? hashTree(restoredRoot) : new Map<string, string>();
    let want = expected;
    let got = actual;
    if (sample) {
      // Only the sampled files (and the directories on their way) are restored: compare the files.
      const chosen = new Set(sample);
      want = new Map([...expected].filter(([p]) => chosen.has(p)));
      got = new Map([...actual].filter(([, v]) => v !== "d"));
    }
    const diffs = treeDiff(got, want);
    expect(diffs, `restore of ${snapshot.slice(0, 8)} differs (${r.stdout.trim()})`).toEqual([]);
  } finally {
    rmSync(target, { recursive: true, force: true });
  }
}

/** A few files to restore: at least one large and one text file, the rest at random. */
function sampleOf(expected: TreeHashes, rng: Rng, count: number): string[] {
  const files = [...expected].filter(([, v]) => v !== "d").map(([p]) => p);
  const big = files.filter((p) => p.startsWith("big/"));
  const text = files.filter((p) => p.startsWith("text/"));
  const chosen = new Set<string>([big[rng.int(big.length)]!, text[rng.int(text.length)]!]);
  while (chosen.size < Math.min(count, files.length)) chosen.add(files[rng.int(files.length)]!);
  return [...chosen].sort();
}

function names(repo: string, sub: "index" | "snapshots" | "locks"): string[] {
  return readdirSync(join(repo, sub))
    .filter((n) => NAME.test(n))
    .sort();
}

/** `.tmp-*` files a killed writer left (never listed; prune removes them once they are an hour old). */
function tempFiles(repo: string): number {
  return readdirSync(repo, { recursive: true, encoding: "utf8" }).filter((p) => /(^|\/)\.tmp-/.test(p))
    .length;
}

function sameNames(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((n, i) => n === b[i]);
}

/**
 * Kill moments for `count` runs as fractions of a run's duration: one per stratum of [0, 1.1] in random
 * order, the first immediate (0) and one after the end (1.1). `more()` gives a further fraction below 1,
 * for when runs ended before their kill and more kills are needed.
 */
function killFractions(rng: Rng, count: number): { first: number[]; more(): number } {
  const fractions = Array.from({ length: count }, (_, i) => ((i + rng.next()) / count) * 1.1);
  fractions[0] = 0;
  fractions[count - 1] = 1.1;
  const [first, ...rest] = fractions;
  return { first: [first, ...rng.shuffle(rest)], more: () => rng.next() };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

async function createRepository(dir: string): Promise<void> {
  // The CLI's init has no pack size option: small packs (and chunks) mean many writes to interrupt.
  const backend = await LocalBackend.create(dir);
  await Repository.init(backend, PASSWORD, {
    packSize: MiB,
    chunker: { minSize: 128 * KiB, avgSize: 256 * KiB, maxSize: MiB },
    kdf: { N: 1024, r: 8, p: 1 },
  });
  await backend.close();
}

function copyRepository(from: string, to: string): void {
  rmSync(to, { recursive: true, force: true });
  cpSync(from, to, { recursive: true, preserveTimestamps: true });
}

async function backupOk(repo: string, source: string): Promise<{ id: string; ms: number }> {
  const r = await cliOk(repo, ["--json", "backup", source]);
  const out = JSON.parse(r.stdout) as { snapshot: string };
  return { id: out.snapshot, ms: r.ms };
}

// ---------------------------------------------------------------------------------------------------------

const BACKUP_TREE: TreeSpec = {
  big: [40 * MiB, 32 * MiB, 24 * MiB, 16 * MiB],
  text: [6 * MiB, 6 * MiB, 6 * MiB, 6 * MiB],
  dirs: 40,
  filesPerDir: 60,
  maxSmall: 40 * KiB,
};

const PRUNE_TREE: TreeSpec = {
  big: [24 * MiB, 16 * MiB, 16 * MiB, 8 * MiB],
  text: [4 * MiB, 4 * MiB],
  dirs: 64,
  filesPerDir: 60,
  maxSmall: 48 * KiB,
};

/** Two uninterrupted runs of `args`, each on a fresh copy of `pristine`: their durations and output. */
async function measure(pristine: string, args: string[]): Promise<{ durations: number[]; stdout: string }> {
  const copy = join(work, "measure");
  const durations: number[] = [];
  let stdout = "";
  for (let i = 0; i < 2; i++) {
    copyRepository(pristine, copy);
    const r = await cliOk(copy, args);
    durations.push(r.ms);
    stdout = r.stdout;
  }
  rmSync(copy, { recursive: true, force: true });
  return { durations, stdout };
}

interface Attempt {
  label: string;
  delay: number;
  result: CliResult;
}

/**
 * Runs `args` killed at the scheduled moments, then at more random moments until KILLS runs were really
 * killed (a run may end before its kill); `after` verifies the repository after each run. A moment is a
 * fraction of the expected duration: the median of the measured runs and of the runs that ended by
 * themselves, so the schedule follows the machine's speed when other work slows it down or stops doing so.
 */
async function killRepeatedly(
  what: string,
  repo: string,
  args: string[],
  measured: number[],
  after: (attempt: Attempt) => Promise<string>,
): Promise<{ runs: number; killed: number }> {
  const schedule = killFractions(new Rng(`${what}-kills-${SEED}`), KILLS);
  const queue = [...schedule.first];
  const completed = [...measured];
  let runs = 0;
  let killed = 0;
  while (queue.length > 0 || killed < KILLS) {
    expect(runs, `${what}: too many runs ended before their kill`).toBeLessThan(3 * KILLS);
    const fraction = queue.shift() ?? schedule.more();
    const expected = median(completed);
    const delay = Math.round(fraction * expected);
    runs++;
    const label = `[${what} run ${runs}]`;
    const result = await runCli(repo, args, { killAfterMs: delay });
    if (result.signal === "SIGKILL") killed++;
    else {
      expect(result.code, `${label} ${what} exited by itself with ${result.code}:\n${result.stderr}`).toBe(0);
      completed.push(result.ms);
    }
    const started = performance.now();
    const note = await after({ label, delay, result });
    const how =
      result.signal === "SIGKILL"
        ? `killed at ${Math.round(result.ms)} ms`
        : `exited by itself before the kill (code ${result.code}, ${Math.round(result.ms)} ms)`;
    console.log(
      `${label} delay ${delay} ms (${fraction.toFixed(2)}x of ${Math.round(expected)} ms): ${how}; ${note}; ` +
        `verified in ${Math.round(performance.now() - started)} ms`,
    );
  }
  return { runs, killed };
}

let work: string;

beforeAll(() => {
  if (!existsSync(join(ROOT, "dist", "repository", "worker.js")) || !existsSync(CLI)) {
    throw new Error("dist/ is missing: run `npm run build` first");
  }
  work = mkdtempSync(join(tmpdir(), "bulwark-crash-"));
  console.log(`crash test work directory: ${work}`);
});

afterAll(() => {
  if (KEEP) console.log(`kept ${work}`);
  else if (work) rmSync(work, { recursive: true, force: true });
});

describe.sequential("SIGKILL at random moments", () => {
  test("during backup: check passes and every earlier snapshot restores after each kill", async () => {
    const t0 = performance.now();
    const source = join(work, "backup-src");
    const repo = join(work, "backup-repo");
    const pristine = join(work, "backup-pristine");
    generateTree(source, "tree-A", BACKUP_TREE);
    const hashesA = hashTree(source);
    await createRepository(repo);
    const s0 = await backupOk(repo, source);
    console.log(
      `[backup] tree A: ${hashesA.size} entries, ${(treeBytes(source) / MiB).toFixed(0)} MiB; S0 ${s0.id.slice(0, 8)} in ${Math.round(s0.ms)} ms`,
    );
    expect(await checkRepository(repo, "after S0")).toEqual([]);
    copyRepository(repo, pristine);

    mutateTree(source, "tree-B", BACKUP_TREE, 4);
    const hashesB = hashTree(source);
    const { durations } = await measure(pristine, ["backup", source]);
    console.log(
      `[backup] tree B: ${(treeBytes(source) / MiB).toFixed(0)} MiB; uninterrupted backups ${durations.map(Math.round).join(" and ")} ms; setup ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );

    const rng = new Rng(`backup-samples-${SEED}`);
    let staleLocksSeen = 0;
    let resets = 0;
    let indexBefore = names(repo, "index");
    let snapshotsBefore = names(repo, "snapshots");
    const { runs, killed } = await killRepeatedly(
      "backup",
      repo,
      ["backup", source],
      durations,
      async ({ label, result }) => {
        const locks = names(repo, "locks").length;
        if (result.signal === "SIGKILL" && locks > 0) staleLocksSeen++;
        const newSnapshots = names(repo, "snapshots").filter((n) => !snapshotsBefore.includes(n));
        const indexChanged = !sameNames(names(repo, "index"), indexBefore);
        const temps = tempFiles(repo);
        // Shared locks of dead processes are on disk: the check and restores below must not mind them.
        const warnings = await checkRepository(repo, label);
        await verifyRestore(repo, work, s0.id, source, hashesA, sampleOf(hashesA, rng, 24));
        for (const id of newSnapshots) {
          await verifyRestore(repo, work, id, source, hashesB, sampleOf(hashesB, rng, 24));
        }
        if (indexChanged || newSnapshots.length > 0) {
          // The backup got far enough that the next one would find its data: start again from S0 alone,
          // so every run has the full backup to do.
          copyRepository(pristine, repo);
          resets++;
          indexBefore = names(repo, "index");
          snapshotsBefore = names(repo, "snapshots");
        }
        return (
          `stale locks ${locks}, unreferenced packs ${warnings.length}, temp files ${temps}` +
          `${indexChanged ? ", index written" : ""}${newSnapshots.length ? ", snapshot written" : ""}` +
          `${indexChanged || newSnapshots.length ? " (reset to S0)" : ""}`
        );
      },
    );
    expect(killed).toBeGreaterThanOrEqual(KILLS);

    // Stale shared locks of dead processes do not block even an exclusive lock.
    const staleLocks = names(repo, "locks").length;
    await cliOk(repo, ["prune", "--dry-run"]);
    const final = await backupOk(repo, source);
    // The final backup removed the dead processes' locks of this host itself (src/ops/leftovers.ts).
    expect(names(repo, "locks")).toEqual([]);
    const warnings = await checkRepository(repo, "after the final backup");
    await verifyRestore(repo, work, s0.id, source, hashesA);
    await verifyRestore(repo, work, final.id, source, hashesB);
    const unlock = JSON.parse((await cliOk(repo, ["--json", "unlock"])).stdout) as { removed: string[] };
    expect(unlock.removed).toEqual([]);
    console.log(
      `[backup] ${killed} of ${runs} runs killed, ${resets} resets to S0, ${staleLocksSeen} kills left a stale lock ` +
        `(${staleLocks} present at the end, removed by the final backup); final backup ${Math.round(final.ms)} ms, ` +
        `${warnings.length} unreferenced packs; total ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
    rmSync(pristine, { recursive: true, force: true });
    rmSync(repo, { recursive: true, force: true });
    rmSync(source, { recursive: true, force: true });
  }, 240_000);

  test("during prune: check passes and every remaining snapshot restores after each kill", async () => {
    const t0 = performance.now();
    const source = join(work, "prune-src");
    const repo = join(work, "prune-repo");
    const pristine = join(work, "prune-pristine");
    generateTree(source, "tree-C0", PRUNE_TREE);
    await createRepository(repo);
    const expected = new Map<string, TreeHashes>();
    const order: string[] = [];
    for (let i = 0; i < 4; i++) {
      if (i > 0) mutateTree(source, `tree-C${i}`, PRUNE_TREE, 1);
      const s = await backupOk(repo, source);
      expected.set(s.id, hashTree(source));
      order.push(s.id);
    }
    // Forget the first and the third of four snapshots: their data is garbage, mixed into packs in use.
    const forgotten = [order[0]!, order[2]!];
    await cliOk(repo, ["forget", ...forgotten]);
    for (const id of forgotten) expected.delete(id);
    expect(names(repo, "snapshots")).toEqual([...expected.keys()].sort());
    copyRepository(repo, pristine);

    const pruneArgs = ["prune", "--repack-threshold", "1"];
    const measured = await measure(pristine, ["--json", ...pruneArgs]);
    const plan = JSON.parse(measured.stdout) as {
      packsToDelete: string[];
      packsToRepack: string[];
      packsWritten: number;
    };
    console.log(
      `[prune] ${order.length} snapshots of a ${(treeBytes(source) / MiB).toFixed(0)} MiB tree, 2 forgotten; ` +
        `uninterrupted prunes ${measured.durations.map(Math.round).join(" and ")} ms: deletes ${plan.packsToDelete.length} packs, ` +
        `repacks ${plan.packsToRepack.length} into ${plan.packsWritten}; setup ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
    expect(plan.packsToRepack.length, "the scenario must repack").toBeGreaterThan(0);

    const rng = new Rng(`prune-samples-${SEED}`);
    let staleExclusive = 0;
    let resets = 0;
    let indexBefore = names(repo, "index");
    const { runs, killed } = await killRepeatedly(
      "prune",
      repo,
      pruneArgs,
      measured.durations,
      async ({ label, result }) => {
        const locks = names(repo, "locks").length;
        // A killed prune leaves its exclusive lock: the check and restores below must not be blocked by it.
        if (result.signal === "SIGKILL" && locks > 0) staleExclusive++;
        const committed = !sameNames(names(repo, "index"), indexBefore);
        const temps = tempFiles(repo);
        const warnings = await checkRepository(repo, label);
        for (const [id, hashes] of expected) {
          await verifyRestore(repo, work, id, source, hashes, sampleOf(hashes, rng, 16));
        }
        let note = `stale locks ${locks}, unreferenced packs ${warnings.length}, temp files ${temps}`;
        if (committed) {
          note += ", new index written";
          if (result.signal === "SIGKILL") {
            // Killed after the index swap: the next prune must finish the job.
            await cliOk(repo, pruneArgs);
            const after = await checkRepository(repo, `${label} then a full prune`);
            expect(after, `${label}: a full prune leaves no unreferenced pack`).toEqual([]);
            note += ", finished by a full prune";
          }
          // Start again from the forgotten-but-not-pruned state, so every run has the full prune to do.
          copyRepository(pristine, repo);
          resets++;
          indexBefore = names(repo, "index");
          note += " (reset)";
        }
        return note;
      },
    );
    expect(killed).toBeGreaterThanOrEqual(KILLS);
    expect(staleExclusive, "some kills must leave a stale exclusive lock").toBeGreaterThan(0);

    // One uninterrupted prune on whatever the kills left; stale locks do not stop it.
    const staleLocks = names(repo, "locks").length;
    const final = await cliOk(repo, pruneArgs);
    const warnings = await checkRepository(repo, "after the final prune");
    expect(warnings, "the final prune removes every unreferenced pack").toEqual([]);
    for (const [id, hashes] of expected) await verifyRestore(repo, work, id, source, hashes);
    const unlock = JSON.parse((await cliOk(repo, ["--json", "unlock"])).stdout) as { removed: string[] };
    expect(unlock.removed.length).toBe(staleLocks);
    expect(names(repo, "locks")).toEqual([]);
    console.log(
      `[prune] ${killed} of ${runs} runs killed, ${resets} resets, ${staleExclusive} kills left a stale exclusive lock; ` +
        `final prune ${Math.round(final.ms)} ms with ${staleLocks} stale locks present; total ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
    rmSync(pristine, { recursive: true, force: true });
    rmSync(repo, { recursive: true, force: true });
    rmSync(source, { recursive: true, force: true });
  }, 240_000);
});
