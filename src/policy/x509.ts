/**
 * X.509 certificates as the policy sees them. The DER is decoded with @peculiar/asn1-x509 (Node's
 * X509Certificate hides key-usage bits, pathLen, explicit curve parameters and, on Node 20, the
 * signature algorithm): cut into its elements, the parts many certificates share decoded once
 * per distinct encoding, the per-certificate parts in the plain forms CAs write read directly.
 * OpenSSL (what nginx reads certificates with) must accept every certificate too: Node's
 * X509Certificate is built once per distinct certificate to ask it, and dropped; the few places
 * that need OpenSSL's own view again (rare algorithms, name canonicalisation, public roots) build
 * it again on first use. Signatures made with the common
 * algorithms are checked with `crypto.verify` over the to-be-signed bytes and the issuer's key,
 * decoded once per issuer; the others with X509Certificate.verify.
 */
import { isUtf8 } from 'node:buffer';
import { createHash, createPublicKey, type KeyObject, verify, X509Certificate } from 'node:crypto';
import { AsnConvert, AsnIntegerArrayBufferConverter, AsnProp, AsnPropTypes, AsnType, AsnTypeTypes } from '@peculiar/asn1-schema';
import {
  AlgorithmIdentifier,
  BasicConstraints,
  ExtendedKeyUsage,
  Extension,
  KeyUsage,
  Name,
  SubjectAlternativeName,
  Validity,
} from '@peculiar/asn1-x509';
import type { KeyUsageType } from '@peculiar/asn1-x509';
import { ECParameters } from '@peculiar/asn1-ecc';
import { RsaSaPssParams } from '@peculiar/asn1-rsa';
import { CertdError, messageOf } from '../errors.js';
import { derChildren, derValue } from './der.js';
import { parseNameConstraints } from './name-constraints.js';
import type { NameConstraints } from './name-constraints.js';
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
  /**
   * The canonical attributes in sorted order, when every value is text read as such: two names
   * whose attributes differ here cannot match under OpenSSL's canonicalisation either (it
   * rewrites each value alone and only reorders within a multi-valued RDN).
   */
  readonly attributes: string | undefined;
  readonly der: Buffer;
  /** The last CN attribute, if any: what people call the certificate. */
  readonly commonName: string | undefined;
}

export interface ParsedCertificate {
  readonly der: Buffer;
  /**
   * OpenSSL's view of the same bytes (a certificate OpenSSL refuses does not decode), built on
   * first use. Kept only by the rare paths that ask for it: each one holds a few kilobytes of
   * OpenSSL's memory that V8 does not see, so a decoded certificate does not carry one by
   * default (with 1,000 of them alive for a cycle, that memory left ~5 MiB of fragmented C heap
   * the idle daemon kept).
   */
  readonly x509: X509Certificate;
  /** The subject public key as a KeyObject, built on first use (throws when it does not load). */
  readonly publicKey: KeyObject;
  /** The to-be-signed bytes (TBSCertificate DER), the signature and whether it is verifiable as is. */
  readonly signed: SignedPart;
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
  /** From the first subjectAltName (a second one is listed in duplicateExtensions). */
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
  /** The CA's name constraints (RFC 5280 4.2.1.10), when it has them. */
  readonly nameConstraints: NameConstraints | undefined;
  /** OIDs of extensions that appear more than once (RFC 5280 4.2 forbids it); the first is read. */
  readonly duplicateExtensions: readonly string[];
  /** OIDs of extensions marked critical that certd (and OpenSSL's verifier) does not process. */
  readonly unknownCriticalExtensions: readonly string[];
  /** The subjectPublicKey BIT STRING's octets (for an EC key: the encoded point). */
  readonly subjectPublicKey: Buffer;
  /** Subject and issuer names are equal. */
  readonly selfIssued: boolean;
  /** Self-issued and its signature verifies with its own key. */
  readonly selfSigned: boolean;
  /** subjectKeyIdentifier's value, when present. */
  readonly subjectKeyId: Buffer | undefined;
  /** authorityKeyIdentifier's keyIdentifier, when present. */
  readonly authorityKeyId: Buffer | undefined;
}

export interface SignedPart {
  readonly tbs: Buffer;
  /** The signature BIT STRING's bytes. */
  readonly value: Buffer;
  /**
   * The outer signatureAlgorithm equals the TBS's signature field byte for byte and the BIT
   * STRING has no unused bits: what OpenSSL's X509_verify requires before it looks at the key.
   */
  readonly wellFormed: boolean;
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

/** One attribute of a distinguished name, in DER order. */
interface NameAttribute {
  readonly type: string;
  readonly value: string;
  /** False when the value is not text read as such (hex of an unknown type, T.61 bytes). */
  readonly textual: boolean;
}

function parseName(attributes: readonly NameAttribute[], der: Buffer): ParsedName {
  const parts: string[] = [];
  const canonical: string[] = [];
  let commonName: string | undefined;
  let textual = true;
  for (const { type, value, textual: isText } of attributes) {
    if (type === '2.5.4.3') commonName = value;
    // Printed as hex, or a T.61 string read byte for byte: OpenSSL may still match it.
    if (!isText) textual = false;
    parts.push(`${attributeName(type)}=${value}`);
    canonical.push(`${type}=${value.trim().replace(/\s+/g, ' ').toLowerCase()}`);
  }
  return {
    text: parts.join(', '),
    canonical: canonical.join('\u0000'),
    attributes: textual ? [...canonical].sort().join('\u0000') : undefined,
    der,
    commonName,
  };
}

function schemaAttributes(name: Name): NameAttribute[] {
  return name.flatMap((rdn) =>
    rdn.map((atv) => ({ type: atv.type, value: atv.value.toString(), textual: atv.value.anyValue === undefined && atv.value.teletexString === undefined })),
  );
}

/** Dotted form of an OID's DER content; undefined when malformed. */
function oidText(content: Buffer): string | undefined {
  const arcs: number[] = [];
  let n = 0;
  for (let i = 0; i < content.length; i++) {
    const b = content[i] as number;
    if (n === 0 && b === 0x80) return undefined; // a non-minimal arc
    n = n * 128 + (b & 0x7f);
    if (b & 0x80) {
      if (n > Number.MAX_SAFE_INTEGER / 128) return undefined;
      continue;
    }
    if (arcs.length === 0) arcs.push(n < 80 ? Math.floor(n / 40) : 2, n < 80 ? n % 40 : n - 80);
    else arcs.push(n);
    n = 0;
  }
  return arcs.length === 0 || (content[content.length - 1] as number) & 0x80 ? undefined : arcs.join('.');
}

/**
 * The attributes of a name whose values are all UTF8String, PrintableString or IA5String (what
 * CAs write), read without the schema: subjects differ per certificate. Undefined for any other
 * form, which the schema decodes.
 */
function simpleAttributes(tlv: Buffer): NameAttribute[] | undefined {
  const out: NameAttribute[] = [];
  for (const rdn of derChildren(tlv)) {
    if (rdn[0] !== 0x31) return undefined;
    for (const atv of derChildren(rdn)) {
      const fields = atv[0] === 0x30 ? derChildren(atv) : [];
      const [oid, value] = fields;
      if (fields.length !== 2 || oid?.[0] !== 0x06 || !value) return undefined;
      const type = oidText(derValue(oid));
      const bytes = derValue(value);
      let text: string;
      if (value[0] === 0x0c && isUtf8(bytes)) text = bytes.toString('utf8');
      else if ((value[0] === 0x13 || value[0] === 0x16) && !bytes.some((b) => b >= 0x80)) text = bytes.toString('latin1');
      else return undefined;
      if (type === undefined) return undefined;
      out.push({ type, value: text, textual: true });
    }
  }
  return out;
}

export function namesEqual(a: ParsedName, b: ParsedName): boolean {
  return a.der.equals(b.der) || a.canonical === b.canonical;
}

/** False when the names certainly differ for OpenSSL too, so that it need not be asked. */
function mayMatchInOpenSsl(a: ParsedName, b: ParsedName): boolean {
  return a.attributes === undefined || b.attributes === undefined || a.attributes === b.attributes;
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

/**
 * The subject public key's facts. `bits` is the subjectPublicKey BIT STRING's content (after
 * the unused-bits byte); an RSA key's modulus and exponent are read from it directly.
 */
function parseKey(algorithm: AlgorithmIdentifier, bits: Buffer, publicKey: () => KeyObject): KeyInfo {
  const oid = algorithm.algorithm;
  switch (oid) {
    case OID.rsaEncryption: {
      const [modulus, exponent] = derChildren(bits);
      if (!modulus || !exponent || modulus[0] !== 0x02 || exponent[0] !== 0x02) throw new Error('an RSA public key is a SEQUENCE of two INTEGERs');
      return { alg: 'RSA', bits: bitLength(derValue(modulus)), exponent: toBigInt(derValue(exponent)) };
    }
    case OID.ecPublicKey: {
      const params = algorithm.parameters;
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
      return { alg: 'DSA', bits: publicKey().asymmetricKeyDetails?.modulusLength };
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
 * Empties the cache of decoded certificates: an idle daemon has no use for it until its next
 * cycle. Parts shared by many certificates stay.
 */
export function forgetDecodedCertificates(): void {
  parsedCache.clear();
}

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

/** As X509Certificate.serialNumber prints it: big-endian hex, leading zero bytes dropped. */
function serialHex(value: Buffer): string | undefined {
  if (value.length === 0 || ((value[0] as number) & 0x80) !== 0) return undefined; // negative: OpenSSL's own wording
  let i = 0;
  while (i < value.length - 1 && value[i] === 0) i++;
  const hex = value.subarray(i).toString('hex').toUpperCase();
  return hex === '00' ? '0' : hex;
}

/** A value built on first use, once (the issuer KeyObject, the self-signature check). */
function lazy<T>(make: () => T): () => T {
  let made: { value: T } | undefined;
  return () => (made ??= { value: make() }).value;
}

/**
 * Decoded pieces that many certificates share byte for byte (an issuer's name, the extensions a
 * CA stamps on every leaf, algorithm identifiers), by their DER. Bounded: the oldest goes first.
 * Everything kept is public and immutable.
 */
class SharedParts<T> {
  private readonly entries = new Map<string, T>();
  constructor(private readonly size: number) {}

  get(tlv: Buffer, decode: (tlv: Buffer) => T): T {
    const key = tlv.toString('latin1');
    let value = this.entries.get(key);
    if (value === undefined) {
      value = decode(tlv);
      if (this.entries.size >= this.size) this.entries.delete(this.entries.keys().next().value as string);
      this.entries.set(key, value);
    }
    return value;
  }
}

const names = new SharedParts<ParsedName>(512);
const algorithms = new SharedParts<AlgorithmIdentifier>(64);
const signatures = new SharedParts<SignatureInfo>(64);
const curveKeys = new SharedParts<KeyInfo>(64);
const extensions = new SharedParts<DecodedExtension>(512);

/** What one extension contributes to a ParsedCertificate. */
type DecodedExtension =
  | { readonly id: 'basicConstraints'; readonly value: NonNullable<ParsedCertificate['basicConstraints']> }
  | { readonly id: 'keyUsage'; readonly value: NonNullable<ParsedCertificate['keyUsage']> }
  | { readonly id: 'extKeyUsage'; readonly value: readonly string[] }
  | { readonly id: 'subjectAltName'; readonly dnsNames: readonly string[]; readonly ipAddresses: readonly string[] }
  | { readonly id: 'nameConstraints'; readonly value: NameConstraints }
  | { readonly id: 'other' };

/** The extensions the policy reads, by the DER content of their OID (2.5.29.x). */
const READ_EXTENSIONS: ReadonlyMap<string, DecodedExtension['id']> = new Map([
  ['551d13', 'basicConstraints'],
  ['551d0f', 'keyUsage'],
  ['551d25', 'extKeyUsage'],
  ['551d11', 'subjectAltName'],
  ['551d1e', 'nameConstraints'],
]);

/**
 * Extensions that may be critical: the ones RFC 5280 path validation and OpenSSL's verifier
 * process (X509_supported_extension), by the DER content of their OID. A critical extension
 * outside this set makes a conforming client refuse the certificate (RFC 5280 4.2).
 */
const KNOWN_CRITICAL: ReadonlySet<string> = new Set([
  '551d0f', // keyUsage
  '551d11', // subjectAltName
  '551d13', // basicConstraints
  '551d1e', // nameConstraints
  '551d20', // certificatePolicies
  '551d21', // policyMappings
  '551d24', // policyConstraints
  '551d25', // extKeyUsage
  '551d36', // inhibitAnyPolicy
  '6086480186f8420101', // netscape-cert-type
  '2b06010505070107', // sbgp-ipAddrBlock (RFC 3779)
  '2b06010505070108', // sbgp-autonomousSysNum (RFC 3779)
  '2b0601050507010e', // proxyCertInfo (RFC 3820)
]);

/** An extension's OID (DER content, hex) and critical flag, read without the schema. */
function extensionHeader(tlv: Buffer): { oid: string; critical: boolean } {
  const fields = derChildren(tlv);
  const [oid] = fields;
  if (oid?.[0] !== 0x06 || fields.length < 2 || fields.length > 3) throw new Error('an extension is not a SEQUENCE of OID, optional BOOLEAN and OCTET STRING');
  const flag = fields.length === 3 ? fields[1] : undefined;
  if (flag !== undefined && flag[0] !== 0x01) throw new Error('an extension\'s critical field is not a BOOLEAN');
  return { oid: derValue(oid).toString('hex'), critical: flag !== undefined && derValue(flag).some((b) => b !== 0) };
}

/** The key identifier extensions (subjectKeyIdentifier 2.5.29.14, authorityKeyIdentifier 2.5.29.35), by OID content. */
const KEY_ID_EXTENSIONS: ReadonlyMap<string, 'ski' | 'aki'> = new Map([
  ['551d0e', 'ski'],
  ['551d23', 'aki'],
]);

/**
 * A key identifier extension's identifier, read by hand (the SKI differs per certificate, so the
 * shared-parts cache would only be churned by it). Undefined for other extensions and for a
 * malformed one: identifiers only help order a bundle, they decide nothing.
 */
function keyIdentifier(tlv: Buffer): { kind: 'ski' | 'aki'; id: Buffer } | undefined {
  try {
    const fields = derChildren(tlv);
    const oid = fields[0];
    if (oid?.[0] !== 0x06) return undefined;
    const kind = KEY_ID_EXTENSIONS.get(derValue(oid).toString('hex'));
    const octets = fields[fields.length - 1];
    if (kind === undefined || octets?.[0] !== 0x04) return undefined;
    const inner = derValue(octets);
    if (kind === 'ski') return inner[0] === 0x04 ? { kind, id: Buffer.from(derValue(inner)) } : undefined;
    if (inner[0] !== 0x30) return undefined;
    const keyId = derChildren(inner).find((c) => c[0] === 0x80);
    return keyId ? { kind, id: Buffer.from(derValue(keyId)) } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A subjectAltName holding DNS names only (nearly every server certificate), read without the
 * schema: its names differ per certificate, so no cache helps. Undefined for anything else
 * (IP addresses, other name forms), which the schema decodes.
 */
function dnsOnlyAltNames(extnValue: Buffer): string[] | undefined {
  if (extnValue[0] !== 0x30) return undefined;
  const names: string[] = [];
  for (const gn of derChildren(extnValue)) {
    if (gn[0] !== 0x82) return undefined;
    // Any bytes are kept, one character each as OpenSSL prints IA5String (P-SAN-SYNTAX refuses them).
    const value = derValue(gn);
    names.push(value.toString('latin1'));
  }
  return names;
}

function decodeExtension(tlv: Buffer): DecodedExtension {
  // subjectAltName differs per certificate: a DNS-only one is read by hand, wrapper included.
  const fields = derChildren(tlv);
  const [oid, critical, octets] = fields.length === 2 ? [fields[0], undefined, fields[1]] : fields;
  if (oid?.[0] === 0x06 && derValue(oid).toString('hex') === '551d11' && octets?.[0] === 0x04 && (critical === undefined || critical[0] === 0x01) && fields.length <= 3) {
    const dnsNames = dnsOnlyAltNames(derValue(octets));
    if (dnsNames) return { id: 'subjectAltName', dnsNames, ipAddresses: [] };
  }
  const ext = AsnConvert.parse(tlv, Extension);
  const value = ext.extnValue.buffer;
  switch (ext.extnID) {
    case OID.basicConstraints: {
      const bc = AsnConvert.parse(value, BasicConstraints);
      return { id: 'basicConstraints', value: { critical: ext.critical, cA: bc.cA, pathLen: bc.pathLenConstraint } };
    }
    case OID.keyUsage:
      return {
        id: 'keyUsage',
        value: {
          critical: ext.critical,
          usages: AsnConvert.parse(value, KeyUsage)
            .toJSON()
            .sort((a, b) => KEY_USAGE_ORDER.indexOf(a) - KEY_USAGE_ORDER.indexOf(b)),
        },
      };
    case OID.extKeyUsage:
      return { id: 'extKeyUsage', value: [...AsnConvert.parse(value, ExtendedKeyUsage)] };
    case OID.subjectAltName: {
      const dnsNames: string[] = [];
      const ipAddresses: string[] = [];
      for (const gn of AsnConvert.parse(value, SubjectAlternativeName)) {
        if (gn.dNSName !== undefined) dnsNames.push(gn.dNSName);
        if (gn.iPAddress !== undefined) ipAddresses.push(gn.iPAddress);
      }
      return { id: 'subjectAltName', dnsNames, ipAddresses };
    }
    case '2.5.29.30':
      return { id: 'nameConstraints', value: parseNameConstraints(toBuffer(value), ext.critical) };
    default:
      return { id: 'other' };
  }
}

/**
 * A Validity in the forms RFC 5280 4.1.2.5 prescribes (UTCTime YYMMDDHHMMSSZ, years 1950-2049;
 * GeneralizedTime YYYYMMDDHHMMSSZ), read by hand; undefined for any other form, which the schema
 * reads (or refuses) instead.
 */
function derValidity(tlv: Buffer): { notBefore: Date; notAfter: Date } | undefined {
  const times = derChildren(tlv);
  if (times.length !== 2) return undefined;
  const [notBefore, notAfter] = times.map((t) => {
    const text = derValue(t).toString('latin1');
    let m: RegExpExecArray | null;
    let year: number;
    if (t[0] === 0x17 && (m = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text))) {
      const yy = Number(m[1]);
      year = yy < 50 ? 2000 + yy : 1900 + yy;
    } else if (t[0] === 0x18 && (m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text))) {
      year = Number(m[1]);
    } else {
      return undefined;
    }
    const [mo, d, h, mi, sec] = m.slice(2).map(Number) as [number, number, number, number, number];
    const at = new Date(Date.UTC(year, mo - 1, d, h, mi, sec));
    // Date.UTC rolls 31 February over into March: such a time is not one.
    return at.getUTCMonth() === mo - 1 && at.getUTCDate() === d && h < 24 && mi < 60 && sec < 60 ? at : undefined;
  });
  return notBefore && notAfter ? { notBefore, notAfter } : undefined;
}

function schemaValidity(tlv: Buffer): { notBefore: Date; notAfter: Date } {
  const v = AsnConvert.parse(tlv, Validity);
  return { notBefore: v.notBefore.getTime(), notAfter: v.notAfter.getTime() };
}

function tagged(tlv: Buffer | undefined, tag: number, what: string): Buffer {
  if (tlv?.[0] !== tag) throw new Error(`the certificate's ${what} is missing or not of its ASN.1 type`);
  return tlv;
}

/**
 * Decodes a certificate field by field: the DER is cut into its elements here; the shared ones
 * (names, extensions, algorithm identifiers) are decoded by their @peculiar/asn1-x509 schema once
 * per distinct encoding, the per-certificate ones read directly when in their plain forms.
 */
function decodeCertificate(source: Buffer): ParsedCertificate {
  const der = Buffer.from(source);
  if (der[0] !== 0x30) throw new Error('a certificate is a SEQUENCE');
  const outer = derChildren(der);
  if (outer.length !== 3) throw new Error('a certificate is a SEQUENCE of three elements');
  const tbsTlv = tagged(outer[0], 0x30, 'tbsCertificate');
  const algTlv = tagged(outer[1], 0x30, 'signatureAlgorithm');
  const sigTlv = tagged(outer[2], 0x03, 'signatureValue');
  const tbsFields = derChildren(tbsTlv);
  let version = 1;
  if (tbsFields[0]?.[0] === 0xa0) {
    const [v, ...extra] = derChildren(tbsFields.shift() as Buffer);
    const value = derValue(tagged(v, 0x02, 'version'));
    if (extra.length > 0 || value.length !== 1) throw new Error('the certificate\'s version is not a small INTEGER');
    version = (value[0] as number) + 1;
  }
  const [serialTlv, tbsAlgTlv, issuerTlv, validityTlv, subjectTlv, spkiTlv, ...optional] = tbsFields;
  const spkiParts = derChildren(tagged(spkiTlv, 0x30, 'subjectPublicKeyInfo'));
  const spkiBits = derValue(tagged(spkiParts[1], 0x03, 'subjectPublicKey'));
  const sigBits = derValue(sigTlv);
  const signed: SignedPart = {
    tbs: tbsTlv,
    value: sigBits.subarray(1),
    wellFormed: algTlv.equals(tagged(tbsAlgTlv, 0x30, 'signature')) && sigBits[0] === 0,
  };
  // OpenSSL (what nginx reads certificates with) must accept the bytes too; it is asked once per
  // distinct certificate, here. The object dies young, and OpenSSL's copy with it.
  // (Not captured by the closures below: a captured variable lives as long as they do.)
  const openssl = new X509Certificate(der);
  const x509 = lazy(() => new X509Certificate(der));
  const validity = derValidity(tagged(validityTlv, 0x30, 'validity')) ?? schemaValidity(validityTlv as Buffer);
  let basicConstraints: ParsedCertificate['basicConstraints'];
  let keyUsage: ParsedCertificate['keyUsage'];
  let extKeyUsage: readonly string[] | undefined;
  let dnsNames: readonly string[] = [];
  let ipAddresses: readonly string[] = [];
  let nameConstraints: NameConstraints | undefined;
  const seen = new Set<string>();
  const duplicateExtensions: string[] = [];
  const unknownCriticalExtensions: string[] = [];
  let subjectKeyId: Buffer | undefined;
  let authorityKeyId: Buffer | undefined;
  for (const field of optional) {
    // [1] issuerUniqueID and [2] subjectUniqueID (v2) carry nothing the policy reads.
    if (field[0] !== 0xa3) continue;
    const [list] = derChildren(field);
    for (const tlv of derChildren(tagged(list, 0x30, 'extensions'))) {
      const header = extensionHeader(tlv);
      if (seen.has(header.oid)) {
        // The first occurrence is the one read, as OpenSSL's X509_get_ext_d2i reads it.
        duplicateExtensions.push(oidText(Buffer.from(header.oid, 'hex')) ?? header.oid);
        continue;
      }
      seen.add(header.oid);
      if (header.critical && !KNOWN_CRITICAL.has(header.oid)) unknownCriticalExtensions.push(oidText(Buffer.from(header.oid, 'hex')) ?? header.oid);
      if (!READ_EXTENSIONS.has(header.oid)) {
        const keyId = keyIdentifier(tlv);
        if (keyId?.kind === 'ski') subjectKeyId = keyId.id;
        else if (keyId?.kind === 'aki') authorityKeyId = keyId.id;
        continue;
      }
      const ext = extensions.get(tlv, decodeExtension);
      if (ext.id === 'basicConstraints') basicConstraints = ext.value;
      else if (ext.id === 'keyUsage') keyUsage = ext.value;
      else if (ext.id === 'extKeyUsage') extKeyUsage = ext.value;
      else if (ext.id === 'subjectAltName') ({ dnsNames, ipAddresses } = ext);
      else if (ext.id === 'nameConstraints') nameConstraints = ext.value;
    }
  }
  const subject = names.get(tagged(subjectTlv, 0x30, 'subject'), decodeName);
  const issuer = names.get(tagged(issuerTlv, 0x30, 'issuer'), decodeName);
  const selfIssued = namesEqual(subject, issuer);
  const spki = Buffer.from(spkiTlv as Buffer);
  const publicKey = lazy(() => createPublicKey({ key: spki, format: 'der', type: 'spki' }));
  const spkiAlgTlv = tagged(spkiParts[0], 0x30, 'subjectPublicKeyInfo algorithm');
  const spkiAlg = algorithms.get(spkiAlgTlv, decodeAlgorithm);
  const parsed: ParsedCertificate = {
    der,
    get x509() {
      return x509();
    },
    get publicKey() {
      return publicKey();
    },
    signed,
    version,
    serial: serialHex(derValue(tagged(serialTlv, 0x02, 'serialNumber'))) ?? openssl.serialNumber.toUpperCase(),
    subject,
    issuer,
    notBefore: validity.notBefore,
    notAfter: validity.notAfter,
    spki,
    // An EC key's facts are its curve's, named in the algorithm identifier: decoded once per curve.
    key: spkiAlg.algorithm === OID.ecPublicKey ? curveKeys.get(spkiAlgTlv, () => parseKey(spkiAlg, spkiBits.subarray(1), publicKey)) : parseKey(spkiAlg, spkiBits.subarray(1), publicKey),
    signature: signatures.get(algTlv, (tlv) => parseSignature(decodeAlgorithm(tlv))),
    basicConstraints,
    keyUsage,
    extKeyUsage,
    dnsNames,
    ipAddresses,
    nameConstraints,
    duplicateExtensions,
    unknownCriticalExtensions,
    subjectPublicKey: Buffer.from(spkiBits.subarray(1)),
    selfIssued,
    get selfSigned() {
      return selfSigned();
    },
    subjectKeyId,
    authorityKeyId,
  };
  const selfSigned = lazy(() => selfIssued && verifiesWith(parsed, parsed));
  return Object.freeze(parsed);
}

function decodeName(tlv: Buffer): ParsedName {
  return parseName(simpleAttributes(tlv) ?? schemaAttributes(AsnConvert.parse(tlv, Name)), Buffer.from(tlv));
}

function decodeAlgorithm(tlv: Buffer): AlgorithmIdentifier {
  return AsnConvert.parse(tlv, AlgorithmIdentifier);
}

/** Node's names for the hashes `crypto.verify` takes for RSA PKCS#1 v1.5 and ECDSA. */
const FAST_HASHES: ReadonlySet<HashName> = new Set(['sha224', 'sha256', 'sha384', 'sha512']);

/**
 * Whether `child`'s signature verifies with `parent`'s key. RSA PKCS#1 v1.5 and ECDSA with the
 * SHA-2 hashes and EdDSA (nearly every certificate) go straight to `crypto.verify`, which calls
 * the same OpenSSL primitive X509_verify does; any other algorithm or key type is left to
 * X509Certificate.verify itself.
 */
function verifiesWith(child: ParsedCertificate, parent: ParsedCertificate): boolean {
  try {
    const { family, hash } = child.signature;
    const alg = parent.key.alg;
    const fast =
      ((family === 'rsa' && alg === 'RSA') || (family === 'ecdsa' && alg === 'EC')) && hash !== undefined && FAST_HASHES.has(hash)
        ? hash
        : family === 'eddsa' && (alg === 'Ed25519' || alg === 'Ed448')
          ? null
          : undefined;
    if (fast === undefined) return child.x509.verify(parent.x509.publicKey);
    return child.signed.wellFormed && verify(fast, child.signed.tbs, parent.publicKey, child.signed.value);
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
  const named = namesEqual(child.issuer, parent.subject) || (mayMatchInOpenSsl(child.issuer, parent.subject) && child.x509.checkIssued(parent.x509));
  const result = Object.freeze({ named, signed: named && verifiesWith(child, parent) });
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

/**
 * The DNS names and IP addresses of X509Certificate.subjectAltName's text. Node quotes a value
 * holding characters that would be ambiguous there (commas, quotes, control bytes) as a JSON string.
 */
export function opensslAltNames(san: string | undefined): { dnsNames: string[]; ipAddresses: string[] } {
  const dnsNames: string[] = [];
  const ipAddresses: string[] = [];
  for (const m of (san ?? '').matchAll(/(DNS|IP Address|[A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)(?:, |$)/g)) {
    const raw = m[2] as string;
    const value = raw.startsWith('"') ? (JSON.parse(raw) as string) : raw;
    if (m[1] === 'DNS') dnsNames.push(value);
    else if (m[1] === 'IP Address') ipAddresses.push(value);
  }
  return { dnsNames, ipAddresses };
}
