import type { Command } from "commander";
import { BulwarkError } from "../../core/errors.js";
import { getPassword, withRepository, type GlobalOptions, CONFIG_TARGET_HELP } from "../context.js";

export function registerKey(program: Command, globals: () => GlobalOptions): void {
  const key = program.command("key").description("manage the passwords (keys) that open the repository");

  key
    .command("list")
    .option("-c, --config <file>", CONFIG_TARGET_HELP)
    .description("list keys")
    .action(async () => {
      await withRepository(globals(), "none", async ({ repo, out }) => {
        const keys = await repo.listKeys();
        out.emitJson(
          keys.map((k) => ({
            id: k.name,
            current: k.current,
            created: k.file.created,
            hostname: k.file.hostname,
            username: k.file.username,
          })),
        );
        out.result(`  ${"ID".padEnd(10)}${"User".padEnd(12)}${"Host".padEnd(20)}Created`);
        for (const k of keys) {
          out.result(
            `${k.current ? "*" : " "} ${k.name.slice(0, 8).padEnd(10)}${k.file.username.slice(0, 11).padEnd(12)}${k.file.hostname.slice(0, 19).padEnd(20)}${k.file.created.slice(0, 19).replace("T", " ")}`,
          );
        }
      });
    });

  key
    .command("add")
    .option("-c, --config <file>", CONFIG_TARGET_HELP)
    .description("add a password that also opens the repository")
    .option("--new-password-file <file>", "read the new password from a file")
    .action(async (flags: { newPasswordFile?: string }) => {
      await withRepository(globals(), "none", async ({ repo, out }) => {
        const password = await newPassword(flags.newPasswordFile);
        const name = await repo.addKey(password);
        out.emitJson({ id: name });
        out.result(`added key ${name.slice(0, 8)}`);
      });
    });

  key
    .command("remove")
    .option("-c, --config <file>", CONFIG_TARGET_HELP)
    .description("remove a key (not the one used to open the repository)")
    .argument("<id>", "key id or unique prefix")
    .action(async (id: string) => {
      await withRepository(globals(), "exclusive", async ({ repo, out }) => {
        const keys = await repo.listKeys();
        const matches = keys.filter((k) => k.name.startsWith(id));
        if (matches.length !== 1) {
          throw new BulwarkError(
            "USAGE",
            matches.length === 0 ? `no key ${id}` : `key prefix ${id} is ambiguous`,
            {
              hint: "see `bulwark key list`",
            },
          );
        }
        if (keys.length === 1) throw new BulwarkError("USAGE", "refusing to remove the only key");
        await repo.removeKey(matches[0]!.name);
        out.emitJson({ removed: matches[0]!.name });
        out.result(`removed key ${matches[0]!.name.slice(0, 8)}`);
      });
    });

  key
    .command("passwd")
    .option("-c, --config <file>", CONFIG_TARGET_HELP)
    .description("change the password: adds a key with the new password, then removes the current one")
    .option("--new-password-file <file>", "read the new password from a file")
    .action(async (flags: { newPasswordFile?: string }) => {
      await withRepository(globals(), "exclusive", async ({ repo, out }) => {
        const password = await newPassword(flags.newPasswordFile);
        const name = await repo.addKey(password);
        // The new key exists before the old one goes: a crash in between leaves two working keys.
        await repo.backend.remove({ type: "key", name: repo.keyName });
        out.emitJson({ id: name, removed: repo.keyName });
        out.result(`password changed (key ${name.slice(0, 8)})`);
      });
    });
}

async function newPassword(file: string | undefined): Promise<string> {
  const env = { ...process.env };
  delete env.BULWARK_PASSWORD;
  delete env.BULWARK_PASSWORD_FILE;
  if (file === undefined && env.BULWARK_NEW_PASSWORD !== undefined) return env.BULWARK_NEW_PASSWORD;
  const { readPassword } = await import("../password.js");
  if (file !== undefined) return getPassword({ passwordFile: file });
  return readPassword({
    env,
    stdin: process.stdin,
    stderr: process.stderr,
    prompt: "enter the new password: ",
    confirm: true,
  });
}
