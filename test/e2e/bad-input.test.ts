/**
 * Bad input never ends in a stack trace: the built CLI run over a corpus of bad inputs (empty paths, a path
 * under /proc, malformed configs and a YAML alias bomb, damaged key, index, snapshot and tree files, wrong
 * options) must print a clean `error: ...` line (or a config diagnostic with file and line), exit non-zero,
 * and never show a JavaScript stack ("    at ..."), a raw "TypeError:"-style message or an internal error.
 *
 * Besides the corpus, what each input must (not) do:
 * - `restore --target ''` from a directory with files exits non-zero and writes nothing there;
 * - `backup ''` saves no snapshot;
 * - a tree entry with a malformed field (an mtime that is not a number, a content id that is not a string), a
 *   file whose size disagrees with its blobs, and hard links without inode and device are refused alone:
 *   the rest of the snapshot is restored, the entry is named with its reason, and `check` reports each;
 *   such entries block neither prune nor copy: prune keeps the blobs they name, a copy carries the trees as
 *   they are with those blobs, and `check` of the copy reports the same entries.
 */
import { chmod, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { LocalBackend } from "../../src/backend/local/local-backend.js";
import { PackWriter } from "../../src/repository/pack-writer.js";
import { Repository } from "../../src/repository/repository.js";
import {
  TestRepo,
  describeRun,
  makeTempDir,
  removeTempDirs,
  runCli,
  writeFiles,
  type RunResult,
} from "./helpers.js";

let base: string;
let repo: TestRepo;

beforeAll(async () => {
  base = await makeTempDir("bad-input");
  await writeFiles(join(base, "src"), { "a.txt": "alpha\n", "sub/b.txt": "beta\n" });
  repo = await TestRepo.init(join(base, "repo"));
  await repo.backup([join(base, "src")]);
});
afterAll(removeTempDirs);

/** What a user must never see: a stack frame, a raw JavaScript error name, an internal error. */
function expectClean(what: string, r: RunResult): void {
  const all = `${r.stdout}\n${r.stderr}`;
  const context = `${what}\n${describeRun([], r)}`;
  expect(r.signal, context).toBeNull();
  expect(r.code, context).not.toBe(0);
  expect(all, context).not.toMatch(/^\s+at .+(\(|:\d+:\d+)/m);
  expect(all, context).not.toMatch(
    /\b(TypeError|ReferenceError|SyntaxError|RangeError|AssertionError|Error): /,
  );
  expect(all, context).not.toMatch(/internal error/);
  expect(all, context).toMatch(/^error: \S|^\S+\.ya?ml(:\d+:\d+)? /m); // an error, or a config diagnostic
}

/** Runs `tasks` three at a time (CLI start-up dominates; the corpus stays well under a minute). */
async function inBatches<T>(tasks: (() => Promise<T>)[]): Promise<T[]> {
  const results: T[] = [];
  for (let i = 0; i < tasks.length; i += 3)
    results.push(...(await Promise.all(tasks.slice(i, i + 3).map((t) => t()))));
  return results;
}

type RawNode = Record<string, unknown>;
const uid = process.getuid?.() ?? 0;
const gid = process.getgid?.() ?? 0;
const meta = (name: string, type: string, mode: number): RawNode => ({
  name,
  type,
  mode,
  uid,
  gid,
  mtime: "1600000000000000000",
  ctime: "1600000000000000000",
});

/** A snapshot whose root tree is raw JSON: `good.txt` and the entries `bad` returns (given a data blob). */
async function craftSnapshot(target: TestRepo, bad: (blob: string) => RawNode[]): Promise<string> {
  const backend = await LocalBackend.open(target.dir);
  try {
    const r = await Repository.open(backend, target.password);
    const writer = new PackWriter(r);
    const good = await writer.addPlain("data", Buffer.from("good\n"));
    const blob = await writer.addPlain("data", Buffer.from("six b\n"));
    const nodes = [{ ...meta("good.txt", "file", 0o644), size: 5, content: [good] }, ...bad(blob)];
    const root = await writer.addPlain("tree", Buffer.from(JSON.stringify({ nodes })));
    await writer.flush();
    await r.saveDocument("index", { version: 1, packs: writer.takeNewPacks() });
    return await r.saveDocument("snapshot", {
      version: 1,
      time: new Date().toISOString(),
      tree: root,
      paths: ["/crafted"],
      hostname: "crafted",
      username: "crafted",
      uid,
      gid,
      tags: [],
      program: "crafted by bad-input.test.ts",
    });
  } finally {
    await backend.close();
  }
}

describe("empty paths are refused", () => {
  it("restore --target '' exits non-zero and writes nothing into the working directory", async () => {
    const cwd = join(base, "cwd-restore");
    await writeFiles(cwd, { "live.txt": "live data\n" });
    const before = await readdir(cwd, { recursive: true });
    const r = await repo.run(["restore", "latest", "--target", ""], { cwd });
    expectClean("restore --target ''", r);
    expect(r.stderr).toMatch(/--target is empty/);
    expect(await readdir(cwd, { recursive: true })).toEqual(before);
    expect(await readFile(join(cwd, "live.txt"), "utf8")).toBe("live data\n");
  });

  it("backup '' saves no snapshot of the working directory", async () => {
    const count = (await repo.snapshots()).length;
    const r = await repo.run(["backup", ""], { cwd: join(base, "src") });
    expectClean("backup ''", r);
    expect(r.stderr).toMatch(/empty path/);
    const r2 = await repo.run(["backup", join(base, "src"), ""]);
    expectClean("backup PATH ''", r2);
    expect((await repo.snapshots()).length).toBe(count);
  });
});

describe("malformed tree entries fail alone; check reports them", () => {
  const cases: [string, (blob: string) => RawNode[], RegExp][] = [
    [
      "an mtime that is not a number",
      (blob) => [{ ...meta("bad", "file", 0o644), mtime: "yesterday", size: 6, content: [blob] }],
      /its mtime "yesterday" is not a time/,
    ],
    [
      "a content id that is not a string",
      () => [{ ...meta("bad", "file", 0o644), size: 6, content: [42] }],
      /its content id 42 is not a blob id/,
    ],
    [
      "a size that disagrees with its blobs",
      (blob) => [{ ...meta("bad", "file", 0o644), size: 4096, content: [blob] }],
      /size \(4096 bytes\) disagrees with its blobs \(6 bytes\)/,
    ],
    [
      "hard links without inode and device",
      (blob) => [{ ...meta("bad", "file", 0o644), size: 6, links: 2, content: [blob] }],
      /it has 2 hard links but no inode and device/,
    ],
  ];
  let target: TestRepo;
  beforeAll(async () => {
    target = await TestRepo.init(join(base, "repo-trees"));
  });

  for (const [what, build, reason] of cases) {
    it(`${what}: restore refuses the entry and restores the rest; check names it`, async () => {
      const snapshot = await craftSnapshot(target, build);
      const out = join(base, `restored-${snapshot.slice(0, 8)}`);
      const r = await target.run(["restore", snapshot, "--target", out]);
      expectClean(`restore of ${what}`, r);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("/bad");
      expect(r.stderr).toMatch(reason);
      expect(await readFile(join(out, "good.txt"), "utf8")).toBe("good\n");
      expect(await readdir(out)).toEqual(["good.txt"]);

      const c = await target.run(["--json", "check"]);
      expect(c.code, describeRun(["check"], c)).toBe(1);
      const findings = (
        JSON.parse(c.stdout) as { findings: { kind: string; message: string; snapshots?: string[] }[] }
      ).findings.filter((f) => f.kind === "node-invalid" && reason.test(f.message));
      expect(findings.length, c.stdout).toBe(1);
      expect(findings[0]!.message).toContain('"bad"');
      expect(findings[0]!.snapshots).toContain(snapshot);
      const plain = await target.run(["check"]);
      expectClean(`check of ${what}`, plain);
    });
  }

  it("prune and copy go on past the malformed entries and keep the data they name", async () => {
    const nodeInvalid = async (r: TestRepo): Promise<string[]> => {
      const c = await r.run(["--json", "check", "--read-data"]);
      const findings = (JSON.parse(c.stdout) as { findings: { kind: string; message: string }[] }).findings;
      // Nothing but the entries themselves (and, before prune, the blob each crafted snapshot wrote again):
      // no blob went missing.
      expect(
        findings.filter((f) => f.kind !== "node-invalid" && f.kind !== "blob-multiple").map((f) => f.kind),
        c.stdout,
      ).toEqual([]);
      return findings
        .filter((f) => f.kind === "node-invalid")
        .map((f) => f.message)
        .sort();
    };
    // The blob only the malformed entries name.
    const named = async (r: TestRepo): Promise<boolean> => {
      const backend = await LocalBackend.open(r.dir);
      try {
        const opened = await Repository.open(backend, r.password);
        await opened.loadIndex();
        return opened.index.has(opened.computeId(Buffer.from("six b\n")));
      } finally {
        await backend.close();
      }
    };
    const before = await nodeInvalid(target);
    expect(before.length).toBeGreaterThanOrEqual(3);
    const pruned = await target.run(["prune"]);
    expect(pruned.code, describeRun(["prune"], pruned)).toBe(0);
    expect(await named(target)).toBe(true);
    expect(await nodeInvalid(target)).toEqual(before);

    const copyDir = join(base, "repo-trees-copy");
    const copyArgs = ["copy", "--from", target.dir, "--to", copyDir, "--init"];
    const copied = await target.run(copyArgs);
    expect(copied.code, describeRun(copyArgs, copied)).toBe(0);
    const copy = new TestRepo(copyDir, target.passwordFile, target.password);
    expect(await named(copy)).toBe(true);
    expect(await nodeInvalid(copy)).toEqual(before);
  });
});

describe("a corpus of bad inputs: a clean error, a non-zero exit, no stack trace", () => {
  let damaged: TestRepo;
  let damagedSnapshot: string;
  const configs: Record<string, string> = {
    "alias-bomb.yaml": [
      "version: 1",
      "a: &a [x, x, x, x, x, x, x, x, x, x]",
      "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]",
      "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]",
      "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]",
      "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]",
      "",
    ].join("\n"),
    "syntax.yaml": "version: 1\ntargets: [unclosed\n",
    "scalar.yaml": "just a string\n",
    "empty.yaml": "",
    "binary.yaml": "\u0000\u0001\u0002\uFFFD\uFFFE",
    "version.yaml": "version: 99\n",
    "unknown-field.yaml": "version: 1\ntargetz: {}\n",
    "bad-env-name.yaml": [
      "version: 1",
      "targets: { t: { location: /tmp/x, password: { env: P } } }",
      "datasets:",
      "  d:",
      "    sources:",
      "      - { type: command, name: c, command: env, filename: e.txt, env: ['1 BAD'] }",
      "",
    ].join("\n"),
    "inline-secret.yaml": "version: 1\ntargets: { t: { location: /tmp/x, password: hunter2 } }\n",
  };

  beforeAll(async () => {
    for (const [name, text] of Object.entries(configs)) await writeFile(join(base, name), text);
    await mkdir(join(base, "config-dir.yaml"));
    damaged = await TestRepo.init(join(base, "repo-damaged"));
    await damaged.backup([join(base, "src")]);
    await damaged.backup([join(base, "src", "sub")]);
    // A second key file without `created` and a third that is not JSON.
    const keys = join(damaged.dir, "keys");
    const [key] = await readdir(keys);
    const file = JSON.parse(await readFile(join(keys, key!), "utf8")) as Record<string, unknown>;
    delete file.created;
    await writeFile(join(keys, "1".repeat(64)), JSON.stringify(file));
    await writeFile(join(keys, "2".repeat(64)), "{ not json");
    // One index file and one snapshot file overwritten with garbage.
    const [index] = await readdir(join(damaged.dir, "index"));
    await chmod(join(damaged.dir, "index", index!), 0o644);
    await writeFile(join(damaged.dir, "index", index!), "garbage");
    [damagedSnapshot] = (await readdir(join(damaged.dir, "snapshots"))) as [string];
    await chmod(join(damaged.dir, "snapshots", damagedSnapshot), 0o644);
    await writeFile(join(damaged.dir, "snapshots", damagedSnapshot), Buffer.alloc(64, 7));
  });

  it("configs: every malformed file gets a diagnostic or an error naming it", async () => {
    const names = [...Object.keys(configs), "config-dir.yaml", "missing.yaml"];
    const results = await inBatches(
      names.map((name) => () => runCli(["config", "check", "-c", join(base, name)])),
    );
    names.forEach((name, i) => {
      expectClean(`config check ${name}`, results[i]!);
      expect(`${results[i]!.stdout}${results[i]!.stderr}`, name).toContain(name);
    });
    const bomb = await runCli(["config", "check", "-c", join(base, "alias-bomb.yaml")]);
    expect(bomb.stdout + bomb.stderr).toMatch(/alias-bomb\.yaml:3:\d+ .*aliases expand too far/);
    const run = await runCli(["run", "-c", join(base, "alias-bomb.yaml")]);
    expectClean("run -c alias-bomb.yaml", run);
  });

  it("repositories, paths and options", async () => {
    const r = (args: string[], cwd?: string) => repo.run(args, cwd === undefined ? {} : { cwd });
    const d = (args: string[]) => damaged.run(args);
    const cases: [string, () => Promise<RunResult>][] = [
      [
        "init under /proc",
        () => runCli(["-r", "/proc/self/x", "-p", repo.passwordFile, "init"], { timeoutMs: 20_000 }),
      ],
      ["init over a file", () => runCli(["-r", repo.passwordFile, "-p", repo.passwordFile, "init"])],
      [
        "a repository that does not exist",
        () => runCli(["-r", join(base, "nowhere"), "-p", repo.passwordFile, "snapshots"]),
      ],
      ["an empty repository location", () => runCli(["-r", "", "-p", repo.passwordFile, "snapshots"])],
      [
        "a wrong password",
        () => runCli(["-r", repo.dir, "snapshots"], { env: { BULWARK_PASSWORD: "wrong" } }),
      ],
      [
        "a missing password file",
        () => runCli(["-r", repo.dir, "-p", join(base, "no-such-file"), "snapshots"]),
      ],
      ["restore without a target", () => r(["restore", "latest"])],
      ["restore of an unknown snapshot", () => r(["restore", "deadbeef", "--target", join(base, "x")])],
      [
        "restore --include ''",
        () => r(["restore", "latest", "--target", join(base, "inc"), "--include", ""]),
      ],
      ["restore into a file", () => r(["restore", "latest", "--target", repo.passwordFile])],
      ["restore under /proc", () => r(["restore", "latest", "--target", "/proc/self/x/y"])],
      ["backup of a missing path", () => r(["backup", join(base, "no-such-dir")])],
      ["backup --source garbage", () => r(["backup", "--source", "garbage"])],
      ["backup --source of an unknown type", () => r(["backup", "--source", "ftp:x=y"])],
      ["check --read-data-subset 200%", () => r(["check", "--read-data-subset", "200%"])],
      ["check --read-data-subset abc", () => r(["check", "--read-data-subset", "abc"])],
      ["forget --keep-last x", () => r(["forget", "--keep-last", "x"])],
      ["an unknown command", () => r(["frobnicate"])],
      ["an unknown option", () => r(["snapshots", "--frobnicate"])],
      ["key list with a malformed key file", () => d(["key", "list"])],
      ["check of a damaged index and snapshot", () => d(["check"])],
      [
        "restore of the damaged snapshot",
        () => d(["restore", damagedSnapshot, "--target", join(base, "dmg")]),
      ],
    ];
    const results = await inBatches(cases.map(([, run]) => run));
    cases.forEach(([what], i) => expectClean(what, results[i]!));
    // The damaged files are named, and the repository still opens with the sound key.
    const keyList = await d(["key", "list"]);
    expect(keyList.stderr).toMatch(/key\/111111111111: malformed key file: no `created`/);
    const listed = await d(["--json", "snapshots"]);
    expect(listed.stderr).not.toMatch(/^\s+at /m);
    expect((JSON.parse(listed.stdout) as unknown[]).length).toBe(1);
  }, 60_000);
});
