/**
 * `bulwark dr drill RUNBOOK` (issue 13, docs/design.md §24): the whole runbook rehearsed in isolation while
 * production keeps running on the same ports, timed, recorded, and torn down.
 *
 *  1. The plan (./dr-plan.ts): a runbook that is not ready is not drilled (the failed drill is recorded, with
 *     the plan's errors).
 *  2. A sandbox (mkdtemp, 0700): every place a restore writes to (`to.directory`, `to.sqlite`) is moved under
 *     SANDBOX/root, and every mention of such a path in the runbook's commands, working directories, fixed
 *     variables and checks is rewritten to match, so the recovered services run on the recovered data, never
 *     on production's. Services also get BULWARK_DR_ROOT (SANDBOX/root), BULWARK_DR_RUN and
 *     BULWARK_DR_SERVICE.
 *  3. Isolation (src/dr/isolation.ts): a network namespace with only loopback as root, where every port is
 *     free; otherwise the services' ports remapped, and the report says the drill was not isolated.
 *  4. The runbook's `before` steps; then wave by wave, the services of a wave side by side: each one's
 *     `before` steps, its restores from the copies the plan chose (the plan's snapshot, a shared lock), its
 *     start, its health checks in order, its `after` steps. A failed restore, start, check or critical step
 *     fails the service; the wave then completes and no later wave starts. Then the runbook's `after` steps.
 *     Steps marked `inDrill: skip` are skipped; an approval a drill would have to wait for is refused unless
 *     the caller approves (`--yes`).
 *  5. The RTO achieved: from the drill's start to the last check of the last wave; the RPO of each dataset is
 *     the age of the snapshot restored.
 *  6. Teardown, in a `finally` (also on failure and Ctrl-C, which aborts `signal`): every service stopped
 *     (its stop command, then its whole process group), the namespace deleted, the sandbox removed; exit
 *     handlers do the same should the process end first. What could not be removed is reported.
 *  7. Recorded in the catalog as a DR run (an evidence record), with the timeline, for posture's DR row.
 */
import { rmSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";

import type { Catalog } from "../catalog/catalog.js";
import { runbookHash } from "../config/runbooks.js";
import type {
  BulwarkConfig,
  CommandSpec,
  HealthCheck,
  Runbook,
  RunbookService,
  RunbookStep,
  SecretRef,
  Source,
} from "../config/types.js";
import type { Clock } from "../core/clock.js";
import { errorMessage } from "../core/errors.js";
import { emitMessage, type EventSink } from "../core/events.js";
import { formatBytes, formatDuration } from "../core/format.js";
import { makeDirectories } from "../core/make-directories.js";
import { inNetns, remapPorts, runHealthCheck } from "../dr/health.js";
import { makeDrIsolation, portVariables, type DrIsolation } from "../dr/isolation.js";
import { recordCluster, recordOwner, removeDrLeftovers } from "../dr/leftovers.js";
import { serviceEnv, startService, type RunningService } from "../dr/service.js";
import { runStep } from "../dr/steps.js";
import { RepoLock } from "../repository/lock.js";
import type { Repository } from "../repository/repository.js";
import { WorkerPool } from "../repository/worker-pool.js";
import { restoreToCommand } from "../sources/command.js";
import { SOURCES_ROOT } from "../sources/dataset.js";
import { startThrowawayCluster, type ThrowawayCluster } from "../sources/pg-cluster.js";
import { DATABASES_DIR, databaseEntryName, restorePostgres } from "../sources/postgres.js";
import { run } from "../sources/process.js";
import { planRunbook, type DrPlan, type DrPlanStore } from "./dr-plan.js";
import { restoreFiles, restoreSourceTo, snapshotToRestore } from "./restore.js";
import { readSecret } from "./secrets.js";
import { openTargetRepository, scrub, type TargetAccess } from "./targets.js";

export type DrDrillStore = DrPlanStore & Pick<Catalog, "recordDrRun">;

export interface DrDrillInput {
  config: BulwarkConfig;
  runbook: string;
  access: TargetAccess;
  clock: Clock;
  env: Readonly<Record<string, string | undefined>>;
  events?: EventSink;
  store?: DrDrillStore;
  signal?: AbortSignal;
  /** Where the sandbox is made (default: the system's temporary directory). */
  sandboxRoot?: string;
  keepSandbox?: boolean;
  /** Run on the host with remapped ports even as root. */
  noIsolation?: boolean;
  /** Approve the approval steps a drill runs (`inDrill: run`). */
  approve?: boolean;
}

export interface TimelineEntry {
  at: string;
  /** Since the drill started. */
  offsetMs: number;
  wave?: number;
  service?: string;
  kind: "step" | "restore" | "start" | "health" | "stop";
  name: string;
  /** A restore's dataset and size: what `dr plan` scales its next estimate by. */
  dataset?: string;
  bytes?: number;
  outcome: "passed" | "failed" | "skipped";
  durationMs: number;
  message: string;
  output?: string;
}

export interface DrDrillReport {
  runbook: string;
  definitionHash: string;
  mode: "drill";
  time: string;
  status: "pass" | "fail";
  isolation: { netns: boolean; note: string; ports: Record<string, number> };
  sandbox?: string;
  sandboxKept: boolean;
  plan: DrPlan;
  timeline: TimelineEntry[];
  /** From the start to the last health check of the last wave (only when every wave passed). */
  rtoMs?: number;
  rtoTargetMs?: number;
  /** The RTO target as the runbook writes it. */
  rtoTarget?: string;
  datasets: { dataset: string; target?: string; snapshot?: string; rpoMs?: number }[];
  /** The first thing that failed, with what to do next. */
  failed?: { service?: string; step: string; message: string; output?: string; next: string };
  /** What teardown could not remove. */
  leftovers: string[];
  /** What drills killed before (SIGKILL) had left, removed before this one started. */
  leftoversRemoved: string[];
  durationMs: number;
}

/** Drills a runbook (see the module header). Throws only on a usage error (unknown runbook). */
export async function drillRunbook(input: DrDrillInput): Promise<DrDrillReport> {
  const { config, clock } = input;
  const started = clock.now();
  const say = (level: "info" | "warning" | "error", message: string): void =>
    emitMessage(input.events, clock.now(), level, message);
  const secrets = input.access.secrets ?? [];
  const access = { ...input.access, secrets };
  const plan = await planRunbook({
    config,
    runbook: input.runbook,
    access,
    clock,
    env: input.env,
    checkPorts: false,
    ...(input.store !== undefined ? { store: input.store } : {}),
  });
  const runbook = config.runbooks[input.runbook]!;
  const timeline: TimelineEntry[] = [];
  const offset = (): number => clock.now().getTime() - started.getTime();
  const record = (e: Omit<TimelineEntry, "at" | "offsetMs">): void => {
    timeline.push({ at: clock.now().toISOString(), offsetMs: offset(), ...e });
  };
  const report: DrDrillReport = {
    runbook: runbook.name,
    definitionHash: runbookHash(runbook),
    mode: "drill",
    time: started.toISOString(),
    status: "fail",
    isolation: { netns: false, note: "not started", ports: {} },
    sandboxKept: false,
    plan,
    timeline,
    ...(runbook.rtoMs !== undefined ? { rtoTargetMs: runbook.rtoMs, rtoTarget: runbook.rto } : {}),
    datasets: chosenDatasets(plan),
    leftovers: [],
    leftoversRemoved: [],
    durationMs: 0,
  };
  let failed: DrDrillReport["failed"];
  const fail = (f: NonNullable<DrDrillReport["failed"]>): void => {
    failed ??= f;
  };

  if (!plan.ready) {
    const first = plan.problems.find((p) => p.severity === "error")!;
    fail({
      ...(first.service !== undefined ? { service: first.service } : {}),
      step: "plan",
      message: first.message,
      next: `${first.remedy}; then \`bulwark dr plan ${runbook.name}\` must say ready`,
    });
    return finish(input, report, failed, started);
  }

  // 2. The sandbox and the rewriting of paths into it.
  const sandboxRoot = resolve(input.sandboxRoot ?? tmpdir());
  await makeDirectories(sandboxRoot, 0o700);
  // What drills killed with SIGKILL left (src/dr/leftovers.ts) goes first.
  report.leftoversRemoved = removeDrLeftovers(sandboxRoot);
  for (const l of report.leftoversRemoved) say("warning", `removed what an interrupted drill left: ${l}`);
  const sandbox = await mkdtemp(join(sandboxRoot, "bulwark-dr-"));
  const runId = `${runbook.name}-${started.getTime()}-${process.pid}`;
  recordOwner(sandbox, runId);
  report.sandbox = sandbox;
  const root = join(sandbox, "root");
  await mkdir(join(sandbox, "logs"), { recursive: true, mode: 0o700 });
  const removeSandbox = (): void => rmSync(sandbox, { recursive: true, force: true });
  if (input.keepSandbox !== true) process.once("exit", removeSandbox);
  const rewrite = pathRewriter(runbook, root);

  const servicesRunning: RunningService[] = [];
  const clusters: ThrowawayCluster[] = [];
  let isolation: DrIsolation | undefined;
  try {
    // 3. Isolation.
    const ports = [...new Set(Object.values(runbook.services).flatMap((s) => s.ports))].sort((a, b) => a - b);
    isolation = await makeDrIsolation(ports, input.noIsolation === true ? { disabled: true } : {});
    report.isolation = {
      netns: isolation.netns !== undefined,
      note: isolation.note,
      ports: Object.fromEntries([...isolation.portMap].map(([a, b]) => [String(a), b])),
    };
    const netns = isolation.netns;
    const portMap = isolation.portMap;
    const vars = (service?: string): Record<string, string> => ({
      BULWARK_DR_RUN: runId,
      BULWARK_DR_ROOT: root,
      BULWARK_DR_MODE: "drill",
      ...(service !== undefined ? { BULWARK_DR_SERVICE: service } : {}),
      ...portVariables(portMap),
    });

    const steps = async (
      list: RunbookStep[],
      wave: number | undefined,
      service?: string,
    ): Promise<boolean> => {
      for (const step of list) {
        if (input.signal?.aborted === true) return false;
        const outcome = await runStep(rewriteStep(step, rewrite), {
          clock,
          env: input.env,
          drill: true,
          approve: () => Promise.resolve(input.approve === true ? "approved" : "rejected"),
          ...(netns !== undefined ? { netns } : {}),
          ...(input.signal !== undefined ? { signal: input.signal } : {}),
          vars: vars(service),
        });
        const outcomeKind = outcome.outcome === "pending" ? "failed" : outcome.outcome;
        record({
          ...(wave !== undefined ? { wave } : {}),
          ...(service !== undefined ? { service } : {}),
          kind: "step",
          name: step.name,
          outcome: outcomeKind,
          durationMs: outcome.durationMs,
          message:
            step.type === "approval" && outcome.outcome !== "passed" && outcome.outcome !== "skipped"
              ? `${outcome.message} (a drill does not wait for approvals: mark it inDrill: skip, or pass --yes)`
              : outcome.message,
          ...(outcome.output !== undefined ? { output: outcome.output } : {}),
        });
        if (outcomeKind === "failed" && step.critical) {
          fail({
            ...(service !== undefined ? { service } : {}),
            step: step.name,
            message: outcome.message,
            ...(outcome.output !== undefined ? { output: outcome.output } : {}),
            next: `fix step "${step.name}"${service !== undefined ? ` of ${service}` : ""} (or make it critical: false), then run bulwark dr drill ${runbook.name} again`,
          });
          return false;
        }
      }
      return true;
    };

    const recoverService = async (service: RunbookService, wave: number): Promise<boolean> => {
      const name = service.name;
      if (!(await steps(service.before, wave, name))) return false;
      // Restores, from the copies the plan chose.
      for (const r of service.restore) {
        if (input.signal?.aborted === true) return false;
        const choice = chosenFor(plan, name, r.dataset);
        const t0 = clock.now().getTime();
        const what = `restore ${r.dataset}${r.source !== undefined ? `/${r.source}` : ""} from ${choice?.target ?? "?"}`;
        try {
          const bytes = await restoreOne(
            input,
            access,
            config,
            r,
            choice,
            rewrite,
            { ...(netns !== undefined ? { netns } : {}), portMap, clusters, sandbox },
            vars(name),
          );
          record({
            wave,
            service: name,
            kind: "restore",
            name: what,
            dataset: r.dataset,
            bytes,
            outcome: "passed",
            durationMs: clock.now().getTime() - t0,
            message: `snapshot ${choice!.snapshot!.slice(0, 8)}, ${formatBytes(bytes)}`,
          });
        } catch (err) {
          const message = scrub(errorMessage(err), secrets);
          record({
            wave,
            service: name,
            kind: "restore",
            name: what,
            outcome: "failed",
            durationMs: clock.now().getTime() - t0,
            message,
          });
          fail({
            service: name,
            step: what,
            message,
            next: `check the copy: \`bulwark check -c CONFIG -r ${choice?.target ?? "TARGET"}\`, or restore from another with --from-target`,
          });
          return false;
        }
      }
      // Start.
      if (service.start !== undefined) {
        const t0 = clock.now().getTime();
        try {
          const running = await startService(rewriteService(service, rewrite), {
            env: input.env,
            vars: vars(name),
            ...(netns !== undefined ? { netns } : {}),
            log: join(sandbox, "logs", `${name}.log`),
          });
          servicesRunning.push(running);
          record({
            wave,
            service: name,
            kind: "start",
            name: `start ${name}`,
            outcome: "passed",
            durationMs: clock.now().getTime() - t0,
            message: `started${running.pid !== undefined ? ` (pid ${running.pid})` : ""}`,
          });
        } catch (err) {
          const message = errorMessage(err);
          record({
            wave,
            service: name,
            kind: "start",
            name: `start ${name}`,
            outcome: "failed",
            durationMs: clock.now().getTime() - t0,
            message,
          });
          fail({
            service: name,
            step: `start ${name}`,
            message,
            next: `fix the start command of ${name} (runbooks.${runbook.name}.services.${name}.start)`,
          });
          return false;
        }
      }
      // Health checks, in order.
      for (const check of service.health) {
        if (input.signal?.aborted === true) return false;
        const rewritten = remapPorts(rewriteCheck(check, rewrite), portMap);
        const outcome = await runHealthCheck(rewritten, {
          clock,
          env: input.env,
          readSecret: async (ref) => {
            const value = await readSecret(ref, input.env);
            secrets.push(value);
            return value;
          },
          ...(netns !== undefined ? { netns } : {}),
          ...(input.signal !== undefined ? { signal: input.signal } : {}),
        });
        const running = servicesRunning.find((s) => s.name === name);
        const exited = running?.exited();
        const message = outcome.ok
          ? outcome.message
          : `${outcome.message}${exited !== undefined ? ` (the service ${exited})` : ""}`;
        record({
          wave,
          service: name,
          kind: "health",
          name: check.name,
          outcome: outcome.ok ? "passed" : "failed",
          durationMs: outcome.durationMs,
          message,
          ...(outcome.output !== undefined ? { output: outcome.output } : {}),
        });
        if (!outcome.ok) {
          fail({
            service: name,
            step: `health ${check.name}`,
            message,
            ...(outcome.output !== undefined ? { output: outcome.output } : {}),
            next: `read the service's output (${join("SANDBOX", "logs", `${name}.log`)}; keep it with --keep-sandbox), fix ${name} or its check, then run bulwark dr drill ${runbook.name} again`,
          });
          return false;
        }
      }
      return steps(service.after, wave, name);
    };

    // 4. The runbook's steps and the waves.
    let ok = await steps(runbook.before, undefined);
    for (const wave of plan.waves) {
      if (!ok || input.signal?.aborted === true) break;
      say("info", `wave ${wave.wave}: ${wave.services.map((s) => s.name).join(", ")}`);
      const results = await Promise.all(
        wave.services.map((s) => recoverService(runbook.services[s.name]!, wave.wave)),
      );
      ok = results.every(Boolean);
    }
    if (ok && input.signal?.aborted !== true) ok = await steps(runbook.after, undefined);
    if (input.signal?.aborted === true) {
      fail({
        step: "interrupted",
        message: "the drill was interrupted",
        next: `run bulwark dr drill ${runbook.name} again`,
      });
      ok = false;
    }
    // 5. The RTO achieved.
    if (ok && failed === undefined) {
      report.rtoMs = offset();
      report.status = "pass";
    }
  } catch (err) {
    fail({
      step: "drill",
      message: scrub(errorMessage(err), secrets),
      next: "see the error; nothing is left running",
    });
  } finally {
    // 6. Teardown.
    for (const s of [...servicesRunning].reverse()) {
      const t0 = clock.now().getTime();
      try {
        await s.stop();
        record({
          service: s.name,
          kind: "stop",
          name: `stop ${s.name}`,
          outcome: "passed",
          durationMs: clock.now().getTime() - t0,
          message: "stopped",
        });
      } catch (err) {
        report.leftovers.push(`service ${s.name}: ${errorMessage(err)}`);
      }
    }
    for (const c of clusters) {
      await c
        .stop()
        .catch((err: unknown) => report.leftovers.push(`PostgreSQL cluster ${c.dir}: ${errorMessage(err)}`));
    }
    isolation?.teardown();
    if (input.keepSandbox === true) report.sandboxKept = true;
    else {
      await rm(sandbox, { recursive: true, force: true }).catch((err: unknown) =>
        report.leftovers.push(`sandbox ${sandbox}: ${errorMessage(err)}`),
      );
      process.removeListener("exit", removeSandbox);
    }
  }
  return finish(input, report, failed, started);
}

function finish(
  input: DrDrillInput,
  report: DrDrillReport,
  failed: DrDrillReport["failed"],
  started: Date,
): DrDrillReport {
  if (failed !== undefined) {
    report.failed = failed;
    report.status = "fail";
  }
  report.durationMs = input.clock.now().getTime() - started.getTime();
  const services = Object.keys(input.config.runbooks[report.runbook]!.services).length;
  const rto =
    report.rtoMs !== undefined
      ? `recovered in ${formatDuration(report.rtoMs)}${report.rtoTargetMs !== undefined ? ` (RTO ${report.rtoTarget ?? formatDuration(report.rtoTargetMs)})` : ""}`
      : `failed at ${failed?.step ?? "?"}`;
  input.store?.recordDrRun({
    runbook: report.runbook,
    definitionHash: report.definitionHash,
    mode: "drill",
    time: started,
    status: report.status,
    description: `dr drill of ${report.runbook}: ${services} service${services === 1 ? "" : "s"} in ${report.plan.waves.length} wave${report.plan.waves.length === 1 ? "" : "s"}, ${rto}${report.isolation.netns ? "" : ", not isolated"}`,
    datasets: [...new Set(report.datasets.map((d) => d.dataset))].sort(),
    details: JSON.parse(JSON.stringify(report)) as Record<string, unknown>,
  });
  return report;
}

function chosenDatasets(plan: DrPlan): DrDrillReport["datasets"] {
  const seen = new Map<string, DrDrillReport["datasets"][number]>();
  for (const w of plan.waves)
    for (const s of w.services)
      for (const d of s.datasets) {
        if (seen.has(d.dataset)) continue;
        seen.set(d.dataset, {
          dataset: d.dataset,
          ...(d.target !== undefined ? { target: d.target } : {}),
          ...(d.snapshot !== undefined ? { snapshot: d.snapshot } : {}),
          ...(d.rpoMs !== undefined ? { rpoMs: d.rpoMs } : {}),
        });
      }
  return [...seen.values()];
}

function chosenFor(
  plan: DrPlan,
  service: string,
  dataset: string,
): DrPlan["waves"][number]["services"][number]["datasets"][number] | undefined {
  for (const w of plan.waves)
    for (const s of w.services) if (s.name === service) return s.datasets.find((d) => d.dataset === dataset);
  return undefined;
}

/** Where a source is stored in the snapshot (src/sources/dataset.ts planDatasetBackup). */
function sourcePath(source: Source): string {
  switch (source.type) {
    case "sqlite":
      return `${SOURCES_ROOT}/${source.name}.sqlite`;
    case "command":
      return `${SOURCES_ROOT}/${source.name}/${source.filename}`;
    case "postgres":
      return `${SOURCES_ROOT}/${source.name}`;
    case "files":
      return "/";
  }
}

/** Restores one `restore` entry of a service into the sandbox; returns the bytes restored. */
async function restoreOne(
  input: DrDrillInput,
  access: TargetAccess,
  config: BulwarkConfig,
  r: RunbookService["restore"][number],
  choice: { target?: string; snapshot?: string } | undefined,
  rewrite: (s: string) => string,
  where: {
    netns?: string;
    portMap: ReadonlyMap<number, number>;
    clusters: ThrowawayCluster[];
    sandbox: string;
  },
  vars: Record<string, string>,
): Promise<number> {
  const netns = where.netns;
  if (choice?.target === undefined || choice.snapshot === undefined)
    throw new Error("the plan found no copy");
  const target = config.targets[choice.target]!;
  const repo = await openTargetRepository(target, access, { readOnly: true });
  let lock: RepoLock | undefined;
  try {
    lock = await RepoLock.acquire(repo, false, input.clock);
    const snapshot = await snapshotToRestore(repo, choice.snapshot);
    const source =
      r.source === undefined
        ? undefined
        : config.datasets[r.dataset]!.sources.find((s) => s.type !== "files" && s.name === r.source);
    const to = r.to;
    if ("directory" in to) {
      const pool = new WorkerPool(repo);
      try {
        const out = await restoreFiles({
          repo,
          pool,
          clock: input.clock,
          snapshot,
          target: rewrite(to.directory),
          ...(source !== undefined ? { include: [sourcePath(source)] } : {}),
        });
        if (out.errors.length > 0) {
          throw new Error(
            `${out.errors.length} entries could not be restored, first ${out.errors[0]!.path}: ${out.errors[0]!.error}`,
          );
        }
        return out.bytes;
      } finally {
        await pool.close();
      }
    }
    if (source === undefined) throw new Error("a whole dataset is restored to a directory only");
    if ("sqlite" in to) {
      const path = rewrite(to.sqlite);
      await mkdir(dirname(path), { recursive: true, mode: 0o700 });
      const report = await restoreSourceTo(
        repo,
        snapshot,
        sourcePath(source),
        { kind: "sqlite", path },
        input.env,
      );
      if (!report.ok) throw new Error(report.lines.join("; "));
      return report.bytes;
    }
    if ("command" in to) {
      const spec = rewriteCommand(to.command, rewrite);
      const { bytes } = await restoreToCommand(
        repo,
        snapshot,
        sourcePath(source),
        inNetns(netns, spec.command),
        {
          env: serviceEnv(spec, { env: input.env, vars }),
          stdout: "ignore",
          label: `restore command of ${r.dataset}`,
        },
      );
      return bytes;
    }
    return await restoreIntoThrowawayCluster(input, repo, snapshot, source, to, where);
  } finally {
    await lock?.release().catch(() => undefined);
    await repo.backend.close().catch(() => undefined);
  }
}

/**
 * A PostgreSQL restore in a drill: never into the configured server (production), but into a throwaway
 * cluster listening where the runbook's URL points, as the service will see it: in the namespace on the URL's
 * port, else on its remapped port. The URL's user is created as a superuser with the password the restore's
 * reference gives (without one, inside a namespace, loopback connections are trusted), and the dump is
 * restored into the URL's database. The cluster is stopped and deleted at teardown.
 */
async function restoreIntoThrowawayCluster(
  input: DrDrillInput,
  repo: Repository,
  snapshot: { tree: string },
  source: Source,
  to: { postgres: string; password?: SecretRef },
  where: {
    netns?: string;
    portMap: ReadonlyMap<number, number>;
    clusters: ThrowawayCluster[];
    sandbox: string;
  },
): Promise<number> {
  if (source.type !== "postgres")
    throw new Error(`a ${source.type} source cannot be restored into PostgreSQL`);
  const url = new URL(to.postgres);
  const urlPort = url.port === "" ? 5432 : Number(url.port);
  const database = decodeURIComponent(url.pathname.replace(/^\//, "")) || source.database || source.name;
  const user = decodeURIComponent(url.username) || "postgres";
  const password = to.password !== undefined ? await readSecret(to.password, input.env) : undefined;
  input.access.secrets?.push(...(password !== undefined ? [password] : []));
  const port = where.netns !== undefined ? urlPort : where.portMap.get(urlPort);
  const cluster = await startThrowawayCluster({
    env: { ...input.env },
    ...(where.netns !== undefined ? { netns: where.netns } : {}),
    ...(port !== undefined ? { port } : {}),
    ...(where.netns !== undefined && password === undefined ? { trustLoopback: true } : {}),
  });
  where.clusters.push(cluster);
  recordCluster(where.sandbox, cluster.dir);
  if (user !== "bulwark") {
    // The password goes on standard input, never in an argument.
    const quoted = (v: string): string => `'${v.replaceAll("'", "''")}'`;
    await run(
      "psql (the service's role)",
      join(cluster.bindir, "psql"),
      ["-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password"],
      {
        env: cluster.env,
        input: `CREATE ROLE "${user.replaceAll('"', '""')}" LOGIN SUPERUSER${password !== undefined ? ` PASSWORD ${quoted(password)}` : ""};\n`,
      },
    );
  }
  const path = source.all
    ? `${SOURCES_ROOT}/${source.name}/${DATABASES_DIR}/${databaseEntryName(database)}`
    : sourcePath(source);
  const report = await restorePostgres(repo, snapshot, path, {
    target: database,
    env: cluster.env,
    bindir: cluster.bindir,
  });
  return report.bytes;
}

/**
 * The rewriting of step 2: every path a restore writes to, and every mention of it (or of a path below it) in
 * a string, to the same path under `root`. Longest paths first, so /srv/app/data is not rewritten as /srv/app.
 */
export function pathRewriter(runbook: Runbook, root: string): (s: string) => string {
  const places = new Set<string>();
  for (const s of Object.values(runbook.services)) {
    for (const r of s.restore) {
      if ("directory" in r.to) places.add(resolve(r.to.directory));
      if ("sqlite" in r.to) places.add(resolve(r.to.sqlite));
    }
  }
  const sorted = [...places].filter((p) => p !== "/").sort((a, b) => b.length - a.length);
  if (sorted.length === 0) return (s) => s;
  const escape = (p: string): string => p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  // A place counts where it starts a path: at the start or after a character that cannot be in one
  // (space, quote, =, :), and ends at the end, at a / or at such a character.
  const pattern = new RegExp(`(^|[\\s"'=:;(])(${sorted.map(escape).join("|")})(?=$|[/\\s"';:)])`, "g");
  return (s) => s.replace(pattern, (_m, before: string, place: string) => `${before}${join(root, place)}`);
}

function rewriteCommand<T extends CommandSpec>(c: T, rewrite: (s: string) => string): T {
  return {
    ...c,
    command: c.command.map(rewrite),
    setEnv: Object.fromEntries(Object.entries(c.setEnv).map(([k, v]) => [k, rewrite(v)])),
    ...(c.cwd !== undefined ? { cwd: rewrite(c.cwd) } : {}),
  };
}

function rewriteStep(step: RunbookStep, rewrite: (s: string) => string): RunbookStep {
  if (step.type === "command") return rewriteCommand(step, rewrite);
  if (step.type === "notify" && step.command !== undefined)
    return { ...step, command: rewriteCommand(step.command, rewrite) };
  return step;
}

function rewriteCheck(check: HealthCheck, rewrite: (s: string) => string): HealthCheck {
  if (check.type === "command") return rewriteCommand(check, rewrite);
  if (check.type === "sql" && check.sqlite !== undefined) return { ...check, sqlite: rewrite(check.sqlite) };
  return check;
}

function rewriteService(service: RunbookService, rewrite: (s: string) => string): RunbookService {
  const control = (c: RunbookService["start"]): RunbookService["start"] =>
    c === undefined || c.kind === "systemd" ? c : rewriteCommand(c, rewrite);
  const start = control(service.start);
  const stop = control(service.stop);
  return {
    ...service,
    ...(start !== undefined ? { start } : {}),
    ...(stop !== undefined ? { stop } : {}),
  };
}
