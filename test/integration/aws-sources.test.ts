// The AWS sources end to end: `bin/certd rotate --now` as a child process reads the AWS peer
// through the real SDK (SigV4, retries, the credential chain), deploys to tmpfs, reloads a real
// nginx and checks what it serves. Secrets Manager stages (AWSCURRENT deployed, AWSPENDING
// never), SSM path discovery, KMS-encrypted keys (and a wrong encryption context), the kms-ca
// issuer, not-found/access-denied messages, and ECS container credentials.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { CreateKeyCommand, GetPublicKeyCommand, KMSClient, SignCommand } from '@aws-sdk/client-kms';
import { type CaSigner, digestOf, selfSignedCa } from '../../src/issuer.js';
import { runCertd, shmDir } from '../helpers/cli.js';
import { requireNginx, startNginx, type NginxServerBlock, type RunningNginx } from '../helpers/nginx.js';
import { TestPki, type Issued } from '../helpers/pki.js';
import { handshake } from '../helpers/tls.js';
import { peerClientConfig } from '../peers/aws-clients.js';
import { startAwsPeer, type AwsPeer } from '../peers/aws-peer.js';
import { startEcsCredentialsServer } from '../peers/ecs-credentials.js';
import { awsEnv, createSecret, createSymmetricKey, kmsEncrypt, moveCurrent, putParameterSet, putSecret, secretJson } from './aws-fixtures.js';

const CONTEXT = { app: 'web', env: 'test' };

interface CaKey {
  name: string;
  spec: 'RSA_2048' | 'ECC_NIST_P256';
  keyId: string;
  caPath: string;
  caPem: string;
}

function pemOf(der: Buffer): string {
  return `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END CERTIFICATE-----\n`;
}

/** A CA certificate for a KMS key, self-signed through KMS Sign (the test's own signer, via the SDK). */
async function kmsCa(kms: KMSClient, dir: string, name: string, spec: CaKey['spec']): Promise<CaKey> {
  const keyId = (await kms.send(new CreateKeyCommand({ KeySpec: spec, KeyUsage: 'SIGN_VERIFY' }))).KeyMetadata!.KeyId!;
  const spki = Buffer.from((await kms.send(new GetPublicKeyCommand({ KeyId: keyId }))).PublicKey!);
  const rsa = spec.startsWith('RSA');
  const signer: CaSigner = {
    algorithm: rsa ? 'sha256WithRSAEncryption' : 'ecdsa-with-SHA256',
    description: `test ${name}`,
    certificate: async () => Buffer.alloc(0),
    async sign(tbs) {
      const out = await kms.send(new SignCommand({ KeyId: keyId, Message: digestOf(rsa ? 'sha256WithRSAEncryption' : 'ecdsa-with-SHA256', tbs), MessageType: 'DIGEST', SigningAlgorithm: rsa ? 'RSASSA_PKCS1_V1_5_SHA_256' : 'ECDSA_SHA_256' }));
      return Buffer.from(out.Signature!);
    },
  };
  const der = await selfSignedCa(signer, spki, `certd test KMS CA ${name}`, 365 * 86_400_000, new Date(), AbortSignal.timeout(10_000));
  const caPath = join(dir, `${name}.pem`);
  writeFileSync(caPath, pemOf(der));
  // The public key in the certificate is the KMS key's.
  assert.ok(createPublicKey({ key: spki, format: 'der', type: 'spki' }).equals(createPublicKey(readFileSync(caPath))));
  return { name, spec, keyId, caPath, caPem: pemOf(der) };
}

describe('AWS sources with bin/certd and a real nginx', () => {
  const scratch = shmDir('aws-sources');
  const dir = scratch.dir;
  const deploy = (n: string) => join(dir, 'deploy', n);
  let peer: AwsPeer;
  let kms: KMSClient;
  let pki: TestPki;
  let nginx: RunningNginx;
  let anchors: string;
  let symmetricKey: string;
  const cas: CaKey[] = [];
  const leaves: Record<string, Issued> = {};
  const port: Record<string, number> = {};
  let firstCalls: Record<string, number> = {};
  const HOST = { web: 'web.sm.certd.test', kmskey: 'kms.sm.certd.test', a: 'a.fleet.certd.test', b: 'b.fleet.certd.test', c: 'c.fleet.certd.test' } as const;

  const env = () => awsEnv(peer);

  const entries = (withServer: boolean): Record<string, unknown>[] => {
    const serve = (name: string, servername: string) =>
      withServer ? { reload: { command: nginx.reloadCommand, test: nginx.testCommand }, verify: { connect: `127.0.0.1:${port[name]}`, servername, timeout: '3s' } } : {};
    return [
      { name: 'web', source: { type: 'secrets-manager', secret_id: 'prod/web', endpoint: peer.url }, targets: [{ type: 'tmpfs', dir: deploy('web') }], ...serve('web', HOST.web) },
      {
        name: 'kmskey',
        source: { type: 'secrets-manager', secret_id: 'prod/kms', endpoint: peer.url, key_encryption: { kms: { encryption_context: CONTEXT, endpoint: peer.url } } },
        targets: [{ type: 'tmpfs', dir: deploy('kmskey') }],
        ...serve('kmskey', HOST.kmskey),
      },
      {
        name: 'fleet',
        source: { type: 'ssm', path: '/tls', endpoint: peer.url },
        targets: [{ type: 'tmpfs', dir: join(dir, 'deploy', 'fleet', '{name}') }],
        ...(withServer ? { reload: { command: nginx.reloadCommand, test: nginx.testCommand } } : {}),
      },
      ...cas.map((ca) => ({
        name: ca.name,
        source: { type: 'kms-ca', key_id: ca.keyId, ca_cert: ca.caPath, endpoint: peer.url, dns_names: [`${ca.name}.ca.certd.test`], ttl: '24h', key: ca.spec.startsWith('RSA') ? 'ec-p256' : 'rsa-2048' },
        targets: [{ type: 'tmpfs', dir: deploy(ca.name) }],
        ...serve(ca.name, `${ca.name}.ca.certd.test`),
      })),
    ];
  };

  const config = (certificates: Record<string, unknown>[], file = 'config.yaml'): string => {
    const path = join(dir, file);
    writeFileSync(path, stringify({ state_dir: join(dir, 'state'), policy: { trust_anchors: anchors }, certificates }));
    return path;
  };

  const rotate = async (cfg: string, extra: string[] = [], envOver: NodeJS.ProcessEnv = env()) => {
    const r = await runCertd(['rotate', '--now', '--config', cfg, '--json', ...extra], { env: envOver });
    let report: { ok: boolean; certificates: { name: string; result: string; version?: string; fingerprint?: string; error?: { code: string; message: string } }[] } | undefined;
    try {
      report = JSON.parse(r.stdout);
    } catch {
      report = undefined;
    }
    return { ...r, report };
  };

  const served = async (name: string, servername: string) => (await handshake({ port: port[name]!, servername })).fingerprint256;

  before(async () => {
    requireNginx();
    peer = await startAwsPeer();
    kms = new KMSClient(peerClientConfig(peer));
    pki = new TestPki(join(dir, 'pki'));
    for (const [k, host] of Object.entries(HOST)) leaves[k] = pki.leaf(k, { dns: [host] });
    symmetricKey = await createSymmetricKey(peer);
    await createSecret(peer, 'prod/web', secretJson(pki, leaves['web']!));
    const kmsKeyCipher = await kmsEncrypt(peer, symmetricKey, readFileSync(leaves['kmskey']!.keyPath), CONTEXT);
    await createSecret(peer, 'prod/kms', secretJson(pki, leaves['kmskey']!, kmsKeyCipher));
    for (const m of ['a', 'b', 'c'] as const) await putParameterSet(peer, `/tls/${m}`, pki, leaves[m]!);
    cas.push(await kmsCa(kms, dir, 'kms-rsa', 'RSA_2048'), await kmsCa(kms, dir, 'kms-ec', 'ECC_NIST_P256'));
    anchors = join(dir, 'anchors.pem');
    writeFileSync(anchors, pki.root.certPem + cas.map((c) => c.caPem).join(''));

    // First deployment before nginx exists: nothing to reload or verify yet.
    peer.resetCalls();
    const first = await rotate(config(entries(false)));
    assert.equal(first.code, 0, first.stdout + first.stderr);
    firstCalls = { ...peer.calls };
    const names = first.report!.certificates.map((c) => `${c.name}:${c.result}`).sort();
    assert.deepEqual(names, ['fleet-a:deployed', 'fleet-b:deployed', 'fleet-c:deployed', 'kms-ec:deployed', 'kms-rsa:deployed', 'kmskey:deployed', 'web:deployed']);

    const block = (serverName: string, d: string): NginxServerBlock => ({
      serverName,
      body: `ssl_certificate ${d}/fullchain.pem;\nssl_certificate_key ${d}/privkey.pem;\nssl_protocols TLSv1.2 TLSv1.3;`,
    });
    const servers: [string, NginxServerBlock][] = [
      ['web', block(HOST.web, deploy('web'))],
      ['kmskey', block(HOST.kmskey, deploy('kmskey'))],
      ...(['a', 'b', 'c'] as const).map((m): [string, NginxServerBlock] => [m, block(HOST[m], join(dir, 'deploy', 'fleet', m))]),
      ...cas.map((ca): [string, NginxServerBlock] => [ca.name, block(`${ca.name}.ca.certd.test`, deploy(ca.name))]),
    ];
    nginx = await startNginx({ prefix: join(dir, 'nginx'), servers: servers.map(([, s]) => s) });
    servers.forEach(([name], i) => (port[name] = nginx.ports[i]!));
  });

  after(async () => {
    kms?.destroy();
    await nginx?.stop();
    await peer?.close();
    scratch.cleanup();
  });

  it('serves what was deployed from every source', async () => {
    assert.equal(await served('web', HOST.web), leaves['web']!.fingerprint);
    assert.equal(await served('kmskey', HOST.kmskey), leaves['kmskey']!.fingerprint);
    for (const m of ['a', 'b', 'c'] as const) assert.equal(await served(m, HOST[m]), leaves[m]!.fingerprint, `fleet-${m}`);
  });

  it('does not deploy a version staged only as AWSPENDING', async () => {
    const next = pki.leaf('web2', { dns: [HOST.web] });
    leaves['web2'] = next;
    const pending = await putSecret(peer, 'prod/web', secretJson(pki, next), ['AWSPENDING']);
    const r = await rotate(config(entries(true)), ['--cert', 'web']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.report!.certificates[0]!.result, 'unchanged');
    assert.notEqual(r.report!.certificates[0]!.version, pending);
    assert.equal(await served('web', HOST.web), leaves['web']!.fingerprint);
    (leaves as Record<string, unknown>)['pendingVersion'] = pending;
  });

  it('deploys that version once it is moved to AWSCURRENT, and nginx serves it', async () => {
    const pending = (leaves as Record<string, unknown>)['pendingVersion'] as string;
    const current = ((await peer.invoke('secretsmanager.GetSecretValue', { SecretId: 'prod/web' })) as { VersionId: string }).VersionId;
    await moveCurrent(peer, 'prod/web', pending, current);
    const r = await rotate(config(entries(true)), ['--cert', 'web']);
    assert.equal(r.code, 0, r.stderr);
    const c = r.report!.certificates[0]!;
    assert.equal(c.result, 'deployed');
    assert.equal(c.version, pending, 'the version is the secret VersionId');
    assert.equal(await served('web', HOST.web), leaves['web2']!.fingerprint);
  });

  it('discovers every certificate under an SSM path, and a new folder on the next cycle', async () => {
    const d = pki.leaf('d', { dns: ['d.fleet.certd.test'] });
    await putParameterSet(peer, '/tls/d', pki, d);
    peer.resetCalls();
    const r = await rotate(config(entries(true)), ['--cert', 'fleet']);
    assert.equal(r.code, 0, r.stderr);
    const results = Object.fromEntries(r.report!.certificates.map((c) => [c.name, c.result]));
    assert.deepEqual(results, { 'fleet-a': 'unchanged', 'fleet-b': 'unchanged', 'fleet-c': 'unchanged', 'fleet-d': 'deployed' });
    assert.equal(readFileSync(join(dir, 'deploy', 'fleet', 'd', 'cert.pem'), 'utf8'), d.certPem);
    assert.deepEqual(Object.keys(peer.calls), ['AmazonSSM.GetParametersByPath'], 'the prefix is read by path pages only');
    for (const m of ['a', 'b', 'c'] as const) assert.equal(await served(m, HOST[m]), leaves[m]!.fingerprint);
    // Discovered members are configured certificates for status and the health check.
    const st = await runCertd(['status', '--config', config(entries(true)), '--json'], { env: env() });
    const members = JSON.parse(st.stdout).certificates.filter((c: { name: string }) => c.name.startsWith('fleet-'));
    assert.deepEqual(members.map((c: { name: string; configured: boolean }) => [c.name, c.configured]), [['fleet-a', true], ['fleet-b', true], ['fleet-c', true], ['fleet-d', true]]);
  });

  it('kms-ca: leaves signed in KMS chain to the CA (openssl verify) and are served', async () => {
    for (const ca of cas) {
      const leafPath = join(deploy(ca.name), 'cert.pem');
      const out = execFileSync('openssl', ['verify', '-CAfile', ca.caPath, leafPath], { encoding: 'utf8' });
      assert.match(out, /: OK/);
      const fp = execFileSync('openssl', ['x509', '-in', leafPath, '-noout', '-fingerprint', '-sha256'], { encoding: 'utf8' }).trim().split('=')[1];
      const hs = await handshake({ port: port[ca.name]!, servername: `${ca.name}.ca.certd.test`, ca: ca.caPem });
      assert.equal(hs.fingerprint256, fp);
      assert.ok(hs.authorized, `${ca.name}: the served chain verifies against the KMS CA`);
      const issuer = execFileSync('openssl', ['x509', '-in', leafPath, '-noout', '-issuer'], { encoding: 'utf8' });
      assert.match(issuer, new RegExp(`certd test KMS CA ${ca.name}`));
    }
    // The first cycle signed one leaf per CA in KMS, after checking each key once.
    assert.equal(firstCalls['TrentService.Sign'], 2);
    assert.equal(firstCalls['TrentService.GetPublicKey'], 2);
  });

  it('kms-ca refuses a KMS key that is not the CA certificate\'s key, naming both', async () => {
    const [rsa, ec] = cas as [CaKey, CaKey];
    const cfg = config([{ name: 'mismatch', source: { type: 'kms-ca', key_id: ec.keyId, ca_cert: rsa.caPath, endpoint: peer.url, dns_names: ['m.ca.certd.test'] }, targets: [{ type: 'tmpfs', dir: deploy('mismatch') }] }], 'mismatch.yaml');
    const r = await rotate(cfg);
    assert.equal(r.code, 1);
    const e = r.report!.certificates[0]!.error!;
    assert.match(e.message, /issuing mismatch with kms-ca:.*the KMS key's public key \(ECC_NIST_P256\) is not the key of CA certificate .*kms-rsa\.pem: check key_id and ca_cert/);
    assert.ok(!existsSync(join(deploy('mismatch'), 'cert.pem')));
  });

  it('a wrong encryption context fails cleanly, naming it, and the old certificate stays served', async () => {
    const next = pki.leaf('kmskey2', { dns: [HOST.kmskey] });
    await putSecret(peer, 'prod/kms', secretJson(pki, next, await kmsEncrypt(peer, symmetricKey, readFileSync(next.keyPath), CONTEXT)));
    const wrong = entries(true).map((c) => (c['name'] === 'kmskey' ? { ...c, source: { ...(c['source'] as object), key_encryption: { kms: { encryption_context: { app: 'other' }, endpoint: peer.url } } } } : c));
    const r = await rotate(config(wrong, 'wrong-context.yaml'), ['--cert', 'kmskey']);
    assert.equal(r.code, 1);
    const e = r.report!.certificates[0]!.error!;
    assert.equal(e.code, 'E_SOURCE');
    assert.match(e.message, /^decrypting the private key of kmskey from secrets-manager:prod\/kms field private_key: KMS refused to decrypt/);
    assert.match(e.message, /encryption_context \{"app":"other"\} is exactly the context the key was encrypted with/);
    assert.ok(!r.stdout.includes('PRIVATE KEY') && !r.stderr.includes('PRIVATE KEY'));
    assert.equal(await served('kmskey', HOST.kmskey), leaves['kmskey']!.fingerprint);
    // With the right context the new version deploys.
    const ok = await rotate(config(entries(true)), ['--cert', 'kmskey']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(await served('kmskey', HOST.kmskey), next.fingerprint);
  });

  it('KMS-encrypted keys in a file and in an SSM parameter deploy (decrypted in memory only)', async () => {
    const f = pki.leaf('file-kms', { dns: ['file.kms.certd.test'] });
    const p = pki.leaf('ssm-kms', { dns: ['ssm.kms.certd.test'] });
    const keyFile = join(dir, 'file-kms.key.b64');
    writeFileSync(keyFile, `${await kmsEncrypt(peer, symmetricKey, readFileSync(f.keyPath), { app: 'file' })}\n`);
    const ssmCipher = await kmsEncrypt(peer, symmetricKey, readFileSync(p.keyPath), { app: 'ssm' });
    await putParameterSet(peer, '/enc/ssm', pki, p, ssmCipher);
    const kmsOf = (context: Record<string, string>) => ({ kms: { encryption_context: context, endpoint: peer.url } });
    const cfg = config(
      [
        { name: 'file-kms', source: { type: 'file', cert: f.certPath, key: keyFile, chain: pki.intermediate.certPath, key_encryption: kmsOf({ app: 'file' }) }, targets: [{ type: 'tmpfs', dir: deploy('file-kms') }] },
        { name: 'ssm-kms', source: { type: 'ssm', cert_parameter: '/enc/ssm/cert', key_parameter: '/enc/ssm/key', chain_parameter: '/enc/ssm/chain', endpoint: peer.url, key_encryption: kmsOf({ app: 'ssm' }) }, targets: [{ type: 'tmpfs', dir: deploy('ssm-kms') }] },
      ],
      'encrypted-keys.yaml',
    );
    peer.resetCalls();
    const r = await rotate(cfg);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(r.report!.certificates.map((c) => c.result), ['deployed', 'deployed']);
    assert.equal(peer.calls['TrentService.Decrypt'], 2);
    for (const [name, leaf] of [['file-kms', f], ['ssm-kms', p]] as const) {
      const deployedKey = createPublicKey(readFileSync(join(deploy(name), 'privkey.pem')));
      assert.ok(deployedKey.equals(createPublicKey(readFileSync(leaf.keyPath))), `${name}: the deployed key is the decrypted one`);
    }
  });

  it('names the secret and what to check when it is missing or access is denied', async () => {
    await createSecret(peer, 'prod/denied', secretJson(pki, leaves['web']!));
    peer.denySecret('prod/denied');
    const cfg = config(
      [
        { name: 'missing', source: { type: 'secrets-manager', secret_id: 'prod/missing', endpoint: peer.url }, targets: [{ type: 'tmpfs', dir: deploy('missing') }] },
        { name: 'denied', source: { type: 'secrets-manager', secret_id: 'prod/denied', endpoint: peer.url }, targets: [{ type: 'tmpfs', dir: deploy('denied') }] },
        { name: 'nossm', source: { type: 'ssm', cert_parameter: '/nope/cert', key_parameter: '/nope/key', endpoint: peer.url }, targets: [{ type: 'tmpfs', dir: deploy('nossm') }] },
      ],
      'errors.yaml',
    );
    peer.resetCalls();
    const r = await rotate(cfg);
    assert.equal(r.code, 1);
    const byName = Object.fromEntries(r.report!.certificates.map((c) => [c.name, c.error?.message ?? '']));
    assert.match(byName['missing']!, /^fetching missing from secrets-manager:prod\/missing: not found: prod\/missing does not exist \(check secret_id/);
    assert.match(byName['denied']!, /^fetching denied from secrets-manager:prod\/denied: access denied: the role needs secretsmanager:GetSecretValue and secretsmanager:BatchGetSecretValue on prod\/denied/);
    assert.match(byName['nossm']!, /^fetching nossm from ssm:\/nope\/cert: not found: parameters \/nope\/cert, \/nope\/key do not exist/);
    // Permanent: answered by the one batch read, not retried one by one.
    assert.equal(peer.calls['secretsmanager.BatchGetSecretValue'], 1);
    assert.equal(peer.calls['secretsmanager.GetSecretValue'] ?? 0, 0);
    assert.equal(peer.calls['AmazonSSM.GetParameters'], 1);
  });

  it('signs with ECS container credentials (token file) and takes the endpoint from AWS_ENDPOINT_URL(_SECRETS_MANAGER)', async () => {
    const container = { accessKeyId: 'ASIACERTDCONTAINER01', secretAccessKey: 'certd/container/secret/EXAMPLE', sessionToken: 'certd-container-session-token' };
    peer.credentials.push(container);
    const token = 'certd-ecs-test-token-0123456789';
    const tokenFile = join(dir, 'ecs-token');
    writeFileSync(tokenFile, token, { mode: 0o600 });
    const ecs = await startEcsCredentialsServer({ token, credentials: container });
    try {
      const cfg = config([{ name: 'ecs', source: { type: 'secrets-manager', secret_id: 'prod/web' }, targets: [{ type: 'tmpfs', dir: deploy('ecs') }] }], 'ecs.yaml');
      peer.resetCalls();
      const containerEnv = {
        ...env(),
        AWS_ACCESS_KEY_ID: undefined,
        AWS_SECRET_ACCESS_KEY: undefined,
        AWS_SESSION_TOKEN: undefined,
        AWS_PROFILE: undefined,
        AWS_CONTAINER_CREDENTIALS_FULL_URI: ecs.url,
        AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: tokenFile,
      };
      const r = await rotate(cfg, [], { ...containerEnv, AWS_ENDPOINT_URL: peer.url });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(r.report!.certificates[0]!.result, 'deployed');
      assert.ok(ecs.requests.length >= 1 && ecs.requests.every((q) => q.authorized), 'certd fetched credentials with the token');
      const seen = peer.seenAccessKeys.filter((s) => s.op.startsWith('secretsmanager.'));
      assert.ok(seen.length >= 1);
      assert.ok(seen.every((s) => s.accessKeyId === container.accessKeyId && s.sessionToken === container.sessionToken), JSON.stringify(seen));
      // The service's own variable wins over the general one (which points where nothing listens).
      peer.resetCalls();
      const again = await rotate(cfg, [], { ...containerEnv, AWS_ENDPOINT_URL: 'http://127.0.0.1:9', AWS_ENDPOINT_URL_SECRETS_MANAGER: peer.url });
      assert.equal(again.code, 0, again.stdout + again.stderr);
      assert.equal(again.report!.certificates[0]!.result, 'unchanged');
      assert.equal(peer.calls['secretsmanager.BatchGetSecretValue'], 1);
    } finally {
      await ecs.close();
    }
  });
});
