/**
 * The command-line face of sources, as pieces the `backup` and `restore` commands register and call
 * (src/cli/commands/backup.ts, restore.ts). Nothing here prints: callers render what these return.
 *
 * backup:
 *   --source TYPE:NAME=VALUE        repeatable; TYPE is command, sqlite or postgres:
 *       command:NAME=SHELL-COMMAND  its standard output as /sources/NAME
 *       sqlite:NAME=DB-PATH         a consistent copy as /sources/NAME.sqlite
 *       postgres:NAME=URL           /sources/NAME/db.pgdump + globals.sql (URL may be empty: libpq variables)
 *   --pg-password-env VAR | --pg-password-file FILE    the PostgreSQL password, by reference
 *   --pg-format custom|directory, --pg-jobs N   directory: /sources/NAME/db.dir/ by pg_dump -Fd -j N
 *   --source-timeout SECONDS        kill a source's program after this long
 *   --hook-before CMD, --hook-after CMD, --hook-timeout SECONDS
 *   --pass-env NAME                 repeatable: a variable the hooks and command sources get (childEnv)
 * restore (instead of --target):
 *   --pipe-to CMD    --source-path /sources/NAME    pipe a stored file into CMD [--pass-env NAME]
 *   --to-sqlite PATH --source-path /sources/NAME.sqlite
 *   --to-postgres URL --source-path /sources/NAME [--with-globals] [--pg-password-env|--pg-password-file]
 *                    [--pg-jobs N]  (a directory-format dump: pg_restore -j N)
 */
import { Option, type Command } from "commander";
import { BulwarkError } from "../core/errors.js";
import type { Repository } from "../repository/repository.js";
import type { VirtualFile } from "../snapshot/archiver.js";
import { isSafeName } from "../snapshot/tree.js";
import { SOURCES_ROOT } from "../sources/dataset.js";
import { commandSource } from "../sources/command.js";
import { childEnv } from "../sources/process.js";
import { DEFAULT_HOOK_TIMEOUT_MS, type Hooks } from "../sources/hooks.js";
import { postgresSource, type PasswordRef } from "../sources/postgres.js";
import { sqliteSource } from "../sources/sqlite.js";
import { restoreSourceTo, type SourceDestination, type SourceRestoreReport } from "../ops/restore.js";

/** Where sources appear in a snapshot. */

export interface SourceFlags {
  source?: string[];
  passEnv?: string[];
  pgPasswordEnv?: string;
  pgPasswordFile?: string;
  pgFormat?: string;
  pgJobs?: string;
  sourceTimeout?: string;
  hookBefore?: string;
  hookAfter?: string;
  hookTimeout?: string;
}

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/** Adds the source and hook options to the `backup` command. */
export function registerSourceOptions(command: Command): Command {
  return command
    .option(
      "--source <type:name=value>",
      "also back up a source (repeatable): command:NAME=CMD, sqlite:NAME=DB-PATH, postgres:NAME=URL",
      collect,
      [],
    )
    .addOption(
      new Option(
        "--pg-password-env <var>",
        "PostgreSQL password: the name of the variable holding it",
      ).conflicts("pgPasswordFile"),
    )
    .option("--pg-password-file <file>", "PostgreSQL password: a file holding it (first line)")
    .addOption(
      new Option("--pg-format <format>", "PostgreSQL dump format: custom (streamed) or directory").choices([
        "custom",
        "directory",
      ]),
    )
    .option("--pg-jobs <n>", "parallel pg_dump processes (needs --pg-format directory)")
    .option("--source-timeout <seconds>", "kill a source's dump program after this long")
    .option(
      "--pass-env <name>",
      "pass this environment variable to the hooks and command sources (repeatable; else only PATH, HOME, locale)",
      collect,
      [],
    )
    .option("--hook-before <command>", "shell command run before the backup; its failure stops the backup")
    .option("--hook-after <command>", "shell command run after the backup, also when it failed")
    .option(
      "--hook-timeout <seconds>",
      `kill a hook after this long (default ${DEFAULT_HOOK_TIMEOUT_MS / 1000})`,
    );
}

export interface ParsedSources {
  virtualFiles: VirtualFile[];
  hooks: Hooks;
  /** "command dump -> /sources/dump", for the caller to show. */
  descriptions: string[];
}

/** Turns the options of registerSourceOptions into virtual files and hooks; USAGE errors name the option. */
export function sourcesFromFlags(flags: SourceFlags, env: NodeJS.ProcessEnv = process.env): ParsedSources {
  const passEnv = variableNames(flags.passEnv);
  const timeoutMs = seconds(flags.sourceTimeout, "--source-timeout");
  const password = passwordRef(flags);
  const format = flags.pgFormat === "directory" ? "directory" : "custom";
  const jobs = wholeNumber(flags.pgJobs, "--pg-jobs") ?? 1;
  if (jobs > 1 && format !== "directory") {
    throw new BulwarkError("USAGE", `--pg-jobs ${jobs} needs --pg-format directory`, {
      hint: "pg_dump writes in parallel only in the directory format",
    });
  }
  const virtualFiles: VirtualFile[] = [];
  const descriptions: string[] = [];
  const names = new Set<string>();
  for (const spec of flags.source ?? []) {
    const m = /^([a-z]+):([^=]+)=(.*)$/s.exec(spec);
    if (!m) {
      throw new BulwarkError("USAGE", `--source ${spec}: expected TYPE:NAME=VALUE`, {
        hint: "e.g. --source 'command:mysql=mysqldump shop' or --source sqlite:app=/var/lib/app.db",
      });
    }
    const [, type, name, value] = m as unknown as [string, string, string, string];
    if (!isSafeName(name) || name.startsWith(".")) {
      throw new BulwarkError(
        "USAGE",
        `--source ${spec}: the name ${JSON.stringify(name)} cannot be a file name`,
      );
    }
    if (names.has(name)) throw new BulwarkError("USAGE", `--source: the name ${name} is used twice`);
    names.add(name);
    const timeout = timeoutMs === undefined ? {} : { timeoutMs };
    switch (type) {
      case "command":
        if (value.trim() === "") throw new BulwarkError("USAGE", `--source ${spec}: no command`);
        virtualFiles.push(
          commandSource({
            path: `${SOURCES_ROOT}/${name}`,
            command: value,
            env: childEnv(env, { pass: passEnv }),
            ...timeout,
          }),
        );
        descriptions.push(`command ${name} -> ${SOURCES_ROOT}/${name}`);
        break;
      case "sqlite":
        if (value === "") throw new BulwarkError("USAGE", `--source ${spec}: no database path`);
        virtualFiles.push(
          sqliteSource({ path: `${SOURCES_ROOT}/${name}.sqlite`, database: value, ...timeout }),
        );
        descriptions.push(`sqlite ${name} -> ${SOURCES_ROOT}/${name}.sqlite`);
        break;
      case "postgres":
        virtualFiles.push(
          ...postgresSource({
            name,
            root: SOURCES_ROOT,
            ...(value === "" ? {} : { url: value }),
            ...(password ? { password } : {}),
            env,
            format,
            jobs,
            ...timeout,
          }),
        );
        descriptions.push(`postgres ${name} -> ${SOURCES_ROOT}/${name}/`);
        break;
      default:
        throw new BulwarkError("USAGE", `--source ${spec}: unknown type ${type}`, {
          hint: "the types are command, sqlite and postgres",
        });
    }
  }
  const hookTimeoutMs = seconds(flags.hookTimeout, "--hook-timeout");
  const hook = (command: string | undefined) =>
    command === undefined
      ? undefined
      : { command, ...(hookTimeoutMs === undefined ? {} : { timeoutMs: hookTimeoutMs }) };
  const before = hook(flags.hookBefore);
  const after = hook(flags.hookAfter);
  const hooks: Hooks = { env, passEnv, ...(before ? { before } : {}), ...(after ? { after } : {}) };
  return { virtualFiles, hooks, descriptions };
}

// ---------------------------------------------------------------------------------------------------------
// restore

export interface RestoreTargetFlags {
  pipeTo?: string;
  passEnv?: string[];
  toSqlite?: string;
  toPostgres?: string;
  sourcePath?: string;
  withGlobals?: boolean;
  pgPasswordEnv?: string;
  pgPasswordFile?: string;
  pgJobs?: string;
}

/** Adds --pipe-to, --to-sqlite, --to-postgres (and what they need) to the `restore` command. */
export function registerRestoreTargetOptions(command: Command): Command {
  return command
    .addOption(
      new Option("--pipe-to <command>", "pipe the file --source-path into a shell command").conflicts([
        "toSqlite",
        "toPostgres",
      ]),
    )
    .addOption(
      new Option(
        "--to-sqlite <path>",
        "write the SQLite copy --source-path to a path and check it",
      ).conflicts("toPostgres"),
    )
    .option("--to-postgres <url>", "restore the postgres source --source-path into a new database")
    .option("--source-path <path>", "the source in the snapshot, e.g. /sources/shop")
    .option(
      "--pass-env <name>",
      "with --pipe-to: pass this environment variable to the command (repeatable; else PATH, HOME, locale, PG*)",
      collect,
      [],
    )
    .option("--with-globals", "with --to-postgres: also run the source's globals.sql (roles)")
    .option("--pg-password-env <var>", "PostgreSQL password: the name of the variable holding it")
    .option("--pg-password-file <file>", "PostgreSQL password: a file holding it (first line)")
    .option(
      "--pg-jobs <n>",
      "with --to-postgres: parallel pg_restore jobs for a directory-format dump (default: CPUs, at most 4)",
    );
}

/** True when the flags ask for a source restore (then --target is not needed). */
export function wantsSourceRestore(flags: RestoreTargetFlags): boolean {
  return flags.pipeTo !== undefined || flags.toSqlite !== undefined || flags.toPostgres !== undefined;
}

export type { SourceRestoreReport };

/** Performs the source restore the flags ask for (wantsSourceRestore must be true): ops/restore.ts does it. */
export async function restoreSource(
  repo: Repository,
  snapshot: { tree: string },
  flags: RestoreTargetFlags,
  env: NodeJS.ProcessEnv = process.env,
): Promise<SourceRestoreReport> {
  return restoreSourceTo(repo, snapshot, flags.sourcePath, sourceDestination(flags), env);
}

/** The destination the flags name, typed. */
function sourceDestination(flags: RestoreTargetFlags): SourceDestination {
  if (flags.pipeTo !== undefined) {
    return { kind: "pipe", command: flags.pipeTo, passEnv: variableNames(flags.passEnv) };
  }
  if (flags.toSqlite !== undefined) return { kind: "sqlite", path: flags.toSqlite };
  const password = passwordRef(flags);
  const jobs = wholeNumber(flags.pgJobs, "--pg-jobs");
  return {
    kind: "postgres",
    url: flags.toPostgres!,
    ...(password ? { password } : {}),
    ...(jobs !== undefined ? { jobs } : {}),
    ...(flags.withGlobals ? { globals: true } : {}),
  };
}

// ---------------------------------------------------------------------------------------------------------

function passwordRef(flags: { pgPasswordEnv?: string; pgPasswordFile?: string }): PasswordRef | undefined {
  if (flags.pgPasswordEnv !== undefined && flags.pgPasswordFile !== undefined) {
    throw new BulwarkError("USAGE", "give the PostgreSQL password either by variable or by file, not both");
  }
  if (flags.pgPasswordEnv !== undefined) return { env: flags.pgPasswordEnv };
  if (flags.pgPasswordFile !== undefined) return { file: flags.pgPasswordFile };
  return undefined;
}

/** The names of --pass-env, checked: a typo such as `$MYSQL_PWD` would otherwise pass nothing, silently. */
function variableNames(names: string[] | undefined): string[] {
  for (const name of names ?? []) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      throw new BulwarkError("USAGE", `--pass-env ${JSON.stringify(name)} is not a variable name`, {
        hint: "name the variable without $, e.g. --pass-env MYSQL_PWD",
      });
    }
  }
  return names ?? [];
}

function wholeNumber(value: string | undefined, option: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    throw new BulwarkError("USAGE", `${option} ${value}: expected a whole number of at least 1`);
  }
  return n;
}

function seconds(value: string | undefined, option: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) {
    throw new BulwarkError("USAGE", `${option} ${value}: expected a number of seconds`);
  }
  return Math.round(n * 1000);
}
