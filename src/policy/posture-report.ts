/**
 * Renders a posture report as a plain-text table (the terminal), markdown (tickets, wikis), a standalone
 * HTML page (auditors) or JSON (monitoring). Pure: each returns a string ending in a newline.
 */

import type { DatasetPosture, PostureReport, PostureRow, RowStatus } from "./posture.js";

export type PostureFormat = "table" | "markdown" | "html" | "json";

export function renderPosture(report: PostureReport, format: PostureFormat): string {
  switch (format) {
    case "table":
      return renderTable(report);
    case "markdown":
      return renderMarkdown(report);
    case "html":
      return renderHtml(report);
    case "json":
      return renderJson(report);
  }
}

const iso = (d: Date): string => d.toISOString().replace(/\.000Z$/, "Z");

function heading(d: DatasetPosture): string {
  return `dataset ${d.dataset}: policy ${d.policy} (rule ${d.rule}, RPO ${d.rpo}; jobs ${d.jobs.join(", ")})`;
}

function statusWord(r: { status: RowStatus; required: boolean }): string {
  const s = r.status === "fail" ? "FAIL" : r.status;
  return r.required ? s : `${s} (not required)`;
}

const OVERALL: Record<RowStatus, string> = { pass: "COMPLIES", fail: "FAILS", unknown: "UNKNOWN" };

/**
 * Every target of the dataset whose copy does not count, with why and what to do: a row that passes does not
 * name them (four copies where three are required), yet an unreachable target is what an operator must see.
 */
function notCounted(d: DatasetPosture): { line: string; remedy?: string }[] {
  return d.copies
    .filter((c) => !c.counted)
    .map((c) => ({
      line: `target ${c.target} does not count: ${c.reason ?? "no reason recorded"}`,
      ...(c.remedy !== undefined ? { remedy: c.remedy } : {}),
    }));
}

export function renderTable(report: PostureReport): string {
  const out: string[] = [`Posture at ${iso(report.time)}: ${OVERALL[report.status]}`];
  if (report.datasets.length === 0) out.push("", "no dataset has a job");
  for (const d of report.datasets) {
    out.push("", `${heading(d)}: ${OVERALL[d.status]}`);
    const width = Math.max(...d.rows.map((r) => statusWord(r).length), "STATUS".length);
    out.push(`  ${"STATUS".padEnd(width)}  REQUIREMENT`);
    for (const r of d.rows) {
      out.push(`  ${statusWord(r).padEnd(width)}  ${r.requirement}`);
      const indent = " ".repeat(width + 4);
      for (const e of r.evidence) out.push(`${indent}- ${e}`);
      if (r.reason !== undefined) out.push(`${indent}reason: ${r.reason}`);
      if (r.remedy !== undefined) out.push(`${indent}remedy: ${r.remedy}`);
    }
    for (const c of notCounted(d)) {
      out.push(`  ${c.line}`);
      if (c.remedy !== undefined) out.push(`    remedy: ${c.remedy}`);
    }
    for (const w of d.warnings) out.push(`  warning: ${w}`);
  }
  return out.join("\n") + "\n";
}

const EMOJI: Record<RowStatus, string> = { pass: "✅ pass", fail: "❌ fail", unknown: "❔ unknown" };

function mdCell(s: string): string {
  return esc(s).replace(/\\/g, "\\\\").replace(/\|/g, "\\|").replace(/\n/g, "<br>");
}

function mdStatus(r: PostureRow): string {
  return r.required ? EMOJI[r.status] : `${EMOJI[r.status]} (not required)`;
}

export function renderMarkdown(report: PostureReport): string {
  const out: string[] = [`# Posture at ${iso(report.time)}: ${OVERALL[report.status]}`];
  for (const d of report.datasets) {
    out.push("", `## ${mdCell(heading(d))}: ${OVERALL[d.status]}`, "");
    out.push("| Requirement | Status | Evidence | Reason and remedy |", "|---|---|---|---|");
    for (const r of d.rows) {
      const why = [r.reason, r.remedy && `remedy: ${r.remedy}`].filter((x) => x !== undefined && x !== "");
      out.push(
        `| ${mdCell(r.requirement)} | ${mdStatus(r)} | ${r.evidence.map(mdCell).join("<br>")} | ${why.map((x) => mdCell(x as string)).join("<br>")} |`,
      );
    }
    const missing = notCounted(d);
    if (missing.length > 0 || d.warnings.length > 0) out.push("");
    for (const c of missing)
      out.push(`- ${mdCell(c.line)}${c.remedy !== undefined ? `<br>remedy: ${mdCell(c.remedy)}` : ""}`);
    for (const w of d.warnings) out.push(`- warning: ${mdCell(w)}`);
  }
  return out.join("\n") + "\n";
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

export function renderHtml(report: PostureReport): string {
  const title = `Bulwark posture at ${iso(report.time)}`;
  const out: string[] = [
    "<!doctype html>",
    '<html lang="en">',
    "<head>",
    '<meta charset="utf-8">',
    `<title>${esc(title)}</title>`,
    "<style>",
    "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}",
    "td,th{border:1px solid #ccc;padding:.4em;vertical-align:top;text-align:left}",
    ".pass{color:#075e07}.fail{color:#a30000;font-weight:bold}.unknown{color:#7a5b00}",
    "</style>",
    "</head>",
    "<body>",
    `<h1>${esc(title)}: <span class="${report.status}">${OVERALL[report.status]}</span></h1>`,
  ];
  for (const d of report.datasets) {
    out.push(`<h2>${esc(heading(d))}: <span class="${d.status}">${OVERALL[d.status]}</span></h2>`);
    out.push(
      "<table>",
      "<tr><th>Requirement</th><th>Status</th><th>Evidence</th><th>Reason and remedy</th></tr>",
    );
    for (const r of d.rows) {
      const evidence = r.evidence.length
        ? `<ul>${r.evidence.map((e) => `<li>${esc(e)}</li>`).join("")}</ul>`
        : "";
      const why = [
        r.reason !== undefined ? `<p>${esc(r.reason)}</p>` : "",
        r.remedy !== undefined ? `<p>remedy: ${esc(r.remedy)}</p>` : "",
      ].join("");
      out.push(
        `<tr><td>${esc(r.requirement)}</td><td class="${r.status}">${esc(statusWord(r))}</td><td>${evidence}</td><td>${why}</td></tr>`,
      );
    }
    out.push("</table>");
    const missing = notCounted(d);
    if (missing.length > 0)
      out.push(
        `<ul>${missing.map((c) => `<li>${esc(c.line)}${c.remedy !== undefined ? `<br>remedy: ${esc(c.remedy)}` : ""}</li>`).join("")}</ul>`,
      );
    if (d.warnings.length > 0)
      out.push(`<ul>${d.warnings.map((w) => `<li>warning: ${esc(w)}</li>`).join("")}</ul>`);
  }
  out.push("</body>", "</html>");
  return out.join("\n") + "\n";
}

/** Stable JSON: dates as ISO strings, fields in a fixed order. */
export function renderJson(report: PostureReport): string {
  const doc = {
    time: iso(report.time),
    status: report.status,
    datasets: report.datasets.map((d) => ({
      dataset: d.dataset,
      policy: d.policy,
      rule: d.rule,
      rpo: d.rpo,
      jobs: d.jobs,
      status: d.status,
      rows: d.rows.map((r) => ({
        id: r.id,
        requirement: r.requirement,
        required: r.required,
        status: r.status,
        evidence: r.evidence,
        ...(r.reason !== undefined ? { reason: r.reason } : {}),
        ...(r.remedy !== undefined ? { remedy: r.remedy } : {}),
      })),
      copies: d.copies.map((c) => ({
        target: c.target,
        counted: c.counted,
        ...(c.snapshot ? { snapshot: { id: c.snapshot.id, time: iso(c.snapshot.time) } } : {}),
        ...(c.ageMs !== undefined ? { ageSeconds: Math.floor(c.ageMs / 1000) } : {}),
        ...(c.reason !== undefined ? { reason: c.reason } : {}),
        ...(c.remedy !== undefined ? { remedy: c.remedy } : {}),
      })),
      warnings: d.warnings,
    })),
  };
  return JSON.stringify(doc, null, 2) + "\n";
}
