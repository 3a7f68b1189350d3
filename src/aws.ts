/**
 * What every AWS-backed provider shares: one SDK client per (service, region, endpoint,
 * timeout) for the life of the runtime, loaded with a dynamic import only when a certificate
 * uses that service; one place that turns SDK errors into certd's messages; request metrics.
 *
 * Credentials and endpoints are the SDK's default chain: environment, shared files, ECS/EKS
 * container credentials (AWS_CONTAINER_CREDENTIALS_FULL_URI with
 * AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)), IMDSv2; AWS_ENDPOINT_URL_<SERVICE> and
 * AWS_ENDPOINT_URL unless the config gives `endpoint`.
 *
 * Retries: the SDK retries throttling, 5xx, timeouts and resets (adaptive mode: exponential
 * backoff with full jitter plus a client-side rate limiter that slows down when AWS throttles,
 * which is what a fleet sharing one account's quota needs). The cycle retries what is still
 * failing after that, so nothing here loops.
 */
import type { ProviderDeps } from './contracts.js';
import { parseDuration } from './duration.js';
import { CertdError, messageOf } from './errors.js';

export type AwsService = 'secrets-manager' | 'ssm' | 'kms' | 'acm' | 'acm-pca';

export interface AwsLocation {
  readonly region?: string | undefined;
  readonly endpoint?: string | undefined;
  /** A duration string ("10s"); bounds one HTTP attempt. */
  readonly request_timeout?: string | undefined;
}

/** The least of an SDK client certd uses: `send` with an abort signal. */
export interface AwsClient {
  send(command: unknown, options?: { abortSignal?: AbortSignal }): Promise<unknown>;
  destroy(): void;
}

/** SDK attempts per request: the first try and three retries. */
export const AWS_MAX_ATTEMPTS = 4;

interface SharedClient {
  readonly client: AwsClient;
  close(): Promise<void>;
}

function clientOptions(loc: AwsLocation): Record<string, unknown> {
  const requestTimeout = parseDuration(loc.request_timeout ?? '10s');
  return {
    ...(loc.region ? { region: loc.region } : {}),
    ...(loc.endpoint ? { endpoint: loc.endpoint } : {}),
    maxAttempts: AWS_MAX_ATTEMPTS,
    retryMode: 'adaptive',
    // Without throwOnRequestTimeout the SDK only logs a hung request and waits forever.
    requestHandler: { requestTimeout, connectionTimeout: Math.min(requestTimeout, 5_000), throwOnRequestTimeout: true },
  };
}

/** ACM Private CA on the wire (no SDK client of the same generation as the others: see aws-json-client.ts). */
export const ACM_PCA_SPEC = { targetPrefix: 'ACMPrivateCA', signingName: 'acm-pca', endpointPrefix: 'acm-pca', envName: 'ACM_PCA' } as const;

async function makeClient(service: AwsService, loc: AwsLocation, deps: ProviderDeps): Promise<AwsClient> {
  if (service === 'acm-pca') {
    const m = await import('./aws-json-client.js');
    // Signed at certd's clock, so that a test's fake clock and the peer's agree.
    return new m.AwsJsonClient(ACM_PCA_SPEC, loc, { now: () => deps.clock.now() });
  }
  const options = clientOptions(loc);
  switch (service) {
    case 'secrets-manager': {
      const m = await import('@aws-sdk/client-secrets-manager');
      return new m.SecretsManagerClient(options) as unknown as AwsClient;
    }
    case 'ssm': {
      const m = await import('@aws-sdk/client-ssm');
      return new m.SSMClient(options) as unknown as AwsClient;
    }
    case 'kms': {
      const m = await import('@aws-sdk/client-kms');
      return new m.KMSClient(options) as unknown as AwsClient;
    }
    case 'acm': {
      const m = await import('@aws-sdk/client-acm');
      return new m.ACMClient(options) as unknown as AwsClient;
    }
  }
}

/** The key of the shared client, also the key of batchers bound to that client. */
export function clientKey(service: AwsService, loc: AwsLocation): string {
  return `aws:${service}:${loc.region ?? '(sdk default region)'}:${loc.endpoint ?? '(sdk default endpoint)'}:${loc.request_timeout ?? '10s'}`;
}

/** The shared SDK client for `service` at `loc`, created on first use. */
export async function awsClient(deps: ProviderDeps, service: AwsService, loc: AwsLocation): Promise<AwsClient> {
  const shared = deps.shared<Promise<SharedClient>>(clientKey(service, loc), () =>
    makeClient(service, loc, deps).then((client) => ({ client, close: async () => client.destroy() })),
  );
  return (await shared).client;
}

/** The SDK's command classes, loaded lazily like the clients. */
export const sdk = {
  secretsManager: () => import('@aws-sdk/client-secrets-manager'),
  ssm: () => import('@aws-sdk/client-ssm'),
  kms: () => import('@aws-sdk/client-kms'),
  acm: () => import('@aws-sdk/client-acm'),
};

/** What a request was for, so a failure reads "fetching web from secrets-manager:prod/web: ...". */
export interface AwsRequestContext {
  /** "fetching web from secrets-manager:prod/web" */
  readonly doing: string;
  /** Metrics label of the source ("secrets-manager", "ssm", "kms"). */
  readonly source: string;
  /** The operation, for metrics and messages: "BatchGetSecretValue". */
  readonly operation: string;
  /** The IAM actions the caller needs, for access-denied messages. */
  readonly actions: readonly string[];
  /** The resource the request is about (secret id, parameter names, key id). */
  readonly resource: string;
  /** What to check when the resource does not exist. */
  readonly notFoundHint?: string | undefined;
  /** Extra advice for KMS InvalidCiphertextException (the encryption context used). */
  readonly ciphertextHint?: string | undefined;
}

interface SdkErrorShape {
  name?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number; attempts?: number };
  $retryable?: unknown;
  code?: string;
}

const THROTTLING = new Set(['ThrottlingException', 'Throttling', 'TooManyRequestsException', 'RequestLimitExceeded', 'ThrottledException', 'LimitExceededException']);
const NOT_FOUND = new Set(['ResourceNotFoundException', 'ParameterNotFound', 'ParameterVersionNotFound', 'NotFoundException']);
const DENIED = new Set(['AccessDeniedException', 'AccessDenied', 'UnauthorizedOperation']);
const BAD_CREDENTIALS = new Set(['UnrecognizedClientException', 'InvalidSignatureException', 'InvalidClientTokenId', 'SignatureDoesNotMatch', 'IncompleteSignature']);
const KMS_KEY_STATE = new Set(['DisabledException', 'KMSInvalidStateException', 'KeyUnavailableException', 'InvalidKeyUsageException', 'IncorrectKeyException']);

/** True for an access-denied answer, raw from the SDK or as the CertdError `awsError` made of it. */
export function isAccessDenied(err: unknown): boolean {
  const name = err instanceof CertdError ? err.details['aws'] : (err as SdkErrorShape | undefined)?.name;
  return typeof name === 'string' && DENIED.has(name);
}

export function isThrottling(err: unknown): boolean {
  const e = err as SdkErrorShape;
  return THROTTLING.has(e?.name ?? '') || e?.$metadata?.httpStatusCode === 429;
}

/**
 * A CertdError E_SOURCE for an SDK failure: one clear sentence naming what was done, the
 * resource, and what to check. Not found, access denied, bad credentials, a refused ciphertext
 * and a disabled key are permanent (retrying cannot fix them); throttling, 5xx, timeouts and
 * network errors are not. Messages are scrubbed by CertdError (no request ids, no key ids).
 */
export function awsError(err: unknown, ctx: AwsRequestContext): CertdError {
  if (err instanceof CertdError) return err;
  const e = (err ?? {}) as SdkErrorShape;
  const name = e.name ?? 'Error';
  const detail = (e.message ?? '').trim();
  const status = e.$metadata?.httpStatusCode;
  const attempts = e.$metadata?.attempts;
  const make = (text: string, permanent: boolean) =>
    new CertdError('E_SOURCE', `${ctx.doing}: ${text}`, { cause: err, permanent, details: { aws: name, operation: ctx.operation, resource: ctx.resource, ...(status ? { status } : {}) } });
  if (NOT_FOUND.has(name)) {
    return make(`not found: ${ctx.resource} does not exist${ctx.notFoundHint ? ` (${ctx.notFoundHint})` : ''}`, true);
  }
  if (DENIED.has(name)) {
    return make(`access denied: the role needs ${ctx.actions.join(' and ')} on ${ctx.resource}${detail ? `; AWS said: ${detail}` : ''}`, true);
  }
  if (BAD_CREDENTIALS.has(name)) {
    return make(`the AWS credentials were refused (${name}): check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the profile or the container role`, true);
  }
  if (name === 'ExpiredTokenException' || name === 'ExpiredToken') {
    return make('the AWS session token has expired: the credentials are refreshed on the next attempt', false);
  }
  if (name === 'InvalidCiphertextException') {
    return make(`KMS refused to decrypt ${ctx.resource} (InvalidCiphertextException): ${ctx.ciphertextHint ?? 'the ciphertext or its encryption context is not what was used at Encrypt'}`, true);
  }
  if (KMS_KEY_STATE.has(name)) {
    return make(`the KMS key cannot be used (${name})${detail ? `: ${detail}` : ''}`, true);
  }
  if (name === 'DecryptionFailure') {
    return make(`Secrets Manager could not decrypt ${ctx.resource} with its KMS key: the role needs kms:Decrypt on that key`, true);
  }
  if (name === 'MalformedCSRException') {
    return make(`AWS Private CA refused the certificate signing request (MalformedCSRException)${detail ? `: ${detail}` : ''}`, true);
  }
  if (name === 'InvalidStateException') {
    return make(`the private CA cannot do this in its current state (InvalidStateException; it must be ACTIVE)${detail ? `: ${detail}` : ''}`, true);
  }
  if (name === 'RequestFailedException') {
    return make(`AWS Private CA could not issue the certificate (RequestFailedException)${detail ? `: ${detail}` : ''}`, false);
  }
  if (name === 'ValidationException' || name === 'InvalidParameterException' || name === 'InvalidRequestException' || name === 'InvalidArgsException' || name === 'InvalidArnException') {
    return make(`the request was refused as invalid (${name})${detail ? `: ${detail}` : ''}`, true);
  }
  if (/region is missing/i.test(detail)) {
    return new CertdError('E_CONFIG', `${ctx.doing}: no AWS region: set region in the config or AWS_REGION`, { cause: err, permanent: true });
  }
  if (name === 'CredentialsProviderError' || /could not load credentials/i.test(detail)) {
    return make(`no AWS credentials found (environment, shared files, container credentials, IMDS): ${detail || name}`, false);
  }
  const tries = attempts && attempts > 1 ? ` after ${attempts} attempts` : '';
  if (isThrottling(err)) return make(`throttled by AWS${tries} (${name})`, false);
  if (name === 'TimeoutError' || /timed? ?out|ETIMEDOUT/i.test(detail)) return make(`no answer within request_timeout${tries}`, false);
  if (status !== undefined && status >= 500) return make(`AWS answered ${status} ${name}${tries}`, false);
  return make(`${name}${detail ? `: ${detail}` : ''}${tries}`, false);
}

/**
 * Sends one command and counts it in `sourceRequest(source, operation, result)`. Honours
 * `signal` (the cycle's): an abort ends the request at once.
 */
export async function awsSend<T>(deps: ProviderDeps, client: AwsClient, command: unknown, signal: AbortSignal, ctx: AwsRequestContext): Promise<T> {
  try {
    const out = (await client.send(command, { abortSignal: signal })) as T;
    deps.metrics?.sourceRequest(ctx.source, ctx.operation, 'ok');
    return out;
  } catch (err) {
    deps.metrics?.sourceRequest(ctx.source, ctx.operation, isThrottling(err) ? 'throttled' : 'error');
    if (signal.aborted) {
      throw new CertdError('E_SOURCE', `${ctx.doing}: stopped (${messageOf(signal.reason ?? 'aborted')})`, { cause: err });
    }
    throw awsError(err, ctx);
  }
}
