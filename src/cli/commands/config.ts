/**
 * `bulwark config check` validates the config file and explains every problem (file, line, field, what to
 * do) and, when it is valid, what it declares; `bulwark config schema` prints the JSON Schema for editors.
 */
import type { Command } from "commander";

import { redact } from "../../backend/registry.js";
import { formatDiagnostic, type Diagnostic } from "../../config/diagnostic.js";
import { configPath, processSecretEnvironment } from "../../config/load.js";
import { configJsonSchema } from "../../config/schema.js";
import { describeSecretRef, type BulwarkConfig, type Source } from "../../config/types.js";
import { loadConfig } from "../../ops/config.js";
import { EXIT } from "../exit-codes.js";
import { Output, type GlobalOptions } from "../context.js";

const plural = (n: number, one: string, many: string): string => `${n} ${n === 1 ? one : many}`;

/** Diagnostics in file order (those without a position last). */
function inFileOrder(diagnostics: Diagnostic[]): Diagnostic[] {
  const at = (d: Diagnostic): number =>
    d.position ? d.position.line * 100_000 + d.position.column : Number.MAX_SAFE_INTEGER;
  return [...diagnostics].sort((a, b) => at(a) - at(b));
}

function describeSource(s: Source): string {
  const hooks = s.hooks !== undefined ? ` ${describeHooks(s.hooks)}` : "";
  switch (s.type) {
    case "files":
      return `files ${s.paths.join(", ")}${s.excludes.length > 0 ? ` (excluding ${s.excludes.join(", ")})` : ""}${hooks}`;
    case "sqlite":
      return `sqlite ${s.path} -> /sources/${s.name}.sqlite${hooks}`;
    case "postgres": {
      const what = s.all ? "every database" : `database ${s.database ?? "?"}`;
      const where = s.host !== undefined ? ` on ${s.host}${s.port !== undefined ? `:${s.port}` : ""}` : "";
      const format =
        s.format === "directory"
          ? `directory format, ${s.jobs} job${s.jobs === 1 ? "" : "s"}`
          : "custom format";
      return `postgres ${what}${where} (${format}${s.globals ? ", with globals" : ""}) -> /sources/${s.name}${hooks}`;
    }
    case "command":
      return `command ${s.command.join(" ")} -> /sources/${s.name}/${s.filename}${hooks}`;
  }
}

function describeHooks(h: NonNullable<Source["hooks"]>): string {
  const parts = [
    ...(h.before !== undefined ? [`before: ${h.before}`] : []),
    ...(h.after !== undefined ? [`after: ${h.after}`] : []),
  ];
  return `[hooks ${parts.join("; ")}]`;
}

/** What a valid config declares, one line per target, dataset, policy and job. */
export function summariseConfig(config: BulwarkConfig): string[] {
  const out: string[] = [];
  const section = (title: string, names: string[], line: (name: string) => string): void => {
    out.push(`${title} (${names.length}):`);
    const width = Math.max(0, ...names.map((n) => n.length));
    for (const n of names) out.push(`  ${n.padEnd(width)}  ${line(n)}`);
  };
  section("targets", Object.keys(config.targets), (n) => {
    const t = config.targets[n];
    if (t === undefined) return "";
    const l = t.labels;
    const parts = [
      `medium ${l.medium}`,
      `site ${l.site}${l.offsite ? " (offsite)" : ""}`,
      `failure domain ${l.failureDomain}`,
      `isolation ${l.isolation}`,
      ...(l.network !== l.site ? [`network ${l.network}`] : []),
      ...(t.immutability ? [`immutability ${t.immutability.mode} ${t.immutability.days}d`] : []),
      ...(t.password ? [`password ${describeSecretRef(t.password)}`] : []),
    ];
    return `${redact(t.location)}: ${parts.join(", ")}`;
  });
  section("datasets", Object.keys(config.datasets), (n) =>
    (config.datasets[n]?.sources ?? []).map(describeSource).join("; "),
  );
  section("policies", Object.keys(config.policies), (n) => {
    const p = config.policies[n];
    if (p === undefined) return "";
    const c = p.counts;
    const counts = `${c.copies} copies, ${c.media} media, ${c.offsite} offsite, ${c.immutableOrIsolated} immutable or isolated${c.sites > 1 ? `, ${c.sites} sites` : ""}${c.isolatedNetworks > 1 ? `, ${c.isolatedNetworks} isolated networks` : ""}${c.zeroErrors ? ", 0 errors" : ""}`;
    return [
      `rule ${p.preset ?? "custom"} (${counts})`,
      `RPO ${p.rpo}`,
      ...(p.productionCounts ? ["production counts as a copy"] : []),
      ...(p.verification?.cadence !== undefined ? [`verification every ${p.verification.cadence}`] : []),
      ...(p.verification?.fullEvery !== undefined
        ? [`every pack read every ${p.verification.fullEvery}`]
        : []),
      ...(p.immutabilityDays !== undefined ? [`immutability ${p.immutabilityDays}d`] : []),
      ...(Object.keys(p.keepRules).length > 0 ? [`retention on ${Object.keys(p.keepRules).join(", ")}`] : []),
    ].join(", ");
  });
  section("jobs", Object.keys(config.jobs), (n) => {
    const j = config.jobs[n];
    if (j === undefined) return "";
    return [
      `dataset ${j.dataset} -> ${j.primary}${j.copies.length > 0 ? `, copies to ${j.copies.join(", ")}` : ""}`,
      `policy ${j.policy}`,
      ...(j.schedule !== undefined ? [`schedule ${j.schedule}`] : []),
      ...(j.dependsOn.length > 0 ? [`after ${j.dependsOn.join(", ")}`] : []),
    ].join("; ");
  });
  return out;
}

export function registerConfig(program: Command, globals: () => GlobalOptions): void {
  const config = program.command("config").description("validate and explain the config file (bulwark.yaml)");

  config
    .command("check")
    .description("validate the config file, explain every problem and summarise what it declares")
    .option("-c, --config <file>", "the config file (env BULWARK_CONFIG; default ./bulwark.yaml)")
    .addHelpText(
      "after",
      "\nEach problem names the file, line, column and field, says what is wrong and what to do.\nExit code 0 when the file is valid (warnings allowed), 1 when it has errors.",
    )
    .action(async (flags: { config?: string }) => {
      const out = new Output(globals());
      const file = configPath(flags.config, process.env);
      const r = await loadConfig(file, processSecretEnvironment(process.env));
      const diagnostics = inFileOrder([...r.errors, ...r.warnings]);
      out.emitJson({
        file,
        valid: r.config !== undefined,
        errors: inFileOrder(r.errors),
        warnings: inFileOrder(r.warnings),
        ...(r.config ? { config: r.config } : {}),
      });
      for (const d of diagnostics) out.result(formatDiagnostic(d));
      const counts = `${plural(r.errors.length, "error", "errors")}, ${plural(r.warnings.length, "warning", "warnings")}`;
      if (r.config === undefined) {
        out.result(`${file}: invalid (${counts})`);
        process.exitCode = EXIT.ERROR;
        return;
      }
      out.result(`${file}: valid${r.warnings.length > 0 ? ` (${counts})` : ""}`);
      for (const line of summariseConfig(r.config)) out.info(line);
    });

  config
    .command("schema")
    .description("print the JSON Schema of the config file (for editors: docs/bulwark.schema.json)")
    .action(() => {
      process.stdout.write(JSON.stringify(configJsonSchema(), null, 2) + "\n");
    });
}
