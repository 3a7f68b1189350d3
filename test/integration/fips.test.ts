// P-FIPS-RT on this (non-FIPS) machine: `certd fips`, `fips_runtime: require` refusing to rotate,
// `auto` warning, and the real "getFips() says 1 yet nothing works" case that shows why
// getFips() alone proves nothing. The decision table with injected crypto is in test/unit/fips.test.ts.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MISSING_KERNEL, MISSING_PROVIDER, MISSING_SHA256, type FipsReport } from '../../src/fips.js';
import { runCertd, shmDir, writeConfig } from '../helpers/cli.js';

describe('getFips() alone proves nothing (real runtime)', () => {
  it('after setFips(true) without a FIPS provider, getFips() is 1 and the probe still says no', () => {
    const moduleUrl = new URL('../../src/fips.js', import.meta.url).href;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', `
import crypto from 'node:crypto';
import { probeFips } from ${JSON.stringify(moduleUrl)};
crypto.setFips(true);
console.log(JSON.stringify(probeFips()));
`], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(r.stdout) as FipsReport;
    // Should this machine gain a working FIPS provider, the first assertion below fails: then
    // this case needs a runtime without one.
    assert.deepEqual(report.runtime, { getFips: 1, sha256: false, md5Refused: true });
    assert.equal(report.fips, false);
    assert.ok(report.missing[0]?.startsWith(MISSING_SHA256));
  });
});

describe('certd fips and fips_runtime on this machine', () => {
  let shm: ReturnType<typeof shmDir>;
  before(() => {
    shm = shmDir('fips');
  });
  after(() => shm.cleanup());

  it('certd fips --json reports non-FIPS with the reasons and exits 1', async () => {
    const r = await runCertd(['fips', '--json']);
    assert.equal(r.code, 1, r.stderr);
    const report = JSON.parse(r.stdout) as FipsReport;
    assert.equal(report.fips, false);
    assert.equal(report.runtime.getFips, 0);
    assert.equal(report.runtime.sha256, true);
    assert.equal(report.runtime.md5Refused, false);
    const kernel = existsSync('/proc/sys/crypto/fips_enabled') ? Number(readFileSync('/proc/sys/crypto/fips_enabled', 'utf8').trim()) : null;
    assert.equal(report.kernel.fipsEnabled, kernel);
    assert.ok(report.missing.some((m) => m.startsWith(MISSING_PROVIDER)), report.missing.join(' | '));
    assert.ok(report.missing.some((m) => m.startsWith(MISSING_KERNEL)), report.missing.join(' | '));
    assert.equal(report.openssl.node, process.versions.openssl);
    assert.ok(report.openssl.cli, 'the openssl CLI should be found (apt-get install -y openssl)');
    assert.match(report.openssl.cli.version, /^OpenSSL 3\./);
    assert.ok(report.openssl.cli.providers.some((p) => p.name === 'default'), JSON.stringify(report.openssl.cli.providers));
    assert.equal(report.openssl.cli.fipsProviderActive, false);
  });

  it('certd fips (text) says NO and exits 1', async () => {
    const r = await runCertd(['fips']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /^FIPS: NO$/m);
    assert.match(r.stdout, /^missing: no FIPS provider loaded/m);
  });

  const config = (mode: string, name: string): string =>
    writeConfig(shm.dir, `fips_runtime: ${mode}
state_dir: ${join(shm.dir, `${name}-state`)}
certificates:
  - name: web
    source: { type: local-ca, dns_names: [web.example.test] }
    targets:
      - { type: tmpfs, dir: ${join(shm.dir, name)} }
`, `${name}.yaml`);

  it('fips_runtime: require makes rotate --now exit 2 naming what is missing, and deploys nothing', async () => {
    const r = await runCertd(['rotate', '--now', '--config', config('require', 'req')]);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(r.stderr, /fips_runtime: require/);
    assert.match(r.stderr, /no FIPS provider loaded/);
    assert.doesNotMatch(r.stderr, /kernel not in FIPS mode/, 'require asks for the runtime, not the host flag');
    assert.equal(existsSync(join(shm.dir, 'req', 'fullchain.pem')), false);
  });

  it('fips_runtime: require-host makes rotate --now exit 2 naming the runtime and the kernel flag', async () => {
    const r = await runCertd(['rotate', '--now', '--config', config('require-host', 'reqh')]);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(r.stderr, /fips_runtime: require-host/);
    assert.match(r.stderr, /no FIPS provider loaded/);
    assert.match(r.stderr, /kernel not in FIPS mode/);
    assert.equal(existsSync(join(shm.dir, 'reqh', 'fullchain.pem')), false);
  });

  it('fips_runtime: auto warns (P-FIPS-RT) and rotates', async () => {
    const r = await runCertd(['rotate', '--now', '--config', config('auto', 'auto')]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.ok(r.stderr.split('\n').some((l) => l.includes('"level":"warn"') && l.includes('P-FIPS-RT')), r.stderr);
    assert.equal(existsSync(join(shm.dir, 'auto', 'fullchain.pem')), true);
  });
});
