/**
 * The vault backend's entry for the registry (factory.ts): `rest:http(s)://host:port/[prefix/]`, a
 * repository served by `bulwark serve-repo`. The HTTP client is imported only when a location is opened.
 *
 *   setting              environment             config credential
 *   token                BULWARK_REST_TOKEN      token
 *   CA certificate file  BULWARK_REST_CA         ca ({ file: PATH })
 */
import { checkCredentialNames, given, redactUrls, type BackendFactory } from "../factory.js";
import type { RestBackendOptions } from "./rest-backend.js";
import { parseRestLocation } from "./rest-location.js";

export type RestFactoryOptions = Pick<RestBackendOptions, "token" | "caFile">;

const CREDENTIALS = { token: "value", ca: "file" } as const;

export const restFactory: BackendFactory<RestFactoryOptions, URL> = {
  schemes: ["rest"],
  form: "rest:https://host:port/",
  remote: true,
  credentials: CREDENTIALS,
  parseLocation: parseRestLocation,
  optionsFromEnv: (env) => given({ token: env.BULWARK_REST_TOKEN, caFile: env.BULWARK_REST_CA }),
  optionsFromCredentials: (credentials, target) => {
    checkCredentialNames("rest", CREDENTIALS, Object.keys(credentials), target);
    return given({ token: credentials.token, caFile: credentials.ca });
  },
  open: async (location, options) => {
    const { openRestBackend } = await import("./rest-backend.js");
    return openRestBackend(location, options);
  },
  redact: redactUrls,
};
