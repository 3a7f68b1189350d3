// Plumbing shared by the HTTP protocol peers (NGINX Plus API, APISIX Admin API): listening on
// loopback or a unix socket, reading a bounded body, a request log, injected faults, and a TLS
// listener that picks its certificate by SNI at handshake time.
//
// A peer's request log holds method, path and status only: request bodies carry private keys
// and are never recorded.
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket, AddressInfo } from 'node:net';
import { createServer as createTlsServer, createSecureContext } from 'node:tls';
import type { SecureContext, TLSSocket } from 'node:tls';

export interface LoggedRequest {
  method: string;
  /** Path and query as sent. */
  path: string;
  /** Status answered; 0 when the connection was dropped on purpose. */
  status: number;
}

/** A fault for the next `count` matching requests (default 1); `methods` narrows which ones. */
export interface Fault<K extends string> {
  kind: K;
  count?: number;
  methods?: string[];
}

export class FaultQueue<F extends Fault<string>> {
  readonly #pending: { fault: F; left: number; methods: string[] | undefined }[] = [];

  add(fault: F): void {
    const methods = fault.methods?.map((m) => m.toUpperCase());
    this.#pending.push({ fault, left: fault.count ?? 1, methods });
  }

  /**
   * Takes the first pending fault that applies to this method. `accepts` lets a peer decline
   * kinds that only make sense for some requests (a race applies to a POST only).
   */
  take(method: string, accepts: (fault: F) => boolean = () => true): F | undefined {
    const i = this.#pending.findIndex(
      (p) => (p.methods === undefined || p.methods.includes(method)) && accepts(p.fault),
    );
    if (i < 0) return undefined;
    const p = this.#pending[i]!;
    p.left -= 1;
    if (p.left <= 0) this.#pending.splice(i, 1);
    return p.fault;
  }
}

/** Reads the whole body; `tooLarge` is set (and the bytes dropped) past `maxBytes`. */
export async function readBody(
  req: IncomingMessage,
  maxBytes: number,
): Promise<{ text: string; tooLarge: boolean; size: number }> {
  const chunks: Buffer[] = [];
  let size = 0;
  let tooLarge = false;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) tooLarge = true;
    else chunks.push(chunk);
  }
  return { text: tooLarge ? '' : Buffer.concat(chunks).toString('utf8'), tooLarge, size };
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': String(Buffer.byteLength(text)),
    ...headers,
  });
  res.end(text);
}

/** What a peer wrote for a 'huge' fault: how much reached the socket before it ended. */
export interface HugeAnswer {
  method: string;
  /** Path and query as requested. */
  path: string;
  /** The size the answer would have had. */
  declared: number;
  /** Whether a Content-Length header announced it (else chunked). */
  contentLength: boolean;
  /** Bytes the socket took so far (write callbacks that reported success). */
  written: number;
  /** Resolves once the response is finished or the connection closed, with `written`. */
  done: Promise<number>;
}

/**
 * Answers 200 with a JSON string body of `bytes` bytes (`"xxxx..."`), written in 64 KiB chunks
 * with backpressure, so `written` counts only what the client's connection took before the
 * client hung up. With `contentLength` false the body goes chunked, no size announced.
 */
export function sendHuge(
  req: IncomingMessage,
  res: ServerResponse,
  o: { bytes: number; contentLength: boolean },
): HugeAnswer {
  const answer: HugeAnswer = {
    method: (req.method ?? 'GET').toUpperCase(),
    path: req.url ?? '/',
    declared: o.bytes,
    contentLength: o.contentLength,
    written: 0,
    done: Promise.resolve(0),
  };
  answer.done = new Promise<number>((resolve) => {
    const chunk = Buffer.alloc(64 * 1024, 'x');
    let closed = false;
    const finish = () => {
      closed = true;
      resolve(answer.written);
    };
    res.on('close', finish);
    res.writeHead(200, {
      'Content-Type': 'application/json',
      ...(o.contentLength ? { 'Content-Length': String(o.bytes) } : {}),
    });
    let left = o.bytes;
    const count = (n: number) => (err?: Error | null) => {
      if (!err) answer.written += n;
    };
    const pump = (): void => {
      while (!closed && left > 0) {
        const n = Math.min(left, chunk.length);
        // The body is one JSON string: a quote first and last, x's between.
        const piece = Buffer.from(chunk.subarray(0, n));
        if (left === o.bytes) piece[0] = 0x22;
        if (left === n) piece[n - 1] = 0x22;
        left -= n;
        if (!res.write(piece, count(n))) {
          res.once('drain', pump);
          return;
        }
      }
      if (!closed && left === 0) res.end();
    };
    pump();
  });
  return answer;
}

export function sendEmpty(res: ServerResponse, status: number): void {
  res.writeHead(status, { 'Content-Length': '0' });
  res.end();
}

export interface Listening {
  /** `http://127.0.0.1:PORT` (https with listenHttps), or `http://localhost` when listening on a unix socket. */
  url: string;
  socketPath?: string;
  close(): Promise<void>;
}

/**
 * Serves `handler` on 127.0.0.1:0 or on `unixSocket`. close() drops open connections so a test
 * never waits on a client's keep-alive.
 */
export async function listenHttp(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  unixSocket?: string,
): Promise<Listening> {
  const server: Server = createHttpServer(handler);
  const sockets = trackSockets(server);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if (unixSocket !== undefined) server.listen(unixSocket, resolve);
    else server.listen(0, '127.0.0.1', resolve);
  });
  const url =
    unixSocket !== undefined
      ? 'http://localhost'
      : `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const close = () => closeServer(server, sockets);
  return unixSocket !== undefined ? { url, socketPath: unixSocket, close } : { url, close };
}

/**
 * Serves `handler` over TLS on 127.0.0.1 (`port`, default any free one) with `key` and `cert`:
 * for a client that must reach the host name it resolved itself (AWS's FIPS endpoints on 443).
 */
export async function listenHttps(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  tls: { key: string; cert: string; port?: number },
): Promise<Listening> {
  const server = createHttpsServer({ key: tls.key, cert: tls.cert, minVersion: 'TLSv1.2' }, handler);
  const sockets = trackSockets(server);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(tls.port ?? 0, '127.0.0.1', resolve);
  });
  return { url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => closeServer(server, sockets) };
}

/** One certificate set as a server would load it: PEM text, as many pairs as given. */
export interface PemPairs {
  key: string | string[];
  cert: string | string[];
}

export interface TlsListener {
  port: number;
  close(): Promise<void>;
}

/**
 * A TLS server on 127.0.0.1:0 whose certificate is chosen per handshake: `select(servername)`
 * runs inside the SNI callback, so a change to the peer's store is served on the very next
 * handshake. `undefined` falls back to `fallback`, or fails the handshake when there is none; so
 * does material that does not load (a key that does not match its certificate), as with nginx.
 * After the handshake the server answers any bytes with a tiny HTTP 200 and closes.
 */
export async function listenTlsBySni(
  select: (servername: string) => PemPairs | undefined,
  fallback?: PemPairs,
): Promise<TlsListener> {
  const contexts = new Map<string, SecureContext>();
  // Parsing PEM per handshake is wasteful; keyed by the PEM text itself, a changed value can never
  // hit a stale entry.
  const contextFor = (pairs: PemPairs): SecureContext => {
    const id = JSON.stringify([pairs.key, pairs.cert]);
    let ctx = contexts.get(id);
    if (ctx === undefined) {
      ctx = createSecureContext({ key: pairs.key, cert: pairs.cert });
      if (contexts.size >= 64) contexts.clear();
      contexts.set(id, ctx);
    }
    return ctx;
  };
  const fallbackCtx = fallback === undefined ? undefined : contextFor(fallback);
  const server = createTlsServer(
    {
      // Clients that send no SNI get the fallback, or a handshake failure without one.
      ...(fallback === undefined ? {} : { key: fallback.key, cert: fallback.cert }),
      SNICallback: (servername, cb) => {
        try {
          const pairs = select(servername);
          if (pairs !== undefined) cb(null, contextFor(pairs));
          else if (fallbackCtx !== undefined) cb(null, fallbackCtx);
          else cb(new Error(`no certificate for server name ${JSON.stringify(servername)}`), undefined);
        } catch {
          // The message of a PEM parse failure may quote the material: keep it out.
          cb(new Error(`certificate for ${JSON.stringify(servername)} does not load`), undefined);
        }
      },
    },
    (socket: TLSSocket) => {
      socket.once('data', () => {
        socket.end('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n');
      });
      socket.on('error', () => socket.destroy());
    },
  );
  server.on('tlsClientError', () => {
    // An expected outcome for unknown names; the client sees the alert.
  });
  const sockets = trackSockets(server);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => closeServer(server, sockets),
  };
}

function trackSockets(server: { on(event: 'connection', l: (s: Socket) => void): unknown }): Set<Socket> {
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  return sockets;
}

function closeServer(
  server: { close(cb: (err?: Error) => void): unknown; listening: boolean },
  sockets: Set<Socket>,
): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    for (const s of sockets) s.destroy();
  });
}

/** Splits a PEM bundle into its blocks, in order, by label. */
export function pemBlocks(text: string): { label: string; pem: string }[] {
  const out: { label: string; pem: string }[] = [];
  const re = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) out.push({ label: m[1]!, pem: `${m[0]}\n` });
  return out;
}

/** The SNI listeners a peer started, so that closing the peer closes them all. */
export class TlsListeners {
  readonly #open = new Set<TlsListener>();

  async start(select: (servername: string) => PemPairs | undefined, fallback?: PemPairs): Promise<TlsListener> {
    const listener = await listenTlsBySni(select, fallback);
    this.#open.add(listener);
    return {
      port: listener.port,
      close: async () => {
        this.#open.delete(listener);
        await listener.close();
      },
    };
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.#open].map((l) => l.close()));
    this.#open.clear();
  }
}
