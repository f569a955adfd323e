/**
 * The resolved config of examples/bulwark.yaml (a local primary, an SFTP NAS in another failure domain, an
 * immutable S3 bucket offsite) and evidence for it, shared by the posture tests.
 */

import { defaultAlertsConfig } from "../../src/config/alerts.js";
import { defaultDaemonConfig } from "../../src/config/daemon.js";
import type { BulwarkConfig, Target } from "../../src/config/types.js";
import type {
  CopyEvidence,
  CopyValidationEvidence,
  DatasetEvidence,
  DrillEvidence,
} from "../../src/policy/posture.js";
import { presetCounts } from "../../src/policy/rule-presets.js";

export const NOW = new Date("2026-11-26T06:00:00Z");
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

export const SNAPSHOT = {
  id: "4f1c9a07d2e3b5a6978c0d1e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c",
  time: new Date(NOW.getTime() - 2 * HOUR),
};
export const OLD_SNAPSHOT = {
  id: "9e8d7c6b5a4938271605f4e3d2c1b0a99887766554433221100ffeeddccbbaa9",
  time: new Date(NOW.getTime() - 3 * DAY - 5 * HOUR),
};

function target(
  name: string,
  location: string,
  labels: Partial<Target["labels"]>,
  extra: Partial<Target> = {},
): Target {
  const l = {
    medium: "disk" as const,
    site: "home",
    offsite: false,
    failureDomain: name,
    isolation: "none" as const,
    ...labels,
  };
  return { name, location, labels: { ...l, network: labels.network ?? l.site }, credentials: {}, ...extra };
}

export function exampleConfig(): BulwarkConfig {
  return {
    version: 1,
    runbooks: {},
    daemon: defaultDaemonConfig(),
    alerts: defaultAlertsConfig(),
    targets: {
      local: target(
        "local",
        "/var/backups/bulwark",
        { medium: "disk", failureDomain: "server-1" },
        {
          password: { env: "BULWARK_PASSWORD" },
        },
      ),
      nas: target(
        "nas",
        "sftp:backup@nas.lan:/volume1/bulwark",
        { medium: "nas", failureDomain: "nas-1" },
        {
          password: { env: "BULWARK_PASSWORD" },
        },
      ),
      offsite: target(
        "offsite",
        "s3:https://s3.eu-central-1.amazonaws.com/acme-bulwark/app",
        {
          medium: "object",
          site: "aws-eu-central-1",
          offsite: true,
          failureDomain: "aws-eu-central-1",
          isolation: "immutable",
        },
        {
          credentials: {
            accessKeyId: { env: "AWS_ACCESS_KEY_ID" },
            secretAccessKey: { env: "AWS_SECRET_ACCESS_KEY" },
          },
          password: { file: "/etc/bulwark/offsite.password" },
          immutability: { mode: "compliance", days: 30 },
        },
      ),
    },
    datasets: {
      app: { name: "app", sources: [{ type: "files", paths: ["/srv/app"], excludes: ["*.tmp"] }] },
    },
    policies: {
      standard: {
        name: "standard",
        preset: "3-2-1-1-0",
        counts: presetCounts("3-2-1-1-0"),
        productionCounts: false,
        rpo: "24h",
        rpoMs: DAY,
        verification: {
          cadence: "7d",
          cadenceMs: 7 * DAY,
          fullEvery: "30d",
          fullEveryMs: 30 * DAY,
          budget: { bytes: 2 * 1024 ** 3 },
          newPacks: true,
        },
        drills: { every: "7d", everyMs: 7 * DAY },
        keepRules: { local: { daily: 7 }, nas: { daily: 30 }, offsite: { monthly: 12 } },
        immutabilityDays: 30,
      },
    },
    jobs: {
      "app-nightly": {
        name: "app-nightly",
        dataset: "app",
        policy: "standard",
        primary: "local",
        copies: ["nas", "offsite"],
        schedule: "0 2 * * *",
        dependsOn: [],
      },
    },
  };
}

export function healthyCopy(locked = false): CopyEvidence {
  return {
    reachable: true,
    snapshot: SNAPSHOT,
    ...(locked
      ? {
          lock: {
            kind: "retention" as const,
            readBack: true,
            mode: "COMPLIANCE",
            retainUntil: new Date(SNAPSHOT.time.getTime() + 30 * DAY + 60_000),
          },
        }
      : {}),
  };
}

/** A copy verified a day ago without error, every one of its 40 packs read within the last 20 days. */
export function verifiedCopy(target: string): CopyValidationEvidence {
  return {
    verification: {
      time: new Date(NOW.getTime() - DAY),
      errors: 0,
      description: `verify of ${target}: 2 packs read, coverage 40 of 40 packs`,
    },
    coverage: {
      packs: 40,
      covered: 40,
      damaged: 0,
      oldestRead: new Date(NOW.getTime() - 20 * DAY),
      fullEvery: "30d",
    },
  };
}

export function passedDrill(): DrillEvidence {
  return {
    time: new Date(NOW.getTime() - 2 * DAY),
    status: "pass",
    target: "nas",
    snapshot: SNAPSHOT.id,
    description: `drill of ${SNAPSHOT.id.slice(0, 8)} from nas: restored 1200 files in 3.2 s, 2 validators passed`,
    findings: [],
    restoreMs: 3200,
    bytes: 512 * 1024 * 1024,
    rpoMs: 6 * 3600 * 1000,
  };
}

export function healthyEvidence(): DatasetEvidence {
  return {
    copies: { local: healthyCopy(), nas: healthyCopy(), offsite: healthyCopy(true) },
    validation: {
      copies: { local: verifiedCopy("local"), nas: verifiedCopy("nas"), offsite: verifiedCopy("offsite") },
      drill: passedDrill(),
    },
  };
}
