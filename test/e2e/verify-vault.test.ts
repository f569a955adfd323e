/**
 * `bulwark verify` on a vault started here (`serve-repo`, append-only token): the packs a run does not
 * read are checked at rest by the vault's own SHA-256, so bit rot in a pack the budget left unread is found
 * without downloading it, named with its snapshot and files, recorded damaged in the catalog, and read
 * first by the next run.
 */
import { stat } from "node:fs/promises";
import { basename, join } from "node:path";

import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  TestRepo,
  describeRun,
  flipByte,
  makeTempDir,
  packFiles,
  randomData,
  removeTempDirs,
  writeFiles,
  addVaultToken,
  startTestVault,
  type TestVault,
} from "./helpers.js";

interface VerifyJson {
  ok: boolean;
  targets: {
    target: string;
    ok?: boolean;
    packsRead?: number;
    bytesRead?: number;
    plan?: { read: string[]; deferred: number; fresh: number };
    digests?: { offered: boolean; packs: number; bytes: number; damaged: number; withoutDigest: number };
    coverage?: { packs: number; covered: number; damaged: number };
    findings?: { kind: string; pack?: string; snapshots?: string[]; files?: string[]; message: string }[];
  }[];
}

let base: string;
let vault: TestVault | undefined;
let location: string;
let env: Record<string, string>;
let vaultDir: string;
let repo: TestRepo;
let snapshot: string;

beforeAll(async () => {
  base = await makeTempDir("verify-vault");
  const tokens = join(base, "tokens.json");
  const token = await addVaultToken(tokens, "host", "append-only");
  vaultDir = join(base, "vault");
  // Not immutable, so the test can damage a stored pack behind the vault's back, as bit rot would.
  vault = await startTestVault(vaultDir, tokens);
  location = vault.location;
  env = { BULWARK_REST_TOKEN: token, BULWARK_CATALOG: join(base, "state", "catalog.db"), HOME: base };
  const src = join(base, "src");
  // Four data packs of 16 MiB or so, and a tree pack.
  const files: Record<string, Buffer> = {};
  for (let i = 0; i < 10; i++) files[`f${i}.bin`] = randomData(6 * 1024 * 1024);
  await writeFiles(src, files);
  repo = await TestRepo.init(location, { passwordFile: join(base, "pw"), run: { env } });
  snapshot = (await repo.json<{ snapshot: string }>(["backup", src], { env })).snapshot;
}, 300_000);

afterAll(async () => {
  await vault?.stop();
  await removeTempDirs();
});

describe("bulwark verify on a vault", () => {
  it("finds a flipped byte in a pack it did not read by the vault's digest, records it damaged, and reads it first next time", async () => {
    const paths = await packFiles(vaultDir);
    const size = new Map(
      await Promise.all(paths.map(async (p) => [basename(p), (await stat(p)).size] as const)),
    );
    expect(size.size).toBeGreaterThanOrEqual(4);

    // 1. A budget of one pack: that pack is read, every other one is checked by digest, none downloaded.
    const first = await repo.json<VerifyJson>(["verify", "--budget", "1B", "--full-every", "30d"], { env });
    const t1 = first.targets[0]!;
    expect(first.ok).toBe(true);
    expect(t1.plan!.read).toHaveLength(1);
    const read1 = t1.plan!.read[0]!;
    expect(t1.bytesRead).toBe(size.get(read1));
    expect(t1.digests).toEqual({
      offered: true,
      packs: size.size - 1,
      bytes: [...size].filter(([n]) => n !== read1).reduce((sum, [, s]) => sum + s, 0),
      damaged: 0,
      withoutDigest: 0,
    });
    // A digest is not a read: coverage counts the one pack read.
    expect(t1.coverage).toMatchObject({ packs: size.size, covered: 1, damaged: 0 });

    // 2. Bit rot in a large data pack the next run will not read (it reads the first unread pack by name).
    const unread = [...size.keys()].filter((n) => n !== read1).sort();
    const next = unread[0]!;
    const victim = unread.slice(1).sort((a, b) => size.get(b)! - size.get(a)!)[0]!;
    await flipByte(paths.find((p) => basename(p) === victim)!, 1000);

    const args = ["--json", "verify", "--budget", "1B", "--full-every", "30d"];
    const second = await repo.run(args, { env });
    expect(second.code, describeRun(args, second)).toBe(1);
    const t2 = (JSON.parse(second.stdout) as VerifyJson).targets[0]!;
    // The victim was not downloaded: only the pack the plan read was.
    expect(t2.plan!.read).toEqual([next]);
    expect(t2.bytesRead).toBe(size.get(next));
    expect(t2.digests).toMatchObject({ offered: true, packs: size.size - 1, damaged: 1 });
    const finding = t2.findings!.find((f) => f.pack === victim);
    expect(finding?.kind).toBe("pack-digest");
    expect(finding?.message).toContain(victim.slice(0, 12));
    expect(finding?.snapshots).toEqual([snapshot]);
    expect(finding?.files?.some((f) => /\/f\d\.bin$/.test(f))).toBe(true);
    expect(second.stdout + second.stderr).not.toContain(env.BULWARK_REST_TOKEN);

    // 3. The catalog records it damaged, so repair finds it and the next run reads it first.
    const db = new Database(env.BULWARK_CATALOG, { readonly: true });
    try {
      const row = db.prepare("SELECT outcome, error FROM pack_reads WHERE pack = ?").get(victim) as
        | { outcome: string; error: string }
        | undefined;
      expect(row?.outcome).toBe("damaged");
      expect(row?.error).toContain("damaged at rest");
    } finally {
      db.close();
    }
    const third = await repo.run(args, { env });
    expect(third.code, describeRun(args, third)).toBe(1);
    const t3 = (JSON.parse(third.stdout) as VerifyJson).targets[0]!;
    expect(t3.plan!.read).toEqual([victim]);
    expect(t3.bytesRead).toBe(size.get(victim));
    // Read and decrypted this time: the damage is confirmed inside the pack.
    expect(t3.findings!.some((f) => f.pack === victim && f.kind === "blob-damaged")).toBe(true);
  }, 300_000);
});
