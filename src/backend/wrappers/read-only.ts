/**
 * A backend that refuses every change: for verification and restores from a copy that must stay untouched,
 * whatever the credentials would allow.
 */
import type { Backend } from "../backend.js";
import { BulwarkError } from "../../core/errors.js";

export function readOnly(inner: Backend): Backend {
  const refuse = (what: string): Promise<never> =>
    Promise.reject(
      new BulwarkError("USAGE", `${inner.location} is opened read-only: refusing to ${what}`, {
        hint: "this command only reads; open the target without --read-only to change it",
      }),
    );
  const wrapped: Backend = {
    location: inner.location,
    capabilities: inner.capabilities,
    stat: (h, signal) => inner.stat(h, signal),
    list: (type, signal) => inner.list(type, signal),
    load: (h, range, signal) => inner.load(h, range, signal),
    openRead: (h, range, signal) => inner.openRead(h, range, signal),
    save: (h) => refuse(`save ${h.type}`),
    remove: (h) => refuse(`remove ${h.type}`),
    close: () => inner.close(),
  };
  if (inner.getRetention) {
    const get = inner.getRetention.bind(inner);
    wrapped.getRetention = (h, signal) => get(h, signal);
  }
  if (inner.extendRetention) wrapped.extendRetention = () => refuse("extend a retention");
  if (inner.removeStaleTempFiles) wrapped.removeStaleTempFiles = () => refuse("remove temp files");
  return wrapped;
}
