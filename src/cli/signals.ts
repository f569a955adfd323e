/**
 * Who handles SIGINT, SIGTERM and SIGHUP. By default the CLI's entry point (./main.ts) does: it releases the
 * repository locks and exits 130. A long-running command with its own handling (`bulwark daemon`: SIGHUP
 * reloads the config, SIGTERM stops the scheduling gracefully) claims them, and the default handler stands
 * aside.
 */
let claimed = false;

/** The calling command handles the signals itself from now on. */
export function claimSignals(): void {
  claimed = true;
}

export function signalsClaimed(): boolean {
  return claimed;
}
