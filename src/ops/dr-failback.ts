/**
 * `bulwark dr failback RUN` (issue 13, docs/design.md §24): after a failover, the services go back to where
 * the datasets came from, with what they did at the recovery site. Three parts, one resumable run (its state
 * in `dr_state` like a failover's, units saved as they start and end, `dr resume` after a crash):
 *
 *  1. `stop/NAME`: the failover's services are stopped, later waves first, by what its run recorded (the
 *     process group and the leader's start time, or the systemd unit); their ports must then be free, so a
 *     check can never pass against the recovery site's instance.
 *  2. `backup/DATASET`: a new snapshot of each dataset the runbook restored, read from where the failover put
 *     it: the files sources' paths P from the restore directory D as D+P (recorded as P), a SQLite source from
 *     its restored file, a PostgreSQL source dumped from the database it was restored into. Stored on the copy
 *     the failover restored from (or `--to-target`), tagged `failback`, with the original host name, so it is
 *     the dataset's newest snapshot. The services are stopped first: nothing is written after it (RPO 0).
 *  3. The runbook again, by the one executor (./dr-execute.ts), with every restore sent to the original place
 *     (the files sources' paths, the SQLite source's path, the PostgreSQL source's server and database) and
 *     every mention of a recovery place in commands and checks rewritten to the original one; the same steps,
 *     approvals and health checks; the services started there and left running.
 *
 * Nothing is overwritten: what is at an original place (the old production's data) is first put aside, by
 * rename, as NAME.before-failback-RUN (a database as NAME_before_failback_XXXXXX); the decision is saved before
 * the rename, so a resumed run knows what at the place is its own half-done work. A directory is restored
 * into a staging directory beside its place and renamed in. The recovery site's data is left as it is.
 *
 * Sources no restore of the runbook names are not in the failback snapshot (the next `bulwark run` of the job
 * makes a complete one). A restore into a command, or of a database source as files, cannot be read back: such
 * a runbook is refused before anything runs.
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { hostname as osHostname } from "node:os";
import { basename, dirname, join, resolve } from "node:path";

import type { BulwarkConfig, Dataset, Runbook, ServiceRestore, Source } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import { BulwarkError } from "../core/errors.js";
import type { EventSink } from "../core/events.js";
import { stopRecordedService } from "../dr/service.js";
import { RepoLock } from "../repository/lock.js";
import { WorkerPool } from "../repository/worker-pool.js";
import { normalisePaths } from "../snapshot/archiver.js";
import { SOURCES_ROOT } from "../sources/dataset.js";
import { connectionEnv, restorePostgres } from "../sources/postgres.js";
import { run } from "../sources/process.js";
import { backupOperation } from "./backup.js";
import { catalogRecorder, type RecordingCatalog } from "./catalog-recorder.js";
import type { PreludeUnit } from "./dr-execute.js";
import { portInUse, type DrPlan } from "./dr-plan.js";
import { placeRewriter, sourcePath } from "./dr-restore.js";
import { restoreFiles, restoreSourceTo, snapshotToRestore } from "./restore.js";
import { openTargetRepository, type TargetAccess } from "./targets.js";

/** What a failback run keeps beyond a failover's state. */
export interface FailbackState {
  /** The failover run it brings back. */
  failover: string;
  toTarget?: string;
  /** Per dataset: the snapshot made from the recovered places, where it is, what it read. */
  backups: Record<string, { target: string; snapshot?: string; bytes?: number; from: string[] }>;
  /** Per original place: where what was there went (no `aside`: nothing was there). Decided once, saved. */
  places: Record<string, { kind: "directory" | "sqlite" | "postgres"; aside?: string }>;
}

/** One dataset's failback: the dataset as read from the recovery site. */
export interface DatasetFailback {
  dataset: string;
  /** The dataset with its sources pointed at the recovered places (no hooks: they belong to production). */
  readFrom: Dataset;
  /** The files sources' paths are read under this directory. */
  readRoot?: string;
  from: string[];
  target: string;
  hostname?: string;
}

/**
 * What failback reads back for each dataset, from the failover's plan and the runbook; throws, naming every
 * restore it cannot read back, before anything runs.
 */
export function planFailback(
  config: BulwarkConfig,
  runbook: Runbook,
  plan: DrPlan,
  toTarget: string | undefined,
): DatasetFailback[] {
  const problems: string[] = [];
  const byDataset = new Map<string, { restore: ServiceRestore; where: string }[]>();
  for (const service of Object.values(runbook.services)) {
    service.restore.forEach((r, i) => {
      const list = byDataset.get(r.dataset) ?? [];
      list.push({ restore: r, where: `runbooks.${runbook.name}.services.${service.name}.restore[${i}]` });
      byDataset.set(r.dataset, list);
    });
  }
  if (toTarget !== undefined && config.targets[toTarget] === undefined) {
    throw new BulwarkError("USAGE", `unknown target ${JSON.stringify(toTarget)}`, {
      hint: `the targets are ${Object.keys(config.targets).join(", ")}`,
    });
  }
  const out: DatasetFailback[] = [];
  for (const [name, restores] of byDataset) {
    const dataset = config.datasets[name]!;
    const sources: Source[] = [];
    const from: string[] = [];
    let readRoot: string | undefined;
    const whole = restores.find((x) => x.restore.source === undefined && "directory" in x.restore.to);
    if (whole !== undefined && "directory" in whole.restore.to) {
      readRoot = resolve(whole.restore.to.directory);
      for (const s of dataset.sources) if (s.type === "files") sources.push(s);
      if (sources.length > 0) from.push(`files under ${readRoot}`);
    }
    for (const { restore: r, where } of restores) {
      if (r.source === undefined) continue;
      const source = dataset.sources.find((s) => s.type !== "files" && s.name === r.source);
      if (source === undefined || source.type === "files") continue;
      if (source.type === "sqlite" && "sqlite" in r.to) {
        sources.push({ ...source, path: r.to.sqlite, ...noHooks });
        from.push(`sqlite ${source.name} from ${r.to.sqlite}`);
      } else if (source.type === "postgres" && "postgres" in r.to) {
        const url = new URL(r.to.postgres);
        const database =
          decodeURIComponent(url.pathname.replace(/^\//, "")) || source.database || source.name;
        const password = r.to.password;
        const recovered: Source = {
          type: "postgres",
          name: source.name,
          database,
          all: false,
          host: url.hostname.replace(/^\[|\]$/g, "") || "127.0.0.1",
          ...(url.port !== "" ? { port: Number(url.port) } : {}),
          ...(url.username !== "" ? { user: decodeURIComponent(url.username) } : {}),
          ...(password !== undefined ? { password } : {}),
          format: source.format,
          jobs: source.jobs,
          globals: false,
          ...(source.timeoutMs !== undefined ? { timeoutMs: source.timeoutMs } : {}),
        };
        sources.push(recovered);
        from.push(`postgres ${source.name} from database ${database} of ${url.host}`);
      } else {
        const kind = Object.keys(r.to)[0];
        problems.push(
          `${where}: ${source.type} source ${source.name} was restored to a ${kind}, which failback cannot read back ` +
            "(it reads directories of whole datasets, SQLite files and PostgreSQL databases)",
        );
      }
    }
    const choice = plan.waves
      .flatMap((w) => w.services.flatMap((s) => s.datasets))
      .find((d) => d.dataset === name && d.target !== undefined);
    if (sources.length === 0) continue;
    out.push({
      dataset: name,
      readFrom: { ...dataset, sources, ...noHooks },
      ...(readRoot !== undefined ? { readRoot } : {}),
      from,
      target: toTarget ?? choice?.target ?? "",
      ...(choice?.hostname !== undefined ? { hostname: choice.hostname } : {}),
    });
  }
  if (problems.length > 0) {
    throw new BulwarkError("USAGE", `runbook ${runbook.name} cannot fail back: ${problems.join("; ")}`, {
      hint: "restore those sources to a SQLite file or a PostgreSQL URL in the runbook, or bring them back by hand",
    });
  }
  return out;
}

const noHooks = { hooks: undefined } as const;

export interface FailbackContext {
  config: BulwarkConfig;
  runbook: Runbook;
  access: TargetAccess;
  clock: Clock;
  env: Readonly<Record<string, string | undefined>>;
  events?: EventSink;
  store: RecordingCatalog;
  runId: string;
  state: FailbackState;
  /** The failback run's plan: its choices take the failback snapshots as they are made. */
  plan: DrPlan;
  /** The failover's recorded services. */
  stopped: Record<string, { pid?: number; startTicks?: number }>;
  /** The failover's waves, for the order of the stops. */
  failoverPlan: DrPlan;
  /** Saves the run's state (a decision about a place is saved before it is acted on). */
  save: () => void;
  /** The datasets' snapshots: set as each backup ends. */
  onBackup: (dataset: string, target: string, snapshot: string, time: string) => void;
}

/** Parts 1 and 2 of the module header, as units the executor runs before the runbook. */
export function failbackPrelude(ctx: FailbackContext, datasets: DatasetFailback[]): PreludeUnit[] {
  const units: PreludeUnit[] = [];
  const vars = { BULWARK_DR_RUN: ctx.runId, BULWARK_DR_MODE: "failback" };
  for (const wave of [...ctx.failoverPlan.waves].reverse()) {
    for (const planned of wave.services) {
      const service = ctx.runbook.services[planned.name]!;
      units.push({
        id: `stop/${service.name}`,
        kind: "stop",
        service: service.name,
        name: `stop ${service.name} at the recovery site`,
        run: async () => {
          const message = await stopRecordedService(service, ctx.stopped[service.name], {
            env: ctx.env,
            vars: { ...vars, BULWARK_DR_SERVICE: service.name },
          });
          const busy: number[] = [];
          // Only a service the runbook starts owns its ports (a database server it restores into does not).
          const owned = service.start !== undefined ? service.ports : [];
          for (const port of owned) if (await portInUse(port)) busy.push(port);
          if (busy.length > 0) {
            throw new Error(
              `${message}; yet port${busy.length === 1 ? "" : "s"} ${busy.join(", ")} ${busy.length === 1 ? "is" : "are"} still in use`,
            );
          }
          return { message };
        },
        next: "stop what still runs or listens there by hand",
      });
    }
  }
  for (const d of datasets) {
    units.push({
      id: `backup/${d.dataset}`,
      kind: "backup",
      dataset: d.dataset,
      name: `back up ${d.dataset} to ${d.target}`,
      run: async () => {
        const { snapshot, bytes, time } = await backUpRecovered(ctx, d);
        ctx.state.backups[d.dataset] = { target: d.target, snapshot, bytes, from: d.from };
        ctx.onBackup(d.dataset, d.target, snapshot, time);
        return { message: `snapshot ${snapshot.slice(0, 8)} from ${d.from.join(", ")}`, bytes };
      },
      next: `check the target (\`bulwark check -c CONFIG -r ${d.target}\`) and the recovered data`,
    });
  }
  return units;
}

async function backUpRecovered(
  ctx: FailbackContext,
  d: DatasetFailback,
): Promise<{ snapshot: string; bytes: number; time: string }> {
  const target = ctx.config.targets[d.target]!;
  const repo = await openTargetRepository(target, ctx.access);
  const recorder = catalogRecorder(ctx.store, () => undefined);
  try {
    const lock = await RepoLock.acquire(repo, false, ctx.clock);
    const pool = new WorkerPool(repo);
    try {
      const outcome = await backupOperation({
        repo,
        pool,
        clock: ctx.clock,
        events: (e) => {
          const placed = { ...e, target: d.target, dataset: d.dataset };
          recorder(placed);
          if (e.type !== "snapshot-saved") ctx.events?.(placed);
        },
        what: {
          kind: "dataset",
          dataset: d.readFrom,
          ...(d.readRoot !== undefined ? { readRoot: d.readRoot } : {}),
        },
        env: ctx.env,
        hostname: d.hostname ?? osHostname(),
        tags: ["failback"],
      });
      const skipped = outcome.snapshot.skipped ?? [];
      if (skipped.length > 0) {
        throw new Error(
          `${skipped.length} entries could not be read, first ${skipped[0]!.path}: ${skipped[0]!.error} ` +
            `(snapshot ${outcome.id.slice(0, 8)} is partial)`,
        );
      }
      return {
        snapshot: outcome.id,
        bytes: outcome.snapshot.summary?.totalBytes ?? 0,
        time: outcome.snapshot.time,
      };
    } finally {
      await pool.close();
      await lock.release().catch(() => undefined);
    }
  } finally {
    await repo.backend.close().catch(() => undefined);
  }
}

/** Part 3: one restore entry of a service, from the failback snapshot to the original place. */
export async function restoreToOriginal(
  ctx: FailbackContext,
  r: ServiceRestore,
  retry: boolean,
): Promise<number> {
  const backup = ctx.state.backups[r.dataset];
  if (backup?.snapshot === undefined) throw new Error(`no failback snapshot of ${r.dataset}`);
  const dataset = ctx.config.datasets[r.dataset]!;
  const source =
    r.source === undefined
      ? undefined
      : dataset.sources.find((s) => s.type !== "files" && s.name === r.source)!;
  const repo = await openTargetRepository(ctx.config.targets[backup.target]!, ctx.access, { readOnly: true });
  let lock: RepoLock | undefined;
  try {
    lock = await RepoLock.acquire(repo, false, ctx.clock);
    const snapshot = await snapshotToRestore(repo, backup.snapshot);
    if (source === undefined) {
      const paths = normalisePaths(
        dataset.sources.flatMap((s) => (s.type === "files" ? s.paths : [])),
      ).filter((p) => snapshot.paths.includes(p));
      let bytes = 0;
      const pool = new WorkerPool(repo);
      try {
        for (const place of paths) {
          if (place === "/")
            throw new Error("a dataset of / cannot be put back in place: restore it by hand");
          await putAside(ctx, place, "directory", retry);
          // Restored beside the place (same file system), then renamed in: the place is whole or absent.
          const staging = join(dirname(place), `.bulwark-failback-${ctx.runId}`);
          await rm(staging, { recursive: true, force: true });
          await mkdir(staging, { recursive: true, mode: 0o700 });
          const out = await restoreFiles({
            repo,
            pool,
            clock: ctx.clock,
            snapshot,
            target: staging,
            include: [place],
          });
          if (out.errors.length > 0) {
            throw new Error(
              `${out.errors.length} entries could not be restored, first ${out.errors[0]!.path}: ${out.errors[0]!.error}`,
            );
          }
          await rename(join(staging, place), place);
          await rm(staging, { recursive: true, force: true });
          bytes += out.bytes;
        }
      } finally {
        await pool.close();
      }
      return bytes;
    }
    if (source.type === "sqlite") {
      const place = resolve(source.path);
      await putAside(ctx, place, "sqlite", retry);
      const staging = join(dirname(place), `.${basename(place)}.failback-${ctx.runId}`);
      await rm(staging, { force: true });
      await mkdir(dirname(place), { recursive: true });
      const report = await restoreSourceTo(
        repo,
        snapshot,
        sourcePath(source),
        { kind: "sqlite", path: staging },
        ctx.env,
      );
      if (!report.ok) throw new Error(report.lines.join("; "));
      await rename(staging, place);
      return report.bytes;
    }
    if (source.type === "postgres") {
      const database = pgDatabaseOf(source, r);
      const env = pgEnv(source, ctx.env);
      await putAsideDatabase(ctx, source, database, env, retry);
      const report = await restorePostgres(repo, snapshot, `${SOURCES_ROOT}/${source.name}`, {
        target: database,
        env,
        ...(source.password !== undefined ? { password: source.password } : {}),
      });
      return report.bytes;
    }
    throw new Error(`a ${source.type} source cannot be brought back`);
  } finally {
    await lock?.release().catch(() => undefined);
    await repo.backend.close().catch(() => undefined);
  }
}

/**
 * What is at a place goes aside by rename before anything is restored there. The decision (aside or nothing
 * there) is saved first; on a later attempt a place that exists is this run's own half-done work.
 */
async function putAside(
  ctx: FailbackContext,
  place: string,
  kind: "directory" | "sqlite",
  retry: boolean,
): Promise<void> {
  let decided = ctx.state.places[place];
  if (decided === undefined) {
    decided = existsSync(place) ? { kind, aside: `${place}.before-failback-${ctx.runId}` } : { kind };
    ctx.state.places[place] = decided;
    ctx.save();
  }
  if (decided.aside !== undefined && !existsSync(decided.aside) && existsSync(place)) {
    await rename(place, decided.aside);
    return;
  }
  if (existsSync(place)) {
    if (!retry && decided.aside === undefined) {
      throw new Error(`${place} appeared while the failback ran: it is not overwritten`);
    }
    await rm(place, { recursive: true, force: true });
  }
}

async function putAsideDatabase(
  ctx: FailbackContext,
  source: Extract<Source, { type: "postgres" }>,
  database: string,
  env: NodeJS.ProcessEnv,
  retry: boolean,
): Promise<void> {
  const key = `postgres ${source.host ?? ""}:${source.port ?? ""}/${database}`;
  const sql = (statement: string): Promise<unknown> =>
    run(
      "psql (failback)",
      "psql",
      ["-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password", "--dbname=postgres"],
      {
        env: connectionEnv({ env, ...(source.password ? { password: source.password } : {}) }),
        input: statement,
      },
    );
  const ident = (v: string): string => `"${v.replaceAll('"', '""')}"`;
  const literal = (v: string): string => `'${v.replaceAll("'", "''")}'`;
  let decided = ctx.state.places[key];
  if (decided === undefined) {
    const aside = `${database.slice(0, 40)}_before_failback_${randomBytes(3).toString("hex")}`;
    // Whether the database exists is known only to the server: the choice is saved, the rename is
    // conditional, and a database that was not there leaves the aside name unused.
    decided = { kind: "postgres", aside };
    ctx.state.places[key] = decided;
    ctx.save();
  }
  const aside = decided.aside!;
  await sql(
    `DO $$ BEGIN
  IF EXISTS (SELECT 1 FROM pg_database WHERE datname = ${literal(database)})
     AND NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = ${literal(aside)}) THEN
    EXECUTE 'ALTER DATABASE ' || quote_ident(${literal(database)}) || ' RENAME TO ' || quote_ident(${literal(aside)});
  END IF;
END $$;\n`,
  );
  // Now a database at the name can only be this run's own: one an interrupted attempt half-restored.
  if (retry) await sql(`DROP DATABASE IF EXISTS ${ident(database)};\n`);
}

function pgDatabaseOf(source: Extract<Source, { type: "postgres" }>, r: ServiceRestore): string {
  if (source.database !== undefined) return source.database;
  if ("postgres" in r.to) {
    const name = decodeURIComponent(new URL(r.to.postgres).pathname.replace(/^\//, ""));
    if (name !== "") return name;
  }
  return source.name;
}

function pgEnv(
  source: Extract<Source, { type: "postgres" }>,
  env: Readonly<Record<string, string | undefined>>,
): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { ...env };
  if (source.host !== undefined) out.PGHOST = source.host;
  if (source.port !== undefined) out.PGPORT = String(source.port);
  if (source.user !== undefined) out.PGUSER = source.user;
  return out;
}

/** The original PostgreSQL URL of a source, as a runbook's commands would name it. */
function originalUrl(
  source: Extract<Source, { type: "postgres" }>,
  r: ServiceRestore,
  env: Readonly<Record<string, string | undefined>>,
): string {
  const url = new URL("postgres://localhost");
  const user = source.user ?? env.PGUSER;
  if (user !== undefined) url.username = encodeURIComponent(user);
  url.hostname = source.host ?? env.PGHOST ?? "127.0.0.1";
  const port = source.port ?? (env.PGPORT !== undefined ? Number(env.PGPORT) : undefined);
  if (port !== undefined) url.port = String(port);
  url.pathname = "/" + encodeURIComponent(pgDatabaseOf(source, r));
  return url.toString();
}

/** Where a restore of a dataset (or of one of its sources) goes back to, as reports name it. */
export function originalPlace(
  config: BulwarkConfig,
  choice: { dataset: string; source?: string; to: string },
  env: Readonly<Record<string, string | undefined>>,
): string {
  const dataset = config.datasets[choice.dataset]!;
  if (choice.source === undefined)
    return `files ${dataset.sources.flatMap((s) => (s.type === "files" ? s.paths : [])).join(", ")}`;
  const source = dataset.sources.find((s) => s.type !== "files" && s.name === choice.source);
  if (source?.type === "sqlite") return `sqlite ${resolve(source.path)}`;
  if (source?.type === "postgres") {
    const r = {
      dataset: choice.dataset,
      source: source.name,
      to: { postgres: choice.to.replace(/^postgres /, "") },
    };
    return `postgres ${originalUrl(source, r, env)}`;
  }
  return choice.to;
}

/**
 * Every recovery place of the runbook mapped to its original: a whole dataset's directory D to "/" (so D+P
 * reads P), a SQLite file to its source's path, a PostgreSQL URL to the source's server and database.
 */
export function failbackRewriter(
  config: BulwarkConfig,
  runbook: Runbook,
  env: Readonly<Record<string, string | undefined>>,
): (s: string) => string {
  const places = new Map<string, string>();
  const urls = new Map<string, string>();
  for (const service of Object.values(runbook.services)) {
    for (const r of service.restore) {
      const source = config.datasets[r.dataset]!.sources.find(
        (s) => s.type !== "files" && s.name === r.source,
      );
      if ("directory" in r.to && r.source === undefined) places.set(resolve(r.to.directory), "/");
      else if ("sqlite" in r.to && source?.type === "sqlite")
        places.set(resolve(r.to.sqlite), resolve(source.path));
      else if ("postgres" in r.to && source?.type === "postgres")
        urls.set(r.to.postgres, originalUrl(source, r, env));
    }
  }
  const paths = placeRewriter(places);
  const sorted = [...urls.keys()].sort((a, b) => b.length - a.length);
  const escape = (p: string): string => p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  // A URL ends where a URL's own characters do: postgres://h/shop is not a prefix of postgres://h/shop2.
  const pattern =
    sorted.length > 0 ? new RegExp(`(${sorted.map(escape).join("|")})(?![A-Za-z0-9_.%-])`, "g") : undefined;
  return (s) => paths(pattern !== undefined ? s.replace(pattern, (u: string) => urls.get(u)!) : s);
}
