/**
 * Which paths a backup leaves out: --exclude PATTERN and --exclude-file FILE, with restic's rules.
 *
 * Users move between restic and Bulwark with the same exclude files, so the semantics follow restic:
 * - patterns are matched against the absolute path, one whole path component at a time
 *   (`foo` matches /a/foo and /a/foo/b, never /a/foobar);
 * - a pattern without `/` matches a component at any depth (`*.log`, `node_modules`);
 * - a pattern starting with `/` is anchored at the root (`/var/tmp`);
 * - any other pattern with a `/` matches a run of components anywhere (`foo/bar` matches /x/foo/bar);
 * - `*`, `?` and `[...]` stay within one component; `**` spans any number of directories;
 *   a trailing `/` is ignored, `\` escapes the next character (`[!...]` also negates a class, as in
 *   a shell, where Go would read the `!` literally);
 * - `!pattern` re-includes what earlier patterns excluded: the last matching pattern wins;
 * - a path is also excluded when a parent directory is, since the walker never enters an excluded
 *   directory (as with .gitignore, `!` cannot bring back a file inside one);
 * - in exclude files, `$VAR` and `${VAR}` are expanded from the environment and `$$` is a literal `$`.
 *
 * One deliberate difference from restic: a variable that is not set is an error, not an empty string.
 * An unset `$HOME` would turn `$HOME/*` into `/*` and silently exclude everything.
 *
 * Patterns are translated to picomatch globs and compiled to regular expressions once; isExcluded
 * runs for every file of a backup, so the common case (no pattern matches) is one regex test.
 */

import { readFile } from "node:fs/promises";

import picomatch from "picomatch";

import { BulwarkError } from "../core/errors.js";
import { formatIoReason } from "../core/format.js";

interface CompiledRule {
  readonly negated: boolean;
  /** Finds the pattern in an absolute path: true when it matches the path or one of its parents. */
  readonly regex: RegExp;
}

/** A pattern and where it came from, for error messages. */
interface PatternSource {
  readonly pattern: string;
  readonly origin: string;
}

const PICOMATCH_OPTIONS: picomatch.PicomatchOptions = {
  // Go's filepath.Match, which restic uses, lets `*` match a leading dot.
  dot: true,
  // restic has no braces or extglobs; `{a,b}` and `+(x)` must stay literal file name characters.
  nobrace: true,
  noextglob: true,
  nonegate: true,
  // Leave out the ^...$ anchors: compileRule decides where a match may start and end.
  contains: true,
  // The fast path for simple globs is a separate code path; one code path means one behaviour to test.
  fastpaths: false,
};

const MATCH_EVERYTHING = /^\/./s;

export class ExcludeMatcher {
  /** The effective patterns in evaluation order (command line first, then files; variables expanded). */
  readonly patterns: string[];
  private readonly rules: readonly CompiledRule[];
  private readonly hasNegations: boolean;
  /** All rules in one alternation: when it fails, no rule matches and the path is included. */
  private readonly anyRule: RegExp | undefined;

  private constructor(sources: readonly PatternSource[]) {
    this.patterns = sources.map((s) => s.pattern);
    this.rules = sources.map(compileRule);
    this.hasNegations = this.rules.some((r) => r.negated);
    this.anyRule =
      this.rules.length === 0
        ? undefined
        : new RegExp(this.rules.map((r) => `(?:${r.regex.source})`).join("|"), "s");
  }

  /**
   * Patterns from --exclude (taken as they are: the shell already expanded them) followed by those of
   * each --exclude-file in order, so a file can re-include with `!` what the command line excluded.
   */
  static async fromOptions(
    patterns: string[],
    files: string[],
    env: NodeJS.ProcessEnv,
  ): Promise<ExcludeMatcher> {
    const sources: PatternSource[] = [];
    for (const pattern of patterns) {
      if (pattern.trim() !== "") sources.push({ pattern, origin: "--exclude" });
    }
    for (const file of files) sources.push(...(await readExcludeFile(file, env)));
    return new ExcludeMatcher(sources);
  }

  /** Whether the backup leaves out this absolute path (and, for a directory, everything in it). */
  isExcluded(absPath: string): boolean {
    if (this.anyRule === undefined) return false;
    if (absPath.charCodeAt(0) !== 0x2f /* "/" */) {
      throw new Error(`ExcludeMatcher.isExcluded needs an absolute path, got ${JSON.stringify(absPath)}`);
    }
    if (!this.anyRule.test(absPath)) return false;
    if (!this.hasNegations) return true;

    // With re-includes, the last matching rule decides. When that is a re-include, a parent directory
    // may still be excluded on its own, and then the walker never gets here: check each parent.
    if (this.lastMatchExcludes(absPath)) return true;
    for (let slash = absPath.indexOf("/", 1); slash !== -1; slash = absPath.indexOf("/", slash + 1)) {
      if (this.lastMatchExcludes(absPath.slice(0, slash))) return true;
    }
    return false;
  }

  private lastMatchExcludes(absPath: string): boolean {
    for (let i = this.rules.length - 1; i >= 0; i--) {
      const rule = this.rules[i];
      if (rule !== undefined && rule.regex.test(absPath)) return !rule.negated;
    }
    return false;
  }
}

async function readExcludeFile(path: string, env: NodeJS.ProcessEnv): Promise<PatternSource[]> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new BulwarkError("USAGE", `cannot read exclude file ${path}: ${formatIoReason(err)}`, {
      cause: err,
    });
  }
  const sources: PatternSource[] = [];
  // A byte order mark from a Windows editor would otherwise become part of the first pattern.
  const lines = text.replace(/^\uFEFF/, "").split("\n");
  lines.forEach((rawLine, index) => {
    const line = rawLine.trim(); // also drops the "\r" of CRLF files
    if (line === "" || line.startsWith("#")) return;
    const origin = `${path}:${index + 1}`;
    sources.push({ pattern: expandVariables(line, env, origin), origin });
  });
  return sources;
}

/** `$NAME`, `${NAME}` and `$$`, as in a shell; a `$` before anything else stays literal. */
function expandVariables(line: string, env: NodeJS.ProcessEnv, origin: string): string {
  return line.replace(
    /\$(?:(\$)|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*)|(\{))/g,
    (match, dollar?: string, braced?: string, bare?: string, unclosed?: string) => {
      if (dollar !== undefined) return "$";
      if (unclosed !== undefined) {
        throw new BulwarkError("USAGE", `${origin}: unterminated \${ in ${JSON.stringify(line)}`, {
          hint: "write $$ for a literal dollar sign",
        });
      }
      const name = braced ?? bare ?? "";
      const value = /^[A-Za-z_][A-Za-z0-9_]*$/.test(name) ? env[name] : undefined;
      if (value === undefined) {
        throw new BulwarkError("USAGE", `${origin}: ${match} is not set in the environment`, {
          hint: "set the variable, or write $$ for a literal dollar sign",
        });
      }
      return value;
    },
  );
}

function compileRule(source: PatternSource): CompiledRule {
  const negated = source.pattern.startsWith("!");
  let pattern = negated ? source.pattern.slice(1) : source.pattern;
  let anchored = pattern.startsWith("/");
  pattern = pattern.replace(/^\/+/, "").replace(/\/+$/, "");
  if (pattern === "" && !anchored) {
    throw new BulwarkError("USAGE", `${source.origin}: ${JSON.stringify(source.pattern)} is not a pattern`);
  }
  // A leading `**/` means "at any depth", which is what an unanchored pattern does anyway. Dropping
  // it keeps every compiled body starting at a plain component.
  while (pattern.startsWith("**/")) {
    pattern = pattern.slice(3);
    anchored = false;
  }
  // "/" names the root and "**" any path: either way, everything.
  if (pattern === "" || pattern === "**") return { negated, regex: MATCH_EVERYTHING };

  const body = picomatch.makeRe(toPicomatchGlob(pattern, source), PICOMATCH_OPTIONS).source;
  // A match must cover whole components: it starts at the root (anchored) or right after any "/",
  // and ends at the end of the path or before a "/". Ending before a "/" is what makes a pattern
  // that matches a directory match everything below it too. The `s` flag lets picomatch's `.`
  // match newlines, which are legal in file names.
  return { negated, regex: new RegExp(`${anchored ? "^/" : "/"}${body}(?=/|$)`, "s") };
}

/**
 * Rewrites a pattern in Go filepath.Match syntax (what restic users write) as a picomatch glob that
 * means the same: `*`, `?`, `**` and `[...]` pass through, and every other punctuation character is
 * escaped so picomatch cannot read it as one of its own extensions (`(`, `{`, `+`, `@`, `!`, ...).
 */
function toPicomatchGlob(pattern: string, source: PatternSource): string {
  const invalid = (why: string): BulwarkError =>
    new BulwarkError("USAGE", `${source.origin}: invalid pattern ${JSON.stringify(source.pattern)}: ${why}`);
  let glob = "";
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern.charAt(i);
    if (ch === "*" || ch === "?" || ch === "/") {
      glob += ch;
    } else if (ch === "\\") {
      if (i + 1 >= pattern.length) throw invalid("it ends with a lone \\");
      glob += escapeLiteral(pattern.charAt(++i));
    } else if (ch === "[") {
      const end = findClassEnd(pattern, i);
      if (end === -1) throw invalid("a [ has no matching ]");
      glob += translateClass(pattern.slice(i + 1, end));
      i = end;
    } else {
      glob += escapeLiteral(ch);
    }
  }
  return glob;
}

/** The index of the `]` closing the class opened at `open`, or -1. A `]` first in the class is literal. */
function findClassEnd(pattern: string, open: number): number {
  let i = open + 1;
  if (pattern.charAt(i) === "^" || pattern.charAt(i) === "!") i++;
  if (pattern.charAt(i) === "]") i++;
  for (; i < pattern.length; i++) {
    const ch = pattern.charAt(i);
    if (ch === "\\") i++;
    else if (ch === "]") return i;
  }
  return -1;
}

/** A character class body (between the brackets) in picomatch syntax. `[!...]` is read as `[^...]`. */
function translateClass(body: string): string {
  let i = 0;
  let out = "[";
  if (body.charAt(0) === "^" || body.charAt(0) === "!") {
    out += "^";
    i = 1;
  }
  for (; i < body.length; i++) {
    const ch = body.charAt(i);
    if (ch === "\\" && i + 1 < body.length) out += escapeInClass(body.charAt(++i));
    else if (ch === "-") out += "-";
    else out += escapeInClass(ch);
  }
  return `${out}]`;
}

/** ASCII punctuation is where picomatch's syntax lives; letters, digits, spaces and non-ASCII pass. */
function escapeLiteral(ch: string): string {
  return /[!-/:-@[-`{-~]/.test(ch) ? `\\${ch}` : ch;
}

function escapeInClass(ch: string): string {
  return ch === "\\" || ch === "]" || ch === "[" || ch === "^" || ch === "-" ? `\\${ch}` : ch;
}
