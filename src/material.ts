import { createHash, createPublicKey, X509Certificate } from 'node:crypto';
import { inspect } from 'node:util';
import { orderCertificates } from './chain-order.js';
import { CertdError } from './errors.js';
import type { PolicyInput, PolicyKey } from './policy/types.js';
import { parseBundle } from './policy/pem.js';
import { opensslAltNames, parseCertificate } from './policy/x509.js';
import type { Secret } from './secret.js';

/** Where the private key of a Material is. */
export type MaterialKey =
  /** The key itself, PEM, in memory only. */
  | { readonly kind: 'pem'; readonly pem: Secret }
  /**
   * The key stays in an HSM. `uri` is an RFC 7512 PKCS#11 URI without any PIN. `spki` is the
   * token's public key when it has one; `proven` is set when the source checked possession by
   * signing a challenge with the token key and verifying it with the certificate's key.
   */
  | { readonly kind: 'pkcs11'; readonly uri: string; readonly spki?: Buffer | undefined; readonly proven?: boolean | undefined };

export interface MaterialInit {
  /**
   * DER certificates in any order: Material keeps each once, the leaf first (the certificate of
   * the key), then the chain in issuer order (see chain-order.ts).
   */
  readonly certs: readonly Buffer[];
  readonly key: MaterialKey;
  /** The source's version of this material (secret VersionId, parameter version, serial...). */
  readonly version: string;
  /** Where it came from, for status and logs: "secrets-manager:prod/web". */
  readonly origin: string;
}

/** The public facts of a leaf Material keeps: subject and DNS names as X509Certificate prints them, IP addresses as the policy reads them (IPv6 compressed). */
interface LeafFacts {
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly subject: string;
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
}

/**
 * The policy's decoding of the leaf (which OpenSSL has accepted, and which a cycle asks for next
 * anyway), or OpenSSL's alone when the policy's decoder refuses the bytes: Material must still
 * describe such a leaf so that the policy can refuse it by rule. Throws when OpenSSL refuses too.
 */
function leafFacts(der: Buffer): LeafFacts {
  try {
    const p = parseCertificate(der);
    return { notBefore: new Date(p.notBefore), notAfter: new Date(p.notAfter), subject: p.subject.text, dnsNames: p.dnsNames, ipAddresses: p.ipAddresses };
  } catch {
    const x = new X509Certificate(der);
    return {
      notBefore: new Date(x.validFrom),
      notAfter: new Date(x.validTo),
      subject: x.subject.replace(/\n/g, ', '),
      ...opensslAltNames(x.subjectAltName),
    };
  }
}

/** The public key (SPKI DER) of a Material's key, when it can be known without a token; undefined when the key does not load (the policy says why). */
function keySpkiOf(key: MaterialKey): Buffer | undefined {
  if (key.kind === 'pkcs11') return key.spki && key.spki.length > 0 ? key.spki : undefined;
  try {
    return createPublicKey(key.pem.reveal()).export({ type: 'spki', format: 'der' });
  } catch {
    return undefined;
  }
}

function fingerprintOf(der: Buffer): string {
  return createHash('sha256').update(der).digest('hex').toUpperCase().replace(/(..)(?!$)/g, '$1:');
}

/** The fingerprint of the first certificate in a PEM text, or undefined when it holds none. */
export function leafFingerprintOfPem(text: string): string | undefined {
  const m = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----/.exec(text);
  return m ? fingerprintOf(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64')) : undefined;
}

function toPem(der: Buffer): string {
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}

/**
 * A certificate with its chain and key, parsed once and immutable. `toJSON` and `inspect` show
 * only public facts; the key is reachable only through `key.pem.reveal()`.
 */
export class Material {
  readonly leaf: Buffer;
  readonly chain: readonly Buffer[];
  readonly key: MaterialKey;
  readonly version: string;
  readonly origin: string;
  /** SHA-256 of the leaf DER, uppercase hex with colons (as Node's fingerprint256). */
  readonly fingerprint: string;
  /** SHA-256 over leaf and chain: changes when anything deployable but the key changes. */
  readonly digest: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly subject: string;
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];

  constructor(init: MaterialInit) {
    const certs = orderCertificates(init.certs, () => keySpkiOf(init.key));
    const [leaf, ...chain] = certs;
    if (!leaf) throw new CertdError('E_PARSE', `reading material from ${init.origin}: no certificate found`);
    let facts: LeafFacts;
    try {
      facts = leafFacts(leaf);
    } catch (err) {
      throw new CertdError('E_PARSE', `reading material from ${init.origin}: the leaf is not a valid X.509 certificate`, { cause: err });
    }
    this.leaf = Buffer.from(leaf);
    this.chain = Object.freeze(chain.map((c) => Buffer.from(c)));
    this.key = Object.freeze({ ...init.key });
    this.version = init.version;
    this.origin = init.origin;
    this.fingerprint = fingerprintOf(this.leaf);
    const h = createHash('sha256');
    for (const c of certs) h.update(c);
    this.digest = h.digest('hex');
    this.notBefore = facts.notBefore;
    this.notAfter = facts.notAfter;
    this.subject = facts.subject;
    this.dnsNames = facts.dnsNames;
    this.ipAddresses = facts.ipAddresses;
    Object.freeze(this);
  }

  get leafPem(): string {
    return toPem(this.leaf);
  }

  get chainPem(): string {
    return this.chain.map(toPem).join('');
  }

  get fullchainPem(): string {
    return this.leafPem + this.chainPem;
  }

  /** What the policy engine needs: the certificates as delivered and how the key is known. */
  policyInput(hostnames: readonly string[] = []): PolicyInput {
    let key: PolicyKey;
    if (this.key.kind === 'pem') key = { kind: 'pem', pem: this.key.pem };
    else if (this.key.spki) key = { kind: 'public', spki: this.key.spki };
    else if (this.key.proven) key = { kind: 'proven' };
    else key = { kind: 'public', spki: Buffer.alloc(0) };
    return { certs: [this.leaf, ...this.chain], key, hostnames };
  }

  /** Public facts only: safe for logs, status and --json. */
  toJSON(): Record<string, unknown> {
    return {
      fingerprint: this.fingerprint,
      subject: this.subject,
      dnsNames: this.dnsNames,
      notBefore: this.notBefore.toISOString(),
      notAfter: this.notAfter.toISOString(),
      version: this.version,
      origin: this.origin,
      chainLength: this.chain.length,
      key: this.key.kind === 'pem' ? 'pem (in memory)' : `pkcs11 ${this.key.uri}`,
    };
  }

  [inspect.custom](): string {
    return `Material ${inspect(this.toJSON())}`;
  }

  /** Builds Material from the bytes of a secret: a PEM bundle, JSON, or DER (see pem.ts). */
  static fromBundle(bytes: Buffer, meta: { version: string; origin: string; extraChain?: readonly Buffer[]; keyOverride?: MaterialKey }): Material {
    const parsed = parseBundle(bytes);
    const certs = [...parsed.certs, ...(meta.extraChain ?? [])];
    const key: MaterialKey | undefined = meta.keyOverride ?? (parsed.keyPem ? { kind: 'pem', pem: parsed.keyPem } : undefined);
    if (!key) {
      throw new CertdError('E_PARSE', `reading material from ${meta.origin}: no private key found (expected a PEM key in the bundle or a private_key field)`);
    }
    return new Material({ certs, key, version: meta.version, origin: meta.origin });
  }
}
