import { describe, expect, it } from "vitest";

import {
  formatBytes,
  formatClock,
  formatCount,
  formatDuration,
  formatIoReason,
  formatRate,
} from "../../src/core/format.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;

describe("formatBytes", () => {
  it.each([
    [0, "0 B"],
    [1, "1 B"],
    [1023, "1023 B"],
    [1024, "1.0 KiB"],
    [1536, "1.5 KiB"],
    [12.3 * MiB, "12.3 MiB"],
    [512 * MiB, "512.0 MiB"],
    [GiB, "1.00 GiB"],
    [1.1 * GiB, "1.10 GiB"],
    [2.5 * TiB, "2.50 TiB"],
    [-1536, "-1.5 KiB"],
  ])("%d -> %s", (bytes, expected) => {
    expect(formatBytes(bytes)).toBe(expected);
  });

  it("carries into the next unit when rounding reaches 1024", () => {
    expect(formatBytes(MiB - 10)).toBe("1.0 MiB");
    expect(formatBytes(GiB - 1)).toBe("1.00 GiB");
  });
});

describe("formatRate", () => {
  it("appends /s", () => {
    expect(formatRate(123.4 * MiB)).toBe("123.4 MiB/s");
    expect(formatRate(0)).toBe("0 B/s");
  });
});

describe("formatDuration", () => {
  it.each([
    [0, "0 ms"],
    [850, "850 ms"],
    [999.4, "999 ms"],
    [999.6, "1.0 s"],
    [12_400, "12.4 s"],
    [59_940, "59.9 s"],
    [59_960, "1m00s"],
    [185_000, "3m05s"],
    [3_599_400, "59m59s"],
    [3_599_600, "1h00m"],
    [2 * 3_600_000 + 3 * 60_000, "2h03m"],
    [30 * 3_600_000, "30h00m"],
    [-5, "0 ms"],
  ])("%d ms -> %s", (ms, expected) => {
    expect(formatDuration(ms)).toBe(expected);
  });
});

describe("formatClock", () => {
  it.each([
    [0, "0:00"],
    [12_999, "0:12"],
    [754_000, "12:34"],
    [3_723_000, "1:02:03"],
  ])("%d ms -> %s", (ms, expected) => {
    expect(formatClock(ms)).toBe(expected);
  });
});

describe("formatCount", () => {
  it.each([
    [0, "0"],
    [999, "999"],
    [1000, "1,000"],
    [1234, "1,234"],
    [1_234_567, "1,234,567"],
    [-1234, "-1,234"],
    [1234.6, "1,235"],
  ])("%d -> %s", (n, expected) => {
    expect(formatCount(n)).toBe(expected);
  });
});

describe("formatIoReason", () => {
  it("keeps only the reason of a Node file system error", () => {
    const err = Object.assign(new Error("ENOENT: no such file or directory, open '/no/such/file'"), {
      code: "ENOENT",
    });
    expect(formatIoReason(err)).toBe("no such file or directory");
    expect(formatIoReason(new Error("EISDIR: illegal operation on a directory, read"))).toBe(
      "illegal operation on a directory",
    );
  });

  it("passes other messages through", () => {
    expect(formatIoReason(new Error("something else"))).toBe("something else");
    expect(formatIoReason("plain string")).toBe("plain string");
  });
});
