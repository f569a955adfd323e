/**
 * Loading the config file with every rule, the policy's included (src/policy/config-rules.ts): config sits
 * below policy and takes those rules as a parameter, so this is the one place that passes them. Every command
 * that reads the config file loads it here, so none of them loses a warning.
 */
import { loadConfigFile, resolveConfig } from "../config/load.js";
import type { ResolvedConfig } from "../config/resolve.js";
import type { SecretEnvironment } from "../config/secrets.js";
import { policyRules } from "../policy/config-rules.js";

/** Reads and resolves the config file at `file` (a file that cannot be read is an error diagnostic). */
export function loadConfig(file: string, environment: SecretEnvironment): Promise<ResolvedConfig> {
  return loadConfigFile(file, { ...environment, rules: policyRules });
}

/** Resolves the text of a config file named `fileName` (used in the diagnostics). */
export function resolveConfigText(
  text: string,
  fileName: string,
  environment: SecretEnvironment,
): ResolvedConfig {
  return resolveConfig(text, fileName, { ...environment, rules: policyRules });
}
