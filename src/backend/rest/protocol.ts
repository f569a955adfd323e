/**
 * The vault's HTTP protocol, shared by the server (src/vault/server.ts) and the `rest:` client
 * (./rest-backend.ts). Shaped like restic's REST backend, one repository per server:
 *
 *   HEAD|GET|POST|DELETE  /config
 *   GET                   /{type}/            JSON [{ "name": ..., "size": ... }]
 *   HEAD|GET|POST|DELETE  /{type}/{name}      {type}: keys locks snapshots index data
 *
 * Every request carries `Authorization: Bearer <token>`. GET honours a single `Range: bytes=...`; a range
 * that starts at or past the end is answered 416. POST carries the body's length (Content-Length, or
 * X-Content-Length with chunked encoding) and its SHA-256 in X-Content-SHA256, as a header or as a
 * trailer (so a client can hash while it streams); the server stores nothing whose digest differs.
 * `If-None-Match: *` asks for the save to fail with 409 when the file exists.
 *
 * Status codes: 400 malformed request or digest mismatch, 401 no or unknown token, 403 refused by the
 * token's role (append-only), 404 no such file, 409 exists (If-None-Match), 411 no length, 413 too large,
 * 416 range past the end, 507 the vault's disk is full, 500 anything else.
 */

import { TYPE_DIRECTORIES, type FileType } from "../backend.js";

export const DIGEST_HEADER = "x-content-sha256";
export const LENGTH_HEADER = "x-content-length";

export const TYPE_PATHS = TYPE_DIRECTORIES;

const PATH_TYPES = new Map<string, Exclude<FileType, "config">>(
  Object.entries(TYPE_PATHS).map(([type, path]) => [path, type as Exclude<FileType, "config">]),
);

export function typeOfPath(segment: string): Exclude<FileType, "config"> | undefined {
  return PATH_TYPES.get(segment);
}
