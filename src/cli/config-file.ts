/**
 * Loading the config file for a command that needs it (`run`, `posture`, `copy` with target names): the
 * diagnostics go to stderr, and an invalid file stops the command with exit code 1.
 */
import { existsSync } from "node:fs";

import { formatDiagnostic } from "../config/diagnostic.js";
import { configPath, processSecretEnvironment } from "../config/load.js";
import type { BulwarkConfig } from "../config/types.js";
import { BulwarkError } from "../core/errors.js";
import { loadConfig } from "../ops/config.js";

export interface LoadedConfig {
  file: string;
  config: BulwarkConfig;
}

export async function loadConfigForCommand(flag: string | undefined): Promise<LoadedConfig> {
  const file = configPath(flag, process.env);
  const resolved = await loadConfig(file, processSecretEnvironment(process.env));
  for (const d of [...resolved.errors, ...resolved.warnings])
    process.stderr.write(formatDiagnostic(d) + "\n");
  if (resolved.config === undefined) {
    throw new BulwarkError(
      "CONFIG_INVALID",
      `${file} has ${resolved.errors.length} ${resolved.errors.length === 1 ? "error" : "errors"}`,
      { hint: "fix them (listed above); `bulwark config check` explains the file" },
    );
  }
  return { file, config: resolved.config };
}

/** The config when one was named or the default file exists; undefined otherwise. */
export async function loadConfigIfPresent(flag: string | undefined): Promise<LoadedConfig | undefined> {
  const file = configPath(flag, process.env);
  if (flag === undefined && process.env.BULWARK_CONFIG === undefined && !existsSync(file)) return undefined;
  return loadConfigForCommand(flag);
}
