// The acm source end to end: `bin/certd rotate --now` as a child process reads the AWS peer's
// ACM (DescribeCertificate, ExportCertificate) through the real SDK and SigV4, decrypts the
// passphrase-encrypted PKCS#8 key in memory, and deploys to tmpfs. Cold and unchanged cycles
// (an unchanged cycle costs one DescribeCertificate and no export, also in a fresh process), a
// renewal (re-import under the same ARN) picked up, throttling retried, access denied naming the
// IAM action, a key the passphrase does not open, and no key bytes in any output.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { runCertd, shmDir } from '../helpers/cli.js';
import { TestPki, type Issued } from '../helpers/pki.js';
import { startAwsPeer, type AwsPeer } from '../peers/aws-peer.js';
import { awsEnv } from './aws-fixtures.js';

const DESCRIBE = 'CertificateManager.DescribeCertificate';
const EXPORT = 'CertificateManager.ExportCertificate';

describe('acm source with bin/certd', () => {
  const scratch = shmDir('acm');
  const dir = scratch.dir;
  const deploy = (n: string) => join(dir, 'deploy', n);
  let peer: AwsPeer;
  let pki: TestPki;
  let anchors: string;
  let arn: string;

  const importCert = async (leaf: Issued, certificateArn?: string): Promise<string> => {
    const out = (await peer.invoke('CertificateManager.ImportCertificate', {
      Certificate: Buffer.from(leaf.certPem).toString('base64'),
      PrivateKey: readFileSync(leaf.keyPath).toString('base64'),
      CertificateChain: Buffer.from(pki.intermediate.certPem).toString('base64'),
      ...(certificateArn ? { CertificateArn: certificateArn } : {}),
    })) as { CertificateArn: string };
    return out.CertificateArn;
  };

  const config = (certificates: Record<string, unknown>[], file = 'config.yaml'): string => {
    const path = join(dir, file);
    writeFileSync(path, stringify({ state_dir: join(dir, 'state'), policy: { trust_anchors: anchors }, certificates }));
    return path;
  };
  const entry = (name: string, certificateArn: string) => ({ name, source: { type: 'acm', certificate_arn: certificateArn, endpoint: peer.url }, targets: [{ type: 'tmpfs', dir: deploy(name) }] });

  const rotate = async (cfg: string, extra: string[] = []) => {
    const r = await runCertd(['rotate', '--now', '--config', cfg, '--json', ...extra], { env: awsEnv(peer) });
    let report: { ok: boolean; certificates: { name: string; result: string; version?: string; fingerprint?: string; reason?: string; error?: { code: string; message: string } }[] } | undefined;
    try {
      report = JSON.parse(r.stdout);
    } catch {
      report = undefined;
    }
    assert.ok(!/PRIVATE KEY/.test(r.stdout + r.stderr), 'no key block in any output');
    return { ...r, report };
  };

  const leaves: Record<string, Issued> = {};

  before(async () => {
    peer = await startAwsPeer();
    pki = new TestPki(join(dir, 'pki'));
    leaves['web'] = pki.leaf('acm-web', { dns: ['web.acm.certd.test'] });
    anchors = join(dir, 'anchors.pem');
    writeFileSync(anchors, pki.root.certPem);
    arn = await importCert(leaves['web']!);
  });

  after(async () => {
    assert.deepEqual(peer?.internalErrors ?? [], []);
    await peer?.close();
    scratch.cleanup();
  });

  it('cold cycle: one DescribeCertificate, one export, the decrypted key deployed', async () => {
    peer.resetCalls();
    const r = await rotate(config([entry('web', arn)]));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const c = r.report!.certificates[0]!;
    assert.equal(c.result, 'deployed');
    assert.equal(c.fingerprint, leaves['web']!.fingerprint);
    assert.deepEqual({ ...peer.calls }, { [DESCRIBE]: 1, [EXPORT]: 1 });
    assert.equal(peer.acm.exportsOf(arn), 1);
    const deployedKey = readFileSync(join(deploy('web'), 'privkey.pem'), 'utf8');
    assert.match(deployedKey, /^-{5}BEGIN PRIVATE KEY-{5}/, 'deployed decrypted (PKCS#8, no passphrase)');
    assert.ok(createPublicKey(createPrivateKey(deployedKey)).equals(createPublicKey(readFileSync(leaves['web']!.keyPath))));
    assert.equal(readFileSync(join(deploy('web'), 'cert.pem'), 'utf8'), leaves['web']!.certPem);
    // SigV4 was checked under the signing name acm (the peer rejects anything else).
    assert.deepEqual({ ...peer.rejected }, {});
  });

  it('unchanged cycle in a fresh process: one DescribeCertificate and no export', async () => {
    peer.resetCalls();
    const r = await rotate(config([entry('web', arn)]));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.report!.certificates[0]!.result, 'unchanged');
    assert.deepEqual({ ...peer.calls }, { [DESCRIBE]: 1 });
    assert.equal(peer.acm.exportsOf(arn), 1, 'never exported again');
  });

  it('a renewal in ACM (new serial under the same ARN) is exported once and deployed', async () => {
    leaves['web2'] = pki.leaf('acm-web2', { dns: ['web.acm.certd.test'] });
    await importCert(leaves['web2']!, arn);
    peer.acm.setRenewalStatus(arn, 'SUCCESS');
    peer.resetCalls();
    const r = await rotate(config([entry('web', arn)]));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const c = r.report!.certificates[0]!;
    assert.equal(c.result, 'deployed');
    assert.equal(c.fingerprint, leaves['web2']!.fingerprint);
    assert.deepEqual({ ...peer.calls }, { [DESCRIBE]: 1, [EXPORT]: 1 });
    assert.ok(createPublicKey(readFileSync(join(deploy('web'), 'privkey.pem'))).equals(createPublicKey(readFileSync(leaves['web2']!.keyPath))));
    const again = await rotate(config([entry('web', arn)]));
    assert.equal(again.report!.certificates[0]!.result, 'unchanged');
    assert.equal(peer.acm.exportsOf(arn), 2);
  });

  it('throttling of DescribeCertificate and ExportCertificate is retried', async () => {
    leaves['web3'] = pki.leaf('acm-web3', { dns: ['web.acm.certd.test'] });
    await importCert(leaves['web3']!, arn);
    peer.resetCalls();
    const d = peer.inject({ op: DESCRIBE, kind: 'throttle', count: 2 });
    const e = peer.inject({ op: EXPORT, kind: 'throttle', count: 2 });
    try {
      const r = await rotate(config([entry('web', arn)]));
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(r.report!.certificates[0]!.result, 'deployed');
      assert.equal(r.report!.certificates[0]!.fingerprint, leaves['web3']!.fingerprint);
      assert.equal(d.fired, 2);
      assert.equal(e.fired, 2);
      assert.equal(peer.throttled[EXPORT], 2);
      assert.equal(peer.acm.exportsOf(arn), 3, 'throttled exports are not answered (not billed)');
    } finally {
      peer.clearFaults();
    }
  });

  it('access denied names the IAM action; the deployed certificate stays', async () => {
    leaves['web4'] = pki.leaf('acm-web4', { dns: ['web.acm.certd.test'] });
    await importCert(leaves['web4']!, arn);
    peer.inject({ op: EXPORT, kind: 'denied', count: Infinity });
    try {
      peer.resetCalls();
      const r = await rotate(config([entry('web', arn)]));
      assert.equal(r.code, 1, r.stdout + r.stderr);
      const err = r.report!.certificates[0]!.error!;
      assert.equal(err.code, 'E_SOURCE');
      assert.match(err.message, /^fetching web from acm:arn:aws:acm:us-east-1:123456789012:certificate\/[0-9a-f-]+: access denied: the role needs acm:ExportCertificate on arn:/);
      assert.equal(peer.calls[EXPORT], 1, 'permanent: not retried');
      assert.equal(readFileSync(join(deploy('web'), 'cert.pem'), 'utf8'), leaves['web3']!.certPem);
    } finally {
      peer.clearFaults();
    }
    peer.inject({ op: DESCRIBE, kind: 'denied', count: Infinity });
    try {
      const r = await rotate(config([entry('web', arn)]));
      assert.match(r.report!.certificates[0]!.error!.message, /access denied: the role needs acm:DescribeCertificate on arn:/);
    } finally {
      peer.clearFaults();
    }
  });

  it('--force exports again; the next plain cycle does not', async () => {
    peer.resetCalls();
    const before = peer.acm.exportsOf(arn);
    const forced = await rotate(config([entry('web', arn)]), ['--force']);
    assert.equal(forced.code, 0, forced.stdout + forced.stderr);
    assert.equal(forced.report!.certificates[0]!.result, 'deployed');
    assert.equal(peer.acm.exportsOf(arn), before + 1);
    assert.equal(peer.calls[EXPORT], 1);
    const plain = await rotate(config([entry('web', arn)]));
    assert.equal(plain.report!.certificates[0]!.result, 'unchanged');
    assert.equal(peer.acm.exportsOf(arn), before + 1);
  });

  it('not found names the ARN and what to check', async () => {
    const missing = 'arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000';
    const r = await rotate(config([entry('missing', missing)], 'missing.yaml'));
    assert.equal(r.code, 1);
    assert.match(r.report!.certificates[0]!.error!.message, /not found: arn:aws:acm:.* does not exist \(check certificate_arn and the region\)/);
    assert.ok(!existsSync(join(deploy('missing'), 'cert.pem')));
  });

  it('a key that the passphrase does not open fails cleanly, and is exported again next time', async () => {
    const other = pki.leaf('acm-wrong', { dns: ['wrong.acm.certd.test'] });
    const wrongArn = await importCert(other);
    peer.acm.setWrongPassphrase(wrongArn, true);
    const r = await rotate(config([entry('wrong', wrongArn)], 'wrong.yaml'));
    assert.equal(r.code, 1);
    const err = r.report!.certificates[0]!.error!;
    assert.equal(err.code, 'E_SOURCE');
    assert.match(err.message, /^fetching wrong from acm:.*: the exported key does not decrypt with the passphrase certd sent \(PBES2 aes-256-cbc hmacWithSHA256\)/);
    assert.ok(!existsSync(join(deploy('wrong'), 'privkey.pem')));
    peer.acm.setWrongPassphrase(wrongArn, false);
    const ok = await rotate(config([entry('wrong', wrongArn)], 'wrong.yaml'));
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.equal(ok.report!.certificates[0]!.result, 'deployed');
  });
});
