// The AWS peer driven by the AWS SDK for JavaScript v3, as certd drives AWS: signing, error
// parsing, retries, pagination and the container credential chain are the SDK's own.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac, createPublicKey, constants, verify as nodeVerify, type KeyObject } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BatchGetSecretValueCommand, CreateSecretCommand, DescribeSecretCommand, GetSecretValueCommand,
  ListSecretVersionIdsCommand, PutSecretValueCommand, SecretsManagerClient, UpdateSecretVersionStageCommand,
} from '@aws-sdk/client-secrets-manager';
import {
  DescribeParametersCommand, GetParameterCommand, GetParametersByPathCommand, GetParametersCommand, PutParameterCommand, SSMClient,
  type ParameterStringFilter,
} from '@aws-sdk/client-ssm';
import {
  CreateAliasCommand, CreateKeyCommand, DecryptCommand, EncryptCommand, GetPublicKeyCommand, KMSClient, SignCommand,
  type KeySpec, type SigningAlgorithmSpec,
} from '@aws-sdk/client-kms';
import { DEFAULT_TEST_CREDENTIALS, startAwsPeer, type AwsPeer } from '../peers/aws-peer.js';
import { peerClientConfig } from '../peers/aws-clients.js';
import { startEcsCredentialsServer } from '../peers/ecs-credentials.js';
import { formatAmzDate, signingKey } from '../peers/aws-sigv4.js';

async function rejectsWith(p: Promise<unknown>, name: string, message?: RegExp): Promise<Error & { $metadata?: { attempts?: number; httpStatusCode?: number } }> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof Error, `expected an Error, got ${String(e)}`);
    assert.equal(e.name, name, `expected ${name}, got ${e.name}: ${e.message}`);
    if (message !== undefined) assert.match(e.message, message);
    return e;
  }
  assert.fail(`expected ${name}, but the call succeeded`);
}

function noInternalErrors(peer: AwsPeer): void {
  assert.deepEqual(peer.internalErrors.map((e) => e.message), []);
}

describe('AWS peer through the SDK: Secrets Manager', () => {
  let peer: AwsPeer;
  let sm: SecretsManagerClient;
  before(async () => {
    peer = await startAwsPeer();
    sm = new SecretsManagerClient(peerClientConfig(peer));
  });
  after(async () => {
    sm.destroy();
    await peer.close();
  });

  it('keeps AWS stage semantics across put, pending and a stage move', async () => {
    const created = await sm.send(new CreateSecretCommand({ Name: 'prod/web', SecretString: 'v1' }));
    assert.match(created.ARN ?? '', /^arn:aws:secretsmanager:us-east-1:123456789012:secret:prod\/web-[A-Za-z0-9]{6}$/);
    const v1 = created.VersionId!;
    const v2 = (await sm.send(new PutSecretValueCommand({ SecretId: 'prod/web', SecretString: 'v2' }))).VersionId!;
    let cur = await sm.send(new GetSecretValueCommand({ SecretId: 'prod/web' }));
    assert.equal(cur.SecretString, 'v2');
    assert.deepEqual(cur.VersionStages, ['AWSCURRENT']);
    assert.ok(cur.CreatedDate instanceof Date && Math.abs(cur.CreatedDate.getTime() - Date.now()) < 60_000);
    const prev = await sm.send(new GetSecretValueCommand({ SecretId: created.ARN!, VersionStage: 'AWSPREVIOUS' }));
    assert.equal(prev.SecretString, 'v1');
    assert.equal(prev.VersionId, v1);

    const pending = await sm.send(new PutSecretValueCommand({ SecretId: 'prod/web', SecretString: 'v3', VersionStages: ['AWSPENDING'] }));
    assert.deepEqual(pending.VersionStages, ['AWSPENDING']);
    cur = await sm.send(new GetSecretValueCommand({ SecretId: 'prod/web' }));
    assert.equal(cur.SecretString, 'v2', 'a pending version must not become current');

    await rejectsWith(
      sm.send(new UpdateSecretVersionStageCommand({ SecretId: 'prod/web', VersionStage: 'AWSCURRENT', MoveToVersionId: pending.VersionId! })),
      'InvalidParameterException',
    );
    await sm.send(new UpdateSecretVersionStageCommand({
      SecretId: 'prod/web', VersionStage: 'AWSCURRENT', MoveToVersionId: pending.VersionId!, RemoveFromVersionId: v2,
    }));
    const described = await sm.send(new DescribeSecretCommand({ SecretId: 'prod/web' }));
    assert.deepEqual(described.VersionIdsToStages, {
      [v2]: ['AWSPREVIOUS'],
      [pending.VersionId!]: ['AWSPENDING', 'AWSCURRENT'],
    });
    const listed = await sm.send(new ListSecretVersionIdsCommand({ SecretId: 'prod/web' }));
    assert.deepEqual(listed.Versions?.map((v) => v.VersionId), [v2, pending.VersionId], 'v1 lost its labels: deprecated');
    const all = await sm.send(new ListSecretVersionIdsCommand({ SecretId: 'prod/web', IncludeDeprecated: true }));
    assert.equal(all.Versions?.length, 3);
    noInternalErrors(peer);
  });

  it('is idempotent on ClientRequestToken and refuses a changed value under the same token', async () => {
    await sm.send(new CreateSecretCommand({ Name: 'idem', SecretString: 'a' }));
    const token = '0123456789abcdef0123456789abcdef';
    const first = await sm.send(new PutSecretValueCommand({ SecretId: 'idem', SecretString: 'b', ClientRequestToken: token }));
    const again = await sm.send(new PutSecretValueCommand({ SecretId: 'idem', SecretString: 'b', ClientRequestToken: token }));
    assert.equal(first.VersionId, token);
    assert.equal(again.VersionId, token);
    await rejectsWith(sm.send(new PutSecretValueCommand({ SecretId: 'idem', SecretString: 'c', ClientRequestToken: token })), 'ResourceExistsException');
  });

  it('round-trips SecretBinary and answers missing secrets as AWS does', async () => {
    const bytes = Uint8Array.from([0, 1, 2, 250, 255]);
    await sm.send(new CreateSecretCommand({ Name: 'bin', SecretBinary: bytes }));
    const got = await sm.send(new GetSecretValueCommand({ SecretId: 'bin' }));
    assert.deepEqual(Buffer.from(got.SecretBinary!), Buffer.from(bytes));
    assert.equal(got.SecretString, undefined);
    const e = await rejectsWith(sm.send(new GetSecretValueCommand({ SecretId: 'missing' })), 'ResourceNotFoundException', /can't find the specified secret/);
    assert.equal(e.$metadata?.httpStatusCode, 400);
    await rejectsWith(sm.send(new GetSecretValueCommand({ SecretId: 'bin', VersionStage: 'AWSPENDING' })), 'ResourceNotFoundException', /staging label: AWSPENDING/);
  });

  it('BatchGetSecretValue returns values and per-secret errors, and refuses more than 20 ids', async () => {
    await sm.send(new CreateSecretCommand({ Name: 'batch/a', SecretString: 'A' }));
    await sm.send(new CreateSecretCommand({ Name: 'batch/b', SecretString: 'B' }));
    await sm.send(new CreateSecretCommand({ Name: 'batch/denied', SecretString: 'D' }));
    peer.denySecret('batch/denied');
    const out = await sm.send(new BatchGetSecretValueCommand({ SecretIdList: ['batch/a', 'batch/missing', 'batch/b', 'batch/denied'] }));
    assert.deepEqual(out.SecretValues?.map((v) => [v.Name, v.SecretString]), [['batch/a', 'A'], ['batch/b', 'B']]);
    assert.deepEqual(out.Errors?.map((e) => [e.SecretId, e.ErrorCode]), [
      ['batch/missing', 'ResourceNotFoundException'],
      ['batch/denied', 'AccessDeniedException'],
    ]);
    await rejectsWith(sm.send(new GetSecretValueCommand({ SecretId: 'batch/denied' })), 'AccessDeniedException', /not authorized/);
    const ids = Array.from({ length: 21 }, (_, i) => `s${i}`);
    await rejectsWith(sm.send(new BatchGetSecretValueCommand({ SecretIdList: ids })), 'ValidationException');
    const filtered = await sm.send(new BatchGetSecretValueCommand({ Filters: [{ Key: 'name', Values: ['batch/'] }], MaxResults: 2 }));
    assert.equal(filtered.SecretValues?.length, 2);
    assert.ok(filtered.NextToken, 'a second page remains');
    const rest = await sm.send(new BatchGetSecretValueCommand({ Filters: [{ Key: 'name', Values: ['batch/'] }], MaxResults: 2, NextToken: filtered.NextToken }));
    assert.deepEqual(rest.Errors?.map((e) => e.SecretId), ['batch/denied']);
    assert.equal(rest.NextToken, undefined);
  });
});

describe('AWS peer through the SDK: SSM Parameter Store', () => {
  let peer: AwsPeer;
  let ssm: SSMClient;
  before(async () => {
    peer = await startAwsPeer();
    ssm = new SSMClient(peerClientConfig(peer));
  });
  after(async () => {
    ssm.destroy();
    await peer.close();
  });

  it('stores SecureString encrypted, versions overwrites and refuses a silent overwrite', async () => {
    assert.deepEqual(await ssm.send(new PutParameterCommand({ Name: '/certd/key', Value: 'pem-1', Type: 'SecureString' })).then((r) => r.Version), 1);
    await rejectsWith(ssm.send(new PutParameterCommand({ Name: '/certd/key', Value: 'pem-2', Type: 'SecureString' })), 'ParameterAlreadyExists');
    assert.equal((await ssm.send(new PutParameterCommand({ Name: '/certd/key', Value: 'pem-2', Overwrite: true }))).Version, 2);
    const clear = await ssm.send(new GetParameterCommand({ Name: '/certd/key', WithDecryption: true }));
    assert.equal(clear.Parameter?.Value, 'pem-2');
    assert.equal(clear.Parameter?.Type, 'SecureString');
    assert.equal(clear.Parameter?.ARN, 'arn:aws:ssm:us-east-1:123456789012:parameter/certd/key');
    assert.ok(clear.Parameter?.LastModifiedDate instanceof Date);
    const opaque = await ssm.send(new GetParameterCommand({ Name: '/certd/key' }));
    assert.notEqual(opaque.Parameter?.Value, 'pem-2');
    assert.match(opaque.Parameter?.Value ?? '', /^[A-Za-z0-9+/]+=*$/);
    const v1 = await ssm.send(new GetParameterCommand({ Name: '/certd/key:1', WithDecryption: true }));
    assert.equal(v1.Parameter?.Value, 'pem-1');
    await rejectsWith(ssm.send(new GetParameterCommand({ Name: '/certd/nothing' })), 'ParameterNotFound');
    await rejectsWith(ssm.send(new PutParameterCommand({ Name: '/certd/big', Value: 'x'.repeat(4097), Type: 'String' })), 'ValidationException', /4096/);
    assert.equal((await ssm.send(new PutParameterCommand({ Name: '/certd/big', Value: 'x'.repeat(4097), Type: 'String', Tier: 'Advanced' }))).Tier, 'Advanced');
  });

  it('GetParameters reports missing names in InvalidParameters and caps the list at 10', async () => {
    await ssm.send(new PutParameterCommand({ Name: '/gp/a', Value: 'a', Type: 'String' }));
    const out = await ssm.send(new GetParametersCommand({ Names: ['/gp/a', '/gp/none'] }));
    assert.deepEqual(out.Parameters?.map((p) => p.Value), ['a']);
    assert.deepEqual(out.InvalidParameters, ['/gp/none']);
    await rejectsWith(ssm.send(new GetParametersCommand({ Names: Array.from({ length: 11 }, (_, i) => `/gp/${i}`) })), 'ValidationException');
  });

  it('GetParametersByPath pages honestly: short and empty pages still carry a NextToken', async () => {
    for (let i = 0; i < 12; i++) {
      await ssm.send(new PutParameterCommand({ Name: `/fleet/web/cert${String(i).padStart(2, '0')}`, Value: `c${i}`, Type: 'SecureString' }));
    }
    await ssm.send(new PutParameterCommand({ Name: '/fleet/web/deep/inner', Value: 'deep', Type: 'String' }));
    await ssm.send(new PutParameterCommand({ Name: '/fleet/other', Value: 'o', Type: 'String' }));

    peer.shortPages = true;
    peer.resetCalls();
    const sizes: number[] = [];
    const names: string[] = [];
    let token: string | undefined;
    do {
      const page = await ssm.send(new GetParametersByPathCommand({ Path: '/fleet/web', WithDecryption: true, MaxResults: 4, NextToken: token }));
      sizes.push(page.Parameters?.length ?? 0);
      for (const p of page.Parameters ?? []) {
        names.push(p.Name!);
        assert.equal(p.Value, `c${Number(p.Name!.slice(-2))}`);
      }
      token = page.NextToken;
    } while (token !== undefined && sizes.length < 50);
    assert.equal(names.length, 12, 'non-recursive: direct children only');
    assert.deepEqual(names, [...names].sort());
    assert.ok(sizes.some((s) => s === 0), `an empty page with a NextToken was served: ${sizes.join(',')}`);
    assert.ok(sizes.every((s) => s <= 4));
    assert.equal(peer.calls['AmazonSSM.GetParametersByPath'], sizes.length);

    peer.shortPages = false;
    const recursive = await ssm.send(new GetParametersByPathCommand({ Path: '/fleet', Recursive: true, MaxResults: 10 }));
    assert.equal(recursive.Parameters?.length, 10);
    assert.ok(recursive.NextToken);
    await rejectsWith(ssm.send(new GetParametersByPathCommand({ Path: '/fleet', MaxResults: 11 })), 'ValidationException');
    noInternalErrors(peer);
  });

  it('DescribeParameters answers metadata only, filtered by Path (Recursive or OneLevel), paged up to 50', async () => {
    for (let i = 0; i < 60; i++) {
      await ssm.send(new PutParameterCommand({ Name: `/desc/f${String(i).padStart(2, '0')}/cert`, Value: `c${i}`, Type: 'String' }));
    }
    await ssm.send(new PutParameterCommand({ Name: '/desc/f00/key', Value: 'k1', Type: 'SecureString' }));
    await ssm.send(new PutParameterCommand({ Name: '/desc/f00/key', Value: 'k2', Type: 'SecureString', Overwrite: true }));
    await ssm.send(new PutParameterCommand({ Name: '/desc/top', Value: 't', Type: 'String' }));
    await ssm.send(new PutParameterCommand({ Name: '/descx/other', Value: 'o', Type: 'String' }));
    const walk = async (filters: ParameterStringFilter[], max?: number) => {
      const out: Record<string, unknown>[] = [];
      const sizes: number[] = [];
      let token: string | undefined;
      do {
        const page = await ssm.send(new DescribeParametersCommand({ ParameterFilters: filters, ...(max === undefined ? {} : { MaxResults: max }), NextToken: token }));
        sizes.push(page.Parameters?.length ?? 0);
        out.push(...((page.Parameters ?? []) as Record<string, unknown>[]));
        token = page.NextToken;
      } while (token !== undefined && sizes.length < 100);
      return { out, sizes };
    };

    peer.shortPages = false;
    peer.resetCalls();
    const recursive = await walk([{ Key: 'Path', Option: 'Recursive', Values: ['/desc'] }], 50);
    assert.deepEqual(recursive.sizes, [50, 12], 'full pages of 50');
    assert.equal(recursive.out.length, 62, 'every parameter under /desc, none under /descx');
    const key = recursive.out.find((p) => p['Name'] === '/desc/f00/key')!;
    assert.equal(key['Version'], 2);
    assert.equal(key['Type'], 'SecureString');
    assert.equal(key['KeyId'], 'alias/aws/ssm');
    assert.equal(key['Tier'], 'Standard');
    assert.equal(key['DataType'], 'text');
    assert.equal(key['ARN'], 'arn:aws:ssm:us-east-1:123456789012:parameter/desc/f00/key');
    assert.ok(key['LastModifiedDate'] instanceof Date, 'epoch seconds parsed by the SDK');
    // On the wire (the SDK would drop an unknown member): no value, epoch-seconds dates.
    const raw = (await peer.invoke('AmazonSSM.DescribeParameters', { ParameterFilters: [{ Key: 'Path', Option: 'Recursive', Values: ['/desc'] }], MaxResults: 50 })) as { Parameters: Record<string, unknown>[] };
    assert.equal(raw.Parameters.length, 50);
    assert.ok(raw.Parameters.every((p) => !('Value' in p)), 'never a value');
    assert.ok(raw.Parameters.every((p) => typeof p['LastModifiedDate'] === 'number'));
    assert.equal(peer.calls['AmazonSSM.DescribeParameters'], 2);

    const oneLevel = await walk([{ Key: 'Path', Values: ['/desc/'] }]);
    assert.deepEqual(oneLevel.out.map((p) => p['Name']), ['/desc/top'], 'OneLevel is the default: direct children only');
    const byType = await walk([{ Key: 'Path', Option: 'Recursive', Values: ['/desc'] }, { Key: 'Type', Values: ['SecureString'] }]);
    assert.deepEqual(byType.out.map((p) => p['Name']), ['/desc/f00/key'], 'filters are ANDed');

    peer.shortPages = true;
    const short = await walk([{ Key: 'Path', Option: 'Recursive', Values: ['/desc'] }], 10);
    assert.equal(short.out.length, 62);
    assert.ok(short.sizes.some((n) => n === 0), `an empty page with a NextToken was served: ${short.sizes.join(',')}`);
    assert.ok(short.sizes.every((n) => n <= 10));
    peer.shortPages = false;

    await rejectsWith(ssm.send(new DescribeParametersCommand({ MaxResults: 51 })), 'ValidationException', /less than or equal to 50/);
    await rejectsWith(ssm.send(new DescribeParametersCommand({ MaxResults: 0 })), 'ValidationException', /greater than or equal to 1/);
    await rejectsWith(ssm.send(new DescribeParametersCommand({ ParameterFilters: [{ Key: 'Path', Option: 'Equals', Values: ['/desc'] }] })), 'InvalidFilterOption');
    await rejectsWith(ssm.send(new DescribeParametersCommand({ ParameterFilters: [{ Key: 'Label', Values: ['x'] }] })), 'InvalidFilterKey');
    await rejectsWith(ssm.send(new DescribeParametersCommand({ ParameterFilters: [{ Key: 'Path', Option: 'Recursive', Values: ['desc'] }] })), 'InvalidFilterValue');
    await rejectsWith(ssm.send(new DescribeParametersCommand({ ParameterFilters: [{ Key: 'Path', Option: 'Recursive', Values: ['/desc'] }], NextToken: 'bogus' })), 'InvalidNextToken');
    noInternalErrors(peer);
  });
});

describe('AWS peer through the SDK: KMS', () => {
  let peer: AwsPeer;
  let kms: KMSClient;
  before(async () => {
    peer = await startAwsPeer();
    kms = new KMSClient(peerClientConfig(peer));
  });
  after(async () => {
    kms.destroy();
    await peer.close();
  });

  it('binds the encryption context: same context in any order decrypts, another one fails', async () => {
    const key = await kms.send(new CreateKeyCommand({}));
    assert.equal(key.KeyMetadata?.KeySpec, 'SYMMETRIC_DEFAULT');
    await kms.send(new CreateAliasCommand({ AliasName: 'alias/certd', TargetKeyId: key.KeyMetadata!.KeyId! }));
    const plaintext = Buffer.from('private key bytes stand-in');
    const enc = await kms.send(new EncryptCommand({ KeyId: 'alias/certd', Plaintext: plaintext, EncryptionContext: { app: 'certd', env: 'prod' } }));
    assert.equal(enc.KeyId, key.KeyMetadata!.Arn);
    assert.ok(!Buffer.from(enc.CiphertextBlob!).includes(plaintext));
    const dec = await kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, EncryptionContext: { env: 'prod', app: 'certd' } }));
    assert.deepEqual(Buffer.from(dec.Plaintext!), plaintext);
    assert.equal(dec.KeyId, key.KeyMetadata!.Arn);
    assert.equal(dec.EncryptionAlgorithm, 'SYMMETRIC_DEFAULT');
    await rejectsWith(kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, EncryptionContext: { app: 'certd', env: 'dev' } })), 'InvalidCiphertextException');
    await rejectsWith(kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob })), 'InvalidCiphertextException');
    const other = await kms.send(new CreateKeyCommand({}));
    await rejectsWith(
      kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, EncryptionContext: { app: 'certd', env: 'prod' }, KeyId: other.KeyMetadata!.KeyId! })),
      'IncorrectKeyException',
    );
  });

  const cases: { spec: KeySpec; algs: SigningAlgorithmSpec[] }[] = [
    { spec: 'ECC_NIST_P256', algs: ['ECDSA_SHA_256'] },
    { spec: 'ECC_NIST_P384', algs: ['ECDSA_SHA_384'] },
    {
      spec: 'RSA_2048',
      algs: ['RSASSA_PSS_SHA_256', 'RSASSA_PSS_SHA_384', 'RSASSA_PSS_SHA_512', 'RSASSA_PKCS1_V1_5_SHA_256', 'RSASSA_PKCS1_V1_5_SHA_384', 'RSASSA_PKCS1_V1_5_SHA_512'],
    },
  ];
  for (const { spec, algs } of cases) {
    it(`${spec}: Sign over RAW and DIGEST verifies with node:crypto against GetPublicKey`, async () => {
      const created = await kms.send(new CreateKeyCommand({ KeySpec: spec, KeyUsage: 'SIGN_VERIFY' }));
      const keyId = created.KeyMetadata!.KeyId!;
      const pub = await kms.send(new GetPublicKeyCommand({ KeyId: keyId }));
      assert.equal(pub.KeySpec, spec);
      assert.deepEqual(pub.SigningAlgorithms, algs);
      const publicKey = createPublicKey({ key: Buffer.from(pub.PublicKey!), format: 'der', type: 'spki' });
      const message = Buffer.from('certd handshake transcript stand-in');
      for (const alg of algs) {
        const hash = alg.endsWith('256') ? 'sha256' : alg.endsWith('384') ? 'sha384' : 'sha512';
        const raw = await kms.send(new SignCommand({ KeyId: keyId, Message: message, MessageType: 'RAW', SigningAlgorithm: alg }));
        assert.equal(raw.SigningAlgorithm, alg);
        assert.ok(verifies(publicKey, alg, hash, message, Buffer.from(raw.Signature!)), `${alg} RAW`);
        const digest = createHash(hash).update(message).digest();
        const dig = await kms.send(new SignCommand({ KeyId: keyId, Message: digest, MessageType: 'DIGEST', SigningAlgorithm: alg }));
        assert.ok(verifies(publicKey, alg, hash, message, Buffer.from(dig.Signature!)), `${alg} DIGEST`);
        assert.ok(!verifies(publicKey, alg, hash, Buffer.from('another message'), Buffer.from(dig.Signature!)), `${alg} must not verify another message`);
      }
      await rejectsWith(
        kms.send(new SignCommand({ KeyId: keyId, Message: Buffer.alloc(20), MessageType: 'DIGEST', SigningAlgorithm: algs[0]! })),
        'ValidationException',
      );
      noInternalErrors(peer);
    });
  }

  it('refuses signing with an encryption key and GetPublicKey on a symmetric key', async () => {
    const sym = await kms.send(new CreateKeyCommand({}));
    await rejectsWith(kms.send(new SignCommand({ KeyId: sym.KeyMetadata!.KeyId!, Message: Buffer.from('m'), SigningAlgorithm: 'ECDSA_SHA_256' })), 'InvalidKeyUsageException');
    await rejectsWith(kms.send(new GetPublicKeyCommand({ KeyId: sym.KeyMetadata!.KeyId! })), 'UnsupportedOperationException');
    await rejectsWith(kms.send(new GetPublicKeyCommand({ KeyId: '00000000-0000-0000-0000-000000000000' })), 'NotFoundException');
  });
});

function verifies(key: KeyObject, alg: string, hash: string, message: Buffer, signature: Buffer): boolean {
  if (alg.startsWith('ECDSA')) return nodeVerify(hash, message, { key, dsaEncoding: 'der' }, signature);
  if (alg.startsWith('RSASSA_PSS')) {
    return nodeVerify(hash, message, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: createHash(hash).digest().length }, signature);
  }
  return nodeVerify(hash, message, { key, padding: constants.RSA_PKCS1_PADDING }, signature);
}

describe('AWS peer through the SDK: SigV4 verification', () => {
  let peer: AwsPeer;
  before(async () => {
    peer = await startAwsPeer();
    await peer.invoke('secretsmanager.CreateSecret', { Name: 'sig', SecretString: 's' });
  });
  after(async () => peer.close());

  it('accepts the right key, refuses a wrong secret, an unknown key id and another region', async () => {
    const ok = new SecretsManagerClient(peerClientConfig(peer));
    assert.equal((await ok.send(new GetSecretValueCommand({ SecretId: 'sig' }))).SecretString, 's');
    ok.destroy();
    assert.deepEqual(peer.seenAccessKeys.at(-1), { op: 'secretsmanager.GetSecretValue', accessKeyId: DEFAULT_TEST_CREDENTIALS.accessKeyId });

    const wrongSecret = new SecretsManagerClient({ ...peerClientConfig(peer), credentials: { ...DEFAULT_TEST_CREDENTIALS, secretAccessKey: 'not-the-secret' } });
    await rejectsWith(wrongSecret.send(new GetSecretValueCommand({ SecretId: 'sig' })), 'InvalidSignatureException', /signature we calculated does not match/);
    wrongSecret.destroy();

    const unknown = new SecretsManagerClient({ ...peerClientConfig(peer), credentials: { accessKeyId: 'AKIDUNKNOWN', secretAccessKey: 'x' } });
    await rejectsWith(unknown.send(new GetSecretValueCommand({ SecretId: 'sig' })), 'UnrecognizedClientException', /security token included in the request is invalid/);
    unknown.destroy();

    const token = new SecretsManagerClient({ ...peerClientConfig(peer), credentials: { ...DEFAULT_TEST_CREDENTIALS, sessionToken: 'stray' } });
    await rejectsWith(token.send(new GetSecretValueCommand({ SecretId: 'sig' })), 'UnrecognizedClientException');
    token.destroy();

    const region = new SecretsManagerClient({ ...peerClientConfig(peer), region: 'eu-west-1' });
    await rejectsWith(region.send(new GetSecretValueCommand({ SecretId: 'sig' })), 'InvalidSignatureException', /region/);
    region.destroy();
    assert.equal(peer.calls['secretsmanager.GetSecretValue'], 1, 'refused requests never reach an operation');
  });

  it('refuses a request whose credential scope names another service than the target\'s', async () => {
    const body = JSON.stringify({ SecretId: 'sig' });
    const send = async (service: string): Promise<{ status: number; type: string }> => {
      const amzDate = formatAmzDate(Date.now());
      const host = new URL(peer.url).host;
      const signed = 'content-type;host;x-amz-date;x-amz-target';
      const canonical = ['POST', '/', '', `content-type:application/x-amz-json-1.1\nhost:${host}\nx-amz-date:${amzDate}\nx-amz-target:secretsmanager.GetSecretValue\n`,
        signed, createHash('sha256').update(body).digest('hex')].join('\n');
      const scope = `${amzDate.slice(0, 8)}/us-east-1/${service}/aws4_request`;
      const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, createHash('sha256').update(canonical).digest('hex')].join('\n');
      const signature = createHmac('sha256', signingKey(DEFAULT_TEST_CREDENTIALS.secretAccessKey, amzDate.slice(0, 8), 'us-east-1', service))
        .update(toSign).digest('hex');
      const res = await fetch(peer.url, {
        method: 'POST',
        body,
        headers: {
          'content-type': 'application/x-amz-json-1.1',
          'x-amz-date': amzDate,
          'x-amz-target': 'secretsmanager.GetSecretValue',
          authorization: `AWS4-HMAC-SHA256 Credential=${DEFAULT_TEST_CREDENTIALS.accessKeyId}/${scope}, SignedHeaders=${signed}, Signature=${signature}`,
        },
      });
      return { status: res.status, type: String(((await res.json()) as Record<string, unknown>)['__type']) };
    };
    assert.deepEqual(await send('secretsmanager'), { status: 200, type: 'undefined' });
    const wrong = await send('ssm');
    assert.equal(wrong.status, 400);
    assert.match(wrong.type, /#InvalidSignatureException$/);
  });

  it('refuses a request dated 20 minutes ago; the SDK corrects its clock from Date and retries', async () => {
    peer.resetCalls();
    const skewed = new SecretsManagerClient({ ...peerClientConfig(peer), systemClockOffset: -20 * 60_000, maxAttempts: 1 });
    await rejectsWith(skewed.send(new GetSecretValueCommand({ SecretId: 'sig' })), 'InvalidSignatureException', /Signature expired/);
    skewed.destroy();
    const corrected = new SecretsManagerClient({ ...peerClientConfig(peer), systemClockOffset: -20 * 60_000 });
    assert.equal((await corrected.send(new GetSecretValueCommand({ SecretId: 'sig' }))).SecretString, 's');
    corrected.destroy();
    assert.equal(peer.rejected['InvalidSignatureException'], 2);
    assert.equal(peer.calls['secretsmanager.GetSecretValue'], 1);
  });
});

describe('AWS peer through the SDK: container credentials (ECS full URI with a token file)', () => {
  const container = { accessKeyId: 'ASIACONTAINEREXAMPLE', secretAccessKey: 'container/secret/EXAMPLE', sessionToken: 'container-session-token-EXAMPLE' };
  let peer: AwsPeer;
  let dir: string;
  const saved = new Map<string, string | undefined>();
  const setEnv = (k: string, v: string | undefined): void => {
    if (!saved.has(k)) saved.set(k, process.env[k]);
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  };

  before(async () => {
    peer = await startAwsPeer({ credentials: [DEFAULT_TEST_CREDENTIALS, container] });
    await peer.invoke('secretsmanager.CreateSecret', { Name: 'ecs/cert', SecretString: 'pem' });
    dir = await mkdtemp(join(tmpdir(), 'certd-ecs-'));
  });
  after(async () => {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    await peer.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('the default chain fetches credentials with the token and the peer sees them sign', async () => {
    const token = 'Bearer-certd-task-token';
    const ecs = await startEcsCredentialsServer({ token, credentials: container });
    try {
      const tokenFile = join(dir, 'token');
      await writeFile(tokenFile, token); // no trailing newline: the SDK sends the file verbatim
      for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE', 'AWS_WEB_IDENTITY_TOKEN_FILE',
        'AWS_CONTAINER_CREDENTIALS_RELATIVE_URI', 'AWS_CONTAINER_AUTHORIZATION_TOKEN']) setEnv(k, undefined);
      setEnv('AWS_CONFIG_FILE', join(dir, 'config'));
      setEnv('AWS_SHARED_CREDENTIALS_FILE', join(dir, 'credentials'));
      setEnv('AWS_EC2_METADATA_DISABLED', 'true');
      setEnv('AWS_CONTAINER_CREDENTIALS_FULL_URI', ecs.url);
      setEnv('AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE', tokenFile);

      const sm = new SecretsManagerClient({ endpoint: peer.url, region: peer.region });
      try {
        assert.equal((await sm.send(new GetSecretValueCommand({ SecretId: 'ecs/cert' }))).SecretString, 'pem');
      } finally {
        sm.destroy();
      }
      assert.deepEqual(peer.seenAccessKeys.at(-1), {
        op: 'secretsmanager.GetSecretValue', accessKeyId: container.accessKeyId, sessionToken: container.sessionToken,
      });
      assert.ok(ecs.requests.length >= 1 && ecs.requests.every((r) => r.authorized && r.method === 'GET'));

      const refused = await fetch(ecs.url, { headers: { Authorization: 'wrong' } });
      assert.equal(refused.status, 401);
      assert.equal(ecs.requests.at(-1)?.authorized, false);
    } finally {
      await ecs.close();
    }
  });
});

describe('AWS peer through the SDK: faults and retries', () => {
  let peer: AwsPeer;
  let sm: SecretsManagerClient;
  before(async () => {
    peer = await startAwsPeer();
    await peer.invoke('secretsmanager.CreateSecret', { Name: 'f', SecretString: 'ok' });
    // Without throwOnRequestTimeout this SDK only logs a warning when requestTimeout passes and
    // waits on a hung endpoint for ever.
    sm = new SecretsManagerClient({ ...peerClientConfig(peer), requestHandler: { requestTimeout: 500, throwOnRequestTimeout: true } });
  });
  after(async () => {
    sm.destroy();
    await peer.close();
  });
  const get = (): Promise<string | undefined> => sm.send(new GetSecretValueCommand({ SecretId: 'f' })).then((r) => r.SecretString);

  it('retries two 500s and a 503 and then succeeds (3 attempts by default)', async () => {
    peer.resetCalls();
    peer.inject({ op: 'secretsmanager.GetSecretValue', kind: '5xx', count: 2 });
    assert.equal(await get(), 'ok');
    assert.equal(peer.calls['secretsmanager.GetSecretValue'], 3);
    peer.inject({ op: 'secretsmanager.GetSecretValue', kind: '5xx', status: 503, count: 1 });
    assert.equal(await get(), 'ok');
    assert.equal(peer.calls['secretsmanager.GetSecretValue'], 5);
  });

  it('gives up after maxAttempts with the service error', async () => {
    peer.resetCalls();
    const h = peer.inject({ kind: '5xx', count: Infinity });
    const e = await rejectsWith(get(), 'InternalServiceError');
    assert.equal(e.$metadata?.attempts, 3);
    assert.equal(e.$metadata?.httpStatusCode, 500);
    h.remove();
    assert.equal(h.fired, 3);
  });

  it('retries throttling and counts the throttled answers', async () => {
    peer.resetCalls();
    peer.inject({ op: 'secretsmanager.GetSecretValue', kind: 'throttle', count: 2 });
    assert.equal(await get(), 'ok');
    assert.equal(peer.calls['secretsmanager.GetSecretValue'], 3);
    assert.equal(peer.throttled['secretsmanager.GetSecretValue'], 2);
  });

  it('retries a closed connection and a hung request (after the client timeout)', async () => {
    peer.resetCalls();
    peer.inject({ kind: 'close' });
    assert.equal(await get(), 'ok');
    assert.equal(peer.calls['secretsmanager.GetSecretValue'], 2);
    peer.inject({ kind: 'hang' });
    const t0 = Date.now();
    assert.equal(await get(), 'ok');
    assert.ok(Date.now() - t0 >= 450, 'the hung attempt lasted until the request timeout');
    assert.equal(peer.calls['secretsmanager.GetSecretValue'], 4);
  });

  it('delays a request by the injected latency', async () => {
    peer.inject({ op: 'secretsmanager.GetSecretValue', kind: 'latency', ms: 250 });
    const t0 = Date.now();
    assert.equal(await get(), 'ok');
    assert.ok(Date.now() - t0 >= 240);
  });
});

describe('AWS peer through the SDK: quota buckets', () => {
  it('enforces BatchGetSecretValue at 100/s and the SSM reads (DescribeParameters too) sharing 40/s, refilling with time', async () => {
    let clock = Date.now();
    const peer = await startAwsPeer({ quotas: true, now: () => clock });
    const sm = new SecretsManagerClient({ ...peerClientConfig(peer), maxAttempts: 1 });
    const ssm = new SSMClient({ ...peerClientConfig(peer), maxAttempts: 1 });
    try {
      await peer.invoke('secretsmanager.CreateSecret', { Name: 'q', SecretString: 'v' });
      await peer.invoke('AmazonSSM.PutParameter', { Name: '/q/p', Value: 'v', Type: 'String' });
      const batch = await Promise.allSettled(Array.from({ length: 110 }, () => sm.send(new BatchGetSecretValueCommand({ SecretIdList: ['q'] }))));
      assert.equal(batch.filter((r) => r.status === 'fulfilled').length, 100);
      for (const r of batch) if (r.status === 'rejected') assert.equal((r.reason as Error).name, 'ThrottlingException');
      assert.equal(peer.throttled['secretsmanager.BatchGetSecretValue'], 10);
      // GetSecretValue has its own, far larger bucket.
      assert.equal((await sm.send(new GetSecretValueCommand({ SecretId: 'q' }))).SecretString, 'v');

      // DescribeParameters is charged to the same bucket (a conservative choice, see QUOTA_BUCKETS).
      const reads = Array.from({ length: 45 }, (_, i) =>
        i % 4 === 0 ? ssm.send(new GetParameterCommand({ Name: '/q/p' }))
          : i % 4 === 1 ? ssm.send(new GetParametersCommand({ Names: ['/q/p'] }))
            : i % 4 === 2 ? ssm.send(new GetParametersByPathCommand({ Path: '/q' }))
              : ssm.send(new DescribeParametersCommand({ ParameterFilters: [{ Key: 'Path', Values: ['/q'] }] })));
      const settled = await Promise.allSettled(reads);
      assert.equal(settled.filter((r) => r.status === 'fulfilled').length, 40);
      const throttledSsm = ['GetParameter', 'GetParameters', 'GetParametersByPath', 'DescribeParameters']
        .reduce((n, op) => n + (peer.throttled[`AmazonSSM.${op}`] ?? 0), 0);
      assert.equal(throttledSsm, 5);
      await rejectsWith(ssm.send(new GetParameterCommand({ Name: '/q/p' })), 'ThrottlingException', /Rate exceeded/);
      clock += 100; // a tenth of a second refills 4 of 40
      const after = await Promise.allSettled(Array.from({ length: 6 }, () => ssm.send(new GetParameterCommand({ Name: '/q/p' }))));
      assert.equal(after.filter((r) => r.status === 'fulfilled').length, 4);
      noInternalErrors(peer);
    } finally {
      sm.destroy();
      ssm.destroy();
      await peer.close();
    }
  });

  it('draws KMS Sign from the RSA or the ECC bucket by key type', async () => {
    // A clock held still at the start: no refill, and still near the client's for the skew check.
    const fixed = Date.now();
    const p2 = await startAwsPeer({ quotas: { 'kms.rsa': 3, 'kms.ecc': 2 }, now: () => fixed });
    const kms = new KMSClient({ ...peerClientConfig(p2), maxAttempts: 1 });
    try {
      const ec = await kms.send(new CreateKeyCommand({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' }));
      const rsa = await kms.send(new CreateKeyCommand({ KeySpec: 'RSA_2048', KeyUsage: 'SIGN_VERIFY' }));
      const sign = (keyId: string, alg: SigningAlgorithmSpec): Promise<unknown> =>
        kms.send(new SignCommand({ KeyId: keyId, Message: Buffer.from('m'), SigningAlgorithm: alg }));
      await sign(ec.KeyMetadata!.KeyId!, 'ECDSA_SHA_256');
      await sign(ec.KeyMetadata!.KeyId!, 'ECDSA_SHA_256');
      await rejectsWith(sign(ec.KeyMetadata!.KeyId!, 'ECDSA_SHA_256'), 'ThrottlingException');
      for (let i = 0; i < 3; i++) await sign(rsa.KeyMetadata!.KeyId!, 'RSASSA_PSS_SHA_256');
      await rejectsWith(sign(rsa.KeyMetadata!.KeyId!, 'RSASSA_PSS_SHA_256'), 'ThrottlingException');
      assert.equal(p2.throttled['TrentService.Sign'], 2);
    } finally {
      kms.destroy();
      await p2.close();
    }
  });
});
