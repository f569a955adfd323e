/**
 * Where the repository password comes from: a file, the environment, or the terminal.
 *
 * Sources are tried in a fixed order (--password-file, BULWARK_PASSWORD, BULWARK_PASSWORD_FILE, then
 * a prompt) so scripts behave predictably. A prompt is only shown on a real terminal: a cron job
 * waiting for a keystroke nobody will type is worse than failing at once with a hint. Typed input is
 * read in raw mode so nothing is echoed, and the password never appears in output or error messages.
 */

import { StringDecoder } from "node:string_decoder";

import { BulwarkError } from "../core/errors.js";
import { formatIoReason } from "../core/format.js";
import { readPasswordFile } from "../core/secret-file.js";

export { readPasswordFile };

export interface ReadPasswordOptions {
  /** --password-file: wins over everything else. */
  passwordFile?: string;
  env: NodeJS.ProcessEnv;
  stdin: NodeJS.ReadStream;
  /** Prompts go to stderr so stdout stays clean for --json and pipes. */
  stderr: NodeJS.WriteStream;
  prompt: string;
  /** Ask twice and require both entries to match (creating a repository or a key). */
  confirm?: boolean;
}

const CONFIRM_PROMPT = "enter the password again: ";
const NO_SOURCE_HINT = "set BULWARK_PASSWORD or BULWARK_PASSWORD_FILE, or pass --password-file";

export async function readPassword(opts: ReadPasswordOptions): Promise<string> {
  if (opts.passwordFile !== undefined) return readPasswordFile(opts.passwordFile);

  // An empty variable counts as unset: `BULWARK_PASSWORD= bulwark ...` is how people clear it.
  const fromEnv = opts.env["BULWARK_PASSWORD"];
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv;

  const fileFromEnv = opts.env["BULWARK_PASSWORD_FILE"];
  if (fileFromEnv !== undefined && fileFromEnv !== "") return readPasswordFile(fileFromEnv);

  if (opts.stdin.isTTY !== true) {
    throw new BulwarkError("USAGE", "no password given, and stdin is not a terminal to ask for one", {
      hint: NO_SOURCE_HINT,
    });
  }

  const prompts = opts.confirm === true ? [opts.prompt, CONFIRM_PROMPT] : [opts.prompt];
  const [password, repeated] = await readHiddenLines(opts.stdin, opts.stderr, prompts);
  if (password === undefined || password === "") {
    throw new BulwarkError("USAGE", "an empty password is not allowed");
  }
  if (opts.confirm === true && repeated !== password) {
    throw new BulwarkError("USAGE", "the passwords do not match");
  }
  return password;
}

/**
 * Shows each prompt in turn and reads one line per prompt from a terminal in raw mode (no echo).
 *
 * Raw mode hands us every key, so the line editing a terminal normally does is done here: Enter ends
 * a line, Backspace deletes a character, Ctrl-U clears the line, Ctrl-C and Ctrl-D cancel (raw mode
 * turns off the SIGINT that Ctrl-C would send). Escape sequences from arrow and function keys are
 * skipped rather than taken as password characters. The terminal's previous mode is restored on
 * every way out.
 */
function readHiddenLines(
  stdin: NodeJS.ReadStream,
  stderr: NodeJS.WriteStream,
  prompts: string[],
): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const decoder = new StringDecoder("utf8");
    const wasRaw = stdin.isRaw;
    const lines: string[] = [];
    // Code points, so Backspace removes a whole character even outside the Basic Multilingual Plane.
    let typed: string[] = [];
    let previousWasCarriageReturn = false;
    let escape: "none" | "start" | "csi" | "ss3" = "none";
    let settled = false;

    const finish = (err?: BulwarkError): void => {
      if (settled) return;
      settled = true;
      stdin.off("data", onData);
      stdin.off("end", onEnd);
      stdin.off("error", onError);
      stdin.setRawMode(wasRaw);
      // Stop reading so the process can exit; anything typed after the last Enter is dropped.
      stdin.pause();
      typed = [];
      if (err === undefined) resolve(lines);
      else reject(err);
    };

    const cancel = (): void => {
      stderr.write("\n");
      finish(new BulwarkError("CANCELLED", "password entry cancelled"));
    };

    const handleKey = (key: string): void => {
      if (escape !== "none") {
        escape = nextEscapeState(escape, key);
        return;
      }
      const isLineFeedAfterCr = key === "\n" && previousWasCarriageReturn;
      previousWasCarriageReturn = key === "\r";
      if (isLineFeedAfterCr) return; // "\r\n" (a paste, a non-raw terminal) is one Enter.

      switch (key) {
        case "\r":
        case "\n": {
          lines.push(typed.join(""));
          typed = [];
          stderr.write("\n"); // Enter was not echoed either.
          const nextPrompt = prompts[lines.length];
          if (nextPrompt === undefined) finish();
          else stderr.write(nextPrompt);
          return;
        }
        case "\x7f": // Backspace on most terminals
        case "\b": // Backspace on some others
          typed.pop();
          return;
        case "\x15": // Ctrl-U
          typed = [];
          return;
        case "\x03": // Ctrl-C
        case "\x04": // Ctrl-D
          cancel();
          return;
        case "\x1b":
          escape = "start";
          return;
        default:
          // Other control characters (Tab included) are more likely stray keys than password text.
          if (key >= " ") typed.push(key);
      }
    };

    const onData = (chunk: Buffer | string): void => {
      const text = typeof chunk === "string" ? chunk : decoder.write(chunk);
      for (const key of text) {
        if (settled) return;
        handleKey(key);
      }
    };
    const onEnd = (): void => {
      stderr.write("\n");
      finish(new BulwarkError("CANCELLED", "input ended before the password was entered"));
    };
    const onError = (err: unknown): void => {
      finish(
        new BulwarkError("IO", `cannot read the password from the terminal: ${formatIoReason(err)}`, {
          cause: err,
        }),
      );
    };

    stdin.setRawMode(true);
    stdin.on("data", onData);
    stdin.on("end", onEnd);
    stdin.on("error", onError);
    stderr.write(prompts[0] ?? "");
    // An explicitly paused stream does not start flowing just because a data listener was added.
    stdin.resume();
  });
}

/**
 * Skips an escape sequence key by key: ESC [ params final (CSI, arrows and most function keys),
 * ESC O x (SS3, some terminals' arrows and F1-F4), or ESC x (Alt+key).
 */
function nextEscapeState(state: "start" | "csi" | "ss3", key: string): "none" | "start" | "csi" | "ss3" {
  if (state === "start") {
    if (key === "[") return "csi";
    if (key === "O") return "ss3";
    return "none";
  }
  if (state === "ss3") return "none";
  // A CSI sequence ends with a byte in @..~; parameters and intermediates come before it.
  const code = key.codePointAt(0) ?? 0;
  return code >= 0x40 && code <= 0x7e ? "none" : "csi";
}
