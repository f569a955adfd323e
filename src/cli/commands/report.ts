/**
 * `bulwark report`: evidence for an auditor (docs/design.md §17c). `report verification|drill|dr` renders
 * recorded verifications, drills or DR runs (with their runbooks' change logs) from the catalog as
 * Markdown, HTML or JSON, signed with the config's Ed25519 key on request; `report verify FILE` checks a
 * report's signature and compares its records with the catalog's evidence chain. The operations are in src/ops/evidence.ts; this parses and prints.
 *
 * The progress bar follows the walk of the catalog's evidence chain, the part that grows with history.
 */
import { existsSync } from "node:fs";
import { readFile, rename, rm, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { basename, dirname, join } from "node:path";

import type { Command } from "commander";

import type { Catalog, DrRunRecord, EvidenceKind } from "../../catalog/catalog.js";
import { systemClock } from "../../core/clock.js";
import { BulwarkError } from "../../core/errors.js";
import { formatIoReason } from "../../core/format.js";
import { EVIDENCE_NAMES, REPORT_FORMATS, type ReportFormat } from "../../evidence/report.js";
import { publicKeyFromPem } from "../../evidence/signature.js";
import {
  buildReport,
  checkReport,
  readSigningKey,
  reportKnown,
  type ReportCheck,
} from "../../ops/evidence.js";
import { loadConfigForCommand, loadConfigIfPresent, oneRepoTarget } from "../config-file.js";
import { Output, type GlobalOptions } from "../context.js";
import { EXIT } from "../exit-codes.js";
import { createProgress, type ProgressSink } from "../progress.js";

interface ReportFlags {
  config?: string;
  dataset?: string;
  target?: string;
  runbook?: string;
  mode?: string;
  id?: string;
  format?: string;
  output?: string;
  sign?: boolean;
  catalog?: string;
}

interface VerifyFlags {
  publicKey?: string;
  /** A path, false for --no-catalog, true (commander's default for a negatable option) for neither. */
  catalog?: string | boolean;
}

const CATALOG_OPTION = [
  "--catalog <path>",
  "the catalog file (env BULWARK_CATALOG; default $BULWARK_STATE_DIR/catalog.db, else ~/.local/state/bulwark/catalog.db)",
] as const;

export function registerReport(program: Command, globals: () => GlobalOptions): void {
  const report = program
    .command("report")
    .description("evidence for an auditor: recorded verifications, drills and DR runs as signed reports")
    .addHelpText(
      "after",
      `
Examples:
  bulwark report verification -c bulwark.yaml --format html --output verify.html --sign
  bulwark report dr -c bulwark.yaml --runbook shop --format html --output dr.html --sign
  bulwark report verify verify.html --public-key signing-key.pub.pem`,
    );

  for (const kind of ["verification", "drill"] as const) {
    report
      .command(kind)
      .description(
        kind === "verification"
          ? "render recorded verifications: what was read, from where, when, how long, the findings"
          : "render recorded drills: what was restored, from where, RTO and RPO, the validators, the findings",
      )
      .option(
        "-c, --config <file>",
        "the config (env BULWARK_CONFIG; default ./bulwark.yaml if present); -r TARGET then names a target, as --target",
      )
      .option("--dataset <name>", "only this dataset")
      .option("--target <name>", "only this target (copy)")
      .option("--id <n>", `only the ${kind} with this record number`)
      .option("--format <format>", "md, html or json (default md; json with --json)")
      .option("--output <file>", "write the report to this file (default: standard output)")
      .option("--sign", "sign it with the config's evidence.signingKey (Ed25519)")
      .option(...CATALOG_OPTION)
      .addHelpText(
        "after",
        `
By default the latest ${kind === "verification" ? "verification of each dataset and target" : "drill of each dataset"} is shown. Each record
carries its position and hash in the catalog's evidence chain, and the report states whether the chain is
intact. --sign appends an Ed25519 signature over the exact bytes of the report (with the public key and its
fingerprint) in a form each format keeps; \`bulwark report verify FILE\` checks it. Make a key with
\`openssl genpkey -algorithm ed25519 -out signing-key.pem\` and name it in the config:
evidence: { signingKey: { file: /etc/bulwark/signing-key.pem } }.

Exit codes:
  0   the report was written (whatever the records' results)
  1   error: no catalog, no such record, unknown dataset or target, an unreadable or wrong signing key`,
      )
      .action(async (flags: ReportFlags) => {
        const opts = globals();
        await makeReport(kind, flags, new Output(opts), opts.repo);
      });
  }

  report
    .command("dr")
    .description(
      "render recorded DR runs: RTO against the target, RPO of each dataset, every step's timeline, the runbook's change log",
    )
    .option(
      "-c, --config <file>",
      "the config (env BULWARK_CONFIG; default ./bulwark.yaml if present): names the runbooks, and tells whether a run ran the current definition",
    )
    .option("--runbook <name>", "only this runbook")
    .option("--mode <mode>", "only runs of this mode: drill, failover or failback")
    .option("--id <n>", "only the DR run with this record number")
    .option("--format <format>", "md, html or json (default md; json with --json)")
    .option("--output <file>", "write the report to this file (default: standard output)")
    .option("--sign", "sign it with the config's evidence.signingKey (Ed25519)")
    .option(...CATALOG_OPTION)
    .addHelpText(
      "after",
      `
By default the latest DR run (\`bulwark dr drill\`, \`dr failover\`) of each runbook is shown: its status,
the definition it ran and whether that is the config's current one, the RTO achieved against the target,
the RPO of each restored dataset and the copy it came from, the isolation, the failure and what to do next,
and every unit of its timeline (start, end, outcome, message, output). Then the runbook's change log: every
version of its definition, when it was recorded and what changed. Each DR run and each version carries its
position and hash in the catalog's evidence chain; --sign and \`bulwark report verify\` work as for the
other reports.

Exit codes:
  0   the report was written (whatever the runs' results)
  1   error: no catalog, no such run, unknown runbook, an unreadable or wrong signing key`,
    )
    .action(async (flags: ReportFlags) => {
      const opts = globals();
      await makeReport("dr", flags, new Output(opts), opts.repo);
    });

  report
    .command("verify")
    .description("check a report's signature and compare its records with the catalog's evidence chain")
    .argument("<file>", "the report (md, html or json)")
    .option("--public-key <pem>", "require the signature to be by this key (a PEM public key file)")
    .option(...CATALOG_OPTION)
    .option("--no-catalog", "do not compare with a catalog")
    .addHelpText(
      "after",
      `
The signature is checked against the public key the report carries and, with --public-key, that key must
be the one given (without it, compare the printed fingerprint with the one you trust). The records are
then compared with the catalog (the one the report names, or the one given with --catalog) when it exists:
each must still be in it at the same position with the same hash, and the catalog's chain must be intact up
to them. A signature proves who made the report; the catalog comparison shows whether the catalog was
changed since.

Exit codes:
  0   signed, the signature is valid (by the given key), and nothing contradicts the report
  1   error: the file or the public key cannot be read
  21  invalid: the report was changed after signing, signed by another key, or the catalog contradicts it
  22  not signed (the records are still compared with the catalog)`,
    )
    .action(async (file: string, flags: VerifyFlags) => {
      await verifyReport(file, flags, new Output(globals()));
    });
}

/** `repo`: the global -r, a target's name when a config is given (as --target). */
async function makeReport(
  kind: EvidenceKind,
  flags: ReportFlags,
  out: Output,
  repo: string | undefined,
): Promise<void> {
  const format = formatOption(flags.format, out);
  if (out.json && flags.output === undefined && format !== "json") {
    throw new BulwarkError("USAGE", `--json prints the report itself as JSON, not as ${format}`, {
      hint: "drop --format, or write the report with --output FILE and get the summary as JSON",
    });
  }
  const id = flags.id === undefined ? undefined : idOption(flags.id);
  const mode = flags.mode === undefined ? undefined : modeOption(flags.mode);
  const loaded =
    flags.sign === true ? await loadConfigForCommand(flags.config) : await loadConfigIfPresent(flags.config);
  const config = loaded?.config;
  // A DR report has no target: -r means nothing to it.
  const target =
    loaded !== undefined && flags.config !== undefined && kind !== "dr"
      ? oneRepoTarget(loaded, repo, flags.target)
      : flags.target;
  let signingKey;
  if (flags.sign === true) {
    const ref = config?.evidence?.signingKey;
    if (ref === undefined) {
      throw new BulwarkError(
        "CONFIG_INVALID",
        `${loaded?.file ?? "the config"} has no evidence.signingKey to sign with`,
        {
          hint: "make a key with `openssl genpkey -algorithm ed25519 -out signing-key.pem` (chmod 600) and add evidence: { signingKey: { file: /path/signing-key.pem } }",
        },
      );
    }
    const read = await readSigningKey(ref, process.env);
    for (const w of read.warnings) out.warn(w);
    signingKey = read.key;
  }
  const catalog = await openExisting(flags.catalog);
  const progress = createProgress(process.stderr, { enabled: out.progressEnabled, label: "evidence chain" });
  let built;
  try {
    built = buildReport({
      store: catalog,
      selection: {
        kind,
        ...(flags.dataset !== undefined ? { dataset: flags.dataset } : {}),
        ...(target !== undefined ? { target } : {}),
        ...(flags.runbook !== undefined ? { runbook: flags.runbook } : {}),
        ...(mode !== undefined ? { mode } : {}),
        ...(id !== undefined ? { id } : {}),
        ...(config !== undefined ? { known: reportKnown(config) } : {}),
      },
      format,
      clock: systemClock,
      host: hostname(),
      ...(signingKey !== undefined ? { signingKey } : {}),
      chainProgress: chainProgress(progress),
    });
  } finally {
    progress.done();
    catalog.close();
  }
  if (!built.chain.ok) {
    out.warn(
      `warning: the catalog's evidence chain is broken${built.chain.broken?.seq !== undefined ? ` at position ${built.chain.broken.seq}` : ""}: ${built.chain.broken?.reason ?? ""} (the report says so)`,
    );
  }
  if (flags.output === undefined) {
    process.stdout.write(built.text);
    return;
  }
  await writeAtomically(flags.output, built.text);
  out.emitJson({
    output: flags.output,
    format,
    records: built.records,
    chain: built.chain,
    signed: built.fingerprint !== undefined,
    ...(built.fingerprint !== undefined ? { fingerprint: built.fingerprint } : {}),
  });
  const shown = built.records.filter((r) => r.kind === kind);
  const failed = shown.filter((r) => !r.pass).length;
  const versions = built.records.length - shown.length;
  out.result(
    (kind === "dr"
      ? `wrote ${shown.length} DR ${shown.length === 1 ? "run" : "runs"} (${failed} failed) and ${versions} runbook ${versions === 1 ? "version" : "versions"}`
      : `wrote ${shown.length} ${kind} ${shown.length === 1 ? "record" : "records"} (${failed} failed)`) +
      ` to ${flags.output}` +
      (built.fingerprint !== undefined ? `, signed by key ${built.fingerprint}` : ""),
  );
}

async function verifyReport(file: string, flags: VerifyFlags, out: Output): Promise<void> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new BulwarkError("USAGE", `cannot read the report ${file}: ${formatIoReason(err)}`, { cause: err });
  }
  let pinned;
  if (flags.publicKey !== undefined) {
    let pem: string;
    try {
      pem = await readFile(flags.publicKey, "utf8");
    } catch (err) {
      throw new BulwarkError(
        "USAGE",
        `cannot read the public key ${flags.publicKey}: ${formatIoReason(err)}`,
        {
          cause: err,
        },
      );
    }
    pinned = publicKeyFromPem(pem, `the public key ${flags.publicKey}`);
  }
  let catalog: Catalog | undefined;
  const named = typeof flags.catalog === "string" ? flags.catalog : undefined;
  const explicit = named !== undefined;
  if (flags.catalog !== false) {
    const { Catalog } = await import("../../catalog/catalog.js");
    const path =
      named !== undefined
        ? Catalog.defaultPath({ BULWARK_CATALOG: named })
        : Catalog.defaultPath(process.env);
    if (existsSync(path)) catalog = Catalog.open(path);
    else if (explicit)
      throw new BulwarkError("NOT_FOUND", `there is no catalog at ${path}`, {
        hint: "name an existing catalog file",
      });
  }
  let check: ReportCheck;
  const progress = createProgress(process.stderr, { enabled: out.progressEnabled, label: "evidence chain" });
  try {
    check = checkReport({
      file: text,
      ...(pinned !== undefined ? { pinned } : {}),
      ...(catalog !== undefined ? { store: catalog } : {}),
      explicitCatalog: explicit,
      chainProgress: chainProgress(progress),
    });
  } finally {
    progress.done();
    catalog?.close();
  }
  out.emitJson({ file, ...check });
  if (check.signature !== undefined) {
    const s = check.signature;
    out.result(
      `signature: ${s.valid ? "valid" : "INVALID"}, by key ${s.fingerprint || "(unreadable)"}` +
        (s.pinned === true ? " (the key given)" : s.pinned === false ? " (NOT the key given)" : ""),
    );
  } else {
    out.result("signature: none (the report is not signed)");
  }
  for (const r of check.records) {
    out.result(
      `${EVIDENCE_NAMES[r.kind]} ${r.id}${r.seq !== undefined ? ` (chain position ${r.seq})` : ""}: ${
        {
          same: "the same in the catalog",
          different: "DIFFERENT in the catalog",
          missing: "MISSING from the catalog",
          unchained: "older than the evidence chain",
          "not checked": "not compared with a catalog",
        }[r.catalog]
      }`,
    );
  }
  if (check.chain !== undefined)
    out.result(
      `catalog evidence chain: ${check.chain.ok ? `intact (${check.chain.records} ${check.chain.records === 1 ? "record" : "records"})` : `BROKEN: ${check.chain.broken?.reason ?? ""}`}`,
    );
  for (const n of check.notes) out.info(`note: ${n}`);
  for (const p of check.problems) out.warn(`error: ${p}`);
  const verdict = check.ok
    ? "the report verifies"
    : check.problems.length > 0
      ? "the report does NOT verify"
      : "the report is not signed";
  out.result(verdict);
  process.exitCode = check.ok
    ? EXIT.OK
    : check.problems.length > 0
      ? EXIT.EVIDENCE_INVALID
      : EXIT.EVIDENCE_UNSIGNED;
}

/** The chain walk as progress: links checked of links in the chain. */
export function chainProgress(progress: ProgressSink): (checked: number, total: number) => void {
  return (checked, total) => progress.update({ filesDone: checked, filesTotal: total, bytesDone: 0 });
}

/** The catalog a report reads; never created (a report of nothing says so instead). */
async function openExisting(flag: string | undefined): Promise<Catalog> {
  const { Catalog } = await import("../../catalog/catalog.js");
  const path =
    flag !== undefined && flag !== ""
      ? Catalog.defaultPath({ BULWARK_CATALOG: flag })
      : Catalog.defaultPath(process.env);
  if (!existsSync(path)) {
    throw new BulwarkError("NOT_FOUND", `there is no catalog at ${path}, so nothing to report`, {
      hint: "`bulwark verify -c CONFIG`, `bulwark drill -c CONFIG` and `bulwark dr drill RUNBOOK -c CONFIG` record into it (BULWARK_CATALOG or --catalog point elsewhere)",
    });
  }
  return Catalog.open(path);
}

function formatOption(value: string | undefined, out: Output): ReportFormat {
  if (value === undefined) return out.json ? "json" : "md";
  if (!(REPORT_FORMATS as readonly string[]).includes(value)) {
    throw new BulwarkError("USAGE", `--format must be md, html or json, got ${JSON.stringify(value)}`);
  }
  return value as ReportFormat;
}

const DR_MODES: readonly DrRunRecord["mode"][] = ["drill", "failover", "failback"];

function modeOption(value: string): DrRunRecord["mode"] {
  if (!(DR_MODES as readonly string[]).includes(value))
    throw new BulwarkError(
      "USAGE",
      `--mode must be drill, failover or failback, got ${JSON.stringify(value)}`,
    );
  return value as DrRunRecord["mode"];
}

function idOption(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n === 0) {
    throw new BulwarkError(
      "USAGE",
      `--id must be a record number (1, 2, ...), got ${JSON.stringify(value)}`,
      {
        hint: "the numbers are in the reports (Record) and in `bulwark report ... --format json`",
      },
    );
  }
  return n;
}

/** Writes the file whole or not at all: a temporary file beside it, then a rename. */
async function writeAtomically(path: string, text: string): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  try {
    await writeFile(temp, text, { flag: "wx" });
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true }).catch(() => undefined);
    throw new BulwarkError("IO", `cannot write the report to ${path}: ${formatIoReason(err)}`, {
      cause: err,
    });
  }
}
