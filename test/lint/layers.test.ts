/**
 * The layer rules of eslint.layers.js (docs/design.md §23) catch the imports and calls they forbid: each
 * deliberate violation below is linted as if it were a file in that folder, and must be reported; the same
 * code in src/cli/ (the top layer) must not be. `npm run lint` applies the same rules to the real tree.
 */
import { ESLint } from "eslint";
import tseslint from "typescript-eslint";
import { describe, expect, it } from "vitest";

// @ts-expect-error: a plain JavaScript module without declarations
import { layerRules } from "../../eslint.layers.js";

const ROOT = new URL("../../", import.meta.url).pathname;
const eslint = new ESLint({
  cwd: ROOT,
  overrideConfigFile: true,
  overrideConfig: [
    { files: ["**/*.ts"], languageOptions: { parser: tseslint.parser as never } },
    ...(layerRules as ESLint.Options["overrideConfig"][]),
  ] as never,
});

async function problems(file: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: ROOT + file });
  return (result?.messages ?? []).map((m) => `${m.ruleId}: ${m.message}`);
}

describe("layer rules", () => {
  it.each([
    ["src/backend/local/x.ts", 'import { Output } from "../../cli/context.js";', /must not import src\/cli/],
    ["src/backend/x.ts", 'import { Repository } from "../repository/repository.js";', /src\/repository/],
    ["src/repository/x.ts", 'import { loadTree } from "../snapshot/walker.js";', /src\/snapshot/],
    ["src/catalog/x.ts", 'import { scrub } from "../ops/targets.js";', /src\/ops/],
    ["src/vault/x.ts", 'import { Output } from "../cli/context.js";', /src\/cli/],
    [
      "src/evidence/x.ts",
      'import { loadConfig } from "../ops/config.js";',
      /src\/evidence\/ must not import src\/ops/,
    ],
    ["src/catalog/x.ts", 'import { renderReport } from "../evidence/report.js";', /src\/evidence/],
    ["src/sources/x.ts", 'import { runJob } from "../ops/run-job.js";', /src\/ops/],
    ["src/ops/x.ts", 'import { Output } from "../cli/context.js";', /src\/cli/],
    ["src/ops/x.ts", 'import { Command } from "commander";', /only src\/cli\/ parses arguments/],
    ["src/snapshot/x.ts", 'process.stdout.write("x\\n");', /only src\/cli\/ prints/],
    ["src/sources/x.ts", "process.exit(1);", /only src\/cli\/ sets exit codes/],
    ["src/copy/x.ts", 'console.log("x");', /no-console/],
    [
      "src/config/x.ts",
      'import { applyKeepRules } from "../policy/keep-rules.js";',
      /src\/config\/ must not import src\/policy/,
    ],
    // no file of config is excepted: the config rule that needs policy lives in policy/config-rules.ts
    [
      "src/config/rules.ts",
      'import { evaluateDataset } from "../policy/posture.js";',
      /src\/config\/ must not import src\/policy/,
    ],
    [
      "src/config/rules.ts",
      'import { loadConfig } from "../ops/config.js";',
      /src\/config\/ must not import src\/ops/,
    ],
    // one clock (src/core/clock.ts)
    ["src/repository/x.ts", "const t = Date.now();", /read the time from a Clock/],
    ["src/ops/x.ts", "const d = new Date();", /read the time from a Clock/],
  ])("%s: %s is reported", async (file, code, expected) => {
    const found = await problems(file, `${code}\nexport {};\n`);
    expect(found.join("\n")).toMatch(expected);
  });

  it("allowed imports and the CLI's own printing pass", async () => {
    expect(
      await problems(
        "src/snapshot/x.ts",
        'import { Repository } from "../repository/repository.js";\nexport { Repository };\n',
      ),
    ).toEqual([]);
    expect(
      await problems(
        "src/ops/x.ts",
        'import { forget } from "./forget.js";\nimport { backup } from "../snapshot/archiver.js";\nexport { forget, backup };\n',
      ),
    ).toEqual([]);
    // the clock itself reads wall time; elsewhere a Date from a value is not a clock read
    expect(await problems("src/core/clock.ts", "export const now = () => new Date();\n")).toEqual([]);
    expect(await problems("src/ops/x.ts", 'export const d = new Date("2030-01-01");\n')).toEqual([]);
    expect(
      await problems(
        "src/cli/x.ts",
        'import { Command } from "commander";\nprocess.stdout.write("x");\nprocess.exit(1);\nexport { Command };\n',
      ),
    ).toEqual([]);
  });
});
