/**
 * `bulwark verify`: the structure of each copy, then its data with coverage tracked in the catalog (the
 * verify operation, src/ops/verify.ts). On a bare `--repo`, that repository; with a config file, every
 * target of its jobs (or those named with --target, or the targets of --dataset), each opened read-only.
 */
import type { Command } from "commander";

import { parseBudget, type Budget } from "../../config/budget.js";
import { parseFixedDuration } from "../../config/duration.js";
import type { BulwarkConfig, Target } from "../../config/types.js";
import { systemClock } from "../../core/clock.js";
import { BulwarkError, errorMessage } from "../../core/errors.js";
import { formatBytes, formatCount, formatDuration } from "../../core/format.js";
import { verificationDetails } from "../../ops/evidence.js";
import { openTargetRepository, scrub } from "../../ops/targets.js";
import {
  crossCopyFindings,
  verifyRepository,
  type CopiedSnapshot,
  type CoverageStore,
  type CrossCopyFinding,
  type VerifyOutcome,
} from "../../ops/verify.js";
import { redact } from "../../backend/registry.js";
import type { Catalog } from "../../catalog/catalog.js";
import { RepoLock } from "../../repository/lock.js";
import { Repository } from "../../repository/repository.js";
import { loadAllSnapshots } from "../../snapshot/snapshot.js";
import { WorkerPool } from "../../repository/worker-pool.js";
import { loadConfigForCommand, withRepoTarget } from "../config-file.js";
import { Output, getPassword, openBackend, renderWithProgress, type GlobalOptions } from "../context.js";
import { EXIT } from "../exit-codes.js";
import { createProgress } from "../progress.js";
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

interface VerifyOptions {
  budget: Budget | undefined;
  fullEveryMs: number | undefined;
  newOnly: boolean;
  newFirst: boolean;
}

interface TargetReport extends Partial<VerifyOutcome> {
  target: string;
  /** Why the target could not be verified (unreachable, wrong password), secrets scrubbed. */
  error?: string;
}

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
      const reports: TargetReport[] = [];
      let crossCopy: CrossCopyFinding[] = [];
      try {
        let password: Promise<string> | undefined;
        const defaultPassword = () => (password ??= getPassword(opts));
        const secrets: string[] = [];
        const snapshotsByTarget = new Map<string, CopiedSnapshot[]>();
        const verifyOne = async (
          label: string,
          location: string,
          open: () => Promise<Repository>,
          datasets: string[],
          options: VerifyOptions,
        ): Promise<void> => {
          let repo: Repository | undefined;
          try {
            repo = await open();
            const startedAt = systemClock.now();
            const outcome = await verifyOpened(repo, label, out, catalog, options);
            reports.push(outcome);
            snapshotsByTarget.set(
              label,
              (await loadAllSnapshots(repo, () => undefined)).map((x) => ({
                id: x.id,
                original: x.original ?? x.id,
                tree: x.tree,
              })),
            );
            const last = reports.at(-1)!;
            const time = systemClock.now();
            // The evidence (design §17c); cross-copy findings involving the targets verified so far.
            const details = verificationDetails(outcome, {
              target: label,
              location: redact(location),
              repository: repo.id,
              startedAt,
              budget: options.budget,
              fullEveryMs: options.fullEveryMs,
              newOnly: options.newOnly,
              newFirst: options.newFirst,
              crossCopy: crossCopyFindings(snapshotsByTarget).filter((f) => f.targets.includes(label)),
            });
            for (const dataset of datasets.length > 0 ? datasets : [undefined]) {
              catalog?.recordVerification({
                target: label,
                ...(dataset !== undefined ? { dataset } : {}),
                time,
                kind: "verify",
                errors: last.errors ?? 0,
                description: `verify of ${label}: ${formatCount(last.packsRead ?? 0)} packs read, coverage ${formatCount(last.coverage?.covered ?? 0)} of ${formatCount(last.coverage?.packs ?? 0)} packs`,
                details: details as unknown as Record<string, unknown>,
              });
            }
          } catch (err) {
            const error = scrub(errorMessage(err), secrets);
            reports.push({ target: label, error });
            out.warn(`error: ${label}: ${error}`);
          } finally {
            await repo?.backend.close().catch(() => undefined);
          }
        };
        if (useConfig) {
          const loaded = await loadConfigForCommand(flags.config);
          const config = loaded.config;
          const access = { env: process.env, defaultPassword, secrets };
          const named = {
            ...flags,
            target: withRepoTarget(loaded, flags.config !== undefined ? opts.repo : undefined, flags.target),
          };
          for (const target of targetsToVerify(config, named)) {
            // The options not given on the command line come from the policies of the target's jobs.
            const policy = policyVerification(config, target.name);
            await verifyOne(
              target.name,
              target.location,
              () => openTargetRepository(target, access, { readOnly: true }),
              datasetsOn(config, target.name),
              {
                budget: budget ?? policy.budget,
                fullEveryMs: fullEveryMs ?? policy.fullEveryMs,
                newOnly: flags.new === true,
                newFirst: policy.newFirst,
              },
            );
          }
        } else {
          const location = opts.repo ?? process.env.BULWARK_REPOSITORY!;
          await verifyOne(
            redact(location),
            location,
            async () => {
              const backend = await openBackend(location, false, { readOnly: true });
              try {
                return await Repository.open(backend, await defaultPassword());
              } catch (err) {
                await backend.close().catch(() => undefined);
                throw err;
              }
            },
            [],
            { budget, fullEveryMs, newOnly: flags.new === true, newFirst: true },
          );
        }
        // The copies of one snapshot on several targets must be the same snapshot.
        crossCopy = crossCopyFindings(snapshotsByTarget);
        for (const f of crossCopy) out.result(`error: ${f.message}`);
      } finally {
        catalog?.close();
      }
      out.emitJson({
        ok: reports.every((r) => r.ok === true) && crossCopy.length === 0,
        targets: reports,
        crossCopy,
      });
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

async function verifyOpened(
  repo: Repository,
  label: string,
  out: Output,
  catalog: CoverageStore | undefined,
  options: VerifyOptions,
): Promise<TargetReport & VerifyOutcome> {
  const lock = await RepoLock.acquire(repo, false);
  const pool = new WorkerPool(repo);
  const progress = createProgress(process.stderr, { enabled: out.progressEnabled, label: `verify ${label}` });
  try {
    const r = await verifyRepository({
      repo,
      pool,
      clock: systemClock,
      events: renderWithProgress(out, progress),
      target: label,
      ...(catalog ? { coverage: catalog } : {}),
      ...(options.budget ? { budget: options.budget } : {}),
      ...(options.fullEveryMs !== undefined ? { fullEveryMs: options.fullEveryMs } : {}),
      ...(options.newOnly ? { newOnly: true } : {}),
      ...(options.newFirst ? {} : { newFirst: false }),
    });
    progress.done();
    for (const f of r.findings) {
      out.result(`${label}: ${f.severity}: ${f.message}`);
      if (f.snapshots?.length)
        out.result(`  affects snapshots: ${f.snapshots.map((s) => s.slice(0, 8)).join(" ")}`);
      for (const file of (f.files ?? []).slice(0, 50)) out.result(`  affects ${file}`);
      if ((f.files?.length ?? 0) > 50) out.result(`  ... and ${f.files!.length - 50} more`);
    }
    const c = r.coverage;
    out.info(
      `${label}: read ${formatCount(r.packsRead)} packs (${formatBytes(r.bytesRead)}) in ${formatDuration(r.durationMs)}` +
        (r.plan.deferred > 0 ? `, ${formatCount(r.plan.deferred)} due packs left for the next run` : "") +
        (r.plan.fresh > 0 ? `, ${formatCount(r.plan.fresh)} fresh packs skipped` : "") +
        (r.digests.packs > 0
          ? `; checked ${formatCount(r.digests.packs)} more by the target's digest (${formatBytes(r.digests.bytes)} not downloaded)`
          : "") +
        `; coverage ${formatCount(c.covered)} of ${formatCount(c.packs)} packs (${(c.ratio * 100).toFixed(1)} %)` +
        (c.oldestRead ? `, oldest read ${c.oldestRead.toISOString()}` : "") +
        (r.errors > 0 ? `; ${r.errors} error${r.errors === 1 ? "" : "s"}` : ""),
    );
    return { target: label, ...r };
  } finally {
    progress.done();
    await pool.close();
    await lock.release().catch(() => undefined);
  }
}

/** The config targets to verify: those named, else those of the dataset's jobs, else every job's. */
function targetsToVerify(config: BulwarkConfig, flags: VerifyFlags): Target[] {
  const known = Object.keys(config.targets);
  for (const name of flags.target) {
    if (config.targets[name] === undefined) {
      throw new BulwarkError("USAGE", `unknown target ${JSON.stringify(name)}`, {
        hint: known.length > 0 ? `the targets are ${known.join(", ")}` : "the config declares no target",
      });
    }
  }
  if (flags.dataset !== undefined && config.datasets[flags.dataset] === undefined) {
    const datasets = Object.keys(config.datasets);
    throw new BulwarkError("USAGE", `unknown dataset ${JSON.stringify(flags.dataset)}`, {
      hint:
        datasets.length > 0 ? `the datasets are ${datasets.join(", ")}` : "the config declares no dataset",
    });
  }
  const ofJobs: string[] = [];
  for (const job of Object.values(config.jobs)) {
    if (flags.dataset !== undefined && job.dataset !== flags.dataset) continue;
    for (const t of [job.primary, ...job.copies]) if (!ofJobs.includes(t)) ofJobs.push(t);
  }
  const names = flags.target.length > 0 ? flags.target : ofJobs;
  if (names.length === 0) {
    throw new BulwarkError("USAGE", "no target to verify", {
      hint: "name one with --target, or add a job that uses the targets",
    });
  }
  return names.map((n) => config.targets[n]!);
}

/**
 * What the policies of a target's jobs ask of its verification: the shortest period, the smallest budget of
 * the same kind as the first one given, and new packs first unless every policy says otherwise.
 */
function policyVerification(
  config: BulwarkConfig,
  target: string,
): { fullEveryMs?: number; budget?: Budget; newFirst: boolean } {
  let fullEveryMs: number | undefined;
  let budget: Budget | undefined;
  let newFirst: boolean | undefined;
  for (const job of Object.values(config.jobs)) {
    if (job.primary !== target && !job.copies.includes(target)) continue;
    const v = config.policies[job.policy]?.verification;
    if (v === undefined) continue;
    if (v.fullEveryMs !== undefined) fullEveryMs = Math.min(fullEveryMs ?? Infinity, v.fullEveryMs);
    if (v.budget !== undefined) {
      if (budget === undefined) budget = v.budget;
      else if ("bytes" in budget && "bytes" in v.budget)
        budget = { bytes: Math.min(budget.bytes, v.budget.bytes) };
      else if ("ms" in budget && "ms" in v.budget) budget = { ms: Math.min(budget.ms, v.budget.ms) };
    }
    newFirst = (newFirst ?? false) || v.newPacks;
  }
  return {
    ...(fullEveryMs !== undefined ? { fullEveryMs } : {}),
    ...(budget !== undefined ? { budget } : {}),
    newFirst: newFirst ?? true,
  };
}

/** The datasets whose jobs keep copies on a target (a verification of it is evidence for each). */
function datasetsOn(config: BulwarkConfig, target: string): string[] {
  const out: string[] = [];
  for (const job of Object.values(config.jobs)) {
    if ((job.primary === target || job.copies.includes(target)) && !out.includes(job.dataset)) {
      out.push(job.dataset);
    }
  }
  return out;
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
