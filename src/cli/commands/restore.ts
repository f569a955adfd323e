import type { Command } from "commander";
import { resolve } from "node:path";
import { formatBytes, formatCount, formatDuration } from "../../core/format.js";
import { restore } from "../../snapshot/restorer.js";
import { findSnapshot } from "../../snapshot/snapshot.js";
import { EXIT } from "../exit-codes.js";
import { BulwarkError } from "../../core/errors.js";
import {
  registerRestoreTargetOptions,
  restoreSource,
  wantsSourceRestore,
  type RestoreTargetFlags,
} from "../sources-options.js";
import { createProgress } from "../progress.js";
import { withRepository, type GlobalOptions, warnDamagedSnapshot } from "../context.js";

const collect = (value: string, previous: string[]): string[] => [...previous, value];

export function registerRestore(program: Command, globals: () => GlobalOptions): void {
  const command = program
    .command("restore")
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
      const code = await withRepository(globals(), "read", async ({ repo, out, pool }) => {
        const started = Date.now();
        await repo.loadIndex();
        const snapshot = await findSnapshot(
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
        const targetDir = flags.target!;
        out.info(
          `restoring snapshot ${snapshot.id.slice(0, 8)} of ${snapshot.paths.join(" ")} to ${resolve(targetDir)}`,
        );
        const progress = createProgress(process.stderr, { enabled: out.progressEnabled, label: "restore" });
        let files = 0;
        let bytesTotal = 0;
        let bytes = 0;
        let errors = 0;
        const result = await restore(repo, pool(), snapshot.tree, {
          target: resolve(targetDir),
          include: flags.include,
          reporter: {
            planned: (f, b) => {
              files = f;
              bytesTotal = b;
            },
            progress: (b) => {
              bytes = b;
              progress.update({ filesDone: 0, filesTotal: files, bytesDone: bytes, bytesTotal, errors });
            },
            error: (path, error) => {
              errors++;
              progress.log(`error: ${path}: ${error}`);
            },
          },
        });
        progress.done();
        out.emitJson({
          snapshot: snapshot.id,
          target: resolve(targetDir),
          ...result,
          durationMs: Date.now() - started,
        });
        out.info(
          `restored ${formatCount(result.files)} files, ${formatCount(result.dirs)} dirs, ${formatCount(result.links)} hard links, ${formatBytes(result.bytes)} written in ${formatDuration(Date.now() - started)}`,
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
