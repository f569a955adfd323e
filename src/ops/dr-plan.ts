/**
 * `bulwark dr plan RUNBOOK` (issue 13, docs/design.md §24): the readiness check of a DR runbook, and the plan
 * `dr drill` and `dr failover` follow. Nothing is restored or started; every copy is only opened and listed.
 *
 *  1. The waves: services in dependency order, independent ones side by side (runbookWaves).
 *  2. For each dataset a service restores, the copy to restore from: the dataset's targets (the jobs'
 *     primaries and copies) ordered by the restore throughput their last passing drill measured, fastest
 *     first, then those without one in job order; each is opened in turn, and one that cannot be opened or
 *     holds no snapshot of the dataset is passed over with the reason (the fallback). The chosen copy's
 *     newest snapshot gives the RPO (its age) and, with the drill's throughput, the restore estimate.
 *  3. The estimate: a service takes the sum of its restores, a wave its slowest service, the runbook the
 *     sum of its waves and waits; compared with the runbook's RTO target.
 *  4. What would fail: no reachable copy (error), a copy whose last drill failed (error) or that was never
 *     drilled or not within the policy's `drills.every` (warning), a program a step, check, start or restore
 *     needs that is not on PATH (error), a port a service listens on already in use (warning: a failover
 *     would collide with what runs there; a drill runs isolated).
 *  5. The definition's version: the SHA-256 of the normalised runbook. A hash that differs from the last one
 *     recorded is a new version in the catalog's change log (an evidence record), and resets the runbook's
 *     verified state, which only a passing `dr drill` of the current version sets.
 */
import { accessSync, constants } from "node:fs";
import { createServer } from "node:net";
import { delimiter, join } from "node:path";

import type { Catalog, DrillRecord } from "../catalog/catalog.js";
import { runbookHash, runbookWaves } from "../config/runbooks.js";
import type { BulwarkConfig, CommandSpec, Runbook, RunbookService, Source } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import { BulwarkError, errorMessage } from "../core/errors.js";
import type { EventSink } from "../core/events.js";
import { formatDuration } from "../core/format.js";
import { loadAllSnapshots } from "../snapshot/snapshot.js";
import { datasetPaths, latestOf } from "./posture.js";
import { openTargetRepository, scrub, type TargetAccess } from "./targets.js";

/** What the plan reads from and writes to the catalog (a fake in unit tests). */
export type DrPlanStore = Pick<Catalog, "latestDrill" | "runbookVersions" | "recordRunbookVersion"> &
  Partial<Pick<Catalog, "drRuns">>;

/** Opening a copy, loading its index and locking it, beyond moving the bytes: before any DR drill measured it. */
const RESTORE_OVERHEAD_MS = 500;
/** From a service's start to its checks passing, before any DR drill measured it. */
const READINESS_ALLOWANCE_MS = 1000;

export interface DrPlanInput {
  config: BulwarkConfig;
  runbook: string;
  access: TargetAccess;
  clock: Clock;
  events?: EventSink;
  store?: DrPlanStore;
  /** Restore every dataset from this target (no fallback). */
  fromTarget?: string;
  /**
   * Restore points not newer than this (`dr failover --before`): every dataset's newest snapshot taken at or
   * before it, so a service's datasets come from consistent points before an incident.
   */
  before?: Date;
  env: Readonly<Record<string, string | undefined>>;
  /** Whether a port in use is a problem (failover) or expected (a drill isolates; default true). */
  checkPorts?: boolean;
}

export interface PlanProblem {
  severity: "error" | "warning";
  service?: string;
  dataset?: string;
  message: string;
  remedy: string;
}

/** The copy a dataset of a service is restored from. */
export interface DatasetChoice {
  dataset: string;
  source?: string;
  /** Where it goes: "directory /srv/app", "postgres postgres://...", ... */
  to: string;
  target?: string;
  snapshot?: string;
  snapshotTime?: string;
  /** The host the snapshot was taken on (a failback's snapshot keeps it). */
  hostname?: string;
  /** The snapshot's age now: the RPO a recovery from it has. */
  rpoMs?: number;
  bytes?: number;
  /** Restore throughput measured by the copy's last passing drill. */
  bytesPerSecond?: number;
  drill?: { time: string; status: "pass" | "fail" };
  estimateMs?: number;
  /**
   * How the estimate was made: the restore the runbook's last passing DR drill measured, scaled by size
   * ("dr drill"), or the size over the dataset drill's throughput plus a fixed overhead ("drill throughput").
   */
  estimateBasis?: "dr drill" | "drill throughput";
  /** Copies passed over, in the order tried, and why. */
  passedOver: { target: string; reason: string }[];
  /** Every copy in the order they were considered, with the throughput that ranked it. */
  ranking: { target: string; bytesPerSecond?: number }[];
}

export interface PlannedService {
  name: string;
  dependsOn: string[];
  datasets: DatasetChoice[];
  /** From its start to its checks passing: as the last passing DR drill measured it, or an allowance. */
  readinessMs: number;
  /** Undefined when a restore's throughput is unknown. */
  estimateMs?: number;
}

export interface DrPlan {
  runbook: string;
  time: string;
  definitionHash: string;
  /** The change log entry of this definition: new when the hash differs from the last one recorded. */
  version: { id?: number; changed: boolean; previousHash?: string; versions: number };
  waves: { wave: number; services: PlannedService[]; estimateMs?: number }[];
  /** The whole runbook's estimate (planning included); undefined when a restore's throughput is unknown. */
  estimateMs?: number;
  /** How long this plan took (opening every copy): the first part of any recovery. */
  planningMs: number;
  /** The runbook's RTO target as written, and in milliseconds. */
  rto?: string;
  rtoMs?: number;
  /** No error among the problems. */
  ready: boolean;
  problems: PlanProblem[];
}

export function findRunbook(config: BulwarkConfig, name: string): Runbook {
  const runbook = config.runbooks[name];
  if (runbook === undefined) {
    const names = Object.keys(config.runbooks);
    throw new BulwarkError("USAGE", `unknown runbook ${JSON.stringify(name)}`, {
      hint:
        names.length > 0
          ? `the runbooks are ${names.join(", ")}`
          : "the config declares no runbook (runbooks:)",
    });
  }
  return runbook;
}

export async function planRunbook(input: DrPlanInput): Promise<DrPlan> {
  const { config, clock } = input;
  const runbook = findRunbook(config, input.runbook);
  const now = clock.now();
  const problems: PlanProblem[] = [];
  const secrets = input.access.secrets ?? [];
  const access = { ...input.access, secrets };
  if (input.fromTarget !== undefined && config.targets[input.fromTarget] === undefined) {
    throw new BulwarkError("USAGE", `unknown target ${JSON.stringify(input.fromTarget)}`, {
      hint: `the targets are ${Object.keys(config.targets).join(", ")}`,
    });
  }

  // 5. The version.
  const definitionHash = runbookHash(runbook);
  const versions = input.store?.runbookVersions(runbook.name) ?? [];
  const last = versions.at(-1);
  const version: DrPlan["version"] = {
    changed: last?.definitionHash !== definitionHash,
    versions: versions.length,
  };
  if (last !== undefined && last.definitionHash !== definitionHash)
    version.previousHash = last.definitionHash;
  if (version.changed && input.store !== undefined) {
    version.id = input.store.recordRunbookVersion({
      runbook: runbook.name,
      definitionHash,
      time: now,
      definition: JSON.parse(JSON.stringify(runbook)) as Record<string, unknown>,
    }).id;
    version.versions++;
  } else if (last !== undefined) version.id = last.id;

  // 2. The copies, one choice per dataset (a dataset two services restore is chosen once).
  const chosen = new Map<string, Omit<DatasetChoice, "source" | "to">>();
  const choose = async (dataset: string): Promise<Omit<DatasetChoice, "source" | "to">> => {
    let choice = chosen.get(dataset);
    if (choice === undefined) {
      choice = await chooseCopy(input, dataset, access, now);
      chosen.set(dataset, choice);
    }
    return choice;
  };

  // What the runbook's last passing DR drill measured, per service: restores and readiness.
  const measured = lastDrMeasurements(input.store, runbook.name);

  const waves: DrPlan["waves"] = [];
  for (const [i, names] of runbookWaves(runbook).entries()) {
    const services: PlannedService[] = [];
    for (const name of names) {
      const service = runbook.services[name]!;
      const datasets: DatasetChoice[] = [];
      for (const r of service.restore) {
        const c = await choose(r.dataset);
        const past = measured.get(name)?.restores.get(r.dataset);
        const estimate =
          past !== undefined && c.bytes !== undefined && past.bytes > 0
            ? {
                estimateMs: Math.ceil(past.durationMs * Math.max(1, c.bytes / past.bytes)),
                estimateBasis: "dr drill" as const,
              }
            : c.estimateMs !== undefined
              ? { estimateMs: c.estimateMs + RESTORE_OVERHEAD_MS, estimateBasis: "drill throughput" as const }
              : {};
        const { estimateMs: _throughputOnly, ...rest } = c;
        void _throughputOnly;
        datasets.push({
          ...rest,
          ...estimate,
          ...(r.source !== undefined ? { source: r.source } : {}),
          to: describeTo(r.to),
        });
      }
      const estimates = datasets.map((d) => d.estimateMs);
      const readinessMs =
        measured.get(name)?.readinessMs ??
        (service.start !== undefined || service.health.length > 0 ? READINESS_ALLOWANCE_MS : 0);
      services.push({
        name,
        dependsOn: service.dependsOn,
        datasets,
        readinessMs,
        ...(estimates.every((e) => e !== undefined)
          ? { estimateMs: estimates.reduce((a, b) => a + b, 0) + readinessMs + stepWaits(service) }
          : {}),
      });
    }
    const known = services.map((s) => s.estimateMs);
    waves.push({
      wave: i + 1,
      services,
      ...(known.every((e) => e !== undefined) ? { estimateMs: Math.max(0, ...known) } : {}),
    });
  }

  // 3. The estimate: a recovery starts as this plan did, by opening the copies, so that time counts too.
  const planningMs = clock.now().getTime() - now.getTime();
  const waveEstimates = waves.map((w) => w.estimateMs);
  const estimateMs = waveEstimates.every((e) => e !== undefined)
    ? planningMs +
      waveEstimates.reduce((a, b) => a + b, 0) +
      [...runbook.before, ...runbook.after].reduce((a, s) => a + (s.type === "wait" ? s.ms : 0), 0)
    : undefined;

  // 4. What would fail.
  for (const w of waves) {
    for (const s of w.services) {
      for (const d of s.datasets) problems.push(...copyProblems(input, s.name, d, now));
    }
  }
  const seen = new Set<string>();
  for (const [service, program, why] of programsNeeded(config, runbook)) {
    const key = `${service}\0${program}`;
    if (seen.has(key)) continue;
    seen.add(key);
    if (!onPath(program, input.env)) {
      problems.push({
        severity: "error",
        ...(service !== "" ? { service } : {}),
        message: `${program} is not installed (not on PATH), and ${why} needs it`,
        remedy: `install ${program}, or give its full path in the runbook`,
      });
    }
  }
  if (input.checkPorts !== false) {
    for (const s of Object.values(runbook.services)) {
      for (const port of s.ports) {
        if (await portInUse(port)) {
          problems.push({
            severity: "warning",
            service: s.name,
            message: `port ${port} of ${s.name} is in use on this host`,
            remedy:
              "a failover here would collide with what listens there: stop it first (a dr drill runs isolated and is not affected)",
          });
        }
      }
    }
  }
  if (estimateMs !== undefined && runbook.rtoMs !== undefined && estimateMs > runbook.rtoMs) {
    problems.push({
      severity: "warning",
      message: `the estimated recovery takes ${formatDuration(estimateMs)}, beyond the RTO of ${runbook.rto ?? formatDuration(runbook.rtoMs)}`,
      remedy: "restore from a faster copy, split the datasets, or revise the RTO",
    });
  }
  if (estimateMs === undefined) {
    problems.push({
      severity: "warning",
      message:
        "the recovery time cannot be estimated: a copy to restore from has no measured drill throughput",
      remedy: "run `bulwark drill -c CONFIG --dataset NAME --target TARGET` for the copies named above",
    });
  }
  return {
    runbook: runbook.name,
    time: now.toISOString(),
    definitionHash,
    version,
    waves,
    planningMs,
    ...(estimateMs !== undefined ? { estimateMs } : {}),
    ...(runbook.rtoMs !== undefined ? { rto: runbook.rto, rtoMs: runbook.rtoMs } : {}),
    ready: problems.every((p) => p.severity !== "error"),
    problems: problems.map((p) => ({ ...p, message: scrub(p.message, secrets) })),
  };
}

/**
 * Per service, what the runbook's last passing DR drill measured: each dataset's restore (duration and
 * bytes) and the time from its start to its last check passing.
 */
function lastDrMeasurements(
  store: DrPlanStore | undefined,
  runbook: string,
): Map<string, { restores: Map<string, { durationMs: number; bytes: number }>; readinessMs?: number }> {
  const out = new Map<
    string,
    { restores: Map<string, { durationMs: number; bytes: number }>; readinessMs?: number }
  >();
  const run = store?.drRuns?.({ runbook, mode: "drill", limit: 20 }).find((r) => r.status === "pass");
  const timeline = (run?.details as { timeline?: unknown } | undefined)?.timeline;
  if (!Array.isArray(timeline)) return out;
  const entries = timeline as {
    service?: unknown;
    kind?: unknown;
    dataset?: unknown;
    bytes?: unknown;
    durationMs?: unknown;
    offsetMs?: unknown;
  }[];
  for (const e of entries) {
    if (typeof e.service !== "string" || typeof e.durationMs !== "number" || typeof e.offsetMs !== "number")
      continue;
    let m = out.get(e.service);
    if (m === undefined) out.set(e.service, (m = { restores: new Map() }));
    if (e.kind === "restore" && typeof e.dataset === "string" && typeof e.bytes === "number") {
      m.restores.set(e.dataset, { durationMs: e.durationMs, bytes: e.bytes });
    }
  }
  for (const [service, m] of out) {
    const mine = entries.filter((e) => e.service === service && typeof e.offsetMs === "number");
    const start = mine.find((e) => e.kind === "start");
    const lastCheck = mine.filter((e) => e.kind === "health").at(-1);
    const from = start !== undefined ? (start.offsetMs as number) - (start.durationMs as number) : undefined;
    if (lastCheck !== undefined) {
      const begin = from ?? (lastCheck.offsetMs as number) - (lastCheck.durationMs as number);
      m.readinessMs = Math.max(0, (lastCheck.offsetMs as number) - begin);
    } else if (start !== undefined) m.readinessMs = start.durationMs as number;
  }
  return out;
}

/** The targets holding copies of a dataset, in job order (primary, then copies). */
function datasetTargets(config: BulwarkConfig, dataset: string): string[] {
  const names: string[] = [];
  for (const job of Object.values(config.jobs)) {
    if (job.dataset !== dataset) continue;
    for (const t of [job.primary, ...job.copies]) if (!names.includes(t)) names.push(t);
  }
  return names;
}

function throughputOf(drill: DrillRecord | undefined): number | undefined {
  if (drill?.status !== "pass") return undefined;
  const restore = (drill.details as { restore?: { bytesPerSecond?: unknown } } | undefined)?.restore;
  const bps = restore?.bytesPerSecond;
  return typeof bps === "number" && bps > 0 ? bps : undefined;
}

async function chooseCopy(
  input: DrPlanInput,
  dataset: string,
  access: TargetAccess,
  now: Date,
): Promise<Omit<DatasetChoice, "source" | "to">> {
  const { config } = input;
  const names = input.fromTarget !== undefined ? [input.fromTarget] : datasetTargets(config, dataset);
  const ranked = names
    .map((name, order) => {
      const drill = input.store?.latestDrill(dataset, name);
      return { name, order, drill, bps: throughputOf(drill) };
    })
    .sort((a, b) => (b.bps ?? -1) - (a.bps ?? -1) || a.order - b.order);
  const passedOver: { target: string; reason: string }[] = [];
  const ranking = ranked.map((c) => ({
    target: c.name,
    ...(c.bps !== undefined ? { bytesPerSecond: c.bps } : {}),
  }));
  const definition = config.datasets[dataset]!;
  for (const c of ranked) {
    const target = config.targets[c.name];
    if (target === undefined) continue;
    let repo;
    try {
      repo = await openTargetRepository(target, access, { readOnly: true });
    } catch (err) {
      passedOver.push({
        target: c.name,
        reason: `unreachable: ${scrub(errorMessage(err), access.secrets ?? [])}`,
      });
      continue;
    }
    try {
      const all = await loadAllSnapshots(repo, () => undefined);
      const before = input.before;
      const snapshots =
        before === undefined ? all : all.filter((s) => new Date(s.time).getTime() <= before.getTime());
      const latest = latestOf(snapshots, datasetPaths(definition), dataset);
      if (latest === undefined) {
        passedOver.push({
          target: c.name,
          reason: `holds no snapshot of the dataset${before !== undefined ? ` taken at or before ${before.toISOString()}` : ""}`,
        });
        continue;
      }
      const bytes = latest.summary?.totalBytes;
      const drill =
        c.drill !== undefined ? { time: c.drill.time.toISOString(), status: c.drill.status } : undefined;
      return {
        dataset,
        target: c.name,
        snapshot: latest.id,
        snapshotTime: latest.time,
        hostname: latest.hostname,
        rpoMs: Math.max(0, now.getTime() - new Date(latest.time).getTime()),
        ...(bytes !== undefined ? { bytes } : {}),
        ...(c.bps !== undefined ? { bytesPerSecond: c.bps } : {}),
        ...(drill !== undefined ? { drill } : {}),
        ...(c.bps !== undefined && bytes !== undefined
          ? { estimateMs: Math.ceil((bytes / c.bps) * 1000) }
          : {}),
        passedOver,
        ranking,
      };
    } catch (err) {
      passedOver.push({
        target: c.name,
        reason: `snapshots unreadable: ${scrub(errorMessage(err), access.secrets ?? [])}`,
      });
    } finally {
      await repo.backend.close().catch(() => undefined);
    }
  }
  return { dataset, passedOver, ranking };
}

function copyProblems(input: DrPlanInput, service: string, d: DatasetChoice, now: Date): PlanProblem[] {
  const out: PlanProblem[] = [];
  const at = { service, dataset: d.dataset };
  if (d.target === undefined) {
    out.push({
      severity: "error",
      ...at,
      message: `no copy of ${d.dataset} can be restored${d.passedOver.length > 0 ? `: ${d.passedOver.map((p) => `${p.target} ${p.reason}`).join("; ")}` : ": the dataset has no copy"}`,
      remedy: "make a copy reachable (network, credentials), or back the dataset up to another target",
    });
    return out;
  }
  for (const p of d.passedOver) {
    out.push({
      severity: "warning",
      ...at,
      message: `copy ${p.target} ${p.reason}; ${d.dataset} falls back to ${d.target}`,
      remedy: `check ${p.target}: \`bulwark snapshots -c CONFIG -r ${p.target}\``,
    });
  }
  if (d.drill === undefined) {
    out.push({
      severity: "warning",
      ...at,
      message: `${d.dataset} has never been drilled on ${d.target}: its restore time is unknown`,
      remedy: `bulwark drill -c CONFIG --dataset ${d.dataset} --target ${d.target}`,
    });
  } else if (d.drill.status === "fail") {
    out.push({
      severity: "error",
      ...at,
      message: `the last drill of ${d.dataset} on ${d.target} (${d.drill.time}) failed`,
      remedy: `see \`bulwark report drill --dataset ${d.dataset}\`, fix the cause, drill again`,
    });
  } else {
    const every = policyDrillEvery(input.config, d.dataset);
    if (every !== undefined && now.getTime() - new Date(d.drill.time).getTime() > every) {
      out.push({
        severity: "warning",
        ...at,
        message: `the last drill of ${d.dataset} on ${d.target} (${d.drill.time}) is older than the policy's drills.every`,
        remedy: `bulwark drill -c CONFIG --dataset ${d.dataset} --target ${d.target}`,
      });
    }
  }
  return out;
}

function policyDrillEvery(config: BulwarkConfig, dataset: string): number | undefined {
  const every = Object.values(config.jobs)
    .filter((j) => j.dataset === dataset)
    .map((j) => config.policies[j.policy]?.drills?.everyMs)
    .filter((e): e is number => e !== undefined);
  return every.length > 0 ? Math.min(...every) : undefined;
}

function describeTo(to: RunbookService["restore"][number]["to"]): string {
  if ("directory" in to) return `directory ${to.directory}`;
  if ("postgres" in to) return `postgres ${to.postgres}`;
  if ("sqlite" in to) return `sqlite ${to.sqlite}`;
  return `command ${to.command.command.join(" ")}`;
}

function stepWaits(service: RunbookService): number {
  return [...service.before, ...service.after].reduce((a, s) => a + (s.type === "wait" ? s.ms : 0), 0);
}

/** The program a command runs: argv[0], or for `sh -c SCRIPT` the script's first word when it is a plain name. */
function programOf(c: CommandSpec): string {
  const [first, flag, script] = c.command;
  if (first === "sh" && flag === "-c" && script !== undefined) {
    const word = /^\s*(?:exec\s+)?([A-Za-z0-9_./-]+)/.exec(script)?.[1];
    if (word !== undefined && !/^[A-Z_]+=/.test(word)) return word;
  }
  return first ?? "sh";
}

/** [service ("" for the runbook's own steps), program, what needs it] for every program the runbook runs. */
function programsNeeded(config: BulwarkConfig, runbook: Runbook): [string, string, string][] {
  const out: [string, string, string][] = [];
  const steps = (service: string, list: Runbook["before"]): void => {
    for (const s of list) {
      if (s.type === "command") out.push([service, programOf(s), `step "${s.name}"`]);
      if (s.type === "notify" && s.command) out.push([service, programOf(s.command), `step "${s.name}"`]);
    }
  };
  steps("", [...runbook.before, ...runbook.after]);
  for (const s of Object.values(runbook.services)) {
    steps(s.name, [...s.before, ...s.after]);
    if (s.start?.kind === "command") out.push([s.name, programOf(s.start), `starting ${s.name}`]);
    if (s.start?.kind === "systemd") out.push([s.name, "systemctl", `starting ${s.name}`]);
    if (s.stop?.kind === "command") out.push([s.name, programOf(s.stop), `stopping ${s.name}`]);
    for (const c of s.health) {
      if (c.type === "command") out.push([s.name, programOf(c), `health check "${c.name}"`]);
      if (c.type === "sql" && c.postgres !== undefined)
        out.push([s.name, "psql", `health check "${c.name}"`]);
    }
    for (const r of s.restore) {
      if ("command" in r.to) out.push([s.name, programOf(r.to.command), `restoring ${r.dataset}`]);
      if ("postgres" in r.to) {
        const source = config.datasets[r.dataset]?.sources.find(
          (src): src is Extract<Source, { type: "postgres" }> =>
            src.type === "postgres" && src.name === r.source,
        );
        out.push([
          s.name,
          source?.all === true ? "psql" : "pg_restore",
          `restoring ${r.dataset} into PostgreSQL`,
        ]);
        out.push([s.name, "psql", `restoring ${r.dataset} into PostgreSQL`]);
      }
    }
  }
  return out;
}

/** Whether a program is found: a path is checked as it is, a name on PATH. */
export function onPath(program: string, env: Readonly<Record<string, string | undefined>>): boolean {
  const executable = (p: string): boolean => {
    try {
      accessSync(p, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (program.includes("/")) return executable(program);
  return (env.PATH ?? "").split(delimiter).some((dir) => dir !== "" && executable(join(dir, program)));
}

/** Whether something listens on (or holds) 127.0.0.1:port: binding it fails with EADDRINUSE. */
export function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "EADDRINUSE"));
    server.listen({ port, host: "127.0.0.1", exclusive: true }, () => server.close(() => resolve(false)));
  });
}
