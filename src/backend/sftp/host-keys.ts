/**
 * Host-key verification for the SFTP backend: a pinned fingerprint, or OpenSSH's known_hosts file.
 *
 * Verdicts, in order:
 *   1. A pinned fingerprint (`SHA256:...`, as `ssh-keygen -lf` prints it) accepts exactly that key.
 *   2. A known_hosts line marked @revoked that holds the presented key refuses it.
 *   3. A known_hosts line for the host holding the presented key accepts it.
 *   4. Lines for the host with the same key type but another key: the key CHANGED; always refused.
 *   5. Otherwise the host is unknown: refused unless acceptUnknownHost was given.
 * Host names match as ssh writes them: `host` on port 22, `[host]:port` otherwise; hashed names
 * (`|1|salt|hash`, HashKnownHosts) and the wildcards `*` and `?` and negation `!` are understood.
 * @cert-authority lines are skipped (certificates are not supported).
 */

import { createHash, createHmac } from "node:crypto";

export type HostKeyVerdict =
  | { readonly ok: true }
  | { readonly ok: false; readonly reason: "unknown" | "changed" | "revoked" | "mismatch" };

export interface KnownHostEntry {
  readonly marker: "" | "@revoked" | "@cert-authority";
  readonly patterns: readonly string[];
  readonly keyType: string;
  readonly key: Buffer;
}

/** The fingerprint of a wire-format public key, as `ssh-keygen -lf` prints it: `SHA256:` + unpadded base64. */
export function fingerprintOf(key: Buffer): string {
  return "SHA256:" + createHash("sha256").update(key).digest("base64").replace(/=+$/, "");
}

/** The key type named inside a wire-format public key (its first string), e.g. "ssh-ed25519". */
export function keyTypeOf(key: Buffer): string {
  if (key.length < 4) return "unknown";
  const length = key.readUInt32BE(0);
  return length > 0 && 4 + length <= key.length ? key.subarray(4, 4 + length).toString("latin1") : "unknown";
}

/** Accepts `SHA256:abc`, `abc` and padded base64; returns the canonical `SHA256:abc` or undefined. */
export function normaliseFingerprint(text: string): string | undefined {
  const body = text
    .trim()
    .replace(/^SHA256:/i, "")
    .replace(/=+$/, "");
  if (!/^[A-Za-z0-9+/]{43}$/.test(body)) return undefined;
  return `SHA256:${body}`;
}

export function parseKnownHosts(text: string): KnownHostEntry[] {
  const entries: KnownHostEntry[] = [];
  for (const rawLine of text.split(/\r?\n/)) {
    const line = rawLine.trim();
    if (line === "" || line.startsWith("#")) continue;
    const fields = line.split(/\s+/);
    let marker: KnownHostEntry["marker"] = "";
    if (fields[0] === "@revoked" || fields[0] === "@cert-authority") marker = fields.shift() as typeof marker;
    const [hosts, keyType, base64] = fields;
    if (hosts === undefined || keyType === undefined || base64 === undefined) continue;
    const key = Buffer.from(base64, "base64");
    if (key.length === 0) continue;
    entries.push({ marker, patterns: hosts.split(","), keyType, key });
  }
  return entries;
}

/** The name ssh looks up in known_hosts for a host and port. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

export function verifyHostKey(
  entries: readonly KnownHostEntry[],
  host: string,
  port: number,
  presented: Buffer,
): HostKeyVerdict {
  const name = knownHostsName(host, port);
  const forHost = entries.filter((e) => e.marker !== "@cert-authority" && hostMatches(e.patterns, name));
  if (forHost.some((e) => e.marker === "@revoked" && e.key.equals(presented))) {
    return { ok: false, reason: "revoked" };
  }
  // A revoked key is refused for every host, as ssh does.
  if (entries.some((e) => e.marker === "@revoked" && e.key.equals(presented))) {
    return { ok: false, reason: "revoked" };
  }
  const plain = forHost.filter((e) => e.marker === "");
  if (plain.some((e) => e.key.equals(presented))) return { ok: true };
  const type = keyTypeOf(presented);
  if (plain.some((e) => keyTypeOf(e.key) === type)) return { ok: false, reason: "changed" };
  return { ok: false, reason: "unknown" };
}

/**
 * The host-key algorithms for the key types known_hosts holds for a host. Offering these
 * first makes the server present a key we can check, as ssh does (a server with ed25519 and RSA keys, known
 * here by its RSA key, would otherwise present ed25519 and look unknown).
 */
export function knownKeyAlgorithms(entries: readonly KnownHostEntry[], host: string, port: number): string[] {
  const name = knownHostsName(host, port);
  const types = new Set(
    entries.filter((e) => e.marker === "" && hostMatches(e.patterns, name)).map((e) => keyTypeOf(e.key)),
  );
  const algorithms = [...types].flatMap((type) =>
    type === "ssh-rsa" ? ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] : [type],
  );
  return algorithms.filter((a) => SSH2_HOST_KEY_ALGORITHMS.includes(a));
}

/** The host-key algorithms ssh2 1.x supports; naming another one makes it throw. */
export const SSH2_HOST_KEY_ALGORITHMS: readonly string[] = [
  "ssh-ed25519",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "rsa-sha2-512",
  "rsa-sha2-256",
  "ssh-rsa",
];

function hostMatches(patterns: readonly string[], name: string): boolean {
  let matched = false;
  for (const pattern of patterns) {
    if (pattern.startsWith("|1|")) {
      if (hashedMatches(pattern, name)) matched = true;
      continue;
    }
    const negated = pattern.startsWith("!");
    const glob = negated ? pattern.slice(1) : pattern;
    if (wildcardMatches(glob.toLowerCase(), name.toLowerCase())) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}

function hashedMatches(pattern: string, name: string): boolean {
  const [, , salt, hash] = pattern.split("|");
  if (salt === undefined || hash === undefined) return false;
  const digest = createHmac("sha1", Buffer.from(salt, "base64")).update(name).digest();
  return digest.equals(Buffer.from(hash, "base64"));
}

function wildcardMatches(glob: string, name: string): boolean {
  if (!glob.includes("*") && !glob.includes("?")) return glob === name;
  const regex = new RegExp(
    "^" +
      glob
        .split("")
        .map((c) => (c === "*" ? ".*" : c === "?" ? "." : c.replace(/[.+^${}()|[\]\\]/g, "\\$&")))
        .join("") +
      "$",
  );
  return regex.test(name);
}
