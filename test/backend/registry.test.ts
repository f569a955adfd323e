/**
 * The registry's list of backend factories (src/backend/registry.ts, factory.ts): which factory each
 * location goes to, how settings from the environment and from a config target's credentials become typed
 * options (credentials winning), redaction per scheme, and the wrappers the registry composes.
 */
import { join } from "node:path";

import { afterAll, afterEach, describe, expect, it, vi } from "vitest";

import { bufferSource } from "../../src/backend/backend.js";
import { localFactory } from "../../src/backend/local/local-factory.js";
import { MemoryBackend } from "../../src/backend/memory/memory-backend.js";
import {
  BACKEND_FACTORIES,
  credentialKind,
  factoryFor,
  openBackendAt,
  openTargetBackendAt,
  redact,
} from "../../src/backend/registry.js";
import { restFactory } from "../../src/backend/rest/rest-factory.js";
import { s3Factory } from "../../src/backend/s3/s3-factory.js";
import { sftpFactory } from "../../src/backend/sftp/sftp-factory.js";
import { RepoLock } from "../../src/repository/lock.js";
import { Repository } from "../../src/repository/repository.js";
import { bulwarkRejection, thrown } from "../helpers/errors.js";
import { makeTempDir, removeTempDirs } from "../helpers/temp.js";

const name = "ab".repeat(32);
const weakKdf = { N: 1024, r: 8, p: 1 };

afterEach(() => vi.restoreAllMocks());
afterAll(removeTempDirs);

describe("the factory list", () => {
  it("finds the factory of every scheme, and the local one for a bare path", () => {
    expect(factoryFor("/srv/backup")).toBe(localFactory);
    expect(factoryFor("relative/dir")).toBe(localFactory);
    expect(factoryFor("local:/srv/backup")).toBe(localFactory);
    expect(factoryFor("sftp:backup@nas:2222/srv/repo")).toBe(sftpFactory);
    expect(factoryFor("sftp://backup@nas:2222/srv/repo")).toBe(sftpFactory);
    expect(factoryFor("s3:https://s3.example.com/bucket/prefix")).toBe(s3Factory);
    expect(factoryFor("rest:https://vault:8443/")).toBe(restFactory);
    expect(BACKEND_FACTORIES).toEqual([localFactory, sftpFactory, s3Factory, restFactory]);
  });

  it("parses each location with its backend's parser", () => {
    expect(localFactory.parseLocation("local:/srv/a")).toEqual({ path: "/srv/a" });
    expect(localFactory.parseLocation("/srv/a")).toEqual({ path: "/srv/a" });
    expect(sftpFactory.parseLocation("sftp:u@h:2222/srv/r")).toEqual({
      user: "u",
      host: "h",
      port: 2222,
      path: "/srv/r",
    });
    expect(s3Factory.parseLocation("s3:http://127.0.0.1:7480/bucket/a/b")).toMatchObject({
      endpoint: "http://127.0.0.1:7480",
      bucket: "bucket",
      prefix: "a/b",
    });
    expect(restFactory.parseLocation("rest:http://127.0.0.1:8000/repo").href).toBe(
      "http://127.0.0.1:8000/repo/",
    );
  });

  it("refuses an unknown scheme with USAGE, naming the forms it takes", async () => {
    const err = await bulwarkRejection(openBackendAt("ftp://user:secret@host/x", { create: false }));
    expect(err.code).toBe("USAGE");
    expect(err.message).toBe('unknown repository type "ftp" in ftp://***@host/x');
    expect(err.hint).toBe(
      "use a path, local:PATH, sftp:user@host/path, s3:https://endpoint/bucket/prefix, rest:https://host:port/",
    );
  });
});

describe("options", () => {
  it("come from the environment under today's names, empty variables counting as unset", () => {
    expect(
      sftpFactory.optionsFromEnv({
        BULWARK_SFTP_KEY: "/k",
        BULWARK_SFTP_KNOWN_HOSTS: "/kh",
        BULWARK_SFTP_HOST_KEY: "SHA256:x",
        BULWARK_SFTP_PASSPHRASE: "",
      }),
    ).toEqual({ privateKey: "/k", knownHosts: "/kh", hostKeyFingerprint: "SHA256:x" });
    expect(
      s3Factory.optionsFromEnv({
        AWS_ACCESS_KEY_ID: "AK",
        AWS_SECRET_ACCESS_KEY: "SK",
        AWS_SESSION_TOKEN: "ST",
        BULWARK_S3_IMMUTABLE: "governance:1.5",
      }),
    ).toEqual({
      accessKeyId: "AK",
      secretAccessKey: "SK",
      sessionToken: "ST",
      immutability: { mode: "governance", days: 1.5 },
    });
    expect(restFactory.optionsFromEnv({ BULWARK_REST_TOKEN: "tok", BULWARK_REST_CA: "/ca.pem" })).toEqual({
      token: "tok",
      caFile: "/ca.pem",
    });
    expect(localFactory.optionsFromEnv({ AWS_ACCESS_KEY_ID: "AK" })).toEqual({});
    const err = thrown(() => s3Factory.optionsFromEnv({ BULWARK_S3_IMMUTABLE: "forever" }));
    expect(err).toMatchObject({ code: "CONFIG_INVALID", hint: "e.g. BULWARK_S3_IMMUTABLE=compliance:30" });
  });

  it("come from a target's credentials under the documented names", () => {
    expect(
      s3Factory.optionsFromCredentials({ accessKeyId: "AK", secretAccessKey: "SK", sessionToken: "ST" }, "t"),
    ).toEqual({ accessKeyId: "AK", secretAccessKey: "SK", sessionToken: "ST" });
    expect(
      sftpFactory.optionsFromCredentials(
        { privateKey: "/k", passphrase: "pp", knownHosts: "/kh", hostKey: "SHA256:x" },
        "t",
      ),
    ).toEqual({ privateKey: "/k", passphrase: "pp", knownHosts: "/kh", hostKeyFingerprint: "SHA256:x" });
    expect(restFactory.optionsFromCredentials({ token: "tok", ca: "/ca.pem" }, "t")).toEqual({
      token: "tok",
      caFile: "/ca.pem",
    });
    expect(credentialKind("sftp:u@h/srv", "privateKey", "t")).toBe("file");
    expect(credentialKind("sftp:u@h/srv", "passphrase", "t")).toBe("value");
    expect(credentialKind("rest:http://h/", "ca", "t")).toBe("file");
  });

  it("refuse an unknown credential naming the target and the names the backend takes", () => {
    const s3 = thrown(() => s3Factory.optionsFromCredentials({ password: "x" }, "offsite"));
    expect(s3).toMatchObject({
      code: "CONFIG_INVALID",
      message: 'target offsite: the s3 backend has no credential "password"',
      hint: "a s3 target takes accessKeyId, secretAccessKey, sessionToken",
    });
    expect(thrown(() => credentialKind("sftp:u@h/srv", "key", "nas"))).toMatchObject({
      message: 'target nas: the sftp backend has no credential "key"',
      hint: "a sftp target takes privateKey, knownHosts, hostKey, passphrase",
    });
    expect(thrown(() => credentialKind("/srv/backup", "token", "disk"))).toMatchObject({
      code: "CONFIG_INVALID",
      message: 'target disk: the local backend has no credential "token"',
      hint: "a local target takes no credentials",
    });
    // A name inherited from Object.prototype is no credential either.
    expect(thrown(() => restFactory.optionsFromCredentials({ toString: "x" }, "v"))).toMatchObject({
      code: "CONFIG_INVALID",
    });
  });

  it("reach the backend with a target's credentials laid over the environment's, field by field", async () => {
    const open = vi.spyOn(s3Factory, "open").mockResolvedValue(new MemoryBackend());
    const backend = await openTargetBackendAt("s3:http://127.0.0.1:9/bucket", {
      create: false,
      target: "offsite",
      credentials: { accessKeyId: "from-config", secretAccessKey: "config-secret" },
      env: {
        AWS_ACCESS_KEY_ID: "from-env",
        AWS_SESSION_TOKEN: "env-token",
        BULWARK_S3_IMMUTABLE: "compliance:2",
      },
      immutability: { mode: "governance", days: 7 },
    });
    expect(open).toHaveBeenCalledOnce();
    const [location, options, context] = open.mock.calls[0] ?? [];
    expect(location).toMatchObject({ bucket: "bucket", endpoint: "http://127.0.0.1:9" });
    expect(options).toEqual({
      accessKeyId: "from-config",
      secretAccessKey: "config-secret",
      sessionToken: "env-token",
      immutability: { mode: "compliance", days: 2 },
    });
    expect(context).toEqual({ create: false, immutability: { mode: "governance", days: 7 } });
    await backend.close();
  });
});

describe("redact", () => {
  it("asks the backend of the location's scheme", () => {
    expect(redact("/srv/backup?weird@name")).toBe("/srv/backup?weird@name");
    expect(redact("local:/srv/a?b")).toBe("local:/srv/a?b");
    expect(redact("sftp://backup:hunter2@nas/srv")).toBe("sftp://***@nas/srv");
    expect(redact("s3:https://AKIA:secret@s3.example.com/bucket")).toBe(
      "s3:https://***@s3.example.com/bucket",
    );
    expect(redact("rest:https://vault:8443/?token=abc")).toBe("rest:https://vault:8443/?***");
    expect(redact("ftp://user:pw@host/x?k=v")).toBe("ftp://***@host/x?***");
  });
});

describe("wrappers composed by the registry", () => {
  it("wraps remote backends in retry and leaves a local one bare", async () => {
    const inner = new MemoryBackend();
    vi.spyOn(restFactory, "open").mockResolvedValue(inner);
    const remote = await openBackendAt("rest:http://127.0.0.1:9/", { create: false, env: {} });
    expect(remote).not.toBe(inner);
    const dir = await makeTempDir("registry");
    const local = await openBackendAt(join(dir, "repo"), { create: true });
    expect(local.constructor.name).toBe("LocalBackend");
  });

  it("readOnly refuses saves and removals but lets a reader take and release its shared lock", async () => {
    const dir = join(await makeTempDir("registry"), "repo");
    const writable = await openBackendAt(dir, { create: true });
    await writable.save({ type: "index", name }, bufferSource(Buffer.from("data")));
    await Repository.init(writable, "pw", { kdf: weakKdf });

    const backend = await openBackendAt(dir, { create: false, readOnly: true });
    const save = await bulwarkRejection(
      backend.save({ type: "index", name }, bufferSource(Buffer.from("x"))),
    );
    expect(save.code).toBe("USAGE");
    expect(save.message).toMatch(/read-only: refusing to save index/);
    await expect(backend.remove({ type: "index", name })).rejects.toThrow(/read-only/);
    await expect(backend.removeStaleTempFiles?.(0)).rejects.toThrow(/read-only/);
    expect((await backend.load({ type: "index", name })).toString()).toBe("data");

    const repo = await Repository.open(backend, "pw");
    const lock = await RepoLock.acquire(repo, false);
    expect(await repo.listNames("lock")).toHaveLength(1);
    await lock.release();
    expect(await repo.listNames("lock")).toHaveLength(0);
    await backend.close();
  });
});
