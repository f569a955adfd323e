// Paths shared by gen-dataset.mjs (which creates them) and mutate.mjs (which edits them).

/** The 4 big files that receive insertions in the middle (2 random binaries, 2 text files). */
export const BIG_FILES = [
  "media/footage/cam1-2023-08-14.mp4",
  "media/backup/photos-2022.zip",
  "data/records/events.jsonl",
  "docs/corpus/handbook.txt",
];

/** Kind of content to insert into each big file. */
export const BIG_FILE_KINDS = ["bin", "bin", "json", "prose"];

/** Small files live here; mutate.mjs edits, deletes, adds and renames under it. */
export const SMALL_ROOT = "projects";

/** Logs (`*.log`) live here; mutate.mjs appends to them. */
export const LOG_ROOT = "logs";

/** mtime of every generated directory and the newest generated file (seconds) */
export const BASE_MTIME = Date.UTC(2024, 0, 15, 10, 0, 0) / 1000;

/** mtime base of everything mutate.mjs touches (seconds) */
export const MUTATION_MTIME = Date.UTC(2024, 5, 1, 12, 0, 0) / 1000;
