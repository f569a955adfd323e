/**
 * `bulwark run [JOB...]`: runs jobs from the config file (src/ops/run-job.ts does the work): backup to the
 * primary target, copies to the copy targets, each target's retention. Jobs run in dependency order; a job
 * whose dependency failed is skipped. Every step is recorded in the catalog.
 */
import type { Command } from "commander";

import { systemClock } from "../../core/clock.js";
import { BulwarkError, errorMessage, findBulwarkError } from "../../core/errors.js";
import { fanOut, type EventSink } from "../../core/events.js";
import { formatBytes, formatCount, formatDuration } from "../../core/format.js";
import { catalogRecorder, type RecordingCatalog } from "../../ops/catalog-recorder.js";
import { jobOrder, runJob, type JobResult } from "../../ops/run-job.js";
import { loadConfigForCommand } from "../config-file.js";
import { Output, getPassword, renderWithProgress, type GlobalOptions } from "../context.js";
import { EXIT } from "../exit-codes.js";
import { createProgress } from "../progress.js";
import { openCatalogForCommand } from "./catalog-access.js";

interface RunFlags {
  config?: string;
  forget: boolean;
  verify: boolean;
  catalog: boolean;
  host?: string;
  init?: boolean;
}

export function registerRun(program: Command, globals: () => GlobalOptions): void {
  program
    .command("run")
    .description(
      "run jobs from the config: back up, copy to every copy target, apply each target's retention",
    )
    .argument("[job...]", "the jobs to run (default: all); among them, a job runs after those it depends on")
    .option("-c, --config <file>", "the config file (env BULWARK_CONFIG; default ./bulwark.yaml)")
    .option("--init", "create the repository of a target that has none (a new target)")
    .option("--no-forget", "do not apply the targets' retention after the copies")
    .option("--no-verify", "do not read copied packs back from the copy targets")
    .option("--no-catalog", "do not record the run in the catalog")
    .option("--host <name>", "host name recorded in the snapshots (default: this machine's)")
    .addHelpText(
      "after",
      `
A job backs up its dataset to its primary target, then copies every snapshot of the dataset that a copy
target lacks (newer than the newest it holds) there, verifying each pack on arrival, then applies each
target's retention (the policy's retention.<target>). With --init, a target without a repository yet gets
one: a copy target as a copy of the primary (same chunker parameters, its own password); without --init that
is an error (an unmounted share must not become a new repository on the local disk). A failed copy does not
stop the other copies; retention is not applied on a target whose copy failed. Jobs named together run in
dependsOn order, and a job whose dependency failed in this run is skipped.
Passwords come from each target's password reference, else -p / BULWARK_PASSWORD / BULWARK_PASSWORD_FILE.
Exit code 0 when every job succeeded, 3 when a backup skipped unreadable files, 1 when any step failed.`,
    )
    .action(async (names: string[], flags: RunFlags) => {
      const opts = globals();
      const out = new Output(opts);
      const { config } = await loadConfigForCommand(flags.config);
      const order = jobOrder(config, names);
      if (order.length === 0) {
        throw new BulwarkError("USAGE", "the config declares no job", { hint: "add one under `jobs:`" });
      }
      let password: Promise<string> | undefined;
      const access = { env: process.env, defaultPassword: () => (password ??= getPassword(opts)) };
      // The catalog is an index of what happened, not the backups: a damaged or unwritable one must not stop
      // them. The run goes on unrecorded, and says how to repair it.
      let catalog: (RecordingCatalog & { close(): void }) | undefined;
      if (flags.catalog) {
        try {
          catalog = await openCatalogForCommand(process.env);
        } catch (err) {
          const hint = findBulwarkError(err)?.hint;
          out.warn(`warning: this run is not recorded in the catalog: ${errorMessage(err)}`);
          if (hint !== undefined) out.warn(`hint: ${hint}`);
        }
      }
      const record: EventSink | undefined =
        catalog &&
        catalogRecorder(catalog, (err) =>
          out.warn(
            `warning: the catalog failed; the rest of this run is not recorded in it: ${errorMessage(err)}`,
          ),
        );
      const results: JobResult[] = [];
      const skipped: { job: string; reason: string }[] = [];
      try {
        for (const name of order) {
          const job = config.jobs[name]!;
          const failedDep = job.dependsOn.find(
            (d) =>
              results.some((r) => r.job === d && r.status === "failed") || skipped.some((s) => s.job === d),
          );
          if (failedDep !== undefined) {
            const reason = `its dependency ${failedDep} did not succeed`;
            skipped.push({ job: name, reason });
            out.warn(`job ${name} skipped: ${reason}`);
            continue;
          }
          out.info(`job ${name}: dataset ${job.dataset} -> ${[job.primary, ...job.copies].join(", ")}`);
          const progress = createProgress(process.stderr, { enabled: out.progressEnabled, label: name });
          const render = renderWithProgress(out, progress);
          try {
            const result = await runJob(config, name, {
              access,
              clock: systemClock,
              events: fanOut(
                // Step lines are for watching a long run; the summary below says the same when it is over.
                (e) => {
                  if (e.type === "message" && e.level === "info" && !out.progressEnabled) return;
                  render(e);
                },
                record,
              ),
              verify: flags.verify,
              forget: flags.forget,
              init: flags.init === true,
              ...(flags.host !== undefined ? { hostname: flags.host } : {}),
            });
            results.push(result);
            progress.done();
            summarise(out, result);
          } finally {
            progress.done();
          }
        }
      } finally {
        catalog?.close();
      }
      out.emitJson({ jobs: results, skipped });
      const failed = results.some((r) => r.status === "failed") || skipped.length > 0;
      const partial = results.some((r) => r.status === "partial");
      process.exitCode = failed ? EXIT.ERROR : partial ? EXIT.PARTIAL : EXIT.OK;
    });
}

function summarise(out: Output, r: JobResult): void {
  const b = r.backup;
  if (b.snapshot !== undefined) {
    const s = b.summary;
    out.info(
      `  backup to ${b.target}: snapshot ${b.snapshot.slice(0, 8)}` +
        (s
          ? `, ${formatCount(s.filesNew)} new and ${formatCount(s.filesChanged)} changed files, ${formatBytes(s.dataAdded)} added`
          : ""),
    );
  }
  for (const e of b.skipped) out.warn(`  warning: ${e.path} could not be read: ${e.error}`);
  if (b.status === "failed") out.warn(`  backup to ${b.target} FAILED: ${b.error ?? "unknown error"}`);
  for (const c of r.copies) {
    if (c.status === "ok") {
      const sent = c.snapshots.filter((s) => !s.alreadyThere).length;
      out.info(
        `  copy to ${c.target}: ${sent} snapshot${sent === 1 ? "" : "s"}, ${formatCount(c.blobsCopied)} blobs (${formatBytes(c.bytesCopied)}) sent` +
          (c.verifiedPacks > 0 ? `, ${formatCount(c.verifiedPacks)} packs verified` : "") +
          (c.adoptedPacks > 0 ? `, resumed ${formatCount(c.adoptedPacks)} packs` : ""),
      );
    } else {
      out.warn(`  copy to ${c.target} FAILED: ${c.error ?? "unknown error"}`);
    }
  }
  for (const f of r.forget) {
    if (f.status === "ok") {
      out.info(
        `  retention on ${f.target}: ${f.removed.length} forgotten, ${f.kept} kept` +
          (f.locked.length > 0 ? `, ${f.locked.length} still locked` : ""),
      );
    } else if (f.status === "skipped") {
      out.info(`  retention on ${f.target} skipped: ${f.error ?? ""}`);
    } else {
      out.warn(`  retention on ${f.target} FAILED: ${f.error ?? "unknown error"}`);
    }
  }
  for (const l of r.locks) {
    if (l.status === "ok") {
      out.info(
        `  locks on ${l.target}: ${formatCount(l.checked)} objects locked until at least ${l.requiredUntil ?? "?"}` +
          (l.extended > 0 ? `, ${formatCount(l.extended)} extended` : ""),
      );
    } else {
      out.warn(`  locks on ${l.target} FAILED: ${l.error ?? "unknown error"}`);
    }
  }
  out.result(`job ${r.job}: ${r.status} in ${formatDuration(r.durationMs)}`);
}
