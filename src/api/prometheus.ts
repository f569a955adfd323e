/**
 * The Prometheus text exposition format (version 0.0.4), written: what `/metrics` answers
 * (src/api/metrics.ts collects the families). Only what Bulwark exposes: gauges and counters, without
 * timestamps (Prometheus stamps a sample with the scrape's time).
 *
 *   # HELP bulwark_step_last_ok 1 when the newest run ... ended ok
 *   # TYPE bulwark_step_last_ok gauge
 *   bulwark_step_last_ok{job="web",kind="backup",target="s3"} 1
 *
 * A bad metric or label name, a repeated family or a repeated label set is a bug in whoever built the
 * families, and throws: Prometheus would reject the whole scrape, so failing loudly in tests is better than
 * a /metrics that silently stops being read.
 */

export interface MetricSample {
  readonly labels?: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface MetricFamily {
  readonly name: string;
  readonly help: string;
  readonly type: "gauge" | "counter";
  readonly samples: MetricSample[];
}

/** The Content-Type of what `renderMetrics` writes. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export function renderMetrics(families: readonly MetricFamily[]): string {
  const seen = new Set<string>();
  const lines: string[] = [];
  for (const family of families) {
    if (!METRIC_NAME.test(family.name)) throw new Error(`invalid metric name "${family.name}"`);
    if (seen.has(family.name)) throw new Error(`metric family "${family.name}" is written twice`);
    seen.add(family.name);
    if (family.type !== "gauge" && family.type !== "counter") {
      throw new Error(`metric "${family.name}": unknown type "${String(family.type)}"`);
    }
    // An empty HELP line is one some parsers reject, and says nothing: it is left out.
    if (family.help !== "") lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`);
    lines.push(`# TYPE ${family.name} ${family.type}`);
    const series = new Set<string>();
    for (const sample of family.samples) {
      const labels = renderLabels(family.name, sample.labels ?? {});
      if (series.has(labels))
        throw new Error(`metric "${family.name}" has the sample ${labels || "{}"} twice`);
      series.add(labels);
      lines.push(`${family.name}${labels} ${formatValue(sample.value)}`);
    }
  }
  return lines.length === 0 ? "" : lines.join("\n") + "\n";
}

function renderLabels(metric: string, labels: Readonly<Record<string, string>>): string {
  const entries = Object.entries(labels);
  if (entries.length === 0) return "";
  const parts = entries.map(([name, value]) => {
    // Names starting with __ are Prometheus's own (__name__, __address__ ...).
    if (!LABEL_NAME.test(name) || name.startsWith("__")) {
      throw new Error(`metric "${metric}": invalid label name "${name}"`);
    }
    if (typeof value !== "string") throw new Error(`metric "${metric}": label "${name}" is not a string`);
    return `${name}="${escapeLabelValue(value)}"`;
  });
  return `{${parts.join(",")}}`;
}

/** HELP text escapes backslash and line feed; a quote is plain text there. */
function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** A label value escapes backslash, double quote and line feed. */
function escapeLabelValue(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** Go's float syntax, which the format uses: NaN, +Inf, -Inf; JavaScript's own for finite numbers. */
function formatValue(value: number): string {
  if (typeof value !== "number") throw new Error(`a sample value must be a number, not ${typeof value}`);
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}
