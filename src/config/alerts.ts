/**
 * The `alerts:` section of the config (docs/design.md §25): where `bulwark daemon` tells people that
 * something is wrong (webhooks, e-mail over SMTP, local commands), the healthchecks-style URLs each job pings
 * when a run starts, succeeds and fails, and whether an alert that lasts is repeated. The senders are
 * src/daemon/channels.ts; the deduplication src/daemon/alerts.ts. The written shape is the schema's output,
 * so the two cannot drift apart.
 *
 * Secrets are references only: a webhook's signing key, the SMTP password, and a URL that is a credential
 * itself (a Slack hook, a ping UUID) may be `{ env: NAME }` or `{ file: PATH }`.
 */
import { isIPv6 } from "node:net";

import { z } from "zod";

import type { MakeDiagnostic } from "./diagnostic.js";
import type { AlertsConfig, CommandChannel, EmailChannel, JobPings, UrlRef } from "./types.js";

const SMTP_PORT = 587;
const SMTPS_PORT = 465;
/** A command channel is killed after this long unless the config says otherwise. */
const DEFAULT_COMMAND_TIMEOUT_S = 30;
const PING_EVENTS = ["start", "success", "fail"] as const;

const name = z.string().min(1);
// Its own copy of the reference shape: ./schema.ts imports this module, so importing its schema would be a cycle.
const secretRef = z
  .union([
    z.strictObject({ env: name.describe("the environment variable holding the secret") }),
    z.strictObject({ file: name.describe("a file whose first line is the secret") }),
  ])
  .describe("a reference to a secret, never the secret itself: { env: NAME } or { file: PATH }");
const url = z
  .union([name, secretRef])
  .describe("an http(s) URL, or a reference to one when the URL is a credential itself (a Slack hook)");

export const alertsSchema = z
  .strictObject({
    webhooks: z
      .array(
        z.strictObject({
          url,
          secret: secretRef
            .optional()
            .describe("signs each body: X-Bulwark-Signature: sha256=HMAC-SHA256(secret, body) in hex"),
        }),
      )
      .optional()
      .describe("endpoints that get each alert as a JSON POST"),
    email: z
      .strictObject({
        host: name.describe("the SMTP server's host name"),
        port: z
          .number()
          .int()
          .min(1)
          .max(65535)
          .optional()
          .describe(`default ${SMTP_PORT} (${SMTPS_PORT} with tls: true)`),
        tls: z
          .boolean()
          .optional()
          .describe("implicit TLS from the start, as on port 465 (default false: STARTTLS when offered)"),
        requireTLS: z
          .boolean()
          .optional()
          .describe("refuse to send unless STARTTLS succeeds (default false)"),
        ca: name
          .optional()
          .describe("a PEM file of the CA the server's certificate must chain to (default the system's)"),
        user: name.optional(),
        password: secretRef.optional(),
        from: name.describe("the sender address"),
        to: z.array(name).optional().describe("the recipients"),
      })
      .optional()
      .describe("mail each alert through an SMTP server"),
    commands: z
      .array(
        z.strictObject({
          command: z
            .union([name, z.array(z.string()).min(1)])
            .describe(
              "a program and its arguments, or one shell command; it gets the alert as JSON on standard input and in BULWARK_ALERT_* variables",
            ),
          env: z
            .array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "a variable name (letters, digits, _)"))
            .optional()
            .describe("variables passed through by name (it gets only PATH, HOME, locale and these)"),
          timeoutSeconds: z
            .number()
            .positive()
            .optional()
            .describe(`kill it after this long (default ${DEFAULT_COMMAND_TIMEOUT_S})`),
        }),
      )
      .optional()
      .describe("local programs run for each alert"),
    pings: z
      .record(
        name,
        z.strictObject({
          start: url.optional().describe("hit when a run of the job starts"),
          success: url.optional().describe("hit when it succeeds"),
          fail: url.optional().describe("hit when it fails"),
        }),
      )
      .optional()
      .describe("healthchecks-style URLs per job name"),
    repeatAfter: z
      .string()
      .optional()
      .describe("remind while a condition lasts, this long after the last notice: 24h (default: never)"),
  })
  .describe("where `bulwark daemon` sends alerts (one per condition, and a notice when it clears)");

export type WrittenAlerts = z.output<typeof alertsSchema>;

/** The section with its defaults; URLs, addresses, pinged jobs and the repeat duration checked. */
export function normaliseAlerts(
  written: WrittenAlerts | undefined,
  jobs: readonly string[],
  duration: (path: Array<string | number>, text: string) => number,
  error: MakeDiagnostic,
  report: (d: ReturnType<MakeDiagnostic>) => void,
): AlertsConfig {
  const w = written ?? {};
  const at = ["alerts"];
  const checkUrl = (ref: UrlRef, path: Array<string | number>): void => {
    if (typeof ref !== "string") return;
    const why = urlProblem(ref);
    if (why !== undefined) report(error(path, why.message, why.remedy));
  };

  const webhooks = (w.webhooks ?? []).map((h, i) => {
    checkUrl(h.url, [...at, "webhooks", i, "url"]);
    return { url: h.url, ...(h.secret !== undefined ? { secret: h.secret } : {}) };
  });

  let email: EmailChannel | undefined;
  if (w.email !== undefined) {
    const e = w.email;
    const path = [...at, "email"];
    if (/[/\s]/.test(e.host) || (e.host.includes(":") && !isIPv6(e.host))) {
      report(
        error(
          [...path, "host"],
          `${JSON.stringify(e.host)} is not a host name`,
          "write the name alone (smtp.example.com); the port goes in port:",
        ),
      );
    }
    const address = (a: string, field: Array<string | number>): void => {
      if (!isAddress(a)) {
        report(
          error(
            [...path, ...field],
            `${JSON.stringify(a)} is not an e-mail address`,
            'write it like "ops@example.com" or "Ops <ops@example.com>"',
          ),
        );
      }
    };
    address(e.from, ["from"]);
    if (e.to === undefined || e.to.length === 0) {
      report(
        error(
          e.to === undefined ? path : [...path, "to"],
          "e-mail alerts have no recipient",
          "add to: [ops@example.com]",
        ),
      );
    }
    (e.to ?? []).forEach((a, i) => address(a, ["to", i]));
    if ((e.user === undefined) !== (e.password === undefined)) {
      report(
        error(
          [...path, e.user === undefined ? "password" : "user"],
          e.user === undefined ? "a password without a user" : "a user without a password",
          "SMTP authentication needs both user: NAME and password: { env: NAME } (or neither)",
        ),
      );
    }
    const tls = e.tls ?? false;
    email = {
      host: e.host,
      port: e.port ?? (tls ? SMTPS_PORT : SMTP_PORT),
      tls,
      requireTLS: e.requireTLS ?? false,
      ...(e.ca !== undefined ? { ca: e.ca } : {}),
      ...(e.user !== undefined ? { user: e.user } : {}),
      ...(e.password !== undefined ? { password: e.password } : {}),
      from: e.from,
      to: e.to ?? [],
    };
  }

  const commands = (w.commands ?? []).map(
    (c): CommandChannel => ({
      command: typeof c.command === "string" ? ["sh", "-c", c.command] : c.command,
      passEnv: c.env ?? [],
      timeoutMs: Math.round((c.timeoutSeconds ?? DEFAULT_COMMAND_TIMEOUT_S) * 1000),
    }),
  );

  const pings: Record<string, JobPings> = {};
  for (const [job, p] of Object.entries(w.pings ?? {})) {
    const path = [...at, "pings", job];
    if (!jobs.includes(job)) {
      report(
        error(
          path,
          `there is no job named ${JSON.stringify(job)}`,
          jobs.length > 0 ? `the jobs are ${jobs.join(", ")}` : "define the job under jobs: first",
        ),
      );
    }
    const entry: JobPings = {};
    for (const event of PING_EVENTS) {
      const u = p[event];
      if (u === undefined) continue;
      checkUrl(u, [...path, event]);
      entry[event] = u;
    }
    if (Object.keys(entry).length === 0) {
      report(error(path, "the job's pings name no URL", "give at least one of start:, success:, fail:"));
    }
    pings[job] = entry;
  }

  return {
    webhooks,
    ...(email !== undefined ? { email } : {}),
    commands,
    pings,
    ...(w.repeatAfter !== undefined
      ? { repeatAfter: w.repeatAfter, repeatAfterMs: duration([...at, "repeatAfter"], w.repeatAfter) }
      : {}),
  };
}

/** The section's defaults, as a config without `alerts:` has them: no channel, no ping. */
export function defaultAlertsConfig(): AlertsConfig {
  return normaliseAlerts(
    undefined,
    [],
    () => 0,
    () => {
      throw new Error("no diagnostic for the defaults");
    },
    () => undefined,
  );
}

/** Why a written URL cannot be used, and what to do; undefined when it can. */
export function urlProblem(text: string): { message: string; remedy: string } | undefined {
  const remedy = 'write it like "https://hooks.example.com/bulwark"';
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    return { message: `${JSON.stringify(text)} is not a URL`, remedy };
  }
  if (u.protocol !== "http:" && u.protocol !== "https:")
    return { message: `${JSON.stringify(u.protocol)} URLs are not supported: only http and https`, remedy };
  if (u.username !== "" || u.password !== "")
    return {
      message: "the URL carries a user name",
      remedy: "credentials are references: give the whole URL as one, url: { env: NAME } or { file: PATH }",
    };
  return undefined;
}

/** `ops@example.com` or `Ops <ops@example.com>`: enough to catch a slip, not RFC 5322. */
function isAddress(text: string): boolean {
  const inside = /^[^<>]*<([^<>]+)>$/.exec(text.trim())?.[1] ?? text.trim();
  return /^[^\s@<>,;]+@[^\s@<>,;]+\.[^\s@<>,;]+$/.test(inside) || /^[^\s@<>,;]+@localhost$/.test(inside);
}
