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
  // drill restores and validates: it runs the sources' validators on what the snapshot holds.
  drill: ["core", "crypto", "backend", "repository", "snapshot", "sources", "config"],
  // dr runs a runbook's parts (health checks, steps, services): programs and probes, like drill's validators.
  dr: ["core", "config", "sources", "drill"],
  // evidence renders and signs the catalog's records: it reads their types, and nothing above them.
  evidence: ["core", "catalog"],
  // policy reads the resolved config (posture, retention): config sits below it and must not import it.
  // A config rule that needs policy is written there and passed to the loader (src/ops/config.ts).
  config: ["core", "snapshot"],
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
    "drill",
    "dr",
    "evidence",
    "config",
    "policy",
  ],
  // The daemon schedules and runs the operations (src/ops/) and keeps their state; it prints nothing and
  // touches no process signal: the CLI gives it those.
  daemon: [
    "core",
    "crypto",
    "backend",
    "repository",
    "snapshot",
    "catalog",
    "sources",
    "dr",
    "evidence",
    "config",
    "policy",
    "ops",
  ],
  // The HTTP API and /metrics: the only code besides src/vault/ that speaks HTTP; it reads the daemon's
  // state and calls the operations through it.
  api: ["core", "crypto", "backend", "catalog", "evidence", "config", "policy", "ops", "daemon"],
};
const ALL = [...Object.keys(LAYERS), "cli"];
const importRule = (/** @type {string} */ layer, /** @type {string[]} */ allowed) => [
  "error",
  {
    paths: [{ name: "commander", message: "only src/cli/ parses arguments" }],
    patterns: ALL.filter((other) => other !== layer && !allowed.includes(other)).map((other) => ({
      group: [`../${other}/*`, `../../${other}/*`, `../../../${other}/*`, `**/src/${other}/*`],
      message: `src/${layer}/ must not import src/${other}/ (layers: docs/design.md §23)`,
    })),
  },
];
export const layerRules = [
  ...Object.entries(LAYERS).map(([layer, allowed]) => ({
    files: [`src/${layer}/**/*.ts`],
    rules: {
      "no-restricted-imports": importRule(layer, allowed),
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
  })),
  {
    // One clock (src/core/clock.ts, docs/design.md §23): code that reads wall time itself cannot be tested
    // with a fake clock (lock staleness, retention ages, RPO, schedules).
    files: ["src/**/*.ts"],
    ignores: ["src/core/clock.ts"],
    rules: {
      "no-restricted-syntax": [
        "error",
        {
          selector: "NewExpression[callee.name='Date'][arguments.length=0]",
          message: "read the time from a Clock (src/core/clock.ts), not `new Date()`",
        },
        {
          selector: "CallExpression[callee.object.name='Date'][callee.property.name='now']",
          message: "read the time from a Clock (src/core/clock.ts), not `Date.now()`",
        },
      ],
    },
  },
];
