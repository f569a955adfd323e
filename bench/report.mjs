#!/usr/bin/env node
// Markdown report from bench/run.sh's raw measurements.
//
//   node bench/report.mjs --results bench/work/results.jsonl [--meta F] [--dataset F] [--mutation F]
//
// Per step and tool: wall s, MB/s (source bytes by du -sb / wall; MB = 10^6 B), CPU s (user+sys),
// peak RSS MB, repository MB. Then Bulwark's ratios to each peer with the issue's targets:
//   first backup            speedup >= 2x, repo <= 1.05x
//   unchanged re-backup     speedup >= 3x
//   backup after mutation   speedup >= 2x
//   restore                 speedup >= 2x
//   check --read-data       speedup >= 1.5x
//   every step              peak RSS <= the peer's
// speedup = peer wall / Bulwark wall. With several runs, times are medians over runs and ratios are
// medians of the ratios measured within each run (the machines are noisy; compare within a run).
// The targets are stated against restic; the borg table applies the same thresholds for information.
import { existsSync, readFileSync } from "node:fs";
import { parseArgs } from "./lib/prng.mjs";

const args = parseArgs(process.argv.slice(2));
if (!args.results) {
  process.stderr.write(
    "usage: node bench/report.mjs --results FILE [--meta F] [--dataset F] [--mutation F]\n",
  );
  process.exit(2);
}
const readJson = (f) => (f && existsSync(f) ? JSON.parse(readFileSync(f, "utf8")) : null);
const rows = readFileSync(args.results, "utf8")
  .split("\n")
  .filter((l) => l.trim())
  .map((l) => JSON.parse(l));
const meta = readJson(args.meta);
const dataset = readJson(args.dataset);
const mutation = readJson(args.mutation);

const STEPS = [
  { step: "init", label: "init" },
  { step: "backup1", label: "first backup", speedup: 2, repo: 1.05 },
  { step: "backup2", label: "unchanged re-backup", speedup: 3 },
  { step: "backup3", label: "backup after 2% mutation", speedup: 2, repoInfo: true },
  { step: "restore", label: "restore latest", speedup: 2 },
  { step: "check", label: "check --read-data", speedup: 1.5 },
];
const RSS_TARGET = 1.0;
const toolOrder = [...new Set(rows.filter((r) => r.step !== "verify").map((r) => r.tool))];
const peers = toolOrder.filter((t) => t !== "bulwark");
const hasBulwark = toolOrder.includes("bulwark");

const median = (xs) => {
  const v = xs.filter((x) => x !== null && x !== undefined && !Number.isNaN(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};
const sel = (tool, step) => rows.filter((r) => r.tool === tool && r.step === step);
const fmt = (x, d = 1) => (x === null || x === undefined ? "–" : x.toFixed(d));
/** a ratio with 2 decimals, or 3 when 2 would round it onto the other side of its target */
const fmtRatio = (x, target, higherIsBetter) => {
  if (x === null || x === undefined) return "–";
  const pass = higherIsBetter ? x >= target : x <= target;
  const shown = Number(x.toFixed(2));
  const shownPass = higherIsBetter ? shown >= target : shown <= target;
  return `${x.toFixed(pass === shownPass ? 2 : 3)}×`;
};
const mb = (b) => (b === null || b === undefined ? null : b / 1e6);

function stat(tool, step) {
  const rs = sel(tool, step);
  if (rs.length === 0) return null;
  return {
    wall: median(rs.map((r) => r.wall_s)),
    mbps: median(rs.map((r) => (r.wall_s > 0 ? r.src_bytes / 1e6 / r.wall_s : null))),
    cpu: median(rs.map((r) => r.user_s + r.sys_s)),
    rss: median(rs.map((r) => (r.max_rss_kib * 1024) / 1e6)),
    repo: median(rs.map((r) => mb(r.repo_bytes))),
    runs: rs.length,
  };
}

/** median over runs of f(bulwarkRow, peerRow) for runs where both exist */
function ratio(peer, step, f) {
  const out = [];
  for (const b of sel("bulwark", step)) {
    const p = sel(peer, step).find((r) => r.run === b.run);
    if (p) out.push(f(b, p));
  }
  return median(out);
}

const lines = [];
const out = (s = "") => lines.push(s);

out(`# Bulwark benchmark`);
out();
if (meta) {
  out(
    `${meta.date} · ${meta.cpu}, ${meta.nproc} vCPU, ${meta.memGiB} GiB · kernel ${meta.kernel} · Node ${meta.node} · ` +
      `${meta.runs} run(s), tool order: ${meta.tools}`,
  );
  out();
  if (meta.command) {
    out(`Command: \`${meta.command}\``);
    out();
  }
  out(
    `Versions: ${Object.entries(meta.versions ?? {})
      .map(([t, v]) => `${t}: ${v}`)
      .join(" · ")}`,
  );
  out();
}
if (dataset) {
  out(
    `Dataset: \`node bench/gen-dataset.mjs --size ${meta?.size ?? dataset.size} --seed ${dataset.seed}\`: ` +
      `${dataset.files.toLocaleString("en")} files, ${dataset.dirs.toLocaleString("en")} dirs, ${dataset.symlinks} symlinks, ` +
      `${dataset.bytes.toLocaleString("en")} B (du -sb ${fmt(mb(dataset.duBytes))} MB); ` +
      `zstd -3 ratio of a tar: ${dataset.zstd3Ratio ?? "–"}.`,
  );
  out();
}
if (mutation) {
  const parts = Object.entries(mutation.steps).map(([k, v]) => `${k} ${v.files}`);
  out(
    `Mutation (\`bench/mutate.mjs --seed ${mutation.seed}\`): ${parts.join(", ")}; ` +
      `${(mutation.mutatedBytes / 1048576).toFixed(1)} MiB = ${mutation.percent}%.`,
  );
  out();
}
out(
  "Warm page cache (the source is read once before the first tool; the cache cannot be dropped in a container). " +
    "MB = 10^6 B; MB/s = source bytes (du -sb) / wall; CPU = user + sys; peak RSS = max RSS from GNU time " +
    "(largest process); repo = du -sb of the repository after the step. " +
    "Restores were compared file by file (sha256, size, mode, owner, symlink targets) with the source.",
);
out();

out(`## Measurements${meta && meta.runs > 1 ? ` (median of ${meta.runs} runs)` : ""}`);
out();
out("| step | tool | wall s | MB/s | CPU s | cores | peak RSS MB | repo MB |");
out("|---|---|---:|---:|---:|---:|---:|---:|");
for (const s of STEPS) {
  for (const t of toolOrder) {
    const st = stat(t, s.step);
    if (!st) continue;
    const cores = st.wall > 0 ? st.cpu / st.wall : null;
    out(
      `| ${s.label} | ${t} | ${fmt(st.wall, 2)} | ${s.step === "init" ? "–" : fmt(st.mbps, 0)} | ${fmt(st.cpu, 2)} | ${fmt(cores, 2)} | ` +
        `${fmt(st.rss, 0)} | ${st.repo === null ? "" : fmt(st.repo, 0)} |`,
    );
  }
}
out();
const verifies = rows.filter((r) => r.step === "verify");
if (verifies.length) {
  const byTool = toolOrder.map((t) => {
    const v = verifies.filter((r) => r.tool === t);
    if (v.length === 0) return `${t}: not checked`;
    const ok = v.every((r) => r.ok);
    const w = v.reduce((a, r) => a + (r.mtimeWarnings ?? 0), 0);
    return `${t}: ${ok ? "identical" : "**DIFFERENT**"} (${v[0].files} files, ${v[0].symlinks} symlinks${w ? `, ${w} mtime differences` : ""})`;
  });
  out(`Restore byte-identity: ${byTool.join(" · ")}.`);
  out();
}

if (!hasBulwark) {
  out("Bulwark was not measured in this run (BENCH_TOOLS did not include it).");
} else {
  const verdict = (x, target, higherIsBetter) =>
    x === null ? "–" : (higherIsBetter ? x >= target : x <= target) ? "pass" : "**miss**";
  for (const peer of peers) {
    out(
      `## Bulwark vs ${peer}${peer === "restic" ? " (targets from the issue)" : " (information: the restic targets applied to borg)"}`,
    );
    out();
    out("| step | speedup | target | | peak RSS ratio | target | | repo ratio | target | |");
    out("|---|---:|---:|---|---:|---:|---|---:|---:|---|");
    for (const s of STEPS) {
      if (s.step === "init") continue;
      const sp = ratio(peer, s.step, (b, p) => p.wall_s / b.wall_s);
      const rss = ratio(peer, s.step, (b, p) => b.max_rss_kib / p.max_rss_kib);
      const repo =
        s.repo || s.repoInfo
          ? ratio(peer, s.step, (b, p) => (p.repo_bytes ? b.repo_bytes / p.repo_bytes : null))
          : null;
      const repoCells = s.repo
        ? `${fmtRatio(repo, s.repo, false)} | ≤ ${s.repo.toFixed(2)}× | ${verdict(repo, s.repo, false)}`
        : s.repoInfo
          ? `${fmt(repo, 2)}× | – | `
          : " | | ";
      out(
        `| ${s.label} | ${fmtRatio(sp, s.speedup, true)} | ≥ ${s.speedup}× | ${verdict(sp, s.speedup, true)} | ` +
          `${fmtRatio(rss, RSS_TARGET, false)} | ≤ ${RSS_TARGET.toFixed(2)}× | ${verdict(rss, RSS_TARGET, false)} | ${repoCells} |`,
      );
    }
    out();
  }
  out("speedup = peer wall / Bulwark wall; RSS and repo ratios = Bulwark / peer.");
}
process.stdout.write(lines.join("\n") + "\n");
