// Conformance of the APISIX Admin API peer with the 3.x SSL resource (shared/PROTOCOLS.md):
// 201 then 200, 401, the 400 cases, keys never echoed in clear, and a TLS listener that picks the
// uploaded SSL object by SNI at handshake time.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startApisixPeer } from '../peers/apisix-peer.js';
import type { ApisixPeer } from '../peers/apisix-peer.js';
import { handshake, makeSelfSigned, openssl } from '../helpers/tls.js';
import type { SelfSigned } from '../helpers/tls.js';

const API_KEY = 'edd1c9f034335f136f87ad84b625c8f1';
const SALT = 'edd1c9f0985e76a2';

interface Answer {
  status: number;
  text: string;
  json: Record<string, unknown>;
}

async function call(
  peer: ApisixPeer,
  method: string,
  path: string,
  body?: unknown,
  apiKey: string | null = API_KEY,
): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (apiKey !== null) headers['X-API-KEY'] = apiKey;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(`${peer.url}${path}`, {
    method,
    headers,
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, text, json: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

function noPlainKey(text: string, ...keys: SelfSigned[]): void {
  assert.ok(!text.includes('PRIVATE KEY'), 'a PEM private key header appears in the answer');
  for (const k of keys) {
    const b64 = k.keyPem.split('\n').filter((l) => l !== '' && !l.startsWith('-----')).join('');
    assert.ok(!text.includes(b64.slice(0, 40)), 'private key bytes appear in the answer');
  }
}

const fingerprintOf = (c: SelfSigned): string =>
  openssl(['x509', '-noout', '-fingerprint', '-sha256', '-in', c.certPath]).trim().split('=')[1] ?? '';

describe('apisix peer: Admin API /apisix/admin/ssls', () => {
  const dir = mkdtempSync(join(tmpdir(), 'certd-apisix-'));
  let peer: ApisixPeer;
  let web: SelfSigned;
  let web2: SelfSigned;
  let other: SelfSigned;

  before(async () => {
    web = makeSelfSigned(dir, { cn: 'web.example.com', sans: ['web.example.com'], keyType: 'ec' });
    web2 = makeSelfSigned(dir, { cn: 'web.example.com', sans: ['web.example.com'], keyType: 'rsa' });
    other = makeSelfSigned(dir, { cn: 'other.example.com', keyType: 'ec' });
    peer = await startApisixPeer({ apiKey: API_KEY });
  });
  after(async () => {
    await peer.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('PUT creates (201) then replaces (200), as {key, value}', async () => {
    const a = await call(peer, 'PUT', '/apisix/admin/ssls/web', { cert: web.certPem, key: web.keyPem, snis: ['web.example.com'] });
    assert.equal(a.status, 201);
    assert.equal(a.json['key'], '/apisix/ssls/web');
    const v1 = a.json['value'] as Record<string, unknown>;
    assert.equal(v1['id'], 'web');
    assert.equal(v1['cert'], web.certPem);
    assert.deepEqual(v1['snis'], ['web.example.com']);
    assert.equal(typeof v1['create_time'], 'number');

    const b = await call(peer, 'PUT', '/apisix/admin/ssls/web', { cert: web2.certPem, key: web2.keyPem, snis: ['web.example.com'] });
    assert.equal(b.status, 200);
    const v2 = b.json['value'] as Record<string, unknown>;
    assert.equal(v2['cert'], web2.certPem);
    assert.equal(v2['create_time'], v1['create_time'], 'a replace keeps create_time');
    assert.equal(peer.ssl('web')?.key, web2.keyPem);
  });

  it('the PUT answer carries the key encrypted as APISIX stores it (AES-128-CBC, base64), never in clear', async () => {
    const a = await call(peer, 'PUT', '/apisix/admin/ssls/enc', { cert: web.certPem, key: web.keyPem, snis: ['enc.example.com'] });
    assert.equal(a.status, 201);
    noPlainKey(a.text, web);
    const encrypted = (a.json['value'] as Record<string, unknown>)['key'];
    assert.equal(typeof encrypted, 'string');
    // Decrypted by the openssl CLI, the encrypted form is the key sent: the same format APISIX
    // decrypts with its key_encrypt_salt.
    const hex = Buffer.from(SALT).toString('hex');
    const clear = openssl(['enc', '-d', '-aes-128-cbc', '-K', hex, '-iv', hex, '-a', '-A'], encrypted as string);
    assert.ok(clear === web.keyPem, 'decrypted key differs from the key sent');
  });

  it('GET of one object leaves the key out; the list carries it encrypted only', async () => {
    await call(peer, 'PUT', '/apisix/admin/ssls/web', { cert: web.certPem, key: web.keyPem, snis: ['web.example.com'] });
    const one = await call(peer, 'GET', '/apisix/admin/ssls/web');
    assert.equal(one.status, 200);
    assert.equal(one.json['key'], '/apisix/ssls/web');
    const value = one.json['value'] as Record<string, unknown>;
    assert.equal(value['cert'], web.certPem);
    assert.ok(!('key' in value), 'GET returns the private key');
    noPlainKey(one.text, web, web2);

    const list = await call(peer, 'GET', '/apisix/admin/ssls');
    assert.equal(list.status, 200);
    assert.ok((list.json['total'] as number) >= 1);
    assert.ok(Array.isArray(list.json['list']));
    noPlainKey(list.text, web, web2);
  });

  it('401 {"error_msg":"failed to check token"} on a missing or wrong key, store untouched', async () => {
    const before = peer.ssl('web')?.cert;
    for (const key of [null, 'wrong']) {
      const a = await call(peer, 'PUT', '/apisix/admin/ssls/web', { cert: other.certPem, key: other.keyPem, snis: ['web.example.com'] }, key);
      assert.equal(a.status, 401);
      assert.deepEqual(a.json, { error_msg: 'failed to check token' });
      const g = await call(peer, 'GET', '/apisix/admin/ssls/web', undefined, key);
      assert.equal(g.status, 401);
    }
    assert.equal(peer.ssl('web')?.cert, before);
  });

  const invalid: { name: string; body: () => unknown; msg: RegExp }[] = [
    { name: 'missing cert', body: () => ({ key: web.keyPem, snis: ['x.example.com'] }), msg: /invalid configuration: property "cert" is required/ },
    { name: 'missing key', body: () => ({ cert: web.certPem, snis: ['x.example.com'] }), msg: /invalid configuration: property "key" is required/ },
    { name: 'missing snis', body: () => ({ cert: web.certPem, key: web.keyPem }), msg: /invalid configuration/ },
    { name: 'empty snis', body: () => ({ cert: web.certPem, key: web.keyPem, snis: [] }), msg: /invalid configuration: property "snis"/ },
    { name: 'a bad SNI', body: () => ({ cert: web.certPem, key: web.keyPem, snis: ['bad name'] }), msg: /invalid configuration: property "snis"/ },
    { name: 'cert and key not matching', body: () => ({ cert: web.certPem, key: other.keyPem, snis: ['x.example.com'] }), msg: /key and cert do not match/ },
    { name: 'an unparseable cert', body: () => ({ cert: '-----BEGIN CERTIFICATE-----\n' + 'A'.repeat(200) + '\n-----END CERTIFICATE-----\n', key: web.keyPem, snis: ['x.example.com'] }), msg: /failed to parse cert/ },
    { name: 'an unparseable key', body: () => ({ cert: web.certPem, key: pemBlock('PRIVATE KEY', 'A'.repeat(200)), snis: ['x.example.com'] }), msg: /failed to parse key/ },
    { name: 'certs without keys', body: () => ({ cert: web.certPem, key: web.keyPem, snis: ['x.example.com'], certs: [other.certPem] }), msg: /mismatched number of certs and keys/ },
    { name: 'an id in the body that differs from the path', body: () => ({ id: 'y', cert: web.certPem, key: web.keyPem, snis: ['x.example.com'] }), msg: /wrong ssl id/ },
    { name: 'invalid JSON', body: () => '{"cert":', msg: /invalid request body/ },
  ];
  for (const row of invalid) {
    it(`400 {"error_msg"} for ${row.name}, nothing stored`, async () => {
      const a = await call(peer, 'PUT', '/apisix/admin/ssls/x', row.body());
      assert.equal(a.status, 400);
      assert.equal(typeof a.json['error_msg'], 'string');
      assert.match(a.json['error_msg'] as string, row.msg);
      assert.equal(peer.ssl('x'), undefined);
    });
  }

  it('the 2.x path /apisix/admin/ssl/{id} is 404 on 3.x', async () => {
    const a = await call(peer, 'PUT', '/apisix/admin/ssl/old', { cert: web.certPem, key: web.keyPem, snis: ['web.example.com'] });
    assert.equal(a.status, 404);
    assert.match(a.json['error_msg'] as string, /Unsupported resource type: ssl/);
    assert.equal(peer.ssl('old'), undefined);
  });

  it('DELETE removes the object; a second DELETE and a GET are 404', async () => {
    await call(peer, 'PUT', '/apisix/admin/ssls/gone', { cert: other.certPem, key: other.keyPem, snis: ['other.example.com'] });
    const d = await call(peer, 'DELETE', '/apisix/admin/ssls/gone');
    assert.equal(d.status, 200);
    assert.deepEqual(d.json, { deleted: '1', key: '/apisix/ssls/gone' });
    assert.equal((await call(peer, 'DELETE', '/apisix/admin/ssls/gone')).status, 404);
    assert.equal((await call(peer, 'GET', '/apisix/admin/ssls/gone')).status, 404);
  });

  it("faults: '5xx' answers 503 with error_msg and stores nothing; 'down' drops the connection", async () => {
    peer.inject({ kind: '5xx' });
    const a = await call(peer, 'PUT', '/apisix/admin/ssls/f', { cert: web.certPem, key: web.keyPem, snis: ['f.example.com'] });
    assert.equal(a.status, 503);
    assert.equal(typeof a.json['error_msg'], 'string');
    assert.equal(peer.ssl('f'), undefined);
    peer.inject({ kind: 'down' });
    await assert.rejects(call(peer, 'GET', '/apisix/admin/ssls'));
    assert.equal(peer.requests.at(-1)?.status, 0);
    assert.equal((await call(peer, 'GET', '/apisix/admin/ssls')).status, 200);
  });

  it('the request log holds no bodies', async () => {
    assert.ok(peer.requests.length > 0);
    noPlainKey(JSON.stringify(peer.requests), web, web2, other);
  });
});

describe('apisix peer: TLS by SNI', () => {
  const dir = mkdtempSync(join(tmpdir(), 'certd-apisix-tls-'));
  let peer: ApisixPeer;
  let web: SelfSigned;
  let web2: SelfSigned;
  let wild: SelfSigned;
  let fallback: SelfSigned;

  before(async () => {
    web = makeSelfSigned(dir, { cn: 'web.example.com', keyType: 'ec' });
    web2 = makeSelfSigned(dir, { cn: 'web.example.com', keyType: 'rsa' });
    wild = makeSelfSigned(dir, { cn: '*.example.com', sans: ['*.example.com'], keyType: 'ec' });
    fallback = makeSelfSigned(dir, { cn: 'fallback.invalid', keyType: 'ec' });
    peer = await startApisixPeer({ apiKey: API_KEY });
  });
  after(async () => {
    await peer.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('presents the uploaded certificate for its SNI, and the replacement right after a second PUT', async () => {
    const tls = await peer.startTls();
    try {
      assert.equal((await call(peer, 'PUT', '/apisix/admin/ssls/web', { cert: web.certPem, key: web.keyPem, snis: ['web.example.com'] })).status, 201);
      const h1 = await handshake({ port: tls.port, servername: 'web.example.com' });
      assert.equal(h1.fingerprint256, fingerprintOf(web));
      assert.equal((await call(peer, 'PUT', '/apisix/admin/ssls/web', { cert: web2.certPem, key: web2.keyPem, snis: ['web.example.com'] })).status, 200);
      const h2 = await handshake({ port: tls.port, servername: 'web.example.com' });
      assert.equal(h2.fingerprint256, fingerprintOf(web2));
      // SNI is matched case-insensitively, as APISIX lowercases the server name.
      const h3 = await handshake({ port: tls.port, servername: 'WEB.Example.com' });
      assert.equal(h3.fingerprint256, fingerprintOf(web2));
    } finally {
      await tls.close();
    }
  });

  it('a wildcard SNI covers exactly one label; an exact SNI wins over it', async () => {
    const tls = await peer.startTls();
    try {
      assert.equal((await call(peer, 'PUT', '/apisix/admin/ssls/wild', { cert: wild.certPem, key: wild.keyPem, snis: ['*.example.com'] })).status, 201);
      const a = await handshake({ port: tls.port, servername: 'api.example.com' });
      assert.equal(a.fingerprint256, fingerprintOf(wild));
      await assert.rejects(handshake({ port: tls.port, servername: 'a.b.example.com' }));
      await assert.rejects(handshake({ port: tls.port, servername: 'example.com' }));
      const exact = await handshake({ port: tls.port, servername: 'web.example.com' });
      assert.notEqual(exact.fingerprint256, fingerprintOf(wild));
    } finally {
      await tls.close();
    }
  });

  it('unknown names get the fallback when given, else the handshake fails; a deleted object stops serving', async () => {
    const withFallback = await peer.startTls({ fallback: { cert: fallback.certPem, key: fallback.keyPem } });
    const without = await peer.startTls();
    try {
      const h = await handshake({ port: withFallback.port, servername: 'nothing.test' });
      assert.equal(h.fingerprint256, fingerprintOf(fallback));
      await assert.rejects(handshake({ port: without.port, servername: 'nothing.test' }));
      assert.equal((await call(peer, 'DELETE', '/apisix/admin/ssls/wild')).status, 200);
      await assert.rejects(handshake({ port: without.port, servername: 'api.example.com' }));
    } finally {
      await withFallback.close();
      await without.close();
    }
  });

  it('with checkPairMatch false (APISIX as it is) a mismatched pair is accepted and its handshake fails', async () => {
    const lax = await startApisixPeer({ apiKey: API_KEY, checkPairMatch: false });
    const tls = await lax.startTls();
    try {
      const a = await call(lax, 'PUT', '/apisix/admin/ssls/bad', { cert: web.certPem, key: web2.keyPem, snis: ['web.example.com'] });
      assert.equal(a.status, 201);
      await assert.rejects(handshake({ port: tls.port, servername: 'web.example.com' }));
    } finally {
      await lax.close();
    }
  });
});

/** A PEM block built at run time (no key-looking literal in the source). */
function pemBlock(label: string, body: string): string {
  return `-----BEGIN ${label}-----\n${body}\n-----END ${label}-----\n`;
}
