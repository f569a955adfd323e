#!/usr/bin/env bash
# The daemon's memory over a soak (issue 14): `bulwark daemon` with a job every 10 s (a backup of a small
# tree to a local target and a copy to a second one), its resident memory sampled every 10 s from
# /proc/PID/status, while a client scrapes /metrics and /v1/status every 5 s as Prometheus would.
#
#   bash bench/daemon-soak.sh                 # 10 minutes
#   SOAK_SECONDS=120 bash bench/daemon-soak.sh
#
# Prints the samples and a summary (first, last, max, the slope of a least-squares line over the second half
# in KiB per minute); raw samples in bench/work/daemon-soak.tsv. Record the summary in bench/RESULTS.md.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
SECONDS_TOTAL=${SOAK_SECONDS:-600}
WORK="$BENCH_DIR/work/daemon-soak"
rm -rf "$WORK" && mkdir -p "$WORK/src"
[ -f "$ROOT/dist/cli/main.js" ] || (cd "$ROOT" && npm run build >/dev/null)
CLI=(node "$ROOT/dist/cli/main.js")
export BULWARK_STATE_DIR="$WORK/state" HOME="$WORK"
echo "soak-password" > "$WORK/pw"
node -e '
  const fs = require("node:fs"), path = require("node:path");
  for (let i = 0; i < 2000; i++) {
    const d = path.join(process.argv[1], String(i % 40));
    fs.mkdirSync(d, { recursive: true });
    fs.writeFileSync(path.join(d, `f${i}.txt`), `file ${i}\n`.repeat(1 + (i % 50)));
  }' "$WORK/src"
PORT=$(node -e 'const s=require("node:net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
cat > "$WORK/bulwark.yaml" <<YAML
version: 1
targets:
  local: { location: $WORK/local, labels: { medium: disk, site: a, failureDomain: a }, password: { file: $WORK/pw } }
  nas: { location: $WORK/nas, labels: { medium: disk, site: b, failureDomain: b }, password: { file: $WORK/pw } }
datasets:
  app: { sources: [{ type: files, paths: ["$WORK/src"] }] }
policies:
  p: { rule: { copies: 2 }, rpo: 1h, productionCounts: false }
jobs:
  app: { dataset: app, policy: p, primary: local, copies: [nas], schedule: "@every 10s" }
daemon:
  listen: 127.0.0.1:$PORT
  metricsAuth: false
YAML
"${CLI[@]}" run --init -c "$WORK/bulwark.yaml" >/dev/null
TOKEN=$("${CLI[@]}" daemon token add --name soak --role read -c "$WORK/bulwark.yaml" 2>/dev/null)
"${CLI[@]}" daemon -c "$WORK/bulwark.yaml" 2>"$WORK/daemon.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
sleep 2
: > "$WORK/samples.tsv"
start=$(date +%s)
next_sample=0
while [ $(( $(date +%s) - start )) -lt "$SECONDS_TOTAL" ]; do
  t=$(( $(date +%s) - start ))
  curl -sf "http://127.0.0.1:$PORT/metrics" >/dev/null || true
  curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/v1/status" >/dev/null || true
  if [ "$t" -ge "$next_sample" ]; then
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status")
    printf '%s\t%s\n' "$t" "$rss" | tee -a "$WORK/samples.tsv"
    next_sample=$(( next_sample + 10 ))
  fi
  sleep 5
done
runs=$("${CLI[@]}" --json catalog runs --job app --kind backup --limit 0 | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const r=JSON.parse(s);console.log(r.length+" backups, "+r.filter(x=>x.status!=="ok").length+" not ok")})')
mkdir -p "$BENCH_DIR/work" && cp "$WORK/samples.tsv" "$BENCH_DIR/work/daemon-soak.tsv"
node -e '
  const rows = require("node:fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => l.split("\t").map(Number));
  const kib = rows.map((r) => r[1]);
  const half = rows.slice(Math.floor(rows.length / 2));
  const n = half.length, mx = half.reduce((a, r) => a + r[0], 0) / n, my = half.reduce((a, r) => a + r[1], 0) / n;
  const slope = half.reduce((a, r) => a + (r[0] - mx) * (r[1] - my), 0) / half.reduce((a, r) => a + (r[0] - mx) ** 2, 0);
  console.log(`RSS first ${(kib[0]/1024).toFixed(1)} MiB, last ${(kib.at(-1)/1024).toFixed(1)} MiB, max ${(Math.max(...kib)/1024).toFixed(1)} MiB; second-half slope ${(slope*60).toFixed(0)} KiB/min over ${rows.at(-1)[0]} s`);
' "$WORK/samples.tsv"
echo "$runs"
