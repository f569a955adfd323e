/**
 * `bulwark config check` and `bulwark posture` against real repositories: three local targets in different
 * failure domains (one labelled offsite, one labelled immutable), the dataset backed up into each (until
 * `bulwark copy` exists, a backup of the same paths stands in for a copy), then the checklist as JSON and
 * markdown. A local directory has no Object Lock, so the immutability row fails with that reason; renaming a
 * copy target's directory makes it unreachable and the copies row fails naming it.
 *
 * Runs the built CLI (npm run build) and needs `config` and `posture` registered in src/cli/main.ts.
 */
import { rename, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { TestRepo, describeRun, makeTempDir, removeTempDirs, runCli, writeFiles } from "./helpers.js";

interface PostureJson {
  status: string;
  datasets: Array<{
    dataset: string;
    status: string;
    rows: Array<{ id: string; status: string; required: boolean; evidence: string[]; reason?: string }>;
    copies: Array<{ target: string; counted: boolean; snapshot?: { id: string }; reason?: string }>;
  }>;
}

const registered = (await runCli(["posture", "--help"])).stdout.includes("Usage: bulwark posture");
if (!registered && process.env.CI === "true") {
  throw new Error("bulwark posture is not registered in src/cli/main.ts (registerPosture, registerConfig)");
}

let base: string;
let src: string;
let configFile: string;
const repos: Record<string, TestRepo> = {};

function config(dirs: Record<string, TestRepo>): string {
  const target = (name: string, labels: string, extra = ""): string =>
    `  ${name}:\n    location: ${dirs[name]!.dir}\n    labels: { ${labels} }\n    password: { file: ${dirs[name]!.passwordFile} }\n${extra}`;
  return [
    "version: 1",
    "targets:",
    target("local", "medium: disk, site: home, failureDomain: server-1"),
    target("nas", "medium: nas, site: home, failureDomain: nas-1"),
    target(
      "vault",
      "medium: object, site: cloud, offsite: true, failureDomain: cloud-1, isolation: immutable",
      "    immutability: { mode: compliance, days: 30 }\n",
    ),
    "datasets:",
    `  app: { sources: [{ type: files, paths: [${src}] }] }`,
    "policies:",
    "  standard: { rule: 3-2-1-1-0, productionCounts: false, rpo: 24h, immutabilityDays: 30 }",
    "jobs:",
    "  app-nightly: { dataset: app, policy: standard, primary: local, copies: [nas, vault] }",
    "",
  ].join("\n");
}

function rows(p: PostureJson): Record<string, { status: string; reason?: string; evidence: string[] }> {
  return Object.fromEntries((p.datasets[0]?.rows ?? []).map((r) => [r.id, r]));
}

describe.skipIf(!registered)("config check and posture (local targets)", () => {
  beforeAll(async () => {
    base = await makeTempDir("posture");
    src = join(base, "src");
    await writeFiles(src, { "a.txt": "alpha\n", "dir/b.txt": "beta\n" });
    for (const name of ["local", "nas", "vault"]) {
      repos[name] = await TestRepo.init(join(base, name));
      await repos[name].backup([src]);
    }
    configFile = join(base, "bulwark.yaml");
    await writeFile(configFile, config(repos));
  });
  afterAll(removeTempDirs);

  it("config check summarises a valid file and explains a typo with file, line and field", async () => {
    const ok = await runCli(["config", "check", "-c", configFile]);
    expect(ok.code, describeRun(["config", "check"], ok)).toBe(0);
    expect(ok.stdout).toContain(`${configFile}: valid`);
    expect(ok.stdout).toMatch(/vault +.*medium object, site cloud \(offsite\), failure domain cloud-1/);
    expect(ok.stdout).toContain("dataset app -> local, copies to nas, vault");

    const typo = join(base, "typo.yaml");
    await writeFile(
      typo,
      config(repos).replace("  app-nightly: { dataset: app", "  app-nightly: { datset: app"),
    );
    const bad = await runCli(["config", "check", "-c", typo]);
    expect(bad.code).toBe(1);
    const line =
      config(repos)
        .split("\n")
        .findIndex((l) => l.startsWith("  app-nightly")) + 1;
    expect(bad.stdout).toContain(
      `${typo}:${line}:18 jobs.app-nightly.datset: unknown field \`datset\` — did you mean \`dataset\`?`,
    );

    const json = await runCli(["--json", "config", "check"], { env: { BULWARK_CONFIG: typo } });
    expect(json.code).toBe(1);
    const doc = JSON.parse(json.stdout) as { valid: boolean; errors: Array<{ path: string[] }> };
    expect(doc.valid).toBe(false);
    expect(doc.errors.map((e) => e.path)).toEqual([["jobs", "app-nightly", "datset"]]);

    const schema = await runCli(["config", "schema"]);
    expect(schema.code).toBe(0);
    expect((JSON.parse(schema.stdout) as { title: string }).title).toBe("bulwark.yaml");
  });

  it("config check and posture warn, with file and line, when a job's targets can never meet its rule", async () => {
    const mutable = join(base, "mutable.yaml");
    const text = config(repos)
      .replace(", isolation: immutable", "")
      .replace("    immutability: { mode: compliance, days: 30 }\n", "");
    await writeFile(mutable, text);
    const line = text.split("\n").findIndex((l) => l.startsWith("  app-nightly")) + 1;
    const warning = new RegExp(
      `^${mutable}:${line}:\\d+ warning: jobs\\.app-nightly\\.policy: policy standard \\(rule 3-2-1-1-0\\) cannot be met by this job's targets: "Immutable or air-gapped copy retained" fails \\(.+\\) — .+$`,
      "m",
    );

    const check = await runCli(["config", "check", "-c", mutable]);
    expect(check.code, describeRun(["config", "check"], check)).toBe(0);
    expect(check.stdout).toMatch(warning);
    expect(check.stdout).toContain(`${mutable}: valid (0 errors, 1 warning)`);

    const posture = await runCli(["posture", "--json", "-c", mutable]);
    expect(posture.code, describeRun(["posture"], posture)).toBe(20);
    expect(posture.stderr).toMatch(warning);
  });

  it("posture reads every target: copies, media and offsite pass; the local 'immutable' target has no lock", async () => {
    const r = await runCli(["posture", "--json", "-c", configFile]);
    expect(r.code, describeRun(["posture"], r)).toBe(20);
    const p = JSON.parse(r.stdout) as PostureJson;
    expect(p.datasets.map((d) => [d.dataset, d.status])).toEqual([["app", "fail"]]);
    const row = rows(p);
    expect(row.copies?.status).toBe("pass");
    expect(row.copies?.evidence).toHaveLength(3);
    expect(row.media?.status).toBe("pass");
    expect(row.offsite?.status).toBe("pass");
    expect(row.offsite?.evidence[0]).toMatch(/^vault: snapshot [0-9a-f]{8} at /);
    expect(row.immutable?.status).toBe("fail");
    expect(row.immutable?.reason).toMatch(
      /^no lock could be read back for snapshot [0-9a-f]{8} on vault \(a local directory has no retention lock to read back\), though the target is labelled immutable/,
    );
    expect(row.validation?.status).toBe("unknown");
    expect(row.dr?.status).toBe("unknown");
    expect(p.datasets[0]?.copies.every((c) => c.counted)).toBe(true);

    const md = await runCli(["posture", "app", "--format", "markdown", "-c", configFile]);
    expect(md.code).toBe(20);
    expect(md.stdout).toMatch(/^# Posture at \S+: FAILS/);
    expect(md.stdout).toContain("| Three copies of data exist | ✅ pass |");
    expect(md.stdout).toContain("| Immutable or air-gapped copy retained | ❌ fail |");

    const unknownDataset = await runCli(["posture", "nope", "-c", configFile]);
    expect(unknownDataset.code).toBe(1);
    expect(unknownDataset.stderr).toContain('unknown dataset "nope"');
  });

  it("an unreachable copy target fails the copies row with a reason naming it", async () => {
    await rename(repos.nas!.dir, `${repos.nas!.dir}.moved`);
    try {
      const r = await runCli(["posture", "--json", "-c", configFile]);
      expect(r.code, describeRun(["posture"], r)).toBe(20);
      const row = rows(JSON.parse(r.stdout) as PostureJson);
      expect(row.copies?.status).toBe("fail");
      expect(row.copies?.reason).toMatch(/^2 of 3 copies count: target nas is unreachable \(.+\)/);
      expect(row.copies?.reason).not.toContain(repos.nas!.password);
      // The table, markdown and HTML name it too, with its reason and remedy (not only the JSON).
      for (const format of ["table", "markdown", "html"]) {
        const args = ["posture", "-c", configFile, ...(format === "table" ? [] : ["--format", format])];
        const human = await runCli(args);
        expect(human.code, describeRun(args, human)).toBe(20);
        expect(human.stdout).toMatch(/target nas does not count: target nas is unreachable \(.+\)/);
        expect(human.stdout).toContain("remedy: bring target nas");
        expect(human.stdout).not.toContain(repos.nas!.password);
      }
    } finally {
      await rename(`${repos.nas!.dir}.moved`, repos.nas!.dir);
    }
  });
});
