/**
 * Source `pkcs11`: a certificate whose private key stays in a PKCS#11 token (Fortanix DSM, any
 * HSM; SoftHSM2 in tests). The certificate (and optionally its chain) is read from the token,
 * the key never leaves it: the Material carries an RFC 7512 URI that the server's PKCS#11
 * engine opens, the token's public key (SPKI) and the result of a sign-and-verify challenge,
 * so that P-KEYMATCH is checked against the token itself.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { z } from 'zod';
import type { Source, SourceFactory } from '../src/contracts.js';
import { CertdError } from '../src/errors.js';
import { readInput } from '../src/input.js';
import { Material } from '../src/material.js';
import { keyUri, proveKey, tokenConfig, tokenFields, tokenFor, tokenRefinements } from '../src/pkcs11.js';
import { parseBundle } from '../src/policy/pem.js';
import { pathString } from '../src/schema.js';

const schema = tokenRefinements
  .reduce(
    (s, [check, message]) => s.refine(check, message),
    z.strictObject({
      type: z.literal('pkcs11'),
      ...tokenFields,
      cert_label: z.string().min(1),
      key_label: z.string().min(1),
      /** A PEM file with the intermediates, leaf excluded. */
      chain: pathString.optional(),
      /** Labels of the intermediates' certificate objects on the token, in chain order. */
      chain_labels: z.array(z.string().min(1)).optional(),
    }),
  )
  .refine((c) => c.chain === undefined || c.chain_labels === undefined, 'give chain or chain_labels, not both');

export const pkcs11Source = {
  type: 'pkcs11',
  schema,
  create(config, deps, cert): Source {
    const token = tokenConfig(config, deps);
    const chainPath = config.chain === undefined ? undefined : deps.resolvePath(config.chain);
    const uri = keyUri(token.selector, config.key_label, token.pin);
    const origin = `pkcs11:${config.token_label ?? config.token_serial}/${config.cert_label}`;
    return {
      async fetch(_ref, signal) {
        const t = tokenFor(token, deps);
        const onToken = await t.run(`reading certificate "${config.cert_label}" and key "${config.key_label}" of ${cert.name}`, token.pin, deps.env, signal, (s) => {
          const leaf = s.certificate(config.cert_label);
          const chain = (config.chain_labels ?? []).map((l) => s.certificate(l));
          const key = s.privateKey(config.key_label);
          const spki = s.publicKey(key);
          let leafKey;
          try {
            leafKey = new X509Certificate(leaf).publicKey;
          } catch (err) {
            throw new CertdError('E_PARSE', `reading certificate "${config.cert_label}" of ${cert.name} on ${t.description}: not a valid X.509 certificate`, { cause: err, permanent: true });
          }
          const proven = proveKey(s, key, leafKey);
          return { leaf, chain, spki, proven, leafSpki: leafKey.export({ type: 'spki', format: 'der' }) };
        });
        const fileChain = chainPath ? parseBundle(await readInput(chainPath, `reading chain of ${cert.name}`)).certs : [];
        // A token public key that matches the leaf while the token key fails the challenge is
        // a token inconsistency: drop it so that P-KEYMATCH does not pass on it.
        const spki = onToken.proven || !onToken.spki?.equals(onToken.leafSpki) ? onToken.spki : undefined;
        return new Material({
          certs: [onToken.leaf, ...onToken.chain, ...fileChain],
          key: { kind: 'pkcs11', uri, spki, proven: onToken.proven },
          version: createHash('sha256').update(onToken.leaf).digest('hex').slice(0, 16),
          origin,
        });
      },
    };
  },
} satisfies SourceFactory<typeof schema>;
