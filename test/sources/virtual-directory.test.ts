/**
 * The archiver's virtual directories: a producer whose files are known only once it ran (pg_dump -Fd, one
 * dump per database) becomes a directory of the snapshot; entries may be files on disk, streamed commands or
 * directories again; the producer is released once stored and also when the backup fails.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  backup,
  type OpenedVirtualDirectory,
  type OpenedVirtualFile,
  type VirtualFile,
} from "../../src/snapshot/archiver.js";
import { loadTree } from "../../src/snapshot/walker.js";
import { commandSource, readSnapshotFile } from "../../src/sources/command.js";
import { memoryRepository, snapshotCount, type TestRepository } from "./helpers.js";

let t: TestRepository;
let dir: string;
beforeAll(async () => {
  t = await memoryRepository();
  dir = await mkdtemp(join(tmpdir(), "bulwark-vdir-test-"));
});
afterAll(async () => {
  await t.close();
  await rm(dir, { recursive: true, force: true });
});

async function readAll(tree: string, path: string): Promise<string> {
  const parts: Buffer[] = [];
  for await (const b of readSnapshotFile(t.repo, tree, path)) parts.push(b);
  return Buffer.concat(parts).toString("utf8");
}

const diskFile = (name: string, path: string): VirtualFile => ({
  path: name,
  open: (): Promise<OpenedVirtualFile> => Promise.resolve({ path, done: Promise.resolve() }),
});

/** A directory producer that records its close; its entries come after a short "dump". */
function directory(
  path: string,
  entries: () => Promise<VirtualFile[]>,
  events: string[],
  label = path,
): VirtualFile {
  return {
    path,
    open: (): Promise<OpenedVirtualDirectory> => {
      events.push(`open ${label}`);
      return Promise.resolve({
        entries: new Promise<void>((resolve) => setTimeout(resolve, 20)).then(entries),
        abort: () => void events.push(`abort ${label}`),
        close: () => {
          events.push(`close ${label}`);
          return Promise.resolve();
        },
      });
    },
  };
}

describe("virtual directories", () => {
  it("stores the entries below the virtual path: files on disk, streamed commands and nested directories", async () => {
    await writeFile(join(dir, "toc.dat"), "table of contents\n");
    await writeFile(join(dir, "3001.dat"), "x".repeat(3 * 1024 * 1024)); // above the batching size
    const events: string[] = [];
    const nested = directory(
      "inner",
      () => Promise.resolve([commandSource({ path: "numbers", command: "seq 1 1000" })]),
      events,
    );
    const result = await backup(t.repo, t.pool, {
      paths: [],
      virtualFiles: [
        directory(
          "/sources/db/db.dir",
          () =>
            Promise.resolve([
              diskFile("toc.dat", join(dir, "toc.dat")),
              diskFile("3001.dat", join(dir, "3001.dat")),
              nested,
            ]),
          events,
        ),
        commandSource({ path: "/sources/db/globals.sql", command: "echo roles" }),
      ],
    });
    expect(result.snapshot.paths).toEqual(["/sources/db/db.dir", "/sources/db/globals.sql"]);
    const tree = result.snapshot.tree;
    expect(await readAll(tree, "/sources/db/db.dir/toc.dat")).toBe("table of contents\n");
    expect((await readAll(tree, "/sources/db/db.dir/3001.dat")).length).toBe(3 * 1024 * 1024);
    expect(await readAll(tree, "/sources/db/db.dir/inner/numbers")).toBe(
      Array.from({ length: 1000 }, (_, i) => `${i + 1}\n`).join(""),
    );
    expect(await readAll(tree, "/sources/db/globals.sql")).toBe("roles\n");
    // Entries in name order; the producers closed once stored, nothing aborted.
    const sources = (await loadTree(t.repo, tree)).find((n) => n.name === "sources")!;
    const db = (await loadTree(t.repo, sources.subtree!)).find((n) => n.name === "db")!;
    const dumpDir = (await loadTree(t.repo, db.subtree!)).find((n) => n.name === "db.dir")!;
    expect(dumpDir).toMatchObject({ type: "dir", mode: 0o700 });
    expect((await loadTree(t.repo, dumpDir.subtree!)).map((n) => n.name)).toEqual([
      "3001.dat",
      "inner",
      "toc.dat",
    ]);
    expect(events.sort()).toEqual([
      "close /sources/db/db.dir",
      "close inner",
      "open /sources/db/db.dir",
      "open inner",
    ]);
    expect(result.snapshot.summary).toMatchObject({ filesNew: 4, dirsNew: 2 });
  });

  it("a producer that fails (its entries reject) fails the backup and is released; no snapshot", async () => {
    const before = await snapshotCount(t.repo);
    const events: string[] = [];
    await expect(
      backup(t.repo, t.pool, {
        paths: [],
        virtualFiles: [
          directory(
            "/sources/bad/db.dir",
            () => Promise.reject(new Error("pg_dump exited with code 1")),
            events,
          ),
        ],
      }),
    ).rejects.toThrow("pg_dump exited with code 1");
    expect(events).toEqual([
      "open /sources/bad/db.dir",
      "abort /sources/bad/db.dir",
      "close /sources/bad/db.dir",
    ]);
    expect(await snapshotCount(t.repo)).toBe(before);
  });

  it("a failing entry fails the backup and the directory is still released", async () => {
    const events: string[] = [];
    await expect(
      backup(t.repo, t.pool, {
        paths: [],
        virtualFiles: [
          directory(
            "/sources/half/db.dir",
            () =>
              Promise.resolve([
                commandSource({ path: "a", command: "echo a" }),
                commandSource({ path: "b", command: "echo broken >&2; exit 2" }),
              ]),
            events,
          ),
        ],
      }),
    ).rejects.toThrow(/exited with code 2[\s\S]*broken/);
    expect(events).toContain("close /sources/half/db.dir");
  });

  it("refuses entries that are not one file name, or named twice", async () => {
    for (const names of [["../escape"], ["a/b"], ["same", "same"], [""]]) {
      const events: string[] = [];
      await expect(
        backup(t.repo, t.pool, {
          paths: [],
          virtualFiles: [
            directory(
              "/sources/odd/db.dir",
              () => Promise.resolve(names.map((n) => diskFile(n, join(dir, "toc.dat")))),
              events,
            ),
          ],
        }),
      ).rejects.toThrow(/its producer named an entry/);
      expect(events).toContain("close /sources/odd/db.dir");
    }
  });
});
