import type { Command } from "commander";
import { formatBytes, formatCount } from "../../core/format.js";
import { findSnapshot, loadAllSnapshots, matchesFilter } from "../../snapshot/snapshot.js";
import { walkTree } from "../../snapshot/walker.js";
import type { Node } from "../../snapshot/tree.js";
import { withRepository, type GlobalOptions, warnDamagedSnapshot, CONFIG_TARGET_HELP } from "../context.js";
import { computeStats } from "../../snapshot/stats.js";
import { EXIT } from "../exit-codes.js";

const collect = (value: string, previous: string[]): string[] => [...previous, value];

export function registerSnapshotCommands(program: Command, globals: () => GlobalOptions): void {
  program
    .command("snapshots")
    .option("-c, --config <file>", CONFIG_TARGET_HELP)
    .description("list snapshots")
    .option("--host <name>", "only snapshots of this host (repeatable)", collect, [])
    .option("--tag <tag>", "only snapshots with this tag (repeatable)", collect, [])
    .option("--path <path>", "only snapshots of this path (repeatable)", collect, [])
    .addHelpText(
      "after",
      "\nA snapshot file that cannot be read (damaged) is named on stderr and left out; the others are listed.\n\nExit codes:\n  0   every snapshot file was read\n  3   partial: a snapshot file could not be read (each is named; `bulwark check` reports it)\n  1, 10, 11, 12, 130 as for every command (bulwark --help)",
    )
    .action(async (flags: { host: string[]; tag: string[]; path: string[] }) => {
      await withRepository(globals(), "none", async ({ repo, out }) => {
        // A shorter list must not pass for the whole repository: every unreadable file is named and the exit
        // code says the list is partial (with or without filters, since a damaged file's host is unknown).
        let unreadable = 0;
        const all = await loadAllSnapshots(repo, (name, err) => {
          unreadable++;
          warnDamagedSnapshot(name, err);
        });
        const list = all.filter((s) =>
          matchesFilter(s, { hosts: flags.host, tags: flags.tag, paths: flags.path }),
        );
        if (unreadable > 0) {
          out.warn(
            `warning: ${unreadable} snapshot file${unreadable === 1 ? "" : "s"} could not be read; run bulwark check for the damage`,
          );
          process.exitCode = EXIT.PARTIAL;
        }
        out.emitJson(list);
        if (out.json) return;
        out.result(`${"ID".padEnd(10)}${"Time".padEnd(21)}${"Host".padEnd(16)}${"Tags".padEnd(16)}Paths`);
        for (const s of list) {
          const time = s.time.replace("T", " ").slice(0, 19);
          const partial = s.skipped?.length ? ` (partial: ${s.skipped.length} skipped)` : "";
          out.result(
            `${s.id.slice(0, 8).padEnd(10)}${time.padEnd(21)}${s.hostname.slice(0, 15).padEnd(16)}${s.tags.join(",").slice(0, 15).padEnd(16)}${s.paths.join(" ")}${partial}`,
          );
        }
        out.result(`${list.length} snapshot${list.length === 1 ? "" : "s"}`);
      });
    });

  program
    .command("ls")
    .option("-c, --config <file>", CONFIG_TARGET_HELP)
    .description("list the files in a snapshot")
    .argument("<snapshot>", "snapshot id, a unique prefix, or latest")
    .argument("[path]", "only entries at or below this path")
    .option("-l, --long", "show mode, size and modification time")
    .action(async (ref: string, path: string | undefined, flags: { long?: boolean }) => {
      await withRepository(globals(), "none", async ({ repo, out }) => {
        await repo.loadIndex();
        const snapshot = await findSnapshot(repo, ref, {}, warnDamagedSnapshot);
        const prefix = path ? "/" + path.split("/").filter(Boolean).join("/") : "/";
        const entries: { path: string; type: string; size?: number; mode: number; mtime: string }[] = [];
        for await (const { path: p, node } of walkTree(repo, snapshot.tree)) {
          if (prefix !== "/" && p !== prefix && !p.startsWith(prefix + "/")) continue;
          const entry = {
            path: p,
            type: node.type,
            mode: node.mode,
            mtime: mtimeIso(node),
            ...(node.size === undefined ? {} : { size: node.size }),
          };
          if (out.json) entries.push(entry);
          else if (flags.long) {
            out.result(
              `${modeString(node)} ${String(node.size ?? 0).padStart(12)} ${entry.mtime.slice(0, 19).replace("T", " ")} ${p}${node.type === "symlink" ? ` -> ${node.linkTarget}` : ""}`,
            );
          } else out.result(p);
        }
        out.emitJson({ snapshot: snapshot.id, entries });
      });
    });

  program
    .command("diff")
    .option("-c, --config <file>", CONFIG_TARGET_HELP)
    .description("show what changed between two snapshots")
    .argument("<a>", "the older snapshot")
    .argument("<b>", "the newer snapshot")
    .action(async (a: string, b: string) => {
      await withRepository(globals(), "none", async ({ repo, out }) => {
        await repo.loadIndex();
        const sa = await findSnapshot(repo, a, {}, warnDamagedSnapshot);
        const sb = await findSnapshot(repo, b, {}, warnDamagedSnapshot);
        const before = new Map<string, Node>();
        for await (const { path, node } of walkTree(repo, sa.tree)) before.set(path, node);
        const changes: { path: string; change: "+" | "-" | "M" | "T" }[] = [];
        for await (const { path, node } of walkTree(repo, sb.tree)) {
          const old = before.get(path);
          before.delete(path);
          if (!old) changes.push({ path, change: "+" });
          else if (old.type !== node.type) changes.push({ path, change: "T" });
          else if (node.type !== "dir" && !sameEntry(old, node)) changes.push({ path, change: "M" });
        }
        for (const path of before.keys()) changes.push({ path, change: "-" });
        changes.sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0));
        const counts = { added: 0, removed: 0, modified: 0 };
        for (const c of changes) {
          if (c.change === "+") counts.added++;
          else if (c.change === "-") counts.removed++;
          else counts.modified++;
          out.result(`${c.change}    ${c.path}`);
        }
        out.emitJson({ from: sa.id, to: sb.id, changes, ...counts });
        out.info(
          `\n${formatCount(counts.added)} added, ${formatCount(counts.removed)} removed, ${formatCount(counts.modified)} modified`,
        );
      });
    });

  program
    .command("stats")
    .option("-c, --config <file>", CONFIG_TARGET_HELP)
    .description("sizes: raw (all files), deduplicated (unique data) and stored (on the backend)")
    .argument("[snapshot...]", "only these snapshots (default: all)")
    .action(async (refs: string[]) => {
      await withRepository(globals(), "none", async ({ repo, out }) => {
        await repo.loadIndex();
        const snapshots = refs.length
          ? await Promise.all(refs.map((r) => findSnapshot(repo, r, {}, warnDamagedSnapshot)))
          : await loadAllSnapshots(repo, warnDamagedSnapshot);
        const stats = await computeStats(repo, snapshots, "all");
        out.emitJson(stats);
        out.result(`Snapshots:            ${formatCount(stats.snapshots)}`);
        out.result(`Files (all snapshots): ${formatCount(stats.files)}`);
        out.result(`Raw size:             ${formatBytes(stats.rawBytes)}`);
        out.result(
          `Deduplicated size:    ${formatBytes(stats.dedupBytes)} in ${formatCount(stats.blobs)} blobs`,
        );
        out.result(
          `Stored size:          ${formatBytes(stats.storedBytes)} (after compression and encryption)`,
        );
        out.result(
          `Repository on disk:   ${formatBytes(stats.repositoryBytes)} in ${formatCount(stats.packs)} packs`,
        );
        if (stats.dedupBytes > 0) {
          out.result(
            `Compression ratio:    ${(stats.dedupBytes / Math.max(1, stats.storedBytes)).toFixed(2)}x, dedup ratio ${(stats.rawBytes / stats.dedupBytes).toFixed(2)}x`,
          );
        }
      });
    });
}

function sameEntry(a: Node, b: Node): boolean {
  return (
    a.size === b.size &&
    a.mode === b.mode &&
    a.mtime === b.mtime &&
    a.linkTarget === b.linkTarget &&
    JSON.stringify(a.content ?? []) === JSON.stringify(b.content ?? [])
  );
}

function mtimeIso(node: Node): string {
  return new Date(Number(BigInt(node.mtime) / 1_000_000n)).toISOString();
}

function modeString(node: Node): string {
  const t = { file: "-", dir: "d", symlink: "l", fifo: "p", socket: "s", chardev: "c", blockdev: "b" }[
    node.type
  ];
  const bits = "rwxrwxrwx";
  let s = t;
  for (let i = 0; i < 9; i++) s += node.mode & (1 << (8 - i)) ? bits[i] : "-";
  return s;
}
