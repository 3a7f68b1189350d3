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
const MAX_REQUEST_BYTES = 64 * 1024;

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

/**
 * Listens on `path`, replacing a stale socket file. The caller MUST hold the deployment lock, which
 * is what proves that no other daemon is using the socket.
 */
export async function listenControl(path: string, handler: ControlHandler, log: Logger): Promise<ControlServer> {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    throw new CertdError('E_CONFIG', `control socket ${path}: the path is longer than ${MAX_SOCKET_PATH} bytes, the limit of a unix socket; choose a shorter state_dir`);
  }
  await unlink(path).catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  });
  const connections = new Set<Socket>();
  const server: Server = createServer((conn) => {
    connections.add(conn);
    conn.on('close', () => connections.delete(conn));
    conn.on('error', () => undefined); // a client that went away mid-answer is not our problem
    conn.setEncoding('utf8');
    let buffer = '';
    let queue = Promise.resolve();
    const send = (value: unknown): void => {
      if (!conn.destroyed) conn.write(`${JSON.stringify(value)}\n`);
    };
    conn.on('data', (chunk: string) => {
      buffer += chunk;
      if (buffer.length > MAX_REQUEST_BYTES) {
        send(errorAnswer(new CertdError('E_CONFIG', 'control request: line too long')));
        conn.end();
        return;
      }
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (!line) continue;
        queue = queue.then(async () => {
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
          }
        });
      }
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
        const done = new Promise<void>((resolve) => server.close(() => resolve()));
        for (const c of connections) c.destroy();
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
