/** Source `file`: a certificate, key and optional chain from local files (PEM or DER). */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { Source, SourceFactory } from '../src/contracts.js';
import { readInput } from '../src/input.js';
import { Material } from '../src/material.js';
import { parseCertInput, parseKeyInput } from '../src/policy/pem.js';
import { decryptPrivateKey } from '../src/kms.js';
import { keyEncryption, pathString } from '../src/schema.js';

const schema = z.strictObject({
  type: z.literal('file'),
  cert: pathString,
  key: pathString,
  chain: pathString.optional(),
  /** The key file holds base64 KMS ciphertext of the key (see src/kms.ts). */
  key_encryption: keyEncryption,
});

export const fileSource = {
  type: 'file',
  schema,
  create(config, deps, cert): Source {
    const certPath = deps.resolvePath(config.cert);
    const keyPath = deps.resolvePath(config.key);
    const chainPath = config.chain === undefined ? undefined : deps.resolvePath(config.chain);
    const origin = `file:${certPath}`;
    return {
      async fetch(_ref, signal) {
        const certBytes = await readInput(certPath, `reading certificate of ${cert.name}`);
        const keyBytes = await readInput(keyPath, `reading private key of ${cert.name}`);
        const chainBytes = chainPath ? await readInput(chainPath, `reading chain of ${cert.name}`) : Buffer.alloc(0);
        const certs = [
          ...parseCertInput(certBytes, `reading certificate of ${cert.name}: ${certPath}`),
          ...(chainPath ? parseCertInput(chainBytes, `reading chain of ${cert.name}: ${chainPath}`) : []),
        ];
        const keyPem = config.key_encryption
          ? await decryptPrivateKey(deps, config.key_encryption, keyBytes, { cert: cert.name, where: `file ${keyPath}` }, signal)
          : parseKeyInput(keyBytes, `reading private key of ${cert.name}: ${keyPath}`);
        const version = createHash('sha256').update(certBytes).update(chainBytes).update(keyBytes).digest('hex').slice(0, 16);
        return new Material({ certs, key: { kind: 'pem', pem: keyPem }, version, origin });
      },
    };
  },
} satisfies SourceFactory<typeof schema>;
