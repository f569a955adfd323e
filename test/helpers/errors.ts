/**
 * Capturing the error a test expects, for assertions on its code, message and hint (a plain
 * `rejects.toThrow` sees only the message). Each helper fails the test when nothing is thrown.
 */
import { expect } from "vitest";

import { BulwarkError } from "../../src/core/errors.js";

/** The error `fn` throws. */
export function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected an error, but the call returned");
}

/** The reason `promise` rejects with. */
export async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error("expected a rejection, but the promise was fulfilled");
}

/** The BulwarkError `promise` rejects with (any other rejection fails the test). */
export async function bulwarkRejection(promise: Promise<unknown>): Promise<BulwarkError> {
  const err = await rejection(promise);
  expect(err).toBeInstanceOf(BulwarkError);
  return err as BulwarkError;
}
