/**
 * `bulwark copy --from R1 --to R2 [SNAPSHOT...]`: copies snapshots between repositories of one copy set
 * (src/copy/copier.ts does the work). R1 and R2 are locations, or the names of targets in the config file;
 * a target's password, credentials and immutability then come from the config.
 */
import type { Command } from "commander";

import type { Target } from "../../config/types.js";
import { BulwarkError, hasCode } from "../../core/errors.js";
import { formatBytes, formatCount, formatDuration } from "../../core/format.js";
import { assertCopyCompatible, copySnapshots, type CopyResult } from "../../copy/copier.js";
import { initTargetRepository, openTargetRepository, scrub, type TargetAccess } from "../../ops/targets.js";
import { RepoLock } from "../../repository/lock.js";
import { Repository } from "../../repository/repository.js";
import { findSnapshot, type SnapshotWithId } from "../../snapshot/snapshot.js";
import { loadConfigIfPresent } from "../config-file.js";
import { Output, getPassword, openBackend, warnDamagedSnapshot, type GlobalOptions } from "../context.js";
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

/** One end of a copy: how to open (or create) its repository, and what to call it in messages. */
export interface Endpoint {
  label: string;
  open(): Promise<Repository>;
  create(from: Repository): Promise<Repository>;
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
      const from = endpoint(flags.from, targets, {
        env: process.env,
        defaultPassword: fromPassword,
        secrets,
      });
      const to = endpoint(flags.to, targets, { env: process.env, defaultPassword: toPassword, secrets });

      const source = await from.open();
      let target: Repository | undefined;
      let sourceLock: RepoLock | undefined;
      let targetLock: RepoLock | undefined;
      const progress = createProgress(process.stderr, { enabled: out.progressEnabled, label: "copy" });
      try {
        try {
          target = await to.open();
        } catch (err) {
          if (!(flags.init === true && hasCode(err, "NO_REPOSITORY"))) throw err;
          target = await to.create(source);
          out.info(`created repository ${target.id.slice(0, 10)} at ${to.label} as a copy of ${from.label}`);
        }
        // Before any lock: an incompatible destination must not be written to at all.
        assertCopyCompatible(source, target);
        sourceLock = await RepoLock.acquire(source, false);
        targetLock = await RepoLock.acquire(target, false);
        await Promise.all([source.loadIndex(), target.loadIndex()]);
        let snapshots: SnapshotWithId[] | undefined;
        if (refs.length > 0) {
          snapshots = [];
          for (const ref of refs) {
            const s = await findSnapshot(source, ref, {}, warnDamagedSnapshot);
            if (!snapshots.some((x) => x.id === s.id)) snapshots.push(s);
          }
        }
        const result = await copySnapshots(source, target, {
          ...(snapshots ? { snapshots } : {}),
          verify: flags.verify,
          reporter: {
            progress: (p) =>
              progress.update({
                filesDone: p.blobsDone,
                filesTotal: p.blobsTotal,
                bytesDone: p.bytesDone,
                bytesTotal: p.bytesTotal,
                current: `snapshot ${p.snapshot.slice(0, 8)} (${p.snapshotIndex + 1}/${p.snapshotCount})`,
              }),
            snapshotDone: (c) =>
              progress.log(
                c.alreadyThere
                  ? `${c.source.slice(0, 8)} is already on ${to.label} as ${c.target.slice(0, 8)}`
                  : `${c.source.slice(0, 8)} copied as ${c.target.slice(0, 8)}: ${formatCount(c.blobsCopied)} blobs, ${formatBytes(c.bytesCopied)}`,
              ),
            warn: (m) => progress.log(`warning: ${scrub(m, secrets)}`),
          },
        });
        progress.done();
        report(out, result, from.label, to.label);
        process.exitCode = result.failed.length > 0 ? EXIT.ERROR : EXIT.OK;
      } finally {
        progress.done();
        await targetLock?.release().catch(() => undefined);
        await sourceLock?.release().catch(() => undefined);
        await target?.backend.close().catch(() => undefined);
        await source.backend.close().catch(() => undefined);
      }
    });
}

function report(out: Output, result: CopyResult, from: string, to: string): void {
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

function endpoint(value: string, targets: Record<string, Target>, access: TargetAccess): Endpoint {
  const target = looksLikeTargetName(value) ? targets[value] : undefined;
  if (target !== undefined) {
    return {
      label: `target ${target.name}`,
      open: () => openTargetRepository(target, access),
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
      const backend = await openBackend(value, false);
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
