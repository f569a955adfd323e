#!/usr/bin/env bash
# A throwaway single-node Ceph cluster (1 mon + 1 memstore OSD, cephx off) with RadosGW serving S3 (with
# Object Lock) on 127.0.0.1:7480, for the S3 backend's tests. Everything lives under one state directory.
#
#   bash scripts/services/ceph.sh up     # install if needed, start (or reuse a running cluster), print env
#   bash scripts/services/ceph.sh env    # print the export lines of the running cluster
#   bash scripts/services/ceph.sh down   # stop the daemons by pid file and delete the state directory
#
# `up` prints `export NAME=value` lines on stdout (and writes them to <state dir>/env); progress goes to
# stderr, so `eval "$(bash scripts/services/ceph.sh up)"` works. Needs root on Debian 12 (bookworm).
#
# Environment: CEPH_STATE_DIR (default /tmp/bulwark-svc/ceph), RGW_PORT (7480), S3_ACCESS_KEY and
# S3_SECRET_KEY (throwaway test keys), OSD_STORE (memstore, or bluestore to survive a daemon restart).
#
# Steps of `up`:
#   1. If the daemons of a previous `up` are alive and RGW answers, print its env and stop there.
#   2. Install ceph-mon, ceph-osd and radosgw with apt-get when missing (~30 s, once per machine).
#   3. Write ceph.conf (settings below are explained next to them; see also ../../docs/design.md).
#   4. Start the mon, create and start one OSD, wait for it to be up.
#   5. Start radosgw, wait for HTTP 200, create the S3 user with radosgw-admin.
set -euo pipefail

D=${CEPH_STATE_DIR:-/tmp/bulwark-svc/ceph}
RGW_PORT=${RGW_PORT:-7480}
AK=${S3_ACCESS_KEY:-bulwarktestaccess}
SK=${S3_SECRET_KEY:-bulwarktestsecretkey0123456789}
STORE=${OSD_STORE:-memstore}
DAEMONS=(client.rgw.a osd.0 mon.a)

t0=$(date +%s%N)
log() {
  local ms=$((($(date +%s%N) - t0) / 1000000))
  printf '[ceph %d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*" >&2
}
die() {
  printf 'ceph.sh: ERROR: %s\n' "$*" >&2
  exit 1
}

# Alive and not a zombie: daemons are reparented to PID 1, which may reap them late.
running() {
  kill -0 "$1" 2>/dev/null && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null
}

pid_alive() {
  local f="$D/run/$1.pid"
  [ -f "$f" ] && running "$(cat "$f")"
}

rgw_answers() {
  curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$RGW_PORT/"
}

write_env() {
  cat >"$D/env.tmp" <<EOF
export S3_ENDPOINT=http://127.0.0.1:$RGW_PORT
export AWS_ACCESS_KEY_ID=$AK
export AWS_SECRET_ACCESS_KEY=$SK
export AWS_REGION=us-east-1
export AWS_REQUEST_CHECKSUM_CALCULATION=WHEN_REQUIRED
export CEPH_CONF=$D/ceph.conf
EOF
  mv "$D/env.tmp" "$D/env"
}

stop() {
  # Graceful shutdown takes 2-3 s per daemon. A memstore cluster keeps nothing worth it (its data is in
  # RAM and goes anyway), so it gets KILL; bluestore gets TERM to all three at once, then KILL stragglers.
  local signal=TERM
  grep -q '^osd_objectstore = memstore' "$D/ceph.conf" 2>/dev/null && signal=KILL
  local pids=()
  for n in "${DAEMONS[@]}"; do
    local f="$D/run/$n.pid"
    [ -f "$f" ] || continue
    local p
    p=$(cat "$f")
    kill -s "$signal" "$p" 2>/dev/null && pids+=("$p")
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 50); do
      running "$p" || break
      sleep 0.1
    done
    if running "$p"; then kill -9 "$p" 2>/dev/null || true; fi
  done
}

install_if_missing() {
  if command -v ceph-mon >/dev/null && command -v ceph-osd >/dev/null && command -v radosgw >/dev/null &&
    command -v radosgw-admin >/dev/null && command -v monmaptool >/dev/null && command -v curl >/dev/null; then
    return
  fi
  [ "$(id -u)" -eq 0 ] || die "ceph-mon, ceph-osd and radosgw are not installed and this is not root to install them"
  command -v apt-get >/dev/null || die "ceph is not installed and there is no apt-get (needs Debian 12)"
  log "installing ceph-mon ceph-osd radosgw (about 30 s, once per machine)"
  local pkgs=(ceph-mon ceph-osd radosgw curl)
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" >&2; then
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" >&2 ||
      die "apt-get could not install ${pkgs[*]}"
  fi
}

write_conf() {
  local fsid=$1
  cat >"$D/ceph.conf" <<EOF
[global]
fsid = $fsid
mon_host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
public_network = 127.0.0.0/8
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
ms_bind_ipv6 = false
run_dir = $D/run
admin_socket = $D/run/\$name.asok
pid_file = $D/run/\$name.pid
log_file = $D/log/\$name.log
mon_data = $D/mon/\$id
osd_data = $D/osd/\$id
keyring = /dev/null
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
# The mon stops itself when its disk has < 5% free; test machines can be that full.
mon_data_avail_crit = 0
mon_data_avail_warn = 0
mon_warn_on_osd_down_out_interval_zero = false
mon_max_pg_per_osd = 1000
# The default 1 s per map proposal makes every pool creation (and so start-up) take seconds.
paxos_propose_interval = 0.05
paxos_min_wait = 0.01
osd_crush_chooseleaf_type = 0
mon_osd_down_out_interval = 0
osd_objectstore = $STORE
memstore_device_bytes = 4294967296
# Not <osd_data>/block: mkfs makes that a symlink to this path.
bluestore_block_path = $D/osd/\$id.block
bluestore_block_size = 10737418240
bluestore_block_create = true
osd_memory_target = 939524096
bluestore_cache_autotune = false
bluestore_cache_size = 134217728
debug_ms = 0
[client.rgw.a]
# radosgw defaults to secure mon mode with cephx and would retry auth forever against a cephx-less mon.
ms_mon_client_mode = crc
auth_client_required = none
rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw_data = $D/rgw
rgw_dns_name = localhost
rgw_enable_usage_log = false
rgw_thread_pool_size = 64
EOF
}

up() {
  if pid_alive mon.a && pid_alive osd.0 && pid_alive client.rgw.a && rgw_answers && [ -f "$D/env" ]; then
    log "already running under $D"
    cat "$D/env"
    return
  fi
  install_if_missing
  stop
  rm -rf "$D"
  mkdir -p "$D"/{mon,osd,run,log,rgw}
  local fsid osd_uuid osd_id
  fsid=$(cat /proc/sys/kernel/random/uuid)
  write_conf "$fsid"
  local C=(-c "$D/ceph.conf")
  export CEPH_CONF=$D/ceph.conf

  monmaptool --create --clobber --addv a "[v2:127.0.0.1:3300,v1:127.0.0.1:6789]" --fsid "$fsid" "$D/monmap" >/dev/null
  ceph-mon "${C[@]}" --mkfs -i a --monmap "$D/monmap"
  ceph-mon "${C[@]}" -i a
  log "mon started"

  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  osd_id=$(timeout 60 ceph "${C[@]}" osd new "$osd_uuid")
  [ "$osd_id" = 0 ] || die "expected osd id 0 in a fresh cluster, got '$osd_id'"
  mkdir -p "$D/osd/$osd_id"
  ceph-osd "${C[@]}" -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" 2>"$D/log/osd-mkfs.err" ||
    die "osd mkfs failed: $(tail -5 "$D/log/osd-mkfs.err")"
  ceph-osd "${C[@]}" -i "$osd_id" 2>>"$D/log/osd-start.err"
  local ok=""
  for _ in $(seq 1 120); do
    if timeout 10 ceph "${C[@]}" osd stat -f json 2>/dev/null | grep -q '"num_up_osds":1'; then
      ok=1
      break
    fi
    sleep 0.25
  done
  [ -n "$ok" ] || die "the OSD did not come up in 30 s (see $D/log)"
  log "osd up ($STORE)"

  # radosgw daemonizes once connected; the timeout catches the endless-auth-retry failure mode.
  timeout 120 radosgw "${C[@]}" -n client.rgw.a || die "radosgw did not start (see $D/log/client.rgw.a.log)"
  ok=""
  for _ in $(seq 1 240); do
    if rgw_answers; then
      ok=1
      break
    fi
    sleep 0.25
  done
  [ -n "$ok" ] || die "radosgw does not answer on 127.0.0.1:$RGW_PORT (see $D/log/client.rgw.a.log)"
  log "radosgw answers on 127.0.0.1:$RGW_PORT"
  radosgw-admin "${C[@]}" user create --uid=bulwark --display-name=bulwark \
    --access-key="$AK" --secret-key="$SK" >/dev/null
  write_env
  log "S3 user created; env in $D/env"
  cat "$D/env"
}

case "${1:-}" in
up) up ;;
env)
  [ -f "$D/env" ] || die "no cluster under $D (run: bash $0 up)"
  cat "$D/env"
  ;;
down)
  stop
  rm -rf "$D"
  log "stopped, $D removed"
  ;;
*)
  echo "usage: $0 up|env|down" >&2
  exit 2
  ;;
esac
