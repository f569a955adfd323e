/**
 * Alerts of the daemon against real servers on 127.0.0.1: an SMTP server (smtp-server, with authentication,
 * STARTTLS and implicit TLS on a self-signed certificate made with openssl), an HTTP server (node:http)
 * receiving webhooks and pings, and real commands. The config comes through the real loader, so the section's
 * defaults and diagnostics are covered by the same file. Nothing is skipped: openssl and loopback are
 * required.
 */
import { execFile } from "node:child_process";
import { createHmac, timingSafeEqual } from "node:crypto";
import { readFile, stat, writeFile } from "node:fs/promises";
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from "node:http";
import { join } from "node:path";
import { promisify } from "node:util";

import { SMTPServer } from "smtp-server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { formatDiagnostic } from "../../src/config/diagnostic.js";
import { resolveConfig } from "../../src/config/load.js";
import type { AlertsConfig } from "../../src/config/types.js";
import { ManualClock } from "../../src/core/clock.js";
import type { BulwarkEvent } from "../../src/core/events.js";
import { Alerter, inScope, type AlertCondition } from "../../src/daemon/alerts.js";
import { freePort } from "../helpers/services.js";
import { makeTempDir, removeTempDirs } from "../helpers/temp.js";

const HOOK_SECRET = "hook-secret-4b1d9e";
const SMTP_USER = "bulwark";
const SMTP_PASSWORD = "smtp-pass-7c2a91";
const URL_TOKEN = "T0KENpath8d3f";
const START = "2026-11-26T06:00:00.000Z";
const HOUR = 3_600_000;

const runFailed: AlertCondition = {
  key: "run-failed:job:app:copy:nas",
  kind: "run-failed",
  severity: "critical",
  summary: "copy of app to nas failed: connect ECONNREFUSED",
  details: { job: "app", target: "nas", attempts: 3 },
};
const rpo: AlertCondition = {
  key: "rpo:app:nas",
  kind: "rpo",
  severity: "warning",
  summary: "app on nas is 30h old (RPO 24h)",
};

// ---------------------------------------------------------------------------------------------------------
// The servers

interface Hit {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

interface HttpReceiver {
  port: number;
  hits: Hit[];
  /** Answers by path (default 200); "hang" never answers. */
  answer: Map<string, number | "hang">;
  close(): Promise<void>;
}

async function startHttp(port = 0): Promise<HttpReceiver> {
  const hits: Hit[] = [];
  const answer = new Map<string, number | "hang">();
  const hanging: ServerResponse[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const path = req.url ?? "";
      hits.push({
        method: req.method ?? "",
        path,
        headers: req.headers,
        body: Buffer.concat(chunks).toString("utf8"),
      });
      const a = answer.get(path) ?? 200;
      if (a === "hang") {
        hanging.push(res);
        return;
      }
      res.writeHead(a, { "content-type": "text/plain" }).end(a === 200 ? "OK" : "nope");
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  return {
    port: (server.address() as { port: number }).port,
    hits,
    answer,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

interface Mail {
  from: string;
  to: string[];
  subject: string;
  text: string;
  headers: string;
  secure: boolean;
  user: string | undefined;
}

interface SmtpReceiver {
  port: number;
  mails: Mail[];
  logins: { user: string; ok: boolean }[];
  close(): Promise<void>;
}

async function startSmtp(
  tls: { key: Buffer; cert: Buffer },
  options: { port?: number; secure?: boolean } = {},
) {
  const mails: Mail[] = [];
  const logins: { user: string; ok: boolean }[] = [];
  const server = new SMTPServer({
    ...tls,
    secure: options.secure ?? false,
    authMethods: ["PLAIN", "LOGIN"],
    disableReverseLookup: true,
    logger: false,
    onAuth(auth, _session, callback) {
      const ok = auth.username === SMTP_USER && auth.password === SMTP_PASSWORD;
      logins.push({ user: auth.username ?? "", ok });
      if (ok) callback(null, { user: auth.username });
      else callback(new Error("Invalid username or password"));
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        const raw = Buffer.concat(chunks).toString("utf8");
        const split = raw.indexOf("\r\n\r\n");
        const headers = raw.slice(0, split).replace(/\r\n[ \t]+/g, " ");
        const body = raw.slice(split + 4);
        const qp = /^content-transfer-encoding:\s*quoted-printable/im.test(headers);
        mails.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
          to: session.envelope.rcptTo.map((r) => r.address),
          subject: /^subject: (.*)$/im.exec(headers)?.[1] ?? "",
          text: (qp ? decodeQuotedPrintable(body) : body).replace(/\r\n/g, "\n"),
          headers,
          secure: session.secure,
          user: session.user as string | undefined,
        });
        callback();
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, "127.0.0.1", () => resolve());
  });
  const receiver: SmtpReceiver = {
    port: (server.server.address() as { port: number }).port,
    mails,
    logins,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  return receiver;
}

function decodeQuotedPrintable(text: string): string {
  const bytes = Buffer.from(
    text
      .replace(/=\r?\n/g, "")
      .replace(/=([0-9A-F]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16))),
    "latin1",
  );
  return bytes.toString("utf8");
}

// ---------------------------------------------------------------------------------------------------------
// Config and Alerter

const BASE = `version: 1
targets:
  local: { location: /var/backups/b, labels: { medium: disk, site: home, failureDomain: s1 } }
datasets:
  app: { sources: [{ type: files, paths: [/srv/app] }] }
policies:
  p: { rule: { copies: 1 }, rpo: 24h }
jobs:
  app: { dataset: app, policy: p, primary: local }
  db: { dataset: app, policy: p, primary: local }
`;

function load(alerts: string) {
  return resolveConfig(`${BASE}${alerts}`, "bulwark.yaml", {
    env: { BULWARK_PASSWORD: "x" },
    fileReadable: () => true,
  });
}

/** The `alerts:` section of a YAML text, through the loader; fails the test on any diagnostic. */
function alertsOf(yaml: string): AlertsConfig {
  const r = load(yaml);
  expect(r.errors.map(formatDiagnostic)).toEqual([]);
  return r.config!.alerts;
}

let dir: string;
let cert: { key: Buffer; cert: Buffer };
let certFile: string;
let passwordFile: string;
let http: HttpReceiver;
let smtp: SmtpReceiver;
let env: Record<string, string | undefined>;
let stateCount = 0;

interface Harness {
  alerter: Alerter;
  clock: ManualClock;
  events: BulwarkEvent[];
  stateFile: string;
  logText: () => string;
}

function harness(
  config: AlertsConfig,
  options: { stateFile?: string; clock?: ManualClock; timeoutMs?: number; secrets?: string[] } = {},
): Harness {
  const events: BulwarkEvent[] = [];
  const clock = options.clock ?? new ManualClock(START);
  const stateFile = options.stateFile ?? join(dir, "state", `alerts-${++stateCount}.json`);
  const alerter = new Alerter(config, {
    clock,
    env,
    stateFile,
    events: (e) => events.push(e),
    hostname: "backup-1",
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    ...(options.secrets !== undefined ? { secrets: options.secrets } : {}),
  });
  const logText = () =>
    events.map((e) => (e.type === "message" ? `${e.level}: ${e.message}` : "")).join("\n");
  return { alerter, clock, events, stateFile, logText };
}

const hitsAt = (path: string): Hit[] => http.hits.filter((h) => h.path === path);
const mailsTo = (to: string, receiver: SmtpReceiver = smtp): Mail[] =>
  receiver.mails.filter((m) => m.to.includes(to));
const json = (h: Hit): Record<string, unknown> => JSON.parse(h.body) as Record<string, unknown>;

async function lines(file: string): Promise<Record<string, unknown>[]> {
  const text = await readFile(file, "utf8").catch(() => "");
  return text
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

function emailYaml(to: string, port = smtp.port, extra = ""): string {
  return `  email:
    host: 127.0.0.1
    port: ${port}
    ca: ${certFile}
    user: ${SMTP_USER}
    password: { file: ${passwordFile} }
    from: "Bulwark <bulwark@example.com>"
    to: [${to}]
${extra}`;
}

/** Everything secret the tests use: none may appear in a log line. */
function secretsIn(text: string): string[] {
  const b64 = (s: string) => Buffer.from(s).toString("base64");
  return [
    HOOK_SECRET,
    SMTP_PASSWORD,
    b64(SMTP_PASSWORD),
    b64(`\0${SMTP_USER}\0${SMTP_PASSWORD}`),
    URL_TOKEN,
    b64(`hook:${URL_TOKEN}`),
    "s3cret-bulwark",
    "wrong-pass-31",
    "echoed-secret-66",
  ].filter((s) => text.includes(s));
}

beforeAll(async () => {
  dir = await makeTempDir("alerts");
  const keyFile = join(dir, "key.pem");
  certFile = join(dir, "cert.pem");
  await promisify(execFile)("openssl", [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    keyFile,
    "-out",
    certFile,
    "-days",
    "2",
    "-subj",
    "/CN=127.0.0.1",
    "-addext",
    "subjectAltName=IP:127.0.0.1",
  ]);
  cert = { key: await readFile(keyFile), cert: await readFile(certFile) };
  passwordFile = join(dir, "smtp.pw");
  await writeFile(passwordFile, `${SMTP_PASSWORD}\n`, { mode: 0o600 });
  http = await startHttp();
  smtp = await startSmtp(cert);
  env = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    HOOK_SECRET,
    HOOK_URL: `http://hook:${URL_TOKEN}@127.0.0.1:${http.port}/by-ref/${URL_TOKEN}`,
    PING_URL: `http://127.0.0.1:${http.port}/ping/db/${URL_TOKEN}/fail`,
    BULWARK_PASSWORD: "s3cret-bulwark",
    EXTRA_VAR: "passed-through",
  };
});

afterAll(async () => {
  await http?.close();
  await smtp?.close();
  await removeTempDirs();
});

// ---------------------------------------------------------------------------------------------------------

describe("the alerts: section", () => {
  it("has no channel when absent, and reads every field with its defaults", () => {
    expect(load("").config!.alerts).toEqual({ webhooks: [], commands: [], pings: {} });
    const a = alertsOf(`alerts:
  webhooks:
    - { url: "https://hooks.example/x", secret: { env: HOOK_SECRET } }
    - { url: { env: SLACK_URL } }
  email:
    host: smtp.example.com
    user: bulwark
    password: { file: /etc/bulwark/smtp.pw }
    from: bulwark@example.com
    to: [ops@example.com, "Oncall <oncall@example.com>"]
  commands:
    - { command: "logger -t bulwark", env: [SYSLOG_TAG] }
    - { command: [/usr/local/bin/page, --urgent], timeoutSeconds: 5 }
  pings:
    app: { start: "https://hc.example/uuid/start", success: "https://hc.example/uuid", fail: { env: HC_FAIL } }
  repeatAfter: 24h
`);
    expect(a).toEqual({
      webhooks: [
        { url: "https://hooks.example/x", secret: { env: "HOOK_SECRET" } },
        { url: { env: "SLACK_URL" } },
      ],
      email: {
        host: "smtp.example.com",
        port: 587,
        tls: false,
        requireTLS: false,
        user: "bulwark",
        password: { file: "/etc/bulwark/smtp.pw" },
        from: "bulwark@example.com",
        to: ["ops@example.com", "Oncall <oncall@example.com>"],
      },
      commands: [
        { command: ["sh", "-c", "logger -t bulwark"], passEnv: ["SYSLOG_TAG"], timeoutMs: 30_000 },
        { command: ["/usr/local/bin/page", "--urgent"], passEnv: [], timeoutMs: 5_000 },
      ],
      pings: {
        app: {
          start: "https://hc.example/uuid/start",
          success: "https://hc.example/uuid",
          fail: { env: "HC_FAIL" },
        },
      },
      repeatAfter: "24h",
      repeatAfterMs: 24 * HOUR,
    });
    const implicit = alertsOf(`alerts:
  email: { host: smtp.example.com, tls: true, requireTLS: true, from: a@example.com, to: [b@example.com] }
`);
    expect(implicit.email).toMatchObject({ port: 465, tls: true, requireTLS: true });
  });

  it("reports bad URLs, an unknown job, an e-mail without recipients and half an SMTP login with file, line and field", () => {
    const yaml = `alerts:
  webhooks:
    - { url: "hooks.example/x" }
    - { url: "ftp://hooks.example/x" }
    - { url: "https://someone@hooks.example/x" }
  email:
    host: "smtp://smtp.example.com"
    user: bulwark
    from: bulwark
  pings:
    ap: { start: "https://hc.example/uuid/start" }
    db: {}
  repeatAfter: soon
`;
    const r = load(yaml);
    const text = `${BASE}${yaml}`.split("\n");
    const lineOf = (s: string): number => text.findIndex((l) => l.includes(s)) + 1;
    const out = r.errors.map(formatDiagnostic);
    const expected: [string, number, RegExp][] = [
      ["alerts.webhooks[0].url", lineOf('"hooks.example/x"'), /is not a URL/],
      ["alerts.webhooks[1].url", lineOf("ftp://"), /only http and https/],
      ["alerts.webhooks[2].url", lineOf("someone@"), /carries a user name — credentials are references/],
      ["alerts.email.host", lineOf("host: "), /is not a host name — write the name alone/],
      ["alerts.email.from", lineOf("from: bulwark"), /is not an e-mail address/],
      ["alerts.email", lineOf("email:"), /no recipient — add to:/],
      ["alerts.email.user", lineOf("user: bulwark"), /a user without a password/],
      ["alerts.pings.ap", lineOf("ap: {"), /no job named "ap" — the jobs are app, db/],
      ["alerts.pings.db", lineOf("db: {}"), /name no URL/],
      ["alerts.repeatAfter", lineOf("repeatAfter"), /invalid duration "soon"/],
    ];
    for (const [field, line, message] of expected) {
      const d = out.find((o) => o.includes(` ${field}: `));
      expect(d, `${field} in\n${out.join("\n")}`).toBeDefined();
      expect(d).toMatch(new RegExp(`^bulwark\\.yaml:${line}:\\d+ `));
      expect(d).toMatch(message);
    }
    expect(out).toHaveLength(expected.length);
    expect(r.config).toBeUndefined();
  });

  it("refuses secrets written as values, without echoing them", () => {
    const r = load(`alerts:
  webhooks:
    - { url: "https://hooks.example/x", secret: "Zx9pLq2RtW8vKm4NbY7cHs3D" }
  email: { host: smtp.example.com, user: u, password: "hunter2-plain", from: a@example.com, to: [b@example.com] }
`);
    const out = r.errors.map(formatDiagnostic);
    expect(out.some((d) => /alerts\.webhooks\[0\]\.secret: /.test(d))).toBe(true);
    expect(out.some((d) => /alerts\.email\.password: /.test(d))).toBe(true);
    expect(out.join("\n")).not.toContain("Zx9pLq2RtW8vKm4NbY7cHs3D");
    expect(out.join("\n")).not.toContain("hunter2-plain");
  });
});

describe("Alerter against real servers", () => {
  it("sends one alert per condition on every channel, nothing while it holds, one recovery when it clears", async () => {
    const commandOut = join(dir, "t1-command.jsonl");
    const config = alertsOf(`alerts:
  webhooks:
    - { url: "http://127.0.0.1:${http.port}/t1", secret: { env: HOOK_SECRET } }
${emailYaml("t1@example.com")}  commands:
    - { command: "cat >> ${commandOut}" }
`);
    const h = harness(config);

    const first = await h.alerter.update([runFailed, rpo]);
    expect(first.fired.sort()).toEqual([rpo.key, runFailed.key]);
    expect(first.recovered).toEqual([]);

    // The webhook: one signed JSON body per condition; the signature checks out with the shared secret.
    const hooks = hitsAt("/t1");
    expect(hooks).toHaveLength(2);
    for (const hit of hooks) {
      expect(hit.method).toBe("POST");
      expect(hit.headers["content-type"]).toBe("application/json");
      const expected = Buffer.from(
        `sha256=${createHmac("sha256", HOOK_SECRET).update(hit.body).digest("hex")}`,
      );
      const got = Buffer.from(String(hit.headers["x-bulwark-signature"]));
      expect(got.length === expected.length && timingSafeEqual(got, expected)).toBe(true);
      const wrong = createHmac("sha256", "another-secret").update(hit.body).digest("hex");
      expect(got.toString()).not.toBe(`sha256=${wrong}`);
    }
    const alert = hooks.map(json).find((b) => b.key === runFailed.key)!;
    expect(alert).toEqual({
      type: "alert",
      key: runFailed.key,
      kind: "run-failed",
      severity: "critical",
      summary: runFailed.summary,
      details: runFailed.details,
      time: START,
      host: "backup-1",
      since: START,
    });

    // E-mail: over STARTTLS (the server refuses AUTH in the clear), authenticated, one per condition.
    const mails = mailsTo("t1@example.com");
    expect(mails).toHaveLength(2);
    expect(mails.every((m) => m.secure && m.user === SMTP_USER && m.from === "bulwark@example.com")).toBe(
      true,
    );
    const critical = mails.find((m) => m.subject.startsWith("[bulwark] CRITICAL:"))!;
    expect(critical.subject).toBe(`[bulwark] CRITICAL: ${runFailed.summary}`);
    expect(critical.text).toContain(`Condition: ${runFailed.key}`);
    expect(critical.text).toContain("  target: nas");
    expect(critical.text).toContain("  attempts: 3");
    expect(mails.map((m) => m.subject)).toContain(`[bulwark] WARNING: ${rpo.summary}`);

    // The command: the notice as JSON on its standard input, once per condition.
    const commanded = await lines(commandOut);
    expect(commanded.map((c) => [c.type, c.key]).sort()).toEqual([
      ["alert", rpo.key],
      ["alert", runFailed.key],
    ]);

    // Still active an hour later: nothing new anywhere.
    h.clock.advance(HOUR);
    expect(await h.alerter.update([runFailed, rpo])).toEqual({ fired: [], recovered: [] });
    expect(hitsAt("/t1")).toHaveLength(2);
    expect(mailsTo("t1@example.com")).toHaveLength(2);
    expect(await lines(commandOut)).toHaveLength(2);

    // The RPO is met again: one recovery notice on every channel, and only for it.
    h.clock.advance(HOUR);
    expect(await h.alerter.update([runFailed])).toEqual({ fired: [], recovered: [rpo.key] });
    const recovery = json(hitsAt("/t1")[2]!);
    expect(recovery).toMatchObject({ type: "recovery", key: rpo.key, since: START });
    expect(recovery.time).toBe(new Date(Date.parse(START) + 2 * HOUR).toISOString());
    expect(mailsTo("t1@example.com").map((m) => m.subject)).toContain(`[bulwark] recovered: ${rpo.summary}`);
    expect((await lines(commandOut)).map((c) => c.type)).toEqual(["alert", "alert", "recovery"]);
    h.clock.advance(HOUR);
    expect(await h.alerter.update([runFailed])).toEqual({ fired: [], recovered: [] });
    expect(hitsAt("/t1")).toHaveLength(3);

    const st = await stat(h.stateFile);
    expect(st.mode & 0o777).toBe(0o600);
    expect(secretsIn(await readFile(h.stateFile, "utf8"))).toEqual([]);
    expect(secretsIn(h.logText())).toEqual([]);
  });

  it("keeps its dedupe across a restart on the same state file", async () => {
    const config = alertsOf(`alerts:
  webhooks: [{ url: "http://127.0.0.1:${http.port}/t2" }]
`);
    const first = harness(config);
    expect((await first.alerter.update([runFailed])).fired).toEqual([runFailed.key]);

    const again = harness(config, { stateFile: first.stateFile });
    expect(await again.alerter.update([runFailed])).toEqual({ fired: [], recovered: [] });
    expect(hitsAt("/t2")).toHaveLength(1);
    expect(await again.alerter.update([])).toEqual({ fired: [], recovered: [runFailed.key] });
    expect(hitsAt("/t2").map((h) => json(h).type)).toEqual(["alert", "recovery"]);
    const state = JSON.parse(await readFile(first.stateFile, "utf8")) as { conditions: object };
    expect(state.conditions).toEqual({});

    // A new condition after the restart is new: it alerts.
    const third = harness(config, { stateFile: first.stateFile });
    expect((await third.alerter.update([rpo])).fired).toEqual([rpo.key]);
  });

  it("clears only the conditions within the scope of an update", async () => {
    const config = alertsOf(`alerts:
  webhooks: [{ url: "http://127.0.0.1:${http.port}/t3" }]
`);
    const h = harness(config);
    const app = { ...runFailed, key: "run-failed:job:app:backup" };
    const application = { ...runFailed, key: "run-failed:job:application:backup" };
    expect((await h.alerter.update([app, application, rpo])).fired).toHaveLength(3);

    // What the run of job app found: its own failures cleared, not those of "application", not the RPO.
    expect(await h.alerter.update([], ["run-failed:job:app"])).toEqual({ fired: [], recovered: [app.key] });
    expect(await h.alerter.update([], ["rpo:"])).toEqual({ fired: [], recovered: [rpo.key] });
    expect(await h.alerter.update([])).toEqual({ fired: [], recovered: [application.key] });
    expect(hitsAt("/t3").filter((x) => json(x).type === "recovery")).toHaveLength(3);

    expect(inScope("rpo:app:nas", ["rpo:app"])).toBe(true);
    expect(inScope("rpo:application:nas", ["rpo:app"])).toBe(false);
    expect(inScope("rpo:app", ["rpo:app"])).toBe(true);
    expect(inScope("anything", undefined)).toBe(true);
  });

  it("reminds after repeatAfter while a condition lasts, and alerts again when it worsens", async () => {
    const config = alertsOf(`alerts:
  webhooks: [{ url: "http://127.0.0.1:${http.port}/t4" }]
  repeatAfter: 24h
`);
    const h = harness(config);
    expect((await h.alerter.update([rpo])).fired).toEqual([rpo.key]);
    h.clock.advance(23 * HOUR);
    expect((await h.alerter.update([rpo])).fired).toEqual([]);
    h.clock.advance(HOUR);
    expect((await h.alerter.update([rpo])).fired).toEqual([rpo.key]);
    h.clock.advance(HOUR);
    expect((await h.alerter.update([rpo])).fired).toEqual([]);
    const reminders = hitsAt("/t4").map(json);
    expect(reminders.map((b) => [b.type, b.since, b.time])).toEqual([
      ["alert", START, START],
      ["alert", START, new Date(Date.parse(START) + 24 * HOUR).toISOString()],
    ]);

    // From warning to critical: told at once, without waiting for the reminder.
    h.clock.advance(HOUR);
    expect((await h.alerter.update([{ ...rpo, severity: "critical" }])).fired).toEqual([rpo.key]);
    expect(json(hitsAt("/t4")[2]!)).toMatchObject({ type: "alert", severity: "critical" });
    expect((await h.alerter.update([{ ...rpo, severity: "critical" }])).fired).toEqual([]);

    // Without repeatAfter a condition alerts once, however long it lasts.
    const once = harness(
      alertsOf(`alerts:\n  webhooks: [{ url: "http://127.0.0.1:${http.port}/t4-once" }]\n`),
    );
    await once.alerter.update([rpo]);
    once.clock.advance(30 * 24 * HOUR);
    expect((await once.alerter.update([rpo])).fired).toEqual([]);
    expect(hitsAt("/t4-once")).toHaveLength(1);
  });

  it("logs a channel that is down and delivers to it at a later update, without repeating on the others", async () => {
    const downPort = await freePort();
    const config = alertsOf(`alerts:
  webhooks: [{ url: "http://127.0.0.1:${downPort}/t5" }]
${emailYaml("t5@example.com")}`);
    const h = harness(config);

    expect((await h.alerter.update([runFailed, rpo])).fired.sort()).toEqual([rpo.key, runFailed.key]);
    expect(mailsTo("t5@example.com")).toHaveLength(2);
    const refused = h.events.filter((e) => e.type === "message" && e.level === "warning");
    // One line for the channel, not one per notice: after the first failure it is not tried again.
    expect(refused).toHaveLength(1);
    expect(h.logText()).toMatch(
      new RegExp(
        `webhook http://127\\.0\\.0\\.1:${downPort}/t5 failed .*ECONNREFUSED.*2 notices will be retried`,
      ),
    );

    h.clock.advance(HOUR);
    expect((await h.alerter.update([runFailed, rpo])).fired).toEqual([]);
    expect(mailsTo("t5@example.com")).toHaveLength(2);

    const late = await startHttp(downPort);
    try {
      h.clock.advance(HOUR);
      expect((await h.alerter.update([runFailed, rpo])).fired.sort()).toEqual([rpo.key, runFailed.key]);
      expect(late.hits.map((x) => json(x).key).sort()).toEqual([rpo.key, runFailed.key]);
      expect(mailsTo("t5@example.com")).toHaveLength(2);
      expect(await h.alerter.update([])).toEqual({ fired: [], recovered: expect.arrayContaining([rpo.key]) });
      expect(late.hits.filter((x) => json(x).type === "recovery")).toHaveLength(2);
      expect(
        mailsTo("t5@example.com").filter((m) => m.subject.startsWith("[bulwark] recovered:")),
      ).toHaveLength(2);
    } finally {
      await late.close();
    }
  });

  it("retries a recovery the mail server missed, and alerts again when the condition comes back first", async () => {
    const port = await freePort();
    let server = await startSmtp(cert, { port });
    const config = alertsOf(`alerts:
${emailYaml("t6@example.com", port)}`);
    const h = harness(config);
    try {
      expect((await h.alerter.update([runFailed])).fired).toEqual([runFailed.key]);
      await server.close();

      h.clock.advance(HOUR);
      expect(await h.alerter.update([])).toEqual({ fired: [], recovered: [] });
      expect(h.logText()).toMatch(
        /email t6@example\.com via 127\.0\.0\.1:\d+ failed \(recovery run-failed.*ECONNREFUSED/,
      );

      server = await startSmtp(cert, { port });
      h.clock.advance(HOUR);
      expect(await h.alerter.update([])).toEqual({ fired: [], recovered: [runFailed.key] });
      expect(server.mails.map((m) => m.subject)).toEqual([`[bulwark] recovered: ${runFailed.summary}`]);

      // It fails again, the server misses the recovery, and it comes back before the server does: the
      // channel still holds the alert, so it gets nothing new; when it clears, the recovery goes.
      expect((await h.alerter.update([runFailed])).fired).toEqual([runFailed.key]);
      await server.close();
      await h.alerter.update([]);
      server = await startSmtp(cert, { port });
      expect((await h.alerter.update([runFailed])).fired).toEqual([]);
      expect(server.mails).toHaveLength(0);
      expect((await h.alerter.update([])).recovered).toEqual([runFailed.key]);
      expect(server.mails.map((m) => m.subject)).toEqual([`[bulwark] recovered: ${runFailed.summary}`]);
    } finally {
      await server.close();
    }
  });

  it("gives up on a webhook that does not answer in time, or answers an error, and tries it again later", async () => {
    http.answer.set("/t7-hang", "hang");
    http.answer.set("/t7-error", 500);
    const config = alertsOf(`alerts:
  webhooks:
    - { url: "http://127.0.0.1:${http.port}/t7-hang" }
    - { url: "http://127.0.0.1:${http.port}/t7-error" }
`);
    const h = harness(config, { timeoutMs: 300 });
    const started = performance.now();
    expect((await h.alerter.update([runFailed])).fired).toEqual([]);
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(h.logText()).toMatch(/t7-hang failed .*no answer within 0\.3 s/);
    expect(h.logText()).toMatch(/t7-error failed .*answered HTTP 500: nope/);

    http.answer.set("/t7-hang", 200);
    http.answer.set("/t7-error", 204);
    expect((await h.alerter.update([runFailed])).fired).toEqual([runFailed.key]);
    expect(hitsAt("/t7-hang")).toHaveLength(2);
    expect(hitsAt("/t7-error")).toHaveLength(2);
    expect((await h.alerter.update([runFailed])).fired).toEqual([]);
  });

  it("runs a command with the notice as JSON on standard input, BULWARK_ALERT_* variables and a scrubbed environment", async () => {
    const out = join(dir, "t8-stdin.jsonl");
    const envOut = join(dir, "t8-env.txt");
    const config = alertsOf(`alerts:
  commands:
    - { command: "cat >> ${out}; env > ${envOut}", env: [EXTRA_VAR] }
`);
    const h = harness(config);
    expect((await h.alerter.update([runFailed])).fired).toEqual([runFailed.key]);
    const [notice] = await lines(out);
    expect(notice).toEqual({
      type: "alert",
      key: runFailed.key,
      kind: "run-failed",
      severity: "critical",
      summary: runFailed.summary,
      details: runFailed.details,
      time: START,
      host: "backup-1",
      since: START,
    });
    const vars = Object.fromEntries(
      (await readFile(envOut, "utf8"))
        .split("\n")
        .filter((l) => l.includes("="))
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    expect(vars).toMatchObject({
      BULWARK_ALERT_TYPE: "alert",
      BULWARK_ALERT_KEY: runFailed.key,
      BULWARK_ALERT_KIND: "run-failed",
      BULWARK_ALERT_SEVERITY: "critical",
      BULWARK_ALERT_SUMMARY: runFailed.summary,
      BULWARK_ALERT_HOST: "backup-1",
      BULWARK_ALERT_SINCE: START,
      EXTRA_VAR: "passed-through",
    });
    expect(vars.BULWARK_PASSWORD).toBeUndefined();
    expect(vars.HOOK_SECRET).toBeUndefined();

    // A command that fails: logged with its standard error, and run again at the next update.
    const marker = join(dir, "t8-fail-count");
    const failing = harness(
      alertsOf(`alerts:
  commands:
    - { command: "echo run >> ${marker}; echo 'pager is down' >&2; exit 3" }
`),
    );
    expect((await failing.alerter.update([rpo])).fired).toEqual([]);
    expect(failing.logText()).toMatch(/exited with code 3.*\n.*pager is down/);
    await failing.alerter.update([rpo]);
    expect((await readFile(marker, "utf8")).trim().split("\n")).toEqual(["run", "run"]);
  });

  it("pings a job's URLs on start, success and fail, and only logs a ping that fails", async () => {
    const downPort = await freePort();
    const config = alertsOf(`alerts:
  pings:
    app:
      start: "http://127.0.0.1:${http.port}/ping/app/start"
      success: "http://127.0.0.1:${http.port}/ping/app"
      fail: "http://127.0.0.1:${http.port}/ping/app/fail"
    db: { fail: { env: PING_URL }, start: "http://127.0.0.1:${downPort}/ping/db/start" }
`);
    const h = harness(config, { secrets: ["s3cret-bulwark"] });
    await h.alerter.ping("app", "start");
    await h.alerter.ping("app", "success");
    await h.alerter.ping("app", "fail", "backup failed: wrong password s3cret-bulwark");
    await h.alerter.ping("db", "success"); // no URL for it
    await h.alerter.ping("nightly", "start"); // not a pinged job
    await h.alerter.ping("db", "fail");
    await h.alerter.ping("db", "start"); // refused: logged, not thrown
    const pings = http.hits.filter((x) => x.path.startsWith("/ping/"));
    expect(pings.map((p) => [p.method, p.path])).toEqual([
      ["GET", "/ping/app/start"],
      ["GET", "/ping/app"],
      ["POST", "/ping/app/fail"],
      ["GET", `/ping/db/${URL_TOKEN}/fail`],
    ]);
    expect(pings[2]!.body).toBe("backup failed: wrong password ***");
    expect(h.logText()).toMatch(/the start ping of job db failed: connect ECONNREFUSED/);
    expect(secretsIn(h.logText())).toEqual([]);
  });

  it("test() sends a test notice on every channel and says which failed", async () => {
    const downPort = await freePort();
    const out = join(dir, "t10-command.jsonl");
    const implicit = await startSmtp(cert, { secure: true });
    try {
      const config = alertsOf(`alerts:
  webhooks:
    - { url: "http://127.0.0.1:${http.port}/t10", secret: { env: HOOK_SECRET } }
    - { url: "http://127.0.0.1:${downPort}/t10-down" }
  email:
    host: 127.0.0.1
    port: ${implicit.port}
    tls: true
    ca: ${certFile}
    user: ${SMTP_USER}
    password: { file: ${passwordFile} }
    from: bulwark@example.com
    to: [t10@example.com]
  commands:
    - { command: "cat >> ${out}" }
`);
      const h = harness(config);
      const results = await h.alerter.test();
      expect(results.map((r) => [r.channel, r.ok])).toEqual([
        [`webhook http://127.0.0.1:${http.port}/t10`, true],
        [`webhook http://127.0.0.1:${downPort}/t10-down`, false],
        [`email t10@example.com via 127.0.0.1:${implicit.port}`, true],
        [`command cat >> ${out}`, true],
      ]);
      expect(results[1]!.error).toMatch(/ECONNREFUSED/);
      expect(json(hitsAt("/t10")[0]!)).toMatchObject({ type: "test", key: "test", host: "backup-1" });
      const [mail] = mailsTo("t10@example.com", implicit);
      expect(mail!.secure).toBe(true);
      expect(mail!.subject).toBe("[bulwark] test: test notification from bulwark on backup-1");
      expect((await lines(out))[0]).toMatchObject({ type: "test" });
      // A test changes no state: the next update alerts as usual.
      expect((await h.alerter.update([rpo])).fired).toEqual([rpo.key]);
    } finally {
      await implicit.close();
    }
  });

  it("puts no secret in its logs: a refused SMTP login, a URL that is a credential, a command that echoes one", async () => {
    const wrongFile = join(dir, "wrong.pw");
    await writeFile(wrongFile, "wrong-pass-31\n", { mode: 0o600 });
    const downPort = await freePort();
    const config = alertsOf(`alerts:
  webhooks:
    - { url: { env: HOOK_URL } }
    - { url: "http://127.0.0.1:${downPort}/x?token=abc123", secret: { env: HOOK_SECRET } }
  email:
    host: 127.0.0.1
    port: ${smtp.port}
    ca: ${certFile}
    user: ${SMTP_USER}
    password: { file: ${wrongFile} }
    from: bulwark@example.com
    to: [t11@example.com]
  commands:
    - { command: "echo \\"leaking $ECHOED\\" >&2; exit 1", env: [ECHOED] }
`);
    env.ECHOED = "echoed-secret-66";
    try {
      http.answer.set(`/by-ref/${URL_TOKEN}`, 503);
      const h = harness(config, { secrets: ["echoed-secret-66"] });
      expect((await h.alerter.update([runFailed])).fired).toEqual([]);
      const log = h.logText();
      expect(smtp.logins).toContainEqual({ user: SMTP_USER, ok: false });
      expect(log).toMatch(/email t11@example\.com .* failed .*Invalid login/);
      expect(log).toMatch(/webhook env:HOOK_URL failed .*answered HTTP 503/);
      expect(log).toMatch(/webhook http:\/\/127\.0\.0\.1:\d+\/x \(query hidden\) failed .*ECONNREFUSED/);
      expect(log).toMatch(/leaking \*\*\*/);
      // The URL's user info went as Basic authentication, not in the request line.
      const byRef = hitsAt(`/by-ref/${URL_TOKEN}`)[0]!;
      expect(byRef.headers.authorization).toBe(
        `Basic ${Buffer.from(`hook:${URL_TOKEN}`).toString("base64")}`,
      );
      expect(secretsIn(log)).toEqual([]);
      expect(log).not.toContain("abc123");
      const results = await h.alerter.test();
      expect(results.every((r) => !r.ok)).toBe(true);

      // A summary or detail that carries a given secret leaves the host with *** in its place.
      const leaky = harness(
        alertsOf(`alerts:\n  webhooks: [{ url: "http://127.0.0.1:${http.port}/t11" }]\n`),
        {
          secrets: ["s3cret-bulwark"],
        },
      );
      await leaky.alerter.update([
        { ...rpo, summary: "open failed: s3cret-bulwark", details: { tried: ["s3cret-bulwark"] } },
      ]);
      expect(json(hitsAt("/t11")[0]!)).toMatchObject({
        summary: "open failed: ***",
        details: { tried: ["***"] },
      });
      expect(secretsIn(await readFile(leaky.stateFile, "utf8"))).toEqual([]);
      expect(secretsIn(JSON.stringify(results))).toEqual([]);
      expect(secretsIn(h.logText())).toEqual([]);
      expect(mailsTo("t11@example.com")).toHaveLength(0);
    } finally {
      delete env.ECHOED;
    }
  });
});
