/**
 * `certd report`: one document an assessor can take away as evidence for NIST SP 800-53 SC-12
 * (key management), SC-13 (cryptographic protection) and SC-17 (PKI certificates).
 *
 * Everything in it is observed, not assumed: the policy is re-run on the certificates read back
 * from where they are deployed, the host's FIPS state comes from a working probe and from the
 * system openssl CLI (whose contrapositive checks must fail where FIPS forbids), the endpoints
 * are scanned with the TLS probe of `certd verify`, and rotation history comes from the audit
 * trail after its hash chain has been checked. The report never reads a private key.
 */
import { spawnSync } from 'node:child_process';
import { createHash, createPrivateKey, createPublicKey, sign as cryptoSign } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { hostname, release, platform } from 'node:os';
import { delimiter, join } from 'node:path';
import { readAuditRecords, verifyAuditFile, type AuditRecord, type AuditVerification } from './audit.js';
import type { LoadedConfig } from './config.js';
import { describesDeployment } from './contracts.js';
import { describeEndpoint, type EndpointUse } from './endpoints.js';
import { CertdError, messageOf } from './errors.js';
import { MISSING_KERNEL, probeFips, requiresFips, systemProbeDeps, type FipsReport } from './fips.js';
import type { Logger } from './log.js';
import { checkPolicy } from './policy/check.js';
import { parseBundle } from './policy/pem.js';
import type { Finding } from './policy/types.js';
import { describeCertificate, issuance, parseCertificate, type CertificateSummary } from './policy/x509.js';
import { buildRuntime, noAudit, type CertificateRuntime, type Runtime } from './runtime.js';
import type { CertState } from './state.js';
import { FIPS_TLS12_CIPHERS, FIPS_TLS13_SUITES, tryHandshake, type Outcome } from './verify.js';
import { verifyEndpoint, type VerifyReport } from './commands/verify.js';

export type ControlId = 'SC-12' | 'SC-13' | 'SC-17';
export type Status = 'pass' | 'attention' | 'fail';

/** Each rule of POLICY.md: the standards behind it and the SP 800-53 controls it gives evidence for. */
export const RULE_REFERENCES: Readonly<Record<string, { readonly references: readonly string[]; readonly controls: readonly ControlId[] }>> = {
  'P-KEY-ALG': { references: ['NIST SP 800-131A r2 §3', 'FIPS 186-5 §§5-6', 'NIST SP 800-52 r2 §3.2'], controls: ['SC-12', 'SC-13'] },
  'P-DSA': { references: ['FIPS 186-5 (DSA retired for signature generation)', 'NIST SP 800-131A r2 §3'], controls: ['SC-12', 'SC-13'] },
  'P-RSA-MIN': { references: ['NIST SP 800-131A r2 §3 (RSA >= 2048)', 'NIST SP 800-57 Pt 1 r5 §5.6.1', 'FIPS 186-5 §5.1'], controls: ['SC-12', 'SC-13'] },
  'P-RSA-EXP': { references: ['FIPS 186-5 §5.4 (2^16 < e < 2^256, odd)'], controls: ['SC-12'] },
  'P-EC-CURVE': { references: ['FIPS 186-5 §6', 'NIST SP 800-186', 'NIST SP 800-52 r2 §3.3.1'], controls: ['SC-12', 'SC-13'] },
  'P-EC-EXPLICIT': { references: ['RFC 5480 §2.1.1 (namedCurve)', 'NIST SP 800-186'], controls: ['SC-12'] },
  'P-EDDSA': { references: ['FIPS 186-5 §7', 'RFC 8410'], controls: ['SC-12', 'SC-13'] },
  'P-SIG-HASH': { references: ['NIST SP 800-131A r2 §9 (SHA-1 disallowed for signatures)', 'FIPS 180-4', 'FIPS 202', 'CA/B BR §7.1.3.2'], controls: ['SC-13', 'SC-17'] },
  'P-SIG-STRENGTH': { references: ['NIST SP 800-57 Pt 1 r5 §5.6.2 (>= 112 bits)', 'NIST SP 800-131A r2'], controls: ['SC-13'] },
  'P-V3': { references: ['RFC 5280 §4.1.2.1', 'CA/B BR §7.1.1'], controls: ['SC-17'] },
  'P-LEAF-BC': { references: ['RFC 5280 §4.2.1.9, §4.2.1.3', 'NIST SP 800-52 r2 §3.2.1', 'CA/B BR §7.1.2.7'], controls: ['SC-17'] },
  'P-KU': { references: ['RFC 5280 §4.2.1.3', 'NIST SP 800-52 r2 §3.2.1'], controls: ['SC-17'] },
  'P-EKU': { references: ['RFC 5280 §4.2.1.12', 'NIST SP 800-52 r2 §3.2.1', 'CA/B BR §7.1.2.7.10'], controls: ['SC-17'] },
  'P-SAN': { references: ['RFC 5280 §4.2.1.6', 'RFC 6125 §6', 'CA/B BR §7.1.2.7.12'], controls: ['SC-17'] },
  'P-VALID': { references: ['RFC 5280 §4.1.2.5, §6.1.3'], controls: ['SC-17'] },
  'P-MIN-REMAINING': { references: ['NIST SP 800-57 Pt 1 r5 §5.3 (cryptoperiods)'], controls: ['SC-12'] },
  'P-EXPIRING': { references: ['NIST SP 800-57 Pt 1 r5 §5.3'], controls: ['SC-12'] },
  'P-LIFE-FIPS': { references: ['NIST SP 800-57 Pt 1 r5 §5.3.6 (1-3 year cryptoperiod)'], controls: ['SC-12'] },
  'P-LIFE-PUBLIC': { references: ['CA/B BR §6.3.2 (ballot SC-081)'], controls: ['SC-17'] },
  'P-SELF-SIGNED': { references: ['RFC 5280 §6.1 (path to a trust anchor)', 'NIST SP 800-52 r2 §3.2.1'], controls: ['SC-17'] },
  'P-KEYMATCH': { references: ['NIST SP 800-89 (assurance of possession)', 'RFC 5280 §4.1.2.7'], controls: ['SC-12'] },
  'P-KEY-PEM': { references: ['RFC 8018 (PBES2)', 'NIST SP 800-132', 'NIST SP 800-131A r2 §9 (MD5)'], controls: ['SC-12'] },
  'P-CHAIN-ORDER': { references: ['RFC 8446 §4.4.2', 'RFC 5246 §7.4.2', 'RFC 5280 §6.1'], controls: ['SC-17'] },
  'P-CHAIN-ANCHOR': { references: ['RFC 5280 §6.1', 'NIST SP 800-52 r2 §3.2'], controls: ['SC-17'] },
  'P-CHAIN-CA': { references: ['RFC 5280 §4.2.1.9, §4.2.1.3'], controls: ['SC-17'] },
  'P-CHAIN-PATHLEN': { references: ['RFC 5280 §4.2.1.9, §6.1.4'], controls: ['SC-17'] },
  'P-PARSE': { references: ['RFC 5280 §4', 'RFC 7468'], controls: ['SC-17'] },
  'P-FIPS-RT': { references: ['FIPS 140-3', 'NIST SP 800-131A r2'], controls: ['SC-13'] },
  'P-TLS-CONF': { references: ['NIST SP 800-52 r2 §3.1 (TLS >= 1.2)', 'NIST SP 800-52 r2 §3.3.1 (cipher suites)'], controls: ['SC-13'] },
};

const CONTROL_TITLES: Readonly<Record<ControlId, string>> = {
  'SC-12': 'Cryptographic Key Establishment and Management',
  'SC-13': 'Cryptographic Protection',
  'SC-17': 'Public Key Infrastructure Certificates',
};

const DAY_MS = 86_400_000;

export interface ReportFinding extends Finding {
  readonly references: readonly string[];
  readonly controls: readonly ControlId[];
}

export interface ChainEntry extends CertificateSummary {
  readonly role: 'leaf' | 'intermediate' | 'anchor';
  /** Where an anchor came from: the deployed chain itself or policy.trust_anchors. */
  readonly from?: 'deployed chain' | 'trust_anchors';
}

export interface CertificateSection {
  name: string;
  source: { type: string; version: string | null; origin: string | null };
  hostnames: readonly string[];
  deployedAt: string | null;
  lastResult: { result: string; at: string; error: { code: string; message: string } | null } | null;
  /** Where the certificates the policy was re-run on were read, or why it was not re-run. */
  checkedFrom: string;
  leaf: (CertificateSummary & { daysLeft: number }) | null;
  /** The last-good record, when no deployed certificate could be read back. */
  lastGood: { fingerprint: string; subject: string; dnsNames: readonly string[]; notBefore: string; notAfter: string; daysLeft: number } | null;
  chain: ChainEntry[];
  anchor: ChainEntry | null;
  findings: ReportFinding[];
  verdict: 'pass' | 'warn' | 'reject' | 'unknown';
  /** The deployed files match the last-good record (null when either is missing). */
  matchesLastGood: boolean | null;
  deployment: Record<string, unknown>[];
  /** The AWS endpoints the certificate's last cycle that called AWS used (null: none recorded). */
  awsEndpoints: { at: string; used: readonly EndpointUse[] } | null;
  history: AuditRecord[];
}

export interface CliCheck {
  command: string;
  exitCode: number | null;
  /** What FIPS mode requires of this check: "fails" (MD5) or "works" (SHA-256). */
  fipsExpects: 'fails' | 'works';
  /** Whether the result is what FIPS mode requires. */
  asFipsRequires: boolean;
  output: string;
}

export interface HostSection {
  hostname: string;
  platform: string;
  kernelRelease: string;
  kernelFips: 0 | 1 | null;
  runtime: FipsReport;
  systemOpenssl: {
    version: string | null;
    providers: string | null;
    checks: CliCheck[];
  };
  nginx: {
    binary: string;
    found: boolean;
    output: string | null;
    builtWith: string | null;
    runningWith: string | null;
    /** The libssl/libcrypto nginx loads (ldd), when it links them dynamically. */
    libraries: string[];
  } | null;
}

export interface EndpointSection {
  cert: string;
  connect: string;
  servername: string;
  probe: VerifyReport;
  fipsSuites: { tls: '1.2' | '1.3'; suite: string; result: Outcome; detail: string }[];
}

export interface ControlSummary {
  control: ControlId;
  title: string;
  status: Status;
  /** Why the status is not pass: one sentence each. */
  issues: string[];
  /** What was checked and held. */
  evidence: string[];
}

export interface ComplianceReport {
  kind: 'certd-compliance-report';
  formatVersion: 1;
  generatedAt: string;
  certd: { version: string; node: string };
  config: string;
  summary: {
    controls: ControlSummary[];
    /**
     * mode: FIPS crypto is proven (certd's runtime probe and the system OpenSSL); level says what
     * was proven: `host` (and the kernel flag reads 1), `runtime` (a working FIPS provider, the
     * kernel flag not set: a container's host), `none`. hostFlag is the kernel flag as read.
     */
    fips: { mode: boolean; level: 'host' | 'runtime' | 'none'; hostFlag: 0 | 1 | null; provider: string | null; statement: string; reasons: string[] };
  };
  certificates: CertificateSection[];
  endpoints: EndpointSection[];
  host: HostSection;
  audit: { file: string | null; verification: AuditVerification | null; error: string | null };
}

export interface ReportOptions {
  log: Logger;
  env?: NodeJS.ProcessEnv;
  now?: Date;
  /** Probe the verify endpoints (default true). */
  endpoints?: boolean;
}

function certdVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

function withReferences(f: Finding): ReportFinding {
  const ref = RULE_REFERENCES[f.rule];
  return { ...f, references: ref?.references ?? [], controls: ref?.controls ?? [] };
}

function daysLeft(notAfter: string, now: Date): number {
  return Math.floor((Date.parse(notAfter) - now.getTime()) / DAY_MS);
}

async function tryRead(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch {
    return undefined;
  }
}

/** The anchor a chain ends at: its own self-signed top, or the trust anchor that issued it. */
function findAnchor(certs: readonly Buffer[], anchors: readonly Buffer[]): ChainEntry | null {
  const top = certs[certs.length - 1];
  if (!top) return null;
  const parsedTop = parseCertificate(top);
  if (certs.length > 1 && parsedTop.selfSigned) return { ...describeCertificate(top), role: 'anchor', from: 'deployed chain' };
  for (const a of anchors) {
    try {
      const parsed = parseCertificate(a);
      if (parsed.der.equals(parsedTop.der) || issuance(parsedTop, parsed).signed) return { ...describeCertificate(a), role: 'anchor', from: 'trust_anchors' };
    } catch {
      // an unreadable anchor is P-CHAIN-ANCHOR's finding
    }
  }
  return null;
}

function verdictOf(findings: readonly Finding[]): CertificateSection['verdict'] {
  if (findings.some((f) => f.severity === 'reject')) return 'reject';
  return findings.length > 0 ? 'warn' : 'pass';
}

function describeChain(section: CertificateSection, certs: readonly Buffer[], cert: CertificateRuntime, lastGoodFingerprint: string | undefined, now: Date): void {
  const summaries = certs.map((der, i): ChainEntry => ({ ...describeCertificate(der), role: i === 0 ? 'leaf' : 'intermediate' }));
  const leaf = summaries[0]!;
  section.leaf = { ...leaf, daysLeft: daysLeft(leaf.notAfter, now) };
  section.matchesLastGood = lastGoodFingerprint === undefined ? null : lastGoodFingerprint === leaf.fingerprint256;
  const anchor = findAnchor(certs, cert.policy.trustAnchors);
  section.anchor = anchor;
  section.chain = summaries.map((s) => (anchor?.from === 'deployed chain' && s.fingerprint256 === anchor.fingerprint256 ? { ...s, role: 'anchor' as const, from: 'deployed chain' as const } : s));
  if (anchor?.from === 'trust_anchors') section.chain.push(anchor);
}

async function certificateSection(rt: Runtime, cert: CertificateRuntime, state: CertState, history: AuditRecord[], now: Date): Promise<CertificateSection> {
  const deployment: Record<string, unknown>[] = [];
  let certs: Buffer[] | undefined;
  let checkedFrom = '';
  for (const t of cert.targets) {
    let d: Record<string, unknown> = {};
    if (describesDeployment(t)) {
      d = await t.deployment().catch((err: unknown) => ({ error: messageOf(err) }));
    }
    deployment.push({ target: t.description, needsReload: t.needsReload, ...d });
    // A single-layout tmpfs set holds cert.pem and chain.pem: read back exactly what the server reads.
    if (certs === undefined && d['type'] === 'tmpfs' && typeof d['dir'] === 'string' && d['layout'] === undefined) {
      const leaf = await tryRead(join(d['dir'], 'cert.pem'));
      const chain = await tryRead(join(d['dir'], 'chain.pem'));
      if (leaf) {
        try {
          certs = parseBundle(Buffer.concat([leaf, Buffer.from('\n'), chain ?? Buffer.alloc(0)])).certs;
          checkedFrom = `${join(d['dir'], 'cert.pem')} + ${join(d['dir'], 'chain.pem')} (read back from the deployment)`;
        } catch (err) {
          checkedFrom = `${join(d['dir'], 'cert.pem')}: ${messageOf(err)}`;
        }
      }
    }
  }
  const lastGood = state.lastGood;
  const section: CertificateSection = {
    name: cert.name,
    source: { type: (cert.config.source as { type: string }).type, version: lastGood?.version ?? null, origin: lastGood?.origin ?? null },
    hostnames: cert.hostnames,
    deployedAt: lastGood?.deployedAt ?? null,
    lastResult: state.lastResult ? { result: state.lastResult.result, at: state.lastResult.at, error: state.lastResult.error ?? null } : null,
    checkedFrom,
    leaf: null,
    lastGood: null,
    chain: [],
    anchor: null,
    findings: [],
    verdict: 'unknown',
    matchesLastGood: null,
    deployment,
    awsEndpoints: state.endpoints ?? null,
    history,
  };
  if (certs && certs.length > 0) {
    // checkPolicy never throws; describing a certificate it refuses as unparseable can.
    section.findings = checkPolicy({ certs, hostnames: cert.hostnames }, cert.policy, now).map(withReferences);
    section.verdict = verdictOf(section.findings);
    try {
      describeChain(section, certs, cert, lastGood?.fingerprint, now);
    } catch (err) {
      section.checkedFrom += `; the certificates could not be described: ${messageOf(err)}`;
    }
  } else if (lastGood) {
    section.lastGood = {
      fingerprint: lastGood.fingerprint,
      subject: lastGood.subject,
      dnsNames: lastGood.dnsNames,
      notBefore: lastGood.notBefore,
      notAfter: lastGood.notAfter,
      daysLeft: daysLeft(lastGood.notAfter, now),
    };
    // Keyval and APISIX hold the material in the server; the check made when it was deployed stands.
    const findings = state.lastResult && state.lastResult.result !== 'failed' ? state.lastResult.findings ?? [] : [];
    section.findings = findings.map(withReferences);
    section.verdict = state.lastResult?.result === 'failed' ? 'unknown' : verdictOf(findings);
    section.checkedFrom = checkedFrom || `the last-good record of ${lastGood.deployedAt} (no target this report can read the certificate back from); findings as of the cycle of ${state.lastResult?.at ?? '?'}`;
  } else {
    section.checkedFrom = checkedFrom || 'nothing deployed yet';
  }
  return section;
}

function run(cmd: string, args: string[], input?: string): { code: number | null; out: string; err: string; missing: boolean } {
  const r = spawnSync(cmd, args, { input: input ?? '', encoding: 'utf8', timeout: 10_000 });
  const missing = (r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
  return { code: r.status, out: r.stdout ?? '', err: r.stderr ?? '', missing };
}

function onPath(name: string, env: NodeJS.ProcessEnv): string | undefined {
  for (const dir of (env['PATH'] ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

function systemOpenssl(): HostSection['systemOpenssl'] {
  const version = run('openssl', ['version']);
  if (version.missing) return { version: null, providers: null, checks: [] };
  const providers = run('openssl', ['list', '-providers']);
  const md5 = run('openssl', ['dgst', '-md5'], 'certd');
  const sha = run('openssl', ['dgst', '-sha256'], 'certd');
  const expected = createHash('sha256').update('certd').digest('hex');
  return {
    version: version.out.trim(),
    providers: (providers.out + providers.err).trim(),
    checks: [
      {
        command: 'openssl dgst -md5',
        exitCode: md5.code,
        fipsExpects: 'fails',
        asFipsRequires: md5.code !== 0,
        output: (md5.code === 0 ? md5.out : md5.err).trim().split('\n')[0] ?? '',
      },
      {
        command: 'openssl dgst -sha256',
        exitCode: sha.code,
        fipsExpects: 'works',
        asFipsRequires: sha.code === 0 && sha.out.includes(expected),
        output: (sha.code === 0 ? sha.out : sha.err).trim().split('\n')[0] ?? '',
      },
    ],
  };
}

function nginxSection(loaded: LoadedConfig, env: NodeJS.ProcessEnv): HostSection['nginx'] {
  const configured = loaded.config.report.nginx_binary;
  const binary = configured ? loaded.resolvePath(configured) : onPath('nginx', env) ?? (existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : undefined);
  if (!binary) return null;
  const v = run(binary, ['-V']);
  if (v.missing) return { binary, found: false, output: null, builtWith: null, runningWith: null, libraries: [] };
  const output = (v.err + v.out).trim();
  const built = /built with (OpenSSL [^\n(]*?)\s*(?:\(running with (OpenSSL [^)]*)\))?\s*$/m.exec(output);
  const ldd = run('ldd', [binary]);
  const libraries = ldd.missing ? [] : ldd.out.split('\n').map((l) => l.trim()).filter((l) => /libssl|libcrypto/.test(l));
  return { binary, found: true, output, builtWith: built?.[1]?.trim() ?? null, runningWith: built?.[2]?.trim() ?? null, libraries };
}

async function endpointSection(cert: CertificateRuntime, expected: string | undefined): Promise<EndpointSection | undefined> {
  const v = cert.verify;
  if (!v) return undefined;
  const o = { connect: v.connect, servername: v.servername, timeoutMs: v.timeoutMs };
  const probe = await verifyEndpoint({ ...o, ...(expected ? { expectFingerprint: expected } : {}) });
  const fipsSuites: EndpointSection['fipsSuites'] = [];
  for (const suite of FIPS_TLS12_CIPHERS.split(':')) {
    const r = await tryHandshake({ ...o, version: 'TLSv1.2', ciphers: suite });
    fipsSuites.push({ tls: '1.2', suite, result: r.result, detail: r.detail });
  }
  for (const suite of FIPS_TLS13_SUITES.split(':')) {
    const r = await tryHandshake({ ...o, version: 'TLSv1.3', ciphers: suite });
    fipsSuites.push({ tls: '1.3', suite, result: r.result, detail: r.detail });
  }
  return { cert: cert.name, connect: v.connect, servername: v.servername, probe, fipsSuites };
}

const RANK: Readonly<Record<Status, number>> = { pass: 0, attention: 1, fail: 2 };

class ControlBuilder {
  readonly status = new Map<ControlId, Status>([['SC-12', 'pass'], ['SC-13', 'pass'], ['SC-17', 'pass']]);
  readonly issues = new Map<ControlId, string[]>([['SC-12', []], ['SC-13', []], ['SC-17', []]]);
  readonly evidence = new Map<ControlId, string[]>([['SC-12', []], ['SC-13', []], ['SC-17', []]]);

  flag(c: ControlId, s: Exclude<Status, 'pass'>, why: string): void {
    if (RANK[s] > RANK[this.status.get(c)!]) this.status.set(c, s);
    this.issues.get(c)!.push(`${s === 'fail' ? 'FAIL' : 'attention'}: ${why}`);
  }

  held(c: ControlId, what: string): void {
    this.evidence.get(c)!.push(what);
  }

  build(): ControlSummary[] {
    return (['SC-12', 'SC-13', 'SC-17'] as const).map((c) => ({
      control: c,
      title: CONTROL_TITLES[c],
      status: this.status.get(c)!,
      issues: this.issues.get(c)!,
      evidence: this.evidence.get(c)!,
    }));
  }
}

function keyText(s: { keyAlgorithm: string; keyBits: number | undefined; curve: string | undefined }): string {
  return s.curve ? `${s.keyAlgorithm} ${s.curve}` : `${s.keyAlgorithm}${s.keyBits ? ` ${s.keyBits}` : ''}`;
}

/**
 * SC-13 (and SC-8, transmission confidentiality): the AWS endpoints a certificate's material
 * came over and whether each is a FIPS endpoint. With FIPS required (fips_runtime require or
 * require-host) an ordinary endpoint needs attention; a custom one is named as such, since
 * certd cannot tell what it is.
 */
function awsEndpointEvidence(c: ControlBuilder, s: CertificateSection, loaded: LoadedConfig): void {
  const e = s.awsEndpoints;
  if (!e || e.used.length === 0) return;
  c.held('SC-13', `${s.name}: AWS endpoints called (SC-13, SC-8), cycle of ${e.at}: ${e.used.map(describeEndpoint).join(', ')}`);
  for (const u of e.used) {
    if (requiresFips(loaded.config.fips_runtime) && u.kind === 'standard') c.flag('SC-13', 'attention', `${s.name}: ${u.host} (${u.service}) is not a FIPS endpoint although fips_runtime is ${loaded.config.fips_runtime}: set use_fips_endpoint: true`);
  }
}

function summarise(r: Omit<ComplianceReport, 'summary'>, loaded: LoadedConfig): ComplianceReport['summary'] {
  const c = new ControlBuilder();
  const host = r.host;
  // FIPS: the verdict of the probe, plus what the system OpenSSL (the one nginx uses) does. The
  // kernel flag is the host's: with a proven runtime it is reported beside the verdict, not in it.
  const runtimeProven = host.runtime.runtimeFips === true;
  const reasons = runtimeProven ? host.runtime.missing.filter((m) => !m.startsWith(MISSING_KERNEL)) : [...host.runtime.missing];
  for (const check of host.systemOpenssl.checks) {
    if (!check.asFipsRequires) {
      reasons.push(check.fipsExpects === 'fails'
        ? `the system OpenSSL computes MD5 (\`${check.command}\` exits ${check.exitCode}): its FIPS provider is not enforcing`
        : `\`${check.command}\` does not work (exit ${check.exitCode})`);
    }
  }
  if (host.systemOpenssl.version === null) reasons.push('the openssl CLI is not installed: the system OpenSSL could not be checked');
  const mode = runtimeProven && reasons.length === 0;
  const hostFlag = host.runtime.kernel.fipsEnabled;
  const level: 'host' | 'runtime' | 'none' = mode ? (hostFlag === 1 ? 'host' : 'runtime') : 'none';
  const fipsProvider = host.runtime.openssl.cli?.providers.find((p) => p.name === 'fips' && p.status === 'active');
  const provider = fipsProvider ? `${fipsProvider.fullName ?? 'fips'} ${fipsProvider.version ?? '(version not reported)'}` : null;
  const providerText = provider ? ` (${provider}, as OpenSSL reports it)` : '';
  const statement = level === 'host'
    ? `This host runs in FIPS mode (proven: runtime and host): the kernel FIPS flag is set, certd's runtime probe passed (SHA-256 works, MD5 is refused), and the system OpenSSL${providerText} refuses MD5.`
    : level === 'runtime'
      ? `certd and the system OpenSSL run in FIPS mode (proven: runtime; host not proven): certd's runtime probe passed (SHA-256 works, MD5 is refused) and the system OpenSSL${providerText} refuses MD5; the host's kernel flag /proc/sys/crypto/fips_enabled is ${hostFlag === null ? 'absent' : String(hostFlag)} (in a container it belongs to the host: check the host's FIPS status there).`
      : `This host is NOT in FIPS mode: ${reasons.join('; ')}.`;
  if (mode) c.held('SC-13', statement);
  else c.flag('SC-13', 'fail', statement);

  if (r.certificates.length === 0) {
    for (const id of ['SC-12', 'SC-17'] as const) c.flag(id, 'attention', 'no certificates are configured');
  }
  for (const s of r.certificates) {
    for (const f of s.findings) {
      for (const ctl of f.controls) c.flag(ctl, f.severity === 'reject' ? 'fail' : 'attention', `${s.name}: ${f.rule} ${f.message}`);
    }
    const leaf = s.leaf ?? undefined;
    if (!leaf && !s.lastGood) {
      c.flag('SC-12', 'attention', `${s.name}: nothing is deployed yet`);
      c.flag('SC-17', 'attention', `${s.name}: nothing is deployed yet`);
    }
    if (s.lastResult?.result === 'failed') c.flag('SC-12', 'attention', `${s.name}: the last cycle failed at ${s.lastResult.at}: ${s.lastResult.error?.code ?? ''} ${s.lastResult.error?.message ?? ''}`.trim());
    if (s.matchesLastGood === false) c.flag('SC-17', 'fail', `${s.name}: the deployed certificate is not the one certd recorded as deployed (changed outside certd?)`);
    if (leaf) {
      const rules = (ctl: ControlId): string => {
        const hits = s.findings.filter((f) => f.controls.includes(ctl));
        return hits.length === 0 ? 'every rule of the policy for this control passes' : `findings: ${hits.map((f) => `${f.rule} (${f.severity})`).join(', ')}`;
      };
      c.held('SC-12', `${s.name}: key ${keyText(leaf)}, ${leaf.daysLeft} day(s) left; ${rules('SC-12')} on the deployed certificate`);
      c.held('SC-13', `${s.name}: signed with ${leaf.signatureAlgorithm}; ${rules('SC-13')}`);
      c.held('SC-17', `${s.name}: ${leaf.subject}, chain of ${s.chain.length} up to ${s.anchor ? `${s.anchor.subject} (${s.anchor.from})` : 'no known anchor'}; ${rules('SC-17')}`);
      if (!s.anchor) c.flag('SC-17', 'attention', `${s.name}: the chain does not end at a known trust anchor (set policy.trust_anchors)`);
    }
    awsEndpointEvidence(c, s, loaded);
    for (const d of s.deployment) {
      if (d['type'] !== 'tmpfs') continue;
      const files = (d['files'] ?? {}) as Record<string, string>;
      const keyFile = Object.keys(files).find((f) => f.endsWith('/privkey.pem'));
      if (d['memoryBacked'] === false && keyFile) c.flag('SC-12', 'fail', `${s.name}: the private key ${keyFile} is on a disk, not in memory (statfs ${String(d['statfsType'] ?? '?')})`);
      else if (d['memoryBacked'] === true && keyFile) c.held('SC-12', `${s.name}: private key in memory-backed storage (${keyFile}, mode ${files[keyFile]}, statfs ${String(d['statfsType'])})`);
      if (keyFile && !['0600', '0640', '0400', '0440'].includes(files[keyFile] ?? '')) c.flag('SC-12', 'fail', `${s.name}: ${keyFile} has mode ${files[keyFile]} (0600, or 0640 with a group, expected)`);
    }
  }
  if (!loaded.config.policy.trust_anchors) c.flag('SC-17', 'attention', 'policy.trust_anchors is not set: chains are not required to end at an approved anchor');
  for (const e of r.endpoints) {
    if (e.probe.served === null) c.flag('SC-13', 'attention', `${e.cert}: ${e.connect} (SNI ${e.servername}) could not be reached with FIPS-approved TLS`);
    for (const f of e.probe.findings) {
      if (f.rule === 'EXPECTED-FINGERPRINT') c.flag('SC-17', 'fail', `${e.cert}: ${f.message}`);
      else if (e.probe.served !== null) c.flag('SC-13', 'fail', `${e.cert} at ${e.connect}: ${f.rule} ${f.message}`);
    }
    if (e.probe.ok) c.held('SC-13', `${e.cert} at ${e.connect}: ${e.probe.protocols.filter((p) => p.result === 'accepted').map((p) => p.version).join(', ')} only; no non-FIPS suite accepted; serves the deployed certificate`);
  }
  if (r.audit.file === null) c.flag('SC-12', 'attention', 'audit_log is not set: key and certificate lifecycle events are not recorded');
  else if (r.audit.error) c.flag('SC-12', 'attention', `the audit trail ${r.audit.file} could not be read: ${r.audit.error}`);
  else if (r.audit.verification && !r.audit.verification.ok) {
    const b = r.audit.verification.firstBad;
    c.flag('SC-12', 'fail', `the audit trail ${r.audit.file} is broken at line ${b?.line} (seq ${b?.seq ?? '?'}): ${b?.reason}`);
  } else if (r.audit.verification) c.held('SC-12', `audit trail ${r.audit.file}: hash chain intact, ${r.audit.verification.records} record(s)`);
  return { controls: c.build(), fips: { mode, level, hostFlag, provider, statement, reasons } };
}

export async function buildReport(loaded: LoadedConfig, options: ReportOptions): Promise<ComplianceReport> {
  const env = options.env ?? process.env;
  const now = options.now ?? new Date();
  const rt = await buildRuntime(loaded, { log: options.log, env, audit: noAudit });
  try {
    const auditFile = loaded.config.audit_log ? loaded.resolvePath(loaded.config.audit_log) : null;
    let verification: AuditVerification | null = null;
    let auditError: string | null = null;
    let records: AuditRecord[] = [];
    if (auditFile) {
      try {
        verification = await verifyAuditFile(auditFile);
        records = await readAuditRecords(auditFile);
      } catch (err) {
        auditError = messageOf(err);
      }
    }
    const limit = loaded.config.report.history;
    const certificates: CertificateSection[] = [];
    const endpoints: EndpointSection[] = [];
    // A discovering entry (ssm `path`) deploys nothing itself: its members are the certificates.
    const members: CertificateRuntime[] = [];
    const discoveryErrors = new Map<string, string>();
    for (const entry of rt.certificates) {
      if (!entry.expand) {
        members.push(entry);
        continue;
      }
      try {
        members.push(...(await entry.expand(AbortSignal.timeout(60_000))));
      } catch (err) {
        options.log.error({ cert: entry.name, err: messageOf(err) }, 'report: discovering the members of this entry failed; they are missing from the report');
        discoveryErrors.set(entry.name, messageOf(err));
        members.push(entry);
      }
    }
    for (const cert of members) {
      const state = await rt.state.get(cert.name);
      const history = records.filter((r) => r['cert'] === cert.name || (Array.isArray(r['certificates']) && r['certificates'].includes(cert.name))).slice(-limit);
      const section = await certificateSection(rt, cert, state, history, now);
      const discovery = discoveryErrors.get(cert.name);
      if (discovery !== undefined) section.checkedFrom = `discovering the certificates of this entry failed: ${discovery}`;
      certificates.push(section);
      if (options.endpoints !== false) {
        const e = await endpointSection(cert, section.leaf?.fingerprint256 ?? state.lastGood?.fingerprint);
        if (e) endpoints.push(e);
      }
    }
    const runtime = probeFips({ ...systemProbeDeps, env }, { cli: true });
    const host: HostSection = {
      hostname: hostname(),
      platform: platform(),
      kernelRelease: release(),
      kernelFips: runtime.kernel.fipsEnabled,
      runtime,
      systemOpenssl: systemOpenssl(),
      nginx: nginxSection(loaded, env),
    };
    const body: Omit<ComplianceReport, 'summary'> = {
      kind: 'certd-compliance-report',
      formatVersion: 1,
      generatedAt: now.toISOString(),
      certd: { version: certdVersion(), node: process.versions.node },
      config: loaded.path,
      certificates,
      endpoints,
      host,
      audit: { file: auditFile, verification, error: auditError },
    };
    const summary = summarise(body, loaded);
    return { kind: body.kind, formatVersion: 1, generatedAt: body.generatedAt, certd: body.certd, config: body.config, summary, certificates, endpoints, host, audit: body.audit };
  } finally {
    await rt.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

function esc(s: unknown): string {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

function mdCell(s: unknown): string {
  return String(s ?? '').replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function leafRows(s: CertificateSection): [string, string][] {
  const rows = sourceRows(s);
  if (s.awsEndpoints && s.awsEndpoints.used.length > 0) rows.push(['AWS endpoints', `${s.awsEndpoints.used.map(describeEndpoint).join(', ')} (cycle of ${s.awsEndpoints.at})`]);
  return rows;
}

function sourceRows(s: CertificateSection): [string, string][] {
  const l = s.leaf;
  if (l) {
    return [
      ['Source', `${s.source.type} (version ${s.source.version ?? '?'}; ${s.source.origin ?? ''})`],
      ['Subject', l.subject],
      ['SANs', [...l.dnsNames.map((d) => `DNS:${d}`), ...l.ipAddresses.map((i) => `IP:${i}`)].join(', ')],
      ['Key', keyText(l)],
      ['Signature algorithm', l.signatureAlgorithm],
      ['Validity', `${l.notBefore} to ${l.notAfter} (${l.daysLeft} day(s) left)`],
      ['SHA-256 fingerprint', l.fingerprint256],
      ['Checked from', s.checkedFrom],
    ];
  }
  const g = s.lastGood;
  if (g) {
    return [
      ['Source', `${s.source.type} (version ${s.source.version ?? '?'}; ${s.source.origin ?? ''})`],
      ['Subject', g.subject],
      ['SANs', g.dnsNames.map((d) => `DNS:${d}`).join(', ')],
      ['Validity', `${g.notBefore} to ${g.notAfter} (${g.daysLeft} day(s) left)`],
      ['SHA-256 fingerprint', g.fingerprint],
      ['Checked from', s.checkedFrom],
    ];
  }
  return [['Source', s.source.type], ['Checked from', s.checkedFrom]];
}

function historyText(r: AuditRecord): string {
  const parts = [r['result'], r['target'], r['command'], r['fingerprint'] ?? r['expected'], r['version'] ? `version ${String(r['version'])}` : undefined, Array.isArray(r['rules']) ? (r['rules'] as string[]).join(' ') : undefined];
  const e = r['error'] as { code?: string; message?: string } | undefined;
  if (e) parts.push(`${e.code ?? ''} ${e.message ?? ''}`);
  return parts.filter((p) => p !== undefined && p !== '').map(String).join('; ');
}

export function renderMarkdown(r: ComplianceReport): string {
  const out: string[] = [];
  out.push(`# certd compliance report`, '', `Generated ${r.generatedAt} on ${r.host.hostname} by certd ${r.certd.version} (node ${r.certd.node}); config ${r.config}.`, '');
  out.push('## Summary', '', '| Control | Title | Status | Issues |', '|---|---|---|---|');
  for (const c of r.summary.controls) out.push(`| ${c.control} | ${c.title} | **${c.status.toUpperCase()}** | ${mdCell(c.issues.join(' / ') || 'none')} |`);
  out.push('', `**FIPS:** ${r.summary.fips.statement}`, '', `- Proven: ${r.summary.fips.level}; host kernel flag /proc/sys/crypto/fips_enabled: ${r.summary.fips.hostFlag ?? 'absent'}; FIPS provider: ${r.summary.fips.provider ?? 'none active'}`, '');
  for (const c of r.summary.controls) {
    out.push(`### ${c.control} ${c.title}: ${c.status}`, '');
    for (const i of c.issues) out.push(`- ${i}`);
    for (const e of c.evidence) out.push(`- held: ${e}`);
    out.push('');
  }
  out.push('## Certificates', '');
  for (const s of r.certificates) {
    out.push(`### ${s.name}: policy ${s.verdict}`, '', '| | |', '|---|---|');
    for (const [k, v] of leafRows(s)) out.push(`| ${k} | ${mdCell(v)} |`);
    out.push('', '**Chain**', '', '| Role | Subject | Key | Signature | Not after | SHA-256 |', '|---|---|---|---|---|---|');
    for (const c of s.chain) out.push(`| ${c.role}${c.from ? ` (${c.from})` : ''} | ${mdCell(c.subject)} | ${keyText(c)} | ${c.signatureAlgorithm} | ${c.notAfter} | ${c.fingerprint256} |`);
    out.push('', '**Findings**', '');
    if (s.findings.length === 0) out.push('None: every rule of the policy passes.');
    else {
      out.push('| Rule | Severity | Message | References |', '|---|---|---|---|');
      for (const f of s.findings) out.push(`| ${f.rule} | ${f.severity} | ${mdCell(f.message)} | ${mdCell(f.references.join('; '))} |`);
    }
    out.push('', '**Deployment**', '');
    for (const d of s.deployment) out.push(`- \`${mdCell(JSON.stringify(d))}\``);
    out.push('', '**Recent history (audit trail)**', '');
    if (s.history.length === 0) out.push('No records.');
    for (const h of s.history) out.push(`- seq ${h.seq} ${h.time} ${h.event}: ${mdCell(historyText(h))}`);
    out.push('');
  }
  out.push('## Endpoints', '');
  for (const e of r.endpoints) {
    out.push(`### ${e.cert}: ${e.connect} (SNI ${e.servername})`, '');
    if (e.probe.served) out.push(`Served ${e.probe.served.protocol} ${e.probe.served.cipher}, leaf ${e.probe.served.fingerprint}.`, '');
    out.push('| Protocol | Result | Detail |', '|---|---|---|');
    for (const p of e.probe.protocols) out.push(`| ${p.version} | ${p.result} | ${mdCell(p.detail)} |`);
    out.push('', '| FIPS suite | TLS | Result |', '|---|---|---|');
    for (const f of e.fipsSuites) out.push(`| ${f.suite} | ${f.tls} | ${f.result} |`);
    out.push('', '| Non-FIPS family | TLS | Result | Detail |', '|---|---|---|---|');
    for (const s of e.probe.suites) out.push(`| ${s.family} | ${s.tls} | ${s.result} | ${mdCell(s.detail)} |`);
    for (const f of e.probe.findings) out.push(`- ${f.rule}: ${f.message}`);
    out.push('');
  }
  const h = r.host;
  out.push('## Host', '', `- Kernel ${h.kernelRelease} (${h.platform}); /proc/sys/crypto/fips_enabled: ${h.kernelFips ?? 'absent'}`);
  out.push(`- certd runtime: getFips()=${h.runtime.runtime.getFips}, SHA-256 works: ${h.runtime.runtime.sha256}, MD5 refused: ${h.runtime.runtime.md5Refused}; Node's OpenSSL ${h.runtime.openssl.node}`);
  out.push(`- System OpenSSL: ${h.systemOpenssl.version ?? 'not installed'}`);
  for (const c of h.systemOpenssl.checks) out.push(`  - \`${c.command}\`: exit ${c.exitCode} (FIPS requires it ${c.fipsExpects === 'fails' ? 'to fail' : 'to work'}: ${c.asFipsRequires ? 'as required' : 'NOT as required'})`);
  if (h.systemOpenssl.providers) out.push('', '```', h.systemOpenssl.providers, '```');
  if (h.nginx) out.push(`- nginx ${h.nginx.binary}: built with ${h.nginx.builtWith ?? '?'}${h.nginx.runningWith ? `, running with ${h.nginx.runningWith}` : ''}; ${h.nginx.libraries.join(', ')}`);
  out.push('', '## Audit trail', '');
  if (!r.audit.file) out.push('No audit_log configured.');
  else if (r.audit.error) out.push(`${r.audit.file}: ${r.audit.error}`);
  else if (r.audit.verification) {
    const v = r.audit.verification;
    out.push(v.ok ? `${r.audit.file}: hash chain intact, ${v.records} record(s).` : `${r.audit.file}: BROKEN at line ${v.firstBad?.line} (seq ${v.firstBad?.seq ?? '?'}): ${v.firstBad?.reason}`);
    for (const w of v.warnings) out.push(`- warning: ${w}`);
  }
  return `${out.join('\n')}\n`;
}

const CSS = `
:root { --fail: #b00020; --attention: #8a5a00; --pass: #1b6e20; --line: #ccd; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #111; margin: 2rem auto; max-width: 1100px; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { border-bottom: 2px solid #333; padding-bottom: .2rem; margin-top: 2rem; }
h3 { margin-top: 1.4rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; }
th, td { border: 1px solid var(--line); padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #f0f0f5; }
td.k { width: 13rem; font-weight: 600; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; word-break: break-all; }
.status { font-weight: 700; text-transform: uppercase; }
.pass { color: var(--pass); } .attention { color: var(--attention); } .fail { color: var(--fail); }
.reject { color: var(--fail); font-weight: 600; } .warn { color: var(--attention); }
.accepted { font-weight: 600; } .fips-no { border-left: 4px solid var(--fail); padding: .4rem .8rem; background: #fff4f4; }
.fips-yes { border-left: 4px solid var(--pass); padding: .4rem .8rem; background: #f3fbf3; }
pre { background: #f6f6f8; padding: .5rem; overflow-x: auto; font-size: 12px; }
ul { margin-top: .2rem; }
footer { margin-top: 3rem; color: #555; font-size: 12px; }
@media print {
  body { margin: 0; max-width: none; font-size: 10.5pt; }
  h2 { break-before: page; } h2.first { break-before: avoid; }
  table, pre { break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
  .fips-no, .fips-yes { background: none; }
}
`;

function htmlTable(headers: string[], rows: string[][], attrs = ''): string {
  return `<table${attrs}><thead><tr>${headers.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows.map((r) => `<tr>${r.join('')}</tr>`).join('')}</tbody></table>`;
}

const td = (v: unknown, cls = ''): string => `<td${cls ? ` class="${cls}"` : ''}>${esc(v)}</td>`;

/** One self-contained page: inline CSS, no script, nothing fetched (the CSP says so too). */
export function renderHtml(r: ComplianceReport): string {
  const b: string[] = [];
  b.push(`<h1>certd compliance report</h1><p>Generated ${esc(r.generatedAt)} on <b>${esc(r.host.hostname)}</b> by certd ${esc(r.certd.version)} (node ${esc(r.certd.node)}); config <code>${esc(r.config)}</code>. NIST SP 800-53 SC-12, SC-13, SC-17.</p>`);
  b.push('<h2 class="first">Summary</h2>');
  b.push(htmlTable(['Control', 'Title', 'Status', 'Issues'], r.summary.controls.map((c) => [
    td(c.control), td(c.title), `<td class="status ${c.status}">${esc(c.status)}</td>`,
    `<td>${c.issues.length === 0 ? 'none' : `<ul>${c.issues.map((i) => `<li>${esc(i)}</li>`).join('')}</ul>`}</td>`,
  ]), ' id="summary"'));
  b.push(`<p class="${r.summary.fips.mode ? 'fips-yes' : 'fips-no'}" id="fips"><b>FIPS:</b> ${esc(r.summary.fips.statement)}</p>`);
  b.push(`<p id="fips-level">Proven: <b>${esc(r.summary.fips.level)}</b>; host kernel flag /proc/sys/crypto/fips_enabled: ${esc(String(r.summary.fips.hostFlag ?? 'absent'))}; FIPS provider: ${esc(r.summary.fips.provider ?? 'none active')}</p>`);
  for (const c of r.summary.controls) {
    if (c.evidence.length === 0) continue;
    b.push(`<h3>${esc(c.control)}: what was checked and held</h3><ul>${c.evidence.map((e) => `<li>${esc(e)}</li>`).join('')}</ul>`);
  }
  b.push('<h2>Certificates</h2>');
  for (const s of r.certificates) {
    b.push(`<h3 id="cert-${esc(s.name)}">${esc(s.name)} <span class="${s.verdict === 'reject' ? 'reject' : s.verdict === 'warn' ? 'warn' : 'pass'}">(policy: ${esc(s.verdict)})</span></h3>`);
    b.push(`<table>${leafRows(s).map(([k, v]) => `<tr><td class="k">${esc(k)}</td><td class="mono">${esc(v)}</td></tr>`).join('')}</table>`);
    b.push('<h4>Chain to the anchor</h4>');
    b.push(htmlTable(['Role', 'Subject', 'Key', 'Signature', 'Not after', 'SHA-256'], s.chain.map((c) => [
      td(`${c.role}${c.from ? ` (${c.from})` : ''}`), td(c.subject), td(keyText(c)), td(c.signatureAlgorithm), td(c.notAfter), td(c.fingerprint256, 'mono'),
    ])));
    b.push('<h4>Policy findings</h4>');
    b.push(s.findings.length === 0
      ? '<p>None: every rule of the policy passes.</p>'
      : htmlTable(['Rule', 'Severity', 'Message', 'References', 'Controls'], s.findings.map((f) => [td(f.rule), td(f.severity, f.severity), td(f.message), td(f.references.join('; ')), td(f.controls.join(', '))])));
    b.push('<h4>Deployment</h4>');
    b.push(`<pre>${esc(JSON.stringify(s.deployment, null, 2))}</pre>`);
    b.push('<h4>Recent history (audit trail)</h4>');
    b.push(s.history.length === 0 ? '<p>No records.</p>' : htmlTable(['Seq', 'Time', 'Event', 'Detail'], s.history.map((h) => [td(h.seq), td(h.time), td(h.event), td(historyText(h))])));
  }
  b.push('<h2>Endpoints</h2>');
  if (r.endpoints.length === 0) b.push('<p>No certificate has a verify endpoint configured.</p>');
  for (const e of r.endpoints) {
    b.push(`<h3>${esc(e.cert)}: ${esc(e.connect)} (SNI ${esc(e.servername)})</h3>`);
    if (e.probe.served) b.push(`<p>Served ${esc(e.probe.served.protocol)} ${esc(e.probe.served.cipher)}; leaf <span class="mono">${esc(e.probe.served.fingerprint)}</span>${e.probe.expectFingerprint ? (e.probe.expectFingerprint.match ? ' (the deployed certificate)' : ' <b class="fail">(NOT the deployed certificate)</b>') : ''}.</p>`);
    b.push(htmlTable(['Protocol', 'Result', 'Detail'], e.probe.protocols.map((p) => [td(p.version), td(p.result, p.result), td(p.detail)])));
    b.push(htmlTable(['FIPS suite', 'TLS', 'Result', 'Detail'], e.fipsSuites.map((f) => [td(f.suite), td(f.tls), td(f.result, f.result), td(f.detail)])));
    b.push(htmlTable(['Non-FIPS family', 'TLS', 'Result', 'Detail'], e.probe.suites.map((s) => [td(s.family), td(s.tls), td(s.result, s.result === 'accepted' ? 'fail' : s.result), td(s.detail)])));
    if (e.probe.findings.length > 0) b.push(`<ul>${e.probe.findings.map((f) => `<li class="reject">${esc(f.rule)}: ${esc(f.message)}</li>`).join('')}</ul>`);
  }
  const h = r.host;
  b.push('<h2>Host</h2>');
  b.push(`<table>${[
    ['Kernel', `${h.kernelRelease} (${h.platform}); /proc/sys/crypto/fips_enabled: ${h.kernelFips ?? 'absent'}`],
    ['certd runtime probe', `getFips()=${h.runtime.runtime.getFips}; SHA-256 works: ${h.runtime.runtime.sha256}; MD5 refused: ${h.runtime.runtime.md5Refused}; Node's OpenSSL ${h.runtime.openssl.node}; OPENSSL_CONF=${h.runtime.openssl.opensslConf ?? '(unset)'}`],
    ['Probe verdict', h.runtime.fips ? 'FIPS' : `not FIPS: ${h.runtime.missing.join('; ')}`],
    ['System OpenSSL', h.systemOpenssl.version ?? 'not installed'],
    ...h.systemOpenssl.checks.map((c): [string, string] => [c.command, `exit ${c.exitCode}; FIPS requires it ${c.fipsExpects === 'fails' ? 'to fail' : 'to work'}: ${c.asFipsRequires ? 'as required' : 'NOT as required'}; ${c.output}`]),
    ['nginx', h.nginx ? `${h.nginx.binary}: built with ${h.nginx.builtWith ?? '?'}${h.nginx.runningWith ? `, running with ${h.nginx.runningWith}` : ''}; ${h.nginx.libraries.join(', ')}` : 'not found'],
  ].map(([k, v]) => `<tr><td class="k">${esc(k)}</td><td class="mono">${esc(v)}</td></tr>`).join('')}</table>`);
  if (h.systemOpenssl.providers) b.push(`<h4>openssl list -providers</h4><pre>${esc(h.systemOpenssl.providers)}</pre>`);
  for (const n of h.runtime.notes) b.push(`<p>Note: ${esc(n)}</p>`);
  b.push('<h2>Audit trail</h2>');
  if (!r.audit.file) b.push('<p>No audit_log configured.</p>');
  else if (r.audit.error) b.push(`<p class="fail">${esc(r.audit.file)}: ${esc(r.audit.error)}</p>`);
  else if (r.audit.verification) {
    const v = r.audit.verification;
    b.push(v.ok
      ? `<p class="pass"><code>${esc(r.audit.file)}</code>: hash chain intact, ${v.records} record(s).</p>`
      : `<p class="fail"><code>${esc(r.audit.file)}</code>: BROKEN at line ${esc(v.firstBad?.line)} (seq ${esc(v.firstBad?.seq ?? '?')}): ${esc(v.firstBad?.reason)}</p>`);
    for (const w of v.warnings) b.push(`<p class="warn">${esc(w)}</p>`);
  }
  b.push(`<footer>Machine-readable form: certd report --format json. A detached signature (certd report --sign) covers the exact bytes of this file.</footer>`);
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>certd compliance report ${esc(r.generatedAt)}</title>
<style>${CSS}</style>
</head>
<body>
${b.join('\n')}
</body>
</html>
`;
}

export function renderReport(r: ComplianceReport, format: 'json' | 'md' | 'html'): string {
  if (format === 'md') return renderMarkdown(r);
  if (format === 'html') return renderHtml(r);
  return `${JSON.stringify(r, null, 2)}\n`;
}

/**
 * A detached signature over `data`: SHA-256 with the RSA (PKCS#1 v1.5) or ECDSA key in `keyPem`,
 * DER-encoded, as `openssl dgst -sha256 -sign` makes and `openssl dgst -sha256 -verify pub.pem
 * -signature F.sig F` checks. Returns the signature and the SHA-256 of the signer's SPKI.
 */
export function signReport(data: Buffer, keyPem: Buffer, keyPath: string): { signature: Buffer; signer: string } {
  let key;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    throw new CertdError('E_CONFIG', `report.signing_key ${keyPath}: not an unencrypted PEM private key (${messageOf(err)})`, { cause: err });
  }
  const type = key.asymmetricKeyType;
  if (type !== 'rsa' && type !== 'ec') {
    throw new CertdError('E_CONFIG', `report.signing_key ${keyPath}: a ${type ?? 'unknown'} key; use an RSA (>= 2048 bits) or EC P-256/P-384/P-521 key so that openssl dgst -sha256 -verify can check the signature`);
  }
  const bits = key.asymmetricKeyDetails?.modulusLength;
  if (type === 'rsa' && bits !== undefined && bits < 2048) throw new CertdError('E_CONFIG', `report.signing_key ${keyPath}: RSA ${bits} bits is below the 2048 of SP 800-131A r2`);
  const signature = cryptoSign('sha256', data, key);
  const spki = createPublicKey(key).export({ type: 'spki', format: 'der' });
  return { signature, signer: createHash('sha256').update(spki).digest('hex') };
}
