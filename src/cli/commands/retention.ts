import type { Command } from "commander";
import type { RetentionMode } from "../../backend/backend.js";
import { BulwarkError } from "../../core/errors.js";
import { formatCount } from "../../core/format.js";
import { systemClock } from "../../core/clock.js";
import { extendRetention } from "../../ops/extend-retention.js";
import { EXIT } from "../exit-codes.js";
import { withRepository, type GlobalOptions, CONFIG_TARGET_HELP } from "../context.js";

export function registerRetention(program: Command, globals: () => GlobalOptions): void {
  program
    .command("retention")
    .option("-c, --config <file>", CONFIG_TARGET_HELP)
    .description(
      "keep every object that kept snapshots need locked for --days from now (targets with Object Lock)",
    )
    .requiredOption("--days <n>", "protection period from now, in days")
    .option("--mode <mode>", "compliance or governance for objects not locked yet", "compliance")
    .option("-n, --dry-run", "report lock drift, extend nothing")
    .addHelpText(
      "after",
      "\nRetention follows the data: an object written long ago that today's snapshots still use is extended, so\nevery kept snapshot stays protected for the whole period. Objects whose lock would lapse first are\nreported as lock drift. Exit code 1 when an object could not be read or extended.",
    )
    .action(async (flags: { days: string; mode: string; dryRun?: boolean }) => {
      const days = Number(flags.days);
      if (!(days > 0))
        throw new BulwarkError(
          "USAGE",
          `--days must be a positive number, got ${JSON.stringify(flags.days)}`,
        );
      if (flags.mode !== "compliance" && flags.mode !== "governance") {
        throw new BulwarkError(
          "USAGE",
          `--mode must be compliance or governance, got ${JSON.stringify(flags.mode)}`,
        );
      }
      const code = await withRepository(globals(), "write", async ({ repo, out }) => {
        const report = await extendRetention({
          repo,
          clock: systemClock,
          days,
          mode: flags.mode as RetentionMode,
          dryRun: flags.dryRun === true,
        });
        out.emitJson(report);
        out.info(
          `checked ${formatCount(report.checked)} objects; every kept object must stay locked until ${report.requiredUntil}`,
        );
        if (report.drift.length > 0) {
          out.result(`lock drift: ${formatCount(report.drift.length)} objects would lapse earlier:`);
          for (const d of report.drift.slice(0, 50))
            out.result(`  ${d.file}: ${d.until ? `locked until ${d.until}` : "not locked"}`);
          if (report.drift.length > 50) out.result(`  ... and ${report.drift.length - 50} more`);
        }
        out.result(
          flags.dryRun ? "dry run: nothing extended" : `extended ${formatCount(report.extended)} objects`,
        );
        for (const e of report.errors) out.warn(`error: ${e.file}: ${e.error}`);
        return report.errors.length > 0 ? EXIT.ERROR : EXIT.OK;
      });
      process.exitCode = code;
    });
}
