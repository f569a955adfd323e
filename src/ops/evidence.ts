/**
 * Evidence operations (docs/design.md §17c): the details a verification records, the report of recorded
 * verifications and drills (chosen from the catalog, rendered, optionally signed with the config's
 * Ed25519 key) and the check of a report file (its signature, and its records against the catalog's
 * evidence chain). `bulwark verify` and `bulwark report` call these; rendering and signing themselves are
 * in src/evidence/.
 */
import type { Budget } from "../config/budget.js";
import { FINDING_LIST_LIMIT, type VerificationDetails } from "../evidence/details.js";
import type { CrossCopyFinding, VerifyOutcome } from "./verify.js";

/** The details of one target's verification, as `bulwark verify` records them. */
export function verificationDetails(
  outcome: VerifyOutcome,
  context: {
    target: string;
    location: string;
    repository: string;
    startedAt: Date;
    budget?: Budget | undefined;
    fullEveryMs?: number | undefined;
    newOnly: boolean;
    newFirst: boolean;
    crossCopy: readonly CrossCopyFinding[];
  },
): VerificationDetails {
  const capped = (list: readonly string[] | undefined) =>
    list === undefined ? {} : { list: list.slice(0, FINDING_LIST_LIMIT), total: list.length };
  const c = outcome.coverage;
  return {
    target: context.target,
    location: context.location,
    repository: context.repository,
    startedAt: context.startedAt.toISOString(),
    durationMs: outcome.durationMs,
    ...(context.budget !== undefined ? { budget: context.budget } : {}),
    ...(context.fullEveryMs !== undefined ? { fullEveryMs: context.fullEveryMs } : {}),
    newOnly: context.newOnly,
    newFirst: context.newFirst,
    structure: {
      snapshots: outcome.stats.snapshots,
      trees: outcome.stats.trees,
      packs: outcome.stats.packs,
      blobs: outcome.stats.blobs,
    },
    read: {
      packs: outcome.packsRead,
      bytes: outcome.bytesRead,
      planned: outcome.plan.read.length,
      deferred: outcome.plan.deferred,
      fresh: outcome.plan.fresh,
    },
    coverage: {
      packs: c.packs,
      covered: c.covered,
      ratio: c.ratio,
      damaged: c.damaged,
      ...(c.oldestRead !== undefined ? { oldestRead: c.oldestRead.toISOString() } : {}),
    },
    errors: outcome.errors,
    warnings: outcome.findings.filter((f) => f.severity === "warning").length,
    findings: outcome.findings.map((f) => {
      const snapshots = capped(f.snapshots);
      const files = capped(f.files);
      return {
        severity: f.severity,
        kind: f.kind,
        message: f.message,
        ...(f.pack !== undefined ? { pack: f.pack } : {}),
        ...(f.blobs !== undefined ? { blobs: f.blobs.length } : {}),
        ...(snapshots.list ? { snapshots: snapshots.list, snapshotsTotal: snapshots.total } : {}),
        ...(files.list ? { files: files.list, filesTotal: files.total } : {}),
      };
    }),
    crossCopy: context.crossCopy.map((f) => ({
      original: f.original,
      message: f.message,
      targets: f.targets,
    })),
  };
}
