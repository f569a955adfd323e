/**
 * The catalog as a listener of the event stream (docs/design.md §23): a run's steps, the snapshots they
 * made or copied, the snapshots a forget left and every message are recorded from the events the operations
 * emit, so no operation calls the catalog itself and one more caller (the daemon) records the same way.
 *
 * The catalog is an index, never the truth: when it first fails (disk full, damaged), `onBroken` is told
 * once and the rest of the stream goes unrecorded; the operations it listens to never see the failure.
 */
import type { Catalog, RunKind } from "../catalog/catalog.js";
import type { BulwarkEvent, EventSink, StepKind } from "../core/events.js";

/** The part of the catalog the recorder writes to (a type-only dependency: SQLite is loaded on demand). */
export type RecordingCatalog = Pick<
  Catalog,
  "startRun" | "finishRun" | "recordSnapshot" | "forgetSnapshots" | "recordCopy" | "recordEvent"
>;

const RECORDED_KINDS: ReadonlySet<StepKind> = new Set<RunKind>([
  "backup",
  "copy",
  "forget",
  "locks",
  "prune",
  "check",
  "drill",
]);

export function catalogRecorder(catalog: RecordingCatalog, onBroken: (err: unknown) => void): EventSink {
  /** Step id -> the catalog's run id. */
  const runs = new Map<string, number>();
  let broken = false;
  const runOf = (e: BulwarkEvent): number | undefined =>
    e.step === undefined ? undefined : runs.get(e.step);
  const record = (e: BulwarkEvent): void => {
    switch (e.type) {
      case "step-started":
        if (e.step === undefined || !RECORDED_KINDS.has(e.kind)) return;
        runs.set(
          e.step,
          catalog.startRun({
            kind: e.kind as RunKind,
            ...(e.job !== undefined ? { job: e.job } : {}),
            ...(e.dataset !== undefined ? { dataset: e.dataset } : {}),
            ...(e.target !== undefined ? { target: e.target } : {}),
            startedAt: e.time,
          }),
        );
        return;
      case "step-finished": {
        const id = runOf(e);
        if (id === undefined) return;
        catalog.finishRun(id, {
          status: e.status === "skipped" ? "failed" : e.status,
          finishedAt: e.time,
          ...(e.snapshot !== undefined ? { snapshot: e.snapshot } : {}),
          ...(e.error !== undefined ? { error: e.error } : {}),
          ...(e.stats !== undefined ? { stats: e.stats } : {}),
        });
        runs.delete(e.step!);
        return;
      }
      case "message": {
        const id = runOf(e);
        catalog.recordEvent({
          time: e.time,
          level: e.level,
          message: e.message,
          ...(e.job !== undefined ? { job: e.job } : {}),
          ...(e.dataset !== undefined ? { dataset: e.dataset } : {}),
          ...(e.target !== undefined ? { target: e.target } : {}),
          ...(id !== undefined ? { runId: id } : {}),
        });
        return;
      }
      case "snapshot-saved":
        if (e.target === undefined) return;
        catalog.recordSnapshot({
          target: e.target,
          snapshot: e.snapshot,
          original: e.original,
          ...(e.dataset !== undefined ? { dataset: e.dataset } : {}),
          time: e.snapshotTime,
          hostname: e.hostname,
          paths: e.paths,
          tags: e.tags,
          seenAt: e.time,
        });
        return;
      case "snapshot-copied": {
        const id = runOf(e);
        catalog.recordCopy({
          ...(e.dataset !== undefined ? { dataset: e.dataset } : {}),
          from: e.from,
          to: e.to,
          sourceSnapshot: e.sourceSnapshot,
          targetSnapshot: e.targetSnapshot,
          time: e.time,
          blobs: e.blobs,
          bytes: e.bytes,
          verified: e.verified,
          ...(id !== undefined ? { runId: id } : {}),
        });
        return;
      }
      case "snapshots-remaining":
        if (e.target === undefined) return;
        catalog.forgetSnapshots(e.target, new Set(e.snapshots));
        return;
      case "progress":
        return;
    }
  };
  return (event) => {
    if (broken) return;
    try {
      record(event);
    } catch (err) {
      broken = true;
      onBroken(err);
    }
  };
}
