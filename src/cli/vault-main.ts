/**
 * A standalone entry for the vault host: `node dist/cli/vault-main.js serve-repo ...`, the same command as
 * `bulwark serve-repo` without the rest of the CLI (a vault host needs nothing else). The end-to-end test
 * starts it inside a network namespace.
 */

import { Command, CommanderError } from "commander";

import { errorMessage, findBulwarkError } from "../core/errors.js";
import { registerServeRepo } from "./commands/serve-repo.js";

const program = new Command();
program
  .name("bulwark-vault")
  .option("--json", "machine-readable output on stdout")
  .option("-q, --quiet", "only warnings and results")
  .exitOverride();

registerServeRepo(program, () => {
  const o = program.opts<{ json?: boolean; quiet?: boolean }>();
  return { json: o.json === true, quiet: o.quiet === true };
});

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode === 0 ? 0 : 1;
  } else {
    const known = findBulwarkError(err);
    process.stderr.write(`error: ${known?.message ?? errorMessage(err)}\n`);
    if (known?.hint) process.stderr.write(`hint: ${known.hint}\n`);
    process.exitCode = 1;
  }
}
