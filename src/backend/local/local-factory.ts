/**
 * The local backend's entry for the registry (factory.ts): a bare path or `local:PATH`. It takes no
 * settings and no credentials, and is not wrapped in retry: a local disk's errors are not transient.
 */
import { checkCredentialNames, type BackendFactory } from "../factory.js";
import { LocalBackend } from "./local-backend.js";

export interface LocalLocation {
  readonly path: string;
}

/** Nothing to configure: the options type is empty. */
export type LocalFactoryOptions = Record<string, never>;

export const localFactory: BackendFactory<LocalFactoryOptions, LocalLocation> = {
  schemes: ["local"],
  form: "a path, local:PATH",
  remote: false,
  credentials: {},
  parseLocation: (location) => ({
    path: location.startsWith("local:") ? location.slice("local:".length) : location,
  }),
  optionsFromEnv: () => ({}),
  optionsFromCredentials: (credentials, target) => {
    checkCredentialNames("local", {}, Object.keys(credentials), target);
    return {};
  },
  open: (location, _options, context) =>
    context.create ? LocalBackend.create(location.path) : LocalBackend.open(location.path),
  // A path holds no secret, and rewriting it would name another directory.
  redact: (location) => location,
};
