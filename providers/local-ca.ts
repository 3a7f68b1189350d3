/**
 * Source `local-ca`: a development CA that issues short-lived leaves. The CA key and certificate
 * are created in `state_dir/local-ca/` on first use (or read from `ca_cert` + `ca_key`). The
 * signing is a software CaSigner; pkcs11-ca and kms-ca plug other signers into the same issuer.
 */
import { createPrivateKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { Issuer, SourceFactory } from '../src/contracts.js';
import { parseDuration } from '../src/duration.js';
import { CertdError } from '../src/errors.js';
import { type CaSigner, issueLeaf, renewalDue, selfSignedCa, type SignatureAlgorithm } from '../src/issuer.js';
import { issuerFields, pathString } from '../src/schema.js';

const schema = z
  .strictObject({
    type: z.literal('local-ca'),
    ca_cert: pathString.optional(),
    ca_key: pathString.optional(),
    ...issuerFields,
  })
  .refine((c) => (c.ca_cert === undefined) === (c.ca_key === undefined), 'give both ca_cert and ca_key, or neither');

const CA_LIFETIME_MS = 2 * 365 * 86_400_000;

/** A CA key held in this process's memory. */
export function softwareSigner(key: KeyObject, certificate: () => Promise<Buffer>, description: string): CaSigner {
  const isRsa = key.asymmetricKeyType === 'rsa';
  const algorithm: SignatureAlgorithm = isRsa
    ? 'sha256WithRSAEncryption'
    : key.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? 'ecdsa-with-SHA384' : 'ecdsa-with-SHA256';
  const hash = algorithm.includes('384') ? 'sha384' : 'sha256';
  return {
    algorithm,
    description,
    certificate: () => certificate(),
    sign: async (tbs) => sign(hash, tbs, key),
  };
}

async function readOrCreateCa(dir: string, now: Date): Promise<CaSigner> {
  const keyPath = join(dir, 'ca-key.pem');
  const certPath = join(dir, 'ca.pem');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  try {
    const [keyPem, certPem] = await Promise.all([readFile(keyPath), readFile(certPath)]);
    const key = createPrivateKey(keyPem);
    const der = pemToDer(certPem.toString('utf8'));
    return softwareSigner(key, async () => der, `local-ca:${dir}`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new CertdError('E_SOURCE', `loading local CA in ${dir}: ${(err as Error).message}`, { cause: err });
    }
  }
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  let der: Buffer | undefined;
  const signer = softwareSigner(privateKey, async () => der!, `local-ca:${dir}`);
  der = await selfSignedCa(signer, publicKey.export({ type: 'spki', format: 'der' }), 'certd local development CA', CA_LIFETIME_MS, now, AbortSignal.timeout(10_000));
  try {
    // wx: a concurrent first run must not overwrite a CA the other one already handed out.
    await writeFile(keyPath, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600, flag: 'wx' });
    await writeFile(certPath, derToPem(der), { mode: 0o644, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return readOrCreateCa(dir, now);
    throw new CertdError('E_SOURCE', `creating local CA in ${dir}: ${(err as Error).message}`, { cause: err });
  }
  return signer;
}

async function readConfiguredCa(certPath: string, keyPath: string): Promise<CaSigner> {
  try {
    const key = createPrivateKey(await readFile(keyPath));
    const der = pemToDer((await readFile(certPath)).toString('utf8'));
    return softwareSigner(key, async () => der, `local-ca:${certPath}`);
  } catch (err) {
    throw new CertdError('E_SOURCE', `loading CA from ${certPath} and ${keyPath}: ${(err as Error).message}`, { cause: err, permanent: true });
  }
}

function pemToDer(pem: string): Buffer {
  const m = /-----BEGIN CERTIFICATE-----([\s\S]+?)-----END CERTIFICATE-----/.exec(pem);
  if (!m) throw new Error('no certificate in file');
  return Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
}

function derToPem(der: Buffer): string {
  return `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END CERTIFICATE-----\n`;
}

export const localCaSource = {
  type: 'local-ca',
  schema,
  create(config, deps, cert): Issuer {
    const ttlMs = parseDuration(config.ttl);
    const caDir = join(deps.stateDir, 'local-ca');
    const signer = (): Promise<CaSigner> =>
      config.ca_cert && config.ca_key
        ? deps.shared(`local-ca:${config.ca_cert}`, () => readConfiguredCa(deps.resolvePath(config.ca_cert!), deps.resolvePath(config.ca_key!)))
        : deps.shared(`local-ca:${caDir}`, () => readOrCreateCa(caDir, deps.clock.now()));
    return {
      dueAt: (deployed) => renewalDue(deployed, cert.renewBeforeMs),
      async fetch(_ref, signal) {
        const s = await signer();
        return issueLeaf(
          s,
          { dnsNames: config.dns_names, subject: config.subject, ttlMs, keyType: config.key, now: deps.clock.now() },
          s.description,
          signal,
        );
      },
    };
  },
} satisfies SourceFactory<typeof schema>;
