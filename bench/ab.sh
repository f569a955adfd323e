#!/usr/bin/env bash
# A/B of two builds of Bulwark on the bench dataset and repository, run alternately so that the machine's
# drift affects both alike: is a change slower than the build before it?
#
#   bash bench/ab.sh REV [RUNS]     # REV: the build to compare HEAD's dist/ with, e.g. a commit before a change
#
# Needs a finished `bash bench/run.sh` (bench/work/src and bench/work/repo-bulwark) and HEAD built. REV is
# checked out in a temporary worktree, built with this checkout's node_modules (the lockfiles must match),
# and removed afterwards. Per run and build: restore latest into a temporary directory, check --read-data,
# a first backup into a fresh repository and an unchanged re-backup. Prints one line per measurement.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
REV=${1:?usage: bash bench/ab.sh REV [RUNS]}
RUNS=${2:-3}
WORK=$BENCH_DIR/work
[ -d "$WORK/repo-bulwark" ] && [ -d "$WORK/src" ] || {
  echo "ab.sh: run bash bench/run.sh first (it leaves bench/work/src and bench/work/repo-bulwark)" >&2
  exit 1
}
BASE=$(mktemp -d "${TMPDIR:-/tmp}/bulwark-ab.XXXXXX")
cleanup() {
  git -C "$ROOT" worktree remove --force "$BASE/tree" >/dev/null 2>&1 || true
  rm -rf "$BASE"
}
trap cleanup EXIT
git -C "$ROOT" worktree add --detach "$BASE/tree" "$REV" >/dev/null
ln -s "$ROOT/node_modules" "$BASE/tree/node_modules"
(cd "$BASE/tree" && npx tsc -p tsconfig.build.json)

export BULWARK_PASSWORD=${BULWARK_PASSWORD:-bench-password}
export MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072
measure() { # label js args...
  local label=$1 js=$2
  shift 2
  /usr/bin/time -f "$label wall=%e cpu=%U+%S rss=%MKB" node "$js" "$@" -q 2>&1 >/dev/null | tail -n 1
}
for i in $(seq "$RUNS"); do
  for v in before after; do
    if [ "$v" = before ]; then js=$BASE/tree/dist/cli/main.js; else js=$ROOT/dist/cli/main.js; fi
    rm -rf "$BASE/restore" "$BASE/repo"
    measure "$v restore" "$js" restore latest --repo "$WORK/repo-bulwark" --target "$BASE/restore"
    measure "$v check" "$js" check --repo "$WORK/repo-bulwark" --read-data
    node "$js" init --repo "$BASE/repo" -q >/dev/null
    measure "$v backup" "$js" backup --repo "$BASE/repo" "$WORK/src"
    measure "$v rebackup" "$js" backup --repo "$BASE/repo" "$WORK/src"
  done
done
