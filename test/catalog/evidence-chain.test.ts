/**
 * The evidence chain of the catalog (migration 3, docs/design.md §22): verifications and drills are links
 * of one hash chain; verifyEvidenceChain names the first broken link after the database is edited behind
 * Bulwark's back (with a second SQLite connection, as someone with the sqlite3 shell would), records made
 * before the migration stay an unhashed prefix, and two processes recording at once never fork the chain.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import Database from "better-sqlite3";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";

import {
  CATALOG_SCHEMA_VERSION,
  Catalog,
  EVIDENCE_GENESIS,
  evidenceHash,
  evidenceRow,
} from "../../src/catalog/catalog.js";

const ROOT = new URL("../../", import.meta.url).pathname;
const base = mkdtempSync(join(tmpdir(), "bulwark-chain-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));

let file: string;
let catalog: Catalog;
let counter = 0;
beforeEach(() => {
  file = join(base, `case-${++counter}`, "catalog.db");
  catalog = Catalog.open(file);
});
afterEach(() => catalog.close());

const t = (iso: string): Date => new Date(iso);
const SNAP = "a".repeat(64);

/** Five records, alternating kinds: verification 1, drill 1, verification 2, drill 2, verification 3. */
function recordFive(): void {
  for (let i = 0; i < 5; i++) {
    const time = t(`2026-05-0${i + 1}T00:00:00Z`);
    if (i % 2 === 0) {
      catalog.recordVerification({
        target: "nas",
        dataset: "app",
        time,
        kind: "verify",
        errors: i,
        description: `verification ${i}`,
        details: { packsRead: 10 + i, findings: [] },
      });
    } else {
      catalog.recordDrill({
        dataset: "app",
        target: "s3",
        snapshot: SNAP,
        time,
        status: "pass",
        description: `drill ${i}`,
        details: { restore: { files: 3, bytes: 1000 + i } },
      });
    }
  }
}

/** A second connection to the same file, as the sqlite3 shell would be. */
function sqlite<T>(fn: (db: Database.Database) => T): T {
  const db = new Database(file);
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

describe("the evidence chain", () => {
  it("links every verification and drill in recording order; each hash is recomputable", () => {
    expect(catalog.verifyEvidenceChain()).toEqual({ ok: true, records: 0, unchained: 0 });
    const first = catalog.recordVerification({
      target: "nas",
      time: t("2026-05-01T00:00:00Z"),
      kind: "verify",
      errors: 0,
      description: "x",
    });
    expect(first.chain).toEqual({ seq: 1, prevHash: EVIDENCE_GENESIS, hash: expect.any(String) as string });
    const second = catalog.recordDrill({
      dataset: "app",
      target: "s3",
      snapshot: SNAP,
      time: t("2026-05-02T00:00:00Z"),
      status: "fail",
      description: "y",
    });
    expect(second.chain.seq).toBe(2);
    expect(second.chain.prevHash).toBe(first.chain.hash);
    // An auditor can recompute a link from the stored row alone.
    const row = sqlite((db) => db.prepare("SELECT * FROM drills WHERE id = ?").get(second.id)) as Record<
      string,
      unknown
    >;
    expect(evidenceHash(2, "drill", first.chain.hash, row)).toBe(second.chain.hash);
    expect(catalog.drills({ id: second.id })[0]?.chain).toEqual(second.chain);
    // ... and from the record as the catalog returns it (what a JSON report shows).
    const [asRecord] = catalog.drills({ id: second.id });
    expect(evidenceHash(2, "drill", first.chain.hash, evidenceRow("drill", asRecord!))).toBe(
      second.chain.hash,
    );
    const [v] = catalog.verifications({ id: first.id });
    expect(evidenceHash(1, "verification", EVIDENCE_GENESIS, evidenceRow("verification", v!))).toBe(
      first.chain.hash,
    );
    expect(catalog.verifyEvidenceChain()).toEqual({
      ok: true,
      records: 2,
      unchained: 0,
      head: { seq: 2, hash: second.chain.hash },
    });
  });

  it("verifications carry their details; filters by dataset, target and id, newest first", () => {
    recordFive();
    const all = catalog.verifications();
    expect(all.map((v) => v.description)).toEqual(["verification 4", "verification 2", "verification 0"]);
    expect(all[0]?.details).toEqual({ packsRead: 14, findings: [] });
    expect(catalog.verifications({ dataset: "other" })).toEqual([]);
    expect(catalog.verifications({ target: "nas", limit: 1 })).toHaveLength(1);
    expect(catalog.drills({ dataset: "app" }).map((d) => d.description)).toEqual(["drill 3", "drill 1"]);
    expect(catalog.drills({ id: 1 })[0]?.description).toBe("drill 1");
  });

  it.each<[string, (db: Database.Database) => void, { seq?: number; kind?: string; reason: RegExp }]>([
    [
      "a field edited (errors 2 made 0)",
      (db) => db.prepare("UPDATE verifications SET errors = 0 WHERE chain_seq = 3").run(),
      { seq: 3, kind: "verification", reason: /fields were changed/ },
    ],
    [
      "a drill's details edited",
      (db) =>
        db.prepare(`UPDATE drills SET details = replace(details, '1001', '9999') WHERE chain_seq = 2`).run(),
      { seq: 2, kind: "drill", reason: /fields were changed/ },
    ],
    [
      "a field edited and its own hash recomputed",
      (db) => {
        db.prepare("UPDATE verifications SET errors = 0 WHERE chain_seq = 3").run();
        const row = db.prepare("SELECT * FROM verifications WHERE chain_seq = 3").get() as Record<
          string,
          unknown
        >;
        db.prepare("UPDATE verifications SET hash = ? WHERE chain_seq = 3").run(
          evidenceHash(3, "verification", row.prev_hash as string, row),
        );
      },
      { seq: 4, kind: "drill", reason: /not linked to the record before it \(position 3\)/ },
    ],
    [
      "a record in the middle deleted",
      (db) => db.prepare("DELETE FROM drills WHERE chain_seq = 2").run(),
      { seq: 2, reason: /position 2 is missing/ },
    ],
    [
      "the newest record deleted",
      (db) => db.prepare("DELETE FROM verifications WHERE chain_seq = 5").run(),
      { seq: 5, reason: /newest record is missing/ },
    ],
    [
      "two records reordered (their positions swapped)",
      (db) => {
        db.prepare("UPDATE verifications SET chain_seq = -1 WHERE chain_seq = 1").run();
        db.prepare("UPDATE verifications SET chain_seq = 1 WHERE chain_seq = 3").run();
        db.prepare("UPDATE verifications SET chain_seq = 3 WHERE chain_seq = -1").run();
      },
      { seq: 1, kind: "verification", reason: /does not start the chain/ },
    ],
    [
      "a record inserted without a link",
      (db) =>
        db
          .prepare(
            `INSERT INTO verifications (target, dataset, time, kind, errors, description)
             VALUES ('nas', 'app', '2026-05-09T00:00:00.000Z', 'verify', 0, 'forged')`,
          )
          .run(),
      { kind: "verification", reason: /no place in the chain/ },
    ],
    [
      "a record given a link to a position that another holds",
      (db) => db.prepare("UPDATE drills SET chain_seq = 3 WHERE chain_seq = 4").run(),
      { seq: 3, reason: /two records claim position 3/ },
    ],
  ])("%s is caught", (_name, tamper, expected) => {
    recordFive();
    expect(catalog.verifyEvidenceChain().ok).toBe(true);
    sqlite(tamper);
    const status = catalog.verifyEvidenceChain();
    expect(status.ok).toBe(false);
    expect(status.broken?.reason).toMatch(expected.reason);
    if (expected.seq !== undefined) expect(status.broken?.seq).toBe(expected.seq);
    if (expected.kind !== undefined) expect(status.broken?.kind).toBe(expected.kind);
  });

  it("runbook versions are links of the chain: the change log cannot be edited unseen", () => {
    recordFive();
    const v = catalog.recordRunbookVersion({
      runbook: "shop",
      definitionHash: "a".repeat(64),
      time: t("2026-05-10T00:00:00Z"),
      definition: { services: { db: {} } },
    });
    expect(v.chain.seq).toBe(6);
    expect(catalog.runbookVersions("shop").map((r) => r.definitionHash)).toEqual(["a".repeat(64)]);
    expect(catalog.runbookVersion(v.id)?.definitionHash).toBe("a".repeat(64));
    expect(catalog.runbookVersion(v.id + 1000)).toBeUndefined();
    const runs = ["drill", "failover", "failback"].map((mode, i) =>
      catalog.recordDrRun({
        runbook: "shop",
        definitionHash: "a".repeat(64),
        mode: mode as "drill",
        time: t(`2026-05-1${i + 1}T00:00:00Z`),
        status: "pass",
        description: mode,
        datasets: ["app"],
      }),
    );
    expect(catalog.drRuns({ id: runs[1]!.id }).map((r) => r.mode)).toEqual(["failover"]);
    expect(catalog.drRuns({ mode: "failback" }).map((r) => r.id)).toEqual([runs[2]!.id]);
    expect(catalog.drRuns({ id: runs[1]!.id, mode: "drill" })).toEqual([]);
    expect(catalog.verifyEvidenceChain()).toMatchObject({ ok: true, records: 9 });
    sqlite((db) =>
      db.prepare(`UPDATE runbook_versions SET definition = '{"services":{}}' WHERE chain_seq = 6`).run(),
    );
    const status = catalog.verifyEvidenceChain();
    expect(status.ok).toBe(false);
    expect(status.broken).toMatchObject({ seq: 6, kind: "runbook" });
  });

  it("records made before migration 3 are an unhashed prefix: counted, not judged; new ones are chained", () => {
    catalog.recordVerification({
      target: "nas",
      dataset: "app",
      time: t("2026-04-01T00:00:00Z"),
      kind: "verify",
      errors: 0,
      description: "old",
    });
    catalog.recordDrill({
      dataset: "app",
      target: "s3",
      snapshot: SNAP,
      time: t("2026-04-01T00:00:00Z"),
      status: "pass",
      description: "old drill",
    });
    catalog.close();
    // Take the file back to schema 2, as a catalog written before this Bulwark would be.
    sqlite((db) => {
      db.exec(`
        DROP INDEX verifications_by_chain; DROP INDEX drills_by_chain; DROP TABLE evidence_head;
        ALTER TABLE verifications DROP COLUMN details; ALTER TABLE verifications DROP COLUMN chain_seq;
        ALTER TABLE verifications DROP COLUMN prev_hash; ALTER TABLE verifications DROP COLUMN hash;
        ALTER TABLE drills DROP COLUMN chain_seq; ALTER TABLE drills DROP COLUMN prev_hash;
        ALTER TABLE drills DROP COLUMN hash; DROP TABLE runbook_versions; DROP TABLE dr_runs; DROP TABLE dr_state;
        DROP INDEX runs_by_job;
      `);
      db.pragma("user_version = 2");
    });
    catalog = Catalog.open(file);
    expect(sqlite((db) => db.pragma("user_version", { simple: true }))).toBe(CATALOG_SCHEMA_VERSION);
    expect(catalog.verifications()[0]).not.toHaveProperty("chain");
    expect(catalog.verifyEvidenceChain()).toEqual({ ok: true, records: 0, unchained: 2 });
    const next = catalog.recordVerification({
      target: "nas",
      dataset: "app",
      time: t("2026-05-01T00:00:00Z"),
      kind: "verify",
      errors: 0,
      description: "new",
    });
    expect(next.chain.seq).toBe(1);
    expect(catalog.verifyEvidenceChain()).toMatchObject({ ok: true, records: 1, unchained: 2 });
    // The prefix is not protected: editing it goes unnoticed, as documented.
    sqlite((db) => db.prepare("UPDATE verifications SET errors = 5 WHERE description = 'old'").run());
    expect(catalog.verifyEvidenceChain().ok).toBe(true);
  });

  it("two processes recording at once build one chain, never a fork", async () => {
    catalog.close();
    const PER_PROCESS = 200;
    // Each child opens the catalog, says "ready", and starts recording when the parent says "go" on its
    // stdin, so the two really write at the same time.
    const script = `
      const { Catalog } = await import(${JSON.stringify(new URL("dist/catalog/catalog.js", `file://${ROOT}`).href)});
      const [file, name, n] = process.argv.slice(1);
      const catalog = Catalog.open(file);
      process.stdout.write("ready\\n");
      await new Promise((resolve) => process.stdin.once("data", resolve));
      for (let i = 0; i < Number(n); i++) {
        // A pause between records (SQLite's busy handler sleeps, so a writer in a tight loop would win
        // every time and the two would take turns only once).
        await new Promise((resolve) => setTimeout(resolve, 1));
        const time = new Date(Date.UTC(2026, 4, 1, 0, 0, i));
        if (i % 2 === 0)
          catalog.recordVerification({ target: name, time, kind: "verify", errors: 0, description: name + " " + i });
        else
          catalog.recordDrill({ dataset: "app", target: name, snapshot: "s", time, status: "pass", description: name + " " + i });
      }
      catalog.close();
      process.exit(0);
    `;
    const start = (name: string) => {
      const child = spawn(
        process.execPath,
        ["--input-type=module", "-e", script, file, name, String(PER_PROCESS)],
        { stdio: ["pipe", "pipe", "inherit"] },
      );
      const ready = new Promise<void>((resolve, reject) => {
        child.stdout.once("data", () => resolve());
        child.on("error", reject);
      });
      const exit = new Promise<number | null>((resolve) => child.on("exit", resolve));
      return { child, ready, exit };
    };
    const children = [start("one"), start("two")];
    await Promise.all(children.map((c) => c.ready));
    for (const c of children) c.child.stdin.write("go\n");
    const run = (name: string): Promise<number | null> => children[name === "one" ? 0 : 1]!.exit;
    expect(await Promise.all([run("one"), run("two")])).toEqual([0, 0]);
    catalog = Catalog.open(file);
    const status = catalog.verifyEvidenceChain();
    expect(status).toMatchObject({ ok: true, records: 2 * PER_PROCESS, unchained: 0 });
    expect(status.head?.seq).toBe(2 * PER_PROCESS);
    // The two writers really interleaved (else the test proves nothing about concurrency).
    const order = sqlite(
      (db) =>
        db
          .prepare("SELECT target FROM verifications UNION ALL SELECT target FROM drills ORDER BY 1")
          .pluck()
          .all() as string[],
    );
    expect(order.filter((x) => x === "one")).toHaveLength(PER_PROCESS);
    const bySeq = sqlite(
      (db) =>
        db
          .prepare(
            `SELECT target FROM (SELECT chain_seq, target FROM verifications UNION ALL
                                 SELECT chain_seq, target FROM drills) ORDER BY chain_seq`,
          )
          .pluck()
          .all() as string[],
    );
    const switches = bySeq.filter((x, i) => i > 0 && x !== bySeq[i - 1]).length;
    expect(switches).toBeGreaterThan(2);
  }, 60_000);
});
