/**
 * The verification of a config's targets (ops/verify-targets.ts), as `bulwark verify` and the daemon call
 * it: two local directory targets made by a real job run (`runJob` with init), a real SQLite catalog, a fake
 * clock. It chooses the targets as the CLI did (all of the jobs', the named ones, a dataset's; unknown names
 * refused), takes the period and budget from the policy unless the caller gives them, records one
 * verification per target and dataset with its details and the pack reads, reports progress and messages on
 * the event stream with the target as context, reports a damaged pack with its snapshot, and goes on past a
 * target it cannot open with the error scrubbed of the secrets read.
 */
import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { Catalog } from "../../src/catalog/catalog.js";
import type { BulwarkConfig } from "../../src/config/types.js";
import { ManualClock } from "../../src/core/clock.js";
import { hasCode } from "../../src/core/errors.js";
import { collectEvents, type BulwarkEvent } from "../../src/core/events.js";
import { resolveConfigText } from "../../src/ops/config.js";
import { runJob } from "../../src/ops/run-job.js";
import type { TargetAccess } from "../../src/ops/targets.js";
import {
  datasetsOn,
  policyVerification,
  targetsToVerify,
  verifySubjects,
  verifyTargets,
  type TargetReport,
} from "../../src/ops/verify-targets.js";

const DAY = 86_400_000;
const PASSWORD = `pw-${randomBytes(8).toString("hex")}`;
let base: string;
let config: BulwarkConfig;
let catalogs = 0;
const access = (): TargetAccess => ({
  env: {},
  defaultPassword: () => Promise.resolve(PASSWORD),
  secrets: [],
});
const messages = (events: BulwarkEvent[]) =>
  events.flatMap((e) =>
    e.type === "message" ? [{ level: e.level, target: e.target, message: e.message }] : [],
  );
const newCatalog = () => Catalog.open(join(base, `catalog-${++catalogs}`, "catalog.db"));

/** The pack files of a local repository. */
function packFiles(repo: string): string[] {
  const data = join(repo, "data");
  return readdirSync(data).flatMap((d) => readdirSync(join(data, d)).map((f) => join(data, d, f)));
}

beforeAll(async () => {
  process.env.BULWARK_TEST_WEAK_KDF = "1";
  base = mkdtempSync(join(tmpdir(), "bulwark-verify-targets-"));
  const src = join(base, "src");
  mkdirSync(src, { recursive: true });
  writeFileSync(join(src, "a.bin"), randomBytes(300 * 1024));
  writeFileSync(join(src, "b.txt"), "b\n");
  const target = (name: string) => ({
    location: join(base, name),
    labels: { medium: "disk", site: "home", failureDomain: `fd-${name}` },
  });
  const text = JSON.stringify({
    version: 1,
    targets: { local: target("local"), nas: target("nas"), spare: target("spare") },
    datasets: {
      app: { sources: [{ type: "files", paths: [src] }] },
      other: { sources: [{ type: "files", paths: [src] }] },
    },
    policies: {
      p: {
        rule: { copies: 1 },
        rpo: "24h",
        retention: {},
        verification: { fullEvery: "30d", budget: "1GiB", newPacks: false },
      },
      q: { rule: { copies: 1 }, rpo: "24h", retention: {}, verification: { fullEvery: "7d" } },
    },
    jobs: {
      app: { dataset: "app", policy: "p", primary: "local", copies: ["nas"] },
      other: { dataset: "other", policy: "q", primary: "nas" },
    },
  });
  const resolved = resolveConfigText(text, "bulwark.json", { env: {}, fileReadable: () => true });
  expect(resolved.errors).toEqual([]);
  config = resolved.config!;
  const clock = new ManualClock("2035-01-01T03:00:00Z");
  for (const job of ["app", "other"]) {
    const r = await runJob(config, job, {
      access: access(),
      clock,
      init: true,
      forget: false,
      hostname: "h",
    });
    expect(r.status, JSON.stringify(r)).toBe("ok");
  }
});
afterAll(() => {
  delete process.env.BULWARK_TEST_WEAK_KDF;
  rmSync(base, { recursive: true, force: true });
});

describe("choosing the targets and their options", () => {
  it("every job's targets, the named ones, or a dataset's; unknown names are usage errors", () => {
    const names = (select: { targets: string[]; dataset?: string }) =>
      targetsToVerify(config, select).map((t) => t.name);
    expect(names({ targets: [] })).toEqual(["local", "nas"]);
    expect(names({ targets: ["spare", "nas"] })).toEqual(["spare", "nas"]);
    expect(names({ targets: [], dataset: "other" })).toEqual(["nas"]);
    for (const select of [{ targets: ["nope"] }, { targets: [], dataset: "nope" }]) {
      let err: unknown;
      try {
        targetsToVerify(config, select);
      } catch (e) {
        err = e;
      }
      expect(hasCode(err, "USAGE")).toBe(true);
    }
  });

  it("the shortest period, the smallest budget, new packs first unless every policy says not", () => {
    expect(policyVerification(config, "local")).toEqual({
      fullEveryMs: 30 * DAY,
      budget: { bytes: 1024 ** 3 },
      newFirst: false,
    });
    // nas holds copies of both jobs: 7d wins, and q's default (new packs first) wins over p's false.
    expect(policyVerification(config, "nas")).toEqual({
      fullEveryMs: 7 * DAY,
      budget: { bytes: 1024 ** 3 },
      newFirst: true,
    });
    expect(policyVerification(config, "spare")).toEqual({ newFirst: true });
    expect(datasetsOn(config, "nas")).toEqual(["app", "other"]);
    expect(datasetsOn(config, "spare")).toEqual([]);
  });
});

describe("verifyTargets", () => {
  it("verifies every target, records each verification per dataset with its details, and reports on the stream", async () => {
    const catalog = newCatalog();
    const { sink, events } = collectEvents();
    const clock = new ManualClock("2035-01-02T03:00:00Z");
    const reported: TargetReport[] = [];
    const result = await verifyTargets({
      config,
      access: access(),
      clock,
      events: sink,
      store: catalog,
      onTarget: (r) => reported.push(r),
    });
    expect(result.ok).toBe(true);
    expect(result.crossCopy).toEqual([]);
    expect(result.targets.map((r) => [r.target, r.ok, r.errors])).toEqual([
      ["local", true, 0],
      ["nas", true, 0],
    ]);
    expect(reported).toEqual(result.targets);
    const local = result.targets[0]!;
    expect(local.packsRead).toBeGreaterThan(0);
    expect(local.coverage).toMatchObject({ covered: local.packsRead, ratio: 1 });

    const records = catalog
      .verifications()
      .map((v) => ({ target: v.target, dataset: v.dataset, errors: v.errors }));
    expect(records).toHaveLength(3);
    expect(records).toEqual(
      expect.arrayContaining([
        { target: "local", dataset: "app", errors: 0 },
        { target: "nas", dataset: "app", errors: 0 },
        { target: "nas", dataset: "other", errors: 0 },
      ]),
    );
    const localRecord = catalog.verifications({ target: "local" })[0]!;
    expect(localRecord.kind).toBe("verify");
    expect(localRecord.description).toMatch(/^verify of local: \d+ packs read, coverage \d+ of \d+ packs$/);
    // The options came from policy p; the evidence says where and what was read.
    expect(localRecord.details).toMatchObject({
      target: "local",
      location: join(base, "local"),
      repository: expect.stringMatching(/^[0-9a-f]{64}$/),
      fullEveryMs: 30 * DAY,
      budget: { bytes: 1024 ** 3 },
      newOnly: false,
      newFirst: false,
      errors: 0,
      read: { packs: local.packsRead },
      crossCopy: [],
    });
    const repository = localRecord.details!.repository as string;
    expect([...catalog.packReads(repository).values()].every((r) => r.outcome === "ok")).toBe(true);
    expect(catalog.packReads(repository).size).toBe(local.packsRead);

    const infos = messages(events).filter((m) => m.level === "info");
    expect(infos.map((m) => m.target)).toEqual(["local", "nas"]);
    expect(infos[0]!.message).toMatch(
      /^local: read \d+ packs .*; coverage (\d+) of \1 packs \(100\.0 %\), oldest read 2035-01-02T03:00:00\.000Z$/,
    );
    expect(messages(events).filter((m) => m.level !== "info")).toEqual([]);
    const progress = events.filter((e) => e.type === "progress");
    expect(new Set(progress.map((e) => e.target))).toEqual(new Set(["local", "nas"]));

    // A second run a day later: every pack is fresh within the period, so none is read again.
    clock.advance(DAY);
    const again = await verifyTargets({
      config,
      access: access(),
      clock,
      store: catalog,
      targets: ["local"],
    });
    expect(again.targets.map((r) => [r.target, r.packsRead, r.plan?.fresh])).toEqual([
      ["local", 0, local.packsRead],
    ]);
    // Options given by the caller win over the policy's.
    clock.advance(DAY);
    const forced = await verifyTargets({
      config,
      access: access(),
      clock,
      store: catalog,
      targets: ["local"],
      fullEveryMs: 1000,
    });
    expect(forced.targets[0]!.packsRead).toBe(local.packsRead);
    expect(catalog.verifications({ target: "local" })[0]!.details).toMatchObject({ fullEveryMs: 1000 });
    catalog.close();
  });

  it("a damaged pack is an error of its target, named with its snapshot, recorded damaged, and read first next time", async () => {
    const nas = join(base, "nas");
    const pack = packFiles(nas).sort((a, b) => readFileSync(b).length - readFileSync(a).length)[0]!;
    const bytes = readFileSync(pack);
    const flipped = Buffer.from(bytes);
    flipped[Math.floor(bytes.length / 2)]! ^= 0xff;
    chmodSync(pack, 0o644);
    writeFileSync(pack, flipped);
    try {
      const catalog = newCatalog();
      const { sink, events } = collectEvents();
      const clock = new ManualClock("2035-01-05T03:00:00Z");
      const result = await verifyTargets({ config, access: access(), clock, events: sink, store: catalog });
      expect(result.ok).toBe(false);
      const [local, bad] = result.targets;
      expect(local).toMatchObject({ target: "local", ok: true, errors: 0 });
      expect(bad).toMatchObject({ target: "nas", ok: false });
      expect(bad!.errors).toBeGreaterThan(0);
      const damaged = bad!.findings!.filter((f) => f.severity === "error");
      expect(damaged.length).toBeGreaterThan(0);
      expect(damaged.some((f) => (f.snapshots?.length ?? 0) > 0)).toBe(true);

      const errors = messages(events).filter((m) => m.level === "error");
      expect(errors.length).toBe(damaged.length);
      expect(errors.every((m) => m.target === "nas" && m.message.startsWith("nas: error: "))).toBe(true);
      expect(messages(events).find((m) => m.level === "info" && m.target === "nas")!.message).toMatch(
        /; \d+ errors?$/,
      );

      const records = catalog.verifications({ target: "nas" });
      expect(records.map((v) => v.dataset).sort()).toEqual(["app", "other"]);
      expect(records.every((v) => v.errors === bad!.errors)).toBe(true);
      expect(records[0]!.details).toMatchObject({ errors: bad!.errors, target: "nas" });
      const reads = catalog.packReads(records[0]!.details!.repository as string);
      const name = pack.split("/").at(-1)!;
      expect(reads.get(name)?.outcome).toBe("damaged");

      // The next run, with a budget of one byte (one pack), reads the damaged pack first.
      const next = await verifyTargets({
        config,
        access: access(),
        clock,
        store: catalog,
        targets: ["nas"],
        budget: { bytes: 1 },
      });
      expect(next.targets[0]!.plan!.read).toEqual([name]);
      expect(next.targets[0]!.ok).toBe(false);
      catalog.close();
    } finally {
      writeFileSync(pack, bytes);
      chmodSync(pack, 0o444);
    }
  });

  it("a target that cannot be opened is reported with its error scrubbed, and the next is verified", async () => {
    const catalog = newCatalog();
    const { sink, events } = collectEvents();
    const clock = new ManualClock("2035-01-06T03:00:00Z");
    const wrong = await verifyTargets({
      config,
      access: { env: {}, defaultPassword: () => Promise.resolve("not-the-password") },
      clock,
      events: sink,
      store: catalog,
      targets: ["spare", "local"],
    });
    expect(wrong.ok).toBe(false);
    expect(wrong.targets.map((r) => r.target)).toEqual(["spare", "local"]);
    // spare was never created; local refuses the password.
    expect(wrong.targets.every((r) => typeof r.error === "string" && r.ok === undefined)).toBe(true);
    expect(messages(events).map((m) => [m.level, m.target])).toEqual([
      ["error", "spare"],
      ["error", "local"],
    ]);
    expect(catalog.verifications()).toEqual([]);

    // A secret in an error never leaves: the one the open read, replaced by ***.
    const secret = "s3cr3t-token-value";
    const scrubbed = await verifySubjects({
      clock,
      events: sink,
      secrets: [secret],
      subjects: [
        {
          name: "remote",
          location: "sftp:backup@host:/repo",
          open: () => Promise.reject(new Error(`login with ${secret} refused`)),
          datasets: [],
          options: { newOnly: false, newFirst: true },
        },
      ],
    });
    expect(scrubbed.targets).toEqual([{ target: "remote", error: "login with *** refused" }]);
    expect(JSON.stringify(events)).not.toContain(secret);
    catalog.close();
  });
});
