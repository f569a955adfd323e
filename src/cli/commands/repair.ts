/**
 * `bulwark repair`: heals a damaged copy from the healthy copies of its copy set, blob by blob (the repair
 * operation, src/ops/repair.ts, docs/design.md §18b). With a config file, `--target T` is the copy to repair
 * and `--from` names the copies to take blobs from (default: every other target of the config, local ones
 * first); on a bare `--repo`, `--from-repo` gives the source locations.
 */
import type { Command } from "commander";

import { redact } from "../../backend/registry.js";
import type { Catalog } from "../../catalog/catalog.js";
import type { BulwarkConfig, Target } from "../../config/types.js";
import { systemClock } from "../../core/clock.js";
import { BulwarkError, errorMessage } from "../../core/errors.js";
import { formatBytes, formatCount, formatDuration } from "../../core/format.js";
import { repairRepository, type RepairOutcome, type RepairSource } from "../../ops/repair.js";
import { repairIndex, type RepairIndexOutcome } from "../../ops/repair-index.js";
import { openTargetRepository, schemeOf, scrub } from "../../ops/targets.js";
import { Repository } from "../../repository/repository.js";
import { WorkerPool } from "../../repository/worker-pool.js";
import { loadConfigForCommand, oneRepoTarget } from "../config-file.js";
import { Output, getPassword, openBackend, renderWithProgress, type GlobalOptions } from "../context.js";
import { EXIT } from "../exit-codes.js";
import { createProgress } from "../progress.js";
import { openCatalogForCommand } from "./catalog-access.js";

interface RepairFlags {
  config?: string;
  target?: string;
  from: string[];
  fromRepo: string[];
  fromPasswordFile?: string;
  dryRun?: boolean;
  readData?: boolean;
  catalog: boolean;
  index?: boolean;
  distrust: string[];
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

export function registerRepair(program: Command, globals: () => GlobalOptions): void {
  program
    .command("repair")
    .description("heal damaged or missing data of one copy from the other copies of its copy set")
    .option(
      "-c, --config <file>",
      "the config file naming the targets (env BULWARK_CONFIG; ./bulwark.yaml); -r TARGET then names one, as --target",
    )
    .option("--target <name>", "the target to repair")
    .option("--from <name>", "take blobs from this target only (repeatable, tried in order)", collect, [])
    .option(
      "--from-repo <location>",
      "without a config: a source repository location (repeatable, tried in order)",
      collect,
      [],
    )
    .option(
      "--from-password-file <file>",
      "password of the --from-repo sources (default: the repaired repository's)",
    )
    .option("--read-data", "read every pack of the target first, to find damage no verify has recorded")
    .option(
      "--dry-run",
      "list what is damaged and what would be salvaged or fetched, from where; change nothing",
    )
    .option("--no-catalog", "do not use or update the packs the catalog records as damaged")
    .option("--index", "rebuild the index from the pack headers (damaged index files); no other copy needed")
    .option(
      "--distrust <index>",
      "with --index: replace this readable index file as if damaged, and delete it (repeatable; name or prefix)",
      collect,
      [],
    )
    .addHelpText(
      "after",
      `
Damage is what \`bulwark verify\` recorded in the catalog for the target's repository, what the structure pass
of check finds (packs missing or truncated) and, with --read-data, what reading every pack finds. Every blob a
snapshot needs that the target no longer holds intact is taken from the damaged pack itself when it still
reads intact there, else fetched by id from the other copies (each checked against its id, re-sealed under the
target's key, written into new packs that are read back before they are indexed). The damaged packs are then
retired in the index (never read again, also on a target that keeps every object) and deleted where the target
allows it; on an immutable or append-only target they stay until prune can delete them, and the output says so.
A killed repair leaves the copy consistent; run it again to finish.
The target is locked exclusively, each source shared. Without --config, the repository of --repo (or
BULWARK_REPOSITORY) is repaired from the --from-repo locations.
With --index, the index is rebuilt instead: every pack no readable index file lists has its header read (with
--read-data, the whole pack, each blob checked) and new index files are written for them, naming the damaged
index files they supersede; then the damaged files are deleted where the target allows it (on an immutable or
append-only target they stay, superseded, until prune can delete them). Takes --target or --repo, no source.
--distrust NAME treats a readable index file the same way: the one \`bulwark check --read-data\` names for
retiring packs that verify intact (repair never retires an intact pack, so someone else holding the key wrote
it). Deleting it needs a token or credentials that may delete; until then readers still honour it.
Exit code 0 when every blob a snapshot needs is intact (or, with --dry-run, would be), 1 when some blobs are on
no copy (the snapshots and files they affect are listed) or the repair failed; with --index, 1 when a snapshot
still needs a blob no pack header lists (repair from another copy then); 10 no repository, 11 locked,
12 wrong password.`,
    )
    .action(async (flags: RepairFlags) => {
      const opts = globals();
      const out = new Output(opts);
      const dryRun = flags.dryRun === true;
      if (flags.distrust.length > 0 && flags.index !== true) {
        throw new BulwarkError("USAGE", "--distrust goes with --index", {
          hint: "bulwark repair --index --distrust NAME",
        });
      }
      if (flags.index === true && (flags.from.length > 0 || flags.fromRepo.length > 0)) {
        throw new BulwarkError("USAGE", "repair --index takes no source: it reads the target's own packs", {
          hint: "run `bulwark repair --index` first, then `bulwark repair --from ...` for what is still missing",
        });
      }
      const secrets: string[] = [];
      let password: Promise<string> | undefined;
      const defaultPassword = (): Promise<string> => (password ??= getPassword(opts));
      const useConfig =
        flags.config !== undefined ||
        flags.target !== undefined ||
        flags.from.length > 0 ||
        (opts.repo === undefined && process.env.BULWARK_REPOSITORY === undefined);
      let label: string;
      let openTarget: () => Promise<Repository>;
      let sources: RepairSource[];
      if (useConfig) {
        if (flags.fromRepo.length > 0) {
          throw new BulwarkError(
            "USAGE",
            "--from-repo is for a bare --repo; with a config, use --from TARGET",
            {
              hint: "name the healthy copies with --from (targets of the config file)",
            },
          );
        }
        const loaded = await loadConfigForCommand(flags.config);
        const config = loaded.config;
        // With -c, `-r NAME` names the target to repair, as --target does.
        const repoTarget = flags.config !== undefined ? opts.repo : undefined;
        const target = targetNamed(config, oneRepoTarget(loaded, repoTarget, flags.target));
        const access = { env: process.env, defaultPassword, secrets };
        label = target.name;
        openTarget = () => openTargetRepository(target, access, { readOnly: dryRun });
        sources = sourceTargets(config, target, flags.from).map((t) => ({
          label: t.name,
          open: () => openTargetRepository(t, access, { readOnly: true }),
        }));
      } else {
        const location = opts.repo ?? process.env.BULWARK_REPOSITORY!;
        if (flags.fromRepo.length === 0 && flags.index !== true) {
          throw new BulwarkError("USAGE", "no source to repair from", {
            hint: "give a healthy copy with --from-repo LOCATION (or use --config with --target and --from)",
          });
        }
        for (const from of flags.fromRepo) {
          if (from === location) {
            throw new BulwarkError("USAGE", `the source ${redact(from)} is the repository to repair`, {
              hint: "repair a copy from another copy of its copy set",
            });
          }
        }
        label = redact(location);
        openTarget = () => openLocation(location, defaultPassword, dryRun);
        let sourcePassword: Promise<string> | undefined;
        const fromPassword = (): Promise<string> =>
          flags.fromPasswordFile
            ? (sourcePassword ??= getPassword({ passwordFile: flags.fromPasswordFile }))
            : defaultPassword();
        sources = flags.fromRepo.map((from) => ({
          label: redact(from),
          open: () => openLocation(from, fromPassword, true),
        }));
      }
      if (flags.index === true) {
        await runIndexRepair(out, label, openTarget, flags);
        return;
      }
      const chosen = useConfig ? flags.from.length > 0 : true;
      let catalog: Catalog | undefined;
      if (flags.catalog) {
        try {
          catalog = await openCatalogForCommand(process.env);
        } catch (err) {
          out.warn(
            `warning: the catalog cannot be used, so damage only verify recorded is not seen: ${errorMessage(err)}`,
          );
        }
      }
      const repo = await openTarget();
      const pool = new WorkerPool(repo);
      const progress = createProgress(process.stderr, {
        enabled: out.progressEnabled,
        label: `repair ${label}`,
      });
      let result: RepairOutcome;
      try {
        result = await repairRepository({
          repo,
          label,
          sources,
          sourcesChosen: chosen,
          pool,
          clock: systemClock,
          events: renderWithProgress(out, progress),
          ...(catalog ? { coverage: catalog } : {}),
          ...(flags.readData === true ? { readData: true } : {}),
          dryRun,
          scrub: (m) => scrub(m, secrets),
        });
        progress.done();
      } finally {
        progress.done();
        await pool.close();
        catalog?.close();
        await repo.backend.close().catch(() => undefined);
      }
      report(out, result, sources);
      process.exitCode = result.ok ? EXIT.OK : EXIT.ERROR;
    });
}

async function runIndexRepair(
  out: Output,
  label: string,
  openTarget: () => Promise<Repository>,
  flags: RepairFlags,
): Promise<void> {
  const repo = await openTarget();
  const progress = createProgress(process.stderr, {
    enabled: out.progressEnabled,
    label: `repair --index ${label}`,
  });
  let r: RepairIndexOutcome;
  try {
    r = await repairIndex({
      repo,
      label,
      clock: systemClock,
      events: renderWithProgress(out, progress),
      ...(flags.readData === true ? { readData: true } : {}),
      dryRun: flags.dryRun === true,
      distrust: flags.distrust,
    });
  } finally {
    progress.done();
    await repo.backend.close().catch(() => undefined);
  }
  out.emitJson(r);
  const would = r.dryRun ? "would be " : "";
  for (const name of r.distrusted) {
    const kept = r.locked.find((l) => l.file === `index/${name.slice(0, 12)}`);
    out.result(
      r.dryRun
        ? `would replace and delete distrusted index file ${name.slice(0, 12)}`
        : kept === undefined
          ? `distrusted index file ${name.slice(0, 12)} replaced and deleted`
          : `error: distrusted index file ${name.slice(0, 12)} was replaced but the target keeps it${kept.until !== undefined ? ` until ${kept.until}` : ""}, so readers still honour it; delete it with credentials that may (an admin token)`,
    );
  }
  if (r.damagedIndexFiles.length === 0 && r.packsIndexed === 0 && r.distrusted.length === 0) {
    out.result(`nothing to repair in the index of ${r.target}`);
  } else if (!r.dryRun) {
    out.info(
      `wrote ${count(r.indexFilesWritten, "index file")}; ${count(r.removed.length, "damaged index file")} deleted` +
        (r.locked.length > 0
          ? `, ${formatCount(r.locked.length)} kept superseded because the target does not allow deleting them (prune deletes them later)`
          : ""),
    );
  }
  if (r.walkError !== undefined) out.warn(`error: the snapshots cannot be walked: ${r.walkError}`);
  else if (r.missing! > 0) {
    out.warn(
      `error: ${count(r.missing!, "blob")} the snapshots need ${r.dryRun ? "would still be" : "are still"} in no pack` +
        " (their packs are gone or unreadable); run `bulwark check` to see what they affect and `bulwark repair --from COPY` to fetch them",
    );
  }
  if (r.damagedIndexFiles.length > 0 || r.packsIndexed > 0) {
    out.result(
      `${r.target}: ${count(r.damagedIndexFiles.length, "damaged index file")}, ${count(r.packsIndexed, "pack")} (${count(r.blobsIndexed, "blob")}) ${would}indexed from their headers` +
        (r.unreadablePacks.length > 0 ? `, ${count(r.unreadablePacks.length, "pack")} unreadable` : "") +
        ` in ${formatDuration(r.durationMs)}`,
    );
  }
  process.exitCode = r.ok ? EXIT.OK : EXIT.ERROR;
}

function report(out: Output, r: RepairOutcome, sources: readonly RepairSource[]): void {
  out.emitJson(r);
  const would = r.dryRun ? "would be " : "";
  for (const d of r.damagedPacks) {
    out.info(
      `${r.target}: pack ${d.pack.slice(0, 12)} is damaged (${d.foundBy}${d.stored ? "" : ", missing"}): ${d.reason}`,
    );
  }
  if (r.blobsNeeded === 0 && r.damagedPacks.length === 0) {
    out.result(
      r.retired.length > 0 && !r.dryRun
        ? `nothing to repair on ${r.target}; ${cleanup(r)}`
        : `nothing to repair on ${r.target}: every blob its snapshots need is intact`,
    );
    return;
  }
  if (r.salvaged > 0) {
    out.info(
      `${count(r.salvaged, "blob")} ${would}taken from the damaged packs, where they still read intact`,
    );
  }
  for (const f of r.fetched) {
    out.info(`${count(f.blobs, "blob")} (${formatBytes(f.bytes)}) ${would}fetched from ${f.source}`);
  }
  for (const e of r.sourceErrors) out.warn(`warning: source ${e.source}: ${e.error}`);
  if (!r.dryRun) {
    out.info(
      `wrote ${count(r.packsWritten, "pack")} (${formatBytes(r.storedBytes)}), each read back, and ${count(r.indexFilesWritten, "index file")} in ${formatDuration(r.durationMs)}`,
    );
  }
  if (r.unrepairable.blobs.length > 0) {
    out.warn(
      `error: ${count(r.unrepairable.blobs.length, "blob")} ${r.unrepairable.blobs.length === 1 ? (r.dryRun ? "is" : "was") : r.dryRun ? "are" : "were"} on no copy` +
        (sources.length === 0
          ? " (no other copy of this copy set to take them from)"
          : ` (tried ${sources.map((s) => s.label).join(", ")})`),
    );
    for (const s of r.unrepairable.snapshots) {
      out.warn(`  snapshot ${s.snapshot.slice(0, 8)} (${s.time}) cannot be fully restored:`);
      for (const file of s.files.slice(0, 50)) out.warn(`    ${file}`);
      if (s.files.length > 50) out.warn(`    ... and ${s.files.length - 50} more`);
    }
    out.warn(
      "what next: if another copy holds these snapshots, add it to the config and run repair again with --from it;" +
        " otherwise back up the affected files again (the next backup stores them anew) and forget the snapshots" +
        " listed once a newer one exists",
    );
  }
  out.result(
    r.dryRun
      ? r.ok
        ? `${r.target} can be repaired: ${count(r.blobsNeeded, "blob")} would be rewritten, ${count(r.damagedPacks.length, "damaged pack")} retired`
        : `${r.target} can only be partly repaired`
      : r.ok
        ? `${r.target} repaired: ${count(r.blobsNeeded, "blob")} rewritten; ${cleanup(r)}`
        : `${r.target} partly repaired: ${count(r.unrepairable.blobs.length, "blob")} still missing; ${cleanup(r)}`,
  );
}

/** "1 pack", "3 packs". */
function count(n: number, noun: string): string {
  return `${formatCount(n)} ${noun}${n === 1 ? "" : "s"}`;
}

function cleanup(r: RepairOutcome): string {
  const parts = [`${count(r.retired.length, "damaged pack")} retired`];
  if (r.deleted.length > 0) parts.push(`${formatCount(r.deleted.length)} deleted`);
  if (r.locked.length > 0) {
    const until = r.locked
      .map((l) => l.until)
      .filter((u) => u !== undefined)
      .sort()
      .at(-1);
    parts.push(
      `${formatCount(r.locked.length)} kept because the target does not allow deleting them` +
        (until !== undefined
          ? ` (retention until ${until}; prune frees them then)`
          : " (prune frees them once allowed)"),
    );
  }
  return parts.join(", ");
}

function targetNamed(config: BulwarkConfig, name: string | undefined): Target {
  const known = Object.keys(config.targets);
  if (name === undefined) {
    throw new BulwarkError("USAGE", "repair needs --target: which copy to repair", {
      hint: known.length > 0 ? `the targets are ${known.join(", ")}` : "the config declares no target",
    });
  }
  const target = config.targets[name];
  if (target === undefined) {
    throw new BulwarkError("USAGE", `unknown target ${JSON.stringify(name)}`, {
      hint: known.length > 0 ? `the targets are ${known.join(", ")}` : "the config declares no target",
    });
  }
  return target;
}

/**
 * The copies to take blobs from: those named with --from, in that order, else every other target of the
 * config, local directories first (the cheapest to read), then the others in the config's order.
 */
function sourceTargets(config: BulwarkConfig, target: Target, from: readonly string[]): Target[] {
  if (from.length > 0) {
    return from.map((name) => {
      if (name === target.name) {
        throw new BulwarkError("USAGE", `--from ${name} is the target being repaired`, {
          hint: "repair a copy from another copy of its copy set",
        });
      }
      return targetNamed(config, name);
    });
  }
  const others = Object.values(config.targets).filter((t) => t.name !== target.name);
  const local = others.filter((t) => schemeOf(t.location) === "local");
  return [...local, ...others.filter((t) => schemeOf(t.location) !== "local")];
}

async function openLocation(
  location: string,
  password: () => Promise<string>,
  readOnly: boolean,
): Promise<Repository> {
  const backend = await openBackend(location, false, { readOnly });
  try {
    return await Repository.open(backend, await password());
  } catch (err) {
    await backend.close().catch(() => undefined);
    throw err;
  }
}
