/**
 * The catalog: an embedded SQLite database in the state directory that remembers what Bulwark did and saw —
 * runs, snapshots seen on targets, copies, verifications, drills and events, each with its time — so that
 * `posture`, reports and an auditor can answer "what happened, and when" without opening every repository.
 *
 * The repositories stay the source of truth. Everything in the snapshots and copies tables can be recreated
 * from them (`bulwark catalog rebuild`, ./rebuild.ts); what exists only here (run history, drill and
 * verification results, events) is evidence, never data: losing the catalog loses no backup. So a damaged
 * catalog is reported with the way out (move it away, rebuild) instead of being repaired in place.
 *
 * Times are stored as ISO-8601 UTC strings (`Date.toISOString()`): they sort as text, and an auditor can read
 * them with the sqlite3 shell. Several Bulwark processes may use one catalog at once (a scheduled run while
 * someone lists runs): WAL mode lets readers and one writer work together, and a busy timeout makes writers
 * wait for each other instead of failing. The schema evolves through numbered migrations recorded in
 * `PRAGMA user_version`; a catalog written by a newer Bulwark is refused rather than misread.
 */
import { chmodSync, existsSync } from "node:fs";
import { homedir, hostname as osHostname } from "node:os";
import { dirname, isAbsolute, join, resolve } from "node:path";

import Database from "better-sqlite3";

import { BulwarkError, errnoCode } from "../core/errors.js";
import { makeDirectoriesSync } from "../core/make-directories.js";
import { EVIDENCE_GENESIS, EVIDENCE_TABLES, evidenceHash } from "./evidence-chain.js";

export type RunKind = "backup" | "copy" | "forget" | "locks" | "prune" | "check" | "drill";
export type RunStatus = "running" | "ok" | "partial" | "failed";
export type EventLevel = "info" | "warning" | "error";

export interface RunRecord {
  id: number;
  kind: RunKind;
  job?: string;
  dataset?: string;
  target?: string;
  status: RunStatus;
  startedAt: Date;
  finishedAt?: Date;
  /** The snapshot the run made or worked on. */
  snapshot?: string;
  error?: string;
  stats?: Record<string, unknown>;
  /** The process that ran it, so a run left "running" by a dead process can be told from a live one. */
  pid: number;
  hostname: string;
}

export interface SnapshotRecord {
  target: string;
  snapshot: string;
  /** The id of the snapshot this one is a copy of (its own id when it is not a copy). */
  original: string;
  dataset?: string;
  time: Date;
  hostname: string;
  paths: string[];
  tags: string[];
  /** When the snapshot was last seen on the target (a backup, a copy or a rebuild). */
  seenAt: Date;
}

export interface CopyRecord {
  id: number;
  dataset?: string;
  /** The source target; unknown for a copy derived by a rebuild whose original snapshot is on no target. */
  from?: string;
  to: string;
  sourceSnapshot: string;
  targetSnapshot: string;
  time: Date;
  blobs: number;
  bytes: number;
  verified: boolean;
  runId?: number;
  /**
   * True when a rebuild derived the copy from the repositories (two snapshots sharing one original) rather
   * than `bulwark copy` recording it: then `time` is the snapshot's time, and blobs and bytes are not known (0).
   */
  derived: boolean;
}

export interface VerificationRecord {
  id: number;
  target: string;
  dataset?: string;
  snapshot?: string;
  time: Date;
  kind: string;
  errors: number;
  description: string;
  runId?: number;
  /** What was read, from where, how long, the findings (bulwark verify: src/ops/evidence.ts). */
  details?: Record<string, unknown>;
  /** Its place in the evidence chain; absent for a record made before the chain existed (schema 3). */
  chain?: EvidenceLink;
}

export type PackReadOutcome = "ok" | "damaged";

/** The last time a pack's data was read by a verification, and what was found. */
export interface PackReadRecord {
  /** The repository's id. */
  repository: string;
  pack: string;
  /** The target name or location it was read through. */
  target: string;
  time: Date;
  outcome: PackReadOutcome;
  error?: string;
  bytes: number;
}

export type PackReadInput = PackReadRecord;

export interface DrillRecord {
  id: number;
  dataset: string;
  target: string;
  snapshot: string;
  time: Date;
  status: "pass" | "fail";
  description: string;
  details?: Record<string, unknown>;
  /** Its place in the evidence chain; absent for a record made before the chain existed (schema 3). */
  chain?: EvidenceLink;
}

/** The kinds of evidence records that form the one evidence chain (docs/design.md §22). */
export type EvidenceKind = "verification" | "drill" | "runbook" | "dr";

/** A DR run of a runbook (`bulwark dr drill`, later failover and failback), recorded when it ends. */
export interface DrRunRecord {
  id: number;
  runbook: string;
  /** The runbook version it ran (RunbookVersionRecord.definitionHash). */
  definitionHash: string;
  mode: "drill" | "failover" | "failback";
  time: Date;
  status: "pass" | "fail";
  description: string;
  /** The datasets its services restored: what the posture's DR row of each counts. */
  datasets: string[];
  details?: Record<string, unknown>;
  chain?: EvidenceLink;
}

/**
 * A version of a runbook's definition (`bulwark dr`): its change log. A new row whenever the definition's
 * hash differs from the last recorded one, so the verified state of a runbook belongs to one version.
 */
export interface RunbookVersionRecord {
  id: number;
  runbook: string;
  /** SHA-256 of the runbook's normalised definition (src/ops/dr-plan.ts runbookHash). */
  definitionHash: string;
  time: Date;
  /** The normalised definition as JSON (no secret: secrets are references). */
  definition: Record<string, unknown>;
  chain?: EvidenceLink;
}

/** A record's place in the evidence chain. */
export interface EvidenceLink {
  /** Its position: 1 for the first chained record, then each next one, with no gaps. */
  seq: number;
  /** The hash of the record before it (64 zeros for the first). */
  prevHash: string;
  /** SHA-256 over the canonical encoding of its position, kind, previous hash and stored fields. */
  hash: string;
}

/** What {@link Catalog.verifyEvidenceChain} found. */
export interface EvidenceChainStatus {
  ok: boolean;
  /** Records in the chain. */
  records: number;
  /** Records made before the chain existed (catalog schema 3): outside it, so not protected by it. */
  unchained: number;
  /** The last link (absent while the chain is empty). */
  head?: { seq: number; hash: string };
  /** The first broken link, in chain order. */
  broken?: { seq?: number; kind?: EvidenceKind; id?: number; reason: string };
}

export interface EventRecord {
  id: number;
  time: Date;
  level: EventLevel;
  message: string;
  job?: string;
  dataset?: string;
  target?: string;
  runId?: number;
}

export type StartRun = { kind: RunKind; job?: string; dataset?: string; target?: string; startedAt: Date };
export type FinishRun = {
  status: Exclude<RunStatus, "running">;
  finishedAt: Date;
  snapshot?: string;
  error?: string;
  stats?: Record<string, unknown>;
};
export type SnapshotInput = Omit<SnapshotRecord, "dataset"> & { dataset?: string };
export type CopyInput = {
  dataset?: string;
  from: string;
  to: string;
  sourceSnapshot: string;
  targetSnapshot: string;
  time: Date;
  blobs: number;
  bytes: number;
  verified: boolean;
  runId?: number;
};
export type VerificationInput = Omit<VerificationRecord, "id" | "chain">;
export type DrillInput = Omit<DrillRecord, "id" | "chain">;
export type EventInput = Omit<EventRecord, "id">;

/** How long a writer waits for another process's write transaction before giving up. */
const BUSY_TIMEOUT_MS = 10_000;

/**
 * The schema, one migration per version: migration i takes the catalog from user_version i to i + 1. Never
 * edit a released migration; add a new one (a catalog of every earlier version must keep opening).
 *
 * No foreign keys: a run id in copies, verifications and events may name a run that a lost and rebuilt
 * catalog no longer has, and recording the evidence matters more than the link.
 */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    job         TEXT,
    dataset     TEXT,
    target      TEXT,
    status      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    snapshot    TEXT,
    error       TEXT,
    stats       TEXT,
    pid         INTEGER NOT NULL,
    hostname    TEXT NOT NULL
  );
  CREATE INDEX runs_by_start ON runs (started_at);
  CREATE INDEX runs_running ON runs (status) WHERE status = 'running';

  CREATE TABLE snapshots (
    target   TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    original TEXT NOT NULL,
    dataset  TEXT,
    time     TEXT NOT NULL,
    hostname TEXT NOT NULL,
    paths    TEXT NOT NULL,
    tags     TEXT NOT NULL,
    seen_at  TEXT NOT NULL,
    PRIMARY KEY (target, snapshot)
  ) WITHOUT ROWID;
  CREATE INDEX snapshots_by_original ON snapshots (original);
  CREATE INDEX snapshots_by_dataset ON snapshots (dataset, time);

  CREATE TABLE copies (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset         TEXT,
    from_target     TEXT,
    to_target       TEXT NOT NULL,
    source_snapshot TEXT NOT NULL,
    target_snapshot TEXT NOT NULL,
    time            TEXT NOT NULL,
    blobs           INTEGER NOT NULL,
    bytes           INTEGER NOT NULL,
    verified        INTEGER NOT NULL,
    run_id          INTEGER,
    derived         INTEGER NOT NULL,
    UNIQUE (to_target, target_snapshot)
  );
  CREATE INDEX copies_by_time ON copies (time);

  CREATE TABLE verifications (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    target      TEXT NOT NULL,
    dataset     TEXT,
    snapshot    TEXT,
    time        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    errors      INTEGER NOT NULL,
    description TEXT NOT NULL,
    run_id      INTEGER
  );
  CREATE INDEX verifications_by_dataset ON verifications (dataset, time);

  CREATE TABLE drills (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset     TEXT NOT NULL,
    target      TEXT NOT NULL,
    snapshot    TEXT NOT NULL,
    time        TEXT NOT NULL,
    status      TEXT NOT NULL,
    description TEXT NOT NULL,
    details     TEXT
  );
  CREATE INDEX drills_by_dataset ON drills (dataset, time);

  CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    time    TEXT NOT NULL,
    level   TEXT NOT NULL,
    message TEXT NOT NULL,
    job     TEXT,
    dataset TEXT,
    target  TEXT,
    run_id  INTEGER
  );
  CREATE INDEX events_by_time ON events (time);
  `,
  // 2: verification coverage. One row per pack of a repository (keyed by the repository's id, so coverage
  // follows the data whichever target name or location reaches it): when its data was last read and the
  // outcome. Written after every pack a verification reads, so a killed run keeps what it read.
  `
  CREATE TABLE pack_reads (
    repository TEXT NOT NULL,
    pack       TEXT NOT NULL,
    target     TEXT NOT NULL,
    read_at    TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    error      TEXT,
    bytes      INTEGER NOT NULL,
    PRIMARY KEY (repository, pack)
  ) WITHOUT ROWID;
  CREATE INDEX pack_reads_by_time ON pack_reads (repository, read_at);
  `,
  // 3: evidence. Verifications get their details (what was read, the findings), and every evidence record
  // (verifications and drills; DR runs will join) becomes a link of one hash chain: its position, the hash
  // of the record before it and its own hash, written in the transaction that inserts it. evidence_head is
  // the chain's last link (so removing the newest records shows). Rows made before this migration keep
  // NULL there: the chain's unhashed prefix, which the chain does not vouch for (§22).
  `
  ALTER TABLE verifications ADD COLUMN details TEXT;
  ALTER TABLE verifications ADD COLUMN chain_seq INTEGER;
  ALTER TABLE verifications ADD COLUMN prev_hash TEXT;
  ALTER TABLE verifications ADD COLUMN hash TEXT;
  CREATE UNIQUE INDEX verifications_by_chain ON verifications (chain_seq);
  ALTER TABLE drills ADD COLUMN chain_seq INTEGER;
  ALTER TABLE drills ADD COLUMN prev_hash TEXT;
  ALTER TABLE drills ADD COLUMN hash TEXT;
  CREATE UNIQUE INDEX drills_by_chain ON drills (chain_seq);
  CREATE TABLE evidence_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
  );
  `,
  // 4: runbooks. Each version of a runbook's definition, in the evidence chain: the change log a DR report
  // shows, and what a DR drill's verified state belongs to.
  `
  CREATE TABLE runbook_versions (
    id              INTEGER PRIMARY KEY,
    runbook         TEXT NOT NULL,
    definition_hash TEXT NOT NULL,
    time            TEXT NOT NULL,
    definition      TEXT NOT NULL,
    chain_seq       INTEGER,
    prev_hash       TEXT,
    hash            TEXT
  );
  CREATE UNIQUE INDEX runbook_versions_by_chain ON runbook_versions (chain_seq);
  CREATE INDEX runbook_versions_by_name ON runbook_versions (runbook, id);
  CREATE TABLE dr_runs (
    id              INTEGER PRIMARY KEY,
    runbook         TEXT NOT NULL,
    definition_hash TEXT NOT NULL,
    mode            TEXT NOT NULL,
    time            TEXT NOT NULL,
    status          TEXT NOT NULL,
    description     TEXT NOT NULL,
    datasets        TEXT NOT NULL,
    details         TEXT,
    chain_seq       INTEGER,
    prev_hash       TEXT,
    hash            TEXT
  );
  CREATE UNIQUE INDEX dr_runs_by_chain ON dr_runs (chain_seq);
  CREATE INDEX dr_runs_by_runbook ON dr_runs (runbook, time);
  CREATE TABLE dr_state (
    run_id  TEXT PRIMARY KEY,
    runbook TEXT NOT NULL,
    mode    TEXT NOT NULL,
    status  TEXT NOT NULL,
    started TEXT NOT NULL,
    updated TEXT NOT NULL,
    state   TEXT NOT NULL
  );
  `,
  // 5: the daemon. /metrics reads each job's newest run per kind and target on every scrape: an index, so that
  // costs the number of jobs, not the length of the history.
  `
  CREATE INDEX runs_by_job ON runs (job, kind, target, status, id);
  `,
];

export { EVIDENCE_GENESIS, evidenceHash, evidenceRow } from "./evidence-chain.js";

/** The schema version this Bulwark writes (PRAGMA user_version of an up-to-date catalog). */
export const CATALOG_SCHEMA_VERSION = MIGRATIONS.length;

type Row = Record<string, unknown>;

export class Catalog {
  private constructor(
    private readonly db: Database.Database,
    readonly path: string,
  ) {}

  /**
   * Opens the catalog at `path`, creating it (and its directory, mode 0700) when missing, and brings its
   * schema up to date. Throws a BulwarkError when the file is damaged or was written by a newer Bulwark.
   */
  static open(path: string): Catalog {
    const file = resolve(path);
    try {
      makeDirectoriesSync(dirname(file), 0o700);
    } catch (err) {
      throw new BulwarkError("IO", `cannot create the directory of the catalog ${file}: ${errnoCode(err)}`, {
        cause: err,
        hint: "set BULWARK_CATALOG or BULWARK_STATE_DIR to a writable place",
      });
    }
    const created = !existsSync(file);
    let db: Database.Database | undefined;
    try {
      db = new Database(file, { timeout: BUSY_TIMEOUT_MS });
      // It holds host names, paths and error messages: readable by its owner only.
      if (created) chmodSync(file, 0o600);
      db.pragma("journal_mode = WAL");
      migrate(db, file);
      return new Catalog(db, file);
    } catch (err) {
      db?.close();
      throw catalogError(file, err);
    }
  }

  /**
   * Where the catalog lives: BULWARK_CATALOG, else $BULWARK_STATE_DIR/catalog.db, else
   * $XDG_STATE_HOME/bulwark/catalog.db, else ~/.local/state/bulwark/catalog.db (the XDG default).
   */
  static defaultPath(env: Readonly<Record<string, string | undefined>>): string {
    const set = (v: string | undefined): string | undefined => (v === undefined || v === "" ? undefined : v);
    const explicit = set(env.BULWARK_CATALOG);
    if (explicit !== undefined) return resolve(explicit);
    const stateDir = set(env.BULWARK_STATE_DIR);
    if (stateDir !== undefined) return join(resolve(stateDir), "catalog.db");
    // The XDG spec says a relative XDG_STATE_HOME is invalid and must be ignored.
    const xdg = set(env.XDG_STATE_HOME);
    if (xdg !== undefined && isAbsolute(xdg)) return join(xdg, "bulwark", "catalog.db");
    return join(set(env.HOME) ?? homedir(), ".local", "state", "bulwark", "catalog.db");
  }

  /** Runs `fn` in one transaction: every record it makes is kept, or none. Nests (as a savepoint). */
  transaction<T>(fn: () => T): T {
    return this.guard(() => this.db.transaction(fn).immediate());
  }

  // ---------------------------------------------------------------------------------------------------------
  // Runs

  /** Records a run that starts now, by this process on this host; returns its id for finishRun. */
  startRun(r: StartRun): number {
    return this.guard(() => {
      const result = this.db
        .prepare(
          `INSERT INTO runs (kind, job, dataset, target, status, started_at, pid, hostname)
           VALUES (?, ?, ?, ?, 'running', ?, ?, ?)`,
        )
        .run(r.kind, r.job ?? null, r.dataset ?? null, r.target ?? null, iso(r.startedAt), process.pid, HOST);
      return Number(result.lastInsertRowid);
    });
  }

  finishRun(id: number, r: FinishRun): void {
    this.guard(() => {
      const result = this.db
        .prepare(
          `UPDATE runs SET status = ?, finished_at = ?, snapshot = coalesce(?, snapshot), error = ?, stats = ?
           WHERE id = ?`,
        )
        .run(
          r.status,
          iso(r.finishedAt),
          r.snapshot ?? null,
          r.error ?? null,
          r.stats === undefined ? null : JSON.stringify(r.stats),
          id,
        );
      if (result.changes === 0) {
        throw new BulwarkError("NOT_FOUND", `the catalog at ${this.path} has no run ${id}`, {
          hint: "the catalog was replaced while the run went on; its result is in the repositories",
        });
      }
    });
  }

  /** Runs, newest first. */
  runs(filter: { job?: string; dataset?: string; kind?: RunKind; limit?: number } = {}): RunRecord[] {
    const where = new Where();
    where.eq("job", filter.job).eq("dataset", filter.dataset).eq("kind", filter.kind);
    return this.guard(() =>
      this.db
        .prepare(`SELECT * FROM runs ${where.sql} ORDER BY started_at DESC, id DESC ${limit(filter.limit)}`)
        .all(...where.params)
        .map((row) => toRun(row as Row)),
    );
  }

  /**
   * Runs left "running" by a process that died (its pid is gone from this host) are marked failed with error
   * "interrupted", finished at `now`. Runs of other hosts are left alone: their processes cannot be seen
   * from here. Returns how many were marked.
   */
  /** How many runs of each kind ended in each status (the daemon's run counters). */
  runCounts(): { kind: RunKind; status: RunStatus; count: number }[] {
    return this.guard(() =>
      (
        this.db
          .prepare(`SELECT kind, status, count(*) AS n FROM runs GROUP BY kind, status ORDER BY kind, status`)
          .all() as { kind: string; status: string; n: number }[]
      ).map((r) => ({ kind: r.kind as RunKind, status: r.status as RunStatus, count: r.n })),
    );
  }

  /**
   * The newest run of each job, kind and target that ran in a job; with `succeeded`, the newest that ended
   * ok or partial. One query for /metrics, whatever the history's length (runs_by_job covers it).
   */
  latestJobRuns(succeeded = false): RunRecord[] {
    return this.guard(() =>
      this.db
        .prepare(
          `SELECT * FROM runs WHERE id IN (
             SELECT max(id) FROM runs WHERE job IS NOT NULL
             ${succeeded ? "AND status IN ('ok', 'partial')" : ""}
             GROUP BY job, kind, target)
           ORDER BY job, kind, target`,
        )
        .all()
        .map((row) => toRun(row as Row)),
    );
  }

  /**
   * The newest verification of each dataset and target, and the newest passing drill of each (/metrics):
   * read per scrape, so one row per pair whatever the history's length.
   */
  latestEvidence(): { verifications: VerificationRecord[]; drills: DrillRecord[] } {
    return this.guard(() => ({
      verifications: this.db
        .prepare(
          `SELECT * FROM verifications WHERE id IN (
             SELECT max(id) FROM verifications WHERE dataset IS NOT NULL GROUP BY dataset, target)`,
        )
        .all()
        .map((row) => toVerification(row as Row)),
      drills: this.db
        .prepare(
          `SELECT * FROM drills WHERE id IN (
             SELECT max(id) FROM drills WHERE status = 'pass' GROUP BY dataset, target)`,
        )
        .all()
        .map((row) => toDrill(row as Row)),
    }));
  }

  markInterruptedRuns(now: Date): number {
    return this.transaction(() => {
      const running = this.db
        .prepare(`SELECT id, pid FROM runs WHERE status = 'running' AND hostname = ?`)
        .all(HOST) as { id: number; pid: number }[];
      const mark = this.db.prepare(
        `UPDATE runs SET status = 'failed', finished_at = ?, error = 'interrupted'
         WHERE id = ? AND status = 'running'`,
      );
      let marked = 0;
      for (const run of running) {
        if (processAlive(run.pid)) continue;
        marked += mark.run(iso(now), run.id).changes;
      }
      return marked;
    });
  }

  // ---------------------------------------------------------------------------------------------------------
  // Snapshots

  /** Records a snapshot seen on a target; seeing it again updates the row (by target and snapshot id). */
  recordSnapshot(s: SnapshotInput): void {
    this.guard(() => {
      this.db
        .prepare(
          `INSERT INTO snapshots (target, snapshot, original, dataset, time, hostname, paths, tags, seen_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (target, snapshot) DO UPDATE SET
             original = excluded.original, dataset = excluded.dataset, time = excluded.time,
             hostname = excluded.hostname, paths = excluded.paths, tags = excluded.tags,
             seen_at = excluded.seen_at`,
        )
        .run(
          s.target,
          s.snapshot,
          s.original,
          s.dataset ?? null,
          iso(s.time),
          s.hostname,
          JSON.stringify(s.paths),
          JSON.stringify(s.tags),
          iso(s.seenAt),
        );
    });
  }

  /** Deletes the rows of `target` whose snapshot id is not in `keep` (after a forget or a rebuild). */
  forgetSnapshots(target: string, keep: ReadonlySet<string>): number {
    return this.transaction(() => {
      const ids = this.db
        .prepare(`SELECT snapshot FROM snapshots WHERE target = ?`)
        .pluck()
        .all(target) as string[];
      const remove = this.db.prepare(`DELETE FROM snapshots WHERE target = ? AND snapshot = ?`);
      let removed = 0;
      for (const id of ids) if (!keep.has(id)) removed += remove.run(target, id).changes;
      return removed;
    });
  }

  /** Snapshots by target, then oldest first (as `bulwark snapshots` lists them). */
  snapshots(filter: { target?: string; dataset?: string } = {}): SnapshotRecord[] {
    const where = new Where();
    where.eq("target", filter.target).eq("dataset", filter.dataset);
    return this.guard(() =>
      this.db
        .prepare(`SELECT * FROM snapshots ${where.sql} ORDER BY target, time, snapshot`)
        .all(...where.params)
        .map((row) => toSnapshot(row as Row)),
    );
  }

  // ---------------------------------------------------------------------------------------------------------
  // Copies, verifications, drills, events

  /** Records a copy; a later record of the same copy (target and target snapshot) replaces the earlier one. */
  recordCopy(c: CopyInput): void {
    this.insertCopy(c, false);
  }

  /**
   * Records a copy derived from the repositories by a rebuild. It never replaces a copy recorded by
   * `bulwark copy`, which knows more (when, how much, verified).
   */
  recordDerivedCopy(
    c: Omit<CopyInput, "from" | "blobs" | "bytes" | "verified" | "runId"> & { from?: string },
  ): void {
    this.insertCopy({ ...c, blobs: 0, bytes: 0, verified: false }, true);
  }

  private insertCopy(c: Omit<CopyInput, "from"> & { from?: string }, derived: boolean): void {
    this.guard(() => {
      this.db
        .prepare(
          `INSERT INTO copies (dataset, from_target, to_target, source_snapshot, target_snapshot, time, blobs,
                               bytes, verified, run_id, derived)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (to_target, target_snapshot) DO ${
             derived
               ? "NOTHING"
               : `UPDATE SET dataset = excluded.dataset, from_target = excluded.from_target,
                    source_snapshot = excluded.source_snapshot, time = excluded.time, blobs = excluded.blobs,
                    bytes = excluded.bytes, verified = excluded.verified, run_id = excluded.run_id, derived = 0`
           }`,
        )
        .run(
          c.dataset ?? null,
          c.from ?? null,
          c.to,
          c.sourceSnapshot,
          c.targetSnapshot,
          iso(c.time),
          c.blobs,
          c.bytes,
          c.verified ? 1 : 0,
          c.runId ?? null,
          derived ? 1 : 0,
        );
    });
  }

  /** Copies, newest first. */
  copies(filter: { dataset?: string; to?: string; limit?: number } = {}): CopyRecord[] {
    const where = new Where();
    where.eq("dataset", filter.dataset).eq("to_target", filter.to);
    return this.guard(() =>
      this.db
        .prepare(`SELECT * FROM copies ${where.sql} ORDER BY time DESC, id DESC ${limit(filter.limit)}`)
        .all(...where.params)
        .map((row) => toCopy(row as Row)),
    );
  }

  // ---------------------------------------------------------------------------------------------------------
  // Verification coverage

  /** Records that a pack's data was read now, and the outcome (replacing the pack's previous record). */
  recordPackRead(r: PackReadInput): void {
    this.guard(() => {
      this.db
        .prepare(
          `INSERT INTO pack_reads (repository, pack, target, read_at, outcome, error, bytes)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (repository, pack) DO UPDATE SET target = excluded.target, read_at = excluded.read_at,
             outcome = excluded.outcome, error = excluded.error, bytes = excluded.bytes`,
        )
        .run(r.repository, r.pack, r.target, iso(r.time), r.outcome, r.error ?? null, r.bytes);
    });
  }

  /** Every pack read recorded for a repository, by pack name. */
  packReads(repository: string): Map<string, PackReadRecord> {
    return this.guard(() => {
      const rows = this.db.prepare(`SELECT * FROM pack_reads WHERE repository = ?`).all(repository) as Row[];
      return new Map(
        rows.map((row) => [
          String(row.pack),
          {
            repository: String(row.repository),
            pack: String(row.pack),
            target: String(row.target),
            time: new Date(String(row.read_at)),
            outcome: String(row.outcome) as PackReadOutcome,
            ...(typeof row.error === "string" ? { error: row.error } : {}),
            bytes: Number(row.bytes),
          },
        ]),
      );
    });
  }

  /** Drops the records of packs no longer in the repository (pruned or repacked); returns how many. */
  forgetPackReads(repository: string, keep: ReadonlySet<string>): number {
    return this.guard(() =>
      this.transaction(() => {
        let removed = 0;
        const del = this.db.prepare(`DELETE FROM pack_reads WHERE repository = ? AND pack = ?`);
        for (const pack of this.packReads(repository).keys()) {
          if (!keep.has(pack)) removed += del.run(repository, pack).changes;
        }
        return removed;
      }),
    );
  }

  /** Records a verification as the next link of the evidence chain; returns its id and link. */
  recordVerification(v: VerificationInput): { id: number; chain: EvidenceLink } {
    return this.insertEvidence("verification", () =>
      this.db
        .prepare(
          `INSERT INTO verifications (target, dataset, snapshot, time, kind, errors, description, run_id,
                                      details)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          v.target,
          v.dataset ?? null,
          v.snapshot ?? null,
          iso(v.time),
          v.kind,
          v.errors,
          v.description,
          v.runId ?? null,
          v.details === undefined ? null : JSON.stringify(v.details),
        ),
    );
  }

  /** Verifications, newest first (by time; the later record wins a tie). */
  verifications(
    filter: { dataset?: string; target?: string; id?: number; limit?: number } = {},
  ): VerificationRecord[] {
    const where = new Where();
    where.eq("dataset", filter.dataset).eq("target", filter.target);
    if (filter.id !== undefined) where.add("id = ?", filter.id);
    return this.guard(() =>
      this.db
        .prepare(
          `SELECT * FROM verifications ${where.sql} ORDER BY time DESC, id DESC ${limit(filter.limit)}`,
        )
        .all(...where.params)
        .map((row) => toVerification(row as Row)),
    );
  }

  /** The newest verification of a dataset, or of its copy on `target` (by time; the later record wins a tie). */
  latestVerification(dataset: string, target?: string): VerificationRecord | undefined {
    return this.guard(() => {
      const row =
        target === undefined
          ? this.db
              .prepare(`SELECT * FROM verifications WHERE dataset = ? ORDER BY time DESC, id DESC LIMIT 1`)
              .get(dataset)
          : this.db
              .prepare(
                `SELECT * FROM verifications WHERE dataset = ? AND target = ? ORDER BY time DESC, id DESC LIMIT 1`,
              )
              .get(dataset, target);
      return row === undefined ? undefined : toVerification(row as Row);
    });
  }

  /** Records a drill as the next link of the evidence chain; returns its id and link. */
  recordDrill(d: DrillInput): { id: number; chain: EvidenceLink } {
    return this.insertEvidence("drill", () =>
      this.db
        .prepare(
          `INSERT INTO drills (dataset, target, snapshot, time, status, description, details)
           VALUES (?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          d.dataset,
          d.target,
          d.snapshot,
          iso(d.time),
          d.status,
          d.description,
          d.details === undefined ? null : JSON.stringify(d.details),
        ),
    );
  }

  /** Drills, newest first (by time; the later record wins a tie). */
  drills(filter: { dataset?: string; target?: string; id?: number; limit?: number } = {}): DrillRecord[] {
    const where = new Where();
    where.eq("dataset", filter.dataset).eq("target", filter.target);
    if (filter.id !== undefined) where.add("id = ?", filter.id);
    return this.guard(() =>
      this.db
        .prepare(`SELECT * FROM drills ${where.sql} ORDER BY time DESC, id DESC ${limit(filter.limit)}`)
        .all(...where.params)
        .map((row) => toDrill(row as Row)),
    );
  }

  // ---------------------------------------------------------------------------------------------------------
  // The evidence chain

  /**
   * Inserts an evidence record and links it to the chain, in one IMMEDIATE transaction: the head is read
   * under the write lock, so two processes recording at once are serialised by SQLite and cannot both
   * link to the same predecessor (fork the chain). The hash is computed over the row as stored, read back.
   */
  private insertEvidence(
    kind: EvidenceKind,
    insert: () => { lastInsertRowid: number | bigint },
  ): { id: number; chain: EvidenceLink } {
    const { table } = EVIDENCE_TABLES[kind];
    return this.transaction(() => {
      const head = this.db.prepare(`SELECT seq, hash FROM evidence_head WHERE id = 1`).get() as
        | { seq: number; hash: string }
        | undefined;
      const seq = (head?.seq ?? 0) + 1;
      const prevHash = head?.hash ?? EVIDENCE_GENESIS;
      const id = Number(insert().lastInsertRowid);
      const row = this.db.prepare(`SELECT * FROM ${table} WHERE id = ?`).get(id) as Row;
      const hash = evidenceHash(seq, kind, prevHash, row);
      this.db
        .prepare(`UPDATE ${table} SET chain_seq = ?, prev_hash = ?, hash = ? WHERE id = ?`)
        .run(seq, prevHash, hash, id);
      this.db
        .prepare(
          `INSERT INTO evidence_head (id, seq, hash) VALUES (1, ?, ?)
           ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash`,
        )
        .run(seq, hash);
      return { id, chain: { seq, prevHash, hash } };
    });
  }

  /**
   * Walks the evidence chain in order and reports the first broken link: a position missing (a record
   * deleted) or taken twice, a record whose stored fields no longer give its hash (edited), a record not
   * linked to the hash of the one before it (the one before was replaced, or records reordered), a head
   * that is not the last record (the newest deleted), or a record without a link recorded after the chain
   * began (inserted behind Bulwark's back). Records older than the chain are counted, not judged. Read-only.
   * `progress` is told every 1,000 links how many were checked of how many.
   */
  verifyEvidenceChain(progress?: (checked: number, total: number) => void): EvidenceChainStatus {
    return this.guard(() => {
      const links: Array<{ kind: EvidenceKind; row: Row }> = [];
      let unchained = 0;
      let intruder: { kind: EvidenceKind; id: number } | undefined;
      for (const [kind, { table }] of Object.entries(EVIDENCE_TABLES) as [
        EvidenceKind,
        { table: string },
      ][]) {
        const rows = this.db.prepare(`SELECT * FROM ${table} ORDER BY id`).all() as Row[];
        const firstChained = rows.find((r) => r.chain_seq !== null);
        for (const row of rows) {
          if (row.chain_seq !== null) links.push({ kind, row });
          else if (firstChained !== undefined && (row.id as number) > (firstChained.id as number))
            intruder ??= { kind, id: row.id as number };
          else unchained++;
        }
      }
      links.sort((a, b) => (a.row.chain_seq as number) - (b.row.chain_seq as number));
      const head = this.db.prepare(`SELECT seq, hash FROM evidence_head WHERE id = 1`).get() as
        | { seq: number; hash: string }
        | undefined;
      const status = (broken?: EvidenceChainStatus["broken"]): EvidenceChainStatus => ({
        ok: broken === undefined,
        records: links.length,
        unchained,
        ...(head !== undefined ? { head: { seq: head.seq, hash: head.hash } } : {}),
        ...(broken !== undefined ? { broken } : {}),
      });
      let prev = EVIDENCE_GENESIS;
      for (const [i, { kind, row }] of links.entries()) {
        if (i % 1000 === 0) progress?.(i, links.length);
        const seq = row.chain_seq as number;
        const at = { seq: i + 1, kind, id: row.id as number };
        if (seq < i + 1) return status({ ...at, seq, reason: `two records claim position ${seq}` });
        if (seq > i + 1) {
          const gap = seq - (i + 1);
          return status({
            seq: i + 1,
            reason: `${gap === 1 ? `the record at position ${i + 1} is` : `the records at positions ${i + 1} to ${seq - 1} are`} missing (deleted)`,
          });
        }
        if (row.prev_hash !== prev) {
          return status({
            ...at,
            reason:
              i === 0
                ? "the first record does not start the chain"
                : `it is not linked to the record before it (position ${i}), which was replaced, or records were reordered`,
          });
        }
        if (evidenceHash(seq, kind, prev, row) !== row.hash) {
          return status({
            ...at,
            reason: "its fields were changed after it was recorded (its hash no longer matches)",
          });
        }
        prev = row.hash;
      }
      progress?.(links.length, links.length);
      if (links.length > 0 || head !== undefined) {
        if (head === undefined)
          return status({ reason: "the chain's head record (evidence_head) is missing" });
        if (head.seq > links.length) {
          const n = head.seq - links.length;
          return status({
            seq: links.length + 1,
            reason: `the newest ${n === 1 ? "record is" : `${n} records are`} missing (deleted): the chain's head is at position ${head.seq}`,
          });
        }
        if (head.seq !== links.length || head.hash !== prev) {
          return status({ seq: head.seq, reason: "the chain's head does not match its last record" });
        }
      }
      if (intruder !== undefined) {
        return status({
          ...intruder,
          reason: "it has no place in the chain: recorded after the chain began, but not by Bulwark",
        });
      }
      return status();
    });
  }

  /** The newest drill of a dataset, or of its copy on `target` (by time; the later record wins a tie). */
  /** Records a version of a runbook's definition (see RunbookVersionRecord), chained as evidence. */
  recordRunbookVersion(v: Omit<RunbookVersionRecord, "id" | "chain">): { id: number; chain: EvidenceLink } {
    return this.insertEvidence("runbook", () =>
      this.db
        .prepare(
          `INSERT INTO runbook_versions (runbook, definition_hash, time, definition) VALUES (?, ?, ?, ?)`,
        )
        .run(v.runbook, v.definitionHash, iso(v.time), JSON.stringify(v.definition)),
    );
  }

  /** Records a DR run when it ends, chained as evidence. */
  recordDrRun(r: Omit<DrRunRecord, "id" | "chain">): { id: number; chain: EvidenceLink } {
    return this.insertEvidence("dr", () =>
      this.db
        .prepare(
          `INSERT INTO dr_runs (runbook, definition_hash, mode, time, status, description, datasets, details)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          r.runbook,
          r.definitionHash,
          r.mode,
          iso(r.time),
          r.status,
          r.description,
          JSON.stringify(r.datasets),
          r.details === undefined ? null : JSON.stringify(r.details),
        ),
    );
  }

  /** DR runs, newest first: one by its record number, of a runbook, of a mode, or those that restored a dataset. */
  drRuns(
    filter: {
      id?: number;
      runbook?: string;
      mode?: DrRunRecord["mode"];
      dataset?: string;
      limit?: number;
    } = {},
  ): DrRunRecord[] {
    return this.guard(() => {
      const where: string[] = [];
      const args: unknown[] = [];
      if (filter.id !== undefined) {
        where.push("id = ?");
        args.push(filter.id);
      }
      if (filter.runbook !== undefined) {
        where.push("runbook = ?");
        args.push(filter.runbook);
      }
      if (filter.mode !== undefined) {
        where.push("mode = ?");
        args.push(filter.mode);
      }
      if (filter.dataset !== undefined) {
        where.push("EXISTS (SELECT 1 FROM json_each(dr_runs.datasets) WHERE value = ?)");
        args.push(filter.dataset);
      }
      const sql = `SELECT * FROM dr_runs ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY time DESC, id DESC LIMIT ?`;
      return (this.db.prepare(sql).all(...args, filter.limit ?? 100) as Row[]).map(toDrRun);
    });
  }

  /**
   * Saves a DR run's state (a failover's progress, src/ops/dr-failover.ts) as one row, replaced whole in one
   * statement: a process killed at any point leaves the previous state or the new one, never a mix.
   */
  saveDrState(s: {
    runId: string;
    runbook: string;
    mode: string;
    status: string;
    started: Date;
    updated: Date;
    state: unknown;
  }): void {
    this.guard(() =>
      this.db
        .prepare(
          `INSERT INTO dr_state (run_id, runbook, mode, status, started, updated, state) VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (run_id) DO UPDATE SET status = excluded.status, updated = excluded.updated, state = excluded.state`,
        )
        .run(s.runId, s.runbook, s.mode, s.status, iso(s.started), iso(s.updated), JSON.stringify(s.state)),
    );
  }

  /** A DR run's saved state, or undefined. */
  loadDrState(runId: string): unknown {
    return this.guard(() => {
      const row = this.db.prepare(`SELECT state FROM dr_state WHERE run_id = ?`).get(runId) as
        | { state: string }
        | undefined;
      return row === undefined ? undefined : (JSON.parse(row.state) as unknown);
    });
  }

  /** DR runs with saved state, newest first. */
  drStates(
    limit = 20,
  ): { runId: string; runbook: string; mode: string; status: string; started: Date; updated: Date }[] {
    return this.guard(() =>
      (
        this.db
          .prepare(
            `SELECT run_id, runbook, mode, status, started, updated FROM dr_state ORDER BY started DESC LIMIT ?`,
          )
          .all(limit) as Row[]
      ).map((r) => ({
        runId: str(r, "run_id"),
        runbook: str(r, "runbook"),
        mode: str(r, "mode"),
        status: str(r, "status"),
        started: date(r, "started"),
        updated: date(r, "updated"),
      })),
    );
  }

  /** A runbook's versions, oldest first: its change log. */
  /** One version of the change log by its record number. */
  runbookVersion(id: number): RunbookVersionRecord | undefined {
    return this.guard(() => {
      const row = this.db.prepare(`SELECT * FROM runbook_versions WHERE id = ?`).get(id);
      return row === undefined ? undefined : toRunbookVersion(row as Row);
    });
  }

  runbookVersions(runbook: string): RunbookVersionRecord[] {
    return this.guard(() =>
      (
        this.db.prepare(`SELECT * FROM runbook_versions WHERE runbook = ? ORDER BY id`).all(runbook) as Row[]
      ).map(toRunbookVersion),
    );
  }

  latestDrill(dataset: string, target?: string): DrillRecord | undefined {
    return this.guard(() => {
      const row =
        target === undefined
          ? this.db
              .prepare(`SELECT * FROM drills WHERE dataset = ? ORDER BY time DESC, id DESC LIMIT 1`)
              .get(dataset)
          : this.db
              .prepare(
                `SELECT * FROM drills WHERE dataset = ? AND target = ? ORDER BY time DESC, id DESC LIMIT 1`,
              )
              .get(dataset, target);
      return row === undefined ? undefined : toDrill(row as Row);
    });
  }

  recordEvent(e: EventInput): void {
    this.guard(() => {
      this.db
        .prepare(
          `INSERT INTO events (time, level, message, job, dataset, target, run_id) VALUES (?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          iso(e.time),
          e.level,
          e.message,
          e.job ?? null,
          e.dataset ?? null,
          e.target ?? null,
          e.runId ?? null,
        );
    });
  }

  /** Events, newest first; `since` keeps those at or after it, `level` those of exactly that level. */
  events(filter: { limit?: number; since?: Date; level?: string } = {}): EventRecord[] {
    const where = new Where();
    where.eq("level", filter.level);
    if (filter.since !== undefined) where.add("time >= ?", iso(filter.since));
    return this.guard(() =>
      this.db
        .prepare(`SELECT * FROM events ${where.sql} ORDER BY time DESC, id DESC ${limit(filter.limit)}`)
        .all(...where.params)
        .map((row) => toEvent(row as Row)),
    );
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  /** Runs a database operation, turning SQLite's errors into ones that say what to do. */
  private guard<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      throw catalogError(this.path, err);
    }
  }
}

const HOST = osHostname();

function migrate(db: Database.Database, file: string): void {
  const version = (): number => db.pragma("user_version", { simple: true }) as number;
  // An up-to-date catalog (the usual case) opens without taking the write lock.
  if (version() === MIGRATIONS.length) return;
  // IMMEDIATE, and the version read again inside: two processes opening a new catalog at once must not both
  // run the same migration.
  db.transaction(() => {
    const from = version();
    if (from > MIGRATIONS.length) {
      throw new BulwarkError(
        "INVALID_DATA",
        `the catalog at ${file} has schema version ${from}, written by a newer Bulwark (this one knows up to ${MIGRATIONS.length})`,
        { hint: "upgrade Bulwark, or point BULWARK_CATALOG elsewhere and run `bulwark catalog rebuild`" },
      );
    }
    for (let v = from; v < MIGRATIONS.length; v++) {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    }
  }).immediate();
}

/** SQLite's errors as BulwarkErrors that name the catalog and the way out; other errors pass unchanged. */
function catalogError(file: string, err: unknown): unknown {
  if (!(err instanceof Database.SqliteError)) return err;
  const code = err.code;
  if (code === "SQLITE_NOTADB" || code.startsWith("SQLITE_CORRUPT")) {
    return new BulwarkError(
      "INVALID_DATA",
      `the catalog at ${file} is damaged: move it away and run \`bulwark catalog rebuild\``,
      {
        cause: err,
        hint: `SQLite reports: ${err.message}. Move ${file} (with any ${file}-wal and ${file}-shm beside it) away; the rebuild reads every snapshot back from the repositories, so no backup is lost (run history and events recorded only in the catalog are)`,
      },
    );
  }
  if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED")) {
    return new BulwarkError(
      "TRANSIENT",
      `the catalog at ${file} stayed locked by another process for ${BUSY_TIMEOUT_MS / 1000} s`,
      { cause: err, hint: "try again when the other bulwark command has finished" },
    );
  }
  if (
    code.startsWith("SQLITE_CANTOPEN") ||
    code.startsWith("SQLITE_READONLY") ||
    code.startsWith("SQLITE_IOERR") ||
    code === "SQLITE_FULL" ||
    code === "SQLITE_PERM"
  ) {
    return new BulwarkError("IO", `cannot use the catalog at ${file}: ${err.message}`, {
      cause: err,
      hint: "check that its directory is writable and the disk is not full (BULWARK_CATALOG moves it)",
    });
  }
  return err;
}

/** Whether a process with this pid exists on this host (EPERM: it exists but is not ours). */
function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoCode(err) === "EPERM";
  }
}

/** A WHERE clause built from the filters that are set. */
class Where {
  private readonly clauses: string[] = [];
  readonly params: unknown[] = [];

  eq(column: string, value: string | undefined): this {
    if (value !== undefined) this.add(`${column} = ?`, value);
    return this;
  }

  add(clause: string, param: unknown): this {
    this.clauses.push(clause);
    this.params.push(param);
    return this;
  }

  get sql(): string {
    return this.clauses.length === 0 ? "" : `WHERE ${this.clauses.join(" AND ")}`;
  }
}

function limit(n: number | undefined): string {
  if (n === undefined) return "";
  if (!Number.isInteger(n) || n < 0)
    throw new BulwarkError("USAGE", `a limit must be a whole number, got ${n}`);
  return `LIMIT ${n}`;
}

function iso(d: Date): string {
  return d.toISOString();
}

// Rows to records: NULL columns become absent fields, JSON columns are parsed, times become Dates.

function optional<K extends string, V>(key: K, value: V | null | undefined): { [P in K]?: V } {
  return (value === null || value === undefined ? {} : { [key]: value }) as { [P in K]?: V };
}

const str = (row: Row, column: string): string => row[column] as string;
const date = (row: Row, column: string): Date => new Date(str(row, column));
const json = <T>(row: Row, column: string): T | undefined =>
  row[column] === null ? undefined : (JSON.parse(str(row, column)) as T);

function toRun(row: Row): RunRecord {
  return {
    id: row.id as number,
    kind: row.kind as RunKind,
    ...optional("job", row.job as string | null),
    ...optional("dataset", row.dataset as string | null),
    ...optional("target", row.target as string | null),
    status: row.status as RunStatus,
    startedAt: date(row, "started_at"),
    ...optional("finishedAt", row.finished_at === null ? null : date(row, "finished_at")),
    ...optional("snapshot", row.snapshot as string | null),
    ...optional("error", row.error as string | null),
    ...optional("stats", json<Record<string, unknown>>(row, "stats")),
    pid: row.pid as number,
    hostname: str(row, "hostname"),
  };
}

function toSnapshot(row: Row): SnapshotRecord {
  return {
    target: str(row, "target"),
    snapshot: str(row, "snapshot"),
    original: str(row, "original"),
    ...optional("dataset", row.dataset as string | null),
    time: date(row, "time"),
    hostname: str(row, "hostname"),
    paths: json<string[]>(row, "paths") ?? [],
    tags: json<string[]>(row, "tags") ?? [],
    seenAt: date(row, "seen_at"),
  };
}

function toCopy(row: Row): CopyRecord {
  return {
    id: row.id as number,
    ...optional("dataset", row.dataset as string | null),
    ...optional("from", row.from_target as string | null),
    to: str(row, "to_target"),
    sourceSnapshot: str(row, "source_snapshot"),
    targetSnapshot: str(row, "target_snapshot"),
    time: date(row, "time"),
    blobs: row.blobs as number,
    bytes: row.bytes as number,
    verified: row.verified === 1,
    ...optional("runId", row.run_id as number | null),
    derived: row.derived === 1,
  };
}

function toVerification(row: Row): VerificationRecord {
  return {
    id: row.id as number,
    target: str(row, "target"),
    ...optional("dataset", row.dataset as string | null),
    ...optional("snapshot", row.snapshot as string | null),
    time: date(row, "time"),
    kind: str(row, "kind"),
    errors: row.errors as number,
    description: str(row, "description"),
    ...optional("runId", row.run_id as number | null),
    ...optional("details", json<Record<string, unknown>>(row, "details")),
    ...optional("chain", toLink(row)),
  };
}

function toDrill(row: Row): DrillRecord {
  return {
    id: row.id as number,
    dataset: str(row, "dataset"),
    target: str(row, "target"),
    snapshot: str(row, "snapshot"),
    time: date(row, "time"),
    status: row.status as "pass" | "fail",
    description: str(row, "description"),
    ...optional("details", json<Record<string, unknown>>(row, "details")),
    ...optional("chain", toLink(row)),
  };
}

function toDrRun(row: Row): DrRunRecord {
  return {
    id: row.id as number,
    runbook: str(row, "runbook"),
    definitionHash: str(row, "definition_hash"),
    mode: row.mode as DrRunRecord["mode"],
    time: date(row, "time"),
    status: row.status as "pass" | "fail",
    description: str(row, "description"),
    datasets: json<string[]>(row, "datasets") ?? [],
    ...optional("details", json<Record<string, unknown>>(row, "details")),
    ...optional("chain", toLink(row)),
  };
}

function toRunbookVersion(row: Row): RunbookVersionRecord {
  return {
    id: row.id as number,
    runbook: str(row, "runbook"),
    definitionHash: str(row, "definition_hash"),
    time: date(row, "time"),
    definition: json<Record<string, unknown>>(row, "definition") ?? {},
    ...optional("chain", toLink(row)),
  };
}

function toLink(row: Row): EvidenceLink | undefined {
  if (row.chain_seq === null || row.chain_seq === undefined) return undefined;
  return { seq: row.chain_seq as number, prevHash: str(row, "prev_hash"), hash: str(row, "hash") };
}

function toEvent(row: Row): EventRecord {
  return {
    id: row.id as number,
    time: date(row, "time"),
    level: row.level as EventLevel,
    message: str(row, "message"),
    ...optional("job", row.job as string | null),
    ...optional("dataset", row.dataset as string | null),
    ...optional("target", row.target as string | null),
    ...optional("runId", row.run_id as number | null),
  };
}
