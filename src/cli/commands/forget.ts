import type { Command } from "commander";
import { systemClock } from "../../core/clock.js";
import { BulwarkError } from "../../core/errors.js";
import { formatBytes, formatCount } from "../../core/format.js";
import { forget, pruneRepository } from "../../ops/forget.js";
import type { GroupBy, KeepRules } from "../../policy/keep-rules.js";
import type { PruneResult } from "../../repository/prune.js";
import type { Repository } from "../../repository/repository.js";
import { findSnapshot, matchesFilter } from "../../snapshot/snapshot.js";
import {
  renderEvents,
  withRepository,
  type GlobalOptions,
  type Output,
  warnDamagedSnapshot,
  CONFIG_TARGET_HELP,
} from "../context.js";

const collect = (value: string, previous: string[]): string[] => [...previous, value];

interface ForgetFlags {
  keepLast?: string;
  keepHourly?: string;
  keepDaily?: string;
  keepWeekly?: string;
  keepMonthly?: string;
  keepYearly?: string;
  keepWithin?: string;
  keepWithinHourly?: string;
  keepWithinDaily?: string;
  keepWithinWeekly?: string;
  keepWithinMonthly?: string;
  keepWithinYearly?: string;
  keepTag: string[];
  host: string[];
  tag: string[];
  path: string[];
  groupBy: string;
  prune?: boolean;
  dryRun?: boolean;
}

function count(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < -1) {
    throw new BulwarkError(
      "USAGE",
      `--${name} must be a whole number (or -1 for unlimited), got ${JSON.stringify(value)}`,
    );
  }
  return n;
}

export function registerForget(program: Command, globals: () => GlobalOptions): void {
  program
    .command("forget")
    .option("-c, --config <file>", CONFIG_TARGET_HELP)
    .description("remove snapshots by id or by a retention policy (data is freed by prune)")
    .argument("[snapshot...]", "snapshots to remove explicitly")
    .option("--keep-last <n>", "keep the n newest snapshots")
    .option("--keep-hourly <n>", "keep the newest snapshot of each of the last n hours that have one")
    .option("--keep-daily <n>", "... of each of the last n days")
    .option("--keep-weekly <n>", "... of each of the last n weeks")
    .option("--keep-monthly <n>", "... of each of the last n months")
    .option("--keep-yearly <n>", "... of each of the last n years")
    .option(
      "--keep-within <duration>",
      "keep all snapshots within the duration (e.g. 1y2m3d4h) of the newest",
    )
    .option("--keep-within-hourly <duration>", "keep hourly snapshots within the duration")
    .option("--keep-within-daily <duration>", "keep daily snapshots within the duration")
    .option("--keep-within-weekly <duration>", "keep weekly snapshots within the duration")
    .option("--keep-within-monthly <duration>", "keep monthly snapshots within the duration")
    .option("--keep-within-yearly <duration>", "keep yearly snapshots within the duration")
    .option(
      "--keep-tag <tags>",
      "keep snapshots with all these comma-separated tags (repeatable)",
      collect,
      [],
    )
    .option("--host <name>", "only consider snapshots of this host (repeatable)", collect, [])
    .option("--tag <tag>", "only consider snapshots with this tag (repeatable)", collect, [])
    .option("--path <path>", "only consider snapshots of this path (repeatable)", collect, [])
    .option(
      "--group-by <fields>",
      "group snapshots by host, paths, tags (comma-separated) before applying the policy",
      "host,paths",
    )
    .option("--prune", "run prune afterwards to free the data")
    .option("-n, --dry-run", "show what would be removed, remove nothing")
    .action(async (ids: string[], flags: ForgetFlags) => {
      await withRepository(globals(), "exclusive", async ({ repo, out }) => {
        const policy: KeepRules = {};
        const set = <K extends keyof KeepRules>(k: K, v: KeepRules[K] | undefined): void => {
          if (v !== undefined) policy[k] = v;
        };
        set("last", count("keep-last", flags.keepLast));
        set("hourly", count("keep-hourly", flags.keepHourly));
        set("daily", count("keep-daily", flags.keepDaily));
        set("weekly", count("keep-weekly", flags.keepWeekly));
        set("monthly", count("keep-monthly", flags.keepMonthly));
        set("yearly", count("keep-yearly", flags.keepYearly));
        set("within", flags.keepWithin);
        set("withinHourly", flags.keepWithinHourly);
        set("withinDaily", flags.keepWithinDaily);
        set("withinWeekly", flags.keepWithinWeekly);
        set("withinMonthly", flags.keepWithinMonthly);
        set("withinYearly", flags.keepWithinYearly);
        if (flags.keepTag.length) policy.keepTags = flags.keepTag.map((t) => t.split(",").filter(Boolean));

        const named: string[] = [];
        for (const id of ids) named.push((await findSnapshot(repo, id, {}, warnDamagedSnapshot)).id);
        const result = await forget({
          repo,
          clock: systemClock,
          events: renderEvents(out),
          snapshots: named,
          policy,
          filter: (s) => matchesFilter(s, { hosts: flags.host, tags: flags.tag, paths: flags.path }),
          groupBy: flags.groupBy
            .split(",")
            .map((s) => s.trim())
            .filter(Boolean) as GroupBy,
          dryRun: flags.dryRun === true,
          prune: flags.prune === true,
          onDamagedSnapshot: warnDamagedSnapshot,
        });
        for (const g of result.groups) {
          const label = [
            g.group.hostname && `host ${g.group.hostname}`,
            g.group.paths && `paths ${g.group.paths.join(" ")}`,
            g.group.tags && `tags ${g.group.tags.join(",")}`,
          ]
            .filter(Boolean)
            .join(", ");
          out.info(`\nsnapshots for ${label}:`);
          const rows = [
            ...g.keep.map((k) => ({ ...k, keep: true })),
            ...g.remove.map((r) => ({ ...r, keep: false, reasons: [] as string[] })),
          ].sort((a, b) => b.time.getTime() - a.time.getTime());
          for (const d of rows) {
            out.info(
              `  ${d.keep ? "keep  " : "remove"} ${d.id.slice(0, 8)} ${d.time.toISOString().slice(0, 19).replace("T", " ")}  ${d.reasons.join(", ")}`,
            );
          }
        }
        const { removed, locked, namedLocked } = result;
        out.info(
          `\n${flags.dryRun ? "would remove" : "removed"} ${removed.length} snapshot${removed.length === 1 ? "" : "s"}`,
        );
        for (const l of locked) {
          out.warn(`warning: snapshot ${l.id.slice(0, 8)} is under retention and stays: ${l.error}`);
          if (l.hint !== undefined) out.warn(`hint: ${l.hint}`);
        }
        if (result.prune) renderPrune(repo, out, result.prune, flags.dryRun === true);
        out.emitJson({
          dryRun: flags.dryRun === true,
          removed,
          locked,
          groups: result.groups,
          ...(result.prune ? { prune: result.prune } : {}),
        });
        if (namedLocked) {
          throw new BulwarkError(
            "RETENTION_LOCKED",
            `${locked.length} of the named snapshot${ids.length === 1 ? " is" : "s are"} under retention and ${locked.length === 1 ? "was" : "were"} not removed`,
            {
              hint: "they can be forgotten once their retention ends (`bulwark retention --dry-run` shows until when)",
            },
          );
        }
      });
    });

  program
    .command("prune")
    .option("-c, --config <file>", CONFIG_TARGET_HELP)
    .description("remove data that no snapshot needs, repacking partly used packs")
    .option("-n, --dry-run", "show what would be removed, remove nothing")
    .option("--repack-threshold <percent>", "repack a pack when at least this share of it is unused", "20")
    .action(async (flags: { dryRun?: boolean; repackThreshold: string }) => {
      await withRepository(globals(), "exclusive", async ({ repo, out }) => {
        const threshold = Number(flags.repackThreshold) / 100;
        if (!(threshold > 0 && threshold <= 1))
          throw new BulwarkError("USAGE", "--repack-threshold must be a percentage from 1 to 100");
        const result = await pruneRepository({
          repo,
          clock: systemClock,
          events: renderEvents(out),
          dryRun: flags.dryRun === true,
          repackThreshold: threshold,
        });
        renderPrune(repo, out, result, flags.dryRun === true);
        out.emitJson({ dryRun: flags.dryRun === true, ...result });
      });
    });
}

function renderPrune(repo: Repository, out: Output, result: PruneResult, dryRun: boolean): void {
  const verb = dryRun ? "would" : "did";
  out.info(
    `${verb} delete ${formatCount(result.packsToDelete.length + result.unreferencedPacks.length)} packs and repack ${formatCount(result.packsToRepack.length)}, freeing ${formatBytes(result.bytesFreed)}; ${formatCount(result.packsKept)} packs kept`,
  );
  if (result.copiesRejected.length > 0) {
    const packs = [...new Set(result.copiesRejected.map((c) => c.pack.slice(0, 12)))];
    out.warn(
      `warning: ${formatCount(result.copiesRejected.length)} copies of blobs held in several packs do not verify (in pack${packs.length === 1 ? "" : "s"} ${packs.join(", ")}): damage, or junk claiming their ids; a verified copy was kept and they ${dryRun ? "would be" : "were"} dropped`,
    );
  }
  if (result.locked.length > 0) {
    const until = result.locked
      .map((l) => l.until)
      .filter((u): u is string => u !== undefined)
      .sort()
      .at(-1);
    out.info(
      `${formatCount(result.locked.length)} files are under retention on ${repo.backend.location} and were left in place` +
        (until ? `; they can be freed by a prune after ${until}` : ""),
    );
  }
}
