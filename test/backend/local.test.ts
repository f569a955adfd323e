/**
 * LocalBackend against the conformance suite, plus what only a directory can show: the on-disk layout,
 * read-only files, temp files and what a writer killed mid-save leaves behind.
 */

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { bufferSource, type FileHandle, type SaveSource } from "../../src/backend/backend.js";
import { LocalBackend, removeStaleTempFiles } from "../../src/backend/local/local-backend.js";
import { withLimit } from "../../src/backend/wrappers/limit.js";
import { readOnly } from "../../src/backend/wrappers/read-only.js";
import { withRetry } from "../../src/backend/wrappers/retry.js";
import { describeBackend } from "../../src/backend/testing/conformance.js";
import { BulwarkError, hasCode, isNotFound } from "../../src/core/errors.js";

const MiB = 1024 * 1024;

async function makeTempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), "bulwark-local-"));
}

describeBackend("local", async () => {
  const dir = await makeTempDir();
  const backend = await LocalBackend.create(join(dir, "repo"));
  return { backend, cleanup: () => rm(dir, { recursive: true, force: true }) };
});

function hexName(prefix = ""): string {
  return prefix + randomBytes(32).toString("hex").slice(prefix.length);
}

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of iterable) items.push(item);
  return items;
}

async function tempFilesIn(directory: string): Promise<string[]> {
  return (await readdir(directory)).filter((n) => n.startsWith(".tmp-"));
}

describe("LocalBackend on disk", () => {
  let dir: string;
  let repo: string;
  let backend: LocalBackend;

  beforeEach(async () => {
    dir = await makeTempDir();
    repo = join(dir, "repo");
    backend = await LocalBackend.create(repo);
  });

  afterEach(async () => {
    await backend.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("create lays out the directories restic uses", async () => {
    expect((await readdir(repo)).sort()).toEqual(["data", "index", "keys", "locks", "snapshots"]);
    const prefixes = await readdir(join(repo, "data"));
    expect(prefixes).toHaveLength(256);
    expect(prefixes).toContain("00");
    expect(prefixes).toContain("ff");
  });

  it("stores each type at its restic path", async () => {
    const pack = hexName("ab");
    await backend.save({ type: "config", name: "" }, bufferSource(Buffer.from("c")));
    await backend.save({ type: "key", name: pack }, bufferSource(Buffer.from("k")));
    await backend.save({ type: "pack", name: pack }, bufferSource(Buffer.from("p")));
    expect(existsSync(join(repo, "config"))).toBe(true);
    expect(existsSync(join(repo, "keys", pack))).toBe(true);
    expect(existsSync(join(repo, "data", "ab", pack))).toBe(true);
  });

  it("create refuses a directory that already holds a repository, but finishes a half-made one", async () => {
    await LocalBackend.create(repo); // no config yet: an interrupted create may be run again
    await backend.save({ type: "config", name: "" }, bufferSource(Buffer.from("config")));
    await expect(LocalBackend.create(repo)).rejects.toSatisfy((err) => hasCode(err, "ALREADY_EXISTS"));
  });

  it("open refuses a directory that does not exist", async () => {
    await expect(LocalBackend.open(join(dir, "nowhere"))).rejects.toSatisfy((err) =>
      hasCode(err, "NO_REPOSITORY"),
    );
    expect((await LocalBackend.open(repo)).location).toBe(repo);
  });

  it("writes files read-only (0o444), and can still replace and remove them", async () => {
    const h: FileHandle = { type: "snapshot", name: hexName() };
    await backend.save(h, bufferSource(randomBytes(100)));
    const path = join(repo, "snapshots", h.name);
    expect((await stat(path)).mode & 0o777).toBe(0o444);
    await backend.save(h, bufferSource(randomBytes(50)));
    expect((await stat(path)).mode & 0o777).toBe(0o444);
    await backend.remove(h);
    expect(existsSync(path)).toBe(false);
  });

  it("a save in progress is a .tmp- file beside its destination that list and stat ignore", async () => {
    const h: FileHandle = { type: "pack", name: hexName("7f") };
    const subdirectory = join(repo, "data", "7f");
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let reachedMiddle!: () => void;
    const middle = new Promise<void>((resolve) => (reachedMiddle = resolve));
    const source: SaveSource = {
      length: 2 * MiB,
      async *open() {
        yield randomBytes(MiB);
        reachedMiddle();
        await released;
        yield randomBytes(MiB);
      },
    };
    const saving = backend.save(h, source);
    await middle;
    expect(await tempFilesIn(subdirectory)).toHaveLength(1);
    expect(await collect(backend.list("pack"))).toEqual([]);
    await expect(backend.stat(h)).rejects.toSatisfy(isNotFound);
    release();
    await saving;
    expect(await readdir(subdirectory)).toEqual([h.name]);
  });

  it("list skips temp files, stray names and packs in the wrong subdirectory", async () => {
    await writeFile(join(repo, "keys", ".tmp-leftover"), "x");
    await writeFile(join(repo, "keys", "README"), "x");
    await writeFile(join(repo, "keys", hexName().toUpperCase()), "x");
    await writeFile(join(repo, "data", "ab", hexName("cd")), "x");
    await writeFile(join(repo, "data", "ab", ".tmp-" + hexName("ab")), "x");
    await mkdir(join(repo, "index", hexName()));
    for (const type of ["key", "pack", "index"] as const)
      expect(await collect(backend.list(type))).toEqual([]);
  });

  it("a failed save removes its temp file", async () => {
    const h: FileHandle = { type: "pack", name: hexName("3c") };
    const source: SaveSource = {
      length: 3 * MiB,
      async *open() {
        yield randomBytes(MiB);
        await Promise.resolve();
        throw new Error("source failed on purpose");
      },
    };
    await expect(backend.save(h, source)).rejects.toThrow("source failed on purpose");
    expect(await readdir(join(repo, "data", "3c"))).toEqual([]);
    await expect(
      backend.save(h, bufferSource(randomBytes(10)), { signal: AbortSignal.abort() }),
    ).rejects.toThrow();
    expect(await readdir(join(repo, "data", "3c"))).toEqual([]);
  });

  it("ifAbsent leaves no temp file whether it wins or loses", async () => {
    const h: FileHandle = { type: "lock", name: hexName() };
    await backend.save(h, bufferSource(randomBytes(10)), { ifAbsent: true });
    await expect(backend.save(h, bufferSource(randomBytes(10)), { ifAbsent: true })).rejects.toSatisfy(
      (err) => hasCode(err, "ALREADY_EXISTS"),
    );
    expect(await readdir(join(repo, "locks"))).toEqual([h.name]);
  });

  it("recreates a missing data subdirectory when saving into it", async () => {
    await rm(join(repo, "data", "e4"), { recursive: true });
    const h: FileHandle = { type: "pack", name: hexName("e4") };
    await backend.save(h, bufferSource(randomBytes(10)));
    expect((await backend.stat(h)).size).toBe(10);
  });

  it("NOT_FOUND names the file and the repository", async () => {
    const h: FileHandle = { type: "index", name: hexName() };
    const err: unknown = await backend.load(h).catch((e: unknown) => e);
    expect(isNotFound(err)).toBe(true);
    expect((err as Error).message).toContain(`index/${h.name}`);
    expect((err as Error).message).toContain(repo);
  });

  it("a malformed name is a programming error, not a BulwarkError", async () => {
    const err: unknown = await backend
      .stat({ type: "pack", name: "../../etc/passwd" })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(BulwarkError);
  });

  it.skipIf(process.getuid?.() === 0)(
    "permission denied becomes an IO error naming the location",
    async () => {
      await chmod(join(repo, "snapshots"), 0o555);
      try {
        const err: unknown = await backend
          .save({ type: "snapshot", name: hexName() }, bufferSource(randomBytes(10)))
          .catch((e: unknown) => e);
        expect(hasCode(err, "IO")).toBe(true);
        expect((err as Error).message).toContain("permission denied");
      } finally {
        await chmod(join(repo, "snapshots"), 0o755);
      }
    },
  );

  it("removeStaleTempFiles deletes old .tmp- leftovers and nothing else", async () => {
    const key: FileHandle = { type: "key", name: hexName() };
    await backend.save(key, bufferSource(randomBytes(10)));
    const old = new Date(Date.now() - 2 * 3600_000);
    const leftovers = [
      join(repo, ".tmp-config"),
      join(repo, "keys", ".tmp-a"),
      join(repo, "data", "9a", ".tmp-b"),
    ];
    for (const path of leftovers) {
      await writeFile(path, "partial", { mode: 0o444 });
      await utimes(path, old, old);
    }
    await utimes(join(repo, "keys", key.name), old, old);
    const fresh = join(repo, "locks", ".tmp-writer-still-running");
    await writeFile(fresh, "partial");

    expect(await removeStaleTempFiles(repo, 3600_000)).toBe(3);
    for (const path of leftovers) expect(existsSync(path)).toBe(false);
    expect(existsSync(fresh)).toBe(true);
    expect((await backend.stat(key)).size).toBe(10);
  });

  it("the backend offers the same cleanup (what prune calls), wrapped or not", async () => {
    const old = new Date(Date.now() - 2 * 3600_000);
    const leftover = join(repo, "data", "3f", ".tmp-killed");
    await writeFile(leftover, "partial");
    await utimes(leftover, old, old);
    const fresh = join(repo, "index", ".tmp-live");
    await writeFile(fresh, "partial");
    const wrapped = withLimit(withRetry(backend));
    expect(await wrapped.removeStaleTempFiles?.(3600_000)).toBe(1);
    expect(existsSync(leftover)).toBe(false);
    expect(existsSync(fresh)).toBe(true);
    expect(await backend.removeStaleTempFiles(0)).toBe(1);
    await expect(readOnly(backend).removeStaleTempFiles?.(0)).rejects.toThrow(/read-only/);
  });

  describe("a writer killed mid-save", () => {
    const builtBackend = fileURLToPath(new URL("../../dist/backend/local/local-backend.js", import.meta.url));
    const haveBuild = existsSync(builtBackend);
    // Skipped locally without a build; in CI a missing build must fail loudly rather than pass by skipping.
    const skip = !haveBuild && process.env.CI !== "true";

    it.skipIf(skip)("leaves no partial file visible, only a temp file that cleanup removes", async () => {
      if (!haveBuild) throw new Error(`${builtBackend} is missing: run \`npm run build\` before the tests`);
      const name = hexName("5e");
      const totalBytes = 200 * MiB;
      const piecesBeforeSignal = 64;
      // After signalling, the child slows down so the kill is sure to land before the save finishes.
      const script = `
        import { LocalBackend } from ${JSON.stringify(pathToFileURL(builtBackend).href)};
        const piece = 1024 * 1024;
        const backend = await LocalBackend.open(${JSON.stringify(repo)});
        const source = {
          length: ${totalBytes},
          async *open() {
            for (let i = 0; i * piece < ${totalBytes}; i++) {
              if (i === ${piecesBeforeSignal}) process.stdout.write("middle\\n");
              if (i >= ${piecesBeforeSignal}) await new Promise((resolve) => setTimeout(resolve, 20));
              yield Buffer.alloc(piece, i & 0xff);
            }
          },
        };
        await backend.save({ type: "pack", name: ${JSON.stringify(name)} }, source);
        process.stdout.write("done\\n");
      `;
      const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stdout = "";
      let stderr = "";
      child.stderr.setEncoding("utf8").on("data", (text: string) => (stderr += text));
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        child.on("exit", (code, signal) => resolve({ code, signal })),
      );
      const middle = new Promise<void>((resolve, reject) => {
        child.stdout.setEncoding("utf8").on("data", (text: string) => {
          stdout += text;
          if (stdout.includes("middle")) resolve();
        });
        void exited.then(({ code }) =>
          reject(new Error(`child exited (${code}) before the middle:\n${stderr}`)),
        );
      });

      await middle;
      child.kill("SIGKILL");
      expect(await exited).toEqual({ code: null, signal: "SIGKILL" });
      expect(stdout).not.toContain("done");

      const h: FileHandle = { type: "pack", name };
      expect(await collect(backend.list("pack"))).toEqual([]);
      await expect(backend.stat(h)).rejects.toSatisfy(isNotFound);
      await expect(backend.load(h)).rejects.toSatisfy(isNotFound);
      const debris = await tempFilesIn(join(repo, "data", "5e"));
      expect(debris).toHaveLength(1);
      expect((await stat(join(repo, "data", "5e", debris[0] ?? ""))).size).toBeGreaterThanOrEqual(
        piecesBeforeSignal * MiB,
      );

      expect(await removeStaleTempFiles(repo, 0)).toBe(1);
      expect(await readdir(join(repo, "data", "5e"))).toEqual([]);
    });
  });
});
