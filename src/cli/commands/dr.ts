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
import { drillRunbook, type DrDrillReport } from "../../ops/dr-drill.js";
import { planRunbook, type DrPlan } from "../../ops/dr-plan.js";
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
      "disaster recovery by runbook: plan (readiness), drill (rehearsal in isolation); next failover",
    );

  registerDrDrill(dr, globals);

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
      let catalog: Catalog | undefined;
      if (flags.catalog) {
        try {
          catalog = await openCatalogForCommand(process.env);
        } catch (err) {
          out.warn(`warning: planning without the catalog (no drill measurements): ${errorMessage(err)}`);
        }
      }
      let password: Promise<string> | undefined;
      const secrets: string[] = [];
      const access = { env: process.env, defaultPassword: () => (password ??= getPassword(opts)), secrets };
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

function renderDrill(out: Output, r: DrDrillReport): void {
  for (const e of r.timeline) {
    const where = e.service !== undefined ? `${e.service}: ` : "";
    out.result(
      `${formatDuration(e.offsetMs).padStart(8)}  ${e.outcome === "passed" ? "ok  " : e.outcome === "skipped" ? "skip" : "FAIL"}  ${where}${e.name}: ${e.message}`,
    );
  }
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
  } else {
    const f = r.failed!;
    out.result(
      `dr drill of ${r.runbook} FAILED at ${f.service !== undefined ? `${f.service}: ` : ""}${f.step}: ${f.message}`,
    );
    if (f.output !== undefined && f.output !== "") {
      for (const line of f.output.split("\n").slice(-10)) out.result(`  | ${line}`);
    }
    out.result(`next: ${f.next}`);
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
