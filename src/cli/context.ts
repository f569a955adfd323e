/**
 * What every command needs: where the repository is, its password, how to print.
 * Commands stay thin: parse options, call the library, render the result.
 */
import type { Backend } from "../backend/backend.js";
import { openBackendAt } from "../backend/registry.js";
import { BulwarkError, errorMessage, findBulwarkError } from "../core/errors.js";
import type { EventSink } from "../core/events.js";
import { openTargetBackend, scrub, targetPassword, type TargetAccess } from "../ops/targets.js";
import { RepoLock } from "../repository/lock.js";
import { Repository } from "../repository/repository.js";
import { WorkerPool } from "../repository/worker-pool.js";
import { loadConfigForCommand, oneRepoTarget } from "./config-file.js";
import { readPassword } from "./password.js";
import type { ProgressSink } from "./progress.js";

export interface GlobalOptions {
  repo?: string;
  passwordFile?: string;
  json?: boolean;
  quiet?: boolean;
  noLock?: boolean;
  /** The command's own `-c CONFIG` (configOption): `-r` then names one of its targets. */
  config?: string;
}

/**
 * The help of `-c CONFIG` on a repository command, so `-r` can name a target of the config instead of spelling
 * out its location, credentials and password. Each command declares it on its own (verify, drill and posture
 * read more than targets from the file); main.ts hands the value to `withRepository` through GlobalOptions.
 */
export const CONFIG_TARGET_HELP =
  "with -r NAME: open the config's target NAME, with its credentials and password";

export class Output {
  constructor(private readonly opts: GlobalOptions) {}

  get json(): boolean {
    return this.opts.json === true;
  }

  /** Human output on stdout; silent with --json or --quiet. */
  info(line: string): void {
    if (!this.opts.json && !this.opts.quiet) process.stdout.write(line + "\n");
  }

  /** Human output that --quiet does not silence (the result the user asked for). */
  result(line: string): void {
    if (!this.opts.json) process.stdout.write(line + "\n");
  }

  warn(line: string): void {
    process.stderr.write(line + "\n");
  }

  emitJson(value: unknown): void {
    if (this.opts.json) process.stdout.write(JSON.stringify(value, null, 2) + "\n");
  }

  get progressEnabled(): boolean {
    return process.stderr.isTTY === true && !this.opts.json && !this.opts.quiet;
  }
}

/** Renders an operation's messages: info on stdout (silent with --json/--quiet), warnings and errors on stderr. */
export function renderEvents(out: Output): EventSink {
  return (e) => {
    if (e.type !== "message") return;
    if (e.level === "info") out.info(e.message);
    else out.warn(`${e.level}: ${e.message}`);
  };
}

/**
 * Renders an operation's events on a command with a progress bar: progress events move the bar (totals the
 * operation does not know, such as a background file count, come from `totals`); info lines go above the
 * bar, or to stdout without one (silent with --json/--quiet); warnings and errors always go to stderr.
 */
export function renderWithProgress(
  out: Output,
  progress: ProgressSink,
  totals?: () => { files?: number; bytes?: number },
): EventSink {
  return (e) => {
    if (e.type === "progress") {
      const known = totals?.() ?? {};
      const filesTotal = e.itemsTotal ?? known.files;
      const bytesTotal = e.bytesTotal ?? known.bytes;
      progress.update({
        filesDone: e.items,
        ...(filesTotal !== undefined ? { filesTotal } : {}),
        bytesDone: e.bytes,
        ...(bytesTotal !== undefined ? { bytesTotal } : {}),
        ...(e.current !== undefined ? { current: e.current } : {}),
        ...(e.errors !== undefined ? { errors: e.errors } : {}),
      });
    } else if (e.type === "message") {
      if (e.level !== "info") progress.log(`${e.level}: ${e.message}`);
      else if (out.progressEnabled) progress.log(e.message);
      else out.info(e.message);
    }
  };
}

/** For listing commands: a damaged snapshot file is skipped with a warning (check reports it as an error). */
export function warnDamagedSnapshot(name: string, err: unknown): void {
  process.stderr.write(`warning: skipping damaged snapshot ${name.slice(0, 8)}: ${errorMessage(err)}\n`);
}

/** A command's repository backend, and the password that opens it. */
export interface CommandBackend {
  backend: Backend;
  password: () => Promise<string>;
  /** A message that may hold a credential read from the config passes through here first. */
  scrub: (message: string) => string;
}

/**
 * Opens the backend a repository command works on: a location (`-r` or BULWARK_REPOSITORY), or with `-c` the
 * target of the config that `-r` names, opened with its credentials, immutability and password exactly as
 * `run` opens it (src/ops/targets.ts).
 */
export async function openCommandBackend(
  opts: GlobalOptions,
  options: { create?: boolean; readOnly?: boolean } = {},
): Promise<CommandBackend> {
  if (opts.config === undefined) {
    const backend = await openBackend(repositoryLocation(opts), options.create === true, options);
    return { backend, password: () => getPassword(opts), scrub: (m) => m };
  }
  const loaded = await loadConfigForCommand(opts.config);
  const name = oneRepoTarget(loaded, opts.repo, undefined);
  if (name === undefined) {
    throw new BulwarkError("USAGE", `-c ${opts.config} needs -r naming one of its targets`, {
      hint: `name the target: -r ${Object.keys(loaded.config.targets).join("|") || "NAME"}`,
    });
  }
  const target = loaded.config.targets[name]!;
  const secrets: string[] = [];
  let fallback: Promise<string> | undefined;
  const access: TargetAccess = {
    env: process.env,
    defaultPassword: () => (fallback ??= getPassword(opts)),
    secrets,
  };
  const clean = (m: string): string => scrub(m, secrets);
  try {
    const backend = await openTargetBackend(target, access, options);
    return { backend, password: () => targetPassword(target, access), scrub: clean };
  } catch (err) {
    throw scrubbedError(err, clean);
  }
}

/** The error with every secret taken out of its message, keeping its code and hint for the exit code. */
function scrubbedError(err: unknown, clean: (m: string) => string): unknown {
  const message = errorMessage(err);
  const cleaned = clean(message);
  if (cleaned === message) return err;
  const known = findBulwarkError(err);
  return known
    ? new BulwarkError(known.code, cleaned, known.hint === undefined ? {} : { hint: clean(known.hint) })
    : new Error(cleaned);
}

export function repositoryLocation(opts: GlobalOptions): string {
  const location = opts.repo ?? process.env.BULWARK_REPOSITORY;
  if (!location) {
    throw new BulwarkError("USAGE", "no repository given", {
      hint: "pass --repo LOCATION or set BULWARK_REPOSITORY",
    });
  }
  return location;
}

/**
 * Opens the backend of a location (see src/backend/registry.ts for the schemes). `readOnly`: every change
 * but lock files is refused, for commands that only read (check, restore, the source of a copy).
 */
export function openBackend(
  location: string,
  create: boolean,
  options: { readOnly?: boolean } = {},
): Promise<Backend> {
  return openBackendAt(location, { create, ...(options.readOnly === true ? { readOnly: true } : {}) });
}

export async function getPassword(
  opts: GlobalOptions,
  confirm = false,
  prompt = "enter repository password: ",
): Promise<string> {
  return readPassword({
    ...(opts.passwordFile === undefined ? {} : { passwordFile: opts.passwordFile }),
    env: process.env,
    stdin: process.stdin,
    stderr: process.stderr,
    prompt,
    confirm,
  });
}

export interface Session {
  repo: Repository;
  out: Output;
  /** Started on first use. */
  pool: () => WorkerPool;
  close: () => Promise<void>;
}

/**
 * The lock a command takes: "read" and "write" share the repository with others, "exclusive" (prune,
 * forget, key changes) excludes everyone. --no-lock is honoured only for "read": a command that writes or
 * deletes without a lock is invisible to the others (a prune would delete a running backup's packs).
 */
export type LockMode = "none" | "read" | "write" | "exclusive";

/** Opens the repository, takes the lock the command needs, and cleans up whatever happens. */
export async function withRepository<T>(
  opts: GlobalOptions,
  lock: LockMode,
  fn: (session: Session) => Promise<T>,
): Promise<T> {
  if (opts.noLock && (lock === "write" || lock === "exclusive")) {
    throw new BulwarkError("USAGE", "--no-lock cannot be used with a command that changes the repository", {
      hint: "--no-lock is only for read-only commands (snapshots, ls, diff, stats, restore, check)",
    });
  }
  // A command that only reads (check, restore) cannot change the repository, whatever the credentials allow:
  // its backend refuses every write but its own lock file.
  const { backend, password, scrub: clean } = await openCommandBackend(opts, { readOnly: lock === "read" });
  let repo: Repository;
  try {
    repo = await Repository.open(backend, await password());
  } catch (err) {
    await backend.close().catch(() => undefined);
    throw scrubbedError(err, clean);
  }
  let pool: WorkerPool | undefined;
  let repoLock: RepoLock | undefined;
  const session: Session = {
    repo,
    out: new Output(opts),
    pool: () => (pool ??= new WorkerPool(repo)),
    close: async () => {
      await pool?.close();
      pool = undefined;
    },
  };
  try {
    if (lock === "write" || lock === "exclusive" || (lock === "read" && !opts.noLock)) {
      repoLock = await RepoLock.acquire(repo, lock === "exclusive");
    }
    return await fn(session);
  } catch (err) {
    throw scrubbedError(err, clean);
  } finally {
    await session.close();
    await repoLock?.release();
    await backend.close();
  }
}
