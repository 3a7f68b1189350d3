import assert from 'node:assert/strict';
import { createPrivateKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { inspect } from 'node:util';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { isCertdError } from '../../src/errors.js';
import { encodePem, MAX_INPUT_BYTES, parseBundle, parseCertInput, parseKeyInput, splitPem } from '../../src/policy/pem.js';
import type { Bundle } from '../../src/policy/pem.js';
import { buildSmallChain } from '../fixtures/corpus.js';
import { FIPS_RUN, fixtureEnv } from '../helpers/fixture-env.js';

const chain = await buildSmallChain();
const der = (pem: string): Buffer => new X509Certificate(pem).raw;
const LEAF = der(chain.leaf);
const INT = der(chain.intermediate);
const ROOT = der(chain.root);

function assertKey(bundle: Bundle): void {
  assert.ok(bundle.keyPem, 'a key was found');
  const loaded = createPrivateKey(bundle.keyPem.reveal());
  const expected = createPrivateKey(chain.key);
  assert.ok(loaded.equals(expected), 'the key is the one given');
}

function assertParseError(input: Buffer | string, pattern: RegExp, secretMarker?: string): void {
  assert.throws(
    () => parseBundle(Buffer.isBuffer(input) ? input : Buffer.from(input)),
    (err: unknown) => {
      assert.ok(isCertdError(err, 'E_PARSE'), `expected E_PARSE, got ${String(err)}`);
      assert.match(err.message, pattern);
      if (secretMarker) assert.ok(!err.message.includes(secretMarker), 'the message quotes the input');
      return true;
    },
  );
}

describe('parseBundle: PEM', () => {
  it('takes key and certificates in any order and keeps the certificate order', () => {
    for (const parts of [
      [chain.key, chain.leaf, chain.intermediate],
      [chain.leaf, chain.key, chain.intermediate],
      [chain.leaf, chain.intermediate, chain.key],
    ]) {
      const bundle = parseBundle(Buffer.from(parts.join('')));
      assert.deepEqual(bundle.certs, [LEAF, INT]);
      assertKey(bundle);
    }
  });

  it('does not reorder a reversed chain (P-CHAIN-ORDER judges it)', () => {
    const bundle = parseBundle(Buffer.from(chain.root + chain.intermediate + chain.leaf));
    assert.deepEqual(bundle.certs, [ROOT, INT, LEAF]);
    assert.equal(bundle.keyPem, undefined);
  });

  it('ignores Bag Attributes, other text, CRLF line ends and EC PARAMETERS blocks', () => {
    const text =
      'Bag Attributes\n    localKeyID: 01 02 03\nsubject=CN = small.example.test\n\n' +
      chain.leaf +
      'Bag Attributes\n    friendlyName: ca\n' +
      chain.intermediate +
      '-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n' +
      chain.key;
    const bundle = parseBundle(Buffer.from(text.replace(/\n/g, '\r\n')));
    assert.deepEqual(bundle.certs, [LEAF, INT]);
    assertKey(bundle);
  });

  it('takes a key alone (validate --key)', () => {
    const bundle = parseBundle(Buffer.from(chain.key));
    assert.deepEqual(bundle.certs, []);
    assertKey(bundle);
  });

  it('keeps the key behind a Secret that prints redacted', () => {
    const bundle = parseBundle(Buffer.from(chain.leaf + chain.key));
    assert.ok(bundle.keyPem);
    assert.equal(JSON.stringify({ k: bundle.keyPem }), '{"k":"[redacted]"}');
    assert.ok(!inspect(bundle).includes('PRIVATE KEY'));
  });

  it('keeps the RFC 1421 headers of a legacy encrypted key so that P-KEY-PEM can see them', () => {
    // Made by the system openssl outside FIPS mode: the legacy PEM encryption derives its key with MD5.
    const plain = execFileSync('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout'], { env: fixtureEnv() });
    const privateKey = execFileSync('openssl', ['ec', '-aes128', '-passout', 'pass:x'], { input: plain, env: fixtureEnv(), encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
    const [block] = splitPem(privateKey);
    assert.equal(block?.label, 'EC PRIVATE KEY');
    assert.equal(block?.headers['Proc-Type'], '4,ENCRYPTED');
    const bundle = parseBundle(Buffer.from(chain.leaf + privateKey));
    assert.match(bundle.keyPem?.revealString() ?? '', /Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,/);
    // In FIPS mode the MD5 key derivation is refused: such a key cannot be used there at all.
    if (FIPS_RUN) assert.throws(() => createPrivateKey({ key: bundle.keyPem?.reveal() ?? '', passphrase: 'x' }), /unsupported/);
    else assert.ok(createPrivateKey({ key: bundle.keyPem?.reveal() ?? '', passphrase: 'x' }));
  });

  it('encodePem and splitPem round-trip', () => {
    const [block] = splitPem(encodePem('CERTIFICATE', LEAF));
    assert.equal(block?.label, 'CERTIFICATE');
    assert.deepEqual(block?.der, LEAF);
  });
});

describe('parseBundle: JSON', () => {
  const expectFull = (json: unknown, certs: Buffer[] = [LEAF, INT, ROOT]): void => {
    const bundle = parseBundle(Buffer.from(JSON.stringify(json)));
    assert.deepEqual(bundle.certs, certs);
    assertKey(bundle);
  };

  it("reads certd's fields", () => {
    expectFull({ certificate: chain.leaf, private_key: chain.key, chain: chain.intermediate + chain.root });
  });

  it('reads the aliases cert/key/ca and crt', () => {
    expectFull({ cert: chain.leaf, key: chain.key, ca: [chain.intermediate, chain.root] });
    expectFull({ crt: chain.leaf, key: chain.key, ca: chain.intermediate }, [LEAF, INT]);
  });

  it("reads ACM's export (Certificate, PrivateKey, CertificateChain)", () => {
    expectFull({ Certificate: chain.leaf, PrivateKey: chain.key, CertificateChain: chain.intermediate + chain.root });
  });

  it('reads PEM whose newlines were escaped twice', () => {
    const flat = (s: string): string => s.replace(/\n/g, '\\n');
    expectFull({ certificate: flat(chain.leaf), private_key: flat(chain.key), chain: [flat(chain.intermediate), flat(chain.root)] });
  });

  it('ignores unknown fields and tolerates a missing chain', () => {
    expectFull({ certificate: chain.leaf, private_key: chain.key, version: 3, note: 'x' }, [LEAF]);
  });

  it('refuses ambiguous, mistyped or misplaced fields', () => {
    assertParseError(JSON.stringify({ cert: chain.leaf, certificate: chain.leaf }), /both "certificate" and "cert"/);
    assertParseError(JSON.stringify({ certificate: 42 }), /"certificate" is not a string/);
    assertParseError(JSON.stringify({ certificate: chain.leaf, private_key: chain.leaf }), /"private_key" holds a certificate/);
    assertParseError(JSON.stringify({ name: 'x' }), /no certificate/);
    assertParseError(JSON.stringify({ certificate: 'not pem' }), /holds no PEM block/);
    assertParseError('[1,2]', /neither PEM, JSON/);
  });

  it('says only "not valid JSON" for broken JSON, never quoting it', () => {
    assertParseError('{"private_key": "SECRET-MARKER-123", ', /not valid JSON/, 'SECRET-MARKER-123');
  });
});

describe('parseBundle: DER', () => {
  it('reads a single DER certificate', () => {
    const bundle = parseBundle(LEAF);
    assert.deepEqual(bundle.certs, [LEAF]);
    assert.equal(bundle.keyPem, undefined);
  });

  it('refuses truncated DER', () => {
    assertParseError(LEAF.subarray(0, LEAF.length - 10), /not a valid X\.509 certificate/);
  });
});

describe('parseBundle: P-PARSE', () => {
  it('refuses empty and blank input', () => {
    assertParseError('', /empty/);
    assertParseError(' \n\t\n', /empty/);
  });

  it('refuses input over 1 MiB, and takes up to 1 MiB', () => {
    const padding = '#'.repeat(MAX_INPUT_BYTES - chain.leaf.length);
    assert.equal(parseBundle(Buffer.from(chain.leaf + padding)).certs.length, 1);
    assertParseError(chain.leaf + padding + '#', /limit is 1048576/);
  });

  it('refuses garbage without quoting it', () => {
    assertParseError('SECRET-MARKER-123 is not a certificate', /neither PEM, JSON nor a DER/, 'SECRET-MARKER-123');
    const bytes = Buffer.from([0x30, 0x82, 0x01, 0x00, 0xde, 0xad]);
    assertParseError(bytes, /not a valid X\.509/);
  });

  it('refuses PEM cut short (BEGIN without END)', () => {
    assertParseError(chain.leaf.slice(0, 200), /no END line/);
    assertParseError(chain.leaf.slice(0, 200) + chain.intermediate, /block 1 \(CERTIFICATE\) has no END line/);
  });

  it('refuses bad base64 and mismatched END labels', () => {
    assertParseError('-----BEGIN CERTIFICATE-----\nMII*&^\n-----END CERTIFICATE-----\n', /not valid base64/);
    assertParseError('-----BEGIN CERTIFICATE-----\nMIIB\n-----END PRIVATE KEY-----\n', /different label/);
  });

  it('refuses a CERTIFICATE block that holds no certificate', () => {
    assertParseError(encodePem('CERTIFICATE', Buffer.from('hello world')), /certificate 1 is not a valid X\.509/);
  });

  it('refuses two private keys', () => {
    assertParseError(chain.leaf + chain.key + chain.key, /more than one private key/);
  });

  it('never puts key bytes into an error', () => {
    const keyLine = chain.key.split('\n')[1] as string;
    const broken = chain.leaf + chain.key + chain.key.slice(0, 120);
    assertParseError(broken, /no END line/, keyLine.slice(0, 24));
  });
});

describe('key and certificate inputs: DER keys, swapped files', () => {
  const where = 'reading private key of web: /etc/certd/web.key';
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const ec = createPrivateKey(chain.key);

  it('reads a DER private key as PKCS#8, SEC 1 (EC) or PKCS#1 (RSA), as the same key', () => {
    for (const [key, type] of [[ec, 'pkcs8'], [ec, 'sec1'], [rsa, 'pkcs8'], [rsa, 'pkcs1']] as const) {
      const der = key.export({ format: 'der', type } as never) as Buffer;
      const pem = parseKeyInput(der, where);
      assert.ok(createPrivateKey(pem.reveal()).equals(key), `${type} ${key.asymmetricKeyType}`);
      assert.match(pem.revealString(), type === 'pkcs8' ? /^-{5}BEGIN PRIVATE KEY-{5}/ : type === 'sec1' ? /^-{5}BEGIN EC PRIVATE KEY-{5}/ : /^-{5}BEGIN RSA PRIVATE KEY-{5}/);
    }
  });

  it('still reads a PEM key, and bundle bytes that hold a DER key', () => {
    assert.ok(createPrivateKey(parseKeyInput(Buffer.from(chain.key), where).reveal()).equals(ec));
    const bundle = parseBundle(ec.export({ format: 'der', type: 'pkcs8' }) as Buffer);
    assert.ok(bundle.keyPem && createPrivateKey(bundle.keyPem.reveal()).equals(ec));
    assert.deepEqual(bundle.certs, []);
  });

  it('a key file that holds a certificate says the files look swapped, naming the file', () => {
    for (const input of [Buffer.from(chain.leaf), LEAF]) {
      assert.throws(() => parseKeyInput(input, where), (err: unknown) => {
        assert.ok(isCertdError(err, 'E_PARSE'));
        assert.match(err.message, /^reading private key of web: \/etc\/certd\/web\.key holds a certificate, not a private key: are the certificate and key swapped\?/);
        return true;
      });
    }
  });

  it('a certificate file that holds only a key says the files look swapped, without key bytes', () => {
    const certWhere = 'reading certificate of web: /etc/certd/web.crt';
    const der = ec.export({ format: 'der', type: 'pkcs8' }) as Buffer;
    for (const input of [Buffer.from(chain.key), der]) {
      assert.throws(() => parseCertInput(input, certWhere), (err: unknown) => {
        assert.ok(isCertdError(err, 'E_PARSE'));
        assert.match(err.message, /^reading certificate of web: \/etc\/certd\/web\.crt holds a private key, not a certificate: are the certificate and key swapped\?/);
        assert.ok(!err.message.includes(chain.key.split('\n')[1] as string));
        return true;
      });
    }
  });

  it('garbage in a key file names the file', () => {
    for (const input of [Buffer.from([0x30, 0x03, 0x02, 0x01, 0x07]), Buffer.from('not a key')]) {
      assert.throws(() => parseKeyInput(input, where), (err: unknown) => {
        assert.ok(isCertdError(err, 'E_PARSE'));
        assert.match(err.message, /^reading private key of web: \/etc\/certd\/web\.key: /);
        return true;
      });
    }
  });
});
