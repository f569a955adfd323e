/**
 * Exit codes, the one place errors become numbers (documented in `bulwark --help`).
 */
import { findBulwarkError, type ErrorCode } from "../core/errors.js";

export const EXIT = {
  OK: 0,
  ERROR: 1,
  PARTIAL: 3,
  NO_REPOSITORY: 10,
  LOCKED: 11,
  WRONG_PASSWORD: 12,
  POSTURE_FAILS: 20,
  EVIDENCE_INVALID: 21,
  EVIDENCE_UNSIGNED: 22,
  DR_NOT_READY: 23,
  DR_WAITING: 24,
  CANCELLED: 130,
} as const;

export const EXIT_CODES_HELP = `Exit codes:
  0   success
  1   error (for check: the repository has errors)
  3   partial: a backup (or run) skipped unreadable files (they are listed); catalog rebuild
      could not reach every target; snapshots could not read a snapshot file (it is named)
  10  no repository at the given location
  11  the repository is locked by another process
  12  wrong password
  20  posture: a dataset does not meet its rule
  21  report verify, catalog verify-chain: a report or the catalog's evidence chain does
      not verify
  22  report verify: the report is not signed
  23  dr plan: the runbook is not ready (what would fail is listed)
  24  dr failover, dr resume: the run waits for an approval (bulwark dr approve)
  130 interrupted`;

const BY_CODE: Partial<Record<ErrorCode, number>> = {
  NO_REPOSITORY: EXIT.NO_REPOSITORY,
  REPO_LOCKED: EXIT.LOCKED,
  WRONG_PASSWORD: EXIT.WRONG_PASSWORD,
  CANCELLED: EXIT.CANCELLED,
};

export function exitCodeFor(err: unknown): number {
  const e = findBulwarkError(err);
  return (e && BY_CODE[e.code]) ?? EXIT.ERROR;
}
