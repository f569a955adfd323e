/**
 * The environment of the programs Bulwark starts (docs/design.md §19, "Child processes"): `bulwark run` with
 * a `command: env` source, dataset and source hooks that dump their environment, and `restore --pipe-to`
 * that does the same, all under an environment full of secrets (BULWARK_PASSWORD, the REST/vault token, the
 * S3 keys, the variable a config reference reads the repository password from). None of them may reach a
 * child, nor the snapshot; the variables the config names in an `env:` list (on the command line:
 * `--pass-env NAME`) do, and so do PATH and HOME.
 */
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { describeRun, makeTempDir, removeTempDirs, runCli } from "./helpers.js";

afterAll(removeTempDirs);

const SECRETS = {
  BULWARK_PASSWORD: "secret-bulwark-password",
  BULWARK_PASSWORD_FILE: "/secret/bulwark-password-file",
  BULWARK_REST_TOKEN: "secret-rest-token",
  BULWARK_SFTP_KEY: "secret-sftp-key",
  AWS_ACCESS_KEY_ID: "secret-access-key-id",
  AWS_SECRET_ACCESS_KEY: "secret-aws-secret-key",
  AWS_SESSION_TOKEN: "secret-aws-session",
  REPO_PASSWORD_VAR: "secret-from-config-reference",
};

/** Parses `env` output into names and values (values with newlines do not occur here). */
function parseEnv(text: string): Map<string, string> {
  const vars = new Map<string, string>();
  for (const line of text.split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) vars.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return vars;
}

function expectScrubbed(what: string, text: string): Map<string, string> {
  const vars = parseEnv(text);
  expect(vars.size, `${what}: no environment dumped`).toBeGreaterThan(0);
  for (const [name, value] of Object.entries(SECRETS)) {
    expect(vars.has(name), `${what} received ${name}`).toBe(false);
    expect(text, `${what} holds the value of ${name}`).not.toContain(value);
  }
  expect(vars.get("PATH"), `${what}: PATH`).toBe(process.env.PATH);
  return vars;
}

describe("children get a scrubbed environment plus what the config names", () => {
  it("a `command: env` source, hooks and --pipe-to see no secret; named variables pass", async () => {
    const dir = await makeTempDir("child-env");
    const p = (...parts: string[]) => join(dir, ...parts);
    await writeFile(p("src.txt"), "data\n");
    const config = p("bulwark.json");
    await writeFile(
      config,
      JSON.stringify({
        version: 1,
        targets: {
          local: {
            location: p("repo"),
            labels: { medium: "disk", site: "home", failureDomain: "fd-local" },
            password: { env: "REPO_PASSWORD_VAR" },
          },
        },
        datasets: {
          app: {
            hooks: { before: `env > ${p("dataset-hook.env")}`, env: ["HOOK_VAR"] },
            sources: [
              { type: "files", paths: [p("src.txt")] },
              {
                type: "command",
                name: "envdump",
                command: "env",
                filename: "env.txt",
                env: ["SOURCE_VAR"],
                hooks: { after: `env > ${p("source-hook.env")}` },
              },
            ],
          },
        },
        policies: { p: { rule: { copies: 1 }, rpo: "24h", retention: {} } },
        jobs: { app: { dataset: "app", policy: "p", primary: "local" } },
      }),
    );
    const env = {
      ...SECRETS,
      HOOK_VAR: "hook-visible",
      SOURCE_VAR: "source-visible",
      BULWARK_CATALOG: p("catalog.db"),
      HOME: dir,
    };
    const run = ["run", "--init", "--no-verify", "-c", config];
    const r = await runCli(run, { env });
    expect(r.code, describeRun(run, r)).toBe(0);

    // The command source's output, as stored in the snapshot and restored by a --pipe-to that dumps its own.
    const pipe = [
      "-r",
      p("repo"),
      "restore",
      "latest",
      "--source-path",
      "/sources/envdump/env.txt",
      "--pipe-to",
      `cat > ${p("stored.env")}; env > ${p("pipe.env")}`,
    ];
    // The repository's password as BULWARK_PASSWORD: the variable the pipe must not see under its own name.
    const pipeEnv0 = { ...env, BULWARK_PASSWORD: SECRETS.REPO_PASSWORD_VAR, PGHOST: "pg.example" };
    const piped = await runCli(pipe, { env: pipeEnv0 });
    expect(piped.code, describeRun(pipe, piped)).toBe(0);

    const stored = expectScrubbed("the command source", await readFile(p("stored.env"), "utf8"));
    expect(stored.get("SOURCE_VAR")).toBe("source-visible");
    expect(stored.has("HOOK_VAR")).toBe(false);
    expect(stored.get("HOME")).toBe(dir);

    const datasetHook = expectScrubbed("the dataset hook", await readFile(p("dataset-hook.env"), "utf8"));
    expect(datasetHook.get("HOOK_VAR")).toBe("hook-visible");
    expect(datasetHook.get("BULWARK_DATASET")).toBe("app");
    expect(datasetHook.has("SOURCE_VAR")).toBe(false);

    const sourceHook = expectScrubbed("the source hook", await readFile(p("source-hook.env"), "utf8"));
    expect(sourceHook.get("BULWARK_SOURCE")).toBe("envdump");
    expect(sourceHook.get("BULWARK_HOOK_RESULT")).toBe("success");
    expect(sourceHook.has("HOOK_VAR")).toBe(false); // named for the dataset's hooks, not this source's

    const pipeEnv = expectScrubbed("the --pipe-to command", await readFile(p("pipe.env"), "utf8"));
    expect(pipeEnv.get("PGHOST")).toBe("pg.example"); // libpq's variables: a dump is piped into psql
    expect(pipeEnv.has("SOURCE_VAR")).toBe(false);
  }, 60_000);

  it("on the command line: --source command:, --hook-before and --pipe-to pass only --pass-env", async () => {
    const dir = await makeTempDir("child-env-cli");
    const p = (...parts: string[]) => join(dir, ...parts);
    await writeFile(p("pw"), "cli-repo-password\n");
    const env = { ...SECRETS, CLI_VAR: "cli-visible", OTHER_VAR: "other", HOME: dir };
    const base = ["-r", p("repo"), "-p", p("pw")];
    const init = await runCli([...base, "init"], { env });
    expect(init.code, describeRun(["init"], init)).toBe(0);
    const backup = [
      ...base,
      "backup",
      "--source",
      "command:envdump=env",
      "--hook-before",
      `env > ${p("hook.env")}`,
      "--pass-env",
      "CLI_VAR",
    ];
    const b = await runCli(backup, { env });
    expect(b.code, describeRun(backup, b)).toBe(0);
    const pipe = [
      ...base,
      "restore",
      "latest",
      "--source-path",
      "/sources/envdump",
      "--pipe-to",
      `cat > ${p("stored.env")}; env > ${p("pipe.env")}`,
      "--pass-env",
      "OTHER_VAR",
    ];
    const r = await runCli(pipe, { env });
    expect(r.code, describeRun(pipe, r)).toBe(0);
    for (const [file, passed, notPassed] of [
      ["stored.env", "CLI_VAR", "OTHER_VAR"],
      ["hook.env", "CLI_VAR", "OTHER_VAR"],
      ["pipe.env", "OTHER_VAR", "CLI_VAR"],
    ] as const) {
      const vars = expectScrubbed(file, await readFile(p(file), "utf8"));
      expect(vars.has(passed), `${file} has ${passed}`).toBe(true);
      expect(vars.has(notPassed), `${file} has ${notPassed}`).toBe(false);
    }
    const bad = await runCli([...base, "backup", "--source", "command:x=env", "--pass-env", "$CLI_VAR"], {
      env,
    });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/--pass-env "\$CLI_VAR" is not a variable name/);
  }, 60_000);
});
