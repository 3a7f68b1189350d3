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

describe('FIPS endpoints: use_fips_endpoint', () => {
  const none = { fipsRequired: false } as const;

  it('precedence: the source, the top-level key, AWS_USE_FIPS_ENDPOINT, then fips_runtime; else the SDK decides', async () => {
    const { awsSettings, endpointChoice } = await import('../../src/aws.js');
    const choice = (loc: Record<string, unknown>, config: Record<string, unknown>, env: NodeJS.ProcessEnv = {}) => {
      const c = endpointChoice('secrets-manager', loc, awsSettings(config, env), env);
      return [c.useFipsEndpoint, c.from];
    };
    assert.deepEqual(choice({}, {}), [undefined, 'sdk']);
    assert.deepEqual(choice({}, { fips_runtime: 'auto' }), [undefined, 'sdk']);
    assert.deepEqual(choice({}, { fips_runtime: 'require' }), [true, 'fips_runtime']);
    assert.deepEqual(choice({}, { fips_runtime: 'require-host' }), [true, 'fips_runtime']);
    assert.deepEqual(choice({}, { fips_runtime: 'require' }, { AWS_USE_FIPS_ENDPOINT: 'false' }), [false, 'AWS_USE_FIPS_ENDPOINT']);
    assert.deepEqual(choice({}, { fips_runtime: 'off' }, { AWS_USE_FIPS_ENDPOINT: 'true' }), [true, 'AWS_USE_FIPS_ENDPOINT']);
    assert.deepEqual(choice({}, { use_fips_endpoint: false, fips_runtime: 'require' }, { AWS_USE_FIPS_ENDPOINT: 'true' }), [false, 'config']);
    assert.deepEqual(choice({}, { use_fips_endpoint: true }, { AWS_USE_FIPS_ENDPOINT: 'false' }), [true, 'config']);
    assert.deepEqual(choice({ use_fips_endpoint: true }, { use_fips_endpoint: false }, { AWS_USE_FIPS_ENDPOINT: 'false' }), [true, 'source']);
    assert.deepEqual(choice({ use_fips_endpoint: false }, { use_fips_endpoint: true, fips_runtime: 'require' }), [false, 'source']);
  });

  it('an explicit endpoint (config or AWS_ENDPOINT_URL*) is used as given: the SDK gets useFipsEndpoint false', async () => {
    const { endpointChoice } = await import('../../src/aws.js');
    const fips = { useFipsEndpoint: true, fipsRequired: true };
    const c = endpointChoice('ssm', { endpoint: 'https://ssm.example' }, fips, {});
    assert.deepEqual([c.useFipsEndpoint, c.fips, c.custom], [false, true, 'endpoint https://ssm.example']);
    assert.equal(endpointChoice('ssm', {}, fips, { AWS_ENDPOINT_URL_SSM: 'https://a', AWS_ENDPOINT_URL: 'https://b' }).custom, 'AWS_ENDPOINT_URL_SSM https://a');
    assert.equal(endpointChoice('kms', {}, fips, { AWS_ENDPOINT_URL_SSM: 'https://a', AWS_ENDPOINT_URL: 'https://b' }).custom, 'AWS_ENDPOINT_URL https://b');
    assert.equal(endpointChoice('secrets-manager', {}, fips, { AWS_ENDPOINT_URL_SECRETS_MANAGER: 'https://s' }).custom, 'AWS_ENDPOINT_URL_SECRETS_MANAGER https://s');
    const ignored = endpointChoice('kms', {}, fips, { AWS_ENDPOINT_URL: 'https://b', AWS_IGNORE_CONFIGURED_ENDPOINT_URLS: 'true' });
    assert.deepEqual([ignored.useFipsEndpoint, ignored.custom], [true, undefined]);
  });

  it('clientOptions passes useFipsEndpoint only when decided, and clientKey tells a source\'s choice apart', async () => {
    const { clientKey, clientOptions } = await import('../../src/aws.js');
    assert.equal(clientOptions({ region: 'us-east-1' }, { useFipsEndpoint: true })['useFipsEndpoint'], true);
    assert.equal(clientOptions({ region: 'us-east-1' }, { useFipsEndpoint: false })['useFipsEndpoint'], false);
    assert.equal('useFipsEndpoint' in clientOptions({ region: 'us-east-1' }, { useFipsEndpoint: undefined }), false);
    const keys = [undefined, true, false].map((f) => clientKey('secrets-manager', { region: 'us-east-1', use_fips_endpoint: f }));
    assert.equal(new Set(keys).size, 3, keys.join(' | '));
    assert.equal(clientKey('kms', { region: 'us-east-1' }), clientKey('kms', { region: 'us-east-1', use_fips_endpoint: undefined }));
  });

  it('AWS_USE_FIPS_ENDPOINT must be true or false, and the config key a boolean', async () => {
    const { awsSettings } = await import('../../src/aws.js');
    assert.throws(() => awsSettings({}, { AWS_USE_FIPS_ENDPOINT: 'yes' }), /AWS_USE_FIPS_ENDPOINT: expected "true" or "false", got "yes"/);
    assert.deepEqual(awsSettings({ fips_runtime: 'require' }, { AWS_USE_FIPS_ENDPOINT: 'false' }), { useFipsEndpoint: undefined, envUseFipsEndpoint: false, fipsRequired: true });
    assert.throws(() => parseConfigText(`use_fips_endpoint: "yes"\n`), /use_fips_endpoint \(line 1\): expected true or false/);
    assert.throws(() => parseConfigText(wrap('{ type: ssm, path: /tls, use_fips_endpoint: 1 }')), /source\.use_fips_endpoint \(line 3\): expected true or false/);
    assert.equal(parseConfigText(wrap('{ type: secrets-manager, secret_id: s, use_fips_endpoint: false, key_encryption: { kms: { encryption_context: { a: b }, use_fips_endpoint: true } } }')).certificates[0]?.source.type, 'secrets-manager');
    const { buildRuntime } = await import('../../src/runtime.js');
    const { silentLogger } = await import('../../src/log.js');
    const loaded = { config: parseConfigText('state_dir: /dev/shm/certd-unit-fipsep\n'), path: 'inline.yaml', resolvePath: (p: string) => p };
    await assert.rejects(buildRuntime(loaded, { log: silentLogger, env: { AWS_USE_FIPS_ENDPOINT: '1' } }), /config inline\.yaml: use_fips_endpoint: AWS_USE_FIPS_ENDPOINT: expected "true" or "false", got "1"/);
  });

  it('a -fips host that does not resolve (a region without FIPS endpoints), and FIPS with the config file\'s endpoint_url, say what to change', async () => {
    const { awsError } = await import('../../src/aws.js');
    const dnsError = Object.assign(new Error('getaddrinfo ENOTFOUND secretsmanager-fips.eu-west-1.amazonaws.com'), { code: 'ENOTFOUND' });
    const e = awsError(dnsError, { doing: 'fetching web from secrets-manager:prod/web', source: 'secrets-manager', operation: 'GetSecretValue', actions: [], resource: 'prod/web' });
    assert.equal(e.code, 'E_SOURCE');
    assert.equal(e.permanent, false);
    // The SDK's refusal, when the AWS config file's endpoint_url (which certd does not read) meets FIPS.
    const both = awsError(Object.assign(new Error('Invalid Configuration: FIPS and custom endpoint are not supported'), { name: 'EndpointError' }), { doing: 'fetching web', source: 'secrets-manager', operation: 'GetSecretValue', actions: [], resource: 'prod/web' });
    assert.deepEqual([both.code, both.permanent], ['E_CONFIG', true]);
    assert.match(both.message, /^fetching web: the SDK has a custom endpoint \(endpoint_url in the AWS config file\?\) and FIPS endpoints were asked for/);
    assert.match(e.message, /^fetching web from secrets-manager:prod\/web: secretsmanager-fips\.eu-west-1\.amazonaws\.com does not resolve: AWS offers FIPS endpoints only in some regions .*set use_fips_endpoint: false or an endpoint for this source$/);
  });

  it('with fips_runtime require and nothing else set, the SDK client resolves the -fips host and certd records it as FIPS', async () => {
    const { awsClient, awsSettings, sdk } = await import('../../src/aws.js');
    const { endpointsOf, withEndpointLog } = await import('../../src/endpoints.js');
    const { silentLogger } = await import('../../src/log.js');
    const { systemClock } = await import('../../src/clock.js');
    const saved = { ...process.env };
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE', AWS_SECRET_ACCESS_KEY: 'x', AWS_CONFIG_FILE: '/nonexistent/c', AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/s' });
    for (const k of ['AWS_USE_FIPS_ENDPOINT', 'AWS_ENDPOINT_URL', 'AWS_ENDPOINT_URL_SECRETS_MANAGER', 'AWS_PROFILE']) delete process.env[k];
    const shared = new Map<string, unknown>();
    const deps = (aws: ReturnType<typeof awsSettings>) => ({
      clock: systemClock, log: silentLogger, stateDir: '/dev/shm', env: process.env, aws, resolvePath: (p: string) => p,
      shared<T>(key: string, init: () => T): T {
        if (!shared.has(key)) shared.set(key, init());
        return shared.get(key) as T;
      },
    });
    const hostOf = async (aws: ReturnType<typeof awsSettings>) => {
      shared.clear();
      const client = (await awsClient(deps(aws), 'secrets-manager', { region: 'us-gov-west-1' })) as unknown as {
        send(c: unknown): Promise<unknown>;
        destroy(): void;
        middlewareStack: { add(mw: unknown, o: unknown): void };
      };
      // Stops each request after certd's recorder saw it: nothing leaves the process.
      client.middlewareStack.add(() => async () => {
        throw Object.assign(new Error('stopped by the test'), { name: 'Stopped' });
      }, { step: 'finalizeRequest', name: 'testStop', priority: 'low' });
      const log = new Map();
      const { GetSecretValueCommand } = await sdk.secretsManager();
      await assert.rejects(withEndpointLog(log, () => client.send(new GetSecretValueCommand({ SecretId: 's' }))), /stopped by the test/);
      client.destroy();
      return endpointsOf(log);
    };
    try {
      assert.deepEqual(await hostOf(awsSettings({ fips_runtime: 'require' }, {})), [{ service: 'secrets-manager', host: 'secretsmanager-fips.us-gov-west-1.amazonaws.com', kind: 'fips' }]);
      assert.deepEqual(await hostOf(awsSettings({ fips_runtime: 'auto' }, {})), [{ service: 'secrets-manager', host: 'secretsmanager.us-gov-west-1.amazonaws.com', kind: 'standard' }]);
      assert.deepEqual(await hostOf(none), [{ service: 'secrets-manager', host: 'secretsmanager.us-gov-west-1.amazonaws.com', kind: 'standard' }]);
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
  });
});
