/**
 * Shared by the source tests: an in-memory repository with blob workers (from the build in dist/), and
 * the rule that a missing external tool fails under CI=true instead of skipping.
 */
import { execFileSync } from "node:child_process";
import { MemoryBackend } from "../../src/backend/memory/memory-backend.js";
import { Repository } from "../../src/repository/repository.js";
import { WorkerPool } from "../../src/repository/worker-pool.js";

const weakKdf = { N: 1024, r: 8, p: 1 };

export interface TestRepository {
  repo: Repository;
  pool: WorkerPool;
  close(): Promise<void>;
}

export async function memoryRepository(): Promise<TestRepository> {
  const backend = new MemoryBackend();
  const repo = await Repository.init(backend, "pw", { kdf: weakKdf });
  const pool = new WorkerPool(repo, 2);
  return { repo, pool, close: () => pool.close() };
}

/** Snapshot documents in the repository. */
export async function snapshotCount(repo: Repository): Promise<number> {
  let n = 0;
  for await (const _ of repo.backend.list("snapshot")) n++;
  return n;
}

/**
 * True when `program` runs. When it does not and we are root with apt-get, the Debian package `aptPackage`
 * is installed first (the tests bring what they need; see scripts/services/postgres.sh for PostgreSQL).
 * Outside CI a tool still missing skips its tests; under CI=true it is an error, so a machine without the
 * tool can never pass by skipping.
 */
export function haveTool(program: string, aptPackage?: string): boolean {
  if (runs(program)) return true;
  if (aptPackage !== undefined && process.getuid?.() === 0 && runs("apt-get")) {
    const install = (): void =>
      void execFileSync("apt-get", ["install", "-y", "--no-install-recommends", aptPackage], {
        stdio: "ignore",
        env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
      });
    try {
      install();
    } catch {
      try {
        execFileSync("apt-get", ["update"], { stdio: "ignore" });
        install();
      } catch {
        // reported below
      }
    }
    if (runs(program)) return true;
  }
  if (process.env.CI === "true") {
    throw new Error(
      `${program} is required under CI=true` + (aptPackage ? ` (apt-get install ${aptPackage})` : ""),
    );
  }
  return false;
}

function runs(program: string): boolean {
  try {
    execFileSync(program, ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
