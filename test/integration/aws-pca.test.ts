// The aws-private-ca issuer end to end: `bin/certd rotate --now` as a child process makes the
// leaf key in memory, sends its CSR to the AWS peer's ACM PCA (IssueCertificate, then
// GetCertificate, through certd's own SigV4 JSON 1.1 client) and deploys to tmpfs. Cold issue
// for EC P-256/P-384 and RSA 2048/3072 leaves (each checked by `openssl verify` against the
// peer's CA and by the signing algorithm asked for), an unchanged cycle that issues nothing,
// RequestInProgressException waited out, throttling retried, access denied naming the IAM
// action, refused choices named by policy rule, renewal at 2/3 of the lifetime on a fake clock,
// and the key on disk only in the target and in no output.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { FakeClock } from '../../src/clock.js';
import { loadConfig } from '../../src/config.js';
import { isIssuer } from '../../src/contracts.js';
import { silentLogger } from '../../src/log.js';
import { runCycle } from '../../src/rotate.js';
import { buildRuntime } from '../../src/runtime.js';
import { registerSecret } from '../helpers/capture.js';
import { runCertd, shmDir } from '../helpers/cli.js';
import { openssl } from '../helpers/tls.js';
import { startAwsPeer, type AwsPeer } from '../peers/aws-peer.js';
import { awsEnv } from './aws-fixtures.js';

const ISSUE = 'ACMPrivateCA.IssueCertificate';
const GET = 'ACMPrivateCA.GetCertificate';

interface Case {
  name: string;
  ca: 'ec-p256' | 'ec-p384' | 'rsa-2048';
  signing: string;
  key: string;
  /** What `openssl x509 -text` prints for the leaf's key and the CA's signature. */
  keyText: RegExp;
  sigText: string;
}

const cases: Case[] = [
  { name: 'p256', ca: 'ec-p256', signing: 'SHA256WITHECDSA', key: 'ec-p256', keyText: /Public-Key: \(256 bit\)[\s\S]*NIST CURVE: P-256/, sigText: 'ecdsa-with-SHA256' },
  { name: 'p384', ca: 'ec-p384', signing: 'SHA384WITHECDSA', key: 'ec-p384', keyText: /Public-Key: \(384 bit\)[\s\S]*NIST CURVE: P-384/, sigText: 'ecdsa-with-SHA384' },
  { name: 'rsa2048', ca: 'rsa-2048', signing: 'SHA256WITHRSA', key: 'rsa-2048', keyText: /Public-Key: \(2048 bit\)/, sigText: 'sha256WithRSAEncryption' },
  { name: 'rsa3072', ca: 'rsa-2048', signing: 'SHA384WITHRSA', key: 'rsa-3072', keyText: /Public-Key: \(3072 bit\)/, sigText: 'sha384WithRSAEncryption' },
];

type Report = { ok: boolean; certificates: { name: string; result: string; version?: string; fingerprint?: string; reason?: string; error?: { code: string; message: string } }[] };

describe('aws-private-ca issuer with bin/certd', { timeout: 240_000 }, () => {
  const scratch = shmDir('pca');
  const dir = scratch.dir;
  const deploy = (n: string) => join(dir, 'deploy', n);
  let peer: AwsPeer;
  const cas: Record<string, { arn: string; certPem: string; certPath: string }> = {};
  let anchors: string;
  const outputs: string[] = [];
  // The peer's clock: the wall clock, or the fake clock of the renewal test.
  let peerNow: () => number = Date.now;

  const entry = (c: Case, over: Record<string, unknown> = {}) => ({
    name: c.name,
    source: { type: 'aws-private-ca', ca_arn: cas[c.ca]!.arn, signing_algorithm: c.signing, key: c.key, dns_names: [`${c.name}.pca.certd.test`], ttl: '24h', endpoint: peer.url, ...over },
    targets: [{ type: 'tmpfs', dir: deploy(c.name) }],
  });
  const config = (certificates: Record<string, unknown>[], file = 'config.yaml'): string => {
    const path = join(dir, file);
    writeFileSync(path, stringify({ state_dir: join(dir, 'state'), policy: { trust_anchors: anchors }, renew_before: '30d', certificates }));
    return path;
  };
  const rotate = async (cfg: string, extra: string[] = []) => {
    const r = await runCertd(['rotate', '--now', '--config', cfg, '--json', ...extra], { env: awsEnv(peer) });
    outputs.push(r.stdout, r.stderr);
    let report: Report | undefined;
    try {
      report = JSON.parse(r.stdout) as Report;
    } catch {
      report = undefined;
    }
    assert.ok(!/PRIVATE KEY/.test(r.stdout + r.stderr), 'no key block in any output');
    return { ...r, report };
  };
  const fingerprintOf = (name: string) => new X509Certificate(readFileSync(join(deploy(name), 'cert.pem'))).fingerprint256;

  before(async () => {
    peer = await startAwsPeer({ now: () => peerNow() });
    for (const t of ['ec-p256', 'ec-p384', 'rsa-2048'] as const) cas[t] = peer.pca.createCa(t);
    anchors = join(dir, 'anchors.pem');
    writeFileSync(anchors, Object.values(cas).map((c) => c.certPem).join(''));
  });

  after(async () => {
    assert.deepEqual(peer?.internalErrors.map((e) => e.message) ?? [], []);
    await peer?.close();
    scratch.cleanup();
  });

  it('cold issue: EC P-256/P-384 and RSA 2048/3072 leaves, one IssueCertificate and one GetCertificate each, chaining to the CA', async () => {
    peer.resetCalls();
    const r = await rotate(config(cases.map((c) => entry(c))));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    for (const c of cases) {
      const got = r.report!.certificates.find((x) => x.name === c.name)!;
      assert.equal(got.result, 'deployed', `${c.name}: ${JSON.stringify(got.error)}`);
      const certPath = join(deploy(c.name), 'cert.pem');
      assert.match(openssl(['verify', '-CAfile', cas[c.ca]!.certPath, '-purpose', 'sslserver', certPath]), /: OK/);
      const text = openssl(['x509', '-in', certPath, '-noout', '-text']);
      assert.match(text, c.keyText, `${c.name}: the leaf key is the configured type`);
      assert.match(text, new RegExp(`Signature Algorithm: ${c.sigText}`), `${c.name}: signed with ${c.signing}`);
      assert.match(text, new RegExp(`DNS:${c.name}\\.pca\\.certd\\.test`));
      const key = readFileSync(join(deploy(c.name), 'privkey.pem'), 'utf8');
      registerSecret('private-key', key);
      assert.equal(statSync(join(deploy(c.name), 'privkey.pem')).mode & 0o777, 0o600);
      assert.ok(createPublicKey(createPrivateKey(key)).export({ type: 'spki', format: 'der' }).equals(new X509Certificate(readFileSync(certPath)).publicKey.export({ type: 'spki', format: 'der' })));
      assert.equal(readFileSync(join(deploy(c.name), 'chain.pem'), 'utf8').trim(), cas[c.ca]!.certPem.trim());
      assert.equal(got.version, `serial:${new X509Certificate(readFileSync(certPath)).serialNumber.toLowerCase()}`);
    }
    assert.deepEqual({ ...peer.calls }, { [ISSUE]: 4, [GET]: 4 });
    assert.deepEqual({ ...peer.rejected }, {}, 'SigV4 under the signing name acm-pca was accepted');
    const issued = peer.pca.issued.slice(-4);
    assert.deepEqual(issued.map((i) => i.signingAlgorithm).sort(), cases.map((c) => c.signing).sort());
    assert.ok(issued.every((i) => i.validity.Type === 'DAYS' && i.validity.Value === 1), 'ttl 24h asked as 1 DAYS');
    assert.ok(issued.every((i) => typeof i.idempotencyToken === 'string' && i.idempotencyToken.length === 32));
    assert.deepEqual(
      Object.fromEntries(issued.map((i) => [i.caArn === cas['rsa-2048']!.arn ? 'rsa' : 'ec', i.template])),
      { rsa: 'EndEntityCertificate/V1', ec: 'BlankEndEntityCertificate_APICSRPassthrough/V1' },
      'EC leaves use a CSR-passthrough template (EndEntityCertificate/V1 adds keyEncipherment, which P-KU refuses on EC)',
    );
  });

  it('an unchanged cycle in a fresh process issues nothing', async () => {
    peer.resetCalls();
    const r = await rotate(config(cases.map((c) => entry(c))));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    for (const c of r.report!.certificates) {
      assert.equal(c.result, 'unchanged');
      assert.match(c.reason ?? '', /not due until/);
    }
    assert.deepEqual({ ...peer.calls }, {});
  });

  it('RequestInProgressException from GetCertificate is waited out; one certificate is issued', async () => {
    const before = fingerprintOf('p256');
    const issuedBefore = peer.pca.issued.length;
    peer.resetCalls();
    peer.pca.inProgressCalls = 3;
    try {
      const r = await rotate(config(cases.map((c) => entry(c))), ['--cert', 'p256', '--force']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(r.report!.certificates[0]!.result, 'deployed');
      assert.deepEqual({ ...peer.calls }, { [ISSUE]: 1, [GET]: 4 }, 'three in-progress answers, then the certificate');
      assert.equal(peer.pca.issued.length, issuedBefore + 1);
      assert.notEqual(fingerprintOf('p256'), before);
    } finally {
      peer.pca.inProgressCalls = 0;
    }
  });

  it('throttling of IssueCertificate and GetCertificate is retried, and throttled requests issue nothing', async () => {
    const issuedBefore = peer.pca.issued.length;
    const before = fingerprintOf('rsa2048');
    peer.resetCalls();
    const i = peer.inject({ op: ISSUE, kind: 'throttle', count: 2 });
    const g = peer.inject({ op: GET, kind: 'throttle', count: 2 });
    try {
      const r = await rotate(config(cases.map((c) => entry(c))), ['--cert', 'rsa2048', '--force']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(r.report!.certificates[0]!.result, 'deployed');
      assert.equal(i.fired, 2);
      assert.equal(g.fired, 2);
      assert.deepEqual({ ...peer.throttled }, { [ISSUE]: 2, [GET]: 2 });
      assert.equal(peer.pca.issued.length, issuedBefore + 1);
      assert.notEqual(fingerprintOf('rsa2048'), before);
    } finally {
      peer.clearFaults();
    }
  });

  it('access denied names the IAM action, is not retried, and the deployed certificate stays', async () => {
    const c = cases[0]!;
    const before = fingerprintOf(c.name);
    peer.inject({ op: ISSUE, kind: 'denied', count: Infinity });
    try {
      peer.resetCalls();
      const r = await rotate(config(cases.map((x) => entry(x))), ['--cert', c.name, '--force']);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      const err = r.report!.certificates[0]!.error!;
      assert.equal(err.code, 'E_SOURCE');
      assert.match(err.message, /^issuing p256 with aws-private-ca:arn:aws:acm-pca:us-east-1:123456789012:certificate-authority\/[0-9a-f-]+: access denied: the role needs acm-pca:IssueCertificate on arn:aws:acm-pca:/);
      assert.equal(peer.calls[ISSUE], 1, 'permanent: not retried');
      assert.equal(fingerprintOf(c.name), before);
    } finally {
      peer.clearFaults();
    }
    peer.inject({ op: GET, kind: 'denied', count: Infinity });
    try {
      const r = await rotate(config(cases.map((x) => entry(x))), ['--cert', c.name, '--force']);
      assert.equal(r.code, 1);
      assert.match(r.report!.certificates[0]!.error!.message, /access denied: the role needs acm-pca:GetCertificate on arn:aws:acm-pca:.*\/certificate\/[0-9a-f]+/);
      assert.equal(fingerprintOf(c.name), before);
    } finally {
      peer.clearFaults();
    }
  });

  it('a signing algorithm of the wrong family and an unknown CA fail with what to check', async () => {
    const wrong = await rotate(config([entry(cases[0]!, { signing_algorithm: 'SHA256WITHRSA' })], 'wrong.yaml'), ['--force']);
    assert.equal(wrong.code, 1);
    assert.match(wrong.report!.certificates[0]!.error!.message, /the request was refused as invalid \(InvalidArgsException\): The signing algorithm SHA256WITHRSA is not compatible with the CA's EC key/);
    const missingArn = cas['ec-p256']!.arn.replace(/[0-9a-f]{12}$/, '000000000000');
    const missing = await rotate(config([{ ...entry(cases[0]!, { ca_arn: missingArn }), name: 'missing', targets: [{ type: 'tmpfs', dir: deploy('missing') }] }], 'missing.yaml'));
    assert.equal(missing.code, 1);
    assert.match(missing.report!.certificates[0]!.error!.message, /not found: arn:aws:acm-pca:.* does not exist \(check ca_arn and the region \(us-east-1\)\)/);
    assert.ok(!existsSync(join(deploy('missing'), 'cert.pem')));
  });

  it('refuses RSA 1024 and SHA-1 at config load, naming the policy rule (exit 2)', async () => {
    const rsa1024 = await rotate(config([entry(cases[2]!, { key: 'rsa-1024' })], 'rsa1024.yaml'));
    assert.equal(rsa1024.code, 2);
    assert.match(rsa1024.stderr + rsa1024.stdout, /key.*rsa-1024 breaks P-RSA-MIN/);
    const sha1 = await rotate(config([entry(cases[2]!, { signing_algorithm: 'SHA1WITHRSA' })], 'sha1.yaml'));
    assert.equal(sha1.code, 2);
    assert.match(sha1.stderr + sha1.stdout, /signing_algorithm.*SHA1WITHRSA breaks P-SIG-HASH/);
    assert.equal(peer.pca.issued.filter((i) => i.signingAlgorithm === 'SHA1WITHRSA').length, 0);
  });

  it('renews at 2/3 of the lifetime on a fake clock, not before', async () => {
    Object.assign(process.env, awsEnv(peer));
    const clock = new FakeClock(new Date());
    peerNow = () => clock.now().getTime();
    const rt = await buildRuntime(loadConfig(config(cases.map((c) => entry(c))), {}), { log: silentLogger, clock, env: process.env });
    try {
      const deployed = (await rt.state.get('p384')).lastGood!;
      const source = rt.certificates.find((c) => c.name === 'p384')!.source;
      assert.ok(isIssuer(source));
      const nb = new Date(deployed.notBefore).getTime();
      const na = new Date(deployed.notAfter).getTime();
      const due = source.dueAt(deployed);
      assert.equal(due.getTime(), nb + ((na - nb) * 2) / 3, 'renew_before 30d is longer than the lifetime: 2/3 applies');

      peer.resetCalls();
      clock.set(due.getTime() - 60_000);
      const early = await runCycle(rt, { only: 'p384' });
      assert.equal(early.certificates[0]?.result, 'unchanged');
      assert.match(early.certificates[0]?.reason ?? '', /not due until/);
      assert.deepEqual({ ...peer.calls }, {});

      const before = fingerprintOf('p384');
      clock.set(due.getTime() + 1000);
      const renewed = await runCycle(rt, { only: 'p384' });
      assert.equal(renewed.certificates[0]?.result, 'deployed', JSON.stringify(renewed.certificates[0]?.error));
      assert.notEqual(fingerprintOf('p384'), before);
      assert.deepEqual({ ...peer.calls }, { [ISSUE]: 1, [GET]: 1 });
      registerSecret('private-key', readFileSync(join(deploy('p384'), 'privkey.pem')));
    } finally {
      peerNow = Date.now;
      await rt.close();
    }
  });

  it('the key is on disk only in its target, and in no output or state file', () => {
    const keys = cases.map((c) => ({ name: c.name, body: keyBody(readFileSync(join(deploy(c.name), 'privkey.pem'), 'utf8')) }));
    // The whole scratch directory (state, configs, every target); the run's TMPDIR and its
    // outputs are scanned for these keys by zz-hygiene (they are registered as secrets).
    const places = [dir];
    for (const { name, body } of keys) {
      const holders = places.flatMap((p) => filesUnder(p)).filter((f) => {
        try {
          return readFileSync(f).includes(body);
        } catch {
          return false; // another process's file that went away meanwhile
        }
      });
      assert.ok(holders.length > 0, `${name}: found in its target`);
      for (const f of holders) assert.ok(f.startsWith(`${deploy(name)}/`) && f.endsWith('/privkey.pem'), `${name}: key found outside its target: ${f}`);
      for (const out of outputs) assert.ok(!out.includes(body), `${name}: key bytes in certd output`);
    }
  });
});

/** The base64 body of a PEM key, one line of it, enough to recognise the key anywhere. */
function keyBody(pem: string): string {
  const line = pem.split('\n').find((l) => /^[A-Za-z0-9+/]{64}$/.test(l));
  assert.ok(line, 'a full base64 line in the key');
  return line;
}

function filesUnder(path: string): string[] {
  let st;
  try {
    // lstat: a target's ..data symlink points at a versioned directory walked anyway.
    st = lstatSync(path);
  } catch {
    return [];
  }
  if (st.isFile()) return [path];
  if (!st.isDirectory()) return [];
  return readdirSync(path).flatMap((n) => filesUnder(join(path, n)));
}
