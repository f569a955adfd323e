#!/usr/bin/env bash
# Checks that bench/gen-dataset.mjs works for many seeds and sizes and that bench/mutate.mjs works on
# every tree it makes. Not part of `npm test`; run it after changing either script:
#
#   bash bench/check-gen.sh                                        # seeds 1..12 x 1MiB, 8MiB
#   CHECK_GEN_SEEDS="$(seq 1 40)" CHECK_GEN_SIZES="1MiB 3MiB 32MiB 100MiB" bash bench/check-gen.sh
#
# For each (size, seed): generate into a temporary directory (gen-dataset.mjs itself checks that the
# regular files add up to exactly --size), then mutate it. The first (size, seed) is also generated and
# mutated twice to check that both scripts are deterministic. Exits 1 if anything failed, naming it.
# TMPDIR chooses where the temporary directory is made; it is removed at the end.
set -uo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SEEDS=${CHECK_GEN_SEEDS:-$(seq 1 12)}
SIZES=${CHECK_GEN_SIZES:-1MiB 8MiB}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-gen.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# names, types, modes, sizes, mtimes, symlink targets and contents of a tree, as one hash
fingerprint() {
  (cd "$1" && find . -printf '%p %y %m %s %T@ %l\n' | LC_ALL=C sort &&
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum) | sha256sum | cut -d' ' -f1
}

# gen_and_mutate SIZE SEED DIR: 0 if both steps worked; prints what failed otherwise
gen_and_mutate() {
  local size=$1 seed=$2 dir=$3
  if ! node "$BENCH_DIR/gen-dataset.mjs" --out "$dir" --size "$size" --seed "$seed" --quiet --force \
    >"$WORK/gen.log" 2>&1; then
    echo "FAIL gen-dataset --size $size --seed $seed: $(grep -m1 -E '^[A-Za-z]*Error|^gen-dataset:' "$WORK/gen.log")"
    return 1
  fi
  fingerprint "$dir" >"$dir.gen.fp"
  if ! node "$BENCH_DIR/mutate.mjs" --dir "$dir" >"$WORK/mutate.log" 2>"$WORK/mutate.err"; then
    echo "FAIL mutate after --size $size --seed $seed: $(grep -m1 -E '^[A-Za-z]*Error|^mutate:' "$WORK/mutate.err")"
    return 1
  fi
  fingerprint "$dir" >"$dir.mutate.fp"
  echo "ok   --size $size --seed $seed: $(tail -n1 "$WORK/mutate.log" | grep -o '= [0-9.]*% of [0-9]* bytes')"
}

failed=0
runs=0
first=1
for size in $SIZES; do
  for seed in $SEEDS; do
    runs=$((runs + 1))
    dir=$WORK/tree
    if ! gen_and_mutate "$size" "$seed" "$dir"; then
      failed=$((failed + 1))
    elif [ "$first" = 1 ]; then
      mv "$dir.gen.fp" "$WORK/a.gen.fp" && mv "$dir.mutate.fp" "$WORK/a.mutate.fp"
      rm -rf "$dir"
      if ! gen_and_mutate "$size" "$seed" "$dir" >/dev/null; then
        echo "FAIL second run of --size $size --seed $seed"
        failed=$((failed + 1))
      elif ! cmp -s "$dir.gen.fp" "$WORK/a.gen.fp"; then
        echo "FAIL gen-dataset --size $size --seed $seed is not deterministic"
        failed=$((failed + 1))
      elif ! cmp -s "$dir.mutate.fp" "$WORK/a.mutate.fp"; then
        echo "FAIL mutate after --size $size --seed $seed is not deterministic"
        failed=$((failed + 1))
      else
        echo "ok   --size $size --seed $seed: deterministic (same tree twice, before and after mutate)"
      fi
    fi
    first=0
    rm -rf "$dir" "$dir.gen.fp" "$dir.mutate.fp"
  done
done

if [ "$failed" -gt 0 ]; then
  echo "check-gen: $failed of $runs (size, seed) pairs FAILED" >&2
  exit 1
fi
echo "check-gen: all $runs (size, seed) pairs passed (gen-dataset.mjs and mutate.mjs)"
