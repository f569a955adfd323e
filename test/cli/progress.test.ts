import { Writable } from "node:stream";

import { describe, expect, it } from "vitest";

import { createProgress } from "../../src/cli/progress.js";

const CLEAR = "\r\x1b[2K";
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** Collects everything written, like a terminal that keeps a transcript. */
class FakeTerminal extends Writable {
  output = "";
  constructor(public columns?: number) {
    super({ decodeStrings: false });
  }
  override _write(chunk: unknown, _encoding: BufferEncoding, callback: () => void): void {
    this.output += String(chunk);
    callback();
  }
  /** Each status line drawn, in order (the text after every clear-line sequence). */
  frames(): string[] {
    return this.output
      .split(CLEAR)
      .slice(1)
      .filter((frame) => frame !== "");
  }
  lastFrame(): string | undefined {
    return this.frames().at(-1);
  }
}

function fakeClock(start = 1_000_000): { now: () => number; advance: (ms: number) => void } {
  let time = start;
  return { now: () => time, advance: (ms) => void (time += ms) };
}

describe("createProgress (disabled)", () => {
  it("writes nothing for updates and done, and prints log lines", () => {
    const term = new FakeTerminal(80);
    const clock = fakeClock();
    const progress = createProgress(term, { enabled: false, label: "backup", clock: clock.now });
    progress.update({ filesDone: 1, bytesDone: 10 });
    clock.advance(5000);
    progress.update({ filesDone: 2, bytesDone: 20, current: "/a/b" });
    progress.log("warning: cannot read /a/c");
    progress.log("already terminated\n");
    progress.done();
    expect(term.output).toBe("warning: cannot read /a/c\nalready terminated\n");
  });
});

describe("createProgress (enabled)", () => {
  it("renders elapsed time, percentage, counts, sizes, rate, ETA and the current path", () => {
    const term = new FakeTerminal(120);
    const clock = fakeClock();
    const progress = createProgress(term, { enabled: true, label: "", clock: clock.now });
    clock.advance(12_000);
    progress.update({
      filesDone: 1234,
      filesTotal: 5678,
      bytesDone: 512 * MiB,
      bytesTotal: 1.1 * GiB,
      current: "path/being/read",
    });
    // 512 MiB in 12 s is 42.7 MiB/s; the remaining 614.4 MiB take 14.4 s, shown rounded up.
    expect(term.output).toBe(
      `${CLEAR}[0:12] 45.5% 1,234 / 5,678 files 512.0 MiB / 1.10 GiB 42.7 MiB/s ETA 0:15 path/being/read`,
    );
  });

  it("shows the label, and no percentage or ETA while totals are unknown", () => {
    const term = new FakeTerminal(120);
    const clock = fakeClock();
    const progress = createProgress(term, { enabled: true, label: "scanning", clock: clock.now });
    clock.advance(2000);
    progress.update({ filesDone: 1500, bytesDone: 3 * MiB, errors: 2 });
    expect(term.lastFrame()).toBe("[0:02] scanning 1,500 files 3.0 MiB 1.5 MiB/s 2 errors");
  });

  it("has no rate until a sample interval has passed", () => {
    const term = new FakeTerminal(120);
    const clock = fakeClock();
    const progress = createProgress(term, { enabled: true, label: "", clock: clock.now });
    progress.update({ filesDone: 0, filesTotal: 10, bytesDone: 0, bytesTotal: 100 });
    expect(term.lastFrame()).toBe("[0:00] 0.0% 0 / 10 files 0 B / 100 B");
  });

  it("estimates from files when only the file total is known", () => {
    const term = new FakeTerminal(120);
    const clock = fakeClock();
    const progress = createProgress(term, { enabled: true, label: "", clock: clock.now });
    clock.advance(10_000);
    progress.update({ filesDone: 100, filesTotal: 400, bytesDone: 0, errors: 1 });
    expect(term.lastFrame()).toBe("[0:10] 25.0% 100 / 400 files 0 B 0 B/s ETA 0:30 1 error");
  });

  it("redraws at most every 100 ms", () => {
    const term = new FakeTerminal(80);
    const clock = fakeClock();
    const progress = createProgress(term, { enabled: true, label: "", clock: clock.now });
    progress.update({ filesDone: 1, bytesDone: 0 });
    clock.advance(50);
    progress.update({ filesDone: 2, bytesDone: 0 });
    clock.advance(49);
    progress.update({ filesDone: 3, bytesDone: 0 });
    expect(term.frames()).toHaveLength(1);
    clock.advance(1);
    progress.update({ filesDone: 4, bytesDone: 0 });
    expect(term.frames()).toHaveLength(2);
    expect(term.lastFrame()).toBe("[0:00] 4 files 0 B");
  });

  it("smooths the rate exponentially over recent seconds", () => {
    const term = new FakeTerminal(120);
    const clock = fakeClock();
    const progress = createProgress(term, { enabled: true, label: "", clock: clock.now });
    let bytes = 0;
    for (let second = 0; second < 10; second++) {
      clock.advance(1000);
      bytes += 10 * MiB;
      progress.update({ filesDone: 0, bytesDone: bytes });
    }
    expect(term.lastFrame()).toContain(" 10.0 MiB/s");
    // Five seconds of nothing: the old rate decays by e^-1 (time constant 5 s), it does not drop to 0.
    for (let second = 0; second < 5; second++) {
      clock.advance(1000);
      progress.update({ filesDone: 0, bytesDone: bytes });
    }
    expect(term.lastFrame()).toBe("[0:15] 0 files 100.0 MiB 3.7 MiB/s");
  });

  it("keeps the end of a long path and fits the terminal width", () => {
    const term = new FakeTerminal(60);
    const clock = fakeClock();
    const progress = createProgress(term, { enabled: true, label: "", clock: clock.now });
    const longPath = "/home/user/projects/some/deeply/nested/directory/structure/file.txt";
    progress.update({ filesDone: 7, bytesDone: 2048, current: longPath });
    const frame = term.lastFrame() ?? "";
    expect(frame).toBe("[0:00] 7 files 2.0 KiB …nested/directory/structure/file.txt");
    expect(Array.from(frame).length).toBe(59);
  });

  it("cuts the status itself on a very narrow terminal and leaves the path out", () => {
    const term = new FakeTerminal(20);
    const clock = fakeClock();
    const progress = createProgress(term, { enabled: true, label: "restore", clock: clock.now });
    progress.update({ filesDone: 1, filesTotal: 2, bytesDone: 1, bytesTotal: 2, current: "/x/y" });
    expect(term.lastFrame()).toBe("[0:00] restore 50.0");
  });

  it("defaults to 80 columns when the stream has none", () => {
    const term = new FakeTerminal(undefined);
    const clock = fakeClock();
    const progress = createProgress(term, { enabled: true, label: "", clock: clock.now });
    progress.update({ filesDone: 1, bytesDone: 0, current: `/${"x".repeat(200)}` });
    expect(Array.from(term.lastFrame() ?? "").length).toBe(79);
  });

  it("replaces control characters in file names", () => {
    const term = new FakeTerminal(80);
    const clock = fakeClock();
    const progress = createProgress(term, { enabled: true, label: "", clock: clock.now });
    progress.update({ filesDone: 1, bytesDone: 0, current: "/evil\nname\x1b[31m" });
    expect(term.lastFrame()).toBe("[0:00] 1 file 0 B /evil?name?[31m");
  });

  it("log clears the bar, prints the line and redraws the bar", () => {
    const term = new FakeTerminal(80);
    const clock = fakeClock();
    const progress = createProgress(term, { enabled: true, label: "", clock: clock.now });
    progress.log("before any update");
    progress.update({ filesDone: 1, bytesDone: 0 });
    term.output = "";
    clock.advance(10);
    progress.log("warning: skipped /a");
    expect(term.output).toBe(`${CLEAR}warning: skipped /a\n${CLEAR}[0:00] 1 file 0 B`);
  });

  it("done clears the bar; later updates are ignored and logs print plainly", () => {
    const term = new FakeTerminal(80);
    const clock = fakeClock();
    const progress = createProgress(term, { enabled: true, label: "", clock: clock.now });
    progress.log("first");
    progress.update({ filesDone: 1, bytesDone: 0 });
    progress.done();
    expect(term.output).toBe(`first\n${CLEAR}[0:00] 1 file 0 B${CLEAR}`);
    term.output = "";
    clock.advance(1000);
    progress.update({ filesDone: 2, bytesDone: 0 });
    progress.log("summary");
    progress.done();
    expect(term.output).toBe("summary\n");
  });
});
