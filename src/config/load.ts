/**
 * Reading `bulwark.yaml`: parse the YAML (keeping where every node is written), refuse inline secrets, check
 * the shapes against the schema (./schema.ts), then normalise and check across fields (./resolve.ts). Every
 * problem becomes a diagnostic naming the file, line, column and field, and saying what to do; one run
 * reports all of them (the cross-field steps run only once the shapes are right).
 */

import { accessSync, constants } from "node:fs";
import { readFile } from "node:fs/promises";

import { isMap, isScalar, isSeq, LineCounter, parseDocument, visit, type Document } from "yaml";
import type { z } from "zod";

import { errorMessage } from "../core/errors.js";
import { formatIoReason } from "../core/format.js";
import {
  diagnosticsFor,
  type ConfigPath,
  type Diagnostic,
  type Locate,
  type Position,
} from "./diagnostic.js";
import { resolveWritten, type ResolvedConfig } from "./resolve.js";
import type { ResolveOptions } from "./rules.js";
import { configSchema } from "./schema.js";
import { inlineSecretDiagnostics, type SecretEnvironment } from "./secrets.js";
import { RULE_PRESETS } from "./types.js";
import type { WrittenConfig } from "./written.js";

export const DEFAULT_CONFIG_FILE = "bulwark.yaml";

/** Where the config file is: `-c FILE`, else BULWARK_CONFIG, else ./bulwark.yaml. */
export function configPath(
  flag: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
): string {
  if (flag !== undefined && flag !== "") return flag;
  const fromEnv = env.BULWARK_CONFIG;
  return fromEnv !== undefined && fromEnv !== "" ? fromEnv : DEFAULT_CONFIG_FILE;
}

/** The process's environment, with files checked for readability on disk. */
export function processSecretEnvironment(
  env: Readonly<Record<string, string | undefined>> = process.env,
): SecretEnvironment {
  return {
    env,
    fileReadable: (path) => {
      try {
        accessSync(path, constants.R_OK);
        return true;
      } catch {
        return false;
      }
    },
  };
}

/**
 * Reads and resolves a config file; a file that cannot be read is an error diagnostic too. The rules of the
 * layers above come in `options.rules` (src/ops/config.ts `loadConfig` passes the policy's).
 */
export async function loadConfigFile(
  path: string,
  options: ResolveOptions = processSecretEnvironment(),
): Promise<ResolvedConfig> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    return {
      warnings: [],
      errors: [
        {
          severity: "error",
          file: path,
          path: [],
          message: `cannot read the config file: ${formatIoReason(err)}`,
          remedy:
            "create it (examples/bulwark.yaml is a complete example), or give its path with -c FILE or BULWARK_CONFIG",
        },
      ],
    };
  }
  return resolveConfig(text, path, options);
}

/** Parses, validates and resolves the text of a config file named `fileName` (used in the diagnostics). */
export function resolveConfig(text: string, fileName: string, options: ResolveOptions): ResolvedConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    return {
      warnings: [],
      errors: doc.errors.map((e) => {
        const at = e.linePos?.[0];
        return {
          severity: "error" as const,
          file: fileName,
          ...(at ? { position: { line: at.line, column: at.col } } : {}),
          path: [],
          message: `YAML syntax error: ${firstLine(e.message)}`,
          remedy: yamlRemedy(e.code),
        };
      }),
    };
  }
  const locate = locator(doc, lineCounter);
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    // The yaml library refuses aliases that expand into more nodes than MAX_ALIAS_COUNT (a "billion laughs"
    // document) with a ReferenceError: a diagnostic at the first alias, as for any other YAML error.
    const at = firstAlias(doc, lineCounter);
    return {
      warnings: [],
      errors: [
        {
          severity: "error",
          file: fileName,
          ...(at ? { position: at } : {}),
          path: [],
          message: `YAML aliases expand too far: ${errorMessage(err)}`,
          remedy: "write the values out instead of nesting aliases (&name / *name) in one another",
        },
      ],
    };
  }

  const errors = inlineSecretDiagnostics(value, fileName, locate);
  const reported = new Set(errors.map((d) => key(d.path)));
  const parsed = configSchema.safeParse(value);
  if (!parsed.success) {
    for (const d of withoutRepeats(schemaDiagnostics(parsed.error.issues, value, fileName, locate))) {
      if (!reported.has(key(d.path))) errors.push(d);
    }
  }
  if (errors.length > 0 || !parsed.success) return { warnings: [], errors };
  return resolveWritten(parsed.data, { ...options, file: fileName, locate });
}

const key = (path: ConfigPath): string => JSON.stringify(path);

/** How many nodes aliases may expand into when the document is read (the yaml library's guard). */
const MAX_ALIAS_COUNT = 1000;

/** Where the document's first alias (`*name`) is written. */
function firstAlias(doc: Document, lineCounter: LineCounter): { line: number; column: number } | undefined {
  let offset: number | undefined;
  visit(doc, {
    Alias(_key, node) {
      offset = node.range?.[0];
      return visit.BREAK;
    },
  });
  if (offset === undefined) return undefined;
  const pos = lineCounter.linePos(offset);
  return { line: pos.line, column: pos.col };
}

/** Drops "missing `sources`" next to "unknown field `sorces` — did you mean `sources`?": the suggestion says it. */
function withoutRepeats(diagnostics: Diagnostic[]): Diagnostic[] {
  const suggested = new Set<string>();
  for (const d of diagnostics) {
    const near = /^did you mean `(.+)`\?$/.exec(d.remedy)?.[1];
    if (near !== undefined) suggested.add(key([...d.path.slice(0, -1), near]));
  }
  return diagnostics.filter(
    (d) => !(d.message.startsWith("missing required field") && suggested.has(key(d.path))),
  );
}

/**
 * The known name closest to `name` when close enough to be a typo (a swap of two letters counts as one edit)
 * and no other name is as close.
 */
export function nearest(name: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  let tied = false;
  for (const k of known) {
    const d = typoDistance(name.toLowerCase(), k.toLowerCase());
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
      tied = false;
    } else if (d === bestDistance && k !== best) {
      tied = true;
    }
  }
  // Two equally near names: guessing one would mislead.
  return !tied && bestDistance <= Math.max(1, Math.floor(name.length / 3)) ? best : undefined;
}

/** Optimal string alignment distance: insertions, deletions, substitutions and adjacent transpositions. */
function typoDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  const at = (i: number, j: number): number => d[i]?.[j] ?? Infinity;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        v = Math.min(v, at(i - 2, j - 2) + 1);
      (d[i] as number[])[j] = v;
    }
  }
  return at(a.length, b.length);
}
const firstLine = (s: string): string => s.split("\n")[0]?.replace(/ at line \d+, column \d+:?$/, "") ?? s;

function yamlRemedy(code: string): string {
  switch (code) {
    case "DUPLICATE_KEY":
      return "remove one of the two entries with this key";
    case "TAB_AS_INDENT":
      return "indent with spaces, not tabs";
    case "BAD_INDENT":
    case "MISSING_CHAR":
    case "UNEXPECTED_TOKEN":
      return "check the indentation and punctuation on this line and the one before it";
    case "MULTIPLE_DOCS":
      return "keep one document in the file (remove the extra ---)";
    default:
      return "fix the YAML at this position (docs/config.md and examples/bulwark.yaml show the layout)";
  }
}

/**
 * Where a field is written: for a map entry, its key (so the line shows the field's name); for a list item,
 * the item. Undefined when the path is not in the file (a default).
 */
export function locator(doc: Document, lineCounter: LineCounter): Locate {
  const at = (offset: number | undefined): Position | undefined => {
    if (offset === undefined) return undefined;
    const p = lineCounter.linePos(offset);
    return { line: p.line, column: p.col };
  };
  return (path) => {
    if (path.length === 0) return at(doc.contents?.range?.[0]) ?? { line: 1, column: 1 };
    const parent = path.length === 1 ? doc.contents : doc.getIn(path.slice(0, -1), true);
    const last = path[path.length - 1];
    if (isMap(parent)) {
      const pair = parent.items.find((p) => (isScalar(p.key) ? p.key.value : p.key) === last);
      if (pair === undefined) return undefined;
      return at(isScalar(pair.key) ? pair.key.range?.[0] : undefined);
    }
    if (isSeq(parent) && typeof last === "number") {
      const item: unknown = parent.items[last];
      const range = item !== null && typeof item === "object" && "range" in item ? item.range : undefined;
      return at(Array.isArray(range) ? (range[0] as number) : undefined);
    }
    return undefined;
  };
}

// ---------------------------------------------------------------------------------------------------------
// Schema issues as diagnostics

type Issue = z.core.$ZodIssue;

function valueAt(root: unknown, path: ConfigPath): unknown {
  let v = root;
  for (const p of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<string | number, unknown>)[p];
  }
  return v;
}

function describeValue(v: unknown): string {
  if (v === undefined) return "nothing";
  if (v === null) return "an empty value";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a mapping";
  if (typeof v === "string") return `the text ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "..." : v)}`;
  return `${typeof v} ${JSON.stringify(v) ?? typeof v}`;
}

const EXPECTED: Record<string, string> = {
  string: "text",
  number: "a number",
  int: "a whole number",
  boolean: "true or false",
  object: "a mapping (key: value lines)",
  array: "a list",
  record: "a mapping of names to entries",
};

const isSecretSlot = (path: ConfigPath): boolean =>
  path[path.length - 1] === "password" ||
  path[path.length - 1] === "signingKey" ||
  path[path.length - 2] === "credentials";

/** What a union slot expects, for when none of its alternatives comes close. */
function unionExpectation(path: ConfigPath): string {
  if (isSecretSlot(path)) return "a secret reference: { env: NAME } or { file: PATH }";
  if (path[path.length - 1] === "command")
    return "a program and its arguments as a list, such as [pg_dumpall, --clean], or one shell command";
  if (path[path.length - 1] === "rule")
    return `a preset (${RULE_PRESETS.join(", ")}) or custom counts such as { copies: 3, media: 2, offsite: 1 }`;
  return "one of the documented forms";
}

function fieldName(path: ConfigPath): string {
  const last = path[path.length - 1];
  return typeof last === "number" ? `item ${last}` : `\`${last ?? "(top level)"}\``;
}

export function schemaDiagnostics(
  issues: readonly Issue[],
  root: unknown,
  file: string,
  locate: Locate,
  prefix: ConfigPath = [],
): Diagnostic[] {
  const { error } = diagnosticsFor(file, locate);
  const out: Diagnostic[] = [];
  for (const issue of issues) {
    const path: ConfigPath = [...prefix, ...(issue.path as Array<string | number>)];
    const value = valueAt(root, path);
    switch (issue.code) {
      case "unrecognized_keys": {
        const known = knownKeys(path, root);
        for (const k of issue.keys) {
          const near = nearest(k, known);
          out.push(
            error(
              [...path, k],
              `unknown field \`${k}\``,
              near !== undefined
                ? `did you mean \`${near}\`?`
                : known.length > 0
                  ? `remove it; the fields here are ${known.map((f) => `\`${f}\``).join(", ")}`
                  : "remove it",
            ),
          );
        }
        break;
      }
      case "invalid_type": {
        if (value === undefined && path.length > 0) {
          out.push(
            error(
              path,
              `missing required field ${fieldName(path)}`,
              "add it (docs/config.md describes each field)",
            ),
          );
        } else if (path.length === 0) {
          out.push(
            error(
              path,
              value === null || value === undefined
                ? "the file is empty"
                : "the file is not a mapping of settings",
              "start from examples/bulwark.yaml: version, targets, datasets, policies and jobs",
            ),
          );
        } else {
          const expected = EXPECTED[issue.expected] ?? issue.expected;
          out.push(
            error(
              path,
              `expected ${expected}, found ${describeValue(value)}`,
              issue.expected === "string" && (typeof value === "number" || typeof value === "boolean")
                ? `write it as text (quote it: "${value}")`
                : `write ${expected} here (docs/config.md describes the field)`,
            ),
          );
        }
        break;
      }
      case "invalid_value": {
        const values = issue.values.map((v) => String(v));
        const near = typeof value === "string" ? nearest(value, values) : undefined;
        out.push(
          error(
            path,
            `invalid value ${JSON.stringify(value)} for ${fieldName(path)}`,
            near !== undefined
              ? `did you mean ${JSON.stringify(near)}?`
              : `use ${values.length === 1 ? "" : "one of "}${values.map((v) => JSON.stringify(v)).join(", ")}`,
          ),
        );
        break;
      }
      case "invalid_union": {
        if (issue.discriminator !== undefined && "options" in issue) {
          const options = (issue.options ?? []).map((o) => String(o));
          const kind = typeof value === "string" ? nearest(value, options) : undefined;
          out.push(
            error(
              path,
              value === undefined
                ? `missing required field ${fieldName(path)}`
                : `unknown ${fieldName(path)} ${JSON.stringify(value)}`,
              kind !== undefined
                ? `did you mean ${JSON.stringify(kind)}?`
                : `use one of ${options.map((o) => JSON.stringify(o)).join(", ")}`,
            ),
          );
          break;
        }
        // The alternative that came closest: the one whose problems are not about the value's overall type.
        const alternatives: Issue[][] = issue.errors;
        const candidates = alternatives.filter(
          (errs) =>
            !errs.some(
              (e) => e.path.length === 0 && (e.code === "invalid_type" || e.code === "invalid_value"),
            ),
        );
        const best = candidates
          .map((errs) => withoutRepeats(schemaDiagnostics(errs, root, file, locate, path)))
          .sort((a, b) => a.length - b.length)[0];
        if (value === undefined && path.length > 0) {
          // Said like any missing field, so a misspelling's "did you mean" can stand for it (withoutRepeats).
          out.push(
            error(
              path,
              `missing required field ${fieldName(path)}`,
              `add it: ${unionExpectation(path)} (docs/config.md)`,
            ),
          );
        } else if (best !== undefined && typeof value === "object" && value !== null) {
          out.push(...best);
        } else {
          // A near miss of one of the accepted words (a preset) says which one was meant.
          const words = alternatives.flatMap((errs) =>
            errs.flatMap((e) =>
              e.path.length === 0 && e.code === "invalid_value" ? e.values.map(String) : [],
            ),
          );
          const near = typeof value === "string" && !isSecretSlot(path) ? nearest(value, words) : undefined;
          out.push(
            error(
              path,
              `expected ${unionExpectation(path)}, found ${isSecretSlot(path) && typeof value === "string" ? "a plain value" : describeValue(value)}`,
              isSecretSlot(path)
                ? "write a reference, never the secret itself: { env: NAME } or { file: PATH }"
                : near !== undefined
                  ? `did you mean ${JSON.stringify(near)}?`
                  : `write ${unionExpectation(path)} (docs/config.md)`,
            ),
          );
        }
        break;
      }
      case "too_small": {
        const min = Number(issue.minimum);
        out.push(
          error(
            path,
            issue.origin === "array"
              ? `the list ${fieldName(path)} is empty`
              : issue.origin === "string"
                ? `${fieldName(path)} is empty`
                : `${fieldName(path)} is ${String(value)}, less than ${min}`,
            issue.origin === "array"
              ? `give at least ${min} ${min === 1 ? "entry" : "entries"}`
              : issue.origin === "string"
                ? "give a value or remove the field"
                : `use a number of at least ${min}`,
          ),
        );
        break;
      }
      case "too_big":
        out.push(
          error(
            path,
            `${fieldName(path)} is ${String(value)}, more than ${Number(issue.maximum)}`,
            `use a number of at most ${Number(issue.maximum)}`,
          ),
        );
        break;
      default:
        out.push(error(path, issue.message, "see docs/config.md for what this field accepts"));
    }
  }
  return out;
}

/** The field names the schema accepts for the object at `path` (for "did you mean"). */
export function knownKeys(path: ConfigPath, root: unknown): string[] {
  let schemas: z.core.$ZodType[] = [configSchema];
  for (let i = 0; i <= path.length; i++) {
    // Unwrap optionals and unions down to the objects that fit the value here.
    const expanded: z.core.$ZodType[] = [];
    const value = valueAt(root, path.slice(0, i));
    const pending = [...schemas];
    while (pending.length > 0) {
      const s = pending.pop() as z.core.$ZodType;
      const def = s._zod.def as unknown as Record<string, unknown> & { type: string };
      if (def.type === "optional") pending.push(def.innerType as z.core.$ZodType);
      else if (def.type === "union") {
        const options = def.options as z.core.$ZodType[];
        const discriminator = def.discriminator as string | undefined;
        const tag =
          discriminator !== undefined && value !== null && typeof value === "object"
            ? (value as Record<string, unknown>)[discriminator]
            : undefined;
        const fitting = options.filter((o) => {
          if (tag === undefined || discriminator === undefined) return true;
          const shape = (o._zod.def as unknown as { shape?: Record<string, z.core.$ZodType> }).shape;
          const d = shape?.[discriminator]?._zod.def as unknown as { values?: unknown[] } | undefined;
          return d?.values?.includes(tag) ?? true;
        });
        pending.push(...(fitting.length > 0 ? fitting : options));
      } else expanded.push(s);
    }
    if (i === path.length) {
      const keys = new Set<string>();
      for (const s of expanded) {
        const shape = (s._zod.def as unknown as { shape?: Record<string, unknown> }).shape;
        if (shape) for (const k of Object.keys(shape)) keys.add(k);
      }
      return [...keys];
    }
    const step = path[i];
    const next: z.core.$ZodType[] = [];
    for (const s of expanded) {
      const def = s._zod.def as unknown as Record<string, unknown> & { type: string };
      if (def.type === "object" && typeof step === "string") {
        const child = (def.shape as Record<string, z.core.$ZodType>)[step];
        if (child) next.push(child);
      } else if (def.type === "record") next.push(def.valueType as z.core.$ZodType);
      else if (def.type === "array") next.push(def.element as z.core.$ZodType);
    }
    schemas = next;
  }
  return [];
}

/** The written config of a text that is known to be valid, for tests and tools; throws with the diagnostics. */
export function parseWritten(text: string, fileName = DEFAULT_CONFIG_FILE): WrittenConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter });
  if (doc.errors.length > 0) throw new Error(doc.errors.map((e) => errorMessage(e)).join("\n"));
  const parsed = configSchema.safeParse(doc.toJS());
  if (!parsed.success) {
    const diagnostics = schemaDiagnostics(
      parsed.error.issues,
      doc.toJS(),
      fileName,
      locator(doc, lineCounter),
    );
    throw new Error(diagnostics.map((d) => `${d.path.join(".")}: ${d.message} — ${d.remedy}`).join("\n"));
  }
  return parsed.data;
}
