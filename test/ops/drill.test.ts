/**
 * The parts of a drill below the CLI: the sandbox comparison finds every kind of difference between what
 * was restored and what the snapshot records (content, size, mode, a missing file, a symlink pointing
 * elsewhere, a file where a directory was), on a real repository in memory; the rotation drills a copy never
 * drilled first, then the least recently drilled; unknown names are clear errors.
 */
import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { MemoryBackend } from "../../src/backend/memory/memory-backend.js";
import type { DrillRecord } from "../../src/catalog/catalog.js";
import type { BulwarkConfig } from "../../src/config/types.js";
import { ManualClock } from "../../src/core/clock.js";
import { compareRestored } from "../../src/drill/compare.js";
import { backupOperation } from "../../src/ops/backup.js";
import { drillCandidates } from "../../src/ops/drill.js";
import { restoreFiles } from "../../src/ops/restore.js";
import { Repository } from "../../src/repository/repository.js";
import { WorkerPool } from "../../src/repository/worker-pool.js";
import { thrown } from "../helpers/errors.js";

const message = (fn: () => unknown): string => (thrown(fn) as Error).message;

const base = mkdtempSync(join(tmpdir(), "bulwark-drill-unit-"));
const pools: WorkerPool[] = [];
afterAll(async () => {
  for (const p of pools.splice(0)) await p.close();
  rmSync(base, { recursive: true, force: true });
});

describe("compareRestored", () => {
  it("passes an exact restore and names every kind of difference", async () => {
    const src = join(base, "src");
    mkdirSync(join(src, "dir"), { recursive: true });
    writeFileSync(join(src, "big.bin"), randomBytes(3 * 1024 * 1024)); // several blobs
    writeFileSync(join(src, "small.txt"), "hello\n");
    writeFileSync(join(src, "mode.sh"), "#!/bin/sh\n");
    chmodSync(join(src, "mode.sh"), 0o755);
    writeFileSync(join(src, "dir", "gone.txt"), "gone\n");
    writeFileSync(join(src, "dir", "short.txt"), "0123456789\n");
    symlinkSync("small.txt", join(src, "link"));
    const repo = await Repository.init(new MemoryBackend(), "pw", { kdf: { N: 1024, r: 8, p: 1 } });
    const pool = new WorkerPool(repo);
    pools.push(pool);
    const clock = new ManualClock("2035-01-01T03:00:00Z");
    const made = await backupOperation({
      repo,
      pool,
      clock,
      what: { kind: "paths", paths: [src], virtualFiles: [], excludes: [], excludeFiles: [] },
      env: {},
      hostname: "h",
    });
    const snapshot = { id: made.id, tree: made.snapshot.tree };
    const sandbox = join(base, "sandbox");
    await restoreFiles({ repo, pool, clock, snapshot: { ...made.snapshot, id: made.id }, target: sandbox });

    const exact = await compareRestored(repo, snapshot.tree, sandbox);
    expect(exact.mismatches).toEqual([]);
    expect(exact.files).toBe(5);
    expect(exact.links).toBe(1);
    expect(exact.bytes).toBe(3 * 1024 * 1024 + 6 + 10 + 5 + 11);

    const at = (p: string) => join(sandbox, src, p);
    const big = Buffer.from(randomBytes(3 * 1024 * 1024));
    writeFileSync(at("big.bin"), big); // same size, other bytes
    chmodSync(at("mode.sh"), 0o644);
    unlinkSync(at("dir/gone.txt"));
    writeFileSync(at("dir/short.txt"), "0123\n");
    unlinkSync(at("link"));
    symlinkSync("elsewhere", at("link"));
    const found = await compareRestored(repo, snapshot.tree, sandbox);
    expect(found.mismatches.map((m) => [m.path.slice(src.length), m.reason])).toEqual([
      ["/big.bin", expect.stringMatching(/^bytes 0-\d+ differ from the recorded content$/)],
      ["/dir/gone.txt", "missing after the restore (ENOENT)"],
      ["/dir/short.txt", "5 bytes on disk, the snapshot says 11"],
      ["/link", "links to elsewhere, the snapshot says small.txt"],
      ["/mode.sh", "mode 644, the snapshot says 755"],
    ]);
  });
});

describe("drillCandidates", () => {
  const config = {
    version: 1,
    targets: Object.fromEntries(["a", "b", "c", "other"].map((n) => [n, { name: n, location: `/r/${n}` }])),
    datasets: { app: { name: "app", sources: [] } },
    policies: {},
    jobs: {
      j1: { name: "j1", dataset: "app", policy: "p", primary: "a", copies: ["b"], dependsOn: [] },
      j2: { name: "j2", dataset: "app", policy: "p", primary: "a", copies: ["c"], dependsOn: [] },
    },
  } as unknown as BulwarkConfig;
  const store = (times: Record<string, string>) => ({
    latestDrill: (_d: string, target?: string) =>
      target !== undefined && times[target] !== undefined
        ? ({ time: new Date(times[target]) } as DrillRecord)
        : undefined,
  });
  const names = (s: ReturnType<typeof store> | undefined) =>
    drillCandidates(config, "app", undefined, s).map((t) => t.name);

  it("never drilled first (in job order), then least recently drilled", () => {
    expect(names(undefined)).toEqual(["a", "b", "c"]);
    expect(names(store({ a: "2035-01-03" }))).toEqual(["b", "c", "a"]);
    expect(names(store({ a: "2035-01-03", b: "2035-01-01", c: "2035-01-02" }))).toEqual(["b", "c", "a"]);
  });

  it("a named copy must exist and hold the dataset", () => {
    expect(drillCandidates(config, "app", "c", undefined).map((t) => t.name)).toEqual(["c"]);
    expect(message(() => drillCandidates(config, "app", "zz", undefined))).toBe('unknown target "zz"');
    expect(message(() => drillCandidates(config, "app", "other", undefined))).toBe(
      "target other holds no copy of dataset app",
    );
    expect(message(() => drillCandidates(config, "nojobs", undefined, undefined))).toBe(
      "dataset nojobs has no job, so no copy to drill",
    );
  });
});
