/**
 * DR evidence reports from DR runs and runbook versions recorded in a real catalog (temporary SQLite file)
 * through recordDrRun and recordRunbookVersion, with details shaped as `dr drill` and `dr failover` record
 * them: the RTO against the target (within, beyond, not achieved), the RPO of each dataset with its copy,
 * the isolation note, the failure with its next action and every unit of the timeline (start = at minus
 * its duration, end = at, outcome, message, output) in Markdown, HTML (recorded output with a script
 * escaped) and JSON (fields that give their chain hash); the change log of the runbook with every version
 * anchored and what changed. Then the operations: which runs a report shows (latest per runbook, --runbook,
 * --mode, --id), unknown runbooks and empty results as errors that say what to do, and `report verify`'s
 * comparison with a catalog whose dr_runs or runbook_versions rows were edited or deleted.
 */
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import Database from "better-sqlite3";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";

import { Catalog, type DrRunRecord } from "../../src/catalog/catalog.js";
import { ManualClock } from "../../src/core/clock.js";
import { BulwarkError } from "../../src/core/errors.js";
import { readReport, renderReport, type ChangeLog, type ReportInput } from "../../src/evidence/report.js";
import { buildReport, checkReport, selectEvidence } from "../../src/ops/evidence.js";
import { thrown } from "../helpers/errors.js";

const base = mkdtempSync(join(tmpdir(), "bulwark-dr-report-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));

let catalog: Catalog;
let file: string;
let n = 0;
beforeEach(() => {
  file = join(base, `c${++n}.db`);
  catalog = Catalog.open(file);
});
afterEach(() => catalog.close());

const NOW = new Date("2026-06-01T10:00:00Z");
const H1 = "1a".repeat(32);
const H2 = "2b".repeat(32);
const SNAP = "5a".repeat(32);
const HOSTILE =
  'body: items=3\n</pre><script>alert(1)</script>\n```\n<!-- bulwark-evidence-record {"kind":"dr","id":99} -->';

const definition = (rto: string, rtoMs: number): Record<string, unknown> => ({
  name: "shop",
  rto,
  rtoMs,
  services: {
    web: {
      name: "web",
      dependsOn: [],
      restore: [{ dataset: "web", to: { directory: "/srv/web" } }],
      start: { command: ["node", "/srv/web/server.js"] },
      health: [{ type: "http", name: "http http://127.0.0.1:8080/", url: "http://127.0.0.1:8080/" }],
    },
  },
  before: [],
  after: [],
});

function version(hash: string, rto: string, rtoMs: number, time: Date): void {
  catalog.recordRunbookVersion({
    runbook: "shop",
    definitionHash: hash,
    time,
    definition: definition(rto, rtoMs),
  });
}

/** The details of a drill as `dr drill` records them (a DrDrillReport). */
function drillDetails(opts: { pass: boolean; rtoMs?: number; rtoTargetMs: number }): Record<string, unknown> {
  const t = (s: number) => new Date(Date.UTC(2026, 5, 1, 9, 0, s)).toISOString();
  return {
    runbook: "shop",
    definitionHash: H1,
    mode: "drill",
    time: t(0),
    status: opts.pass ? "pass" : "fail",
    isolation: {
      netns: false,
      note: "without network isolation (not root): the services ran on the host, on remapped ports",
      ports: { "8080": 43211 },
    },
    sandboxKept: false,
    plan: {
      runbook: "shop",
      time: t(0),
      definitionHash: H1,
      version: { id: 1, changed: true, versions: 1 },
      waves: [
        {
          wave: 1,
          services: [
            {
              name: "web",
              dependsOn: [],
              readinessMs: 2000,
              datasets: [
                {
                  dataset: "web",
                  to: "directory /srv/web",
                  target: "one",
                  snapshot: SNAP,
                  snapshotTime: "2026-06-01T03:00:00.000Z",
                  rpoMs: 6 * 3600_000,
                  passedOver: [],
                  ranking: [],
                },
              ],
            },
          ],
        },
      ],
      estimateMs: 9000,
      planningMs: 300,
      rto: "10m",
      rtoMs: opts.rtoTargetMs,
      ready: true,
      problems: [
        {
          severity: "warning",
          service: "web",
          message: "no drill of web yet",
          remedy: "run bulwark drill",
        },
      ],
    },
    timeline: [
      {
        at: t(3),
        offsetMs: 3000,
        id: "web/restore/0",
        wave: 1,
        service: "web",
        kind: "restore",
        name: "restore web from one",
        outcome: "passed",
        durationMs: 2500,
        message: "snapshot 5a5a5a5a, 1.0 MiB",
      },
      {
        at: t(4),
        offsetMs: 4000,
        id: "web/start",
        wave: 1,
        service: "web",
        kind: "start",
        name: "start web",
        outcome: "passed",
        durationMs: 120,
        message: "started (pid 4242)",
      },
      {
        at: t(5),
        offsetMs: 5000,
        id: "web/health/0",
        wave: 1,
        service: "web",
        kind: "health",
        name: "http http://127.0.0.1:8080/",
        outcome: opts.pass ? "passed" : "failed",
        durationMs: 800,
        message: opts.pass ? "200, body matches" : 'expected body "items=99"',
        output: HOSTILE,
      },
      {
        at: t(6),
        offsetMs: 6000,
        service: "web",
        kind: "stop",
        name: "stop web",
        outcome: "passed",
        durationMs: 50,
        message: "stopped",
      },
    ],
    ...(opts.rtoMs !== undefined ? { rtoMs: opts.rtoMs } : {}),
    rtoTargetMs: opts.rtoTargetMs,
    rtoTarget: "10m",
    datasets: [{ dataset: "web", target: "one", snapshot: SNAP, rpoMs: 6 * 3600_000 }],
    ...(opts.pass
      ? {}
      : {
          failed: {
            id: "web/health/0",
            service: "web",
            step: "health http http://127.0.0.1:8080/",
            message: 'expected body "items=99"',
            output: HOSTILE,
            next: "fix web or its check, then run bulwark dr drill shop again",
          },
        }),
    leftovers: [],
    leftoversRemoved: [],
    durationMs: 6500,
  };
}

function drRun(
  status: "pass" | "fail",
  details: Record<string, unknown>,
  time = new Date("2026-06-01T09:00:00Z"),
  mode: DrRunRecord["mode"] = "drill",
  runbook = "shop",
): DrRunRecord {
  const { id } = catalog.recordDrRun({
    runbook,
    definitionHash: H1,
    mode,
    time,
    status,
    description: `dr ${mode} of ${runbook}`,
    datasets: ["web"],
    details,
  });
  return catalog.drRuns({ limit: -1 }).find((r) => r.id === id)!;
}

function input(runs: DrRunRecord[], current?: string | null): ReportInput {
  const logs: ChangeLog[] = [...new Set(runs.map((r) => r.runbook))].map((runbook) => ({
    runbook,
    versions: catalog.runbookVersions(runbook),
    ...(current !== undefined ? { current } : {}),
  }));
  return {
    generatedAt: NOW,
    host: "auditor-host",
    catalog: "/var/lib/bulwark/catalog.db",
    chain: catalog.verifyEvidenceChain(),
    kind: "dr",
    records: runs,
    changeLogs: logs,
  };
}

describe("DR reports", () => {
  it("Markdown: the run's facts, the RPO of each dataset, every unit of the timeline, the change log", () => {
    version(H1, "10m", 600_000, new Date("2026-06-01T08:00:00Z"));
    const run = drRun("pass", drillDetails({ pass: true, rtoMs: 5000, rtoTargetMs: 600_000 }));
    version(H2, "20m", 1_200_000, new Date("2026-06-01T09:30:00Z"));
    const [v1, v2] = catalog.runbookVersions("shop");
    const md = renderReport(input([run], H2), "md");
    for (const expected of [
      "# Bulwark DR report",
      "1 DR run: 1 passed, 0 failed; the change log of 1 runbook (2 versions).",
      "## 1. DR drill of shop: PASS",
      "| Result | PASS |",
      `| Record | DR run ${run.id} |`,
      `| Evidence chain | position 2, hash ${run.chain!.hash}, previous ${v1!.chain!.hash} |`,
      "| Runbook | shop |",
      "| Mode | drill |",
      "| Started | 2026-06-01 09:00:00 UTC |",
      "| Duration | 6.5 s |",
      `| Definition | hash ${H1}, version 1 of 2 |`,
      `| Current definition | NO: the config's runbook changed since (now hash ${H2}, version 2 of 2) |`,
      "| Plan readiness | ready: 0 errors, 1 warning; estimated RTO 9.0 s (planning took 300 ms) |",
      "| RTO | 5.0 s achieved against a target of 10m: within |",
      "| Isolation | none (the services could reach the network): without network isolation (not root): the services ran on the host, on remapped ports; ports remapped 8080 -\\> 43211 |",
      "| Datasets | web |",
      "### Datasets restored (RPO)",
      "| Dataset | Copy | Snapshot | Snapshot taken | RPO | Restored to |",
      `| web | one | ${SNAP} | 2026-06-01 03:00:00 UTC | 6h00m | directory /srv/web |`,
      "- warning (service web): no drill of web yet",
      "  - remedy: run bulwark drill",
      "| Unit | Wave | Service | Kind | Step | Start | End | Took | Outcome | Message |",
      // Start is the end (at) minus the unit's duration.
      "| web/restore/0 | 1 | web | restore | restore web from one | 09:00:00.500 | 09:00:03.000 | 2.5 s | passed | snapshot 5a5a5a5a, 1.0 MiB |",
      "| web/start | 1 | web | start | start web | 09:00:03.880 | 09:00:04.000 | 120 ms | passed | started (pid 4242) |",
      "| web/health/0 | 1 | web | health | http http://127.0.0.1:8080/ | 09:00:04.200 | 09:00:05.000 | 800 ms | passed | 200, body matches |",
      "|  |  | web | stop | stop web | 09:00:05.950 | 09:00:06.000 | 50 ms | passed | stopped |",
      "### Output of web/health/0 (http http://127.0.0.1:8080/)",
      "## 2. Change log of runbook shop: 2 versions",
      "| Versions | 2, the latest recorded 2026-06-01 09:30:00 UTC |",
      `| The config's definition | hash ${H2}, version 2 of 2 |`,
      `| DR run ${run.id} | ran version 1 of 2 |`,
      "| Version | Recorded | Definition hash | Record | Evidence chain | Changes |",
      `| 1 | 2026-06-01 08:00:00 UTC | ${H1} | runbook version ${v1!.id} | position 1, hash ${v1!.chain!.hash} | first version: 1 service (web), RTO 10m |`,
      `| 2 | 2026-06-01 09:30:00 UTC | ${H2} | runbook version ${v2!.id} | position 3, hash ${v2!.chain!.hash} | rto: "10m" -\\> "20m"; rtoMs: 600000 -\\> 1200000 |`,
    ])
      expect(md).toContain(expected);
    // The output is fenced by more backticks than it holds; a line that mimics a marker is indented.
    expect(md).toContain(
      "````\nbody: items=3\n</pre><script>alert(1)</script>\n```\n <!-- bulwark-evidence-record",
    );
    expect(readReport(md)).toEqual({
      format: "md",
      meta: { kind: "dr", catalog: "/var/lib/bulwark/catalog.db", generatedAt: NOW.toISOString() },
      records: [
        { kind: "dr", id: run.id, seq: 2, hash: run.chain!.hash, runbook: "shop" },
        { kind: "runbook", id: v1!.id, seq: 1, hash: v1!.chain!.hash, runbook: "shop" },
        { kind: "runbook", id: v2!.id, seq: 3, hash: v2!.chain!.hash, runbook: "shop" },
      ],
    });
    // Without a config the current definition is not compared; with one that lacks the runbook, it says so.
    expect(renderReport(input([run]), "md")).toContain(
      "| Current definition | not compared (no config given) |",
    );
    expect(renderReport(input([run], null), "md")).toContain(
      "| Current definition | the config has no runbook shop |",
    );
    expect(renderReport(input([run], H1), "md")).toContain(
      "| Current definition | yes: the config's runbook is the definition this run ran |",
    );
  });

  it("a failed drill: FAIL with the step, the failure and its next action; RTO not achieved; beyond the target", () => {
    version(H1, "10m", 600_000, new Date("2026-06-01T08:00:00Z"));
    const failed = drRun("fail", drillDetails({ pass: false, rtoTargetMs: 600_000 }));
    const md = renderReport(input([failed]), "md");
    for (const expected of [
      "## 1. DR drill of shop: FAIL",
      "| Result | FAIL: failed at web: health http http://127.0.0.1:8080/ |",
      "| RTO | not achieved: not every service was brought back (target 10m) |",
      '| Failure | web: health http http://127.0.0.1:8080/: expected body "items=99" |',
      "| Next | fix web or its check, then run bulwark dr drill shop again |",
      '| web/health/0 | 1 | web | health | http http://127.0.0.1:8080/ | 09:00:04.200 | 09:00:05.000 | 800 ms | FAILED | expected body "items=99" |',
      "1 DR run: 0 passed, 1 failed",
    ])
      expect(md).toContain(expected);
    // The failure's output is the failed unit's, shown once.
    expect(md.match(/body: items=3/g)).toHaveLength(1);
    const slow = drRun("pass", drillDetails({ pass: true, rtoMs: 700_000, rtoTargetMs: 600_000 }));
    expect(renderReport(input([slow]), "md")).toContain(
      "| RTO | 11m40s achieved against a target of 10m: BEYOND the target |",
    );
  });

  it("HTML: recorded output with a script is escaped; only Bulwark's markers are comments", () => {
    version(H1, "10m", 600_000, new Date("2026-06-01T08:00:00Z"));
    const run = drRun("fail", drillDetails({ pass: false, rtoTargetMs: 600_000 }));
    const html = renderReport(input([run]), "html");
    expect(html.startsWith("<!DOCTYPE html>\n")).toBe(true);
    expect(html).not.toMatch(/<script|src=|href=|url\(/i);
    expect(html).toContain(
      "<pre>body: items=3\n&#60;/pre&#62;&#60;script&#62;alert(1)&#60;/script&#62;\n```\n&#60;!-- bulwark-evidence-record",
    );
    expect(html).toContain('<h2 class="fail">1. DR drill of shop: FAIL</h2>');
    // A change log is no result: no pass or fail class.
    expect(html).toContain("<h2>2. Change log of runbook shop: 1 version</h2>");
    expect(html).toContain(
      "<tr><th>RTO</th><td>not achieved: not every service was brought back (target 10m)</td></tr>",
    );
    expect(html).toContain("<td>web/health/0</td><td>1</td><td>web</td><td>health</td>");
    // The report's marker, the run's and the version's.
    expect(html.match(/-->/g)).toHaveLength(3);
    expect(readReport(html)?.records.map((r) => r.kind)).toEqual(["dr", "runbook"]);
  });

  it("JSON: the runs and the versions as recorded, each field set giving its chain hash; the versions numbered", () => {
    version(H1, "10m", 600_000, new Date("2026-06-01T08:00:00Z"));
    const run = drRun("pass", drillDetails({ pass: true, rtoMs: 5000, rtoTargetMs: 600_000 }));
    version(H2, "20m", 1_200_000, new Date("2026-06-01T09:30:00Z"));
    const text = renderReport(input([run], H2), "json");
    const json = JSON.parse(text) as {
      kind: string;
      runbooks: unknown[];
      records: Record<string, unknown>[];
    };
    expect(json.kind).toBe("dr");
    expect(json.runbooks).toEqual([
      {
        runbook: "shop",
        current: H2,
        versions: [
          { version: 1, id: 1, definitionHash: H1 },
          { version: 2, id: 2, definitionHash: H2 },
        ],
      },
    ]);
    expect(json.records.map((r) => [r.evidence, r.result])).toEqual([
      ["dr", "pass"],
      ["runbook", undefined],
      ["runbook", undefined],
    ]);
    expect(json.records[0]).toMatchObject({
      id: run.id,
      runbook: "shop",
      mode: "drill",
      status: "pass",
      datasets: ["web"],
      time: "2026-06-01T09:00:00.000Z",
      details: { rtoMs: 5000, rtoTargetMs: 600_000, datasets: [{ rpoMs: 6 * 3600_000 }] },
    });
    expect(json.records[2]).toMatchObject({ definitionHash: H2, definition: { rto: "20m" } });
    expect(readReport(text)?.records.map((r) => [r.kind, r.fieldsMatch])).toEqual([
      ["dr", true],
      ["runbook", true],
      ["runbook", true],
    ]);
    // Edited in the report, a run or a version no longer gives its hash.
    expect(readReport(text.replace('"rtoMs": 5000', '"rtoMs": 500'))?.records[0]?.fieldsMatch).toBe(false);
    expect(readReport(text.replace('"rto": "20m"', '"rto": "5m"'))?.records[2]?.fieldsMatch).toBe(false);
  });

  it("tolerates a run without details and a failover's state", () => {
    catalog.recordDrRun({
      runbook: "old",
      definitionHash: H1,
      mode: "drill",
      time: NOW,
      status: "pass",
      description: "recorded without details",
      datasets: [],
    });
    const failover = drRun(
      "pass",
      {
        runId: "20260601-abc",
        runbook: "shop",
        mode: "failover",
        status: "passed",
        timeline: [{ at: "2026-06-02T00:00:01.000Z", kind: "start", name: "start web", durationMs: 2000 }],
        services: { web: { pid: 77, log: "/var/log/bulwark/web.log" } },
        rtoMs: 3000,
        datasets: [{ dataset: "web" }],
      },
      new Date("2026-06-01T23:59:59Z"),
      "failover",
    );
    const md = renderReport(input([...catalog.drRuns({ runbook: "old" }), failover]), "md");
    expect(md).toContain("| Details | none recorded |");
    expect(md).toContain("| Mode | failover (run 20260601-abc) |");
    expect(md).toContain("| Services left running | web (pid 77, log /var/log/bulwark/web.log) |");
    expect(md).toContain("| RTO | 3.0 s achieved (the runbook sets no RTO target) |");
    // A unit on another day than the run's start shows its date.
    expect(md).toContain("| start web | 23:59:59.000 | 2026-06-02 00:00:01.000 | 2.0 s | ? |");
    expect(md).toContain("| web | (none) |  |  |  |  |");
    expect(md).toContain("## 2. Change log of runbook old: 0 versions");
    expect(md).toContain("| Versions | none recorded |");
  });
});

describe("DR report operations", () => {
  const known = { datasets: ["web"], targets: ["one"], runbooks: { shop: H1, crm: H2 } };

  it("the latest run of each runbook, or of --runbook, of --mode, or --id", () => {
    const details = drillDetails({ pass: true, rtoMs: 5000, rtoTargetMs: 600_000 });
    const a = drRun("fail", details, new Date("2026-06-01T01:00:00Z"));
    const b = drRun("pass", details, new Date("2026-06-01T02:00:00Z"));
    const c = drRun("pass", details, new Date("2026-06-01T03:00:00Z"), "failover");
    const d = drRun("pass", details, new Date("2026-06-01T01:30:00Z"), "drill", "crm");
    const ids = (sel: Parameters<typeof selectEvidence>[1]) => selectEvidence(catalog, sel).map((r) => r.id);
    expect(ids({ kind: "dr" })).toEqual([d.id, c.id]);
    expect(ids({ kind: "dr", mode: "drill" })).toEqual([d.id, b.id]);
    expect(ids({ kind: "dr", runbook: "shop", mode: "drill", known })).toEqual([b.id]);
    expect(ids({ kind: "dr", id: a.id })).toEqual([a.id]);
  });

  it("an unknown runbook names the config's; nothing recorded says to run bulwark dr drill first", () => {
    const e1 = thrown(() => selectEvidence(catalog, { kind: "dr", runbook: "shp", known })) as BulwarkError;
    expect([e1.code, e1.message, e1.hint]).toEqual([
      "USAGE",
      'unknown runbook "shp"',
      "the runbooks are shop, crm",
    ]);
    const e2 = thrown(() => selectEvidence(catalog, { kind: "dr", runbook: "shop", known })) as BulwarkError;
    expect([e2.code, e2.message]).toEqual([
      "NOT_FOUND",
      `the catalog at ${file} has no DR run of runbook shop`,
    ]);
    expect(e2.hint).toContain("run `bulwark dr drill shop -c CONFIG` first");
    const e3 = thrown(() => selectEvidence(catalog, { kind: "dr" })) as BulwarkError;
    expect(e3.message).toBe(`the catalog at ${file} has no DR run`);
    expect(e3.hint).toContain("bulwark dr drill RUNBOOK");
    const e4 = thrown(() => selectEvidence(catalog, { kind: "dr", mode: "failover", id: 7 })) as BulwarkError;
    expect(e4.message).toBe(`the catalog at ${file} has no DR run number 7 in mode failover`);
    expect(e4.hint).toContain("bulwark dr failover RUNBOOK");
  });

  it("buildReport adds the change log and tells the current definition; report verify catches edited rows", () => {
    version(H1, "10m", 600_000, new Date("2026-06-01T08:00:00Z"));
    const run = drRun("fail", drillDetails({ pass: false, rtoTargetMs: 600_000 }));
    version(H2, "20m", 1_200_000, new Date("2026-06-01T09:30:00Z"));
    const key = generateKeyPairSync("ed25519").privateKey;
    const make = (format: "md" | "json") =>
      buildReport({
        store: catalog,
        selection: { kind: "dr", known: { ...known, runbooks: { shop: H2 } } },
        format,
        clock: new ManualClock(NOW),
        host: "h",
        signingKey: key,
      });
    const report = make("md");
    expect(report.records).toEqual([
      { kind: "dr", id: run.id, seq: 2, hash: run.chain!.hash, pass: false },
      { kind: "runbook", id: 1, seq: 1, hash: expect.any(String) as string, pass: true },
      { kind: "runbook", id: 2, seq: 3, hash: expect.any(String) as string, pass: true },
    ]);
    expect(report.text).toContain(
      `| Current definition | NO: the config's runbook changed since (now hash ${H2}, version 2 of 2) |`,
    );
    const json = make("json");
    for (const made of [report, json])
      expect(checkReport({ file: made.text, store: catalog })).toMatchObject({
        ok: true,
        records: [{ catalog: "same" }, { catalog: "same" }, { catalog: "same" }],
        problems: [],
      });
    // The auditee's edit with the sqlite3 shell: the failed run turned into a passing one.
    const raw = new Database(file);
    raw.prepare("UPDATE dr_runs SET status = 'pass' WHERE id = ?").run(run.id);
    const edited = checkReport({ file: report.text, store: catalog });
    expect(edited.ok).toBe(false);
    expect(edited.records.map((r) => r.catalog)).toEqual(["different", "same", "same"]);
    expect(edited.problems.join("\n")).toContain(
      `the catalog's DR run ${run.id} is not the one reported (position 2`,
    );
    raw.prepare("UPDATE dr_runs SET status = 'fail' WHERE id = ?").run(run.id);
    expect(checkReport({ file: report.text, store: catalog }).ok).toBe(true);
    // A version's definition edited: the change log's record is caught.
    raw.prepare("UPDATE runbook_versions SET definition = '{}' WHERE id = 1").run();
    const version1 = checkReport({ file: json.text, store: catalog });
    expect(version1.ok).toBe(false);
    expect(version1.problems.join("\n")).toContain("the catalog's evidence chain is broken at position 1");
    expect(version1.records.map((r) => r.catalog)).toEqual(["same", "different", "same"]);
    raw.prepare("DELETE FROM runbook_versions WHERE id = 2").run();
    raw.close();
    expect(checkReport({ file: json.text, store: catalog }).problems).toContain(
      "the catalog has no runbook version 2: it was deleted after the report was made",
    );
  });
});
