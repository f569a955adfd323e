/**
 * Sources in bulwark.yaml: every kind parses into the resolved config with its defaults, old configs (sources
 * without a name) stay valid, and each mistake is a diagnostic naming file, line, column and field.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { describe, expect, it } from "vitest";

import { formatDiagnostic } from "../../src/config/diagnostic.js";
import { resolveConfig } from "../../src/config/load.js";
import type { Source } from "../../src/config/types.js";

// Without its runbooks, which name the example's own sources (these tests replace them).
const FULL = readFileSync(fileURLToPath(new URL("../../examples/bulwark.yaml", import.meta.url)), "utf8");
const EXAMPLE = FULL.slice(0, FULL.indexOf("\n# DR:")) + FULL.slice(FULL.indexOf("\njobs:"));
const ENV = { BULWARK_PASSWORD: "x", AWS_ACCESS_KEY_ID: "x", AWS_SECRET_ACCESS_KEY: "x", PGPASS: "x" };

/** The example with its `datasets.app` replaced by `dataset` (indented as under `app:`). */
function withDataset(dataset: string): string {
  const start = EXAMPLE.indexOf("datasets:\n");
  const end = EXAMPLE.indexOf("\npolicies:");
  return `${EXAMPLE.slice(0, start)}datasets:\n  app:\n${dataset}${EXAMPLE.slice(end)}`;
}

function resolve(text: string, env: Record<string, string> = ENV) {
  return resolveConfig(text, "bulwark.yaml", { env, fileReadable: (p) => !p.includes("missing") });
}

function sourcesOf(dataset: string): Source[] {
  const r = resolve(withDataset(dataset));
  expect(r.errors.map(formatDiagnostic)).toEqual([]);
  return r.config!.datasets.app!.sources;
}

function errorsOf(dataset: string): string[] {
  const r = resolve(withDataset(dataset));
  expect(r.config).toBeUndefined();
  return r.errors.map(formatDiagnostic);
}

/** 1-based line of the first occurrence of `text`. */
function lineOf(text: string, what: string): number {
  const i = text.indexOf(what);
  expect(i).toBeGreaterThanOrEqual(0);
  return text.slice(0, i).split("\n").length;
}

describe("sources in the config", () => {
  it("parses every kind with its defaults, hooks and timeouts", () => {
    const r = resolve(
      withDataset(`    hooks: { before: "sync", after: "echo done", timeoutSeconds: 30 }
    sources:
      - type: files
        paths: [/srv/app]
        hooks: { before: "fsfreeze -f /srv", after: "fsfreeze -u /srv" }
      - type: sqlite
        path: /var/lib/app/app.db
        timeoutSeconds: 600
      - type: postgres
        database: shop
      - type: postgres
        name: cluster
        all: true
        host: /var/run/postgresql
        port: 5433
        user: backup
        password: { env: PGPASS }
        format: directory
        jobs: 4
        globals: false
        hooks: { before: "echo start", timeoutSeconds: 1.5 }
      - type: command
        command: mysqldump --single-transaction shop
        filename: mysql-shop.sql
      - type: command
        name: ldap
        command: [slapcat, -n, "1"]
        filename: ldap.ldif
`),
    );
    expect(r.errors.map(formatDiagnostic)).toEqual([]);
    const dataset = r.config!.datasets.app!;
    expect(dataset.hooks).toEqual({ before: "sync", after: "echo done", timeoutMs: 30_000 });
    expect(dataset.sources).toEqual([
      {
        type: "files",
        paths: ["/srv/app"],
        excludes: [],
        hooks: { before: "fsfreeze -f /srv", after: "fsfreeze -u /srv" },
      },
      { type: "sqlite", name: "app", path: "/var/lib/app/app.db", timeoutMs: 600_000 },
      {
        type: "postgres",
        name: "shop",
        database: "shop",
        all: false,
        format: "custom",
        jobs: 1,
        globals: true,
      },
      {
        type: "postgres",
        name: "cluster",
        all: true,
        host: "/var/run/postgresql",
        port: 5433,
        user: "backup",
        password: { env: "PGPASS" },
        format: "directory",
        jobs: 4,
        globals: false,
        hooks: { before: "echo start", timeoutMs: 1500 },
      },
      {
        type: "command",
        name: "mysql-shop",
        command: ["sh", "-c", "mysqldump --single-transaction shop"],
        filename: "mysql-shop.sql",
      },
      { type: "command", name: "ldap", command: ["slapcat", "-n", "1"], filename: "ldap.ldif" },
    ]);
  });

  it("keeps configs written before sources had names valid", () => {
    expect(
      sourcesOf(`    sources:
      - type: sqlite
        path: /data/crm.sqlite3
      - type: postgres
        database: billing
        host: db
        port: 5432
        user: backup
      - type: command
        command: [pg_dumpall]
        filename: all.sql.gz
`).map((s) => (s.type === "files" ? "" : s.name)),
    ).toEqual(["crm", "billing", "all"]);
  });

  it("jobs above 1 need the directory format", () => {
    const dataset = `    sources:
      - type: postgres
        database: shop
        jobs: 4
`;
    const text = withDataset(dataset);
    expect(errorsOf(dataset)).toEqual([
      `bulwark.yaml:${lineOf(text, "jobs: 4")}:9 datasets.app.sources[0].jobs: jobs: 4 needs format: directory (pg_dump writes in parallel only in the directory format) — add format: directory, or remove jobs`,
    ]);
  });

  it("a postgres source names one database or asks for all, and all needs a name", () => {
    const both = `    sources:
      - type: postgres
        database: shop
        all: true
        name: pg
`;
    expect(errorsOf(both)).toEqual([
      `bulwark.yaml:${lineOf(withDataset(both), "all: true")}:9 datasets.app.sources[0].all: the source names a database and asks for all of them — remove database: to dump every database, or all: to dump one`,
    ]);
    const neither = `    sources:
      - type: postgres
        host: db
`;
    expect(errorsOf(neither)).toEqual([
      `bulwark.yaml:${lineOf(withDataset(neither), "- type: postgres")}:9 datasets.app.sources[0]: the postgres source names no database — add database: NAME, or all: true for every one`,
    ]);
    const unnamed = `    sources:
      - type: postgres
        all: true
`;
    expect(errorsOf(unnamed)).toEqual([
      `bulwark.yaml:${lineOf(withDataset(unnamed), "- type: postgres")}:9 datasets.app.sources[0]: a postgres source with all: true needs a name — add name: NAME (its dumps are stored under /sources/NAME/)`,
    ]);
  });

  it("source names are file names and unique within the dataset", () => {
    const dataset = `    sources:
      - type: sqlite
        name: app
        path: /a.db
      - type: command
        name: app
        command: "true"
        filename: x
      - type: command
        name: ../up
        command: "true"
        filename: sub/file
`;
    const text = withDataset(dataset);
    expect(errorsOf(dataset)).toEqual([
      // sqlite's app is stored as app.sqlite: no clash with the command named app
      `bulwark.yaml:${lineOf(text, "name: ../up")}:9 datasets.app.sources[2].name: the source name "../up" cannot be a file name under /sources — use letters, digits, - and _ (no /, not starting with a dot)`,
      `bulwark.yaml:${lineOf(text, "filename: sub/file")}:9 datasets.app.sources[2].filename: the filename "sub/file" cannot be a file name — give a plain file name such as dump.sql (no /, not starting with a dot)`,
    ]);
    const twice = `    sources:
      - type: postgres
        database: shop
      - type: command
        name: shop
        command: "true"
        filename: x
`;
    expect(errorsOf(twice)).toEqual([
      `bulwark.yaml:${lineOf(withDataset(twice), "name: shop")}:9 datasets.app.sources[1].name: source 1 has the same name as source 0 ("shop"); each is stored under /sources/NAME — give each source its own name: add or change name:`,
    ]);
  });

  it("shape errors: a misspelt field, a wrong format, a bad timeout, an inline password, a missing secret", () => {
    const dataset = `    hooks: { befor: "sync" }
    sources:
      - type: postgres
        database: shop
        format: dir
        jobs: 0
        timeoutSeconds: -1
        password: hunter2
`;
    const text = withDataset(dataset);
    const errors = errorsOf(dataset);
    expect(errors).toContain(
      `bulwark.yaml:${lineOf(text, "befor")}:14 datasets.app.hooks.befor: unknown field \`befor\` — did you mean \`before\`?`,
    );
    expect(errors).toContain(
      `bulwark.yaml:${lineOf(text, "format: dir")}:9 datasets.app.sources[0].format: invalid value "dir" for \`format\` — use one of "custom", "directory"`,
    );
    expect(errors).toContain(
      `bulwark.yaml:${lineOf(text, "jobs: 0")}:9 datasets.app.sources[0].jobs: \`jobs\` is 0, less than 1 — use a number of at least 1`,
    );
    expect(errors.some((e) => e.includes("datasets.app.sources[0].timeoutSeconds:"))).toBe(true);
    const password = errors.find((e) => e.includes("sources[0].password"));
    expect(password).toMatch(/a secret is written in the file/);
    expect(password).not.toContain("hunter2");

    const missing = `    sources:
      - type: postgres
        database: shop
        password: { file: /etc/missing.password }
`;
    expect(errorsOf(missing)).toEqual([
      `bulwark.yaml:${lineOf(withDataset(missing), "file: /etc/missing")}:21 datasets.app.sources[0].password.file: missing secret file:/etc/missing.password: the file /etc/missing.password cannot be read — create /etc/missing.password, readable by the user running bulwark, or fix the path`,
    ]);
  });

  it("suggests the field a source probably meant", () => {
    const dataset = `    sources:
      - type: command
        comand: [pg_dumpall]
        filename: all.sql
`;
    expect(errorsOf(dataset)).toEqual([
      `bulwark.yaml:${lineOf(withDataset(dataset), "comand")}:9 datasets.app.sources[0].comand: unknown field \`comand\` — did you mean \`command\`?`,
    ]);
  });
});
