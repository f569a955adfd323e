/**
 * Evidence operations (docs/design.md §17c): the details a verification records, the report of recorded
 * verifications and drills (chosen from the catalog, rendered, optionally signed with the config's
 * Ed25519 key) and the check of a report file (its signature, and its records against the catalog's
 * evidence chain). `bulwark verify` and `bulwark report` call these; rendering and signing themselves are
 * in src/evidence/.
 */
import type { KeyObject } from "node:crypto";
import { readFile, stat } from "node:fs/promises";

import type {
  Catalog,
  DrillRecord,
  EvidenceChainStatus,
  EvidenceKind,
  VerificationRecord,
} from "../catalog/catalog.js";
import type { Budget } from "../config/budget.js";
import { describeSecretRef, type SecretRef } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import { BulwarkError } from "../core/errors.js";
import { formatIoReason } from "../core/format.js";
import { FINDING_LIST_LIMIT, type VerificationDetails } from "../evidence/details.js";
import {
  readReport,
  renderReport,
  type RecordAnchor,
  type ReportFormat,
  type ReportMeta,
} from "../evidence/report.js";
import {
  checkReportSignature,
  keyFingerprint,
  signReport,
  signingKeyFromPem,
} from "../evidence/signature.js";
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
  const g = outcome.digests;
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
    // Packs not read but checked at rest by the target's own SHA-256 (the vault).
    ...(g.offered
      ? { digested: { packs: g.packs, bytes: g.bytes, damaged: g.damaged, withoutDigest: g.withoutDigest } }
      : {}),
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

// ---------------------------------------------------------------------------------------------------------
// Reports

/** What a report reads from the catalog. */
export type EvidenceStore = Pick<Catalog, "verifications" | "drills" | "verifyEvidenceChain" | "path">;

export interface ReportSelection {
  kind: EvidenceKind;
  dataset?: string;
  target?: string;
  id?: number;
  /** The config's datasets and targets, to tell an unknown name from one without records. */
  known?: { datasets: string[]; targets: string[] };
}

const KIND_NAME: Record<EvidenceKind, string> = {
  verification: "verification",
  drill: "drill",
  runbook: "runbook version",
  dr: "DR run",
};

/**
 * The records a report shows: the one with `id`, else the latest of each dataset (verifications: of each
 * dataset and target, since every copy is verified on its own), filtered by dataset and target, in
 * dataset then target order. An unknown dataset or target, or nothing recorded, is an error that says so.
 */
export function selectEvidence(
  store: EvidenceStore,
  selection: ReportSelection,
): VerificationRecord[] | DrillRecord[] {
  const { kind, known } = selection;
  const unknown = (what: string, name: string, names: string[]) =>
    new BulwarkError("USAGE", `unknown ${what} ${JSON.stringify(name)}`, {
      hint: names.length > 0 ? `the ${what}s are ${names.join(", ")}` : `the config declares no ${what}`,
    });
  if (known !== undefined) {
    if (selection.dataset !== undefined && !known.datasets.includes(selection.dataset))
      throw unknown("dataset", selection.dataset, known.datasets);
    if (selection.target !== undefined && !known.targets.includes(selection.target))
      throw unknown("target", selection.target, known.targets);
  }
  const filter = {
    ...(selection.dataset !== undefined ? { dataset: selection.dataset } : {}),
    ...(selection.target !== undefined ? { target: selection.target } : {}),
    ...(selection.id !== undefined ? { id: selection.id } : {}),
  };
  const all: Array<VerificationRecord | DrillRecord> =
    kind === "verification" ? store.verifications(filter) : store.drills(filter);
  if (all.length === 0) {
    const scope = [
      ...(selection.id !== undefined ? [`number ${selection.id}`] : []),
      ...(selection.dataset !== undefined ? [`of dataset ${selection.dataset}`] : []),
      ...(selection.target !== undefined ? [`on target ${selection.target}`] : []),
    ].join(" ");
    throw new BulwarkError(
      "NOT_FOUND",
      `the catalog at ${store.path} has no ${KIND_NAME[kind]}${scope !== "" ? ` ${scope}` : ""}`,
      {
        hint:
          kind === "verification"
            ? "run `bulwark verify -c CONFIG` first (it records each verification in the catalog)"
            : "run `bulwark drill -c CONFIG` first (it records each drill in the catalog)",
      },
    );
  }
  if (selection.id !== undefined) return all as VerificationRecord[] | DrillRecord[];
  // Newest first: the first record of each group is its latest.
  const latest = new Map<string, VerificationRecord | DrillRecord>();
  for (const r of all) {
    const key = kind === "verification" ? `${r.dataset ?? ""}\u0000${r.target}` : (r.dataset ?? "");
    if (!latest.has(key)) latest.set(key, r);
  }
  return [...latest.values()].sort(
    (a, b) => (a.dataset ?? "").localeCompare(b.dataset ?? "") || a.target.localeCompare(b.target),
  ) as VerificationRecord[] | DrillRecord[];
}

/**
 * Reads the config's signing key (a file holds the whole PEM; a variable its whole value). Warns when the
 * file can be read by others. Errors name the reference, never the key.
 */
export async function readSigningKey(
  ref: SecretRef,
  env: Readonly<Record<string, string | undefined>>,
): Promise<{ key: KeyObject; warnings: string[] }> {
  const warnings: string[] = [];
  let pem: string;
  if ("env" in ref) {
    const v = env[ref.env];
    if (v === undefined || v === "") {
      throw new BulwarkError(
        "CONFIG_INVALID",
        `the environment variable ${ref.env} (evidence.signingKey) is not set`,
        {
          hint: `export ${ref.env} with the PEM text of an Ed25519 private key, or point evidence.signingKey at a file`,
        },
      );
    }
    pem = v;
  } else {
    try {
      pem = await readFile(ref.file, "utf8");
      const mode = (await stat(ref.file)).mode & 0o777;
      if ((mode & 0o077) !== 0)
        warnings.push(
          `warning: the signing key ${ref.file} can be read by others (mode ${mode.toString(8).padStart(4, "0")}): chmod 600 ${ref.file}`,
        );
    } catch (err) {
      throw new BulwarkError(
        "CONFIG_INVALID",
        `cannot read the signing key file ${ref.file} (evidence.signingKey): ${formatIoReason(err)}`,
        {
          cause: err,
          hint: "make one with `openssl genpkey -algorithm ed25519 -out signing-key.pem` and `chmod 600 signing-key.pem`",
        },
      );
    }
  }
  return { key: signingKeyFromPem(pem, describeSecretRef(ref)), warnings };
}

export interface BuiltReport {
  text: string;
  format: ReportFormat;
  records: Array<{ kind: EvidenceKind; id: number; seq?: number; hash?: string; pass: boolean }>;
  chain: EvidenceChainStatus;
  /** The signer's fingerprint when signed. */
  fingerprint?: string;
}

/** Chooses the records, renders them and signs the result when a key is given. */
export function buildReport(input: {
  store: EvidenceStore;
  selection: ReportSelection;
  format: ReportFormat;
  clock: Clock;
  host: string;
  signingKey?: KeyObject;
  /** Told how many links of the catalog's chain were checked, of how many. */
  chainProgress?: (checked: number, total: number) => void;
}): BuiltReport {
  const records = selectEvidence(input.store, input.selection);
  const chain = input.store.verifyEvidenceChain(input.chainProgress);
  const base = { generatedAt: input.clock.now(), host: input.host, catalog: input.store.path, chain };
  const text = renderReport(
    input.selection.kind === "verification"
      ? { ...base, kind: "verification", records: records as VerificationRecord[] }
      : { ...base, kind: "drill", records: records as DrillRecord[] },
    input.format,
  );
  return {
    text: input.signingKey !== undefined ? signReport(text, input.format, input.signingKey) : text,
    format: input.format,
    records: records.map((r) => ({
      kind: input.selection.kind,
      id: r.id,
      ...(r.chain !== undefined ? { seq: r.chain.seq, hash: r.chain.hash } : {}),
      pass:
        "status" in r
          ? r.status === "pass"
          : r.errors === 0 && !(Array.isArray(r.details?.crossCopy) && r.details.crossCopy.length > 0),
    })),
    chain,
    ...(input.signingKey !== undefined ? { fingerprint: keyFingerprint(input.signingKey) } : {}),
  };
}

/** How a record of a report compares with the catalog. */
export type RecordCheck = RecordAnchor & {
  catalog: "same" | "different" | "missing" | "unchained" | "not checked";
};

export interface ReportCheck {
  /** Signed with a valid signature (by the pinned key, when one was given), and nothing contradicts it. */
  ok: boolean;
  signed: boolean;
  signature?: { valid: boolean; fingerprint: string; pinned?: boolean; malformed?: string };
  /** What the report is, when it is a Bulwark report. */
  report?: ReportMeta & { format: ReportFormat };
  records: RecordCheck[];
  /** The catalog's chain, when the report was checked against a catalog. */
  chain?: EvidenceChainStatus;
  /** Why it does not verify (empty when ok, or when merely unsigned). */
  problems: string[];
  notes: string[];
}

/**
 * Checks a report file: its signature (against the pinned key when given), and, with a catalog, each
 * record's chain position and hash against the catalog's record of the same kind and id, and the catalog's
 * chain up to the report's newest record. A catalog other than the one the report names is compared only
 * when `explicitCatalog` (the user named it). Pure apart from reading the store.
 */
export function checkReport(input: {
  file: string;
  pinned?: KeyObject;
  store?: EvidenceStore;
  explicitCatalog?: boolean;
  chainProgress?: (checked: number, total: number) => void;
}): ReportCheck {
  const problems: string[] = [];
  const notes: string[] = [];
  const sig = checkReportSignature(input.file, input.pinned);
  const report = readReport(sig.text);
  let signature: ReportCheck["signature"];
  if (sig.signed) {
    signature = {
      valid: sig.valid,
      fingerprint: sig.fingerprint,
      ...(sig.pinned !== undefined ? { pinned: sig.pinned } : {}),
      ...(sig.malformed !== undefined ? { malformed: sig.malformed } : {}),
    };
    if (sig.malformed !== undefined) problems.push(`the signature cannot be read: ${sig.malformed}`);
    else if (!sig.valid)
      problems.push("the signature does not match the report: it was changed after it was signed");
    if (sig.pinned === false)
      problems.push(`the report was signed by key ${sig.fingerprint}, not by the key given`);
    if (sig.valid && sig.pinned === undefined)
      notes.push(
        `signed by key ${sig.fingerprint}; give --public-key to require that it is the key you trust`,
      );
  }
  if (report === undefined) problems.push("this is not a Bulwark evidence report (its markers are missing)");
  for (const r of report?.records ?? []) {
    if (r.fieldsMatch === false)
      problems.push(
        `${r.kind} ${r.id} as shown does not give its chain hash (position ${r.seq ?? "?"}): the record was changed after it was recorded`,
      );
  }
  let records: RecordCheck[] = (report?.records ?? []).map((r) => ({ ...r, catalog: "not checked" }));
  let chain: EvidenceChainStatus | undefined;
  const store = input.store;
  if (report !== undefined && store !== undefined) {
    if (report.meta.catalog !== store.path && input.explicitCatalog !== true) {
      notes.push(
        `the report comes from the catalog ${report.meta.catalog}, not ${store.path}: not compared (name it with --catalog to compare)`,
      );
    } else {
      const status = store.verifyEvidenceChain(input.chainProgress);
      chain = status;
      // A record at the chain's first broken link is not the one the report shows, whatever its stored hash.
      records = records.map((r) => {
        const found = compareRecord(store, r);
        const broken = !status.ok && r.seq !== undefined && status.broken?.seq === r.seq;
        return { ...r, catalog: found === "same" && broken ? "different" : found };
      });
      for (const r of records) {
        const name = `${r.kind} ${r.id}`;
        if (r.catalog === "missing")
          problems.push(`the catalog has no ${name}: it was deleted after the report was made`);
        if (r.catalog === "different")
          problems.push(
            `the catalog's ${name} is not the one reported (position ${r.seq ?? "?"}, hash ${r.hash ?? "?"}): the catalog was changed after the report was made`,
          );
        if (r.catalog === "unchained") notes.push(`${name} is older than the evidence chain: not compared`);
      }
      const newest = Math.max(0, ...records.map((r) => r.seq ?? 0));
      if (!status.ok) {
        const at = status.broken?.seq;
        const message = `the catalog's evidence chain is broken${at !== undefined ? ` at position ${at}` : ""}: ${status.broken?.reason ?? ""}`;
        if (at === undefined || at <= newest) problems.push(message);
        else notes.push(`${message} (after this report's records)`);
      }
    }
  } else if (report !== undefined) {
    notes.push("no catalog to compare the records with");
  }
  return {
    ok: sig.signed && problems.length === 0,
    signed: sig.signed,
    ...(signature !== undefined ? { signature } : {}),
    ...(report !== undefined ? { report: { ...report.meta, format: report.format } } : {}),
    records,
    ...(chain !== undefined ? { chain } : {}),
    problems,
    notes,
  };
}

function compareRecord(store: EvidenceStore, r: RecordAnchor): RecordCheck["catalog"] {
  const found: Array<VerificationRecord | DrillRecord> =
    r.kind === "verification" ? store.verifications({ id: r.id }) : store.drills({ id: r.id });
  const record = found[0];
  if (record === undefined) return "missing";
  if (r.seq === undefined) return record.chain === undefined ? "unchained" : "different";
  return record.chain?.seq === r.seq && record.chain.hash === r.hash ? "same" : "different";
}
