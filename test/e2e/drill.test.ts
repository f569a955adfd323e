/**
 * `bulwark drill` through the built CLI, on a config whose dataset holds files and a SQLite database that is
 * written to while the backup runs, copied to a second local target. A drill restores one copy into a
 * sandbox (each copy in turn), compares every file with the snapshot, runs the validators and records RTO
 * and RPO; posture's validation row passes only after verification and a passing drill, and a failing drill
 * (a wrong query result, a failing command, tampered data, a file changed behind the backup's back) fails
 * it with the reason. A drill command cannot reach a TCP port of the host (network namespace); Ctrl-C
 * removes the sandbox and what the validator started. Bad input is a clear error.
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { join } from "node:path";

import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { haveTool } from "../sources/helpers.js";
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

interface DrillJson {
  ok: boolean;
  drills: {
    dataset: string;
    target: string;
    snapshot: string;
    rpoMs: number;
    status: string;
    restore: { files: number; bytes: number; durationMs: number; bytesPerSecond: number; errors: number };
    compare: { files: number; mismatches: number; examples: string[] };
    validators: { name: string; kind: string; ok: boolean; message: string; output?: string }[];
    isolation: { netns: boolean; note: string };
    spotCheck?: { sampled: number; mismatches: number; examples: string[] };
    findings: string[];
  }[];
  errors: { dataset: string; error: string }[];
}

interface PostureJson {
  datasets: { rows: { id: string; status: string; reason?: string; evidence: string[] }[] }[];
}

const sqliteAvailable = haveTool("sqlite3", "sqlite3");
const isRoot = process.getuid?.() === 0;
const canIsolate =
  isRoot && spawnSync("unshare", ["--net", "--", "ip", "link", "set", "lo", "up"]).status === 0;

let base: string;
let src: string;
let db: string;
let env: Record<string, string>;

/** The config, with `validators` (YAML list items, indented for the dataset's drill). */
async function config(name: string, validators: string, extra = ""): Promise<string> {
  const file = join(base, `${name}.yaml`);
  await writeFile(
    file,
    `version: 1
targets:
  one: { location: ${base}/one, labels: { medium: disk, site: home, failureDomain: d1 }, password: { file: ${base}/pw } }
  two: { location: ${base}/two, labels: { medium: disk, site: home, failureDomain: d2 }, password: { file: ${base}/pw } }
datasets:
  app:
    sources:
      - { type: files, paths: ["${src}"] }
      - { type: sqlite, path: ${db} }
    drill:
      spotCheck: 50
      validators:
${validators}
policies:
  p:
    rule: { copies: 2, zeroErrors: true }
    productionCounts: false
    rpo: 24h
    verification: { fullEvery: 30d }
    drills: { every: 7d }
jobs:
  j: { dataset: app, policy: p, primary: one, copies: [two] }
${extra}`,
  );
  return file;
}

/** Validators that pass: the sandbox holds the snapshot's absolute paths below it. */
const goodValidators =
  (): string => `        - { type: paths, expect: [{ path: "${src}/www", minFiles: 3 }, { path: /sources/app.sqlite, minSize: 4096 }] }
        - { type: sqlite, path: /sources/app.sqlite, queries: [{ sql: "select count(*) from fixed", expect: "1000" }] }
        - { type: command, command: "test -s .${src}/www/index.html" }`;

let good: string;

async function drill(args: string[]): Promise<{ r: RunResult; json: DrillJson }> {
  const r = await runCli(["--json", "drill", ...args], { env });
  let json: DrillJson;
  try {
    json = JSON.parse(r.stdout) as DrillJson;
  } catch {
    throw new Error(describeRun(["drill", ...args], r));
  }
  return { r, json };
}

async function validationRow(file: string) {
  const r = await runCli(["--json", "posture", "-c", file], { env });
  const json = JSON.parse(r.stdout) as PostureJson;
  return json.datasets[0]!.rows.find((row) => row.id === "validation")!;
}

beforeAll(async () => {
  if (!sqliteAvailable) return;
  base = await makeTempDir("drill");
  src = join(base, "src");
  db = join(base, "app.db");
  await writeFiles(src, {
    "www/index.html": "<h1>shop</h1>\n",
    "www/a.bin": randomData(3 * 1024 * 1024),
    "www/b.txt": "b\n".repeat(10_000),
    "notes/c.txt": "c\n",
  });
  await writeFile(join(base, "pw"), "drill-password\n");
  execFileSync("sqlite3", [
    db,
    "PRAGMA journal_mode=WAL; CREATE TABLE fixed (id INTEGER PRIMARY KEY, v TEXT); " +
      "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1000) " +
      "INSERT INTO fixed (v) SELECT hex(randomblob(32)) FROM c; CREATE TABLE log (t TEXT);",
  ]);
  env = { BULWARK_CATALOG: join(base, "catalog.db"), HOME: base };
  good = await config("good", goodValidators());
  // The database is written to while the backup runs: the copy must still be consistent.
  const writer = spawn("sh", [
    "-c",
    `while :; do sqlite3 '${db}' "INSERT INTO log VALUES (datetime())" || exit 1; done`,
  ]);
  try {
    const args = ["run", "-c", good, "--init"];
    const r = await runCli(args, { env });
    expect(r.code, describeRun(args, r)).toBe(0);
  } finally {
    writer.kill("SIGKILL");
  }
}, 120_000);
afterAll(removeTempDirs);

describe.skipIf(!sqliteAvailable)("bulwark drill", () => {
  it("drills each copy in turn: content compared, SQLite validated, RTO and RPO recorded", async () => {
    const first = await drill(["-c", good]);
    expect(first.r.code, describeRun(["drill"], first.r)).toBe(0);
    const d = first.json.drills[0]!;
    expect(d).toMatchObject({ dataset: "app", target: "one", status: "pass", findings: [] });
    expect(d.restore.files).toBe(5); // four files and the database
    expect(d.restore.bytes).toBeGreaterThan(3 * 1024 * 1024);
    expect(d.restore.durationMs).toBeGreaterThan(0);
    expect(d.restore.bytesPerSecond).toBeGreaterThan(0);
    expect(d.rpoMs).toBeGreaterThanOrEqual(0);
    expect(d.compare).toMatchObject({ files: 5, mismatches: 0 });
    expect(d.validators.map((v) => [v.kind, v.ok])).toEqual([
      ["paths", true],
      ["sqlite", true],
      ["command", true],
    ]);
    expect(d.validators[1]!.output).toContain("ok: PRAGMA integrity_check");
    expect(d.spotCheck).toMatchObject({ sampled: 4, mismatches: 0 });
    expect(d.isolation.netns).toBe(canIsolate);

    const second = await drill(["-c", good]);
    expect(second.json.drills[0]).toMatchObject({ target: "two", status: "pass" });
    const random = await drill(["-c", good, "--random-within", "30d"]);
    expect(random.json.drills[0]).toMatchObject({ target: "one", status: "pass" });

    const catalog = new Database(env.BULWARK_CATALOG, { readonly: true });
    try {
      const rows = catalog.prepare("SELECT target, status, details FROM drills ORDER BY id").all() as {
        target: string;
        status: string;
        details: string;
      }[];
      expect(rows.map((r) => [r.target, r.status])).toEqual([
        ["one", "pass"],
        ["two", "pass"],
        ["one", "pass"],
      ]);
      const details = JSON.parse(rows[0]!.details) as { restore: { durationMs: number }; rpoMs: number };
      expect(details.restore.durationMs).toBe(d.restore.durationMs);
      expect(details.rpoMs).toBe(d.rpoMs);
    } finally {
      catalog.close();
    }
    // No sandbox is left behind.
    expect((await readdir("/tmp")).filter((n) => n.startsWith("bulwark-drill-app-"))).toEqual([]);
  });

  it("posture: validation passes after verify and a drill; a failing validator turns it red with the reason", async () => {
    const verify = await runCli(["verify", "-c", good], { env });
    expect(verify.code, describeRun(["verify"], verify)).toBe(0);
    await drill(["-c", good]);
    const passing = await validationRow(good);
    expect(passing.status, JSON.stringify(passing)).toBe("pass");

    const wrongQuery = await config(
      "wrong-query",
      `        - { type: sqlite, path: /sources/app.sqlite, queries: [{ sql: "select count(*) from fixed", expect: "1001" }] }`,
    );
    const q = await drill(["-c", wrongQuery]);
    expect(q.r.code).toBe(1);
    expect(q.json.drills[0]!.status).toBe("fail");
    expect(q.json.drills[0]!.findings).toEqual([
      'validator sqlite /sources/app.sqlite: select count(*) from fixed: expected "1001", got "1000"',
    ]);
    const red = await validationRow(good);
    expect(red.status).toBe("fail");
    expect(red.reason).toMatch(
      /^the last drill \(from (one|two) at .*\) failed: validator sqlite \/sources\/app\.sqlite: select count\(\*\) from fixed: expected "1001", got "1000"$/,
    );

    const failingCommand = await config(
      "failing-command",
      `        - { type: command, name: app-selftest, command: "echo selftest failed >&2; exit 3", timeoutSeconds: 30 }`,
    );
    const c = await drill(["-c", failingCommand]);
    expect(c.r.code).toBe(1);
    expect(c.json.drills[0]!.findings).toEqual([
      "validator app-selftest: exited with code 3: selftest failed",
    ]);

    await drill(["-c", good]);
    expect((await validationRow(good)).status).toBe("pass");
  });

  it("tampered data on a copy fails its drill", async () => {
    const sizes = await Promise.all(
      (await packFiles(join(base, "two"))).map(async (p) => [p, (await stat(p)).size] as const),
    );
    const pack = sizes.sort((a, b) => b[1] - a[1])[0]![0];
    await flipByte(pack, 1000);
    try {
      const t = await drill(["-c", good, "--target", "two"]);
      expect(t.r.code).toBe(1);
      expect(t.json.drills[0]!.status).toBe("fail");
      expect(t.json.drills[0]!.restore.errors).toBeGreaterThan(0);
      expect(t.json.drills[0]!.findings.join("\n")).toMatch(/restore: .*a\.bin/);
      expect((await validationRow(good)).reason).toMatch(
        /the last drill \(from two at .*\) failed: restore: /,
      );
    } finally {
      await flipByte(pack, 1000);
    }
    expect((await drill(["-c", good, "--target", "two"])).json.ok).toBe(true);
  });

  it("the spot check finds a live file changed behind the backup's back", async () => {
    const file = join(src, "www", "b.txt");
    // A copy with the same timestamps to the nanosecond (cp -p), to put them back after the edit.
    const reference = join(base, "b.txt.reference");
    execFileSync("cp", ["-p", file, reference]);
    const original = await readFile(file);
    // Same size, same modification time, other content: an incremental backup would never read it again.
    await writeFile(file, Buffer.from(original.toString("utf8").replace("b\nb\n", "x\nx\n")));
    execFileSync("touch", ["-r", reference, file]);
    try {
      const s = await drill(["-c", good, "--target", "one"]);
      expect(s.r.code).toBe(1);
      expect(s.json.drills[0]!.spotCheck?.mismatches).toBe(1);
      expect(s.json.drills[0]!.findings).toEqual([
        `spot check: ${file}: bytes 0-19999 differ from the recorded content (its modification time is unchanged: it changed behind the backup's back)`,
      ]);
    } finally {
      execFileSync("cp", ["-p", reference, file]);
    }
  });

  describe.skipIf(!canIsolate && process.env.CI !== "true")("network isolation", () => {
    let server: Server;
    let port: number;
    beforeAll(async () => {
      server = createServer((s) => s.on("error", () => undefined).end("production\n"));
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      port = (server.address() as { port: number }).port;
    });
    afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

    it("a drill command cannot reach a TCP port on the host; without isolation it can", async () => {
      const connect =
        `require('net').connect(${port}, '127.0.0.1')` +
        `.on('connect', () => { console.log('reached production'); process.exit(0); })` +
        `.on('error', (e) => { console.log('cannot connect: ' + e.code); process.exit(7); })`;
      const file = await config(
        "reach",
        `        - { type: command, name: reach, command: ["${process.execPath}", "-e", ${JSON.stringify(connect)}] }`,
      );
      const isolated = await drill(["-c", file, "--target", "one"]);
      expect(isolated.json.drills[0]!.isolation.netns).toBe(true);
      expect(isolated.json.drills[0]!.validators[0]).toMatchObject({
        ok: false,
        message: "exited with code 7: cannot connect: ECONNREFUSED",
      });
      const open = await drill(["-c", file, "--target", "one", "--no-isolation"]);
      expect(open.json.drills[0]!.validators[0]).toMatchObject({ ok: true, output: "reached production" });
      expect(open.json.drills[0]!.isolation.note).toMatch(/without network isolation/);
    });
  });

  it("Ctrl-C removes the sandbox and kills the validator's command", async () => {
    const marker = `${Date.now() % 1000}.123`;
    const file = await config("slow", `        - { type: command, name: slow, command: "sleep 6${marker}" }`);
    const sandboxes = await makeTempDir("drill-sandboxes");
    const { child, result } = spawnNode([CLI, "drill", "-c", file, "--sandbox", sandboxes], { env });
    let stdout = "";
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no validator started: ${stdout}`)), 60_000);
      child.stdout.on("data", (b: Buffer) => {
        stdout += b.toString("utf8");
        if (stdout.includes("validator slow")) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(await readdir(sandboxes)).toHaveLength(1);
    child.kill("SIGINT");
    const r = await result;
    expect(r.code, describeRun(["drill"], r)).toBe(130);
    expect(await readdir(sandboxes)).toEqual([]);
    await new Promise((res) => setTimeout(res, 200));
    expect(spawnSync("pgrep", ["-f", `sleep 6${marker}`]).status).toBe(1); // no such process
  });

  it("bad input is a clear error", async () => {
    const cases: [string[], RegExp][] = [
      [["--dataset", "nope"], /unknown dataset "nope"[\s\S]*the datasets are app/],
      [["--dataset", "app", "--target", "nope"], /unknown target "nope"[\s\S]*the targets are one, two/],
      [["--snapshot", "abc", "--random-within", "3d"], /--snapshot and --random-within exclude each other/],
      [["--random-within", "soon"], /--random-within soon: /],
      [["--spot-check", "-1"], /--spot-check must be a whole number/],
      [["--dataset", "app", "--snapshot", "ffffffff"], /ffffffff/],
    ];
    for (const [args, message] of cases) {
      const all = ["drill", "-c", good, ...args];
      const r = await runCli(all, { env });
      expect(r.code, describeRun(all, r)).not.toBe(0);
      expect(r.stderr, describeRun(all, r)).toMatch(message);
    }
    const badConfig = await config(
      "bad",
      `        - { type: postgres, source: crm, queries: [{ sql: "select 1", expect: "1" }] }
        - { type: paths, expect: [{ path: "relative/path" }] }`,
    );
    const r = await runCli(["drill", "-c", badConfig], { env });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(
      `bad.yaml:13:29 datasets.app.drill.validators[0].source: the dataset has no postgres source named "crm"`,
    );
    expect(r.stderr).toContain(
      `bad.yaml:14:37 datasets.app.drill.validators[1].expect[0].path: "relative/path" is not a snapshot path`,
    );
  });
});
