/**
 * The event stream of an operation (docs/design.md §23): core code never prints; it emits typed events that
 * the CLI renders (lines, progress bars), the catalog records (src/ops/catalog-recorder.ts) and the daemon
 * will forward. A sink is a plain function, so an operation called without one emits nothing.
 *
 * An operation emits its events bare; whoever composes operations into steps (the job runner) adds the
 * context with `withContext` (job, dataset, target, and a step id that ties a step's events together), so
 * an operation never needs to know which job or run called it.
 */
export type EventLevel = "info" | "warning" | "error";

/** The kinds of step a run is made of; the catalog's run kinds. */
export type StepKind =
  | "backup"
  | "copy"
  | "forget"
  | "locks"
  | "prune"
  | "check"
  | "drill"
  | "restore"
  | "repair";

export type StepStatus = "ok" | "partial" | "failed" | "skipped";

/** Who the event is about: filled in by withContext. */
export interface EventContext {
  job?: string;
  dataset?: string;
  target?: string;
  /** Ties the events of one step together (unique within the stream). */
  step?: string;
}

/** A snapshot as the catalog indexes it. */
export interface SnapshotFacts {
  /** Its id on the target. */
  snapshot: string;
  /** Its identity across copies (the id on the repository it was first made in). */
  original: string;
  dataset?: string;
  /** When the snapshot was taken (the event's own `time` is when it was seen). */
  snapshotTime: Date;
  hostname: string;
  paths: string[];
  tags: string[];
}

export type BulwarkEvent = EventContext &
  (
    | { type: "step-started"; time: Date; kind: StepKind }
    | {
        type: "step-finished";
        time: Date;
        kind: StepKind;
        status: StepStatus;
        /** The snapshot the step made or copied last. */
        snapshot?: string;
        error?: string;
        stats?: Record<string, unknown>;
      }
    | { type: "message"; time: Date; level: EventLevel; message: string }
    | {
        type: "progress";
        time: Date;
        kind: StepKind;
        /** Files (backup, restore), blobs (copy) or packs (check) done so far, and of how many if known. */
        items: number;
        itemsTotal?: number;
        bytes: number;
        bytesTotal?: number;
        /** What is being worked on: a path, "snapshot 1a2b3c4d (1/3)". */
        current?: string;
        errors?: number;
      }
    /** A snapshot now exists on the context's target (made by a backup, or arrived by a copy). */
    | ({ type: "snapshot-saved"; time: Date } & SnapshotFacts)
    /** A copy sent a snapshot from one target to another. */
    | {
        type: "snapshot-copied";
        time: Date;
        from: string;
        to: string;
        sourceSnapshot: string;
        targetSnapshot: string;
        blobs: number;
        bytes: number;
        verified: boolean;
      }
    /** After a forget: every snapshot id left on the context's target (the catalog drops the others). */
    | { type: "snapshots-remaining"; time: Date; snapshots: string[] }
  );

export type EventSink = (event: BulwarkEvent) => void;

/** Emits to every sink given (undefined ones skipped); a sink that throws does not stop the others. */
export function fanOut(...sinks: (EventSink | undefined)[]): EventSink {
  const live = sinks.filter((s): s is EventSink => s !== undefined);
  return (event) => {
    for (const sink of live) {
      try {
        sink(event);
      } catch {
        // A failing listener (a full catalog disk) must not fail the operation it listens to.
      }
    }
  };
}

/** A sink that adds `context` to every event (fields the event sets itself win). */
export function withContext(sink: EventSink | undefined, context: EventContext): EventSink {
  if (sink === undefined) return () => undefined;
  return (event) => sink({ ...context, ...stripUndefined(event) });
}

function stripUndefined<T extends object>(value: T): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = v;
  return out as T;
}

/** Collects events in memory (tests, and reports that list what happened). */
export function collectEvents(): { sink: EventSink; events: BulwarkEvent[] } {
  const events: BulwarkEvent[] = [];
  return { sink: (e) => void events.push(e), events };
}

/** Emits a message event: the shorthand operations use for info lines, warnings and errors. */
export function emitMessage(
  sink: EventSink | undefined,
  time: Date,
  level: EventLevel,
  message: string,
  context: EventContext = {},
): void {
  sink?.({ type: "message", time, level, message, ...context });
}
