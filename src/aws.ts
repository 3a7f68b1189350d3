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
 * FIPS endpoints (`use_fips_endpoint`): the SDK resolves `<service>-fips.<region>.amazonaws.com`
 * when asked to. Precedence: the source's `use_fips_endpoint`, the top-level one,
 * AWS_USE_FIPS_ENDPOINT, then true when fips_runtime is require or require-host; otherwise the
 * SDK's own chain decides (the shared config file's use_fips_endpoint, else false). The SDK
 * refuses FIPS with a custom endpoint, so an explicit endpoint is used as given (it must itself
 * be a FIPS endpoint when FIPS is wanted; certd warns). Every request's host is recorded for the
 * certificate that made it (endpoints.ts).
 *
 * Retries: the SDK retries throttling, 5xx, timeouts and resets (adaptive mode: exponential
 * backoff with full jitter plus a client-side rate limiter that slows down when AWS throttles,
 * which is what a fleet sharing one account's quota needs). The cycle retries what is still
 * failing after that, so nothing here loops.
 */
import type { ProviderDeps } from './contracts.js';
import { parseDuration } from './duration.js';
import { type EndpointKind, recordEndpoint } from './endpoints.js';
import { CertdError, messageOf } from './errors.js';
import { requiresFips } from './fips.js';

export type AwsService = 'secrets-manager' | 'ssm' | 'kms' | 'acm' | 'acm-pca';

export interface AwsLocation {
  readonly region?: string | undefined;
  readonly endpoint?: string | undefined;
  /** A duration string ("10s"); bounds one HTTP attempt. */
  readonly request_timeout?: string | undefined;
  /** The source's own use_fips_endpoint; it overrides every runtime-wide setting. */
  readonly use_fips_endpoint?: boolean | undefined;
}

/** The AWS keys of a source's config (awsFields of schema.ts) as a location. */
export function awsLocation(c: AwsLocation): AwsLocation {
  return { region: c.region, endpoint: c.endpoint, request_timeout: c.request_timeout, use_fips_endpoint: c.use_fips_endpoint };
}

/** The runtime-wide inputs of the FIPS endpoint choice (the same for every client of a runtime). */
export interface AwsSettings {
  /** The top-level `use_fips_endpoint`. */
  readonly useFipsEndpoint?: boolean | undefined;
  /** AWS_USE_FIPS_ENDPOINT, parsed. */
  readonly envUseFipsEndpoint?: boolean | undefined;
  /** fips_runtime is require or require-host. */
  readonly fipsRequired: boolean;
}

/**
 * The runtime-wide settings of a config and environment. AWS_USE_FIPS_ENDPOINT must be "true"
 * or "false" (what the SDK itself accepts); anything else is E_CONFIG.
 */
export function awsSettings(config: { readonly use_fips_endpoint?: boolean | undefined; readonly fips_runtime?: string | undefined }, env: NodeJS.ProcessEnv): AwsSettings {
  const raw = env['AWS_USE_FIPS_ENDPOINT'];
  if (raw !== undefined && raw !== 'true' && raw !== 'false') {
    throw new CertdError('E_CONFIG', `AWS_USE_FIPS_ENDPOINT: expected "true" or "false", got ${JSON.stringify(raw.slice(0, 20))}`, { permanent: true });
  }
  return {
    useFipsEndpoint: config.use_fips_endpoint,
    envUseFipsEndpoint: raw === undefined ? undefined : raw === 'true',
    fipsRequired: requiresFips(config.fips_runtime),
  };
}

/** Where a client's use_fips_endpoint came from. */
export type FipsEndpointFrom = 'source' | 'config' | 'AWS_USE_FIPS_ENDPOINT' | 'fips_runtime' | 'sdk';

export interface EndpointChoice {
  /** What the client is given as useFipsEndpoint; undefined leaves it to the SDK's chain. */
  readonly useFipsEndpoint: boolean | undefined;
  /** Whether FIPS endpoints are wanted (undefined: the SDK's chain decides). */
  readonly fips: boolean | undefined;
  readonly from: FipsEndpointFrom;
  /** The explicit endpoint, when one is set: "endpoint https://..." or "AWS_ENDPOINT_URL_SSM https://...". */
  readonly custom: string | undefined;
}

const ENDPOINT_ENV: Readonly<Record<AwsService, string>> = {
  'secrets-manager': 'AWS_ENDPOINT_URL_SECRETS_MANAGER',
  ssm: 'AWS_ENDPOINT_URL_SSM',
  kms: 'AWS_ENDPOINT_URL_KMS',
  acm: 'AWS_ENDPOINT_URL_ACM',
  'acm-pca': 'AWS_ENDPOINT_URL_ACM_PCA',
};

/** The endpoint `service` is given explicitly (config, else the SDK's environment variables). */
function customEndpoint(service: AwsService, loc: AwsLocation, env: NodeJS.ProcessEnv): string | undefined {
  if (loc.endpoint) return `endpoint ${loc.endpoint}`;
  if (env['AWS_IGNORE_CONFIGURED_ENDPOINT_URLS'] === 'true') return undefined;
  for (const name of [ENDPOINT_ENV[service], 'AWS_ENDPOINT_URL']) {
    const value = env[name];
    if (value) return `${name} ${value}`;
  }
  return undefined;
}

/** How a client of `service` at `loc` picks its endpoint (the precedence in this file's header). */
export function endpointChoice(service: AwsService, loc: AwsLocation, settings: AwsSettings, env: NodeJS.ProcessEnv): EndpointChoice {
  const [fips, from]: [boolean | undefined, FipsEndpointFrom] =
    loc.use_fips_endpoint !== undefined ? [loc.use_fips_endpoint, 'source']
    : settings.useFipsEndpoint !== undefined ? [settings.useFipsEndpoint, 'config']
    : settings.envUseFipsEndpoint !== undefined ? [settings.envUseFipsEndpoint, 'AWS_USE_FIPS_ENDPOINT']
    : settings.fipsRequired ? [true, 'fips_runtime']
    : [undefined, 'sdk'];
  const custom = customEndpoint(service, loc, env);
  // The SDK refuses FIPS with a custom endpoint ("FIPS and custom endpoint are not supported"),
  // also when AWS_USE_FIPS_ENDPOINT asks for it: the custom endpoint is used as given.
  return { useFipsEndpoint: custom !== undefined ? false : fips, fips, from, custom };
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

/** The SDK client's options for `loc` with the FIPS endpoint choice made (see endpointChoice). */
export function clientOptions(loc: AwsLocation, choice: Pick<EndpointChoice, 'useFipsEndpoint'>): Record<string, unknown> {
  const requestTimeout = parseDuration(loc.request_timeout ?? '10s');
  return {
    ...(loc.region ? { region: loc.region } : {}),
    ...(loc.endpoint ? { endpoint: loc.endpoint } : {}),
    ...(choice.useFipsEndpoint !== undefined ? { useFipsEndpoint: choice.useFipsEndpoint } : {}),
    maxAttempts: AWS_MAX_ATTEMPTS,
    retryMode: 'adaptive',
    // Without throwOnRequestTimeout the SDK only logs a hung request and waits forever.
    requestHandler: { requestTimeout, connectionTimeout: Math.min(requestTimeout, 5_000), throwOnRequestTimeout: true },
  };
}

/** The SDK client itself, with the middleware that records each request's host. */
interface SdkClient extends AwsClient {
  readonly config: { useFipsEndpoint(): Promise<boolean> };
  readonly middlewareStack: {
    add(mw: (next: (args: { request: unknown }) => Promise<unknown>) => (args: { request: unknown }) => Promise<unknown>, options: { step: string; name: string; priority?: string }): void;
  };
}

/** ACM Private CA on the wire (no SDK client of the same generation as the others: see aws-json-client.ts). */
export const ACM_PCA_SPEC = { targetPrefix: 'ACMPrivateCA', signingName: 'acm-pca', endpointPrefix: 'acm-pca', envName: 'ACM_PCA' } as const;

async function makeClient(deps: ProviderDeps, service: AwsService, loc: AwsLocation): Promise<AwsClient> {
  const choice = endpointChoice(service, loc, deps.aws ?? awsSettings({}, deps.env), deps.env);
  if (choice.custom !== undefined && choice.fips === true) {
    deps.log.warn(
      { step: 'aws', service, endpoint: choice.custom, use_fips_endpoint: true, from: choice.from },
      `${service}: ${choice.custom} is used as given (a custom endpoint); use_fips_endpoint does not apply to it, so it must itself be a FIPS endpoint`,
    );
  }
  if (service === 'acm-pca') {
    const m = await import('./aws-json-client.js');
    // No SDK chain to defer to: "the SDK decides" (no setting anywhere) means the ordinary endpoint.
    const fips = choice.custom === undefined && choice.fips === true;
    const kind: EndpointKind = choice.custom !== undefined ? 'custom' : fips ? 'fips' : 'standard';
    return new m.AwsJsonClient(ACM_PCA_SPEC, loc, {
      env: deps.env,
      useFipsEndpoint: fips,
      // Signed at certd's clock, so that a test's fake clock and the peer's agree.
      now: () => deps.clock.now(),
      onRequest: (host) => recordEndpoint({ service, host, kind }),
    });
  }
  const client = await sdkClient(service, clientOptions(loc, choice));
  // What the SDK resolved (the shared config file included when nothing above decided).
  const kind: EndpointKind = choice.custom !== undefined ? 'custom' : (await client.config.useFipsEndpoint()) ? 'fips' : 'standard';
  client.middlewareStack.add(
    (next) => async (args) => {
      const r = args.request as { hostname?: string; port?: number; protocol?: string };
      if (r.hostname) {
        const port = r.port !== undefined && r.port !== (r.protocol === 'http:' ? 80 : 443) ? `:${r.port}` : '';
        recordEndpoint({ service, host: `${r.hostname}${port}`, kind });
      }
      return next(args);
    },
    // After the endpoint is resolved and the request built; once per attempt.
    { step: 'finalizeRequest', name: 'certdRecordEndpoint', priority: 'low' },
  );
  return client;
}

async function sdkClient(service: Exclude<AwsService, 'acm-pca'>, options: Record<string, unknown>): Promise<SdkClient> {
  switch (service) {
    case 'secrets-manager': {
      const m = await import('@aws-sdk/client-secrets-manager');
      return new m.SecretsManagerClient(options) as unknown as SdkClient;
    }
    case 'ssm': {
      const m = await import('@aws-sdk/client-ssm');
      return new m.SSMClient(options) as unknown as SdkClient;
    }
    case 'kms': {
      const m = await import('@aws-sdk/client-kms');
      return new m.KMSClient(options) as unknown as SdkClient;
    }
    case 'acm': {
      const m = await import('@aws-sdk/client-acm');
      return new m.ACMClient(options) as unknown as SdkClient;
    }
  }
}

/**
 * The key of the shared client, also the key of batchers bound to that client. The runtime-wide
 * inputs of the FIPS choice (AwsSettings) are the same for every client of a runtime, so the
 * source's own use_fips_endpoint is what tells two clients apart.
 */
export function clientKey(service: AwsService, loc: AwsLocation): string {
  const fips = loc.use_fips_endpoint === undefined ? '(fips: runtime default)' : `fips=${loc.use_fips_endpoint}`;
  return `aws:${service}:${loc.region ?? '(sdk default region)'}:${loc.endpoint ?? '(sdk default endpoint)'}:${fips}:${loc.request_timeout ?? '10s'}`;
}

/** The shared SDK client for `service` at `loc`, created on first use. */
export async function awsClient(deps: ProviderDeps, service: AwsService, loc: AwsLocation): Promise<AwsClient> {
  const shared = deps.shared<Promise<SharedClient>>(clientKey(service, loc), () =>
    makeClient(deps, service, loc).then((client) => ({ client, close: async () => client.destroy() })),
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
  if (/FIPS and custom endpoint are not supported/i.test(detail)) {
    // Only an endpoint certd does not see can get here: endpoint_url in the shared config file.
    return new CertdError('E_CONFIG', `${ctx.doing}: the SDK has a custom endpoint (endpoint_url in the AWS config file?) and FIPS endpoints were asked for: give the endpoint in certd's config, or set use_fips_endpoint: false`, { cause: err, permanent: true });
  }
  const noFipsHost = /ENOTFOUND (\S*-fips\.\S+)/.exec(detail);
  if (noFipsHost) {
    return make(`${noFipsHost[1]} does not resolve: AWS offers FIPS endpoints only in some regions (US, Canada, GovCloud); check the region, or set use_fips_endpoint: false or an endpoint for this source`, false);
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
