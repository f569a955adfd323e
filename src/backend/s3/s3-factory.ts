/**
 * The S3 backend's entry for the registry (factory.ts): `s3:http(s)://endpoint/bucket/prefix`. The AWS SDK
 * is imported only when a location is opened: loading it costs more than a whole incremental backup.
 *
 *   setting              environment                          config credential
 *   access key           AWS_ACCESS_KEY_ID                    accessKeyId
 *   secret key           AWS_SECRET_ACCESS_KEY                secretAccessKey
 *   session token        AWS_SESSION_TOKEN                    sessionToken
 *   Object Lock          BULWARK_S3_IMMUTABLE=MODE:DAYS       (the target's `immutability`, not a credential)
 *
 * Keys are used only as a pair; without one the SDK's own chain (AWS_PROFILE, ~/.aws, ...) decides. A
 * target's keys win over the environment's, field by field, as they always have.
 */
import type { RetentionMode } from "../backend.js";
import { BulwarkError } from "../../core/errors.js";
import {
  checkCredentialNames,
  given,
  redactUrls,
  type BackendFactory,
  type Immutability,
} from "../factory.js";
import { parseS3Location, type S3Location } from "./s3-location.js";

export interface S3FactoryOptions {
  readonly accessKeyId?: string;
  readonly secretAccessKey?: string;
  readonly sessionToken?: string;
  /** Object Lock for everything written but locks; the registry's `immutability` overrides it. */
  readonly immutability?: Immutability;
}

const CREDENTIALS = {
  accessKeyId: "value",
  secretAccessKey: "value",
  sessionToken: "value",
} as const;

export const s3Factory: BackendFactory<S3FactoryOptions, S3Location> = {
  schemes: ["s3"],
  form: "s3:https://endpoint/bucket/prefix",
  remote: true,
  credentials: CREDENTIALS,
  parseLocation: parseS3Location,
  optionsFromEnv: (env) =>
    given({
      accessKeyId: env.AWS_ACCESS_KEY_ID,
      secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
      sessionToken: env.AWS_SESSION_TOKEN,
      immutability: parseImmutability(env.BULWARK_S3_IMMUTABLE),
    }),
  optionsFromCredentials: (credentials, target) => {
    checkCredentialNames("s3", CREDENTIALS, Object.keys(credentials), target);
    return given({
      accessKeyId: credentials.accessKeyId,
      secretAccessKey: credentials.secretAccessKey,
      sessionToken: credentials.sessionToken,
    });
  },
  open: async (location, options, context) => {
    // The SDK version is pinned for Node 20 on purpose; its notice about later versions is not for our users.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
    const { openS3Backend } = await import("./s3-backend.js");
    const immutability = context.immutability ?? options.immutability;
    const { accessKeyId, secretAccessKey, sessionToken } = options;
    return openS3Backend(location, {
      ...(immutability ? { immutability } : {}),
      ...(accessKeyId && secretAccessKey
        ? { credentials: { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) } }
        : {}),
    });
  },
  redact: redactUrls,
};

function parseImmutability(value: string | undefined): Immutability | undefined {
  if (!value) return undefined;
  const match = /^(compliance|governance):(\d+(?:\.\d+)?)$/.exec(value);
  if (!match) {
    throw new BulwarkError(
      "CONFIG_INVALID",
      `BULWARK_S3_IMMUTABLE=${JSON.stringify(value)} is not MODE:DAYS`,
      { hint: "e.g. BULWARK_S3_IMMUTABLE=compliance:30" },
    );
  }
  return { mode: match[1] as RetentionMode, days: Number(match[2]) };
}
