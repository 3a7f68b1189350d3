/**
 * The control socket: how `certd rotate --now` and `certd status` talk to a running `certd run`
 * instead of racing it. A unix stream socket at `state_dir/control.sock`, mode 0600, so only
 * the daemon's user (and root) can ask it anything.
 *
 * Protocol: newline-delimited JSON. Each request is one line:
 *   {"op":"rotate","cert"?:"web","dryRun"?:false,"force"?:false,"progress"?:false}
 *   {"op":"status"}
 * Each answer is zero or more progress lines {"progress":{"done":1,"total":3,"name":"web"}} (only
 * for a rotate that asked for them) followed by exactly one final line: the CycleReport (what
 * `certd rotate --json` prints), the status document, or {"ok":false,"error":{"code","message"}}.
 * Requests on one connection are answered in order. Nothing sent or answered holds key material.
 *
 * Bounds (CONTROL_LIMITS): a client is served one request at a time, and the daemon holds for it
 * at most `maxQueuedRequests` parsed requests and `maxRequestBytes` of unparsed input; past that
 * it stops reading the socket, so a fast writer waits in its own kernel buffer, not in certd's
 * heap. Before each answer, when more than `maxOutputBytes` of earlier answers sit unread, the
 * daemon stops answering (and reading) until the client drains them, and drops the client when it
 * has not within `stallMs`. A line longer than `maxRequestBytes` is refused and the connection
 * closed; past `maxConnections` open connections a new one gets one error line and is closed.
 * close() destroys every connection and drops what was queued on them.
 */
import { chmod, unlink } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { CertdError, type ErrorCode, messageOf } from './errors.js';
import type { Logger } from './log.js';
import type { CycleReport } from './rotate.js';

export const CONTROL_SOCKET = 'control.sock';

/** sockaddr_un holds 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;

/** What one client, and all of them together, may hold of the daemon. */
export interface ControlLimits {
  /** Open connections; one more is refused with an error line. */
  readonly maxConnections: number;
  /** One request line; also the unparsed input held per connection. */
  readonly maxRequestBytes: number;
  /** Parsed requests waiting per connection (besides the one being answered). */
  readonly maxQueuedRequests: number;
  /** Unread answers per connection above which nothing more is answered or read. */
  readonly maxOutputBytes: number;
  /** How long a client may leave more than maxOutputBytes unread before it is dropped. */
  readonly stallMs: number;
}

/**
 * The daemon's limits. Its clients are `certd rotate --now` and `certd status`: one request each,
 * read at once. An answer larger than maxOutputBytes is still sent whole (the cap is checked
 * before each answer), so a big status document never trips it.
 */
export const CONTROL_LIMITS: ControlLimits = {
  maxConnections: 16,
  maxRequestBytes: 64 * 1024,
  maxQueuedRequests: 8,
  maxOutputBytes: 1024 * 1024,
  stallMs: 10_000,
};

/** Refusals of a hostile client can come by the thousand: the log says so once a minute. */
const WARN_EVERY_MS = 60_000;

export function controlSocketPath(stateDir: string): string {
  return join(stateDir, CONTROL_SOCKET);
}

export interface RotateRequest {
  readonly op: 'rotate';
  readonly cert?: string | undefined;
  readonly dryRun?: boolean | undefined;
  /** rotate --now --force: deploy although nothing changed (CycleOptions.force). */
  readonly force?: boolean | undefined;
  readonly progress?: boolean | undefined;
}

export interface StatusRequest {
  readonly op: 'status';
}

export type ControlRequest = RotateRequest | StatusRequest;

export interface Progress {
  readonly done: number;
  readonly total: number;
  readonly name: string;
}

/** What the daemon does for each request. Throwing a CertdError answers with its code. */
export interface ControlHandler {
  rotate(request: RotateRequest, onProgress: ((p: Progress) => void) | undefined): Promise<CycleReport>;
  status(): Promise<unknown>;
}

export interface ControlServer {
  readonly path: string;
  /** Stops accepting, ends open connections and removes the socket file. */
  close(): Promise<void>;
}

function parseRequest(line: string): ControlRequest {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw new CertdError('E_CONFIG', 'control request: not JSON');
  }
  const r = value as Record<string, unknown> | null;
  if (r?.['op'] === 'status') return { op: 'status' };
  if (r?.['op'] === 'rotate') {
    const cert = r['cert'];
    if (cert !== undefined && (typeof cert !== 'string' || !/^[a-z0-9-]+$/.test(cert))) throw new CertdError('E_CONFIG', 'control request: "cert" must be a certificate name');
    return { op: 'rotate', cert, dryRun: r['dryRun'] === true, force: r['force'] === true, progress: r['progress'] === true };
  }
  throw new CertdError('E_CONFIG', `control request: unknown op ${JSON.stringify(r?.['op'] ?? null)} (known: rotate, status)`);
}

function errorAnswer(err: unknown): { ok: false; error: { code: string; message: string } } {
  return { ok: false, error: err instanceof CertdError ? { code: err.code, message: err.message } : { code: 'E_INTERNAL', message: messageOf(err) } };
}

/** How long a refused or finished connection is kept for its client to read the last line. */
const LINGER_MS = 1_000;

/**
 * Listens on `path`, replacing a stale socket file. The caller MUST hold the deployment lock, which
 * is what proves that no other daemon is using the socket.
 */
export async function listenControl(path: string, handler: ControlHandler, log: Logger, limits: ControlLimits = CONTROL_LIMITS): Promise<ControlServer> {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    throw new CertdError('E_CONFIG', `control socket ${path}: the path is longer than ${MAX_SOCKET_PATH} bytes, the limit of a unix socket; choose a shorter state_dir`);
  }
  await unlink(path).catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  });
  const connections = new Set<Socket>();
  const forgets = new Set<() => void>();
  const lastWarned = new Map<string, { at: number; suppressed: number }>();
  /** A warning that a flood could repeat endlessly: logged at most once a minute per kind. */
  const warnSometimes = (kind: string, fields: Record<string, unknown>, msg: string): void => {
    const now = Date.now();
    const last = lastWarned.get(kind);
    if (last && now - last.at < WARN_EVERY_MS) {
      last.suppressed++;
      return;
    }
    lastWarned.set(kind, { at: now, suppressed: 0 });
    log.warn({ step: 'control', ...fields, ...(last?.suppressed ? { suppressedSinceLast: last.suppressed } : {}) }, msg);
  };
  let closing = false;
  /**
   * After a last line: what the client writes from now on is read and dropped until it hangs up,
   * for at most a second. Destroying the socket as soon as the line is out would make a client
   * that writes its request just then fail with EPIPE before it reads why it was refused.
   */
  const closeSoon = (conn: Socket): void => {
    conn.on('end', () => conn.destroy());
    conn.resume();
    setTimeout(() => conn.destroy(), Math.min(limits.stallMs, LINGER_MS)).unref();
  };
  const server: Server = createServer((conn) => {
    conn.on('error', () => undefined); // a client that went away mid-answer is not our problem
    if (closing || connections.size >= limits.maxConnections) {
      warnSometimes('refused', { open: connections.size, limit: limits.maxConnections }, `control connection refused: ${connections.size} connections are open, the limit`);
      const refusal = closing
        ? new CertdError('E_LOCKED', 'control connection refused: certd run is stopping')
        : new CertdError('E_LOCKED', `control connection refused: the running certd has ${connections.size} control connections open (the limit); try again once one has closed`);
      conn.end(`${JSON.stringify(errorAnswer(refusal))}\n`);
      closeSoon(conn);
      return;
    }
    connections.add(conn);
    conn.setEncoding('utf8');
    let buffer = '';
    const queue: string[] = [];
    let busy = false;
    let gone = false;
    let stall: NodeJS.Timeout | undefined;
    let warnedQueue = false;
    let warnedOutput = false;
    const forget = (): void => {
      gone = true;
      queue.length = 0;
      buffer = '';
      if (stall) clearTimeout(stall);
      stall = undefined;
      connections.delete(conn);
      forgets.delete(forget);
    };
    forgets.add(forget);
    conn.on('close', forget);
    const send = (value: unknown): void => {
      if (!gone && !conn.destroyed) conn.write(`${JSON.stringify(value)}\n`);
    };
    const refuse = (err: CertdError): void => {
      send(errorAnswer(err));
      forget();
      conn.end();
      closeSoon(conn);
    };
    /** Moves whole lines into the queue while it has room; pauses or resumes reading. */
    const fill = (): void => {
      let nl: number;
      while (queue.length < limits.maxQueuedRequests && (nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl).trim();
        if (nl > limits.maxRequestBytes) return refuse(new CertdError('E_CONFIG', `control request: a line longer than ${limits.maxRequestBytes} bytes`));
        buffer = buffer.slice(nl + 1);
        if (line) queue.push(line);
      }
      if (buffer.length > limits.maxRequestBytes && buffer.indexOf('\n') < 0) {
        return refuse(new CertdError('E_CONFIG', `control request: a line longer than ${limits.maxRequestBytes} bytes`));
      }
      const full = queue.length >= limits.maxQueuedRequests || buffer.length > limits.maxRequestBytes;
      if (full && !conn.isPaused()) {
        conn.pause();
        if (!warnedQueue) {
          warnedQueue = true;
          warnSometimes('queue', { queued: queue.length }, `control client has ${queue.length} requests queued: reading its requests paused until they are answered`);
        }
      } else if (!full && conn.isPaused() && !stall) {
        conn.resume();
      }
    };
    /** Answers the next queued request, one at a time, never past maxOutputBytes unread. */
    const next = (): void => {
      if (busy || gone) return;
      if (conn.writableLength > limits.maxOutputBytes) {
        if (stall) return;
        conn.pause();
        if (!warnedOutput) {
          warnedOutput = true;
          warnSometimes('output', { unreadBytes: conn.writableLength }, `control client is not reading its answers (${conn.writableLength} bytes unread): reading and answering paused`);
        }
        stall = setTimeout(() => {
          warnSometimes('dropped', { unreadBytes: conn.writableLength, stallMs: limits.stallMs }, `control client dropped: it left ${conn.writableLength} bytes of answers unread for ${limits.stallMs} ms`);
          forget();
          conn.destroy();
        }, limits.stallMs);
        stall.unref();
        conn.once('drain', () => {
          if (stall) clearTimeout(stall);
          stall = undefined;
          fill();
          next();
        });
        return;
      }
      const line = queue.shift();
      fill();
      if (line === undefined) return;
      busy = true;
      void (async () => {
        try {
          const request = parseRequest(line);
          if (request.op === 'status') {
            send(await handler.status());
          } else {
            const onProgress = request.progress ? (p: Progress) => send({ progress: p }) : undefined;
            send(await handler.rotate(request, onProgress));
          }
        } catch (err) {
          send(errorAnswer(err));
        } finally {
          busy = false;
          next();
        }
      })();
    };
    conn.on('data', (chunk: string) => {
      if (gone) return;
      buffer += chunk;
      fill();
      next();
    });
  });
  // The socket must never exist with looser permissions, not even between bind(2) and chmod(2):
  // bind happens synchronously inside listen(), under this umask.
  const umask = process.umask(0o177);
  try {
    server.listen(path);
  } finally {
    process.umask(umask);
  }
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', (err) => reject(new CertdError('E_INTERNAL', `listening on control socket ${path}: ${messageOf(err)}`, { cause: err })));
  });
  await chmod(path, 0o600);
  log.debug({ step: 'control', socket: path }, 'control socket listening');
  let closed: Promise<void> | undefined;
  return {
    path,
    close() {
      closed ??= (async () => {
        closing = true;
        const done = new Promise<void>((resolve) => server.close(() => resolve()));
        // Requests still queued are dropped with their connections; one being answered finishes
        // into a destroyed socket.
        const open = [...connections];
        for (const forget of [...forgets]) forget();
        for (const c of open) c.destroy();
        await done;
        await unlink(path).catch(() => undefined);
      })();
      return closed;
    },
  };
}

export interface AskOptions {
  /** Called for each progress line of a rotate that asked for progress. */
  onProgress?: ((p: Progress) => void) | undefined;
  /** Give up after this long without an answer (default: wait as long as the cycle takes). */
  timeoutMs?: number | undefined;
}

/** Errors that mean "no daemon is listening": the caller then works standalone. */
const NO_DAEMON = new Set(['ENOENT', 'ECONNREFUSED', 'ENOTSOCK']);

/**
 * Sends one request to the daemon of `stateDir` and returns its final answer, or undefined when
 * no daemon listens there (no socket file, or a stale one). An error answer is thrown as a
 * CertdError with the daemon's code, so the CLI exits as it would have standalone.
 */
export function askDaemon(stateDir: string, request: ControlRequest, options: AskOptions = {}): Promise<unknown> {
  const path = controlSocketPath(stateDir);
  return new Promise((resolve, reject) => {
    let connected = false;
    let settled = false;
    let buffer = '';
    const conn = createConnection(path);
    const finish = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      conn.destroy();
      fn();
    };
    if (options.timeoutMs !== undefined) {
      conn.setTimeout(options.timeoutMs, () =>
        finish(() => reject(new CertdError('E_INTERNAL', `asking the running certd over ${path}: no answer within ${options.timeoutMs} ms`))),
      );
    }
    conn.setEncoding('utf8');
    conn.on('connect', () => {
      connected = true;
      conn.write(`${JSON.stringify(request)}\n`);
    });
    conn.on('data', (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        let message: Record<string, unknown>;
        try {
          message = JSON.parse(line) as Record<string, unknown>;
        } catch {
          finish(() => reject(new CertdError('E_INTERNAL', `asking the running certd over ${path}: the answer is not JSON`)));
          return;
        }
        const keys = Object.keys(message);
        if (keys.length === 1 && keys[0] === 'progress') {
          options.onProgress?.(message['progress'] as Progress);
          continue;
        }
        const error = message['error'] as { code?: string; message?: string } | undefined;
        if (message['ok'] === false && error) {
          finish(() => reject(new CertdError((error.code ?? 'E_INTERNAL') as ErrorCode, error.message ?? 'the running certd refused the request')));
        } else {
          finish(() => resolve(message));
        }
        return;
      }
    });
    conn.on('error', (err: NodeJS.ErrnoException) => {
      if (!connected && NO_DAEMON.has(err.code ?? '')) finish(() => resolve(undefined));
      else finish(() => reject(new CertdError('E_INTERNAL', `asking the running certd over ${path}: ${messageOf(err)}`, { cause: err })));
    });
    conn.on('close', () => finish(() => reject(new CertdError('E_INTERNAL', `asking the running certd over ${path}: it closed the connection without answering (is it stopping?)`))));
  });
}
