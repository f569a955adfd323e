/**
 * The SFTP backend's entry for the registry (factory.ts): `sftp:user@host[:port]/path` or
 * `sftp://user@host:port/path`. ssh2 is imported only when a location is opened.
 *
 *   setting              environment                 config credential
 *   private key file     BULWARK_SFTP_KEY            privateKey ({ file: PATH })
 *   its passphrase       BULWARK_SFTP_PASSPHRASE     passphrase
 *   known_hosts file     BULWARK_SFTP_KNOWN_HOSTS    knownHosts ({ file: PATH })
 *   pinned host key      BULWARK_SFTP_HOST_KEY       hostKey (SHA256:...)
 */
import { checkCredentialNames, given, redactUrls, type BackendFactory } from "../factory.js";
import type { SftpOptions } from "./sftp-backend.js";
import { parseSftpLocation, type SftpLocation } from "./sftp-location.js";

export type SftpFactoryOptions = Pick<
  SftpOptions,
  "privateKey" | "passphrase" | "knownHosts" | "hostKeyFingerprint"
>;

const CREDENTIALS = {
  privateKey: "file",
  knownHosts: "file",
  hostKey: "value",
  passphrase: "value",
} as const;

export const sftpFactory: BackendFactory<SftpFactoryOptions, SftpLocation> = {
  schemes: ["sftp"],
  form: "sftp:user@host/path",
  remote: true,
  credentials: CREDENTIALS,
  parseLocation: parseSftpLocation,
  optionsFromEnv: (env) =>
    given({
      privateKey: env.BULWARK_SFTP_KEY,
      knownHosts: env.BULWARK_SFTP_KNOWN_HOSTS,
      hostKeyFingerprint: env.BULWARK_SFTP_HOST_KEY,
      passphrase: env.BULWARK_SFTP_PASSPHRASE,
    }),
  optionsFromCredentials: (credentials, target) => {
    checkCredentialNames("sftp", CREDENTIALS, Object.keys(credentials), target);
    return given({
      privateKey: credentials.privateKey,
      knownHosts: credentials.knownHosts,
      hostKeyFingerprint: credentials.hostKey,
      passphrase: credentials.passphrase,
    });
  },
  open: async (location, options, context) => {
    const { openSftpBackend } = await import("./sftp-backend.js");
    return openSftpBackend(location, { ...options, create: context.create });
  },
  redact: redactUrls,
};
