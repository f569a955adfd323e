#!/usr/bin/env node
// Deterministic ~2% mutation of a tree made by gen-dataset.mjs (see PERF-NOTES.md, "Mutation").
//
//   node bench/mutate.mjs --dir DIR [--seed m1] [--json FILE]
//
// At 1 GiB (counts scale with the number of small files / logs found; sizes with the total):
//   10 insertions (<= 64 KiB) in the middle of the 4 big files (2 binaries, 2 text files)
//   ~47 of 60 logs appended (27% of the mutation budget)
//   ~200 small files edited in place (overwrite a region, append lines, or rewrite the tail)
//   ~217 new files: ~200 small ones plus ~17 larger ones that fill the budget to 2.0%
//   ~103 small files deleted
//   one directory under projects/ (~56 files) renamed
// "Mutated bytes" = inserted + appended + edited + new + deleted + renamed bytes; the larger new
// files are sized so that this is 2.00% of the tree's bytes. The same tree and seed always
// give the same result (contents, names and mtimes). Run it once per fresh copy of the dataset.
// In trees under ~8 MiB the minimum counts (a renamed directory of 3 files, a few new files) make
// the mutation more than 2% (up to ~6% at 1 MiB).
import {
  appendFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  closeSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { dirname, join, resolve } from "node:path";
import { keystream, parseArgs, rng as makeRng } from "./lib/prng.mjs";
import { textGen } from "./lib/text.mjs";
import { BIG_FILES, BIG_FILE_KINDS, LOG_ROOT, MUTATION_MTIME, SMALL_ROOT } from "./lib/layout.mjs";

function usage(msg) {
  process.stderr.write(`mutate: ${msg}\nusage: node bench/mutate.mjs --dir DIR [--seed m1] [--json FILE]\n`);
  process.exit(2);
}
let args;
try {
  args = parseArgs(process.argv.slice(2));
} catch (e) {
  usage(e.message);
}
if (!args.dir) usage("--dir is required");
const DIR = resolve(args.dir);
const SEED = args.seed ?? "m1";
for (const rel of [...BIG_FILES, SMALL_ROOT, LOG_ROOT]) {
  if (!existsSync(join(DIR, rel))) usage(`${DIR} does not look like a gen-dataset.mjs tree (no ${rel})`);
}

const t0 = performance.now();
process.umask(0o022);
const r = makeRng(SEED, "mutate");
const text = textGen(SEED, "mutate-text", MUTATION_MTIME * 1000);
const rnd = keystream(SEED, "mutate-random");

// --- inventory (sorted, so the result does not depend on readdir order)
const files = []; // {rel, size}
const dirs = [];
(function walk(abs, rel) {
  for (const name of readdirSync(abs).sort()) {
    const p = join(abs, name);
    const rp = rel ? `${rel}/${name}` : name;
    const st = lstatSync(p);
    if (st.isDirectory()) {
      dirs.push(rp);
      walk(p, rp);
    } else if (st.isFile()) files.push({ rel: rp, size: st.size, mode: st.mode & 0o7777 });
  }
})(DIR, "");
const TOTAL = files.reduce((a, fl) => a + fl.size, 0);
const BUDGET = Math.round(0.02 * TOTAL);
const inSmall = (rel) => rel.startsWith(`${SMALL_ROOT}/`);
const small = files.filter((fl) => inSmall(fl.rel) && fl.size >= 100 && fl.size <= 16384);
const logs = files.filter((fl) => fl.rel.startsWith(`${LOG_ROOT}/`) && fl.rel.endsWith(".log"));
const nSmall = small.length;
const scaleCount = (n, min = 1) => Math.max(min, Math.round((n * nSmall) / 20000));

const touchedFiles = new Set(); // rel (after the mutation) -> gets MUTATION_MTIME
const touchedDirs = new Set();
const sum = {};
const add = (what, files, bytes) => {
  sum[what] ??= { files: 0, bytes: 0 };
  sum[what].files += files;
  sum[what].bytes += bytes;
};
const mutated = () => Object.values(sum).reduce((a, s) => a + s.bytes, 0);
const kindOf = (rel) => {
  const ext = rel.slice(rel.lastIndexOf(".") + 1);
  if (["png", "jpg", "gz", "bin", "woff2"].includes(ext)) return "bin";
  if (["md", "txt"].includes(ext)) return "prose";
  if (["json", "jsonl"].includes(ext)) return "json";
  if (ext === "log") return "log";
  if (ext === "csv") return "csv";
  return "code";
};
const content = (kind, n) => (kind === "bin" ? rnd.bytes(n) : text.fill(kind, n));

// --- 1. choose the directory to rename first, so edits/deletes stay out of it
const wantRenamed = scaleCount(56, 3);
const smallDirs = dirs.filter(inSmall);
const filesUnder = (d) => files.filter((fl) => fl.rel.startsWith(d + "/"));
let renameDir = null;
let bestDiff = Infinity;
for (const d of r.shuffle([...smallDirs])) {
  const diff = Math.abs(filesUnder(d).length - wantRenamed);
  if (diff < bestDiff) [renameDir, bestDiff] = [d, diff];
}
if (renameDir === null)
  usage(`${DIR} does not look like a gen-dataset.mjs tree (no directory under ${SMALL_ROOT}/)`);
const renamedFrom = renameDir + "/";
let renameTo = `${renameDir}-renamed`;
for (let k = 2; existsSync(join(DIR, renameTo)); k++) renameTo = `${renameDir}-renamed-${k}`;

// --- 2. insertions in the middle of the 4 big files
const insertions = [3, 3, 2, 2];
// 4 KiB at least, less in trees under 4 MiB (where 10 x 4 KiB would be most of the 2%)
const insMin = Math.min(4096, Math.floor(BUDGET / 20));
BIG_FILES.forEach((rel, i) => {
  const p = join(DIR, rel);
  const old = readFileSync(p);
  const k = insertions[i];
  const parts = [];
  const positions = Array.from({ length: k }, () => Math.floor(old.length * (0.25 + 0.5 * r.float()))).sort(
    (a, b) => a - b,
  );
  let prev = 0;
  for (let pos of positions) {
    if (BIG_FILE_KINDS[i] !== "bin") {
      const nl = old.indexOf(10, pos); // insert whole lines into text
      pos = nl < 0 ? old.length : nl + 1;
    }
    pos = Math.max(pos, prev);
    const n = r.range(insMin, Math.max(insMin, Math.min(64 * 1024, Math.floor(old.length / 50))));
    parts.push(old.subarray(prev, pos), content(BIG_FILE_KINDS[i], n));
    add("insertions in big files", 0, n);
    prev = pos;
  }
  parts.push(old.subarray(prev));
  writeFileSync(p, Buffer.concat(parts)); // same inode, new content
  add("insertions in big files", 1, 0);
  touchedFiles.add(rel);
});

// --- 3. logs appended
{
  const n = Math.min(logs.length, Math.max(1, Math.round((logs.length * 47) / 60)));
  const chosen = r.shuffle([...logs]).slice(0, n);
  const budget = Math.round(0.27 * BUDGET);
  const w = chosen.map(() => r.logUniform(1, 10));
  const ws = w.reduce((a, b) => a + b, 0);
  chosen.forEach((fl, i) => {
    const len = Math.max(200, Math.floor((w[i] / ws) * budget));
    appendFileSync(join(DIR, fl.rel), text.fill("log", len));
    add("logs appended", 1, len);
    touchedFiles.add(fl.rel);
  });
}

// --- 4. small files edited, 5. deleted (never inside the directory to be renamed)
const candidates = r.shuffle(small.filter((fl) => !fl.rel.startsWith(renamedFrom)));
const nEdit = scaleCount(200);
const nDelete = scaleCount(103);
for (const fl of candidates.slice(0, nEdit)) {
  const p = join(DIR, fl.rel);
  const kind = kindOf(fl.rel);
  const how = r.float();
  if (how < 0.5) {
    // overwrite a region in place (same size)
    const len = Math.min(fl.size, r.range(16, 1024));
    const pos = r.int(fl.size - len + 1);
    const fd = openSync(p, "r+");
    writeSync(fd, content(kind, len), 0, len, pos);
    closeSync(fd);
    add("small files edited", 1, len);
  } else if (how < 0.8) {
    const len = r.range(50, 2000);
    appendFileSync(p, content(kind, len));
    add("small files edited", 1, len);
  } else {
    // rewrite the tail: keep 60-95%, then new content
    const keep = Math.floor(fl.size * (0.6 + 0.35 * r.float()));
    const len = r.range(100, 4000);
    const old = readFileSync(p);
    writeFileSync(p, Buffer.concat([old.subarray(0, keep), content(kind, len)]));
    add("small files edited", 1, fl.size - keep + len);
  }
  touchedFiles.add(fl.rel);
}
for (const fl of candidates.slice(nEdit, nEdit + nDelete)) {
  rmSync(join(DIR, fl.rel));
  add("small files deleted", 1, fl.size);
  touchedDirs.add(dirname(fl.rel));
}

// --- 6. rename the directory
{
  const moved = filesUnder(renameDir);
  renameSync(join(DIR, renameDir), join(DIR, renameTo));
  add(
    "directory renamed",
    moved.length,
    moved.reduce((a, fl) => a + fl.size, 0),
  );
  touchedDirs.add(dirname(renameDir));
  touchedDirs.add(renameTo);
}

// --- 7. new files: small ones in existing dirs, then larger ones filling the budget to 2%
{
  const nNew = scaleCount(217, 2);
  const nLarge = Math.max(1, Math.round(nNew * 0.08));
  const liveDirs = smallDirs.filter((d) => d !== renameDir && !d.startsWith(renamedFrom));
  if (liveDirs.length === 0) liveDirs.push(SMALL_ROOT); // the renamed directory held all the others
  const EXT = ["ts", "js", "py", "md", "json", "png", "txt", "go", "yaml", "csv"];
  for (let i = 0; i < nNew - nLarge; i++) {
    const d = r.pick(liveDirs);
    const ext = r.pick(EXT);
    let rel = `${d}/new-${text.ident()}.${ext}`;
    while (existsSync(join(DIR, rel))) rel = rel.replace(/(\.[a-z]+)$/, `${r.int(10)}$1`);
    const size = r.range(100, 16384);
    writeFileSync(join(DIR, rel), content(kindOf(rel), size));
    add("new files", 1, size);
    touchedFiles.add(rel);
    touchedDirs.add(d);
  }
  const LARGE = [
    [`${LOG_ROOT}/app/app-2024-06-01.log`, "log"],
    ["data/exports/export-2024-06.jsonl", "json"],
    ["media/photos/IMG_9001.jpg", "bin"],
    ["docs/notes/release-notes-2024.md", "prose"],
    ["vendor/new-dependency/dist/index.js", "code"],
  ];
  const remaining = Math.max(nLarge * 4096, BUDGET - mutated());
  const w = Array.from({ length: nLarge }, () => r.logUniform(1, 8));
  const ws = w.reduce((a, b) => a + b, 0);
  let left = remaining;
  for (let i = 0; i < nLarge; i++) {
    const [base, kind] = LARGE[i % LARGE.length];
    const rel =
      i < LARGE.length ? base : base.replace(/(\.[a-z]+)$/, `-${Math.floor(i / LARGE.length) + 1}$1`);
    const size = i === nLarge - 1 ? left : Math.floor((w[i] / ws) * remaining);
    left -= size;
    // new directories (and the one they were made in) get the fixed mtime too
    const first = mkdirSync(join(DIR, dirname(rel)), { recursive: true });
    for (let d = dirname(rel); first !== undefined && d !== "."; d = dirname(d)) {
      touchedDirs.add(d);
      if (join(DIR, d) === first) {
        touchedDirs.add(dirname(d));
        break;
      }
    }
    const fd = openSync(join(DIR, rel), "w", 0o644);
    try {
      const produce = kind === "bin" ? (n) => rnd.bytes(n) : text.stream(kind);
      for (let off = 0; off < size; off += 4 << 20) writeSync(fd, produce(Math.min(4 << 20, size - off)));
    } finally {
      closeSync(fd);
    }
    add("new files", 1, size);
    touchedFiles.add(rel);
    touchedDirs.add(dirname(rel));
  }
}

// --- 8. fixed mtimes for everything touched
let i = 0;
for (const rel of [...touchedFiles].sort()) {
  const t = MUTATION_MTIME + i++;
  utimesSync(join(DIR, rel), t, t);
}
for (const rel of [...touchedDirs].sort()) utimesSync(join(DIR, rel), MUTATION_MTIME, MUTATION_MTIME);

const total = mutated();
const result = {
  dir: DIR,
  seed: SEED,
  sourceBytes: TOTAL,
  mutatedBytes: total,
  percent: ((100 * total) / TOTAL).toFixed(2),
  renamed: { from: renameDir, to: renameTo },
  steps: sum,
  seconds: Number(((performance.now() - t0) / 1000).toFixed(1)),
};
if (args.json) writeFileSync(args.json, JSON.stringify(result, null, 2) + "\n");
const MiB = 1024 * 1024;
for (const [what, s] of Object.entries(sum)) {
  process.stdout.write(
    `mutate: ${what.padEnd(24)} ${String(s.files).padStart(5)} files ${(s.bytes / MiB).toFixed(2).padStart(8)} MiB\n`,
  );
}
process.stdout.write(
  `mutate: ${DIR}: mutated ${total} bytes (${(total / MiB).toFixed(1)} MiB) = ${result.percent}% of ${TOTAL} bytes; ` +
    `renamed ${renameDir} -> ${renameTo}; ${result.seconds} s\n`,
);
