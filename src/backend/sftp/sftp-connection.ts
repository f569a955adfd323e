/**
 * One SSH connection to an SFTP server with a small pool of SFTP channels on it.
 *
 * Glossary: a *session* is one authenticated SSH connection (ssh2 Client); a *channel* is one SFTP subsystem
 * on it (a server process of its own, so channels run in parallel on the server, while requests on one
 * channel are pipelined). Steps:
 *   1. connect() opens the SSH connection, verifying the host key (host-keys.ts) and authenticating with a
 *      private key, the keys of an ssh-agent, or both; failures become AUTH (credentials, host key) or
 *      TRANSIENT (network) errors.
 *   2. lease() hands out the least busy channel, opening another (up to `maxChannels`) while all are busy.
 *      A server that refuses more channels (sshd's MaxSessions) caps the pool at what it granted.
 *   3. A connection that drops (reset, keepalive timeout) is forgotten; the next lease() reconnects, so a
 *      long backup survives a server restart between requests. Requests in flight fail as TRANSIENT.
 *   4. close() ends the connection; nothing can be leased afterwards.
 */

import ssh2 from "ssh2";
import type { ConnectConfig, SFTPWrapper } from "ssh2";

import { BulwarkError, errnoCode, errorMessage } from "../../core/errors.js";
import {
  fingerprintOf,
  keyTypeOf,
  knownHostsName,
  knownKeyAlgorithms,
  verifyHostKey,
  type HostKeyVerdict,
  type KnownHostEntry,
} from "./host-keys.js";

export interface ConnectionParams {
  /** For messages: `sftp:user@host:port/path`. */
  readonly location: string;
  readonly host: string;
  readonly port: number;
  readonly user: string;
  /** A private key, an ssh-agent socket, or both (the key is tried first). */
  readonly privateKey: Buffer | undefined;
  readonly privateKeyPath: string | undefined;
  readonly agent: string | undefined;
  readonly passphrase: string | undefined;
  /** Exactly one of pinned fingerprint and known_hosts decides; see host-keys.ts. */
  readonly pinnedFingerprint: string | undefined;
  readonly knownHosts: readonly KnownHostEntry[];
  readonly knownHostsPath: string;
  readonly acceptUnknownHost: boolean;
  readonly connectTimeoutMs: number;
  readonly maxChannels: number;
}

export interface Channel {
  readonly sftp: SFTPWrapper;
  /** Largest payload of one READ / WRITE request the server accepts (limits@openssh.com, or the default). */
  readonly maxRead: number;
  readonly maxWrite: number;
  readonly extensions: ReadonlySet<string>;
  busy: number;
  closed: boolean;
}

interface Session {
  readonly client: ssh2.Client;
  readonly channels: Channel[];
  opening: Promise<Channel | undefined> | undefined;
  maxChannels: number;
  dead: boolean;
}

/** ssh2's own default when a server does not send limits@openssh.com; SFTP guarantees 32 768. */
const FALLBACK_IO_BYTES = 32 * 1024 - 2048;
const KEEPALIVE_INTERVAL_MS = 15_000;
const KEEPALIVE_COUNT_MAX = 4;

export class SftpConnection {
  private session: Promise<Session> | undefined;
  private closed = false;

  constructor(readonly params: ConnectionParams) {}

  /** A channel to run requests on; give it back with release(). */
  async lease(): Promise<Channel> {
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw new Error(`the SFTP backend for ${this.params.location} is closed`);
      const pending = this.currentSession();
      const session = await pending;
      const channel = await this.pickChannel(session);
      if (channel !== undefined) {
        channel.busy++;
        return channel;
      }
      if (this.session === pending) this.session = undefined;
      // The connection died while we waited for it; one fresh attempt, then give up.
      if (attempt > 0) {
        throw new BulwarkError("TRANSIENT", `${this.params.location}: the SSH connection was lost`);
      }
    }
  }

  release(channel: Channel): void {
    channel.busy--;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const pending = this.session;
    this.session = undefined;
    if (pending === undefined) return;
    let session: Session;
    try {
      session = await pending;
    } catch {
      return; // never connected
    }
    if (session.dead) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        session.client.destroy();
        resolve();
      }, 2000);
      session.client.once("close", () => {
        clearTimeout(timer);
        resolve();
      });
      session.client.end();
    });
  }

  private currentSession(): Promise<Session> {
    if (this.session === undefined) {
      const connecting = this.connect();
      this.session = connecting;
      // A failed connect is not remembered: the next request tries again.
      connecting.catch(() => {
        if (this.session === connecting) this.session = undefined;
      });
    }
    return this.session;
  }

  private async pickChannel(session: Session): Promise<Channel | undefined> {
    for (;;) {
      if (session.dead) return undefined;
      const live = session.channels.filter((c) => !c.closed);
      const idlest = live.reduce<Channel | undefined>(
        (a, c) => (a === undefined || c.busy < a.busy ? c : a),
        undefined,
      );
      const wantMore = live.length < session.maxChannels && (idlest === undefined || idlest.busy > 0);
      if (!wantMore && idlest !== undefined) return idlest;
      if (session.opening === undefined) {
        session.opening = this.openChannel(session).finally(() => (session.opening = undefined));
      }
      // While another channel opens, share an existing one rather than wait for the round trip.
      if (idlest !== undefined) return idlest;
      const opened = await session.opening;
      if (opened === undefined && !session.dead && session.channels.every((c) => c.closed)) {
        throw new BulwarkError(
          "IO",
          `${this.params.location}: the server refused to start the SFTP subsystem`,
          {
            hint: "check that the server's sshd_config has `Subsystem sftp` (internal-sftp or sftp-server)",
          },
        );
      }
    }
  }

  /** Opens one more channel; undefined when the server refuses (the pool then stays at its size). */
  private openChannel(session: Session): Promise<Channel | undefined> {
    return new Promise((resolve) => {
      try {
        session.client.sftp((err, sftp) => {
          if (err !== undefined && err !== null) {
            session.maxChannels = Math.max(1, session.channels.filter((c) => !c.closed).length);
            resolve(undefined);
            return;
          }
          // ssh2 keeps these private; the limits are what it negotiated with limits@openssh.com.
          const internals = sftp as unknown as {
            _maxReadLen?: number;
            _maxWriteLen?: number;
            _extensions?: Record<string, string>;
          };
          const channel: Channel = {
            sftp,
            maxRead: positiveOr(internals._maxReadLen, FALLBACK_IO_BYTES),
            maxWrite: positiveOr(internals._maxWriteLen, FALLBACK_IO_BYTES),
            extensions: new Set(Object.keys(internals._extensions ?? {})),
            busy: 0,
            closed: false,
          };
          sftp.on("error", () => (channel.closed = true));
          sftp.on("close", () => (channel.closed = true));
          session.channels.push(channel);
          resolve(channel);
        });
      } catch {
        resolve(undefined);
      }
    });
  }

  private connect(): Promise<Session> {
    const p = this.params;
    const client = new ssh2.Client();
    let hostKeyProblem: BulwarkError | undefined;
    let agentProblem: string | undefined;
    const config: ConnectConfig = {
      host: p.host,
      port: p.port,
      username: p.user,
      readyTimeout: p.connectTimeoutMs,
      keepaliveInterval: KEEPALIVE_INTERVAL_MS,
      keepaliveCountMax: KEEPALIVE_COUNT_MAX,
      hostVerifier: (key: Buffer): boolean => {
        const verdict = this.verify(key);
        if (!verdict.ok) hostKeyProblem = this.hostKeyError(key, verdict.reason);
        return verdict.ok;
      },
    };
    if (p.privateKey !== undefined) config.privateKey = p.privateKey;
    if (p.agent !== undefined) config.agent = p.agent;
    if (p.passphrase !== undefined) config.passphrase = p.passphrase;
    const known = p.pinnedFingerprint === undefined ? knownKeyAlgorithms(p.knownHosts, p.host, p.port) : [];
    if (known.length > 0) {
      // Offered first (removed, then prepended: ssh2's prepend alone does not move a listed algorithm).
      config.algorithms = { serverHostKey: { remove: known, prepend: known } } as ConnectConfig["algorithms"];
    }

    return new Promise<Session>((resolve, reject) => {
      let settled = false;
      const session: Session = {
        client,
        channels: [],
        opening: undefined,
        maxChannels: p.maxChannels,
        dead: false,
      };
      const markDead = (): void => {
        session.dead = true;
        for (const c of session.channels) c.closed = true;
        // Forget the dead session so the next lease reconnects.
        void this.session?.then(
          (s) => {
            if (s === session) this.session = undefined;
          },
          () => undefined,
        );
      };
      client.on("ready", () => {
        settled = true;
        resolve(session);
      });
      client.on("error", (err: Error & { level?: string }) => {
        // The agent could not be asked (gone, refused): ssh2 goes on with the next method by itself.
        if (err.level === "agent") {
          agentProblem ??= errorMessage(err);
          return;
        }
        markDead();
        if (settled) return;
        settled = true;
        reject(hostKeyProblem ?? this.connectError(err, agentProblem));
      });
      client.on("close", () => {
        markDead();
        if (settled) return;
        settled = true;
        reject(
          hostKeyProblem ??
            new BulwarkError("TRANSIENT", `${p.location}: the server closed the connection during login`),
        );
      });
      try {
        client.connect(config);
      } catch (err) {
        settled = true;
        markDead();
        // ssh2 parses the key here: a malformed or passphrase-protected key without a passphrase.
        reject(
          new BulwarkError(
            "AUTH",
            `${p.location}: cannot use the private key ${p.privateKeyPath ?? "(none)"}: ${errorMessage(err)}`,
            {
              hint:
                "set BULWARK_SFTP_KEY to an OpenSSH private key (ssh-keygen -t ed25519) and, if it has one, " +
                "BULWARK_SFTP_PASSPHRASE to its passphrase (in bulwark.yaml: the target's credentials.privateKey " +
                "and credentials.passphrase); or load the key into ssh-agent with ssh-add",
            },
          ),
        );
      }
    });
  }

  private verify(key: Buffer): HostKeyVerdict {
    const p = this.params;
    if (p.pinnedFingerprint !== undefined) {
      return fingerprintOf(key) === p.pinnedFingerprint ? { ok: true } : { ok: false, reason: "mismatch" };
    }
    const verdict = verifyHostKey(p.knownHosts, p.host, p.port, key);
    if (!verdict.ok && verdict.reason === "unknown" && p.acceptUnknownHost) return { ok: true };
    return verdict;
  }

  private hostKeyError(key: Buffer, reason: "unknown" | "changed" | "revoked" | "mismatch"): BulwarkError {
    const p = this.params;
    const presented = `${keyTypeOf(key)} ${fingerprintOf(key)}`;
    const name = knownHostsName(p.host, p.port);
    const keyscan = `ssh-keyscan ${p.port === 22 ? "" : `-p ${p.port} `}${p.host} >> ${p.knownHostsPath}`;
    switch (reason) {
      case "unknown":
        return new BulwarkError(
          "AUTH",
          `${p.location}: the host key of ${name} is not known (${presented}); refusing to connect`,
          {
            hint:
              `if ${fingerprintOf(key)} is the server's key (check on the server: ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), ` +
              `pin it with BULWARK_SFTP_HOST_KEY=${fingerprintOf(key)} (in bulwark.yaml: the target's credentials.hostKey), ` +
              `or add it to ${p.knownHostsPath} with ${keyscan} (another known_hosts file: BULWARK_SFTP_KNOWN_HOSTS, ` +
              `or credentials.knownHosts in bulwark.yaml)`,
          },
        );
      case "mismatch":
        return new BulwarkError(
          "AUTH",
          `${p.location}: the host key of ${name} (${presented}) does not match the pinned ${p.pinnedFingerprint}; refusing to connect`,
          {
            hint: "someone may be intercepting the connection, or the server's key changed; check with its admin",
          },
        );
      case "changed":
        return new BulwarkError(
          "AUTH",
          `${p.location}: the host key of ${name} CHANGED: ${p.knownHostsPath} holds another ${keyTypeOf(key)} key, the server presented ${fingerprintOf(key)}; refusing to connect`,
          {
            hint: `someone may be intercepting the connection; if the server's key was replaced on purpose, remove the old one (ssh-keygen -R "${name}" -f ${p.knownHostsPath})`,
          },
        );
      case "revoked":
        return new BulwarkError(
          "AUTH",
          `${p.location}: the host key of ${name} (${presented}) is marked @revoked in ${p.knownHostsPath}; refusing to connect`,
        );
    }
  }

  private connectError(err: Error & { level?: string }, agentProblem: string | undefined): BulwarkError {
    const p = this.params;
    const target = `${p.host}:${p.port}`;
    if (err.level === "client-authentication") {
      const tried = [
        ...(p.privateKeyPath === undefined ? [] : [`key ${p.privateKeyPath}`]),
        ...(p.agent === undefined
          ? []
          : [`the keys of the ssh-agent at ${p.agent}${agentProblem ? ` (${agentProblem})` : ""}`]),
      ].join(" and ");
      const publicKeys = [
        ...(p.privateKeyPath === undefined ? [] : [`${p.privateKeyPath}.pub`]),
        ...(p.agent === undefined ? [] : ["a key the agent holds (ssh-add -L)"]),
      ].join(" or ");
      return new BulwarkError("AUTH", `${p.location}: authentication failed with ${tried} (user ${p.user})`, {
        cause: err,
        hint: `check that ${publicKeys} is in the authorized_keys of ${p.user} on ${p.host}`,
      });
    }
    if (err.level === "client-timeout") {
      return new BulwarkError(
        "TRANSIENT",
        `${p.location}: timed out after ${p.connectTimeoutMs} ms connecting to ${target} (no SSH handshake)`,
        { cause: err, hint: "check that the server is up and that this is its SSH port" },
      );
    }
    const code = errnoCode(err);
    const network: Record<string, string> = {
      ECONNREFUSED: `connection refused by ${target}`,
      ECONNRESET: `the connection to ${target} was reset`,
      ETIMEDOUT: `timed out connecting to ${target}`,
      EHOSTUNREACH: `host ${p.host} is unreachable`,
      ENETUNREACH: `the network of ${p.host} is unreachable`,
      ENOTFOUND: `cannot resolve the host name ${p.host}`,
      EAI_AGAIN: `cannot resolve the host name ${p.host} (DNS is not answering)`,
      EPIPE: `the connection to ${target} broke`,
    };
    const what = code === undefined ? undefined : network[code];
    if (what !== undefined || err.level === "client-socket" || err.level === "client-dns") {
      return new BulwarkError("TRANSIENT", `${p.location}: ${what ?? errorMessage(err)}`, {
        cause: err,
        hint: "check that the server is up and reachable; the command can be run again",
      });
    }
    return new BulwarkError("IO", `${p.location}: the SSH connection failed: ${errorMessage(err)}`, {
      cause: err,
    });
  }
}

function positiveOr(value: number | undefined, fallback: number): number {
  return typeof value === "number" && Number.isFinite(value) && value > 0 ? value : fallback;
}
