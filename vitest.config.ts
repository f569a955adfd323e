import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts", "src/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: "forks",
    // The CLI end-to-end tests run the built dist/: scripts/test.sh builds it, and the global setup
    // rebuilds it when it is older than src/ or holds outputs of moved files (test/setup/fresh-dist.ts).
    globalSetup: ["test/setup/fresh-dist.ts"],
  },
});
