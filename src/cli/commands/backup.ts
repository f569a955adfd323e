/**
 * `bulwark backup [PATH...] [--source ...]`: parses the options, calls the backup operation
 * (src/ops/backup.ts) and renders its events and result.
 */
import type { Command } from "commander";
import { hostname } from "node:os";
import { systemClock } from "../../core/clock.js";
import { BulwarkError } from "../../core/errors.js";
import { formatBytes, formatCount, formatDuration } from "../../core/format.js";
import { backupOperation } from "../../ops/backup.js";
import { normalisePaths } from "../../snapshot/archiver.js";
import { ExcludeMatcher } from "../../snapshot/exclude.js";
import { EXIT } from "../exit-codes.js";
import { createProgress } from "../progress.js";
import { countFiles } from "../scan.js";
import { registerSourceOptions, sourcesFromFlags, type SourceFlags } from "../sources-options.js";
import {
  renderWithProgress,
  withRepository,
  type GlobalOptions,
  warnDamagedSnapshot,
  CONFIG_TARGET_HELP,
} from "../context.js";

interface BackupFlags extends SourceFlags {
  tag: string[];
  host?: string;
  exclude: string[];
  excludeFile: string[];
  parent?: string;
  force?: boolean;
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

export function registerBackup(program: Command, globals: () => GlobalOptions): void {
  const command = program
    .command("backup")
    .option("-c, --config <file>", CONFIG_TARGET_HELP)
    .description("back up files, directories and application sources into a new snapshot")
    .argument("[path...]", "files or directories to back up")
    .option("--tag <tag>", "add a tag to the snapshot (repeatable)", collect, [])
    .option("--host <name>", "host name recorded in the snapshot (default: this machine's)")
    .option("-e, --exclude <pattern>", "exclude paths matching the pattern (repeatable)", collect, [])
    .option("--exclude-file <file>", "read exclude patterns from a file (repeatable)", collect, [])
    .option("--parent <snapshot>", "compare against this snapshot instead of the latest of the same paths")
    .option("--force", "read every file, even unchanged ones")
    .addHelpText(
      "after",
      "\nUnchanged files (same size, mtime, ctime and inode as in the parent snapshot) are not read again.\nUnreadable files are skipped and listed; the exit code is then 3.\nSources (--source) are stored under /sources in the snapshot: a database dump or a command's output\nis streamed, its exit code checked; a failing source fails the backup and no snapshot is saved.",
    );
  registerSourceOptions(command).action(async (paths: string[], flags: BackupFlags) => {
    const sources = sourcesFromFlags(flags, process.env);
    if (paths.length === 0 && sources.virtualFiles.length === 0) {
      throw new BulwarkError("USAGE", "nothing to back up", {
        hint: "name at least one path, or a --source",
      });
    }
    const code = await withRepository(globals(), "write", async ({ repo, out, pool }) => {
      for (const d of sources.descriptions) out.info(`source: ${d}`);
      const progress = createProgress(process.stderr, { enabled: out.progressEnabled, label: "backup" });
      // The total is counted in the background; until it is known the bar shows no percentage.
      const totals: { files?: number; bytes?: number } = {};
      if (out.progressEnabled && paths.length > 0) {
        void ExcludeMatcher.fromOptions(flags.exclude, flags.excludeFile, process.env)
          .then((excludes) => countFiles(normalisePaths(paths), excludes))
          .then(
            (t) => Object.assign(totals, t),
            () => undefined,
          );
      }
      const result = await backupOperation({
        repo,
        pool: pool(),
        clock: systemClock,
        events: renderWithProgress(out, progress, () => totals),
        what: {
          kind: "paths",
          paths,
          virtualFiles: sources.virtualFiles,
          hooks: sources.hooks,
          excludes: flags.exclude,
          excludeFiles: flags.excludeFile,
        },
        env: process.env,
        hostname: flags.host ?? hostname(),
        tags: flags.tag,
        ...(flags.parent !== undefined ? { parent: flags.parent } : flags.force ? { parent: false } : {}),
        onDamagedSnapshot: warnDamagedSnapshot,
      });
      progress.done();
      const s = result.snapshot.summary!;
      const skipped = result.snapshot.skipped ?? [];
      out.emitJson({ snapshot: result.id, ...result.snapshot, skipped });
      out.info(
        `Files: ${formatCount(s.filesNew)} new, ${formatCount(s.filesChanged)} changed, ${formatCount(s.filesUnmodified)} unmodified`,
      );
      out.info(
        `Dirs:  ${formatCount(s.dirsNew)} new, ${formatCount(s.dirsChanged)} changed, ${formatCount(s.dirsUnmodified)} unmodified`,
      );
      out.info(
        `Added to the repository: ${formatBytes(s.dataAdded)} (${formatBytes(s.dataAddedStored)} stored) in ${formatCount(s.blobsAdded)} blobs`,
      );
      out.info(
        `Processed ${formatCount(result.files)} files, ${formatBytes(s.totalBytes)} in ${formatDuration(s.durationMs)}`,
      );
      out.result(`snapshot ${result.id.slice(0, 8)} saved`);
      if (skipped.length > 0) {
        out.warn(
          `warning: ${skipped.length} entr${skipped.length === 1 ? "y" : "ies"} could not be read and are not in the snapshot:`,
        );
        for (const e of skipped) out.warn(`  ${e.path}: ${e.error}`);
        return EXIT.PARTIAL;
      }
      return EXIT.OK;
    });
    process.exitCode = code;
  });
}
