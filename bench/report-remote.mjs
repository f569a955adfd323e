#!/usr/bin/env node
// Markdown report from bench/run-remote.sh's raw measurements (one line per target, tool and step).
//
//   node bench/report-remote.mjs --results bench/work/remote/results.jsonl [--meta F] [--dataset F]
//
// Throughput table: MB/s (source bytes by du -sb / wall; MB = 10^6 B) per step, for each target and tool that
// ran (a target may have one tool only: the vault serves Bulwark alone), then per target with both tools
// Bulwark's speedup over restic (restic wall / Bulwark wall) and its peak-RSS ratio (Bulwark / restic).
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
const TARGET_LABEL = {
  local: "local disk",
  sftp: "SFTP (loopback)",
  s3: "S3 RadosGW (loopback)",
  vault: "vault rest: (loopback)",
};
const measured = rows.filter((r) => STEPS.some((s) => s.step === r.step));
const targets = [...new Set(measured.map((r) => r.target))];
const tools = [...new Set(measured.map((r) => r.tool))];
const steps = STEPS.filter((s) => measured.some((r) => r.step === s.step));
const get = (target, tool, step) =>
  measured.find((r) => r.target === target && r.tool === tool && r.step === step);
const ran = (target, tool) => measured.some((r) => r.target === target && r.tool === tool);
// The (target, tool) pairs that ran, targets in run order, tools in run order within each target.
const pairs = targets.flatMap((k) => tools.filter((t) => ran(k, t)).map((t) => [k, t]));
const vaultServers = rows.filter((r) => r.step === "server" && r.target === "vault");
const fmt = (x, d = 1) => (x === null || x === undefined || Number.isNaN(x) ? "–" : x.toFixed(d));
const mbps = (r) => (r && r.wall_s > 0 ? r.src_bytes / 1e6 / r.wall_s : null);

const lines = [];
const out = (s = "") => lines.push(s);

const remoteNames = { sftp: "SFTP", s3: "S3", vault: "a Bulwark vault" };
const remoteList = targets.filter((k) => k !== "local").map((k) => remoteNames[k] ?? k);
out(
  `# Bulwark remote-repository benchmark (${remoteList.length ? remoteList.join(", ").replace(/, ([^,]*)$/, " and $1") : "no remote target"} on loopback${targets.includes("local") ? ", next to local disk" : ""})`,
);
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
      .join(" · ")}` +
      (targets.includes("sftp") ? ` · sshd: ${meta.services?.sshd ?? "–"}` : "") +
      (targets.includes("s3") ? ` · radosgw: ${meta.services?.radosgw ?? "–"}` : "") +
      (targets.includes("vault") && meta.services?.vault ? ` · vault: ${meta.services.vault}` : ""),
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
const targetText = {
  local: "local disk (a directory)",
  sftp:
    "SFTP to OpenSSH sshd on 127.0.0.1:2222 (`scripts/services/sshd.sh`; restic through `ssh -s sftp`, " +
    "Bulwark through its own SSH client)",
  s3: "S3 to Ceph RadosGW on 127.0.0.1:7480 (`scripts/services/ceph.sh`, memstore OSD)",
  vault: (() => {
    const imm = [...new Set(vaultServers.map((r) => r.immutable))];
    const immText =
      imm.length === 1
        ? imm[0]
          ? "stored files made immutable with chattr +i (`--immutable require`, running as root on a file system that supports it)"
          : "stored files not made immutable (`--immutable off`)"
        : "immutability: see the raw results";
    return (
      "a Bulwark vault: `bulwark serve-repo --init` on 127.0.0.1 (a free port, a fresh directory), reached through " +
      `the \`rest:\` backend over HTTP with an append-only token; ${immText}; Bulwark only (no restic rest-server here)`
    );
  })(),
};
out(
  `Targets: ${targets.map((k) => targetText[k] ?? k).join("; ")}. The servers run on the same machine and share ` +
    "its CPUs with the client. Warm page cache; fresh client caches per target and tool. MB = 10^6 B; MB/s = " +
    "source bytes (du -sb) / wall; CPU = user + sys; peak RSS = GNU time's max RSS of the largest client " +
    "process (the servers are not counted); repo = bytes stored on the target after the step.",
);
out();

out("## Throughput (MB/s)");
out();
out(`| step | ${pairs.map(([k, t]) => `${t} ${k}`).join(" | ")} |`);
out(`|---|${pairs.map(() => "---:").join("|")}|`);
for (const s of steps) {
  if (s.step === "init") continue;
  out(`| ${s.label} | ${pairs.map(([k, t]) => fmt(mbps(get(k, t, s.step)), 0)).join(" | ")} |`);
}
out();
// The tools asked for (meta.tools) that did not run on a target: the vault target runs Bulwark only.
const requested = meta?.tools ? meta.tools.split(/\s+/).filter(Boolean) : tools;
const oneTool = targets.filter((k) => requested.some((t) => !ran(k, t)));
if (oneTool.length) {
  out(
    `Not run: ${oneTool
      .map(
        (k) =>
          `${requested.filter((t) => !ran(k, t)).join(", ")} on ${k}${k === "vault" ? " (the vault serves Bulwark's rest: protocol; restic's rest-server is not packaged here)" : ""}`,
      )
      .join("; ")}.`,
  );
  out();
}

const both = targets.filter((k) => ran(k, "bulwark") && ran(k, "restic"));
if (both.length) {
  out("## Bulwark vs restic per target");
  out();
  out(
    "speedup = restic wall / Bulwark wall (> 1: Bulwark is faster); RSS ratio = Bulwark / restic peak RSS.",
  );
  out();
  out(
    `| step | ${both.map((k) => `speedup ${k}`).join(" | ")} | ${both.map((k) => `RSS ratio ${k}`).join(" | ")} |`,
  );
  out(`|---|${both.map(() => "---:").join("|")}|${both.map(() => "---:").join("|")}|`);
  for (const s of steps) {
    const sp = both.map((k) => {
      const b = get(k, "bulwark", s.step);
      const p = get(k, "restic", s.step);
      return b && p && b.wall_s > 0 ? `${fmt(p.wall_s / b.wall_s, 2)}×` : "–";
    });
    const rss = both.map((k) => {
      const b = get(k, "bulwark", s.step);
      const p = get(k, "restic", s.step);
      return b && p && p.max_rss_kib > 0 ? `${fmt(b.max_rss_kib / p.max_rss_kib, 2)}×` : "–";
    });
    out(`| ${s.label} | ${sp.join(" | ")} | ${rss.join(" | ")} |`);
  }
  out();
}
const remotePairs = pairs.filter(([k, t]) => k !== "local" && ran("local", t));
if (remotePairs.length) {
  out("Remote vs local (the same tool's wall on the local disk / on the target; 1.00 = no remote cost):");
  out();
  out(`| step | ${remotePairs.map(([k, t]) => `${t} ${k}`).join(" | ")} |`);
  out(`|---|${remotePairs.map(() => "---:").join("|")}|`);
  for (const s of steps) {
    if (s.step === "init") continue;
    const cells = remotePairs.map(([k, t]) => {
      const l = get("local", t, s.step);
      const r = get(k, t, s.step);
      return l && r && r.wall_s > 0 ? `${fmt(l.wall_s / r.wall_s, 2)}` : "–";
    });
    out(`| ${s.label} | ${cells.join(" | ")} |`);
  }
  out();
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
  const parts = pairs.map(([k, t]) => {
    const v = verifies.find((r) => r.target === k && r.tool === t);
    if (!v) return `${t} ${k}: not checked`;
    return `${t} ${k}: ${v.ok ? "identical" : "**DIFFERENT**"}${v.ok ? ` (${v.files} files${v.mtimeWarnings ? `, ${v.mtimeWarnings} mtime differences` : ""})` : ""}`;
  });
  out(`Restore byte-identity (compare-trees.mjs): ${parts.join(" · ")}.`);
  out();
}
process.stdout.write(lines.join("\n") + "\n");
