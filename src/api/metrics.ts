/**
 * The daemon's `/metrics` (issue 14, docs/design.md §25): what the catalog and the daemon's state know,
 * never a target read on a scrape (a scrape every 15 s must not open S3). Names follow Prometheus practice
 * (`bulwark_` prefix, units as suffixes, `_total` counters, timestamps in seconds); labels are config names
 * (job, dataset, target, kind, task), never snapshot ids or paths, so their number is bounded by the config.
 */
import type { Catalog, RunRecord } from "../catalog/catalog.js";
import type { BulwarkConfig } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import type { DaemonStatus } from "../daemon/daemon.js";
import { rpoWatch, type RpoStatus } from "../daemon/rpo-watch.js";
import type { MetricFamily } from "./prometheus.js";

export type MetricsStore = Pick<
  Catalog,
  "latestJobRuns" | "runCounts" | "snapshots" | "latestEvidence" | "drRuns"
>;

const seconds = (d: Date): number => d.getTime() / 1000;

export function collectMetrics(
  store: MetricsStore,
  config: BulwarkConfig,
  daemon: DaemonStatus | undefined,
  clock: Clock,
): MetricFamily[] {
  const families: MetricFamily[] = [];
  const gauge = (name: string, help: string, samples: MetricFamily["samples"]): void => {
    families.push({ name, help, type: "gauge", samples });
  };
  const stepLabels = (r: RunRecord): Record<string, string> => ({
    job: r.job ?? "",
    kind: r.kind,
    ...(r.target !== undefined ? { target: r.target } : {}),
  });

  // Each job's steps (backup, copy, forget per target): the newest run, and the newest that succeeded.
  const latest = store.latestJobRuns();
  const succeeded = store.latestJobRuns(true);
  gauge(
    "bulwark_step_last_run_timestamp_seconds",
    "When the newest run of a job's step (backup, copy, forget) on a target started.",
    latest.map((r) => ({ labels: stepLabels(r), value: seconds(r.startedAt) })),
  );
  gauge(
    "bulwark_step_last_success_timestamp_seconds",
    "When the newest successful (ok or partial) run of a job's step on a target ended.",
    succeeded.map((r) => ({ labels: stepLabels(r), value: seconds(r.finishedAt ?? r.startedAt) })),
  );
  gauge(
    "bulwark_step_last_ok",
    "1 when the newest run of a job's step on a target ended ok or partial, 0 when it failed, -1 while it runs.",
    latest.map((r) => ({
      labels: stepLabels(r),
      value: r.status === "running" ? -1 : r.status === "failed" ? 0 : 1,
    })),
  );
  gauge(
    "bulwark_step_last_duration_seconds",
    "How long the newest finished run of a job's step on a target took.",
    latest
      .filter((r) => r.finishedAt !== undefined)
      .map((r) => ({
        labels: stepLabels(r),
        value: (r.finishedAt!.getTime() - r.startedAt.getTime()) / 1000,
      })),
  );
  const backups = succeeded.filter((r) => r.kind === "backup");
  const stat = (r: RunRecord, key: string): number | undefined => {
    const v = r.stats?.[key];
    return typeof v === "number" ? v : undefined;
  };
  const backupGauge = (name: string, help: string, value: (r: RunRecord) => number | undefined): void =>
    gauge(
      name,
      help,
      backups.flatMap((r) => {
        const v = value(r);
        return v === undefined ? [] : [{ labels: { job: r.job ?? "", target: r.target ?? "" }, value: v }];
      }),
    );
  backupGauge(
    "bulwark_backup_last_processed_bytes",
    "Bytes of the files the newest successful backup of a job covered.",
    (r) => stat(r, "totalBytes"),
  );
  backupGauge(
    "bulwark_backup_last_added_bytes",
    "New data the newest successful backup of a job added, before compression.",
    (r) => stat(r, "dataAdded"),
  );
  backupGauge("bulwark_backup_last_files", "Files the newest successful backup of a job covered.", (r) => {
    const parts = ["filesNew", "filesChanged", "filesUnmodified"].map((k) => stat(r, k));
    return parts.every((p) => p === undefined) ? undefined : parts.reduce<number>((a, b) => a + (b ?? 0), 0);
  });
  families.push({
    name: "bulwark_runs_total",
    help: "Runs of each kind recorded in the catalog, by how they ended (running: not yet).",
    type: "counter",
    samples: store.runCounts().map((c) => ({ labels: { kind: c.kind, status: c.status }, value: c.count })),
  });

  // Each dataset on each target of its jobs: the newest snapshot, its age against the RPO, how far a copy is
  // behind the primary.
  const watch = rpoWatch(config, store.snapshots(), clock.now());
  const at = (w: RpoStatus): Record<string, string> => ({ dataset: w.dataset, target: w.target });
  const primaries = new Map(watch.filter((w) => w.role === "primary").map((w) => [w.dataset, w.newest]));
  gauge(
    "bulwark_snapshot_newest_timestamp_seconds",
    "When the newest snapshot of a dataset on a target was taken (as the catalog knows it).",
    watch.flatMap((w) => (w.newest !== undefined ? [{ labels: at(w), value: seconds(w.newest) }] : [])),
  );
  gauge(
    "bulwark_copy_lag_seconds",
    "How far the newest snapshot of a dataset on a copy is behind the newest on the job's primary.",
    watch.flatMap((w) => {
      const primary = primaries.get(w.dataset);
      return w.role === "copy" && w.newest !== undefined && primary !== undefined
        ? [{ labels: at(w), value: Math.max(0, (primary.getTime() - w.newest.getTime()) / 1000) }]
        : [];
    }),
  );
  gauge(
    "bulwark_rpo_objective_seconds",
    "The recovery point objective of a dataset's policy.",
    watch.map((w) => ({ labels: at(w), value: w.rpoMs / 1000 })),
  );
  gauge(
    "bulwark_rpo_ratio",
    "The age of a dataset's newest snapshot on a target over its RPO (above 1: exceeded; +Inf: never backed up there).",
    watch.map((w) => ({ labels: at(w), value: w.ratio })),
  );
  gauge(
    "bulwark_rpo_state",
    "1 for the RPO state a dataset's copy on a target is in: within, exceeded (up to 2x), severe (up to 4x), critical, never.",
    watch.map((w) => ({ labels: { ...at(w), state: w.state }, value: 1 })),
  );

  // Evidence: the newest verification and drill of each dataset and target, DR drills' RTO.
  const lastOf = <T extends { time: Date }>(items: T[], key: (t: T) => string): Map<string, T> => {
    const out = new Map<string, T>();
    for (const i of items) {
      const k = key(i);
      const seen = out.get(k);
      if (seen === undefined || i.time > seen.time) out.set(k, i);
    }
    return out;
  };
  const evidence = store.latestEvidence();
  const verifications = lastOf(evidence.verifications, (v) => `${v.dataset}\0${v.target}`);
  gauge(
    "bulwark_verification_last_timestamp_seconds",
    "When a dataset's copy on a target was last verified.",
    [...verifications.values()].map((v) => ({
      labels: { dataset: v.dataset!, target: v.target },
      value: seconds(v.time),
    })),
  );
  gauge(
    "bulwark_verification_last_errors",
    "Errors the newest verification of a dataset's copy found.",
    [...verifications.values()].map((v) => ({
      labels: { dataset: v.dataset!, target: v.target },
      value: v.errors,
    })),
  );
  gauge(
    "bulwark_verification_coverage_ratio",
    "The share of a target's packs read within the policy's full-coverage period, at its newest verification.",
    [...verifications.values()].flatMap((v) => {
      const coverage = v.details?.coverage as { covered?: unknown; packs?: unknown } | undefined;
      const covered = coverage?.covered;
      const packs = coverage?.packs;
      return typeof covered === "number" && typeof packs === "number" && packs > 0
        ? [{ labels: { dataset: v.dataset!, target: v.target }, value: covered / packs }]
        : [];
    }),
  );
  const drills = lastOf(evidence.drills, (d) => `${d.dataset}\0${d.target}`);
  gauge(
    "bulwark_drill_last_success_timestamp_seconds",
    "When a restore drill of a dataset from a target last passed.",
    [...drills.values()].map((d) => ({
      labels: { dataset: d.dataset, target: d.target },
      value: seconds(d.time),
    })),
  );
  const drDrills = lastOf(
    store.drRuns({ mode: "drill", limit: -1 }).filter((r) => r.status === "pass"),
    (r) => r.runbook,
  );
  gauge(
    "bulwark_dr_drill_rto_seconds",
    "The recovery time the newest passing DR drill of a runbook measured.",
    [...drDrills.values()].flatMap((r) => {
      const rto = r.details?.rtoMs;
      return typeof rto === "number" ? [{ labels: { runbook: r.runbook }, value: rto / 1000 }] : [];
    }),
  );

  // The daemon's own state.
  if (daemon !== undefined) {
    gauge("bulwark_daemon_start_timestamp_seconds", "When the daemon started.", [
      { value: new Date(daemon.started).getTime() / 1000 },
    ]);
    gauge(
      "bulwark_daemon_task_next_run_timestamp_seconds",
      "When a scheduled task is next due.",
      daemon.tasks.flatMap((t) =>
        t.next !== undefined ? [{ labels: { task: t.id }, value: seconds(t.next) }] : [],
      ),
    );
    gauge(
      "bulwark_daemon_task_running",
      "1 while a scheduled task runs.",
      daemon.tasks.map((t) => ({ labels: { task: t.id }, value: t.running !== undefined ? 1 : 0 })),
    );
    families.push({
      name: "bulwark_daemon_task_missed_total",
      help: "Occurrences of a task's schedule that passed while it was still running (not started twice).",
      type: "counter",
      samples: daemon.tasks.map((t) => ({ labels: { task: t.id }, value: t.missed })),
    });
  }
  gauge("bulwark_scrape_timestamp_seconds", "When these metrics were collected.", [
    { value: seconds(clock.now()) },
  ]);
  return families;
}
