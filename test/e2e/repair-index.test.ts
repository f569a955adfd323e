/**
 * `bulwark repair --index` through the built CLI (issue 12.7): one flipped byte in one index file of a local
 * repository makes the restores of the files it indexed fail; `repair --index` rebuilds the index from the
 * pack headers, deletes the damaged file, and `check --read-data` passes and every file restores after. On a
 * vault reached with an append-only token the damaged file cannot be deleted: the rebuilt files supersede it,
 * check and restore pass, and an admin prune later deletes it.
 */
import { readFile } from "node:fs/promises";
import { basename, join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  TestRepo,
  flipByte,
  listFiles,
  makeTempDir,
  randomData,
  removeTempDirs,
  restoredPath,
  writeFiles,
  type RunOptions,
  addVaultToken,
  startTestVault,
  type TestVault,
} from "./helpers.js";

interface RepairIndexJson {
  ok: boolean;
  dryRun: boolean;
  damagedIndexFiles: { name: string; error: string }[];
  packsIndexed: number;
  blobsIndexed: number;
  unreadablePacks: unknown[];
  indexFilesWritten: number;
  removed: string[];
  locked: { file: string }[];
  missing?: number;
}

interface CheckJson {
  ok: boolean;
  findings: { kind: string; severity: string; message: string }[];
}

let base: string;
let vault: TestVault | undefined;

beforeAll(async () => {
  base = await makeTempDir("repair-index");
});

afterAll(async () => {
  await vault?.stop();
  await removeTempDirs();
});

/** Two backups of a growing directory: two index files, the second naming the new files' packs. */
async function twoBackups(repo: TestRepo, src: string, opts: RunOptions): Promise<Record<string, Buffer>> {
  const files: Record<string, Buffer> = {};
  for (let i = 0; i < 4; i++) files[`a${i}.bin`] = randomData(600 * 1024 + i);
  await writeFiles(src, files);
  await repo.json(["backup", src], opts);
  const more: Record<string, Buffer> = {};
  for (let i = 0; i < 4; i++) more[`b${i}.bin`] = randomData(600 * 1024 + i);
  await writeFiles(src, more);
  await repo.json(["backup", src], opts);
  return { ...files, ...more };
}

async function restoresAll(
  repo: TestRepo,
  src: string,
  files: Record<string, Buffer>,
  target: string,
  opts: RunOptions,
): Promise<{ code: number | null; stderr: string; identical: number }> {
  const r = await repo.run(["restore", "latest", "--target", target], opts);
  let identical = 0;
  for (const [name, data] of Object.entries(files)) {
    const back = await readFile(join(restoredPath(target, src), name)).catch(() => undefined);
    if (back?.equals(data)) identical++;
  }
  return { code: r.code, stderr: r.stderr, identical };
}

async function indexFiles(dir: string): Promise<string[]> {
  return (await listFiles(join(dir, "index"))).map((p) => basename(p)).sort();
}

describe("bulwark repair --index", () => {
  it("on a local repository: a flipped byte in one index file fails restores; repair --index fixes them", async () => {
    const dir = join(base, "local");
    const repo = await TestRepo.init(dir);
    const src = join(base, "src-local");
    const opts: RunOptions = { env: { BULWARK_CATALOG: join(base, "catalog.db"), HOME: base } };
    const files = await twoBackups(repo, src, opts);
    const before = await indexFiles(dir);
    expect(before).toHaveLength(2);
    // The index file written last by the second backup names its new packs.
    const damaged = before[1]!;
    await flipByte(join(dir, "index", damaged), 40);

    const broken = await restoresAll(repo, src, files, join(base, "restore-before"), opts);
    expect(broken.code).not.toBe(0);
    expect(broken.identical).toBeLessThan(Object.keys(files).length);
    const checkBefore = await repo.run(["--json", "check"], opts);
    expect(checkBefore.code).not.toBe(0);
    expect(checkBefore.stdout).toContain("repair --index");
    const prune = await repo.run(["prune"], opts);
    expect(prune.code).not.toBe(0);
    expect(prune.stderr).toContain("bulwark repair --index");

    const usage = await repo.run(["repair", "--index", "--from-repo", join(base, "other")], opts);
    expect(usage.code).toBe(1);
    expect(usage.stderr).toContain("repair --index takes no source");
    expect(await indexFiles(dir)).toEqual(before);

    const dry = await repo.json<RepairIndexJson>(["repair", "--index", "--dry-run"], opts);
    expect(dry).toMatchObject({ dryRun: true, ok: true, indexFilesWritten: 0, removed: [] });
    expect(dry.damagedIndexFiles.map((d) => d.name)).toEqual([damaged]);
    expect(dry.packsIndexed).toBeGreaterThan(0);
    expect(await indexFiles(dir)).toEqual(before);

    const fixed = await repo.json<RepairIndexJson>(["repair", "--index"], opts);
    expect(fixed).toMatchObject({
      ok: true,
      missing: 0,
      unreadablePacks: [],
      removed: [damaged],
      locked: [],
    });
    expect(fixed.packsIndexed).toBe(dry.packsIndexed);
    expect(fixed.indexFilesWritten).toBe(1);
    const after = await indexFiles(dir);
    expect(after).not.toContain(damaged);
    expect(after).toHaveLength(2);

    const checked = await repo.run(["--json", "check", "--read-data"], opts);
    expect(checked.code, checked.stdout).toBe(0);
    const restored = await restoresAll(repo, src, files, join(base, "restore-after"), opts);
    expect(restored.code, restored.stderr).toBe(0);
    expect(restored.identical).toBe(Object.keys(files).length);

    // A second run finds nothing to do.
    const again = await repo.json<RepairIndexJson>(["repair", "--index"], opts);
    expect(again).toMatchObject({ ok: true, damagedIndexFiles: [], packsIndexed: 0, indexFilesWritten: 0 });
  }, 300_000);

  it("on a vault with an append-only token: the damaged file stays superseded; check and restore pass; an admin prune deletes it", async () => {
    const tokens = join(base, "tokens.json");
    const common = { BULWARK_CATALOG: join(base, "vault-catalog.db"), HOME: base };
    const host: RunOptions = {
      env: { ...common, BULWARK_REST_TOKEN: await addVaultToken(tokens, "host", "append-only") },
    };
    const admin: RunOptions = {
      env: { ...common, BULWARK_REST_TOKEN: await addVaultToken(tokens, "ops", "admin") },
    };
    const vaultDir = join(base, "vault");
    // Not immutable, so the test can flip a byte behind the vault's back, as bit rot would.
    vault = await startTestVault(vaultDir, tokens);
    const repo = await TestRepo.init(vault.location, { passwordFile: join(base, "vault-pw"), run: host });
    const src = join(base, "src-vault");
    const files = await twoBackups(repo, src, host);
    const before = await indexFiles(vaultDir);
    expect(before).toHaveLength(2);
    const damaged = before[1]!;
    await flipByte(join(vaultDir, "index", damaged), 40);
    expect((await restoresAll(repo, src, files, join(base, "vault-before"), host)).code).not.toBe(0);

    const fixed = await repo.json<RepairIndexJson>(["repair", "--index"], host);
    expect(fixed).toMatchObject({ ok: true, missing: 0, removed: [], indexFilesWritten: 1 });
    expect(fixed.locked.map((l) => l.file)).toEqual([`index/${damaged.slice(0, 12)}`]);
    expect(await indexFiles(vaultDir)).toContain(damaged);
    // A rerun writes nothing more: the damaged file is already superseded.
    const rerun = await repo.json<RepairIndexJson>(["repair", "--index"], host);
    expect(rerun).toMatchObject({ ok: true, packsIndexed: 0, indexFilesWritten: 0, removed: [] });
    expect(rerun.locked).toHaveLength(1);
    expect(await indexFiles(vaultDir)).toHaveLength(3);

    const checked = await repo.run(["--json", "check", "--read-data"], host);
    expect(checked.code, checked.stdout).toBe(0);
    const findings = (JSON.parse(checked.stdout) as CheckJson).findings;
    expect(findings.filter((f) => f.kind === "index-damaged").map((f) => f.severity)).toEqual(["warning"]);
    const restored = await restoresAll(repo, src, files, join(base, "vault-after"), host);
    expect(restored.code, restored.stderr).toBe(0);
    expect(restored.identical).toBe(Object.keys(files).length);

    const pruned = await repo.run(["prune"], admin);
    expect(pruned.code, pruned.stderr).toBe(0);
    expect(await indexFiles(vaultDir)).not.toContain(damaged);
    const clean = await repo.run(["--json", "check", "--read-data"], host);
    expect(clean.code, clean.stdout).toBe(0);
    expect(
      (JSON.parse(clean.stdout) as CheckJson).findings.filter((f) => f.kind === "index-damaged"),
    ).toEqual([]);
  }, 300_000);
});
