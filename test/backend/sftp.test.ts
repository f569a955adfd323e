/**
 * SftpBackend against a real OpenSSH sshd on 127.0.0.1: the conformance suite, then what only SFTP has
 * (host-key verification, key authentication, connection failures, the SFTP layout), and a Repository
 * round trip. The server comes from SFTP_* environment variables, or from `scripts/services/sshd.sh up`
 * run here, so `npx vitest run` works on its own. When no sshd can be started the file is skipped with the
 * reason, except under CI=true, where that fails the run.
 */

import { execFile, spawn } from "node:child_process";
import { createHash, createHmac, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, posix } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import ssh2, { type SFTPWrapper } from "ssh2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { usedBlobs } from "../../src/snapshot/used-blobs.js";
import { bufferSource, type FileHandle } from "../../src/backend/backend.js";
import {
  fingerprintOf,
  normaliseFingerprint,
  parseKnownHosts,
  verifyHostKey,
} from "../../src/backend/sftp/host-keys.js";
import { openSftpBackend, type SftpOptions } from "../../src/backend/sftp/sftp-backend.js";
import { parseSftpLocation } from "../../src/backend/sftp/sftp-location.js";
import { deterministicSource, describeBackend } from "../../src/backend/testing/conformance.js";
import { BulwarkError, hasCode } from "../../src/core/errors.js";
import { withRetry } from "../../src/backend/wrappers/retry.js";
import { PackWriter } from "../../src/repository/pack-writer.js";
import { prune } from "../../src/repository/prune.js";
import { Repository } from "../../src/repository/repository.js";
import { bulwarkRejection as failureOf } from "../helpers/errors.js";

const run = promisify(execFile);
const MiB = 1024 * 1024;
const LARGE_OBJECT_BYTES = 256 * MiB;
const weakKdf = { N: 1024, r: 8, p: 1 };

interface SftpServer {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly key: string;
  readonly knownHosts: string;
  readonly root: string;
}

const ENV_NAMES = [
  "SFTP_HOST",
  "SFTP_PORT",
  "SFTP_USER",
  "SFTP_KEY",
  "SFTP_KNOWN_HOSTS",
  "SFTP_ROOT",
] as const;

/** The server from the environment, or one started by scripts/services/sshd.sh; a reason when neither works. */
async function findServer(): Promise<SftpServer | { reason: string }> {
  let vars: Partial<Record<string, string>> = process.env;
  if (ENV_NAMES.some((n) => vars[n] === undefined || vars[n] === "")) {
    const script = fileURLToPath(new URL("../../scripts/services/sshd.sh", import.meta.url));
    try {
      const { stdout } = await run("bash", [script, "up"], { timeout: 900_000, maxBuffer: 16 * MiB });
      vars = Object.fromEntries(
        [...stdout.matchAll(/^export (SFTP_[A-Z_]+)=(.*)$/gm)].map((m) => [m[1] ?? "", m[2] ?? ""]),
      );
    } catch (err) {
      const stderr = (err as { stderr?: string }).stderr ?? "";
      return {
        reason: `scripts/services/sshd.sh up failed: ${stderr.trim().split("\n").slice(-3).join(" / ")}`,
      };
    }
  }
  const missing = ENV_NAMES.filter((n) => vars[n] === undefined || vars[n] === "");
  if (missing.length > 0) return { reason: `sshd.sh printed no ${missing.join(", ")}` };
  return {
    host: vars.SFTP_HOST ?? "",
    port: Number(vars.SFTP_PORT),
    user: vars.SFTP_USER ?? "",
    key: vars.SFTP_KEY ?? "",
    knownHosts: vars.SFTP_KNOWN_HOSTS ?? "",
    root: vars.SFTP_ROOT ?? "",
  };
}

// Started while the file is collected (a file-level beforeAll), so that the suites below can be skipped.
const found = await findServer();
if ("reason" in found && process.env.CI === "true") {
  throw new Error(`no sshd for the SFTP tests under CI=true: ${found.reason}`);
}
const server: SftpServer | undefined = "reason" in found ? undefined : found;
const skipReason = "reason" in found ? found.reason : "";
if (server === undefined) console.warn(`skipping the SFTP tests: ${skipReason}`);

function locationOf(s: SftpServer, path: string): string {
  return `sftp:${s.user}@${s.host}:${s.port}${path}`;
}

function optionsOf(s: SftpServer, extra: SftpOptions = {}): SftpOptions {
  return { privateKey: s.key, knownHosts: s.knownHosts, ...extra };
}

function freshPath(s: SftpServer, label: string): string {
  return posix.join(s.root, `${label}-${randomBytes(6).toString("hex")}`);
}

/** A raw SFTP session beside the backend: to plant stray files and to remove test directories. */
class Helper {
  private constructor(
    private readonly client: ssh2.Client,
    readonly sftp: SFTPWrapper,
  ) {}

  static async connect(s: SftpServer): Promise<Helper> {
    const client = new ssh2.Client();
    const privateKey = await readFile(s.key);
    await new Promise<void>((resolve, reject) => {
      client.once("ready", () => resolve()).once("error", reject);
      client.connect({ host: s.host, port: s.port, username: s.user, privateKey, hostVerifier: () => true });
    });
    const sftp = await new Promise<SFTPWrapper>((resolve, reject) =>
      client.sftp((err, channel) => (err ? reject(err) : resolve(channel))),
    );
    return new Helper(client, sftp);
  }

  writeFile(path: string, data: string): Promise<void> {
    return new Promise((resolve, reject) =>
      this.sftp.writeFile(path, data, (err) => (err ? reject(err) : resolve())),
    );
  }

  mkdir(path: string): Promise<void> {
    return new Promise((resolve, reject) => this.sftp.mkdir(path, (err) => (err ? reject(err) : resolve())));
  }

  readdir(path: string): Promise<string[]> {
    return new Promise((resolve, reject) =>
      this.sftp.readdir(path, (err, list) => (err ? reject(err) : resolve(list.map((e) => e.filename)))),
    );
  }

  /** rm -rf over SFTP. */
  async removeTree(path: string): Promise<void> {
    const entries = await new Promise<{ filename: string; attrs: { isDirectory(): boolean } }[]>((resolve) =>
      this.sftp.readdir(path, (err, list) => resolve(err ? [] : list)),
    );
    for (const e of entries) {
      const child = posix.join(path, e.filename);
      if (e.attrs.isDirectory()) await this.removeTree(child);
      else await new Promise<void>((resolve) => this.sftp.unlink(child, () => resolve()));
    }
    await new Promise<void>((resolve) => this.sftp.rmdir(path, () => resolve()));
  }

  close(): void {
    this.client.end();
  }
}

function hexName(prefix = ""): string {
  return prefix + randomBytes(32).toString("hex").slice(prefix.length);
}

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of iterable) items.push(item);
  return items;
}

describe("SFTP locations", () => {
  it("parses the short, restic-style and URL forms", () => {
    expect(parseSftpLocation("sftp:bob@host/srv/repo")).toEqual({
      user: "bob",
      host: "host",
      port: 22,
      path: "/srv/repo",
    });
    expect(parseSftpLocation("sftp:bob@host:2222/srv/repo/")).toMatchObject({
      port: 2222,
      path: "/srv/repo",
    });
    expect(parseSftpLocation("sftp:bob@host:/srv/repo")).toMatchObject({ port: 22, path: "/srv/repo" });
    expect(parseSftpLocation("sftp:bob@[::1]:2200/r")).toMatchObject({ host: "::1", port: 2200 });
    expect(parseSftpLocation("sftp://bob@host:2222/srv/repo")).toMatchObject({
      user: "bob",
      port: 2222,
      path: "/srv/repo",
    });
    expect(parseSftpLocation("sftp:host/~/backups")).toMatchObject({ user: undefined, path: "~/backups" });
  });

  it("refuses malformed locations, and never echoes a password", () => {
    for (const bad of ["sftp:bob@host", "sftp:bob@host:99999/r", "sftp:bob@host/", "s3:x", "sftp:h/a/../b"]) {
      expect(() => parseSftpLocation(bad), bad).toThrow(BulwarkError);
    }
    let message = "";
    try {
      parseSftpLocation("sftp://bob:hunter2@host/r");
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).not.toBe("");
    expect(message).not.toContain("hunter2");
  });
});

describe("known_hosts", () => {
  const key = (seed: string): Buffer => {
    const type = Buffer.from("ssh-ed25519");
    const body = createHash("sha256").update(seed).digest();
    const length = (n: number): Buffer => Buffer.from([0, 0, 0, n]);
    return Buffer.concat([length(type.length), type, length(body.length), body]);
  };
  const line = (hosts: string, k: Buffer, marker = ""): string =>
    `${marker}${marker === "" ? "" : " "}${hosts} ssh-ed25519 ${k.toString("base64")}`;
  const hashed = (name: string): string => {
    const salt = randomBytes(20);
    return `|1|${salt.toString("base64")}|${createHmac("sha1", salt).update(name).digest("base64")}`;
  };

  it("matches plain, [host]:port, hashed and wildcard names", () => {
    const k = key("a");
    const entries = parseKnownHosts(
      [
        "# comment",
        line("alpha,beta.example", k),
        line("[gamma]:2222", k),
        line(hashed("[delta]:2200"), k),
        line("*.wild.example,!bad.wild.example", k),
      ].join("\n"),
    );
    expect(verifyHostKey(entries, "alpha", 22, k)).toEqual({ ok: true });
    expect(verifyHostKey(entries, "beta.example", 22, k)).toEqual({ ok: true });
    expect(verifyHostKey(entries, "gamma", 2222, k)).toEqual({ ok: true });
    expect(verifyHostKey(entries, "gamma", 22, k)).toEqual({ ok: false, reason: "unknown" });
    expect(verifyHostKey(entries, "delta", 2200, k)).toEqual({ ok: true });
    expect(verifyHostKey(entries, "x.wild.example", 22, k)).toEqual({ ok: true });
    expect(verifyHostKey(entries, "bad.wild.example", 22, k)).toEqual({ ok: false, reason: "unknown" });
  });

  it("tells a changed key from an unknown host, and honours @revoked", () => {
    const entries = parseKnownHosts([line("alpha", key("a")), line("*", key("r"), "@revoked")].join("\n"));
    expect(verifyHostKey(entries, "alpha", 22, key("b"))).toEqual({ ok: false, reason: "changed" });
    expect(verifyHostKey(entries, "other", 22, key("b"))).toEqual({ ok: false, reason: "unknown" });
    expect(verifyHostKey(entries, "other", 22, key("r"))).toEqual({ ok: false, reason: "revoked" });
  });

  it("normalises fingerprints as ssh-keygen prints them", () => {
    const fp = fingerprintOf(key("a"));
    expect(fp).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
    expect(normaliseFingerprint(fp.slice("SHA256:".length) + "=")).toBe(fp);
    expect(normaliseFingerprint("MD5:aa:bb")).toBeUndefined();
  });
});

describe.skipIf(server === undefined)("SftpBackend on a real sshd", () => {
  const s = server as SftpServer;
  let helper: Helper;
  const cleanups: string[] = [];

  beforeAll(async () => {
    helper = await Helper.connect(s);
  });

  afterAll(async () => {
    for (const path of cleanups) await helper.removeTree(path);
    helper.close();
  });

  describeBackend(
    "sftp",
    async () => {
      const path = freshPath(s, "conformance");
      const backend = await openSftpBackend(locationOf(s, path), optionsOf(s, { create: true }));
      return { backend, cleanup: () => helper.removeTree(path) };
    },
    { largeObjectBytes: LARGE_OBJECT_BYTES },
  );

  describe("what only SFTP shows", () => {
    it("lays out the repository like the local backend, with temp files beside the destination", async () => {
      const path = freshPath(s, "layout");
      cleanups.push(path);
      const backend = await openSftpBackend(locationOf(s, path), optionsOf(s, { create: true }));
      try {
        expect((await helper.readdir(path)).sort()).toEqual(["data", "index", "keys", "locks", "snapshots"]);
        expect(await helper.readdir(posix.join(path, "data"))).toHaveLength(256);
        const h: FileHandle = { type: "pack", name: hexName("c4") };
        await backend.save(h, bufferSource(randomBytes(100)));
        expect(await helper.readdir(posix.join(path, "data", "c4"))).toEqual([h.name]);
        expect(backend.location).toBe(locationOf(s, path));
        expect(backend.capabilities.atomicReplace).toBe(true);
      } finally {
        await backend.close();
      }
    });

    it("list skips temp files, stray names, directories and packs in the wrong subdirectory", async () => {
      const path = freshPath(s, "strays");
      cleanups.push(path);
      const backend = await openSftpBackend(locationOf(s, path), optionsOf(s, { create: true }));
      try {
        await helper.writeFile(posix.join(path, "keys", ".tmp-leftover"), "x");
        await helper.writeFile(posix.join(path, "keys", "README"), "x");
        await helper.writeFile(posix.join(path, "keys", hexName().toUpperCase()), "x");
        await helper.writeFile(posix.join(path, "data", "ab", hexName("cd")), "x");
        await helper.writeFile(posix.join(path, "data", "ab", ".tmp-" + hexName("ab")), "x");
        await helper.mkdir(posix.join(path, "index", hexName()));
        for (const type of ["key", "pack", "index"] as const) {
          expect(await collect(backend.list(type)), type).toEqual([]);
        }
      } finally {
        await backend.close();
      }
    });

    it("removeStaleTempFiles deletes old .tmp- leftovers and nothing else", async () => {
      const path = freshPath(s, "stale");
      cleanups.push(path);
      const backend = await openSftpBackend(locationOf(s, path), optionsOf(s, { create: true }));
      try {
        const key: FileHandle = { type: "key", name: hexName() };
        await backend.save(key, bufferSource(randomBytes(10)));
        const old = Math.floor(Date.now() / 1000) - 2 * 3600;
        const leftovers = [
          posix.join(path, ".tmp-config"),
          posix.join(path, "keys", ".tmp-a"),
          posix.join(path, "data", "9a", ".tmp-b"),
        ];
        for (const leftover of leftovers) {
          await helper.writeFile(leftover, "partial");
          await new Promise<void>((resolve, reject) =>
            helper.sftp.utimes(leftover, old, old, (err) => (err ? reject(err) : resolve())),
          );
        }
        await helper.writeFile(posix.join(path, "locks", ".tmp-writer-still-running"), "partial");

        expect(await backend.removeStaleTempFiles(3600_000)).toBe(3);
        expect(await helper.readdir(posix.join(path, "keys"))).toEqual([key.name]);
        expect(await helper.readdir(posix.join(path, "data", "9a"))).toEqual([]);
        expect(await helper.readdir(posix.join(path, "locks"))).toEqual([".tmp-writer-still-running"]);
        expect((await backend.stat(key)).size).toBe(10);
      } finally {
        await backend.close();
      }
    });

    it("create refuses a directory that already holds a repository", async () => {
      const path = freshPath(s, "existing");
      cleanups.push(path);
      const first = await openSftpBackend(locationOf(s, path), optionsOf(s, { create: true }));
      await first.save({ type: "config", name: "" }, bufferSource(randomBytes(64)));
      await first.close();
      const err = await failureOf(openSftpBackend(locationOf(s, path), optionsOf(s, { create: true })));
      expect(err.code).toBe("ALREADY_EXISTS");
      expect(err.message).toContain(locationOf(s, path));
    });

    it("open without create refuses a missing directory with NO_REPOSITORY", async () => {
      const path = freshPath(s, "missing");
      const err = await failureOf(openSftpBackend(locationOf(s, path), optionsOf(s)));
      expect(err.code).toBe("NO_REPOSITORY");
      expect(err.message).toContain(path);
    });

    it("recreates a missing data subdirectory when saving into it", async () => {
      const path = freshPath(s, "subdir");
      cleanups.push(path);
      const backend = await openSftpBackend(locationOf(s, path), optionsOf(s, { create: true }));
      try {
        await helper.removeTree(posix.join(path, "data", "e4"));
        const h: FileHandle = { type: "pack", name: hexName("e4") };
        await backend.save(h, bufferSource(randomBytes(10)));
        expect((await backend.stat(h)).size).toBe(10);
      } finally {
        await backend.close();
      }
    });

    // Needs the server's files on this machine and root to mount a small tmpfs there.
    const canMount = process.getuid?.() === 0 && s !== undefined && existsSync(s.root);
    it.skipIf(!canMount)(
      "a full disk is an IO error saying so, and loses nothing already stored",
      async () => {
        const path = freshPath(s, "full");
        await mkdir(path);
        const { stdout: uid } = await run("id", ["-u", s.user]);
        const { stdout: gid } = await run("id", ["-g", s.user]);
        const options = `size=4m,mode=0755,uid=${uid.trim()},gid=${gid.trim()}`;
        try {
          await run("mount", ["-t", "tmpfs", "-o", options, "bulwark-full", path]);
        } catch (err) {
          await rm(path, { recursive: true, force: true });
          // A container without CAP_SYS_ADMIN: nothing to learn here, and not a failure of the backend.
          console.warn(`skipping the full-disk check: cannot mount a tmpfs (${(err as Error).message})`);
          return;
        }
        try {
          const backend = await openSftpBackend(locationOf(s, path), optionsOf(s, { create: true }));
          try {
            const kept: FileHandle = { type: "index", name: hexName() };
            const data = randomBytes(100_000);
            await backend.save(kept, bufferSource(data));
            const big: FileHandle = { type: "pack", name: hexName("77") };
            const err = await failureOf(backend.save(big, deterministicSource(16 * MiB, "full disk")));
            expect(err.code).toBe("IO");
            expect(err.message).toContain("disk is full");
            expect(err.message).toContain(locationOf(s, path));
            expect((await backend.load(kept)).equals(data)).toBe(true);
            expect(await helper.readdir(posix.join(path, "data", "77"))).toEqual([]);
            expect(await collect(backend.list("pack"))).toEqual([]);
          } finally {
            await backend.close();
          }
        } finally {
          await run("umount", [path]);
          await rm(path, { recursive: true, force: true });
        }
      },
    );

    it("measures saving and loading a 256 MiB object", async () => {
      const path = freshPath(s, "throughput");
      cleanups.push(path);
      const backend = await openSftpBackend(locationOf(s, path), optionsOf(s, { create: true }));
      try {
        const source = deterministicSource(LARGE_OBJECT_BYTES, "sftp throughput");
        const h: FileHandle = { type: "pack", name: hexName() };
        let started = performance.now();
        await backend.save(h, source);
        const saveSeconds = (performance.now() - started) / 1000;

        started = performance.now();
        const hash = createHash("sha256");
        for await (const piece of backend.openRead(h)) hash.update(piece);
        const readSeconds = (performance.now() - started) / 1000;

        const expected = createHash("sha256");
        for await (const piece of source.open()) expected.update(piece);
        expect(hash.digest("hex")).toBe(expected.digest("hex"));

        const mb = LARGE_OBJECT_BYTES / 1e6;
        console.log(
          `SFTP throughput (${s.host}:${s.port}, 256 MiB): save ${(mb / saveSeconds).toFixed(1)} MB/s ` +
            `(${saveSeconds.toFixed(2)} s), openRead ${(mb / readSeconds).toFixed(1)} MB/s (${readSeconds.toFixed(2)} s)`,
        );
      } finally {
        await backend.close();
      }
    }, 600_000);
  });

  describe("host keys and authentication", () => {
    let dir: string;
    let emptyKnownHosts: string;
    let serverFingerprint: string;

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "bulwark-sftp-"));
      emptyKnownHosts = join(dir, "known_hosts");
      await writeFile(emptyKnownHosts, "");
      // ssh-keygen's own reading of the server's key, so the check does not depend on our fingerprint code.
      const { stdout } = await run("ssh-keygen", ["-lf", s.knownHosts]);
      serverFingerprint = /SHA256:[A-Za-z0-9+/]+/.exec(stdout)?.[0] ?? "";
      expect(serverFingerprint).toMatch(/^SHA256:/);
      const [entry] = parseKnownHosts(await readFile(s.knownHosts, "utf8"));
      expect(entry === undefined ? "" : fingerprintOf(entry.key)).toBe(serverFingerprint);
    });

    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it("refuses an unknown host key, naming its fingerprint and how to pin it", async () => {
      const err = await failureOf(
        openSftpBackend(
          locationOf(s, freshPath(s, "unknown")),
          optionsOf(s, { knownHosts: emptyKnownHosts }),
        ),
      );
      expect(err.code).toBe("AUTH");
      expect(err.message).toContain(serverFingerprint);
      expect(err.message).toContain(`[${s.host}]:${s.port}`);
      // What a CLI user can set, not an API option name.
      expect(err.hint).toContain(`BULWARK_SFTP_HOST_KEY=${serverFingerprint}`);
      expect(err.hint).toContain("credentials.hostKey");
      expect(err.hint).toContain("BULWARK_SFTP_KNOWN_HOSTS");
      expect(err.hint).toContain(`ssh-keyscan -p ${s.port} ${s.host} >> ${emptyKnownHosts}`);
      expect(err.hint).not.toContain("hostKeyFingerprint");
    });

    it("accepts a pinned fingerprint without known_hosts, and refuses a wrong one", async () => {
      const path = freshPath(s, "pinned");
      cleanups.push(path);
      const backend = await openSftpBackend(
        locationOf(s, path),
        optionsOf(s, { knownHosts: emptyKnownHosts, hostKeyFingerprint: serverFingerprint, create: true }),
      );
      await backend.close();

      const wrong = fingerprintOf(randomBytes(32));
      const err = await failureOf(
        openSftpBackend(locationOf(s, path), optionsOf(s, { hostKeyFingerprint: wrong })),
      );
      expect(err.code).toBe("AUTH");
      expect(err.message).toContain(wrong);
      expect(err.message).toContain(serverFingerprint);
    });

    it("known_hosts holding only another key type of the host still verifies it", async (ctx) => {
      const ecdsaPub = join(dirname(s.key), "etc", "host_ecdsa.pub");
      ctx.skip(!existsSync(ecdsaPub), "the server has no ECDSA host key at " + ecdsaPub);
      const onlyEcdsa = join(dir, "known_hosts_ecdsa");
      const keyLine = (await readFile(ecdsaPub, "utf8")).split(" ").slice(0, 2).join(" ");
      await writeFile(onlyEcdsa, `[${s.host}]:${s.port} ${keyLine}\n`);
      const path = freshPath(s, "ecdsa");
      cleanups.push(path);
      const backend = await openSftpBackend(
        locationOf(s, path),
        optionsOf(s, { knownHosts: onlyEcdsa, create: true }),
      );
      await backend.close();
    });

    it("acceptUnknownHost connects to a host known_hosts does not list", async () => {
      const path = freshPath(s, "accept");
      cleanups.push(path);
      const backend = await openSftpBackend(
        locationOf(s, path),
        optionsOf(s, { knownHosts: emptyKnownHosts, acceptUnknownHost: true, create: true }),
      );
      await backend.close();
    });

    it("refuses a host whose key changed, even with acceptUnknownHost", async () => {
      const changed = join(dir, "known_hosts_changed");
      await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "other_host_key")]);
      const otherKey = (await readFile(join(dir, "other_host_key.pub"), "utf8"))
        .split(" ")
        .slice(0, 2)
        .join(" ");
      await writeFile(changed, `[${s.host}]:${s.port} ${otherKey}\n`);
      const err = await failureOf(
        openSftpBackend(
          locationOf(s, freshPath(s, "changed")),
          optionsOf(s, { knownHosts: changed, acceptUnknownHost: true }),
        ),
      );
      expect(err.code).toBe("AUTH");
      expect(err.message).toContain("CHANGED");
      expect(err.message).toContain(serverFingerprint);
    });

    it("a key the server does not accept is an AUTH error naming the target, without secrets", async () => {
      const wrongKey = join(dir, "wrong_ed25519");
      await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", wrongKey]);
      const location = locationOf(s, freshPath(s, "wrongkey"));
      const err = await failureOf(openSftpBackend(location, optionsOf(s, { privateKey: wrongKey })));
      expect(err.code).toBe("AUTH");
      expect(err.message).toContain("authentication failed");
      expect(err.message).toContain(location);
      expect(err.message).toContain(wrongKey);
      const keyText = await readFile(wrongKey, "utf8");
      const keyBody = keyText.split("\n")[1] ?? "";
      const shown = `${err.message}\n${err.hint ?? ""}`;
      expect(shown).not.toContain("PRIVATE KEY");
      expect(keyBody.length).toBeGreaterThan(20);
      expect(shown).not.toContain(keyBody);
    });

    it("without a key file, authenticates with the keys of a running ssh-agent", async () => {
      const agent = await startAgent(dir, "agent-good");
      try {
        await run("ssh-add", ["-q", s.key], { env: { ...process.env, SSH_AUTH_SOCK: agent.socket } });
        const path = freshPath(s, "agent");
        cleanups.push(path);
        const backend = await openSftpBackend(locationOf(s, path), {
          knownHosts: s.knownHosts,
          agent: agent.socket,
          create: true,
        });
        try {
          const h: FileHandle = { type: "key", name: hexName() };
          await backend.save(h, bufferSource(randomBytes(10)));
          expect((await backend.stat(h)).size).toBe(10);
        } finally {
          await backend.close();
        }
      } finally {
        agent.stop();
      }
    });

    it("an agent whose keys the server refuses is an AUTH error naming the agent", async () => {
      const agent = await startAgent(dir, "agent-wrong");
      try {
        const wrongKey = join(dir, "agent_wrong_ed25519");
        await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", wrongKey]);
        await run("ssh-add", ["-q", wrongKey], { env: { ...process.env, SSH_AUTH_SOCK: agent.socket } });
        const location = locationOf(s, freshPath(s, "agent-wrong"));
        const err = await failureOf(
          openSftpBackend(location, { knownHosts: s.knownHosts, agent: agent.socket }),
        );
        expect(err.code).toBe("AUTH");
        expect(err.message).toContain(location);
        expect(err.message).toContain(`ssh-agent at ${agent.socket}`);
        expect(err.hint).toContain("ssh-add -L");
      } finally {
        agent.stop();
      }
    });

    it("a missing private key file is an AUTH error naming the file", async () => {
      const missing = join(dir, "no_such_key");
      const err = await failureOf(
        openSftpBackend(locationOf(s, freshPath(s, "nokey")), optionsOf(s, { privateKey: missing })),
      );
      expect(err.code).toBe("AUTH");
      expect(err.message).toContain(missing);
    });
  });

  describe("unreachable servers", () => {
    it("a closed port is a TRANSIENT error naming the target, quickly", async () => {
      const port = await freePort();
      const location = `sftp:${s.user}@127.0.0.1:${port}/srv/repo`;
      const started = performance.now();
      const err = await failureOf(openSftpBackend(location, optionsOf(s)));
      expect(performance.now() - started).toBeLessThan(5000);
      expect(err.code).toBe("TRANSIENT");
      expect(err.message).toContain(location);
      expect(err.message).toContain("connection refused");
    });

    it("a server that never speaks SSH times out as TRANSIENT after connectTimeoutMs", async () => {
      const silent = await listenSilently();
      try {
        const location = `sftp:${s.user}@127.0.0.1:${silent.port}/srv/repo`;
        const started = performance.now();
        const err = await failureOf(openSftpBackend(location, optionsOf(s, { connectTimeoutMs: 1000 })));
        const elapsed = performance.now() - started;
        expect(elapsed).toBeGreaterThanOrEqual(900);
        expect(elapsed).toBeLessThan(5000);
        expect(err.code).toBe("TRANSIENT");
        expect(err.message).toContain("timed out");
        expect(err.message).toContain(location);
      } finally {
        await silent.close();
      }
    });

    // Needs the pid file of a server started by sshd.sh on this machine (it sits beside the client key).
    const pidFile = s === undefined ? "" : join(dirname(s.key), "sshd.pid");
    it.skipIf(!existsSync(pidFile))(
      "a dropped connection is TRANSIENT, and the next request reconnects",
      async () => {
        const path = freshPath(s, "reconnect");
        cleanups.push(path);
        const sshdPid = Number((await readFile(pidFile, "utf8")).trim());
        const before = await childrenOf(sshdPid);
        const backend = await openSftpBackend(locationOf(s, path), optionsOf(s, { create: true }));
        try {
          const h: FileHandle = { type: "snapshot", name: hexName() };
          await backend.save(h, bufferSource(randomBytes(1000)));
          const ours = (await childrenOf(sshdPid)).filter((pid) => !before.includes(pid));
          expect(ours).toHaveLength(1);
          // The per-connection sshd process serving the backend, started by our own sshd: ending it drops
          // the connection exactly as a server restart or a network reset would.
          const victim = ours[0] ?? 0;
          process.kill(victim, "SIGTERM");
          for (let i = 0; i < 100 && existsSync(`/proc/${victim}`); i++) await sleep(50);
          // Requests that meet the dying connection fail as TRANSIENT (what a retry wrapper retries);
          // once the client has seen it close, the next request reconnects.
          for (let attempt = 0; ; attempt++) {
            const result: unknown = await backend.stat(h).catch((e: unknown) => e);
            if (!(result instanceof Error)) break;
            expect(hasCode(result, "TRANSIENT"), result.message).toBe(true);
            expect(attempt, "still failing after several attempts").toBeLessThan(5);
            await sleep(100);
          }
          expect(await backend.stat(h)).toEqual({ name: h.name, size: 1000 });
          await backend.save({ type: "snapshot", name: hexName() }, bufferSource(randomBytes(10)));
          expect(await collect(backend.list("snapshot"))).toHaveLength(2);
        } finally {
          await backend.close();
        }
      },
    );

    it("a closed backend refuses further use", async () => {
      const path = freshPath(s, "closed");
      cleanups.push(path);
      const backend = await openSftpBackend(locationOf(s, path), optionsOf(s, { create: true }));
      await backend.close();
      await expect(backend.stat({ type: "pack", name: hexName() })).rejects.toThrow(/closed/);
      await expect(collect(backend.list("pack"))).rejects.toThrow(/closed/);
    });
  });

  describe("Repository on SFTP", () => {
    it("prune removes temp files that interrupted uploads left, once they are an hour old", async () => {
      const path = freshPath(s, "prune-temp");
      cleanups.push(path);
      // Through the retry wrapper, as the CLI opens it.
      const backend = withRetry(await openSftpBackend(locationOf(s, path), optionsOf(s, { create: true })));
      try {
        const repo = await Repository.init(backend, "sftp password", { kdf: weakKdf, packSize: 16 * 1024 });
        const writer = new PackWriter(repo);
        await writer.addPlain("data", randomBytes(5000));
        await writer.flush();
        await repo.saveDocument("index", { version: 1, packs: writer.takeNewPacks() });
        // A pack upload killed two hours ago, and one that is being written right now.
        const killed = posix.join(path, "data", "3c", ".tmp-killed-upload");
        const live = posix.join(path, "data", "5d", ".tmp-live-upload");
        await helper.writeFile(killed, "partial");
        const old = Math.floor(Date.now() / 1000) - 2 * 3600;
        await new Promise<void>((resolve, reject) =>
          helper.sftp.utimes(killed, old, old, (err) => (err ? reject(err) : resolve())),
        );
        await helper.writeFile(live, "partial");

        const result = await prune(repo, { usedBlobs: () => usedBlobs(repo) });
        expect(result.tempFilesRemoved).toBe(1);
        expect(await helper.readdir(posix.join(path, "data", "3c"))).toEqual([]);
        expect(await helper.readdir(posix.join(path, "data", "5d"))).toEqual([".tmp-live-upload"]);
        expect((await prune(repo, { dryRun: true, usedBlobs: () => usedBlobs(repo) })).tempFilesRemoved).toBe(
          0,
        );
      } finally {
        await backend.close();
      }
    });

    it("init, pack blobs, save an index, reopen, load the index and every blob", async () => {
      const path = freshPath(s, "repository");
      cleanups.push(path);
      const backend = await openSftpBackend(locationOf(s, path), optionsOf(s, { create: true }));
      const blobs = Array.from({ length: 12 }, (_, i) => randomBytes(5000 + i * 997));
      const ids: string[] = [];
      try {
        const repo = await Repository.init(backend, "sftp password", { kdf: weakKdf, packSize: 16 * 1024 });
        const writer = new PackWriter(repo);
        for (const b of blobs) ids.push(await writer.addPlain("data", b));
        await writer.flush();
        const packs = writer.takeNewPacks();
        expect(packs.length).toBeGreaterThan(1);
        await repo.saveDocument("index", { version: 1, packs });
      } finally {
        await backend.close();
      }

      const again = await openSftpBackend(locationOf(s, path), optionsOf(s));
      try {
        const reopened = await Repository.open(again, "sftp password");
        await reopened.loadIndex();
        expect(reopened.index.blobCount).toBe(blobs.length);
        for (const [i, id] of ids.entries()) {
          expect((await reopened.loadBlob(id)).equals(blobs[i] ?? Buffer.alloc(0))).toBe(true);
        }
        await expect(Repository.open(again, "wrong password")).rejects.toSatisfy((e: unknown) =>
          hasCode(e, "WRONG_PASSWORD"),
        );
      } finally {
        await again.close();
      }
    });
  });
});

describe.skipIf(server !== undefined)("SftpBackend (skipped)", () => {
  it.skip(`no sshd: ${skipReason}`, () => {});
});

/** Child processes of `pid`, read from /proc (no procps needed). */
async function childrenOf(pid: number): Promise<number[]> {
  const children: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
    // Fields after the command name, which is in parentheses and may contain spaces: state, ppid, ...
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    if (ppid === pid) children.push(Number(entry));
  }
  return children;
}

/** A private ssh-agent listening on DIR/NAME.sock; stop() ends it. */
async function startAgent(dir: string, name: string): Promise<{ socket: string; stop(): void }> {
  const socket = join(dir, `${name}.sock`);
  const child = spawn("ssh-agent", ["-D", "-a", socket], { stdio: "ignore" });
  for (let i = 0; i < 100 && !existsSync(socket); i++) await sleep(50);
  if (!existsSync(socket)) {
    child.kill();
    throw new Error(`ssh-agent did not create ${socket}`);
  }
  return { socket, stop: () => void child.kill() };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", () => resolve()));
  const port = (probe.address() as { port: number }).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

/** A TCP server that accepts connections and never says anything: an SSH handshake never starts. */
async function listenSilently(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const silent = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", () => resolve()));
  return {
    port: (silent.address() as { port: number }).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        silent.close(() => resolve());
      }),
  };
}
