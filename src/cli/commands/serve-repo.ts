/**
 * `bulwark serve-repo`: runs the vault (./server.ts) over a repository directory, and
 * `bulwark serve-repo token add` makes a token for it. Registered by the CLI like src/cli/commands/*.ts.
 *
 *   bulwark serve-repo --path /srv/vault --listen 10.0.0.2:8000 --tokens /etc/bulwark/tokens.json \
 *     [--tls-cert cert.pem --tls-key key.pem] [--init] [--retention-days 30]
 *   bulwark serve-repo token add --tokens /etc/bulwark/tokens.json --name laptop --role append-only
 */

import type { Command } from "commander";

import { Output, type GlobalOptions } from "../context.js";
import { BulwarkError } from "../../core/errors.js";
import type { ImmutabilityMode } from "../../vault/immutable.js";
import { MAX_RETENTION_DAYS, startVaultServer, type VaultLogger } from "../../vault/server.js";
import { addToken, VAULT_ROLES, type VaultRole } from "../../vault/tokens.js";
import { systemClock } from "../../core/clock.js";

interface ServeFlags {
  path?: string;
  listen: string;
  tokens?: string;
  tlsCert?: string;
  tlsKey?: string;
  init?: boolean;
  immutable: string;
  retentionDays?: string;
  sweepMinutes: string;
  maxBodyMib: string;
}

const STOP_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

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
    .option(
      "--retention-days <days>",
      "retain each stored file this many days from its write (clients may extend it); without it, files stay until an admin deletes them",
    )
    .option("--sweep-minutes <minutes>", "how often to release files whose retention ended", "60")
    .option("--max-body-mib <n>", "largest file a client may upload, in MiB", "1024")
    .addHelpText(
      "after",
      `
Roles: an append-only token may read, list and add files, and replace or delete only lock files; an
admin token may also delete and replace (prune, forget). Keep admin tokens off the hosts you back up.
As root on a file system that supports it, stored files are made immutable (chattr +i). With
--retention-days N each file is retained N days from its write (\`bulwark retention\` extends what kept
snapshots need): no token can delete or replace it until then, and the vault itself clears the flag
when the retention ends (a sweep at start-up and every --sweep-minutes), so an admin prune can delete
it. Without --retention-days a file stays immutable until an admin deletes it.

Example:
  bulwark serve-repo token add --tokens /etc/bulwark/vault-tokens.json --name web1 --role append-only
  bulwark serve-repo --init --path /srv/vault --listen 10.0.0.2:8000 --tokens /etc/bulwark/vault-tokens.json \\
    --retention-days 30`,
    )
    .action(async (flags: ServeFlags) => {
      const out = new Output(globals());
      if (flags.path === undefined) throw new BulwarkError("USAGE", "serve-repo needs --path DIR");
      if (flags.tokens === undefined) throw new BulwarkError("USAGE", "serve-repo needs --tokens FILE");
      const { host, port } = parseListen(flags.listen);
      const immutable = parseImmutable(flags.immutable);
      const retentionDays =
        flags.retentionDays === undefined ? undefined : Number(flags.retentionDays.trim() || NaN);
      if (
        retentionDays !== undefined &&
        !(Number.isFinite(retentionDays) && retentionDays >= 0 && retentionDays <= MAX_RETENTION_DAYS)
      ) {
        throw new BulwarkError(
          "USAGE",
          `--retention-days must be a number of days from 0 to ${MAX_RETENTION_DAYS}, got ${flags.retentionDays}`,
        );
      }
      const sweepMinutes = Number(flags.sweepMinutes);
      if (!(Number.isFinite(sweepMinutes) && sweepMinutes > 0)) {
        throw new BulwarkError(
          "USAGE",
          `--sweep-minutes must be a positive number, got ${flags.sweepMinutes}`,
        );
      }
      const maxBodyMib = Number(flags.maxBodyMib);
      if (!Number.isSafeInteger(maxBodyMib) || maxBodyMib <= 0) {
        throw new BulwarkError("USAGE", `--max-body-mib must be a positive integer, got ${flags.maxBodyMib}`);
      }
      const quiet = globals().quiet === true;
      const logger: VaultLogger = {
        info: (line) => {
          if (!quiet) process.stderr.write(`${systemClock.now().toISOString()} ${line}\n`);
        },
        warn: (line) => process.stderr.write(`${systemClock.now().toISOString()} warning: ${line}\n`),
      };
      const server = await startVaultServer({
        path: flags.path,
        init: flags.init === true,
        host,
        port,
        tokens: flags.tokens,
        immutable,
        ...(retentionDays === undefined ? {} : { retentionDays }),
        sweepIntervalMs: sweepMinutes * 60_000,
        maxBodyBytes: maxBodyMib * 1024 * 1024,
        logger,
        ...(flags.tlsCert === undefined ? {} : { tlsCert: flags.tlsCert }),
        ...(flags.tlsKey === undefined ? {} : { tlsKey: flags.tlsKey }),
      });
      out.emitJson({
        url: server.url,
        immutable: server.immutable,
        retentionDays: server.retentionDays ?? null,
      });
      out.result(
        `serving ${flags.path} at ${server.url} (immutable files: ${server.immutable ? "yes" : "no"}, ` +
          `retention: ${retentionDays === undefined ? "until an admin deletes" : `${retentionDays} days`})`,
      );
      const signal = await stopSignal();
      const stamp = (): string => systemClock.now().toISOString();
      process.stderr.write(
        `${stamp()} ${signal}: stopping the vault; uploads in progress are cut off (they store nothing), nothing stored is lost\n`,
      );
      // A second signal stops at once: an upload cut off leaves only a temp file, which a sweep removes.
      for (const s of STOP_SIGNALS) {
        process.once(s, () => {
          process.stderr.write(`${stamp()} ${s}: the vault stopped at once; nothing stored is lost\n`);
          process.exit(1);
        });
      }
      await server.close();
      process.stderr.write(`${stamp()} the vault stopped (${signal}): ${server.url} is no longer served\n`);
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

/**
 * Resolves with the first stop signal. The vault owns these signals while it serves: the CLI's own handler
 * (src/cli/main.ts) would report an interrupted command and exit before the server could finish its
 * requests, so it is taken off for the life of the process, which ends when the vault stops.
 */
function stopSignal(): Promise<(typeof STOP_SIGNALS)[number]> {
  return new Promise((resolve) => {
    const handlers = STOP_SIGNALS.map((signal) => {
      const handler = (): void => {
        for (const [s, h] of handlers) process.off(s, h);
        resolve(signal);
      };
      return [signal, handler] as const;
    });
    for (const [signal, handler] of handlers) {
      process.removeAllListeners(signal);
      process.on(signal, handler);
    }
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
