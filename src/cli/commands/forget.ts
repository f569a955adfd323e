import type { Command } from "commander";
import { BulwarkError } from "../../core/errors.js";
import { formatBytes, formatCount } from "../../core/format.js";
import {
  applyRetention,
  describePolicy,
  isEmptyPolicy,
  type GroupBy,
  type RetentionPolicy,
} from "../../policy/retention.js";
import { prune, type PruneResult } from "../../repository/prune.js";
import type { Repository } from "../../repository/repository.js";
import { findSnapshot, loadAllSnapshots, matchesFilter, removeSnapshots } from "../../snapshot/snapshot.js";
import { withRepository, type GlobalOptions, type Output, warnDamagedSnapshot } from "../context.js";

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
        const policy: RetentionPolicy = {};
        const set = <K extends keyof RetentionPolicy>(k: K, v: RetentionPolicy[K] | undefined): void => {
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

        const toRemove: string[] = [];
        const report: unknown[] = [];
        if (ids.length > 0) {
          for (const id of ids) toRemove.push((await findSnapshot(repo, id, {}, warnDamagedSnapshot)).id);
        } else {
          if (isEmptyPolicy(policy)) {
            throw new BulwarkError("USAGE", "no policy given: refusing to remove every snapshot", {
              hint: "give --keep-* options, or snapshot ids to remove",
            });
          }
          const all = (await loadAllSnapshots(repo, warnDamagedSnapshot)).filter((s) =>
            matchesFilter(s, { hosts: flags.host, tags: flags.tag, paths: flags.path }),
          );
          const groupBy = flags.groupBy
            .split(",")
            .map((s) => s.trim())
            .filter(Boolean) as GroupBy;
          const groups = applyRetention(
            all.map((s) => ({
              id: s.id,
              time: new Date(s.time),
              hostname: s.hostname,
              paths: s.paths,
              tags: s.tags,
            })),
            policy,
            groupBy,
          );
          out.info(`Applying policy: ${describePolicy(policy)}`);
          for (const g of groups) {
            if (g.decisions.every((d) => !d.keep)) {
              throw new BulwarkError("USAGE", "the policy would remove every snapshot of a group; refusing", {
                hint: "check the --keep-* options",
              });
            }
            const label = [
              g.key.hostname && `host ${g.key.hostname}`,
              g.key.paths && `paths ${g.key.paths.join(" ")}`,
              g.key.tags && `tags ${g.key.tags.join(",")}`,
            ]
              .filter(Boolean)
              .join(", ");
            out.info(`\nsnapshots for ${label}:`);
            for (const d of g.decisions) {
              out.info(
                `  ${d.keep ? "keep  " : "remove"} ${d.snapshot.id.slice(0, 8)} ${d.snapshot.time.toISOString().slice(0, 19).replace("T", " ")}  ${d.reasons.join(", ")}`,
              );
              if (!d.keep) toRemove.push(d.snapshot.id);
            }
            report.push({
              group: g.key,
              keep: g.decisions
                .filter((d) => d.keep)
                .map((d) => ({ id: d.snapshot.id, time: d.snapshot.time, reasons: d.reasons })),
              remove: g.decisions
                .filter((d) => !d.keep)
                .map((d) => ({ id: d.snapshot.id, time: d.snapshot.time })),
            });
          }
        }
        // Locked snapshots stay and are listed (removeSnapshots); a dry run removes nothing.
        const { removed, locked } = flags.dryRun
          ? { removed: toRemove, locked: [] }
          : await removeSnapshots(repo, toRemove);
        out.info(
          `\n${flags.dryRun ? "would remove" : "removed"} ${removed.length} snapshot${removed.length === 1 ? "" : "s"}`,
        );
        for (const l of locked) {
          out.warn(`warning: snapshot ${l.id.slice(0, 8)} is under retention and stays: ${l.error}`);
          if (l.hint !== undefined) out.warn(`hint: ${l.hint}`);
        }
        let pruned: PruneResult | undefined;
        // Snapshots named explicitly that could not be removed are a failure (a policy expects locks), and the
        // command stops before pruning: a prune would only rewrite files that then start a retention of their own.
        const namedLocked = locked.length > 0 && ids.length > 0;
        // A dry run removed nothing: its prune must still plan as if the snapshots were gone.
        if (flags.prune && !namedLocked) {
          pruned = await runPrune(repo, out, flags.dryRun === true, undefined, removed);
        }
        out.emitJson({
          dryRun: flags.dryRun === true,
          removed,
          locked,
          groups: report,
          ...(pruned ? { prune: pruned } : {}),
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
    .description("remove data that no snapshot needs, repacking partly used packs")
    .option("-n, --dry-run", "show what would be removed, remove nothing")
    .option("--repack-threshold <percent>", "repack a pack when at least this share of it is unused", "20")
    .action(async (flags: { dryRun?: boolean; repackThreshold: string }) => {
      await withRepository(globals(), "exclusive", async ({ repo, out }) => {
        const threshold = Number(flags.repackThreshold) / 100;
        if (!(threshold > 0 && threshold <= 1))
          throw new BulwarkError("USAGE", "--repack-threshold must be a percentage from 1 to 100");
        const result = await runPrune(repo, out, flags.dryRun === true, threshold);
        out.emitJson({ dryRun: flags.dryRun === true, ...result });
      });
    });
}

async function runPrune(
  repo: Repository,
  out: Output,
  dryRun: boolean,
  threshold?: number,
  ignoreSnapshots: string[] = [],
): Promise<PruneResult> {
  const result = await prune(repo, {
    dryRun,
    ...(dryRun ? { ignoreSnapshots } : {}),
    ...(threshold === undefined ? {} : { repackThreshold: threshold }),
    reporter: { phase: (m) => out.info(m) },
  });
  const verb = dryRun ? "would" : "did";
  out.info(
    `${verb} delete ${formatCount(result.packsToDelete.length + result.unreferencedPacks.length)} packs and repack ${formatCount(result.packsToRepack.length)}, freeing ${formatBytes(result.bytesFreed)}; ${formatCount(result.packsKept)} packs kept`,
  );
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
  return result;
}
