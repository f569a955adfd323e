/**
 * The real servers of the tests, for test files that start what they need themselves (scripts/test.sh starts
 * them once for a whole run and exports their variables; a file run on its own starts them here): the
 * service scripts, an S3 client for the test Ceph RGW and a bucket with Object Lock, a free loopback port.
 */
import { execFile } from "node:child_process";
import { createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import type { S3Client } from "@aws-sdk/client-s3";

const SERVICES = fileURLToPath(new URL("../../scripts/services/", import.meta.url));

/**
 * Runs `scripts/services/NAME.sh up` unless `needs` (a variable it exports) is already set, and copies the
 * variables it prints (`export K=V` lines) into process.env.
 */
export async function startService(name: string, needs: string): Promise<void> {
  if (process.env[needs]) return;
  const { stdout } = await promisify(execFile)("bash", [join(SERVICES, `${name}.sh`), "up"], {
    timeout: 280_000,
  });
  for (const line of stdout.split("\n")) {
    const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m?.[1] && m[2] !== undefined) process.env[m[1]] = m[2].replace(/^'(.*)'$/, "$1");
  }
}

/** A client of the test Ceph RGW (S3_ENDPOINT) with the credentials of the environment. */
export async function testS3Client(extra: { maxAttempts?: number } = {}): Promise<S3Client> {
  const { S3Client } = await import("@aws-sdk/client-s3");
  return new S3Client({
    endpoint: process.env.S3_ENDPOINT,
    region: process.env.AWS_REGION ?? "us-east-1",
    forcePathStyle: true,
    requestChecksumCalculation: "WHEN_REQUIRED",
    ...extra,
  });
}

/** Creates a bucket with Object Lock enabled, named `label-<time>`; returns its name. */
export async function createLockedBucket(label: string): Promise<string> {
  const { CreateBucketCommand } = await import("@aws-sdk/client-s3");
  const bucket = `${label}-${Date.now().toString(36)}`;
  await (
    await testS3Client()
  ).send(new CreateBucketCommand({ Bucket: bucket, ObjectLockEnabledForBucket: true }));
  return bucket;
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve, reject) => {
    probe.on("error", reject);
    probe.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (probe.address() as { port: number }).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}
