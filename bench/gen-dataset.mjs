#!/usr/bin/env node
// Deterministic benchmark dataset (see /work/shared/PERF-NOTES.md, "Dataset").
//
//   node bench/gen-dataset.mjs --out DIR [--size 1GiB] [--seed bench1] [--stats FILE] [--force]
//
// Same (size, seed) => byte-identical tree: contents, names, modes, symlinks and mtimes.
// The total of regular-file sizes is exactly --size. Shares of the total (at any size):
//   projects/   ~15%  small files 100 B - 16 KiB in a deep nested tree (~20,000 at 1 GiB, ~540 dirs)
//   logs/ data/ docs/ vendor/
//               35%   compressible text: logs with timestamps, JSON records, prose, code-like
//   media/ lib/ 25%   incompressible binaries, incl. two big ones (13.2% and 5.5%: 142 MB and 59 MB)
//   backup/ downloads/ dist/
//               15%   duplicates: whole copies of subtrees and medium files (~2,560 copies),
//                     plus bundles made of big blocks of other files at odd offsets
//   vm/ db/     10%   2 sparse VM images (ftruncate + a few data regions), zero-heavy DB pages
// plus a few symlinks (one dangling, one to a directory), empty files and empty dirs.
// Counts scale with --size (with small minimums), so a 20 MiB tree has the same shape.
//
// Any --size from 1MiB and any --seed work. The fixed shares are exact; projects/ (mean 15.35%)
// and the whole-file copies (up to 9%) come out at random totals, and the last DB file takes the
// remainder. Where the random parts leave less than the DB files need (the first ones as planned, the
// last at least 8 KiB), the bundles shrink by the difference, so the total is still exactly --size
// (in every other case the tree is byte-identical to what earlier versions of this script made, which
// threw "remainder ... too small" in this one). Below ~2 MiB (where the minimum count of small files
// applies) the small files are smaller. bench/check-gen.sh runs seeds and sizes through this script
// and mutate.mjs.
import {
  closeSync,
  copyFileSync,
  existsSync,
  ftruncateSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { keystream, parseArgs, parseSize, rng as makeRng } from "./lib/prng.mjs";
import { textGen } from "./lib/text.mjs";
import { BASE_MTIME, BIG_FILES, LOG_ROOT, SMALL_ROOT } from "./lib/layout.mjs";

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const KiB = 1024;

function usage(msg) {
  if (msg) process.stderr.write(`gen-dataset: ${msg}\n`);
  process.stderr.write(
    "usage: node bench/gen-dataset.mjs --out DIR [--size 1GiB] [--seed bench1] [--stats FILE] [--force] [--quiet]\n",
  );
  process.exit(2);
}

let args;
try {
  args = parseArgs(process.argv.slice(2), ["force", "quiet", "help"]);
} catch (e) {
  usage(e.message);
}
if (args.help) usage();
if (!args.out) usage("--out is required");
const OUT = resolve(args.out);
let TOTAL;
try {
  TOTAL = parseSize(args.size ?? "1GiB");
} catch (e) {
  usage(e.message);
}
const SEED = args.seed ?? "bench1";
const f = TOTAL / GiB; // scale factor
if (!(TOTAL >= MiB) || !Number.isSafeInteger(TOTAL)) usage("--size must be at least 1MiB");

const log = (s) => {
  if (!args.quiet) process.stderr.write(`gen-dataset: ${s}\n`);
};

if (existsSync(OUT) && readdirSync(OUT).length > 0) {
  if (!args.force) usage(`${OUT} exists and is not empty (use --force to replace it)`);
  rmSync(OUT, { recursive: true, force: true });
}
process.umask(0o022);
mkdirSync(OUT, { recursive: true });

const t0 = performance.now();
const mtimeRng = makeRng(SEED, "mtime");
const text = textGen(SEED, "text", Date.UTC(2023, 0, 1));
const rnd = keystream(SEED, "random");

const count = (n, min) => Math.max(min, Math.round(n * f));

// Fixed shares of the total (each group or file gets Math.floor(share * TOTAL) bytes).
const SHARE = {
  // 2. text (35%)
  logs: 0.084,
  events: 0.056,
  exports: 0.028,
  handbook: 0.047,
  docs: 0.042,
  vendor: 0.093,
  // 3. binaries (25%)
  footage: 0.1322,
  photosZip: 0.055,
  binaries: 0.0628,
  // 4. duplicates (15%): whole-file copies at most this share, then bundles
  wholeCopies: 0.09,
  bundles: 0.06,
  // 5. two sparse images, then DB files (planned share; they take the remainder)
  image: 0.0375,
  db: 0.025,
};
const share = (k) => Math.floor(SHARE[k] * TOTAL);

// The decisions of section 5 (image regions, DB file sizes) come from their own stream and depend only
// on (seed, size), so they are drawn here, up front: sections 1-4 then know what 5 needs at least.
const plan5 = (() => {
  const r = makeRng(SEED, "sparse");
  const images = ["vm/images/disk-01.img", "vm/images/disk-02.raw"].map((rel) => {
    const size = Math.floor((SHARE.image * TOTAL) / 4096) * 4096;
    // a "boot" region at 0, then a few 4 KiB-aligned data regions elsewhere
    const regions = [[0, Math.min(size / 8, Math.max(4096, Math.floor((MiB * f) / 4096) * 4096))]];
    const slots = Math.floor(size / (8 * 4096));
    for (let k = 0; k < 7; k++) {
      const len = Math.max(4096, Math.floor(r.logUniform(64 * KiB, 3 * MiB) * f) & ~4095);
      const pos = (1 + r.int(slots - 1)) * 8 * 4096;
      if (pos + len > size) continue;
      if (regions.some(([p, l]) => pos < p + l + 4096 && p < pos + len + 4096)) continue;
      regions.push([pos, len]);
    }
    // content of each region: random bytes, or text of a kind
    for (const region of regions) region.push(r.chance(0.5) ? "bin" : r.pick(["log", "code", "prose"]));
    return { rel, size, regions };
  });
  const dbSizes = splitBudget(r, share("db"), count(8, 2), 20);
  // the last DB file takes the remainder, which must hold at least one 8 KiB page
  const dbMin = dbSizes.slice(0, -1).reduce((a, b) => a + b, 0) + 8192;
  return { images, imageBytes: images.reduce((a, im) => a + im.size, 0), dbSizes, dbMin };
})();
// What sections 1-4 may spend in all (bundles give back what the random parts overshoot) ...
const BEFORE_5 = TOTAL - plan5.imageBytes - plan5.dbMin;
// ... so projects/ may take at most what is left after every fixed share and the whole-file copies.
const SMALL_CAP =
  BEFORE_5 -
  [
    "logs",
    "events",
    "exports",
    "handbook",
    "docs",
    "vendor",
    "footage",
    "photosZip",
    "binaries",
    "wholeCopies",
  ]
    .map(share)
    .reduce((a, b) => a + b, 0);
const files = []; // {rel, size, kind, category, mode}
const fileMtimes = new Map(); // rel -> seconds
const dirModes = new Map(); // rel -> mode
const links = []; // rel
const written = { bytes: 0 };
const categoryBytes = {};
const categoryCount = {};

function ensureDir(rel, mode = 0o755) {
  if (rel === "" || rel === "." || dirModes.has(rel)) return;
  ensureDir(dirname(rel) === "." ? "" : dirname(rel));
  mkdirSync(join(OUT, rel), { mode });
  dirModes.set(rel, mode);
}

const usedRels = new Set();
/** rel, or rel with "-2", "-3", ... before the extension if that name was already used */
function uniq(rel) {
  let out = rel;
  for (let k = 2; usedRels.has(out); k++) out = rel.replace(/(\.[^./]+)?$/, (ext) => `-${k}${ext}`);
  usedRels.add(out);
  return out;
}

function account(rel, size, kind, category, mode) {
  files.push({ rel, size, kind, category, mode });
  fileMtimes.set(rel, BASE_MTIME - mtimeRng.int(365 * 86400));
  written.bytes += size;
  categoryBytes[category] = (categoryBytes[category] ?? 0) + size;
  categoryCount[category] = (categoryCount[category] ?? 0) + 1;
}

/** Writes a file from a producer (len) => Buffer in 4 MiB pieces. */
function writeProduced(wantedRel, size, produce, kind, category, mode = 0o644) {
  const rel = uniq(wantedRel);
  ensureDir(dirname(rel));
  const fd = openSync(join(OUT, rel), "w", mode);
  try {
    for (let off = 0; off < size; ) {
      const n = Math.min(4 * MiB, size - off);
      const buf = produce(n);
      writeSync(fd, buf, 0, n);
      off += n;
    }
  } finally {
    closeSync(fd);
  }
  account(rel, size, kind, category, mode);
}

function producerFor(kind) {
  return kind === "bin" ? (n) => rnd.bytes(n) : text.stream(kind);
}

/** Splits `budget` (>= 0) bytes over n sizes, log-uniform with the given spread, summing exactly. */
function splitBudget(r, budget, n, spread) {
  const w = Array.from({ length: n }, () => r.logUniform(1, spread));
  const s = w.reduce((a, b) => a + b, 0);
  const sizes = w.map((x) => Math.floor((x / s) * budget));
  sizes[n - 1] += budget - sizes.reduce((a, b) => a + b, 0);
  return sizes;
}

// ---------------------------------------------------------------------------------------
// 1. projects/: ~20,000 small files in a deep tree
{
  const r = makeRng(SEED, "projects");
  const nDirs = count(540, 6);
  const nSmall = count(20000, 40);
  // Up to 16 KiB (mean ~8 KiB: ~15%). Where the minimum count applies (below ~2 MiB), smaller
  // files: a mean of 13% of the total.
  const smallMax =
    nSmall > Math.round(20000 * f) ? Math.min(16 * KiB, Math.floor((0.26 * TOTAL) / nSmall) - 100) : 16 * KiB;
  let smallBytes = 0;
  const SUBNAMES = ["src", "lib", "test", "utils", "components", "internal", "docs", "assets", "api", "core"];
  const dirs = [{ rel: SMALL_ROOT, depth: 0, names: new Set() }];
  ensureDir(SMALL_ROOT);
  for (let i = 1; i < nDirs; i++) {
    let parent;
    do {
      parent = r.chance(0.55) ? dirs[dirs.length - 1 - r.int(Math.min(12, dirs.length))] : r.pick(dirs);
    } while (parent.depth >= 11);
    let name = r.chance(0.3) ? r.pick(SUBNAMES) : text.word() + (r.chance(0.3) ? `-${text.word()}` : "");
    while (parent.names.has(name)) name += `${r.int(10)}`;
    parent.names.add(name);
    const rel = `${parent.rel}/${name}`;
    ensureDir(rel, r.chance(0.03) ? 0o700 : 0o755);
    dirs.push({ rel, depth: parent.depth + 1, names: new Set() });
  }
  const EXT = [
    ["ts", "code", 18],
    ["js", "code", 10],
    ["py", "code", 8],
    ["go", "code", 5],
    ["c", "code", 4],
    ["h", "code", 3],
    ["yaml", "code", 3],
    ["sh", "code", 2],
    ["md", "prose", 10],
    ["txt", "prose", 6],
    ["json", "json", 8],
    ["csv", "csv", 4],
    ["log", "log", 4],
    ["png", "bin", 6],
    ["jpg", "bin", 5],
    ["gz", "bin", 3],
    ["bin", "bin", 2],
    ["woff2", "bin", 2],
  ];
  const extTable = EXT.flatMap((e) => Array(e[2]).fill(e));
  // heavy and light directories
  const weights = dirs.map(() => r.logUniform(1, 30));
  const cum = [];
  weights.reduce((a, w, i) => (cum[i] = a + w), 0);
  const totalW = cum[cum.length - 1];
  const pickDir = () => {
    const x = r.float() * totalW;
    let lo = 0;
    let hi = cum.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cum[mid] < x) lo = mid + 1;
      else hi = mid;
    }
    return dirs[lo];
  };
  for (let i = 0; i < nSmall; i++) {
    const d = pickDir();
    const [ext, kind] = r.pick(extTable);
    let base = r.chance(0.5) ? text.ident() : `${text.word()}_${text.word()}`;
    while (d.names.has(`${base}.${ext}`)) base += `${r.int(10)}`;
    const name = `${base}.${ext}`;
    d.names.add(name);
    let size = r.range(100, smallMax);
    // the ceiling (~23% minus the DB files' minimum) is far above the share; only tiny trees get near it
    if (smallBytes + size > SMALL_CAP) size = Math.max(0, SMALL_CAP - smallBytes);
    smallBytes += size;
    const mode = ext === "sh" ? 0o755 : r.chance(0.02) ? 0o600 : 0o644;
    const rel = `${d.rel}/${name}`;
    const buf = kind === "bin" ? rnd.bytes(size) : text.fill(kind, size);
    writeFileSync(join(OUT, rel), buf, { mode });
    account(rel, size, kind, "small", mode);
  }
  // empty files and empty directories
  for (let i = 0, n = count(5, 1); i < n; i++) {
    const d = r.pick(dirs);
    const name = i % 2 ? "__init__.py" : ".keep";
    if (d.names.has(name)) continue;
    d.names.add(name);
    writeFileSync(join(OUT, d.rel, name), "");
    account(`${d.rel}/${name}`, 0, "empty", "small", 0o644);
  }
  ensureDir(`${r.pick(dirs).rel}/empty-dir`);
  ensureDir("tmp");
  log(`projects: ${nSmall} small files in ${nDirs} dirs`);
}

// ---------------------------------------------------------------------------------------
// 2. compressible text: logs, JSON records, prose, code-like (35%)
{
  const r = makeRng(SEED, "text-files");
  const SERVICES = ["nginx", "app", "worker", "postgres", "auth", "cron"];
  const nLogs = count(60, 8);
  splitBudget(r, share("logs"), nLogs, 40).forEach((size, i) => {
    const svc = SERVICES[i % SERVICES.length];
    const day = String(1 + Math.floor(i / SERVICES.length)).padStart(2, "0");
    text.setClock(Date.UTC(2023, 9, Number(day)));
    writeProduced(`${LOG_ROOT}/${svc}/${svc}-2023-10-${day}.log`, size, text.stream("log"), "log", "text");
  });

  writeProduced(BIG_FILES[2], share("events"), text.stream("json"), "json", "text");
  const nJson = count(19, 2);
  splitBudget(r, share("exports"), nJson, 20).forEach((size, i) => {
    const ext = i % 3 === 0 ? "json" : "jsonl";
    writeProduced(
      `data/exports/export-${String(i).padStart(3, "0")}.${ext}`,
      size,
      producerFor("json"),
      "json",
      "text",
    );
  });

  writeProduced(BIG_FILES[3], share("handbook"), text.stream("prose"), "prose", "text");
  const SPECIAL = ["Meeting notes 2023 (final).md", "résumé-ünïcode.txt", "naïve café ☕.md"];
  const DOCDIRS = ["docs/guides", "docs/reference", "docs/notes", "docs/archive/2022"];
  const nProse = count(39, 3);
  splitBudget(r, share("docs"), nProse, 30).forEach((size, i) => {
    const name =
      i < SPECIAL.length ? SPECIAL[i] : `${text.word()}-${text.word()}-${i}.${i % 4 ? "md" : "txt"}`;
    writeProduced(`${DOCDIRS[i % DOCDIRS.length]}/${name}`, size, producerFor("prose"), "prose", "text");
  });

  const nCode = count(80, 4);
  const pkgs = Array.from({ length: Math.min(9, nCode) }, (_, i) => `vendor/${text.word()}-${i}`);
  splitBudget(r, share("vendor"), nCode, 50).forEach((size, i) => {
    const pkg = pkgs[i % pkgs.length];
    writeProduced(
      `${pkg}/dist/${text.ident()}.${i % 5 ? "js" : "mjs"}`,
      size,
      producerFor("code"),
      "code",
      "text",
    );
  });
  log(`text: ${nLogs} logs, ${nJson + 1} json, ${nProse + 1} prose, ${nCode} code`);
}

// ---------------------------------------------------------------------------------------
// 3. incompressible binaries (25%) incl. the two big ones
{
  const r = makeRng(SEED, "binaries");
  writeProduced(BIG_FILES[0], share("footage"), producerFor("bin"), "bin", "binary");
  writeProduced(BIG_FILES[1], share("photosZip"), producerFor("bin"), "bin", "binary");
  const nBin = count(43, 4);
  const KINDS = [
    ["media/photos", "IMG_", "jpg"],
    ["lib/x86_64-linux-gnu", "lib", "so"],
    ["media/audio", "track-", "ogg"],
    ["packages", "pkg-", "tar.gz"],
  ];
  splitBudget(r, share("binaries"), nBin, 100).forEach((size, i) => {
    const [dir, prefix, ext] = KINDS[i % KINDS.length];
    const mode = ext === "so" ? 0o755 : 0o644;
    writeProduced(`${dir}/${prefix}${1000 + i * 7}.${ext}`, size, producerFor("bin"), "bin", "binary", mode);
  });
  log(`binaries: ${nBin + 2}`);
}

// ---------------------------------------------------------------------------------------
// 4. duplicates (15%): whole-file copies (subtrees + medium files) and block bundles
{
  const r = makeRng(SEED, "dups");
  // 4a. copies of whole subtrees of projects/ until ~2,500 files (at 1 GiB)
  const targetCopies = count(2500, 20);
  const byDir = new Map(); // dir -> direct files
  for (const fl of files) {
    if (fl.category !== "small") continue;
    const d = dirname(fl.rel);
    if (!byDir.has(d)) byDir.set(d, []);
    byDir.get(d).push(fl);
  }
  const projDirs = [...dirModes.keys()].filter((d) => d.startsWith(`${SMALL_ROOT}/`)).sort();
  const subtreeFiles = (d) => files.filter((fl) => fl.category === "small" && fl.rel.startsWith(d + "/"));
  const taken = [];
  let copied = 0;
  const order = r.shuffle([...projDirs]);
  for (const d of order) {
    if (copied >= targetCopies * 0.97) break;
    if (taken.some((t) => d.startsWith(t + "/") || t.startsWith(d + "/") || t === d)) continue;
    const sub = subtreeFiles(d);
    const subDirs = projDirs.filter((x) => x === d || x.startsWith(d + "/")).length;
    // dense subtrees only (a copied project, not a chain of near-empty dirs)
    if (sub.length < 20 * subDirs || copied + sub.length > targetCopies * 1.03) continue;
    // whole-file copies stay within their share (this only bites in small trees)
    if ((categoryBytes.dup ?? 0) + sub.reduce((a, fl) => a + fl.size, 0) > share("wholeCopies")) continue;
    taken.push(d);
    const dest = `backup/projects-copy/${d.split("/").pop()}-${taken.length}`;
    for (const dir of projDirs.filter((x) => x === d || x.startsWith(d + "/"))) {
      ensureDir(dest + dir.slice(d.length), dirModes.get(dir));
    }
    for (const fl of sub) {
      const rel = dest + fl.rel.slice(d.length);
      copyFileSync(join(OUT, fl.rel), join(OUT, rel));
      account(rel, fl.size, fl.kind, "dup", fl.mode); // copyFileSync keeps the mode
      copied++;
    }
  }
  // 4b. copies of medium files until 9% of the total in whole-file copies
  let budget = share("wholeCopies") - (categoryBytes.dup ?? 0);
  const maxMedium = count(61, 2);
  const candidates = r.shuffle(
    files.filter((fl) => (fl.category === "text" || fl.category === "binary") && !BIG_FILES.includes(fl.rel)),
  );
  let nMedium = 0;
  for (const fl of candidates) {
    if (nMedium >= maxMedium || budget <= 0) break;
    if (fl.size > budget) continue;
    const name = fl.rel.split("/").pop();
    const rel = uniq(
      nMedium % 2 === 0
        ? `backup/old/${fl.rel.replaceAll("/", "__")}`
        : `downloads/${name.replace(/(\.[a-z0-9]+)$/i, ` (1)$1`)}`,
    );
    ensureDir(dirname(rel));
    copyFileSync(join(OUT, fl.rel), join(OUT, rel));
    account(rel, fl.size, fl.kind, "dup", fl.mode);
    budget -= fl.size;
    nMedium++;
  }
  // 4c. bundles made of big blocks of other files read at odd offsets, with short glue
  const nBundles = count(11, 2);
  const blockMax = Math.min(4 * MiB, Math.max(16 * KiB, Math.floor(4 * MiB * f)));
  const sources = files.filter(
    (fl) => (fl.category === "text" || fl.category === "binary") && fl.size > blockMax + 1024,
  );
  // Their share, unless projects/ and the whole-file copies overshot theirs by more than the DB files'
  // slack: then what is left before section 5 (at least 0: SMALL_CAP sees to that).
  const bundleBytes = Math.max(0, Math.min(share("bundles"), BEFORE_5 - written.bytes));
  const sizes = splitBudget(r, bundleBytes, nBundles, 3);
  sizes.forEach((size, i) => {
    let off = 0;
    const producePiece = (n) => {
      // glue: 0..1000 random bytes, then a block from a source at an odd offset
      if (r.chance(0.3)) return rnd.bytes(Math.min(n, r.int(1000) + 1));
      const src = r.pick(sources);
      const len = Math.min(n, r.range(Math.floor(blockMax / 4), blockMax));
      const pos = Math.min(src.size - len, r.int(src.size - len)) | 1;
      const buf = Buffer.allocUnsafe(len);
      const fd = openSync(join(OUT, src.rel), "r");
      try {
        readSync(fd, buf, 0, len, Math.max(0, Math.min(pos, src.size - len)));
      } finally {
        closeSync(fd);
      }
      return buf;
    };
    const rel = `dist/bundle-${String(i + 1).padStart(2, "0")}.pack`;
    ensureDir("dist");
    const fd = openSync(join(OUT, rel), "w", 0o644);
    try {
      while (off < size) {
        const piece = producePiece(size - off);
        writeSync(fd, piece);
        off += piece.length;
      }
    } finally {
      closeSync(fd);
    }
    account(rel, size, "bundle", "dup", 0o644);
  });
  log(
    `duplicates: ${copied} subtree copies (${taken.length} subtrees), ${nMedium} medium copies, ${nBundles} bundles`,
  );
}

// ---------------------------------------------------------------------------------------
// 5. sparse VM images (7.5%) and zero-heavy DB-like files (the remainder, ~2.5%), as planned in plan5
{
  for (const { rel, size, regions } of plan5.images) {
    ensureDir(dirname(rel));
    const fd = openSync(join(OUT, rel), "w", 0o600);
    try {
      ftruncateSync(fd, size);
      for (const [pos, len, kind] of regions) {
        const buf = kind === "bin" ? rnd.bytes(len) : text.fill(kind, len);
        writeSync(fd, buf, 0, len, pos);
      }
    } finally {
      closeSync(fd);
    }
    account(rel, size, "sparse", "sparse", 0o600);
  }

  const nDb = plan5.dbSizes.length;
  for (let i = 0; i < nDb; i++) {
    const rel = `db/pg/base/16384/${16400 + i * 3}`;
    // the last DB file absorbs the difference so that the total is exactly --size
    const size = i === nDb - 1 ? TOTAL - written.bytes : plan5.dbSizes[i];
    // sections 1-4 stay within BEFORE_5, so this cannot happen
    if (size < 0 || (i === nDb - 1 && size < 8192)) {
      throw new Error(`internal: remainder ${size} too small at --size ${TOTAL}`);
    }
    writeProduced(rel, size, (n) => text.dbPages(n), "db", "zero-heavy", 0o600);
  }
}

// ---------------------------------------------------------------------------------------
// 6. symlinks: relative links to files, one to a directory, one dangling
{
  const r = makeRng(SEED, "symlinks");
  const small = files.filter((fl) => fl.category === "small" && fl.size > 0);
  const n = count(25, 3);
  for (let i = 0; i < n; i++) {
    const target = r.pick(small);
    const rel = `${dirname(target.rel)}/link-${i}-${text.word()}`;
    if (existsSync(join(OUT, rel))) continue;
    symlinkSync(target.rel.split("/").pop(), join(OUT, rel));
    links.push(rel);
  }
  symlinkSync("../docs/guides", join(OUT, `${SMALL_ROOT}/guides-link`));
  links.push(`${SMALL_ROOT}/guides-link`);
  symlinkSync("./does-not-exist.conf", join(OUT, `${SMALL_ROOT}/dangling.conf`));
  links.push(`${SMALL_ROOT}/dangling.conf`);
}

// ---------------------------------------------------------------------------------------
// 7. fixed mtimes (files, links, then directories deepest first) and the summary
for (const [rel, t] of fileMtimes) utimesSync(join(OUT, rel), t, t);
for (const rel of links) lutimesSync(join(OUT, rel), BASE_MTIME, BASE_MTIME);
const allDirs = [...dirModes.keys()].sort(
  (a, b) => b.split("/").length - a.split("/").length || (a < b ? -1 : 1),
);
for (const rel of allDirs) utimesSync(join(OUT, rel), BASE_MTIME, BASE_MTIME);
utimesSync(OUT, BASE_MTIME, BASE_MTIME);

// authoritative stats from the tree on disk
const stats = { files: 0, dirs: 0, symlinks: 0, bytes: 0, diskBytes: 0 };
(function walk(abs) {
  for (const name of readdirSync(abs)) {
    const p = join(abs, name);
    const st = lstatSync(p);
    if (st.isDirectory()) {
      stats.dirs++;
      walk(p);
    } else if (st.isSymbolicLink()) stats.symlinks++;
    else {
      stats.files++;
      stats.bytes += st.size;
      stats.diskBytes += st.blocks * 512;
    }
  }
})(OUT);
if (stats.bytes !== TOTAL) throw new Error(`internal: wrote ${stats.bytes} bytes, expected ${TOTAL}`);
const sparseOnDisk = ["vm/images/disk-01.img", "vm/images/disk-02.raw"].map((rel) => {
  const st = statSync(join(OUT, rel));
  return { rel, size: st.size, allocated: st.blocks * 512 };
});

const summary = {
  out: OUT,
  seed: SEED,
  size: TOTAL,
  ...stats,
  seconds: Number(((performance.now() - t0) / 1000).toFixed(1)),
  categories: Object.fromEntries(
    Object.keys(categoryBytes).map((c) => [
      c,
      {
        files: categoryCount[c],
        bytes: categoryBytes[c],
        share: Number((categoryBytes[c] / TOTAL).toFixed(4)),
      },
    ]),
  ),
  sparse: sparseOnDisk,
  bigFiles: BIG_FILES,
};
if (args.stats) writeFileSync(args.stats, JSON.stringify(summary, null, 2) + "\n");
log(
  `${relative(process.cwd(), OUT) || "."}: ${stats.files} files, ${stats.dirs} dirs, ${stats.symlinks} symlinks, ` +
    `${stats.bytes} bytes (${(stats.diskBytes / 1e6).toFixed(1)} MB on disk) in ${summary.seconds} s`,
);
for (const [c, v] of Object.entries(summary.categories)) {
  log(
    `  ${c.padEnd(10)} ${String(v.files).padStart(6)} files ${(v.bytes / 1e6).toFixed(1).padStart(8)} MB ${(v.share * 100).toFixed(1)}%`,
  );
}
for (const s of sparseOnDisk) log(`  sparse ${s.rel}: ${s.size} B apparent, ${s.allocated} B allocated`);
