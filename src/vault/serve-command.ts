/**
 * `bulwark serve-repo`: runs the vault (./server.ts) over a repository directory, and
 * `bulwark serve-repo token add` makes a token for it. Registered by the CLI like src/cli/commands/*.ts.
 *
 *   bulwark serve-repo --path /srv/vault --listen 10.0.0.2:8000 --tokens /etc/bulwark/tokens.json \
 *     [--tls-cert cert.pem --tls-key key.pem] [--init]
 *   bulwark serve-repo token add --tokens /etc/bulwark/tokens.json --name laptop --role append-only
 */

import type { Command } from "commander";

import { Output, type GlobalOptions } from "../cli/context.js";
import { BulwarkError } from "../core/errors.js";
import type { ImmutabilityMode } from "./immutable.js";
import { startVaultServer, type VaultLogger } from "./server.js";
import { addToken, VAULT_ROLES, type VaultRole } from "./tokens.js";

interface ServeFlags {
  path?: string;
  listen: string;
  tokens?: string;
  tlsCert?: string;
  tlsKey?: string;
  init?: boolean;
  immutable: string;
  maxBodyMib: string;
}

export function registerServeRepo(program: Command, globals: () => GlobalOptions): void {
  const serve = program
    .command("serve-repo")
    .description("serve a repository directory over HTTP(S) to `rest:` clients, with append-only tokens")
    .option("--path <dir>", "the repository directory the vault stores in")
    .option("--listen <host:port>", "address to listen on", "127.0.0.1:8000")
    .option("--tokens <file>", "the tokens file (hashes and roles; see `serve-repo token add`)")
    .option("--tls-cert <file>", "PEM certificate: serve HTTPS (with --tls-key)")
    .option("--tls-key <file>", "PEM private key of --tls-cert")
    .option("--init", "create the repository directory layout if it does not exist")
    .option("--immutable <mode>", "make stored files immutable with chattr +i: auto, require or off", "auto")
    .option("--max-body-mib <n>", "largest file a client may upload, in MiB", "1024")
    .addHelpText(
      "after",
      `
Roles: an append-only token may read, list and add files, and replace or delete only lock files; an
admin token may also delete and replace (prune, forget). Keep admin tokens off the hosts you back up.
As root on a file system that supports it, stored files are made immutable (chattr +i) until an admin
deletes them.

Example:
  bulwark serve-repo token add --tokens /etc/bulwark/vault-tokens.json --name web1 --role append-only
  bulwark serve-repo --init --path /srv/vault --listen 10.0.0.2:8000 --tokens /etc/bulwark/vault-tokens.json`,
    )
    .action(async (flags: ServeFlags) => {
      const out = new Output(globals());
      if (flags.path === undefined) throw new BulwarkError("USAGE", "serve-repo needs --path DIR");
      if (flags.tokens === undefined) throw new BulwarkError("USAGE", "serve-repo needs --tokens FILE");
      const { host, port } = parseListen(flags.listen);
      const immutable = parseImmutable(flags.immutable);
      const maxBodyMib = Number(flags.maxBodyMib);
      if (!Number.isSafeInteger(maxBodyMib) || maxBodyMib <= 0) {
        throw new BulwarkError("USAGE", `--max-body-mib must be a positive integer, got ${flags.maxBodyMib}`);
      }
      const quiet = globals().quiet === true;
      const logger: VaultLogger = {
        info: (line) => {
          if (!quiet) process.stderr.write(`${new Date().toISOString()} ${line}\n`);
        },
        warn: (line) => process.stderr.write(`${new Date().toISOString()} warning: ${line}\n`),
      };
      const server = await startVaultServer({
        path: flags.path,
        init: flags.init === true,
        host,
        port,
        tokens: flags.tokens,
        immutable,
        maxBodyBytes: maxBodyMib * 1024 * 1024,
        logger,
        ...(flags.tlsCert === undefined ? {} : { tlsCert: flags.tlsCert }),
        ...(flags.tlsKey === undefined ? {} : { tlsKey: flags.tlsKey }),
      });
      out.emitJson({ url: server.url, immutable: server.immutable });
      out.result(
        `serving ${flags.path} at ${server.url} (immutable files: ${server.immutable ? "yes" : "no"})`,
      );
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          process.off("SIGINT", stop);
          process.off("SIGTERM", stop);
          resolve();
        };
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
      });
      await server.close();
    });

  const token = serve.command("token").description("manage the vault's access tokens");
  token
    .command("add")
    .description("create a token; it is printed once and only its hash is stored")
    .option("--tokens <file>", "the tokens file (created when missing, mode 0600)")
    .option("--name <name>", "who holds the token (shown in the vault's log)")
    .option("--role <role>", `${VAULT_ROLES.join(" or ")}`, "append-only")
    .action(async (_opts: unknown, command: Command) => {
      // serve-repo has a --tokens of its own, which Commander may credit to it: read both levels.
      const flags = command.optsWithGlobals<{ tokens?: string; name?: string; role: string }>();
      const out = new Output(globals());
      if (flags.tokens === undefined) throw new BulwarkError("USAGE", "token add needs --tokens FILE");
      if (flags.name === undefined) throw new BulwarkError("USAGE", "token add needs --name NAME");
      if (!(VAULT_ROLES as readonly string[]).includes(flags.role)) {
        throw new BulwarkError("USAGE", `--role must be ${VAULT_ROLES.join(" or ")}, got ${flags.role}`);
      }
      const role = flags.role as VaultRole;
      const secret = await addToken(flags.tokens, flags.name, role);
      out.emitJson({ name: flags.name, role, token: secret });
      out.result(secret);
      out.info(`added ${role} token "${flags.name}" to ${flags.tokens}; it is shown only this once`);
    });
}

/** `host:port`, `[v6]:port` or a bare port (on 127.0.0.1). */
export function parseListen(listen: string): { host: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d+)$/.exec(listen) ?? /^()()(\d+)$/.exec(listen);
  const port = Number(match?.[3]);
  if (match === null || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new BulwarkError("USAGE", `--listen must be HOST:PORT, got ${listen}`);
  }
  const host = match[1] ?? match[2] ?? "";
  return { host: host === "" ? "127.0.0.1" : host, port };
}

function parseImmutable(mode: string): ImmutabilityMode {
  if (mode === "auto" || mode === "require" || mode === "off") return mode;
  throw new BulwarkError("USAGE", `--immutable must be auto, require or off, got ${mode}`);
}
