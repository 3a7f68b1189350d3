/** TLS probes: which leaf a server presents, and (for `certd verify`) what it negotiates. */
import { createECDH, createHash, randomBytes } from 'node:crypto';
import { connect, type PeerCertificate } from 'node:tls';
import { connect as netConnect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { CertdError, messageOf } from './errors.js';

/** FIPS-approved suites for TLS 1.2 (SP 800-52 r2); Node's default list includes CHACHA20. */
export const FIPS_TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-AES128-SHA256', 'ECDHE-RSA-AES128-SHA256',
  'ECDHE-ECDSA-AES256-SHA384', 'ECDHE-RSA-AES256-SHA384', 'DHE-RSA-AES128-GCM-SHA256', 'DHE-RSA-AES256-GCM-SHA384',
].join(':');
export const FIPS_TLS13_SUITES = 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_AES_128_CCM_SHA256';

export interface Served {
  /** SHA-256 of the served leaf, uppercase hex with colons. */
  fingerprint: string;
  /** The served chain, leaf first, DER. */
  chain: Buffer[];
  protocol: string;
  cipher: string;
}

export function splitHostPort(hostPort: string): { host: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(hostPort);
  if (!m) throw new CertdError('E_CONFIG', `"${hostPort}" is not HOST:PORT`);
  return { host: m[1]!, port: Number(m[2]) };
}

function fingerprintOf(der: Buffer): string {
  return createHash('sha256').update(der).digest('hex').toUpperCase().replace(/(..)(?!$)/g, '$1:');
}

export interface ProbeOptions {
  connect: string;
  servername: string;
  timeoutMs?: number;
  minVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';
  maxVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';
  ciphers?: string;
  ciphersuites?: string;
}

/** One handshake; resolves with what the server presented. Certificates are not trusted or rejected here. */
export function probe(o: ProbeOptions): Promise<Served> {
  const { host, port } = splitHostPort(o.connect);
  return new Promise((resolvePromise, reject) => {
    const socket = connect({
      host,
      port,
      servername: o.servername,
      rejectUnauthorized: false,
      minVersion: o.minVersion ?? 'TLSv1.2',
      ...(o.maxVersion ? { maxVersion: o.maxVersion } : {}),
      // Node takes TLS 1.3 suites (TLS_*) in `ciphers` too; without them its defaults, which
      // include TLS_CHACHA20_POLY1305_SHA256, are offered.
      ciphers: [o.ciphers ?? FIPS_TLS12_CIPHERS, o.ciphersuites ?? FIPS_TLS13_SUITES].filter((c) => c !== '').join(':'),
      timeout: o.timeoutMs ?? 5000,
    });
    const fail = (err: Error): void => {
      socket.destroy();
      reject(err);
    };
    socket.once('timeout', () => fail(new Error(`no TLS handshake within ${o.timeoutMs ?? 5000} ms`)));
    socket.once('error', fail);
    socket.once('secureConnect', () => {
      const chain: Buffer[] = [];
      let cert: PeerCertificate & { issuerCertificate?: PeerCertificate } = socket.getPeerCertificate(true);
      const seen = new Set<string>();
      while (cert && cert.raw && !seen.has(cert.fingerprint256)) {
        seen.add(cert.fingerprint256);
        chain.push(cert.raw);
        cert = cert.issuerCertificate as typeof cert;
      }
      const leaf = chain[0];
      const result: Served = {
        fingerprint: leaf ? fingerprintOf(leaf) : '',
        chain,
        protocol: socket.getProtocol() ?? '',
        cipher: socket.getCipher()?.name ?? '',
      };
      socket.end();
      resolvePromise(result);
    });
  });
}

/** Consecutive handshakes that must present the expected leaf before a deployment counts as served. */
export const STABLE_PROBES = 3;

/**
 * After a reload, waits until the server presents `expected` on STABLE_PROBES handshakes in a
 * row: during a reload nginx's old workers keep accepting for a moment next to the new ones, so
 * one good handshake proves little. Throws E_VERIFY naming what was served instead.
 */
export async function waitForServed(
  o: { connect: string; servername: string; expected: string; timeoutMs: number; certName: string },
  signal?: AbortSignal,
): Promise<Served> {
  const deadline = Date.now() + o.timeoutMs;
  let last: Served | undefined;
  let lastError: unknown;
  let streak = 0;
  for (let attempt = 0; ; attempt++) {
    try {
      last = await probe({ connect: o.connect, servername: o.servername, timeoutMs: Math.max(500, Math.min(3000, deadline - Date.now())) });
      streak = last.fingerprint === o.expected ? streak + 1 : 0;
      if (streak >= STABLE_PROBES) return last;
    } catch (err) {
      streak = 0;
      lastError = err;
    }
    if (Date.now() >= deadline || signal?.aborted) break;
    // Real time on purpose: this waits for a real server's workers, not for certd's schedule.
    const pause = streak > 0 ? 20 : Math.min(25 * 2 ** attempt, 250);
    await sleep(pause, undefined, signal ? { signal } : {}).catch(() => undefined);
  }
  const what = last
    ? `it serves ${last.fingerprint} instead of ${o.expected}`
    : `no handshake: ${messageOf(lastError)}`;
  throw new CertdError('E_VERIFY', `verifying ${o.certName} at ${o.connect} (SNI ${o.servername}): ${what}`);
}

// ---------------------------------------------------------------------------------------------
// `certd verify`: which protocol versions and non-FIPS suites a server accepts (rule P-TLS-CONF).
//
// Protocol versions and TLS 1.3 suites are tried with real handshakes through Node's OpenSSL.
// The TLS 1.2 suite families are tried with a ClientHello written here, byte for byte, offering
// only that family's IANA code points, and the server's first answer is read: a ServerHello that
// picks one of them is an acceptance, an alert or a closed connection a refusal. This is how TLS
// scanners test suites their own library cannot negotiate: OpenSSL 3 (Node's and Debian's) has
// no RC4, 3DES or EXPORT suites at all, so a handshake could not even offer them. The ClientHello
// is enough: a server that answers with a ServerHello naming RC4 has chosen RC4.
// ---------------------------------------------------------------------------------------------

export type Outcome = 'accepted' | 'refused' | 'untested';

export interface ProtocolResult {
  version: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';
  result: Outcome;
  /** Negotiated suite (accepted), the server's alert or error (refused), or why not tested. */
  detail: string;
}

export interface SuiteResult {
  /** Family name: RC4, 3DES, CAMELLIA, CHACHA20, NULL, EXPORT, MD5, RSA-KX, CBC-SHA1. */
  family: string;
  tls: '1.2' | '1.3';
  result: Outcome;
  method: 'clienthello' | 'handshake';
  /** How many suites of the family were offered. */
  offered: number;
  /** The suite the server picked, when it accepted one. */
  negotiated?: string;
  detail: string;
}

/** TLS 1.2 suite families P-TLS-CONF forbids, by IANA code point. */
export const FORBIDDEN_TLS12_FAMILIES: readonly { family: string; why: string; suites: Readonly<Record<number, string>> }[] = [
  {
    family: 'RC4',
    why: 'RC4 is broken (RFC 7465)',
    suites: { 0x0004: 'RC4-MD5', 0x0005: 'RC4-SHA', 0xc007: 'ECDHE-ECDSA-RC4-SHA', 0xc011: 'ECDHE-RSA-RC4-SHA', 0x0003: 'EXP-RC4-MD5' },
  },
  {
    family: '3DES',
    why: '3DES (TDEA) is disallowed for TLS (SP 800-131A r2)',
    suites: { 0x000a: 'DES-CBC3-SHA', 0x0016: 'DHE-RSA-DES-CBC3-SHA', 0x0013: 'DHE-DSS-DES-CBC3-SHA', 0xc008: 'ECDHE-ECDSA-DES-CBC3-SHA', 0xc012: 'ECDHE-RSA-DES-CBC3-SHA' },
  },
  {
    family: 'CAMELLIA',
    why: 'Camellia is not a FIPS-approved cipher',
    suites: {
      0xc073: 'ECDHE-ECDSA-CAMELLIA256-SHA384', 0xc077: 'ECDHE-RSA-CAMELLIA256-SHA384', 0x00c4: 'DHE-RSA-CAMELLIA256-SHA256',
      0x00c0: 'CAMELLIA256-SHA256', 0x0088: 'DHE-RSA-CAMELLIA256-SHA', 0x0084: 'CAMELLIA256-SHA', 0xc072: 'ECDHE-ECDSA-CAMELLIA128-SHA256',
      0xc076: 'ECDHE-RSA-CAMELLIA128-SHA256', 0x00be: 'DHE-RSA-CAMELLIA128-SHA256', 0x00ba: 'CAMELLIA128-SHA256',
      0x0045: 'DHE-RSA-CAMELLIA128-SHA', 0x0041: 'CAMELLIA128-SHA',
    },
  },
  {
    family: 'CHACHA20',
    why: 'ChaCha20-Poly1305 is not a FIPS-approved cipher',
    suites: { 0xcca9: 'ECDHE-ECDSA-CHACHA20-POLY1305', 0xcca8: 'ECDHE-RSA-CHACHA20-POLY1305', 0xccaa: 'DHE-RSA-CHACHA20-POLY1305' },
  },
  {
    family: 'NULL',
    why: 'NULL suites do not encrypt',
    suites: { 0x0001: 'NULL-MD5', 0x0002: 'NULL-SHA', 0x003b: 'NULL-SHA256', 0xc006: 'ECDHE-ECDSA-NULL-SHA', 0xc010: 'ECDHE-RSA-NULL-SHA' },
  },
  {
    family: 'EXPORT',
    why: 'EXPORT suites use 40/56-bit keys',
    suites: { 0x0003: 'EXP-RC4-MD5', 0x0006: 'EXP-RC2-CBC-MD5', 0x0008: 'EXP-DES-CBC-SHA', 0x0014: 'EXP-EDH-RSA-DES-CBC-SHA', 0x0011: 'EXP-EDH-DSS-DES-CBC-SHA', 0x0062: 'EXP1024-DES-CBC-SHA', 0x0064: 'EXP1024-RC4-SHA' },
  },
  {
    family: 'MD5',
    why: 'MD5 MACs are not approved',
    suites: { 0x0001: 'NULL-MD5', 0x0004: 'RC4-MD5', 0x0003: 'EXP-RC4-MD5', 0x0006: 'EXP-RC2-CBC-MD5' },
  },
  {
    family: 'RSA-KX',
    why: 'TLS 1.2 must use ECDHE or DHE key exchange (no static RSA: no forward secrecy)',
    suites: {
      0x009c: 'AES128-GCM-SHA256', 0x009d: 'AES256-GCM-SHA384', 0x003c: 'AES128-SHA256', 0x003d: 'AES256-SHA256',
      0x002f: 'AES128-SHA', 0x0035: 'AES256-SHA', 0xc09c: 'AES128-CCM', 0xc09d: 'AES256-CCM', 0xc0a0: 'AES128-CCM8', 0xc0a1: 'AES256-CCM8',
    },
  },
  {
    family: 'CBC-SHA1',
    why: 'TLS 1.2 CBC suites must use SHA-256/384 MACs',
    suites: { 0xc009: 'ECDHE-ECDSA-AES128-SHA', 0xc00a: 'ECDHE-ECDSA-AES256-SHA', 0xc013: 'ECDHE-RSA-AES128-SHA', 0xc014: 'ECDHE-RSA-AES256-SHA', 0x0033: 'DHE-RSA-AES128-SHA', 0x0039: 'DHE-RSA-AES256-SHA' },
  },
];

/** TLS 1.3 suites P-TLS-CONF forbids (only AES-GCM/CCM are allowed). */
export const FORBIDDEN_TLS13_SUITES: readonly { family: string; why: string; suite: string; code: number }[] = [
  { family: 'CHACHA20', why: 'ChaCha20-Poly1305 is not a FIPS-approved cipher', suite: 'TLS_CHACHA20_POLY1305_SHA256', code: 0x1303 },
];

const TLS_RECORD_HANDSHAKE = 0x16;
const TLS_RECORD_ALERT = 0x15;

/** Alert descriptions (RFC 8446 §6) for readable refusals. */
const ALERTS: Record<number, string> = {
  10: 'unexpected_message', 20: 'bad_record_mac', 40: 'handshake_failure', 47: 'illegal_parameter', 50: 'decode_error',
  70: 'protocol_version', 71: 'insufficient_security', 80: 'internal_error', 86: 'inappropriate_fallback', 112: 'unrecognized_name',
};

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}
function vec16(body: Buffer): Buffer {
  return Buffer.concat([u16(body.length), body]);
}
function extension(type: number, body: Buffer): Buffer {
  return Buffer.concat([u16(type), vec16(body)]);
}

/**
 * A TLS 1.2 ClientHello (RFC 5246 §7.4.1.2) offering exactly `suites`, with SNI, the NIST
 * curves and x25519, and signature algorithms a server of any key type can sign with.
 * `version` 0x0301/0x0302 makes it a TLS 1.0/1.1 ClientHello (the same extensions; servers
 * ignore signature_algorithms there).
 */
export function tls12ClientHello(servername: string, suites: readonly number[], version = 0x0303): Buffer {
  const extensions = Buffer.concat([
    serverNameExtension(servername),
    extension(0x000a, vec16(Buffer.concat([0x0017, 0x0018, 0x0019, 0x001d, 0x0100].map(u16)))), // supported_groups
    extension(0x000b, Buffer.from([1, 0])), // ec_point_formats: uncompressed
    extension(0x000d, vec16(Buffer.concat([0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0203, 0x0201].map(u16)))), // signature_algorithms
    extension(0x0017, Buffer.alloc(0)), // extended_master_secret
  ]);
  return clientHelloRecord(version, randomBytes(32), Buffer.alloc(0), [...suites, 0x00ff], extensions); // + TLS_EMPTY_RENEGOTIATION_INFO_SCSV
}

/**
 * A TLS 1.3 ClientHello (RFC 8446 §4.1.2) offering exactly `suites`: supported_versions 1.3
 * only, and a P-256 key share (an approved group, so a FIPS server need not ask again). Written
 * here so a runtime whose OpenSSL cannot negotiate a suite (CHACHA20 under a FIPS provider)
 * can still ask whether the server would pick it.
 */
export function tls13ClientHello(servername: string, suites: readonly number[]): Buffer {
  const share = createECDH('prime256v1');
  const point = share.generateKeys();
  const extensions = Buffer.concat([
    serverNameExtension(servername),
    extension(0x000a, vec16(Buffer.concat([0x0017, 0x0018].map(u16)))), // supported_groups: P-256, P-384
    extension(0x000d, vec16(Buffer.concat([0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806].map(u16)))), // signature_algorithms
    extension(0x002b, Buffer.from([2, 0x03, 0x04])), // supported_versions: TLS 1.3
    extension(0x002d, Buffer.from([1, 1])), // psk_key_exchange_modes: psk_dhe_ke
    extension(0x0033, vec16(Buffer.concat([u16(0x0017), vec16(point)]))), // key_share: P-256
  ]);
  return clientHelloRecord(0x0303, randomBytes(32), randomBytes(32), suites, extensions);
}

function serverNameExtension(servername: string): Buffer {
  return extension(0x0000, vec16(Buffer.concat([Buffer.from([0]), vec16(Buffer.from(servername, 'ascii'))])));
}

function clientHelloRecord(version: number, random: Buffer, sessionId: Buffer, suites: readonly number[], extensions: Buffer): Buffer {
  const body = Buffer.concat([
    u16(version),
    random,
    Buffer.from([sessionId.length]),
    sessionId,
    vec16(Buffer.concat(suites.map(u16))),
    Buffer.from([1, 0]), // compression: null
    vec16(extensions),
  ]);
  const handshake = Buffer.concat([Buffer.from([1, (body.length >> 16) & 0xff, (body.length >> 8) & 0xff, body.length & 0xff]), body]);
  return Buffer.concat([Buffer.from([TLS_RECORD_HANDSHAKE, 0x03, 0x01]), u16(handshake.length), handshake]);
}

/** Reads the server's first TLS record after a ClientHello: the suite it picked, or its refusal. */
export function serverAnswer(data: Buffer): { kind: 'hello'; suite: number; version: number } | { kind: 'alert'; description: string } | { kind: 'incomplete' } | { kind: 'garbage'; detail: string } {
  if (data.length < 5) return { kind: 'incomplete' };
  const type = data[0]!;
  const length = data.readUInt16BE(3);
  if (type === TLS_RECORD_ALERT) {
    if (data.length < 7) return { kind: 'incomplete' };
    return { kind: 'alert', description: ALERTS[data[6]!] ?? `alert ${data[6]}` };
  }
  if (type !== TLS_RECORD_HANDSHAKE) return { kind: 'garbage', detail: `record type ${type}` };
  // The ServerHello's suite sits after type(1) length(3) version(2) random(32) session_id.
  if (data.length < 5 + Math.min(length, 44)) return { kind: 'incomplete' };
  if (data[5] !== 2) return { kind: 'garbage', detail: `handshake type ${data[5]} instead of ServerHello` };
  const version = data.readUInt16BE(9);
  const sidLen = data[43];
  if (sidLen === undefined || data.length < 44 + sidLen + 2) return { kind: 'incomplete' };
  return { kind: 'hello', suite: data.readUInt16BE(44 + sidLen), version };
}

function hex4(n: number): string {
  return `0x${n.toString(16).padStart(4, '0')}`;
}

/** How a server answered one hand-written ClientHello. */
export type HelloAnswer =
  | { kind: 'hello'; suite: number; version: number }
  | { kind: 'refused'; detail: string }
  | { kind: 'untested'; detail: string };

/** Sends `hello` on a fresh TCP connection and reads the server's first record. */
export function sendClientHello(o: { connect: string; timeoutMs?: number }, hello: Buffer): Promise<HelloAnswer> {
  const { host, port } = splitHostPort(o.connect);
  return new Promise((resolve) => {
    let data = Buffer.alloc(0);
    let settled = false;
    const socket = netConnect({ host, port });
    const done = (r: HelloAnswer): void => {
      if (settled) return;
      settled = true;
      socket.destroy();
      resolve(r);
    };
    socket.setTimeout(o.timeoutMs ?? 5000, () => done({ kind: 'untested', detail: `no answer to the ClientHello within ${o.timeoutMs ?? 5000} ms` }));
    socket.once('connect', () => socket.write(hello));
    socket.on('data', (chunk: Buffer) => {
      // serverAnswer decides within the first 49 bytes + session id: the buffer stays small.
      data = Buffer.concat([data, chunk]);
      const a = serverAnswer(data);
      if (a.kind === 'incomplete') return;
      if (a.kind === 'alert') done({ kind: 'refused', detail: `alert ${a.description}` });
      else if (a.kind === 'garbage') done({ kind: 'untested', detail: `unexpected answer: ${a.detail}` });
      else done(a);
    });
    socket.once('end', () => done({ kind: 'refused', detail: 'connection closed without a ServerHello' }));
    socket.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') done({ kind: 'refused', detail: `connection reset (${err.code})` });
      else done({ kind: 'untested', detail: `cannot connect: ${err.message}` });
    });
  });
}

/** Offers `suites` (code point -> name) at once; which one the server picked, or how it refused. */
async function offerSuites(
  o: { connect: string; servername: string; timeoutMs?: number },
  tls: '1.2' | '1.3',
  suites: Readonly<Record<number, string>>,
): Promise<{ result: Outcome; negotiated?: string; code?: number; detail: string }> {
  const ids = Object.keys(suites).map(Number);
  const a = await sendClientHello(o, tls === '1.3' ? tls13ClientHello(o.servername, ids) : tls12ClientHello(o.servername, ids));
  if (a.kind === 'refused') return { result: 'refused', detail: a.detail };
  if (a.kind === 'untested') return { result: 'untested', detail: a.detail };
  const name = suites[a.suite];
  // A server must pick from the offer; anything else is a broken server, not an acceptance.
  if (name === undefined) return { result: 'untested', detail: `server chose ${hex4(a.suite)}, which was not offered` };
  return { result: 'accepted', negotiated: name, code: a.suite, detail: `server chose ${name} (${hex4(a.suite)})` };
}

/** Offers one TLS 1.2 family with a hand-written ClientHello and classifies the first answer. */
export async function offerTls12Family(
  o: { connect: string; servername: string; timeoutMs?: number },
  family: (typeof FORBIDDEN_TLS12_FAMILIES)[number],
): Promise<SuiteResult> {
  const r = await offerSuites(o, '1.2', family.suites);
  const { code: _code, ...rest } = r;
  return { family: family.family, tls: '1.2', method: 'clienthello', offered: Object.keys(family.suites).length, ...rest };
}

/** The suites approved for TLS 1.2 (SP 800-52 r2 §3.3.1, with ECDHE/DHE), by IANA code point. */
export const APPROVED_TLS12_SUITES: Readonly<Record<number, string>> = {
  0xc02b: 'ECDHE-ECDSA-AES128-GCM-SHA256', 0xc02c: 'ECDHE-ECDSA-AES256-GCM-SHA384', 0xc02f: 'ECDHE-RSA-AES128-GCM-SHA256',
  0xc030: 'ECDHE-RSA-AES256-GCM-SHA384', 0xc023: 'ECDHE-ECDSA-AES128-SHA256', 0xc024: 'ECDHE-ECDSA-AES256-SHA384',
  0xc027: 'ECDHE-RSA-AES128-SHA256', 0xc028: 'ECDHE-RSA-AES256-SHA384', 0xc0ac: 'ECDHE-ECDSA-AES128-CCM', 0xc0ad: 'ECDHE-ECDSA-AES256-CCM',
  0x009e: 'DHE-RSA-AES128-GCM-SHA256', 0x009f: 'DHE-RSA-AES256-GCM-SHA384', 0x0067: 'DHE-RSA-AES128-SHA256', 0x006b: 'DHE-RSA-AES256-SHA256',
  0xc09e: 'DHE-RSA-AES128-CCM', 0xc09f: 'DHE-RSA-AES256-CCM',
};

/** TLS 1.3 suites by code point; all but CHACHA20 are approved. */
export const TLS13_SUITES: Readonly<Record<number, string>> = {
  0x1301: 'TLS_AES_128_GCM_SHA256', 0x1302: 'TLS_AES_256_GCM_SHA384', 0x1303: 'TLS_CHACHA20_POLY1305_SHA256',
  0x1304: 'TLS_AES_128_CCM_SHA256', 0x1305: 'TLS_AES_128_CCM_8_SHA256',
};
const TLS13_NOT_APPROVED = new Set([0x1303]);

export interface AcceptedSuite {
  tls: '1.2' | '1.3';
  suite: string;
  /** IANA code point, "0xc02b". */
  code: string;
  /** Approved for FIPS use (SP 800-52 r2); false is a P-TLS-CONF finding. */
  fips: boolean;
}

/**
 * Every suite the server accepts among those certd knows (the approved ones and every forbidden
 * family), in the server's order of preference: offer them all, take out the one it picks, ask
 * again, until it refuses. One ClientHello per accepted suite plus one; no suite needs this
 * runtime's OpenSSL, so a FIPS-mode certd lists what a FIPS nginx offers, CHACHA20 included.
 */
export async function acceptedSuites(o: { connect: string; servername: string; timeoutMs?: number }): Promise<AcceptedSuite[]> {
  const out: AcceptedSuite[] = [];
  const forbidden12: Record<number, string> = {};
  for (const f of FORBIDDEN_TLS12_FAMILIES) Object.assign(forbidden12, f.suites);
  const rounds: ['1.2' | '1.3', Record<number, string>, (code: number) => boolean][] = [
    ['1.3', { ...TLS13_SUITES }, (c) => !TLS13_NOT_APPROVED.has(c)],
    ['1.2', { ...APPROVED_TLS12_SUITES, ...forbidden12 }, (c) => c in APPROVED_TLS12_SUITES],
  ];
  for (const [tls, remaining, approved] of rounds) {
    for (let left = Object.keys(remaining).length; left > 0; left--) {
      const r = await offerSuites(o, tls, remaining);
      if (r.result !== 'accepted' || r.code === undefined) break;
      out.push({ tls, suite: r.negotiated ?? hex4(r.code), code: hex4(r.code), fips: approved(r.code) });
      delete remaining[r.code];
    }
  }
  return out;
}

/** TLS 1.0/1.1 by ClientHello, for a runtime (FIPS) whose OpenSSL will not offer them. */
const LEGACY_SUITES: Readonly<Record<number, string>> = {
  0xc013: 'ECDHE-RSA-AES128-SHA', 0xc014: 'ECDHE-RSA-AES256-SHA', 0xc009: 'ECDHE-ECDSA-AES128-SHA', 0xc00a: 'ECDHE-ECDSA-AES256-SHA',
  0x0033: 'DHE-RSA-AES128-SHA', 0x0039: 'DHE-RSA-AES256-SHA', 0x002f: 'AES128-SHA', 0x0035: 'AES256-SHA', 0x000a: 'DES-CBC3-SHA',
};

async function offerLegacyVersion(o: { connect: string; servername: string; timeoutMs?: number }, version: 'TLSv1' | 'TLSv1.1'): Promise<{ result: Outcome; detail: string }> {
  const wire = version === 'TLSv1' ? 0x0301 : 0x0302;
  const a = await sendClientHello(o, tls12ClientHello(o.servername, Object.keys(LEGACY_SUITES).map(Number), wire));
  if (a.kind !== 'hello') return { result: a.kind, detail: `${a.detail} [clienthello]` };
  if (a.version !== wire) return { result: 'refused', detail: `server answered with version ${hex4(a.version)} [clienthello]` };
  return { result: 'accepted', detail: `${version} ${LEGACY_SUITES[a.suite] ?? hex4(a.suite)} [clienthello]` };
}

/** Client-side failures: the handshake never offered what was asked, so nothing was tested. */
const CLIENT_SIDE_ERRORS = new Set(['ERR_SSL_NO_CIPHER_MATCH', 'ERR_SSL_NO_CIPHERS_AVAILABLE', 'ERR_SSL_NO_PROTOCOLS_AVAILABLE', 'ERR_TLS_INVALID_PROTOCOL_VERSION']);
/** Failures that are the server's answer: an alert, a version it will not speak, a reset. */
const SERVER_REFUSALS = /ALERT|UNSUPPORTED_PROTOCOL|WRONG_VERSION_NUMBER|ECONNRESET|EPIPE|socket disconnected|socket hang up/i;

/** One real handshake offering only `ciphers` at exactly `version`; classifies how it ended. */
export function tryHandshake(o: {
  connect: string;
  servername: string;
  version: ProtocolResult['version'];
  ciphers: string;
  timeoutMs?: number;
}): Promise<{ result: Outcome; detail: string; cipher?: string }> {
  const { host, port } = splitHostPort(o.connect);
  return new Promise((resolve) => {
    let settled = false;
    let socket: ReturnType<typeof connect> | undefined;
    const done = (r: { result: Outcome; detail: string; cipher?: string }): void => {
      if (settled) return;
      settled = true;
      socket?.destroy();
      resolve(r);
    };
    const classify = (err: NodeJS.ErrnoException): void => {
      const what = `${err.code ?? ''} ${err.message}`.trim();
      if (err.code !== undefined && CLIENT_SIDE_ERRORS.has(err.code)) done({ result: 'untested', detail: `this runtime's OpenSSL ${process.versions.openssl} cannot offer it: ${err.message}` });
      else if (SERVER_REFUSALS.test(what)) done({ result: 'refused', detail: err.code ?? err.message });
      else done({ result: 'untested', detail: `inconclusive: ${what}` });
    };
    try {
      socket = connect({
        host,
        port,
        servername: o.servername,
        rejectUnauthorized: false,
        minVersion: o.version,
        maxVersion: o.version,
        ciphers: o.ciphers,
        timeout: o.timeoutMs ?? 5000,
      });
    } catch (err) {
      classify(err as NodeJS.ErrnoException);
      return;
    }
    socket.once('timeout', () => done({ result: 'untested', detail: `no handshake within ${o.timeoutMs ?? 5000} ms` }));
    socket.once('error', classify);
    socket.once('secureConnect', () => {
      const cipher = socket?.getCipher()?.standardName ?? socket?.getCipher()?.name ?? '?';
      done({ result: 'accepted', detail: `${socket?.getProtocol() ?? '?'} ${cipher}`, cipher });
    });
  });
}

/** Every protocol version (all ciphers this runtime has, at security level 0 so 1.0/1.1 can be offered). */
export async function testProtocols(o: { connect: string; servername: string; timeoutMs?: number }): Promise<ProtocolResult[]> {
  const all13 = 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_AES_128_CCM_SHA256:TLS_CHACHA20_POLY1305_SHA256';
  const out: ProtocolResult[] = [];
  for (const version of ['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'] as const) {
    const ciphers = version === 'TLSv1.3' ? all13 : 'ALL:@SECLEVEL=0';
    let r: { result: Outcome; detail: string } = await tryHandshake({ ...o, version, ciphers });
    // A FIPS runtime cannot offer TLS 1.0/1.1 at all (no MD5-SHA1 PRF): ask with a ClientHello.
    if (r.result === 'untested' && (version === 'TLSv1' || version === 'TLSv1.1')) r = await offerLegacyVersion(o, version);
    out.push({ version, result: r.result, detail: r.detail });
  }
  return out;
}

export async function testSuites(o: { connect: string; servername: string; timeoutMs?: number }): Promise<SuiteResult[]> {
  const out: SuiteResult[] = [];
  for (const family of FORBIDDEN_TLS12_FAMILIES) out.push(await offerTls12Family(o, family));
  for (const s of FORBIDDEN_TLS13_SUITES) {
    const r = await offerSuites(o, '1.3', { [s.code]: s.suite });
    const { code: _code, ...rest } = r;
    out.push({ family: s.family, tls: '1.3', method: 'clienthello', offered: 1, ...rest });
  }
  return out;
}

/** "AB:cd:..." or "abcd..." as upper-case hex pairs joined by ':' (the format of Served.fingerprint). */
export function normalizeFingerprint(fp: string): string | undefined {
  const hex = fp.replace(/^sha256[:=]/i, '').replace(/[:\s]/g, '');
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) return undefined;
  return hex.toUpperCase().replace(/(..)(?!$)/g, '$1:');
}
