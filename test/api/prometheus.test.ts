import parse from "parse-prometheus-text-format";
import { describe, expect, it } from "vitest";

import { PROMETHEUS_CONTENT_TYPE, renderMetrics, type MetricFamily } from "../../src/api/prometheus.js";

describe("renderMetrics", () => {
  it("round-trips through a Prometheus parser, escapes included", () => {
    const tricky = 'C:\\DIR\\FILE.TXT "quoted"\nsecond line';
    const families: MetricFamily[] = [
      {
        name: "bulwark_step_last_ok",
        help: 'Whether the step ended ok; a "quote", a back\\slash\nand a new line.',
        type: "gauge",
        samples: [
          { labels: { job: "web", target: "s3" }, value: 1 },
          { labels: { job: tricky, target: "" }, value: 0 },
          { labels: { job: "db", target: "s3" }, value: -1 },
        ],
      },
      {
        name: "bulwark_runs_total",
        help: "Runs started.",
        type: "counter",
        samples: [{ labels: { kind: "backup" }, value: 12 }, { value: 3 }],
      },
      {
        name: "bulwark:odd_values",
        help: "",
        type: "gauge",
        samples: [
          { labels: { v: "nan" }, value: NaN },
          { labels: { v: "inf" }, value: Infinity },
          { labels: { v: "-inf" }, value: -Infinity },
          { labels: { v: "tiny" }, value: 1.5e-9 },
          { labels: { v: "big" }, value: 1e21 },
          { labels: { v: "time" }, value: 1_700_000_000.25 },
        ],
      },
      { name: "bulwark_nothing_yet", help: "No samples.", type: "gauge", samples: [] },
    ];
    const text = renderMetrics(families);
    expect(text.endsWith("\n")).toBe(true);
    const parsed = parse(text);
    expect(parsed.map((f) => [f.name, f.type, f.help])).toEqual([
      [
        "bulwark_step_last_ok",
        "GAUGE",
        'Whether the step ended ok; a "quote", a back\\slash\nand a new line.',
      ],
      ["bulwark_runs_total", "COUNTER", "Runs started."],
      ["bulwark:odd_values", "GAUGE", ""],
      ["bulwark_nothing_yet", "GAUGE", "No samples."],
    ]);
    expect(parsed[0]?.metrics).toEqual([
      { labels: { job: "web", target: "s3" }, value: "1" },
      { labels: { job: tricky, target: "" }, value: "0" },
      { labels: { job: "db", target: "s3" }, value: "-1" },
    ]);
    expect(parsed[1]?.metrics).toEqual([{ labels: { kind: "backup" }, value: "12" }, { value: "3" }]);
    // The parser hands values back as written; Go's float syntax spells the special values.
    const odd = Object.fromEntries((parsed[2]?.metrics ?? []).map((m) => [m.labels?.v, m.value]));
    expect(odd).toMatchObject({ nan: "NaN", inf: "+Inf", "-inf": "-Inf" });
    expect(Number(odd.tiny)).toBe(1.5e-9);
    expect(Number(odd.big)).toBe(1e21);
    expect(Number(odd.time)).toBe(1_700_000_000.25);
  });

  it("writes the format's own spellings", () => {
    const text = renderMetrics([
      {
        name: "m",
        help: 'a\\b\nc "d"',
        type: "gauge",
        samples: [
          { labels: { l: 'x"y\\z\nw' }, value: NaN },
          { labels: { l: "p" }, value: Infinity },
          { labels: { l: "n" }, value: -Infinity },
        ],
      },
    ]);
    expect(text).toBe(
      [
        '# HELP m a\\\\b\\nc "d"',
        "# TYPE m gauge",
        'm{l="x\\"y\\\\z\\nw"} NaN',
        'm{l="p"} +Inf',
        'm{l="n"} -Inf',
        "",
      ].join("\n"),
    );
    expect(renderMetrics([])).toBe("");
    expect(PROMETHEUS_CONTENT_TYPE).toBe("text/plain; version=0.0.4; charset=utf-8");
  });

  it("throws on what Prometheus would reject: bad names, repeats", () => {
    const family = (over: Partial<MetricFamily>): MetricFamily[] => [
      { name: "ok_metric", help: "h", type: "gauge", samples: [{ value: 1 }], ...over },
    ];
    expect(() => renderMetrics(family({ name: "1starts_with_digit" }))).toThrow(/invalid metric name/);
    expect(() => renderMetrics(family({ name: "has-dash" }))).toThrow(/invalid metric name/);
    expect(() => renderMetrics(family({ name: "" }))).toThrow(/invalid metric name/);
    expect(() => renderMetrics(family({ samples: [{ labels: { "bad-label": "x" }, value: 1 }] }))).toThrow(
      /invalid label name "bad-label"/,
    );
    expect(() => renderMetrics(family({ samples: [{ labels: { "a:b": "x" }, value: 1 }] }))).toThrow(
      /invalid label name/,
    );
    expect(() => renderMetrics(family({ samples: [{ labels: { __name__: "x" }, value: 1 }] }))).toThrow(
      /invalid label name/,
    );
    expect(() => renderMetrics([...family({}), ...family({})])).toThrow(/written twice/);
    expect(() =>
      renderMetrics(
        family({
          samples: [
            { labels: { a: "1" }, value: 1 },
            { labels: { a: "1" }, value: 2 },
          ],
        }),
      ),
    ).toThrow(/twice/);
    expect(() => renderMetrics(family({ type: "histogram" as "gauge" }))).toThrow(/unknown type/);
  });
});
