/**
 * Classifies AWS SDK errors into BulwarkErrors, so that callers (and the retry wrapper) can tell a missing
 * object from a lock, bad credentials or a hiccup without knowing S3.
 *
 * Messages name the target (endpoint, bucket, prefix) and the S3 error code, never credentials: the SDK's
 * own messages are not used, only its error name and HTTP status.
 */

import { BulwarkError } from "../../core/errors.js";

export type S3Action =
  | "open"
  | "stat"
  | "read"
  | "save"
  | "remove"
  | "list"
  | "read the retention of"
  | "extend the retention of";

const VERBS: Readonly<Record<S3Action, string>> = {
  open: "opening",
  stat: "reading",
  read: "reading",
  save: "saving",
  remove: "removing",
  list: "listing",
  "read the retention of": "reading the retention of",
  "extend the retention of": "extending the retention of",
};

const NOT_FOUND_CODES = new Set(["NoSuchKey", "NotFound", "NoSuchVersion"]);
const AUTH_CODES = new Set([
  "InvalidAccessKeyId",
  "SignatureDoesNotMatch",
  "ExpiredToken",
  "InvalidToken",
  "TokenRefreshRequired",
  "CredentialsProviderError",
]);
const TRANSIENT_CODES = new Set([
  "SlowDown",
  "ServiceUnavailable",
  "InternalError",
  "RequestTimeout",
  "RequestTimeTooSkewed",
  "TimeoutError",
  "Throttling",
  "ThrottlingException",
  "TooManyRequestsException",
  // Bytes damaged on the way: sending them again is the cure.
  "BadDigest",
  "IncompleteBody",
]);
const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EAI_AGAIN",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ECONNABORTED",
]);

/** The S3 error code (`NoSuchKey`, ...) of an SDK error, or its name when the response had no body. */
export function s3Code(err: unknown): string | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const e = err as { Code?: unknown; name?: unknown };
  if (typeof e.Code === "string") return e.Code;
  return typeof e.name === "string" ? e.name : undefined;
}

export function httpStatus(err: unknown): number | undefined {
  const status = (err as { $metadata?: { httpStatusCode?: unknown } } | null)?.$metadata?.httpStatusCode;
  return typeof status === "number" ? status : undefined;
}

/** Whether S3 refused because of Object Lock (retention or legal hold), as RGW and AWS word it. */
export function isObjectLockRefusal(err: unknown): boolean {
  if (s3Code(err) !== "AccessDenied" && httpStatus(err) !== 403) return false;
  const message = err instanceof Error ? err.message.toLowerCase() : "";
  return /object lock|retention|retain|legal hold|governance/.test(message);
}

/** The code of a Node network error anywhere in the cause chain. */
function networkCode(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 8; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && NETWORK_CODES.has(code)) return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * Turns an SDK error into a BulwarkError naming `what` (a file, "the bucket") and `target`. BulwarkErrors
 * pass through; anything unrecognised becomes IO with the S3 code and status, still without secrets.
 */
export function s3Error(
  err: unknown,
  action: S3Action,
  what: string,
  target: string,
  bucket: string,
): unknown {
  if (err instanceof BulwarkError) return err;
  const verb = VERBS[action];
  const code = s3Code(err);
  const status = httpStatus(err);
  const shown = `${code ?? "error"}${status === undefined ? "" : ` (HTTP ${status})`}`;
  if (code === "AbortError") {
    return new BulwarkError("CANCELLED", `${verb} ${what} in ${target} was cancelled`, { cause: err });
  }
  if (code === "NoSuchBucket") {
    return new BulwarkError("NO_REPOSITORY", `the bucket "${bucket}" does not exist (${target})`, {
      cause: err,
      hint: "check the bucket name and endpoint; Bulwark does not create buckets (create it, with Object Lock if the copy must be immutable)",
    });
  }
  if (code !== undefined && NOT_FOUND_CODES.has(code)) {
    return new BulwarkError("NOT_FOUND", `${what} not found in ${target}`, { cause: err });
  }
  if (isObjectLockRefusal(err)) {
    return new BulwarkError(
      "RETENTION_LOCKED",
      `${verb} ${what} in ${target} was refused by Object Lock: it is under retention or legal hold`,
      { cause: err },
    );
  }
  if ((code !== undefined && AUTH_CODES.has(code)) || status === 403) {
    return new BulwarkError("AUTH", `${target} refused the credentials ${verb} ${what}: ${shown}`, {
      cause: err,
      hint:
        "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE (in bulwark.yaml: the target's " +
        "credentials.accessKeyId and credentials.secretAccessKey), and the user's permissions on the bucket",
    });
  }
  const network = networkCode(err);
  if (network !== undefined) {
    return new BulwarkError("TRANSIENT", `${verb} ${what} in ${target} failed: ${network} (network)`, {
      cause: err,
      hint: "check that the endpoint is reachable",
    });
  }
  if ((code !== undefined && TRANSIENT_CODES.has(code)) || (status !== undefined && status >= 500)) {
    return new BulwarkError("TRANSIENT", `${verb} ${what} in ${target} failed: ${shown}`, { cause: err });
  }
  return new BulwarkError("IO", `${verb} ${what} in ${target} failed: ${shown}`, { cause: err });
}
