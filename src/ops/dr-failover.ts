/**
 * `bulwark dr failover RUNBOOK`, `dr resume RUN`, `dr approve RUN UNIT`, `dr status` (issue 13, docs/design.md
 * §24): the real recovery. The plan (./dr-plan.ts; `--before` for restore points not newer than an instant,
 * `--from-target` for one copy) must be ready; then the runbook runs by the one executor (./dr-execute.ts)
 * into the configured places: directories and SQLite files at their paths (one that exists is refused, never
 * overwritten), PostgreSQL into the configured server as a new database, services started on the host and
 * left running when Bulwark exits (they are the recovered production).
 *
 * The run's state lives in the catalog (`dr_state`, one row replaced whole in one statement): the plan as made
 * at the start (a resume restores the same snapshots from the same copies), every unit's status, the
 * approvals given, the timeline. It is saved when a unit starts and when it ends, so after a SIGKILL at any
 * point `dr resume` runs again only what had not finished: a unit left `running` is run again (a PostgreSQL
 * restore first drops the database the interrupted attempt created), a `failed` one only with
 * `--retry-failed`, or is passed over with `--skip-failed`. An approval step waits (the run stops with
 * status `waiting`) until `dr approve RUN UNIT` or `--yes`. When the run ends, passed or failed, it is
 * recorded as a DR run (evidence) with its timeline, the RTO achieved (from the start, interruptions
 * included) and the RPO of each dataset.
 */
import { randomBytes } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";

import type { Catalog } from "../catalog/catalog.js";
import { runbookHash } from "../config/runbooks.js";
import type { BulwarkConfig, Runbook } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import { BulwarkError, errorMessage } from "../core/errors.js";
import type { EventSink } from "../core/events.js";
import { formatDuration } from "../core/format.js";
import { kill, processesOfRun } from "../dr/leftovers.js";
import { startService, type RunningService } from "../dr/service.js";
import {
  chosenDatasets,
  chosenFor,
  executeRunbook,
  type ExecMode,
  type RunFailure,
  type TimelineEntry,
  type UnitStatus,
} from "./dr-execute.js";
import { findRunbook, planRunbook, type DrPlan, type DrPlanStore } from "./dr-plan.js";
import { restoreEntry } from "./dr-restore.js";
import type { RunbookService } from "../config/types.js";
import {
  failbackPrelude,
  failbackRewriter,
  originalPlace,
  planFailback,
  restoreToOriginal,
  type DatasetFailback,
  type FailbackContext,
  type FailbackState,
} from "./dr-failback.js";
import type { RecordingCatalog } from "./catalog-recorder.js";
import { scrub, type TargetAccess } from "./targets.js";

export type DrFailoverStore = DrPlanStore &
  RecordingCatalog &
  Pick<Catalog, "recordDrRun" | "saveDrState" | "loadDrState" | "drStates">;

/** What `dr_state` holds for a run. */
export interface DrRunState {
  runId: string;
  runbook: string;
  mode: "failover" | "failback";
  definitionHash: string;
  started: string;
  status: "running" | "waiting" | "failed" | "passed";
  plan: DrPlan;
  units: Record<string, UnitStatus>;
  approvals: string[];
  timeline: TimelineEntry[];
  /** Started services, with their process (they keep running). */
  services: Record<string, { pid?: number; startTicks?: number; log: string }>;
  /** A failback's own state (./dr-failback.ts). */
  failback?: FailbackState;
  /** A failover whose services a passed failback took back: the failback's run id. */
  failedBack?: string;
  failed?: RunFailure;
  waiting?: { id: string; step: string; message: string };
  rtoMs?: number;
  rtoTargetMs?: number;
  rtoTarget?: string;
  datasets: { dataset: string; target?: string; snapshot?: string; rpoMs?: number }[];
  /** Where the services' output goes. */
  logDir: string;
}

export interface DrFailoverInput {
  config: BulwarkConfig;
  access: TargetAccess;
  clock: Clock;
  env: Readonly<Record<string, string | undefined>>;
  store: DrFailoverStore;
  /** Where the services' logs go (the state directory). */
  stateDir: string;
  events?: EventSink;
  signal?: AbortSignal;
  /** Approve every approval step. */
  yes?: boolean;
}

/** Starts a failover of a runbook (see the module header). */
export async function failoverRunbook(
  input: DrFailoverInput & { runbook: string; fromTarget?: string; before?: Date },
): Promise<DrRunState> {
  const runbook = findRunbook(input.config, input.runbook);
  const started = input.clock.now();
  const runId = `${runbook.name}-${started.toISOString().replace(/[-:.]/g, "").slice(0, 15)}-${randomBytes(3).toString("hex")}`;
  const plan = await planRunbook({
    config: input.config,
    runbook: runbook.name,
    access: input.access,
    clock: input.clock,
    env: input.env,
    store: input.store,
    ...(input.fromTarget !== undefined ? { fromTarget: input.fromTarget } : {}),
    ...(input.before !== undefined ? { before: input.before } : {}),
  });
  const state = newRunState(runbook, runId, "failover", started, plan, input.stateDir, {
    definitionHash: runbookHash(runbook),
    datasets: chosenDatasets(plan),
  });

  if (!plan.ready) {
    const first = plan.problems.find((p) => p.severity === "error")!;
    state.status = "failed";
    state.failed = {
      ...(first.service !== undefined ? { service: first.service } : {}),
      step: "plan",
      message: first.message,
      next: `${first.remedy}; then \`bulwark dr plan ${runbook.name}\` must say ready`,
    };
    save(input, state);
    return conclude(input, state, runbook);
  }
  await mkdir(state.logDir, { recursive: true, mode: 0o700 });
  save(input, state);
  return execute(input, state, runbook, undefined);
}

/** Continues a run after a crash, a failed unit or an approval (see the module header). */
export async function resumeRun(
  input: DrFailoverInput & { runId: string; onFailed?: "retry" | "skip" },
): Promise<DrRunState> {
  const state = loadState(input.store, input.runId);
  const runbook = findRunbook(input.config, state.runbook);
  if (runbookHash(runbook) !== state.definitionHash) {
    throw new BulwarkError("USAGE", `runbook ${runbook.name} changed since run ${state.runId} started`, {
      hint: "a run goes on with the definition it started with: restore that definition, or start a new failover",
    });
  }
  if (state.status === "passed") return state;
  if (state.status === "failed" && input.onFailed === undefined) {
    const f = state.failed;
    throw new BulwarkError(
      "USAGE",
      `run ${state.runId} stopped at a failed step${f !== undefined ? `: ${f.step}: ${f.message}` : ""}`,
      {
        hint: "fix the cause, then resume with --retry-failed (run it again) or --skip-failed (go on without it)",
      },
    );
  }
  if (state.plan.ready !== true) {
    throw new BulwarkError("USAGE", `run ${state.runId} never started: its plan was not ready`, {
      hint: `start a new one: bulwark dr failover ${state.runbook}`,
    });
  }
  state.status = "running";
  delete state.failed;
  delete state.waiting;
  await mkdir(state.logDir, { recursive: true, mode: 0o700 });
  save(input, state);
  return execute(input, state, runbook, input.onFailed);
}

/** Approves a unit a run waits on; `dr resume` then goes on. */
export function approveUnit(store: DrFailoverStore, clock: Clock, runId: string, unit: string): DrRunState {
  const state = loadState(store, runId);
  if (state.units[unit] === undefined) {
    const waiting = Object.entries(state.units)
      .filter(([, s]) => s === "waiting")
      .map(([id]) => id);
    throw new BulwarkError("USAGE", `run ${runId} has no unit ${JSON.stringify(unit)} to approve`, {
      hint: waiting.length > 0 ? `it waits on ${waiting.join(", ")}` : "it waits on no approval",
    });
  }
  if (!state.approvals.includes(unit)) state.approvals.push(unit);
  store.saveDrState({
    runId,
    runbook: state.runbook,
    mode: state.mode,
    status: state.status,
    started: new Date(state.started),
    updated: clock.now(),
    state,
  });
  return state;
}

/** A run's state as it starts: nothing done yet, its services' logs under STATE_DIR/dr/RUN. */
function newRunState(
  runbook: Runbook,
  runId: string,
  mode: DrRunState["mode"],
  started: Date,
  plan: DrPlan,
  stateDir: string,
  extra: Pick<DrRunState, "definitionHash" | "datasets"> & Partial<Pick<DrRunState, "failback">>,
): DrRunState {
  return {
    runId,
    runbook: runbook.name,
    mode,
    started: started.toISOString(),
    status: "running",
    plan,
    units: {},
    approvals: [],
    timeline: [],
    services: {},
    logDir: join(stateDir, "dr", runId),
    ...(runbook.rtoMs !== undefined ? { rtoTargetMs: runbook.rtoMs, rtoTarget: runbook.rto ?? "" } : {}),
    ...extra,
  };
}

export function loadState(store: Pick<Catalog, "loadDrState" | "drStates">, runId: string): DrRunState {
  const state = store.loadDrState(runId) as DrRunState | undefined;
  if (state === undefined) {
    const recent = store.drStates(5).map((s) => s.runId);
    throw new BulwarkError("NOT_FOUND", `no DR run ${JSON.stringify(runId)} in the catalog`, {
      hint:
        recent.length > 0
          ? `recent runs: ${recent.join(", ")} (bulwark dr status)`
          : "no DR run has been started",
    });
  }
  return state;
}

function save(input: Pick<DrFailoverInput, "store" | "clock">, state: DrRunState): void {
  input.store.saveDrState({
    runId: state.runId,
    runbook: state.runbook,
    mode: state.mode,
    status: state.status,
    started: new Date(state.started),
    updated: input.clock.now(),
    state,
  });
}

/**
 * `bulwark dr failback RUN`: starts the failback of a passed failover (./dr-failback.ts). `run` is a failover's
 * run id, or a runbook's name for its newest passed failover not yet failed back.
 */
export async function failbackRun(
  input: DrFailoverInput & { run: string; toTarget?: string },
): Promise<DrRunState> {
  const failover = findFailover(input.store, input.config, input.run);
  const runbook = findRunbook(input.config, failover.runbook);
  if (runbookHash(runbook) !== failover.definitionHash) {
    throw new BulwarkError("USAGE", `runbook ${runbook.name} changed since failover ${failover.runId}`, {
      hint: "a failback reads back the places that failover restored to: restore that definition first",
    });
  }
  const earlier = input.store
    .drStates(200)
    .filter((r) => r.mode === "failback")
    .map((r) => loadState(input.store, r.runId))
    .find((s) => s.failback?.failover === failover.runId);
  if (earlier !== undefined) {
    throw new BulwarkError(
      "USAGE",
      `failover ${failover.runId} has a failback already: run ${earlier.runId} (${earlier.status})`,
      {
        hint:
          earlier.status === "passed"
            ? "its services are back at their original places"
            : `go on with it: bulwark dr resume ${earlier.runId}${earlier.status === "failed" ? " --retry-failed" : ""}`,
      },
    );
  }
  planFailback(input.config, runbook, failover.plan, input.toTarget); // refuses what cannot be read back
  const started = input.clock.now();
  const runId = `${runbook.name}-back-${started.toISOString().replace(/[-:.]/g, "").slice(0, 15)}-${randomBytes(3).toString("hex")}`;
  const plan = JSON.parse(JSON.stringify(failover.plan)) as DrPlan;
  const state = newRunState(runbook, runId, "failback", started, plan, input.stateDir, {
    definitionHash: failover.definitionHash,
    datasets: [],
    failback: {
      failover: failover.runId,
      ...(input.toTarget !== undefined ? { toTarget: input.toTarget } : {}),
      backups: {},
      places: {},
    },
  });

  await mkdir(state.logDir, { recursive: true, mode: 0o700 });
  save(input, state);
  return execute(input, state, runbook, undefined);
}

function findFailover(store: DrFailoverStore, config: BulwarkConfig, run: string): DrRunState {
  if (config.runbooks[run] !== undefined && store.loadDrState(run) === undefined) {
    const latest = store
      .drStates(200)
      .filter((r) => r.runbook === run && r.mode === "failover" && r.status === "passed")
      .map((r) => loadState(store, r.runId))[0];
    if (latest === undefined) {
      throw new BulwarkError("NOT_FOUND", `runbook ${run} has no passed failover to fail back`, {
        hint: "a failback follows a failover that passed (bulwark dr status lists the runs)",
      });
    }
    return latest;
  }
  const state = loadState(store, run);
  if (state.mode !== "failover") {
    throw new BulwarkError("USAGE", `run ${run} is a ${state.mode}, not a failover`, {
      hint: "name the failover run to fail back (bulwark dr status)",
    });
  }
  if (state.status !== "passed") {
    throw new BulwarkError(
      "USAGE",
      `failover ${run} is ${state.status}: only a passed failover is failed back`,
      {
        hint: `finish it first: bulwark dr resume ${run}`,
      },
    );
  }
  return state;
}

async function execute(
  input: DrFailoverInput,
  state: DrRunState,
  runbook: Runbook,
  onFailed: "retry" | "skip" | undefined,
): Promise<DrRunState> {
  const { config, clock } = input;
  const secrets = input.access.secrets ?? [];
  const access = { ...input.access, secrets };
  const plan = state.plan;
  const vars = (service?: string): Record<string, string> => ({
    BULWARK_DR_RUN: state.runId,
    BULWARK_DR_MODE: state.mode,
    ...(service !== undefined ? { BULWARK_DR_SERVICE: service } : {}),
  });
  const running: RunningService[] = [];
  const again = `bulwark dr resume ${state.runId} --retry-failed`;
  const start = async (service: RunbookService): Promise<RunningService> => {
    // A start killed with this process between the spawn and the saving of its unit left the service running
    // unrecorded: it goes before the service starts again (it would hold the port, and no stop could find it).
    kill(processesOfRun(state.runId, service.name));
    const log = join(state.logDir, `${service.name}.log`);
    const handle = await startService(service, {
      env: input.env,
      vars: vars(service.name),
      log,
      persistent: true,
    });
    state.services[service.name] = {
      ...(handle.pid !== undefined ? { pid: handle.pid } : {}),
      ...(handle.startTicks !== undefined ? { startTicks: handle.startTicks } : {}),
      log,
    };
    return handle;
  };
  const logOf = (service: string): string =>
    state.services[service]?.log ?? join(state.logDir, `${service}.log`);
  let mode: ExecMode;
  let failover: DrRunState | undefined;
  if (state.failback !== undefined) {
    const fb = state.failback;
    failover = loadState(input.store, fb.failover);
    const datasets: DatasetFailback[] = planFailback(config, runbook, failover.plan, fb.toTarget);
    const ctx: FailbackContext = {
      config,
      runbook,
      access,
      clock,
      env: input.env,
      ...(input.events !== undefined ? { events: input.events } : {}),
      store: input.store,
      runId: state.runId,
      state: fb,
      plan,
      stopped: failover.services,
      failoverPlan: failover.plan,
      save: () => save(input, state),
      onBackup: (dataset, target, snapshot, time) => {
        for (const w of plan.waves)
          for (const s of w.services)
            for (const d of s.datasets)
              if (d.dataset === dataset) {
                d.to = originalPlace(config, d, input.env);
                d.target = target;
                d.snapshot = snapshot;
                d.snapshotTime = time;
                d.rpoMs = 0;
              }
        state.datasets = chosenDatasets(plan).filter((d) => fb.backups[d.dataset] !== undefined);
      },
    };
    mode = {
      name: "failback",
      prelude: failbackPrelude(ctx, datasets),
      rewrite: failbackRewriter(config, runbook, input.env),
      portMap: new Map(),
      vars,
      restore: (service, index, retry) => restoreToOriginal(ctx, service.restore[index]!, retry),
      start,
      logOf,
      again,
    };
  } else {
    mode = {
      name: "failover",
      rewrite: (s) => s,
      portMap: new Map(),
      vars,
      restore: (service, index, retry) => {
        const r = service.restore[index]!;
        return restoreEntry(r, chosenFor(plan, service.name, r.dataset), {
          config,
          access,
          clock,
          env: input.env,
          rewrite: (s) => s,
          portMap: new Map(),
          vars: vars(service.name),
          retry,
        });
      },
      start,
      logOf,
      again,
    };
  }
  try {
    const outcome = await executeRunbook(
      {
        config,
        runbook,
        plan,
        clock,
        env: input.env,
        ...(input.events !== undefined ? { events: input.events } : {}),
        ...(input.signal !== undefined ? { signal: input.signal } : {}),
        approveAll: input.yes === true,
        secrets,
        started: new Date(state.started),
        timeline: state.timeline,
        running,
        ...(onFailed !== undefined ? { onFailedBefore: onFailed } : {}),
        progress: {
          status: (id) => state.units[id],
          mark: (id, status) => {
            state.units[id] = status;
            save(input, state);
          },
          approved: (id) => state.approvals.includes(id),
        },
      },
      mode,
    );
    if (outcome.ok) {
      state.status = "passed";
      state.rtoMs = clock.now().getTime() - new Date(state.started).getTime();
    } else if (outcome.waiting !== undefined) {
      state.status = "waiting";
      state.waiting = outcome.waiting;
    } else {
      state.status = "failed";
      if (outcome.failed !== undefined) state.failed = outcome.failed;
    }
  } catch (err) {
    state.status = "failed";
    state.failed = {
      step: state.mode,
      message: scrub(errorMessage(err), secrets),
      next: `see the error, then ${again}`,
    };
  }
  save(input, state);
  if (failover !== undefined && state.status === "passed") {
    failover.failedBack = state.runId;
    save(input, failover);
  }
  return conclude(input, state, runbook);
}

/** A run that ended (passed or failed) is recorded as a DR run; a waiting one is not over. */
function conclude(input: Pick<DrFailoverInput, "store">, state: DrRunState, runbook: Runbook): DrRunState {
  if (state.status !== "passed" && state.status !== "failed") return state;
  const services = Object.keys(runbook.services).length;
  const verb = state.mode === "failback" ? "back at the original places" : "recovered";
  const outcome =
    state.rtoMs !== undefined
      ? `${verb} in ${formatDuration(state.rtoMs)}${state.rtoTargetMs !== undefined ? ` (RTO ${state.rtoTarget ?? formatDuration(state.rtoTargetMs)})` : ""}`
      : `failed at ${state.failed?.step ?? "?"}`;
  const of = state.failback !== undefined ? `, of failover ${state.failback.failover}` : "";
  input.store.recordDrRun({
    runbook: state.runbook,
    definitionHash: state.definitionHash,
    mode: state.mode,
    time: new Date(state.started),
    status: state.status === "passed" ? "pass" : "fail",
    description: `dr ${state.mode} of ${state.runbook} (run ${state.runId}${of}): ${services} service${services === 1 ? "" : "s"}, ${outcome}`,
    datasets: [...new Set(state.datasets.map((d) => d.dataset))].sort(),
    details: JSON.parse(JSON.stringify(state)) as Record<string, unknown>,
  });
  return state;
}
