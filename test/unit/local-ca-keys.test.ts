// local-ca issues every leaf key type the policy approves (EC P-256/P-384, RSA 2048/3072) and the
// set it deploys passes the policy. In the FIPS-mode pass (scripts/run-tests.mjs with
// CERTD_TEST_FIPS=1) this process runs with the FIPS provider, so key generation, the CSR-free
// issuance signature and the policy's checks all go through it.
import assert from 'node:assert/strict';
import { createPrivateKey, getFips, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parseConfigText } from '../../src/config.js';
import { silentLogger } from '../../src/log.js';
import { runCycle } from '../../src/rotate.js';
import { buildRuntime } from '../../src/runtime.js';
import { FIPS_RUN } from '../helpers/fixture-env.js';

const root = mkdtempSync('/dev/shm/certd-unit-local-ca-keys-');
after(() => rmSync(root, { recursive: true, force: true }));

const KINDS = [
  { key: 'ec-p256', type: 'ec', detail: { namedCurve: 'prime256v1' } },
  { key: 'ec-p384', type: 'ec', detail: { namedCurve: 'secp384r1' } },
  { key: 'rsa-2048', type: 'rsa', detail: { modulusLength: 2048 } },
  { key: 'rsa-3072', type: 'rsa', detail: { modulusLength: 3072 } },
] as const;

describe('local-ca: every approved leaf key type', () => {
  it(`issues and deploys EC P-256/P-384 and RSA 2048/3072 leaves that pass the policy${FIPS_RUN ? ' (FIPS provider)' : ''}`, async () => {
    assert.equal(getFips(), FIPS_RUN ? 1 : 0, 'the FIPS-mode pass runs with the provider, the normal pass without');
    const yaml = `state_dir: ${root}/state
certificates:
${KINDS.map((k) => `  - name: ${k.key}
    source: { type: local-ca, dns_names: [${k.key}.certd.test], key: ${k.key}, ttl: 2h }
    targets: [{ type: tmpfs, dir: ${root}/out/${k.key} }]`).join('\n')}
`;
    const rt = await buildRuntime({ config: parseConfigText(yaml), path: join(root, 'config.yaml'), resolvePath: (p) => p }, { log: silentLogger });
    try {
      const report = await runCycle(rt);
      assert.deepEqual(report.certificates.map((c) => [c.name, c.result, c.error?.message]), KINDS.map((k) => [k.key, 'deployed', undefined]));
      for (const k of KINDS) {
        const dir = join(root, 'out', k.key);
        const leaf = new X509Certificate(readFileSync(join(dir, 'cert.pem')));
        const key = createPrivateKey(readFileSync(join(dir, 'privkey.pem')));
        assert.equal(key.asymmetricKeyType, k.type, k.key);
        for (const [name, value] of Object.entries(k.detail)) assert.equal((key.asymmetricKeyDetails as Record<string, unknown>)[name], value, `${k.key} ${name}`);
        assert.ok(leaf.checkPrivateKey(key), `${k.key}: the deployed key is the leaf's`);
        assert.equal(leaf.checkHost(`${k.key}.certd.test`), `${k.key}.certd.test`);
        assert.deepEqual(report.certificates.find((c) => c.name === k.key)?.findings?.filter((f) => f.severity === 'reject') ?? [], []);
      }
    } finally {
      await rt.close();
    }
  });
});
