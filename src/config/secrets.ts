/**
 * Secrets in the config are references, never values: `{ env: NAME }` or `{ file: PATH }`. These helpers
 * find a secret that was written inline anyway, and check that a reference resolves, without ever returning
 * or printing the secret itself.
 */

import { diagnosticsFor, type ConfigPath, type Diagnostic, type Locate } from "./diagnostic.js";
import type { SecretRef } from "./types.js";

/** Whether a literal value looks like a credential (so the schema can refuse it with a pointer to references). */
export function looksLikeInlineSecret(value: string): boolean {
  const v = value.trim();
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(v)) return true;
  if (/\b(AKIA|ASIA)[0-9A-Z]{16}\b/.test(v)) return true;
  if (urlPassword(v)) return true;
  // A long token mixing letters and digits with no spaces: an access key, API token or password. Names
  // (databases, hosts, buckets) are long too, but lower-case words joined by _ - or .; a token mixes cases,
  // is a long hex string, or carries base64's + and =.
  if (/^[A-Za-z0-9+/=_\-.]{24,}$/.test(v) && /[A-Za-z]/.test(v) && /[0-9]/.test(v) && !v.includes("/")) {
    const mixedCase = /[a-z]/.test(v) && /[A-Z]/.test(v);
    const hex = /^[0-9a-fA-F]{32,}$/.test(v);
    const base64 = /[+=]/.test(v);
    if (mixedCase || hex || base64) return true;
  }
  return false;
}

/** Whether a location URL carries a password in its user info (`sftp://user:pass@host/...`). */
export function urlPassword(location: string): boolean {
  // Anywhere, so that wrapped URLs (`s3:https://key:secret@host/bucket`) are caught too.
  return /:\/\/[^/@\s:]+:[^/@\s]+@/.test(location);
}

export interface SecretEnvironment {
  env: Readonly<Record<string, string | undefined>>;
  /** Whether the file can be read (an fs.accessSync R_OK in the CLI, a fake in tests). */
  fileReadable: (path: string) => boolean;
}

/** Why a reference does not resolve, or undefined when it does. */
export function unresolvedSecret(ref: SecretRef, environment: SecretEnvironment): string | undefined {
  if ("env" in ref) {
    const v = environment.env[ref.env];
    return v === undefined || v === "" ? `the environment variable ${ref.env} is not set` : undefined;
  }
  return environment.fileReadable(ref.file) ? undefined : `the file ${ref.file} cannot be read`;
}

/**
 * Every place in the parsed document (before the schema) where a secret was written as a value: a string
 * where a reference belongs (under `credentials` or `password`), or any string that looks like a credential.
 * The `env` and `file` fields of references hold names, not secrets, and are skipped.
 */
export function findInlineSecrets(doc: unknown, path: ConfigPath = []): ConfigPath[] {
  const found: ConfigPath[] = [];
  const last = path[path.length - 1];
  const inSecretSlot = path.includes("credentials") || last === "password" || last === "signingKey";
  if (typeof doc === "string") {
    if (last !== "env" && last !== "file" && (inSecretSlot || looksLikeInlineSecret(doc))) found.push(path);
  } else if (Array.isArray(doc)) {
    doc.forEach((v, i) => found.push(...findInlineSecrets(v, [...path, i])));
  } else if (doc !== null && typeof doc === "object") {
    for (const [k, v] of Object.entries(doc)) found.push(...findInlineSecrets(v, [...path, k]));
  }
  return found;
}

/** {@link findInlineSecrets} as errors that never echo the value. */
export function inlineSecretDiagnostics(doc: unknown, file: string, locate: Locate): Diagnostic[] {
  const { error } = diagnosticsFor(file, locate);
  return findInlineSecrets(doc).map((p) =>
    error(
      p,
      "a secret is written in the file",
      "remove it (and rotate it if the file was shared), then refer to it: { env: NAME } or { file: PATH }",
    ),
  );
}
