/**
 * Issuing short-lived leaf certificates. The CA's signing operation is one small interface,
 * `CaSigner`, so that a CA key in software (local-ca), in an HSM (pkcs11-ca) or in AWS KMS
 * (kms-ca) all issue through the same code. The leaf key is generated here, in memory, and
 * leaves this process only through a target.
 */
import { createHash, generateKeyPairSync, type KeyObject, randomBytes, X509Certificate } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import {
  AlgorithmIdentifier,
  AuthorityKeyIdentifier,
  BasicConstraints,
  Certificate,
  ExtendedKeyUsage,
  Extension,
  Extensions,
  GeneralName,
  KeyIdentifier,
  KeyUsage,
  KeyUsageFlags,
  Name,
  RelativeDistinguishedName,
  AttributeTypeAndValue,
  AttributeValue,
  SubjectAlternativeName,
  SubjectKeyIdentifier,
  SubjectPublicKeyInfo,
  TBSCertificate,
  Validity,
  Version,
  id_ce_authorityKeyIdentifier,
  id_ce_basicConstraints,
  id_ce_extKeyUsage,
  id_ce_keyUsage,
  id_ce_subjectAltName,
  id_ce_subjectKeyIdentifier,
  id_kp_serverAuth,
} from '@peculiar/asn1-x509';
import type { DeployedSummary } from './contracts.js';
import { Material } from './material.js';
import { Secret } from './secret.js';

/** Signature algorithms a CA signer may produce (all FIPS 186-5 / SP 800-131A approved). */
export type SignatureAlgorithm = 'sha256WithRSAEncryption' | 'sha384WithRSAEncryption' | 'ecdsa-with-SHA256' | 'ecdsa-with-SHA384';

const SIG_OIDS: Record<SignatureAlgorithm, { oid: string; nullParams: boolean; hash: 'sha256' | 'sha384' }> = {
  sha256WithRSAEncryption: { oid: '1.2.840.113549.1.1.11', nullParams: true, hash: 'sha256' },
  sha384WithRSAEncryption: { oid: '1.2.840.113549.1.1.12', nullParams: true, hash: 'sha384' },
  'ecdsa-with-SHA256': { oid: '1.2.840.10045.4.3.2', nullParams: false, hash: 'sha256' },
  'ecdsa-with-SHA384': { oid: '1.2.840.10045.4.3.3', nullParams: false, hash: 'sha384' },
};

/**
 * A CA's signing key, wherever it lives.
 *
 * MUST: `sign(tbs)` returns the signature over the DER bytes `tbs` in X.509 form (PKCS#1 v1.5
 * bytes for RSA; a DER ECDSA-Sig-Value for EC) made with `algorithm`. `digestOf(tbs)` is what
 * an HSM or KMS signing a DIGEST is given. `certificate()` is the CA certificate (DER) whose
 * public key verifies those signatures. Errors are CertdError E_SOURCE naming the CA key.
 */
export interface CaSigner {
  readonly algorithm: SignatureAlgorithm;
  /** For messages: "local-ca:/run/certd/local-ca", "pkcs11-ca:token=ca;object=ca-key". */
  readonly description: string;
  certificate(signal: AbortSignal): Promise<Buffer>;
  sign(tbs: Buffer, signal: AbortSignal): Promise<Buffer>;
}

/** The digest of the TBS for the signer's algorithm (for HSM/KMS DIGEST signing). */
export function digestOf(algorithm: SignatureAlgorithm, tbs: Buffer): Buffer {
  return createHash(SIG_OIDS[algorithm].hash).update(tbs).digest();
}

export type LeafKeyType = 'ec-p256' | 'ec-p384' | 'rsa-2048' | 'rsa-3072' | 'rsa-4096';

export interface LeafRequest {
  dnsNames: readonly string[];
  subject?: string | undefined;
  ttlMs: number;
  keyType: LeafKeyType;
  now: Date;
}

/** A fresh leaf key, in memory: its public key (SPKI DER), PKCS#8 PEM and the KeyObject (for a CSR). */
export function generateLeafKey(keyType: LeafKeyType): { spki: Buffer; pkcs8Pem: string; rsa: boolean; privateKey: KeyObject } {
  const rsa = keyType.startsWith('rsa-');
  const { publicKey, privateKey } = rsa
    ? generateKeyPairSync('rsa', { modulusLength: Number(keyType.slice(4)), publicExponent: 65537 })
    : generateKeyPairSync('ec', { namedCurve: keyType === 'ec-p384' ? 'secp384r1' : 'prime256v1' });
  return {
    spki: publicKey.export({ type: 'spki', format: 'der' }),
    pkcs8Pem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    rsa,
    privateKey,
  };
}

export function nameFromCn(cn: string): Name {
  return new Name([
    new RelativeDistinguishedName([
      new AttributeTypeAndValue({ type: '2.5.4.3', value: new AttributeValue({ utf8String: cn }) }),
    ]),
  ]);
}

function makeExtension(oid: string, critical: boolean, value: unknown): Extension {
  return new Extension({ extnID: oid, critical, extnValue: new OctetString(AsnConvert.serialize(value)) });
}

function keyIdOf(spki: Buffer): Buffer {
  // RFC 7093 method 1: SHA-256 of the subjectPublicKey BIT STRING, truncated to 160 bits.
  const parsed = AsnConvert.parse(spki, SubjectPublicKeyInfo);
  return createHash('sha256').update(Buffer.from(parsed.subjectPublicKey)).digest().subarray(0, 20);
}

export interface TbsParams {
  serial: Buffer;
  issuer: Name;
  subject: Name;
  spki: Buffer;
  notBefore: Date;
  notAfter: Date;
  algorithm: SignatureAlgorithm;
  ca: boolean;
  dnsNames: readonly string[];
  rsaKey: boolean;
  authorityKeyId?: Buffer | undefined;
}

/** keyUsage of a TLS server leaf: digitalSignature, and keyEncipherment for an RSA key only (P-KU). */
function leafKeyUsage(rsaKey: boolean): Extension {
  return makeExtension(id_ce_keyUsage, true, new KeyUsage(KeyUsageFlags.digitalSignature | (rsaKey ? KeyUsageFlags.keyEncipherment : 0)));
}

/** serverAuth EKU and the DNS SANs of a leaf. */
function leafNameExtensions(dnsNames: readonly string[]): Extension[] {
  return [
    makeExtension(id_ce_extKeyUsage, false, new ExtendedKeyUsage([id_kp_serverAuth])),
    makeExtension(id_ce_subjectAltName, false, new SubjectAlternativeName(dnsNames.map((d) => new GeneralName({ dNSName: d })))),
  ];
}

/** The extensions a leaf's CSR asks for: the leaf's keyUsage, serverAuth and its DNS SANs. */
export function leafRequestExtensions(dnsNames: readonly string[], rsaKey: boolean): Extensions {
  return new Extensions([leafKeyUsage(rsaKey), ...leafNameExtensions(dnsNames)]);
}

/** The signature algorithm a leaf key signs its own CSR with. */
export function selfSignatureAlgorithm(key: KeyObject): SignatureAlgorithm {
  if (key.asymmetricKeyType === 'rsa') return 'sha256WithRSAEncryption';
  return key.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? 'ecdsa-with-SHA384' : 'ecdsa-with-SHA256';
}

/** The AlgorithmIdentifier of a signature algorithm (NULL parameters for RSA, none for ECDSA). */
export function algorithmIdentifier(algorithm: SignatureAlgorithm): AlgorithmIdentifier {
  const sig = SIG_OIDS[algorithm];
  return new AlgorithmIdentifier({ algorithm: sig.oid, ...(sig.nullParams ? { parameters: null } : {}) });
}

export function hashOf(algorithm: SignatureAlgorithm): 'sha256' | 'sha384' {
  return SIG_OIDS[algorithm].hash;
}

export function buildTbs(p: TbsParams): TBSCertificate {
  const extensions: Extension[] = [
    makeExtension(id_ce_basicConstraints, true, new BasicConstraints(p.ca ? { cA: true } : { cA: false })),
    p.ca
      ? makeExtension(id_ce_keyUsage, true, new KeyUsage(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign | KeyUsageFlags.digitalSignature))
      : leafKeyUsage(p.rsaKey),
    makeExtension(id_ce_subjectKeyIdentifier, false, new SubjectKeyIdentifier(keyIdOf(p.spki))),
  ];
  if (!p.ca) extensions.push(...leafNameExtensions(p.dnsNames));
  if (p.authorityKeyId) {
    extensions.push(
      makeExtension(id_ce_authorityKeyIdentifier, false, new AuthorityKeyIdentifier({ keyIdentifier: new KeyIdentifier(p.authorityKeyId) })),
    );
  }
  return new TBSCertificate({
    version: Version.v3,
    serialNumber: new Uint8Array(p.serial).buffer as ArrayBuffer,
    signature: algorithmIdentifier(p.algorithm),
    issuer: p.issuer,
    validity: new Validity({ notBefore: p.notBefore, notAfter: p.notAfter }),
    subject: p.subject,
    subjectPublicKeyInfo: AsnConvert.parse(p.spki, SubjectPublicKeyInfo),
    extensions: new Extensions(extensions),
  });
}

/** Signs a TBS with the signer and returns the certificate DER. */
export async function signTbs(tbs: TBSCertificate, signer: CaSigner, signal: AbortSignal): Promise<Buffer> {
  const tbsDer = Buffer.from(AsnConvert.serialize(tbs));
  const signature = await signer.sign(tbsDer, signal);
  const cert = new Certificate({
    tbsCertificate: tbs,
    signatureAlgorithm: tbs.signature,
    signatureValue: new Uint8Array(signature).buffer as ArrayBuffer,
  });
  return Buffer.from(AsnConvert.serialize(cert));
}

/** A random positive 128-bit serial (CA/B: at least 64 bits of entropy). */
export function randomSerial(): Buffer {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b;
}

/**
 * Issues a leaf for `req` signed by `signer`: fresh key in memory, serverAuth EKU, DNS SANs,
 * random serial, backdated one minute for clock skew. Returns Material with the CA chain.
 */
export async function issueLeaf(signer: CaSigner, req: LeafRequest, origin: string, signal: AbortSignal): Promise<Material> {
  const caDer = await signer.certificate(signal);
  const ca = AsnConvert.parse(caDer, Certificate);
  const caSki = ca.tbsCertificate.extensions?.find((e) => e.extnID === id_ce_subjectKeyIdentifier);
  const authorityKeyId = caSki ? Buffer.from(AsnConvert.parse(caSki.extnValue.buffer, SubjectKeyIdentifier).buffer) : keyIdOf(Buffer.from(AsnConvert.serialize(ca.tbsCertificate.subjectPublicKeyInfo)));
  const key = generateLeafKey(req.keyType);
  const notBefore = new Date(req.now.getTime() - 60_000);
  const notAfter = new Date(req.now.getTime() + req.ttlMs);
  const caNotAfter = new X509Certificate(caDer).validTo;
  if (notAfter.getTime() > new Date(caNotAfter).getTime()) {
    // A leaf must not outlive its CA; shorten instead of issuing something that fails P-VALID later.
    notAfter.setTime(new Date(caNotAfter).getTime());
  }
  const serial = randomSerial();
  const tbs = buildTbs({
    serial,
    issuer: ca.tbsCertificate.subject,
    subject: nameFromCn(req.subject ?? req.dnsNames[0] ?? 'certd'),
    spki: key.spki,
    notBefore,
    notAfter,
    algorithm: signer.algorithm,
    ca: false,
    dnsNames: req.dnsNames,
    rsaKey: key.rsa,
    authorityKeyId,
  });
  const leaf = await signTbs(tbs, signer, signal);
  return new Material({
    certs: [leaf, caDer],
    key: { kind: 'pem', pem: new Secret(key.pkcs8Pem) },
    version: `serial:${serial.toString('hex')}`,
    origin,
  });
}

/** A self-signed CA certificate for a signer whose key has public key `spki`. */
export async function selfSignedCa(signer: CaSigner, spki: Buffer, cn: string, lifetimeMs: number, now: Date, signal: AbortSignal): Promise<Buffer> {
  const name = nameFromCn(cn);
  const tbs = buildTbs({
    serial: randomSerial(),
    issuer: name,
    subject: name,
    spki,
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + lifetimeMs),
    algorithm: signer.algorithm,
    ca: true,
    dnsNames: [],
    rsaKey: false,
  });
  return signTbs(tbs, signer, signal);
}

/**
 * When an issued certificate is due: `renewBeforeMs` before expiry or at 2/3 of its lifetime,
 * whichever comes first. A margin as long as the lifetime itself (renew_before 30d on a 24h
 * certificate) would mean "renew at once, forever", so it applies only when shorter.
 */
export function renewalDue(deployed: DeployedSummary, renewBeforeMs: number): Date {
  const nb = new Date(deployed.notBefore).getTime();
  const na = new Date(deployed.notAfter).getTime();
  const twoThirds = nb + ((na - nb) * 2) / 3;
  const margin = renewBeforeMs < na - nb ? na - renewBeforeMs : twoThirds;
  return new Date(Math.min(twoThirds, margin));
}
