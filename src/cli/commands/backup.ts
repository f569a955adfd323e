import type { Command } from "commander";
import { existsSync } from "node:fs";
import { hostname } from "node:os";
import { BulwarkError } from "../../core/errors.js";
import { formatBytes, formatCount, formatDuration } from "../../core/format.js";
import { backup, normalisePaths } from "../../snapshot/archiver.js";
import { ExcludeMatcher } from "../../snapshot/exclude.js";
import { loadAllSnapshots, findSnapshot, type SnapshotWithId } from "../../snapshot/snapshot.js";
import { EXIT } from "../exit-codes.js";
import { createProgress } from "../progress.js";
import { countFiles } from "../scan.js";
import {
  backupWithSources,
  registerSourceOptions,
  sourcesFromFlags,
  type SourceFlags,
} from "../sources-options.js";
import { withRepository, type GlobalOptions, warnDamagedSnapshot } from "../context.js";

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
      const excludes = await ExcludeMatcher.fromOptions(flags.exclude, flags.excludeFile, process.env);
      const host = flags.host ?? hostname();
      const normalised = paths.length > 0 ? normalisePaths(paths) : [];
      for (const d of sources.descriptions) out.info(`source: ${d}`);
      if (paths.length > 0 && !normalised.some((p) => existsSync(p))) {
        throw new BulwarkError(
          "USAGE",
          `nothing to back up: ${normalised.join(", ")} ${normalised.length === 1 ? "does" : "do"} not exist`,
          {
            hint: "check the paths; a backup with only missing paths would save an empty snapshot",
          },
        );
      }
      await repo.loadIndex();
      let parent: SnapshotWithId | undefined;
      if (flags.parent) parent = await findSnapshot(repo, flags.parent, {}, warnDamagedSnapshot);
      else if (!flags.force) {
        const key = JSON.stringify([...normalised, ...sources.virtualFiles.map((v) => v.path)].sort());
        parent = (await loadAllSnapshots(repo, warnDamagedSnapshot))
          .filter((s) => s.hostname === host && JSON.stringify([...s.paths].sort()) === key)
          .at(-1);
      }
      if (parent) out.info(`using parent snapshot ${parent.id.slice(0, 8)}`);

      const progress = createProgress(process.stderr, { enabled: out.progressEnabled, label: "backup" });
      const totals: { files?: number; bytes?: number } = {};
      if (out.progressEnabled) {
        void countFiles(normalised, excludes).then(
          (t) => Object.assign(totals, t),
          () => undefined,
        );
      }
      let filesDone = 0;
      let bytesDone = 0;
      let errors = 0;
      const result = await backupWithSources(
        sources,
        (virtualFiles) =>
          backup(repo, pool(), {
            paths: normalised,
            ...(virtualFiles.length > 0 ? { virtualFiles } : {}),
            tags: flags.tag,
            hostname: host,
            excludes,
            ...(parent ? { parent } : {}),
            reporter: {
              fileDone: (path, bytes) => {
                filesDone++;
                bytesDone += bytes;
                progress.update({
                  filesDone,
                  bytesDone,
                  ...(totals.files === undefined
                    ? {}
                    : { filesTotal: totals.files, bytesTotal: totals.bytes }),
                  current: path,
                  errors,
                });
              },
              skipped: (entry) => {
                errors++;
                progress.log(`warning: skipped ${entry.path}: ${entry.error}`);
              },
            },
          }),
        (line) => progress.log(line),
      );
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
        `Processed ${formatCount(filesDone)} files, ${formatBytes(s.totalBytes)} in ${formatDuration(s.durationMs)}`,
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
