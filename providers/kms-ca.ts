/**
 * Source `kms-ca`: an issuer whose CA key never leaves AWS KMS. certd makes the leaf key in
 * memory, builds the TBS certificate and has KMS sign its digest (Sign, MessageType DIGEST):
 * RSASSA_PKCS1_V1_5_SHA_256 for an RSA CA, ECDSA_SHA_256 / ECDSA_SHA_384 for a P-256 / P-384
 * CA, chosen by the key in the CA certificate (`ca_cert`, a file).
 *
 * Before the first signature, GetPublicKey must match the CA certificate's key; a mismatch (a
 * wrong key_id, a stale ca_cert) is refused with a message naming both, since a leaf signed by
 * another key would be deployed and then rejected by every client.
 */
import { createPublicKey, verify, X509Certificate } from 'node:crypto';
import { z } from 'zod';
import { type AwsLocation, awsClient, awsLocation, awsSend, sdk } from '../src/aws.js';
import type { Issuer, ProviderDeps, SourceFactory } from '../src/contracts.js';
import { parseDuration } from '../src/duration.js';
import { CertdError } from '../src/errors.js';
import { readInput } from '../src/input.js';
import { type CaSigner, digestOf, issueLeaf, renewalDue, type SignatureAlgorithm } from '../src/issuer.js';
import { parseBundle } from '../src/policy/pem.js';
import { awsFields, issuerFields, pathString } from '../src/schema.js';

const schema = z.strictObject({
  type: z.literal('kms-ca'),
  key_id: z.string().min(1),
  ca_cert: pathString,
  ...awsFields,
  ...issuerFields,
});

type KmsSigningAlgorithm = 'RSASSA_PKCS1_V1_5_SHA_256' | 'ECDSA_SHA_256' | 'ECDSA_SHA_384';

/** The X.509 and KMS names of the signature the CA certificate's key makes. */
export function algorithmsFor(caDer: Buffer): { x509: SignatureAlgorithm; kms: KmsSigningAlgorithm } {
  const key = new X509Certificate(caDer).publicKey;
  if (key.asymmetricKeyType === 'rsa') return { x509: 'sha256WithRSAEncryption', kms: 'RSASSA_PKCS1_V1_5_SHA_256' };
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return { x509: 'ecdsa-with-SHA256', kms: 'ECDSA_SHA_256' };
    if (curve === 'secp384r1') return { x509: 'ecdsa-with-SHA384', kms: 'ECDSA_SHA_384' };
    throw new Error(`the CA certificate's EC curve ${curve ?? 'unknown'} is not one KMS signs with here (P-256 or P-384)`);
  }
  throw new Error(`the CA certificate's key type ${key.asymmetricKeyType ?? 'unknown'} cannot sign certificates here (RSA or EC only)`);
}

/**
 * A CaSigner over a KMS key. `checked` remembers that GetPublicKey matched this CA certificate
 * (per key and certificate, for the life of the runtime).
 */
function kmsSigner(deps: ProviderDeps, loc: AwsLocation, keyId: string, caPath: string, caDer: Buffer, certName: string): CaSigner {
  const description = `kms-ca:${keyId}`;
  let algorithms: { x509: SignatureAlgorithm; kms: KmsSigningAlgorithm };
  try {
    algorithms = algorithmsFor(caDer);
  } catch (err) {
    throw new CertdError('E_SOURCE', `issuing ${certName} with ${description}: CA certificate ${caPath}: ${(err as Error).message}`, { cause: err, permanent: true });
  }
  const caKey = new X509Certificate(caDer).publicKey;
  const caSpki = caKey.export({ type: 'spki', format: 'der' });
  const ctx = (operation: string, actions: string[]) => ({
    doing: `issuing ${certName} with ${description}`,
    source: 'kms',
    operation,
    actions,
    resource: `KMS key ${keyId}`,
    notFoundHint: `check key_id and the region${loc.region ? ` (${loc.region})` : ''}`,
  });
  const checked = deps.shared(`kms-ca:checked:${keyId}:${caSpki.toString('base64')}`, () => ({ ok: false }));

  async function checkPublicKey(signal: AbortSignal): Promise<void> {
    if (checked.ok) return;
    const client = await awsClient(deps, 'kms', loc);
    const { GetPublicKeyCommand } = await sdk.kms();
    const res = await awsSend<{ PublicKey?: Uint8Array; KeySpec?: string; KeyUsage?: string }>(deps, client, new GetPublicKeyCommand({ KeyId: keyId }), signal, ctx('GetPublicKey', ['kms:GetPublicKey']));
    if (res.KeyUsage !== undefined && res.KeyUsage !== 'SIGN_VERIFY') {
      throw new CertdError('E_SOURCE', `issuing ${certName} with ${description}: the KMS key's usage is ${res.KeyUsage}; a CA key must be SIGN_VERIFY`, { permanent: true });
    }
    const kmsSpki = res.PublicKey ? Buffer.from(res.PublicKey) : Buffer.alloc(0);
    let same = false;
    try {
      same = createPublicKey({ key: kmsSpki, format: 'der', type: 'spki' }).export({ type: 'spki', format: 'der' }).equals(caSpki);
    } catch {
      same = false;
    }
    if (!same) {
      throw new CertdError(
        'E_SOURCE',
        `issuing ${certName} with ${description}: the KMS key's public key (${res.KeySpec ?? 'unknown spec'}) is not the key of CA certificate ${caPath}: check key_id and ca_cert (leaves signed by this key would not chain to that CA)`,
        { permanent: true },
      );
    }
    checked.ok = true;
  }

  return {
    algorithm: algorithms.x509,
    description,
    certificate: async () => caDer,
    async sign(tbs, signal) {
      await checkPublicKey(signal);
      const client = await awsClient(deps, 'kms', loc);
      const { SignCommand } = await sdk.kms();
      const res = await awsSend<{ Signature?: Uint8Array }>(
        deps,
        client,
        new SignCommand({ KeyId: keyId, Message: digestOf(algorithms.x509, tbs), MessageType: 'DIGEST', SigningAlgorithm: algorithms.kms }),
        signal,
        ctx('Sign', ['kms:Sign']),
      );
      const signature = res.Signature ? Buffer.from(res.Signature) : Buffer.alloc(0);
      const hash = algorithms.x509.endsWith('384') ? 'sha384' : 'sha256';
      // KMS signs a digest it cannot check against the TBS: make sure the certificate will verify.
      if (!verify(hash, tbs, caKey, signature)) {
        throw new CertdError('E_SOURCE', `issuing ${certName} with ${description}: the signature KMS returned does not verify with CA certificate ${caPath}`, { permanent: true });
      }
      return signature;
    },
  };
}

export const kmsCaSource = {
  type: 'kms-ca',
  schema,
  create(config, deps, cert): Issuer {
    const ttlMs = parseDuration(config.ttl);
    const loc = awsLocation(config);
    const caPath = deps.resolvePath(config.ca_cert);
    const description = `kms-ca:${config.key_id}`;
    return {
      dueAt: (deployed) => renewalDue(deployed, cert.renewBeforeMs),
      async fetch(_ref, signal) {
        // Read on every issue: a renewed CA certificate is picked up without a restart.
        const caDer = parseBundle(await readInput(caPath, `reading CA certificate of ${cert.name}`)).certs[0];
        if (!caDer) throw new CertdError('E_SOURCE', `reading CA certificate of ${cert.name}: ${caPath} holds no certificate`, { permanent: true });
        const signer = kmsSigner(deps, loc, config.key_id, caPath, caDer, cert.name);
        return issueLeaf(signer, { dnsNames: config.dns_names, subject: config.subject, ttlMs, keyType: config.key, now: deps.clock.now() }, description, signal);
      },
    };
  },
} satisfies SourceFactory<typeof schema>;
