/**
 * The genuine-version rule of an S3 Object Lock bucket (src/backend/s3/s3-versions.ts): the oldest version
 * that is not a delete marker is Bulwark's; everything else over it is foreign, the current one first.
 */
import { describe, expect, it } from "vitest";

import { classifyVersions, isTampered, type StoredVersion } from "../../src/backend/s3/s3-versions.js";

const at = (s: number): Date => new Date(Date.UTC(2026, 11, 1, 0, 0, s));
function version(id: string, s: number, latest = false): StoredVersion {
  return { versionId: id, deleteMarker: false, latest, size: 10, lastModified: at(s) };
}
function marker(id: string, s: number, latest = false): StoredVersion {
  return { versionId: id, deleteMarker: true, latest, size: 0, lastModified: at(s) };
}

describe("classifyVersions", () => {
  it("a key Bulwark wrote once and nobody touched: genuine, nothing foreign, not tampered", () => {
    const k = classifyVersions([version("g", 1, true)], []);
    expect(k.genuine?.versionId).toBe("g");
    expect(k.foreign).toEqual([]);
    expect(isTampered(k)).toBe(false);
  });

  it("a delete marker over it: the genuine version is still the one read, the marker is foreign", () => {
    const k = classifyVersions([version("g", 1)], [marker("m", 2, true)]);
    expect(k.genuine?.versionId).toBe("g");
    expect(k.foreign.map((v) => v.versionId)).toEqual(["m"]);
    expect(isTampered(k)).toBe(true);
  });

  it("junk versions and markers over it, listed newest first: the oldest version wins, the current one leads", () => {
    // S3 lists versions newest first; markers come in their own list.
    const k = classifyVersions(
      [version("junk2", 5, true), version("junk1", 3), version("g", 1)],
      [marker("m1", 2), marker("m2", 4)],
    );
    expect(k.genuine?.versionId).toBe("g");
    expect(k.foreign.map((v) => v.versionId)).toEqual(["junk2", "m2", "junk1", "m1"]);
    expect(isTampered(k)).toBe(true);
  });

  it("the order of equal times is S3's (newest first), and the latest always leads", () => {
    const k = classifyVersions([version("b", 1), version("a", 1), version("g", 1)], [marker("m", 1, true)]);
    expect(k.genuine?.versionId).toBe("g");
    expect(k.foreign.map((v) => v.versionId)).toEqual(["m", "b", "a"]);
  });

  it("only delete markers: no genuine version, nothing to read, not tampered (nothing is hidden)", () => {
    const k = classifyVersions([], [marker("m", 1, true)]);
    expect(k.genuine).toBeUndefined();
    expect(isTampered(k)).toBe(false);
  });
});
