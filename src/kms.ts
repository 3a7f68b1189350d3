/**
 * KMS-encrypted private keys (`key_encryption: { kms: { encryption_context } }` on any source).
 * The key field holds base64 KMS ciphertext; KMS Decrypt with exactly the configured context
 * turns it back into the key. The plaintext lives only in memory: it is copied into a Secret and
 * the buffers it passed through are zeroed.
 */
import type { ProviderDeps } from './contracts.js';
import { type AwsLocation, awsClient, awsLocation, awsSend, sdk } from './aws.js';
import { CertdError } from './errors.js';
import { parseKeyInput } from './policy/pem.js';
import type { KeyEncryption } from './schema.js';
import { Secret } from './secret.js';

/** Where the ciphertext came from, for messages: the certificate and the field or file. */
export interface CiphertextOrigin {
  readonly cert: string;
  /** "secrets-manager:prod/web field private_key", "file /etc/certd/web.key.kms". */
  readonly where: string;
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

function ciphertextBytes(value: Buffer | string, origin: CiphertextOrigin): Buffer {
  const text = (Buffer.isBuffer(value) ? value.toString('latin1') : value).replace(/\s+/g, '');
  if (text.length === 0 || text.length % 4 !== 0 || !BASE64.test(text)) {
    const pem = text.includes('-----BEGIN');
    throw new CertdError(
      'E_PARSE',
      `decrypting the private key of ${origin.cert} from ${origin.where}: ${pem ? 'it holds PEM, not KMS ciphertext: remove key_encryption or store the ciphertext (base64 of KMS Encrypt\'s CiphertextBlob)' : 'it is not base64 KMS ciphertext'}`,
      { permanent: true },
    );
  }
  return Buffer.from(text, 'base64');
}

/** The private key PEM in `plaintext` (PEM, or DER: PKCS#8, SEC 1, PKCS#1); zeroes `plaintext`. */
function keyFromPlaintext(plaintext: Buffer, origin: CiphertextOrigin): Secret {
  try {
    return parseKeyInput(plaintext, `decrypting the private key of ${origin.cert} from ${origin.where}: the plaintext`);
  } finally {
    plaintext.fill(0);
  }
}

/**
 * Decrypts a KMS-encrypted private key. `inherit` is the source's region and use_fips_endpoint,
 * used when key_encryption gives none (the endpoint is never inherited: it names another service).
 */
export async function decryptPrivateKey(
  deps: ProviderDeps,
  enc: KeyEncryption,
  ciphertext: Buffer | string,
  origin: CiphertextOrigin,
  signal: AbortSignal,
  inherit: AwsLocation = {},
): Promise<Secret> {
  const blob = ciphertextBytes(ciphertext, origin);
  // use_fips_endpoint is inherited too: whether FIPS endpoints are wanted is not a per-service address.
  const loc: AwsLocation = { ...awsLocation(enc.kms), region: enc.kms.region ?? inherit.region, use_fips_endpoint: enc.kms.use_fips_endpoint ?? inherit.use_fips_endpoint };
  const context = JSON.stringify(enc.kms.encryption_context);
  const client = await awsClient(deps, 'kms', loc);
  const { DecryptCommand } = await sdk.kms();
  const out = await awsSend<{ Plaintext?: Uint8Array }>(
    deps,
    client,
    new DecryptCommand({ CiphertextBlob: blob, EncryptionContext: enc.kms.encryption_context, ...(enc.kms.key_id ? { KeyId: enc.kms.key_id } : {}) }),
    signal,
    {
      doing: `decrypting the private key of ${origin.cert} from ${origin.where}`,
      source: 'kms',
      operation: 'Decrypt',
      actions: ['kms:Decrypt'],
      resource: enc.kms.key_id ? `KMS key ${enc.kms.key_id}` : 'the KMS key of the ciphertext',
      notFoundHint: 'check key_id and the region',
      ciphertextHint: `check that encryption_context ${context} is exactly the context the key was encrypted with, and that ${origin.where} holds the ciphertext unmodified`,
    },
  );
  if (!out.Plaintext) throw new CertdError('E_SOURCE', `decrypting the private key of ${origin.cert} from ${origin.where}: KMS returned no plaintext`);
  const plaintext = Buffer.from(out.Plaintext);
  out.Plaintext.fill(0);
  return keyFromPlaintext(plaintext, origin);
}

// The key field's names, as parseBundle (policy/pem.ts) accepts them in JSON.
const KEY_FIELDS = ['private_key', 'key', 'PrivateKey'] as const;

/**
 * Splits a JSON secret whose key field is KMS ciphertext into the rest of the JSON (for
 * parseBundle) and the ciphertext. A secret that is not JSON cannot say which part is
 * ciphertext, so it is refused with a message saying what to store.
 */
export function splitEncryptedKey(bytes: Buffer, origin: CiphertextOrigin): { rest: Buffer; ciphertext: string; field: string } {
  const fail = (why: string) =>
    new CertdError('E_PARSE', `reading ${origin.where} for ${origin.cert}: ${why} (with key_encryption the secret is JSON: {"certificate": PEM, "chain": PEM, "private_key": base64 KMS ciphertext})`, { permanent: true });
  const text = bytes.toString('utf8');
  if (!text.trimStart().startsWith('{')) throw fail('not JSON');
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw fail('not valid JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw fail('not a JSON object');
  const obj = { ...(doc as Record<string, unknown>) };
  const present = KEY_FIELDS.filter((f) => typeof obj[f] === 'string' && obj[f] !== '');
  const field = present[0];
  if (field === undefined) throw fail(`no ${KEY_FIELDS.join('/')} field`);
  if (present.length > 1) throw fail(`both "${present[0]}" and "${present[1]}" given`);
  const ciphertext = obj[field] as string;
  delete obj[field];
  return { rest: Buffer.from(JSON.stringify(obj), 'utf8'), ciphertext, field };
}
