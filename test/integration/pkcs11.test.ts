// The pkcs11 source against a real SoftHSM2 token and a real nginx that serves TLS with the key
// inside the token (libp11's pkcs11 engine). certd runs as its own process (bin/certd rotate)
// for the deployment paths; the wrong-PIN and token-reset cases run cycles in-process so that
// the C_Login calls and reopened sessions of one runtime can be counted.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { captureOutput } from '../helpers/capture.js';
import { createHash, X509Certificate } from 'node:crypto';
import { lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import type { PKCS11 } from 'pkcs11js';
import { systemClock } from '../../src/clock.js';
import { loadConfig } from '../../src/config.js';
import type { ProviderDeps } from '../../src/contracts.js';
import { silentLogger } from '../../src/log.js';
import { keyUri, statsFor } from '../../src/pkcs11.js';
import { runCycle } from '../../src/rotate.js';
import { buildRuntime } from '../../src/runtime.js';
import { pkcs11Source } from '../../providers/pkcs11.js';
import { requireNginx, startNginx, type RunningNginx } from '../helpers/nginx.js';
import { issueLeafWithOpenssl, makeCa, makeKey, type TestCa } from '../helpers/openssl-ca.js';
import { createSoftHsm, type SoftHsm } from '../helpers/softhsm.js';
import { handshake, makeSelfSigned } from '../helpers/tls.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const CERTD = join(REPO, 'bin', 'certd');
const PIN = '482913';
const SO_PIN = '7729104655';
const HOST = 'web.certd.test';

let base: string;
let hsm: SoftHsm;
let ca: TestCa;
let leafKeyPem: string;
let pinFile: string;
let nginx: RunningNginx;
let port: number;
let deployDir: string;
let childEnv: NodeJS.ProcessEnv;
const served: string[] = [];

function fingerprint(pem: string): string {
  return new X509Certificate(pem).fingerprint256;
}

/** A config file for certificate "web"; `state` separates the in-process runs from the CLI's. */
function certdConfig(name: string, source: Record<string, unknown>, extra: { dir?: string; nginx?: boolean; state?: string } = {}): string {
  const withNginx = extra.nginx ?? true;
  const cfg = {
    state_dir: join(base, 'state', extra.state ?? 'main'),
    log: { level: 'info', format: 'json' },
    policy: { trust_anchors: ca.certPath },
    certificates: [
      {
        name: 'web',
        source: { type: 'pkcs11', module: hsm.module, token_label: 'web', pin_file: pinFile, cert_label: 'web-cert', key_label: 'web-key', chain_labels: ['root-cert'], ...source },
        targets: [{ type: 'tmpfs', dir: extra.dir ?? deployDir }],
        ...(withNginx
          ? { reload: { command: nginx.reloadCommand, test: nginx.testCommand }, verify: { connect: `127.0.0.1:${port}`, servername: HOST } }
          : {}),
      },
    ],
  };
  const path = join(base, `${name}.yaml`);
  writeFileSync(path, stringify(cfg));
  return path;
}

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function certd(args: string[]): Run {
  const r = spawnSync(process.execPath, [CERTD, ...args], { env: childEnv, encoding: 'utf8', timeout: 60_000 });
  captureOutput(`certd ${args.join(' ')} stdout`, r.stdout);
  captureOutput(`certd ${args.join(' ')} stderr`, r.stderr);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function rotate(config: string): { run: Run; report: { ok: boolean; certificates: { name: string; result: string; fingerprint?: string; error?: { code: string; message: string } }[] } } {
  const run = certd(['rotate', '--now', '--config', config, '--json']);
  let report;
  try {
    report = JSON.parse(run.stdout);
  } catch {
    assert.fail(`certd rotate printed no JSON (exit ${run.status}): ${run.stderr.slice(-2000)}`);
  }
  return { run, report };
}

/** Every file under `dir` (dot-directories of the atomic layout included), with link targets. */
function walk(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = lstatSync(p);
    out.push(p);
    if (st.isDirectory()) out.push(...walk(p));
  }
  return out;
}

/** No private key, no PIN in the target dir or in what certd printed; the URI file instead. */
function assertNoKeyMaterial(dir: string, outputs: string[]): void {
  for (const p of walk(dir)) {
    assert.notEqual(p.split('/').pop(), 'privkey.pem', `${p}: a key file exists for an HSM key`);
    const st = lstatSync(p);
    if (st.isSymbolicLink()) {
      assert.ok(!readlinkSync(p).includes('privkey.pem'), `${p} links to a privkey.pem`);
      continue;
    }
    if (!st.isFile()) continue;
    const text = readFileSync(p, 'utf8');
    assert.ok(!/PRIVATE KEY/.test(text), `${p} holds a PEM private key`);
    assert.ok(!text.includes(PIN), `${p} holds the PIN`);
  }
  for (const o of outputs) {
    assert.ok(!/PRIVATE KEY/.test(o), 'certd printed a PEM private key');
    assert.ok(!o.includes(PIN), 'certd printed the PIN');
  }
}

before(async () => {
  requireNginx();
  base = mkdtempSync('/dev/shm/certd-pkcs11-');
  hsm = createSoftHsm(join(base, 'hsm'));
  hsm.initToken('web', SO_PIN, PIN);
  hsm.initToken('pinlock', SO_PIN, PIN);
  ca = makeCa(base, 'certd pkcs11 test root', 'rsa-2048');
  leafKeyPem = makeKey('rsa-2048');
  const leaf1 = issueLeafWithOpenssl(base, ca, leafKeyPem, { cn: HOST, sans: [HOST] });
  for (const token of ['web', 'pinlock']) {
    hsm.importKey(token, PIN, leafKeyPem, '01', 'web-key');
    hsm.importCert(token, PIN, leaf1, '01', 'web-cert');
    hsm.importCert(token, PIN, ca.certPem, '02', 'root-cert');
  }
  // A certificate for another key, to show that P-KEYMATCH is checked against the token.
  hsm.importCert('web', PIN, issueLeafWithOpenssl(base, ca, makeKey('rsa-2048'), { cn: HOST, sans: [HOST] }), '09', 'other-cert');
  // An EC key with its certificate, and a second one whose public key object is on the token.
  const ecKey = makeKey('ec-p256');
  hsm.importKey('web', PIN, ecKey, '03', 'ec-key');
  hsm.importCert('web', PIN, issueLeafWithOpenssl(base, ca, ecKey, { cn: HOST, sans: [HOST] }), '03', 'ec-cert');
  const ecKey2 = makeKey('ec-p384');
  hsm.importKey('web', PIN, ecKey2, '04', 'ec-key-2');
  hsm.importPublicKey('web', PIN, ecKey2, '04', 'ec-pub-2');
  hsm.importCert('web', PIN, issueLeafWithOpenssl(base, ca, ecKey2, { cn: HOST, sans: [HOST] }), '04', 'ec-cert-2');

  pinFile = join(base, 'token.pin');
  // No trailing newline: libp11 reads a pin-source file verbatim.
  writeFileSync(pinFile, PIN, { mode: 0o600 });
  const opensslConf = hsm.writeOpensslConf(join(base, 'openssl.cnf'));
  const serverEnv = { ...hsm.env, OPENSSL_CONF: opensslConf };
  childEnv = { ...process.env, ...serverEnv, CERTD_LOG_FORMAT: 'json' };
  // The in-process runtimes below open the same tokens.
  process.env['SOFTHSM2_CONF'] = hsm.conf;

  deployDir = join(base, 'deploy', 'web');
  const bootstrap = makeSelfSigned(base, { cn: 'bootstrap.certd.test', keyType: 'rsa' });
  nginx = await startNginx({
    prefix: join(base, 'nginx'),
    servers: [{ serverName: HOST, body: `ssl_certificate ${bootstrap.certPath};\nssl_certificate_key ${bootstrap.keyPath};\nssl_protocols TLSv1.2 TLSv1.3;` }],
    env: serverEnv,
  });
  port = nginx.ports[0]!;
  rmSync(bootstrap.keyPath);
  // From the first deployment on, nginx takes certificate and key reference from certd's snippet.
  nginx.writeConfig([{ serverName: HOST, port, body: `include ${join(deployDir, 'nginx-ssl.conf')};\nssl_protocols TLSv1.2 TLSv1.3;` }]);
});

after(async () => {
  await nginx?.stop();
  if (base) rmSync(base, { recursive: true, force: true });
});

describe('pkcs11 source with nginx serving the token key', () => {
  it('deploys the token certificate and nginx serves TLS with the key inside the token', async () => {
    const config = certdConfig('web', {});
    const { run, report } = rotate(config);
    assert.equal(run.status, 0, `rotate failed: ${run.stdout}\n${run.stderr.slice(-2000)}`);
    assert.equal(report.certificates[0]?.result, 'deployed');

    const leafPem = readFileSync(join(deployDir, 'cert.pem'), 'utf8');
    const hs = await handshake({ port, servername: HOST, ca: ca.certPem });
    assert.equal(hs.fingerprint256, fingerprint(leafPem));
    assert.equal(hs.authorized, true, 'the served chain verifies against the root');
    served.push(hs.fingerprint256);

    const uri = readFileSync(join(deployDir, 'privkey.uri'), 'utf8').trim();
    assert.equal(uri, `pkcs11:token=web;object=web-key;type=private?pin-source=file:${pinFile}`);
    assert.equal(statSync(join(deployDir, 'privkey.uri')).mode & 0o777, 0o600);
    const snippet = readFileSync(join(deployDir, 'nginx-ssl.conf'), 'utf8');
    assert.equal(snippet, `ssl_certificate "${join(deployDir, 'fullchain.pem')}";\nssl_certificate_key "engine:pkcs11:${uri}";\n`);
    assertNoKeyMaterial(deployDir, [run.stdout, run.stderr]);
    // The PIN is only in the 0600 PIN file: not in the configs nginx and certd read.
    for (const f of [config, nginx.conf, join(base, 'openssl.cnf')]) assert.ok(!readFileSync(f, 'utf8').includes(PIN), `${f} holds the PIN`);
    assert.equal(statSync(pinFile).mode & 0o777, 0o600);
  });

  it('deploys a new certificate object written on the token; nginx reloads and presents the new leaf', async () => {
    const master = nginx.masterPid();
    const leaf2 = issueLeafWithOpenssl(base, ca, leafKeyPem, { cn: HOST, sans: [HOST, `www.${HOST}`] });
    hsm.deleteObject('web', PIN, 'cert', 'web-cert');
    hsm.importCert('web', PIN, leaf2, '01', 'web-cert');

    const { run, report } = rotate(certdConfig('web', {}));
    assert.equal(run.status, 0, `rotate failed: ${run.stdout}\n${run.stderr.slice(-2000)}`);
    assert.equal(report.certificates[0]?.result, 'deployed');
    assert.equal(report.certificates[0]?.fingerprint, fingerprint(leaf2));
    const hs = await handshake({ port, servername: HOST });
    assert.equal(hs.fingerprint256, fingerprint(leaf2));
    assert.notEqual(hs.fingerprint256, served[0]);
    assert.equal(nginx.masterPid(), master, 'nginx was reloaded, not restarted');
    served.push(hs.fingerprint256);
    assertNoKeyMaterial(deployDir, [run.stdout, run.stderr]);

    const again = rotate(certdConfig('web', {}));
    assert.equal(again.run.status, 0);
    assert.equal(again.report.certificates[0]?.result, 'unchanged');
  });

  const failures: [string, Record<string, unknown>, RegExp[]][] = [
    ['a missing certificate object', { cert_label: 'web-cert-missing' }, [/certificate \(CKO_CERTIFICATE\) labelled "web-cert-missing"/, /not found/, /labels of that class present: .*"web-cert"/]],
    ['a missing private key object', { key_label: 'web-key-missing' }, [/private key \(CKO_PRIVATE_KEY\) labelled "web-key-missing"/, /"web-key"/]],
    ['a missing token', { token_label: 'absent' }, [/token "absent"/, /no such token is present/, /tokens found: .*"web"/]],
    ['a missing module', { module: 'no-such-pkcs11.so' }, [/loading PKCS#11 module .*no-such-pkcs11\.so/, /cannot open shared object file/]],
    ['a certificate of another key (P-KEYMATCH against the token)', { cert_label: 'other-cert', chain_labels: ['root-cert'] }, [/P-KEYMATCH/]],
  ];
  for (const [what, change, patterns] of failures) {
    it(`fails cleanly on ${what}: rotate exits 1, status shows the error, nginx keeps the previous certificate`, async () => {
      // A relative module path is resolved against the config file's folder.
      const config = certdConfig('broken', change);
      const { run, report } = rotate(config);
      assert.equal(run.status, 1, `rotate should fail: ${run.stdout}`);
      const c = report.certificates[0];
      assert.equal(c?.result, 'failed');
      for (const p of patterns) assert.match(c?.error?.message ?? '', p);
      assert.ok(!(c?.error?.message ?? '').includes(PIN));

      const status = certd(['status', '--config', config, '--json']);
      assert.equal(status.status, 0);
      const entry = (JSON.parse(status.stdout) as { certificates: { name: string; lastResult: string; fingerprint: string; error: { message: string } | null }[] }).certificates[0];
      assert.equal(entry?.lastResult, 'failed');
      assert.match(entry?.error?.message ?? '', patterns[0]!);
      assert.equal(entry?.fingerprint, served[served.length - 1], 'the last good deployment is still recorded');

      const hs = await handshake({ port, servername: HOST });
      assert.equal(hs.fingerprint256, served[served.length - 1], 'nginx still serves the previous certificate');
      assertNoKeyMaterial(deployDir, [run.stdout, run.stderr]);
    });
  }
});

describe('pkcs11 source in-process: PIN, reset, public keys', () => {
  it('tries a wrong PIN once across two cycles and says it will not retry', async () => {
    const config = certdConfig('pinlock', { token_label: 'pinlock', pin_file: undefined, pin_env: 'CERTD_TEST_HSM_PIN' }, { dir: join(base, 'deploy', 'pinlock'), nginx: false, state: 'pinlock' });
    const stats = statsFor(hsm.module, { label: 'pinlock' });
    const before = stats.logins;
    const rt = await buildRuntime(loadConfig(config, {}), { log: silentLogger, env: { ...process.env, CERTD_TEST_HSM_PIN: '000000' } });
    try {
      const first = await runCycle(rt);
      const second = await runCycle(rt);
      assert.equal(stats.logins - before, 1, 'exactly one C_Login with the wrong PIN');
      for (const r of [first, second]) {
        const c = r.certificates[0];
        assert.equal(c?.result, 'failed');
        assert.equal(c?.error?.code, 'E_SOURCE');
        assert.match(c?.error?.message ?? '', /wrong PIN for token "pinlock"/);
        assert.match(c?.error?.message ?? '', /will not retry/);
        assert.match(c?.error?.message ?? '', /pin_env\/pin_file/);
        assert.ok(!(c?.error?.message ?? '').includes('000000'));
      }
      assert.match(first.certificates[0]?.error?.message ?? '', /CKR_PIN_INCORRECT/);
    } finally {
      await rt.close();
    }
    // The fixed PIN after a config reload (a new runtime) logs in and deploys.
    const fixed = await buildRuntime(loadConfig(config, {}), { log: silentLogger, env: { ...process.env, CERTD_TEST_HSM_PIN: PIN } });
    try {
      const r = await runCycle(fixed);
      assert.equal(r.certificates[0]?.result, 'deployed', JSON.stringify(r.certificates[0]?.error));
      assert.equal(stats.logins - before, 2);
    } finally {
      await fixed.close();
    }
  });

  it('refuses a PIN file that ends with a newline before any login, and a world-readable one', async () => {
    const stats = statsFor(hsm.module, { label: 'pinlock' });
    const cases: [string, string, number, RegExp][] = [
      ['newline.pin', `${PIN}\n`, 0o600, /ends with a line break/],
      ['open.pin', PIN, 0o644, /readable by every user/],
    ];
    for (const [name, content, mode, pattern] of cases) {
      const file = join(base, name);
      writeFileSync(file, content, { mode });
      const config = certdConfig(name, { token_label: 'pinlock', pin_file: file }, { dir: join(base, 'deploy', 'pinfile'), nginx: false, state: 'pinfile' });
      const before = stats.logins;
      const rt = await buildRuntime(loadConfig(config, {}), { log: silentLogger });
      try {
        const r = await runCycle(rt);
        assert.equal(r.certificates[0]?.result, 'failed');
        assert.match(r.certificates[0]?.error?.message ?? '', pattern);
        assert.equal(stats.logins, before, 'no C_Login was made');
      } finally {
        await rt.close();
      }
    }
  });

  it('recovers when the token drops the session or the module is finalised behind certd', async () => {
    const config = certdConfig('reset', { pin_file: undefined, pin_env: 'CERTD_TEST_HSM_PIN' }, { dir: join(base, 'deploy', 'reset'), nginx: false, state: 'reset' });
    const stats = statsFor(hsm.module, { label: 'web' });
    const rt = await buildRuntime(loadConfig(config, {}), { log: silentLogger, env: { ...process.env, CERTD_TEST_HSM_PIN: PIN } });
    // A second handle on the same module: PKCS#11 state is per process, so this is the token
    // (or the module) going away under the session certd holds.
    const other = new (createRequire(import.meta.url)('pkcs11js') as typeof import('pkcs11js')).PKCS11() as PKCS11;
    other.load(hsm.module);
    try {
      const first = await runCycle(rt);
      assert.equal(first.certificates[0]?.result, 'deployed', JSON.stringify(first.certificates[0]?.error));
      const logins = stats.logins;
      const reopened = stats.reopened;

      const again = await runCycle(rt);
      assert.equal(again.certificates[0]?.result, 'unchanged');
      assert.equal(stats.logins, logins, 'the session is reused across cycles');

      try {
        other.C_Initialize();
      } catch (err) {
        assert.match((err as Error).message, /CKR_CRYPTOKI_ALREADY_INITIALIZED/);
      }
      const slot = other.C_GetSlotList(true).find((s) => other.C_GetTokenInfo(s).label.trim() === 'web');
      assert.ok(slot, 'token web is present');
      other.C_CloseAllSessions(slot);
      const afterClose = await runCycle(rt);
      assert.equal(afterClose.certificates[0]?.result, 'unchanged', JSON.stringify(afterClose.certificates[0]?.error));
      assert.equal(stats.reopened, reopened + 1);
      assert.equal(stats.logins, logins + 1);

      other.C_Finalize();
      const afterFinalize = await runCycle(rt);
      assert.equal(afterFinalize.certificates[0]?.result, 'unchanged', JSON.stringify(afterFinalize.certificates[0]?.error));
      assert.equal(stats.reopened, reopened + 2);
      assert.equal(stats.logins, logins + 2);
    } finally {
      await rt.close();
      other.close();
    }
  });

  it('reads the EC public key from the token, or proves possession by a signature when there is none', async () => {
    const shared = new Map<string, unknown>();
    const deps: ProviderDeps = {
      clock: systemClock,
      log: silentLogger,
      stateDir: join(base, 'state-ec'),
      env: { ...process.env, CERTD_TEST_HSM_PIN: PIN },
      resolvePath: (p) => p,
      shared: <T>(key: string, init: () => T): T => {
        if (!shared.has(key)) shared.set(key, init());
        return shared.get(key) as T;
      },
    };
    const ctx = { name: 'ec', hostnames: [HOST], renewBeforeMs: 0 };
    const source = (cert: string, key: string) =>
      pkcs11Source.create(
        pkcs11Source.schema.parse({ type: 'pkcs11', module: hsm.module, token_label: 'web', pin_env: 'CERTD_TEST_HSM_PIN', cert_label: cert, key_label: key }),
        deps,
        ctx,
      );
    try {
      const withPub = await source('ec-cert-2', 'ec-key-2').fetch({ name: 'ec' }, AbortSignal.timeout(10_000));
      assert.equal(withPub.key.kind, 'pkcs11');
      if (withPub.key.kind !== 'pkcs11') return;
      const leafSpki = new X509Certificate(withPub.leaf).publicKey.export({ type: 'spki', format: 'der' });
      assert.ok(withPub.key.spki?.equals(leafSpki), 'SPKI built from CKA_EC_PARAMS/CKA_EC_POINT equals the leaf key');
      assert.equal(withPub.key.proven, true);
      assert.equal(withPub.key.uri, 'pkcs11:token=web;object=ec-key-2;type=private');
      assert.equal(withPub.version, createHash('sha256').update(withPub.leaf).digest('hex').slice(0, 16));

      const noPub = await source('ec-cert', 'ec-key').fetch({ name: 'ec' }, AbortSignal.timeout(10_000));
      if (noPub.key.kind !== 'pkcs11') return assert.fail('expected a pkcs11 key');
      assert.equal(noPub.key.spki, undefined);
      assert.equal(noPub.key.proven, true, 'the ECDSA challenge verifies with the certificate key');

      const wrong = await source('ec-cert', 'ec-key-2').fetch({ name: 'ec' }, AbortSignal.timeout(10_000));
      if (wrong.key.kind !== 'pkcs11') return assert.fail('expected a pkcs11 key');
      assert.equal(wrong.key.proven, false, 'a key of another certificate does not prove possession');
    } finally {
      for (const v of shared.values()) await (v as { close?: () => Promise<void> }).close?.();
    }
  });

  it('percent-encodes URIs as RFC 7512 requires and never carries a PIN', () => {
    assert.equal(keyUri({ label: 'my token;1' }, 'key "a"/b'), 'pkcs11:token=my%20token%3B1;object=key%20%22a%22%2Fb;type=private');
    assert.equal(keyUri({ serial: 'ab12' }, 'k', { env: 'PIN' }), 'pkcs11:serial=ab12;object=k;type=private');
    assert.equal(keyUri({ label: 't' }, 'k', { file: '/run/pin$x' }), 'pkcs11:token=t;object=k;type=private?pin-source=file:/run/pin%24x');
  });
});
