/**
 * The repository layout (docs/design.md §2) as paths relative to a repository's root, shared by every
 * backend that stores files under path-like names (local directory, SFTP directory, S3 key prefix):
 *
 *   config                 keys/<name>      locks/<name>      snapshots/<name>
 *   index/<name>           data/<first two hex digits of name>/<name>
 *
 * Paths use "/" whatever the platform; a backend joins them to its root (path.join, posix.join, or a key
 * prefix). Written once so that the three backends cannot drift apart: a repository copied with rsync or
 * `aws s3 sync` from one to another opens unchanged. The vault's REST protocol keeps restic's flat
 * `data/<name>` URLs and does not use this.
 */
import { FILE_NAME_PATTERN, TYPE_DIRECTORIES, type FileHandle, type FileType } from "./backend.js";

/** The 256 pack subdirectory names, 00 to ff, in listing order. */
export const PACK_PREFIXES: readonly string[] = Array.from({ length: 256 }, (_, i) =>
  i.toString(16).padStart(2, "0"),
);

/** The directory of a file type (`data` for packs); a plain Error for `config` or an unknown type (a bug). */
export function directoryOf(type: FileType): string {
  const directory = (TYPE_DIRECTORIES as Partial<Record<string, string>>)[type];
  if (directory === undefined) throw new Error(`unknown file type "${type}"`);
  return directory;
}

/**
 * Where a file lives, relative to the root. Throws a plain Error for a malformed handle, which is a bug in
 * the caller, never a user's mistake.
 */
export function layoutPath(h: FileHandle): string {
  if (h.type === "config") {
    if (h.name !== "") throw new Error(`invalid config name "${h.name}": the config file's name is ""`);
    return "config";
  }
  const directory = directoryOf(h.type);
  if (!FILE_NAME_PATTERN.test(h.name)) {
    throw new Error(`invalid ${h.type} name "${h.name}": expected 64 lowercase hex digits`);
  }
  return h.type === "pack" ? `${directory}/${h.name.slice(0, 2)}/${h.name}` : `${directory}/${h.name}`;
}

/** Every directory of the layout, relative to the root: the type directories, then data/00 … data/ff. */
export function layoutDirectories(): string[] {
  return [
    ...Object.values(TYPE_DIRECTORIES),
    ...PACK_PREFIXES.map((prefix) => `${TYPE_DIRECTORIES.pack}/${prefix}`),
  ];
}

/**
 * The file a relative path names, when it is one of the layout's (a pack only in the data/xx matching its
 * name); undefined for anything else: temp files, strays, other tools' files.
 */
export function fileAt(path: string): FileHandle | undefined {
  if (path === "config") return { type: "config", name: "" };
  const parts = path.split("/");
  const [directory, second, third] = parts;
  if (directory === TYPE_DIRECTORIES.pack) {
    if (parts.length !== 3 || second === undefined || third === undefined) return undefined;
    return FILE_NAME_PATTERN.test(third) && third.startsWith(second) && second.length === 2
      ? { type: "pack", name: third }
      : undefined;
  }
  if (parts.length !== 2 || second === undefined || !FILE_NAME_PATTERN.test(second)) return undefined;
  const type = (Object.keys(TYPE_DIRECTORIES) as Exclude<FileType, "config">[]).find(
    (t) => TYPE_DIRECTORIES[t] === directory,
  );
  return type === undefined ? undefined : { type, name: second };
}
