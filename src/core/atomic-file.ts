/**
 * Replacing a small local file whole or not at all (a tokens file, the daemon's alert state): written to a
 * temporary file beside it (same file system), synced, then renamed over it. A crash leaves the old file or
 * the new one, never a mix; the temporary file is removed when the write fails.
 */
import { randomBytes } from "node:crypto";
import { open, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

export async function writeFileAtomic(file: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const temp = join(dirname(file), `.tmp-${basename(file)}-${randomBytes(8).toString("hex")}`);
  try {
    const handle = await open(temp, "wx", mode);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, file);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
}
