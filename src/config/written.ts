/**
 * What users write in `bulwark.yaml`, after the schema has checked the shapes and before normalisation
 * (./normalise.ts) fills in defaults, expands presets and parses durations. The zod schema (./schema.ts)
 * produces exactly this type (checked there at compile time).
 */

import type { WrittenAlerts } from "./alerts.js";
import type { WrittenDaemon } from "./daemon.js";
import type { WrittenRunbook } from "./runbooks.js";
import type { Isolation, Medium, PostgresFormat, RulePreset, SecretRef } from "./types.js";

export interface WrittenTarget {
  location: string;
  labels: {
    medium: Medium;
    site: string;
    /** Default false. */
    offsite?: boolean;
    /** Required: defaulting it would silently count two disks in one rack as two copies. */
    failureDomain: string;
    /** Default "none". */
    isolation?: Isolation;
    /** Default: the site. */
    network?: string;
  };
  credentials?: Record<string, SecretRef>;
  password?: SecretRef;
  /** mode defaults to "compliance". */
  immutability?: { mode?: "governance" | "compliance"; days: number };
}

/** Hooks as written: the timeout in seconds. */
export interface WrittenHooks {
  before?: string;
  after?: string;
  timeoutSeconds?: number;
  env?: string[];
}

/**
 * Sources as written: `excludes` may be left out; a name defaults to the database (postgres), the file name
 * without its extensions (sqlite, command); a command may be one shell command; timeouts are in seconds.
 */
export type WrittenSource =
  | { type: "files"; paths: string[]; excludes?: string[]; hooks?: WrittenHooks }
  | { type: "sqlite"; name?: string; path: string; timeoutSeconds?: number; hooks?: WrittenHooks }
  | {
      type: "postgres";
      name?: string;
      database?: string;
      all?: boolean;
      host?: string;
      port?: number;
      user?: string;
      password?: SecretRef;
      /** Default "custom". */
      format?: PostgresFormat;
      /** Default 1. */
      jobs?: number;
      /** Default true. */
      globals?: boolean;
      timeoutSeconds?: number;
      hooks?: WrittenHooks;
    }
  | {
      type: "command";
      name?: string;
      command: string | string[];
      filename: string;
      env?: string[];
      timeoutSeconds?: number;
      hooks?: WrittenHooks;
    };

export interface WrittenDrillQuery {
  sql: string;
  expect: string;
}

/** Validators as written: a command may be one shell command; timeouts are in seconds; names default. */
export type WrittenDrillValidator =
  | {
      type: "paths";
      name?: string;
      expect: { path: string; minSize?: number; minFiles?: number }[];
    }
  | { type: "sqlite"; name?: string; path: string; queries?: WrittenDrillQuery[] }
  | {
      type: "postgres";
      name?: string;
      source: string;
      database?: string;
      queries?: WrittenDrillQuery[];
      timeoutSeconds?: number;
    }
  | { type: "command"; name?: string; command: string | string[]; timeoutSeconds?: number };

export interface WrittenDataset {
  sources: WrittenSource[];
  drill?: { validators?: WrittenDrillValidator[]; spotCheck?: number };
  hooks?: WrittenHooks;
  site?: string;
  network?: string;
}

/** Custom rule counts; every field defaults to 0 / false. */
export interface WrittenRuleCounts {
  copies?: number;
  media?: number;
  offsite?: number;
  immutableOrIsolated?: number;
  isolatedNetworks?: number;
  sites?: number;
  zeroErrors?: boolean;
  disasterRecovery?: boolean;
}

/** The `forget --keep-*` options, camel-cased. */
export interface WrittenRetention {
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  keepYearly?: number;
  keepWithin?: string;
  keepWithinHourly?: string;
  keepWithinDaily?: string;
  keepWithinWeekly?: string;
  keepWithinMonthly?: string;
  keepWithinYearly?: string;
  /** Each entry a comma-separated tag set, as `forget --keep-tag`. */
  keepTags?: string[];
}

export interface WrittenPolicy {
  rule: RulePreset | WrittenRuleCounts;
  /** Default true. */
  productionCounts?: boolean;
  rpo: string;
  verification?: { cadence?: string; fullEvery?: string; budget?: string; newPacks?: boolean };
  drills?: { every: string; runbookEvery?: string };
  retention?: Record<string, WrittenRetention>;
  immutabilityDays?: number;
}

export interface WrittenJob {
  dataset: string;
  policy: string;
  primary: string;
  copies?: string[];
  schedule?: string;
  dependsOn?: string[];
}

export interface WrittenConfig {
  version: 1;
  targets: Record<string, WrittenTarget>;
  datasets: Record<string, WrittenDataset>;
  policies: Record<string, WrittenPolicy>;
  jobs: Record<string, WrittenJob>;
  evidence?: { signingKey?: SecretRef };
  runbooks?: Record<string, WrittenRunbook>;
  daemon?: WrittenDaemon;
  alerts?: WrittenAlerts;
}
