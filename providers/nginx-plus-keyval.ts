/**
 * Target `nginx-plus-keyval`: the certificate lives in an NGINX Plus key-value zone, one key per
 * server name, and nginx serves it with
 *   keyval $ssl_server_name $cert_pem zone=certs;
 *   ssl_certificate data:$cert_pem; ssl_certificate_key data:$cert_pem;
 * so a write is live on the next handshake: no reload (`needsReload: false`).
 *
 * Each value is the private key PEM followed by the leaf and chain PEM (what `data:` takes for
 * both directives). The API's rules (the NGINX Plus API reference) shape every step:
 *   - the newest API version is discovered from GET {url}/ once per url and process;
 *   - upsert is POST (201), and on 409 KeyvalKeyExists a PATCH (204): POST never overwrites and
 *     PATCH never creates;
 *   - a key is deleted with PATCH {"key": null}; DELETE empties the WHOLE zone and is never sent.
 * stage() reads every key's previous value first (404 = the key is new), writes each key, reads
 * it back and compares; if any key fails, every key of the certificate is restored before stage
 * throws. rollback() restores the same way: PATCH the previous value, or PATCH null for keys
 * certd created.
 *
 * Which keys certd wrote, per zone and certificate, is kept in `state_dir/nginx-plus-keyval.json`
 * (names only, never values), so that `prune: true` can delete keys of certificates that are no
 * longer configured for the zone (and keys a certificate no longer uses) when a certificate of
 * the zone is next deployed.
 *
 * A zone declared with `state=` is persisted by nginx to that file: the private keys land on
 * disk. With `nginx_binary` set, certd reads `nginx -T` and warns when the zone has `state=` on
 * a file system that is not tmpfs. A zone without `state=` is empty after an nginx restart,
 * while certd's record says the certificate is deployed: it is written again at the next change.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { ChecksDeployment, DescribesDeployment, Material, ProviderDeps, Target, TargetFactory } from '../src/contracts.js';
import { leafFingerprintOfPem } from '../src/material.js';
import { parseDuration } from '../src/duration.js';
import { CertdError, messageOf, scrub } from '../src/errors.js';
import { isMemoryBacked, writeFileAtomic } from '../src/fsutil.js';
import { pathString } from '../src/schema.js';
import { type ApiAnswer, type ApiClient, apiConnectionFields, checkApiConnection, parseApiUrl, sharedClient } from './http-api.js';

const schema = z
  .strictObject({
    type: z.literal('nginx-plus-keyval'),
    /**
     * The api location: `http://127.0.0.1:8080/api` (plain http to loopback only),
     * `https://nginx.internal:8443/api` (with `ca`, optional `client_cert`/`client_key`), or
     * `unix:/run/nginx/api.sock:/api` (a unix socket, then the location's path).
     */
    url: z.string().min(1),
    /** The keyval_zone name. */
    zone: z.string().regex(/^[^\s/?#;{}]+$/, 'a keyval_zone name (no spaces, slashes or ;{}?#)'),
    /**
     * Keys to write (the names $ssl_server_name takes); default: the leaf's DNS SANs except
     * wildcards, which a `type=string` zone never matches (list the names they stand for here).
     */
    keys: z.array(z.string().min(1)).min(1).optional(),
    /** A zone of the stream module (/stream/keyvals/...) instead of http. */
    stream: z.boolean().default(false),
    /** Delete (PATCH null) keys certd wrote earlier for certificates no longer configured. */
    prune: z.boolean().default(false),
    /** nginx binary (or argv prefix, e.g. [/usr/sbin/nginx, -c, /etc/nginx/nginx.conf]) for the `nginx -T` check of state=. */
    nginx_binary: z.union([pathString, z.array(z.string().min(1)).min(1)]).optional(),
    ...apiConnectionFields,
  })
  .superRefine(checkApiConnection);

type KeyvalConfig = z.infer<typeof schema>;

const RECORD_FILE = 'nginx-plus-keyval.json';

/** zone id ("<url> <http|stream> <zone>") -> certificate name -> keys certd wrote. Names only. */
interface RecordFile {
  version: 1;
  zones: Record<string, Record<string, string[]>>;
}

async function readRecord(path: string): Promise<RecordFile> {
  try {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as Partial<RecordFile>;
    if (parsed && typeof parsed.zones === 'object' && parsed.zones !== null) return { version: 1, zones: parsed.zones };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new CertdError('E_TARGET', `reading ${path}: ${messageOf(err)}`, { cause: err });
    }
  }
  return { version: 1, zones: {} };
}

/** Sets the keys recorded for `cert` (none: the entry goes); true when that changed the record. */
function setKeys(zone: Record<string, string[]>, cert: string, keys: readonly string[]): boolean {
  const next = [...new Set(keys)];
  const before = zone[cert];
  if (next.length === 0) {
    delete zone[cert];
    return before !== undefined;
  }
  zone[cert] = next;
  return before === undefined || before.length !== next.length || before.some((k, i) => k !== next[i]);
}

/**
 * The record file, kept in memory by the runtime that holds the state directory's lock (its only
 * writer) and written when an update changed it. Updates run one at a time; those queued while
 * one runs (a cycle stages many certificates at once) are applied together and share one write,
 * and each caller resumes only once the file says what it asked. An update function must not
 * throw after it changed the record.
 */
class RecordBook {
  readonly #path: string;
  #rec: Promise<RecordFile> | undefined;
  #queue: { fn: (rec: RecordFile) => Promise<boolean>; done: (err?: unknown) => void }[] = [];
  #flushing = false;

  constructor(path: string) {
    this.#path = path;
  }

  read(): Promise<RecordFile> {
    const rec = (this.#rec ??= readRecord(this.#path));
    rec.catch(() => {
      if (this.#rec === rec) this.#rec = undefined;
    });
    return rec;
  }

  update(fn: (rec: RecordFile) => Promise<boolean>): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ fn, done: (err) => (err === undefined ? resolve() : reject(err)) });
      if (!this.#flushing) void this.#flush();
    });
  }

  async #flush(): Promise<void> {
    this.#flushing = true;
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue.splice(0);
        const applied: typeof batch = [];
        let changed = false;
        try {
          const rec = await this.read();
          for (const u of batch) {
            try {
              changed = (await u.fn(rec)) || changed;
              applied.push(u);
            } catch (err) {
              u.done(err);
            }
          }
          if (changed) await writeFileAtomic(this.#path, `${JSON.stringify(rec, null, 2)}\n`, 0o600);
          for (const u of applied) u.done();
        } catch (err) {
          // The file could not be read or written: what memory holds is no longer what it says.
          this.#rec = undefined;
          for (const u of batch) u.done(err);
        }
      }
    } finally {
      this.#flushing = false;
    }
  }
}

/** What `nginx -T` says about a zone's declaration. */
export interface ZoneDeclaration {
  declared: boolean;
  /** The state= file when the zone is persisted to disk. */
  state?: string | undefined;
}

/** Finds `keyval_zone zone=NAME:SIZE ... state=FILE ...;` for `zone` in an `nginx -T` dump. */
export function keyvalZoneDeclaration(dump: string, zone: string): ZoneDeclaration {
  const text = dump.split('\n').map((l) => l.replace(/#.*$/, '')).join('\n');
  const out: ZoneDeclaration = { declared: false };
  for (const m of text.matchAll(/\bkeyval_zone\s+([^;]*);/g)) {
    const params = (m[1] ?? '').trim().split(/\s+/).map((p) => p.replace(/^["']|["']$/g, ''));
    const name = params.find((p) => p.startsWith('zone='))?.slice(5).split(':')[0];
    if (name !== zone) continue;
    out.declared = true;
    const state = params.find((p) => p.startsWith('state='));
    if (state) out.state = state.slice(6);
  }
  return out;
}

function runNginxDump(argv: readonly string[]): Promise<string> {
  const [file, ...args] = argv;
  return new Promise((resolve, reject) => {
    execFile(file!, [...args, '-T'], { timeout: 15_000, maxBuffer: 32 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${argv.join(' ')} -T: ${scrub(String(stderr || err.message).trim()).split('\n').slice(-2).join(' | ')}`));
      else resolve(String(stdout));
    });
  });
}

interface ApiError {
  code: string;
  text: string;
}

function errorOf(a: ApiAnswer): ApiError {
  const e = (a.json as { error?: { code?: unknown; text?: unknown } } | undefined)?.error;
  return {
    code: typeof e?.code === 'string' ? e.code.slice(0, 64) : '',
    text: typeof e?.text === 'string' ? scrub(e.text).slice(0, 200) : '',
  };
}

/** Size nginx would need: the next power of two in KiB at or above the body. */
function bufferSizeFor(bytes: number): string {
  let k = 1;
  while (k * 1024 < bytes) k *= 2;
  return `${k}k`;
}

interface Staged {
  readonly keys: readonly string[];
  /** Previous value per key; null when the key did not exist (certd created it). */
  readonly previous: ReadonlyMap<string, string | null>;
  /** The keys recorded for this certificate before this stage. */
  readonly recordedBefore: readonly string[];
}

class KeyvalTarget implements Target, DescribesDeployment, ChecksDeployment {
  readonly description: string;
  readonly needsReload = false;
  readonly #c: KeyvalConfig;
  readonly #deps: ProviderDeps;
  readonly #certName: string;
  readonly #api: ApiClient;
  readonly #section: 'http' | 'stream';
  readonly #zoneId: string;
  readonly #timeoutMs: number;
  readonly #recordPath: string;
  #staged: Staged | undefined;

  constructor(c: KeyvalConfig, deps: ProviderDeps, certName: string) {
    this.#c = c;
    this.#deps = deps;
    this.#certName = certName;
    const endpoint = parseApiUrl(c.url);
    this.#api = sharedClient(deps, 'nginx-plus', endpoint, {
      ca: c.ca === undefined ? undefined : deps.resolvePath(c.ca),
      clientCert: c.client_cert === undefined ? undefined : deps.resolvePath(c.client_cert),
      clientKey: c.client_key === undefined ? undefined : deps.resolvePath(c.client_key),
    });
    this.#section = c.stream ? 'stream' : 'http';
    this.#zoneId = `${c.url} ${this.#section} ${c.zone}`;
    this.#timeoutMs = parseDuration(c.timeout);
    this.#recordPath = join(deps.stateDir, RECORD_FILE);
    this.description = `nginx-plus-keyval:${c.url} zone=${c.zone}${c.stream ? ' (stream)' : ''}`;
    // Every certificate configured for this zone, so prune can tell which recorded ones are gone.
    const registry = deps.shared('nginx-plus-keyval:registry', () => new Map<string, Set<string>>());
    const names = registry.get(this.#zoneId) ?? new Set<string>();
    names.add(certName);
    registry.set(this.#zoneId, names);
  }

  get #doing(): string {
    return `deploying ${this.#certName} to nginx-plus-keyval ${this.#c.url} zone ${this.#c.zone}`;
  }

  #call(method: string, path: string, signal: AbortSignal, doing: string, body?: unknown): Promise<ApiAnswer> {
    return this.#api.request(method, path, { timeoutMs: this.#timeoutMs, maxAnswerBytes: this.#c.max_answer_bytes, signal, doing, ...(body === undefined ? {} : { body }) });
  }

  /** The newest API version the server offers, cached per url for the process. */
  #version(signal: AbortSignal): Promise<number> {
    const cache = this.#deps.shared('nginx-plus-keyval:versions', () => new Map<string, Promise<number>>());
    let v = cache.get(this.#c.url);
    if (!v) {
      v = (async () => {
        const doing = `discovering the NGINX Plus API version at ${this.#c.url}`;
        const a = await this.#call('GET', '/', signal, doing);
        const list = a.json;
        if (a.status !== 200 || !Array.isArray(list) || !list.every((n) => Number.isInteger(n)) || list.length === 0) {
          throw new CertdError('E_TARGET', `${doing}: GET ${this.#c.url}/ answered ${a.status} without a version list: is url the api location (the path of "api write=on;")?`, { permanent: a.status === 404 });
        }
        return Math.max(...(list as number[]));
      })();
      cache.set(this.#c.url, v);
      v.catch(() => cache.delete(this.#c.url));
    }
    return v;
  }

  #forgetVersion(): void {
    this.#deps.shared('nginx-plus-keyval:versions', () => new Map<string, Promise<number>>()).delete(this.#c.url);
  }

  async #zonePath(signal: AbortSignal): Promise<string> {
    const v = await this.#version(signal);
    return `/${v}/${this.#section}/keyvals/${encodeURIComponent(this.#c.zone)}`;
  }

  /** A CertdError for an unexpected answer, with the fix for the failures operators meet. */
  #explain(a: ApiAnswer, what: string, bodyBytes?: number): CertdError {
    const e = errorOf(a);
    const zone = this.#c.zone;
    let detail: string;
    let permanent = false;
    if (a.status === 405 && e.code === 'MethodDisabled') {
      detail = `the API is read-only (405 MethodDisabled): add "api write=on;" to the location that serves ${this.#c.url}`;
      permanent = true;
    } else if (a.status === 404 && e.code === 'KeyvalNotFound') {
      detail = `zone "${zone}" does not exist (404 KeyvalNotFound): declare "keyval_zone zone=${zone}:1m;" in the ${this.#section} block of nginx.conf (and a "keyval" that reads it)`;
      permanent = true;
    } else if (a.status === 413) {
      const size = bodyBytes ?? 0;
      detail = `the API refused the ${size}-byte request body (413): raise client_body_buffer_size in the api location to at least ${bufferSizeFor(size)} ("client_body_buffer_size ${bufferSizeFor(size * 2)};" leaves room for a longer chain)`;
      permanent = true;
    } else if (a.status === 404 && e.code === 'UnknownVersion') {
      this.#forgetVersion();
      detail = '404 UnknownVersion: the API version changed (nginx upgraded or replaced?); it is discovered again on the next attempt';
    } else {
      detail = `${a.status}${e.code ? ` ${e.code}` : ''}${e.text ? `: ${e.text}` : ''}`;
      permanent = a.status === 401 || a.status === 403;
    }
    return new CertdError('E_TARGET', `${this.#doing}: ${what}: ${detail}`, { permanent, details: { status: a.status, apiCode: e.code } });
  }

  /** The value of `key`, or null when the zone does not hold it. */
  async #read(zonePath: string, key: string, signal: AbortSignal): Promise<string | null> {
    const a = await this.#call('GET', `${zonePath}?key=${encodeURIComponent(key)}`, signal, this.#doing);
    if (a.status === 404 && errorOf(a).code === 'KeyvalKeyNotFound') return null;
    if (a.status !== 200) throw this.#explain(a, `reading key ${key}`);
    const value = (a.json as Record<string, unknown> | undefined)?.[key];
    if (typeof value === 'string') return value;
    if (value && typeof value === 'object' && typeof (value as { value?: unknown }).value === 'string') return (value as { value: string }).value;
    throw new CertdError('E_TARGET', `${this.#doing}: reading key ${key}: the answer holds no string value for it`);
  }

  /** POST, and on 409 PATCH; a PATCH that finds the key gone (404) POSTs once more. */
  async #upsert(zonePath: string, key: string, value: string, signal: AbortSignal): Promise<void> {
    const body = { [key]: value };
    const bytes = Buffer.byteLength(JSON.stringify(body));
    for (let attempt = 0; attempt < 2; attempt++) {
      const post = await this.#call('POST', zonePath, signal, this.#doing, body);
      if (post.status === 201) return;
      if (post.status !== 409) throw this.#explain(post, `writing key ${key} (POST)`, bytes);
      const patch = await this.#call('PATCH', zonePath, signal, this.#doing, body);
      if (patch.status === 204) return;
      if (!(patch.status === 404 && errorOf(patch).code === 'KeyvalKeyNotFound')) throw this.#explain(patch, `writing key ${key} (PATCH)`, bytes);
    }
    throw new CertdError('E_TARGET', `${this.#doing}: writing key ${key}: another writer keeps adding and removing it`);
  }

  /** Puts `previous` back for each key; returns the keys that could not be restored. */
  async #restore(zonePath: string, keys: readonly string[], previous: ReadonlyMap<string, string | null>): Promise<string[]> {
    // The cycle's signal may be the reason we are here; restoring must not be cut short by it.
    const signal = new AbortController().signal;
    const failed: string[] = [];
    for (const key of keys) {
      const prev = previous.get(key) ?? null;
      try {
        if (prev === null) {
          const a = await this.#call('PATCH', zonePath, signal, this.#doing, { [key]: null });
          if (a.status !== 204 && !(a.status === 404 && errorOf(a).code === 'KeyvalKeyNotFound')) throw this.#explain(a, `removing key ${key}`);
        } else {
          await this.#upsert(zonePath, key, prev, signal);
        }
      } catch (err) {
        failed.push(key);
        this.#deps.log.error({ cert: this.#certName, target: this.description, key, err: messageOf(err) }, 'restoring a keyval key failed');
      }
    }
    return failed;
  }

  /** Warns once per process when `nginx -T` shows the zone persisted with state=. */
  async #checkStateFile(): Promise<ZoneDeclaration | undefined> {
    const bin = this.#c.nginx_binary;
    if (bin === undefined) return undefined;
    const argv = typeof bin === 'string' ? [bin] : bin;
    const dumps = this.#deps.shared('nginx-plus-keyval:nginx-T', () => new Map<string, Promise<string | null>>());
    const id = JSON.stringify(argv);
    let dump = dumps.get(id);
    const first = dump === undefined;
    if (!dump) {
      dump = runNginxDump(argv).catch((err: unknown) => {
        this.#deps.log.warn({ cert: this.#certName, target: this.description, err: messageOf(err) }, 'cannot check whether the keyval zone is persisted to disk (nginx -T failed)');
        return null;
      });
      dumps.set(id, dump);
    }
    const text = await dump;
    if (text === null) return undefined;
    const decl = keyvalZoneDeclaration(text, this.#c.zone);
    const warned = this.#deps.shared('nginx-plus-keyval:state-warned', () => new Set<string>());
    if (decl.state !== undefined && (first || !warned.has(this.#zoneId))) {
      warned.add(this.#zoneId);
      const fs = await isMemoryBacked(decl.state).catch(() => undefined);
      if (fs?.memory) {
        this.#deps.log.info({ cert: this.#certName, target: this.description, zone: this.#c.zone, stateFile: decl.state }, `keyval zone "${this.#c.zone}" is persisted to ${decl.state}, on tmpfs`);
      } else {
        this.#deps.log.warn(
          { cert: this.#certName, target: this.description, zone: this.#c.zone, stateFile: decl.state },
          `keyval zone "${this.#c.zone}" is declared with state=${decl.state}: nginx writes every value of the zone, private keys included, to that file on disk. Remove state= from the keyval_zone, or point it at tmpfs (e.g. state=/run/nginx/${this.#c.zone}.keyval)`,
        );
      }
    }
    return decl;
  }

  #book(): RecordBook {
    return this.#deps.shared(`nginx-plus-keyval:records:${this.#recordPath}`, () => new RecordBook(this.#recordPath));
  }

  /** Changes this zone's part of the record; `fn` returns whether it changed anything. */
  async #updateRecord(fn: (zone: Record<string, string[]>) => boolean | Promise<boolean>): Promise<void> {
    await this.#book().update(async (rec) => {
      const zone = (rec.zones[this.#zoneId] ??= {});
      const changed = await fn(zone);
      if (Object.keys(zone).length === 0) delete rec.zones[this.#zoneId];
      return changed;
    });
  }

  #snapshots(): Map<string, { at: number; zone: Promise<Record<string, unknown>> }> {
    return this.#deps.shared('nginx-plus-keyval:snapshots', () => new Map<string, { at: number; zone: Promise<Record<string, unknown>> }>());
  }

  async stage(material: Material, signal: AbortSignal): Promise<void> {
    // What this write changes must not be judged by a snapshot taken before it.
    this.#snapshots().delete(this.#zoneId);
    if (this.#staged) throw new CertdError('E_INTERNAL', `${this.#doing}: a deployment is already staged`);
    if (material.key.kind !== 'pem') {
      throw new CertdError('E_TARGET', `${this.#doing}: the key is held in an HSM (${material.key.uri}); a key-value zone needs the key PEM. Use a tmpfs target with an engine key instead`, { permanent: true });
    }
    const keys = [...new Set(this.#c.keys ?? material.dnsNames.filter((n) => !n.startsWith('*.')))];
    if (keys.length === 0) {
      throw new CertdError('E_TARGET', `${this.#doing}: the certificate has no DNS names that can be keys (wildcards match no $ssl_server_name in a string zone); set "keys" to the server names it is for`, { permanent: true });
    }
    await this.#checkStateFile();
    const keyPem = material.key.pem.revealString();
    const value = `${keyPem}${keyPem.endsWith('\n') ? '' : '\n'}${material.fullchainPem}`;

    const zonePath = await this.#zonePath(signal);
    const previous = new Map<string, string | null>();
    for (const key of keys) previous.set(key, await this.#read(zonePath, key, signal));

    let recordedBefore: string[] = [];
    await this.#updateRecord((zone) => {
      recordedBefore = zone[this.#certName] ?? [];
      // Recorded before writing, so a crash between write and commit cannot orphan a key.
      return setKeys(zone, this.#certName, [...recordedBefore, ...keys]);
    });

    const touched: string[] = [];
    try {
      for (const key of keys) {
        touched.push(key);
        try {
          await this.#upsert(zonePath, key, value, signal);
        } catch (err) {
          // A 4xx answer is a refusal that changed nothing; a 5xx or a lost connection may have.
          const status = err instanceof CertdError ? err.details['status'] : undefined;
          if (typeof status === 'number' && status >= 400 && status < 500) touched.pop();
          throw err;
        }
        const back = await this.#read(zonePath, key, signal);
        if (back !== value) {
          throw new CertdError('E_TARGET', `${this.#doing}: key ${key} reads back a different value than was written (another writer in this zone?)`);
        }
      }
    } catch (err) {
      const failed = await this.#restore(zonePath, touched, previous);
      await this.#updateRecord((zone) => setKeys(zone, this.#certName, recordedBefore)).catch(() => undefined);
      const restored = touched.length === 0
        ? 'nothing was changed in the zone'
        : failed.length === 0
        ? `every key of the certificate was restored (${touched.join(', ')})`
        : `restoring failed for ${failed.join(', ')}: the zone may hold a mix of old and new values`;
      throw new CertdError('E_TARGET', `${messageOf(err)}; ${restored}`, { cause: err, permanent: err instanceof CertdError && err.permanent });
    }
    this.#staged = { keys, previous, recordedBefore };
  }

  async commit(signal: AbortSignal): Promise<void> {
    const s = this.#staged;
    if (!s) return;
    this.#staged = undefined;
    await this.#updateRecord(async (zone) => {
      const current = new Set(s.keys);
      if (!this.#c.prune) return setKeys(zone, this.#certName, [...s.recordedBefore, ...s.keys]);
      // Asked before anything changes: the record must not drop keys that were not pruned.
      const zonePath = await this.#zonePath(signal);
      const configured = this.#deps.shared('nginx-plus-keyval:registry', () => new Map<string, Set<string>>()).get(this.#zoneId) ?? new Set<string>();
      // A key another configured certificate wrote is that certificate's now, whoever had it first.
      const claimed = new Set(current);
      for (const [name, keys] of Object.entries(zone)) if (name !== this.#certName && configured.has(name)) keys.forEach((k) => claimed.add(k));
      const stale: { cert: string; key: string }[] = s.recordedBefore.filter((k) => !claimed.has(k)).map((key) => ({ cert: this.#certName, key }));
      for (const [name, keys] of Object.entries(zone)) {
        if (configured.has(name)) continue;
        for (const key of keys) if (!claimed.has(key)) stale.push({ cert: name, key });
        zone[name] = keys.filter((k) => !claimed.has(k));
      }
      const pruned: string[] = [];
      const kept = new Map<string, string[]>();
      for (const { cert, key } of stale) {
        const a = await this.#call('PATCH', zonePath, signal, `pruning key ${key} of ${cert}`, { [key]: null }).catch((err: unknown) => err as Error);
        if (!(a instanceof Error) && (a.status === 204 || (a.status === 404 && errorOf(a).code === 'KeyvalKeyNotFound'))) {
          pruned.push(key);
        } else {
          kept.set(cert, [...(kept.get(cert) ?? []), key]);
          const why = a instanceof Error ? messageOf(a) : this.#explain(a, `pruning key ${key}`).message;
          this.#deps.log.warn({ cert: this.#certName, target: this.description, key, err: why }, 'pruning a keyval key failed; retried on the next deployment');
        }
      }
      for (const [name] of Object.entries(zone)) if (!configured.has(name)) zone[name] = kept.get(name) ?? [];
      zone[this.#certName] = [...s.keys, ...(kept.get(this.#certName) ?? [])];
      for (const [name, keys] of Object.entries(zone)) if (keys.length === 0) delete zone[name];
      if (pruned.length > 0) {
        this.#deps.log.info({ cert: this.#certName, target: this.description, keys: pruned }, 'pruned keys certd no longer deploys');
      }
      return true;
    });
  }

  async rollback(): Promise<void> {
    const s = this.#staged;
    if (!s) return;
    this.#staged = undefined;
    this.#snapshots().delete(this.#zoneId);
    const zonePath = await this.#zonePath(new AbortController().signal);
    const failed = await this.#restore(zonePath, s.keys, s.previous);
    await this.#updateRecord((zone) => setKeys(zone, this.#certName, s.recordedBefore));
    if (failed.length > 0) {
      throw new CertdError('E_TARGET', `rolling back ${this.#certName} in nginx-plus-keyval ${this.#c.url} zone ${this.#c.zone}: restoring failed for ${failed.join(', ')}`);
    }
  }

  /**
   * Whether every key of this certificate still holds its deployed leaf (an NGINX Plus restart
   * empties a zone without state=). One GET of the whole zone serves every certificate of the
   * zone within a second, so an unchanged cycle costs one request per zone, not per key.
   */
  async holds(fingerprint: string, signal: AbortSignal): Promise<boolean> {
    const rec = await this.#book().read().catch(() => undefined);
    const keys = this.#c.keys ?? rec?.zones[this.#zoneId]?.[this.#certName] ?? [];
    if (keys.length === 0) return false;
    const snapshots = this.#snapshots();
    let snap = snapshots.get(this.#zoneId);
    if (!snap || Date.now() - snap.at > 1000) {
      const zone = (async () => {
        const a = await this.#call('GET', await this.#zonePath(signal), signal, this.#doing);
        if (a.status !== 200) throw this.#explain(a, 'reading the zone');
        return (a.json ?? {}) as Record<string, unknown>;
      })();
      snap = { at: Date.now(), zone };
      snapshots.set(this.#zoneId, snap);
      zone.catch(() => snapshots.delete(this.#zoneId));
    }
    const zone = await snap.zone;
    return keys.every((k) => {
      const v = zone[k];
      const text = typeof v === 'string' ? v : typeof (v as { value?: unknown } | undefined)?.value === 'string' ? (v as { value: string }).value : '';
      return leafFingerprintOfPem(text) === fingerprint;
    });
  }

  async deployment(): Promise<Record<string, unknown>> {
    const rec = await readRecord(this.#recordPath).catch(() => undefined);
    const signal = AbortSignal.timeout(this.#timeoutMs);
    const apiVersion = await this.#version(signal).catch(() => undefined);
    const decl = await this.#checkStateFile().catch(() => undefined);
    return {
      type: 'nginx-plus-keyval',
      url: this.#c.url,
      section: this.#section,
      zone: this.#c.zone,
      keys: rec?.zones[this.#zoneId]?.[this.#certName] ?? [],
      apiVersion,
      ...(decl === undefined ? {} : { zoneDeclared: decl.declared, persistedTo: decl.state ?? null }),
    };
  }
}

export const nginxPlusKeyvalTarget = {
  type: 'nginx-plus-keyval',
  schema,
  create(config, deps, cert): Target & DescribesDeployment {
    return new KeyvalTarget(config, deps, cert.name);
  },
} satisfies TargetFactory<typeof schema>;
