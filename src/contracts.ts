/**
 * The contracts every plug-in of certd implements. A provider file in providers/ imports from
 * here (and the helpers of src/) and nothing else of the core.
 *
 * One cycle for one certificate:
 *   source.fetch -> Material -> checkPolicy -> compare with last good -> target.stage (every
 *   target) -> reload (coalesced) -> verify -> target.commit | target.rollback
 */
import type { z } from 'zod';
import type { AwsSettings } from './aws.js';
import type { Clock } from './clock.js';
import type { Logger } from './log.js';
import type { Material } from './material.js';
import type { Metrics } from './metrics.js';

export type { Material } from './material.js';

/** What the cycle tells a source about the certificate it fetches for. */
export interface FetchRef {
  /** The certificate's name in the config ([a-z0-9-]+). */
  readonly name: string;
  /** The last good deployment of this certificate, if any. */
  readonly deployed?: DeployedSummary | undefined;
}

/** The facts of a deployed certificate that the cycle keeps (no key material). */
export interface DeployedSummary {
  readonly fingerprint: string;
  readonly version: string;
  readonly notBefore: string;
  readonly notAfter: string;
}

/**
 * A source delivers a certificate with its key (or key reference).
 *
 * MUST: return a fully parsed Material (see material.ts) or throw a CertdError with code
 * E_SOURCE (or E_PARSE for unparseable content) whose message names the certificate and the
 * remote object ("fetching secrets-manager:prod/web: access denied"); mark errors that retrying
 * cannot fix (not found, access denied, wrong PIN) `permanent`. MUST honour `signal`.
 * MUST NOT log or put key bytes into errors. MAY batch with other sources of its type through
 * `deps.shared` (calls made in the same tick can be coalesced).
 */
export interface Source {
  fetch(ref: FetchRef, signal: AbortSignal): Promise<Material>;
  /**
   * Sources whose calls share one quota (an account's ACM request rate) name the same lane: the
   * cycle runs at most `limit` of the lane's source steps at once, and a certificate's
   * fetch_deadline starts when its turn comes, so waiting behind the quota is not taken for a
   * hung endpoint.
   */
  readonly lane?: SourceLane;
}

export interface SourceLane {
  /** Sources with the same key share the limit ("acm:us-east-1:(sdk default endpoint)"). */
  readonly key: string;
  /** Source steps of the lane in flight at once. */
  readonly limit: number;
}

/**
 * An issuer is a source that mints certificates (local-ca, pkcs11-ca, kms-ca, aws-private-ca).
 * The cycle calls `fetch` only when `dueAt` of what is deployed has passed, so issuing is not
 * repeated each cycle.
 */
export interface Issuer extends Source {
  /** When the deployed certificate must be renewed: renew_before or 2/3 of its lifetime. */
  dueAt(deployed: DeployedSummary): Date;
}

export function isIssuer(source: Source): source is Issuer {
  return typeof (source as Partial<Issuer>).dueAt === 'function';
}

/**
 * A target puts material where a server reads it.
 *
 * `stage` MUST make the new material live atomically (a reader sees the whole old set or the
 * whole new one, never a mix) and MUST remember what was live before, so that `rollback`
 * restores it exactly. `commit` forgets the rollback state and cleans up. Between `stage` and
 * `commit`/`rollback` no other stage happens on the same instance (cycles never overlap).
 * A failing `stage` MUST leave the previous material live (roll itself back before throwing).
 * Errors are CertdError E_TARGET naming the certificate and the place (path, zone, url).
 */
export interface Target {
  /** "tmpfs:/run/certd/web", "nginx-plus-keyval:http://127.0.0.1:8080/api zone=certs". */
  readonly description: string;
  /** False when the server picks the material up by itself (keyval, APISIX, per-SNI files). */
  readonly needsReload: boolean;
  stage(material: Material, signal: AbortSignal): Promise<void>;
  commit(signal: AbortSignal): Promise<void>;
  rollback(signal: AbortSignal): Promise<void>;
}

/**
 * Optional: a source that reads in batches (Secrets Manager BatchGetSecretValue, SSM
 * GetParameters). Sources sharing one batcher (`deps.shared`) return the same `prefetcher`.
 *
 * The cycle calls `prefetch` once per distinct prefetcher, before any fetch, with the refs of
 * every certificate of that prefetcher taking part, so a hundred certificates cost a handful
 * of requests instead of a hundred. `prefetch` MUST NOT throw for one bad item: it keeps the
 * answer (value or per-item error) for each ref, and each source's `fetch` then takes its own
 * answer once. A ref with no kept answer (the batch failed, the fetch is a retry, no cycle
 * called prefetch) MUST still be fetched directly: prefetching is a saving, never a condition.
 * `prefetch` MAY throw when the whole batch failed; the cycle logs it and fetches directly.
 */
export interface Prefetcher {
  prefetch(refs: readonly FetchRef[], signal: AbortSignal): Promise<void>;
}

export interface Prefetching {
  readonly prefetcher: Prefetcher;
}

export function isPrefetching(source: Source): source is Source & Prefetching {
  return typeof (source as Partial<Prefetching>).prefetcher?.prefetch === 'function';
}

/**
 * Optional: a source whose one config entry stands for many certificates (ssm `path`: one
 * certificate per folder under a prefix).
 *
 * `discover` lists the members as they are now (raw names, e.g. "team/web"); it MAY read all
 * the members' material in the same requests and keep it for their `fetch`. `member(name)` is
 * the source of one member; it is called with names `discover` returned and MUST fetch that
 * member directly when nothing was kept. The cycle expands the entry into certificates named
 * `<entry>-<name>` (name lower-cased, anything outside [a-z0-9-] turned into "-") whose target,
 * reload and verify strings have `{name}` replaced by that sanitised name. `fetch` of the
 * entry itself is never called. Errors of `discover` follow the rules of `Source.fetch`.
 */
export interface Discovering {
  discover(signal: AbortSignal): Promise<readonly string[]>;
  member(name: string): Source;
}

export function isDiscovering(source: Source): source is Source & Discovering {
  return typeof (source as Partial<Discovering>).discover === 'function' && typeof (source as Partial<Discovering>).member === 'function';
}

/**
 * Optional: a source that can tell cheaply whether what is deployed is still its current
 * version (ACM DescribeCertificate: serial and NotAfter), so that an unchanged cycle fetches
 * nothing expensive (an ACM export is billed per call), also in a fresh process that has no
 * Material in memory. The cycle asks only when nothing else forces a deployment; `true` makes
 * the certificate unchanged without `fetch`. MAY keep what it learnt for the `fetch` that
 * follows in the same cycle. Errors follow the rules of `Source.fetch`.
 */
export interface ChecksCurrent {
  isCurrent(deployed: DeployedSummary, signal: AbortSignal): Promise<boolean>;
}

export function checksCurrent(source: Source): source is Source & ChecksCurrent {
  return typeof (source as Partial<ChecksCurrent>).isCurrent === 'function';
}

/** Optional: a target that can say where and how the material is deployed (status, report). */
export interface DescribesDeployment {
  deployment(): Promise<Record<string, unknown>>;
}

export function describesDeployment(t: Target): t is Target & DescribesDeployment {
  return typeof (t as Partial<DescribesDeployment>).deployment === 'function';
}

/**
 * Optional: a target that can tell whether it still serves what certd deployed. A restarted
 * NGINX Plus has an empty key-value zone; files can be deleted behind certd's back. The cycle
 * asks before it calls a certificate unchanged, and deploys again when the answer is no.
 * MUST be cheap (it runs every cycle for every certificate) and MUST NOT throw for "not
 * there": return false. Errors reaching the server may throw; the cycle then deploys anyway.
 */
export interface ChecksDeployment {
  holds(fingerprint: string, signal: AbortSignal): Promise<boolean>;
}

export function checksDeployment(t: Target): t is Target & ChecksDeployment {
  return typeof (t as Partial<ChecksDeployment>).holds === 'function';
}

/** Optional: something holding connections, sessions or timers that must be released. */
export interface Closable {
  close(): Promise<void>;
}

export function isClosable(x: unknown): x is Closable {
  return typeof (x as Partial<Closable> | null)?.close === 'function';
}

/** What every factory receives: the clock, the logger, metrics, and a per-type shared store. */
export interface ProviderDeps {
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics?: Metrics | undefined;
  /** certd's state directory (tmpfs): the local CA, last-good records. */
  readonly stateDir: string;
  readonly env: NodeJS.ProcessEnv;
  /**
   * The runtime-wide part of the AWS endpoint choice (top-level use_fips_endpoint,
   * AWS_USE_FIPS_ENDPOINT, fips_runtime); absent: read from `env` alone.
   */
  readonly aws?: AwsSettings | undefined;
  /**
   * One value per key for the lifetime of the process (or until config reload): SDK clients,
   * batchers, PKCS#11 sessions. `init` runs once; the value is closed on shutdown if Closable.
   */
  shared<T>(key: string, init: () => T): T;
  /** Resolves a path from the config relative to the config file's folder. */
  resolvePath(path: string): string;
}

export interface SourceFactory<S extends z.ZodType = z.ZodType> {
  readonly type: string;
  /** A zod object schema with `type: z.literal(<type>)`; validated once at config load. */
  readonly schema: S;
  create(config: z.infer<S>, deps: ProviderDeps, cert: CertificateContext): Source;
}

export interface TargetFactory<S extends z.ZodType = z.ZodType> {
  readonly type: string;
  readonly schema: S;
  create(config: z.infer<S>, deps: ProviderDeps, cert: CertificateContext): Target;
}

/** The certificate a provider instance serves, for messages and defaults. */
export interface CertificateContext {
  readonly name: string;
  /** Expected host names (issuers' dns_names, verify.servername); may be empty. */
  readonly hostnames: readonly string[];
  /** The config's renew_before, for issuers' due times. */
  readonly renewBeforeMs: number;
}
