// The AWS peer cross-checked by an independent client: Debian's awscli (botocore signs, builds
// the JSON 1.1 requests, parses errors and paginates). Another `aws` can be first on PATH, so the
// Debian binary is called by its absolute path.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { access, constants as fsConstants, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { registerSecret } from '../helpers/capture.js';
import { createHash, createPublicKey, constants, verify as nodeVerify, X509Certificate } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_TEST_CREDENTIALS, startAwsPeer, type AwsPeer } from '../peers/aws-peer.js';

const AWS_CLI = '/usr/bin/aws';

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

describe('AWS peer cross-checked by Debian awscli', () => {
  let peer: AwsPeer;
  let dir: string;
  let baseEnv: NodeJS.ProcessEnv;

  before(async () => {
    try {
      await access(AWS_CLI, fsConstants.X_OK);
    } catch {
      throw new Error(`${AWS_CLI} is missing: install Debian's awscli (apt-get install awscli) to run this test`);
    }
    peer = await startAwsPeer({ shortPages: true });
    dir = await mkdtemp(join(tmpdir(), 'certd-awscli-'));
    await writeFile(join(dir, 'config'), '');
    await writeFile(join(dir, 'credentials'), '');
    // A clean environment: nothing from the developer's own AWS set-up can sign or redirect.
    baseEnv = {
      PATH: process.env['PATH'] ?? '/usr/bin:/bin',
      HOME: dir,
      LANG: 'C.UTF-8',
      AWS_ACCESS_KEY_ID: DEFAULT_TEST_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: DEFAULT_TEST_CREDENTIALS.secretAccessKey,
      AWS_CONFIG_FILE: join(dir, 'config'),
      AWS_SHARED_CREDENTIALS_FILE: join(dir, 'credentials'),
      AWS_PAGER: '',
      AWS_EC2_METADATA_DISABLED: 'true',
      AWS_MAX_ATTEMPTS: '1',
    };
  });
  after(async () => {
    await peer?.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  // Asynchronous on purpose: the peer answers from this very process's event loop.
  function aws(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
    return new Promise((resolve) => {
      execFile(
        AWS_CLI,
        ['--endpoint-url', peer.url, '--region', 'us-east-1', '--output', 'json', ...args],
        { env: { ...baseEnv, ...env }, timeout: 60_000, maxBuffer: 4 << 20 },
        (err, stdout, stderr) => {
          const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
          resolve({ code, stdout, stderr });
        },
      );
    });
  }

  async function awsJson(args: string[]): Promise<Record<string, unknown>> {
    const r = await aws(args);
    assert.equal(r.code, 0, `aws ${args.join(' ')} failed: ${r.stderr}`);
    return JSON.parse(r.stdout) as Record<string, unknown>;
  }

  async function awsFails(args: string[], code: string, env: NodeJS.ProcessEnv = {}): Promise<string> {
    const r = await aws(args, env);
    assert.notEqual(r.code, 0, `aws ${args.join(' ')} should have failed`);
    assert.match(r.stderr, new RegExp(`\\(${code}\\)`), r.stderr);
    return r.stderr;
  }

  function openssl(args: string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile('openssl', args, { timeout: 30_000 }, (err, stdout, stderr) => (err ? reject(new Error(`openssl ${args[0]}: ${stderr}`)) : resolve(stdout)));
    });
  }

  it('secretsmanager: create, put and read back through AWSCURRENT, AWSPREVIOUS and AWSPENDING', async () => {
    const created = await awsJson(['secretsmanager', 'create-secret', '--name', 'prod/web', '--secret-string', 'v1']);
    assert.equal(created['Name'], 'prod/web');
    const v1 = String(created['VersionId']);
    const put2 = await awsJson(['secretsmanager', 'put-secret-value', '--secret-id', 'prod/web', '--secret-string', 'v2']);
    assert.deepEqual(put2['VersionStages'], ['AWSCURRENT']);
    const cur = await awsJson(['secretsmanager', 'get-secret-value', '--secret-id', String(created['ARN'])]);
    assert.equal(cur['SecretString'], 'v2');
    assert.match(String(cur['CreatedDate']), /^\d{4}-\d\d-\d\dT/, 'awscli parsed the epoch-seconds timestamp');
    const prev = await awsJson(['secretsmanager', 'get-secret-value', '--secret-id', 'prod/web', '--version-stage', 'AWSPREVIOUS']);
    assert.equal(prev['SecretString'], 'v1');
    assert.equal(prev['VersionId'], v1);

    const pending = await awsJson(['secretsmanager', 'put-secret-value', '--secret-id', 'prod/web', '--secret-string', 'v3', '--version-stages', 'AWSPENDING']);
    assert.equal((await awsJson(['secretsmanager', 'get-secret-value', '--secret-id', 'prod/web']))['SecretString'], 'v2');
    assert.equal((await awsJson(['secretsmanager', 'get-secret-value', '--secret-id', 'prod/web', '--version-stage', 'AWSPENDING']))['SecretString'], 'v3');
    await awsJson(['secretsmanager', 'update-secret-version-stage', '--secret-id', 'prod/web', '--version-stage', 'AWSCURRENT',
      '--move-to-version-id', String(pending['VersionId']), '--remove-from-version-id', String(put2['VersionId'])]);
    assert.equal((await awsJson(['secretsmanager', 'get-secret-value', '--secret-id', 'prod/web']))['SecretString'], 'v3');
    assert.equal((await awsJson(['secretsmanager', 'get-secret-value', '--secret-id', 'prod/web', '--version-stage', 'AWSPREVIOUS']))['SecretString'], 'v2');

    const stderr = await awsFails(['secretsmanager', 'get-secret-value', '--secret-id', 'prod/none'], 'ResourceNotFoundException');
    assert.match(stderr, /Secrets Manager can't find the specified secret/);
  });

  it('ssm: SecureString is opaque without decryption, and get-parameters-by-path follows short pages', async () => {
    await awsJson(['ssm', 'put-parameter', '--name', '/certd/tls/key', '--value', 'secret-pem', '--type', 'SecureString']);
    const opaque = await awsJson(['ssm', 'get-parameter', '--name', '/certd/tls/key']);
    const p0 = opaque['Parameter'] as Record<string, unknown>;
    assert.equal(p0['Type'], 'SecureString');
    assert.notEqual(p0['Value'], 'secret-pem');
    const clear = await awsJson(['ssm', 'get-parameter', '--name', '/certd/tls/key', '--with-decryption']);
    assert.equal((clear['Parameter'] as Record<string, unknown>)['Value'], 'secret-pem');
    await awsFails(['ssm', 'put-parameter', '--name', '/certd/tls/key', '--value', 'x', '--type', 'SecureString'], 'ParameterAlreadyExists');
    const over = await awsJson(['ssm', 'put-parameter', '--name', '/certd/tls/key', '--value', 'pem-2', '--type', 'SecureString', '--overwrite']);
    assert.equal(over['Version'], 2);
    await awsFails(['ssm', 'get-parameter', '--name', '/certd/none'], 'ParameterNotFound');

    for (let i = 0; i < 6; i++) {
      await awsJson(['ssm', 'put-parameter', '--name', `/certd/fleet/c${i}`, '--value', `v${i}`, '--type', 'SecureString']);
    }
    peer.resetCalls();
    // --page-size, not --max-results: awscli turns its pagination off when the limit key is given.
    const all = await awsJson(['ssm', 'get-parameters-by-path', '--path', '/certd', '--recursive', '--with-decryption', '--page-size', '4']);
    const params = all['Parameters'] as Record<string, unknown>[];
    assert.deepEqual(params.map((p) => p['Name']), ['/certd/fleet/c0', '/certd/fleet/c1', '/certd/fleet/c2', '/certd/fleet/c3', '/certd/fleet/c4', '/certd/fleet/c5', '/certd/tls/key']);
    assert.equal(params.at(-1)?.['Value'], 'pem-2');
    assert.ok((peer.calls['AmazonSSM.GetParametersByPath'] ?? 0) > 2, 'awscli followed several NextTokens, across an empty page');
  });

  it('ssm: describe-parameters lists metadata under a path (Recursive and OneLevel), following short pages', async () => {
    for (const name of ['web', 'api']) {
      await awsJson(['ssm', 'put-parameter', '--name', `/tls/${name}/cert`, '--value', `cert-${name}`, '--type', 'String']);
      await awsJson(['ssm', 'put-parameter', '--name', `/tls/${name}/key`, '--value', `key-${name}`, '--type', 'SecureString']);
    }
    await awsJson(['ssm', 'put-parameter', '--name', '/tls/web/key', '--value', 'key-web-2', '--type', 'SecureString', '--overwrite']);
    await awsJson(['ssm', 'put-parameter', '--name', '/tls/top', '--value', 'top', '--type', 'String']);
    await awsJson(['ssm', 'put-parameter', '--name', '/tlsother/x', '--value', 'x', '--type', 'String']);
    peer.resetCalls();
    const all = await awsJson(['ssm', 'describe-parameters', '--parameter-filters', 'Key=Path,Option=Recursive,Values=/tls', '--page-size', '2']);
    const params = all['Parameters'] as Record<string, unknown>[];
    assert.deepEqual(params.map((p) => p['Name']), ['/tls/api/cert', '/tls/api/key', '/tls/top', '/tls/web/cert', '/tls/web/key']);
    assert.ok((peer.calls['AmazonSSM.DescribeParameters'] ?? 0) > 3, 'awscli followed several NextTokens, across an empty page');
    const key = params.find((p) => p['Name'] === '/tls/web/key')!;
    assert.equal(key['Version'], 2);
    assert.equal(key['Type'], 'SecureString');
    assert.equal(key['KeyId'], 'alias/aws/ssm');
    assert.equal(key['Tier'], 'Standard');
    assert.match(String(key['LastModifiedDate']), /^\d{4}-\d\d-\d\dT/, 'awscli parsed the epoch-seconds timestamp');
    assert.ok(params.every((p) => !('Value' in p)), 'metadata only: no value');
    const oneLevel = await awsJson(['ssm', 'describe-parameters', '--parameter-filters', 'Key=Path,Option=OneLevel,Values=/tls']);
    assert.deepEqual((oneLevel['Parameters'] as Record<string, unknown>[]).map((p) => p['Name']), ['/tls/top']);
    const stderr = await awsFails(['ssm', 'describe-parameters', '--parameter-filters', 'Key=Path,Option=Equals,Values=/tls'], 'InvalidFilterOption');
    assert.match(stderr, /For Path filter, valid options are Recursive and OneLevel/);
  });

  it('kms: encrypt with a context; decrypt needs the same context (InvalidCiphertextException otherwise)', async () => {
    const key = await awsJson(['kms', 'create-key', '--description', 'certd test']);
    const keyId = String((key['KeyMetadata'] as Record<string, unknown>)['KeyId']);
    const plaintext = Buffer.from('cert-key-wrapping');
    const enc = await awsJson(['kms', 'encrypt', '--key-id', keyId, '--plaintext', plaintext.toString('base64'),
      '--encryption-context', 'app=certd,env=prod']);
    const blob = String(enc['CiphertextBlob']);
    const dec = await awsJson(['kms', 'decrypt', '--ciphertext-blob', blob, '--encryption-context', 'env=prod,app=certd']);
    assert.deepEqual(Buffer.from(String(dec['Plaintext']), 'base64'), plaintext);
    assert.match(String(dec['KeyId']), new RegExp(`key/${keyId}$`));
    await awsFails(['kms', 'decrypt', '--ciphertext-blob', blob, '--encryption-context', 'app=certd,env=dev'], 'InvalidCiphertextException');
  });

  for (const [spec, alg, hash] of [['ECC_NIST_P256', 'ECDSA_SHA_256', 'sha256'], ['RSA_2048', 'RSASSA_PSS_SHA_256', 'sha256']] as const) {
    it(`kms: ${spec} sign (RAW and DIGEST) verifies with node:crypto against get-public-key`, async () => {
      const key = await awsJson(['kms', 'create-key', '--key-spec', spec, '--key-usage', 'SIGN_VERIFY']);
      const keyId = String((key['KeyMetadata'] as Record<string, unknown>)['KeyId']);
      const pub = await awsJson(['kms', 'get-public-key', '--key-id', keyId]);
      const publicKey = createPublicKey({ key: Buffer.from(String(pub['PublicKey']), 'base64'), format: 'der', type: 'spki' });
      const message = Buffer.from('awscli signs this');
      const options = alg.startsWith('ECDSA')
        ? { key: publicKey, dsaEncoding: 'der' as const }
        : { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 };
      for (const [type, body] of [['RAW', message], ['DIGEST', createHash(hash).update(message).digest()]] as const) {
        const signed = await awsJson(['kms', 'sign', '--key-id', keyId, '--message', body.toString('base64'),
          '--message-type', type, '--signing-algorithm', alg]);
        assert.equal(signed['SigningAlgorithm'], alg);
        const signature = Buffer.from(String(signed['Signature']), 'base64');
        assert.ok(nodeVerify(hash, message, options, signature), `${alg} ${type} signature verifies`);
        assert.ok(!nodeVerify(hash, Buffer.from('other'), options, signature));
      }
    });
  }

  it('acm: import, describe and export-certificate --passphrase fileb://; openssl decrypts the PBES2 key; denied and throttled answers', async () => {
    const key = join(dir, 'acm-key.pem');
    const cert = join(dir, 'acm-cert.pem');
    await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '30', '-subj', '/CN=acm.awscli.certd.test']);
    registerSecret('private-key', await readFile(key));
    const imported = await awsJson(['acm', 'import-certificate', '--certificate', `fileb://${cert}`, '--private-key', `fileb://${key}`]);
    const arn = String(imported['CertificateArn']);
    assert.match(arn, /^arn:aws:acm:us-east-1:123456789012:certificate\/[0-9a-f-]{36}$/);
    const described = (await awsJson(['acm', 'describe-certificate', '--certificate-arn', arn]))['Certificate'] as Record<string, unknown>;
    const serial = (await openssl(['x509', '-in', cert, '-noout', '-serial'])).trim().split('=')[1]!.toLowerCase();
    assert.equal(String(described['Serial']).replace(/:/g, ''), serial);
    assert.match(String(described['NotAfter']), /^\d{4}-\d\d-\d\dT/, 'awscli parsed the epoch-seconds timestamp');
    assert.equal(described['Status'], 'ISSUED');
    // Options.Export is newer than Debian's awscli 2.9 model, which drops members it does not know.

    const pass = join(dir, 'acm-pass');
    await writeFile(pass, 'certd-awscli-passphrase-0123', { mode: 0o600 });
    const exported = await awsJson(['acm', 'export-certificate', '--certificate-arn', arn, '--passphrase', `fileb://${pass}`]);
    assert.equal(exported['Certificate'], await readFile(cert, 'utf8'));
    const encrypted = String(exported['PrivateKey']);
    assert.match(encrypted, /^-{5}BEGIN ENCRYPTED PRIVATE KEY-{5}/);
    const encFile = join(dir, 'acm-enc.pem');
    await writeFile(encFile, encrypted, { mode: 0o600 });
    assert.match(await openssl(['asn1parse', '-in', encFile]), /PBES2[\s\S]*PBKDF2[\s\S]*hmacWithSHA256[\s\S]*aes-256-cbc/);
    const pubOf = (args: string[]) => openssl(['pkey', ...args, '-pubout']);
    assert.equal(await pubOf(['-in', encFile, '-passin', `file:${pass}`]), await pubOf(['-in', key]), 'the passphrase opens the key, and it is the certificate\'s');
    await assert.rejects(openssl(['pkey', '-in', encFile, '-passin', 'pass:another-passphrase']), 'another passphrase does not');

    peer.inject({ op: 'CertificateManager.ExportCertificate', kind: 'denied' });
    const denied = await awsFails(['acm', 'export-certificate', '--certificate-arn', arn, '--passphrase', `fileb://${pass}`], 'AccessDeniedException');
    assert.match(denied, /not authorized to perform: acm:ExportCertificate/);
    peer.inject({ op: 'CertificateManager.DescribeCertificate', kind: 'throttle' });
    await awsFails(['acm', 'describe-certificate', '--certificate-arn', arn], 'ThrottlingException');
    await awsFails(['acm', 'describe-certificate', '--certificate-arn', arn.replace(/[0-9a-f]{12}$/, '000000000000')], 'ResourceNotFoundException');
  });

  it('acm-pca: issue-certificate with an openssl CSR, get-certificate after RequestInProgressException, the waiter; denied, throttled and malformed answers', async () => {
    const ca = peer.pca.createCa('ec-p384');
    const key = join(dir, 'pca-key.pem');
    const csr = join(dir, 'pca.csr');
    await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', csr,
      '-subj', '/CN=pca.awscli.certd.test', '-addext', 'subjectAltName=DNS:pca.awscli.certd.test']);
    registerSecret('private-key', await readFile(key));
    const issueArgs = ['acm-pca', 'issue-certificate', '--certificate-authority-arn', ca.arn, '--csr', `fileb://${csr}`,
      '--signing-algorithm', 'SHA384WITHECDSA', '--validity', 'Value=7,Type=DAYS', '--idempotency-token', 'awscli-pca-1'];
    const issued = await awsJson(issueArgs);
    const arn = String(issued['CertificateArn']);
    assert.match(arn, /^arn:aws:acm-pca:us-east-1:123456789012:certificate-authority\/[0-9a-f-]{36}\/certificate\/[0-9a-f]+$/);
    assert.ok(arn.startsWith(`${ca.arn}/certificate/`));
    assert.equal((await awsJson(issueArgs))['CertificateArn'], arn, 'the same idempotency token issues once');
    assert.equal(peer.pca.issued.filter((i) => i.arn === arn).length, 1);

    const getArgs = ['acm-pca', 'get-certificate', '--certificate-authority-arn', ca.arn, '--certificate-arn', arn];
    peer.pca.inProgressCalls = 1;
    try {
      const stderr = await awsFails(getArgs, 'RequestInProgressException');
      assert.match(stderr, /still in progress/);
    } finally {
      peer.pca.inProgressCalls = 0;
    }
    const got = await awsJson(getArgs);
    const certFile = join(dir, 'pca-cert.pem');
    await writeFile(certFile, `${String(got['Certificate'])}\n`);
    assert.equal(String(got['CertificateChain']).trim(), ca.certPem.trim());
    assert.match(await openssl(['verify', '-CAfile', ca.certPath, '-purpose', 'sslserver', certFile]), /: OK/);
    const text = await openssl(['x509', '-in', certFile, '-noout', '-text']);
    assert.match(text, /Signature Algorithm: ecdsa-with-SHA384/);
    assert.match(text, /DNS:pca\.awscli\.certd\.test/);
    assert.match(text, /Digital Signature, Key Encipherment/, 'EndEntityCertificate/V1 (the default) sets its own keyUsage');
    const leaf = new X509Certificate(await readFile(certFile));
    const days = (new Date(leaf.validTo).getTime() - Date.now()) / 86_400_000;
    assert.ok(days > 6.9 && days <= 7, `Validity 7 DAYS (${days})`);
    const pubOf = (args: string[]) => openssl(['pkey', ...args, '-pubout']);
    assert.equal(await pubOf(['-in', key]), leaf.publicKey.export({ type: 'spki', format: 'pem' }), 'the certificate holds the CSR\'s key');

    // botocore's own waiter (GetCertificate every 3 s until it stops answering RequestInProgressException).
    const second = String((await awsJson([...issueArgs.slice(0, -1), 'awscli-pca-2']))['CertificateArn']);
    peer.pca.inProgressCalls = 1;
    try {
      const waited = await aws(['acm-pca', 'wait', 'certificate-issued', '--certificate-authority-arn', ca.arn, '--certificate-arn', second]);
      assert.equal(waited.code, 0, waited.stderr);
    } finally {
      peer.pca.inProgressCalls = 0;
    }

    const garbage = join(dir, 'garbage.csr');
    await writeFile(garbage, 'not a CSR');
    await awsFails(['acm-pca', 'issue-certificate', '--certificate-authority-arn', ca.arn, '--csr', `fileb://${garbage}`, '--signing-algorithm', 'SHA256WITHECDSA', '--validity', 'Value=1,Type=DAYS'], 'MalformedCSRException');
    await awsFails([...issueArgs.slice(0, 7), 'SHA256WITHRSA', '--validity', 'Value=1,Type=DAYS'], 'InvalidArgsException');
    peer.inject({ op: 'ACMPrivateCA.IssueCertificate', kind: 'denied' });
    const denied = await awsFails(issueArgs, 'AccessDeniedException');
    assert.match(denied, /not authorized to perform: acm-pca:IssueCertificate/);
    peer.inject({ op: 'ACMPrivateCA.GetCertificate', kind: 'throttle' });
    await awsFails(getArgs, 'ThrottlingException');
    await awsFails(['acm-pca', 'get-certificate', '--certificate-authority-arn', ca.arn, '--certificate-arn', `${ca.arn}/certificate/00`], 'ResourceNotFoundException');
  });

  it('refuses a wrong secret key and an unknown access key; every accepted call was signed by the test key', async () => {
    peer.resetCalls();
    const bad = await awsFails(['secretsmanager', 'get-secret-value', '--secret-id', 'prod/web'], 'InvalidSignatureException',
      { AWS_SECRET_ACCESS_KEY: 'wrong-secret' });
    assert.match(bad, /signature we calculated does not match/);
    await awsFails(['kms', 'list-keys'], 'InvalidSignatureException', { AWS_SECRET_ACCESS_KEY: 'wrong-secret' });
    await awsFails(['ssm', 'get-parameter', '--name', '/certd/tls/key'], 'UnrecognizedClientException', { AWS_ACCESS_KEY_ID: 'AKIDNOBODY' });
    assert.equal(peer.callsTotal(), 0);
    assert.equal(peer.rejected['InvalidSignatureException'], 2);
    assert.equal(peer.rejected['UnrecognizedClientException'], 1);
    assert.equal((await awsJson(['secretsmanager', 'get-secret-value', '--secret-id', 'prod/web']))['SecretString'], 'v3');
    assert.deepEqual(new Set(peer.seenAccessKeys.map((s) => s.accessKeyId)), new Set([DEFAULT_TEST_CREDENTIALS.accessKeyId]));
    assert.deepEqual(peer.internalErrors.map((e) => e.message), []);
  });
});
