/**
 * Health checks of recovered services (src/dr/health.ts) against real servers on 127.0.0.1: an HTTP server
 * started here (status, body, one that turns healthy after a few requests, one that never answers), a TCP
 * listener and a closed port, programs, a SQLite file, a real PostgreSQL (test/sources/pg-helpers.ts, with a
 * password-protected role; under CI=true a missing PostgreSQL fails), a stand-in `psql` that records how it
 * was started, and, as root where `ip netns add` works, a server inside a named network namespace.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer as createHttpServer, type Server } from "node:http";
import { createServer as createTcpServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";

import type { HealthCheck } from "../../src/config/types.js";
import { systemClock } from "../../src/core/clock.js";
import { remapPorts, runHealthCheck, type HealthContext } from "../../src/dr/health.js";
import { postgresAvailable, startTestPostgres, type TestPostgres } from "../sources/pg-helpers.js";

const PG_PORT = "55446";
const BASE_ENV = { PATH: process.env.PATH, HOME: process.env.HOME };

let dir: string;
let server: Server;
let httpPort: number;
let tcpServer: ReturnType<typeof createTcpServer>;
let tcpPort: number;
let closedPort: number;
/** Requests /flaky has had: it answers 503 to the first FLAKY_UNTIL - 1 of each round. */
let flakyCount = 0;
const FLAKY_UNTIL = 3;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bulwark-health-"));
  server = createHttpServer((req, res) => {
    switch (req.url) {
      case "/ok":
        res.writeHead(200, { "content-type": "text/plain" }).end("status: all ok\n");
        return;
      case "/down":
        res.writeHead(503).end("maintenance");
        return;
      case "/created":
        res.writeHead(201).end("made");
        return;
      case "/long":
        res.writeHead(200).end("x".repeat(1000) + "tail-marker");
        return;
      case "/flaky":
        flakyCount++;
        if (flakyCount < FLAKY_UNTIL) res.writeHead(503).end("starting");
        else res.writeHead(200).end("ready");
        return;
      case "/hang":
        return; // never answers
      default:
        res.writeHead(404).end("no such page");
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  httpPort = (server.address() as AddressInfo).port;
  tcpServer = createTcpServer((s) => s.end());
  await new Promise<void>((r) => tcpServer.listen(0, "127.0.0.1", r));
  tcpPort = (tcpServer.address() as AddressInfo).port;
  closedPort = await freePort();
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  await new Promise((r) => tcpServer.close(r));
  await rm(dir, { recursive: true, force: true });
});

/** A port nothing listens on (just released by a listener of our own). */
async function freePort(): Promise<number> {
  const s = createTcpServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

const common = { timeoutMs: 2000, retries: 0, intervalMs: 0 };

function ctx(extra: Partial<HealthContext> = {}): HealthContext {
  return { clock: systemClock, env: BASE_ENV, ...extra };
}

type HttpCheck = Extract<HealthCheck, { type: "http" }>;
type SqlCheck = Extract<HealthCheck, { type: "sql" }>;

function http(path: string, extra: Partial<HttpCheck> = {}): HttpCheck {
  return {
    name: `http ${path}`,
    type: "http",
    url: `http://127.0.0.1:${httpPort}${path}`,
    status: 200,
    ...common,
    ...extra,
  };
}

function command(argv: string[], extra: Partial<HealthCheck> = {}): HealthCheck {
  return {
    name: "cmd",
    type: "command",
    command: argv,
    passEnv: [],
    setEnv: {},
    ...common,
    ...extra,
  } as HealthCheck;
}

describe("remapPorts", () => {
  const map = new Map([
    [5432, 15432],
    [80, 18080],
    [443, 18443],
    [8080, 18081],
  ]);
  const base = { name: "c", ...common };

  it("rewrites a tcp check's port, and leaves one not in the map alone (the same object)", () => {
    expect(remapPorts({ ...base, type: "tcp", host: "127.0.0.1", port: 5432 }, map)).toMatchObject({
      port: 15432,
    });
    const other: HealthCheck = { ...base, type: "tcp", host: "127.0.0.1", port: 22 };
    expect(remapPorts(other, map)).toBe(other);
  });

  it("rewrites the port of an http URL, also the scheme's default one", () => {
    const at = (url: string): string =>
      (remapPorts({ ...base, type: "http", url, status: 200 }, map) as { url: string }).url;
    expect(at("http://127.0.0.1:8080/health?x=1")).toBe("http://127.0.0.1:18081/health?x=1");
    expect(at("http://app.internal/health")).toBe("http://app.internal:18080/health");
    expect(at("https://app.internal/")).toBe("https://app.internal:18443/");
    expect(at("http://127.0.0.1:9000/health")).toBe("http://127.0.0.1:9000/health");
    expect(at("not a url")).toBe("not a url");
  });

  it("rewrites the port of a PostgreSQL URL (explicit, default, ?port=) and of a conninfo string", () => {
    const at = (postgres: string): string | undefined =>
      (
        remapPorts({ ...base, type: "sql", postgres, query: "SELECT 1", expect: "1" }, map) as {
          postgres?: string;
        }
      ).postgres;
    expect(at("postgresql://app@db.internal:5432/shop")).toBe("postgresql://app@db.internal:15432/shop");
    expect(at("postgres://app@db.internal/shop")).toBe("postgres://app@db.internal:15432/shop");
    expect(at("postgresql:///shop?host=/run/pg&port=5432")).toBe(
      "postgresql:///shop?host=%2Frun%2Fpg&port=15432",
    );
    expect(at("postgresql://app@db.internal:6543/shop")).toBe("postgresql://app@db.internal:6543/shop");
    expect(at("host=127.0.0.1 port=5432 dbname=shop")).toBe("host=127.0.0.1 port=15432 dbname=shop");
  });

  it("leaves command and SQLite checks alone", () => {
    const cmd = command(["true"]);
    expect(remapPorts(cmd, map)).toBe(cmd);
    const lite: HealthCheck = { ...base, type: "sql", sqlite: "/x.db", query: "SELECT 1", expect: "1" };
    expect(remapPorts(lite, map)).toBe(lite);
  });
});

describe("tcp", () => {
  it("passes when the port accepts a connection", async () => {
    const r = await runHealthCheck(
      { name: "db port", type: "tcp", host: "127.0.0.1", port: tcpPort, ...common },
      ctx(),
    );
    expect(r).toMatchObject({ name: "db port", type: "tcp", ok: true, attempts: 1 });
    expect(r.message).toBe(`127.0.0.1:${tcpPort} accepted a connection`);
  });

  it("fails on a closed port after 1 + retries attempts, intervalMs apart", async () => {
    const slept: number[] = [];
    const r = await runHealthCheck(
      {
        name: "closed",
        type: "tcp",
        host: "127.0.0.1",
        port: closedPort,
        ...common,
        retries: 2,
        intervalMs: 250,
      },
      ctx({ sleep: (ms) => Promise.resolve(void slept.push(ms)) }),
    );
    expect(r.ok).toBe(false);
    expect(r.attempts).toBe(3);
    expect(slept).toEqual([250, 250]);
    expect(r.message).toBe(`127.0.0.1:${closedPort} refused the connection (after 3 attempts)`);
  });

  it("probes the remapped port when a portMap is given", async () => {
    const check: HealthCheck = { name: "moved", type: "tcp", host: "127.0.0.1", port: closedPort, ...common };
    expect((await runHealthCheck(check, ctx())).ok).toBe(false);
    const r = await runHealthCheck(check, ctx({ portMap: new Map([[closedPort, tcpPort]]) }));
    expect(r.ok).toBe(true);
    expect(r.message).toContain(`:${tcpPort}`);
  });
});

describe("http", () => {
  it("passes on the expected status and body substring", async () => {
    const r = await runHealthCheck(http("/ok", { body: "all ok" }), ctx());
    expect(r).toMatchObject({ ok: true, attempts: 1, type: "http" });
    expect(r.message).toBe(`http://127.0.0.1:${httpPort}/ok answered 200 with "all ok" in its body`);
    expect(r.output).toBe("status: all ok\n");
  });

  it("compares the status: 503 is not 200, and 201 passes where 201 is expected", async () => {
    const down = await runHealthCheck(http("/down"), ctx());
    expect(down.ok).toBe(false);
    expect(down.message).toBe(`http://127.0.0.1:${httpPort}/down answered 503, expected 200`);
    expect((await runHealthCheck(http("/created"), ctx())).ok).toBe(false);
    expect((await runHealthCheck(http("/created", { status: 201 }), ctx())).ok).toBe(true);
  });

  it("says what the body held when the substring is missing (its first 200 characters)", async () => {
    const r = await runHealthCheck(http("/ok", { body: "healthy" }), ctx());
    expect(r.ok).toBe(false);
    expect(r.message).toContain('does not contain "healthy" (got: "status: all ok\\n")');
    const long = await runHealthCheck(http("/long", { body: "nope" }), ctx());
    expect(long.message).toContain(`(got: "${"x".repeat(200)}...")`);
    expect(long.message).not.toContain("tail-marker");
    // ... while a substring anywhere in the body is found.
    expect((await runHealthCheck(http("/long", { body: "tail-marker" }), ctx())).ok).toBe(true);
  });

  it("retries until the service turns healthy", async () => {
    flakyCount = 0;
    const slept: number[] = [];
    const r = await runHealthCheck(
      http("/flaky", { retries: 5, intervalMs: 100, body: "ready" }),
      ctx({ sleep: (ms) => Promise.resolve(void slept.push(ms)) }),
    );
    expect(r.ok).toBe(true);
    expect(r.attempts).toBe(FLAKY_UNTIL);
    expect(flakyCount).toBe(FLAKY_UNTIL);
    expect(slept).toEqual([100, 100]);
    expect(r.message).toContain(`(attempt ${FLAKY_UNTIL})`);

    flakyCount = 0;
    const tooFew = await runHealthCheck(http("/flaky", { retries: 1, intervalMs: 10 }), ctx());
    expect(tooFew.ok).toBe(false);
    expect(tooFew.attempts).toBe(2);
    expect(tooFew.message).toBe(
      `http://127.0.0.1:${httpPort}/flaky answered 503, expected 200 (after 2 attempts)`,
    );
  });

  it("gives up on a server that never answers after timeoutMs", async () => {
    const started = Date.now();
    const r = await runHealthCheck(http("/hang", { timeoutMs: 300, retries: 1, intervalMs: 50 }), ctx());
    const took = Date.now() - started;
    expect(r.ok).toBe(false);
    expect(r.attempts).toBe(2);
    expect(r.message).toBe(
      `http://127.0.0.1:${httpPort}/hang: 127.0.0.1:${httpPort} did not answer within 0.3 s (after 2 attempts)`,
    );
    expect(took).toBeGreaterThanOrEqual(600);
    expect(took).toBeLessThan(3000);
    expect(r.durationMs).toBeGreaterThanOrEqual(600);
  });

  it("stops at once when the run is interrupted, without further attempts", async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const started = Date.now();
    const r = await runHealthCheck(
      http("/hang", { timeoutMs: 10_000, retries: 5, intervalMs: 1000 }),
      ctx({ signal: controller.signal }),
    );
    expect(Date.now() - started).toBeLessThan(2000);
    expect(r.ok).toBe(false);
    expect(r.attempts).toBe(1);
    expect(r.message).toBe(
      `interrupted (last attempt: http://127.0.0.1:${httpPort}/hang: 127.0.0.1:${httpPort}: interrupted)`,
    );
  });

  it("names a refused connection", async () => {
    const r = await runHealthCheck({ ...http("/"), url: `http://127.0.0.1:${closedPort}/health` }, ctx());
    expect(r.message).toBe(
      `http://127.0.0.1:${closedPort}/health: 127.0.0.1:${closedPort} refused the connection`,
    );
  });

  it("probes the remapped port of the URL", async () => {
    const r = await runHealthCheck(
      { ...http("/ok"), url: `http://127.0.0.1:${closedPort}/ok` },
      ctx({ portMap: new Map([[closedPort, httpPort]]) }),
    );
    expect(r.ok).toBe(true);
    expect(r.message).toContain(`127.0.0.1:${httpPort}/ok answered 200`);
  });
});

describe("command", () => {
  it("passes on exit 0 and keeps the output", async () => {
    const r = await runHealthCheck(command(["sh", "-c", "echo checked; echo warn >&2"]), ctx());
    expect(r).toMatchObject({ ok: true, attempts: 1, type: "command", message: "exited with code 0" });
    expect(r.output).toBe("checked\nwarn");
  });

  it("fails on another exit code, with the last line it printed", async () => {
    const r = await runHealthCheck(
      command(["sh", "-c", "echo first; echo 'db not ready' >&2; exit 3"]),
      ctx(),
    );
    expect(r.ok).toBe(false);
    expect(r.message).toBe("exited with code 3: db not ready");
    expect(r.output).toBe("first\ndb not ready");
  });

  it("keeps only the tail of a long output", async () => {
    const r = await runHealthCheck(
      command([
        "sh",
        "-c",
        "i=0; while [ $i -lt 2000 ]; do echo line-$i-padding-padding; i=$((i+1)); done; exit 1",
      ]),
      ctx(),
    );
    expect(r.ok).toBe(false);
    expect(r.output!.length).toBeLessThanOrEqual(8 * 1024);
    expect(r.output!.endsWith("line-1999-padding-padding")).toBe(true);
    expect(r.output).not.toContain("line-0-");
    expect(r.message).toBe("exited with code 1: line-1999-padding-padding");
  });

  it("kills the whole process group on timeout", async () => {
    const pidFile = join(dir, "bg.pid");
    const r = await runHealthCheck(
      command(["sh", "-c", `sleep 30 & echo $! > ${pidFile}; wait`], { timeoutMs: 400 }),
      ctx(),
    );
    expect(r.ok).toBe(false);
    expect(r.message).toBe("timed out after 0.4 s and was killed");
    const pid = Number((await readFile(pidFile, "utf8")).trim());
    expect(pid).toBeGreaterThan(0);
    expect(await goneWithin(pid, 3000)).toBe(true);
  });

  it("gets a scrubbed environment: named and set variables only, never BULWARK_PASSWORD", async () => {
    const env = { ...BASE_ENV, BULWARK_PASSWORD: "secret-repo-password", APP_MODE: "recovery", OTHER: "x" };
    const r = await runHealthCheck(
      command(
        [
          "sh",
          "-c",
          'echo "pw=${BULWARK_PASSWORD:-unset} mode=$APP_MODE other=${OTHER:-unset} fixed=$FIXED"; pwd',
        ],
        {
          passEnv: ["APP_MODE"],
          setEnv: { FIXED: "yes" },
          cwd: dir,
        },
      ),
      ctx({ env }),
    );
    expect(r.ok).toBe(true);
    expect(r.output).toBe(`pw=unset mode=recovery other=unset fixed=yes\n${dir}`);
  });

  it("fails (does not throw) when the program cannot be started", async () => {
    const r = await runHealthCheck(command(["/nonexistent/check-program"]), ctx());
    expect(r.ok).toBe(false);
    expect(r.message).toMatch(/^could not be started: .*ENOENT/);
  });
});

describe("sql on SQLite", () => {
  let db: string;
  beforeAll(() => {
    db = join(dir, "app.sqlite");
    const d = new Database(db);
    d.exec("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, note TEXT)");
    d.prepare("INSERT INTO items VALUES (?, ?, ?)").run(1, "apple", null);
    d.prepare("INSERT INTO items VALUES (?, ?, ?)").run(2, "pear", "ripe");
    d.close();
  });
  const lite = (query: string, expected: string): SqlCheck => ({
    name: "items",
    type: "sql",
    sqlite: db,
    query,
    expect: expected,
    ...common,
  });

  it("passes when the rows, columns joined by |, are the expected ones", async () => {
    const r = await runHealthCheck(
      lite("SELECT id, name, note FROM items ORDER BY id", "1|apple|\n2|pear|ripe\n"),
      ctx(),
    );
    expect(r.ok).toBe(true);
    expect(r.output).toBe("1|apple|\n2|pear|ripe");
  });

  it("fails with what it found", async () => {
    const r = await runHealthCheck(lite("SELECT count(*) FROM items", "3"), ctx());
    expect(r.ok).toBe(false);
    expect(r.message).toBe(`the query on ${db} returned "2", expected "3"`);
  });

  it("opens the file read-only and does not create a missing one", async () => {
    const del = await runHealthCheck(lite("DELETE FROM items", ""), ctx());
    expect(del.ok).toBe(false);
    expect(del.message).toMatch(/readonly/i);
    const d = new Database(db, { readonly: true });
    expect(d.prepare("SELECT count(*) AS n FROM items").get()).toEqual({ n: 2 });
    d.close();
    const missing = join(dir, "missing.sqlite");
    const r = await runHealthCheck({ ...lite("SELECT 1", "1"), sqlite: missing }, ctx());
    expect(r.ok).toBe(false);
    expect(r.message).toContain(`${missing} could not be opened`);
  });
});

describe("sql on PostgreSQL: the password only in psql's environment (a stand-in psql)", () => {
  const SECRET = `pw-${randomBytes(6).toString("hex")}`;
  let bin: string;
  let record: string;
  beforeAll(async () => {
    bin = await mkdtemp(join(dir, "bin-"));
    record = join(dir, "psql-record");
    await writeFile(
      join(bin, "psql"),
      `#!/bin/sh\nfor a in "$@"; do printf 'ARG %s\\n' "$a"; done > ${record}.argv\nenv > ${record}.env\nprintf '42|answer\\n'\n`,
    );
    await chmod(join(bin, "psql"), 0o755);
  });

  it("passes the password as PGPASSWORD, never in argv, and keeps other secrets out", async () => {
    const refs: unknown[] = [];
    const r = await runHealthCheck(
      {
        name: "answer",
        type: "sql",
        postgres: "postgresql://app@127.0.0.1:5432/shop",
        password: { env: "SHOP_DB_PASSWORD" },
        query: "SELECT 42, 'answer'",
        expect: "42|answer",
        ...common,
      },
      ctx({
        env: {
          PATH: `${bin}:${process.env.PATH}`,
          BULWARK_PASSWORD: "secret-repo",
          SHOP_DB_PASSWORD: SECRET,
          PGAPPNAME: "hc",
        },
        readSecret: (ref) => {
          refs.push(ref);
          return Promise.resolve(SECRET);
        },
        portMap: new Map([[5432, 15432]]),
      }),
    );
    expect(r.ok).toBe(true);
    expect(refs).toEqual([{ env: "SHOP_DB_PASSWORD" }]);
    const argv = await readFile(`${record}.argv`, "utf8");
    expect(argv).not.toContain(SECRET);
    expect(argv).toContain("ARG -X\nARG -A\nARG -t\n");
    expect(argv).toContain("ARG ON_ERROR_STOP=1\n");
    expect(argv).toContain("ARG postgresql://app@127.0.0.1:15432/shop\n");
    expect(argv).toContain("ARG SELECT 42, 'answer'\n");
    const env = (await readFile(`${record}.env`, "utf8")).split("\n");
    expect(env).toContain(`PGPASSWORD=${SECRET}`);
    expect(env).toContain("PGAPPNAME=hc"); // libpq's own family passes
    expect(env.some((l) => l.startsWith("BULWARK_PASSWORD="))).toBe(false);
    expect(env.some((l) => l.startsWith("SHOP_DB_PASSWORD="))).toBe(false);
  });

  it("fails without reading anything when the password cannot be read", async () => {
    const check: HealthCheck = {
      name: "answer",
      type: "sql",
      postgres: "postgresql://app@127.0.0.1/shop",
      password: { file: "/run/secrets/db" },
      query: "SELECT 1",
      expect: "1",
      ...common,
    };
    const env = { PATH: `${bin}:${process.env.PATH}` };
    const none = await runHealthCheck(check, ctx({ env }));
    expect(none).toMatchObject({ ok: false, attempts: 0 });
    expect(none.message).toBe("no way to read the password file:/run/secrets/db");
    const broken = await runHealthCheck(
      check,
      ctx({ env, readSecret: () => Promise.reject(new Error("ENOENT: no such file")) }),
    );
    expect(broken).toMatchObject({ ok: false, attempts: 0 });
    expect(broken.message).toBe("the password file:/run/secrets/db could not be read: ENOENT: no such file");
  });
});

const pgAvailable = postgresAvailable();

describe.skipIf(!pgAvailable)("sql on a real PostgreSQL", () => {
  let pg: TestPostgres;
  const ROLE = `health_${process.pid}`;
  const SECRET = `role-pw-${randomBytes(8).toString("hex")}`;
  let url: string;
  beforeAll(() => {
    pg = startTestPostgres("dr-health", PG_PORT);
    pg.psql("postgres", `CREATE ROLE ${ROLE} LOGIN PASSWORD '${SECRET}'`);
    url = `postgresql://${ROLE}@${pg.env.PGHOST}:${pg.env.PGPORT}/postgres`;
  }, 300_000);
  afterAll(() => {
    try {
      pg?.psql("postgres", `DROP ROLE IF EXISTS ${ROLE}`);
    } finally {
      pg?.stop();
    }
  });

  const sql = (query: string, expected: string, extra: Partial<HealthCheck> = {}): HealthCheck =>
    ({
      name: "db",
      type: "sql",
      postgres: url,
      password: { env: "DB_PW" },
      query,
      expect: expected,
      ...common,
      timeoutMs: 10_000,
      ...extra,
    }) as HealthCheck;
  const pgCtx = (password = SECRET): HealthContext =>
    ctx({ env: { ...BASE_ENV, DB_PW: password }, readSecret: () => Promise.resolve(password) });

  it("passes when the query prints what is expected (rows on lines, columns joined by |)", async () => {
    const r = await runHealthCheck(
      sql(
        "SELECT g, 'row ' || g, current_user FROM generate_series(1, 3) g",
        `1|row 1|${ROLE}\n2|row 2|${ROLE}\n3|row 3|${ROLE}`,
      ),
      pgCtx(),
    );
    expect(r.message).toContain("returned");
    expect(r.ok).toBe(true);
  });

  it("fails with what was expected and found", async () => {
    const r = await runHealthCheck(sql("SELECT 41 + 1", "43"), pgCtx());
    expect(r.ok).toBe(false);
    expect(r.message).toBe(`the query on ${url} returned "42", expected "43"`);
  });

  it("fails on a wrong password (the server really asks for one) without printing it", async () => {
    const wrong = `wrong-${randomBytes(4).toString("hex")}`;
    const r = await runHealthCheck(sql("SELECT 1", "1"), pgCtx(wrong));
    expect(r.ok).toBe(false);
    expect(r.message).toMatch(/^psql exited with code 2: .*password authentication failed/);
    expect(`${r.message}${r.output}`).not.toContain(wrong);
  });

  it("reports a query error", async () => {
    const r = await runHealthCheck(sql("SELECT * FROM no_such_table", ""), pgCtx());
    expect(r.ok).toBe(false);
    expect(r.message).toMatch(/no_such_table.*does not exist/);
  });

  it("probes the remapped port of the URL", async () => {
    const moved = url.replace(`:${pg.env.PGPORT}/`, `:${closedPort}/`);
    const refused = await runHealthCheck(sql("SELECT 1", "1", { postgres: moved }), pgCtx());
    expect(refused.ok).toBe(false);
    expect(refused.message).toMatch(/Connection refused/);
    const r = await runHealthCheck(sql("SELECT 1", "1", { postgres: moved }), {
      ...pgCtx(),
      portMap: new Map([[closedPort, Number(pg.env.PGPORT)]]),
    });
    expect(r.ok).toBe(true);
  });
});

/** As root where `ip netns add` works: probes run inside a named namespace. Otherwise skipped (not a tool). */
const NETNS = `bulwark-test-${process.pid}`;
const canNetns = ((): boolean => {
  if (process.getuid?.() !== 0) return false;
  try {
    execFileSync("ip", ["netns", "add", NETNS], { stdio: "ignore" });
    execFileSync("ip", ["-n", NETNS, "link", "set", "lo", "up"], { stdio: "ignore" });
    return true;
  } catch {
    try {
      execFileSync("ip", ["netns", "delete", NETNS], { stdio: "ignore" });
    } catch {
      // never made
    }
    return false;
  }
})();

describe.skipIf(!canNetns)("inside a network namespace", () => {
  let inside: ChildProcess;
  let port: number;
  beforeAll(async () => {
    port = await freePort(); // free on the host: the host's probe must find nothing there
    inside = spawn(
      "ip",
      [
        "netns",
        "exec",
        NETNS,
        process.execPath,
        "-e",
        `require("node:http").createServer((q, s) => s.end("inside ns")).listen(${port}, "127.0.0.1", () => console.log("up"))`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    await new Promise<void>((resolve, reject) => {
      inside.stdout!.once("data", () => resolve());
      inside.once("exit", (code) => reject(new Error(`the namespaced server exited with ${code}`)));
    });
  });
  afterAll(async () => {
    if (inside && inside.exitCode === null) {
      const gone = new Promise((r) => inside.once("exit", r));
      inside.kill("SIGKILL");
      await gone;
    }
    execFileSync("ip", ["netns", "delete", NETNS], { stdio: "ignore" });
  });

  it("http and tcp pass inside, while the same port on the host is refused", async () => {
    const check = { ...http("/"), url: `http://127.0.0.1:${port}/`, body: "inside ns" };
    const r = await runHealthCheck(check, ctx({ netns: NETNS }));
    expect(r.message).toBe(`http://127.0.0.1:${port}/ answered 200 with "inside ns" in its body`);
    expect(r.ok).toBe(true);
    const host = await runHealthCheck(check, ctx());
    expect(host.ok).toBe(false);
    expect(host.message).toContain("refused the connection");

    const tcp: HealthCheck = { name: "t", type: "tcp", host: "127.0.0.1", port, ...common };
    expect((await runHealthCheck(tcp, ctx({ netns: NETNS }))).ok).toBe(true);
    expect((await runHealthCheck(tcp, ctx())).ok).toBe(false);
    // ... and the host's listeners are out of reach from inside.
    const hostOnly = await runHealthCheck({ ...tcp, port: tcpPort }, ctx({ netns: NETNS }));
    expect(hostOnly.ok).toBe(false);
    expect(hostOnly.message).toBe(`127.0.0.1:${tcpPort} refused the connection`);
  });

  it("runs psql inside the namespace (a stand-in that prints the interfaces it sees)", async () => {
    const bin = await mkdtemp(join(dir, "ns-bin-"));
    await writeFile(join(bin, "psql"), "#!/bin/sh\nip -o link | cut -d: -f2 | tr -d ' '\n");
    await chmod(join(bin, "psql"), 0o755);
    const check: HealthCheck = {
      name: "ns sql",
      type: "sql",
      postgres: "postgresql://app@127.0.0.1/shop",
      query: "SELECT 1",
      expect: "lo",
      ...common,
    };
    const r = await runHealthCheck(
      check,
      ctx({ env: { ...BASE_ENV, PATH: `${bin}:${process.env.PATH}` }, netns: NETNS }),
    );
    expect(r.message).toBe('the query on postgresql://app@127.0.0.1/shop returned "lo"');
    expect(r.ok).toBe(true);
  });

  it("runs a command inside the namespace (only loopback there)", async () => {
    const r = await runHealthCheck(command(["sh", "-c", "ip -o link | cut -d: -f2"]), ctx({ netns: NETNS }));
    expect(r.ok).toBe(true);
    expect(r.output?.trim()).toBe("lo");
  });
});

/** Whether `pid` ended (a zombie not yet reaped by an init that is slow to do so counts as ended). */
async function goneWithin(pid: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  for (;;) {
    let state: string | undefined;
    try {
      state = (await readFile(`/proc/${pid}/stat`, "utf8")).replace(/^.*\) /s, "")[0];
    } catch {
      return true;
    }
    if (state === "Z") return true;
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}
