/**
 * `bulwark verify`: the structure of each copy, then its data with coverage tracked in the catalog (the
 * operation is src/ops/verify-targets.ts, which the daemon calls too). On a bare `--repo`, that repository;
 * with a config file, every target of its jobs (or those named with --target, or the targets of --dataset),
 * each opened read-only. This file parses the options and renders the reports.
 */
import type { Command } from "commander";

import { redact } from "../../backend/registry.js";
import type { Catalog } from "../../catalog/catalog.js";
import { parseBudget, type Budget } from "../../config/budget.js";
import { parseFixedDuration } from "../../config/duration.js";
import { systemClock } from "../../core/clock.js";
import { BulwarkError, errorMessage } from "../../core/errors.js";
import type { EventSink } from "../../core/events.js";
import type { VerifyOutcome } from "../../ops/verify.js";
import {
  findingLines,
  verifySubjects,
  verifySummary,
  verifyTargets,
  type TargetReport,
  type VerifyTargetsResult,
} from "../../ops/verify-targets.js";
import { Repository } from "../../repository/repository.js";
import { loadConfigForCommand, withRepoTarget } from "../config-file.js";
import { Output, getPassword, openBackend, renderWithProgress, type GlobalOptions } from "../context.js";
import { EXIT } from "../exit-codes.js";
import { createProgress, type ProgressSink } from "../progress.js";
import { openCatalogForCommand } from "./catalog-access.js";

interface VerifyFlags {
  config?: string;
  target: string[];
  dataset?: string;
  budget?: string;
  fullEvery?: string;
  new?: boolean;
  catalog: boolean;
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

export function registerVerify(program: Command, globals: () => GlobalOptions): void {
  program
    .command("verify")
    .description("verify every copy's structure and data, reading least recently verified packs first")
    .option(
      "-c, --config <file>",
      "verify the targets of this config file (env BULWARK_CONFIG); -r TARGET then names one, as --target",
    )
    .option("--target <name>", "only this target of the config (repeatable)", collect, [])
    .option("--dataset <name>", "only the targets of this dataset's jobs")
    .option("--budget <size|duration>", "read at most this much per target: e.g. 2GiB, 500MB, 20m")
    .option(
      "--full-every <duration>",
      "a pack read within this period is fresh and not read again (e.g. 30d)",
    )
    .option("--new", "read only packs never read before (written since the last run), and damaged ones")
    .option("--no-catalog", "remember nothing: read every due pack, record no coverage")
    .addHelpText(
      "after",
      `
Coverage is kept in the catalog per repository and pack: when its data was last read and whether it was
sound. Each run reads packs found damaged first, then packs never read, then the least recently read, within
the budget; with --full-every, packs read within the period are skipped, so daily runs with a budget of a
day's share read every pack once per period. Every pack read is recorded at once: a run killed half-way
keeps what it read. Without --config, the repository of --repo (or BULWARK_REPOSITORY) is verified.
On a target that hashes files itself (a vault), every pack not read is checked against the SHA-256 its
index records, downloading nothing and outside the budget; a mismatch is recorded damaged and read next.
With several targets, the copies of each snapshot must reference the same root tree (cross-copy check).
Exit code 0 when no error is found, 1 when any target has errors or could not be verified, or copies differ.`,
    )
    .action(async (flags: VerifyFlags) => {
      const opts = globals();
      const out = new Output(opts);
      const budget = flags.budget === undefined ? undefined : budgetOption(flags.budget);
      const fullEveryMs = flags.fullEvery === undefined ? undefined : durationOption(flags.fullEvery);
      const useConfig =
        flags.config !== undefined ||
        flags.target.length > 0 ||
        flags.dataset !== undefined ||
        (opts.repo === undefined && process.env.BULWARK_REPOSITORY === undefined);
      let catalog: Catalog | undefined;
      if (flags.catalog) {
        try {
          catalog = await openCatalogForCommand(process.env);
        } catch (err) {
          out.warn(`warning: coverage is not remembered in this run: ${errorMessage(err)}`);
        }
      }
      // The lines come from the reports as each target ends, as before the stream existed: findings are
      // results (shown with --quiet), the summary is not; the stream's messages say the same for a log.
      let bar: { target: string | undefined; sink: ProgressSink; render: EventSink } | undefined;
      const events: EventSink = (e) => {
        if (e.type !== "progress") return;
        if (bar === undefined || bar.target !== e.target) {
          bar?.sink.done();
          const sink = createProgress(process.stderr, {
            enabled: out.progressEnabled,
            label: `verify ${e.target ?? ""}`,
          });
          bar = { target: e.target, sink, render: renderWithProgress(out, sink) };
        }
        bar.render(e);
      };
      const onTarget = (r: TargetReport): void => {
        bar?.sink.done();
        bar = undefined;
        if (r.error !== undefined) {
          out.warn(`error: ${r.target}: ${r.error}`);
          return;
        }
        for (const f of r.findings ?? []) for (const line of findingLines(r.target, f)) out.result(line);
        out.info(verifySummary(r.target, r as VerifyOutcome));
      };
      let result: VerifyTargetsResult;
      try {
        let password: Promise<string> | undefined;
        const defaultPassword = () => (password ??= getPassword(opts));
        const common = {
          clock: systemClock,
          events,
          onTarget,
          ...(catalog !== undefined ? { store: catalog } : {}),
        };
        if (useConfig) {
          const loaded = await loadConfigForCommand(flags.config);
          result = await verifyTargets({
            ...common,
            config: loaded.config,
            access: { env: process.env, defaultPassword, secrets: [] },
            targets: withRepoTarget(loaded, flags.config !== undefined ? opts.repo : undefined, flags.target),
            ...(flags.dataset !== undefined ? { dataset: flags.dataset } : {}),
            ...(budget !== undefined ? { budget } : {}),
            ...(fullEveryMs !== undefined ? { fullEveryMs } : {}),
            newOnly: flags.new === true,
          });
        } else {
          const location = opts.repo ?? process.env.BULWARK_REPOSITORY!;
          result = await verifySubjects({
            ...common,
            subjects: [
              {
                name: redact(location),
                location,
                open: async () => {
                  const backend = await openBackend(location, false, { readOnly: true });
                  try {
                    return await Repository.open(backend, await defaultPassword());
                  } catch (err) {
                    await backend.close().catch(() => undefined);
                    throw err;
                  }
                },
                datasets: [],
                options: { budget, fullEveryMs, newOnly: flags.new === true, newFirst: true },
              },
            ],
          });
        }
        for (const f of result.crossCopy) out.result(`error: ${f.message}`);
      } finally {
        bar?.sink.done();
        catalog?.close();
      }
      const { targets: reports, crossCopy } = result;
      out.emitJson({ ok: result.ok, targets: reports, crossCopy });
      const failed = reports.filter((r) => r.ok !== true);
      const differ =
        crossCopy.length > 0
          ? `; ${crossCopy.length} snapshot${crossCopy.length === 1 ? "" : "s"} differ between copies`
          : "";
      out.result(
        failed.length === 0
          ? crossCopy.length === 0
            ? `no errors were found on ${reports.length === 1 ? reports[0]!.target : `${reports.length} targets`}`
            : `every target is sound on its own${differ}`
          : `${failed.length} of ${reports.length} target${reports.length === 1 ? "" : "s"} failed verification: ${failed.map((r) => r.target).join(", ")}${differ}`,
      );
      process.exitCode = failed.length === 0 && crossCopy.length === 0 ? EXIT.OK : EXIT.ERROR;
    });
}

function budgetOption(value: string): Budget {
  const b = parseBudget(value);
  if ("error" in b) {
    throw new BulwarkError("USAGE", `--budget ${value}: ${b.error}`, {
      hint: "give a size (2GiB, 500MB) or a duration (20m, 1h30m)",
    });
  }
  return b;
}

function durationOption(value: string): number {
  const d = parseFixedDuration(value);
  if ("error" in d) {
    throw new BulwarkError("USAGE", `--full-every ${value}: ${d.error}`, { hint: "e.g. --full-every 30d" });
  }
  return d.ms;
}
