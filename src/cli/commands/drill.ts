/**
 * `bulwark drill`: restore a copy of each dataset into a sandbox, prove it (content compared with the
 * snapshot, the dataset's validators, a spot check against the live files), time it and record it in the
 * catalog (the drill operation, src/ops/drill.ts). Copies are drilled in rotation unless one is named.
 */
import type { Command } from "commander";

import { parseFixedDuration } from "../../config/duration.js";
import type { Catalog } from "../../catalog/catalog.js";
import { systemClock } from "../../core/clock.js";
import { BulwarkError, errorMessage, findBulwarkError } from "../../core/errors.js";
import { formatBytes, formatDuration } from "../../core/format.js";
import { drillDataset, type DrillReport } from "../../ops/drill.js";
import { scrub } from "../../ops/targets.js";
import { loadConfigForCommand, oneRepoTarget } from "../config-file.js";
import { Output, getPassword, renderWithProgress, type GlobalOptions } from "../context.js";
import { EXIT } from "../exit-codes.js";
import { createProgress } from "../progress.js";
import { openCatalogForCommand } from "./catalog-access.js";

interface DrillFlags {
  config?: string;
  dataset?: string;
  target?: string;
  snapshot?: string;
  randomWithin?: string;
  sandbox?: string;
  keepSandbox?: boolean;
  isolation: boolean;
  spotCheck?: string;
  catalog: boolean;
}

export function registerDrill(program: Command, globals: () => GlobalOptions): void {
  program
    .command("drill")
    .description("restore a copy into a sandbox, validate it, time it and record it (a recovery drill)")
    .option(
      "-c, --config <file>",
      "the config file (env BULWARK_CONFIG; default ./bulwark.yaml); -r TARGET names a target, as --target",
    )
    .option("--dataset <name>", "only this dataset (default: every dataset with a job)")
    .option(
      "--target <name>",
      "drill this copy (default: the copies in rotation, least recently drilled first)",
    )
    .option("--snapshot <id>", "drill this snapshot (id or prefix; default: the newest of the dataset)")
    .option("--random-within <duration>", "drill a random snapshot taken within this period (e.g. 30d)")
    .option("--sandbox <dir>", "make the sandbox under this directory (default: the system's temporary one)")
    .option("--keep-sandbox", "keep the restored sandbox for inspection (its path is printed)")
    .option("--no-isolation", "run validator commands without a network namespace even as root")
    .option(
      "--spot-check <n>",
      "live files compared with the snapshot (default: the dataset's drill.spotCheck)",
    )
    .option("--no-catalog", "record nothing (the drill does not count as evidence)")
    .addHelpText(
      "after",
      `
A drill restores the snapshot into a fresh sandbox directory, compares every file with the content the
snapshot records (each blob's id recomputed from the bytes on disk), runs the dataset's validators
(datasets.<name>.drill.validators: paths, sqlite, postgres into a throwaway cluster, commands) and
compares a sample of the live files with the snapshot (spot check). As root, validator commands run in a
network namespace with only loopback, so a drill cannot reach production. The restore's duration and
throughput (RTO) and the snapshot's age (RPO) are recorded in the catalog with every finding; the sandbox
is removed afterwards, also on failure and on Ctrl-C. \`bulwark posture\` counts a passing drill within the
policy's drills.every.

Exit codes:
  0   every drill passed
  1   a drill failed (a validator, a content mismatch, a restore error) or could not run
  130 interrupted (the sandbox is removed)`,
    )
    .action(async (flags: DrillFlags) => {
      const opts = globals();
      const out = new Output(opts);
      if (flags.snapshot !== undefined && flags.randomWithin !== undefined) {
        throw new BulwarkError("USAGE", "--snapshot and --random-within exclude each other", {
          hint: "name one snapshot, or let the drill pick one within a period",
        });
      }
      const randomWithinMs =
        flags.randomWithin === undefined ? undefined : durationOption("--random-within", flags.randomWithin);
      const spotCheck =
        flags.spotCheck === undefined ? undefined : countOption("--spot-check", flags.spotCheck);
      const loaded = await loadConfigForCommand(flags.config);
      const config = loaded.config;
      // `-r NAME` names a target of the config, as --target does.
      const target = oneRepoTarget(loaded, opts.repo, flags.target);
      if (target !== undefined) flags.target = target;
      if (flags.dataset !== undefined && config.datasets[flags.dataset] === undefined) {
        const names = Object.keys(config.datasets);
        throw new BulwarkError("USAGE", `unknown dataset ${JSON.stringify(flags.dataset)}`, {
          hint: names.length > 0 ? `the datasets are ${names.join(", ")}` : "the config declares no dataset",
        });
      }
      const datasets =
        flags.dataset !== undefined
          ? [flags.dataset]
          : Object.keys(config.datasets).filter((d) =>
              Object.values(config.jobs).some((j) => j.dataset === d),
            );
      if (datasets.length === 0) {
        throw new BulwarkError("USAGE", "no dataset to drill", { hint: "add a job that backs a dataset up" });
      }
      if (flags.target !== undefined && flags.dataset === undefined && datasets.length > 1) {
        throw new BulwarkError("USAGE", "--target needs --dataset when the config has several datasets", {
          hint: `e.g. --dataset ${datasets[0]} --target ${flags.target}`,
        });
      }
      let catalog: Catalog | undefined;
      if (flags.catalog) {
        try {
          catalog = await openCatalogForCommand(process.env);
        } catch (err) {
          out.warn(`warning: this drill is not recorded: ${errorMessage(err)}`);
        }
      }
      let password: Promise<string> | undefined;
      const secrets: string[] = [];
      const access = { env: process.env, defaultPassword: () => (password ??= getPassword(opts)), secrets };
      const reports: DrillReport[] = [];
      const errors: { dataset: string; error: string; code?: string }[] = [];
      try {
        for (const dataset of datasets) {
          const progress = createProgress(process.stderr, {
            enabled: out.progressEnabled,
            label: `drill ${dataset}`,
          });
          try {
            const report = await drillDataset({
              config,
              dataset,
              access,
              clock: systemClock,
              events: renderWithProgress(out, progress),
              ...(flags.target !== undefined ? { target: flags.target } : {}),
              ...(flags.snapshot !== undefined ? { snapshot: flags.snapshot } : {}),
              ...(randomWithinMs !== undefined ? { randomWithinMs } : {}),
              ...(catalog ? { store: catalog } : {}),
              ...(flags.sandbox !== undefined ? { sandboxRoot: flags.sandbox } : {}),
              ...(flags.keepSandbox === true ? { keepSandbox: true } : {}),
              ...(flags.isolation ? {} : { noIsolation: true }),
              ...(spotCheck !== undefined ? { spotCheck } : {}),
              env: process.env,
            });
            progress.done();
            reports.push(report);
            printReport(out, report);
          } catch (err) {
            progress.done();
            const known = findBulwarkError(err);
            if (known?.code === "CANCELLED") throw err;
            const error = scrub(errorMessage(err), secrets);
            errors.push({ dataset, error, ...(known ? { code: known.code } : {}) });
            out.warn(`error: drill of ${dataset}: ${error}${known?.hint ? `\nhint: ${known.hint}` : ""}`);
          }
        }
      } finally {
        catalog?.close();
      }
      const failed = reports.filter((r) => r.status !== "pass");
      const ok = failed.length === 0 && errors.length === 0;
      out.emitJson({ ok, drills: reports, errors });
      out.result(
        ok
          ? `${reports.length === 1 ? "the drill" : `all ${reports.length} drills`} passed`
          : `${failed.length + errors.length} of ${reports.length + errors.length} drill${reports.length + errors.length === 1 ? "" : "s"} failed: ${[...failed.map((r) => r.dataset), ...errors.map((e) => e.dataset)].join(", ")}`,
      );
      process.exitCode = ok ? EXIT.OK : EXIT.ERROR;
    });
}

function printReport(out: Output, r: DrillReport): void {
  const rate = r.restore.bytesPerSecond > 0 ? `, ${formatBytes(r.restore.bytesPerSecond)}/s` : "";
  out.info(
    `${r.dataset}: snapshot ${r.snapshot.slice(0, 8)} (${r.snapshotTime}, ${formatDuration(r.rpoMs)} old) from ${r.target}: ` +
      `restored ${r.restore.files} files, ${formatBytes(r.restore.bytes)} in ${formatDuration(r.restore.durationMs)}${rate}; ` +
      `${r.compare.files} files compared with the snapshot, ${r.compare.mismatches} mismatched`,
  );
  for (const v of r.validators) out.info(`  ${v.ok ? "pass" : "FAIL"}: ${v.name}: ${v.message}`);
  if (r.spotCheck)
    out.info(
      `  spot check: ${r.spotCheck.sampled} live files compared, ${r.spotCheck.mismatches} mismatched` +
        (r.spotCheck.changedSince > 0 ? `, ${r.spotCheck.changedSince} changed since the backup` : ""),
    );
  out.info(`  ${r.isolation.note}`);
  for (const s of r.skipped) out.warn(`  skipped ${s.target}: ${s.error}`);
  if (r.sandboxKept) out.info(`  the sandbox is kept at ${r.sandbox}`);
  for (const f of r.findings) out.result(`${r.dataset}: ${f}`);
  out.result(`${r.dataset}: drill ${r.status === "pass" ? "passed" : "FAILED"} (from ${r.target})`);
}

function durationOption(option: string, value: string): number {
  const d = parseFixedDuration(value);
  if ("error" in d)
    throw new BulwarkError("USAGE", `${option} ${value}: ${d.error}`, { hint: `e.g. ${option} 30d` });
  return d.ms;
}

function countOption(option: string, value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n)) {
    throw new BulwarkError("USAGE", `${option} must be a whole number, got ${JSON.stringify(value)}`);
  }
  return n;
}
