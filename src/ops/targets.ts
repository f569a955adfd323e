/**
 * Opening the repository of a configured target: its location, its credentials (references resolved at
 * the moment they are needed), its password and its immutability. Every command that works from the
 * config file (`run`, `copy` with target names, `posture`, `catalog rebuild`) opens targets through here, so a
 * target behaves the same whichever command touches it.
 *
 * Credentials by backend (docs/config.md, "Target credentials") are declared by each backend's factory
 * (src/backend/<name>/<name>-factory.ts): here they are resolved and handed to the registry as they are, and the
 * backend turns them into its typed options. Nothing is written to any environment.
 */
import type { Backend } from "../backend/backend.js";
import { redactUrls, type ResolvedCredentials } from "../backend/factory.js";
import { credentialKind, openTargetBackendAt, schemeOfLocation } from "../backend/registry.js";
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

export function schemeOf(location: string): string {
  return schemeOfLocation(location) ?? "local";
}

/**
 * A target's credentials resolved for its backend: a `value` credential's secret (added to
 * `access.secrets`), a `file` credential's path, which the backend reads itself. CONFIG_INVALID for a name
 * the backend does not take, or a file credential given as anything but a file reference.
 */
export async function targetCredentials(target: Target, access: TargetAccess): Promise<ResolvedCredentials> {
  const resolved: Record<string, string> = {};
  for (const [name, ref] of Object.entries(target.credentials)) {
    if (credentialKind(target.location, name, target.name) === "file") {
      if (!("file" in ref)) {
        throw new BulwarkError(
          "CONFIG_INVALID",
          `target ${target.name}: credentials.${name} must be a file reference ({ file: PATH })`,
          { hint: "the backend reads the file itself" },
        );
      }
      resolved[name] = ref.file;
    } else {
      const value = await readSecret(ref, access.env);
      access.secrets?.push(value);
      resolved[name] = value;
    }
  }
  return resolved;
}

export interface OpenTargetOptions {
  /** Create the repository layout (init). */
  create?: boolean;
  /** Refuse every change but lock files (registry.ts): for the source of a copy, check and restore. */
  readOnly?: boolean;
}

/** Opens a target's backend (not the repository): credentials and immutability from the config. */
export async function openTargetBackend(
  target: Target,
  access: TargetAccess,
  options: OpenTargetOptions = {},
): Promise<Backend> {
  const credentials = await targetCredentials(target, access);
  // Only S3 takes an immutability setting from the client; a vault applies its own (--retention-days) and
  // reports it back, and a local directory has none, which posture reports.
  const s3 = schemeOf(target.location) === "s3";
  return openTargetBackendAt(target.location, {
    target: target.name,
    credentials,
    create: options.create === true,
    env: access.env,
    ...(options.readOnly === true ? { readOnly: true } : {}),
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
export async function openTargetRepository(
  target: Target,
  access: TargetAccess,
  options: { readOnly?: boolean } = {},
): Promise<Repository> {
  const password = await targetPassword(target, access);
  const backend = await openTargetBackend(target, access, options);
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
  // A message, not a location: whatever URLs it holds lose their user info and query strings.
  let m = redactUrls(message);
  for (const s of secrets) if (s.length >= 4) m = m.split(s).join("***");
  return m;
}

export type { SecretRef };
