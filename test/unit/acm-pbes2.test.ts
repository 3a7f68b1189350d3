// How the acm source reads the encryption of an exported key (PKCS#8 EncryptedPrivateKeyInfo)
// and what it refuses in FIPS mode. Keys are encrypted by the openssl CLI with each scheme, so
// the parser reads what OpenSSL writes, not what the test thinks it writes.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import { acmVersion, encryptionOf, fipsRefusal } from '../../providers/acm.js';

const plain = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;

/** DER of the key encrypted by `openssl pkcs8 -topk8` with `args`. */
function encrypted(args: string[]): Buffer {
  return execFileSync('openssl', ['pkcs8', '-topk8', '-outform', 'DER', '-passout', 'pass:certd-test-passphrase', ...args], { input: plain });
}

describe('acm: the encryption of an exported key', () => {
  it('reads PBES2 / PBKDF2 / PRF / cipher / iterations as openssl wrote them, and accepts AES-CBC with HMAC-SHA-2', () => {
    for (const [cipher, prf] of [['aes-256-cbc', 'hmacWithSHA256'], ['aes-128-cbc', 'hmacWithSHA512'], ['aes-192-cbc', 'hmacWithSHA384']] as const) {
      const enc = encryptionOf(encrypted(['-v2', cipher, '-v2prf', prf, '-iter', '2048']));
      assert.deepEqual(enc, { scheme: 'PBES2', kdf: 'PBKDF2', prf, cipher, iterations: 2048 });
      assert.equal(fipsRefusal(enc), undefined);
    }
  });

  it('refuses in FIPS mode: 3DES, an HMAC-SHA-1 PRF, PBES1, and fewer than 1,000 iterations, saying which', () => {
    assert.match(fipsRefusal(encryptionOf(encrypted(['-v2', 'des3', '-v2prf', 'hmacWithSHA256'])))!, /its cipher is des-ede3-cbc, not AES-CBC/);
    assert.match(fipsRefusal(encryptionOf(encrypted(['-v2', 'aes-256-cbc', '-v2prf', 'hmacWithSHA1'])))!, /its PBKDF2 PRF is hmacWithSHA1; certd takes HMAC-SHA-224\/256\/384\/512 only/);
    assert.match(fipsRefusal(encryptionOf(encrypted(['-v1', 'PBE-SHA1-3DES'])))!, /it is encrypted with pbeWithSHAAnd3-KeyTripleDES-CBC \(PBES1\), not PBES2/);
    assert.match(fipsRefusal(encryptionOf(encrypted(['-v2', 'aes-256-cbc', '-v2prf', 'hmacWithSHA256', '-iter', '999'])))!, /PBKDF2 runs 999 iterations, fewer than SP 800-132's 1000/);
  });

  it('what the AWS peer exports (node:crypto, aes-256-cbc) passes', () => {
    const pem = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'abcd1234' }) as string;
    const der = Buffer.from(pem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
    const enc = encryptionOf(der);
    assert.equal(enc.cipher, 'aes-256-cbc');
    assert.equal(enc.prf, 'hmacWithSHA256');
    assert.equal(fipsRefusal(enc), undefined);
  });

  it('versions: ACM serial (colon hex) and the leaf serial (openssl hex) give the same version', () => {
    const notAfter = new Date('2027-01-02T03:04:05Z');
    assert.equal(acmVersion('0a:1b:2c', notAfter), acmVersion('0A1B2C', notAfter));
    assert.equal(acmVersion('00:ff', notAfter), 'ff/2027-01-02T03:04:05Z');
  });
});
