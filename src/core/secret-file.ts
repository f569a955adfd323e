/**
 * Reading a password or secret from a file: the first line, without its line ending; everything else in the
 * file is ignored. One reader for `-p FILE`, BULWARK_PASSWORD_FILE and `{ file: PATH }` references in the
 * config, so a file works the same wherever it is named.
 */
import { readFile } from "node:fs/promises";

import { BulwarkError } from "./errors.js";
import { formatIoReason } from "./format.js";

export async function readPasswordFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new BulwarkError("USAGE", `cannot read password file ${path}: ${formatIoReason(err)}`, {
      cause: err,
    });
  }
  const newline = text.indexOf("\n");
  let firstLine = newline === -1 ? text : text.slice(0, newline);
  if (firstLine.endsWith("\r")) firstLine = firstLine.slice(0, -1);
  if (firstLine === "") {
    throw new BulwarkError("USAGE", `password file ${path} is empty`, {
      hint: "put the password on the first line of the file",
    });
  }
  return firstLine;
}
