import { createHash } from "node:crypto";

import { describe, expect, it } from "vitest";
import { bufferSource, type Backend } from "../../src/backend/backend.js";
import { MemoryBackend } from "../../src/backend/memory/memory-backend.js";
import { describeBackend } from "../../src/backend/testing/conformance.js";
import { withFaults } from "../../src/backend/testing/faulty.js";
import { withLimit } from "../../src/backend/wrappers/limit.js";
import { readOnly } from "../../src/backend/wrappers/read-only.js";
import { withRetry } from "../../src/backend/wrappers/retry.js";
import { BulwarkError, hasCode } from "../../src/core/errors.js";

const name = "ab".repeat(32);
const noSleep = (): Promise<void> => Promise.resolve();

/** Fails the first `failures` calls of every operation with the given code. */
function faulty(inner: Backend, failures: number, code: "TRANSIENT" | "AUTH"): Backend & { calls: number } {
  let left = failures;
  const fail = (): void => {
    wrapped.calls++;
    if (left > 0) {
      left--;
      throw new BulwarkError(code, `injected ${code}`);
    }
  };
  const wrapped = {
    calls: 0,
    location: inner.location,
    capabilities: inner.capabilities,
    stat: async (...a: Parameters<Backend["stat"]>) => (fail(), inner.stat(...a)),
    list: (...a: Parameters<Backend["list"]>) => inner.list(...a),
    load: async (...a: Parameters<Backend["load"]>) => (fail(), inner.load(...a)),
    openRead: (...a: Parameters<Backend["openRead"]>) => inner.openRead(...a),
    save: async (...a: Parameters<Backend["save"]>) => (fail(), inner.save(...a)),
    remove: async (...a: Parameters<Backend["remove"]>) => (fail(), inner.remove(...a)),
    close: () => inner.close(),
  };
  return wrapped;
}

describeBackend(
  "memory behind retry and limit",
  () =>
    Promise.resolve({
      backend: withLimit(withRetry(new MemoryBackend()), 2),
      cleanup: () => Promise.resolve(),
    }),
  { largeObjectBytes: 8 * 1024 * 1024 },
);

describe("retry", () => {
  it("retries transient failures until the operation succeeds", async () => {
    const inner = faulty(new MemoryBackend(), 3, "TRANSIENT");
    const retries: number[] = [];
    const b = withRetry(inner, { sleep: noSleep, onRetry: (_w, n) => retries.push(n) });
    await b.save({ type: "index", name }, bufferSource(Buffer.from("x")));
    expect(retries).toEqual([1, 2, 3]);
    expect((await b.load({ type: "index", name })).toString()).toBe("x");
  });

  it("gives up after the attempts and surfaces the last error", async () => {
    const b = withRetry(faulty(new MemoryBackend(), 10, "TRANSIENT"), { attempts: 3, sleep: noSleep });
    await expect(b.stat({ type: "index", name })).rejects.toSatisfy((e: unknown) => hasCode(e, "TRANSIENT"));
  });

  it("never retries a permanent error", async () => {
    const inner = faulty(new MemoryBackend(), 1, "AUTH");
    const b = withRetry(inner, { sleep: noSleep });
    await expect(b.stat({ type: "index", name })).rejects.toSatisfy((e: unknown) => hasCode(e, "AUTH"));
    expect(inner.calls).toBe(1);
  });
});

describe("limit", () => {
  it("keeps at most n operations in flight", async () => {
    let inFlight = 0;
    let peak = 0;
    const inner = new MemoryBackend();
    const slow: Backend = {
      ...inner,
      location: inner.location,
      capabilities: inner.capabilities,
      stat: async (h) => {
        inFlight++;
        peak = Math.max(peak, inFlight);
        await new Promise((r) => setTimeout(r, 5));
        inFlight--;
        return { name: h.name, size: 0 };
      },
      list: (t) => inner.list(t),
      load: (h, r) => inner.load(h, r),
      openRead: (h, r) => inner.openRead(h, r),
      save: (h, s, o) => inner.save(h, s, o),
      remove: (h) => inner.remove(h),
      close: () => inner.close(),
    };
    const b = withLimit(slow, 3);
    await Promise.all(Array.from({ length: 20 }, () => b.stat({ type: "index", name })));
    expect(peak).toBe(3);
  });
});

describe("read-only", () => {
  it("reads but refuses every change", async () => {
    const inner = new MemoryBackend();
    await inner.save({ type: "index", name }, bufferSource(Buffer.from("data")));
    const b = readOnly(inner);
    expect((await b.load({ type: "index", name })).toString()).toBe("data");
    await expect(b.save({ type: "index", name }, bufferSource(Buffer.from("x")))).rejects.toThrow(
      /read-only/,
    );
    await expect(b.remove({ type: "index", name })).rejects.toThrow(/read-only/);
    expect((await inner.load({ type: "index", name })).toString()).toBe("data");
  });
});

describe("digest through the wrappers", () => {
  /** A backend that hashes "remotely" (a fake for the wrappers' logic; the vault tests use the real one). */
  function hashing(failures: number): Backend & { digestCalls: number } {
    const inner = new MemoryBackend();
    let left = failures;
    const backend = Object.assign(inner, {
      digestCalls: 0,
      digest: async (h: Parameters<NonNullable<Backend["digest"]>>[0]) => {
        backend.digestCalls++;
        if (left-- > 0) throw new BulwarkError("TRANSIENT", "injected TRANSIENT");
        const data = await inner.load(h);
        return { sha256: createHash("sha256").update(data).digest("hex"), size: data.length };
      },
    });
    return backend;
  }

  it("retry, limit, read-only and faulty pass digest on (retry retrying a transient failure)", async () => {
    const inner = hashing(2);
    const h = { type: "pack" as const, name };
    await inner.save(h, bufferSource(Buffer.from("stored")));
    const expected = { sha256: createHash("sha256").update("stored").digest("hex"), size: 6 };
    const b = readOnly(withLimit(withFaults(withRetry(inner, { sleep: noSleep })), 1), { allowLocks: true });
    expect(await b.digest?.(h)).toEqual(expected);
    expect(inner.digestCalls).toBe(3);
  });

  it("a wrapped backend without digest offers none: nothing fakes it by downloading", () => {
    const plain = new MemoryBackend();
    for (const b of [withRetry(plain), withLimit(plain), readOnly(plain), withFaults(plain)]) {
      expect(b.digest === undefined).toBe(true);
    }
  });
});

describe("tampering and untamper through the wrappers", () => {
  /** A fake for the wrappers' logic; the S3 tests on Ceph use the real ones. */
  function versioned(): Backend & { undone: boolean[] } {
    const found = { files: [], storedVersions: 3 };
    const backend = Object.assign(new MemoryBackend(), {
      undone: [] as boolean[],
      tampering: () => Promise.resolve(found),
      untamper: (o?: { dryRun?: boolean }) => {
        backend.undone.push(o?.dryRun === true);
        return Promise.resolve({ files: 0, actions: [] });
      },
    });
    return backend;
  }

  it("retry and limit pass both on; read-only passes tampering and a dry run, and refuses the removal", async () => {
    const inner = versioned();
    const rw = withLimit(withRetry(inner, { sleep: noSleep }), 1);
    expect((await rw.tampering?.())?.storedVersions).toBe(3);
    await rw.untamper?.();
    const ro = readOnly(rw);
    expect((await ro.tampering?.())?.storedVersions).toBe(3);
    await ro.untamper?.({ dryRun: true });
    const refused = await ro.untamper?.().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(hasCode(refused, "USAGE")).toBe(true);
    expect(inner.undone).toEqual([false, true]);
  });

  it("a backend that keeps no versions offers neither, wrapped or not", () => {
    const plain = new MemoryBackend();
    const all: Backend[] = [plain, withRetry(plain), withLimit(plain), readOnly(plain)];
    for (const b of all) {
      expect(b.tampering === undefined && b.untamper === undefined).toBe(true);
    }
  });
});
