/**
 * Alerts of `bulwark daemon` (issue 14, docs/design.md §25): the daemon says which conditions hold now (a
 * failed run, an RPO exceeded, a missed schedule, ...), and the Alerter turns that into one notice per
 * condition and channel, and one recovery notice when the condition clears. The senders are ./channels.ts.
 *
 * Deduplication is per condition key and per channel, kept in a JSON state file (written whole, temp file and
 * rename, mode 0600) so a restart does not alert again about what it already said:
 *   1. a condition in `active` that a channel has not been told of (or was told of at a lower severity, or
 *      longer than `repeatAfter` ago) is sent to that channel;
 *   2. a recorded condition missing from `active`, within `scope`, is cleared: each channel that was told of
 *      it gets a recovery notice; the record goes once every such channel has had it;
 *   3. a send that fails leaves the channel's entry as it was, so the next update tries again; after one
 *      failure a channel is not tried again in the same update (a server that is down fails every notice).
 * Failures are logged through `events`, scrubbed of every secret read; nothing here throws for a channel.
 */
import { mkdir, readFile } from "node:fs/promises";
import { hostname as osHostname } from "node:os";
import { dirname } from "node:path";

import type { AlertsConfig } from "../config/types.js";
import { writeFileAtomic } from "../core/atomic-file.js";
import type { Clock } from "../core/clock.js";
import { errnoCode, errorMessage } from "../core/errors.js";
import { emitMessage, type EventLevel, type EventSink } from "../core/events.js";
import { scrub } from "../ops/targets.js";
import {
  channelsOf,
  hitUrl,
  NETWORK_TIMEOUT_MS,
  type Channel,
  type Notice,
  type SendContext,
} from "./channels.js";

export type AlertKind =
  | "run-failed"
  | "rpo"
  | "missed-schedule"
  | "posture"
  | "lock-drift"
  | "damaged-data"
  | "drill-failed";

export type AlertSeverity = "warning" | "critical";

/** Something wrong that holds now. */
export interface AlertCondition {
  /** Stable identity while it lasts: "run-failed:job:app:copy:nas", "rpo:app:nas", "missed:job:app". */
  key: string;
  kind: AlertKind;
  severity: AlertSeverity;
  /** One line a human reads: "copy of app to nas failed: connect ECONNREFUSED". */
  summary: string;
  details?: Record<string, unknown>;
}

export type PingEvent = "start" | "success" | "fail";

export interface AlerterDeps {
  clock: Clock;
  /** Where secret references and the command channels' passed-through variables are read. */
  env: Readonly<Record<string, string | undefined>>;
  /** The dedupe state (JSON); its directory is made when missing. */
  stateFile: string;
  /** Log lines: what was sent, and every failure (scrubbed). */
  events?: EventSink;
  /** Secrets to scrub from every message beyond those the channels read themselves. */
  secrets?: string[];
  /** The `host` of every notice (default the machine's name). */
  hostname?: string;
  /** Each network call is given this long (default NETWORK_TIMEOUT_MS; commands have their own timeout). */
  timeoutMs?: number;
}

/** What `update` sent: condition keys alerted and recovered on at least one channel. */
export interface AlertUpdate {
  fired: string[];
  recovered: string[];
}

export interface ChannelTestResult {
  channel: string;
  ok: boolean;
  error?: string;
}

/** A channel's knowledge of a condition: when it was last told, and at which severity. */
interface Delivery {
  at: string;
  severity: AlertSeverity;
}

interface StoredCondition {
  kind: AlertKind;
  severity: AlertSeverity;
  summary: string;
  details?: Record<string, unknown>;
  since: string;
  /** False once cleared, while some channel still waits for its recovery notice. */
  active: boolean;
  /** By channel id: the channels that were told of the condition (and not yet of its recovery). */
  delivered: Record<string, Delivery>;
}

interface AlertState {
  version: 1;
  conditions: Record<string, StoredCondition>;
}

const RANK: Record<AlertSeverity, number> = { warning: 1, critical: 2 };

/** One notice for one channel, and what its delivery changes in the state. */
interface Pending {
  key: string;
  notice: Notice;
  delivered: () => void;
}

export class Alerter {
  private readonly channels: Channel[];
  private readonly host: string;
  private readonly timeoutMs: number;
  /** Secret values the channels read, kept for scrubbing later messages too. */
  private readonly readSecrets = new Set<string>();
  private state: AlertState | undefined;
  /** Updates run one at a time: they share the state. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly config: AlertsConfig,
    private readonly deps: AlerterDeps,
  ) {
    this.channels = channelsOf(config);
    this.host = deps.hostname ?? osHostname();
    this.timeoutMs = deps.timeoutMs ?? NETWORK_TIMEOUT_MS;
  }

  /** The channels' names, as logs and `test` show them. */
  channelNames(): string[] {
    return this.channels.map((c) => c.name);
  }

  /**
   * The conditions active now. `scope` (prefixes such as ["run-failed:job:app"], matching the key itself or
   * keys that continue with ":"; a prefix ending in ":" matches any continuation) bounds which recorded
   * conditions missing from `active` are cleared; without it every one is. Conditions in `active` count
   * whatever the scope. A recovery that could not be sent earlier is retried whatever the scope.
   */
  update(active: AlertCondition[], scope?: string[]): Promise<AlertUpdate> {
    const next = this.queue.then(() => this.doUpdate(active, scope));
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** Hits the job's ping URL for the event (POST with `body` when given); failures are logged, never thrown. */
  async ping(job: string, event: PingEvent, body?: string): Promise<void> {
    const url = this.config.pings[job]?.[event];
    if (url === undefined) return;
    try {
      await hitUrl(url, body !== undefined ? this.scrub(body) : undefined, this.sendContext());
    } catch (err) {
      this.log("warning", `the ${event} ping of job ${job} failed: ${errorMessage(err)}`);
    }
  }

  /** `bulwark alert test`: one test notice on every channel; per channel ok or the (scrubbed) error. */
  async test(): Promise<ChannelTestResult[]> {
    const now = this.deps.clock.now().toISOString();
    const notice: Notice = {
      type: "test",
      key: "test",
      kind: "test",
      severity: "warning",
      summary: `test notification from bulwark on ${this.host}`,
      details: {},
      time: now,
      host: this.host,
    };
    return Promise.all(
      this.channels.map(async (c): Promise<ChannelTestResult> => {
        try {
          await c.send(notice, this.sendContext());
          this.log("info", `alert test: ${c.name} ok`);
          return { channel: c.name, ok: true };
        } catch (err) {
          const error = this.scrub(errorMessage(err));
          this.log("warning", `alert test: ${c.name} failed: ${error}`);
          return { channel: c.name, ok: false, error };
        }
      }),
    );
  }

  private async doUpdate(active: AlertCondition[], scope: string[] | undefined): Promise<AlertUpdate> {
    const state = await this.load();
    const now = this.deps.clock.now();
    const nowIso = now.toISOString();
    const configured = new Set(this.channels.map((c) => c.id));
    const pending = new Map<string, Pending[]>(this.channels.map((c) => [c.id, []]));
    const fired = new Set<string>();
    const recovered = new Set<string>();
    const current = new Map(active.map((c) => [c.key, c]));

    for (const c of current.values()) {
      const rec: StoredCondition = state.conditions[c.key] ?? {
        kind: c.kind,
        severity: c.severity,
        summary: c.summary,
        since: nowIso,
        active: true,
        delivered: {},
      };
      state.conditions[c.key] = rec;
      // Back before every recovery went out: the channels still holding the alert need nothing new.
      rec.active = true;
      rec.kind = c.kind;
      rec.severity = c.severity;
      // The daemon's messages should be scrubbed already; a notice leaves the host, so once more.
      rec.summary = this.redact(c.summary);
      if (c.details !== undefined) rec.details = this.redact(c.details);
      else delete rec.details;
      forgetChannels(rec, configured);
      const notice = this.notice("alert", c.key, rec, nowIso);
      for (const channel of this.channels) {
        const d = rec.delivered[channel.id];
        const due =
          d === undefined ||
          RANK[c.severity] > RANK[d.severity] ||
          (this.config.repeatAfterMs !== undefined &&
            now.getTime() - Date.parse(d.at) >= this.config.repeatAfterMs);
        if (!due) continue;
        pending.get(channel.id)!.push({
          key: c.key,
          notice,
          delivered: () => {
            rec.delivered[channel.id] = { at: nowIso, severity: c.severity };
            fired.add(c.key);
          },
        });
      }
    }

    for (const [key, rec] of Object.entries(state.conditions)) {
      if (current.has(key) || (rec.active && !inScope(key, scope))) continue;
      forgetChannels(rec, configured);
      if (rec.active && Object.keys(rec.delivered).length === 0 && this.channels.length > 0)
        this.log("info", `alert ${key} cleared before any channel was told of it`);
      rec.active = false;
      const notice = this.notice("recovery", key, rec, nowIso);
      for (const id of Object.keys(rec.delivered)) {
        pending.get(id)!.push({
          key,
          notice,
          delivered: () => {
            delete rec.delivered[id];
            recovered.add(key);
          },
        });
      }
    }

    await Promise.all(this.channels.map((c) => this.deliver(c, pending.get(c.id)!)));

    for (const [key, rec] of Object.entries(state.conditions)) {
      if (rec.active || Object.keys(rec.delivered).length > 0) continue;
      delete state.conditions[key];
    }
    for (const key of fired) this.log("info", `alert ${key}: ${state.conditions[key]?.summary ?? ""}`);
    for (const key of recovered) this.log("info", `alert ${key} recovered`);
    await this.save(state);
    return { fired: [...fired], recovered: [...recovered] };
  }

  /** Sends a channel's notices in order; stops at the first failure, leaving the rest for the next update. */
  private async deliver(channel: Channel, pending: Pending[]): Promise<void> {
    for (let i = 0; i < pending.length; i++) {
      const item = pending[i]!;
      try {
        await channel.send(item.notice, this.sendContext());
        item.delivered();
      } catch (err) {
        const left = pending.length - i;
        this.log(
          "warning",
          `alert channel ${channel.name} failed (${item.notice.type} ${item.key}): ${errorMessage(err)}; ` +
            `${left === 1 ? "it" : `${left} notices`} will be retried at the next update`,
        );
        return;
      }
    }
  }

  private notice(type: "alert" | "recovery", key: string, rec: StoredCondition, time: string): Notice {
    return {
      type,
      key,
      kind: rec.kind,
      severity: rec.severity,
      summary: rec.summary,
      details: rec.details ?? {},
      time,
      host: this.host,
      since: rec.since,
    };
  }

  private sendContext(): SendContext {
    return { env: this.deps.env, secrets: this.readSecrets, timeoutMs: this.timeoutMs };
  }

  private scrub(message: string): string {
    return scrub(message, [...(this.deps.secrets ?? []), ...this.readSecrets]);
  }

  /** The given secrets replaced by *** in every string of a value (no URL redaction: a summary is prose). */
  private redact<T>(value: T): T {
    const secrets = (this.deps.secrets ?? []).filter((x) => x.length >= 4);
    if (secrets.length === 0) return value;
    const walk = (v: unknown): unknown => {
      if (typeof v === "string") return secrets.reduce((t, x) => t.split(x).join("***"), v);
      if (Array.isArray(v)) return v.map(walk);
      if (v !== null && typeof v === "object")
        return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
      return v;
    };
    return walk(value) as T;
  }

  private log(level: EventLevel, message: string): void {
    emitMessage(this.deps.events, this.deps.clock.now(), level, this.scrub(message));
  }

  private async load(): Promise<AlertState> {
    if (this.state !== undefined) return this.state;
    let text: string | undefined;
    try {
      text = await readFile(this.deps.stateFile, "utf8");
    } catch (err) {
      if (errnoCode(err) !== "ENOENT") {
        this.log("warning", `cannot read the alert state ${this.deps.stateFile}: ${errorMessage(err)}`);
      }
    }
    this.state = text === undefined ? emptyState() : this.parse(text);
    return this.state;
  }

  private parse(text: string): AlertState {
    try {
      const v = JSON.parse(text) as Partial<AlertState>;
      if (v.version === 1 && v.conditions !== null && typeof v.conditions === "object") {
        return { version: 1, conditions: v.conditions };
      }
    } catch {
      // reported below
    }
    this.log(
      "warning",
      `the alert state ${this.deps.stateFile} is not readable JSON: starting afresh (conditions that hold alert again)`,
    );
    return emptyState();
  }

  /** Whole or not at all: a crash mid-write must not lose the record of what was sent. */
  private async save(state: AlertState): Promise<void> {
    const file = this.deps.stateFile;
    try {
      await mkdir(dirname(file), { recursive: true, mode: 0o700 });
      await writeFileAtomic(file, JSON.stringify(state, null, 2) + "\n");
    } catch (err) {
      // The notices went out; only a restart before the next good write would repeat them.
      this.log("error", `cannot write the alert state ${file}: ${errorMessage(err)}`);
    }
  }
}

/** Whether a key is within a scope (see `Alerter.update`). */
export function inScope(key: string, scope: readonly string[] | undefined): boolean {
  if (scope === undefined) return true;
  return scope.some((p) => key === p || key.startsWith(p.endsWith(":") ? p : `${p}:`));
}

function emptyState(): AlertState {
  return { version: 1, conditions: {} };
}

/** Drops the deliveries to channels no longer configured: they will never be told of the recovery. */
function forgetChannels(rec: StoredCondition, configured: ReadonlySet<string>): void {
  for (const id of Object.keys(rec.delivered)) if (!configured.has(id)) delete rec.delivered[id];
}
