// use_fips_endpoint end to end, with no endpoint configured: the SDK resolves the AWS host name
// itself (`secretsmanager-fips.us-east-1.amazonaws.com`), a preload (test/helpers/aws-dns.ts)
// makes every *.amazonaws.com name resolve to 127.0.0.1 and every other name fail, and the AWS
// peer answers over TLS on 127.0.0.1:443 with a certificate for those names from a test CA
// (NODE_EXTRA_CA_CERTS). The peer records the Host header and SNI name of each request it
// authenticated (SigV4), so the test sees which endpoint the SDK really called.
//
// Cross-check: Debian's awscli (botocore) with AWS_USE_FIPS_ENDPOINT=true and no --endpoint-url
// resolves the same -fips name. Python cannot take the DNS preload, so it reaches the peer the way
// a proxied host reaches AWS: HTTPS_PROXY names a CONNECT proxy on loopback that tunnels
// *.amazonaws.com:443 to the peer (the TLS session, SNI and certificate check stay end to end).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { runCertd, shmDir } from '../helpers/cli.js';
import { FIPS_RUN } from '../helpers/fixture-env.js';
import { TestPki, type Issued } from '../helpers/pki.js';
import { startAwsPeer, type AwsPeer } from '../peers/aws-peer.js';
import { awsEnv, createSecret, createSymmetricKey, kmsEncrypt, putParameterSet, secretJson } from './aws-fixtures.js';

const REGION = 'us-east-1';
const SM_FIPS = `secretsmanager-fips.${REGION}.amazonaws.com`;
const SM = `secretsmanager.${REGION}.amazonaws.com`;
const KMS_FIPS = `kms-fips.${REGION}.amazonaws.com`;
const SSM_FIPS = `ssm-fips.${REGION}.amazonaws.com`;
const PCA_FIPS = `acm-pca-fips.${REGION}.amazonaws.com`;
const PCA = `acm-pca.${REGION}.amazonaws.com`;
const CONTEXT = { app: 'web', env: 'fips' };
const DNS_PRELOAD = fileURLToPath(new URL('../helpers/aws-dns.js', import.meta.url));

const AWS_CLI = '/usr/bin/aws';

/** A CONNECT proxy on 127.0.0.1 that tunnels only `<name>.amazonaws.com:443` to 127.0.0.1:443 and records each target. */
async function startConnectProxy(): Promise<{ url: string; targets: string[]; close(): Promise<void> }> {
  const targets: string[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.once('data', (head: Buffer) => {
      const m = /^CONNECT ([A-Za-z0-9.-]+):(\d+) HTTP\/1\.[01]\r\n/.exec(head.toString('latin1'));
      if (!m || !/\.amazonaws\.com$/i.test(m[1]!) || m[2] !== '443') {
        client.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      targets.push(`${m[1]}:${m[2]}`);
      const upstream = connect(443, '127.0.0.1', () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        upstream.pipe(client);
        client.pipe(upstream);
      });
      sockets.add(upstream);
      upstream.on('close', () => sockets.delete(upstream));
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    targets,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const s of sockets) s.destroy();
    }),
  };
}

interface StatusJson {
  certificates: { name: string; fingerprint: string | null; endpoints: { service: string; host: string; kind: string }[] }[];
}

describe('AWS FIPS endpoints (use_fips_endpoint) through the endpoint the SDK resolves', () => {
  const scratch = shmDir('fipsep');
  const dir = scratch.dir;
  let pki: TestPki;
  let peer: AwsPeer;
  let web: Issued;
  let kmsLeaf: Issued;
  let fleetLeaf: Issued;
  let pcaCa: { arn: string; certPem: string };

  before(async () => {
    if (process.getuid?.() !== 0) throw new Error('this test listens on 127.0.0.1:443: run it as root');
    pki = new TestPki(join(dir, 'pki'));
    const endpoint = pki.leaf('aws-endpoints', { dns: [SM_FIPS, SM, KMS_FIPS, SSM_FIPS, PCA_FIPS, PCA] });
    peer = await startAwsPeer({ region: REGION, tls: { key: readFileSync(endpoint.keyPath, 'utf8'), cert: endpoint.certPem + pki.intermediate.certPem, port: 443 } });
    web = pki.leaf('web', { dns: ['web.fips.certd.test'] });
    kmsLeaf = pki.leaf('kmskey', { dns: ['kms.fips.certd.test'] });
    fleetLeaf = pki.leaf('fleet-a', { dns: ['a.fleet.fips.certd.test'] });
    await putParameterSet(peer, '/tls/a', pki, fleetLeaf);
    await createSecret(peer, 'prod/web', secretJson(pki, web));
    pcaCa = peer.pca.createCa('ec-p256');
    const keyId = await createSymmetricKey(peer);
    await createSecret(peer, 'prod/kms', secretJson(pki, kmsLeaf, await kmsEncrypt(peer, keyId, readFileSync(kmsLeaf.keyPath), CONTEXT)));
  });
  after(async () => {
    await peer?.close();
    scratch.cleanup();
  });

  /** A certd child that reaches AWS only through the preload's DNS and trusts the test CA. */
  const env = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({
    ...awsEnv(peer),
    AWS_ENDPOINT_URL: undefined,
    AWS_ENDPOINT_URL_SECRETS_MANAGER: undefined,
    AWS_ENDPOINT_URL_KMS: undefined,
    AWS_USE_FIPS_ENDPOINT: undefined,
    AWS_MAX_ATTEMPTS: '1',
    NODE_EXTRA_CA_CERTS: pki.root.certPath,
    // Kept: the FIPS-mode pass runs every process with --enable-fips.
    NODE_OPTIONS: `${process.env['NODE_OPTIONS'] ?? ''} --import=${DNS_PRELOAD}`.trim(),
    ...extra,
  });

  const config = (name: string, top: Record<string, unknown>, certificates: Record<string, unknown>[]): string => {
    const path = join(dir, `${name}.yaml`);
    writeFileSync(path, stringify({ state_dir: join(dir, name, 'state'), policy: { trust_anchors: pki.root.certPath }, ...top, certificates }));
    return path;
  };
  const webEntry = (name: string, dirName: string, source: Record<string, unknown> = {}) => ({
    name,
    source: { type: 'secrets-manager', secret_id: 'prod/web', region: REGION, ...source },
    targets: [{ type: 'tmpfs', dir: join(dir, dirName, 'deploy', name) }],
  });

  async function rotate(cfg: string, e: NodeJS.ProcessEnv) {
    peer.resetCalls();
    const r = await runCertd(['rotate', '--now', '--config', cfg, '--json'], { env: e });
    assert.equal(r.code, 0, `rotate failed:\n${r.stdout}\n${r.stderr}`);
    const report = JSON.parse(r.stdout) as { certificates: { name: string; result: string }[] };
    assert.ok(report.certificates.every((c) => c.result === 'deployed'), r.stdout);
    assert.deepEqual(peer.rejected, {}, 'every request carried a valid SigV4 signature');
    assert.deepEqual(peer.internalErrors, []);
    return r;
  }

  async function status(cfg: string, e: NodeJS.ProcessEnv): Promise<{ json: StatusJson; text: string }> {
    const j = await runCertd(['status', '--config', cfg, '--json'], { env: e });
    assert.equal(j.code, 0, j.stderr);
    const t = await runCertd(['status', '--config', cfg], { env: e });
    assert.equal(t.code, 0, t.stderr);
    return { json: JSON.parse(j.stdout) as StatusJson, text: t.stdout };
  }

  it('use_fips_endpoint: true calls the -fips hosts (Secrets Manager, SSM discovery and, inherited, KMS), and status and report name them', async () => {
    const e = env();
    const cfg = config('config-key', { use_fips_endpoint: true }, [
      webEntry('web', 'config-key'),
      { ...webEntry('kmskey', 'config-key', { secret_id: 'prod/kms', key_encryption: { kms: { encryption_context: CONTEXT } } }) },
      { name: 'fleet', source: { type: 'ssm', path: '/tls', region: REGION }, targets: [{ type: 'tmpfs', dir: join(dir, 'config-key', 'deploy', 'fleet-{name}') }] },
    ]);
    await rotate(cfg, e);
    assert.ok(peer.seenHosts.some((h) => h.op.startsWith('secretsmanager.')), JSON.stringify(peer.seenHosts));
    assert.ok(peer.seenHosts.some((h) => h.op.startsWith('AmazonSSM.')), JSON.stringify(peer.seenHosts));
    for (const h of peer.seenHosts) {
      const want = h.op.startsWith('TrentService.') ? KMS_FIPS : h.op.startsWith('AmazonSSM.') ? SSM_FIPS : SM_FIPS;
      assert.deepEqual({ host: h.host, servername: h.servername }, { host: want, servername: want }, h.op);
    }
    assert.ok(peer.seenHosts.some((h) => h.op === 'TrentService.Decrypt'));
    assert.equal(readFileSync(join(dir, 'config-key', 'deploy', 'web', 'cert.pem'), 'utf8'), web.certPem);
    assert.equal(readFileSync(join(dir, 'config-key', 'deploy', 'kmskey', 'cert.pem'), 'utf8'), kmsLeaf.certPem);
    assert.equal(readFileSync(join(dir, 'config-key', 'deploy', 'fleet-a', 'cert.pem'), 'utf8'), fleetLeaf.certPem);

    const st = await status(cfg, e);
    const byName = new Map(st.json.certificates.map((c) => [c.name, c]));
    assert.deepEqual(byName.get('web')?.endpoints, [{ service: 'secrets-manager', host: SM_FIPS, kind: 'fips' }]);
    assert.deepEqual(byName.get('kmskey')?.endpoints, [{ service: 'kms', host: KMS_FIPS, kind: 'fips' }, { service: 'secrets-manager', host: SM_FIPS, kind: 'fips' }]);
    // A discovered member is credited with the discovery's requests.
    assert.deepEqual(byName.get('fleet-a')?.endpoints, [{ service: 'ssm', host: SSM_FIPS, kind: 'fips' }]);
    assert.match(st.text, new RegExp(`^web: AWS endpoints ${SM_FIPS.replaceAll('.', '\\.')} \\(secrets-manager, FIPS endpoint\\)`, 'm'));

    const rep = await runCertd(['report', '--config', cfg, '--format', 'json'], { env: e, timeoutMs: 120_000 });
    assert.equal(rep.code, 0, rep.stderr);
    const report = JSON.parse(rep.stdout) as { summary: { controls: { control: string; evidence: string[]; issues: string[] }[] }; certificates: { name: string; awsEndpoints: { used: unknown[] } | null }[] };
    const sc13 = report.summary.controls.find((c) => c.control === 'SC-13');
    assert.ok(sc13?.evidence.some((l) => l.startsWith('web: AWS endpoints called (SC-13, SC-8)') && l.includes(`${SM_FIPS} (secrets-manager, FIPS endpoint)`)), JSON.stringify(sc13));
    assert.ok(sc13?.evidence.some((l) => l.startsWith('kmskey: AWS endpoints called') && l.includes(`${KMS_FIPS} (kms, FIPS endpoint)`)), JSON.stringify(sc13));
    const md = await runCertd(['report', '--config', cfg, '--format', 'md'], { env: e, timeoutMs: 120_000 });
    assert.equal(md.code, 0, md.stderr);
    assert.match(md.stdout, new RegExp(`\\| AWS endpoints \\| ${SM_FIPS.replaceAll('.', '\\.')} \\(secrets-manager, FIPS endpoint\\)`));
  });

  it('in the FIPS-mode pass: fips_runtime: require alone (no use_fips_endpoint, no AWS_USE_FIPS_ENDPOINT) calls the -fips host', { skip: !FIPS_RUN && 'needs the FIPS provider (CERTD_TEST_FIPS=1); the precedence is unit-tested in aws-config' }, async () => {
    const e = env();
    const cfg = config('runtime', { fips_runtime: 'require' }, [webEntry('web', 'runtime')]);
    await rotate(cfg, e);
    assert.deepEqual([...new Set(peer.seenHosts.map((h) => `${h.host} ${h.servername}`))], [`${SM_FIPS} ${SM_FIPS}`]);
    assert.deepEqual((await status(cfg, e)).json.certificates[0]?.endpoints, [{ service: 'secrets-manager', host: SM_FIPS, kind: 'fips' }]);
  });

  it('AWS_USE_FIPS_ENDPOINT=true alone calls the -fips host', async () => {
    const e = env({ AWS_USE_FIPS_ENDPOINT: 'true' });
    const cfg = config('env', {}, [webEntry('web', 'env')]);
    await rotate(cfg, e);
    assert.deepEqual([...new Set(peer.seenHosts.map((h) => `${h.host} ${h.servername}`))], [`${SM_FIPS} ${SM_FIPS}`]);
    assert.deepEqual((await status(cfg, e)).json.certificates[0]?.endpoints, [{ service: 'secrets-manager', host: SM_FIPS, kind: 'fips' }]);
  });

  it('a source\'s use_fips_endpoint: false overrides the top-level key and AWS_USE_FIPS_ENDPOINT: the ordinary host, reported as not FIPS', async () => {
    const e = env({ AWS_USE_FIPS_ENDPOINT: 'true' });
    const cfg = config('off', { use_fips_endpoint: true }, [webEntry('web', 'off', { use_fips_endpoint: false })]);
    await rotate(cfg, e);
    assert.deepEqual([...new Set(peer.seenHosts.map((h) => `${h.host} ${h.servername}`))], [`${SM} ${SM}`]);
    const st = await status(cfg, e);
    assert.deepEqual(st.json.certificates[0]?.endpoints, [{ service: 'secrets-manager', host: SM, kind: 'standard' }]);
    assert.match(st.text, /\(secrets-manager, not a FIPS endpoint\)/);
  });

  it('an explicit endpoint is used as given (custom), with a warning that it must itself be a FIPS endpoint', async () => {
    const e = env();
    const cfg = config('custom', { use_fips_endpoint: true }, [webEntry('web', 'custom', { endpoint: `https://${SM_FIPS}` })]);
    const r = await rotate(cfg, e);
    assert.match(r.stderr, /endpoint https:\/\/secretsmanager-fips\.us-east-1\.amazonaws\.com is used as given \(a custom endpoint\); use_fips_endpoint does not apply to it, so it must itself be a FIPS endpoint/);
    assert.deepEqual(peer.seenHosts.map((h) => h.host), [SM_FIPS]);
    assert.deepEqual((await status(cfg, e)).json.certificates[0]?.endpoints, [{ service: 'secrets-manager', host: SM_FIPS, kind: 'custom' }]);
  });

  it('aws-private-ca (certd\'s own ACM PCA client) follows the same choice: use_fips_endpoint calls acm-pca-fips, a source\'s false the ordinary host', async () => {
    const anchors = join(dir, 'pca-anchors.pem');
    writeFileSync(anchors, readFileSync(pki.root.certPath, 'utf8') + pcaCa.certPem);
    const entry = (name: string, extra: Record<string, unknown> = {}) => ({
      name,
      source: { type: 'aws-private-ca', ca_arn: pcaCa.arn, signing_algorithm: 'SHA256WITHECDSA', dns_names: [`${name}.fips.certd.test`], ...extra },
      targets: [{ type: 'tmpfs', dir: join(dir, 'pca', 'deploy', name) }],
    });
    const e = env({ AWS_ENDPOINT_URL_ACM_PCA: undefined });
    const fipsCfg = config('pca', { use_fips_endpoint: true, policy: { trust_anchors: anchors } }, [entry('pca')]);
    await rotate(fipsCfg, e);
    assert.deepEqual([...new Set(peer.seenHosts.map((h) => `${h.op} ${h.host} ${h.servername}`))].sort(), [
      `ACMPrivateCA.GetCertificate ${PCA_FIPS} ${PCA_FIPS}`,
      `ACMPrivateCA.IssueCertificate ${PCA_FIPS} ${PCA_FIPS}`,
    ]);
    assert.deepEqual((await status(fipsCfg, e)).json.certificates[0]?.endpoints, [{ service: 'acm-pca', host: PCA_FIPS, kind: 'fips' }]);

    const offCfg = config('pca-off', { use_fips_endpoint: true, policy: { trust_anchors: anchors } }, [entry('pca-off', { use_fips_endpoint: false })]);
    await rotate(offCfg, e);
    assert.deepEqual([...new Set(peer.seenHosts.map((h) => h.host))], [PCA]);
    assert.deepEqual((await status(offCfg, e)).json.certificates[0]?.endpoints, [{ service: 'acm-pca', host: PCA, kind: 'standard' }]);
  });

  it('cross-check: awscli with AWS_USE_FIPS_ENDPOINT=true and no --endpoint-url calls the same -fips host (and the ordinary one without it)', async () => {
    const proxy = await startConnectProxy();
    try {
      const run = (fips: string): Promise<{ code: number; stdout: string; stderr: string }> =>
        new Promise((resolve) => {
          execFile(AWS_CLI, ['secretsmanager', 'get-secret-value', '--secret-id', 'prod/web', '--region', REGION, '--output', 'json'], {
            env: {
              PATH: process.env['PATH'] ?? '/usr/bin:/bin',
              HOME: dir,
              LANG: 'C.UTF-8',
              ...awsEnv(peer),
              AWS_PAGER: '',
              AWS_MAX_ATTEMPTS: '1',
              AWS_USE_FIPS_ENDPOINT: fips,
              AWS_CA_BUNDLE: pki.root.certPath,
              HTTPS_PROXY: proxy.url,
              https_proxy: proxy.url,
            },
            timeout: 60_000,
          }, (err, stdout, stderr) => resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr }));
        });
      peer.resetCalls();
      const fips = await run('true');
      assert.equal(fips.code, 0, `${AWS_CLI} failed (it is Debian's awscli: apt-get install awscli): ${fips.stderr}`);
      assert.equal((JSON.parse(fips.stdout) as { SecretString?: string }).SecretString, secretJson(pki, web));
      assert.deepEqual(proxy.targets, [`${SM_FIPS}:443`]);
      assert.deepEqual(peer.seenHosts.map((h) => [h.op, h.host, h.servername]), [['secretsmanager.GetSecretValue', SM_FIPS, SM_FIPS]]);
      assert.deepEqual(peer.rejected, {}, 'botocore\'s SigV4 for the -fips host verifies');

      peer.resetCalls();
      const plain = await run('false');
      assert.equal(plain.code, 0, plain.stderr);
      assert.deepEqual(proxy.targets, [`${SM_FIPS}:443`, `${SM}:443`]);
      assert.deepEqual(peer.seenHosts.map((h) => h.host), [SM]);
    } finally {
      await proxy.close();
    }
  });
});
