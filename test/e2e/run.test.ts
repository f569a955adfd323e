/**
 * `bulwark run` end to end through the built CLI, on local targets (test/e2e/run-posture.test.ts covers SFTP
 * and S3): jobs in dependsOn order and skipped after a failed dependency; a copy target that is down fails
 * its copy (named, no secret) while the other copy and the primary's retention go on; the target catches up
 * when it is back, and what its retention removed is never sent again; retention touches only the job's
 * dataset in a shared repository; config sources (sqlite, command) with dataset and source hooks, and a
 * failing dump that saves nothing anywhere; the --json shape with --no-forget and --no-verify; a run killed
 * by SIGKILL mid-copy that the next run completes without re-sending what arrived; and what the catalog
 * records. Every CLI call gets its own BULWARK_CATALOG and HOME under a temporary directory.
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";

import Database from "better-sqlite3";
import ssh2 from "ssh2";
import { afterAll, describe, expect, it } from "vitest";

import {
  MiB,
  describeRun,
  makeTempDir,
  packFiles,
  randomData,
  removeTempDirs,
  runCli,
  spawnNode,
  CLI,
  writeFiles,
  type RunResult,
} from "./helpers.js";

// The JSON of `bulwark --json run`: { jobs: JobResult[], skipped } (src/ops/run-job.ts, src/cli/commands/run.ts).
interface BackupJson {
  target: string;
  status: string;
  snapshot?: string;
  summary?: Record<string, number>;
  skipped: { path: string; error: string }[];
  createdRepository?: boolean;
  error?: string;
}
interface CopyJson {
  target: string;
  status: string;
  snapshots: { source: string; target: string; alreadyThere: boolean }[];
  blobsCopied: number;
  bytesCopied: number;
  adoptedPacks: number;
  verifiedPacks: number;
  createdRepository?: boolean;
  error?: string;
}
interface ForgetJson {
  target: string;
  status: string;
  removed: string[];
  kept: number;
  locked: string[];
  error?: string;
}
interface JobJson {
  job: string;
  dataset: string;
  policy: string;
  status: string;
  backup: BackupJson;
  copies: CopyJson[];
  forget: ForgetJson[];
  durationMs: number;
}
interface RunJson {
  jobs: JobJson[];
  skipped: { job: string; reason: string }[];
}
interface SnapshotJson {
  id: string;
  time: string;
  paths: string[];
  dataset?: string;
  original?: string;
}

/** One describe's world: a directory, its catalog, the targets' passwords, configs written as JSON (YAML). */
class World {
  readonly passwords: Record<string, string> = {};
  readonly env: Record<string, string | undefined>;

  private constructor(readonly dir: string) {
    this.env = { BULWARK_CATALOG: join(dir, "state", "catalog.db"), HOME: dir };
  }

  static async create(label: string): Promise<World> {
    return new World(await makeTempDir(`run-${label}`));
  }

  path(...parts: string[]): string {
    return join(this.dir, ...parts);
  }

  /** A target entry of the config, with its own password in a file (made once per target name). */
  async target(name: string, location = this.path(name), extra: Record<string, unknown> = {}) {
    if (this.passwords[name] === undefined) {
      this.passwords[name] = `pw-${name}-${randomBytes(8).toString("hex")}`;
      await writeFile(this.path(`pw-${name}`), this.passwords[name] + "\n");
    }
    return {
      location,
      labels: { medium: "disk", site: "home", failureDomain: `fd-${name}` },
      password: { file: this.path(`pw-${name}`) },
      ...extra,
    };
  }

  /** Writes a config (JSON is YAML) and returns its path. */
  async config(file: string, config: Record<string, unknown>): Promise<string> {
    const path = this.path(file);
    await writeFile(path, JSON.stringify({ version: 1, ...config }, null, 2));
    return path;
  }

  cli(args: string[], timeoutMs = 120_000): Promise<RunResult> {
    return runCli(args, { env: this.env, timeoutMs });
  }

  /** `bulwark --json run -c CONFIG ARGS`: the exit code must be `code`; returns the parsed JSON. */
  async run(config: string, args: string[] = [], code = 0): Promise<{ r: RunResult; json: RunJson }> {
    const full = ["--json", "run", "--init", "-c", config, ...args];
    const r = await this.cli(full);
    expect(r.code, describeRun(full, r)).toBe(code);
    let json: RunJson;
    try {
      json = JSON.parse(r.stdout) as RunJson;
    } catch {
      throw new Error(`run printed no JSON:\n${describeRun(full, r)}`);
    }
    return { r, json };
  }

  /** The snapshots of a target's repository (a local directory), listed by `bulwark snapshots`. */
  async snapshots(target: string, location = this.path(target)): Promise<SnapshotJson[]> {
    const args = ["--json", "-r", location, "-p", this.path(`pw-${target}`), "snapshots"];
    const r = await this.cli(args);
    expect(r.code, describeRun(args, r)).toBe(0);
    return JSON.parse(r.stdout) as SnapshotJson[];
  }

  /** `bulwark --json CATALOG-ARGS` on this world's catalog. */
  async catalog<T>(args: string[]): Promise<T> {
    const full = ["--json", "catalog", ...args];
    const r = await this.cli(full);
    expect(r.code, describeRun(full, r)).toBe(0);
    return JSON.parse(r.stdout) as T;
  }
}

const labels = (s: SnapshotJson[]): string[] => s.map((x) => x.original ?? x.id);
/** A policy whose rule any of these configs meets, so `run` prints no rule warnings. */
const policy = (retention: Record<string, Record<string, number>> = {}) => ({
  rule: { copies: 1 },
  rpo: "24h",
  retention,
});

afterAll(removeTempDirs);

describe("jobs run in dependsOn order; a job whose dependency failed is skipped", () => {
  it("b dependsOn a: `run b a` and `run` both run a then b", async () => {
    const w = await World.create("order");
    await writeFiles(w.path("src-a"), { "a.txt": "a\n" });
    await writeFiles(w.path("src-b"), { "b.txt": "b\n" });
    // b is declared first: the order must come from dependsOn, not from the file or the command line.
    const config = await w.config("order.json", {
      targets: { "t-a": await w.target("t-a"), "t-b": await w.target("t-b") },
      datasets: {
        da: { sources: [{ type: "files", paths: [w.path("src-a")] }] },
        db: { sources: [{ type: "files", paths: [w.path("src-b")] }] },
      },
      policies: { p: policy() },
      jobs: {
        b: { dataset: "db", policy: "p", primary: "t-b", dependsOn: ["a"] },
        a: { dataset: "da", policy: "p", primary: "t-a" },
      },
    });
    for (const args of [["b", "a"], []]) {
      const { json } = await w.run(config, args);
      expect(
        json.jobs.map((j) => [j.job, j.status]),
        `run ${args.join(" ")}`,
      ).toEqual([
        ["a", "ok"],
        ["b", "ok"],
      ]);
      expect(json.skipped).toEqual([]);
    }
    expect((await w.snapshots("t-a")).length).toBe(2);
    expect((await w.snapshots("t-b")).length).toBe(2);
  });

  it("a's primary cannot be created: a fails, b and c (after b) are skipped and named, d runs, exit 1", async () => {
    const w = await World.create("skip");
    await writeFiles(w.path("src"), { "x.txt": "x\n" });
    await writeFile(w.path("a-regular-file"), "not a directory\n");
    const sources = [{ type: "files", paths: [w.path("src")] }];
    const config = await w.config("skip.json", {
      targets: {
        broken: await w.target("broken", w.path("a-regular-file", "repo")),
        "t-b": await w.target("t-b"),
        "t-c": await w.target("t-c"),
        "t-d": await w.target("t-d"),
      },
      datasets: { ds: { sources } },
      policies: { p: policy() },
      jobs: {
        c: { dataset: "ds", policy: "p", primary: "t-c", dependsOn: ["b"] },
        b: { dataset: "ds", policy: "p", primary: "t-b", dependsOn: ["a"] },
        a: { dataset: "ds", policy: "p", primary: "broken" },
        d: { dataset: "ds", policy: "p", primary: "t-d" },
      },
    });
    const { r, json } = await w.run(config, [], 1);
    expect(json.jobs.map((j) => [j.job, j.status])).toEqual([
      ["a", "failed"],
      ["d", "ok"],
    ]);
    const a = json.jobs[0]!;
    expect(a.backup.status).toBe("failed");
    expect(a.backup.error).toContain(w.path("a-regular-file"));
    expect(a.copies).toEqual([]);
    expect(a.forget).toEqual([]);
    expect(json.skipped.map((s) => s.job)).toEqual(["b", "c"]);
    expect(json.skipped[0]!.reason).toMatch(/\ba\b/);
    expect(json.skipped[1]!.reason).toMatch(/\bb\b/);
    expect(r.stderr).toMatch(/job b skipped/);
    expect(r.stderr).toMatch(/job c skipped/);
    // Skipped means nothing was done: their targets were never even created.
    expect(existsSync(w.path("t-b"))).toBe(false);
    expect(existsSync(w.path("t-c"))).toBe(false);
    expect((await w.snapshots("t-d")).length).toBe(1);
  });
});

describe("a copy target that is down, then back", () => {
  let w: World;
  let up: string;
  let down: string;
  const snaps: string[] = [];
  const secrets = (): string[] => [...Object.values(w.passwords), "nas-key-passphrase-31e4"];

  it("sets up: the first run copies to both targets", async () => {
    w = await World.create("down");
    await writeFiles(w.path("src"), { "a.txt": "version 1\n" });
    // An OpenSSH key that needs its passphrase, given as a secret reference.
    const key = ssh2.utils.generateKeyPairSync("ed25519", {
      passphrase: "nas-key-passphrase-31e4",
      cipher: "aes256-ctr",
      rounds: 4,
    });
    await writeFile(w.path("nas-key"), key.private, { mode: 0o600 });
    const common = {
      datasets: { app: { sources: [{ type: "files", paths: [w.path("src")] }] } },
      // The primary keeps 2, the NAS 1, the other copy 10.
      policies: { p: policy({ local: { keepLast: 2 }, nas: { keepLast: 1 }, off: { keepLast: 10 } }) },
      jobs: { app: { dataset: "app", policy: "p", primary: "local", copies: ["nas", "off"] } },
    };
    up = await w.config("up.json", {
      targets: { local: await w.target("local"), nas: await w.target("nas"), off: await w.target("off") },
      ...common,
    });
    // The NAS down: an SFTP server on a closed port, with a key file and a passphrase (a secret).
    w.env.TEST_NAS_PASSPHRASE = "nas-key-passphrase-31e4";
    down = await w.config("down.json", {
      targets: {
        local: await w.target("local"),
        nas: await w.target("nas", "sftp:backup@127.0.0.1:1/srv/nas", {
          credentials: {
            privateKey: { file: w.path("nas-key") },
            passphrase: { env: "TEST_NAS_PASSPHRASE" },
          },
        }),
        off: await w.target("off"),
      },
      ...common,
    });
    const { json } = await w.run(up);
    snaps.push(json.jobs[0]!.backup.snapshot!);
    expect(json.jobs[0]!.copies.map((c) => [c.target, c.status])).toEqual([
      ["nas", "ok"],
      ["off", "ok"],
    ]);
  });

  it("the copy to the down target fails, named and without secrets; the other copy and the primary's retention go on", async () => {
    for (const run of [2, 3]) {
      await writeFiles(w.path("src"), { "a.txt": `version ${run}\n` });
      const { r, json } = await w.run(down, [], 1);
      const job = json.jobs[0]!;
      snaps.push(job.backup.snapshot!);
      expect(job.status).toBe("failed");
      expect(job.backup.status).toBe("ok");
      const [nas, off] = job.copies;
      expect(nas).toMatchObject({ target: "nas", status: "failed", snapshots: [], blobsCopied: 0 });
      expect(nas!.error).toMatch(/127\.0\.0\.1:1/);
      expect(nas!.error).toMatch(/refused/i);
      expect(off).toMatchObject({ target: "off", status: "ok" });
      expect(off!.snapshots.map((s) => s.source)).toEqual([job.backup.snapshot]);
      expect(r.stderr).toMatch(/copy to nas FAILED: .*refused/i);
      for (const secret of secrets()) expect(r.stdout + r.stderr).not.toContain(secret);
      expect(job.forget.map((f) => [f.target, f.status])).toEqual([
        ["local", "ok"],
        ["nas", "skipped"],
        ["off", "ok"],
      ]);
      // The primary's retention applied: keepLast 2 removes the first snapshot in the third run.
      expect(job.forget[0]!.removed).toEqual(run === 3 ? [snaps[0]] : []);
    }
    expect(labels(await w.snapshots("local"))).toEqual([snaps[1], snaps[2]]);
    expect(labels(await w.snapshots("nas"))).toEqual([snaps[0]]);
    expect(labels(await w.snapshots("off"))).toEqual(snaps);
  });

  it("back up: the NAS gets every snapshot it missed, then its retention keeps 1", async () => {
    await writeFiles(w.path("src"), { "a.txt": "version 4\n" });
    const { json } = await w.run(up);
    const job = json.jobs[0]!;
    snaps.push(job.backup.snapshot!);
    expect(job.status).toBe("ok");
    const nas = job.copies.find((c) => c.target === "nas")!;
    expect(nas.status).toBe("ok");
    expect(nas.snapshots.map((s) => [s.source, s.alreadyThere])).toEqual([
      [snaps[1], false],
      [snaps[2], false],
      [snaps[3], false],
    ]);
    expect(job.forget.find((f) => f.target === "nas")).toMatchObject({ status: "ok", kept: 1 });
    expect(job.forget.find((f) => f.target === "nas")!.removed.length).toBe(3);
    expect(labels(await w.snapshots("nas"))).toEqual([snaps[3]]);
  });

  it("what the NAS's retention removed is never sent again: the next run copies only the newest", async () => {
    // The primary still holds snapshot 3, which the NAS's retention removed.
    expect(labels(await w.snapshots("local"))).toEqual([snaps[2], snaps[3]]);
    await writeFiles(w.path("src"), { "a.txt": "version 5\n" });
    const { json } = await w.run(up);
    const job = json.jobs[0]!;
    snaps.push(job.backup.snapshot!);
    const nas = job.copies.find((c) => c.target === "nas")!;
    expect(nas.snapshots.map((s) => s.source)).toEqual([snaps[4]]);
    expect(labels(await w.snapshots("nas"))).toEqual([snaps[4]]);
    expect(labels(await w.snapshots("off"))).toEqual(snaps);
  });
});

describe("retention applies to the job's dataset only", () => {
  it("a second dataset in the same primary keeps its snapshots; the copy target gets only the job's", async () => {
    const w = await World.create("datasets");
    await writeFiles(w.path("src-x"), { "x.txt": "x\n" });
    await writeFiles(w.path("src-y"), { "y.txt": "y\n" });
    const config = await w.config("datasets.json", {
      targets: { shared: await w.target("shared"), nas: await w.target("nas") },
      datasets: {
        dx: { sources: [{ type: "files", paths: [w.path("src-x")] }] },
        dy: { sources: [{ type: "files", paths: [w.path("src-y")] }] },
      },
      policies: {
        px: policy({ shared: { keepLast: 1 }, nas: { keepLast: 1 } }),
        py: policy({ shared: { keepLast: 5 } }),
      },
      jobs: {
        x: { dataset: "dx", policy: "px", primary: "shared", copies: ["nas"] },
        y: { dataset: "dy", policy: "py", primary: "shared" },
      },
    });
    const y: string[] = [];
    for (let i = 0; i < 2; i++) y.push((await w.run(config, ["y"])).json.jobs[0]!.backup.snapshot!);
    const x: string[] = [];
    for (let i = 0; i < 3; i++) {
      await writeFiles(w.path("src-x"), { "x.txt": `x ${i}\n` });
      const job = (await w.run(config, ["x"])).json.jobs[0]!;
      x.push(job.backup.snapshot!);
      const shared = job.forget.find((f) => f.target === "shared")!;
      expect(shared).toMatchObject({ status: "ok", kept: 1 });
      expect(shared.removed).toEqual(i === 0 ? [] : [x[i - 1]]);
      expect(job.copies[0]!.snapshots.map((s) => s.source)).toEqual([x[i]]);
    }
    const onShared = await w.snapshots("shared");
    expect(onShared.filter((s) => s.dataset === "dy").map((s) => s.id)).toEqual(y);
    expect(onShared.filter((s) => s.dataset === "dx").map((s) => s.id)).toEqual([x[2]]);
    const onNas = await w.snapshots("nas");
    expect(onNas.map((s) => [s.dataset, s.original])).toEqual([["dx", x[2]]]);
  });
});

describe("a keep rule that matches none of the dataset's snapshots", () => {
  it("removes nothing on that target and fails its step with forget's message and hint; the other targets go on", async () => {
    const w = await World.create("keep-nothing");
    await writeFiles(w.path("src"), { "a.txt": "one\n" });
    const config = await w.config("keep-nothing.json", {
      targets: { local: await w.target("local"), nas: await w.target("nas"), off: await w.target("off") },
      datasets: { app: { sources: [{ type: "files", paths: [w.path("src")] }] } },
      policies: {
        p: {
          rule: { copies: 1 },
          rpo: "24h",
          // keepTags alone: no snapshot of the job carries the tag, so the rule keeps none of them.
          retention: { local: { keepLast: 5 }, nas: { keepTags: ["never-set"] }, off: { keepLast: 1 } },
        },
      },
      jobs: { app: { dataset: "app", policy: "p", primary: "local", copies: ["nas", "off"] } },
    });
    const snaps: string[] = [];
    for (const run of [1, 2]) {
      await writeFiles(w.path("src"), { "a.txt": `version ${run}\n` });
      const { r, json } = await w.run(config, [], 1);
      const job = json.jobs[0]!;
      snaps.push(job.backup.snapshot!);
      expect(job.status).toBe("failed");
      expect(job.copies.map((c) => [c.target, c.status])).toEqual([
        ["nas", "ok"],
        ["off", "ok"],
      ]);
      expect(job.forget.map((f) => [f.target, f.status, f.removed.length])).toEqual([
        ["local", "ok", 0],
        ["nas", "failed", 0],
        ["off", "ok", run === 2 ? 1 : 0],
      ]);
      const nas = job.forget[1]!;
      expect(nas.error).toContain("the policy would remove every snapshot of a group; refusing");
      expect(nas.error).toContain("check the keep rules");
      expect(r.stderr).toContain("the policy would remove every snapshot of a group; refusing");
    }
    expect(labels(await w.snapshots("nas"))).toEqual(snaps);
    expect(labels(await w.snapshots("off"))).toEqual([snaps[1]]);

    // `bulwark forget` with the same rule refuses with the same message and hint, and removes nothing either.
    const args = ["-r", w.path("nas"), "-p", w.path("pw-nas"), "forget", "--keep-tag", "never-set"];
    const f = await w.cli(args);
    expect(f.code, describeRun(args, f)).not.toBe(0);
    const runError = (await w.run(config, [], 1)).json.jobs[0]!.forget[1]!.error!;
    for (const line of f.stderr.split("\n").filter((l) => l.trim() !== "")) {
      expect(runError).toContain(line.replace(/^(error|hint): /, ""));
    }
    expect(labels(await w.snapshots("nas")).length).toBe(3);
  });
});

describe("config sources and hooks", () => {
  let w: World;
  let config: string;
  let log: string;
  const dump = "CREATE TABLE t (x);\nINSERT INTO t VALUES (42);\n";

  /** The dataset: files, a SQLite database and a command, with dataset hooks and the command's own. */
  async function writeConfig(file: string, command: string[]): Promise<string> {
    const hook = (who: string) => ({
      before: `echo "${who}:$BULWARK_HOOK:\${BULWARK_HOOK_RESULT:-}" >> ${log}`,
      after: `echo "${who}:$BULWARK_HOOK:\${BULWARK_HOOK_RESULT:-}" >> ${log}`,
    });
    return w.config(file, {
      targets: { local: await w.target("local"), nas: await w.target("nas") },
      datasets: {
        app: {
          hooks: hook("dataset"),
          sources: [
            { type: "files", paths: [w.path("src")] },
            { type: "sqlite", path: w.path("live", "shop.db") },
            {
              type: "command",
              name: "dump",
              command,
              filename: "dump.sql",
              hooks: hook("source $BULWARK_SOURCE"),
            },
          ],
        },
      },
      policies: { p: policy() },
      jobs: { app: { dataset: "app", policy: "p", primary: "local", copies: ["nas"] } },
    });
  }

  const logLines = async (): Promise<string[]> =>
    (await readFile(log, "utf8")).split("\n").filter((l) => l !== "");

  it("run stores the sources under /sources, the copy restores them, hooks run around the backup", async () => {
    w = await World.create("sources");
    log = w.path("hooks.log");
    await writeFiles(w.path("src"), { "a.txt": "files too\n" });
    await mkdir(w.path("live"));
    const db = new Database(w.path("live", "shop.db"));
    db.exec("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)");
    db.prepare("INSERT INTO orders (item) VALUES (?), (?)").run("apple", "pear");
    db.close();
    config = await writeConfig("sources.json", [
      "sh",
      "-c",
      `echo dumping >> ${log}; printf '${dump.replace(/\n/g, "\\n")}'`,
    ]);
    const { json } = await w.run(config);
    expect(json.jobs[0]!.copies[0]!.status).toBe("ok");
    expect(await logLines()).toEqual([
      "dataset:before:",
      "source dump:before:",
      "dumping",
      "source dump:after:success",
      "dataset:after:success",
    ]);

    const ls = ["--json", "-r", w.path("local"), "-p", w.path("pw-local"), "ls", "latest"];
    const listed = await w.cli(ls);
    expect(listed.code, describeRun(ls, listed)).toBe(0);
    const paths = (JSON.parse(listed.stdout) as { entries: { path: string }[] }).entries.map((e) => e.path);
    expect(paths).toContain("/sources/dump/dump.sql");
    expect(paths).toContain("/sources/shop.sqlite");

    const out = w.path("restored");
    const restore = ["-r", w.path("nas"), "-p", w.path("pw-nas"), "restore", "latest", "--target", out];
    const restored = await w.cli(restore);
    expect(restored.code, describeRun(restore, restored)).toBe(0);
    expect(await readFile(join(out, "sources", "dump", "dump.sql"), "utf8")).toBe(dump);
    expect(await readFile(join(out, w.path("src", "a.txt")), "utf8")).toBe("files too\n");
    const copy = new Database(join(out, "sources", "shop.sqlite"), { readonly: true });
    try {
      expect(copy.prepare("SELECT item FROM orders ORDER BY id").pluck().all()).toEqual(["apple", "pear"]);
    } finally {
      copy.close();
    }
  });

  it("a failing dump fails the backup: no snapshot on any target, the after hooks ran, exit 1", async () => {
    const before = { local: await w.snapshots("local"), nas: await w.snapshots("nas") };
    await writeFile(log, "");
    const failing = await writeConfig("failing.json", [
      "sh",
      "-c",
      "echo 'CREATE TABLE half'; echo 'dump exploded' >&2; exit 3",
    ]);
    const { r, json } = await w.run(failing, [], 1);
    const job = json.jobs[0]!;
    expect(job.status).toBe("failed");
    expect(job.backup.status).toBe("failed");
    expect(job.backup.snapshot).toBeUndefined();
    expect(job.backup.error).toMatch(/dump exploded/);
    expect(job.copies).toEqual([]);
    expect(job.forget).toEqual([]);
    expect(r.stderr).toMatch(/backup to local FAILED/);
    expect(await logLines()).toEqual([
      "dataset:before:",
      "source dump:before:",
      "source dump:after:failure",
      "dataset:after:failure",
    ]);
    expect(await w.snapshots("local")).toEqual(before.local);
    expect(await w.snapshots("nas")).toEqual(before.nas);
  });
});

describe("--json, --no-forget, --no-verify, and the catalog after normal runs", () => {
  let w: World;
  let config: string;
  const backups: string[] = [];

  it("--json: each job's backup, copies, forget and locks with the fields of JobResult", async () => {
    w = await World.create("json");
    await writeFiles(w.path("src"), { "a.bin": randomData(64 * 1024), "b.txt": "b\n" });
    config = await w.config("json.json", {
      targets: { local: await w.target("local"), nas: await w.target("nas") },
      datasets: { app: { sources: [{ type: "files", paths: [w.path("src")] }] } },
      policies: { p: policy({ local: { keepLast: 1 }, nas: { keepLast: 1 } }) },
      jobs: { app: { dataset: "app", policy: "p", primary: "local", copies: ["nas"] } },
    });
    const { json } = await w.run(config);
    expect(Object.keys(json).sort()).toEqual(["jobs", "skipped"]);
    expect(json.skipped).toEqual([]);
    expect(json.jobs.length).toBe(1);
    const job = json.jobs[0]!;
    backups.push(job.backup.snapshot!);
    const hex = expect.stringMatching(/^[0-9a-f]{64}$/);
    const count = expect.any(Number);
    expect(job).toEqual({
      job: "app",
      dataset: "app",
      policy: "p",
      status: "ok",
      durationMs: count,
      backup: {
        target: "local",
        status: "ok",
        snapshot: hex,
        summary: expect.objectContaining({ filesNew: 2, filesChanged: 0, dataAdded: count }),
        skipped: [],
        createdRepository: true,
      },
      copies: [
        {
          target: "nas",
          status: "ok",
          snapshots: [{ source: job.backup.snapshot, target: hex, alreadyThere: false }],
          blobsCopied: count,
          bytesCopied: 64 * 1024 + 2,
          adoptedPacks: 0,
          verifiedPacks: count,
          createdRepository: true,
        },
      ],
      forget: [
        { target: "local", status: "ok", removed: [], kept: 1, locked: [] },
        { target: "nas", status: "ok", removed: [], kept: 1, locked: [] },
      ],
      // No target has immutability: no lock to keep up.
      locks: [],
    });
    expect(job.copies[0]!.blobsCopied).toBeGreaterThan(0);
    expect(job.copies[0]!.verifiedPacks).toBeGreaterThan(0);
    expect(job.copies[0]!.snapshots[0]!.target).not.toBe(job.backup.snapshot);
  });

  it("--no-forget leaves retention alone; --no-verify reads no pack back", async () => {
    await writeFiles(w.path("src"), { "c.bin": randomData(64 * 1024) });
    const { json } = await w.run(config, ["--no-forget", "--no-verify"]);
    const job = json.jobs[0]!;
    backups.push(job.backup.snapshot!);
    expect(job.status).toBe("ok");
    expect(job.forget).toEqual([]);
    const copy = job.copies[0]!;
    expect(copy.createdRepository).toBeUndefined();
    expect(copy.blobsCopied).toBeGreaterThan(0);
    expect(copy.bytesCopied).toBe(64 * 1024);
    expect(copy.verifiedPacks).toBe(0);
    expect(labels(await w.snapshots("local"))).toEqual(backups);
    expect(labels(await w.snapshots("nas"))).toEqual(backups);

    // Without the flags: packs verified again, and keepLast 1 applied on both targets.
    await writeFiles(w.path("src"), { "d.bin": randomData(64 * 1024) });
    const again = (await w.run(config)).json.jobs[0]!;
    backups.push(again.backup.snapshot!);
    expect(again.copies[0]!.verifiedPacks).toBeGreaterThan(0);
    expect(again.forget.map((f) => [f.target, f.status, f.removed.length, f.kept])).toEqual([
      ["local", "ok", 2, 1],
      ["nas", "ok", 2, 1],
    ]);
    expect(labels(await w.snapshots("local"))).toEqual([backups[2]]);
    expect(labels(await w.snapshots("nas"))).toEqual([backups[2]]);
  });

  it("the catalog lists the backup, copy and forget runs as ok, and the snapshots on every target", async () => {
    interface RunRow {
      kind: string;
      status: string;
      job?: string;
      dataset?: string;
      target?: string;
      snapshot?: string;
      finishedAt?: string;
      error?: string;
    }
    const runs = await w.catalog<RunRow[]>(["runs", "--limit", "0"]);
    const byKind = (kind: string): RunRow[] => runs.filter((r) => r.kind === kind);
    expect(byKind("backup").map((r) => r.target)).toEqual(["local", "local", "local"]);
    expect(byKind("copy").map((r) => r.target)).toEqual(["nas", "nas", "nas"]);
    expect(
      byKind("forget")
        .map((r) => r.target)
        .sort(),
    ).toEqual(["local", "local", "nas", "nas"]);
    expect(runs.length).toBe(3 + 3 + 4);
    for (const r of runs) {
      expect(r, JSON.stringify(r)).toMatchObject({ status: "ok", job: "app", dataset: "app" });
      expect(r.finishedAt).toBeDefined();
      expect(r.error).toBeUndefined();
    }
    // Newest first: the backup runs name the snapshots they made.
    expect(byKind("backup").map((r) => r.snapshot)).toEqual([...backups].reverse());

    const listed = await w.catalog<{ target: string; snapshot: string; original: string }[]>([
      "snapshots",
      "--dataset",
      "app",
    ]);
    const actual = [
      ...(await w.snapshots("local")).map((s) => ["local", s.id, s.original ?? s.id]),
      ...(await w.snapshots("nas")).map((s) => ["nas", s.id, s.original ?? s.id]),
    ];
    expect(listed.map((s) => [s.target, s.snapshot, s.original])).toEqual(actual);
  });
});

describe("SIGKILL during a run's copy, then run again", () => {
  it("the next run completes the copy without re-sending what arrived; both check; the catalog says interrupted", async () => {
    const w = await World.create("kill");
    const size = 200 * MiB;
    await mkdir(w.path("src"));
    await writeFile(w.path("src", "big.bin"), randomData(size));
    await writeFiles(w.path("src"), { "small.txt": "small\n" });
    const config = await w.config("kill.json", {
      targets: { local: await w.target("local"), nas: await w.target("nas") },
      datasets: { big: { sources: [{ type: "files", paths: [w.path("src")] }] } },
      // Retention on both: its exclusive locks must not be blocked by the killed run's stale locks.
      policies: { p: policy({ local: { keepLast: 5 }, nas: { keepLast: 5 } }) },
      jobs: { big: { dataset: "big", policy: "p", primary: "local", copies: ["nas"] } },
    });

    const { child, result } = spawnNode([CLI, "--json", "run", "--init", "-c", config], {
      env: w.env,
      timeoutMs: 120_000,
    });
    const killedPid = child.pid!;
    let arrived: string[] = [];
    const deadline = Date.now() + 90_000;
    while (Date.now() < deadline && child.exitCode === null) {
      arrived = await packFiles(w.path("nas")).catch(() => []);
      if (arrived.length >= 2) {
        child.kill("SIGKILL");
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const killed = await result;
    expect(killed.signal, describeRun(["run"], killed)).toBe("SIGKILL");
    // Killed mid-copy: packs arrived, no snapshot did.
    expect(await readdir(w.path("nas", "snapshots"))).toEqual([]);
    const first = await w.snapshots("local");
    expect(first.length).toBe(1);
    let arrivedBytes = 0;
    for (const p of arrived) arrivedBytes += (await stat(p)).size;

    // Listing the catalog marks the dead process's unfinished run: the copy, interrupted.
    interface RunRow {
      kind: string;
      status: string;
      pid: number;
      error?: string;
    }
    const ofKilled = async (): Promise<unknown[]> =>
      (await w.catalog<RunRow[]>(["runs", "--limit", "0"]))
        .filter((r) => r.pid === killedPid)
        .map((r) => [r.kind, r.status, r.error]);
    const interrupted = [
      ["copy", "failed", "interrupted"],
      ["backup", "ok", undefined],
    ];
    expect(await ofKilled()).toEqual(interrupted);

    const { json } = await w.run(config);
    const job = json.jobs[0]!;
    expect(job.status).toBe("ok");
    const copy = job.copies[0]!;
    expect(copy.status).toBe("ok");
    expect(copy.snapshots.map((s) => s.source)).toEqual([first[0]!.id, job.backup.snapshot]);
    // What arrived before the kill is not sent again (adopted, or indexed at a checkpoint before the kill).
    expect(copy.bytesCopied).toBeLessThanOrEqual(size + 6 - arrivedBytes + MiB);
    for (const p of arrived) expect(existsSync(p), p).toBe(true);
    expect(labels(await w.snapshots("nas"))).toEqual([first[0]!.id, job.backup.snapshot]);

    for (const target of ["local", "nas"]) {
      const args = ["-r", w.path(target), "-p", w.path(`pw-${target}`), "check", "--read-data"];
      const r = await w.cli(args);
      expect(r.code, describeRun(args, r)).toBe(0);
    }

    const runs = await w.catalog<RunRow[]>(["runs", "--limit", "0"]);
    expect(await ofKilled()).toEqual(interrupted);
    const ofSecond = runs.filter((r) => r.pid !== killedPid);
    expect(ofSecond.map((r) => [r.kind, r.status]).sort()).toEqual([
      ["backup", "ok"],
      ["copy", "ok"],
      ["forget", "ok"],
      ["forget", "ok"],
    ]);
  }, 180_000);
});

describe("a target without a repository is created only with --init", () => {
  it("without --init: exit 1 naming the target and what to do, nothing created", async () => {
    const w = await World.create("noinit");
    await writeFiles(w.path("src"), { "a.txt": "a\n" });
    const config = await w.config("noinit.json", {
      targets: { primary: await w.target("primary"), nas: await w.target("nas") },
      datasets: { app: { sources: [{ type: "files", paths: [w.path("src")] }] } },
      policies: { p: policy() },
      jobs: { j: { dataset: "app", policy: "p", primary: "primary", copies: ["nas"] } },
    });
    const args = ["--json", "run", "-c", config];
    const first = await w.cli(args);
    expect(first.code, describeRun(args, first)).toBe(1);
    expect(first.stderr).toMatch(/target primary holds no repository/);
    expect(first.stderr).toMatch(/--init/);
    expect(existsSync(w.path("primary", "config"))).toBe(false);

    // With the primary made, a copy target that lost its storage (an empty mount point) is not filled.
    await w.run(config, ["j"]);
    await rm(w.path("nas"), { recursive: true, force: true });
    await mkdir(w.path("nas"));
    const again = await w.cli(args);
    expect(again.code, describeRun(args, again)).toBe(1);
    const job = (JSON.parse(again.stdout) as RunJson).jobs[0]!;
    expect(job.backup.status).toBe("ok");
    expect(job.copies[0]!.status).toBe("failed");
    expect(job.copies[0]!.error).toMatch(/holds no repository/);
    expect(await readdir(w.path("nas"))).toEqual([]);
  });
});

describe("losing the primary while copies survive", () => {
  it("run --init re-creates the primary from the newest copy: same blob ids, snapshots back, the copies accept it", async () => {
    const w = await World.create("lost-primary");
    await writeFiles(w.path("src"), { "a.bin": randomData(256 * 1024), "b.txt": "b\n" });
    const config = await w.config("lost.json", {
      targets: {
        primary: await w.target("primary"),
        nas: await w.target("nas"),
        usb: await w.target("usb"),
      },
      datasets: { app: { sources: [{ type: "files", paths: [w.path("src")] }] } },
      policies: { p: policy() },
      jobs: { j: { dataset: "app", policy: "p", primary: "primary", copies: ["nas", "usb"] } },
    });
    await w.run(config);
    await writeFiles(w.path("src"), { "c.txt": "c\n" });
    await w.run(config, ["--no-forget"]);
    const onNas = await w.snapshots("nas");
    expect(onNas).toHaveLength(2);
    // The usb copy misses the second snapshot: the newest copy (nas) must be the one chosen.
    const usbSnapshots = await w.snapshots("usb");
    const args = ["-r", w.path("usb"), "-p", w.path("pw-usb"), "forget", usbSnapshots.at(-1)!.id];
    expect((await w.cli(args)).code).toBe(0);

    await rm(w.path("primary"), { recursive: true, force: true });
    const noInit = await w.cli(["run", "-c", config]);
    expect(noInit.code).toBe(1);
    expect(noInit.stderr).toMatch(/a lost primary is re-created from its copies/);

    const { r, json } = await w.run(config);
    const job = json.jobs[0]!;
    expect(job.status).toBe("ok");
    expect(r.stdout + r.stderr).not.toMatch(/blob ids differ/);
    const primary = await w.snapshots("primary");
    // The two snapshots copied back from nas, then the new backup, which found its parent among them.
    expect(primary).toHaveLength(3);
    expect(labels(primary).slice(0, 2)).toEqual(labels(onNas));
    expect(job.backup.summary).toMatchObject({ filesNew: 0, filesChanged: 0 });
    expect(job.copies.map((c) => [c.target, c.status])).toEqual([
      ["nas", "ok"],
      ["usb", "ok"],
    ]);
    // The new snapshot reached nas without resending data: the blob ids are the copy set's.
    expect(job.copies[0]!.bytesCopied).toBeLessThan(64 * 1024);
    const check = await w.cli(["-r", w.path("primary"), "-p", w.path("pw-primary"), "check", "--read-data"]);
    expect(check.code, describeRun(["check"], check)).toBe(0);
  });

  it("a copy target that cannot be opened stops the re-creation, naming bulwark copy as the way", async () => {
    const w = await World.create("lost-primary-down");
    await writeFiles(w.path("src"), { "a.txt": "a\n" });
    const config = await w.config("down.json", {
      targets: { primary: await w.target("primary"), nas: await w.target("nas") },
      datasets: { app: { sources: [{ type: "files", paths: [w.path("src")] }] } },
      policies: { p: policy() },
      jobs: { j: { dataset: "app", policy: "p", primary: "primary", copies: ["nas"] } },
    });
    await w.run(config);
    await rm(w.path("primary"), { recursive: true, force: true });
    await writeFile(w.path("pw-nas"), "not-the-password\n");
    const { json } = await w.run(config, [], 1);
    expect(json.jobs[0]!.backup.error).toMatch(
      /target primary holds no repository, and copy target nas cannot be opened to re-create it from: .*bulwark copy -c CONFIG --from nas --to primary --init/,
    );
    expect(existsSync(w.path("primary", "config"))).toBe(false);
  });
});

describe("the catalog is an index, not the backups", () => {
  it("a damaged catalog file does not stop a run: it warns with the way out and the backup and copy happen", async () => {
    const w = await World.create("badcatalog");
    await writeFiles(w.path("src"), { "a.txt": "a\n" });
    const config = await w.config("badcatalog.json", {
      targets: { primary: await w.target("primary"), nas: await w.target("nas") },
      datasets: { app: { sources: [{ type: "files", paths: [w.path("src")] }] } },
      policies: { p: policy() },
      jobs: { j: { dataset: "app", policy: "p", primary: "primary", copies: ["nas"] } },
    });
    await mkdir(w.path("state"), { recursive: true });
    await writeFile(
      w.env.BULWARK_CATALOG!,
      "this is not a database, it was overwritten by mistake\n".repeat(100),
    );
    const { r, json } = await w.run(config);
    expect(json.jobs[0]!.status).toBe("ok");
    expect(r.stderr).toMatch(/not recorded in the catalog/);
    expect(r.stderr).toMatch(/catalog rebuild/);
    expect((await w.snapshots("nas")).length).toBe(1);
  });
});
