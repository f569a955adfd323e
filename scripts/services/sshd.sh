#!/usr/bin/env bash
# A throwaway OpenSSH sshd serving SFTP on 127.0.0.1, for the SFTP backend's tests (SERVICES.md, section 2).
#
#   bash scripts/services/sshd.sh up     # start (or find running); prints `export SFTP_...=...` lines
#   bash scripts/services/sshd.sh env    # print those lines again (fails when not up)
#   bash scripts/services/sshd.sh down   # stop it and delete its state directory
#
# Environment: SFTP_PORT (2222), SFTP_USER (bulwarksftp), BULWARK_SSHD_DIR (/tmp/bulwark-svc/sshd).
#
# Steps of `up`:
#   1. If sshd from this state directory is alive (pid file + process + port answering), print the env and stop.
#   2. Install openssh-server when /usr/sbin/sshd is missing (apt-get update only if the first try fails).
#   3. Generate host keys (ed25519, ecdsa) and a client ed25519 key (ssh-keygen: ssh2 cannot read PKCS#8
#      ed25519 keys).
#   4. As root, create the test user with password field '*' (not '!', which sshd treats as locked with
#      UsePAM no, refusing even key logins) and a home under the state directory. As another user, sshd can
#      only log that same user in, so the test user is the current user.
#   5. Write sshd_config: key-only, internal-sftp only, StrictModes off (the state dir is under /tmp, 1777).
#   6. Start /usr/sbin/sshd (absolute path: it re-execs itself), wait for the port, write known_hosts and env.
set -euo pipefail

STATE=${BULWARK_SSHD_DIR:-/tmp/bulwark-svc/sshd}
PORT=${SFTP_PORT:-2222}
HOST=127.0.0.1
SSHD=/usr/sbin/sshd

log() { printf 'sshd.sh: %s\n' "$*" >&2; }
die() {
  printf 'sshd.sh: ERROR: %s\n' "$*" >&2
  exit 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }

if is_root; then
  SUSER=${SFTP_USER:-bulwarksftp}
else
  SUSER=$(id -un)
fi

port_open() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

running_pid() {
  local pid
  [ -f "$STATE/sshd.pid" ] || return 1
  pid=$(cat "$STATE/sshd.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

print_env() {
  [ -f "$STATE/env" ] || die "no environment at $STATE/env: run \`$0 up\` first"
  cat "$STATE/env"
}

install_sshd() {
  [ -x "$SSHD" ] && return 0
  is_root || die "$SSHD is missing and installing openssh-server needs root (apt-get install openssh-server)"
  command -v apt-get >/dev/null || die "$SSHD is missing and there is no apt-get to install openssh-server"
  log "installing openssh-server"
  export DEBIAN_FRONTEND=noninteractive
  # Wait for another apt-get (say, a parallel service script) instead of failing on its lock.
  local wait=(-o DPkg::Lock::Timeout=600)
  if ! apt-get "${wait[@]}" install -y --no-install-recommends openssh-server >&2; then
    log "install failed; running apt-get update and trying again"
    apt-get "${wait[@]}" update >&2 || die "apt-get update failed"
    apt-get "${wait[@]}" install -y --no-install-recommends openssh-server >&2 ||
      die "installing openssh-server failed"
  fi
  [ -x "$SSHD" ] || die "openssh-server is installed but $SSHD is missing"
}

# Serialises `up` and `down` between callers (a test run and a bench may both start the server at once).
lock() {
  mkdir -p "$(dirname "$STATE")"
  exec 9>"$STATE.lock"
  if command -v flock >/dev/null; then flock -w 900 9 || die "timed out waiting for $STATE.lock"; fi
}

up() {
  lock
  if pid=$(running_pid) && port_open && [ -f "$STATE/env" ]; then
    print_env
    return 0
  fi
  if port_open; then
    die "port $PORT on $HOST is taken by another process; set SFTP_PORT to a free port"
  fi
  install_sshd
  command -v ssh-keygen >/dev/null || die "ssh-keygen is missing (apt-get install openssh-client)"

  rm -rf "$STATE"
  mkdir -p "$STATE/etc" "$STATE/home"
  ssh-keygen -q -t ed25519 -N '' -C bulwark-test-host -f "$STATE/etc/host_ed25519"
  # A second host key, so tests can check that a client knowing only this one still gets to use it.
  ssh-keygen -q -t ecdsa -b 256 -N '' -C bulwark-test-host -f "$STATE/etc/host_ecdsa"
  ssh-keygen -q -t ed25519 -N '' -C bulwark-test-client -f "$STATE/client_ed25519"
  cp "$STATE/client_ed25519.pub" "$STATE/etc/authorized_keys"

  local home root_dir
  if is_root; then
    home="$STATE/home/$SUSER"
    root_dir="$home/repos"
    id "$SUSER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$SUSER"
    usermod -d "$home" -p '*' "$SUSER"
    mkdir -p "$home/repos"
    chown -R "$SUSER:" "$home"
    # The node tests (running as root) read the client key; sshd reads the rest as root.
    chmod 0755 "$STATE" "$STATE/home"
    mkdir -p /run/sshd && chmod 0755 /run/sshd
  else
    root_dir="$STATE/home/repos"
    mkdir -p "$root_dir"
  fi

  cat >"$STATE/etc/sshd_config" <<EOF
ListenAddress $HOST
Port $PORT
HostKey $STATE/etc/host_ed25519
HostKey $STATE/etc/host_ecdsa
PidFile $STATE/sshd.pid
AuthorizedKeysFile $STATE/etc/authorized_keys
# $STATE lies under /tmp (mode 1777), which StrictModes rejects for any key file below it.
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers $SUSER
Subsystem sftp internal-sftp
ForceCommand internal-sftp
AllowTcpForwarding no
X11Forwarding no
LogLevel VERBOSE
EOF
  "$SSHD" -t -f "$STATE/etc/sshd_config" || die "sshd rejected $STATE/etc/sshd_config"
  "$SSHD" -f "$STATE/etc/sshd_config" -E "$STATE/sshd.log" || die "sshd did not start (see $STATE/sshd.log)"
  local i
  for i in $(seq 1 100); do
    port_open && break
    sleep 0.1
  done
  port_open || die "sshd is not listening on $HOST:$PORT after 10 s (see $STATE/sshd.log)"

  # known_hosts names a non-standard port as [host]:port, as ssh and the SFTP backend expect.
  local key
  for key in host_ed25519 host_ecdsa; do
    printf '[%s]:%s %s\n' "$HOST" "$PORT" "$(cut -d' ' -f1-2 "$STATE/etc/$key.pub")"
  done >"$STATE/known_hosts"
  cat >"$STATE/env" <<EOF
export SFTP_HOST=$HOST
export SFTP_PORT=$PORT
export SFTP_USER=$SUSER
export SFTP_KEY=$STATE/client_ed25519
export SFTP_KNOWN_HOSTS=$STATE/known_hosts
export SFTP_ROOT=$root_dir
EOF
  log "sshd pid $(cat "$STATE/sshd.pid") on $HOST:$PORT, user $SUSER, root $root_dir"
  print_env
}

down() {
  lock
  local pid
  if pid=$(running_pid); then
    kill "$pid"
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    log "stopped sshd pid $pid"
  else
    log "sshd is not running from $STATE"
  fi
  rm -rf "$STATE"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) print_env ;;
  *) die "usage: $0 up|down|env" ;;
esac
