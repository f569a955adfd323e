/**
 * `bulwark restore SNAPSHOT --target DIR | --source-path P --pipe-to/--to-sqlite/--to-postgres`: parses the
 * options, calls the restore operation (src/ops/restore.ts) and renders the result.
 */
import type { Command } from "commander";
import { resolve } from "node:path";
import { systemClock } from "../../core/clock.js";
import { formatBytes, formatCount, formatDuration } from "../../core/format.js";
import { restoreFiles, snapshotToRestore } from "../../ops/restore.js";
import { EXIT } from "../exit-codes.js";
import { BulwarkError } from "../../core/errors.js";
import {
  registerRestoreTargetOptions,
  restoreSource,
  wantsSourceRestore,
  type RestoreTargetFlags,
} from "../sources-options.js";
import { createProgress } from "../progress.js";
import {
  renderWithProgress,
  withRepository,
  type GlobalOptions,
  warnDamagedSnapshot,
  CONFIG_TARGET_HELP,
} from "../context.js";

const collect = (value: string, previous: string[]): string[] => [...previous, value];

export function registerRestore(program: Command, globals: () => GlobalOptions): void {
  const command = program
    .command("restore")
    .option("-c, --config <file>", CONFIG_TARGET_HELP)
    .description("restore a snapshot into a directory, or a source into a database or command")
    .argument("<snapshot>", "snapshot id, a unique prefix, or latest")
    .option(
      "-t, --target <dir>",
      "directory to restore into (paths are restored below it as in the snapshot)",
    )
    .option(
      "-i, --include <path>",
      "restore only this snapshot path and what is below it (repeatable)",
      collect,
      [],
    )
    .option("--host <name>", "with latest: the latest snapshot of this host")
    .addHelpText(
      "after",
      "\nFiles whose data is missing or damaged in the repository are not left behind half-written:\nthey are removed, listed, and the exit code is 1. Everything else is restored.\nSources: --source-path /sources/NAME with --pipe-to CMD, --to-sqlite PATH or --to-postgres URL.",
    );
  registerRestoreTargetOptions(command).action(
    async (
      ref: string,
      flags: RestoreTargetFlags & { target?: string; include: string[]; host?: string },
    ) => {
      if (!wantsSourceRestore(flags) && flags.target === undefined) {
        throw new BulwarkError("USAGE", "restore needs --target DIR", {
          hint: "or --pipe-to, --to-sqlite or --to-postgres with --source-path for an application source",
        });
      }
      if (flags.target === "") {
        throw new BulwarkError("USAGE", "--target is empty", {
          hint: "name the directory to restore into, e.g. --target ./restored (. for the current one)",
        });
      }
      const code = await withRepository(globals(), "read", async ({ repo, out, pool }) => {
        const snapshot = await snapshotToRestore(
          repo,
          ref,
          flags.host ? { hosts: [flags.host] } : {},
          warnDamagedSnapshot,
        );
        if (wantsSourceRestore(flags)) {
          const report = await restoreSource(repo, snapshot, flags, process.env);
          out.emitJson({ snapshot: snapshot.id, ...report });
          for (const line of report.lines) out.result(line);
          return report.ok ? EXIT.OK : EXIT.ERROR;
        }
        out.info(
          `restoring snapshot ${snapshot.id.slice(0, 8)} of ${snapshot.paths.join(" ")} to ${resolve(flags.target!)}`,
        );
        const progress = createProgress(process.stderr, { enabled: out.progressEnabled, label: "restore" });
        const result = await restoreFiles({
          repo,
          pool: pool(),
          clock: systemClock,
          events: renderWithProgress(out, progress),
          snapshot,
          target: flags.target!,
          include: flags.include,
        });
        progress.done();
        out.emitJson(result);
        out.info(
          `restored ${formatCount(result.files)} files, ${formatCount(result.dirs)} dirs, ${formatCount(result.links)} hard links, ${formatBytes(result.bytes)} written in ${formatDuration(result.durationMs)}`,
        );
        if (result.errors.length > 0) {
          out.warn(
            `${result.errors.length} entr${result.errors.length === 1 ? "y" : "ies"} could not be restored:`,
          );
          for (const e of result.errors) out.warn(`  ${e.path}: ${e.error}`);
          out.warn(
            "run `bulwark check --read-data` for the full picture; restore them from another copy if you have one",
          );
          return EXIT.ERROR;
        }
        return EXIT.OK;
      });
      process.exitCode = code;
    },
  );
}
