#!/usr/bin/env bash
# A network namespace for the vault server, reached from the host over a veth pair, so a test proves the
# client talks to the vault only over the network (issue 3, item 4). Needs root and iproute2 (`ip`).
#
#   bash scripts/services/vault-netns.sh up                  # namespace + veth pair; prints `export ...`
#   bash scripts/services/vault-netns.sh run DIR -- CMD...   # run CMD in the namespace, DIR a private tmpfs
#   bash scripts/services/vault-netns.sh down                # kill what runs in it, delete namespace + veth
#
# Environment (defaults):
#   VAULT_NETNS     bulwark-vault         namespace name
#   VAULT_VETH      bwvault0              host end of the veth pair (the namespace end gets "n" appended:
#                                         keep it at most 14 characters)
#   VAULT_HOST_IP   10.231.0.1            host address, VAULT_NS_IP 10.231.0.2 namespace address, both /30:
#   VAULT_NS_IP     10.231.0.2            a private range set only on this pair, no route anywhere else
#   VAULT_TMPFS_SIZE  1g                  size of the tmpfs `run` mounts (a small one tests a full disk)
#
# Steps of `up`:
#   1. Refuse without root or `ip`; remove a leftover namespace and veth of the same names.
#   2. ip netns add; ip link add veth pair; move one end into the namespace.
#   3. Address both ends (/30), bring them and the namespace's loopback up. Nothing is forwarded or NATed:
#      the namespace can reach only the host end of the pair.
# `run` enters the namespace with `ip netns exec`, then a private mount namespace (`unshare --mount`) in
# which DIR is an empty tmpfs: what the server stores there is invisible from the host, so a client on
# the host provably has no file system access to it. The command is exec'd, so its pid is the server's.
set -euo pipefail

NS=${VAULT_NETNS:-bulwark-vault}
VETH=${VAULT_VETH:-bwvault0}
HOST_IP=${VAULT_HOST_IP:-10.231.0.1}
NS_IP=${VAULT_NS_IP:-10.231.0.2}
PREFIX=30

log() { printf 'vault-netns.sh: %s\n' "$*" >&2; }
die() {
  printf 'vault-netns.sh: ERROR: %s\n' "$*" >&2
  exit 1
}

require() {
  [ "$(id -u)" -eq 0 ] || die "network namespaces need root (run the tests as root, or in a root container)"
  command -v ip >/dev/null || die "\`ip\` (iproute2) is missing: apt-get install iproute2"
}

down() {
  if ip netns list 2>/dev/null | grep -qw -- "$NS"; then
    local pids
    pids=$(ip netns pids "$NS" 2>/dev/null || true)
    if [ -n "$pids" ]; then
      # shellcheck disable=SC2086 # one pid per word
      kill $pids 2>/dev/null || true
      sleep 0.5
      pids=$(ip netns pids "$NS" 2>/dev/null || true)
      # shellcheck disable=SC2086
      [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
    fi
    ip netns del "$NS" 2>/dev/null || true
  fi
  # Deleting the namespace deletes the pair; a host end left over from a failed `up` is removed here.
  ip link del "$VETH" 2>/dev/null || true
}

up() {
  require
  down
  ip netns add "$NS" || die "cannot create network namespace $NS (no permission? a container without CAP_SYS_ADMIN?)"
  ip link add "$VETH" type veth peer name "${VETH}n" || {
    ip netns del "$NS" 2>/dev/null || true
    die "cannot create the veth pair $VETH/${VETH}n"
  }
  ip link set "${VETH}n" netns "$NS"
  ip addr add "$HOST_IP/$PREFIX" dev "$VETH"
  ip link set "$VETH" up
  ip netns exec "$NS" ip addr add "$NS_IP/$PREFIX" dev "${VETH}n"
  ip netns exec "$NS" ip link set "${VETH}n" up
  ip netns exec "$NS" ip link set lo up
  log "namespace $NS: host $HOST_IP/$PREFIX on $VETH <-> $NS_IP/$PREFIX on ${VETH}n"
  printf 'export VAULT_NETNS=%s VAULT_VETH=%s VAULT_HOST_IP=%s VAULT_NS_IP=%s\n' "$NS" "$VETH" "$HOST_IP" "$NS_IP"
}

run() {
  require
  local dir=${1:-}
  [ -n "$dir" ] || die "usage: $0 run DIR -- CMD..."
  shift
  [ "${1:-}" = "--" ] && shift
  [ $# -gt 0 ] || die "usage: $0 run DIR -- CMD..."
  command -v unshare >/dev/null || die "\`unshare\` (util-linux) is missing"
  mkdir -p "$dir"
  # shellcheck disable=SC2016 # expanded by the inner shell
  exec ip netns exec "$NS" unshare --mount --propagation private -- sh -c '
    mount -t tmpfs -o "mode=0700,size=$2" bulwark-vault "$1" || exit 1
    shift 2
    exec "$@"
  ' vault-netns "$dir" "${VAULT_TMPFS_SIZE:-1g}" "$@"
}

case "${1:-}" in
  up) up ;;
  down)
    require
    down
    ;;
  run)
    shift
    run "$@"
    ;;
  *) die "usage: $0 up | run DIR -- CMD... | down" ;;
esac
