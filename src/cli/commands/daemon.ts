/**
 * `bulwark daemon`: Bulwark as a service (docs/design.md §25). The schedules run by src/daemon/daemon.ts, the
 * API and /metrics by src/api/server.ts; this file gives them the process: the config file, the catalog,
 * the signals (SIGHUP reloads the config, keeping the running one if the new one has errors; SIGTERM or
 * SIGINT stop gracefully), the log on standard error. Also `daemon token add`, `daemon status`, and the
 * commands that talk to a running daemon: `bulwark status`, `runs`, `trigger`.
 */
import { dirname, join } from "node:path";

import type { Command } from "commander";

import { addToken } from "../../core/tokens.js";
import { systemClock } from "../../core/clock.js";
import { BulwarkError, errorMessage } from "../../core/errors.js";
import type { BulwarkEvent } from "../../core/events.js";
import { formatDiagnostic } from "../../config/diagnostic.js";
import { API_ROLES, API_TOKENS, type ApiRole } from "../../api/server.js";
import { startDaemonApi } from "../../api/server.js";
import { Alerter } from "../../daemon/alerts.js";
import { Daemon, type DaemonStatus } from "../../daemon/daemon.js";
import { loadConfig } from "../../ops/config.js";
import { releaseAllLocks } from "../../repository/lock.js";
import { killChildren } from "../../sources/process.js";
import { processSecretEnvironment } from "../../config/load.js";
import { loadConfigForCommand } from "../config-file.js";
import { Output, getPassword, type GlobalOptions } from "../context.js";
import { addDaemonOptions, daemonClient, type DaemonFlags } from "../daemon-client.js";
import { EXIT } from "../exit-codes.js";
import { claimSignals } from "../signals.js";
import { openCatalogForCommand, stateDirForCommand } from "./catalog-access.js";

/** How long running tasks get to finish after SIGTERM before they are recorded as interrupted. */
const STOP_GRACE_MS = 5_000;

interface DaemonRunFlags {
  config?: string;
}

export function registerDaemon(program: Command, globals: () => GlobalOptions): void {
  const daemon = program
    .command("daemon")
    .description("run the config's schedules as a service, with an HTTP API and Prometheus /metrics")
    .option("-c, --config <file>", "the config file (env BULWARK_CONFIG; default ./bulwark.yaml)")
    .addHelpText(
      "after",
      `
Runs every job that has a schedule (a cron expression in daemon.timezone, @daily, or "@every 10m") by the
same operations as \`bulwark run\`, recording everything in the catalog: never a job beside itself, a run
missed while the daemon was down caught up once (daemon.catchUp), failures retried with backoff
(daemon.retries), at most daemon.targetConcurrency runs per target. The API (daemon.listen, default
127.0.0.1:8420; TLS with daemon.tls) needs a token: \`bulwark daemon token add --name NAME --role read\`.
SIGHUP reloads the config (a config with errors is refused, and the running one kept); SIGTERM or SIGINT
stop: running tasks get ${STOP_GRACE_MS / 1000} s to finish, then are recorded as interrupted.
Target passwords come from the config's password references (or BULWARK_PASSWORD / BULWARK_PASSWORD_FILE).

Exit codes:
  0   stopped by SIGTERM or SIGINT
  1   could not start (the config, the catalog, the address)`,
    )
    .action(async (flags: DaemonRunFlags) => {
      await runDaemon(globals(), flags);
    });

  const token = daemon.command("token").description("manage the API's tokens");
  token
    .command("add")
    .description("create an API token; it is printed once and only its hash is stored")
    .requiredOption("--name <name>", "who holds the token (shown in the daemon's log)")
    .requiredOption("--role <role>", `one of ${API_ROLES.join(", ")}`)
    .option(
      "--tokens <file>",
      "the tokens file (default daemon.tokens of -c, else STATE_DIR/daemon-tokens.json)",
    )
    .option("-c, --config <file>", "the config whose daemon.tokens names the file")
    .addHelpText(
      "after",
      `
Roles: read sees everything (status, runs, snapshots, metrics); operate may also start runs; admin may also
forget. The token is printed once; the file (mode 0600) keeps only its SHA-256. A running daemon reads the
file again on SIGHUP.`,
    )
    .action(async (_flags: unknown, command: Command) => {
      // `daemon` has a -c of its own, which Commander may credit to it: read both levels.
      const flags = command.optsWithGlobals<{
        name: string;
        role: string;
        tokens?: string;
        config?: string;
      }>();
      const out = new Output(globals());
      if (!(API_ROLES as readonly string[]).includes(flags.role)) {
        throw new BulwarkError("USAGE", `unknown role ${JSON.stringify(flags.role)}`, {
          hint: `use one of ${API_ROLES.join(", ")}`,
        });
      }
      const file = flags.tokens ?? (await tokensFile(flags.config));
      const secret = await addToken(API_TOKENS, file, flags.name, flags.role as ApiRole);
      out.emitJson({ name: flags.name, role: flags.role, token: secret, file });
      out.result(secret);
      out.info(`added ${flags.role} token "${flags.name}" to ${file}; it is shown only this once`);
    });

  program
    .command("alert")
    .description("alert channels (the config's alerts:)")
    .command("test")
    .description("send one test notification to every channel of the config's alerts:, and say how each went")
    .option("-c, --config <file>", "the config file (env BULWARK_CONFIG; default ./bulwark.yaml)")
    .addHelpText(
      "after",
      `
Each webhook, the e-mail recipients and each command receive a notice of type "test". Nothing is recorded.

Exit codes:
  0   every channel took the notice
  1   a channel failed (its error is printed), or the config declares no channel`,
    )
    .action(async (_flags: unknown, command: Command) => {
      const flags = command.optsWithGlobals<{ config?: string }>();
      const out = new Output(globals());
      const { config } = await loadConfigForCommand(flags.config);
      const stateFile = join(await stateDirForCommand(process.env), "daemon-alerts.json");
      const alerter = new Alerter(config.alerts, { clock: systemClock, env: process.env, stateFile });
      const results = await alerter.test();
      out.emitJson(results);
      if (results.length === 0) {
        throw new BulwarkError("USAGE", "the config declares no alert channel", {
          hint: 'add alerts.webhooks, alerts.email or alerts.commands (docs/config.md "alerts")',
        });
      }
      for (const r of results)
        out.result(
          `${r.ok ? "ok    " : "FAILED"} ${r.channel}${r.error !== undefined ? `: ${r.error}` : ""}`,
        );
      process.exitCode = results.every((r) => r.ok) ? EXIT.OK : EXIT.ERROR;
    });

  addDaemonOptions(
    daemon.command("status").description("what a running daemon runs, what is next, what failed"),
  ).action(async (_flags: unknown, command: Command) => {
    await showStatus(globals(), command.optsWithGlobals<DaemonFlags>());
  });

  addDaemonOptions(
    program
      .command("status")
      .description("a running daemon's state: its tasks, what runs, what is next, what failed"),
  ).action(async (flags: DaemonFlags) => {
    await showStatus(globals(), flags);
  });

  addDaemonOptions(
    program
      .command("runs")
      .description("the runs a daemon recorded (through its API; `catalog runs` reads the catalog directly)")
      .option("--job <name>", "only this job's")
      .option("--limit <n>", "at most this many (default 20)", "20"),
  ).action(async (flags: DaemonFlags & { job?: string; limit: string }) => {
    const out = new Output(globals());
    const client = await daemonClient(flags);
    const query = new URLSearchParams({
      limit: flags.limit,
      ...(flags.job !== undefined ? { job: flags.job } : {}),
    });
    const runs = await client.get<
      {
        id: number;
        kind: string;
        job?: string;
        target?: string;
        status: string;
        startedAt: string;
        error?: string;
      }[]
    >(`/v1/runs?${query.toString()}`);
    out.emitJson(runs);
    if (runs.length === 0) out.result("no runs recorded");
    for (const r of runs)
      out.result(
        `${String(r.id).padStart(6)}  ${r.startedAt}  ${(r.job ?? "-").padEnd(12)} ${r.kind.padEnd(7)} ${(r.target ?? "-").padEnd(10)} ${r.status}${r.error !== undefined ? `: ${r.error}` : ""}`,
      );
  });

  addDaemonOptions(
    program
      .command("trigger")
      .description("ask a running daemon to run a job now (needs an operate token)")
      .argument("<job>", "a job of the daemon's config"),
  ).action(async (job: string, flags: DaemonFlags) => {
    const out = new Output(globals());
    const client = await daemonClient(flags);
    const r = await client.post<{ task: string; queued: boolean }>(`/v1/jobs/${encodeURIComponent(job)}/run`);
    out.emitJson(r);
    out.result(
      r.queued ? `${r.task} queued: it starts as soon as a slot is free` : `${r.task} is already running`,
    );
  });
}

async function tokensFile(config: string | undefined): Promise<string> {
  if (config !== undefined) {
    const loaded = await loadConfigForCommand(config);
    if (loaded.config.daemon.tokens !== undefined) return loaded.config.daemon.tokens;
  }
  return join(await stateDirForCommand(process.env), "daemon-tokens.json");
}

async function showStatus(opts: GlobalOptions, flags: DaemonFlags): Promise<void> {
  const out = new Output(opts);
  const client = await daemonClient(flags);
  const s = await client.get<DaemonStatus>("/v1/status");
  out.emitJson(s);
  out.result(`daemon at ${client.url}: up since ${s.started}, config loaded ${s.configLoaded}`);
  if (s.tasks.length === 0) out.result("no scheduled task");
  for (const t of s.tasks) {
    const state =
      t.running !== undefined
        ? `RUNNING since ${String(t.running.since)} (${t.running.reason})`
        : t.retryAt !== undefined
          ? `retry at ${String(t.retryAt)}`
          : `next ${t.next !== undefined ? String(t.next) : "-"}`;
    const last =
      t.lastResult !== undefined
        ? `, last ${t.lastResult.ok ? "ok" : "FAILED"} at ${String(t.lastResult.at)}${t.lastResult.ok || t.lastResult.message === undefined ? "" : `: ${t.lastResult.message}`}`
        : "";
    out.result(
      `  ${t.id.padEnd(20)} ${t.schedule.padEnd(14)} ${state}${last}${t.waitingFor !== undefined ? ` (waiting: ${t.waitingFor})` : ""}`,
    );
  }
  const failed = s.recent.filter((r) => !r.ok).slice(0, 5);
  for (const f of failed) out.result(`failed ${f.id} at ${f.ended}: ${f.message}`);
  process.exitCode = s.tasks.some((t) => t.lastResult?.ok === false) ? EXIT.ERROR : EXIT.OK;
}

async function runDaemon(opts: GlobalOptions, flags: DaemonRunFlags): Promise<void> {
  const out = new Output(opts);
  const loaded = await loadConfigForCommand(flags.config);
  const file = loaded.file;
  let config = loaded.config;
  const catalog = await openCatalogForCommand(process.env);
  const log = (level: string, message: string): void => {
    process.stderr.write(`${systemClock.now().toISOString()} ${level.padEnd(7)} ${message}\n`);
  };
  const events = (e: BulwarkEvent): void => {
    if (e.type === "message") log(e.level, `${e.job !== undefined ? `${e.job}: ` : ""}${e.message}`);
  };
  const secrets: string[] = [];
  let password: Promise<string> | undefined;
  const access = { env: process.env, secrets, defaultPassword: () => (password ??= getPassword(opts)) };
  const daemon = new Daemon({
    config,
    access,
    clock: systemClock,
    store: catalog,
    events,
    env: process.env,
    alertState: join(dirname(catalog.path), "daemon-alerts.json"),
  });
  const tokens = config.daemon.tokens ?? join(dirname(catalog.path), "daemon-tokens.json");
  let api: Awaited<ReturnType<typeof startDaemonApi>>;
  try {
    api = await startDaemonApi({
      daemon,
      store: catalog,
      config: () => config,
      tokensFile: tokens,
      clock: systemClock,
      log: (line) => log("info", line),
    });
  } catch (err) {
    catalog.close();
    throw err;
  }
  claimSignals();
  let stopping = false;
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log("info", `${signal}: stopping`);
    const { interrupted } = await daemon.stop(STOP_GRACE_MS);
    // What the interrupted runs started (a source's command, a hook) goes first: a blob worker reading its
    // output would hold the process until it ended.
    killChildren();
    await api.close().catch(() => undefined);
    await releaseAllLocks();
    catalog.close();
    log("info", `stopped${interrupted.length > 0 ? ` (interrupted: ${interrupted.join(", ")})` : ""}`);
    process.exit(EXIT.OK);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGHUP", () => {
    void (async () => {
      try {
        const next = await loadConfig(file, processSecretEnvironment(process.env));
        for (const d of next.warnings) log("warning", formatDiagnostic(d));
        if (next.errors.length > 0 || next.config === undefined) {
          for (const d of next.errors) log("error", formatDiagnostic(d));
          log("error", `SIGHUP: ${file} has errors; the running config is kept`);
          return;
        }
        config = next.config;
        daemon.reload(config);
        await api.reloadTokens();
      } catch (err) {
        log("error", `SIGHUP: ${errorMessage(err)}; the running config is kept`);
      }
    })();
  });
  daemon.start();
  log("info", `API on ${api.url} (tokens in ${tokens})`);
  out.emitJson({ api: api.url });
  await new Promise<never>(() => undefined);
}
