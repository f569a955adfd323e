/**
 * The fault-injecting wrapper (src/backend/testing/faulty.ts) and, through it, how withRetry and the
 * repository react to a misbehaving backend. Everything runs over the memory backend: these tests show the
 * logic above a backend handles the modelled faults, not that any real server behaves like this.
 */
import { randomBytes } from "node:crypto";

import { describe, expect, it } from "vitest";

import { bufferSource, type Backend, type FileHandle, type FileType } from "../../src/backend/backend.js";
import { MemoryBackend } from "../../src/backend/memory/memory-backend.js";
import { describeBackend } from "../../src/backend/testing/conformance.js";
import { InjectedCrash, withFaults, type FaultCall } from "../../src/backend/testing/faulty.js";
import { withRetry, type RetryOptions } from "../../src/backend/wrappers/retry.js";
import { BulwarkError, hasCode, type ErrorCode } from "../../src/core/errors.js";
import { PackWriter } from "../../src/repository/pack-writer.js";
import { Repository } from "../../src/repository/repository.js";

const weakKdf = { N: 1024, r: 8, p: 1 };
const noSleep = (): Promise<void> => Promise.resolve();

let counter = 0;
/** A fresh, valid handle of the type (names are 64 hex digits). */
function handle(type: Exclude<FileType, "config"> = "index"): FileHandle {
  return { type, name: (++counter).toString(16).padStart(64, "0") };
}

async function store(b: Backend, h: FileHandle, data: Uint8Array): Promise<void> {
  await b.save(h, bufferSource(data));
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

async function readAll(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  return Buffer.concat(await collect(it));
}

const withCode =
  (code: ErrorCode) =>
  (e: unknown): boolean =>
    hasCode(e, code);

/** A retry wrapper that does not wait and remembers which attempts it retried. */
function fastRetry(inner: Backend, options: RetryOptions = {}): { backend: Backend; retried: number[] } {
  const retried: number[] = [];
  const backend = withRetry(inner, {
    sleep: noSleep,
    onRetry: (_what, attempt) => retried.push(attempt),
    ...options,
  });
  return { backend, retried };
}

describeBackend(
  "memory behind withFaults with no rules",
  () => Promise.resolve({ backend: withFaults(new MemoryBackend()), cleanup: () => Promise.resolve() }),
  { largeObjectBytes: 8 * 1024 * 1024 },
);

describe("withFaults", () => {
  it("passes calls through and logs each one with its method, handle and range", async () => {
    const b = withFaults(new MemoryBackend());
    const h = handle("pack");
    await store(b, h, Buffer.from("hello world"));
    expect((await b.load(h, { offset: 6 })).toString()).toBe("world");
    expect(await b.stat(h)).toEqual({ name: h.name, size: 11 });
    expect(await collect(b.list("pack"))).toEqual([{ name: h.name, size: 11 }]);
    expect((await readAll(b.openRead(h, { offset: 0, length: 5 }))).toString()).toBe("hello");
    await b.remove(h);

    expect(b.calls.map((c) => c.method)).toEqual(["save", "load", "stat", "list", "openRead", "remove"]);
    expect(b.calls.map((c) => c.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(b.calls[1]).toMatchObject({ handle: h, type: "pack", range: { offset: 6 }, faults: [] });
    expect(b.calls[3]).toMatchObject({ handle: undefined, type: "pack" });
    expect(b.callsOf("load")).toHaveLength(1);
  });

  it("logs a stream's call when it is made, not when it is first read", async () => {
    const b = withFaults(new MemoryBackend());
    const listing = b.list("index");
    await b.stat(handle()).catch(() => undefined);
    await collect(listing);
    expect(b.calls.map((c) => c.method)).toEqual(["list", "stat"]);
  });

  it("fails only the Nth call of a method, with a TRANSIENT BulwarkError by default", async () => {
    const b = withFaults(new MemoryBackend());
    const h = handle();
    await store(b, h, Buffer.from("x"));
    const rule = b.addRule({ method: "load", nth: 2, fault: { kind: "fail" } });

    await expect(b.load(h)).resolves.toHaveLength(1);
    const second = b.load(h);
    await expect(second).rejects.toBeInstanceOf(BulwarkError);
    await expect(second).rejects.toSatisfy(withCode("TRANSIENT"));
    await expect(second).rejects.toThrow(`load index/${h.name}`);
    await expect(b.load(h)).resolves.toHaveLength(1);
    await expect(b.stat(h)).resolves.toEqual({ name: h.name, size: 1 });

    expect(rule.matched).toBe(3);
    expect(rule.fired).toBe(1);
    expect(b.callsOf("load").map((c) => c.faults)).toEqual([[], ["fail"], []]);
  });

  it("fails a list of calls, or the first `times` calls", async () => {
    const b = withFaults(new MemoryBackend());
    const h = handle();
    await store(b, h, Buffer.from("x"));
    b.addRule({ method: "stat", nth: [1, 3], fault: { kind: "fail" } });
    b.addRule({ method: "load", times: 2, fault: { kind: "fail" } });

    const stats = await Promise.allSettled([b.stat(h), b.stat(h), b.stat(h), b.stat(h)]);
    expect(stats.map((s) => s.status)).toEqual(["rejected", "fulfilled", "rejected", "fulfilled"]);
    const loads = await Promise.allSettled([b.load(h), b.load(h), b.load(h)]);
    expect(loads.map((s) => s.status)).toEqual(["rejected", "rejected", "fulfilled"]);
  });

  it("counts a rule's Nth call across all the methods it watches", async () => {
    const b = withFaults(new MemoryBackend());
    const h = handle();
    await store(b, h, Buffer.from("x"));
    b.addRule({ method: ["stat", "load"], nth: 2, fault: { kind: "fail" } });
    await expect(b.stat(h)).resolves.toBeDefined();
    await expect(b.load(h)).rejects.toSatisfy(withCode("TRANSIENT"));
    await expect(b.stat(h)).resolves.toBeDefined();
  });

  it("fails every call a predicate on the handle picks, across several methods", async () => {
    const b = withFaults(new MemoryBackend());
    const pack = handle("pack");
    const index = handle("index");
    await store(b, pack, Buffer.from("p"));
    await store(b, index, Buffer.from("i"));
    const rule = b.addRule({
      method: ["load", "stat"],
      when: (c) => c.handle?.type === "pack",
      fault: { kind: "fail", error: "NOT_FOUND" },
    });

    for (let i = 0; i < 3; i++) {
      await expect(b.load(pack)).rejects.toSatisfy(withCode("NOT_FOUND"));
      await expect(b.stat(pack)).rejects.toSatisfy(withCode("NOT_FOUND"));
      await expect(b.load(index)).resolves.toEqual(Buffer.from("i"));
    }
    // Calls the predicate turns away are not counted as watched.
    expect(rule.matched).toBe(6);
    expect(rule.fired).toBe(6);
  });

  it("rejects with the code, Error or factory the rule names", async () => {
    const b = withFaults(new MemoryBackend());
    const h = handle();
    await store(b, h, Buffer.from("x"));
    const custom = new Error("custom failure");
    const seen: FaultCall[] = [];
    b.addRule({ method: "stat", nth: 1, fault: { kind: "fail", error: "AUTH" } });
    b.addRule({ method: "stat", nth: 2, fault: { kind: "fail", error: custom } });
    b.addRule({
      method: "stat",
      nth: 3,
      fault: {
        kind: "fail",
        error: (call) => {
          seen.push(call);
          return new BulwarkError("RETENTION_LOCKED", `made for call ${call.seq}`);
        },
      },
    });

    await expect(b.stat(h)).rejects.toSatisfy(withCode("AUTH"));
    await expect(b.stat(h)).rejects.toBe(custom);
    await expect(b.stat(h)).rejects.toThrow(/made for call 4/);
    expect(seen).toMatchObject([{ seq: 4, method: "stat", handle: h }]);
    await expect(b.stat(h)).resolves.toBeDefined();
  });

  it("a failed save or remove never reaches the inner backend", async () => {
    const inner = new MemoryBackend();
    const b = withFaults(inner, { rules: [{ method: ["save", "remove"], fault: { kind: "fail" } }] });
    const kept = handle();
    await store(inner, kept, Buffer.from("kept"));

    await expect(store(b, handle(), Buffer.from("new"))).rejects.toSatisfy(withCode("TRANSIENT"));
    await expect(b.remove(kept)).rejects.toSatisfy(withCode("TRANSIENT"));
    expect(inner.fileCount).toBe(1);
    expect((await inner.load(kept)).toString()).toBe("kept");
  });

  it("a failing stream throws before its first piece", async () => {
    const b = withFaults(new MemoryBackend());
    const h = handle();
    await store(b, h, Buffer.from("data"));
    b.addRule({ method: ["list", "openRead"], fault: { kind: "fail", error: "AUTH" } });

    const got: unknown[] = [];
    const drain = async (it: AsyncIterable<unknown>): Promise<void> => {
      for await (const x of it) got.push(x);
    };
    await expect(drain(b.list("index"))).rejects.toSatisfy(withCode("AUTH"));
    await expect(drain(b.openRead(h))).rejects.toSatisfy(withCode("AUTH"));
    expect(got).toEqual([]);
  });

  it("truncates a load to K bytes, and leaves a shorter result whole", async () => {
    const b = withFaults(new MemoryBackend());
    const h = handle("pack");
    const data = randomBytes(100);
    await store(b, h, data);
    const rule = b.addRule({ method: "load", fault: { kind: "truncate", bytes: 10 } });

    expect((await b.load(h)).equals(data.subarray(0, 10))).toBe(true);
    expect((await b.load(h, { offset: 50, length: 40 })).equals(data.subarray(50, 60))).toBe(true);
    expect((await b.load(h, { offset: 95 })).equals(data.subarray(95))).toBe(true);
    rule.remove();
    b.addRule({ method: "load", nth: 1, fault: { kind: "truncate", bytes: 0 } });
    expect(await b.load(h)).toHaveLength(0);
    expect((await b.load(h)).equals(data)).toBe(true);
    // The stored file is untouched.
    expect((await b.inner.load(h)).equals(data)).toBe(true);
  });

  it("truncates an openRead stream across its pieces, and still reports a missing file", async () => {
    const b = withFaults(new MemoryBackend());
    const h = handle("pack");
    const data = randomBytes(2.5 * 1024 * 1024); // three pieces of the memory backend's stream
    await store(b, h, data);
    const cut = 1.5 * 1024 * 1024;
    b.addRule({ method: "openRead", nth: 1, fault: { kind: "truncate", bytes: cut } });
    b.addRule({ method: "openRead", nth: 2, fault: { kind: "truncate", bytes: 0 } });

    expect((await readAll(b.openRead(h))).equals(data.subarray(0, cut))).toBe(true);
    await expect(readAll(b.openRead(handle("pack")))).rejects.toSatisfy(withCode("NOT_FOUND"));
    expect((await readAll(b.openRead(h))).equals(data)).toBe(true);
  });

  it("delays a call before it reaches the inner backend", async () => {
    const waits: number[] = [];
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const inner = new MemoryBackend();
    const b = withFaults(inner, {
      rules: [{ method: "save", fault: { kind: "delay", ms: 50 } }],
      sleep: (ms) => {
        waits.push(ms);
        return gate;
      },
    });
    const h = handle();
    const saving = store(b, h, Buffer.from("late"));
    await new Promise((resolve) => setImmediate(resolve));
    expect(waits).toEqual([50]);
    expect(inner.fileCount).toBe(0);
    release();
    await saving;
    expect((await inner.load(h)).toString()).toBe("late");
  });

  it("delays with real timers by default, then applies the call's other faults", async () => {
    const b = withFaults(new MemoryBackend(), {
      rules: [
        { method: "stat", fault: { kind: "delay", ms: 30 } },
        { method: "stat", fault: { kind: "fail", error: "AUTH" } },
      ],
    });
    const started = performance.now();
    await expect(b.stat(handle())).rejects.toSatisfy(withCode("AUTH"));
    expect(performance.now() - started).toBeGreaterThanOrEqual(25);
    expect(b.calls[0]?.faults).toEqual(["delay", "fail"]);
  });

  it("crash after save: the file is stored whole, then the call rejects", async () => {
    const inner = new MemoryBackend();
    const b = withFaults(inner, { rules: [{ method: "save", nth: 1, fault: { kind: "crash-after-save" } }] });
    const h = handle("snapshot");
    await expect(store(b, h, Buffer.from("complete"))).rejects.toBeInstanceOf(InjectedCrash);
    expect((await inner.load(h)).toString()).toBe("complete");

    b.addRule({ method: "save", fault: { kind: "crash-after-save", error: "TRANSIENT" } });
    const h2 = handle("snapshot");
    await expect(store(b, h2, Buffer.from("also"))).rejects.toSatisfy(withCode("TRANSIENT"));
    expect((await inner.load(h2)).toString()).toBe("also");
  });

  it("crash after save does not fire when the save itself fails", async () => {
    const inner = new MemoryBackend();
    const h = handle();
    await store(inner, h, Buffer.from("first"));
    const b = withFaults(inner, { rules: [{ method: "save", fault: { kind: "crash-after-save" } }] });
    await expect(b.save(h, bufferSource(Buffer.from("second")), { ifAbsent: true })).rejects.toSatisfy(
      withCode("ALREADY_EXISTS"),
    );
  });

  it("rules can be added, removed and cleared at run time; nth counts from when a rule is added", async () => {
    const b = withFaults(new MemoryBackend());
    const h = handle();
    await store(b, h, Buffer.from("x"));
    await b.load(h);
    await b.load(h);
    const first = b.addRule({ method: "load", nth: 1, fault: { kind: "fail" } });
    const second = b.addRule({ method: "stat", fault: { kind: "fail" } });
    expect(b.rules).toEqual([first, second]);

    await expect(b.load(h)).rejects.toSatisfy(withCode("TRANSIENT"));
    await expect(b.stat(h)).rejects.toSatisfy(withCode("TRANSIENT"));
    second.remove();
    expect(b.rules).toEqual([first]);
    await expect(b.stat(h)).resolves.toBeDefined();

    b.addRule({ method: "remove", fault: { kind: "fail" } });
    b.clearRules();
    expect(b.rules).toEqual([]);
    await b.remove(h);
    expect(first.fired).toBe(1);
  });

  it("clearCalls empties the log but call numbers keep counting", async () => {
    const b = withFaults(new MemoryBackend());
    const h = handle();
    await store(b, h, Buffer.from("x"));
    await b.stat(h);
    b.clearCalls();
    expect(b.calls).toEqual([]);
    await b.load(h);
    expect(b.calls).toMatchObject([{ seq: 3, method: "load", handle: h }]);
    await b.close();
    expect(b.calls.map((c) => c.method)).toEqual(["load", "close"]);
  });

  it("refuses malformed rules", () => {
    const b = withFaults(new MemoryBackend());
    expect(() => b.addRule({ method: "save", fault: { kind: "truncate", bytes: 1 } })).toThrow(
      /cannot apply/,
    );
    expect(() => b.addRule({ method: ["save", "load"], fault: { kind: "crash-after-save" } })).toThrow(
      /cannot apply to load/,
    );
    expect(() => b.addRule({ method: "load", fault: { kind: "truncate", bytes: -1 } })).toThrow(/invalid/);
    expect(() => b.addRule({ method: "load", nth: 0, fault: { kind: "fail" } })).toThrow(/counted from 1/);
    expect(() => b.addRule({ method: "load", fault: { kind: "delay", ms: -5 } })).toThrow(/invalid delay/);
    expect(() => b.addRule({ method: [], fault: { kind: "fail" } })).toThrow(/at least one/);
    expect(() =>
      withFaults(new MemoryBackend(), { rules: [{ method: "list", fault: { kind: "truncate", bytes: 1 } }] }),
    ).toThrow(/cannot apply/);
    expect(b.rules).toEqual([]);
  });

  it("has the inner backend's optional methods, and only those, with faults on them too", async () => {
    const plain = withFaults(new MemoryBackend());
    expect("getRetention" in plain).toBe(false);
    expect("extendRetention" in plain).toBe(false);
    expect("removeStaleTempFiles" in plain).toBe(false);

    const b = withFaults(new MemoryBackend({ retentionModes: ["governance"] }), {
      rules: [{ method: "extendRetention", nth: 1, fault: { kind: "fail", error: "AUTH" } }],
    });
    const h = handle();
    await store(b, h, Buffer.from("x"));
    const retention = { mode: "governance" as const, until: new Date(Date.now() + 60_000) };
    await expect(b.extendRetention?.(h, retention)).rejects.toSatisfy(withCode("AUTH"));
    expect(await b.getRetention?.(h)).toBeUndefined();
    await b.extendRetention?.(h, retention);
    expect((await b.getRetention?.(h))?.until).toEqual(retention.until);
    expect(b.calls.map((c) => c.method)).toEqual([
      "save",
      "extendRetention",
      "getRetention",
      "extendRetention",
      "getRetention",
    ]);
  });
});

describe("withRetry over withFaults", () => {
  it("retries a TRANSIENT failure of the first 2 calls and succeeds on the third", async () => {
    const faulty = withFaults(new MemoryBackend());
    const h = handle();
    await store(faulty.inner, h, Buffer.from("data"));
    faulty.addRule({ method: "load", nth: [1, 2], fault: { kind: "fail" } });
    const { backend, retried } = fastRetry(faulty);

    expect((await backend.load(h)).toString()).toBe("data");
    expect(retried).toEqual([1, 2]);
    expect(faulty.callsOf("load").map((c) => c.faults)).toEqual([["fail"], ["fail"], []]);
  });

  it("retries a save that failed before reaching the backend, opening the source again", async () => {
    const inner = new MemoryBackend();
    const faulty = withFaults(inner, { rules: [{ method: "save", times: 2, fault: { kind: "fail" } }] });
    const { backend, retried } = fastRetry(faulty);
    const h = handle("pack");
    await store(backend, h, Buffer.from("packed"));
    expect(retried).toEqual([1, 2]);
    expect(faulty.callsOf("save")).toHaveLength(3);
    expect((await inner.load(h)).toString()).toBe("packed");
  });

  it.each(["AUTH", "NOT_FOUND"] as const)("never retries a permanent %s error", async (code) => {
    const faulty = withFaults(new MemoryBackend());
    const h = handle();
    await store(faulty.inner, h, Buffer.from("data"));
    faulty.addRule({ method: ["load", "save"], fault: { kind: "fail", error: code } });
    const { backend, retried } = fastRetry(faulty);

    await expect(backend.load(h)).rejects.toSatisfy(withCode(code));
    await expect(store(backend, handle(), Buffer.from("x"))).rejects.toSatisfy(withCode(code));
    expect(retried).toEqual([]);
    expect(faulty.callsOf("load")).toHaveLength(1);
    expect(faulty.callsOf("save")).toHaveLength(1);
  });

  it("does not retry the memory backend's own NOT_FOUND", async () => {
    const faulty = withFaults(new MemoryBackend());
    const { backend, retried } = fastRetry(faulty);
    await expect(backend.stat(handle())).rejects.toSatisfy(withCode("NOT_FOUND"));
    expect(retried).toEqual([]);
    expect(faulty.calls).toHaveLength(1);
  });

  it("gives up after its attempts and surfaces the last error", async () => {
    const made: Error[] = [];
    const faulty = withFaults(new MemoryBackend(), {
      rules: [
        {
          method: "stat",
          fault: {
            kind: "fail",
            error: (call) => {
              const e = new BulwarkError("TRANSIENT", `timeout on call ${call.seq}`);
              made.push(e);
              return e;
            },
          },
        },
      ],
    });
    const { backend, retried } = fastRetry(faulty, { attempts: 3 });

    const attempt = backend.stat(handle());
    await expect(attempt).rejects.toThrow("timeout on call 3");
    expect(made).toHaveLength(3);
    await expect(attempt).rejects.toBe(made[2]);
    expect(retried).toEqual([1, 2]);
  });

  it("backs off exponentially with jitter, capped at maxDelayMs", async () => {
    const waits: number[] = [];
    const faulty = withFaults(new MemoryBackend(), { rules: [{ method: "stat", fault: { kind: "fail" } }] });
    const backend = withRetry(faulty, {
      attempts: 5,
      baseDelayMs: 8,
      maxDelayMs: 20,
      sleep: (ms) => {
        waits.push(ms);
        return Promise.resolve();
      },
    });
    await expect(backend.stat(handle())).rejects.toSatisfy(withCode("TRANSIENT"));
    // Each wait is in [delay/2, delay] for delay = min(20, 8 * 2^(attempt - 1)): 8, 16, 20, 20.
    const bounds: [number, number][] = [
      [4, 8],
      [8, 16],
      [10, 20],
      [10, 20],
    ];
    expect(waits).toHaveLength(bounds.length);
    waits.forEach((w, i) => {
      const [low, high] = bounds[i]!;
      expect(w).toBeGreaterThanOrEqual(low);
      expect(w).toBeLessThanOrEqual(high);
    });
  });

  it("stops retrying once the caller's signal is aborted", async () => {
    const controller = new AbortController();
    const faulty = withFaults(new MemoryBackend(), {
      rules: [
        {
          method: "stat",
          fault: {
            kind: "fail",
            error: () => {
              controller.abort();
              return new BulwarkError("TRANSIENT", "reset");
            },
          },
        },
      ],
    });
    const { backend, retried } = fastRetry(faulty);
    await expect(backend.stat(handle(), controller.signal)).rejects.toSatisfy(withCode("TRANSIENT"));
    expect(retried).toEqual([]);
    expect(faulty.calls).toHaveLength(1);
  });

  it("retries a stream that fails before its first piece", async () => {
    const faulty = withFaults(new MemoryBackend());
    const h = handle();
    await store(faulty.inner, h, Buffer.from("streamed"));
    faulty.addRule({ method: "list", nth: 1, fault: { kind: "fail" } });
    faulty.addRule({ method: "openRead", nth: 1, fault: { kind: "fail" } });
    const { backend, retried } = fastRetry(faulty);

    expect(await collect(backend.list("index"))).toEqual([{ name: h.name, size: 8 }]);
    expect((await readAll(backend.openRead(h))).toString()).toBe("streamed");
    expect(retried).toEqual([1, 1]);
    expect(faulty.callsOf("list")).toHaveLength(2);
    expect(faulty.callsOf("openRead")).toHaveLength(2);
  });

  it("passes a truncated load through as it is: retry.ts checks no lengths and does not read again", async () => {
    const faulty = withFaults(new MemoryBackend());
    const h = handle("pack");
    const data = randomBytes(64);
    await store(faulty.inner, h, data);
    faulty.addRule({ method: ["load", "openRead"], fault: { kind: "truncate", bytes: 16 } });
    const { backend, retried } = fastRetry(faulty);

    expect((await backend.load(h)).equals(data.subarray(0, 16))).toBe(true);
    expect((await readAll(backend.openRead(h))).equals(data.subarray(0, 16))).toBe(true);
    expect(retried).toEqual([]);
    expect(faulty.calls.map((c) => c.method)).toEqual(["load", "openRead"]);
  });

  it("does not retry a crash after save (the default InjectedCrash): the file stays stored", async () => {
    const faulty = withFaults(new MemoryBackend(), {
      rules: [{ method: "save", fault: { kind: "crash-after-save" } }],
    });
    const { backend, retried } = fastRetry(faulty);
    const h = handle("snapshot");
    await expect(store(backend, h, Buffer.from("whole"))).rejects.toBeInstanceOf(InjectedCrash);
    expect(retried).toEqual([]);
    expect(faulty.callsOf("save")).toHaveLength(1);
    expect((await faulty.inner.load(h)).toString()).toBe("whole");
  });

  it("a TRANSIENT loss after the write is retried: a replacing save succeeds", async () => {
    const faulty = withFaults(new MemoryBackend(), {
      rules: [{ method: "save", nth: 1, fault: { kind: "crash-after-save", error: "TRANSIENT" } }],
    });
    const { backend, retried } = fastRetry(faulty);
    const h = handle("index");
    await store(backend, h, Buffer.from("twice"));
    expect(retried).toEqual([1]);
    expect(faulty.callsOf("save")).toHaveLength(2);
    expect((await faulty.inner.load(h)).toString()).toBe("twice");
  });

  it("a TRANSIENT loss after an ifAbsent write is retried into ALREADY_EXISTS, which surfaces", async () => {
    // What retry.ts does today: the retry finds its own first write and reports ALREADY_EXISTS.
    const faulty = withFaults(new MemoryBackend(), {
      rules: [{ method: "save", nth: 1, fault: { kind: "crash-after-save", error: "TRANSIENT" } }],
    });
    const { backend, retried } = fastRetry(faulty);
    const h = handle("snapshot");
    await expect(backend.save(h, bufferSource(Buffer.from("doc")), { ifAbsent: true })).rejects.toSatisfy(
      withCode("ALREADY_EXISTS"),
    );
    expect(retried).toEqual([1]);
    expect(faulty.callsOf("save")).toHaveLength(2);
    expect((await faulty.inner.load(h)).toString()).toBe("doc");
  });
});

describe("the repository over faults", () => {
  /** A repository with one data blob and its index, reopened through retry over faults. */
  async function setup(): Promise<{
    faulty: ReturnType<typeof withFaults>;
    repo: Repository;
    blobId: string;
    blob: Buffer;
    retried: number[];
  }> {
    const memory = new MemoryBackend();
    const first = await Repository.init(memory, "pw", { kdf: weakKdf });
    const writer = new PackWriter(first);
    const blob = randomBytes(5000);
    const blobId = await writer.addPlain("data", blob);
    await writer.flush();
    await first.saveDocument("index", { version: 1, packs: writer.takeNewPacks() });

    const faulty = withFaults(memory);
    const { backend, retried } = fastRetry(faulty);
    const repo = await Repository.open(backend, "pw");
    await repo.loadIndex();
    faulty.clearCalls();
    return { faulty, repo, blobId, blob, retried };
  }

  it("loadBlob reports a short pack read as INVALID_DATA and does not read it again", async () => {
    const { faulty, repo, blobId, blob, retried } = await setup();
    const rule = faulty.addRule({
      method: "load",
      when: (c) => c.type === "pack",
      fault: { kind: "truncate", bytes: 100 },
    });
    const loading = repo.loadBlob(blobId);
    await expect(loading).rejects.toSatisfy(withCode("INVALID_DATA"));
    await expect(loading).rejects.toThrow(/pack is truncated/);
    expect(retried).toEqual([]);
    expect(faulty.callsOf("load")).toHaveLength(1);

    rule.remove();
    expect((await repo.loadBlob(blobId)).equals(blob)).toBe(true);
  });

  it("loadBlob rides out TRANSIENT failures of the pack read", async () => {
    const { faulty, repo, blobId, blob, retried } = await setup();
    faulty.addRule({ method: "load", nth: [1, 2], fault: { kind: "fail" } });
    expect((await repo.loadBlob(blobId)).equals(blob)).toBe(true);
    expect(retried).toEqual([1, 2]);
  });

  it("loadDocument reports a short read as INVALID_DATA through its name check", async () => {
    const { faulty, repo } = await setup();
    const name = await repo.saveDocument("snapshot", { hello: "world" });
    faulty.addRule({ method: "load", nth: 1, fault: { kind: "truncate", bytes: 10 } });
    await expect(repo.loadDocument("snapshot", name)).rejects.toThrow(/do not match the file name/);
    await expect(repo.loadDocument("snapshot", name)).resolves.toEqual({ hello: "world" });
  });

  it("opens through TRANSIENT failures of the config read, and surfaces AUTH as it is", async () => {
    const { faulty } = await setup();
    const { backend, retried } = fastRetry(faulty);
    faulty.addRule({
      method: "load",
      when: (c) => c.type === "config",
      nth: [1, 2],
      fault: { kind: "fail" },
    });
    await expect(Repository.open(backend, "pw")).resolves.toBeInstanceOf(Repository);
    expect(retried).toEqual([1, 2]);

    faulty.clearRules();
    faulty.addRule({
      method: "load",
      when: (c) => c.type === "config",
      fault: { kind: "fail", error: "AUTH" },
    });
    await expect(Repository.open(backend, "pw")).rejects.toSatisfy(withCode("AUTH"));
  });
});
