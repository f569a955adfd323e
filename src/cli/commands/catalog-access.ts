/**
 * Opening the catalog for a command that records into it (`run`). Loaded on demand: the SQLite addon costs
 * start-up time that commands without a catalog should not pay.
 */
import { dirname } from "node:path";

import type { Catalog } from "../../catalog/catalog.js";
import { systemClock } from "../../core/clock.js";

export async function openCatalogForCommand(
  env: Readonly<Record<string, string | undefined>>,
): Promise<Catalog> {
  const { Catalog } = await import("../../catalog/catalog.js");
  const catalog = Catalog.open(Catalog.defaultPath(env));
  catalog.markInterruptedRuns(systemClock.now());
  return catalog;
}

/** Where the catalog and the state beside it live (tokens, alert state), without opening the catalog. */
export async function stateDirForCommand(env: Readonly<Record<string, string | undefined>>): Promise<string> {
  const { Catalog } = await import("../../catalog/catalog.js");
  return dirname(Catalog.defaultPath(env));
}
