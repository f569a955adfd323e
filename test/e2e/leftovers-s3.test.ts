/**
 * Leftovers on S3 (src/ops/leftovers.ts, docs/design.md §13, §21) against the real Ceph RGW: a backup killed
 * with SIGKILL mid-upload leaves an unfinished multipart upload and its lock; the next backup removes the
 * dead process's lock and keeps the upload (younger than the grace: another writer's could be running);
 * removeLeftovers aborts the uploads past the grace (ListMultipartUploads + AbortMultipartUpload) and keeps
 * one started a moment ago.
 */
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { openBackendAt } from "../../src/backend/registry.js";
import { systemClock } from "../../src/core/clock.js";
import { removeLeftovers } from "../../src/ops/leftovers.js";
import { Repository } from "../../src/repository/repository.js";
import { createLockedBucket, startService, testS3Client } from "../helpers/services.js";
import {
  CLI,
  MiB,
  describeRun,
  makeTempDir,
  randomData,
  removeTempDirs,
  runCli,
  spawnNode,
} from "./helpers.js";

afterAll(removeTempDirs);
beforeAll(async () => {
  await startService("ceph", "S3_ENDPOINT");
});

describe("SIGKILL mid-upload to S3, then back up again", () => {
  it("the next backup removes the dead lock; uploads past the grace are aborted, a recent one is kept", async () => {
    const { ListMultipartUploadsCommand, ListObjectsV2Command, CreateMultipartUploadCommand } = await import(
      "@aws-sdk/client-s3"
    );
    const client = await testS3Client();
    const bucket = await createLockedBucket("bulwark-leftovers");
    const prefix = "app";
    const location = `s3:${process.env.S3_ENDPOINT}/${bucket}/${prefix}`;
    const uploads = async (): Promise<{ key: string; id: string }[]> =>
      (
        (await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: `${prefix}/` })))
          .Uploads ?? []
      ).map((u) => ({ key: u.Key!, id: u.UploadId! }));
    const locks = async (): Promise<string[]> =>
      (
        (await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}/locks/` })))
          .Contents ?? []
      ).map((o) => o.Key!);

    const dir = await makeTempDir("leftovers-s3");
    const password = `pw-${randomBytes(8).toString("hex")}`;
    const env = { BULWARK_PASSWORD: password, BULWARK_REPOSITORY: location, HOME: dir };
    const init = await runCli(["init"], { env });
    expect(init.code, describeRun(["init"], init)).toBe(0);
    await mkdir(join(dir, "src"));
    await writeFile(join(dir, "src", "big.bin"), randomData(160 * MiB));

    // Killed while a pack (larger than one 16 MiB part) is being uploaded in parts.
    const { child, result } = spawnNode([CLI, "backup", join(dir, "src")], { env, timeoutMs: 120_000 });
    const killedPid = child.pid!;
    const deadline = Date.now() + 90_000;
    while (Date.now() < deadline && child.exitCode === null) {
      if ((await uploads()).length > 0) {
        child.kill("SIGKILL");
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const killed = await result;
    expect(killed.signal, describeRun(["backup"], killed)).toBe("SIGKILL");
    const left = await uploads();
    expect(left.length).toBeGreaterThan(0);
    expect(await locks()).toHaveLength(1);

    // The next backup: the dead process's lock goes; the upload is younger than the grace, so it stays.
    const again = await runCli(["backup", join(dir, "src")], { env, timeoutMs: 180_000 });
    expect(again.code, describeRun(["backup"], again)).toBe(0);
    expect(await locks()).toEqual([]);
    expect(again.stdout + again.stderr).toContain(`the lock of dead process ${killedPid}`);
    expect((await uploads()).map((u) => u.id)).toEqual(expect.arrayContaining(left.map((u) => u.id)));

    // Past a grace of 3 s the killed upload is aborted; one started just now (a live writer's) is kept.
    await new Promise((resolve) => setTimeout(resolve, 3500));
    const key = `${prefix}/data/00/00${randomBytes(31).toString("hex")}`;
    const fresh = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
    const backend = await openBackendAt(location, { create: false });
    try {
      const repo = await Repository.open(backend, password);
      const events: string[] = [];
      const removed = await removeLeftovers({
        repo,
        clock: systemClock,
        graceMs: 3000,
        events: (e) => {
          if (e.type === "message") events.push(e.message);
        },
      });
      expect(removed.error).toBeUndefined();
      expect(removed.tempFiles).toBe(left.length);
      expect(events.join("\n")).toContain(`${left.length} temporary file`);
      expect(await uploads()).toEqual([{ key, id: fresh.UploadId }]);
    } finally {
      await backend.close();
    }

    // Nothing stored was harmed.
    const check = await runCli(["check", "--read-data"], { env, timeoutMs: 180_000 });
    expect(check.code, describeRun(["check"], check)).toBe(0);
  });
});
