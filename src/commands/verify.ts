import { X509Certificate } from 'node:crypto';
import type { Command } from '../cli.js';
import { EXIT_FAIL, EXIT_OK, EXIT_USAGE } from '../cli.js';
import { parseDuration } from '../duration.js';
import { messageOf } from '../errors.js';
import {
  FORBIDDEN_TLS12_FAMILIES,
  FORBIDDEN_TLS13_SUITES,
  normalizeFingerprint,
  probe,
  splitHostPort,
  testProtocols,
  testSuites,
  acceptedSuites,
  type AcceptedSuite,
  type ProtocolResult,
  type Served,
  type SuiteResult,
} from '../verify.js';

export const RULE_TLS_CONF = 'P-TLS-CONF';

export interface VerifyFinding {
  rule: string;
  severity: 'reject' | 'warn';
  message: string;
}

export interface VerifyReport {
  ok: boolean;
  connect: string;
  servername: string;
  served: {
    fingerprint: string;
    protocol: string;
    cipher: string;
    chain: { subject: string; issuer: string; notAfter: string; fingerprint: string }[];
  } | null;
  expectFingerprint: { expected: string; match: boolean } | null;
  protocols: ProtocolResult[];
  suites: SuiteResult[];
  /** Every suite the server accepts (of those certd knows), in its order of preference. */
  accepted: AcceptedSuite[];
  findings: VerifyFinding[];
  /** The OpenSSL that made the handshakes (the ClientHello tests do not depend on it). */
  openssl: string;
}

function describeChain(served: Served): NonNullable<VerifyReport['served']>['chain'] {
  return served.chain.map((der) => {
    const x = new X509Certificate(der);
    return { subject: x.subject.replace(/\n/g, ', '), issuer: x.issuer.replace(/\n/g, ', '), notAfter: new Date(x.validTo).toISOString(), fingerprint: x.fingerprint256 };
  });
}

/** The whole probe; every P-TLS-CONF breach becomes a finding. Never throws for a reachable server. */
export async function verifyEndpoint(o: { connect: string; servername: string; expectFingerprint?: string; timeoutMs: number }): Promise<VerifyReport> {
  const findings: VerifyFinding[] = [];
  const reject = (message: string): void => void findings.push({ rule: RULE_TLS_CONF, severity: 'reject', message });

  let served: Served | undefined;
  try {
    served = await probe({ connect: o.connect, servername: o.servername, timeoutMs: o.timeoutMs });
  } catch (err) {
    reject(`no handshake with FIPS-approved protocols and suites (TLS 1.2/1.3, ECDHE/DHE with AES-GCM/CBC-SHA2, TLS 1.3 AES-GCM/CCM): ${messageOf(err)}`);
  }
  const protocols = await testProtocols(o);
  for (const p of protocols) {
    if ((p.version === 'TLSv1' || p.version === 'TLSv1.1') && p.result === 'accepted') reject(`${p.version} is accepted (TLS >= 1.2 is required): ${p.detail}`);
  }
  const suites = await testSuites(o);
  for (const s of suites) {
    if (s.result !== 'accepted') continue;
    const why = s.tls === '1.2'
      ? FORBIDDEN_TLS12_FAMILIES.find((f) => f.family === s.family)?.why
      : FORBIDDEN_TLS13_SUITES.find((f) => f.family === s.family)?.why;
    reject(`TLS ${s.tls} ${s.family} suites are accepted (${s.negotiated ?? s.detail}): ${why ?? 'not FIPS-approved'}`);
  }
  const accepted = await acceptedSuites(o);
  // Every non-approved suite certd offers belongs to a family above; a family probe that did
  // not see it (the server picked another member first is fine; a refusal then an acceptance is
  // not) still makes it a finding.
  for (const a of accepted) {
    if (a.fips) continue;
    const code = Number(a.code);
    const families = a.tls === '1.2' ? FORBIDDEN_TLS12_FAMILIES.filter((f) => code in f.suites).map((f) => f.family) : FORBIDDEN_TLS13_SUITES.filter((f) => f.code === code).map((f) => f.family);
    const found = suites.some((s) => s.tls === a.tls && s.result === 'accepted' && families.includes(s.family));
    if (!found) reject(`TLS ${a.tls} ${a.suite} (${a.code}) is accepted: not FIPS-approved`);
  }
  let expect: VerifyReport['expectFingerprint'] = null;
  if (o.expectFingerprint !== undefined) {
    const match = served !== undefined && served.fingerprint === o.expectFingerprint;
    expect = { expected: o.expectFingerprint, match };
    if (!match) {
      findings.push({
        rule: 'EXPECTED-FINGERPRINT',
        severity: 'reject',
        message: served ? `the server presents ${served.fingerprint}, not the expected ${o.expectFingerprint}` : 'no certificate could be read to compare with the expected fingerprint',
      });
    }
  }
  return {
    ok: findings.length === 0,
    connect: o.connect,
    servername: o.servername,
    served: served ? { fingerprint: served.fingerprint, protocol: served.protocol, cipher: served.cipher, chain: describeChain(served) } : null,
    expectFingerprint: expect,
    protocols,
    suites,
    accepted,
    findings,
    openssl: process.versions.openssl ?? 'unknown',
  };
}

function human(r: VerifyReport): string {
  const lines: string[] = [`${r.connect} (SNI ${r.servername})`];
  if (r.served) {
    lines.push(`served: ${r.served.protocol} ${r.served.cipher}`, `leaf:   ${r.served.fingerprint}`);
    r.served.chain.forEach((c, i) => lines.push(`  [${i}] ${c.subject}  (issuer ${c.issuer}; not after ${c.notAfter})`));
  }
  if (r.expectFingerprint) lines.push(`expected fingerprint: ${r.expectFingerprint.match ? 'matches' : 'DOES NOT MATCH'}`);
  lines.push('protocols:');
  for (const p of r.protocols) lines.push(`  ${p.version.padEnd(8)} ${p.result.padEnd(9)} ${p.detail}`);
  lines.push('non-FIPS suites:');
  for (const s of r.suites) lines.push(`  TLS ${s.tls} ${s.family.padEnd(9)} ${s.result.padEnd(9)} ${s.detail} [${s.method}, ${s.offered} offered]`);
  lines.push('accepted suites (server order):');
  for (const a of r.accepted) lines.push(`  TLS ${a.tls} ${a.suite.padEnd(32)} ${a.code}  ${a.fips ? 'FIPS' : 'NOT FIPS'}`);
  if (r.accepted.length === 0) lines.push('  (none of those certd knows)');
  const untested = r.suites.filter((s) => s.result === 'untested').map((s) => s.family);
  if (untested.length > 0) lines.push(`not tested: ${untested.join(', ')} (see detail)`);
  for (const f of r.findings) lines.push(`${f.rule}: ${f.message}`);
  lines.push(r.ok ? 'OK: no findings' : `${r.findings.length} finding(s)`);
  return `${lines.join('\n')}\n`;
}

export const verifyCommand: Command = {
  summary: 'certd verify: TLS probe of a server: served chain, protocols, non-FIPS suites (rule P-TLS-CONF).',
  usage: 'certd verify --connect HOST:PORT --servername N [--expect-fingerprint SHA256] [--timeout 5s] [--json]',
  help: `Options:
  --connect HOST:PORT          the server to probe
  --servername N               SNI name to send
  --expect-fingerprint SHA256  the leaf's SHA-256 fingerprint (hex, with or without colons, any case)
  --timeout D                  per handshake (default 5s)
  --json                       {"ok", "served", "protocols", "suites", "findings": [{"rule","severity","message"}]}

Checks that TLS 1.0/1.1 are refused, reports TLS 1.2/1.3, and offers each non-FIPS suite family
alone: TLS 1.2 RC4, 3DES, CAMELLIA, CHACHA20, NULL, EXPORT, MD5, static-RSA key exchange and CBC
with SHA-1 (with a ClientHello written by certd, so suites this OpenSSL lacks can still be
offered) and TLS 1.3 CHACHA20 (a TLS 1.3 ClientHello). Each is "accepted", "refused" or
"untested" (with the reason). Then lists every suite the server accepts, approved or not, in its
order of preference ("accepted", each marked FIPS or NOT FIPS). TLS 1.0/1.1 are asked with a
ClientHello when this runtime cannot offer them (a FIPS provider), so a FIPS-mode certd gives
the same verdict. Exit 0 no findings; 1 a finding or no handshake; 2 usage.`,
  options: {
    connect: { type: 'string' },
    servername: { type: 'string' },
    'expect-fingerprint': { type: 'string' },
    timeout: { type: 'string' },
    json: { type: 'boolean' },
  },
  async run(v, _p, io) {
    const usage = (msg: string): number => {
      io.err(`certd verify: ${msg}\nUsage: ${verifyCommand.usage}\n`);
      return EXIT_USAGE;
    };
    const connect = v['connect'];
    const servername = v['servername'];
    if (typeof connect !== 'string') return usage('--connect HOST:PORT is required');
    if (typeof servername !== 'string' || servername === '') return usage('--servername is required');
    try {
      splitHostPort(connect);
    } catch (err) {
      return usage(messageOf(err));
    }
    let expectFingerprint: string | undefined;
    if (typeof v['expect-fingerprint'] === 'string') {
      expectFingerprint = normalizeFingerprint(v['expect-fingerprint']);
      if (expectFingerprint === undefined) return usage('--expect-fingerprint must be a SHA-256 fingerprint: 64 hex digits, colons optional');
    }
    let timeoutMs = 5000;
    if (typeof v['timeout'] === 'string') {
      try {
        timeoutMs = parseDuration(v['timeout']);
      } catch (err) {
        return usage(`--timeout: ${messageOf(err)}`);
      }
    }
    const report = await verifyEndpoint({ connect, servername, timeoutMs, ...(expectFingerprint === undefined ? {} : { expectFingerprint }) });
    io.out(v['json'] === true ? `${JSON.stringify(report, null, 2)}\n` : human(report));
    return report.ok ? EXIT_OK : EXIT_FAIL;
  },
};
