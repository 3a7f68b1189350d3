/**
 * A small PKI made with the openssl CLI for tests: a root, an intermediate and leaves with the
 * extensions a TLS server certificate needs. openssl is an implementation independent of the
 * one certd parses with, so what certd accepts or refuses is not judged by itself.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { registerSecret } from './capture.js';
import { fixtureEnv } from './fixture-env.js';

export function openssl(args: string[], input?: string): string {
  return execFileSync('openssl', args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'], env: fixtureEnv() });
}

export type KeySpec = 'ec-p256' | 'ec-p384' | 'rsa-2048' | 'rsa-3072' | 'rsa-1024';

export function genKey(path: string, spec: KeySpec): void {
  const args = spec.startsWith('ec-')
    ? ['genpkey', '-algorithm', 'EC', '-pkeyopt', `ec_paramgen_curve:${spec === 'ec-p384' ? 'P-384' : 'P-256'}`]
    : ['genpkey', '-algorithm', 'RSA', '-pkeyopt', `rsa_keygen_bits:${spec.slice(4)}`];
  openssl([...args, '-out', path]);
  registerSecret('private-key', readFileSync(path));
}

export interface Issued {
  certPath: string;
  keyPath: string;
  certPem: string;
  /** SHA-256 fingerprint as Node prints it (uppercase hex with colons). */
  fingerprint: string;
}

function fingerprintOf(certPath: string): string {
  return openssl(['x509', '-in', certPath, '-noout', '-fingerprint', '-sha256']).trim().split('=')[1]!;
}

export class TestPki {
  readonly dir: string;
  readonly root: Issued;
  readonly intermediate: Issued;

  constructor(dir: string, keySpec: KeySpec = 'ec-p256') {
    this.dir = dir;
    mkdirSync(dir, { recursive: true });
    this.root = this.#selfSigned('root', 'certd test root', keySpec);
    this.intermediate = this.#sign('intermediate', this.root, {
      subject: '/CN=certd test intermediate',
      keySpec,
      ext: 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid',
      days: 365,
    });
  }

  #selfSigned(name: string, cn: string, keySpec: KeySpec): Issued {
    const keyPath = join(this.dir, `${name}.key`);
    const certPath = join(this.dir, `${name}.pem`);
    genKey(keyPath, keySpec);
    openssl(['req', '-x509', '-new', '-key', keyPath, '-subj', `/CN=${cn}`, '-days', '730', '-sha256',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign,digitalSignature', '-out', certPath]);
    return { certPath, keyPath, certPem: readFileSync(certPath, 'utf8'), fingerprint: fingerprintOf(certPath) };
  }

  #sign(name: string, issuer: Issued, o: { subject: string; keySpec: KeySpec; ext: string; days: number; sha?: string }): Issued {
    const keyPath = join(this.dir, `${name}.key`);
    const csrPath = join(this.dir, `${name}.csr`);
    const certPath = join(this.dir, `${name}.pem`);
    const extPath = join(this.dir, `${name}.ext`);
    genKey(keyPath, o.keySpec);
    openssl(['req', '-new', '-key', keyPath, '-subj', o.subject, '-out', csrPath]);
    writeFileSync(extPath, `${o.ext}\n`);
    openssl(['x509', '-req', '-in', csrPath, '-CA', issuer.certPath, '-CAkey', issuer.keyPath, '-set_serial', `0x${randomBytes(12).toString('hex')}`,
      '-days', String(o.days), `-${o.sha ?? 'sha256'}`, '-extfile', extPath, '-out', certPath]);
    return { certPath, keyPath, certPem: readFileSync(certPath, 'utf8'), fingerprint: fingerprintOf(certPath) };
  }

  /** A server leaf issued by the intermediate, valid for `days`, with DNS SANs and serverAuth. */
  leaf(name: string, o: { dns: string[]; keySpec?: KeySpec; days?: number; ext?: string }): Issued {
    const ext = o.ext ?? [
      'basicConstraints=critical,CA:FALSE',
      `keyUsage=critical,digitalSignature${(o.keySpec ?? 'ec-p256').startsWith('rsa') ? ',keyEncipherment' : ''}`,
      'extendedKeyUsage=serverAuth',
      `subjectAltName=${o.dns.map((d) => `DNS:${d}`).join(',')}`,
    ].join('\n');
    return this.#sign(name, this.intermediate, { subject: `/CN=${o.dns[0] ?? name}`, keySpec: o.keySpec ?? 'ec-p256', ext, days: o.days ?? 90 });
  }

  /** Writes a leaf as the three files a `file` source reads: cert.pem, key.pem, chain.pem. */
  publish(issued: Issued, dir: string): { cert: string; key: string; chain: string } {
    mkdirSync(dir, { recursive: true });
    const files = { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem'), chain: join(dir, 'chain.pem') };
    writeFileSync(files.cert, issued.certPem);
    writeFileSync(files.key, readFileSync(issued.keyPath), { mode: 0o600 });
    writeFileSync(files.chain, this.intermediate.certPem);
    return files;
  }
}
