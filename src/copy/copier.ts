/**
 * Copying snapshots between repositories (docs/design.md, "Copies"): every copy is a full repository that
 * restores alone, holding its own packs, index and snapshots under its own master key.
 *
 * Repositories of one copy set share the chunker seed and the blob-id key (`init --copy-chunker-params-from`),
 * so a blob has the same id everywhere: a copy moves only the blobs the target lacks, without re-chunking
 * or re-hashing. Each blob is decrypted with the source's key, checked against its id, and re-sealed under
 * the target's key as it was compressed (no second compression). Every pack written is read back from the
 * target and each blob in it checked against its id before the pack enters the target's index: what the
 * index lists arrived intact.
 *
 * Resumable: the target's index is written every few packs, and packs that an interrupted copy saved but
 * never indexed are found at the start of the next copy (their headers are self-describing) and indexed, so
 * nothing that arrived is sent again. A snapshot is written last, after the index files of all its blobs:
 * an interrupted copy never leaves a snapshot that refers to missing data.
 */
import type { FileInfo } from "../backend/backend.js";
import { BulwarkError, errorMessage, hasCode, isNotFound } from "../core/errors.js";
import { sha256Hex } from "../crypto/crypto.js";
import type { IndexEntry, IndexFile } from "../repository/master-index.js";
import { decodePackHeader, type PackedBlob } from "../repository/pack.js";
import { PackWriter } from "../repository/pack-writer.js";
import type { Repository } from "../repository/repository.js";
import { loadAllSnapshots, type Snapshot, type SnapshotWithId } from "../snapshot/snapshot.js";
import { decodeTreeEntries, treeReferences } from "../snapshot/tree.js";
import { systemClock } from "../core/clock.js";

export interface CopyProgress {
  /** The snapshot being copied: its position and how many will be. */
  snapshot: string;
  snapshotIndex: number;
  snapshotCount: number;
  blobsDone: number;
  blobsTotal: number;
  bytesDone: number;
  bytesTotal: number;
}

export interface CopyReporter {
  progress?(p: CopyProgress): void;
  snapshotDone?(copy: SnapshotCopy): void;
  warn?(message: string): void;
}

export interface CopyOptions {
  /** Source snapshots to copy (default: all of them), oldest first. */
  snapshots?: SnapshotWithId[];
  /** Read every pack back from the target and check it (default true). */
  verify?: boolean;
  /** Packs between two index files on the target (default 4: at most that many packs are sent twice). */
  checkpointPacks?: number;
  reporter?: CopyReporter;
}

export interface SnapshotCopy {
  source: string;
  /** The snapshot's id on the target. */
  target: string;
  /** The target already held a copy of it: nothing was sent. */
  alreadyThere: boolean;
  blobsCopied: number;
  bytesCopied: number;
  time: string;
  paths: string[];
  dataset?: string;
}

export interface SnapshotCopyFailure {
  source: string;
  error: string;
}

export interface CopyResult {
  snapshots: SnapshotCopy[];
  failed: SnapshotCopyFailure[];
  /** Blobs sent, and their plaintext bytes. */
  blobsCopied: number;
  bytesCopied: number;
  /** Blobs a snapshot needed that the target already had. */
  blobsPresent: number;
  packsWritten: number;
  storedBytes: number;
  /** Packs left by an interrupted copy (or backup) that were indexed instead of sent again. */
  adoptedPacks: number;
  adoptedBlobs: number;
  verifiedPacks: number;
  verifiedBlobs: number;
  durationMs: number;
}

/** Snapshots are the same snapshot on two repositories when they share their original id. */
export function snapshotIdentity(s: SnapshotWithId): string {
  return s.original ?? s.id;
}

/** Whether blobs can move between the two repositories as they are; throws a USAGE error naming why not. */
export function assertCopyCompatible(source: Repository, target: Repository): void {
  if (source.config.idKey !== target.config.idKey) {
    throw new BulwarkError(
      "USAGE",
      `${target.backend.location} was not created as a copy of ${source.backend.location}: their blob ids differ`,
      {
        hint:
          "create the copy target with `bulwark init --copy-chunker-params-from SOURCE` (bulwark run does " +
          "this itself for a copy target that does not exist yet)",
      },
    );
  }
  if (source.id === target.id) {
    throw new BulwarkError(
      "USAGE",
      `the source and the target are the same repository (${source.id.slice(0, 8)})`,
    );
  }
}

const DEFAULT_CHECKPOINT_PACKS = 4;
/** A source pack is read whole when the blobs needed from it cover at least this share of it. */
const WHOLE_PACK_SHARE = 0.5;
/** Needed blobs closer than this in a pack are read with one request. */
const MERGE_GAP_BYTES = 256 * 1024;

/**
 * Copies snapshots from `source` to `target`. The caller holds a read lock on the source and a write lock on
 * the target, and has loaded both indexes. A snapshot that cannot be copied (damaged source data) is
 * reported in `failed` and the others go on; nothing of it becomes visible on the target.
 */
export async function copySnapshots(
  source: Repository,
  target: Repository,
  options: CopyOptions = {},
): Promise<CopyResult> {
  assertCopyCompatible(source, target);
  const started = systemClock.now().getTime();
  const result: CopyResult = {
    snapshots: [],
    failed: [],
    blobsCopied: 0,
    bytesCopied: 0,
    blobsPresent: 0,
    packsWritten: 0,
    storedBytes: 0,
    adoptedPacks: 0,
    adoptedBlobs: 0,
    verifiedPacks: 0,
    verifiedBlobs: 0,
    durationMs: 0,
  };
  const warn = (m: string): void => options.reporter?.warn?.(m);

  const adopted = await adoptUnindexedPacks(target, warn, options.verify !== false);
  result.adoptedPacks = adopted.packs;
  result.adoptedBlobs = adopted.blobs;

  const onTarget = new Map<string, string>();
  for (const s of await loadAllSnapshots(target, (name, err) =>
    warn(`target snapshot ${name.slice(0, 8)} is damaged and was left out: ${errorMessage(err)}`),
  )) {
    onTarget.set(snapshotIdentity(s), s.id);
  }

  // A copied snapshot's parent must name a snapshot of the target: the copy of the source's parent.
  const allSource = await loadAllSnapshots(source, () => undefined);
  const identityOnSource = new Map(allSource.map((s) => [s.id, snapshotIdentity(s)]));
  const wanted = [...(options.snapshots ?? allSource)].sort((a, b) =>
    a.time < b.time ? -1 : a.time > b.time ? 1 : 0,
  );
  const verify = options.verify !== false;
  const writer = new PackWriter(target, 2, {
    ...(verify
      ? {
          verifySaved: async (pack, blobs, sent) => {
            await verifyPack(target, pack, sent);
            result.verifiedPacks++;
            result.verifiedBlobs += blobs.length;
          },
        }
      : {}),
  });
  const checkpointPacks = options.checkpointPacks ?? DEFAULT_CHECKPOINT_PACKS;
  // Packs whose index file could not be saved stay here until one is: they are in the in-memory index, so
  // later snapshots count their blobs as present, and no snapshot may be saved before a file names them.
  let unindexed: { id: string; blobs: PackedBlob[] }[] = [];
  const writeIndex = async (): Promise<void> => {
    unindexed.push(...writer.takeNewPacks());
    if (unindexed.length === 0) return;
    await target.saveDocument("index", { version: 1, packs: unindexed } satisfies IndexFile);
    unindexed = [];
  };

  for (const [i, snapshot] of wanted.entries()) {
    const identity = snapshotIdentity(snapshot);
    const existing = onTarget.get(identity);
    const base = {
      source: snapshot.id,
      time: snapshot.time,
      paths: snapshot.paths,
      ...(snapshot.dataset !== undefined ? { dataset: snapshot.dataset } : {}),
    };
    if (existing !== undefined) {
      const copy: SnapshotCopy = {
        ...base,
        target: existing,
        alreadyThere: true,
        blobsCopied: 0,
        bytesCopied: 0,
      };
      result.snapshots.push(copy);
      options.reporter?.snapshotDone?.(copy);
      continue;
    }
    try {
      const plan = await planSnapshot(source, writer, snapshot);
      result.blobsPresent += plan.present;
      const progress: CopyProgress = {
        snapshot: snapshot.id,
        snapshotIndex: i,
        snapshotCount: wanted.length,
        blobsDone: 0,
        blobsTotal: plan.trees.length + plan.dataBlobs,
        bytesDone: 0,
        bytesTotal: plan.dataBytes,
      };
      options.reporter?.progress?.(progress);
      const sent = { blobs: 0, bytes: 0 };
      const afterAdd = async (rawLength: number): Promise<void> => {
        sent.blobs++;
        sent.bytes += rawLength;
        progress.blobsDone++;
        progress.bytesDone += rawLength;
        options.reporter?.progress?.(progress);
        if (writer.unindexedPacks >= checkpointPacks) await writeIndex();
      };
      await copyDataBlobs(source, target, writer, plan.byPack, afterAdd);
      // Trees after the data they describe: the walk read them already, so they are re-encoded from memory.
      for (const tree of plan.trees) {
        if (writer.has(tree.id)) continue;
        await writer.add("tree", tree.id, target.codec.encode(tree.data), tree.data.length);
        await afterAdd(0);
      }
      await writer.flush();
      await writeIndex();
      const { id: _sourceId, parent, ...document } = snapshot;
      const parentIdentity = parent !== undefined ? identityOnSource.get(parent) : undefined;
      const parentOnTarget = parentIdentity !== undefined ? onTarget.get(parentIdentity) : undefined;
      const copied: Snapshot = {
        ...document,
        ...(parentOnTarget !== undefined ? { parent: parentOnTarget } : {}),
        original: identity,
      };
      const targetId = await target.saveDocument("snapshot", copied);
      onTarget.set(identity, targetId);
      const copy: SnapshotCopy = {
        ...base,
        target: targetId,
        alreadyThere: false,
        blobsCopied: sent.blobs,
        bytesCopied: sent.bytes,
      };
      result.snapshots.push(copy);
      result.blobsCopied += sent.blobs;
      result.bytesCopied += sent.bytes;
      options.reporter?.snapshotDone?.(copy);
    } catch (err) {
      // What was saved stays (indexed, so the next attempt does not send it again); the snapshot does not.
      await writer.flush().catch(() => undefined);
      await writeIndex().catch(() => undefined);
      if (!isSourceDamage(err)) throw err;
      result.failed.push({ source: snapshot.id, error: errorMessage(err) });
      warn(`snapshot ${snapshot.id.slice(0, 8)} was not copied: ${errorMessage(err)}`);
    }
  }
  await writer.flush();
  await writeIndex();
  result.packsWritten = writer.stats.packs;
  result.storedBytes = writer.stats.storedBytes;
  result.durationMs = systemClock.now().getTime() - started;
  return result;
}

/** A pack that did not arrive intact on the target. */
class TargetDamage extends BulwarkError {
  constructor(message: string, cause?: unknown) {
    super("INVALID_DATA", message, {
      ...(cause === undefined ? {} : { cause }),
      hint: "the target's storage corrupted what was written; check it (`bulwark check --read-data`) before trusting it",
    });
  }
}

/**
 * Damage in the source (a blob that does not decrypt or is missing) fails one snapshot and the copy goes on
 * with the others; anything else (the target full, unreachable or corrupting, the source unreachable) stops it.
 */
function isSourceDamage(err: unknown): boolean {
  return !(err instanceof TargetDamage) && (hasCode(err, "INVALID_DATA") || hasCode(err, "NOT_FOUND"));
}

interface SnapshotPlan {
  trees: { id: string; data: Buffer }[];
  /** Data blobs the target lacks, by source pack, in pack order. */
  byPack: Map<string, { id: string; entry: IndexEntry }[]>;
  dataBlobs: number;
  dataBytes: number;
  /** Blobs the snapshot needs that the target has. */
  present: number;
}

/**
 * Walks the whole tree of a snapshot in the source: the target's having a tree does not prove it has what
 * the tree refers to (an interrupted copy may have indexed trees before their data), so nothing is assumed.
 */
async function planSnapshot(
  source: Repository,
  writer: PackWriter,
  snapshot: SnapshotWithId,
): Promise<SnapshotPlan> {
  const plan: SnapshotPlan = { trees: [], byPack: new Map(), dataBlobs: 0, dataBytes: 0, present: 0 };
  const seen = new Set<string>();
  const stack = [snapshot.tree];
  while (stack.length > 0) {
    const treeId = stack.pop()!;
    if (seen.has(treeId)) continue;
    seen.add(treeId);
    const data = await source.loadBlob(treeId, "tree");
    if (writer.has(treeId)) plan.present++;
    else plan.trees.push({ id: treeId, data });
    // The tree is sent as it is, a malformed entry included, with every blob it names (treeReferences).
    for (const node of treeReferences(decodeTreeEntries(data, `tree ${treeId.slice(0, 12)}`))) {
      if (node.subtree !== undefined) stack.push(node.subtree);
      for (const id of node.content ?? []) {
        if (seen.has(id)) continue;
        seen.add(id);
        if (writer.has(id)) {
          plan.present++;
          continue;
        }
        const entry = source.index.get(id);
        if (entry === undefined) {
          throw new BulwarkError(
            "INVALID_DATA",
            `data blob ${id.slice(0, 12)} of ${node.name} is missing from the source's index`,
            { hint: "run `bulwark check` on the source repository" },
          );
        }
        let list = plan.byPack.get(entry.pack);
        if (list === undefined) plan.byPack.set(entry.pack, (list = []));
        list.push({ id, entry });
        plan.dataBlobs++;
        plan.dataBytes += entry.rawLength;
      }
    }
  }
  // Trees bottom-up is not needed for correctness (the snapshot comes last), but children first keeps a
  // partial copy's trees useful to the next attempt in the same order a backup writes them.
  plan.trees.reverse();
  return plan;
}

/**
 * Reads the needed blobs pack by pack (one read ahead), re-seals them and hands them to the writer. A blob
 * whose copy is damaged (it does not decrypt or match its id, its pack is missing or short) is read again
 * from the next pack the source's index lists it in (§19, "Index poisoning": junk claiming the id must not stop a copy). A
 * blob no copy of which verifies throws its first copy's error once the pass is done, unless `onDamaged` is
 * given: then it is reported there and skipped.
 */
async function copyDataBlobs(
  source: Repository,
  target: Repository,
  writer: PackWriter,
  byPack: Map<string, { id: string; entry: IndexEntry }[]>,
  afterAdd: (rawLength: number) => Promise<void>,
  onDamaged?: (id: string, err: unknown) => void,
): Promise<void> {
  const tried = new Map<string, { packs: Set<string>; err: unknown }>();
  for (let round = byPack; round.size > 0; ) {
    const failed: { id: string; entry: IndexEntry }[] = [];
    await copyPass(source, target, writer, round, afterAdd, (blob, err) => {
      const t = tried.get(blob.id);
      if (t === undefined) tried.set(blob.id, { packs: new Set([blob.entry.pack]), err });
      else t.packs.add(blob.entry.pack);
      failed.push(blob);
    });
    round = new Map();
    for (const { id } of failed) {
      const t = tried.get(id)!;
      const next = source.index.locations(id).find((e) => !t.packs.has(e.pack));
      if (next === undefined) {
        if (onDamaged === undefined) throw t.err;
        onDamaged(id, t.err);
        continue;
      }
      let list = round.get(next.pack);
      if (list === undefined) round.set(next.pack, (list = []));
      list.push({ id, entry: next });
    }
  }
}

/** One pass of copyDataBlobs over the given locations; source damage goes to `damaged`, anything else throws. */
async function copyPass(
  source: Repository,
  target: Repository,
  writer: PackWriter,
  byPack: Map<string, { id: string; entry: IndexEntry }[]>,
  afterAdd: (rawLength: number) => Promise<void>,
  damaged: (blob: { id: string; entry: IndexEntry }, err: unknown) => void,
): Promise<void> {
  const reads = [...byPack].flatMap(([pack, blobs]) => planReads(pack, blobs));
  let next = reads.length > 0 ? loadRead(source, reads[0]!) : undefined;
  for (let i = 0; i < reads.length; i++) {
    const read = reads[i]!;
    let bytes: Buffer;
    try {
      bytes = await next!;
    } catch (err) {
      if (!isSourceDamage(err)) throw err;
      for (const blob of read.blobs) damaged(blob, err);
      next = i + 1 < reads.length ? loadRead(source, reads[i + 1]!) : undefined;
      next?.catch(() => undefined);
      continue;
    }
    next = i + 1 < reads.length ? loadRead(source, reads[i + 1]!) : undefined;
    // An unobserved rejection of the read ahead would crash the process if this iteration throws.
    next?.catch(() => undefined);
    for (const blob of read.blobs) {
      const { id, entry } = blob;
      if (writer.has(id)) continue;
      let opened: Buffer;
      try {
        const what = `blob ${id.slice(0, 12)} in source pack ${entry.pack.slice(0, 12)}`;
        const envelope = bytes.subarray(entry.offset - read.start, entry.offset - read.start + entry.length);
        if (envelope.length !== entry.length)
          throw new BulwarkError("INVALID_DATA", `${what}: pack is truncated`);
        opened = source.codec.open(envelope, what);
        const data = source.codec.decodeOpened(opened, entry.rawLength, what, true);
        if (source.computeId(data) !== id) {
          throw new BulwarkError("INVALID_DATA", `${what}: contents do not match the blob id`, {
            hint: "run `bulwark check --read-data` on the source repository",
          });
        }
      } catch (err) {
        damaged(blob, err);
        continue;
      }
      await writer.add(entry.type, id, target.codec.seal(opened), entry.rawLength);
      await afterAdd(entry.rawLength);
    }
  }
}

/**
 * Sends blobs by id from `source` to `target`'s writer (repair, docs/design.md §18b): those the source's
 * index lists are read, checked and re-sealed as a copy sends them; the others, and those damaged on the
 * source, are returned for another source to provide. The caller flushes the writer and indexes its packs.
 */
export async function sendBlobs(
  source: Repository,
  target: Repository,
  writer: PackWriter,
  ids: Iterable<string>,
  afterAdd: (rawLength: number) => Promise<void> = () => Promise.resolve(),
): Promise<{ missing: string[]; damaged: { id: string; error: string }[] }> {
  assertCopyCompatible(source, target);
  const byPack = new Map<string, { id: string; entry: IndexEntry }[]>();
  const missing: string[] = [];
  for (const id of ids) {
    const entry = source.index.get(id);
    if (entry === undefined) {
      missing.push(id);
      continue;
    }
    let list = byPack.get(entry.pack);
    if (list === undefined) byPack.set(entry.pack, (list = []));
    list.push({ id, entry });
  }
  const damaged: { id: string; error: string }[] = [];
  await copyDataBlobs(source, target, writer, byPack, afterAdd, (id, err) =>
    damaged.push({ id, error: errorMessage(err) }),
  );
  return { missing, damaged };
}

interface PlannedRead {
  pack: string;
  start: number;
  end: number;
  blobs: { id: string; entry: IndexEntry }[];
}

function planReads(pack: string, blobs: { id: string; entry: IndexEntry }[]): PlannedRead[] {
  const sorted = [...blobs].sort((a, b) => a.entry.offset - b.entry.offset);
  const reads: PlannedRead[] = [];
  for (const blob of sorted) {
    const last = reads.at(-1);
    const end = blob.entry.offset + blob.entry.length;
    if (last !== undefined && blob.entry.offset - last.end <= MERGE_GAP_BYTES) {
      last.end = Math.max(last.end, end);
      last.blobs.push(blob);
    } else {
      reads.push({ pack, start: blob.entry.offset, end, blobs: [blob] });
    }
  }
  // Many scattered reads of one pack cost more requests than reading it once.
  const needed = sorted.reduce((n, b) => n + b.entry.length, 0);
  const span = (reads.at(-1)?.end ?? 0) - (reads[0]?.start ?? 0);
  if (reads.length > 1 && needed >= span * WHOLE_PACK_SHARE) {
    return [{ pack, start: reads[0]!.start, end: reads.at(-1)!.end, blobs: sorted }];
  }
  return reads;
}

function loadRead(source: Repository, read: PlannedRead): Promise<Buffer> {
  return source.backend.load(
    { type: "pack", name: read.pack },
    { offset: read.start, length: read.end - read.start },
  );
}

/**
 * Reads a pack back from the target and checks that its bytes are exactly those sent (length and SHA-256).
 * They were sealed from blobs checked against their ids, so equal bytes are intact blobs; a hash pass costs a
 * third of decrypting, decompressing and re-hashing every blob again.
 */
export async function verifyPack(
  target: Repository,
  pack: string,
  sent: { length: number; sha256: string },
): Promise<void> {
  const what = `pack ${pack.slice(0, 12)} on ${target.backend.location}`;
  let bytes: Buffer;
  try {
    bytes = await target.backend.load({ type: "pack", name: pack });
  } catch (err) {
    throw new TargetDamage(`${what} cannot be read back: ${errorMessage(err)}`, err);
  }
  if (bytes.length !== sent.length) {
    throw new TargetDamage(`${what}: ${bytes.length} bytes read back, ${sent.length} were written`);
  }
  if (sha256Hex(bytes) !== sent.sha256) {
    throw new TargetDamage(`${what}: the bytes read back differ from the bytes written`);
  }
}

/** Reads a whole pack of the target and checks its header and every blob against its id. */
async function verifyWholePack(target: Repository, pack: string): Promise<PackedBlob[]> {
  const what = `pack ${pack.slice(0, 12)} on ${target.backend.location}`;
  let bytes: Buffer;
  try {
    bytes = await target.backend.load({ type: "pack", name: pack });
  } catch (err) {
    throw new TargetDamage(`${what} cannot be read back: ${errorMessage(err)}`, err);
  }
  let header: PackedBlob[];
  try {
    header = decodePackHeader(target.master.encrypt, bytes, what);
  } catch (err) {
    throw new TargetDamage(`${what}: the header read back does not decode: ${errorMessage(err)}`, err);
  }
  for (const blob of header) {
    let data: Buffer;
    try {
      // Transient: decoded only to be hashed before the next blob (no await in between).
      const opened = target.codec.open(bytes.subarray(blob.offset, blob.offset + blob.length), what);
      data = target.codec.decodeOpened(opened, blob.rawLength, what, true);
    } catch (err) {
      throw new TargetDamage(`${what}: blob ${blob.id.slice(0, 12)} read back does not decode`, err);
    }
    if (target.computeId(data) !== blob.id) {
      throw new TargetDamage(`${what}: blob ${blob.id.slice(0, 12)} read back does not match its id`);
    }
  }
  return header;
}

/**
 * Indexes the packs of the target that no index file lists: left by a copy or backup that was killed
 * between saving packs and writing their index. Their headers say what they hold. A pack whose header does
 * not decode is left alone (check reports it; prune removes it).
 */
export async function adoptUnindexedPacks(
  repo: Repository,
  warn: (message: string) => void = () => undefined,
  verify = true,
): Promise<{ packs: number; blobs: number }> {
  const { packs, blobs, unreadable } = await readUnindexedPacks(repo, verify);
  for (const u of unreadable) {
    warn(
      `pack ${u.pack.slice(0, 12)} on ${repo.backend.location} is not indexed and its header does not read: ${u.error}`,
    );
  }
  if (packs.length > 0) {
    await repo.saveDocument("index", { version: 1, packs } satisfies IndexFile);
    for (const p of packs) repo.index.addPack(p.id, p.blobs);
  }
  return { packs: packs.length, blobs };
}

/**
 * The headers of the packs of the target that no index file lists (nor retires), read from the packs
 * themselves: with `verify`, each pack is read whole and every blob checked against its id; otherwise only
 * its header is read (two ranged reads). Also the source of `bulwark repair --index` (src/ops/repair-index.ts).
 */
export async function readUnindexedPacks(
  repo: Repository,
  verify: boolean,
  progress?: (done: number, total: number, bytes: number) => void,
): Promise<{
  packs: { id: string; blobs: PackedBlob[] }[];
  blobs: number;
  bytes: number;
  unreadable: { pack: string; error: string }[];
}> {
  const orphans: FileInfo[] = [];
  // A pack repair retired is damaged, not left over: it must not come back into the index.
  for await (const info of repo.backend.list("pack"))
    if (!repo.index.hasPack(info.name) && !repo.index.isRetired(info.name)) orphans.push(info);
  const packs: { id: string; blobs: PackedBlob[] }[] = [];
  const unreadable: { pack: string; error: string }[] = [];
  let blobs = 0;
  let bytes = 0;
  let done = 0;
  for (const info of orphans.sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const what = `pack ${info.name.slice(0, 12)}`;
    try {
      const header = verify ? await verifyWholePack(repo, info.name) : await loadPackHeader(repo, info, what);
      packs.push({ id: info.name, blobs: header });
      blobs += header.length;
      bytes += info.size;
    } catch (err) {
      // Removed meanwhile (a prune that finished before our lock) is not damage.
      if (!isNotFound(err)) unreadable.push({ pack: info.name, error: errorMessage(err) });
    }
    progress?.(++done, orphans.length, bytes);
  }
  return { packs, blobs, bytes, unreadable };
}

const TRAILER_BYTES = 4;

async function loadPackHeader(repo: Repository, info: FileInfo, what: string): Promise<PackedBlob[]> {
  if (info.size < TRAILER_BYTES) throw new BulwarkError("INVALID_DATA", `${what}: too short to be a pack`);
  const trailer = await repo.backend.load(
    { type: "pack", name: info.name },
    { offset: info.size - TRAILER_BYTES, length: TRAILER_BYTES },
  );
  const headerLength = trailer.readUInt32LE(0);
  if (headerLength + TRAILER_BYTES > info.size) {
    throw new BulwarkError("INVALID_DATA", `${what}: header length ${headerLength} exceeds the pack`);
  }
  const tail = await repo.backend.load(
    { type: "pack", name: info.name },
    { offset: info.size - TRAILER_BYTES - headerLength, length: headerLength + TRAILER_BYTES },
  );
  return decodePackHeader(repo.master.encrypt, tail, what, info.size - TRAILER_BYTES - headerLength);
}
