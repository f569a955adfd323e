// @ts-check
/**
 * The layers (docs/design.md §23), lowest first. A folder may import from the folders listed for it and
 * from its own; everything else is an upward (or sideways) import and fails the lint. `cli/` is the top:
 * only it touches argv, stdout/stderr, exit codes and commander.
 */
const LAYERS = {
  core: [],
  crypto: ["core"],
  chunker: ["core"],
  backend: ["core", "crypto"],
  repository: ["core", "crypto", "chunker", "backend"],
  snapshot: ["core", "crypto", "chunker", "backend", "repository"],
  catalog: ["core"],
  sources: ["core", "backend", "repository", "snapshot", "config"],
  copy: ["core", "crypto", "backend", "repository", "snapshot"],
  verify: ["core", "crypto", "backend", "repository", "snapshot"],
  vault: ["core", "crypto", "backend"],
  // config and policy still depend on each other (keep rules are parsed by config, posture reads config
  // types); see docs/design.md §23 for the remaining step.
  config: ["core", "policy", "snapshot"],
  policy: ["core", "config"],
  ops: [
    "core",
    "crypto",
    "chunker",
    "backend",
    "repository",
    "snapshot",
    "catalog",
    "sources",
    "copy",
    "verify",
    "vault",
    "config",
    "policy",
  ],
};
const ALL = [...Object.keys(LAYERS), "cli"];
export const layerRules = Object.entries(LAYERS).map(([layer, allowed]) => ({
  files: [`src/${layer}/**/*.ts`],
  rules: {
    "no-restricted-imports": [
      "error",
      {
        paths: [{ name: "commander", message: "only src/cli/ parses arguments" }],
        patterns: ALL.filter((other) => other !== layer && !allowed.includes(other)).map((other) => ({
          group: [`../${other}/*`, `../../${other}/*`, `../../../${other}/*`, `**/src/${other}/*`],
          message: `src/${layer}/ must not import src/${other}/ (layers: docs/design.md §23)`,
        })),
      },
    ],
    "no-restricted-properties": [
      "error",
      {
        object: "process",
        property: "stdout",
        message: "core code reports through events; only src/cli/ prints",
      },
      {
        object: "process",
        property: "stderr",
        message: "core code reports through events; only src/cli/ prints",
      },
      { object: "process", property: "exit", message: "only src/cli/ sets exit codes" },
    ],
    "no-console": "error",
  },
}));
