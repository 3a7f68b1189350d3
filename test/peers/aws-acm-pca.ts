// AWS Private CA (ACM PCA) as certd sees it: certificate authorities held by the peer, answered
// by IssueCertificate and GetCertificate over JSON 1.1 (target prefix ACMPrivateCA, signing name
// acm-pca). The CA is the openssl CLI (`openssl ca`), independent of the Node code certd issues
// with: it checks the CSR's signature, signs with the requested algorithm and validity, and
// applies the template as AWS does (the template's extensions win; the CSR's SAN is copied, and
// with an APICSRPassthrough template every CSR extension the template does not define).
//
// As on AWS, issuing is asynchronous: GetCertificate answers RequestInProgressException for the
// first `inProgressCalls` calls for a fresh certificate ARN (a test hook; 0 by default), then the
// certificate and its chain. Seeding: createCa (a test hook, like AWS's CreateCertificateAuthority
// followed by installing its certificate). Faults (throttling, access denied) are injected by the
// peer for every service alike.
import { execFile } from 'node:child_process';
import { randomBytes, randomUUID, X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { makeCa, type KeyType, type TestCa } from '../helpers/openssl-ca.js';
import { fixtureEnv } from '../helpers/fixture-env.js';
import { AwsError, optionalString, requireBlob, requireString } from './aws-error.js';
import type { EmulatedService, Operation, ServiceContext } from './aws-service.js';

const run = promisify(execFile);

const SIGNING_ALGORITHMS: Readonly<Record<string, { family: 'rsa' | 'ec'; md: string }>> = {
  SHA256WITHECDSA: { family: 'ec', md: 'sha256' },
  SHA384WITHECDSA: { family: 'ec', md: 'sha384' },
  SHA512WITHECDSA: { family: 'ec', md: 'sha512' },
  SHA256WITHRSA: { family: 'rsa', md: 'sha256' },
  SHA384WITHRSA: { family: 'rsa', md: 'sha384' },
  SHA512WITHRSA: { family: 'rsa', md: 'sha512' },
};

/**
 * The extensions each template defines (openssl x509v3 syntax) besides the key identifiers. The
 * APICSRPassthrough ones define only basicConstraints, so the CSR's keyUsage, extendedKeyUsage
 * and SAN pass.
 */
const TEMPLATES: Readonly<Record<string, readonly string[]>> = {
  'EndEntityCertificate/V1': ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', 'extendedKeyUsage=serverAuth,clientAuth'],
  'EndEntityServerAuthCertificate/V1': ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', 'extendedKeyUsage=serverAuth'],
  'BlankEndEntityCertificate_APICSRPassthrough/V1': ['basicConstraints=CA:FALSE'],
  'BlankEndEntityCertificate_CriticalBasicConstraints_APICSRPassthrough/V1': ['basicConstraints=critical,CA:FALSE'],
};
const DEFAULT_TEMPLATE = 'EndEntityCertificate/V1';

const CA_ARN = /^arn:aws[a-z-]*:acm-pca:[a-z0-9-]+:\d{12}:certificate-authority\/[0-9a-f-]{36}$/;
const ARN_SHAPE = /^arn:[\w+=/,.@-]+:[\w+=/,.@-]+:[\w+=/,.@-]*:[0-9]*:[\w+=,.@-]+(\/[\w+=,.@-]+)*$/;
const IDEMPOTENCY_MS = 60_000;

interface PeerCa {
  readonly arn: string;
  readonly ca: TestCa;
  readonly family: 'rsa' | 'ec';
  readonly dir: string;
  readonly notAfterMs: number;
}

interface IssuedCert {
  readonly caArn: string;
  readonly arn: string;
  readonly certPem: string;
  gets: number;
  /** Ends issuing with RequestFailedException instead of a certificate. */
  failed?: string;
}

export interface IssueRecord {
  readonly arn: string;
  readonly caArn: string;
  readonly signingAlgorithm: string;
  readonly template: string;
  readonly validity: { Type: string; Value: number };
  readonly idempotencyToken?: string | undefined;
}

export class AcmPcaService implements EmulatedService {
  readonly targetPrefix = 'ACMPrivateCA';
  readonly signingName = 'acm-pca';
  readonly errorNamespace = 'com.amazonaws.acmpca';
  readonly internalError = { code: 'InternalFailure', message: 'The request processing has failed because of an unknown error.' };
  readonly operations: Readonly<Record<string, Operation>>;

  /** GetCertificate answers RequestInProgressException this many times for each fresh certificate. */
  inProgressCalls = 0;
  /** Every IssueCertificate that issued (not idempotent repeats), in order. */
  readonly issued: IssueRecord[] = [];

  private readonly cas = new Map<string, PeerCa>();
  private readonly certs = new Map<string, IssuedCert>();
  private readonly tokens = new Map<string, { arn: string; atMs: number }>();
  private baseDir: string | undefined;

  constructor(private readonly ctx: ServiceContext) {
    this.operations = {
      IssueCertificate: (i) => this.issueCertificate(i),
      GetCertificate: (i) => this.getCertificate(i),
    };
  }

  /** Test hook: a root CA with a key of `keyType`, returning its ARN and certificate. */
  createCa(keyType: KeyType, cn = `certd pca ${keyType} test root`): { arn: string; certPem: string; certPath: string } {
    this.baseDir ??= mkdtempSync('/dev/shm/certd-pca-peer-');
    const dir = join(this.baseDir, randomBytes(4).toString('hex'));
    mkdirSync(join(dir, 'new'), { recursive: true, mode: 0o700 });
    const ca = makeCa(dir, cn, keyType);
    writeFileSync(join(dir, 'ca.key'), ca.keyPem, { mode: 0o600 });
    writeFileSync(join(dir, 'index.txt'), '');
    // openssl ca wants a serial file even with -rand_serial, which is what picks the serials.
    writeFileSync(join(dir, 'serial'), '01\n');
    const arn = `arn:aws:acm-pca:${this.ctx.region}:${this.ctx.accountId}:certificate-authority/${randomUUID()}`;
    this.cas.set(arn, { arn, ca, family: keyType.startsWith('rsa') ? 'rsa' : 'ec', dir, notAfterMs: new Date(new X509Certificate(ca.certPem).validTo).getTime() });
    return { arn, certPem: ca.certPem, certPath: ca.certPath };
  }

  /** Test hook: the issuance of `arn` ends in RequestFailedException with `message`. */
  failCertificate(arn: string, message: string): void {
    const c = this.certs.get(arn);
    if (c === undefined) throw new Error(`no certificate ${arn}`);
    c.failed = message;
  }

  /** Removes the CAs' working files (keys included). */
  close(): void {
    if (this.baseDir !== undefined) rmSync(this.baseDir, { recursive: true, force: true });
    this.baseDir = undefined;
  }

  private findCa(arn: string): PeerCa {
    if (!ARN_SHAPE.test(arn) || arn.length > 200) throw new AwsError('InvalidArnException', `The ARN ${arn} is not valid.`);
    const ca = this.cas.get(arn);
    if (ca === undefined || !CA_ARN.test(arn)) throw new AwsError('ResourceNotFoundException', `Could not find certificate authority ${arn}.`);
    return ca;
  }

  private notAfterOf(validity: unknown, nowMs: number): number {
    if (typeof validity !== 'object' || validity === null) throw new AwsError('ValidationException', "1 validation error detected: Value null at 'validity' failed to satisfy constraint: Member must not be null");
    const { Type, Value } = validity as Record<string, unknown>;
    if (typeof Value !== 'number' || !Number.isInteger(Value) || Value < 1) throw new AwsError('ValidationException', "1 validation error detected: Value at 'validity.value' failed to satisfy constraint: Member must have value greater than or equal to 1");
    switch (Type) {
      case 'DAYS':
        return nowMs + Value * 86_400_000;
      case 'MONTHS':
        return nowMs + Value * 30 * 86_400_000;
      case 'YEARS':
        return nowMs + Value * 365 * 86_400_000;
      case 'ABSOLUTE':
        return Value * 1000;
      case 'END_DATE': {
        const m = /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)$/.exec(String(Value));
        if (!m) throw new AwsError('InvalidArgsException', 'The END_DATE validity must be YYYYMMDDHHMMSS.');
        return Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
      }
      default:
        throw new AwsError('ValidationException', `1 validation error detected: Value '${String(Type)}' at 'validity.type' failed to satisfy constraint: Member must satisfy enum value set: [END_DATE, ABSOLUTE, DAYS, MONTHS, YEARS]`);
    }
  }

  private async issueCertificate(input: Record<string, unknown>): Promise<unknown> {
    const ca = this.findCa(requireString(input, 'CertificateAuthorityArn'));
    const csr = requireBlob(input, 'Csr');
    if (csr.length > 32_768) throw new AwsError('ValidationException', "1 validation error detected: Value at 'csr' failed to satisfy constraint: Member must have length less than or equal to 32768");
    const alg = requireString(input, 'SigningAlgorithm');
    const sig = SIGNING_ALGORITHMS[alg];
    if (sig === undefined) {
      throw new AwsError('ValidationException', `1 validation error detected: Value '${alg}' at 'signingAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: [${Object.keys(SIGNING_ALGORITHMS).join(', ')}]`);
    }
    if (sig.family !== ca.family) throw new AwsError('InvalidArgsException', `The signing algorithm ${alg} is not compatible with the CA's ${ca.family === 'rsa' ? 'RSA' : 'EC'} key.`);
    const templateArn = optionalString(input, 'TemplateArn');
    let template = DEFAULT_TEMPLATE;
    if (templateArn !== undefined) {
      const m = /^arn:aws[a-z-]*:acm-pca:::template\/(.+)$/.exec(templateArn);
      if (!m || TEMPLATES[m[1]!] === undefined) throw new AwsError('InvalidArgsException', `The template ${templateArn} is not a valid template.`);
      template = m[1]!;
    }
    const nowMs = this.ctx.nowMs();
    const notAfterMs = this.notAfterOf(input['Validity'], nowMs);
    if (notAfterMs <= nowMs) throw new AwsError('InvalidArgsException', 'The validity period must end in the future.');
    if (notAfterMs > ca.notAfterMs) throw new AwsError('ValidationException', 'The certificate validity specified exceeds the certificate authority validity.');

    const token = optionalString(input, 'IdempotencyToken');
    if (token !== undefined) {
      if (token.length > 36) throw new AwsError('ValidationException', "1 validation error detected: Value at 'idempotencyToken' failed to satisfy constraint: Member must have length less than or equal to 36");
      const seen = this.tokens.get(`${ca.arn} ${token}`);
      if (seen !== undefined && nowMs - seen.atMs < IDEMPOTENCY_MS) return { CertificateArn: seen.arn };
    }

    const tag = randomBytes(6).toString('hex');
    const csrPath = join(ca.dir, `${tag}.csr`);
    const extPath = join(ca.dir, `${tag}.ext`);
    const cnfPath = join(ca.dir, `${tag}.cnf`);
    const outPath = join(ca.dir, `${tag}.pem`);
    const t = TEMPLATES[template]!;
    writeFileSync(csrPath, csr);
    writeFileSync(extPath, ['[ext]', ...t, 'subjectKeyIdentifier=hash', 'authorityKeyIdentifier=keyid', ''].join('\n'));
    writeFileSync(cnfPath, [
      '[ca]', 'default_ca = pca', '[pca]',
      `database = ${join(ca.dir, 'index.txt')}`, `new_certs_dir = ${join(ca.dir, 'new')}`, `serial = ${join(ca.dir, 'serial')}`,
      'policy = any', 'unique_subject = no', 'email_in_dn = no',
      // The template's extensions win; what it leaves out comes from the CSR (for the end-entity
      // templates, which define all but the SAN, that is the SAN alone).
      'copy_extensions = copy',
      '[any]', 'commonName = optional', '',
    ].join('\n'));
    try {
      // The CSR's own signature first: AWS refuses a CSR that does not verify (MalformedCSRException).
      try {
        await run('openssl', ['req', '-in', csrPath, '-noout', '-verify'], { env: fixtureEnv() });
      } catch {
        throw new AwsError('MalformedCSRException', 'The certificate signing request is invalid.');
      }
      await run('openssl', [
        'ca', '-batch', '-config', cnfPath, '-cert', ca.ca.certPath, '-keyfile', join(ca.dir, 'ca.key'), '-in', csrPath, '-out', outPath,
        '-notext', '-md', sig.md, '-rand_serial', '-preserveDN', '-extfile', extPath, '-extensions', 'ext',
        // AWS backdates notBefore by 60 minutes for clock skew.
        '-startdate', stamp(nowMs - 3_600_000), '-enddate', stamp(notAfterMs),
      ], { env: fixtureEnv() });
      const certPem = readFileSync(outPath, 'utf8');
      const serial = new X509Certificate(certPem).serialNumber.toLowerCase();
      const arn = `${ca.arn}/certificate/${serial}`;
      this.certs.set(arn, { caArn: ca.arn, arn, certPem, gets: 0 });
      if (token !== undefined) this.tokens.set(`${ca.arn} ${token}`, { arn, atMs: nowMs });
      this.issued.push({ arn, caArn: ca.arn, signingAlgorithm: alg, template, validity: input['Validity'] as { Type: string; Value: number }, idempotencyToken: token });
      return { CertificateArn: arn };
    } finally {
      for (const p of [csrPath, extPath, cnfPath, outPath]) rmSync(p, { force: true });
    }
  }

  private getCertificate(input: Record<string, unknown>): unknown {
    const ca = this.findCa(requireString(input, 'CertificateAuthorityArn'));
    const arn = requireString(input, 'CertificateArn');
    if (!ARN_SHAPE.test(arn)) throw new AwsError('InvalidArnException', `The ARN ${arn} is not valid.`);
    const c = this.certs.get(arn);
    if (c === undefined || c.caArn !== ca.arn) throw new AwsError('ResourceNotFoundException', `Could not find certificate ${arn}.`);
    if (c.gets < this.inProgressCalls) {
      c.gets += 1;
      throw new AwsError('RequestInProgressException', `The request to issue certificate ${arn} is still in progress.`);
    }
    c.gets += 1;
    if (c.failed !== undefined) throw new AwsError('RequestFailedException', c.failed);
    return { Certificate: c.certPem.trim(), CertificateChain: ca.ca.certPem.trim() };
  }
}

/** openssl ca's GeneralizedTime: YYYYMMDDHHMMSSZ. */
function stamp(ms: number): string {
  return `${new Date(ms).toISOString().replace(/[-:T]/g, '').slice(0, 14)}Z`;
}
