#!/usr/bin/env node
// Small S3 helper for bench/run-remote.sh (AWS SDK v3 from node_modules, path-style, checksums only when
// required, as RadosGW wants them). Credentials and region come from the AWS_* environment.
//
//   node bench/s3-bucket.mjs create ENDPOINT BUCKET   create the bucket (ok if it exists), empty it
//   node bench/s3-bucket.mjs size   ENDPOINT BUCKET   print the total bytes of its objects
//   node bench/s3-bucket.mjs delete ENDPOINT BUCKET   delete every object, then the bucket
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  ListObjectsV2Command,
  S3Client,
} from "@aws-sdk/client-s3";

const [cmd, endpoint, bucket] = process.argv.slice(2);
if (!cmd || !endpoint || !bucket) {
  process.stderr.write("usage: node bench/s3-bucket.mjs create|size|delete ENDPOINT BUCKET\n");
  process.exit(2);
}
const s3 = new S3Client({
  endpoint,
  region: process.env.AWS_REGION ?? "us-east-1",
  forcePathStyle: true,
  requestChecksumCalculation: "WHEN_REQUIRED",
  responseChecksumValidation: "WHEN_REQUIRED",
});

async function* objects() {
  let token;
  do {
    const r = await s3.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
    for (const o of r.Contents ?? []) yield o;
    token = r.IsTruncated ? r.NextContinuationToken : undefined;
  } while (token);
}

async function empty() {
  let batch = [];
  const flush = async () => {
    if (batch.length === 0) return;
    await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: batch, Quiet: true } }));
    batch = [];
  };
  for await (const o of objects()) {
    batch.push({ Key: o.Key });
    if (batch.length === 1000) await flush();
  }
  await flush();
}

const exists = (err) =>
  ["BucketAlreadyOwnedByYou", "BucketAlreadyExists"].includes(err?.name ?? err?.Code ?? "");

switch (cmd) {
  case "create":
    try {
      await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    } catch (err) {
      if (!exists(err)) throw err;
    }
    await empty();
    break;
  case "size": {
    let bytes = 0;
    for await (const o of objects()) bytes += o.Size ?? 0;
    process.stdout.write(`${bytes}\n`);
    break;
  }
  case "delete":
    try {
      await empty();
      await s3.send(new DeleteBucketCommand({ Bucket: bucket }));
    } catch (err) {
      if (err?.name !== "NoSuchBucket") throw err;
    }
    break;
  default:
    process.stderr.write(`unknown command ${cmd}\n`);
    process.exit(2);
}
