/**
 * Opens a Backend from a location string: the list of backend factories (factory.ts), and the one place
 * where backends are wrapped.
 *
 *   /path or local:/path                  local/local-factory.ts   LocalBackend
 *   sftp:user@host[:port]/path            sftp/sftp-factory.ts     SftpBackend
 *   s3:http(s)://endpoint/bucket/prefix   s3/s3-factory.ts         S3Backend
 *   rest:http(s)://host:port/             rest/rest-factory.ts     RestBackend (a vault, `bulwark serve-repo`)
 *
 * Opening, in steps (docs/design.md §21, "Locations"):
 *   1. Find the factory by the location's scheme (none: a local path); parse the location.
 *   2. Options: the factory's from the environment; for a config target, its credentials' laid over them
 *      (a credential wins over the variable of the same setting).
 *   3. The factory opens the backend (remote ones import their heavy modules only now).
 *   4. Wrap: retry for remote backends (their errors can be transient); then, with `readOnly`, the read-only
 *      wrapper outermost, so a refusal is never retried.
 */
import type { Backend } from "./backend.js";
import {
  checkCredentialNames,
  redactUrls,
  type BackendFactory,
  type CredentialKind,
  type Env,
  type Immutability,
  type ResolvedCredentials,
} from "./factory.js";
import { localFactory } from "./local/local-factory.js";
import { restFactory } from "./rest/rest-factory.js";
import { s3Factory } from "./s3/s3-factory.js";
import { sftpFactory } from "./sftp/sftp-factory.js";
import { readOnly } from "./wrappers/read-only.js";
import { withRetry } from "./wrappers/retry.js";
import { BulwarkError } from "../core/errors.js";

/** Any factory, with its options and location types forgotten (the registry only passes them along). */
export type AnyBackendFactory = BackendFactory<object, unknown>;

/** Every backend, registered explicitly (no registration by import side effect). */
export const BACKEND_FACTORIES: readonly AnyBackendFactory[] = [
  localFactory,
  sftpFactory,
  s3Factory,
  restFactory,
];

export interface OpenBackendOptions {
  /** Create the layout (init); otherwise the location must hold one. */
  create: boolean;
  /** Where BULWARK_* and AWS_* settings are read; process.env by default. */
  env?: Env;
  /** S3 Object Lock for everything written; overrides BULWARK_S3_IMMUTABLE. Other backends ignore it. */
  immutability?: Immutability;
  /**
   * Refuse every change (save, remove, extendRetention, removeStaleTempFiles) but those of lock files, so
   * that a command which only reads can still take its shared lock: for the source of a copy, check and
   * restore.
   */
  readOnly?: boolean;
}

export interface OpenTargetBackendOptions extends OpenBackendOptions {
  /** The config target's name, for messages. */
  target: string;
  /** The target's credentials, resolved (see CredentialKind); laid over the options from `env`. */
  credentials: ResolvedCredentials;
}

/** The scheme of a location: the part before the first colon, or undefined for a bare path. */
export function schemeOfLocation(location: string): string | undefined {
  return /^([a-z][a-z0-9]+):/.exec(location)?.[1];
}

/** The factory that opens a location; USAGE for a scheme no backend has. */
export function factoryFor(location: string): AnyBackendFactory {
  const scheme = schemeOfLocation(location) ?? "local";
  const factory = BACKEND_FACTORIES.find((f) => f.schemes.includes(scheme));
  if (factory === undefined) {
    throw new BulwarkError(
      "USAGE",
      `unknown repository type ${JSON.stringify(scheme)} in ${redactUrls(location)}`,
      { hint: `use ${BACKEND_FACTORIES.map((f) => f.form).join(", ")}` },
    );
  }
  return factory;
}

/**
 * How a config target's credential is handed to its backend; CONFIG_INVALID naming the target when the
 * backend has no credential of that name.
 */
export function credentialKind(location: string, name: string, target: string): CredentialKind {
  const factory = factoryFor(location);
  checkCredentialNames(schemeOfLocation(location) ?? "local", factory.credentials, [name], target);
  return factory.credentials[name] ?? "value";
}

/** Opens the backend of a location with settings from the environment (`--repo LOCATION`). */
export async function openBackendAt(location: string, options: OpenBackendOptions): Promise<Backend> {
  const factory = factoryFor(location);
  const parsed = factory.parseLocation(location);
  return open(factory, parsed, factory.optionsFromEnv(options.env ?? process.env), options);
}

/** Opens the backend of a config target: its credentials as typed options, over the environment's. */
export async function openTargetBackendAt(
  location: string,
  options: OpenTargetBackendOptions,
): Promise<Backend> {
  const factory = factoryFor(location);
  const parsed = factory.parseLocation(location);
  const fromCredentials = factory.optionsFromCredentials(options.credentials, options.target);
  const merged = { ...factory.optionsFromEnv(options.env ?? process.env), ...fromCredentials };
  return open(factory, parsed, merged, options);
}

async function open(
  factory: AnyBackendFactory,
  location: unknown,
  backendOptions: object,
  options: OpenBackendOptions,
): Promise<Backend> {
  const opened = await factory.open(location, backendOptions, {
    create: options.create,
    ...(options.immutability ? { immutability: options.immutability } : {}),
  });
  const retried = factory.remote ? withRetry(opened) : opened;
  return options.readOnly === true ? readOnly(retried, { allowLocks: true }) : retried;
}

/**
 * A location for messages: the backend of its scheme decides what may be shown (URL user info and query
 * strings may carry secrets); an unknown scheme gets the same treatment as a URL.
 */
export function redact(location: string): string {
  const scheme = schemeOfLocation(location) ?? "local";
  const factory = BACKEND_FACTORIES.find((f) => f.schemes.includes(scheme));
  return factory === undefined ? redactUrls(location) : factory.redact(location);
}
