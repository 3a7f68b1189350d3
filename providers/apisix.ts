/**
 * Target `apisix`: the certificate as one SSL object of the APISIX 3.x Admin API,
 * `PUT /apisix/admin/ssls/{id}` with `{cert, key, snis}` (201 created, 200 replaced). APISIX
 * serves it on the next handshake: no reload (`needsReload: false`).
 *
 * certd owns `cert`, `key` and `snis` of the object (and drops extra `certs`/`keys` pairs);
 * other fields of an existing object (labels, type, status, ssl_protocols, client ...) are kept.
 * After the PUT the object is read back and its certificate and SNIs compared.
 *
 * Rollback, honestly: the Admin API never returns the private key of an object in clear (a
 * single GET leaves `key` out; where a key is returned it is APISIX's at-rest encryption). So
 * stage() can restore the previous object only when
 *   - there was none: rollback DELETEs the object certd created;
 *   - certd itself deployed the object's current certificate earlier in this process: the
 *     material is kept in memory (never on disk) per url and id, and re-PUT;
 *   - the GET answer holds a `key` field (some deployments return the encrypted key): it is
 *     PUT back as it came; APISIX decrypts an encrypted key it is given (ssl.lua validate()).
 * Otherwise (the first deployment after certd starts, over an object someone else wrote)
 * rollback is impossible: stage() logs that, and rollback() fails saying so, leaving the new
 * object in place.
 *
 * Admin API error bodies may echo the request (and with it the key): only `error_msg`,
 * scrubbed and shortened, ever reaches a message.
 */
import { z } from 'zod';
import type { DescribesDeployment, Material, ProviderDeps, Target, TargetFactory } from '../src/contracts.js';
import { parseDuration } from '../src/duration.js';
import { CertdError, messageOf, scrub } from '../src/errors.js';
import type { Secret } from '../src/secret.js';
import { type ApiAnswer, type ApiClient, apiConnectionFields, checkApiConnection, parseApiUrl, sharedClient } from './http-api.js';

const schema = z
  .strictObject({
    type: z.literal('apisix'),
    /** Admin API base: http://127.0.0.1:9180 (plain http to loopback only), or https://... with `ca`. */
    url: z.string().min(1),
    /** Name of the environment variable that holds the admin key (X-API-KEY); the key is never in the config. */
    api_key_env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name'),
    /** The SSL object's id; default: the certificate's name. */
    id: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'APISIX ids are [A-Za-z0-9_.-], at most 64 characters').optional(),
    /** Server names the object is served for; default: the leaf's DNS SANs. */
    snis: z.array(z.string().min(1)).min(1).optional(),
    ...apiConnectionFields,
  })
  .superRefine(checkApiConnection);

type ApisixConfig = z.infer<typeof schema>;

/** What certd put into an object: enough to put it back. */
interface Deployed {
  readonly cert: string;
  readonly key: Secret;
  readonly snis: readonly string[];
}

/**
 * Material certd deployed, per "url id", for the life of the process: survives a config reload,
 * never written anywhere.
 */
const deployedHere = new Map<string, Deployed>();

/** Fields of an SSL object certd sets itself or APISIX computes; the others are kept as found. */
const OWN_FIELDS = new Set(['id', 'cert', 'key', 'certs', 'keys', 'snis', 'sni', 'create_time', 'update_time', 'validity_start', 'validity_end']);

type RollbackPlan =
  | { kind: 'delete' }
  | { kind: 'put'; body: () => Record<string, unknown>; how: string }
  | { kind: 'impossible'; reason: string };

function errorMessageOf(a: ApiAnswer): string {
  const j = a.json as { error_msg?: unknown; message?: unknown } | undefined;
  const msg = typeof j?.error_msg === 'string' ? j.error_msg : typeof j?.message === 'string' ? j.message : '';
  return scrub(msg).slice(0, 300);
}

function kept(value: Record<string, unknown> | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value ?? {})) if (!OWN_FIELDS.has(k)) out[k] = v;
  return out;
}

class ApisixTarget implements Target, DescribesDeployment {
  readonly description: string;
  readonly needsReload = false;
  readonly #c: ApisixConfig;
  readonly #deps: ProviderDeps;
  readonly #certName: string;
  readonly #id: string;
  readonly #api: ApiClient;
  readonly #timeoutMs: number;
  readonly #memoryKey: string;
  #staged: { plan: RollbackPlan; deployed: Deployed } | undefined;

  constructor(c: ApisixConfig, deps: ProviderDeps, certName: string) {
    this.#c = c;
    this.#deps = deps;
    this.#certName = certName;
    this.#id = c.id ?? certName;
    this.#api = sharedClient(deps, 'apisix', parseApiUrl(c.url), {
      ca: c.ca === undefined ? undefined : deps.resolvePath(c.ca),
      clientCert: c.client_cert === undefined ? undefined : deps.resolvePath(c.client_cert),
      clientKey: c.client_key === undefined ? undefined : deps.resolvePath(c.client_key),
    });
    this.#timeoutMs = parseDuration(c.timeout);
    this.#memoryKey = `${c.url.replace(/\/+$/, '')} ${this.#id}`;
    this.description = `apisix:${c.url} ssl=${this.#id}`;
  }

  get #doing(): string {
    return `deploying ${this.#certName} to apisix ${this.#c.url} ssl ${this.#id}`;
  }

  get #path(): string {
    return `/apisix/admin/ssls/${encodeURIComponent(this.#id)}`;
  }

  #apiKey(): string {
    const key = this.#deps.env[this.#c.api_key_env];
    if (!key) {
      throw new CertdError('E_TARGET', `${this.#doing}: the environment variable ${this.#c.api_key_env} (api_key_env) is not set or empty; it must hold the Admin API key`, { permanent: true });
    }
    return key;
  }

  #call(method: string, signal: AbortSignal, body?: unknown): Promise<ApiAnswer> {
    return this.#api.request(method, this.#path, {
      headers: { 'x-api-key': this.#apiKey() },
      timeoutMs: this.#timeoutMs,
      maxAnswerBytes: this.#c.max_answer_bytes,
      signal,
      doing: this.#doing,
      ...(body === undefined ? {} : { body }),
    });
  }

  #explain(a: ApiAnswer, what: string): CertdError {
    if (a.status === 401) {
      return new CertdError('E_TARGET', `${this.#doing}: ${what}: X-API-KEY rejected: check the env var named by api_key_env (${this.#c.api_key_env})`, { permanent: true, details: { status: 401 } });
    }
    const msg = errorMessageOf(a);
    const hint = a.status === 404 && /Unsupported resource type/i.test(msg) ? ' (APISIX 2.x? certd speaks the 3.x Admin API, /apisix/admin/ssls)' : '';
    return new CertdError('E_TARGET', `${this.#doing}: ${what}: ${a.status}${msg ? ` ${msg}` : ''}${hint}`, {
      permanent: a.status === 400 || a.status === 403 || a.status === 404,
      details: { status: a.status },
    });
  }

  /** The stored object's value, or undefined when there is none. */
  async #get(signal: AbortSignal, what: string): Promise<Record<string, unknown> | undefined> {
    const a = await this.#call('GET', signal);
    if (a.status === 404) return undefined;
    if (a.status !== 200) throw this.#explain(a, what);
    const value = (a.json as { value?: unknown } | undefined)?.value;
    if (typeof value !== 'object' || value === null) throw new CertdError('E_TARGET', `${this.#doing}: ${what}: the answer holds no object value`);
    return value as Record<string, unknown>;
  }

  #plan(previous: Record<string, unknown> | undefined): RollbackPlan {
    if (previous === undefined) return { kind: 'delete' };
    const mine = deployedHere.get(this.#memoryKey);
    if (mine && previous['cert'] === mine.cert) {
      const extra = kept(previous);
      return { kind: 'put', how: 'the material certd deployed earlier', body: () => ({ ...extra, cert: mine.cert, key: mine.key.revealString(), snis: [...mine.snis] }) };
    }
    if (typeof previous['key'] === 'string' && typeof previous['cert'] === 'string') {
      const body: Record<string, unknown> = { ...kept(previous), cert: previous['cert'], key: previous['key'], snis: previous['snis'] };
      if (Array.isArray(previous['certs']) && Array.isArray(previous['keys'])) Object.assign(body, { certs: previous['certs'], keys: previous['keys'] });
      return { kind: 'put', how: 'the object as read (APISIX decrypts the key it returned)', body: () => body };
    }
    return {
      kind: 'impossible',
      reason: 'the Admin API does not return the private key of the existing object and certd did not deploy it in this process',
    };
  }

  async stage(material: Material, signal: AbortSignal): Promise<void> {
    if (this.#staged) throw new CertdError('E_INTERNAL', `${this.#doing}: a deployment is already staged`);
    if (material.key.kind !== 'pem') {
      throw new CertdError('E_TARGET', `${this.#doing}: the key is held in an HSM (${material.key.uri}); the Admin API needs the key PEM`, { permanent: true });
    }
    const snis = [...new Set(this.#c.snis ?? material.dnsNames)];
    if (snis.length === 0) {
      throw new CertdError('E_TARGET', `${this.#doing}: the certificate has no DNS names; set "snis"`, { permanent: true });
    }
    const previous = await this.#get(signal, 'reading the existing object');
    const plan = this.#plan(previous);
    if (plan.kind === 'impossible') {
      this.#deps.log.warn({ cert: this.#certName, target: this.description }, `replacing SSL object ${this.#id} without a way back: ${plan.reason}`);
    }
    const deployed: Deployed = { cert: material.fullchainPem, key: material.key.pem, snis };
    const a = await this.#call('PUT', signal, { ...kept(previous), cert: deployed.cert, key: deployed.key.revealString(), snis });
    if (a.status !== 200 && a.status !== 201) throw this.#explain(a, 'PUT');
    try {
      const back = await this.#get(signal, 'reading the object back');
      const backSnis = back?.['snis'];
      if (back?.['cert'] !== deployed.cert || !Array.isArray(backSnis) || backSnis.join('\n') !== snis.join('\n')) {
        throw new CertdError('E_TARGET', `${this.#doing}: the object reads back with a different certificate or SNIs than were written (another writer?)`);
      }
    } catch (err) {
      const undo = await this.#undo(plan).then(() => 'the previous object was restored', (e: unknown) => messageOf(e));
      throw new CertdError('E_TARGET', `${messageOf(err)}; ${undo}`, { cause: err });
    }
    this.#staged = { plan, deployed };
  }

  async #undo(plan: RollbackPlan): Promise<void> {
    const signal = new AbortController().signal;
    if (plan.kind === 'impossible') {
      throw new CertdError('E_TARGET', `rolling back ${this.#certName} in apisix ${this.#c.url} ssl ${this.#id}: impossible: ${plan.reason}; the new certificate stays in place (restore the object by hand or rotate again)`);
    }
    if (plan.kind === 'delete') {
      const a = await this.#call('DELETE', signal);
      if (a.status !== 200 && a.status !== 404) throw this.#explain(a, 'rolling back (DELETE of the object certd created)');
      return;
    }
    const a = await this.#call('PUT', signal, plan.body());
    if (a.status !== 200 && a.status !== 201) throw this.#explain(a, `rolling back (PUT of ${plan.how})`);
  }

  async commit(): Promise<void> {
    const s = this.#staged;
    if (!s) return;
    this.#staged = undefined;
    deployedHere.set(this.#memoryKey, s.deployed);
  }

  async rollback(): Promise<void> {
    const s = this.#staged;
    if (!s) return;
    this.#staged = undefined;
    await this.#undo(s.plan);
  }

  async deployment(): Promise<Record<string, unknown>> {
    let value: Record<string, unknown> | undefined;
    let error: string | undefined;
    try {
      value = await this.#get(AbortSignal.timeout(this.#timeoutMs), 'reading the object');
    } catch (err) {
      error = messageOf(err);
    }
    return {
      type: 'apisix',
      url: this.#c.url,
      id: this.#id,
      snis: Array.isArray(value?.['snis']) ? value['snis'] : undefined,
      present: error === undefined ? value !== undefined : undefined,
      ...(error === undefined ? {} : { error }),
      rollbackMaterialInMemory: deployedHere.has(this.#memoryKey),
    };
  }
}

export const apisixTarget = {
  type: 'apisix',
  schema,
  create(config, deps, cert): Target & DescribesDeployment {
    return new ApisixTarget(config, deps, cert.name);
  },
} satisfies TargetFactory<typeof schema>;
