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

/**
 * `-r NAME` given with `-c CONFIG` names one of the config's targets, as `--target NAME` does, so a target
 * known by name needs neither its location nor its credentials spelled out. Returns the target names with
 * it added. A `-r` that names no target of the config is refused, never silently ignored (docs/design.md
 * §21 "Locations").
 */
export function withRepoTarget(
  loaded: LoadedConfig,
  repo: string | undefined,
  targets: readonly string[],
): string[] {
  if (repo === undefined) return [...targets];
  if (loaded.config.targets[repo] === undefined) {
    const names = Object.keys(loaded.config.targets);
    throw new BulwarkError("USAGE", `-r ${JSON.stringify(repo)} names no target of ${loaded.file}`, {
      hint:
        names.length > 0
          ? `with -c, -r takes a target name (${names.join(", ")}); leave out -c to give a location`
          : `${loaded.file} declares no target; leave out -c to give a location`,
    });
  }
  return targets.includes(repo) ? [...targets] : [...targets, repo];
}

/** withRepoTarget for a command that takes one target: `-r` and `--target` must then agree. */
export function oneRepoTarget(
  loaded: LoadedConfig,
  repo: string | undefined,
  target: string | undefined,
): string | undefined {
  const names = withRepoTarget(loaded, repo, target === undefined ? [] : [target]);
  if (names.length > 1) {
    throw new BulwarkError("USAGE", `-r ${repo} and --target ${target} name different targets`, {
      hint: "name the one target with either",
    });
  }
  return names[0];
}
