// AWS Certificate Manager as certd sees it: exportable certificates kept in memory, answered
// by DescribeCertificate and ExportCertificate. ExportCertificate encrypts the key the way ACM
// does: PKCS#8 EncryptedPrivateKeyInfo (PBES2, PBKDF2) under the caller's passphrase, made fresh
// on every call with node:crypto (OpenSSL), so the caller really has to decrypt it.
//
// Seeding: ImportCertificate (PEM blobs, optional CertificateArn to re-import = a renewal), as
// AWS names it. Unlike AWS, where imported certificates cannot be exported, the peer marks every
// certificate exportable (Type PRIVATE, Options.Export ENABLED): the export path is what is tested.
import { createPrivateKey, randomUUID, X509Certificate } from 'node:crypto';
import { AwsError, optionalString, requireBlob, requireString, validation } from './aws-error.js';
import type { EmulatedService, Operation, ServiceContext } from './aws-service.js';
import { epochSeconds } from './aws-service.js';

interface AcmCertificate {
  readonly arn: string;
  certPem: string;
  chainPem: string;
  keyPem: string;
  serial: string;
  notBefore: number;
  notAfter: number;
  domain: string;
  keyAlgorithm: string;
  importedMs: number;
  /** What ExportCertificate encrypts the key with (OpenSSL cipher name); aes-256-cbc like ACM. */
  exportCipher: string;
  renewalStatus?: string;
  /** Encrypt exports under another passphrase than the caller's (what a wrong passphrase looks like). */
  wrongPassphrase?: boolean;
  exports: number;
}

const ARN = /^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate\/[0-9a-f-]{36}$/;

export class AcmService implements EmulatedService {
  readonly targetPrefix = 'CertificateManager';
  readonly signingName = 'acm';
  readonly errorNamespace = 'com.amazonaws.acm';
  readonly internalError = { code: 'InternalFailure', message: 'The request processing has failed because of an unknown error.' };
  readonly operations: Readonly<Record<string, Operation>>;

  private readonly certs = new Map<string, AcmCertificate>();

  constructor(private readonly ctx: ServiceContext) {
    this.operations = {
      ImportCertificate: (i) => this.importCertificate(i),
      DescribeCertificate: (i) => this.describeCertificate(i),
      ExportCertificate: (i) => this.exportCertificate(i),
    };
  }

  /** Exports answered so far for `arn` (0 when unknown). */
  exportsOf(arn: string): number {
    return this.certs.get(arn)?.exports ?? 0;
  }

  /** Test hook: the cipher the next exports of `arn` use (e.g. des-ede3-cbc, not FIPS approved). */
  setExportCipher(arn: string, cipher: string): void {
    this.find(arn).exportCipher = cipher;
  }

  /** Test hook: exports of `arn` are encrypted under a passphrase other than the caller's. */
  setWrongPassphrase(arn: string, on: boolean): void {
    this.find(arn).wrongPassphrase = on;
  }

  /** Test hook: RenewalSummary.RenewalStatus, or none. */
  setRenewalStatus(arn: string, status: string | undefined): void {
    const c = this.find(arn);
    if (status === undefined) delete c.renewalStatus;
    else c.renewalStatus = status;
  }

  private find(arn: string): AcmCertificate {
    if (!ARN.test(arn)) throw validation(`1 validation error detected: Value '${arn}' at 'certificateArn' failed to satisfy constraint: Member must satisfy regular expression pattern: arn:[\\w+=/,.@-]+:acm:[\\w+=/,.@-]*:[0-9]+:[\\w+=,.@-]+(/[\\w+=,.@-]+)*`);
    const c = this.certs.get(arn);
    if (c === undefined) throw new AwsError('ResourceNotFoundException', `Could not find certificate ${arn}.`);
    return c;
  }

  private importCertificate(input: Record<string, unknown>): unknown {
    const certPem = requireBlob(input, 'Certificate').toString('utf8');
    const keyPem = requireBlob(input, 'PrivateKey').toString('utf8');
    const chainB64 = optionalString(input, 'CertificateChain');
    const chainPem = chainB64 === undefined ? '' : Buffer.from(chainB64, 'base64').toString('utf8');
    let x: X509Certificate;
    try {
      x = new X509Certificate(certPem);
      if (!x.checkPrivateKey(createPrivateKey(keyPem))) throw new Error('mismatch');
    } catch {
      throw validation('The certificate field contains more than one certificate or the private key does not match the certificate.');
    }
    const given = optionalString(input, 'CertificateArn');
    const arn = given ?? `arn:aws:acm:${this.ctx.region}:${this.ctx.accountId}:certificate/${randomUUID()}`;
    const old = given === undefined ? undefined : this.find(given);
    const entry: AcmCertificate = {
      arn,
      certPem,
      chainPem,
      keyPem,
      serial: x.serialNumber.toLowerCase().replace(/(..)(?!$)/g, '$1:'),
      notBefore: new Date(x.validFrom).getTime(),
      notAfter: new Date(x.validTo).getTime(),
      domain: /CN=([^,\n]+)/.exec(x.subject)?.[1] ?? '',
      keyAlgorithm: keyAlgorithmOf(x),
      importedMs: this.ctx.nowMs(),
      exportCipher: old?.exportCipher ?? 'aes-256-cbc',
      exports: old?.exports ?? 0,
    };
    this.certs.set(arn, entry);
    return { CertificateArn: arn };
  }

  private describeCertificate(input: Record<string, unknown>): unknown {
    const c = this.find(requireString(input, 'CertificateArn'));
    return {
      Certificate: {
        CertificateArn: c.arn,
        DomainName: c.domain,
        SubjectAlternativeNames: [c.domain],
        Serial: c.serial,
        Subject: `CN=${c.domain}`,
        Issuer: 'certd test',
        CreatedAt: epochSeconds(c.importedMs),
        IssuedAt: epochSeconds(c.importedMs),
        NotBefore: epochSeconds(c.notBefore),
        NotAfter: epochSeconds(c.notAfter),
        Status: 'ISSUED',
        Type: 'PRIVATE',
        KeyAlgorithm: c.keyAlgorithm,
        InUseBy: [],
        RenewalEligibility: 'ELIGIBLE',
        ...(c.renewalStatus ? { RenewalSummary: { RenewalStatus: c.renewalStatus, UpdatedAt: epochSeconds(this.ctx.nowMs()) } } : {}),
        Options: { CertificateTransparencyLoggingPreference: 'DISABLED', Export: 'ENABLED' },
      },
    };
  }

  private exportCertificate(input: Record<string, unknown>): unknown {
    const c = this.find(requireString(input, 'CertificateArn'));
    const passphrase = requireBlob(input, 'Passphrase');
    if (passphrase.length < 4 || passphrase.length > 128) {
      throw validation('1 validation error detected: Value at \'passphrase\' failed to satisfy constraint: Member must have length between 4 and 128');
    }
    if (/[#$%]/.test(passphrase.toString('latin1'))) throw validation('The passphrase must not contain #, $ or %.');
    c.exports += 1;
    const used = c.wrongPassphrase ? Buffer.concat([passphrase, Buffer.from('-other')]) : passphrase;
    const encrypted = createPrivateKey(c.keyPem).export({ type: 'pkcs8', format: 'pem', cipher: c.exportCipher, passphrase: used });
    passphrase.fill(0);
    return { Certificate: c.certPem, CertificateChain: c.chainPem, PrivateKey: encrypted };
  }
}

function keyAlgorithmOf(x: X509Certificate): string {
  const k = x.publicKey;
  if (k.asymmetricKeyType === 'rsa') return `RSA_${k.asymmetricKeyDetails?.modulusLength ?? 2048}`;
  const curve = k.asymmetricKeyDetails?.namedCurve;
  return curve === 'secp384r1' ? 'EC_secp384r1' : curve === 'secp521r1' ? 'EC_secp521r1' : 'EC_prime256v1';
}
