/**
 * Where a `dr drill` runs its services (docs/design.md §24): production keeps running on the same ports, so
 * the recovered services must not see it, nor it them.
 *
 * As root with iproute2, a named network namespace `bulwark-dr-<pid>-<id>` with only loopback, brought up: every
 * service, check and step runs in it through `ip netns exec`, listens on its configured ports (free there
 * whatever the host runs) and reaches nothing outside. Unlike a drill validator's throwaway `unshare --net`,
 * the namespace must outlive one process (a service started in one wave is checked and used by the next),
 * so it is named, and deleted at teardown: in the caller's `finally`, and by an exit handler should the
 * process end first.
 *
 * Elsewhere (not root, no `ip`, a kernel that refuses), the services run on the host with every port they
 * claim remapped to a free one: the runbook's commands see the mapping in BULWARK_DR_PORT_<port> variables,
 * the checks are rewritten through it, and the report says that the services were not isolated.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";

export interface DrIsolation {
  /** The namespace the drill runs in; undefined when it runs on the host with remapped ports. */
  netns?: string;
  /** Configured port -> the port used (empty inside a namespace, where ports stay as configured). */
  portMap: Map<number, number>;
  /** What the report says about it. */
  note: string;
  /** Deletes the namespace; safe to call more than once. */
  teardown(): void;
}

/** Namespaces this module made, for the exit handler. */
const made = new Set<string>();
let handlerInstalled = false;

function deleteNamespace(name: string): void {
  spawnSync("ip", ["netns", "delete", name], { stdio: "ignore", timeout: 10_000 });
  made.delete(name);
}

/**
 * Makes the drill's isolation (see the module header). `ports`: every port the runbook's services claim,
 * remapped when there is no namespace. `disabled`: the user asked for none (--no-isolation).
 */
export async function makeDrIsolation(
  ports: readonly number[],
  options: { disabled?: boolean } = {},
): Promise<DrIsolation> {
  const why = options.disabled
    ? "isolation was turned off (--no-isolation)"
    : process.getuid?.() !== 0
      ? "not running as root (a network namespace needs root)"
      : undefined;
  if (why === undefined) {
    // The owner's pid in the name: the next drill removes it should this process be killed (./leftovers.ts).
    const name = `bulwark-dr-${process.pid}-${randomBytes(4).toString("hex")}`;
    const add = spawnSync("ip", ["netns", "add", name], {
      stdio: ["ignore", "ignore", "pipe"],
      timeout: 10_000,
    });
    if (add.error === undefined && add.status === 0) {
      made.add(name);
      if (!handlerInstalled) {
        handlerInstalled = true;
        process.once("exit", () => {
          for (const n of [...made]) deleteNamespace(n);
        });
      }
      const up = spawnSync("ip", ["-n", name, "link", "set", "lo", "up"], {
        stdio: "ignore",
        timeout: 10_000,
      });
      if (up.status === 0) {
        return {
          netns: name,
          portMap: new Map(),
          note: `services ran in network namespace ${name} with only loopback: production was unreachable, and its ports were free`,
          teardown: () => deleteNamespace(name),
        };
      }
      deleteNamespace(name);
    }
    const reason =
      add.error !== undefined
        ? (add.error as NodeJS.ErrnoException).code === "ENOENT"
          ? "`ip` (iproute2) is not installed"
          : add.error.message
        : `a network namespace could not be made (${add.stderr.toString("utf8").trim() || `exit ${add.status}`})`;
    return remapped(ports, reason);
  }
  return remapped(ports, why);
}

async function remapped(ports: readonly number[], why: string): Promise<DrIsolation> {
  const portMap = new Map<number, number>();
  for (const p of ports) portMap.set(p, await freePort());
  return {
    portMap,
    note: `services ran on this host without network isolation (${why}), on remapped ports ${[...portMap].map(([a, b]) => `${a}->${b}`).join(", ") || "(none)"}: a service could reach production`,
    teardown: () => undefined,
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

/** The BULWARK_DR_PORT_<port> variables of a port map, for the services' environment. */
export function portVariables(portMap: ReadonlyMap<number, number>): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const [from, to] of portMap) vars[`BULWARK_DR_PORT_${from}`] = String(to);
  return vars;
}
