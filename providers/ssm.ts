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
 * "team/web" becoming "team-web"). Every NextToken is followed: a short or empty page may still
 * carry one.
 * - The first discovery (nothing held yet) reads everything with one GetParametersByPath walk
 *   (Recursive, 10 parameters a page).
 * - Later ones walk DescribeParameters (Path filter, Recursive, 50 a page): names, versions and
 *   dates, never values, so no KMS decrypt. A folder whose parameters are those the source
 *   built its held Material from is answered with that Material (no read, no parse, no KMS);
 *   changed and new folders are read with GetParameters (10 names a call); when that would cost
 *   as many calls as the GetParametersByPath walk, the walk is made instead. An unchanged cycle
 *   of 1,000 two-parameter folders costs 40 calls instead of 200.
 * - IAM: ssm:GetParametersByPath and ssm:GetParameters on the path, ssm:DescribeParameters
 *   (which IAM grants on Resource "*" only), kms:Decrypt for SecureString values. Without
 *   ssm:DescribeParameters the source warns once and keeps to the GetParametersByPath walk.
 *
 * The version is the parameters' Version numbers: "cert:3,key:2,chain:1".
 */
import { z } from 'zod';
import { type AwsClient, type AwsLocation, awsClient, awsLocation, awsSend, clientKey, isAccessDenied, sdk } from '../src/aws.js';
import type { Discovering, FetchRef, Prefetcher, ProviderDeps, Source, SourceFactory } from '../src/contracts.js';
import { CertdError, messageOf } from '../src/errors.js';
import { decryptPrivateKey } from '../src/kms.js';
import { Material } from '../src/material.js';
import { parseCertInput, parseKeyInput } from '../src/policy/pem.js';
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
  LastModifiedDate?: Date | undefined;
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
const BY_PATH_MAX = 10;
const DESCRIBE_MAX = 50;
/** A bound against a NextToken that never ends; 100,000 pages is beyond any fleet. */
const MAX_PAGES = 10_000;

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
 * GetParameters over any number of names, 10 a call, one call at a time (SSM's standard
 * throughput, 40/s, is shared by every reader of the account). A name is in the answer when its
 * call succeeded (mapped to undefined when it does not exist); a failed call's message goes to
 * `failures` and its names stay out, for the caller to read another way.
 */
async function readParameters(deps: ProviderDeps, client: AwsClient, names: readonly string[], decrypt: boolean, signal: AbortSignal, failures: string[]): Promise<Map<string, Parameter | undefined>> {
  const found = new Map<string, Parameter | undefined>();
  for (let i = 0; i < names.length && !signal.aborted; i += GET_MAX) {
    const chunk = names.slice(i, i + GET_MAX);
    try {
      for (const [n, p] of await getParameters(deps, client, chunk, decrypt, signal, `reading ${chunk.length} parameters in one batch`)) found.set(n, p);
    } catch (err) {
      failures.push(messageOf(err));
    }
  }
  return found;
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
      const found = await readParameters(this.deps, client, names, decrypt, signal, failures);
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

/** The Material version of what was read: "cert:3,key:2,chain:1". */
function versionOf(parts: Parts): string {
  return `cert:${parts.cert?.Version ?? '?'},key:${parts.key?.Version ?? '?'}${parts.chain ? `,chain:${parts.chain.Version ?? '?'}` : ''}`;
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
  const version = versionOf(parts);
  const keyValue = parts.key?.Value as string;
  try {
    const certs = [
      ...parseCertInput(Buffer.from(parts.cert?.Value as string, 'utf8'), `${doing}: parameter ${names.cert}`),
      ...(parts.chain?.Value ? parseCertInput(Buffer.from(parts.chain.Value, 'utf8'), `${doing}: parameter ${names.chain}`) : []),
    ];
    let key: Secret;
    if (config.key_encryption) {
      key = await decryptPrivateKey(deps, config.key_encryption as KeyEncryption, keyValue, { cert: certName, where: `ssm:${names.key}` }, signal, loc);
    } else {
      const bytes = Buffer.from(keyValue, 'utf8');
      try {
        key = parseKeyInput(bytes, `${doing}: parameter ${names.key}`);
      } finally {
        bytes.fill(0);
      }
    }
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

const LEAVES = ['cert', 'key', 'chain'] as const;
type Leaf = (typeof LEAVES)[number];

/**
 * The parameters of a folder as one comparable string. Version alone is not enough: a parameter
 * deleted and created again starts again at Version 1, so its modification time is part of it,
 * in whole seconds (should two operations ever answer the same version with different dates, the
 * cost is one more read, never a missed change). A leaf the folder lacks is "-".
 */
function stampOf(parts: Parts): string {
  return LEAVES.map((leaf) => {
    const p = parts[leaf];
    if (p === undefined) return `${leaf}:-`;
    const at = p.LastModifiedDate === undefined ? '?' : String(Math.floor(p.LastModifiedDate.getTime() / 1000));
    return `${leaf}:${p.Version ?? '?'}@${at}`;
  }).join(',');
}

/** Parameters (with or without values) grouped by folder under `prefix`; anything else is ignored. */
function groupByFolder(prefix: string, params: readonly Parameter[], into: Map<string, Parts>): void {
  for (const p of params) {
    if (!p.Name?.startsWith(prefix)) continue;
    const rel = p.Name.slice(prefix.length).split('/');
    const leaf = rel.pop() as string;
    if (rel.length === 0 || !(LEAVES as readonly string[]).includes(leaf)) continue;
    const member = rel.join('/');
    const parts = into.get(member) ?? {};
    parts[leaf as Leaf] = p;
    into.set(member, parts);
  }
}

/** What discovery leaves for a member's fetch: the parameters read, or the held Material when nothing changed. */
type Found = { parts: Parts } | { material: Material };

function pathSource(config: Config, deps: ProviderDeps, entry: string, loc: AwsLocation): Source & Discovering {
  const base = (config.path as string).replace(/\/+$/, '');
  const prefix = `${base}/`;
  const doing = `discovering certificates of ${entry} under ssm:${base}`;
  /** What the last discovery read, per member; a member's fetch takes its own once. */
  let found = new Map<string, Found>();
  /**
   * Per member, the last Material built and the stamp of the parameters it was built from.
   * The key is inside the Material, in a Secret; raw parameter values live only in `found`,
   * from a discovery to the member's fetch.
   */
  const held = new Map<string, { stamp: string; material: Material }>();
  /** Set when the role may not call DescribeParameters: every discovery walks the path instead. */
  let describeRefused = false;
  const members = new Map<string, Source>();
  const namesFor = (member: string): Names => ({ cert: `${prefix}${member}/cert`, key: `${prefix}${member}/key`, chain: `${prefix}${member}/chain` });

  /** Every parameter with its value: one GetParametersByPath walk. */
  async function walk(client: AwsClient, signal: AbortSignal): Promise<Map<string, Parts>> {
    const { GetParametersByPathCommand } = await sdk.ssm();
    const out = new Map<string, Parts>();
    let token: string | undefined;
    for (let page = 0; page < MAX_PAGES; page++) {
      const res = await awsSend<{ Parameters?: Parameter[]; NextToken?: string }>(
        deps,
        client,
        new GetParametersByPathCommand({ Path: base || '/', Recursive: true, WithDecryption: config.with_decryption, MaxResults: BY_PATH_MAX, ...(token ? { NextToken: token } : {}) }),
        signal,
        {
          doing,
          source: 'ssm',
          operation: 'GetParametersByPath',
          actions: ['ssm:GetParametersByPath', ...(config.with_decryption ? ['kms:Decrypt'] : [])],
          resource: `${base}/*`,
        },
      );
      groupByFolder(prefix, res.Parameters ?? [], out);
      token = res.NextToken;
      if (!token) break;
    }
    return out;
  }

  /**
   * Every parameter's metadata (name, version, date; no value): one DescribeParameters walk.
   * Undefined when the role may not call it (then the caller walks the path).
   */
  async function describe(client: AwsClient, signal: AbortSignal): Promise<Map<string, Parts> | undefined> {
    const { DescribeParametersCommand } = await sdk.ssm();
    const out = new Map<string, Parts>();
    let token: string | undefined;
    for (let page = 0; page < MAX_PAGES; page++) {
      let res: { Parameters?: Parameter[]; NextToken?: string };
      try {
        res = await awsSend(
          deps,
          client,
          new DescribeParametersCommand({ ParameterFilters: [{ Key: 'Path', Option: 'Recursive', Values: [base || '/'] }], MaxResults: DESCRIBE_MAX, ...(token ? { NextToken: token } : {}) }),
          signal,
          { doing, source: 'ssm', operation: 'DescribeParameters', actions: ['ssm:DescribeParameters'], resource: '*' },
        );
      } catch (err) {
        // A role set up for the path walk alone (certd before DescribeParameters) keeps working.
        if (isAccessDenied(err)) {
          describeRefused = true;
          deps.log.warn({ step: 'discover', source: 'ssm', path: base, err: messageOf(err) }, 'DescribeParameters refused: reading the whole path every cycle (grant ssm:DescribeParameters on Resource "*", then reload certd)');
          return undefined;
        }
        throw err;
      }
      groupByFolder(prefix, res.Parameters ?? [], out);
      token = res.NextToken;
      if (!token) break;
    }
    return out;
  }

  /**
   * The members `described` lists: unchanged ones answered with their held Material, changed and
   * new ones read with GetParameters. A member whose read failed is left for its fetch to read
   * directly. Undefined when the walk is the cheaper read.
   */
  async function readChanged(client: AwsClient, described: Map<string, Parts>, signal: AbortSignal): Promise<Map<string, Found> | undefined> {
    const out = new Map<string, Found>();
    const changed: string[] = [];
    let total = 0;
    for (const [member, meta] of described) {
      total += LEAVES.filter((leaf) => meta[leaf] !== undefined).length;
      const last = held.get(member);
      if (last !== undefined && last.stamp === stampOf(meta)) out.set(member, { material: last.material });
      else changed.push(member);
    }
    const leavesOf = (member: string) => LEAVES.filter((leaf) => described.get(member)?.[leaf] !== undefined);
    const names = changed.flatMap((member) => leavesOf(member).map((leaf) => `${prefix}${member}/${leaf}`));
    // GetParameters reads any 10 named parameters a call; a GetParametersByPath page holds at
    // most 10 (fewer when AWS cuts it short). So reading only the changed folders never costs
    // more calls than the walk. When it would cost as many (nearly every folder changed, as
    // after a mass rotation) the walk is made instead: it needs no list of names and reads the
    // path as it is then, folders created since the DescribeParameters walk included.
    const walkInstead = names.length > 0 && Math.ceil(names.length / GET_MAX) >= Math.ceil(total / BY_PATH_MAX);
    deps.log.debug({ step: 'discover', source: 'ssm', path: base, folders: described.size, changed: changed.length, read: walkInstead ? 'GetParametersByPath' : 'GetParameters' }, 'compared parameter versions');
    if (walkInstead) return undefined;
    const failures: string[] = [];
    const values = await readParameters(deps, client, names, config.with_decryption, signal, failures);
    for (const member of changed) {
      const parts: Parts = {};
      let complete = true;
      for (const leaf of leavesOf(member)) {
        const name = `${prefix}${member}/${leaf}`;
        if (!values.has(name)) complete = false;
        parts[leaf] = values.get(name);
      }
      if (complete) out.set(member, { parts });
    }
    if (failures.length > 0) {
      deps.log.warn({ step: 'discover', source: 'ssm', path: base, failed: failures.length, err: failures[0] }, 'reading changed folders failed; those certificates are read one by one');
    }
    return out;
  }

  return {
    async fetch() {
      throw new CertdError('E_INTERNAL', `${entry}: an ssm path entry stands for the certificates found under ${base}; only its members are fetched`);
    },
    async discover(signal) {
      const client = await awsClient(deps, 'ssm', loc);
      const described = held.size > 0 && !describeRefused ? await describe(client, signal) : undefined;
      const read = described === undefined ? undefined : await readChanged(client, described, signal);
      let listing: Map<string, Parts>;
      if (described !== undefined && read !== undefined) {
        listing = described;
        found = read;
      } else {
        listing = await walk(client, signal);
        found = new Map([...listing].map(([member, parts]) => [member, { parts }]));
      }
      // A folder that is gone takes its held Material with it.
      for (const member of held.keys()) if (!listing.has(member)) held.delete(member);
      return [...listing.keys()].sort();
    },
    member(name) {
      let m = members.get(name);
      if (!m) {
        const names = namesFor(name);
        const origin = `ssm:${prefix}${name}`;
        m = {
          async fetch(ref, signal) {
            const answer = found.get(name);
            found.delete(name);
            if (answer !== undefined && 'material' in answer) return answer.material;
            // Not read by the last discovery (or a retry): read this member alone.
            const parts = answer?.parts ?? (await directParts(deps, loc, names, config.with_decryption, signal, `fetching ${ref.name} from ${origin}`));
            // The same parameters as the held Material (a walk, a retry): no parse, no KMS.
            const stamp = stampOf(parts);
            const last = held.get(name);
            if (last !== undefined && last.stamp === stamp) return last.material;
            // The chain is optional in a folder: ask only for what the folder has.
            const own: Names = parts.chain ? names : { cert: names.cert, key: names.key };
            const material = await toMaterial(deps, config, loc, ref.name, own, parts, origin, signal);
            held.set(name, { stamp, material });
            return material;
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
    const loc = awsLocation(config);
    return config.path === undefined ? parametersSource(config, deps, cert.name, loc) : pathSource(config, deps, cert.name, loc);
  },
} satisfies SourceFactory<typeof schema>;
