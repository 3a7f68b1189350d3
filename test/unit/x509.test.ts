/**
 * The certificate decoder against OpenSSL's own reading of the same bytes: every certificate of
 * the policy corpus (RSA, RSA-PSS, P-256/384/521, Ed25519, DSA, explicit curves, SHA-1 and MD5
 * signatures, tampered signatures) and hand-made edge cases. Signatures are checked with
 * crypto.verify for the common algorithms; the answer must be X509Certificate.verify's, always.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parseBundle } from '../../src/policy/pem.js';
import { checkPolicy } from '../../src/policy/check.js';
import { DEFAULT_POLICY } from '../../src/policy/types.js';
import { issuance, opensslAltNames, parseCertificate } from '../../src/policy/x509.js';
import { Material } from '../../src/material.js';
import { Secret } from '../../src/secret.js';
import { buildCorpus } from '../fixtures/corpus.js';
import { genKey, openssl } from '../helpers/pki.js';

const corpus = await buildCorpus();
const scratch = mkdtempSync(join(tmpdir(), 'certd-x509-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** Every distinct certificate the corpus holds, whatever file it sits in. */
function corpusCertificates(): Buffer[] {
  const seen = new Map<string, Buffer>();
  for (const c of corpus.cases) {
    for (const file of [c.files.cert, c.files.chain, c.files.root]) {
      if (!file) continue;
      let certs: readonly Buffer[];
      try {
        certs = parseBundle(readFileSync(file)).certs;
      } catch {
        continue; // the cases whose point is a file that does not parse
      }
      for (const der of certs) seen.set(der.toString('base64'), der);
    }
  }
  return [...seen.values()];
}

function openSslVerifies(child: Buffer, parent: Buffer): boolean {
  try {
    return new X509Certificate(child).verify(new X509Certificate(parent).publicKey);
  } catch {
    return false;
  }
}

/** A certificate signed by `issuer` (or self-signed when absent), made by the openssl CLI. */
function makeCert(name: string, o: { key: 'ec-p256' | 'rsa-2048'; serial?: string; subject?: string; digest?: string; issuer?: { cert: string; key: string } }): { cert: string; key: string; der: Buffer } {
  const key = join(scratch, `${name}.key`);
  const cert = join(scratch, `${name}.pem`);
  genKey(key, o.key);
  const serial = ['-set_serial', o.serial ?? '0x1234'];
  const subject = o.subject ?? `/CN=${name}`;
  if (o.issuer) {
    const csr = join(scratch, `${name}.csr`);
    openssl(['req', '-new', '-key', key, '-subj', subject, '-out', csr]);
    openssl(['x509', '-req', '-in', csr, '-CA', o.issuer.cert, '-CAkey', o.issuer.key, ...serial, '-days', '30', `-${o.digest ?? 'sha256'}`, '-out', cert]);
  } else {
    openssl(['req', '-x509', '-new', '-key', key, '-subj', subject, ...serial, '-days', '30', `-${o.digest ?? 'sha256'}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign', '-out', cert]);
  }
  return { cert, key, der: parseBundle(readFileSync(cert)).certs[0] as Buffer };
}

describe('x509 decoder', () => {
  const certs = corpusCertificates();

  it('reads the corpus (sanity: it spans the algorithms the fast path and the fallback serve)', () => {
    assert.ok(certs.length >= 40, `corpus certificates: ${certs.length}`);
    const names = new Set(certs.map((d) => parseCertificate(d).signature.name));
    for (const expected of ['sha256WithRSAEncryption', 'ecdsa-with-SHA256', 'ecdsa-with-SHA384', 'sha1WithRSAEncryption']) {
      assert.ok(names.has(expected), `corpus has a ${expected} signature (has: ${[...names].join(', ')})`);
    }
    assert.ok([...names].some((n) => n.startsWith('RSASSA-PSS')), 'corpus has an RSASSA-PSS signature');
  });

  it('gives the same verdict as X509Certificate.verify for every pair of corpus certificates whose names link', () => {
    let linked = 0;
    let signed = 0;
    for (const child of certs) {
      for (const parent of certs) {
        const link = issuance(parseCertificate(child), parseCertificate(parent));
        if (!link.named) continue;
        linked++;
        const expected = openSslVerifies(child, parent);
        if (expected) signed++;
        assert.equal(link.signed, expected, `${parseCertificate(child).subject.text} by ${parseCertificate(parent).subject.text}`);
      }
    }
    assert.ok(linked >= 40 && signed >= 20, `linked pairs ${linked}, verified ${signed}`);
  });

  it('says self-signed exactly when OpenSSL verifies a self-issued certificate with its own key', () => {
    for (const der of certs) {
      const parsed = parseCertificate(der);
      assert.equal(parsed.selfSigned, parsed.selfIssued && openSslVerifies(der, der), parsed.subject.text);
    }
  });

  it('prints serial numbers as X509Certificate does', () => {
    for (const der of certs) assert.equal(parseCertificate(der).serial, new X509Certificate(der).serialNumber.toUpperCase());
    for (const serial of ['0x01', '0x0A', '0xFF', '0x7F01', '0x0100', '0x00', '0x' + 'ab'.repeat(19)]) {
      const { der } = makeCert(`serial-${serial}`, { key: 'ec-p256', serial });
      assert.equal(parseCertificate(der).serial, new X509Certificate(der).serialNumber.toUpperCase(), serial);
    }
  });

  it('reads validity as X509Certificate does, in UTCTime and in GeneralizedTime (after 2049)', () => {
    const long = makeCert('gentime', { key: 'ec-p256' });
    openssl(['req', '-x509', '-new', '-key', long.key, '-subj', '/CN=gentime', '-days', '20000', '-out', long.cert]);
    const der = parseBundle(readFileSync(long.cert)).certs[0] as Buffer;
    assert.ok(der.includes(Buffer.from([0x18, 0x0f])), 'the long certificate has a GeneralizedTime');
    for (const d of [...certs, der]) {
      const x = new X509Certificate(d);
      const parsed = parseCertificate(d);
      assert.equal(parsed.notBefore.getTime(), Date.parse(x.validFrom), parsed.subject.text);
      assert.equal(parsed.notAfter.getTime(), Date.parse(x.validTo), parsed.subject.text);
    }
    assert.ok(parseCertificate(der).notAfter.getUTCFullYear() > 2049);
  });

  it('reads subject and issuer names as X509Certificate prints them (UTF8String, PrintableString, IA5String)', () => {
    const utf8 = makeCert('names-utf8', { key: 'ec-p256', subject: '/C=DE/O=Müller & Söhne/OU=Zürich  Ops/CN=ünï.example' });
    openssl(['req', '-x509', '-new', '-key', utf8.key, '-utf8', '-subj', '/C=DE/O=Müller & Söhne/OU=Zürich  Ops/CN=ünï.example', '-days', '30', '-out', utf8.cert]);
    const printable = makeCert('names-printable', { key: 'ec-p256', subject: '/C=US/ST=Virginia/L=Reston/O=Example Agency/emailAddress=pki@example.gov/CN=printable.example' });
    const extra = [utf8.cert, printable.cert].map((f) => parseBundle(readFileSync(f)).certs[0] as Buffer);
    for (const d of [...certs, ...extra]) {
      const x = new X509Certificate(d);
      const parsed = parseCertificate(d);
      assert.equal(parsed.subject.text, x.subject.split('\n').join(', '), 'subject');
      assert.equal(parsed.issuer.text, x.issuer.split('\n').join(', '), 'issuer');
    }
    assert.equal(parseCertificate(extra[0] as Buffer).subject.commonName, 'ünï.example');
  });

  it('lists DNS and IP subject alternative names as X509Certificate does', () => {
    let withIp = 0;
    for (const d of certs) {
      const parsed = parseCertificate(d);
      // OpenSSL reads no subjectAltName at all when there are two (P-EXT-DUP refuses those).
      if (parsed.duplicateExtensions.length > 0) continue;
      const openssl = opensslAltNames(new X509Certificate(d).subjectAltName);
      assert.deepEqual([...parsed.dnsNames], openssl.dnsNames, parsed.subject.text);
      assert.equal(parsed.ipAddresses.length, openssl.ipAddresses.length, parsed.subject.text);
      const ips = openssl.ipAddresses;
      if (ips.length > 0) withIp++;
    }
    assert.ok(withIp > 0, 'the corpus has certificates with IP addresses (read by the schema)');
  });

  it('refuses a signature whose outer algorithm differs from the signed one, as OpenSSL does', () => {
    const root = makeCert('alg-root', { key: 'ec-p256' });
    const leaf = makeCert('alg-leaf', { key: 'ec-p256', issuer: root });
    assert.equal(issuance(parseCertificate(leaf.der), parseCertificate(root.der)).signed, true);
    // ecdsa-with-SHA256 ends in 04 03 02; the outer copy is the last one in the DER.
    const oid = Buffer.from('2a8648ce3d040302', 'hex');
    const at = leaf.der.lastIndexOf(oid);
    assert.ok(at > leaf.der.length / 2, 'the outer signatureAlgorithm is near the end');
    const tampered = Buffer.from(leaf.der);
    tampered[at + oid.length - 1] = 0x03; // ecdsa-with-SHA384
    assert.equal(openSslVerifies(tampered, root.der), false);
    assert.equal(issuance(parseCertificate(tampered), parseCertificate(root.der)).signed, false);
    assert.equal(parseCertificate(tampered).signed.wellFormed, false);
  });

  it('refuses a signature with one bit changed, for RSA and ECDSA issuers', () => {
    for (const key of ['rsa-2048', 'ec-p256'] as const) {
      const root = makeCert(`flip-root-${key}`, { key });
      const leaf = makeCert(`flip-leaf-${key}`, { key: 'ec-p256', issuer: root });
      const tampered = Buffer.from(leaf.der);
      tampered[tampered.length - 5] = (tampered[tampered.length - 5] as number) ^ 0x01;
      assert.equal(issuance(parseCertificate(leaf.der), parseCertificate(root.der)).signed, true, key);
      assert.equal(issuance(parseCertificate(tampered), parseCertificate(root.der)).signed, openSslVerifies(tampered, root.der), key);
      assert.equal(issuance(parseCertificate(tampered), parseCertificate(root.der)).signed, false, key);
    }
  });

  it('links names that differ only in case and spacing, and asks OpenSSL about RDN order it alone can judge', () => {
    const root = makeCert('names-root', { key: 'ec-p256', subject: '/O=Example  Corp/CN=Names Root' });
    const leaf = makeCert('names-leaf', { key: 'ec-p256', issuer: root });
    const other = makeCert('names-other', { key: 'ec-p256', subject: '/O=example corp/CN=names root' });
    const parsedRoot = parseCertificate(root.der);
    assert.equal(issuance(parseCertificate(leaf.der), parsedRoot).named, true);
    // Same name under canonical comparison, another key: named, not signed (OpenSSL agrees).
    const byOther = issuance(parseCertificate(leaf.der), parseCertificate(other.der));
    assert.equal(byOther.named, true);
    assert.equal(byOther.signed, openSslVerifies(leaf.der, other.der));
    assert.equal(byOther.signed, false);
    // A name with other attribute values is neither, as checkIssued says.
    const unrelated = makeCert('names-unrelated', { key: 'ec-p256', subject: '/O=Example Corp/CN=Another Root' });
    const link = issuance(parseCertificate(leaf.der), parseCertificate(unrelated.der));
    assert.equal(link.named, new X509Certificate(leaf.der).checkIssued(new X509Certificate(unrelated.der)));
    assert.equal(link.named, false);
  });

  it('verifies Ed25519 signatures as OpenSSL does, and refuses a changed one', () => {
    const key = join(scratch, 'ed.key');
    const cert = join(scratch, 'ed.pem');
    openssl(['genpkey', '-algorithm', 'ed25519', '-out', key]);
    openssl(['req', '-x509', '-new', '-key', key, '-subj', '/CN=ed25519 root', '-days', '30', '-out', cert]);
    const leaf = makeCert('ed-leaf', { key: 'ec-p256', issuer: { cert, key } });
    const root = parseBundle(readFileSync(cert)).certs[0] as Buffer;
    assert.equal(parseCertificate(leaf.der).signature.name, 'Ed25519');
    assert.equal(parseCertificate(root).selfSigned, true);
    assert.equal(issuance(parseCertificate(leaf.der), parseCertificate(root)).signed, true);
    const tampered = Buffer.from(leaf.der);
    tampered[tampered.length - 3] = (tampered[tampered.length - 3] as number) ^ 0x80;
    assert.equal(issuance(parseCertificate(tampered), parseCertificate(root)).signed, openSslVerifies(tampered, root));
    assert.equal(issuance(parseCertificate(tampered), parseCertificate(root)).signed, false);
  });

  it('keeps OpenSSL for what it alone decides: a DSA-signed certificate is judged by X509Certificate.verify', () => {
    const dsaKey = join(scratch, 'dsa.key');
    const dsaCert = join(scratch, 'dsa.pem');
    openssl(['genpkey', '-genparam', '-algorithm', 'DSA', '-pkeyopt', 'dsa_paramgen_bits:2048', '-out', join(scratch, 'dsa.param')]);
    openssl(['genpkey', '-paramfile', join(scratch, 'dsa.param'), '-out', dsaKey]);
    openssl(['req', '-x509', '-new', '-key', dsaKey, '-subj', '/CN=dsa root', '-days', '30', '-sha256', '-out', dsaCert]);
    const der = parseBundle(readFileSync(dsaCert)).certs[0] as Buffer;
    const parsed = parseCertificate(der);
    assert.equal(parsed.key.alg, 'DSA');
    assert.equal(parsed.selfSigned, openSslVerifies(der, der));
    assert.equal(parsed.selfSigned, true);
  });

  it('refuses what OpenSSL cannot read, even where the policy reads nothing (a broken OID in an extension it skips)', () => {
    const { cert } = makeCert('openssl-refuses', { key: 'ec-p256' });
    const key = join(scratch, 'openssl-refuses.key');
    openssl(['req', '-x509', '-new', '-key', key, '-subj', '/CN=refused.example', '-days', '30', '-addext', 'crlDistributionPoints=URI:http://crl.example/ca.crl', '-out', cert]);
    const der = parseBundle(readFileSync(cert)).certs[0] as Buffer;
    // 2.5.29.31 (crlDistributionPoints) -> an OID whose last arc never ends (continuation bit set).
    const at = der.indexOf(Buffer.from('0603551d1f', 'hex'));
    assert.ok(at > 0);
    const broken = Buffer.from(der);
    broken[at + 4] = 0x9f;
    assert.throws(() => new X509Certificate(broken), 'OpenSSL refuses it');
    assert.throws(() => parseCertificate(broken), 'so does certd');
    const findings = checkPolicy({ certs: [broken] }, DEFAULT_POLICY, new Date());
    assert.ok(findings.some((f) => f.rule === 'P-PARSE' && f.severity === 'reject'), JSON.stringify(findings));
  });

  it('describes a leaf in a Material as X509Certificate does, also one only OpenSSL reads (from OpenSSL then)', () => {
    const key = { kind: 'pem' as const, pem: new Secret('not read here') };
    const describe = (x: X509Certificate) => ({
      subject: x.subject.split('\n').join(', '),
      notBefore: Date.parse(x.validFrom),
      notAfter: Date.parse(x.validTo),
      dnsNames: opensslAltNames(x.subjectAltName).dnsNames,
    });
    const { der } = makeCert('material-facts', { key: 'ec-p256' });
    // basicConstraints' BOOLEAN made an OCTET STRING: OpenSSL reads the certificate (it decodes
    // extensions only when asked), the policy's decoder refuses it.
    const bc = Buffer.from('30030101ff', 'hex');
    const at = der.indexOf(bc);
    assert.ok(at > 0, 'the certificate has basicConstraints CA:TRUE');
    const odd = Buffer.from(der);
    odd[at + 2] = 0x04;
    assert.throws(() => parseCertificate(odd));
    for (const d of [...corpusCertificates(), odd]) {
      const m = new Material({ certs: [d], key, version: 'v', origin: 'test' });
      const x = new X509Certificate(d);
      assert.deepEqual({ subject: m.subject, notBefore: m.notBefore.getTime(), notAfter: m.notAfter.getTime(), dnsNames: [...m.dnsNames] }, describe(x), m.subject);
      assert.equal(m.ipAddresses.length, [...(x.subjectAltName ?? '').matchAll(/IP Address:/g)].length, m.subject);
    }
    assert.throws(() => new Material({ certs: [Buffer.from([0x30, 0x00])], key, version: 'v', origin: 'test' }), /not a valid X\.509 certificate/);
  });

  it('builds OpenSSL\'s view of a decoded certificate again when asked for it', () => {
    const { der } = makeCert('view-again', { key: 'ec-p256' });
    const parsed = parseCertificate(der);
    assert.equal(parsed.x509.fingerprint256, new X509Certificate(der).fingerprint256);
    assert.equal(parsed.x509, parsed.x509, 'built once');
  });

  it('refuses bytes that are not one whole certificate', () => {
    const { der } = makeCert('whole', { key: 'ec-p256' });
    for (const bad of [der.subarray(0, der.length - 1), Buffer.concat([der.subarray(0, 4), Buffer.from([0x05, 0x00]), der.subarray(4)]), Buffer.from([0x30, 0x00])]) {
      assert.throws(() => parseCertificate(bad));
    }
  });
});
