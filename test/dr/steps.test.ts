/**
 * Runbook steps (src/dr/steps.ts) with real programs: drills skip `inDrill: skip` steps without running them,
 * command steps retry and time out (their process group killed), the critical flag comes back unchanged,
 * approvals pass, fail or stay pending, waits wait, notifications reach their command and the notifier, and
 * step commands see BULWARK_DR_STEP and the run's variables but never this process's secrets.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { access, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

import type { RunbookStep } from "../../src/config/types.js";
import { ManualClock, systemClock } from "../../src/core/clock.js";
import { RETRY_PAUSE_MS, runStep, type StepContext } from "../../src/dr/steps.js";

const BASE_ENV = { PATH: process.env.PATH, HOME: process.env.HOME };

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bulwark-steps-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const common = { critical: true, timeoutMs: 5000, retries: 0, inDrill: "run" as const };

function cmd(name: string, script: string, extra: Partial<RunbookStep> = {}): RunbookStep {
  return {
    name,
    type: "command",
    command: ["sh", "-c", script],
    passEnv: [],
    setEnv: {},
    ...common,
    ...extra,
  } as RunbookStep;
}

function ctx(extra: Partial<StepContext> = {}): StepContext {
  return {
    clock: systemClock,
    env: BASE_ENV,
    drill: false,
    approve: () => Promise.reject(new Error("no approval expected")),
    ...extra,
  };
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

describe("drill mode", () => {
  it("skips an inDrill: skip step without running it, and runs it outside a drill", async () => {
    const marker = join(dir, "ran-skip");
    const step = cmd("mark", `touch ${marker}`, { inDrill: "skip" });
    const skipped = await runStep(step, ctx({ drill: true }));
    expect(skipped).toMatchObject({ name: "mark", type: "command", outcome: "skipped", attempts: 0 });
    expect(skipped.message).toBe("skipped in a drill (inDrill: skip)");
    expect(await exists(marker)).toBe(false);
    const ran = await runStep(step, ctx({ drill: false }));
    expect(ran).toMatchObject({ outcome: "passed", attempts: 1 });
    expect(await exists(marker)).toBe(true);
  });

  it("runs an inDrill: run step in a drill", async () => {
    const marker = join(dir, "ran-run");
    const r = await runStep(cmd("mark", `touch ${marker}`), ctx({ drill: true }));
    expect(r.outcome).toBe("passed");
    expect(await exists(marker)).toBe(true);
  });

  it("does not ask for an approval the drill skips", async () => {
    let asked = 0;
    const r = await runStep(
      { name: "go?", type: "approval", message: "switch DNS?", ...common, inDrill: "skip" },
      ctx({
        drill: true,
        approve: () => {
          asked++;
          return Promise.resolve("approved");
        },
      }),
    );
    expect(r.outcome).toBe("skipped");
    expect(asked).toBe(0);
  });
});

describe("command steps", () => {
  it("see BULWARK_DR_STEP, the run's variables, their env: and setEnv, but not BULWARK_PASSWORD", async () => {
    const r = await runStep(
      cmd(
        "restore-app",
        'echo "step=$BULWARK_DR_STEP run=$BULWARK_DR_RUN mode=$MODE fixed=$FIXED pw=${BULWARK_PASSWORD:-unset} aws=${AWS_SECRET_ACCESS_KEY:-unset}"',
        { passEnv: ["MODE"], setEnv: { FIXED: "1", BULWARK_DR_STEP: "spoofed" } },
      ),
      ctx({
        env: {
          ...BASE_ENV,
          MODE: "failover",
          BULWARK_PASSWORD: "secret-repo",
          AWS_SECRET_ACCESS_KEY: "secret-aws",
        },
        vars: { BULWARK_DR_RUN: "run-7" },
      }),
    );
    expect(r.outcome).toBe("passed");
    expect(r.output).toBe("step=restore-app run=run-7 mode=failover fixed=1 pw=unset aws=unset");
  });

  it("fail with the exit code and the last line, keeping the output", async () => {
    const r = await runStep(cmd("migrate", "echo starting; echo 'lock held' >&2; exit 4"), ctx());
    expect(r).toMatchObject({ outcome: "failed", attempts: 1 });
    expect(r.message).toBe("exited with code 4: lock held");
    expect(r.output).toBe("starting\nlock held");
  });

  it("retry: 1 + retries attempts, RETRY_PAUSE_MS apart, and pass on the first success", async () => {
    const counter = join(dir, "count");
    // Fails twice, passes on the third run.
    const script = `n=$(cat ${counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > ${counter}; echo "try $n"; [ $n -ge 3 ]`;
    const slept: number[] = [];
    const sleep = (ms: number): Promise<void> => Promise.resolve(void slept.push(ms));
    const r = await runStep(cmd("warm-up", script, { retries: 5 }), ctx({ sleep }));
    expect(r).toMatchObject({ outcome: "passed", attempts: 3 });
    expect(r.message).toBe("exited with code 0 (attempt 3)");
    expect(r.output).toBe("try 3");
    expect(slept).toEqual([RETRY_PAUSE_MS, RETRY_PAUSE_MS]);

    await rm(counter);
    slept.length = 0;
    const few = await runStep(cmd("warm-up", script, { retries: 1 }), ctx({ sleep }));
    expect(few).toMatchObject({ outcome: "failed", attempts: 2 });
    expect(few.message).toBe("exited with code 1: try 2 (after 2 attempts)");
    expect(slept).toEqual([RETRY_PAUSE_MS]);
  });

  it("time out: the process group is killed after timeoutMs", async () => {
    const pidFile = join(dir, "step-bg.pid");
    const started = Date.now();
    const r = await runStep(cmd("stuck", `sleep 30 & echo $! > ${pidFile}; wait`, { timeoutMs: 300 }), ctx());
    expect(Date.now() - started).toBeLessThan(5000);
    expect(r.outcome).toBe("failed");
    expect(r.message).toBe("timed out after 0.3 s and was killed");
    const pid = Number((await readFile(pidFile, "utf8")).trim());
    expect(await goneWithin(pid, 3000)).toBe(true);
  });

  it("report the critical flag unchanged, passed or failed", async () => {
    for (const critical of [true, false]) {
      expect(await runStep(cmd("f", "exit 1", { critical }), ctx())).toMatchObject({
        outcome: "failed",
        critical,
      });
      expect(await runStep(cmd("p", "true", { critical }), ctx())).toMatchObject({
        outcome: "passed",
        critical,
      });
    }
  });

  it("are not started once the run is interrupted", async () => {
    const marker = join(dir, "ran-aborted");
    const r = await runStep(cmd("late", `touch ${marker}`), ctx({ signal: AbortSignal.abort() }));
    expect(r).toMatchObject({ outcome: "failed", attempts: 0, message: "interrupted before it ran" });
    expect(await exists(marker)).toBe(false);
  });
});

describe("approval steps", () => {
  const step: RunbookStep = {
    name: "switch-dns",
    type: "approval",
    message: "point DNS at the DR site?",
    ...common,
  };

  it("pass when approved, fail when rejected, and stay pending for `bulwark dr approve`", async () => {
    const asked: RunbookStep[] = [];
    const answer = (a: "approved" | "rejected" | "pending") =>
      ctx({
        approve: (s) => {
          asked.push(s);
          return Promise.resolve(a);
        },
      });
    expect(await runStep(step, answer("approved"))).toMatchObject({ outcome: "passed", message: "approved" });
    expect(await runStep(step, answer("rejected"))).toMatchObject({ outcome: "failed", message: "rejected" });
    const pending = await runStep(step, answer("pending"));
    expect(pending.outcome).toBe("pending");
    expect(pending.message).toBe(
      "waiting for approval (bulwark dr approve RUN switch-dns): point DNS at the DR site?",
    );
    expect(asked).toEqual([step, step, step]);
  });

  it("fail (do not throw) when asking fails", async () => {
    const r = await runStep(step, ctx({ approve: () => Promise.reject(new Error("catalog is locked")) }));
    expect(r).toMatchObject({ outcome: "failed", message: "catalog is locked" });
  });
});

describe("wait steps", () => {
  it("sleep through ctx.sleep; the times come from the clock", async () => {
    const clock = new ManualClock("2026-01-01T00:00:00Z");
    const slept: number[] = [];
    const r = await runStep(
      { name: "settle", type: "wait", ms: 1500, ...common },
      ctx({
        clock,
        sleep: (ms) => {
          slept.push(ms);
          clock.advance(ms);
          return Promise.resolve();
        },
      }),
    );
    expect(slept).toEqual([1500]);
    expect(r).toMatchObject({
      outcome: "passed",
      attempts: 1,
      message: "waited 1.5 s",
      startedAt: "2026-01-01T00:00:00.000Z",
      endedAt: "2026-01-01T00:00:01.500Z",
      durationMs: 1500,
    });
  });

  it("really wait without one, and stop early on abort", async () => {
    const started = Date.now();
    const r = await runStep({ name: "settle", type: "wait", ms: 150, ...common }, ctx());
    expect(r.outcome).toBe("passed");
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(r.durationMs).toBeGreaterThanOrEqual(140);

    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const t0 = Date.now();
    const cut = await runStep(
      { name: "long", type: "wait", ms: 20_000, ...common },
      ctx({ signal: controller.signal }),
    );
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(cut).toMatchObject({ outcome: "failed", message: "interrupted while waiting" });
  });
});

describe("notify steps", () => {
  const message = "failover of shop started";

  it("run their command with the message in BULWARK_DR_MESSAGE and hand it to the notifier", async () => {
    const sent: string[] = [];
    const r = await runStep(
      {
        name: "page",
        type: "notify",
        message,
        command: {
          command: [
            "sh",
            "-c",
            'echo "msg=$BULWARK_DR_MESSAGE step=$BULWARK_DR_STEP pw=${BULWARK_PASSWORD:-unset}"',
          ],
          passEnv: [],
          setEnv: {},
        },
        ...common,
      },
      ctx({
        env: { ...BASE_ENV, BULWARK_PASSWORD: "secret-repo" },
        notify: (m) => Promise.resolve(void sent.push(m)),
      }),
    );
    expect(r.outcome).toBe("passed");
    expect(r.output).toBe(`msg=${message} step=page pw=unset`);
    expect(r.message).toBe("the notify command exited with code 0; message delivered");
    expect(sent).toEqual([message]);
  });

  it("fail when the command or the notifier fails", async () => {
    const failing = await runStep(
      {
        name: "page",
        type: "notify",
        message,
        command: { command: ["sh", "-c", "echo 'webhook 500' >&2; exit 1"], passEnv: [], setEnv: {} },
        ...common,
      },
      ctx(),
    );
    expect(failing).toMatchObject({
      outcome: "failed",
      message: "the notify command exited with code 1: webhook 500",
    });
    const broken = await runStep(
      { name: "page", type: "notify", message, ...common },
      ctx({ notify: () => Promise.reject(new Error("SMTP refused")) }),
    );
    expect(broken).toMatchObject({
      outcome: "failed",
      message: "the message could not be delivered: SMTP refused",
    });
  });

  it("send nothing (skipped) without a command or a notifier", async () => {
    const r = await runStep({ name: "page", type: "notify", message, ...common }, ctx());
    expect(r).toMatchObject({ outcome: "skipped", attempts: 0 });
  });
});

/** Whether `pid` ended (a zombie not yet reaped counts as ended). */
async function goneWithin(pid: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  for (;;) {
    let state: string | undefined;
    try {
      state = (await readFile(`/proc/${pid}/stat`, "utf8")).replace(/^.*\) /s, "")[0];
    } catch {
      return true;
    }
    if (state === "Z") return true;
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}
