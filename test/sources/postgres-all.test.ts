/**
 * `all: true` with stand-in programs (a bindir of shell scripts for psql, pg_dump and pg_dumpall), to see
 * what a real server cannot show: the dumps take turns (one pg_dump at a time), and a failing database stops
 * the ones after it. The real-server tests are in postgres.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { backup } from "../../src/snapshot/archiver.js";
import { readSnapshotFile } from "../../src/sources/command.js";
import { postgresSource } from "../../src/sources/postgres.js";
import { memoryRepository, snapshotCount, type TestRepository } from "./helpers.js";

let t: TestRepository;
let bindir: string;
let log: string;

beforeAll(async () => {
  t = await memoryRepository();
  bindir = await mkdtemp(join(tmpdir(), "bulwark-fake-pg-"));
  log = join(bindir, "log");
  const script = async (name: string, body: string): Promise<void> => {
    await writeFile(join(bindir, name), `#!/bin/sh\n${body}\n`);
    await chmod(join(bindir, name), 0o755);
  };
  // The database list, NUL-separated as psql --record-separator-zero prints it.
  await script("psql", `cat >/dev/null; printf 'alpha\\0beta\\0gamma\\0'`);
  await script("pg_dumpall", `echo "-- globals"`);
  // dbname='NAME' comes as --dbname=dbname='NAME'; PGTEST_FAIL_DB names a database whose dump fails (PG* variables are the ones pg_dump is given).
  await script(
    "pg_dump",
    `for a in "$@"; do case "$a" in --dbname=*) db=$(echo "$a" | sed "s/.*dbname='\\(.*\\)'/\\1/");; esac; done
echo "start $db" >> "$PGTEST_LOG"
sleep 0.2
[ "$db" = "$PGTEST_FAIL_DB" ] && { echo "FATAL: $db is broken" >&2; echo "end $db" >> "$PGTEST_LOG"; exit 1; }
echo "dump of $db"
echo "end $db" >> "$PGTEST_LOG"`,
  );
});
afterAll(async () => {
  await t.close();
  await rm(bindir, { recursive: true, force: true });
});

async function read(tree: string, path: string): Promise<string> {
  const parts: Buffer[] = [];
  for await (const b of readSnapshotFile(t.repo, tree, path)) parts.push(b);
  return Buffer.concat(parts).toString("utf8");
}

const lines = async (): Promise<string[]> =>
  (await readFile(log, "utf8")).split("\n").filter((l) => l !== "");

describe("postgres all: true", () => {
  it("dumps every database one after the other, each under databases/<database>/", async () => {
    await rm(log, { force: true });
    const result = await backup(t.repo, t.pool, {
      paths: [],
      virtualFiles: postgresSource({
        name: "cluster",
        all: true,
        bindir,
        env: { ...process.env, PGTEST_LOG: log },
      }),
    });
    expect(result.snapshot.paths).toEqual(["/sources/cluster/databases", "/sources/cluster/globals.sql"]);
    for (const db of ["alpha", "beta", "gamma"]) {
      expect(await read(result.snapshot.tree, `/sources/cluster/databases/${db}/db.pgdump`)).toBe(
        `dump of ${db}\n`,
      );
    }
    expect(await read(result.snapshot.tree, "/sources/cluster/globals.sql")).toBe("-- globals\n");
    // Never two at once: every start is followed by its own end.
    expect(await lines()).toEqual([
      "start alpha",
      "end alpha",
      "start beta",
      "end beta",
      "start gamma",
      "end gamma",
    ]);
  });

  it("a database whose dump fails fails the backup, and the databases after it are not dumped", async () => {
    await rm(log, { force: true });
    const before = await snapshotCount(t.repo);
    await expect(
      backup(t.repo, t.pool, {
        paths: [],
        virtualFiles: postgresSource({
          name: "cluster",
          all: true,
          bindir,
          globals: false,
          env: { ...process.env, PGTEST_LOG: log, PGTEST_FAIL_DB: "beta" },
        }),
      }),
    ).rejects.toThrow(/pg_dump of database beta of source cluster exited with code 1[\s\S]*beta is broken/);
    expect(await lines()).toEqual(["start alpha", "end alpha", "start beta", "end beta"]);
    expect(await snapshotCount(t.repo)).toBe(before);
  });
});
