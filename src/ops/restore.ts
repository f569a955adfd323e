/**
 * Restore: the one implementation behind `bulwark restore` (and, next, drills and DR runbooks), in two
 * forms:
 *  - `restoreFiles`: a snapshot (or some of its paths) into a directory; a file whose data is missing or
 *    damaged is removed, not left half-written, and listed;
 *  - `restoreSourceTo`: one application source of a snapshot (/sources/NAME) into a command's stdin, a
 *    SQLite path (then integrity-checked) or a new PostgreSQL database.
 * Both return what they did as data and report progress through events. The caller holds a shared lock.
 */
import { resolve } from "node:path";

import type { Clock } from "../core/clock.js";
import { BulwarkError } from "../core/errors.js";
import type { EventSink } from "../core/events.js";
import type { Repository } from "../repository/repository.js";
import type { WorkerPool } from "../repository/worker-pool.js";
import { restore, type RestoreResult } from "../snapshot/restorer.js";
import {
  findSnapshot,
  type OnDamagedSnapshot,
  type SnapshotFilter,
  type SnapshotWithId,
} from "../snapshot/snapshot.js";
import { restoreToCommand } from "../sources/command.js";
import { childEnv } from "../sources/process.js";
import { restorePostgres, type PasswordRef } from "../sources/postgres.js";
import { restoreSqlite, validateSqlite } from "../sources/sqlite.js";

export type Env = Readonly<Record<string, string | undefined>>;

/**
 * Resolves a snapshot reference (id, prefix, `latest`) after loading the index, as every restore needs.
 * `filter` narrows `latest` (a host).
 */
export async function snapshotToRestore(
  repo: Repository,
  ref: string,
  filter: SnapshotFilter = {},
  onDamaged?: OnDamagedSnapshot,
): Promise<SnapshotWithId> {
  await repo.loadIndex();
  return findSnapshot(repo, ref, filter, onDamaged);
}

export interface RestoreFilesInput {
  repo: Repository;
  pool: WorkerPool;
  clock: Clock;
  events?: EventSink;
  snapshot: SnapshotWithId;
  /** The directory to restore into (made absolute here). */
  target: string;
  /** Snapshot paths to restore with what is below them; all when empty. */
  include?: string[];
}

export interface RestoreFilesOutcome extends RestoreResult {
  snapshot: string;
  target: string;
  durationMs: number;
}

export async function restoreFiles(input: RestoreFilesInput): Promise<RestoreFilesOutcome> {
  const started = input.clock.now().getTime();
  // An empty target would resolve to the working directory and restore over whatever is there.
  if (input.target === "") {
    throw new BulwarkError("USAGE", "the restore target is empty", {
      hint: "name the directory to restore into, e.g. --target ./restored (. for the current one)",
    });
  }
  if ((input.include ?? []).includes("")) {
    throw new BulwarkError("USAGE", "an empty --include path", {
      hint: "name a path of the snapshot, e.g. --include /home/ann (see `bulwark ls`)",
    });
  }
  const target = resolve(input.target);
  let files = 0;
  let bytesTotal = 0;
  let errors = 0;
  const result = await restore(input.repo, input.pool, input.snapshot.tree, {
    target,
    include: input.include ?? [],
    reporter: {
      planned: (f, b) => {
        files = f;
        bytesTotal = b;
      },
      progress: (bytes) =>
        input.events?.({
          type: "progress",
          time: input.clock.now(),
          kind: "restore",
          items: 0,
          itemsTotal: files,
          bytes,
          bytesTotal,
          errors,
        }),
      error: (path, error) => {
        errors++;
        input.events?.({
          type: "message",
          time: input.clock.now(),
          level: "error",
          message: `${path}: ${error}`,
        });
      },
    },
  });
  return {
    snapshot: input.snapshot.id,
    target,
    ...result,
    durationMs: input.clock.now().getTime() - started,
  };
}

/** Where a source goes. */
export type SourceDestination =
  /** `passEnv`: variables passed through to the command by name, beyond the scrubbed set (childEnv). */
  | { kind: "pipe"; command: string; passEnv?: string[] }
  | { kind: "sqlite"; path: string }
  | {
      kind: "postgres";
      url: string;
      password?: PasswordRef;
      /** Parallel pg_restore jobs for a directory-format dump. */
      jobs?: number;
      /** Also run the source's globals.sql (roles). */
      globals?: boolean;
    };

export interface SourceRestoreReport {
  kind: SourceDestination["kind"];
  source: string;
  bytes: number;
  /** Lines for the user: what was restored where, and the checks. */
  lines: string[];
  /** Extra data for --json (tables and row counts, validation). */
  details?: unknown;
  ok: boolean;
}

export async function restoreSourceTo(
  repo: Repository,
  snapshot: { tree: string },
  source: string | undefined,
  destination: SourceDestination,
  env: Env,
): Promise<SourceRestoreReport> {
  if (!source) {
    throw new BulwarkError("USAGE", "name the source to restore with --source-path", {
      hint: "e.g. --source-path /sources/shop (see `bulwark ls` or the snapshot's paths)",
    });
  }
  const processEnv: NodeJS.ProcessEnv = { ...env };
  switch (destination.kind) {
    case "pipe": {
      // The user's own command, often psql or pg_restore: the scrubbed environment and libpq's variables,
      // never this process's password, tokens or keys (docs/design.md §19).
      const { bytes } = await restoreToCommand(repo, snapshot, source, destination.command, {
        env: childEnv(env, { prefixes: ["PG"], pass: destination.passEnv ?? [] }),
      });
      return {
        kind: "pipe",
        source,
        bytes,
        ok: true,
        lines: [`piped ${source} (${bytes} bytes) into \`${destination.command}\``],
      };
    }
    case "sqlite": {
      const { bytes } = await restoreSqlite(repo, snapshot, source, destination.path);
      const validation = await validateSqlite(destination.path);
      const check = validation.checks[0]!;
      return {
        kind: "sqlite",
        source,
        bytes,
        ok: validation.ok,
        details: validation,
        lines: [
          `restored ${source} to ${destination.path} (${bytes} bytes)`,
          `integrity_check: ${check.actual}`,
        ],
      };
    }
    case "postgres": {
      const lines: string[] = [];
      const report = await restorePostgres(repo, snapshot, source, {
        target: destination.url,
        env: processEnv,
        ...(destination.password ? { password: destination.password } : {}),
        ...(destination.jobs !== undefined ? { jobs: destination.jobs } : {}),
        ...(destination.globals ? { globals: true } : {}),
        log: (line) => lines.push(line),
      });
      for (const t of report.tables) lines.push(`  ${t.table}: ${t.rows} rows`);
      return { kind: "postgres", source, bytes: report.bytes, ok: true, details: report, lines };
    }
  }
}
