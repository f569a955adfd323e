/**
 * The `daemon:` section and the jobs' `schedule:` through the real loader: defaults, durations, the address,
 * the time zone, and a schedule that is not one, each reported with file, line and field.
 */
import { describe, expect, it } from "vitest";

import { formatDiagnostic } from "../../src/config/diagnostic.js";
import { resolveConfig } from "../../src/config/load.js";

const base = (job: string, daemon = ""): string => `version: 1
targets:
  local: { location: /var/backups/b, labels: { medium: disk, site: home, failureDomain: s1 } }
datasets:
  app: { sources: [{ type: files, paths: [/srv/app] }] }
policies:
  p: { rule: { copies: 1 }, rpo: 24h }
jobs:
  app: { dataset: app, policy: p, primary: local${job} }
${daemon}`;

function load(text: string) {
  return resolveConfig(text, "bulwark.yaml", { env: { BULWARK_PASSWORD: "x" }, fileReadable: () => true });
}

describe("daemon config", () => {
  it("has defaults when the section is absent", () => {
    const r = load(base(""));
    expect(r.errors.map(formatDiagnostic)).toEqual([]);
    expect(r.config!.daemon).toEqual({
      catchUp: "once",
      jitterMs: 0,
      retries: { attempts: 2, backoffMs: 60_000, maxBackoffMs: 1_800_000 },
      targetConcurrency: 1,
      listen: { host: "127.0.0.1", port: 8420 },
      metricsAuth: true,
    });
  });

  it("reads every field", () => {
    const r = load(
      base(
        ', schedule: "0 3 * * *"',
        `daemon:
  timezone: Europe/Paris
  catchUp: none
  jitter: 30s
  retries: { attempts: 5, backoff: 10s, maxBackoff: 5m }
  targetConcurrency: 2
  listen: "[::1]:9000"
  tls: { cert: /etc/bulwark/cert.pem, key: /etc/bulwark/key.pem }
  tokens: /etc/bulwark/daemon-tokens.json
  metricsAuth: false
`,
      ),
    );
    expect(r.errors.map(formatDiagnostic)).toEqual([]);
    expect(r.config!.jobs.app!.schedule).toBe("0 3 * * *");
    expect(r.config!.daemon).toEqual({
      timezone: "Europe/Paris",
      catchUp: "none",
      jitterMs: 30_000,
      retries: { attempts: 5, backoffMs: 10_000, maxBackoffMs: 300_000 },
      targetConcurrency: 2,
      listen: { host: "::1", port: 9000 },
      tls: { cert: "/etc/bulwark/cert.pem", key: "/etc/bulwark/key.pem" },
      tokens: "/etc/bulwark/daemon-tokens.json",
      metricsAuth: false,
    });
  });

  it("reports a schedule that is not one, an unknown time zone and a bad address with file, line and field", () => {
    const r = load(
      base(
        ', schedule: "0 3 * *"',
        `daemon:
  timezone: Mars/Olympus
  listen: localhost
  jitter: soon
`,
      ),
    );
    const lines = r.errors.map(formatDiagnostic);
    expect(lines).toHaveLength(4);
    expect(lines.find((l) => l.includes("jobs.app.schedule"))).toMatch(
      /bulwark\.yaml:9:\d+ jobs\.app\.schedule: "0 3 \* \*" is not a cron expression/,
    );
    expect(lines.find((l) => l.includes("daemon.timezone"))).toMatch(
      /bulwark\.yaml:11:\d+ daemon\.timezone: unknown time zone "Mars\/Olympus"/,
    );
    expect(lines.find((l) => l.includes("daemon.listen"))).toContain('"localhost" is not HOST:PORT');
    expect(lines.find((l) => l.includes("daemon.jitter"))).toContain('invalid duration "soon"');
  });

  it("accepts @every and nicknames", () => {
    for (const s of ["@every 10m", "@daily", "*/5 * * * *"]) {
      const r = load(base(`, schedule: "${s}"`));
      expect(r.errors.map(formatDiagnostic), s).toEqual([]);
    }
  });
});
