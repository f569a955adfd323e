/**
 * One error type for everything Bulwark reports to a user, with a closed set of codes.
 *
 * Code that fails for a reason the user can act on throws a BulwarkError; anything else is a bug and
 * surfaces with its stack. The CLI maps codes to exit codes in one place (src/cli/exit-codes.ts).
 */

export type ErrorCode =
  | "NOT_FOUND" // a file, snapshot or blob does not exist
  | "ALREADY_EXISTS" // save with ifAbsent found an existing file; init found a repository
  | "TRANSIENT" // worth retrying: timeouts, connection resets, throttling
  | "AUTH" // the backend refused our credentials
  | "RETENTION_LOCKED" // the backend refuses to delete or overwrite an object under retention
  | "NO_REPOSITORY" // the location holds no repository
  | "REPO_LOCKED" // another process holds a conflicting lock
  | "WRONG_PASSWORD" // no key in the repository opens with the given password
  | "INVALID_DATA" // stored bytes fail authentication, hashing or parsing
  | "CONFIG_INVALID" // a config file or command line is malformed
  | "USAGE" // the command line asks for something impossible
  | "IO" // a local file system operation failed
  | "CANCELLED"; // the operation was aborted

export class BulwarkError extends Error {
  readonly code: ErrorCode;
  /** What the user can do about it, shown under the message. */
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "BulwarkError";
    this.code = code;
    this.hint = options?.hint;
  }
}

/** Walks the cause chain: a wrapped NOT_FOUND is still a NOT_FOUND. */
export function hasCode(err: unknown, code: ErrorCode): boolean {
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 16; depth++) {
    if (e instanceof BulwarkError && e.code === code) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

export const isNotFound = (err: unknown): boolean => hasCode(err, "NOT_FOUND");
export const isAlreadyExists = (err: unknown): boolean => hasCode(err, "ALREADY_EXISTS");
export const isTransient = (err: unknown): boolean => hasCode(err, "TRANSIENT");

/** The first BulwarkError in the cause chain, if any. */
export function findBulwarkError(err: unknown): BulwarkError | undefined {
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 16; depth++) {
    if (e instanceof BulwarkError) return e;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Node's errno code (ENOENT, EACCES, ...) of a system error, if it is one. */
export function errnoCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
