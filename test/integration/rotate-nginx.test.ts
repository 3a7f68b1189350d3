/**
 * The core promise against a real nginx: certd deploys, nginx serves the new leaf; bad material,
 * a failing config test and a failed verification all leave the previous certificate served.
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCertd, shmDir, writeConfig } from '../helpers/cli.js';
import { freePort, startNginx, type RunningNginx } from '../helpers/nginx.js';
import { TestPki, type Issued } from '../helpers/pki.js';
import { handshake } from '../helpers/tls.js';

const NAME = 'web.certd.test';

describe('certd rotate --now with a real nginx', () => {
  const scratch = shmDir('rotate-nginx');
  const dir = scratch.dir;
  const deploy = join(dir, 'deploy');
  const source = join(dir, 'source');
  let pki: TestPki;
  let nginx: RunningNginx;
  let decoyPort: number;
  let served: Issued;

  const config = (o: { reload?: boolean; test?: string[]; verifyPort?: number; dir?: string; allowDisk?: boolean } = {}) =>
    writeConfig(
      dir,
      `state_dir: ${join(dir, 'state')}
policy:
  trust_anchors: ${pki.root.certPath}
certificates:
  - name: web
    source: { type: file, cert: ${join(source, 'cert.pem')}, key: ${join(source, 'key.pem')}, chain: ${join(source, 'chain.pem')} }
    targets:
      - { type: tmpfs, dir: ${o.dir ?? deploy}${o.allowDisk ? ', allow_disk: true' : ''} }
${o.reload === false ? '' : `    reload:
      command: ${JSON.stringify(nginx.reloadCommand)}
      test: ${JSON.stringify(o.test ?? nginx.testCommand)}
    verify: { connect: "127.0.0.1:${o.verifyPort ?? nginx.ports[0]}", servername: ${NAME}, timeout: 3s }
`}`,
    );

  const servedNow = async () => (await handshake({ port: nginx.ports[0]!, servername: NAME })).fingerprint256;

  before(async () => {
    pki = new TestPki(join(dir, 'pki'));
    served = pki.leaf('leaf1', { dns: [NAME] });
    pki.publish(served, source);
    // First deployment before nginx exists: nothing to reload or verify yet.
    nginx = { reloadCommand: ['true'], testCommand: ['true'], ports: [0] } as unknown as RunningNginx;
    const first = await runCertd(['rotate', '--now', '--config', config({ reload: false })]);
    assert.equal(first.code, 0, first.stderr);
    const decoy = pki.leaf('decoy', { dns: [NAME] });
    cpSync(decoy.certPath, join(dir, 'decoy.pem'));
    cpSync(decoy.keyPath, join(dir, 'decoy.key'));
    decoyPort = await freePort();
    nginx = await startNginx({
      prefix: join(dir, 'nginx'),
      servers: [
        { serverName: NAME, body: `ssl_certificate ${deploy}/fullchain.pem;\nssl_certificate_key ${deploy}/privkey.pem;\nssl_protocols TLSv1.2 TLSv1.3;` },
        { serverName: NAME, port: decoyPort, body: `ssl_certificate ${dir}/decoy.pem;\nssl_certificate_key ${dir}/decoy.key;` },
      ],
    });
    assert.equal(await servedNow(), served.fingerprint);
  });

  after(async () => {
    await nginx?.stop();
    scratch.cleanup();
  });

  it('deploys a new leaf and the next handshake serves it', async () => {
    const next = pki.leaf('leaf2', { dns: [NAME] });
    pki.publish(next, source);
    const r = await runCertd(['rotate', '--now', '--config', config(), '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.certificates[0].result, 'deployed');
    assert.equal(report.certificates[0].fingerprint, next.fingerprint);
    assert.equal(report.certificates[0].previousFingerprint, served.fingerprint);
    assert.equal(report.reloads.length, 1);
    assert.equal(await servedNow(), next.fingerprint);
    served = next;
  });

  it('an unchanged source deploys nothing and reloads nothing', async () => {
    const before = readlinkSync(join(deploy, '..data'));
    const r = await runCertd(['rotate', '--now', '--config', config(), '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.certificates[0].result, 'unchanged');
    assert.deepEqual(report.reloads, []);
    assert.equal(readlinkSync(join(deploy, '..data')), before);
  });

  it('refuses material that breaks the policy, exits 1, and the old certificate stays served', async () => {
    const weak = pki.leaf('weak', { dns: [NAME], keySpec: 'rsa-1024' });
    pki.publish(weak, source);
    const r = await runCertd(['rotate', '--now', '--config', config(), '--json']);
    assert.equal(r.code, 1);
    const report = JSON.parse(r.stdout);
    assert.equal(report.certificates[0].result, 'failed');
    assert.equal(report.certificates[0].error.code, 'E_POLICY');
    assert.ok(report.certificates[0].findings.some((f: { rule: string }) => f.rule === 'P-RSA-MIN'));
    assert.equal(await servedNow(), served.fingerprint);
    const status = JSON.parse((await runCertd(['status', '--config', config(), '--json'])).stdout);
    assert.equal(status.certificates[0].fingerprint, served.fingerprint);
    assert.equal(status.certificates[0].lastResult, 'failed');
    assert.equal(status.certificates[0].error.code, 'E_POLICY');
  });

  it('a failing test command means no reload and the previous set back in place', async () => {
    const next = pki.leaf('leaf3', { dns: [NAME] });
    pki.publish(next, source);
    const r = await runCertd(['rotate', '--now', '--config', config({ test: ['/bin/sh', '-c', 'echo "nginx: configuration test failed" >&2; exit 1'] }), '--json']);
    assert.equal(r.code, 1);
    const report = JSON.parse(r.stdout);
    assert.equal(report.certificates[0].error.code, 'E_RELOAD');
    assert.match(report.certificates[0].error.message, /configuration test failed/);
    assert.equal(report.reloads[0].result, 'test-failed');
    assert.equal(await servedNow(), served.fingerprint);
    assert.equal(readFileSync(join(deploy, 'cert.pem'), 'utf8'), served.certPem);
  });

  it('a failed verification rolls back, reloads again, and the previous certificate is served', async () => {
    const next = pki.leaf('leaf4', { dns: [NAME] });
    pki.publish(next, source);
    // verify probes a server that keeps presenting another certificate: the deployment is not trusted.
    const r = await runCertd(['rotate', '--now', '--config', config({ verifyPort: decoyPort }), '--json']);
    assert.equal(r.code, 1);
    const report = JSON.parse(r.stdout);
    assert.equal(report.certificates[0].error.code, 'E_VERIFY');
    assert.equal(report.reloads.length, 2, 'one reload for the new set, one after the rollback');
    assert.equal(await servedNow(), served.fingerprint);
    assert.equal(readFileSync(join(deploy, 'cert.pem'), 'utf8'), served.certPem);
    // The state still names what is really deployed.
    const status = JSON.parse((await runCertd(['status', '--config', config(), '--json'])).stdout);
    assert.equal(status.certificates[0].fingerprint, served.fingerprint);
  });

  it('the next good cycle converges to the new certificate', async () => {
    const r = await runCertd(['rotate', '--now', '--config', config(), '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(await servedNow(), report.certificates[0].fingerprint);
    served = { ...served, fingerprint: report.certificates[0].fingerprint, certPem: readFileSync(join(deploy, 'cert.pem'), 'utf8') };
    // Only the live set and the one before it are kept.
    assert.ok(readdirSync(deploy).filter((n) => n.startsWith('..2')).length <= 2);
  });

  it('refuses a target directory that is not tmpfs, and writes nothing there', async () => {
    const onDisk = join('/var/tmp', `certd-disk-${process.pid}`);
    const r = await runCertd(['rotate', '--now', '--config', config({ reload: false, dir: onDisk }), '--json']);
    assert.equal(r.code, 1);
    const report = JSON.parse(r.stdout);
    assert.equal(report.certificates[0].error.code, 'E_TARGET');
    assert.match(report.certificates[0].error.message, /not tmpfs or ramfs/);
    assert.match(report.certificates[0].error.message, /allow_disk/);
    assert.equal(existsSync(onDisk), false);
  });
});
