/**
 * Cross-field rules: what the schema cannot see field by field. Run on a config that passed the schema and
 * was normalised; return diagnostics (errors stop the config from being used, warnings do not).
 *
 * Errors: references to unknown targets, datasets, policies or jobs; a job copying to its own primary or to
 * one target twice; a cycle in `dependsOn`; two targets on one location; a password in a location; a secret
 * reference that does not resolve (environment variable unset, file unreadable); retention for an unknown target;
 * a source name that is no file name or is used twice in a dataset; a postgres source with both or neither of
 * database and all; parallel jobs without the directory format.
 * Warnings: a dataset no job protects; an immutable target without an immutability period.
 *
 * Rules that need a layer above config come in through `rules` ({@link ConfigRule}) and run after these,
 * with the same locator: src/policy/config-rules.ts warns when a job's targets can never meet its policy
 * (the posture evaluated on ideal evidence), and src/ops/config.ts loads every config with it.
 */

import { isSafeName } from "../snapshot/tree.js";
import {
  diagnosticsFor,
  type DiagnosticMakers,
  type Diagnostic,
  type Locate,
  type MakeDiagnostic,
} from "./diagnostic.js";
import { runbookDiagnostics } from "./runbooks.js";
import { unresolvedSecret, urlPassword, type SecretEnvironment } from "./secrets.js";
import { describeSecretRef, type BulwarkConfig, type SecretRef } from "./types.js";

/**
 * A cross-field rule written in a layer above config (policy), so config need not import it. It sees the
 * normalised config (also when other rules found errors) and makes its diagnostics with `make`, which
 * positions them in the file.
 */
export type ConfigRule = (config: BulwarkConfig, make: DiagnosticMakers) => Diagnostic[];

/** What resolving a config needs besides its text: the secret environment and the extra rules. */
export interface ResolveOptions extends SecretEnvironment {
  /** Run after the built-in rules, in order. */
  rules?: readonly ConfigRule[];
}

export interface RuleContext extends ResolveOptions {
  file: string;
  locate: Locate;
}

export function checkConfig(config: BulwarkConfig, ctx: RuleContext): Diagnostic[] {
  const make = diagnosticsFor(ctx.file, ctx.locate);
  const { error, warning } = make;
  const out: Diagnostic[] = [];

  const unknown = (kind: string, section: string, name: string, known: string[]): [string, string] => {
    const near = closest(name, known);
    return [
      `unknown ${kind} ${JSON.stringify(name)}`,
      near !== undefined
        ? `did you mean ${JSON.stringify(near)}?`
        : known.length > 0
          ? `use one of ${known.map((k) => JSON.stringify(k)).join(", ")}, or define it under ${section}`
          : `define it under ${section}`,
    ];
  };
  const targetNames = Object.keys(config.targets);
  const datasetNames = Object.keys(config.datasets);
  const policyNames = Object.keys(config.policies);
  const jobNames = Object.keys(config.jobs);

  // targets
  const byLocation = new Map<string, string>();
  for (const [name, t] of Object.entries(config.targets)) {
    const at = ["targets", name];
    if (urlPassword(t.location)) {
      out.push(
        error(
          [...at, "location"],
          "the location contains a password",
          "remove it from the URL and give it as a reference under credentials (e.g. password: { env: NAME })",
        ),
      );
    }
    const key = normaliseLocation(t.location);
    const first = byLocation.get(key);
    if (first !== undefined) {
      out.push(
        error(
          [...at, "location"],
          `target ${first} has the same location ${JSON.stringify(t.location)}; two targets on one repository are one copy`,
          `give target ${name} its own location or remove it`,
        ),
      );
    } else {
      byLocation.set(key, name);
    }
    const refs: Array<[Array<string | number>, SecretRef]> = Object.entries(t.credentials).map(([k, ref]) => [
      [...at, "credentials", k],
      ref,
    ]);
    if (t.password) refs.push([[...at, "password"], t.password]);
    for (const [path, ref] of refs) out.push(...secretDiagnostics(path, ref, ctx, error));
    if (t.labels.isolation === "immutable" && t.immutability === undefined) {
      out.push(
        warning(
          [...at, "labels", "isolation"],
          "the target is labelled immutable but has no immutability period, so Bulwark will not lock what it writes",
          "add immutability: { mode: compliance, days: N } (or rely on the bucket's default retention, which posture reads back)",
        ),
      );
    }
  }

  // evidence: a warning, not an error; an unreadable signing key must not stop backups, only `report --sign`
  if (config.evidence?.signingKey !== undefined) {
    out.push(...secretDiagnostics(["evidence", "signingKey"], config.evidence.signingKey, ctx, warning));
  }

  // datasets
  for (const [name, d] of Object.entries(config.datasets)) {
    const sourceNames = new Map<string, number>();
    d.sources.forEach((s, i) => {
      const at = ["datasets", name, "sources", i];
      if (s.type === "postgres" && s.password) {
        out.push(...secretDiagnostics([...at, "password"], s.password, ctx, error));
      }
      if (s.type === "files") return;
      // The name is a file name under /sources: one component, and not hidden.
      if (s.name !== "" && (!isSafeName(s.name) || s.name.startsWith("."))) {
        out.push(
          error(
            [...at, "name"],
            `the source name ${JSON.stringify(s.name)} cannot be a file name under /sources`,
            "use letters, digits, - and _ (no /, not starting with a dot)",
          ),
        );
      }
      // sqlite stores NAME.sqlite: compare the names the snapshot will hold.
      const place = s.type === "sqlite" ? `${s.name}.sqlite` : s.name;
      const first = sourceNames.get(place);
      if (first !== undefined && s.name !== "") {
        out.push(
          error(
            [...at, "name"],
            `source ${i} has the same name as source ${first} (${JSON.stringify(s.name)}); each is stored under /sources/NAME`,
            "give each source its own name: add or change name:",
          ),
        );
      } else {
        sourceNames.set(place, i);
      }
      if (s.type === "command" && (!isSafeName(s.filename) || s.filename.startsWith("."))) {
        out.push(
          error(
            [...at, "filename"],
            `the filename ${JSON.stringify(s.filename)} cannot be a file name`,
            "give a plain file name such as dump.sql (no /, not starting with a dot)",
          ),
        );
      }
      if (s.type === "postgres") {
        if (s.all && s.database !== undefined) {
          out.push(
            error(
              [...at, "all"],
              "the source names a database and asks for all of them",
              "remove database: to dump every database, or all: to dump one",
            ),
          );
        } else if (!s.all && s.database === undefined) {
          out.push(
            error(
              at,
              "the postgres source names no database",
              "add database: NAME, or all: true for every one",
            ),
          );
        }
        if (s.jobs > 1 && s.format !== "directory") {
          out.push(
            error(
              [...at, "jobs"],
              `jobs: ${s.jobs} needs format: directory (pg_dump writes in parallel only in the directory format)`,
              "add format: directory, or remove jobs",
            ),
          );
        }
      }
    });
    if (!Object.values(config.jobs).some((j) => j.dataset === name)) {
      out.push(
        warning(
          ["datasets", name],
          "no job protects this dataset",
          "add a job with dataset: " + name + " or remove it",
        ),
      );
    }
  }

  // policies
  for (const [name, p] of Object.entries(config.policies)) {
    for (const target of Object.keys(p.keepRules)) {
      if (config.targets[target] === undefined) {
        const [msg, fix] = unknown("target", "targets", target, targetNames);
        out.push(error(["policies", name, "retention", target], `retention for an ${msg}`, fix));
      }
    }
  }

  // jobs
  for (const [name, j] of Object.entries(config.jobs)) {
    const at = ["jobs", name];
    const ref = (
      field: string | number,
      kind: string,
      section: string,
      value: string,
      known: string[],
      extra: Array<string | number> = [],
    ) => {
      if (!known.includes(value)) {
        const [msg, fix] = unknown(kind, section, value, known);
        out.push(error([...at, field, ...extra], msg, fix));
      }
    };
    ref("dataset", "dataset", "datasets", j.dataset, datasetNames);
    ref("policy", "policy", "policies", j.policy, policyNames);
    ref("primary", "target", "targets", j.primary, targetNames);
    const seen = new Set<string>();
    j.copies.forEach((c, i) => {
      ref("copies", "target", "targets", c, targetNames, [i]);
      if (c === j.primary) {
        out.push(
          error(
            [...at, "copies", i],
            `copy target ${c} is the job's primary: a job cannot copy a snapshot onto the repository it came from`,
            "remove it from copies or choose another primary",
          ),
        );
      } else if (seen.has(c)) {
        out.push(
          error([...at, "copies", i], `copy target ${c} is listed twice`, "list each copy target once"),
        );
      }
      seen.add(c);
    });
    j.dependsOn.forEach((dep, i) => ref("dependsOn", "job", "jobs", dep, jobNames, [i]));
  }

  // dependency cycles, each reported once at the first job of the cycle (in file order)
  const reported = new Set<string>();
  for (const cycle of findCycles(config)) {
    const key = [...cycle].sort().join(" ");
    if (reported.has(key)) continue;
    reported.add(key);
    const first = cycle[0] as string;
    const next = cycle[1] ?? first;
    const job = config.jobs[first];
    const i = job?.dependsOn.indexOf(next) ?? -1;
    out.push(
      error(
        ["jobs", first, "dependsOn", ...(i >= 0 ? [i] : [])],
        `dependency cycle: ${[...cycle, first].join(" -> ")}`,
        "remove one of these dependsOn entries so the jobs can run in order",
      ),
    );
  }
  out.push(...runbookDiagnostics(config, make));
  for (const rule of ctx.rules ?? []) out.push(...rule(config, make));
  return out;
}

/**
 * Whether every name job `name` refers to is defined and no copy is its primary: what the job protects can
 * be judged only then (the errors above say what is wrong otherwise).
 */
export function jobIsComplete(config: BulwarkConfig, name: string): boolean {
  const j = config.jobs[name];
  if (j === undefined) return false;
  const target = (t: string): boolean => config.targets[t] !== undefined;
  return (
    config.datasets[j.dataset] !== undefined &&
    config.policies[j.policy] !== undefined &&
    target(j.primary) &&
    j.copies.every((c) => target(c) && c !== j.primary) &&
    j.dependsOn.every((d) => config.jobs[d] !== undefined)
  );
}

function secretDiagnostics(
  path: Array<string | number>,
  ref: SecretRef,
  env: SecretEnvironment,
  error: MakeDiagnostic,
): Diagnostic[] {
  const why = unresolvedSecret(ref, env);
  if (why === undefined) return [];
  const fix =
    "env" in ref
      ? `export ${ref.env} before running bulwark (or point the reference at a file: { file: PATH })`
      : `create ${ref.file}, readable by the user running bulwark, or fix the path`;
  return [
    error([...path, "env" in ref ? "env" : "file"], `missing secret ${describeSecretRef(ref)}: ${why}`, fix),
  ];
}

/** Every elementary cycle reachable in the dependsOn graph, as job name lists starting at the earliest job. */
function findCycles(config: BulwarkConfig): string[][] {
  const names = Object.keys(config.jobs);
  const order = new Map(names.map((n, i) => [n, i]));
  const cycles: string[][] = [];
  const state = new Map<string, "visiting" | "done">();
  const stack: string[] = [];
  const visit = (n: string): void => {
    state.set(n, "visiting");
    stack.push(n);
    for (const dep of config.jobs[n]?.dependsOn ?? []) {
      if (config.jobs[dep] === undefined) continue;
      const s = state.get(dep);
      if (s === "visiting") {
        const cycle = stack.slice(stack.indexOf(dep));
        // Rotate so the cycle starts at the job written first.
        let min = 0;
        cycle.forEach((c, i) => {
          if ((order.get(c) ?? 0) < (order.get(cycle[min] as string) ?? 0)) min = i;
        });
        cycles.push([...cycle.slice(min), ...cycle.slice(0, min)]);
      } else if (s === undefined) {
        visit(dep);
      }
    }
    stack.pop();
    state.set(n, "done");
  };
  for (const n of names) if (!state.has(n)) visit(n);
  return cycles;
}

function normaliseLocation(location: string): string {
  return location
    .trim()
    .replace(/^local:/, "")
    .replace(/\/+$/, "");
}

/** The known name closest to `name` by edit distance, when close enough to be a typo. */
export function closest(name: string, known: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = editDistance(name.toLowerCase(), k.toLowerCase());
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return bestDistance <= Math.max(1, Math.floor(name.length / 4)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur.push(Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost));
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}
