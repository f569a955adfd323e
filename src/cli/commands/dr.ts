/**
 * `bulwark dr`: disaster recovery by runbook (the config's `runbooks:`, docs/design.md §24). `dr plan` is the
 * readiness check (src/ops/dr-plan.ts): the waves, the copy each dataset is restored from and why, the RPO and
 * the estimated RTO, and what would fail.
 */
import type { Command } from "commander";

import type { Catalog } from "../../catalog/catalog.js";
import { systemClock } from "../../core/clock.js";
import { errorMessage } from "../../core/errors.js";
import { formatBytes, formatDuration } from "../../core/format.js";
import { dirname } from "node:path";

import { BulwarkError } from "../../core/errors.js";
import { drillRunbook, type DrDrillReport } from "../../ops/dr-drill.js";
import type { TimelineEntry } from "../../ops/dr-execute.js";
import {
  approveUnit,
  failbackRun,
  failoverRunbook,
  loadState,
  resumeRun,
  type DrFailoverInput,
  type DrRunState,
} from "../../ops/dr-failover.js";
import { planRunbook, type DrPlan } from "../../ops/dr-plan.js";
import type { TargetAccess } from "../../ops/targets.js";
import { loadConfigForCommand } from "../config-file.js";
import { Output, getPassword, renderEvents, type GlobalOptions } from "../context.js";
import { EXIT } from "../exit-codes.js";
import { openCatalogForCommand } from "./catalog-access.js";

interface PlanFlags {
  config?: string;
  fromTarget?: string;
  catalog: boolean;
}

export function registerDr(program: Command, globals: () => GlobalOptions): void {
  const dr = program
    .command("dr")
    .description(
      "disaster recovery by runbook: plan (readiness), drill (rehearsal in isolation), failover, failback",
    );

  registerDrDrill(dr, globals);
  registerDrFailover(dr, globals);

  dr.command("plan")
    .description("the readiness check of a runbook: waves, copies, RPO, estimated RTO, what would fail")
    .argument("<runbook>", "a runbook of the config (runbooks.<name>)")
    .option("-c, --config <file>", "the config file (env BULWARK_CONFIG; default ./bulwark.yaml)")
    .option("--from-target <name>", "restore every dataset from this target (no fallback)")
    .option("--no-catalog", "plan without drill measurements and without recording the runbook's version")
    .addHelpText(
      "after",
      `
Each dataset a service restores is planned from the fastest copy its last passing drill measured, falling
back to the next when a copy cannot be opened or holds no snapshot of it; the copy's newest snapshot gives
the RPO, the drill's throughput the restore estimate. Services run in waves (dependsOn); a wave takes as long
as its slowest service, the runbook the sum of its waves. A changed runbook is recorded as a new version in
the catalog's change log, which resets its verified state until the next passing \`bulwark dr drill\`.

Exit codes:
  0   ready: nothing would fail (warnings may be listed)
  1   error (the config, the catalog)
  23  not ready: something would fail (listed with what to do)`,
    )
    .action(async (runbook: string, flags: PlanFlags) => {
      const opts = globals();
      const out = new Output(opts);
      const loaded = await loadConfigForCommand(flags.config);
      const catalog = await optionalCatalog(
        out,
        flags.catalog,
        "planning without the catalog (no drill measurements)",
      );
      const access = targetAccess(opts);
      let plan: DrPlan;
      try {
        plan = await planRunbook({
          config: loaded.config,
          runbook,
          access,
          clock: systemClock,
          env: process.env,
          ...(catalog ? { store: catalog } : {}),
          ...(flags.fromTarget !== undefined ? { fromTarget: flags.fromTarget } : {}),
        });
      } finally {
        catalog?.close();
      }
      out.emitJson(plan);
      renderPlan(out, plan);
      process.exitCode = plan.ready ? EXIT.OK : EXIT.DR_NOT_READY;
    });
}

interface DrillFlags {
  config?: string;
  sandbox?: string;
  keepSandbox?: boolean;
  isolation: boolean;
  yes?: boolean;
  catalog: boolean;
}

export function registerDrDrill(dr: Command, globals: () => GlobalOptions): void {
  dr.command("drill")
    .description(
      "rehearse a runbook in isolation: restore, start, check every service, then tear it all down",
    )
    .argument("<runbook>", "a runbook of the config (runbooks.<name>)")
    .option("-c, --config <file>", "the config file (env BULWARK_CONFIG; default ./bulwark.yaml)")
    .option("--sandbox <dir>", "make the sandbox under this directory (default: the system's temporary one)")
    .option("--keep-sandbox", "keep the restored data and the services' logs for inspection")
    .option("--no-isolation", "run the services on this host with remapped ports even as root")
    .option("--yes", "approve the approval steps the drill runs (inDrill: run)")
    .option("--no-catalog", "record nothing (the drill does not count as evidence)")
    .addHelpText(
      "after",
      `
The drill follows \`bulwark dr plan\`: every dataset is restored from the copy the plan chooses into a sandbox
(the runbook's restore paths, and every mention of them in its commands and checks, are moved under it), and
the services are started wave by wave and checked, while production keeps running: as root in a network
namespace with only loopback (the services keep their ports, and reach nothing outside), otherwise on remapped
ports (BULWARK_DR_PORT_<port> tells a service its port; the report says it was not isolated). Whatever happens,
every service is stopped, the namespace deleted and the sandbox removed. A passing drill of the runbook's
current definition counts for the posture row "DR orchestration supports full service recovery" of every
dataset it restores, within the policy's drills.runbookEvery.

Exit codes:
  0   the drill passed: every service recovered and passed its checks
  1   it failed (the failing step, its output and what to do next are printed) or could not run
  130 interrupted (everything is torn down)`,
    )
    .action(async (runbook: string, flags: DrillFlags) => {
      const opts = globals();
      const out = new Output(opts);
      const loaded = await loadConfigForCommand(flags.config);
      const catalog = await optionalCatalog(out, flags.catalog, "this drill is not recorded");
      const access = targetAccess(opts);
      let report: DrDrillReport;
      try {
        report = await drillRunbook({
          config: loaded.config,
          runbook,
          access,
          clock: systemClock,
          env: process.env,
          events: renderEvents(out),
          ...(catalog ? { store: catalog } : {}),
          ...(flags.sandbox !== undefined ? { sandboxRoot: flags.sandbox } : {}),
          ...(flags.keepSandbox === true ? { keepSandbox: true } : {}),
          ...(flags.isolation ? {} : { noIsolation: true }),
          ...(flags.yes === true ? { approve: true } : {}),
        });
      } finally {
        catalog?.close();
      }
      out.emitJson(report);
      renderDrill(out, report);
      process.exitCode = report.status === "pass" ? EXIT.OK : EXIT.ERROR;
    });
}

function renderTimeline(out: Output, timeline: readonly TimelineEntry[]): void {
  for (const e of timeline) {
    const where = e.service !== undefined ? `${e.service}: ` : "";
    const mark =
      e.outcome === "passed"
        ? "ok  "
        : e.outcome === "skipped"
          ? "skip"
          : e.outcome === "waiting"
            ? "WAIT"
            : "FAIL";
    out.result(`${formatDuration(e.offsetMs).padStart(8)}  ${mark}  ${where}${e.name}: ${e.message}`);
  }
}

function renderFailure(out: Output, what: string, f: NonNullable<DrDrillReport["failed"]>): void {
  out.result(`${what} FAILED at ${f.service !== undefined ? `${f.service}: ` : ""}${f.step}: ${f.message}`);
  if (f.output !== undefined && f.output !== "") {
    for (const line of f.output.split("\n").slice(-10)) out.result(`  | ${line}`);
  }
  out.result(`next: ${f.next}`);
}

function renderDrill(out: Output, r: DrDrillReport): void {
  renderTimeline(out, r.timeline);
  for (const d of r.datasets) {
    if (d.target !== undefined)
      out.result(
        `${d.dataset}: restored from ${d.target}, snapshot ${d.snapshot?.slice(0, 8) ?? "?"}, RPO ${formatDuration(d.rpoMs ?? 0)}`,
      );
  }
  out.result(r.isolation.note);
  if (r.sandboxKept && r.sandbox !== undefined) out.result(`sandbox kept at ${r.sandbox}`);
  for (const l of r.leftovers) out.warn(`warning: not torn down: ${l}`);
  if (r.status === "pass") {
    const target =
      r.rtoTargetMs !== undefined ? ` against an RTO of ${r.rtoTarget ?? formatDuration(r.rtoTargetMs)}` : "";
    const within =
      r.rtoTargetMs !== undefined ? (r.rtoMs! <= r.rtoTargetMs ? ": within" : ": BEYOND the target") : "";
    out.result(`dr drill of ${r.runbook} passed: recovered in ${formatDuration(r.rtoMs!)}${target}${within}`);
  } else renderFailure(out, `dr drill of ${r.runbook}`, r.failed!);
}

interface FailoverFlags {
  config?: string;
  fromTarget?: string;
  before?: string;
  yes?: boolean;
  retryFailed?: boolean;
  skipFailed?: boolean;
}

const RUN_EXIT_CODES = `
Exit codes:
  0   every service recovered and passed its checks
  1   a step failed (the step, its output and what to do next are printed); resume with
      bulwark dr resume RUN --retry-failed or --skip-failed
  24  waiting for an approval: bulwark dr approve RUN UNIT, then bulwark dr resume RUN
  130 interrupted: bulwark dr resume RUN goes on where it stopped`;

async function withRunContext<T>(
  opts: GlobalOptions,
  flags: { config?: string; yes?: boolean },
  fn: (ctx: { input: DrFailoverInput; out: Output }) => Promise<T>,
): Promise<T> {
  const out = new Output(opts);
  const loaded = await loadConfigForCommand(flags.config);
  const catalog = await openCatalogForCommand(process.env);
  const access = targetAccess(opts);
  try {
    return await fn({
      input: {
        config: loaded.config,
        access,
        clock: systemClock,
        env: process.env,
        store: catalog,
        stateDir: dirname(catalog.path),
        events: renderEvents(out),
        ...(flags.yes === true ? { yes: true } : {}),
      },
      out,
    });
  } finally {
    catalog.close();
  }
}

function renderRun(out: Output, s: DrRunState): void {
  out.emitJson(s);
  renderTimeline(out, s.timeline);
  for (const d of s.datasets) {
    if (d.target !== undefined)
      out.result(
        `${d.dataset}: from ${d.target}, snapshot ${d.snapshot?.slice(0, 8) ?? "?"}, RPO ${formatDuration(d.rpoMs ?? 0)}`,
      );
  }
  for (const [dataset, b] of Object.entries(s.failback?.backups ?? {})) {
    if (b.snapshot !== undefined)
      out.result(`${dataset}: backed up to ${b.target} as snapshot ${b.snapshot.slice(0, 8)} (tag failback)`);
  }
  for (const [place, p] of Object.entries(s.failback?.places ?? {})) {
    if (p.aside !== undefined) out.result(`${place}: what was there is kept as ${p.aside}`);
  }
  for (const [name, svc] of Object.entries(s.services)) {
    out.result(`${name}: running${svc.pid !== undefined ? ` (pid ${svc.pid})` : ""}, output in ${svc.log}`);
  }
  if (s.status === "passed") {
    const target =
      s.rtoTargetMs !== undefined ? ` against an RTO of ${s.rtoTarget ?? formatDuration(s.rtoTargetMs)}` : "";
    const within =
      s.rtoTargetMs !== undefined ? (s.rtoMs! <= s.rtoTargetMs ? ": within" : ": BEYOND the target") : "";
    out.result(
      s.mode === "failback"
        ? `dr failback of ${s.runbook} (run ${s.runId}, of failover ${s.failback?.failover ?? "?"}) passed: back at the original places in ${formatDuration(s.rtoMs!)}${target}${within}`
        : `dr failover of ${s.runbook} (run ${s.runId}) passed: recovered in ${formatDuration(s.rtoMs!)}${target}${within}`,
    );
    process.exitCode = EXIT.OK;
  } else if (s.status === "waiting") {
    out.result(
      `run ${s.runId} waits for approval of ${s.waiting!.id} (${s.waiting!.step}): ${s.waiting!.message}`,
    );
    out.result(`next: bulwark dr approve ${s.runId} ${s.waiting!.id}, then bulwark dr resume ${s.runId}`);
    process.exitCode = EXIT.DR_WAITING;
  } else {
    renderFailure(out, `dr ${s.mode} of ${s.runbook} (run ${s.runId})`, s.failed!);
    process.exitCode = EXIT.ERROR;
  }
}

export function registerDrFailover(dr: Command, globals: () => GlobalOptions): void {
  dr.command("failover")
    .description(
      "recover a runbook's services for real: restore to their places, start and check them, wave by wave",
    )
    .argument("<runbook>", "a runbook of the config (runbooks.<name>)")
    .option("-c, --config <file>", "the config file (env BULWARK_CONFIG; default ./bulwark.yaml)")
    .option("--from-target <name>", "restore every dataset from this target")
    .option("--before <time>", "restore points not newer than this (ISO 8601, e.g. 2026-12-03T09:00:00Z)")
    .option("--yes", "approve every approval step")
    .addHelpText(
      "after",
      `
The plan (\`bulwark dr plan\`) must be ready. Directories and SQLite files are restored to their configured
paths (one that exists is refused, never overwritten), PostgreSQL into the configured server as a new
database; services are started and keep running after Bulwark exits. Every step's outcome is saved in the
catalog as it happens: after a crash or a failed step, \`bulwark dr resume RUN\` goes on without redoing what
finished. The run is recorded with its timeline, the RTO achieved and the RPO of each dataset.
${RUN_EXIT_CODES}`,
    )
    .action(async (runbook: string, flags: FailoverFlags) => {
      let before: Date | undefined;
      if (flags.before !== undefined) {
        before = new Date(flags.before);
        if (Number.isNaN(before.getTime())) {
          throw new BulwarkError("USAGE", `--before ${JSON.stringify(flags.before)} is not a time`, {
            hint: "write it as ISO 8601, e.g. 2026-12-03T09:00:00Z",
          });
        }
      }
      await withRunContext(globals(), flags, async ({ input, out }) => {
        const state = await failoverRunbook({
          ...input,
          runbook,
          ...(flags.fromTarget !== undefined ? { fromTarget: flags.fromTarget } : {}),
          ...(before !== undefined ? { before } : {}),
        });
        renderRun(out, state);
      });
    });

  dr.command("failback")
    .description(
      "bring a failover's services back to their original places, with what they did at the recovery site",
    )
    .argument("<run>", "the failover's run id, or a runbook (its newest passed failover)")
    .option("-c, --config <file>", "the config file (env BULWARK_CONFIG; default ./bulwark.yaml)")
    .option(
      "--to-target <name>",
      "store the failback snapshots here (default: the copy each dataset came from)",
    )
    .option("--yes", "approve every approval step")
    .addHelpText(
      "after",
      `
The failover's services are stopped (later waves first; their ports must then be free), then each dataset is
backed up from where the failover restored it, as a new snapshot tagged failback with the original host name
(the files of a directory D+P recorded as P, SQLite from its file, PostgreSQL dumped from its database), to
the copy the failover restored from or --to-target. Then the runbook runs again towards the original places
(the files sources' paths, the SQLite source's path, the PostgreSQL source's server and database): the same
steps, approvals and checks, every recovery path and URL in them rewritten to the original. Nothing is
overwritten: what is at an original place is first renamed to NAME.before-failback-RUN (a database to
NAME_before_failback_XXXXXX). The recovery site's data is left as it is. Like a failover, every unit is saved
as it happens and \`bulwark dr resume RUN\` goes on after a crash or a failed step.
${RUN_EXIT_CODES}`,
    )
    .action(async (run: string, flags: FailoverFlags & { toTarget?: string }) => {
      await withRunContext(globals(), flags, async ({ input, out }) => {
        const state = await failbackRun({
          ...input,
          run,
          ...(flags.toTarget !== undefined ? { toTarget: flags.toTarget } : {}),
        });
        renderRun(out, state);
      });
    });

  dr.command("resume")
    .description(
      "continue a failover or failback after a crash, a failed step or an approval, without redoing what finished",
    )
    .argument("<run>", "the run id (bulwark dr status)")
    .option("-c, --config <file>", "the config file (env BULWARK_CONFIG; default ./bulwark.yaml)")
    .option("--retry-failed", "run the failed step again")
    .option("--skip-failed", "go on without the failed step")
    .option("--yes", "approve every approval step")
    .addHelpText("after", RUN_EXIT_CODES)
    .action(async (runId: string, flags: FailoverFlags) => {
      if (flags.retryFailed === true && flags.skipFailed === true) {
        throw new BulwarkError("USAGE", "--retry-failed and --skip-failed exclude each other", {
          hint: "retry the failed step, or skip it",
        });
      }
      await withRunContext(globals(), flags, async ({ input, out }) => {
        const state = await resumeRun({
          ...input,
          runId,
          ...(flags.retryFailed === true ? { onFailed: "retry" as const } : {}),
          ...(flags.skipFailed === true ? { onFailed: "skip" as const } : {}),
        });
        renderRun(out, state);
      });
    });

  dr.command("approve")
    .description("approve the approval step a run waits on; then bulwark dr resume RUN")
    .argument("<run>", "the run id")
    .argument("<unit>", "the unit it waits on, as dr status shows it (e.g. web/before/0)")
    .action(async (runId: string, unit: string) => {
      const out = new Output(globals());
      const catalog = await openCatalogForCommand(process.env);
      try {
        const state = approveUnit(catalog, systemClock, runId, unit);
        out.emitJson({ runId, unit, approvals: state.approvals });
        out.result(`approved ${unit} of run ${runId}; next: bulwark dr resume ${runId}`);
      } finally {
        catalog.close();
      }
    });

  dr.command("status")
    .description("where DR runs stand: the recent ones, or one run's every unit and timeline")
    .argument("[run]", "a run id (default: list the recent runs)")
    .action(async (runId: string | undefined) => {
      const out = new Output(globals());
      const catalog = await openCatalogForCommand(process.env);
      try {
        if (runId === undefined) {
          const runs = catalog.drStates(20);
          out.emitJson(runs);
          if (runs.length === 0) out.result("no DR run has been started");
          for (const r of runs)
            out.result(
              `${r.runId}  ${r.mode}  ${r.status}  started ${r.started.toISOString()}, updated ${r.updated.toISOString()}`,
            );
          return;
        }
        const state = loadState(catalog, runId);
        out.emitJson(state);
        out.result(
          `run ${state.runId} (${state.mode} of ${state.runbook}): ${state.status}, started ${state.started}`,
        );
        for (const [unit, status] of Object.entries(state.units)) out.result(`  ${status.padEnd(8)} ${unit}`);
        renderTimeline(out, state.timeline);
        if (state.failed !== undefined) renderFailure(out, `run ${state.runId}`, state.failed);
        if (state.waiting !== undefined)
          out.result(
            `next: bulwark dr approve ${state.runId} ${state.waiting.id}, then bulwark dr resume ${state.runId}`,
          );
      } finally {
        catalog.close();
      }
    });
}

/** How the targets are opened: their config credentials, -p / BULWARK_PASSWORD for those without a password. */
function targetAccess(opts: GlobalOptions): TargetAccess {
  let password: Promise<string> | undefined;
  return { env: process.env, defaultPassword: () => (password ??= getPassword(opts)), secrets: [] };
}

/** The catalog unless --no-catalog; one that cannot be opened is a warning saying what is lost. */
async function optionalCatalog(out: Output, wanted: boolean, without: string): Promise<Catalog | undefined> {
  if (!wanted) return undefined;
  try {
    return await openCatalogForCommand(process.env);
  } catch (err) {
    out.warn(`warning: ${without}: ${errorMessage(err)}`);
    return undefined;
  }
}

function renderPlan(out: Output, plan: DrPlan): void {
  const v = plan.version;
  out.result(
    `runbook ${plan.runbook}: definition ${plan.definitionHash.slice(0, 12)}` +
      (v.changed
        ? v.previousHash !== undefined
          ? ` (changed since ${v.previousHash.slice(0, 12)}: version ${v.versions}, not yet drilled)`
          : " (first version recorded)"
        : ` (version ${v.versions}, unchanged)`),
  );
  for (const w of plan.waves) {
    out.result(
      `wave ${w.wave}: ${w.services.map((s) => s.name).join(", ")}` +
        (w.estimateMs !== undefined ? ` (about ${formatDuration(w.estimateMs)})` : ""),
    );
    for (const s of w.services) {
      if (s.datasets.length === 0) out.result(`  ${s.name}: nothing to restore`);
      for (const d of s.datasets) {
        const what = `${d.dataset}${d.source !== undefined ? `/${d.source}` : ""} -> ${d.to}`;
        if (d.target === undefined) {
          out.result(`  ${s.name}: ${what}: NO COPY`);
          continue;
        }
        const size = d.bytes !== undefined ? `, ${formatBytes(d.bytes)}` : "";
        const rate = d.bytesPerSecond !== undefined ? `, drilled at ${formatBytes(d.bytesPerSecond)}/s` : "";
        const eta = d.estimateMs !== undefined ? ` ≈ ${formatDuration(d.estimateMs)}` : " (time unknown)";
        const fallback =
          d.passedOver.length > 0 ? ` [after ${d.passedOver.map((p) => p.target).join(", ")}]` : "";
        out.result(
          `  ${s.name}: ${what} from ${d.target}${fallback}: snapshot ${d.snapshot!.slice(0, 8)}, ` +
            `RPO ${formatDuration(d.rpoMs ?? 0)}${size}${rate}${eta}`,
        );
      }
      if (s.readinessMs > 0) out.result(`  ${s.name}: start and checks ≈ ${formatDuration(s.readinessMs)}`);
    }
  }
  const rto = plan.rtoMs !== undefined ? ` (RTO target ${plan.rto ?? formatDuration(plan.rtoMs)})` : "";
  out.result(
    plan.estimateMs !== undefined
      ? `estimated recovery: ${formatDuration(plan.estimateMs)}${rto}`
      : `estimated recovery: unknown${rto}`,
  );
  for (const p of plan.problems) {
    const where = [p.service, p.dataset].filter((x) => x !== undefined).join("/");
    out.result(`${p.severity}: ${where !== "" ? `${where}: ` : ""}${p.message}`);
    out.result(`  ${p.remedy}`);
  }
  out.result(plan.ready ? `${plan.runbook} is ready` : `${plan.runbook} is NOT ready: see the errors above`);
}
