/**
 * The daemon's alerts end to end: a job every 2 s backs up to a local target and copies to an SFTP "NAS"
 * (the real sshd, reached through a TCP relay this test opens and closes). While the NAS is down, the copy
 * fails: one webhook (signed with HMAC-SHA256) and one e-mail (a real SMTP server, smtp-server, on loopback)
 * for the condition, and nothing more while it lasts; when the NAS is back, one recovery notice on each. A
 * dataset beyond its RPO and a slow job that misses its schedule each alert too.
 */
import { createHmac } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { createServer as createHttpServer } from "node:http";
import { join } from "node:path";

import { SMTPServer } from "smtp-server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { freePort, startService } from "../helpers/services.js";
import { CLI, describeRun, makeTempDir, removeTempDirs, runCli, spawnNode, writeFiles } from "./helpers.js";

interface Notice {
  type: string;
  key: string;
  kind: string;
  summary: string;
}

let base: string;
let env: Record<string, string>;
let relayPort: number;
let relay: Server | undefined;
const sockets = new Set<Socket>();
const hooks: { notice: Notice; signature: string | undefined; raw: string }[] = [];
const mails: { subject: string; text: string }[] = [];
let httpPort: number;
let smtpPort: number;
let closeReceivers: (() => Promise<void>) | undefined;
let daemon: ReturnType<typeof spawnNode> | undefined;
const SECRET = "hook-signing-secret";

/** The NAS comes back: a relay from relayPort to the real sshd. */
async function nasUp(): Promise<void> {
  relay = createServer((client) => {
    const server = connect(Number(process.env.SFTP_PORT), "127.0.0.1");
    sockets.add(client).add(server);
    client.pipe(server).pipe(client);
    const drop = () => {
      client.destroy();
      server.destroy();
      sockets.delete(client);
      sockets.delete(server);
    };
    client.on("error", drop).on("close", drop);
    server.on("error", drop).on("close", drop);
  });
  await new Promise<void>((resolve) => relay!.listen(relayPort, "127.0.0.1", resolve));
}

/** The NAS goes down: no more connections, and the open ones cut. */
async function nasDown(): Promise<void> {
  const r = relay;
  relay = undefined;
  for (const s of sockets) s.destroy();
  sockets.clear();
  await new Promise<void>((resolve) => (r ? r.close(() => resolve()) : resolve()));
}

async function waitFor(what: string, ok: () => boolean, ms = 30_000): Promise<void> {
  for (let waited = 0; waited < ms; waited += 100) {
    if (ok()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}; webhooks: ${JSON.stringify(hooks.map((h) => h.notice))}`);
}

const of = (type: string, key: string) => hooks.filter((h) => h.notice.type === type && h.notice.key === key);
const COPY_KEY = "run-failed:job:app:copy:nas";

beforeAll(async () => {
  await startService("sshd", "SFTP_KEY");
  base = await makeTempDir("daemon-alerts");
  relayPort = await freePort();
  // The relay's address has its own known_hosts entry: the same host key as the real server's.
  const known = (await readFile(process.env.SFTP_KNOWN_HOSTS!, "utf8"))
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => `[127.0.0.1]:${relayPort} ${l.split(" ").slice(1).join(" ")}`)
    .join("\n");
  await writeFile(join(base, "known_hosts"), `${known}\n`);

  const http = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const raw = Buffer.concat(chunks).toString("utf8");
      const header = req.headers["x-bulwark-signature"];
      hooks.push({
        notice: JSON.parse(raw) as Notice,
        signature: typeof header === "string" ? header : undefined,
        raw,
      });
      res.end("ok");
    });
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  httpPort = (http.address() as AddressInfo).port;
  const smtp = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS"],
    disableReverseLookup: true,
    logger: false,
    onData(stream, _session, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        const raw = Buffer.concat(chunks).toString("utf8");
        mails.push({ subject: /^subject: (.*)$/im.exec(raw)?.[1] ?? "", text: raw });
        callback();
      });
    },
  });
  smtpPort = await freePort();
  await new Promise<void>((resolve) => smtp.listen(smtpPort, "127.0.0.1", resolve));
  closeReceivers = async () => {
    await new Promise<void>((resolve) => http.close(() => resolve()));
    await new Promise<void>((resolve) => smtp.close(() => resolve()));
  };

  env = {
    BULWARK_CATALOG: join(base, "state", "catalog.db"),
    HOME: base,
    HOOK_SECRET: SECRET,
  };
  await writeFile(join(base, "pw"), "daemon-alerts-password\n");
  await writeFiles(join(base, "src", "app"), { "a.txt": "alpha\n" });
  await writeFiles(join(base, "src", "stale"), { "s.txt": "old\n" });
  await writeFiles(join(base, "src", "slow"), { "c.txt": "slow\n" });
  const apiPort = await freePort();
  const local = (t: string) =>
    `  ${t}: { location: ${base}/${t}, labels: { medium: disk, site: a, failureDomain: ${t} }, password: { file: ${base}/pw } }`;
  await writeFile(
    join(base, "bulwark.yaml"),
    `version: 1
targets:
${local("local")}
  nas:
    location: sftp:${process.env.SFTP_USER}@127.0.0.1:${relayPort}${process.env.SFTP_ROOT}/alerts-${Date.now().toString(36)}
    labels: { medium: disk, site: b, failureDomain: nas }
    password: { file: ${base}/pw }
    credentials:
      privateKey: { file: ${process.env.SFTP_KEY} }
      knownHosts: { file: ${base}/known_hosts }
datasets:
  app: { sources: [{ type: files, paths: ["${base}/src/app"] }] }
  stale: { sources: [{ type: files, paths: ["${base}/src/stale"] }] }
  slow: { sources: [{ type: files, paths: ["${base}/src/slow"] }], hooks: { before: "sleep 2.5" } }
policies:
  p: { rule: { copies: 1 }, rpo: 24h }
  tight: { rule: { copies: 1 }, rpo: 3s }
jobs:
  app: { dataset: app, policy: p, primary: local, copies: [nas], schedule: "@every 2s" }
  stale: { dataset: stale, policy: tight, primary: local }
  slow: { dataset: slow, policy: p, primary: local, schedule: "@every 1s" }
daemon:
  listen: 127.0.0.1:${apiPort}
  targetConcurrency: 4
  retries: { attempts: 0 }
alerts:
  webhooks: [{ url: "http://127.0.0.1:${httpPort}/hook", secret: { env: HOOK_SECRET } }]
  email: { host: 127.0.0.1, port: ${smtpPort}, from: bulwark@example.test, to: [ops@example.test] }
`,
  );
  await nasUp();
  const init = await runCli(["run", "--init", "-c", join(base, "bulwark.yaml"), "app", "stale"], { env });
  expect(init.code, describeRun(["run", "--init"], init)).toBe(0);
}, 300_000);

afterAll(async () => {
  daemon?.child.kill("SIGKILL");
  await nasDown();
  await closeReceivers?.();
  await removeTempDirs();
});

describe("daemon alerts", () => {
  it("a copy target going down alerts once on each channel, and its return sends one recovery", async () => {
    daemon = spawnNode([CLI, "daemon", "-c", join(base, "bulwark.yaml")], { env, timeoutMs: 300_000 });
    // The RPO of `stale` (3 s) passes: one alert; the slow job misses its schedule: one alert.
    await waitFor("the RPO alert", () => of("alert", "rpo:stale:local").length > 0);
    await waitFor("the missed-schedule alert", () => of("alert", "missed:job:slow").length > 0);
    expect(of("alert", "rpo:stale:local")[0]!.notice).toMatchObject({ kind: "rpo" });
    expect(of("alert", COPY_KEY)).toHaveLength(0);

    await nasDown();
    await waitFor("the copy alert", () => of("alert", COPY_KEY).length > 0);
    // Several more runs fail while the NAS is down: no second alert.
    await new Promise((r) => setTimeout(r, 7_000));
    expect(of("alert", COPY_KEY)).toHaveLength(1);
    const alert = of("alert", COPY_KEY)[0]!;
    expect(alert.notice.summary).toContain("copy of app to nas failed");
    expect(alert.signature).toBe(`sha256=${createHmac("sha256", SECRET).update(alert.raw).digest("hex")}`);
    await waitFor("the copy alert's e-mail", () =>
      mails.some((m) => m.text.includes("copy of app to nas failed")),
    );
    expect(
      mails.filter((m) => /CRITICAL|WARNING/i.test(m.subject) && m.text.includes("copy of app to nas"))
        .length,
    ).toBe(1);

    await nasUp();
    await waitFor("the recovery", () => of("recovery", COPY_KEY).length > 0);
    await new Promise((r) => setTimeout(r, 4_500));
    expect(of("recovery", COPY_KEY)).toHaveLength(1);
    expect(of("alert", COPY_KEY)).toHaveLength(1);
    await waitFor("the recovery e-mail", () =>
      mails.some((m) => /recovered/i.test(m.subject) && m.text.includes("copy of app")),
    );
    expect(mails.filter((m) => /recovered/i.test(m.subject) && m.text.includes("copy of app")).length).toBe(
      1,
    );

    daemon.child.kill("SIGTERM");
    const result = await daemon.result;
    expect(result.code, result.stderr).toBe(0);
    // The log says what was sent, and never the webhook's secret.
    expect(result.stderr).not.toContain(SECRET);
  }, 180_000);
});
