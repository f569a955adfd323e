/**
 * The senders of alerts (docs/design.md §25): a webhook (a JSON POST, signed with HMAC-SHA256 when it has a
 * secret), e-mail through an SMTP server (nodemailer: STARTTLS when offered, implicit TLS, auth), a local
 * command (the notice as JSON on standard input and in BULWARK_ALERT_* variables, in the scrubbed
 * environment of every program Bulwark starts), and the bare URL hit of a healthchecks-style ping.
 *
 * A sender throws when the notice did not arrive (a refused connection, a timeout, an HTTP status that is not
 * 2xx, an SMTP rejection, a command that failed); deciding what that means (log it, retry at the next update)
 * is the Alerter's (./alerts.ts). Secrets are read from their references at the moment of sending and added
 * to `ctx.secrets`, so that whoever logs an error can scrub it. Every network call is given `ctx.timeoutMs`.
 */
import { createHmac } from "node:crypto";
import { readFile } from "node:fs/promises";

import {
  describeSecretRef,
  type AlertsConfig,
  type CommandChannel,
  type EmailChannel,
  type UrlRef,
  type WebhookChannel,
} from "../config/types.js";
import { BulwarkError, errorMessage } from "../core/errors.js";
import { readSecret } from "../ops/secrets.js";
import { redactUrls } from "../backend/factory.js";
import { childEnv, run } from "../sources/process.js";

/** How long a webhook, SMTP or ping call may take (each SMTP phase: connection, greeting, every reply). */
export const NETWORK_TIMEOUT_MS = 10_000;

/** What a channel is told: a condition that began (or lasts, with repeatAfter), one that ended, or a test. */
export interface Notice {
  type: "alert" | "recovery" | "test";
  key: string;
  kind: string;
  severity: "warning" | "critical";
  summary: string;
  details: Record<string, unknown>;
  /** When the notice was made (ISO 8601). */
  time: string;
  host: string;
  /** When the condition began (absent on a test). */
  since?: string;
}

export interface SendContext {
  env: Readonly<Record<string, string | undefined>>;
  /** Secret values read for the send are added here, for the caller to scrub its messages with. */
  secrets: Set<string>;
  timeoutMs: number;
}

export interface Channel {
  /**
   * Stable while the channel's config stays the same, across restarts and reloads: the Alerter's state
   * records deliveries by it. Never a secret's value (a reference is named by what it refers to).
   */
  id: string;
  /** How logs and `bulwark alert test` name it; no secret. */
  name: string;
  send(notice: Notice, ctx: SendContext): Promise<void>;
}

/** The config's channels, in order: webhooks, e-mail, commands (ids made unique when two are the same). */
export function channelsOf(config: AlertsConfig): Channel[] {
  const out: Channel[] = [
    ...config.webhooks.map(webhookChannel),
    ...(config.email !== undefined ? [emailChannel(config.email)] : []),
    ...config.commands.map(commandChannel),
  ];
  const seen = new Map<string, number>();
  return out.map((c) => {
    const n = (seen.get(c.id) ?? 0) + 1;
    seen.set(c.id, n);
    return n === 1 ? c : { ...c, id: `${c.id}#${n}`, name: `${c.name} (#${n})` };
  });
}

/** The JSON a webhook is posted: the notice's fields in a fixed order. */
export function webhookBody(notice: Notice): string {
  const { type, key, kind, severity, summary, details, time, host, since } = notice;
  return JSON.stringify({
    type,
    key,
    kind,
    severity,
    summary,
    details,
    time,
    host,
    ...(since !== undefined ? { since } : {}),
  });
}

/** The X-Bulwark-Signature of a body: `sha256=` and the hex HMAC-SHA256 of its bytes under the secret. */
export function signature(body: string, secret: string): string {
  return `sha256=${createHmac("sha256", secret).update(body, "utf8").digest("hex")}`;
}

/** `[bulwark] CRITICAL: copy of app to nas failed: ...`, `[bulwark] recovered: ...`, `[bulwark] test: ...`. */
export function emailSubject(notice: Notice): string {
  const label =
    notice.type === "alert"
      ? notice.severity.toUpperCase()
      : notice.type === "recovery"
        ? "recovered"
        : "test";
  const summary = oneLine(notice.summary);
  return `[bulwark] ${label}: ${summary.length > 200 ? `${summary.slice(0, 197)}...` : summary}`;
}

/** The plain-text body: the summary, what and where, then the details one per line. */
export function emailText(notice: Notice): string {
  const lead =
    notice.type === "recovery"
      ? `Recovered: ${notice.summary}\n\nThis condition no longer holds.`
      : notice.type === "test"
        ? `${notice.summary}\n\nThis is a test: the channel works.`
        : notice.summary;
  const facts: [string, string | undefined][] = [
    ["Condition", notice.key],
    ["Kind", notice.kind],
    ["Severity", notice.severity],
    ["Host", notice.host],
    ["Since", notice.since],
    ["Time", notice.time],
  ];
  const lines = [lead, ""];
  for (const [k, v] of facts) if (v !== undefined) lines.push(`${`${k}:`.padEnd(11)}${v}`);
  const details = Object.entries(notice.details);
  if (details.length > 0) {
    lines.push("", "Details:");
    for (const [k, v] of details) lines.push(`  ${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`);
  }
  lines.push("", "-- ", "bulwark daemon");
  return lines.join("\n") + "\n";
}

/** The BULWARK_ALERT_* variables a command channel gets. */
export function noticeEnv(notice: Notice): Record<string, string> {
  return {
    BULWARK_ALERT_TYPE: notice.type,
    BULWARK_ALERT_KEY: notice.key,
    BULWARK_ALERT_KIND: notice.kind,
    BULWARK_ALERT_SEVERITY: notice.severity,
    BULWARK_ALERT_SUMMARY: oneLine(notice.summary),
    BULWARK_ALERT_TIME: notice.time,
    BULWARK_ALERT_HOST: notice.host,
    ...(notice.since !== undefined ? { BULWARK_ALERT_SINCE: notice.since } : {}),
  };
}

/**
 * How a URL is named in logs: a reference by what it refers to, a written URL without its user info and
 * query (either may carry a token). No "?" in it: `scrub` would take the rest of the message for a query.
 */
export function describeUrl(url: UrlRef): string {
  if (typeof url !== "string") return describeSecretRef(url);
  try {
    const u = new URL(url);
    const user = u.username !== "" || u.password !== "" ? "***@" : "";
    return `${u.protocol}//${user}${u.host}${u.pathname}${u.search !== "" ? " (query hidden)" : ""}`;
  } catch {
    return redactUrls(url).replace(/\?\*\*\*$/, " (query hidden)");
  }
}

/**
 * Hits a URL (a ping): GET, or POST with `body` as text when there is one. Throws unless it answers 2xx
 * within the timeout.
 */
export async function hitUrl(url: UrlRef, body: string | undefined, ctx: SendContext): Promise<void> {
  const target = await resolveUrl(url, ctx);
  await request(
    target,
    body === undefined
      ? { method: "GET", headers: { "user-agent": "bulwark" } }
      : {
          method: "POST",
          headers: { "user-agent": "bulwark", "content-type": "text/plain; charset=utf-8" },
          body,
        },
    ctx,
  );
}

function webhookChannel(h: WebhookChannel): Channel {
  const where = describeUrl(h.url);
  return {
    id: `webhook:${typeof h.url === "string" ? h.url : describeSecretRef(h.url)}`,
    name: `webhook ${where}`,
    async send(notice, ctx) {
      const target = await resolveUrl(h.url, ctx);
      const body = webhookBody(notice);
      const headers: Record<string, string> = {
        "content-type": "application/json",
        "user-agent": "bulwark",
      };
      if (h.secret !== undefined) {
        const secret = await readSecret(h.secret, ctx.env);
        ctx.secrets.add(secret);
        headers["x-bulwark-signature"] = signature(body, secret);
      }
      await request(target, { method: "POST", headers, body }, ctx);
    },
  };
}

function emailChannel(e: EmailChannel): Channel {
  return {
    id: `email:${e.host}:${e.port}:${e.to.join(",")}`,
    name: `email ${e.to.join(", ")} via ${e.host}:${e.port}`,
    async send(notice, ctx) {
      let auth: { user: string; pass: string } | undefined;
      if (e.user !== undefined && e.password !== undefined) {
        const pass = await readSecret(e.password, ctx.env);
        // AUTH PLAIN and LOGIN send it base64-encoded: a server that echoes the command must not leak it.
        for (const s of [pass, b64(pass), b64(`\0${e.user}\0${pass}`), b64(`${e.user}\0${e.user}\0${pass}`)])
          ctx.secrets.add(s);
        auth = { user: e.user, pass };
      }
      let ca: Buffer | undefined;
      if (e.ca !== undefined) {
        try {
          ca = await readFile(e.ca);
        } catch (err) {
          throw new BulwarkError("IO", `cannot read the CA file ${e.ca}: ${errorMessage(err)}`, {
            hint: "alerts.email.ca must be a readable PEM file",
          });
        }
      }
      // Loaded when mail is sent, not when the daemon starts.
      const { createTransport } = await import("nodemailer");
      const transport = createTransport({
        host: e.host,
        port: e.port,
        secure: e.tls,
        requireTLS: e.requireTLS,
        ...(auth !== undefined ? { auth } : {}),
        ...(ca !== undefined ? { tls: { ca } } : {}),
        connectionTimeout: ctx.timeoutMs,
        greetingTimeout: ctx.timeoutMs,
        socketTimeout: ctx.timeoutMs,
        dnsTimeout: ctx.timeoutMs,
        disableFileAccess: true,
        disableUrlAccess: true,
      });
      try {
        await transport.sendMail({
          from: e.from,
          to: e.to,
          subject: emailSubject(notice),
          text: emailText(notice),
          headers: { "X-Bulwark-Alert": `${notice.type} ${notice.key}` },
        });
      } catch (err) {
        throw new BulwarkError("TRANSIENT", `SMTP ${e.host}:${e.port}: ${errorMessage(err)}`, { cause: err });
      } finally {
        transport.close();
      }
    },
  };
}

function commandChannel(c: CommandChannel): Channel {
  const shown =
    c.command[0] === "sh" && c.command[1] === "-c" && c.command.length === 3
      ? c.command[2]!
      : c.command.join(" ");
  return {
    id: `command:${JSON.stringify(c.command)}`,
    name: `command ${shown}`,
    async send(notice, ctx) {
      await run("the command", c.command[0]!, c.command.slice(1), {
        env: childEnv(ctx.env, { pass: c.passEnv, set: noticeEnv(notice) }),
        timeoutMs: c.timeoutMs,
        input: webhookBody(notice) + "\n",
      });
    },
  };
}

async function resolveUrl(url: UrlRef, ctx: SendContext): Promise<string> {
  if (typeof url === "string") return url;
  const value = (await readSecret(url, ctx.env)).trim();
  // The whole URL is the credential: never in a message.
  ctx.secrets.add(value);
  try {
    const u = new URL(value);
    if (u.protocol === "http:" || u.protocol === "https:") return value;
  } catch {
    // reported below
  }
  throw new BulwarkError("CONFIG_INVALID", `${describeSecretRef(url)} does not hold an http(s) URL`, {
    hint: "put the whole URL there, like https://hooks.example.com/...",
  });
}

/**
 * One HTTP request, answered 2xx within the timeout or an error. User info in the URL (only a reference can
 * hold one: the config refuses it written out) becomes Basic authentication, which fetch will not do itself.
 */
async function request(
  url: string,
  init: RequestInit & { headers: Record<string, string> },
  ctx: SendContext,
): Promise<void> {
  const u = new URL(url);
  const headers = { ...init.headers };
  if (u.username !== "" || u.password !== "") {
    const basic = b64(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`);
    for (const s of [basic, u.password, decodeURIComponent(u.password)]) ctx.secrets.add(s);
    headers.authorization = `Basic ${basic}`;
    u.username = "";
    u.password = "";
  }
  let res: Response;
  try {
    res = await fetch(u, { ...init, headers, signal: AbortSignal.timeout(ctx.timeoutMs) });
  } catch (err) {
    throw new BulwarkError("TRANSIENT", fetchFailure(err, ctx.timeoutMs), { cause: err });
  }
  // The answer is not needed; reading it ends the request and frees the connection.
  const text = await res.text().catch(() => "");
  if (!res.ok) {
    const said = oneLine(text).slice(0, 200);
    throw new BulwarkError("TRANSIENT", `answered HTTP ${res.status}${said !== "" ? `: ${said}` : ""}`);
  }
}

/** undici's "fetch failed" says nothing: the reason is in its cause (connect ECONNREFUSED 127.0.0.1:9). */
function fetchFailure(err: unknown, timeoutMs: number): string {
  const name = (err as { name?: unknown } | null)?.name;
  if (name === "TimeoutError" || name === "AbortError") return `no answer within ${timeoutMs / 1000} s`;
  const cause = (err as { cause?: unknown } | null)?.cause;
  return cause instanceof Error && cause.message !== "" ? cause.message : errorMessage(err);
}

function oneLine(text: string): string {
  return text.replace(/\s*[\r\n]+\s*/g, " ").trim();
}

function b64(text: string): string {
  return Buffer.from(text, "utf8").toString("base64");
}
