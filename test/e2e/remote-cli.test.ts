/**
 * The CLI against remote targets started on 127.0.0.1: a vault (`serve-repo`) reached with append-only and
 * admin tokens. Backup, restore and check go through the real command line, as a user would run them.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer } from "node:net";
import { join } from "node:path";
import { mkdir } from "node:fs/promises";
import {
  ROOT,
  TestRepo,
  describeRun,
  makeTempDir,
  randomData,
  removeTempDirs,
  runCli,
  scanTree,
  spawnNode,
  writeFiles,
} from "./helpers.js";

const VAULT = join(ROOT, "dist", "vault", "main.js");

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function addToken(tokens: string, name: string, role: string): Promise<string> {
  const args = [
    VAULT,
    "--json",
    "serve-repo",
    "token",
    "add",
    "--tokens",
    tokens,
    "--name",
    name,
    "--role",
    role,
  ];
  const r = await spawnNode(args).result;
  if (r.code !== 0) throw new Error(`token add failed: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { token: string }).token;
}

describe("CLI against a vault (rest:)", () => {
  let base: string;
  let vault: ReturnType<typeof spawnNode> | undefined;
  let location: string;
  let appendToken: string;
  let adminToken: string;

  beforeAll(async () => {
    base = await makeTempDir("remote-cli");
    const tokens = join(base, "tokens.json");
    appendToken = await addToken(tokens, "protected-host", "append-only");
    adminToken = await addToken(tokens, "admin", "admin");
    const port = await freePort();
    vault = spawnNode(
      [
        VAULT,
        "serve-repo",
        "--path",
        join(base, "vault"),
        "--listen",
        `127.0.0.1:${port}`,
        "--tokens",
        tokens,
        "--init",
        "--immutable",
        "off",
      ],
      {
        timeoutMs: 600_000,
      },
    );
    location = `rest:http://127.0.0.1:${port}/`;
    // Wait until it answers.
    for (let i = 0; i < 100; i++) {
      const r = await runCli(["-r", location, "snapshots"], {
        env: { BULWARK_REST_TOKEN: appendToken, BULWARK_PASSWORD: "x" },
      });
      if (!/TRANSIENT|ECONNREFUSED|connect/i.test(r.stderr)) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  });

  afterAll(async () => {
    vault?.child.kill("SIGTERM");
    await vault?.result.catch(() => undefined);
    await removeTempDirs();
  });

  it("backs up with the append-only token, restores byte-identically, and refuses to forget", async () => {
    const src = join(base, "src");
    await mkdir(src, { recursive: true });
    await writeFiles(src, {
      "a.txt": "hello vault\n",
      "dir/b.bin": randomData(3 * 1024 * 1024),
      "dir/c.txt": "x".repeat(10_000),
    });
    const env = { BULWARK_REST_TOKEN: appendToken };
    const repo = await TestRepo.init(location, { passwordFile: join(base, "pw"), run: { env } });
    const opts = { env };
    const first = await repo.json<{ snapshot: string }>(["backup", src], opts);
    const target = join(base, "restore");
    const restore = await repo.run(["restore", first.snapshot, "--target", target], opts);
    expect(restore.code, describeRun(["restore"], restore)).toBe(0);
    const before = await scanTree(src, { hash: true });
    const after = await scanTree(join(target, src), { hash: true });
    expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
    for (const [path, entry] of before) expect(after.get(path)?.sha256, path).toBe(entry.sha256);
    const check = await repo.json<{ ok: boolean }>(["check", "--read-data"], opts);
    expect(check.ok).toBe(true);

    // The protected host's token cannot destroy what it wrote.
    const forget = await repo.run(["forget", first.snapshot, "--prune"], opts);
    expect(forget.code).not.toBe(0);
    expect(forget.stderr).toMatch(/append-only|refused/);
    const listed = await repo.json<{ id: string }[]>(["snapshots"], opts);
    expect(listed.map((s) => s.id)).toContain(first.snapshot);

    // The admin token, kept off the protected host, can.
    const adminForget = await repo.run(["forget", first.snapshot, "--prune"], {
      env: { BULWARK_REST_TOKEN: adminToken },
    });
    expect(adminForget.code, describeRun(["forget"], adminForget)).toBe(0);
  });

  it("a wrong token is an authentication error that names the target and not the token", async () => {
    const r = await runCli(["-r", location, "snapshots"], {
      env: { BULWARK_REST_TOKEN: "not-a-token", BULWARK_PASSWORD: "x" },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/127\.0\.0\.1/);
    expect(r.stderr).not.toContain("not-a-token");
  });
});
