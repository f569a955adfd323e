/**
 * A quick count of what a backup will read, run beside it so the progress bar can show an ETA.
 */
import { lstat, readdir } from "node:fs/promises";

export async function countFiles(
  paths: string[],
  excludes: { isExcluded(p: string): boolean },
): Promise<{ files: number; bytes: number }> {
  const total = { files: 0, bytes: 0 };
  const visit = async (path: string): Promise<void> => {
    if (excludes.isExcluded(path)) return;
    const st = await lstat(path).catch(() => undefined);
    if (!st) return;
    if (st.isDirectory()) {
      const names = await readdir(path).catch(() => [] as string[]);
      for (const name of names) await visit(path === "/" ? `/${name}` : `${path}/${name}`);
    } else if (st.isFile()) {
      total.files++;
      total.bytes += st.size;
    }
  };
  for (const p of paths) await visit(p);
  return total;
}
