/**
 * Source `ssm`: a certificate, key and optional chain kept in SSM Parameter Store, in one of
 * two shapes.
 *
 * Parameters: `cert_parameter`, `key_parameter`, `chain_parameter` name the parameters (PEM
 * values; the key usually a SecureString). Certificates sharing an SDK client share a batcher
 * and the cycle prefetches them together: one GetParameters per 10 names.
 *
 * Path: `path: /tls` discovers one certificate per folder under the prefix
 * (`/tls/<name>/cert`, `/tls/<name>/key`, optional `/tls/<name>/chain`; deeper folders too,
 * "team/web" becoming "team-web"). One GetParametersByPath walk (Recursive, every NextToken
 * followed: a short or empty page may still carry one) reads all of them at once.
 *
 * The version is the parameters' Version numbers: "cert:3,key:2,chain:1".
 */
import { z } from 'zod';
import { type AwsClient, type AwsLocation, awsClient, awsSend, clientKey, sdk } from '../src/aws.js';
import type { Discovering, FetchRef, Prefetcher, ProviderDeps, Source, SourceFactory } from '../src/contracts.js';
import { CertdError, messageOf } from '../src/errors.js';
import { decryptPrivateKey } from '../src/kms.js';
import { Material } from '../src/material.js';
import { parseBundle } from '../src/policy/pem.js';
import { awsFields, type KeyEncryption, keyEncryption } from '../src/schema.js';
import type { Secret } from '../src/secret.js';

const parameterName = z.string().min(1).max(2048);

const schema = z
  .strictObject({
    type: z.literal('ssm'),
    cert_parameter: parameterName.optional(),
    key_parameter: parameterName.optional(),
    chain_parameter: parameterName.optional(),
    path: z.string().regex(/^\/[A-Za-z0-9_.\-/]*$/, 'a path starts with "/" (e.g. /tls)').optional(),
    with_decryption: z.boolean().default(true),
    ...awsFields,
    key_encryption: keyEncryption,
  })
  .refine(
    (c) => (c.path === undefined ? c.cert_parameter !== undefined && c.key_parameter !== undefined : c.cert_parameter === undefined && c.key_parameter === undefined && c.chain_parameter === undefined),
    'give path (one certificate per folder under it), or cert_parameter and key_parameter (chain_parameter optional), not both',
  );

type Config = z.infer<typeof schema>;

interface Parameter {
  Name?: string | undefined;
  Value?: string | undefined;
  Version?: number | undefined;
  Selector?: string | undefined;
  ARN?: string | undefined;
}

/** The parameters of one certificate as read: a missing one is `undefined`. */
interface Parts {
  cert?: Parameter | undefined;
  key?: Parameter | undefined;
  chain?: Parameter | undefined;
}

interface Names {
  cert: string;
  key: string;
  chain?: string | undefined;
}

const GET_MAX = 10;
const ACTIONS = ['ssm:GetParameters', 'ssm:GetParametersByPath'];

function namesOf(n: Names): string[] {
  return n.chain === undefined ? [n.cert, n.key] : [n.cert, n.key, n.chain];
}

/** True when `p` is the answer for the requested `name` (a name, an ARN, either with ":version"). */
function answers(p: Parameter, name: string): boolean {
  const sel = p.Selector ?? '';
  return p.Name === name || `${p.Name}${sel}` === name || p.ARN === name || `${p.ARN}${sel}` === name;
}

/** GetParameters for up to ten names; missing ones come back in InvalidParameters. */
async function getParameters(deps: ProviderDeps, client: AwsClient, names: string[], decrypt: boolean, signal: AbortSignal, doing: string): Promise<Map<string, Parameter | undefined>> {
  const { GetParametersCommand } = await sdk.ssm();
  const res = await awsSend<{ Parameters?: Parameter[]; InvalidParameters?: string[] }>(deps, client, new GetParametersCommand({ Names: names, WithDecryption: decrypt }), signal, {
    doing,
    source: 'ssm',
    operation: 'GetParameters',
    actions: ['ssm:GetParameters', ...(decrypt ? ['kms:Decrypt'] : [])],
    resource: names.join(', '),
  });
  const out = new Map<string, Parameter | undefined>();
  for (const name of names) out.set(name, (res.Parameters ?? []).find((p) => answers(p, name)));
  return out;
}

/**
 * One per SDK client: which parameters each certificate reads, and one answer per certificate
 * from the last prefetch until that certificate's fetch takes it.
 */
class ParametersBatcher implements Prefetcher {
  readonly #wanted = new Map<string, { names: Names; decrypt: boolean }>();
  readonly #answers = new Map<string, Parts>();

  constructor(private readonly deps: ProviderDeps, private readonly loc: AwsLocation) {}

  register(cert: string, names: Names, decrypt: boolean): void {
    this.#wanted.set(cert, { names, decrypt });
  }

  take(cert: string): Parts | undefined {
    const a = this.#answers.get(cert);
    this.#answers.delete(cert);
    return a;
  }

  async prefetch(refs: readonly FetchRef[], signal: AbortSignal): Promise<void> {
    const wanted: [string, { names: Names; decrypt: boolean }][] = [];
    for (const ref of refs) {
      this.#answers.delete(ref.name);
      const w = this.#wanted.get(ref.name);
      if (w) wanted.push([ref.name, w]);
    }
    if (wanted.length === 0) return;
    const client = await awsClient(this.deps, 'ssm', this.loc);
    const failures: string[] = [];
    for (const decrypt of [true, false]) {
      const group = wanted.filter(([, w]) => w.decrypt === decrypt);
      const names = [...new Set(group.flatMap(([, w]) => namesOf(w.names)))];
      const found = new Map<string, Parameter | undefined>();
      // Sequential: SSM's standard throughput (40/s) is shared by every reader of the account.
      for (let i = 0; i < names.length && !signal.aborted; i += GET_MAX) {
        const chunk = names.slice(i, i + GET_MAX);
        try {
          for (const [n, p] of await getParameters(this.deps, client, chunk, decrypt, signal, `reading ${chunk.length} parameters in one batch`)) found.set(n, p);
        } catch (err) {
          failures.push(messageOf(err));
        }
      }
      for (const [cert, w] of group) {
        // Only a complete answer is kept; the rest fetch directly.
        if (!namesOf(w.names).every((n) => found.has(n))) continue;
        this.#answers.set(cert, { cert: found.get(w.names.cert), key: found.get(w.names.key), chain: w.names.chain === undefined ? undefined : found.get(w.names.chain) });
      }
    }
    if (failures.length > 0) {
      this.deps.log.warn({ step: 'prefetch', source: 'ssm', failed: failures.length, err: failures[0] }, 'batch read failed; those parameters are read per certificate');
    }
  }
}

/** Material from the parameters read; names what is missing or unreadable. */
async function toMaterial(
  deps: ProviderDeps,
  config: Config,
  loc: AwsLocation,
  certName: string,
  names: Names,
  parts: Parts,
  origin: string,
  signal: AbortSignal,
): Promise<Material> {
  const doing = `fetching ${certName} from ${origin}`;
  const missing = (['cert', 'key', 'chain'] as const).filter((k) => names[k] !== undefined && parts[k]?.Value === undefined).map((k) => names[k] as string);
  if (missing.length > 0) {
    throw new CertdError('E_SOURCE', `${doing}: not found: parameter${missing.length > 1 ? 's' : ''} ${missing.join(', ')} ${missing.length > 1 ? 'do' : 'does'} not exist (check the names, the region${config.region ? ` (${config.region})` : ''} and that the role has ssm:GetParameters on them)`, {
      permanent: true,
      details: { missing },
    });
  }
  const version = `cert:${parts.cert?.Version ?? '?'},key:${parts.key?.Version ?? '?'}${parts.chain ? `,chain:${parts.chain.Version ?? '?'}` : ''}`;
  const keyValue = parts.key?.Value as string;
  try {
    const certs = [...parseBundle(Buffer.from(parts.cert?.Value as string, 'utf8')).certs, ...(parts.chain?.Value ? parseBundle(Buffer.from(parts.chain.Value, 'utf8')).certs : [])];
    let key: Secret | undefined;
    if (config.key_encryption) {
      key = await decryptPrivateKey(deps, config.key_encryption as KeyEncryption, keyValue, { cert: certName, where: `ssm:${names.key}` }, signal, loc);
    } else {
      const bytes = Buffer.from(keyValue, 'utf8');
      key = parseBundle(bytes).keyPem;
      bytes.fill(0);
    }
    if (!key) throw new CertdError('E_PARSE', `${doing}: ${names.key} holds no PEM private key`, { permanent: true });
    return new Material({ certs, key: { kind: 'pem', pem: key }, version, origin });
  } catch (err) {
    if (err instanceof CertdError && err.code === 'E_PARSE' && !err.message.includes(certName)) {
      throw new CertdError('E_PARSE', `${doing}: ${err.message}`, { cause: err, permanent: true });
    }
    throw err;
  }
}

/** Reads one certificate's parameters directly (one GetParameters call). */
async function directParts(deps: ProviderDeps, loc: AwsLocation, names: Names, decrypt: boolean, signal: AbortSignal, doing: string): Promise<Parts> {
  const client = await awsClient(deps, 'ssm', loc);
  const found = await getParameters(deps, client, namesOf(names), decrypt, signal, doing);
  return { cert: found.get(names.cert), key: found.get(names.key), chain: names.chain === undefined ? undefined : found.get(names.chain) };
}

function parametersSource(config: Config, deps: ProviderDeps, certName: string, loc: AwsLocation): Source & { prefetcher: Prefetcher } {
  const names: Names = { cert: config.cert_parameter as string, key: config.key_parameter as string, chain: config.chain_parameter };
  const origin = `ssm:${names.cert}`;
  const batcher = deps.shared(`ssm:batcher:${clientKey('ssm', loc)}`, () => new ParametersBatcher(deps, loc));
  batcher.register(certName, names, config.with_decryption);
  return {
    prefetcher: batcher,
    async fetch(ref, signal) {
      const parts = batcher.take(ref.name) ?? (await directParts(deps, loc, names, config.with_decryption, signal, `fetching ${ref.name} from ${origin}`));
      return toMaterial(deps, config, loc, ref.name, names, parts, origin, signal);
    },
  };
}

const LEAVES = new Set(['cert', 'key', 'chain']);

function pathSource(config: Config, deps: ProviderDeps, entry: string, loc: AwsLocation): Source & Discovering {
  const base = (config.path as string).replace(/\/+$/, '');
  const prefix = `${base}/`;
  /** What the last discovery read, per member; a member's fetch takes its own once. */
  let found = new Map<string, Parts>();
  const members = new Map<string, Source>();
  const namesFor = (member: string): Names => ({ cert: `${prefix}${member}/cert`, key: `${prefix}${member}/key`, chain: `${prefix}${member}/chain` });

  return {
    async fetch() {
      throw new CertdError('E_INTERNAL', `${entry}: an ssm path entry stands for the certificates found under ${base}; only its members are fetched`);
    },
    async discover(signal) {
      const client = await awsClient(deps, 'ssm', loc);
      const { GetParametersByPathCommand } = await sdk.ssm();
      const next = new Map<string, Parts>();
      let token: string | undefined;
      // A bound against a token that never ends; 100,000 parameters is beyond any fleet.
      for (let page = 0; page < 10_000; page++) {
        const res = await awsSend<{ Parameters?: Parameter[]; NextToken?: string }>(
          deps,
          client,
          new GetParametersByPathCommand({ Path: base || '/', Recursive: true, WithDecryption: config.with_decryption, MaxResults: 10, ...(token ? { NextToken: token } : {}) }),
          signal,
          {
            doing: `discovering certificates of ${entry} under ssm:${base}`,
            source: 'ssm',
            operation: 'GetParametersByPath',
            actions: ['ssm:GetParametersByPath', ...(config.with_decryption ? ['kms:Decrypt'] : [])],
            resource: `${base}/*`,
          },
        );
        for (const p of res.Parameters ?? []) {
          if (!p.Name?.startsWith(prefix)) continue;
          const rel = p.Name.slice(prefix.length).split('/');
          const leaf = rel.pop() as string;
          if (rel.length === 0 || !LEAVES.has(leaf)) continue;
          const member = rel.join('/');
          const parts = next.get(member) ?? {};
          parts[leaf as keyof Parts] = p;
          next.set(member, parts);
        }
        token = res.NextToken;
        if (!token) break;
      }
      found = next;
      return [...next.keys()].sort();
    },
    member(name) {
      let m = members.get(name);
      if (!m) {
        const names = namesFor(name);
        const origin = `ssm:${prefix}${name}`;
        m = {
          async fetch(ref, signal) {
            let parts = found.get(name);
            found.delete(name);
            if (!parts) {
              // Not seen by the last discovery (or a retry): read this member alone.
              parts = await directParts(deps, loc, names, config.with_decryption, signal, `fetching ${ref.name} from ${origin}`);
            }
            // The chain is optional in a folder: ask only for what the folder has.
            const own: Names = parts.chain ? names : { cert: names.cert, key: names.key };
            return toMaterial(deps, config, loc, ref.name, own, parts, origin, signal);
          },
        };
        members.set(name, m);
      }
      return m;
    },
  };
}

export const ssmSource = {
  type: 'ssm',
  schema,
  create(config, deps, cert): Source {
    const loc: AwsLocation = { region: config.region, endpoint: config.endpoint, request_timeout: config.request_timeout };
    return config.path === undefined ? parametersSource(config, deps, cert.name, loc) : pathSource(config, deps, cert.name, loc);
  },
} satisfies SourceFactory<typeof schema>;
