#!/usr/bin/env node
// Byte-identity check of a restored tree against its source.
//
//   node bench/compare-trees.mjs --src DIR --target DIR [--cache FILE] [--json FILE] [--strict-mtime]
//
// The restored copy of SRC is looked up inside TARGET in this order:
//   TARGET/<absolute SRC without the leading "/">   (restic restore, bulwark restore, borg extract of an absolute path)
//   TARGET/<basename of SRC>                        (borg extract of a relative path)
//   TARGET                                          (a tool that restores the contents directly)
// Compared for every entry below the root: type, sha256 and size of regular files, permission
// bits, uid/gid, symlink targets; missing and extra entries. Any difference is an error (exit 1).
// File mtimes are compared too but only warned about unless --strict-mtime.
// --cache keeps the source's hashes in FILE, reused while the source's metadata fingerprint
// (names, sizes, modes, mtimes) is unchanged, so N restores hash the source once.
import { createHash } from "node:crypto";
import {
  closeSync,
  existsSync,
  lstatSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  readSync,
  writeFileSync,
} from "node:fs";
import { basename, join, resolve } from "node:path";
import { parseArgs } from "./lib/prng.mjs";

const BUF = Buffer.allocUnsafe(1 << 20);

function sha256File(path) {
  const h = createHash("sha256");
  const fd = openSync(path, "r");
  try {
    for (;;) {
      const n = readSync(fd, BUF, 0, BUF.length, null);
      if (n === 0) break;
      h.update(BUF.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return h.digest("hex");
}

/** Walks root (sorted, not following symlinks): rel -> entry without hashes. */
function scan(root) {
  const entries = new Map();
  (function walk(abs, rel) {
    for (const name of readdirSync(abs).sort()) {
      const p = join(abs, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = lstatSync(p);
      const e = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
      if (st.isDirectory()) {
        entries.set(r, { type: "dir", ...e });
        walk(p, r);
      } else if (st.isSymbolicLink()) {
        entries.set(r, { type: "symlink", target: readlinkSync(p), ...e });
      } else if (st.isFile()) {
        entries.set(r, { type: "file", size: st.size, mtime: Math.floor(st.mtimeMs / 1000), ...e });
      } else {
        entries.set(r, { type: "other", ...e });
      }
    }
  })(root, "");
  return entries;
}

function fingerprint(entries) {
  const h = createHash("sha256");
  for (const [rel, e] of entries)
    h.update(`${rel}\0${e.type}\0${e.size ?? ""}\0${e.mode}\0${e.mtime ?? ""}\0${e.target ?? ""}\n`);
  return h.digest("hex");
}

function hashAll(root, entries) {
  for (const [rel, e] of entries) if (e.type === "file") e.sha256 = sha256File(join(root, rel));
}

function usage(msg) {
  process.stderr.write(
    `compare-trees: ${msg}\nusage: node bench/compare-trees.mjs --src DIR --target DIR [--cache FILE] [--json FILE] [--strict-mtime]\n`,
  );
  process.exit(2);
}

let args;
try {
  args = parseArgs(process.argv.slice(2), ["strict-mtime"]);
} catch (e) {
  usage(e.message);
}
if (!args.src || !args.target) usage("--src and --target are required");
const src = resolve(args.src);
const target = resolve(args.target);
const t0 = performance.now();

const candidates = [join(target, src.replace(/^\/+/, "")), join(target, basename(src)), target];
const restored = candidates.find((c) => existsSync(c) && lstatSync(c).isDirectory());
if (!restored) usage(`target ${target} does not exist`);

// source manifest, with hashes cached across restores
const srcEntries = scan(src);
const fp = fingerprint(srcEntries);
let cached = null;
if (args.cache && existsSync(args.cache)) {
  try {
    const c = JSON.parse(readFileSync(args.cache, "utf8"));
    if (c.src === src && c.fingerprint === fp) cached = c.hashes;
  } catch {
    cached = null;
  }
}
if (cached) {
  for (const [rel, e] of srcEntries) if (e.type === "file") e.sha256 = cached[rel];
} else {
  hashAll(src, srcEntries);
  if (args.cache) {
    const hashes = {};
    for (const [rel, e] of srcEntries) if (e.type === "file") hashes[rel] = e.sha256;
    writeFileSync(args.cache, JSON.stringify({ src, fingerprint: fp, hashes }));
  }
}

const dstEntries = scan(restored);
hashAll(restored, dstEntries);

const errors = [];
const warnings = [];
const totals = { files: 0, dirs: 0, symlinks: 0, bytes: 0 };
for (const [rel, s] of srcEntries) {
  const d = dstEntries.get(rel);
  if (!d) {
    errors.push(`missing: ${rel} (${s.type})`);
    continue;
  }
  if (d.type !== s.type) {
    errors.push(`type: ${rel}: ${s.type} restored as ${d.type}`);
    continue;
  }
  if (s.mode !== d.mode) errors.push(`mode: ${rel}: ${s.mode.toString(8)} restored as ${d.mode.toString(8)}`);
  if (s.uid !== d.uid || s.gid !== d.gid)
    errors.push(`owner: ${rel}: ${s.uid}:${s.gid} restored as ${d.uid}:${d.gid}`);
  if (s.type === "file") {
    totals.files++;
    totals.bytes += s.size;
    if (s.size !== d.size) errors.push(`size: ${rel}: ${s.size} restored as ${d.size}`);
    else if (s.sha256 !== d.sha256)
      errors.push(`content: ${rel}: sha256 ${s.sha256} restored as ${d.sha256}`);
    if (s.mtime !== d.mtime) warnings.push(`mtime: ${rel}: ${s.mtime} restored as ${d.mtime}`);
  } else if (s.type === "symlink") {
    totals.symlinks++;
    if (s.target !== d.target) errors.push(`symlink: ${rel}: -> ${s.target} restored as -> ${d.target}`);
  } else if (s.type === "dir") totals.dirs++;
}
for (const rel of dstEntries.keys()) if (!srcEntries.has(rel)) errors.push(`extra: ${rel}`);
if (args["strict-mtime"]) errors.push(...warnings.splice(0));

const result = {
  ok: errors.length === 0,
  src,
  restored,
  ...totals,
  errors: errors.length,
  mtimeWarnings: warnings.length,
  sourceHashesCached: Boolean(cached),
  seconds: Number(((performance.now() - t0) / 1000).toFixed(2)),
  firstErrors: errors.slice(0, 20),
};
if (args.json) writeFileSync(args.json, JSON.stringify(result) + "\n");
const what = `${totals.files} files, ${totals.dirs} dirs, ${totals.symlinks} symlinks, ${totals.bytes} bytes`;
if (errors.length) {
  process.stderr.write(
    `compare-trees: MISMATCH: ${restored} differs from ${src}: ${errors.length} differences\n`,
  );
  for (const e of errors.slice(0, 20)) process.stderr.write(`  ${e}\n`);
  if (errors.length > 20) process.stderr.write(`  ... and ${errors.length - 20} more\n`);
  process.exit(1);
}
process.stdout.write(`compare-trees: identical (${what}) in ${restored}\n`);
if (warnings.length) {
  process.stdout.write(
    `compare-trees: warning: ${warnings.length} file mtimes differ, e.g. ${warnings[0]}\n`,
  );
}
