/**
 * Key files (docs/design.md, "Keys"): the master key, sealed under a key derived from a password.
 *
 * Several key files may wrap the same master key, one per password; changing a password writes a new key
 * file and removes the old one, never touching data. Key files are the only plaintext JSON in a repository.
 */
import { hostname, userInfo } from "node:os";
import { randomBytes } from "node:crypto";
import { BulwarkError } from "../core/errors.js";
import {
  defaultScryptParams,
  deriveKey,
  open,
  seal,
  sha256Hex,
  type ScryptParams,
} from "../crypto/crypto.js";
import { systemClock } from "../core/clock.js";

export interface MasterKey {
  /** AES-256-GCM key for every sealed object of the repository. */
  readonly encrypt: Buffer;
}

export interface KeyFile {
  version: 1;
  created: string;
  hostname: string;
  username: string;
  kdf: { name: "scrypt"; N: number; r: number; p: number; salt: string };
  /** base64 of seal(passwordKey, JSON {encrypt: base64}) */
  data: string;
}

export async function createKeyFile(
  master: MasterKey,
  password: string,
  params: ScryptParams = defaultScryptParams(),
  now: Date = systemClock.now(),
): Promise<{ name: string; bytes: Buffer; file: KeyFile }> {
  const salt = randomBytes(32);
  const passwordKey = await deriveKey(password, salt, params);
  const inner = Buffer.from(JSON.stringify({ encrypt: master.encrypt.toString("base64") }));
  const file: KeyFile = {
    version: 1,
    created: now.toISOString(),
    hostname: hostname(),
    username: safeUsername(),
    kdf: { name: "scrypt", N: params.N, r: params.r, p: params.p, salt: salt.toString("base64") },
    data: seal(passwordKey, inner).toString("base64"),
  };
  const bytes = Buffer.from(JSON.stringify(file, null, 2) + "\n");
  return { name: sha256Hex(bytes), bytes, file };
}

export function parseKeyFile(bytes: Buffer, what: string): KeyFile {
  let file: KeyFile;
  try {
    file = JSON.parse(bytes.toString("utf8")) as KeyFile;
  } catch (cause) {
    throw new BulwarkError("INVALID_DATA", `${what}: not valid JSON`, { cause });
  }
  if (file?.kdf?.name !== "scrypt" || typeof file.data !== "string" || typeof file.kdf.salt !== "string") {
    throw new BulwarkError("INVALID_DATA", `${what}: not a Bulwark key file`);
  }
  const { N, r, p } = file.kdf;
  // Bound the parameters so a planted key file cannot make us allocate more than 1 GiB or spin for minutes.
  if (
    ![N, r, p].every(Number.isInteger) ||
    N < 2 ||
    (N & (N - 1)) !== 0 ||
    r < 1 ||
    p < 1 ||
    p > 16 ||
    128 * N * r > 2 ** 30 ||
    128 * r * p > 2 ** 28
  ) {
    throw new BulwarkError("INVALID_DATA", `${what}: KDF parameters out of range`);
  }
  return file;
}

/**
 * Checks the plain-text fields `key list` shows (created, hostname, username). Opening does not need them, so
 * a key file without them still opens the repository; listing names the file instead of failing in the
 * rendering (design §19: a malformed key file stops `key list`).
 */
export function assertListableKeyFile(file: KeyFile, what: string): void {
  for (const field of ["created", "hostname", "username"] as const) {
    if (typeof file[field] !== "string") {
      throw new BulwarkError("INVALID_DATA", `${what}: malformed key file: no \`${field}\``, {
        hint: "not written by Bulwark: delete that file in the repository's keys directory if it is not yours (the repository still opens with the other keys)",
      });
    }
  }
  if (Number.isNaN(Date.parse(file.created))) {
    throw new BulwarkError("INVALID_DATA", `${what}: malformed key file: \`created\` is not a time`, {
      hint: "not written by Bulwark: delete that file in the repository's keys directory if it is not yours (the repository still opens with the other keys)",
    });
  }
}

/** Returns the master key, or undefined when the password does not open this key file. */
export async function unwrapKeyFile(file: KeyFile, password: string): Promise<MasterKey | undefined> {
  const passwordKey = await deriveKey(password, Buffer.from(file.kdf.salt, "base64"), file.kdf);
  let inner: Buffer;
  try {
    inner = open(passwordKey, Buffer.from(file.data, "base64"), "key");
  } catch {
    return undefined;
  }
  const parsed = JSON.parse(inner.toString("utf8")) as { encrypt?: string };
  const encrypt = Buffer.from(parsed.encrypt ?? "", "base64");
  if (encrypt.length !== 32) throw new BulwarkError("INVALID_DATA", "key file holds a malformed master key");
  return { encrypt };
}

function safeUsername(): string {
  try {
    return userInfo().username;
  } catch {
    return String(process.getuid?.() ?? "unknown");
  }
}
