/**
 * The algorithm facts the policy is computed from: object identifiers of key types, curves,
 * hashes and signature algorithms, and their security strengths in bits (SP 800-57 part 1 r5,
 * tables 2 and 3; SP 800-107 for hash collision resistance).
 */

export const OID = {
  rsaEncryption: '1.2.840.113549.1.1.1',
  rsassaPss: '1.2.840.113549.1.1.10',
  ecPublicKey: '1.2.840.10045.2.1',
  dsa: '1.2.840.10040.4.1',
  ed25519: '1.3.101.112',
  ed448: '1.3.101.113',
  x25519: '1.3.101.110',
  x448: '1.3.101.111',
  mgf1: '1.2.840.113549.1.1.8',
  sha1: '1.3.14.3.2.26',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  anyExtendedKeyUsage: '2.5.29.37.0',
  serverAuth: '1.3.6.1.5.5.7.3.1',
} as const;

export type HashName =
  | 'md2' | 'md4' | 'md5' | 'sha1' | 'sha224' | 'sha256' | 'sha384' | 'sha512'
  | 'sha512-224' | 'sha512-256' | 'sha3-224' | 'sha3-256' | 'sha3-384' | 'sha3-512'
  /** EdDSA hashes inside the algorithm (SHA-512 / SHAKE256): strength is the curve's. */
  | 'intrinsic';

/** Collision resistance in bits; MD2/MD4/MD5/SHA-1 count as broken (0). */
export const HASH_STRENGTH: Readonly<Record<HashName, number>> = {
  md2: 0, md4: 0, md5: 0, sha1: 0,
  sha224: 112, 'sha512-224': 112, 'sha3-224': 112,
  sha256: 128, 'sha512-256': 128, 'sha3-256': 128,
  sha384: 192, 'sha3-384': 192,
  sha512: 256, 'sha3-512': 256,
  intrinsic: 128,
};

/** Hash algorithm OIDs as they appear in RSASSA-PSS parameters. */
export const HASH_OIDS: Readonly<Record<string, HashName>> = {
  '1.2.840.113549.2.2': 'md2',
  '1.2.840.113549.2.4': 'md4',
  '1.2.840.113549.2.5': 'md5',
  '1.3.14.3.2.26': 'sha1',
  '2.16.840.1.101.3.4.2.4': 'sha224',
  '2.16.840.1.101.3.4.2.1': 'sha256',
  '2.16.840.1.101.3.4.2.2': 'sha384',
  '2.16.840.1.101.3.4.2.3': 'sha512',
  '2.16.840.1.101.3.4.2.5': 'sha512-224',
  '2.16.840.1.101.3.4.2.6': 'sha512-256',
  '2.16.840.1.101.3.4.2.7': 'sha3-224',
  '2.16.840.1.101.3.4.2.8': 'sha3-256',
  '2.16.840.1.101.3.4.2.9': 'sha3-384',
  '2.16.840.1.101.3.4.2.10': 'sha3-512',
};

export type SignatureFamily = 'rsa' | 'rsa-pss' | 'ecdsa' | 'dsa' | 'eddsa';

export interface SignatureAlgorithm {
  readonly name: string;
  readonly family: SignatureFamily;
  /** Absent for RSASSA-PSS: the hash is in the parameters. */
  readonly hash?: HashName;
}

const sig = (name: string, family: SignatureFamily, hash?: HashName): SignatureAlgorithm =>
  hash === undefined ? { name, family } : { name, family, hash };

export const SIGNATURE_ALGORITHMS: Readonly<Record<string, SignatureAlgorithm>> = {
  '1.2.840.113549.1.1.2': sig('md2WithRSAEncryption', 'rsa', 'md2'),
  '1.2.840.113549.1.1.3': sig('md4WithRSAEncryption', 'rsa', 'md4'),
  '1.2.840.113549.1.1.4': sig('md5WithRSAEncryption', 'rsa', 'md5'),
  '1.2.840.113549.1.1.5': sig('sha1WithRSAEncryption', 'rsa', 'sha1'),
  '1.3.14.3.2.29': sig('sha1WithRSASignature', 'rsa', 'sha1'),
  '1.2.840.113549.1.1.14': sig('sha224WithRSAEncryption', 'rsa', 'sha224'),
  '1.2.840.113549.1.1.11': sig('sha256WithRSAEncryption', 'rsa', 'sha256'),
  '1.2.840.113549.1.1.12': sig('sha384WithRSAEncryption', 'rsa', 'sha384'),
  '1.2.840.113549.1.1.13': sig('sha512WithRSAEncryption', 'rsa', 'sha512'),
  '1.2.840.113549.1.1.15': sig('sha512-224WithRSAEncryption', 'rsa', 'sha512-224'),
  '1.2.840.113549.1.1.16': sig('sha512-256WithRSAEncryption', 'rsa', 'sha512-256'),
  '2.16.840.1.101.3.4.3.13': sig('RSA-SHA3-224', 'rsa', 'sha3-224'),
  '2.16.840.1.101.3.4.3.14': sig('RSA-SHA3-256', 'rsa', 'sha3-256'),
  '2.16.840.1.101.3.4.3.15': sig('RSA-SHA3-384', 'rsa', 'sha3-384'),
  '2.16.840.1.101.3.4.3.16': sig('RSA-SHA3-512', 'rsa', 'sha3-512'),
  [OID.rsassaPss]: sig('RSASSA-PSS', 'rsa-pss'),
  '1.2.840.10045.4.1': sig('ecdsa-with-SHA1', 'ecdsa', 'sha1'),
  '1.2.840.10045.4.3.1': sig('ecdsa-with-SHA224', 'ecdsa', 'sha224'),
  '1.2.840.10045.4.3.2': sig('ecdsa-with-SHA256', 'ecdsa', 'sha256'),
  '1.2.840.10045.4.3.3': sig('ecdsa-with-SHA384', 'ecdsa', 'sha384'),
  '1.2.840.10045.4.3.4': sig('ecdsa-with-SHA512', 'ecdsa', 'sha512'),
  '2.16.840.1.101.3.4.3.9': sig('ecdsa-with-SHA3-224', 'ecdsa', 'sha3-224'),
  '2.16.840.1.101.3.4.3.10': sig('ecdsa-with-SHA3-256', 'ecdsa', 'sha3-256'),
  '2.16.840.1.101.3.4.3.11': sig('ecdsa-with-SHA3-384', 'ecdsa', 'sha3-384'),
  '2.16.840.1.101.3.4.3.12': sig('ecdsa-with-SHA3-512', 'ecdsa', 'sha3-512'),
  '1.2.840.10040.4.3': sig('dsa-with-SHA1', 'dsa', 'sha1'),
  '1.3.14.3.2.27': sig('dsaWithSHA1', 'dsa', 'sha1'),
  '2.16.840.1.101.3.4.3.1': sig('dsa-with-SHA224', 'dsa', 'sha224'),
  '2.16.840.1.101.3.4.3.2': sig('dsa-with-SHA256', 'dsa', 'sha256'),
  '2.16.840.1.101.3.4.3.3': sig('dsa-with-SHA384', 'dsa', 'sha384'),
  '2.16.840.1.101.3.4.3.4': sig('dsa-with-SHA512', 'dsa', 'sha512'),
  '2.16.840.1.101.3.4.3.5': sig('dsa-with-SHA3-224', 'dsa', 'sha3-224'),
  '2.16.840.1.101.3.4.3.6': sig('dsa-with-SHA3-256', 'dsa', 'sha3-256'),
  '2.16.840.1.101.3.4.3.7': sig('dsa-with-SHA3-384', 'dsa', 'sha3-384'),
  '2.16.840.1.101.3.4.3.8': sig('dsa-with-SHA3-512', 'dsa', 'sha3-512'),
  [OID.ed25519]: sig('Ed25519', 'eddsa', 'intrinsic'),
  [OID.ed448]: sig('Ed448', 'eddsa', 'intrinsic'),
};

export type CurveVerdict = 'approved' | 'warn' | 'refused';

export interface Curve {
  readonly name: string;
  readonly bits: number;
  readonly strength: number;
  readonly verdict: CurveVerdict;
}

const curve = (name: string, bits: number, verdict: CurveVerdict): Curve => ({
  name,
  bits,
  strength: Math.floor(bits / 2),
  verdict,
});

/**
 * Named curves by OID. FIPS 186-5 / SP 800-186 keep P-256/384/521 for new signatures and
 * P-224 until 2030 (hence a warning); the rest are not approved for certd.
 */
export const CURVES: Readonly<Record<string, Curve>> = {
  '1.2.840.10045.3.1.7': curve('P-256', 256, 'approved'),
  '1.3.132.0.34': curve('P-384', 384, 'approved'),
  '1.3.132.0.35': curve('P-521', 521, 'approved'),
  '1.3.132.0.33': curve('P-224', 224, 'warn'),
  '1.2.840.10045.3.1.1': curve('P-192', 192, 'refused'),
  '1.3.132.0.10': curve('secp256k1', 256, 'refused'),
  '1.3.132.0.31': curve('secp192k1', 192, 'refused'),
  '1.3.132.0.32': curve('secp224k1', 224, 'refused'),
  '1.3.36.3.3.2.8.1.1.1': curve('brainpoolP160r1', 160, 'refused'),
  '1.3.36.3.3.2.8.1.1.3': curve('brainpoolP192r1', 192, 'refused'),
  '1.3.36.3.3.2.8.1.1.5': curve('brainpoolP224r1', 224, 'refused'),
  '1.3.36.3.3.2.8.1.1.7': curve('brainpoolP256r1', 256, 'refused'),
  '1.3.36.3.3.2.8.1.1.9': curve('brainpoolP320r1', 320, 'refused'),
  '1.3.36.3.3.2.8.1.1.11': curve('brainpoolP384r1', 384, 'refused'),
  '1.3.36.3.3.2.8.1.1.13': curve('brainpoolP512r1', 512, 'refused'),
  '1.3.132.0.1': curve('sect163k1', 163, 'refused'),
  '1.3.132.0.15': curve('sect163r2', 163, 'refused'),
  '1.3.132.0.26': curve('sect233k1', 233, 'refused'),
  '1.3.132.0.27': curve('sect233r1', 233, 'refused'),
  '1.3.132.0.16': curve('sect283k1', 283, 'refused'),
  '1.3.132.0.17': curve('sect283r1', 283, 'refused'),
  '1.3.132.0.36': curve('sect409k1', 409, 'refused'),
  '1.3.132.0.37': curve('sect409r1', 409, 'refused'),
  '1.3.132.0.38': curve('sect571k1', 571, 'refused'),
  '1.3.132.0.39': curve('sect571r1', 571, 'refused'),
};

/** SP 800-57 part 1 table 2, interpolated down for undersized keys. */
export function rsaStrength(bits: number): number {
  if (bits >= 15360) return 256;
  if (bits >= 7680) return 192;
  if (bits >= 3072) return 128;
  if (bits >= 2048) return 112;
  if (bits >= 1024) return 80;
  return 0;
}

const EKU_NAMES: Readonly<Record<string, string>> = {
  '1.3.6.1.5.5.7.3.1': 'serverAuth',
  '1.3.6.1.5.5.7.3.2': 'clientAuth',
  '1.3.6.1.5.5.7.3.3': 'codeSigning',
  '1.3.6.1.5.5.7.3.4': 'emailProtection',
  '1.3.6.1.5.5.7.3.8': 'timeStamping',
  '1.3.6.1.5.5.7.3.9': 'OCSPSigning',
  '2.5.29.37.0': 'anyExtendedKeyUsage',
};

export function extKeyUsageName(oid: string): string {
  return EKU_NAMES[oid] ?? oid;
}

const ATTRIBUTE_NAMES: Readonly<Record<string, string>> = {
  '2.5.4.3': 'CN',
  '2.5.4.6': 'C',
  '2.5.4.7': 'L',
  '2.5.4.8': 'ST',
  '2.5.4.10': 'O',
  '2.5.4.11': 'OU',
  '2.5.4.5': 'serialNumber',
  '1.2.840.113549.1.9.1': 'emailAddress',
  '0.9.2342.19200300.100.1.25': 'DC',
  '0.9.2342.19200300.100.1.1': 'UID',
};

export function attributeName(oid: string): string {
  return ATTRIBUTE_NAMES[oid] ?? oid;
}
