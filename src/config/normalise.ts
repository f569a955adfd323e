/**
 * Normalisation: the written config (shapes already checked by the schema) becomes the resolved config the
 * core sees. Defaults are filled in, rule presets expanded into counts, durations parsed, retention options
 * mapped onto `forget`'s policy and checked by the same code `forget` uses. Problems are diagnostics, not
 * exceptions, so one run reports all of them.
 */

import { normaliseAlerts } from "./alerts.js";
import { normaliseDaemon } from "./daemon.js";
import { isTimeZone, parseSchedule } from "./schedule.js";
import { BulwarkError, findBulwarkError } from "../core/errors.js";
import { diagnosticsFor, type Diagnostic, type Locate } from "./diagnostic.js";
import { parseBudget, type Budget } from "./budget.js";
import { parseFixedDuration } from "./duration.js";
import { isEmptyKeepRules, type KeepRules } from "./keep-rules.js";
import { presetCounts } from "./rule-presets.js";
import { normaliseRunbooks } from "./runbooks.js";
import type {
  BulwarkConfig,
  Dataset,
  DrillConfig,
  DrillValidator,
  HookConfig,
  Job,
  Policy,
  PolicyVerification,
  RuleCounts,
  Source,
  Target,
} from "./types.js";
import type {
  WrittenConfig,
  WrittenDataset,
  WrittenHooks,
  WrittenRetention,
  WrittenSource,
} from "./written.js";

/** A drill's command validator is killed after this long unless the config says otherwise. */
const DEFAULT_VALIDATOR_TIMEOUT_S = 300;
/** Live files a drill compares with the snapshot unless the config says otherwise. */
const DEFAULT_SPOT_CHECK = 20;

export function normalise(
  written: WrittenConfig,
  ctx: { file: string; locate: Locate },
): { config: BulwarkConfig; diagnostics: Diagnostic[] } {
  const { error, warning } = diagnosticsFor(ctx.file, ctx.locate);
  const diagnostics: Diagnostic[] = [];

  const duration = (path: Array<string | number>, text: string): number => {
    const r = parseFixedDuration(text);
    if ("error" in r) {
      diagnostics.push(
        error(
          path,
          `invalid duration ${JSON.stringify(text)}: ${r.error}`,
          'write it like "30m", "24h", "1d12h" or "2w"',
        ),
      );
      return 0;
    }
    if (r.ms === 0)
      diagnostics.push(error(path, "the duration is zero", "give a positive duration such as 24h"));
    return r.ms;
  };
  const verificationOf = (
    v: NonNullable<WrittenConfig["policies"][string]["verification"]>,
    at: Array<string | number>,
  ): PolicyVerification => {
    let budget: Budget | undefined;
    if (v.budget !== undefined) {
      const b = parseBudget(v.budget);
      if ("error" in b)
        diagnostics.push(error([...at, "budget"], b.error, "write a size (2GiB) or a duration (20m)"));
      else budget = b;
    }
    return {
      ...(v.cadence !== undefined
        ? { cadence: v.cadence, cadenceMs: duration([...at, "cadence"], v.cadence) }
        : {}),
      ...(v.fullEvery !== undefined
        ? { fullEvery: v.fullEvery, fullEveryMs: duration([...at, "fullEvery"], v.fullEvery) }
        : {}),
      ...(budget !== undefined ? { budget } : {}),
      newPacks: v.newPacks ?? true,
    };
  };

  const drillConfigOf = (d: WrittenDataset, at: Array<string | number>): DrillConfig => {
    const validators = (d.drill?.validators ?? []).map((v, i): DrillValidator => {
      const path = [...at, "validators", i];
      const absolute = (p: string, field: Array<string | number>): void => {
        if (!p.startsWith("/"))
          diagnostics.push(
            error(
              [...path, ...field],
              `${JSON.stringify(p)} is not a snapshot path`,
              "snapshot paths start with /",
            ),
          );
      };
      switch (v.type) {
        case "paths":
          v.expect.forEach((e, j) => absolute(e.path, ["expect", j, "path"]));
          return { type: "paths", name: v.name ?? `paths (${v.expect.length})`, expect: v.expect };
        case "sqlite":
          absolute(v.path, ["path"]);
          return {
            type: "sqlite",
            name: v.name ?? `sqlite ${v.path}`,
            path: v.path,
            queries: v.queries ?? [],
          };
        case "postgres": {
          const source = d.sources
            .map(normaliseSource)
            .find((s) => s.type !== "files" && s.name === v.source);
          if (source?.type !== "postgres") {
            const names = d.sources
              .map(normaliseSource)
              .filter((s) => s.type === "postgres")
              .map((s) => (s.type === "postgres" ? s.name : ""));
            diagnostics.push(
              error(
                [...path, "source"],
                `the dataset has no postgres source named ${JSON.stringify(v.source)}`,
                names.length > 0 ? `its postgres sources are ${names.join(", ")}` : "add a postgres source",
              ),
            );
          } else if (source.all && v.database === undefined) {
            diagnostics.push(
              error(
                [...path, "database"],
                `the source ${v.source} dumps every database: name the one to restore`,
                "add database: NAME",
              ),
            );
          }
          return {
            type: "postgres",
            name: v.name ?? `postgres ${v.source}${v.database !== undefined ? `/${v.database}` : ""}`,
            source: v.source,
            ...(v.database !== undefined ? { database: v.database } : {}),
            queries: v.queries ?? [],
            ...(v.timeoutSeconds !== undefined ? { timeoutMs: Math.round(v.timeoutSeconds * 1000) } : {}),
          };
        }
        case "command": {
          const command = typeof v.command === "string" ? ["sh", "-c", v.command] : v.command;
          return {
            type: "command",
            name: v.name ?? `command ${typeof v.command === "string" ? v.command : v.command.join(" ")}`,
            command,
            timeoutMs: Math.round((v.timeoutSeconds ?? DEFAULT_VALIDATOR_TIMEOUT_S) * 1000),
          };
        }
      }
    });
    return { validators, spotCheck: d.drill?.spotCheck ?? DEFAULT_SPOT_CHECK };
  };

  const targets: Record<string, Target> = {};
  for (const [name, t] of Object.entries(written.targets)) {
    targets[name] = {
      name,
      location: t.location,
      labels: {
        medium: t.labels.medium,
        site: t.labels.site,
        offsite: t.labels.offsite ?? false,
        failureDomain: t.labels.failureDomain,
        isolation: t.labels.isolation ?? "none",
        network: t.labels.network ?? t.labels.site,
      },
      credentials: t.credentials ?? {},
      ...(t.password ? { password: t.password } : {}),
      ...(t.immutability
        ? { immutability: { mode: t.immutability.mode ?? "compliance", days: t.immutability.days } }
        : {}),
    };
  }

  const datasets: Record<string, Dataset> = {};
  for (const [name, d] of Object.entries(written.datasets)) {
    const hooks = d.hooks ? hookConfig(d.hooks) : undefined;
    datasets[name] = {
      name,
      sources: d.sources.map((s, i) => {
        const source = normaliseSource(s);
        if (source.type === "postgres" && source.all && source.name === "") {
          diagnostics.push(
            error(
              ["datasets", name, "sources", i],
              "a postgres source with all: true needs a name",
              "add name: NAME (its dumps are stored under /sources/NAME/)",
            ),
          );
        }
        return source;
      }),
      ...(d.drill ? { drill: drillConfigOf(d, ["datasets", name, "drill"]) } : {}),
      ...(hooks ? { hooks } : {}),
      ...(d.site !== undefined ? { site: d.site } : {}),
      ...(d.network !== undefined ? { network: d.network } : {}),
    };
  }

  const policies: Record<string, Policy> = {};
  for (const [name, p] of Object.entries(written.policies)) {
    const at = ["policies", name];
    let counts: RuleCounts;
    if (typeof p.rule === "string") {
      counts = presetCounts(p.rule);
    } else {
      counts = {
        copies: p.rule.copies ?? 0,
        media: p.rule.media ?? 0,
        offsite: p.rule.offsite ?? 0,
        immutableOrIsolated: p.rule.immutableOrIsolated ?? 0,
        isolatedNetworks: p.rule.isolatedNetworks ?? 0,
        sites: p.rule.sites ?? 0,
        zeroErrors: p.rule.zeroErrors ?? false,
        disasterRecovery: p.rule.disasterRecovery ?? false,
      };
      if (counts.copies === 0) {
        diagnostics.push(
          warning(
            [...at, "rule"],
            "the rule asks for no copies",
            "set rule.copies, or use a preset such as 3-2-1-1-0",
          ),
        );
      }
    }
    const keepRules: Record<string, KeepRules> = {};
    for (const [target, r] of Object.entries(p.retention ?? {})) {
      const policy = keepRulesOf(r);
      const path = [...at, "retention", target];
      try {
        if (isEmptyKeepRules(policy)) {
          diagnostics.push(
            error(
              path,
              "the retention keeps nothing",
              "give at least one keep option (e.g. keepDaily: 7) or remove it",
            ),
          );
        }
      } catch (err) {
        if (!(err instanceof BulwarkError)) throw err;
        // forget's messages name its own fields (within); the file says keepWithin.
        const message = err.message.replace(
          /^(invalid retention count for )?(last|hourly|daily|weekly|monthly|yearly|within\w*)\b/,
          (_m: string, prefix: string | undefined, f: string) =>
            `${prefix ?? ""}keep${f[0]?.toUpperCase() ?? ""}${f.slice(1)}`,
        );
        diagnostics.push(error(path, message, "fix the keep option as `bulwark forget --help` describes it"));
      }
      keepRules[target] = policy;
    }
    policies[name] = {
      name,
      ...(typeof p.rule === "string" ? { preset: p.rule } : {}),
      counts,
      productionCounts: p.productionCounts ?? true,
      rpo: p.rpo,
      rpoMs: duration([...at, "rpo"], p.rpo),
      ...(p.verification ? { verification: verificationOf(p.verification, [...at, "verification"]) } : {}),
      ...(p.drills
        ? {
            drills: {
              every: p.drills.every,
              everyMs: duration([...at, "drills", "every"], p.drills.every),
              ...(p.drills.runbookEvery !== undefined
                ? {
                    runbookEvery: p.drills.runbookEvery,
                    runbookEveryMs: duration([...at, "drills", "runbookEvery"], p.drills.runbookEvery),
                  }
                : {}),
            },
          }
        : {}),
      keepRules,
      ...(p.immutabilityDays !== undefined ? { immutabilityDays: p.immutabilityDays } : {}),
    };
  }

  const jobs: Record<string, Job> = {};
  for (const [name, j] of Object.entries(written.jobs)) {
    jobs[name] = {
      name,
      dataset: j.dataset,
      policy: j.policy,
      primary: j.primary,
      copies: j.copies ?? [],
      ...(j.schedule !== undefined ? { schedule: j.schedule } : {}),
      dependsOn: j.dependsOn ?? [],
    };
  }

  const evidence =
    written.evidence?.signingKey !== undefined
      ? { evidence: { signingKey: written.evidence.signingKey } }
      : {};
  const runbooks = normaliseRunbooks(written.runbooks, duration);
  const daemon = normaliseDaemon(written.daemon, duration, error, (d) => diagnostics.push(d));
  const alerts = normaliseAlerts(written.alerts, Object.keys(written.jobs), duration, error, (d) =>
    diagnostics.push(d),
  );
  for (const [name, j] of Object.entries(written.jobs)) {
    if (j.schedule === undefined) continue;
    try {
      // The time zone was checked with the daemon section: a bad one is reported there, once.
      parseSchedule(
        j.schedule,
        daemon.timezone !== undefined && isTimeZone(daemon.timezone) ? daemon.timezone : undefined,
      );
    } catch (err) {
      const e = findBulwarkError(err);
      diagnostics.push(error(["jobs", name, "schedule"], e?.message ?? String(err), e?.hint ?? ""));
    }
  }
  return {
    config: { version: 1, targets, datasets, policies, jobs, ...evidence, runbooks, daemon, alerts },
    diagnostics,
  };
}

/** A source with its defaults: name, format, jobs, globals; seconds as milliseconds; a shell command as argv. */
function normaliseSource(s: WrittenSource): Source {
  const hooks = s.hooks ? { hooks: hookConfig(s.hooks) } : {};
  if (s.type === "files") return { type: "files", paths: s.paths, excludes: s.excludes ?? [], ...hooks };
  const timeout = s.timeoutSeconds !== undefined ? { timeoutMs: Math.round(s.timeoutSeconds * 1000) } : {};
  switch (s.type) {
    case "sqlite":
      return { type: "sqlite", name: s.name ?? stem(s.path), path: s.path, ...timeout, ...hooks };
    case "command":
      return {
        type: "command",
        name: s.name ?? stem(s.filename),
        command: typeof s.command === "string" ? ["sh", "-c", s.command] : s.command,
        filename: s.filename,
        ...(s.env !== undefined ? { env: s.env } : {}),
        ...timeout,
        ...hooks,
      };
    case "postgres":
      return {
        type: "postgres",
        // "" with neither a name nor a database: all without a name is reported by the caller, no database
        // at all by the rules.
        name: s.name ?? s.database ?? "",
        ...(s.database !== undefined ? { database: s.database } : {}),
        all: s.all ?? false,
        ...(s.host !== undefined ? { host: s.host } : {}),
        ...(s.port !== undefined ? { port: s.port } : {}),
        ...(s.user !== undefined ? { user: s.user } : {}),
        ...(s.password !== undefined ? { password: s.password } : {}),
        format: s.format ?? "custom",
        jobs: s.jobs ?? 1,
        globals: s.globals ?? true,
        ...timeout,
        ...hooks,
      };
  }
}

function hookConfig(h: WrittenHooks): HookConfig {
  return {
    ...(h.before !== undefined ? { before: h.before } : {}),
    ...(h.after !== undefined ? { after: h.after } : {}),
    ...(h.timeoutSeconds !== undefined ? { timeoutMs: Math.round(h.timeoutSeconds * 1000) } : {}),
    ...(h.env !== undefined ? { env: h.env } : {}),
  };
}

/** A file's name without its directory and extensions: /var/lib/app/app.db -> app. */
function stem(path: string): string {
  const base = path.replace(/\/+$/, "").split("/").pop() ?? "";
  const dot = base.indexOf(".", 1);
  return dot > 0 ? base.slice(0, dot) : base;
}

function keepRulesOf(r: WrittenRetention): KeepRules {
  const p: KeepRules = {};
  if (r.keepLast !== undefined) p.last = r.keepLast;
  if (r.keepHourly !== undefined) p.hourly = r.keepHourly;
  if (r.keepDaily !== undefined) p.daily = r.keepDaily;
  if (r.keepWeekly !== undefined) p.weekly = r.keepWeekly;
  if (r.keepMonthly !== undefined) p.monthly = r.keepMonthly;
  if (r.keepYearly !== undefined) p.yearly = r.keepYearly;
  if (r.keepWithin !== undefined) p.within = r.keepWithin;
  if (r.keepWithinHourly !== undefined) p.withinHourly = r.keepWithinHourly;
  if (r.keepWithinDaily !== undefined) p.withinDaily = r.keepWithinDaily;
  if (r.keepWithinWeekly !== undefined) p.withinWeekly = r.keepWithinWeekly;
  if (r.keepWithinMonthly !== undefined) p.withinMonthly = r.keepWithinMonthly;
  if (r.keepWithinYearly !== undefined) p.withinYearly = r.keepWithinYearly;
  if (r.keepTags !== undefined)
    p.keepTags = r.keepTags.map((t) => (t === "" ? [""] : t.split(",").map((x) => x.trim())));
  return p;
}
