// `certd verify` (rule P-TLS-CONF) against real nginx: a FIPS-only configuration passes; CHACHA20,
// CAMELLIA and TLS 1.0/1.1 are found; a wrong expected fingerprint is a finding. A minimal TLS
// peer that answers a ClientHello with a ServerHello shows the families no OpenSSL 3 server
// here can accept (RC4, 3DES, EXPORT) are still detected.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startNginx, type RunningNginx } from '../helpers/nginx.js';
import { makeSelfSigned, openssl, type SelfSigned } from '../helpers/tls.js';
import { runCertd } from '../helpers/cli.js';
import { FIPS_RUN } from '../helpers/fixture-env.js';
import { FORBIDDEN_TLS12_FAMILIES, normalizeFingerprint, offerTls12Family, serverAnswer, tls12ClientHello, tls13ClientHello } from '../../src/verify.js';
import type { VerifyReport } from '../../src/commands/verify.js';

const FIPS_TLS = `ssl_protocols TLSv1.2 TLSv1.3;
ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384;
ssl_conf_command Ciphersuites TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256;`;

async function verify(port: number, servername: string, extra: string[] = []): Promise<{ code: number | null; report: VerifyReport; stderr: string }> {
  const r = await runCertd(['verify', '--connect', `127.0.0.1:${port}`, '--servername', servername, '--json', ...extra]);
  let report: VerifyReport;
  try {
    report = JSON.parse(r.stdout) as VerifyReport;
  } catch {
    throw new Error(`certd verify printed no JSON (exit ${r.code}): ${r.stdout}${r.stderr}`);
  }
  return { code: r.code, report, stderr: r.stderr };
}

/** The accepted suites as "1.2 NAME fips|not" strings, sorted (the order is the server's). */
const acceptedOf = (r: VerifyReport): string[] => r.accepted.map((a) => `${a.tls} ${a.suite} ${a.fips ? 'fips' : 'not'}`).sort();
const suite = (r: VerifyReport, family: string, tls: '1.2' | '1.3') => r.suites.find((s) => s.family === family && s.tls === tls);
const protocol = (r: VerifyReport, v: string) => r.protocols.find((p) => p.version === v);

describe('certd verify against real nginx', () => {
  let dir: string;
  let nginx: RunningNginx;
  let ec: SelfSigned;
  let rsa: SelfSigned;
  const port = (i: number): number => nginx.ports[i]!;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'certd-verify-'));
    ec = makeSelfSigned(dir, { cn: 'fips.example.test', keyType: 'ec' });
    rsa = makeSelfSigned(dir, { cn: 'rsa.example.test', keyType: 'rsa' });
    const certs = (c: SelfSigned): string => `ssl_certificate ${c.certPath};\nssl_certificate_key ${c.keyPath};`;
    nginx = await startNginx({
      prefix: dir,
      servers: [
        { serverName: 'fips.example.test', body: `${certs(ec)}\n${FIPS_TLS}` },
        {
          serverName: 'fips.example.test',
          body: `${certs(ec)}\nssl_protocols TLSv1.2 TLSv1.3;\nssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305;\nssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256;`,
        },
        // CAMELLIA suites need an RSA certificate (there are no ECDSA CAMELLIA suites in OpenSSL).
        { serverName: 'rsa.example.test', body: `${certs(rsa)}\nssl_protocols TLSv1.2;\nssl_ciphers ECDHE-RSA-AES128-GCM-SHA256:CAMELLIA;` },
        // Debian's OpenSSL runs at security level 2, which refuses TLS < 1.2 unless lowered.
        { serverName: 'rsa.example.test', body: `${certs(rsa)}\nssl_protocols TLSv1 TLSv1.1 TLSv1.2;\nssl_ciphers 'ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-SHA:@SECLEVEL=0';` },
      ],
    });
  });
  after(async () => {
    await nginx?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a FIPS-only configuration passes: TLS 1.0/1.1 refused, 1.2 and 1.3 reported, every non-FIPS family refused', async () => {
    const { code, report, stderr } = await verify(port(0), 'fips.example.test');
    assert.equal(code, 0, JSON.stringify(report.findings) + stderr);
    assert.equal(report.ok, true);
    assert.deepEqual(report.findings, []);
    assert.deepEqual(report.protocols.map((p) => [p.version, p.result]), [['TLSv1', 'refused'], ['TLSv1.1', 'refused'], ['TLSv1.2', 'accepted'], ['TLSv1.3', 'accepted']]);
    assert.equal(report.served?.protocol, 'TLSv1.3');
    assert.equal(report.served?.fingerprint, normalizeFingerprint(ecFingerprint()));
    assert.equal(report.served?.chain.length, 1);
    for (const s of report.suites) assert.equal(s.result, 'refused', `${s.family} TLS ${s.tls}: ${s.detail}`);
    // Every family of P-TLS-CONF was offered.
    for (const f of ['RC4', '3DES', 'CAMELLIA', 'CHACHA20', 'NULL', 'EXPORT', 'MD5']) assert.ok(suite(report, f, '1.2'), f);
    assert.ok(suite(report, 'CHACHA20', '1.3'));
    // What this nginx offers, listed whole and marked: exactly its ssl_ciphers / Ciphersuites
    // (an ECDSA certificate, so the ECDHE-ECDSA half), whatever runtime certd itself runs on.
    assert.deepEqual(acceptedOf(report), [
      '1.2 ECDHE-ECDSA-AES128-GCM-SHA256 fips', '1.2 ECDHE-ECDSA-AES256-GCM-SHA384 fips',
      '1.3 TLS_AES_128_GCM_SHA256 fips', '1.3 TLS_AES_256_GCM_SHA384 fips',
    ]);
  });

  function ecFingerprint(): string {
    // The openssl CLI's own fingerprint, an independent computation from certd's.
    return openssl(['x509', '-noout', '-fingerprint', '-sha256', '-in', ec.certPath]).trim().replace(/^.*=/, '');
  }

  if (!FIPS_RUN) {
    it('CHACHA20 allowed (TLS 1.2 and 1.3) is a P-TLS-CONF finding, exit 1', async () => {
      const { code, report } = await verify(port(1), 'fips.example.test');
      assert.equal(code, 1);
      assert.equal(suite(report, 'CHACHA20', '1.2')?.result, 'accepted');
      assert.equal(suite(report, 'CHACHA20', '1.2')?.negotiated, 'ECDHE-ECDSA-CHACHA20-POLY1305');
      assert.equal(suite(report, 'CHACHA20', '1.3')?.result, 'accepted');
      assert.equal(suite(report, 'CHACHA20', '1.3')?.negotiated, 'TLS_CHACHA20_POLY1305_SHA256');
      assert.equal(report.findings.length, 2, JSON.stringify(report.findings));
      assert.ok(report.findings.every((f) => f.rule === 'P-TLS-CONF' && /CHACHA20/.test(f.message)));
      assert.deepEqual(acceptedOf(report), [
        '1.2 ECDHE-ECDSA-AES128-GCM-SHA256 fips', '1.2 ECDHE-ECDSA-CHACHA20-POLY1305 not',
        '1.3 TLS_AES_128_GCM_SHA256 fips', '1.3 TLS_CHACHA20_POLY1305_SHA256 not',
      ]);
    });

    it('CAMELLIA allowed is a P-TLS-CONF finding, exit 1', async () => {
      const { code, report } = await verify(port(2), 'rsa.example.test');
      assert.equal(code, 1);
      assert.equal(suite(report, 'CAMELLIA', '1.2')?.result, 'accepted');
      assert.match(suite(report, 'CAMELLIA', '1.2')?.negotiated ?? '', /CAMELLIA/);
      assert.ok(report.findings.some((f) => f.rule === 'P-TLS-CONF' && /CAMELLIA/.test(f.message)), JSON.stringify(report.findings));
      // Only TLS 1.2 is enabled there: the TLS 1.3 probe must say refused, not accepted.
      assert.equal(protocol(report, 'TLSv1.3')?.result, 'refused');
      assert.ok(report.accepted.filter((a) => /CAMELLIA/.test(a.suite)).length >= 2, JSON.stringify(report.accepted));
      assert.ok(report.accepted.every((a) => a.fips === !/CAMELLIA/.test(a.suite)), JSON.stringify(report.accepted));
    });

    it('TLS 1.0/1.1 and CBC-SHA1 accepted are P-TLS-CONF findings, exit 1', async () => {
      const { code, report } = await verify(port(3), 'rsa.example.test');
      assert.equal(code, 1);
      assert.equal(protocol(report, 'TLSv1')?.result, 'accepted');
      assert.equal(protocol(report, 'TLSv1.1')?.result, 'accepted');
      assert.equal(suite(report, 'CBC-SHA1', '1.2')?.result, 'accepted');
      const messages = report.findings.map((f) => f.message).join('\n');
      assert.match(messages, /TLSv1 is accepted/);
      assert.match(messages, /TLSv1\.1 is accepted/);
      assert.match(messages, /CBC-SHA1/);
    });
  } else {
    // nginx runs with the same FIPS provider: what its config names but the provider lacks is not
    // offered, and certd (whose own OpenSSL cannot offer CHACHA20, CAMELLIA or TLS 1.0/1.1 either)
    // still asks for each with its own ClientHello and gets the server's refusal: a verdict, not
    // "untested".
    it('FIPS nginx configured with CHACHA20: certd asks for it anyway and sees it refused, no finding', async () => {
      const { code, report } = await verify(port(1), 'fips.example.test');
      for (const tls of ['1.2', '1.3'] as const) {
        assert.equal(suite(report, 'CHACHA20', tls)?.result, 'refused', JSON.stringify(suite(report, 'CHACHA20', tls)));
        assert.equal(suite(report, 'CHACHA20', tls)?.method, 'clienthello');
      }
      assert.deepEqual(acceptedOf(report), ['1.2 ECDHE-ECDSA-AES128-GCM-SHA256 fips', '1.3 TLS_AES_128_GCM_SHA256 fips']);
      assert.equal(code, 0, JSON.stringify(report.findings));
    });

    it('FIPS nginx configured with CAMELLIA: refused; TLS 1.0/1.1 asked by ClientHello and refused; CBC-SHA1 still a finding', async () => {
      const camellia = await verify(port(2), 'rsa.example.test');
      assert.equal(suite(camellia.report, 'CAMELLIA', '1.2')?.result, 'refused');
      assert.deepEqual(acceptedOf(camellia.report), ['1.2 ECDHE-RSA-AES128-GCM-SHA256 fips']);
      assert.equal(camellia.code, 0, JSON.stringify(camellia.report.findings));
      const legacy = await verify(port(3), 'rsa.example.test');
      for (const v of ['TLSv1', 'TLSv1.1']) {
        assert.equal(protocol(legacy.report, v)?.result, 'refused', JSON.stringify(protocol(legacy.report, v)));
        assert.match(protocol(legacy.report, v)?.detail ?? '', /clienthello/);
      }
      // SHA-1 HMAC is in the FIPS provider, so the provider serves it; P-TLS-CONF still forbids it.
      assert.equal(suite(legacy.report, 'CBC-SHA1', '1.2')?.result, 'accepted');
      assert.ok(legacy.report.accepted.some((a) => a.suite === 'ECDHE-RSA-AES128-SHA' && !a.fips), JSON.stringify(legacy.report.accepted));
      assert.equal(legacy.code, 1);
      assert.match(legacy.report.findings.map((f) => f.message).join('\n'), /CBC-SHA1/);
    });
  }

  it('--expect-fingerprint: matches with or without colons in any case; a mismatch exits 1', async () => {
    const fp = ecFingerprint();
    for (const form of [fp, fp.replace(/:/g, ''), fp.toLowerCase(), fp.replace(/:/g, '').toLowerCase()]) {
      const { code, report } = await verify(port(0), 'fips.example.test', ['--expect-fingerprint', form]);
      assert.equal(code, 0, `${form}: ${JSON.stringify(report.findings)}`);
      assert.equal(report.expectFingerprint?.match, true);
    }
    const wrong = ecFingerprint().replace(/^../, (b) => (b === '00' ? '01' : '00'));
    const { code, report } = await verify(port(0), 'fips.example.test', ['--expect-fingerprint', wrong]);
    assert.equal(code, 1);
    assert.equal(report.expectFingerprint?.match, false);
    assert.equal(report.findings.length, 1);
    assert.match(report.findings[0]?.message ?? '', /not the expected/);
  });

  it('usage errors exit 2', async () => {
    assert.equal((await runCertd(['verify', '--servername', 'x'])).code, 2);
    assert.equal((await runCertd(['verify', '--connect', '127.0.0.1:1'])).code, 2);
    assert.equal((await runCertd(['verify', '--connect', 'nohostport', '--servername', 'x'])).code, 2);
    assert.equal((await runCertd(['verify', '--connect', `127.0.0.1:${port(0)}`, '--servername', 'x', '--expect-fingerprint', 'abc'])).code, 2);
  });

  it('text output names findings, lists the accepted suites marked, and exits 1', async () => {
    const r = await runCertd(['verify', '--connect', `127.0.0.1:${port(FIPS_RUN ? 3 : 1)}`, '--servername', FIPS_RUN ? 'rsa.example.test' : 'fips.example.test']);
    assert.equal(r.code, 1);
    assert.match(r.stdout, FIPS_RUN ? /^P-TLS-CONF: TLS 1\.2 CBC-SHA1 suites are accepted/m : /^P-TLS-CONF: TLS 1\.2 CHACHA20 suites are accepted/m);
    assert.match(r.stdout, /^accepted suites \(server order\):$/m);
    assert.match(r.stdout, FIPS_RUN ? /^ {2}TLS 1\.2 ECDHE-RSA-AES128-SHA +0xc013 {2}NOT FIPS$/m : /^ {2}TLS 1\.3 TLS_CHACHA20_POLY1305_SHA256 +0x1303 {2}NOT FIPS$/m);
  });
});

describe('the ClientHello probe against a minimal TLS peer', () => {
  // The peer reads the offered suites from the ClientHello and answers with a ServerHello
  // choosing the first one it "supports", else a handshake_failure alert: the first flight of a
  // real server, enough to see what it would choose.
  let server: Server;
  let port = 0;
  const accepts = new Set([0x0005, 0x000a, 0x0008]); // RC4-SHA, DES-CBC3-SHA, EXP-DES-CBC-SHA
  before(async () => {
    server = createServer((socket) => {
      let data = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        data = Buffer.concat([data, chunk]);
        if (data.length < 5 || data.length < 5 + data.readUInt16BE(3)) return;
        let o = 5 + 4 + 2 + 32;
        o += 1 + data[o]!;
        const n = data.readUInt16BE(o);
        const offered: number[] = [];
        for (let i = 0; i < n; i += 2) offered.push(data.readUInt16BE(o + 2 + i));
        const pick = offered.find((s) => accepts.has(s));
        if (pick === undefined) {
          socket.end(Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 40]));
          return;
        }
        const body = Buffer.concat([Buffer.from([0x03, 0x03]), Buffer.alloc(32, 7), Buffer.from([0]), Buffer.from([pick >> 8, pick & 0xff]), Buffer.from([0])]);
        const hs = Buffer.concat([Buffer.from([2, 0, 0, body.length]), body]);
        socket.end(Buffer.concat([Buffer.from([0x16, 0x03, 0x03, 0, hs.length]), hs]));
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const a = server.address();
    port = typeof a === 'object' && a ? a.port : 0;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  for (const [family, expected] of [['RC4', 'RC4-SHA'], ['3DES', 'DES-CBC3-SHA'], ['EXPORT', 'EXP-DES-CBC-SHA']] as const) {
    it(`detects ${family} accepted (no OpenSSL 3 here can offer or serve it)`, async () => {
      const f = FORBIDDEN_TLS12_FAMILIES.find((x) => x.family === family)!;
      const r = await offerTls12Family({ connect: `127.0.0.1:${port}`, servername: 'x.test' }, f);
      assert.equal(r.result, 'accepted', r.detail);
      assert.equal(r.negotiated, expected);
    });
  }

  it('reports a refusal as refused', async () => {
    const f = FORBIDDEN_TLS12_FAMILIES.find((x) => x.family === 'CAMELLIA')!;
    const r = await offerTls12Family({ connect: `127.0.0.1:${port}`, servername: 'x.test' }, f);
    assert.equal(r.result, 'refused');
    assert.match(r.detail, /handshake_failure/);
  });

  it('the ClientHello offers exactly the family, and parses as TLS', () => {
    const hello = tls12ClientHello('a.test', [0x0005, 0x000a]);
    assert.equal(hello[0], 0x16);
    assert.equal(hello.readUInt16BE(3), hello.length - 5);
    let o = 5 + 4 + 2 + 32;
    o += 1 + hello[o]!;
    assert.equal(hello.readUInt16BE(o), 6); // two suites + the renegotiation SCSV
    assert.deepEqual([hello.readUInt16BE(o + 2), hello.readUInt16BE(o + 4), hello.readUInt16BE(o + 6)], [0x0005, 0x000a, 0x00ff]);
    assert.deepEqual(serverAnswer(Buffer.from([0x15, 3, 3, 0, 2, 2, 70])), { kind: 'alert', description: 'protocol_version' });
    assert.deepEqual(serverAnswer(Buffer.from([0x16, 3, 3])), { kind: 'incomplete' });
  });

  it('the TLS 1.3 ClientHello offers only TLS 1.3, the given suites and a P-256 key share', () => {
    const hello = tls13ClientHello('a.test', [0x1303]);
    assert.equal(hello.readUInt16BE(3), hello.length - 5);
    let o = 5 + 4 + 2 + 32;
    assert.equal(hello[o], 32); // a legacy session id, as RFC 8446 middlebox compatibility asks
    o += 1 + 32;
    assert.equal(hello.readUInt16BE(o), 2);
    assert.equal(hello.readUInt16BE(o + 2), 0x1303);
    const text = hello.toString('hex');
    assert.ok(text.includes('002b0003020304'), 'supported_versions: TLS 1.3 only');
    assert.ok(text.includes('00330047004500170041' + '04'), 'key_share: one P-256 uncompressed point');
  });

  it('normalizes fingerprints', () => {
    const hex = 'ab'.repeat(32);
    const want = Array(32).fill('AB').join(':');
    assert.equal(normalizeFingerprint(hex), want);
    assert.equal(normalizeFingerprint(want.toLowerCase()), want);
    assert.equal(normalizeFingerprint('ab'.repeat(31)), undefined);
    assert.equal(normalizeFingerprint('zz'.repeat(32)), undefined);
  });
});
