/**
 * A config dataset as a backup: planDatasetBackup turns its sources into paths, excludes and virtual files;
 * runWithDatasetHooks runs the dataset's and the sources' hooks around the backup in order, and every
 * `after` whose `before` was started runs, also when the backup, a later `before` or a timeout failed.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveConfig } from "../../src/config/load.js";
import type { Dataset } from "../../src/config/types.js";
import { ExcludeMatcher } from "../../src/snapshot/exclude.js";
import { backup } from "../../src/snapshot/archiver.js";
import { readSnapshotFile } from "../../src/sources/command.js";
import { planDatasetBackup, runWithDatasetHooks } from "../../src/sources/dataset.js";
import { haveTool, memoryRepository, snapshotCount, type TestRepository } from "./helpers.js";

let t: TestRepository;
let dir: string;
let log: string;
beforeAll(async () => {
  t = await memoryRepository();
  dir = await mkdtemp(join(tmpdir(), "bulwark-dataset-test-"));
  log = join(dir, "hooks.log");
});
afterAll(async () => {
  await t.close();
  await rm(dir, { recursive: true, force: true });
});

/** A dataset as the config loader resolves it from YAML (sources indented under `app:`). */
function dataset(yaml: string, env: Record<string, string> = {}): Dataset {
  const text = `version: 1
targets:
  local:
    location: /var/backups/x
    labels: { medium: disk, site: home, failureDomain: a }
datasets:
  app:
${yaml}
policies:
  p: { rule: { copies: 1 }, rpo: 24h }
jobs:
  j: { dataset: app, policy: p, primary: local }
`;
  const r = resolveConfig(text, "bulwark.yaml", { env, fileReadable: () => true });
  expect(r.errors).toEqual([]);
  return r.config!.datasets.app!;
}

const record = (what: string): string =>
  `echo "${what} $BULWARK_HOOK \${BULWARK_HOOK_RESULT:-} \${BULWARK_SOURCE:-}" >> '${log}'`;
const logged = async (): Promise<string[]> =>
  (await readFile(log, "utf8").catch(() => "")).split("\n").filter((l) => l !== "");

describe("planDatasetBackup", () => {
  it("turns files sources into paths and excludes, the others into virtual files under /sources", async () => {
    await writeFile(join(dir, "pg.password"), "secret\n");
    const d = dataset(`    sources:
      - type: files
        paths: [/srv/app, /srv/app/sub, /etc/app/]
        excludes: ["*.tmp"]
      - type: files
        paths: [/var/www]
        excludes: ["*.tmp", cache]
      - type: sqlite
        path: /var/lib/app/app.db
      - type: command
        name: ldap
        command: [slapcat]
        filename: ldap.ldif
      - type: postgres
        database: shop
        password: { file: ${join(dir, "pg.password")} }
      - type: postgres
        name: big
        database: warehouse
        format: directory
        jobs: 4
        globals: false
      - type: postgres
        name: cluster
        all: true`);
    const plan = planDatasetBackup(d, {});
    expect(plan.paths).toEqual(["/etc/app", "/srv/app", "/var/www"]);
    expect(plan.excludes).toEqual(["*.tmp", "cache"]);
    expect(plan.virtualFiles.map((v) => v.path)).toEqual([
      "/sources/app.sqlite",
      "/sources/ldap/ldap.ldif",
      "/sources/shop/db.pgdump",
      "/sources/shop/globals.sql",
      "/sources/big/db.dir",
      "/sources/cluster/databases",
      "/sources/cluster/globals.sql",
    ]);
    expect(plan.descriptions).toEqual([
      "files /srv/app, /srv/app/sub, /etc/app/",
      "files /var/www",
      "sqlite app -> /sources/app.sqlite",
      "command ldap -> /sources/ldap/ldap.ldif",
      "postgres shop (database shop, custom format) -> /sources/shop/db.pgdump, /sources/shop/globals.sql",
      "postgres big (database warehouse, directory format, 4 jobs) -> /sources/big/db.dir/",
      "postgres cluster (every database, custom format) -> /sources/cluster/databases/, /sources/cluster/globals.sql",
    ]);
  });

  it("a dataset of sources only has no paths; a password that no longer resolves fails before any hook", async () => {
    const d = dataset(
      `    hooks: { before: ${JSON.stringify(record("dataset"))} }
    sources:
      - type: postgres
        database: shop
        password: { env: GONE }`,
      { GONE: "x" },
    );
    expect(() => planDatasetBackup(d, { GONE: "x" })).not.toThrow();
    expect(planDatasetBackup(d, { GONE: "x" }).paths).toEqual([]);
    await rm(log, { force: true });
    await expect(runWithDatasetHooks(d, {}, () => Promise.resolve())).rejects.toThrow(
      /the password variable GONE is not set/,
    );
    expect(await logged()).toEqual([]);
  });
});

describe("runWithDatasetHooks", () => {
  const hooked = (failing?: string, extra = ""): Dataset =>
    dataset(`    hooks:
      before: ${JSON.stringify(record("dataset"))}
      after: ${JSON.stringify(record("dataset"))}
    sources:
      - type: files
        paths: [${dir}]
        hooks: { before: ${JSON.stringify(failing === "files" ? "echo cannot freeze >&2; exit 4" : record("files"))}, after: ${JSON.stringify(record("files"))} }
      - type: command
        name: one
        command: "echo one"
        filename: one.txt
        hooks: { before: ${JSON.stringify(record("one"))}, after: ${JSON.stringify(record("one"))}${extra} }
      - type: command
        name: two
        command: "echo two"
        filename: two.txt
        hooks: { after: ${JSON.stringify(record("two"))} }`);

  it("runs every before in order, the backup, then every after in reverse order", async () => {
    await rm(log, { force: true });
    const lines: string[] = [];
    const value = await runWithDatasetHooks(
      hooked(),
      { PATH: process.env.PATH },
      async (plan) => {
        await writeFile(join(dir, "marker"), "x");
        execFileSync("sh", ["-c", `echo backup >> '${log}'`]);
        return plan.virtualFiles.map((v) => v.path);
      },
      (line) => lines.push(line),
    );
    expect(value).toEqual(["/sources/one/one.txt", "/sources/two/two.txt"]);
    expect(await logged()).toEqual([
      "dataset before  ",
      "files before  ",
      "one before  one",
      "backup",
      "two after success two",
      "one after success one",
      "files after success ",
      "dataset after success ",
    ]);
    expect(lines).toEqual([]); // the hooks wrote to a file, not to their output
  });

  it("a failing before stops the backup; the afters of the hooks started so far still run", async () => {
    await rm(log, { force: true });
    let ran = false;
    await expect(
      runWithDatasetHooks(hooked("files"), {}, () => {
        ran = true;
        return Promise.resolve();
      }),
    ).rejects.toThrow(
      /hook before of files source 1 \(`echo cannot freeze >&2; exit 4`\) exited with code 4[\s\S]*cannot freeze/,
    );
    expect(ran).toBe(false);
    // The files source's after runs (its before was started: a half-done freeze must be thawed); the command
    // sources' hooks were never reached.
    expect(await logged()).toEqual(["dataset before  ", "files after failure ", "dataset after failure "]);
  });

  it("a failing backup: every after runs and learns the outcome; the backup's error is kept", async () => {
    await rm(log, { force: true });
    await expect(
      runWithDatasetHooks(hooked(), {}, () => Promise.reject(new Error("pg_dump exited with code 1"))),
    ).rejects.toThrow("pg_dump exited with code 1");
    expect(await logged()).toEqual([
      "dataset before  ",
      "files before  ",
      "one before  one",
      "two after failure two",
      "one after failure one",
      "files after failure ",
      "dataset after failure ",
    ]);
  });

  it("a hook hanging past its timeout gives a clear error and the afters still run", async () => {
    await rm(log, { force: true });
    const d = dataset(`    hooks:
      before: ${JSON.stringify(record("dataset"))}
      after: ${JSON.stringify(record("dataset"))}
    sources:
      - type: command
        name: frozen
        command: "echo x"
        filename: x
        hooks: { before: "sleep 30", after: ${JSON.stringify(record("frozen"))}, timeoutSeconds: 0.3 }`);
    const started = Date.now();
    await expect(runWithDatasetHooks(d, {}, () => Promise.resolve())).rejects.toThrow(
      /hook before of source frozen \(`sleep 30`\) timed out after 0\.3 s and was killed/,
    );
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(await logged()).toEqual([
      "dataset before  ",
      "frozen after failure frozen",
      "dataset after failure ",
    ]);
  });

  it("a failing after fails the run, names itself, and the outer afters still run", async () => {
    await rm(log, { force: true });
    const d = dataset(`    hooks: { after: ${JSON.stringify(record("dataset"))} }
    sources:
      - type: command
        name: a
        command: "echo a"
        filename: a
        hooks: { after: "echo still frozen >&2; exit 5" }`);
    await expect(runWithDatasetHooks(d, {}, () => Promise.resolve("ok"))).rejects.toThrow(
      /hook after of source a \(`echo still frozen >&2; exit 5`\) exited with code 5[\s\S]*still frozen/,
    );
    expect(await logged()).toEqual(["dataset after failure "]);
  });

  it("hands the hooks' output lines to log, named by their hook", async () => {
    const lines: string[] = [];
    const d = dataset(`    hooks: { before: "echo freezing; echo warn >&2" }
    sources:
      - type: sqlite
        path: /nonexistent.db
        hooks: { after: "echo thawed $BULWARK_DATASET" }`);
    await runWithDatasetHooks(
      d,
      {},
      () => Promise.resolve(),
      (l) => lines.push(l),
    );
    expect(lines.sort()).toEqual([
      "hook after of source nonexistent: thawed app",
      "hook before of dataset app: freezing",
      "hook before of dataset app: warn",
    ]);
  });
});

describe.skipIf(!haveTool("sqlite3", "sqlite3"))("a dataset's backup", () => {
  it("backs up files, a command and a SQLite database between the hooks; a failing source saves nothing", async () => {
    const data = join(dir, "data");
    await mkdir(data, { recursive: true });
    await writeFile(join(data, "keep.txt"), "kept\n");
    await writeFile(join(data, "skip.tmp"), "skipped\n");
    const db = join(dir, "app.db");
    execFileSync("sqlite3", [db, "CREATE TABLE t (x); INSERT INTO t VALUES (1), (2);"]);
    await rm(log, { force: true });
    const d =
      dataset(`    hooks: { before: ${JSON.stringify(record("dataset"))}, after: ${JSON.stringify(record("dataset"))} }
    sources:
      - type: files
        paths: [${data}]
        excludes: ["*.tmp"]
      - type: sqlite
        path: ${db}
      - type: command
        name: numbers
        command: seq 1 5
        filename: numbers.txt`);
    const result = await runWithDatasetHooks(d, process.env, async (plan) =>
      backup(t.repo, t.pool, {
        paths: plan.paths,
        virtualFiles: plan.virtualFiles,
        excludes: await ExcludeMatcher.fromOptions(plan.excludes, [], process.env),
        dataset: d.name,
      }),
    );
    expect(result.snapshot.paths).toEqual(
      [data, "/sources/app.sqlite", "/sources/numbers/numbers.txt"].sort(),
    );
    const read = async (path: string): Promise<string> => {
      const parts: Buffer[] = [];
      for await (const b of readSnapshotFile(t.repo, result.snapshot.tree, path)) parts.push(b);
      return Buffer.concat(parts).toString("utf8");
    };
    expect(await read(join(data, "keep.txt"))).toBe("kept\n");
    await expect(read(join(data, "skip.tmp"))).rejects.toThrow(/not in the snapshot/);
    expect(await read("/sources/numbers/numbers.txt")).toBe("1\n2\n3\n4\n5\n");
    expect((await read("/sources/app.sqlite")).startsWith("SQLite format 3")).toBe(true);
    expect(await logged()).toEqual(["dataset before  ", "dataset after success "]);

    const before = await snapshotCount(t.repo);
    const failing = dataset(`    sources:
      - type: command
        name: broken
        command: "echo half; echo dump broke >&2; exit 3"
        filename: dump.sql`);
    await expect(
      runWithDatasetHooks(failing, process.env, (plan) =>
        backup(t.repo, t.pool, { paths: plan.paths, virtualFiles: plan.virtualFiles }),
      ),
    ).rejects.toThrow(/command of source broken exited with code 3[\s\S]*dump broke/);
    expect(await snapshotCount(t.repo)).toBe(before);
  });
});

describe("backup with readRoot (dr failback)", () => {
  it("reads each path P from ROOT+P and records it as P: the same tree as a backup of P itself", async () => {
    const original = join(dir, "orig", "srv", "app");
    const root = join(dir, "recovered");
    const moved = join(root, original);
    for (const d of [original, moved]) {
      await mkdir(join(d, "sub"), { recursive: true });
      await writeFile(join(d, "a.txt"), "alpha\n");
      await writeFile(join(d, "sub", "b.txt"), "beta\n".repeat(1000));
    }
    await writeFile(join(moved, "only-recovered.txt"), "written at the recovery site\n");
    const viaRoot = await backup(t.repo, t.pool, { paths: [original], readRoot: root });
    expect(viaRoot.snapshot.paths).toEqual([original]);
    expect(viaRoot.snapshot.skipped).toBeUndefined();
    const chunks: Buffer[] = [];
    for await (const c of readSnapshotFile(t.repo, viaRoot.snapshot.tree, `${original}/only-recovered.txt`))
      chunks.push(c);
    expect(Buffer.concat(chunks).toString()).toBe("written at the recovery site\n");
    const nested: Buffer[] = [];
    for await (const c of readSnapshotFile(t.repo, viaRoot.snapshot.tree, `${original}/sub/b.txt`))
      nested.push(c);
    expect(Buffer.concat(nested).toString()).toBe("beta\n".repeat(1000));
    // A path missing under the root is reported under its snapshot path.
    const missing = await backup(t.repo, t.pool, { paths: [original, "/nonexistent/x"], readRoot: root });
    expect(missing.snapshot.skipped?.map((s) => s.path)).toEqual(["/nonexistent"]);
  });
});
