/**
 * Temporary directories for tests: made under os.tmpdir() (or a given parent), removed together by
 * removeTempDirs() even when a restored tree left directories without write or search permission.
 * BULWARK_E2E_KEEP=1 keeps them for inspection.
 */
import { chmodSync, lstatSync, readdirSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const tempDirs: string[] = [];

/**
 * A new empty directory, removed by removeTempDirs(): under os.tmpdir(), or under `parent` when a test needs
 * ancestors that other processes leave alone (a snapshot records its ancestors' metadata, and /tmp changes
 * whenever anyone creates a file there).
 */
export async function makeTempDir(label: string, parent = tmpdir()): Promise<string> {
  await mkdir(parent, { recursive: true });
  const dir = await mkdtemp(join(parent, `bulwark-e2e-${label}-`));
  tempDirs.push(dir);
  return dir;
}

/** Removes every directory made by makeTempDir (set BULWARK_E2E_KEEP=1 to keep them for inspection). */
export async function removeTempDirs(): Promise<void> {
  if (process.env.BULWARK_E2E_KEEP === "1") return;
  for (const dir of tempDirs.splice(0)) {
    // Restored trees may hold directories without write or search permission (mode 0o555, 0o000).
    makeDeletable(dir);
    await rm(dir, { recursive: true, force: true });
  }
}

function makeDeletable(path: string): void {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isDirectory()) return;
  try {
    if ((st.mode & 0o700) !== 0o700) chmodSync(path, (st.mode & 0o7777) | 0o700);
    for (const name of readdirSync(path)) makeDeletable(join(path, name));
  } catch {
    // not ours to change: rm reports what it cannot remove
  }
}
