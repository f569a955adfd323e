/**
 * Evidence operations (docs/design.md §17c): the details a verification records, the report of recorded
 * verifications, drills and DR runs (chosen from the catalog, rendered, optionally signed with the
 * config's Ed25519 key; a DR run with its runbook's change log) and the check of a report file (its
 * signature, and its records against the catalog's evidence chain). `bulwark verify` and `bulwark report` call these; rendering and signing themselves are
 * in src/evidence/.
 */
import type { KeyObject } from "node:crypto";
import { readFile, stat } from "node:fs/promises";

import type {
  Catalog,
  DrillRecord,
  DrRunRecord,
  EvidenceChainStatus,
  EvidenceKind,
  EvidenceLink,
  VerificationRecord,
} from "../catalog/catalog.js";
import type { Budget } from "../config/budget.js";
import { runbookHash } from "../config/runbooks.js";
import { describeSecretRef, type BulwarkConfig, type SecretRef } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import { BulwarkError } from "../core/errors.js";
import { formatIoReason } from "../core/format.js";
import { FINDING_LIST_LIMIT, type VerificationDetails } from "../evidence/details.js";
import {
  EVIDENCE_NAMES,
  readReport,
  renderReport,
  type ChangeLog,
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
export type EvidenceStore = Pick<
  Catalog,
  | "verifications"
  | "drills"
  | "drRuns"
  | "runbookVersions"
  | "runbookVersion"
  | "verifyEvidenceChain"
  | "path"
>;

export interface ReportSelection {
  /** What the report is of: verifications, drills, or DR runs ("dr", with their runbooks' change logs). */
  kind: EvidenceKind;
  dataset?: string;
  target?: string;
  /** DR runs: of this runbook only, of this mode only. */
  runbook?: string;
  mode?: DrRunRecord["mode"];
  id?: number;
  /**
   * The config's datasets and targets, to tell an unknown name from one without records; and its runbooks,
   * each with its definition hash (src/config/runbooks.ts runbookHash), so a DR run can be told from the
   * current definition.
   */
  known?: { datasets: string[]; targets: string[]; runbooks?: Record<string, string> };
}

/** What a report knows of the config: its names, and each runbook's current definition hash. */
export function reportKnown(config: BulwarkConfig): NonNullable<ReportSelection["known"]> {
  return {
    datasets: Object.keys(config.datasets),
    targets: Object.keys(config.targets),
    runbooks: Object.fromEntries(Object.values(config.runbooks).map((r) => [r.name, runbookHash(r)])),
  };
}

/**
 * The records a report shows: the one with `id`, else the latest of each dataset (verifications: of each
 * dataset and target, since every copy is verified on its own), filtered by dataset and target, in
 * dataset then target order; DR runs: the latest of each runbook, filtered by runbook and mode, in
 * runbook order. An unknown dataset, target or runbook, or nothing recorded, is an error that says so.
 */
export function selectEvidence(
  store: EvidenceStore,
  selection: ReportSelection,
): VerificationRecord[] | DrillRecord[] | DrRunRecord[] {
  const { kind, known } = selection;
  if (kind === "dr") return selectDrRuns(store, selection);
  if (kind === "runbook")
    throw new BulwarkError("USAGE", "runbook versions are reported with the DR runs of their runbook", {
      hint: "run `bulwark report dr --runbook NAME`",
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
      `the catalog at ${store.path} has no ${EVIDENCE_NAMES[kind]}${scope !== "" ? ` ${scope}` : ""}`,
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

function unknown(what: string, name: string, names: string[]): BulwarkError {
  return new BulwarkError("USAGE", `unknown ${what} ${JSON.stringify(name)}`, {
    hint: names.length > 0 ? `the ${what}s are ${names.join(", ")}` : `the config declares no ${what}`,
  });
}

/** The DR runs a report shows (see selectEvidence). */
function selectDrRuns(store: EvidenceStore, selection: ReportSelection): DrRunRecord[] {
  const { runbook, mode, id } = selection;
  const runbooks = selection.known?.runbooks;
  if (runbooks !== undefined && runbook !== undefined && !Object.hasOwn(runbooks, runbook))
    throw unknown("runbook", runbook, Object.keys(runbooks));
  // Without an id or a runbook, every run is read to find the latest of each runbook (LIMIT -1: no limit).
  const all = store.drRuns({
    ...(id !== undefined ? { id } : {}),
    ...(runbook !== undefined ? { runbook } : {}),
    ...(mode !== undefined ? { mode } : {}),
    limit: runbook !== undefined || id !== undefined ? 1 : -1,
  });
  if (all.length === 0) {
    const scope = [
      ...(id !== undefined ? [`number ${id}`] : []),
      ...(runbook !== undefined ? [`of runbook ${runbook}`] : []),
      ...(mode !== undefined ? [`in mode ${mode}`] : []),
    ].join(" ");
    throw new BulwarkError(
      "NOT_FOUND",
      `the catalog at ${store.path} has no DR run${scope !== "" ? ` ${scope}` : ""}`,
      {
        hint: `run \`bulwark dr ${mode === "failover" || mode === "failback" ? mode : "drill"} ${runbook ?? "RUNBOOK"} -c CONFIG\` first (it records each DR run in the catalog)`,
      },
    );
  }
  if (id !== undefined) return all;
  // Newest first: the first run of each runbook is its latest.
  const latest = new Map<string, DrRunRecord>();
  for (const r of all) if (!latest.has(r.runbook)) latest.set(r.runbook, r);
  return [...latest.values()].sort((a, b) => a.runbook.localeCompare(b.runbook));
}

/** The change log of each runbook of the runs, with the config's definition when one was given. */
function changeLogs(store: EvidenceStore, runs: DrRunRecord[], selection: ReportSelection): ChangeLog[] {
  const runbooks = selection.known?.runbooks;
  return [...new Set(runs.map((r) => r.runbook))].sort().map((runbook) => ({
    runbook,
    versions: store.runbookVersions(runbook),
    ...(runbooks !== undefined
      ? { current: Object.hasOwn(runbooks, runbook) ? runbooks[runbook]! : null }
      : {}),
  }));
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
  const { kind } = input.selection;
  const records = selectEvidence(input.store, input.selection);
  const logs = kind === "dr" ? changeLogs(input.store, records as DrRunRecord[], input.selection) : [];
  const chain = input.store.verifyEvidenceChain(input.chainProgress);
  const base = { generatedAt: input.clock.now(), host: input.host, catalog: input.store.path, chain };
  const text = renderReport(
    kind === "verification"
      ? { ...base, kind, records: records as VerificationRecord[] }
      : kind === "drill"
        ? { ...base, kind, records: records as DrillRecord[] }
        : { ...base, kind: "dr", records: records as DrRunRecord[], changeLogs: logs },
    input.format,
  );
  const link = (chain: EvidenceLink | undefined) =>
    chain !== undefined ? { seq: chain.seq, hash: chain.hash } : {};
  return {
    text: input.signingKey !== undefined ? signReport(text, input.format, input.signingKey) : text,
    format: input.format,
    records: [
      ...(records as Array<VerificationRecord | DrillRecord | DrRunRecord>).map((r) => ({
        kind,
        id: r.id,
        ...link(r.chain),
        pass:
          "status" in r
            ? r.status === "pass"
            : r.errors === 0 && !(Array.isArray(r.details?.crossCopy) && r.details.crossCopy.length > 0),
      })),
      // A runbook version is no result: it neither passes nor fails, so it counts as passed.
      ...logs.flatMap((l) =>
        l.versions.map((v) => ({ kind: "runbook" as const, id: v.id, ...link(v.chain), pass: true })),
      ),
    ],
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
        `${EVIDENCE_NAMES[r.kind]} ${r.id} as shown does not give its chain hash (position ${r.seq ?? "?"}): the record was changed after it was recorded`,
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
        const name = `${EVIDENCE_NAMES[r.kind]} ${r.id}`;
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
  const record = findRecord(store, r);
  if (record === undefined) return "missing";
  if (r.seq === undefined) return record.chain === undefined ? "unchained" : "different";
  return record.chain?.seq === r.seq && record.chain.hash === r.hash ? "same" : "different";
}

/**
 * The catalog's record of a report's record, by kind and id. The catalog lists DR runs by runbook and a
 * runbook's versions by runbook, so the report's anchor names the runbook; one that names another runbook
 * finds nothing, and the record is reported missing.
 */
function findRecord(store: EvidenceStore, r: RecordAnchor): { chain?: EvidenceLink } | undefined {
  switch (r.kind) {
    case "verification":
      return store.verifications({ id: r.id })[0];
    case "drill":
      return store.drills({ id: r.id })[0];
    case "dr":
      return store.drRuns({ id: r.id }).find((x) => r.runbook === undefined || x.runbook === r.runbook);
    case "runbook": {
      const v = store.runbookVersion(r.id);
      return v !== undefined && v.runbook === r.runbook ? v : undefined;
    }
  }
}
