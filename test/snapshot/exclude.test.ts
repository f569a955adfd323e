import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { ExcludeMatcher } from "../../src/snapshot/exclude.js";
import { bulwarkRejection as rejection } from "../helpers/errors.js";

const matcher = (patterns: string[], env: NodeJS.ProcessEnv = {}): Promise<ExcludeMatcher> =>
  ExcludeMatcher.fromOptions(patterns, [], env);

/** Asserts which of the paths a set of patterns excludes and which it keeps. */
async function expectMatches(patterns: string[], excluded: string[], kept: string[]): Promise<void> {
  const m = await matcher(patterns);
  for (const path of excluded) expect(m.isExcluded(path), `${path} should be excluded`).toBe(true);
  for (const path of kept) expect(m.isExcluded(path), `${path} should be kept`).toBe(false);
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bulwark-exclude-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("ExcludeMatcher patterns", () => {
  it("excludes nothing without patterns", async () => {
    const m = await matcher([]);
    expect(m.isExcluded("/home/u/file")).toBe(false);
    expect(m.patterns).toEqual([]);
  });

  it("matches a slash-free pattern against whole components at any depth", async () => {
    await expectMatches(
      ["*.log", "node_modules"],
      ["/var/log/syslog.log", "/a.log", "/p/node_modules", "/p/node_modules/x/index.js", "/x.log/inner"],
      ["/var/log/syslog.log1", "/p/node_modules_old", "/p/my_node_modules/x", "/p/log", "/"],
    );
  });

  it("lets `*` and `?` match dot files but not cross `/`", async () => {
    await expectMatches(
      ["b*ash", "?.txt", "?rc"],
      ["/bin/bash", "/bin/bxash", "/a.txt", "/d/..txt", "/home/u/.rc"],
      ["/bin/ash", "/b/ash", "/ab.txt", "/d/.txt", "/d/x/rc"],
    );
    await expectMatches(["*"], ["/.hidden", "/anything/at/all"], ["/"]);
  });

  it("anchors a pattern with a leading `/` at the root", async () => {
    await expectMatches(
      ["/bin", "/home/*/.cache"],
      ["/bin", "/bin/bash", "/home/ann/.cache", "/home/ann/.cache/x/y"],
      ["/usr/bin/restic", "/binary", "/x/home/ann/.cache", "/home/.cache", "/home/a/b/.cache"],
    );
  });

  it("matches a pattern with an inner `/` against a run of components anywhere", async () => {
    await expectMatches(
      ["foo/bar"],
      ["/x/foo/bar", "/foo/bar", "/x/y/foo/bar/baz"],
      ["/x/foo", "/x/foo/baz/bar", "/x/foobar/bar", "/x/afoo/bar"],
    );
  });

  it("lets `**` span any number of directories, including none", async () => {
    await expectMatches(
      ["foo/**/bar", "/var/**/*.tmp"],
      ["/dir1/foo/dir2/bar/file", "/foo/bar/file", "/tmp/foo/bar", "/var/a/b/c.tmp", "/var/c.tmp"],
      ["/foo/barx", "/usr/var/x.tmp", "/var/a/b/c.tmpx"],
    );
  });

  it("treats a leading `**/` as any depth, and `**` or `/` alone as everything", async () => {
    await expectMatches(["**/foo"], ["/foo", "/a/b/foo/c"], ["/afoo", "/a/foox"]);
    await expectMatches(["/**/foo"], ["/foo", "/a/b/foo/c"], ["/afoo"]);
    await expectMatches(["foo/**"], ["/foo", "/a/foo/c"], ["/a/foox"]);
    await expectMatches(["**"], ["/a", "/a/b"], ["/"]);
    await expectMatches(["/"], ["/a", "/a/b"], ["/"]);
  });

  it("matches file names containing newlines", async () => {
    await expectMatches(["foo/**/bar", "*.log"], ["/foo/a\nb/bar", "/x/line\nbreak.log"], ["/foo/a\nb/baz"]);
  });

  it("ignores a trailing `/`", async () => {
    await expectMatches(["cache/", "/srv/"], ["/a/cache", "/a/cache/x", "/srv/y"], ["/a/cached", "/a/srv"]);
  });

  it("supports character classes, negated with ^ or !", async () => {
    await expectMatches(
      ["file[0-9].txt", "[^a]b", "x[!y]z"],
      ["/file3.txt", "/cb", "/xaz"],
      ["/filea.txt", "/ab", "/xyz", "/x/z"],
    );
  });

  it("treats picomatch's own syntax and escaped characters as literal file name text", async () => {
    await expectMatches(
      ["file(1).txt", "a{b,c}", "+(x)", "@home", "$RECYCLE.BIN", "with space", "\\*star", "a\\[b"],
      ["/d/file(1).txt", "/a{b,c}", "/+(x)", "/@home", "/$RECYCLE.BIN/x", "/with space", "/*star", "/a[b"],
      ["/d/file1.txt", "/ab", "/x", "/home", "/xRECYCLE.BIN", "/withspace", "/xstar", "/ab"],
    );
  });

  it("lets a later `!pattern` re-include, and the last matching rule wins", async () => {
    await expectMatches(
      ["*.log", "!keep.log", "/data/*", "!/data/important"],
      ["/a/x.log", "/data/junk", "/data/junk/file"],
      ["/a/keep.log", "/data/important", "/data/important/file", "/data"],
    );
    // Order matters: excluding after the re-include excludes again.
    await expectMatches(["!keep.log", "*.log"], ["/a/keep.log"], ["/a/keep.txt"]);
  });

  it("cannot re-include a file inside an excluded directory", async () => {
    // The walker never enters node_modules, so a rule for files inside it cannot apply.
    await expectMatches(
      ["node_modules", "!package.json", "!/app/node_modules/keep/**"],
      ["/app/node_modules/package.json", "/app/node_modules/keep/a"],
      ["/app/package.json"],
    );
  });

  it("handles paths with a trailing slash", async () => {
    await expectMatches(["tmp"], ["/a/tmp/"], ["/a/tmpx/"]);
  });

  it("rejects a relative path, which would be a caller bug", async () => {
    const m = await matcher(["x"]);
    expect(() => m.isExcluded("relative/x")).toThrow(/absolute path/);
  });

  it("rejects malformed patterns as usage errors", async () => {
    for (const bad of ["a[b", "trailing\\", "!"]) {
      const err = await rejection(matcher([bad]));
      expect(err.code).toBe("USAGE");
    }
  });

  it("does not expand variables in --exclude patterns, which the shell already expanded", async () => {
    const m = await matcher(["$HOME"], { HOME: "/home/ann" });
    expect(m.patterns).toEqual(["$HOME"]);
    expect(m.isExcluded("/x/$HOME")).toBe(true);
    expect(m.isExcluded("/home/ann")).toBe(false);
  });
});

describe("ExcludeMatcher exclude files", () => {
  it("reads one pattern per line, skipping comments and blank lines, trimming spaces", async () => {
    const file = join(dir, "excludes.txt");
    await writeFile(
      file,
      "\uFEFF# build output\n  *.o  \r\n\n   # indented comment\nfoo bar star.txt\n\t/tmp/\n",
    );
    const m = await ExcludeMatcher.fromOptions(["*.c"], [file], {});
    expect(m.patterns).toEqual(["*.c", "*.o", "foo bar star.txt", "/tmp/"]);
    expect(m.isExcluded("/src/main.o")).toBe(true);
    expect(m.isExcluded("/docs/foo bar star.txt")).toBe(true);
    expect(m.isExcluded("/src/main.c")).toBe(true);
    expect(m.isExcluded("/src/main.h")).toBe(false);
  });

  it("expands $VAR and ${VAR} from the given environment, and $$ to $", async () => {
    const file = join(dir, "vars.txt");
    await writeFile(file, "$HOME/*\n!${HOME}/Documents\n$$RECYCLE.BIN\n");
    const m = await ExcludeMatcher.fromOptions([], [file], { HOME: "/home/bob" });
    expect(m.patterns).toEqual(["/home/bob/*", "!/home/bob/Documents", "$RECYCLE.BIN"]);
    expect(m.isExcluded("/home/bob/Music/song.mp3")).toBe(true);
    expect(m.isExcluded("/home/bob/Documents/cv.pdf")).toBe(false);
    expect(m.isExcluded("/mnt/win/$RECYCLE.BIN")).toBe(true);
  });

  it("refuses an unset variable instead of expanding it to nothing", async () => {
    const file = join(dir, "unset.txt");
    await writeFile(file, "# fine\n$NOPE/*\n");
    const err = await rejection(ExcludeMatcher.fromOptions([], [file], {}));
    expect(err.code).toBe("USAGE");
    expect(err.message).toBe(`${file}:2: $NOPE is not set in the environment`);
  });

  it("reports a missing exclude file as a usage error naming it", async () => {
    const missing = join(dir, "nope.txt");
    const err = await rejection(ExcludeMatcher.fromOptions([], [missing], {}));
    expect(err.code).toBe("USAGE");
    expect(err.message).toBe(`cannot read exclude file ${missing}: no such file or directory`);
  });

  it("applies files after command line patterns, so a file can re-include", async () => {
    const file = join(dir, "reinclude.txt");
    await writeFile(file, "!important.log\n");
    const m = await ExcludeMatcher.fromOptions(["*.log"], [file], {});
    expect(m.isExcluded("/var/important.log")).toBe(false);
    expect(m.isExcluded("/var/other.log")).toBe(true);
  });
});

describe("ExcludeMatcher speed", () => {
  it("checks 100k paths quickly", async () => {
    const m = await matcher([
      "*.log",
      "*.tmp",
      "node_modules",
      ".git",
      "/proc",
      "/home/*/.cache",
      "build/**/*.o",
      "!keep.log",
      "__pycache__",
      "*~",
    ]);
    const paths: string[] = [];
    for (let i = 0; i < 100_000; i++) {
      const ext = ["ts", "js", "log", "json", "md"][i % 5] ?? "txt";
      paths.push(
        `/home/user${i % 7}/projects/app${i % 13}/src/module${i % 101}/dir${i % 17}/file${i}.${ext}`,
      );
    }
    const start = performance.now();
    let excluded = 0;
    for (const path of paths) if (m.isExcluded(path)) excluded++;
    const elapsedMs = performance.now() - start;
    console.log(`ExcludeMatcher: 100,000 isExcluded calls took ${elapsedMs.toFixed(1)} ms`);
    expect(excluded).toBe(20_000);
  });
});
