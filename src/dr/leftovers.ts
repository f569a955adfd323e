/**
 * What a `dr drill` killed with SIGKILL leaves behind, and its removal by the next one (docs/design.md §24):
 * a SIGKILL runs no exit handler, so the namespace, the services, the throwaway PostgreSQL clusters and the
 * sandbox would stay. Each drill therefore writes down what it makes as it makes it:
 *  - its namespace is named `bulwark-dr-<pid>-<random>`, with the pid of the process that owns it;
 *  - its sandbox holds `owner` (pid and host) and `clusters` (one cluster directory per line);
 *  - its services carry BULWARK_DR_RUN=<run id> in their environment, and the run id is in `owner` too.
 * Before it starts, a drill removes whatever belongs to a process of this host that is no longer alive: the
 * processes inside a dead owner's namespace and the namespace, the processes on the host whose environment
 * names a dead run (read from /proc, so a reused pid is never taken for a service), its clusters, its
 * sandbox. Another live drill's things are left alone.
 */
import { spawnSync } from "node:child_process";
import { appendFileSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";

import { removeLeftoverCluster } from "../sources/pg-cluster.js";

const OWNER = "owner";
const CLUSTERS = "clusters";
const NAMESPACE = /^bulwark-dr-(\d+)-[0-9a-f]+$/;

/** Writes the sandbox's owner: this process, this host, the run id. */
export function recordOwner(sandbox: string, runId: string): void {
  writeFileSync(join(sandbox, OWNER), `${process.pid}\n${hostname()}\n${runId}\n`, { mode: 0o600 });
}

/** Notes a throwaway cluster's directory in the sandbox, before the cluster is started. */
export function recordCluster(sandbox: string, dir: string): void {
  appendFileSync(join(sandbox, CLUSTERS), `${dir}\n`, { mode: 0o600 });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The pids whose environment holds BULWARK_DR_RUN=runId (and BULWARK_DR_SERVICE=service, if given). */
export function processesOfRun(runId: string, service?: string): number[] {
  const needle = `BULWARK_DR_RUN=${runId}\0`;
  const also = service !== undefined ? `\0BULWARK_DR_SERVICE=${service}\0` : "";
  const pids: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return pids;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const environ = `\0${readFileSync(`/proc/${e}/environ`, "latin1")}\0`;
      if (environ.includes(`\0${needle}`) && environ.includes(also)) pids.push(Number(e));
    } catch {
      // gone, or not ours to read
    }
  }
  return pids;
}

export function kill(pids: readonly number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}

/** Removes what dead drills left (see the module header); returns one line per thing removed. */
export function removeDrLeftovers(sandboxRoot: string): string[] {
  const removed: string[] = [];
  // Namespaces of dead owners, with what runs in them.
  const list = spawnSync("ip", ["netns", "list"], { encoding: "utf8", timeout: 10_000 });
  if (list.status === 0) {
    for (const line of list.stdout.split("\n")) {
      const name = line.split(" ")[0] ?? "";
      const m = NAMESPACE.exec(name);
      if (m === null || alive(Number(m[1]))) continue;
      const pids = spawnSync("ip", ["netns", "pids", name], { encoding: "utf8", timeout: 10_000 });
      const inside = (pids.stdout ?? "")
        .split("\n")
        .filter((p) => /^\d+$/.test(p))
        .map(Number);
      kill(inside);
      spawnSync("ip", ["netns", "delete", name], { stdio: "ignore", timeout: 10_000 });
      removed.push(`network namespace ${name} (${inside.length} process${inside.length === 1 ? "" : "es"})`);
    }
  }
  // Sandboxes of dead owners on this host: their services on the host, their clusters, themselves.
  let sandboxes: string[];
  try {
    sandboxes = readdirSync(sandboxRoot).filter((n) => n.startsWith("bulwark-dr-"));
  } catch {
    sandboxes = [];
  }
  for (const name of sandboxes) {
    const dir = join(sandboxRoot, name);
    let owner: string[];
    try {
      owner = readFileSync(join(dir, OWNER), "utf8").split("\n");
    } catch {
      continue; // not made by a drill that got as far as naming itself, or not ours
    }
    const [pid, host, runId] = owner;
    if (host !== hostname() || pid === undefined || alive(Number(pid))) continue;
    if (runId !== undefined && runId !== "") {
      const pids = processesOfRun(runId);
      kill(pids);
      if (pids.length > 0)
        removed.push(`${pids.length} service process${pids.length === 1 ? "" : "es"} of run ${runId}`);
    }
    let clusters: string[] = [];
    try {
      clusters = readFileSync(join(dir, CLUSTERS), "utf8").split("\n").filter(Boolean);
    } catch {
      // none
    }
    for (const c of clusters) {
      removeLeftoverCluster(c);
      removed.push(`PostgreSQL cluster ${c}`);
    }
    rmSync(dir, { recursive: true, force: true });
    removed.push(`sandbox ${dir}`);
  }
  return removed;
}
