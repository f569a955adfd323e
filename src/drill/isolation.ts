/**
 * Network isolation of a drill's commands: a drill restores production data and runs programs on it, and
 * must never reach production (a restored application that connects to its live database, a command that
 * replays a queue). As root with util-linux `unshare` and iproute2 `ip`, every command runs in a fresh
 * network namespace of its own that has only a loopback interface (brought up, so the restored service can
 * talk to itself): nothing outside it, the host's loopback included, is reachable. The namespace dies with
 * the command, so nothing needs tearing down, also when the drill is killed.
 *
 * Where that is not possible (not root, no `unshare`/`ip`, or the kernel refuses: a container without
 * CAP_SYS_ADMIN), commands run unisolated and the drill's report says so; `probeIsolation` tries it once.
 */
import { spawnSync } from "node:child_process";

export interface Isolation {
  /** Whether commands run in their own network namespace. */
  netns: boolean;
  /** What the report says about it. */
  note: string;
  /** The argv that runs `argv` with this isolation. */
  wrap(argv: readonly string[]): string[];
}

const NOT_ISOLATED = (why: string): Isolation => ({
  netns: false,
  note: `commands ran without network isolation: ${why}; a validator command could reach production services`,
  wrap: (argv) => [...argv],
});

/** The isolation this process can give (see the module header). `disabled`: the user asked for none. */
export function probeIsolation(options: { disabled?: boolean; env?: NodeJS.ProcessEnv } = {}): Isolation {
  if (options.disabled === true) return NOT_ISOLATED("isolation was turned off (--no-isolation)");
  if (process.getuid?.() !== 0) return NOT_ISOLATED("not running as root (a network namespace needs root)");
  const probe = spawnSync("unshare", ["--net", "--", "ip", "link", "set", "lo", "up"], {
    env: options.env ?? process.env,
    stdio: ["ignore", "ignore", "pipe"],
    timeout: 10_000,
  });
  if (probe.error !== undefined) {
    const missing = (probe.error as NodeJS.ErrnoException).code === "ENOENT";
    return NOT_ISOLATED(missing ? "`unshare` (util-linux) is not installed" : probe.error.message);
  }
  if (probe.status !== 0) {
    const stderr = probe.stderr.toString("utf8").trim().split("\n").pop() ?? "";
    return NOT_ISOLATED(`a network namespace could not be made (${stderr || `exit ${probe.status}`})`);
  }
  return {
    netns: true,
    note: "commands ran in a fresh network namespace with only loopback: production was unreachable",
    // `sh -c '...' sh ARGV...`: the script brings loopback up, then becomes the command itself.
    wrap: (argv) => ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", ...argv],
  };
}
