/**
 * `-r TARGET` with `-c CONFIG` (src/cli/config-file.ts withRepoTarget): the commands that take a config and
 * a target (verify, drill, repair, report) accept the target's name for -r, as --target; a -r that names no target
 * of the config is refused with the names, and -r and --target naming different targets are refused. The
 * repository commands (snapshots, ls, restore, check, forget, prune, key, unlock, ...) take `-c` for the same
 * purpose: the target's location and password come from the config (the tests give no BULWARK_PASSWORD).
 */
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { describeRun, makeTempDir, removeTempDirs, runCli, writeFiles, type RunResult } from "./helpers.js";

let dir: string;
let config: string;
let env: Record<string, string>;

const cli = (args: string[]): Promise<RunResult> => runCli(args, { env, timeoutMs: 120_000 });

beforeAll(async () => {
  dir = await makeTempDir("repo-target");
  env = { BULWARK_CATALOG: join(dir, "state", "catalog.db"), HOME: dir };
  await writeFile(join(dir, "pw"), `pw-${randomBytes(8).toString("hex")}\n`);
  await writeFiles(join(dir, "src"), { "a.txt": "a\n", "b.txt": "b\n" });
  const target = (name: string) => ({
    location: join(dir, name),
    labels: { medium: "disk", site: "home", failureDomain: `fd-${name}` },
    password: { file: join(dir, "pw") },
  });
  config = join(dir, "bulwark.json");
  await writeFile(
    config,
    JSON.stringify({
      version: 1,
      targets: { local: target("local"), nas: target("nas") },
      datasets: { app: { sources: [{ type: "files", paths: [join(dir, "src")] }] } },
      policies: { p: { rule: { copies: 1 }, rpo: "24h", retention: {} } },
      jobs: { app: { dataset: "app", policy: "p", primary: "local", copies: ["nas"] } },
    }),
  );
  const args = ["run", "--init", "-c", config];
  const r = await cli(args);
  expect(r.code, describeRun(args, r)).toBe(0);
});
afterAll(removeTempDirs);

describe("-r TARGET with -c CONFIG", () => {
  it("verify -r nas verifies that target only, before or after the command", async () => {
    for (const args of [
      ["--json", "-r", "nas", "verify", "-c", config],
      ["--json", "verify", "-c", config, "-r", "nas"],
    ]) {
      const r = await cli(args);
      expect(r.code, describeRun(args, r)).toBe(0);
      const json = JSON.parse(r.stdout) as { targets: { target: string }[] };
      expect(json.targets.map((t) => t.target)).toEqual(["nas"]);
    }
  });

  it("drill -r nas drills the copy on nas", async () => {
    const args = ["--json", "drill", "-c", config, "-r", "nas"];
    const r = await cli(args);
    expect(r.code, describeRun(args, r)).toBe(0);
    expect(r.stdout).toContain('"target": "nas"');
    expect(r.stdout).not.toContain('"target": "local"');
  });

  it("report verification -r nas reports the verification of nas only", async () => {
    const all = ["verify", "-c", config];
    const v = await cli(all);
    expect(v.code, describeRun(all, v)).toBe(0);
    const whole = await cli(["--json", "report", "verification", "-c", config]);
    expect(whole.code, whole.stderr).toBe(0);
    expect(whole.stdout).toMatch(/"target": "local"/);
    const args = ["--json", "report", "verification", "-c", config, "-r", "nas"];
    const r = await cli(args);
    expect(r.code, describeRun(args, r)).toBe(0);
    expect(r.stdout).toMatch(/"target": "nas"/);
    expect(r.stdout).not.toMatch(/"target": "local"/);
  });

  it("a -r that names no target is refused, naming the targets; -r and --target must agree", async () => {
    for (const args of [
      ["-r", "nowhere", "verify", "-c", config],
      ["-r", "nowhere", "drill", "-c", config],
      ["-r", "nowhere", "repair", "-c", config, "--index", "--dry-run"],
      ["-r", "nowhere", "report", "verification", "-c", config],
    ]) {
      const r = await cli(args);
      expect(r.code, describeRun(args, r)).toBe(1);
      expect(r.stderr).toContain(`-r "nowhere" names no target of ${config}`);
      expect(r.stderr).toContain("with -c, -r takes a target name (local, nas)");
      expect(r.stderr).not.toMatch(/^\s+at /m);
    }
    const both = ["-r", "nas", "drill", "-c", config, "--target", "local"];
    const r = await cli(both);
    expect(r.code, describeRun(both, r)).toBe(1);
    expect(r.stderr).toContain("-r nas and --target local name different targets");
  });

  it("the repository commands open the config's target by name, with its password", async () => {
    const list = ["--json", "snapshots", "-c", config, "-r", "nas"];
    const snaps = await cli(list);
    expect(snaps.code, describeRun(list, snaps)).toBe(0);
    const [snap] = JSON.parse(snaps.stdout) as { id: string }[];
    expect(snap).toBeDefined();
    const id = snap!.id;
    const restored = join(dir, "restored");
    for (const args of [
      ["ls", "-c", config, "-r", "nas", id],
      ["stats", "-c", config, "-r", "nas", id],
      ["check", "-c", config, "-r", "nas", "--read-data"],
      ["restore", "-c", config, "-r", "nas", id, "--target", restored],
      ["forget", "-c", config, "-r", "nas", "--keep-last", "1", "--dry-run"],
      ["prune", "-c", config, "-r", "nas", "--dry-run"],
      ["key", "list", "-c", config, "-r", "nas"],
      ["unlock", "-c", config, "-r", "nas"],
    ]) {
      const r = await cli(args);
      expect(r.code, describeRun(args, r)).toBe(0);
      if (args[0] === "ls") expect(r.stdout).toContain("a.txt");
    }
    expect(await readFile(join(restored, dir, "src", "a.txt"), "utf8")).toBe("a\n");
  });

  it("a repository command with -c needs -r naming one of the config's targets", async () => {
    for (const [args, message] of [
      [["snapshots", "-c", config], `-c ${config} needs -r naming one of its targets`],
      [["-r", "nowhere", "check", "-c", config], `-r "nowhere" names no target of ${config}`],
      [["-r", join(dir, "nas"), "ls", "-c", config, "latest"], "names no target of"],
    ] as const) {
      const r = await cli([...args]);
      expect(r.code, describeRun([...args], r)).toBe(1);
      expect(r.stderr).toContain(message);
      expect(r.stderr).not.toMatch(/^\s+at /m);
    }
  });
});
