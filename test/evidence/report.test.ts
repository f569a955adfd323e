/**
 * Evidence reports rendered from records recorded in a real catalog (temporary SQLite file) through
 * recordDrill and recordVerification: every figure of a drill (restore, RTO, RPO, validators with their
 * output, isolation, spot check, findings) and of a verification (read, coverage, plan, findings with
 * snapshots and files, cross-copy) appears in Markdown, HTML and JSON; recorded text is escaped (it cannot
 * inject markup or end a comment); missing keys are tolerated; each format says which records it shows
 * and where they sit in the chain (readReport reads that back).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";

import { Catalog, type DrillRecord, type VerificationRecord } from "../../src/catalog/catalog.js";
import { readReport, renderReport, type ReportInput } from "../../src/evidence/report.js";

const base = mkdtempSync(join(tmpdir(), "bulwark-report-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));

let catalog: Catalog;
let n = 0;
beforeEach(() => {
  catalog = Catalog.open(join(base, `c${++n}.db`));
});
afterEach(() => catalog.close());

const SNAP = "5a".repeat(32);
const NOW = new Date("2026-06-01T10:00:00Z");

/** A drill with every key of the drill operation's details, and hostile text in places. */
function recordFullDrill(status: "pass" | "fail" = "fail"): DrillRecord {
  catalog.recordDrill({
    dataset: "app",
    target: "nas",
    snapshot: SNAP,
    time: new Date("2026-06-01T09:00:00Z"),
    status,
    description: "drill of 5a5a5a5a from nas",
    details: {
      target: "nas",
      location: "sftp:backup@nas.lan:/volume1/app",
      snapshot: SNAP,
      snapshotTime: "2026-05-31T21:00:00.000Z",
      rpoMs: 12 * 3600_000,
      sandbox: "/tmp/bulwark-drill-x1",
      restore: { files: 1234, bytes: 5 * 1024 * 1024, durationMs: 2500, bytesPerSecond: 2 * 1024 * 1024 },
      compare: { files: 1234, mismatches: 1, examples: ["/srv/app/a|b.txt: content differs"] },
      validators: [
        { name: "paths", kind: "paths", ok: true, durationMs: 3, message: "3 paths present" },
        {
          name: "orders",
          kind: "sqlite",
          ok: false,
          durationMs: 40,
          message: 'select count(*) from orders: expected "10", got "9"',
          output:
            'ok: PRAGMA integrity_check\n``` fence\n</pre><script>alert(1)</script>\n-->\n<!-- bulwark-evidence-record {"kind":"drill","id":99} -->',
        },
        { name: "health", kind: "command", ok: true, durationMs: 1200, message: "exit 0" },
        { name: "pg", kind: "postgres", ok: true, durationMs: 9000, message: "2 queries passed" },
      ],
      isolation: { netns: false, note: "not root: validator commands ran without a network namespace" },
      spotCheck: { sampled: 50, mismatches: 2, examples: ["/srv/app/live.txt: size 10, snapshot 9"] },
      findings: ["validator orders failed", "1 entry differs from the snapshot", "<b>not bold</b>"],
    },
  });
  return catalog.latestDrill("app")!;
}

function recordVerification(): VerificationRecord {
  catalog.recordVerification({
    target: "nas",
    dataset: "app",
    time: new Date("2026-06-01T08:00:00Z"),
    kind: "verify",
    errors: 1,
    description: "verify of nas",
    details: {
      target: "nas",
      location: "sftp:backup@nas.lan:/volume1/app",
      repository: "ab".repeat(32),
      startedAt: "2026-06-01T07:59:00.000Z",
      durationMs: 60_000,
      budget: { bytes: 2 * 1024 ** 3 },
      fullEveryMs: 30 * 86400_000,
      newOnly: false,
      newFirst: true,
      structure: { snapshots: 12, trees: 340, packs: 80, blobs: 9000 },
      digested: { packs: 40, bytes: 640 * 1024 * 1024, damaged: 1, withoutDigest: 2 },
      read: { packs: 3, bytes: 48 * 1024 * 1024, planned: 3, deferred: 20, fresh: 57 },
      coverage: { packs: 80, covered: 60, ratio: 0.75, damaged: 1 },
      errors: 1,
      warnings: 0,
      findings: [
        {
          severity: "error",
          kind: "blob-damaged",
          message: "pack 1f2e: blob 9a8b does not match its id",
          pack: "1f2e".repeat(16),
          blobs: 1,
          snapshots: ["c0ffee00".repeat(8)],
          snapshotsTotal: 1,
          files: ["/srv/app/data/orders.db", "/srv/app/*weird*_name"],
          filesTotal: 130,
        },
      ],
      crossCopy: [
        {
          original: "d1".repeat(32),
          message: "the copies of snapshot d1d1d1d1 differ",
          targets: ["nas", "s3"],
        },
      ],
    },
  });
  return catalog.latestVerification("app", "nas")!;
}

function input(kind: "drill", records: DrillRecord[]): ReportInput;
function input(kind: "verification", records: VerificationRecord[]): ReportInput;
function input(
  kind: "drill" | "verification",
  records: Array<DrillRecord | VerificationRecord>,
): ReportInput {
  return {
    generatedAt: NOW,
    host: "auditor-host",
    catalog: "/var/lib/bulwark/catalog.db",
    chain: catalog.verifyEvidenceChain(),
    kind,
    records,
  } as ReportInput;
}

describe("drill reports", () => {
  it("Markdown: what was restored, from where, when, how long, the validators, the result and findings", () => {
    const drill = recordFullDrill();
    const md = renderReport(input("drill", [drill]), "md");
    for (const expected of [
      "# Bulwark restore drill report",
      "Generated 2026-06-01 10:00:00 UTC on host auditor-host from the catalog /var/lib/bulwark/catalog.db.",
      "1 record: 0 passed, 1 failed.",
      "## 1. Drill of app from nas: FAIL",
      "| Result | FAIL: 3 findings |",
      `| Evidence chain | position 1, hash ${drill.chain!.hash}, previous ${"0".repeat(64)} |`,
      "| Location | sftp:backup@nas.lan:/volume1/app |",
      `| Snapshot | ${SNAP} |`,
      "| Snapshot taken | 2026-05-31 21:00:00 UTC |",
      "| Snapshot age (RPO) | 12h00m |",
      "| Drill started | 2026-06-01 09:00:00 UTC |",
      "| Restore (RTO) | 1,234 files, 5.0 MiB (5,242,880 bytes) in 2.5 s (2.0 MiB/s) |",
      "| Sandbox | /tmp/bulwark-drill-x1 (removed) |",
      "| Compared with the snapshot | 1,234 entries, 1 mismatch |",
      "| Isolation | none (commands could reach the network): not root: validator commands ran without a network namespace |",
      "| Spot check of live files | 50 files sampled, 2 mismatches |",
      "| Validator | Kind | Result | Took | Message |",
      "| paths | paths | pass | 3 ms | 3 paths present |",
      '| orders | sqlite | FAIL | 40 ms | select count(\\*) from orders: expected "10", got "9" |',
      "| pg | postgres | pass | 9.0 s | 2 queries passed |",
      "### Output of orders",
      "- /srv/app/a\\|b.txt: content differs",
      "- /srv/app/live.txt: size 10, snapshot 9",
      "- validator orders failed",
      "- \\<b\\>not bold\\</b\\>",
    ])
      expect(md).toContain(expected);
    // The output is in a fence longer than the run of backticks inside it.
    expect(md).toContain("````\nok: PRAGMA integrity_check\n``` fence\n");
    // A recorded line that mimics a marker is indented and not read as one.
    expect(md).toContain('\n <!-- bulwark-evidence-record {"kind":"drill","id":99} -->\n');
    expect(readReport(md)).toEqual({
      format: "md",
      meta: { kind: "drill", catalog: "/var/lib/bulwark/catalog.db", generatedAt: NOW.toISOString() },
      records: [{ kind: "drill", id: drill.id, seq: 1, hash: drill.chain!.hash }],
    });
  });

  it("HTML: standalone, escaped, loads nothing; the same facts", () => {
    const drill = recordFullDrill();
    const html = renderReport(input("drill", [drill]), "html");
    expect(html.startsWith("<!DOCTYPE html>\n")).toBe(true);
    expect(html.endsWith("</html>\n")).toBe(true);
    expect(html).toContain(`content="default-src 'none'; style-src 'unsafe-inline'"`);
    expect(html).not.toMatch(/<script|src=|href=|url\(/i);
    expect(html).toContain("&#60;/pre&#62;&#60;script&#62;alert(1)&#60;/script&#62;");
    expect(html).toContain("<tr><th>Snapshot age (RPO)</th><td>12h00m</td></tr>");
    expect(html).toContain("<td>orders</td><td>sqlite</td><td>FAIL</td><td>40 ms</td>");
    expect(html).toContain("<li>&#60;b&#62;not bold&#60;/b&#62;</li>");
    // Recorded text cannot end a comment: only Bulwark's own markers are comments.
    expect(html.match(/-->/g)).toHaveLength(2);
    expect(readReport(html)?.records).toEqual([
      { kind: "drill", id: drill.id, seq: 1, hash: drill.chain!.hash },
    ]);
    expect(readReport(html)?.format).toBe("html");
  });

  it("JSON: the records with their details and chain links, under a format name", () => {
    const drill = recordFullDrill("pass");
    const text = renderReport(input("drill", [drill]), "json");
    const json = JSON.parse(text) as Record<string, unknown> & { records: Record<string, unknown>[] };
    expect(json).toMatchObject({
      format: "bulwark-evidence-report/1",
      kind: "drill",
      generatedAt: NOW.toISOString(),
      host: "auditor-host",
      chain: { ok: true, records: 1 },
    });
    expect(json.records[0]).toMatchObject({
      evidence: "drill",
      result: "pass",
      id: drill.id,
      chain: drill.chain,
      dataset: "app",
      time: "2026-06-01T09:00:00.000Z",
      details: { rpoMs: 12 * 3600_000, restore: { files: 1234 } },
    });
    // The fields as shown give the record's chain hash: recomputable without the catalog.
    expect(readReport(text)?.records).toEqual([
      { kind: "drill", id: drill.id, seq: 1, hash: drill.chain!.hash, fieldsMatch: true },
    ]);
    // Edited in the report (unsigned or not), they no longer do.
    const edited = text.replace('"rpoMs": 43200000', '"rpoMs": 60000');
    expect(edited).not.toBe(text);
    expect(readReport(edited)?.records[0]?.fieldsMatch).toBe(false);
    expect(readReport(text.replace('"status": "pass"', '"status": "fail"'))?.records[0]?.fieldsMatch).toBe(
      false,
    );
  });

  it("tolerates missing keys: empty details, partial restore, no validators", () => {
    catalog.recordDrill({
      dataset: "app",
      target: "s3",
      snapshot: SNAP,
      time: NOW,
      status: "pass",
      description: "minimal",
      details: { restore: { files: 2 }, validators: [{ name: "x" }], isolation: {}, compare: "nonsense" },
    });
    catalog.recordDrill({
      dataset: "db",
      target: "s3",
      snapshot: SNAP,
      time: NOW,
      status: "pass",
      description: "none",
    });
    const records = catalog.drills();
    for (const format of ["md", "html", "json"] as const) {
      const text = renderReport(input("drill", records), format);
      expect(text).toContain("minimal");
    }
    const md = renderReport(input("drill", records), "md");
    expect(md).toContain("| Restore (RTO) | 2 files, ? bytes |");
    expect(md).toContain("| x |  | FAIL |  |  |");
    expect(md).toContain("| Details | none recorded |");
    expect(md).toContain("2 records: 2 passed, 0 failed.");
  });

  it("a record made before the chain says so; a broken chain is stated in the report", () => {
    const drill = recordFullDrill();
    const { chain: _chain, ...unchained } = drill;
    const md = renderReport(
      {
        ...input("drill", [unchained]),
        chain: { ok: false, records: 3, unchained: 1, broken: { seq: 2, reason: "its fields were changed" } },
      },
      "md",
    );
    expect(md).toContain(
      "| Evidence chain | not chained (recorded before the catalog kept an evidence chain) |",
    );
    expect(md).toContain(
      "Evidence chain: BROKEN at position 2: its fields were changed (3 records; 1 older record is outside the chain (made before it existed))",
    );
    expect(readReport(md)?.records).toEqual([{ kind: "drill", id: drill.id }]);
  });
});

describe("verification reports", () => {
  it("what was read, from where, how long, coverage, the plan, findings with snapshots and files, cross-copy", () => {
    const v = recordVerification();
    const md = renderReport(input("verification", [v]), "md");
    for (const expected of [
      "# Bulwark verification report",
      "## 1. Verification of nas (dataset app): FAIL",
      "| Result | FAIL: 1 error, 1 cross-copy difference |",
      "| Location | sftp:backup@nas.lan:/volume1/app |",
      `| Repository | ${"ab".repeat(32)} |`,
      "| Started | 2026-06-01 07:59:00 UTC |",
      "| Duration | 1m00s |",
      "| Structure checked | 12 snapshots, 340 trees, 80 packs, 9,000 blobs |",
      "| Data read | 3 packs, 48.0 MiB (50,331,648 bytes), 3 planned, 20 due packs left for the next run, 57 fresh packs skipped |",
      "| Coverage | 60 of 80 packs (75.0 %), 1 damaged pack |",
      "| Checked at rest | 40 packs, 640.0 MiB (671,088,640 bytes) hashed by the target, not downloaded, 1 damaged pack; 2 packs without a recorded digest |",
      "| Plan | budget 2.00 GiB (2,147,483,648 bytes), every pack once per 720h00m, new packs first |",
      "- error blob-damaged: pack 1f2e: blob 9a8b does not match its id",
      `  - snapshots: ${"c0ffee00".repeat(8)}`,
      "  - file /srv/app/data/orders.db",
      "  - file /srv/app/\\*weird\\*\\_name",
      "  - files (and 128 more)",
      "### Cross-copy differences",
      "  - targets: nas, s3",
    ])
      expect(md).toContain(expected);
    const jsonText = renderReport(input("verification", [v]), "json");
    expect(readReport(jsonText)?.records[0]?.fieldsMatch).toBe(true);
    expect(readReport(jsonText.replace('"errors": 1,', '"errors": 0,'))?.records[0]?.fieldsMatch).toBe(false);
    const json = JSON.parse(jsonText) as { records: unknown[] };
    expect(json.records[0]).toMatchObject({
      evidence: "verification",
      kind: "verify",
      result: "fail",
      errors: 1,
    });
  });

  it("a verification recorded without details (before this Bulwark) still renders", () => {
    catalog.recordVerification({ target: "local", time: NOW, kind: "check", errors: 0, description: "old" });
    const md = renderReport(input("verification", catalog.verifications()), "md");
    expect(md).toContain("## 1. Verification of local: PASS");
    expect(md).toContain("| Details | none recorded (a record made before Bulwark recorded them) |");
  });
});
