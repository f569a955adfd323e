/**
 * `npm run demo` is what the README promises a newcomer: the main job on local targets with no external
 * service. It must keep passing as the code changes, so it runs here as it runs for a user.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";

import { describe, expect, it } from "vitest";

import { ROOT, cleanEnv } from "./helpers.js";

describe("npm run demo", () => {
  it("passes every step: backups, restore, check, run with a copy, posture, restore from the copy", async () => {
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
    // verify ran on both copies, so posture's validation row has its evidence from the catalog
    expect(output).toMatch(/no errors were found on 2 targets/);
    // a drill restored a copy and validated it (the database too, when sqlite3 is there)
    expect(output).toMatch(/sample: drill passed \(from (primary|second-disk)\)/);
    expect(output).toMatch(/pass \(not required\) +Automated recovery validation in place \(0 errors\)/);
  }, 180_000);
});
