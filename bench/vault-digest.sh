#!/usr/bin/env bash
# A one-off measurement (design §17a): `bulwark verify` on a vault, checking packs at rest by the vault's
# SHA-256 (a digest sweep) against reading and decrypting every pack (a full read), on one repository.
#
#   bash bench/vault-digest.sh                  # 384 MiB of incompressible files
#   BENCH_DIGEST_MIB=128 bash bench/vault-digest.sh
#
# Steps:
#   1. a fresh vault (`serve-repo --init --immutable off`) on 127.0.0.1, a free port, storing under
#      bench/work/vault-digest, with an append-only token;
#   2. `bulwark init` and one backup of BENCH_DIGEST_MIB MiB of random files (24 files);
#   3. BENCH_RUNS times (default 3), in turn: `check` (the structure pass alone, the floor of both),
#      `verify --no-catalog --budget 1B --json` (one pack read, every other pack digest-checked: the sweep)
#      and `verify --no-catalog --json` (every pack read: the full read), each timed (wall seconds) with its
#      JSON kept (bytes read, packs and bytes checked by digest).
# The vault and the client share the machine's CPUs and disk: the numbers measure work, not a network (on a
# real link the full read also pays the transfer of every byte, the sweep a few dozen bytes per pack).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
WORK=$BENCH_DIR/work/vault-digest
MIB=${BENCH_DIGEST_MIB:-384}
RUNS=${BENCH_RUNS:-3}
CLI=$ROOT/dist/cli/main.js
VAULT_JS=$ROOT/dist/cli/vault-main.js
export BULWARK_PASSWORD=bench-password
export BULWARK_TEST_WEAK_KDF=1

[ -f "$CLI" ] || (cd "$ROOT" && npm run build >/dev/null)
rm -rf "$WORK"
mkdir -p "$WORK/src"
for i in $(seq 1 24); do head -c $((MIB * 1024 * 1024 / 24)) /dev/urandom >"$WORK/src/f$i.bin"; done

TOKEN=$(node "$VAULT_JS" --json serve-repo token add --tokens "$WORK/tokens.json" --name bench --role append-only |
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).token))')
export BULWARK_REST_TOKEN=$TOKEN
PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
node "$VAULT_JS" serve-repo --init --path "$WORK/vault" --listen "127.0.0.1:$PORT" --tokens "$WORK/tokens.json" \
  --immutable off >"$WORK/vault.log" 2>&1 &
VAULT_PID=$!
trap 'kill $VAULT_PID 2>/dev/null || true' EXIT
REPO="rest:http://127.0.0.1:$PORT/"
for _ in $(seq 1 100); do node "$CLI" -r "$REPO" init >/dev/null 2>&1 && break; sleep 0.1; done
node "$CLI" -r "$REPO" --json backup "$WORK/src" >/dev/null
echo "repository: $(du -sb "$WORK/vault" | cut -f1) bytes in $(find "$WORK/vault/data" -type f | wc -l) packs"

measure() { # NAME ARGS...: wall seconds and the JSON summary
  local name=$1 t0 t1
  shift
  t0=$(date +%s%N)
  node "$CLI" -r "$REPO" --json verify --no-catalog "$@" >"$WORK/$name.json"
  t1=$(date +%s%N)
  node -e '
    const t = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).targets[0];
    console.log(`${process.argv[2]}: ${process.argv[3]} s, packs read ${t.packsRead} (${t.bytesRead} bytes), ` +
      `digest-checked ${t.digests.packs} (${t.digests.bytes} bytes not downloaded), errors ${t.errors}`);
  ' "$WORK/$name.json" "$name" "$(awk "BEGIN{printf \"%.2f\", ($t1-$t0)/1e9}")"
}
structure() { # the floor both runs share: start-up, the structure pass (`check` reads no pack data)
  local t0 t1
  t0=$(date +%s%N)
  node "$CLI" -r "$REPO" --json check >/dev/null
  t1=$(date +%s%N)
  echo "structure only (check): $(awk "BEGIN{printf \"%.2f\", ($t1-$t0)/1e9}") s"
}
for run in $(seq 1 "$RUNS"); do
  structure
  measure "sweep-$run" --budget 1B
  measure "full-$run"
done
