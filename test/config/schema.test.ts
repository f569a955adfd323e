/**
 * docs/bulwark.schema.json is generated from the zod schema: this test fails when the committed file differs
 * from what the schema produces. Regenerate with `UPDATE_SCHEMA=1 npx vitest run test/config/schema.test.ts`.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { describe, expect, it } from "vitest";
import { parse } from "yaml";

import { configJsonSchema, configSchema } from "../../src/config/schema.js";
import { EXAMPLE_WRITTEN } from "./example-written.js";

const SCHEMA_FILE = fileURLToPath(new URL("../../docs/bulwark.schema.json", import.meta.url));
const EXAMPLE_FILE = fileURLToPath(new URL("../../examples/bulwark.yaml", import.meta.url));

describe("config schema", () => {
  it("docs/bulwark.schema.json is the schema's JSON Schema", () => {
    const generated = JSON.stringify(configJsonSchema(), null, 2) + "\n";
    if (process.env.UPDATE_SCHEMA === "1") writeFileSync(SCHEMA_FILE, generated);
    let committed = "";
    try {
      committed = readFileSync(SCHEMA_FILE, "utf8");
    } catch {
      // reported by the comparison below
    }
    expect(committed, "docs/bulwark.schema.json is stale: regenerate it with UPDATE_SCHEMA=1").toBe(
      generated,
    );
  });

  it("accepts the example and produces the written config", () => {
    const r = configSchema.safeParse(parse(readFileSync(EXAMPLE_FILE, "utf8")));
    expect(r.success).toBe(true);
    expect(r.data).toEqual(EXAMPLE_WRITTEN);
  });

  it("rejects unknown keys and plain strings where secret references belong", () => {
    const withTypo = { ...structuredClone(EXAMPLE_WRITTEN), jobz: {} };
    expect(configSchema.safeParse(withTypo).error?.issues.map((i) => i.code)).toEqual(["unrecognized_keys"]);
    const plain = structuredClone(EXAMPLE_WRITTEN) as unknown as {
      targets: { local: { password: unknown } };
    };
    plain.targets.local.password = "BULWARK_PASSWORD";
    expect(configSchema.safeParse(plain).success).toBe(false);
    const both = structuredClone(EXAMPLE_WRITTEN) as unknown as { targets: { local: { password: unknown } } };
    both.targets.local.password = { env: "A", file: "/b" };
    expect(configSchema.safeParse(both).success).toBe(false);
  });

  it("the JSON Schema is strict and describes secret references", () => {
    const s = configJsonSchema() as { additionalProperties?: boolean; required?: string[] };
    expect(s.additionalProperties).toBe(false);
    expect(s.required).toEqual(["version", "targets", "datasets", "policies", "jobs"]);
    const text = JSON.stringify(s);
    expect(text).toContain("{ env: NAME } or { file: PATH }");
  });
});
