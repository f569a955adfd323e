/**
 * The named backup rules (3-2-1, 3-2-1-1-0, 4-3-2) and their counts, for the policy engine and its tests. The
 * table is src/config/rule-presets.ts: resolving a config expands presets, and config sits below policy.
 */

export { RULE_PRESET_COUNTS, presetCounts } from "../config/rule-presets.js";
