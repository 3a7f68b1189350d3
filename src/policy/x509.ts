/**
 * X.509 certificates as the policy sees them. The DER is decoded with @peculiar/asn1-x509 (Node's
 * X509Certificate hides key-usage bits, pathLen, explicit curve parameters and, on Node 20, the
 * signature algorithm); Node's X509Certificate is kept beside it for signature checks.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { AsnConvert, AsnIntegerArrayBufferConverter, AsnProp, AsnPropTypes, AsnType, AsnTypeTypes } from '@peculiar/asn1-schema';
import {
  AlgorithmIdentifier,
  BasicConstraints,
  Certificate,
  ExtendedKeyUsage,
  KeyUsage,
  Name,
  SubjectAlternativeName,
} from '@peculiar/asn1-x509';
import type { KeyUsageType } from '@peculiar/asn1-x509';
import { ECParameters } from '@peculiar/asn1-ecc';
import { RSAPublicKey, RsaSaPssParams } from '@peculiar/asn1-rsa';
import { CertdError, messageOf } from '../errors.js';
import {
  attributeName,
  CURVES,
  extKeyUsageName,
  HASH_OIDS,
  HASH_STRENGTH,
  OID,
  SIGNATURE_ALGORITHMS,
} from './algorithms.js';
import type { Curve, HashName, SignatureFamily } from './algorithms.js';

/** The subject public key, decoded far enough for the key rules. */
export type KeyInfo =
  | { readonly alg: 'RSA'; readonly bits: number; readonly exponent: bigint }
  | { readonly alg: 'EC'; readonly curveOid: string; readonly curve: Curve | undefined }
  /** EC key whose parameters are spelled out (or implicit) instead of naming a curve. */
  | { readonly alg: 'EC-explicit'; readonly bits: number | undefined }
  | { readonly alg: 'Ed25519' }
  | { readonly alg: 'Ed448' }
  | { readonly alg: 'DSA'; readonly bits: number | undefined }
  | { readonly alg: 'other'; readonly oid: string; readonly name: string };

export interface SignatureInfo {
  readonly oid: string;
  /** "sha256WithRSAEncryption", "RSASSA-PSS with sha256", or the OID when unknown. */
  readonly name: string;
  readonly family: SignatureFamily | undefined;
  /** The weakest hash the signature relies on (for PSS: of the message hash and MGF1). */
  readonly hash: HashName | undefined;
}

export interface ParsedName {
  /** DER order, "CN=Example Root, O=Example". */
  readonly text: string;
  /** Per attribute, lower-cased with inner whitespace collapsed (RFC 5280 7.1, simplified). */
  readonly canonical: string;
  readonly der: Buffer;
  /** The last CN attribute, if any: what people call the certificate. */
  readonly commonName: string | undefined;
}

export interface ParsedCertificate {
  readonly der: Buffer;
  readonly x509: X509Certificate;
  /** 1, 2 or 3. */
  readonly version: number;
  readonly serial: string;
  readonly subject: ParsedName;
  readonly issuer: ParsedName;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** SubjectPublicKeyInfo DER. */
  readonly spki: Buffer;
  readonly key: KeyInfo;
  readonly signature: SignatureInfo;
  readonly basicConstraints:
    | { readonly critical: boolean; readonly cA: boolean; readonly pathLen: number | undefined }
    | undefined;
  readonly keyUsage: { readonly critical: boolean; readonly usages: readonly KeyUsageType[] } | undefined;
  /** OIDs, or undefined when the extension is absent. */
  readonly extKeyUsage: readonly string[] | undefined;
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
  /** Subject and issuer names are equal. */
  readonly selfIssued: boolean;
  /** Self-issued and its signature verifies with its own key. */
  readonly selfSigned: boolean;
}

/** What `certd validate`, `status` and `report` show about a certificate. */
export interface CertificateSummary {
  readonly subject: string;
  readonly issuer: string;
  readonly serial: string;
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
  readonly notBefore: string;
  readonly notAfter: string;
  /** "RSA", "EC", "Ed25519", "Ed448", "DSA", or the key algorithm OID. */
  readonly keyAlgorithm: string;
  readonly keyBits: number | undefined;
  /** "P-256", ..., "explicit" for spelled-out parameters; undefined for non-EC keys. */
  readonly curve: string | undefined;
  readonly signatureAlgorithm: string;
  readonly isCA: boolean;
  readonly pathLen: number | undefined;
  readonly keyUsage: readonly string[];
  readonly extKeyUsage: readonly string[];
  /** SHA-256 of the DER, uppercase hex with colons (as Node's fingerprint256). */
  readonly fingerprint256: string;
}

/** RFC 5280 bit order, so that lists read as the standard and OpenSSL print them. */
const KEY_USAGE_ORDER: readonly KeyUsageType[] = [
  'digitalSignature', 'nonRepudiation', 'keyEncipherment', 'dataEncipherment', 'keyAgreement',
  'keyCertSign', 'crlSign', 'encipherOnly', 'decipherOnly',
];

function toBuffer(data: ArrayBuffer | ArrayBufferView): Buffer {
  return ArrayBuffer.isView(data)
    ? Buffer.from(data.buffer, data.byteOffset, data.byteLength)
    : Buffer.from(data);
}

function bitLength(unsigned: Buffer): number {
  let i = 0;
  while (i < unsigned.length && unsigned[i] === 0) i++;
  if (i === unsigned.length) return 0;
  return (unsigned.length - i - 1) * 8 + (32 - Math.clz32(unsigned[i] as number));
}

function toBigInt(unsigned: Buffer): bigint {
  return unsigned.length === 0 ? 0n : BigInt(`0x${unsigned.toString('hex')}`);
}

function parseName(name: Name): ParsedName {
  const parts: string[] = [];
  const canonical: string[] = [];
  let commonName: string | undefined;
  for (const rdn of name) {
    for (const atv of rdn) {
      const value = atv.value.toString();
      if (atv.type === '2.5.4.3') commonName = value;
      parts.push(`${attributeName(atv.type)}=${value}`);
      canonical.push(`${atv.type}=${value.trim().replace(/\s+/g, ' ').toLowerCase()}`);
    }
  }
  return {
    text: parts.join(', '),
    canonical: canonical.join('\u0000'),
    der: Buffer.from(AsnConvert.serialize(name)),
    commonName,
  };
}

export function namesEqual(a: ParsedName, b: ParsedName): boolean {
  return a.der.equals(b.der) || a.canonical === b.canonical;
}

/** Prime-p ::= INTEGER, the parameters of a prime field (X9.62). A CHOICE lets the schema read a bare INTEGER. */
class PrimeP {
  value = new ArrayBuffer(0);
}
AsnType({ type: AsnTypeTypes.Choice })(PrimeP);
AsnProp({ type: AsnPropTypes.Integer, converter: AsnIntegerArrayBufferConverter })(PrimeP.prototype, 'value');

function primeFieldBits(parameters: ArrayBuffer | undefined): number | undefined {
  if (!parameters) return undefined;
  try {
    return bitLength(toBuffer(AsnConvert.parse(parameters, PrimeP).value)) || undefined;
  } catch {
    // A characteristic-two field: its size is not a prime's length.
    return undefined;
  }
}

function parseKey(cert: Certificate, x509: X509Certificate): KeyInfo {
  const spki = cert.tbsCertificate.subjectPublicKeyInfo;
  const oid = spki.algorithm.algorithm;
  switch (oid) {
    case OID.rsaEncryption: {
      const rsa = AsnConvert.parse(spki.subjectPublicKey, RSAPublicKey);
      return {
        alg: 'RSA',
        bits: bitLength(toBuffer(rsa.modulus)),
        exponent: toBigInt(toBuffer(rsa.publicExponent)),
      };
    }
    case OID.ecPublicKey: {
      const params = spki.algorithm.parameters;
      if (!params) return { alg: 'EC-explicit', bits: undefined };
      const ec = AsnConvert.parse(params, ECParameters);
      if (ec.namedCurve !== undefined) {
        return { alg: 'EC', curveOid: ec.namedCurve, curve: CURVES[ec.namedCurve] };
      }
      return { alg: 'EC-explicit', bits: primeFieldBits(ec.specifiedCurve?.fieldID.parameters) };
    }
    case OID.ed25519:
      return { alg: 'Ed25519' };
    case OID.ed448:
      return { alg: 'Ed448' };
    case OID.dsa:
      return { alg: 'DSA', bits: x509.publicKey.asymmetricKeyDetails?.modulusLength };
    case OID.rsassaPss:
      return { alg: 'other', oid, name: 'RSASSA-PSS' };
    case OID.x25519:
      return { alg: 'other', oid, name: 'X25519' };
    case OID.x448:
      return { alg: 'other', oid, name: 'X448' };
    default:
      return { alg: 'other', oid, name: oid };
  }
}

function hashOf(alg: AlgorithmIdentifier): HashName | undefined {
  return HASH_OIDS[alg.algorithm];
}

function weaker(a: HashName | undefined, b: HashName | undefined): HashName | undefined {
  if (a === undefined || b === undefined) return undefined;
  return HASH_STRENGTH[a] <= HASH_STRENGTH[b] ? a : b;
}

function parseSignature(alg: AlgorithmIdentifier): SignatureInfo {
  const known = SIGNATURE_ALGORITHMS[alg.algorithm];
  if (!known) return { oid: alg.algorithm, name: alg.algorithm, family: undefined, hash: undefined };
  if (known.family !== 'rsa-pss') {
    return { oid: alg.algorithm, name: known.name, family: known.family, hash: known.hash };
  }
  // Absent PSS parameters mean SHA-1 for both the hash and MGF1 (RFC 4055).
  const params = alg.parameters ? AsnConvert.parse(alg.parameters, RsaSaPssParams) : new RsaSaPssParams();
  const hash = hashOf(params.hashAlgorithm);
  let mgfHash: HashName | undefined;
  if (params.maskGenAlgorithm.algorithm === OID.mgf1 && params.maskGenAlgorithm.parameters) {
    mgfHash = hashOf(AsnConvert.parse(params.maskGenAlgorithm.parameters, AlgorithmIdentifier));
  }
  return {
    oid: alg.algorithm,
    name: `RSASSA-PSS with ${hash ?? params.hashAlgorithm.algorithm}`,
    family: 'rsa-pss',
    hash: weaker(hash, mgfHash),
  };
}

/**
 * Recently decoded certificates, by their DER bytes. A cycle decodes each certificate twice
 * (parseBundle checks that it is one, checkPolicy reads it) and decoding is the policy's main
 * cost (asn1js and OpenSSL's decoder each take about a millisecond per certificate), so the
 * second decode is answered from here. Bounded: the oldest entry goes first. A ParsedCertificate
 * holds only public facts and is never modified.
 */
const parsedCache = new Map<string, ParsedCertificate>();
const PARSED_CACHE_SIZE = 256;

/**
 * Decodes a DER certificate. Throws (any error) when the bytes are not a certificate that both
 * the ASN.1 schema and OpenSSL accept, or when an extension the policy reads is malformed.
 */
export function parseCertificate(der: Buffer): ParsedCertificate {
  const key = der.toString('latin1');
  const cached = parsedCache.get(key);
  if (cached) {
    // Most recently used last, so that intermediates shared by many leaves stay.
    parsedCache.delete(key);
    parsedCache.set(key, cached);
    return cached;
  }
  const parsed = decodeCertificate(der);
  if (parsedCache.size >= PARSED_CACHE_SIZE) parsedCache.delete(parsedCache.keys().next().value as string);
  parsedCache.set(key, parsed);
  return parsed;
}

function decodeCertificate(der: Buffer): ParsedCertificate {
  const cert = AsnConvert.parse(der, Certificate);
  const x509 = new X509Certificate(der);
  const tbs = cert.tbsCertificate;
  let basicConstraints: ParsedCertificate['basicConstraints'];
  let keyUsage: ParsedCertificate['keyUsage'];
  let extKeyUsage: string[] | undefined;
  const dnsNames: string[] = [];
  const ipAddresses: string[] = [];
  for (const ext of tbs.extensions ?? []) {
    const value = ext.extnValue.buffer;
    switch (ext.extnID) {
      case OID.basicConstraints: {
        const bc = AsnConvert.parse(value, BasicConstraints);
        basicConstraints = { critical: ext.critical, cA: bc.cA, pathLen: bc.pathLenConstraint };
        break;
      }
      case OID.keyUsage:
        keyUsage = {
          critical: ext.critical,
          usages: AsnConvert.parse(value, KeyUsage)
            .toJSON()
            .sort((a, b) => KEY_USAGE_ORDER.indexOf(a) - KEY_USAGE_ORDER.indexOf(b)),
        };
        break;
      case OID.extKeyUsage:
        extKeyUsage = [...AsnConvert.parse(value, ExtendedKeyUsage)];
        break;
      case OID.subjectAltName:
        for (const gn of AsnConvert.parse(value, SubjectAlternativeName)) {
          if (gn.dNSName !== undefined) dnsNames.push(gn.dNSName);
          if (gn.iPAddress !== undefined) ipAddresses.push(gn.iPAddress);
        }
        break;
      default:
        break;
    }
  }
  const subject = parseName(tbs.subject);
  const issuer = parseName(tbs.issuer);
  const selfIssued = namesEqual(subject, issuer);
  return {
    der: Buffer.from(der),
    x509,
    version: tbs.version + 1,
    serial: x509.serialNumber.toUpperCase(),
    subject,
    issuer,
    notBefore: tbs.validity.notBefore.getTime(),
    notAfter: tbs.validity.notAfter.getTime(),
    spki: Buffer.from(AsnConvert.serialize(tbs.subjectPublicKeyInfo)),
    key: parseKey(cert, x509),
    signature: parseSignature(cert.signatureAlgorithm),
    basicConstraints,
    keyUsage,
    extKeyUsage,
    dnsNames,
    ipAddresses,
    selfIssued,
    selfSigned: selfIssued && verifiesWith(x509, x509),
  };
}

function verifiesWith(child: X509Certificate, parent: X509Certificate): boolean {
  try {
    return child.verify(parent.publicKey);
  } catch {
    // A key OpenSSL cannot load for verification (unknown algorithm, broken parameters).
    return false;
  }
}

/**
 * Issuance between two decoded certificates, a pure function of their bytes: remembered per
 * pair, so that an intermediate shared by many leaves has its signature verified once.
 */
const issuances = new WeakMap<ParsedCertificate, WeakMap<ParsedCertificate, { named: boolean; signed: boolean }>>();

/** How `child` relates to a candidate issuer. */
export function issuance(child: ParsedCertificate, parent: ParsedCertificate): { named: boolean; signed: boolean } {
  let byParent = issuances.get(child);
  const known = byParent?.get(parent);
  if (known) return known;
  // checkIssued applies OpenSSL's own name canonicalisation; it is only a fallback because it
  // also refuses an issuer without keyCertSign, which is P-CHAIN-CA's finding, not an order one.
  const named = namesEqual(child.issuer, parent.subject) || child.x509.checkIssued(parent.x509);
  const result = Object.freeze({ named, signed: named && verifiesWith(child.x509, parent.x509) });
  if (!byParent) issuances.set(child, (byParent = new WeakMap()));
  byParent.set(parent, result);
  return result;
}

export function fingerprint256(der: Buffer): string {
  return createHash('sha256')
    .update(der)
    .digest('hex')
    .toUpperCase()
    .replace(/(..)(?!$)/g, '$1:');
}

function keyFacts(key: KeyInfo): { alg: string; bits: number | undefined; curve: string | undefined } {
  switch (key.alg) {
    case 'RSA':
      return { alg: 'RSA', bits: key.bits, curve: undefined };
    case 'EC':
      return { alg: 'EC', bits: key.curve?.bits, curve: key.curve?.name ?? key.curveOid };
    case 'EC-explicit':
      return { alg: 'EC', bits: key.bits, curve: 'explicit' };
    case 'Ed25519':
      return { alg: 'Ed25519', bits: 256, curve: undefined };
    case 'Ed448':
      return { alg: 'Ed448', bits: 456, curve: undefined };
    case 'DSA':
      return { alg: 'DSA', bits: key.bits, curve: undefined };
    case 'other':
      return { alg: key.name, bits: undefined, curve: undefined };
  }
}

export function summarize(cert: ParsedCertificate): CertificateSummary {
  const key = keyFacts(cert.key);
  return {
    subject: cert.subject.text,
    issuer: cert.issuer.text,
    serial: cert.serial,
    dnsNames: [...cert.dnsNames],
    ipAddresses: [...cert.ipAddresses],
    notBefore: cert.notBefore.toISOString(),
    notAfter: cert.notAfter.toISOString(),
    keyAlgorithm: key.alg,
    keyBits: key.bits,
    curve: key.curve,
    signatureAlgorithm: cert.signature.name,
    isCA: cert.basicConstraints?.cA ?? false,
    pathLen: cert.basicConstraints?.pathLen,
    keyUsage: [...(cert.keyUsage?.usages ?? [])],
    extKeyUsage: (cert.extKeyUsage ?? []).map(extKeyUsageName),
    fingerprint256: fingerprint256(cert.der),
  };
}

/** Public facts of a DER certificate; throws CertdError E_PARSE when it is not one. */
export function describeCertificate(der: Buffer): CertificateSummary {
  let parsed: ParsedCertificate;
  try {
    parsed = parseCertificate(der);
  } catch (err) {
    throw new CertdError('E_PARSE', `reading a certificate: not a valid X.509 certificate (${messageOf(err)})`, {
      cause: err,
    });
  }
  return summarize(parsed);
}
