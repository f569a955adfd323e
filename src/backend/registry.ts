/**
 * Opens a Backend from a location string: the one place that knows every scheme.
 *
 *   /path or local:/path           LocalBackend
 *   sftp:user@host[:port]/path     SftpBackend  (key: BULWARK_SFTP_KEY [+ BULWARK_SFTP_PASSPHRASE], known hosts:
 *                                  BULWARK_SFTP_KNOWN_HOSTS, or a pinned host key: BULWARK_SFTP_HOST_KEY=SHA256:...)
 *   s3:http(s)://endpoint/bucket/prefix  S3Backend (AWS_* credentials; Object Lock: BULWARK_S3_IMMUTABLE=mode:days)
 *   rest:http(s)://host:port/      RestBackend  (a vault from `bulwark serve-repo`; token: BULWARK_REST_TOKEN)
 *
 * Remote backends are loaded on demand (the S3 SDK alone costs more start-up time than a whole incremental
 * backup) and wrapped to retry transient errors.
 */
import type { Backend, RetentionMode } from "./backend.js";
import { LocalBackend } from "./local/local-backend.js";
import { withRetry } from "./wrappers/retry.js";
import { BulwarkError } from "../core/errors.js";

export interface OpenBackendOptions {
  /** Create the layout (init); otherwise the location must hold one. */
  create: boolean;
  /** Where BULWARK_* and AWS_* settings are read; process.env by default. */
  env?: NodeJS.ProcessEnv;
  /** S3 Object Lock for everything written; overrides BULWARK_S3_IMMUTABLE. */
  immutability?: { mode: RetentionMode; days: number };
}

export async function openBackendAt(location: string, options: OpenBackendOptions): Promise<Backend> {
  const env = options.env ?? process.env;
  const scheme = /^([a-z][a-z0-9]+):/.exec(location)?.[1];
  switch (scheme) {
    case undefined:
      return options.create ? LocalBackend.create(location) : LocalBackend.open(location);
    case "local": {
      const path = location.slice("local:".length);
      return options.create ? LocalBackend.create(path) : LocalBackend.open(path);
    }
    case "sftp": {
      const { openSftpBackend } = await import("./sftp/sftp-backend.js");
      return withRetry(
        await openSftpBackend(location, {
          create: options.create,
          ...(env.BULWARK_SFTP_KEY ? { privateKey: env.BULWARK_SFTP_KEY } : {}),
          ...(env.BULWARK_SFTP_KNOWN_HOSTS ? { knownHosts: env.BULWARK_SFTP_KNOWN_HOSTS } : {}),
          ...(env.BULWARK_SFTP_HOST_KEY ? { hostKeyFingerprint: env.BULWARK_SFTP_HOST_KEY } : {}),
          ...(env.BULWARK_SFTP_PASSPHRASE ? { passphrase: env.BULWARK_SFTP_PASSPHRASE } : {}),
        }),
      );
    }
    case "s3": {
      // The SDK version is pinned for Node 20 on purpose; its notice about later versions is not for our users.
      process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
      const { openS3Backend } = await import("./s3/s3-backend.js");
      const immutability = options.immutability ?? parseImmutability(env.BULWARK_S3_IMMUTABLE);
      // Keys given in `env` (a config target's credentials) win over the SDK's own chain, which reads
      // process.env and profiles: the same keys when env is process.env.
      const credentials =
        env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY
          ? {
              accessKeyId: env.AWS_ACCESS_KEY_ID,
              secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
              ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}),
            }
          : undefined;
      return withRetry(
        await openS3Backend(location, {
          ...(immutability ? { immutability } : {}),
          ...(credentials ? { credentials } : {}),
        }),
      );
    }
    case "rest": {
      const { openRestBackend } = await import("./rest/rest-backend.js");
      return withRetry(await openRestBackend(location, { env }));
    }
    default:
      throw new BulwarkError(
        "USAGE",
        `unknown repository type ${JSON.stringify(scheme)} in ${redact(location)}`,
        {
          hint: "use a path, local:PATH, sftp:user@host/path, s3:https://endpoint/bucket/prefix or rest:https://host:port/",
        },
      );
  }
}

function parseImmutability(value: string | undefined): { mode: RetentionMode; days: number } | undefined {
  if (!value) return undefined;
  const match = /^(compliance|governance):(\d+(?:\.\d+)?)$/.exec(value);
  if (!match) {
    throw new BulwarkError(
      "CONFIG_INVALID",
      `BULWARK_S3_IMMUTABLE=${JSON.stringify(value)} is not MODE:DAYS`,
      {
        hint: "e.g. BULWARK_S3_IMMUTABLE=compliance:30",
      },
    );
  }
  return { mode: match[1] as RetentionMode, days: Number(match[2]) };
}

/** A location for messages: user info and query strings may carry secrets. */
export function redact(location: string): string {
  return location.replace(/\/\/[^@/]*@/, "//***@").replace(/\?.*$/, "?***");
}
