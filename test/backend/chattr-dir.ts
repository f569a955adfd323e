/**
 * A directory where the vault can make files immutable (`chattr +i`), for the tests of its retention: the
 * system temp directory when its file system supports the flag, otherwise a small ext4 image mounted on a
 * loop device. Either needs root. When neither works, `reason` says why; the tests skip with it, except
 * under CI=true, where they fail.
 */

import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, open, rm, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export type ChattrDir = { dir: string; cleanup(): Promise<void> } | { reason: string };

/** Where chattr +i works; `cleanup` unmounts the loop device when one was made. */
export async function chattrCapableDir(): Promise<ChattrDir> {
  if (process.platform !== "linux") return { reason: "the immutable flag needs Linux" };
  if (process.getuid?.() !== 0) return { reason: "setting the immutable flag needs root" };
  const temp = tmpdir();
  const problem = await probe(temp);
  if (problem === undefined) return { dir: temp, cleanup: () => Promise.resolve() };
  // The temp directory's file system ignores the flag (overlayfs, some tmpfs): make one that has it.
  const work = await mkdtemp(join(temp, "bulwark-chattr-"));
  const image = join(work, "ext4.img");
  const mountPoint = join(work, "mnt");
  try {
    await mkdir(mountPoint);
    await run("truncate", ["-s", "512M", image]);
    await run("mkfs.ext4", ["-q", "-F", image]);
    await run("mount", ["-o", "loop", image, mountPoint]);
  } catch (err) {
    await rm(work, { recursive: true, force: true });
    return { reason: `${temp}: ${problem}, and no ext4 image could be mounted (${firstLine(err)})` };
  }
  const cleanup = async (): Promise<void> => {
    await run("chattr", ["-R", "-i", mountPoint]).catch(() => undefined);
    await run("umount", [mountPoint]).catch(() => undefined);
    await rm(work, { recursive: true, force: true });
  };
  const onImage = await probe(mountPoint);
  if (onImage !== undefined) {
    await cleanup();
    return { reason: `neither ${temp} nor an ext4 image take the immutable flag: ${onImage}` };
  }
  return { dir: mountPoint, cleanup };
}

/** Why chattr +i does not work in `dir`, or undefined when it does. */
async function probe(dir: string): Promise<string | undefined> {
  const path = join(dir, `.bulwark-chattr-probe-${randomBytes(6).toString("hex")}`);
  try {
    await (await open(path, "wx")).close();
  } catch (err) {
    return `cannot create a file (${firstLine(err)})`;
  }
  try {
    await run("chattr", ["+i", path]);
    const { stdout } = await run("lsattr", [path]);
    await run("chattr", ["-i", path]);
    return (stdout.split(/\s/)[0] ?? "").includes("i") ? undefined : "the file system ignores the flag";
  } catch (err) {
    return `chattr failed (${firstLine(err)})`;
  } finally {
    await unlink(path).catch(() => undefined);
  }
}

function firstLine(err: unknown): string {
  const stderr = (err as { stderr?: unknown }).stderr;
  const text = typeof stderr === "string" && stderr.trim() !== "" ? stderr : String(err);
  return text.trim().split("\n")[0] ?? "";
}
