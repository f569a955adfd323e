/**
 * The event stream of an operation (docs/design.md §23): core code never prints; it emits typed events that
 * the CLI renders (lines, progress bars), the catalog records and the daemon will forward. A sink is a plain
 * function, so an operation called without one emits nothing.
 */
export type EventLevel = "info" | "warning" | "error";

export type BulwarkEvent =
  | { type: "run-started"; time: Date; kind: string; job?: string; dataset?: string; target?: string }
  | {
      type: "step-finished";
      time: Date;
      kind: string;
      status: "ok" | "partial" | "failed" | "skipped";
      job?: string;
      dataset?: string;
      target?: string;
      error?: string;
    }
  | {
      type: "message";
      time: Date;
      level: EventLevel;
      message: string;
      job?: string;
      dataset?: string;
      target?: string;
    }
  | {
      type: "progress";
      time: Date;
      kind: string;
      target?: string;
      done: number;
      total?: number;
      unit: "bytes" | "files" | "packs";
    };

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

/** Collects events in memory (tests, and reports that list what happened). */
export function collectEvents(): { sink: EventSink; events: BulwarkEvent[] } {
  const events: BulwarkEvent[] = [];
  return { sink: (e) => void events.push(e), events };
}
