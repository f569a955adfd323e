#!/usr/bin/env node
// Markdown report from bench/run-remote.sh's raw measurements (one line per target, tool and step).
//
//   node bench/report-remote.mjs --results bench/work/remote/results.jsonl [--meta F] [--dataset F]
//
// Throughput table: MB/s (source bytes by du -sb / wall; MB = 10^6 B) per step, tool and target, then per
// target Bulwark's speedup over restic (restic wall / Bulwark wall) and its peak-RSS ratio (Bulwark / restic).
// The full measurements (wall, CPU, peak RSS, repository size) follow.
import { existsSync, readFileSync } from "node:fs";
import { parseArgs } from "./lib/prng.mjs";

const args = parseArgs(process.argv.slice(2));
if (!args.results) {
  process.stderr.write("usage: node bench/report-remote.mjs --results FILE [--meta F] [--dataset F]\n");
  process.exit(2);
}
const readJson = (f) => (f && existsSync(f) ? JSON.parse(readFileSync(f, "utf8")) : null);
const rows = readFileSync(args.results, "utf8")
  .split("\n")
  .filter((l) => l.trim())
  .map((l) => JSON.parse(l));
const meta = readJson(args.meta);
const dataset = readJson(args.dataset);

const STEPS = [
  { step: "init", label: "init" },
  { step: "backup1", label: "first backup" },
  { step: "backup2", label: "unchanged re-backup" },
  { step: "restore", label: "restore latest" },
  { step: "check", label: "check --read-data" },
];
const TARGET_LABEL = { local: "local disk", sftp: "SFTP (loopback)", s3: "S3 RadosGW (loopback)" };
const measured = rows.filter((r) => r.step !== "verify");
const targets = [...new Set(measured.map((r) => r.target))];
const tools = [...new Set(measured.map((r) => r.tool))];
const steps = STEPS.filter((s) => measured.some((r) => r.step === s.step));
const get = (target, tool, step) =>
  measured.find((r) => r.target === target && r.tool === tool && r.step === step);
const fmt = (x, d = 1) => (x === null || x === undefined || Number.isNaN(x) ? "–" : x.toFixed(d));
const mbps = (r) => (r && r.wall_s > 0 ? r.src_bytes / 1e6 / r.wall_s : null);

const lines = [];
const out = (s = "") => lines.push(s);

out("# Bulwark remote-repository benchmark (SFTP and S3 on loopback, next to local disk)");
out();
if (meta) {
  out(
    `${meta.date} · ${meta.cpu}, ${meta.nproc} vCPU, ${meta.memGiB} GiB · kernel ${meta.kernel} · Node ${meta.node}`,
  );
  out();
  if (meta.command) (out(`Command: \`${meta.command}\``), out());
  out(
    `Versions: ${Object.entries(meta.versions ?? {})
      .map(([t, v]) => `${t}: ${v}`)
      .join(" · ")} · sshd: ${meta.services?.sshd ?? "–"} · radosgw: ${meta.services?.radosgw ?? "–"}`,
  );
  out();
}
if (dataset) {
  out(
    `Dataset: \`node bench/gen-dataset.mjs --size ${meta?.size ?? dataset.size} --seed ${dataset.seed}\`: ` +
      `${dataset.files.toLocaleString("en")} files, ${dataset.dirs.toLocaleString("en")} dirs, ${dataset.symlinks} symlinks, ` +
      `${dataset.bytes.toLocaleString("en")} B (du -sb ${fmt(dataset.duBytes / 1e6)} MB).`,
  );
  out();
}
out(
  "Targets: local disk (a directory), SFTP to OpenSSH sshd on 127.0.0.1:2222 (`scripts/services/sshd.sh`; " +
    "restic through `ssh -s sftp`, Bulwark through its own SSH client), S3 to Ceph RadosGW on 127.0.0.1:7480 " +
    "(`scripts/services/ceph.sh`, memstore OSD). The servers run on the same machine and share its CPUs " +
    "with the client. Warm page cache; fresh client caches per target and tool. MB = 10^6 B; MB/s = source " +
    "bytes (du -sb) / wall; CPU = user + sys; peak RSS = GNU time's max RSS of the largest client process " +
    "(the servers are not counted); repo = bytes stored on the target after the step.",
);
out();

out("## Throughput (MB/s)");
out();
out(`| step | ${targets.flatMap((k) => tools.map((t) => `${t} ${k}`)).join(" | ")} |`);
out(`|---|${targets.flatMap(() => tools.map(() => "---:")).join("|")}|`);
for (const s of steps) {
  if (s.step === "init") continue;
  out(
    `| ${s.label} | ${targets.flatMap((k) => tools.map((t) => fmt(mbps(get(k, t, s.step)), 0))).join(" | ")} |`,
  );
}
out();

if (tools.includes("bulwark") && tools.includes("restic")) {
  out("## Bulwark vs restic per target");
  out();
  out(
    "speedup = restic wall / Bulwark wall (> 1: Bulwark is faster); RSS ratio = Bulwark / restic peak RSS.",
  );
  out();
  out(
    `| step | ${targets.map((k) => `speedup ${k}`).join(" | ")} | ${targets.map((k) => `RSS ratio ${k}`).join(" | ")} |`,
  );
  out(`|---|${targets.map(() => "---:").join("|")}|${targets.map(() => "---:").join("|")}|`);
  for (const s of steps) {
    const sp = targets.map((k) => {
      const b = get(k, "bulwark", s.step);
      const p = get(k, "restic", s.step);
      return b && p && b.wall_s > 0 ? `${fmt(p.wall_s / b.wall_s, 2)}×` : "–";
    });
    const rss = targets.map((k) => {
      const b = get(k, "bulwark", s.step);
      const p = get(k, "restic", s.step);
      return b && p && p.max_rss_kib > 0 ? `${fmt(b.max_rss_kib / p.max_rss_kib, 2)}×` : "–";
    });
    out(`| ${s.label} | ${sp.join(" | ")} | ${rss.join(" | ")} |`);
  }
  out();
  const remotes = targets.filter((k) => k !== "local");
  if (targets.includes("local") && remotes.length) {
    out("Remote vs local (the same tool's wall on the local disk / on the target; 1.00 = no remote cost):");
    out();
    out(`| step | ${remotes.flatMap((k) => tools.map((t) => `${t} ${k}`)).join(" | ")} |`);
    out(`|---|${remotes.flatMap(() => tools.map(() => "---:")).join("|")}|`);
    for (const s of steps) {
      if (s.step === "init") continue;
      const cells = remotes.flatMap((k) =>
        tools.map((t) => {
          const l = get("local", t, s.step);
          const r = get(k, t, s.step);
          return l && r && r.wall_s > 0 ? `${fmt(l.wall_s / r.wall_s, 2)}` : "–";
        }),
      );
      out(`| ${s.label} | ${cells.join(" | ")} |`);
    }
    out();
  }
}

out("## Measurements");
out();
out("| target | step | tool | wall s | MB/s | CPU s | cores | peak RSS MB | repo MB |");
out("|---|---|---|---:|---:|---:|---:|---:|---:|");
for (const k of targets) {
  for (const s of steps) {
    for (const t of tools) {
      const r = get(k, t, s.step);
      if (!r) continue;
      const cpu = r.user_s + r.sys_s;
      out(
        `| ${TARGET_LABEL[k] ?? k} | ${s.label} | ${t} | ${fmt(r.wall_s, 2)} | ${s.step === "init" ? "–" : fmt(mbps(r), 0)} | ` +
          `${fmt(cpu, 2)} | ${fmt(r.wall_s > 0 ? cpu / r.wall_s : null, 2)} | ${fmt((r.max_rss_kib * 1024) / 1e6, 0)} | ` +
          `${r.repo_bytes === null || r.repo_bytes === undefined ? "" : fmt(r.repo_bytes / 1e6, 0)} |`,
      );
    }
  }
}
out();

const verifies = rows.filter((r) => r.step === "verify");
if (verifies.length) {
  const parts = targets.flatMap((k) =>
    tools.map((t) => {
      const v = verifies.find((r) => r.target === k && r.tool === t);
      if (!v) return `${t} ${k}: not checked`;
      return `${t} ${k}: ${v.ok ? "identical" : "**DIFFERENT**"}${v.ok ? ` (${v.files} files${v.mtimeWarnings ? `, ${v.mtimeWarnings} mtime differences` : ""})` : ""}`;
    }),
  );
  out(`Restore byte-identity (compare-trees.mjs): ${parts.join(" · ")}.`);
  out();
}
process.stdout.write(lines.join("\n") + "\n");
