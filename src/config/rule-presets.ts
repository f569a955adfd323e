/**
 * The named backup rules and the counts each one requires.
 *
 * - 3-2-1: three copies, on two different media, one of them offsite.
 * - 3-2-1-1-0: 3-2-1 plus one immutable or air-gapped copy and zero errors in automated recovery validation.
 * - 4-3-2: four copies in three locations (sites), on two isolated networks.
 *
 * "Copies" includes production when the policy's `productionCounts` is on (the default), as practitioners count.
 * Normalising a config expands `rule: <preset>` into these counts, so the table lives in config; posture
 * (src/policy/posture.ts) reads the counts from the resolved policy.
 */

import type { RuleCounts, RulePreset } from "./types.js";

export const RULE_PRESET_COUNTS: Readonly<Record<RulePreset, Readonly<RuleCounts>>> = {
  "3-2-1": {
    copies: 3,
    media: 2,
    offsite: 1,
    immutableOrIsolated: 0,
    isolatedNetworks: 0,
    sites: 0,
    zeroErrors: false,
    disasterRecovery: false,
  },
  "3-2-1-1-0": {
    copies: 3,
    media: 2,
    offsite: 1,
    immutableOrIsolated: 1,
    isolatedNetworks: 0,
    sites: 0,
    zeroErrors: true,
    disasterRecovery: false,
  },
  "4-3-2": {
    copies: 4,
    media: 0,
    offsite: 1,
    immutableOrIsolated: 0,
    isolatedNetworks: 2,
    sites: 3,
    zeroErrors: false,
    disasterRecovery: false,
  },
};

/** The counts of a preset, as a fresh object the caller may change. */
export function presetCounts(preset: RulePreset): RuleCounts {
  return { ...RULE_PRESET_COUNTS[preset] };
}
