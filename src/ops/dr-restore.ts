/**
 * Restoring one `restore` entry of a runbook's service (docs/design.md §24), for `dr drill` and `dr failover`:
 * from the copy and snapshot the plan chose, under a shared lock on that copy.
 *  - a directory: the snapshot's files (or one source's) under it, as `bulwark restore --target` does;
 *  - a SQLite file, a command's standard input: the source, as `bulwark restore --to-sqlite|--pipe-to` does;
 *  - PostgreSQL: in a drill, into a throwaway cluster where the runbook's URL points as the services see it
 *    (never into production); in a failover, into the configured server, as `bulwark restore --to-postgres`
 *    does (a new database; one a killed attempt left half-restored is dropped first).
 * In a drill every path goes through the sandbox's rewriting (`pathRewriter`), and commands run in the drill's
 * namespace.
 */
import { mkdir } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";

import type { BulwarkConfig, Runbook, RunbookService, SecretRef, Source } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import { inNetns } from "../dr/health.js";
import { recordCluster } from "../dr/leftovers.js";
import { serviceEnv } from "../dr/service.js";
import { RepoLock } from "../repository/lock.js";
import type { Repository } from "../repository/repository.js";
import { WorkerPool } from "../repository/worker-pool.js";
import { restoreToCommand } from "../sources/command.js";
import { SOURCES_ROOT } from "../sources/dataset.js";
import { startThrowawayCluster, type ThrowawayCluster } from "../sources/pg-cluster.js";
import { DATABASES_DIR, databaseEntryName, restorePostgres, withDatabase } from "../sources/postgres.js";
import { childEnv, run } from "../sources/process.js";
import { rewriteCommand } from "./dr-execute.js";
import { restoreFiles, restoreSourceTo, snapshotToRestore } from "./restore.js";
import { readSecret } from "./secrets.js";
import { openTargetRepository, type TargetAccess } from "./targets.js";

export interface RestoreWhere {
  config: BulwarkConfig;
  access: TargetAccess;
  clock: Clock;
  env: Readonly<Record<string, string | undefined>>;
  rewrite: (s: string) => string;
  netns?: string;
  portMap: ReadonlyMap<number, number>;
  vars: Record<string, string>;
  /** A drill's: PostgreSQL goes into throwaway clusters, noted in the sandbox. */
  drill?: { clusters: ThrowawayCluster[]; sandbox: string };
  /** The unit ran before and was interrupted: what it left half-done is cleared first (PostgreSQL). */
  retry?: boolean;
}

/** Where a source is stored in the snapshot (src/sources/dataset.ts planDatasetBackup). */
export function sourcePath(source: Source): string {
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

/** Restores one `restore` entry of a service (see the module header); returns the bytes restored. */
export async function restoreEntry(
  r: RunbookService["restore"][number],
  choice: { target?: string; snapshot?: string } | undefined,
  where: RestoreWhere,
): Promise<number> {
  const { config, access, rewrite, netns } = where;
  if (choice?.target === undefined || choice.snapshot === undefined)
    throw new Error("the plan found no copy");
  const target = config.targets[choice.target]!;
  const repo = await openTargetRepository(target, access, { readOnly: true });
  let lock: RepoLock | undefined;
  try {
    lock = await RepoLock.acquire(repo, false, where.clock);
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
          clock: where.clock,
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
        where.env,
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
          env: serviceEnv(spec, { env: where.env, vars: where.vars }),
          stdout: "ignore",
          label: `restore command of ${r.dataset}`,
        },
      );
      return bytes;
    }
    return where.drill !== undefined
      ? await restoreIntoThrowawayCluster(repo, snapshot, source, to, where, where.drill)
      : await restoreIntoServer(repo, snapshot, source, to, where);
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
  repo: Repository,
  snapshot: { tree: string },
  source: Source,
  to: { postgres: string; password?: SecretRef },
  where: RestoreWhere,
  drill: NonNullable<RestoreWhere["drill"]>,
): Promise<number> {
  if (source.type !== "postgres")
    throw new Error(`a ${source.type} source cannot be restored into PostgreSQL`);
  const url = new URL(to.postgres);
  const urlPort = url.port === "" ? 5432 : Number(url.port);
  const database = decodeURIComponent(url.pathname.replace(/^\//, "")) || source.database || source.name;
  const user = decodeURIComponent(url.username) || "postgres";
  const password = to.password !== undefined ? await readSecret(to.password, where.env) : undefined;
  where.access.secrets?.push(...(password !== undefined ? [password] : []));
  const port = where.netns !== undefined ? urlPort : where.portMap.get(urlPort);
  const cluster = await startThrowawayCluster({
    env: { ...where.env },
    ...(where.netns !== undefined ? { netns: where.netns } : {}),
    ...(port !== undefined ? { port } : {}),
    ...(where.netns !== undefined && password === undefined ? { trustLoopback: true } : {}),
  });
  drill.clusters.push(cluster);
  recordCluster(drill.sandbox, cluster.dir);
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
  const report = await restorePostgres(repo, snapshot, postgresPath(source, database), {
    target: database,
    env: cluster.env,
    bindir: cluster.bindir,
  });
  return report.bytes;
}

function postgresPath(source: Extract<Source, { type: "postgres" }>, database: string): string {
  return source.all
    ? `${SOURCES_ROOT}/${source.name}/${DATABASES_DIR}/${databaseEntryName(database)}`
    : sourcePath(source);
}

/**
 * A failover's PostgreSQL restore: into the configured server, a new database (CREATE DATABASE refuses one
 * that exists, so live data is never overwritten). A retry after an interrupted attempt first drops the
 * database that attempt created.
 */
async function restoreIntoServer(
  repo: Repository,
  snapshot: { tree: string },
  source: Source,
  to: { postgres: string; password?: SecretRef },
  where: RestoreWhere,
): Promise<number> {
  if (source.type !== "postgres")
    throw new Error(`a ${source.type} source cannot be restored into PostgreSQL`);
  const url = new URL(to.postgres);
  const database = decodeURIComponent(url.pathname.replace(/^\//, "")) || source.database || source.name;
  const env: NodeJS.ProcessEnv = { ...where.env };
  if (to.password !== undefined) {
    const password = await readSecret(to.password, where.env);
    where.access.secrets?.push(password);
    env.PGPASSWORD = password;
  }
  if (where.retry === true) {
    const quoted = `"${database.replaceAll('"', '""')}"`;
    await run(
      "psql (drop the half-restored database)",
      "psql",
      [
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "--no-password",
        `--dbname=${withDatabase(to.postgres, "postgres")}`,
      ],
      {
        env: childEnv(env, { prefixes: ["PG"] }),
        input: `DROP DATABASE IF EXISTS ${quoted};\n`,
      },
    );
  }
  const report = await restorePostgres(repo, snapshot, postgresPath(source, database), {
    target: to.postgres,
    env,
  });
  return report.bytes;
}

/**
 * The rewriting of step 2: every path a restore writes to, and every mention of it (or of a path below it) in
 * a string, to the same path under `root`.
 */
export function pathRewriter(runbook: Runbook, root: string): (s: string) => string {
  const places = new Map<string, string>();
  for (const s of Object.values(runbook.services)) {
    for (const r of s.restore) {
      if ("directory" in r.to) places.set(resolve(r.to.directory), "");
      if ("sqlite" in r.to) places.set(resolve(r.to.sqlite), "");
    }
  }
  for (const place of places.keys()) places.set(place, join(root, place));
  return placeRewriter(places);
}

/**
 * Every mention of a place (an absolute path) in a string, or of a path below it, rewritten to the place's
 * new path; a place mapped to "/" drops out of the paths below it (D/srv/x reads /srv/x). Longest places
 * first, so /srv/app/data is not rewritten as /srv/app.
 */
export function placeRewriter(places: ReadonlyMap<string, string>): (s: string) => string {
  const sorted = [...places.keys()].filter((p) => p !== "/").sort((a, b) => b.length - a.length);
  if (sorted.length === 0) return (s) => s;
  const escape = (p: string): string => p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  // A place counts where it starts a path: at the start or after a character that cannot be in one
  // (space, quote, =, :), and ends at the end, at a / or at such a character.
  const pattern = new RegExp(`(^|[\\s"'=:;(])(${sorted.map(escape).join("|")})(?=$|[/\\s"';:)])`, "g");
  return (s) =>
    s.replace(pattern, (_m, before: string, place: string, offset: number, whole: string) => {
      const to = places.get(place)!;
      const below = whole[offset + before.length + place.length] === "/";
      return `${before}${to === "/" && below ? "" : to}`;
    });
}
