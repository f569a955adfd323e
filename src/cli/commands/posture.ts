/**
 * `bulwark posture [DATASET]`: evaluates every dataset against its policy from live evidence read from the
 * repositories themselves (src/policy/posture.ts decides, src/policy/posture-report.ts renders). For each
 * job's primary and copy targets: whether the repository could be opened, the newest snapshot of the
 * dataset's paths, and, where the backend reads retention back, until when that snapshot's file and its
 * tree's pack are locked. Verification, coverage and drills come from the catalog; DR evidence does not exist
 * yet, so that row is "unknown".
 * Exit code 0 when every dataset complies, 20 when any fails (with --strict, unknown rows fail too).
 */
import type { Command } from "commander";
import { existsSync } from "node:fs";

import type { Catalog } from "../../catalog/catalog.js";

import { formatDiagnostic } from "../../config/diagnostic.js";
import { configPath, processSecretEnvironment } from "../../config/load.js";
import { BulwarkError, errorMessage } from "../../core/errors.js";
import { loadConfig } from "../../ops/config.js";
import { collectEvidence } from "../../ops/posture.js";
import { evaluatePosture, postureExitCode } from "../../policy/posture.js";
import { renderPosture, type PostureFormat } from "../../policy/posture-report.js";
import { getPassword, type GlobalOptions } from "../context.js";
import { systemClock } from "../../core/clock.js";

const FORMATS: readonly PostureFormat[] = ["table", "markdown", "html", "json"];

export function registerPosture(program: Command, globals: () => GlobalOptions): void {
  program
    .command("posture")
    .description(
      "evaluate every dataset against its policy (3-2-1-1-0 and others) from the live repositories",
    )
    .argument("[dataset]", "only this dataset")
    .option("-c, --config <file>", "the config file (env BULWARK_CONFIG; default ./bulwark.yaml)")
    .option("--format <format>", "table, markdown or html (--json for JSON)", "table")
    .option("--strict", "unknown rows (evidence that does not exist yet) fail too")
    .addHelpText(
      "after",
      "\nEach row has a status (pass, fail, unknown), its evidence and, when it fails, the reason and the remedy.\nExit code 0 when every dataset complies, 20 when any fails, 1 when the config is invalid.",
    )
    .action(
      async (dataset: string | undefined, flags: { config?: string; format: string; strict?: boolean }) => {
        const opts = globals();
        if (!FORMATS.includes(flags.format as PostureFormat)) {
          throw new BulwarkError(
            "USAGE",
            `--format must be table, markdown or html, got ${JSON.stringify(flags.format)}`,
          );
        }
        const format: PostureFormat = opts.json ? "json" : (flags.format as PostureFormat);
        const file = configPath(flags.config, process.env);
        const resolved = await loadConfig(file, processSecretEnvironment(process.env));
        for (const d of [...resolved.errors, ...resolved.warnings])
          process.stderr.write(formatDiagnostic(d) + "\n");
        const config = resolved.config;
        if (config === undefined) {
          throw new BulwarkError(
            "CONFIG_INVALID",
            `${file} has ${resolved.errors.length} ${resolved.errors.length === 1 ? "error" : "errors"}`,
            { hint: "fix them (listed above); `bulwark config check` explains the file" },
          );
        }
        if (dataset !== undefined && config.datasets[dataset] === undefined) {
          const known = Object.keys(config.datasets);
          throw new BulwarkError("USAGE", `unknown dataset ${JSON.stringify(dataset)}`, {
            hint:
              known.length > 0
                ? `the datasets of ${file}: ${known.join(", ")}`
                : `${file} declares no dataset`,
          });
        }
        let password: Promise<string> | undefined;
        // Verification records come from the catalog when there is one (a posture never creates it).
        const catalog = await existingCatalog();
        let evidence;
        const now = systemClock.now();
        try {
          evidence = await collectEvidence(config, {
            ...(catalog ? { catalog } : {}),
            now,
            env: process.env,
            defaultPassword: () => (password ??= getPassword(opts)),
            ...(dataset !== undefined ? { dataset } : {}),
            onDamaged: (target, name, err) =>
              process.stderr.write(
                `warning: ${target}: skipping damaged snapshot ${name.slice(0, 8)}: ${errorMessage(err)}\n`,
              ),
          });
        } finally {
          catalog?.close();
        }
        const report = evaluatePosture(config, evidence, now, dataset);
        process.stdout.write(renderPosture(report, format));
        process.exitCode = postureExitCode(report, { strict: flags.strict === true });
      },
    );
}

/**
 * The catalog, if one exists at its default place (BULWARK_CATALOG, the state directory): posture reads the
 * verifications recorded there. A missing catalog is no error (nothing was verified); a damaged one is
 * reported and posture goes on without it.
 */
async function existingCatalog(): Promise<Catalog | undefined> {
  const { Catalog } = await import("../../catalog/catalog.js");
  const path = Catalog.defaultPath(process.env);
  if (!existsSync(path)) return undefined;
  try {
    return Catalog.open(path);
  } catch (err) {
    process.stderr.write(
      `warning: the catalog cannot be read, so no verification counts: ${errorMessage(err)}\n`,
    );
    return undefined;
  }
}
