/**
 * The HTTP plumbing of the API targets (nginx-plus-keyval, apisix): where the API is, one
 * undici Agent per endpoint (loaded lazily), per-request timeouts, and connection failures
 * turned into messages that name the URL.
 *
 * These requests carry private keys. DESIGN.md allows key bytes to leave certd only over
 * loopback or TLS, so `parseApiUrl` refuses plain http to anything but a loopback address, and a
 * response body is handed back parsed, never logged: callers pick the fields they report and
 * scrub them.
 *
 * An answer is read into memory whole, so its size is capped (`max_answer_bytes`, default
 * `DEFAULT_MAX_ANSWER_BYTES`): a Content-Length above the cap is refused before any of the body
 * is read, and a body without one is counted as it streams and the connection dropped as soon as
 * it passes the cap. The largest answer certd asks for is one zone or one SSL object: kilobytes.
 */
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { CertdError, messageOf } from '../src/errors.js';
import type { Dispatcher } from 'undici';
import { z } from 'zod';
import { duration, pathString } from '../src/schema.js';
import type { Closable, ProviderDeps } from '../src/contracts.js';

/** 8 MiB: thousands of certificates in one keyval zone, far above one SSL object. */
export const DEFAULT_MAX_ANSWER_BYTES = 8 * 1024 * 1024;

/** Where an API lives. `display` is the URL as configured, for messages. */
export interface ApiEndpoint {
  readonly display: string;
  /** The origin and path prefix requests are made under, without a trailing slash. */
  readonly base: string;
  readonly socketPath?: string | undefined;
  readonly tls: boolean;
}

function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || h === '0:0:0:0:0:0:0:1';
  return false;
}

/**
 * Accepted forms:
 *   http://127.0.0.1:8080/api        plain http, loopback only (127.0.0.0/8, ::1, localhost)
 *   https://nginx.internal:8443/api  TLS to any host (`ca`, `client_cert`, `client_key` apply)
 *   unix:/run/nginx/api.sock:/api    a unix socket, then the path on it (the socket path must
 *                                    not contain ':'); a unix socket is local by nature
 */
export function parseApiUrl(url: string): ApiEndpoint {
  const unix = /^unix:(\/[^:]+):(\/.*)?$/.exec(url);
  if (unix) {
    const path = (unix[2] ?? '/').replace(/\/+$/, '');
    return { display: url, base: `http://localhost${path}`, socketPath: unix[1]!, tls: false };
  }
  if (url.startsWith('unix:')) {
    throw new Error(`"${url}": expected unix:/path/to.sock:/location (an absolute socket path, then the location path)`);
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`"${url}" is not a URL (expected http://127.0.0.1:PORT/path, https://HOST:PORT/path or unix:/path.sock:/path)`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new Error(`"${url}": only http, https and unix: are supported`);
  }
  if (parsed.username || parsed.password) throw new Error(`"${url}": credentials do not belong in the URL`);
  if (parsed.search || parsed.hash) throw new Error(`"${url}": a query or fragment does not belong in the URL`);
  if (parsed.protocol === 'http:' && !isLoopback(parsed.hostname)) {
    throw new Error(`"${url}": private keys travel in these requests; plain http is allowed to loopback only: use https (with ca) or a unix socket`);
  }
  return { display: url, base: `${parsed.origin}${parsed.pathname.replace(/\/+$/, '')}`, tls: parsed.protocol === 'https:' };
}

export interface TlsFiles {
  readonly ca?: string | undefined;
  readonly clientCert?: string | undefined;
  readonly clientKey?: string | undefined;
}

export interface ApiAnswer {
  readonly status: number;
  /** The parsed JSON body; undefined when empty or not JSON. Never log it whole. */
  readonly json: unknown;
}

type Undici = typeof import('undici');
type Agent = InstanceType<Undici['Agent']>;

/** One endpoint's connection pool. Closable: the runtime closes it on shutdown. */
export class ApiClient implements Closable {
  readonly endpoint: ApiEndpoint;
  readonly #tls: TlsFiles;
  #agent: Promise<{ undici: Undici; agent: Agent }> | undefined;

  constructor(endpoint: ApiEndpoint, tls: TlsFiles) {
    this.endpoint = endpoint;
    this.#tls = tls;
  }

  #connection(): Promise<{ undici: Undici; agent: Agent }> {
    this.#agent ??= (async () => {
      const undici = await import('undici');
      const { ca, clientCert, clientKey } = this.#tls;
      const read = async (what: string, path: string | undefined): Promise<Buffer | undefined> => {
        if (path === undefined) return undefined;
        try {
          return await readFile(path);
        } catch (err) {
          throw new CertdError('E_CONFIG', `reading ${what} ${path} for ${this.endpoint.display}: ${(err as NodeJS.ErrnoException).code ?? messageOf(err)}`, { cause: err, permanent: true });
        }
      };
      const [caBytes, certBytes, keyBytes] = await Promise.all([read('ca', ca), read('client_cert', clientCert), read('client_key', clientKey)]);
      const agent = new undici.Agent({
        connect: {
          ...(this.endpoint.socketPath ? { socketPath: this.endpoint.socketPath } : {}),
          ...(caBytes ? { ca: caBytes } : {}),
          ...(certBytes ? { cert: certBytes } : {}),
          ...(keyBytes ? { key: keyBytes } : {}),
        },
        keepAliveTimeout: 4_000,
      });
      return { undici, agent };
    })();
    // A failed set-up (a missing ca file) is retried on the next request, not cached.
    this.#agent.catch(() => {
      this.#agent = undefined;
    });
    return this.#agent;
  }

  /**
   * One request under `base`. Resolves with any HTTP status; rejects only when no answer came
   * (refused, reset, timed out, TLS failure) with an E_TARGET that names the URL.
   */
  async request(
    method: string,
    path: string,
    o: { body?: unknown; headers?: Record<string, string>; timeoutMs: number; signal: AbortSignal; doing: string; maxAnswerBytes?: number | undefined },
  ): Promise<ApiAnswer> {
    const { undici, agent } = await this.#connection();
    const url = `${this.endpoint.base}${path}`;
    const timeout = AbortSignal.timeout(o.timeoutMs);
    const signal = AbortSignal.any([o.signal, timeout]);
    const body = o.body === undefined ? undefined : JSON.stringify(o.body);
    try {
      const res = await undici.request(url, {
        method: method as Dispatcher.HttpMethod,
        dispatcher: agent,
        signal,
        headers: { accept: 'application/json', ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...o.headers },
        ...(body === undefined ? {} : { body }),
      });
      const text = await readBounded(res, o.maxAnswerBytes ?? DEFAULT_MAX_ANSWER_BYTES, () => `${o.doing}: the answer to ${method} ${pathOnly(url)}`);
      let json: unknown;
      if (text !== '') {
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
      }
      return { status: res.statusCode, json };
    } catch (err) {
      if (err instanceof CertdError) throw err;
      if (timeout.aborted && !o.signal.aborted) {
        throw new CertdError('E_TARGET', `${o.doing}: no answer from ${this.endpoint.display} within ${o.timeoutMs} ms`, { cause: err });
      }
      throw new CertdError('E_TARGET', `${o.doing}: ${connectionProblem(err, this.endpoint)}`, { cause: err });
    }
  }

  async close(): Promise<void> {
    const pending = this.#agent;
    this.#agent = undefined;
    const connection = await pending?.catch(() => undefined);
    await connection?.agent.close().catch(() => undefined);
  }
}

/** The path of a request URL without its query: what a message may show of a request. */
function pathOnly(url: string): string {
  try {
    return new URL(url).pathname;
  } catch {
    return '?';
  }
}

/**
 * The body as text, at most `max` bytes: a Content-Length above it is refused unread, and a body
 * that streams past it is destroyed (which drops the connection) at the chunk that crosses it.
 */
async function readBounded(res: Dispatcher.ResponseData, max: number, what: () => string): Promise<string> {
  const refuse = (detail: string): CertdError => {
    res.body.destroy();
    return new CertdError('E_TARGET', `${what()} is larger than max_answer_bytes (${max} bytes): ${detail}; raise max_answer_bytes on this target if the API really answers that much`, { details: { status: res.statusCode } });
  };
  const announced = res.headers['content-length'];
  const length = typeof announced === 'string' && /^[0-9]+$/.test(announced) ? Number(announced) : undefined;
  if (length !== undefined && length > max) throw refuse(`Content-Length: ${length}`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) throw refuse(`more than ${max} bytes arrived${length === undefined ? ' (no Content-Length)' : ''}`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size).toString('utf8');
}

function connectionProblem(err: unknown, ep: ApiEndpoint): string {
  const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
  const code = e.code ?? e.cause?.code;
  switch (code) {
    case 'ECONNREFUSED':
      return ep.socketPath
        ? `connection refused on unix socket ${ep.socketPath} (${ep.display}): is the server running?`
        : `connection refused at ${ep.display}: is the server running and listening there?`;
    case 'ENOENT':
      return `no unix socket at ${ep.socketPath ?? '?'} (${ep.display})`;
    case 'EACCES':
      return `permission denied on unix socket ${ep.socketPath ?? '?'} (${ep.display})`;
    case 'ECONNRESET':
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED':
      return `the connection to ${ep.display} was closed without an answer${ep.tls ? ' (does the server require a client certificate: client_cert, client_key?)' : ''}`;
    case 'ABORT_ERR':
      return `aborted while talking to ${ep.display}`;
    default:
      return `talking to ${ep.display}: ${code ? `${code}: ` : ''}${messageOf(e.cause ?? err)}`;
  }
}

/** The client for an endpoint, shared by every target of the runtime that uses it. */
export function sharedClient(deps: ProviderDeps, kind: string, endpoint: ApiEndpoint, tls: TlsFiles): ApiClient {
  const id = JSON.stringify([kind, endpoint.display, tls.ca ?? null, tls.clientCert ?? null, tls.clientKey ?? null]);
  return deps.shared(`http-api:${id}`, () => new ApiClient(endpoint, tls));
}

/** The connection keys every HTTP API target takes (with `url`). */
export const apiConnectionFields = {
  /** CA bundle (PEM file) that signs the API's TLS certificate, for https. */
  ca: pathString.optional(),
  client_cert: pathString.optional(),
  client_key: pathString.optional(),
  /** Per request. */
  timeout: duration('10s'),
  /** Largest answer read from the API, in bytes; a larger one fails the request (E_TARGET). */
  max_answer_bytes: z.number().int().min(1024).default(DEFAULT_MAX_ANSWER_BYTES),
};

/** Checks across the connection keys: a valid url, client cert and key together, TLS files only with https. */
export function checkApiConnection(
  c: { url: string; ca?: string | undefined; client_cert?: string | undefined; client_key?: string | undefined },
  ctx: z.RefinementCtx,
): void {
  let ep: ApiEndpoint | undefined;
  try {
    ep = parseApiUrl(c.url);
  } catch (err) {
    ctx.addIssue({ code: 'custom', path: ['url'], message: messageOf(err) });
  }
  if ((c.client_cert === undefined) !== (c.client_key === undefined)) {
    ctx.addIssue({ code: 'custom', path: ['client_cert'], message: 'give both client_cert and client_key, or neither' });
  }
  if (ep && !ep.tls && (c.ca !== undefined || c.client_cert !== undefined)) {
    ctx.addIssue({ code: 'custom', path: ['ca'], message: 'ca, client_cert and client_key apply to an https url only' });
  }
}
