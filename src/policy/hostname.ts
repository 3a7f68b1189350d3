/**
 * Host name matching for rule P-SAN (RFC 6125 as the CA/Browser Forum profile narrows it): DNS
 * names compare case-insensitively in their ASCII (punycode) form; a wildcard is a whole
 * left-most label "*" that stands for exactly one label and never for a public suffix alone;
 * IP addresses match IP SANs only, never DNS SANs.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { domainToASCII, domainToUnicode } from 'node:url';

function normalizeDns(name: string): string {
  const trimmed = name.trim().replace(/\.$/, '');
  // domainToASCII rejects "*" labels: convert the rest and keep the wildcard as given.
  if (trimmed.startsWith('*.')) return `*.${normalizeDns(trimmed.slice(2))}`;
  return (domainToASCII(trimmed) || trimmed).toLowerCase();
}

/** An IP address in one canonical text form, or undefined when it is not one. */
export function normalizeIp(text: string): string | undefined {
  const ip = text.trim().replace(/^\[(.*)\]$/, '$1');
  if (isIPv4(ip)) return ip.split('.').map((o) => String(Number(o))).join('.');
  if (!isIPv6(ip)) return undefined;
  // "::ffff:1.2.3.4": rewrite the dotted tail as two hex groups, then expand "::".
  const hex = ip.replace(/(\d+)\.(\d+)\.(\d+)\.(\d+)$/, (_m, a: string, b: string, c: string, d: string) =>
    `${((Number(a) << 8) | Number(b)).toString(16)}:${((Number(c) << 8) | Number(d)).toString(16)}`,
  );
  const [left = '', right] = hex.split('::');
  const l = left === '' ? [] : left.split(':');
  const r = right === undefined || right === '' ? [] : right.split(':');
  const groups = right === undefined ? l : [...l, ...Array<string>(8 - l.length - r.length).fill('0'), ...r];
  if (groups.length !== 8) return undefined;
  return groups.map((g) => parseInt(g, 16).toString(16)).join(':');
}

function wildcardMatches(pattern: string, host: string): boolean {
  const rest = pattern.slice(2);
  // "*.com" would cover a whole TLD; require at least two labels under the wildcard.
  if (!rest.includes('.')) return false;
  const dot = host.indexOf('.');
  return dot > 0 && host.slice(dot + 1) === rest;
}

/** True when `hostname` (a DNS name or IP literal) is covered by the certificate's SANs. */
export function hostnameMatches(hostname: string, dnsNames: readonly string[], ipAddresses: readonly string[]): boolean {
  const ip = normalizeIp(hostname);
  if (ip !== undefined) return ipAddresses.some((a) => normalizeIp(a) === ip);
  const host = normalizeDns(hostname);
  if (host === '') return false;
  return dnsNames.some((san) => {
    const name = normalizeDns(san);
    if (name === host) return true;
    // A configured wildcard host needs the identical wildcard SAN, matched above.
    return name.startsWith('*.') && !host.startsWith('*') && wildcardMatches(name, host);
  });
}

/** RFC 1035 2.3.4 lengths: 63 octets a label, 253 a name in text form. */
const MAX_LABEL = 63;
const MAX_NAME = 253;
const LDH_LABEL = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/i;

/**
 * Whether an xn-- label decodes as punycode and encodes back to itself. The round trip is the
 * test, not domainToASCII alone: Node 24's URL parser passes an undecodable A-label through
 * unchanged, where Node 20's refuses it.
 */
function validALabel(label: string): boolean {
  const lower = label.toLowerCase();
  const unicode = domainToUnicode(lower);
  return unicode !== '' && unicode !== lower && !unicode.includes('xn--') && domainToASCII(unicode) === lower;
}

function printable(name: string): string {
  const shown = name.length > 80 ? `${name.slice(0, 80)}...` : name;
  return JSON.stringify(shown);
}

/**
 * Why a dNSName SAN is not a host name in the preferred syntax (RFC 5280 4.2.1.6, RFC 1035 and
 * RFC 1123 LDH labels and lengths, IDNs as A-labels, a wildcard only as a whole left-most label),
 * or undefined when it is one. Such names reach configuration files and logs (the single layout
 * names files and server blocks after them), so anything else is refused outright.
 */
export function dnsNameProblem(name: string): string | undefined {
  const shown = printable(name);
  if (name.length === 0 || name === ' ') return `DNS name ${shown} is empty`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return `DNS name ${shown} holds control characters`;
  if (/[^\u0000-\u007f]/.test(name)) return `DNS name ${shown} is not ASCII: internationalised names must be written as A-labels (xn--...)`;
  if (name.length > MAX_NAME) return `DNS name ${printable(name)} is ${name.length} characters long, over ${MAX_NAME}`;
  if (name.endsWith('.')) return `DNS name ${shown} ends with a dot; certificates carry names without the root label`;
  const labels = name.split('.');
  for (const [i, label] of labels.entries()) {
    if (label === '*' && i === 0) {
      if (labels.length < 3) return `DNS name ${shown} puts a wildcard directly over a top-level domain`;
      continue;
    }
    if (label.includes('*')) return `DNS name ${shown} has a wildcard that is not the whole left-most label`;
    if (label.length === 0) return `DNS name ${shown} has an empty label`;
    if (label.length > MAX_LABEL) return `DNS name ${shown} has a label of ${label.length} characters, over ${MAX_LABEL}`;
    if (!LDH_LABEL.test(label)) return `DNS name ${shown} has a label that is not letters, digits and inner hyphens (label ${JSON.stringify(label)})`;
    if (/^xn--/i.test(label) && !validALabel(label)) return `DNS name ${shown} has an A-label that is not valid punycode (${JSON.stringify(label)})`;
  }
  return undefined;
}
