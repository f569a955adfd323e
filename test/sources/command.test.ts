import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { backup, type VirtualFile } from "../../src/snapshot/archiver.js";
import {
  commandSource,
  readSnapshotFile,
  restoreToCommand,
  validateCommandSource,
} from "../../src/sources/command.js";
import { memoryRepository, snapshotCount, type TestRepository } from "./helpers.js";

let t: TestRepository;
let dir: string;
beforeAll(async () => {
  t = await memoryRepository();
  dir = await mkdtemp(join(tmpdir(), "bulwark-command-test-"));
});
afterAll(async () => {
  await t.close();
  await rm(dir, { recursive: true, force: true });
});

async function readAll(tree: string, path: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of readSnapshotFile(t.repo, tree, path)) parts.push(b);
  return Buffer.concat(parts);
}

describe("command source", () => {
  it("stores a command's standard output as a file, streamed through a FIFO", async () => {
    // 40 MiB of pseudo-random bytes: more than any pipe or worker buffer, so it must stream.
    const cmd = "head -c 41943040 /dev/urandom | tee " + join(dir, "expected.bin");
    const result = await backup(t.repo, t.pool, {
      paths: [],
      virtualFiles: [commandSource({ path: "/sources/random.bin", command: cmd })],
    });
    expect(result.snapshot.paths).toEqual(["/sources/random.bin"]);
    const stored = await readAll(result.snapshot.tree, "/sources/random.bin");
    const expected = await readFile(join(dir, "expected.bin"));
    expect(stored.length).toBe(40 * 1024 * 1024);
    expect(sha(stored)).toBe(sha(expected));
  });

  it("stores argv commands, several sources and real paths in one snapshot", async () => {
    await writeFile(join(dir, "plain.txt"), "plain\n");
    const result = await backup(t.repo, t.pool, {
      paths: [join(dir, "plain.txt")],
      virtualFiles: [
        commandSource({ path: "/sources/a.txt", command: ["printf", "%s\\n", "hello a"] }),
        commandSource({ path: "/sources/b.txt", command: "echo hello b" }),
        commandSource({ path: "/sources/empty", command: "true" }),
      ],
    });
    expect((await readAll(result.snapshot.tree, "/sources/a.txt")).toString()).toBe("hello a\n");
    expect((await readAll(result.snapshot.tree, "/sources/b.txt")).toString()).toBe("hello b\n");
    expect((await readAll(result.snapshot.tree, "/sources/empty")).length).toBe(0);
    expect((await readAll(result.snapshot.tree, join(dir, "plain.txt"))).toString()).toBe("plain\n");
  });

  it("a command that exits non-zero fails the backup with its stderr, and no snapshot is saved", async () => {
    const before = await snapshotCount(t.repo);
    const run = backup(t.repo, t.pool, {
      paths: [],
      virtualFiles: [
        commandSource({
          path: "/sources/dump.sql",
          command:
            "echo 'partial dump'; head -c 3000000 /dev/zero; echo 'mysqldump: Got error: 2002' >&2; exit 2",
        }),
      ],
    });
    await expect(run).rejects.toThrow(/exited with code 2[\s\S]*mysqldump: Got error: 2002/);
    expect(await snapshotCount(t.repo)).toBe(before);
  });

  it("a command killed by a signal, a missing program or a timeout fails the backup", async () => {
    const before = await snapshotCount(t.repo);
    await expect(
      backup(t.repo, t.pool, {
        paths: [],
        virtualFiles: [commandSource({ path: "/sources/x", command: "echo x; kill -9 $$" })],
      }),
    ).rejects.toThrow(/killed by SIGKILL/);
    // Its background job holds the FIFO open: it is killed with the command, the reader does not wait for it.
    const started = Date.now();
    await expect(
      backup(t.repo, t.pool, {
        paths: [],
        virtualFiles: [commandSource({ path: "/sources/x", command: "echo x; sleep 60 & kill -9 $$" })],
      }),
    ).rejects.toThrow(/killed by SIGKILL/);
    expect(Date.now() - started).toBeLessThan(20_000);
    await expect(
      backup(t.repo, t.pool, {
        paths: [],
        virtualFiles: [commandSource({ path: "/sources/x", command: ["/nonexistent/dumper"] })],
      }),
    ).rejects.toThrow(/exited with code 127[\s\S]*nonexistent/);
    await expect(
      backup(t.repo, t.pool, {
        paths: [],
        virtualFiles: [
          commandSource({ path: "/sources/x", command: "echo start; sleep 30", timeoutMs: 500 }),
        ],
      }),
    ).rejects.toThrow(/timed out after 0.5 s/);
    expect(await snapshotCount(t.repo)).toBe(before);
  });

  it("refuses a source path inside a backup path", async () => {
    await expect(
      backup(t.repo, t.pool, {
        paths: [dir],
        virtualFiles: [commandSource({ path: join(dir, "x"), command: "true" })],
      }),
    ).rejects.toThrow(/collides/);
  });

  it("restore --pipe-to: pipes the stored file into a command, which must succeed", async () => {
    const result = await backup(t.repo, t.pool, {
      paths: [],
      virtualFiles: [commandSource({ path: "/sources/lines", command: "seq 1 200000" })],
    });
    const out = join(dir, "piped.txt");
    const piped = await restoreToCommand(t.repo, result.snapshot, "/sources/lines", `cat > '${out}'`);
    const expected = Array.from({ length: 200000 }, (_, i) => `${i + 1}\n`).join("");
    expect(piped.bytes).toBe(expected.length);
    expect(await readFile(out, "utf8")).toBe(expected);

    await expect(
      restoreToCommand(t.repo, result.snapshot, "/sources/lines", "cat >/dev/null; echo nope >&2; exit 3"),
    ).rejects.toThrow(/exited with code 3[\s\S]*nope/);
    await expect(
      restoreToCommand(t.repo, result.snapshot, "/sources/lines", "head -n 1 >/dev/null"),
    ).rejects.toThrow(/stopped reading its input/);
    await expect(restoreToCommand(t.repo, result.snapshot, "/sources/missing", "cat")).rejects.toThrow(
      /not in the snapshot/,
    );
  });

  it("validateCommandSource: a configured check command proves the stored file usable", async () => {
    const result = await backup(t.repo, t.pool, {
      paths: [],
      virtualFiles: [commandSource({ path: "/sources/archive.gz", command: "seq 1 50000 | gzip" })],
    });
    const good = await validateCommandSource(t.repo, result.snapshot, "/sources/archive.gz", "gzip -t");
    expect(good.ok).toBe(true);
    expect(good.bytes).toBeGreaterThan(0);
    const bad = await validateCommandSource(
      t.repo,
      result.snapshot,
      "/sources/archive.gz",
      "bzip2 -t 2>&1 >&2; exit 1",
    );
    expect(bad).toMatchObject({ ok: false });
    expect(bad.detail).toMatch(/exited with code 1/);
  });

  it("one failing source among several: the others are stopped and their FIFOs removed", async () => {
    const { WorkerPool } = await import("../../src/repository/worker-pool.js");
    // A thread per source: a worker blocked reading one FIFO would hold up a second job on its thread.
    const pool = new WorkerPool(t.repo, 3, 1);
    const fifos: string[] = [];
    const recorded = (file: VirtualFile): VirtualFile => ({
      path: file.path,
      open: async () => {
        const opened = await file.open();
        if ("path" in opened) fifos.push(opened.path);
        return opened;
      },
    });
    try {
      const started = Date.now();
      await expect(
        backup(t.repo, pool, {
          paths: [],
          virtualFiles: [
            recorded(commandSource({ path: "/sources/a", command: "sleep 1; echo a" })),
            recorded(commandSource({ path: "/sources/b", command: "echo b >&2; exit 3" })),
            recorded(commandSource({ path: "/sources/c", command: "sleep 30; echo c" })),
          ],
        }),
      ).rejects.toThrow(/exited with code 3/);
      expect(Date.now() - started).toBeLessThan(20_000);
    } finally {
      await pool.close();
    }
    expect(fifos).toHaveLength(3);
    for (const fifo of fifos) expect(existsSync(dirname(fifo)), fifo).toBe(false);
  });
});

function sha(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}
