/**
 * The certificate policy of POLICY.md as one pure function: certificates, key and settings in,
 * findings out. No I/O and no throwing: a failure inside becomes a P-PARSE finding, and the
 * caller decides what a rejection means (policy.mode).
 */
import { createPublicKey } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { messageOf } from '../errors.js';
import { HASH_STRENGTH, OID, rsaStrength } from './algorithms.js';
import { chainsToPublicRoot, checkChain, partialChainFacts } from './chain.js';
import type { ChainFacts } from './chain.js';
import { collector, DAY_MS, duration, label } from './findings.js';
import type { Report } from './findings.js';
import { ecPointProblem } from './ec-point.js';
import { dnsNameProblem, hostnameMatches } from './hostname.js';
import { ipBytes, nameConstraintProblem } from './name-constraints.js';
import { loadPrivateKeyPem } from './private-key.js';
import type { Finding, PolicyInput, PolicySettings } from './types.js';
import type { Secret } from '../secret.js';
import { namesEqual, parseCertificate } from './x509.js';
import type { ParsedCertificate } from './x509.js';

/** Clock skew tolerated by P-VALID between certd's host and the issuer's. */
export const VALIDITY_SKEW_MS = 5 * 60_000;

const STANDARD_RSA_SIZES = new Set([2048, 3072, 4096]);
const MIN_STRENGTH = 112;

/** True when the findings stop deployment: a rejection under `mode: enforce`. */
export function isRejected(findings: readonly Finding[], policy: Pick<PolicySettings, 'mode'>): boolean {
  return policy.mode === 'enforce' && findings.some((f) => f.severity === 'reject');
}

export function checkPolicy(input: PolicyInput, policy: PolicySettings, now: Date): Finding[] {
  const { findings, report } = collector();
  try {
    run(input, policy, now, report);
  } catch (err) {
    report('P-PARSE', 'reject', 0, `checking the policy failed: ${messageOf(err)}`);
  }
  return findings;
}

const anchorCache = new WeakMap<Buffer, ParsedCertificate | null>();

function parsedAnchors(policy: PolicySettings, report: Report): ParsedCertificate[] {
  const out: ParsedCertificate[] = [];
  policy.trustAnchors.forEach((der, i) => {
    let parsed = anchorCache.get(der);
    if (parsed === undefined) {
      try {
        parsed = parseCertificate(der);
      } catch {
        parsed = null;
      }
      anchorCache.set(der, parsed);
    }
    if (parsed) out.push(parsed);
    else report('P-CHAIN-ANCHOR', 'reject', 0, `trust anchor ${i + 1} of the policy is not a valid X.509 certificate: fix trust_anchors`);
  });
  return out;
}

function run(input: PolicyInput, policy: PolicySettings, now: Date, report: Report): void {
  if (input.certs.length === 0) {
    report('P-PARSE', 'reject', 0, 'no certificate was given: the material needs at least the leaf');
    return;
  }
  const parsed = input.certs.map((der, i) => {
    try {
      return parseCertificate(der);
    } catch (err) {
      report('P-PARSE', 'reject', i, `${label(i)} is not a valid X.509 certificate (${messageOf(err)})`);
      return undefined;
    }
  });
  const complete = parsed.every((c) => c !== undefined);
  const anchors = parsedAnchors(policy, report);
  const facts: ChainFacts = complete ? checkChain(parsed, anchors, report) : partialChainFacts(parsed);

  parsed.forEach((cert, i) => {
    if (!cert || facts.extras.has(i)) return;
    const isAnchor = i === facts.anchorIndex;
    if (!isAnchor) {
      checkVersion(cert, i, report);
      checkExtensions(cert, i, report);
    }
    checkKey(cert, i, isAnchor, policy, report);
    checkSignature(cert, i, isAnchor, policy, report);
    checkValidity(cert, i, now, report);
    if (i > 0 && !isAnchor) {
      checkCa(cert, i, report);
      checkStrength(cert, i, report);
    }
  });

  if (complete) checkNameConstraints(parsed, facts, anchors, input.hostnames ?? [], report);

  const leaf = parsed[0];
  if (leaf) {
    checkLeaf(leaf, input.hostnames ?? [], policy, report);
    checkLifetime(leaf, complete ? parsed : [leaf], policy, now, report);
  }
  checkPrivateKey(input, leaf, report);
}

function checkVersion(cert: ParsedCertificate, i: number, report: Report): void {
  if (cert.version !== 3) {
    report('P-V3', 'reject', i, `${label(i, cert)} is an X.509 v${cert.version} certificate; RFC 5280 profiles need v3 (extensions): reissue it`);
  }
}

/** P-EXT-DUP and P-EXT-CRITICAL: RFC 5280 4.2 for every certificate but the trust anchor. */
function checkExtensions(cert: ParsedCertificate, i: number, report: Report): void {
  const who = label(i, cert);
  for (const oid of new Set(cert.duplicateExtensions)) {
    report('P-EXT-DUP', 'reject', i, `${who} has extension ${oid} more than once; RFC 5280 4.2 allows each extension once, and clients differ on which copy they read: reissue it`);
  }
  for (const oid of cert.unknownCriticalExtensions) {
    report('P-EXT-CRITICAL', 'reject', i, `${who} has extension ${oid} marked critical, which certd and TLS clients do not process (RFC 5280 4.2: such a certificate must be refused): reissue it without the extension or with it non-critical`);
  }
}

/**
 * P-NAME-CONSTRAINTS: the names of each certificate on the path (and the configured host names,
 * for the leaf) lie within the DNS and IP subtrees of every CA above it, the trust anchor's
 * included, as OpenSSL's verifier checks them.
 */
function checkNameConstraints(
  certs: readonly ParsedCertificate[],
  facts: ChainFacts,
  anchors: readonly ParsedCertificate[],
  hostnames: readonly string[],
  report: Report,
): void {
  const path = certs.map((cert, i) => ({ cert, i })).filter(({ i }) => !facts.extras.has(i));
  const top = path[path.length - 1]?.cert;
  // An anchor outside the chain that issued its last certificate constrains it all the same.
  const outside = top && !top.selfIssued ? anchors.filter((a) => namesEqual(a.subject, top.issuer)) : [];
  const constraining = [...path.slice(1), ...outside.map((cert) => ({ cert, i: -1 }))].filter(({ cert }) => cert.nameConstraints);
  if (constraining.length === 0) return;
  path.forEach(({ cert, i }) => {
    const names: ['dns' | 'ip', string][] = [
      ...cert.dnsNames.map((n): ['dns', string] => ['dns', n]),
      ...cert.ipAddresses.map((n): ['ip', string] => ['ip', n]),
    ];
    if (i === 0) {
      // A configured host name the SANs already hold would only repeat their finding.
      const held = new Set(names.map(([, n]) => n.toLowerCase()));
      for (const h of hostnames) if (!held.has(h.toLowerCase())) names.push([nameKind(h), h]);
    }
    for (const { cert: ca, i: caIndex } of constraining) {
      if (caIndex !== -1 && caIndex <= i) continue;
      const nc = ca.nameConstraints;
      if (!nc) continue;
      for (const [kind, name] of names) {
        const problem = nameConstraintProblem(kind, name, nc);
        if (problem) {
          const whose = caIndex === -1 ? `trust anchor "${ca.subject.commonName ?? ca.subject.text}"` : label(caIndex, ca);
          report('P-NAME-CONSTRAINTS', 'reject', i, `${label(i, cert)}: ${problem} of ${whose} (RFC 5280 4.2.1.10): the CA may not issue for this name`);
        }
      }
    }
  });
}

function nameKind(host: string): 'dns' | 'ip' {
  return ipBytes(host) ? 'ip' : 'dns';
}

function checkKey(cert: ParsedCertificate, i: number, isAnchor: boolean, policy: PolicySettings, report: Report): void {
  const who = label(i, cert);
  const key = cert.key;
  switch (key.alg) {
    case 'RSA': {
      if (!isAnchor) {
        if (key.bits < policy.minRsaBits) {
          report('P-RSA-MIN', 'reject', i, `${who}: RSA modulus is ${key.bits} bits; FIPS needs at least ${policy.minRsaBits} (SP 800-131A r2): reissue with a 2048/3072/4096-bit key`);
        } else if (!STANDARD_RSA_SIZES.has(key.bits)) {
          report('P-RSA-MIN', 'warn', i, `${who}: RSA modulus is ${key.bits} bits; FIPS 186-5 validated modules generate 2048, 3072 or 4096 bits and some refuse other sizes`);
        }
      }
      const e = key.exponent;
      if (e % 2n === 0n || e <= 65536n || e >= 1n << 256n) {
        report('P-RSA-EXP', 'reject', i, `${who}: RSA public exponent is ${e < 1n << 64n ? e.toString() : `a ${e.toString(2).length}-bit number`}; FIPS 186-5 needs an odd e with 2^16 < e < 2^256: reissue with e = 65537`);
      }
      return;
    }
    case 'EC': {
      const curve = key.curve;
      if (curve?.verdict === 'approved') {
        const problem = ecPointProblem(curve.name, cert.subjectPublicKey);
        if (problem) report('P-EC-POINT', 'reject', i, `${who}: ${problem} (SP 800-56A r3 5.6.2.3.4): the certificate does not carry a usable ${curve.name} public key; reissue it`);
        return;
      }
      if (curve?.verdict === 'warn') {
        report('P-EC-CURVE', 'warn', i, `${who}: EC key on ${curve.name}; SP 800-186 keeps P-224 (112-bit) only until 2030: reissue with P-256 or P-384`);
        return;
      }
      report('P-EC-CURVE', 'reject', i, `${who}: EC key on ${curve?.name ?? `curve ${key.curveOid}`}, which is not FIPS-approved for certd (P-256, P-384, P-521): reissue with P-256 or P-384`);
      return;
    }
    case 'EC-explicit':
      report('P-EC-EXPLICIT', 'reject', i, `${who}: EC key with explicit curve parameters instead of a named curve (RFC 5480 forbids them, and they hide which curve is used): reissue with a named-curve key (openssl ec_param_enc:named_curve)`);
      return;
    case 'Ed25519':
    case 'Ed448':
      if (!policy.allowEd25519) {
        report('P-EDDSA', 'reject', i, `${who}: ${key.alg} key; EdDSA is refused unless policy.allow_ed25519 is true (FIPS 186-5 approves it, but not every validated OpenSSL FIPS module does)`);
      }
      return;
    case 'DSA':
      report('P-DSA', 'reject', i, `${who}: DSA key${key.bits ? ` (${key.bits} bits)` : ''}; FIPS 186-5 retired DSA for signing: reissue with an RSA or ECDSA key`);
      return;
    case 'other':
      report('P-KEY-ALG', 'reject', i, `${who}: public key algorithm ${key.name}${key.name === key.oid ? '' : ` (${key.oid})`} is not accepted; certd takes rsaEncryption or EC named-curve keys`);
      return;
  }
}

function checkSignature(cert: ParsedCertificate, i: number, isAnchor: boolean, policy: PolicySettings, report: Report): void {
  // A trust anchor's self-signature is never relied upon: only its key matters.
  if (isAnchor) return;
  const who = label(i, cert);
  const sig = cert.signature;
  if (sig.family === 'dsa') {
    report('P-DSA', 'reject', i, `${who} is signed with ${sig.name}; FIPS 186-5 retired DSA signatures: the issuer must re-sign with RSA or ECDSA`);
  }
  if (sig.family === 'eddsa' && !policy.allowEd25519) {
    report('P-EDDSA', 'reject', i, `${who} is signed with ${sig.name}; EdDSA is refused unless policy.allow_ed25519 is true`);
  }
  if (sig.hash === undefined) {
    report('P-SIG-HASH', 'reject', i, `${who} is signed with ${sig.name}, an algorithm certd does not recognise as FIPS-approved`);
    return;
  }
  const strength = HASH_STRENGTH[sig.hash];
  if (strength < MIN_STRENGTH) {
    report('P-SIG-HASH', 'reject', i, `${who} is signed with ${sig.name}; ${sig.hash.toUpperCase()} is not allowed for signatures (SP 800-131A r2): the issuer must re-sign with SHA-256 or stronger`);
  } else if (strength === MIN_STRENGTH) {
    report('P-SIG-HASH', 'warn', i, `${who} is signed with ${sig.name}; ${sig.hash.toUpperCase()} gives only 112 bits: prefer SHA-256 or stronger`);
  }
}

function checkValidity(cert: ParsedCertificate, i: number, now: Date, report: Report): void {
  const t = now.getTime();
  const who = label(i, cert);
  if (cert.notBefore.getTime() - VALIDITY_SKEW_MS > t) {
    report('P-VALID', 'reject', i, `${who} is not valid before ${cert.notBefore.toISOString()} (in ${duration(cert.notBefore.getTime() - t)}): check the clocks or wait until then`);
  }
  if (cert.notAfter.getTime() + VALIDITY_SKEW_MS < t) {
    report('P-VALID', 'reject', i, `${who} expired at ${cert.notAfter.toISOString()} (${duration(t - cert.notAfter.getTime())} ago): renew it`);
  }
}

function checkCa(cert: ParsedCertificate, i: number, report: Report): void {
  const who = label(i, cert);
  const bc = cert.basicConstraints;
  if (!bc?.cA) {
    report('P-CHAIN-CA', 'reject', i, `${who} issues the certificate before it but is not a CA (basicConstraints cA is ${bc ? 'FALSE' : 'absent'})`);
  } else if (!bc.critical) {
    report('P-CHAIN-CA', 'reject', i, `${who}: basicConstraints is not marked critical, as RFC 5280 4.2.1.9 requires of a CA`);
  }
  if (!cert.keyUsage) {
    report('P-CHAIN-CA', 'reject', i, `${who} has no keyUsage extension; a CA certificate needs keyCertSign`);
  } else if (!cert.keyUsage.usages.includes('keyCertSign')) {
    report('P-CHAIN-CA', 'reject', i, `${who}: keyUsage (${cert.keyUsage.usages.join(', ')}) lacks keyCertSign, so it may not sign certificates`);
  }
}

function keyStrength(cert: ParsedCertificate): { bits: number; what: string } | undefined {
  const key = cert.key;
  switch (key.alg) {
    case 'RSA':
      return { bits: rsaStrength(key.bits), what: `RSA-${key.bits}` };
    case 'EC':
      return key.curve ? { bits: key.curve.strength, what: key.curve.name } : undefined;
    case 'Ed25519':
      return { bits: 128, what: 'Ed25519' };
    case 'Ed448':
      return { bits: 224, what: 'Ed448' };
    case 'DSA':
      return key.bits === undefined ? undefined : { bits: key.bits >= 2048 ? 112 : 80, what: `DSA-${key.bits}` };
    default:
      return undefined;
  }
}

/** P-SIG-STRENGTH: an intermediate protects everything below it, whatever min_rsa_bits says. */
function checkStrength(cert: ParsedCertificate, i: number, report: Report): void {
  const who = label(i, cert);
  const key = keyStrength(cert);
  if (key && key.bits < MIN_STRENGTH) {
    report('P-SIG-STRENGTH', 'reject', i, `${who}: its ${key.what} key gives ${key.bits} bits of security; an intermediate needs at least ${MIN_STRENGTH} (SP 800-57): the chain must come from a stronger CA`);
  }
  const hash = cert.signature.hash;
  if (hash !== undefined && HASH_STRENGTH[hash] < MIN_STRENGTH) {
    report('P-SIG-STRENGTH', 'reject', i, `${who} is signed with ${cert.signature.name}, under ${MIN_STRENGTH} bits of security: the chain must be re-issued with SHA-256 or stronger`);
  }
}

function checkLeaf(leaf: ParsedCertificate, hostnames: readonly string[], policy: PolicySettings, report: Report): void {
  if (leaf.basicConstraints?.cA) {
    report('P-LEAF-BC', 'reject', 0, 'leaf is a CA certificate (basicConstraints cA=TRUE); a server certificate must not be able to issue others: reissue it with CA:FALSE');
  }
  const usages = leaf.keyUsage?.usages;
  if (usages?.includes('keyCertSign')) {
    report('P-LEAF-BC', 'reject', 0, 'leaf has keyUsage keyCertSign; a server certificate must not sign certificates');
  }
  if (usages && !usages.includes('digitalSignature')) {
    report('P-KU', 'reject', 0, `leaf keyUsage (${usages.join(', ')}) lacks digitalSignature, which (EC)DHE key exchange needs (SP 800-52 r2 3.2.1)`);
  }
  if (usages?.includes('keyEncipherment') && leaf.key.alg !== 'RSA') {
    report('P-KU', 'reject', 0, `leaf keyUsage has keyEncipherment on a ${leaf.key.alg} key; keyEncipherment is only meaningful for RSA: reissue without it`);
  }

  const eku = leaf.extKeyUsage;
  if (!eku) {
    report('P-EKU', 'reject', 0, 'leaf has no extendedKeyUsage; a TLS server certificate needs serverAuth (SP 800-52 r2 3.2.1)');
  } else {
    if (eku.includes(OID.anyExtendedKeyUsage)) {
      report('P-EKU', 'reject', 0, 'leaf has anyExtendedKeyUsage, which makes it valid for every purpose: reissue it with serverAuth only');
    }
    if (!eku.includes(OID.serverAuth)) {
      report('P-EKU', 'reject', 0, 'leaf extendedKeyUsage does not include serverAuth: clients will refuse it for TLS servers');
    }
  }

  for (const name of leaf.dnsNames) {
    const problem = dnsNameProblem(name);
    if (problem) report('P-SAN-SYNTAX', 'reject', 0, `leaf subjectAltName: ${problem} (RFC 5280 4.2.1.6, RFC 1035): reissue it with valid host names`);
  }

  const sans = [...leaf.dnsNames, ...leaf.ipAddresses];
  if (sans.length === 0) {
    report('P-SAN', 'reject', 0, 'leaf has no DNS or IP subjectAltName; clients ignore the common name (RFC 6125): reissue it with SANs');
  } else {
    const shown = sans.length > 8 ? `${sans.slice(0, 8).join(', ')}, ...` : sans.join(', ');
    for (const host of hostnames) {
      if (!hostnameMatches(host, leaf.dnsNames, leaf.ipAddresses)) {
        report('P-SAN', 'reject', 0, `leaf does not cover host name "${host}" (its names: ${shown})`);
      }
    }
  }

  if (leaf.selfSigned && !policy.allowSelfSigned) {
    report('P-SELF-SIGNED', 'reject', 0, 'leaf is self-signed; set policy.allow_self_signed: true for development, or have a CA issue it');
  }
}

/** First day of each CA/Browser Forum ballot SC-081 maximum, newest first. */
const CAB_LIMITS: readonly { from: number; days: number }[] = [
  { from: Date.UTC(2029, 2, 15), days: 47 },
  { from: Date.UTC(2027, 2, 15), days: 100 },
  { from: Date.UTC(2026, 2, 15), days: 200 },
  { from: -Infinity, days: 398 },
];

/** The longest validity (days) the CA/B Baseline Requirements allow for a leaf issued at `notBefore`. */
export function publicLifetimeLimitDays(notBefore: Date): number {
  const t = notBefore.getTime();
  return (CAB_LIMITS.find((l) => t >= l.from) as { days: number }).days;
}

function addYears(d: Date, years: number): Date {
  const out = new Date(d.getTime());
  out.setUTCFullYear(out.getUTCFullYear() + years);
  return out;
}

function checkLifetime(leaf: ParsedCertificate, chain: readonly ParsedCertificate[], policy: PolicySettings, now: Date, report: Report): void {
  const t = now.getTime();
  const notBefore = leaf.notBefore.getTime();
  const notAfter = leaf.notAfter.getTime();
  // RFC 5280 validity is inclusive of both ends.
  const lifetime = notAfter - notBefore + 1000;
  const remaining = notAfter - t;

  // An expired leaf is P-VALID's finding; do not repeat it here.
  if (remaining >= -VALIDITY_SKEW_MS) {
    if (remaining < policy.minRemainingMs) {
      report('P-MIN-REMAINING', 'reject', 0, `leaf expires at ${leaf.notAfter.toISOString()}, in ${duration(remaining)}; the policy needs at least ${duration(policy.minRemainingMs)} left (min_remaining): renew it first`);
    } else if (remaining < policy.renewBeforeMs || remaining < lifetime / 3) {
      const why = remaining < policy.renewBeforeMs
        ? `less than renew_before (${duration(policy.renewBeforeMs)})`
        : `less than a third of its ${duration(lifetime)} lifetime`;
      report('P-EXPIRING', 'warn', 0, `leaf expires at ${leaf.notAfter.toISOString()}, in ${duration(remaining)}: ${why}; renew it`);
    }
  }

  if (notAfter > addYears(leaf.notBefore, 3).getTime()) {
    report('P-LIFE-FIPS', 'warn', 0, `leaf is valid for ${duration(lifetime)}, over 3 years (SP 800-57 cryptoperiod guidance for TLS keys): issue shorter-lived certificates`);
  }

  const limit = publicLifetimeLimitDays(leaf.notBefore);
  // Only a lifetime above the smallest limit can break one, so the root store is read rarely.
  if (lifetime > limit * DAY_MS) {
    const isPublic = policy.publicTrust ?? chainsToPublicRoot(chain);
    if (isPublic) {
      report('P-LIFE-PUBLIC', 'warn', 0, `leaf is valid for ${duration(lifetime)}; publicly trusted certificates issued on ${leaf.notBefore.toISOString().slice(0, 10)} may last at most ${limit} days (CA/B Forum SC-081): browsers may refuse it`);
    }
  }
}

function spkiOf(key: KeyObject): Buffer {
  return key.export({ type: 'spki', format: 'der' });
}

function matchesLeafKey(leaf: ParsedCertificate, publicKey: KeyObject): boolean {
  try {
    return leaf.publicKey.equals(publicKey);
  } catch {
    return false;
  }
}

function leafKeyName(leaf: ParsedCertificate): string {
  try {
    return describeKey(leaf.publicKey);
  } catch {
    return 'a key OpenSSL cannot load';
  }
}

function describeKey(key: KeyObject): string {
  const d = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === 'rsa') return `RSA-${d?.modulusLength ?? '?'}`;
  if (key.asymmetricKeyType === 'ec') return `EC ${d?.namedCurve ?? '?'}`;
  return key.asymmetricKeyType ?? 'unknown';
}

/**
 * Key and leaf pairs already found to load and match, by object identity: a source that hands
 * the same Material to every cycle (an unchanged secret version) pays for decoding the private
 * key (OpenSSL 3.0 takes milliseconds) once. Only a clean pass is remembered.
 */
const matchedKeys = new WeakMap<Secret, WeakSet<Buffer>>();

function checkPrivateKey(input: PolicyInput, leaf: ParsedCertificate | undefined, outer: Report): void {
  const key = input.key;
  if (!key || key.kind === 'proven') return;
  const leafDer = input.certs[0];
  const memo = key.kind === 'pem' && !key.passphrase && leafDer !== undefined && leaf !== undefined;
  if (memo && matchedKeys.get(key.pem)?.has(leafDer)) return;
  let clean = true;
  const report: Report = (...finding) => {
    clean = false;
    outer(...finding);
  };
  let publicKey: KeyObject;
  if (key.kind === 'pem') {
    const load = loadPrivateKeyPem(key.pem, key.passphrase);
    if (!load.ok) {
      report('P-KEY-PEM', 'reject', 0, `private key: ${load.problem}`);
      return;
    }
    publicKey = createPublicKey(load.key);
  } else {
    if (key.spki.length === 0) {
      report('P-KEYMATCH', 'reject', 0, 'the HSM key\'s public key is unknown and possession was not proven: cannot tell whether it belongs to the leaf');
      return;
    }
    try {
      publicKey = createPublicKey({ key: key.spki, format: 'der', type: 'spki' });
    } catch {
      report('P-KEYMATCH', 'reject', 0, 'the HSM key\'s public key (SPKI) does not parse');
      return;
    }
  }
  if (!leaf) return;
  // The certificate's own SPKI bytes nearly always equal OpenSSL's export of the key; the
  // KeyObject comparison covers an encoding that differs (say, a compressed EC point).
  if (!leaf.spki.equals(spkiOf(publicKey)) && !matchesLeafKey(leaf, publicKey)) {
    report('P-KEYMATCH', 'reject', 0, `the private key (${describeKey(publicKey)}) does not belong to the leaf (${leafKeyName(leaf)}): deliver the key the certificate was issued for`);
  }
  if (memo && clean) {
    let leaves = matchedKeys.get(key.pem);
    if (!leaves) matchedKeys.set(key.pem, (leaves = new WeakSet()));
    leaves.add(leafDer);
  }
}
