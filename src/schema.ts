/** Schema pieces shared by the config and the providers' own config schemas. */
import { z } from 'zod';
import { parseDuration } from './duration.js';

/** Keys whose value may be a secret put in the wrong place: a type error shows their type only. */
const SECRET_LOOKING = /pin|pass|secret|token|api_key|credential/i;

/**
 * A value as a config type error shows it: `number 30`, `string "web.test"`, `boolean true`,
 * `a list`, `a mapping`. `path` is the key path: a value under a secret-looking key (a PIN typed
 * where `pin_env` wants a variable name) is shown by its type alone.
 */
export function describeValue(value: unknown, path: readonly PropertyKey[] = []): string {
  if (value === null) return 'no value (null)';
  if (Array.isArray(value)) return 'a list';
  const type = typeof value;
  if (type === 'object') return 'a mapping';
  if (path.some((p) => typeof p === 'string' && SECRET_LOOKING.test(p))) return `a ${type} (value not shown)`;
  if (type === 'string') {
    const text = value as string;
    return `string ${JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}...` : text)}`;
  }
  return `${type} ${String(value)}`;
}

/** What the config reader calls the types zod expects. */
const EXPECTED: Readonly<Record<string, string>> = {
  string: 'a string',
  number: 'a number',
  int: 'a whole number',
  boolean: 'true or false',
  array: 'a list',
  tuple: 'a list',
  object: 'a mapping',
  record: 'a mapping',
  map: 'a mapping',
};

/**
 * The config's error map for type errors: "expected a number, got string "3072"", and
 * "required" only for a key that is absent or has no value. Other issues keep their own
 * messages (the schemas' custom ones, or zod's).
 */
export function configErrorMap(iss: { code?: string; expected?: string; input?: unknown; path?: readonly PropertyKey[] | undefined }): string | undefined {
  if (iss.code !== 'invalid_type') return undefined;
  if (iss.input === undefined) return 'required';
  if (iss.input === null) return 'required (the key has no value)';
  const expected = EXPECTED[iss.expected ?? ''] ?? `a ${iss.expected ?? 'different type'}`;
  return `expected ${expected}, got ${describeValue(iss.input, iss.path ?? [])}`;
}

const DURATION_HINT = 'a duration string such as 30s, 15m, 24h or 7d';

const durationString = () =>
  z
    .string({ error: (iss) => (iss.input === undefined || iss.input === null ? undefined : `expected ${DURATION_HINT}, got ${describeValue(iss.input, iss.path ?? [])}`) })
    .refine((v) => {
      try {
        parseDuration(v);
        return true;
      } catch {
        return false;
      }
    }, `expected ${DURATION_HINT}`);

/** A duration string ("30s", "7d") checked at load time. */
export const duration = (fallback: string) => durationString().default(fallback);

/** A duration string with no default (an override of a top-level setting). */
export const optionalDuration = () => durationString().optional();

const LEAF_KEY_TYPES = ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096'] as const;

/** Why a key type an issuer will not make is refused, by the policy rule it would break. */
export function refusedKeyType(value: unknown): string {
  const text = typeof value === 'string' ? value.toLowerCase() : '';
  const rsa = /^rsa-?(\d+)$/.exec(text);
  const choices = `expected one of ${LEAF_KEY_TYPES.join(', ')}`;
  if (rsa && Number(rsa[1]) < 2048) return `${choices}: ${value as string} breaks P-RSA-MIN (SP 800-131A r2 allows no RSA below 2048 bits)`;
  if (/^(ec-)?(p-?192|p-?224|secp256k1|brainpool.*|prime192v1|secp224r1)$/.test(text)) return `${choices}: ${value as string} breaks P-EC-CURVE (certd issues on P-256 and P-384 only)`;
  if (/^(ed25519|ed448)$/.test(text)) return `${choices}: ${value as string} is refused by P-EDDSA for issued leaves`;
  if (/^(dsa|ec-p521)/.test(text)) return `${choices}: certd does not issue ${value as string} leaves${text.startsWith('dsa') ? ' (P-DSA)' : ''}`;
  return choices;
}

/** Key types an issuer can generate for the leaf; a refused one is named with its policy rule. */
export const leafKeyType = z
  .enum(LEAF_KEY_TYPES, { error: (iss) => (iss.input === undefined ? undefined : refusedKeyType(iss.input)) })
  .default('ec-p256');

/** Keys common to every issuer (local-ca, pkcs11-ca, kms-ca, aws-private-ca). */
export const issuerFields = {
  dns_names: z.array(z.string().min(1)).min(1, 'an issuer needs at least one DNS name'),
  subject: z.string().optional(),
  ttl: duration('24h'),
  key: leafKeyType,
};

/** A file path; relative paths are resolved against the config file's folder. */
export const pathString = z.string().min(1);

/**
 * Keys every AWS source and kms-ca takes. Without `region` the SDK's chain decides (AWS_REGION,
 * the shared config file, IMDS); without `endpoint` the SDK reads AWS_ENDPOINT_URL_<SERVICE>,
 * then AWS_ENDPOINT_URL. `request_timeout` bounds one HTTP attempt (the SDK retries on it).
 * `use_fips_endpoint` overrides the top-level key of that name (see aws.ts).
 */
export const awsFields = {
  region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d+$/, 'expected an AWS region such as eu-west-1').optional(),
  endpoint: z.url({ protocol: /^https?$/, error: 'expected an http(s) URL' }).optional(),
  request_timeout: duration('10s'),
  /** The SDK's FIPS endpoint for this source (overrides the top-level use_fips_endpoint). */
  use_fips_endpoint: z.boolean().optional(),
};

/**
 * `key_encryption` of any source: the key field holds base64 KMS ciphertext, decrypted with
 * KMS Decrypt under exactly this encryption context. `key_id` is optional (symmetric
 * ciphertext names its key) and, when given, must be the key that encrypted it. `region` and
 * `endpoint` are KMS's own; the source's endpoint is not reused (it names another service).
 */
export const keyEncryption = z
  .strictObject({
    kms: z.strictObject({
      encryption_context: z.record(z.string().min(1), z.string()).refine((c) => Object.keys(c).length > 0, 'give at least one key: an empty context lets any ciphertext of the key decrypt'),
      key_id: z.string().min(1).optional(),
      ...awsFields,
    }),
  })
  .optional();

export type KeyEncryption = NonNullable<z.infer<typeof keyEncryption>>;
