/**
 * Before a cycle fetches certificates one by one (from a bounded pool of workers, so calls
 * made "at the same time" would coalesce into small batches at best), each distinct shared
 * batcher is handed all of its certificates at once (see Prefetching in contracts.ts).
 */
import { type FetchRef, isPrefetching, type Prefetcher, type Source } from './contracts.js';
import { creditEndpoints, type EndpointLog, withEndpointLog } from './endpoints.js';
import { messageOf } from './errors.js';
import type { Logger } from './log.js';

/**
 * Runs every distinct prefetcher of `certs` once; never throws (fetches fall back to direct
 * reads). The endpoints a prefetcher calls go to the log in `endpoints` of each of its certificates.
 */
export async function prefetchAll(certs: readonly { name: string; source: Source }[], log: Logger, signal: AbortSignal, endpoints?: Map<string, EndpointLog>): Promise<void> {
  const groups = new Map<Prefetcher, FetchRef[]>();
  for (const c of certs) {
    if (!isPrefetching(c.source)) continue;
    const refs = groups.get(c.source.prefetcher) ?? [];
    refs.push({ name: c.name });
    groups.set(c.source.prefetcher, refs);
  }
  await Promise.all(
    [...groups].map(async ([p, refs]) => {
      const called: EndpointLog = new Map();
      try {
        await withEndpointLog(called, () => p.prefetch(refs, signal));
      } catch (err) {
        log.warn({ step: 'prefetch', certificates: refs.length, err: messageOf(err) }, 'prefetch failed; fetching one by one');
      }
      if (endpoints) creditEndpoints(endpoints, refs.map((r) => r.name), called);
    }),
  );
}
