/**
 * Signed reports (docs/design.md §17c). An Ed25519 signature over the exact bytes of a report as it is
 * printed unsigned, carried in the file in a way each format keeps:
 *
 *  - Markdown and HTML: one last line, `<!-- bulwark-signature {...} -->`; the signed bytes are every byte
 *    before it (an HTML comment after `</html>` is still a valid document, and Markdown hides it).
 *  - JSON: a last member `"signature": {...}` of the top-level object, on one line; the signed bytes are
 *    the document without it (the text before `,\n  "signature": ` followed by `\n}\n`), so the file stays
 *    one JSON document that `jq` reads.
 *
 * The block holds the algorithm, the signer's public key (SPKI DER, base64), its fingerprint
 * (`SHA256:` and the unpadded base64 of the SHA-256 of that DER, as OpenSSH prints key fingerprints) and
 * the signature (base64). A signature proves the bytes are those the key's holder signed; whether that
 * holder is the one you trust is the fingerprint's question, so a verifier pins the key (`--public-key`).
 */
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from "node:crypto";

import { BulwarkError } from "../core/errors.js";

export interface SignatureBlock {
  algorithm: "ed25519";
  publicKey: string;
  fingerprint: string;
  signature: string;
}

const COMMENT_PREFIX = "<!-- bulwark-signature ";
const COMMENT_SUFFIX = " -->";
const JSON_MEMBER = ',\n  "signature": ';
const JSON_END = "\n}\n";

/**
 * An Ed25519 private key from PEM text (PKCS#8, `openssl genpkey -algorithm ed25519`). `source` names where
 * it came from in errors; the key's text never appears in one.
 */
export function signingKeyFromPem(pem: string, source: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: "pem" });
  } catch (err) {
    // Node reports a missing passphrase differently across versions; the PEM says it plainly.
    const encrypted =
      (err as { code?: string }).code === "ERR_MISSING_PASSPHRASE" ||
      /-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(pem);
    throw new BulwarkError(
      "CONFIG_INVALID",
      encrypted
        ? `the signing key ${source} is encrypted with a passphrase`
        : `the signing key ${source} is not a PEM private key`,
      {
        hint: encrypted
          ? "Bulwark reads an unencrypted PKCS#8 key: protect the file by its mode (0600) instead, or decrypt it with `openssl pkey -in KEY -out KEY.pem`"
          : "make one with `openssl genpkey -algorithm ed25519 -out signing-key.pem` (chmod 600)",
      },
    );
  }
  if (key.asymmetricKeyType !== "ed25519") {
    throw new BulwarkError(
      "CONFIG_INVALID",
      `the signing key ${source} is an ${key.asymmetricKeyType ?? "unknown"} key; reports are signed with Ed25519`,
      { hint: "make an Ed25519 key with `openssl genpkey -algorithm ed25519 -out signing-key.pem`" },
    );
  }
  return key;
}

/** An Ed25519 public key from PEM text (a public key, or a private key whose public half is used). */
export function publicKeyFromPem(pem: string, source: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: "pem" });
  } catch {
    throw new BulwarkError("USAGE", `${source} is not a PEM public key`, {
      hint: "give the signer's public key: `openssl pkey -in signing-key.pem -pubout -out signing-key.pub.pem`",
    });
  }
  if (key.asymmetricKeyType !== "ed25519") {
    throw new BulwarkError(
      "USAGE",
      `${source} is an ${key.asymmetricKeyType ?? "unknown"} key; reports are signed with Ed25519`,
    );
  }
  return key;
}

/** `SHA256:` and the unpadded base64 of the SHA-256 of the key's SPKI DER. */
export function keyFingerprint(key: KeyObject): string {
  const der = (key.type === "private" ? createPublicKey(key) : key).export({ type: "spki", format: "der" });
  return `SHA256:${createHash("sha256").update(der).digest("base64").replace(/=+$/, "")}`;
}

/** The report with its signature: `text` must be a report exactly as rendered (unsigned). */
export function signReport(text: string, format: "md" | "html" | "json", key: KeyObject): string {
  const publicKey = createPublicKey(key);
  const block: SignatureBlock = {
    algorithm: "ed25519",
    publicKey: publicKey.export({ type: "spki", format: "der" }).toString("base64"),
    fingerprint: keyFingerprint(publicKey),
    signature: sign(null, Buffer.from(text, "utf8"), key).toString("base64"),
  };
  if (format === "json") {
    if (!text.endsWith(JSON_END)) throw new Error("a JSON report ends with its top-level object's brace");
    return `${text.slice(0, -JSON_END.length)}${JSON_MEMBER}${JSON.stringify(block)}${JSON_END}`;
  }
  if (!text.endsWith("\n")) throw new Error("a report ends with a newline");
  return `${text}${COMMENT_PREFIX}${JSON.stringify(block)}${COMMENT_SUFFIX}\n`;
}

export type SignatureCheck =
  | { signed: false; text: string }
  | {
      signed: true;
      /** Whether the signature matches the bytes and the embedded key. */
      valid: boolean;
      fingerprint: string;
      /** Whether the embedded key is the pinned one (undefined when none was given). */
      pinned?: boolean;
      /** The report as it was before signing (what the signature covers). */
      text: string;
      /** Why the signature block itself could not be read. */
      malformed?: string;
    };

/**
 * Checks a report file's signature. Unsigned: `signed: false`. A signature block that cannot be read is
 * `valid: false` with `malformed`. With `pinned`, the embedded key must also be that key.
 */
export function checkReportSignature(file: string, pinned?: KeyObject): SignatureCheck {
  const found = splitSignature(file);
  if (found === undefined) return { signed: false, text: file };
  const { text, blockText } = found;
  const malformed = (why: string, fingerprint = "") =>
    ({ signed: true, valid: false, fingerprint, text, malformed: why }) as const;
  let block: Partial<SignatureBlock>;
  try {
    block = JSON.parse(blockText) as Partial<SignatureBlock>;
  } catch {
    return malformed("the signature block is not JSON");
  }
  if (
    block.algorithm !== "ed25519" ||
    typeof block.publicKey !== "string" ||
    typeof block.signature !== "string"
  ) {
    return malformed(
      "the signature block lacks its algorithm (ed25519), public key or signature",
      typeof block.fingerprint === "string" ? block.fingerprint : "",
    );
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(block.publicKey, "base64"), format: "der", type: "spki" });
    if (key.asymmetricKeyType !== "ed25519") throw new Error("not ed25519");
  } catch {
    return malformed("the embedded public key is not an Ed25519 key");
  }
  const fingerprint = keyFingerprint(key);
  const valid =
    block.fingerprint === fingerprint &&
    verify(null, Buffer.from(text, "utf8"), key, Buffer.from(block.signature, "base64"));
  return {
    signed: true,
    valid,
    fingerprint,
    ...(pinned !== undefined ? { pinned: keyFingerprint(pinned) === fingerprint } : {}),
    text,
  };
}

/** The signed text and the signature block's JSON, or undefined for an unsigned file. */
function splitSignature(file: string): { text: string; blockText: string } | undefined {
  if (file.endsWith(`${COMMENT_SUFFIX}\n`)) {
    const start = file.lastIndexOf("\n", file.length - 2) + 1;
    const line = file.slice(start, -1);
    if (line.startsWith(COMMENT_PREFIX)) {
      return {
        text: file.slice(0, start),
        blockText: line.slice(COMMENT_PREFIX.length, -COMMENT_SUFFIX.length),
      };
    }
  }
  if (file.endsWith(JSON_END)) {
    const at = file.lastIndexOf(JSON_MEMBER);
    if (at >= 0) {
      const blockText = file.slice(at + JSON_MEMBER.length, -JSON_END.length);
      if (!blockText.includes("\n")) return { text: `${file.slice(0, at)}${JSON_END}`, blockText };
    }
  }
  return undefined;
}
