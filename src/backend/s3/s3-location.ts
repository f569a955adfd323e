/**
 * Parses an S3 location string, `s3:http(s)://endpoint[:port]/bucket[/prefix]`, as restic writes them.
 *
 * The endpoint is explicit (there is no `s3:bucket` shorthand): the same string then names an AWS region
 * endpoint, a Ceph RadosGW or any other S3 server. Credentials never go in the location: a URL with a
 * user or password is refused, so that a location can always be printed.
 */

import { BulwarkError } from "../../core/errors.js";

export interface S3Location {
  /** The endpoint URL without a trailing slash, e.g. `http://127.0.0.1:7480`. */
  readonly endpoint: string;
  readonly bucket: string;
  /** The key prefix without leading or trailing slashes; "" for the bucket's root. */
  readonly prefix: string;
  /** The location as it is shown in messages: `s3:<endpoint>/<bucket>[/<prefix>]`. */
  readonly display: string;
}

/** S3 bucket naming rules (the DNS-compatible ones every server accepts). */
const BUCKET_PATTERN = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

export function parseS3Location(location: string): S3Location {
  if (!location.startsWith("s3:")) {
    throw invalid(`"${location}" is not an S3 location`);
  }
  let url: URL;
  try {
    url = new URL(location.slice("s3:".length));
  } catch {
    throw invalid(`"${location}" is not an S3 location`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw invalid(`the S3 location "${location}" must start with s3:http:// or s3:https://`);
  }
  if (url.username !== "" || url.password !== "") {
    // Do not echo the location: it holds a secret.
    throw invalid("an S3 location must not contain credentials", {
      hint: "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) instead",
    });
  }
  if (url.search !== "" || url.hash !== "") {
    throw invalid(`the S3 location "${location}" must not have a query or fragment`);
  }
  const segments = url.pathname.split("/").filter((s) => s !== "");
  const [bucket, ...rest] = segments;
  if (bucket === undefined) {
    throw invalid(`the S3 location "${location}" names no bucket`);
  }
  if (!BUCKET_PATTERN.test(bucket)) {
    throw invalid(`"${bucket}" in the S3 location "${location}" is not a valid bucket name`);
  }
  const prefix = rest.map((s) => decodeURIComponent(s)).join("/");
  const endpoint = url.origin;
  return {
    endpoint,
    bucket,
    prefix,
    display: `s3:${endpoint}/${bucket}${prefix === "" ? "" : `/${prefix}`}`,
  };
}

function invalid(message: string, options: { hint?: string } = {}): BulwarkError {
  return new BulwarkError("CONFIG_INVALID", message, {
    hint: options.hint ?? "write it as s3:https://host[:port]/bucket[/prefix]",
  });
}
