/**
 * A small AWS JSON 1.1 client for a service certd has no SDK client for (ACM Private CA: the
 * `@aws-sdk/client-acm-pca` on the registry is years behind the other 3.x clients). It signs
 * with @smithy/signature-v4 (the SDK's own signer) using the SDK's default credential chain
 * (@aws-sdk/credential-provider-node), sends with undici, and behaves like the SDK clients of
 * aws.ts where certd depends on it:
 *
 * - `send({ operation, input }, { abortSignal })` (the `AwsClient` shape, so `awsSend` and
 *   `awsError` of aws.ts serve it unchanged); failures are errors with the SDK's `name`
 *   (the part of `__type` after `#`), `message` and `$metadata: { httpStatusCode, attempts }`.
 * - Endpoint: `endpoint` of the config, else AWS_ENDPOINT_URL_<SERVICE>, else AWS_ENDPOINT_URL
 *   (both skipped with AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true), else
 *   `https://<prefix>.<region>.amazonaws.com`, or `<prefix>-fips` when `useFipsEndpoint` (which
 *   aws.ts decides for every AWS client alike: use_fips_endpoint, AWS_USE_FIPS_ENDPOINT,
 *   fips_runtime). `onRequest` hears the host of every attempt (the endpoint log of status/report).
 * - Region: `region` of the config, else AWS_REGION, else AWS_DEFAULT_REGION.
 * - Retries as the SDK's adaptive mode: AWS_MAX_ATTEMPTS attempts, exponential backoff with full
 *   jitter (base 100 ms, 500 ms after throttling, capped at 20 s) on throttling, 5xx, timeouts
 *   and connection errors; after a throttle the client spaces its requests out (a send rate
 *   that halves on every throttle and recovers on success), since many certificates share one
 *   account's quota.
 * - At most MAX_IN_FLIGHT requests of one client at once; the others queue.
 * - `request_timeout` bounds one attempt; the abort signal ends the whole call at once.
 * - A response body over 1 MiB is refused without being read further.
 */
import { createHash, createHmac, type Hash, type Hmac, randomInt } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import type { AwsClient, AwsLocation } from './aws.js';
import { AWS_MAX_ATTEMPTS } from './aws.js';
import { parseDuration } from './duration.js';

/** What identifies a JSON 1.1 service on the wire. */
export interface JsonServiceSpec {
  /** X-Amz-Target prefix: `ACMPrivateCA`. */
  readonly targetPrefix: string;
  /** SigV4 signing name: `acm-pca`. */
  readonly signingName: string;
  /** Host prefix of the regional endpoint: `acm-pca` (FIPS: `acm-pca-fips`). */
  readonly endpointPrefix: string;
  /** Suffix of AWS_ENDPOINT_URL_<...>: `ACM_PCA`. */
  readonly envName: string;
}

/** One request: the operation name (after the target prefix) and its JSON input. */
export interface JsonCommand {
  readonly operation: string;
  readonly input: Readonly<Record<string, unknown>>;
}

export const MAX_RESPONSE_BYTES = 1 << 20;
/** Requests of one client in flight at once (as Secrets Manager's batches): a fleet's cycle does not burst the account's quota. */
export const MAX_IN_FLIGHT = 4;
const BASE_DELAY_MS = 100;
const THROTTLE_BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 20_000;
const THROTTLING = new Set(['ThrottlingException', 'Throttling', 'TooManyRequestsException', 'RequestLimitExceeded', 'ThrottledException', 'LimitExceededException', 'RequestThrottled', 'RequestThrottledException', 'SlowDown']);
const TRANSIENT = new Set(['RequestTimeout', 'RequestTimeoutException', 'InternalFailure', 'InternalError', 'ServiceUnavailable', 'ServiceUnavailableException']);

/** An error as the SDK throws it: `name` is AWS's error code. */
export class AwsServiceError extends Error {
  readonly $metadata: { httpStatusCode?: number; attempts?: number };
  readonly $fault: 'client' | 'server';

  constructor(name: string, message: string, status: number | undefined) {
    super(message);
    this.name = name;
    this.$metadata = status === undefined ? {} : { httpStatusCode: status };
    this.$fault = status !== undefined && status >= 500 ? 'server' : 'client';
  }
}

/**
 * The service's URL: a configured endpoint as given (`endpoint`, AWS_ENDPOINT_URL_<SERVICE>,
 * AWS_ENDPOINT_URL, as aws.ts's endpointChoice finds them), else AWS's regional endpoint, the
 * `-fips` one when `fips` (endpointChoice's decision: use_fips_endpoint, AWS_USE_FIPS_ENDPOINT,
 * fips_runtime).
 */
export function resolveEndpoint(spec: JsonServiceSpec, loc: AwsLocation, region: string, env: NodeJS.ProcessEnv, fips: boolean): URL {
  const ignoreEnv = env['AWS_IGNORE_CONFIGURED_ENDPOINT_URLS'] === 'true';
  const configured = loc.endpoint || (ignoreEnv ? undefined : env[`AWS_ENDPOINT_URL_${spec.envName}`] || env['AWS_ENDPOINT_URL'] || undefined);
  if (configured !== undefined) return new URL(configured);
  const suffix = region.startsWith('cn-') ? 'amazonaws.com.cn' : 'amazonaws.com';
  return new URL(`https://${spec.endpointPrefix}${fips ? '-fips' : ''}.${region}.${suffix}`);
}

export function resolveRegion(loc: AwsLocation, env: NodeJS.ProcessEnv): string | undefined {
  return loc.region ?? (env['AWS_REGION'] || env['AWS_DEFAULT_REGION'] || undefined);
}

/** SHA-256 and HMAC-SHA-256 with node:crypto (OpenSSL, so the FIPS provider when it is active). */
type SourceData = string | ArrayBuffer | ArrayBufferView;

function bytesOf(data: SourceData): Uint8Array | string {
  if (typeof data === 'string') return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return new Uint8Array(data);
}

class NodeSha256 {
  #h: Hash | Hmac;
  readonly #secret: Uint8Array | string | undefined;

  constructor(secret?: SourceData) {
    this.#secret = secret === undefined ? undefined : bytesOf(secret);
    this.#h = this.#make();
  }

  #make(): Hash | Hmac {
    return this.#secret === undefined ? createHash('sha256') : createHmac('sha256', this.#secret);
  }

  update(data: SourceData): void {
    this.#h.update(bytesOf(data));
  }

  digest(): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(this.#h.digest()));
  }

  reset(): void {
    this.#h = this.#make();
  }
}

/**
 * The client-side rate limiter of adaptive retries: after a throttle, requests are spaced by
 * `gapMs` (doubling on each throttle up to 2 s, halving on each success until it is gone).
 */
class SendPacer {
  #gapMs = 0;
  #nextAt = 0;

  async wait(sleep: (ms: number, signal: AbortSignal) => Promise<void>, signal: AbortSignal): Promise<void> {
    if (this.#gapMs === 0) return;
    const now = Date.now();
    const at = Math.max(now, this.#nextAt);
    this.#nextAt = at + this.#gapMs;
    if (at > now) await sleep(at - now, signal);
  }

  throttled(): void {
    this.#gapMs = Math.min(2_000, Math.max(50, this.#gapMs * 2));
  }

  succeeded(): void {
    this.#gapMs = this.#gapMs < 50 ? 0 : this.#gapMs / 2;
  }
}

/** A counting semaphore whose waiters leave when their signal aborts. */
class Slots {
  #free: number;
  readonly #waiters: (() => void)[] = [];

  constructor(n: number) {
    this.#free = n;
  }

  acquire(signal: AbortSignal): Promise<void> {
    if (this.#free > 0) {
      this.#free -= 1;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const wake = (): void => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = (): void => {
        const i = this.#waiters.indexOf(wake);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(signal.reason);
      };
      if (signal.aborted) return reject(signal.reason);
      this.#waiters.push(wake);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  release(): void {
    const next = this.#waiters.shift();
    if (next) next();
    else this.#free += 1;
  }
}

function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

function isRetryable(err: unknown): { retry: boolean; throttle: boolean } {
  if (err instanceof AwsServiceError) {
    const status = err.$metadata.httpStatusCode ?? 0;
    const throttle = THROTTLING.has(err.name) || status === 429;
    return { retry: throttle || TRANSIENT.has(err.name) || [500, 502, 503, 504].includes(status), throttle };
  }
  // Timeouts and connection errors (undici's and the socket's) are retried, as by the SDK.
  const e = err as { name?: string; code?: string };
  return { retry: e?.name === 'TimeoutError' || /^(UND_ERR_|ECONNRESET|ECONNREFUSED|EPIPE|ETIMEDOUT|EAI_AGAIN|ENOTFOUND)/.test(e?.code ?? ''), throttle: false };
}

export interface AwsJsonClientOptions {
  readonly env?: NodeJS.ProcessEnv;
  /** Credentials instead of the default chain (tests). */
  readonly credentials?: ConstructorParameters<typeof SignatureV4>[0]['credentials'];
  readonly maxAttempts?: number;
  /** Backoff sleeps; real timers by default, as the SDK's. */
  readonly sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** The signing time (certd's clock); the system clock by default. */
  readonly now?: () => Date;
  /** The `-fips` endpoint when no endpoint is configured (default false). */
  readonly useFipsEndpoint?: boolean;
  /** Called with the host (and non-default port) of every attempt. */
  readonly onRequest?: (host: string) => void;
}

export class AwsJsonClient implements AwsClient {
  readonly #spec: JsonServiceSpec;
  readonly #loc: AwsLocation;
  readonly #env: NodeJS.ProcessEnv;
  readonly #timeoutMs: number;
  readonly #maxAttempts: number;
  readonly #sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  readonly #pacer = new SendPacer();
  readonly #slots = new Slots(MAX_IN_FLIGHT);
  readonly #credentials: AwsJsonClientOptions['credentials'] | undefined;
  readonly #now: () => Date;
  readonly #fips: boolean;
  readonly #onRequest: ((host: string) => void) | undefined;
  #signer: Promise<{ signer: SignatureV4; url: URL }> | undefined;
  #agent: import('undici').Agent | undefined;

  constructor(spec: JsonServiceSpec, loc: AwsLocation, opts: AwsJsonClientOptions = {}) {
    this.#spec = spec;
    this.#loc = loc;
    this.#env = opts.env ?? process.env;
    this.#timeoutMs = parseDuration(loc.request_timeout ?? '10s');
    this.#maxAttempts = opts.maxAttempts ?? (Number(this.#env['AWS_MAX_ATTEMPTS']) || AWS_MAX_ATTEMPTS);
    this.#sleep = opts.sleep ?? abortableSleep;
    this.#credentials = opts.credentials;
    this.#now = opts.now ?? (() => new Date());
    this.#fips = opts.useFipsEndpoint ?? false;
    this.#onRequest = opts.onRequest;
  }

  /** The URL requests go to (resolved on first use). */
  async endpoint(): Promise<URL> {
    return (await this.#setup()).url;
  }

  #setup(): Promise<{ signer: SignatureV4; url: URL }> {
    this.#signer ??= (async () => {
      const region = resolveRegion(this.#loc, this.#env);
      // The SDK's wording, which awsError turns into "no AWS region: set region ...".
      if (region === undefined) throw new AwsServiceError('Error', 'Region is missing', undefined);
      const url = resolveEndpoint(this.#spec, this.#loc, region, this.#env, this.#fips);
      let credentials = this.#credentials;
      if (credentials === undefined) {
        const { defaultProvider } = await import('@aws-sdk/credential-provider-node');
        credentials = defaultProvider();
      }
      return { signer: new SignatureV4({ service: this.#spec.signingName, region, credentials, sha256: NodeSha256 }), url };
    })();
    // A failed set-up (no region) is tried again on the next call rather than remembered.
    this.#signer.catch(() => (this.#signer = undefined));
    return this.#signer;
  }

  async send(command: unknown, options: { abortSignal?: AbortSignal } = {}): Promise<unknown> {
    const signal = options.abortSignal ?? new AbortController().signal;
    await this.#slots.acquire(signal);
    try {
      return await this.#send(command as JsonCommand, signal);
    } finally {
      this.#slots.release();
    }
  }

  async #send({ operation, input }: JsonCommand, signal: AbortSignal): Promise<unknown> {
    for (let attempt = 1; ; attempt++) {
      signal.throwIfAborted();
      try {
        await this.#pacer.wait(this.#sleep, signal);
        const out = await this.#attempt(operation, input, signal);
        this.#pacer.succeeded();
        return out;
      } catch (err) {
        if (signal.aborted) throw err;
        const { retry, throttle } = isRetryable(err);
        if (throttle) this.#pacer.throttled();
        if (!retry || attempt >= this.#maxAttempts) {
          if (err instanceof AwsServiceError) (err.$metadata as { attempts?: number }).attempts = attempt;
          throw err;
        }
        const cap = Math.min(MAX_DELAY_MS, (throttle ? THROTTLE_BASE_DELAY_MS : BASE_DELAY_MS) * 2 ** (attempt - 1));
        await this.#sleep(randomInt(0, cap + 1), signal);
      }
    }
  }

  async #attempt(operation: string, input: Readonly<Record<string, unknown>>, signal: AbortSignal): Promise<unknown> {
    const { signer, url } = await this.#setup();
    const body = JSON.stringify(input);
    const host = url.host;
    const path = url.pathname || '/';
    const signed = await signer.sign({
      method: 'POST',
      protocol: url.protocol,
      hostname: url.hostname,
      ...(url.port ? { port: Number(url.port) } : {}),
      path,
      query: {},
      headers: {
        host,
        'content-type': 'application/x-amz-json-1.1',
        'x-amz-target': `${this.#spec.targetPrefix}.${operation}`,
        'content-length': String(Buffer.byteLength(body)),
      },
      body,
    }, { signingDate: this.#now() });
    const { request, Agent } = await import('undici');
    this.#agent ??= new Agent({ connectTimeout: Math.min(this.#timeoutMs, 5_000) });
    this.#onRequest?.(host);
    const attemptSignal = AbortSignal.any([signal, AbortSignal.timeout(this.#timeoutMs)]);
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(signed.headers)) if (k !== 'host') headers[k] = v;
    const res = await request(new URL(path, url), {
      method: 'POST',
      headers,
      body,
      signal: attemptSignal,
      dispatcher: this.#agent,
      headersTimeout: this.#timeoutMs,
      bodyTimeout: this.#timeoutMs,
    }).catch((err: unknown) => {
      throw this.#timedOut(err, attemptSignal, signal);
    });
    const text = await readBounded(res.body, signal).catch((err: unknown) => {
      throw this.#timedOut(err, attemptSignal, signal);
    });
    if (res.statusCode >= 200 && res.statusCode < 300) {
      try {
        return text.length === 0 ? {} : JSON.parse(text);
      } catch {
        throw new AwsServiceError('SerializationException', `the ${operation} answer is not JSON`, res.statusCode);
      }
    }
    throw parseError(text, res.headers['x-amzn-errortype'], res.statusCode);
  }

  /** An attempt ended by request_timeout (not by the caller) reads as the SDK's TimeoutError. */
  #timedOut(err: unknown, attemptSignal: AbortSignal, signal: AbortSignal): unknown {
    if (attemptSignal.aborted && !signal.aborted) return Object.assign(new Error(`no answer within ${this.#timeoutMs} ms`), { name: 'TimeoutError' });
    return err;
  }

  destroy(): void {
    void this.#agent?.close();
    this.#agent = undefined;
  }
}

async function readBounded(body: AsyncIterable<Buffer> & { destroy?: (err?: Error) => unknown }, signal: AbortSignal): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > MAX_RESPONSE_BYTES) {
      body.destroy?.();
      throw new AwsServiceError('ResponseTooLarge', `the answer is larger than ${MAX_RESPONSE_BYTES} bytes`, undefined);
    }
    chunks.push(chunk);
    signal.throwIfAborted();
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** AWS's JSON 1.1 error: `__type` ("ns#Code") or the x-amzn-ErrorType header ("Code:http://..."). */
export function parseError(text: string, errorTypeHeader: string | string[] | undefined, status: number): AwsServiceError {
  let body: Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed === 'object' && parsed !== null) body = parsed as Record<string, unknown>;
  } catch {
    // Not JSON (a proxy's HTML page): the status alone says what happened.
  }
  const header = Array.isArray(errorTypeHeader) ? errorTypeHeader[0] : errorTypeHeader;
  const raw = (typeof body['__type'] === 'string' ? body['__type'] : undefined) ?? (typeof body['code'] === 'string' ? body['code'] : undefined) ?? header?.split(':')[0] ?? (status === 429 ? 'ThrottlingException' : status >= 500 ? 'InternalFailure' : `HTTP${status}`);
  const name = raw.slice(raw.lastIndexOf('#') + 1);
  const message = typeof body['message'] === 'string' ? body['message'] : typeof body['Message'] === 'string' ? body['Message'] : '';
  return new AwsServiceError(name, message.slice(0, 500), status);
}
