/**
 * The evidence operations on a real catalog file: which records a report shows (the latest per dataset and
 * target for verifications, per dataset for drills; --id; filters; unknown names and empty results as
 * errors that say what to do), reading the signing key from a file or a variable, and checkReport's
 * comparison with the catalog (same, missing, another catalog only when named).
 */
import { generateKeyPairSync } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import Database from "better-sqlite3";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";

import { Catalog } from "../../src/catalog/catalog.js";
import { ManualClock } from "../../src/core/clock.js";
import { BulwarkError } from "../../src/core/errors.js";
import {
  buildReport,
  checkReport,
  readSigningKey,
  selectEvidence,
  verificationDetails,
} from "../../src/ops/evidence.js";
import type { VerifyOutcome } from "../../src/ops/verify.js";
import { rejection, thrown } from "../helpers/errors.js";

const base = mkdtempSync(join(tmpdir(), "bulwark-evidence-ops-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));

let catalog: Catalog;
let file: string;
let n = 0;
beforeEach(() => {
  file = join(base, `c${++n}.db`);
  catalog = Catalog.open(file);
});
afterEach(() => catalog.close());

const at = (day: number): Date => new Date(Date.UTC(2026, 5, day));
function verification(target: string, dataset: string | undefined, day: number, errors = 0): void {
  catalog.recordVerification({
    target,
    ...(dataset !== undefined ? { dataset } : {}),
    time: at(day),
    kind: "verify",
    errors,
    description: `${target} ${day}`,
  });
}
function drill(dataset: string, target: string, day: number): void {
  catalog.recordDrill({
    dataset,
    target,
    snapshot: "s",
    time: at(day),
    status: "pass",
    description: `${target} ${day}`,
  });
}

describe("verificationDetails", () => {
  it("records what was read and found, with long lists capped at 100 and their totals kept", () => {
    const files = Array.from({ length: 250 }, (_, i) => `/srv/app/f${i}`);
    const outcome: VerifyOutcome = {
      ok: false,
      errors: 1,
      findings: [
        {
          severity: "error",
          kind: "blob-damaged",
          message: "pack p: blob b does not match its id",
          pack: "p".repeat(64),
          blobs: ["b1", "b2"],
          snapshots: ["s1"],
          files,
        },
        { severity: "warning", kind: "pack-unreferenced", message: "pack q is in no index" },
      ],
      stats: {
        snapshots: 3,
        trees: 9,
        packs: 5,
        packsRead: 2,
        bytesRead: 4096,
        blobs: 40,
      } as VerifyOutcome["stats"],
      digests: { offered: true, packs: 3, bytes: 3 * 4096, damaged: 0, withoutDigest: 1 },
      plan: { read: ["a", "b"], deferred: 1, fresh: 2 },
      packsRead: 2,
      bytesRead: 4096,
      coverage: {
        packs: 5,
        covered: 4,
        ratio: 0.8,
        damaged: 1,
        oldestRead: new Date("2026-06-01T00:00:00Z"),
      },
      durationMs: 1500,
    };
    const d = verificationDetails(outcome, {
      target: "nas",
      location: "sftp:backup@nas:/x",
      repository: "r".repeat(64),
      startedAt: new Date("2026-06-02T00:00:00Z"),
      budget: { bytes: 1024 },
      fullEveryMs: 86400_000,
      newOnly: false,
      newFirst: true,
      crossCopy: [{ original: "o", message: "differ", targets: ["nas", "s3"] }],
    });
    expect(d).toEqual({
      target: "nas",
      location: "sftp:backup@nas:/x",
      repository: "r".repeat(64),
      startedAt: "2026-06-02T00:00:00.000Z",
      durationMs: 1500,
      budget: { bytes: 1024 },
      fullEveryMs: 86400_000,
      newOnly: false,
      newFirst: true,
      structure: { snapshots: 3, trees: 9, packs: 5, blobs: 40 },
      digested: { packs: 3, bytes: 3 * 4096, damaged: 0, withoutDigest: 1 },
      read: { packs: 2, bytes: 4096, planned: 2, deferred: 1, fresh: 2 },
      coverage: { packs: 5, covered: 4, ratio: 0.8, damaged: 1, oldestRead: "2026-06-01T00:00:00.000Z" },
      errors: 1,
      warnings: 1,
      findings: [
        {
          severity: "error",
          kind: "blob-damaged",
          message: "pack p: blob b does not match its id",
          pack: "p".repeat(64),
          blobs: 2,
          snapshots: ["s1"],
          snapshotsTotal: 1,
          files: files.slice(0, 100),
          filesTotal: 250,
        },
        { severity: "warning", kind: "pack-unreferenced", message: "pack q is in no index" },
      ],
      crossCopy: [{ original: "o", message: "differ", targets: ["nas", "s3"] }],
    });
  });
});

describe("selectEvidence", () => {
  it("the latest verification of each dataset and target, the latest drill of each dataset; --id; filters", () => {
    verification("nas", "app", 1, 2);
    verification("nas", "app", 3);
    verification("s3", "app", 2);
    verification("nas", "db", 1);
    verification("/srv/repo", undefined, 4);
    drill("app", "nas", 1);
    drill("app", "s3", 2);
    drill("db", "nas", 3);
    const v = selectEvidence(catalog, { kind: "verification" });
    expect(v.map((r) => r.description)).toEqual(["/srv/repo 4", "nas 3", "s3 2", "nas 1"]);
    expect(selectEvidence(catalog, { kind: "drill" }).map((r) => r.description)).toEqual(["s3 2", "nas 3"]);
    expect(
      selectEvidence(catalog, { kind: "verification", dataset: "app", target: "nas" }).map(
        (r) => r.description,
      ),
    ).toEqual(["nas 3"]);
    // An older record by its id.
    expect(selectEvidence(catalog, { kind: "verification", id: 1 }).map((r) => r.description)).toEqual([
      "nas 1",
    ]);
  });

  it("unknown names (with the config's) and nothing recorded are errors that say what to do", () => {
    verification("nas", "app", 1);
    const known = { datasets: ["app", "db"], targets: ["nas", "s3"] };
    const e1 = thrown(() =>
      selectEvidence(catalog, { kind: "verification", dataset: "ap", known }),
    ) as BulwarkError;
    expect([e1.code, e1.message, e1.hint]).toEqual([
      "USAGE",
      'unknown dataset "ap"',
      "the datasets are app, db",
    ]);
    const e2 = thrown(() =>
      selectEvidence(catalog, { kind: "drill", target: "tape", known }),
    ) as BulwarkError;
    expect(e2.message).toBe('unknown target "tape"');
    const e3 = thrown(() => selectEvidence(catalog, { kind: "drill", dataset: "db", known })) as BulwarkError;
    expect([e3.code, e3.message]).toEqual(["NOT_FOUND", `the catalog at ${file} has no drill of dataset db`]);
    expect(e3.hint).toContain("bulwark drill -c CONFIG");
    const e4 = thrown(() => selectEvidence(catalog, { kind: "verification", id: 42 })) as BulwarkError;
    expect(e4.message).toBe(`the catalog at ${file} has no verification number 42`);
  });
});

describe("readSigningKey", () => {
  const pem = generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }).toString();

  it("reads a whole PEM file (warning when others can read it) or a variable's whole value", async () => {
    const keyFile = join(base, "key.pem");
    writeFileSync(keyFile, pem, { mode: 0o600 });
    chmodSync(keyFile, 0o600);
    expect((await readSigningKey({ file: keyFile }, {})).warnings).toEqual([]);
    chmodSync(keyFile, 0o640);
    expect((await readSigningKey({ file: keyFile }, {})).warnings).toEqual([
      `warning: the signing key ${keyFile} can be read by others (mode 0640): chmod 600 ${keyFile}`,
    ]);
    const fromEnv = await readSigningKey({ env: "KEY" }, { KEY: pem });
    expect(fromEnv.key.asymmetricKeyType).toBe("ed25519");
  });

  it("a missing file or variable is an error naming the reference", async () => {
    const e1 = (await rejection(readSigningKey({ file: join(base, "none.pem") }, {}))) as BulwarkError;
    expect(e1.message).toBe(
      `cannot read the signing key file ${join(base, "none.pem")} (evidence.signingKey): no such file or directory`,
    );
    const e2 = (await rejection(readSigningKey({ env: "KEY" }, {}))) as BulwarkError;
    expect(e2.message).toBe("the environment variable KEY (evidence.signingKey) is not set");
  });
});

describe("checkReport against the catalog", () => {
  it("same, then missing after a deletion; another catalog is compared only when named", () => {
    verification("nas", "app", 1);
    drill("app", "nas", 2);
    const key = generateKeyPairSync("ed25519").privateKey;
    const report = buildReport({
      store: catalog,
      selection: { kind: "drill" },
      format: "md",
      clock: new ManualClock(at(5)),
      host: "h",
      signingKey: key,
    });
    expect(checkReport({ file: report.text, store: catalog })).toMatchObject({
      ok: true,
      records: [{ kind: "drill", seq: 2, catalog: "same" }],
      problems: [],
    });
    const other = Catalog.open(join(base, `other-${n}.db`));
    try {
      const note = checkReport({ file: report.text, store: other });
      expect(note.ok).toBe(true);
      expect(note.notes.join("\n")).toContain(`the report comes from the catalog ${file}, not ${other.path}`);
      expect(checkReport({ file: report.text, store: other, explicitCatalog: true })).toMatchObject({
        ok: false,
        records: [{ catalog: "missing" }],
      });
    } finally {
      other.close();
    }
    const raw = new Database(file);
    raw.prepare("DELETE FROM drills").run();
    raw.close();
    const gone = checkReport({ file: report.text, store: catalog });
    expect(gone.ok).toBe(false);
    expect(gone.problems).toContain(`the catalog has no drill 1: it was deleted after the report was made`);
    expect(gone.problems.join("\n")).toContain("the catalog's evidence chain is broken");
  });
});
