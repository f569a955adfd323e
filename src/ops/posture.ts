/**
 * Posture evidence (docs/design.md §21 "Target labels and posture"): what every target of the datasets' jobs
 * holds, read from the repositories themselves: whether each could be opened, the newest snapshot of the
 * dataset, and, where the backend reads retention back, until when that snapshot's file and its tree's pack
 * are locked. src/policy/posture.ts decides from this evidence; this module only gathers it, and a target's
 * failure is evidence, never an exception. Called by `bulwark posture` and (later) the daemon.
 */
import type { Backend, FileHandle } from "../backend/backend.js";
import type { BulwarkConfig, Dataset, Target } from "../config/types.js";
import { errorMessage } from "../core/errors.js";
import type { Catalog } from "../catalog/catalog.js";
import type {
  CopyEvidence,
  CopyValidationEvidence,
  DrEvidence,
  DrillEvidence,
  PostureEvidence,
  ValidationEvidence,
} from "../policy/posture.js";
import type { DrillRecord, DrRunRecord } from "../catalog/catalog.js";
import { runbookHash } from "../config/runbooks.js";
import { coverageOf } from "./verify.js";
import { forEachLimit, Repository } from "../repository/repository.js";
import { addSnapshotBlobs } from "../snapshot/used-blobs.js";
import { normalisePaths } from "../snapshot/archiver.js";
import { loadAllSnapshots, type SnapshotWithId } from "../snapshot/snapshot.js";
import { openTargetRepository, scrub, targetPassword } from "./targets.js";

/** What posture reads from the catalog. */
export type ValidationStore = Pick<Catalog, "latestVerification" | "packReads" | "latestDrill"> &
  Partial<Pick<Catalog, "drRuns">>;

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
  /** The catalog's verification, coverage and drill records, when there is a catalog. */
  catalog?: ValidationStore;
  /** For the coverage's period (`fullEvery`). */
  now?: Date;
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
      const validation =
        options.catalog &&
        (await validationEvidence(
          options.catalog,
          config,
          name,
          targets,
          opened,
          options.now ?? new Date(0),
        ));
      const dr = options.catalog && drEvidence(options.catalog, config, name);
      evidence.datasets[name] = { copies, ...(validation ? { validation } : {}), ...(dr ? { dr } : {}) };
    }
  } finally {
    for (const b of backends) await b.close().catch(() => undefined);
  }
  return evidence;
}

/**
 * The DR evidence of a dataset: the latest `dr drill` of the runbooks that restore it, and whether the runbook
 * changed since (its hash differs from the drill's), which resets its verified state (docs/design.md §24).
 */
function drEvidence(
  catalog: ValidationStore,
  config: BulwarkConfig,
  dataset: string,
): DrEvidence | undefined {
  if (catalog.drRuns === undefined) return undefined;
  let best: { run: DrRunRecord; changed: boolean } | undefined;
  for (const rb of Object.values(config.runbooks)) {
    if (!Object.values(rb.services).some((s) => s.restore.some((r) => r.dataset === dataset))) continue;
    const run = catalog.drRuns({ runbook: rb.name, mode: "drill", dataset, limit: 1 })[0];
    if (run === undefined) continue;
    const changed = run.definitionHash !== runbookHash(rb);
    if (best === undefined || run.time.getTime() > best.run.time.getTime()) best = { run, changed };
  }
  if (best === undefined) return undefined;
  return {
    runbook: best.run.runbook,
    time: best.run.time,
    status: best.run.status,
    description: best.run.description,
    definitionChanged: best.changed,
  };
}

/**
 * The validation evidence of a dataset from the catalog: per target, its latest verification and the
 * coverage of its packs (the catalog's pack reads of the repository against the packs its index names,
 * counted within the shortest `fullEvery` of the policies of the dataset's jobs on that target), and the
 * dataset's latest drill.
 */
async function validationEvidence(
  catalog: ValidationStore,
  config: BulwarkConfig,
  dataset: string,
  targets: readonly string[],
  opened: ReadonlyMap<string, OpenedTarget>,
  now: Date,
): Promise<ValidationEvidence> {
  const copies: Record<string, CopyValidationEvidence> = {};
  for (const t of targets) {
    const copy: CopyValidationEvidence = {};
    const v = catalog.latestVerification(dataset, t);
    if (v !== undefined) copy.verification = { time: v.time, errors: v.errors, description: v.description };
    const o = opened.get(t);
    if (o?.repo === undefined) {
      copy.coverageError = `the copy could not be opened${o?.error !== undefined ? ` (${o.error})` : ""}`;
    } else {
      try {
        if (!o.indexLoaded) {
          await o.repo.loadIndex();
          o.indexLoaded = true;
        }
        let fullEvery: { text: string; ms: number } | undefined;
        for (const job of Object.values(config.jobs)) {
          if (job.dataset !== dataset || (job.primary !== t && !job.copies.includes(t))) continue;
          const p = config.policies[job.policy]?.verification;
          if (
            p?.fullEveryMs !== undefined &&
            p.fullEvery !== undefined &&
            p.fullEveryMs < (fullEvery?.ms ?? Infinity)
          )
            fullEvery = { text: p.fullEvery, ms: p.fullEveryMs };
        }
        const c = coverageOf([...o.repo.index.packIds()], catalog.packReads(o.repo.id), now, fullEvery?.ms);
        copy.coverage = {
          packs: c.packs,
          covered: c.covered,
          damaged: c.damaged,
          ...(c.oldestRead ? { oldestRead: c.oldestRead } : {}),
          ...(fullEvery ? { fullEvery: fullEvery.text } : {}),
        };
      } catch (err) {
        copy.coverageError = errorMessage(err);
      }
    }
    copies[t] = copy;
  }
  const latest = catalog.latestDrill(dataset);
  return { copies, ...(latest ? { drill: drillEvidence(latest) } : {}) };
}

function drillEvidence(d: DrillRecord): DrillEvidence {
  const details = (d.details ?? {}) as {
    findings?: unknown;
    restore?: { durationMs?: unknown; bytes?: unknown };
    rpoMs?: unknown;
  };
  const num = (x: unknown): number | undefined => (typeof x === "number" ? x : undefined);
  const restoreMs = num(details.restore?.durationMs);
  const bytes = num(details.restore?.bytes);
  const rpoMs = num(details.rpoMs);
  return {
    time: d.time,
    status: d.status,
    target: d.target,
    snapshot: d.snapshot,
    description: d.description,
    findings: Array.isArray(details.findings) ? details.findings.map(String) : [],
    ...(restoreMs !== undefined ? { restoreMs } : {}),
    ...(bytes !== undefined ? { bytes } : {}),
    ...(rpoMs !== undefined ? { rpoMs } : {}),
  };
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
    const tampering = await tamperingFinding(backend);
    if (tampering !== undefined) return { kind: "retention", readBack: true, tampering };
    if (!o.indexLoaded) {
      await repo.loadIndex();
      o.indexLoaded = true;
    }
    const horizon = await lockHorizon(repo, snapshot, getRetention);
    if (horizon.missing !== undefined) {
      return {
        kind: "retention",
        readBack: false,
        error: `${horizon.missing} of snapshot ${snapshot.id.slice(0, 8)} is not in the index`,
      };
    }
    if (horizon.earliest === undefined)
      return { kind: "retention", readBack: true, objects: horizon.objects };
    return {
      kind: "retention",
      readBack: true,
      ...(horizon.earliest.until !== undefined
        ? { retainUntil: horizon.earliest.until, mode: horizon.earliest.mode }
        : {}),
      earliest: horizon.earliest.file,
      objects: horizon.objects,
    };
  } catch (err) {
    return { kind: "retention", readBack: false, error: clean(errorMessage(err)) };
  }
}

/** "tampering detected: ..." naming the first files whose current version is not Bulwark's, if any. */
async function tamperingFinding(backend: Backend): Promise<string | undefined> {
  const files = (await backend.tampering?.())?.files ?? [];
  if (files.length === 0) return undefined;
  const shown = files.slice(0, 5).map((f) => {
    const name = f.handle.type === "config" ? "the config" : `${f.handle.type} ${f.handle.name.slice(0, 12)}`;
    const current = f.foreign[0];
    return `${name} (${current?.deleteMarker === true ? "delete marker" : "foreign version"} over it)`;
  });
  const more = files.length > 5 ? ` and ${files.length - 5} more` : "";
  return `tampering detected: ${files.length} file${files.length === 1 ? "" : "s"} hidden behind delete markers or foreign versions: ${shown.join(", ")}${more}`;
}

/**
 * The lock horizon of a snapshot: the earliest retention end among every object a restore of it needs (the
 * config, every key, every index file, the snapshot file and every pack holding a blob its trees reach). An
 * object without retention ends the horizon now (`until` absent). Requests run as many at once as the
 * backend takes. `missing`: a blob the snapshot needs is in no index (then nothing is judged).
 */
async function lockHorizon(
  repo: Repository,
  snapshot: SnapshotWithId,
  getRetention: NonNullable<Backend["getRetention"]>,
): Promise<{
  objects: number;
  earliest?: { file: string; until?: Date; mode?: string };
  missing?: string;
}> {
  const blobs = new Set<string>();
  await addSnapshotBlobs(repo, snapshot, blobs, "posture");
  const packs = new Set<string>();
  for (const id of blobs) {
    const pack = repo.index.get(id)?.pack;
    if (pack === undefined) return { objects: 0, missing: `blob ${id.slice(0, 12)}` };
    packs.add(pack);
  }
  const handles: FileHandle[] = [
    { type: "config", name: "" },
    { type: "snapshot", name: snapshot.id },
  ];
  for (const type of ["key", "index"] as const) {
    for await (const f of repo.backend.list(type)) handles.push({ type, name: f.name });
  }
  for (const name of packs) handles.push({ type: "pack", name });
  let earliest: { file: string; until?: Date; mode?: string } | undefined;
  await forEachLimit(handles, Math.max(1, repo.backend.capabilities.connections), async (h) => {
    const r = await getRetention(h);
    const file = h.type === "config" ? "the config" : `${h.type} ${h.name.slice(0, 12)}`;
    if (r === undefined) {
      if (earliest === undefined || earliest.until !== undefined) earliest = { file };
      return;
    }
    if (
      earliest === undefined ||
      (earliest.until !== undefined && r.until.getTime() < earliest.until.getTime())
    )
      earliest = { file, until: r.until, mode: r.mode };
  });
  return { objects: handles.length, ...(earliest ? { earliest } : {}) };
}

function describeBackend(location: string): string {
  const scheme = /^([a-z][a-z0-9]+):/.exec(location)?.[1];
  return scheme === undefined || scheme === "local" ? "a local directory" : `the ${scheme} backend`;
}
