/**
 * The vault's access tokens: who may talk to it, and with which role.
 *
 * The tokens file holds only SHA-256 hashes of tokens, so reading it (a backup of /etc, a stolen disk)
 * gives nobody access. A token is shown once, when `serve-repo token add` creates it.
 *
 *   [{ "name": "laptop", "sha256": "<64 hex digits>", "role": "append-only" }, ...]
 *
 * Roles:
 *   append-only  read, list, create new files; replace and delete lock files only. What a protected host
 *                holds: ransomware with its credentials cannot destroy what is already stored.
 *   admin        everything, including deleting and replacing any file (prune, key removal). Kept off
 *                the protected hosts.
 */

import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { open, readFile, rename, unlink } from "node:fs/promises";
import { dirname, join } from "node:path";

import { BulwarkError, errnoCode, errorMessage } from "../core/errors.js";

export type VaultRole = "append-only" | "admin";

export const VAULT_ROLES: readonly VaultRole[] = ["append-only", "admin"];

export interface VaultToken {
  /** Who holds it, for logs; never secret. */
  readonly name: string;
  /** SHA-256 of the token, 64 lowercase hex digits. */
  readonly sha256: string;
  readonly role: VaultRole;
}

/** Tokens are long random strings, so a plain SHA-256 is enough: there is nothing to brute-force. */
const TOKEN_BYTES = 32;
const TOKEN_PREFIX = "bwv_";
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;
const HASH_PATTERN = /^[0-9a-f]{64}$/;

export function generateToken(): string {
  return TOKEN_PREFIX + randomBytes(TOKEN_BYTES).toString("base64url");
}

export function hashToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

/**
 * The entry a presented token matches, if any. Every entry is compared, in constant time, whatever
 * matched earlier: the time taken says nothing about which hash, or how much of one, was close.
 */
export function findToken(tokens: readonly VaultToken[], presented: string): VaultToken | undefined {
  const digest = Buffer.from(hashToken(presented), "hex");
  let found: VaultToken | undefined;
  for (const entry of tokens) {
    const stored = Buffer.from(entry.sha256, "hex");
    if (stored.length === digest.length && timingSafeEqual(stored, digest) && found === undefined) {
      found = entry;
    }
  }
  return found;
}

/** Validates a parsed tokens file; errors name the file and the entry. */
export function parseTokens(value: unknown, file: string): VaultToken[] {
  if (!Array.isArray(value)) {
    throw new BulwarkError("CONFIG_INVALID", `${file}: expected a JSON array of tokens`, {
      hint: "create it with `bulwark serve-repo token add --tokens FILE --name NAME --role append-only`",
    });
  }
  const names = new Set<string>();
  return value.map((entry: unknown, i): VaultToken => {
    const e = (entry ?? {}) as { name?: unknown; sha256?: unknown; role?: unknown };
    const where = `${file}: entry ${i}`;
    if (typeof e.name !== "string" || !NAME_PATTERN.test(e.name)) {
      throw new BulwarkError("CONFIG_INVALID", `${where}: "name" must be 1-64 letters, digits or ._@-`);
    }
    if (names.has(e.name)) throw new BulwarkError("CONFIG_INVALID", `${where}: name "${e.name}" is repeated`);
    names.add(e.name);
    if (typeof e.sha256 !== "string" || !HASH_PATTERN.test(e.sha256)) {
      throw new BulwarkError(
        "CONFIG_INVALID",
        `${where} (${e.name}): "sha256" must be 64 lowercase hex digits`,
        {
          hint: "the file stores hashes of tokens, never tokens; add tokens with `bulwark serve-repo token add`",
        },
      );
    }
    if (e.role !== "append-only" && e.role !== "admin") {
      throw new BulwarkError(
        "CONFIG_INVALID",
        `${where} (${e.name}): "role" must be "append-only" or "admin"`,
      );
    }
    return { name: e.name, sha256: e.sha256, role: e.role };
  });
}

/** Reads a tokens file; a missing file is an empty list only when `allowMissing`. */
export async function loadTokens(file: string, allowMissing = false): Promise<VaultToken[]> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if (allowMissing && errnoCode(err) === "ENOENT") return [];
    throw new BulwarkError("CONFIG_INVALID", `cannot read the tokens file ${file}: ${errorMessage(err)}`, {
      cause: err,
      hint: "create it with `bulwark serve-repo token add --tokens FILE --name NAME --role append-only`",
    });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new BulwarkError("CONFIG_INVALID", `${file}: not valid JSON (${errorMessage(err)})`, {
      cause: err,
    });
  }
  return parseTokens(parsed, file);
}

/**
 * Adds a new token to the file (created with mode 0600 when missing) and returns the token, which
 * exists nowhere else: the file keeps only its hash. The file is replaced atomically.
 */
export async function addToken(file: string, name: string, role: VaultRole): Promise<string> {
  if (!NAME_PATTERN.test(name)) {
    throw new BulwarkError("USAGE", `invalid token name "${name}": use 1-64 letters, digits or ._@-`);
  }
  const tokens = await loadTokens(file, true);
  if (tokens.some((t) => t.name === name)) {
    throw new BulwarkError("ALREADY_EXISTS", `${file} already has a token named "${name}"`, {
      hint: "choose another name, or remove the old entry from the file first",
    });
  }
  const token = generateToken();
  const next: VaultToken[] = [...tokens, { name, sha256: hashToken(token), role }];
  const temp = join(dirname(file), `.tmp-tokens-${randomBytes(8).toString("hex")}`);
  try {
    const handle = await open(temp, "wx", 0o600);
    try {
      await handle.writeFile(JSON.stringify(next, null, 2) + "\n");
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, file);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw new BulwarkError("IO", `cannot write the tokens file ${file}: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  return token;
}
