/**
 * Source `pkcs11-ca`: an issuer whose CA key stays in a PKCS#11 token. certd makes the leaf key
 * in memory and has the token sign the leaf: C_Sign with CKM_SHA256_RSA_PKCS for an RSA CA, or
 * CKM_ECDSA over the SHA-256 (P-256) / SHA-384 (P-384 and up) digest for an EC CA. The CA
 * certificate is read from the token on every issue, so a renewed CA certificate is picked up.
 */
import { verify, X509Certificate } from 'node:crypto';
import { z } from 'zod';
import type { Issuer, SourceFactory } from '../src/contracts.js';
import { parseDuration } from '../src/duration.js';
import { CertdError } from '../src/errors.js';
import { type CaSigner, issueLeaf, renewalDue, type SignatureAlgorithm } from '../src/issuer.js';
import { tokenConfig, tokenFields, tokenFor, tokenRefinements } from '../src/pkcs11.js';
import { issuerFields } from '../src/schema.js';

const schema = tokenRefinements.reduce(
  (s, [check, message]) => s.refine(check, message),
  z.strictObject({
    type: z.literal('pkcs11-ca'),
    ...tokenFields,
    ca_key_label: z.string().min(1),
    ca_cert_label: z.string().min(1),
    ...issuerFields,
  }),
);

function algorithmFor(caDer: Buffer): SignatureAlgorithm {
  const key = new X509Certificate(caDer).publicKey;
  if (key.asymmetricKeyType === 'rsa') return 'sha256WithRSAEncryption';
  if (key.asymmetricKeyType === 'ec') {
    // SP 800-57: the hash should be as strong as the curve.
    return key.asymmetricKeyDetails?.namedCurve === 'prime256v1' ? 'ecdsa-with-SHA256' : 'ecdsa-with-SHA384';
  }
  throw new Error(`the CA key type ${key.asymmetricKeyType ?? 'unknown'} cannot sign certificates here (RSA or EC only)`);
}

export const pkcs11CaSource = {
  type: 'pkcs11-ca',
  schema,
  create(config, deps, cert): Issuer {
    const ttlMs = parseDuration(config.ttl);
    const token = tokenConfig(config, deps);
    const description = `pkcs11-ca:${config.token_label ?? config.token_serial}/${config.ca_key_label}`;

    /** The CA certificate and a signer bound to it, read from the token for this issue. */
    async function signer(signal: AbortSignal): Promise<CaSigner> {
      const t = tokenFor(token, deps);
      const caDer = await t.run(`reading CA certificate "${config.ca_cert_label}" for ${cert.name}`, token.pin, deps.env, signal, (s) => s.certificate(config.ca_cert_label));
      let algorithm: SignatureAlgorithm;
      try {
        algorithm = algorithmFor(caDer);
      } catch (err) {
        throw new CertdError('E_SOURCE', `using CA certificate "${config.ca_cert_label}" on ${t.description} for ${cert.name}: ${(err as Error).message}`, { cause: err, permanent: true });
      }
      const caKey = new X509Certificate(caDer).publicKey;
      const hash = algorithm.endsWith('384') ? 'sha384' : 'sha256';
      return {
        algorithm,
        description,
        certificate: async () => caDer,
        async sign(tbs, sig) {
          const signature = await t.run(`signing a certificate for ${cert.name} with CA key "${config.ca_key_label}"`, token.pin, deps.env, sig, (s) => {
            const key = s.privateKey(config.ca_key_label);
            const want = caKey.asymmetricKeyType === 'rsa' ? 'rsa' : 'ec';
            if (key.kind !== want) {
              throw new CertdError('E_SOURCE', `signing for ${cert.name}: CA key "${config.ca_key_label}" on ${t.description} is ${key.kind.toUpperCase()} but CA certificate "${config.ca_cert_label}" holds an ${want.toUpperCase()} key`, { permanent: true });
            }
            return s.sign(key, tbs, hash);
          });
          // A CA key that does not belong to the CA certificate would issue leaves that no
          // client accepts: refuse here, naming both labels, rather than deploy them.
          if (!verify(hash, tbs, caKey, signature)) {
            throw new CertdError('E_SOURCE', `signing for ${cert.name}: CA key "${config.ca_key_label}" on ${t.description} does not belong to CA certificate "${config.ca_cert_label}" (its signature does not verify)`, { permanent: true });
          }
          return signature;
        },
      };
    }

    return {
      dueAt: (deployed) => renewalDue(deployed, cert.renewBeforeMs),
      async fetch(_ref, signal) {
        const s = await signer(signal);
        return issueLeaf(s, { dnsNames: config.dns_names, subject: config.subject, ttlMs, keyType: config.key, now: deps.clock.now() }, description, signal);
      },
    };
  },
} satisfies SourceFactory<typeof schema>;
