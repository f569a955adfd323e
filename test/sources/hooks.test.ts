import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { backup } from "../../src/snapshot/archiver.js";
import { commandSource } from "../../src/sources/command.js";
import { withHooks } from "../../src/sources/hooks.js";
import { memoryRepository, snapshotCount } from "./helpers.js";

let dir: string;
let log: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bulwark-hooks-test-"));
  log = join(dir, "log");
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const record = (what: string): string => `echo "${what} $BULWARK_HOOK \${BULWARK_HOOK_RESULT:-}" >> '${log}'`;
const logged = async (): Promise<string[]> =>
  (await readFile(log, "utf8").catch(() => "")).split("\n").filter((l) => l !== "");

describe("withHooks", () => {
  it("runs before, the work, then after with the outcome", async () => {
    await rm(log, { force: true });
    const value = await withHooks({ before: { command: record("b") }, after: { command: record("a") } }, () =>
      Promise.resolve(42),
    );
    expect(value).toBe(42);
    expect(await logged()).toEqual(["b before ", "a after success"]);
  });

  it("runs after when the work fails, and keeps the work's error", async () => {
    await rm(log, { force: true });
    await expect(
      withHooks({ before: { command: record("b") }, after: { command: record("a") } }, () =>
        Promise.reject(new Error("database unreachable")),
      ),
    ).rejects.toThrow("database unreachable");
    expect(await logged()).toEqual(["b before ", "a after failure"]);
  });

  it("a failing before hook: names the hook and exit code, skips the work, still runs after", async () => {
    await rm(log, { force: true });
    let worked = false;
    await expect(
      withHooks(
        {
          before: { command: "echo cannot freeze >&2; exit 4" },
          after: { command: record("a") },
          label: "source db",
        },
        () => {
          worked = true;
          return Promise.resolve();
        },
      ),
    ).rejects.toThrow(
      /hook before of source db \(`echo cannot freeze >&2; exit 4`\) exited with code 4[\s\S]*cannot freeze/,
    );
    expect(worked).toBe(false);
    expect(await logged()).toEqual(["a after failure"]);
  });

  it("a hanging before hook is killed at its timeout, and after still runs", async () => {
    await rm(log, { force: true });
    const started = Date.now();
    await expect(
      withHooks({ before: { command: "sleep 60", timeoutMs: 300 }, after: { command: record("a") } }, () =>
        Promise.resolve(),
      ),
    ).rejects.toThrow(/hook before \(`sleep 60`\) timed out after 0.3 s/);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(await logged()).toEqual(["a after failure"]);
  });

  it("a failing after hook fails the run; with a failed work, both errors are reported", async () => {
    await expect(withHooks({ after: { command: "exit 5" } }, () => Promise.resolve())).rejects.toThrow(
      /hook after \(`exit 5`\) exited with code 5/,
    );
    await expect(
      withHooks({ after: { command: "exit 6" } }, () => Promise.reject(new Error("dump failed"))),
    ).rejects.toThrow(/dump failed[\s\S]*and then: hook after \(`exit 6`\) exited with code 6/);
  });

  it("around a backup: a failing command source fails it, no snapshot, after hook runs", async () => {
    const t = await memoryRepository();
    try {
      await rm(log, { force: true });
      await expect(
        withHooks({ before: { command: record("b") }, after: { command: record("a") } }, () =>
          backup(t.repo, t.pool, {
            paths: [],
            virtualFiles: [
              commandSource({ path: "/sources/x", command: "echo no route to host >&2; exit 1" }),
            ],
          }),
        ),
      ).rejects.toThrow(/no route to host/);
      expect(await snapshotCount(t.repo)).toBe(0);
      expect(await logged()).toEqual(["b before ", "a after failure"]);
    } finally {
      await t.close();
    }
  });
});
