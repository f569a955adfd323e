/**
 * Finding a DR run's processes by their environment (src/dr/leftovers.ts processesOfRun): what a resumed
 * failover kills before it starts a service again whose earlier start was never recorded.
 */
import { spawn } from "node:child_process";

import { afterAll, describe, expect, it } from "vitest";

import { kill, processesOfRun } from "../../src/dr/leftovers.js";

const children: number[] = [];
afterAll(() => kill(children));

function sleeper(vars: Record<string, string>): number {
  const child = spawn("sleep", ["30"], { env: { PATH: process.env.PATH, ...vars }, stdio: "ignore" });
  children.push(child.pid!);
  return child.pid!;
}

describe("processesOfRun", () => {
  it("finds the processes of a run, and of one service of it, by whole variables", async () => {
    const web = sleeper({ BULWARK_DR_RUN: "shop-1", BULWARK_DR_SERVICE: "web" });
    const db = sleeper({ BULWARK_DR_RUN: "shop-1", BULWARK_DR_SERVICE: "db" });
    const other = sleeper({ BULWARK_DR_RUN: "shop-10", BULWARK_DR_SERVICE: "web" });
    const webapp = sleeper({ BULWARK_DR_SERVICE: "webapp", BULWARK_DR_RUN: "shop-1" });
    await new Promise((r) => setTimeout(r, 100));
    expect(processesOfRun("shop-1").sort()).toEqual([web, db, webapp].sort());
    expect(processesOfRun("shop-1", "web")).toEqual([web]);
    expect(processesOfRun("shop-10", "web")).toEqual([other]);
    expect(processesOfRun("shop-2")).toEqual([]);
    kill([web]);
    await new Promise((r) => setTimeout(r, 100));
    expect(processesOfRun("shop-1", "web")).toEqual([]);
  });
});
