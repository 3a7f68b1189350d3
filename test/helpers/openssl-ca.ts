/**
 * A small PKI made with the openssl CLI (independent of the Node bindings certd uses): a root
 * CA (RSA, P-256 or P-384) and leaves with DNS SANs and the serverAuth EKU, so that the
 * policy's leaf rules pass and `trust_anchors` can name the root.
 */
import { createPrivateKey, randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { registerSecret } from './capture.js';
import { openssl } from './tls.js';

export type KeyType = 'rsa-2048' | 'ec-p256' | 'ec-p384';

export function makeKey(type: KeyType): string {
  const pem = type === 'rsa-2048'
    ? openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'])
    : openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', `ec_paramgen_curve:${type === 'ec-p256' ? 'P-256' : 'P-384'}`]);
  registerSecret('private-key', pem);
  return pem;
}

export interface TestCa {
  readonly keyPem: string;
  readonly certPem: string;
  /** The CA certificate as a file (for trust_anchors and openssl verify -CAfile). */
  readonly certPath: string;
}

/** A self-signed root: critical CA:TRUE, keyCertSign + cRLSign, 10 years. */
export function makeCa(dir: string, cn: string, type: KeyType): TestCa {
  const keyPem = makeKey(type);
  const base = join(dir, `${cn.replace(/[^A-Za-z0-9-]/g, '_')}-${randomBytes(3).toString('hex')}`);
  const keyPath = `${base}.key`;
  writeFileSync(keyPath, keyPem, { mode: 0o600 });
  try {
    const certPem = openssl([
      'req', '-x509', '-new', '-key', keyPath, '-sha256', '-days', '3650', '-subj', `/CN=${cn}`,
      '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
      '-addext', 'subjectKeyIdentifier=hash',
    ]);
    writeFileSync(`${base}.pem`, certPem);
    return { keyPem, certPem, certPath: `${base}.pem` };
  } finally {
    rmSync(keyPath, { force: true });
  }
}

/** A leaf for `keyPem` signed by `ca`: DNS SANs, serverAuth, digitalSignature (+ keyEncipherment for RSA). */
export function issueLeafWithOpenssl(dir: string, ca: TestCa, keyPem: string, opts: { cn: string; sans: string[]; days?: number }): string {
  const tag = randomBytes(4).toString('hex');
  const keyPath = join(dir, `leaf-${tag}.key`);
  const caKeyPath = join(dir, `ca-${tag}.key`);
  const extPath = join(dir, `leaf-${tag}.ext`);
  const csrPath = join(dir, `leaf-${tag}.csr`);
  writeFileSync(keyPath, keyPem, { mode: 0o600 });
  writeFileSync(caKeyPath, ca.keyPem, { mode: 0o600 });
  const rsa = createPrivateKey(keyPem).asymmetricKeyType === 'rsa';
  writeFileSync(
    extPath,
    [
      'basicConstraints=critical,CA:FALSE',
      `keyUsage=critical,digitalSignature${rsa ? ',keyEncipherment' : ''}`,
      'extendedKeyUsage=serverAuth',
      `subjectAltName=${opts.sans.map((s) => `DNS:${s}`).join(',')}`,
      'authorityKeyIdentifier=keyid',
      'subjectKeyIdentifier=hash',
      '',
    ].join('\n'),
  );
  try {
    openssl(['req', '-new', '-key', keyPath, '-subj', `/CN=${opts.cn}`, '-out', csrPath]);
    return openssl([
      'x509', '-req', '-in', csrPath, '-CA', ca.certPath, '-CAkey', caKeyPath, '-set_serial', `0x${randomBytes(12).toString('hex')}`,
      '-days', String(opts.days ?? 90), '-sha256', '-extfile', extPath,
    ]);
  } finally {
    for (const p of [keyPath, caKeyPath, extPath, csrPath]) rmSync(p, { force: true });
  }
}
