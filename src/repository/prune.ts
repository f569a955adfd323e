/**
 * Prune: removes data no snapshot needs (docs/design.md, "Prune").
 *
 * Runs under the exclusive lock, so nothing else writes. Order matters for crash safety:
 * 1. Read every index file; walk every snapshot to find the blobs in use (abort if any tree is unreadable
 *    or any used blob is unindexed: deleting on a damaged picture could lose data).
 * 2. Where several packs claim a used blob, read and verify every copy: one that does not verify (damage,
 *    or an attacker's junk claiming the id) is left out, so the copy kept is always a verified one; none
 *    verifying stops the prune. Then classify packs: fully used (keep), unused (delete), partly used
 *    (repack when enough of it is waste).
 * 3. Copy the used blobs of packs to repack into new packs (each verified on the way).
 * 4. Write new index files for everything kept, then delete the old index files.
 * 5. Only then delete packs: no index refers to them any more.
 * 6. Delete the temporary files that interrupted saves left on the target (Backend.removeStaleTempFiles:
 *    local and SFTP) once they are TEMP_FILE_GRACE_MS old, which no save in progress ever is.
 * A crash before 4 leaves new packs unindexed (warned by check, removed by the next prune); a crash in 4 or
 * 5 leaves a complete index of existing packs. Every earlier snapshot stays restorable at every step.
 */
import { BulwarkError, errorMessage, hasCode, isNotFound } from "../core/errors.js";
import type { IndexFile } from "./master-index.js";
import type { PackedBlob } from "./pack.js";
import { PackWriter } from "./pack-writer.js";
import { forEachLimit, type Repository } from "./repository.js";

export interface PruneOptions {
  dryRun?: boolean;
  /**
   * The blobs (trees and data) the snapshots use, called once the index is loaded. The caller walks the
   * snapshots (src/snapshot/used-blobs.ts): this layer knows packs and blobs, not snapshots.
   */
  usedBlobs: () => Promise<ReadonlySet<string>>;
  /** Repack a partly used pack when at least this fraction of its bytes is unused. */
  repackThreshold?: number;
  reporter?: { phase?(message: string): void };
  /** The clock retention is judged by (tests inject one). */
  now?: () => number;
}

export interface PrunePlan {
  usedBlobs: number;
  packsKept: number;
  packsToDelete: string[];
  packsToRepack: string[];
  unreferencedPacks: string[];
  bytesFreed: number;
  bytesRepacked: number;
  /** Copies of used blobs held in several packs that were read and verified before choosing one. */
  copiesVerified: number;
  /** Those that did not verify (damage, or junk claiming an id): never kept, their packs retired. */
  copiesRejected: { pack: string; blob: string }[];
}

export interface PruneResult extends PrunePlan {
  indexFilesWritten: number;
  indexFilesRemoved: number;
  packsWritten: number;
  /**
   * Files left in place because the target still holds them under retention (Object Lock, a vault): they
   * are freed by a later prune once their locks expire.
   */
  locked: { file: string; until?: string }[];
  /** Temporary files of interrupted saves deleted from the target (step 6). */
  tempFilesRemoved: number;
}

const INDEX_FILE_MAX_BLOBS = 50_000;
/**
 * Temporary files younger than this are left alone. A save in progress writes to its file all the time and
 * a stalled connection is dropped within minutes (SFTP keepalive, the vault's idle timeout), so an hour
 * never takes a file from under a live upload, even one of another process that does not hold a lock.
 */
export const TEMP_FILE_GRACE_MS = 60 * 60 * 1000;

export async function prune(repo: Repository, options: PruneOptions): Promise<PruneResult> {
  const threshold = options.repackThreshold ?? 0.2;
  const now = options.now ?? Date.now;
  const phase = (m: string): void => options.reporter?.phase?.(m);

  phase("reading index files");
  const indexNames = await repo.listNames("index");
  const packs = new Map<string, PackedBlob[]>();
  const packsOfIndex = new Map<string, string[]>();
  const files: { name: string; file: IndexFile }[] = [];
  const unreadable: { name: string; error: string }[] = [];
  await forEachLimit(indexNames, 8, async (name) => {
    try {
      files.push({ name, file: await repo.loadDocument<IndexFile>("index", name) });
    } catch (err) {
      unreadable.push({ name, error: errorMessage(err) });
    }
  });
  repo.index.addFiles(files);
  // A damaged index file that `repair --index` rebuilt (a readable file supersedes it) is only deleted;
  // any other stops prune: its packs would look unreferenced.
  const blocking = unreadable.filter((u) => !repo.index.isSuperseded(u.name));
  if (blocking.length > 0) {
    const u = blocking[0]!;
    throw new BulwarkError(
      "INVALID_DATA",
      `prune stopped: index/${u.name.slice(0, 12)} is unreadable: ${u.error}`,
      {
        hint: "run `bulwark repair --index` (it rebuilds the index from the pack headers) and prune again; nothing was deleted",
      },
    );
  }
  files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const stored = new Map<string, number>();
  for await (const info of repo.backend.list("pack")) stored.set(info.name, info.size);
  // Packs repair retired (damaged) are not indexed: deleted as unreferenced where the target allows.
  const retired = repo.index.retiredPacks();
  // Every location any index file claims for a blob, retired packs included: a pack several files name
  // holds the union of what they say (a later file cannot hide a blob an earlier one placed there).
  const claims = new Map<string, { pack: string; blob: PackedBlob }[]>();
  const seen = new Set<string>();
  for (const { name, file } of files) {
    for (const p of file.packs) {
      const live = !repo.index.isRetired(p.id);
      if (live && !packs.has(p.id)) packs.set(p.id, []);
      for (const b of p.blobs) {
        const key = `${p.id}:${b.id}:${b.offset}:${b.length}`;
        if (seen.has(key)) continue;
        seen.add(key);
        if (live) packs.get(p.id)!.push(b);
        if (!stored.has(p.id)) continue;
        let list = claims.get(b.id);
        if (!list) claims.set(b.id, (list = []));
        list.push({ pack: p.id, blob: b });
      }
    }
    // A retired pack stays retired (the new index files carry `retires`): an old file that names it does
    // not keep it.
    packsOfIndex.set(
      name,
      file.packs.filter((p) => !repo.index.isRetired(p.id)).map((p) => p.id),
    );
  }

  phase("finding data in use");
  const used = await options.usedBlobs();
  for (const id of used) {
    const entry = repo.index.get(id);
    if (!entry || !stored.has(entry.pack)) {
      throw new BulwarkError(
        "INVALID_DATA",
        `prune stopped: blob ${id.slice(0, 12)} is in use but ${entry ? "its pack is missing" : "not indexed"}`,
        {
          hint: "run `bulwark check`; nothing was deleted",
        },
      );
    }
  }

  phase("verifying blobs with several copies");
  const verified = await verifyCopies(repo, used, claims, (id) => repo.index.isRetired(id));
  // A copy that does not verify is no copy: left out of its pack's listing, so a pack of junk claiming
  // existing ids keeps nothing and is deleted, and the genuine pack keeps its blobs (§18).
  for (const [pack, bad] of verified.bad) {
    const blobs = packs.get(pack);
    if (blobs !== undefined)
      packs.set(
        pack,
        blobs.filter((b) => !bad.has(b)),
      );
  }

  phase("planning");
  const plan: PrunePlan = {
    usedBlobs: used.size,
    packsKept: 0,
    packsToDelete: [],
    packsToRepack: [],
    unreferencedPacks: [],
    bytesFreed: 0,
    bytesRepacked: 0,
    copiesVerified: verified.checked,
    copiesRejected: verified.rejected,
  };
  // Each used blob is kept in exactly one pack: the first kept pack that holds it.
  const keeper = new Map<string, string>();
  const keep = new Set<string>();
  const sortedPacks = [...packs.keys()].filter((p) => stored.has(p)).sort();
  for (const pack of sortedPacks) {
    const blobs = packs.get(pack)!;
    let usedBytes = 0;
    let total = 0;
    for (const b of blobs) {
      total += b.length;
      if (used.has(b.id) && !keeper.has(b.id)) usedBytes += b.length;
    }
    const size = stored.get(pack)!;
    if (usedBytes === 0) {
      plan.packsToDelete.push(pack);
      plan.bytesFreed += size;
    } else if (total - usedBytes >= total * threshold) {
      plan.packsToRepack.push(pack);
      plan.bytesRepacked += usedBytes;
      plan.bytesFreed += size - usedBytes;
    } else {
      keep.add(pack);
      plan.packsKept++;
      for (const b of blobs) if (used.has(b.id) && !keeper.has(b.id)) keeper.set(b.id, pack);
    }
  }
  for (const [pack, size] of stored) {
    if (!packs.has(pack)) {
      plan.unreferencedPacks.push(pack);
      plan.bytesFreed += size;
    }
  }
  const result: PruneResult = {
    ...plan,
    indexFilesWritten: 0,
    indexFilesRemoved: 0,
    packsWritten: 0,
    locked: [],
    tempFilesRemoved: 0,
  };
  if (options.dryRun) return result;
  const nothingToDo =
    plan.packsToDelete.length === 0 && plan.packsToRepack.length === 0 && plan.unreferencedPacks.length === 0;
  if (nothingToDo && indexNames.length <= 1) {
    await removeTempFiles(repo, result, phase);
    return result;
  }

  phase(`repacking ${plan.packsToRepack.length} packs`);
  const writer = new PackWriter(repo);
  for (const pack of plan.packsToRepack) {
    const data = await repo.backend.load({ type: "pack", name: pack });
    for (const b of packs.get(pack)!) {
      if (!used.has(b.id) || keeper.has(b.id)) continue;
      const envelope = data.subarray(b.offset, b.offset + b.length);
      const plain = repo.codec.decode(
        envelope,
        b.rawLength,
        `blob ${b.id.slice(0, 12)} in pack ${pack.slice(0, 12)}`,
      );
      if (repo.computeId(plain) !== b.id) {
        throw new BulwarkError(
          "INVALID_DATA",
          `prune stopped: blob ${b.id.slice(0, 12)} in pack ${pack.slice(0, 12)} is damaged`,
          {
            hint: "run `bulwark check --read-data`; nothing was deleted",
          },
        );
      }
      keeper.set(b.id, "repacked");
      // The verified envelope is stored as it is: no need to re-encrypt.
      await writer.add(b.type, b.id, Buffer.from(envelope), b.rawLength);
    }
  }
  await writer.flush();
  const newPacks = writer.takeNewPacks();
  result.packsWritten = newPacks.length;

  phase("writing the new index");
  // A pack holding a copy that did not verify, which this prune drops, is retired too: where the target
  // keeps an old index file naming it (retention), readers still never take the bad copy from it.
  const retires = [
    ...new Set([...retired, ...[...verified.bad.keys()].filter((p) => !keep.has(p) && packs.has(p))]),
  ].sort();
  const kept = [
    ...sortedPacks
      .filter((p) => keep.has(p))
      .map((id) => {
        // A kept pack keeps its recorded digest: the new index files replace the ones that held it.
        const sha256 = repo.index.packDigest(id);
        return { id, blobs: packs.get(id)!, ...(sha256 === undefined ? {} : { sha256 }) };
      }),
    ...newPacks,
  ];
  let batch: { id: string; blobs: PackedBlob[] }[] = [];
  let batchBlobs = 0;
  const writeBatch = async (force = false): Promise<void> => {
    if (batch.length === 0 && !force) return;
    await repo.saveDocument("index", {
      version: 1,
      packs: batch,
      supersedes: indexNames,
      // An old index file the target keeps (retention) may still name a retired pack: it stays retired.
      ...(retires.length > 0 ? { retires } : {}),
    } satisfies IndexFile);
    result.indexFilesWritten++;
    batch = [];
    batchBlobs = 0;
  };
  for (const p of kept) {
    batch.push(p);
    batchBlobs += p.blobs.length;
    if (batchBlobs >= INDEX_FILE_MAX_BLOBS) await writeBatch();
  }
  // Nothing kept: the retirements still need a file while an old one may survive.
  await writeBatch(result.indexFilesWritten === 0 && retires.length > 0);
  // An old index file the target will not let go of still names its packs: those packs must stay too, or
  // the repository would index data that is gone.
  const stillIndexed = new Set<string>();
  for (const name of indexNames) {
    if (await removeUnlessLocked(repo, "index", name, result.locked, now)) result.indexFilesRemoved++;
    else for (const pack of packsOfIndex.get(name) ?? []) stillIndexed.add(pack);
  }

  phase("deleting unused packs");
  const toDelete = [...plan.packsToDelete, ...plan.packsToRepack, ...plan.unreferencedPacks].filter(
    (pack) => !stillIndexed.has(pack),
  );
  await forEachLimit(toDelete, 8, async (pack) => {
    await removeUnlessLocked(repo, "pack", pack, result.locked, now);
  });
  result.locked.sort((a, b) => (a.file < b.file ? -1 : 1));
  await removeTempFiles(repo, result, phase);
  return result;
}

/**
 * Reads and verifies every copy of each used blob that several packs claim. Throws, deleting nothing, when
 * none of a blob's copies outside retired packs verifies: prune never drops what may be the last good copy.
 */
async function verifyCopies(
  repo: Repository,
  used: ReadonlySet<string>,
  claims: ReadonlyMap<string, { pack: string; blob: PackedBlob }[]>,
  isRetired: (pack: string) => boolean,
): Promise<{
  checked: number;
  rejected: { pack: string; blob: string }[];
  bad: Map<string, Set<PackedBlob>>;
}> {
  const bad = new Map<string, Set<PackedBlob>>();
  const rejected: { pack: string; blob: string }[] = [];
  let checked = 0;
  const several = [...claims].filter(([id, list]) => used.has(id) && list.length > 1);
  await forEachLimit(several, 8, async ([id, list]) => {
    let good = 0;
    for (const { pack, blob } of list) {
      checked++;
      if (await copyVerifies(repo, id, pack, blob)) {
        if (!isRetired(pack)) good++;
        continue;
      }
      rejected.push({ pack, blob: id });
      let set = bad.get(pack);
      if (!set) bad.set(pack, (set = new Set()));
      set.add(blob);
    }
    if (good === 0) {
      throw new BulwarkError(
        "INVALID_DATA",
        `prune stopped: none of the ${list.length} copies of blob ${id.slice(0, 12)} (in packs ${list.map((c) => c.pack.slice(0, 12)).join(", ")}) verifies outside retired packs`,
        { hint: "run `bulwark check --read-data` and `bulwark repair`; nothing was deleted" },
      );
    }
  });
  rejected.sort((a, b) => (a.pack + a.blob < b.pack + b.blob ? -1 : 1));
  return { checked, rejected, bad };
}

async function copyVerifies(repo: Repository, id: string, pack: string, blob: PackedBlob): Promise<boolean> {
  try {
    const envelope = await repo.backend.load(
      { type: "pack", name: pack },
      { offset: blob.offset, length: blob.length },
    );
    if (envelope.length !== blob.length) return false;
    const plain = repo.codec.decode(
      envelope,
      blob.rawLength,
      `blob ${id.slice(0, 12)} in pack ${pack.slice(0, 12)}`,
    );
    return repo.computeId(plain) === id;
  } catch (err) {
    if (hasCode(err, "INVALID_DATA") || isNotFound(err)) return false;
    throw err;
  }
}

/** Step 6, on targets that leave temporary files behind. */
async function removeTempFiles(
  repo: Repository,
  result: PruneResult,
  phase: (m: string) => void,
): Promise<void> {
  if (repo.backend.removeStaleTempFiles === undefined) return;
  phase("removing temporary files of interrupted saves");
  result.tempFilesRemoved = await repo.backend.removeStaleTempFiles(TEMP_FILE_GRACE_MS);
}

/**
 * Removes a file unless the target holds it under retention: prune never tries to delete a locked object
 * (on S3 that would only add a delete marker or an error); it reports it in `locked` instead. Returns whether
 * removed. Repair deletes the packs it retired the same way.
 */
export async function removeUnlessLocked(
  repo: Repository,
  type: "index" | "pack",
  name: string,
  locked: { file: string; until?: string }[],
  now: () => number,
): Promise<boolean> {
  const file = `${type}/${name.slice(0, 12)}`;
  const h = { type, name };
  try {
    const retention = await repo.backend.getRetention?.(h);
    if (retention && retention.until.getTime() > now()) {
      locked.push({ file, until: retention.until.toISOString() });
      return false;
    }
    await repo.backend.remove(h);
    return true;
  } catch (err) {
    if (isNotFound(err)) return true;
    if (hasCode(err, "RETENTION_LOCKED")) {
      locked.push({ file });
      return false;
    }
    throw err;
  }
}
