/**
 * The logic of `dr failback` (src/ops/dr-failback.ts) on configs loaded by the real loader: what each dataset
 * is read back from, the rewriting of recovery places to the original ones (paths below a whole dataset's
 * directory, a SQLite file, a PostgreSQL URL with its boundaries), and the refusal, naming the field, of a
 * restore that cannot be read back. The whole failback runs against real servers in test/e2e/dr-failback and
 * dr-failover-s3.
 */
import { describe, expect, it } from "vitest";

import { resolveConfig } from "../../src/config/load.js";
import { failbackRewriter, planFailback } from "../../src/ops/dr-failback.js";
import type { DrPlan } from "../../src/ops/dr-plan.js";
import { pathRewriter, placeRewriter } from "../../src/ops/dr-restore.js";

const ENV = { BULWARK_PASSWORD: "x", PGPASS: "x" };

const config = (shopTo: string): string => `version: 1
targets:
  local: { location: /var/backups/b, labels: { medium: disk, site: home, failureDomain: s1 } }
  far: { location: /mnt/far/b, labels: { medium: disk, site: far, offsite: true, failureDomain: s2 } }
datasets:
  shop:
    sources:
      - { type: postgres, name: db, database: shop, host: 10.0.0.5, port: 5433, user: app, password: { env: PGPASS } }
      - { type: files, paths: [/srv/app, /etc/app] }
      - { type: sqlite, name: cache, path: /var/lib/app/cache.sqlite }
policies:
  p: { rule: { copies: 2 }, rpo: 24h }
jobs:
  shop: { dataset: shop, policy: p, primary: local, copies: [far] }
runbooks:
  shop:
    services:
      db:
        restore: [{ dataset: shop, source: db, to: ${shopTo} }]
      app:
        dependsOn: [db]
        restore:
          - { dataset: shop, to: { directory: /dr/app } }
          - { dataset: shop, source: cache, to: { sqlite: /dr/cache.sqlite } }
        start:
          command: [node, /dr/app/srv/app/server.js, --cache=/dr/cache.sqlite, --etc, /dr/app/etc/app]
          setEnv: { DATABASE_URL: "postgres://app@127.0.0.1:5432/shop_dr", OTHER: "postgres://app@127.0.0.1:5432/shop_dr2" }
`;

function load(shopTo = '{ postgres: "postgres://app@127.0.0.1:5432/shop_dr", password: { env: PGPASS } }') {
  const r = resolveConfig(config(shopTo), "bulwark.yaml", { env: ENV, fileReadable: () => true });
  expect(r.errors.map((e) => e.message)).toEqual([]);
  return r.config!;
}

/** A failover's plan as far as failback reads it: the copy and host each dataset came from. */
const plan = {
  waves: [
    {
      wave: 1,
      services: [{ name: "db", datasets: [{ dataset: "shop", target: "far", hostname: "shop-host" }] }],
    },
    {
      wave: 2,
      services: [{ name: "app", datasets: [{ dataset: "shop", target: "far", hostname: "shop-host" }] }],
    },
  ],
} as unknown as DrPlan;

describe("dr failback: what is read back", () => {
  it("reads the files under the restore directory, SQLite from its file, PostgreSQL from the recovery database", () => {
    const c = load();
    const [shop, ...rest] = planFailback(c, c.runbooks.shop!, plan, undefined);
    expect(rest).toEqual([]);
    expect(shop!.target).toBe("far");
    expect(shop!.hostname).toBe("shop-host");
    expect(shop!.readRoot).toBe("/dr/app");
    expect(shop!.readFrom.hooks).toBeUndefined();
    expect(shop!.readFrom.sources).toEqual([
      expect.objectContaining({ type: "files", paths: ["/srv/app", "/etc/app"] }),
      expect.objectContaining({
        type: "postgres",
        name: "db",
        database: "shop_dr",
        all: false,
        host: "127.0.0.1",
        port: 5432,
        user: "app",
        password: { env: "PGPASS" },
      }),
      expect.objectContaining({ type: "sqlite", name: "cache", path: "/dr/cache.sqlite" }),
    ]);
    expect(planFailback(c, c.runbooks.shop!, plan, "local")[0]!.target).toBe("local");
    expect(() => planFailback(c, c.runbooks.shop!, plan, "nowhere")).toThrow('unknown target "nowhere"');
  });

  it("refuses, naming the field, a database restored as files", () => {
    const c = load("{ directory: /dr/dump }");
    expect(() => planFailback(c, c.runbooks.shop!, plan, undefined)).toThrow(
      "runbooks.shop.services.db.restore[0]: postgres source db was restored to a directory, which failback cannot read back",
    );
  });
});

describe("dr failback: recovery places rewritten to the original ones", () => {
  it("rewrites paths below a whole dataset's directory, the SQLite file and the exact PostgreSQL URL", () => {
    const c = load();
    const rewrite = failbackRewriter(c, c.runbooks.shop!, {});
    const start = c.runbooks.shop!.services.app!.start as {
      command: string[];
      setEnv: Record<string, string>;
    };
    expect(start.command.map(rewrite)).toEqual([
      "node",
      "/srv/app/server.js",
      "--cache=/var/lib/app/cache.sqlite",
      "--etc",
      "/etc/app",
    ]);
    expect(rewrite(start.setEnv.DATABASE_URL!)).toBe("postgres://app@10.0.0.5:5433/shop");
    // Another database whose name starts with the same letters is not the recovery one.
    expect(rewrite(start.setEnv.OTHER!)).toBe("postgres://app@127.0.0.1:5432/shop_dr2");
    expect(rewrite("/dr/app")).toBe("/");
    expect(rewrite("/dr/application/x")).toBe("/dr/application/x");
  });

  it("keeps the drill's rewriting into a sandbox", () => {
    const c = load();
    const rewrite = pathRewriter(c.runbooks.shop!, "/tmp/sb");
    expect(rewrite("/dr/app/srv/app/server.js --cache=/dr/cache.sqlite")).toBe(
      "/tmp/sb/dr/app/srv/app/server.js --cache=/tmp/sb/dr/cache.sqlite",
    );
    expect(placeRewriter(new Map([["/a", "/b/c"]]))("x=/a/y /ab /a")).toBe("x=/b/c/y /ab /b/c");
  });
});
