// A protocol peer for the APISIX 3.x Admin API, SSL objects only (shared/PROTOCOLS.md, "APISIX
// Admin API"; behaviour read from apisix/admin/{init,resource}.lua and apisix/ssl.lua):
//
//   PUT    /apisix/admin/ssls/{id}   body {cert, key, snis | sni, certs?, keys?, ...}
//          201 when created, 200 when replaced: {"key":"/apisix/ssls/{id}","value":{...}}
//   POST   /apisix/admin/ssls        201, the id is generated
//   GET    /apisix/admin/ssls/{id}   200 {"key","value","createdIndex","modifiedIndex"}; the
//          private key is left out ("not return private key for security"); 404 {"message":"Key not found"}
//   GET    /apisix/admin/ssls        200 {"total":n,"list":[{key,value,...}]}
//   DELETE /apisix/admin/ssls/{id}   200 {"deleted":"1","key":"/apisix/ssls/{id}"}; 404 when missing
//
// The API key is read from the X-API-KEY header or the api_key query argument; a missing or wrong
// one is 401 {"error_msg":"failed to check token"} before anything else. APISIX encrypts private
// keys at rest (AES-128-CBC with apisix.ssl.key_encrypt_salt as key and IV, base64): PUT/POST
// answers and list items carry `key`/`keys` in that encrypted form, never the PEM sent.
// An invalid JSON body is 400 {"error_msg":"invalid request body: ...","req_body":<the body>}:
// APISIX echoes the body, so a client must never log an Admin API error body verbatim.
//
// Validation (400 {"error_msg": ...}): schema (cert, key and snis or sni required; SNI pattern),
// "mismatched number of certs and keys", "failed to parse cert: ...", "failed to parse key: ...".
// DIVERGENCE: APISIX 3.x does not check that key and certificate match (ssl.lua validate():
// "TODO: check if key & cert match"), such a pair is accepted and then fails handshakes. The
// peer rejects it with 400 "key and cert do not match" unless `checkPairMatch: false`, which
// reproduces APISIX exactly (the handshake then fails).
//
// Unknown resource types are 404 {"error_msg":"Unsupported resource type: X"}: in particular the
// 2.x path /apisix/admin/ssl/{id}, which 3.x no longer serves. PATCH is not modelled (405).
//
// startTls() serves the stored objects by SNI at handshake time as radixtree_sni.lua does: the
// server name lowercased, an exact SNI first, then `*.example.com` matching exactly one more
// label; objects with status 0 or type "client" are not served.
import { createCipheriv, createPrivateKey, createPublicKey, randomBytes, X509Certificate } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { registerSecret } from '../helpers/capture.js';
import { FaultQueue, listenHttp, readBody, sendHuge, sendJson, TlsListeners } from './peer-kit.js';
import type { Fault, HugeAnswer, LoggedRequest, PemPairs, TlsListener } from './peer-kit.js';

export interface ApisixPeerOptions {
  /** The admin key (X-API-KEY). */
  apiKey: string;
  /** apisix.ssl.key_encrypt_salt (16 characters). Default the 3.x default, "edd1c9f0985e76a2". */
  keyEncryptSalt?: string;
  /** Reject a key that does not match its certificate (APISIX itself does not). Default true. */
  checkPairMatch?: boolean;
  /** Admin API request body limit (APISIX: 1.5 MiB). */
  maxBodyBytes?: number;
}

/** An SSL object as the peer holds it, with the private keys in clear (test view only). */
export interface StoredSsl {
  id: string;
  cert: string;
  key: string;
  snis: string[];
  certs?: string[];
  keys?: string[];
  type: string;
  status: number;
  create_time: number;
  update_time: number;
  /** Any other fields sent, kept as given. */
  extra: Record<string, unknown>;
  createdIndex: number;
  modifiedIndex: number;
}

export type ApisixFaultKind = '5xx' | 'down' | 'huge';

export interface ApisixFault extends Fault<ApisixFaultKind> {
  /** Status of a '5xx' fault. Default 503 (what APISIX answers when etcd fails). */
  status?: number;
  /** Size of a 'huge' answer (200, a JSON string). Default 50 MB. */
  bytes?: number;
  /** Whether a 'huge' answer announces its size in Content-Length. Default true. */
  contentLength?: boolean;
}

export interface ApisixPeer {
  /** http://127.0.0.1:PORT: the Admin API base certd is configured with. */
  url: string;
  readonly requests: LoggedRequest[];
  /** '5xx', 'down' (closed without an answer), or 'huge' (see `hugeAnswers`) for the next requests. */
  inject(fault: ApisixFault): void;
  /** Every 'huge' answer started, with the bytes the client's connection took. */
  readonly hugeAnswers: HugeAnswer[];
  /** The stored object by id, keys in clear; undefined when absent. */
  ssl(id: string): Readonly<StoredSsl> | undefined;
  /** Encrypts as APISIX stores keys at rest, so a test can recognise an encrypted key. */
  encryptKey(pem: string): string;
  startTls(opts?: { fallback?: { cert: string; key: string } }): Promise<TlsListener>;
  close(): Promise<void>;
}

class AdminError extends Error {
  constructor(
    readonly status: number,
    readonly body: Record<string, unknown>,
  ) {
    super(String(body['error_msg'] ?? body['message'] ?? status));
  }
}

const SNI_PATTERN = /^\*?[0-9a-zA-Z-._[\]:]+$/;
const SSL_FIELDS = new Set(['id', 'cert', 'key', 'snis', 'sni', 'certs', 'keys', 'type', 'status', 'create_time', 'update_time']);

export async function startApisixPeer(opts: ApisixPeerOptions): Promise<ApisixPeer> {
  registerSecret('api-key', opts.apiKey);
  const salt = opts.keyEncryptSalt ?? 'edd1c9f0985e76a2';
  if (Buffer.byteLength(salt) !== 16) throw new Error('apisix peer: keyEncryptSalt must be 16 bytes');
  const checkPairMatch = opts.checkPairMatch ?? true;
  const maxBodyBytes = opts.maxBodyBytes ?? 1.5 * 1024 * 1024;
  const store = new Map<string, StoredSsl>();
  const requests: LoggedRequest[] = [];
  const faults = new FaultQueue<ApisixFault>();
  const hugeAnswers: HugeAnswer[] = [];
  const tlsListeners = new TlsListeners();
  let revision = 0;

  const encryptKey = (pem: string): string => {
    // aes_encrypt_pkey only encrypts PEM text (a leading "---"); anything else is stored as sent.
    if (!pem.startsWith('---')) return pem;
    const c = createCipheriv('aes-128-cbc', Buffer.from(salt), Buffer.from(salt));
    return Buffer.concat([c.update(pem, 'utf8'), c.final()]).toString('base64');
  };

  const publicValue = (s: StoredSsl, withKey: boolean): Record<string, unknown> => ({
    ...s.extra,
    id: s.id,
    cert: s.cert,
    ...(withKey ? { key: encryptKey(s.key) } : {}),
    snis: s.snis,
    ...(s.certs === undefined ? {} : { certs: s.certs }),
    ...(s.keys === undefined || !withKey ? {} : { keys: s.keys.map(encryptKey) }),
    type: s.type,
    status: s.status,
    create_time: s.create_time,
    update_time: s.update_time,
  });

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const method = (req.method ?? 'GET').toUpperCase();
    const path = req.url ?? '/';
    const log = (status: number) => requests.push({ method, path, status });
    const fault = faults.take(method);
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
      try {
        const url = new URL(path, 'http://peer');
        checkToken(req, url);
        if (fault?.kind === '5xx') {
          throw new AdminError(fault.status ?? 503, { error_msg: 'has no healthy etcd endpoint available' });
        }
        const out = route(method, url, body);
        log(out.status);
        sendJson(res, out.status, out.body);
      } catch (err) {
        const e = err instanceof AdminError ? err : new AdminError(500, { error_msg: 'internal error' });
        log(e.status);
        sendJson(res, e.status, e.body);
      }
    })();
  };

  function checkToken(req: IncomingMessage, url: URL): void {
    const header = req.headers['x-api-key'];
    const token = url.searchParams.get('api_key') ?? (Array.isArray(header) ? header[0] : header);
    if (token !== opts.apiKey) throw new AdminError(401, { error_msg: 'failed to check token' });
  }

  function route(
    method: string,
    url: URL,
    body: { text: string; tooLarge: boolean; size: number },
  ): { status: number; body: unknown } {
    const segs = url.pathname.split('/').filter((s) => s !== '');
    if (segs[0] !== 'apisix' || segs[1] !== 'admin' || segs.length < 3) {
      throw new AdminError(404, { error_msg: '404 Route Not Found' });
    }
    const resource = segs[2]!;
    if (resource !== 'ssls') throw new AdminError(404, { error_msg: `Unsupported resource type: ${resource}` });
    const id = segs[3] === undefined ? undefined : decodeURIComponent(segs[3]);
    if (segs.length > 4) throw new AdminError(404, { error_msg: '404 Route Not Found' });
    switch (method) {
      case 'GET':
        return id === undefined ? list() : getOne(id);
      case 'PUT':
        if (id === undefined) throw new AdminError(400, { error_msg: 'missing ssl id' });
        return put(id, parseBody(body));
      case 'POST':
        if (id !== undefined) throw new AdminError(404, { error_msg: '404 Route Not Found' });
        return put(undefined, parseBody(body));
      case 'DELETE':
        if (id === undefined) throw new AdminError(400, { error_msg: 'missing ssl id' });
        if (!store.delete(id)) throw new AdminError(404, { message: 'Key not found' });
        revision += 1;
        return { status: 200, body: { deleted: '1', key: `/apisix/ssls/${id}` } };
      default:
        throw new AdminError(405, { error_msg: `not supported \`${method}\` method for ssl` });
    }
  }

  function list(): { status: number; body: unknown } {
    const items = [...store.values()].map((s) => ({
      key: `/apisix/ssls/${s.id}`,
      value: publicValue(s, true),
      createdIndex: s.createdIndex,
      modifiedIndex: s.modifiedIndex,
    }));
    return { status: 200, body: { total: items.length, list: items } };
  }

  function getOne(id: string): { status: number; body: unknown } {
    const s = store.get(id);
    if (s === undefined) throw new AdminError(404, { message: 'Key not found' });
    return {
      status: 200,
      body: { key: `/apisix/ssls/${id}`, value: publicValue(s, false), createdIndex: s.createdIndex, modifiedIndex: s.modifiedIndex },
    };
  }

  function parseBody(body: { text: string; tooLarge: boolean; size: number }): Record<string, unknown> {
    if (body.tooLarge) {
      throw new AdminError(400, {
        error_msg: `invalid request body: request size ${body.size} is greater than the maximum size ${maxBodyBytes} allowed`,
      });
    }
    if (body.text === '') throw new AdminError(400, { error_msg: 'missing configurations' });
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.text);
    } catch {
      // cjson's wording; V8's own message quotes the input, which may be key material.
      throw new AdminError(400, { error_msg: 'invalid request body: Expected value but found invalid token', req_body: body.text });
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new AdminError(400, { error_msg: 'invalid configuration: wrong type: expected object' });
    }
    return parsed as Record<string, unknown>;
  }

  function put(pathId: string | undefined, conf: Record<string, unknown>): { status: number; body: unknown } {
    const bodyId = conf['id'] === undefined ? undefined : String(conf['id']);
    if (pathId !== undefined && bodyId !== undefined && bodyId !== pathId) {
      throw new AdminError(400, { error_msg: 'wrong ssl id' });
    }
    if (pathId === undefined && bodyId !== undefined) {
      throw new AdminError(400, { error_msg: 'wrong ssl id, do not need it' });
    }
    const id = pathId ?? String(Date.now()).padStart(20, '0') + randomBytes(2).toString('hex');
    const v = validate(conf);
    const prev = store.get(id);
    const t = Math.floor(Date.now() / 1000);
    revision += 1;
    const extra: Record<string, unknown> = {};
    for (const [k, val] of Object.entries(conf)) if (!SSL_FIELDS.has(k)) extra[k] = val;
    const stored: StoredSsl = {
      id,
      cert: v.cert,
      key: v.key,
      snis: v.snis,
      ...(v.certs === undefined ? {} : { certs: v.certs, keys: v.keys ?? [] }),
      type: v.type,
      status: v.status,
      create_time: prev?.create_time ?? t,
      update_time: t,
      extra,
      createdIndex: prev?.createdIndex ?? revision,
      modifiedIndex: revision,
    };
    store.set(id, stored);
    return {
      status: prev === undefined ? 201 : 200,
      body: { key: `/apisix/ssls/${id}`, value: publicValue(stored, true) },
    };
  }

  function validate(conf: Record<string, unknown>): Pick<StoredSsl, 'cert' | 'key' | 'snis' | 'certs' | 'keys' | 'type' | 'status'> {
    const bad = (msg: string): never => {
      throw new AdminError(400, { error_msg: `invalid configuration: ${msg}` });
    };
    const type = conf['type'] ?? 'server';
    if (type !== 'server' && type !== 'client') bad('property "type" validation failed: matches none of the enum values');
    const status = conf['status'] ?? 1;
    if (status !== 0 && status !== 1) bad('property "status" validation failed: matches none of the enum values');
    for (const f of ['cert', 'key'] as const) {
      if (conf[f] === undefined) bad(`property "${f}" is required`);
      if (typeof conf[f] !== 'string') bad(`property "${f}" validation failed: wrong type: expected string, got ${typeof conf[f]}`);
      if ((conf[f] as string).length < 128) bad(`property "${f}" validation failed: string too short, expected at least 128, got ${(conf[f] as string).length}`);
    }
    let snis: string[];
    if (conf['snis'] !== undefined) {
      const s = conf['snis'];
      if (!Array.isArray(s) || s.length === 0 || !s.every((x) => typeof x === 'string' && SNI_PATTERN.test(x))) {
        bad('property "snis" validation failed: expect array of host names, at least 1 item');
      }
      snis = s as string[];
    } else if (typeof conf['sni'] === 'string' && SNI_PATTERN.test(conf['sni'])) {
      snis = [conf['sni']];
    } else if (type === 'server') {
      return bad('value should match only one schema, but matches none');
    } else {
      snis = [];
    }
    const certs = conf['certs'];
    const keys = conf['keys'];
    for (const [name, arr] of [['certs', certs], ['keys', keys]] as const) {
      if (arr !== undefined && (!Array.isArray(arr) || !arr.every((x) => typeof x === 'string'))) {
        bad(`property "${name}" validation failed: wrong type: expected array of strings`);
      }
    }
    const nc = Array.isArray(certs) ? certs.length : 0;
    const nk = Array.isArray(keys) ? keys.length : 0;
    if (nc !== nk) throw new AdminError(400, { error_msg: 'mismatched number of certs and keys' });
    checkPair(conf['cert'] as string, conf['key'] as string, '');
    for (let i = 0; i < nc; i++) {
      checkPair((certs as string[])[i]!, (keys as string[])[i]!, `failed to handle cert-key pair[${i + 1}]: `);
    }
    return {
      cert: conf['cert'] as string,
      key: conf['key'] as string,
      snis,
      ...(nc > 0 ? { certs: certs as string[], keys: keys as string[] } : {}),
      type: type as string,
      status: status as number,
    };
  }

  function checkPair(certPem: string, keyPem: string, prefix: string): void {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(certPem);
    } catch {
      throw new AdminError(400, { error_msg: `${prefix}failed to parse cert: PEM_read_bio_X509_AUX() failed` });
    }
    let pub: string;
    try {
      pub = createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'pem' }).toString();
    } catch {
      throw new AdminError(400, { error_msg: `${prefix}failed to parse key: PEM_read_bio_PrivateKey() failed` });
    }
    if (checkPairMatch && cert.publicKey.export({ type: 'spki', format: 'pem' }).toString() !== pub) {
      throw new AdminError(400, { error_msg: `${prefix}key and cert do not match` });
    }
  }

  const selectBySni = (servername: string): PemPairs | undefined => {
    const name = servername.toLowerCase();
    const servable = [...store.values()].filter((s) => s.status === 1 && s.type === 'server');
    const hit =
      servable.find((s) => s.snis.some((p) => p.toLowerCase() === name)) ??
      servable.find((s) =>
        s.snis.some((p) => {
          if (!p.startsWith('*.')) return false;
          const suffix = p.slice(1).toLowerCase();
          return name.endsWith(suffix) && !name.slice(0, -suffix.length).includes('.') && name.length > suffix.length;
        }),
      );
    if (hit === undefined) return undefined;
    return { key: [hit.key, ...(hit.keys ?? [])], cert: [hit.cert, ...(hit.certs ?? [])] };
  };

  const listening = await listenHttp(handler);
  return {
    url: listening.url,
    requests,
    hugeAnswers,
    inject: (f) => faults.add(f),
    ssl: (id) => store.get(id),
    encryptKey,
    async startTls(tlsOpts = {}) {
      return tlsListeners.start(selectBySni, tlsOpts.fallback);
    },
    async close() {
      await tlsListeners.closeAll();
      await listening.close();
    },
  };
}
