import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { describe, expect, it } from "vitest";

import { formatDiagnostic, type Diagnostic } from "../../src/config/diagnostic.js";
import { configPath, loadConfigFile, parseWritten, resolveConfig } from "../../src/config/load.js";
import { exampleConfig } from "../policy/posture-fixture.js";
import { EXAMPLE_WRITTEN, withExampleSources } from "./example-written.js";

const EXAMPLE_FILE = fileURLToPath(new URL("../../examples/bulwark.yaml", import.meta.url));
const EXAMPLE = readFileSync(EXAMPLE_FILE, "utf8");
const ENV = { BULWARK_PASSWORD: "x", AWS_ACCESS_KEY_ID: "x", AWS_SECRET_ACCESS_KEY: "x" };
const environment = { env: ENV, fileReadable: () => true };

/** The example with one line replaced (the line must occur exactly once). */
function edit(from: string, to: string): string {
  expect(EXAMPLE.split(from)).toHaveLength(2);
  return EXAMPLE.replace(from, to);
}

/** The 1-based line of the first occurrence of `text` in `source`. */
function lineOf(source: string, text: string): number {
  const i = source.indexOf(text);
  expect(i).toBeGreaterThanOrEqual(0);
  return source.slice(0, i).split("\n").length;
}

function errorsOf(text: string, env: Record<string, string> = ENV): Diagnostic[] {
  const r = resolveConfig(text, "bulwark.yaml", { env, fileReadable: () => true });
  expect(r.config).toBeUndefined();
  return r.errors;
}

describe("resolveConfig", () => {
  it("parses the example into the written fixture and resolves it", () => {
    expect(parseWritten(EXAMPLE)).toEqual(EXAMPLE_WRITTEN);
    const r = resolveConfig(EXAMPLE, "bulwark.yaml", environment);
    expect(r.errors).toEqual([]);
    expect(r.warnings).toEqual([]);
    expect(r.config).toEqual(withExampleSources(exampleConfig()));
  });

  it("reports a misspelt field with its line, column and the field it probably meant", () => {
    const text = edit("    sources:\n", "    sorces:\n");
    const [e, ...rest] = errorsOf(text);
    expect(rest).toEqual([]);
    expect(formatDiagnostic(e!)).toBe(
      `bulwark.yaml:${lineOf(text, "sorces")}:5 datasets.app.sorces: unknown field \`sorces\` — did you mean \`sources\`?`,
    );
  });

  it("reports an unknown top-level field and an unknown label", () => {
    const text = edit("version: 1\n", "version: 1\ntargts: {}\n").replace(
      "      failureDomain: nas-1",
      "      failureDomian: nas-1",
    );
    const messages = errorsOf(text).map(formatDiagnostic);
    expect(messages).toContain(
      `bulwark.yaml:${lineOf(text, "targts")}:1 targts: unknown field \`targts\` — did you mean \`targets\`?`,
    );
    expect(messages).toContain(
      `bulwark.yaml:${lineOf(text, "failureDomian")}:7 targets.nas.labels.failureDomian: unknown field \`failureDomian\` — did you mean \`failureDomain\`?`,
    );
    // The field it replaced is not reported missing as well: the suggestion says it.
    expect(messages).toHaveLength(2);
  });

  it("reports a wrong value with the allowed ones", () => {
    const text = edit("      medium: nas\n", "      medium: nass\n");
    expect(errorsOf(text).map(formatDiagnostic)).toEqual([
      `bulwark.yaml:${lineOf(text, "medium: nass")}:7 targets.nas.labels.medium: invalid value "nass" for \`medium\` — did you mean "nas"?`,
    ]);
  });

  it("reports an unknown target named by a job", () => {
    const text = edit("    copies: [nas, offsite]", "    copies: [nass, offsite]");
    const [e, ...rest] = errorsOf(text);
    expect(rest).toEqual([]);
    expect(formatDiagnostic(e!)).toBe(
      `bulwark.yaml:${lineOf(text, "nass")}:14 jobs.app-nightly.copies[0]: unknown target "nass" — did you mean "nas"?`,
    );
  });

  it("reports a missing secret by its reference, never a value", () => {
    const errors = errorsOf(EXAMPLE, { BULWARK_PASSWORD: "x", AWS_ACCESS_KEY_ID: "x" });
    expect(errors.map(formatDiagnostic)).toEqual([
      `bulwark.yaml:${lineOf(EXAMPLE, "secretAccessKey")}:26 targets.offsite.credentials.secretAccessKey.env: missing secret env:AWS_SECRET_ACCESS_KEY: the environment variable AWS_SECRET_ACCESS_KEY is not set — export AWS_SECRET_ACCESS_KEY before running bulwark (or point the reference at a file: { file: PATH })`,
    ]);
  });

  it("refuses a secret written inline, once, without echoing it", () => {
    const text = edit(
      "      secretAccessKey: { env: AWS_SECRET_ACCESS_KEY }",
      "      secretAccessKey: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    );
    const errors = errorsOf(text);
    expect(errors).toHaveLength(1);
    const line = formatDiagnostic(errors[0]!);
    expect(line).toContain(
      `bulwark.yaml:${lineOf(text, "secretAccessKey")}:7 targets.offsite.credentials.secretAccessKey:`,
    );
    expect(line).toContain("a secret is written in the file");
    expect(line).not.toContain("wJalr");
  });

  it("refuses a plain string where a secret reference belongs", () => {
    const text = edit("    password: { file: /etc/bulwark/offsite.password }", "    password: hunter2");
    const errors = errorsOf(text);
    expect(errors).toHaveLength(1);
    expect(errors[0]!.path).toEqual(["targets", "offsite", "password"]);
    expect(errors[0]!.remedy).toContain("{ env: NAME } or { file: PATH }");
    expect(formatDiagnostic(errors[0]!)).not.toContain("hunter2");
  });

  it("explains a malformed secret reference and a malformed rule", () => {
    const text = edit(
      "    password: { file: /etc/bulwark/offsite.password }",
      "    password: { fiel: /x }",
    ).replace("    rule: 3-2-1-1-0", "    rule: { copeis: 3 }");
    const messages = errorsOf(text).map(formatDiagnostic);
    expect(messages).toHaveLength(2);
    expect(messages).toContain(
      `bulwark.yaml:${lineOf(text, "password: { fiel")}:17 targets.offsite.password.fiel: unknown field \`fiel\` — did you mean \`file\`?`,
    );
    expect(messages).toContain(
      `bulwark.yaml:${lineOf(text, "copeis")}:13 policies.standard.rule.copeis: unknown field \`copeis\` — did you mean \`copies\`?`,
    );
  });

  it("suggests the preset a rule probably meant", () => {
    const text = edit("    rule: 3-2-1-1-0", "    rule: 3-2-1-10");
    expect(errorsOf(text).map(formatDiagnostic)).toEqual([
      `bulwark.yaml:${lineOf(text, "rule:")}:5 policies.standard.rule: expected a preset (3-2-1, 3-2-1-1-0, 4-3-2) or custom counts such as { copies: 3, media: 2, offsite: 1 }, found the text "3-2-1-10" — did you mean "3-2-1-1-0"?`,
    ]);
    // As near to 3-2-1 as to 3-2-1-1-0: no guess.
    const far = edit("    rule: 3-2-1-1-0", "    rule: 3-2-1-1");
    expect(errorsOf(far)[0]!.remedy).toBe(
      "write a preset (3-2-1, 3-2-1-1-0, 4-3-2) or custom counts such as { copies: 3, media: 2, offsite: 1 } (docs/config.md)",
    );
  });

  it("reports an unknown source type and a wrong type of value", () => {
    const text = edit("      - type: files\n", "      - type: file\n").replace(
      "    rpo: 24h",
      "    rpo: [24h]",
    );
    const messages = errorsOf(text).map(formatDiagnostic);
    expect(messages).toContain(
      `bulwark.yaml:${lineOf(text, "type: file")}:9 datasets.app.sources[0].type: unknown \`type\` "file" — did you mean "files"?`,
    );
    expect(messages).toContain(
      `bulwark.yaml:${lineOf(text, "rpo:")}:5 policies.standard.rpo: expected text, found a list — write text here (docs/config.md describes the field)`,
    );
  });

  it("reports a dependency cycle at the job that starts it", () => {
    const text =
      EXAMPLE +
      "    dependsOn: [app-weekly]\n  app-weekly:\n    dataset: app\n    policy: standard\n    primary: local\n    copies: [nas, offsite]\n    dependsOn: [app-nightly]\n";
    const errors = errorsOf(text);
    expect(errors.map(formatDiagnostic)).toEqual([
      `bulwark.yaml:${lineOf(text, "[app-weekly]")}:17 jobs.app-nightly.dependsOn[0]: dependency cycle: app-nightly -> app-weekly -> app-nightly — remove one of these dependsOn entries so the jobs can run in order`,
    ]);
  });

  it("turns YAML syntax errors into positioned diagnostics", () => {
    const text = edit(
      "      site: home\n      failureDomain: nas-1",
      "      site: home\n     failureDomain: nas-1",
    );
    const errors = errorsOf(text);
    expect(errors.length).toBeGreaterThan(0);
    expect(errors[0]!.message).toMatch(/^YAML syntax error: /);
    expect(errors[0]!.position?.line).toBe(lineOf(text, "     failureDomain: nas-1"));
    expect(formatDiagnostic(errors[0]!)).toMatch(
      /^bulwark\.yaml:\d+:\d+ \(top level\): YAML syntax error: .+ — .+/,
    );
  });

  it("reports duplicate keys and an empty file", () => {
    const dup = errorsOf(edit("version: 1\n", "version: 1\nversion: 1\n"));
    expect(dup[0]!.message).toMatch(/YAML syntax error: .*unique/i);
    expect(dup[0]!.remedy).toBe("remove one of the two entries with this key");
    expect(errorsOf("").map((d) => d.message)).toEqual(["the file is empty"]);
    const missing = errorsOf("version: 2\ntargets: {}\ndatasets: {}\npolicies: {}\n").map(formatDiagnostic);
    expect(missing).toEqual([
      'bulwark.yaml:1:1 version: invalid value 2 for `version` — use "1"',
      "bulwark.yaml:1:1 jobs: missing required field `jobs` — add it (docs/config.md describes each field)",
    ]);
  });
});

describe("loadConfigFile", () => {
  it("loads a file and names it in diagnostics", async () => {
    const r = await loadConfigFile(EXAMPLE_FILE, environment);
    expect(r.errors).toEqual([]);
    const missing = await loadConfigFile("/nonexistent/bulwark.yaml", environment);
    expect(missing.errors.map(formatDiagnostic)[0]).toMatch(
      /^\/nonexistent\/bulwark\.yaml \(top level\): cannot read the config file: .+ — create it/,
    );
  });

  it("takes the path from -c, then BULWARK_CONFIG, then ./bulwark.yaml", () => {
    expect(configPath("a.yaml", { BULWARK_CONFIG: "b.yaml" })).toBe("a.yaml");
    expect(configPath(undefined, { BULWARK_CONFIG: "b.yaml" })).toBe("b.yaml");
    expect(configPath(undefined, {})).toBe("bulwark.yaml");
  });
});
