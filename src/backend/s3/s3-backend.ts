/**
 * A Backend on an S3 bucket (AWS, Ceph RadosGW, ...), with optional Object Lock immutability.
 *
 * Glossary: a Target's location is `s3:http(s)://endpoint/bucket/prefix`; under the prefix the keys are laid
 * out like the local backend's paths (layout.ts): config, keys/<name>, locks/<name>, snapshots/<name>,
 * index/<name>, data/<first two hex digits>/<name>.
 *
 * save, in steps:
 *   1. On a versioned bucket a replacing save HEADs the key first: a file whose current version is under
 *      retention is RETENTION_LOCKED (a new version would only hide it). ifAbsent: see below.
 *   2. A file of at most `partBytes` is read into one buffer and sent as a single PutObject. A larger one is
 *      a multipart upload: parts of `partBytes` are read from the source one at a time and uploaded with at
 *      most `partConcurrency` in flight, so memory stays at about (partConcurrency + 1) * partBytes whatever
 *      the file's size. Nothing is visible until CompleteMultipartUpload; any failure aborts the upload.
 *   3. Every PutObject and UploadPart carries Content-MD5, which S3 verifies (RGW 16 ignores the newer
 *      x-amz-checksum-* headers), and the SDK is told to add checksums only WHEN_REQUIRED (its default,
 *      aws-chunked bodies with a trailer, is refused by RGW 16 with HTTP 411).
 *   4. With `immutability`, every file but a lock is written with ObjectLockMode + RetainUntilDate, and the
 *      retention is read back (GetObjectRetention of the new version) and compared. RGW 16 silently ignores
 *      the lock headers of CreateMultipartUpload (checked: the completed version has no retention), so a
 *      multipart version also gets PutObjectRetention right after CompleteMultipartUpload; a process killed
 *      in between leaves that pack unlocked until the maintenance step extends retention (see ifAbsent).
 *
 * ifAbsent: on an unversioned bucket a single PutObject sends `If-None-Match: *`, which S3 and RGW evaluate
 * atomically; a multipart file there is a HEAD before the upload, and two writers racing between the HEAD
 * and CompleteMultipartUpload may both succeed (the later one replacing the earlier). RGW 16 ignores
 * `If-None-Match` on versioned buckets, where the race is settled after the upload instead:
 *   a. list the key's versions: a current (non-delete-marker) version means ALREADY_EXISTS;
 *   b. upload without lock headers;
 *   c. list again: of the versions that appeared since (a), the oldest wins; a loser deletes its own version
 *      and reports ALREADY_EXISTS, the winner then locks its version with PutObjectRetention.
 * A rival's content can be current for the few milliseconds between its upload and its step (c), and a
 * process killed between (b) and the lock leaves that file unlocked until retention is extended by the
 * maintenance step (issue 3's lock-drift check, which must therefore also look for files with no retention).
 *
 * remove on a versioned bucket (every Object Lock bucket is versioned): a plain DeleteObject only adds a
 * delete marker and keeps every byte, which is not what pruning means. remove therefore deletes versions by
 * id: the current version (refused with RETENTION_LOCKED while it is retained, changing nothing), then the
 * key's older versions and delete markers. When an older version is itself still retained, a delete marker
 * is placed first so the file stays removed, and the old version's bytes go when a later cleanup (or a
 * lifecycle rule) finds its retention over.
 *
 * Multipart uploads a killed process left behind hold their parts (stored, and billed) without any object
 * to show for them; removeStaleTempFiles, which prune calls, aborts those of this repository's keys that
 * were started long enough ago that no live upload can be among them.
 */

import { createHash } from "node:crypto";
import type { Readable } from "node:stream";

import {
  DeleteObjectCommand,
  GetBucketVersioningCommand,
  GetObjectCommand,
  GetObjectLockConfigurationCommand,
  GetObjectRetentionCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  PutObjectCommand,
  PutObjectRetentionCommand,
  S3Client,
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  UploadPartCommand,
  type CompletedPart,
  type ObjectLockMode,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";

import {
  checkRange,
  handleToString,
  type Backend,
  type BackendCapabilities,
  type ByteRange,
  type FileHandle,
  type FileInfo,
  type FileType,
  type Retention,
  type RetentionMode,
  type SaveOptions,
  type SaveSource,
  type TamperReport,
  type TamperedFile,
  type UntamperAction,
  type UntamperOptions,
  type UntamperReport,
} from "../backend.js";
import { BulwarkError } from "../../core/errors.js";
import { httpStatus, s3Code, s3Error, type S3Action } from "./s3-errors.js";
import { parseS3Location, type S3Location } from "./s3-location.js";
import { systemClock } from "../../core/clock.js";
import { directoryOf, fileAt, layoutPath } from "../layout.js";
import { classifyVersions, isTampered, type KeyVersions, type StoredVersion } from "./s3-versions.js";

export interface S3Immutability {
  readonly mode: RetentionMode;
  /** How long each written file is retained, from the time it is written; fractions are allowed. */
  readonly days: number;
}

export interface S3Options {
  /** Region to sign for; default AWS_REGION, then us-east-1 (what RGW and most S3 servers accept). */
  readonly region?: string;
  /** A profile of ~/.aws/config; default: the SDK's chain (AWS_ACCESS_KEY_ID/..., AWS_PROFILE, ...). */
  readonly profile?: string;
  /** Explicit credentials, for embedding and tests; default: the SDK's credential chain. */
  readonly credentials?: S3ClientConfig["credentials"];
  /** Write every file but locks with this retention; the bucket must have Object Lock enabled. */
  readonly immutability?: S3Immutability;
  /** Requests worth having in flight at once (capabilities.connections); default 8. */
  readonly connections?: number;
  /** Multipart part size and the largest single PutObject; default 16 MiB, at least 5 MiB. */
  readonly partBytes?: number;
  /**
   * Parts of one file uploaded at once; default 3. With 16 MiB parts a 256 MiB save grew the process by
   * ~100 MiB on RGW (measured); 4 parts gave ~115 MiB for the same throughput on loopback.
   */
  readonly partConcurrency?: number;
  /** Attempts per request by the SDK's own retry (throttling, 5xx, resets); default 3. */
  readonly maxAttempts?: number;
}

const MiB = 1024 * 1024;
const DEFAULT_PART_BYTES = 16 * MiB;
const MIN_PART_BYTES = 5 * MiB;
const DAY_MS = 24 * 60 * 60 * 1000;
/** S3 keeps retain-until dates to the second (RGW: milliseconds); allow for rounding when comparing. */
const RETENTION_TOLERANCE_MS = 1000;

const SDK_MODES: Readonly<Record<RetentionMode, ObjectLockMode>> = {
  compliance: "COMPLIANCE",
  governance: "GOVERNANCE",
};

interface BucketFacts {
  readonly objectLock: boolean;
  readonly versioned: boolean;
}

/**
 * Opens an S3 location: checks that the bucket exists and the credentials work (GetObjectLockConfiguration
 * and GetBucketVersioning), and with `immutability` that the bucket has Object Lock enabled. Does not
 * create the bucket.
 */
export async function openS3Backend(
  location: string | S3Location,
  options: S3Options = {},
): Promise<S3Backend> {
  const parsed = typeof location === "string" ? parseS3Location(location) : location;
  const immutability = options.immutability;
  if (immutability !== undefined) {
    if (!(immutability.mode in SDK_MODES)) {
      throw new BulwarkError("CONFIG_INVALID", `unknown retention mode "${String(immutability.mode)}"`, {
        hint: 'use "compliance" or "governance"',
      });
    }
    if (!Number.isFinite(immutability.days) || immutability.days <= 0) {
      throw new BulwarkError(
        "CONFIG_INVALID",
        `the retention of ${parsed.display} must be a positive number of days, not ${immutability.days}`,
      );
    }
  }
  const client = createClient(parsed, options);
  let facts: BucketFacts;
  try {
    facts = await probeBucket(client, parsed);
  } catch (err) {
    client.destroy();
    throw err;
  }
  if (immutability !== undefined && !facts.objectLock) {
    client.destroy();
    throw new BulwarkError(
      "CONFIG_INVALID",
      `immutability (${immutability.mode}, ${immutability.days} days) is asked for, but the bucket "${parsed.bucket}" of ${parsed.display} does not have Object Lock enabled`,
      {
        hint:
          "Object Lock can only be enabled when a bucket is created: create a new bucket with Object Lock " +
          "(e.g. `aws s3api create-bucket --object-lock-enabled-for-bucket`) and use it; or, if this copy need " +
          "not be immutable, unset BULWARK_S3_IMMUTABLE (in bulwark.yaml: the target's immutability)",
      },
    );
  }
  return new S3Backend(client, parsed, facts, options);
}

export class S3Backend implements Backend {
  readonly location: string;
  readonly capabilities: BackendCapabilities;

  /** Present only when the bucket has Object Lock, as callers test for their presence. */
  getRetention?: (h: FileHandle, signal?: AbortSignal) => Promise<Retention | undefined>;
  extendRetention?: (h: FileHandle, retention: Retention, signal?: AbortSignal) => Promise<void>;

  private readonly bucket: string;
  private readonly prefix: string;
  private readonly versioned: boolean;
  private readonly immutability: S3Immutability | undefined;
  private readonly partBytes: number;
  private readonly partConcurrency: number;
  /**
   * On a bucket with Object Lock: reads go to the genuine version of each key (s3-versions.ts), found by
   * listing each type directory's versions once per open (the listing of keys, snapshots and index files
   * replaces the plain one; packs and the config cost one listing per 1000 keys on first use).
   */
  private readonly versionAware: boolean;
  /** Scans done (or under way) per scan prefix: key -> its versions. */
  private readonly scans = new Map<string, Promise<Map<string, KeyVersions>>>();
  private closed = false;

  /** Use openS3Backend, which checks the bucket; this constructor trusts `facts`. */
  constructor(
    private readonly client: S3Client,
    target: S3Location,
    facts: BucketFacts,
    options: S3Options = {},
  ) {
    this.location = target.display;
    this.bucket = target.bucket;
    this.prefix = target.prefix === "" ? "" : `${target.prefix}/`;
    this.versioned = facts.versioned || facts.objectLock;
    this.versionAware = facts.objectLock;
    this.immutability = options.immutability;
    this.partBytes = Math.max(MIN_PART_BYTES, options.partBytes ?? DEFAULT_PART_BYTES);
    this.partConcurrency = Math.max(1, options.partConcurrency ?? 3);
    const retentionModes: readonly RetentionMode[] = facts.objectLock
      ? Object.freeze(["compliance", "governance"] as const)
      : Object.freeze([]);
    this.capabilities = Object.freeze({
      connections: options.connections ?? 8,
      // A PUT replaces atomically; on a versioned bucket the old content stays as an older version.
      atomicReplace: true,
      retentionModes,
    });
    if (facts.objectLock) {
      this.getRetention = (h, signal) => this.readRetention(h, signal);
      this.extendRetention = (h, retention, signal) => this.putRetention(h, retention, signal);
      this.tampering = (signal) => this.findTampering(signal);
      this.untamper = (o) => this.removeTampering(o);
    }
  }

  tampering?: (signal?: AbortSignal) => Promise<TamperReport>;
  untamper?: (options?: UntamperOptions) => Promise<UntamperReport>;

  async stat(h: FileHandle, signal?: AbortSignal): Promise<FileInfo> {
    const key = this.keyOf(h);
    signal?.throwIfAborted();
    const versionId = await this.genuineVersion(h, key);
    const head = await this.call("stat", h, () =>
      this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key, VersionId: versionId }), {
        abortSignal: signal,
      }),
    );
    return { name: h.name, size: head.ContentLength ?? 0 };
  }

  async *list(type: FileType, signal?: AbortSignal): AsyncIterable<FileInfo> {
    this.assertOpen();
    signal?.throwIfAborted();
    if (type === "config") {
      const info = await this.stat({ type: "config", name: "" }, signal).catch((err: unknown) => {
        if (err instanceof BulwarkError && err.code === "NOT_FOUND") return undefined;
        throw err;
      });
      if (info !== undefined) yield { name: "", size: info.size };
      return;
    }
    if (this.versionAware && type !== "lock") {
      // One listing of the directory's versions, which also serves this open's reads of these files.
      const scan = this.scanPrefix(type);
      const found = this.listVersions(scan, signal);
      this.scans.set(scan, found);
      found.catch(ignore);
      for (const [key, k] of await found) {
        const file = fileAt(key.slice(this.prefix.length));
        if (file?.type !== type || k.genuine === undefined) continue;
        yield { name: file.name, size: k.genuine.size };
      }
      return;
    }
    const directory = `${this.prefix}${directoryOf(type)}/`;
    let token: string | undefined;
    do {
      signal?.throwIfAborted();
      const page = await this.call("list", `${type} files`, () =>
        this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: directory, ContinuationToken: token }),
          { abortSignal: signal },
        ),
      );
      for (const object of page.Contents ?? []) {
        // Stray keys (other tools' files, a pack in the wrong data/xx) could not be loaded by name.
        const file = fileAt(object.Key?.slice(this.prefix.length) ?? "");
        if (file?.type !== type) continue;
        yield { name: file.name, size: object.Size ?? 0 };
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  async load(h: FileHandle, range?: ByteRange, signal?: AbortSignal): Promise<Buffer> {
    const pieces: Uint8Array[] = [];
    for await (const piece of this.openRead(h, range, signal)) pieces.push(piece);
    return pieces.length === 1 && pieces[0] instanceof Buffer ? pieces[0] : Buffer.concat(pieces);
  }

  async *openRead(h: FileHandle, range?: ByteRange, signal?: AbortSignal): AsyncIterable<Uint8Array> {
    const key = this.keyOf(h);
    checkRange(range);
    signal?.throwIfAborted();
    if (range?.length === 0) {
      // An empty range cannot be written as an HTTP Range; the file must still exist.
      await this.stat(h, signal);
      return;
    }
    const header =
      range === undefined
        ? undefined
        : `bytes=${range.offset}-${range.length === undefined ? "" : range.offset + range.length - 1}`;
    const versionId = await this.genuineVersion(h, key);
    let body: Readable;
    try {
      const response = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: header, VersionId: versionId }),
        { abortSignal: signal },
      );
      body = response.Body as Readable;
    } catch (err) {
      // 416: the file exists but the range starts at or past its end: a short (empty) read, not an error.
      if (range !== undefined && (s3Code(err) === "InvalidRange" || httpStatus(err) === 416)) return;
      throw this.error(err, "read", handleToString(h));
    }
    try {
      // Leaving the loop early (a consumer's break) destroys the stream and frees the connection.
      for await (const piece of body as AsyncIterable<Buffer>) {
        signal?.throwIfAborted();
        yield piece;
      }
    } catch (err) {
      throw this.error(err, "read", handleToString(h));
    } finally {
      body.destroy();
    }
  }

  async save(h: FileHandle, source: SaveSource, options: SaveOptions = {}): Promise<void> {
    const key = this.keyOf(h);
    const { signal, ifAbsent = false } = options;
    signal?.throwIfAborted();
    const what = handleToString(h);
    const multipart = source.length > this.partBytes;
    const retention = this.retentionFor(h);
    // On a versioned bucket ifAbsent is settled after the upload, and only the winning version is locked.
    const settleAfter = ifAbsent && this.versioned;
    const conditionalPut = ifAbsent && !this.versioned && !multipart;
    let earlierVersions: ReadonlySet<string> | undefined;
    if (settleAfter) earlierVersions = await this.versionsBeforeSave(h, key, signal);
    else if (this.versioned || (ifAbsent && multipart)) await this.checkReplaceable(h, key, ifAbsent, signal);
    const lock =
      retention === undefined || settleAfter
        ? {}
        : { ObjectLockMode: SDK_MODES[retention.mode], ObjectLockRetainUntilDate: retention.until };
    let versionId: string | undefined;
    try {
      if (!multipart) {
        const body = await readWhole(source, what, signal);
        signal?.throwIfAborted();
        const put = await this.client.send(
          new PutObjectCommand({
            Bucket: this.bucket,
            Key: key,
            Body: body,
            ContentLength: body.length,
            ContentMD5: md5(body),
            IfNoneMatch: conditionalPut ? "*" : undefined,
            ...lock,
          }),
          { abortSignal: signal },
        );
        versionId = put.VersionId;
      } else {
        versionId = await this.uploadMultipart(key, source, what, lock, signal);
      }
    } catch (err) {
      if (conditionalPut && (s3Code(err) === "PreconditionFailed" || httpStatus(err) === 412)) {
        throw new BulwarkError("ALREADY_EXISTS", `${what} already exists in ${this.location}`, {
          cause: err,
        });
      }
      throw this.error(err, "save", what);
    }
    if (earlierVersions !== undefined && versionId !== undefined) {
      await this.settleRace(h, key, versionId, earlierVersions);
    }
    if (retention !== undefined) {
      // RGW 16 ignores the lock headers of CreateMultipartUpload, so a multipart version is locked here.
      if (settleAfter || multipart) await this.applyRetention(h, key, versionId, retention, signal);
      await this.verifyRetention(h, key, versionId, retention, signal);
    }
  }

  async remove(h: FileHandle, signal?: AbortSignal): Promise<void> {
    const key = this.keyOf(h);
    signal?.throwIfAborted();
    if (!this.versioned) {
      // DeleteObject succeeds for a missing key, so ask first: the contract wants NOT_FOUND.
      await this.stat(h, signal);
      await this.call("remove", h, () =>
        this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: signal }),
      );
      return;
    }
    const versions = await this.versionsOf(key, h, signal);
    // With Object Lock the file is its genuine (oldest) version, whatever an attacker put over it; the
    // versions over it go too.
    const current = this.versionAware
      ? versions.filter((v) => !v.deleteMarker).pop()
      : versions.find((v) => v.latest);
    if (current === undefined || current.deleteMarker) {
      throw new BulwarkError("NOT_FOUND", `${handleToString(h)} not found in ${this.location}`);
    }
    this.forget(h, key);
    const older = versions.filter((v) => v !== current);
    const deleteVersion = (versionId: string, abortSignal = signal): Promise<unknown> =>
      this.call("remove", h, () =>
        this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key, VersionId: versionId }), {
          abortSignal,
        }),
      );
    if (older.length === 0) {
      await deleteVersion(current.versionId);
      return;
    }
    // Hide the file behind a delete marker first, so that deleting the current version cannot bring an
    // older one back into view; undo the marker when the current version turns out to be locked.
    const marker = await this.call("remove", h, () =>
      this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: signal }),
    );
    try {
      await deleteVersion(current.versionId);
    } catch (err) {
      // Not cancellable: the undo must happen even when the removal was aborted.
      if (marker.VersionId !== undefined) await deleteVersion(marker.VersionId, undefined).catch(ignore);
      throw err;
    }
    let keptOlder = false;
    for (const version of older) {
      try {
        await deleteVersion(version.versionId);
      } catch (err) {
        if (!(err instanceof BulwarkError && err.code === "RETENTION_LOCKED")) throw err;
        keptOlder = true;
      }
    }
    if (!keptOlder && marker.VersionId !== undefined) await deleteVersion(marker.VersionId);
  }

  /**
   * Aborts the multipart uploads of this repository's keys (never another tool's, nor another prefix's)
   * started more than `olderThanMs` ago: what a process killed mid-upload left. Returns how many.
   */
  async removeStaleTempFiles(olderThanMs: number, signal?: AbortSignal): Promise<number> {
    this.assertOpen();
    signal?.throwIfAborted();
    const cutoff = systemClock.now().getTime() - olderThanMs;
    let removed = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      const page = await this.call("list", "multipart uploads", () =>
        this.client.send(
          new ListMultipartUploadsCommand({
            Bucket: this.bucket,
            Prefix: this.prefix,
            KeyMarker: keyMarker,
            UploadIdMarker: uploadIdMarker,
          }),
          { abortSignal: signal },
        ),
      );
      for (const upload of page.Uploads ?? []) {
        const { Key: key, UploadId: uploadId, Initiated: initiated } = upload;
        if (key === undefined || uploadId === undefined || initiated === undefined) continue;
        if (initiated.getTime() > cutoff || fileAt(key.slice(this.prefix.length)) === undefined) continue;
        signal?.throwIfAborted();
        try {
          await this.client.send(
            new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }),
            { abortSignal: signal },
          );
          removed++;
        } catch (err) {
          // Finished or aborted meanwhile by its own process.
          if (s3Code(err) === "NoSuchUpload" || httpStatus(err) === 404) continue;
          throw this.error(err, "remove", `the unfinished upload of ${key.slice(this.prefix.length)}`);
        }
      }
      if (page.IsTruncated !== true) return removed;
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
    }
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.client.destroy();
    }
    return Promise.resolve();
  }

  private async readRetention(h: FileHandle, signal?: AbortSignal): Promise<Retention | undefined> {
    const key = this.keyOf(h);
    signal?.throwIfAborted();
    return this.retentionOf(h, key, await this.genuineVersion(h, key), signal);
  }

  private async putRetention(h: FileHandle, retention: Retention, signal?: AbortSignal): Promise<void> {
    const key = this.keyOf(h);
    const what = handleToString(h);
    if (!this.capabilities.retentionModes.includes(retention.mode)) {
      throw new Error(`retention mode "${retention.mode}" is not supported by ${this.location}`);
    }
    signal?.throwIfAborted();
    const versionId = await this.genuineVersion(h, key);
    const current = await this.retentionOf(h, key, versionId, signal);
    if (current !== undefined && current.until.getTime() > systemClock.now().getTime()) {
      if (retention.until.getTime() < current.until.getTime()) {
        throw new BulwarkError(
          "RETENTION_LOCKED",
          `refusing to shorten the retention of ${what} in ${this.location} from ${current.until.toISOString()} to ${retention.until.toISOString()}: retention is only ever extended`,
        );
      }
      if (current.mode === "compliance" && retention.mode === "governance") {
        throw new BulwarkError(
          "RETENTION_LOCKED",
          `refusing to weaken the compliance retention of ${what} in ${this.location} to governance`,
        );
      }
    }
    await this.applyRetention(h, key, versionId, retention, signal);
    await this.verifyRetention(h, key, versionId, retention, signal);
  }

  /** GetObjectRetention of the current (or a given) version; undefined when it has none. */
  private async retentionOf(
    h: FileHandle,
    key: string,
    versionId: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<Retention | undefined> {
    try {
      const response = await this.client.send(
        new GetObjectRetentionCommand({ Bucket: this.bucket, Key: key, VersionId: versionId }),
        { abortSignal: signal },
      );
      const mode = response.Retention?.Mode;
      const until = response.Retention?.RetainUntilDate;
      if (mode === undefined || until === undefined) return undefined;
      return { mode: mode === "COMPLIANCE" ? "compliance" : "governance", until: new Date(until) };
    } catch (err) {
      const code = s3Code(err);
      if (code === "ObjectLockConfigurationNotFoundError" || code === "NoSuchObjectLockConfiguration") {
        return undefined;
      }
      // The current version is a delete marker: the file is gone.
      if (code === "MethodNotAllowed" || httpStatus(err) === 405) {
        throw new BulwarkError("NOT_FOUND", `${handleToString(h)} not found in ${this.location}`, {
          cause: err,
        });
      }
      throw this.error(err, "read the retention of", handleToString(h));
    }
  }

  /** Reads a retention back and fails unless it is at least what was asked for. */
  private async verifyRetention(
    h: FileHandle,
    key: string,
    versionId: string | undefined,
    wanted: Retention,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const actual = await this.retentionOf(h, key, versionId, signal);
    if (
      actual === undefined ||
      actual.mode !== wanted.mode ||
      actual.until.getTime() < wanted.until.getTime() - RETENTION_TOLERANCE_MS
    ) {
      const shown = actual === undefined ? "none" : `${actual.mode} until ${actual.until.toISOString()}`;
      throw new BulwarkError(
        "INVALID_DATA",
        `${this.location} did not keep the retention of ${handleToString(h)}: asked for ${wanted.mode} until ${wanted.until.toISOString()}, read back ${shown}`,
        {
          hint: "the S3 server does not enforce Object Lock as it claims; do not count this copy as immutable",
        },
      );
    }
  }

  /**
   * ifAbsent on a versioned bucket, before the upload: ALREADY_EXISTS when the file exists, otherwise the
   * ids of the key's versions (hidden behind a delete marker) so that settleRace can tell rivals from them.
   */
  private async versionsBeforeSave(
    h: FileHandle,
    key: string,
    signal: AbortSignal | undefined,
  ): Promise<ReadonlySet<string>> {
    const versions = await this.versionsOf(key, h, signal, "save");
    const current = versions.find((v) => v.latest);
    // With Object Lock a version hidden behind a delete marker is still the file (s3-versions.ts).
    const exists = this.versionAware
      ? versions.some((v) => !v.deleteMarker)
      : current !== undefined && !current.deleteMarker;
    if (exists) {
      throw new BulwarkError("ALREADY_EXISTS", `${handleToString(h)} already exists in ${this.location}`);
    }
    return new Set(versions.map((v) => v.versionId));
  }

  /**
   * ifAbsent on a versioned bucket, after the upload: of the versions written since versionsBeforeSave
   * (ours and any rival's), the oldest wins. Every writer sees the same order, so exactly one wins; a loser
   * deletes its own version (not yet locked) and reports ALREADY_EXISTS. Not cancellable: a half-settled
   * race would leave the loser's version current.
   */
  private async settleRace(
    h: FileHandle,
    key: string,
    versionId: string,
    earlier: ReadonlySet<string>,
  ): Promise<void> {
    const versions = await this.versionsOf(key, h, undefined, "save");
    // Versions are listed newest first; delete markers are not contenders.
    const contenders = versions.filter((v) => !v.deleteMarker && !earlier.has(v.versionId));
    const winner = contenders[contenders.length - 1];
    if (winner === undefined || winner.versionId === versionId) return;
    await this.call("save", h, () =>
      this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key, VersionId: versionId })),
    );
    throw new BulwarkError("ALREADY_EXISTS", `${handleToString(h)} already exists in ${this.location}`);
  }

  private async applyRetention(
    h: FileHandle,
    key: string,
    versionId: string | undefined,
    retention: Retention,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    await this.call("extend the retention of", h, () =>
      this.client.send(
        new PutObjectRetentionCommand({
          Bucket: this.bucket,
          Key: key,
          VersionId: versionId,
          Retention: { Mode: SDK_MODES[retention.mode], RetainUntilDate: retention.until },
        }),
        { abortSignal: signal },
      ),
    );
  }

  /** Before writing to a versioned bucket: ALREADY_EXISTS for ifAbsent, RETENTION_LOCKED for a retained file. */
  private async checkReplaceable(
    h: FileHandle,
    key: string,
    ifAbsent: boolean,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const what = handleToString(h);
    let head;
    try {
      head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }), {
        abortSignal: signal,
      });
    } catch (err) {
      const classified = this.error(err, "save", what);
      if (classified instanceof BulwarkError && classified.code === "NOT_FOUND") return;
      throw classified;
    }
    if (ifAbsent) throw new BulwarkError("ALREADY_EXISTS", `${what} already exists in ${this.location}`);
    const until = head.ObjectLockRetainUntilDate;
    if (until !== undefined && new Date(until).getTime() > systemClock.now().getTime()) {
      throw new BulwarkError(
        "RETENTION_LOCKED",
        `cannot replace ${what} in ${this.location}: it is under ${String(head.ObjectLockMode).toLowerCase()} retention until ${new Date(until).toISOString()}`,
      );
    }
  }

  private retentionFor(h: FileHandle): Retention | undefined {
    // Locks come and go with every command; locking them would make the repository unusable.
    if (this.immutability === undefined || h.type === "lock") return undefined;
    return {
      mode: this.immutability.mode,
      until: new Date(systemClock.now().getTime() + this.immutability.days * DAY_MS),
    };
  }

  /** A multipart upload of `source`, read part by part; returns the new version's id. */
  private async uploadMultipart(
    key: string,
    source: SaveSource,
    what: string,
    lock: { ObjectLockMode?: ObjectLockMode; ObjectLockRetainUntilDate?: Date },
    signal: AbortSignal | undefined,
  ): Promise<string | undefined> {
    const created = await this.client.send(
      new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key, ...lock }),
      { abortSignal: signal },
    );
    const uploadId = created.UploadId;
    if (uploadId === undefined) throw new Error(`${this.location} returned no upload id for ${what}`);
    const parts: CompletedPart[] = [];
    const inFlight = new Set<Promise<void>>();
    // Part buffers are recycled: at most partConcurrency + 1 exist, however large the file.
    const pool = new BufferPool(this.partBytes);
    let failure: { err: unknown } | undefined;
    const upload = (partNumber: number, part: Part): void => {
      const body = part.buffer.subarray(0, part.length);
      const task = this.client
        .send(
          new UploadPartCommand({
            Bucket: this.bucket,
            Key: key,
            UploadId: uploadId,
            PartNumber: partNumber,
            Body: body,
            ContentLength: body.length,
            ContentMD5: md5(body),
          }),
          { abortSignal: signal },
        )
        .then(
          (response) => {
            parts.push({ PartNumber: partNumber, ETag: response.ETag });
            pool.release(part.buffer);
          },
          (err: unknown) => {
            failure ??= { err };
          },
        )
        .finally(() => inFlight.delete(task));
      inFlight.add(task);
    };
    try {
      let partNumber = 0;
      for await (const part of readParts(source, pool, what, signal)) {
        while (inFlight.size >= this.partConcurrency) await Promise.race(inFlight);
        if (failure !== undefined) throw failure.err;
        upload(++partNumber, part);
      }
      await Promise.all(inFlight);
      if (failure !== undefined) throw failure.err;
      signal?.throwIfAborted();
      parts.sort((a, b) => (a.PartNumber ?? 0) - (b.PartNumber ?? 0));
      const completed = await this.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.bucket,
          Key: key,
          UploadId: uploadId,
          MultipartUpload: { Parts: parts },
        }),
        { abortSignal: signal },
      );
      return completed.VersionId;
    } catch (err) {
      await Promise.allSettled(inFlight);
      // Without a signal: an aborted save must still clean up its parts.
      await this.client
        .send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }))
        .catch(ignore);
      throw err;
    }
  }

  /** The prefix whose version listing covers a file type: its directory, or the config's key. */
  private scanPrefix(type: FileType): string {
    return type === "config" ? `${this.prefix}config` : `${this.prefix}${directoryOf(type)}/`;
  }

  /**
   * The version a read of `h` must name: on a bucket with Object Lock, its genuine version as the one scan
   * of its directory per open found it (a file written since is read plainly); otherwise undefined. The
   * scan is shared by every reader, so it runs without any one caller's signal.
   */
  private async genuineVersion(h: FileHandle, key: string): Promise<string | undefined> {
    if (!this.versionAware || h.type === "lock") return undefined;
    const scan = this.scanPrefix(h.type);
    let found = this.scans.get(scan);
    if (found === undefined) {
      found = this.listVersions(scan, undefined);
      this.scans.set(scan, found);
      // A failed scan is not remembered: the next read (or its retry) scans again.
      found.catch(() => {
        if (this.scans.get(scan) === found) this.scans.delete(scan);
      });
    }
    return (await found).get(key)?.genuine?.versionId;
  }

  /** After a remove: the file's versions are gone, so its reads must not name one. */
  private forget(h: FileHandle, key: string): void {
    if (!this.versionAware || h.type === "lock") return;
    void this.scans
      .get(this.scanPrefix(h.type))
      ?.then((m) => m.delete(key))
      .catch(ignore);
  }

  /** Every repository file's versions under a scan prefix, by key (stray keys left out). */
  private async listVersions(
    scan: string,
    signal: AbortSignal | undefined,
  ): Promise<Map<string, KeyVersions>> {
    const versions = new Map<string, { versions: StoredVersion[]; markers: StoredVersion[] }>();
    const entry = (key: string): { versions: StoredVersion[]; markers: StoredVersion[] } => {
      let e = versions.get(key);
      if (e === undefined) versions.set(key, (e = { versions: [], markers: [] }));
      return e;
    };
    const ours = (key: string | undefined): key is string => {
      const file = key === undefined ? undefined : fileAt(key.slice(this.prefix.length));
      return file !== undefined && file.type !== "lock";
    };
    let keyMarker: string | undefined;
    let versionIdMarker: string | undefined;
    do {
      signal?.throwIfAborted();
      const page = await this.call("list", "file versions", () =>
        this.client.send(
          new ListObjectVersionsCommand({
            Bucket: this.bucket,
            Prefix: scan,
            KeyMarker: keyMarker,
            VersionIdMarker: versionIdMarker,
          }),
          { abortSignal: signal },
        ),
      );
      for (const v of page.Versions ?? []) {
        if (!ours(v.Key) || v.VersionId === undefined) continue;
        entry(v.Key).versions.push({
          versionId: v.VersionId,
          deleteMarker: false,
          latest: v.IsLatest === true,
          size: v.Size ?? 0,
          ...(v.LastModified === undefined ? {} : { lastModified: new Date(v.LastModified) }),
        });
      }
      for (const m of page.DeleteMarkers ?? []) {
        if (!ours(m.Key) || m.VersionId === undefined) continue;
        entry(m.Key).markers.push({
          versionId: m.VersionId,
          deleteMarker: true,
          latest: m.IsLatest === true,
          size: 0,
          ...(m.LastModified === undefined ? {} : { lastModified: new Date(m.LastModified) }),
        });
      }
      const more = page.IsTruncated === true;
      keyMarker = more ? page.NextKeyMarker : undefined;
      versionIdMarker = more ? page.NextVersionIdMarker : undefined;
    } while (keyMarker !== undefined);
    const result = new Map<string, KeyVersions>();
    for (const [key, e] of versions) result.set(key, classifyVersions(e.versions, e.markers));
    return result;
  }

  /** Backend.tampering: a fresh scan of every file type but locks. */
  private async findTampering(signal?: AbortSignal): Promise<TamperReport> {
    const files: TamperedFile[] = [];
    let storedVersions = 0;
    for (const type of ["config", "key", "snapshot", "index", "pack"] as const) {
      const scan = this.scanPrefix(type);
      const found = this.listVersions(scan, signal);
      this.scans.set(scan, found);
      found.catch(ignore);
      for (const [key, k] of await found) {
        storedVersions += k.foreign.length + (k.genuine === undefined ? 0 : 1);
        const handle = fileAt(key.slice(this.prefix.length));
        if (handle === undefined || !isTampered(k) || k.genuine === undefined) continue;
        files.push({
          handle,
          genuineVersion: k.genuine.versionId,
          foreign: k.foreign.map((v) => ({
            versionId: v.versionId,
            deleteMarker: v.deleteMarker,
            size: v.size,
            ...(v.lastModified === undefined ? {} : { lastModified: v.lastModified }),
          })),
        });
      }
    }
    return { files, storedVersions };
  }

  /**
   * Backend.untamper: deletes, by version id, every delete marker and foreign version over a genuine one.
   * A foreign version under governance retention is deleted with BypassGovernanceRetention (which needs
   * that permission); one under compliance retention cannot be deleted through S3 by anyone before its
   * date, and is reported. The genuine version is never named in a delete.
   */
  private async removeTampering(options: UntamperOptions = {}): Promise<UntamperReport> {
    const { dryRun = false, signal } = options;
    const report = await this.findTampering(signal);
    const actions: UntamperAction[] = [];
    const total = report.files.reduce((n, f) => n + f.foreign.length, 0);
    const now = systemClock.now().getTime();
    for (const file of report.files) {
      const key = this.keyOf(file.handle);
      const what = handleToString(file.handle);
      for (const v of file.foreign) {
        signal?.throwIfAborted();
        if (v.versionId === file.genuineVersion) throw new Error(`refusing to delete the genuine ${what}`);
        const base = { file: what, versionId: v.versionId, deleteMarker: v.deleteMarker };
        const retention = v.deleteMarker
          ? undefined
          : await this.retentionOf(file.handle, key, v.versionId, signal);
        const active = retention !== undefined && retention.until.getTime() > now ? retention : undefined;
        const until = active?.until.toISOString();
        if (active?.mode === "compliance") {
          actions.push({
            ...base,
            outcome: "refused",
            reason: `compliance-locked by its writer until ${until}: no S3 credentials can delete it before then`,
            needs: `the storage administrator, outside S3 (Ceph: radosgw-admin object rm --bucket=${this.bucket} --object=${key} --object-version=${v.versionId}), or waiting until ${until}; until then reads keep using the genuine version`,
          });
        } else if (dryRun) {
          actions.push({
            ...base,
            outcome: "would-remove",
            ...(active === undefined
              ? {}
              : {
                  reason: `governance-locked until ${until}: needs the s3:BypassGovernanceRetention permission`,
                }),
          });
        } else {
          try {
            await this.client.send(
              new DeleteObjectCommand({
                Bucket: this.bucket,
                Key: key,
                VersionId: v.versionId,
                ...(active === undefined ? {} : { BypassGovernanceRetention: true }),
              }),
              { abortSignal: signal },
            );
            actions.push({ ...base, outcome: "removed" });
          } catch (err) {
            const e = this.error(err, "remove", `${what} (version ${v.versionId})`);
            if (!(e instanceof BulwarkError) || (e.code !== "RETENTION_LOCKED" && e.code !== "AUTH")) throw e;
            actions.push({
              ...base,
              outcome: "refused",
              reason: e.message,
              needs:
                active === undefined
                  ? "credentials allowed to delete object versions (s3:DeleteObjectVersion)"
                  : `credentials with the s3:BypassGovernanceRetention permission (an administrator's), or waiting until ${until}`,
            });
          }
        }
        options.onVersion?.(actions.length, total);
      }
    }
    // What is current changed: the next read scans again.
    if (!dryRun) this.scans.clear();
    return { files: report.files.length, actions };
  }

  /** Every version and delete marker of exactly `key`. */
  private async versionsOf(
    key: string,
    h: FileHandle,
    signal: AbortSignal | undefined,
    action: S3Action = "remove",
  ): Promise<{ versionId: string; latest: boolean; deleteMarker: boolean }[]> {
    const found: { versionId: string; latest: boolean; deleteMarker: boolean }[] = [];
    let keyMarker: string | undefined;
    let versionIdMarker: string | undefined;
    for (;;) {
      const page = await this.call(action, h, () =>
        this.client.send(
          new ListObjectVersionsCommand({
            Bucket: this.bucket,
            Prefix: key,
            KeyMarker: keyMarker,
            VersionIdMarker: versionIdMarker,
          }),
          { abortSignal: signal },
        ),
      );
      for (const v of page.Versions ?? []) {
        if (v.Key === key && v.VersionId !== undefined) {
          found.push({ versionId: v.VersionId, latest: v.IsLatest === true, deleteMarker: false });
        }
      }
      for (const m of page.DeleteMarkers ?? []) {
        if (m.Key === key && m.VersionId !== undefined) {
          found.push({ versionId: m.VersionId, latest: m.IsLatest === true, deleteMarker: true });
        }
      }
      if (page.IsTruncated !== true || page.NextKeyMarker !== key) return found;
      keyMarker = page.NextKeyMarker;
      versionIdMarker = page.NextVersionIdMarker;
    }
  }

  private async call<T>(action: S3Action, h: FileHandle | string, request: () => Promise<T>): Promise<T> {
    try {
      return await request();
    } catch (err) {
      throw this.error(err, action, typeof h === "string" ? h : handleToString(h));
    }
  }

  private error(err: unknown, action: S3Action, what: string): unknown {
    return s3Error(err, action, what, this.location, this.bucket);
  }

  /** The object key of a file; throws a plain Error for a malformed handle, which is a bug in the caller. */
  private keyOf(h: FileHandle): string {
    this.assertOpen();
    return `${this.prefix}${layoutPath(h)}`;
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`the S3 backend for ${this.location} is closed`);
  }
}

function createClient(target: S3Location, options: S3Options): S3Client {
  return new S3Client({
    endpoint: target.endpoint,
    region: options.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? "us-east-1",
    forcePathStyle: true,
    // The SDK's default (WHEN_SUPPORTED) streams aws-chunked bodies with trailing checksums, which RGW 16
    // refuses; integrity comes from Content-MD5 on every put instead.
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    maxAttempts: options.maxAttempts ?? 3,
    ...(options.credentials === undefined ? {} : { credentials: options.credentials }),
    ...(options.profile === undefined ? {} : { profile: options.profile }),
  });
}

async function probeBucket(client: S3Client, target: S3Location): Promise<BucketFacts> {
  const what = `the bucket "${target.bucket}"`;
  const classify = (err: unknown): unknown => s3Error(err, "open", what, target.display, target.bucket);
  const objectLock = client.send(new GetObjectLockConfigurationCommand({ Bucket: target.bucket })).then(
    (r) => r.ObjectLockConfiguration?.ObjectLockEnabled === "Enabled",
    (err: unknown) => {
      const code = s3Code(err);
      if (code === "ObjectLockConfigurationNotFoundError" || code === "NoSuchObjectLockConfiguration") {
        return false;
      }
      throw classify(err);
    },
  );
  const versioned = client.send(new GetBucketVersioningCommand({ Bucket: target.bucket })).then(
    (r) => r.Status === "Enabled" || r.Status === "Suspended",
    (err: unknown) => {
      throw classify(err);
    },
  );
  const [lockResult, versionResult] = await Promise.allSettled([objectLock, versioned]);
  if (lockResult.status === "rejected") throw lockResult.reason;
  if (versionResult.status === "rejected") throw versionResult.reason;
  return { objectLock: lockResult.value, versioned: versionResult.value };
}

/** The whole source as one buffer (a copy: a source may reuse its buffers), checking its length. */
async function readWhole(source: SaveSource, what: string, signal: AbortSignal | undefined): Promise<Buffer> {
  const body = Buffer.allocUnsafe(source.length);
  let filled = 0;
  for await (const piece of source.open()) {
    signal?.throwIfAborted();
    if (filled + piece.length > source.length) {
      throw new Error(`the source for ${what} yielded more than its declared ${source.length} bytes`);
    }
    body.set(piece, filled);
    filled += piece.length;
  }
  if (filled !== source.length) {
    throw new Error(`the source for ${what} yielded ${filled} bytes, not its declared ${source.length}`);
  }
  return body;
}

interface Part {
  /** A pool buffer of partBytes; the part is its first `length` bytes. */
  readonly buffer: Buffer;
  readonly length: number;
}

class BufferPool {
  private readonly free: Buffer[] = [];

  constructor(readonly size: number) {}

  acquire(): Buffer {
    // Unpooled (not from Node's shared slab) and not zero-filled: every byte is written before it is sent.
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  release(buffer: Buffer): void {
    this.free.push(buffer);
  }
}

/** The source cut into parts of the pool's size (the last one shorter), copied into pool buffers. */
async function* readParts(
  source: SaveSource,
  pool: BufferPool,
  what: string,
  signal: AbortSignal | undefined,
): AsyncIterable<Part> {
  let total = 0;
  let buffer: Buffer | undefined;
  let filled = 0;
  for await (const piece of source.open()) {
    signal?.throwIfAborted();
    if (total + piece.length > source.length) {
      throw new Error(`the source for ${what} yielded more than its declared ${source.length} bytes`);
    }
    total += piece.length;
    for (let offset = 0; offset < piece.length; ) {
      buffer ??= pool.acquire();
      const n = Math.min(piece.length - offset, buffer.length - filled);
      buffer.set(piece.subarray(offset, offset + n), filled);
      filled += n;
      offset += n;
      if (filled === buffer.length) {
        yield { buffer, length: filled };
        buffer = undefined;
        filled = 0;
      }
    }
  }
  if (total !== source.length) {
    throw new Error(`the source for ${what} yielded ${total} bytes, not its declared ${source.length}`);
  }
  if (buffer !== undefined && filled > 0) yield { buffer, length: filled };
}

function md5(data: Uint8Array): string {
  return createHash("md5").update(data).digest("base64");
}

function ignore(): void {}
