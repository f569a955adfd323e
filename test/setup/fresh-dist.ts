/**
 * Vitest global setup: the end-to-end suites run the built CLI in dist/, so a dist/ older than src/, or one
 * holding files whose source was moved or deleted, would test yesterday's code (a moved entry point once
 * passed locally on a leftover dist/vault/main.js and failed in CI). Before any test runs, dist/ is rebuilt
 * from scratch when it is missing, older than any source file, or holds an output with no source.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const SRC = join(ROOT, "src");
const DIST = join(ROOT, "dist");

function* files(dir: string): Generator<string> {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* files(path);
    else yield path;
  }
}

/** Why dist/ cannot be trusted, or undefined when it matches src/. */
export function staleReason(): string | undefined {
  if (!existsSync(join(DIST, "cli", "main.js"))) return "dist/ is missing";
  let newestSource = 0;
  const sources = new Set<string>();
  for (const path of files(SRC)) {
    // tsconfig.build.json leaves the test-only testing/ folders out of dist/.
    if (!path.endsWith(".ts") || path.endsWith(".test.ts") || path.includes("/testing/")) continue;
    sources.add(relative(SRC, path).replace(/\.ts$/, ""));
    newestSource = Math.max(newestSource, statSync(path).mtimeMs);
  }
  let oldestOutput = Infinity;
  for (const path of files(DIST)) {
    if (!path.endsWith(".js")) continue;
    const name = relative(DIST, path).replace(/\.js$/, "");
    if (!sources.has(name)) return `dist/${name}.js has no source in src/ (moved or deleted)`;
    oldestOutput = Math.min(oldestOutput, statSync(path).mtimeMs);
  }
  for (const name of sources) {
    if (!existsSync(join(DIST, `${name}.js`))) return `src/${name}.ts was never built`;
  }
  if (newestSource > oldestOutput) return "src/ changed since the last build";
  return undefined;
}

/**
 * Builds into a fresh directory beside dist/ and swaps it in, so that a test run elsewhere in the same
 * checkout (another vitest process) never finds dist/ half-deleted, and a build that fails leaves the old
 * dist/ in place.
 */
export default function setup(): void {
  const reason = staleReason();
  if (reason === undefined) return;
  process.stderr.write(`test setup: rebuilding dist/ (${reason})\n`);
  const fresh = `${DIST}.build-${process.pid}`;
  const old = `${DIST}.old-${process.pid}`;
  rmSync(fresh, { recursive: true, force: true });
  try {
    execFileSync("npx", ["tsc", "-p", "tsconfig.build.json", "--outDir", fresh], {
      cwd: ROOT,
      stdio: "inherit",
    });
  } catch (err) {
    // A failed build leaves the old dist/ as it was, and nothing beside it.
    rmSync(fresh, { recursive: true, force: true });
    throw err;
  }
  if (existsSync(DIST)) renameSync(DIST, old);
  renameSync(fresh, DIST);
  rmSync(old, { recursive: true, force: true });
}
