/** TLS probes: which leaf a server presents, and (for `certd verify`) what it negotiates. */
import { createHash } from 'node:crypto';
import { connect, type PeerCertificate } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { CertdError, messageOf } from './errors.js';

/** FIPS-approved suites for TLS 1.2 (SP 800-52 r2); Node's default list includes CHACHA20. */
export const FIPS_TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-AES128-SHA256', 'ECDHE-RSA-AES128-SHA256',
  'ECDHE-ECDSA-AES256-SHA384', 'ECDHE-RSA-AES256-SHA384', 'DHE-RSA-AES128-GCM-SHA256', 'DHE-RSA-AES256-GCM-SHA384',
].join(':');
export const FIPS_TLS13_SUITES = 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_AES_128_CCM_SHA256';

export interface Served {
  /** SHA-256 of the served leaf, uppercase hex with colons. */
  fingerprint: string;
  /** The served chain, leaf first, DER. */
  chain: Buffer[];
  protocol: string;
  cipher: string;
}

export function splitHostPort(hostPort: string): { host: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(hostPort);
  if (!m) throw new CertdError('E_CONFIG', `"${hostPort}" is not HOST:PORT`);
  return { host: m[1]!, port: Number(m[2]) };
}

function fingerprintOf(der: Buffer): string {
  return createHash('sha256').update(der).digest('hex').toUpperCase().replace(/(..)(?!$)/g, '$1:');
}

export interface ProbeOptions {
  connect: string;
  servername: string;
  timeoutMs?: number;
  minVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';
  maxVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';
  ciphers?: string;
  ciphersuites?: string;
}

/** One handshake; resolves with what the server presented. Certificates are not trusted or rejected here. */
export function probe(o: ProbeOptions): Promise<Served> {
  const { host, port } = splitHostPort(o.connect);
  return new Promise((resolvePromise, reject) => {
    const socket = connect({
      host,
      port,
      servername: o.servername,
      rejectUnauthorized: false,
      minVersion: o.minVersion ?? 'TLSv1.2',
      ...(o.maxVersion ? { maxVersion: o.maxVersion } : {}),
      ciphers: o.ciphers ?? FIPS_TLS12_CIPHERS,
      ...({ ciphersuites: o.ciphersuites ?? FIPS_TLS13_SUITES } as object),
      timeout: o.timeoutMs ?? 5000,
    });
    const fail = (err: Error): void => {
      socket.destroy();
      reject(err);
    };
    socket.once('timeout', () => fail(new Error(`no TLS handshake within ${o.timeoutMs ?? 5000} ms`)));
    socket.once('error', fail);
    socket.once('secureConnect', () => {
      const chain: Buffer[] = [];
      let cert: PeerCertificate & { issuerCertificate?: PeerCertificate } = socket.getPeerCertificate(true);
      const seen = new Set<string>();
      while (cert && cert.raw && !seen.has(cert.fingerprint256)) {
        seen.add(cert.fingerprint256);
        chain.push(cert.raw);
        cert = cert.issuerCertificate as typeof cert;
      }
      const leaf = chain[0];
      const result: Served = {
        fingerprint: leaf ? fingerprintOf(leaf) : '',
        chain,
        protocol: socket.getProtocol() ?? '',
        cipher: socket.getCipher()?.name ?? '',
      };
      socket.end();
      resolvePromise(result);
    });
  });
}

/**
 * After a reload, waits until the server presents `expected` (old workers may still answer for
 * a moment). Throws E_VERIFY naming what was served instead.
 */
export async function waitForServed(
  o: { connect: string; servername: string; expected: string; timeoutMs: number; certName: string },
  signal?: AbortSignal,
): Promise<Served> {
  const deadline = Date.now() + o.timeoutMs;
  let last: Served | undefined;
  let lastError: unknown;
  for (let attempt = 0; ; attempt++) {
    try {
      last = await probe({ connect: o.connect, servername: o.servername, timeoutMs: Math.max(500, Math.min(3000, deadline - Date.now())) });
      if (last.fingerprint === o.expected) return last;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline || signal?.aborted) break;
    // Real time on purpose: this waits for a real server's workers, not for certd's schedule.
    await sleep(Math.min(25 * 2 ** attempt, 250), undefined, signal ? { signal } : {}).catch(() => undefined);
  }
  const what = last
    ? `it serves ${last.fingerprint} instead of ${o.expected}`
    : `no handshake: ${messageOf(lastError)}`;
  throw new CertdError('E_VERIFY', `verifying ${o.certName} at ${o.connect} (SNI ${o.servername}): ${what}`);
}
