/**
 * A Backend wrapper that injects faults, for unit tests of the code paths that only run when a backend
 * misbehaves: retries, short reads, and the crash windows of a save.
 *
 * Real backends fail rarely and never on cue, so the paths that handle failure (src/backend/wrappers/retry.ts,
 * the repository's length and hash checks, the recovery of an interrupted save) would otherwise go untested
 * or be tested with ad-hoc stubs in every file. This wrapper makes a failure a line in a test: fail the Nth
 * call of a method, or every call a predicate picks, with a TRANSIENT, AUTH, NOT_FOUND or custom error; cut a
 * read short; delay a call; or let a save reach the inner backend and then reject, as when a process dies (or
 * a connection drops) after the write but before the caller hears of it. Every call is logged so a test can
 * assert how often, and in what order, the code under test went to the backend.
 *
 * It is a unit-test tool and nothing more: a test that passes over it (typically over the memory backend)
 * shows that the code above a backend reacts correctly to the faults modelled here. It is never evidence that
 * a feature works against a real server, whose failures (partial uploads, mid-stream timeouts, eventual
 * consistency, throttling with Retry-After) are richer than these; those belong in the backends' own tests.
 * No production code imports it.
 */
import type {
  Backend,
  ByteRange,
  FileDigest,
  FileHandle,
  FileInfo,
  FileType,
  Retention,
  SaveOptions,
  SaveSource,
} from "../backend.js";
import { handleToString } from "../backend.js";
import { BulwarkError, type ErrorCode } from "../../core/errors.js";

/** The Backend methods a fault can be attached to. */
export type FaultMethod =
  | "stat"
  | "list"
  | "load"
  | "openRead"
  | "save"
  | "remove"
  | "getRetention"
  | "extendRetention"
  | "removeStaleTempFiles"
  | "digest"
  | "close";

/** One call made through the wrapper, as recorded in the call log and shown to rule predicates. */
export interface FaultCall {
  /** 1-based position of the call among all calls through this wrapper (cleared logs do not reset it). */
  readonly seq: number;
  readonly method: FaultMethod;
  /** The file the call is about; absent for list, removeStaleTempFiles and close. */
  readonly handle: FileHandle | undefined;
  /** The handle's type, or the listed type for list: lets a predicate pick "every pack" in one test. */
  readonly type: FileType | undefined;
  readonly range: ByteRange | undefined;
  /** The kinds of fault this call was given, in the order their rules were added (a fail preempts the rest). */
  readonly faults: readonly Fault["kind"][];
}

/**
 * The error a fault rejects with: an error code (a BulwarkError with that code and a message naming the
 * call), a ready Error (thrown as it is, every time), or a factory called once per fault, for tests that
 * need a fresh or distinguishable error each time.
 */
export type FaultError = ErrorCode | Error | ((call: FaultCall) => Error);

export type Fault =
  /** Rejects before the call reaches the inner backend; a stream throws before its first piece. */
  | { readonly kind: "fail"; readonly error?: FaultError }
  /** load and openRead only: the result stops after `bytes` bytes, as a short read would. */
  | { readonly kind: "truncate"; readonly bytes: number }
  /** Waits `ms` before the call goes on to the inner backend (or to another fault of the same call). */
  | { readonly kind: "delay"; readonly ms: number }
  /**
   * save only: the save completes on the inner backend, then the call rejects. The default error is an
   * InjectedCrash, which nothing retries (the process is "dead"); pass "TRANSIENT" to model a connection
   * lost after the server committed the write, which retry.ts will retry.
   */
  | { readonly kind: "crash-after-save"; readonly error?: FaultError };

export interface FaultRule {
  /** The method, or methods, the rule watches. */
  readonly method: FaultMethod | readonly FaultMethod[];
  /** Narrows the calls the rule watches, usually by `call.handle` or `call.type`. Absent: all of them. */
  readonly when?: (call: FaultCall) => boolean;
  /**
   * Which of the watched calls get the fault, counted from 1 since the rule was added, over all the rule's
   * methods together and only calls passing `when` (use one rule per method to count each on its own).
   * Absent: every watched call, up to `times`.
   */
  readonly nth?: number | readonly number[];
  /** At most this many faults in all from this rule; absent: no limit. */
  readonly times?: number;
  readonly fault: Fault;
}

/** A rule in force: what it has seen and done so far, and a way to take it back. */
export interface ActiveFault {
  readonly rule: FaultRule;
  /** Calls the rule watched (method and `when` matched). */
  readonly matched: number;
  /** Calls the fault was applied to. */
  readonly fired: number;
  /** Removes the rule; calls already under way keep the faults they were given. */
  remove(): void;
}

export interface FaultPlan {
  /** Rules in force from the start; more can be added with addRule. */
  readonly rules?: readonly FaultRule[];
  /** How delays wait; injected by tests that drive time themselves. Default: setTimeout. */
  readonly sleep?: (ms: number) => Promise<void>;
}

export interface FaultyBackend extends Backend {
  /** The wrapped backend, to check what a crashed save left behind without going through the faults. */
  readonly inner: Backend;
  /** Every call so far (since clearCalls), in the order made, failed ones included. */
  readonly calls: readonly FaultCall[];
  /** The logged calls of one method. */
  callsOf(method: FaultMethod): FaultCall[];
  addRule(rule: FaultRule): ActiveFault;
  /** The rules in force, in the order they were added (which is the order their faults apply). */
  readonly rules: readonly ActiveFault[];
  clearRules(): void;
  clearCalls(): void;
}

/**
 * The default error of a crash-after-save: not a BulwarkError, so no wrapper retries it and it surfaces
 * like the end of a process would, with the file already stored.
 */
export class InjectedCrash extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InjectedCrash";
  }
}

const ALL_METHODS: readonly FaultMethod[] = [
  "stat",
  "list",
  "load",
  "openRead",
  "save",
  "remove",
  "getRetention",
  "extendRetention",
  "removeStaleTempFiles",
  "digest",
  "close",
];

const defaultSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

interface RuleState {
  readonly rule: FaultRule;
  readonly methods: ReadonlySet<FaultMethod>;
  readonly nth: ReadonlySet<number> | undefined;
  matched: number;
  fired: number;
}

interface LiveRule {
  readonly state: RuleState;
  readonly active: ActiveFault;
}

/** What one call is to suffer, decided when it is made so the Nth call is the Nth call made, not finished. */
interface Plan {
  readonly call: FaultCall;
  readonly delays: readonly number[];
  readonly fail: FaultError | "default" | undefined;
  readonly truncate: number | undefined;
  readonly crash: FaultError | "default" | undefined;
}

export function withFaults(inner: Backend, plan: FaultPlan = {}): FaultyBackend {
  const sleep = plan.sleep ?? defaultSleep;
  const log: FaultCall[] = [];
  let live: LiveRule[] = [];
  let seq = 0;

  function addRule(rule: FaultRule): ActiveFault {
    const state = validate(rule);
    const active: ActiveFault = {
      rule,
      get matched() {
        return state.matched;
      },
      get fired() {
        return state.fired;
      },
      remove: () => {
        live = live.filter((l) => l.state !== state);
      },
    };
    live.push({ state, active });
    return active;
  }
  for (const rule of plan.rules ?? []) addRule(rule);

  function begin(
    method: FaultMethod,
    handle: FileHandle | undefined,
    type: FileType | undefined,
    range: ByteRange | undefined,
  ): Plan {
    const kinds: Fault["kind"][] = [];
    const call: FaultCall = { seq: ++seq, method, handle, type, range, faults: kinds };
    const delays: number[] = [];
    let fail: FaultError | "default" | undefined;
    let truncate: number | undefined;
    let crash: FaultError | "default" | undefined;
    for (const { state } of live) {
      if (!state.methods.has(method) || (state.rule.when !== undefined && !state.rule.when(call))) continue;
      state.matched++;
      if (state.nth !== undefined && !state.nth.has(state.matched)) continue;
      if (state.rule.times !== undefined && state.fired >= state.rule.times) continue;
      state.fired++;
      const fault = state.rule.fault;
      kinds.push(fault.kind);
      switch (fault.kind) {
        case "fail":
          fail ??= fault.error ?? "default";
          break;
        case "truncate":
          truncate = Math.min(truncate ?? fault.bytes, fault.bytes);
          break;
        case "delay":
          delays.push(fault.ms);
          break;
        case "crash-after-save":
          crash ??= fault.error ?? "default";
          break;
      }
    }
    log.push(call);
    return { call, delays, fail, truncate, crash };
  }

  /** Runs a call's delays, then rejects if it is to fail: everything that happens before the inner call. */
  async function before(p: Plan): Promise<void> {
    for (const ms of p.delays) await sleep(ms);
    if (p.fail !== undefined) throw makeError(p.fail, p.call, "fail");
  }

  async function run<T>(p: Plan, op: () => Promise<T>): Promise<T> {
    await before(p);
    return op();
  }

  /** A stream's faults strike when it is first read, as a real backend's request goes out then. */
  async function* stream<T>(p: Plan, open: () => AsyncIterable<T>): AsyncGenerator<T> {
    await before(p);
    yield* open();
  }

  const wrapped: FaultyBackend = {
    inner,
    location: inner.location,
    capabilities: inner.capabilities,
    get calls() {
      return log;
    },
    callsOf: (method) => log.filter((c) => c.method === method),
    addRule,
    get rules() {
      return live.map((l) => l.active);
    },
    clearRules: () => {
      live = [];
    },
    clearCalls: () => {
      log.length = 0;
    },

    stat: (h: FileHandle, signal?: AbortSignal): Promise<FileInfo> =>
      run(begin("stat", h, h.type, undefined), () => inner.stat(h, signal)),
    list: (type: FileType, signal?: AbortSignal): AsyncIterable<FileInfo> =>
      stream(begin("list", undefined, type, undefined), () => inner.list(type, signal)),
    load: async (h: FileHandle, range?: ByteRange, signal?: AbortSignal): Promise<Buffer> => {
      const p = begin("load", h, h.type, range);
      const data = await run(p, () => inner.load(h, range, signal));
      return p.truncate === undefined || data.length <= p.truncate ? data : data.subarray(0, p.truncate);
    },
    openRead: (h: FileHandle, range?: ByteRange, signal?: AbortSignal): AsyncIterable<Uint8Array> => {
      const p = begin("openRead", h, h.type, range);
      const limit = p.truncate;
      return stream(p, () =>
        limit === undefined
          ? inner.openRead(h, range, signal)
          : truncated(inner.openRead(h, range, signal), limit),
      );
    },
    save: async (h: FileHandle, source: SaveSource, opts?: SaveOptions): Promise<void> => {
      const p = begin("save", h, h.type, undefined);
      await run(p, () => inner.save(h, source, opts));
      if (p.crash !== undefined) throw makeError(p.crash, p.call, "crash-after-save");
    },
    remove: (h: FileHandle, signal?: AbortSignal): Promise<void> =>
      run(begin("remove", h, h.type, undefined), () => inner.remove(h, signal)),
    close: () => run(begin("close", undefined, undefined, undefined), () => inner.close()),
  };
  // Only where the inner backend has them, as callers test for the optional methods' presence.
  if (inner.getRetention) {
    const get = inner.getRetention.bind(inner);
    wrapped.getRetention = (h: FileHandle, signal?: AbortSignal): Promise<Retention | undefined> =>
      run(begin("getRetention", h, h.type, undefined), () => get(h, signal));
  }
  if (inner.extendRetention) {
    const extend = inner.extendRetention.bind(inner);
    wrapped.extendRetention = (h: FileHandle, r: Retention, signal?: AbortSignal): Promise<void> =>
      run(begin("extendRetention", h, h.type, undefined), () => extend(h, r, signal));
  }
  if (inner.removeStaleTempFiles) {
    const clean = inner.removeStaleTempFiles.bind(inner);
    wrapped.removeStaleTempFiles = (olderThanMs: number, signal?: AbortSignal): Promise<number> =>
      run(begin("removeStaleTempFiles", undefined, undefined, undefined), () => clean(olderThanMs, signal));
  }
  if (inner.digest) {
    const digest = inner.digest.bind(inner);
    wrapped.digest = (h: FileHandle, signal?: AbortSignal): Promise<FileDigest> =>
      run(begin("digest", h, h.type, undefined), () => digest(h, signal));
  }
  return wrapped;
}

/** The first `limit` bytes of a stream; stopping early closes the inner stream, as a consumer's break would. */
async function* truncated(pieces: AsyncIterable<Uint8Array>, limit: number): AsyncGenerator<Uint8Array> {
  let room = limit;
  // The inner stream is opened even for a limit of 0, so a missing file still reports NOT_FOUND.
  for await (const piece of pieces) {
    if (piece.length >= room) {
      if (room > 0) yield piece.subarray(0, room);
      return;
    }
    room -= piece.length;
    yield piece;
  }
}

/** Checks a rule once, when added: a malformed rule is a mistake in the test, better caught than ignored. */
function validate(rule: FaultRule): RuleState {
  const methods: readonly FaultMethod[] = typeof rule.method === "string" ? [rule.method] : rule.method;
  if (methods.length === 0) throw new Error("a fault rule needs at least one method");
  for (const m of methods) {
    if (!ALL_METHODS.includes(m)) throw new Error(`unknown backend method "${String(m)}"`);
  }
  const fault = rule.fault;
  const only = (allowed: readonly FaultMethod[]): void => {
    const bad = methods.find((m) => !allowed.includes(m));
    if (bad !== undefined) throw new Error(`a "${fault.kind}" fault cannot apply to ${bad}`);
  };
  switch (fault.kind) {
    case "truncate":
      only(["load", "openRead"]);
      if (!Number.isSafeInteger(fault.bytes) || fault.bytes < 0) {
        throw new Error(`invalid truncation to ${fault.bytes} bytes`);
      }
      break;
    case "crash-after-save":
      only(["save"]);
      break;
    case "delay":
      if (!Number.isFinite(fault.ms) || fault.ms < 0) throw new Error(`invalid delay of ${fault.ms} ms`);
      break;
    case "fail":
      break;
  }
  const nth = rule.nth === undefined ? undefined : typeof rule.nth === "number" ? [rule.nth] : rule.nth;
  for (const n of nth ?? []) {
    if (!Number.isSafeInteger(n) || n < 1) throw new Error(`invalid nth ${n}: calls are counted from 1`);
  }
  if (rule.times !== undefined && (!Number.isSafeInteger(rule.times) || rule.times < 0)) {
    throw new Error(`invalid times ${rule.times}`);
  }
  return {
    rule,
    methods: new Set(methods),
    nth: nth === undefined ? undefined : new Set(nth),
    matched: 0,
    fired: 0,
  };
}

function makeError(spec: FaultError | "default", call: FaultCall, kind: "fail" | "crash-after-save"): Error {
  if (spec instanceof Error) return spec;
  if (typeof spec === "function") return spec(call);
  const what = `${call.method}${describeTarget(call)} (call ${call.seq})`;
  if (spec === "default") {
    return kind === "fail"
      ? new BulwarkError("TRANSIENT", `injected TRANSIENT fault: ${what}`)
      : new InjectedCrash(`injected crash after save: ${what}`);
  }
  return new BulwarkError(spec, `injected ${spec} ${kind === "fail" ? "fault" : "after save"}: ${what}`);
}

function describeTarget(call: FaultCall): string {
  if (call.handle !== undefined) return ` ${handleToString(call.handle)}`;
  return call.type === undefined ? "" : ` ${call.type}`;
}
