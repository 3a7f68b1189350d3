/**
 * A preload for a certd child (NODE_OPTIONS=--import=<this file, compiled>): every name under
 * amazonaws.com resolves to 127.0.0.1 and every other name fails, so the AWS SDK reaches the
 * test's AWS peer at the very host name it resolved itself (`secretsmanager-fips.us-east-1
 * .amazonaws.com`) with no endpoint configured, and nothing leaves loopback. The names asked for
 * are appended to $CERTD_TEST_DNS_LOG (one a line) when it is set.
 */
import { appendFileSync } from 'node:fs';
import dns from 'node:dns';
import { syncBuiltinESMExports } from 'node:module';

const AWS = /(^|\.)amazonaws\.com\.?$/i;
const logFile = process.env['CERTD_TEST_DNS_LOG'];

type Callback = (err: NodeJS.ErrnoException | null, address?: string | dns.LookupAddress[], family?: number) => void;

function refused(hostname: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname} (test DNS: only *.amazonaws.com resolves, to 127.0.0.1)`), {
    code: 'ENOTFOUND',
    errno: -3008,
    syscall: 'getaddrinfo',
    hostname,
  });
}

function answer(hostname: string, options: unknown): { address: string; family: number } {
  if (logFile) appendFileSync(logFile, `${hostname}\n`);
  if (!AWS.test(hostname)) throw refused(hostname);
  const family = typeof options === 'number' ? options : (options as { family?: number | string } | undefined)?.family;
  if (family === 6 || family === 'IPv6') throw refused(hostname);
  return { address: '127.0.0.1', family: 4 };
}

function lookup(hostname: string, options: unknown, callback?: Callback): void {
  const cb = (typeof options === 'function' ? options : callback) as Callback;
  const opts = typeof options === 'function' ? undefined : options;
  try {
    const a = answer(hostname, opts);
    const all = (opts as { all?: boolean } | undefined)?.all === true;
    process.nextTick(() => (all ? cb(null, [a]) : cb(null, a.address, a.family)));
  } catch (err) {
    process.nextTick(() => cb(err as NodeJS.ErrnoException));
  }
}

async function lookupPromise(hostname: string, options?: unknown): Promise<dns.LookupAddress | dns.LookupAddress[]> {
  const a = answer(hostname, options);
  return (options as { all?: boolean } | undefined)?.all === true ? [a] : a;
}

(dns as unknown as { lookup: unknown }).lookup = lookup;
(dns.promises as unknown as { lookup: unknown }).lookup = lookupPromise;
syncBuiltinESMExports();
