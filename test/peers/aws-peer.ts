// A local AWS endpoint for Secrets Manager, SSM Parameter Store, KMS, ACM and ACM PCA that speaks the JSON 1.1
// wire protocol and verifies SigV4 as AWS does, so certd's tests and benchmarks exercise the real
// SDK (signing, retries, error parsing) against real sockets. State is in memory per peer.
//
// Contract for tests:
// - `calls[target]` counts every request that passed authentication, including those answered
//   with an injected fault or a quota throttle; `seenAccessKeys` records who signed each of them.
// - `rejected[code]` counts requests refused before dispatch (signature, credentials, protocol).
// - `throttled[target]` counts ThrottlingException answers, injected or from the quota buckets.
// - `seenHosts` records, for each authenticated request, the Host header and (over TLS) the SNI
//   name the client sent: which endpoint name the client resolved.
// - `close()` ends every connection, including hung ones, and resolves once the port is free.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { randomUUID } from 'node:crypto';
import { AcmService } from './aws-acm.js';
import { AcmPcaService } from './aws-acm-pca.js';
import { AwsError } from './aws-error.js';
import { KmsService } from './aws-kms.js';
import { SecretsManagerService } from './aws-secrets-manager.js';
import type { EmulatedService, ServiceContext } from './aws-service.js';
import { verifySigV4, type AwsCredentials } from './aws-sigv4.js';
import { SsmService } from './aws-ssm.js';
import { listenHttp, listenHttps } from './peer-kit.js';

export type { AwsCredentials } from './aws-sigv4.js';

/** The key pair of AWS's own SigV4 examples; never valid against AWS. */
export const DEFAULT_TEST_CREDENTIALS: Readonly<AwsCredentials> = Object.freeze({
  accessKeyId: 'AKIDEXAMPLE',
  secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
});

export const TEST_ACCOUNT_ID = '123456789012';
const MAX_BODY_BYTES = 1 << 20;
const MAX_SEEN = 10_000;

/**
 * Token buckets named for AWS's published request quotas (per second, burst of one second).
 * A bucket lists the operations that share it; KMS buckets are chosen by the key's type.
 */
export const QUOTA_BUCKETS: Readonly<Record<string, { rate: number; ops: readonly string[] }>> = {
  // DescribeSecret has had its own 40,000/s since March 2025; GetSecretValue 10,000/s.
  'secretsmanager.GetSecretValue': { rate: 10_000, ops: ['secretsmanager.GetSecretValue'] },
  'secretsmanager.DescribeSecret': { rate: 40_000, ops: ['secretsmanager.DescribeSecret'] },
  'secretsmanager.BatchGetSecretValue': { rate: 100, ops: ['secretsmanager.BatchGetSecretValue'] },
  'secretsmanager.CreateSecret': { rate: 50, ops: ['secretsmanager.CreateSecret'] },
  'secretsmanager.PutSecretValue': { rate: 50, ops: ['secretsmanager.PutSecretValue', 'secretsmanager.UpdateSecretVersionStage'] },
  // Standard throughput: GetParameter, GetParameters and GetParametersByPath share 40/s.
  // DescribeParameters draws from the same bucket as a conservative choice: PROTOCOLS.md gives
  // no figure for the real service's DescribeParameters quota.
  'ssm.GetParameter': { rate: 40, ops: ['AmazonSSM.GetParameter', 'AmazonSSM.GetParameters', 'AmazonSSM.GetParametersByPath', 'AmazonSSM.DescribeParameters'] },
  // ACM: assumed figures (PROTOCOLS.md gives none): DescribeCertificate 10/s, ExportCertificate 5/s.
  'acm.DescribeCertificate': { rate: 10, ops: ['CertificateManager.DescribeCertificate'] },
  'acm.ExportCertificate': { rate: 5, ops: ['CertificateManager.ExportCertificate'] },
  // ACM PCA: assumed figures (PROTOCOLS.md gives none): IssueCertificate 25/s, GetCertificate 50/s.
  'acm-pca.IssueCertificate': { rate: 25, ops: ['ACMPrivateCA.IssueCertificate'] },
  'acm-pca.GetCertificate': { rate: 50, ops: ['ACMPrivateCA.GetCertificate'] },
  'kms.symmetric': { rate: 10_000, ops: ['TrentService.Encrypt', 'TrentService.Decrypt'] },
  'kms.rsa': { rate: 500, ops: ['TrentService.Sign', 'TrentService.Encrypt', 'TrentService.Decrypt'] },
  'kms.ecc': { rate: 300, ops: ['TrentService.Sign'] },
};

/** `denied`: AccessDeniedException, as when the caller's IAM policy lacks the operation's action. */
export type FaultKind = 'throttle' | '5xx' | 'hang' | 'close' | 'latency' | 'denied';

export interface FaultRule {
  /** `Target.Operation` as in X-Amz-Target, e.g. `secretsmanager.GetSecretValue`; all when absent. */
  op?: string;
  kind: FaultKind;
  /** How many matching requests the rule affects (default 1; Infinity allowed). */
  count?: number;
  /** Delay for `latency`. */
  ms?: number;
  /** Status for `5xx` (default 500). */
  status?: 500 | 502 | 503 | 504;
}

export interface FaultHandle {
  readonly fired: number;
  remove(): void;
}

export interface SeenCaller {
  op: string;
  accessKeyId: string;
  sessionToken?: string;
}

export interface AwsPeerOptions {
  credentials?: AwsCredentials[];
  region?: string;
  /** true: AWS's rates from QUOTA_BUCKETS; a record: those with the named buckets overridden. */
  quotas?: boolean | Record<string, number>;
  /** GetParametersByPath and DescribeParameters answer short and empty pages that still carry a NextToken. */
  shortPages?: boolean;
  /** Epoch milliseconds; drives SigV4 skew checks, timestamps and quota refill. */
  now?: () => number;
  /** Serve HTTPS with this key and certificate on 127.0.0.1 (`port`, default any free one) instead of HTTP. */
  tls?: { key: string; cert: string; port?: number };
}

export interface SeenHost {
  op: string;
  /** The Host header (signed by SigV4). */
  host: string;
  /** The TLS server name the client sent; undefined over HTTP or without SNI. */
  servername: string | undefined;
}

export interface AwsPeer {
  readonly url: string;
  readonly region: string;
  /** The key pairs accepted; read on every request, so a test may push or remove pairs. */
  readonly credentials: AwsCredentials[];
  readonly calls: Record<string, number>;
  readonly throttled: Record<string, number>;
  readonly rejected: Record<string, number>;
  readonly seenAccessKeys: SeenCaller[];
  readonly seenHosts: SeenHost[];
  /** Exceptions the peer itself threw (answered as 500); a test should expect none. */
  readonly internalErrors: Error[];
  shortPages: boolean;
  callsTotal(): number;
  /** Clears calls, throttled, rejected, seenAccessKeys and seenHosts. */
  resetCalls(): void;
  inject(rule: FaultRule): FaultHandle;
  clearFaults(): void;
  /** A resource policy on the secret that denies every caller (AccessDeniedException). */
  denySecret(name: string): void;
  allowSecret(name: string): void;
  /** The emulated ACM, for its test hooks (export counts, export cipher, renewal status). */
  readonly acm: AcmService;
  /** The emulated ACM PCA, for its test hooks (CAs, RequestInProgress answers, issue records). */
  readonly pca: AcmPcaService;
  /** Runs an operation without HTTP, signing, faults or quotas: for seeding state. */
  invoke(target: string, input: Record<string, unknown>): Promise<unknown>;
  close(): Promise<void>;
}

interface ActiveFault {
  rule: FaultRule;
  remaining: number;
  fired: number;
}

class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(private readonly rate: number, now: number) {
    this.tokens = rate;
    this.last = now;
  }

  take(now: number): boolean {
    this.tokens = Math.min(this.rate, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

export async function startAwsPeer(opts: AwsPeerOptions = {}): Promise<AwsPeer> {
  const now = opts.now ?? Date.now;
  const region = opts.region ?? 'us-east-1';
  const credentials = (opts.credentials ?? [DEFAULT_TEST_CREDENTIALS]).map((c) => ({ ...c }));
  const ctx: ServiceContext = { region, accountId: TEST_ACCOUNT_ID, nowMs: now };
  const kms = new KmsService(ctx);
  const secretsManager = new SecretsManagerService(ctx);
  const ssm = new SsmService(ctx, kms, opts.shortPages === undefined ? {} : { shortPages: opts.shortPages });
  const acm = new AcmService(ctx);
  const pca = new AcmPcaService(ctx);
  const services = new Map<string, EmulatedService>([secretsManager, ssm, kms, acm, pca].map((s) => [s.targetPrefix, s]));

  const buckets = makeBuckets(opts.quotas, now());
  const calls: Record<string, number> = {};
  const throttled: Record<string, number> = {};
  const rejected: Record<string, number> = {};
  const seenAccessKeys: SeenCaller[] = [];
  const seenHosts: SeenHost[] = [];
  const internalErrors: Error[] = [];
  let faults: ActiveFault[] = [];
  const hung = new Set<ServerResponse>();
  const timers = new Set<NodeJS.Timeout>();

  const bump = (m: Record<string, number>, k: string): void => {
    m[k] = (m[k] ?? 0) + 1;
  };

  function sendJson(res: ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}): void {
    if (res.destroyed || res.headersSent) return;
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'Content-Type': 'application/x-amz-json-1.1',
      'Content-Length': Buffer.byteLength(text),
      'x-amzn-RequestId': randomUUID(),
      ...extra,
    });
    res.end(text);
  }

  function sendError(res: ServerResponse, service: EmulatedService | undefined, err: AwsError): void {
    const ns = service?.errorNamespace ?? 'com.amazon.coral.service';
    sendJson(res, err.status, { __type: `${ns}#${err.code}`, message: err.message }, { 'x-amzn-ErrorType': err.code });
  }

  function takeFault(op: string): ActiveFault | undefined {
    const f = faults.find((x) => x.remaining > 0 && (x.rule.op === undefined || x.rule.op === op));
    if (f === undefined) return undefined;
    f.remaining -= 1;
    f.fired += 1;
    return f;
  }

  function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        timers.delete(t);
        resolve();
      }, ms);
      timers.add(t);
    });
  }

  async function handle(req: IncomingMessage, res: ServerResponse, body: Buffer): Promise<void> {
    const rawTarget = req.headers['x-amz-target'];
    const target = typeof rawTarget === 'string' ? rawTarget : '';
    const dot = target.indexOf('.');
    const service = dot > 0 ? services.get(target.slice(0, dot)) : undefined;
    if (req.method !== 'POST' || service === undefined) {
      bump(rejected, 'UnknownOperationException');
      sendError(res, service, new AwsError('UnknownOperationException', 'The operation is not supported by this endpoint.', 400));
      return;
    }
    const opName = target.slice(dot + 1);
    if (!(req.headers['content-type'] ?? '').startsWith('application/x-amz-json-1.1')) {
      bump(rejected, 'UnknownOperationException');
      sendError(res, service, new AwsError('UnknownOperationException', 'Content-Type must be application/x-amz-json-1.1.', 400));
      return;
    }

    let caller;
    try {
      caller = verifySigV4(
        { method: req.method, rawUrl: req.url ?? '/', rawHeaders: req.rawHeaders, body },
        { region, service: service.signingName, nowMs: now(), findCredentials: (id) => credentials.find((c) => c.accessKeyId === id) },
      );
    } catch (e) {
      if (!(e instanceof AwsError)) throw e;
      bump(rejected, e.code);
      sendError(res, service, e);
      return;
    }
    bump(calls, target);
    seenAccessKeys.push({ op: target, ...caller });
    if (seenAccessKeys.length > MAX_SEEN) seenAccessKeys.shift();
    const sni = (req.socket as Partial<TLSSocket>).servername;
    seenHosts.push({ op: target, host: req.headers.host ?? '', servername: typeof sni === 'string' ? sni : undefined });
    if (seenHosts.length > MAX_SEEN) seenHosts.shift();

    const fault = takeFault(target);
    if (fault !== undefined) {
      switch (fault.rule.kind) {
        case 'latency':
          await sleep(fault.rule.ms ?? 100);
          break;
        case 'throttle':
          bump(throttled, target);
          sendError(res, service, new AwsError('ThrottlingException', 'Rate exceeded', 400));
          return;
        case '5xx': {
          const status = fault.rule.status ?? 500;
          const err = status === 500
            ? new AwsError(service.internalError.code, service.internalError.message, 500)
            : new AwsError('ServiceUnavailableException', 'Service Unavailable', status);
          sendError(res, service, err);
          return;
        }
        case 'denied':
          sendError(res, service, new AwsError('AccessDeniedException',
            `User: arn:aws:iam::${TEST_ACCOUNT_ID}:user/certd-test is not authorized to perform: ${service.signingName}:${opName} because no identity-based policy allows the ${service.signingName}:${opName} action`));
          return;
        case 'hang':
          hung.add(res);
          res.on('close', () => hung.delete(res));
          return;
        case 'close':
          req.socket.destroy();
          return;
      }
    }

    let input: Record<string, unknown>;
    try {
      const parsed: unknown = body.length === 0 ? {} : JSON.parse(body.toString('utf8'));
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
      input = parsed as Record<string, unknown>;
    } catch {
      sendError(res, service, new AwsError('SerializationException', 'Start of structure or map found where not expected.'));
      return;
    }

    const bucket = buckets === undefined ? undefined : buckets.get(bucketFor(target, input, kms));
    if (bucket !== undefined && !bucket.take(now())) {
      bump(throttled, target);
      sendError(res, service, new AwsError('ThrottlingException', 'Rate exceeded', 400));
      return;
    }

    const operation = service.operations[opName];
    if (operation === undefined) {
      sendError(res, service, new AwsError('UnknownOperationException', `The operation ${opName} is not supported by this endpoint.`));
      return;
    }
    sendJson(res, 200, await operation(input));
  }

  const serve = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        sendError(res, undefined, new AwsError('RequestEntityTooLargeException', 'Request body too large.', 413));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (size > MAX_BODY_BYTES) return;
      // SigV4 hashes the body bytes as sent, so they stay a Buffer until after verification.
      handle(req, res, Buffer.concat(chunks)).catch((e: unknown) => {
        const target = String(req.headers['x-amz-target'] ?? '');
        if (e instanceof AwsError) {
          sendError(res, services.get(target.slice(0, target.indexOf('.'))), e);
          return;
        }
        internalErrors.push(e instanceof Error ? e : new Error(String(e)));
        sendError(res, undefined, new AwsError('InternalFailure', 'The request processing has failed because of an unknown error.', 500));
      });
    });
  };
  const listening = opts.tls ? await listenHttps(serve, opts.tls) : await listenHttp(serve);

  return {
    url: listening.url,
    region,
    credentials,
    calls,
    throttled,
    rejected,
    seenAccessKeys,
    seenHosts,
    internalErrors,
    get shortPages() {
      return ssm.shortPages;
    },
    set shortPages(v: boolean) {
      ssm.shortPages = v;
    },
    callsTotal: () => Object.values(calls).reduce((a, b) => a + b, 0),
    resetCalls() {
      for (const m of [calls, throttled, rejected]) for (const k of Object.keys(m)) delete m[k];
      seenAccessKeys.length = 0;
      seenHosts.length = 0;
    },
    inject(rule: FaultRule): FaultHandle {
      const f: ActiveFault = { rule, remaining: rule.count ?? 1, fired: 0 };
      faults.push(f);
      return {
        get fired() {
          return f.fired;
        },
        remove() {
          faults = faults.filter((x) => x !== f);
        },
      };
    },
    clearFaults() {
      faults = [];
    },
    denySecret: (name) => secretsManager.deny(name),
    allowSecret: (name) => secretsManager.allow(name),
    acm,
    pca,
    async invoke(target, input) {
      const dot = target.indexOf('.');
      const op = services.get(target.slice(0, dot))?.operations[target.slice(dot + 1)];
      if (op === undefined) throw new Error(`unknown operation ${target}`);
      return op(input);
    },
    close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const res of hung) res.destroy();
      pca.close();
      return listening.close();
    },
  };
}

function makeBuckets(quotas: AwsPeerOptions['quotas'], now: number): Map<string, TokenBucket> | undefined {
  if (quotas === undefined || quotas === false) return undefined;
  const overrides = quotas === true ? {} : quotas;
  for (const name of Object.keys(overrides)) {
    if (!(name in QUOTA_BUCKETS)) throw new Error(`unknown quota bucket ${name}; known: ${Object.keys(QUOTA_BUCKETS).join(', ')}`);
  }
  return new Map(Object.entries(QUOTA_BUCKETS).map(([name, b]) => [name, new TokenBucket(overrides[name] ?? b.rate, now)]));
}

/** The bucket an operation draws from; KMS operations draw by the type of the key involved. */
function bucketFor(target: string, input: Record<string, unknown>, kms: KmsService): string {
  if (target.startsWith('TrentService.')) {
    let spec = 'SYMMETRIC_DEFAULT';
    const keyId = input['KeyId'];
    if (typeof keyId === 'string') {
      try {
        spec = kms.resolve(keyId).spec;
      } catch {
        // An unknown key is answered by the operation itself; charge the symmetric bucket.
      }
    }
    if (!['TrentService.Sign', 'TrentService.Encrypt', 'TrentService.Decrypt'].includes(target)) return '';
    return spec.startsWith('RSA_') ? 'kms.rsa' : spec.startsWith('ECC_') ? 'kms.ecc' : 'kms.symmetric';
  }
  for (const [name, b] of Object.entries(QUOTA_BUCKETS)) if (b.ops.includes(target)) return name;
  return '';
}
