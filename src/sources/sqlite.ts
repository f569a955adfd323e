/**
 * The `sqlite` source: an online, consistent copy of a SQLite database while writers are active, made by the
 * sqlite3 command-line shell (Debian package `sqlite3`; no npm dependency).
 *
 * Backup:
 * 1. In a private temporary directory (mode 0700), `VACUUM INTO '<tmp>/copy.sqlite'`: one read transaction,
 *    so the copy is the database at one moment, whatever writers do meanwhile (in WAL mode they are not even
 *    blocked; in rollback mode the shell waits up to the busy timeout for a writer's lock).
 * 2. The copy is checked (`PRAGMA integrity_check` = ok) before it is stored: a damaged copy fails the backup.
 * 3. A worker reads it as the snapshot's file (e.g. /sources/app.sqlite); the directory is then removed.
 * Restore: the stored file is written to a path (restoreSqlite), then validated (validateSqlite).
 */
import { chmod, mkdtemp, open, rename, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { BulwarkError } from "../core/errors.js";
import type { Repository } from "../repository/repository.js";
import type { OpenedVirtualFile, VirtualFile } from "../snapshot/archiver.js";
import { findNode, readSnapshotFile } from "./command.js";
import { run } from "./process.js";

export interface SqliteSourceOptions {
  /** Where the copy appears in the snapshot, e.g. "/sources/app.sqlite". */
  path: string;
  /** The live database file. */
  database: string;
  /** How long to wait for a writer's lock, in ms (default 60 s). */
  busyTimeoutMs?: number;
  /** The sqlite3 shell (default: `sqlite3` on PATH). */
  sqlite3?: string;
  /** Kill the copy after this long (default: no limit). */
  timeoutMs?: number;
}

export interface SqliteCheck {
  /** A query whose result (as `sqlite3 -list` prints it, trimmed) must equal `expect`. */
  sql: string;
  expect: string;
}

export interface ValidationResult {
  ok: boolean;
  /** One line per check, with what was expected and found. */
  checks: { name: string; ok: boolean; expected: string; actual: string }[];
}

/** A virtual file holding a consistent copy of `database` (see the module comment). */
export function sqliteSource(options: SqliteSourceOptions): VirtualFile {
  return { path: options.path, open: () => copySqlite(options) };
}

async function copySqlite(options: SqliteSourceOptions): Promise<OpenedVirtualFile> {
  const dir = await mkdtemp(join(tmpdir(), "bulwark-sqlite-copy-"));
  const copy = join(dir, "copy.sqlite");
  const sqlite3 = options.sqlite3 ?? "sqlite3";
  try {
    // -bail: stop at the first error; the script is on stdin so the path needs no shell quoting.
    await run(
      `sqlite3 copy of ${options.database}`,
      sqlite3,
      ["-bail", "-batch", readOnlyUri(options.database)],
      {
        input: `.timeout ${options.busyTimeoutMs ?? 60_000}\nVACUUM INTO ${sqlString(copy)};\n`,
        ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      },
    );
    const check = await integrityCheck(copy, sqlite3);
    if (check !== "ok") {
      throw new BulwarkError(
        "INVALID_DATA",
        `the copy of ${options.database} fails integrity_check: ${check}`,
      );
    }
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    path: copy,
    done: Promise.resolve(),
    close: () => rm(dir, { recursive: true, force: true }),
  };
}

/**
 * Writes a stored SQLite file to `target` (through a temporary file beside it, renamed into place, so a
 * failed restore never leaves half a database under the name). Refuses to overwrite unless `overwrite`.
 */
export async function restoreSqlite(
  repo: Repository,
  snapshot: { tree: string },
  path: string,
  target: string,
  options: { overwrite?: boolean } = {},
): Promise<{ bytes: number }> {
  await findNode(repo, snapshot.tree, path);
  const temp = join(dirname(target), `.${basename(target)}.bulwark-restore-${process.pid}`);
  const file = await open(temp, "wx", 0o600);
  let bytes = 0;
  try {
    for await (const chunk of readSnapshotFile(repo, snapshot.tree, path)) {
      await file.write(chunk);
      bytes += chunk.length;
    }
    await file.sync();
    await file.close();
    if (!options.overwrite) {
      // link-then-unlink would be atomic; a quick existence check is enough for a restore command.
      const exists = await open(target, "r").then(
        async (f) => {
          await f.close();
          return true;
        },
        () => false,
      );
      if (exists) throw new BulwarkError("ALREADY_EXISTS", `${target} exists; not overwriting it`);
    }
    await chmod(temp, 0o600);
    await rename(temp, target);
  } catch (err) {
    await file.close().catch(() => undefined);
    await rm(temp, { force: true });
    throw err;
  }
  return { bytes };
}

/**
 * Proves a (restored) database usable: `PRAGMA integrity_check` must say ok, and each check's query must
 * print what it expects. Opens the file read-only.
 */
export async function validateSqlite(
  database: string,
  checks: SqliteCheck[] = [],
  options: { sqlite3?: string } = {},
): Promise<ValidationResult> {
  const sqlite3 = options.sqlite3 ?? "sqlite3";
  const result: ValidationResult = { ok: true, checks: [] };
  const integrity = await integrityCheck(database, sqlite3);
  result.checks.push({
    name: "PRAGMA integrity_check",
    ok: integrity === "ok",
    expected: "ok",
    actual: integrity,
  });
  for (const check of checks) {
    let actual: string;
    try {
      actual = (
        await run(`sqlite3 query`, sqlite3, ["-bail", "-batch", readOnlyUri(database)], {
          input: check.sql.trim().replace(/;?$/, ";") + "\n",
        })
      ).trim();
    } catch (err) {
      actual = `error: ${(err as Error).message}`;
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
}

async function integrityCheck(database: string, sqlite3: string): Promise<string> {
  return (
    await run(`sqlite3 integrity_check of ${database}`, sqlite3, ["-bail", "-batch", readOnlyUri(database)], {
      input: "PRAGMA integrity_check;\n",
    })
  ).trim();
}

/** A read-only URI filename for the shell: the database is never written by a backup or a validation. */
function readOnlyUri(path: string): string {
  const abs = resolve(path);
  return "file:" + abs.split("/").map(encodeURIComponent).join("/") + "?mode=ro";
}

/** A SQL string literal. */
function sqlString(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}
