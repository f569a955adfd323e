/**
 * `bulwark catalog`: the catalog (src/catalog/) seen from the command line — where it is, what it recorded
 * (runs, events, snapshots seen on targets), and `rebuild`, which recreates it from the repositories of the
 * config file, so a lost or damaged catalog never costs a backup.
 *
 * The catalog module (and with it the SQLite addon) is loaded only when a catalog subcommand runs: every
 * other command starts without paying for it. Listing commands never create a catalog that does not exist:
 * they say where it would be and how to make it.
 */
import { existsSync } from "node:fs";

import type { Command } from "commander";

import type { Catalog, EventRecord, RunKind, RunRecord, SnapshotRecord } from "../../catalog/catalog.js";
import type { RebuildSummary } from "../../ops/catalog-rebuild.js";
import { formatDiagnostic } from "../../config/diagnostic.js";
import { configPath, processSecretEnvironment } from "../../config/load.js";
import { BulwarkError } from "../../core/errors.js";
import { formatDuration } from "../../core/format.js";
import { loadConfig } from "../../ops/config.js";
import { EXIT } from "../exit-codes.js";
import { Output, getPassword, type GlobalOptions } from "../context.js";
import { createProgress } from "../progress.js";
import { chainProgress } from "./report.js";
import { systemClock } from "../../core/clock.js";

const RUN_KINDS: readonly RunKind[] = ["backup", "copy", "forget", "prune", "check", "drill"];
const LEVELS = ["info", "warning", "error"] as const;

function limitOption(value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) {
    throw new BulwarkError(
      "USAGE",
      `--limit must be a whole number (0 for all), got ${JSON.stringify(value)}`,
    );
  }
  return n;
}

/** "2026-04-01 12:00:00" (UTC, as `bulwark snapshots` prints times). */
function when(d: Date): string {
  return d.toISOString().replace("T", " ").slice(0, 19);
}

/** Rows of text in columns as wide as their widest cell; the last column is not padded. No rows, no header. */
function table(header: string[], rows: string[][]): string[] {
  if (rows.length === 0) return [];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)];
}

const plural = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`;

export function registerCatalog(program: Command, globals: () => GlobalOptions): void {
  const catalogCommand = program
    .command("catalog")
    .description("the catalog of runs, snapshots, copies and events (rebuildable from the repositories)")
    .option(
      "--catalog <path>",
      "the catalog file (env BULWARK_CATALOG; default $BULWARK_STATE_DIR/catalog.db, else $XDG_STATE_HOME/bulwark/catalog.db, else ~/.local/state/bulwark/catalog.db)",
    )
    .addHelpText(
      "after",
      "\nThe repositories are the source of truth: `bulwark catalog rebuild -c bulwark.yaml` recreates the\nsnapshots and copies from them. A lost catalog loses no backup, only the history of runs and events.",
    );

  const load = async (): Promise<typeof import("../../catalog/catalog.js")> =>
    import("../../catalog/catalog.js");

  /** The catalog file this invocation uses: --catalog, else the default from the environment. */
  const catalogPath = async (): Promise<string> => {
    const flag = catalogCommand.opts<{ catalog?: string }>().catalog;
    const { Catalog } = await load();
    return flag !== undefined && flag !== ""
      ? Catalog.defaultPath({ BULWARK_CATALOG: flag })
      : Catalog.defaultPath(process.env);
  };

  /**
   * Opens the catalog for a listing; when there is none yet, prints an empty result and says how to make
   * one instead of creating an empty file.
   */
  const withExisting = async (out: Output, fn: (catalog: Catalog) => void): Promise<void> => {
    const path = await catalogPath();
    if (!existsSync(path)) {
      out.emitJson([]);
      out.warn(
        `no catalog at ${path} yet: \`bulwark run\` records into it, \`bulwark catalog rebuild\` creates it`,
      );
      return;
    }
    const { Catalog } = await load();
    const catalog = Catalog.open(path);
    try {
      // A run whose process died shows as failed ("interrupted"), not as running forever.
      catalog.markInterruptedRuns(systemClock.now());
      fn(catalog);
    } finally {
      catalog.close();
    }
  };

  catalogCommand
    .command("path")
    .description("print where the catalog is")
    .action(async () => {
      const out = new Output(globals());
      const path = await catalogPath();
      out.emitJson({ path, exists: existsSync(path) });
      out.result(path);
    });

  catalogCommand
    .command("rebuild")
    .description(
      "recreate the catalog's snapshots and copies from the repositories of every configured target",
    )
    .option("-c, --config <file>", "the config file (env BULWARK_CONFIG; default ./bulwark.yaml)")
    .addHelpText(
      "after",
      "\nSnapshots no longer on a target are removed from the catalog; an unreachable target keeps its rows.\nRuns, verifications, drills and events are kept. Exit code 3 when a target could not be read.",
    )
    .action(async (flags: { config?: string }) => {
      const opts = globals();
      const out = new Output(opts);
      const file = configPath(flags.config, process.env);
      const resolved = await loadConfig(file, processSecretEnvironment(process.env));
      for (const d of [...resolved.errors, ...resolved.warnings]) out.warn(formatDiagnostic(d));
      const config = resolved.config;
      if (config === undefined) {
        throw new BulwarkError("CONFIG_INVALID", `${file} has ${plural(resolved.errors.length, "error")}`, {
          hint: "fix them (listed above); `bulwark config check` explains the file",
        });
      }
      const [{ Catalog }, { rebuildCatalog }] = await Promise.all([
        load(),
        import("../../ops/catalog-rebuild.js"),
      ]);
      const catalog = Catalog.open(await catalogPath());
      let summary: RebuildSummary;
      try {
        catalog.markInterruptedRuns(systemClock.now());
        let password: Promise<string> | undefined;
        summary = await rebuildCatalog({
          catalog,
          config,
          access: { env: process.env, defaultPassword: () => (password ??= getPassword(opts)), secrets: [] },
          clock: systemClock,
          events: (e) => {
            if (e.type === "message") out.warn(`${e.level}: ${e.target ?? ""}: ${e.message}`);
          },
        });
      } finally {
        catalog.close();
      }
      out.emitJson({ catalog: catalog.path, ...summary });
      for (const l of table(
        ["Target", "Reachable", "Snapshots", "Note"],
        summary.targets.map((t) => [
          t.name,
          t.reachable ? "yes" : "no",
          String(t.snapshots),
          t.reachable
            ? [
                ...(t.removed ? [`${t.removed} removed (no longer there)`] : []),
                ...(t.damaged ? [`${t.damaged} damaged (kept)`] : []),
              ].join(", ")
            : `rows kept: ${t.error ?? "unreachable"}`,
        ]),
      ))
        out.result(l);
      const reachable = summary.targets.filter((t) => t.reachable).length;
      out.result(
        `catalog ${catalog.path}: ${plural(summary.snapshots, "snapshot")} from ${reachable} of ${plural(summary.targets.length, "target")}, ${plural(summary.copies, "copy", "copies")}`,
      );
      if (reachable < summary.targets.length) process.exitCode = EXIT.PARTIAL;
    });

  catalogCommand
    .command("verify-chain")
    .description("check the evidence chain of verifications and drills; name the first broken link")
    .addHelpText(
      "after",
      "\nEach verification and drill carries the hash of the one before it (docs/design.md §22). An edited,\ndeleted, reordered or inserted record breaks the chain; someone who can recompute it is caught only by\nsigned reports (`bulwark report --sign`, `bulwark report verify`).\n\nExit codes:\n  0   intact (or no catalog yet)\n  21  broken: the first broken link is named",
    )
    .action(async () => {
      const out = new Output(globals());
      await withExisting(out, (catalog) => {
        const progress = createProgress(process.stderr, {
          enabled: out.progressEnabled,
          label: "evidence chain",
        });
        let status;
        try {
          status = catalog.verifyEvidenceChain(chainProgress(progress));
        } finally {
          progress.done();
        }
        out.emitJson({ catalog: catalog.path, ...status });
        const outside =
          status.unchained > 0
            ? `; ${plural(status.unchained, "older record")} outside the chain (made before it existed) not checked`
            : "";
        if (status.ok) {
          out.result(
            `the evidence chain of ${catalog.path} is intact: ${plural(status.records, "record")}${outside}`,
          );
          return;
        }
        const b = status.broken;
        const where = [
          ...(b?.seq !== undefined ? [`position ${b.seq}`] : []),
          ...(b?.kind !== undefined && b.id !== undefined ? [`${b.kind} ${b.id}`] : []),
        ].join(", ");
        out.result(
          `the evidence chain of ${catalog.path} is BROKEN${where !== "" ? ` at ${where}` : ""}: ${b?.reason ?? ""}`,
        );
        process.exitCode = EXIT.EVIDENCE_INVALID;
      });
    });

  catalogCommand
    .command("runs")
    .description("list recorded runs, newest first")
    .option("--job <job>", "only runs of this job")
    .option("--dataset <dataset>", "only runs of this dataset")
    .option("--kind <kind>", `only runs of this kind (${RUN_KINDS.join(", ")})`)
    .option("--limit <n>", "at most this many (0 for all)", "20")
    .action(async (flags: { job?: string; dataset?: string; kind?: string; limit?: string }) => {
      const out = new Output(globals());
      if (flags.kind !== undefined && !RUN_KINDS.includes(flags.kind as RunKind)) {
        throw new BulwarkError(
          "USAGE",
          `--kind must be one of ${RUN_KINDS.join(", ")}, got ${JSON.stringify(flags.kind)}`,
        );
      }
      const n = limitOption(flags.limit, 20);
      await withExisting(out, (catalog) => {
        const runs = catalog.runs({
          ...(flags.job !== undefined ? { job: flags.job } : {}),
          ...(flags.dataset !== undefined ? { dataset: flags.dataset } : {}),
          ...(flags.kind !== undefined ? { kind: flags.kind as RunKind } : {}),
          ...(n > 0 ? { limit: n } : {}),
        });
        out.emitJson(runs);
        for (const l of table(
          ["ID", "Kind", "Status", "Started (UTC)", "Took", "Job", "Dataset", "Target", "Result"],
          runs.map(runRow),
        ))
          out.result(l);
        out.result(plural(runs.length, "run"));
      });
    });

  catalogCommand
    .command("events")
    .description("list recorded events, newest first")
    .option("--limit <n>", "at most this many (0 for all)", "50")
    .option("--level <level>", "only events of this level (info, warning, error)")
    .option(
      "--since <time>",
      "only events at or after this time (ISO 8601, e.g. 2026-04-01 or 2026-04-01T12:00Z)",
    )
    .action(async (flags: { limit?: string; level?: string; since?: string }) => {
      const out = new Output(globals());
      if (flags.level !== undefined && !(LEVELS as readonly string[]).includes(flags.level)) {
        throw new BulwarkError(
          "USAGE",
          `--level must be info, warning or error, got ${JSON.stringify(flags.level)}`,
        );
      }
      const since = flags.since === undefined ? undefined : new Date(flags.since);
      if (since !== undefined && Number.isNaN(since.getTime())) {
        throw new BulwarkError("USAGE", `--since must be a time, got ${JSON.stringify(flags.since)}`, {
          hint: "give an ISO 8601 date or time, e.g. 2026-04-01 or 2026-04-01T12:00Z",
        });
      }
      const n = limitOption(flags.limit, 50);
      await withExisting(out, (catalog) => {
        const events = catalog.events({
          ...(n > 0 ? { limit: n } : {}),
          ...(since !== undefined ? { since } : {}),
          ...(flags.level !== undefined ? { level: flags.level } : {}),
        });
        out.emitJson(events);
        for (const l of table(["Time (UTC)", "Level", "Where", "Message"], events.map(eventRow)))
          out.result(l);
        out.result(plural(events.length, "event"));
      });
    });

  catalogCommand
    .command("snapshots")
    .description("list the snapshots the catalog has seen on targets")
    .option("--target <target>", "only snapshots on this target")
    .option("--dataset <dataset>", "only snapshots of this dataset")
    .action(async (flags: { target?: string; dataset?: string }) => {
      const out = new Output(globals());
      await withExisting(out, (catalog) => {
        const snapshots = catalog.snapshots({
          ...(flags.target !== undefined ? { target: flags.target } : {}),
          ...(flags.dataset !== undefined ? { dataset: flags.dataset } : {}),
        });
        out.emitJson(snapshots);
        for (const l of table(
          ["Target", "ID", "Time (UTC)", "Dataset", "Host", "Copy of", "Seen (UTC)", "Paths"],
          snapshots.map(snapshotRow),
        ))
          out.result(l);
        out.result(plural(snapshots.length, "snapshot"));
      });
    });
}

function runRow(r: RunRecord): string[] {
  const took =
    r.finishedAt === undefined ? "" : formatDuration(r.finishedAt.getTime() - r.startedAt.getTime());
  const result =
    r.error !== undefined
      ? r.error
      : r.snapshot !== undefined
        ? `snapshot ${r.snapshot.slice(0, 8)}`
        : r.status === "running"
          ? `pid ${r.pid} on ${r.hostname}`
          : "";
  return [
    String(r.id),
    r.kind,
    r.status,
    when(r.startedAt),
    took,
    r.job ?? "",
    r.dataset ?? "",
    r.target ?? "",
    result,
  ];
}

function eventRow(e: EventRecord): string[] {
  const where = [
    ...(e.job !== undefined ? [`job ${e.job}`] : []),
    ...(e.dataset !== undefined ? [`dataset ${e.dataset}`] : []),
    ...(e.target !== undefined ? [`target ${e.target}`] : []),
    ...(e.runId !== undefined ? [`run ${e.runId}`] : []),
  ].join(", ");
  return [when(e.time), e.level, where, e.message];
}

function snapshotRow(s: SnapshotRecord): string[] {
  return [
    s.target,
    s.snapshot.slice(0, 8),
    when(s.time),
    s.dataset ?? "",
    s.hostname,
    s.original !== s.snapshot ? s.original.slice(0, 8) : "",
    when(s.seenAt),
    s.paths.join(" "),
  ];
}
