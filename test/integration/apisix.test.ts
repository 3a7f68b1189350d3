/**
 * certd's apisix target against the APISIX Admin API peer, in-process (buildRuntime + runCycle,
 * as the daemon runs cycles): upload (201), replace (200), the object served by SNI, rollback
 * after a failed verification (the previous certificate is served again), an honest failure when
 * the previous key cannot be known, 401 with a wrong key, and a 400 whose body echoes the request
 * never reaching a log line. One CLI run shows the same upload as a user would do it.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { runCycle, type CycleReport } from '../../src/rotate.js';
import { buildRuntime } from '../../src/runtime.js';
import { runCertd, shmDir, writeConfig } from '../helpers/cli.js';
import { TestPki } from '../helpers/pki.js';
import { handshake, makeSelfSigned } from '../helpers/tls.js';
import { startApisixPeer, type ApisixPeer } from '../peers/apisix-peer.js';
import type { TlsListener } from '../peers/peer-kit.js';

const API_KEY = 'edd1c9f034335f136f87ad84b625c8f1';
const KEY_ENV = 'CERTD_TEST_APISIX_KEY';
const SNI = 'api.apisix.certd.test';

describe('apisix target', () => {
  const scratch = shmDir('apisix');
  const dir = scratch.dir;
  const logLines: string[] = [];
  const log = createLogger({ level: 'debug', format: 'json', write: (l) => void logLines.push(l) });
  let pki: TestPki;
  let peer: ApisixPeer;
  let tls: TlsListener;
  let decoy: TlsServer;
  let decoyPort = 0;
  let served = '';

  const issue = (name: string, dns: string[]) => pki.publish(pki.leaf(`${name}-${Date.now()}-${Math.random().toString(16).slice(2, 6)}`, { dns }), join(dir, 'src', name));
  const marker = join(dir, 'reload-ran');
  const config = (o: { name?: string; id?: string; verifyPort?: number; snis?: string[]; extra?: string } = {}) => {
    const name = o.name ?? 'gw';
    const src = join(dir, 'src', name);
    return writeConfig(
      dir,
      `state_dir: ${join(dir, 'state')}
policy: { trust_anchors: ${pki.root.certPath} }
certificates:
  - name: ${name}
    source: { type: file, cert: ${join(src, 'cert.pem')}, key: ${join(src, 'key.pem')}, chain: ${join(src, 'chain.pem')} }
    targets:
      - { type: apisix, url: "${peer.url}", api_key_env: ${KEY_ENV}${o.id ? `, id: ${o.id}` : ''}${o.snis ? `, snis: ${JSON.stringify(o.snis)}` : ''}${o.extra ?? ''} }
    verify: { connect: "127.0.0.1:${o.verifyPort ?? tls.port}", servername: ${SNI}, timeout: 1s }
    # APISIX needs no reload: a command that leaves a trace (and fails) proves none ran.
    reload: { command: ["/bin/sh", "-c", "touch ${marker}; exit 1"] }
`,
      `${name}.yaml`,
    );
  };
  const cycle = async (path: string, key = API_KEY): Promise<CycleReport> => {
    const env = { ...process.env, [KEY_ENV]: key };
    const rt = await buildRuntime(loadConfig(path, env), { log, env });
    try {
      return await runCycle(rt);
    } finally {
      await rt.close();
    }
  };
  const servedNow = async () => (await handshake({ port: tls.port, servername: SNI })).fingerprint256;

  before(async () => {
    pki = new TestPki(join(dir, 'pki'));
    peer = await startApisixPeer({ apiKey: API_KEY });
    tls = await peer.startTls();
    const other = makeSelfSigned(dir, { cn: SNI });
    decoy = createTlsServer({ key: other.keyPem, cert: other.certPem }, (s) => s.end());
    await new Promise<void>((resolve) => decoy.listen(0, '127.0.0.1', resolve));
    decoyPort = (decoy.address() as AddressInfo).port;
  });

  after(async () => {
    await new Promise<void>((resolve) => decoy.close(() => resolve()));
    await peer.close();
    scratch.cleanup();
    const all = logLines.join('');
    assert.ok(!all.includes('PRIVATE KEY'), 'a private key reached a log line');
    assert.ok(!all.includes(API_KEY), 'the API key reached a log line');
  });

  it('uploads a new SSL object (201) and APISIX serves it by SNI', async () => {
    issue('gw', [SNI]);
    const n = peer.requests.length;
    const report = await cycle(config());
    const c = report.certificates[0]!;
    assert.equal(c.result, 'deployed', JSON.stringify(c.error));
    assert.deepEqual(peer.requests.slice(n).map((q) => `${q.method} ${q.path} ${q.status}`), [
      'GET /apisix/admin/ssls/gw 404',
      'PUT /apisix/admin/ssls/gw 201',
      'GET /apisix/admin/ssls/gw 200',
    ]);
    assert.deepEqual(peer.ssl('gw')?.snis, [SNI]);
    assert.equal(await servedNow(), c.fingerprint);
    assert.deepEqual(report.reloads, []);
    served = c.fingerprint!;
  });

  it('replaces it (200) on rotation; the new leaf is served at once', async () => {
    issue('gw', [SNI]);
    const n = peer.requests.length;
    const report = await cycle(config());
    const c = report.certificates[0]!;
    assert.equal(c.result, 'deployed', JSON.stringify(c.error));
    assert.ok(peer.requests.slice(n).some((q) => q.method === 'PUT' && q.status === 200));
    assert.notEqual(c.fingerprint, served);
    assert.equal(await servedNow(), c.fingerprint);
    served = c.fingerprint!;
  });

  it('a failed verification re-PUTs the previous material: the previous leaf is served again', async () => {
    const previousCert = peer.ssl('gw')!.cert;
    issue('gw', [SNI]);
    const n = peer.requests.length;
    // verify looks at a listener that serves some other certificate, so it must fail.
    const report = await cycle(config({ verifyPort: decoyPort }));
    const c = report.certificates[0]!;
    assert.equal(c.result, 'failed');
    assert.equal(c.error?.code, 'E_VERIFY');
    const puts = peer.requests.slice(n).filter((q) => q.method === 'PUT');
    assert.deepEqual(puts.map((q) => q.status), [200, 200], 'the new object, then the previous one');
    assert.equal(peer.ssl('gw')!.cert, previousCert);
    assert.equal(await servedNow(), served);
    assert.deepEqual(report.reloads, [], 'neither the deployment nor its rollback needs a reload');
    assert.ok(!existsSync(marker), 'the reload command ran');
  });

  it('when the previous key is unknowable, rollback fails saying so (the new object stays)', async () => {
    // An object someone else wrote: the Admin API never hands its key back.
    const foreign = pki.leaf(`foreign-${Date.now()}`, { dns: ['foreign.apisix.certd.test'] });
    const res = await fetch(`${peer.url}/apisix/admin/ssls/foreign`, {
      method: 'PUT',
      headers: { 'x-api-key': API_KEY, 'content-type': 'application/json' },
      body: JSON.stringify({ cert: foreign.certPem, key: readFileSync(foreign.keyPath, 'utf8'), snis: ['foreign.apisix.certd.test'] }),
    });
    assert.equal(res.status, 201);
    issue('fx', [SNI]);
    const before = logLines.length;
    const report = await cycle(config({ name: 'fx', id: 'foreign', verifyPort: decoyPort, snis: ['foreign.apisix.certd.test'] }));
    assert.equal(report.certificates[0]!.result, 'failed');
    const logs = logLines.slice(before).join('');
    assert.match(logs, /replacing SSL object foreign without a way back: the Admin API does not return the private key/);
    assert.match(logs, /rolling back fx in apisix .* ssl foreign: impossible: the Admin API does not return the private key of the existing object/);
    assert.notEqual(peer.ssl('foreign')!.cert, foreign.certPem, 'nothing was restored');
  });

  it('401 with a wrong key: "X-API-KEY rejected", nothing changed', async () => {
    const cert = peer.ssl('gw')!.cert;
    issue('gw', [SNI]);
    const report = await cycle(config(), 'not-the-admin-key');
    const c = report.certificates[0]!;
    assert.equal(c.result, 'failed');
    assert.match(c.error!.message, /X-API-KEY rejected: check the env var named by api_key_env \(CERTD_TEST_APISIX_KEY\)/);
    assert.ok(!c.error!.message.includes('not-the-admin-key'));
    assert.equal(peer.ssl('gw')!.cert, cert);
    assert.equal(await servedNow(), served);
  });

  it('a 400 is reported by its error_msg only', async () => {
    issue('gw', [SNI]);
    const report = await cycle(config({ snis: ['bad name!'] }));
    const c = report.certificates[0]!;
    assert.equal(c.result, 'failed');
    assert.match(c.error!.message, /PUT: 400 invalid configuration: property "snis" validation failed/);
    assert.ok(!c.error!.message.includes('BEGIN'));
    assert.equal(await servedNow(), served);
  });

  it('an answer larger than max_answer_bytes (50 MB, with and without Content-Length) fails the cycle before anything is written, and is not read to the end', async () => {
    const cert = peer.ssl('gw')!.cert;
    const lastGood = async (path: string) => {
      const s = await runCertd(['status', '--json', '--config', path], { env: { [KEY_ENV]: API_KEY } });
      return (JSON.parse(s.stdout) as { certificates: { name: string; fingerprint: string }[] }).certificates.find((c) => c.name === 'gw')?.fingerprint;
    };
    assert.equal(await lastGood(config()), served);
    for (const [contentLength, extra, cap] of [[true, '', 8 * 1024 * 1024], [false, '', 8 * 1024 * 1024], [false, ', max_answer_bytes: 1048576', 1024 * 1024]] as const) {
      peer.inject({ kind: 'huge', methods: ['GET'], bytes: 50_000_000, contentLength });
      issue('gw', [SNI]);
      const n = peer.requests.length;
      const report = await cycle(config({ extra }));
      const c = report.certificates[0]!;
      assert.equal(c.result, 'failed');
      assert.equal(c.error?.code, 'E_TARGET');
      const msg = c.error!.message;
      assert.match(msg, new RegExp(`^deploying gw to apisix ${peer.url.replace(/\./g, '\\.')} ssl gw: the answer to GET /apisix/admin/ssls/gw is larger than max_answer_bytes \\(${cap} bytes\\)`), msg);
      assert.match(msg, contentLength ? /Content-Length: 50000000/ : new RegExp(`more than ${cap} bytes arrived`), msg);
      assert.match(msg, /raise max_answer_bytes/, msg);
      assert.ok(!msg.includes(API_KEY));
      assert.deepEqual(peer.requests.slice(n).map((q) => q.method), ['GET'], 'nothing is written after the refused answer');
      const written = await peer.hugeAnswers.at(-1)!.done;
      assert.ok(written < 25_000_000, `the peer wrote ${written} of 50,000,000 bytes before certd hung up`);
      if (contentLength) assert.ok(written < cap, `refused on Content-Length, yet the peer wrote ${written} bytes`);
      assert.equal(peer.ssl('gw')!.cert, cert, 'the object holds what was deployed before');
      assert.equal(await servedNow(), served);
      assert.equal(await lastGood(config()), served, 'the last good deployment is still the one recorded');
    }
  });

  it('through the CLI: rotate --now uploads with the key from the environment', async () => {
    issue('cli', ['cli.apisix.certd.test']);
    const path = writeConfig(
      dir,
      `state_dir: ${join(dir, 'state')}
policy: { trust_anchors: ${pki.root.certPath} }
certificates:
  - name: cli
    source: { type: file, cert: ${join(dir, 'src', 'cli', 'cert.pem')}, key: ${join(dir, 'src', 'cli', 'key.pem')}, chain: ${join(dir, 'src', 'cli', 'chain.pem')} }
    targets:
      - { type: apisix, url: "${peer.url}", api_key_env: ${KEY_ENV} }
`,
      'cli.yaml',
    );
    const r = await runCertd(['rotate', '--now', '--config', path, '--json'], { env: { [KEY_ENV]: API_KEY } });
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as CycleReport;
    assert.equal(report.certificates[0]!.result, 'deployed');
    assert.equal((await handshake({ port: tls.port, servername: 'cli.apisix.certd.test' })).fingerprint256, report.certificates[0]!.fingerprint);
    assert.ok(!(r.stdout + r.stderr).includes('PRIVATE KEY'));
    assert.ok(!(r.stdout + r.stderr).includes(API_KEY));
  });
});
