/**
 * PKCS#10 certification requests (RFC 2986) for a leaf key made in memory, for CAs that sign a
 * CSR rather than a TBS certificate (AWS Private CA). The request carries the subject, the
 * public key and an extensionRequest attribute with the leaf's keyUsage, serverAuth and DNS SANs
 * (what a CSR-passthrough template copies; the other templates copy the SAN), and is signed by
 * the leaf key itself.
 */
import { sign, type KeyObject } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Attribute, SubjectPublicKeyInfo } from '@peculiar/asn1-x509';
import { algorithmIdentifier, hashOf, leafRequestExtensions, nameFromCn, selfSignatureAlgorithm } from './issuer.js';
import { encodePem } from './policy/pem.js';

/** pkcs-9-at-extensionRequest */
const EXTENSION_REQUEST = '1.2.840.113549.1.9.14';

/** One DER TLV of `tag` around `content`. */
function tlv(tag: number, content: Buffer): Buffer {
  const n = content.length;
  const len = n < 0x80 ? Buffer.from([n]) : n < 0x100 ? Buffer.from([0x81, n]) : n < 0x10000 ? Buffer.from([0x82, n >> 8, n & 0xff]) : Buffer.from([0x83, n >> 16, (n >> 8) & 0xff, n & 0xff]);
  return Buffer.concat([Buffer.from([tag]), len, content]);
}

const der = (value: unknown): Buffer => Buffer.from(AsnConvert.serialize(value));

export interface CsrRequest {
  readonly key: KeyObject;
  /** The public key of `key`, SPKI DER. */
  readonly spki: Buffer;
  readonly dnsNames: readonly string[];
  /** The subject's CN (default: the first DNS name). */
  readonly subject?: string | undefined;
}

/** The DER of a CertificationRequest signed by `req.key`. */
export function buildCsr(req: CsrRequest): Buffer {
  const rsa = req.key.asymmetricKeyType === 'rsa';
  const extensions = new Attribute({ type: EXTENSION_REQUEST, values: [AsnConvert.serialize(leafRequestExtensions(req.dnsNames, rsa))] });
  const info = tlv(0x30, Buffer.concat([
    Buffer.from([0x02, 0x01, 0x00]), // version v1 (0)
    der(nameFromCn(req.subject ?? req.dnsNames[0] ?? 'certd')),
    der(AsnConvert.parse(req.spki, SubjectPublicKeyInfo)),
    // attributes [0] IMPLICIT SET OF Attribute
    tlv(0xa0, der(extensions)),
  ]));
  const algorithm = selfSignatureAlgorithm(req.key);
  const signature = sign(hashOf(algorithm), info, req.key);
  return tlv(0x30, Buffer.concat([info, der(algorithmIdentifier(algorithm)), tlv(0x03, Buffer.concat([Buffer.from([0]), signature]))]));
}

export function csrPem(der: Buffer): string {
  return encodePem('CERTIFICATE REQUEST', der);
}
