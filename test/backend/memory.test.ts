/**
 * MemoryBackend against the conformance suite, plain and with retention: unit tests elsewhere trust it to
 * behave like a real backend, and it is the only backend that exercises the suite's retention checks
 * without a cloud account.
 */

import { randomBytes } from "node:crypto";

import { describe, expect, it } from "vitest";

import { bufferSource } from "../../src/backend/backend.js";
import { MemoryBackend } from "../../src/backend/memory/memory-backend.js";
import { describeBackend } from "../../src/backend/testing/conformance.js";
import { hasCode } from "../../src/core/errors.js";

// The memory backend holds what it stores (twice while a save assembles it), so the streamed object
// must fit well inside the suite's RSS bound.
const largeObjectBytes = 8 * 1024 * 1024;

describeBackend(
  "memory",
  () => Promise.resolve({ backend: new MemoryBackend(), cleanup: () => Promise.resolve() }),
  { largeObjectBytes },
);

describeBackend(
  "memory with retention",
  () =>
    Promise.resolve({
      backend: new MemoryBackend({ retentionModes: ["governance", "compliance"] }),
      cleanup: () => Promise.resolve(),
    }),
  { largeObjectBytes },
);

describe("MemoryBackend", () => {
  const name = "cd".repeat(32);

  it("has no retention methods unless it enforces retention", () => {
    expect(new MemoryBackend().getRetention).toBeUndefined();
    expect(new MemoryBackend().extendRetention).toBeUndefined();
    expect(new MemoryBackend({ retentionModes: ["compliance"] }).extendRetention).toBeDefined();
  });

  it("allows removing a file once its retention has expired", async () => {
    let now = Date.parse("2030-01-01T00:00:00Z");
    const backend = new MemoryBackend({ retentionModes: ["compliance"], now: () => now });
    const h = { type: "snapshot", name } as const;
    await backend.save(h, bufferSource(randomBytes(10)));
    await backend.extendRetention?.(h, { mode: "compliance", until: new Date(now + 60_000) });
    await expect(backend.remove(h)).rejects.toSatisfy((err) => hasCode(err, "RETENTION_LOCKED"));
    await expect(backend.save(h, bufferSource(randomBytes(10)))).rejects.toSatisfy((err) =>
      hasCode(err, "RETENTION_LOCKED"),
    );
    now += 60_001;
    await backend.remove(h);
    expect(backend.fileCount).toBe(0);
  });

  it("refuses to weaken compliance retention to governance", async () => {
    const backend = new MemoryBackend({ retentionModes: ["governance", "compliance"] });
    const h = { type: "pack", name } as const;
    await backend.save(h, bufferSource(randomBytes(10)));
    const until = new Date(Date.now() + 60_000);
    await backend.extendRetention?.(h, { mode: "compliance", until });
    await expect(backend.extendRetention?.(h, { mode: "governance", until })).rejects.toSatisfy((err) =>
      hasCode(err, "RETENTION_LOCKED"),
    );
  });

  it("is unusable after close", async () => {
    const backend = new MemoryBackend();
    await backend.close();
    await expect(backend.stat({ type: "pack", name })).rejects.toThrow(/closed/);
  });
});
