/**
 * `bulwark check [--read-data | --read-data-subset SPEC]`: parses the options, calls the check operation
 * (src/ops/check.ts) and renders its findings; the exit code says whether any error was found.
 */
import type { Command } from "commander";
import { systemClock } from "../../core/clock.js";
import { formatBytes, formatCount } from "../../core/format.js";
import { checkRepository } from "../../ops/check.js";
import { parseReadDataSubset, type CheckOptions } from "../../verify/checker.js";
import { EXIT } from "../exit-codes.js";
import { createProgress } from "../progress.js";
import { renderWithProgress, withRepository, type GlobalOptions, CONFIG_TARGET_HELP } from "../context.js";

export function registerCheck(program: Command, globals: () => GlobalOptions): void {
  program
    .command("check")
    .option("-c, --config <file>", CONFIG_TARGET_HELP)
    .description("verify the repository's structure and, with --read-data, every byte of data")
    .option("--read-data", "read and verify all pack data")
    .option("--read-data-subset <spec>", "read a subset: N% (random) or n/t (part n of t)")
    .addHelpText(
      "after",
      "\nExit code 0 when no error is found, 1 otherwise. Findings name the damaged pack, blobs,\nand the snapshots and files that need them.",
    )
    .action(async (flags: { readData?: boolean; readDataSubset?: string }) => {
      const code = await withRepository(globals(), "read", async ({ repo, out, pool }) => {
        const readData: CheckOptions["readData"] = flags.readDataSubset
          ? parseReadDataSubset(flags.readDataSubset)
          : flags.readData
            ? { kind: "all" }
            : false;
        const progress = createProgress(process.stderr, { enabled: out.progressEnabled, label: "check" });
        const { findings, stats, errors } = await checkRepository({
          repo,
          pool: pool(),
          clock: systemClock,
          events: renderWithProgress(out, progress),
          readData,
        });
        progress.done();
        out.emitJson({ ok: errors === 0, errors, findings, stats });
        for (const f of findings) {
          out.result(`${f.severity}: ${f.message}`);
          if (f.snapshots?.length)
            out.result(`  affects snapshots: ${f.snapshots.map((s) => s.slice(0, 8)).join(" ")}`);
          for (const file of (f.files ?? []).slice(0, 50)) out.result(`  affects ${file}`);
          if ((f.files?.length ?? 0) > 50) out.result(`  ... and ${f.files!.length - 50} more`);
        }
        out.info(
          `checked ${formatCount(stats.snapshots)} snapshots, ${formatCount(stats.trees)} trees, ${formatCount(stats.packs)} packs` +
            (readData
              ? `; read ${formatCount(stats.packsRead)} packs (${formatBytes(stats.bytesRead)})`
              : ""),
        );
        if (errors > 0) {
          out.result(`${errors} error${errors === 1 ? "" : "s"} found`);
          return EXIT.ERROR;
        }
        out.result("no errors were found");
        return EXIT.OK;
      });
      process.exitCode = code;
    });
}
