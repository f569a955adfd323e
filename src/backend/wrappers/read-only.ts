/**
 * A backend that refuses every change: for verification and restores from a copy that must stay untouched,
 * whatever the credentials would allow.
 *
 * With `allowLocks`, lock files are the exception: commands that only read (check, restore, the source of a
 * copy) still take a shared lock (docs/design.md §13), which means saving, refreshing and removing a file
 * under locks/. A lock changes no stored data, and without it prune could delete what is being read.
 */
import type { Backend, FileHandle } from "../backend.js";
import { BulwarkError } from "../../core/errors.js";

export interface ReadOnlyOptions {
  /** Let lock files be saved and removed (a reader's shared lock); every other change is still refused. */
  readonly allowLocks?: boolean;
}

export function readOnly(inner: Backend, options: ReadOnlyOptions = {}): Backend {
  const refuse = (what: string): Promise<never> =>
    Promise.reject(
      new BulwarkError("USAGE", `${inner.location} is opened read-only: refusing to ${what}`, {
        hint: "this command opens the repository only to read it (and to take its shared lock)",
      }),
    );
  const mayChange = (h: FileHandle): boolean => options.allowLocks === true && h.type === "lock";
  const wrapped: Backend = {
    location: inner.location,
    capabilities: inner.capabilities,
    stat: (h, signal) => inner.stat(h, signal),
    list: (type, signal) => inner.list(type, signal),
    load: (h, range, signal) => inner.load(h, range, signal),
    openRead: (h, range, signal) => inner.openRead(h, range, signal),
    save: (h, source, opts) => (mayChange(h) ? inner.save(h, source, opts) : refuse(`save ${h.type}`)),
    remove: (h, signal) => (mayChange(h) ? inner.remove(h, signal) : refuse(`remove ${h.type}`)),
    close: () => inner.close(),
  };
  if (inner.getRetention) {
    const get = inner.getRetention.bind(inner);
    wrapped.getRetention = (h, signal) => get(h, signal);
  }
  if (inner.digest) {
    // A digest reads: it changes nothing on the target.
    const digest = inner.digest.bind(inner);
    wrapped.digest = (h, signal) => digest(h, signal);
  }
  if (inner.tampering) {
    // Listing versions changes nothing.
    const tampering = inner.tampering.bind(inner);
    wrapped.tampering = (signal) => tampering(signal);
  }
  if (inner.untamper) {
    const untamper = inner.untamper.bind(inner);
    wrapped.untamper = (options) =>
      options?.dryRun === true ? untamper(options) : refuse("remove foreign versions");
  }
  if (inner.extendRetention) wrapped.extendRetention = () => refuse("extend a retention");
  if (inner.removeStaleTempFiles) wrapped.removeStaleTempFiles = () => refuse("remove temp files");
  return wrapped;
}
