#!/usr/bin/env bash
# The one command that shows Bulwark doing its main job end to end: `npm run demo`.
#
#   1. Build if needed (npm ci when node_modules is missing, npm run build when dist/ is missing or older
#      than src/).
#   2. In a fresh temporary directory: generate a 32 MiB sample tree (bench/gen-dataset.mjs: small and
#      large files, text and random data, duplicates, a sparse image, symlinks, non-ASCII names).
#   3. Write a random password to a file (mode 600) and init a local repository with it.
#   4. Back up the tree, then back it up again: the second backup must read no file and add no data.
#   5. Restore the latest snapshot into a new directory and compare it byte for byte with the source
#      (bench/compare-trees.mjs: contents, sizes, modes, owners, symlink targets).
#   6. check --read-data (every byte of every pack decrypted and verified), then list the snapshots.
#   7. A vault on loopback (`bulwark serve-repo`) with an append-only token, and a config with a primary, a
#      second disk and the vault, a dataset of the tree and a SQLite database (when sqlite3 is there or can
#      be installed), under the 3-2-1-1-0 rule: `bulwark run` backs up and copies, `bulwark verify` reads
#      every pack of every copy, `bulwark drill` restores one into a sandbox and validates it (every file
#      compared, the database's integrity_check and a query), and `bulwark posture` shows every row pass.
#   8. A runbook of one service (a small HTTP app serving the restored tree): `bulwark dr plan` shows where it
#      would be restored from and how long it would take, `bulwark dr drill` restores it, starts it and checks
#      it while nothing else is touched (in a network namespace when run as root), then removes it all; the
#      posture's DR row passes.
#   9. Restore from the copy alone and compare it with the source.
# Any failure stops the demo with a non-zero exit code naming the step.
#
# Environment: DEMO_KEEP=1 keeps the temporary directory (printed at the start) for a closer look;
# TMPDIR chooses where it is created.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

STEP="start"
step() {
  STEP=$1
  printf '\n==> %s\n' "$STEP"
}
trap 'rc=$?; if [ "$rc" -ne 0 ]; then printf "\ndemo: FAILED at step \"%s\" (exit code %d)\n" "$STEP" "$rc" >&2; fi' EXIT

# 1. build if needed
step "build"
if [ ! -d node_modules ]; then
  npm ci
fi
if [ ! -f dist/cli/main.js ] || [ -n "$(find src -name '*.ts' -newer dist/cli/main.js -print -quit)" ]; then
  npm run build
else
  echo "dist/ is up to date"
fi
# The package's command (bin/bulwark: the launcher that npm link and npx use), or the built CLI directly.
if [ -x "$ROOT/bin/bulwark" ]; then
  bulwark() { "$ROOT/bin/bulwark" "$@"; }
else
  bulwark() { node "$ROOT/dist/cli/main.js" "$@"; }
fi

STEP="create a temporary directory"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bulwark-demo.XXXXXX")
VAULT_PID=""
cleanup() {
  if [ -n "$VAULT_PID" ]; then
    kill "$VAULT_PID" 2>/dev/null || true
    wait "$VAULT_PID" 2>/dev/null || true
  fi
  if [ "${DEMO_KEEP:-0}" = 1 ]; then
    echo "demo: kept $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap 'rc=$?; cleanup; if [ "$rc" -ne 0 ]; then printf "\ndemo: FAILED at step \"%s\" (exit code %d)\n" "$STEP" "$rc" >&2; fi' EXIT
echo "working in $WORK"
SRC=$WORK/src
RESTORE=$WORK/restore

# The demo's own repository and password; anything set in the caller's environment is ignored.
unset BULWARK_PASSWORD
export BULWARK_REPOSITORY=$WORK/repo
export BULWARK_PASSWORD_FILE=$WORK/password

# 2. sample data
step "generate a 32 MiB sample tree in $SRC"
node bench/gen-dataset.mjs --out "$SRC" --size 32MiB --quiet
echo "$(find "$SRC" -type f | wc -l) files, $(find "$SRC" -type d | wc -l) directories, $(find "$SRC" -type l | wc -l) symlinks"

# 3. repository
step "bulwark init (password in $BULWARK_PASSWORD_FILE)"
(
  umask 077
  node -e 'process.stdout.write(require("node:crypto").randomBytes(24).toString("base64url") + "\n")' \
    >"$BULWARK_PASSWORD_FILE"
)
bulwark init

# 4. two backups
step "bulwark backup (first: every file is read)"
bulwark backup "$SRC"

step "bulwark backup (again: unchanged files are recognised from the parent snapshot)"
bulwark backup "$SRC"
bulwark snapshots --json | node -e '
  const list = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
  const s = list.at(-1)?.summary;
  if (list.length !== 2 || !s) throw new Error(`expected 2 snapshots with a summary, got ${list.length}`);
  // No file may be read again. A few bytes of new trees are fine: the snapshot records the metadata of the
  // directories above the source (such as /tmp), which other programs change.
  if (s.filesNew + s.filesChanged !== 0 || s.bytesRead !== 0 || s.dataAdded > 64 * 1024) {
    throw new Error(`the second backup was not incremental: ${JSON.stringify(s)}`);
  }
  console.log(`incremental: ${s.filesUnmodified} files unmodified, 0 bytes read, 0 bytes added`);
'

# 5. restore and compare
step "bulwark restore latest --target $RESTORE"
bulwark restore latest --target "$RESTORE"

step "compare the restored tree with the source"
node bench/compare-trees.mjs --src "$SRC" --target "$RESTORE"

# 6. verify and list
step "bulwark check --read-data"
bulwark check --read-data

step "bulwark snapshots"
bulwark snapshots

# 7. the config-driven job: a primary and a copy on local disks, then the rule checked from the repositories
step "a sample SQLite database the application keeps writing to"
# The sqlite source copies a live database consistently with the sqlite3 shell; the demo installs it when it
# can (root with apt-get), and leaves the database out of the dataset otherwise.
if ! command -v sqlite3 >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends sqlite3 >/dev/null 2>&1 ||
    { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends sqlite3 >/dev/null 2>&1; } || true
fi
DB_SOURCE=""
DB_VALIDATOR=""
if command -v sqlite3 >/dev/null; then
  sqlite3 "$WORK/shop.db" "PRAGMA journal_mode=WAL;
    CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL, cents INTEGER NOT NULL);
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
    INSERT INTO orders (item, cents) SELECT 'item-' || i, i * 100 FROM n;" >/dev/null
  echo "$WORK/shop.db: 500 orders"
  DB_SOURCE="- { type: sqlite, path: $WORK/shop.db }"
  DB_VALIDATOR="- { type: sqlite, path: /sources/shop.sqlite, queries: [{ sql: \"SELECT count(*) FROM orders\", expect: \"500\" }] }"
else
  echo "sqlite3 is not installed: the dataset has no database (apt-get install sqlite3 to see it drilled)"
fi

step "a vault on loopback (bulwark serve-repo) that this host reaches with an append-only token"
# In a real setup the vault runs on another machine at another site; the host's token may add files but
# never delete or replace them, which is what makes it the "1 immutable or isolated" copy. Not made
# immutable with chattr here (--immutable off), so the demo can remove its temporary directory.
(umask 077 && bulwark --json serve-repo token add --tokens "$WORK/vault-tokens.json" --name demo-host \
  --role append-only | node -e 'process.stdout.write(JSON.parse(require("node:fs").readFileSync(0, "utf8")).token + "\n")' \
  >"$WORK/vault-token")
VAULT_PORT=$(node -e 'const s = require("node:net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
bulwark serve-repo --init --path "$WORK/vault" --listen "127.0.0.1:$VAULT_PORT" --tokens "$WORK/vault-tokens.json" \
  --immutable off >"$WORK/vault.log" 2>&1 &
VAULT_PID=$!
for _ in $(seq 1 100); do
  if node -e 'require("node:net").connect(Number(process.argv[1]), "127.0.0.1").on("connect", () => process.exit(0)).on("error", () => process.exit(1))' "$VAULT_PORT"; then
    break
  fi
  sleep 0.1
done
echo "vault listening on 127.0.0.1:$VAULT_PORT (log: $WORK/vault.log)"

step "bulwark run: back up to a primary, copy to a second disk and the vault (verified), apply retention"
# The service the runbook brings back: it answers with the number of entries at the top of its data.
cat >"$WORK/app.js" <<'JS'
const http = require("node:http");
const { readdirSync } = require("node:fs");
const port = Number(process.env["BULWARK_DR_PORT_" + process.env.PORT] || process.env.PORT);
http.createServer((req, res) => res.end(`entries=${readdirSync(process.env.DATA).length}\n`)).listen(port, "127.0.0.1");
JS
APP_PORT=$(node -e 'const s = require("node:net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
ENTRIES=$(find "$SRC" -mindepth 1 -maxdepth 1 | wc -l | tr -d ' ')
cat >"$WORK/bulwark.yaml" <<YAML
version: 1
targets:
  primary:
    location: $WORK/job-primary
    labels: { medium: disk, site: home, failureDomain: disk-1 }
    password: { file: $BULWARK_PASSWORD_FILE }
  second-disk:
    location: $WORK/job-copy
    labels: { medium: disk, site: home, failureDomain: disk-2 }
    password: { file: $BULWARK_PASSWORD_FILE }
  vault:
    location: rest:http://127.0.0.1:$VAULT_PORT/
    labels: { medium: vault, site: vault-site, offsite: true, failureDomain: vault-1, isolation: append-only }
    credentials: { token: { file: $WORK/vault-token } }
    password: { file: $BULWARK_PASSWORD_FILE }
datasets:
  sample:
    sources:
      - { type: files, paths: ["$SRC"] }
      $DB_SOURCE
    drill:
      validators:
        - { type: paths, expect: [{ path: "$SRC", minFiles: 10 }] }
        $DB_VALIDATOR
policies:
  three-two-one-one-zero:
    # 3-2-1-1-0, and orchestrated recovery of the whole service on top.
    rule: { copies: 3, media: 2, offsite: 1, immutableOrIsolated: 1, zeroErrors: true, disasterRecovery: true }
    rpo: 24h
    retention: { primary: { keepLast: 3 } }
    verification: { fullEvery: 30d, budget: 1GiB }
    drills: { every: 7d, runbookEvery: 30d }
jobs:
  sample-nightly: { dataset: sample, policy: three-two-one-one-zero, primary: primary, copies: [second-disk, vault] }
runbooks:
  sample-service:
    rto: 15m
    services:
      app:
        restore: [{ dataset: sample, to: { directory: $WORK/live } }]
        start: { command: [node, $WORK/app.js], setEnv: { DATA: "$WORK/live$SRC", PORT: "$APP_PORT" } }
        health: [{ type: http, url: "http://127.0.0.1:$APP_PORT/", body: "entries=$ENTRIES", retries: 50, intervalSeconds: 0.2 }]
YAML
export BULWARK_CATALOG=$WORK/catalog.db
bulwark run -c "$WORK/bulwark.yaml" --init

step "bulwark verify: every copy's structure and data, coverage remembered in the catalog"
bulwark verify -c "$WORK/bulwark.yaml"
bulwark verify -c "$WORK/bulwark.yaml" --target vault

step "bulwark drill: restore a copy into a sandbox, compare every file, validate the database"
bulwark drill -c "$WORK/bulwark.yaml"

step "bulwark dr plan: the runbook's readiness, the copy it would restore from, the estimated recovery time"
bulwark dr plan sample-service -c "$WORK/bulwark.yaml"

step "bulwark dr drill: restore the service, start it and check it in isolation, then remove it all"
bulwark dr drill sample-service -c "$WORK/bulwark.yaml"

step "bulwark posture: 3-2-1-1-0 from evidence (production + 3 copies, disk and vault, the vault offsite and append-only, 0 errors, DR drilled)"
bulwark posture -c "$WORK/bulwark.yaml"

step "restore from the copy alone and compare"
bulwark -r "$WORK/job-copy" restore latest --target "$WORK/restore-copy"
node bench/compare-trees.mjs --src "$SRC" --target "$WORK/restore-copy"

STEP="done"
printf '\ndemo: all steps passed\n'
