/**
 * `npm run demo` is what the README promises a newcomer: the main job on local targets with no external
 * service. It must keep passing as the code changes, so it runs here as it runs for a user.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";

import { describe, expect, it } from "vitest";

import { ROOT, cleanEnv } from "./helpers.js";

describe("npm run demo", () => {
  it("passes every step: backups, restore, check, run with copies to a disk and a vault, verify, drill, a green 3-2-1-1-0 posture, restore from a copy", async () => {
    const child = spawn("bash", [join(ROOT, "scripts", "demo.sh")], {
      cwd: ROOT,
      env: cleanEnv({ BULWARK_TEST_WEAK_KDF: undefined }),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (b: Buffer) => (output += b.toString("utf8")));
    child.stderr.on("data", (b: Buffer) => (output += b.toString("utf8")));
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    expect(code, output).toBe(0);
    expect(output).toContain("demo: all steps passed");
    expect(output).toMatch(/copy to second-disk: 1 snapshot/);
    expect(output).toMatch(/compare-trees: identical .*restore-copy/);
    // verify ran on every copy (the vault over its append-only token), so the validation row has its evidence
    expect(output).toMatch(/copy to vault: 1 snapshot/);
    expect(output).toMatch(/no errors were found on 3 targets/);
    // a drill restored a copy and validated it (the database too, when sqlite3 is there)
    expect(output).toMatch(/sample: drill passed \(from (primary|second-disk)\)/);
    // every row of 3-2-1-1-0 passes, from evidence read back from the targets and the catalog
    // the runbook is planned, then drilled: the service restored, started and checked, then removed
    expect(output).toContain("sample-service is ready");
    expect(output).toMatch(
      /dr drill of sample-service passed: recovered in .* against an RTO of 15m: within/,
    );
    expect(output).toMatch(/dataset sample: policy three-two-one-one-zero \(rule .*\): COMPLIES/);
    for (const row of [
      "Three copies of data exist",
      "Two different storage media used",
      "One copy stored offsite",
      "Immutable or air-gapped copy retained",
      "Automated recovery validation in place \\(0 errors\\)",
      "DR orchestration supports full service recovery",
    ])
      expect(output).toMatch(new RegExp(`\\n  pass +${row}\\n`));
  }, 180_000);
});
