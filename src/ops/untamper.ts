/**
 * `bulwark untamper`: undoes versioned-bucket tampering on an S3 Object Lock target (docs/design.md §21,
 * "Tampering on a versioned bucket"). Whoever holds the host's S3 keys can put delete markers and new
 * versions over every file; reads already go to the genuine version, and this operation removes what was
 * put over it, by version id, where the credentials allow. What they do not allow (a compliance-locked
 * junk version, a governance-locked one without the bypass permission) is reported with what it needs.
 *
 * It works below the repository (no password needed: it only ever deletes versions that are not the
 * genuine one of a file, and the genuine one is never named in a delete).
 */
import type { Backend, TamperedFile, UntamperAction } from "../backend/backend.js";
import { handleToString } from "../backend/backend.js";
import { systemClock } from "../core/clock.js";
import { BulwarkError } from "../core/errors.js";
import type { EventSink } from "../core/events.js";

export interface UntamperInput {
  backend: Backend;
  dryRun?: boolean;
  signal?: AbortSignal;
  events?: EventSink;
}

export interface UntamperResult {
  location: string;
  dryRun: boolean;
  /** The tampered files found: what was over each, the current first. */
  tampered: {
    file: string;
    genuineVersion: string;
    foreign: { versionId: string; deleteMarker: boolean; size: number; lastModified?: string }[];
  }[];
  actions: UntamperAction[];
  removed: number;
  refused: number;
}

export async function untamper(input: UntamperInput): Promise<UntamperResult> {
  const { backend, dryRun = false, signal, events } = input;
  const find = backend.tampering?.bind(backend);
  const undo = backend.untamper?.bind(backend);
  if (find === undefined || undo === undefined) {
    throw new BulwarkError(
      "USAGE",
      `${backend.location} keeps no object versions (only S3 buckets with Object Lock do): nothing can be hidden behind a newer version there`,
      { hint: "untamper is for S3 targets with Object Lock" },
    );
  }
  const found = await find(signal);
  const say = (message: string, level: "info" | "warning" = "info"): void =>
    events?.({ type: "message", time: systemClock.now(), level, message });
  if (found.files.length === 0) {
    say(`no tampering found at ${backend.location}`);
    return { location: backend.location, dryRun, tampered: [], actions: [], removed: 0, refused: 0 };
  }
  say(
    `tampering detected at ${backend.location}: ${found.files.length} file${found.files.length === 1 ? "" : "s"} hidden behind delete markers or foreign versions`,
    "warning",
  );
  const report = await undo({
    dryRun,
    ...(signal ? { signal } : {}),
    onVersion: (done, total) =>
      events?.({
        type: "progress",
        time: systemClock.now(),
        kind: "repair",
        items: done,
        itemsTotal: total,
        bytes: 0,
      }),
  });
  return {
    location: backend.location,
    dryRun,
    tampered: found.files.map(describe),
    actions: [...report.actions],
    removed: report.actions.filter((a) => a.outcome === "removed").length,
    refused: report.actions.filter((a) => a.outcome === "refused").length,
  };
}

function describe(f: TamperedFile): UntamperResult["tampered"][number] {
  return {
    file: handleToString(f.handle),
    genuineVersion: f.genuineVersion,
    foreign: f.foreign.map((v) => ({
      versionId: v.versionId,
      deleteMarker: v.deleteMarker,
      size: v.size,
      ...(v.lastModified ? { lastModified: v.lastModified.toISOString() } : {}),
    })),
  };
}
