/**
 * Loading a private key PEM under rule P-KEY-PEM: PKCS#8 or traditional (PKCS#1, SEC 1)
 * unencrypted, or PKCS#8 encrypted with PBES2 (PBKDF2 with an HMAC-SHA-2 PRF, AES). Legacy
 * OpenSSL encryption ("Proc-Type: 4,ENCRYPTED", an MD5-based KDF) and PBES1/PKCS#12 schemes are
 * refused: they are not FIPS-approved key protection.
 */
import { createPrivateKey } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { AsnConvert, AsnProp, AsnPropTypes, AsnType, AsnTypeTypes, OctetString } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier } from '@peculiar/asn1-x509';
import type { Secret } from '../secret.js';
import { splitPem } from './pem.js';
import type { PemBlock } from './pem.js';

const PBES2 = '1.2.840.113549.1.5.13';
const PBKDF2 = '1.2.840.113549.1.5.12';
const HMAC_SHA1 = '1.2.840.113549.2.7';

const APPROVED_PRF: Readonly<Record<string, string>> = {
  '1.2.840.113549.2.9': 'hmacWithSHA256',
  '1.2.840.113549.2.10': 'hmacWithSHA384',
  '1.2.840.113549.2.11': 'hmacWithSHA512',
  '1.2.840.113549.2.13': 'hmacWithSHA512-256',
};

const APPROVED_CIPHERS: Readonly<Record<string, string>> = {
  '2.16.840.1.101.3.4.1.2': 'aes-128-cbc',
  '2.16.840.1.101.3.4.1.22': 'aes-192-cbc',
  '2.16.840.1.101.3.4.1.42': 'aes-256-cbc',
  '2.16.840.1.101.3.4.1.6': 'aes-128-gcm',
  '2.16.840.1.101.3.4.1.26': 'aes-192-gcm',
  '2.16.840.1.101.3.4.1.46': 'aes-256-gcm',
};

// The schemas are declared by calling the decorators: the project compiles without
// experimentalDecorators, and these are the only ASN.1 types @peculiar does not ship.

/** EncryptedPrivateKeyInfo ::= SEQUENCE { encryptionAlgorithm AlgorithmIdentifier, encryptedData OCTET STRING } */
class EncryptedPrivateKeyInfo {
  encryptionAlgorithm = new AlgorithmIdentifier();
  encryptedData = new OctetString();
}
AsnType({ type: AsnTypeTypes.Sequence })(EncryptedPrivateKeyInfo);
AsnProp({ type: AlgorithmIdentifier })(EncryptedPrivateKeyInfo.prototype, 'encryptionAlgorithm');
AsnProp({ type: OctetString })(EncryptedPrivateKeyInfo.prototype, 'encryptedData');

/** PBES2-params ::= SEQUENCE { keyDerivationFunc AlgorithmIdentifier, encryptionScheme AlgorithmIdentifier } */
class Pbes2Params {
  keyDerivationFunc = new AlgorithmIdentifier();
  encryptionScheme = new AlgorithmIdentifier();
}
AsnType({ type: AsnTypeTypes.Sequence })(Pbes2Params);
AsnProp({ type: AlgorithmIdentifier })(Pbes2Params.prototype, 'keyDerivationFunc');
AsnProp({ type: AlgorithmIdentifier })(Pbes2Params.prototype, 'encryptionScheme');

/**
 * PBKDF2-params ::= SEQUENCE { salt OCTET STRING, iterationCount INTEGER,
 *   keyLength INTEGER OPTIONAL, prf AlgorithmIdentifier DEFAULT hmacWithSHA1 }
 * (the otherSource choice of salt is reserved and never used.)
 */
class Pbkdf2Params {
  salt = new OctetString();
  iterationCount = 0;
  keyLength?: number;
  prf?: AlgorithmIdentifier;
}
AsnType({ type: AsnTypeTypes.Sequence })(Pbkdf2Params);
AsnProp({ type: OctetString })(Pbkdf2Params.prototype, 'salt');
AsnProp({ type: AsnPropTypes.Integer })(Pbkdf2Params.prototype, 'iterationCount');
AsnProp({ type: AsnPropTypes.Integer, optional: true })(Pbkdf2Params.prototype, 'keyLength');
AsnProp({ type: AlgorithmIdentifier, optional: true })(Pbkdf2Params.prototype, 'prf');

const REENCRYPT =
  're-encrypt it with "openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256" or deliver it unencrypted over a protected channel';

/** Why an encrypted PKCS#8 key's protection is not acceptable, or undefined when it is. */
export function pkcs8EncryptionProblem(der: Buffer): string | undefined {
  let info: EncryptedPrivateKeyInfo;
  try {
    info = AsnConvert.parse(der, EncryptedPrivateKeyInfo);
  } catch {
    return 'the ENCRYPTED PRIVATE KEY block is not an EncryptedPrivateKeyInfo structure';
  }
  const scheme = info.encryptionAlgorithm;
  if (scheme.algorithm !== PBES2 || !scheme.parameters) {
    return `the key is encrypted with ${scheme.algorithm}, not PBES2 (PKCS#5 v2): ${REENCRYPT}`;
  }
  let pbes2: Pbes2Params;
  try {
    pbes2 = AsnConvert.parse(scheme.parameters, Pbes2Params);
  } catch {
    return 'the PBES2 parameters of the encrypted key do not parse';
  }
  const kdf = pbes2.keyDerivationFunc;
  if (kdf.algorithm !== PBKDF2 || !kdf.parameters) {
    return `the key's PBES2 key derivation is ${kdf.algorithm}, not PBKDF2 (SP 800-132): ${REENCRYPT}`;
  }
  let pbkdf2: Pbkdf2Params;
  try {
    pbkdf2 = AsnConvert.parse(kdf.parameters, Pbkdf2Params);
  } catch {
    return 'the PBKDF2 parameters of the encrypted key do not parse';
  }
  const prf = pbkdf2.prf?.algorithm ?? HMAC_SHA1;
  if (!APPROVED_PRF[prf]) {
    const name = prf === HMAC_SHA1 ? 'hmacWithSHA1' : prf;
    return `the key's PBKDF2 uses ${name}; certd needs an HMAC-SHA-256/384/512 PRF: ${REENCRYPT}`;
  }
  const cipher = pbes2.encryptionScheme.algorithm;
  if (!APPROVED_CIPHERS[cipher]) {
    return `the key is encrypted with ${cipher}, not AES: ${REENCRYPT}`;
  }
  return undefined;
}

export type KeyLoad = { readonly ok: true; readonly key: KeyObject } | { readonly ok: false; readonly problem: string };

/** Loads a private key PEM under P-KEY-PEM. Never throws; the problem text holds no key bytes. */
export function loadPrivateKeyPem(pem: Secret, passphrase?: Secret): KeyLoad {
  let blocks: PemBlock[];
  try {
    blocks = splitPem(pem.revealString());
  } catch {
    return { ok: false, problem: 'the private key is not valid PEM (truncated or bad base64)' };
  }
  try {
    return judge(pem, passphrase, blocks);
  } finally {
    for (const b of blocks) b.der.fill(0);
  }
}

function judge(pem: Secret, passphrase: Secret | undefined, blocks: readonly PemBlock[]): KeyLoad {
  const keys = blocks.filter((b) => b.label.endsWith('PRIVATE KEY'));
  const block = keys[0];
  if (!block) return { ok: false, problem: 'no PRIVATE KEY block found where the private key was expected' };
  if (keys.length > 1) return { ok: false, problem: `${keys.length} private keys found where one was expected` };
  if (/ENCRYPTED/i.test(block.headers['Proc-Type'] ?? '')) {
    const cipher = block.headers['DEK-Info']?.split(',')[0] ?? 'an unknown cipher';
    return {
      ok: false,
      problem: `the key is legacy OpenSSL-encrypted PEM ("Proc-Type: 4,ENCRYPTED", ${cipher} keyed by an MD5-based KDF): ${REENCRYPT}`,
    };
  }
  const encrypted = block.label === 'ENCRYPTED PRIVATE KEY';
  if (encrypted) {
    const problem = pkcs8EncryptionProblem(block.der);
    if (problem) return { ok: false, problem };
    if (!passphrase) {
      return { ok: false, problem: 'the key is encrypted (PBES2) and no passphrase was given to load it' };
    }
  }
  try {
    const key = createPrivateKey(
      encrypted && passphrase
        ? { key: pem.reveal(), format: 'pem', passphrase: passphrase.reveal() }
        : { key: pem.reveal(), format: 'pem' },
    );
    return { ok: true, key };
  } catch {
    return {
      ok: false,
      problem: encrypted
        ? 'the encrypted key does not decrypt with the given passphrase'
        : `the ${block.label} block does not load as a private key`,
    };
  }
}
