import type { Command } from "commander";
import { listLocks, removeLocks, isStale } from "../../repository/lock.js";
import { withRepository, type GlobalOptions, CONFIG_TARGET_HELP } from "../context.js";

export function registerUnlock(program: Command, globals: () => GlobalOptions): void {
  program
    .command("unlock")
    .option("-c, --config <file>", CONFIG_TARGET_HELP)
    .description("remove stale locks (left by a crashed process); --remove-all removes every lock")
    .option("--remove-all", "remove all locks, even those of running processes")
    .action(async (flags: { removeAll?: boolean }) => {
      await withRepository(globals(), "none", async ({ repo, out }) => {
        const before = await listLocks(repo);
        const removed = await removeLocks(repo, flags.removeAll === true);
        const remaining = before.filter((l) => !removed.includes(l.name));
        out.emitJson({
          removed,
          remaining: remaining.map((l) => ({
            id: l.name,
            ...l.lock,
            stale: l.lock ? isStale(l.lock) : true,
          })),
        });
        out.result(`removed ${removed.length} lock${removed.length === 1 ? "" : "s"}`);
        for (const l of remaining) {
          if (l.lock)
            out.result(
              `still locked by pid ${l.lock.pid} on ${l.lock.hostname} since ${l.lock.time} (live; --remove-all to force)`,
            );
        }
      });
    });
}
