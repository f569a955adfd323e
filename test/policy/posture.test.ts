import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import * as prettier from "prettier";
import { describe, expect, it } from "vitest";

import type { BulwarkConfig } from "../../src/config/types.js";
import {
  evaluatePosture,
  postureExitCode,
  type DatasetEvidence,
  type PostureReport,
  type RowStatus,
} from "../../src/policy/posture.js";
import { renderPosture, type PostureFormat } from "../../src/policy/posture-report.js";
import { presetCounts } from "../../src/policy/rule-presets.js";
import {
  NOW,
  OLD_SNAPSHOT,
  SNAPSHOT,
  exampleConfig,
  healthyCopy,
  healthyEvidence,
  passedDrill,
} from "./posture-fixture.js";

const GOLDEN = join(dirname(fileURLToPath(import.meta.url)), "golden");
const EXT: Record<PostureFormat, string> = { table: "txt", markdown: "md", html: "html", json: "json" };

/**
 * Compares with test/policy/golden/<name>.<ext>; UPDATE_GOLDEN=1 rewrites the files. The JSON and HTML goldens
 * are stored as the project's formatter prints them (so `prettier --check .` stays clean); the renderer's JSON
 * is also compared value for value.
 */
async function expectGolden(name: string, report: PostureReport): Promise<void> {
  for (const format of Object.keys(EXT) as PostureFormat[]) {
    const file = join(GOLDEN, `${name}.${EXT[format]}`);
    const rendered = renderPosture(report, format);
    const text =
      format === "json" || format === "html"
        ? await prettier.format(rendered, { ...(await prettier.resolveConfig(file)), filepath: file })
        : rendered;
    if (process.env.UPDATE_GOLDEN === "1" || !existsSync(file)) {
      if (process.env.CI === "true") throw new Error(`golden file ${file} is missing`);
      mkdirSync(GOLDEN, { recursive: true });
      writeFileSync(file, text);
    }
    const golden = readFileSync(file, "utf8");
    expect(text, `${file} (UPDATE_GOLDEN=1 rewrites it)`).toBe(golden);
    if (format === "json") expect(JSON.parse(rendered)).toEqual(JSON.parse(golden));
  }
}

function statuses(report: PostureReport): Record<string, RowStatus> {
  const d = report.datasets[0];
  if (d === undefined) throw new Error("no dataset");
  return Object.fromEntries(d.rows.map((r) => [r.id, r.status]));
}

function run(evidence: DatasetEvidence, config: BulwarkConfig = exampleConfig()): PostureReport {
  return evaluatePosture(config, { datasets: { app: evidence } }, NOW);
}

describe("posture", () => {
  it("passes when every copy is fresh, distinct and the offsite copy is locked", async () => {
    const report = run(healthyEvidence());
    expect(statuses(report)).toEqual({
      copies: "pass",
      media: "pass",
      offsite: "pass",
      immutable: "pass",
      validation: "pass",
      dr: "unknown",
    });
    expect(report.status).toBe("pass");
    expect(postureExitCode(report)).toBe(0);
    await expectGolden("pass", report);
  });

  it("does not count a stopped target", async () => {
    const ev = healthyEvidence();
    ev.copies.nas = { reachable: false, error: "connect ECONNREFUSED 192.168.1.20:22" };
    const report = run(ev);
    expect(statuses(report)).toMatchObject({
      copies: "fail",
      media: "pass",
      offsite: "pass",
      immutable: "pass",
    });
    expect(report.datasets[0]?.rows[0]?.reason).toContain("target nas is unreachable (connect ECONNREFUSED");
    expect(postureExitCode(report)).toBe(20);
    await expectGolden("stopped-target", report);
  });

  it("names each target that does not count, with its reason and remedy, in the table, markdown and HTML", () => {
    const ev = healthyEvidence();
    ev.copies.nas = { reachable: false, error: "connect ECONNREFUSED 192.168.1.20:22" };
    const report = run(ev);
    const reason = "target nas is unreachable (connect ECONNREFUSED 192.168.1.20:22)";
    const remedy = "bring target nas (sftp:backup@nas.lan:/volume1/bulwark) back online";
    expect(renderPosture(report, "table")).toContain(
      `  target nas does not count: ${reason}\n    remedy: ${remedy}\n`,
    );
    expect(renderPosture(report, "markdown")).toContain(
      `- target nas does not count: ${reason}<br>remedy: ${remedy}\n`,
    );
    expect(renderPosture(report, "html")).toContain(
      `<li>target nas does not count: ${reason}<br>remedy: ${remedy}</li>`,
    );
    // Counted copies are not listed there.
    expect(renderPosture(report, "table")).not.toContain("target local does not count");
  });

  it("lists a target that does not count even when the copies row passes", () => {
    const config = exampleConfig();
    const nas = config.targets.nas;
    if (nas === undefined) throw new Error("no nas");
    config.targets.nas2 = { ...nas, name: "nas2", labels: { ...nas.labels, failureDomain: "nas-2" } };
    const job = Object.values(config.jobs)[0];
    if (job === undefined) throw new Error("no job");
    job.copies = [...job.copies, "nas2"];
    const ev = healthyEvidence();
    ev.copies.nas2 = { reachable: false, error: "getaddrinfo ENOTFOUND nas2.lan" };
    const report = run(ev, config);
    expect(statuses(report).copies).toBe("pass");
    for (const format of ["table", "markdown", "html"] as const)
      expect(renderPosture(report, format), format).toContain(
        "target nas2 does not count: target nas2 is unreachable (getaddrinfo ENOTFOUND nas2.lan)",
      );
  });

  it("does not count a copy older than the RPO", async () => {
    const ev = healthyEvidence();
    ev.copies.offsite = { ...healthyCopy(true), snapshot: OLD_SNAPSHOT };
    const report = run(ev);
    expect(statuses(report)).toMatchObject({
      copies: "fail",
      media: "pass",
      offsite: "fail",
      immutable: "fail",
    });
    expect(report.datasets[0]?.rows[2]?.reason).toContain("is 3d5h old, older than the RPO 24h");
    await expectGolden("stale-copy", report);
  });

  it("counts two targets in one failure domain once, with a warning", async () => {
    const config = exampleConfig();
    const nas = config.targets.nas;
    if (nas) nas.labels.failureDomain = "server-1";
    const report = run(healthyEvidence(), config);
    expect(statuses(report)).toMatchObject({
      copies: "fail",
      media: "pass",
      offsite: "pass",
      immutable: "pass",
    });
    expect(report.datasets[0]?.warnings).toEqual([
      "targets local, nas share failure domain server-1: their copies count once",
    ]);
    await expectGolden("shared-failure-domain", report);
  });

  it("does not count an immutable copy whose lock was dropped", async () => {
    const ev = healthyEvidence();
    ev.copies.offsite = healthyCopy(false);
    const report = run(ev);
    expect(statuses(report)).toMatchObject({ copies: "pass", offsite: "pass", immutable: "fail" });
    expect(report.datasets[0]?.rows[3]?.reason).toContain(
      "no lock could be read back for snapshot 4f1c9a07 on offsite",
    );
    await expectGolden("lock-dropped", report);
  });

  it("fails a lock that expired or is shorter than the policy's immutability period", () => {
    const expired = healthyEvidence();
    expired.copies.offsite = {
      ...healthyCopy(),
      lock: { kind: "retention", readBack: true, retainUntil: new Date(NOW.getTime() - 1000) },
    };
    const r1 = run(expired).datasets[0]?.rows[3];
    expect(r1?.status).toBe("fail");
    expect(r1?.reason).toContain("ended at 2026-11-26T05:59:59Z: the lock was dropped");

    const short = healthyEvidence();
    short.copies.offsite = {
      ...healthyCopy(),
      lock: {
        kind: "retention",
        readBack: true,
        retainUntil: new Date(SNAPSHOT.time.getTime() + 86_400_000),
      },
    };
    const r2 = run(short).datasets[0]?.rows[3];
    expect(r2?.status).toBe("fail");
    expect(r2?.reason).toContain("shorter than the policy's 30 days");
  });

  it("counts production as one copy by default", () => {
    const config = exampleConfig();
    const p = config.policies.standard;
    if (p) p.productionCounts = true;
    const ev = healthyEvidence();
    ev.copies.nas = { reachable: false };
    const report = run(ev, config);
    expect(statuses(report).copies).toBe("pass");
    expect(report.datasets[0]?.rows[0]?.evidence[0]).toBe("production data (counts as one copy)");
    // Losing the offsite target still fails offsite and immutable.
    ev.copies.offsite = { reachable: false };
    expect(statuses(run(ev, config))).toMatchObject({ copies: "fail", offsite: "fail", immutable: "fail" });
  });

  it("reports validation as unknown without any verification or drill", () => {
    const none = healthyEvidence();
    delete none.validation;
    const r = run(none);
    expect(statuses(r).validation).toBe("unknown");
    expect(r.status).toBe("unknown");
    expect(postureExitCode(r)).toBe(0);
    expect(postureExitCode(r, { strict: true })).toBe(20);
    const empty = healthyEvidence();
    empty.validation = { copies: {} };
    expect(statuses(run(empty)).validation).toBe("unknown");
  });

  describe("validation fails, naming the copy, the time and the finding", () => {
    const validationRow = (edit: (e: DatasetEvidence) => void) => {
      const ev = healthyEvidence();
      edit(ev);
      const row = run(ev).datasets[0]?.rows.find((x) => x.id === "validation");
      if (row === undefined) throw new Error("no validation row");
      return row;
    };
    const copies = (e: DatasetEvidence) => e.validation!.copies;

    it("passes with every counted copy verified and covered and a recent passing drill", () => {
      const row = validationRow(() => undefined);
      expect(row.status).toBe("pass");
      expect(row.evidence).toContain(
        "nas: verified at 2026-11-25T06:00:00Z, 0 errors; 40 of 40 packs read soundly within 30d (oldest read 2026-11-06T06:00:00Z)",
      );
      expect(row.evidence.at(-1)).toMatch(
        /^drill of [0-9a-f]{8} from nas at .*: pass, restore 3\.2 s, snapshot 6h old$/,
      );
    });

    it("a verification that found errors", () => {
      const row = validationRow((e) => {
        copies(e).nas!.verification!.errors = 2;
      });
      expect(row.status).toBe("fail");
      expect(row.reason).toBe("the verification of nas at 2026-11-25T06:00:00Z found 2 errors");
      expect(row.remedy).toContain("bulwark repair -c CONFIG --target nas");
    });

    it("a copy never verified, or past the cadence", () => {
      expect(
        validationRow((e) => {
          delete copies(e).offsite!.verification;
        }).reason,
      ).toBe("offsite has never been verified");
      expect(
        validationRow((e) => {
          copies(e).local!.verification!.time = new Date(NOW.getTime() - 9 * 86_400_000);
        }).reason,
      ).toBe("local was last verified 9d ago; the cadence is 7d");
    });

    it("coverage short of every pack within fullEvery, or damaged packs", () => {
      expect(
        validationRow((e) => {
          copies(e).nas!.coverage!.covered = 31;
        }).reason,
      ).toBe("only 31 of 40 packs of nas were read within 30d");
      const damaged = validationRow((e) => {
        copies(e).nas!.coverage = { packs: 40, covered: 39, damaged: 1, fullEvery: "30d" };
      });
      expect(damaged.reason).toBe("nas has 1 damaged pack not repaired");
      expect(damaged.remedy).toBe("bulwark repair -c CONFIG --target nas");
      expect(
        validationRow((e) => {
          copies(e).local = { ...copies(e).local, coverageError: "the copy could not be opened (gone)" };
          delete copies(e).local!.coverage;
        }).reason,
      ).toBe("the verification coverage of local is unknown: the copy could not be opened (gone)");
    });

    it("no drill, a failed drill, a drill older than drills.every", () => {
      expect(
        validationRow((e) => {
          delete e.validation!.drill;
        }).reason,
      ).toBe("no restore drill has been recorded");
      const failed = validationRow((e) => {
        e.validation!.drill = {
          ...passedDrill(),
          status: "fail",
          findings: [
            'validator sqlite /sources/app.sqlite: select count(*) from orders: expected "3", got "2"',
          ],
        };
      });
      expect(failed.reason).toBe(
        'the last drill (from nas at 2026-11-24T06:00:00Z) failed: validator sqlite /sources/app.sqlite: select count(*) from orders: expected "3", got "2"',
      );
      expect(
        validationRow((e) => {
          e.validation!.drill!.time = new Date(NOW.getTime() - 8 * 86_400_000);
        }).reason,
      ).toBe("the last drill is 8d old; drills.every is 7d");
    });

    it("only counted copies are judged: a copy out of its RPO is the copies row's concern", () => {
      const row = validationRow((e) => {
        e.copies.offsite = { reachable: false };
        delete copies(e).offsite;
      });
      expect(row.status).toBe("pass");
    });
  });

  it("counts sites and isolated networks for 4-3-2", () => {
    const config = exampleConfig();
    const p = config.policies.standard;
    if (!p) throw new Error("fixture");
    p.preset = "4-3-2";
    p.counts = presetCounts("4-3-2");
    p.productionCounts = true;
    const app = config.datasets.app;
    if (app) app.site = "home";
    const report = run(healthyEvidence(), config);
    const rows = report.datasets[0]?.rows ?? [];
    expect(rows.map((r) => [r.requirement, r.status, r.required])).toEqual([
      ["Four copies of data exist", "pass", true],
      ["Two different storage media used", "pass", false],
      ["One copy stored offsite", "pass", true],
      ["Immutable or air-gapped copy retained", "pass", false],
      ["Three sites used", "fail", true],
      ["Two isolated networks used", "pass", true],
      ["Automated recovery validation in place (0 errors)", "pass", false],
      ["DR orchestration supports full service recovery", "unknown", false],
    ]);
    expect(rows[4]?.reason).toBe("copies at 2 of 3 sites (home, aws-eu-central-1)");
    const nas = config.targets.nas;
    if (nas) nas.labels.site = "office";
    expect(run(healthyEvidence(), config).status).toBe("pass");
  });

  it("lists every target without evidence as not counted", () => {
    const report = run({ copies: {} });
    expect(report.datasets[0]?.copies.map((c) => c.reason)).toEqual([
      "no evidence was collected from target local",
      "no evidence was collected from target nas",
      "no evidence was collected from target offsite",
    ]);
    expect(statuses(report)).toMatchObject({
      copies: "fail",
      media: "fail",
      offsite: "fail",
      immutable: "fail",
    });
  });

  it("escapes markup in html and markdown", () => {
    const ev = healthyEvidence();
    ev.copies.nas = { reachable: false, error: "<script>|x" };
    const report = run(ev);
    expect(renderPosture(report, "html")).toContain("&lt;script&gt;|x");
    expect(renderPosture(report, "markdown")).toContain("&lt;script&gt;\\|x");
  });

  it("counts an append-only copy read back as such, and an offline copy on its label", () => {
    const config = exampleConfig();
    const nas = config.targets.nas;
    const off = config.targets.offsite;
    if (!nas || !off) throw new Error("fixture");
    nas.labels.isolation = "append-only";
    off.labels.isolation = "offline";
    const p = config.policies.standard;
    if (p) p.counts.immutableOrIsolated = 2;
    const ev = healthyEvidence();
    ev.copies.nas = { ...healthyCopy(), lock: { kind: "append-only", readBack: true } };
    const row = run(ev, config).datasets[0]?.rows.find((r) => r.id === "immutable");
    expect(row?.requirement).toBe("Two immutable or air-gapped copies retained");
    expect(row?.status).toBe("pass");
    expect(row?.evidence.map((e) => e.split("; ").pop())).toEqual([
      "append-only, read back from the target",
      "declared offline (air-gapped), which cannot be confirmed from here",
    ]);
    ev.copies.nas = healthyCopy();
    expect(run(ev, config).datasets[0]?.rows.find((r) => r.id === "immutable")?.status).toBe("fail");
  });

  it("evaluates only the named dataset", () => {
    expect(evaluatePosture(exampleConfig(), { datasets: {} }, NOW, "other").datasets).toEqual([]);
    expect(evaluatePosture(exampleConfig(), { datasets: {} }, NOW, "app").datasets).toHaveLength(1);
  });
});
