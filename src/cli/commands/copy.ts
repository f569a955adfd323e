/**
 * `bulwark copy --from R1 --to R2 [SNAPSHOT...]`: copies snapshots between repositories of one copy set
 * (the copy operation, src/ops/copy.ts, does the work; bulwark run's copy steps call the same). R1 and R2 are locations, or the names of targets in the config file;
 * a target's password, credentials and immutability then come from the config.
 */
import type { Command } from "commander";

import type { Target } from "../../config/types.js";
import { systemClock } from "../../core/clock.js";
import { BulwarkError } from "../../core/errors.js";
import { formatBytes, formatCount, formatDuration } from "../../core/format.js";
import { copyToDestination, type CopyEndpoint, type CopyOutcome } from "../../ops/copy.js";
import { initTargetRepository, openTargetRepository, scrub, type TargetAccess } from "../../ops/targets.js";
import { Repository } from "../../repository/repository.js";
import { findSnapshot, type SnapshotWithId } from "../../snapshot/snapshot.js";
import { loadConfigIfPresent } from "../config-file.js";
import {
  Output,
  getPassword,
  openBackend,
  renderWithProgress,
  warnDamagedSnapshot,
  type GlobalOptions,
} from "../context.js";
import { EXIT } from "../exit-codes.js";
import { createProgress } from "../progress.js";

interface CopyFlags {
  from: string;
  to: string;
  fromPasswordFile?: string;
  toPasswordFile?: string;
  config?: string;
  init?: boolean;
  verify: boolean;
}

export function registerCopy(program: Command, globals: () => GlobalOptions): void {
  program
    .command("copy")
    .description("copy snapshots to another repository of the same copy set (only the data it lacks)")
    .argument("[snapshot...]", "snapshots to copy: ids, prefixes or `latest` (default: all)")
    .requiredOption("--from <repo>", "the source: a location, or a target name from the config file")
    .requiredOption("--to <repo>", "the destination: a location, or a target name from the config file")
    .option("--from-password-file <file>", "password of the source (default: -p / BULWARK_PASSWORD[_FILE])")
    .option("--to-password-file <file>", "password of the destination (default: the source's)")
    .option("-c, --config <file>", "the config file naming the targets (env BULWARK_CONFIG; ./bulwark.yaml)")
    .option(
      "--init",
      "create the destination repository (sharing the source's chunker parameters) if missing",
    )
    .option("--no-verify", "do not read each pack back from the destination to check it")
    .addHelpText(
      "after",
      `
Both repositories must share chunker parameters and blob ids: create the destination with
\`bulwark init --copy-chunker-params-from SOURCE\`, or pass --init. The destination may have its own password:
each blob is decrypted, checked against its id, and sealed again under the destination's key.
Every pack written is read back and checked before the destination's index lists it (--no-verify skips this).
A snapshot already on the destination is not copied again. An interrupted copy resumes where it stopped:
run the same command again; what arrived is not sent twice.
Exit code 0 when every snapshot was copied, 1 when any could not be (the others are copied).`,
    )
    .action(async (refs: string[], flags: CopyFlags) => {
      const opts = globals();
      const out = new Output(opts);
      const loaded = await loadConfigIfPresent(flags.config).catch((err: unknown) => {
        // A broken config matters only when a target name must be looked up in it.
        if (looksLikeTargetName(flags.from) || looksLikeTargetName(flags.to)) throw err;
        return undefined;
      });
      const targets = loaded?.config.targets ?? {};
      const secrets: string[] = [];
      let sourcePassword: Promise<string> | undefined;
      const fromPassword = (): Promise<string> =>
        (sourcePassword ??= getPassword(
          { ...opts, ...(flags.fromPasswordFile ? { passwordFile: flags.fromPasswordFile } : {}) },
          false,
          "enter password of the source repository: ",
        ));
      const toPassword = (): Promise<string> =>
        flags.toPasswordFile ? getPassword({ passwordFile: flags.toPasswordFile }) : fromPassword();
      // The source only gives: it is opened read-only (its shared lock aside).
      const from = endpoint(
        flags.from,
        targets,
        { env: process.env, defaultPassword: fromPassword, secrets },
        true,
      );
      const to = endpoint(flags.to, targets, { env: process.env, defaultPassword: toPassword, secrets });

      const source = await from.open();
      const progress = createProgress(process.stderr, { enabled: out.progressEnabled, label: "copy" });
      try {
        const result = await copyToDestination({
          source,
          sourceLabel: from.label,
          destination: to,
          clock: systemClock,
          events: renderWithProgress(out, progress),
          init: flags.init === true,
          verify: flags.verify,
          scrub: (m) => scrub(m, secrets),
          ...(refs.length > 0
            ? {
                select: async (repo) => {
                  const snapshots: SnapshotWithId[] = [];
                  for (const ref of refs) {
                    const s = await findSnapshot(repo, ref, {}, warnDamagedSnapshot);
                    if (!snapshots.some((x) => x.id === s.id)) snapshots.push(s);
                  }
                  return snapshots;
                },
              }
            : {}),
        });
        progress.done();
        report(out, result, from.label, to.label);
        process.exitCode = result.failed.length > 0 ? EXIT.ERROR : EXIT.OK;
      } finally {
        progress.done();
        await source.backend.close().catch(() => undefined);
      }
    });
}

function report(out: Output, result: CopyOutcome, from: string, to: string): void {
  out.emitJson({ from, to, ...result });
  const copied = result.snapshots.filter((s) => !s.alreadyThere).length;
  const present = result.snapshots.length - copied;
  out.info(
    `Sent ${formatCount(result.blobsCopied)} blobs (${formatBytes(result.bytesCopied)}) in ${formatCount(result.packsWritten)} packs (${formatBytes(result.storedBytes)} stored) in ${formatDuration(result.durationMs)}; ${formatCount(result.blobsPresent)} blobs were already there`,
  );
  if (result.adoptedPacks > 0) {
    out.info(
      `Resumed: ${formatCount(result.adoptedPacks)} packs of an interrupted run were already there and were indexed`,
    );
  }
  if (result.verifiedPacks > 0) {
    out.info(
      `Verified on arrival: ${formatCount(result.verifiedPacks)} packs, ${formatCount(result.verifiedBlobs)} blobs read back`,
    );
  }
  out.result(
    `${copied} snapshot${copied === 1 ? "" : "s"} copied to ${to}` +
      (present > 0 ? `, ${present} already there` : "") +
      (result.failed.length > 0 ? `, ${result.failed.length} failed` : ""),
  );
  for (const f of result.failed) out.warn(`error: snapshot ${f.source.slice(0, 8)}: ${f.error}`);
  if (result.failed.length > 0) {
    out.warn(`run \`bulwark check --read-data\` on ${from} to see what is damaged`);
  }
}

/** A bare word (no slash, no scheme) names a config target. */
function looksLikeTargetName(value: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(value) && !value.includes("/");
}

function endpoint(
  value: string,
  targets: Record<string, Target>,
  access: TargetAccess,
  readOnly = false,
): CopyEndpoint {
  const target = looksLikeTargetName(value) ? targets[value] : undefined;
  if (target !== undefined) {
    return {
      label: `target ${target.name}`,
      open: () => openTargetRepository(target, access, { readOnly }),
      create: (from) => initTargetRepository(target, access, { copyParamsFrom: from.config }),
    };
  }
  if (looksLikeTargetName(value) && Object.keys(targets).length > 0) {
    throw new BulwarkError("USAGE", `${JSON.stringify(value)} is not a target of the config file`, {
      hint: `the targets are ${Object.keys(targets).join(", ")}; a local directory is given as ./${value}`,
    });
  }
  return {
    label: value,
    open: async () => {
      const backend = await openBackend(value, false, { readOnly });
      try {
        return await Repository.open(backend, await access.defaultPassword());
      } catch (err) {
        await backend.close().catch(() => undefined);
        throw err;
      }
    },
    create: async (from) => {
      const backend = await openBackend(value, true);
      try {
        return await Repository.init(backend, await access.defaultPassword(), {
          copyParamsFrom: from.config,
        });
      } catch (err) {
        await backend.close().catch(() => undefined);
        throw err;
      }
    },
  };
}
