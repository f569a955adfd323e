/**
 * A throwaway PostgreSQL cluster, for validating a dump without touching any configured server: the
 * validator restores into it, runs its queries, and the cluster is stopped and deleted again.
 *
 * 1. initdb into a private temporary directory, with a random superuser password (scram-sha-256 for every
 *    connection: the TCP port is reachable by every local user, so the cluster is not left open).
 * 2. pg_ctl start with the server listening on 127.0.0.1 at a free port and its unix socket in the temporary
 *    directory; durability off (fsync, synchronous_commit, full_page_writes), as nothing in it is kept.
 * 3. stop(): pg_ctl stop -m immediate (if that fails, SIGKILL to the postmaster), then the directory is
 *    removed. The caller calls it in a `finally`, so it runs on success, failure and timeout alike; should the
 *    process exit first (an interrupted command calls process.exit), an exit handler kills the postmaster and
 *    removes the directory synchronously.
 * PostgreSQL refuses to run as root: as root, initdb and the server run as another user (`postgres` when it
 * exists, else `nobody`) through runuser, as scripts/services/postgres.sh does, and the directory is theirs.
 * The server programs are not on PATH on Debian: they are looked up under /usr/lib/postgresql/VERSION/bin
 * (the newest version first), then on PATH.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { accessSync, constants, existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { appendFile, chown, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { BulwarkError, errorMessage } from "../core/errors.js";
import { childEnv, run } from "./process.js";

export interface ThrowawayClusterOptions {
  /** The directory of initdb and pg_ctl (default: the newest /usr/lib/postgresql/VERSION/bin, then PATH). */
  bindir?: string;
  /** As root: the user the server runs as (default `postgres` when it exists, else `nobody`). */
  runAs?: string;
  /** Where the cluster's temporary directory is made (default: the system's). */
  tempDir?: string;
  /** Base environment of the programs (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** How long initdb, and then the start, may take (default 120 s each). */
  startTimeoutMs?: number;
  /** Extra postgresql.conf settings, e.g. { shared_buffers: "256MB" }. */
  settings?: Record<string, string>;
  /**
   * Run the server in this named network namespace (`ip netns`, a `dr drill`'s): its TCP port is then
   * reachable only from inside; Bulwark reaches it through the unix socket in the cluster's directory.
   */
  netns?: string;
  /** Listen on this port (default: a free one; inside a namespace, the port production uses is free). */
  port?: number;
  /** Accept TCP connections from 127.0.0.1 without a password: only for a cluster inside a namespace. */
  trustLoopback?: boolean;
}

export interface ThrowawayCluster {
  /** The temporary directory: data directory, unix socket, server log. */
  dir: string;
  port: number;
  bindir: string;
  /** The environment that reaches the cluster (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE=postgres; other PG* variables removed). */
  env: NodeJS.ProcessEnv;
  /** Stops the server and removes the directory; safe to call more than once. */
  stop(): Promise<void>;
}

const SUPERUSER = "bulwark";
const DEFAULT_START_TIMEOUT_MS = 120_000;
const STOP_TIMEOUT_MS = 60_000;
const START_ATTEMPTS = 3;

/** Starts a throwaway cluster (see the module comment); throws with initdb's or the server's reason. */
export async function startThrowawayCluster(
  options: ThrowawayClusterOptions = {},
): Promise<ThrowawayCluster> {
  const baseEnv = options.env ?? process.env;
  const bindir = serverBindir(options.bindir, baseEnv);
  const owner = process.getuid?.() === 0 ? runAsUser(options.runAs) : undefined;
  const timeoutMs = options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  const dir = await mkdtemp(join(options.tempDir ?? tmpdir(), "bulwark-pgcluster-")); // mode 0700
  const data = join(dir, "data");
  const log = join(dir, "server.log");
  // The programs run in the directory: a root's working directory is not readable by the server's user.
  const as = (file: string, args: string[]): [string, string[]] =>
    owner ? ["runuser", ["-u", owner.name, "--", file, ...args]] : [file, args];
  // The server (started by pg_ctl) runs in the namespace, and inherits it.
  const inNamespace = ([file, args]: [string, string[]]): [string, string[]] =>
    options.netns !== undefined ? ["ip", ["netns", "exec", options.netns, file, ...args]] : [file, args];
  const programEnv = withoutLibpqVariables(baseEnv);
  let started = false;
  const onExit = (): void => {
    killPostmaster(data, "SIGQUIT"); // PostgreSQL's immediate shutdown, which still frees its shared memory
    rmSync(dir, { recursive: true, force: true });
  };
  process.once("exit", onExit);

  const stop = once(async () => {
    process.removeListener("exit", onExit);
    try {
      if (started) {
        const [file, args] = as(join(bindir, "pg_ctl"), ["-D", data, "-m", "immediate", "-w", "stop"]);
        await run("pg_ctl stop", file, args, { env: programEnv, cwd: dir, timeoutMs: STOP_TIMEOUT_MS }).catch(
          () => killPostmaster(data, "SIGKILL"),
        );
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  try {
    if (owner) {
      await chown(dir, owner.uid, owner.gid);
      // A parent only root can traverse (a private TMPDIR) would stop initdb with a bare "Permission denied".
      await run("test", "runuser", ["-u", owner.name, "--", "test", "-w", dir], { cwd: "/" }).catch(() => {
        throw new BulwarkError("IO", `the throwaway cluster's user ${owner.name} cannot reach ${dir}`, {
          hint: "make the cluster's temporary directory somewhere every user can traverse, such as /tmp",
        });
      });
    }
    const password = randomBytes(24).toString("base64url");
    const pwfile = join(dir, "pwfile");
    await writeFile(pwfile, `${password}\n`, { mode: 0o600 });
    if (owner) await chown(pwfile, owner.uid, owner.gid);
    const [initdb, initArgs] = as(join(bindir, "initdb"), [
      "-D",
      data,
      "-U",
      SUPERUSER,
      `--pwfile=${pwfile}`,
      "--auth=scram-sha-256",
      "-E",
      "UTF8",
      "--no-locale",
      "--no-sync",
    ]);
    await run("initdb of the throwaway cluster", initdb, initArgs, { env: programEnv, cwd: dir, timeoutMs });
    await rm(pwfile, { force: true });
    const settings: Record<string, string> = {
      listen_addresses: "'127.0.0.1'",
      unix_socket_directories: `'${dir.replaceAll("'", "''")}'`,
      fsync: "off",
      synchronous_commit: "off",
      full_page_writes: "off",
      max_connections: "50",
      ...options.settings,
    };
    await appendFile(
      join(data, "postgresql.conf"),
      "\n# bulwark: throwaway cluster\n" +
        Object.entries(settings)
          .map(([k, v]) => `${k} = ${v}\n`)
          .join(""),
    );

    if (options.trustLoopback === true) {
      // Read before every other line: the first matching line decides.
      const hba = join(data, "pg_hba.conf");
      const lines = readFileSync(hba, "utf8");
      await writeFile(hba, `host all all 127.0.0.1/32 trust\n${lines}`);
    }

    // A free port can be taken between the probe and the server's bind: try again with another.
    let port = 0;
    for (let attempt = 1; ; attempt++) {
      port = options.port ?? (await freePort());
      const [pgctl, args] = inNamespace(
        as(join(bindir, "pg_ctl"), [
          "-D",
          data,
          "-l",
          log,
          "-o",
          `-p ${port}`,
          "-w",
          "-t",
          String(Math.ceil(timeoutMs / 1000)),
          "start",
        ]),
      );
      try {
        started = true;
        await run("pg_ctl start of the throwaway cluster", pgctl, args, {
          env: programEnv,
          cwd: dir,
          timeoutMs: timeoutMs + 10_000,
        });
        break;
      } catch (err) {
        const serverLog = tail(log);
        if (
          options.port === undefined &&
          attempt < START_ATTEMPTS &&
          /could not (bind|create listen socket)|already in use/i.test(serverLog)
        ) {
          continue;
        }
        throw new BulwarkError(
          "IO",
          `${errorMessage(err)}${serverLog ? `\nserver log:\n${serverLog}` : ""}`,
          {
            cause: err,
          },
        );
      }
    }
    return {
      dir,
      port,
      bindir,
      env: {
        ...programEnv,
        PGHOST: dir,
        PGPORT: String(port),
        PGUSER: SUPERUSER,
        PGPASSWORD: password,
        PGDATABASE: "postgres",
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** The directory holding initdb and pg_ctl. */
export function serverBindir(given: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const has = (dir: string): boolean => executable(join(dir, "initdb")) && executable(join(dir, "pg_ctl"));
  if (given !== undefined) {
    if (has(given)) return given;
    throw new BulwarkError("NOT_FOUND", `${given} holds no initdb and pg_ctl`);
  }
  const root = "/usr/lib/postgresql";
  let versions: string[] = [];
  try {
    versions = readdirSync(root).sort((a, b) => Number(b) - Number(a) || (a < b ? 1 : -1));
  } catch {
    // not a Debian layout
  }
  for (const v of versions) if (has(join(root, v, "bin"))) return join(root, v, "bin");
  for (const dir of (env.PATH ?? "").split(delimiter)) if (dir !== "" && has(dir)) return dir;
  throw new BulwarkError("NOT_FOUND", "no PostgreSQL server programs (initdb, pg_ctl) were found", {
    hint: "install the PostgreSQL server (Debian: apt-get install postgresql), or validate on a server of yours",
  });
}

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function runAsUser(name: string | undefined): { name: string; uid: number; gid: number } {
  const candidates = name !== undefined ? [name] : ["postgres", "nobody"];
  for (const candidate of candidates) {
    try {
      const uid = Number(execFileSync("id", ["-u", candidate], { encoding: "utf8", stdio: "pipe" }).trim());
      const gid = Number(execFileSync("id", ["-g", candidate], { encoding: "utf8", stdio: "pipe" }).trim());
      if (uid !== 0) return { name: candidate, uid, gid };
    } catch {
      // no such user
    }
  }
  throw new BulwarkError(
    "NOT_FOUND",
    `no user to run the throwaway cluster as (tried ${candidates.join(", ")})`,
    {
      hint: "PostgreSQL does not run as root: create a user for it (or name one with runAs)",
    },
  );
}

/** A port on 127.0.0.1 that was free a moment ago. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** When pg_ctl cannot be used: signals the postmaster, whose pid is the first line of postmaster.pid. */
/**
 * Removes the cluster in `dir` that a killed process left: its server is killed (SIGKILL: nothing in it is
 * kept) and the directory removed. For `dr drill`'s leftovers (src/dr/leftovers.ts).
 */
export function removeLeftoverCluster(dir: string): void {
  killPostmaster(join(dir, "data"), "SIGKILL");
  rmSync(dir, { recursive: true, force: true });
}

function killPostmaster(data: string, signal: NodeJS.Signals): void {
  const pidFile = join(data, "postmaster.pid");
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, "utf8").split("\n")[0]);
  if (!Number.isInteger(pid) || pid <= 1) return;
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/**
 * The scrubbed environment (childEnv): without libpq's variables, which would point the programs elsewhere,
 * and without this process's secrets.
 */
function withoutLibpqVariables(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return childEnv(env);
}

function tail(path: string): string {
  try {
    return readFileSync(path, "utf8").split("\n").slice(-20).join("\n").trim();
  } catch {
    return "";
  }
}

function once(fn: () => Promise<void>): () => Promise<void> {
  let result: Promise<void> | undefined;
  return () => (result ??= fn());
}
