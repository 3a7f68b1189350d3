// config.example.yaml documents every key: it must stay a valid config that certd loads.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../../src/config.js';

describe('config.example.yaml', () => {
  it('parses with loadConfig and shows every source type', () => {
    const loaded = loadConfig('config.example.yaml', {});
    const types = new Set(loaded.config.certificates.map((c) => (c.source as { type: string }).type));
    for (const t of ['file', 'local-ca', 'pkcs11', 'pkcs11-ca', 'secrets-manager', 'ssm', 'kms-ca', 'acm', 'aws-private-ca']) assert.ok(types.has(t), `no example of source ${t}`);
    const fleet = loaded.config.certificates.find((c) => c.name === 'fleet');
    assert.equal((fleet?.source as { path?: string }).path, '/tls/fleet');
  });
});
