/**
 * Opening configured targets (src/ops/targets.ts): credentials are resolved from their references and
 * handed to the backend as typed options through the registry; nothing is written to the process's
 * environment, and every secret read is recorded for scrubbing.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";

import { afterAll, afterEach, describe, expect, it, vi } from "vitest";

import { MemoryBackend } from "../../src/backend/memory/memory-backend.js";
import { s3Factory } from "../../src/backend/s3/s3-factory.js";
import { sftpFactory } from "../../src/backend/sftp/sftp-factory.js";
import type { Target } from "../../src/config/types.js";
import {
  initTargetRepository,
  openTargetBackend,
  openTargetRepository,
  schemeOf,
  scrub,
  type TargetAccess,
} from "../../src/ops/targets.js";
import { bulwarkRejection } from "../helpers/errors.js";
import { makeTempDir, removeTempDirs } from "../helpers/temp.js";

afterEach(() => vi.restoreAllMocks());
afterAll(removeTempDirs);

function target(location: string, credentials: Target["credentials"] = {}): Target {
  return {
    name: "offsite",
    location,
    labels: {
      medium: "object",
      site: "b",
      offsite: true,
      failureDomain: "b",
      isolation: "none",
      network: "b",
    },
    credentials,
  };
}

function access(env: Record<string, string>): TargetAccess & { secrets: string[] } {
  return { env, defaultPassword: () => Promise.resolve("pw"), secrets: [] };
}

describe("targets", () => {
  it("opens an S3 target with its credentials without writing any environment variable", async () => {
    const before = { ...process.env };
    const a = access({ TEST_AK: "AKIATESTKEY0001", TEST_SK: "test-secret-key-0001" });
    const t = target("s3:http://127.0.0.1:9/some-bucket/x", {
      accessKeyId: { env: "TEST_AK" },
      secretAccessKey: { env: "TEST_SK" },
    });
    // Nothing listens on port 9: the real S3 backend (SDK loaded and all) fails to connect.
    const err = await bulwarkRejection(openTargetBackend(t, a));
    expect(err.code).toBe("TRANSIENT");
    expect(process.env.AWS_ACCESS_KEY_ID).toBe(before.AWS_ACCESS_KEY_ID);
    expect(process.env.AWS_SECRET_ACCESS_KEY).toBe(before.AWS_SECRET_ACCESS_KEY);
    // The only variable the S3 factory may set is the SDK's own notice switch, never a setting.
    const added = Object.keys(process.env).filter((k) => !(k in before));
    expect(added.filter((k) => k !== "AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED")).toEqual([]);
    expect(a.secrets).toEqual(["AKIATESTKEY0001", "test-secret-key-0001"]);
    expect(scrub(`denied for test-secret-key-0001`, a.secrets)).toBe("denied for ***");
  });

  it("hands file credentials to the backend as paths, value credentials as their secrets", async () => {
    const dir = await makeTempDir("targets");
    const passFile = join(dir, "passphrase");
    writeFileSync(passFile, "key passphrase\n");
    const open = vi.spyOn(sftpFactory, "open").mockResolvedValue(new MemoryBackend());
    const a = access({ BULWARK_SFTP_KEY: "/from/env", BULWARK_SFTP_KNOWN_HOSTS: "/env/known_hosts" });
    const t = target("sftp:backup@nas:2222/srv/repo", {
      privateKey: { file: "/etc/bulwark/id_ed25519" },
      passphrase: { file: passFile },
      hostKey: { env: "HOST_KEY" },
    });
    a.env = { ...a.env, HOST_KEY: "SHA256:abc" };
    const repo = await initTargetRepository(t, a, { kdf: { N: 1024, r: 8, p: 1 } });
    expect(open.mock.calls[0]?.[1]).toEqual({
      privateKey: "/etc/bulwark/id_ed25519",
      knownHosts: "/env/known_hosts",
      passphrase: "key passphrase",
      hostKeyFingerprint: "SHA256:abc",
    });
    expect(open.mock.calls[0]?.[2]).toEqual({ create: true });
    expect(a.secrets).toEqual(["pw", "key passphrase", "SHA256:abc"]);
    await repo.backend.close();
  });

  it("passes readOnly and the target's immutability (S3 only) to the registry", async () => {
    const inner = new MemoryBackend();
    const open = vi.spyOn(s3Factory, "open").mockResolvedValue(inner);
    const t = {
      ...target("s3:http://127.0.0.1:9/bucket"),
      immutability: { mode: "compliance", days: 3 },
    } as const;
    const backend = await openTargetBackend(t, access({}), { readOnly: true });
    expect(open.mock.calls[0]?.[2]).toEqual({ create: false, immutability: { mode: "compliance", days: 3 } });
    await expect(backend.remove({ type: "index", name: "ab".repeat(32) })).rejects.toThrow(/read-only/);
    await backend.close();
  });

  it("refuses an unknown credential and a file credential that is not a file reference", async () => {
    const unknown = await bulwarkRejection(
      openTargetRepository(target("rest:http://127.0.0.1:9/", { password: { env: "X" } }), access({})),
    );
    expect(unknown.code).toBe("CONFIG_INVALID");
    expect(unknown.message).toBe('target offsite: the rest backend has no credential "password"');
    expect(unknown.hint).toBe("a rest target takes token, ca");
    const notFile = await bulwarkRejection(
      openTargetRepository(target("rest:http://127.0.0.1:9/", { ca: { env: "CA" } }), access({ CA: "pem" })),
    );
    expect(notFile.message).toBe("target offsite: credentials.ca must be a file reference ({ file: PATH })");
  });

  it("names schemes as before", () => {
    expect(schemeOf("/srv/a")).toBe("local");
    expect(schemeOf("sftp:u@h/a")).toBe("sftp");
    expect(schemeOf("s3:http://h/b")).toBe("s3");
  });
});
