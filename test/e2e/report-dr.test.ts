/**
 * `bulwark report dr` through the built CLI on real DR evidence: a config with one local target, a files
 * dataset and a runbook of one service (a node one-liner HTTP server whose answer carries a <script> tag,
 * checked over HTTP) is backed up, drilled, and drilled as a runbook (`dr drill --no-isolation`, so it
 * runs without root, on a remapped port). The report shows in Markdown, HTML and JSON the RTO against the
 * target, the RPO of the dataset and its copy, every unit of the timeline with its output (escaped in
 * HTML), and the runbook's change log: one version, then two after the runbook's RTO is edited and
 * `bulwark dr plan` records the new definition (the run is then no longer of the current definition).
 * Signed, it passes `report verify` in each format; a failed run turned into a passing one with SQLite in
 * a copy of the catalog makes `report verify` of a report made before fail (exit 21). Bad input is a
 * clear error.
 */
import { execFileSync } from "node:child_process";
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";

import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { describeRun, makeTempDir, removeTempDirs, runCli, writeFiles, type RunResult } from "./helpers.js";

let base: string;
let env: Record<string, string>;
let port: number;
let catalogFile: string;

const cli = (args: string[]): Promise<RunResult> => runCli(args, { env, cwd: base, timeoutMs: 120_000 });
async function ok(args: string[]): Promise<RunResult> {
  const r = await cli(args);
  expect(r.code, describeRun(args, r)).toBe(0);
  return r;
}

interface JsonReport {
  format: string;
  kind: string;
  runbooks: { runbook: string; current?: string | null; versions: { version: number; id: number }[] }[];
  records: {
    evidence: string;
    id: number;
    result?: string;
    status?: string;
    definitionHash: string;
    chain: { seq: number; hash: string } | null;
    details?: {
      rtoMs?: number;
      rtoTargetMs?: number;
      datasets: { dataset: string; target?: string; snapshot?: string; rpoMs?: number }[];
      timeline: { id?: string; kind: string; outcome: string; output?: string }[];
    };
  }[];
}

/** The service: answers with a <script> tag and "ok"; listens on PORT, or on the port a drill remapped it to. */
const SERVER = [
  'const port = Number(process.env["BULWARK_DR_PORT_" + process.env.PORT] || process.env.PORT);',
  'require("node:http").createServer((q, s) => s.end("<script>alert(1)</script> ok\\n")).listen(port, "127.0.0.1");',
].join(" ");

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

async function writeConfig(name: string, rto = "10m", body = "ok"): Promise<string> {
  const file = join(base, `${name}.yaml`);
  await writeFile(
    file,
    `version: 1
targets:
  one: { location: ${base}/one, labels: { medium: disk, site: home, failureDomain: d1 }, password: { file: ${base}/pw } }
datasets:
  web: { sources: [{ type: files, paths: ["${base}/src"] }] }
policies:
  p: { rule: { copies: 1 }, productionCounts: false, rpo: 24h }
jobs:
  web: { dataset: web, policy: p, primary: one }
runbooks:
  shop:
    rto: ${rto}
    services:
      web:
        restore: [{ dataset: web, to: { directory: ${base}/recovered } }]
        start:
          command: [node, -e, ${JSON.stringify(SERVER)}]
          setEnv: { PORT: "${port}" }
        health: [{ type: http, url: "http://127.0.0.1:${port}/", body: "${body}", retries: ${body === "ok" ? 50 : 0}, intervalSeconds: 0.1, timeoutSeconds: 2 }]
evidence:
  signingKey: { file: ${base}/signing-key.pem }
`,
  );
  return file;
}

const drDrill = (config: string): Promise<RunResult> =>
  cli(["dr", "drill", "shop", "-c", config, "--no-isolation", "--sandbox", join(base, "sandboxes")]);

let config: string;

beforeAll(async () => {
  base = await makeTempDir("report-dr");
  catalogFile = join(base, "state", "catalog.db");
  env = { BULWARK_CATALOG: catalogFile, HOME: base };
  await writeFile(join(base, "pw"), "report-dr-password\n");
  await writeFiles(join(base, "src"), { "index.html": "<h1>shop</h1>\n", "b.txt": "b\n" });
  await mkdir(join(base, "sandboxes"));
  execFileSync("openssl", ["genpkey", "-algorithm", "ed25519", "-out", join(base, "signing-key.pem")]);
  await chmod(join(base, "signing-key.pem"), 0o600);
  execFileSync("openssl", [
    "pkey",
    "-in",
    join(base, "signing-key.pem"),
    "-pubout",
    "-out",
    join(base, "pub.pem"),
  ]);
  port = await freePort();
  config = await writeConfig("shop");
  await ok(["run", "--init", "-c", config]);
  await ok(["drill", "-c", config, "--no-isolation"]);
  const r = await drDrill(config);
  expect(r.code, describeRun(["dr", "drill", "shop"], r)).toBe(0);
}, 120_000);
afterAll(removeTempDirs);

describe("bulwark report dr", () => {
  it("shows the RTO against the target, the RPO, every unit of the timeline and a change log of 1 version", async () => {
    const json = JSON.parse((await ok(["--json", "report", "dr", "-c", config])).stdout) as JsonReport;
    expect(json).toMatchObject({ format: "bulwark-evidence-report/1", kind: "dr" });
    expect(json.records.map((r) => [r.evidence, r.result])).toEqual([
      ["dr", "pass"],
      ["runbook", undefined],
    ]);
    const [run, v1] = json.records;
    expect(json.runbooks).toEqual([
      {
        runbook: "shop",
        current: run!.definitionHash,
        versions: [{ version: 1, id: v1!.id, definitionHash: run!.definitionHash }],
      },
    ]);
    const d = run!.details!;
    expect(d.rtoMs).toBeGreaterThan(0);
    expect(d.rtoMs!).toBeLessThanOrEqual(d.rtoTargetMs!);
    expect(d.rtoTargetMs).toBe(600_000);
    expect(d.datasets).toMatchObject([{ dataset: "web", target: "one" }]);
    expect(d.datasets[0]!.rpoMs).toBeGreaterThanOrEqual(0);
    const units = d.timeline.filter((e) => e.kind !== "stop").map((e) => `${e.id}:${e.outcome}`);
    expect(units).toEqual(["web/restore/0:passed", "web/start:passed", "web/health/0:passed"]);

    const md = (await ok(["report", "dr", "-c", config, "--format", "md"])).stdout;
    for (const expected of [
      "# Bulwark DR report",
      "1 DR run: 1 passed, 0 failed; the change log of 1 runbook (1 version).",
      "## 1. DR drill of shop: PASS",
      `| Record | DR run ${run!.id} |`,
      `| Definition | hash ${run!.definitionHash}, version 1 of 1 |`,
      "| Current definition | yes: the config's runbook is the definition this run ran |",
      `| web | one | ${d.datasets[0]!.snapshot!} |`,
      "| Unit | Wave | Service | Kind | Step | Start | End | Took | Outcome | Message |",
      "### Output of web/health/0 (http http://127.0.0.1:",
      "<script>alert(1)</script> ok",
      "## 2. Change log of runbook shop: 1 version",
      `| 1 | `,
      "first version: 1 service (web), RTO 10m",
    ])
      expect(md).toContain(expected);
    expect(md).toMatch(/\| RTO \| [\d.]+ (s|ms) achieved against a target of 10m: within \|/);
    expect(md).toMatch(
      /\| Isolation \| none \(the services could reach the network\): .*; ports remapped \d+ -\\> \d+ \|/,
    );
    expect(md).toMatch(
      /\| web\/restore\/0 \| 1 \| web \| restore \| restore web from one \| \d\d:\d\d:\d\d\.\d{3} \| \d\d:\d\d:\d\d\.\d{3} \| .+ \| passed \| snapshot [0-9a-f]{8}, /,
    );
    expect(md).toMatch(
      /\| web\/start \| 1 \| web \| start \| start web \| .+ \| passed \| started \(pid \d+\) \|/,
    );
    expect(md).toMatch(
      /\| web\/health\/0 \| 1 \| web \| health \| http http:\/\/127\.0\.0\.1:\d+\/ \| .+ \| passed \|/,
    );
    // The dataset: its copy, snapshot, when it was taken, its age (RPO) and where the drill put it.
    expect(md).toMatch(
      /\| web \| one \| [0-9a-f]{64} \| \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \| \d[^|]* \| directory \S+ \|/,
    );

    const html = (await ok(["report", "dr", "--format", "html"])).stdout;
    expect(html).not.toMatch(/<script/i);
    expect(html).toContain("&#60;script&#62;alert(1)&#60;/script&#62; ok");
    expect(html).toContain('<h2 class="pass">1. DR drill of shop: PASS</h2>');
    expect(html).toContain("<tr><th>Current definition</th><td>not compared (no config given)</td></tr>");
  });

  it("after the runbook's RTO is edited and dr plan records it: 2 versions, the run not of the current one", async () => {
    const edited = await writeConfig("edited", "20m");
    await ok(["dr", "plan", "shop", "-c", edited]);
    const md = (await ok(["report", "dr", "-c", edited, "--runbook", "shop"])).stdout;
    expect(md).toContain("the change log of 1 runbook (2 versions).");
    expect(md).toContain("## 2. Change log of runbook shop: 2 versions");
    expect(md).toMatch(/\| Definition \| hash [0-9a-f]{64}, version 1 of 2 \|/);
    expect(md).toMatch(
      /\| Current definition \| NO: the config's runbook changed since \(now hash [0-9a-f]{64}, version 2 of 2\) \|/,
    );
    expect(md).toContain('rto: "10m" -\\> "20m"; rtoMs: 600000 -\\> 1200000');
    const json = JSON.parse((await ok(["--json", "report", "dr", "-c", edited])).stdout) as JsonReport;
    expect(json.records.map((r) => r.evidence)).toEqual(["dr", "runbook", "runbook"]);
    expect(json.runbooks[0]!.versions.map((v) => v.version)).toEqual([1, 2]);
    expect(json.runbooks[0]!.current).not.toBe(json.records[0]!.definitionHash);
  });

  it.each(["md", "html", "json"] as const)(
    "%s: signed, report verify passes for the run and every version",
    async (format) => {
      const file = join(base, `dr.${format}`);
      const made = await ok(["report", "dr", "-c", config, "--format", format, "--output", file, "--sign"]);
      expect(made.stdout).toMatch(
        new RegExp(`^wrote 1 DR run \\(0 failed\\) and 2 runbook versions to ${file}, signed by key SHA256:`),
      );
      const r = await cli(["report", "verify", file, "--public-key", join(base, "pub.pem")]);
      expect(r.code, describeRun(["report", "verify", file], r)).toBe(0);
      expect(r.stdout).toMatch(/DR run \d+ \(chain position \d+\): the same in the catalog/);
      expect(
        r.stdout.match(/runbook version \d+ \(chain position \d+\): the same in the catalog/g),
      ).toHaveLength(2);
      expect(r.stdout).toContain("the report verifies");
    },
  );

  it("a failed run turned into a passing one with sqlite: report verify of the report made before fails", async () => {
    // A drill whose check cannot pass: recorded as failed.
    const failing = await writeConfig("failing", "10m", "nothing like this");
    const f = await drDrill(failing);
    expect(f.code, describeRun(["dr", "drill", "shop"], f)).toBe(1);
    const latest = JSON.parse((await ok(["--json", "report", "dr", "--mode", "drill"])).stdout) as JsonReport;
    const failed = latest.records[0]!;
    expect([failed.evidence, failed.status]).toEqual(["dr", "fail"]);
    const md = (await ok(["report", "dr", "--id", String(failed.id)])).stdout;
    expect(md).toContain("## 1. DR drill of shop: FAIL");
    expect(md).toContain("| Result | FAIL: failed at web: health http http://127.0.0.1:");
    expect(md).toContain("| RTO | not achieved: not every service was brought back (target 10m) |");
    expect(md).toMatch(/\| Next \| read the service's output .*then .*bulwark dr drill shop/);

    const report = join(base, "failed.json");
    await ok([
      "report",
      "dr",
      "-c",
      failing,
      "--id",
      String(failed.id),
      "--format",
      "json",
      "--output",
      report,
      "--sign",
    ]);
    expect((await cli(["report", "verify", report])).code).toBe(0);
    const copy = join(base, "edited.db");
    const src = new Database(catalogFile, { readonly: true });
    await src.backup(copy);
    src.close();
    const db = new Database(copy);
    db.prepare("UPDATE dr_runs SET status = 'pass' WHERE id = ?").run(failed.id);
    db.close();
    const chain = await cli(["catalog", "--catalog", copy, "verify-chain"]);
    expect(chain.code, describeRun(["catalog", "verify-chain"], chain)).toBe(21);
    expect(chain.stdout).toContain(`is BROKEN at position ${failed.chain!.seq}, dr`);
    const r = await cli(["report", "verify", report, "--catalog", copy]);
    expect(r.code, describeRun(["report", "verify", report], r)).toBe(21);
    expect(r.stdout).toContain("signature: valid");
    expect(r.stdout).toContain(
      `DR run ${failed.id} (chain position ${failed.chain!.seq}): DIFFERENT in the catalog`,
    );
    expect(r.stderr).toContain(`the catalog's evidence chain is broken at position ${failed.chain!.seq}`);
    expect(r.stdout).toContain("the report does NOT verify");
    // The untouched catalog still agrees with it.
    expect((await cli(["report", "verify", report])).code).toBe(0);
  }, 60_000);

  it("bad input is a clear error (exit 1)", async () => {
    const cases: [string[], RegExp][] = [
      [
        ["report", "dr", "-c", config, "--runbook", "shp"],
        /unknown runbook "shp"[\s\S]*the runbooks are shop/,
      ],
      [
        ["report", "dr", "--runbook", "crm"],
        /has no DR run of runbook crm[\s\S]*run `bulwark dr drill crm -c CONFIG` first/,
      ],
      [
        ["report", "dr", "--mode", "failover"],
        /has no DR run in mode failover[\s\S]*bulwark dr failover RUNBOOK/,
      ],
      [["report", "dr", "--id", "9999"], /has no DR run number 9999/],
      [
        ["report", "dr", "--mode", "rehearsal"],
        /--mode must be drill, failover or failback, got "rehearsal"/,
      ],
    ];
    for (const [args, message] of cases) {
      const r = await cli(args);
      expect(r.code, describeRun(args, r)).toBe(1);
      expect(r.stderr).toMatch(message);
    }
  });
});
