/**
 * The order certd deploys a bundle's certificates in, whatever order they were delivered in:
 * the leaf first, then each certificate's issuer, as TLS (RFC 8446 4.4.2) and nginx's
 * `ssl_certificate` file expect. People paste "CA, key, leaf", ACM exports and full chains
 * next to a chain that repeats them; certd takes all of those.
 *
 * - The leaf is the certificate whose public key is the private key's, when the key is known;
 *   otherwise (an HSM key without its public key, or no certificate matches) the certificate
 *   that issues no other one in the bundle, a non-CA before a CA, the first delivered first.
 * - From the leaf, each next certificate is the issuer of the one before: its subject is the
 *   child's issuer name and, when both carry key identifiers, its subjectKeyIdentifier is the
 *   child's authorityKeyIdentifier; among several such (a re-keyed CA under one name) the one
 *   whose key verifies the child's signature wins.
 * - The same certificate twice (byte for byte) is kept once.
 * - Certificates off the leaf's path stay, after it, in the order given: the policy judges them
 *   (P-CHAIN-ORDER, P-CHAIN-ANCHOR), nothing here drops or refuses material.
 */
import { issuance, namesEqual, parseCertificate, type ParsedCertificate } from './policy/x509.js';

function keyIdsAgree(child: ParsedCertificate, parent: ParsedCertificate): boolean {
  return child.authorityKeyId === undefined || parent.subjectKeyId === undefined || child.authorityKeyId.equals(parent.subjectKeyId);
}

/** Indexes in `certs` of the issuer of `child`, best first. */
function issuersOf(child: number, certs: readonly ParsedCertificate[]): number[] {
  const c = certs[child] as ParsedCertificate;
  if (c.selfIssued) return [];
  const found: number[] = [];
  certs.forEach((p, i) => {
    if (i !== child && namesEqual(c.issuer, p.subject) && keyIdsAgree(c, p)) found.push(i);
  });
  if (found.length <= 1) return found;
  // Only for the rare tie: a signature check per candidate.
  return [...found.filter((i) => issuance(c, certs[i] as ParsedCertificate).signed), ...found.filter((i) => !issuance(c, certs[i] as ParsedCertificate).signed)];
}

/**
 * The certificates (DER) deduplicated and ordered leaf first in issuer order. `keySpki` gives
 * the private key's public key (SubjectPublicKeyInfo DER) when it is known; it is asked only
 * when the bundle itself leaves the leaf in doubt. Input that does not decode is returned
 * deduplicated in the order given: the policy reports it (P-PARSE).
 */
export function orderCertificates(input: readonly Buffer[], keySpki?: () => Buffer | undefined): Buffer[] {
  const unique: Buffer[] = [];
  for (const der of input) if (!unique.some((u) => u.equals(der))) unique.push(der);
  if (unique.length <= 1) return unique;
  let certs: ParsedCertificate[];
  try {
    certs = unique.map((d) => parseCertificate(d));
  } catch {
    return unique;
  }
  const issuers = certs.map((_c, i) => issuersOf(i, certs));
  const issuesOthers = new Set(issuers.flatMap((list) => list.slice(0, 1)));
  const bottoms = certs.map((_c, i) => i).filter((i) => !issuesOthers.has(i));
  const isCa = (i: number): boolean => certs[i]?.basicConstraints?.cA === true;
  let leaf: number | undefined;
  if (bottoms.length !== 1 || isCa(bottoms[0] as number)) {
    // Two candidate leaves (an old and a new one, an unrelated certificate) or none: the key decides.
    const spki = keySpki?.();
    if (spki) leaf = certs.findIndex((c) => c.spki.equals(spki));
    if (leaf === undefined || leaf < 0) leaf = bottoms.find((i) => !isCa(i)) ?? bottoms[0] ?? 0;
  } else {
    leaf = bottoms[0] as number;
  }
  const path: number[] = [leaf];
  for (let at = leaf; ; ) {
    const next = (issuers[at] ?? []).find((i) => !path.includes(i));
    if (next === undefined) break;
    path.push(next);
    at = next;
  }
  const rest = unique.map((_d, i) => i).filter((i) => !path.includes(i));
  return [...path, ...rest].map((i) => unique[i] as Buffer);
}
