/**
 * Index poisoning before prune (issue 12.2), against a real vault started here (`serve-repo`): malware on the
 * protected host holds the password and an append-only token, so it can add files but not delete them. It
 * adds a pack of junk envelopes, valid under the master key, that claim the ids of every data blob, and an
 * index naming that pack, both named to sort first. The next admin `prune` must keep the genuine data (it
 * verifies a blob's kept copy wherever the blob has several locations) and throw the junk away;
 * `check --read-data` passes and the restore is byte-identical afterwards. `check` names the blobs several
 * packs claim before the prune. Before any admin acts, a restore already reads past the junk: a blob whose
 * copy fails to verify is read from the next pack that holds it.
 */
import { randomBytes } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { basename, join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { bufferSource } from "../../src/backend/backend.js";
import { openRestBackend } from "../../src/backend/rest/rest-backend.js";
import { sha256Hex } from "../../src/crypto/crypto.js";
import type { IndexFile } from "../../src/repository/master-index.js";
import { encodePackHeader, type PackedBlob } from "../../src/repository/pack.js";
import { Repository } from "../../src/repository/repository.js";
import {
  TestRepo,
  makeTempDir,
  packFiles,
  randomData,
  removeTempDirs,
  restoredPath,
  writeFiles,
  type RunOptions,
  addVaultToken,
  startTestVault,
  type TestVault,
} from "./helpers.js";

interface CheckJson {
  ok: boolean;
  findings: { kind: string; severity?: string; pack?: string; blobs?: string[]; message: string }[];
}

let base: string;
let vault: TestVault | undefined;
let location: string;
let vaultDir: string;
let hostToken: string;
let host: RunOptions;
let admin: RunOptions;
let repo: TestRepo;
let src: string;
let files: Record<string, Buffer>;

beforeAll(async () => {
  base = await makeTempDir("index-poisoning");
  const tokens = join(base, "tokens.json");
  hostToken = await addVaultToken(tokens, "host", "append-only");
  const adminToken = await addVaultToken(tokens, "ops", "admin");
  vaultDir = join(base, "vault");
  vault = await startTestVault(vaultDir, tokens);
  location = vault.location;
  const common = { BULWARK_CATALOG: join(base, "state", "catalog.db"), HOME: base };
  host = { env: { ...common, BULWARK_REST_TOKEN: hostToken } };
  admin = { env: { ...common, BULWARK_REST_TOKEN: adminToken } };
  src = join(base, "src");
  files = {};
  for (let i = 0; i < 6; i++) files[`f${i}.bin`] = randomData(1024 * 1024 + i * 4096);
  await writeFiles(src, files);
  repo = await TestRepo.init(location, { passwordFile: join(base, "pw"), run: host });
  await repo.json(["backup", src], host);
}, 300_000);

afterAll(async () => {
  await vault?.stop();
  await removeTempDirs();
});

/** What the malware does with the host's password and append-only token: two new files, nothing deleted. */
async function poison(retires: string[] = []): Promise<{ junkPack: string; claimed: string[] }> {
  const backend = await openRestBackend(location, { token: hostToken });
  const r = await Repository.open(backend, repo.password);
  await r.loadIndex();
  const blobs: PackedBlob[] = [];
  const envelopes: Buffer[] = [];
  let offset = 0;
  for (const [id, entry] of r.index.entries()) {
    if (entry.type !== "data") continue;
    const envelope = r.codec.encode(randomBytes(entry.rawLength));
    blobs.push({ type: "data", id, offset, length: envelope.length, rawLength: entry.rawLength });
    envelopes.push(envelope);
    offset += envelope.length;
  }
  const junkPack = "00" + randomBytes(31).toString("hex");
  const pack = Buffer.concat([...envelopes, encodePackHeader(r.master.encrypt, blobs)]);
  await backend.save({ type: "pack", name: junkPack }, bufferSource(pack), { ifAbsent: true });
  // An index whose name sorts first, so readers and prune meet the junk location first.
  for (;;) {
    const doc: IndexFile = { version: 1, packs: [{ id: junkPack, blobs }] };
    if (retires.length > 0) doc.retires = retires;
    const sealed = r.sealDocument(doc);
    const name = sha256Hex(sealed);
    if (!name.startsWith("0")) continue;
    await backend.save({ type: "index", name }, bufferSource(sealed), { ifAbsent: true });
    break;
  }
  return { junkPack, claimed: blobs.map((b) => b.id) };
}

describe("index poisoning by an append-only host", () => {
  it("an admin prune keeps the genuine data and drops the junk; check --read-data passes and the restore is identical", async () => {
    const genuine = (await packFiles(vaultDir)).map((p) => basename(p));
    const { junkPack, claimed } = await poison();
    expect(claimed.length).toBeGreaterThanOrEqual(6);

    // check names the blobs several packs claim.
    const before = await repo.run(["--json", "check"], host);
    const found = JSON.parse(before.stdout) as CheckJson;
    const multiple = found.findings.filter((f) => f.kind === "blob-multiple");
    expect(multiple.length, before.stdout).toBeGreaterThan(0);
    expect(new Set(multiple.flatMap((f) => f.blobs ?? []))).toEqual(new Set(claimed));

    // The host restores before any admin has pruned: every junk copy is read first, fails, and the genuine
    // copy is read instead.
    const early = join(base, "restored-early");
    const first = await repo.run(["restore", "latest", "--target", early], host);
    expect(first.code, first.stderr).toBe(0);
    for (const [name, data] of Object.entries(files)) {
      const back = await readFile(join(restoredPath(early, src), name));
      expect(back.equals(data), name).toBe(true);
    }
    // So does a copy to another repository: it sends the genuine blobs, and the copy checks clean.
    const copyDir = join(base, "copy");
    const copied = await repo.run(["copy", "--from", location, "--to", copyDir, "--init"], host);
    expect(copied.code, copied.stderr).toBe(0);
    const copyCheck = await repo.run(["-r", copyDir, "check", "--read-data"], host);
    expect(copyCheck.code, copyCheck.stdout + copyCheck.stderr).toBe(0);

    const dry = await repo.run(["prune", "--dry-run"], admin);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stderr).toContain(
      `warning: ${claimed.length} copies of blobs held in several packs do not verify (in pack ${junkPack.slice(0, 12)})`,
    );
    const pruned = await repo.run(["--json", "prune"], admin);
    expect(pruned.code, pruned.stderr).toBe(0);
    const result = JSON.parse(pruned.stdout) as {
      copiesVerified: number;
      copiesRejected: { pack: string }[];
    };
    expect(result.copiesVerified).toBe(2 * claimed.length);
    expect(result.copiesRejected.map((c) => c.pack)).toEqual(claimed.map(() => junkPack));
    const after = (await packFiles(vaultDir)).map((p) => basename(p));
    for (const p of genuine) expect(after).toContain(p);
    expect(after).not.toContain(junkPack);

    const checked = await repo.run(["--json", "check", "--read-data"], host);
    expect(checked.code, checked.stdout + checked.stderr).toBe(0);
    const target = join(base, "restored");
    const restored = await repo.run(["restore", "latest", "--target", target], host);
    expect(restored.code, restored.stderr).toBe(0);
    for (const [name, data] of Object.entries(files)) {
      const back = await readFile(join(restoredPath(target, src), name));
      expect(back.equals(data), name).toBe(true);
    }
  }, 300_000);

  it("an index that also retires the genuine packs stops the prune, deleting nothing; check names it and repair --index --distrust drops it", async () => {
    const genuine = (await packFiles(vaultDir)).map((p) => basename(p));
    const backend = await openRestBackend(location, { token: hostToken });
    const r = await Repository.open(backend, repo.password);
    await r.loadIndex();
    const dataPacks = [
      ...new Set([...r.index.entries()].filter(([, e]) => e.type === "data").map(([, e]) => e.pack)),
    ];
    const { junkPack } = await poison(dataPacks);
    const pruned = await repo.run(["prune"], admin);
    expect(pruned.code, pruned.stderr).not.toBe(0);
    expect(pruned.stderr).toMatch(
      /prune stopped: none of the 2 copies of blob [0-9a-f]{12} .* verifies outside retired packs/,
    );
    expect(pruned.stderr).toContain("nothing was deleted");
    const after = (await packFiles(vaultDir)).map((p) => basename(p));
    expect(after.sort()).toEqual([...genuine, junkPack].sort());

    // check --read-data reads the retired packs, finds them intact, and names the index file that retires them.
    const checked = await repo.run(["--json", "check", "--read-data"], host);
    expect(checked.code).toBe(1);
    const intact = (JSON.parse(checked.stdout) as CheckJson).findings.filter(
      (f) => f.kind === "retired-intact",
    );
    expect(intact.map((f) => f.pack).sort()).toEqual([...dataPacks].sort());
    const named = /--distrust ([0-9a-f]{12})/.exec(intact[0]!.message)?.[1];
    expect(named, intact[0]!.message).toBeDefined();
    const poisoned = (await readdir(join(vaultDir, "index"))).find((n) => n.startsWith(named!));
    expect(poisoned).toBeDefined();

    // The host's append-only token cannot drop it: replaced, but kept, and the exit code says so.
    const refused = await repo.run(["repair", "--index", "--distrust", named!], host);
    expect(refused.code, refused.stdout + refused.stderr).toBe(1);
    expect(refused.stdout).toContain(`distrusted index file ${named} was replaced but the target keeps it`);
    // An admin can: then prune keeps the genuine data, drops the junk, and everything verifies.
    const dropped = await repo.run(["repair", "--index", "--distrust", named!], admin);
    expect(dropped.code, dropped.stdout + dropped.stderr).toBe(0);
    expect(dropped.stdout).toContain(`distrusted index file ${named} replaced and deleted`);
    expect(await readdir(join(vaultDir, "index"))).not.toContain(poisoned);
    const pruned2 = await repo.run(["prune"], admin);
    expect(pruned2.code, pruned2.stderr).toBe(0);
    const final = (await packFiles(vaultDir)).map((p) => basename(p));
    for (const p of genuine) expect(final).toContain(p);
    expect(final).not.toContain(junkPack);
    const clean = await repo.run(["check", "--read-data"], host);
    expect(clean.code, clean.stdout + clean.stderr).toBe(0);
  }, 300_000);
});
