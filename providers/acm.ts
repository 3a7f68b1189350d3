/**
 * Source `acm`: an exportable certificate in AWS Certificate Manager (a private certificate
 * from AWS Private CA, or an exportable public one).
 *
 * Cost: AWS bills every ExportCertificate, so an unchanged certificate is never exported. Each
 * cycle asks DescribeCertificate (one cheap call) and compares its serial and NotAfter with the
 * deployed version (`isCurrent`, which also works in a fresh `rotate` process); only a new
 * serial (a renewal) costs an export. Exports are counted in certd_acm_exports_total.
 *
 * The key: ExportCertificate gets a passphrase made for that one call (32 random bytes,
 * hex, in memory only) and answers a PBES2-encrypted PKCS#8 key, which is decrypted in memory
 * with node:crypto. In FIPS mode (crypto.getFips() = 1) a key encrypted with anything but
 * PBES2 / PBKDF2 with HMAC-SHA-2 / AES-CBC, or with fewer than 1,000 PBKDF2 iterations
 * (SP 800-132), is refused before decryption, naming what was found.
 *
 * Quota: ACM allows an account 10 DescribeCertificate and 5 ExportCertificate calls per second
 * (per region). The SDK's adaptive retry paces a client's calls once ACM throttles; with many
 * certificates the queue behind that pacing would spend their fetch_deadline. So the acm
 * sources of one client share a lane of ACM_LANE_LIMIT source steps at once (see Source.lane).
 */

/** acm source steps of one client in flight at once: the ExportCertificate quota per second. */
export const ACM_LANE_LIMIT = 5;
import { AsnConvert } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier } from '@peculiar/asn1-x509';
import { createPrivateKey, getFips, randomBytes, X509Certificate } from 'node:crypto';
import { z } from 'zod';
import { type AwsLocation, awsClient, awsLocation, awsSend, clientKey, sdk } from '../src/aws.js';
import type { ChecksCurrent, DeployedSummary, Source, SourceFactory } from '../src/contracts.js';
import { CertdError } from '../src/errors.js';
import { Material } from '../src/material.js';
import { derChildren, derValue } from '../src/policy/der.js';
import { splitPem } from '../src/policy/pem.js';
import { awsFields } from '../src/schema.js';
import { Secret } from '../src/secret.js';

const schema = z.strictObject({
  type: z.literal('acm'),
  certificate_arn: z.string().regex(/^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate\/[A-Za-z0-9-]+$/, 'expected an ACM certificate ARN such as arn:aws:acm:eu-west-1:123456789012:certificate/<id>'),
  ...awsFields,
});

const DESCRIBE_ACTIONS = ['acm:DescribeCertificate'];
const EXPORT_ACTIONS = ['acm:ExportCertificate'];

interface Described {
  readonly version: string;
  readonly renewalStatus?: string | undefined;
}

/** The version certd records for an ACM certificate: serial (lower-case hex, no colons or leading zeros) and NotAfter. */
export function acmVersion(serial: string, notAfter: Date): string {
  const hex = serial.replace(/:/g, '').toLowerCase().replace(/^0+(?=.)/, '');
  return `${hex}/${notAfter.toISOString().replace(/\.000Z$/, 'Z')}`;
}

const OIDS: Readonly<Record<string, string>> = {
  '1.2.840.113549.1.5.13': 'PBES2',
  '1.2.840.113549.1.5.12': 'PBKDF2',
  '1.2.840.113549.2.7': 'hmacWithSHA1',
  '1.2.840.113549.2.8': 'hmacWithSHA224',
  '1.2.840.113549.2.9': 'hmacWithSHA256',
  '1.2.840.113549.2.10': 'hmacWithSHA384',
  '1.2.840.113549.2.11': 'hmacWithSHA512',
  '2.16.840.1.101.3.4.1.2': 'aes-128-cbc',
  '2.16.840.1.101.3.4.1.22': 'aes-192-cbc',
  '2.16.840.1.101.3.4.1.42': 'aes-256-cbc',
  '1.2.840.113549.3.7': 'des-ede3-cbc',
  '1.3.14.3.2.7': 'des-cbc',
  '1.2.840.113549.1.12.1.3': 'pbeWithSHAAnd3-KeyTripleDES-CBC (PBES1)',
  '1.2.840.113549.1.5.10': 'pbeWithSHA1AndDES-CBC (PBES1)',
};
const APPROVED_PRFS = new Set(['hmacWithSHA224', 'hmacWithSHA256', 'hmacWithSHA384', 'hmacWithSHA512']);
const APPROVED_CIPHERS = new Set(['aes-128-cbc', 'aes-192-cbc', 'aes-256-cbc']);
const MIN_ITERATIONS = 1000;

/** An AlgorithmIdentifier TLV: its OID and the TLV of its parameters, when present. */
function algorithmOf(tlv: Buffer | undefined): { oid: string; params: Buffer | undefined } {
  if (!tlv) throw new Error('no AlgorithmIdentifier');
  const a = AsnConvert.parse(tlv, AlgorithmIdentifier);
  return { oid: a.algorithm, params: a.parameters ? Buffer.from(a.parameters) : undefined };
}

const nameOf = (oid: string): string => OIDS[oid] ?? oid;

/** How an EncryptedPrivateKeyInfo (DER) is encrypted: scheme, KDF, PRF, cipher, iterations. */
export function encryptionOf(der: Buffer): { scheme: string; kdf?: string; prf?: string; cipher?: string; iterations?: number } {
  const alg = algorithmOf(derChildren(der)[0]);
  const scheme = nameOf(alg.oid);
  if (scheme !== 'PBES2' || !alg.params) return { scheme };
  const [kdfTlv, encTlv] = derChildren(alg.params);
  const kdfAlg = algorithmOf(kdfTlv);
  const kdf = nameOf(kdfAlg.oid);
  const cipher = nameOf(algorithmOf(encTlv).oid);
  if (kdf !== 'PBKDF2' || !kdfAlg.params) return { scheme, kdf, cipher };
  let iterations: number | undefined;
  let prf = 'hmacWithSHA1'; // the DEFAULT of PBKDF2-params
  for (const f of derChildren(kdfAlg.params).slice(1)) {
    if (f[0] === 0x02 && iterations === undefined) iterations = Number.parseInt(derValue(f).toString('hex') || '0', 16);
    else if (f[0] === 0x30) prf = nameOf(algorithmOf(f).oid);
  }
  return { scheme, kdf, prf, cipher, ...(iterations !== undefined ? { iterations } : {}) };
}

/** Why a key so encrypted is refused in FIPS mode, or undefined when it is acceptable. */
export function fipsRefusal(enc: ReturnType<typeof encryptionOf>): string | undefined {
  if (enc.scheme !== 'PBES2') return `it is encrypted with ${enc.scheme}, not PBES2`;
  if (enc.kdf !== 'PBKDF2') return `its key derivation is ${enc.kdf}, not PBKDF2`;
  if (!APPROVED_PRFS.has(enc.prf ?? '')) return `its PBKDF2 PRF is ${enc.prf}; certd takes HMAC-SHA-224/256/384/512 only`;
  if (!APPROVED_CIPHERS.has(enc.cipher ?? '')) return `its cipher is ${enc.cipher}, not AES-CBC (128, 192 or 256)`;
  if ((enc.iterations ?? 0) < MIN_ITERATIONS) return `PBKDF2 runs ${enc.iterations ?? 0} iterations, fewer than SP 800-132's ${MIN_ITERATIONS}`;
  return undefined;
}

/** 64 hex characters from 32 random bytes, written straight into a Buffer (no string copy to leave behind). */
function newPassphrase(): Buffer {
  const raw = randomBytes(32);
  const out = Buffer.alloc(64);
  const digits = '0123456789abcdef';
  for (let i = 0; i < raw.length; i++) {
    out[2 * i] = digits.charCodeAt(raw[i]! >> 4);
    out[2 * i + 1] = digits.charCodeAt(raw[i]! & 15);
  }
  raw.fill(0);
  return out;
}

/** The DER of the first `label` block of `pem`, or undefined when it has none or is not PEM. */
function pemBody(pem: string, label: string): Buffer | undefined {
  try {
    return splitPem(pem).find((b) => b.label === label)?.der;
  } catch {
    return undefined;
  }
}

export const acmSource = {
  type: 'acm',
  schema,
  create(config, deps, cert): Source {
    const loc = awsLocation(config);
    const arn = config.certificate_arn;
    const origin = `acm:${arn}`;
    const doing = `fetching ${cert.name} from ${origin}`;
    const base = { doing, source: 'acm', resource: arn, notFoundHint: `check certificate_arn and the region${config.region ? ` (${config.region})` : ''}` };

    async function describe(signal: AbortSignal): Promise<Described> {
      const client = await awsClient(deps, 'acm', loc);
      const { DescribeCertificateCommand } = await sdk.acm();
      const out = await awsSend<{ Certificate?: { Serial?: string; NotAfter?: Date; Status?: string; Options?: { Export?: string }; RenewalSummary?: { RenewalStatus?: string } } }>(
        deps, client, new DescribeCertificateCommand({ CertificateArn: arn }), signal,
        { ...base, doing: `describing ${cert.name} at ${origin}`, operation: 'DescribeCertificate', actions: DESCRIBE_ACTIONS },
      );
      const c = out.Certificate ?? {};
      if (c.Options?.Export === 'DISABLED') {
        throw new CertdError('E_SOURCE', `${doing}: the certificate is not exportable (Options.Export is DISABLED): request it with export enabled, or use AWS Private CA`, { permanent: true });
      }
      if (c.Status !== undefined && c.Status !== 'ISSUED') {
        throw new CertdError('E_SOURCE', `${doing}: the certificate's status is ${c.Status}, not ISSUED`, { permanent: c.Status !== 'PENDING_VALIDATION' });
      }
      if (!c.Serial || !(c.NotAfter instanceof Date)) throw new CertdError('E_SOURCE', `${doing}: DescribeCertificate answered no Serial or NotAfter`);
      const renewalStatus = c.RenewalSummary?.RenewalStatus;
      if (renewalStatus === 'FAILED') deps.log.warn({ cert: cert.name, step: 'fetch', source: 'acm', renewalStatus }, 'ACM reports that the renewal of this certificate failed');
      return { version: acmVersion(c.Serial, c.NotAfter), renewalStatus };
    }

    async function exportMaterial(signal: AbortSignal): Promise<Material> {
      const client = await awsClient(deps, 'acm', loc);
      const { ExportCertificateCommand } = await sdk.acm();
      const passphrase = newPassphrase();
      try {
        const out = await awsSend<{ Certificate?: string; CertificateChain?: string; PrivateKey?: string }>(
          deps, client, new ExportCertificateCommand({ CertificateArn: arn, Passphrase: passphrase }), signal,
          { ...base, operation: 'ExportCertificate', actions: EXPORT_ACTIONS },
        );
        deps.metrics?.acmExport?.(cert.name);
        const encryptedPem = out.PrivateKey ?? '';
        const der = pemBody(encryptedPem, 'ENCRYPTED PRIVATE KEY');
        if (!out.Certificate || der === undefined) {
          throw new CertdError('E_PARSE', `${doing}: ExportCertificate answered no certificate or no ENCRYPTED PRIVATE KEY block`, { permanent: true });
        }
        let enc: ReturnType<typeof encryptionOf>;
        try {
          enc = encryptionOf(der);
        } catch (err) {
          throw new CertdError('E_PARSE', `${doing}: the exported key is not a PKCS#8 EncryptedPrivateKeyInfo`, { cause: err, permanent: true });
        } finally {
          der.fill(0);
        }
        if (getFips() === 1) {
          const why = fipsRefusal(enc);
          if (why) throw new CertdError('E_SOURCE', `${doing}: refusing the exported key in FIPS mode: ${why}`, { permanent: true, details: { encryption: enc } });
        }
        let key: Secret;
        try {
          const plain = createPrivateKey({ key: encryptedPem, format: 'pem', passphrase }).export({ type: 'pkcs8', format: 'pem' });
          key = new Secret(plain as string);
        } catch (err) {
          // Not permanent: the next export makes a new passphrase and a new encryption.
          throw new CertdError('E_SOURCE', `${doing}: the exported key does not decrypt with the passphrase certd sent (${enc.scheme}${enc.cipher ? ` ${enc.cipher}` : ''}${enc.prf ? ` ${enc.prf}` : ''})`, { cause: scrubbedCause(err) });
        }
        const leaf = new X509Certificate(out.Certificate);
        const version = acmVersion(leaf.serialNumber, new Date(leaf.validTo));
        const bundle = Buffer.from(`${out.Certificate.trim()}\n${(out.CertificateChain ?? '').trim()}\n`, 'utf8');
        try {
          return Material.fromBundle(bundle, { version, origin, keyOverride: { kind: 'pem', pem: key } });
        } finally {
          bundle.fill(0);
        }
      } finally {
        passphrase.fill(0);
      }
    }

    // The last Material, for a daemon whose deployed version is unchanged but whose targets need
    // it again (no second export); and DescribeCertificate's answer from isCurrent, for the fetch
    // that follows it in the same cycle.
    let last: Material | undefined;
    let described: Described | undefined;
    const source: Source & ChecksCurrent = {
      lane: { key: clientKey('acm', loc), limit: ACM_LANE_LIMIT },
      async isCurrent(deployed: DeployedSummary, signal) {
        const d = await describe(signal);
        // Kept only for the fetch that follows a "no" in this cycle; a "yes" ends the cycle.
        described = d.version === deployed.version ? undefined : d;
        return described === undefined;
      },
      async fetch(_ref, signal) {
        const d = described ?? (await describe(signal));
        described = undefined;
        if (last !== undefined && last.version === d.version) return last;
        last = await exportMaterial(signal);
        if (last.version !== d.version) deps.log.info({ cert: cert.name, step: 'fetch', source: 'acm', described: d.version, exported: last.version }, 'the exported certificate is newer than the one described (a renewal in between)');
        return last;
      },
    };
    return source;
  },
} satisfies SourceFactory<typeof schema>;

/** OpenSSL's decryption error without anything of the input. */
function scrubbedCause(err: unknown): Error {
  const e = err as { code?: string; message?: string };
  return new Error(`${e.code ?? 'Error'}: ${(e.message ?? '').slice(0, 120)}`);
}
