/**
 * A loaded configuration turned into live objects: one source and its targets per certificate,
 * the resolved policy, the state store. Built once per config (again on SIGHUP).
 */
import { readFile } from 'node:fs/promises';
import { FileAuditSink } from './audit.js';
import { awsSettings } from './aws.js';
import type { CertificateConfig, LoadedConfig } from './config.js';
import { type Clock, systemClock } from './clock.js';
import { isDiscovering, type ProviderDeps, type Source, type Target, isClosable } from './contracts.js';
import { discoveryOf, type Expand } from './discovery.js';
import { parseDuration } from './duration.js';
import { CertdError, messageOf } from './errors.js';
import type { Logger } from './log.js';
import { type Metrics, noMetrics } from './metrics.js';
import { parseBundle } from './policy/pem.js';
import type { PolicySettings } from './policy/types.js';
import type { ReloadSpec } from './reload.js';
import { StateStore } from './state.js';
import { sourceFactory, targetFactory } from '../providers/index.js';

export interface VerifySpec {
  readonly connect: string;
  readonly servername: string;
  readonly timeoutMs: number;
}

export interface CertificateRuntime {
  readonly name: string;
  readonly config: CertificateConfig;
  readonly source: Source;
  readonly targets: readonly Target[];
  readonly reload?: ReloadSpec | undefined;
  readonly verify?: VerifySpec | undefined;
  /** Names the leaf must cover: `hostnames`, the issuer's dns_names and verify.servername. */
  readonly hostnames: readonly string[];
  /**
   * The policy for this certificate. For issuers the time margins scale with the `ttl`: a 24h
   * certificate cannot have 7 days left, so min_remaining is capped at half the ttl and
   * renew_before at a third of it.
   */
  readonly policy: PolicySettings;
  /**
   * Set when the source discovers many certificates (ssm `path`): the cycle calls it and
   * processes the members it returns instead of this entry (see discovery.ts).
   */
  readonly expand?: Expand | undefined;
}

/** Where audit records go (the hash-chained trail); the default drops them. */
export interface AuditSink {
  record(event: Record<string, unknown>): Promise<void>;
}

export const noAudit: AuditSink = { record: async () => undefined };

export interface Runtime {
  readonly loaded: LoadedConfig;
  readonly certificates: readonly CertificateRuntime[];
  readonly policy: PolicySettings;
  readonly state: StateStore;
  readonly stateDir: string;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly audit: AuditSink;
  /** Attempts per fetch within one cycle for errors that are not permanent. */
  readonly fetchAttempts: number;
  close(): Promise<void>;
}

export interface RuntimeOptions {
  log: Logger;
  clock?: Clock;
  metrics?: Metrics;
  audit?: AuditSink;
  env?: NodeJS.ProcessEnv;
  fetchAttempts?: number;
}

async function loadAnchors(path: string | undefined, loaded: LoadedConfig): Promise<Buffer[]> {
  if (!path) return [];
  const file = loaded.resolvePath(path);
  try {
    return parseBundle(await readFile(file)).certs;
  } catch (err) {
    throw new CertdError('E_CONFIG', `config ${loaded.path}: policy.trust_anchors: reading ${file}: ${messageOf(err)}`, { cause: err });
  }
}

export async function buildRuntime(loaded: LoadedConfig, options: RuntimeOptions): Promise<Runtime> {
  const { config } = loaded;
  const clock = options.clock ?? systemClock;
  const log = options.log;
  const metrics = options.metrics ?? noMetrics;
  const stateDir = loaded.resolvePath(config.state_dir);
  const sharedValues = new Map<string, unknown>();
  const env = options.env ?? process.env;
  let aws;
  try {
    aws = awsSettings(config, env);
  } catch (err) {
    throw new CertdError('E_CONFIG', `config ${loaded.path}: use_fips_endpoint: ${messageOf(err)}`, { cause: err });
  }
  const deps: ProviderDeps = {
    clock,
    log,
    metrics,
    stateDir,
    env,
    aws,
    resolvePath: loaded.resolvePath,
    shared<T>(key: string, init: () => T): T {
      if (!sharedValues.has(key)) sharedValues.set(key, init());
      return sharedValues.get(key) as T;
    },
  };
  const renewBeforeMs = parseDuration(config.renew_before);
  const policy: PolicySettings = {
    mode: config.policy.mode,
    minRsaBits: config.policy.min_rsa_bits,
    allowEd25519: config.policy.allow_ed25519,
    allowSelfSigned: config.policy.allow_self_signed,
    trustAnchors: await loadAnchors(config.policy.trust_anchors, loaded),
    ...(config.policy.public_trust === undefined ? {} : { publicTrust: config.policy.public_trust }),
    minRemainingMs: parseDuration(config.policy.min_remaining),
    renewBeforeMs,
  };
  const build = (c: CertificateConfig, given?: Source): CertificateRuntime => {
    const dnsNames = (c.source as { dns_names?: string[] }).dns_names ?? [];
    const hostnames = [...new Set([...c.hostnames, ...dnsNames, ...(c.verify ? [c.verify.servername] : [])])];
    const ttl = (c.source as { ttl?: string }).ttl;
    const ttlMs = ttl === undefined ? undefined : parseDuration(ttl);
    const certPolicy: PolicySettings = ttlMs === undefined
      ? policy
      : { ...policy, minRemainingMs: Math.min(policy.minRemainingMs, ttlMs / 2), renewBeforeMs: Math.min(policy.renewBeforeMs, ttlMs / 3) };
    const ctx = { name: c.name, hostnames, renewBeforeMs: certPolicy.renewBeforeMs };
    const where = (what: string) => `config ${loaded.path}: certificates "${c.name}": ${what}`;
    let source: Source;
    try {
      source = given ?? sourceFactory((c.source as { type: string }).type).create(c.source, deps, ctx);
    } catch (err) {
      throw new CertdError('E_CONFIG', where(`source ${(c.source as { type: string }).type}: ${messageOf(err)}`), { cause: err });
    }
    // An entry that discovers deploys nothing itself: its members have their own targets.
    const discovers = given === undefined && isDiscovering(source);
    const targets = discovers ? [] : c.targets.map((t) => {
      try {
        return targetFactory((t as { type: string }).type).create(t, deps, ctx);
      } catch (err) {
        throw new CertdError('E_CONFIG', where(`target ${(t as { type: string }).type}: ${messageOf(err)}`), { cause: err });
      }
    });
    const built: CertificateRuntime = {
      name: c.name,
      config: c,
      source,
      targets,
      reload: c.reload && (c.reload.command || c.reload.signal || c.reload.test)
        ? { command: c.reload.command, signal: c.reload.signal, test: c.reload.test, timeoutMs: parseDuration(c.reload.timeout) }
        : undefined,
      verify: c.verify ? { connect: c.verify.connect, servername: c.verify.servername, timeoutMs: parseDuration(c.verify.timeout) } : undefined,
      hostnames,
      policy: certPolicy,
    };
    return discovers && isDiscovering(source) ? { ...built, expand: discoveryOf(c, source, build, where) } : built;
  };
  const certificates = config.certificates.map((c) => build(c));
  return {
    loaded,
    certificates,
    policy,
    state: new StateStore(stateDir, { remember: true }),
    stateDir,
    clock,
    log,
    metrics,
    audit: options.audit ?? (config.audit_log ? new FileAuditSink(loaded.resolvePath(config.audit_log), log, { now: () => clock.now() }) : noAudit),
    fetchAttempts: options.fetchAttempts ?? 3,
    async close() {
      for (const v of sharedValues.values()) {
        const value = await Promise.resolve(v).catch(() => undefined);
        if (isClosable(value)) await value.close().catch((err: unknown) => log.warn({ err: messageOf(err) }, 'closing a provider failed'));
      }
      sharedValues.clear();
    },
  };
}
