/**
 * The main thread's side of the blob workers: starts them, hands out jobs, routes their messages.
 * See worker-protocol.ts for the division of work.
 */
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { fileURLToPath } from "node:url";
import { existsSync } from "node:fs";
import { BulwarkError } from "../core/errors.js";
import type {
  BlobToRestore,
  EncodedBlob,
  FileOp,
  FileToChunk,
  FromWorker,
  PackVerification,
  ToWorker,
  WorkerInit,
} from "./worker-protocol.js";
import type { Repository } from "./repository.js";

export interface ChunkHandlers {
  /** For each id: store it (true) or not. Called on the main thread; must be synchronous and quick. */
  decide(ids: string[]): boolean[];
  /** Takes encoded blobs; resolves when there is room for more. */
  store(blobs: EncodedBlob[]): Promise<void>;
}

export interface ChunkedFile {
  content: string[];
  size: number;
  error?: string;
}

interface Job {
  worker: PooledWorker;
  onMessage(msg: FromWorker): void;
  reject(err: unknown): void;
}

interface PooledWorker {
  thread: Worker;
  active: number;
}

/** Resolves the worker script next to this module; under vitest (TypeScript sources) use the build. */
function workerScript(): string {
  const here = fileURLToPath(new URL("./worker.js", import.meta.url));
  if (existsSync(here)) return here;
  const built = here.replace(/[/\\]src[/\\]repository[/\\]worker\.js$/, "/dist/repository/worker.js");
  if (existsSync(built)) return built;
  throw new Error(`worker script not found at ${here} or ${built}: run \`npm run build\` first`);
}

export class WorkerPool {
  private readonly workers: PooledWorker[] = [];
  private readonly jobs = new Map<number, Job>();
  private readonly queue: { start: (w: PooledWorker) => void }[] = [];
  private nextJob = 1;
  private closed = false;

  private readonly init: WorkerInit;

  constructor(
    repo: Repository,
    private readonly wanted = Math.max(1, Math.min(availableParallelism(), 8)),
    private readonly jobsPerWorker = 2,
  ) {
    this.init = {
      encryptKey: repo.master.encrypt,
      idKey: repo.idKey,
      chunker: { ...repo.config.chunker, seed: Buffer.from(repo.config.chunker.seed, "hex") },
      compressionLevel: repo.config.compression.level,
    };
  }

  /** Threads start on the first job: an incremental backup that reads no file never pays for them. */
  private start(): void {
    const script = workerScript();
    for (let i = 0; i < this.wanted; i++) {
      const thread = new Worker(script, { workerData: this.init });
      const pooled: PooledWorker = { thread, active: 0 };
      thread.on("message", (msg: FromWorker) => this.jobs.get(msg.job)?.onMessage(msg));
      thread.on("error", (err) => this.failWorker(pooled, err));
      thread.on("exit", (code) => {
        if (!this.closed) this.failWorker(pooled, new Error(`blob worker exited with code ${code}`));
      });
      this.workers.push(pooled);
    }
  }

  get size(): number {
    return this.wanted;
  }

  /** Chunks, hashes and (as decided) encodes files; results are in the order of `files`. */
  chunkFiles(files: FileToChunk[], handlers: ChunkHandlers): Promise<ChunkedFile[]> {
    return this.run((job, worker, resolve, reject) => {
      const results: ChunkedFile[] = new Array<ChunkedFile>(files.length);
      // A job is done only when the pack writer has taken all its blobs, not when the worker says so.
      const stores: Promise<void>[] = [];
      return {
        send: () => this.send(worker, { op: "chunk", job, files }),
        onMessage: (msg) => {
          switch (msg.op) {
            case "ids": {
              const store = Uint8Array.from(handlers.decide(msg.ids), (b) => (b ? 1 : 0));
              this.send(worker, { op: "decision", job, store });
              return;
            }
            case "blobs": {
              let bytes = 0;
              for (const b of msg.blobs) for (const piece of b.pieces) bytes += piece.length;
              const stored = handlers
                .store(msg.blobs)
                .then(() => this.send(worker, { op: "ack", job, bytes }));
              stored.catch((err: unknown) => reject(err));
              stores.push(stored);
              return;
            }
            case "file":
              results[msg.index] = {
                content: msg.content,
                size: msg.size,
                ...(msg.error === undefined ? {} : { error: msg.error }),
              };
              return;
            case "done":
              Promise.all(stores).then(
                () => resolve(results),
                (err: unknown) => reject(err),
              );
              return;
            case "failed":
              reject(new Error(`blob worker: ${msg.error}`));
              return;
            default:
              reject(new Error(`protocol: unexpected ${msg.op} in a chunk job`));
          }
        },
      };
    });
  }

  /** Decodes, verifies and writes blobs from one region of a pack. */
  restoreBlobs(
    data: Buffer,
    blobs: BlobToRestore[],
    skipZeroWrites: boolean,
  ): Promise<{ errors: { id: string; error: string }[]; bytesWritten: number }> {
    return this.run((job, worker, resolve, reject) => ({
      send: () => this.send(worker, { op: "restore", job, data, blobs, skipZeroWrites }, transferable(data)),
      onMessage: (msg) => {
        if (msg.op === "restored") resolve({ errors: msg.errors, bytesWritten: msg.bytesWritten });
        else reject(new Error(msg.op === "failed" ? `blob worker: ${msg.error}` : `protocol: ${msg.op}`));
      },
    }));
  }

  /** Runs file-system operations on a worker; resolves with the failures (index into `ops`). */
  fileOps(ops: FileOp[]): Promise<{ index: number; error: string; code?: string }[]> {
    return this.run((job, worker, resolve, reject) => ({
      send: () => this.send(worker, { op: "files", job, ops }),
      onMessage: (msg) => {
        if (msg.op === "filesDone") resolve(msg.errors);
        else reject(new Error(msg.op === "failed" ? `blob worker: ${msg.error}` : `protocol: ${msg.op}`));
      },
    }));
  }

  verifyPack(name: string, data: Buffer): Promise<PackVerification> {
    return this.run((job, worker, resolve, reject) => ({
      send: () => this.send(worker, { op: "verify", job, name, data }, transferable(data)),
      onMessage: (msg) => {
        if (msg.op === "verified") resolve(msg.result);
        else reject(new Error(msg.op === "failed" ? `blob worker: ${msg.error}` : `protocol: ${msg.op}`));
      },
    }));
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.thread.terminate()));
  }

  private run<T>(
    setup: (
      job: number,
      worker: PooledWorker,
      resolve: (value: T) => void,
      reject: (err: unknown) => void,
    ) => { send(): void; onMessage(msg: FromWorker): void },
  ): Promise<T> {
    if (this.closed) return Promise.reject(new Error("worker pool is closed"));
    if (this.workers.length === 0) this.start();
    return new Promise<T>((resolve, reject) => {
      const start = (worker: PooledWorker): void => {
        const job = this.nextJob++;
        worker.active++;
        let settled = false;
        const finish = (): void => {
          if (settled) return;
          settled = true;
          this.jobs.delete(job);
          worker.active--;
          this.dispatch();
        };
        const handlers = setup(
          job,
          worker,
          (value) => {
            finish();
            resolve(value);
          },
          (err) => {
            finish();
            reject(asError(err));
          },
        );
        this.jobs.set(job, {
          worker,
          onMessage: (msg) => handlers.onMessage(msg),
          reject: (err) => {
            finish();
            reject(asError(err));
          },
        });
        handlers.send();
      };
      this.queue.push({ start });
      this.dispatch();
    });
  }

  private dispatch(): void {
    while (this.queue.length > 0) {
      const worker = this.workers.reduce((a, b) => (b.active < a.active ? b : a));
      if (worker.active >= this.jobsPerWorker) return;
      this.queue.shift()!.start(worker);
    }
  }

  private send(worker: PooledWorker, msg: ToWorker, transfer: ArrayBuffer[] = []): void {
    worker.thread.postMessage(msg, transfer);
  }

  private failWorker(worker: PooledWorker, err: unknown): void {
    for (const job of [...this.jobs.values()]) {
      if (job.worker === worker) {
        job.reject(new BulwarkError("IO", "a blob worker thread failed", { cause: err }));
      }
    }
  }
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

function transferable(data: Buffer): ArrayBuffer[] {
  const ab = data.buffer as ArrayBuffer;
  return data.byteOffset === 0 && data.byteLength === ab.byteLength ? [ab] : [];
}
