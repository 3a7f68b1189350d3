/**
 * certd's error type. Every failure that crosses a module boundary is a CertdError with a
 * stable `code`, a message that reads "doing what: detail", and the original error as `cause`.
 * Messages are scrubbed on construction: no PEM block, no AWS credential or request id, no PIN
 * can survive into a log line or an exit message.
 */
export type ErrorCode =
  | 'E_CONFIG' // the configuration or the command line is wrong (exit 2)
  | 'E_PARSE' // input is not a certificate or key at all (rule P-PARSE)
  | 'E_POLICY' // material violates the FIPS policy
  | 'E_SOURCE' // a source could not deliver material
  | 'E_TARGET' // a target could not stage, commit or roll back
  | 'E_RELOAD' // the server's test or reload command failed
  | 'E_VERIFY' // the served certificate is not the deployed one
  | 'E_LOCKED' // another certd run holds the deployment lock
  | 'E_INTERNAL';

export interface CertdErrorOptions {
  cause?: unknown;
  /** A permanent error is not retried within the cycle (wrong PIN, access denied, not found). */
  permanent?: boolean;
  /** Extra structured, non-secret facts for logs (secret id, key path, rule ids, ...). */
  details?: Record<string, unknown>;
}

export class CertdError extends Error {
  readonly code: ErrorCode;
  readonly permanent: boolean;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: CertdErrorOptions = {}) {
    super(scrub(message), options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CertdError';
    this.code = code;
    this.permanent = options.permanent ?? false;
    this.details = options.details ?? {};
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, permanent: this.permanent, ...this.details };
  }
}

const PEM_BLOCK = /-----BEGIN [A-Z0-9 ]+-----[\s\S]*?(-----END [A-Z0-9 ]+-----|$)/g;
const PRIVATE_KEY_ISH = /MII[A-Za-z0-9+/=]{40,}/g; // base64 DER (PKCS#8/PKCS#1 start with MII)
const AKID = /\b(AKIA|ASIA)[A-Z0-9]{12,}\b/g;
const SIGNATURE = /Signature=[0-9a-f]{16,}/gi;
const REQUEST_ID = /\b(request[- ]?id|RequestId|x-amzn-requestid)["':= ]+[A-Za-z0-9-]{8,}/gi;
const PIN_IN_URI = /(pin-value=)[^;&\s"]+/gi;
// `token=` of a PKCS#11 URI (pkcs11:token=label;...) names a token and is not secret.
const SECRET_KV = /\b(pin|password|passphrase|secret[_-]?access[_-]?key|api[_-]?key|(?<![:;]\s*)token)(["']?\s*[:=]\s*["']?)[^\s"',;]+/gi;

/** Removes anything that may be secret from a message meant for humans or logs. */
export function scrub(text: string): string {
  return text
    .replace(PEM_BLOCK, '[pem redacted]')
    .replace(PRIVATE_KEY_ISH, '[der redacted]')
    .replace(AKID, '[access key id]')
    .replace(SIGNATURE, 'Signature=[redacted]')
    .replace(REQUEST_ID, '$1 [redacted]')
    .replace(PIN_IN_URI, '$1[redacted]')
    .replace(SECRET_KV, '$1$2[redacted]');
}

/** The message of any thrown value, scrubbed; never the value itself. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return scrub(err.message);
  return scrub(String(err));
}

export function isCertdError(err: unknown, code?: ErrorCode): err is CertdError {
  return err instanceof CertdError && (code === undefined || err.code === code);
}
