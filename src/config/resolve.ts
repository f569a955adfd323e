/**
 * The steps after the schema: normalise the written config, run the cross-field rules, and split the
 * diagnostics. `resolveConfig(text, fileName, options)` (./load.ts) parses and validates the file, then calls
 * this with the written config and a locator built from the parsed document. `ctx.rules` are the rules of the
 * layers above config (src/ops/config.ts passes the policy's), run after the built-in ones.
 */

import type { Diagnostic } from "./diagnostic.js";
import { normalise } from "./normalise.js";
import { checkConfig, type RuleContext } from "./rules.js";
import type { BulwarkConfig } from "./types.js";
import type { WrittenConfig } from "./written.js";

export interface ResolvedConfig {
  /** Present only when there is no error. */
  config?: BulwarkConfig;
  warnings: Diagnostic[];
  errors: Diagnostic[];
}

export function resolveWritten(written: WrittenConfig, ctx: RuleContext): ResolvedConfig {
  const { config, diagnostics } = normalise(written, ctx);
  diagnostics.push(...checkConfig(config, ctx));
  const errors = diagnostics.filter((d) => d.severity === "error");
  const warnings = diagnostics.filter((d) => d.severity === "warning");
  return errors.length === 0 ? { config, warnings, errors } : { warnings, errors };
}
