/** Material from what people really deliver: bundles in any order, duplicated chains. */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { Material } from '../../src/material.js';
import { Secret } from '../../src/secret.js';
import { TestPki } from '../helpers/pki.js';

const dir = mkdtempSync(join(tmpdir(), 'certd-material-'));
const pki = new TestPki(join(dir, 'pki'));
const leaf = pki.leaf('web', { dns: ['web.test'] });
const other = pki.leaf('other', { dns: ['other.test'] });
const der = (pem: string): Buffer => new X509Certificate(pem).raw;
const LEAF = der(leaf.certPem);
const OTHER = der(other.certPem);
const INT = der(pki.intermediate.certPem);
const ROOT = der(pki.root.certPem);
const keyPem = readFileSync(leaf.keyPath, 'utf8');
const meta = { version: '1', origin: 'test:bundle' };

function fromPem(...parts: string[]): Material {
  return Material.fromBundle(Buffer.from(parts.join('')), meta);
}

describe('Material: a bundle in any order', () => {
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('CA, key, leaf: the leaf is the certificate of the key, the chain in issuer order', () => {
    const m = fromPem(pki.root.certPem, keyPem, leaf.certPem, pki.intermediate.certPem);
    assert.equal(m.fingerprint, leaf.fingerprint);
    assert.deepEqual(m.chain, [INT, ROOT]);
    assert.equal(m.fullchainPem, leaf.certPem + pki.intermediate.certPem + pki.root.certPem);
  });

  it('every order of leaf, intermediate and root gives the same Material', () => {
    const certs = [leaf.certPem, pki.intermediate.certPem, pki.root.certPem];
    const orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    for (const o of orders) {
      const m = fromPem(keyPem, ...o.map((i) => certs[i] as string));
      assert.deepEqual([m.leaf, ...m.chain], [LEAF, INT, ROOT], `order ${o.join(',')}`);
    }
  });

  it('two leaves of one CA: the one whose public key matches the private key is the leaf', () => {
    const m = fromPem(other.certPem, pki.intermediate.certPem, leaf.certPem, keyPem);
    assert.equal(m.fingerprint, leaf.fingerprint);
    assert.deepEqual(m.chain[0], INT);
    assert.ok(m.chain.some((c) => c.equals(OTHER)), 'the unrelated leaf is kept after the path for the policy to judge');
    assert.deepEqual(m.chain.at(-1), OTHER);
  });

  it('without a private key (an HSM key): the leaf is the certificate that issues no other', () => {
    const m = new Material({ certs: [INT, ROOT, LEAF], key: { kind: 'pkcs11', uri: 'pkcs11:token=t;object=k' }, version: '1', origin: 'test:hsm' });
    assert.deepEqual([m.leaf, ...m.chain], [LEAF, INT, ROOT]);
  });

  it('a full chain in the certificate plus the same chain again: no certificate twice', () => {
    const m = new Material({ certs: [LEAF, INT, ROOT, INT, ROOT], key: { kind: 'pem', pem: new Secret(keyPem) }, version: '1', origin: 'test:dup' });
    assert.deepEqual(m.chain, [INT, ROOT]);
    assert.equal(m.fullchainPem.split('BEGIN CERTIFICATE').length - 1, 3);
    const again = Material.fromBundle(Buffer.from(leaf.certPem + pki.intermediate.certPem + keyPem), { ...meta, extraChain: [INT] });
    assert.deepEqual(again.chain, [INT]);
  });

  it('a chain already in order is kept as delivered (digest unchanged)', () => {
    const a = new Material({ certs: [LEAF, INT], key: { kind: 'pem', pem: new Secret(keyPem) }, version: '1', origin: 'test:a' });
    const b = new Material({ certs: [INT, LEAF], key: { kind: 'pem', pem: new Secret(keyPem) }, version: '1', origin: 'test:b' });
    assert.deepEqual([a.leaf, ...a.chain], [LEAF, INT]);
    assert.equal(a.digest, b.digest);
  });
});
