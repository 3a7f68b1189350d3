// The pkcs11-ca issuer: CA keys (RSA-2048, P-256, P-384) inside a real SoftHSM2 token sign
// leaves that chain to the CA certificates (checked by `openssl verify`), pass the policy and
// are served by a real nginx; renewal happens at 2/3 of the lifetime on a fake clock.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { FakeClock } from '../../src/clock.js';
import { loadConfig } from '../../src/config.js';
import { isIssuer } from '../../src/contracts.js';
import { silentLogger } from '../../src/log.js';
import { runCycle } from '../../src/rotate.js';
import { buildRuntime, type Runtime } from '../../src/runtime.js';
import { requireNginx, startNginx, type RunningNginx } from '../helpers/nginx.js';
import { makeCa, type KeyType, type TestCa } from '../helpers/openssl-ca.js';
import { createSoftHsm, type SoftHsm } from '../helpers/softhsm.js';
import { handshake, makeSelfSigned, openssl } from '../helpers/tls.js';

const PIN = '90817263';
const HOUR = 3_600_000;

interface CaCase {
  name: string;
  keyType: KeyType;
  leafKey: string;
  host: string;
  ca?: TestCa;
  port?: number;
}

const cases: CaCase[] = [
  { name: 'rsa-ca', keyType: 'rsa-2048', leafKey: 'ec-p256', host: 'rsa.ca.certd.test' },
  { name: 'p256-ca', keyType: 'ec-p256', leafKey: 'rsa-2048', host: 'p256.ca.certd.test' },
  { name: 'p384-ca', keyType: 'ec-p384', leafKey: 'ec-p384', host: 'p384.ca.certd.test' },
];

let base: string;
let hsm: SoftHsm;
let nginx: RunningNginx;
let anchors: string;

function deployDir(c: CaCase): string {
  return join(base, 'deploy', c.name);
}

function writeConfig(file: string, certificates: Record<string, unknown>[]): string {
  const path = join(base, file);
  writeFileSync(path, stringify({ state_dir: join(base, 'state', file), policy: { trust_anchors: anchors }, renew_before: '30d', certificates }));
  return path;
}

function caSource(c: CaCase, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: 'pkcs11-ca',
    module: hsm.module,
    token_label: 'ca',
    pin_env: 'CERTD_TEST_CA_PIN',
    ca_key_label: `${c.name}-key`,
    ca_cert_label: `${c.name}-cert`,
    dns_names: [c.host],
    ttl: '24h',
    key: c.leafKey,
    ...over,
  };
}

async function runtime(config: string, clock: FakeClock): Promise<Runtime> {
  return buildRuntime(loadConfig(config, {}), { log: silentLogger, clock, env: { ...process.env, CERTD_TEST_CA_PIN: PIN } });
}

before(async () => {
  requireNginx();
  base = mkdtempSync('/dev/shm/certd-pkcs11-ca-');
  hsm = createSoftHsm(join(base, 'hsm'));
  hsm.initToken('ca', '5566778899', PIN);
  process.env['SOFTHSM2_CONF'] = hsm.conf;
  cases.forEach((c, i) => {
    c.ca = makeCa(base, `certd ${c.name} test root`, c.keyType);
    const id = `0${i + 1}`;
    hsm.importKey('ca', PIN, c.ca.keyPem, id, `${c.name}-key`);
    hsm.importCert('ca', PIN, c.ca.certPem, id, `${c.name}-cert`);
  });
  anchors = join(base, 'anchors.pem');
  writeFileSync(anchors, cases.map((c) => c.ca!.certPem).join(''));

  const bootstrap = makeSelfSigned(base, { cn: 'bootstrap.certd.test' });
  nginx = await startNginx({
    prefix: join(base, 'nginx'),
    servers: cases.map((c) => ({ serverName: c.host, body: `ssl_certificate ${bootstrap.certPath};\nssl_certificate_key ${bootstrap.keyPath};` })),
  });
  cases.forEach((c, i) => (c.port = nginx.ports[i]!));
  nginx.writeConfig(
    cases.map((c) => ({
      serverName: c.host,
      port: c.port!,
      body: `ssl_certificate ${join(deployDir(c), 'fullchain.pem')};\nssl_certificate_key ${join(deployDir(c), 'privkey.pem')};\nssl_protocols TLSv1.2 TLSv1.3;`,
    })),
  );
});

after(async () => {
  await nginx?.stop();
  if (base) rmSync(base, { recursive: true, force: true });
});

describe('pkcs11-ca: CA keys in the token', () => {
  it('issues leaves signed in the token that chain to the CA, pass the policy, are served by nginx and renew at 2/3 of their lifetime', async () => {
    const config = writeConfig(
      'issue.yaml',
      cases.map((c) => ({
        name: c.name,
        source: caSource(c),
        targets: [{ type: 'tmpfs', dir: deployDir(c) }],
        reload: { command: nginx.reloadCommand, test: nginx.testCommand },
        verify: { connect: `127.0.0.1:${c.port}`, servername: c.host },
      })),
    );
    const clock = new FakeClock(new Date());
    const rt = await runtime(config, clock);
    try {
      const first = await runCycle(rt);
      for (const c of cases) {
        const r = first.certificates.find((x) => x.name === c.name);
        assert.equal(r?.result, 'deployed', `${c.name}: ${JSON.stringify(r?.error ?? r?.findings)}`);
        assert.deepEqual(r?.findings?.filter((f) => f.severity === 'reject') ?? [], []);
        assert.match(r?.origin ?? '', new RegExp(`^pkcs11-ca:ca/${c.name}-key$`));
        // An independent verifier: the leaf chains to the CA certificate from the token.
        const out = openssl(['verify', '-CAfile', c.ca!.certPath, '-purpose', 'sslserver', join(deployDir(c), 'cert.pem')]);
        assert.match(out, /: OK/);
        const text = openssl(['x509', '-in', join(deployDir(c), 'cert.pem'), '-noout', '-text']);
        const alg = c.keyType === 'rsa-2048' ? 'sha256WithRSAEncryption' : c.keyType === 'ec-p256' ? 'ecdsa-with-SHA256' : 'ecdsa-with-SHA384';
        assert.match(text, new RegExp(`Signature Algorithm: ${alg}`));
        const hs = await handshake({ port: c.port!, servername: c.host, ca: c.ca!.certPem });
        assert.equal(hs.fingerprint256, r?.fingerprint);
        assert.equal(hs.authorized, true, `${c.name}: the served chain verifies against the CA`);
      }

      // Due at 2/3 of the lifetime (renew_before 30d is longer than a 24h certificate).
      const cert = rt.certificates.find((c) => c.name === 'rsa-ca')!;
      assert.ok(isIssuer(cert.source));
      const deployed = (await rt.state.get('rsa-ca')).lastGood!;
      const nb = new Date(deployed.notBefore).getTime();
      const na = new Date(deployed.notAfter).getTime();
      const due = cert.source.dueAt(deployed);
      assert.equal(due.getTime(), nb + ((na - nb) * 2) / 3);

      await clock.advance(15 * HOUR);
      const early = await runCycle(rt, { only: 'rsa-ca' });
      assert.equal(early.certificates[0]?.result, 'unchanged');
      assert.match(early.certificates[0]?.reason ?? '', /not due until/);

      clock.set(due.getTime() + 1000);
      const renewed = await runCycle(rt);
      for (const c of cases) {
        const r = renewed.certificates.find((x) => x.name === c.name);
        const before = first.certificates.find((x) => x.name === c.name);
        assert.equal(r?.result, 'deployed', `${c.name}: ${JSON.stringify(r?.error)}`);
        assert.notEqual(r?.fingerprint, before?.fingerprint);
        const at = String(Math.floor(clock.now().getTime() / 1000));
        assert.match(openssl(['verify', '-attime', at, '-CAfile', c.ca!.certPath, join(deployDir(c), 'cert.pem')]), /: OK/);
        const hs = await handshake({ port: c.port!, servername: c.host });
        assert.equal(hs.fingerprint256, r?.fingerprint, `${c.name}: nginx serves the renewed leaf`);
      }
      const leaf = readFileSync(join(deployDir(cases[0]!), 'privkey.pem'), 'utf8');
      assert.match(leaf, /BEGIN PRIVATE KEY/, 'the leaf key is software-made and deployed to tmpfs');
    } finally {
      await rt.close();
    }
  });

  it('refuses a CA key that does not belong to the CA certificate, naming both labels', async () => {
    const [, p256, p384] = cases;
    const config = writeConfig('mismatch.yaml', [
      { name: 'mixed', source: caSource(p256!, { ca_key_label: 'p384-ca-key' }), targets: [{ type: 'tmpfs', dir: join(base, 'deploy', 'mixed') }] },
      { name: 'kinds', source: caSource(p384!, { ca_key_label: 'rsa-ca-key' }), targets: [{ type: 'tmpfs', dir: join(base, 'deploy', 'kinds') }] },
      { name: 'absent', source: caSource(p256!, { ca_cert_label: 'no-such-cert' }), targets: [{ type: 'tmpfs', dir: join(base, 'deploy', 'absent') }] },
    ]);
    const rt = await runtime(config, new FakeClock(new Date()));
    try {
      const r = await runCycle(rt);
      const by = (n: string) => r.certificates.find((c) => c.name === n);
      assert.equal(by('mixed')?.result, 'failed');
      assert.match(by('mixed')?.error?.message ?? '', /CA key "p384-ca-key" .* does not belong to CA certificate "p256-ca-cert"/);
      assert.match(by('kinds')?.error?.message ?? '', /CA key "rsa-ca-key" .* is RSA but CA certificate "p384-ca-cert" holds an EC key/);
      assert.match(by('absent')?.error?.message ?? '', /certificate \(CKO_CERTIFICATE\) labelled "no-such-cert" .* not found/);
    } finally {
      await rt.close();
    }
  });
});
