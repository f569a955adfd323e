/**
 * The operations of src/ops called as the CLI, the job runner and the daemon call them: typed inputs, a
 * fake clock, an event sink, results as data. In-memory repositories; the catalog is a real SQLite file fed
 * only by the events the operations emit (ops/catalog-recorder.ts). The worker pool runs dist/ (the test
 * setup rebuilds it when stale).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { MemoryBackend } from "../../src/backend/memory/memory-backend.js";
import { Catalog } from "../../src/catalog/catalog.js";
import { ManualClock } from "../../src/core/clock.js";
import { hasCode } from "../../src/core/errors.js";
import { collectEvents, withContext, type BulwarkEvent } from "../../src/core/events.js";
import { backupOperation, selectParent, type BackupInput } from "../../src/ops/backup.js";
import { catalogRecorder, type RecordingCatalog } from "../../src/ops/catalog-recorder.js";
import { checkRepository } from "../../src/ops/check.js";
import { copyToDestination, datasetSnapshotsToCopy, type CopyEndpoint } from "../../src/ops/copy.js";
import { restoreFiles, snapshotToRestore } from "../../src/ops/restore.js";
import { RepoLock } from "../../src/repository/lock.js";
import { Repository } from "../../src/repository/repository.js";
import { WorkerPool } from "../../src/repository/worker-pool.js";
import type { SnapshotWithId } from "../../src/snapshot/snapshot.js";

const weakKdf = { N: 1024, r: 8, p: 1 };
const base = mkdtempSync(join(tmpdir(), "bulwark-ops-"));
const pools: WorkerPool[] = [];
afterAll(async () => {
  for (const p of pools.splice(0)) await p.close();
  rmSync(base, { recursive: true, force: true });
});

let dirs = 0;
function tree(files: Record<string, string>): string {
  const root = join(base, `tree-${++dirs}`);
  for (const [name, content] of Object.entries(files)) {
    mkdirSync(join(root, name, ".."), { recursive: true });
    writeFileSync(join(root, name), content);
  }
  return root;
}

async function newRepo(): Promise<{ backend: MemoryBackend; repo: Repository; pool: WorkerPool }> {
  const backend = new MemoryBackend();
  const repo = await Repository.init(backend, "pw", { kdf: weakKdf });
  const pool = new WorkerPool(repo);
  pools.push(pool);
  return { backend, repo, pool };
}

function backupInput(
  r: { repo: Repository; pool: WorkerPool },
  root: string,
  clock: ManualClock,
  sink: (e: BulwarkEvent) => void,
  extra: Partial<BackupInput> = {},
): BackupInput {
  return {
    repo: r.repo,
    pool: r.pool,
    clock,
    events: sink,
    what: { kind: "paths", paths: [root], virtualFiles: [], excludes: [], excludeFiles: [] },
    env: {},
    hostname: "host-a",
    ...extra,
  };
}

/** The backend as the operation sees it, minus close: the copy operation closes its destination. */
function keepOpen(backend: MemoryBackend): MemoryBackend {
  return new Proxy(backend, {
    get(target, prop) {
      if (prop === "close") return () => Promise.resolve();
      const value: unknown = Reflect.get(target, prop);
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

const ofType = <T extends BulwarkEvent["type"]>(events: BulwarkEvent[], type: T) =>
  events.filter((e): e is Extract<BulwarkEvent, { type: T }> => e.type === type);

describe("backup operation", () => {
  it("takes its time from the clock, reports files as progress and the snapshot as snapshot-saved", async () => {
    const r = await newRepo();
    const root = tree({ "a.txt": "alpha", "sub/b.txt": "bravo bravo" });
    const clock = new ManualClock("2031-05-06T07:08:09.000Z");
    const { sink, events } = collectEvents();
    const result = await backupOperation(backupInput(r, root, clock, sink, { tags: ["nightly"] }));

    expect(result.snapshot.time).toBe("2031-05-06T07:08:09.000Z");
    expect(result.files).toBe(2);
    expect(result.parent).toBeUndefined();
    const progress = ofType(events, "progress");
    expect(progress.map((p) => p.items)).toEqual([1, 2]);
    expect(progress.at(-1)!.bytes).toBe("alpha".length + "bravo bravo".length);
    const saved = ofType(events, "snapshot-saved");
    expect(saved).toHaveLength(1);
    expect(saved[0]).toMatchObject({
      snapshot: result.id,
      original: result.id,
      hostname: "host-a",
      tags: ["nightly"],
      snapshotTime: new Date("2031-05-06T07:08:09.000Z"),
    });
  });

  it("chooses the newest snapshot of the same host and paths as parent; --force (parent false) none", async () => {
    const r = await newRepo();
    const root = tree({ "a.txt": "alpha" });
    const clock = new ManualClock("2031-01-01T00:00:00Z");
    const first = await backupOperation(backupInput(r, root, clock, () => undefined));
    clock.advance(60_000);
    const { sink, events } = collectEvents();
    const second = await backupOperation(backupInput(r, root, clock, sink));
    expect(second.parent).toBe(first.id);
    expect(ofType(events, "message").map((m) => m.message)).toContain(
      `using parent snapshot ${first.id.slice(0, 8)}`,
    );
    expect(second.snapshot.summary!.filesUnmodified).toBe(1);

    const otherHost = await backupOperation(
      backupInput(r, root, clock, () => undefined, { hostname: "host-b" }),
    );
    expect(otherHost.parent).toBeUndefined();
    const forced = await backupOperation(backupInput(r, root, clock, () => undefined, { parent: false }));
    expect(forced.parent).toBeUndefined();
    expect(forced.snapshot.summary!.filesUnmodified).toBe(0);
  });

  it("selectParent: a dataset's parent is of that dataset or of none, never of another dataset", () => {
    const s = (id: string, dataset?: string): SnapshotWithId =>
      ({
        id,
        hostname: "h",
        paths: ["/b", "/a"],
        time: `2030-01-0${id}T00:00:00Z`,
        ...(dataset ? { dataset } : {}),
      }) as unknown as SnapshotWithId;
    const all = [s("1"), s("2", "app"), s("3", "other")];
    expect(selectParent(all, { hostname: "h", paths: ["/a", "/b"], dataset: "app" })?.id).toBe("2");
    expect(selectParent(all.slice(0, 1), { hostname: "h", paths: ["/a", "/b"], dataset: "app" })?.id).toBe(
      "1",
    );
    expect(selectParent(all, { hostname: "h", paths: ["/a", "/b"] })?.id).toBe("3");
    expect(selectParent(all, { hostname: "h", paths: ["/a"] })).toBeUndefined();
  });

  it("refuses only missing paths before anything is written", async () => {
    const r = await newRepo();
    const before = r.backend.fileCount;
    const clock = new ManualClock("2031-01-01T00:00:00Z");
    await expect(
      backupOperation(backupInput(r, join(base, "does-not-exist"), clock, () => undefined)),
    ).rejects.toThrow(/nothing to back up: .* does not exist/);
    expect(r.backend.fileCount).toBe(before);
  });
});

describe("copy, check and restore operations, and the catalog listening to their events", () => {
  it("creates the destination only when allowed, copies, reports each snapshot, and never sends one twice", async () => {
    const src = await newRepo();
    const root = tree({ "x.bin": "x".repeat(50_000), "y.txt": "yankee" });
    const clock = new ManualClock("2032-02-02T02:02:02Z");
    const made = await backupOperation(
      backupInput(src, root, clock, () => undefined, {
        what: { kind: "paths", paths: [root], virtualFiles: [], excludes: [], excludeFiles: [] },
      }),
    );
    const destBackend = new MemoryBackend();
    const destination: CopyEndpoint = {
      label: "target offsite",
      open: () => Repository.open(keepOpen(destBackend), "dest pw"),
      create: (from) =>
        Repository.init(keepOpen(destBackend), "dest pw", { kdf: weakKdf, copyParamsFrom: from.config }),
    };
    const missing = await copyToDestination({
      source: src.repo,
      sourceLabel: "primary",
      destination,
      clock,
      missingHint: "create it with --init",
    }).catch((e: unknown) => e);
    expect(hasCode(missing, "NO_REPOSITORY")).toBe(true);
    expect(String(missing)).toMatch(/target offsite holds no repository/);
    expect(destBackend.fileCount).toBe(0);

    const catalog = Catalog.open(join(base, "catalog", "catalog.db"));
    try {
      const { sink, events } = collectEvents();
      const record = catalogRecorder(catalog, (err) => {
        throw err;
      });
      const step = withContext((e) => (sink(e), record(e)), {
        job: "nightly",
        dataset: "app",
        target: "offsite",
        step: "nightly/1/copy/offsite",
      });
      step({ type: "step-started", time: clock.now(), kind: "copy" });
      const copied = await copyToDestination({
        source: src.repo,
        sourceLabel: "primary",
        destination,
        clock,
        events: step,
        init: true,
      });
      step({ type: "step-finished", time: clock.now(), kind: "copy", status: "ok" });
      expect(copied.createdRepository).toBe(true);
      expect(copied.snapshots).toHaveLength(1);
      expect(copied.verifiedPacks).toBeGreaterThan(0);
      const copiedEvents = ofType(events, "snapshot-copied");
      expect(copiedEvents).toHaveLength(1);
      expect(copiedEvents[0]).toMatchObject({
        from: "primary",
        to: "target offsite",
        sourceSnapshot: made.id,
      });
      expect(ofType(events, "message")[0]!.message).toMatch(/created the repository of target offsite/);

      // What the catalog holds came from the events alone.
      const runs = catalog.runs({ job: "nightly" });
      expect(runs).toHaveLength(1);
      expect(runs[0]).toMatchObject({ kind: "copy", status: "ok", target: "offsite", dataset: "app" });
      const onTarget = catalog.snapshots({ target: "offsite" });
      expect(onTarget.map((s) => s.original)).toEqual([made.id]);
      expect(catalog.copies({ to: "target offsite" })[0]).toMatchObject({
        sourceSnapshot: made.id,
        runId: runs[0]!.id,
        verified: true,
      });
      expect(catalog.events({}).some((e) => e.message.includes("copied to target offsite"))).toBe(true);

      // A second copy finds it there: nothing sent, no snapshot-copied event.
      const again = collectEvents();
      const second = await copyToDestination({
        source: src.repo,
        sourceLabel: "primary",
        destination,
        clock,
        events: again.sink,
        select: (s, d) => datasetSnapshotsToCopy("app", s, d),
      });
      expect(second.snapshots).toHaveLength(0);
      expect(ofType(again.events, "snapshot-copied")).toHaveLength(0);
    } finally {
      catalog.close();
    }

    // The copy restores byte-identically, and check finds it sound; a removed pack is an error.
    const dest = await Repository.open(destBackend, "dest pw");
    const pool = new WorkerPool(dest);
    pools.push(pool);
    const snap = await snapshotToRestore(dest, "latest");
    const into = join(base, "restored");
    const restored = await restoreFiles({ repo: dest, pool, clock, snapshot: snap, target: into });
    expect(restored.errors).toEqual([]);
    expect(readFileSync(join(into, root, "y.txt"), "utf8")).toBe("yankee");
    expect(restored.files).toBe(2);

    const sound = await checkRepository({ repo: dest, pool, clock, readData: { kind: "all" } });
    expect(sound).toMatchObject({ ok: true, errors: 0 });
    let pack: string | undefined;
    for await (const f of destBackend.list("pack")) pack ??= f.name;
    await destBackend.remove({ type: "pack", name: pack! });
    const reopened = await Repository.open(destBackend, "dest pw");
    const damaged = await checkRepository({ repo: reopened, pool, clock });
    expect(damaged.ok).toBe(false);
    expect(damaged.findings.some((f) => f.kind === "pack-missing")).toBe(true);
  });

  it("the recorder stops at the catalog's first failure, says so once, and never fails the operation", async () => {
    const calls: string[] = [];
    const broken: unknown[] = [];
    const failing: RecordingCatalog = {
      startRun: () => {
        calls.push("startRun");
        throw new Error("disk full");
      },
      finishRun: () => void calls.push("finishRun"),
      recordSnapshot: () => void calls.push("recordSnapshot"),
      forgetSnapshots: () => (calls.push("forgetSnapshots"), 0),
      recordCopy: () => void calls.push("recordCopy"),
      recordEvent: () => void calls.push("recordEvent"),
    };
    const r = await newRepo();
    const clock = new ManualClock("2033-03-03T03:03:03Z");
    const record = withContext(
      catalogRecorder(failing, (err) => broken.push(err)),
      { step: "s1", target: "local" },
    );
    record({ type: "step-started", time: clock.now(), kind: "backup" });
    const result = await backupOperation(backupInput(r, tree({ f: "foxtrot" }), clock, record));
    expect(result.id).toMatch(/^[0-9a-f]{64}$/);
    expect(calls).toEqual(["startRun"]);
    expect(broken).toHaveLength(1);
    expect(String(broken[0])).toMatch(/disk full/);
  });
});

describe("the clock decides lock staleness", () => {
  it("a lock not refreshed for 30 minutes of the injected clock no longer blocks an exclusive lock", async () => {
    const { repo } = await newRepo();
    const clock = new ManualClock("2034-04-04T04:00:00Z");
    const shared = await RepoLock.acquire(repo, false, clock);
    try {
      clock.advance(29 * 60_000);
      await expect(RepoLock.acquire(repo, true, clock)).rejects.toThrow(/locked by pid/);
      clock.advance(2 * 60_000);
      const exclusive = await RepoLock.acquire(repo, true, clock);
      await exclusive.release();
    } finally {
      await shared.release();
    }
  });
});
