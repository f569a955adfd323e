/**
 * A blob worker thread: chunking and encoding for backup, decoding for restore, pack verification for check.
 * Protocol and rationale: worker-protocol.ts.
 *
 * Chunking a job:
 * 1. Read files one after another into one buffer (small files share it; a large file streams through it).
 * 2. Cut chunks with FastCDC; hash each (all-zero chunks, common in sparse files, skip the hash).
 * 3. Before the buffer is reused: send the ids, receive which ones to store, encode those, hand them over,
 *    wait for the acknowledgement.
 */
import {
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  ftruncateSync,
  futimesSync,
  openSync,
  readSync,
  writeSync,
} from "node:fs";
import { parentPort, workerData } from "node:worker_threads";
import { Chunker } from "../chunker/fastcdc.js";
import { blobId } from "../crypto/crypto.js";
import { errnoCode, errorMessage } from "../core/errors.js";
import { BlobCodec } from "./blob-codec.js";
import { decodePackHeader } from "./pack.js";
import type {
  BlobToRestore,
  EncodedBlob,
  FileMetadata,
  FileOp,
  FileToChunk,
  FromWorker,
  PackVerification,
  ToWorker,
  WorkerInit,
} from "./worker-protocol.js";

const init = workerData as WorkerInit;
const port = parentPort!;
const codec = new BlobCodec(init.encryptKey, init.compressionLevel);
const idKey = Buffer.from(init.idKey);
const chunker = new Chunker({ ...init.chunker, seed: Buffer.from(init.chunker.seed) });
const maxSize = init.chunker.maxSize;
/** Room for one maximal chunk plus a read-ahead; two jobs per worker keep one such buffer each. */
const bufferCapacity = maxSize + 4 * 1024 * 1024;
const zeros = Buffer.alloc(maxSize);
const zeroIds = new Map<number, string>();
/**
 * On a run of zeros the gear hash settles to a constant, so (for nearly every seed) the chunker cuts it at
 * maxSize. When that holds for this repository's seed, a zero run needs a memcmp, not a scan: sparse disk
 * images back up at the speed their holes can be read.
 */
const zeroRunCutsAtMax = chunker.nextChunkLength(zeros, 0, maxSize, false) === maxSize;
/** Restores write zero blocks of this size as holes. */
const HOLE_BLOCK = 64 * 1024;

const waiting = new Map<number, (msg: ToWorker) => void>();
/** Encoded bytes handed to the main thread and not yet acknowledged, and who waits for room. */
let unacknowledged = 0;
const maxUnacknowledged = bufferCapacity;
let roomWaiters: (() => void)[] = [];

function post(msg: FromWorker, transfer: ArrayBuffer[] = []): void {
  port.postMessage(msg, transfer);
}

function request(msg: FromWorker, transfer: ArrayBuffer[] = []): Promise<ToWorker> {
  return new Promise((resolve) => {
    waiting.set(msg.job, resolve);
    post(msg, transfer);
  });
}

port.on("message", (msg: ToWorker) => {
  switch (msg.op) {
    case "ack": {
      unacknowledged -= msg.bytes;
      const waiters = roomWaiters;
      roomWaiters = [];
      for (const w of waiters) w();
      return;
    }
    case "decision": {
      const resolve = waiting.get(msg.job);
      waiting.delete(msg.job);
      resolve?.(msg);
      return;
    }
    case "chunk":
      new ChunkJob(msg.job).run(msg.files).then(
        () => post({ op: "done", job: msg.job }),
        (err: unknown) => post({ op: "failed", job: msg.job, error: errorMessage(err) }),
      );
      return;
    case "restore":
      try {
        post({ op: "restored", job: msg.job, ...restoreBlobs(msg.data, msg.blobs, msg.skipZeroWrites) });
      } catch (err) {
        post({ op: "failed", job: msg.job, error: errorMessage(err) });
      }
      return;
    case "files":
      post({ op: "filesDone", job: msg.job, errors: fileOps(msg.ops) });
      return;
    case "verify":
      try {
        post({ op: "verified", job: msg.job, result: verifyPack(msg.name, msg.data) });
      } catch (err) {
        post({ op: "failed", job: msg.job, error: errorMessage(err) });
      }
      return;
  }
});

interface PendingChunk {
  id: string;
  start: number;
  length: number;
}

class ChunkJob {
  private buffer: Buffer | undefined;
  private fill = 0;
  private pending: PendingChunk[] = [];
  private flushedDuringFile = false;

  constructor(private readonly job: number) {}

  async run(files: FileToChunk[]): Promise<void> {
    for (let index = 0; index < files.length; index++) {
      const file = files[index]!;
      const content: string[] = [];
      let size = 0;
      let error: string | undefined;
      const pendingBefore = this.pending.length;
      const fillBefore = this.fill;
      this.flushedDuringFile = false;
      try {
        size = await this.chunkFile(file, content);
      } catch (err) {
        error = errorMessage(err);
        // Forget the failed file's chunks: the next file reuses their bytes in the buffer, so sending them
        // later would store other data under their ids.
        this.pending.length = this.flushedDuringFile ? 0 : pendingBefore;
        this.fill = this.flushedDuringFile ? 0 : fillBefore;
      }
      post({ op: "file", job: this.job, index, content, size, ...(error === undefined ? {} : { error }) });
    }
    await this.flush();
  }

  private async chunkFile(file: FileToChunk, content: string[]): Promise<number> {
    const fd = openSync(file.path, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      // Start a small file in a fresh buffer rather than split it over a flush.
      if (this.fill > 0 && bufferCapacity - this.fill < Math.min(file.size + 1, maxSize)) {
        await this.flush();
      }
      this.buffer ??= Buffer.allocUnsafe(bufferCapacity);
      const buf = this.buffer;
      let start = this.fill;
      let end = this.fill;
      let eof = false;
      let total = 0;
      for (;;) {
        while (!eof && end < bufferCapacity) {
          const n = readSync(fd, buf, end, bufferCapacity - end, null);
          if (n === 0) eof = true;
          end += n;
          total += n;
        }
        for (;;) {
          const length =
            zeroRunCutsAtMax && end - start >= maxSize && isZero(buf, start, maxSize)
              ? maxSize
              : start < end
                ? chunker.nextChunkLength(buf, start, end, eof)
                : 0;
          if (length === 0) break;
          const id = chunkId(buf, start, length);
          this.pending.push({ id, start, length });
          content.push(id);
          start += length;
        }
        if (eof && start === end) break;
        // The tail of the buffer is an unfinished chunk: hand over what is cut, then move the tail down.
        await this.flush();
        buf.copyWithin(0, start, end);
        end -= start;
        start = 0;
      }
      this.fill = end;
      return total;
    } finally {
      closeSync(fd);
    }
  }

  private async flush(): Promise<void> {
    this.flushedDuringFile = true;
    const pending = this.pending;
    this.pending = [];
    this.fill = 0;
    if (pending.length === 0) return;
    const reply = await request({ op: "ids", job: this.job, ids: pending.map((c) => c.id) });
    if (reply.op !== "decision") throw new Error(`protocol: expected a decision, got ${reply.op}`);
    const blobs: EncodedBlob[] = [];
    const transfer: ArrayBuffer[] = [];
    const buf = this.buffer!;
    pending.forEach((chunk, i) => {
      if (reply.store[i] !== 1) return;
      const pieces = codec.encodePieces(buf.subarray(chunk.start, chunk.start + chunk.length));
      blobs.push({ id: chunk.id, pieces, rawLength: chunk.length });
      for (const piece of pieces) {
        // Only whole, unpooled buffers can be transferred without detaching memory others use.
        const ab = piece.buffer as ArrayBuffer;
        if (piece.byteOffset === 0 && piece.byteLength === ab.byteLength) transfer.push(ab);
      }
    });
    if (blobs.length === 0) return;
    let bytes = 0;
    for (const b of blobs) for (const piece of b.pieces) bytes += piece.length;
    unacknowledged += bytes;
    post({ op: "blobs", job: this.job, blobs }, transfer);
    while (unacknowledged > maxUnacknowledged)
      await new Promise<void>((resolve) => roomWaiters.push(resolve));
  }
}

function isZero(buf: Buffer, start: number, length: number): boolean {
  return buf.compare(zeros, 0, length, start, start + length) === 0;
}

function chunkId(buf: Buffer, start: number, length: number): string {
  if (isZero(buf, start, length)) {
    let id = zeroIds.get(length);
    if (id === undefined) {
      id = blobId(idKey, zeros.subarray(0, length));
      zeroIds.set(length, id);
    }
    return id;
  }
  return blobId(idKey, buf.subarray(start, start + length));
}

function restoreBlobs(
  data: Uint8Array,
  blobs: BlobToRestore[],
  skipZeroWrites: boolean,
): { errors: { id: string; error: string }[]; bytesWritten: number } {
  const errors: { id: string; error: string }[] = [];
  let bytesWritten = 0;
  const region = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  for (const blob of blobs) {
    let plain: Buffer;
    try {
      plain = codec.decode(
        region.subarray(blob.offset, blob.offset + blob.length),
        blob.rawLength,
        `blob ${blob.id.slice(0, 12)}`,
      );
      if (plain.length !== blob.rawLength || blobId(idKey, plain) !== blob.id) {
        throw new Error(`blob ${blob.id.slice(0, 12)}: contents do not match the blob id`);
      }
    } catch (err) {
      errors.push({ id: blob.id, error: errorMessage(err) });
      continue;
    }
    // Restored files are sized with ftruncate: zero blocks stay holes, keeping sparse files sparse.
    const segments = skipZeroWrites ? nonZeroSegments(plain) : [[0, plain.length] as const];
    if (segments.length === 0 && !blob.writes.some((w) => w.whole)) continue;
    for (const w of blob.writes) {
      try {
        const flags = w.whole
          ? constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW
          : constants.O_WRONLY | constants.O_NOFOLLOW;
        const fd = openSync(w.path, flags, 0o600);
        try {
          for (const [from, to] of segments) {
            let done = from;
            while (done < to) done += writeSync(fd, plain, done, to - done, w.offset + done);
          }
          if (w.whole) {
            ftruncateSync(fd, w.whole.size);
            setMetadata(fd, w.whole.meta);
          }
        } finally {
          closeSync(fd);
        }
        bytesWritten += plain.length;
      } catch (err) {
        errors.push({ id: blob.id, error: `${w.path}: ${errorMessage(err)}` });
      }
    }
  }
  return { errors, bytesWritten };
}

/** [start, end) ranges of `data` that hold a non-zero byte, in HOLE_BLOCK steps. */
function nonZeroSegments(data: Buffer): (readonly [number, number])[] {
  const segments: (readonly [number, number])[] = [];
  let pos = 0;
  while (pos < data.length) {
    while (pos < data.length && isZero(data, pos, Math.min(HOLE_BLOCK, data.length - pos))) pos += HOLE_BLOCK;
    if (pos >= data.length) break;
    let end = pos;
    while (end < data.length && !isZero(data, end, Math.min(HOLE_BLOCK, data.length - end)))
      end += HOLE_BLOCK;
    end = Math.min(end, data.length);
    segments.push([pos, end]);
    pos = end;
  }
  return segments;
}

function setMetadata(fd: number, meta: FileMetadata): void {
  if (meta.owner) fchownSync(fd, meta.owner.uid, meta.owner.gid);
  // chown clears setuid bits, so the mode comes after it.
  fchmodSync(fd, meta.mode);
  futimesSync(fd, meta.mtime, meta.mtime);
}

function fileOps(ops: FileOp[]): { index: number; error: string; code?: string }[] {
  const errors: { index: number; error: string; code?: string }[] = [];
  ops.forEach((op, index) => {
    try {
      if (op.kind === "create") {
        const fd = openSync(
          op.path,
          constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW,
          0o600,
        );
        try {
          ftruncateSync(fd, op.size);
          if (op.meta) setMetadata(fd, op.meta);
        } finally {
          closeSync(fd);
        }
      } else {
        // Through a descriptor opened without following links: metadata lands on our file, never elsewhere.
        const fd = openSync(op.path, constants.O_RDONLY | constants.O_NOFOLLOW);
        try {
          setMetadata(fd, op);
        } finally {
          closeSync(fd);
        }
      }
    } catch (err) {
      const code = errnoCode(err);
      errors.push({ index, error: errorMessage(err), ...(code === undefined ? {} : { code }) });
    }
  });
  return errors;
}

function verifyPack(name: string, data: Uint8Array): PackVerification {
  const pack = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const result: PackVerification = { blobs: [], blobErrors: [] };
  try {
    result.blobs = decodePackHeader(init.encryptKey, pack, `pack ${name.slice(0, 12)}`);
  } catch (err) {
    result.headerError = errorMessage(err);
    return result;
  }
  for (const blob of result.blobs) {
    try {
      const plain = codec.decode(
        pack.subarray(blob.offset, blob.offset + blob.length),
        blob.rawLength,
        `blob ${blob.id.slice(0, 12)}`,
      );
      if (blobId(idKey, plain) !== blob.id)
        throw new Error(`blob ${blob.id.slice(0, 12)}: contents do not match the blob id`);
    } catch (err) {
      result.blobErrors.push({ id: blob.id, error: errorMessage(err) });
    }
  }
  return result;
}
