/**
 * The vault's access tokens: who may talk to it, and with which role.
 *
 * The tokens file holds only SHA-256 hashes of tokens, so reading it (a backup of /etc, a stolen disk)
 * gives nobody access. A token is shown once, when `serve-repo token add` creates it. The file format,
 * the hashing and the constant-time lookup are shared with the daemon's API tokens (src/core/tokens.ts);
 * this module fixes the vault's roles, its `bwv_` prefix and the command its messages name.
 *
 *   [{ "name": "laptop", "sha256": "<64 hex digits>", "role": "append-only" }, ...]
 *
 * Roles:
 *   append-only  read, list, create new files; replace and delete lock files only. What a protected host
 *                holds: ransomware with its credentials cannot destroy what is already stored.
 *   admin        everything, including deleting and replacing any file (prune, key removal). Kept off
 *                the protected hosts.
 */

import * as tokens from "../core/tokens.js";
import type { StoredToken, TokenKind } from "../core/tokens.js";

export type VaultRole = "append-only" | "admin";

export const VAULT_ROLES: readonly VaultRole[] = ["append-only", "admin"];

export type VaultToken = StoredToken<VaultRole>;

const VAULT_TOKENS: TokenKind<VaultRole> = {
  roles: VAULT_ROLES,
  prefix: "bwv_",
  addHint: "bulwark serve-repo token add --tokens FILE --name NAME --role append-only",
};

export function generateToken(): string {
  return tokens.generateToken(VAULT_TOKENS);
}

export const hashToken: (token: string) => string = tokens.hashToken;

/** The entry a presented token matches, if any, comparing every entry in constant time. */
export function findToken(list: readonly VaultToken[], presented: string): VaultToken | undefined {
  return tokens.findToken(list, presented);
}

/** Validates a parsed tokens file; errors name the file and the entry. */
export function parseTokens(value: unknown, file: string): VaultToken[] {
  return tokens.parseTokens(VAULT_TOKENS, value, file);
}

/** Reads a tokens file; a missing file is an empty list only when `allowMissing`. */
export function loadTokens(file: string, allowMissing = false): Promise<VaultToken[]> {
  return tokens.loadTokens(VAULT_TOKENS, file, allowMissing);
}

/** Adds a new token to the file (mode 0600) and returns it; the file keeps only its hash. */
export function addToken(file: string, name: string, role: VaultRole): Promise<string> {
  return tokens.addToken(VAULT_TOKENS, file, name, role);
}
