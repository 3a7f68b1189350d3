// Conformance of the NGINX Plus API peer with the documented key-value API (shared/PROTOCOLS.md,
// ngx_http_api_module): one row per documented status, the error body shape, injected faults,
// and a TLS listener that serves the zone's value for the SNI name at handshake time.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startNginxPlusPeer } from '../peers/nginx-plus-peer.js';
import type { NginxPlusPeer } from '../peers/nginx-plus-peer.js';
import { handshake, makeSelfSigned, openssl } from '../helpers/tls.js';
import type { SelfSigned } from '../helpers/tls.js';

interface Answer {
  status: number;
  text: string;
}

async function call(base: string, method: string, path: string, body?: string): Promise<Answer> {
  const res = await fetch(`${base}${path}`, {
    method,
    ...(body === undefined ? {} : { body, headers: { 'Content-Type': 'application/json' } }),
  });
  return { status: res.status, text: await res.text() };
}

function assertNginxError(a: Answer, status: number, code: string): void {
  assert.equal(a.status, status, `status for ${code}`);
  const body = JSON.parse(a.text) as {
    error: { status: number; text: string; code: string };
    request_id: string;
    href: string;
  };
  assert.deepEqual(Object.keys(body).sort(), ['error', 'href', 'request_id']);
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'status', 'text']);
  assert.equal(body.error.status, status);
  assert.equal(body.error.code, code);
  assert.equal(typeof body.error.text, 'string');
  assert.ok(body.error.text.length > 0);
  assert.match(body.request_id, /^[0-9a-f]{32}$/);
  assert.equal(body.href, 'https://nginx.org/en/docs/http/ngx_http_api_module.html');
}

const Z = '/9/http/keyvals/certs';

interface Row {
  name: string;
  before?: Record<string, string>;
  method: string;
  path: string;
  body?: string;
  status: number;
  /** Error code for error answers; undefined for successes. */
  code?: string;
  /** Exact body of a successful answer ('' for none). */
  answer?: unknown;
  after?: Record<string, string>;
}

const rows: Row[] = [
  { name: 'POST adds a new key: 201, no body', method: 'POST', path: Z, body: '{"a.example.com":"v1"}', status: 201, answer: '', after: { 'a.example.com': 'v1' } },
  { name: 'POST an existing key: 409 KeyvalKeyExists, value kept', before: { a: 'old' }, method: 'POST', path: Z, body: '{"a":"new"}', status: 409, code: 'KeyvalKeyExists', after: { a: 'old' } },
  { name: 'POST several keys into an empty zone: 201', method: 'POST', path: Z, body: '{"a":"1","b":"2"}', status: 201, answer: '', after: { a: '1', b: '2' } },
  { name: 'POST several keys into a non-empty zone: 400 KeyvalFormatError', before: { x: '0' }, method: 'POST', path: Z, body: '{"a":"1","b":"2"}', status: 400, code: 'KeyvalFormatError', after: { x: '0' } },
  { name: 'PATCH an existing key: 204', before: { a: 'old', b: 'keep' }, method: 'PATCH', path: Z, body: '{"a":"new"}', status: 204, answer: '', after: { a: 'new', b: 'keep' } },
  { name: 'PATCH a missing key: 404 KeyvalKeyNotFound, nothing created', before: { b: 'keep' }, method: 'PATCH', path: Z, body: '{"a":"new"}', status: 404, code: 'KeyvalKeyNotFound', after: { b: 'keep' } },
  { name: 'PATCH null deletes that key only: 204', before: { a: '1', b: '2' }, method: 'PATCH', path: Z, body: '{"a":null}', status: 204, answer: '', after: { b: '2' } },
  { name: 'PATCH null of a missing key: 404 KeyvalKeyNotFound', before: { b: '2' }, method: 'PATCH', path: Z, body: '{"a":null}', status: 404, code: 'KeyvalKeyNotFound', after: { b: '2' } },
  { name: 'DELETE empties the whole zone: 204', before: { a: '1', b: '2' }, method: 'DELETE', path: Z, status: 204, answer: '', after: {} },
  { name: 'GET the zone: 200 with every pair', before: { a: '1', b: '2' }, method: 'GET', path: Z, status: 200, answer: { a: '1', b: '2' } },
  { name: 'GET ?key= an existing key: only that pair', before: { a: '1', b: '2' }, method: 'GET', path: `${Z}?key=b`, status: 200, answer: { b: '2' } },
  { name: 'GET ?key= a missing key: 404 KeyvalKeyNotFound', before: { a: '1' }, method: 'GET', path: `${Z}?key=zz`, status: 404, code: 'KeyvalKeyNotFound' },
  { name: 'an unknown zone: 404 KeyvalNotFound', method: 'GET', path: '/9/http/keyvals/nope', status: 404, code: 'KeyvalNotFound' },
  { name: 'a stream zone on the http path: 404 KeyvalNotFound', method: 'GET', path: '/9/http/keyvals/tcp', status: 404, code: 'KeyvalNotFound' },
  { name: 'an unknown version: 404 UnknownVersion', method: 'GET', path: '/10/http/keyvals/certs', status: 404, code: 'UnknownVersion' },
  { name: 'a version that is not a number: 404 UnknownVersion', method: 'GET', path: '/latest/', status: 404, code: 'UnknownVersion' },
  { name: 'invalid JSON: 415 JsonError', method: 'POST', path: Z, body: '{"a":', status: 415, code: 'JsonError', after: {} },
  { name: 'a number as value: 400 KeyvalFormatError', method: 'POST', path: Z, body: '{"a":1}', status: 400, code: 'KeyvalFormatError', after: {} },
  { name: 'a JSON array: 400 KeyvalFormatError', method: 'POST', path: Z, body: '["a"]', status: 400, code: 'KeyvalFormatError', after: {} },
  { name: 'an empty object: 400 KeyvalFormatError', method: 'POST', path: Z, body: '{}', status: 400, code: 'KeyvalFormatError', after: {} },
  { name: 'PATCH of two keys: 400 KeyvalFormatError', before: { a: '1', b: '2' }, method: 'PATCH', path: Z, body: '{"a":"x","b":"y"}', status: 400, code: 'KeyvalFormatError', after: { a: '1', b: '2' } },
  { name: 'expire on a zone without timeout: 400 KeyvalFormatError', method: 'POST', path: Z, body: '{"a":{"value":"v","expire":1000}}', status: 400, code: 'KeyvalFormatError', after: {} },
  { name: 'a body over client_body_buffer_size: 413', method: 'POST', path: Z, body: JSON.stringify({ a: 'x'.repeat(17 * 1024) }), status: 413, code: 'RequestEntityTooLarge', after: {} },
  { name: 'PUT is not a keyval method: 405 MethodNotSupported', method: 'PUT', path: Z, body: '{"a":"1"}', status: 405, code: 'MethodNotSupported', after: {} },
];

describe('nginx-plus peer: documented statuses', () => {
  let peer: NginxPlusPeer;
  before(async () => {
    peer = await startNginxPlusPeer({ zones: { certs: {}, tcp: { stream: true } } });
  });
  after(() => peer.close());

  for (const row of rows) {
    it(row.name, async () => {
      const zone = peer.zone('certs');
      zone.clear();
      for (const [k, v] of Object.entries(row.before ?? {})) zone.set(k, v);
      const a = await call(peer.apiUrl, row.method, row.path, row.body);
      if (row.code !== undefined) {
        assertNginxError(a, row.status, row.code);
      } else {
        assert.equal(a.status, row.status);
        if (typeof row.answer === 'string') assert.equal(a.text, row.answer);
        else assert.deepEqual(JSON.parse(a.text), row.answer);
      }
      if (row.after !== undefined) assert.deepEqual(Object.fromEntries(peer.zone('certs')), row.after);
    });
  }

  it('discovery: GET /api/ lists the versions, /api/9/ and /api/9/http/ the endpoints', async () => {
    assert.deepEqual(JSON.parse((await call(peer.apiUrl, 'GET', '/')).text), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const top = JSON.parse((await call(peer.apiUrl, 'GET', '/9/')).text) as string[];
    assert.ok(top.includes('http') && top.includes('stream'));
    const http = JSON.parse((await call(peer.apiUrl, 'GET', '/9/http/')).text) as string[];
    assert.ok(http.includes('keyvals'));
  });

  it('GET /api/9/http/keyvals/ lists http zones only, with their pairs', async () => {
    peer.zone('certs').clear();
    peer.zone('certs').set('a', '1');
    peer.zone('tcp').set('s', '2');
    const a = await call(peer.apiUrl, 'GET', '/9/http/keyvals/');
    assert.deepEqual(JSON.parse(a.text), { certs: { a: '1' } });
    const s = await call(peer.apiUrl, 'GET', '/9/stream/keyvals/');
    assert.deepEqual(JSON.parse(s.text), { tcp: { s: '2' } });
  });

  it('a stream zone works under /stream/keyvals/', async () => {
    peer.zone('tcp').clear();
    assert.equal((await call(peer.apiUrl, 'POST', '/9/stream/keyvals/tcp', '{"k":"v"}')).status, 201);
    assert.equal((await call(peer.apiUrl, 'PATCH', '/9/stream/keyvals/tcp', '{"k":"w"}')).status, 204);
    assert.deepEqual(Object.fromEntries(peer.zone('tcp')), { k: 'w' });
  });

  it('an older version listed by the peer serves the same API', async () => {
    peer.zone('certs').clear();
    assert.equal((await call(peer.apiUrl, 'POST', '/6/http/keyvals/certs', '{"k":"v"}')).status, 201);
    assert.deepEqual(Object.fromEntries(peer.zone('certs')), { k: 'v' });
  });

  it('the request log holds method, path and status, never a body', async () => {
    peer.zone('certs').clear();
    const secret = 'not-in-the-log-' + 'x'.repeat(8);
    await call(peer.apiUrl, 'POST', Z, JSON.stringify({ k: secret }));
    const last = peer.requests.at(-1);
    assert.deepEqual(last, { method: 'POST', path: `/api${Z}`, status: 201 });
    assert.ok(!JSON.stringify(peer.requests).includes(secret));
  });
});

describe('nginx-plus peer: api write=off', () => {
  let peer: NginxPlusPeer;
  before(async () => {
    peer = await startNginxPlusPeer({ write: false });
  });
  after(() => peer.close());

  for (const [method, body] of [['POST', '{"a":"1"}'], ['PATCH', '{"a":"1"}'], ['DELETE', undefined]] as const) {
    it(`${method} answers 405 MethodDisabled and changes nothing`, async () => {
      peer.zone('certs').set('a', '0');
      assertNginxError(await call(peer.apiUrl, method, Z, body), 405, 'MethodDisabled');
      assert.deepEqual(Object.fromEntries(peer.zone('certs')), { a: '0' });
    });
  }

  it('GET still works', async () => {
    peer.zone('certs').set('a', '0');
    assert.equal((await call(peer.apiUrl, 'GET', Z)).status, 200);
  });
});

describe('nginx-plus peer: zone timeout and expire', () => {
  let clock = 1_000_000;
  let peer: NginxPlusPeer;
  before(async () => {
    peer = await startNginxPlusPeer({ zones: { certs: { timeout: 60_000 } }, now: () => clock });
  });
  after(() => peer.close());

  it('a value with its own expire goes at that time; others at the zone timeout', async () => {
    assert.equal((await call(peer.apiUrl, 'POST', Z, '{"short":{"value":"s","expire":1000}}')).status, 201);
    assert.equal((await call(peer.apiUrl, 'POST', Z, '{"long":"l"}')).status, 201);
    clock += 1001;
    assert.deepEqual(JSON.parse((await call(peer.apiUrl, 'GET', Z)).text), { long: 'l' });
    clock += 60_000;
    assert.deepEqual(JSON.parse((await call(peer.apiUrl, 'GET', Z)).text), {});
  });

  it('a PATCH renews the expiry', async () => {
    assert.equal((await call(peer.apiUrl, 'POST', Z, '{"k":"1"}')).status, 201);
    clock += 50_000;
    assert.equal((await call(peer.apiUrl, 'PATCH', Z, '{"k":{"value":"2","expire":30000}}')).status, 204);
    clock += 20_000;
    assert.deepEqual(JSON.parse((await call(peer.apiUrl, 'GET', `${Z}?key=k`)).text), { k: '2' });
    clock += 10_001;
    assertNginxError(await call(peer.apiUrl, 'GET', `${Z}?key=k`), 404, 'KeyvalKeyNotFound');
  });
});

describe('nginx-plus peer: injected faults', () => {
  let peer: NginxPlusPeer;
  before(async () => {
    peer = await startNginxPlusPeer();
  });
  after(() => peer.close());

  it("'5xx' answers an error body and leaves the store alone", async () => {
    peer.zone('certs').clear();
    peer.inject({ kind: '5xx', count: 2 });
    assertNginxError(await call(peer.apiUrl, 'POST', Z, '{"a":"1"}'), 500, 'InternalError');
    assertNginxError(await call(peer.apiUrl, 'POST', Z, '{"a":"1"}'), 500, 'InternalError');
    assert.equal(peer.zone('certs').size, 0);
    assert.equal((await call(peer.apiUrl, 'POST', Z, '{"a":"1"}')).status, 201);
  });

  it("'down' closes the connection without an answer", async () => {
    peer.inject({ kind: 'down' });
    await assert.rejects(call(peer.apiUrl, 'GET', Z));
    assert.equal(peer.requests.at(-1)?.status, 0);
    assert.equal((await call(peer.apiUrl, 'GET', Z)).status, 200);
  });

  it("'methods' limits a fault to those methods", async () => {
    peer.zone('certs').clear();
    peer.inject({ kind: '5xx', methods: ['PATCH'], status: 503 });
    assert.equal((await call(peer.apiUrl, 'GET', '/')).status, 200);
    assert.equal((await call(peer.apiUrl, 'POST', Z, '{"a":"1"}')).status, 201);
    assertNginxError(await call(peer.apiUrl, 'PATCH', Z, '{"a":"2"}'), 503, 'InternalError');
  });

  it("'conflict-race': POST of a missing key answers 409; the racer's value is there; PATCH wins", async () => {
    peer.zone('certs').clear();
    peer.inject({ kind: 'conflict-race', raceValue: 'theirs' });
    assert.equal((await call(peer.apiUrl, 'GET', '/')).status, 200, 'a GET does not use up the race');
    assertNginxError(await call(peer.apiUrl, 'POST', Z, '{"k":"ours"}'), 409, 'KeyvalKeyExists');
    assert.equal(peer.zone('certs').get('k'), 'theirs');
    assert.equal((await call(peer.apiUrl, 'PATCH', Z, '{"k":"ours"}')).status, 204);
    assert.equal(peer.zone('certs').get('k'), 'ours');
  });
});

describe('nginx-plus peer: unix socket', () => {
  const dir = mkdtempSync(join(tmpdir(), 'certd-nginx-plus-sock-'));
  let peer: NginxPlusPeer;
  before(async () => {
    peer = await startNginxPlusPeer({ unixSocket: join(dir, 'api.sock') });
  });
  after(async () => {
    await peer.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves the API over the socket', async () => {
    const text = await new Promise<string>((resolve, reject) => {
      const req = httpRequest({ socketPath: peer.socketPath, path: '/api/', method: 'GET' }, (res) => {
        let s = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (s += c));
        res.on('end', () => resolve(s));
      });
      req.on('error', reject);
      req.end();
    });
    assert.deepEqual(JSON.parse(text), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });
});

describe('nginx-plus peer: TLS from the zone by SNI (ssl_certificate data:$var)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'certd-nginx-plus-tls-'));
  let peer: NginxPlusPeer;
  let first: SelfSigned;
  let second: SelfSigned;
  let fallback: SelfSigned;
  const fingerprint = (c: SelfSigned): string =>
    openssl(['x509', '-noout', '-fingerprint', '-sha256', '-in', c.certPath]).trim().split('=')[1] ?? '';

  before(async () => {
    first = makeSelfSigned(dir, { cn: 'web.example.com', sans: ['web.example.com'], keyType: 'ec' });
    second = makeSelfSigned(dir, { cn: 'web.example.com', sans: ['web.example.com'], keyType: 'rsa' });
    fallback = makeSelfSigned(dir, { cn: 'fallback.invalid', keyType: 'ec' });
    peer = await startNginxPlusPeer({ zones: { certs: {} } });
  });
  after(async () => {
    await peer.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('presents the pushed certificate, then the replaced one right after a PATCH', async () => {
    const tls = await peer.startTls({ zone: 'certs' });
    try {
      const v1 = first.keyPem + first.certPem;
      assert.equal((await call(peer.apiUrl, 'POST', Z, JSON.stringify({ 'web.example.com': v1 }))).status, 201);
      const h1 = await handshake({ port: tls.port, servername: 'web.example.com' });
      assert.equal(h1.fingerprint256, fingerprint(first));
      assert.equal(h1.subjectCN, 'web.example.com');

      const v2 = second.keyPem + second.certPem;
      assert.equal((await call(peer.apiUrl, 'PATCH', Z, JSON.stringify({ 'web.example.com': v2 }))).status, 204);
      const h2 = await handshake({ port: tls.port, servername: 'web.example.com' });
      assert.equal(h2.fingerprint256, fingerprint(second));
      assert.notEqual(h2.fingerprint256, h1.fingerprint256);
    } finally {
      await tls.close();
    }
  });

  it('fails the handshake for a name the zone lacks, or after the key is deleted', async () => {
    const tls = await peer.startTls({ zone: 'certs' });
    try {
      peer.zone('certs').clear();
      peer.zone('certs').set('web.example.com', first.keyPem + first.certPem);
      await assert.rejects(handshake({ port: tls.port, servername: 'other.example.com' }));
      assert.equal((await call(peer.apiUrl, 'PATCH', Z, '{"web.example.com":null}')).status, 204);
      await assert.rejects(handshake({ port: tls.port, servername: 'web.example.com' }));
    } finally {
      await tls.close();
    }
  });

  it('fails the handshake when the value holds a key that does not match its certificate', async () => {
    const tls = await peer.startTls({ zone: 'certs' });
    try {
      peer.zone('certs').set('web.example.com', second.keyPem + first.certPem);
      await assert.rejects(handshake({ port: tls.port, servername: 'web.example.com' }));
    } finally {
      await tls.close();
    }
  });

  it('serves the fallback for unknown names when one is given', async () => {
    const tls = await peer.startTls({ zone: 'certs', fallback: { cert: fallback.certPem, key: fallback.keyPem } });
    try {
      peer.zone('certs').clear();
      peer.zone('certs').set('web.example.com', first.keyPem + first.certPem);
      const h = await handshake({ port: tls.port, servername: 'other.example.com' });
      assert.equal(h.fingerprint256, fingerprint(fallback));
      const w = await handshake({ port: tls.port, servername: 'web.example.com' });
      assert.equal(w.fingerprint256, fingerprint(first));
    } finally {
      await tls.close();
    }
  });
});
