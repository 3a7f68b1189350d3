/**
 * Input people really have, through the real command line: bundles in any order, full chains
 * given twice, DER keys, swapped files, config values of the wrong type, and what `rotate` and
 * `status` show for a certificate whose new material was refused.
 */
import assert from 'node:assert/strict';
import { createPrivateKey } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCertd, shmDir, writeConfig } from '../helpers/cli.js';
import { openssl, TestPki } from '../helpers/pki.js';

const countCerts = (pem: string): number => pem.split('-----BEGIN CERTIFICATE-----').length - 1;

describe('certd takes the input people really have', () => {
  const scratch = shmDir('input');
  let pki: TestPki;
  before(() => {
    pki = new TestPki(join(scratch.dir, 'pki'));
  });
  after(() => scratch.cleanup());

  it('a bundle "CA, key, leaf" and a full chain repeated in chain: deploy leaf first, in issuer order, no duplicate', async () => {
    const leaf = pki.leaf('bundle', { dns: ['bundle.test'] });
    const key = readFileSync(leaf.keyPath, 'utf8');
    const bundle = join(scratch.dir, 'bundle.pem');
    writeFileSync(bundle, pki.root.certPem + pki.intermediate.certPem + key + leaf.certPem, { mode: 0o600 });
    const full = join(scratch.dir, 'full.pem');
    writeFileSync(full, leaf.certPem + pki.intermediate.certPem);
    const chain = join(scratch.dir, 'chain.pem');
    writeFileSync(chain, pki.intermediate.certPem);
    const cfg = writeConfig(scratch.dir, `state_dir: ${scratch.dir}/state-bundle
policy: { trust_anchors: ${pki.root.certPath} }
certificates:
  - name: any-order
    source: { type: file, cert: ${bundle}, key: ${bundle} }
    targets: [{ type: tmpfs, dir: ${scratch.dir}/out-any }]
  - name: twice
    source: { type: file, cert: ${full}, key: ${leaf.keyPath}, chain: ${chain} }
    targets: [{ type: tmpfs, dir: ${scratch.dir}/out-twice }]
`, 'bundle.yaml');
    const r = await runCertd(['rotate', '--now', '--config', cfg, '--json']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const doc = JSON.parse(r.stdout);
    for (const c of doc.certificates) assert.equal(c.fingerprint, leaf.fingerprint, c.name);
    const fullchain = readFileSync(join(scratch.dir, 'out-any', 'fullchain.pem'), 'utf8');
    assert.equal(fullchain, leaf.certPem + pki.intermediate.certPem + pki.root.certPem);
    assert.equal(readFileSync(join(scratch.dir, 'out-any', 'cert.pem'), 'utf8'), leaf.certPem);
    const twice = readFileSync(join(scratch.dir, 'out-twice', 'fullchain.pem'), 'utf8');
    assert.equal(countCerts(twice), 2, 'the intermediate once');
    assert.equal(twice, leaf.certPem + pki.intermediate.certPem);
  });

  it('DER private keys (PKCS#8, SEC 1, PKCS#1) are read and deployed as the same key', async () => {
    const ec = pki.leaf('der-ec', { dns: ['der-ec.test'] });
    const rsa = pki.leaf('der-rsa', { dns: ['der-rsa.test'], keySpec: 'rsa-2048' });
    // Written by openssl, not by certd's own encoder.
    const der = {
      'ec-pkcs8': [ec, ['pkey', '-in', ec.keyPath, '-outform', 'DER']],
      'ec-sec1': [ec, ['ec', '-in', ec.keyPath, '-outform', 'DER']],
      'rsa-pkcs8': [rsa, ['pkey', '-in', rsa.keyPath, '-outform', 'DER']],
      'rsa-pkcs1': [rsa, ['rsa', '-in', rsa.keyPath, '-traditional', '-outform', 'DER']],
    } as const;
    let yaml = `state_dir: ${scratch.dir}/state-der\npolicy: { trust_anchors: ${pki.root.certPath} }\ncertificates:\n`;
    for (const [name, [leaf, args]] of Object.entries(der)) {
      const keyFile = join(scratch.dir, `${name}.der`);
      openssl([...args, '-out', keyFile]);
      assert.equal(readFileSync(keyFile)[0], 0x30, `${name} is DER`);
      yaml += `  - name: ${name}\n    source: { type: file, cert: ${leaf.certPath}, key: ${keyFile}, chain: ${pki.intermediate.certPath} }\n    targets: [{ type: tmpfs, dir: ${scratch.dir}/out-${name} }]\n`;
    }
    const cfg = writeConfig(scratch.dir, yaml, 'der.yaml');
    const r = await runCertd(['rotate', '--now', '--config', cfg, '--json']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    for (const [name, [leaf]] of Object.entries(der)) {
      const deployed = createPrivateKey(readFileSync(join(scratch.dir, `out-${name}`, 'privkey.pem')));
      assert.ok(deployed.equals(createPrivateKey(readFileSync(leaf.keyPath))), name);
    }
  });

  it('swapped cert and key files say so and name the file; no key bytes in the output', async () => {
    const leaf = pki.leaf('swapped', { dns: ['swapped.test'] });
    const cfg = writeConfig(scratch.dir, `state_dir: ${scratch.dir}/state-swap
certificates:
  - name: swapped
    source: { type: file, cert: ${leaf.keyPath}, key: ${leaf.certPath} }
    targets: [{ type: tmpfs, dir: ${scratch.dir}/out-swap }]
  - name: key-is-cert
    source: { type: file, cert: ${leaf.certPath}, key: ${leaf.certPath} }
    targets: [{ type: tmpfs, dir: ${scratch.dir}/out-swap2 }]
`, 'swap.yaml');
    const r = await runCertd(['rotate', '--now', '--config', cfg, '--json']);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const doc = JSON.parse(r.stdout);
    const [a, b] = doc.certificates;
    assert.equal(a.result, 'failed');
    assert.match(a.error.message, new RegExp(`reading certificate of swapped: ${leaf.keyPath} holds a private key, not a certificate: are the certificate and key swapped\\?`));
    assert.match(b.error.message, new RegExp(`reading private key of key-is-cert: ${leaf.certPath} holds a certificate, not a private key: are the certificate and key swapped\\?`));
    assert.ok(!/PRIVATE KEY-----/.test(r.stdout + r.stderr));
    const v = await runCertd(['validate', '--cert', leaf.keyPath, '--key', leaf.certPath, '--json']);
    assert.equal(v.code, 1);
    assert.match(JSON.parse(v.stdout).findings[0].message, /swapped/);
  });

  it('a config value of the wrong type exits 2 naming the key, the line, the type expected and the value given', async () => {
    const cfg = writeConfig(scratch.dir, `state_dir: ${scratch.dir}/state-type\njitter: 30\ncertificates: []\n`, 'type.yaml');
    for (const args of [['rotate', '--now'], ['status']]) {
      const r = await runCertd([...args, '--config', cfg]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /jitter \(line 2\): expected a duration string such as 30s, 15m, 24h or 7d, got number 30/);
      assert.doesNotMatch(r.stderr, /required/);
    }
  });

  it('a failed row of rotate and status shows the fingerprint still served, and the refused one apart', async () => {
    const good = pki.leaf('served', { dns: ['served.test'] });
    const bad = pki.leaf('refused', { dns: ['other.test'] });
    const src = pki.publish(good, join(scratch.dir, 'src-refused'));
    const cfg = writeConfig(scratch.dir, `state_dir: ${scratch.dir}/state-refused
policy: { trust_anchors: ${pki.root.certPath} }
certificates:
  - name: web
    hostnames: [served.test]
    source: { type: file, cert: ${src.cert}, key: ${src.key}, chain: ${src.chain} }
    targets: [{ type: tmpfs, dir: ${scratch.dir}/out-refused }]
`, 'refused.yaml');
    assert.equal((await runCertd(['rotate', '--now', '--config', cfg])).code, 0);
    writeFileSync(src.cert, bad.certPem);
    writeFileSync(src.key, readFileSync(bad.keyPath), { mode: 0o600 });
    const json = await runCertd(['rotate', '--now', '--config', cfg, '--json']);
    assert.equal(json.code, 1);
    const row = JSON.parse(json.stdout).certificates[0];
    assert.equal(row.result, 'failed');
    assert.equal(row.fingerprint, good.fingerprint, 'the fingerprint column is what is still served');
    assert.equal(row.refused?.fingerprint, bad.fingerprint);
    assert.match(row.error.message, /P-SAN/);
    const text = await runCertd(['rotate', '--now', '--config', cfg]);
    assert.equal(text.code, 1);
    const line = text.stdout.split('\n').find((l) => l.startsWith('web ')) ?? '';
    assert.ok(line.includes(good.fingerprint.slice(0, 23)), line);
    assert.match(line, new RegExp(`refused ${bad.fingerprint.slice(0, 23)}`));
    assert.ok(line.indexOf(good.fingerprint.slice(0, 23)) < line.indexOf('refused'), line);

    const st = JSON.parse((await runCertd(['status', '--config', cfg, '--json'])).stdout).certificates[0];
    assert.equal(st.fingerprint, good.fingerprint);
    assert.equal(st.lastResult, 'failed');
    assert.equal(st.refused?.fingerprint, bad.fingerprint);
    const stText = (await runCertd(['status', '--config', cfg])).stdout;
    const stLine = stText.split('\n').find((l) => l.startsWith('web ')) ?? '';
    assert.ok(stLine.includes(good.fingerprint.slice(0, 23)), stLine);
    assert.match(stLine, new RegExp(`refused ${bad.fingerprint.slice(0, 23)}`));
    // Still served: the deployed files are the good leaf's.
    assert.equal(readFileSync(join(scratch.dir, 'out-refused', 'cert.pem'), 'utf8'), good.certPem);

    // Fixed at the source: the next cycle deploys it and the refused one is gone from the record.
    writeFileSync(src.cert, good.certPem);
    writeFileSync(src.key, readFileSync(good.keyPath), { mode: 0o600 });
    assert.equal((await runCertd(['rotate', '--now', '--config', cfg])).code, 0);
    const after = JSON.parse((await runCertd(['status', '--config', cfg, '--json'])).stdout).certificates[0];
    assert.equal(after.refused, null);
  });
});

