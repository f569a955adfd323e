/**
 * Bounds how many requests run against a backend at once (servers and rate limits dislike bursts). A stream
 * holds its slot until it is finished or abandoned.
 */
import type {
  Backend,
  ByteRange,
  FileHandle,
  FileType,
  Retention,
  SaveOptions,
  SaveSource,
  UntamperOptions,
} from "../backend.js";
import { WeightedLimiter } from "../../core/limiter.js";

export function withLimit(inner: Backend, concurrency = inner.capabilities.connections): Backend {
  const limiter = new WeightedLimiter(Math.max(1, concurrency));
  async function run<T>(op: () => Promise<T>): Promise<T> {
    await limiter.acquire(1);
    try {
      return await op();
    } finally {
      limiter.release(1);
    }
  }
  async function* stream<T>(open: () => AsyncIterable<T>): AsyncGenerator<T> {
    await limiter.acquire(1);
    try {
      yield* open();
    } finally {
      limiter.release(1);
    }
  }
  const wrapped: Backend = {
    location: inner.location,
    capabilities: { ...inner.capabilities, connections: Math.max(1, concurrency) },
    stat: (h: FileHandle, signal?: AbortSignal) => run(() => inner.stat(h, signal)),
    list: (type: FileType, signal?: AbortSignal) => stream(() => inner.list(type, signal)),
    load: (h: FileHandle, range?: ByteRange, signal?: AbortSignal) => run(() => inner.load(h, range, signal)),
    openRead: (h: FileHandle, range?: ByteRange, signal?: AbortSignal) =>
      stream(() => inner.openRead(h, range, signal)),
    save: (h: FileHandle, source: SaveSource, opts?: SaveOptions) => run(() => inner.save(h, source, opts)),
    remove: (h: FileHandle, signal?: AbortSignal) => run(() => inner.remove(h, signal)),
    close: () => inner.close(),
  };
  if (inner.getRetention) {
    const get = inner.getRetention.bind(inner);
    wrapped.getRetention = (h: FileHandle, signal?: AbortSignal) => run(() => get(h, signal));
  }
  if (inner.extendRetention) {
    const extend = inner.extendRetention.bind(inner);
    wrapped.extendRetention = (h: FileHandle, r: Retention, signal?: AbortSignal) =>
      run(() => extend(h, r, signal));
  }
  if (inner.removeStaleTempFiles) {
    const clean = inner.removeStaleTempFiles.bind(inner);
    wrapped.removeStaleTempFiles = (olderThanMs: number, signal?: AbortSignal) =>
      run(() => clean(olderThanMs, signal));
  }
  if (inner.digest) {
    const digest = inner.digest.bind(inner);
    wrapped.digest = (h: FileHandle, signal?: AbortSignal) => run(() => digest(h, signal));
  }
  // Each is a sequence of requests, taking one slot like any other call.
  if (inner.tampering) {
    const tampering = inner.tampering.bind(inner);
    wrapped.tampering = (signal?: AbortSignal) => run(() => tampering(signal));
  }
  if (inner.untamper) {
    const untamper = inner.untamper.bind(inner);
    wrapped.untamper = (options?: UntamperOptions) => run(() => untamper(options));
  }
  return wrapped;
}
