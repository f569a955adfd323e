import { describe, expect, it } from "vitest";

import { formatDiagnostic, type ConfigPath, type Locate } from "../../src/config/diagnostic.js";
import { checkConfig, closest } from "../../src/config/rules.js";
import type { BulwarkConfig } from "../../src/config/types.js";
import { policyRules } from "../../src/policy/config-rules.js";
import { exampleConfig } from "../policy/posture-fixture.js";

const ENV = { BULWARK_PASSWORD: "x", AWS_ACCESS_KEY_ID: "x", AWS_SECRET_ACCESS_KEY: "x" };

/** A fake locator: every path sits on a line numbered by its depth, column 3 (the file is not parsed here). */
const locate: Locate = (path: ConfigPath) =>
  path.length === 0 ? undefined : { line: 10 + path.length, column: 3 };

/** The built-in rules and the policy's, as src/ops/config.ts loads a config. */
function check(config: BulwarkConfig, env: Record<string, string> = ENV, readable = true): string[] {
  return checkConfig(config, {
    file: "bulwark.yaml",
    locate,
    env,
    fileReadable: () => readable,
    rules: policyRules,
  }).map(formatDiagnostic);
}

describe("config cross-field rules", () => {
  it("accepts the example", () => {
    expect(check(exampleConfig())).toEqual([]);
  });

  it("names unknown references, suggesting the closest name", () => {
    const c = exampleConfig();
    const job = c.jobs["app-nightly"];
    if (!job) throw new Error("fixture");
    job.dataset = "ap";
    job.policy = "gold";
    job.copies = ["nass", "offsite"];
    expect(check(c)).toEqual([
      "bulwark.yaml:12:3 warning: datasets.app: no job protects this dataset — add a job with dataset: app or remove it",
      'bulwark.yaml:13:3 jobs.app-nightly.dataset: unknown dataset "ap" — did you mean "app"?',
      'bulwark.yaml:13:3 jobs.app-nightly.policy: unknown policy "gold" — use one of "standard", or define it under policies',
      'bulwark.yaml:14:3 jobs.app-nightly.copies[0]: unknown target "nass" — did you mean "nas"?',
    ]);
  });

  it("refuses a job copying to its own primary, and dependency cycles", () => {
    const c = exampleConfig();
    const job = c.jobs["app-nightly"];
    if (!job) throw new Error("fixture");
    job.copies = ["local", "offsite"];
    c.jobs.a = { ...job, name: "a", copies: ["nas"], dependsOn: ["b"] };
    c.jobs.b = { ...job, name: "b", copies: ["nas"], dependsOn: ["a"] };
    const out = check(c).filter((l) => !l.includes("warning:"));
    expect(out).toEqual([
      "bulwark.yaml:14:3 jobs.app-nightly.copies[0]: copy target local is the job's primary: a job cannot copy a snapshot onto the repository it came from — remove it from copies or choose another primary",
      "bulwark.yaml:14:3 jobs.a.dependsOn[0]: dependency cycle: a -> b -> a — remove one of these dependsOn entries so the jobs can run in order",
    ]);
  });

  it("reports missing secrets by reference, never by value", () => {
    const out = check(exampleConfig(), { BULWARK_PASSWORD: "s3cret" }, false);
    expect(out).toEqual([
      "bulwark.yaml:15:3 targets.offsite.credentials.accessKeyId.env: missing secret env:AWS_ACCESS_KEY_ID: the environment variable AWS_ACCESS_KEY_ID is not set — export AWS_ACCESS_KEY_ID before running bulwark (or point the reference at a file: { file: PATH })",
      "bulwark.yaml:15:3 targets.offsite.credentials.secretAccessKey.env: missing secret env:AWS_SECRET_ACCESS_KEY: the environment variable AWS_SECRET_ACCESS_KEY is not set — export AWS_SECRET_ACCESS_KEY before running bulwark (or point the reference at a file: { file: PATH })",
      "bulwark.yaml:14:3 targets.offsite.password.file: missing secret file:/etc/bulwark/offsite.password: the file /etc/bulwark/offsite.password cannot be read — create /etc/bulwark/offsite.password, readable by the user running bulwark, or fix the path",
    ]);
    expect(out.join("\n")).not.toContain("s3cret");
  });

  it("an unreadable evidence signing key is a warning (it must not stop backups), by reference", () => {
    const c = { ...exampleConfig(), evidence: { signingKey: { file: "/etc/bulwark/signing-key.pem" } } };
    expect(check(c, ENV, false).filter((l) => l.includes("evidence"))).toEqual([
      "bulwark.yaml:13:3 warning: evidence.signingKey.file: missing secret file:/etc/bulwark/signing-key.pem: the file /etc/bulwark/signing-key.pem cannot be read — create /etc/bulwark/signing-key.pem, readable by the user running bulwark, or fix the path",
    ]);
    expect(check(c, ENV, true)).toEqual([]);
  });

  it("refuses duplicate locations and passwords in locations", () => {
    const c = exampleConfig();
    const nas = c.targets.nas;
    if (!nas) throw new Error("fixture");
    nas.location = "/var/backups/bulwark/";
    c.targets.web = { ...nas, name: "web", location: "sftp://backup:hunter2@nas.lan/volume1" };
    const out = check(c);
    expect(out).toContain(
      'bulwark.yaml:13:3 targets.nas.location: target local has the same location "/var/backups/bulwark/"; two targets on one repository are one copy — give target nas its own location or remove it',
    );
    expect(out).toContain(
      "bulwark.yaml:13:3 targets.web.location: the location contains a password — remove it from the URL and give it as a reference under credentials (e.g. password: { env: NAME })",
    );
  });

  it("warns when a job's targets cannot satisfy its policy", () => {
    const c = exampleConfig();
    const off = c.targets.offsite;
    const nas = c.targets.nas;
    if (!off || !nas) throw new Error("fixture");
    off.labels.isolation = "none";
    delete off.immutability;
    nas.labels.failureDomain = "server-1";
    expect(check(c)).toEqual([
      "bulwark.yaml:13:3 warning: jobs.app-nightly.copies: targets local, nas share failure domain server-1: their copies count once — put the job's targets in distinct failure domains",
      'bulwark.yaml:13:3 warning: jobs.app-nightly.policy: policy standard (rule 3-2-1-1-0) cannot be met by this job\'s targets: "Three copies of data exist" fails (2 of 3 copies count: targets local, nas share failure domain server-1: their copies count once) — move nas to a failure domain of its own (targets.<name>.labels.failureDomain) or add a copy target in another failure domain to job app-nightly',
      'bulwark.yaml:13:3 warning: jobs.app-nightly.policy: policy standard (rule 3-2-1-1-0) cannot be met by this job\'s targets: "Immutable or air-gapped copy retained" fails (no target of this dataset is immutable, append-only or offline) — add an immutable target (S3 Object Lock, labels.isolation: immutable) to the copies of job app-nightly',
    ]);
  });

  it("evaluates the policy only through the rules it is given, and not for a job with unknown references", () => {
    const c = exampleConfig();
    const off = c.targets.offsite;
    const job = c.jobs["app-nightly"];
    if (!off || !job) throw new Error("fixture");
    off.labels.isolation = "none";
    delete off.immutability;
    const ctx = { file: "bulwark.yaml", locate, env: ENV, fileReadable: () => true };
    expect(checkConfig(c, ctx)).toEqual([]);
    expect(check(c).join("\n")).toContain("cannot be met by this job's targets");
    job.copies = ["nas", "ofsite"];
    expect(check(c)).toEqual([
      'bulwark.yaml:14:3 jobs.app-nightly.copies[1]: unknown target "ofsite" — did you mean "offsite"?',
    ]);
  });

  it("suggests only close names", () => {
    expect(closest("ofsite", ["local", "offsite"])).toBe("offsite");
    expect(closest("tape", ["local", "offsite"])).toBeUndefined();
  });
});
