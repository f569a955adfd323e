/**
 * Evidence (docs/design.md §17c): what a verification records in the catalog as its `details`, so that a
 * report can say what was read, from where, when, how long and what was found without opening the
 * repository again. `bulwark verify` builds it (src/ops/evidence.ts `verificationDetails`); a drill's
 * details are the drill report (src/ops/drill.ts `DrillReport`). Renderers read both tolerantly: a record
 * written by an older or newer Bulwark may lack a key or carry one more.
 */

/** A finding as recorded: the checker's finding with its long lists capped (the totals say how many). */
export interface RecordedFinding {
  severity: string;
  kind: string;
  message: string;
  pack?: string;
  /** Blobs named by the finding: how many. */
  blobs?: number;
  snapshots?: string[];
  snapshotsTotal?: number;
  files?: string[];
  filesTotal?: number;
}

export interface VerificationDetails {
  target: string;
  /** The location, credentials removed. */
  location: string;
  /** The repository's id (coverage is kept by it). */
  repository: string;
  startedAt: string;
  durationMs: number;
  /** The budget the run was given: bytes or milliseconds (absent: none). */
  budget?: { bytes: number } | { ms: number };
  fullEveryMs?: number;
  newOnly: boolean;
  newFirst: boolean;
  structure: { snapshots: number; trees: number; packs: number; blobs: number };
  /** Packs not read but checked at rest by the target's own SHA-256 (the vault), when there were any. */
  digested?: { packs: number; bytes: number; damaged: number; withoutDigest: number };
  read: { packs: number; bytes: number; planned: number; deferred: number; fresh: number };
  coverage: { packs: number; covered: number; ratio: number; damaged: number; oldestRead?: string };
  errors: number;
  warnings: number;
  findings: RecordedFinding[];
  /** Copies of a snapshot on this and another target verified in the same run that differ. */
  crossCopy: { original: string; message: string; targets: string[] }[];
}

/** How many snapshots and files of one finding are kept in the catalog (the rest are counted). */
export const FINDING_LIST_LIMIT = 100;
