import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Command } from "commander";
import { systemClock } from "../../src/core/clock.js";
import { backupOperation, type BackupOutcome } from "../../src/ops/backup.js";
import { backup } from "../../src/snapshot/archiver.js";
import {
  registerRestoreTargetOptions,
  registerSourceOptions,
  restoreSource,
  sourcesFromFlags,
  wantsSourceRestore,
  type ParsedSources,
  type RestoreTargetFlags,
  type SourceFlags,
} from "../../src/cli/sources-options.js";
import { haveTool, memoryRepository, snapshotCount, type TestRepository } from "../sources/helpers.js";

let t: TestRepository;

/** Backs up what the flags parsed to, through the backup operation `bulwark backup` calls. */
function backupParsed(parsed: ParsedSources): Promise<BackupOutcome> {
  return backupOperation({
    repo: t.repo,
    pool: t.pool,
    clock: systemClock,
    what: {
      kind: "paths",
      paths: [],
      virtualFiles: parsed.virtualFiles,
      hooks: parsed.hooks,
      excludes: [],
      excludeFiles: [],
    },
    env: process.env,
    hostname: "test-host",
  });
}
let dir: string;
beforeAll(async () => {
  t = await memoryRepository();
  dir = await mkdtemp(join(tmpdir(), "bulwark-sources-cli-"));
});
afterAll(async () => {
  await t.close();
  await rm(dir, { recursive: true, force: true });
});

function parse<T>(register: (c: Command) => Command, args: string[]): T {
  const program = new Command().exitOverride().configureOutput({ writeErr: () => undefined });
  let flags: T | undefined;
  register(program.command("x")).action((opts: T) => {
    flags = opts;
  });
  program.parse(["x", ...args], { from: "user" });
  return flags!;
}

describe("source options", () => {
  it("parses --source specs and hooks", () => {
    const flags = parse<SourceFlags>(registerSourceOptions, [
      "--source",
      "command:dump=echo a=b",
      "--source",
      "sqlite:app=/var/lib/app.db",
      "--source",
      "postgres:shop=postgresql://u@h/shop",
      "--pg-password-env",
      "PW",
      "--hook-before",
      "sync",
      "--hook-timeout",
      "1.5",
    ]);
    const parsed = sourcesFromFlags(flags, { PW: "secret" });
    expect(parsed.virtualFiles.map((v) => v.path)).toEqual([
      "/sources/dump",
      "/sources/app.sqlite",
      "/sources/shop/db.pgdump",
      "/sources/shop/globals.sql",
    ]);
    expect(parsed.hooks.before).toEqual({ command: "sync", timeoutMs: 1500 });
    expect(parsed.hooks.after).toBeUndefined();
  });

  it("rejects malformed specs with a usage error", () => {
    for (const spec of ["nope", "ftp:x=y", "command:a/b=true", "command:x="]) {
      expect(() => sourcesFromFlags({ source: [spec] }), spec).toThrow(/--source/);
    }
    expect(() => sourcesFromFlags({ source: ["command:a=true", "sqlite:a=/x"] })).toThrow(/used twice/);
    expect(() => sourcesFromFlags({ hookTimeout: "soon" })).toThrow(/--hook-timeout/);
  });

  it("--pg-format directory --pg-jobs N: the dump is the directory db.dir/; jobs alone are refused", () => {
    const flags = parse<SourceFlags>(registerSourceOptions, [
      "--source",
      "postgres:big=postgresql://u@h/big",
      "--pg-format",
      "directory",
      "--pg-jobs",
      "4",
    ]);
    expect(sourcesFromFlags(flags, {}).virtualFiles.map((v) => v.path)).toEqual([
      "/sources/big/db.dir",
      "/sources/big/globals.sql",
    ]);
    expect(() => sourcesFromFlags({ source: ["postgres:big="], pgJobs: "4" })).toThrow(
      /--pg-jobs 4 needs --pg-format directory/,
    );
    expect(() => sourcesFromFlags({ source: ["postgres:big="], pgJobs: "two" })).toThrow(
      /--pg-jobs two: expected a whole number/,
    );
    expect(() => parse<SourceFlags>(registerSourceOptions, ["--pg-format", "tar"])).toThrow(/tar/);
  });

  it("backs up between the hooks; a failing source fails it with no snapshot and the after hook runs", async () => {
    const log = join(dir, "hooks.log");
    const flags: SourceFlags = {
      source: ["command:greeting=echo hello; echo oops >&2"],
      hookBefore: `echo before >> '${log}'`,
      hookAfter: `echo "after $BULWARK_HOOK_RESULT" >> '${log}'`,
    };
    const ok = await backupParsed(sourcesFromFlags(flags));
    const piped = join(dir, "piped");
    const restoreFlags = parse<RestoreTargetFlags>(registerRestoreTargetOptions, [
      "--pipe-to",
      `cat > '${piped}'`,
      "--source-path",
      "/sources/greeting",
    ]);
    expect(wantsSourceRestore(restoreFlags)).toBe(true);
    const report = await restoreSource(t.repo, ok.snapshot, restoreFlags);
    expect(report).toMatchObject({ kind: "pipe", bytes: 6, ok: true });
    expect(await readFile(piped, "utf8")).toBe("hello\n");

    const before = await snapshotCount(t.repo);
    await expect(
      backupParsed(
        sourcesFromFlags({ ...flags, source: ["command:broken=echo 'dump: access denied' >&2; exit 7"] }),
      ),
    ).rejects.toThrow(/exited with code 7[\s\S]*access denied/);
    expect(await snapshotCount(t.repo)).toBe(before);
    expect(await readFile(log, "utf8")).toBe("before\nafter success\nbefore\nafter failure\n");
  });

  it.skipIf(!haveTool("sqlite3", "sqlite3"))(
    "--to-sqlite restores the copy and reports integrity_check",
    async () => {
      const db = join(dir, "app.db");
      execFileSync("sqlite3", [db, "CREATE TABLE t (x); INSERT INTO t VALUES (1);"]);
      const result = await backup(t.repo, t.pool, {
        paths: [],
        virtualFiles: sourcesFromFlags({ source: [`sqlite:app=${db}`] }).virtualFiles,
      });
      const target = join(dir, "restored.db");
      const report = await restoreSource(t.repo, result.snapshot, {
        toSqlite: target,
        sourcePath: "/sources/app.sqlite",
      });
      expect(report).toMatchObject({ kind: "sqlite", ok: true });
      expect(report.lines).toContain("integrity_check: ok");
      await expect(restoreSource(t.repo, result.snapshot, { toSqlite: target })).rejects.toThrow(
        /--source-path/,
      );
    },
  );
});
