/**
 * Access tokens stored as SHA-256 hashes, for every Bulwark server: the vault (`bwv_` tokens, roles
 * append-only and admin, src/vault/tokens.ts) and the daemon's API (`bwd_` tokens, roles read, operate
 * and admin). What differs between them is a `TokenKind`: the roles, the prefix and the command that adds
 * a token, named in messages.
 *
 * A tokens file holds only the hashes, so reading it (a backup of /etc, a stolen disk) gives nobody access.
 * A token is shown once, when `addToken` creates it.
 *
 *   [{ "name": "laptop", "sha256": "<64 hex digits>", "role": "append-only" }, ...]
 */

import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { readFile } from "node:fs/promises";

import { writeFileAtomic } from "./atomic-file.js";
import { BulwarkError, errnoCode, errorMessage } from "./errors.js";

export interface TokenKind<R extends string> {
  /** The roles a token may have, in the order messages list them. */
  readonly roles: readonly R[];
  /** What every token starts with, so a leaked one is recognisable (secret scanners, logs): "bwv_". */
  readonly prefix: string;
  /** The command that adds a token, with its arguments: "bulwark serve-repo token add --tokens FILE ...". */
  readonly addHint: string;
  /** The command alone, for short hints; default: `addHint` up to its first option. */
  readonly addCommand?: string;
}

export interface StoredToken<R extends string> {
  /** Who holds it, for logs; never secret. */
  readonly name: string;
  /** SHA-256 of the token, 64 lowercase hex digits. */
  readonly sha256: string;
  readonly role: R;
}

/** Tokens are long random strings, so a plain SHA-256 is enough: there is nothing to brute-force. */
const TOKEN_BYTES = 32;
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;
const HASH_PATTERN = /^[0-9a-f]{64}$/;

export function generateToken(kind: Pick<TokenKind<string>, "prefix">): string {
  return kind.prefix + randomBytes(TOKEN_BYTES).toString("base64url");
}

export function hashToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

/**
 * The entry a presented token matches, if any. Every entry is compared, in constant time, whatever
 * matched earlier: the time taken says nothing about which hash, or how much of one, was close.
 */
export function findToken<T extends StoredToken<string>>(
  tokens: readonly T[],
  presented: string,
): T | undefined {
  const digest = Buffer.from(hashToken(presented), "hex");
  let found: T | undefined;
  for (const entry of tokens) {
    const stored = Buffer.from(entry.sha256, "hex");
    if (stored.length === digest.length && timingSafeEqual(stored, digest) && found === undefined) {
      found = entry;
    }
  }
  return found;
}

function addCommandOf(kind: TokenKind<string>): string {
  return kind.addCommand ?? kind.addHint.replace(/\s+--.*$/, "");
}

/** `"a" or "b"`, `"a", "b" or "c"`: the roles as messages list them. */
function listRoles(roles: readonly string[]): string {
  const quoted = roles.map((r) => `"${r}"`);
  return quoted.length <= 1 ? (quoted[0] ?? "") : `${quoted.slice(0, -1).join(", ")} or ${quoted.at(-1)}`;
}

/** Validates a parsed tokens file; errors name the file and the entry. */
export function parseTokens<R extends string>(
  kind: TokenKind<R>,
  value: unknown,
  file: string,
): StoredToken<R>[] {
  if (!Array.isArray(value)) {
    throw new BulwarkError("CONFIG_INVALID", `${file}: expected a JSON array of tokens`, {
      hint: `create it with \`${kind.addHint}\``,
    });
  }
  const names = new Set<string>();
  return value.map((entry: unknown, i): StoredToken<R> => {
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
        { hint: `the file stores hashes of tokens, never tokens; add tokens with \`${addCommandOf(kind)}\`` },
      );
    }
    const role = e.role;
    if (typeof role !== "string" || !(kind.roles as readonly string[]).includes(role)) {
      throw new BulwarkError(
        "CONFIG_INVALID",
        `${where} (${e.name}): "role" must be ${listRoles(kind.roles)}`,
      );
    }
    return { name: e.name, sha256: e.sha256, role: role as R };
  });
}

/** Reads a tokens file; a missing file is an empty list only when `allowMissing`. */
export async function loadTokens<R extends string>(
  kind: TokenKind<R>,
  file: string,
  allowMissing = false,
): Promise<StoredToken<R>[]> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if (allowMissing && errnoCode(err) === "ENOENT") return [];
    throw new BulwarkError("CONFIG_INVALID", `cannot read the tokens file ${file}: ${errorMessage(err)}`, {
      cause: err,
      hint: `create it with \`${kind.addHint}\``,
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
  return parseTokens(kind, parsed, file);
}

/**
 * Adds a new token to the file (created with mode 0600 when missing) and returns the token, which
 * exists nowhere else: the file keeps only its hash. The file is replaced atomically, so a reader (a
 * server reloading its tokens) sees the old list or the new one, never half of one.
 */
export async function addToken<R extends string>(
  kind: TokenKind<R>,
  file: string,
  name: string,
  role: R,
): Promise<string> {
  if (!NAME_PATTERN.test(name)) {
    throw new BulwarkError("USAGE", `invalid token name "${name}": use 1-64 letters, digits or ._@-`);
  }
  // The type says R, but a caller may have cast a command-line string: a bad role would make the file
  // unreadable at the next start.
  if (!kind.roles.includes(role)) {
    throw new BulwarkError("USAGE", `invalid role "${role}": use ${listRoles(kind.roles)}`);
  }
  const tokens = await loadTokens(kind, file, true);
  if (tokens.some((t) => t.name === name)) {
    throw new BulwarkError("ALREADY_EXISTS", `${file} already has a token named "${name}"`, {
      hint: "choose another name, or remove the old entry from the file first",
    });
  }
  const token = generateToken(kind);
  const next: StoredToken<R>[] = [...tokens, { name, sha256: hashToken(token), role }];
  try {
    await writeFileAtomic(file, JSON.stringify(next, null, 2) + "\n");
  } catch (err) {
    throw new BulwarkError("IO", `cannot write the tokens file ${file}: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  return token;
}
