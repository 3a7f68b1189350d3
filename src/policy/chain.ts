/**
 * Chain rules: P-CHAIN-ORDER, P-CHAIN-ANCHOR, P-CHAIN-PATHLEN, and the facts the per-certificate
 * rules need from the chain (which certificate is the trust anchor, which are unrelated extras).
 */
import { rootCertificates } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { label } from './findings.js';
import type { Report } from './findings.js';
import { issuance, namesEqual } from './x509.js';
import type { ParsedCertificate } from './x509.js';

export interface ChainFacts {
  /**
   * Index of the certificate that is the trust anchor: a configured anchor found in the chain,
   * else a self-signed last certificate (index >= 1). Rules about how a certificate is issued
   * (P-RSA-MIN, P-SIG-HASH, P-SIG-STRENGTH, P-CHAIN-CA, P-V3) skip it: an anchor is trusted
   * for its name and key (RFC 5280 6.1.1 d), not for its own signature or extensions.
   */
  readonly anchorIndex: number | undefined;
  /** Certificates after the anchored path that are not on it (reported, not checked further). */
  readonly extras: ReadonlySet<number>;
}

function isAnchor(cert: ParsedCertificate, anchors: readonly ParsedCertificate[]): boolean {
  return anchors.some(
    (a) => a.der.equals(cert.der) || (namesEqual(a.subject, cert.subject) && a.spki.equals(cert.spki)),
  );
}

function signingAnchor(cert: ParsedCertificate, anchors: readonly ParsedCertificate[]): ParsedCertificate | undefined {
  return anchors.find((a) => issuance(cert, a).signed);
}

function trailingSelfSigned(certs: readonly (ParsedCertificate | undefined)[]): number | undefined {
  const last = certs.length - 1;
  return last >= 1 && certs[last]?.selfSigned ? last : undefined;
}

/** Chain facts when some certificate did not parse: only what needs no links. */
export function partialChainFacts(certs: readonly (ParsedCertificate | undefined)[]): ChainFacts {
  return { anchorIndex: trailingSelfSigned(certs), extras: new Set() };
}

export function checkChain(
  certs: readonly ParsedCertificate[],
  anchors: readonly ParsedCertificate[],
  report: Report,
): ChainFacts {
  const n = certs.length;
  const links = certs.slice(0, -1).map((c, j) => issuance(c, certs[j + 1] as ParsedCertificate));
  const at = (i: number): ParsedCertificate => certs[i] as ParsedCertificate;

  const orderFinding = (j: number): void => {
    const link = links[j];
    if (!link || link.signed) return;
    const child = at(j);
    const next = at(j + 1);
    report(
      'P-CHAIN-ORDER',
      'reject',
      j,
      link.named
        ? `${label(j, child)}: its signature does not verify with the key of ${label(j + 1, next)} although the names match (a re-keyed CA?): deliver the issuer certificate that signed it`
        : `${label(j, child)} is issued by "${child.issuer.text}" but is followed by "${next.subject.text}": order the chain leaf first, each certificate followed by its issuer`,
    );
  };

  if (anchors.length === 0) {
    links.forEach((_l, j) => orderFinding(j));
    checkPathLen(certs, undefined, report);
    return { anchorIndex: trailingSelfSigned(certs), extras: new Set() };
  }

  // Follow the path from the leaf while each link holds; stop at the first anchored certificate.
  let anchoredAt: number | undefined;
  let anchorInChain = false;
  let outsideAnchor: ParsedCertificate | undefined;
  for (let i = 0; i < n; i++) {
    if (isAnchor(at(i), anchors)) {
      anchoredAt = i;
      anchorInChain = true;
      break;
    }
    const signer = signingAnchor(at(i), anchors);
    if (signer) {
      anchoredAt = i;
      outsideAnchor = signer;
      break;
    }
    if (!links[i]?.signed) break;
  }

  if (anchoredAt === undefined) {
    links.forEach((_l, j) => orderFinding(j));
    const related = certs.some((c) => isAnchor(c, anchors) || signingAnchor(c, anchors) !== undefined);
    // When some certificate does chain to an anchor, the order findings already say what is wrong.
    if (!related) {
      const top = at(n - 1);
      report(
        'P-CHAIN-ANCHOR',
        'reject',
        n - 1,
        `the chain does not lead to a configured trust anchor: ${label(n - 1, top)} is issued by "${top.issuer.text}", which is none of the ${anchors.length} trust anchor(s): deliver the intermediate(s) up to a trusted root, or configure the right trust_anchors`,
      );
    }
    checkPathLen(certs, undefined, report);
    return { anchorIndex: trailingSelfSigned(certs), extras: new Set() };
  }

  const extras = new Set<number>();
  for (let j = anchoredAt + 1; j < n; j++) {
    if (isAnchor(at(j), anchors) || (!extras.has(j - 1) && links[j - 1]?.signed === true)) continue;
    // Issued by a certificate before it: misplaced (a reversed bundle), not merely extra.
    const issuer = certs.slice(0, j).findIndex((c) => issuance(at(j), c).signed);
    if (issuer >= 0) {
      report(
        'P-CHAIN-ORDER',
        'reject',
        j,
        `${label(j, at(j))} is issued by ${label(issuer, at(issuer))}, which comes before it: order the chain leaf first, each certificate followed by its issuer`,
      );
    } else {
      report(
        'P-CHAIN-ANCHOR',
        'warn',
        j,
        `${label(j, at(j))} is not on the path from the leaf to the trust anchor: remove it from the chain`,
      );
    }
    extras.add(j);
  }
  const path = certs.slice(0, anchoredAt + 1);
  checkPathLen(path, outsideAnchor, report);
  // The leaf is never exempt as an anchor, even when pinned as one.
  let anchorIndex: number | undefined = anchorInChain && anchoredAt > 0 ? anchoredAt : undefined;
  // With the anchor outside the path, a copy of it may still follow (roots are often bundled).
  for (let j = anchoredAt + 1; anchorIndex === undefined && j < n; j++) {
    if (isAnchor(at(j), anchors)) anchorIndex = j;
  }
  return { anchorIndex, extras };
}

/**
 * RFC 5280 4.2.1.9: a CA's pathLenConstraint bounds the non-self-issued intermediates between
 * it and the leaf. An anchor outside the chain counts too, as OpenSSL enforces it.
 */
function checkPathLen(path: readonly ParsedCertificate[], outsideAnchor: ParsedCertificate | undefined, report: Report): void {
  const full = outsideAnchor ? [...path, outsideAnchor] : path;
  for (let k = 1; k < full.length; k++) {
    const ca = full[k] as ParsedCertificate;
    const limit = ca.basicConstraints?.cA ? ca.basicConstraints.pathLen : undefined;
    if (limit === undefined) continue;
    let below = 0;
    for (let j = 1; j < k; j++) if (!(full[j] as ParsedCertificate).selfIssued) below++;
    if (below <= limit) continue;
    const inChain = k < path.length;
    const who = inChain ? label(k, ca) : `trust anchor "${ca.subject.text}"`;
    report(
      'P-CHAIN-PATHLEN',
      'reject',
      inChain ? k : path.length - 1,
      `${who} has pathLen ${limit} but ${below} intermediate CA certificate(s) sit below it: the chain must be issued within the CA's path length constraint`,
    );
  }
}

let publicRoots: Map<string, X509Certificate[]> | undefined;

function publicRootsByName(): Map<string, X509Certificate[]> {
  if (!publicRoots) {
    publicRoots = new Map();
    for (const pem of rootCertificates) {
      try {
        const root = new X509Certificate(pem);
        const list = publicRoots.get(root.subject) ?? [];
        list.push(root);
        publicRoots.set(root.subject, list);
      } catch {
        // A root this OpenSSL cannot read cannot anchor a chain here either.
      }
    }
  }
  return publicRoots;
}

/**
 * Whether the chain ends at, or is issued by, a root of the Mozilla store bundled with Node
 * (`tls.rootCertificates`): the honest meaning of "publicly trusted" that needs no I/O. Private
 * PKI never chains there, so P-LIFE-PUBLIC cannot misfire on it.
 */
export function chainsToPublicRoot(certs: readonly ParsedCertificate[]): boolean {
  const top = certs[certs.length - 1];
  if (!top) return false;
  const byName = publicRootsByName();
  if ((byName.get(top.x509.subject) ?? []).some((r) => r.fingerprint256 === top.x509.fingerprint256)) return true;
  return (byName.get(top.x509.issuer) ?? []).some((r) => {
    try {
      return top.x509.verify(r.publicKey);
    } catch {
      return false;
    }
  });
}

