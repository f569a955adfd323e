/**
 * The shape every backend module exports so that the registry (registry.ts) can open it: its schemes, how
 * it parses a location, where its settings come from (the environment, or a config target's credentials),
 * how it opens, and how a location is shown in messages (docs/design.md §21, "Locations").
 *
 * Settings arrive as typed options from either source; a config target's credentials are never turned
 * into environment variables, so what a backend is given can be read off its options type. A factory module
 * must stay cheap to import: the registry loads every one at start-up, and the heavy part of a backend (the
 * S3 SDK, ssh2) is imported by `open` only.
 */
import type { Backend, RetentionMode } from "./backend.js";
import { BulwarkError } from "../core/errors.js";

export type Env = Readonly<Record<string, string | undefined>>;

/**
 * How a config credential reaches a backend: `value`, the secret itself (read from its reference); `file`,
 * the path of a `{ file: PATH }` reference, which the backend reads itself (a key file, a CA certificate).
 */
export type CredentialKind = "value" | "file";

/** A target's credentials once resolved: for a `value` credential the secret, for a `file` one the path. */
export type ResolvedCredentials = Readonly<Record<string, string>>;

export interface Immutability {
  readonly mode: RetentionMode;
  readonly days: number;
}

/** What the registry decides for every backend alike. */
export interface OpenContext {
  /** Create the layout (init); otherwise the location must hold one. */
  readonly create: boolean;
  /** Retention for everything written, from the config or the caller; only S3 applies it client-side. */
  readonly immutability?: Immutability;
}

/**
 * A backend module's entry for the registry. `O` is the backend's options, `L` its parsed location. Options
 * from the environment and from credentials are both `O` and the registry lays the credentials' over the
 * environment's, so every field MUST be absent (not undefined) when its source does not give it.
 */
export interface BackendFactory<O extends object, L> {
  /** The location schemes it opens (`sftp` for `sftp:…`); the local factory also takes bare paths. */
  readonly schemes: readonly string[];
  /** The location's form, for the hint of an unknown scheme: `sftp:user@host/path`. */
  readonly form: string;
  /** Remote backends fail transiently (timeouts, resets, throttling): the registry wraps them in retry. */
  readonly remote: boolean;
  /** The credential names a config target of this backend takes (docs/config.md, "Target credentials"). */
  readonly credentials: Readonly<Record<string, CredentialKind>>;
  /** Parses a location of one of `schemes`; CONFIG_INVALID (or USAGE) when it is malformed. */
  parseLocation(location: string): L;
  /** The settings the environment gives (BULWARK_*, AWS_*): what `--repo LOCATION` commands use. */
  optionsFromEnv(env: Env): O;
  /** The settings a config target's credentials give; CONFIG_INVALID for a name not in `credentials`. */
  optionsFromCredentials(credentials: ResolvedCredentials, target: string): O;
  /** Connects and checks (or with `create`, makes) the layout; imports the backend's heavy modules. */
  open(location: L, options: O, context: OpenContext): Promise<Backend>;
  /** The location for messages: never shows a secret, even when the location is malformed. */
  redact(location: string): string;
}

/** CONFIG_INVALID unless every credential name is one the backend knows; the message names the target. */
export function checkCredentialNames(
  scheme: string,
  known: Readonly<Record<string, CredentialKind>>,
  names: Iterable<string>,
  target: string,
): void {
  for (const name of names) {
    if (Object.hasOwn(known, name)) continue;
    const takes = Object.keys(known);
    throw new BulwarkError(
      "CONFIG_INVALID",
      `target ${target}: the ${scheme} backend has no credential ${JSON.stringify(name)}`,
      {
        hint:
          takes.length > 0
            ? `a ${scheme} target takes ${takes.join(", ")}`
            : `a ${scheme} target takes no credentials`,
      },
    );
  }
}

/**
 * The fields of `values` that are set (not undefined, not empty): empty settings have always meant "not
 * given", and dropping them lets the registry merge two option objects with a spread.
 */
export function given<T extends object>(values: T): T {
  return Object.fromEntries(Object.entries(values).filter(([, v]) => v !== undefined && v !== "")) as T;
}

/** User info and query strings of URLs in a text, which may carry secrets, replaced by ***. */
export function redactUrls(text: string): string {
  return text.replace(/\/\/[^@/]*@/, "//***@").replace(/\?.*$/, "?***");
}
