// Server-side AWS Signature Version 4 verification for the header form
// (`Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`).
// The canonical request is rebuilt from what arrived on the wire (raw header lines, raw path and
// query, the body bytes), so a client that signs something other than what it sends is refused,
// as AWS would refuse it.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { AwsError } from './aws-error.js';

export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface WireRequest {
  method: string;
  /** The request target exactly as received (path and query, still percent-encoded). */
  rawUrl: string;
  /** Node's `req.rawHeaders`: name, value, name, value… */
  rawHeaders: string[];
  body: Buffer;
}

export interface VerifyOptions {
  region: string;
  /** The signing name the operation belongs to (secretsmanager, ssm, kms). */
  service: string;
  nowMs: number;
  /** AWS refuses a request whose date is further than this from its clock (15 minutes). */
  maxSkewMs?: number;
  findCredentials(accessKeyId: string): AwsCredentials | undefined;
}

export interface VerifiedCaller {
  accessKeyId: string;
  sessionToken?: string;
}

const ALGORITHM = 'AWS4-HMAC-SHA256';
const INVALID_TOKEN = 'The security token included in the request is invalid.';
const BAD_SIGNATURE =
  'The request signature we calculated does not match the signature you provided. ' +
  'Check your AWS Secret Access Key and signing method. Consult the service documentation for details.';

export function verifySigV4(req: WireRequest, opts: VerifyOptions): VerifiedCaller {
  const headers = collectHeaders(req.rawHeaders);
  const authorization = headers.get('authorization');
  if (authorization === undefined) {
    throw new AwsError('MissingAuthenticationTokenException', 'Missing Authentication Token', 400);
  }
  const auth = parseAuthorization(authorization);

  const amzDate = headers.get('x-amz-date');
  if (amzDate === undefined || !/^\d{8}T\d{6}Z$/.test(amzDate)) {
    throw new AwsError('IncompleteSignatureException', 'Authorization header requires existence of either a \'X-Amz-Date\' or a \'Date\' header.');
  }
  const [akid, scopeDate, scopeRegion, scopeService, terminator] = auth.credential.split('/');
  if (akid === undefined || scopeDate === undefined || scopeRegion === undefined || scopeService === undefined || terminator !== 'aws4_request') {
    throw new AwsError('IncompleteSignatureException', `Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '${auth.credential.split('/').slice(1).join('/')}'`);
  }

  const creds = opts.findCredentials(akid);
  if (creds === undefined) throw new AwsError('UnrecognizedClientException', INVALID_TOKEN);

  const requestMs = parseAmzDate(amzDate);
  const maxSkew = opts.maxSkewMs ?? 15 * 60_000;
  if (requestMs < opts.nowMs - maxSkew) {
    throw new AwsError('InvalidSignatureException', `Signature expired: ${amzDate} is now earlier than ${formatAmzDate(opts.nowMs - maxSkew)} (${formatAmzDate(opts.nowMs)} - 15 min.)`);
  }
  if (requestMs > opts.nowMs + maxSkew) {
    throw new AwsError('InvalidSignatureException', `Signature not yet current: ${amzDate} is still later than ${formatAmzDate(opts.nowMs + maxSkew)} (${formatAmzDate(opts.nowMs)} + 15 min.)`);
  }
  if (scopeDate !== amzDate.slice(0, 8)) {
    throw new AwsError('InvalidSignatureException', `Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '${scopeDate}' != '${amzDate.slice(0, 8)}', from '${amzDate}'.`);
  }
  if (scopeRegion !== opts.region) {
    throw new AwsError('InvalidSignatureException', `Credential should be scoped to a valid region. `);
  }
  if (scopeService !== opts.service) {
    throw new AwsError('InvalidSignatureException', `Credential should be scoped to correct service: '${opts.service}'. `);
  }
  if (!auth.signedHeaders.includes('host')) {
    throw new AwsError('InvalidSignatureException', `'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.`);
  }

  const canonical = canonicalRequest(req, headers, auth.signedHeaders);
  const scope = `${scopeDate}/${scopeRegion}/${scopeService}/aws4_request`;
  const stringToSign = [ALGORITHM, amzDate, scope, sha256Hex(canonical)].join('\n');
  const key = signingKey(creds.secretAccessKey, scopeDate, scopeRegion, scopeService);
  const expected = createHmac('sha256', key).update(stringToSign, 'utf8').digest();
  const given = /^[0-9a-f]{64}$/.test(auth.signature) ? Buffer.from(auth.signature, 'hex') : Buffer.alloc(0);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new AwsError('InvalidSignatureException', BAD_SIGNATURE);
  }

  // Temporary credentials are only valid together with their token; long-term ones without one.
  const token = headers.get('x-amz-security-token');
  if ((creds.sessionToken ?? undefined) !== token) throw new AwsError('UnrecognizedClientException', INVALID_TOKEN);
  return token === undefined ? { accessKeyId: akid } : { accessKeyId: akid, sessionToken: token };
}

/** The signing key: HMAC chain over date, region, service and the terminator. */
export function signingKey(secret: string, date: string, region: string, service: string): Buffer {
  const kDate = createHmac('sha256', `AWS4${secret}`).update(date).digest();
  const kRegion = createHmac('sha256', kDate).update(region).digest();
  const kService = createHmac('sha256', kRegion).update(service).digest();
  return createHmac('sha256', kService).update('aws4_request').digest();
}

function canonicalRequest(req: WireRequest, headers: Map<string, string>, signed: string[]): string {
  const q = req.rawUrl.indexOf('?');
  const rawPath = q === -1 ? req.rawUrl : req.rawUrl.slice(0, q);
  const rawQuery = q === -1 ? '' : req.rawUrl.slice(q + 1);
  const headerLines = signed.map((name) => `${name}:${headers.get(name) ?? ''}\n`).join('');
  const payloadHash = payloadHashOf(req, headers);
  return [req.method, canonicalUri(rawPath), canonicalQuery(rawQuery), headerLines, signed.join(';'), payloadHash].join('\n');
}

function payloadHashOf(req: WireRequest, headers: Map<string, string>): string {
  const declared = headers.get('x-amz-content-sha256');
  if (declared === 'UNSIGNED-PAYLOAD') return declared;
  const actual = sha256Hex(req.body);
  if (declared !== undefined && declared !== actual) {
    throw new AwsError('InvalidSignatureException', 'The provided \'x-amz-content-sha256\' header does not match what was computed.');
  }
  return actual;
}

// Services other than S3 sign the path encoded once more than it travels ("double encoding").
function canonicalUri(rawPath: string): string {
  if (rawPath === '' || rawPath === '/') return '/';
  return rawPath.split('/').map((seg) => rfc3986(seg)).join('/');
}

function canonicalQuery(rawQuery: string): string {
  if (rawQuery === '') return '';
  const pairs = rawQuery.split('&').filter((p) => p !== '').map((p) => {
    const eq = p.indexOf('=');
    const k = decodeURIComponent((eq === -1 ? p : p.slice(0, eq)).replace(/\+/g, '%20'));
    const v = eq === -1 ? '' : decodeURIComponent(p.slice(eq + 1).replace(/\+/g, '%20'));
    return [rfc3986(k), rfc3986(v)] as const;
  });
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return pairs.map(([k, v]) => `${k}=${v}`).join('&');
}

function rfc3986(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** Lower-cased names; repeated headers joined by commas; values trimmed, inner spaces collapsed. */
function collectHeaders(raw: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const value = raw[i + 1]!.trim().replace(/\s+/g, ' ');
    const prev = out.get(name);
    out.set(name, prev === undefined ? value : `${prev},${value}`);
  }
  return out;
}

function parseAuthorization(value: string): { credential: string; signedHeaders: string[]; signature: string } {
  if (!value.startsWith(`${ALGORITHM} `)) {
    throw new AwsError('IncompleteSignatureException', `Authorization header requires '${ALGORITHM}' as the algorithm.`);
  }
  const fields = new Map<string, string>();
  for (const part of value.slice(ALGORITHM.length + 1).split(',')) {
    const eq = part.indexOf('=');
    if (eq > 0) fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  const credential = fields.get('Credential');
  const signedHeaders = fields.get('SignedHeaders');
  const signature = fields.get('Signature');
  if (credential === undefined || signedHeaders === undefined || signature === undefined) {
    throw new AwsError('IncompleteSignatureException', 'Authorization header requires \'Credential\', \'SignedHeaders\' and \'Signature\' parameters.');
  }
  return { credential, signedHeaders: signedHeaders.split(';'), signature };
}

function parseAmzDate(s: string): number {
  return Date.UTC(+s.slice(0, 4), +s.slice(4, 6) - 1, +s.slice(6, 8), +s.slice(9, 11), +s.slice(11, 13), +s.slice(13, 15));
}

export function formatAmzDate(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
}

function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
