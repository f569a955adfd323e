// The parser ships without types; this is the part of its output the tests read.
declare module "parse-prometheus-text-format" {
  interface ParsedMetric {
    value?: string;
    labels?: Record<string, string>;
  }
  interface ParsedFamily {
    name: string;
    help: string;
    type: "GAUGE" | "COUNTER" | "UNTYPED" | "HISTOGRAM" | "SUMMARY";
    metrics: ParsedMetric[];
  }
  export default function parse(text: string): ParsedFamily[];
}
