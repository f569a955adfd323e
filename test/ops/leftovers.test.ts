/**
 * removeLeftovers (src/ops/leftovers.ts) on a real local directory: which locks it removes (only a dead
 * process's of this host), and that a failing cleanup is a warning, never an error of the run.
 */
import { spawnSync } from "node:child_process";
import { hostname } from "node:os";

import { afterAll, describe, expect, it } from "vitest";

import { LocalBackend } from "../../src/backend/local/local-backend.js";
import { withFaults } from "../../src/backend/testing/faulty.js";
import { systemClock } from "../../src/core/clock.js";
import type { BulwarkEvent } from "../../src/core/events.js";
import { removeLeftovers } from "../../src/ops/leftovers.js";
import { listLocks, type LockInfo } from "../../src/repository/lock.js";
import { Repository } from "../../src/repository/repository.js";
import { makeTempDir, removeTempDirs } from "../helpers/temp.js";

afterAll(removeTempDirs);

/** The pid of a process that has exited (and been reaped). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], {
    encoding: "utf8",
  });
  return Number(r.stdout);
}

const lock = (pid: number, host = hostname()): LockInfo => ({
  time: systemClock.now().toISOString(),
  exclusive: false,
  hostname: host,
  username: "test",
  pid,
});

describe("removeLeftovers", () => {
  it("removes the locks of dead processes of this host only", async () => {
    const dir = await makeTempDir("leftovers-ops");
    const repo = await Repository.init(await LocalBackend.create(dir), "pw", {
      kdf: { N: 1024, r: 8, p: 1 },
    });
    const dead = deadPid();
    const deadName = await repo.saveDocument("lock", lock(dead));
    const liveName = await repo.saveDocument("lock", lock(process.pid));
    const otherHostName = await repo.saveDocument("lock", lock(dead, `not-${hostname()}`));
    const events: BulwarkEvent[] = [];
    const result = await removeLeftovers({
      repo,
      label: "target t",
      clock: systemClock,
      events: (e) => events.push(e),
    });
    expect(result.locks.map((l) => [l.name, l.pid])).toEqual([[deadName, dead]]);
    expect((await listLocks(repo)).map((l) => l.name).sort()).toEqual([liveName, otherHostName].sort());
    expect(events.map((e) => (e.type === "message" ? e.message : e.type))).toEqual([
      `removed from target t the lock of dead process ${dead}`,
    ]);
    await repo.backend.close();
  });

  it("a cleanup that fails is a warning and the caller goes on", async () => {
    const dir = await makeTempDir("leftovers-ops-fail");
    const backend = withFaults(await LocalBackend.create(dir));
    const repo = await Repository.init(backend, "pw", { kdf: { N: 1024, r: 8, p: 1 } });
    backend.addRule({
      method: "removeStaleTempFiles",
      fault: { kind: "fail", error: new Error("EACCES: permission denied") },
    });
    const events: BulwarkEvent[] = [];
    const result = await removeLeftovers({
      repo,
      label: "target t",
      clock: systemClock,
      events: (e) => events.push(e),
    });
    expect(result.error).toContain("permission denied");
    expect(events).toMatchObject([
      {
        type: "message",
        level: "warning",
        message: "could not remove what interrupted runs left on target t: EACCES: permission denied",
      },
    ]);
    await repo.backend.close();
  });
});
