// The AWS sources' config rules and the naming of discovered certificates.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfigText } from '../../src/config.js';
import { sanitiseName, substituteName } from '../../src/discovery.js';

const wrap = (source: string, target = '{ type: tmpfs, dir: /run/x }') => `certificates:\n  - name: c\n    source: ${source}\n    targets: [${target}]\n`;

describe('AWS source config', () => {
  it('refuses AWSPENDING and says why', () => {
    assert.throws(() => parseConfigText(wrap('{ type: secrets-manager, secret_id: s, version_stage: AWSPENDING }')), /version_stage \(line 3\): AWSPENDING is never deployed: it labels a version that a rotation is still creating and testing/);
    assert.doesNotThrow(() => parseConfigText(wrap('{ type: secrets-manager, secret_id: s, version_stage: AWSPREVIOUS }')));
  });

  it('ssm takes either path or cert_parameter + key_parameter', () => {
    assert.doesNotThrow(() => parseConfigText(wrap('{ type: ssm, path: /tls }')));
    assert.doesNotThrow(() => parseConfigText(wrap('{ type: ssm, cert_parameter: /a/cert, key_parameter: /a/key }')));
    assert.throws(() => parseConfigText(wrap('{ type: ssm, path: /tls, cert_parameter: /a/cert }')), /give path .* not both/);
    assert.throws(() => parseConfigText(wrap('{ type: ssm, cert_parameter: /a/cert }')), /give path/);
  });

  it('key_encryption needs a non-empty encryption context', () => {
    assert.throws(() => parseConfigText(wrap('{ type: file, cert: c.pem, key: k.kms, key_encryption: { kms: { encryption_context: {} } } }')), /at least one key/);
    assert.doesNotThrow(() => parseConfigText(wrap('{ type: file, cert: c.pem, key: k.kms, key_encryption: { kms: { encryption_context: { app: web } } } }')));
  });

  it('checks region and endpoint', () => {
    assert.throws(() => parseConfigText(wrap('{ type: secrets-manager, secret_id: s, region: Europe }')), /expected an AWS region/);
    assert.throws(() => parseConfigText(wrap('{ type: kms-ca, key_id: k, ca_cert: ca.pem, dns_names: [a.test], endpoint: "ftp://x" }')), /http\(s\) URL/);
  });
});

describe('discovered certificate names', () => {
  it('sanitises to [a-z0-9-]', () => {
    assert.equal(sanitiseName('team/Web_API'), 'team-web-api');
    assert.equal(sanitiseName('..a..'), 'a');
    assert.equal(sanitiseName('/'), '');
  });

  it('substitutes {name} in every string, however deep', () => {
    assert.deepEqual(substituteName({ dir: '/run/{name}', n: 3, list: ['{name}.example', { x: '{name}-{name}' }] }, 'web'), { dir: '/run/web', n: 3, list: ['web.example', { x: 'web-web' }] });
  });
});

describe('an entry that discovers', () => {
  it('must give each member its own target with {name}', async () => {
    const { buildRuntime } = await import('../../src/runtime.js');
    const { silentLogger } = await import('../../src/log.js');
    const text = `state_dir: /dev/shm/certd-unit-discovery\ncertificates:\n  - name: fleet\n    source: { type: ssm, path: /tls, region: us-east-1 }\n    targets: [{ type: tmpfs, dir: /run/x }]\n`;
    const loaded = { config: parseConfigText(text), path: 'inline.yaml', resolvePath: (p: string) => p };
    await assert.rejects(buildRuntime(loaded, { log: silentLogger }), /certificates "fleet": the source finds many certificates, so the targets must use \{name\}/);
    const ok = { ...loaded, config: parseConfigText(text.replace('/run/x', '"/run/x/{name}"')) };
    const rt = await buildRuntime(ok, { log: silentLogger });
    assert.equal(typeof rt.certificates[0]?.expand, 'function');
    assert.deepEqual(rt.certificates[0]?.targets, [], 'the entry itself deploys nothing');
    await rt.close();
  });
});
