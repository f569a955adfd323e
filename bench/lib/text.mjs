// Deterministic compressible content: prose, code-like text, logs with timestamps, JSON
// records, CSV and zero-heavy database pages. Every generator returns exactly n bytes
// of ASCII. Speed matters (hundreds of MB per run), so text is built from a fixed
// vocabulary with a Zipf table lookup and joined in large pieces.
import { rng as makeRng } from "./prng.mjs";

const STOP = (
  "the of and to a in is that it for on was with as be by at this are from or " +
  "an have not which but all were when we there can if more has one will their " +
  "been would so no other into its may only than these some could time two then"
).split(" ");
const SYL = (
  "ka to ri mon el an st ver qu ion ing er al or en tr pl ex co de re pro con " +
  "sa li mu ne ba go ti fa lo ze ha ru pe di nu so ca me tu ra vi la do be se mi"
).split(" ");

/**
 * Shared vocabulary for one seed: words with a Zipf sampling table, identifiers,
 * capitalised forms. Built once per (seed) and cached.
 */
const vocabCache = new Map();
export function vocab(seed) {
  const cached = vocabCache.get(seed);
  if (cached) return cached;
  const r = makeRng(seed, "vocab");
  const words = [...STOP];
  const seen = new Set(words);
  while (words.length < 3000) {
    const n = 1 + Math.min(r.int(4), r.int(4));
    let w = "";
    for (let i = 0; i < n; i++) w += r.pick(SYL);
    if (w.length < 2 || seen.has(w)) continue;
    seen.add(w);
    words.push(w);
  }
  // Zipf(1.1) sampling table over ranks: 65536 slots -> word index
  const weights = words.map((_, i) => 1 / Math.pow(i + 2, 1.1));
  const sum = weights.reduce((a, b) => a + b, 0);
  const table = new Uint16Array(65536);
  let acc = 0;
  let slot = 0;
  for (let i = 0; i < words.length; i++) {
    acc += weights[i] / sum;
    const end = Math.min(65536, Math.round(acc * 65536));
    while (slot < end) table[slot++] = i;
  }
  while (slot < 65536) table[slot++] = words.length - 1;
  const caps = words.map((w) => w[0].toUpperCase() + w.slice(1));
  const v = { words, caps, table };
  vocabCache.set(seed, v);
  return v;
}

const LEVELS = ["INFO", "INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARN", "ERROR"];
const COMPONENTS = ["http", "db", "auth", "cache", "scheduler", "worker", "api", "storage", "mailer"];
const METHODS = ["GET", "GET", "GET", "POST", "PUT", "DELETE"];
const EVENTS = ["login", "logout", "purchase", "view", "click", "signup", "refund", "search"];
const HEX = "0123456789abcdef";
const KEYWORDS = ["const", "let", "return", "if", "for", "while", "await", "export", "import", "function"];
const OPS = ["===", "!==", "<", ">", "<=", ">=", "+", "-", "&&", "||"];

/**
 * A content generator bound to a seed and stream. `gen.fill(kind, n)` returns a Buffer
 * of exactly n bytes of the given kind; state (log clock, record ids) carries over.
 */
export function textGen(seed, streamName, startMs = Date.UTC(2023, 0, 1)) {
  const r = makeRng(seed, streamName);
  const { words, caps, table } = vocab(seed);
  const word = () => words[table[r.u32() >>> 16]];
  const cap = () => caps[table[r.u32() >>> 16]];
  const hex = (n) => {
    let s = "";
    for (let i = 0; i < n; i++) s += HEX[r.u32() & 15];
    return s;
  };
  const ident = () => {
    const a = word();
    const b = caps[table[r.u32() >>> 16]];
    return r.chance(0.5) ? a + b : a;
  };
  let clock = startMs;
  let recordId = 1 + r.int(100000);

  // Pools of recurring phrases / code lines / log messages give LZ matches at
  // realistic distances, like real prose, source trees and logs.
  const pool = (n, make) => Array.from({ length: n }, make);
  const phrases = pool(400, () => {
    let p = word();
    for (let i = 0, k = 2 + r.int(4); i < k; i++) p += " " + word();
    return p;
  });
  const poolPick = (arr) => arr[Math.floor(arr.length * Math.pow(r.float(), 2.5))];
  function sentence() {
    const n = 5 + r.int(18);
    let s = cap();
    for (let i = 1; i < n; i++) {
      if (r.chance(0.12)) {
        s += " " + poolPick(phrases);
        i += 3;
      } else s += " " + word();
      if (i < n - 2 && r.chance(0.06)) s += ",";
    }
    return s + (r.chance(0.9) ? ". " : "? ");
  }
  function proseChunk() {
    let p = "";
    const n = 3 + r.int(6);
    for (let i = 0; i < n; i++) p += sentence();
    if (r.chance(0.1)) return "## " + cap() + " " + word() + " " + word() + "\n\n" + p + "\n\n";
    return p + "\n\n";
  }
  let indent = 0;
  const codeLines = pool(1500, () => {
    const t = r.int(4);
    if (t === 0) return `${r.pick(KEYWORDS)} ${ident()} = ${ident()}(${ident()}, ${r.int(64)});`;
    if (t === 1) return `return ${ident()}.${ident()}(${ident()});`;
    if (t === 2) return `${ident()}.${ident()}(${ident()}, ${ident()});`;
    return `// ${phrases[r.int(phrases.length)]} ${word()}`;
  });
  function codeChunk() {
    let out = "";
    for (let k = 0; k < 20; k++) {
      const pad = "  ".repeat(indent);
      const t = r.int(10);
      if (indent === 0 && t < 3) {
        out += `\nexport function ${ident()}(${ident()}, ${ident()}) {\n`;
        indent = 1;
      } else if (t === 0 && indent < 6) {
        out += `${pad}if (${ident()} ${r.pick(OPS)} ${r.int(100)}) {\n`;
        indent++;
      } else if (t === 1 && indent < 6) {
        out += `${pad}for (const ${word()} of ${ident()}.${ident()}) {\n`;
        indent++;
      } else if (t === 2 && indent > 0) {
        indent--;
        out += `${"  ".repeat(indent)}}\n`;
      } else if (t === 3) {
        out += `${pad}// ${word()} ${word()} ${word()} ${word()} ${word()}\n`;
      } else if (t === 4) {
        out += `${pad}return ${ident()}.${ident()}(${r.int(1000)});\n`;
      } else if (t < 8) {
        out += `${pad}${poolPick(codeLines)}\n`;
      } else {
        out += `${pad}${r.pick(KEYWORDS)} ${ident()} = ${ident()}(${ident()}, ${r.int(64)});\n`;
      }
    }
    return out;
  }
  const logMsgs = pool(300, () => `${cap()} ${word()} ${word()} ${word()}`);
  const users = pool(2000, () => `${word()}${r.int(500)}`);
  const routes = pool(200, () => `/api/v1/${word()}/${word()}`);
  function logLine() {
    clock += r.int(1500);
    const lvl = LEVELS[r.u32() & 7];
    const comp = COMPONENTS[r.int(COMPONENTS.length)];
    const ts = new Date(clock).toISOString();
    if (comp === "http") {
      return (
        `${ts} ${lvl} [${comp}] ${METHODS[r.int(6)]} ${poolPick(routes)} ` +
        `status=${r.chance(0.9) ? 200 : r.pick([301, 404, 500, 503])} duration_ms=${r.int(900)} ` +
        `user=${poolPick(users)} req_id=${hex(6)}\n`
      );
    }
    return `${ts} ${lvl} [${comp}] ${poolPick(logMsgs)} id=${r.int(100000)} took=${r.int(250)}ms\n`;
  }
  function jsonLine() {
    clock += r.int(60000);
    const id = recordId++;
    return (
      `{"id":${id},"ts":"${new Date(clock).toISOString()}","user":"${poolPick(users)}",` +
      `"event":"${EVENTS[r.u32() & 7]}","amount":${(r.int(100000) / 100).toFixed(2)},` +
      `"tags":["${word()}","${word()}"],"active":${r.chance(0.7)},"note":"${poolPick(phrases)}"}\n`
    );
  }
  function csvLine() {
    clock += r.int(3600000);
    return `${recordId++},${new Date(clock).toISOString().slice(0, 10)},${word()},${word()},${r.int(10000)},${(r.int(1000000) / 100).toFixed(2)}\n`;
  }
  const makers = { prose: proseChunk, code: codeChunk, log: logLine, json: jsonLine, csv: csvLine };

  // Text that did not fit the previous piece of the same stream (see `stream`).
  let carry = "";
  function take(kind, n, continued) {
    const make = makers[kind];
    if (!make) throw new Error(`unknown text kind ${kind}`);
    if (!continued) carry = "";
    const buf = Buffer.allocUnsafe(n);
    let off = 0;
    if (!continued && kind === "csv") off += buf.write("id,date,name,category,qty,price\n", 0, n, "latin1");
    while (off < n) {
      let piece = carry;
      carry = "";
      while (piece.length < 65536 && piece.length < n - off) piece += make();
      const w = Math.min(piece.length, n - off);
      buf.write(piece, off, w, "latin1");
      off += w;
      if (w < piece.length) carry = piece.slice(w);
    }
    return buf;
  }

  /** n bytes of text of `kind` (prose | code | log | json | csv), starting fresh */
  const fill = (kind, n) => take(kind, n, false);
  /** a producer (n) => Buffer whose successive pieces continue one text without cut lines */
  const stream = (kind) => {
    let first = true;
    return (n) => {
      const b = take(kind, n, !first);
      first = false;
      return b;
    };
  };

  /**
   * Zero-heavy DB-like pages: 8 KiB pages; ~55% are all zero, the rest hold a
   * header and text rows up to a random fill level, zero-padded.
   */
  function dbPages(n) {
    const buf = Buffer.alloc(n);
    const PAGE = 8192;
    for (let p = 0; p * PAGE < n; p++) {
      if (r.chance(0.55)) continue;
      const start = p * PAGE;
      const end = Math.min(n, start + PAGE);
      const used = Math.floor((end - start) * (0.1 + 0.8 * r.float()));
      let off = start;
      if (end - start >= 16) {
        buf.writeUInt32LE(p, off);
        buf.writeUInt32LE(r.u32(), off + 4);
        buf.writeUInt32LE(used, off + 8);
        off += 16;
      }
      const limit = start + used;
      while (off < limit) {
        const row = `${recordId++}|${word()}|${word()} ${word()}|${r.int(100000)}|${new Date((clock += r.int(9000))).toISOString()}\u0000`;
        off += buf.write(row, off, Math.min(row.length, limit - off), "latin1");
      }
    }
    return buf;
  }

  return { fill, stream, dbPages, rng: r, word, ident, setClock: (ms) => (clock = ms) };
}
