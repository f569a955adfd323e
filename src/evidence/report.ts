/**
 * Evidence reports (docs/design.md §17c): recorded verifications and drills rendered for an auditor as
 * Markdown, standalone HTML or JSON — what was read or restored, from where, when, how long, the
 * validators, the result and every finding, with each record's place in the catalog's evidence chain.
 *
 *  1. Each record becomes a section of a small document (facts, lists, tables, preformatted output); the
 *     details are read tolerantly (a key missing from an older record is left out, never a crash).
 *  2. Markdown and HTML render the same document, every piece of recorded text escaped; the HTML has no
 *     script and loads nothing (a Content-Security-Policy forbids it).
 *  3. JSON is the records themselves, with their details and chain links, under a format name.
 *  4. Markdown and HTML carry one machine-readable line per record, `<!-- bulwark-evidence-record {...} -->`,
 *     with its kind, id, chain position and hash, so that `bulwark report verify` can compare a report
 *     with the catalog (JSON has the same in `records[].chain`).
 * Pure: the caller gives the time, the host and the catalog's chain status.
 */
import type {
  DrillRecord,
  EvidenceChainStatus,
  EvidenceKind,
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
} & ({ kind: "verification"; records: VerificationRecord[] } | { kind: "drill"; records: DrillRecord[] });

/** What a report says about one record, machine-readably (the anchor line of Markdown and HTML). */
export interface RecordAnchor {
  kind: EvidenceKind;
  id: number;
  seq?: number;
  hash?: string;
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
  const record = { ...fields, time: new Date(fields.time) } as unknown as VerificationRecord | DrillRecord;
  try {
    return evidenceHash(chain.seq, kind, chain.prevHash, evidenceRow(kind, record)) === chain.hash;
  } catch {
    return false; // an invalid time
  }
}

function toMeta(o: Record<string, unknown>): ReportMeta | undefined {
  const kind = o.kind;
  if ((kind !== "verification" && kind !== "drill") || typeof o.catalog !== "string") return undefined;
  return { kind, catalog: o.catalog, generatedAt: typeof o.generatedAt === "string" ? o.generatedAt : "" };
}

function toAnchor(a: Record<string, unknown>): RecordAnchor[] {
  if ((a.kind !== "verification" && a.kind !== "drill") || typeof a.id !== "number") return [];
  return [
    {
      kind: a.kind,
      id: a.id,
      ...(typeof a.seq === "number" ? { seq: a.seq } : {}),
      ...(typeof a.hash === "string" ? { hash: a.hash } : {}),
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
  pass: boolean;
  facts: Array<[string, string]>;
  blocks: Block[];
  anchor: RecordAnchor;
}

interface ReportDocument {
  meta: ReportMeta;
  title: string;
  preamble: string[];
  sections: Section[];
}

function toDocument(input: ReportInput): ReportDocument {
  const what = input.kind === "verification" ? "verification" : "restore drill";
  const sections =
    input.kind === "verification" ? input.records.map(verificationSection) : input.records.map(drillSection);
  const failed = sections.filter((s) => !s.pass).length;
  return {
    meta: { kind: input.kind, catalog: input.catalog, generatedAt: input.generatedAt.toISOString() },
    title: `Bulwark ${what} report`,
    preamble: [
      `Generated ${when(input.generatedAt)} on host ${input.host} from the catalog ${input.catalog}.`,
      `${sections.length} ${sections.length === 1 ? "record" : "records"}: ${sections.length - failed} passed, ${failed} failed.`,
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

function anchorOf(kind: EvidenceKind, record: VerificationRecord | DrillRecord): RecordAnchor {
  return {
    kind,
    id: record.id,
    ...(record.chain !== undefined ? { seq: record.chain.seq, hash: record.chain.hash } : {}),
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
    anchor: anchorOf("verification", v),
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
    anchor: anchorOf("drill", r),
  };
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
    out.push(anchorLine(s.anchor), "");
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
      `<h2 class="${s.pass ? "pass" : "fail"}">${i + 1}. ${esc(s.title)}</h2>`,
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
    out.push(anchorLine(s.anchor), "</section>");
  });
  out.push("</body>", "</html>", "");
  return out.join("\n");
}

// ---------------------------------------------------------------------------------------------------------
// JSON

function renderJson(input: ReportInput): string {
  const records = (input.records as Array<VerificationRecord | DrillRecord>).map((r) => {
    const { chain, ...fields } = r;
    const pass =
      input.kind === "drill"
        ? (r as DrillRecord).status === "pass"
        : (r as VerificationRecord).errors === 0 && arr(r.details ?? {}, "crossCopy").length === 0;
    // `evidence`, not `kind`: a verification's own fields have a kind (verify, check).
    return {
      evidence: input.kind,
      result: pass ? "pass" : "fail",
      chain: chain ?? null,
      ...fields,
      time: r.time.toISOString(),
    };
  });
  const report = {
    format: JSON_REPORT_FORMAT,
    kind: input.kind,
    generatedAt: input.generatedAt.toISOString(),
    host: input.host,
    catalog: input.catalog,
    chain: input.chain,
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
