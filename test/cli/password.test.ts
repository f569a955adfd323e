import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Writable } from "node:stream";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readPassword, type ReadPasswordOptions } from "../../src/cli/password.js";
import { bulwarkRejection as rejection } from "../helpers/errors.js";

/** A terminal's input side: a stream we can type into, with raw mode we can observe. */
class FakeTtyInput extends PassThrough {
  isTTY = true;
  isRaw = false;
  rawModeCalls: boolean[] = [];
  setRawMode(mode: boolean): this {
    this.isRaw = mode;
    this.rawModeCalls.push(mode);
    return this;
  }
}

class FakeOutput extends Writable {
  output = "";
  override _write(chunk: unknown, _encoding: BufferEncoding, callback: () => void): void {
    this.output += String(chunk);
    callback();
  }
}

interface Harness {
  stdin: FakeTtyInput;
  stderr: FakeOutput;
  options(extra?: Partial<ReadPasswordOptions>): ReadPasswordOptions;
}

function harness(env: NodeJS.ProcessEnv = {}, isTTY = true): Harness {
  const stdin = new FakeTtyInput();
  stdin.isTTY = isTTY;
  const stderr = new FakeOutput();
  return {
    stdin,
    stderr,
    options: (extra = {}) => ({
      env,
      stdin: stdin as unknown as NodeJS.ReadStream,
      stderr: stderr as unknown as NodeJS.WriteStream,
      prompt: "enter password: ",
      ...extra,
    }),
  };
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "bulwark-password-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("readPassword from files and the environment", () => {
  it("reads the first line of --password-file, without its line ending", async () => {
    const file = join(dir, "pw-crlf");
    await writeFile(file, " spaced secret \r\nsecond line\n");
    const h = harness({ BULWARK_PASSWORD: "from-env" });
    await expect(readPassword(h.options({ passwordFile: file }))).resolves.toBe(" spaced secret ");
  });

  it("reads a file without a trailing newline", async () => {
    const file = join(dir, "pw-bare");
    await writeFile(file, "bare");
    await expect(readPassword(harness().options({ passwordFile: file }))).resolves.toBe("bare");
  });

  it("prefers BULWARK_PASSWORD over BULWARK_PASSWORD_FILE", async () => {
    const file = join(dir, "pw-env-file");
    await writeFile(file, "from-file\n");
    const h = harness({ BULWARK_PASSWORD: "from-env", BULWARK_PASSWORD_FILE: file });
    await expect(readPassword(h.options())).resolves.toBe("from-env");
  });

  it("uses BULWARK_PASSWORD_FILE when BULWARK_PASSWORD is unset or empty", async () => {
    const file = join(dir, "pw-env-file-2");
    await writeFile(file, "from-file\n");
    const h = harness({ BULWARK_PASSWORD: "", BULWARK_PASSWORD_FILE: file });
    await expect(readPassword(h.options())).resolves.toBe("from-file");
  });

  it("reports an unreadable password file as a usage error naming the path", async () => {
    const missing = join(dir, "does-not-exist");
    const err = await rejection(readPassword(harness().options({ passwordFile: missing })));
    expect(err.code).toBe("USAGE");
    expect(err.message).toBe(`cannot read password file ${missing}: no such file or directory`);
  });

  it("refuses a password file whose first line is empty", async () => {
    const file = join(dir, "pw-empty");
    await writeFile(file, "\nsecret-on-line-two\n");
    const err = await rejection(readPassword(harness().options({ passwordFile: file })));
    expect(err.code).toBe("USAGE");
    expect(err.message).toContain("is empty");
  });

  it("fails with a hint when there is no source and no terminal", async () => {
    const h = harness({}, false);
    const err = await rejection(readPassword(h.options()));
    expect(err.code).toBe("USAGE");
    expect(err.hint).toBe("set BULWARK_PASSWORD or BULWARK_PASSWORD_FILE, or pass --password-file");
    expect(h.stderr.output).toBe("");
  });
});

describe("readPassword from the terminal", () => {
  it("reads a line in raw mode without echoing it, then restores the mode", async () => {
    const h = harness();
    const result = readPassword(h.options());
    h.stdin.write("correct horse\r");
    await expect(result).resolves.toBe("correct horse");
    expect(h.stderr.output).toBe("enter password: \n");
    expect(h.stdin.rawModeCalls).toEqual([true, false]);
    expect(h.stdin.isPaused()).toBe(true);
  });

  it("handles backspace, Ctrl-U and escape sequences", async () => {
    const h = harness();
    const result = readPassword(h.options());
    h.stdin.write("junk\x15");
    h.stdin.write("sec\x7fc");
    h.stdin.write("\x1b[D\x1bOAre\bet\x1b[1;5C\n");
    await expect(result).resolves.toBe("secret");
  });

  it("decodes UTF-8 split across chunks and deletes whole characters", async () => {
    const h = harness();
    const result = readPassword(h.options());
    const bytes = Buffer.from("pässwörd😀x\x7f\x7f\r");
    h.stdin.write(bytes.subarray(0, 2));
    h.stdin.write(bytes.subarray(2));
    await expect(result).resolves.toBe("pässwörd");
  });

  it("cancels on Ctrl-C and restores the terminal", async () => {
    const h = harness();
    const result = readPassword(h.options());
    h.stdin.write("half\x03rest\r");
    const err = await rejection(result);
    expect(err.code).toBe("CANCELLED");
    expect(h.stdin.rawModeCalls).toEqual([true, false]);
  });

  it("cancels when input ends before Enter", async () => {
    const h = harness();
    const result = readPassword(h.options());
    h.stdin.end("partial");
    const err = await rejection(result);
    expect(err.code).toBe("CANCELLED");
  });

  it("refuses an empty password", async () => {
    const h = harness();
    const result = readPassword(h.options());
    h.stdin.write("\r");
    const err = await rejection(result);
    expect(err.code).toBe("USAGE");
    expect(err.message).toContain("empty password");
  });

  it("with confirm, asks twice and accepts matching entries", async () => {
    const h = harness();
    const result = readPassword(h.options({ confirm: true }));
    // Both lines in one chunk, as a paste delivers them.
    h.stdin.write("s3cret\r\ns3cret\r");
    await expect(result).resolves.toBe("s3cret");
    expect(h.stderr.output).toBe("enter password: \nenter the password again: \n");
  });

  it("with confirm, fails on a mismatch without revealing either entry", async () => {
    const h = harness();
    const result = readPassword(h.options({ confirm: true }));
    h.stdin.write("first-try\r");
    h.stdin.write("second-try\r");
    const err = await rejection(result);
    expect(err.code).toBe("USAGE");
    expect(err.message).toBe("the passwords do not match");
    expect(`${err.message} ${err.hint ?? ""} ${h.stderr.output}`).not.toMatch(/try/);
  });

  it("does not prompt when another source is available", async () => {
    const h = harness({ BULWARK_PASSWORD: "from-env" });
    await expect(readPassword(h.options())).resolves.toBe("from-env");
    expect(h.stderr.output).toBe("");
    expect(h.stdin.rawModeCalls).toEqual([]);
  });
});
