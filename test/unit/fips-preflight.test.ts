// The FIPS pre-flight's verdict (src/fips-preflight.ts): which config it reads, and what each
// fips_runtime level does when Node could not start with the FIPS environment.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configFlag, opensslLines, preflightVerdict } from '../../src/fips-preflight.js';

const NODE_SAID = `node: OpenSSL configuration error:
40B7A1C5B27F0000:error:1C8000D5:Provider routines:SELF_TEST_post:missing config data:../providers/fips/self_test.c:289:
40B7A1C5B27F0000:error:1C8000E0:Provider routines:ossl_set_error_state:fips module entering error state:../providers/fips/self_test.c:387:
40B7A1C5B27F0000:error:07880025:common libcrypto routines:provider_init:reason(37):../crypto/provider_core.c:932:name=fips
`;

describe('FIPS pre-flight', () => {
  it('finds the config flag as the CLI parser takes it', () => {
    assert.equal(configFlag(['rotate', '--now', '--config', '/a.yaml']), '/a.yaml');
    assert.equal(configFlag(['run', '--config=/b.yaml']), '/b.yaml');
    assert.equal(configFlag(['status', '-c', '/c.yaml']), '/c.yaml');
    assert.equal(configFlag(['status', '-c/d.yaml']), '/d.yaml');
    assert.equal(configFlag(['rotate', '--now']), undefined);
    assert.equal(configFlag(['--', '--config', 'x']), undefined);
  });

  it("keeps OpenSSL's lines, at most six, each bounded", () => {
    const lines = opensslLines(NODE_SAID);
    assert.equal(lines.length, 4);
    assert.match(lines[1] ?? '', /SELF_TEST_post/);
    assert.equal(opensslLines(`${'error '.repeat(200)}\n`.repeat(10)).length, 6);
    assert.ok(opensslLines('error '.repeat(200)).every((l) => l.length <= 303));
  });

  const dir = mkdtempSync(join(tmpdir(), 'certd-preflight-'));
  const write = (mode: string): string => {
    const p = join(dir, `${mode}.yaml`);
    writeFileSync(p, `fips_runtime: ${mode}\ncertificates: []\n`);
    return p;
  };
  const env = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({
    CERTD_PREFLIGHT_ERROR: NODE_SAID,
    CERTD_PREFLIGHT_OPENSSL_CONF: '/etc/ssl/fips/openssl.cnf',
    CERTD_PREFLIGHT_NODE_OPTIONS: '--enable-fips',
    CERTD_PREFLIGHT_OPENSSL_MODULES: '/usr/lib64/ossl-modules',
    ...extra,
  });

  for (const mode of ['require', 'require-host']) {
    it(`${mode}: exit 2, naming OPENSSL_CONF, NODE_OPTIONS, OpenSSL's error and the fix`, () => {
      const v = preflightVerdict(['rotate', '--now', '--config', write(mode)], env());
      assert.equal(v.code, 2);
      assert.match(v.message ?? '', /OPENSSL_CONF=\/etc\/ssl\/fips\/openssl\.cnf/);
      assert.match(v.message ?? '', /NODE_OPTIONS=--enable-fips/);
      assert.match(v.message ?? '', /OPENSSL_MODULES=\/usr\/lib64\/ossl-modules/);
      assert.match(v.message ?? '', /SELF_TEST_post:missing config data/);
      assert.match(v.message ?? '', new RegExp(`fips_runtime is ${mode}: certd does not start`));
      assert.match(v.message ?? '', /openssl fipsinstall/);
    });
  }

  it('auto: exit 0 with one warning that says how to refuse instead', () => {
    const v = preflightVerdict(['run', '-c', write('auto')], env());
    assert.equal(v.code, 0);
    assert.match(v.message ?? '', /^certd: warning: FIPS not active/);
    assert.match(v.message ?? '', /set fips_runtime: require to refuse instead/);
  });

  it('off: exit 0, nothing said', () => {
    assert.deepEqual(preflightVerdict(['run', '--config', write('off')], env()), { code: 0 });
  });

  it('the config from CERTD_CONFIG_YAML and CERTD_CONFIG, as certd reads it', () => {
    assert.equal(preflightVerdict(['run'], env({ CERTD_CONFIG_YAML: 'fips_runtime: require\ncertificates: []\n' })).code, 2);
    assert.equal(preflightVerdict(['run'], env({ CERTD_CONFIG: write('off') })).code, 0);
  });

  it('a config that does not load is no reason to run without FIPS: exit 2, both named', () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'fips_runtime: sometimes\ncertificates: []\n');
    const v = preflightVerdict(['run', '--config', bad], env());
    assert.equal(v.code, 2);
    assert.match(v.message ?? '', /the config did not load \(.*fips_runtime/);
    assert.equal(preflightVerdict(['run', '--config', join(dir, 'missing.yaml')], env()).code, 2);
  });

  it('no config at all (default path missing, none given): the schema default, auto', () => {
    const v = preflightVerdict(['--version'], env({ CERTD_CONFIG: undefined }));
    // /etc/certd/config.yaml does not exist on a test machine.
    assert.equal(v.code, 0);
    assert.match(v.message ?? '', /warning: FIPS not active/);
  });

  it('cleans up', () => rmSync(dir, { recursive: true, force: true }));
});
