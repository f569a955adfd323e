#!/usr/bin/env bash
# Bulwark vs restic on remote repositories over loopback: SFTP (OpenSSH sshd on 127.0.0.1:2222), S3
# (Ceph RadosGW on 127.0.0.1:7480) and a Bulwark vault (`bulwark serve-repo` on 127.0.0.1, `rest:` backend),
# next to the local disk, on the deterministic dataset of bench/run.sh.
#
#   bash bench/run-remote.sh                         # 1 GiB, all targets, restic then bulwark
#   BENCH_SIZE=64MiB bash bench/run-remote.sh        # quick
#
# Environment (all optional):
#   BENCH_TARGETS  target kinds in the order they run    (default "local sftp s3 vault")
#   BENCH_TOOLS    tools in the order they run           (default "restic bulwark")
#   BENCH_SIZE     dataset size for gen-dataset.mjs       (default 1GiB)
#   BENCH_SEED     dataset seed                           (default bench1)
#   BENCH_BUILD=1  run `npm run build` even if dist/ exists
#   BENCH_KEEP=1   keep repositories, buckets and restored trees
#   BENCH_SFTP_DIR  directory on the SFTP server for the repos (default /tmp/bulwark-bench-remote-sftp)
#   BENCH_SERVICES_DOWN=1  stop sshd and ceph at the end (default: leave them running for reuse)
#   BENCH_VAULT_IMMUTABLE  serve-repo's --immutable for the vault target: require or off (default: require
#                  when running as root and `chattr +i` works under bench/work/remote, else off)
#   RESTIC_PASSWORD / BULWARK_PASSWORD                    (default "bench-password")
#
# Steps:
#   1. start sshd and ceph with scripts/services/{sshd,ceph}.sh up (they reuse running instances) and eval
#      their export lines;
#   2. per target and tool, a fresh repository: a directory under bench/work/remote (local), under the
#      sshd user's SFTP root (sftp), a fresh bucket made with bench/s3-bucket.mjs (s3), or a fresh vault
#      (vault): `bulwark serve-repo --init` on 127.0.0.1 (a free port) storing in bench/work/remote/vault-TOOL,
#      reached with an append-only token made by `serve-repo token add`, stopped after the tool's steps.
#      The vault serves Bulwark only: restic's rest-server is not packaged here, so restic skips the vault;
#   3. per target and tool, under /usr/bin/time (wall, user+sys CPU, max RSS): init, first backup,
#      unchanged re-backup, restore latest into a fresh dir (checked byte for byte against the source with
#      compare-trees.mjs), check --read-data. Fresh client caches per target and tool.
#   4. bench/report-remote.mjs writes bench/work/report-remote.md (MB/s per tool and target, Bulwark's
#      speedup over restic per target); raw lines in bench/work/remote/results.jsonl.
#
# The source is the cached dataset bench/data/<seed>-<size> itself (read only, never mutated here), read once
# to warm the page cache. sshd and RadosGW (memstore OSD: objects live in RAM) run on the same machine and
# compete with the client for the CPUs, so the numbers measure the client's per-byte overhead and protocol
# round trips, not a network. The same holds for the vault server (a second Node process).
set -euo pipefail
trap 'echo "bench/run-remote.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
DEFAULT_TARGETS="local sftp s3 vault"
TARGETS=${BENCH_TARGETS:-$DEFAULT_TARGETS}
TOOLS=${BENCH_TOOLS:-"restic bulwark"}
SIZE=${BENCH_SIZE:-1GiB}
SEED=${BENCH_SEED:-bench1}
WORK=$BENCH_DIR/work/remote
DATA=$BENCH_DIR/data/$SEED-$SIZE
SRC=$DATA
RESULTS=$WORK/results.jsonl
REPORT=$BENCH_DIR/work/report-remote.md
BULWARK_JS=$ROOT/dist/cli/main.js
STEPS=${BENCH_STEPS:-"init backup1 backup2 restore check"}

export RESTIC_PASSWORD=${RESTIC_PASSWORD:-bench-password}
export BULWARK_PASSWORD=${BULWARK_PASSWORD:-bench-password}

log() { printf 'bench-remote: %s\n' "$*" >&2; }
die() {
  printf 'bench-remote: ERROR: %s\n' "$*" >&2
  exit 1
}

for t in $TOOLS; do
  case $t in restic | bulwark) ;; *) die "unknown tool '$t' in BENCH_TOOLS (use restic, bulwark)" ;; esac
done
for k in $TARGETS; do
  case $k in local | sftp | s3 | vault) ;; *) die "unknown target '$k' in BENCH_TARGETS (use local, sftp, s3, vault)" ;; esac
done
wants_target() { [[ " $TARGETS " == *" $1 "* ]]; }
wants_tool() { [[ " $TOOLS " == *" $1 "* ]]; }
# supports TARGET TOOL: whether TOOL runs on TARGET (restic has no server for the vault's rest: protocol here)
supports() { [ "$1" != vault ] || [ "$2" = bulwark ]; }
# needs_tool TOOL: TOOL runs on at least one of the targets
needs_tool() {
  local k
  wants_tool "$1" || return 1
  for k in $TARGETS; do supports "$k" "$1" && return 0; done
  return 1
}

missing=()
needs_tool restic && ! command -v restic >/dev/null && missing+=(restic)
wants_target sftp && wants_tool restic && ! command -v ssh >/dev/null && missing+=(openssh-client)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} with apt-get"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

if wants_target vault && ! wants_tool bulwark; then
  die "the vault target serves Bulwark only: add bulwark to BENCH_TOOLS or drop vault from BENCH_TARGETS"
fi
if wants_tool bulwark; then
  if [ ! -f "$BULWARK_JS" ] || [ "${BENCH_BUILD:-0}" = 1 ]; then
    log "building Bulwark (npm run build)"
    (cd "$ROOT" && npm run build) >&2 || log "npm run build failed"
  fi
  [ -f "$BULWARK_JS" ] || die "bulwark is in BENCH_TOOLS but $BULWARK_JS does not exist (build it first)"
fi

# ---------------------------------------------------------------------------------------
# dataset: reuse bench/run.sh's cache, or generate it the same way (the .json marks it complete)
if [ ! -f "$DATA.json" ]; then
  log "generating dataset $DATA (size $SIZE, seed $SEED)"
  rm -rf "$DATA" "$DATA.json"
  mkdir -p "$BENCH_DIR/data"
  node "$BENCH_DIR/gen-dataset.mjs" --out "$DATA" --size "$SIZE" --seed "$SEED" --stats "$DATA.json.tmp"
  du_bytes=$(du -sb "$DATA" | cut -f1)
  node -e '
    const fs = require("fs");
    const [file, du] = process.argv.slice(1);
    const s = JSON.parse(fs.readFileSync(file, "utf8"));
    Object.assign(s, { duBytes: +du });
    fs.writeFileSync(file, JSON.stringify(s, null, 2) + "\n");
  ' "$DATA.json.tmp" "$du_bytes"
  mv "$DATA.json.tmp" "$DATA.json"
fi

# ---------------------------------------------------------------------------------------
# services
if wants_target sftp; then
  log "starting sshd (scripts/services/sshd.sh up)"
  eval "$(bash "$ROOT/scripts/services/sshd.sh" up)"
  export BULWARK_SFTP_KEY=$SFTP_KEY BULWARK_SFTP_KNOWN_HOSTS=$SFTP_KNOWN_HOSTS
  # Not under $SFTP_ROOT: the SFTP backend's tests clean that directory and may run at the same time.
  SFTP_DIR=${BENCH_SFTP_DIR:-/tmp/bulwark-bench-remote-sftp}
  RESTIC_SFTP_CMD="ssh -i $SFTP_KEY -p $SFTP_PORT -o UserKnownHostsFile=$SFTP_KNOWN_HOSTS -o StrictHostKeyChecking=yes -o BatchMode=yes $SFTP_USER@$SFTP_HOST -s sftp"
fi
if wants_target s3; then
  log "starting ceph + radosgw (scripts/services/ceph.sh up)"
  eval "$(bash "$ROOT/scripts/services/ceph.sh" up)"
  export AWS_REQUEST_CHECKSUM_CALCULATION=${AWS_REQUEST_CHECKSUM_CALCULATION:-WHEN_REQUIRED}
fi
s3tool() { NODE_NO_WARNINGS=1 node "$BENCH_DIR/s3-bucket.mjs" "$@"; }
bucket_of() { printf 'bench-%s' "$1"; }

# The vault: one `serve-repo` per tool run, started by start_vault and stopped by stop_vault (and at exit).
VAULT_PID=""
VAULT_PORT=""
VAULT_IMMUTABLE=""
VAULT_TOKENS=$WORK/vault-tokens.json
vault_dir() { printf '%s' "$WORK/vault-$1"; }
# unlock_tree DIR: clears chattr +i under DIR so that it can be deleted (a no-op where nothing is immutable)
unlock_tree() {
  [ -e "$1" ] || return 0
  if [ "$(id -u)" -eq 0 ] && command -v chattr >/dev/null; then chattr -R -f -i "$1" 2>/dev/null || true; fi
}
# vault_immutable_mode: require when running as root where `chattr +i` works under $WORK, else off
vault_immutable_mode() {
  if [ -n "${BENCH_VAULT_IMMUTABLE:-}" ]; then
    case $BENCH_VAULT_IMMUTABLE in require | off) printf '%s' "$BENCH_VAULT_IMMUTABLE" ;;
      *) die "BENCH_VAULT_IMMUTABLE must be require or off, got $BENCH_VAULT_IMMUTABLE" ;; esac
    return
  fi
  local probe="$WORK/.chattr-probe" mode=off
  if [ "$(id -u)" -eq 0 ] && command -v chattr >/dev/null && : >"$probe" 2>/dev/null; then
    if chattr +i "$probe" 2>/dev/null && lsattr -d "$probe" 2>/dev/null | cut -d' ' -f1 | grep -q i; then mode=require; fi
    chattr -i "$probe" 2>/dev/null || true
  fi
  rm -f "$probe"
  printf '%s' "$mode"
}
start_vault() {
  local tool=$1 dir out="$WORK/logs/vault-$1-server.json" i
  dir=$(vault_dir "$tool")
  unlock_tree "$dir"
  rm -rf "$dir" "$VAULT_TOKENS"
  BULWARK_REST_TOKEN=$(node "$BULWARK_JS" --json serve-repo token add --tokens "$VAULT_TOKENS" \
    --name "bench-$tool" --role append-only | node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).token))')
  export BULWARK_REST_TOKEN
  # Port 0: the kernel picks a free port, and the server prints the URL it listens on.
  node "$BULWARK_JS" --json serve-repo --path "$dir" --init --listen 127.0.0.1:0 --tokens "$VAULT_TOKENS" \
    --immutable "$VAULT_IMMUTABLE" >"$out" 2>"$WORK/logs/vault-$tool-server.log" &
  VAULT_PID=$!
  for i in $(seq 1 200); do
    if grep -q '"url"' "$out" 2>/dev/null; then break; fi
    kill -0 "$VAULT_PID" 2>/dev/null || {
      cat "$WORK/logs/vault-$tool-server.log" >&2
      die "serve-repo exited before serving (log: $WORK/logs/vault-$tool-server.log)"
    }
    sleep 0.05
  done
  VAULT_PORT=$(node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(new URL(r.url).port)' "$out") ||
    die "serve-repo did not print its URL within 10 s (log: $WORK/logs/vault-$tool-server.log)"
  node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(JSON.stringify({ target: "vault", tool: process.argv[2], step: "server", url: r.url, immutable: r.immutable, immutableFlag: process.argv[3] }))' \
    "$out" "$tool" "$VAULT_IMMUTABLE" >>"$RESULTS"
  log "vault: serve-repo pid $VAULT_PID at http://127.0.0.1:$VAULT_PORT/ storing in $dir (--immutable $VAULT_IMMUTABLE)"
}
stop_vault() {
  [ -n "$VAULT_PID" ] || return 0
  kill -TERM "$VAULT_PID" 2>/dev/null || true
  wait "$VAULT_PID" 2>/dev/null || true
  VAULT_PID=""
  unset BULWARK_REST_TOKEN
}

cleanup_services() {
  stop_vault
  if [ "${BENCH_SERVICES_DOWN:-0}" = 1 ]; then
    wants_target sftp && bash "$ROOT/scripts/services/sshd.sh" down || true
    wants_target s3 && bash "$ROOT/scripts/services/ceph.sh" down || true
  fi
}
trap cleanup_services EXIT

# ---------------------------------------------------------------------------------------
# measurement
for d in "$WORK"/vault-*; do unlock_tree "$d"; done
rm -rf "$WORK"
mkdir -p "$WORK/logs"
wants_target vault && VAULT_IMMUTABLE=$(vault_immutable_mode)
: >"$RESULTS"
TARGET=""

# location TOOL: the repository location of TOOL on the current target, as that tool spells it
location() {
  local tool=$1
  case "$TARGET" in
    local) printf '%s' "$WORK/repo-$tool" ;;
    sftp)
      if [ "$tool" = restic ]; then
        printf 'sftp:%s@%s:%s' "$SFTP_USER" "$SFTP_HOST" "$SFTP_DIR/repo-$tool"
      else
        printf 'sftp:%s@%s:%s%s' "$SFTP_USER" "$SFTP_HOST" "$SFTP_PORT" "$SFTP_DIR/repo-$tool"
      fi
      ;;
    s3)
      if [ "$tool" = restic ]; then
        printf 's3:%s/%s' "$S3_ENDPOINT" "$(bucket_of "$tool")"
      else
        printf 's3:%s/%s/repo' "$S3_ENDPOINT" "$(bucket_of "$tool")"
      fi
      ;;
    vault) printf 'rest:http://127.0.0.1:%s/' "$VAULT_PORT" ;;
  esac
}

repo_bytes() {
  local tool=$1
  case "$TARGET" in
    local) du -sb "$WORK/repo-$tool" | cut -f1 ;;
    sftp) du -sb "$SFTP_DIR/repo-$tool" | cut -f1 ;;
    s3) s3tool size "$S3_ENDPOINT" "$(bucket_of "$tool")" ;;
    vault) du -sb "$(vault_dir "$tool")" | cut -f1 ;;
  esac
}

prepare_repo() {
  local tool=$1
  case "$TARGET" in
    local) rm -rf "$WORK/repo-$tool" ;;
    sftp)
      rm -rf "$SFTP_DIR/repo-$tool"
      mkdir -p "$SFTP_DIR"
      chmod 0755 "$SFTP_DIR"
      chown "$SFTP_USER:" "$SFTP_DIR" 2>/dev/null || true
      ;;
    s3) s3tool create "$S3_ENDPOINT" "$(bucket_of "$tool")" ;;
    vault) start_vault "$tool" ;;
  esac
}

drop_repo() {
  local tool=$1
  [ "$TARGET" = vault ] && stop_vault
  [ "${BENCH_KEEP:-0}" = 1 ] && return 0
  case "$TARGET" in
    local) rm -rf "$WORK/repo-$tool" ;;
    sftp) rm -rf "$SFTP_DIR/repo-$tool" ;;
    s3) s3tool delete "$S3_ENDPOINT" "$(bucket_of "$tool")" ;;
    vault)
      unlock_tree "$(vault_dir "$tool")"
      rm -rf "$(vault_dir "$tool")" "$VAULT_TOKENS"
      ;;
  esac
}

# measure TOOL STEP CMD...: runs CMD under /usr/bin/time, appends a result line
measure() {
  local tool=$1 step=$2
  shift 2
  local base="$WORK/logs/$TARGET-$tool-$step"
  local rc=0
  (cd "$WORK" && exec /usr/bin/time -f '%e %U %S %M' -o "$base.time" "$@") >"$base.log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    tail -n 30 "$base.log" >&2 || true
    die "$tool $step on $TARGET failed with exit code $rc: $* (log: $base.log)"
  fi
  local wall user sys rss rb=null
  read -r wall user sys rss < <(tail -n 1 "$base.time")
  case $step in backup*) rb=$(repo_bytes "$tool") ;; esac
  printf '{"target":"%s","tool":"%s","step":"%s","wall_s":%s,"user_s":%s,"sys_s":%s,"max_rss_kib":%s,"src_bytes":%s,"repo_bytes":%s,"exit":%d}\n' \
    "$TARGET" "$tool" "$step" "$wall" "$user" "$sys" "$rss" "$SRC_BYTES" "$rb" "$rc" >>"$RESULTS"
  awk -v k="$TARGET" -v t="$tool" -v s="$step" -v w="$wall" -v u="$user" -v y="$sys" -v m="$rss" -v b="$SRC_BYTES" -v r="$rb" 'BEGIN {
    rate = s == "init" ? "        –     " : sprintf("%8.1f MB/s", (w > 0 ? b / 1e6 / w : 0))
    line = sprintf("  %-5s %-8s %-8s %8.2f s %s  cpu %7.2f s  rss %7.1f MB", k, t, s, w, rate, u + y, m * 1024 / 1e6)
    if (r != "null") line = line sprintf("  repo %8.1f MB", r / 1e6)
    print line }' >&2
}

tool_step() {
  local tool=$1 step=$2 repo restore="$WORK/restore-$TARGET-$1"
  repo=$(location "$tool")
  local restic=(restic -r "$repo")
  [ "$TARGET" = sftp ] && restic+=(-o "sftp.command=$RESTIC_SFTP_CMD")
  local bulwark=("$ROOT/bin/bulwark" --repo "$repo")
  case "$tool:$step" in
    restic:init) measure restic init "${restic[@]}" init --repository-version 2 ;;
    restic:backup*) measure restic "$step" "${restic[@]}" backup --compression auto "$SRC" ;;
    restic:restore) measure restic restore "${restic[@]}" restore latest --target "$restore" ;;
    restic:check) measure restic check "${restic[@]}" check --read-data ;;
    bulwark:init) measure bulwark init "${bulwark[@]}" init ;;
    bulwark:backup*) measure bulwark "$step" "${bulwark[@]}" backup "$SRC" ;;
    bulwark:restore) measure bulwark restore "${bulwark[@]}" restore latest --target "$restore" ;;
    bulwark:check) measure bulwark check "${bulwark[@]}" check --read-data ;;
    *) die "internal: no command for $tool $step" ;;
  esac
  if [ "$step" = restore ]; then verify_restore "$tool" "$restore"; fi
}

verify_restore() {
  local tool=$1 restore=$2
  local out="$WORK/logs/$TARGET-$tool-verify.json"
  if ! node "$BENCH_DIR/compare-trees.mjs" --src "$SRC" --target "$restore" --cache "$WORK/src-hashes.json" --json "$out" >&2; then
    printf '{"target":"%s","tool":"%s","step":"verify","ok":false}\n' "$TARGET" "$tool" >>"$RESULTS"
    die "$tool on $TARGET: the restored tree in $restore is NOT identical to $SRC (details above)"
  fi
  node -e 'const r = require(process.argv[1]); console.log(JSON.stringify({ target: process.argv[2], tool: process.argv[3], step: "verify", ok: r.ok, files: r.files, symlinks: r.symlinks, bytes: r.bytes, mtimeWarnings: r.mtimeWarnings }))' \
    "$out" "$TARGET" "$tool" >>"$RESULTS"
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$restore"
}

version_of() {
  case $1 in
    restic) restic version | head -n 1 ;;
    bulwark) "$ROOT/bin/bulwark" --version 2>/dev/null | head -n 1 || echo "bulwark (version unknown)" ;;
  esac
}

command_line="BENCH_SIZE=$SIZE"
[ "$TARGETS" = "$DEFAULT_TARGETS" ] || command_line+=" BENCH_TARGETS=\\\"$TARGETS\\\""
[ "$TOOLS" = "restic bulwark" ] || command_line+=" BENCH_TOOLS=\\\"$TOOLS\\\""
command_line+=" bash bench/run-remote.sh"
{
  printf '{"date":"%s","size":"%s","seed":"%s","targets":"%s","tools":"%s","command":"%s",' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$SIZE" "$SEED" "$TARGETS" "$TOOLS" "$command_line"
  printf '"cpu":"%s","nproc":%d,"memGiB":%d,"kernel":"%s","node":"%s",' \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" "$(nproc)" \
    "$(awk '/MemTotal/ { print int($2 / 1048576 + 0.5) }' /proc/meminfo)" "$(uname -r)" "$(node --version)"
  printf '"services":{"sshd":"%s","radosgw":"%s","vault":"%s"},' \
    "$( (/usr/sbin/sshd -V 2>&1 || true) | head -n 1 | tr -d '"\\')" "$( (radosgw --version 2>/dev/null || echo unknown) | head -n 1 | tr -d '"\\')" \
    "$(if wants_target vault; then printf 'bulwark serve-repo --immutable %s' "$VAULT_IMMUTABLE"; fi)"
  printf '"versions":{'
  sep=""
  for t in $TOOLS; do
    printf '%s"%s":"%s"' "$sep" "$t" "$(version_of "$t" | tr -d '"\\')"
    sep=","
  done
  printf '}}\n'
} >"$WORK/meta.json"

log "warming the page cache (reading every file of $SRC once)"
find "$SRC" -type f -print0 | xargs -0 cat >/dev/null
SRC_BYTES=$(du -sb "$SRC" | cut -f1)
log "source $SRC: $(awk -v b="$SRC_BYTES" 'BEGIN { printf "%.1f", b / 1e6 }') MB; targets: $TARGETS; tools: $TOOLS"

for TARGET in $TARGETS; do
  for t in $TOOLS; do
    if ! supports "$TARGET" "$t"; then
      log "$TARGET: skipping $t (the vault's rest: protocol is served here for Bulwark only; no restic rest-server)"
      continue
    fi
    export RESTIC_CACHE_DIR="$WORK/cache/$TARGET-$t/restic" XDG_CACHE_HOME="$WORK/cache/$TARGET-$t/xdg"
    rm -rf "$WORK/cache/$TARGET-$t"
    mkdir -p "$RESTIC_CACHE_DIR" "$XDG_CACHE_HOME"
    prepare_repo "$t"
    log "$TARGET: $t at $(location "$t")"
    for step in $STEPS; do tool_step "$t" "$step"; done
    drop_repo "$t"
    rm -rf "$WORK/cache/$TARGET-$t"
  done
done

node "$BENCH_DIR/report-remote.mjs" --results "$RESULTS" --meta "$WORK/meta.json" --dataset "$DATA.json" >"$REPORT"
cat "$REPORT"
log "report written to $REPORT (raw: $RESULTS, logs: $WORK/logs)"
