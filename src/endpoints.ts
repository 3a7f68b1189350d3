/**
 * Which remote service endpoints a certificate's cycle called: the AWS host names the SDK
 * resolved (FIPS or not) or the custom endpoint it was given, kept per certificate in its state
 * record so that `certd status` and `certd report` can say where the material came from.
 *
 * The cycle runs each certificate's steps inside `withEndpointLog`; a client records every
 * request it sends with `recordEndpoint` (for AWS a middleware of the SDK client, which sees the
 * request after the endpoint is resolved). The log travels with the async context, so a client
 * shared by many certificates still credits the certificate that made the call. Batched reads
 * made for many certificates at once (prefetch, discovery) are credited to each of them.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * How the endpoint was chosen: `fips` the SDK resolved a FIPS endpoint (use_fips_endpoint),
 * `standard` it resolved the ordinary one, `custom` certd was given the endpoint (config
 * `endpoint`, AWS_ENDPOINT_URL_<SERVICE>, AWS_ENDPOINT_URL) and used it as given.
 */
export type EndpointKind = 'fips' | 'standard' | 'custom';

export interface EndpointUse {
  /** "secrets-manager", "ssm", "kms", "acm". */
  readonly service: string;
  /** The host called, with the port when it is not the scheme's default: "secretsmanager-fips.us-east-1.amazonaws.com". */
  readonly host: string;
  readonly kind: EndpointKind;
}

/** The endpoints one certificate's steps called, by `service host kind`. */
export type EndpointLog = Map<string, EndpointUse>;

const current = new AsyncLocalStorage<EndpointLog>();

/** Runs `fn` with `log` receiving every endpoint called in its async context. */
export function withEndpointLog<T>(log: EndpointLog, fn: () => T): T {
  return current.run(log, fn);
}

/** Notes a call to `use` in the log of the running certificate step, if any. */
export function recordEndpoint(use: EndpointUse): void {
  const log = current.getStore();
  if (log !== undefined) addEndpoint(log, use);
}

export function addEndpoint(log: EndpointLog, use: EndpointUse): void {
  log.set(`${use.service} ${use.host} ${use.kind}`, use);
}

/** Adds the endpoints of `called` (a request made for many certificates) to the log of each of `names`. */
export function creditEndpoints(logs: Map<string, EndpointLog>, names: readonly string[], called: EndpointLog): void {
  if (called.size === 0) return;
  for (const name of names) {
    const log = logs.get(name) ?? new Map();
    for (const use of called.values()) addEndpoint(log, use);
    logs.set(name, log);
  }
}

/** The endpoints of `log`, in a stable order (service, then host). */
export function endpointsOf(log: EndpointLog): EndpointUse[] {
  return [...log.values()].sort((a, b) => a.service.localeCompare(b.service) || a.host.localeCompare(b.host) || a.kind.localeCompare(b.kind));
}

/** "secretsmanager-fips.us-east-1.amazonaws.com (secrets-manager, FIPS)". */
export function describeEndpoint(e: EndpointUse): string {
  const kind = e.kind === 'fips' ? 'FIPS endpoint' : e.kind === 'standard' ? 'not a FIPS endpoint' : 'custom endpoint';
  return `${e.host} (${e.service}, ${kind})`;
}
