/**
 * Secret hygiene of the whole test run. scripts/run-tests.mjs runs this file after every other
 * one, with CERTD_TEST_CAPTURE_DIR holding what certd printed in the run (CLI stdout/stderr,
 * in-process log lines, /metrics scrapes) and the secrets the test helpers made (private keys,
 * PINs, API keys): see test/helpers/capture.ts. Asserted:
 *   - no private key PEM block, no key's DER (base64 or hex, PKCS#8 and traditional), no raw
 *     private scalar (hex, base64, base64url), no PIN, API key or AWS secret key in any of it;
 *   - the checker finds each of those when planted (so a pass means something);
 *   - file modes: keys 0600 (0640 with group), state_dir 0700 and its records 0600, the control
 *     socket 0600; and a tmpfs target on disk without allow_disk leaves no key file there.
 * Before checking, it runs certd itself (rotate, a refusal, status, validate, and the daemon
 * with /metrics) so the check never runs on nothing.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createPrivateKey } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { CAPTURE_ENV, captureOutput, hygieneScanRoots, registerDiskDir, registerSecret } from '../helpers/capture.js';
import { CERTD, runCertd, shmDir, writeConfig } from '../helpers/cli.js';
import { freePort } from '../helpers/nginx.js';
import { TestPki } from '../helpers/pki.js';
import { DEFAULT_TEST_CREDENTIALS } from '../peers/aws-peer.js';

const WINDOW = 32;

interface Needles {
  /** Fixed-length (WINDOW) windows of base64, base64url and lowercase hex encodings. */
  b64: Set<string>;
  b64url: Set<string>;
  hex: Set<string>;
  /** Literal secrets (PINs, API keys), searched as they are. */
  literal: { kind: string; value: string }[];
  keys: number;
}

/** A window of DER's base64 that encodes only bytes of `secret` (aligned as any encoding of the DER is). */
function alignedWindow(der: Buffer, secret: Buffer): string | undefined {
  const o = der.indexOf(secret);
  if (o < 0) return undefined;
  const start = Math.ceil(o / 3);
  const end = Math.floor((o + secret.length) / 3);
  if ((end - start) * 4 < WINDOW) return undefined;
  return der.toString('base64').slice(start * 4, start * 4 + WINDOW);
}

export function needlesOf(secrets: { kind: string; value: string }[]): Needles {
  const n: Needles = { b64: new Set(), b64url: new Set(), hex: new Set(), literal: [], keys: 0 };
  for (const s of secrets) {
    if (s.kind !== 'private-key') {
      n.literal.push(s);
      continue;
    }
    let key;
    try {
      key = createPrivateKey(s.value);
    } catch {
      // Not loadable: the PEM body itself is the needle.
      const body = s.value.replace(/-----[A-Z ]+-----|\s/g, '');
      if (body.length >= WINDOW) n.b64.add(body.slice(body.length >> 1, (body.length >> 1) + WINDOW));
      continue;
    }
    n.keys++;
    const jwk = key.export({ format: 'jwk' }) as { d?: string };
    if (!jwk.d) continue;
    const d = Buffer.from(jwk.d, 'base64url');
    // The scalar (EC) or private exponent (RSA) alone, as JWK, base64 or a hex dump would show it.
    n.b64.add(d.toString('base64').slice(0, WINDOW));
    n.b64url.add(d.toString('base64url').slice(0, WINDOW));
    n.hex.add(d.toString('hex').slice(0, WINDOW));
    const traditional = key.asymmetricKeyType === 'rsa' ? 'pkcs1' : key.asymmetricKeyType === 'ec' ? 'sec1' : undefined;
    const ders = [key.export({ type: 'pkcs8', format: 'der' })];
    if (traditional) ders.push(key.export({ type: traditional, format: 'der' }));
    for (const der of ders) {
      const w = alignedWindow(der, d);
      if (w) n.b64.add(w);
    }
  }
  return n;
}

/** What was leaked where: kinds and places only, never the secret. */
export function findLeaks(text: string, n: Needles, where: string, anyPemKey = true): string[] {
  const leaks: string[] = [];
  const pem = anyPemKey ? /-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----/.exec(text) : null;
  if (pem) leaks.push(`${where}: a private key PEM header (${pem[0]})`);
  // Line breaks and JSON-escaped newlines removed: a key printed as PEM or inside JSON is one run.
  const flat = text.replace(/\\[nr]|\s/g, '');
  const scan = (re: RegExp, set: Set<string>, what: string, lower = false) => {
    if (set.size === 0) return;
    for (const m of flat.matchAll(re)) {
      const run = lower ? m[0].toLowerCase() : m[0];
      for (let i = 0; i + WINDOW <= run.length; i++) {
        if (set.has(run.slice(i, i + WINDOW))) {
          leaks.push(`${where}: private key bytes (${what})`);
          return;
        }
      }
    }
  };
  scan(/[A-Za-z0-9+/]{32,}/g, n.b64, 'base64');
  scan(/[A-Za-z0-9_-]{32,}/g, n.b64url, 'base64url');
  scan(/[0-9A-Fa-f]{32,}/g, n.hex, 'hex', true);
  for (const s of n.literal) {
    const found = /^\d+$/.test(s.value) ? new RegExp(`(?<!\\d)${s.value}(?!\\d)`).test(text) : text.includes(s.value);
    if (found) leaks.push(`${where}: a ${s.kind} value`);
  }
  return leaks;
}

function readSecrets(dir: string): { kind: string; value: string }[] {
  const out: { kind: string; value: string }[] = [];
  const seen = new Set<string>();
  for (const f of readdirSync(dir).filter((x) => x.startsWith('secrets-'))) {
    for (const line of readFileSync(join(dir, f), 'utf8').split('\n')) {
      if (line === '' || seen.has(line)) continue;
      seen.add(line);
      out.push(JSON.parse(line) as { kind: string; value: string });
    }
  }
  return out;
}

const mode = (p: string) => statSync(p).mode & 0o777;

describe('secret hygiene of everything the test run printed', () => {
  const own = process.env[CAPTURE_ENV] ? undefined : mkdtempSync('/dev/shm/certd-hygiene-capture-');
  if (own) process.env[CAPTURE_ENV] = own;
  const captureDir = process.env[CAPTURE_ENV] as string;
  const scratch = shmDir('hygiene');
  const root = scratch.dir;
  const diskDir = mkdtempSync('/var/tmp/certd-hygiene-');
  registerDiskDir(diskDir);
  let pki: TestPki;
  const modes: Record<string, number> = {};

  before(async () => {
    registerSecret('aws-secret-key', DEFAULT_TEST_CREDENTIALS.secretAccessKey);
    pki = new TestPki(join(root, 'pki'));
    const leaf = pki.leaf('leaf', { dns: ['hygiene.certd.test'] });
    const src = pki.publish(leaf, join(root, 'src'));
    const other = pki.leaf('other', { dns: ['hygiene.certd.test'] });
    const state = join(root, 'state');
    const port = await freePort();
    // No trust_anchors: the local CA's chain is its own.
    const config = writeConfig(root, `state_dir: ${state}
schedule: "0 0 1 1 *"
jitter: 0s
metrics: { listen: "127.0.0.1:${port}" }
certificates:
  - name: web
    source: { type: file, cert: ${src.cert}, key: ${src.key}, chain: ${src.chain} }
    targets:
      - { type: tmpfs, dir: ${join(root, 'deploy')} }
      - { type: tmpfs, dir: ${join(root, 'deploy-group')}, group: root }
  - name: issued
    source: { type: local-ca, dns_names: [issued.hygiene.certd.test], ttl: 24h }
    targets: [ { type: tmpfs, dir: ${join(root, 'issued')} } ]
`);
    const r = await runCertd(['rotate', '--now', '--config', config, '--json']);
    assert.equal(r.code, 0, r.stderr);
    // The key certd made itself (local-ca) is a secret of this run too.
    registerSecret('private-key', readFileSync(join(root, 'issued', 'privkey.pem')));
    modes['key'] = mode(join(root, 'deploy', 'privkey.pem'));
    modes['key with group'] = mode(join(root, 'deploy-group', 'privkey.pem'));
    modes['state_dir'] = mode(state);
    modes['state records dir'] = mode(join(state, 'certs'));
    for (const f of readdirSync(join(state, 'certs'))) modes[`state record ${f}`] = mode(join(state, 'certs', f));

    // Failures, whose messages are where key bytes could slip out: a key that is another leaf's.
    const mismatch = writeConfig(root, `state_dir: ${state}
policy: { trust_anchors: ${pki.root.certPath} }
certificates:
  - name: web
    source: { type: file, cert: ${src.cert}, key: ${other.keyPath}, chain: ${src.chain} }
    targets: [ { type: tmpfs, dir: ${join(root, 'deploy')} } ]
  - name: disk
    source: { type: file, cert: ${src.cert}, key: ${src.key}, chain: ${src.chain} }
    targets: [ { type: tmpfs, dir: ${join(diskDir, 'web')} } ]
`, 'mismatch.yaml');
    const bad = await runCertd(['rotate', '--now', '--config', mismatch, '--json']);
    assert.equal(bad.code, 1, bad.stderr);
    await runCertd(['rotate', '--now', '--config', mismatch]);
    await runCertd(['status', '--config', mismatch, '--json']);
    await runCertd(['status', '--config', mismatch]);
    await runCertd(['validate', '--cert', src.cert, '--key', other.keyPath, '--chain', src.chain, '--json']);
    await runCertd(['validate', '--cert', other.keyPath, '--key', src.cert]);

    // The daemon: its log, /metrics, /healthz and status over the control socket.
    let stderr = '';
    const daemon = spawn(process.execPath, [CERTD, 'run', '--config', config], { env: { ...process.env, CERTD_LOG_FORMAT: 'json' }, stdio: ['ignore', 'ignore', 'pipe'] });
    daemon.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    try {
      for (let i = 0; ; i++) {
        const text = await fetch(`http://127.0.0.1:${port}/metrics`).then((x) => x.text(), () => '');
        if (/certd_certificate_ready\{name="web"\} 1/.test(text)) {
          captureOutput('GET /metrics (hygiene)', text);
          break;
        }
        assert.ok(i < 300 && daemon.exitCode === null, `the daemon did not come up: ${stderr.slice(-1500)}`);
        await sleep(50);
      }
      captureOutput('GET /healthz (hygiene)', await fetch(`http://127.0.0.1:${port}/healthz`).then((x) => x.text()));
      modes['control socket'] = mode(join(state, 'control.sock'));
      await runCertd(['status', '--config', config, '--json']);
      await runCertd(['rotate', '--now', '--config', config, '--json']);
    } finally {
      daemon.kill('SIGTERM');
      await new Promise((resolve) => (daemon.exitCode !== null ? resolve(null) : daemon.once('exit', resolve)));
      captureOutput('certd run (hygiene) stderr', stderr);
    }
  });

  after(() => {
    scratch.cleanup();
    rmSync(diskDir, { recursive: true, force: true });
    if (own) rmSync(own, { recursive: true, force: true });
  });

  it('no key material, PIN, API key or AWS secret in any captured output', () => {
    const secrets = readSecrets(captureDir);
    const needles = needlesOf(secrets);
    assert.ok(needles.keys >= 4, `only ${needles.keys} private keys registered: the capture is not wired`);
    const leaks: string[] = [];
    let bytes = 0;
    let files = 0;
    for (const f of readdirSync(captureDir).filter((x) => x.startsWith('out-'))) {
      const text = readFileSync(join(captureDir, f), 'utf8');
      bytes += text.length;
      files++;
      // Per captured section, so a leak names the command or log that printed it.
      for (const section of text.split(/\n(?=### )/)) {
        const title = section.slice(4, section.indexOf('\n') > 0 ? section.indexOf('\n') : 80).slice(0, 120);
        leaks.push(...findLeaks(section, needles, `${f}: ${title}`));
      }
    }
    const kinds = [...new Set(secrets.map((s) => s.kind))].join(', ');
    console.log(`# hygiene: ${(bytes / 1024).toFixed(0)} KiB of output from ${files} test processes checked against ${secrets.length} secrets (${kinds}; ${needles.keys} keys, ${needles.b64.size + needles.b64url.size + needles.hex.size} encodings)`);
    assert.ok(bytes > 0, 'nothing was captured');
    assert.deepEqual(leaks.slice(0, 20), [], `${leaks.length} leaks`);
  });

  it('the checker finds what it looks for (planted leaks)', () => {
    const keyPem = readFileSync(join(root, 'pki', 'leaf.key'), 'utf8');
    const rsa = pki.leaf('rsa', { dns: ['r.hygiene.certd.test'], keySpec: 'rsa-2048' });
    const rsaPem = readFileSync(rsa.keyPath, 'utf8');
    const n = needlesOf([{ kind: 'private-key', value: keyPem }, { kind: 'private-key', value: rsaPem }, { kind: 'pin', value: '482913' }, { kind: 'api-key', value: 'planted-api-key-1234' }]);
    const body = (pem: string) => pem.replace(/-----[A-Z ]+-----/g, '').trim();
    const k = createPrivateKey(keyPem);
    const r = createPrivateKey(rsaPem);
    const d = Buffer.from((k.export({ format: 'jwk' }) as { d: string }).d, 'base64url');
    const planted = {
      'PEM in a log line': JSON.stringify({ msg: 'oops', key: keyPem }),
      'PEM body without its header, JSON-escaped': JSON.stringify({ value: body(keyPem) }),
      'PKCS#8 DER base64 on one line': `x ${k.export({ type: 'pkcs8', format: 'der' }).toString('base64')} y`,
      'SEC1 DER as hex': `dump: ${k.export({ type: 'sec1', format: 'der' }).toString('hex').toUpperCase()}`,
      'the scalar alone, base64url (JWK)': `{"d":"${d.toString('base64url')}"}`,
      'the scalar alone, hex': `d=${d.toString('hex')}`,
      'RSA PKCS#1 DER base64 in 64-column lines': r.export({ type: 'pkcs1', format: 'der' }).toString('base64').replace(/(.{64})/g, '$1\n'),
      'a PIN': 'login with pin 482913 failed',
      'an API key': 'X-API-KEY: planted-api-key-1234',
    };
    for (const [what, text] of Object.entries(planted)) assert.ok(findLeaks(text, n, what).length > 0, `the checker missed ${what}`);
    for (const clean of ['pid 1482913 exited', 'fingerprint AB:CD:EF', JSON.stringify({ cert: pki.root.certPem })]) {
      assert.deepEqual(findLeaks(clean, n, 'clean'), [], `false positive on ${clean.slice(0, 40)}`);
    }
  });

  it('keys 0600 (0640 with group), state_dir 0700 with 0600 records, control socket 0600', () => {
    assert.equal(modes['key'], 0o600);
    assert.equal(modes['key with group'], 0o640);
    assert.equal(modes['state_dir'], 0o700);
    assert.equal(modes['state records dir'], 0o700);
    assert.equal(modes['control socket'], 0o600);
    for (const [what, m] of Object.entries(modes)) if (what.startsWith('state record ')) assert.equal(m, 0o600, what);
  });

  it('a tmpfs target on disk without allow_disk writes nothing there; disk-backed dirs of the run hold no key', () => {
    assert.ok(!existsSync(join(diskDir, 'web')) || readdirSync(join(diskDir, 'web')).length === 0, 'certd wrote to a disk-backed target dir');
    const needles = needlesOf(readSecrets(captureDir));
    const leaks: string[] = [];
    const scanDir = (dir: string, depth: number) => {
      if (depth > 6 || !existsSync(dir)) return;
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = join(dir, e.name);
        if (e.isDirectory()) scanDir(p, depth + 1);
        // Keys of this run only: fixtures other tests keep on disk for openssl are not certd's doing.
        else if (e.isFile() && statSync(p).size < 1024 * 1024) leaks.push(...findLeaks(readFileSync(p, 'latin1'), needles, p, false));
      }
    };
    // The run's own scratch directory and the disk directories tests registered: nothing else.
    for (const d of hygieneScanRoots(captureDir)) scanDir(d, 0);
    assert.deepEqual(leaks.slice(0, 20), [], `${leaks.length} key files on disk`);
  });
});
