/**
 * examples/bulwark.yaml as the schema hands it over (comments dropped); test/config/load.test.ts and
 * schema.test.ts parse the example and compare it with this.
 */

import type { BulwarkConfig } from "../../src/config/types.js";
import type { WrittenConfig } from "../../src/config/written.js";

export const EXAMPLE_WRITTEN: WrittenConfig = {
  version: 1,
  targets: {
    local: {
      location: "/var/backups/bulwark",
      labels: { medium: "disk", site: "home", failureDomain: "server-1" },
      password: { env: "BULWARK_PASSWORD" },
    },
    nas: {
      location: "sftp:backup@nas.lan:/volume1/bulwark",
      labels: { medium: "nas", site: "home", failureDomain: "nas-1" },
      password: { env: "BULWARK_PASSWORD" },
    },
    offsite: {
      location: "s3:https://s3.eu-central-1.amazonaws.com/acme-bulwark/app",
      labels: {
        medium: "object",
        site: "aws-eu-central-1",
        offsite: true,
        failureDomain: "aws-eu-central-1",
        isolation: "immutable",
      },
      credentials: {
        accessKeyId: { env: "AWS_ACCESS_KEY_ID" },
        secretAccessKey: { env: "AWS_SECRET_ACCESS_KEY" },
      },
      password: { file: "/etc/bulwark/offsite.password" },
      immutability: { mode: "compliance", days: 30 },
    },
  },
  datasets: {
    app: {
      sources: [
        { type: "files", paths: ["/srv/app"], excludes: ["*.tmp"] },
        {
          type: "postgres",
          name: "appdb",
          database: "app",
          host: "db.lan",
          user: "backup",
          password: { file: "/etc/bulwark/pg-backup.password" },
          format: "directory",
          jobs: 4,
        },
      ],
      drill: {
        spotCheck: 50,
        validators: [
          {
            type: "paths",
            expect: [
              { path: "/srv/app/config.yaml", minSize: 1 },
              { path: "/srv/app/uploads", minFiles: 1 },
            ],
          },
          {
            type: "postgres",
            source: "appdb",
            queries: [{ sql: "SELECT count(*) > 0 FROM orders", expect: "t" }],
          },
          {
            type: "command",
            command: ["sh", "-c", "grep -q '^listen:' srv/app/config.yaml"],
            timeoutSeconds: 60,
          },
        ],
      },
    },
  },
  policies: {
    standard: {
      rule: "3-2-1-1-0",
      productionCounts: false,
      rpo: "24h",
      verification: { cadence: "7d", fullEvery: "30d", budget: "2GiB" },
      drills: { every: "7d" },
      retention: { local: { keepDaily: 7 }, nas: { keepDaily: 30 }, offsite: { keepMonthly: 12 } },
      immutabilityDays: 30,
    },
  },
  jobs: {
    "app-nightly": {
      dataset: "app",
      policy: "standard",
      primary: "local",
      copies: ["nas", "offsite"],
      schedule: "0 2 * * *",
    },
  },
  runbooks: {
    app: {
      rto: "1h",
      services: {
        db: {
          restore: [
            {
              dataset: "app",
              source: "appdb",
              to: {
                postgres: "postgresql://postgres@127.0.0.1:5432/app",
                password: { file: "/etc/bulwark/pg-admin.password" },
              },
            },
          ],
          health: [
            {
              type: "sql",
              postgres: "postgresql://postgres@127.0.0.1:5432/app",
              password: { file: "/etc/bulwark/pg-admin.password" },
              query: "SELECT count(*) > 0 FROM orders",
              expect: "t",
            },
          ],
        },
        web: {
          dependsOn: ["db"],
          restore: [{ dataset: "app", to: { directory: "/srv/restored" } }],
          start: {
            command: ["/srv/restored/srv/app/bin/server", "--listen", "127.0.0.1:8080"],
            cwd: "/srv/restored/srv/app",
          },
          health: [{ type: "http", url: "http://127.0.0.1:8080/health", body: "ok" }],
          after: [{ type: "approval", message: "point app.acme.example at this site?" }],
        },
      },
    },
  },
};

/**
 * The example resolved: the posture fixture (test/policy/posture-fixture.ts) plus the example's database
 * source, which the fixture leaves out because posture counts file paths only.
 */
export function withExampleSources(config: BulwarkConfig): BulwarkConfig {
  const step = { critical: true, timeoutMs: 300_000, retries: 0 };
  const check = { timeoutMs: 10_000, retries: 30, intervalMs: 1000 };
  config.runbooks = {
    app: {
      name: "app",
      rto: "1h",
      rtoMs: 3_600_000,
      before: [],
      after: [],
      services: {
        db: {
          name: "db",
          restore: [
            {
              dataset: "app",
              source: "appdb",
              to: {
                postgres: "postgresql://postgres@127.0.0.1:5432/app",
                password: { file: "/etc/bulwark/pg-admin.password" },
              },
            },
          ],
          health: [
            {
              ...check,
              type: "sql",
              name: "sql SELECT count(*) > 0 FROM orders",
              postgres: "postgresql://postgres@127.0.0.1:5432/app",
              password: { file: "/etc/bulwark/pg-admin.password" },
              query: "SELECT count(*) > 0 FROM orders",
              expect: "t",
            },
          ],
          dependsOn: [],
          before: [],
          after: [],
          ports: [5432],
        },
        web: {
          name: "web",
          restore: [{ dataset: "app", to: { directory: "/srv/restored" } }],
          start: {
            kind: "command",
            command: ["/srv/restored/srv/app/bin/server", "--listen", "127.0.0.1:8080"],
            passEnv: [],
            setEnv: {},
            cwd: "/srv/restored/srv/app",
          },
          health: [
            {
              ...check,
              type: "http",
              name: "http http://127.0.0.1:8080/health",
              url: "http://127.0.0.1:8080/health",
              status: 200,
              body: "ok",
            },
          ],
          dependsOn: ["db"],
          before: [],
          after: [
            {
              ...step,
              type: "approval",
              name: "web after step 1 (approval)",
              message: "point app.acme.example at this site?",
              inDrill: "skip",
            },
          ],
          ports: [8080],
        },
      },
    },
  };
  config.datasets.app!.sources.push({
    type: "postgres",
    name: "appdb",
    database: "app",
    all: false,
    host: "db.lan",
    user: "backup",
    password: { file: "/etc/bulwark/pg-backup.password" },
    format: "directory",
    jobs: 4,
    globals: true,
  });
  config.datasets.app!.drill = {
    spotCheck: 50,
    validators: [
      {
        type: "paths",
        name: "paths (2)",
        expect: [
          { path: "/srv/app/config.yaml", minSize: 1 },
          { path: "/srv/app/uploads", minFiles: 1 },
        ],
      },
      {
        type: "postgres",
        name: "postgres appdb",
        source: "appdb",
        queries: [{ sql: "SELECT count(*) > 0 FROM orders", expect: "t" }],
      },
      {
        type: "command",
        name: "command sh -c grep -q '^listen:' srv/app/config.yaml",
        command: ["sh", "-c", "grep -q '^listen:' srv/app/config.yaml"],
        timeoutMs: 60_000,
      },
    ],
  };
  return config;
}
