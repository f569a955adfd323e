/**
 * The `daemon:` section of the config (docs/config.md "Daemon", docs/design.md §25): how `bulwark daemon` runs
 * the jobs' schedules (time zone, catch-up of runs missed while it was down, jitter, retries with backoff, how
 * many runs may use one target at once) and where it serves its API (address, TLS, the tokens file, whether
 * /metrics needs a token). The written shape is the schema's output, so the two cannot drift apart.
 */
import { z } from "zod";

import type { MakeDiagnostic } from "./diagnostic.js";
import { isTimeZone } from "./schedule.js";
import type { DaemonConfig } from "./types.js";

const DEFAULT_PORT = 8420;

export const daemonSchema = z
  .strictObject({
    timezone: z
      .string()
      .min(1)
      .optional()
      .describe("the time zone of the jobs' cron schedules (IANA name; default the host's)"),
    catchUp: z
      .enum(["once", "none"])
      .optional()
      .describe(
        "a run missed while the daemon was down runs once at start (once, the default) or waits (none)",
      ),
    jitter: z
      .string()
      .optional()
      .describe("each scheduled start is delayed by a stable per-job amount below this (default 0): 30s"),
    retries: z
      .strictObject({
        attempts: z.number().int().min(0).max(100).optional().describe("after a failed run (default 2)"),
        backoff: z.string().optional().describe("the first retry's delay, doubled each time (default 1m)"),
        maxBackoff: z.string().optional().describe("the longest delay between retries (default 30m)"),
      })
      .optional(),
    targetConcurrency: z
      .number()
      .int()
      .min(1)
      .max(64)
      .optional()
      .describe("runs that may use one target at once (default 1)"),
    listen: z
      .string()
      .min(1)
      .optional()
      .describe(`where the API listens: HOST:PORT (default 127.0.0.1:${DEFAULT_PORT})`),
    tls: z
      .strictObject({ cert: z.string().min(1), key: z.string().min(1) })
      .optional()
      .describe("serve the API over HTTPS with this certificate and key (PEM files)"),
    tokens: z
      .string()
      .min(1)
      .optional()
      .describe(
        "the API's tokens file (hashes; `bulwark daemon token add`; default STATE_DIR/daemon-tokens.json)",
      ),
    metricsAuth: z
      .boolean()
      .optional()
      .describe("whether /metrics needs a token with the read role (default true)"),
  })
  .describe("how `bulwark daemon` schedules and serves");

export type WrittenDaemon = z.output<typeof daemonSchema>;

/** The section with its defaults; durations and the address checked. */
export function normaliseDaemon(
  written: WrittenDaemon | undefined,
  duration: (path: Array<string | number>, text: string) => number,
  error: MakeDiagnostic,
  report: (d: ReturnType<MakeDiagnostic>) => void,
): DaemonConfig {
  const w = written ?? {};
  const at = ["daemon"];
  let listen = { host: "127.0.0.1", port: DEFAULT_PORT };
  if (w.listen !== undefined) {
    const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:\s]+)):(\d{1,5})$/.exec(w.listen);
    const port = m !== null ? Number(m[3]) : NaN;
    if (m === null || port > 65535) {
      report(
        error(
          [...at, "listen"],
          `${JSON.stringify(w.listen)} is not HOST:PORT`,
          `write it like "127.0.0.1:${DEFAULT_PORT}" or "[::1]:${DEFAULT_PORT}"`,
        ),
      );
    } else listen = { host: m[1] ?? m[2]!, port };
  }
  if (w.timezone !== undefined && !isTimeZone(w.timezone)) {
    report(
      error(
        [...at, "timezone"],
        `unknown time zone ${JSON.stringify(w.timezone)}`,
        "an IANA name such as Europe/Paris or UTC",
      ),
    );
  }
  return {
    ...(w.timezone !== undefined ? { timezone: w.timezone } : {}),
    catchUp: w.catchUp ?? "once",
    jitterMs: w.jitter !== undefined ? duration([...at, "jitter"], w.jitter) : 0,
    retries: {
      attempts: w.retries?.attempts ?? 2,
      backoffMs:
        w.retries?.backoff !== undefined
          ? duration([...at, "retries", "backoff"], w.retries.backoff)
          : 60_000,
      maxBackoffMs:
        w.retries?.maxBackoff !== undefined
          ? duration([...at, "retries", "maxBackoff"], w.retries.maxBackoff)
          : 30 * 60_000,
    },
    targetConcurrency: w.targetConcurrency ?? 1,
    listen,
    ...(w.tls !== undefined ? { tls: w.tls } : {}),
    ...(w.tokens !== undefined ? { tokens: w.tokens } : {}),
    metricsAuth: w.metricsAuth ?? true,
  };
}

/** The section's defaults, as a config without `daemon:` has them. */
export function defaultDaemonConfig(): DaemonConfig {
  return normaliseDaemon(
    undefined,
    () => 0,
    () => {
      throw new Error("no diagnostic for the defaults");
    },
    () => undefined,
  );
}
