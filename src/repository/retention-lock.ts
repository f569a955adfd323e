/**
 * Retention that follows the data (docs/design.md, "Immutability"): on a target with Object Lock, every
 * object a kept snapshot still needs must stay locked for the protection period from *now*, not from the
 * day it was uploaded. A pack written a year ago and still used by today's snapshot must not become
 * deletable tomorrow.
 *
 * 1. Collect what the snapshots need: config, keys, every snapshot file, every index file, and every pack
 *    holding a blob that a snapshot's trees reach.
 * 2. Read each object's retention. One that lapses before now + period is "lock drift": reported, and
 *    extended (never shortened) unless this is a dry run.
 * Lock files are never locked: they must be removable when a command ends.
 */
import type { FileHandle, FileType, RetentionMode } from "../backend/backend.js";
import { BulwarkError, errorMessage } from "../core/errors.js";
import { forEachLimit, type Repository } from "./repository.js";
import { systemClock } from "../core/clock.js";

export interface RetentionPlan {
  mode: RetentionMode;
  /** The protection period from now. */
  days: number;
  dryRun?: boolean;
  now?: Date;
  /** The blobs the snapshots use (src/snapshot/used-blobs.ts), called once the index is loaded. */
  usedBlobs: () => Promise<ReadonlySet<string>>;
}

export interface DriftEntry {
  file: string;
  /** When its lock lapses (absent: not locked at all). */
  until?: string;
}

export interface RetentionReport {
  checked: number;
  /** Objects whose lock lapses before now + period (before this run extended them). */
  drift: DriftEntry[];
  extended: number;
  errors: { file: string; error: string }[];
  requiredUntil: string;
}

export async function maintainRetentionLocks(
  repo: Repository,
  plan: RetentionPlan,
): Promise<RetentionReport> {
  const backend = repo.backend;
  const getRetention = backend.getRetention?.bind(backend);
  const extendRetention = backend.extendRetention?.bind(backend);
  if (!getRetention || !extendRetention || backend.capabilities.retentionModes.length === 0) {
    throw new BulwarkError("USAGE", `${backend.location} has no immutability (Object Lock) to maintain`, {
      hint: "retention maintenance applies to targets with Object Lock, such as an S3 bucket created with it",
    });
  }
  const now = plan.now ?? systemClock.now();
  const period = plan.days * 86_400_000;
  const until = new Date(now.getTime() + period);
  // Extend a little past the requirement, so a run tomorrow does not find everything drifting by a day.
  const extendTo = new Date(until.getTime() + Math.min(86_400_000, period / 10));

  const needed: FileHandle[] = [{ type: "config", name: "" }];
  for (const type of ["key", "snapshot", "index"] as FileType[]) {
    for (const name of await repo.listNames(type)) needed.push({ type, name });
  }
  await repo.loadIndex();
  const packs = new Set<string>();
  for (const id of await plan.usedBlobs()) {
    const pack = repo.index.get(id)?.pack;
    if (pack) packs.add(pack);
  }
  for (const name of packs) needed.push({ type: "pack", name });

  const report: RetentionReport = {
    checked: 0,
    drift: [],
    extended: 0,
    errors: [],
    requiredUntil: until.toISOString(),
  };
  await forEachLimit(needed, Math.max(2, backend.capabilities.connections), async (h) => {
    const file = h.type === "config" ? "config" : `${h.type}/${h.name.slice(0, 12)}`;
    try {
      const current = await getRetention(h);
      report.checked++;
      if (current && current.until.getTime() >= until.getTime()) return;
      report.drift.push(current ? { file, until: current.until.toISOString() } : { file });
      if (plan.dryRun) return;
      await extendRetention(h, {
        mode: current?.mode === "compliance" ? "compliance" : plan.mode,
        until: extendTo,
      });
      report.extended++;
    } catch (err) {
      report.errors.push({ file, error: errorMessage(err) });
    }
  });
  report.drift.sort((a, b) => (a.file < b.file ? -1 : 1));
  return report;
}
