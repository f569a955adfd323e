/**
 * The `rest:` backend against the vault server, both in this process on 127.0.0.1: the conformance suite
 * with an admin token, then what the vault adds (roles, immutable files, digests, limits, errors).
 * test/e2e/vault.test.ts runs the built server in its own network namespace.
 */

import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, stat, unlink, utimes, writeFile } from "node:fs/promises";
import { createServer, request } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, type TestContext } from "vitest";

import { bufferSource, type FileHandle } from "../../src/backend/backend.js";
import { openRestBackend, RestBackend } from "../../src/backend/rest/rest-backend.js";
import { openBackendAt } from "../../src/backend/registry.js";
import { describeBackend } from "../../src/backend/testing/conformance.js";
import { hasCode, isNotFound, type BulwarkError, type ErrorCode } from "../../src/core/errors.js";
import { PackWriter } from "../../src/repository/pack-writer.js";
import { RepoLock } from "../../src/repository/lock.js";
import { Repository } from "../../src/repository/repository.js";
import { isImmutable } from "../../src/vault/immutable.js";
import { startVaultServer, type VaultServer, type VaultServerOptions } from "../../src/vault/server.js";
import { parseListen } from "../../src/cli/commands/serve-repo.js";
import { addToken, generateToken, hashToken, loadTokens, type VaultToken } from "../../src/vault/tokens.js";
import { chattrCapableDir, type ChattrDir } from "./chattr-dir.js";

const isRoot = process.getuid?.() === 0;
const WEAK_KDF = { N: 2 ** 10, r: 8, p: 1 };

interface Vault {
  readonly dir: string;
  readonly repoDir: string;
  readonly server: VaultServer;
  readonly admin: string;
  readonly appendOnly: string;
  readonly logs: string[];
  stop(): Promise<void>;
}

async function startVault(options: Partial<VaultServerOptions> = {}, parent = tmpdir()): Promise<Vault> {
  const dir = await mkdtemp(join(parent, "bulwark-rest-"));
  const repoDir = join(dir, "repo");
  const admin = generateToken();
  const appendOnly = generateToken();
  const tokens: VaultToken[] = [
    { name: "ops", sha256: hashToken(admin), role: "admin" },
    { name: "web1", sha256: hashToken(appendOnly), role: "append-only" },
  ];
  const logs: string[] = [];
  const server = await startVaultServer({
    path: repoDir,
    init: true,
    port: 0,
    tokens,
    logger: { info: (l) => logs.push(l), warn: (l) => logs.push(`warning: ${l}`) },
    ...options,
  });
  return {
    dir,
    repoDir,
    server,
    admin,
    appendOnly,
    logs,
    stop: async () => {
      await server.close();
      await removeDir(dir);
    },
  };
}

/** Immutable files survive `rm -rf`, even as root: clear the flag first. */
async function removeDir(dir: string): Promise<void> {
  if (isRoot) {
    try {
      execFileSync("chattr", ["-R", "-i", dir], { stdio: "ignore" });
    } catch {
      // no chattr, or a file system without the flag: nothing was made immutable
    }
  }
  await rm(dir, { recursive: true, force: true });
}

async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<Error> {
  const err: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}, but it succeeded`).toBeInstanceOf(Error);
  expect(hasCode(err, code), `expected ${code}, got ${String(err)}`).toBe(true);
  return err as Error;
}

const hex = (): string => randomBytes(32).toString("hex");

describeBackend("rest (vault server, admin token)", async () => {
  const vault = await startVault();
  const backend = await openRestBackend(`rest:${vault.server.url}`, { token: vault.admin });
  return { backend, cleanup: () => vault.stop() };
});

// Retention 0: a new file is not retained (so the generic tests may delete it), and the retention tests run
// against what clients extend.
describeBackend("rest (vault with retention, admin token)", async () => {
  const vault = await startVault({ retentionDays: 0 });
  const backend = await openRestBackend(`rest:${vault.server.url}`, { token: vault.admin });
  expect(backend.capabilities.retentionModes).toEqual(["compliance"]);
  return { backend, cleanup: () => vault.stop() };
});

describe("vault server and rest backend", () => {
  let vault: Vault;
  let admin: RestBackend;
  let appendOnly: RestBackend;

  beforeEach(async () => {
    vault = await startVault();
    admin = await openRestBackend(`rest:${vault.server.url}`, { token: vault.admin });
    appendOnly = await openRestBackend(`rest:${vault.server.url}`, { token: vault.appendOnly });
  });

  afterEach(async () => {
    await admin.close();
    await appendOnly.close();
    await vault.stop();
  });

  it("an append-only token creates and reads files, but may not replace or delete them", async () => {
    const originals = new Map<FileHandle, Buffer>();
    for (const type of ["pack", "index", "snapshot", "key", "config"] as const) {
      const h: FileHandle = { type, name: type === "config" ? "" : hex() };
      const data = randomBytes(1000);
      await appendOnly.save(h, bufferSource(data));
      originals.set(h, data);
      expect((await appendOnly.load(h)).equals(data)).toBe(true);

      const replace = await expectCode(appendOnly.save(h, bufferSource(randomBytes(10))), "RETENTION_LOCKED");
      expect(replace.message).toContain("was refused by the vault: this token is append-only");
      await expectCode(appendOnly.remove(h), "RETENTION_LOCKED");
      // ifAbsent keeps its meaning: the file exists.
      await expectCode(
        appendOnly.save(h, bufferSource(randomBytes(10)), { ifAbsent: true }),
        "ALREADY_EXISTS",
      );
    }
    for (const [h, data] of originals) {
      expect((await admin.load(h)).equals(data), h.type).toBe(true);
    }
    expect(vault.logs.some((l) => l.includes("403") && l.includes("token=web1"))).toBe(true);
  });

  it("an append-only token replaces and deletes lock files", async () => {
    const h: FileHandle = { type: "lock", name: hex() };
    await appendOnly.save(h, bufferSource(randomBytes(100)));
    const replacement = randomBytes(50);
    await appendOnly.save(h, bufferSource(replacement));
    expect((await appendOnly.load(h)).equals(replacement)).toBe(true);
    await appendOnly.remove(h);
    await expectCode(appendOnly.stat(h), "NOT_FOUND");
  });

  it("an admin token deletes and replaces what append-only may not", async () => {
    const h: FileHandle = { type: "snapshot", name: hex() };
    await appendOnly.save(h, bufferSource(randomBytes(100)));
    const replacement = randomBytes(70);
    await admin.save(h, bufferSource(replacement));
    expect((await appendOnly.load(h)).equals(replacement)).toBe(true);
    await admin.remove(h);
    await expectCode(appendOnly.stat(h), "NOT_FOUND");
  });

  it.skipIf(!isRoot)(
    "as root, stored files except locks are immutable until an admin deletes them",
    async () => {
      expect(vault.server.immutable).toBe(true);
      const pack: FileHandle = { type: "pack", name: hex() };
      const lock: FileHandle = { type: "lock", name: hex() };
      await appendOnly.save(pack, bufferSource(randomBytes(100)));
      await appendOnly.save(lock, bufferSource(randomBytes(100)));
      const packPath = join(vault.repoDir, "data", pack.name.slice(0, 2), pack.name);
      expect(await isImmutable(packPath)).toBe(true);
      expect(await isImmutable(join(vault.repoDir, "locks", lock.name))).toBe(false);
      // Not even root can remove it behind the vault's back.
      await expect(unlink(packPath)).rejects.toThrow(/EPERM|operation not permitted/i);
      // An admin replace keeps the new file immutable.
      await admin.save(pack, bufferSource(randomBytes(30)));
      expect(await isImmutable(packPath)).toBe(true);
      expect((await stat(packPath)).size).toBe(30);
      await admin.remove(pack);
      await expectCode(admin.stat(pack), "NOT_FOUND");
    },
  );

  it("a wrong or missing token is AUTH, and no message or log line shows a token", async () => {
    const wrong = generateToken();
    const err = await expectCode(openRestBackend(`rest:${vault.server.url}`, { token: wrong }), "AUTH");
    expect(err.message).toContain(vault.server.url);
    expect(err.message).not.toContain(wrong);
    const unchecked = new RestBackend(`rest:${vault.server.url}`, { token: wrong });
    await expectCode(unchecked.save({ type: "pack", name: hex() }, bufferSource(randomBytes(10))), "AUTH");
    await expectCode(collect(unchecked.list("pack")), "AUTH");
    await unchecked.close();
    expect(() => new RestBackend(`rest:${vault.server.url}`, {})).toThrow(/BULWARK_REST_TOKEN/);
    const fromEnv = await openBackendAt(`rest:${vault.server.url}`, {
      create: false,
      env: { BULWARK_REST_TOKEN: vault.appendOnly },
    });
    await fromEnv.close();
    for (const line of vault.logs) {
      for (const secret of [wrong, vault.admin, vault.appendOnly]) expect(line).not.toContain(secret);
    }
  });

  it("an unreachable vault is TRANSIENT and named, without the token", async () => {
    const url = vault.server.url;
    await vault.server.close();
    const err = await expectCode(openRestBackend(`rest:${url}`, { token: vault.admin }), "TRANSIENT");
    expect(err.message).toContain(`rest:${url}`);
    expect(err.message).not.toContain(vault.admin);
  });

  it("refuses a body whose digest does not match, and stores nothing", async () => {
    const name = hex();
    const body = randomBytes(5000);
    const status = await rawPost(vault.server.url, `data/${name}`, vault.admin, body, {
      "x-content-sha256": createHash("sha256").update("something else").digest("hex"),
    });
    expect(status).toBe(400);
    await expectCode(admin.stat({ type: "pack", name }), "NOT_FOUND");
    const missing = await rawPost(vault.server.url, `data/${name}`, vault.admin, body, {});
    expect(missing).toBe(400);
    const good = await rawPost(vault.server.url, `data/${name}`, vault.admin, body, {
      "x-content-sha256": createHash("sha256").update(body).digest("hex"),
    });
    expect(good).toBe(200);
    expect((await admin.load({ type: "pack", name })).equals(body)).toBe(true);
  });

  it("refuses a body over the size limit", async () => {
    const small = await startVault({ maxBodyBytes: 1024 });
    const backend = await openRestBackend(`rest:${small.server.url}`, { token: small.admin });
    try {
      const h: FileHandle = { type: "pack", name: hex() };
      const err = await expectCode(backend.save(h, bufferSource(randomBytes(4096))), "IO");
      expect(err.message).toContain("larger than the vault accepts");
      await backend.save(h, bufferSource(randomBytes(1024)));
      expect((await backend.stat(h)).size).toBe(1024);
    } finally {
      await backend.close();
      await small.stop();
    }
  });

  it("answers only the routes of the protocol", async () => {
    const url = vault.server.url;
    expect(await rawGet(url, "config", vault.admin)).toBe(404);
    expect(await rawGet(url, "nothing/", vault.admin)).toBe(404);
    expect(await rawGet(url, "data/../../etc/passwd", vault.admin)).toBe(404);
    expect(await rawGet(url, `data/${hex().toUpperCase()}`, vault.admin)).toBe(400);
    expect(await rawGet(url, "keys/", undefined)).toBe(401);
    expect(await rawGet(url, "keys/", vault.appendOnly)).toBe(200);
  });

  it("round-trips a repository with an append-only token: init, packs, index, locks, reopen", async () => {
    const repo = await Repository.init(appendOnly, "vault password", { kdf: WEAK_KDF, packSize: 64 * 1024 });
    const lock = await RepoLock.acquire(repo, false);
    const writer = new PackWriter(repo);
    const blobs = new Map<string, Buffer>();
    for (let i = 0; i < 40; i++) {
      const data = randomBytes(1000 + i * 997);
      blobs.set(await writer.addPlain("data", data), data);
    }
    await writer.flush();
    await repo.saveDocument("index", { version: 1, packs: writer.takeNewPacks() });
    await lock.release(); // deleting a lock is what append-only allows
    expect(await collect(appendOnly.list("lock"))).toEqual([]);

    const reader = await openRestBackend(`rest:${vault.server.url}`, { token: vault.appendOnly });
    try {
      const reopened = await Repository.open(reader, "vault password");
      await reopened.loadIndex();
      for (const [id, data] of blobs) expect((await reopened.loadBlob(id)).equals(data)).toBe(true);
      const [someIndex] = await reopened.listNames("index");
      await expectCode(reader.remove({ type: "index", name: someIndex ?? "" }), "RETENTION_LOCKED");
    } finally {
      await reader.close();
    }
  });
});

describe("vault digests", () => {
  let vault: Vault;
  let admin: RestBackend;
  let appendOnly: RestBackend;

  beforeEach(async () => {
    // Not immutable, so the test can damage a stored file behind the vault's back as bit rot would.
    vault = await startVault({ immutable: "off" });
    admin = await openRestBackend(`rest:${vault.server.url}`, { token: vault.admin });
    appendOnly = await openRestBackend(`rest:${vault.server.url}`, { token: vault.appendOnly });
  });

  afterEach(async () => {
    await admin.close();
    await appendOnly.close();
    await vault.stop();
  });

  it("either role gets a stored file's SHA-256 from the bytes on the vault's disk, logged like any request", async () => {
    expect(admin.digest).toBeDefined();
    expect(appendOnly.digest).toBeDefined();
    const h: FileHandle = { type: "pack", name: hex() };
    const data = randomBytes(3 * 1024 * 1024 + 17);
    await appendOnly.save(h, bufferSource(data));
    const expected = { sha256: createHash("sha256").update(data).digest("hex"), size: data.length };
    expect(await appendOnly.digest?.(h)).toEqual(expected);
    expect(await admin.digest?.(h)).toEqual(expected);
    const config: FileHandle = { type: "config", name: "" };
    await appendOnly.save(config, bufferSource(Buffer.from("config bytes")));
    expect((await appendOnly.digest?.(config))?.sha256).toBe(
      createHash("sha256").update("config bytes").digest("hex"),
    );

    const raw = await rawExchange(vault.server.url, "GET", `data/${h.name}/sha256`, vault.appendOnly);
    expect(raw.status).toBe(200);
    expect(raw.headers["content-type"]).toBe("application/json");
    expect(raw.headers["x-content-sha256"]).toBe(expected.sha256);
    expect(JSON.parse(raw.body)).toEqual(expected);
    expect(raw.headers["x-bulwark-file-digest"]).toBe("sha256");

    // Bit rot on the vault's disk: the same size, one byte changed. The digest sees it; stat cannot.
    const path = join(vault.repoDir, "data", h.name.slice(0, 2), h.name);
    const bytes = await readFile(path);
    bytes[1_000_000] = (bytes[1_000_000] ?? 0) ^ 0x01;
    await writeFile(path, bytes);
    expect((await admin.stat(h)).size).toBe(data.length);
    const rotten = await appendOnly.digest?.(h);
    expect(rotten?.size).toBe(data.length);
    expect(rotten?.sha256).toBe(createHash("sha256").update(bytes).digest("hex"));
    expect(rotten?.sha256).not.toBe(expected.sha256);

    const logged = vault.logs.filter((l) => l.startsWith(`GET /data/${h.name}/sha256 200 `));
    expect(logged.some((l) => l.endsWith("token=web1"))).toBe(true);
    expect(logged.some((l) => l.endsWith("token=ops"))).toBe(true);
  });

  it("a missing file is 404 (NOT_FOUND), another method 405, a bad name 400, no token 401", async () => {
    const url = vault.server.url;
    const missing: FileHandle = { type: "snapshot", name: hex() };
    await expectCode(appendOnly.digest!(missing), "NOT_FOUND");
    await expectCode(admin.digest!({ type: "config", name: "" }), "NOT_FOUND");
    expect((await rawExchange(url, "GET", `snapshots/${missing.name}/sha256`, vault.admin)).status).toBe(404);

    const h: FileHandle = { type: "index", name: hex() };
    await admin.save(h, bufferSource(randomBytes(100)));
    for (const method of ["HEAD", "POST", "DELETE", "PATCH", "PUT"]) {
      const answer = await rawExchange(url, method, `index/${h.name}/sha256`, vault.admin);
      expect(answer.status, method).toBe(405);
      expect(answer.headers.allow, method).toBe("GET");
    }
    expect((await admin.stat(h)).size).toBe(100); // a refused DELETE deleted nothing
    expect((await rawExchange(url, "GET", `index/${h.name.toUpperCase()}/sha256`, vault.admin)).status).toBe(
      400,
    );
    expect((await rawExchange(url, "GET", "index/abc/sha256", vault.appendOnly)).status).toBe(400);
    expect((await rawExchange(url, "GET", "index//sha256", vault.appendOnly)).status).toBe(400);
    expect((await rawExchange(url, "GET", `index/${h.name}/md5`, vault.admin)).status).toBe(404);
    expect((await rawExchange(url, "GET", `nothing/${h.name}/sha256`, vault.admin)).status).toBe(404);
    expect((await rawExchange(url, "GET", `index/${h.name}/sha256`, undefined)).status).toBe(401);
  });

  it("the registry's wrappers (retry, read-only) pass the digest on; a vault that does not offer it gets none", async () => {
    const h: FileHandle = { type: "pack", name: hex() };
    const data = randomBytes(1000);
    await admin.save(h, bufferSource(data));
    const wrapped = await openBackendAt(`rest:${vault.server.url}`, {
      create: false,
      readOnly: true,
      env: { BULWARK_REST_TOKEN: vault.appendOnly },
    });
    try {
      expect((await wrapped.digest?.(h))?.sha256).toBe(createHash("sha256").update(data).digest("hex"));
    } finally {
      await wrapped.close();
    }
    // An older vault: it answers the probe but does not say it hashes files, so the client offers no
    // digest rather than download to fake one.
    const old = createServer((req, res) => {
      res.writeHead(req.url === "/config" ? 404 : 500, { "x-bulwark-token-role": "admin" });
      res.end();
    });
    await new Promise<void>((resolve) => old.listen(0, "127.0.0.1", resolve));
    const port = (old.address() as AddressInfo).port;
    const client = await openRestBackend(`rest:http://127.0.0.1:${port}/`, { token: vault.admin });
    try {
      expect(client.digest).toBeUndefined();
    } finally {
      await client.close();
      await new Promise<void>((resolve) => old.close(() => resolve()));
    }
  });
});

describe("vault retention", () => {
  it("without --retention-days the vault declares none and refuses to extend one", async () => {
    const vault = await startVault();
    const backend = await openRestBackend(`rest:${vault.server.url}`, { token: vault.appendOnly });
    try {
      expect(vault.server.retentionDays).toBeUndefined();
      expect(backend.capabilities.retentionModes).toEqual([]);
      expect(backend.getRetention).toBeUndefined();
      expect(backend.extendRetention).toBeUndefined();
      const h: FileHandle = { type: "pack", name: hex() };
      await backend.save(h, bufferSource(randomBytes(10)));
      expect(await rawRequest(vault.server.url, "PATCH", `data/${h.name}`, vault.admin)).toMatchObject({
        status: 405,
      });
    } finally {
      await backend.close();
      await vault.stop();
    }
  });

  it("each file is retained from its write: no token deletes or replaces it before, and the error says until when", async () => {
    const vault = await startVault({ retentionDays: 2 });
    const admin = await openRestBackend(`rest:${vault.server.url}`, { token: vault.admin });
    const appendOnly = await openRestBackend(`rest:${vault.server.url}`, { token: vault.appendOnly });
    try {
      expect(admin.capabilities.retentionModes).toEqual(["compliance"]);
      expect(appendOnly.retentionDays).toBe(2);
      const h: FileHandle = { type: "snapshot", name: hex() };
      const data = randomBytes(300);
      const before = Date.now();
      await appendOnly.save(h, bufferSource(data));
      const retention = await appendOnly.getRetention?.(h);
      expect(retention?.mode).toBe("compliance");
      const until = retention?.until.getTime() ?? 0;
      expect(until).toBeGreaterThanOrEqual(before + 2 * 86_400_000 - 1000);
      expect(until).toBeLessThanOrEqual(Date.now() + 2 * 86_400_000 + 1000);

      const del = await expectCode(admin.remove(h), "RETENTION_LOCKED");
      expect(del.message).toContain(`rest:${vault.server.url}`);
      expect(del.message).toContain(`retained until ${new Date(until).toISOString()}`);
      expect((del as BulwarkError).hint).toContain("releases it after");
      await expectCode(admin.save(h, bufferSource(randomBytes(5))), "RETENTION_LOCKED");
      const appendDel = await expectCode(appendOnly.remove(h), "RETENTION_LOCKED");
      expect(appendDel.message).toContain("append-only");
      expect((await admin.load(h)).equals(data)).toBe(true);

      // Locks are never retained: append-only still replaces and deletes them.
      const lock: FileHandle = { type: "lock", name: hex() };
      await appendOnly.save(lock, bufferSource(randomBytes(10)));
      expect(await appendOnly.getRetention?.(lock)).toBeUndefined();
      await appendOnly.remove(lock);
      for (const secret of [vault.admin, vault.appendOnly]) {
        expect(del.message + appendDel.message).not.toContain(secret);
      }
    } finally {
      await admin.close();
      await appendOnly.close();
      await vault.stop();
    }
  });

  it("either token extends a retention, never shortens it; a lock or a bad date is refused", async () => {
    const vault = await startVault({ retentionDays: 1 });
    const appendOnly = await openRestBackend(`rest:${vault.server.url}`, { token: vault.appendOnly });
    try {
      const h: FileHandle = { type: "index", name: hex() };
      await appendOnly.save(h, bufferSource(randomBytes(10)));
      const first = (await appendOnly.getRetention?.(h))?.until.getTime() ?? 0;
      const later = new Date(Math.ceil(Date.now() / 1000) * 1000 + 5 * 86_400_000);
      await appendOnly.extendRetention?.(h, { mode: "compliance", until: later });
      expect((await appendOnly.getRetention?.(h))?.until.getTime()).toBe(later.getTime());
      // Asking for less than is in force changes nothing.
      await appendOnly.extendRetention?.(h, { mode: "governance", until: new Date(first) });
      expect((await appendOnly.getRetention?.(h))?.until.getTime()).toBe(later.getTime());
      const shorter = await rawRequest(vault.server.url, "PATCH", `index/${h.name}`, vault.admin, {
        "X-Bulwark-Retain-Until": new Date().toISOString(),
      });
      expect(shorter).toMatchObject({ status: 200, until: later.toISOString() });

      const lock: FileHandle = { type: "lock", name: hex() };
      await appendOnly.save(lock, bufferSource(randomBytes(10)));
      await expectCode(
        appendOnly.extendRetention!(lock, { mode: "compliance", until: later }),
        "INVALID_DATA",
      );
      expect(
        await rawRequest(vault.server.url, "PATCH", `index/${h.name}`, vault.admin, {
          "X-Bulwark-Retain-Until": "next tuesday",
        }),
      ).toMatchObject({ status: 400 });
      await expectCode(
        appendOnly.extendRetention!({ type: "pack", name: hex() }, { mode: "compliance", until: later }),
        "NOT_FOUND",
      );
    } finally {
      await appendOnly.close();
      await vault.stop();
    }
  });

  describe("immutable files and the sweep (root, a file system with chattr +i)", () => {
    let where: ChattrDir = { reason: "not probed yet" };
    beforeAll(async () => {
      where = await chattrCapableDir();
      if ("reason" in where && process.env.CI === "true") {
        throw new Error(`the vault's immutable retention cannot be tested under CI=true: ${where.reason}`);
      }
    }, 120_000);
    afterAll(async () => {
      if ("cleanup" in where) await where.cleanup();
    });
    const parent = (ctx: TestContext): string => {
      if ("reason" in where) ctx.skip(true, where.reason);
      return "dir" in where ? where.dir : "";
    };

    it("a file stays immutable while retained; the sweep alone releases it, then only an admin deletes it", async (ctx) => {
      const retentionMs = 3000;
      // No periodic sweep during the test: each one is run by hand.
      const options = { retentionDays: retentionMs / 86_400_000, sweepIntervalMs: 3_600_000 };
      const vault = await startVault(options, parent(ctx));
      const admin = await openRestBackend(`rest:${vault.server.url}`, { token: vault.admin });
      const appendOnly = await openRestBackend(`rest:${vault.server.url}`, { token: vault.appendOnly });
      try {
        expect(vault.server.immutable).toBe(true);
        const pack: FileHandle = { type: "pack", name: hex() };
        const data = randomBytes(1000);
        await appendOnly.save(pack, bufferSource(data));
        const path = join(vault.repoDir, "data", pack.name.slice(0, 2), pack.name);
        expect(await isImmutable(path)).toBe(true);
        await expect(unlink(path)).rejects.toThrow(/EPERM|operation not permitted/i);
        await expectCode(admin.remove(pack), "RETENTION_LOCKED");
        expect((await vault.server.sweep()).released).toBe(0);
        expect(await isImmutable(path)).toBe(true);

        const until = (await admin.getRetention?.(pack))?.until.getTime() ?? 0;
        await sleep(until - Date.now() + 50);
        // The retention has ended, but the flag stays until the vault releases it.
        expect(await admin.getRetention?.(pack)).toBeUndefined();
        expect(await isImmutable(path)).toBe(true);
        const swept = await vault.server.sweep();
        expect(swept).toMatchObject({ released: 1, protected: 0, failures: [] });
        expect(await isImmutable(path)).toBe(false);
        expect(vault.logs.some((l) => l.includes("sweep: released 1 files"))).toBe(true);

        // An append-only token can never delete, not even after the retention ended.
        await expectCode(appendOnly.remove(pack), "RETENTION_LOCKED");
        expect((await admin.load(pack)).equals(data)).toBe(true);
        await admin.remove(pack);
        await expectCode(admin.stat(pack), "NOT_FOUND");
      } finally {
        await admin.close();
        await appendOnly.close();
        await vault.stop();
      }
    });

    it("an extended retention protects the file again; a restart's sweep restores a lost flag", async (ctx) => {
      const vault = await startVault({ retentionDays: 0, sweepIntervalMs: 3_600_000 }, parent(ctx));
      const appendOnly = await openRestBackend(`rest:${vault.server.url}`, { token: vault.appendOnly });
      let restarted: VaultServer | undefined;
      try {
        // Retention 0: a new file is not retained, so it is not made immutable.
        const h: FileHandle = { type: "index", name: hex() };
        await appendOnly.save(h, bufferSource(randomBytes(100)));
        const path = join(vault.repoDir, "index", h.name);
        expect(await isImmutable(path)).toBe(false);
        const until = new Date(Date.now() + 3_600_000);
        await appendOnly.extendRetention?.(h, { mode: "compliance", until });
        expect(await isImmutable(path)).toBe(true);
        expect((await appendOnly.getRetention?.(h))?.until.toISOString()).toBe(until.toISOString());

        // Someone on the vault host clears the flag; the start-up sweep of the next run sets it again.
        execFileSync("chattr", ["-i", path]);
        await vault.server.close();
        restarted = await startVaultServer({
          path: vault.repoDir,
          port: 0,
          tokens: [{ name: "ops", sha256: hashToken(vault.admin), role: "admin" }],
          retentionDays: 0,
          sweepIntervalMs: 3_600_000,
        });
        const swept = await restarted.sweep();
        expect(await isImmutable(path)).toBe(true);
        // The start-up sweep may have got there first; between the two, exactly one protected it.
        expect(swept.protected).toBeLessThanOrEqual(1);
        expect(swept.failures).toEqual([]);
      } finally {
        await appendOnly.close();
        await restarted?.close();
        await vault.stop();
      }
    });

    it("the periodic sweep releases files on its own, and removes stale temp files", async (ctx) => {
      const vault = await startVault({ retentionDays: 1500 / 86_400_000, sweepIntervalMs: 500 }, parent(ctx));
      const appendOnly = await openRestBackend(`rest:${vault.server.url}`, { token: vault.appendOnly });
      try {
        const h: FileHandle = { type: "key", name: hex() };
        await appendOnly.save(h, bufferSource(randomBytes(100)));
        const path = join(vault.repoDir, "keys", h.name);
        // An upload cut off by a crash, two hours ago.
        const stale = join(vault.repoDir, "data", "ab", ".tmp-stale-upload");
        await writeFile(stale, "partial");
        const past = (Date.now() - 2 * 3_600_000) / 1000;
        await utimes(stale, past, past);
        expect(await isImmutable(path)).toBe(true);
        const deadline = Date.now() + 20_000;
        while ((await isImmutable(path)) && Date.now() < deadline) await sleep(200);
        expect(await isImmutable(path)).toBe(false);
        await expect(stat(stale)).rejects.toThrow(/ENOENT/);
      } finally {
        await appendOnly.close();
        await vault.stop();
      }
    });
  });
});

describe("vault tokens", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "bulwark-tokens-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("token add stores only a hash, in a 0600 file, and refuses a repeated name", async () => {
    const file = join(dir, "tokens.json");
    const token = await addToken(file, "web1", "append-only");
    const text = await readFile(file, "utf8");
    expect(text).not.toContain(token);
    expect(await loadTokens(file)).toEqual([{ name: "web1", sha256: hashToken(token), role: "append-only" }]);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    await expect(addToken(file, "web1", "admin")).rejects.toSatisfy((e) => hasCode(e, "ALREADY_EXISTS"));
    await addToken(file, "ops", "admin");
    expect((await loadTokens(file)).map((t) => t.role)).toEqual(["append-only", "admin"]);
  });

  it("a vault started from a tokens file accepts its tokens", async () => {
    const file = join(dir, "served.json");
    const token = await addToken(file, "web2", "append-only");
    const vault = await startVault({ tokens: file });
    try {
      const backend = await openRestBackend(`rest:${vault.server.url}`, { token });
      await backend.save({ type: "key", name: hex() }, bufferSource(randomBytes(10)));
      await backend.close();
    } finally {
      await vault.stop();
    }
  });

  it("rejects malformed tokens files naming the entry", async () => {
    const { parseTokens } = await import("../../src/vault/tokens.js");
    expect(() => parseTokens([{ name: "a", sha256: "xyz", role: "admin" }], "t.json")).toThrow(/entry 0/);
    expect(() => parseTokens([{ name: "a", sha256: "a".repeat(64), role: "root" }], "t.json")).toThrow(
      /role/,
    );
    expect(() => parseTokens({}, "t.json")).toThrow(/array/);
  });

  it("parses listen addresses", () => {
    expect(parseListen("127.0.0.1:8000")).toEqual({ host: "127.0.0.1", port: 8000 });
    expect(parseListen("[::1]:9")).toEqual({ host: "::1", port: 9 });
    expect(parseListen("8000")).toEqual({ host: "127.0.0.1", port: 8000 });
    expect(() => parseListen("host")).toThrow(/HOST:PORT/);
  });

  it("NOT_FOUND is what a missing file gives through the predicates", async () => {
    const vault = await startVault();
    const backend = await openRestBackend(`rest:${vault.server.url}`, { token: vault.admin });
    try {
      const err: unknown = await backend.load({ type: "index", name: hex() }).catch((e: unknown) => e);
      expect(isNotFound(err)).toBe(true);
    } finally {
      await backend.close();
      await vault.stop();
    }
  });
});

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of iterable) items.push(item);
  return items;
}

function rawPost(
  base: string,
  path: string,
  token: string,
  body: Buffer,
  headers: Record<string, string>,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, base), {
      method: "POST",
      headers: { ...headers, Authorization: `Bearer ${token}`, "Content-Length": body.length },
    });
    req.on("response", (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", reject);
    req.end(body);
  });
}

function rawRequest(
  base: string,
  method: string,
  path: string,
  token: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; until?: string }> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, base), {
      method,
      headers: { ...headers, Authorization: `Bearer ${token}` },
    });
    req.on("response", (res) => {
      res.resume();
      const until = res.headers["x-bulwark-retain-until"];
      resolve({ status: res.statusCode ?? 0, ...(typeof until === "string" ? { until } : {}) });
    });
    req.on("error", reject);
    req.end();
  });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

function rawExchange(
  base: string,
  method: string,
  path: string,
  token: string | undefined,
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, base), {
      method,
      headers: token === undefined ? {} : { Authorization: `Bearer ${token}` },
    });
    req.on("response", (res) => {
      const parts: Buffer[] = [];
      res.on("data", (piece: Buffer) => parts.push(piece));
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(parts).toString("utf8"),
        }),
      );
    });
    req.on("error", reject);
    req.end();
  });
}

function rawGet(base: string, path: string, token: string | undefined): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}${path}`, {
      headers: token === undefined ? {} : { Authorization: `Bearer ${token}` },
    });
    req.on("response", (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", reject);
    req.end();
  });
}
