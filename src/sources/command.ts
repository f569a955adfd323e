/**
 * The `command` source: a program's standard output stored as one file of the snapshot, streamed (no
 * temporary copy), and the way back: a stored file piped into a program's standard input.
 *
 * Backup, for each command source:
 * 1. Make a FIFO in a private temporary directory (mode 0700).
 * 2. Start `sh -c 'exec >"$FIFO"; ...'`: the shell's open of the FIFO waits until the archiver's worker opens
 *    it for reading (and the worker's open waits for the shell), so no byte is written before there is a
 *    reader, and the write end stays open until the command has ended: the reader's EOF is the command's.
 * 3. The worker reads the FIFO to EOF as file content (src/snapshot/archiver.ts, VirtualFile).
 * 4. The command's exit decides: anything but exit code 0 (a signal, a timeout, a program that does not
 *    exist) rejects `done`, the archiver throws and no snapshot is saved. Its standard error is in the error.
 * If the command dies before opening the FIFO (killed, say), a worker may already wait in open(): the source
 * then opens the FIFO for writing itself, without blocking, and closes it, which ends that wait with EOF.
 */
import { spawn } from "node:child_process";
import { closeSync, constants, openSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { BulwarkError, errnoCode } from "../core/errors.js";
import type { Repository } from "../repository/repository.js";
import type { OpenedVirtualFile, VirtualFile } from "../snapshot/archiver.js";
import type { Node } from "../snapshot/tree.js";
import { loadTree } from "../snapshot/walker.js";
import {
  childEnv,
  exitError,
  killTree,
  run,
  succeeded,
  trackChild,
  waitForExit,
  type Exit,
} from "./process.js";

/** A command line: a shell command (run by `sh -c`) or a program and its arguments (no shell). */
export type CommandLine = string | string[];

export interface CommandSourceOptions {
  /** Where the output appears in the snapshot, e.g. "/sources/mysql.sql". */
  path: string;
  command: CommandLine;
  /** The command's environment, whole (default: childEnv of this process's, ./process.ts). */
  env?: NodeJS.ProcessEnv;
  /** Kill the command after this long (default: no limit). */
  timeoutMs?: number;
  /** Names the source in errors (default: the command). */
  label?: string;
}

const FIFO_RESCUE_POLL_MS = 20;

/** A virtual file holding the standard output of `command` (see the module comment). */
export function commandSource(options: CommandSourceOptions): VirtualFile {
  return { path: options.path, open: () => startCommand(options) };
}

/** Starts the command writing into a fresh FIFO; exported for sources built on it (postgres). */
export async function startCommand(options: CommandSourceOptions): Promise<OpenedVirtualFile> {
  const dir = await mkdtemp(join(tmpdir(), "bulwark-source-"));
  const fifo = join(dir, "stdout");
  try {
    await run("mkfifo", "mkfifo", ["-m", "0600", fifo]);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const label = options.label ?? `source command \`${commandText(options.command)}\``;
  const script =
    typeof options.command === "string"
      ? `exec >"$BULWARK_FIFO" || exit 125\n${options.command}`
      : `exec >"$BULWARK_FIFO" || exit 125\nexec "$@"`;
  const args = typeof options.command === "string" ? [] : ["sh", ...options.command];
  const child = trackChild(
    spawn("sh", ["-c", script, ...args], {
      stdio: ["ignore", "ignore", "pipe"],
      detached: true, // its own process group: a timeout or an abort kills everything it started
      env: { ...(options.env ?? childEnv(process.env)), BULWARK_FIFO: fifo },
    }),
  );
  // The output ends when the command ends: anything it left running in the background (holding the FIFO
  // open, so the reader would wait for it) is killed with it.
  child.on("exit", () => killTree(child, "SIGKILL"));
  let stopped = false;
  let rescue: NodeJS.Timeout | undefined;
  const exited = waitForExit(child, options.timeoutMs);
  const done = exited.then((exit: Exit) => {
    releaseWaitingReader();
    if (!succeeded(exit)) throw exitError(label, exit, options.timeoutMs);
  });
  done.catch(() => undefined); // the archiver awaits it; it may fail before anyone does

  /** Ends a reader's wait in open() when the command can no longer be the writer (module comment). */
  function releaseWaitingReader(): void {
    if (stopped) return;
    // ENXIO: no reader (yet, or any more); try again until the archiver is done with this file.
    if (!tryRelease()) rescue = setTimeout(releaseWaitingReader, FIFO_RESCUE_POLL_MS);
  }

  /** Opens the FIFO for writing without blocking, and closes it: a reader waiting in open() sees EOF. */
  function tryRelease(): boolean {
    try {
      closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
      return true;
    } catch (err) {
      return errnoCode(err) !== "ENXIO";
    }
  }

  return {
    path: fifo,
    done,
    abort: () => killTree(child, "SIGKILL"),
    close: async () => {
      killTree(child, "SIGKILL");
      await exited;
      stopped = true;
      if (rescue) clearTimeout(rescue);
      // A worker still waiting in open() must not wait forever once the FIFO is gone, and one that enters
      // open() between a release and the removal would: holding the FIFO open for reading and writing (which
      // never blocks on Linux) across the removal gives every such open() a writer, whose close is its EOF.
      let holder: number | undefined;
      try {
        holder = openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK);
      } catch {
        tryRelease();
      }
      try {
        await rm(dir, { recursive: true, force: true });
      } finally {
        if (holder !== undefined) closeSync(holder);
      }
    },
  };
}

export function commandText(command: CommandLine): string {
  return typeof command === "string" ? command : command.join(" ");
}

// ---------------------------------------------------------------------------------------------------------
// The way back: a file of a snapshot as a stream

/** The node at `path` ("/sources/db.dump") below a snapshot's tree; NOT_FOUND when there is none. */
export async function findNode(repo: Repository, treeId: string, path: string): Promise<Node> {
  const parts = path.split("/").filter((p) => p !== "");
  let tree = treeId;
  let node: Node | undefined;
  for (const [i, name] of parts.entries()) {
    node = (await loadTree(repo, tree)).find((n) => n.name === name);
    if (!node) throw new BulwarkError("NOT_FOUND", `${path} is not in the snapshot`);
    if (i < parts.length - 1) {
      if (node.type !== "dir" || !node.subtree)
        throw new BulwarkError("NOT_FOUND", `${path} is not in the snapshot`);
      tree = node.subtree;
    }
  }
  if (!node) throw new BulwarkError("USAGE", "name a file of the snapshot, not its root");
  return node;
}

/** The content of a file of a snapshot, blob by blob (each decrypted and authenticated on load). */
export async function* readSnapshotFile(
  repo: Repository,
  treeId: string,
  path: string,
): AsyncGenerator<Buffer> {
  const node = await findNode(repo, treeId, path);
  if (node.type !== "file") throw new BulwarkError("USAGE", `${path} is a ${node.type}, not a file`);
  for (const id of node.content ?? []) yield await repo.loadBlob(id, "data");
}

export interface PipeResult {
  /** Bytes written to the command's standard input. */
  bytes: number;
}

export interface PipeOptions {
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  /** Where the command's standard output goes (default: this process's standard output). */
  stdout?: "inherit" | "ignore";
  label?: string;
}

/**
 * Pipes a stored file into a command's standard input (`restore --pipe-to CMD`). Fails (with the command's
 * standard error) unless the command reads everything and exits with 0.
 */
export async function restoreToCommand(
  repo: Repository,
  snapshot: { tree: string },
  path: string,
  command: CommandLine,
  options: PipeOptions = {},
): Promise<PipeResult> {
  await findNode(repo, snapshot.tree, path); // a wrong path fails before the command starts
  return pipeToCommand(readSnapshotFile(repo, snapshot.tree, path), command, options);
}

/** Feeds a stream of buffers to a command's standard input; see restoreToCommand. */
export async function pipeToCommand(
  data: AsyncIterable<Buffer>,
  command: CommandLine,
  options: PipeOptions = {},
): Promise<PipeResult> {
  const label = options.label ?? `command \`${commandText(command)}\``;
  const [file, args] =
    typeof command === "string" ? ["sh", ["-c", command]] : [command[0]!, command.slice(1)];
  const child = trackChild(
    spawn(file, args, {
      stdio: ["pipe", options.stdout ?? "inherit", "pipe"],
      detached: true,
      env: options.env ?? childEnv(process.env),
    }),
  );
  const exited = waitForExit(child, options.timeoutMs);
  let bytes = 0;
  let readError: Error | undefined;
  let inputError: unknown;
  const iterator = data[Symbol.asyncIterator]();
  // Only a failure to read the stored data is a read error; the stream's own failure (EPIPE) is thrown into
  // the generator at its yield by Readable.from, and is the input error below.
  const counted = async function* (): AsyncGenerator<Buffer> {
    for (;;) {
      let next: IteratorResult<Buffer>;
      try {
        next = await iterator.next();
      } catch (err) {
        readError = err instanceof Error ? err : new Error(String(err));
        killTree(child, "SIGTERM");
        throw err;
      }
      if (next.done) return;
      bytes += next.value.length;
      yield next.value;
    }
  };
  try {
    await pipeline(Readable.from(counted()), child.stdin);
  } catch (err) {
    inputError = err;
  }
  const exit = await exited;
  if (readError !== undefined) throw readError;
  if (!succeeded(exit)) throw exitError(label, exit, options.timeoutMs);
  if (inputError !== undefined) {
    throw new BulwarkError("IO", `${label} stopped reading its input after ${bytes} bytes`, {
      cause: inputError,
    });
  }
  return { bytes };
}

export interface CommandValidation {
  ok: boolean;
  bytes: number;
  /** How the check ended, with its standard error when it failed. */
  detail: string;
}

/**
 * The validator of a command source: pipes the stored file into a configured check command (for example
 * `gzip -t`, `mysql --database=scratch`, `jq empty`); usable when the check reads everything and exits 0.
 */
export async function validateCommandSource(
  repo: Repository,
  snapshot: { tree: string },
  path: string,
  check: CommandLine,
  options: Omit<PipeOptions, "stdout"> = {},
): Promise<CommandValidation> {
  try {
    const { bytes } = await restoreToCommand(repo, snapshot, path, check, { ...options, stdout: "ignore" });
    return { ok: true, bytes, detail: `\`${commandText(check)}\` accepted ${bytes} bytes` };
  } catch (err) {
    return { ok: false, bytes: 0, detail: (err as Error).message };
  }
}
