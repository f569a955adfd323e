/**
 * The `postgres` source: a logical, consistent dump of one database plus the cluster's globals (roles,
 * tablespaces), streamed into the repository without a temporary copy; the restore to a server; the
 * validator that proves a dump restores and answers queries.
 *
 * Backup (two virtual files under /sources/<name>/, both command sources, see command.ts):
 * 1. `db.pgdump`: `pg_dump -Fc` (custom format: compressed, restorable table by table, in parallel by
 *    pg_restore -j from a file). pg_dump reads in one REPEATABLE READ transaction: the dump is the database
 *    at one moment while writers go on.
 * 2. `globals.sql`: `pg_dumpall --globals-only`: roles (with their password hashes: the repository is
 *    encrypted) and tablespaces, which a database dump does not contain.
 * 3. Either program failing (unreachable server, wrong password, missing database) fails the backup with its
 *    standard error, and no snapshot is saved.
 * Connection: a URL (`postgresql://user@host:port/db`) or libpq environment variables (PGHOST, PGPORT,
 * PGUSER, PGDATABASE); the password by reference (the name of an environment variable, or a file), handed to
 * the programs as PGPASSWORD in their environment, never on a command line.
 *
 * Restore (restorePostgres): CREATE DATABASE on the target server (refused if it exists), then pg_restore
 * from the stored dump (streamed into its standard input), then a report of the tables and their row counts.
 * Validation (validatePostgres): restore into a scratch database, run the configured queries, compare with
 * the expected results, drop the scratch database.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { BulwarkError, errorMessage } from "../core/errors.js";
import type { Repository } from "../repository/repository.js";
import type { VirtualFile } from "../snapshot/archiver.js";
import { commandSource, findNode, pipeToCommand, readSnapshotFile } from "./command.js";
import { run } from "./process.js";

/** A secret by reference: an environment variable's name or a file's path (its first line is used). */
export type PasswordRef = { env: string } | { file: string };

export interface PostgresConnection {
  /** `postgresql://user@host:port/database?sslmode=...`; without it, libpq's environment variables apply. */
  url?: string;
  /** The database to dump (overrides the URL's); default: the URL's, PGDATABASE, then libpq's default. */
  database?: string;
  password?: PasswordRef;
  /** Base environment for the programs (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** Directory of pg_dump, pg_dumpall, pg_restore and psql (default: PATH). */
  bindir?: string;
}

export interface PostgresSourceOptions extends PostgresConnection {
  /** The source's name: its files are /sources/<name>/db.pgdump and /sources/<name>/globals.sql. */
  name: string;
  /** Also store `pg_dumpall --globals-only` (default true). */
  globals?: boolean;
  /** Kill a dump running longer than this (default: no limit). */
  timeoutMs?: number;
  /** Where the source's directory is in the snapshot (default "/sources"). */
  root?: string;
}

export const DUMP_FILE = "db.pgdump";
export const GLOBALS_FILE = "globals.sql";

/** The virtual files of a postgres source (see the module comment). */
export function postgresSource(options: PostgresSourceOptions): VirtualFile[] {
  const dir = `${options.root ?? "/sources"}/${options.name}`;
  const env = connectionEnv(options);
  const database = options.database;
  const target = options.url ?? (database === undefined ? undefined : conninfo(database));
  const files: VirtualFile[] = [
    commandSource({
      path: `${dir}/${DUMP_FILE}`,
      command: [
        program(options, "pg_dump"),
        "--format=custom",
        "--no-password",
        ...(target === undefined ? [] : [`--dbname=${withDatabase(target, database)}`]),
      ],
      env,
      label: `pg_dump of source ${options.name}`,
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
    }),
  ];
  if (options.globals ?? true) {
    files.push(
      commandSource({
        path: `${dir}/${GLOBALS_FILE}`,
        command: [
          program(options, "pg_dumpall"),
          "--globals-only",
          "--no-password",
          ...(options.url === undefined ? [] : [`--dbname=${options.url}`]),
        ],
        env,
        label: `pg_dumpall --globals-only of source ${options.name}`,
        ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      }),
    );
  }
  return files;
}

export interface RestorePostgresOptions {
  /** The target database: a URL naming it, or (with libpq environment variables) its name. */
  target: string;
  password?: PasswordRef;
  env?: NodeJS.ProcessEnv;
  bindir?: string;
  /** The database to connect to for CREATE DATABASE (default "postgres"). */
  maintenanceDatabase?: string;
  /** Run globals.sql first (roles); errors in it (a role that exists) are reported, not fatal. Default false. */
  globals?: boolean;
  /** Keep the dump's owners and privileges (needs the roles; default: restore as the connecting user). */
  keepOwners?: boolean;
  /** Receives progress lines. */
  log?: (line: string) => void;
}

export interface RestorePostgresReport {
  database: string;
  bytes: number;
  /** Tables of the restored database with their exact row counts, "schema.table" in name order. */
  tables: { table: string; rows: number }[];
  durationMs: number;
}

/**
 * Restores a postgres source (its directory in the snapshot, e.g. "/sources/shop") into a new database:
 * CREATE DATABASE, pg_restore from the stored dump, then counts the rows of every table for the report.
 */
export async function restorePostgres(
  repo: Repository,
  snapshot: { tree: string },
  sourceDir: string,
  options: RestorePostgresOptions,
): Promise<RestorePostgresReport> {
  const started = Date.now();
  const dumpPath = `${sourceDir.replace(/\/+$/, "")}/${DUMP_FILE}`;
  await findNode(repo, snapshot.tree, dumpPath); // a wrong path fails before anything is created
  const env = connectionEnv(options);
  const database = databaseOf(options.target, env);
  const admin = withDatabase(options.target, options.maintenanceDatabase ?? "postgres");
  await psql(options, env, admin, `CREATE DATABASE ${quoteIdent(database)};`, `CREATE DATABASE ${database}`);
  options.log?.(`created database ${database}`);
  if (options.globals) {
    const globalsPath = `${sourceDir.replace(/\/+$/, "")}/${GLOBALS_FILE}`;
    const chunks: Buffer[] = [];
    for await (const c of readSnapshotFile(repo, snapshot.tree, globalsPath)) chunks.push(c);
    try {
      await run(
        "psql (globals)",
        program(options, "psql"),
        ["-X", "-q", "--no-password", `--dbname=${admin}`],
        {
          env,
          input: Buffer.concat(chunks),
        },
      );
    } catch (err) {
      options.log?.(`warning: some globals were not restored: ${errorMessage(err)}`);
    }
  }
  const target = withDatabase(options.target, database);
  const { bytes } = await pipeToCommand(
    readSnapshotFile(repo, snapshot.tree, dumpPath),
    [
      program(options, "pg_restore"),
      "--exit-on-error",
      "--no-password",
      ...(options.keepOwners ? [] : ["--no-owner", "--no-privileges"]),
      `--dbname=${target}`,
    ],
    { env, stdout: "ignore", label: `pg_restore into ${database}` },
  );
  options.log?.(`restored ${bytes} bytes of dump into ${database}`);
  const tables = await countRows(options, env, target);
  return { database, bytes, tables, durationMs: Date.now() - started };
}

export interface PostgresCheck {
  /** A query whose result, as `psql -At` prints it (rows on lines, columns joined by "|"), trimmed... */
  sql: string;
  /** ...must equal this. */
  expect: string;
}

export interface PostgresValidation {
  ok: boolean;
  database: string;
  restore?: RestorePostgresReport;
  checks: { name: string; ok: boolean; expected: string; actual: string }[];
}

export interface ValidatePostgresOptions {
  /** The scratch server: a URL (its database part is ignored) or, with libpq environment variables, "". */
  server: string;
  checks: PostgresCheck[];
  password?: PasswordRef;
  env?: NodeJS.ProcessEnv;
  bindir?: string;
  /** Keep the scratch database for inspection (default: dropped). */
  keep?: boolean;
}

/**
 * Proves a stored dump usable: restores it into a scratch database `bulwark_validate_<random>` on the given
 * server, runs the checks, and drops the database again. A failed restore is a failed validation (thrown).
 */
export async function validatePostgres(
  repo: Repository,
  snapshot: { tree: string },
  sourceDir: string,
  options: ValidatePostgresOptions,
): Promise<PostgresValidation> {
  const database = `bulwark_validate_${randomBytes(6).toString("hex")}`;
  const env = connectionEnv(options);
  const target = options.server.includes("://") ? withDatabase(options.server, database) : database;
  const admin = withDatabase(options.server.includes("://") ? options.server : "", "postgres");
  const result: PostgresValidation = { ok: false, database, checks: [] };
  try {
    result.restore = await restorePostgres(repo, snapshot, sourceDir, {
      ...options,
      target,
      ...(options.env ? { env: options.env } : {}),
    });
    const dbConn = withDatabase(target, database);
    for (const check of options.checks) {
      let actual: string;
      try {
        actual = (await psql(options, env, dbConn, check.sql, "validation query")).trim();
      } catch (err) {
        actual = `error: ${errorMessage(err)}`;
      }
      result.checks.push({
        name: check.sql,
        ok: actual === check.expect.trim(),
        expected: check.expect,
        actual,
      });
    }
    result.ok = result.checks.every((c) => c.ok);
    return result;
  } finally {
    if (!options.keep) {
      await psql(
        options,
        env,
        admin,
        `DROP DATABASE IF EXISTS ${quoteIdent(database)} WITH (FORCE);`,
        "DROP DATABASE",
      ).catch(() => undefined);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------

/** The programs' environment: the base one plus PGPASSWORD from the reference. */
export function connectionEnv(options: {
  password?: PasswordRef;
  env?: NodeJS.ProcessEnv;
}): NodeJS.ProcessEnv {
  const env = { ...(options.env ?? process.env) };
  const ref = options.password;
  if (!ref) return env;
  if ("env" in ref) {
    const value = (options.env ?? process.env)[ref.env];
    if (value === undefined || value === "") {
      throw new BulwarkError("CONFIG_INVALID", `the password variable ${ref.env} is not set`, {
        hint: `export ${ref.env}=... or give the password in a file`,
      });
    }
    env.PGPASSWORD = value;
  } else {
    let text: string;
    try {
      text = readFileSync(ref.file, "utf8");
    } catch (err) {
      throw new BulwarkError(
        "CONFIG_INVALID",
        `cannot read the password file ${ref.file}: ${errorMessage(err)}`,
      );
    }
    env.PGPASSWORD = text.split(/\r?\n/)[0] ?? "";
  }
  return env;
}

function program(options: { bindir?: string }, name: string): string {
  return options.bindir ? `${options.bindir.replace(/\/+$/, "")}/${name}` : name;
}

/** The connection with `database` in place of the one it names: a URL's path, or a conninfo's dbname. */
export function withDatabase(target: string, database: string | undefined): string {
  if (database === undefined) return target;
  if (target.includes("://")) {
    const url = new URL(target);
    url.pathname = "/" + encodeURIComponent(database);
    return url.toString();
  }
  return conninfo(database);
}

function databaseOf(target: string, env: NodeJS.ProcessEnv): string {
  const name = target.includes("://")
    ? decodeURIComponent(new URL(target).pathname.replace(/^\//, ""))
    : target || env.PGDATABASE || "";
  if (name === "") {
    throw new BulwarkError("USAGE", `${redact(target)} names no database`, {
      hint: "give the database to restore into, e.g. postgresql://host/newdb",
    });
  }
  return name;
}

/** A libpq keyword/value connection string naming one database. */
function conninfo(database: string): string {
  return `dbname='${database.replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`;
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** A URL without its password, for messages. */
export function redact(target: string): string {
  if (!target.includes("://")) return target;
  try {
    const url = new URL(target);
    if (url.password) url.password = "***";
    return url.toString();
  } catch {
    return "(unparsable URL)";
  }
}

async function psql(
  options: { bindir?: string },
  env: NodeJS.ProcessEnv,
  dbname: string,
  sql: string,
  what: string,
): Promise<string> {
  return run(
    `psql (${what})`,
    program(options, "psql"),
    ["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "--no-password", `--dbname=${dbname}`],
    // A trailing meta-command (\gexec) ends the statement itself; anything else gets its semicolon.
    { env, input: (/\\[a-z]+$/.test(sql.trim()) ? sql.trim() : sql.trim().replace(/;?$/, ";")) + "\n" },
  );
}

async function countRows(
  options: { bindir?: string },
  env: NodeJS.ProcessEnv,
  dbname: string,
): Promise<{ table: string; rows: number }[]> {
  const out = await psql(
    options,
    env,
    dbname,
    `SELECT format('SELECT %L || ''|'' || count(*) FROM %I.%I', schemaname || '.' || tablename, schemaname, tablename)
       FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1 \\gexec`,
    "row counts",
  );
  return out
    .split("\n")
    .filter((l) => l.includes("|"))
    .map((l) => {
      const at = l.lastIndexOf("|");
      return { table: l.slice(0, at), rows: Number(l.slice(at + 1)) };
    })
    .sort((a, b) => (a.table < b.table ? -1 : a.table > b.table ? 1 : 0));
}
