// A protocol peer for the NGINX Plus API key-value store (ngx_http_api_module, versions 1..9),
// faithful to the documented behaviour (shared/PROTOCOLS.md, "NGINX Plus API"):
//
//   GET    /api/                          -> [1,2,...,9]
//   GET    /api/{v}/                      -> top-level endpoints
//   GET    /api/{v}/http/ | /stream/      -> endpoints under it
//   GET    /api/{v}/http/keyvals/         -> {zone: {k: v}} for every zone (`?fields=` empty: names only)
//   */api/{v}/http/keyvals/{zone}        (and /stream/keyvals/{zone} for stream zones)
//     GET     200 {"k":"v"}; ?key=K -> {"K":"v"} or 404 KeyvalKeyNotFound
//     POST    adds new keys, 201 no body; an existing key -> 409 KeyvalKeyExists (POST never
//             overwrites); several keys only into an empty zone, else 400 KeyvalFormatError
//             ("only one key can be added", as the API reference lists it under 400)
//     PATCH   one existing key, 204; missing -> 404 KeyvalKeyNotFound (PATCH never creates);
//             {"k": null} deletes k
//     DELETE  empties the whole zone, 204
//   Values are strings, or {"value": "...", "expire": ms} on a zone with a timeout (an expire on a
//   zone without one is 400 KeyvalFormatError "key timeout is not allowed").
//
// Errors (body {"error":{status,text,code},"request_id","href"}):
//   404 UnknownVersion, PathNotFound, KeyvalNotFound, KeyvalKeyNotFound; 405 MethodDisabled (a
//   write with `api write=off`), MethodNotSupported; 409 KeyvalKeyExists; 400 KeyvalFormatError;
//   413 when the body exceeds client_body_buffer_size (the reference names no code for it: the
//   peer says RequestEntityTooLarge; clients should branch on the status); 415 JsonError.
// Choices where the reference is silent, kept strict so certd cannot come to rely on leniency:
//   - PATCH with more than one key is 400 KeyvalFormatError;
//   - a value that is not a string (a number, a list) is 400 KeyvalFormatError;
//   - keys match exactly (keyval_zone type=string), also for the SNI lookup of startTls.
//
// startTls mirrors `keyval $ssl_server_name $pem zone=Z; ssl_certificate data:$pem;
// ssl_certificate_key data:$pem;`: the zone value for the server name (key PEM, then leaf and
// chain PEM) is read at handshake time and given whole as both key and certificate, as nginx
// does with the same variable.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  FaultQueue,
  listenHttp,
  sendHuge,
  TlsListeners,
  readBody,
  sendEmpty,
  sendJson,
} from './peer-kit.js';
import type { Fault, HugeAnswer, LoggedRequest, PemPairs, TlsListener } from './peer-kit.js';

export interface NginxPlusZoneOptions {
  /** keyval_zone timeout= in milliseconds: entries expire this long after their last write. */
  timeout?: number;
  /** keyval_zone state=: recorded only, so tests can check what certd warns about. */
  state?: boolean;
  /** A stream zone (/stream/keyvals/...) rather than an http one. */
  stream?: boolean;
}

export interface NginxPlusPeerOptions {
  /** API versions offered by GET /api/. Default 1..9. */
  versions?: number[];
  /** `api write=on`. Default true; false answers every write with 405 MethodDisabled. */
  write?: boolean;
  /** The keyval zones. Default: one http zone named `certs`. */
  zones?: Record<string, NginxPlusZoneOptions>;
  /** client_body_buffer_size. Default 16 KiB. */
  maxBodyBytes?: number;
  /** Listen on this unix socket path instead of 127.0.0.1:0. */
  unixSocket?: string;
  /** Clock for expiry, in ms. Default Date.now. */
  now?: () => number;
}

export type NginxPlusFaultKind = '5xx' | 'down' | 'conflict-race' | 'huge';

export interface NginxPlusFault extends Fault<NginxPlusFaultKind> {
  /** Status of a '5xx' fault. Default 500. */
  status?: number;
  /** What the racing writer stored, for 'conflict-race'. Default "raced-by-another-writer". */
  raceValue?: string;
  /** Size of a 'huge' answer. Default 50 MB. */
  bytes?: number;
  /** Whether a 'huge' answer announces its size in Content-Length. Default true. */
  contentLength?: boolean;
  /** Only requests whose path and query contain this string take the fault. */
  pathIncludes?: string;
}

export interface NginxPlusTlsOptions {
  zone: string;
  stream?: boolean;
  /** Served for names the zone does not hold; without it such handshakes fail. */
  fallback?: { cert: string; key: string };
}

export interface NginxPlusPeer {
  /** http://127.0.0.1:PORT (http://localhost with a unix socket). */
  url: string;
  /** `${url}/api`: what certd's `url` setting points at. */
  apiUrl: string;
  socketPath?: string;
  /** The live store of a zone; writes by a test are seen by the API and by handshakes. */
  zone(name: string): Map<string, string>;
  /** Zone configuration as given (state=, timeout=, stream). */
  zoneOptions(name: string): Readonly<NginxPlusZoneOptions>;
  /** Every request answered, in order: method, path, status. No bodies. */
  readonly requests: LoggedRequest[];
  /**
   * Faults for the next `count` requests (optionally only `methods`):
   * - '5xx': `status` (default 500) with an nginx error body, the store untouched;
   * - 'down': the connection is closed without an answer;
   * - 'conflict-race': a POST of a missing key answers 409 KeyvalKeyExists because another
   *   writer added it first: the key now holds `raceValue` (default "raced-by-another-writer");
   * - 'huge': 200 with a JSON string of `bytes` (default 50 MB), with or without Content-Length,
   *   written with backpressure; what the client took is in `hugeAnswers`.
   */
  inject(fault: NginxPlusFault): void;
  /** Every 'huge' answer started, with the bytes the client's connection took. */
  readonly hugeAnswers: HugeAnswer[];
  startTls(opts: NginxPlusTlsOptions): Promise<TlsListener>;
  close(): Promise<void>;
}

const HREF = 'https://nginx.org/en/docs/http/ngx_http_api_module.html';
const TOP_ENDPOINTS = ['nginx', 'processes', 'connections', 'slabs', 'http', 'stream', 'resolvers', 'ssl', 'workers'];
const HTTP_ENDPOINTS = ['requests', 'server_zones', 'location_zones', 'caches', 'limit_conns', 'limit_reqs', 'keyvals', 'upstreams'];
const STREAM_ENDPOINTS = ['server_zones', 'limit_conns', 'keyvals', 'upstreams', 'zone_sync'];

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly text: string,
  ) {
    super(text);
  }
}

interface Zone {
  options: NginxPlusZoneOptions;
  values: Map<string, string>;
  /** Expiry time (ms) per key, only on zones with a timeout. */
  expires: Map<string, number>;
}

type KeyvalValue = { value: string; expire: number | undefined } | null;

export async function startNginxPlusPeer(opts: NginxPlusPeerOptions = {}): Promise<NginxPlusPeer> {
  const versions = opts.versions ?? [1, 2, 3, 4, 5, 6, 7, 8, 9];
  const write = opts.write ?? true;
  const maxBodyBytes = opts.maxBodyBytes ?? 16 * 1024;
  const now = opts.now ?? Date.now;
  const zones = new Map<string, Zone>();
  for (const [name, o] of Object.entries(opts.zones ?? { certs: {} })) {
    zones.set(name, { options: { ...o }, values: new Map(), expires: new Map() });
  }
  const requests: LoggedRequest[] = [];
  const faults = new FaultQueue<NginxPlusFault>();
  const hugeAnswers: HugeAnswer[] = [];
  const tlsListeners = new TlsListeners();

  const purge = (z: Zone): void => {
    const t = now();
    for (const [k, at] of z.expires) {
      if (at <= t) {
        z.expires.delete(k);
        z.values.delete(k);
      }
    }
  };
  const setValue = (z: Zone, key: string, v: { value: string; expire: number | undefined }): void => {
    z.values.set(key, v.value);
    const ttl = v.expire ?? z.options.timeout;
    if (ttl !== undefined) z.expires.set(key, now() + ttl);
    else z.expires.delete(key);
  };
  const zoneByName = (name: string, stream: boolean): Zone => {
    const z = zones.get(name);
    if (z === undefined || (z.options.stream ?? false) !== stream) {
      throw new ApiError(404, 'KeyvalNotFound', 'keyval not found');
    }
    purge(z);
    return z;
  };

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const method = (req.method ?? 'GET').toUpperCase();
    const path = req.url ?? '/';
    const log = (status: number) => requests.push({ method, path, status });

    const fault = faults.take(method, (f) => (f.kind !== 'conflict-race' || method === 'POST') && (f.pathIncludes === undefined || path.includes(f.pathIncludes)));
    if (fault?.kind === 'huge') {
      log(200);
      hugeAnswers.push(sendHuge(req, res, { bytes: fault.bytes ?? 50_000_000, contentLength: fault.contentLength ?? true }));
      return;
    }
    if (fault?.kind === 'down') {
      log(0);
      req.socket.destroy();
      return;
    }
    void (async () => {
      const body = await readBody(req, maxBodyBytes);
      if (fault?.kind === '5xx') {
        const status = fault.status ?? 500;
        log(status);
        return sendError(res, new ApiError(status, 'InternalError', 'internal server error'));
      }
      try {
        const race = fault?.kind === 'conflict-race' ? (fault.raceValue ?? 'raced-by-another-writer') : undefined;
        const out = route(method, new URL(path, 'http://peer'), body, race);
        log(out.status);
        if (out.body === undefined) sendEmpty(res, out.status);
        else sendJson(res, out.status, out.body);
      } catch (err) {
        const e = err instanceof ApiError ? err : new ApiError(500, 'InternalError', 'internal error');
        log(e.status);
        sendError(res, e);
      }
    })();
  };

  function route(
    method: string,
    url: URL,
    body: { text: string; tooLarge: boolean },
    race: string | undefined,
  ): { status: number; body?: unknown } {
    const segs = url.pathname.split('/');
    // ['', 'api', v, section, 'keyvals', zone]; a trailing slash leaves an empty last segment.
    if (segs[1] !== 'api') throw new ApiError(404, 'PathNotFound', 'path not found');
    if (segs.length === 2 || (segs.length === 3 && segs[2] === '')) {
      onlyGet(method);
      return { status: 200, body: versions };
    }
    const v = Number(segs[2]);
    if (!/^[0-9]+$/.test(segs[2] ?? '') || !versions.includes(v)) {
      throw new ApiError(404, 'UnknownVersion', 'unknown version');
    }
    const rest = segs.slice(3);
    if (rest.length === 0 || (rest.length === 1 && rest[0] === '')) {
      onlyGet(method);
      return { status: 200, body: TOP_ENDPOINTS };
    }
    const section = rest[0];
    if (section !== 'http' && section !== 'stream') throw new ApiError(404, 'PathNotFound', 'path not found');
    const stream = section === 'stream';
    if (rest.length === 1 || (rest.length === 2 && rest[1] === '')) {
      onlyGet(method);
      return { status: 200, body: stream ? STREAM_ENDPOINTS : HTTP_ENDPOINTS };
    }
    if (rest[1] !== 'keyvals') throw new ApiError(404, 'PathNotFound', 'path not found');
    if (rest.length === 2 || (rest.length === 3 && rest[2] === '')) {
      onlyGet(method);
      const namesOnly = url.searchParams.has('fields') && url.searchParams.get('fields') === '';
      const all: Record<string, Record<string, string>> = {};
      for (const [name, z] of zones) {
        if ((z.options.stream ?? false) !== stream) continue;
        purge(z);
        all[name] = namesOnly ? {} : Object.fromEntries(z.values);
      }
      return { status: 200, body: all };
    }
    if (rest.length > 3 && !(rest.length === 4 && rest[3] === '')) {
      throw new ApiError(404, 'PathNotFound', 'path not found');
    }
    const zoneName = decodeURIComponent(rest[2] ?? '');
    return keyvals(method, zoneName, stream, url, body, race);
  }

  function keyvals(
    method: string,
    zoneName: string,
    stream: boolean,
    url: URL,
    body: { text: string; tooLarge: boolean },
    race: string | undefined,
  ): { status: number; body?: unknown } {
    if (!['GET', 'HEAD', 'POST', 'PATCH', 'DELETE'].includes(method)) {
      throw new ApiError(405, 'MethodNotSupported', 'method not supported');
    }
    if (method !== 'GET' && method !== 'HEAD' && !write) {
      throw new ApiError(405, 'MethodDisabled', 'method disabled');
    }
    const z = zoneByName(zoneName, stream);
    if (method === 'GET' || method === 'HEAD') {
      const key = url.searchParams.get('key');
      if (key === null) return { status: 200, body: Object.fromEntries(z.values) };
      const value = z.values.get(key);
      if (value === undefined) throw new ApiError(404, 'KeyvalKeyNotFound', 'key not found');
      return { status: 200, body: { [key]: value } };
    }
    if (method === 'DELETE') {
      z.values.clear();
      z.expires.clear();
      return { status: 204 };
    }
    const entries = parseEntries(body, z, method === 'PATCH');
    if (method === 'POST') {
      if (entries.length > 1 && z.values.size > 0) {
        throw new ApiError(400, 'KeyvalFormatError', 'only one key can be added');
      }
      for (const [k] of entries) {
        if (z.values.has(k)) throw new ApiError(409, 'KeyvalKeyExists', `key "${k}" already exists`);
      }
      if (race !== undefined) {
        const [k] = entries[0]!;
        setValue(z, k, { value: race, expire: undefined });
        throw new ApiError(409, 'KeyvalKeyExists', `key "${k}" already exists`);
      }
      for (const [k, v] of entries) setValue(z, k, v!);
      return { status: 201 };
    }
    // PATCH
    if (entries.length !== 1) throw new ApiError(400, 'KeyvalFormatError', 'only one key can be updated');
    const [k, v] = entries[0]!;
    if (!z.values.has(k)) throw new ApiError(404, 'KeyvalKeyNotFound', 'key not found');
    if (v === null) {
      z.values.delete(k);
      z.expires.delete(k);
    } else {
      setValue(z, k, v);
    }
    return { status: 204 };
  }

  function parseEntries(
    body: { text: string; tooLarge: boolean },
    z: Zone,
    allowNull: boolean,
  ): [string, KeyvalValue][] {
    if (body.tooLarge) throw new ApiError(413, 'RequestEntityTooLarge', 'request entity too large');
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.text);
    } catch {
      throw new ApiError(415, 'JsonError', 'json error');
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new ApiError(400, 'KeyvalFormatError', 'invalid key format');
    }
    const entries = Object.entries(parsed as Record<string, unknown>);
    if (entries.length === 0) throw new ApiError(400, 'KeyvalFormatError', 'key required');
    return entries.map(([k, raw]): [string, KeyvalValue] => {
      if (k === '') throw new ApiError(400, 'KeyvalFormatError', 'key required');
      if (raw === null && allowNull) return [k, null];
      if (typeof raw === 'string') return [k, { value: raw, expire: undefined }];
      if (typeof raw === 'object' && raw !== null && !Array.isArray(raw)) {
        const o = raw as Record<string, unknown>;
        const extra = Object.keys(o).filter((f) => f !== 'value' && f !== 'expire');
        if (typeof o['value'] !== 'string' || extra.length > 0) {
          throw new ApiError(400, 'KeyvalFormatError', 'invalid value format');
        }
        if (o['expire'] !== undefined) {
          if (z.options.timeout === undefined) {
            throw new ApiError(400, 'KeyvalFormatError', 'key timeout is not allowed');
          }
          if (typeof o['expire'] !== 'number' || !Number.isInteger(o['expire']) || o['expire'] < 0) {
            throw new ApiError(400, 'KeyvalFormatError', 'invalid expire value');
          }
        }
        return [k, { value: o['value'], expire: o['expire'] as number | undefined }];
      }
      throw new ApiError(400, 'KeyvalFormatError', 'invalid value format');
    });
  }

  const listening = await listenHttp(handler, opts.unixSocket);
  const peer: NginxPlusPeer = {
    url: listening.url,
    apiUrl: `${listening.url}/api`,
    ...(listening.socketPath === undefined ? {} : { socketPath: listening.socketPath }),
    zone(name) {
      const z = zones.get(name);
      if (z === undefined) throw new Error(`nginx-plus peer: no zone ${name}`);
      purge(z);
      return z.values;
    },
    zoneOptions(name) {
      const z = zones.get(name);
      if (z === undefined) throw new Error(`nginx-plus peer: no zone ${name}`);
      return z.options;
    },
    requests,
    hugeAnswers,
    inject(fault) {
      faults.add(fault);
    },
    async startTls(tlsOpts) {
      const select = (servername: string): PemPairs | undefined => {
        const z = zones.get(tlsOpts.zone);
        if (z === undefined || (z.options.stream ?? false) !== (tlsOpts.stream ?? false)) return undefined;
        purge(z);
        const value = z.values.get(servername);
        // data:$var with the same variable for key and certificate: OpenSSL takes the key block
        // for the key and the certificate blocks, in order, for the chain.
        return value === undefined || value === '' ? undefined : { key: value, cert: value };
      };
      return tlsListeners.start(select, tlsOpts.fallback);
    },
    async close() {
      await tlsListeners.closeAll();
      await listening.close();
    },
  };
  return peer;
}

function onlyGet(method: string): void {
  if (method !== 'GET' && method !== 'HEAD') throw new ApiError(405, 'MethodNotSupported', 'method not supported');
}

function sendError(res: ServerResponse, e: ApiError): void {
  sendJson(res, e.status, {
    error: { status: e.status, text: e.text, code: e.code },
    request_id: randomBytes(16).toString('hex'),
    href: HREF,
  });
}
