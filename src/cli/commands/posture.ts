/**
 * `bulwark posture [DATASET]`: evaluates every dataset against its policy from live evidence read from the
 * repositories themselves (src/policy/posture.ts decides, src/policy/posture-report.ts renders). For each
 * job's primary and copy targets: whether the repository could be opened, the newest snapshot of the
 * dataset's paths, and, where the backend reads retention back, until when that snapshot's file and its
 * tree's pack are locked. Verification and DR evidence do not exist yet, so those rows are "unknown".
 * Exit code 0 when every dataset complies, 20 when any fails (with --strict, unknown rows fail too).
 */
import type { Command } from "commander";

import type { Backend } from "../../backend/backend.js";
import { formatDiagnostic } from "../../config/diagnostic.js";
import { configPath, loadConfigFile, processSecretEnvironment } from "../../config/load.js";
import type { BulwarkConfig, Dataset, Target } from "../../config/types.js";
import { BulwarkError, errorMessage } from "../../core/errors.js";
import {
  evaluatePosture,
  postureExitCode,
  type CopyEvidence,
  type PostureEvidence,
} from "../../policy/posture.js";
import { renderPosture, type PostureFormat } from "../../policy/posture-report.js";
import { Repository } from "../../repository/repository.js";
import { normalisePaths } from "../../snapshot/archiver.js";
import { loadAllSnapshots, type SnapshotWithId } from "../../snapshot/snapshot.js";
import { openTargetRepository, scrub, targetPassword } from "../../jobs/targets.js";
import { getPassword, type GlobalOptions } from "../context.js";

export interface EvidenceOptions {
  env: Readonly<Record<string, string | undefined>>;
  /** The password of a target that has no password reference (-p, BULWARK_PASSWORD, BULWARK_PASSWORD_FILE). */
  defaultPassword: () => Promise<string>;
  /** Opens a target's backend (the CLI's openBackend; a fake in tests). */
  open?: (location: string) => Promise<Backend>;
  /** Only this dataset. */
  dataset?: string;
  /** Reports a damaged snapshot file that was skipped. */
  onDamaged?: (target: string, name: string, err: unknown) => void;
}

interface OpenedTarget {
  repo?: Repository;
  snapshots?: SnapshotWithId[];
  error?: string;
  indexLoaded?: boolean;
}

/** Reads what every target of the datasets' jobs holds. Never throws for a target: its failure is evidence. */
export async function collectEvidence(
  config: BulwarkConfig,
  options: EvidenceOptions,
): Promise<PostureEvidence> {
  const secrets: string[] = [];
  const clean = (message: string): string => scrub(message, secrets);

  const opened = new Map<string, OpenedTarget>();
  const backends: Backend[] = [];
  const access = { env: options.env, defaultPassword: options.defaultPassword, secrets };
  const openTarget = async (target: Target): Promise<OpenedTarget> => {
    const known = opened.get(target.name);
    if (known) return known;
    const result: OpenedTarget = {};
    opened.set(target.name, result);
    try {
      if (options.open !== undefined) {
        const password = await targetPassword(target, access);
        const backend = await options.open(target.location);
        backends.push(backend);
        result.repo = await Repository.open(backend, password);
      } else {
        result.repo = await openTargetRepository(target, access);
        backends.push(result.repo.backend);
      }
      result.snapshots = await loadAllSnapshots(result.repo, (name, err) =>
        options.onDamaged?.(target.name, name, err),
      );
    } catch (err) {
      delete result.repo;
      result.error = clean(errorMessage(err));
    }
    return result;
  };

  const evidence: PostureEvidence = { datasets: {} };
  try {
    for (const [name, dataset] of Object.entries(config.datasets)) {
      if (options.dataset !== undefined && name !== options.dataset) continue;
      const targets: string[] = [];
      for (const job of Object.values(config.jobs)) {
        if (job.dataset !== name) continue;
        for (const t of [job.primary, ...job.copies]) if (!targets.includes(t)) targets.push(t);
      }
      const paths = datasetPaths(dataset);
      const copies: Record<string, CopyEvidence> = {};
      for (const t of targets) {
        const target = config.targets[t];
        if (target === undefined) continue;
        const o = await openTarget(target);
        if (o.repo === undefined || o.snapshots === undefined) {
          copies[t] = { reachable: false, ...(o.error !== undefined ? { error: o.error } : {}) };
          continue;
        }
        const snapshot = latestOf(o.snapshots, paths, name);
        if (snapshot === undefined) {
          copies[t] = { reachable: true };
          continue;
        }
        const lock = await readLock(target, o, snapshot, clean);
        copies[t] = {
          reachable: true,
          snapshot: { id: snapshot.id, time: new Date(snapshot.time) },
          ...(lock ? { lock } : {}),
        };
      }
      evidence.datasets[name] = { copies };
    }
  } finally {
    for (const b of backends) await b.close().catch(() => undefined);
  }
  return evidence;
}

/** The paths a dataset's snapshots record: its file sources' paths, as `backup` normalises them. */
export function datasetPaths(dataset: Dataset): string[] {
  const paths = dataset.sources.flatMap((s) => (s.type === "files" ? s.paths : []));
  return paths.length === 0 ? [] : normalisePaths(paths);
}

/**
 * The newest snapshot of the dataset: one `bulwark run` recorded as the dataset's, or one without a dataset
 * whose paths are exactly the dataset's (a plain `bulwark backup` of them).
 */
export function latestOf(
  snapshots: SnapshotWithId[],
  paths: string[],
  dataset?: string,
): SnapshotWithId | undefined {
  const want = [...paths].sort().join("\0");
  let latest: SnapshotWithId | undefined;
  for (const s of snapshots) {
    const ours =
      s.dataset !== undefined
        ? s.dataset === dataset
        : paths.length > 0 && [...s.paths].sort().join("\0") === want;
    if (!ours) continue;
    if (latest === undefined || s.time > latest.time) latest = s;
  }
  return latest;
}

/**
 * The lock on a snapshot as the target reports it: the retention of its snapshot file and of the pack holding
 * its root tree, until the earlier of the two. Undefined for a target that is not labelled isolated and whose
 * backend reads no retention.
 */
async function readLock(
  target: Target,
  o: OpenedTarget,
  snapshot: SnapshotWithId,
  clean: (m: string) => string,
): Promise<CopyEvidence["lock"]> {
  const repo = o.repo;
  if (repo === undefined) return undefined;
  const backend = repo.backend;
  // A vault says what the token in use may do: an append-only token is the lock, read back from the target.
  if (target.labels.isolation === "append-only" && backend.capabilities.appendOnly !== undefined) {
    return backend.capabilities.appendOnly
      ? { kind: "append-only", readBack: true }
      : {
          kind: "append-only",
          readBack: false,
          error: `${describeBackend(target.location)} reports that this host's token may delete (an admin token): give the host an append-only token`,
        };
  }
  const getRetention = backend.getRetention?.bind(backend);
  if (getRetention === undefined) {
    if (target.labels.isolation === "immutable" || target.labels.isolation === "append-only") {
      return {
        kind: target.labels.isolation === "immutable" ? "retention" : "append-only",
        readBack: false,
        error:
          target.labels.isolation === "immutable"
            ? `${describeBackend(target.location)} has no retention lock to read back`
            : `${describeBackend(target.location)} cannot report whether it is append-only`,
      };
    }
    return undefined;
  }
  try {
    if (!o.indexLoaded) {
      await repo.loadIndex();
      o.indexLoaded = true;
    }
    const fromSnapshot = await getRetention({ type: "snapshot", name: snapshot.id });
    const treePack = repo.index.get(snapshot.tree)?.pack;
    if (treePack === undefined) {
      return {
        kind: "retention",
        readBack: false,
        error: `the tree of snapshot ${snapshot.id.slice(0, 8)} is not in the index`,
      };
    }
    const fromTree = await getRetention({ type: "pack", name: treePack });
    if (fromSnapshot === undefined || fromTree === undefined) return { kind: "retention", readBack: true };
    const until = fromSnapshot.until.getTime() <= fromTree.until.getTime() ? fromSnapshot : fromTree;
    return { kind: "retention", readBack: true, retainUntil: until.until, mode: until.mode };
  } catch (err) {
    return { kind: "retention", readBack: false, error: clean(errorMessage(err)) };
  }
}

function describeBackend(location: string): string {
  const scheme = /^([a-z][a-z0-9]+):/.exec(location)?.[1];
  return scheme === undefined || scheme === "local" ? "a local directory" : `the ${scheme} backend`;
}

const FORMATS: readonly PostureFormat[] = ["table", "markdown", "html", "json"];

export function registerPosture(program: Command, globals: () => GlobalOptions): void {
  program
    .command("posture")
    .description(
      "evaluate every dataset against its policy (3-2-1-1-0 and others) from the live repositories",
    )
    .argument("[dataset]", "only this dataset")
    .option("-c, --config <file>", "the config file (env BULWARK_CONFIG; default ./bulwark.yaml)")
    .option("--format <format>", "table, markdown or html (--json for JSON)", "table")
    .option("--strict", "unknown rows (evidence that does not exist yet) fail too")
    .addHelpText(
      "after",
      "\nEach row has a status (pass, fail, unknown), its evidence and, when it fails, the reason and the remedy.\nExit code 0 when every dataset complies, 20 when any fails, 1 when the config is invalid.",
    )
    .action(
      async (dataset: string | undefined, flags: { config?: string; format: string; strict?: boolean }) => {
        const opts = globals();
        if (!FORMATS.includes(flags.format as PostureFormat)) {
          throw new BulwarkError(
            "USAGE",
            `--format must be table, markdown or html, got ${JSON.stringify(flags.format)}`,
          );
        }
        const format: PostureFormat = opts.json ? "json" : (flags.format as PostureFormat);
        const file = configPath(flags.config, process.env);
        const resolved = await loadConfigFile(file, processSecretEnvironment(process.env));
        for (const d of [...resolved.errors, ...resolved.warnings])
          process.stderr.write(formatDiagnostic(d) + "\n");
        const config = resolved.config;
        if (config === undefined) {
          throw new BulwarkError(
            "CONFIG_INVALID",
            `${file} has ${resolved.errors.length} ${resolved.errors.length === 1 ? "error" : "errors"}`,
            { hint: "fix them (listed above); `bulwark config check` explains the file" },
          );
        }
        if (dataset !== undefined && config.datasets[dataset] === undefined) {
          const known = Object.keys(config.datasets);
          throw new BulwarkError("USAGE", `unknown dataset ${JSON.stringify(dataset)}`, {
            hint:
              known.length > 0
                ? `the datasets of ${file}: ${known.join(", ")}`
                : `${file} declares no dataset`,
          });
        }
        let password: Promise<string> | undefined;
        const evidence = await collectEvidence(config, {
          env: process.env,
          defaultPassword: () => (password ??= getPassword(opts)),
          ...(dataset !== undefined ? { dataset } : {}),
          onDamaged: (target, name, err) =>
            process.stderr.write(
              `warning: ${target}: skipping damaged snapshot ${name.slice(0, 8)}: ${errorMessage(err)}\n`,
            ),
        });
        const report = evaluatePosture(config, evidence, new Date(), dataset);
        process.stdout.write(renderPosture(report, format));
        process.exitCode = postureExitCode(report, { strict: flags.strict === true });
      },
    );
}
