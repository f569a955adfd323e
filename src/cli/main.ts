#!/usr/bin/env node
/**
 * The bulwark command: a thin layer over the library. The only place that touches argv, stdout and exit codes.
 */
import { killChildren } from "../sources/process.js";
import { signalsClaimed } from "./signals.js";
import { Command, CommanderError } from "commander";
import { errnoCode, findBulwarkError, errorMessage } from "../core/errors.js";
import { registerBackup } from "./commands/backup.js";
import { registerDaemon } from "./commands/daemon.js";
import { registerCheck } from "./commands/check.js";
import { registerVerify } from "./commands/verify.js";
import { registerRepair } from "./commands/repair.js";
import { registerDrill } from "./commands/drill.js";
import { registerForget } from "./commands/forget.js";
import { registerInit } from "./commands/init.js";
import { registerKey } from "./commands/key.js";
import { registerRestore } from "./commands/restore.js";
import { registerSnapshotCommands } from "./commands/snapshots.js";
import { registerUnlock } from "./commands/unlock.js";
import { registerServeRepo } from "./commands/serve-repo.js";
import { registerRetention } from "./commands/retention.js";
import { registerConfig } from "./commands/config.js";
import { registerPosture } from "./commands/posture.js";
import { registerCatalog } from "./commands/catalog.js";
import { registerReport } from "./commands/report.js";
import { registerRun } from "./commands/run.js";
import { registerCopy } from "./commands/copy.js";
import { registerUntamper } from "./commands/untamper.js";
import { registerDr } from "./commands/dr.js";
import type { GlobalOptions } from "./context.js";
import { releaseAllLocks } from "../repository/lock.js";
import { EXIT, EXIT_CODES_HELP, exitCodeFor } from "./exit-codes.js";

const program = new Command();
program
  .name("bulwark")
  .description("Encrypted, deduplicating backups that prove the 3-2-1-1-0 rule holds.")
  .version("0.1.0")
  .option(
    "-r, --repo <location>",
    "repository: PATH, sftp:user@host/path, s3:https://host/bucket/prefix or rest:https://host:port/ (env BULWARK_REPOSITORY)",
  )
  .option(
    "-p, --password-file <file>",
    "read the repository password from a file (env BULWARK_PASSWORD_FILE, BULWARK_PASSWORD)",
  )
  .option("--json", "machine-readable output on stdout")
  .option("-q, --quiet", "only errors and results")
  .option("--no-lock", "do not lock the repository (read-only commands only; risky)")
  .addHelpText(
    "after",
    `\n${EXIT_CODES_HELP}\n\nExample:\n  export BULWARK_REPOSITORY=/srv/backup BULWARK_PASSWORD_FILE=~/.bulwark-pass\n  bulwark init && bulwark backup ~/documents && bulwark check --read-data`,
  )
  .showHelpAfterError("(run with --help for usage)")
  .exitOverride();

// A repository command's own `-c CONFIG` (src/cli/context.ts, CONFIG_TARGET_HELP) travels with the global
// options, so withRepository can open the target `-r` names.
let commandConfig: string | undefined;
program.hook("preAction", (_program, action) => {
  const config = action.opts<{ config?: unknown }>().config;
  commandConfig = typeof config === "string" ? config : undefined;
});

const globals = (): GlobalOptions => {
  const o = program.opts<{
    repo?: string;
    passwordFile?: string;
    json?: boolean;
    quiet?: boolean;
    lock?: boolean;
  }>();
  return {
    ...(o.repo === undefined ? {} : { repo: o.repo }),
    ...(o.passwordFile === undefined ? {} : { passwordFile: o.passwordFile }),
    json: o.json === true,
    quiet: o.quiet === true,
    noLock: o.lock === false,
    ...(commandConfig === undefined ? {} : { config: commandConfig }),
  };
};

registerInit(program, globals);
registerBackup(program, globals);
registerCopy(program, globals);
registerRun(program, globals);
registerSnapshotCommands(program, globals);
registerRestore(program, globals);
registerCheck(program, globals);
registerVerify(program, globals);
registerRepair(program, globals);
registerDrill(program, globals);
registerForget(program, globals);
registerKey(program, globals);
registerUnlock(program, globals);
registerRetention(program, globals);
registerUntamper(program, globals);
registerConfig(program, globals);
registerPosture(program, globals);
registerCatalog(program, globals);
registerReport(program, globals);
registerServeRepo(program, globals);
registerDr(program, globals);
registerDaemon(program, globals);

if (process.env.BULWARK_DEBUG_MEMORY === "1") traceMemory();

// What escapes every handler (an error event nobody listens to, a rejection nobody awaits) is a bug, and is
// reported as one line like any other (docs/design.md §23), not as Node's stack dump; the exit code stays 1.
for (const event of ["uncaughtException", "unhandledRejection"] as const) {
  process.on(event, (err: unknown) => {
    process.stderr.write(`error: internal error: ${errorMessage(err)}\n`);
    process.stderr.write(
      "hint: this is a bug in Bulwark; please report it with the output of BULWARK_DEBUG=1\n",
    );
    if (process.env.BULWARK_DEBUG && err instanceof Error && err.stack)
      process.stderr.write(`${err.stack}\n`);
    process.exit(EXIT.ERROR);
  });
}

// `bulwark ls latest | head` closes our stdout early: that is the reader's choice, not an error.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(EXIT.OK);
  throw err;
});

// Ctrl-C or a service stop: remove our repository locks, so nobody has to wait for them to go stale.
let interrupted = false;
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    if (signalsClaimed()) return;
    if (interrupted) process.exit(EXIT.CANCELLED);
    interrupted = true;
    process.stderr.write(
      `\ninterrupted (${signal}): releasing locks; repository data already written stays consistent\n`,
    );
    // A source's command still writing would keep a blob worker, and so this process, waiting.
    killChildren();
    void releaseAllLocks().finally(() => process.exit(EXIT.CANCELLED));
  });
}

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode === 0 ? EXIT.OK : EXIT.ERROR;
  } else {
    const known = findBulwarkError(err);
    const json = globals().json;
    if (json) {
      process.stdout.write(
        JSON.stringify(
          { error: { code: known?.code ?? "INTERNAL", message: errorMessage(err), hint: known?.hint } },
          null,
          2,
        ) + "\n",
      );
    }
    if (known) {
      process.stderr.write(`error: ${known.message}\n`);
      if (known.hint) process.stderr.write(`hint: ${known.hint}\n`);
    } else if (err instanceof Error && errnoCode(err)?.startsWith("E") === true) {
      // A system call failed (ENOENT, EACCES, ENOSPC...): Node's message names the call and the path.
      process.stderr.write(`error: ${err.message}\n`);
    } else {
      // Not a condition we anticipated: a bug. No stack for the user unless asked (BULWARK_DEBUG=1).
      process.stderr.write(`error: internal error: ${errorMessage(err)}\n`);
      process.stderr.write(
        "hint: this is a bug in Bulwark; please report it with the output of BULWARK_DEBUG=1\n",
      );
      if (process.env.BULWARK_DEBUG && err instanceof Error && err.stack)
        process.stderr.write(`${err.stack}\n`);
    }
    process.exitCode = exitCodeFor(err);
  }
}

/** Diagnostics for tuning: the main thread's memory at its RSS peak, printed at exit. */
function traceMemory(): void {
  let peak = process.memoryUsage();
  setInterval(() => {
    const now = process.memoryUsage();
    if (now.rss > peak.rss) peak = now;
  }, 25).unref();
  process.on("exit", () => {
    const mib = Object.entries(peak).map(([k, v]) => `${k}=${Math.round(v / 1048576)}MiB`);
    process.stderr.write(`memory peak: ${mib.join(" ")}\n`);
  });
}
