// The FIPS-mode pass only (CERTD_TEST_FIPS=1, the provider built by scripts/fips-provider.sh):
// certd proves the runtime, and the contrapositive: with a fipsmodule.cnf whose module-mac is off
// by one byte, or missing, certd started as a program (bin/certd's launcher) refuses to start under
// fips_runtime require/require-host (exit 2, saying why) and warns and goes on under auto.
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
    const text = readFileSync(join(dir, 'openssl.cnf'), 'utf8');
    assert.ok(text.includes(real), `openssl.cnf includes ${real}`);
    writeFileSync(conf, text.replace(real, join(d, 'fipsmodule.cnf')));
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

  const deployedIn = (name: string): boolean => existsSync(join(shm.dir, `${name}-out`, 'fullchain.pem'));
  const broken = [['one byte of module-mac changed', 'corrupt'], ['fipsmodule.cnf removed', null]] as const;

  // As systemd and ECS start it (bin/certd as a program): the launcher's pre-flight sees that Node
  // cannot start with this OPENSSL_CONF and decides by fips_runtime.
  for (const [what, module] of broken) {
    for (const mode of ['require', 'require-host']) {
      it(`${what}, fips_runtime: ${mode}: certd refuses to start (exit 2), names OPENSSL_CONF and OpenSSL's error, deploys nothing`, async () => {
        const name = `${module ?? 'gone'}-${mode}`;
        const conf = brokenConf(name, module === null ? null : corrupted());
        const r = await runCertd(['rotate', '--now', '--config', config(mode, name)], { launcher: true, env: { ...process.env, OPENSSL_CONF: conf } });
        assert.equal(r.code, 2, r.stdout + r.stderr);
        assert.match(r.stderr, /^certd: FIPS self-test failed: Node cannot start with this FIPS environment \(OPENSSL_CONF=/m);
        assert.ok(r.stderr.includes(conf), `names ${conf}: ${r.stderr}`);
        assert.match(r.stderr, new RegExp(`fips_runtime is ${mode}: certd does not start; nothing was fetched or deployed`));
        assert.match(r.stderr, /OpenSSL says:\n {2}\S/, 'quotes OpenSSL');
        assert.match(r.stderr, /fix: .*openssl fipsinstall/);
        assert.equal(r.stdout, '');
        assert.equal(deployedIn(name), false);
      });
    }
    it(`${what}, fips_runtime: auto: certd warns once, starts without the FIPS environment and deploys`, async () => {
      const name = `${module ?? 'gone'}-auto`;
      const conf = brokenConf(name, module === null ? null : corrupted());
      const r = await runCertd(['rotate', '--now', '--json', '--config', config('auto', name)], { launcher: true, env: { ...process.env, OPENSSL_CONF: conf } });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(r.stderr.match(/^certd: warning: FIPS not active: Node cannot start with this FIPS environment/gm)?.length, 1, r.stderr);
      assert.ok(r.stderr.includes(conf), r.stderr);
      assert.equal(deployedIn(name), true);
    });
  }

  it('fips_runtime: off with a broken module: starts without the FIPS environment, no pre-flight warning', async () => {
    const conf = brokenConf('corrupt-off', corrupted());
    const r = await runCertd(['rotate', '--now', '--config', config('off', 'corrupt-off')], { launcher: true, env: { ...process.env, OPENSSL_CONF: conf } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.doesNotMatch(r.stderr, /FIPS not active|self-test failed/);
    assert.equal(deployedIn('corrupt-off'), true);
  });

  it('a working FIPS environment passes the launcher unchanged: the runtime is proven through it', async () => {
    const r = await runCertd(['fips', '--runtime', '--json'], { launcher: true });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal((JSON.parse(r.stdout) as FipsReport).runtimeFips, true);
  });

  // Why the launcher exists: `node` itself, given the broken configuration, stops before any of
  // certd's code runs, so certd cannot say why or honour auto.
  it('without the launcher (node bin/certd), Node itself stops before certd runs, even with auto', async () => {
    const conf = brokenConf('corrupt-bare', corrupted());
    const r = await runCertd(['rotate', '--now', '--config', config('auto', 'corrupt-bare')], { env: { ...process.env, OPENSSL_CONF: conf } });
    assert.notEqual(r.code, 0, r.stdout + r.stderr);
    assert.doesNotMatch(r.stderr, /certd: /);
    assert.equal(deployedIn('corrupt-bare'), false);
  });
});
