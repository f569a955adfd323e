/**
 * Evidence reports (docs/design.md §17c): recorded verifications, drills and DR runs rendered for an
 * auditor as Markdown, standalone HTML or JSON — what was read or restored, from where, when, how long, the
 * validators, the result and every finding (a DR run: its RTO against the target, the RPO of each dataset
 * and every unit of its timeline, then its runbook's change log), with each record's place in the
 * catalog's evidence chain.
 *
 *  1. Each record becomes a section of a small document (facts, lists, tables, preformatted output); the
 *     details are read tolerantly (a key missing from an older record is left out, never a crash).
 *  2. Markdown and HTML render the same document, every piece of recorded text escaped; the HTML has no
 *     script and loads nothing (a Content-Security-Policy forbids it).
 *  3. JSON is the records themselves, with their details and chain links, under a format name.
 *  4. Markdown and HTML carry one machine-readable line per record, `<!-- bulwark-evidence-record {...} -->`,
 *     with its kind, id, chain position and hash (and a DR run's or runbook version's runbook, by which the
 *     catalog finds it), so that `bulwark report verify` can compare a report with the catalog (JSON has
 *     the same in `records[].chain`). A change log is one section with a line per version.
 * Pure: the caller gives the time, the host and the catalog's chain status.
 */
import type {
  DrillRecord,
  DrRunRecord,
  EvidenceChainStatus,
  EvidenceKind,
  RunbookVersionRecord,
  VerificationRecord,
} from "../catalog/catalog.js";
// The encoding only: the catalog module loads SQLite, which a command rendering or checking a report
// from a file must not pay for at start-up.
import { evidenceHash, evidenceRow } from "../catalog/evidence-chain.js";
import { formatBytes, formatCount, formatDuration, formatRate } from "../core/format.js";

export const REPORT_FORMATS = ["md", "html", "json"] as const;
export type ReportFormat = (typeof REPORT_FORMATS)[number];

/** The format name of a JSON report. */
export const JSON_REPORT_FORMAT = "bulwark-evidence-report/1";

export type ReportInput = {
  generatedAt: Date;
  host: string;
  /** The catalog the records come from. */
  catalog: string;
  /** The catalog's chain when the report was made. */
  chain: EvidenceChainStatus;
} & (
  | { kind: "verification"; records: VerificationRecord[] }
  | { kind: "drill"; records: DrillRecord[] }
  | { kind: "dr"; records: DrRunRecord[]; changeLogs: ChangeLog[] }
);

/** A runbook's change log as a DR report shows it after the runbook's runs. */
export interface ChangeLog {
  runbook: string;
  /** Oldest first (catalog.runbookVersions). */
  versions: RunbookVersionRecord[];
  /**
   * The definition hash of the config's runbook of that name (src/config/runbooks.ts runbookHash); null
   * when the config has no such runbook; absent when no config was given (not compared).
   */
  current?: string | null;
}

/** How reports and `report verify` name a record of each kind ("DR run 4"). */
export const EVIDENCE_NAMES: Record<EvidenceKind, string> = {
  verification: "verification",
  drill: "drill",
  runbook: "runbook version",
  dr: "DR run",
};

const EVIDENCE_KINDS = Object.keys(EVIDENCE_NAMES) as EvidenceKind[];

/** What a report says about one record, machine-readably (the anchor line of Markdown and HTML). */
export interface RecordAnchor {
  kind: EvidenceKind;
  id: number;
  seq?: number;
  hash?: string;
  /** A DR run's or runbook version's runbook: how the catalog finds a runbook version by its id. */
  runbook?: string;
  /**
   * JSON reports only: whether the record's fields, as shown, give its chain hash (recomputed from them
   * with the catalog's encoding). False: the record was changed after it was chained, or in the report.
   */
  fieldsMatch?: boolean;
}

/** What a report says about itself, machine-readably. */
export interface ReportMeta {
  kind: EvidenceKind;
  catalog: string;
  generatedAt: string;
}

const RECORD_ANCHOR = "<!-- bulwark-evidence-record ";
const REPORT_ANCHOR = "<!-- bulwark-evidence-report ";

export function renderReport(input: ReportInput, format: ReportFormat): string {
  if (format === "json") return renderJson(input);
  const doc = toDocument(input);
  return format === "md" ? renderMarkdown(doc) : renderHtml(doc);
}

/**
 * What a report (any format, unsigned part) says about itself and its records: from a JSON report's
 * fields, or from the anchor lines of Markdown and HTML. Undefined when it is no Bulwark report.
 */
export function readReport(
  text: string,
): { format: ReportFormat; meta: ReportMeta; records: RecordAnchor[] } | undefined {
  if (text.startsWith("{")) {
    try {
      const doc = asObject(JSON.parse(text));
      if (doc.format !== JSON_REPORT_FORMAT) return undefined;
      const meta = toMeta(doc);
      if (meta === undefined) return undefined;
      const records = arr(doc, "records")
        .map(asObject)
        .flatMap((r) => {
          const chain = obj(r, "chain");
          return toAnchor({
            kind: r.evidence,
            id: r.id,
            runbook: r.runbook,
            ...(chain ? { seq: chain.seq, hash: chain.hash } : {}),
          }).map((a) => (chain === undefined ? a : { ...a, fieldsMatch: fieldsGiveHash(a.kind, r, chain) }));
        });
      return { format: "json", meta, records };
    } catch {
      return undefined;
    }
  }
  let meta: ReportMeta | undefined;
  const records: RecordAnchor[] = [];
  for (const line of text.split("\n")) {
    const anchor = [RECORD_ANCHOR, REPORT_ANCHOR].find((p) => line.startsWith(p));
    if (anchor === undefined || !line.endsWith(" -->")) continue;
    let value: unknown;
    try {
      value = JSON.parse(line.slice(anchor.length, -" -->".length));
    } catch {
      continue; // not written by Bulwark
    }
    if (anchor === REPORT_ANCHOR) meta ??= toMeta(asObject(value));
    else records.push(...toAnchor(asObject(value)));
  }
  if (meta === undefined) return undefined;
  return { format: text.startsWith("<!DOCTYPE html>") ? "html" : "md", meta, records };
}

/** Whether a JSON report's record, as shown, hashes to its chain link. */
function fieldsGiveHash(
  kind: EvidenceKind,
  r: Record<string, unknown>,
  chain: Record<string, unknown>,
): boolean {
  const { evidence: _evidence, result: _result, chain: _chain, ...fields } = r;
  if (typeof fields.time !== "string" || typeof chain.seq !== "number" || typeof chain.prevHash !== "string")
    return false;
  const record = { ...fields, time: new Date(fields.time) } as unknown as Parameters<typeof evidenceRow>[1];
  try {
    return evidenceHash(chain.seq, kind, chain.prevHash, evidenceRow(kind, record)) === chain.hash;
  } catch {
    return false; // an invalid time
  }
}

function isKind(v: unknown): v is EvidenceKind {
  return typeof v === "string" && (EVIDENCE_KINDS as string[]).includes(v);
}

function toMeta(o: Record<string, unknown>): ReportMeta | undefined {
  const kind = o.kind;
  if (!isKind(kind) || typeof o.catalog !== "string") return undefined;
  return { kind, catalog: o.catalog, generatedAt: typeof o.generatedAt === "string" ? o.generatedAt : "" };
}

function toAnchor(a: Record<string, unknown>): RecordAnchor[] {
  if (!isKind(a.kind) || typeof a.id !== "number") return [];
  return [
    {
      kind: a.kind,
      id: a.id,
      ...(typeof a.seq === "number" ? { seq: a.seq } : {}),
      ...(typeof a.hash === "string" ? { hash: a.hash } : {}),
      ...((a.kind === "dr" || a.kind === "runbook") && typeof a.runbook === "string"
        ? { runbook: a.runbook }
        : {}),
    },
  ];
}

/** A comment line carrying JSON; < and > escaped so that no recorded text can end the comment. */
function commentLine(prefix: string, value: unknown): string {
  return `${prefix}${JSON.stringify(value).replace(/</g, "\\u003c").replace(/>/g, "\\u003e")} -->`;
}

// ---------------------------------------------------------------------------------------------------------
// The document

type Block =
  | { type: "list"; title: string; items: { text: string; sub?: string[] }[] }
  | { type: "table"; title: string; header: string[]; rows: string[][] }
  | { type: "pre"; title: string; text: string };

interface Section {
  title: string;
  /** Absent for a section that is no result (a change log). */
  pass?: boolean;
  facts: Array<[string, string]>;
  blocks: Block[];
  /** The records it shows: one, or a change log's versions. */
  anchors: RecordAnchor[];
}

interface ReportDocument {
  meta: ReportMeta;
  title: string;
  preamble: string[];
  sections: Section[];
}

function toDocument(input: ReportInput): ReportDocument {
  const what = { verification: "verification", drill: "restore drill", dr: "DR" }[input.kind];
  const sections =
    input.kind === "verification"
      ? input.records.map(verificationSection)
      : input.kind === "drill"
        ? input.records.map(drillSection)
        : drSections(input.records, input.changeLogs);
  const results = sections.filter((s) => s.pass !== undefined);
  const failed = results.filter((s) => s.pass === false).length;
  const counted =
    input.kind === "dr"
      ? `${plural(results.length, "DR run")}: ${results.length - failed} passed, ${failed} failed; ` +
        `the change ${input.changeLogs.length === 1 ? "log" : "logs"} of ${plural(input.changeLogs.length, "runbook")} ` +
        `(${plural(
          input.changeLogs.reduce((n, l) => n + l.versions.length, 0),
          "version",
        )}).`
      : `${sections.length} ${sections.length === 1 ? "record" : "records"}: ${sections.length - failed} passed, ${failed} failed.`;
  return {
    meta: { kind: input.kind, catalog: input.catalog, generatedAt: input.generatedAt.toISOString() },
    title: `Bulwark ${what} report`,
    preamble: [
      `Generated ${when(input.generatedAt)} on host ${input.host} from the catalog ${input.catalog}.`,
      counted,
      `Evidence chain: ${chainSentence(input.chain)}`,
    ],
    sections,
  };
}

function chainSentence(c: EvidenceChainStatus): string {
  const outside =
    c.unchained > 0
      ? `; ${formatCount(c.unchained)} older ${c.unchained === 1 ? "record is" : "records are"} outside the chain (made before it existed)`
      : "";
  if (!c.ok) {
    const at = c.broken?.seq !== undefined ? ` at position ${c.broken.seq}` : "";
    return `BROKEN${at}: ${c.broken?.reason ?? "unknown"} (${formatCount(c.records)} records${outside})`;
  }
  if (c.head === undefined) return `empty${outside}.`;
  return `intact, ${formatCount(c.records)} ${c.records === 1 ? "record" : "records"}, head at position ${c.head.seq} (hash ${c.head.hash})${outside}.`;
}

function chainFact(record: { chain?: { seq: number; hash: string; prevHash: string } }): [string, string] {
  return [
    "Evidence chain",
    record.chain === undefined
      ? "not chained (recorded before the catalog kept an evidence chain)"
      : `position ${record.chain.seq}, hash ${record.chain.hash}, previous ${record.chain.prevHash}`,
  ];
}

function anchorOf(
  kind: EvidenceKind,
  record: { id: number; runbook?: string; chain?: { seq: number; hash: string } },
): RecordAnchor {
  return {
    kind,
    id: record.id,
    ...(record.chain !== undefined ? { seq: record.chain.seq, hash: record.chain.hash } : {}),
    ...(record.runbook !== undefined ? { runbook: record.runbook } : {}),
  };
}

function verificationSection(v: VerificationRecord): Section {
  const d = v.details ?? {};
  const findings = arr(d, "findings").map(asObject);
  const crossCopy = arr(d, "crossCopy").map(asObject);
  const pass = v.errors === 0 && crossCopy.length === 0;
  const facts: Array<[string, string]> = [];
  const fact = (label: string, value: string | undefined): void => {
    if (value !== undefined && value !== "") facts.push([label, value]);
  };
  fact(
    "Result",
    `${pass ? "PASS" : "FAIL"}: ${plural(v.errors, "error")}` +
      (crossCopy.length > 0 ? `, ${plural(crossCopy.length, "cross-copy difference")}` : "") +
      (num(d, "warnings") ? `, ${plural(num(d, "warnings")!, "warning")}` : ""),
  );
  fact("Record", `verification ${v.id}${v.runId !== undefined ? ` (run ${v.runId})` : ""}`);
  facts.push(chainFact(v));
  fact("Dataset", v.dataset ?? "(none: a repository verified on its own)");
  fact("Target", v.target);
  fact("Location", str(d, "location"));
  fact("Repository", str(d, "repository"));
  fact("Kind", v.kind);
  fact("Snapshot", v.snapshot);
  fact("Started", isoWhen(str(d, "startedAt")));
  fact("Recorded", when(v.time));
  fact("Duration", optionalDuration(num(d, "durationMs")));
  const s = obj(d, "structure");
  if (s !== undefined) {
    fact(
      "Structure checked",
      `${count(s, "snapshots", "snapshot")}, ${count(s, "trees", "tree")}, ${count(s, "packs", "pack")}, ${count(s, "blobs", "blob")}`,
    );
  }
  const r = obj(d, "read");
  if (r !== undefined) {
    const parts = [`${count(r, "packs", "pack")}, ${bytes(num(r, "bytes"))}`];
    if (num(r, "planned") !== undefined) parts.push(`${formatCount(num(r, "planned")!)} planned`);
    if (num(r, "deferred")) parts.push(`${formatCount(num(r, "deferred")!)} due packs left for the next run`);
    if (num(r, "fresh")) parts.push(`${formatCount(num(r, "fresh")!)} fresh packs skipped`);
    fact("Data read", parts.join(", "));
  }
  const digested = obj(d, "digested");
  if (digested !== undefined) {
    fact(
      "Checked at rest",
      `${count(digested, "packs", "pack")}, ${bytes(num(digested, "bytes"))} hashed by the target, not downloaded` +
        (num(digested, "damaged") ? `, ${count(digested, "damaged", "damaged pack")}` : "") +
        (num(digested, "withoutDigest")
          ? `; ${count(digested, "withoutDigest", "pack")} without a recorded digest`
          : ""),
    );
  }
  const c = obj(d, "coverage");
  if (c !== undefined) {
    const ratio = num(c, "ratio");
    fact(
      "Coverage",
      `${formatCount(num(c, "covered") ?? 0)} of ${count(c, "packs", "pack")}` +
        (ratio !== undefined ? ` (${(ratio * 100).toFixed(1)} %)` : "") +
        (str(c, "oldestRead") !== undefined ? `, oldest sound read ${isoWhen(str(c, "oldestRead"))}` : "") +
        (num(c, "damaged") ? `, ${count(c, "damaged", "damaged pack")}` : ""),
    );
  }
  if (v.details !== undefined) {
    const budget = obj(d, "budget");
    const b =
      budget === undefined
        ? "none"
        : num(budget, "bytes") !== undefined
          ? bytes(num(budget, "bytes"))
          : (optionalDuration(num(budget, "ms")) ?? "none");
    const fullEvery = num(d, "fullEveryMs");
    fact(
      "Plan",
      `budget ${b}` +
        (fullEvery !== undefined ? `, every pack once per ${formatDuration(fullEvery)}` : "") +
        (d.newOnly === true
          ? ", only packs never read"
          : d.newFirst === false
            ? ", oldest reads first"
            : ", new packs first"),
    );
  }
  fact("Description", v.description);
  if (v.details === undefined) fact("Details", "none recorded (a record made before Bulwark recorded them)");
  const blocks: Block[] = [
    {
      type: "list",
      title: "Findings",
      items: findings.map((f) => {
        const sub: string[] = [];
        if (str(f, "pack") !== undefined) sub.push(`pack ${str(f, "pack")}`);
        if (num(f, "blobs")) sub.push(count(f, "blobs", "blob"));
        const snaps = arr(f, "snapshots").map(String);
        if (snaps.length > 0)
          sub.push(`snapshots: ${snaps.join(" ")}${more(num(f, "snapshotsTotal"), snaps.length)}`);
        const files = arr(f, "files").map(String);
        for (const file of files) sub.push(`file ${file}`);
        const moreFiles = more(num(f, "filesTotal"), files.length);
        if (moreFiles) sub.push(`files${moreFiles}`);
        return {
          text: `${str(f, "severity") ?? "error"} ${str(f, "kind") ?? ""}: ${str(f, "message") ?? ""}`,
          sub,
        };
      }),
    },
  ];
  if (crossCopy.length > 0) {
    blocks.push({
      type: "list",
      title: "Cross-copy differences",
      items: crossCopy.map((f) => ({
        text: str(f, "message") ?? "",
        sub: [`targets: ${arr(f, "targets").map(String).join(", ")}`],
      })),
    });
  }
  return {
    title: `Verification of ${v.target}${v.dataset !== undefined ? ` (dataset ${v.dataset})` : ""}: ${pass ? "PASS" : "FAIL"}`,
    pass,
    facts,
    blocks,
    anchors: [anchorOf("verification", v)],
  };
}

function drillSection(r: DrillRecord): Section {
  const d = r.details ?? {};
  const pass = r.status === "pass";
  const facts: Array<[string, string]> = [];
  const fact = (label: string, value: string | undefined): void => {
    if (value !== undefined && value !== "") facts.push([label, value]);
  };
  const findings = arr(d, "findings").map(String);
  fact(
    "Result",
    `${pass ? "PASS" : "FAIL"}${findings.length > 0 ? `: ${plural(findings.length, "finding")}` : ""}`,
  );
  fact("Record", `drill ${r.id}`);
  facts.push(chainFact(r));
  fact("Dataset", r.dataset);
  fact("Copy restored", r.target);
  fact("Location", str(d, "location"));
  fact("Snapshot", r.snapshot);
  fact("Snapshot taken", isoWhen(str(d, "snapshotTime")));
  const rpo = num(d, "rpoMs");
  fact("Snapshot age (RPO)", rpo === undefined ? undefined : formatDuration(rpo));
  fact("Drill started", when(r.time));
  fact("Drill duration", optionalDuration(num(d, "durationMs")));
  const restore = obj(d, "restore");
  if (restore !== undefined) {
    const rate = num(restore, "bytesPerSecond");
    fact(
      "Restore (RTO)",
      `${count(restore, "files", "file")}, ${bytes(num(restore, "bytes"))}` +
        (num(restore, "durationMs") !== undefined
          ? ` in ${formatDuration(num(restore, "durationMs")!)}`
          : "") +
        (rate !== undefined ? ` (${formatRate(rate)})` : "") +
        (num(restore, "errors") ? `, ${count(restore, "errors", "error")}` : ""),
    );
  }
  const sandbox = str(d, "sandbox");
  if (sandbox !== undefined)
    fact("Sandbox", `${sandbox}${d.sandboxKept === true ? " (kept)" : " (removed)"}`);
  const compare = obj(d, "compare");
  if (compare !== undefined) {
    fact(
      "Compared with the snapshot",
      `${count(compare, "files", "entry", "entries")}, ${count(compare, "mismatches", "mismatch", "mismatches")}`,
    );
  }
  const isolation = obj(d, "isolation");
  if (isolation !== undefined) {
    fact(
      "Isolation",
      `${isolation.netns === true ? "network namespace with loopback only" : "none (commands could reach the network)"}` +
        (str(isolation, "note") !== undefined ? `: ${str(isolation, "note")}` : ""),
    );
  }
  const spot = obj(d, "spotCheck");
  if (spot !== undefined) {
    fact(
      "Spot check of live files",
      `${count(spot, "sampled", "file")} sampled, ${count(spot, "mismatches", "mismatch", "mismatches")}` +
        (num(spot, "changedSince")
          ? `, ${formatCount(num(spot, "changedSince")!)} changed since the snapshot`
          : ""),
    );
  }
  const skipped = arr(d, "skipped").map(asObject);
  if (skipped.length > 0)
    fact(
      "Copies skipped",
      skipped.map((s) => `${str(s, "target") ?? "?"} (${str(s, "error") ?? ""})`).join("; "),
    );
  fact("Description", r.description);
  if (r.details === undefined) fact("Details", "none recorded");
  const validators = arr(d, "validators").map(asObject);
  const blocks: Block[] = [
    {
      type: "table",
      title: "Validators",
      header: ["Validator", "Kind", "Result", "Took", "Message"],
      rows: validators.map((v) => [
        str(v, "name") ?? "",
        str(v, "kind") ?? "",
        v.ok === true ? "pass" : "FAIL",
        optionalDuration(num(v, "durationMs")) ?? "",
        str(v, "message") ?? "",
      ]),
    },
  ];
  for (const v of validators) {
    const output = str(v, "output");
    if (output !== undefined && output !== "")
      blocks.push({ type: "pre", title: `Output of ${str(v, "name") ?? "a validator"}`, text: output });
  }
  const examples = (o: Record<string, unknown> | undefined, title: string): void => {
    const list = o === undefined ? [] : arr(o, "examples").map(String);
    if (list.length > 0) blocks.push({ type: "list", title, items: list.map((text) => ({ text })) });
  };
  examples(compare, "Entries that differ from the snapshot");
  examples(spot, "Live files that differ from the snapshot");
  blocks.push({ type: "list", title: "Findings", items: findings.map((text) => ({ text })) });
  return {
    title: `Drill of ${r.dataset} from ${r.target}: ${pass ? "PASS" : "FAIL"}`,
    pass,
    facts,
    blocks,
    anchors: [anchorOf("drill", r)],
  };
}

// ---------------------------------------------------------------------------------------------------------
// DR runs and change logs

/** Runs and change logs by runbook, in runbook order: what a DR report shows, in the order it shows it. */
function drGroups(
  runs: DrRunRecord[],
  logs: ChangeLog[],
): Array<{ runbook: string; runs: DrRunRecord[]; log?: ChangeLog }> {
  const names = [...new Set([...runs.map((r) => r.runbook), ...logs.map((l) => l.runbook)])].sort();
  return names.map((runbook) => {
    const log = logs.find((l) => l.runbook === runbook);
    return {
      runbook,
      runs: runs.filter((r) => r.runbook === runbook),
      ...(log !== undefined ? { log } : {}),
    };
  });
}

function drSections(runs: DrRunRecord[], logs: ChangeLog[]): Section[] {
  return drGroups(runs, logs).flatMap(({ runs, log }) => [
    ...runs.map((r) => drRunSection(r, log)),
    ...(log !== undefined ? [changeLogSection(log, runs)] : []),
  ]);
}

/** "version 2 of 3" of a definition in its runbook's change log, or undefined when it is not in it. */
function versionOf(log: ChangeLog | undefined, hash: string): string | undefined {
  if (log === undefined) return undefined;
  // The latest version with that hash: a definition changed and changed back is recorded again.
  const i = log.versions.map((v) => v.definitionHash).lastIndexOf(hash);
  return i < 0 ? undefined : `version ${i + 1} of ${log.versions.length}`;
}

function drRunSection(r: DrRunRecord, log: ChangeLog | undefined): Section {
  const d = r.details ?? {};
  const pass = r.status === "pass";
  const plan = obj(d, "plan") ?? {};
  const failed = obj(d, "failed");
  const facts: Array<[string, string]> = [];
  const fact = (label: string, value: string | undefined): void => {
    if (value !== undefined && value !== "") facts.push([label, value]);
  };
  const failedAt =
    failed === undefined
      ? undefined
      : `${str(failed, "service") !== undefined ? `${str(failed, "service")}: ` : ""}${str(failed, "step") ?? "?"}`;
  fact("Result", `${pass ? "PASS" : "FAIL"}${failedAt !== undefined ? `: failed at ${failedAt}` : ""}`);
  fact("Record", `DR run ${r.id}`);
  facts.push(chainFact(r));
  fact("Runbook", r.runbook);
  fact("Mode", `${r.mode}${str(d, "runId") !== undefined ? ` (run ${str(d, "runId")})` : ""}`);
  fact("Started", when(r.time));
  fact("Duration", optionalDuration(num(d, "durationMs")));
  const version = versionOf(log, r.definitionHash);
  fact("Definition", `hash ${r.definitionHash}, ${version ?? "not in the runbook's change log"}`);
  fact(
    "Current definition",
    log?.current === undefined
      ? "not compared (no config given)"
      : log.current === null
        ? `the config has no runbook ${r.runbook}`
        : log.current === r.definitionHash
          ? "yes: the config's runbook is the definition this run ran"
          : `NO: the config's runbook changed since (now hash ${log.current}, ${versionOf(log, log.current) ?? "not recorded yet: `bulwark dr plan` records it"})`,
  );
  if (r.details !== undefined) {
    const problems = arr(plan, "problems").map(asObject);
    const errors = problems.filter((p) => str(p, "severity") === "error").length;
    const estimate = num(plan, "estimateMs");
    fact(
      "Plan readiness",
      `${plan.ready === true ? "ready" : plan.ready === false ? "NOT ready" : "unknown"}` +
        (problems.length > 0
          ? `: ${plural(errors, "error")}, ${plural(problems.length - errors, "warning")}`
          : "") +
        (estimate !== undefined ? `; estimated RTO ${formatDuration(estimate)}` : "") +
        (num(plan, "planningMs") !== undefined
          ? ` (planning took ${formatDuration(num(plan, "planningMs")!)})`
          : ""),
    );
  }
  fact("RTO", rtoSentence(d));
  const isolation = obj(d, "isolation");
  if (isolation !== undefined) {
    const ports = Object.entries(obj(isolation, "ports") ?? {}).map(
      ([from, to]) => `${from} -> ${String(to)}`,
    );
    fact(
      "Isolation",
      `${isolation.netns === true ? "network namespace with loopback only" : "none (the services could reach the network)"}` +
        (str(isolation, "note") !== undefined ? `: ${str(isolation, "note")}` : "") +
        (ports.length > 0 ? `; ports remapped ${ports.join(", ")}` : ""),
    );
  }
  const sandbox = str(d, "sandbox");
  if (sandbox !== undefined)
    fact("Sandbox", `${sandbox}${d.sandboxKept === true ? " (kept)" : " (removed)"}`);
  const services = Object.entries(obj(d, "services") ?? {}).map(([name, v]) => {
    const s = asObject(v);
    const about = [
      ...(num(s, "pid") !== undefined ? [`pid ${num(s, "pid")!}`] : []),
      ...(str(s, "log") !== undefined ? [`log ${str(s, "log")!}`] : []),
    ];
    return about.length > 0 ? `${name} (${about.join(", ")})` : name;
  });
  if (services.length > 0) fact("Services left running", services.join("; "));
  const waiting = obj(d, "waiting");
  if (waiting !== undefined)
    fact("Waiting for", `${str(waiting, "step") ?? "?"}: ${str(waiting, "message") ?? ""}`);
  if (failed !== undefined) {
    fact("Failure", `${failedAt ?? "?"}: ${str(failed, "message") ?? ""}`);
    fact("Next", str(failed, "next"));
  }
  const leftovers = arr(d, "leftovers").map(String);
  if (leftovers.length > 0) fact("Left behind", leftovers.join("; "));
  const removed = arr(d, "leftoversRemoved").map(String);
  if (removed.length > 0) fact("Removed first (left by an interrupted run)", removed.join("; "));
  const failback = obj(d, "failback");
  if (failback !== undefined) {
    fact("Failback of", `failover run ${str(failback, "failover") ?? "?"}`);
    const asides = Object.entries(obj(failback, "places") ?? {}).map(([place, v]) => {
      const aside = str(asObject(v), "aside");
      return aside !== undefined ? `${place} -> ${aside}` : `${place} (nothing was there)`;
    });
    if (asides.length > 0) fact("Original places (what was there, put aside)", asides.join("; "));
  }
  fact("Datasets", r.datasets.join(", "));
  fact("Description", r.description);
  if (r.details === undefined) fact("Details", "none recorded");

  // Each dataset's copy, as the plan chose it: where it went and when its snapshot was taken.
  const choices = new Map<string, Record<string, unknown>>();
  for (const w of arr(plan, "waves").map(asObject))
    for (const s of arr(w, "services").map(asObject))
      for (const c of arr(s, "datasets").map(asObject)) {
        const name = str(c, "dataset");
        if (name !== undefined && !choices.has(name)) choices.set(name, c);
      }
  const blocks: Block[] = [
    {
      type: "table",
      title: "Datasets restored (RPO)",
      header: ["Dataset", "Copy", "Snapshot", "Snapshot taken", "RPO", "Restored to"],
      rows: arr(d, "datasets")
        .map(asObject)
        .map((x) => {
          const c = choices.get(str(x, "dataset") ?? "") ?? {};
          return [
            str(x, "dataset") ?? "",
            str(x, "target") ?? "(none)",
            str(x, "snapshot") ?? "",
            isoWhen(str(c, "snapshotTime")) ?? "",
            optionalDuration(num(x, "rpoMs")) ?? "",
            str(c, "to") ?? "",
          ];
        }),
    },
  ];
  if (failback !== undefined) {
    blocks.push({
      type: "table",
      title: "Snapshots made from the recovery site",
      header: ["Dataset", "Copy", "Snapshot", "Size", "Read from"],
      rows: Object.entries(obj(failback, "backups") ?? {}).map(([dataset, v]) => {
        const b = asObject(v);
        return [
          dataset,
          str(b, "target") ?? "",
          str(b, "snapshot") ?? "(not made)",
          num(b, "bytes") !== undefined ? formatBytes(num(b, "bytes")!) : "",
          arr(b, "from").map(String).join("; "),
        ];
      }),
    });
  }
  if (r.details !== undefined) {
    blocks.push({
      type: "list",
      title: "Plan problems",
      items: arr(plan, "problems")
        .map(asObject)
        .map((p) => ({
          text:
            `${str(p, "severity") ?? "error"}` +
            (str(p, "service") !== undefined ? ` (service ${str(p, "service")})` : "") +
            (str(p, "dataset") !== undefined ? ` (dataset ${str(p, "dataset")})` : "") +
            `: ${str(p, "message") ?? ""}`,
          sub: str(p, "remedy") !== undefined ? [`remedy: ${str(p, "remedy")}`] : [],
        })),
    });
  }
  const timeline = arr(d, "timeline").map(asObject);
  blocks.push({
    type: "table",
    title: "Timeline",
    header: ["Unit", "Wave", "Service", "Kind", "Step", "Start", "End", "Took", "Outcome", "Message"],
    rows: timeline.map((e) => {
      const end = str(e, "at");
      const took = num(e, "durationMs");
      const endDate = end === undefined ? undefined : new Date(end);
      const start =
        endDate !== undefined && took !== undefined ? new Date(endDate.getTime() - took) : undefined;
      return [
        str(e, "id") ?? "",
        num(e, "wave") !== undefined ? String(num(e, "wave")) : "",
        str(e, "service") ?? "",
        str(e, "kind") ?? "",
        str(e, "name") ?? "",
        timeOf(start, r.time),
        timeOf(endDate, r.time),
        optionalDuration(took) ?? "",
        str(e, "outcome") === "passed" ? "passed" : (str(e, "outcome") ?? "?").toUpperCase(),
        str(e, "message") ?? "",
      ];
    }),
  });
  const outputs = new Set<string>();
  for (const e of timeline) {
    const output = str(e, "output");
    if (output === undefined || output === "") continue;
    outputs.add(output);
    blocks.push({
      type: "pre",
      title: `Output of ${str(e, "id") ?? str(e, "name") ?? "a unit"} (${str(e, "name") ?? ""})`,
      text: output,
    });
  }
  const failedOutput = failed === undefined ? undefined : str(failed, "output");
  if (failedOutput !== undefined && failedOutput !== "" && !outputs.has(failedOutput))
    blocks.push({ type: "pre", title: `Output of the failure (${failedAt ?? "?"})`, text: failedOutput });
  return {
    title: `DR ${r.mode} of ${r.runbook}: ${pass ? "PASS" : "FAIL"}`,
    pass,
    facts,
    blocks,
    anchors: [anchorOf("dr", r)],
  };
}

/** The RTO achieved against the target: within, beyond, or not achieved. */
function rtoSentence(d: Record<string, unknown>): string {
  const rto = num(d, "rtoMs");
  const targetMs = num(d, "rtoTargetMs");
  const target = str(d, "rtoTarget") ?? (targetMs !== undefined ? formatDuration(targetMs) : undefined);
  if (rto === undefined)
    return `not achieved: not every service was brought back${target !== undefined ? ` (target ${target})` : ""}`;
  if (targetMs === undefined) return `${formatDuration(rto)} achieved (the runbook sets no RTO target)`;
  return `${formatDuration(rto)} achieved against a target of ${target ?? formatDuration(targetMs)}: ${rto <= targetMs ? "within" : "BEYOND the target"}`;
}

/** A time of the timeline to the millisecond: the time of day, with the date when it is not the run's. */
function timeOf(d: Date | undefined, run: Date): string {
  if (d === undefined || Number.isNaN(d.getTime())) return "";
  const iso = d.toISOString();
  const day = iso.slice(0, 10) === run.toISOString().slice(0, 10) ? "" : `${iso.slice(0, 10)} `;
  return `${day}${iso.slice(11, 23)}`;
}

function changeLogSection(log: ChangeLog, runs: DrRunRecord[]): Section {
  const n = log.versions.length;
  const facts: Array<[string, string]> = [["Runbook", log.runbook]];
  facts.push([
    "Versions",
    n === 0 ? "none recorded" : `${formatCount(n)}, the latest recorded ${when(log.versions[n - 1]!.time)}`,
  ]);
  if (log.current !== undefined)
    facts.push([
      "The config's definition",
      log.current === null
        ? `the config has no runbook ${log.runbook}`
        : `hash ${log.current}, ${versionOf(log, log.current) ?? "not recorded yet (`bulwark dr plan` records it)"}`,
    ]);
  for (const r of runs)
    facts.push([
      `DR run ${r.id}`,
      `ran ${versionOf(log, r.definitionHash) ?? `a definition not in this log (hash ${r.definitionHash})`}`,
    ]);
  const rows = log.versions.map((v, i) => [
    String(i + 1),
    when(v.time),
    v.definitionHash,
    `runbook version ${v.id}`,
    v.chain === undefined ? "not chained" : `position ${v.chain.seq}, hash ${v.chain.hash}`,
    i === 0 ? firstVersion(v.definition) : changes(log.versions[i - 1]!.definition, v.definition),
  ]);
  return {
    title: `Change log of runbook ${log.runbook}: ${plural(n, "version")}`,
    facts,
    blocks: [
      {
        type: "table",
        title: "Versions",
        header: ["Version", "Recorded", "Definition hash", "Record", "Evidence chain", "Changes"],
        rows,
      },
    ],
    anchors: log.versions.map((v) => anchorOf("runbook", v)),
  };
}

/** What the first version defines, in a line. */
function firstVersion(def: Record<string, unknown>): string {
  const services = Object.keys(obj(def, "services") ?? {});
  return (
    `first version: ${plural(services.length, "service")}${services.length > 0 ? ` (${services.join(", ")})` : ""}` +
    (str(def, "rto") !== undefined ? `, RTO ${str(def, "rto")}` : ", no RTO target") +
    (arr(def, "before").length > 0 ? `, ${plural(arr(def, "before").length, "step")} before` : "") +
    (arr(def, "after").length > 0 ? `, ${plural(arr(def, "after").length, "step")} after` : "")
  );
}

/** How many changed values a change log line lists before it counts the rest. */
const CHANGES_SHOWN = 8;

/** What changed between two definitions: each changed value by its path, old -> new. */
function changes(before: Record<string, unknown>, after: Record<string, unknown>): string {
  const a = flatten(before);
  const b = flatten(after);
  const out: string[] = [];
  for (const path of [...new Set([...a.keys(), ...b.keys()])].sort()) {
    const x = a.get(path);
    const y = b.get(path);
    if (x === y) continue;
    out.push(
      x === undefined
        ? `${path} added: ${y!}`
        : y === undefined
          ? `${path} removed (was ${x})`
          : `${path}: ${x} -> ${y}`,
    );
  }
  if (out.length === 0) return "no value changed (the same definition recorded again)";
  const shown = out.slice(0, CHANGES_SHOWN).join("; ");
  return out.length > CHANGES_SHOWN ? `${shown}; and ${formatCount(out.length - CHANGES_SHOWN)} more` : shown;
}

/** Every leaf of a definition by its path (services.web.health[0].url), as short JSON text. */
function flatten(value: unknown, path = "", out = new Map<string, string>()): Map<string, string> {
  if (Array.isArray(value)) {
    if (value.length === 0) out.set(path, "[]");
    value.forEach((v, i) => flatten(v, `${path}[${i}]`, out));
  } else if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>);
    if (entries.length === 0 && path !== "") out.set(path, "{}");
    for (const [k, v] of entries) flatten(v, path === "" ? k : `${path}.${k}`, out);
  } else {
    const text = JSON.stringify(value) ?? "null";
    out.set(path, text.length > 60 ? `${text.slice(0, 57)}...` : text);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Markdown

/** Recorded text as Markdown text: one line, every character that could start markup escaped. */
function mdText(s: string): string {
  return s.replace(/[\r\n]+/g, " ").replace(/[\\`*_[\]<>|#~!&]/g, (c) => `\\${c}`);
}

function renderMarkdown(doc: ReportDocument): string {
  const out: string[] = [`# ${mdText(doc.title)}`, "", metaLine(doc.meta), ""];
  for (const p of doc.preamble) out.push(mdText(p), "");
  doc.sections.forEach((s, i) => {
    out.push(`## ${i + 1}. ${mdText(s.title)}`, "", "| | |", "|---|---|");
    for (const [k, v] of s.facts) out.push(`| ${mdText(k)} | ${mdText(v)} |`);
    out.push("");
    for (const b of s.blocks) {
      out.push(`### ${mdText(b.title)}`, "");
      if (b.type === "list") {
        if (b.items.length === 0) out.push("None.");
        for (const item of b.items) {
          out.push(`- ${mdText(item.text)}`);
          for (const sub of item.sub ?? []) out.push(`  - ${mdText(sub)}`);
        }
      } else if (b.type === "table") {
        if (b.rows.length === 0) out.push("None.");
        else {
          out.push(`| ${b.header.map(mdText).join(" | ")} |`, `|${b.header.map(() => "---|").join("")}`);
          for (const row of b.rows) out.push(`| ${row.map(mdText).join(" | ")} |`);
        }
      } else {
        // A fence longer than any run of backticks in the text, so the text cannot close it.
        const longest = Math.max(0, ...[...b.text.matchAll(/`+/g)].map((m) => m[0].length));
        const fence = "`".repeat(Math.max(3, longest + 1));
        // A recorded line that looks like one of Bulwark's markers is indented, so it cannot pass for one.
        const lines = b.text.replace(/\r/g, "").replace(/\n$/, "").split("\n");
        out.push(fence, ...lines.map((l) => (l.startsWith("<!--") ? ` ${l}` : l)), fence);
      }
      out.push("");
    }
    for (const a of s.anchors) out.push(anchorLine(a));
    out.push("");
  });
  return out.join("\n");
}

function anchorLine(a: RecordAnchor): string {
  return commentLine(RECORD_ANCHOR, a);
}

function metaLine(m: ReportMeta): string {
  return commentLine(REPORT_ANCHOR, m);
}

// ---------------------------------------------------------------------------------------------------------
// HTML

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const STYLE = `body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}td{overflow-wrap:anywhere}pre{background:#f6f6f6;padding:.5rem;overflow-x:auto}
.pass{color:#176f2c}.fail{color:#b00020}`;

function renderHtml(doc: ReportDocument): string {
  const out: string[] = [
    "<!DOCTYPE html>",
    '<html lang="en">',
    "<head>",
    '<meta charset="utf-8">',
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">`,
    `<title>${esc(doc.title)}</title>`,
    `<style>${STYLE}</style>`,
    "</head>",
    "<body>",
    metaLine(doc.meta),
    `<h1>${esc(doc.title)}</h1>`,
    ...doc.preamble.map((p) => `<p>${esc(p)}</p>`),
  ];
  doc.sections.forEach((s, i) => {
    out.push(
      `<section>`,
      `<h2${s.pass === undefined ? "" : ` class="${s.pass ? "pass" : "fail"}"`}>${i + 1}. ${esc(s.title)}</h2>`,
      "<table>",
    );
    for (const [k, v] of s.facts) out.push(`<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`);
    out.push("</table>");
    for (const b of s.blocks) {
      out.push(`<h3>${esc(b.title)}</h3>`);
      if (b.type === "list") {
        if (b.items.length === 0) out.push("<p>None.</p>");
        else {
          out.push("<ul>");
          for (const item of b.items) {
            const sub = item.sub ?? [];
            out.push(
              `<li>${esc(item.text)}${sub.length > 0 ? `<ul>${sub.map((x) => `<li>${esc(x)}</li>`).join("")}</ul>` : ""}</li>`,
            );
          }
          out.push("</ul>");
        }
      } else if (b.type === "table") {
        if (b.rows.length === 0) out.push("<p>None.</p>");
        else {
          out.push("<table>", `<tr>${b.header.map((h) => `<th>${esc(h)}</th>`).join("")}</tr>`);
          for (const row of b.rows) out.push(`<tr>${row.map((c) => `<td>${esc(c)}</td>`).join("")}</tr>`);
          out.push("</table>");
        }
      } else {
        out.push(`<pre>${esc(b.text)}</pre>`);
      }
    }
    out.push(...s.anchors.map(anchorLine), "</section>");
  });
  out.push("</body>", "</html>", "");
  return out.join("\n");
}

// ---------------------------------------------------------------------------------------------------------
// JSON

function renderJson(input: ReportInput): string {
  const shown: Array<{
    kind: EvidenceKind;
    record: VerificationRecord | DrillRecord | DrRunRecord | RunbookVersionRecord;
    pass?: boolean;
  }> =
    input.kind === "verification"
      ? input.records.map((r) => ({
          kind: input.kind,
          record: r,
          pass: r.errors === 0 && arr(r.details ?? {}, "crossCopy").length === 0,
        }))
      : input.kind === "drill"
        ? input.records.map((r) => ({ kind: input.kind, record: r, pass: r.status === "pass" }))
        : drGroups(input.records, input.changeLogs).flatMap(({ runs, log }) => [
            ...runs.map((r) => ({ kind: "dr" as const, record: r, pass: r.status === "pass" })),
            ...(log?.versions ?? []).map((v) => ({ kind: "runbook" as const, record: v })),
          ]);
  const records = shown.map(({ kind, record, pass }) => {
    const { chain, ...fields } = record;
    // `evidence`, not `kind`: a verification's own fields have a kind (verify, check). A runbook version
    // is no result, so it has none.
    return {
      evidence: kind,
      ...(pass !== undefined ? { result: pass ? "pass" : "fail" } : {}),
      chain: chain ?? null,
      ...fields,
      time: record.time.toISOString(),
    };
  });
  const report = {
    format: JSON_REPORT_FORMAT,
    kind: input.kind,
    generatedAt: input.generatedAt.toISOString(),
    host: input.host,
    catalog: input.catalog,
    chain: input.chain,
    // Outside the records (which are exactly the catalog's fields): each runbook's versions numbered, and
    // the config's definition when one was given.
    ...(input.kind === "dr"
      ? {
          runbooks: input.changeLogs.map((l) => ({
            runbook: l.runbook,
            ...(l.current !== undefined ? { current: l.current } : {}),
            versions: l.versions.map((v, i) => ({
              version: i + 1,
              id: v.id,
              definitionHash: v.definitionHash,
            })),
          })),
        }
      : {}),
    records,
  };
  return JSON.stringify(report, null, 2) + "\n";
}

// ---------------------------------------------------------------------------------------------------------
// Tolerant reading of recorded details

function asObject(v: unknown): Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}
function obj(o: Record<string, unknown>, key: string): Record<string, unknown> | undefined {
  const v = o[key];
  return v !== null && typeof v === "object" && !Array.isArray(v)
    ? (v as Record<string, unknown>)
    : undefined;
}
function arr(o: Record<string, unknown>, key: string): unknown[] {
  const v = o[key];
  return Array.isArray(v) ? v : [];
}
function num(o: Record<string, unknown>, key: string): number | undefined {
  const v = o[key];
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}
function str(o: Record<string, unknown>, key: string): string | undefined {
  const v = o[key];
  return typeof v === "string" ? v : undefined;
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${formatCount(n)} ${n === 1 ? one : many}`;
}
function count(o: Record<string, unknown>, key: string, one: string, many?: string): string {
  return plural(num(o, key) ?? 0, one, many);
}
function bytes(n: number | undefined): string {
  return n === undefined ? "? bytes" : `${formatBytes(n)}${n >= 1024 ? ` (${formatCount(n)} bytes)` : ""}`;
}
function optionalDuration(ms: number | undefined): string | undefined {
  return ms === undefined ? undefined : formatDuration(ms);
}
function more(total: number | undefined, shown: number): string {
  return total !== undefined && total > shown ? ` (and ${formatCount(total - shown)} more)` : "";
}
/** "2026-05-01 12:00:00 UTC" */
function when(d: Date): string {
  return `${d.toISOString().replace("T", " ").slice(0, 19)} UTC`;
}
function isoWhen(s: string | undefined): string | undefined {
  if (s === undefined) return undefined;
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? s : when(d);
}
