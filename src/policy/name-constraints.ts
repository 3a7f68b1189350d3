/**
 * Name constraints (RFC 5280 4.2.1.10) for the name forms a TLS server certificate carries:
 * DNS names and IP addresses. A CA's permitted subtrees bound every name of that form below it;
 * its excluded subtrees remove names, and exclusion wins. Other forms (directory names, e-mail,
 * URIs) are kept as counts so that the caller can say they were not evaluated.
 */
import { derChildren, derValue } from './der.js';
import { normalizeIp } from './hostname.js';

export interface IpSubtree {
  /** Network address and mask, 4+4 bytes (IPv4) or 16+16 (IPv6). */
  readonly address: Buffer;
  readonly mask: Buffer;
}

export interface Subtrees {
  readonly dns: readonly string[];
  readonly ip: readonly IpSubtree[];
  /** Subtrees of other name forms, which certd does not evaluate. */
  readonly other: number;
}

export interface NameConstraints {
  readonly critical: boolean;
  readonly permitted: Subtrees | undefined;
  readonly excluded: Subtrees | undefined;
}

/** Upper bound on subtrees per constraint: real CAs list a handful; hostile input gets a finding. */
export const MAX_SUBTREES = 1024;

function parseSubtrees(tlv: Buffer): Subtrees {
  const dns: string[] = [];
  const ip: IpSubtree[] = [];
  let other = 0;
  const subtrees = derChildren(tlv);
  if (subtrees.length === 0) throw new Error('an empty GeneralSubtrees (RFC 5280 requires at least one)');
  if (subtrees.length > MAX_SUBTREES) throw new Error(`${subtrees.length} subtrees, over the ${MAX_SUBTREES} certd reads`);
  for (const subtree of subtrees) {
    if (subtree[0] !== 0x30) throw new Error('a GeneralSubtree is not a SEQUENCE');
    const [base, ...rest] = derChildren(subtree);
    if (!base) throw new Error('a GeneralSubtree has no base name');
    // minimum must be 0 and maximum absent (RFC 5280): anything else is a profile violation.
    if (rest.some((f) => f[0] === 0x81 || (f[0] === 0x80 && derValue(f).some((b) => b !== 0)))) {
      throw new Error('a GeneralSubtree sets minimum or maximum, which RFC 5280 forbids');
    }
    if (base[0] === 0x82) {
      const value = derValue(base);
      if (value.some((b) => b < 0x21 || b > 0x7e)) throw new Error('a dNSName subtree holds bytes that are not printable ASCII');
      dns.push(value.toString('latin1').toLowerCase());
    } else if (base[0] === 0x87) {
      const value = derValue(base);
      if (value.length !== 8 && value.length !== 32) throw new Error(`an iPAddress subtree of ${value.length} bytes (8 or 32 expected)`);
      const half = value.length / 2;
      ip.push({ address: Buffer.from(value.subarray(0, half)), mask: Buffer.from(value.subarray(half)) });
    } else {
      other++;
    }
  }
  return { dns, ip, other };
}

/** Decodes the extnValue of a nameConstraints extension; throws when it is malformed. */
export function parseNameConstraints(extnValue: Buffer, critical: boolean): NameConstraints {
  if (extnValue[0] !== 0x30) throw new Error('nameConstraints is not a SEQUENCE');
  let permitted: Subtrees | undefined;
  let excluded: Subtrees | undefined;
  for (const field of derChildren(extnValue)) {
    if (field[0] === 0xa0 && !permitted && !excluded) permitted = parseSubtrees(Buffer.concat([Buffer.from([0x30]), field.subarray(1)]));
    else if (field[0] === 0xa1 && !excluded) excluded = parseSubtrees(Buffer.concat([Buffer.from([0x30]), field.subarray(1)]));
    else throw new Error('nameConstraints holds a field other than [0] permittedSubtrees and [1] excludedSubtrees, in that order');
  }
  if (!permitted && !excluded) throw new Error('nameConstraints is empty (RFC 5280 requires one of its fields)');
  return { critical, permitted, excluded };
}

/** `name` lies in the subtree `base`: equal, or `base` with labels added on the left. */
export function dnsWithin(name: string, base: string): boolean {
  const n = name.toLowerCase().replace(/\.$/, '');
  const b = base.toLowerCase();
  if (b === '') return true;
  // A leading dot (a common, non-RFC form OpenSSL honours) means strictly below it.
  if (b.startsWith('.')) return n.endsWith(b);
  return n === b || n.endsWith(`.${b}`);
}

/**
 * A wildcard name `*.rest` may stand for a name inside `base` without lying in it itself: an
 * excluded `evil.rest` is reachable through `*.rest`.
 */
function wildcardReaches(name: string, base: string): boolean {
  if (!name.startsWith('*.')) return false;
  const rest = name.slice(2).toLowerCase();
  const b = base.toLowerCase().replace(/^\./, '');
  const dot = b.indexOf('.');
  return dot > 0 && b.slice(dot + 1) === rest;
}

/** An IP address's bytes (4 or 16), or undefined when the text is not one. */
export function ipBytes(text: string): Buffer | undefined {
  const ip = normalizeIp(text);
  if (ip === undefined) return undefined;
  if (ip.includes('.')) return Buffer.from(ip.split('.').map(Number));
  const out = Buffer.alloc(16);
  ip.split(':').forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

export function ipWithin(address: Buffer, subtree: IpSubtree): boolean {
  if (address.length !== subtree.address.length) return false;
  for (let i = 0; i < address.length; i++) {
    const m = subtree.mask[i] as number;
    if (((address[i] as number) & m) !== ((subtree.address[i] as number) & m)) return false;
  }
  return true;
}

function ipText(subtree: IpSubtree): string {
  const bits = [...subtree.mask].reduce((n, b) => n + (b.toString(2).match(/1/g)?.length ?? 0), 0);
  const addr = subtree.address.length === 4
    ? [...subtree.address].join('.')
    : (subtree.address.toString('hex').match(/..../g) ?? []).map((g) => parseInt(g, 16).toString(16)).join(':');
  return `${addr}/${bits}`;
}

/**
 * Why a DNS name or IP address breaks the constraints, or undefined when it is within them.
 * `kind` says which form the name is.
 */
export function nameConstraintProblem(kind: 'dns' | 'ip', name: string, nc: NameConstraints): string | undefined {
  if (kind === 'dns') {
    const excluded = nc.excluded?.dns.find((b) => dnsWithin(name, b) || wildcardReaches(name, b));
    if (excluded !== undefined) return `DNS name "${name}" is in the excluded subtree "${excluded}"`;
    const permitted = nc.permitted?.dns ?? [];
    if (permitted.length > 0 && !permitted.some((b) => dnsWithin(name, b))) {
      return `DNS name "${name}" is outside the permitted subtrees (${permitted.map((b) => `"${b}"`).join(', ')})`;
    }
    return undefined;
  }
  const address = ipBytes(name);
  if (!address) return `IP address "${name}" does not parse`;
  const excluded = nc.excluded?.ip.find((s) => ipWithin(address, s));
  if (excluded) return `IP address ${name} is in the excluded range ${ipText(excluded)}`;
  // IPv4 and IPv6 are one name form: permitted IPv4 ranges alone leave no IPv6 address in.
  const permitted = nc.permitted?.ip ?? [];
  if (permitted.length > 0 && !permitted.some((s) => ipWithin(address, s))) {
    return `IP address ${name} is outside the permitted ranges (${permitted.map(ipText).join(', ')})`;
  }
  return undefined;
}
