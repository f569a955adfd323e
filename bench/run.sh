#!/usr/bin/env bash
# Bulwark vs restic vs borg on a deterministic dataset (see /work/shared/PERF-NOTES.md).
#
#   npm run bench                                    # all tools, 1 GiB, one run
#   BENCH_TOOLS="restic borg" BENCH_SIZE=64MiB bash bench/run.sh
#
# Environment (all optional):
#   BENCH_TOOLS   tools in the order they run            (default "restic borg bulwark")
#   BENCH_SIZE    dataset size for gen-dataset.mjs        (default 1GiB)
#   BENCH_SEED    dataset seed                            (default bench1)
#   BENCH_MUTATION_SEED  mutate.mjs seed                  (default m1)
#   BENCH_RUNS    repetitions; the report takes medians   (default 1)
#   BENCH_BUILD=1 run `npm run build` even if dist/ exists
#   BENCH_KEEP=1  keep the restored trees
#   RESTIC_PASSWORD / BORG_PASSPHRASE / BULWARK_PASSWORD  (default "bench-password")
#
# Per run: cp -a the dataset to bench/work/src, read it once to warm the page cache (dropping
# the cache is not possible in a container), then
#   phase 1, each tool: init, first backup, unchanged re-backup
#   mutate bench/work/src once (mutate.mjs, ~2%)
#   phase 2, each tool: backup after mutation, restore latest into a fresh dir,
#                        byte-identity check against bench/work/src, full data check
# so every tool sees the same data in the same order. Every tool step runs under
# /usr/bin/time (wall, user+sys CPU, max RSS); repository sizes by du -sb. Raw results:
# bench/work/results.jsonl; table: bench/work/report.md (printed at the end).
set -euo pipefail
trap 'echo "bench/run.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
TOOLS=${BENCH_TOOLS:-"restic borg bulwark"}
SIZE=${BENCH_SIZE:-1GiB}
SEED=${BENCH_SEED:-bench1}
MSEED=${BENCH_MUTATION_SEED:-m1}
RUNS=${BENCH_RUNS:-1}
WORK=$BENCH_DIR/work
DATA=$BENCH_DIR/data/$SEED-$SIZE
SRC=$WORK/src
RESULTS=$WORK/results.jsonl
BULWARK_JS=$ROOT/dist/cli/main.js

export RESTIC_PASSWORD=${RESTIC_PASSWORD:-bench-password}
export BORG_PASSPHRASE=${BORG_PASSPHRASE:-bench-password}
export BULWARK_PASSWORD=${BULWARK_PASSWORD:-bench-password}
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_DISPLAY_PASSPHRASE=no

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
  printf 'bench: ERROR: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------
# arguments and prerequisites
for t in $TOOLS; do
  case $t in restic | borg | bulwark) ;; *) die "unknown tool '$t' in BENCH_TOOLS (use restic, borg, bulwark)" ;; esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer, got '$RUNS'"
wants() { [[ " $TOOLS " == *" $1 "* ]]; }

missing=()
wants restic && ! command -v restic >/dev/null && missing+=(restic)
wants borg && ! command -v borg >/dev/null && missing+=(borgbackup)
[ -x /usr/bin/time ] || missing+=(time)
command -v zstd >/dev/null || missing+=(zstd)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} with apt-get"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

if wants bulwark; then
  if [ ! -f "$BULWARK_JS" ] || [ "${BENCH_BUILD:-0}" = 1 ]; then
    log "building Bulwark (npm run build)"
    (cd "$ROOT" && npm run build) >&2 || log "npm run build failed"
  fi
  if [ ! -f "$BULWARK_JS" ]; then
    die "bulwark is in BENCH_TOOLS but $BULWARK_JS does not exist (npm run build did not produce it).
       The CLI is not built yet: build it, or run only the peers: BENCH_TOOLS=\"restic borg\" bash bench/run.sh"
  fi
fi

# ---------------------------------------------------------------------------------------
# dataset (generated once per seed and size; the .json stats file marks it complete)
if [ ! -f "$DATA.json" ]; then
  log "generating dataset $DATA (size $SIZE, seed $SEED)"
  rm -rf "$DATA" "$DATA.json"
  mkdir -p "$BENCH_DIR/data"
  node "$BENCH_DIR/gen-dataset.mjs" --out "$DATA" --size "$SIZE" --seed "$SEED" --stats "$DATA.json.tmp"
  log "measuring the zstd -3 ratio of a tar of the dataset"
  tar_bytes=$(tar -C "$DATA" -cf - . | wc -c)
  zstd_bytes=$(tar -C "$DATA" -cf - . | zstd -3 -T2 -c | wc -c)
  du_bytes=$(du -sb "$DATA" | cut -f1)
  node -e '
    const fs = require("fs");
    const [file, tar, z, du] = process.argv.slice(1);
    const s = JSON.parse(fs.readFileSync(file, "utf8"));
    Object.assign(s, { tarBytes: +tar, tarZstd3Bytes: +z, zstd3Ratio: +(tar / z).toFixed(3), duBytes: +du });
    fs.writeFileSync(file, JSON.stringify(s, null, 2) + "\n");
  ' "$DATA.json.tmp" "$tar_bytes" "$zstd_bytes" "$du_bytes"
  mv "$DATA.json.tmp" "$DATA.json"
fi

need_kib=$(($(du -sk "$DATA" | cut -f1) * (4 + $(echo "$TOOLS" | wc -w)))) # src + repos + restore + slack
free_kib=$(df -Pk "$BENCH_DIR" | awk 'NR == 2 { print $4 }')
[ "$free_kib" -gt "$need_kib" ] || die "not enough free disk space: need ~$((need_kib / 1024)) MiB, have $((free_kib / 1024)) MiB"

# ---------------------------------------------------------------------------------------
# measurement helpers
mkdir -p "$WORK"
rm -rf "$WORK/logs" "$WORK"/restore-* "$WORK"/repo-* "$WORK/cache" "$WORK/src-hashes.json"
mkdir -p "$WORK/logs"
: >"$RESULTS"
RUN=0
SRC_BYTES=0

mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }

# measure TOOL STEP CWD CMD...: runs CMD in CWD under /usr/bin/time, appends a result line
measure() {
  local tool=$1 step=$2 cwd=$3
  shift 3
  local base="$WORK/logs/run$RUN-$tool-$step"
  local rc=0
  (cd "$cwd" && exec /usr/bin/time -f '%e %U %S %M' -o "$base.time" "$@") >"$base.log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    if [ "$tool" = borg ] && [ "$rc" -eq 1 ]; then
      log "warning: borg $step exited with 1 (warnings), see $base.log"
    else
      tail -n 30 "$base.log" >&2 || true
      die "$tool $step failed with exit code $rc: $* (log: $base.log)"
    fi
  fi
  local wall user sys rss
  read -r wall user sys rss < <(tail -n 1 "$base.time")
  local repo_bytes=null
  case $step in backup*) repo_bytes=$(du -sb "$WORK/repo-$tool" | cut -f1) ;; esac
  printf '{"run":%d,"tool":"%s","step":"%s","wall_s":%s,"user_s":%s,"sys_s":%s,"max_rss_kib":%s,"src_bytes":%s,"repo_bytes":%s,"exit":%d}\n' \
    "$RUN" "$tool" "$step" "$wall" "$user" "$sys" "$rss" "$SRC_BYTES" "$repo_bytes" "$rc" >>"$RESULTS"
  awk -v t="$tool" -v s="$step" -v w="$wall" -v u="$user" -v y="$sys" -v m="$rss" -v b="$SRC_BYTES" -v r="$repo_bytes" 'BEGIN {
    line = sprintf("  %-8s %-8s %8.2f s %8.1f MB/s  cpu %7.2f s  rss %7.1f MB", t, s, w, (w > 0 ? b / 1e6 / w : 0), u + y, m * 1024 / 1e6)
    if (r != "null") line = line sprintf("  repo %8.1f MB", r / 1e6)
    print line }' >&2
}

# tool_step TOOL STEP: the command line of each tool for each step
tool_step() {
  local tool=$1 step=$2 repo="$WORK/repo-$1" restore="$WORK/restore-$1"
  case "$tool:$step" in
    restic:init) measure restic init "$WORK" restic -r "$repo" init --repository-version 2 ;;
    restic:backup*) measure restic "$step" "$WORK" restic -r "$repo" backup --compression auto "$SRC" ;;
    restic:restore) measure restic restore "$WORK" restic -r "$repo" restore latest --target "$restore" ;;
    restic:check) measure restic check "$WORK" restic -r "$repo" check --read-data ;;
    borg:init) measure borg init "$WORK" borg init -e repokey "$repo" ;;
    borg:backup*) measure borg "$step" "$WORK" borg create --compression zstd,3 "$repo::$step" "$SRC" ;;
    borg:restore) mkdir -p "$restore" && measure borg restore "$restore" borg extract "$repo::backup3" ;;
    borg:check) measure borg check "$WORK" borg check --verify-data "$repo" ;;
    bulwark:init) measure bulwark init "$WORK" "$ROOT/bin/bulwark" init --repo "$repo" ;;
    bulwark:backup*) measure bulwark "$step" "$WORK" "$ROOT/bin/bulwark" backup --repo "$repo" "$SRC" ;;
    bulwark:restore) measure bulwark restore "$WORK" "$ROOT/bin/bulwark" restore latest --repo "$repo" --target "$restore" ;;
    bulwark:check) measure bulwark check "$WORK" "$ROOT/bin/bulwark" check --repo "$repo" --read-data ;;
    *) die "internal: no command for $tool $step" ;;
  esac
}

verify_restore() {
  local tool=$1
  local out="$WORK/logs/run$RUN-$tool-verify.json"
  if ! node "$BENCH_DIR/compare-trees.mjs" --src "$SRC" --target "$WORK/restore-$tool" --cache "$WORK/src-hashes.json" --json "$out" >&2; then
    printf '{"run":%d,"tool":"%s","step":"verify","ok":false}\n' "$RUN" "$tool" >>"$RESULTS"
    die "$tool: the restored tree in $WORK/restore-$tool is NOT identical to $SRC (details above)"
  fi
  node -e 'const r = require(process.argv[1]); console.log(JSON.stringify({ run: +process.argv[2], tool: process.argv[3], step: "verify", ok: r.ok, files: r.files, dirs: r.dirs, symlinks: r.symlinks, bytes: r.bytes, mtimeWarnings: r.mtimeWarnings }))' \
    "$out" "$RUN" "$tool" >>"$RESULTS"
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$WORK/restore-$tool"
}

version_of() {
  case $1 in
    restic) restic version | head -n 1 ;;
    borg) borg --version ;;
    bulwark) "$ROOT/bin/bulwark" --version 2>/dev/null | head -n 1 || echo "bulwark (version unknown)" ;;
  esac
}

# ---------------------------------------------------------------------------------------
# metadata for the report
{
  printf '{"date":"%s","size":"%s","seed":"%s","mutationSeed":"%s","runs":%d,"tools":"%s",' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$SIZE" "$SEED" "$MSEED" "$RUNS" "$TOOLS"
  printf '"command":"BENCH_TOOLS=\\"%s\\" BENCH_SIZE=%s BENCH_RUNS=%d bash bench/run.sh",' "$TOOLS" "$SIZE" "$RUNS"
  printf '"cpu":"%s","nproc":%d,"memGiB":%d,"kernel":"%s","node":"%s","dataset":"%s",' \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" "$(nproc)" \
    "$(awk '/MemTotal/ { print int($2 / 1048576 + 0.5) }' /proc/meminfo)" "$(uname -r)" "$(node --version)" "$DATA.json"
  printf '"versions":{'
  sep=""
  for t in $TOOLS; do
    printf '%s"%s":"%s"' "$sep" "$t" "$(version_of "$t" | tr -d '"\\')"
    sep=","
  done
  printf '}}\n'
} >"$WORK/meta.json"

# ---------------------------------------------------------------------------------------
# the runs
for ((RUN = 1; RUN <= RUNS; RUN++)); do
  log "run $RUN/$RUNS: tools: $TOOLS; dataset: $DATA"
  rm -rf "$SRC" "$WORK"/repo-* "$WORK"/restore-* "$WORK/cache" "$WORK/src-hashes.json"
  export RESTIC_CACHE_DIR="$WORK/cache/restic" BORG_BASE_DIR="$WORK/cache/borg" XDG_CACHE_HOME="$WORK/cache/xdg"
  mkdir -p "$RESTIC_CACHE_DIR" "$BORG_BASE_DIR" "$XDG_CACHE_HOME"
  cp -a "$DATA" "$SRC"
  log "warming the page cache (reading every file of $SRC once)"
  find "$SRC" -type f -print0 | xargs -0 cat >/dev/null
  SRC_BYTES=$(du -sb "$SRC" | cut -f1)

  log "phase 1: init, first backup, unchanged re-backup (source $(mb "$SRC_BYTES") MB)"
  for t in $TOOLS; do
    for step in init backup1 backup2; do tool_step "$t" "$step"; done
  done

  log "mutating $SRC (seed $MSEED)"
  node "$BENCH_DIR/mutate.mjs" --dir "$SRC" --seed "$MSEED" --json "$WORK/mutation.json" >&2
  find "$SRC" -type f -print0 | xargs -0 cat >/dev/null
  SRC_BYTES=$(du -sb "$SRC" | cut -f1)

  log "phase 2: backup after mutation, restore + byte-identity check, check --read-data (source $(mb "$SRC_BYTES") MB)"
  for t in $TOOLS; do
    tool_step "$t" backup3
    tool_step "$t" restore
    verify_restore "$t"
    tool_step "$t" check
  done
done

node "$BENCH_DIR/report.mjs" --results "$RESULTS" --meta "$WORK/meta.json" --dataset "$DATA.json" \
  --mutation "$WORK/mutation.json" >"$WORK/report.md"
cat "$WORK/report.md"
log "report written to $WORK/report.md (raw: $RESULTS, logs: $WORK/logs)"
