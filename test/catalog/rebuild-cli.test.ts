/**
 * `bulwark catalog rebuild` end to end through the built CLI (npm run build) against real repositories: two
 * local targets, one holding backups of two datasets, the other a `bulwark copy` of them plus a backup of
 * its own. The rebuild must record every snapshot with its dataset and the copies between the targets;
 * deleting the catalog and rebuilding gives the same snapshots (a lost catalog loses nothing the
 * repositories hold); a forgotten snapshot leaves the catalog; a target made unreachable keeps its rows and
 * reports why, scrubbed of its password; a damaged catalog file is a clear error, never a crash.
 */
import { rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { Catalog } from "../../src/catalog/catalog.js";
import {
  TestRepo,
  describeRun,
  makeTempDir,
  removeTempDirs,
  runCli,
  writeFiles,
  type RunResult,
  type SnapshotJson,
} from "../e2e/helpers.js";

interface RebuildJson {
  catalog: string;
  targets: Array<{ name: string; reachable: boolean; snapshots: number; removed?: number; error?: string }>;
  snapshots: number;
  copies: number;
}

interface SnapshotRowJson {
  target: string;
  snapshot: string;
  original: string;
  dataset?: string;
  time: string;
  hostname: string;
  paths: string[];
  tags: string[];
  seenAt: string;
}

const registered = (await runCli(["catalog", "--help"])).stdout.includes("Usage: bulwark catalog");
if (!registered && process.env.CI === "true") {
  throw new Error("bulwark catalog is not registered in src/cli/main.ts (registerCatalog)");
}

let base: string;
let appSrc: string;
let docsSrc: string;
let configFile: string;
let stateDir: string;
let catalogFile: string;
let local: TestRepo;
let nas: TestRepo;

/** Runs `bulwark ARGS` with the catalog in the test's state directory. */
function cli(args: string[]): Promise<RunResult> {
  return runCli(args, { env: { BULWARK_STATE_DIR: stateDir } });
}

async function json<T>(args: string[], code = 0): Promise<{ value: T; run: RunResult }> {
  const full = ["--json", ...args];
  const run = await cli(full);
  expect(run.code, describeRun(full, run)).toBe(code);
  return { value: JSON.parse(run.stdout) as T, run };
}

function configText(): string {
  const target = (name: string, repo: TestRepo, labels: string): string =>
    `  ${name}:\n    location: ${repo.dir}\n    labels: { ${labels} }\n    password: { file: ${repo.passwordFile} }\n`;
  return [
    "version: 1",
    "targets:",
    target("local", local, "medium: disk, site: home, failureDomain: server-1").trimEnd(),
    target("nas", nas, "medium: nas, site: office, offsite: true, failureDomain: nas-1").trimEnd(),
    "datasets:",
    `  app: { sources: [{ type: files, paths: [${appSrc}] }] }`,
    `  docs: { sources: [{ type: files, paths: [${docsSrc}] }] }`,
    "policies:",
    "  standard: { rule: 3-2-1, rpo: 24h }",
    "jobs:",
    "  app-nightly: { dataset: app, policy: standard, primary: local, copies: [nas] }",
    "  docs-nightly: { dataset: docs, policy: standard, primary: local, copies: [nas] }",
    "",
  ].join("\n");
}

/** The catalog's snapshots without the time they were seen (which every rebuild sets anew). */
function withoutSeen(rows: SnapshotRowJson[]): Omit<SnapshotRowJson, "seenAt">[] {
  return rows.map(({ seenAt: _seen, ...rest }) => rest);
}

describe.skipIf(!registered)("bulwark catalog rebuild (local targets)", () => {
  let localSnapshots: SnapshotJson[];
  let nasSnapshots: SnapshotJson[];

  beforeAll(async () => {
    base = await makeTempDir("catalog");
    appSrc = join(base, "app");
    docsSrc = join(base, "docs");
    stateDir = join(base, "state");
    catalogFile = join(stateDir, "catalog.db");
    await writeFiles(appSrc, { "a.txt": "alpha\n", "dir/b.txt": "beta\n" });
    await writeFiles(docsSrc, { "readme.md": "# docs\n" });

    local = await TestRepo.init(join(base, "local"));
    await local.backup([appSrc]);
    await writeFiles(appSrc, { "c.txt": "gamma\n" });
    await local.backup([appSrc]);
    await local.backup([docsSrc], ["--tag", "docs"]);

    // The NAS gets copies of everything on local (its own password: the copy re-encrypts), then a backup of
    // its own that is no copy.
    const nasDir = join(base, "nas");
    const nasPassword = join(base, "nas.password");
    await writeFile(nasPassword, "pw-nas-secret\n");
    const copyArgs = ["copy", "--from", local.dir, "--to", nasDir, "--init"];
    const copied = await runCli([
      ...copyArgs,
      "--from-password-file",
      local.passwordFile,
      "--to-password-file",
      nasPassword,
    ]);
    expect(copied.code, describeRun(copyArgs, copied)).toBe(0);
    nas = new TestRepo(nasDir, nasPassword, "pw-nas-secret");
    await writeFiles(appSrc, { "d.txt": "delta\n" });
    await nas.backup([appSrc]);

    localSnapshots = await local.snapshots();
    nasSnapshots = await nas.snapshots();
    expect(localSnapshots).toHaveLength(3);
    expect(nasSnapshots).toHaveLength(4);

    configFile = join(base, "bulwark.yaml");
    await writeFile(configFile, configText());
  });
  afterAll(removeTempDirs);

  it("records every snapshot of every target with its dataset, and the copies between them", async () => {
    const { value: summary, run } = await json<RebuildJson>(["catalog", "rebuild", "-c", configFile]);
    expect(run.stderr).toBe("");
    expect(summary).toEqual({
      catalog: catalogFile,
      targets: [
        { name: "local", reachable: true, snapshots: 3 },
        { name: "nas", reachable: true, snapshots: 4 },
      ],
      snapshots: 7,
      copies: 3,
    });

    const { value: rows } = await json<SnapshotRowJson[]>(["catalog", "snapshots"]);
    expect(rows.map((r) => [r.target, r.snapshot]).sort()).toEqual(
      [...localSnapshots.map((s) => ["local", s.id]), ...nasSnapshots.map((s) => ["nas", s.id])].sort(),
    );
    const localById = new Map(localSnapshots.map((s) => [s.id, s]));
    for (const r of rows) {
      expect(r.dataset).toBe(r.paths[0] === docsSrc ? "docs" : "app");
      if (r.target === "local") expect(r.original).toBe(r.snapshot);
    }
    // Three NAS snapshots are copies of the local ones (same time, host, paths and tags); one is its own.
    const nasCopies = rows.filter((r) => r.target === "nas" && r.original !== r.snapshot);
    expect(nasCopies).toHaveLength(3);
    for (const c of nasCopies) {
      const source = localById.get(c.original);
      expect(source, `original ${c.original} of ${c.snapshot}`).toBeDefined();
      expect({ time: c.time, paths: c.paths, tags: c.tags }).toEqual({
        time: new Date(source!.time).toISOString(),
        paths: source!.paths,
        tags: source!.tags,
      });
    }
    expect(
      (await json<SnapshotRowJson[]>(["catalog", "snapshots", "--target", "nas", "--dataset", "docs"])).value,
    ).toHaveLength(1);

    // The derived copies, read from the catalog file itself.
    const catalog = Catalog.open(catalogFile);
    try {
      const copies = catalog.copies();
      expect(copies.map((c) => [c.from, c.to, c.sourceSnapshot, c.targetSnapshot, c.derived]).sort()).toEqual(
        nasCopies.map((c) => ["local", "nas", c.original, c.snapshot, true]).sort(),
      );
      expect(copies.filter((c) => c.dataset === "docs")).toHaveLength(1);
    } finally {
      catalog.close();
    }

    // Readable output: a table per target and a summary line; one event per target.
    const text = await cli(["catalog", "rebuild", "-c", configFile]);
    expect(text.code, describeRun(["catalog", "rebuild"], text)).toBe(0);
    expect(text.stdout).toMatch(/^Target +Reachable +Snapshots +Note\nlocal +yes +3\nnas +yes +4\n/);
    expect(text.stdout).toContain(`catalog ${catalogFile}: 7 snapshots from 2 of 2 targets, 3 copies`);
    const events = await cli(["catalog", "events", "--limit", "2"]);
    expect(events.code).toBe(0);
    expect(events.stdout).toContain("catalog rebuild: target nas: 4 snapshots");
    expect(events.stdout).toContain("catalog rebuild: target local: 3 snapshots");
    expect(events.stdout).toMatch(/2 events\n$/);
  });

  it("a deleted catalog is rebuilt with the same snapshots", async () => {
    const before = (await json<SnapshotRowJson[]>(["catalog", "snapshots"])).value;
    for (const f of [catalogFile, `${catalogFile}-wal`, `${catalogFile}-shm`]) await rm(f, { force: true });
    const none = await cli(["catalog", "snapshots"]);
    expect(none.code).toBe(0);
    expect(none.stderr).toContain(`no catalog at ${catalogFile} yet`);

    const { value: summary } = await json<RebuildJson>(["catalog", "rebuild", "-c", configFile]);
    expect(summary.snapshots).toBe(7);
    expect(summary.copies).toBe(3);
    const after = (await json<SnapshotRowJson[]>(["catalog", "snapshots"])).value;
    expect(withoutSeen(after)).toEqual(withoutSeen(before));
  });

  it("a forgotten snapshot leaves the catalog at the next rebuild", async () => {
    const oldest = localSnapshots[0]!;
    await local.ok(["forget", oldest.id]);
    const { value: summary } = await json<RebuildJson>(["catalog", "rebuild", "-c", configFile]);
    expect(summary.targets[0]).toEqual({ name: "local", reachable: true, snapshots: 2, removed: 1 });
    const rows = (await json<SnapshotRowJson[]>(["catalog", "snapshots", "--target", "local"])).value;
    expect(rows.map((r) => r.snapshot)).not.toContain(oldest.id);
    expect(rows).toHaveLength(2);
    // Its copy on the NAS is still there, but no longer shares its original with a snapshot on another target:
    // the rebuild finds two copy relations; the catalog keeps the record of the third copy (history).
    expect(summary.copies).toBe(2);
    const catalog = Catalog.open(catalogFile);
    try {
      expect(catalog.copies().map((c) => c.sourceSnapshot)).toContain(oldest.id);
    } finally {
      catalog.close();
    }
  });

  it("an unreachable target keeps its rows and reports why, without its password", async () => {
    const nasBefore = (await json<SnapshotRowJson[]>(["catalog", "snapshots", "--target", "nas"])).value;
    await rename(nas.dir, `${nas.dir}.moved`);
    try {
      const { value: summary, run } = await json<RebuildJson>(["catalog", "rebuild", "-c", configFile], 3);
      const nasSummary = summary.targets.find((t) => t.name === "nas");
      expect(nasSummary).toMatchObject({ name: "nas", reachable: false, snapshots: 4 });
      expect(nasSummary?.error).toBeTruthy();
      expect(run.stderr).toContain("warning: nas: unreachable: ");
      expect(run.stderr + run.stdout).not.toContain("pw-nas-secret");
      expect(run.stderr).not.toMatch(/\n\s+at /); // no stack trace

      const nasAfter = (await json<SnapshotRowJson[]>(["catalog", "snapshots", "--target", "nas"])).value;
      expect(nasAfter).toEqual(nasBefore);

      const { value: events } = await json<Array<{ level: string; target?: string; message: string }>>([
        "catalog",
        "events",
        "--level",
        "warning",
        "--limit",
        "1",
      ]);
      expect(events[0]).toMatchObject({ level: "warning", target: "nas" });
      expect(events[0]?.message).toMatch(
        /^catalog rebuild: target nas is unreachable \(.+\); its 4 snapshot rows kept as they were$/,
      );

      const text = await cli(["catalog", "rebuild", "-c", configFile]);
      expect(text.code).toBe(3);
      expect(text.stdout).toMatch(/\nnas +no +4 +rows kept: /);
      expect(text.stdout).toContain("from 1 of 2 targets");
    } finally {
      await rename(`${nas.dir}.moved`, nas.dir);
    }
  });

  it("runs, path and --catalog; a damaged catalog file is a clear error", async () => {
    const none = await cli(["catalog", "runs"]);
    expect(none.code, describeRun(["catalog", "runs"], none)).toBe(0);
    expect(none.stdout).toBe("0 runs\n");
    // A run recorded by the library (as `bulwark run` does), then listed.
    const catalog = Catalog.open(catalogFile);
    try {
      const id = catalog.startRun({
        kind: "backup",
        job: "app-nightly",
        dataset: "app",
        target: "local",
        startedAt: new Date("2026-04-01T02:00:00Z"),
      });
      catalog.finishRun(id, {
        status: "ok",
        finishedAt: new Date("2026-04-01T02:00:12.5Z"),
        snapshot: localSnapshots[1]!.id,
      });
    } finally {
      catalog.close();
    }
    const runs = await cli(["catalog", "runs", "--job", "app-nightly"]);
    expect(runs.stdout).toMatch(
      new RegExp(
        `^ID +Kind +Status +Started \\(UTC\\) +Took +Job +Dataset +Target +Result\n1 +backup +ok +2026-04-01 02:00:00 +12\\.5 s +app-nightly +app +local +snapshot ${localSnapshots[1]!.id.slice(0, 8)}\n1 run\n$`,
      ),
    );
    const { value: runsJson } = await json<Array<{ id: number; status: string; startedAt: string }>>([
      "catalog",
      "runs",
      "--dataset",
      "app",
    ]);
    expect(runsJson).toMatchObject([{ id: 1, status: "ok", startedAt: "2026-04-01T02:00:00.000Z" }]);

    const path = await cli(["catalog", "path"]);
    expect(path.stdout).toBe(`${catalogFile}\n`);
    const other = join(base, "elsewhere", "c.db");
    const flagged = await cli(["--json", "catalog", "--catalog", other, "path"]);
    expect(JSON.parse(flagged.stdout)).toEqual({ path: other, exists: false });

    const damaged = join(base, "damaged.db");
    await writeFile(damaged, "this is not a SQLite database, just some text that is long enough".repeat(100));
    for (const args of [
      ["catalog", "--catalog", damaged, "runs"],
      ["catalog", "--catalog", damaged, "rebuild", "-c", configFile],
    ]) {
      const r = await cli(args);
      expect(r.code, describeRun(args, r)).toBe(1);
      expect(r.stderr).toContain(
        `error: the catalog at ${damaged} is damaged: move it away and run \`bulwark catalog rebuild\`\n`,
      );
      expect(r.stderr).toContain("hint: SQLite reports: file is not a database.");
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }

    const badLimit = await cli(["catalog", "events", "--limit", "many"]);
    expect(badLimit.code).toBe(1);
    expect(badLimit.stderr).toContain("--limit must be a whole number");
  });
});
