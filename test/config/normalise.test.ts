import { describe, expect, it } from "vitest";

import { formatDiagnostic } from "../../src/config/diagnostic.js";
import { parseFixedDuration, formatAge } from "../../src/config/duration.js";
import { resolveWritten } from "../../src/config/resolve.js";
import { findInlineSecrets, looksLikeInlineSecret } from "../../src/config/secrets.js";
import type { WrittenConfig } from "../../src/config/written.js";
import { exampleConfig } from "../policy/posture-fixture.js";
import { EXAMPLE_WRITTEN, withExampleSources } from "./example-written.js";

const ENV = { BULWARK_PASSWORD: "x", AWS_ACCESS_KEY_ID: "x", AWS_SECRET_ACCESS_KEY: "x" };
const ctx = {
  file: "bulwark.yaml",
  locate: () => ({ line: 1, column: 1 }),
  env: ENV,
  fileReadable: () => true,
};

function copy(): WrittenConfig {
  return structuredClone(EXAMPLE_WRITTEN);
}

describe("normalise and resolve", () => {
  it("resolves the example into the config the posture tests use", () => {
    const r = resolveWritten(copy(), ctx);
    expect(r.errors).toEqual([]);
    expect(r.warnings).toEqual([]);
    expect(r.config).toEqual(withExampleSources(exampleConfig()));
  });

  it("expands custom counts with defaults and reports bad durations and retention", () => {
    const w = copy();
    const p = w.policies.standard;
    if (!p) throw new Error("fixture");
    p.rule = { copies: 2, offsite: 1 };
    p.rpo = "1day";
    p.verification = { cadence: "0h" };
    p.retention = { local: {}, nas: { keepWithin: "3x" }, offsite: { keepDaily: -5 } };
    const r = resolveWritten(w, ctx);
    expect(r.config).toBeUndefined();
    expect(r.errors.map(formatDiagnostic)).toEqual([
      "bulwark.yaml:1:1 policies.standard.retention.local: the retention keeps nothing — give at least one keep option (e.g. keepDaily: 7) or remove it",
      'bulwark.yaml:1:1 policies.standard.retention.nas: keepWithin: invalid duration "3x": unknown unit "x" after 3; expected one or more <number><unit> parts with units y (years), m (months), w (weeks), d (days), h (hours), e.g. "1y2m3d4h" or "7d" — fix the keep option as `bulwark forget --help` describes it',
      "bulwark.yaml:1:1 policies.standard.retention.offsite: invalid retention count for keepDaily: -5; expected a whole number >= 0, or -1 for unlimited — fix the keep option as `bulwark forget --help` describes it",
      'bulwark.yaml:1:1 policies.standard.rpo: invalid duration "1day": unknown unit "day" (use w, d, h, m or s) — write it like "30m", "24h", "1d12h" or "2w"',
      "bulwark.yaml:1:1 policies.standard.verification.cadence: the duration is zero — give a positive duration such as 24h",
    ]);
  });

  it("resolves a policy's verification goal (period, budget, new packs) and names a bad budget", () => {
    const w = copy();
    const p = w.policies.standard;
    if (!p) throw new Error("fixture");
    p.verification = { fullEvery: "30d", budget: "2GiB" };
    const r = resolveWritten(w, ctx);
    expect(r.config?.policies.standard?.verification).toEqual({
      fullEvery: "30d",
      fullEveryMs: 30 * 86_400_000,
      budget: { bytes: 2 * 1024 ** 3 },
      newPacks: true,
    });
    p.verification = { budget: "20m", newPacks: false };
    expect(resolveWritten(w, ctx).config?.policies.standard?.verification).toEqual({
      budget: { ms: 20 * 60_000 },
      newPacks: false,
    });
    p.verification = { budget: "a lot" };
    expect(resolveWritten(w, ctx).errors.map(formatDiagnostic)).toEqual([
      'bulwark.yaml:1:1 policies.standard.verification.budget: "a lot" is neither a size (e.g. 2GiB, 500MB) nor a duration (e.g. 20m, 1h30m) — write a size (2GiB) or a duration (20m)',
    ]);
  });

  it("defaults productionCounts to true, offsite to false, isolation to none and network to the site", () => {
    const w = copy();
    const p = w.policies.standard;
    if (!p) throw new Error("fixture");
    delete p.productionCounts;
    const r = resolveWritten(w, ctx);
    expect(r.config?.policies.standard?.productionCounts).toBe(true);
    expect(r.config?.targets.nas?.labels).toEqual({
      medium: "nas",
      site: "home",
      offsite: false,
      failureDomain: "nas-1",
      isolation: "none",
      network: "home",
    });
  });
});

describe("durations", () => {
  it("parses fixed durations largest unit first", () => {
    expect(parseFixedDuration("1d12h")).toEqual({ ms: 36 * 3_600_000 });
    expect(parseFixedDuration("2w")).toEqual({ ms: 14 * 86_400_000 });
    expect(parseFixedDuration("90s")).toEqual({ ms: 90_000 });
    expect(parseFixedDuration("12h1d")).toEqual({
      error: "units must appear once each, largest first (w d h m s)",
    });
    expect(parseFixedDuration("")).toEqual({ error: "the duration is empty" });
  });

  it("formats ages with two units", () => {
    expect(formatAge(0)).toBe("0s");
    expect(formatAge(3 * 86_400_000 + 5 * 3_600_000 + 7 * 60_000)).toBe("3d5h");
    expect(formatAge(25 * 60_000)).toBe("25m");
  });
});

describe("inline secrets", () => {
  it("recognises credentials written as values", () => {
    expect(looksLikeInlineSecret("AKIAIOSFODNN7EXAMPLE")).toBe(true);
    expect(looksLikeInlineSecret("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")).toBe(false);
    expect(looksLikeInlineSecret("wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY1")).toBe(true);
    expect(looksLikeInlineSecret("-----BEGIN OPENSSH PRIVATE KEY-----\nabc")).toBe(true);
    expect(looksLikeInlineSecret("sftp://user:pw@host/path")).toBe(true);
    expect(looksLikeInlineSecret("s3:https://AKIA:pw@s3.example.com/bucket")).toBe(true);
    expect(looksLikeInlineSecret("sftp://backup@nas.lan:2222/volume1")).toBe(false);
    expect(looksLikeInlineSecret("BULWARK_PASSWORD")).toBe(false);
    expect(looksLikeInlineSecret("/etc/bulwark/offsite.password")).toBe(false);
    // Long names of databases, buckets and hosts are lower-case words, not tokens.
    expect(looksLikeInlineSecret("e2e_bench_30776_mwx77ilf")).toBe(false);
    expect(looksLikeInlineSecret("backups-2026-eu-central-1-primary")).toBe(false);
    expect(looksLikeInlineSecret("3f786850e387550fdab836ed7e6dc881de23001b")).toBe(true);
    expect(looksLikeInlineSecret("dGhpcyBpcyBhIHNlY3JldCB0b2tlbg==")).toBe(true);
  });

  it("finds secrets written as values anywhere in the document, but not reference names", () => {
    const doc = structuredClone(EXAMPLE_WRITTEN);
    const { local, nas, offsite } = doc.targets;
    if (!local || !nas || !offsite) throw new Error("fixture");
    // What a user might write; the schema would refuse these shapes, the scan runs before it.
    (offsite.credentials as Record<string, unknown>).secretAccessKey =
      "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY1";
    Object.assign(nas, { password: "hunter2" });
    local.location = "sftp://backup:hunter2@nas.lan/x";
    expect(findInlineSecrets(doc)).toEqual([
      ["targets", "local", "location"],
      ["targets", "nas", "password"],
      ["targets", "offsite", "credentials", "secretAccessKey"],
    ]);
    expect(findInlineSecrets(EXAMPLE_WRITTEN)).toEqual([]);
  });
});
