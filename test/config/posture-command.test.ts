/**
 * The `config` and `posture` commands run in-process (a commander program with only them registered) against
 * real local repositories made by the built CLI: the same scenario as test/e2e/posture.test.ts, which runs
 * them through src/cli/main.ts.
 */
import { rename, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { Command } from "commander";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";

import { registerConfig, summariseConfig } from "../../src/cli/commands/config.js";
import { registerPosture } from "../../src/cli/commands/posture.js";
import { collectEvidence, datasetPaths, latestOf } from "../../src/ops/posture.js";
import type { GlobalOptions } from "../../src/cli/context.js";
import { resolveConfig } from "../../src/config/load.js";
import type { SnapshotWithId } from "../../src/snapshot/snapshot.js";
import { TestRepo, makeTempDir, removeTempDirs, writeFiles } from "../e2e/helpers.js";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  error?: string;
}

/** Runs `bulwark ARGS` with only the config and posture commands, capturing output and the exit code. */
async function run(args: string[]): Promise<Run> {
  const program = new Command().exitOverride().option("--json").option("-q, --quiet");
  const globals = (): GlobalOptions => {
    const o = program.opts<{ json?: boolean; quiet?: boolean }>();
    return { json: o.json === true, quiet: o.quiet === true };
  };
  registerConfig(program, globals);
  registerPosture(program, globals);
  const stdout: string[] = [];
  const stderr: string[] = [];
  const out = vi.spyOn(process.stdout, "write").mockImplementation((chunk) => {
    stdout.push(String(chunk));
    return true;
  });
  const err = vi.spyOn(process.stderr, "write").mockImplementation((chunk) => {
    stderr.push(String(chunk));
    return true;
  });
  process.exitCode = undefined;
  let error: string | undefined;
  try {
    await program.parseAsync(["node", "bulwark", ...args]);
  } catch (e) {
    error = e instanceof Error ? e.message : String(e);
  } finally {
    out.mockRestore();
    err.mockRestore();
  }
  const code = error !== undefined ? 1 : Number(process.exitCode ?? 0);
  process.exitCode = undefined;
  return {
    code,
    stdout: stdout.join(""),
    stderr: stderr.join(""),
    ...(error !== undefined ? { error } : {}),
  };
}

let base: string;
let src: string;
let configFile: string;
let text: string;
const repos: Record<string, TestRepo> = {};

beforeAll(async () => {
  base = await makeTempDir("posture-unit");
  src = join(base, "src");
  await writeFiles(src, { "a.txt": "alpha\n" });
  for (const name of ["local", "nas", "vault"]) {
    repos[name] = await TestRepo.init(join(base, name));
    await repos[name].backup([src]);
  }
  const target = (name: string, labels: string, extra = ""): string =>
    `  ${name}:\n    location: ${repos[name]!.dir}\n    labels: { ${labels} }\n    password: { file: ${repos[name]!.passwordFile} }\n${extra}`;
  text = [
    "version: 1",
    "targets:",
    target("local", "medium: disk, site: home, failureDomain: server-1"),
    target("nas", "medium: nas, site: home, failureDomain: nas-1"),
    target(
      "vault",
      "medium: object, site: cloud, offsite: true, failureDomain: cloud-1, isolation: immutable",
      "    immutability: { days: 30 }\n",
    ),
    "datasets:",
    `  app: { sources: [{ type: files, paths: [${src}] }] }`,
    "policies:",
    "  standard: { rule: 3-2-1-1-0, productionCounts: false, rpo: 24h }",
    "jobs:",
    "  app-nightly: { dataset: app, policy: standard, primary: local, copies: [nas, vault] }",
    "",
  ].join("\n");
  configFile = join(base, "bulwark.yaml");
  await writeFile(configFile, text);
});
afterAll(removeTempDirs);

describe("bulwark config", () => {
  it("check summarises a valid file", async () => {
    const r = await run(["config", "check", "-c", configFile]);
    expect(r.code, r.stderr + (r.error ?? "")).toBe(0);
    expect(r.stdout.split("\n").slice(0, 3)).toEqual([
      `${configFile}: valid`,
      "targets (3):",
      `  local  ${repos.local!.dir}: medium disk, site home, failure domain server-1, isolation none, password file:${repos.local!.passwordFile}`,
    ]);
    expect(r.stdout).toContain(
      "  app-nightly  dataset app -> local, copies to nas, vault; policy standard\n",
    );
    expect(r.stdout).toContain(
      "  standard  rule 3-2-1-1-0 (3 copies, 2 media, 1 offsite, 1 immutable or isolated, 0 errors), RPO 24h\n",
    );
  });

  it("check lists errors with file, line and field, exits 1, and explains in JSON", async () => {
    const bad = join(base, "bad.yaml");
    await writeFile(
      bad,
      text.replace("copies: [nas, vault]", "copies: [nass, vault]").replace("rpo: 24h", "rpo: 1day"),
    );
    const r = await run(["config", "check", "-c", bad]);
    expect(r.code).toBe(1);
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(
      new RegExp(`^${bad}:\\d+:\\d+ policies\\.standard\\.rpo: invalid duration "1day"`),
    );
    expect(lines[1]).toMatch(
      new RegExp(
        `^${bad}:\\d+:\\d+ jobs\\.app-nightly\\.copies\\[0\\]: unknown target "nass" — did you mean "nas"\\?$`,
      ),
    );
    expect(lines[2]).toBe(`${bad}: invalid (2 errors, 0 warnings)`);

    const json = await run(["--json", "config", "check", "-c", bad]);
    expect(json.code).toBe(1);
    const doc = JSON.parse(json.stdout) as { valid: boolean; errors: Array<{ path: unknown[] }> };
    expect(doc.valid).toBe(false);
    expect(doc.errors.map((e) => e.path)).toEqual([
      ["policies", "standard", "rpo"],
      ["jobs", "app-nightly", "copies", 0],
    ]);
  });

  it("check reports a missing config file", async () => {
    const r = await run(["config", "check", "-c", join(base, "missing.yaml")]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain("cannot read the config file");
  });

  it("schema prints the JSON Schema", async () => {
    const r = await run(["config", "schema"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ title: "bulwark.yaml", type: "object" });
  });
});

describe("bulwark posture", () => {
  it("collects evidence from every target and renders the checklist", async () => {
    const r = await run(["--json", "posture", "-c", configFile]);
    expect(r.code, r.stderr + (r.error ?? "")).toBe(20);
    const p = JSON.parse(r.stdout) as {
      datasets: Array<{ rows: Array<{ id: string; status: string; reason?: string }>; copies: unknown[] }>;
    };
    const rows = Object.fromEntries((p.datasets[0]?.rows ?? []).map((row) => [row.id, row]));
    expect(rows.copies?.status).toBe("pass");
    expect(rows.media?.status).toBe("pass");
    expect(rows.offsite?.status).toBe("pass");
    expect(rows.immutable?.status).toBe("fail");
    expect(rows.immutable?.reason).toContain("(a local directory has no retention lock to read back)");
    expect(rows.validation?.status).toBe("unknown");

    const md = await run(["posture", "app", "--format", "markdown", "-c", configFile]);
    expect(md.code).toBe(20);
    expect(md.stdout).toContain("| Three copies of data exist | ✅ pass |");

    const bad = await run(["posture", "--format", "pdf", "-c", configFile]);
    expect(bad.error).toContain("--format must be table, markdown or html");
  });

  it("an unreachable target is evidence, with its reason and no secret", async () => {
    await rename(repos.nas!.dir, `${repos.nas!.dir}.moved`);
    try {
      const r = await run(["--json", "posture", "-c", configFile]);
      expect(r.code).toBe(20);
      const p = JSON.parse(r.stdout) as { datasets: Array<{ rows: Array<{ id: string; reason?: string }> }> };
      const copies = p.datasets[0]?.rows.find((row) => row.id === "copies");
      expect(copies?.reason).toMatch(
        /^2 of 3 copies count: target nas is unreachable \(there is no repository at .+\)/,
      );
    } finally {
      await rename(`${repos.nas!.dir}.moved`, repos.nas!.dir);
    }
  });

  it("a wrong password makes the target unreachable without echoing the password", async () => {
    const resolved = resolveConfig(text, "bulwark.yaml", { env: {}, fileReadable: () => true });
    const config = resolved.config!;
    delete config.targets.vault!.password;
    const evidence = await collectEvidence(config, {
      env: {},
      defaultPassword: () => Promise.resolve("not-the-password-1234"),
    });
    const vault = evidence.datasets.app?.copies.vault;
    expect(vault?.reachable).toBe(false);
    expect(vault?.error).toBeDefined();
    expect(vault?.error).not.toContain("not-the-password-1234");
    expect(evidence.datasets.app?.copies.local?.snapshot?.id).toMatch(/^[0-9a-f]{64}$/);
    expect(summariseConfig(config)[0]).toBe("targets (3):");
  });

  it("matches snapshots by exactly the dataset's paths, newest first", () => {
    const snap = (id: string, time: string, paths: string[]) => ({ id, time, paths }) as SnapshotWithId;
    const paths = datasetPaths({
      name: "d",
      sources: [{ type: "files", paths: ["/b", "/a/", "/a/x"], excludes: [] }],
    });
    expect(paths).toEqual(["/a", "/b"]);
    const list = [
      snap("1", "2026-01-01T00:00:00Z", ["/a", "/b"]),
      snap("2", "2026-01-03T00:00:00Z", ["/a"]),
      snap("3", "2026-01-02T00:00:00Z", ["/b", "/a"]),
    ];
    expect(latestOf(list, paths)?.id).toBe("3");
    expect(latestOf(list, [])).toBeUndefined();
  });
});
