/**
 * `bulwark untamper [--dry-run]`: lists and removes the delete markers and foreign versions put over the
 * files of a repository on an S3 bucket with Object Lock (src/ops/untamper.ts, docs/design.md §21).
 */
import type { Command } from "commander";
import { untamper } from "../../ops/untamper.js";
import { EXIT } from "../exit-codes.js";
import {
  Output,
  openCommandBackend,
  renderWithProgress,
  type GlobalOptions,
  CONFIG_TARGET_HELP,
} from "../context.js";
import { createProgress } from "../progress.js";

export function registerUntamper(program: Command, globals: () => GlobalOptions): void {
  program
    .command("untamper")
    .option("-c, --config <file>", CONFIG_TARGET_HELP)
    .description(
      "remove the delete markers and foreign versions put over a repository's files (S3 with Object Lock)",
    )
    .option("-n, --dry-run", "list the tampering and what would be removed; remove nothing")
    .addHelpText(
      "after",
      [
        "",
        "Reads already use each file's genuine version (its oldest, which Object Lock keeps); this removes what",
        "was put over it by version id. A foreign version under governance retention is removed with",
        "BypassGovernanceRetention (the credentials need that permission); one under compliance retention",
        "cannot be removed by anyone through S3 before its date and is listed with what it needs. Needs no",
        "password: the genuine version of a file is never deleted.",
        "",
        "Exit codes: 0 no tampering, or all of it removed; 3 tampering remains (with --dry-run: tampering",
        "found; otherwise versions the credentials could not remove, listed with what they need); 1 error.",
      ].join("\n"),
    )
    .action(async (flags: { dryRun?: boolean }) => {
      const g = globals();
      const out = new Output(g);
      const { backend } = await openCommandBackend(g);
      const progress = createProgress(process.stderr, { enabled: out.progressEnabled, label: "untamper" });
      try {
        const r = await untamper({
          backend,
          dryRun: flags.dryRun === true,
          events: renderWithProgress(out, progress),
        });
        progress.done();
        out.emitJson(r);
        for (const f of r.tampered.slice(0, 50)) {
          const markers = f.foreign.filter((v) => v.deleteMarker).length;
          const versions = f.foreign.length - markers;
          out.result(
            `tampered: ${short(f.file)}: ${markers} delete marker${markers === 1 ? "" : "s"}, ${versions} foreign version${versions === 1 ? "" : "s"} over genuine version ${f.genuineVersion}`,
          );
        }
        if (r.tampered.length > 50) out.result(`  ... and ${r.tampered.length - 50} more files`);
        for (const a of r.actions.filter((x) => x.outcome === "refused")) {
          out.result(`cannot remove ${short(a.file)} version ${a.versionId}: ${a.reason ?? ""}`);
          if (a.needs) out.result(`  needs: ${a.needs}`);
        }
        const would = r.actions.filter((a) => a.outcome === "would-remove").length;
        if (r.tampered.length > 0) {
          out.result(
            flags.dryRun
              ? `dry run: would remove ${would} of ${r.actions.length} delete markers and foreign versions; ${r.refused} need more than these credentials`
              : `removed ${r.removed} of ${r.actions.length} delete markers and foreign versions; ${r.refused} remain`,
          );
        } else out.result(`no tampering found at ${r.location}`);
        const remains = flags.dryRun ? r.tampered.length > 0 : r.refused > 0;
        process.exitCode = remains ? EXIT.PARTIAL : EXIT.OK;
      } finally {
        progress.done();
        await backend.close();
      }
    });
}

/** "pack/1a2b3c4d5e6f" for a file name of 64 hex digits, as the other commands show them. */
function short(file: string): string {
  return file.replace(/\/([0-9a-f]{12})[0-9a-f]{52}$/, "/$1");
}
