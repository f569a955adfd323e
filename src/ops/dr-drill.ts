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
 *  4. The runbook run by the one executor (./dr-execute.ts): waves, restores from the copies the plan chose
 *     (./dr-restore.ts), starts, checks, steps. Steps marked `inDrill: skip` are skipped; an approval a
 *     drill would have to wait for is refused unless the caller approves (`--yes`).
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
import { join, resolve } from "node:path";

import type { Catalog } from "../catalog/catalog.js";
import { runbookHash } from "../config/runbooks.js";
import type { BulwarkConfig } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import { errorMessage } from "../core/errors.js";
import { emitMessage, type EventSink } from "../core/events.js";
import { formatDuration } from "../core/format.js";
import { makeDirectories } from "../core/make-directories.js";
import { makeDrIsolation, portVariables, type DrIsolation } from "../dr/isolation.js";
import { recordOwner, removeDrLeftovers } from "../dr/leftovers.js";
import { startService, type RunningService } from "../dr/service.js";
import type { ThrowawayCluster } from "../sources/pg-cluster.js";
import {
  chosenDatasets,
  chosenFor,
  executeRunbook,
  type RunFailure,
  type TimelineEntry,
} from "./dr-execute.js";
import { planRunbook, type DrPlan, type DrPlanStore } from "./dr-plan.js";
import { pathRewriter, restoreEntry } from "./dr-restore.js";
import { scrub, type TargetAccess } from "./targets.js";

export type { TimelineEntry } from "./dr-execute.js";

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
  failed?: RunFailure;
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
  let failed: RunFailure | undefined;

  if (!plan.ready) {
    const first = plan.problems.find((p) => p.severity === "error")!;
    failed = {
      ...(first.service !== undefined ? { service: first.service } : {}),
      step: "plan",
      message: first.message,
      next: `${first.remedy}; then \`bulwark dr plan ${runbook.name}\` must say ready`,
    };
    return finish(input, report, failed, started);
  }

  // 2. The sandbox and the rewriting of paths into it; what drills killed with SIGKILL left goes first.
  const sandboxRoot = resolve(input.sandboxRoot ?? tmpdir());
  await makeDirectories(sandboxRoot, 0o700);
  report.leftoversRemoved = removeDrLeftovers(sandboxRoot);
  for (const l of report.leftoversRemoved)
    emitMessage(input.events, clock.now(), "warning", `removed what an interrupted drill left: ${l}`);
  const sandbox = await mkdtemp(join(sandboxRoot, "bulwark-dr-"));
  const runId = `${runbook.name}-${started.getTime()}-${process.pid}`;
  recordOwner(sandbox, runId);
  report.sandbox = sandbox;
  const root = join(sandbox, "root");
  await mkdir(join(sandbox, "logs"), { recursive: true, mode: 0o700 });
  const removeSandbox = (): void => rmSync(sandbox, { recursive: true, force: true });
  if (input.keepSandbox !== true) process.once("exit", removeSandbox);
  const rewrite = pathRewriter(runbook, root);

  const running: RunningService[] = [];
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
    // 4. The runbook, in the sandbox.
    const outcome = await executeRunbook(
      {
        config,
        runbook,
        plan,
        clock,
        env: input.env,
        ...(input.events !== undefined ? { events: input.events } : {}),
        ...(input.signal !== undefined ? { signal: input.signal } : {}),
        approveAll: input.approve === true,
        secrets,
        started,
        timeline,
        running,
      },
      {
        name: "drill",
        rewrite,
        ...(netns !== undefined ? { netns } : {}),
        portMap,
        vars,
        restore: (service, index) => {
          const r = service.restore[index]!;
          return restoreEntry(r, chosenFor(plan, service.name, r.dataset), {
            config,
            access,
            clock,
            env: input.env,
            rewrite,
            ...(netns !== undefined ? { netns } : {}),
            portMap,
            vars: vars(service.name),
            drill: { clusters, sandbox },
          });
        },
        start: (service) => {
          // A unit would start production's own service, outside the sandbox and the namespace.
          if (service.start?.kind === "systemd") {
            throw new Error(
              `${service.name} starts the systemd unit ${service.start.unit}, which runs outside the drill's sandbox and namespace: give it a start command to be drilled (start: { command: ... })`,
            );
          }
          return startService(service, {
            env: input.env,
            vars: vars(service.name),
            ...(netns !== undefined ? { netns } : {}),
            log: join(sandbox, "logs", `${service.name}.log`),
          });
        },
        logOf: (service) => `${join("SANDBOX", "logs", `${service}.log`)}; keep it with --keep-sandbox`,
        again: `run bulwark dr drill ${runbook.name} again`,
      },
    );
    failed = outcome.failed;
    // 5. The RTO achieved.
    if (outcome.ok) {
      report.rtoMs = clock.now().getTime() - started.getTime();
      report.status = "pass";
    }
  } catch (err) {
    failed ??= {
      step: "drill",
      message: scrub(errorMessage(err), secrets),
      next: "see the error; nothing is left running",
    };
  } finally {
    // 6. Teardown.
    for (const s of [...running].reverse()) {
      const t0 = clock.now().getTime();
      try {
        await s.stop();
        timeline.push({
          at: clock.now().toISOString(),
          offsetMs: clock.now().getTime() - started.getTime(),
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
  failed: RunFailure | undefined,
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
