/**
 * The formats material arrives in: a PEM bundle (key and certificates in any order, with or
 * without OpenSSL's "Bag Attributes" text), a JSON object (certd's, common aliases, ACM's
 * export), a single DER certificate, or a single DER private key (PKCS#8, encrypted PKCS#8,
 * SEC 1, PKCS#1). Errors are CertdError E_PARSE (rule P-PARSE) and never
 * quote the input.
 */
import { CertdError } from '../errors.js';
import { Secret } from '../secret.js';
import { parseCertificate } from './x509.js';

export const MAX_INPUT_BYTES = 1024 * 1024;

export interface PemBlock {
  readonly label: string;
  /** RFC 1421 headers ("Proc-Type", "DEK-Info") of legacy encrypted keys; usually empty. */
  readonly headers: Readonly<Record<string, string>>;
  readonly der: Buffer;
}

export interface Bundle {
  /** DER certificates in the order given (leaf first is expected, not enforced here). */
  readonly certs: Buffer[];
  readonly keyPem?: Secret;
}

const KEY_LABELS = new Set([
  'PRIVATE KEY',
  'ENCRYPTED PRIVATE KEY',
  'RSA PRIVATE KEY',
  'EC PRIVATE KEY',
  'DSA PRIVATE KEY',
]);
const CERT_LABELS = new Set(['CERTIFICATE', 'X509 CERTIFICATE']);

const BEGIN = /-----BEGIN ([A-Z0-9 ]+)-----/g;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function parseError(what: string): CertdError {
  return new CertdError('E_PARSE', `parsing certificate material: ${what}`, { permanent: true });
}

/**
 * The PEM blocks of a text, in order. Text between blocks is ignored. Throws E_PARSE for a
 * BEGIN line without its END line, a mismatched END label or a body that is not base64.
 */
export function splitPem(text: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  let position = 0;
  for (;;) {
    BEGIN.lastIndex = position;
    const begin = BEGIN.exec(text);
    if (!begin) break;
    const label = begin[1] as string;
    const ordinal = blocks.length + 1;
    const bodyStart = begin.index + begin[0].length;
    const endMarker = text.indexOf('-----END ', bodyStart);
    const nextBegin = text.indexOf('-----BEGIN ', bodyStart);
    if (endMarker < 0 || (nextBegin >= 0 && nextBegin < endMarker)) {
      throw parseError(`PEM block ${ordinal} (${label}) has no END line: the input is truncated`);
    }
    const endLine = `-----END ${label}-----`;
    if (!text.startsWith(endLine, endMarker)) {
      throw parseError(`PEM block ${ordinal} (${label}) ends with a different label`);
    }
    const { headers, body } = splitHeaders(text.slice(bodyStart, endMarker));
    const b64 = body.replace(/\s+/g, '');
    if (b64.length === 0 || b64.length % 4 !== 0 || !BASE64.test(b64)) {
      throw parseError(`PEM block ${ordinal} (${label}) is not valid base64`);
    }
    blocks.push({ label, headers, der: Buffer.from(b64, 'base64') });
    position = endMarker + endLine.length;
  }
  return blocks;
}

function splitHeaders(raw: string): { headers: Record<string, string>; body: string } {
  const lines = raw.replace(/\r/g, '').split('\n');
  const headers: Record<string, string> = {};
  let i = 0;
  while (i < lines.length && (lines[i] as string).trim() === '') i++;
  // RFC 1421 headers are "Name: value" lines followed by a blank line.
  if (i < lines.length && /^[A-Za-z-]+:/.test(lines[i] as string)) {
    while (i < lines.length && (lines[i] as string).trim() !== '') {
      const line = lines[i] as string;
      const colon = line.indexOf(':');
      if (colon > 0) headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
      i++;
    }
  }
  return { headers, body: lines.slice(i).join('\n') };
}

/** PEM text of one block, 64 columns, headers kept. */
export function encodePem(label: string, der: Buffer, headers: Readonly<Record<string, string>> = {}): string {
  const head = Object.entries(headers).map(([k, v]) => `${k}: ${v}\n`).join('');
  const body = der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${head}${head ? '\n' : ''}${body}\n-----END ${label}-----\n`;
}

class Collector {
  readonly certs: Buffer[] = [];
  key: Secret | undefined;
  #keys = 0;

  addPem(text: string, field: string): void {
    const blocks = splitPem(text);
    if (blocks.length === 0) throw parseError(`${field} holds no PEM block`);
    for (const block of blocks) {
      if (CERT_LABELS.has(block.label)) {
        this.addCert(block.der, `${field}: certificate ${this.certs.length + 1}`);
      } else if (KEY_LABELS.has(block.label)) {
        this.#keys++;
        if (this.#keys > 1) throw parseError(`${field}: more than one private key in the bundle`);
        this.key = new Secret(encodePem(block.label, block.der, block.headers));
        block.der.fill(0);
      }
      // Other blocks (EC PARAMETERS, X509 CRL, ...) carry nothing certd deploys.
    }
  }

  addCert(der: Buffer, what: string): void {
    try {
      parseCertificate(der);
    } catch {
      throw parseError(`${what} is not a valid X.509 certificate`);
    }
    this.certs.push(der);
  }

  result(): Bundle {
    if (this.certs.length === 0 && !this.key) throw parseError('no certificate and no private key found');
    return this.key ? { certs: this.certs, keyPem: this.key } : { certs: this.certs };
  }
}

const JSON_FIELDS = {
  cert: ['certificate', 'cert', 'crt', 'Certificate'],
  key: ['private_key', 'key', 'PrivateKey'],
  chain: ['chain', 'ca', 'CertificateChain'],
} as const;

function pickField(obj: Record<string, unknown>, names: readonly string[]): [string, unknown] | undefined {
  const found = names.filter((n) => obj[n] !== undefined && obj[n] !== null && obj[n] !== '');
  if (found.length > 1) throw parseError(`JSON has both "${found[0]}" and "${found[1]}"`);
  const name = found[0];
  return name === undefined ? undefined : [name, obj[name]];
}

// Some stores keep PEM with the newlines escaped a second time ("\\n").
function unescapeNewlines(text: string): string {
  return text.includes('\n') ? text : text.replace(/\\r/g, '').replace(/\\n/g, '\n');
}

function addJsonValue(into: Collector, name: string, value: unknown): void {
  const items = Array.isArray(value) ? value : [value];
  items.forEach((item, i) => {
    const field = Array.isArray(value) ? `${name}[${i}]` : name;
    if (typeof item !== 'string') throw parseError(`JSON field "${field}" is not a string`);
    into.addPem(unescapeNewlines(item), `JSON field "${field}"`);
  });
}

function parseJson(text: string): Bundle {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    // The SyntaxError quotes the input, which may hold a key: say only that it is not JSON.
    throw parseError('input starts like JSON but is not valid JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw parseError('JSON input is not an object');
  }
  const obj = doc as Record<string, unknown>;
  const into = new Collector();
  const cert = pickField(obj, JSON_FIELDS.cert);
  const key = pickField(obj, JSON_FIELDS.key);
  const chain = pickField(obj, JSON_FIELDS.chain);
  if (!cert && !key) {
    throw parseError(`JSON has no certificate (${JSON_FIELDS.cert.join(', ')}) and no key (${JSON_FIELDS.key.join(', ')})`);
  }
  if (cert) addJsonValue(into, cert[0], cert[1]);
  if (chain) addJsonValue(into, chain[0], chain[1]);
  if (key) {
    const before = into.certs.length;
    addJsonValue(into, key[0], key[1]);
    if (into.certs.length !== before) throw parseError(`JSON field "${key[0]}" holds a certificate`);
    if (!into.key) throw parseError(`JSON field "${key[0]}" holds no private key`);
  }
  return into.result();
}

/**
 * Certificates (DER, in the order given) and the private key PEM of a secret's bytes. Throws
 * CertdError E_PARSE for empty, oversized, truncated or unrecognised input.
 */
export function parseBundle(input: Buffer): Bundle {
  if (input.length > MAX_INPUT_BYTES) {
    throw parseError(`input is ${input.length} bytes; the limit is ${MAX_INPUT_BYTES} (1 MiB)`);
  }
  const text = input.toString('utf8');
  if (text.trim() === '') throw parseError('input is empty');
  // JSON first: its PEM strings contain "-----BEGIN " too.
  if (text.trimStart().startsWith('{')) return parseJson(text);
  if (text.includes('-----BEGIN ')) {
    const into = new Collector();
    into.addPem(text, 'PEM');
    return into.result();
  }
  if (input[0] === 0x30) {
    const into = new Collector();
    const label = derKeyLabel(input);
    if (label) into.key = new Secret(encodePem(label, input));
    else into.addCert(Buffer.from(input), 'DER input');
    return into.result();
  }
  throw parseError('input is neither PEM, JSON nor a DER certificate or private key');
}

/** The tags of a DER SEQUENCE's elements, or undefined when the bytes are not one whole SEQUENCE. */
function sequenceTags(der: Buffer): number[] | undefined {
  const lengthAt = (at: number): { start: number; end: number } | undefined => {
    let pos = at + 1;
    const first = der[pos++];
    if (first === undefined) return undefined;
    let len = first;
    if (first & 0x80) {
      const n = first & 0x7f;
      if (n === 0 || n > 4) return undefined;
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + (der[pos++] ?? Number.NaN);
    }
    return pos + len <= der.length ? { start: pos, end: pos + len } : undefined;
  };
  const outer = lengthAt(0);
  if (der[0] !== 0x30 || !outer || outer.end !== der.length) return undefined;
  const tags: number[] = [];
  for (let at = outer.start; at < outer.end; ) {
    const child = lengthAt(at);
    if (!child) return undefined;
    tags.push(der[at] as number);
    at = child.end;
  }
  return tags;
}

/**
 * The PEM label of a DER private key, told apart by its structure alone (no key is loaded here:
 * P-KEY-PEM does that): PKCS#8 PrivateKeyInfo { INTEGER, AlgorithmIdentifier, OCTET STRING },
 * EncryptedPrivateKeyInfo { AlgorithmIdentifier, OCTET STRING }, SEC 1 ECPrivateKey { INTEGER 1,
 * OCTET STRING, ... }, PKCS#1 RSAPrivateKey (nine or more INTEGERs). Undefined for anything else,
 * a certificate ({ SEQUENCE, SEQUENCE, BIT STRING }) included.
 */
export function derKeyLabel(der: Buffer): string | undefined {
  const tags = sequenceTags(der);
  if (!tags) return undefined;
  const [a, b, c] = tags;
  if (a === 0x02 && b === 0x30 && c === 0x04) return 'PRIVATE KEY';
  if (tags.length === 2 && a === 0x30 && b === 0x04) return 'ENCRYPTED PRIVATE KEY';
  if (a === 0x02 && b === 0x04 && tags.slice(2).every((t) => t === 0xa0 || t === 0xa1)) return 'EC PRIVATE KEY';
  if (tags.length >= 9 && tags.every((t) => t === 0x02 || t === 0x30)) return 'RSA PRIVATE KEY';
  return undefined;
}

function inputError(where: string, err: unknown): unknown {
  if (!(err instanceof CertdError) || err.code !== 'E_PARSE') return err;
  return new CertdError('E_PARSE', `${where}: ${err.message.replace(/^parsing certificate material: /, '')}`, { cause: err, permanent: true });
}

/**
 * The private key of a key file or field (PEM of any key label, or DER), as PEM. `where` names
 * what is read and from where ("reading private key of web: /etc/certd/web.key"); every error
 * starts with it, says when the input holds a certificate instead (cert and key swapped), and
 * never quotes the input.
 */
export function parseKeyInput(bytes: Buffer, where: string): Secret {
  let bundle: Bundle;
  try {
    bundle = parseBundle(bytes);
  } catch (err) {
    throw inputError(where, err);
  }
  if (bundle.keyPem) return bundle.keyPem;
  if (bundle.certs.length > 0) {
    throw new CertdError('E_PARSE', `${where} holds a certificate, not a private key: are the certificate and key swapped? (the key must be PEM or DER: PKCS#8, SEC 1 or PKCS#1)`, { permanent: true });
  }
  throw new CertdError('E_PARSE', `${where} holds no private key (expected PEM or DER: PKCS#8, SEC 1 or PKCS#1)`, { permanent: true });
}

/**
 * The certificates of a certificate or chain file or field (PEM, DER or JSON), with errors as
 * parseKeyInput's: one that holds only a private key says the files look swapped.
 */
export function parseCertInput(bytes: Buffer, where: string): Buffer[] {
  let bundle: Bundle;
  try {
    bundle = parseBundle(bytes);
  } catch (err) {
    throw inputError(where, err);
  }
  if (bundle.certs.length === 0) {
    throw new CertdError('E_PARSE', `${where} holds a private key, not a certificate: are the certificate and key swapped?`, { permanent: true });
  }
  return bundle.certs;
}
