/**
 * What interrupted runs leave (src/ops/leftovers.ts, docs/design.md §13, §14): a `bulwark run` killed with
 * SIGKILL mid-copy leaves its locks on both targets and `.tmp-*` files on the copy target; the next run
 * removes the dead process's locks and the temp files past the grace, and leaves alone a live process's lock
 * and a recent temp file another writer may still be writing.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readdir, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { LocalBackend } from "../../src/backend/local/local-backend.js";
import { RepoLock } from "../../src/repository/lock.js";
import { Repository } from "../../src/repository/repository.js";
import {
  CLI,
  MiB,
  describeRun,
  makeTempDir,
  randomData,
  removeTempDirs,
  runCli,
  spawnNode,
  writeFiles,
} from "./helpers.js";

afterAll(removeTempDirs);

/** Every `.tmp-*` file in a local repository (root and every layout directory), as full paths. */
async function tempFiles(repo: string): Promise<string[]> {
  const out: string[] = [];
  const dirs = [repo, join(repo, "locks"), join(repo, "index"), join(repo, "snapshots"), join(repo, "keys")];
  for (const d of await readdir(join(repo, "data")).catch(() => [])) dirs.push(join(repo, "data", d));
  for (const d of dirs)
    for (const name of await readdir(d).catch(() => []))
      if (name.startsWith(".tmp-")) out.push(join(d, name));
  return out.sort();
}

const locks = async (repo: string): Promise<string[]> =>
  (await readdir(join(repo, "locks")).catch(() => [])).filter((n) => !n.startsWith(".")).sort();

describe("SIGKILL mid-copy, then run again", () => {
  it("the next run removes the dead process's locks and old temp files, never a live lock or a recent temp file", async () => {
    const dir = await makeTempDir("leftovers");
    const env = { BULWARK_CATALOG: join(dir, "state", "catalog.db"), HOME: dir };
    const password = `pw-${randomBytes(8).toString("hex")}`;
    await writeFile(join(dir, "pw"), password + "\n");
    const target = (name: string) => ({
      location: join(dir, name),
      labels: { medium: "disk", site: "home", failureDomain: `fd-${name}` },
      password: { file: join(dir, "pw") },
    });
    await mkdir(join(dir, "src"));
    await writeFile(join(dir, "src", "big.bin"), randomData(160 * MiB));
    await writeFiles(join(dir, "src"), { "small.txt": "small\n" });
    const config = join(dir, "bulwark.json");
    await writeFile(
      config,
      JSON.stringify({
        version: 1,
        targets: { local: target("local"), nas: target("nas") },
        datasets: { big: { sources: [{ type: "files", paths: [join(dir, "src")] }] } },
        policies: { p: { rule: { copies: 1 }, rpo: "24h", retention: {} } },
        jobs: { big: { dataset: "big", policy: "p", primary: "local", copies: ["nas"] } },
      }),
    );
    const nas = join(dir, "nas");
    const local = join(dir, "local");

    // Killed while a pack is being written to the copy target: a temp file exists at that moment.
    const { child, result } = spawnNode([CLI, "--json", "run", "--init", "-c", config], {
      env,
      timeoutMs: 120_000,
    });
    const killedPid = child.pid!;
    const deadline = Date.now() + 90_000;
    while (Date.now() < deadline && child.exitCode === null) {
      if ((await tempFiles(nas)).some((p) => p.includes(join(nas, "data")))) {
        child.kill("SIGKILL");
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const killed = await result;
    expect(killed.signal, describeRun(["run"], killed)).toBe("SIGKILL");
    const left = await tempFiles(nas);
    expect(left.length).toBeGreaterThan(0);
    const deadLocks = { nas: await locks(nas), local: await locks(local) };
    expect(deadLocks.nas.length).toBeGreaterThan(0);
    expect(deadLocks.local.length).toBeGreaterThan(0);

    // Past the grace (an hour): the killed run's temp files, made two hours old.
    const old = new Date(Date.now() - 2 * 3600_000);
    for (const p of left) await utimes(p, old, old);
    // A recent temp file, as another writer's save in progress would be, and a live process's lock.
    const recent = join(nas, "data", "00", `.tmp-${randomBytes(12).toString("hex")}`);
    await mkdir(join(nas, "data", "00"), { recursive: true });
    await writeFile(recent, "another writer's pack, being written\n");
    const backend = await LocalBackend.open(nas);
    const repo = await Repository.open(backend, password);
    const before = new Set(await locks(nas));
    const live = await RepoLock.acquire(repo, false);
    const liveName = (await locks(nas)).filter((n) => !before.has(n));
    expect(liveName).toHaveLength(1);

    try {
      const args = ["run", "-c", config];
      const again = await runCli(args, { env, timeoutMs: 180_000 });
      expect(again.code, describeRun(args, again)).toBe(0);
      // The catalog records what was removed, per target.
      const ev = ["--json", "catalog", "events", "--limit", "0"];
      const events = await runCli(ev, { env });
      expect(events.code, describeRun(ev, events)).toBe(0);
      const messages = (JSON.parse(events.stdout) as { message: string }[]).map((e) => e.message);
      expect(messages).toContain(
        `removed from nas the lock of dead process ${killedPid} and ${left.length} temporary file${left.length === 1 ? "" : "s"} of interrupted saves`,
      );
      expect(messages).toContain(`removed from ${local} the lock of dead process ${killedPid}`);
      // The dead process's locks are gone from both targets; the live one stays.
      expect(await locks(nas)).toEqual(liveName);
      expect(await locks(local)).toEqual([]);
      // The old temp files are gone; the recent one stays.
      expect(await tempFiles(nas)).toEqual([recent]);
    } finally {
      await live.release();
      await backend.close();
    }
    expect(await locks(nas)).toEqual([]);

    // Nothing stored was harmed: both repositories check, and the copy holds the snapshot.
    for (const name of ["local", "nas"]) {
      const args = ["-r", join(dir, name), "-p", join(dir, "pw"), "check"];
      const check = await runCli(args, { env });
      expect(check.code, describeRun(args, check)).toBe(0);
    }
  });
});
