/**
 * DR runbooks in the config (`runbooks:`, docs/config.md "Runbooks", docs/design.md §24): the written shape
 * (a zod schema the config schema embeds), its normalisation (defaults, seconds as milliseconds, a command
 * written as one string as `sh -c`) and the rules that span fields: unknown services, datasets and sources, a
 * cycle in `dependsOn`, a dataset no job copies anywhere (nothing to restore from), a source restored to a
 * place of the wrong kind, and one TCP port claimed by two services.
 *
 * The written type is the schema's output (`WrittenRunbook`), so the two cannot drift apart.
 */
import { createHash } from "node:crypto";

import { z } from "zod";

import type { DiagnosticMakers, Diagnostic } from "./diagnostic.js";
import type {
  BulwarkConfig,
  CommandSpec,
  HealthCheck,
  Runbook,
  RunbookService,
  RunbookStep,
  ServiceRestore,
} from "./types.js";

const name = z.string().min(1);
const secretRef = z.union([
  z.strictObject({ env: z.string().min(1) }),
  z.strictObject({ file: z.string().min(1) }),
]);
const seconds = z.number().positive();
const envNames = z
  .array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "a variable name (letters, digits, _)"))
  .describe("variables passed through by name (the command gets only PATH, HOME, locale and these)");

const commandLine = z
  .union([name, z.array(z.string()).min(1)])
  .describe("a program and its arguments, or one shell command");
const commandFields = {
  command: commandLine,
  env: envNames.optional(),
  setEnv: z.record(z.string(), z.string()).optional().describe("variables set to these values (no secrets)"),
  cwd: name.optional().describe("working directory"),
};
const commandSpec = z.union([commandLine, z.strictObject(commandFields)]);

const checkCommon = {
  name: name.optional().describe("how reports name it (default: its type and subject)"),
  timeoutSeconds: seconds.optional().describe("each attempt is given this long (default 10)"),
  retries: z.number().int().min(0).optional().describe("attempts after the first (default 30)"),
  intervalSeconds: seconds.optional().describe("between attempts (default 1)"),
};
const healthSchema = z.discriminatedUnion("type", [
  z.strictObject({
    type: z.literal("tcp"),
    ...checkCommon,
    port: z.number().int().min(1).max(65535),
    host: name.optional().describe("default 127.0.0.1"),
  }),
  z.strictObject({
    type: z.literal("http"),
    ...checkCommon,
    url: name.describe("http://127.0.0.1:8080/health"),
    status: z.number().int().min(100).max(599).optional().describe("expected status (default 200)"),
    body: z.string().optional().describe("a text the body must contain"),
  }),
  z.strictObject({ type: z.literal("command"), ...checkCommon, ...commandFields }),
  z.strictObject({
    type: z.literal("sql"),
    ...checkCommon,
    postgres: name.optional().describe("a connection URL without a password: postgres://user@host:port/db"),
    password: secretRef.optional(),
    sqlite: name.optional().describe("a SQLite file"),
    query: name,
    expect: z.string().describe("the exact output (rows on lines, columns joined by |)"),
  }),
]);

const stepCommon = {
  name: name.optional(),
  critical: z.boolean().optional().describe("a failure stops the runbook (default true)"),
  timeoutSeconds: seconds.optional().describe("default 300"),
  retries: z.number().int().min(0).optional().describe("default 0"),
  inDrill: z
    .enum(["run", "skip"])
    .optional()
    .describe("in `dr drill` (default run; approvals and notifications: skip)"),
};
const stepSchema = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("command"), ...stepCommon, ...commandFields }),
  z.strictObject({ type: z.literal("wait"), ...stepCommon, seconds: z.number().min(0) }),
  z.strictObject({ type: z.literal("approval"), ...stepCommon, message: name }),
  z.strictObject({
    type: z.literal("notify"),
    ...stepCommon,
    message: name,
    command: commandSpec.optional().describe("run with the message in BULWARK_DR_MESSAGE"),
  }),
]);

const restoreSchema = z.strictObject({
  dataset: name,
  source: name
    .optional()
    .describe("one source of the dataset by name; without it the dataset's files are restored"),
  to: z.union([
    z.strictObject({ directory: name.describe("restore the snapshot under this directory") }),
    z.strictObject({
      postgres: name.describe("load the dump into this database: postgres://user@host:port/db"),
      password: secretRef.optional(),
    }),
    z.strictObject({ sqlite: name.describe("put the restored database file here") }),
    z.strictObject({ command: commandSpec.describe("the restored file is its standard input") }),
  ]),
});

const controlSchema = z.union([commandSpec, z.strictObject({ systemd: name.describe("a unit name") })]);

const serviceSchema = z.strictObject({
  restore: z.array(restoreSchema).optional(),
  start: controlSchema.optional().describe("how the service is started (a command stays running)"),
  stop: controlSchema.optional(),
  health: z.array(healthSchema).optional(),
  dependsOn: z.array(name).optional().describe("services that must be healthy first"),
  ports: z
    .array(z.number().int().min(1).max(65535))
    .optional()
    .describe("TCP ports it listens on beyond its tcp checks"),
  before: z.array(stepSchema).optional(),
  after: z.array(stepSchema).optional(),
});

export const runbookSchema = z.strictObject({
  rto: z.string().optional().describe("the recovery time objective of the whole runbook: 15m, 1h"),
  services: z.record(name, serviceSchema),
  before: z.array(stepSchema).optional().describe("steps before the first wave"),
  after: z.array(stepSchema).optional().describe("steps after the last wave"),
});

export type WrittenRunbook = z.output<typeof runbookSchema>;
type WrittenService = z.output<typeof serviceSchema>;
type WrittenStep = z.output<typeof stepSchema>;
type WrittenCommand = z.output<typeof commandSpec>;

const DEFAULT_CHECK_TIMEOUT_S = 10;
const DEFAULT_CHECK_RETRIES = 30;
const DEFAULT_CHECK_INTERVAL_S = 1;
const DEFAULT_STEP_TIMEOUT_S = 300;

const ms = (s: number): number => Math.round(s * 1000);
const argv = (c: string | string[]): string[] => (typeof c === "string" ? ["sh", "-c", c] : c);

function commandOf(c: WrittenCommand): CommandSpec {
  if (typeof c === "string" || Array.isArray(c)) return { command: argv(c), passEnv: [], setEnv: {} };
  return {
    command: argv(c.command),
    passEnv: c.env ?? [],
    setEnv: c.setEnv ?? {},
    ...(c.cwd !== undefined ? { cwd: c.cwd } : {}),
  };
}

function stepOf(s: WrittenStep, i: number, where: string): RunbookStep {
  const common = {
    name: s.name ?? `${where} step ${i + 1} (${s.type})`,
    critical: s.critical ?? true,
    timeoutMs: ms(s.timeoutSeconds ?? DEFAULT_STEP_TIMEOUT_S),
    retries: s.retries ?? 0,
    inDrill: s.inDrill ?? (s.type === "approval" || s.type === "notify" ? "skip" : "run"),
  } as const;
  switch (s.type) {
    case "command":
      return { ...common, type: "command", ...commandOf(s) };
    case "wait":
      return { ...common, type: "wait", ms: ms(s.seconds) };
    case "approval":
      return { ...common, type: "approval", message: s.message };
    case "notify":
      return {
        ...common,
        type: "notify",
        message: s.message,
        ...(s.command !== undefined ? { command: commandOf(s.command) } : {}),
      };
  }
}

function checkOf(c: NonNullable<WrittenService["health"]>[number]): HealthCheck {
  const common = {
    timeoutMs: ms(c.timeoutSeconds ?? DEFAULT_CHECK_TIMEOUT_S),
    retries: c.retries ?? DEFAULT_CHECK_RETRIES,
    intervalMs: ms(c.intervalSeconds ?? DEFAULT_CHECK_INTERVAL_S),
  };
  switch (c.type) {
    case "tcp": {
      const host = c.host ?? "127.0.0.1";
      return { ...common, type: "tcp", name: c.name ?? `tcp ${host}:${c.port}`, host, port: c.port };
    }
    case "http":
      return {
        ...common,
        type: "http",
        name: c.name ?? `http ${c.url}`,
        url: c.url,
        status: c.status ?? 200,
        ...(c.body !== undefined ? { body: c.body } : {}),
      };
    case "command": {
      const spec = commandOf(c);
      return { ...common, type: "command", name: c.name ?? `command ${spec.command.join(" ")}`, ...spec };
    }
    case "sql":
      return {
        ...common,
        type: "sql",
        name: c.name ?? `sql ${c.query}`,
        ...(c.postgres !== undefined ? { postgres: c.postgres } : {}),
        ...(c.password !== undefined ? { password: c.password } : {}),
        ...(c.sqlite !== undefined ? { sqlite: c.sqlite } : {}),
        query: c.query,
        expect: c.expect,
      };
  }
}

function controlOf(c: NonNullable<WrittenService["start"]>): NonNullable<RunbookService["start"]> {
  if (typeof c === "object" && !Array.isArray(c) && "systemd" in c)
    return { kind: "systemd", unit: c.systemd };
  return { kind: "command", ...commandOf(c) };
}

function restoreOf(r: NonNullable<WrittenService["restore"]>[number]): ServiceRestore {
  const to: ServiceRestore["to"] =
    "command" in r.to
      ? { command: commandOf(r.to.command) }
      : "postgres" in r.to
        ? { postgres: r.to.postgres, ...(r.to.password !== undefined ? { password: r.to.password } : {}) }
        : r.to;
  return { dataset: r.dataset, ...(r.source !== undefined ? { source: r.source } : {}), to };
}

/** The port of a local http URL or postgres URL, for the shared-port rule. */
function urlPort(url: string, fallback: number): number | undefined {
  try {
    const u = new URL(url);
    if (!["127.0.0.1", "localhost", "::1", "[::1]"].includes(u.hostname)) return undefined;
    return u.port === "" ? fallback : Number(u.port);
  } catch {
    return undefined;
  }
}

/** The TCP ports a service listens on: `ports`, those its local checks probe, its local databases'. */
function servicePorts(s: WrittenService): number[] {
  const ports = new Set(s.ports ?? []);
  for (const c of s.health ?? []) {
    if (c.type === "tcp" && ["127.0.0.1", "localhost", "::1"].includes(c.host ?? "127.0.0.1"))
      ports.add(c.port);
    if (c.type === "http") {
      const p = urlPort(c.url, c.url.startsWith("https:") ? 443 : 80);
      if (p !== undefined) ports.add(p);
    }
  }
  // The database a service's data is loaded into is the service's (a drill starts it on that port).
  for (const r of s.restore ?? []) {
    if ("postgres" in r.to) {
      const p = urlPort(r.to.postgres, 5432);
      if (p !== undefined) ports.add(p);
    }
  }
  return [...ports].sort((a, b) => a - b);
}

/**
 * Normalises the written runbooks. `duration` parses (and reports) a duration at a field path, as the rest
 * of normalisation does.
 */
export function normaliseRunbooks(
  written: Record<string, WrittenRunbook> | undefined,
  duration: (path: Array<string | number>, text: string) => number,
): Record<string, Runbook> {
  const out: Record<string, Runbook> = {};
  for (const [rb, r] of Object.entries(written ?? {})) {
    const services: Record<string, RunbookService> = {};
    for (const [sn, s] of Object.entries(r.services)) {
      services[sn] = {
        name: sn,
        restore: (s.restore ?? []).map(restoreOf),
        ...(s.start !== undefined ? { start: controlOf(s.start) } : {}),
        ...(s.stop !== undefined ? { stop: controlOf(s.stop) } : {}),
        health: (s.health ?? []).map(checkOf),
        dependsOn: s.dependsOn ?? [],
        before: (s.before ?? []).map((st, i) => stepOf(st, i, `${sn} before`)),
        after: (s.after ?? []).map((st, i) => stepOf(st, i, `${sn} after`)),
        ports: servicePorts(s),
      };
    }
    out[rb] = {
      name: rb,
      ...(r.rto !== undefined ? { rto: r.rto, rtoMs: duration(["runbooks", rb, "rto"], r.rto) } : {}),
      services,
      before: (r.before ?? []).map((st, i) => stepOf(st, i, "runbook before")),
      after: (r.after ?? []).map((st, i) => stepOf(st, i, "runbook after")),
    };
  }
  return out;
}

/**
 * The services of a runbook in waves: every service comes after all it depends on, and the services of one
 * wave do not depend on each other, so they are recovered in parallel. Names in each wave sorted. Throws
 * nothing: a cycle's services (which the rules report) are left out.
 */
export function runbookWaves(runbook: Runbook): string[][] {
  const waves: string[][] = [];
  const placed = new Set<string>();
  const remaining = new Set(Object.keys(runbook.services));
  for (;;) {
    const wave = [...remaining]
      .filter((s) => runbook.services[s]!.dependsOn.every((d) => placed.has(d) || !(d in runbook.services)))
      .sort();
    if (wave.length === 0) return waves;
    for (const s of wave) {
      placed.add(s);
      remaining.delete(s);
    }
    waves.push(wave);
  }
}

/** The rules of the module header, as diagnostics. */
export function runbookDiagnostics(config: BulwarkConfig, make: DiagnosticMakers): Diagnostic[] {
  const { error } = make;
  const out: Diagnostic[] = [];
  const copied = new Set(
    Object.values(config.jobs)
      .filter((j) => j.primary in config.targets)
      .map((j) => j.dataset),
  );
  for (const rb of Object.values(config.runbooks)) {
    const at = ["runbooks", rb.name];
    const names = Object.keys(rb.services);
    if (names.length === 0) {
      out.push(error([...at, "services"], "the runbook has no service", "add a service under services"));
    }
    const ports = new Map<number, string>();
    for (const s of Object.values(rb.services)) {
      const sat = [...at, "services", s.name];
      s.dependsOn.forEach((d, i) => {
        if (!(d in rb.services)) {
          out.push(
            error(
              [...sat, "dependsOn", i],
              `unknown service ${JSON.stringify(d)}`,
              names.length > 0 ? `use one of ${names.join(", ")}` : "define it under services",
            ),
          );
        }
      });
      s.restore.forEach((r, i) => {
        const rat = [...sat, "restore", i];
        const dataset = config.datasets[r.dataset];
        if (dataset === undefined) {
          out.push(
            error(
              [...rat, "dataset"],
              `unknown dataset ${JSON.stringify(r.dataset)}`,
              `use one of ${Object.keys(config.datasets).join(", ") || "(none)"}, or define it under datasets`,
            ),
          );
          return;
        }
        if (!copied.has(r.dataset)) {
          out.push(
            error(
              [...rat, "dataset"],
              `dataset ${r.dataset} has no copy to restore from: no job backs it up`,
              "add a job for the dataset with a primary and copies",
            ),
          );
        }
        const kind = Object.keys(r.to)[0]!;
        if (r.source === undefined) {
          if (kind !== "directory") {
            out.push(
              error(
                [...rat, "to"],
                `restoring the whole dataset needs to: { directory: PATH }, not ${kind}`,
                "name the source (source: NAME) to restore one database",
              ),
            );
          }
          return;
        }
        const source = dataset.sources.find((src) => src.type !== "files" && src.name === r.source);
        if (source === undefined || source.type === "files") {
          const known = dataset.sources.flatMap((src) => (src.type === "files" ? [] : [src.name]));
          out.push(
            error(
              [...rat, "source"],
              `dataset ${r.dataset} has no source ${JSON.stringify(r.source)}`,
              known.length > 0 ? `use one of ${known.join(", ")}` : "leave out source to restore its files",
            ),
          );
          return;
        }
        const fits: Record<string, string[]> = {
          postgres: ["postgres", "directory"],
          sqlite: ["sqlite", "directory"],
          command: ["command", "directory"],
        };
        if (!fits[source.type]!.includes(kind)) {
          out.push(
            error(
              [...rat, "to"],
              `a ${source.type} source cannot be restored to ${kind}`,
              `use to: { ${fits[source.type]!.join(" } or { ")} }`,
            ),
          );
        }
      });
      for (const port of s.ports) {
        const other = ports.get(port);
        if (other !== undefined) {
          out.push(
            error(
              [...sat],
              `port ${port} is claimed by services ${other} and ${s.name}`,
              "two services of a runbook cannot listen on one port; fix the ports or the checks",
            ),
          );
        } else ports.set(port, s.name);
      }
    }
    const placed = new Set(runbookWaves(rb).flat());
    const cyclic = names.filter((n) => !placed.has(n));
    if (cyclic.length > 0) {
      out.push(
        error(
          [...at, "services", cyclic[0]!, "dependsOn"],
          `services ${cyclic.join(", ")} cannot be ordered: their dependsOn form a cycle`,
          "remove a dependsOn of the cycle so the services can be started in order",
        ),
      );
    }
  }
  return out;
}

/** SHA-256 of a runbook's normalised definition, keys sorted: the same definition always hashes alike. */
export function runbookHash(runbook: Runbook): string {
  return createHash("sha256").update(canonicalJson(runbook)).digest("hex");
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}
