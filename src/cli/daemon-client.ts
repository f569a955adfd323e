/**
 * Talking to a running `bulwark daemon` over its API (`bulwark status`, `runs`, `trigger`, `daemon status`):
 * an operator needs a token, not the repositories' passwords. The daemon is found by `--daemon URL`, else
 * BULWARK_DAEMON_URL, else the config's `daemon.listen` (with -c), else http://127.0.0.1:8420; the token comes
 * from BULWARK_DAEMON_TOKEN or the file `--token-file` / BULWARK_DAEMON_TOKEN_FILE names (never an argument:
 * arguments are visible to every user of the host).
 */
import { readFile } from "node:fs/promises";

import type { Command } from "commander";

import { BulwarkError, errorMessage } from "../core/errors.js";
import { loadConfigForCommand } from "./config-file.js";

export interface DaemonFlags {
  daemon?: string;
  tokenFile?: string;
  config?: string;
}

export function addDaemonOptions(command: Command): Command {
  return command
    .option(
      "--daemon <url>",
      "the daemon's API (env BULWARK_DAEMON_URL; default from -c, else http://127.0.0.1:8420)",
    )
    .option(
      "--token-file <file>",
      "a file holding the API token (env BULWARK_DAEMON_TOKEN or BULWARK_DAEMON_TOKEN_FILE)",
    )
    .option("-c, --config <file>", "the config whose daemon.listen names the daemon");
}

export interface DaemonClient {
  url: string;
  get<T>(path: string): Promise<T>;
  post<T>(path: string, body?: unknown): Promise<T>;
}

export async function daemonClient(flags: DaemonFlags, env = process.env): Promise<DaemonClient> {
  let url = flags.daemon ?? env.BULWARK_DAEMON_URL;
  if (url === undefined && flags.config !== undefined) {
    const { config } = await loadConfigForCommand(flags.config);
    const { host, port } = config.daemon.listen;
    url = `${config.daemon.tls !== undefined ? "https" : "http"}://${host.includes(":") ? `[${host}]` : host}:${port}`;
  }
  url = (url ?? "http://127.0.0.1:8420").replace(/\/+$/, "");
  let token = env.BULWARK_DAEMON_TOKEN;
  const tokenFile = flags.tokenFile ?? env.BULWARK_DAEMON_TOKEN_FILE;
  if (token === undefined && tokenFile !== undefined) {
    try {
      token = (await readFile(tokenFile, "utf8")).trim();
    } catch (err) {
      throw new BulwarkError("USAGE", `cannot read the token file ${tokenFile}: ${errorMessage(err)}`);
    }
  }
  if (token === undefined || token === "") {
    throw new BulwarkError("USAGE", "no API token for the daemon", {
      hint: "set BULWARK_DAEMON_TOKEN, or --token-file FILE; make one with `bulwark daemon token add --name NAME --role read`",
    });
  }
  const request = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    let response: Response;
    try {
      response = await fetch(`${url}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body !== undefined ? { "content-type": "application/json" } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
    } catch (err) {
      throw new BulwarkError("TRANSIENT", `cannot reach the daemon at ${url}: ${errorMessage(err)}`, {
        hint: "is `bulwark daemon` running there? (--daemon URL, BULWARK_DAEMON_URL)",
      });
    }
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text === "" ? undefined : JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    if (!response.ok) {
      const e = (parsed as { error?: { code?: string; message?: string; hint?: string } } | undefined)?.error;
      const code = response.status === 401 || response.status === 403 ? "AUTH" : "USAGE";
      throw new BulwarkError(
        code,
        `the daemon answered ${response.status}: ${e?.message ?? (text || response.statusText)}`,
        {
          ...(e?.hint !== undefined
            ? { hint: e.hint }
            : response.status === 403
              ? { hint: "use a token with a higher role (read < operate < admin)" }
              : {}),
        },
      );
    }
    return parsed as T;
  };
  return {
    url,
    get: (path) => request("GET", path),
    post: (path, body) => request("POST", path, body),
  };
}
