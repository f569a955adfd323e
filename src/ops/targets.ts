/**
 * Opening the repository of a configured target: its location, its credentials (references resolved at
 * the moment they are needed), its password and its immutability. Every command that works from the
 * config file (`run`, `copy` with target names, `posture`, `catalog rebuild`) opens targets through here, so a
 * target behaves the same whichever command touches it.
 *
 * Credentials by backend (docs/config.md, "Targets"):
 *   s3    accessKeyId, secretAccessKey, sessionToken (optional)
 *   sftp  privateKey (a file reference: the key file), passphrase, knownHosts (a file reference), hostKey
 *   rest  token, ca (a file reference: the CA certificate)
 */
import type { Backend } from "../backend/backend.js";
import { openBackendAt, redact } from "../backend/registry.js";
import type { SecretRef, Target } from "../config/types.js";
import { BulwarkError } from "../core/errors.js";
import { Repository, type InitOptions } from "../repository/repository.js";
import { readSecret } from "./secrets.js";

export type Env = Readonly<Record<string, string | undefined>>;

export interface TargetAccess {
  env: Env;
  /** The password of a target without a password reference (-p, BULWARK_PASSWORD, BULWARK_PASSWORD_FILE). */
  defaultPassword: () => Promise<string>;
  /** Every secret read is added here, so callers can scrub messages. */
  secrets?: string[];
}

/** Which credential names each scheme understands, and how each becomes a setting of its backend. */
const CREDENTIALS: Record<string, Record<string, { env: string; as: "value" | "path" }>> = {
  s3: {
    accessKeyId: { env: "AWS_ACCESS_KEY_ID", as: "value" },
    secretAccessKey: { env: "AWS_SECRET_ACCESS_KEY", as: "value" },
    sessionToken: { env: "AWS_SESSION_TOKEN", as: "value" },
  },
  sftp: {
    privateKey: { env: "BULWARK_SFTP_KEY", as: "path" },
    knownHosts: { env: "BULWARK_SFTP_KNOWN_HOSTS", as: "path" },
    hostKey: { env: "BULWARK_SFTP_HOST_KEY", as: "value" },
    passphrase: { env: "BULWARK_SFTP_PASSPHRASE", as: "value" },
  },
  rest: {
    token: { env: "BULWARK_REST_TOKEN", as: "value" },
    ca: { env: "BULWARK_REST_CA", as: "path" },
  },
};

export function schemeOf(location: string): string {
  return /^([a-z][a-z0-9]+):/.exec(location)?.[1] ?? "local";
}

/** The environment a target's backend sees: the process's, with the target's credentials laid over it. */
export async function targetEnvironment(target: Target, access: TargetAccess): Promise<NodeJS.ProcessEnv> {
  const scheme = schemeOf(target.location);
  const known = CREDENTIALS[scheme] ?? {};
  const env: NodeJS.ProcessEnv = { ...access.env };
  for (const [name, ref] of Object.entries(target.credentials)) {
    const how = known[name];
    if (how === undefined) {
      const names = Object.keys(known);
      throw new BulwarkError(
        "CONFIG_INVALID",
        `target ${target.name}: the ${scheme} backend has no credential ${JSON.stringify(name)}`,
        {
          hint:
            names.length > 0
              ? `a ${scheme} target takes ${names.join(", ")}`
              : `a ${scheme} target takes no credentials`,
        },
      );
    }
    if (how.as === "path") {
      if (!("file" in ref)) {
        throw new BulwarkError(
          "CONFIG_INVALID",
          `target ${target.name}: credentials.${name} must be a file reference ({ file: PATH })`,
          { hint: "the backend reads the file itself" },
        );
      }
      env[how.env] = ref.file;
    } else {
      const value = await readSecret(ref, access.env);
      access.secrets?.push(value);
      env[how.env] = value;
    }
  }
  return env;
}

/** Opens a target's backend (not the repository): credentials and immutability from the config. */
export async function openTargetBackend(
  target: Target,
  access: TargetAccess,
  options: { create?: boolean } = {},
): Promise<Backend> {
  const env = await targetEnvironment(target, access);
  // Only S3 takes an immutability setting from the client; a vault applies its own (--retention-days) and
  // reports it back, and a local directory has none, which posture reports.
  const s3 = schemeOf(target.location) === "s3";
  return openBackendAt(target.location, {
    create: options.create === true,
    env,
    ...(s3 && target.immutability ? { immutability: target.immutability } : {}),
  });
}

export async function targetPassword(target: Target, access: TargetAccess): Promise<string> {
  const password = target.password
    ? await readSecret(target.password, access.env)
    : await access.defaultPassword();
  access.secrets?.push(password);
  return password;
}

/** Opens a target's repository; the caller closes `repo.backend`. */
export async function openTargetRepository(target: Target, access: TargetAccess): Promise<Repository> {
  const password = await targetPassword(target, access);
  const backend = await openTargetBackend(target, access);
  try {
    return await Repository.open(backend, password);
  } catch (err) {
    await backend.close().catch(() => undefined);
    throw err;
  }
}

/** Creates the repository of a target (used by `run --init`/copies to targets not yet initialised). */
export async function initTargetRepository(
  target: Target,
  access: TargetAccess,
  options: InitOptions = {},
): Promise<Repository> {
  const password = await targetPassword(target, access);
  const backend = await openTargetBackend(target, access, { create: true });
  try {
    return await Repository.init(backend, password, options);
  } catch (err) {
    await backend.close().catch(() => undefined);
    throw err;
  }
}

/** Replaces every secret in a message by ***. */
export function scrub(message: string, secrets: readonly string[]): string {
  let m = redact(message);
  for (const s of secrets) if (s.length >= 4) m = m.split(s).join("***");
  return m;
}

export type { SecretRef };
