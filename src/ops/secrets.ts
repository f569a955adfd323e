/**
 * Reading a secret reference at the moment it is needed. The value is returned to the caller, which passes
 * it to the one place that needs it; it is never logged (callers scrub messages with `scrub`).
 */
import type { SecretRef } from "../config/types.js";
import { BulwarkError } from "../core/errors.js";
import { readPasswordFile } from "../core/secret-file.js";

export async function readSecret(
  ref: SecretRef,
  env: Readonly<Record<string, string | undefined>>,
): Promise<string> {
  if ("env" in ref) {
    const v = env[ref.env];
    if (v === undefined || v === "") {
      throw new BulwarkError("CONFIG_INVALID", `the environment variable ${ref.env} is not set`, {
        hint: `export ${ref.env} before running bulwark`,
      });
    }
    return v;
  }
  // The first line of the file, as password files are read everywhere else.
  return readPasswordFile(ref.file);
}
