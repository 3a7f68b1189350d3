/**
 * A private SoftHSM2 for a test: its own token directory and SOFTHSM2_CONF in a temp dir (the
 * system's configuration is never touched), tokens made with softhsm2-util, objects written
 * with OpenSC's pkcs11-tool, and an OPENSSL_CONF that loads libp11's pkcs11 engine for nginx.
 * Fails with an install hint when a tool is missing.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { registerSecret } from './capture.js';
import { FIPS_RUN } from './fixture-env.js';
import { openssl } from './tls.js';

export const SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';
const INSTALL = 'apt-get install -y softhsm2 opensc libengine-pkcs11-openssl openssl';

function which(cmd: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '/usr/bin:/bin').split(':')) {
    if (existsSync(join(dir, cmd))) return join(dir, cmd);
  }
  return undefined;
}

/** The libp11 engine of this machine: ENGINESDIR of the openssl CLI, then the usual paths. */
export function pkcs11EnginePath(): string {
  const candidates: string[] = [];
  try {
    const m = /ENGINESDIR: "([^"]+)"/.exec(openssl(['version', '-e']));
    if (m?.[1]) candidates.push(join(m[1], 'pkcs11.so'));
  } catch {
    // fall through to the usual paths
  }
  candidates.push('/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so', '/usr/lib/aarch64-linux-gnu/engines-3/pkcs11.so');
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new Error(`libp11's pkcs11 engine not found (looked at ${candidates.join(', ')}): ${INSTALL}`);
  return found;
}

/** Throws (never skips) when SoftHSM2, pkcs11-tool or the engine is missing. */
export function requireSoftHsm(): void {
  const missing: string[] = [];
  if (!which('softhsm2-util')) missing.push('softhsm2-util (softhsm2)');
  if (!which('pkcs11-tool')) missing.push('pkcs11-tool (opensc)');
  if (!existsSync(SOFTHSM_MODULE)) missing.push(`${SOFTHSM_MODULE} (softhsm2)`);
  if (missing.length > 0) throw new Error(`missing for the PKCS#11 tests: ${missing.join(', ')}: ${INSTALL}`);
  pkcs11EnginePath();
}

export interface SoftHsm {
  readonly dir: string;
  /** The SOFTHSM2_CONF file. */
  readonly conf: string;
  readonly module: string;
  /** Environment for every process that opens the tokens: { SOFTHSM2_CONF }. */
  readonly env: { SOFTHSM2_CONF: string };
  initToken(label: string, soPin: string, pin: string): void;
  /** Writes a PEM private key (PKCS#8 DER on the token), sensitive and not extractable. */
  importKey(token: string, pin: string, keyPem: string, id: string, label: string): void;
  importCert(token: string, pin: string, certPem: string, id: string, label: string): void;
  /** Writes the public half of `keyPem` as a CKO_PUBLIC_KEY object. */
  importPublicKey(token: string, pin: string, keyPem: string, id: string, label: string): void;
  deleteObject(token: string, pin: string, type: 'cert' | 'privkey' | 'pubkey', label: string): void;
  /** An OPENSSL_CONF loading the pkcs11 engine for this module (`init = 1`), with no PIN. */
  writeOpensslConf(path: string): string;
}

export function createSoftHsm(dir: string): SoftHsm {
  requireSoftHsm();
  const tokens = join(dir, 'tokens');
  mkdirSync(tokens, { recursive: true, mode: 0o700 });
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  const env = { SOFTHSM2_CONF: conf };
  const run = (cmd: string, args: string[], hide: string[] = []): string => {
    try {
      return execFileSync(cmd, args, { env: { ...process.env, ...env }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      let text = `${cmd} ${args.join(' ')}: ${(e.stderr ?? e.message).trim()}`;
      for (const h of hide) text = text.split(h).join('[redacted]');
      throw new Error(text);
    }
  };
  const tool = (token: string, pin: string, args: string[]): string =>
    run('pkcs11-tool', ['--module', SOFTHSM_MODULE, '--token-label', token, '--login', '--pin', pin, ...args], [pin]);
  // DER files of keys exist only for the moment pkcs11-tool reads them, in the test's tmpfs dir.
  const withDer = (der: (path: string) => void, use: (path: string) => void): void => {
    const path = join(dir, `obj-${process.pid}-${Date.now()}-${Math.random().toString(16).slice(2)}.der`);
    try {
      der(path);
      use(path);
    } finally {
      rmSync(path, { force: true });
    }
  };
  return {
    dir,
    conf,
    module: SOFTHSM_MODULE,
    env,
    initToken(label, soPin, pin) {
      registerSecret('pin', soPin);
      registerSecret('pin', pin);
      run('softhsm2-util', ['--init-token', '--free', '--label', label, '--so-pin', soPin, '--pin', pin], [soPin, pin]);
    },
    importKey(token, pin, keyPem, id, label) {
      registerSecret('private-key', keyPem);
      withDer(
        (p) => openssl(['pkcs8', '-topk8', '-nocrypt', '-outform', 'DER', '-out', p], keyPem),
        (p) => tool(token, pin, ['--write-object', p, '--type', 'privkey', '--id', id, '--label', label, '--usage-sign']),
      );
    },
    importCert(token, pin, certPem, id, label) {
      withDer(
        (p) => openssl(['x509', '-outform', 'DER', '-out', p], certPem),
        (p) => tool(token, pin, ['--write-object', p, '--type', 'cert', '--id', id, '--label', label]),
      );
    },
    importPublicKey(token, pin, keyPem, id, label) {
      withDer(
        (p) => openssl(['pkey', '-pubout', '-outform', 'DER', '-out', p], keyPem),
        (p) => tool(token, pin, ['--write-object', p, '--type', 'pubkey', '--id', id, '--label', label]),
      );
    },
    deleteObject(token, pin, type, label) {
      tool(token, pin, ['--delete-object', '--type', type, '--label', label]);
    },
    writeOpensslConf(path) {
      const engine = [
        '[engine_section]',
        'pkcs11 = pkcs11_section',
        '[pkcs11_section]',
        'engine_id = pkcs11',
        `dynamic_path = ${pkcs11EnginePath()}`,
        `MODULE_PATH = ${SOFTHSM_MODULE}`,
        'init = 1',
        '',
      ];
      // In the FIPS-mode pass, the run's FIPS configuration stays what Node reads (nodejs_conf),
      // and nginx (openssl_conf) gets the same providers plus the engine.
      const fips = FIPS_RUN ? process.env['OPENSSL_CONF'] : undefined;
      const text = fips
        ? [
            readFileSync(fips, 'utf8').replace(/^openssl_conf\s*=.*$/m, 'openssl_conf = nginx_init'),
            '[nginx_init]',
            'providers = provider_sect',
            'alg_section = algorithm_sect',
            'engines = engine_section',
            ...engine,
          ]
        : ['openssl_conf = openssl_init', '[openssl_init]', 'engines = engine_section', ...engine];
      writeFileSync(path, text.join('\n'), { mode: 0o644 });
      return path;
    },
  };
}
