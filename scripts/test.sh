#!/usr/bin/env bash
# The one command that installs what is needed and runs every check: `npm test` (and `.ci/run` in CI).
#
#   npm test                       # install if needed, build, typecheck, lint, all tests
#   npm test -- test/chunker       # the same, but vitest runs only the tests named after `--`
#
# Steps:
#   1. Check the Node version (package.json "engines": >= 20.19).
#   2. `npm ci` when node_modules is missing or stale: no hidden lockfile, package-lock.json newer than
#      it, `npm ls` reporting a missing or wrong dependency, or a runtime dependency that does not load
#      (a native addon built for another Node or platform, or never built).
#   3. `npm run build` (the CLI end-to-end tests and the worker threads run the built dist/),
#      `npm run typecheck`, `npm run lint`, then `npx vitest run`.
# A failed build stops here (nothing after it would mean anything). Otherwise every step runs even when an
# earlier one failed, so one run shows every problem; the summary names the failed steps and the exit code
# is 1 if any failed.
#
# Under CI=true nothing is skipped silently: every step runs, vitest refuses `.only` (its CI default),
# tests that skip themselves when their build prerequisite is missing fail instead (they read CI), and
# every skipped test is listed by name at the end (always, not only in CI), so a skip is never invisible.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

log() { printf '\n==> %s\n' "$*" >&2; }
die() {
  printf 'test.sh: ERROR: %s\n' "$*" >&2
  exit 1
}

# 1. Node
command -v node >/dev/null || die "node is not installed (Bulwark needs Node.js >= 20.19)"
command -v npm >/dev/null || die "npm is not installed (it comes with Node.js)"
node -e '
  const [major, minor] = process.versions.node.split(".").map(Number);
  if (major < 20 || (major === 20 && minor < 19)) {
    console.error(`test.sh: ERROR: Node.js ${process.version} is too old; Bulwark needs >= 20.19`);
    process.exit(1);
  }
' || exit 1

# 2. dependencies
# Imports every runtime dependency of package.json: native addons (zstd, ssh2's optional crypto) fail here when they were
# built for another Node version or platform, or never built.
deps_load() {
  node --input-type=module -e '
    import { readFileSync } from "node:fs";
    const pkg = JSON.parse(readFileSync("package.json", "utf8"));
    for (const name of Object.keys(pkg.dependencies ?? {})) await import(name);
  '
}
install_reason() {
  if [ ! -d node_modules ]; then
    echo "node_modules is missing"
  elif [ ! -f node_modules/.package-lock.json ]; then
    echo "node_modules was not installed by npm (no node_modules/.package-lock.json)"
  elif [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "package-lock.json changed since the last install"
  elif ! npm ls --depth=0 >/dev/null 2>&1; then
    echo "npm ls reports missing or mismatched dependencies"
  elif ! deps_load >/dev/null 2>&1; then
    echo "a runtime dependency does not load with Node $(node --version)"
  fi
}
reason=$(install_reason)
if [ -n "$reason" ]; then
  log "npm ci ($reason)"
  npm ci || die "npm ci failed (the reason is above). If package.json and package-lock.json are out of sync,
       run \`npm install\` and commit the lock file. If building zstd-napi failed, install the tools to
       compile it: python3, make and a C++ compiler (Debian/Ubuntu: apt-get install python3 make g++)."
  deps_load || die "a runtime dependency still does not load after npm ci (see the error above)"
else
  log "dependencies are up to date (node_modules matches package-lock.json)"
fi

# 3. build, then every check
log "npm run build"
npm run build || die "the build failed; nothing else was run"

failed=()
run_step() {
  local name=$1
  shift
  log "$name"
  local rc=0
  "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    printf 'test.sh: %s failed (exit code %d)\n' "$name" "$rc" >&2
    failed+=("$name")
  fi
}

run_step "npm run typecheck" npm run typecheck
run_step "npm run lint" npm run lint

# 4. the real servers the tests run against, on 127.0.0.1: started once here (each script installs its Debian
# packages when they are missing) and stopped on exit. A test file run on its own starts what it needs itself.
started_services=()
stop_services() {
  [ "${BULWARK_KEEP_SERVICES:-}" = 1 ] && return 0 # keep them for the next run (and for others using them)
  for svc in "${started_services[@]}"; do bash "scripts/services/$svc.sh" down >/dev/null 2>&1 || true; done
}
for svc in ${BULWARK_TEST_SERVICES-ceph sshd postgres}; do
  [ -f "scripts/services/$svc.sh" ] || continue
  log "starting test service: $svc"
  if exports=$(bash "scripts/services/$svc.sh" up); then
    eval "$exports"
    started_services+=("$svc")
  elif [ "${CI:-}" = true ]; then
    stop_services
    die "the $svc test service did not start (see above): under CI the tests that need it would test nothing"
  else
    printf 'test.sh: %s did not start; the tests that need it will start it themselves or skip\n' "$svc" >&2
  fi
done

report=$(mktemp "${TMPDIR:-/tmp}/bulwark-vitest.XXXXXX.json")
trap 'rm -f "$report"; stop_services' EXIT
run_step "npx vitest run" npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@"

# Skipped and failed tests by name: a skip is a decision someone should be able to see.
if [ -s "$report" ]; then
  node -e '
    const report = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const lines = { skipped: [], todo: [], failed: [] };
    for (const file of report.testResults ?? []) {
      const rel = require("path").relative(process.cwd(), file.name);
      for (const t of file.assertionResults ?? []) {
        const key = t.status === "pending" || t.status === "skipped" ? "skipped" : t.status;
        if (key in lines) lines[key].push(`  ${rel} > ${t.fullName}`);
      }
      if (file.status === "failed" && (file.assertionResults ?? []).length === 0) {
        lines.failed.push(`  ${rel}: ${String(file.message ?? "the file failed to load").split("\n")[0]}`);
      }
    }
    for (const [kind, list] of Object.entries(lines)) {
      if (list.length > 0) console.error(`\n${kind} tests (${list.length}):\n${list.join("\n")}`);
    }
  ' "$report" || true
elif [ "${CI:-}" = true ]; then
  printf 'test.sh: vitest wrote no report, so skipped tests cannot be listed\n' >&2
  failed+=("vitest report")
fi

echo >&2
if [ ${#failed[@]} -gt 0 ]; then
  printf 'test.sh: FAILED: %s\n' "$(IFS=,; echo "${failed[*]}" | sed 's/,/, /g')" >&2
  exit 1
fi
printf 'test.sh: all checks passed (build, typecheck, lint, tests)\n' >&2
