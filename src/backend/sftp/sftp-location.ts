/**
 * Parsing of SFTP repository locations.
 *
 *   sftp:user@host/srv/repo          sftp:user@host:2222/srv/repo      sftp:user@[::1]:2222/srv/repo
 *   sftp:user@host:/srv/repo         (restic's spelling: a colon with no port before the path)
 *   sftp://user@host:2222/srv/repo   (URL form; percent-escapes in the user and path are decoded)
 *   sftp:user@host/~/repo            (relative to the user's home directory on the server)
 *
 * The path is absolute unless it starts with `/~/` (or is `/~`). The user may be omitted, in which case the
 * caller supplies one (the SFTP backend uses the local user name, as ssh does).
 */

import { BulwarkError } from "../../core/errors.js";

export interface SftpLocation {
  readonly user: string | undefined;
  readonly host: string;
  readonly port: number;
  /** Absolute (`/srv/repo`) or relative to the home directory (`~/repo`, `~`). */
  readonly path: string;
}

export const DEFAULT_SSH_PORT = 22;

const SHORT_FORM = /^(?:([^@/]+)@)?(\[[^\]]+\]|[^:/[\]]+)(?::(\d*))?(\/.*)$/;

export function parseSftpLocation(location: string): SftpLocation {
  if (location.startsWith("sftp://")) return parseUrlForm(location);
  if (!location.startsWith("sftp:")) throw invalid(location, "it does not start with sftp:");
  const match = SHORT_FORM.exec(location.slice("sftp:".length));
  if (match === null) throw invalid(location, "expected sftp:user@host[:port]/path");
  const [, user, rawHost = "", rawPort, path = ""] = match;
  return {
    user: user === undefined || user === "" ? undefined : user,
    host: rawHost.replace(/^\[(.*)\]$/, "$1"),
    port: parsePort(rawPort, location),
    path: normalisePath(path, location),
  };
}

/** The location as messages show it: always with the port, never with anything secret. */
export function formatSftpLocation(l: SftpLocation & { user: string }): string {
  const host = l.host.includes(":") ? `[${l.host}]` : l.host;
  const path = l.path.startsWith("~") ? `/${l.path}` : l.path;
  return `sftp:${l.user}@${host}:${l.port}${path}`;
}

function parseUrlForm(location: string): SftpLocation {
  let url: URL;
  try {
    url = new URL(location);
  } catch {
    throw invalid(location, "it is not a valid URL");
  }
  if (url.password !== "") {
    // Never echo the location back: it holds a password.
    throw new BulwarkError("CONFIG_INVALID", "an sftp:// location must not contain a password", {
      hint: "SFTP repositories authenticate with a private key; remove the password from the location",
    });
  }
  if (url.hostname === "") throw invalid(location, "it names no host");
  if (url.search !== "" || url.hash !== "") throw invalid(location, "it has a query or fragment");
  return {
    user: url.username === "" ? undefined : decodeURIComponent(url.username),
    host: url.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: parsePort(url.port, location),
    path: normalisePath(decodeURIComponent(url.pathname), location),
  };
}

function parsePort(raw: string | undefined, location: string): number {
  if (raw === undefined || raw === "") return DEFAULT_SSH_PORT;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw invalid(location, `port ${raw} is not between 1 and 65535`);
  }
  return port;
}

function normalisePath(path: string, location: string): string {
  const withoutTrailing = path.length > 1 ? path.replace(/\/+$/, "") : path;
  if (withoutTrailing === "/" || withoutTrailing === "") {
    throw invalid(location, "it names no directory (the repository may not be the server's root)");
  }
  if (withoutTrailing.split("/").includes("..")) throw invalid(location, "its path contains ..");
  if (withoutTrailing === "/~") return "~";
  if (withoutTrailing.startsWith("/~/")) return withoutTrailing.slice(1);
  return withoutTrailing;
}

function invalid(location: string, why: string): BulwarkError {
  return new BulwarkError("CONFIG_INVALID", `invalid SFTP location "${location}": ${why}`, {
    hint: "write it as sftp:user@host[:port]/absolute/path or sftp://user@host:port/path (/~/dir for home)",
  });
}
