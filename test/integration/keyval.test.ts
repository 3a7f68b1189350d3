/**
 * certd's nginx-plus-keyval target against the NGINX Plus API peer, driven through the real CLI
 * (`certd rotate --now --json` as a child process): first deployment (POST 201), rotation (409,
 * then PATCH 204), read-back, the new leaf served by SNI from the zone, all-keys rollback when one
 * key fails mid-way, the API being down, the operator errors (405, 413, unknown zone), pruning
 * with PATCH null, the state= warning, and no reload ever run.
 *
 * Between certd and the peer sits a plain forwarding proxy owned by the test: it can be stopped
 * (a real "connection refused") and restarted on the same port, and it can arm a fault in the
 * peer just before a chosen request arrives (the second key's write).
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type ServerOptions as HttpsOptions } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCertd, shmDir, writeConfig, type CliResult } from '../helpers/cli.js';
import { nginxPlusKeyvalTarget } from '../../providers/nginx-plus-keyval.js';
import { systemClock } from '../../src/clock.js';
import { isClosable, type ProviderDeps } from '../../src/contracts.js';
import { silentLogger } from '../../src/log.js';
import { TestPki } from '../helpers/pki.js';
import { handshake, makeSelfSigned } from '../helpers/tls.js';
import { startNginxPlusPeer, type NginxPlusPeer } from '../peers/nginx-plus-peer.js';
import type { TlsListener } from '../peers/peer-kit.js';

interface Report {
  ok: boolean;
  certificates: { name: string; result: string; fingerprint?: string; error?: { code: string; message: string } }[];
  reloads: unknown[];
}

/** A forwarding HTTP proxy to `target` that can go down and come back on the same port. */
class Proxy {
  port = 0;
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();
  /** Called with each request before it is forwarded (body parsed when JSON). */
  onRequest: ((method: string, path: string, body: unknown) => void) | undefined;

  constructor(
    readonly target: string,
    readonly tls?: HttpsOptions,
  ) {}

  get url(): string {
    return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const target = new URL(this.target);
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const raw = Buffer.concat(chunks);
        let body: unknown;
        try {
          body = raw.length > 0 ? JSON.parse(raw.toString('utf8')) : undefined;
        } catch {
          body = undefined;
        }
        this.onRequest?.(req.method ?? 'GET', req.url ?? '/', body);
        const out = httpRequest(
          { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: { ...req.headers, connection: 'close' } },
          (up) => {
            res.writeHead(up.statusCode ?? 502, up.headers);
            up.pipe(res);
          },
        );
        out.on('error', () => res.destroy());
        out.end(raw);
      });
    };
    const server: Server = this.tls ? createHttpsServer(this.tls, handler) : createServer(handler);
    server.on(this.tls ? 'secureConnection' : 'connection', (s: Socket) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', resolve);
    });
    this.port = (server.address() as AddressInfo).port;
    this.#server = server;
  }

  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const s of this.#sockets) s.destroy();
    });
  }
}

const A = 'a.keyval.certd.test';
const B = 'b.keyval.certd.test';

function parseReport(r: CliResult): Report {
  try {
    return JSON.parse(r.stdout) as Report;
  } catch {
    throw new Error(`rotate printed no JSON report (exit ${String(r.code)}): ${r.stderr.slice(-2000)}`);
  }
}

/** Nothing certd printed may carry key material. */
function assertNoKeyMaterial(r: CliResult, zoneValues: Iterable<string>): void {
  const all = r.stdout + r.stderr;
  assert.ok(!all.includes('PRIVATE KEY'), 'a PEM private key header appears in certd output');
  for (const v of zoneValues) {
    const keyB64 = /-{5}BEGIN PRIVATE KEY-{5}\n([A-Za-z0-9+/=\n]+?)\n-{5}END/.exec(v)?.[1]?.replace(/\n/g, '');
    if (keyB64) assert.ok(!all.includes(keyB64.slice(0, 32)), 'private key bytes appear in certd output');
  }
}

describe('nginx-plus-keyval target through certd rotate --now', () => {
  const scratch = shmDir('keyval');
  const dir = scratch.dir;
  const marker = join(dir, 'reload-ran');
  const fakeNginx = join(dir, 'fake-nginx');
  let peer: NginxPlusPeer;
  let proxy: Proxy;
  let tls: TlsListener;
  let deployed = '';
  let pki: TestPki;
  /** Publishes a fresh leaf for `name` where its file source reads. */
  const issue = (name: string, dns: string[]) => pki.publish(pki.leaf(`${name}-${Date.now()}-${Math.random().toString(16).slice(2, 6)}`, { dns }), join(dir, 'src', name));

  const certBlock = (name: string, dns: string[], target: string) => `  - name: ${name}
    source: { type: file, cert: ${join(dir, 'src', name, 'cert.pem')}, key: ${join(dir, 'src', name, 'key.pem')}, chain: ${join(dir, 'src', name, 'chain.pem')} }
    targets:
      - ${target}
    reload:
      command: ["/bin/sh", "-c", "touch ${marker}; exit 1"]
`;
  const head = () => `state_dir: ${join(dir, 'state')}
policy: { trust_anchors: ${pki.root.certPath} }
log: { level: info, format: json }
certificates:
`;
  const webTarget = (extra = '') => `{ type: nginx-plus-keyval, url: "${proxy.url}/api", zone: certs, nginx_binary: ${fakeNginx}${extra} }`;
  const rotate = async (config: string): Promise<{ r: CliResult; report: Report }> => {
    const r = await runCertd(['rotate', '--now', '--config', writeConfig(dir, config), '--json']);
    return { r, report: parseReport(r) };
  };
  const served = async (name: string) => (await handshake({ port: tls.port, servername: name })).fingerprint256;
  const zone = () => new Map(peer.zone('certs'));
  const since = (n: number) => peer.requests.slice(n).map((q) => `${q.method} ${q.path.replace(/^\/api\/\d+\/http\/keyvals\/certs/, 'Z')} ${q.status}`);

  before(async () => {
    pki = new TestPki(join(dir, 'pki'));
    peer = await startNginxPlusPeer();
    proxy = new Proxy(peer.url);
    await proxy.start();
    tls = await peer.startTls({ zone: 'certs' });
    // Stands in for `nginx -T` of an NGINX Plus whose zone is persisted to disk.
    writeFileSync(fakeNginx, '#!/bin/sh\n[ "$1" = "-T" ] || exit 2\necho "http { keyval_zone zone=certs:1m state=/var/lib/nginx/state/certs.json; }"\n');
    chmodSync(fakeNginx, 0o755);
  });

  after(async () => {
    await proxy.stop();
    await peer.close();
    scratch.cleanup();
  });

  it('first deployment: POST 201 per key, read back, served by SNI, no reload, state= warned', async () => {
    const n = peer.requests.length;
    issue('web', [A, B]);
    const { r, report } = await rotate(head() + certBlock('web', [A, B], webTarget()));
    assert.equal(r.code, 0, r.stderr);
    const cert = report.certificates[0]!;
    assert.equal(cert.result, 'deployed');
    const log = since(n);
    assert.ok(log.includes('GET /api/ 200'), `version discovery: ${log.join(', ')}`);
    assert.ok(log.includes(`GET Z?key=${A} 404`) && log.includes(`GET Z?key=${B} 404`), log.join(', '));
    assert.equal(log.filter((l) => l === 'POST Z 201').length, 2, log.join(', '));
    assert.equal(log.filter((l) => l === `GET Z?key=${A} 200`).length, 1, 'read-back of A');
    assert.ok(log.every((l) => !l.startsWith('DELETE')), 'DELETE empties the zone: never sent');
    const value = zone().get(A)!;
    assert.match(value, /^-{5}BEGIN PRIVATE KEY-{5}[\s\S]+-{5}END PRIVATE KEY-{5}\n-----BEGIN CERTIFICATE-----/);
    assert.equal(value.match(/BEGIN CERTIFICATE/g)?.length, 2, 'key, then leaf and chain');
    assert.equal(zone().get(B), value);
    assert.equal(await served(A), cert.fingerprint);
    assert.equal(await served(B), cert.fingerprint);
    assert.deepEqual(report.reloads, []);
    assert.ok(!existsSync(marker), 'the reload command ran');
    assert.match(r.stderr, /keyval zone \\"certs\\" is declared with state=\/var\/lib\/nginx\/state\/certs\.json/);
    assertNoKeyMaterial(r, zone().values());
    deployed = cert.fingerprint!;
  });

  it('rotation: 409 then PATCH 204 per key, read back, the new leaf served at once', async () => {
    const n = peer.requests.length;
    issue('web', [A, B]);
    const { r, report } = await rotate(head() + certBlock('web', [A, B], webTarget()));
    assert.equal(r.code, 0, r.stderr);
    const fp = report.certificates[0]!.fingerprint!;
    assert.notEqual(fp, deployed);
    const log = since(n);
    for (const k of [A, B]) {
      const i = log.indexOf(`GET Z?key=${k} 200`);
      assert.ok(i >= 0, log.join(', '));
    }
    assert.deepEqual(log.filter((l) => /^(POST|PATCH)/.test(l)), ['POST Z 409', 'PATCH Z 204', 'POST Z 409', 'PATCH Z 204']);
    // Each write is followed by a read-back of that key.
    const patches = log.map((l, i) => (l === 'PATCH Z 204' ? i : -1)).filter((i) => i >= 0);
    assert.equal(log[patches[0]! + 1], `GET Z?key=${A} 200`);
    assert.equal(log[patches[1]! + 1], `GET Z?key=${B} 200`);
    assert.equal(await served(A), fp);
    assert.equal(await served(B), fp);
    assert.ok(!existsSync(marker), 'the reload command ran');
    assertNoKeyMaterial(r, zone().values());
    deployed = fp;
  });

  it('a 5xx on the second key rolls every key back: the zone holds the previous values exactly', async () => {
    const before = zone();
    proxy.onRequest = (method, _path, body) => {
      if (method === 'POST' && body && typeof body === 'object' && B in body) {
        proxy.onRequest = undefined;
        peer.inject({ kind: '5xx', status: 500 });
      }
    };
    const n = peer.requests.length;
    issue('web', [A, B]);
    const { r, report } = await rotate(head() + certBlock('web', [A, B], webTarget()));
    proxy.onRequest = undefined;
    assert.equal(r.code, 1);
    const cert = report.certificates[0]!;
    assert.equal(cert.result, 'failed');
    assert.match(cert.error!.message, /writing key b\.keyval\.certd\.test \(POST\): 500 InternalError/);
    assert.match(cert.error!.message, /every key of the certificate was restored/);
    const log = since(n);
    assert.ok(log.includes('POST Z 500'), log.join(', '));
    assert.deepEqual(zone(), before, 'the zone must hold exactly the values from before the cycle');
    assert.equal(await served(A), deployed);
    assert.ok(!existsSync(marker), 'the reload command ran');
    assertNoKeyMaterial(r, [...zone().values()]);
  });

  it('API down: the last good values stay, rotate exits 1 naming the url; the next cycle deploys', async () => {
    const before = zone();
    await proxy.stop();
    issue('web', [A, B]);
    const down = await rotate(head() + certBlock('web', [A, B], webTarget()));
    assert.equal(down.r.code, 1);
    const msg = down.report.certificates[0]!.error!.message;
    assert.match(msg, new RegExp(`connection refused at ${proxy.url.replace(/\./g, '\\.')}/api`));
    assert.deepEqual(zone(), before);
    assert.equal(await served(A), deployed);

    await proxy.start();
    issue('web', [A, B]);
    const back = await rotate(head() + certBlock('web', [A, B], webTarget()));
    assert.equal(back.r.code, 0, back.r.stderr);
    const fp = back.report.certificates[0]!.fingerprint!;
    assert.notEqual(fp, deployed);
    assert.equal(await served(A), fp);
    assert.equal(await served(B), fp);
    deployed = fp;
  });

  it('an emptied zone (NGINX Plus restarted without state=) is filled again although nothing changed', async () => {
    const unchanged = await rotate(head() + certBlock('web', [A, B], webTarget()));
    assert.equal(unchanged.report.certificates[0]!.result, 'unchanged');
    const n = peer.requests.length;
    peer.zone('certs')!.clear();
    const refill = await rotate(head() + certBlock('web', [A, B], webTarget()));
    assert.equal(refill.r.code, 0, refill.r.stderr);
    assert.equal(refill.report.certificates[0]!.result, 'deployed');
    assert.equal(refill.report.certificates[0]!.fingerprint, deployed);
    assert.deepEqual(since(n).filter((l) => /^(POST|PATCH)/.test(l)), ['POST Z 201', 'POST Z 201']);
    assert.equal(await served(A), deployed);
    assert.equal(await served(B), deployed);
  });

  it('operator errors name the fix: 405 api write=on, 413 client_body_buffer_size, 404 keyval_zone', async () => {
    const readOnly = await startNginxPlusPeer({ write: false });
    const small = await startNginxPlusPeer({ maxBodyBytes: 512 });
    try {
      for (const n of ['ro', 'big', 'nozone']) issue(n, [`${n}.keyval.certd.test`]);
      const config = head() +
        certBlock('ro', ['ro.keyval.certd.test'], `{ type: nginx-plus-keyval, url: "${readOnly.apiUrl}", zone: certs }`) +
        certBlock('big', ['big.keyval.certd.test'], `{ type: nginx-plus-keyval, url: "${small.apiUrl}", zone: certs }`) +
        certBlock('nozone', ['nozone.keyval.certd.test'], `{ type: nginx-plus-keyval, url: "${peer.apiUrl}", zone: nope }`);
      const { r, report } = await rotate(config);
      assert.equal(r.code, 1);
      const err = (name: string) => report.certificates.find((c) => c.name === name)!.error!.message;
      assert.match(err('ro'), /405 MethodDisabled\): add "api write=on;" to the location/);
      assert.match(err('big'), /refused the \d+-byte request body \(413\): raise client_body_buffer_size in the api location to at least \d+k/);
      // A 4xx is a refusal that changed nothing: no restore is attempted or claimed.
      assert.match(err('ro'), /; nothing was changed in the zone$/);
      assert.match(err('big'), /; nothing was changed in the zone$/);
      assert.match(err('nozone'), /zone "nope" does not exist \(404 KeyvalNotFound\): declare "keyval_zone zone=nope:1m;" in the http block/);
      assert.equal(readOnly.zone('certs').size, 0);
      assert.equal(small.zone('certs').size, 0);
      assert.ok(!existsSync(marker), 'the reload command ran');
      assertNoKeyMaterial(r, []);
    } finally {
      await readOnly.close();
      await small.close();
    }
  });

  it('an answer larger than max_answer_bytes (50 MB, with and without Content-Length) fails the cycle, keeps the deployed values, and is not read to the end', async () => {
    const big = await startNginxPlusPeer();
    const H = 'huge.keyval.certd.test';
    try {
      const config = (extra = '') => head() + certBlock('huge', [H], `{ type: nginx-plus-keyval, url: "${big.apiUrl}", zone: certs${extra} }`);
      issue('huge', [H]);
      const first = await rotate(config());
      assert.equal(first.r.code, 0, first.r.stderr);
      const fp = first.report.certificates[0]!.fingerprint!;
      const before = new Map(big.zone('certs'));
      const status = async () => {
        const s = await runCertd(['status', '--json', '--config', writeConfig(dir, config())]);
        return (JSON.parse(s.stdout) as { certificates: { name: string; fingerprint: string }[] }).certificates.find((c) => c.name === 'huge')?.fingerprint;
      };
      assert.equal(await status(), fp);
      // The default cap (8 MiB), then a configured one.
      for (const [contentLength, extra, cap] of [[true, '', 8 * 1024 * 1024], [false, '', 8 * 1024 * 1024], [false, ', max_answer_bytes: 1048576', 1024 * 1024]] as const) {
        big.inject({ kind: 'huge', methods: ['GET'], pathIncludes: '?key=', bytes: 50_000_000, contentLength });
        issue('huge', [H]);
        const { r, report } = await rotate(config(extra));
        assert.equal(r.code, 1, r.stderr);
        const cert = report.certificates[0]!;
        assert.equal(cert.result, 'failed');
        assert.equal(cert.error?.code, 'E_TARGET');
        const msg = cert.error!.message;
        assert.match(msg, new RegExp(`^deploying huge to nginx-plus-keyval ${big.apiUrl.replace(/\./g, '\\.')} zone certs: `), msg);
        assert.match(msg, /the answer to GET \/api\/9\/http\/keyvals\/certs /, msg);
        assert.ok(!msg.includes('?key='), `the query is left out of the message: ${msg}`);
        assert.match(msg, new RegExp(`larger than max_answer_bytes \\(${cap} bytes\\)`), msg);
        assert.match(msg, contentLength ? /Content-Length: 50000000/ : new RegExp(`more than ${cap} bytes arrived`), msg);
        assert.match(msg, /raise max_answer_bytes/, msg);
        const answer = big.hugeAnswers.at(-1)!;
        assert.equal(answer.contentLength, contentLength);
        const written = await answer.done;
        assert.ok(written < 25_000_000, `the peer wrote ${written} of 50,000,000 bytes before certd hung up`);
        if (contentLength) assert.ok(written < cap, `refused on Content-Length, yet the peer wrote ${written} bytes`);
        assert.deepEqual(new Map(big.zone('certs')), before, 'the zone holds what was deployed before');
        assert.equal(await status(), fp, 'the last good deployment is still the one recorded');
        assertNoKeyMaterial(r, before.values());
      }
    } finally {
      await big.close();
    }
  });

  it('prune: keys of a certificate no longer configured go by PATCH null; the rest of the zone stays', async () => {
    const OLD = 'old.keyval.certd.test';
    issue('web', [A, B]);
    issue('old', [OLD]);
    const both = head() + certBlock('web', [A, B], webTarget()) + certBlock('old', [OLD], webTarget());
    const first = await rotate(both);
    assert.equal(first.r.code, 0, first.r.stderr);
    assert.ok(zone().has(OLD));
    peer.zone('certs').set('written-by-someone-else', 'keep me');
    const record = readFileSync(join(dir, 'state', 'nginx-plus-keyval.json'), 'utf8');
    assert.ok(record.includes(OLD) && !record.includes('BEGIN'), 'the record holds names only');

    // Without prune nothing is removed.
    issue('web', [A, B]);
    const noPrune = await rotate(head() + certBlock('web', [A, B], webTarget()));
    assert.equal(noPrune.r.code, 0, noPrune.r.stderr);
    assert.ok(zone().has(OLD));

    const n = peer.requests.length;
    issue('web', [A, B]);
    const pruned = await rotate(head() + certBlock('web', [A, B], webTarget(', prune: true')));
    assert.equal(pruned.r.code, 0, pruned.r.stderr);
    const log = since(n);
    assert.ok(!zone().has(OLD), 'the stale key is gone');
    assert.deepEqual([...zone().keys()].sort(), [A, B, 'written-by-someone-else'].sort());
    assert.equal(zone().get('written-by-someone-else'), 'keep me');
    assert.ok(log.every((l) => !l.startsWith('DELETE')), 'DELETE empties the zone: never sent');
    assert.equal(log.filter((l) => l === 'PATCH Z 204').length, 3, `two upserts and one prune: ${log.join(', ')}`);
    assert.ok(!readFileSync(join(dir, 'state', 'nginx-plus-keyval.json'), 'utf8').includes(OLD));
    assert.equal(await served(A), pruned.report.certificates[0]!.fingerprint);
  });

  it('many certificates in one cycle: each key is on the record file before its POST, and the record ends listing all', async () => {
    const names = Array.from({ length: 24 }, (_, i) => `many${i}`);
    for (const name of names) issue(name, [`${name}.keyval.certd.test`]);
    const recordPath = join(dir, 'state', 'nginx-plus-keyval.json');
    const unrecorded: string[] = [];
    let posts = 0;
    proxy.onRequest = (method, _path, body) => {
      if (method !== 'POST' || !body || typeof body !== 'object') return;
      posts++;
      const record = existsSync(recordPath) ? readFileSync(recordPath, 'utf8') : '';
      for (const key of Object.keys(body)) if (!record.includes(`"${key}"`)) unrecorded.push(key);
    };
    try {
      const { r, report } = await rotate(head() + names.map((n) => certBlock(n, [`${n}.keyval.certd.test`], webTarget())).join(''));
      assert.equal(r.code, 0, r.stderr);
      assert.equal(report.certificates.filter((c) => c.result === 'deployed').length, names.length);
    } finally {
      proxy.onRequest = undefined;
    }
    assert.equal(posts, names.length);
    assert.deepEqual(unrecorded, [], 'a crash after a POST must find its key on the record (to prune or restore it)');
    const zones = (JSON.parse(readFileSync(recordPath, 'utf8')) as { zones: Record<string, Record<string, string[]>> }).zones;
    const recorded = Object.values(zones).flatMap((z) => Object.entries(z));
    for (const name of names) assert.deepEqual(recorded.find(([cert]) => cert === name)?.[1], [`${name}.keyval.certd.test`], name);
    for (const name of names) assert.ok(zone().get(`${name}.keyval.certd.test`)?.includes('BEGIN CERTIFICATE'), name);
  });

  it('deployment() reports zone, keys (from the record), API version and the state= finding', async () => {
    const values = new Map<string, unknown>();
    const deps: ProviderDeps = {
      clock: systemClock,
      log: silentLogger,
      stateDir: join(dir, 'state'),
      env: process.env,
      shared: <T>(k: string, init: () => T): T => (values.has(k) ? values.get(k) : (values.set(k, init()), values.get(k))) as T,
      resolvePath: (p) => p,
    };
    const config = nginxPlusKeyvalTarget.schema.parse({ type: 'nginx-plus-keyval', url: `${proxy.url}/api`, zone: 'certs', nginx_binary: fakeNginx });
    const t = nginxPlusKeyvalTarget.create(config, deps, { name: 'web', hostnames: [], renewBeforeMs: 0 });
    assert.equal(t.needsReload, false);
    assert.deepEqual(await t.deployment(), {
      type: 'nginx-plus-keyval',
      url: `${proxy.url}/api`,
      section: 'http',
      zone: 'certs',
      keys: [A, B],
      apiVersion: 9,
      zoneDeclared: true,
      persistedTo: '/var/lib/nginx/state/certs.json',
    });
    for (const v of values.values()) if (isClosable(v)) await v.close();
  });

  it('a unix socket url (unix:/path.sock:/api) and a stream zone', async () => {
    const sock = join(dir, 'api.sock');
    const unixPeer = await startNginxPlusPeer({ unixSocket: sock, zones: { tcp: { stream: true } } });
    try {
      issue('sock', ['sock.keyval.certd.test']);
      const { r, report } = await rotate(head() + certBlock('sock', ['sock.keyval.certd.test'], `{ type: nginx-plus-keyval, url: "unix:${sock}:/api", zone: tcp, stream: true }`));
      assert.equal(r.code, 0, r.stderr);
      assert.equal(report.certificates[0]!.result, 'deployed');
      assert.ok(unixPeer.zone('tcp').get('sock.keyval.certd.test')?.includes('BEGIN CERTIFICATE'));
      assert.ok(unixPeer.requests.some((q) => q.method === 'POST' && q.path === '/api/9/stream/keyvals/tcp' && q.status === 201));
    } finally {
      await unixPeer.close();
    }
  });

  it('https with ca, client_cert and client_key (mutual TLS to the api location)', async () => {
    const server = makeSelfSigned(dir, { cn: '127.0.0.1', sans: ['127.0.0.1'] });
    const client = makeSelfSigned(dir, { cn: 'certd-client' });
    const https = new Proxy(peer.url, { key: server.keyPem, cert: server.certPem, ca: client.certPem, requestCert: true, rejectUnauthorized: true });
    await https.start();
    try {
      const tlsTarget = (extra: string) => `{ type: nginx-plus-keyval, url: "${https.url}/api", zone: certs, ca: ${server.certPath}${extra} }`;
      issue('mtls', ['mtls.keyval.certd.test']);
      const refused = await rotate(head() + certBlock('mtls', ['mtls.keyval.certd.test'], tlsTarget('')));
      assert.equal(refused.r.code, 1);
      assert.match(refused.report.certificates[0]!.error!.message, new RegExp(`talking to ${https.url.replace(/\./g, '\\.')}/api|closed without an answer`));
      const { r, report } = await rotate(head() + certBlock('mtls', ['mtls.keyval.certd.test'], tlsTarget(`, client_cert: ${client.certPath}, client_key: ${client.keyPath}`)));
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await served('mtls.keyval.certd.test'), report.certificates[0]!.fingerprint);
      // The API's certificate is checked: without the right ca the connection is refused.
      const other = makeSelfSigned(dir, { cn: 'other-ca' });
      issue('mtls', ['mtls.keyval.certd.test']);
      const untrusted = await rotate(head() + certBlock('mtls', ['mtls.keyval.certd.test'], `{ type: nginx-plus-keyval, url: "${https.url}/api", zone: certs, ca: ${other.certPath}, client_cert: ${client.certPath}, client_key: ${client.keyPath} }`));
      assert.equal(untrusted.r.code, 1);
      assert.match(untrusted.report.certificates[0]!.error!.message, /certificate|self.signed|verify/i);
    } finally {
      await https.stop();
    }
  });

  it('plain http to a non-loopback host is a configuration error (keys would cross the network in clear)', async () => {
    issue('far', ['far.keyval.certd.test']);
    const r = await runCertd(['rotate', '--now', '--config', writeConfig(dir, head() + certBlock('far', ['far.keyval.certd.test'], '{ type: nginx-plus-keyval, url: "http://nginx.example.com:8080/api", zone: certs }'))]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /plain http is allowed to loopback only/);
  });
});
