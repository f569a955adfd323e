/**
 * childEnv (src/sources/process.ts), the one scrubbing rule for every program Bulwark starts: only the
 * harmless variables, the names a config lists, the families a program needs, and what Bulwark sets.
 */
import { describe, expect, it } from "vitest";

import { childEnv } from "../../src/sources/process.js";

const from = {
  PATH: "/usr/bin",
  HOME: "/home/ann",
  LANG: "C.UTF-8",
  LC_TIME: "de_DE.UTF-8",
  BULWARK_PASSWORD: "secret",
  BULWARK_REST_TOKEN: "token",
  AWS_SECRET_ACCESS_KEY: "key",
  DB_PASSWORD: "db",
  PGHOST: "db.example",
  MYSQL_PWD: "mysql",
  EMPTY: undefined,
};

describe("childEnv", () => {
  it("passes only the harmless variables by default", () => {
    expect(childEnv(from)).toEqual({
      PATH: "/usr/bin",
      HOME: "/home/ann",
      LANG: "C.UTF-8",
      LC_TIME: "de_DE.UTF-8",
    });
  });

  it("adds named variables, prefixed families and what is set, which wins", () => {
    const env = childEnv(from, {
      pass: ["MYSQL_PWD", "UNSET"],
      prefixes: ["PG"],
      set: { HOME: "/x", B: "1" },
    });
    expect(env).toEqual({
      PATH: "/usr/bin",
      HOME: "/x",
      LANG: "C.UTF-8",
      LC_TIME: "de_DE.UTF-8",
      MYSQL_PWD: "mysql",
      PGHOST: "db.example",
      B: "1",
    });
  });
});
