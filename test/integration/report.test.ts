/**
 * `certd report` after real rotations into a real nginx: every fact about the certificate is
 * checked against openssl's own reading of the deployed file, the host section tells the truth
 * about FIPS, the HTML renders in headless Chromium, and --sign makes a signature openssl accepts.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCertd, shmDir, writeConfig } from '../helpers/cli.js';
import { startNginx, type RunningNginx } from '../helpers/nginx.js';
import type { ComplianceReport } from '../../src/report.js';
import { openssl, TestPki, type Issued } from '../helpers/pki.js';
import { FIPS_RUN } from '../helpers/fixture-env.js';

const NAME = 'report.certd.test';
const CHROMIUM = '/usr/bin/chromium';
const KERNEL_FLAG = '/proc/sys/crypto/fips_enabled';

/** openssl's view of a certificate, parsed from `x509 -noout -subject -ext subjectAltName -dates -fingerprint -sha256 -text`. */
function opensslView(path: string): { subject: string; sans: string[]; notBefore: Date; notAfter: Date; fingerprint: string; keyBits: number; signature: string; issuer: string } {
  const text = openssl(['x509', '-in', path, '-noout', '-subject', '-ext', 'subjectAltName', '-dates', '-fingerprint', '-sha256', '-text']);
  const field = (re: RegExp): string => {
    const m = re.exec(text);
    assert.ok(m, `openssl output lacks ${re}:\n${text}`);
    return m[1]!.trim();
  };
  const sanLine = /X509v3 Subject Alternative Name:\s*\n\s*(.+)/.exec(text)?.[1]?.trim() ?? '';
  return {
    subject: field(/^subject=(.+)$/m),
    issuer: field(/^\s*Issuer: (.+)$/m),
    sans: sanLine === '' ? [] : sanLine.split(',').map((s) => s.trim()),
    notBefore: new Date(field(/^notBefore=(.+)$/m)),
    notAfter: new Date(field(/^notAfter=(.+)$/m)),
    fingerprint: field(/^sha256 Fingerprint=(.+)$/im),
    keyBits: Number(field(/Public-Key: \((\d+) bit\)/)),
    signature: field(/Signature Algorithm: (\S+)/),
  };
}

/** "CN = a, O = b" (openssl) and "CN=a, O=b" (certd) compare equal. */
const dn = (s: string): string => s.replace(/\s*=\s*/g, '=').replace(/\s*,\s*/g, ', ');

function requireChromium(): void {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: install Debian's headless browser with apt-get install chromium`);
}

describe('certd report with a real nginx', () => {
  const scratch = shmDir('report');
  const dir = scratch.dir;
  const deploy = join(dir, 'deploy');
  const source = join(dir, 'source');
  let pki: TestPki;
  let nginx: RunningNginx;
  let leaf: Issued;
  let config: string;
  let report: ComplianceReport;

  const writeCfg = (o: { reload: boolean }) =>
    writeConfig(dir, `state_dir: ${join(dir, 'state')}
audit_log: ${join(dir, 'audit.jsonl')}
policy: { trust_anchors: ${pki.root.certPath} }
report: { nginx_binary: /usr/sbin/nginx, signing_key: ${join(dir, 'sign-ec.key')} }
certificates:
  - name: web
    source: { type: file, cert: ${join(source, 'cert.pem')}, key: ${join(source, 'key.pem')}, chain: ${join(source, 'chain.pem')} }
    targets: [ { type: tmpfs, dir: ${deploy} } ]
${o.reload ? `    reload: { command: ${JSON.stringify(nginx.reloadCommand)}, test: ${JSON.stringify(nginx.testCommand)} }
    verify: { connect: "127.0.0.1:${nginx.ports[0]}", servername: ${NAME}, timeout: 5s }
` : ''}`);

  before(async () => {
    pki = new TestPki(join(dir, 'pki'));
    openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', join(dir, 'sign-ec.key')]);
    openssl(['pkey', '-in', join(dir, 'sign-ec.key'), '-pubout', '-out', join(dir, 'sign-ec.pub')]);
    pki.publish(pki.leaf('first', { dns: [NAME], keySpec: 'rsa-2048' }), source);
    config = writeCfg({ reload: false });
    const first = await runCertd(['rotate', '--now', '--config', config]);
    assert.equal(first.code, 0, first.stderr);
    nginx = await startNginx({
      prefix: join(dir, 'nginx'),
      servers: [{
        serverName: NAME,
        body: `ssl_certificate ${deploy}/fullchain.pem;
ssl_certificate_key ${deploy}/privkey.pem;
ssl_protocols TLSv1.2 TLSv1.3;
ssl_ciphers ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384;
ssl_conf_command Ciphersuites TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256;`,
      }],
    });
    // The rotation the report documents: a new leaf, reloaded into nginx and verified as served.
    leaf = pki.leaf('second', { dns: [NAME], keySpec: 'rsa-2048' });
    pki.publish(leaf, source);
    config = writeCfg({ reload: true });
    const second = await runCertd(['rotate', '--now', '--config', config, '--json']);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(JSON.parse(second.stdout).certificates[0].result, 'deployed');
    const r = await runCertd(['report', '--config', config, '--format', 'json'], { timeoutMs: 120_000 });
    assert.equal(r.code, 0, r.stderr);
    report = JSON.parse(r.stdout);
  });

  after(async () => {
    await nginx?.stop();
    scratch.cleanup();
  });

  it('describes the deployed leaf exactly as openssl reads it', () => {
    const o = opensslView(join(deploy, 'cert.pem'));
    const c = report.certificates[0]!;
    assert.equal(c.name, 'web');
    assert.equal(c.source.type, 'file');
    assert.match(c.source.version ?? '', /^[0-9a-f]{16}$/);
    const l = c.leaf!;
    assert.match(c.checkedFrom, new RegExp(`${deploy}/cert.pem`));
    assert.equal(l.fingerprint256, o.fingerprint);
    assert.equal(l.fingerprint256, leaf.fingerprint);
    assert.equal(dn(l.subject), dn(o.subject));
    assert.deepEqual(l.dnsNames.map((d: string) => `DNS:${d}`), o.sans);
    assert.equal(l.keyAlgorithm, 'RSA');
    assert.equal(l.keyBits, o.keyBits);
    assert.equal(o.keyBits, 2048);
    assert.equal(l.signatureAlgorithm, o.signature);
    assert.equal(l.notBefore, o.notBefore.toISOString());
    assert.equal(l.notAfter, o.notAfter.toISOString());
    assert.equal(l.daysLeft, Math.floor((o.notAfter.getTime() - Date.parse(report.generatedAt)) / 86_400_000));
    assert.equal(c.matchesLastGood, true);
  });

  it('gives the chain up to the trust anchor, with openssl\'s fingerprints', () => {
    const c = report.certificates[0]!;
    const inter = opensslView(pki.intermediate.certPath);
    assert.deepEqual(c.chain.map((e: { role: string }) => e.role), ['leaf', 'intermediate', 'anchor']);
    assert.equal(c.chain[1]!.fingerprint256, inter.fingerprint);
    assert.equal(dn(c.chain[1]!.subject), dn(inter.subject));
    assert.equal(c.chain[1]!.keyBits, inter.keyBits);
    assert.equal(c.chain[1]!.curve, 'P-256');
    assert.equal(c.chain[1]!.signatureAlgorithm, inter.signature);
    assert.equal(c.chain[1]!.notAfter, inter.notAfter.toISOString());
    assert.equal(c.anchor!.fingerprint256, pki.root.fingerprint);
    assert.equal(c.anchor!.from, 'trust_anchors');
    assert.equal(dn(c.chain[0]!.issuer), dn(inter.subject));
  });

  it('re-runs the policy on the deployed material and ties each finding to its references', () => {
    const c = report.certificates[0]!;
    assert.equal(c.verdict, c.findings.length === 0 ? 'pass' : c.findings.some((f: { severity: string }) => f.severity === 'reject') ? 'reject' : 'warn');
    assert.equal(c.verdict, 'pass', JSON.stringify(c.findings));
    for (const f of c.findings) assert.ok(f.references.length > 0 && f.controls.length > 0, JSON.stringify(f));
  });

  it('shows where it is deployed: paths, modes and proof of tmpfs', () => {
    const d = report.certificates[0]!.deployment[0]! as { type: string; dir: string; memoryBacked: boolean; statfsType: string; files: Record<string, string> };
    assert.equal(d.type, 'tmpfs');
    assert.equal(d.dir, deploy);
    assert.equal(d.memoryBacked, true);
    assert.equal(d.statfsType, '0x1021994'); // TMPFS_MAGIC
    assert.equal(d.files[join(deploy, 'privkey.pem')], '0600');
    assert.equal(d.files[join(deploy, 'cert.pem')], `0${(statSync(join(deploy, 'cert.pem')).mode & 0o777).toString(8)}`);
  });

  it('carries the recent rotation history from the audit trail', () => {
    const h = report.certificates[0]!.history as unknown as { event: string; result: string; fingerprint?: string; expected?: string; certificates?: string[] }[];
    assert.ok(h.some((r) => r.event === 'rotation' && r.result === 'deployed' && r.fingerprint === leaf.fingerprint), JSON.stringify(h));
    assert.ok(h.some((r) => r.event === 'verification' && r.result === 'ok' && r.expected === leaf.fingerprint));
    assert.ok(h.some((r) => r.event === 'reload' && r.result === 'ok' && r.certificates?.includes('web')));
    assert.equal(report.audit.verification?.ok, true);
  });

  it('in the FIPS-mode pass: SC-13 holds at level runtime, names the provider as OpenSSL reports it, and the host flag apart', { skip: !FIPS_RUN }, () => {
    const kernel = existsSync(KERNEL_FLAG) ? readFileSync(KERNEL_FLAG, 'utf8').trim() : null;
    assert.equal(report.host.runtime.runtimeFips, true);
    assert.equal(report.summary.fips.mode, true, report.summary.fips.statement);
    assert.equal(report.summary.fips.level, kernel === '1' ? 'host' : 'runtime');
    assert.equal(report.summary.fips.hostFlag, kernel === null ? null : Number(kernel));
    const providers = spawnSync('openssl', ['list', '-providers'], { encoding: 'utf8' }).stdout;
    const version = /fips\n\s+name: (.+)\n\s+version: (\S+)/.exec(providers);
    assert.ok(version, providers);
    assert.equal(report.summary.fips.provider, `${version[1]} ${version[2]}`);
    const sc13 = report.summary.controls.find((c: { control: string }) => c.control === 'SC-13');
    assert.equal(sc13!.status, 'pass');
    assert.match(report.summary.fips.statement, /proven: runtime; host not proven|proven: runtime and host/);
    // The system openssl in this environment refuses MD5, as FIPS mode requires.
    const md5 = spawnSync('openssl', ['dgst', '-md5'], { input: 'certd' });
    assert.notEqual(md5.status, 0);
  });

  it('says truthfully that this host is not in FIPS mode, and why', { skip: FIPS_RUN && 'the FIPS-mode pass: see the case above' }, () => {
    const kernel = existsSync(KERNEL_FLAG) ? readFileSync(KERNEL_FLAG, 'utf8').trim() : null;
    assert.notEqual(kernel, '1', 'this test expects a host that is not in FIPS mode');
    assert.equal(report.host.kernelFips, kernel === null ? null : Number(kernel));
    assert.equal(report.summary.fips.mode, false);
    assert.match(report.summary.fips.statement, /NOT in FIPS mode/);
    assert.ok(report.summary.fips.reasons.some((r: string) => /kernel not in FIPS mode/.test(r)));
    assert.equal(report.host.runtime.fips, false);
    const sc13 = report.summary.controls.find((c: { control: string }) => c.control === 'SC-13');
    assert.equal(sc13!.status, 'fail');
    assert.match(sc13!.issues.join(' '), /NOT in FIPS mode/);
    // The contrapositive check: this host's openssl computes MD5, which FIPS mode forbids.
    const md5 = spawnSync('openssl', ['dgst', '-md5'], { input: 'certd' });
    const check = report.host.systemOpenssl.checks.find((c: { command: string }) => c.command === 'openssl dgst -md5');
    assert.equal(check!.exitCode, md5.status);
    assert.equal(check!.asFipsRequires, md5.status !== 0);
    assert.equal(report.host.systemOpenssl.version, openssl(['version']).trim());
    const nginxV = spawnSync('/usr/sbin/nginx', ['-V'], { encoding: 'utf8' }).stderr;
    const ng = report.host.nginx!;
    assert.ok(ng.builtWith !== null && nginxV.includes(`built with ${ng.builtWith}`), ng.output ?? 'no nginx -V output');
  });

  it('maps the rest to SC-12 and SC-17: pass for a good deployment with an intact trail', () => {
    const status = Object.fromEntries(report.summary.controls.map((c: { control: string; status: string }) => [c.control, c.status]));
    assert.equal(status['SC-12'], 'pass', JSON.stringify(report.summary.controls));
    assert.equal(status['SC-17'], 'pass', JSON.stringify(report.summary.controls));
  });

  it('scans the verify endpoint: protocols and which FIPS and non-FIPS suites it accepts', () => {
    const e = report.endpoints[0]!;
    assert.equal(e.connect, `127.0.0.1:${nginx.ports[0]}`);
    assert.equal(e.probe.served!.fingerprint, leaf.fingerprint);
    assert.equal(e.probe.ok, true, JSON.stringify(e.probe.findings));
    const proto = Object.fromEntries(e.probe.protocols.map((p: { version: string; result: string }) => [p.version, p.result]));
    // In FIPS mode certd's own client cannot offer TLS 1.0/1.1 (their PRF needs MD5): it asks with
    // its own ClientHello and still gets the server's refusal.
    assert.deepEqual(proto, { TLSv1: 'refused', 'TLSv1.1': 'refused', 'TLSv1.2': 'accepted', 'TLSv1.3': 'accepted' });
    const suite = Object.fromEntries(e.fipsSuites.map((s: { suite: string; result: string }) => [s.suite, s.result]));
    assert.equal(suite['ECDHE-RSA-AES128-GCM-SHA256'], 'accepted');
    assert.equal(suite['ECDHE-RSA-AES256-GCM-SHA384'], 'accepted');
    assert.equal(suite['ECDHE-RSA-AES128-SHA256'], 'refused'); // not in nginx's ssl_ciphers
    assert.equal(suite['ECDHE-ECDSA-AES128-GCM-SHA256'], 'refused'); // an RSA certificate
    assert.equal(suite['TLS_AES_128_GCM_SHA256'], 'accepted');
    assert.equal(suite['TLS_AES_128_CCM_SHA256'], 'refused');
    const chacha13 = e.probe.suites.find((s: { family: string; tls: string }) => s.family === 'CHACHA20' && s.tls === '1.3');
    assert.equal(chacha13!.result, 'refused'); // asked with certd's own TLS 1.3 ClientHello, which a FIPS runtime can send too
    assert.equal(chacha13!.method, 'clienthello');
    assert.equal(e.probe.suites.filter((s: { result: string }) => s.result === 'accepted').length, 0);
  });

  it('renders one self-contained HTML file that headless Chromium displays', async () => {
    requireChromium();
    const html = join(dir, 'report.html');
    const r = await runCertd(['report', '--config', config, '--format', 'html', '--out', html, '--no-endpoints'], { timeoutMs: 120_000 });
    assert.equal(r.code, 0, r.stderr);
    const text = readFileSync(html, 'utf8');
    assert.match(text, /<table id="summary">/);
    assert.ok(text.indexOf('id="summary"') < text.indexOf('Certificates'), 'the summary comes first');
    assert.doesNotMatch(text, /<script|<link|<img|<iframe|url\(|@import|\s(src|href)=/i);
    assert.doesNotMatch(text, /https?:\/\//);
    assert.match(text, /@media print/);
    assert.match(text, new RegExp(leaf.fingerprint));

    const profile = mkdtempSync('/dev/shm/certd-chromium-');
    const png = join(dir, 'report.png');
    try {
      const flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', `--user-data-dir=${profile}`];
      const shot = spawnSync(CHROMIUM, [...flags, '--enable-logging=stderr', '--v=0', `--screenshot=${png}`, '--window-size=1200,1600', `file://${html}`], { encoding: 'utf8', timeout: 90_000 });
      assert.equal(shot.status, 0, shot.stderr);
      const consoleErrors = shot.stderr.split('\n').filter((l) => /Uncaught|:CONSOLE\(|Refused to load/.test(l));
      assert.deepEqual(consoleErrors, []);
      const bytes = readFileSync(png);
      assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
      assert.deepEqual([bytes.readUInt32BE(16), bytes.readUInt32BE(20)], [1200, 1600]);
      assert.ok(bytes.length > 20_000, `a ${bytes.length}-byte screenshot is too small to hold the rendered report`);
      const dom = spawnSync(CHROMIUM, [...flags, '--dump-dom', `file://${html}`], { encoding: 'utf8', timeout: 90_000 });
      assert.equal(dom.status, 0, dom.stderr);
      assert.match(dom.stdout, /<table id="summary">.*SC-12.*SC-13.*SC-17/s);
    } finally {
      rmSync(profile, { recursive: true, force: true });
    }
  });

  it('writes Markdown too', async () => {
    const r = await runCertd(['report', '--config', config, '--format', 'md', '--no-endpoints']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^# certd compliance report/);
    assert.match(r.stdout, FIPS_RUN ? /\| SC-13 \| Cryptographic Protection \| \*\*PASS\*\* \|/ : /\| SC-13 \| Cryptographic Protection \| \*\*FAIL\*\* \|/);
    assert.match(r.stdout, /- Proven: (host|runtime|none); host kernel flag/);
    assert.match(r.stdout, new RegExp(leaf.fingerprint));
  });

  it('--sign writes a detached signature that openssl dgst -verify accepts, and a changed report fails it', async () => {
    const out = join(dir, 'signed.json');
    const r = await runCertd(['report', '--config', config, '--out', out, '--sign', '--no-endpoints']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(existsSync(`${out}.sig`));
    const verify = () => spawnSync('openssl', ['dgst', '-sha256', '-verify', join(dir, 'sign-ec.pub'), '-signature', `${out}.sig`, out], { encoding: 'utf8' });
    const good = verify();
    assert.equal(good.status, 0, good.stdout + good.stderr);
    assert.match(good.stdout, /Verified OK/);
    appendFileSync(out, ' ');
    const bad = verify();
    assert.equal(bad.status, 1, bad.stdout + bad.stderr);
    assert.match(bad.stdout, /Verification failure/);
  });

  it('signs with an RSA key as well, and --sign needs --out and a signing key', async () => {
    const key = join(dir, 'sign-ec.key'); // the config names this path; swap in an RSA key
    openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:3072', '-out', key]);
    openssl(['pkey', '-in', key, '-pubout', '-out', join(dir, 'sign-rsa.pub')]);
    const out = join(dir, 'signed.md');
    const r = await runCertd(['report', '--config', config, '--format', 'md', '--out', out, '--sign', '--no-endpoints']);
    assert.equal(r.code, 0, r.stderr);
    const v = spawnSync('openssl', ['dgst', '-sha256', '-verify', join(dir, 'sign-rsa.pub'), '-signature', `${out}.sig`, out], { encoding: 'utf8' });
    assert.equal(v.status, 0, v.stdout + v.stderr);
    assert.equal((await runCertd(['report', '--config', config, '--sign'])).code, 2);
    const unsigned = writeConfig(dir, readFileSync(config, 'utf8').replace(/, signing_key: [^}]+/, ' '), 'unsigned.yaml');
    const noKey = await runCertd(['report', '--config', unsigned, '--out', join(dir, 'x.json'), '--sign', '--no-endpoints']);
    assert.equal(noKey.code, 2, noKey.stderr);
    assert.match(noKey.stderr, /report.signing_key/);
  });
});
