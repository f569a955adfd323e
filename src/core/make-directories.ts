/**
 * Creating a directory with its missing parents, in place of `mkdir(path, { recursive: true })`: Node's
 * recursive mkdir loops forever (100 % CPU) under a path where mkdir fails with ENOENT although the parent
 * exists, such as /proc/self/x. Here each missing component is created once, parent first; a failure is the
 * system error of that mkdir or stat (callers word it, as for any file system error), and an ancestor that
 * is not a directory a BulwarkError.
 *
 * 1. Walk up from the path to the first ancestor that exists (stat); it must be a directory.
 * 2. Create each missing component from the top down (non-recursive mkdir; EEXIST from a racing creator is
 *    fine when it made a directory).
 */
import { mkdirSync, statSync } from "node:fs";
import { mkdir, stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";

import { BulwarkError, errnoCode } from "./errors.js";

function notDirectory(dir: string): BulwarkError {
  return new BulwarkError("IO", `cannot create a directory below ${dir}: it is not a directory`, {
    hint: "check the path",
  });
}

/** Creates `path` and its missing parents (see the module comment); `mode` applies to those created. */
export async function makeDirectories(path: string, mode?: number): Promise<void> {
  const missing: string[] = [];
  for (let dir = resolve(path); ; ) {
    try {
      if (!(await stat(dir)).isDirectory()) throw notDirectory(dir);
      break;
    } catch (err) {
      if (err instanceof BulwarkError) throw err;
      if (errnoCode(err) !== "ENOENT") throw err;
    }
    missing.push(dir);
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  for (const dir of missing.reverse()) {
    try {
      await mkdir(dir, mode === undefined ? {} : { mode });
    } catch (err) {
      if (errnoCode(err) !== "EEXIST") throw err;
      if (!(await stat(dir)).isDirectory()) throw notDirectory(dir);
    }
  }
}

/** makeDirectories, synchronously. */
export function makeDirectoriesSync(path: string, mode?: number): void {
  const missing: string[] = [];
  for (let dir = resolve(path); ; ) {
    try {
      if (!statSync(dir).isDirectory()) throw notDirectory(dir);
      break;
    } catch (err) {
      if (err instanceof BulwarkError) throw err;
      if (errnoCode(err) !== "ENOENT") throw err;
    }
    missing.push(dir);
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  for (const dir of missing.reverse()) {
    try {
      mkdirSync(dir, mode === undefined ? {} : { mode });
    } catch (err) {
      if (errnoCode(err) !== "EEXIST") throw err;
      if (!statSync(dir).isDirectory()) throw notDirectory(dir);
    }
  }
}
