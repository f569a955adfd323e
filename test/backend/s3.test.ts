/**
 * S3Backend against a real Ceph RadosGW (scripts/services/ceph.sh): the conformance suite on a plain bucket
 * and on an Object Lock bucket, the immutability guarantees (the attack test), the errors a user meets
 * (no Object Lock, wrong credentials, missing bucket, unreachable endpoint), a Repository round trip, and
 * the throughput of a 256 MiB object.
 *
 * With S3_ENDPOINT (and AWS_* credentials) set, that server is used instead of starting Ceph. When Ceph
 * cannot be started the tests are skipped with the reason, except under CI=true, where that fails. A
 * cluster this run started is stopped at the end (BULWARK_KEEP_SERVICES=1 keeps it for the next run); one
 * that was already running is reused and left running.
 */

import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectVersionsCommand,
  PutObjectCommand,
  PutObjectRetentionCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";

import { bufferSource, type FileHandle, type FileType } from "../../src/backend/backend.js";
import { openS3Backend, S3Backend, type S3Options } from "../../src/backend/s3/s3-backend.js";
import { s3Error } from "../../src/backend/s3/s3-errors.js";
import { parseS3Location } from "../../src/backend/s3/s3-location.js";
import { describeBackend, deterministicSource } from "../../src/backend/testing/conformance.js";
import { BulwarkError, hasCode, isNotFound, type ErrorCode } from "../../src/core/errors.js";
import { PackWriter } from "../../src/repository/pack-writer.js";
import { Repository } from "../../src/repository/repository.js";
import { rejection as errorOf } from "../helpers/errors.js";

const MiB = 1024 * 1024;
const CEPH_SCRIPT = fileURLToPath(new URL("../../scripts/services/ceph.sh", import.meta.url));
const weakKdf = { N: 1024, r: 8, p: 1 };

let endpoint = "";
let unavailable: string | undefined;
let admin: S3Client | undefined;
/** Whether this run started the cluster (then it stops it, unless BULWARK_KEEP_SERVICES=1). */
let startedHere = false;
const createdBuckets = new Set<string>();

/** Starts Ceph (unless S3_ENDPOINT is set) and copies its export lines into process.env. */
async function startService(): Promise<void> {
  if ((process.env.S3_ENDPOINT ?? "") === "") {
    const { stdout, stderr } = await promisify(execFile)("bash", [CEPH_SCRIPT, "up"], {
      timeout: 280_000,
      maxBuffer: 16 * MiB,
    });
    for (const line of stdout.split("\n")) {
      const match = /^export ([A-Z0-9_]+)=(.*)$/.exec(line.trim());
      if (match?.[1] !== undefined && match[2] !== undefined) process.env[match[1]] = match[2];
    }
    startedHere = !stderr.includes("already running");
  }
  endpoint = process.env.S3_ENDPOINT ?? "";
  if (endpoint === "") throw new Error("ceph.sh up printed no S3_ENDPOINT");
  admin = new S3Client({
    endpoint,
    region: process.env.AWS_REGION ?? "us-east-1",
    forcePathStyle: true,
    requestChecksumCalculation: "WHEN_REQUIRED",
  });
}

function adminClient(): S3Client {
  if (admin === undefined) throw new Error("the S3 service is not started");
  return admin;
}

async function createBucket(objectLock: boolean): Promise<string> {
  const bucket = `bulwark-${objectLock ? "lock" : "plain"}-${randomBytes(6).toString("hex")}`;
  await adminClient().send(
    new CreateBucketCommand({ Bucket: bucket, ObjectLockEnabledForBucket: objectLock }),
  );
  createdBuckets.add(bucket);
  return bucket;
}

/** Deletes every version (bypassing governance) and the bucket; compliance-locked buckets are purged by
 * radosgw-admin when the cluster is ours, and otherwise left to expire. */
async function deleteBucket(bucket: string): Promise<void> {
  const client = adminClient();
  let locked = false;
  for (;;) {
    const page = await client.send(new ListObjectVersionsCommand({ Bucket: bucket }));
    const objects = [...(page.Versions ?? []), ...(page.DeleteMarkers ?? [])].map((v) => ({
      Key: v.Key,
      VersionId: v.VersionId,
    }));
    if (objects.length === 0) break;
    const result = await client.send(
      new DeleteObjectsCommand({
        Bucket: bucket,
        BypassGovernanceRetention: true,
        Delete: { Objects: objects, Quiet: true },
      }),
    );
    if ((result.Errors ?? []).length > 0) {
      locked = true;
      break;
    }
  }
  if (locked) {
    const conf = process.env.CEPH_CONF;
    if (conf === undefined) return;
    await promisify(execFile)("radosgw-admin", [
      "-c",
      conf,
      "bucket",
      "rm",
      `--bucket=${bucket}`,
      "--purge-objects",
    ]);
  } else {
    await client.send(new DeleteBucketCommand({ Bucket: bucket }));
  }
  createdBuckets.delete(bucket);
}

function locationOf(bucket: string, prefix = "repo"): string {
  return `s3:${endpoint}/${bucket}${prefix === "" ? "" : `/${prefix}`}`;
}

function newHandle(type: FileType): FileHandle {
  return { type, name: type === "config" ? "" : randomBytes(32).toString("hex") };
}

async function listNames(backend: S3Backend, type: FileType): Promise<string[]> {
  const names: string[] = [];
  for await (const info of backend.list(type)) names.push(info.name);
  return names;
}

function expectCode(err: unknown, code: ErrorCode): void {
  const shown = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  expect(code === "NOT_FOUND" ? isNotFound(err) : hasCode(err, code), `expected ${code}, got ${shown}`).toBe(
    true,
  );
}

/** What a user would see of an error: message and hint. */
function shownText(err: unknown): string {
  return err instanceof BulwarkError ? `${err.message}\n${err.hint ?? ""}` : String(err);
}

async function bodyOf(bucket: string, key: string, versionId?: string): Promise<Buffer> {
  const response = await adminClient().send(
    new GetObjectCommand({ Bucket: bucket, Key: key, VersionId: versionId }),
  );
  return Buffer.from(
    await (response.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray(),
  );
}

async function versionsOf(bucket: string, key: string) {
  const page = await adminClient().send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: key }));
  return {
    versions: (page.Versions ?? []).filter((v) => v.Key === key),
    markers: (page.DeleteMarkers ?? []).filter((m) => m.Key === key),
  };
}

describe("S3Backend on Ceph RadosGW", () => {
  beforeAll(async () => {
    try {
      await startService();
    } catch (err) {
      const reason = `cannot start Ceph RadosGW with ${CEPH_SCRIPT}: ${err instanceof Error ? err.message : String(err)}`;
      if (process.env.CI === "true") throw new Error(reason, { cause: err });
      unavailable = reason;
      console.warn(`skipping the S3 tests: ${reason}`);
    }
  }, 300_000);

  afterAll(async () => {
    for (const bucket of [...createdBuckets]) await deleteBucket(bucket).catch(() => undefined);
    admin?.destroy();
    if (startedHere && process.env.BULWARK_KEEP_SERVICES !== "1") {
      await promisify(execFile)("bash", [CEPH_SCRIPT, "down"], { timeout: 60_000 });
    }
  }, 120_000);

  beforeEach((ctx) => {
    if (unavailable !== undefined) ctx.skip(unavailable);
  });

  describeBackend("s3", async () => {
    const bucket = await createBucket(false);
    const backend = await openS3Backend(locationOf(bucket), {});
    return { backend, cleanup: () => deleteBucket(bucket) };
  });

  // Object Lock bucket without automatic retention (the suite checks that a fresh file has none), so the
  // suite's retention tests drive extendRetention in governance mode, which cleanup bypasses.
  describeBackend("s3 object-lock", async () => {
    const bucket = await createBucket(true);
    const backend = await openS3Backend(locationOf(bucket), {});
    return { backend, cleanup: () => deleteBucket(bucket) };
  });

  describe("immutability", () => {
    it("writes every file but locks with the configured retention and reads it back", async () => {
      const bucket = await createBucket(true);
      const backend = await openS3Backend(locationOf(bucket), {
        immutability: { mode: "governance", days: 1 },
        partBytes: 5 * MiB,
      });
      try {
        expect(backend.capabilities.retentionModes).toEqual(["compliance", "governance"]);
        const before = Date.now();
        for (const type of ["config", "key", "snapshot", "index", "pack", "lock"] as const) {
          const h = newHandle(type);
          await backend.save(h, bufferSource(randomBytes(1000)));
          const retention = await backend.getRetention?.(h);
          if (type === "lock") {
            expect(retention, "lock files are never locked").toBeUndefined();
            await backend.remove(h);
            continue;
          }
          expect(retention?.mode, type).toBe("governance");
          const until = retention?.until.getTime() ?? 0;
          expect(until).toBeGreaterThanOrEqual(before + 86_400_000 - 1000);
          expect(until).toBeLessThanOrEqual(Date.now() + 86_400_000 + 1000);
          expectCode(await errorOf(backend.remove(h)), "RETENTION_LOCKED");
          expectCode(await errorOf(backend.save(h, bufferSource(randomBytes(10)))), "RETENTION_LOCKED");
        }
        // A multipart upload carries the retention too.
        const big = newHandle("pack");
        await backend.save(big, deterministicSource(12 * MiB, "multipart with lock"));
        expect((await backend.getRetention?.(big))?.mode).toBe("governance");
        expect((await backend.stat(big)).size).toBe(12 * MiB);
      } finally {
        await backend.close();
      }
    });

    it("refuses to shorten or weaken a retention, with a clear error", async () => {
      const bucket = await createBucket(true);
      const backend = await openS3Backend(locationOf(bucket), {
        immutability: { mode: "compliance", days: 2 / 1440 },
      });
      try {
        const h = newHandle("index");
        await backend.save(h, bufferSource(randomBytes(100)));
        const current = await backend.getRetention?.(h);
        expect(current?.mode).toBe("compliance");
        const shorter = new Date((current?.until.getTime() ?? 0) - 60_000);
        const err = await errorOf(
          backend.extendRetention?.(h, { mode: "compliance", until: shorter }) ?? Promise.resolve(),
        );
        expectCode(err, "RETENTION_LOCKED");
        expect(shownText(err)).toMatch(/shorten/);
        expectCode(
          await errorOf(
            backend.extendRetention?.(h, { mode: "governance", until: new Date(Date.now() + 3_600_000) }) ??
              Promise.resolve(),
          ),
          "RETENTION_LOCKED",
        );
        const later = new Date(Math.ceil(Date.now() / 1000) * 1000 + 5 * 60_000);
        await backend.extendRetention?.(h, { mode: "compliance", until: later });
        expect(Math.abs((await backend.getRetention?.(h))!.until.getTime() - later.getTime())).toBeLessThan(
          1000,
        );
      } finally {
        await backend.close();
      }
    });

    it("remove on a versioned bucket deletes every version, and a locked version cannot be destroyed", async () => {
      const bucket = await createBucket(true);
      const backend = await openS3Backend(locationOf(bucket, "p"), {});
      try {
        // An unlocked file replaced twice: remove leaves no version and no delete marker behind.
        const h = newHandle("index");
        for (let i = 0; i < 3; i++) await backend.save(h, bufferSource(randomBytes(100 + i)));
        const key = `p/index/${h.name}`;
        expect((await versionsOf(bucket, key)).versions).toHaveLength(3);
        await backend.remove(h);
        expectCode(await errorOf(backend.stat(h)), "NOT_FOUND");
        expect(await versionsOf(bucket, key)).toEqual({ versions: [], markers: [] });

        // A locked current version: refused, and nothing changes (no delete marker either).
        const locked = newHandle("pack");
        const data = randomBytes(2000);
        await backend.save(locked, bufferSource(data));
        await backend.extendRetention?.(locked, {
          mode: "governance",
          until: new Date(Date.now() + 600_000),
        });
        await backend.save(newHandle("pack"), bufferSource(randomBytes(10)));
        expectCode(await errorOf(backend.remove(locked)), "RETENTION_LOCKED");
        expect((await backend.load(locked)).equals(data)).toBe(true);
        const lockedKey = `p/data/${locked.name.slice(0, 2)}/${locked.name}`;
        expect((await versionsOf(bucket, lockedKey)).markers).toEqual([]);
      } finally {
        await backend.close();
      }
    });

    it("the attack: with the backup credentials, delete, shorten and overwrite of locked data fail, and the repository restores", async () => {
      const bucket = await createBucket(true);
      const location = locationOf(bucket, "vault");
      // Compliance with a short retention, so even an unpurgeable leftover expires within minutes.
      const options: S3Options = { immutability: { mode: "compliance", days: 3 / 1440 } };
      const backend = await openS3Backend(location, options);
      const blobs = Array.from({ length: 10 }, (_, i) => randomBytes(3000 + i));
      const ids: string[] = [];
      try {
        const repo = await Repository.init(backend, "pw", { kdf: weakKdf, packSize: 8192 });
        const writer = new PackWriter(repo);
        for (const b of blobs) ids.push(await writer.addPlain("data", b));
        await writer.flush();
        await repo.saveDocument("index", { version: 1, packs: writer.takeNewPacks() });
      } finally {
        await backend.close();
      }

      // The attacker holds the same credentials the backup runs with (the SDK's default chain here).
      const attacker = new S3Client({
        endpoint,
        region: "us-east-1",
        forcePathStyle: true,
        requestChecksumCalculation: "WHEN_REQUIRED",
        maxAttempts: 1,
      });
      const classify = (err: unknown) => s3Error(err, "remove", "a locked object", location, bucket);
      try {
        const page = await attacker.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: "vault/" }));
        const originals = (page.Versions ?? []).filter((v) => !(v.Key ?? "").includes("/locks/"));
        expect(originals.length).toBeGreaterThanOrEqual(4); // key, config, packs, index
        const contents = new Map<string, Buffer>();
        for (const v of originals)
          contents.set(`${v.Key}@${v.VersionId}`, await bodyOf(bucket, v.Key!, v.VersionId));

        for (const v of originals) {
          const target = { Bucket: bucket, Key: v.Key, VersionId: v.VersionId };
          // 1. Delete the version, with and without the governance bypass.
          expectCode(
            classify(await errorOf(attacker.send(new DeleteObjectCommand(target)))),
            "RETENTION_LOCKED",
          );
          expectCode(
            classify(
              await errorOf(
                attacker.send(new DeleteObjectCommand({ ...target, BypassGovernanceRetention: true })),
              ),
            ),
            "RETENTION_LOCKED",
          );
          // 2. Shorten the retention, or weaken it to governance.
          expectCode(
            classify(
              await errorOf(
                attacker.send(
                  new PutObjectRetentionCommand({
                    ...target,
                    Retention: { Mode: "COMPLIANCE", RetainUntilDate: new Date(Date.now() + 5_000) },
                  }),
                ),
              ),
            ),
            "RETENTION_LOCKED",
          );
          expectCode(
            classify(
              await errorOf(
                attacker.send(
                  new PutObjectRetentionCommand({
                    ...target,
                    Retention: { Mode: "GOVERNANCE", RetainUntilDate: new Date(Date.now() + 3_600_000) },
                    BypassGovernanceRetention: true,
                  }),
                ),
              ),
            ),
            "RETENTION_LOCKED",
          );
        }
        // 3. Multi-delete: refused per key (HTTP 200 with Errors).
        const multi = await attacker.send(
          new DeleteObjectsCommand({
            Bucket: bucket,
            Delete: { Objects: originals.map((v) => ({ Key: v.Key, VersionId: v.VersionId })) },
          }),
        );
        expect(multi.Deleted ?? []).toEqual([]);
        expect(new Set((multi.Errors ?? []).map((e) => e.Code))).toEqual(new Set(["AccessDenied"]));

        // 4. Overwrite and plain delete: S3 cannot refuse these on a versioned bucket, but they only add a
        // new version or a delete marker on top; the locked versions are untouched.
        const packs = originals.filter((v) => (v.Key ?? "").includes("/data/"));
        expect(packs.length).toBeGreaterThanOrEqual(3);
        const first = packs[0]!;
        const second = originals.find((v) => (v.Key ?? "").includes("/index/"))!;
        await attacker.send(new PutObjectCommand({ Bucket: bucket, Key: first.Key, Body: "ransom note" }));
        await attacker.send(new DeleteObjectCommand({ Bucket: bucket, Key: second.Key }));
        // Through Bulwark the same credentials cannot overwrite or remove retained files at all.
        const reopened = await openS3Backend(location, options);
        try {
          const config: FileHandle = { type: "config", name: "" };
          expectCode(await errorOf(reopened.save(config, bufferSource(randomBytes(10)))), "RETENTION_LOCKED");
          const untouched = packs[2]!.Key!.split("/").pop()!;
          expectCode(await errorOf(reopened.remove({ type: "pack", name: untouched })), "RETENTION_LOCKED");
          // Reads go to each file's genuine (oldest, locked) version: the overwritten pack still reads as
          // Bulwark wrote it, and the index hidden by a delete marker is still listed and readable.
          const firstPack: FileHandle = { type: "pack", name: first.Key!.split("/").pop()! };
          const hiddenIndex: FileHandle = { type: "index", name: second.Key!.split("/").pop()! };
          expect(
            (await reopened.load(firstPack)).equals(contents.get(`${first.Key}@${first.VersionId}`)!),
          ).toBe(true);
          expect(await listNames(reopened, "index")).toEqual([hiddenIndex.name]);
          expect((await reopened.stat(hiddenIndex)).size).toBe(
            contents.get(`${second.Key}@${second.VersionId}`)!.length,
          );
          expect((await reopened.getRetention!(firstPack))?.mode).toBe("compliance");
          // Both are reported, with what lies over them, and the store is not empty for an init.
          const report = await reopened.tampering!();
          expect(report.files.map((f) => `${f.handle.type}/${f.handle.name}`).sort()).toEqual(
            [`pack/${firstPack.name}`, `index/${hiddenIndex.name}`].sort(),
          );
          expect(report.files.find((f) => f.handle.type === "index")?.foreign[0]?.deleteMarker).toBe(true);
          expect(report.files.find((f) => f.handle.type === "pack")?.foreign[0]?.deleteMarker).toBe(false);
          expect(report.storedVersions).toBe(originals.length + 2);
          // Recovery with the same credentials: the attacker's version and marker are not locked.
          const dry = await reopened.untamper!({ dryRun: true });
          expect(dry.actions.map((a) => a.outcome)).toEqual(["would-remove", "would-remove"]);
          const undone = await reopened.untamper!();
          expect(undone.actions.map((a) => a.outcome)).toEqual(["removed", "removed"]);
          expect((await reopened.tampering!()).files).toEqual([]);
        } finally {
          await reopened.close();
        }

        for (const v of originals) {
          const now = await bodyOf(bucket, v.Key!, v.VersionId);
          expect(now.equals(contents.get(`${v.Key}@${v.VersionId}`)!), `${v.Key} changed`).toBe(true);
        }
        // Only the locked versions are left, current again.
        for (const key of [first.Key!, second.Key!]) {
          const { versions, markers } = await versionsOf(bucket, key);
          expect(markers).toEqual([]);
          expect(versions.map((v) => v.VersionId)).toEqual([
            key === first.Key ? first.VersionId : second.VersionId,
          ]);
        }
      } finally {
        attacker.destroy();
      }

      const restored = await openS3Backend(location, options);
      try {
        const repo = await Repository.open(restored, "pw");
        await repo.loadIndex();
        for (const [i, id] of ids.entries()) expect((await repo.loadBlob(id)).equals(blobs[i]!)).toBe(true);
      } finally {
        await restored.close();
      }
    });
  });

  describe("errors name the target and never a secret", () => {
    it("a bucket without Object Lock when immutability is asked for", async () => {
      const bucket = await createBucket(false);
      const err = await errorOf(
        openS3Backend(locationOf(bucket), { immutability: { mode: "compliance", days: 30 } }),
      );
      expectCode(err, "CONFIG_INVALID");
      expect(shownText(err)).toContain(bucket);
      expect(shownText(err)).toMatch(/Object Lock/);
    });

    it("wrong credentials give AUTH without the secret", async () => {
      const bucket = await createBucket(false);
      const secret = `wrong-secret-${randomBytes(8).toString("hex")}`;
      for (const accessKeyId of [process.env.AWS_ACCESS_KEY_ID ?? "x", "NOSUCHACCESSKEY"]) {
        const err = await errorOf(
          openS3Backend(locationOf(bucket), { credentials: { accessKeyId, secretAccessKey: secret } }),
        );
        expectCode(err, "AUTH");
        expect(shownText(err)).toContain(bucket);
        expect(shownText(err)).not.toContain(secret);
        expect(JSON.stringify(err)).not.toContain(secret);
      }
    });

    it("credentials that stop working give AUTH on file operations too (HEAD 403 has no body)", async () => {
      const bucket = await createBucket(false);
      const location = locationOf(bucket);
      const good = await openS3Backend(location, {});
      const h = newHandle("snapshot");
      await good.save(h, bufferSource(randomBytes(10)));
      await good.close();
      const secret = `revoked-${randomBytes(8).toString("hex")}`;
      const client = new S3Client({
        endpoint,
        region: "us-east-1",
        forcePathStyle: true,
        maxAttempts: 1,
        credentials: { accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? "x", secretAccessKey: secret },
      });
      const bad = new S3Backend(client, parseS3Location(location), { objectLock: false, versioned: false });
      try {
        const operations: (() => Promise<unknown>)[] = [
          () => bad.stat(h),
          () => bad.load(h),
          () => bad.save(newHandle("pack"), bufferSource(randomBytes(10))),
          () => bad.remove(h),
          () => listNames(bad, "snapshot"),
        ];
        for (const operation of operations) {
          const err = await errorOf(operation());
          expectCode(err, "AUTH");
          expect(shownText(err)).toContain(location);
          expect(shownText(err)).not.toContain(secret);
        }
      } finally {
        await bad.close();
      }
    });

    it("a missing bucket is NO_REPOSITORY naming the bucket", async () => {
      const bucket = `bulwark-missing-${randomBytes(6).toString("hex")}`;
      const err = await errorOf(openS3Backend(locationOf(bucket), {}));
      expectCode(err, "NO_REPOSITORY");
      expect(shownText(err)).toContain(`"${bucket}"`);
      expect(shownText(err)).toContain(endpoint);
    });

    it("an unreachable endpoint is TRANSIENT naming the endpoint", async () => {
      const err = await errorOf(openS3Backend("s3:http://127.0.0.1:9/some-bucket/x", { maxAttempts: 1 }));
      expectCode(err, "TRANSIENT");
      expect(shownText(err)).toContain("s3:http://127.0.0.1:9/some-bucket/x");
    });

    it("a location with credentials in it is refused without echoing them", () => {
      let err: unknown;
      try {
        parseS3Location("s3:https://AKIA:verysecret@host/bucket");
      } catch (e) {
        err = e;
      }
      expectCode(err, "CONFIG_INVALID");
      expect(shownText(err)).not.toContain("verysecret");
      expect(parseS3Location("s3:https://host:8443/bucket/a/b/")).toMatchObject({
        endpoint: "https://host:8443",
        bucket: "bucket",
        prefix: "a/b",
        display: "s3:https://host:8443/bucket/a/b",
      });
      expect(() => parseS3Location("s3:https://host/")).toThrow(/no bucket/);
    });
  });

  describe("unfinished uploads", () => {
    it("removeStaleTempFiles aborts this repository's old multipart uploads, not fresh or foreign ones", async () => {
      const bucket = await createBucket(true);
      const backend = await openS3Backend(locationOf(bucket, "repo"), {});
      const start = async (key: string): Promise<string> =>
        (await adminClient().send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }))).UploadId ??
        "";
      const uploads = async (): Promise<string[]> =>
        ((await adminClient().send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? [])
          .map((u) => u.Key ?? "")
          .sort();
      try {
        // Left by a killed process: a pack and an index of this repository, and uploads that are not ours.
        const killedPack = `repo/data/ab/${"ab".padEnd(64, "1")}`;
        const killedIndex = `repo/index/${"c".repeat(64)}`;
        const foreign = ["repo/exports/dump.tar", `other/data/ab/${"ab".padEnd(64, "2")}`];
        for (const key of [killedPack, killedIndex, ...foreign]) await start(key);
        await sleep(2500);
        // One that is being written right now.
        const live = `repo/data/cd/${"cd".padEnd(64, "3")}`;
        await start(live);

        expect(await backend.removeStaleTempFiles(1500)).toBe(2);
        expect(await uploads()).toEqual([...foreign, live].sort());
        expect(await backend.removeStaleTempFiles(3_600_000)).toBe(0);
      } finally {
        const left = await adminClient().send(new ListMultipartUploadsCommand({ Bucket: bucket }));
        for (const u of left.Uploads ?? []) {
          await adminClient().send(
            new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId }),
          );
        }
        await backend.close();
      }
    });
  });

  describe("layout and listing", () => {
    it("uses the local backend's paths under the prefix and skips stray keys", async () => {
      const bucket = await createBucket(false);
      const backend = await openS3Backend(locationOf(bucket, "a/b"), {});
      try {
        const pack = newHandle("pack");
        const snapshot = newHandle("snapshot");
        await backend.save(pack, bufferSource(randomBytes(10)));
        await backend.save(snapshot, bufferSource(randomBytes(10)));
        await backend.save({ type: "config", name: "" }, bufferSource(randomBytes(10)));
        const stray = [
          `a/b/data/${pack.name.slice(0, 2)}/not-hex`,
          `a/b/data/zz/${pack.name}`,
          `a/b/snapshots/${snapshot.name}.tmp`,
          `a/b/snapshots/sub/${snapshot.name}`,
          `a/bc/snapshots/${newHandle("snapshot").name}`,
        ];
        for (const key of stray)
          await adminClient().send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: "x" }));
        const page = await adminClient().send(new ListObjectVersionsCommand({ Bucket: bucket }));
        const keys = (page.Versions ?? []).map((v) => v.Key).filter((k) => !stray.includes(k!));
        expect(keys.sort()).toEqual(
          [
            `a/b/config`,
            `a/b/data/${pack.name.slice(0, 2)}/${pack.name}`,
            `a/b/snapshots/${snapshot.name}`,
          ].sort(),
        );
        expect(await listNames(backend, "pack")).toEqual([pack.name]);
        expect(await listNames(backend, "snapshot")).toEqual([snapshot.name]);
      } finally {
        await backend.close();
      }
    });

    it("lists more than one page", async () => {
      const bucket = await createBucket(false);
      const backend = await openS3Backend(locationOf(bucket), { connections: 16 });
      try {
        const names = Array.from({ length: 1100 }, () => newHandle("lock"));
        for (let i = 0; i < names.length; i += 50) {
          await Promise.all(
            names.slice(i, i + 50).map((h) => backend.save(h, bufferSource(Buffer.from("l")))),
          );
        }
        const listed = await listNames(backend, "lock");
        expect(listed).toHaveLength(1100);
        expect(new Set(listed)).toEqual(new Set(names.map((h) => h.name)));
      } finally {
        await backend.close();
      }
    }, 300_000);

    it("ifAbsent refuses to overwrite, on plain and versioned buckets, single and multipart", async () => {
      for (const objectLock of [false, true]) {
        const bucket = await createBucket(objectLock);
        const backend = await openS3Backend(locationOf(bucket), { partBytes: 5 * MiB });
        try {
          for (const size of [100, 6 * MiB]) {
            const h = newHandle("key");
            const data = randomBytes(size);
            await backend.save(h, bufferSource(data), { ifAbsent: true });
            expectCode(
              await errorOf(backend.save(h, bufferSource(randomBytes(size)), { ifAbsent: true })),
              "ALREADY_EXISTS",
            );
            expect((await backend.load(h)).equals(data)).toBe(true);
          }
        } finally {
          await backend.close();
        }
      }
    });
  });

  it("a Repository round trip: init, pack blobs, index, reopen, load", async () => {
    const bucket = await createBucket(false);
    const location = locationOf(bucket, "backups/host1");
    const blobs = Array.from({ length: 30 }, (_, i) => randomBytes(5000 + i * 100));
    const ids: string[] = [];
    const backend = await openS3Backend(location, {});
    try {
      const repo = await Repository.init(backend, "pw", { kdf: weakKdf, packSize: 32 * 1024 });
      const writer = new PackWriter(repo);
      for (const b of blobs) ids.push(await writer.addPlain("data", b));
      await writer.flush();
      await repo.saveDocument("index", { version: 1, packs: writer.takeNewPacks() });
      expectCode(await errorOf(Repository.init(backend, "pw", { kdf: weakKdf })), "ALREADY_EXISTS");
    } finally {
      await backend.close();
    }
    const reopened = await openS3Backend(location, {});
    try {
      const repo = await Repository.open(reopened, "pw");
      expect((await repo.loadIndex()).damaged).toEqual([]);
      for (const [i, id] of ids.entries()) expect((await repo.loadBlob(id)).equals(blobs[i]!)).toBe(true);
      expect((await listNames(reopened, "pack")).length).toBeGreaterThan(1);
    } finally {
      await reopened.close();
    }
  });

  it("throughput of a 256 MiB object (save with multipart, then openRead)", async () => {
    const bucket = await createBucket(false);
    const backend = await openS3Backend(locationOf(bucket), {});
    const size = 256 * MiB;
    const source = deterministicSource(size, "throughput");
    try {
      const h = newHandle("pack");
      const t0 = performance.now();
      await backend.save(h, source);
      const t1 = performance.now();
      const hash = createHash("sha256");
      for await (const piece of backend.openRead(h)) hash.update(piece);
      const t2 = performance.now();
      const expected = createHash("sha256");
      for await (const piece of source.open()) expected.update(piece);
      expect(hash.digest("hex")).toBe(expected.digest("hex"));
      const rate = (ms: number) => `${((size / MiB / ms) * 1000).toFixed(1)} MiB/s`;
      console.log(
        `S3 (${endpoint}) 256 MiB: save ${(t1 - t0).toFixed(0)} ms = ${rate(t1 - t0)}, openRead ${(t2 - t1).toFixed(0)} ms = ${rate(t2 - t1)}`,
      );
    } finally {
      await backend.close();
    }
  }, 600_000);
});

describe("S3 error classification (no server needed)", () => {
  const target = "s3:http://example.invalid/b/p";
  const sdkError = (name: string, status: number | undefined, message = "UnknownError", extra = {}) =>
    Object.assign(new Error(message), { name, $metadata: { httpStatusCode: status }, ...extra });
  const cases: [string, unknown, ErrorCode][] = [
    ["NoSuchKey", sdkError("NoSuchKey", 404), "NOT_FOUND"],
    ["HEAD 404", sdkError("NotFound", 404), "NOT_FOUND"],
    ["NoSuchBucket", sdkError("NoSuchBucket", 404), "NO_REPOSITORY"],
    ["object lock", sdkError("AccessDenied", 403, "forbidden by object lock"), "RETENTION_LOCKED"],
    [
      "shorten",
      sdkError("AccessDenied", 403, "proposed retain-until date shortens an existing retention period"),
      "RETENTION_LOCKED",
    ],
    ["AccessDenied", sdkError("AccessDenied", 403), "AUTH"],
    ["InvalidAccessKeyId", sdkError("InvalidAccessKeyId", 403), "AUTH"],
    ["SignatureDoesNotMatch", sdkError("SignatureDoesNotMatch", 403), "AUTH"],
    ["HEAD 403", sdkError("Unknown", 403), "AUTH"],
    ["SlowDown", sdkError("SlowDown", 503), "TRANSIENT"],
    ["InternalError", sdkError("InternalError", 500), "TRANSIENT"],
    ["502", sdkError("Unknown", 502), "TRANSIENT"],
    ["BadDigest", sdkError("BadDigest", 400), "TRANSIENT"],
    ["ECONNRESET", Object.assign(new Error("socket hang up"), { code: "ECONNRESET" }), "TRANSIENT"],
    ["AbortError", sdkError("AbortError", undefined), "CANCELLED"],
    ["other", sdkError("InvalidArgument", 400), "IO"],
  ];
  for (const [label, err, code] of cases) {
    it(`${label} -> ${code}`, () => {
      const classified = s3Error(err, "read", "pack/ab", target, "b");
      expectCode(classified, code);
      expect((classified as Error).message).toContain(code === "NO_REPOSITORY" ? '"b"' : target);
    });
  }
});

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
