/**
 * Input people really have, through the real command line: bundles in any order, full chains
 * given twice, DER keys, swapped files, config values of the wrong type, and what `rotate` and
 * `status` show for a certificate whose new material was refused.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCertd, shmDir, writeConfig } from '../helpers/cli.js';
import { TestPki } from '../helpers/pki.js';

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
});
