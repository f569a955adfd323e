/**
 * Retries what a backend reports as TRANSIENT (timeouts, resets, throttling) with exponential backoff and
 * jitter; every other error passes through at once. Saves can be retried because a SaveSource can be opened
 * again; streams are retried only before their first byte, since a consumer cannot un-read what it got.
 */
import type {
  Backend,
  ByteRange,
  FileDigest,
  FileHandle,
  FileInfo,
  FileType,
  Retention,
  SaveOptions,
  SaveSource,
  TamperReport,
  UntamperOptions,
  UntamperReport,
} from "../backend.js";
import { isTransient } from "../../core/errors.js";

export interface RetryOptions {
  /** Attempts in all, the first included. */
  attempts?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Injected for tests. */
  sleep?: (ms: number) => Promise<void>;
  onRetry?: (what: string, attempt: number, err: unknown) => void;
}

const defaultSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export function withRetry(inner: Backend, options: RetryOptions = {}): Backend {
  const attempts = options.attempts ?? 5;
  const base = options.baseDelayMs ?? 250;
  const max = options.maxDelayMs ?? 15_000;
  const sleep = options.sleep ?? defaultSleep;

  async function retry<T>(what: string, signal: AbortSignal | undefined, op: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await op();
      } catch (err) {
        if (!isTransient(err) || attempt >= attempts || signal?.aborted) throw err;
        options.onRetry?.(what, attempt, err);
        const delay = Math.min(max, base * 2 ** (attempt - 1));
        await sleep(delay / 2 + Math.random() * (delay / 2));
      }
    }
  }

  async function* retryStream<T>(
    what: string,
    signal: AbortSignal | undefined,
    open: () => AsyncIterable<T>,
  ): AsyncGenerator<T> {
    for (let attempt = 1; ; attempt++) {
      let started = false;
      try {
        for await (const piece of open()) {
          started = true;
          yield piece;
        }
        return;
      } catch (err) {
        if (started || !isTransient(err) || attempt >= attempts || signal?.aborted) throw err;
        options.onRetry?.(what, attempt, err);
        const delay = Math.min(max, base * 2 ** (attempt - 1));
        await sleep(delay / 2 + Math.random() * (delay / 2));
      }
    }
  }

  const name = (h: FileHandle): string =>
    h.type === "config" ? "config" : `${h.type}/${h.name.slice(0, 12)}`;
  const wrapped: Backend = {
    location: inner.location,
    capabilities: inner.capabilities,
    stat: (h: FileHandle, signal?: AbortSignal): Promise<FileInfo> =>
      retry(`stat ${name(h)}`, signal, () => inner.stat(h, signal)),
    list: (type: FileType, signal?: AbortSignal): AsyncIterable<FileInfo> =>
      retryStream(`list ${type}`, signal, () => inner.list(type, signal)),
    load: (h: FileHandle, range?: ByteRange, signal?: AbortSignal): Promise<Buffer> =>
      retry(`load ${name(h)}`, signal, () => inner.load(h, range, signal)),
    openRead: (h: FileHandle, range?: ByteRange, signal?: AbortSignal): AsyncIterable<Uint8Array> =>
      retryStream(`read ${name(h)}`, signal, () => inner.openRead(h, range, signal)),
    save: (h: FileHandle, source: SaveSource, opts?: SaveOptions): Promise<void> =>
      retry(`save ${name(h)}`, opts?.signal, () => inner.save(h, source, opts)),
    remove: (h: FileHandle, signal?: AbortSignal): Promise<void> =>
      retry(`remove ${name(h)}`, signal, () => inner.remove(h, signal)),
    close: () => inner.close(),
  };
  if (inner.getRetention) {
    const get = inner.getRetention.bind(inner);
    wrapped.getRetention = (h: FileHandle, signal?: AbortSignal): Promise<Retention | undefined> =>
      retry(`retention ${name(h)}`, signal, () => get(h, signal));
  }
  if (inner.extendRetention) {
    const extend = inner.extendRetention.bind(inner);
    wrapped.extendRetention = (h: FileHandle, r: Retention, signal?: AbortSignal): Promise<void> =>
      retry(`extend ${name(h)}`, signal, () => extend(h, r, signal));
  }
  if (inner.removeStaleTempFiles) {
    const clean = inner.removeStaleTempFiles.bind(inner);
    wrapped.removeStaleTempFiles = (olderThanMs: number, signal?: AbortSignal): Promise<number> =>
      retry("remove stale temp files", signal, () => clean(olderThanMs, signal));
  }
  if (inner.digest) {
    const digest = inner.digest.bind(inner);
    wrapped.digest = (h: FileHandle, signal?: AbortSignal): Promise<FileDigest> =>
      retry(`digest ${name(h)}`, signal, () => digest(h, signal));
  }
  if (inner.tampering) {
    const tampering = inner.tampering.bind(inner);
    wrapped.tampering = (signal?: AbortSignal): Promise<TamperReport> =>
      retry("list file versions", signal, () => tampering(signal));
  }
  if (inner.untamper) {
    // Rerunning after a transient failure is safe: it lists again and deletes what is still there.
    const untamper = inner.untamper.bind(inner);
    wrapped.untamper = (options?: UntamperOptions): Promise<UntamperReport> =>
      retry("remove foreign versions", options?.signal, () => untamper(options));
  }
  return wrapped;
}
