// TLS helpers for tests: a one-shot client handshake that reports what the server presented, and
// self-signed certificates made with the openssl CLI (an independent implementation from the
// Node/OpenSSL bindings certd itself uses).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { registerSecret } from './capture.js';
import { fixtureEnv } from './fixture-env.js';

export interface HandshakeResult {
  /** SHA-256 of the leaf's DER, upper-case hex pairs joined by ':' (Node's format). */
  fingerprint256: string;
  /** Negotiated protocol, e.g. 'TLSv1.3'. */
  protocol: string;
  subjectCN?: string;
  /** Whether the chain verified against `ca` (always false without one). */
  authorized: boolean;
}

/**
 * Connects to 127.0.0.1:port (or `host`) with SNI `servername`, reads the presented leaf and
 * closes. Certificate errors do not fail the handshake (rejectUnauthorized is false): tests look
 * at what was served, and `authorized` says whether it chains to `ca`.
 */
export function handshake(opts: {
  port: number;
  servername: string;
  host?: string;
  ca?: string | Buffer;
  timeoutMs?: number;
}): Promise<HandshakeResult> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: opts.host ?? '127.0.0.1',
      port: opts.port,
      servername: opts.servername,
      rejectUnauthorized: false,
      ...(opts.ca === undefined ? {} : { ca: opts.ca }),
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`TLS handshake with ${opts.servername} on port ${opts.port}: no answer in ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const cert = socket.getPeerCertificate();
      const protocol = socket.getProtocol() ?? 'unknown';
      const authorized = opts.ca !== undefined && socket.authorized;
      socket.destroy();
      if (cert === null || cert.fingerprint256 === undefined || cert.fingerprint256 === '') {
        reject(new Error(`TLS handshake with ${opts.servername}: no certificate presented`));
        return;
      }
      const cn = cert.subject?.CN;
      const subjectCN = Array.isArray(cn) ? cn[0] : cn;
      resolve({
        fingerprint256: cert.fingerprint256,
        protocol,
        authorized,
        ...(subjectCN === undefined ? {} : { subjectCN }),
      });
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      reject(new Error(`TLS handshake with ${opts.servername} on port ${opts.port}: ${err.message}`, { cause: err }));
    });
  });
}

export interface SelfSigned {
  certPem: string;
  keyPem: string;
  certPath: string;
  keyPath: string;
}

/**
 * A self-signed leaf made by `openssl req -x509` in `dir` (EC P-256 or RSA 2048, SHA-256, 30 days).
 * `sans` entries that look like IPv4/IPv6 addresses become IP SANs, the rest DNS SANs.
 * Fails with a clear message when the openssl CLI is missing.
 */
export function makeSelfSigned(
  dir: string,
  opts: { cn: string; sans?: string[]; keyType?: 'ec' | 'rsa'; days?: number },
): SelfSigned {
  const base = `${opts.cn.replace(/[^A-Za-z0-9.-]/g, '_')}-${randomBytes(4).toString('hex')}`;
  const keyPath = join(dir, `${base}.key`);
  const certPath = join(dir, `${base}.crt`);
  const newkey =
    (opts.keyType ?? 'ec') === 'ec'
      ? ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']
      : ['-newkey', 'rsa:2048'];
  const sans = (opts.sans ?? [opts.cn]).map((s) => (/^[0-9.]+$|:/.test(s) ? `IP:${s}` : `DNS:${s}`));
  const args = [
    'req', '-x509', '-nodes', ...newkey, '-sha256',
    '-days', String(opts.days ?? 30),
    '-subj', `/CN=${opts.cn}`,
    '-keyout', keyPath, '-out', certPath,
    ...(sans.length > 0 ? ['-addext', `subjectAltName=${sans.join(',')}`] : []),
  ];
  openssl(args);
  const keyPem = readFileSync(keyPath, 'utf8');
  registerSecret('private-key', keyPem);
  return { certPem: readFileSync(certPath, 'utf8'), keyPem, certPath, keyPath };
}

/** Runs the openssl CLI; its stdout is returned, never echoed. */
export function openssl(args: string[], input?: string): string {
  try {
    return execFileSync('openssl', args, {
      encoding: 'utf8',
      stdio: ['pipe', 'pipe', 'pipe'],
      env: fixtureEnv(),
      ...(input === undefined ? {} : { input }),
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') {
      throw new Error('the openssl CLI is not on PATH: install it (Debian package "openssl")');
    }
    throw new Error(`openssl ${args[0] ?? ''} failed: ${(e.stderr ?? e.message).trim()}`);
  }
}
