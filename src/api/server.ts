/**
 * The daemon's HTTP API (issue 14, docs/design.md §25): the routes over the framework of ./http.ts, with the
 * daemon's tokens (roles read < operate < admin, stored as hashes in the tokens file, read again on SIGHUP).
 * Everything answers from the catalog and the daemon's state, never by opening a target: status, jobs and
 * their trigger, runs and their events, snapshots per copy, verifications, drills, DR runs, the daemon's
 * event stream, `/metrics` (./metrics.ts) and the OpenAPI document built from the same route table.
 * Target descriptions leave out credentials and passwords; locations are shown with any secret redacted.
 */
import { readFile } from "node:fs/promises";

import { z } from "zod";

import type { Catalog } from "../catalog/catalog.js";
import type { BulwarkConfig } from "../config/types.js";
import type { Clock } from "../core/clock.js";
import { BulwarkError, errorMessage } from "../core/errors.js";
import type { BulwarkEvent } from "../core/events.js";
import { loadTokens, type StoredToken, type TokenKind } from "../core/tokens.js";
import type { Daemon } from "../daemon/daemon.js";
import { redact } from "../backend/registry.js";
import {
  API_ROLES,
  createApiServer,
  eventStream,
  openApiDocument,
  route,
  textResponse,
  type ApiRole,
  type Route,
  type ServerEvent,
} from "./http.js";
import { collectMetrics, type MetricsStore } from "./metrics.js";
import { PROMETHEUS_CONTENT_TYPE, renderMetrics } from "./prometheus.js";

export { API_ROLES, type ApiRole };

/** The daemon's token files: `bwd_` tokens, made by `bulwark daemon token add`. */
export const API_TOKENS: TokenKind<ApiRole> = {
  roles: API_ROLES,
  prefix: "bwd_",
  addCommand: "bulwark daemon token add",
  addHint: "bulwark daemon token add --name NAME --role read",
};

export type ApiStore = MetricsStore &
  Pick<Catalog, "runs" | "events" | "snapshots" | "verifications" | "drills" | "drRuns" | "copies">;

export interface DaemonApiInput {
  daemon: Pick<Daemon, "status" | "trigger" | "subscribe">;
  store: ApiStore;
  /** The config the daemon runs now (it changes on SIGHUP). */
  config: () => BulwarkConfig;
  tokensFile: string;
  clock: Clock;
  log?: (line: string) => void;
}

const iso = z.string().describe("an ISO 8601 time");
const limit = z.coerce.number().int().min(1).max(1000).optional().describe("at most this many (default 100)");

const taskState = z.object({
  id: z.string(),
  kind: z.string(),
  name: z.string(),
  schedule: z.string(),
  targets: z.array(z.string()),
  next: z.date().optional(),
  running: z.object({ since: z.date(), reason: z.string(), attempt: z.number() }).optional(),
  lastResult: z.object({ ok: z.boolean(), at: z.date(), message: z.string().optional() }).optional(),
  retryAt: z.date().optional(),
  waitingFor: z.string().optional(),
  missed: z.number(),
});
const statusSchema = z.object({
  started: iso,
  configLoaded: iso,
  tasks: z.array(taskState),
  recent: z.array(
    z.object({
      id: z.string(),
      reason: z.string(),
      scheduledFor: iso,
      started: iso,
      ended: iso,
      ok: z.boolean(),
      message: z.string(),
    }),
  ),
});
const runSchema = z.object({
  id: z.number(),
  kind: z.string(),
  job: z.string().optional(),
  dataset: z.string().optional(),
  target: z.string().optional(),
  status: z.string(),
  startedAt: z.date(),
  finishedAt: z.date().optional(),
  snapshot: z.string().optional(),
  error: z.string().optional(),
  stats: z.record(z.string(), z.unknown()).optional(),
});
const eventSchema = z.object({
  time: z.date(),
  level: z.string(),
  message: z.string(),
  job: z.string().optional(),
  dataset: z.string().optional(),
  target: z.string().optional(),
  runId: z.number().optional(),
});
const snapshotSchema = z.object({
  target: z.string(),
  snapshot: z.string(),
  original: z.string(),
  dataset: z.string().optional(),
  time: z.date(),
  hostname: z.string(),
  paths: z.array(z.string()),
  tags: z.array(z.string()),
});
const evidenceSchema = z.object({
  id: z.number(),
  target: z.string().optional(),
  dataset: z.string().optional(),
  runbook: z.string().optional(),
  mode: z.string().optional(),
  time: z.date(),
  status: z.string().optional(),
  errors: z.number().optional(),
  description: z.string(),
});
const nameParam = z.object({ name: z.string().min(1).describe("a job of the config") });

/** The routes (see the module header). */
export function daemonRoutes(input: DaemonApiInput): Route[] {
  const { store, daemon } = input;
  const routes: Route[] = [
    route({
      method: "GET",
      path: "/v1/status",
      role: "read",
      summary: "What the daemon runs, what is next, what failed lately",
      tags: ["daemon"],
      response: statusSchema,
      handler: () => daemon.status(),
    }),
    route({
      method: "GET",
      path: "/v1/jobs",
      role: "read",
      summary: "The config's jobs with their schedule",
      tags: ["jobs"],
      response: z.array(
        z.object({
          name: z.string(),
          dataset: z.string(),
          primary: z.string(),
          copies: z.array(z.string()),
          schedule: z.string().optional(),
        }),
      ),
      handler: () =>
        Object.values(input.config().jobs).map((j) => ({
          name: j.name,
          dataset: j.dataset,
          primary: j.primary,
          copies: j.copies,
          ...(j.schedule !== undefined ? { schedule: j.schedule } : {}),
        })),
    }),
    route({
      method: "POST",
      path: "/v1/jobs/{name}/run",
      role: "operate",
      summary: "Run a job now (queued when a target it uses is busy)",
      tags: ["jobs"],
      params: nameParam,
      status: 202,
      response: z.object({ task: z.string(), queued: z.boolean() }),
      handler: ({ params }) => {
        if (input.config().jobs[params.name] === undefined) {
          throw new BulwarkError(
            "NOT_FOUND",
            `no job ${JSON.stringify(params.name)} in the daemon's config`,
            {
              hint: `the jobs are ${Object.keys(input.config().jobs).join(", ") || "none"}`,
            },
          );
        }
        const task = `job:${params.name}`;
        if (!daemon.status().tasks.some((t) => t.id === task)) {
          throw new BulwarkError("USAGE", `job ${params.name} has no schedule: the daemon does not run it`, {
            hint: "give it a schedule: in the config and reload the daemon (SIGHUP), or run it with `bulwark run`",
          });
        }
        return { task, queued: daemon.trigger(task) };
      },
    }),
    route({
      method: "GET",
      path: "/v1/runs",
      role: "read",
      summary: "Runs recorded in the catalog, newest first",
      tags: ["runs"],
      query: z.object({
        job: z.string().optional(),
        dataset: z.string().optional(),
        kind: z.enum(["backup", "copy", "forget", "locks", "prune", "check", "drill"]).optional(),
        limit,
      }),
      response: z.array(runSchema),
      handler: ({ query }) =>
        store.runs({
          ...(query.job !== undefined ? { job: query.job } : {}),
          ...(query.dataset !== undefined ? { dataset: query.dataset } : {}),
          ...(query.kind !== undefined ? { kind: query.kind } : {}),
          limit: query.limit ?? 100,
        }),
    }),
    route({
      method: "GET",
      path: "/v1/events",
      role: "read",
      summary: "The catalog's recorded messages, newest first",
      tags: ["runs"],
      query: z.object({
        level: z.enum(["info", "warning", "error"]).optional(),
        since: iso.optional(),
        limit,
      }),
      response: z.array(eventSchema),
      handler: ({ query }) =>
        store.events({
          ...(query.level !== undefined ? { level: query.level } : {}),
          ...(query.since !== undefined ? { since: new Date(query.since) } : {}),
          limit: query.limit ?? 100,
        }),
    }),
    route({
      method: "GET",
      path: "/v1/snapshots",
      role: "read",
      summary: "Snapshots per copy, as the catalog knows them",
      tags: ["data"],
      query: z.object({ target: z.string().optional(), dataset: z.string().optional() }),
      response: z.array(snapshotSchema),
      handler: ({ query }) =>
        store.snapshots({
          ...(query.target !== undefined ? { target: query.target } : {}),
          ...(query.dataset !== undefined ? { dataset: query.dataset } : {}),
        }),
    }),
    route({
      method: "GET",
      path: "/v1/datasets",
      role: "read",
      summary: "The config's datasets: their sources and the jobs that back them up",
      tags: ["data"],
      response: z.array(
        z.object({ name: z.string(), sources: z.array(z.string()), jobs: z.array(z.string()) }),
      ),
      handler: () => {
        const config = input.config();
        return Object.values(config.datasets).map((d) => ({
          name: d.name,
          sources: d.sources.map((s) =>
            s.type === "files" ? `files ${s.paths.join(", ")}` : `${s.type} ${s.name}`,
          ),
          jobs: Object.values(config.jobs)
            .filter((j) => j.dataset === d.name)
            .map((j) => j.name),
        }));
      },
    }),
    route({
      method: "GET",
      path: "/v1/targets",
      role: "read",
      summary: "The config's targets with their labels (no credentials)",
      tags: ["data"],
      response: z.array(
        z.object({ name: z.string(), location: z.string(), labels: z.record(z.string(), z.unknown()) }),
      ),
      handler: () =>
        Object.values(input.config().targets).map((t) => ({
          name: t.name,
          location: redact(t.location),
          labels: { ...t.labels },
        })),
    }),
    route({
      method: "GET",
      path: "/v1/verifications",
      role: "read",
      summary: "Verification records (evidence), newest first",
      tags: ["evidence"],
      query: z.object({ dataset: z.string().optional(), target: z.string().optional(), limit }),
      response: z.array(evidenceSchema),
      handler: ({ query }) =>
        store
          .verifications({
            ...(query.dataset !== undefined ? { dataset: query.dataset } : {}),
            ...(query.target !== undefined ? { target: query.target } : {}),
            limit: query.limit ?? 100,
          })
          .map((v) => ({
            id: v.id,
            target: v.target,
            ...(v.dataset !== undefined ? { dataset: v.dataset } : {}),
            time: v.time,
            errors: v.errors,
            description: v.description,
          })),
    }),
    route({
      method: "GET",
      path: "/v1/drills",
      role: "read",
      summary: "Restore drill records (evidence), newest first",
      tags: ["evidence"],
      query: z.object({ dataset: z.string().optional(), target: z.string().optional(), limit }),
      response: z.array(evidenceSchema),
      handler: ({ query }) =>
        store
          .drills({
            ...(query.dataset !== undefined ? { dataset: query.dataset } : {}),
            ...(query.target !== undefined ? { target: query.target } : {}),
            limit: query.limit ?? 100,
          })
          .map((d) => ({
            id: d.id,
            target: d.target,
            dataset: d.dataset,
            time: d.time,
            status: d.status,
            description: d.description,
          })),
    }),
    route({
      method: "GET",
      path: "/v1/dr-runs",
      role: "read",
      summary: "DR runs (drills, failovers, failbacks), newest first",
      tags: ["evidence"],
      query: z.object({
        runbook: z.string().optional(),
        mode: z.enum(["drill", "failover", "failback"]).optional(),
        limit,
      }),
      response: z.array(evidenceSchema),
      handler: ({ query }) =>
        store
          .drRuns({
            ...(query.runbook !== undefined ? { runbook: query.runbook } : {}),
            ...(query.mode !== undefined ? { mode: query.mode } : {}),
            limit: query.limit ?? 100,
          })
          .map((r) => ({
            id: r.id,
            runbook: r.runbook,
            mode: r.mode,
            time: r.time,
            status: r.status,
            description: r.description,
          })),
    }),
    route({
      method: "GET",
      path: "/v1/stream",
      role: "read",
      summary: "The daemon's events as they happen (server-sent events): messages and progress",
      tags: ["daemon"],
      response: eventStream(
        z
          .object({ type: z.string(), time: iso, job: z.string().optional(), target: z.string().optional() })
          .loose(),
      ),
      handler: ({ signal }) => streamOf(daemon, signal),
    }),
    route({
      method: "GET",
      path: "/metrics",
      role: "read",
      summary: "Prometheus metrics from the catalog and the daemon's state",
      tags: ["daemon"],
      response: textResponse(PROMETHEUS_CONTENT_TYPE),
      handler: () => renderMetrics(collectMetrics(store, input.config(), daemon.status(), input.clock)),
    }),
  ];
  routes.push(
    route({
      method: "GET",
      path: "/openapi.json",
      role: "read",
      summary: "This API's OpenAPI document",
      tags: ["daemon"],
      response: z.record(z.string(), z.unknown()),
      handler: () =>
        openApiDocument(routes, { title: "Bulwark daemon API", version: "1" }) as unknown as Record<
          string,
          unknown
        >,
    }),
  );
  return routes;
}

/** The daemon's events as server-sent events, until the client goes away. */
async function* streamOf(
  daemon: Pick<Daemon, "subscribe">,
  signal: AbortSignal,
): AsyncIterable<ServerEvent<Record<string, unknown> & { type: string; time: string }>> {
  const queue: BulwarkEvent[] = [];
  let wake: (() => void) | undefined;
  const unsubscribe = daemon.subscribe((e) => {
    if (queue.length < 1000) queue.push(e);
    wake?.();
  });
  const aborted = new Promise<void>((resolve) =>
    signal.addEventListener("abort", () => resolve(), { once: true }),
  );
  try {
    while (!signal.aborted) {
      const e = queue.shift();
      if (e === undefined) {
        await Promise.race([new Promise<void>((resolve) => (wake = resolve)), aborted]);
        wake = undefined;
        continue;
      }
      yield { event: e.type, data: { ...e, time: e.time.toISOString() } };
    }
  } finally {
    unsubscribe();
  }
}

export interface DaemonApi {
  url: string;
  /** Reads the tokens file again (SIGHUP). */
  reloadTokens(): Promise<void>;
  close(): Promise<void>;
}

/** Starts the API where the config says (daemon.listen, daemon.tls). */
export async function startDaemonApi(input: DaemonApiInput): Promise<DaemonApi> {
  let tokens: readonly StoredToken<ApiRole>[] = await loadTokens(API_TOKENS, input.tokensFile, true);
  const config = input.config();
  const tls =
    config.daemon.tls !== undefined
      ? {
          cert: await readTls(config.daemon.tls.cert, "daemon.tls.cert"),
          key: await readTls(config.daemon.tls.key, "daemon.tls.key"),
        }
      : undefined;
  const routes = daemonRoutes(input).map((r) =>
    r.path === "/metrics" && !config.daemon.metricsAuth ? { ...r, role: "none" as const } : r,
  );
  const server = createApiServer({
    routes,
    tokens: () => tokens,
    clock: input.clock,
    ...(tls !== undefined ? { tls } : {}),
    onRequest: (r) => {
      if (r.status >= 400 || r.error !== undefined)
        input.log?.(
          `${r.method} ${r.path} ${r.status} from ${r.client}${r.token !== undefined ? ` (token ${r.token})` : ""}${r.error !== undefined ? `: ${errorMessage(r.error)}` : ""}`,
        );
    },
  });
  const { host, port } = config.daemon.listen;
  let url: string;
  try {
    ({ url } = await server.listen(host, port));
  } catch (err) {
    throw new BulwarkError("USAGE", `cannot listen on ${host}:${port}: ${errorMessage(err)}`, {
      cause: err,
      hint: "is another daemon running? set daemon.listen to a free address",
    });
  }
  if (tokens.length === 0)
    input.log?.(
      `no API token in ${input.tokensFile} yet: add one with \`bulwark daemon token add --name NAME --role read\``,
    );
  return {
    url,
    reloadTokens: async () => {
      tokens = await loadTokens(API_TOKENS, input.tokensFile, true);
    },
    close: () => server.close(),
  };
}

async function readTls(file: string, field: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new BulwarkError("CONFIG_INVALID", `${field}: cannot read ${file}: ${errorMessage(err)}`);
  }
}
