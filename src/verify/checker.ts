/**
 * The checker: proves a repository is complete and intact, or names exactly what is not (docs/design.md,
 * "Check").
 *
 * 1. Index: every index file authenticates; every indexed pack exists with the size its blobs need.
 * 2. Snapshots: every snapshot file authenticates; every tree of every snapshot loads and parses; every
 *    entry's fields are well formed (hard links with their inode and device) and a file's size is the total
 *    of its blobs; every data blob a file needs is indexed.
 * 3. With read-data (all packs or a subset): every pack's header authenticates, accounts for every byte
 *    before it and matches the index; every blob decrypts and hashes to its id.
 *    With digests, where the backend hashes files itself: every pack not read whose index entry records its
 *    SHA-256 is checked at rest against it, downloading nothing (bit rot, not authenticity).
 * 4. Each damaged or missing blob is traced to the snapshots and files (or directories) that need it.
 * Packs no index mentions are leftovers of an interrupted backup or prune: a warning, removed by prune.
 */
import { BulwarkError, errorMessage, isNotFound } from "../core/errors.js";
import type { Repository } from "../repository/repository.js";
import { forEachLimit } from "../repository/repository.js";
import type { WorkerPool } from "../repository/worker-pool.js";
import { loadAllSnapshots, type SnapshotWithId } from "../snapshot/snapshot.js";
import type { Node } from "../snapshot/tree.js";
import { sizeMismatch } from "../snapshot/restorer.js";
import { loadTreeEntries } from "../snapshot/walker.js";

export type Severity = "error" | "warning";

export interface Finding {
  severity: Severity;
  kind:
    | "index-damaged"
    | "pack-missing"
    | "pack-size"
    | "pack-damaged"
    | "pack-header"
    | "blob-damaged"
    | "blob-missing"
    | "blob-not-in-pack"
    | "tree-damaged"
    | "node-invalid"
    | "snapshot-damaged"
    | "pack-unreferenced"
    | "pack-digest"
    | "pack-retired"
    | "retired-intact"
    | "blob-multiple";
  message: string;
  pack?: string;
  blobs?: string[];
  /** Snapshots that need the damaged or missing data. */
  snapshots?: string[];
  /** Files or directories (snapshot id prefix: path) that need it. */
  files?: string[];
}

export interface CheckOptions {
  /** Read and verify pack data: all packs, or a subset. */
  readData?:
    | false
    | { kind: "all" }
    | { kind: "percent"; percent: number }
    | { kind: "part"; n: number; of: number }
    /**
     * The packs `choose` returns, read in that order: a verification's plan (least recently read first,
     * within a budget), made from the indexed packs that exist, with their sizes.
     */
    | { kind: "plan"; choose: (packs: readonly { name: string; size: number }[]) => readonly string[] };
  /**
   * Where the backend hashes files itself (Backend.digest): every indexed pack this run did not read, and
   * whose index entry records its SHA-256, is checked at rest against it, `concurrency` at a time. A
   * mismatch is a `pack-digest` finding, a missing file `pack-missing`, each traced to snapshots and files.
   */
  digests?: { concurrency: number };
  reporter?: {
    progress?(done: number, total: number, bytes: number): void;
    /** After each digest check: whether the digest matched, and the pack's size (not downloaded). */
    packDigested?(pack: string, outcome: { ok: boolean; bytes: number; error?: string }): void;
    digestProgress?(done: number, total: number, bytes: number): void;
    /** After each pack read: whether it was sound (no finding names it) and what it cost. */
    packDone?(pack: string, outcome: { ok: boolean; bytes: number; error?: string }): void;
  };
  /** Asked before each pack: true stops reading (a time budget ran out); the packs read so far count. */
  stopReading?: () => boolean;
}

export interface CheckResult {
  findings: Finding[];
  stats: {
    snapshots: number;
    trees: number;
    packs: number;
    packsRead: number;
    bytesRead: number;
    blobs: number;
    /** Packs checked at rest by the backend's digest, and their bytes (hashed there, not downloaded). */
    packsDigested: number;
    bytesDigested: number;
    /** Packs not read whose index entry records no digest (written before digests were recorded). */
    packsWithoutDigest: number;
  };
}

const PACK_HEADER_ENTRY = 41;
const ENVELOPE_OVERHEAD = 29;

export async function check(
  repo: Repository,
  pool: WorkerPool,
  options: CheckOptions = {},
): Promise<CheckResult> {
  const findings: Finding[] = [];
  const stats = {
    snapshots: 0,
    trees: 0,
    packs: 0,
    packsRead: 0,
    bytesRead: 0,
    blobs: 0,
    packsDigested: 0,
    bytesDigested: 0,
    packsWithoutDigest: 0,
  };

  // 1. index and pack files
  const { damaged } = await repo.loadIndex();
  for (const d of damaged) {
    // Rebuilt by `repair --index` but kept by the target (retention, append-only): nothing depends on it.
    const superseded = repo.index.isSuperseded(d.name);
    findings.push({
      severity: superseded ? "warning" : "error",
      kind: "index-damaged",
      message: superseded
        ? `index/${d.name.slice(0, 12)}: ${d.error} (superseded by a rebuilt index file; prune deletes it once the target allows)`
        : `index/${d.name.slice(0, 12)}: ${d.error} (run \`bulwark repair --index\`)`,
    });
  }
  const stored = new Map<string, number>();
  for await (const info of repo.backend.list("pack")) stored.set(info.name, info.size);
  const packBlobs = new Map<string, { id: string; offset: number; length: number }[]>();
  for (const [id, e] of repo.index.entries()) {
    let list = packBlobs.get(e.pack);
    if (!list) packBlobs.set(e.pack, (list = []));
    list.push({ id, offset: e.offset, length: e.length });
  }
  stats.packs = stored.size;
  stats.blobs = repo.index.blobCount;
  const badBlobs = new Map<string, Finding>();
  const markBlobs = (finding: Finding, ids: string[]): void => {
    finding.blobs = ids;
    for (const id of ids) badBlobs.set(id, finding);
    findings.push(finding);
  };
  for (const [pack, blobs] of packBlobs) {
    const size = stored.get(pack);
    if (size === undefined) {
      markBlobs(
        {
          severity: "error",
          kind: "pack-missing",
          pack,
          message: `pack ${pack.slice(0, 12)} is in the index but missing`,
        },
        blobs.map((b) => b.id),
      );
      continue;
    }
    const dataEnd = Math.max(...blobs.map((b) => b.offset + b.length));
    if (size < dataEnd + ENVELOPE_OVERHEAD + PACK_HEADER_ENTRY * blobs.length + 4) {
      markBlobs(
        {
          severity: "error",
          kind: "pack-size",
          pack,
          message: `pack ${pack.slice(0, 12)} is ${size} bytes, too short for the ${blobs.length} blobs the index lists (truncated)`,
        },
        blobs.filter((b) => b.offset + b.length > size).map((b) => b.id),
      );
    }
  }
  for (const [pack] of stored) {
    if (repo.index.isRetired(pack)) {
      findings.push({
        severity: "warning",
        kind: "pack-retired",
        pack,
        message: `pack ${pack.slice(0, 12)} was found damaged and replaced by repair; it is never read, and is deleted once the target allows it (prune)`,
      });
    } else if (!repo.index.hasPack(pack)) {
      findings.push({
        severity: "warning",
        kind: "pack-unreferenced",
        pack,
        message: `pack ${pack.slice(0, 12)} is not in any index (left by an interrupted backup or prune; prune removes it)`,
      });
    }
  }

  // Several packs claiming one blob: harmless after concurrent backups, or junk claiming existing ids (index
  // poisoning). Reads take the first; prune keeps only a copy it verified (§18). One finding per pack set.
  const claimedBy = new Map<string, string[]>();
  for (const [id, packs] of repo.index.multiplyClaimed()) {
    const key = packs.join(",");
    claimedBy.set(key, [...(claimedBy.get(key) ?? []), id]);
  }
  for (const [key, ids] of claimedBy) {
    findings.push({
      severity: "warning",
      kind: "blob-multiple",
      blobs: ids,
      message: `${ids.length} blob${ids.length === 1 ? " is" : "s are"} claimed by each of the packs ${key
        .split(",")
        .map((p) => p.slice(0, 12))
        .join(", ")} (reads use the first; prune verifies the copy it keeps)`,
    });
  }

  // 2. snapshots and trees: remember who needs each blob
  const snapshots: SnapshotWithId[] = [];
  for (const name of await repo.listNames("snapshot")) {
    try {
      const loaded = await loadAllSnapshotsOne(repo, name);
      snapshots.push(loaded);
    } catch (err) {
      findings.push({
        severity: "error",
        kind: "snapshot-damaged",
        message: `snapshot/${name.slice(0, 12)}: ${errorMessage(err)}`,
        snapshots: [name],
      });
    }
  }
  stats.snapshots = snapshots.length;
  const treesDone = new Map<string, { path: string }>();
  const treeErrors: Finding[] = [];
  const visit = async (treeId: string, path: string): Promise<void> => {
    if (treesDone.has(treeId)) return;
    treesDone.set(treeId, { path });
    let nodes;
    let invalid;
    try {
      ({ nodes, invalid } = await loadTreeEntries(repo, treeId));
      stats.trees++;
    } catch (err) {
      const finding: Finding = {
        severity: "error",
        kind: "tree-damaged",
        message: `tree ${treeId.slice(0, 12)} (${path}) cannot be read: ${errorMessage(err)}`,
        blobs: [treeId],
      };
      treeErrors.push(finding);
      return;
    }
    // An entry a restore would refuse: a malformed field, a size its blobs do not add up to.
    const refused = (name: string, error: string): void => {
      treeErrors.push({
        severity: "error",
        kind: "node-invalid",
        message: `tree ${treeId.slice(0, 12)} (${path}): entry ${JSON.stringify(name)}: ${error}`,
        blobs: [treeId],
      });
    };
    for (const e of invalid) refused(e.name, e.error);
    for (const node of nodes) {
      const childPath = path === "/" ? `/${node.name}` : `${path}/${node.name}`;
      if (node.type === "dir" && node.subtree) await visit(node.subtree, childPath);
      const mismatch = node.type === "file" ? sizeMismatch(repo, node) : undefined;
      if (mismatch !== undefined) refused(node.name, mismatch);
      for (const id of node.content ?? []) {
        if (!repo.index.has(id) && !badBlobs.has(id)) {
          markBlobs(
            {
              severity: "error",
              kind: "blob-missing",
              message: `blob ${id.slice(0, 12)} is not in the index`,
            },
            [id],
          );
        }
      }
    }
  };
  for (const s of snapshots) await visit(s.tree, "/");
  findings.push(...treeErrors);
  for (const f of treeErrors) for (const id of f.blobs ?? []) badBlobs.set(id, f);

  // Packs the structure pass already found wanting: neither read nor digested to say it again.
  const structurallyBad = new Set(findings.filter((f) => f.severity === "error").map((f) => f.pack));
  /** Packs this run's reading started on: every other indexed pack may be checked by digest. */
  const attempted = new Set<string>();

  // 3. read data
  if (options.readData) {
    const readable = [...stored.keys()].filter((p) => repo.index.hasPack(p));
    const selection =
      options.readData.kind === "plan"
        ? planned(readable, stored, options.readData.choose)
        : selectPacks(readable, options.readData);
    let done = 0;
    await forEachLimit(selection, pool.size + 1, async (pack) => {
      if (options.stopReading?.() === true) return;
      attempted.add(pack);
      const findingsBefore = findings.length;
      const packDone = (bytes: number): void => {
        const mine = findings.slice(findingsBefore).find((f) => f.pack === pack);
        options.reporter?.packDone?.(pack, {
          ok: mine === undefined,
          bytes,
          ...(mine !== undefined ? { error: mine.message } : {}),
        });
      };
      let data: Buffer;
      try {
        data = await repo.backend.load({ type: "pack", name: pack });
      } catch (err) {
        markBlobs(
          {
            severity: "error",
            kind: "pack-damaged",
            pack,
            message: `pack ${pack.slice(0, 12)} cannot be read: ${errorMessage(err)}`,
          },
          (packBlobs.get(pack) ?? []).map((b) => b.id),
        );
        packDone(0);
        return;
      }
      stats.bytesRead += data.length;
      const result = await pool.verifyPack(pack, data);
      stats.packsRead++;
      const indexed = packBlobs.get(pack) ?? [];
      if (result.headerError !== undefined) {
        // Restores read blobs through the index, so the data may still be fine: the blob check below says.
        findings.push({
          severity: "error",
          kind: "pack-header",
          pack,
          message: `pack ${pack.slice(0, 12)}: ${result.headerError}`,
        });
        const damagedIds: string[] = [];
        for (const b of indexed) {
          try {
            await repo.loadBlob(b.id);
          } catch {
            damagedIds.push(b.id);
          }
        }
        if (damagedIds.length > 0) {
          markBlobs(
            {
              severity: "error",
              kind: "blob-damaged",
              pack,
              message: `pack ${pack.slice(0, 12)}: ${damagedIds.length} blob(s) fail verification`,
            },
            damagedIds,
          );
        }
      } else {
        if (result.blobErrors.length > 0) {
          markBlobs(
            {
              severity: "error",
              kind: "blob-damaged",
              pack,
              message: `pack ${pack.slice(0, 12)}: ${result.blobErrors.length} blob(s) fail verification (${result.blobErrors[0]!.error})`,
            },
            result.blobErrors.map((e) => e.id),
          );
        }
        const inHeader = new Map(result.blobs.map((b) => [b.id, b]));
        const mismatched = indexed.filter((b) => {
          const h = inHeader.get(b.id);
          return !h || h.offset !== b.offset || h.length !== b.length;
        });
        if (mismatched.length > 0) {
          markBlobs(
            {
              severity: "error",
              kind: "blob-not-in-pack",
              pack,
              message: `pack ${pack.slice(0, 12)}: ${mismatched.length} indexed blob(s) are not where the index says`,
            },
            mismatched.map((b) => b.id),
          );
        }
      }
      packDone(data.length);
      done++;
      options.reporter?.progress?.(done, selection.length, stats.bytesRead);
    });
  }

  // 3a. retired packs still stored, read whole: repair retires a pack only when it found it damaged, so an
  // index file retiring a pack whose every blob verifies is not repair's (index poisoning, §19, "Index poisoning"). Named, so
  // an admin can drop it (`repair --index --distrust`); a verification's budgeted plan leaves this to check.
  if (options.readData && options.readData.kind !== "plan") {
    for (const pack of [...stored.keys()].filter((p) => repo.index.isRetired(p)).sort()) {
      let data: Buffer;
      try {
        data = await repo.backend.load({ type: "pack", name: pack });
      } catch {
        continue; // damaged or gone: what retiring it says
      }
      stats.bytesRead += data.length;
      const result = await pool.verifyPack(pack, data);
      if (result.headerError !== undefined || result.blobErrors.length > 0 || result.blobs.length === 0)
        continue;
      const files = repo.index.retiringFiles(pack);
      findings.push({
        severity: "error",
        kind: "retired-intact",
        pack,
        message: `pack ${pack.slice(0, 12)} is retired, yet all ${result.blobs.length} of its blobs verify: repair retires only damaged packs, so index file${files.length === 1 ? "" : "s"} ${files.map((f) => f.slice(0, 12)).join(", ")} did not come from repair (index poisoning?); with admin rights: bulwark repair --index ${files.map((f) => `--distrust ${f}`).join(" ")}`,
      });
    }
  }

  // 3b. the packs not read, checked at rest by the backend's own SHA-256: nothing is downloaded
  const digest = repo.backend.digest?.bind(repo.backend);
  if (options.digests !== undefined && digest !== undefined) {
    const due: { pack: string; sha256: string; size: number }[] = [];
    for (const [pack, size] of [...stored].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      if (!repo.index.hasPack(pack) || attempted.has(pack) || structurallyBad.has(pack)) continue;
      const sha256 = repo.index.packDigest(pack);
      if (sha256 === undefined) stats.packsWithoutDigest++;
      else due.push({ pack, sha256, size });
    }
    let done = 0;
    await forEachLimit(due, Math.max(1, options.digests.concurrency), async ({ pack, sha256, size }) => {
      const blobIds = (packBlobs.get(pack) ?? []).map((b) => b.id);
      let damage: Finding | undefined;
      try {
        const got = await digest({ type: "pack", name: pack });
        if (got.sha256 !== sha256) {
          damage = {
            severity: "error",
            kind: "pack-digest",
            pack,
            message: `pack ${pack.slice(0, 12)} is damaged at rest: ${repo.backend.location} hashes its ${got.size} bytes to ${got.sha256.slice(0, 12)}, its index entry records ${sha256.slice(0, 12)}`,
          };
        }
      } catch (err) {
        if (!isNotFound(err)) {
          // Not evidence of damage (the target failed to answer): said, and left for a read to settle.
          findings.push({
            severity: "warning",
            kind: "pack-digest",
            pack,
            message: `pack ${pack.slice(0, 12)} could not be checked by digest: ${errorMessage(err)}`,
          });
          return;
        }
        damage = {
          severity: "error",
          kind: "pack-missing",
          pack,
          message: `pack ${pack.slice(0, 12)} is in the index but missing`,
        };
      }
      if (damage !== undefined) markBlobs(damage, blobIds);
      stats.packsDigested++;
      stats.bytesDigested += size;
      options.reporter?.packDigested?.(pack, {
        ok: damage === undefined,
        bytes: size,
        ...(damage !== undefined ? { error: damage.message } : {}),
      });
      done++;
      options.reporter?.digestProgress?.(done, due.length, stats.bytesDigested);
    });
  }

  // 4. trace damage to snapshots and files
  const users = await traceUsers(
    snapshots,
    new Set([...badBlobs.keys()]),
    async (id) => (await loadTreeEntries(repo, id)).nodes,
  );
  for (const f of findings) {
    if (!f.blobs?.length) continue;
    const who = new Set<string>();
    for (const id of f.blobs) for (const u of users.get(id) ?? []) who.add(u);
    if (who.size === 0) continue;
    f.snapshots = [...new Set([...who].map((w) => w.slice(0, w.indexOf(":"))))].sort();
    f.files = [...who].map((w) => `${w.slice(0, 8)}:${w.slice(w.indexOf(":") + 1)}`).sort();
  }
  return { findings, stats };
}

/**
 * Every place (snapshot:path) that needs one of the `bad` blobs. The first walk visits a tree shared by
 * several snapshots (or directories) once; this one follows every path, but only into trees that lead to
 * a bad blob, and loads each tree once (through `loadNodes`: repair also reads trees from other copies).
 * A tree that does not load is skipped (it is reported where it is needed, if it is bad).
 */
export async function traceUsers(
  snapshots: readonly SnapshotWithId[],
  bad: ReadonlySet<string>,
  loadNodes: (treeId: string) => Promise<readonly Node[]>,
): Promise<Map<string, Set<string>>> {
  const users = new Map<string, Set<string>>(); // blob -> "snapshot:path"
  if (bad.size === 0) return users;
  const use = (blob: string, who: string): void => {
    let set = users.get(blob);
    if (!set) users.set(blob, (set = new Set()));
    set.add(who);
  };
  type Entry = { name: string; subtree?: string; badIds: string[] };
  const entries = new Map<string, Entry[] | null>();
  const load = async (treeId: string): Promise<Entry[] | null> => {
    let list = entries.get(treeId);
    if (list !== undefined) return list;
    try {
      list = [];
      for (const node of await loadNodes(treeId)) {
        const badIds = (node.content ?? []).filter((id) => bad.has(id));
        const subtree = node.type === "dir" ? node.subtree : undefined;
        if (subtree !== undefined || badIds.length > 0) {
          list.push({ name: node.name, ...(subtree === undefined ? {} : { subtree }), badIds });
        }
      }
    } catch {
      list = null; // reported by the first walk
    }
    entries.set(treeId, list);
    return list;
  };
  const leadsToBad = new Map<string, boolean>();
  const reaches = async (treeId: string): Promise<boolean> => {
    const known = leadsToBad.get(treeId);
    if (known !== undefined) return known;
    let found = bad.has(treeId);
    for (const e of (await load(treeId)) ?? []) {
      if (e.badIds.length > 0) found = true;
      if (e.subtree !== undefined && (await reaches(e.subtree))) found = true;
    }
    leadsToBad.set(treeId, found);
    return found;
  };
  const walk = async (treeId: string, path: string, snapshot: string): Promise<void> => {
    if (!(await reaches(treeId))) return;
    if (bad.has(treeId)) use(treeId, `${snapshot}:${path}`);
    for (const e of (await load(treeId)) ?? []) {
      const childPath = path === "/" ? `/${e.name}` : `${path}/${e.name}`;
      for (const id of e.badIds) use(id, `${snapshot}:${childPath}`);
      if (e.subtree !== undefined) await walk(e.subtree, childPath, snapshot);
    }
  };
  for (const s of snapshots) await walk(s.tree, "/", s.id);
  return users;
}

async function loadAllSnapshotsOne(repo: Repository, name: string): Promise<SnapshotWithId> {
  const s = await repo.loadDocument<SnapshotWithId>("snapshot", name);
  if (typeof s.tree !== "string") throw new BulwarkError("INVALID_DATA", "snapshot has no tree");
  return { ...s, id: name };
}

/** The packs a plan chooses, in its order, keeping only those that exist and are indexed. */
function planned(
  readable: string[],
  sizes: ReadonlyMap<string, number>,
  choose: (packs: readonly { name: string; size: number }[]) => readonly string[],
): string[] {
  const present = new Set(readable);
  const chosen = choose(readable.sort().map((name) => ({ name, size: sizes.get(name) ?? 0 })));
  return [...new Set(chosen)].filter((p) => present.has(p));
}

function selectPacks(
  packs: string[],
  spec: Exclude<CheckOptions["readData"], false | undefined | { kind: "plan" }>,
): string[] {
  const sorted = packs.sort();
  if (spec.kind === "all") return sorted;
  if (spec.kind === "part") {
    // Stable partition by id, so n/t over t runs reads every pack exactly once.
    return sorted.filter((p) => parseInt(p.slice(0, 8), 16) % spec.of === spec.n - 1);
  }
  const count = Math.max(1, Math.ceil((sorted.length * spec.percent) / 100));
  const shuffled = [...sorted];
  for (let i = shuffled.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
  }
  return shuffled.slice(0, Math.min(count, shuffled.length));
}

export function parseReadDataSubset(value: string): Exclude<CheckOptions["readData"], false | undefined> {
  const pct = /^(\d+(?:\.\d+)?)%$/.exec(value);
  if (pct) {
    const percent = Number(pct[1]);
    if (percent > 0 && percent <= 100) return { kind: "percent", percent };
  }
  const part = /^(\d+)\/(\d+)$/.exec(value);
  if (part) {
    const n = Number(part[1]);
    const of = Number(part[2]);
    if (n >= 1 && of >= 1 && n <= of) return { kind: "part", n, of };
  }
  throw new BulwarkError("USAGE", `--read-data-subset ${JSON.stringify(value)} is not N% or n/t`, {
    hint: "use e.g. 10% or 1/5 (the first of five parts)",
  });
}

export { loadAllSnapshots };
