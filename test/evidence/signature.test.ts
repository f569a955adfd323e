/**
 * Signed reports: the signature covers the exact bytes of the unsigned report in each format (Markdown
 * and HTML with a trailing comment line, JSON with a last member, still one JSON document); any edit —
 * one byte of the body, the signature, the embedded key — fails; another key is caught by pinning; an
 * unsigned file is told apart; keys of the wrong type or unreadable PEM are clear errors.
 */
import { execFileSync } from "node:child_process";
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import {
  checkReportSignature,
  keyFingerprint,
  publicKeyFromPem,
  signReport,
  signingKeyFromPem,
} from "../../src/evidence/signature.js";
import { BulwarkError } from "../../src/core/errors.js";
import { thrown } from "../helpers/errors.js";

const dir = mkdtempSync(join(tmpdir(), "bulwark-sign-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const pem = (key: KeyObject): string => key.export({ type: "pkcs8", format: "pem" }).toString();
const ed = generateKeyPairSync("ed25519");
const other = generateKeyPairSync("ed25519");
const key = signingKeyFromPem(pem(ed.privateKey), "file:test.pem");

const BODIES = {
  md: "# Bulwark drill report\n\n| Result | PASS |\n",
  html: "<!DOCTYPE html>\n<html><body><p>PASS</p></body>\n</html>\n",
  json:
    JSON.stringify({ format: "bulwark-evidence-report/1", records: [{ id: 1, result: "pass" }] }, null, 2) +
    "\n",
} as const;

describe("signed reports", () => {
  it.each(Object.entries(BODIES) as ["md" | "html" | "json", string][])(
    "%s: valid as signed; the unsigned bytes come back; one edited byte fails",
    (format, body) => {
      const signed = signReport(body, format, key);
      expect(signed.startsWith(format === "json" ? body.slice(0, -3) : body)).toBe(true);
      const ok = checkReportSignature(signed, ed.publicKey);
      expect(ok).toMatchObject({ signed: true, valid: true, pinned: true, text: body });
      if (format === "json") {
        const doc = JSON.parse(signed) as { records: unknown[]; signature: { fingerprint: string } };
        expect(doc.records).toHaveLength(1);
        expect(doc.signature.fingerprint).toBe(keyFingerprint(ed.publicKey));
      } else {
        expect(signed.split("\n").at(-2)).toMatch(/^<!-- bulwark-signature \{.*\} -->$/);
      }
      const edited = signed.replace("pass", "fail").replace("PASS", "FAIL");
      expect(edited).not.toBe(signed);
      expect(checkReportSignature(edited)).toMatchObject({ signed: true, valid: false });
      // An edit that leaves the body alone but touches the signature fails too.
      const sig = /"signature":"([^"]+)"/.exec(signed)![1]!;
      const flipped = sig[0] === "A" ? `B${sig.slice(1)}` : `A${sig.slice(1)}`;
      expect(checkReportSignature(signed.replace(sig, flipped))).toMatchObject({ valid: false });
    },
  );

  it("another key: valid on its own, but not the pinned one; a replaced embedded key fails", () => {
    const mine = signReport(BODIES.md, "md", key);
    const theirs = signReport(BODIES.md, "md", other.privateKey);
    expect(checkReportSignature(theirs, ed.publicKey)).toMatchObject({ valid: true, pinned: false });
    expect(checkReportSignature(theirs)).toMatchObject({
      valid: true,
      fingerprint: keyFingerprint(other.publicKey),
    });
    // Their key in my block: the fingerprint no longer matches and the signature not either.
    const theirBlock = JSON.parse(/\{.*\}/.exec(theirs.split("\n").at(-2)!)![0]) as { publicKey: string };
    const myBlock = JSON.parse(/\{.*\}/.exec(mine.split("\n").at(-2)!)![0]) as { publicKey: string };
    expect(checkReportSignature(mine.replace(myBlock.publicKey, theirBlock.publicKey))).toMatchObject({
      valid: false,
    });
  });

  it("an unsigned report, a truncated signature block and a malformed one are told apart", () => {
    expect(checkReportSignature(BODIES.md)).toEqual({ signed: false, text: BODIES.md });
    expect(checkReportSignature(BODIES.json)).toEqual({ signed: false, text: BODIES.json });
    const signed = signReport(BODIES.html, "html", key);
    // Everything after the body removed: unsigned again, which `report verify` says (exit 22).
    expect(checkReportSignature(signed.slice(0, BODIES.html.length)).signed).toBe(false);
    expect(checkReportSignature(`${BODIES.html}<!-- bulwark-signature {not json} -->\n`)).toMatchObject({
      signed: true,
      valid: false,
      malformed: "the signature block is not JSON",
    });
    expect(
      checkReportSignature(`${BODIES.md}<!-- bulwark-signature {"algorithm":"rsa","signature":"x"} -->\n`),
    ).toMatchObject({ valid: false, malformed: expect.stringContaining("ed25519") as string });
  });

  it("fingerprints are OpenSSH-style SHA256 of the public key, the same from either half", () => {
    expect(keyFingerprint(ed.publicKey)).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
    expect(keyFingerprint(key)).toBe(keyFingerprint(ed.publicKey));
  });
});

describe("keys", () => {
  it("an openssl genpkey -algorithm ed25519 key is accepted, and its public half pins", () => {
    const file = join(dir, "openssl.pem");
    execFileSync("openssl", ["genpkey", "-algorithm", "ed25519", "-out", file]);
    const pub = execFileSync("openssl", ["pkey", "-in", file, "-pubout"]).toString();
    const k = signingKeyFromPem(readFileSync(file, "utf8"), `file:${file}`);
    const signed = signReport(BODIES.md, "md", k);
    expect(checkReportSignature(signed, publicKeyFromPem(pub, "pub"))).toMatchObject({
      valid: true,
      pinned: true,
    });
  });

  it("a key of another type, a non-PEM file and an encrypted key are clear errors that never show the key", () => {
    const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const e1 = thrown(() => signingKeyFromPem(pem(rsa.privateKey), "file:/k/rsa.pem")) as BulwarkError;
    expect(e1).toBeInstanceOf(BulwarkError);
    expect(e1.message).toBe("the signing key file:/k/rsa.pem is an rsa key; reports are signed with Ed25519");
    expect(e1.hint).toContain("openssl genpkey -algorithm ed25519");
    const e2 = thrown(() => signingKeyFromPem("hello\n", "env:KEY")) as BulwarkError;
    expect(e2.message).toBe("the signing key env:KEY is not a PEM private key");
    const encrypted = ed.privateKey
      .export({ type: "pkcs8", format: "pem", cipher: "aes-256-cbc", passphrase: "pw" })
      .toString();
    const e3 = thrown(() => signingKeyFromPem(encrypted, "file:/k/enc.pem")) as BulwarkError;
    expect(e3.message).toBe("the signing key file:/k/enc.pem is encrypted with a passphrase");
    for (const e of [e1, e2, e3]) expect(`${e.message} ${e.hint}`).not.toContain("PRIVATE KEY");
    expect((thrown(() => publicKeyFromPem("x", "the public key p.pem")) as BulwarkError).message).toBe(
      "the public key p.pem is not a PEM public key",
    );
    expect(
      (
        thrown(() =>
          publicKeyFromPem(rsa.publicKey.export({ type: "spki", format: "pem" }).toString(), "p"),
        ) as BulwarkError
      ).message,
    ).toBe("p is an rsa key; reports are signed with Ed25519");
  });
});
