// The pieces of the aws-private-ca issuer: the JSON 1.1 client (endpoints incl. FIPS, SigV4
// accepted by the AWS peer, retries on throttling, no retry on access denied, request_timeout,
// the abort signal, the response size bound, error parsing), the CSR (checked by openssl), the
// config's refusals by policy rule, and the issuer on a fake clock (RequestInProgressException
// waited out within its bound; an unanswered issue read again instead of issued twice).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { awsError, awsSettings, clientKey, endpointChoice, ACM_PCA_SPEC } from '../../src/aws.js';
import { AwsJsonClient, AwsServiceError, MAX_IN_FLIGHT, MAX_RESPONSE_BYTES, parseError, resolveEndpoint } from '../../src/aws-json-client.js';
import { FakeClock } from '../../src/clock.js';
import type { ProviderDeps } from '../../src/contracts.js';
import { buildCsr, csrPem } from '../../src/csr.js';
import { CertdError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { leafKeyType } from '../../src/schema.js';
import { awsPrivateCaSource, defaultTemplate, ISSUE_WAIT_MS, PCA_LANE_LIMIT, validityOf } from '../../providers/aws-private-ca.js';
import { registerSecret } from '../helpers/capture.js';
import { openssl } from '../helpers/tls.js';
import { DEFAULT_TEST_CREDENTIALS, startAwsPeer, type AwsPeer } from '../peers/aws-peer.js';

const CREDS = { accessKeyId: DEFAULT_TEST_CREDENTIALS.accessKeyId, secretAccessKey: DEFAULT_TEST_CREDENTIALS.secretAccessKey };
const loc = (endpoint: string, extra: Record<string, string> = {}) => ({ region: 'us-east-1', endpoint, ...extra });

describe('resolveEndpoint', () => {
  const spec = ACM_PCA_SPEC;
  it('config endpoint, then AWS_ENDPOINT_URL_ACM_PCA, then AWS_ENDPOINT_URL, then AWS (the -fips host when FIPS is chosen)', () => {
    const env = { AWS_ENDPOINT_URL_ACM_PCA: 'http://127.0.0.1:1/pca', AWS_ENDPOINT_URL: 'http://127.0.0.1:2' };
    assert.equal(resolveEndpoint(spec, { endpoint: 'https://vpce.example:8443' }, 'eu-west-1', env, true).href, 'https://vpce.example:8443/');
    assert.equal(resolveEndpoint(spec, {}, 'eu-west-1', env, false).href, 'http://127.0.0.1:1/pca');
    assert.equal(resolveEndpoint(spec, {}, 'eu-west-1', { AWS_ENDPOINT_URL: 'http://127.0.0.1:2' }, false).href, 'http://127.0.0.1:2/');
    assert.equal(resolveEndpoint(spec, {}, 'eu-west-1', { ...env, AWS_IGNORE_CONFIGURED_ENDPOINT_URLS: 'true' }, false).href, 'https://acm-pca.eu-west-1.amazonaws.com/');
    assert.equal(resolveEndpoint(spec, {}, 'us-gov-west-1', {}, true).href, 'https://acm-pca-fips.us-gov-west-1.amazonaws.com/');
    assert.equal(resolveEndpoint(spec, {}, 'us-east-1', {}, false).href, 'https://acm-pca.us-east-1.amazonaws.com/');
    assert.equal(resolveEndpoint(spec, {}, 'cn-north-1', {}, false).href, 'https://acm-pca.cn-north-1.amazonaws.com.cn/');
  });

  it('aws.ts decides FIPS for acm-pca as for the SDK clients: source, config, AWS_USE_FIPS_ENDPOINT, fips_runtime', () => {
    const off = awsSettings({}, {});
    assert.equal(endpointChoice('acm-pca', {}, off, {}).fips, undefined);
    assert.equal(endpointChoice('acm-pca', {}, awsSettings({ fips_runtime: 'require' }, {}), {}).fips, true);
    assert.equal(endpointChoice('acm-pca', {}, awsSettings({}, { AWS_USE_FIPS_ENDPOINT: 'true' }), {}).fips, true);
    assert.equal(endpointChoice('acm-pca', { use_fips_endpoint: false }, awsSettings({ fips_runtime: 'require' }, {}), {}).fips, false);
    assert.equal(endpointChoice('acm-pca', {}, off, { AWS_ENDPOINT_URL_ACM_PCA: 'http://127.0.0.1:9' }).custom, 'AWS_ENDPOINT_URL_ACM_PCA http://127.0.0.1:9');
  });
});

describe('parseError', () => {
  it('keeps the code after # of __type, or the x-amzn-ErrorType header, or the status', () => {
    const a = parseError('{"__type":"com.amazonaws.acmpca#RequestInProgressException","message":"still"}', undefined, 400);
    assert.equal(a.name, 'RequestInProgressException');
    assert.equal(a.message, 'still');
    assert.equal(a.$metadata.httpStatusCode, 400);
    assert.equal(parseError('', 'AccessDeniedException:http://internal.amazon.com/', 400).name, 'AccessDeniedException');
    assert.equal(parseError('<html>busy</html>', undefined, 429).name, 'ThrottlingException');
    assert.equal(parseError('', undefined, 503).name, 'InternalFailure');
  });
});

describe('AwsJsonClient against the AWS peer', () => {
  let peer: AwsPeer;
  let ca: { arn: string };
  const client = (extra: Record<string, unknown> = {}, request_timeout?: string) =>
    new AwsJsonClient(ACM_PCA_SPEC, { ...loc(peer.url), ...(request_timeout ? { request_timeout } : {}) }, { credentials: CREDS, env: {}, ...extra });
  const get = (c: AwsJsonClient, signal?: AbortSignal) =>
    c.send({ operation: 'GetCertificate', input: { CertificateAuthorityArn: ca.arn, CertificateArn: `${ca.arn}/certificate/00` } }, signal ? { abortSignal: signal } : {});

  before(async () => {
    peer = await startAwsPeer();
    ca = peer.pca.createCa('ec-p256');
  });
  after(async () => {
    assert.deepEqual(peer.internalErrors, []);
    await peer.close();
  });

  it('signs as acm-pca with X-Amz-Target ACMPrivateCA.*: the peer accepts the signature and answers', async () => {
    peer.resetCalls();
    await assert.rejects(get(client()), (e: AwsServiceError) => e.name === 'ResourceNotFoundException' && e.$metadata.httpStatusCode === 400 && e.$metadata.attempts === 1);
    assert.deepEqual({ ...peer.calls }, { 'ACMPrivateCA.GetCertificate': 1 });
    assert.deepEqual({ ...peer.rejected }, {});
  });

  it('a wrong secret key is refused by the peer (the signature really is checked)', async () => {
    const c = client({ credentials: { ...CREDS, secretAccessKey: 'wrong' } });
    await assert.rejects(get(c), { name: 'InvalidSignatureException' });
  });

  it('throttling is retried with backoff; after AWS_MAX_ATTEMPTS the error says how many attempts', async () => {
    peer.resetCalls();
    const f = peer.inject({ op: 'ACMPrivateCA.GetCertificate', kind: 'throttle', count: 2 });
    await assert.rejects(get(client()), { name: 'ResourceNotFoundException' });
    assert.equal(f.fired, 2);
    assert.equal(peer.calls['ACMPrivateCA.GetCertificate'], 3);
    peer.inject({ op: 'ACMPrivateCA.GetCertificate', kind: 'throttle', count: Infinity });
    try {
      const err = await get(client()).then(() => undefined, (e: unknown) => e as AwsServiceError);
      assert.equal(err?.name, 'ThrottlingException');
      assert.equal(err?.$metadata.attempts, 4);
      const mapped = awsError(err, { doing: 'issuing web with aws-private-ca:x', source: 'aws-private-ca', operation: 'GetCertificate', actions: ['acm-pca:GetCertificate'], resource: ca.arn });
      assert.match(mapped.message, /throttled by AWS after 4 attempts \(ThrottlingException\)/);
      assert.equal(mapped.permanent, false);
    } finally {
      peer.clearFaults();
    }
  });

  it('access denied is not retried and maps to a message naming the IAM action', async () => {
    peer.resetCalls();
    peer.inject({ op: 'ACMPrivateCA.IssueCertificate', kind: 'denied', count: Infinity });
    try {
      const err = await client().send({ operation: 'IssueCertificate', input: { CertificateAuthorityArn: ca.arn } }).then(() => undefined, (e: unknown) => e);
      assert.equal((err as Error).name, 'AccessDeniedException');
      assert.equal(peer.calls['ACMPrivateCA.IssueCertificate'], 1);
      const mapped = awsError(err, { doing: 'issuing web with aws-private-ca:x', source: 'aws-private-ca', operation: 'IssueCertificate', actions: ['acm-pca:IssueCertificate'], resource: ca.arn });
      assert.match(mapped.message, /access denied: the role needs acm-pca:IssueCertificate on arn:aws:acm-pca:/);
      assert.equal(mapped.permanent, true);
    } finally {
      peer.clearFaults();
    }
  });

  it('request_timeout ends a hung attempt (and it is retried); the abort signal ends the call at once', async () => {
    peer.inject({ op: 'ACMPrivateCA.GetCertificate', kind: 'hang', count: 1 });
    const started = Date.now();
    await assert.rejects(get(client({ maxAttempts: 2 }, '300ms')), { name: 'ResourceNotFoundException' });
    assert.ok(Date.now() - started >= 300, 'waited for request_timeout');

    peer.inject({ op: 'ACMPrivateCA.GetCertificate', kind: 'hang', count: 1 });
    const ac = new AbortController();
    const t0 = Date.now();
    setTimeout(() => ac.abort(new Error('cycle deadline')), 100);
    await assert.rejects(get(client({}, '30s'), ac.signal));
    assert.ok(Date.now() - t0 < 5_000, 'stopped by the signal, not by request_timeout');
    peer.clearFaults();
  });

  it('no region anywhere is a configuration error', async () => {
    const c = new AwsJsonClient(ACM_PCA_SPEC, { endpoint: peer.url }, { credentials: CREDS, env: {} });
    const err = await get(c).then(() => undefined, (e: unknown) => e);
    const mapped = awsError(err, { doing: 'issuing web', source: 'aws-private-ca', operation: 'GetCertificate', actions: [], resource: 'x' });
    assert.equal(mapped.code, 'E_CONFIG');
    assert.match(mapped.message, /no AWS region: set region in the config or AWS_REGION/);
  });
});

describe('AwsJsonClient response bound', () => {
  it(`refuses an answer over ${MAX_RESPONSE_BYTES} bytes`, async () => {
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' });
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      let sent = 0;
      const push = (): void => {
        while (sent < 4 * MAX_RESPONSE_BYTES) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', push);
        }
        res.end();
      };
      push();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const c = new AwsJsonClient(ACM_PCA_SPEC, loc(url), { credentials: CREDS, env: {}, maxAttempts: 1 });
      await assert.rejects(c.send({ operation: 'GetCertificate', input: {} }), { name: 'ResponseTooLarge' });
      c.destroy();
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});

describe('buildCsr', () => {
  const dir = mkdtempSync('/dev/shm/certd-csr-');
  after(() => rmSync(dir, { recursive: true, force: true }));
  for (const [type, opts, sig] of [
    ['ec', { namedCurve: 'prime256v1' }, 'ecdsa-with-SHA256'],
    ['ec', { namedCurve: 'secp384r1' }, 'ecdsa-with-SHA384'],
    ['rsa', { modulusLength: 2048 }, 'sha256WithRSAEncryption'],
  ] as const) {
    it(`a ${type} ${JSON.stringify(opts)} CSR verifies with openssl and asks for the leaf's extensions`, () => {
      const { privateKey, publicKey } = generateKeyPairSync(type as 'ec', opts as { namedCurve: string });
      const path = join(dir, `${sig}.csr`);
      writeFileSync(path, csrPem(buildCsr({ key: privateKey, spki: publicKey.export({ type: 'spki', format: 'der' }), dnsNames: ['a.certd.test', 'b.certd.test'] })));
      const text = openssl(['req', '-in', path, '-noout', '-verify', '-text']);
      assert.match(text, /Subject: CN ?= ?a\.certd\.test/);
      assert.match(text, new RegExp(`Signature Algorithm: ${sig}`));
      assert.match(text, /DNS:a\.certd\.test, DNS:b\.certd\.test/);
      assert.match(text, /TLS Web Server Authentication/);
      assert.match(text, type === 'rsa' ? /Key Usage: critical\s+Digital Signature, Key Encipherment/ : /Key Usage: critical\s+Digital Signature\n/);
      const pub = openssl(['req', '-in', path, '-noout', '-pubkey']);
      assert.equal(pub, publicKey.export({ type: 'spki', format: 'pem' }));
    });
  }
});

describe('aws-private-ca config', () => {
  const base = { type: 'aws-private-ca', ca_arn: 'arn:aws:acm-pca:eu-west-1:111122223333:certificate-authority/12345678-1234-1234-1234-123456789012', signing_algorithm: 'SHA256WITHECDSA', dns_names: ['a.certd.test'] };
  const messages = (over: Record<string, unknown>) => {
    const r = awsPrivateCaSource.schema.safeParse({ ...base, ...over });
    return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  };
  it('takes the keys of the other issuers, with defaults', () => {
    const c = awsPrivateCaSource.schema.parse(base);
    assert.equal(c.ttl, '24h');
    assert.equal(c.key, 'ec-p256');
    assert.equal(c.template_arn, undefined);
  });
  it('refuses weak choices naming the policy rule', () => {
    assert.match(messages({ signing_algorithm: 'SHA1WITHRSA' })[0] ?? '', /^signing_algorithm: expected one of SHA256WITHECDSA, .*: SHA1WITHRSA breaks P-SIG-HASH/);
    assert.match(messages({ signing_algorithm: 'MD5WITHRSA' })[0] ?? '', /P-SIG-HASH/);
    assert.match(messages({ key: 'rsa-1024' })[0] ?? '', /^key: expected one of ec-p256, .*: rsa-1024 breaks P-RSA-MIN/);
    assert.match(messages({ key: 'ec-p192' })[0] ?? '', /P-EC-CURVE/);
    assert.match(messages({ key: 'secp256k1' })[0] ?? '', /P-EC-CURVE/);
    assert.match(messages({ signing_algorithm: undefined })[0] ?? '', /^signing_algorithm: required: the algorithm of the CA's key/);
    assert.match(messages({ ca_arn: 'arn:aws:acm:eu-west-1:111122223333:certificate/x' })[0] ?? '', /^ca_arn: expected an AWS Private CA ARN/);
    assert.match(messages({ template_arn: 'EndEntityCertificate/V1' })[0] ?? '', /^template_arn: expected a template ARN/);
    assert.ok(!leafKeyType.safeParse('rsa-1024').success);
  });
  it('region, when given, is the one in ca_arn', () => {
    assert.deepEqual(messages({ region: 'eu-west-1' }), []);
    assert.deepEqual(messages({ region: 'us-east-1' }), ['region: the CA is in the region of its ca_arn: leave region out, or give that one']);
  });
  it('asks for whole days as DAYS and anything else as an ABSOLUTE end; EC leaves get a CSR-passthrough template', () => {
    const now = new Date('2026-01-01T00:00:00Z');
    assert.deepEqual(validityOf(7 * 86_400_000, now), { Type: 'DAYS', Value: 7 });
    assert.deepEqual(validityOf(36 * 3_600_000, now), { Type: 'ABSOLUTE', Value: now.getTime() / 1000 + 36 * 3600 });
    assert.equal(defaultTemplate('aws', 'rsa-3072'), 'arn:aws:acm-pca:::template/EndEntityCertificate/V1');
    assert.equal(defaultTemplate('aws-us-gov', 'ec-p384'), 'arn:aws-us-gov:acm-pca:::template/BlankEndEntityCertificate_APICSRPassthrough/V1');
  });
});

describe('aws-private-ca issuer on a fake clock', () => {
  let peer: AwsPeer;
  let ca: { arn: string; certPem: string };
  const saved: Record<string, string | undefined> = {};

  before(async () => {
    peer = await startAwsPeer();
    ca = peer.pca.createCa('ec-p256');
    // The default credential chain reads the environment; no region there: it comes from ca_arn.
    for (const [k, v] of Object.entries({ AWS_ACCESS_KEY_ID: CREDS.accessKeyId, AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey, AWS_REGION: undefined, AWS_DEFAULT_REGION: undefined, AWS_CONFIG_FILE: '/nonexistent/certd', AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/certd', AWS_EC2_METADATA_DISABLED: 'true' })) {
      saved[k] = process.env[k];
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
  after(async () => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    assert.deepEqual(peer.internalErrors, []);
    await peer.close();
  });

  const issuer = (clock: FakeClock) => {
    const values = new Map<string, unknown>();
    const deps: ProviderDeps = {
      clock,
      log: silentLogger,
      stateDir: '/nonexistent',
      env: process.env,
      shared: <T>(k: string, init: () => T): T => (values.has(k) ? values.get(k) : (values.set(k, init()), values.get(k))) as T,
      resolvePath: (p) => p,
    };
    const config = awsPrivateCaSource.schema.parse({ type: 'aws-private-ca', ca_arn: ca.arn, signing_algorithm: 'SHA256WITHECDSA', endpoint: peer.url, dns_names: ['fake.pca.certd.test'] });
    return { source: awsPrivateCaSource.create(config, deps, { name: 'web', hostnames: [], renewBeforeMs: 30 * 86_400_000 }), close: async () => {
      for (const v of values.values()) await ((await v) as { close?: () => Promise<void> }).close?.();
    } };
  };

  /** Advances the fake clock in steps until `p` settles (each step lets the poll loop run). */
  async function drive<T>(clock: FakeClock, p: Promise<T>, stepMs = 1_000): Promise<T> {
    let settled = false;
    p.then(() => (settled = true), () => (settled = true));
    for (let i = 0; i < 500 && !settled; i++) {
      await new Promise((r) => setTimeout(r, 5));
      await clock.advance(stepMs);
    }
    return p;
  }

  it('shares one lane per client, as wide as the client\'s requests in flight', () => {
    const { source } = issuer(new FakeClock(new Date()));
    assert.deepEqual(source.lane, { key: clientKey('acm-pca', { region: 'us-east-1', endpoint: peer.url, request_timeout: '10s', use_fips_endpoint: undefined }), limit: MAX_IN_FLIGHT });
    assert.equal(PCA_LANE_LIMIT, MAX_IN_FLIGHT);
  });

  it('waits out RequestInProgressException with the fake clock; the region comes from the CA ARN', async () => {
    const clock = new FakeClock(new Date());
    const { source, close } = issuer(clock);
    peer.resetCalls();
    peer.pca.inProgressCalls = 5;
    try {
      const m = await drive(clock, source.fetch({ name: 'web' }, new AbortController().signal));
      registerSecret('private-key', m.key.kind === 'pem' ? m.key.pem.reveal() : '');
      assert.deepEqual({ ...peer.calls }, { 'ACMPrivateCA.IssueCertificate': 1, 'ACMPrivateCA.GetCertificate': 6 });
      assert.deepEqual(m.dnsNames, ['fake.pca.certd.test']);
      assert.equal(m.version, `serial:${new X509Certificate(m.leaf).serialNumber.toLowerCase()}`);
      assert.match(m.origin, /^aws-private-ca:arn:aws:acm-pca:us-east-1:/);
      assert.ok(!JSON.stringify(m).includes('PRIVATE'), 'Material prints no key');
    } finally {
      peer.pca.inProgressCalls = 0;
      await close();
    }
  });

  it(`gives up after ${ISSUE_WAIT_MS / 1000}s of RequestInProgressException; the next fetch reads that certificate instead of issuing another`, async () => {
    const clock = new FakeClock(new Date());
    const { source, close } = issuer(clock);
    const issued = peer.pca.issued.length;
    peer.pca.inProgressCalls = 1_000;
    try {
      const err = await drive(clock, source.fetch({ name: 'web' }, new AbortController().signal), 3_000).then(() => undefined, (e: unknown) => e);
      assert.ok(err instanceof CertdError, String(err));
      assert.equal(err.code, 'E_SOURCE');
      assert.match(err.message, /^issuing web with aws-private-ca:.*: arn:aws:acm-pca:.*\/certificate\/[0-9a-f]+ was still being issued after \d+s and \d+ GetCertificate calls \(RequestInProgressException\); the next attempt reads it again$/);
      assert.equal(peer.pca.issued.length, issued + 1);
      peer.pca.inProgressCalls = 0;
      const m = await source.fetch({ name: 'web' }, new AbortController().signal);
      registerSecret('private-key', m.key.kind === 'pem' ? m.key.pem.reveal() : '');
      assert.equal(peer.pca.issued.length, issued + 1, 'no second IssueCertificate');
      assert.equal(`serial:${peer.pca.issued.at(-1)!.arn.split('/').at(-1)}`, m.version);
    } finally {
      peer.pca.inProgressCalls = 0;
      await close();
    }
  });

  it('the abort signal ends the wait', async () => {
    const clock = new FakeClock(new Date());
    const { source, close } = issuer(clock);
    peer.pca.inProgressCalls = 1_000;
    const ac = new AbortController();
    try {
      const p = source.fetch({ name: 'web' }, ac.signal);
      setTimeout(() => ac.abort(new Error('fetch_deadline 30s')), 200);
      await assert.rejects(p, /stopped (while waiting for .* to be issued )?\(fetch_deadline 30s\)/);
    } finally {
      peer.pca.inProgressCalls = 0;
      await close();
    }
  });
});
