/**
 * Source `secrets-manager`: a certificate and key kept in one AWS Secrets Manager secret, as a
 * PEM bundle or JSON (certificate/private_key/chain and their aliases, ACM's export names) in
 * SecretString, or DER/PEM in SecretBinary. The version is the secret's VersionId.
 *
 * Cost: certificates read at AWSCURRENT (the default) share one batcher per client, and the
 * cycle prefetches them together: one BatchGetSecretValue per 20 secrets. BatchGetSecretValue
 * reads AWSCURRENT only, so another version_stage is read with GetSecretValue. AWSPENDING is
 * refused at config load: it marks a version a rotation has not finished testing.
 */
import { z } from 'zod';
import { type AwsClient, type AwsLocation, awsClient, awsLocation, awsError, awsSend, clientKey, sdk } from '../src/aws.js';
import type { FetchRef, Prefetcher, ProviderDeps, Source, SourceFactory } from '../src/contracts.js';
import { CertdError, messageOf } from '../src/errors.js';
import { decryptPrivateKey, splitEncryptedKey } from '../src/kms.js';
import { Material } from '../src/material.js';
import { awsFields, keyEncryption } from '../src/schema.js';

const schema = z.strictObject({
  type: z.literal('secrets-manager'),
  secret_id: z.string().min(1),
  version_stage: z
    .string()
    .min(1)
    .default('AWSCURRENT')
    .refine((s) => s !== 'AWSPENDING', 'AWSPENDING is never deployed: it labels a version that a rotation is still creating and testing; use AWSCURRENT (the default) or AWSPREVIOUS'),
  ...awsFields,
  key_encryption: keyEncryption,
});

/** The fields of GetSecretValue's answer (and of each BatchGetSecretValue value) certd reads. */
interface SecretValue {
  ARN?: string | undefined;
  Name?: string | undefined;
  VersionId?: string | undefined;
  SecretString?: string | undefined;
  SecretBinary?: Uint8Array | undefined;
}

/** BatchGetSecretValue's per-secret error, kept until the certificate's fetch turns it into its own message. */
interface ItemError {
  name: string;
  message: string;
}

type Answer = { value: SecretValue } | { error: ItemError };

const BATCH_MAX = 20;
/** Batches in flight at once: BatchGetSecretValue's quota is 100/s per account and region. */
const BATCH_CONCURRENCY = 4;
const ACTIONS = ['secretsmanager:GetSecretValue', 'secretsmanager:BatchGetSecretValue'];

/** True when a value answered for `id` (a name, an ARN, or an ARN without its random suffix). */
function answers(v: SecretValue, id: string): boolean {
  if (v.Name === id || v.ARN === id) return true;
  return id.startsWith('arn:') && v.ARN !== undefined && v.ARN.startsWith(`${id}-`) && v.ARN.length === id.length + 7;
}

/**
 * One per SDK client: knows which secret each certificate reads, and keeps one answer per
 * certificate from the last prefetch until that certificate's fetch takes it.
 */
class SecretsBatcher implements Prefetcher {
  readonly #wanted = new Map<string, string>();
  readonly #answers = new Map<string, Answer>();

  constructor(private readonly deps: ProviderDeps, private readonly loc: AwsLocation) {}

  register(cert: string, secretId: string): void {
    this.#wanted.set(cert, secretId);
  }

  take(cert: string): Answer | undefined {
    const a = this.#answers.get(cert);
    this.#answers.delete(cert);
    return a;
  }

  async prefetch(refs: readonly FetchRef[], signal: AbortSignal): Promise<void> {
    const byId = new Map<string, string[]>();
    for (const ref of refs) {
      this.#answers.delete(ref.name);
      const id = this.#wanted.get(ref.name);
      if (id === undefined) continue;
      byId.set(id, [...(byId.get(id) ?? []), ref.name]);
    }
    const ids = [...byId.keys()];
    if (ids.length === 0) return;
    const client = await awsClient(this.deps, 'secrets-manager', this.loc);
    const chunks: string[][] = [];
    for (let i = 0; i < ids.length; i += BATCH_MAX) chunks.push(ids.slice(i, i + BATCH_MAX));
    const failures: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < chunks.length && !signal.aborted) {
        const chunk = chunks[next++] as string[];
        try {
          for (const [id, answer] of await this.#batch(client, chunk, signal)) {
            for (const cert of byId.get(id) ?? []) this.#answers.set(cert, answer);
          }
        } catch (err) {
          // Those certificates fetch directly; the batch's failure is only worth a warning.
          failures.push(messageOf(err));
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(BATCH_CONCURRENCY, chunks.length) }, worker));
    if (failures.length > 0) {
      this.deps.log.warn({ step: 'prefetch', source: 'secrets-manager', failed: failures.length, batches: chunks.length, err: failures[0] }, 'batch read failed; the secrets in it are read one by one');
    }
  }

  async #batch(client: AwsClient, ids: string[], signal: AbortSignal): Promise<Map<string, Answer>> {
    const { BatchGetSecretValueCommand } = await sdk.secretsManager();
    const out = new Map<string, Answer>();
    let token: string | undefined;
    for (let page = 0; page < 100; page++) {
      const res = await awsSend<{ SecretValues?: SecretValue[]; Errors?: { SecretId?: string; ErrorCode?: string; Message?: string }[]; NextToken?: string }>(
        this.deps,
        client,
        new BatchGetSecretValueCommand({ SecretIdList: ids, ...(token ? { NextToken: token } : {}) }),
        signal,
        { doing: `reading ${ids.length} secrets in one batch`, source: 'secrets-manager', operation: 'BatchGetSecretValue', actions: ACTIONS, resource: ids.join(', ') },
      );
      for (const v of res.SecretValues ?? []) {
        const id = ids.find((i) => answers(v, i));
        if (id !== undefined) out.set(id, { value: v });
      }
      for (const e of res.Errors ?? []) {
        if (e.SecretId !== undefined) out.set(e.SecretId, { error: { name: e.ErrorCode ?? 'Error', message: e.Message ?? '' } });
      }
      token = res.NextToken;
      if (!token) break;
    }
    return out;
  }
}

export const secretsManagerSource = {
  type: 'secrets-manager',
  schema,
  create(config, deps, cert): Source {
    const loc = awsLocation(config);
    const origin = `secrets-manager:${config.secret_id}`;
    const doing = `fetching ${cert.name} from ${origin}`;
    const ctx = {
      doing,
      source: 'secrets-manager',
      operation: 'GetSecretValue',
      actions: ACTIONS,
      resource: config.secret_id,
      notFoundHint: `check secret_id, the region${config.region ? ` (${config.region})` : ''} and that version stage ${config.version_stage} exists`,
    };
    const batched = config.version_stage === 'AWSCURRENT';
    const batcher = batched ? deps.shared(`secrets-manager:batcher:${clientKey('secrets-manager', loc)}`, () => new SecretsBatcher(deps, loc)) : undefined;
    batcher?.register(cert.name, config.secret_id);

    async function direct(signal: AbortSignal): Promise<SecretValue> {
      const client = await awsClient(deps, 'secrets-manager', loc);
      const { GetSecretValueCommand } = await sdk.secretsManager();
      return awsSend<SecretValue>(deps, client, new GetSecretValueCommand({ SecretId: config.secret_id, VersionStage: config.version_stage }), signal, ctx);
    }

    async function toMaterial(v: SecretValue, signal: AbortSignal): Promise<Material> {
      const bytes = v.SecretBinary !== undefined ? Buffer.from(v.SecretBinary) : Buffer.from(v.SecretString ?? '', 'utf8');
      const version = v.VersionId ?? 'unknown';
      try {
        if (!config.key_encryption) return Material.fromBundle(bytes, { version, origin });
        const where = { cert: cert.name, where: origin };
        const { rest, ciphertext, field } = splitEncryptedKey(bytes, where);
        const key = await decryptPrivateKey(deps, config.key_encryption, ciphertext, { cert: cert.name, where: `${origin} field ${field}` }, signal, loc);
        return Material.fromBundle(rest, { version, origin, keyOverride: { kind: 'pem', pem: key } });
      } catch (err) {
        if (err instanceof CertdError && err.code === 'E_PARSE' && !err.message.startsWith(doing) && !err.message.includes(origin)) {
          throw new CertdError('E_PARSE', `${doing}: ${err.message}`, { cause: err, permanent: true });
        }
        throw err;
      } finally {
        bytes.fill(0);
        v.SecretBinary?.fill(0);
      }
    }

    // A secret version's content never changes, so the Material of the version read last time
    // is reused instead of parsing (and KMS-decrypting) the same bytes again every cycle: that
    // parse is most of an unchanged cycle's cost.
    let last: Material | undefined;
    const source: Source & { prefetcher?: Prefetcher } = {
      async fetch(ref, signal) {
        const answer = batcher?.take(ref.name);
        if (answer && 'error' in answer) {
          throw awsError(Object.assign(new Error(answer.error.message), { name: answer.error.name }), { ...ctx, operation: 'BatchGetSecretValue' });
        }
        const value = answer?.value ?? (await direct(signal));
        if (last !== undefined && value.VersionId !== undefined && value.VersionId === last.version) {
          value.SecretBinary?.fill(0);
          return last;
        }
        last = await toMaterial(value, signal);
        return last;
      },
    };
    if (batcher) source.prefetcher = batcher;
    return source;
  },
} satisfies SourceFactory<typeof schema>;
