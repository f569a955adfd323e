#!/usr/bin/env bash
# Copy throughput: `bulwark copy` vs `restic copy` between two local repositories of one copy set, on the
# bench dataset (bench/data/SEED-SIZE, made by gen-dataset.mjs as bench/run.sh makes it).
#
#   bash bench/copy.sh                 # 1 GiB; BENCH_SIZE=64MiB for a quick run
#
# Each tool: init A, back the dataset up into A, init B sharing A's chunker parameters (restic:
# --copy-chunker-params; bulwark: --copy-chunker-params-from) with another password, then the timed step:
# copy every snapshot A -> B (bulwark verifies each pack on arrival by default; it is also timed with
# --no-verify), then a second copy with nothing new. Wall time, CPU and max RSS from /usr/bin/time.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
SIZE=${BENCH_SIZE:-1GiB}
SEED=${BENCH_SEED:-bench1}
DATA=$BENCH_DIR/data/$SEED-$SIZE
WORK=$BENCH_DIR/work/copy
BULWARK="$ROOT/bin/bulwark" # the launcher users run (its malloc settings lower peak memory)
export BULWARK_TEST_WEAK_KDF= RESTIC_PASSWORD=bench-a BULWARK_PASSWORD=bench-a
[ -d "$DATA" ] || node "$BENCH_DIR/gen-dataset.mjs" --size "$SIZE" --seed "$SEED" --out "$DATA"
[ -f "$ROOT/dist/cli/main.js" ] || (cd "$ROOT" && npm run build >/dev/null)
rm -rf "$WORK" && mkdir -p "$WORK"
echo bench-b >"$WORK/pw-b"

timed() { # label command...
  local label=$1
  shift
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/time" "$@" >"$WORK/$label.out" 2>"$WORK/$label.err" ||
    { cat "$WORK/$label.err" >&2; exit 1; }
  read -r wall user sys rss <"$WORK/time"
  printf '| %s | %.2f s | %.1f MB/s | %.2f s | %d MiB |\n' "$label" "$wall" \
    "$(echo "$BYTES / 1000000 / $wall" | bc -l)" "$(echo "$user + $sys" | bc -l)" $((rss / 1024))
}

BYTES=$(du -sb "$DATA" | cut -f1)
restic init -q -r "$WORK/restic-a" >/dev/null
restic backup -q -r "$WORK/restic-a" "$DATA" >/dev/null
RESTIC_FROM_PASSWORD=bench-a restic init -q -r "$WORK/restic-b" --password-file "$WORK/pw-b" \
  --from-repo "$WORK/restic-a" --copy-chunker-params >/dev/null
$BULWARK -q -r "$WORK/bulwark-a" init
$BULWARK -q -r "$WORK/bulwark-a" backup "$DATA" >/dev/null
$BULWARK -q -r "$WORK/bulwark-b" -p "$WORK/pw-b" init --copy-chunker-params-from "$WORK/bulwark-a" \
  --from-password-file <(echo bench-a)
cp -a "$WORK/bulwark-b" "$WORK/bulwark-b2"

echo "dataset: $DATA ($BYTES bytes)"
echo "| step | wall | rate | CPU (user+sys) | max RSS |"
echo "|---|---:|---:|---:|---:|"
timed "restic copy" env RESTIC_FROM_PASSWORD=bench-a restic copy -q -r "$WORK/restic-b" \
  --password-file "$WORK/pw-b" --from-repo "$WORK/restic-a"
timed "bulwark copy (verify on arrival)" $BULWARK copy --from "$WORK/bulwark-a" --to "$WORK/bulwark-b" \
  --to-password-file "$WORK/pw-b"
timed "bulwark copy --no-verify" $BULWARK copy --from "$WORK/bulwark-a" --to "$WORK/bulwark-b2" \
  --to-password-file "$WORK/pw-b" --no-verify
timed "restic copy, nothing new" env RESTIC_FROM_PASSWORD=bench-a restic copy -q -r "$WORK/restic-b" \
  --password-file "$WORK/pw-b" --from-repo "$WORK/restic-a"
timed "bulwark copy, nothing new" $BULWARK copy --from "$WORK/bulwark-a" --to "$WORK/bulwark-b" \
  --to-password-file "$WORK/pw-b"
$BULWARK -q -r "$WORK/bulwark-b" -p "$WORK/pw-b" check --read-data >/dev/null && echo "bulwark-b: check --read-data ok"
