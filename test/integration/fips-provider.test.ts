// The FIPS-mode pass only (CERTD_TEST_FIPS=1, the provider built by scripts/fips-provider.sh):
// certd proves the runtime, and the contrapositive: a fipsmodule.cnf whose module-mac is off by one
// byte, or missing, stops certd before it touches material, whatever fips_runtime says.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FipsReport } from '../../src/fips.js';
import { runCertd, shmDir, writeConfig } from '../helpers/cli.js';
import { FIPS_RUN } from '../helpers/fixture-env.js';

describe('FIPS provider: proven, and refused when broken', { skip: !FIPS_RUN && 'the FIPS-mode pass (CERTD_TEST_FIPS=1) runs this' }, () => {
  let shm: ReturnType<typeof shmDir>;
  const dir = process.env['CERTD_FIPS_DIR'] ?? '';
  before(() => { shm = shmDir('fips-provider'); });
  after(() => shm.cleanup());

  it('certd fips --runtime --json: the runtime is proven, the provider named as OpenSSL reports it', async () => {
    const r = await runCertd(['fips', '--runtime', '--json']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const report = JSON.parse(r.stdout) as FipsReport;
    assert.equal(report.runtimeFips, true);
    assert.deepEqual(report.runtime, { getFips: 1, sha256: true, md5Refused: true });
    assert.ok(report.openssl.cli?.providers.some((p) => p.name === 'fips' && p.status === 'active' && p.fullName === 'OpenSSL FIPS Provider' && /^3\./.test(p.version ?? '')), JSON.stringify(report.openssl.cli?.providers));
  });

  /** An openssl.cnf like the real one including `module` instead of the real fipsmodule.cnf. */
  function brokenConf(name: string, module: string | null): string {
    const d = join(shm.dir, name);
    mkdirSync(d, { recursive: true });
    const real = join(dir, 'fipsmodule.cnf');
    if (module !== null) writeFileSync(join(d, 'fipsmodule.cnf'), module);
    const conf = join(d, 'openssl.cnf');
    writeFileSync(conf, readFileSync(join(dir, 'openssl.cnf'), 'utf8').replace(real, join(d, 'fipsmodule.cnf')));
    return conf;
  }
  const corrupted = (): string => {
    const text = readFileSync(join(dir, 'fipsmodule.cnf'), 'utf8');
    const m = /module-mac\s*=\s*([0-9A-F])/.exec(text);
    assert.ok(m, 'fipsmodule.cnf has a module-mac');
    const at = m.index + m[0].length - 1;
    return text.slice(0, at) + (m[1] === '0' ? '1' : '0') + text.slice(at + 1);
  };
  const config = (mode: string, name: string): string => writeConfig(shm.dir, `fips_runtime: ${mode}
state_dir: ${join(shm.dir, `${name}-state`)}
certificates:
  - name: web
    source: { type: local-ca, dns_names: [web.example.test] }
    targets:
      - { type: tmpfs, dir: ${join(shm.dir, `${name}-out`)} }
`, `${name}.yaml`);

  for (const [what, module] of [['one byte of module-mac changed', 'corrupt'], ['fipsmodule.cnf removed', null]] as const) {
    for (const mode of ['require', 'auto']) {
      it(`${what}, fips_runtime: ${mode}: certd does not start, says the FIPS self-test failed, deploys nothing`, async () => {
        const name = `${module ?? 'gone'}-${mode}`;
        const conf = brokenConf(name, module === null ? null : corrupted());
        const r = await runCertd(['rotate', '--now', '--config', config(mode, name)], { env: { ...process.env, OPENSSL_CONF: conf } });
        assert.notEqual(r.code, 0, r.stdout + r.stderr);
        assert.match(r.stderr, /FIPS|SELF_TEST|fips/, r.stderr);
        assert.equal(existsSync(join(shm.dir, `${name}-out`, 'fullchain.pem')), false);
      });
    }
  }
});
