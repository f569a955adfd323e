#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for the source tests, on 127.0.0.1:55432 under $PG_DIR (default /tmp/bulwark-pg).
#
#   eval "$(bash scripts/services/postgres.sh up)"    # installs postgresql if missing, starts, prints exports
#   bash scripts/services/postgres.sh down            # stops and deletes the cluster
#
# `up` prints `export PGHOST=... PGPORT=... PGUSER=... PGPASSWORD=...` on stdout (everything else goes to
# stderr), so `eval` gives a shell what the tests need (test/sources/postgres.test.ts reads the same variables,
# and starts the cluster itself through this script when PGHOST is not set).
# Needs root (apt-get; the server runs as user postgres via runuser). Durability is off: never use for data.
set -euo pipefail

D=${PG_DIR:-/tmp/bulwark-pg}
PORT=${PG_PORT:-55432}
PASSWORD=${PG_TEST_PASSWORD:-postgres}

log() { printf 'postgres.sh: %s\n' "$*" >&2; }

bindir() {
  # Server binaries are not on PATH on stock Debian.
  local b
  for b in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
    [ -x "$b/initdb" ] && { echo "$b"; return; }
  done
  return 1
}

install_if_missing() {
  if bindir >/dev/null && command -v pg_dump >/dev/null && command -v pgbench >/dev/null; then return; fi
  log "installing postgresql (apt-get)"
  [ "$(id -u)" = 0 ] || { log "ERROR: postgresql is missing and installing it needs root"; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql postgresql-contrib >&2 ||
    { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql postgresql-contrib >&2; }
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

down() {
  local BIN
  BIN=$(bindir) || true
  if [ -n "${BIN:-}" ] && [ -f "$D/data/postmaster.pid" ]; then
    as_pg "$BIN/pg_ctl" -D "$D/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$D"
}

up() {
  install_if_missing
  local BIN
  BIN=$(bindir) || { log "ERROR: initdb not found after installing postgresql"; exit 1; }
  down
  if [ "$(id -u)" = 0 ]; then install -d -o postgres -g postgres -m 0700 "$D"; else install -d -m 0700 "$D"; fi
  printf '%s\n' "$PASSWORD" >"$D/pwfile"
  [ "$(id -u)" = 0 ] && chown postgres: "$D/pwfile"
  as_pg "$BIN/initdb" -D "$D/data" -U postgres --pwfile="$D/pwfile" --auth-local=peer --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 --no-sync >"$D/initdb.log" 2>&1 || { cat "$D/initdb.log" >&2; exit 1; }
  cat >>"$D/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$D'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 64MB
max_connections = 100
CONF
  as_pg "$BIN/pg_ctl" -D "$D/data" -l "$D/server.log" -w -t 60 start >/dev/null ||
    { cat "$D/server.log" >&2; exit 1; }
  log "PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') up on 127.0.0.1:$PORT (data in $D)"
  echo "export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGPASSWORD=$PASSWORD PG_BINDIR=$BIN"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
