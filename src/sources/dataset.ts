/**
 * A config dataset as a backup: what `bulwark run` (src/ops/run-job.ts) hands to the archiver, and the hooks it
 * runs around it. The CLI's `--source` flags (./cli.ts) make the same virtual files from a command line.
 *
 * planDatasetBackup: the `files` sources give the paths and exclude patterns; every other source becomes
 * virtual files under /sources (sqlite: NAME.sqlite; postgres: NAME/db.pgdump or NAME/db.dir/, globals.sql,
 * with `all` NAME/databases/DATABASE/...; command: NAME/FILENAME). Nothing runs yet: a producer starts when
 * the archiver reaches its file. Problems a config check cannot see (a password file unreadable by now) are
 * thrown here, before any hook runs.
 *
 * runWithDatasetHooks: the dataset's hooks outermost, then each source's in the order written, around the
 * backup (withNestedHooks: an `after` runs whenever its `before` was started, also when the backup or a later
 * `before` failed). Hooks get BULWARK_DATASET and, for a source's hooks, BULWARK_SOURCE.
 *
 * Every program started gets a scrubbed environment (childEnv, ./process.ts): a command source or a hook
 * only the variables its `env:` list names beyond the harmless ones; pg_dump libpq's PG* variables and the
 * password its reference names (./postgres.ts connectionEnv).
 */
import type { Dataset, HookConfig, Source } from "../config/types.js";
import { BulwarkError } from "../core/errors.js";
import { normalisePaths, type VirtualFile } from "../snapshot/archiver.js";
import { commandSource } from "./command.js";
import { withNestedHooks, type Hooks } from "./hooks.js";
import { childEnv } from "./process.js";
import { DATABASES_DIR, DUMP_DIR, postgresSource } from "./postgres.js";
import { sqliteSource } from "./sqlite.js";

/** Where sources other than files are stored in a snapshot: /sources/NAME (docs/design.md). */
export const SOURCES_ROOT = "/sources";

export interface DatasetBackupPlan {
  /** The file sources' paths, normalised as the archiver records them (normalisePaths). */
  paths: string[];
  /** The file sources' exclude patterns. */
  excludes: string[];
  /** The other sources, as files under /sources. */
  virtualFiles: VirtualFile[];
  /** One line per source for the user: "postgres app -> /sources/app/db.pgdump", ... */
  descriptions: string[];
}

type Env = Readonly<Record<string, string | undefined>>;

/** The paths, excludes and virtual files of a dataset's backup (see the module comment). */
export function planDatasetBackup(dataset: Dataset, env: Env): DatasetBackupPlan {
  const paths: string[] = [];
  const excludes: string[] = [];
  const virtualFiles: VirtualFile[] = [];
  const descriptions: string[] = [];
  const processEnv: NodeJS.ProcessEnv = { ...env };
  for (const source of dataset.sources) {
    const timeout =
      source.type !== "files" && source.timeoutMs !== undefined ? { timeoutMs: source.timeoutMs } : {};
    switch (source.type) {
      case "files":
        paths.push(...source.paths);
        for (const e of source.excludes) if (!excludes.includes(e)) excludes.push(e);
        descriptions.push(`files ${source.paths.join(", ")}`);
        break;
      case "sqlite": {
        const path = `${SOURCES_ROOT}/${source.name}.sqlite`;
        virtualFiles.push(sqliteSource({ path, database: source.path, ...timeout }));
        descriptions.push(`sqlite ${source.name} -> ${path}`);
        break;
      }
      case "command": {
        const path = `${SOURCES_ROOT}/${source.name}/${source.filename}`;
        virtualFiles.push(
          commandSource({
            path,
            command: source.command,
            env: childEnv(env, { pass: source.env ?? [] }),
            label: `command of source ${source.name}`,
            ...timeout,
          }),
        );
        descriptions.push(`command ${source.name} -> ${path}`);
        break;
      }
      case "postgres": {
        if (!source.all && source.database === undefined) {
          throw new BulwarkError("CONFIG_INVALID", `postgres source ${source.name} names no database`);
        }
        // The connection settings go to libpq as its variables, over those of the environment.
        const pgEnv: NodeJS.ProcessEnv = { ...processEnv };
        if (source.host !== undefined) pgEnv.PGHOST = source.host;
        if (source.port !== undefined) pgEnv.PGPORT = String(source.port);
        if (source.user !== undefined) pgEnv.PGUSER = source.user;
        const files = postgresSource({
          name: source.name,
          root: SOURCES_ROOT,
          env: pgEnv,
          ...(source.database !== undefined ? { database: source.database } : {}),
          ...(source.all ? { all: true } : {}),
          ...(source.password ? { password: source.password } : {}),
          format: source.format,
          jobs: source.jobs,
          globals: source.globals,
          ...timeout,
        });
        virtualFiles.push(...files);
        const what = source.all ? "every database" : `database ${source.database}`;
        const jobs = source.jobs > 1 ? `, ${source.jobs} jobs` : "";
        const shown = files.map((f) =>
          f.path.endsWith(`/${DUMP_DIR}`) || f.path.endsWith(`/${DATABASES_DIR}`) ? `${f.path}/` : f.path,
        );
        descriptions.push(
          `postgres ${source.name} (${what}, ${source.format} format${jobs}) -> ${shown.join(", ")}`,
        );
        break;
      }
    }
  }
  return { paths: paths.length > 0 ? normalisePaths(paths) : [], excludes, virtualFiles, descriptions };
}

/**
 * Plans the dataset's backup, then runs `fn` with the plan between the dataset's hooks and each source's:
 * every `before` in order (dataset first, then the sources as written), `fn`, then every `after` in reverse
 * order; an `after` runs whenever its `before` was started (also when `fn` or a later `before` failed); each
 * hook has its timeout; `log` receives the hooks' output lines.
 */
export async function runWithDatasetHooks<T>(
  dataset: Dataset,
  env: Env,
  fn: (plan: DatasetBackupPlan) => Promise<T>,
  log?: (line: string) => void,
): Promise<T> {
  const plan = planDatasetBackup(dataset, env);
  const sets: Hooks[] = [];
  const add = (config: HookConfig | undefined, label: string, extra: Record<string, string>): void => {
    if (!config || (config.before === undefined && config.after === undefined)) return;
    const hook = (command: string | undefined) =>
      command === undefined
        ? undefined
        : { command, ...(config.timeoutMs !== undefined ? { timeoutMs: config.timeoutMs } : {}) };
    const before = hook(config.before);
    const after = hook(config.after);
    sets.push({
      label,
      env,
      passEnv: config.env ?? [],
      vars: { BULWARK_DATASET: dataset.name, ...extra },
      ...(before ? { before } : {}),
      ...(after ? { after } : {}),
      ...(log ? { log } : {}),
    });
  };
  add(dataset.hooks, `dataset ${dataset.name}`, {});
  dataset.sources.forEach((s, i) =>
    add(s.hooks, sourceLabel(s, i), s.type === "files" ? {} : { BULWARK_SOURCE: s.name }),
  );
  return withNestedHooks(sets, () => fn(plan));
}

/** "source app" or, for a files source (which has no name), "files source 1". */
function sourceLabel(source: Source, index: number): string {
  return source.type === "files" ? `files source ${index + 1}` : `source ${source.name}`;
}
