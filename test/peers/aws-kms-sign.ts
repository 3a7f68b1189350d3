// KMS signing over a message or over a digest the caller already computed (MessageType DIGEST).
// node:crypto always hashes what it signs, so the digest forms are built from primitives:
// RSA PKCS#1 v1.5 pads a DigestInfo and exponentiates with privateEncrypt; RSA-PSS encodes
// EMSA-PSS (RFC 8017 §9.1.1, salt as long as the hash, as KMS does) and exponentiates raw;
// ECDSA takes k·G from native ECDH and finishes (r, s) with BigInt arithmetic mod n.
import {
  constants, createECDH, createHash, randomBytes, privateEncrypt, sign as nodeSign, type KeyObject,
} from 'node:crypto';

export const SIGNING_ALGORITHMS = [
  'RSASSA_PSS_SHA_256', 'RSASSA_PSS_SHA_384', 'RSASSA_PSS_SHA_512',
  'RSASSA_PKCS1_V1_5_SHA_256', 'RSASSA_PKCS1_V1_5_SHA_384', 'RSASSA_PKCS1_V1_5_SHA_512',
  'ECDSA_SHA_256', 'ECDSA_SHA_384',
] as const;
export type SigningAlgorithm = (typeof SIGNING_ALGORITHMS)[number];

type Hash = 'sha256' | 'sha384' | 'sha512';

export function hashOf(alg: SigningAlgorithm): Hash {
  return alg.endsWith('256') ? 'sha256' : alg.endsWith('384') ? 'sha384' : 'sha512';
}

export function digestLength(alg: SigningAlgorithm): number {
  return { sha256: 32, sha384: 48, sha512: 64 }[hashOf(alg)];
}

/** Signs `message` (hashing it first). ECDSA signatures are DER, as KMS returns them. */
export function signMessage(key: KeyObject, alg: SigningAlgorithm, message: Buffer): Buffer {
  const hash = hashOf(alg);
  if (alg.startsWith('ECDSA')) return nodeSign(hash, message, { key, dsaEncoding: 'der' });
  if (alg.startsWith('RSASSA_PSS')) {
    return nodeSign(hash, message, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: digestLength(alg) });
  }
  return nodeSign(hash, message, { key, padding: constants.RSA_PKCS1_PADDING });
}

/** Signs a precomputed digest of the algorithm's hash length. */
export function signDigest(key: KeyObject, alg: SigningAlgorithm, digest: Buffer): Buffer {
  if (alg.startsWith('ECDSA')) return ecdsaSignDigest(key, digest);
  if (alg.startsWith('RSASSA_PSS')) return rsaPssSignDigest(key, hashOf(alg), digest);
  return privateEncrypt({ key, padding: constants.RSA_PKCS1_PADDING }, Buffer.concat([DIGEST_INFO[hashOf(alg)], digest]));
}

// DER prefixes of DigestInfo { AlgorithmIdentifier { oid, NULL }, OCTET STRING } (RFC 8017 §9.2).
const DIGEST_INFO: Record<Hash, Buffer> = {
  sha256: Buffer.from('3031300d060960864801650304020105000420', 'hex'),
  sha384: Buffer.from('3041300d060960864801650304020205000430', 'hex'),
  sha512: Buffer.from('3051300d060960864801650304020305000440', 'hex'),
};

function rsaPssSignDigest(key: KeyObject, hash: Hash, mHash: Buffer): Buffer {
  const modBits = key.asymmetricKeyDetails?.modulusLength;
  if (modBits === undefined) throw new Error('RSA key without modulus length');
  const modLen = Math.ceil(modBits / 8);
  const emBits = modBits - 1;
  const emLen = Math.ceil(emBits / 8);
  const hLen = mHash.length;
  const sLen = hLen;
  const salt = randomBytes(sLen);
  const h = createHash(hash).update(Buffer.concat([Buffer.alloc(8), mHash, salt])).digest();
  const db = Buffer.concat([Buffer.alloc(emLen - sLen - hLen - 2), Buffer.from([0x01]), salt]);
  const mask = mgf1(hash, h, db.length);
  for (let i = 0; i < db.length; i++) db[i]! ^= mask[i]!;
  db[0]! &= 0xff >> (8 * emLen - emBits);
  const em = Buffer.concat([db, h, Buffer.from([0xbc])]);
  const block = Buffer.concat([Buffer.alloc(modLen - emLen), em]);
  return privateEncrypt({ key, padding: constants.RSA_NO_PADDING }, block);
}

function mgf1(hash: Hash, seed: Buffer, length: number): Buffer {
  const parts: Buffer[] = [];
  let total = 0;
  for (let counter = 0; total < length; counter++) {
    const c = Buffer.alloc(4);
    c.writeUInt32BE(counter);
    const block = createHash(hash).update(Buffer.concat([seed, c])).digest();
    parts.push(block);
    total += block.length;
  }
  return Buffer.concat(parts).subarray(0, length);
}

interface Curve { ecdhName: string; n: bigint; bytes: number }
const CURVES: Record<string, Curve> = {
  'P-256': {
    ecdhName: 'prime256v1',
    n: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
    bytes: 32,
  },
  'P-384': {
    ecdhName: 'secp384r1',
    n: 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
    bytes: 48,
  },
};

function ecdsaSignDigest(key: KeyObject, digest: Buffer): Buffer {
  const jwk = key.export({ format: 'jwk' });
  const curve = jwk.crv === undefined ? undefined : CURVES[jwk.crv];
  if (curve === undefined || jwk.d === undefined) throw new Error(`unsupported EC key ${String(jwk.crv)}`);
  const { n, bytes } = curve;
  const d = toBigInt(Buffer.from(jwk.d, 'base64url'));
  // FIPS 186-4 §6.4: use the leftmost bits of the digest, as many as n has.
  const nBits = n.toString(2).length;
  let z = toBigInt(digest);
  if (digest.length * 8 > nBits) z >>= BigInt(digest.length * 8 - nBits);
  const ecdh = createECDH(curve.ecdhName);
  for (;;) {
    const k = toBigInt(randomBytes(bytes + 8)) % (n - 1n) + 1n;
    ecdh.setPrivateKey(toBuffer(k, bytes));
    const point = ecdh.getPublicKey(); // 0x04 || x || y, that is k·G
    const r = toBigInt(point.subarray(1, 1 + bytes)) % n;
    if (r === 0n) continue;
    const s = (modPow(k, n - 2n, n) * ((z + r * d) % n)) % n;
    if (s === 0n) continue;
    return derSequence([derInteger(r), derInteger(s)]);
  }
}

function toBigInt(b: Buffer): bigint {
  return b.length === 0 ? 0n : BigInt(`0x${b.toString('hex')}`);
}

function toBuffer(v: bigint, length: number): Buffer {
  return Buffer.from(v.toString(16).padStart(length * 2, '0'), 'hex');
}

function modPow(base: bigint, exp: bigint, mod: bigint): bigint {
  let result = 1n;
  let b = base % mod;
  let e = exp;
  while (e > 0n) {
    if (e & 1n) result = (result * b) % mod;
    b = (b * b) % mod;
    e >>= 1n;
  }
  return result;
}

function derInteger(v: bigint): Buffer {
  let hex = v.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  let body = Buffer.from(hex, 'hex');
  if (body[0]! & 0x80) body = Buffer.concat([Buffer.from([0]), body]);
  return Buffer.concat([Buffer.from([0x02]), derLength(body.length), body]);
}

function derSequence(items: Buffer[]): Buffer {
  const body = Buffer.concat(items);
  return Buffer.concat([Buffer.from([0x30]), derLength(body.length), body]);
}

function derLength(len: number): Buffer {
  return len < 0x80 ? Buffer.from([len]) : Buffer.from([0x81, len]);
}
