/**
 * The catalog library against real SQLite files in temporary directories: every record type round-trips,
 * filters and ordering, the default path, migrations (reopening, a newer schema refused), damaged files
 * reported with the way out, and runs left "running" by a process that really died.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, openSync, rmSync, statSync, writeFileSync, writeSync, closeSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";

import Database from "better-sqlite3";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";

import { CATALOG_SCHEMA_VERSION, Catalog } from "../../src/catalog/catalog.js";
import { BulwarkError } from "../../src/core/errors.js";
import { thrown } from "../helpers/errors.js";

const base = mkdtempSync(join(tmpdir(), "bulwark-catalog-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));

let dir: string;
let file: string;
let catalog: Catalog;
let counter = 0;

beforeEach(() => {
  dir = join(base, `case-${++counter}`, "state");
  file = join(dir, "catalog.db");
  catalog = Catalog.open(file);
});
afterEach(() => catalog.close());

const t = (iso: string): Date => new Date(iso);
const SNAP_A = "a".repeat(64);
const SNAP_B = "b".repeat(64);
const SNAP_C = "c".repeat(64);

describe("Catalog.open", () => {
  it("creates the directory (0700) and the file (0600), in WAL mode at the current schema version", () => {
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(catalog.path).toBe(file);
    const raw = new Database(file, { readonly: true });
    try {
      expect(raw.pragma("journal_mode", { simple: true })).toBe("wal");
      expect(raw.pragma("user_version", { simple: true })).toBe(CATALOG_SCHEMA_VERSION);
      const tables = raw
        .prepare(
          "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .pluck()
        .all();
      expect(tables).toEqual([
        "copies",
        "dr_runs",
        "dr_state",
        "drills",
        "events",
        "evidence_head",
        "pack_reads",
        "runbook_versions",
        "runs",
        "snapshots",
        "verifications",
      ]);
    } finally {
      raw.close();
    }
  });

  it("opens again with what was recorded, without migrating twice", () => {
    catalog.recordEvent({ time: t("2026-01-01T00:00:00Z"), level: "info", message: "first" });
    catalog.close();
    catalog = Catalog.open(file);
    expect(catalog.events().map((e) => e.message)).toEqual(["first"]);
    catalog.recordEvent({ time: t("2026-01-02T00:00:00Z"), level: "info", message: "second" });
    const second = Catalog.open(file); // a second process-like connection at the same time
    try {
      expect(second.events().map((e) => e.message)).toEqual(["second", "first"]);
    } finally {
      second.close();
    }
  });

  it("refuses a catalog written by a newer schema version", () => {
    catalog.close();
    const raw = new Database(file);
    raw.pragma(`user_version = ${CATALOG_SCHEMA_VERSION + 1}`);
    raw.close();
    const err = thrown(() => Catalog.open(file));
    expect(err).toBeInstanceOf(BulwarkError);
    expect((err as BulwarkError).code).toBe("INVALID_DATA");
    expect((err as BulwarkError).message).toBe(
      `the catalog at ${file} has schema version ${CATALOG_SCHEMA_VERSION + 1}, written by a newer Bulwark (this one knows up to ${CATALOG_SCHEMA_VERSION})`,
    );
    expect((err as BulwarkError).hint).toMatch(/^upgrade Bulwark/);
    catalog = Catalog.open(join(dir, "other.db")); // for afterEach
  });

  it("reports a file that is not a database as damaged, with the way out", () => {
    const garbage = join(dir, "garbage.db");
    writeFileSync(garbage, Buffer.alloc(8192, 0x5a));
    const err = thrown(() => Catalog.open(garbage));
    expect(err).toBeInstanceOf(BulwarkError);
    expect((err as BulwarkError).code).toBe("INVALID_DATA");
    expect((err as BulwarkError).message).toBe(
      `the catalog at ${garbage} is damaged: move it away and run \`bulwark catalog rebuild\``,
    );
    expect((err as BulwarkError).hint).toContain("file is not a database");
  });

  it("reports a malformed database (overwritten pages) as damaged, on open or on the first query", () => {
    for (let i = 0; i < 200; i++) {
      catalog.recordEvent({
        time: new Date(Date.UTC(2026, 0, 1, 0, 0, i)),
        level: "info",
        message: "x".repeat(500),
      });
    }
    catalog.close();
    const size = statSync(file).size;
    expect(size).toBeGreaterThan(16 * 4096);
    // Keep the header (first 100 bytes), smash the rest of page 1 (the schema) and some data pages.
    const fd = openSync(file, "r+");
    writeSync(fd, Buffer.alloc(4096 - 100, 0xff), 0, 4096 - 100, 100);
    writeSync(fd, Buffer.alloc(8 * 4096, 0xee), 0, 8 * 4096, 4 * 4096);
    closeSync(fd);
    const err = thrown(() => {
      const damaged = Catalog.open(file);
      try {
        damaged.events();
      } finally {
        damaged.close();
      }
    });
    expect(err).toBeInstanceOf(BulwarkError);
    expect((err as BulwarkError).message).toBe(
      `the catalog at ${file} is damaged: move it away and run \`bulwark catalog rebuild\``,
    );
    expect((err as BulwarkError).hint).toMatch(/SQLite reports: .*malformed/);
    catalog = Catalog.open(join(dir, "other.db"));
  });
});

describe("Catalog.defaultPath", () => {
  it("BULWARK_CATALOG, then BULWARK_STATE_DIR, then XDG_STATE_HOME, then ~/.local/state", () => {
    expect(Catalog.defaultPath({ BULWARK_CATALOG: "/x/c.db", BULWARK_STATE_DIR: "/s", HOME: "/h" })).toBe(
      "/x/c.db",
    );
    expect(Catalog.defaultPath({ BULWARK_STATE_DIR: "/s", XDG_STATE_HOME: "/xdg", HOME: "/h" })).toBe(
      "/s/catalog.db",
    );
    expect(Catalog.defaultPath({ XDG_STATE_HOME: "/xdg", HOME: "/h" })).toBe("/xdg/bulwark/catalog.db");
    expect(Catalog.defaultPath({ HOME: "/h" })).toBe("/h/.local/state/bulwark/catalog.db");
    // Empty values are unset; a relative XDG_STATE_HOME is invalid by the XDG spec.
    expect(Catalog.defaultPath({ BULWARK_CATALOG: "", XDG_STATE_HOME: "rel", HOME: "/h" })).toBe(
      "/h/.local/state/bulwark/catalog.db",
    );
  });
});

describe("runs", () => {
  it("round-trip with pid and host, newest first, filtered by job, dataset and kind, limited", () => {
    const first = catalog.startRun({
      kind: "backup",
      job: "app-nightly",
      dataset: "app",
      target: "local",
      startedAt: t("2026-03-01T01:00:00.123Z"),
    });
    const second = catalog.startRun({
      kind: "copy",
      job: "app-nightly",
      dataset: "app",
      target: "nas",
      startedAt: t("2026-03-01T01:05:00Z"),
    });
    const third = catalog.startRun({ kind: "prune", target: "nas", startedAt: t("2026-03-02T00:00:00Z") });
    catalog.finishRun(first, {
      status: "ok",
      finishedAt: t("2026-03-01T01:04:00Z"),
      snapshot: SNAP_A,
      stats: { filesNew: 3, dataAdded: 1234, nested: { a: [1, 2] } },
    });
    catalog.finishRun(second, {
      status: "failed",
      finishedAt: t("2026-03-01T01:06:00Z"),
      error: "nas: ECONNREFUSED",
    });

    const all = catalog.runs();
    expect(all.map((r) => r.id)).toEqual([third, second, first]);
    expect(all[2]).toEqual({
      id: first,
      kind: "backup",
      job: "app-nightly",
      dataset: "app",
      target: "local",
      status: "ok",
      startedAt: t("2026-03-01T01:00:00.123Z"),
      finishedAt: t("2026-03-01T01:04:00Z"),
      snapshot: SNAP_A,
      stats: { filesNew: 3, dataAdded: 1234, nested: { a: [1, 2] } },
      pid: process.pid,
      hostname: hostname(),
    });
    expect(all[1]).toMatchObject({ status: "failed", error: "nas: ECONNREFUSED" });
    expect(all[1]).not.toHaveProperty("snapshot");
    expect(all[0]).toEqual({
      id: third,
      kind: "prune",
      target: "nas",
      status: "running",
      startedAt: t("2026-03-02T00:00:00Z"),
      pid: process.pid,
      hostname: hostname(),
    });

    expect(catalog.runs({ job: "app-nightly" }).map((r) => r.id)).toEqual([second, first]);
    expect(catalog.runs({ dataset: "app", kind: "backup" }).map((r) => r.id)).toEqual([first]);
    expect(catalog.runs({ kind: "check" })).toEqual([]);
    expect(catalog.runs({ limit: 1 }).map((r) => r.id)).toEqual([third]);
  });

  it("finishing an unknown run is a NOT_FOUND error", () => {
    const err = thrown(() => catalog.finishRun(999, { status: "ok", finishedAt: new Date() }));
    expect((err as BulwarkError).code).toBe("NOT_FOUND");
  });

  it("markInterruptedRuns fails runs whose process died, and leaves live ones and other hosts' alone", () => {
    // A real process that has exited: its pid is gone (spawnSync reaps it).
    const dead = spawnSync(process.execPath, ["-e", "0"]).pid;
    expect(dead).toBeGreaterThan(0);
    const orphan = catalog.startRun({ kind: "backup", job: "j", startedAt: t("2026-04-01T00:00:00Z") });
    const live = catalog.startRun({ kind: "copy", job: "j", startedAt: t("2026-04-01T00:01:00Z") });
    const remote = catalog.startRun({ kind: "backup", job: "j", startedAt: t("2026-04-01T00:02:00Z") });
    const done = catalog.startRun({ kind: "check", startedAt: t("2026-04-01T00:03:00Z") });
    catalog.finishRun(done, { status: "ok", finishedAt: t("2026-04-01T00:04:00Z") });
    const raw = new Database(file);
    raw.prepare("UPDATE runs SET pid = ? WHERE id IN (?, ?)").run(dead, orphan, done);
    raw.prepare("UPDATE runs SET pid = ?, hostname = 'elsewhere' WHERE id = ?").run(dead, remote);
    raw.close();

    const now = t("2026-04-02T00:00:00Z");
    expect(catalog.markInterruptedRuns(now)).toBe(1);
    const byId = new Map(catalog.runs().map((r) => [r.id, r]));
    expect(byId.get(orphan)).toMatchObject({ status: "failed", error: "interrupted", finishedAt: now });
    expect(byId.get(live)?.status).toBe("running");
    expect(byId.get(remote)?.status).toBe("running");
    expect(byId.get(done)).toMatchObject({ status: "ok", finishedAt: t("2026-04-01T00:04:00Z") });
    expect(byId.get(done)).not.toHaveProperty("error");
    expect(catalog.markInterruptedRuns(now)).toBe(0);
  });
});

describe("snapshots", () => {
  const snap = (
    target: string,
    id: string,
    time: string,
    extra: { dataset?: string; original?: string } = {},
  ) => ({
    target,
    snapshot: id,
    original: extra.original ?? id,
    ...(extra.dataset !== undefined ? { dataset: extra.dataset } : {}),
    time: t(time),
    hostname: "web-1",
    paths: ["/srv/app", "/etc/app"],
    tags: ["daily"],
    seenAt: t("2026-05-01T00:00:00Z"),
  });

  it("round-trip, upsert by target and id, filters, ordered by target then time", () => {
    catalog.recordSnapshot(snap("nas", SNAP_B, "2026-04-02T00:00:00Z", { dataset: "app" }));
    catalog.recordSnapshot(snap("local", SNAP_B, "2026-04-02T00:00:00Z", { dataset: "app" }));
    catalog.recordSnapshot(snap("local", SNAP_A, "2026-04-01T00:00:00Z", { dataset: "app" }));
    catalog.recordSnapshot(snap("local", SNAP_C, "2026-04-03T00:00:00Z"));
    expect(catalog.snapshots().map((s) => [s.target, s.snapshot[0]])).toEqual([
      ["local", "a"],
      ["local", "b"],
      ["local", "c"],
      ["nas", "b"],
    ]);
    expect(catalog.snapshots({ target: "local", dataset: "app" }).map((s) => s.snapshot[0])).toEqual([
      "a",
      "b",
    ]);
    expect(catalog.snapshots({ target: "local" }).at(-1)).toEqual(
      snap("local", SNAP_C, "2026-04-03T00:00:00Z"),
    );

    // Seen again (a later rebuild): one row, updated.
    catalog.recordSnapshot({
      ...snap("nas", SNAP_B, "2026-04-02T00:00:00Z", { dataset: "app" }),
      seenAt: t("2026-06-01T00:00:00Z"),
      tags: ["weekly"],
    });
    const nas = catalog.snapshots({ target: "nas" });
    expect(nas).toHaveLength(1);
    expect(nas[0]).toMatchObject({ seenAt: t("2026-06-01T00:00:00Z"), tags: ["weekly"] });
  });

  it("forgetSnapshots deletes the rows of that target not kept, and counts them", () => {
    for (const id of [SNAP_A, SNAP_B, SNAP_C])
      catalog.recordSnapshot(snap("local", id, "2026-04-01T00:00:00Z"));
    catalog.recordSnapshot(snap("nas", SNAP_A, "2026-04-01T00:00:00Z"));
    expect(catalog.forgetSnapshots("local", new Set([SNAP_B]))).toBe(2);
    expect(catalog.snapshots().map((s) => [s.target, s.snapshot[0]])).toEqual([
      ["local", "b"],
      ["nas", "a"],
    ]);
    expect(catalog.forgetSnapshots("local", new Set([SNAP_B]))).toBe(0);
  });
});

describe("copies, verifications, drills, events", () => {
  it("copies round-trip newest first, filter by dataset and target; a copy recorded again replaces the row", () => {
    const runId = catalog.startRun({ kind: "copy", startedAt: t("2026-04-01T00:00:00Z") });
    catalog.recordCopy({
      dataset: "app",
      from: "local",
      to: "nas",
      sourceSnapshot: SNAP_A,
      targetSnapshot: SNAP_B,
      time: t("2026-04-01T00:10:00Z"),
      blobs: 12,
      bytes: 345678,
      verified: true,
      runId,
    });
    catalog.recordCopy({
      from: "local",
      to: "vault",
      sourceSnapshot: SNAP_A,
      targetSnapshot: SNAP_C,
      time: t("2026-04-01T00:20:00Z"),
      blobs: 0,
      bytes: 0,
      verified: false,
    });
    const copies = catalog.copies();
    expect(copies.map((c) => c.to)).toEqual(["vault", "nas"]);
    expect(copies[1]).toEqual({
      id: copies[1]!.id,
      dataset: "app",
      from: "local",
      to: "nas",
      sourceSnapshot: SNAP_A,
      targetSnapshot: SNAP_B,
      time: t("2026-04-01T00:10:00Z"),
      blobs: 12,
      bytes: 345678,
      verified: true,
      runId,
      derived: false,
    });
    expect(copies[0]).not.toHaveProperty("dataset");
    expect(copies[0]).not.toHaveProperty("runId");
    expect(catalog.copies({ dataset: "app" }).map((c) => c.to)).toEqual(["nas"]);
    expect(catalog.copies({ to: "vault" }).map((c) => c.to)).toEqual(["vault"]);
    expect(catalog.copies({ limit: 1 }).map((c) => c.to)).toEqual(["vault"]);

    // A derived copy never replaces a recorded one; a recorded one replaces a derived one.
    catalog.recordDerivedCopy({
      to: "nas",
      sourceSnapshot: SNAP_A,
      targetSnapshot: SNAP_B,
      time: t("2026-01-01T00:00:00Z"),
    });
    expect(catalog.copies({ to: "nas" })[0]).toMatchObject({ blobs: 12, derived: false });
    catalog.recordDerivedCopy({
      from: "local",
      to: "tape",
      sourceSnapshot: SNAP_A,
      targetSnapshot: SNAP_A,
      time: t("2026-01-01T00:00:00Z"),
    });
    expect(catalog.copies({ to: "tape" })[0]).toMatchObject({
      from: "local",
      blobs: 0,
      verified: false,
      derived: true,
    });
    catalog.recordCopy({
      from: "nas",
      to: "tape",
      sourceSnapshot: SNAP_B,
      targetSnapshot: SNAP_A,
      time: t("2026-04-02T00:00:00Z"),
      blobs: 5,
      bytes: 50,
      verified: true,
    });
    expect(catalog.copies({ to: "tape" })).toHaveLength(1);
    expect(catalog.copies({ to: "tape" })[0]).toMatchObject({
      from: "nas",
      blobs: 5,
      verified: true,
      derived: false,
    });
  });

  it("verifications: the latest of a dataset, by time", () => {
    expect(catalog.latestVerification("app")).toBeUndefined();
    catalog.recordVerification({
      target: "nas",
      dataset: "app",
      snapshot: SNAP_A,
      time: t("2026-04-03T00:00:00Z"),
      kind: "check --read-data",
      errors: 0,
      description: "all packs read back",
      runId: 7,
    });
    catalog.recordVerification({
      target: "local",
      dataset: "app",
      time: t("2026-04-01T00:00:00Z"),
      kind: "check",
      errors: 2,
      description: "two packs missing",
    });
    catalog.recordVerification({
      target: "local",
      dataset: "db",
      time: t("2026-04-05T00:00:00Z"),
      kind: "check",
      errors: 0,
      description: "ok",
    });
    expect(catalog.latestVerification("app")).toEqual({
      id: expect.any(Number) as number,
      target: "nas",
      dataset: "app",
      snapshot: SNAP_A,
      time: t("2026-04-03T00:00:00Z"),
      kind: "check --read-data",
      errors: 0,
      description: "all packs read back",
      runId: 7,
      chain: { seq: 1, prevHash: "0".repeat(64), hash: expect.stringMatching(/^[0-9a-f]{64}$/) as string },
    });
    expect(catalog.latestVerification("db")?.description).toBe("ok");
    expect(catalog.latestVerification("db")).not.toHaveProperty("snapshot");
  });

  it("drills: the latest of a dataset, with details", () => {
    expect(catalog.latestDrill("app")).toBeUndefined();
    catalog.recordDrill({
      dataset: "app",
      target: "vault",
      snapshot: SNAP_C,
      time: t("2026-04-01T00:00:00Z"),
      status: "fail",
      description: "health check failed",
    });
    catalog.recordDrill({
      dataset: "app",
      target: "nas",
      snapshot: SNAP_B,
      time: t("2026-04-02T00:00:00Z"),
      status: "pass",
      description: "restored and validated",
      details: { rtoMs: 81234, checks: ["pg_isready", "GET /health"] },
    });
    expect(catalog.latestDrill("app")).toEqual({
      id: expect.any(Number) as number,
      dataset: "app",
      target: "nas",
      snapshot: SNAP_B,
      time: t("2026-04-02T00:00:00Z"),
      status: "pass",
      description: "restored and validated",
      details: { rtoMs: 81234, checks: ["pg_isready", "GET /health"] },
      chain: {
        seq: 2,
        prevHash: expect.stringMatching(/^[0-9a-f]{64}$/) as string,
        hash: expect.stringMatching(/^[0-9a-f]{64}$/) as string,
      },
    });
    expect(catalog.latestDrill("other")).toBeUndefined();
  });

  it("events: newest first, since (inclusive), level, limit", () => {
    catalog.recordEvent({
      time: t("2026-04-01T00:00:00Z"),
      level: "info",
      message: "one",
      job: "j",
      dataset: "d",
      target: "x",
      runId: 3,
    });
    catalog.recordEvent({ time: t("2026-04-02T00:00:00Z"), level: "warning", message: "two" });
    catalog.recordEvent({ time: t("2026-04-03T00:00:00Z"), level: "error", message: "three" });
    catalog.recordEvent({ time: t("2026-04-03T00:00:00Z"), level: "info", message: "three, later" });
    expect(catalog.events().map((e) => e.message)).toEqual(["three, later", "three", "two", "one"]);
    expect(catalog.events().at(-1)).toEqual({
      id: expect.any(Number) as number,
      time: t("2026-04-01T00:00:00Z"),
      level: "info",
      message: "one",
      job: "j",
      dataset: "d",
      target: "x",
      runId: 3,
    });
    expect(catalog.events({ since: t("2026-04-02T00:00:00Z") }).map((e) => e.message)).toEqual([
      "three, later",
      "three",
      "two",
    ]);
    expect(catalog.events({ level: "info" }).map((e) => e.message)).toEqual(["three, later", "one"]);
    expect(catalog.events({ limit: 2 }).map((e) => e.message)).toEqual(["three, later", "three"]);
  });

  it("transaction: records made in it are kept together or not at all", () => {
    expect(() =>
      catalog.transaction(() => {
        catalog.recordEvent({ time: t("2026-04-01T00:00:00Z"), level: "info", message: "half" });
        throw new Error("boom");
      }),
    ).toThrow("boom");
    expect(catalog.events()).toEqual([]);
    const n = catalog.transaction(() => {
      catalog.recordEvent({ time: t("2026-04-01T00:00:00Z"), level: "info", message: "a" });
      // Nested (forgetSnapshots opens its own): a savepoint inside.
      catalog.forgetSnapshots("none", new Set());
      catalog.recordEvent({ time: t("2026-04-01T00:00:01Z"), level: "info", message: "b" });
      return 2;
    });
    expect(n).toBe(2);
    expect(catalog.events()).toHaveLength(2);
  });
});

describe("pack reads (verification coverage)", () => {
  it("records a pack's last read per repository, replaces it on the next read, and forgets pruned packs", () => {
    const repoA = "1".repeat(64);
    const repoB = "2".repeat(64);
    catalog.recordPackRead({
      repository: repoA,
      pack: SNAP_A,
      target: "local",
      time: t("2030-01-01T00:00:00Z"),
      outcome: "damaged",
      error: "pack aaaa: 1 blob(s) fail verification",
      bytes: 100,
    });
    catalog.recordPackRead({
      repository: repoA,
      pack: SNAP_B,
      target: "local",
      time: t("2030-01-01T00:00:01Z"),
      outcome: "ok",
      bytes: 200,
    });
    catalog.recordPackRead({
      repository: repoB,
      pack: SNAP_A,
      target: "nas",
      time: t("2030-01-02T00:00:00Z"),
      outcome: "ok",
      bytes: 100,
    });
    // Read again after repair: the record is replaced, the error gone.
    catalog.recordPackRead({
      repository: repoA,
      pack: SNAP_A,
      target: "local",
      time: t("2030-01-03T00:00:00Z"),
      outcome: "ok",
      bytes: 100,
    });
    const a = catalog.packReads(repoA);
    expect(a.get(SNAP_A)).toEqual({
      repository: repoA,
      pack: SNAP_A,
      target: "local",
      time: t("2030-01-03T00:00:00Z"),
      outcome: "ok",
      bytes: 100,
    });
    expect(a.size).toBe(2);
    expect(catalog.forgetPackReads(repoA, new Set([SNAP_A]))).toBe(1);
    expect([...catalog.packReads(repoA).keys()]).toEqual([SNAP_A]);
    expect(catalog.packReads(repoB).size).toBe(1);
  });
});
