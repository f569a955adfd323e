import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { existsSync } from "node:fs";
import { backup, type VirtualFile } from "../../src/snapshot/archiver.js";
import { restoreSqlite, sqliteSource, validateSqlite } from "../../src/sources/sqlite.js";
import { haveTool, memoryRepository, snapshotCount, type TestRepository } from "./helpers.js";

const available = haveTool("sqlite3", "sqlite3");

let t: TestRepository;
let dir: string;
beforeAll(async () => {
  t = await memoryRepository();
  dir = await mkdtemp(join(tmpdir(), "bulwark-sqlite-test-"));
});
afterAll(async () => {
  await t?.close();
  await rm(dir, { recursive: true, force: true });
});

/** Paths of the private copies made by wrapped sources. */
const copies: string[] = [];
const recorded = (file: VirtualFile): VirtualFile => ({
  path: file.path,
  open: async () => {
    const opened = await file.open();
    if ("path" in opened) copies.push(opened.path);
    return opened;
  },
});

const sql = (db: string, statement: string): string =>
  execFileSync("sqlite3", ["-bail", "-batch", "-cmd", ".timeout 30000", db, statement], {
    encoding: "utf8",
  }).trim();

describe.skipIf(!available)("sqlite source", () => {
  for (const mode of ["wal", "delete"] as const) {
    it(`copies a database under concurrent writes (journal_mode=${mode}); the restore passes integrity_check`, async () => {
      const db = join(dir, `live-${mode}.db`);
      sql(
        db,
        `PRAGMA journal_mode=${mode}; CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL, pad TEXT);
         CREATE TABLE totals (n INTEGER NOT NULL, sum INTEGER NOT NULL); INSERT INTO totals VALUES (0, 0);
         CREATE INDEX ledger_amount ON ledger(amount);`,
      );
      // A writer inserting continuously, each transaction keeping totals equal to the ledger's aggregate.
      const script = join(dir, `writer-${mode}.sql`);
      const tx = Array.from(
        { length: 400 },
        (_, i) =>
          `BEGIN IMMEDIATE; INSERT INTO ledger (amount, pad) SELECT ${i % 97} + value, hex(randomblob(200)) FROM generate_series(1, 50);` +
          ` UPDATE totals SET n = (SELECT count(*) FROM ledger), sum = (SELECT sum(amount) FROM ledger); COMMIT;`,
      ).join("\n");
      await writeFile(script, `.timeout 60000\n${tx}\n`);
      const writer = spawn("sh", ["-c", `while :; do sqlite3 -bail '${db}' < '${script}' || exit 1; done`], {
        stdio: "ignore",
        detached: true,
      });
      copies.length = 0;
      try {
        // Let the writer get going, then back up twice while it writes.
        await new Promise((r) => setTimeout(r, 300));
        const before = Number(sql(db, "SELECT count(*) FROM ledger"));
        const result = await backup(t.repo, t.pool, {
          paths: [],
          virtualFiles: [recorded(sqliteSource({ path: `/sources/app-${mode}.sqlite`, database: db }))],
        });
        const after = Number(sql(db, "SELECT count(*) FROM ledger"));
        expect(copies).toHaveLength(1);
        expect(existsSync(copies[0]!), "the private copy is removed").toBe(false);
        expect(after).toBeGreaterThan(before); // the writer really ran during the backup

        const restored = join(dir, `restored-${mode}.db`);
        const r = await restoreSqlite(t.repo, result.snapshot, `/sources/app-${mode}.sqlite`, restored);
        expect(r.bytes).toBeGreaterThan(0);
        const validation = await validateSqlite(restored, [
          {
            sql: "SELECT count(*) = n AND sum(amount) = (SELECT sum FROM totals) FROM ledger, totals",
            expect: "1",
          },
          { sql: "SELECT count(*) > 0 FROM ledger", expect: "1" },
        ]);
        expect(validation, JSON.stringify(validation)).toMatchObject({ ok: true });
        expect(validation.checks[0]).toMatchObject({ name: "PRAGMA integrity_check", actual: "ok" });
        // The restore refuses to overwrite.
        await expect(
          restoreSqlite(t.repo, result.snapshot, `/sources/app-${mode}.sqlite`, restored),
        ).rejects.toThrow(/exists/);
      } finally {
        process.kill(-writer.pid!, "SIGKILL");
      }
    });
  }

  it("validateSqlite reports a failed check and a damaged file", async () => {
    const db = join(dir, "small.db");
    sql(db, "CREATE TABLE t (x); INSERT INTO t VALUES (1), (2);");
    const v = await validateSqlite(db, [{ sql: "SELECT count(*) FROM t", expect: "3" }]);
    expect(v.ok).toBe(false);
    expect(v.checks[1]).toMatchObject({ ok: false, expected: "3", actual: "2" });
    const junk = join(dir, "junk.db");
    await writeFile(junk, Buffer.alloc(8192, 7));
    await expect(validateSqlite(junk)).rejects.toThrow(/not a database|malformed|integrity_check/);
  });

  it("a missing database fails the backup; no snapshot", async () => {
    const before = await snapshotCount(t.repo);
    await expect(
      backup(t.repo, t.pool, {
        paths: [],
        virtualFiles: [sqliteSource({ path: "/sources/none.sqlite", database: join(dir, "none.db") })],
      }),
    ).rejects.toThrow(/sqlite3 copy of .*none\.db exited with code 1[\s\S]*unable to open/);
    expect(await snapshotCount(t.repo)).toBe(before);
  });
});
