import type { Command } from "commander";
import { BulwarkError } from "../../core/errors.js";
import { Repository } from "../../repository/repository.js";
import { Output, getPassword, openBackend, repositoryLocation, type GlobalOptions } from "../context.js";

export function registerInit(program: Command, globals: () => GlobalOptions): void {
  program
    .command("init")
    .description("create a new repository")
    .option("--compression <level>", "zstd level 0-19 (0 stores data uncompressed)", "2")
    .option(
      "--copy-chunker-params-from <repo>",
      "share chunker parameters and blob ids with another repository",
    )
    .option("--from-password-file <file>", "password file of the --copy-chunker-params-from repository")
    .action(
      async (opts: { compression: string; copyChunkerParamsFrom?: string; fromPasswordFile?: string }) => {
        const g = globals();
        const out = new Output(g);
        const location = repositoryLocation(g);
        const level = Number(opts.compression);
        if (!Number.isInteger(level) || level < 0 || level > 19) {
          throw new BulwarkError(
            "USAGE",
            `--compression must be an integer from 0 to 19, got ${opts.compression}`,
          );
        }
        let copyParamsFrom;
        if (opts.copyChunkerParamsFrom) {
          const fromBackend = await openBackend(opts.copyChunkerParamsFrom, false);
          const fromPassword = await getPassword(
            { ...(opts.fromPasswordFile ? { passwordFile: opts.fromPasswordFile } : {}) },
            false,
            "enter password of the source repository: ",
          );
          copyParamsFrom = (await Repository.open(fromBackend, fromPassword)).config;
        }
        const password = await getPassword(g, true, "enter password for the new repository: ");
        const backend = await openBackend(location, true);
        const repo = await Repository.init(backend, password, {
          compressionLevel: level,
          ...(copyParamsFrom ? { copyParamsFrom } : {}),
        });
        out.emitJson({ id: repo.id, location: backend.location });
        out.info(`created repository ${repo.id.slice(0, 10)} at ${backend.location}`);
        out.info("Keep the password safe: without it the data cannot be recovered.");
        await backend.close();
      },
    );
}
