import { createHash } from "node:crypto";
import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";

import { BulwarkError, hasCode } from "../../src/core/errors.js";
import {
  addToken,
  findToken,
  generateToken,
  hashToken,
  loadTokens,
  parseTokens,
  type StoredToken,
  type TokenKind,
} from "../../src/core/tokens.js";

// Counts the constant-time comparisons findToken makes, while still comparing for real.
const compared = vi.hoisted(() => ({ calls: 0 }));
vi.mock("node:crypto", async (importOriginal) => {
  const actual = await importOriginal<typeof import("node:crypto")>();
  return {
    ...actual,
    timingSafeEqual: (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView): boolean => {
      compared.calls++;
      return actual.timingSafeEqual(a, b);
    },
  };
});

type Role = "read" | "operate" | "admin";
const KIND: TokenKind<Role> = {
  roles: ["read", "operate", "admin"],
  prefix: "bwd_",
  addHint: "bulwark daemon token add --tokens FILE --name NAME --role read",
};

const sha = (text: string): string => createHash("sha256").update(text).digest("hex");

/** The error a call throws (sync or async), to look at its message and hint together. */
async function failure(f: () => unknown): Promise<BulwarkError> {
  try {
    await f();
  } catch (err) {
    if (err instanceof BulwarkError) return err;
    throw err;
  }
  throw new Error("expected a failure");
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bulwark-core-tokens-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("generateToken and hashToken", () => {
  it("makes prefixed, long, distinct tokens", () => {
    const a = generateToken(KIND);
    const b = generateToken(KIND);
    expect(a).toMatch(/^bwd_[A-Za-z0-9_-]{43}$/);
    expect(a).not.toBe(b);
    expect(generateToken({ prefix: "bwv_" })).toMatch(/^bwv_/);
  });

  it("hashes with SHA-256 as lowercase hex", () => {
    expect(hashToken("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });
});

describe("findToken", () => {
  const t1 = "bwd_one";
  const t2 = "bwd_two";
  const tokens: StoredToken<Role>[] = [
    { name: "one", sha256: sha(t1), role: "read" },
    { name: "two", sha256: sha(t2), role: "admin" },
    { name: "again", sha256: sha(t1), role: "admin" },
    { name: "short", sha256: "abcd", role: "admin" },
  ];
  beforeEach(() => {
    compared.calls = 0;
  });

  it("finds the entry by its hash, the first one when a hash is repeated", () => {
    expect(findToken(tokens, t2)?.name).toBe("two");
    expect(findToken(tokens, t1)).toEqual(tokens[0]);
    expect(findToken(tokens, "bwd_nobody")).toBeUndefined();
    expect(findToken([], t1)).toBeUndefined();
  });

  it("compares against every well-formed entry whatever matched, and skips malformed ones without throwing", () => {
    findToken(tokens, t1);
    expect(compared.calls).toBe(3);
    compared.calls = 0;
    findToken(tokens, "bwd_nobody");
    expect(compared.calls).toBe(3);
  });
});

describe("parseTokens", () => {
  const hash = "a".repeat(64);

  it("accepts every role of the kind", () => {
    const value = [
      { name: "r", sha256: hash, role: "read" },
      { name: "o.p@x-1", sha256: hash, role: "operate" },
      { name: "A", sha256: hash, role: "admin", extra: "ignored" },
    ];
    expect(parseTokens(KIND, value, "t.json")).toEqual([
      { name: "r", sha256: hash, role: "read" },
      { name: "o.p@x-1", sha256: hash, role: "operate" },
      { name: "A", sha256: hash, role: "admin" },
    ]);
  });

  it("names the file, the entry and the rule broken; hints name the kind's command", async () => {
    const notArray = await failure(() => parseTokens(KIND, { tokens: [] }, "t.json"));
    expect(notArray.message).toBe("t.json: expected a JSON array of tokens");
    expect(notArray.hint).toBe(`create it with \`${KIND.addHint}\``);
    expect(notArray.code).toBe("CONFIG_INVALID");

    expect((await failure(() => parseTokens(KIND, [null], "t.json"))).message).toBe(
      't.json: entry 0: "name" must be 1-64 letters, digits or ._@-',
    );
    expect(
      (await failure(() => parseTokens(KIND, [{ name: "-x", sha256: hash, role: "read" }], "t.json")))
        .message,
    ).toMatch(/entry 0: "name"/);
    expect(
      (
        await failure(() =>
          parseTokens(
            KIND,
            [
              { name: "a", sha256: hash, role: "read" },
              { name: "a", sha256: hash, role: "read" },
            ],
            "t.json",
          ),
        )
      ).message,
    ).toBe('t.json: entry 1: name "a" is repeated');

    const badHash = await failure(() =>
      parseTokens(KIND, [{ name: "a", sha256: "A".repeat(64), role: "read" }], "t.json"),
    );
    expect(badHash.message).toBe('t.json: entry 0 (a): "sha256" must be 64 lowercase hex digits');
    expect(badHash.hint).toBe(
      "the file stores hashes of tokens, never tokens; add tokens with `bulwark daemon token add`",
    );

    expect(
      (await failure(() => parseTokens(KIND, [{ name: "a", sha256: hash, role: "root" }], "t.json"))).message,
    ).toBe('t.json: entry 0 (a): "role" must be "read", "operate" or "admin"');
  });

  it("names the kind's own short command when it has one", async () => {
    const kind: TokenKind<Role> = { ...KIND, addCommand: "bulwark api-token add" };
    const err = await failure(() =>
      parseTokens(kind, [{ name: "a", sha256: "xyz", role: "read" }], "t.json"),
    );
    expect(err.hint).toBe(
      "the file stores hashes of tokens, never tokens; add tokens with `bulwark api-token add`",
    );
  });

  it("lists two roles with a plain 'or', as the vault always has", async () => {
    const vault: TokenKind<"append-only" | "admin"> = { ...KIND, roles: ["append-only", "admin"] };
    const err = await failure(() => parseTokens(vault, [{ name: "a", sha256: hash, role: 1 }], "v.json"));
    expect(err.message).toBe('v.json: entry 0 (a): "role" must be "append-only" or "admin"');
  });
});

describe("loadTokens and addToken", () => {
  it("adds tokens that exist only as hashes in a 0600 file, and loads them back", async () => {
    const file = join(dir, "add.json");
    const reader = await addToken(KIND, file, "reader", "read");
    const admin = await addToken(KIND, file, "boss", "admin");
    expect(reader).toMatch(/^bwd_/);
    const text = await readFile(file, "utf8");
    expect(text).not.toContain(reader);
    expect(text).not.toContain(admin);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const loaded = await loadTokens(KIND, file);
    expect(loaded).toEqual([
      { name: "reader", sha256: hashToken(reader), role: "read" },
      { name: "boss", sha256: hashToken(admin), role: "admin" },
    ]);
    expect(findToken(loaded, admin)?.name).toBe("boss");
    // Nothing of the atomic replace is left behind.
    expect((await readdir(dir)).filter((f) => f.startsWith(".tmp-tokens-"))).toEqual([]);
  });

  it("makes a file that was readable by others 0600 when it replaces it", async () => {
    const file = join(dir, "open.json");
    await writeFile(file, "[]\n");
    await chmod(file, 0o644);
    await addToken(KIND, file, "x", "operate");
    expect((await stat(file)).mode & 0o777).toBe(0o600);
  });

  it("refuses a repeated name, a bad name and a role outside the kind, leaving the file as it was", async () => {
    const file = join(dir, "refuse.json");
    await addToken(KIND, file, "web", "read");
    const before = await readFile(file, "utf8");
    await expect(addToken(KIND, file, "web", "admin")).rejects.toSatisfy((e) => hasCode(e, "ALREADY_EXISTS"));
    const badName = await failure(() => addToken(KIND, file, "a b", "read"));
    expect(badName.code).toBe("USAGE");
    expect(badName.message).toBe('invalid token name "a b": use 1-64 letters, digits or ._@-');
    const badRole = await failure(() => addToken(KIND, file, "other", "root" as Role));
    expect(badRole.code).toBe("USAGE");
    expect(badRole.message).toBe('invalid role "root": use "read", "operate" or "admin"');
    expect(await readFile(file, "utf8")).toBe(before);
  });

  it("a missing file is an error unless allowed; a broken one always is", async () => {
    const missing = join(dir, "missing.json");
    expect(await loadTokens(KIND, missing, true)).toEqual([]);
    const err = await failure(() => loadTokens(KIND, missing));
    expect(err.code).toBe("CONFIG_INVALID");
    expect(err.message).toMatch(/^cannot read the tokens file .*missing\.json: .*ENOENT/);
    expect(err.hint).toContain(KIND.addHint);

    const broken = join(dir, "broken.json");
    await writeFile(broken, "[{");
    const bad = await failure(() => loadTokens(KIND, broken, true));
    expect(bad.message).toMatch(/broken\.json: not valid JSON/);
    // addToken does not overwrite a file it cannot read.
    await expect(addToken(KIND, broken, "x", "read")).rejects.toSatisfy((e) => hasCode(e, "CONFIG_INVALID"));
    expect(await readFile(broken, "utf8")).toBe("[{");

    const wrongShape = join(dir, "object.json");
    await writeFile(wrongShape, '{"name":"a"}');
    expect((await failure(() => loadTokens(KIND, wrongShape))).message).toMatch(/expected a JSON array/);
  });

  it("reports a directory it cannot write into as IO", async () => {
    const err = await failure(() => addToken(KIND, join(dir, "no-such-dir", "t.json"), "x", "read"));
    expect(err.code).toBe("IO");
    expect(err.message).toMatch(/cannot write the tokens file/);
  });
});
