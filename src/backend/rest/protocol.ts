/**
 * The vault's HTTP protocol, shared by the server (src/vault/server.ts) and the `rest:` client
 * (./rest-backend.ts). Shaped like restic's REST backend, one repository per server:
 *
 *   HEAD|GET|POST|DELETE  /config
 *   GET                   /{type}/            JSON [{ "name": ..., "size": ... }]
 *   HEAD|GET|POST|DELETE  /{type}/{name}      {type}: keys locks snapshots index data
 *   PATCH                 /config, /{type}/{name}   extend the file's retention (below)
 *   GET                   /config/sha256, /{type}/{name}/sha256   the stored file's SHA-256 (below)
 *
 * Every request carries `Authorization: Bearer <token>`. GET honours a single `Range: bytes=...`; a range
 * that starts at or past the end is answered 416. POST carries the body's length (Content-Length, or
 * X-Content-Length with chunked encoding) and its SHA-256 in X-Content-SHA256, as a header or as a
 * trailer (so a client can hash while it streams); the server stores nothing whose digest differs.
 * `If-None-Match: *` asks for the save to fail with 409 when the file exists.
 *
 * Retention (a vault started with --retention-days): every authenticated answer carries
 * X-Bulwark-Retention-Days, the days each new file is retained. HEAD and GET of a file whose retention runs
 * carry X-Bulwark-Retain-Until (ISO 8601); a file without it is not retained. PATCH with
 * X-Bulwark-Retain-Until extends the retention to that date (never shortens it; either role may) and answers
 * with the date now in force. A DELETE or replacing POST of a retained file is 403, with the date.
 *
 * Every authenticated answer carries X-Bulwark-Token-Role (append-only or admin): the client learns from the
 * vault itself whether its credentials can delete, which is the evidence posture counts for an append-only
 * copy.
 *
 * Digests: GET of a file's `sha256` resource answers 200 with JSON { "sha256": <64 hex>, "size": <bytes
 * hashed> } and the digest in X-Content-SHA256, computed by the vault from the bytes on its disk, streamed
 * (never the whole file in memory). Either role may ask (it is a read); a missing file is 404, another
 * method 405 (Allow: GET), a malformed name 400. Every authenticated answer carries X-Bulwark-File-Digest:
 * sha256, so a client learns that the vault offers digests before it asks for one (an older vault answers
 * 404 to the resource and sends no such header).
 *
 * Status codes: 400 malformed request or digest mismatch, 401 no or unknown token, 403 refused by the
 * token's role (append-only) or by a running retention, 404 no such file, 405 PATCH on a vault without
 * retention, 409 exists (If-None-Match), 411 no length, 413 too large, 416 range past the end, 507 the
 * vault's disk is full, 500 anything else.
 */

import { TYPE_DIRECTORIES, type FileType } from "../backend.js";

export const DIGEST_HEADER = "x-content-sha256";
export const LENGTH_HEADER = "x-content-length";
/** The days a vault retains each new file; absent when it keeps no retention. */
export const RETENTION_DAYS_HEADER = "x-bulwark-retention-days";
/** The role of the token that made the request, as the vault enforces it. */
export const TOKEN_ROLE_HEADER = "x-bulwark-token-role";
/** When a file's retention ends (ISO 8601): on HEAD/GET answers, PATCH requests and answers, and 403s. */
export const RETAIN_UNTIL_HEADER = "x-bulwark-retain-until";
/** On every authenticated answer: the digest the vault computes of stored files on request ("sha256"). */
export const FILE_DIGEST_HEADER = "x-bulwark-file-digest";
/** The last path segment of a file's digest resource: /{type}/{name}/sha256, /config/sha256. */
export const DIGEST_PATH = "sha256";

export const TYPE_PATHS = TYPE_DIRECTORIES;

const PATH_TYPES = new Map<string, Exclude<FileType, "config">>(
  Object.entries(TYPE_PATHS).map(([type, path]) => [path, type as Exclude<FileType, "config">]),
);

export function typeOfPath(segment: string): Exclude<FileType, "config"> | undefined {
  return PATH_TYPES.get(segment);
}
