/**
 * The resolved configuration: the one type the core sees once a `bulwark.yaml` has been parsed, validated
 * against the written schema, normalised (defaults filled in, presets expanded, durations parsed) and
 * checked by the cross-field rules (./rules.ts).
 *
 * Glossary (docs/config.md): a Target is a place a repository lives, labelled with what the policy engine
 * counts; a Dataset is what is protected; a Policy is the rule a dataset must meet; a Job ties a dataset to a
 * policy, a primary target and the copy targets its snapshots are copied to.
 *
 * Secrets never appear here: credentials and passwords are references (an environment variable or a file)
 * that the code needing the secret reads at the moment it needs it.
 */

import type { Budget } from "./budget.js";
import type { KeepRules } from "./keep-rules.js";

export const MEDIA = ["disk", "nas", "object", "tape", "vault", "cloud"] as const;
export type Medium = (typeof MEDIA)[number];

/** none: deletable with the host's credentials; append-only: the server refuses deletes (a hardened vault);
 * immutable: retention-locked (S3 Object Lock, WORM); offline: air-gapped, not reachable from the host. */
export const ISOLATIONS = ["none", "append-only", "immutable", "offline"] as const;
export type Isolation = (typeof ISOLATIONS)[number];

export type SecretRef = { env: string } | { file: string };

/** "env:NAME" or "file:PATH": how a secret reference is printed (never its value). */
export function describeSecretRef(ref: SecretRef): string {
  return "env" in ref ? `env:${ref.env}` : `file:${ref.file}`;
}

export interface TargetLabels {
  medium: Medium;
  site: string;
  offsite: boolean;
  /** Targets sharing a failure domain (two disks in one rack) count as one copy. */
  failureDomain: string;
  isolation: Isolation;
  /** The network the target sits on, for rules that count isolated networks (4-3-2). Defaults to the site. */
  network: string;
}

export interface Target {
  name: string;
  /** A location string as the backends accept it: a path, `sftp:user@host:/path`, `s3:https://host/bucket/prefix`. */
  location: string;
  labels: TargetLabels;
  /** Backend credentials by name (e.g. accessKeyId, secretAccessKey), each a reference. */
  credentials: Record<string, SecretRef>;
  /** The repository password of this target (a copy re-encrypts when it differs from the primary's). */
  password?: SecretRef;
  /** Retention applied to what is written there (S3 Object Lock). */
  immutability?: { mode: "governance" | "compliance"; days: number };
}

/**
 * Shell commands run around a backup: `before` (freeze a file system, take an LVM snapshot), `after` (thaw,
 * release), which runs whenever its `before` was started, also when the backup failed (src/sources/dataset.ts).
 */
export interface HookConfig {
  before?: string;
  after?: string;
  /** Each hook is killed after this long (default: src/sources/hooks.ts DEFAULT_HOOK_TIMEOUT_MS). */
  timeoutMs?: number;
  /** Variables passed through to the hooks by name, beyond the scrubbed set (src/sources/process.ts childEnv). */
  env?: string[];
}

export const POSTGRES_FORMATS = ["custom", "directory"] as const;
export type PostgresFormat = (typeof POSTGRES_FORMATS)[number];

/**
 * What a dataset is made of. Every source but `files` is stored under /sources/<name> in the snapshot:
 * sqlite as /sources/<name>.sqlite, postgres as /sources/<name>/ (db.pgdump or db.dir/, globals.sql; with
 * `all`, databases/<database>/...), command as /sources/<name>/<filename>.
 */
export type Source =
  | { type: "files"; paths: string[]; excludes: string[]; hooks?: HookConfig }
  | { type: "sqlite"; name: string; path: string; timeoutMs?: number; hooks?: HookConfig }
  | {
      type: "postgres";
      name: string;
      /** One database; absent when `all` is set. */
      database?: string;
      /** Every database of the server (each dumped on its own) instead of one. */
      all: boolean;
      host?: string;
      port?: number;
      user?: string;
      password?: SecretRef;
      format: PostgresFormat;
      /** Parallel pg_dump processes; more than 1 needs the directory format. */
      jobs: number;
      /** Also store the roles and tablespaces (pg_dumpall --globals-only). */
      globals: boolean;
      timeoutMs?: number;
      hooks?: HookConfig;
    }
  | {
      type: "command";
      name: string;
      /** A program and its arguments (a command written as one string is `sh -c` it). */
      command: string[];
      filename: string;
      /** Variables passed through to the command by name, beyond the scrubbed set (childEnv). */
      env?: string[];
      timeoutMs?: number;
      hooks?: HookConfig;
    };

/** A query run against a restored database; its output (rows on lines, columns joined by "|") must equal `expect`. */
export interface DrillQuery {
  sql: string;
  expect: string;
}

/**
 * What a drill checks in the restored snapshot beyond its content (src/drill/validators.ts). Paths are
 * snapshot paths (/srv/www, /sources/app.sqlite), found under the sandbox the drill restored into.
 */
export type DrillValidator =
  | {
      type: "paths";
      name: string;
      expect: { path: string; minSize?: number; minFiles?: number }[];
    }
  | { type: "sqlite"; name: string; path: string; queries: DrillQuery[] }
  | {
      type: "postgres";
      name: string;
      /** The postgres source of the dataset whose dump is restored into a throwaway cluster. */
      source: string;
      /** With a source of every database (`all`): the one to restore. */
      database?: string;
      queries: DrillQuery[];
      timeoutMs?: number;
    }
  | {
      type: "command";
      name: string;
      /** Run in the sandbox (its working directory), isolated from the network where possible. */
      command: string[];
      timeoutMs: number;
    };

/** How a dataset is drilled (`bulwark drill`, docs/design.md §17b). */
export interface DrillConfig {
  validators: DrillValidator[];
  /** Live files of the dataset's file sources compared with the snapshot (0: no spot check). */
  spotCheck: number;
}

export interface Dataset {
  name: string;
  sources: Source[];
  drill?: DrillConfig;
  /** Run around the whole backup, outside every source's own hooks. */
  hooks?: HookConfig;
  /** Where the production data lives: counted as a site and network when the policy counts production. */
  site?: string;
  network?: string;
}

export const RULE_PRESETS = ["3-2-1", "3-2-1-1-0", "4-3-2"] as const;
export type RulePreset = (typeof RULE_PRESETS)[number];

/** What a rule requires. A count of 0 (or 1 for media, sites and networks) means the rule does not ask for it. */
export interface RuleCounts {
  copies: number;
  media: number;
  offsite: number;
  immutableOrIsolated: number;
  isolatedNetworks: number;
  sites: number;
  /** Automated recovery validation with zero errors (the trailing 0 of 3-2-1-1-0). */
  zeroErrors: boolean;
  /** Orchestrated DR that restores the full service. */
  disasterRecovery: boolean;
}

/** How the policy's copies are verified (`bulwark verify`, docs/design.md §17a). */
export interface PolicyVerification {
  /** How often verification must run; an older last verification fails the posture row. */
  cadence?: string;
  cadenceMs?: number;
  /** Every pack is read at least once per this period; a pack read within it is not read again. */
  fullEvery?: string;
  fullEveryMs?: number;
  /** At most this much read per run and target. */
  budget?: Budget;
  /** Never-read packs first (default true; false: only by age). */
  newPacks: boolean;
}

export interface Policy {
  name: string;
  /** The preset the counts came from, when one was used. */
  preset?: RulePreset;
  counts: RuleCounts;
  /** Production data counts as one of the copies, as practitioners count it (default true). */
  productionCounts: boolean;
  /** A copy counts only if its newest snapshot is at most this old. */
  rpo: string;
  rpoMs: number;
  verification?: PolicyVerification;
  /** A passing drill must be at most this old (`drills.every`); without it any passing drill counts. */
  drills?: { every: string; everyMs: number; runbookEvery?: string; runbookEveryMs?: number };
  /** Per-target keep rules (the config's `retention:`; what `forget` keeps there), keyed by target name. */
  keepRules: Record<string, KeepRules>;
  /** Each snapshot must stay retention-locked at least this long on the immutable targets. */
  immutabilityDays?: number;
}

export interface Job {
  name: string;
  dataset: string;
  policy: string;
  primary: string;
  copies: string[];
  /** A cron expression, a nickname (@daily) or "@every DURATION" (src/config/schedule.ts). */
  schedule?: string;
  dependsOn: string[];
}

/**
 * A program to run: argv (a command written as one string is `sh -c` it), the variables passed through by
 * name beyond the scrubbed set (childEnv), extra variables set to fixed values, and a working directory.
 */
export interface CommandSpec {
  command: string[];
  /** Passed through from Bulwark's environment by name (never its secrets unless named). */
  passEnv: string[];
  /** Set to these values (not secrets: they are in the config). */
  setEnv: Record<string, string>;
  cwd?: string;
}

/**
 * A health check of a recovered service (docs/design.md §24): tried every `intervalMs` until it passes or
 * `retries` more attempts failed, each attempt bounded by `timeoutMs`.
 */
export type HealthCheck = {
  name: string;
  timeoutMs: number;
  retries: number;
  intervalMs: number;
} & (
  | { type: "tcp"; host: string; port: number }
  | {
      type: "http";
      url: string;
      /** Expected status (default 200). */
      status: number;
      /** A substring the body must contain. */
      body?: string;
    }
  | ({ type: "command" } & CommandSpec)
  | {
      type: "sql";
      /** A PostgreSQL connection URL (no password in it) or a SQLite file. */
      postgres?: string;
      password?: SecretRef;
      sqlite?: string;
      query: string;
      /** The exact output expected (rows on lines, columns joined by |). */
      expect: string;
    }
);

/** What a runbook step does (before or after a service, or around the whole runbook). */
export type StepAction =
  | ({ type: "command" } & CommandSpec)
  | { type: "wait"; ms: number }
  | { type: "approval"; message: string }
  | { type: "notify"; message: string; command?: CommandSpec };

export type RunbookStep = StepAction & {
  name: string;
  /** A failed critical step stops the runbook; a failed non-critical one is recorded and passed (default true). */
  critical: boolean;
  timeoutMs: number;
  /** Attempts after the first (default 0). */
  retries: number;
  /** In `dr drill`: run it, or skip it (default run; approvals and notifications default to skip). */
  inDrill: "run" | "skip";
};

/** Where one dataset (or one of its sources) of a service is restored to. */
export interface ServiceRestore {
  dataset: string;
  /** A source of the dataset (by name); without it the dataset's files are restored. */
  source?: string;
  to:
    | { directory: string }
    | { postgres: string; password?: SecretRef }
    | { sqlite: string }
    | { command: CommandSpec };
}

export interface RunbookService {
  name: string;
  restore: ServiceRestore[];
  start?: ({ kind: "command" } & CommandSpec) | { kind: "systemd"; unit: string };
  stop?: ({ kind: "command" } & CommandSpec) | { kind: "systemd"; unit: string };
  health: HealthCheck[];
  dependsOn: string[];
  before: RunbookStep[];
  after: RunbookStep[];
  /** TCP ports the service listens on (from its tcp checks and `ports`): two services must not share one. */
  ports: number[];
}

/** A DR runbook (`runbooks:`, `bulwark dr`, docs/design.md §24). */
export interface Runbook {
  name: string;
  /** The recovery time objective of the whole runbook. */
  rto?: string;
  rtoMs?: number;
  services: Record<string, RunbookService>;
  before: RunbookStep[];
  after: RunbookStep[];
}

/** How evidence reports are signed (`bulwark report --sign`, docs/design.md §17c). */
export interface EvidenceConfig {
  /** An Ed25519 private key, PEM PKCS#8 (the whole file, or the variable's whole value). */
  signingKey?: SecretRef;
}

export interface BulwarkConfig {
  version: 1;
  targets: Record<string, Target>;
  datasets: Record<string, Dataset>;
  policies: Record<string, Policy>;
  jobs: Record<string, Job>;
  evidence?: EvidenceConfig;
  /** DR runbooks by name (empty when the config has none). */
  runbooks: Record<string, Runbook>;
  /** How `bulwark daemon` schedules and serves (defaults when the config has no `daemon:`). */
  daemon: DaemonConfig;
  /** Where the daemon sends alerts and pings (no channels when the config has no `alerts:`). */
  alerts: AlertsConfig;
}

/** The `daemon:` section (src/config/daemon.ts), with its defaults. */
export interface DaemonConfig {
  /** The cron schedules' time zone; undefined: the host's. */
  timezone?: string;
  catchUp: "once" | "none";
  jitterMs: number;
  retries: { attempts: number; backoffMs: number; maxBackoffMs: number };
  targetConcurrency: number;
  listen: { host: string; port: number };
  tls?: { cert: string; key: string };
  /** The API's tokens file; undefined: STATE_DIR/daemon-tokens.json. */
  tokens?: string;
  metricsAuth: boolean;
}

/**
 * A URL as the config gives it: written out, or a reference when the URL is itself a credential (a Slack
 * webhook's path, a healthchecks ping's UUID).
 */
export type UrlRef = string | SecretRef;

/** An HTTP endpoint that gets each alert as a JSON POST, signed when it has a secret. */
export interface WebhookChannel {
  url: UrlRef;
  /** HMAC-SHA256 key: the body's signature goes in X-Bulwark-Signature: sha256=<hex>. */
  secret?: SecretRef;
}

/** An SMTP server that mails each alert. */
export interface EmailChannel {
  host: string;
  port: number;
  /** Implicit TLS from the first byte (port 465); otherwise STARTTLS when the server offers it. */
  tls: boolean;
  /** Refuse to send unless STARTTLS succeeded. */
  requireTLS: boolean;
  /** A PEM file of the CA (or the self-signed certificate) the server's certificate must chain to. */
  ca?: string;
  user?: string;
  password?: SecretRef;
  from: string;
  to: string[];
}

/** A program that gets each alert as JSON on its standard input and BULWARK_ALERT_* variables. */
export interface CommandChannel {
  command: string[];
  /** Passed through by name beyond the scrubbed set (src/sources/process.ts childEnv). */
  passEnv: string[];
  timeoutMs: number;
}

/** Healthchecks-style URLs of one job, hit when a run starts, succeeds and fails. */
export interface JobPings {
  start?: UrlRef;
  success?: UrlRef;
  fail?: UrlRef;
}

/** The `alerts:` section (src/config/alerts.ts), with its defaults. */
export interface AlertsConfig {
  webhooks: WebhookChannel[];
  email?: EmailChannel;
  commands: CommandChannel[];
  /** By job name. */
  pings: Record<string, JobPings>;
  /** Remind while a condition lasts, this long after the last notice; undefined: one alert per condition. */
  repeatAfter?: string;
  repeatAfterMs?: number;
}
