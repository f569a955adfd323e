/**
 * `bulwark daemon` through the built CLI, on real repositories and a real HTTP API. A job every 2 s runs on
 * time (the catalog's start times), a slow job every 1 s never runs beside itself (each start after the
 * previous end; the passed occurrences counted as missed); the API answers 401 without a token, 403 for a
 * read token on an action, and 202 for an operate one; /metrics parses as the Prometheus text format with the
 * series of a run; /openapi.json lists every route; `bulwark status` and `trigger` talk to it with a token.
 * SIGHUP with a broken config keeps the running one (the errors in the log); a fixed one is taken. Stopped
 * and started again, the daemon catches up the run missed meanwhile. SIGTERM in the middle of a backup exits
 * within 10 s, the run is recorded as interrupted, and the repository checks clean.
 */
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

import parsePrometheus from "parse-prometheus-text-format";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { freePort } from "../helpers/services.js";
import {
  CLI,
  describeRun,
  makeTempDir,
  removeTempDirs,
  runCli,
  spawnNode,
  writeFiles,
  type RunResult,
} from "./helpers.js";

let base: string;
let env: Record<string, string>;
let port: number;
let url: string;
let readToken: string;
let operateToken: string;
let daemon: ReturnType<typeof spawnNode> | undefined;

const cli = (args: string[], extra: Record<string, string> = {}): Promise<RunResult> =>
  runCli(args, { env: { ...env, ...extra }, timeoutMs: 120_000 });

async function writeConfig(
  file: string,
  opts: { appSchedule?: string; big?: boolean } = {},
): Promise<string> {
  const target = (t: string) =>
    `  ${t}: { location: ${base}/${t}, labels: { medium: disk, site: ${t}, failureDomain: ${t} }, password: { file: ${base}/pw } }`;
  await writeFile(
    file,
    `version: 1
targets:
${target("local")}
${target("nas")}
datasets:
  app: { sources: [{ type: files, paths: ["${base}/src/app"] }] }
  slow: { sources: [{ type: files, paths: ["${base}/src/slow"] }], hooks: { before: "sleep 2.5" } }
${opts.big === true ? `  big: { sources: [{ type: command, name: big, command: "head -c 60000000 /dev/urandom; sleep 30", filename: big.bin }] }\n` : ""}policies:
  p: { rule: { copies: 1 }, rpo: 24h }
jobs:
  app: { dataset: app, policy: p, primary: local, copies: [nas], schedule: "${opts.appSchedule ?? "@every 2s"}" }
  slow: { dataset: slow, policy: p, primary: local, schedule: "@every 1s" }
${opts.big === true ? `  big: { dataset: big, policy: p, primary: nas, schedule: "@every 1h" }\n` : ""}daemon:
  listen: 127.0.0.1:${port}
  tokens: ${base}/daemon-tokens.json
  targetConcurrency: 4
  retries: { attempts: 0 }
`,
  );
  return file;
}

async function api(path: string, token?: string, method = "GET"): Promise<Response> {
  return fetch(`${url}${path}`, {
    method,
    ...(token !== undefined ? { headers: { authorization: `Bearer ${token}` } } : {}),
  });
}

async function startDaemon(config: string): Promise<ReturnType<typeof spawnNode>> {
  const started = spawnNode([CLI, "daemon", "-c", config], { env, timeoutMs: 600_000 });
  for (let i = 0; i < 200; i++) {
    try {
      if ((await api("/v1/status", readToken)).ok) return started;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  started.child.kill("SIGKILL");
  throw new Error(`the daemon did not come up:\n${(await started.result).stderr}`);
}

interface Run {
  id: number;
  kind: string;
  job?: string;
  status: string;
  startedAt: string;
  finishedAt?: string;
  error?: string;
}

async function runsOf(job: string): Promise<Run[]> {
  const r = await api(`/v1/runs?job=${job}&kind=backup&limit=100`, readToken);
  expect(r.status).toBe(200);
  return ((await r.json()) as Run[]).reverse();
}

const stderrOf = async (d: ReturnType<typeof spawnNode>): Promise<string> => (await d.result).stderr;

beforeAll(async () => {
  base = await makeTempDir("daemon");
  env = { BULWARK_CATALOG: join(base, "state", "catalog.db"), HOME: base };
  port = await freePort();
  url = `http://127.0.0.1:${port}`;
  await writeFile(join(base, "pw"), "daemon-test-password\n");
  await writeFiles(join(base, "src", "app"), { "a.txt": "alpha\n", "sub/b.txt": "beta\n".repeat(100) });
  await writeFiles(join(base, "src", "slow"), { "c.txt": "gamma\n" });
  const config = await writeConfig(join(base, "bulwark.yaml"));
  const init = await cli(["run", "--init", "-c", config]);
  expect(init.code, describeRun(["run", "--init"], init)).toBe(0);
  const add = async (name: string, role: string): Promise<string> => {
    const args = ["--json", "daemon", "token", "add", "--name", name, "--role", role, "-c", config];
    const r = await cli(args);
    expect(r.code, describeRun(args, r)).toBe(0);
    return (JSON.parse(r.stdout) as { token: string }).token;
  };
  readToken = await add("grafana", "read");
  operateToken = await add("ops", "operate");
  expect(readToken).toMatch(/^bwd_/);
  expect(await readFile(join(base, "daemon-tokens.json"), "utf8")).not.toContain(readToken);
}, 120_000);

afterAll(async () => {
  daemon?.child.kill("SIGKILL");
  await removeTempDirs();
});

describe("bulwark daemon", () => {
  it("runs a job on time, never a slow one beside itself, and serves an authenticated API", async () => {
    daemon = await startDaemon(join(base, "bulwark.yaml"));
    await new Promise((r) => setTimeout(r, 9_000));

    const app = (await runsOf("app")).filter((r) => r.finishedAt !== undefined);
    expect(app.length).toBeGreaterThanOrEqual(3);
    // Never early: starts at least an interval apart (a run longer than 2 s on this busy machine skips an
    // occurrence rather than overlapping).
    const gaps = app.slice(1).map((r, i) => Date.parse(r.startedAt) - Date.parse(app[i]!.startedAt));
    for (const g of gaps) expect(g).toBeGreaterThanOrEqual(1_900);
    // On time: each run started soon after the occurrence it ran for.
    const recent = (
      (await (await api("/v1/status", readToken)).json()) as {
        recent: { id: string; reason: string; scheduledFor: string; started: string }[];
      }
    ).recent.filter((r) => r.id === "job:app" && r.reason === "schedule");
    expect(recent.length).toBeGreaterThanOrEqual(2);
    for (const r of recent) {
      const late = Date.parse(r.started) - Date.parse(r.scheduledFor);
      expect(late).toBeGreaterThanOrEqual(0);
      expect(late).toBeLessThan(1_500);
    }
    expect(app.every((r) => r.status === "ok")).toBe(true);

    const slow = await runsOf("slow");
    expect(slow.length).toBeGreaterThanOrEqual(2);
    for (let i = 1; i < slow.length; i++)
      expect(Date.parse(slow[i]!.startedAt)).toBeGreaterThanOrEqual(Date.parse(slow[i - 1]!.finishedAt!));
    const status = (await (await api("/v1/status", readToken)).json()) as {
      tasks: { id: string; missed: number }[];
    };
    expect(status.tasks.map((t) => t.id).sort()).toEqual(["job:app", "job:slow"]);
    expect(status.tasks.find((t) => t.id === "job:slow")!.missed).toBeGreaterThan(0);

    // Authentication and roles.
    expect((await api("/v1/status")).status).toBe(401);
    expect((await api("/v1/status", "bwd_not-a-token")).status).toBe(401);
    const forbidden = await api("/v1/jobs/app/run", readToken, "POST");
    expect(forbidden.status).toBe(403);
    expect(JSON.stringify(await forbidden.json())).not.toContain(readToken);
    const queued = await api("/v1/jobs/app/run", operateToken, "POST");
    expect(queued.status).toBe(202);
    expect((await api("/v1/jobs/nosuch/run", operateToken, "POST")).status).toBe(404);

    // Metrics: the Prometheus text format, with the runs' series.
    const metrics = await api("/metrics", readToken);
    expect(metrics.headers.get("content-type")).toContain("text/plain");
    const families = parsePrometheus(await metrics.text()) as {
      name: string;
      metrics: { labels?: Record<string, string>; value?: string }[];
    }[];
    const family = (name: string) => families.find((f) => f.name === name)?.metrics ?? [];
    const success = family("bulwark_step_last_success_timestamp_seconds").find(
      (m) => m.labels?.job === "app" && m.labels.kind === "backup" && m.labels.target === "local",
    );
    expect(Number(success?.value)).toBeGreaterThan(Date.now() / 1000 - 30);
    expect(family("bulwark_copy_lag_seconds").find((m) => m.labels?.target === "nas")).toBeDefined();
    const counted = family("bulwark_runs_total").find(
      (m) => m.labels?.kind === "backup" && m.labels.status === "ok",
    );
    expect(Number(counted?.value)).toBeGreaterThanOrEqual(app.length + slow.length - 1);
    expect(
      family("bulwark_daemon_task_running")
        .map((m) => m.labels?.task)
        .sort(),
    ).toEqual(["job:app", "job:slow"]);
    const rpo = family("bulwark_rpo_state").filter((m) => m.labels?.dataset === "app");
    expect(rpo.map((m) => `${m.labels?.target}:${m.labels?.state}`).sort()).toEqual([
      "local:within",
      "nas:within",
    ]);
    expect((await api("/metrics")).status).toBe(401);

    // The OpenAPI document lists every route the daemon serves.
    const doc = (await (await api("/openapi.json", readToken)).json()) as {
      openapi: string;
      paths: Record<string, object>;
    };
    expect(doc.openapi).toMatch(/^3\.1/);
    // A time in an answer is documented as what it is on the wire: an ISO 8601 string.
    expect(JSON.stringify(doc)).toContain('"format":"date-time"');
    expect(Object.keys(doc.paths).sort()).toEqual(
      [
        "/metrics",
        "/openapi.json",
        "/v1/datasets",
        "/v1/dr-runs",
        "/v1/drills",
        "/v1/events",
        "/v1/jobs",
        "/v1/jobs/{name}/run",
        "/v1/runs",
        "/v1/snapshots",
        "/v1/status",
        "/v1/stream",
        "/v1/targets",
        "/v1/verifications",
      ].sort(),
    );

    // The CLI over the API: a read token sees, only an operate token acts.
    const s = await cli(["status", "--daemon", url], { BULWARK_DAEMON_TOKEN: readToken });
    expect(s.code, describeRun(["status"], s)).toBe(0);
    expect(s.stdout).toContain("job:app");
    const t = await cli(["trigger", "app", "--daemon", url], { BULWARK_DAEMON_TOKEN: readToken });
    expect(t.code).toBe(1);
    expect(t.stderr).toContain("403");
    const runs = await cli(["runs", "--job", "app", "--limit", "3", "--daemon", url], {
      BULWARK_DAEMON_TOKEN: readToken,
    });
    expect(runs.code, runs.stderr).toBe(0);
    expect(runs.stdout.trim().split("\n").length).toBeGreaterThanOrEqual(3);
  }, 60_000);

  it("SIGHUP with a broken config keeps the running one; a fixed one is taken", async () => {
    const file = join(base, "bulwark.yaml");
    const good = await readFile(file, "utf8");
    await writeFile(file, good.replace('schedule: "@every 2s"', 'schedule: "every two seconds"'));
    const before = (await runsOf("app")).length;
    daemon!.child.kill("SIGHUP");
    await new Promise((r) => setTimeout(r, 4_500));
    expect((await runsOf("app")).length).toBeGreaterThan(before);
    await writeFile(file, good.replace('schedule: "@every 2s"', 'schedule: "@every 1h"'));
    daemon!.child.kill("SIGHUP");
    await new Promise((r) => setTimeout(r, 1_000));
    const status = (await (await api("/v1/status", readToken)).json()) as {
      configLoaded: string;
      tasks: { id: string; schedule: string }[];
    };
    expect(status.tasks.find((t) => t.id === "job:app")!.schedule).toBe("@every 1h");
    await writeFile(file, good);
    daemon!.child.kill("SIGTERM");
    const log = await stderrOf(daemon!);
    expect(log).toMatch(
      /bulwark\.yaml:\d+:\d+ jobs\.app\.schedule: "every two seconds" is not a cron expression/,
    );
    expect(log).toContain("has errors; the running config is kept");
    expect(log).toContain("config reloaded");
    expect((await daemon!.result).code).toBe(0);
  }, 60_000);

  it("started again, catches up the run missed while it was down", async () => {
    const stoppedAt = Date.now();
    await new Promise((r) => setTimeout(r, 2_500));
    daemon = await startDaemon(join(base, "bulwark.yaml"));
    let recent: { id: string; reason: string; started: string }[] = [];
    for (let i = 0; i < 100 && !recent.some((r) => r.id === "job:app"); i++) {
      await new Promise((r) => setTimeout(r, 100));
      recent = ((await (await api("/v1/status", readToken)).json()) as { recent: typeof recent }).recent;
    }
    const first = recent.find((r) => r.id === "job:app")!;
    expect(first.reason).toBe("catch-up");
    expect(Date.parse(first.started) - stoppedAt).toBeLessThan(6_000);
    daemon.child.kill("SIGTERM");
    expect((await daemon.result).code).toBe(0);
  }, 60_000);

  it("SIGTERM mid-backup exits within 10 s, records the run as interrupted; the repository checks clean", async () => {
    const config = await writeConfig(join(base, "big.yaml"), { big: true, appSchedule: "@every 1h" });
    daemon = await startDaemon(config);
    // The big job starts at once (never run before); wait until its backup is under way.
    for (let i = 0; i < 100; i++) {
      const runs = await runsOf("big");
      if (runs.some((r) => r.status === "running")) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise((r) => setTimeout(r, 1_000));
    const t0 = Date.now();
    daemon.child.kill("SIGTERM");
    const result = await daemon.result;
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toContain("interrupted: job:big");
    const listed = await cli(["--json", "catalog", "runs", "--job", "big"]);
    const runs = JSON.parse(listed.stdout) as Run[];
    expect(runs[0]).toMatchObject({
      kind: "backup",
      status: "failed",
      error: "interrupted: the daemon stopped",
    });
    const check = await cli(["check", "-c", config, "-r", "nas"]);
    expect(check.code, describeRun(["check"], check)).toBe(0);
  }, 90_000);

  it("bad input is a clear error: an unknown role, no alert channel, no token for the API", async () => {
    const config = join(base, "bulwark.yaml");
    const role = await cli(["daemon", "token", "add", "--name", "x", "--role", "root", "-c", config]);
    expect(role.code).toBe(1);
    expect(role.stderr).toContain('unknown role "root"');
    const alert = await cli(["alert", "test", "-c", config]);
    expect(alert.code).toBe(1);
    expect(alert.stderr).toContain("the config declares no alert channel");
    const status = await cli(["status", "--daemon", url]);
    expect(status.code).toBe(1);
    expect(status.stderr).toContain("no API token for the daemon");
    expect(status.stderr).toContain("bulwark daemon token add");
  }, 60_000);
});
