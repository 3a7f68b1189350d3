import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { configPath, loadConfig, parseConfigText } from '../../src/config.js';
import { CertdError } from '../../src/errors.js';

const minimal = `
certificates:
  - name: web
    source: { type: file, cert: /c.pem, key: /k.pem }
    targets:
      - type: tmpfs
        dir: /run/certd/web
`;

function configError(text: string): string {
  try {
    parseConfigText(text, 'test.yaml');
  } catch (err) {
    assert.ok(err instanceof CertdError);
    assert.equal(err.code, 'E_CONFIG');
    return err.message;
  }
  assert.fail('expected a config error');
}

describe('config', () => {
  it('fills every default of DESIGN.md', () => {
    const c = parseConfigText(minimal);
    assert.equal(c.policy.mode, 'enforce');
    assert.equal(c.policy.min_rsa_bits, 2048);
    assert.equal(c.policy.allow_ed25519, false);
    assert.equal(c.policy.allow_self_signed, false);
    assert.equal(c.policy.min_remaining, '7d');
    assert.equal(c.fips_runtime, 'auto');
    assert.equal(c.schedule, '*/5 * * * *');
    assert.equal(c.jitter, '30s');
    assert.equal(c.renew_before, '30d');
    assert.equal(c.state_dir, '/run/certd');
    assert.equal(c.log.level, 'info');
    assert.equal(c.certificates[0]?.name, 'web');
  });

  it('names the key path and the line of an unknown key', () => {
    const msg = configError(`${minimal}    colour: blue\n`);
    assert.match(msg, /certificates\[0\]\.colour \(line 8\): unknown key "colour"/);
  });

  it('names the key path and line of a wrong type', () => {
    const msg = configError(`policy:\n  min_rsa_bits: lots\n${minimal}`);
    assert.match(msg, /policy\.min_rsa_bits \(line 2\)/);
  });

  it('a value of the wrong type names the expected type and the value received, not "required"', () => {
    const cases: [string, RegExp][] = [
      [`jitter: 30\n${minimal}`, /^config test\.yaml: jitter \(line 1\): expected a duration string such as 30s, 15m, 24h or 7d, got number 30$/],
      [`renew_before: true\n${minimal}`, /renew_before \(line 1\): expected a duration string such as 30s, 15m, 24h or 7d, got boolean true$/],
      [`policy:\n  min_rsa_bits: "3072"\n${minimal}`, /policy\.min_rsa_bits \(line 2\): expected a number, got string "3072"$/],
      [`policy:\n  allow_self_signed: "yes"\n${minimal}`, /policy\.allow_self_signed \(line 2\): expected true or false, got string "yes"$/],
      [`state_dir: [a, b]\n${minimal}`, /state_dir \(line 1\): expected a string, got a list$/],
      [`certificates:\n  - name: web\n    source: { type: file, cert: 42, key: /k.pem }\n    targets: [{ type: tmpfs, dir: /run/x }]\n`, /certificates\[0\]\.source\.cert \(line 3\): expected a string, got number 42$/],
      [`certificates:\n  - name: web\n    source: { type: file, cert: /c, key: /k }\n    targets: { type: tmpfs, dir: /run/x }\n`, /certificates\[0\]\.targets \(line 4\): expected a list, got a mapping$/],
      [`certificates:\n  - name: web\n    source: { type: file, cert: /c, key: /k }\n    targets: [{ type: tmpfs, dir: /run/x }]\n    reload: { timeout: 30 }\n`, /certificates\[0\]\.reload\.timeout \(line 5\): expected a duration string such as 30s, 15m, 24h or 7d, got number 30$/],
      [`certificates:\n  - name: web\n    source: { type: file, cert: /c, key: /k }\n    targets: [{ type: tmpfs, dir: /run/x }]\n    hostnames: web.test\n`, /certificates\[0\]\.hostnames \(line 5\): expected a list, got string "web\.test"$/],
    ];
    for (const [text, pattern] of cases) {
      const msg = configError(text);
      assert.match(msg, pattern);
      assert.doesNotMatch(msg, /required/);
    }
  });

  it('a YAML null for a key that has no default is "required", with the line', () => {
    const msg = configError(`certificates:\n  - name: web\n    source: { type: file, cert: /c.pem, key: }\n    targets: [{ type: tmpfs, dir: /run/x }]\n`);
    assert.match(msg, /certificates\[0\]\.source\.key \(line 3\): required/);
  });

  it('reports a missing required key of a provider', () => {
    const msg = configError(`certificates:\n  - name: web\n    source: { type: file, cert: /c.pem }\n    targets: [{ type: tmpfs, dir: /run/x }]\n`);
    assert.match(msg, /certificates\[0\]\.source\.key/);
    assert.match(msg, /required/);
  });

  it('lists the known types for an unknown source type', () => {
    const msg = configError(`certificates:\n  - name: web\n    source: { type: vault }\n    targets: [{ type: tmpfs, dir: /run/x }]\n`);
    assert.match(msg, /certificates\[0\]\.source\.type/);
    assert.match(msg, /file/);
    assert.match(msg, /local-ca/);
  });

  it('refuses RSA below 2048 bits, bad names, duplicate names and bad durations', () => {
    assert.match(configError(`policy: { min_rsa_bits: 1024 }\n${minimal}`), /2048/);
    assert.match(configError(minimal.replace('name: web', 'name: Web_1')), /\[a-z0-9-\]/);
    assert.match(configError(`${minimal}  - name: web\n    source: { type: file, cert: /c, key: /k }\n    targets: [{ type: tmpfs, dir: /x }]\n`), /duplicate certificate name "web"/);
    assert.match(configError(`jitter: soon\n${minimal}`), /jitter.*duration/);
  });

  it('reports YAML syntax errors with a line', () => {
    assert.match(configError('certificates:\n  - name: [unclosed\n'), /line \d+/);
  });

  it('takes --config, else $CERTD_CONFIG, else /etc/certd/config.yaml', () => {
    assert.equal(configPath('/a.yaml', { CERTD_CONFIG: '/b.yaml' }), '/a.yaml');
    assert.equal(configPath(undefined, { CERTD_CONFIG: '/b.yaml' }), '/b.yaml');
    assert.equal(configPath(undefined, {}), '/etc/certd/config.yaml');
  });

  it('loads from a file and resolves relative paths against its folder', () => {
    const dir = mkdtempSync(join(tmpdir(), 'certd-config-'));
    writeFileSync(join(dir, 'c.yaml'), minimal);
    const loaded = loadConfig(undefined, { CERTD_CONFIG: join(dir, 'c.yaml') });
    assert.equal(loaded.resolvePath('certs/web.pem'), join(dir, 'certs/web.pem'));
    assert.equal(loaded.resolvePath('/abs.pem'), '/abs.pem');
  });

  it('reads the YAML itself from CERTD_CONFIG_YAML when no path is given', () => {
    const loaded = loadConfig(undefined, { CERTD_CONFIG_YAML: minimal });
    assert.equal(loaded.path, '<env CERTD_CONFIG_YAML>');
    assert.equal(loaded.config.certificates.length, 1);
  });

  it('says which file is missing', () => {
    assert.throws(() => loadConfig('/nonexistent/certd.yaml', {}), /no such file/);
  });
});
