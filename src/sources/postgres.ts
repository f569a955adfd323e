/**
 * The `postgres` source: a logical, consistent dump of one database (or of every database) plus the cluster's
 * globals (roles, tablespaces); the restore to a server; the validator that proves a dump restores and
 * answers queries.
 *
 * Backup (virtual files under /sources/<name>/, see command.ts and the archiver's virtual directories):
 * 1. `db.pgdump`: `pg_dump -Fc` (custom format: compressed, restorable table by table), streamed into the
 *    repository through a FIFO without a temporary copy. pg_dump reads in one REPEATABLE READ transaction (with
 *    -j, in synchronized snapshots): the dump is the database at one moment while writers go on.
 *    Or `db.dir/`: `pg_dump -Fd -j N`, the directory format, the only one pg_dump writes in parallel. It
 *    needs a directory on disk: it is written into a private temporary directory (0700), its files are
 *    stored once pg_dump succeeded, and the directory is removed however the backup ends.
 * 2. `globals.sql`: `pg_dumpall --globals-only`: roles (with their password hashes: the repository is
 *    encrypted) and tablespaces, which a database dump does not contain.
 * 3. With `all`, every database that accepts connections (templates excepted) is dumped, one after the other
 *    (one dump at a time holds the server's load and the temporary space to one database), each under
 *    `databases/<database>/` as in 1; the list is read from the server when the backup reaches the source.
 * 4. Any program failing (unreachable server, wrong password, missing database) fails the backup with its
 *    standard error, and no snapshot is saved.
 * Connection: a URL (`postgresql://user@host:port/db`) or libpq environment variables (PGHOST, PGPORT,
 * PGUSER, PGDATABASE); the password by reference (the name of an environment variable, or a file), handed to
 * the programs as PGPASSWORD in their environment, never on a command line.
 *
 * Restore (restorePostgres): CREATE DATABASE on the target server (refused if it exists), then pg_restore
 * from the stored dump (a custom-format dump streamed into its standard input; a directory-format dump
 * written to a private temporary directory first and restored by `pg_restore -Fd -j N`), then a report of the
 * tables and their row counts.
 * Validation (validatePostgres): restore into a scratch database on a given server, or into a throwaway
 * cluster started for the purpose (./pg-cluster.ts), run the configured queries, compare with the expected
 * results, then drop the scratch database or stop and delete the cluster.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, open, readdir, rm } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { BulwarkError, errorMessage } from "../core/errors.js";
import type { Repository } from "../repository/repository.js";
import type { OpenedVirtualDirectory, OpenedVirtualFile, VirtualFile } from "../snapshot/archiver.js";
import type { Node } from "../snapshot/tree.js";
import { loadTree } from "../snapshot/walker.js";
import { commandSource, findNode, pipeToCommand, readSnapshotFile } from "./command.js";
import { startThrowawayCluster, type ThrowawayClusterOptions } from "./pg-cluster.js";
import { childEnv, exitError, killTree, run, succeeded, trackChild, waitForExit } from "./process.js";
import { systemClock } from "../core/clock.js";

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
  /** The source's name: its files are /sources/<name>/db.pgdump (or db.dir/) and /sources/<name>/globals.sql. */
  name: string;
  /** Every database of the server, each under databases/<database>/ (instead of `database`). */
  all?: boolean;
  /** custom (default): one streamed file; directory: pg_dump -Fd through a temporary directory. */
  format?: PostgresFormat;
  /** Parallel pg_dump processes (directory format only; default 1). */
  jobs?: number;
  /** Also store `pg_dumpall --globals-only` (default true). */
  globals?: boolean;
  /** Kill a dump running longer than this (default: no limit). */
  timeoutMs?: number;
  /** Where the source's directory is in the snapshot (default "/sources"). */
  root?: string;
  /** Where the directory format's temporary directories are made (default: the system's). */
  tempDir?: string;
}

export type PostgresFormat = "custom" | "directory";

export const DUMP_FILE = "db.pgdump";
export const DUMP_DIR = "db.dir";
export const GLOBALS_FILE = "globals.sql";
/** With `all`: the directory holding one directory per database. */
export const DATABASES_DIR = "databases";

/** The virtual files of a postgres source (see the module comment). */
export function postgresSource(options: PostgresSourceOptions): VirtualFile[] {
  const dir = `${options.root ?? "/sources"}/${options.name}`;
  const env = connectionEnv(options);
  const jobs = options.jobs ?? 1;
  if (!Number.isInteger(jobs) || jobs < 1) {
    throw new BulwarkError("USAGE", `source ${options.name}: jobs must be a whole number of at least 1`);
  }
  if (jobs > 1 && options.format !== "directory") {
    throw new BulwarkError("USAGE", `source ${options.name}: parallel jobs need the directory format`, {
      hint: "pg_dump writes in parallel only with --format=directory (format: directory)",
    });
  }
  if (options.all && options.database !== undefined) {
    throw new BulwarkError("USAGE", `source ${options.name}: give either one database or all, not both`);
  }
  const files: VirtualFile[] = [
    options.all
      ? everyDatabase(options, env, `${dir}/${DATABASES_DIR}`)
      : databaseDump(options, env, options.database, (file) => `${dir}/${file}`),
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

/**
 * The dump of one database: db.pgdump streamed, or db.dir/ through a temporary directory; `at` places the
 * file's name (a path in the snapshot, or an entry's name in a virtual directory).
 */
function databaseDump(
  options: PostgresSourceOptions,
  env: NodeJS.ProcessEnv,
  database: string | undefined,
  at: (file: string) => string,
  label = `pg_dump of source ${options.name}`,
): VirtualFile {
  const target = options.url ?? (database === undefined ? undefined : conninfo(database));
  const dbname = target === undefined ? [] : [`--dbname=${withDatabase(target, database)}`];
  const timeout = options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs };
  if (options.format === "directory") {
    return {
      path: at(DUMP_DIR),
      open: () => directoryDump(options, env, dbname, label),
    };
  }
  return commandSource({
    path: at(DUMP_FILE),
    command: [program(options, "pg_dump"), "--format=custom", "--no-password", ...dbname],
    env,
    label,
    ...timeout,
  });
}

/**
 * `pg_dump -Fd -j N` into a private temporary directory; its files become the entries once it succeeded.
 * The directory goes when the archiver closes the producer, which it does however the backup ends.
 */
async function directoryDump(
  options: PostgresSourceOptions,
  env: NodeJS.ProcessEnv,
  dbname: string[],
  label: string,
): Promise<OpenedVirtualDirectory> {
  const temp = await mkdtemp(join(options.tempDir ?? tmpdir(), "bulwark-pgdump-")); // mode 0700
  const out = join(temp, "dump");
  const child = trackChild(
    spawn(
      program(options, "pg_dump"),
      ["--format=directory", `--jobs=${options.jobs ?? 1}`, `--file=${out}`, "--no-password", ...dbname],
      { stdio: ["ignore", "ignore", "pipe"], detached: true, env },
    ),
  );
  const exited = waitForExit(child, options.timeoutMs);
  const entries = exited.then(async (exit): Promise<VirtualFile[]> => {
    if (!succeeded(exit)) throw exitError(label, exit, options.timeoutMs);
    const found = await readdir(out, { withFileTypes: true });
    return found.map((entry) => {
      if (!entry.isFile()) {
        throw new BulwarkError("IO", `${label} wrote ${entry.name}, which is not a regular file`);
      }
      const path = join(out, entry.name);
      return {
        path: entry.name,
        open: (): Promise<OpenedVirtualFile> => Promise.resolve({ path, done: Promise.resolve() }),
      };
    });
  });
  entries.catch(() => undefined); // the archiver awaits it; the dump may fail before it does
  return {
    entries,
    abort: () => killTree(child, "SIGKILL"),
    close: async () => {
      killTree(child, "SIGKILL");
      await exited;
      await rm(temp, { recursive: true, force: true });
    },
  };
}

/**
 * `all`: a directory whose entries (one per database, listed from the server when the backup reaches it) each
 * hold that database's dump. The dumps take turns: a database's producer starts once the previous one was
 * stored and released, and none starts after the backup was given up.
 */
function everyDatabase(options: PostgresSourceOptions, env: NodeJS.ProcessEnv, path: string): VirtualFile {
  return {
    path,
    open: (): Promise<OpenedVirtualDirectory> => {
      let stopped = false;
      let turn = Promise.resolve();
      const listing = listDatabases(options, env);
      const entries = listing.then((databases) =>
        databases.map((database): VirtualFile => {
          const name = databaseEntryName(database);
          const dump = databaseDump(
            options,
            env,
            database,
            (file) => file,
            `pg_dump of database ${database} of source ${options.name}`,
          );
          return {
            path: name,
            open: async (): Promise<OpenedVirtualDirectory> => {
              const previous = turn;
              let release!: () => void;
              turn = new Promise<void>((resolve) => (release = resolve));
              await previous;
              if (stopped) {
                release();
                throw new BulwarkError("CANCELLED", `source ${options.name}: the backup was given up`);
              }
              // One entry, the dump itself: databases/<database>/db.pgdump (or db.dir/).
              return {
                entries: Promise.resolve([dump]),
                close: () => {
                  release();
                  return Promise.resolve();
                },
              };
            },
          };
        }),
      );
      entries.catch(() => undefined);
      return Promise.resolve({
        entries,
        abort: () => {
          stopped = true;
        },
      });
    },
  };
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
  /** Parallel pg_restore processes for a directory-format dump (default: up to 4, one per CPU). */
  jobs?: number;
  /** Where a directory-format dump is written before pg_restore reads it (default: the system's). */
  tempDir?: string;
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
  const started = systemClock.now().getTime();
  const dir = sourceDir.replace(/\/+$/, "");
  const dump = await findDump(repo, snapshot.tree, dir); // a wrong path fails before anything is created
  const env = connectionEnv(options);
  const database = databaseOf(options.target, env);
  const admin = withDatabase(options.target, options.maintenanceDatabase ?? "postgres");
  await psql(options, env, admin, `CREATE DATABASE ${quoteIdent(database)};`, `CREATE DATABASE ${database}`);
  options.log?.(`created database ${database}`);
  if (options.globals) {
    const globalsPath = await findGlobals(repo, snapshot.tree, dir);
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
  const restoreArgs = [
    program(options, "pg_restore"),
    "--exit-on-error",
    "--no-password",
    ...(options.keepOwners ? [] : ["--no-owner", "--no-privileges"]),
    `--dbname=${target}`,
  ];
  let bytes: number;
  if (dump.kind === "file") {
    ({ bytes } = await pipeToCommand(readSnapshotFile(repo, snapshot.tree, dump.path), restoreArgs, {
      env,
      stdout: "ignore",
      label: `pg_restore into ${database}`,
    }));
  } else {
    // pg_restore reads a directory-format dump only from disk: a private copy, removed whatever happens.
    const temp = await mkdtemp(join(options.tempDir ?? tmpdir(), "bulwark-pgrestore-"));
    try {
      const copy = join(temp, "dump");
      bytes = await writeSnapshotDirectory(repo, dump.node, copy);
      const jobs = options.jobs ?? Math.min(4, availableParallelism());
      await run(
        `pg_restore into ${database}`,
        restoreArgs[0]!,
        [...restoreArgs.slice(1), "--format=directory", `--jobs=${jobs}`, copy],
        { env },
      );
      options.log?.(`pg_restore ran with ${jobs} jobs`);
    } finally {
      await rm(temp, { recursive: true, force: true });
    }
  }
  options.log?.(`restored ${bytes} bytes of dump into ${database}`);
  const tables = await countRows(options, env, target);
  return { database, bytes, tables, durationMs: systemClock.now().getTime() - started };
}

/** The stored dump of a postgres source directory: db.pgdump (a file) or db.dir (a directory). */
async function findDump(
  repo: Repository,
  tree: string,
  dir: string,
): Promise<{ kind: "file"; path: string } | { kind: "dir"; node: Node }> {
  for (const name of [DUMP_FILE, DUMP_DIR]) {
    let node: Node;
    try {
      node = await findNode(repo, tree, `${dir}/${name}`);
    } catch (err) {
      if (err instanceof BulwarkError && err.code === "NOT_FOUND") continue;
      throw err;
    }
    if (name === DUMP_FILE && node.type === "file") return { kind: "file", path: `${dir}/${name}` };
    if (name === DUMP_DIR && node.type === "dir") return { kind: "dir", node };
  }
  throw new BulwarkError("NOT_FOUND", `${dir} holds no PostgreSQL dump (${DUMP_FILE} or ${DUMP_DIR}/)`, {
    hint: `name a postgres source's directory, e.g. /sources/NAME or /sources/NAME/${DATABASES_DIR}/DATABASE`,
  });
}

/** globals.sql beside the dump, or (a database of an `all` source) two levels up. */
async function findGlobals(repo: Repository, tree: string, dir: string): Promise<string> {
  const here = `${dir}/${GLOBALS_FILE}`;
  const parent = dir.slice(0, dir.lastIndexOf("/"));
  if (parent.endsWith(`/${DATABASES_DIR}`)) {
    const up = `${parent.slice(0, -DATABASES_DIR.length - 1)}/${GLOBALS_FILE}`;
    try {
      await findNode(repo, tree, here);
    } catch {
      return up;
    }
  }
  return here;
}

/** Writes the files of a stored directory below `target` (created, mode 0700); returns the bytes written. */
async function writeSnapshotDirectory(repo: Repository, node: Node, target: string): Promise<number> {
  await mkdir(target, { mode: 0o700 });
  let bytes = 0;
  for (const child of await loadTree(repo, node.subtree ?? "")) {
    const path = join(target, child.name);
    if (child.type === "dir") {
      bytes += await writeSnapshotDirectory(repo, child, path);
      continue;
    }
    if (child.type !== "file") continue;
    const file = await open(path, "wx", 0o600);
    try {
      for (const id of child.content ?? []) {
        const data = await repo.loadBlob(id, "data");
        await file.write(data);
        bytes += data.length;
      }
    } finally {
      await file.close();
    }
  }
  return bytes;
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
  /**
   * The scratch server: a URL (its database part is ignored) or, with libpq environment variables, "".
   * Without it, a throwaway cluster is started for the validation (`cluster`).
   */
  server?: string;
  /** Settings of the throwaway cluster used when there is no `server` (./pg-cluster.ts). */
  cluster?: ThrowawayClusterOptions;
  checks: PostgresCheck[];
  password?: PasswordRef;
  env?: NodeJS.ProcessEnv;
  bindir?: string;
  /** Parallel pg_restore processes for a directory-format dump. */
  jobs?: number;
  /** Keep the scratch database for inspection (default: dropped; a throwaway cluster always goes). */
  keep?: boolean;
  /** Give up after this long (the scratch database is dropped, the cluster stopped; default: no limit). */
  timeoutMs?: number;
}

/**
 * Proves a stored dump usable: restores it into a scratch database `bulwark_validate_<random>`, runs the
 * checks, and removes what it made. The database is on the given server (and dropped afterwards) or in a
 * throwaway cluster (stopped and deleted afterwards, also on failure or timeout). A failed restore is a failed
 * validation (thrown).
 */
export async function validatePostgres(
  repo: Repository,
  snapshot: { tree: string },
  sourceDir: string,
  options: ValidatePostgresOptions,
): Promise<PostgresValidation> {
  const server = options.server;
  if (server !== undefined) {
    const database = `bulwark_validate_${randomBytes(6).toString("hex")}`;
    const drop = (): Promise<void> => dropScratch(options, server, database);
    return withDeadline(
      options.timeoutMs,
      (stopped) => validateOn(repo, snapshot, sourceDir, { ...options, server }, database, stopped),
      // A restore stuck on the server ends when its database is dropped (WITH FORCE ends its connections).
      options.keep ? undefined : drop,
    );
  }
  await findDump(repo, snapshot.tree, sourceDir.replace(/\/+$/, "")); // no cluster for a wrong path
  const cluster = await startThrowawayCluster({
    ...(options.env ? { env: options.env } : {}),
    ...(options.bindir ? { bindir: options.bindir } : {}),
    ...options.cluster,
  });
  try {
    const { password: _configured, ...rest } = options;
    return await withDeadline(options.timeoutMs, (stopped) =>
      validateOn(
        repo,
        snapshot,
        sourceDir,
        { ...rest, server: "", env: cluster.env, bindir: cluster.bindir, keep: true }, // the cluster goes whole
        `bulwark_validate_${randomBytes(6).toString("hex")}`,
        stopped,
      ),
    );
  } finally {
    await cluster.stop();
  }
}

async function validateOn(
  repo: Repository,
  snapshot: { tree: string },
  sourceDir: string,
  options: ValidatePostgresOptions & { server: string },
  database: string,
  stopped: () => boolean,
): Promise<PostgresValidation> {
  const env = connectionEnv(options);
  const target = options.server.includes("://") ? withDatabase(options.server, database) : database;
  const result: PostgresValidation = { ok: false, database, checks: [] };
  try {
    result.restore = await restorePostgres(repo, snapshot, sourceDir, {
      ...options,
      target,
      ...(options.env ? { env: options.env } : {}),
    });
    const dbConn = withDatabase(target, database);
    for (const check of options.checks) {
      if (stopped()) break;
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
    if (!options.keep) await dropScratch(options, options.server, database);
  }
}

async function dropScratch(
  options: ValidatePostgresOptions,
  server: string,
  database: string,
): Promise<void> {
  const admin = withDatabase(server.includes("://") ? server : "", "postgres");
  await psql(
    options,
    connectionEnv(options),
    admin,
    `DROP DATABASE IF EXISTS ${quoteIdent(database)} WITH (FORCE);`,
    "DROP DATABASE",
  ).catch(() => undefined);
}

/**
 * Runs `fn` with a time limit: past it, the result is a TIMEOUT error at once (what `fn` still runs is told
 * to stop, and its own cleanup, such as dropping the scratch database, still happens when it ends).
 */
async function withDeadline<T>(
  timeoutMs: number | undefined,
  fn: (stopped: () => boolean) => Promise<T>,
  onTimeout?: () => Promise<void>,
): Promise<T> {
  if (timeoutMs === undefined) return fn(() => false);
  let timedOut = false;
  let timer: NodeJS.Timeout | undefined;
  const work = fn(() => timedOut);
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      timedOut = true;
      reject(new BulwarkError("IO", `the PostgreSQL validation did not finish within ${timeoutMs / 1000} s`));
    }, timeoutMs);
  });
  try {
    return await Promise.race([work, deadline]);
  } catch (err) {
    if (timedOut) await onTimeout?.();
    throw err;
  } finally {
    clearTimeout(timer);
    // A timed-out validation still cleans up behind it; its outcome no longer matters.
    work.catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------------------

/** The programs' environment: the base one plus PGPASSWORD from the reference. */
export function connectionEnv(options: {
  password?: PasswordRef;
  env?: NodeJS.ProcessEnv;
}): NodeJS.ProcessEnv {
  // libpq's own variables (PG*) and the password the reference names reach the programs; no other secret.
  const env = childEnv(options.env ?? process.env, { prefixes: ["PG"] });
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

/** Databases that accept connections, templates excepted, in name order. */
async function listDatabases(options: PostgresSourceOptions, env: NodeJS.ProcessEnv): Promise<string[]> {
  const out = await run(
    `psql (the databases of source ${options.name})`,
    program(options, "psql"),
    [
      "-X",
      "-A",
      "-t",
      "-q",
      "--record-separator-zero",
      "-v",
      "ON_ERROR_STOP=1",
      "--no-password",
      `--dbname=${withDatabase(options.url ?? "", "postgres")}`,
    ],
    {
      env,
      input: "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1;\n",
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
    },
  );
  return out.split("\0").filter((name) => name !== "" && name !== "\n");
}

/** A database's directory name in the snapshot: the name itself, escaped where it could not be a file name. */
export function databaseEntryName(database: string): string {
  return encodeURIComponent(database).replace(/^\./, "%2E");
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
