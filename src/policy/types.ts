import type { Secret } from '../secret.js';

/** Rule ids of POLICY.md. They are a contract: never rename one. */
export const RULE_IDS = [
  'P-KEY-ALG', 'P-DSA', 'P-RSA-MIN', 'P-RSA-EXP', 'P-EC-CURVE', 'P-EC-EXPLICIT', 'P-EDDSA',
  'P-SIG-HASH', 'P-SIG-STRENGTH', 'P-V3', 'P-LEAF-BC', 'P-KU', 'P-EKU', 'P-SAN', 'P-VALID',
  'P-MIN-REMAINING', 'P-EXPIRING', 'P-LIFE-FIPS', 'P-LIFE-PUBLIC', 'P-SELF-SIGNED', 'P-KEYMATCH',
  'P-KEY-PEM', 'P-CHAIN-ORDER', 'P-CHAIN-ANCHOR', 'P-CHAIN-CA', 'P-CHAIN-PATHLEN', 'P-PARSE',
  'P-EXT-CRITICAL', 'P-EXT-DUP', 'P-SAN-SYNTAX', 'P-NAME-CONSTRAINTS', 'P-EC-POINT',
] as const;
export type RuleId = (typeof RULE_IDS)[number];

export type Severity = 'reject' | 'warn';

export interface Finding {
  readonly rule: RuleId;
  readonly severity: Severity;
  /** Human text naming what is wrong and, where it helps, what to do. Never key bytes. */
  readonly message: string;
  /** Index of the certificate concerned: 0 is the leaf, 1.. the chain as given. */
  readonly cert: number;
}

/** The policy settings of the config (`policy:` plus renew_before), resolved. */
export interface PolicySettings {
  readonly mode: 'enforce' | 'warn';
  readonly minRsaBits: number;
  readonly allowEd25519: boolean;
  readonly allowSelfSigned: boolean;
  /** DER certificates; when non-empty, chains must end at (or be issued by) one of them. */
  readonly trustAnchors: readonly Buffer[];
  readonly minRemainingMs: number;
  readonly renewBeforeMs: number;
  /**
   * Whether the chain is publicly trusted, for P-LIFE-PUBLIC. Absent: decided per chain, true
   * when it ends at or is issued by a root of the Mozilla store bundled with Node
   * (`tls.rootCertificates`). true/false force the answer (e.g. a private root of a public CA).
   */
  readonly publicTrust?: boolean | undefined;
}

export const DEFAULT_POLICY: PolicySettings = {
  mode: 'enforce',
  minRsaBits: 2048,
  allowEd25519: false,
  allowSelfSigned: false,
  trustAnchors: [],
  minRemainingMs: 7 * 86_400_000,
  renewBeforeMs: 30 * 86_400_000,
};

/** How the private key is known to the policy. */
export type PolicyKey =
  /** A private key PEM as delivered (PKCS#8, PKCS#1/SEC1 traditional, or encrypted PKCS#8). */
  | { readonly kind: 'pem'; readonly pem: Secret; readonly passphrase?: Secret | undefined }
  /** The key lives in an HSM: its public key (SPKI DER) as read from the token. */
  | { readonly kind: 'public'; readonly spki: Buffer }
  /** The key lives in an HSM and the source proved possession (sign + verify challenge). */
  | { readonly kind: 'proven' };

export interface PolicyInput {
  /** DER certificates as delivered: the leaf first, then the chain in the order given. */
  readonly certs: readonly Buffer[];
  /** Absent: P-KEYMATCH and P-KEY-PEM are not evaluated (validate without --key). */
  readonly key?: PolicyKey | undefined;
  /** Host names that the leaf must cover (P-SAN). */
  readonly hostnames?: readonly string[] | undefined;
}
