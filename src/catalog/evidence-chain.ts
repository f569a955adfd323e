/**
 * The evidence chain's encoding (docs/design.md §22): which columns of which table each link's hash covers,
 * and the hash itself. Apart from the catalog (and its SQLite addon) so that a report can recompute a link
 * from a record it shows, and every command that may check one starts without loading SQLite.
 */
import { createHash } from "node:crypto";

import type {
  DrillRecord,
  DrRunRecord,
  EvidenceKind,
  RunbookVersionRecord,
  VerificationRecord,
} from "./catalog.js";

/**
 * The tables of the evidence chain and the columns each link's hash covers, in this order. A kind's
 * columns never change once released: a new column is hashed only by a new kind or a new encoding version.
 */
export const EVIDENCE_TABLES: Record<EvidenceKind, { table: string; columns: readonly string[] }> = {
  verification: {
    table: "verifications",
    columns: [
      "id",
      "target",
      "dataset",
      "snapshot",
      "time",
      "kind",
      "errors",
      "description",
      "run_id",
      "details",
    ],
  },
  drill: {
    table: "drills",
    columns: ["id", "dataset", "target", "snapshot", "time", "status", "description", "details"],
  },
  runbook: {
    table: "runbook_versions",
    columns: ["id", "runbook", "definition_hash", "time", "definition"],
  },
  dr: {
    table: "dr_runs",
    columns: [
      "id",
      "runbook",
      "definition_hash",
      "mode",
      "time",
      "status",
      "description",
      "datasets",
      "details",
    ],
  },
};

/**
 * The row an evidence record is stored as, column by column, as its link's hash covers it: so a link can be
 * recomputed from a record outside the catalog (a JSON report). A JSON column is its JSON.stringify text,
 * which is what the catalog stores (and a fixed point of JSON.parse then JSON.stringify).
 */
export function evidenceRow(
  kind: EvidenceKind,
  r:
    | Omit<VerificationRecord, "chain">
    | Omit<DrillRecord, "chain">
    | Omit<RunbookVersionRecord, "chain">
    | Omit<DrRunRecord, "chain">,
): Record<string, unknown> {
  if (kind === "dr") {
    const d = r as DrRunRecord;
    return {
      id: d.id,
      runbook: d.runbook,
      definition_hash: d.definitionHash,
      mode: d.mode,
      time: d.time.toISOString(),
      status: d.status,
      description: d.description,
      datasets: JSON.stringify(d.datasets),
      details: d.details === undefined ? null : JSON.stringify(d.details),
    };
  }
  if (kind === "runbook") {
    const v = r as RunbookVersionRecord;
    return {
      id: v.id,
      runbook: v.runbook,
      definition_hash: v.definitionHash,
      time: v.time.toISOString(),
      definition: JSON.stringify(v.definition),
    };
  }
  const details =
    (r as DrillRecord).details === undefined ? null : JSON.stringify((r as DrillRecord).details);
  if (kind === "verification") {
    const v = r as VerificationRecord;
    return {
      id: v.id,
      target: v.target,
      dataset: v.dataset ?? null,
      snapshot: v.snapshot ?? null,
      time: v.time.toISOString(),
      kind: v.kind,
      errors: v.errors,
      description: v.description,
      run_id: v.runId ?? null,
      details,
    };
  }
  const d = r as DrillRecord;
  return {
    id: d.id,
    dataset: d.dataset,
    target: d.target,
    snapshot: d.snapshot,
    time: d.time.toISOString(),
    status: d.status,
    description: d.description,
    details,
  };
}

/** The previous hash of the first link. */
export const EVIDENCE_GENESIS = "0".repeat(64);

/**
 * A link's hash: SHA-256 (hex) of the JSON array ["bulwark-evidence/1", seq, kind, prevHash, [[column,
 * value], ...]] with the kind's columns in their fixed order and each value as SQLite stores it (text,
 * integer or null; JSON columns as their stored text). Exported so a test or an auditor can recompute it.
 */
export function evidenceHash(
  seq: number,
  kind: EvidenceKind,
  prevHash: string,
  row: Readonly<Record<string, unknown>>,
): string {
  const fields = EVIDENCE_TABLES[kind].columns.map((c) => [c, row[c] ?? null]);
  return createHash("sha256")
    .update(JSON.stringify(["bulwark-evidence/1", seq, kind, prevHash, fields]))
    .digest("hex");
}
