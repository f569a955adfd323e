/**
 * Evidence reports through the built CLI on real evidence: a config with two local copies is backed up,
 * verified (`bulwark verify -c`) and drilled (`bulwark drill -c`), then `bulwark report` renders the
 * records, signed with an Ed25519 key made by `openssl genpkey` and named in the config. A report edited
 * after the fact fails `bulwark report verify` in each format (exit 21), an unsigned one exits 22, another
 * key is caught by --public-key, and a catalog edited with SQLite is caught by `bulwark catalog
 * verify-chain` and by `report verify` of a report made before the edit. Bad input is a clear error.
 */
import { execFileSync } from "node:child_process";
import { chmod, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  describeRun,
  makeTempDir,
  randomData,
  removeTempDirs,
  runCli,
  writeFiles,
  type RunResult,
} from "./helpers.js";

let base: string;
let env: Record<string, string>;
let config: string;
let catalogFile: string;

async function cli(args: string[], extraEnv: Record<string, string> = {}): Promise<RunResult> {
  return runCli(args, { env: { ...env, ...extraEnv } });
}
async function ok(args: string[]): Promise<RunResult> {
  const r = await cli(args);
  expect(r.code, describeRun(args, r)).toBe(0);
  return r;
}

interface JsonReport {
  format: string;
  chain: { ok: boolean; records: number };
  records: {
    evidence: string;
    id: number;
    result: string;
    target: string;
    chain: { seq: number; hash: string; prevHash: string } | null;
    details: Record<string, unknown>;
  }[];
  signature?: { fingerprint: string };
}

beforeAll(async () => {
  base = await makeTempDir("report");
  const src = join(base, "src");
  await writeFiles(src, {
    "www/index.html": "<h1>shop</h1>\n",
    "www/a.bin": randomData(512 * 1024),
    "b.txt": "b\n",
  });
  await writeFile(join(base, "pw"), "report-password\n");
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
  execFileSync("openssl", ["genpkey", "-algorithm", "ed25519", "-out", join(base, "other-key.pem")]);
  execFileSync("openssl", [
    "pkey",
    "-in",
    join(base, "other-key.pem"),
    "-pubout",
    "-out",
    join(base, "other.pem"),
  ]);
  catalogFile = join(base, "state", "catalog.db");
  env = { BULWARK_CATALOG: catalogFile, HOME: base };
  config = await writeConfig("bulwark", `evidence:\n  signingKey: { file: ${base}/signing-key.pem }\n`);
  await ok(["run", "-c", config, "--init"]);
  await ok(["verify", "-c", config]);
  await ok(["drill", "-c", config, "--no-isolation"]);
}, 180_000);
afterAll(removeTempDirs);

async function writeConfig(name: string, extra: string): Promise<string> {
  const file = join(base, `${name}.yaml`);
  await writeFile(
    file,
    `version: 1
targets:
  one: { location: ${base}/one, labels: { medium: disk, site: home, failureDomain: d1 }, password: { file: ${base}/pw } }
  two: { location: ${base}/two, labels: { medium: disk, site: home, failureDomain: d2 }, password: { file: ${base}/pw } }
datasets:
  app:
    sources:
      - { type: files, paths: ["${base}/src"] }
    drill:
      validators:
        - { type: paths, expect: [{ path: "${base}/src/www", minFiles: 2 }] }
policies:
  p: { rule: { copies: 2 }, productionCounts: false, rpo: 24h }
jobs:
  j: { dataset: app, policy: p, primary: one, copies: [two] }
${extra}`,
  );
  return file;
}

/** The first occurrence of `from` replaced: an edit made after the fact. */
async function edit(file: string, from: string | RegExp, to: string): Promise<string> {
  const text = await readFile(file, "utf8");
  const edited = text.replace(from, to);
  expect(edited).not.toBe(text);
  const out = `${file}.edited`;
  await writeFile(out, edited);
  return out;
}

describe("bulwark report", () => {
  it.each(["md", "html", "json"] as const)(
    "%s: signed verification and drill reports verify; edited after the fact they fail (exit 21)",
    async (format) => {
      for (const kind of ["verification", "drill"] as const) {
        const file = join(base, `${kind}.${format}`);
        const made = await ok(["report", kind, "-c", config, "--format", format, "--output", file, "--sign"]);
        expect(made.stdout).toMatch(
          new RegExp(
            `^wrote ${kind === "verification" ? 2 : 1} ${kind} records? \\(0 failed\\) to ${file}, signed by key SHA256:`,
          ),
        );
        const good = await cli(["report", "verify", file, "--public-key", join(base, "pub.pem")]);
        expect(good.code, describeRun(["report", "verify", file], good)).toBe(0);
        expect(good.stdout).toContain("signature: valid, by key SHA256:");
        expect(good.stdout).toContain("(the key given)");
        expect(good.stdout).toMatch(
          new RegExp(`${kind} \\d+ \\(chain position \\d+\\): the same in the catalog`),
        );
        expect(good.stdout).toContain("the report verifies");
        // The edit an auditee would make: a failing result turned into a passing one (or any byte).
        const edited = await edit(
          file,
          format === "json" ? /"result": "pass"/ : /PASS/,
          format === "json" ? '"result": "fail"' : "FAIL",
        );
        const bad = await cli(["report", "verify", edited]);
        expect(bad.code, describeRun(["report", "verify", edited], bad)).toBe(21);
        expect(bad.stderr).toContain(
          "error: the signature does not match the report: it was changed after it was signed",
        );
        expect(bad.stdout).toContain("the report does NOT verify");
      }
    },
    60_000,
  );

  it("what the records hold: per target location, repository, packs and bytes read, coverage; the drill's RTO, RPO and validators", async () => {
    const v = JSON.parse((await ok(["--json", "report", "verification", "-c", config])).stdout) as JsonReport;
    expect(v.format).toBe("bulwark-evidence-report/1");
    expect(v.chain).toMatchObject({ ok: true });
    expect(v.records.map((r) => [r.evidence, r.target, r.result])).toEqual([
      ["verification", "one", "pass"],
      ["verification", "two", "pass"],
    ]);
    for (const r of v.records) {
      expect(r.details).toMatchObject({
        target: r.target,
        location: `${base}/${r.target}`,
        repository: expect.stringMatching(/^[0-9a-f]{64}$/) as string,
        read: { packs: expect.any(Number) as number, deferred: 0 },
        coverage: { ratio: 1, damaged: 0 },
        findings: [],
        crossCopy: [],
      });
      expect((r.details.read as { bytes: number }).bytes).toBeGreaterThan(512 * 1024);
    }
    expect(v.records[1]!.chain!.seq).toBe(v.records[0]!.chain!.seq + 1);
    expect(v.records[1]!.chain!.prevHash).toBe(v.records[0]!.chain!.hash);
    const d = JSON.parse((await ok(["--json", "report", "drill", "--dataset", "app"])).stdout) as JsonReport;
    expect(d.records).toHaveLength(1);
    expect(d.records[0]).toMatchObject({
      evidence: "drill",
      result: "pass",
      details: {
        restore: { files: 3 },
        compare: { mismatches: 0 },
        validators: [{ kind: "paths", ok: true }],
        isolation: { netns: false },
      },
    });
    const md = (await ok(["report", "drill"])).stdout;
    expect(md).toContain("## 1. Drill of app from one: PASS");
    expect(md).toMatch(/\| Restore \(RTO\) \| 3 files, .* in .* \(.*\/s\) \|/);
    expect(md).toMatch(/\| Snapshot age \(RPO\) \| .+ \|/);
    expect(md).toMatch(/\| paths \(1\) \| paths \| pass \| \d+ ms \| 1 expected path present \|/);
    // --id picks one record; --target filters.
    const one = JSON.parse(
      (await ok(["--json", "report", "verification", "--id", String(v.records[1]!.id)])).stdout,
    ) as JsonReport;
    expect(one.records.map((r) => r.target)).toEqual(["two"]);
    const byTarget = JSON.parse(
      (await ok(["--json", "report", "verification", "--target", "one"])).stdout,
    ) as JsonReport;
    expect(byTarget.records.map((r) => r.target)).toEqual(["one"]);
  });

  it("unsigned: exit 22; signed by another key than --public-key: exit 21", async () => {
    const file = join(base, "unsigned.md");
    await ok(["report", "verification", "--output", file]);
    const r = await cli(["report", "verify", file]);
    expect(r.code, describeRun(["report", "verify", file], r)).toBe(22);
    expect(r.stdout).toContain("signature: none (the report is not signed)");
    expect(r.stdout).toContain("the report is not signed");
    // An unsigned JSON report still shows its records' fields with their chain hashes: an edit is caught.
    const unsignedJson = join(base, "unsigned.json");
    await ok(["report", "drill", "--format", "json", "--output", unsignedJson]);
    expect((await cli(["report", "verify", unsignedJson])).code).toBe(22);
    const editedJson = await edit(unsignedJson, /"status": "pass"/, '"status": "fail"');
    const bad = await cli(["report", "verify", editedJson]);
    expect(bad.code, describeRun(["report", "verify", editedJson], bad)).toBe(21);
    expect(bad.stderr).toMatch(/drill \d+ as shown does not give its chain hash/);
    const signed = join(base, "signed.html");
    await ok(["report", "drill", "-c", config, "--format", "html", "--output", signed, "--sign"]);
    const wrong = await cli(["report", "verify", signed, "--public-key", join(base, "other.pem")]);
    expect(wrong.code).toBe(21);
    expect(wrong.stdout).toContain("(NOT the key given)");
    expect(wrong.stderr).toMatch(/the report was signed by key SHA256:\S+, not by the key given/);
    const json = JSON.parse((await cli(["--json", "report", "verify", signed])).stdout) as {
      ok: boolean;
      signed: boolean;
      records: { catalog: string }[];
    };
    expect(json).toMatchObject({ ok: true, signed: true, records: [{ catalog: "same" }] });
  });

  it("a catalog edited with sqlite: catalog verify-chain names the link (exit 21); a report made before fails against it", async () => {
    const report = join(base, "before-edit.json");
    await ok(["report", "verification", "-c", config, "--format", "json", "--output", report, "--sign"]);
    expect((await ok(["catalog", "verify-chain"])).stdout).toMatch(/is intact: \d+ records/);
    // A copy of the catalog, edited as someone with the sqlite3 shell would: a verification's errors.
    const copy = join(base, "edited.db");
    const src = new Database(catalogFile, { readonly: true });
    await src.backup(copy);
    src.close();
    const db = new Database(copy);
    const seq = db
      .prepare("SELECT chain_seq FROM verifications WHERE target = 'two' ORDER BY id DESC")
      .pluck()
      .get() as number;
    db.prepare("UPDATE verifications SET description = 'no packs read' WHERE chain_seq = ?").run(seq);
    db.close();
    const chain = await cli(["catalog", "--catalog", copy, "verify-chain"]);
    expect(chain.code, describeRun(["catalog", "verify-chain"], chain)).toBe(21);
    expect(chain.stdout).toContain(`is BROKEN at position ${seq}, verification`);
    expect(chain.stdout).toContain("its fields were changed after it was recorded");
    const r = await cli(["report", "verify", report, "--catalog", copy]);
    expect(r.code, describeRun(["report", "verify", report], r)).toBe(21);
    expect(r.stdout).toContain("signature: valid");
    expect(r.stdout).toContain(`(chain position ${seq}): DIFFERENT in the catalog`);
    expect(r.stderr).toContain(`the catalog's evidence chain is broken at position ${seq}`);
    // Against the untouched catalog it still verifies; without a catalog the signature alone decides.
    expect((await cli(["report", "verify", report])).code).toBe(0);
    const alone = await cli(["report", "verify", report, "--no-catalog"]);
    expect(alone.code).toBe(0);
    expect(alone.stdout).toContain("not compared with a catalog");
  });

  it("bad input is a clear error (exit 1)", async () => {
    const cases: [string[], RegExp, Record<string, string>?][] = [
      [
        ["report", "verification"],
        /there is no catalog at .*nothing\.db, so nothing to report/,
        { BULWARK_CATALOG: join(base, "nothing.db") },
      ],
      [
        ["report", "verification", "-c", config, "--dataset", "ap"],
        /unknown dataset "ap"[\s\S]*the datasets are app/,
      ],
      [
        ["report", "drill", "-c", config, "--target", "three"],
        /unknown target "three"[\s\S]*the targets are one, two/,
      ],
      [
        ["report", "verification", "--id", "9999"],
        /has no verification number 9999[\s\S]*bulwark verify -c CONFIG/,
      ],
      [
        ["report", "drill", "--dataset", "other"],
        /has no drill of dataset other[\s\S]*bulwark drill -c CONFIG/,
      ],
      [["report", "verification", "--id", "x"], /--id must be a record number/],
      [["report", "verification", "--format", "pdf"], /--format must be md, html or json, got "pdf"/],
      [
        ["--json", "report", "verification", "--format", "md"],
        /--json prints the report itself as JSON, not as md/,
      ],
      [
        ["report", "verify", join(base, "missing.md")],
        /cannot read the report .*missing\.md: no such file or directory/,
      ],
      [
        ["report", "verify", join(base, "verification.md"), "--public-key", join(base, "pw")],
        /is not a PEM public key/,
      ],
    ];
    for (const [args, message, extra] of cases) {
      const r = await cli(args, extra);
      expect(r.code, describeRun(args, r)).toBe(1);
      expect(r.stderr).toMatch(message);
    }
    // Signing keys: none in the config, an RSA key, a missing file (a warning at load, an error at --sign).
    const noKey = await writeConfig("nokey", "");
    const rsa = join(base, "rsa.pem");
    execFileSync("openssl", [
      "genpkey",
      "-algorithm",
      "rsa",
      "-pkeyopt",
      "rsa_keygen_bits:2048",
      "-out",
      rsa,
    ]);
    const rsaConfig = await writeConfig("rsa", `evidence:\n  signingKey: { file: ${rsa} }\n`);
    const missing = await writeConfig("missing", `evidence:\n  signingKey: { file: ${base}/none.pem }\n`);
    for (const [file, message] of [
      [noKey, /has no evidence\.signingKey to sign with[\s\S]*openssl genpkey -algorithm ed25519/],
      [rsaConfig, /the signing key file:.*rsa\.pem is an rsa key; reports are signed with Ed25519/],
      [
        missing,
        /warning: evidence\.signingKey\.file: missing secret[\s\S]*cannot read the signing key file .*none\.pem/,
      ],
    ] as const) {
      const args = ["report", "verification", "-c", file, "--sign"];
      const r = await cli(args);
      expect(r.code, describeRun(args, r)).toBe(1);
      expect(r.stderr).toMatch(message);
      expect(r.stderr + r.stdout).not.toContain("PRIVATE KEY");
    }
    // A key file others can read works, with a warning.
    await chmod(join(base, "signing-key.pem"), 0o644);
    try {
      const r = await cli(["report", "drill", "-c", config, "--sign"]);
      expect(r.code).toBe(0);
      expect(r.stderr).toMatch(/warning: the signing key .* can be read by others \(mode 0644\): chmod 600/);
    } finally {
      await chmod(join(base, "signing-key.pem"), 0o600);
    }
  }, 60_000);
});
