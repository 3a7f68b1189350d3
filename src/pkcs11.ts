/**
 * PKCS#11 tokens (an HSM such as Fortanix DSM; SoftHSM2 in tests) as certd uses them: read
 * certificates, find a private key, read the token's public key, sign.
 *
 * One `Pkcs11Library` per module path (kept in `deps.shared`) holds the loaded module and one
 * logged-in session per token, reused across cycles. A session that the token dropped (reset,
 * removed, logged out) is reopened and logged in again once per operation. A wrong PIN is never
 * tried twice: HSMs lock a token after a few wrong PINs, so the hash of a refused PIN is kept
 * and the same PIN is refused here, without calling C_Login, until the configuration changes.
 *
 * pkcs11js is a native addon: it is loaded on first use, never by `certd --version`.
 */
import { createHash, createHmac, createPublicKey, randomBytes, verify as verifySignature, X509Certificate, type KeyObject } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { AsnConvert } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier, SubjectPublicKeyInfo } from '@peculiar/asn1-x509';
import type { Handle, PKCS11 } from 'pkcs11js';
import { z } from 'zod';
import type { Closable, ProviderDeps } from './contracts.js';
import { CertdError, messageOf } from './errors.js';
import type { Logger } from './log.js';
import { pathString } from './schema.js';
import { Secret } from './secret.js';

type Pkcs11Js = typeof import('pkcs11js');

let pkcs11jsModule: Pkcs11Js | undefined;

function pkcs11js(): Pkcs11Js {
  if (!pkcs11jsModule) {
    try {
      pkcs11jsModule = createRequire(import.meta.url)('pkcs11js') as Pkcs11Js;
    } catch (err) {
      throw new CertdError('E_SOURCE', `loading pkcs11js (the PKCS#11 binding): ${messageOf(err)}; reinstall certd's dependencies`, { cause: err, permanent: true });
    }
  }
  return pkcs11jsModule;
}

// ---------------------------------------------------------------------------------------------
// Configuration shared by the pkcs11 and pkcs11-ca sources

/** Keys every PKCS#11 source has: where the token is and where its PIN comes from. */
export const tokenFields = {
  module: pathString,
  token_label: z.string().min(1).max(32).optional(),
  token_serial: z.string().min(1).max(16).optional(),
  /** Name of the environment variable holding the user PIN. */
  pin_env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an environment variable name').optional(),
  /** File holding the user PIN (one line; mode 0600 or 0640). */
  pin_file: pathString.optional(),
};

interface TokenFieldValues {
  module: string;
  token_label?: string | undefined;
  token_serial?: string | undefined;
  pin_env?: string | undefined;
  pin_file?: string | undefined;
}

/** The checks of `tokenFields` that span keys, as zod refinements. */
export const tokenRefinements: readonly [(c: TokenFieldValues) => boolean, string][] = [
  [(c) => c.token_label !== undefined || c.token_serial !== undefined, 'give token_label or token_serial'],
  [(c) => (c.pin_env === undefined) !== (c.pin_file === undefined), 'give exactly one of pin_env and pin_file (a PIN is never written in the config)'],
];

/** Which token: by label, serial, or both (all given must match). */
export interface TokenSelector {
  readonly label?: string | undefined;
  readonly serial?: string | undefined;
}

/** Where the PIN is read from at login: an environment variable or a file. */
export type PinSource = { readonly env: string } | { readonly file: string };

export interface TokenConfig {
  readonly module: string;
  readonly selector: TokenSelector;
  readonly pin: PinSource;
}

/** Resolves the token keys of a source's config (paths against the config file's folder). */
export function tokenConfig(c: TokenFieldValues, deps: Pick<ProviderDeps, 'resolvePath'>): TokenConfig {
  return {
    module: deps.resolvePath(c.module),
    selector: { label: c.token_label, serial: c.token_serial },
    pin: c.pin_file !== undefined ? { file: deps.resolvePath(c.pin_file) } : { env: c.pin_env ?? '' },
  };
}

/** The token of `config`, with its session shared by every source of this runtime. */
export function tokenFor(config: TokenConfig, deps: Pick<ProviderDeps, 'shared' | 'log'>): Pkcs11Token {
  const library = deps.shared(`pkcs11:${config.module}`, () => new Pkcs11Library(config.module, deps.log));
  return library.token(config.selector);
}

// ---------------------------------------------------------------------------------------------
// RFC 7512 URIs

const UNRESERVED = /[A-Za-z0-9\-._~]/;

function pctEncode(value: string, keep: RegExp): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const ch = String.fromCharCode(byte);
    out += byte < 0x80 && (UNRESERVED.test(ch) || keep.test(ch)) ? ch : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/**
 * The RFC 7512 URI of a private key: `pkcs11:token=<label>;object=<label>;type=private`, with
 * `serial=` when the token is chosen by serial and `?pin-source=file:<path>` when the PIN is in
 * a file (RFC 7512 section 2.3: where to read the PIN, never the PIN). Every character outside
 * the unreserved set is percent-encoded, so the URI holds no `;`, `"`, `$` or space of its own
 * and is safe inside a quoted nginx parameter.
 */
export function keyUri(selector: TokenSelector, objectLabel: string, pin?: PinSource): string {
  const path: string[] = [];
  if (selector.label !== undefined) path.push(`token=${pctEncode(selector.label, /$^/)}`);
  if (selector.serial !== undefined) path.push(`serial=${pctEncode(selector.serial, /$^/)}`);
  path.push(`object=${pctEncode(objectLabel, /$^/)}`, 'type=private');
  const query = pin && 'file' in pin ? `?pin-source=${pctEncode(`file:${pin.file}`, /[/:]/)}` : '';
  return `pkcs11:${path.join(';')}${query}`;
}

// ---------------------------------------------------------------------------------------------
// Errors

/** Return values after which the session is gone and a fresh one (with a new login) may work. */
const SESSION_LOST = new Set([
  'CKR_SESSION_HANDLE_INVALID',
  'CKR_SESSION_CLOSED',
  'CKR_USER_NOT_LOGGED_IN',
  'CKR_DEVICE_REMOVED',
  'CKR_TOKEN_NOT_PRESENT',
  'CKR_CRYPTOKI_NOT_INITIALIZED',
]);
/** Of those, the ones after which the module must be initialised again to see the token. */
const MODULE_LOST = new Set(['CKR_DEVICE_REMOVED', 'CKR_TOKEN_NOT_PRESENT', 'CKR_CRYPTOKI_NOT_INITIALIZED']);
const WRONG_PIN = new Set(['CKR_PIN_INCORRECT', 'CKR_PIN_LEN_RANGE', 'CKR_PIN_LOCKED', 'CKR_PIN_INVALID', 'CKR_PIN_EXPIRED']);

/** The CKR_ name of a pkcs11js error ("CKR_PIN_INCORRECT"), or undefined for other errors. */
export function ckrOf(err: unknown): string | undefined {
  const m = err instanceof Error ? /^(CKR_[A-Z0-9_]+)/.exec(err.message) : null;
  return m?.[1];
}

// ---------------------------------------------------------------------------------------------
// The module

/**
 * A loaded PKCS#11 module and its tokens' sessions. Closing it closes every session and calls
 * C_Finalize. `generation` grows each time the module is initialised again, which invalidates
 * every session opened before.
 */
export class Pkcs11Library implements Closable {
  readonly path: string;
  readonly log: Logger;
  #p11: PKCS11 | undefined;
  #generation = 0;
  readonly #tokens = new Map<string, Pkcs11Token>();

  constructor(path: string, log: Logger) {
    this.path = path;
    this.log = log;
  }

  get generation(): number {
    return this.#generation;
  }

  /** The token chosen by `selector`; one object (and session) per token. */
  token(selector: TokenSelector): Pkcs11Token {
    const key = JSON.stringify([selector.label ?? null, selector.serial ?? null]);
    let t = this.#tokens.get(key);
    if (!t) {
      t = new Pkcs11Token(this, selector);
      this.#tokens.set(key, t);
    }
    return t;
  }

  /** The initialised module, loading it on first use. */
  handle(): PKCS11 {
    if (this.#p11) return this.#p11;
    const mod = pkcs11js();
    const p11 = new mod.PKCS11();
    try {
      p11.load(this.path);
    } catch (err) {
      throw new CertdError(
        'E_SOURCE',
        `loading PKCS#11 module ${this.path}: ${messageOf(err)} (check source.module: the path of the vendor's .so, e.g. /usr/lib/softhsm/libsofthsm2.so)`,
        { cause: err, permanent: true },
      );
    }
    this.#initialize(p11);
    this.#p11 = p11;
    return p11;
  }

  #initialize(p11: PKCS11): void {
    try {
      p11.C_Initialize();
    } catch (err) {
      // Another handle in this process (a previous runtime) initialised the same module.
      if (ckrOf(err) !== 'CKR_CRYPTOKI_ALREADY_INITIALIZED') {
        throw new CertdError('E_SOURCE', `initialising PKCS#11 module ${this.path}: ${messageOf(err)}`, { cause: err });
      }
    }
    this.#generation++;
  }

  /** Initialises the module again after the token went away; every session becomes invalid. */
  reinitialize(): void {
    const p11 = this.handle();
    try {
      p11.C_Finalize();
    } catch {
      // Already finalised behind our back: that is why we are here.
    }
    this.#initialize(p11);
  }

  async close(): Promise<void> {
    const p11 = this.#p11;
    if (!p11) return;
    for (const t of this.#tokens.values()) t.forget(true);
    this.#p11 = undefined;
    try {
      p11.C_Finalize();
    } catch {
      // Finalised already (a reset): nothing left to release.
    }
    try {
      p11.close();
    } catch {
      // dlclose failing leaves nothing to clean up.
    }
  }
}

// ---------------------------------------------------------------------------------------------
// A token and its session

export type KeyKind = 'rsa' | 'ec';

/** A private key object found on the token. */
export interface TokenKey {
  readonly handle: Handle;
  readonly label: string;
  readonly kind: KeyKind;
  readonly id: Buffer;
}

/** What happened to one token in this process, across runtimes (config reloads). */
export interface TokenStats {
  /** C_Login calls: proves that a wrong PIN is tried once. */
  logins: number;
  /** Sessions opened again after the token dropped one. */
  reopened: number;
}

const allStats = new Map<string, TokenStats>();

/** The counters of a token (module path and selector as configured). */
export function statsFor(module: string, selector: TokenSelector): TokenStats {
  const key = JSON.stringify([module, selector.label ?? null, selector.serial ?? null]);
  let s = allStats.get(key);
  if (!s) {
    s = { logins: 0, reopened: 0 };
    allStats.set(key, s);
  }
  return s;
}

interface OpenSession {
  readonly handle: Handle;
  readonly generation: number;
}

/** How a PIN is remembered after it failed: an HMAC under a key that lives only in this process. */
const PIN_HASH_KEY = randomBytes(32);

/**
 * One token of a module with at most one logged-in session. Operations run one at a time (a
 * PKCS#11 session is not for concurrent use); `run` opens and logs in when needed and reopens
 * once when the token dropped the session.
 */
export class Pkcs11Token {
  readonly library: Pkcs11Library;
  readonly selector: TokenSelector;
  readonly stats: TokenStats;
  #session: OpenSession | undefined;
  readonly #failedPins = new Set<string>();
  #queue: Promise<unknown> = Promise.resolve();

  constructor(library: Pkcs11Library, selector: TokenSelector) {
    this.library = library;
    this.selector = selector;
    this.stats = statsFor(library.path, selector);
  }

  /** `token "web"` (or `token serial 1234`), for messages. */
  get description(): string {
    const { label, serial } = this.selector;
    if (label !== undefined) return `token "${label}"${serial !== undefined ? ` (serial ${serial})` : ''}`;
    return `token with serial "${serial ?? ''}"`;
  }

  /**
   * Runs `fn` with a logged-in session. `doing` starts every error message ("reading
   * certificate web-cert"). Errors are CertdError E_SOURCE; a wrong PIN, a missing module,
   * token or object are permanent.
   */
  run<T>(doing: string, pin: PinSource, env: NodeJS.ProcessEnv, signal: AbortSignal, fn: (s: TokenSession) => T): Promise<T> {
    const task = this.#queue.then(async () => {
      signal.throwIfAborted();
      for (let attempt = 1; ; attempt++) {
        try {
          const session = await this.#ensureSession(pin, env);
          signal.throwIfAborted();
          return fn(new TokenSession(this.library.handle(), session.handle, this.description));
        } catch (err) {
          const ckr = ckrOf(err);
          if (attempt === 1 && ckr !== undefined && SESSION_LOST.has(ckr)) {
            this.library.log.warn({ module: this.library.path, tokenLabel: this.selector.label, tokenSerial: this.selector.serial, ckr }, 'PKCS#11 session lost; opening a new one');
            this.forget(false);
            if (MODULE_LOST.has(ckr)) this.library.reinitialize();
            this.stats.reopened++;
            continue;
          }
          if (err instanceof CertdError) throw err;
          throw new CertdError('E_SOURCE', `${doing} on ${this.description} (module ${this.library.path}): ${messageOf(err)}`, { cause: err });
        }
      }
    });
    this.#queue = task.catch(() => undefined);
    return task;
  }

  /** Drops the session; `close` also tells the module (not possible after a reset). */
  forget(close: boolean): void {
    const s = this.#session;
    this.#session = undefined;
    if (close && s) {
      try {
        this.library.handle().C_CloseSession(s.handle);
      } catch {
        // The session is gone already.
      }
    }
  }

  async #ensureSession(pin: PinSource, env: NodeJS.ProcessEnv): Promise<OpenSession> {
    const current = this.#session;
    if (current && current.generation === this.library.generation) return current;
    this.#session = undefined;
    const p11 = this.library.handle();
    const mod = pkcs11js();
    const slot = this.#findSlot(p11);
    const pinValue = await readPin(pin, env, this.description);
    const hash = createHmac('sha256', PIN_HASH_KEY).update(pinValue.reveal()).digest('hex');
    if (this.#failedPins.has(hash)) {
      pinValue.wipe();
      throw this.#wrongPinError(undefined);
    }
    const handle = p11.C_OpenSession(slot, mod.CKF_SERIAL_SESSION);
    try {
      this.stats.logins++;
      p11.C_Login(handle, mod.CKU_USER, pinValue.revealString());
    } catch (err) {
      const ckr = ckrOf(err);
      if (ckr !== 'CKR_USER_ALREADY_LOGGED_IN') {
        try {
          p11.C_CloseSession(handle);
        } catch {
          // Nothing more to release.
        }
        if (ckr !== undefined && WRONG_PIN.has(ckr)) {
          this.#failedPins.add(hash);
          throw this.#wrongPinError(ckr, err);
        }
        throw err;
      }
    } finally {
      pinValue.wipe();
    }
    this.#session = { handle, generation: this.library.generation };
    return this.#session;
  }

  #wrongPinError(ckr: string | undefined, cause?: unknown): CertdError {
    const what = ckr === 'CKR_PIN_LOCKED' ? 'the token is locked (CKR_PIN_LOCKED); ask its security officer to unlock it, then' : `wrong PIN for ${this.description}${ckr ? ` (${ckr})` : ' (refused before)'}; certd will not retry it (HSMs lock tokens after a few wrong PINs):`;
    return new CertdError(
      'E_SOURCE',
      `logging in to ${this.description} (module ${this.library.path}): ${what} fix pin_env/pin_file and reload the config (SIGHUP) or restart`,
      { cause, permanent: true, details: { module: this.library.path, tokenLabel: this.selector.label, tokenSerial: this.selector.serial } },
    );
  }

  #findSlot(p11: PKCS11): Handle {
    const { label, serial } = this.selector;
    const found: string[] = [];
    for (const slot of p11.C_GetSlotList(true)) {
      let info;
      try {
        info = p11.C_GetTokenInfo(slot);
      } catch {
        continue; // a slot whose token vanished while listing
      }
      const l = info.label.trimEnd();
      const s = info.serialNumber.trim();
      if ((info.flags & pkcs11js().CKF_TOKEN_INITIALIZED) === 0) continue;
      if ((label === undefined || l === label) && (serial === undefined || s === serial)) return slot;
      found.push(`"${l}" (serial ${s})`);
    }
    throw new CertdError(
      'E_SOURCE',
      `opening ${this.description} in module ${this.library.path}: no such token is present; tokens found: ${found.length > 0 ? found.join(', ') : 'none'}`,
      { permanent: true, details: { module: this.library.path, tokens: found } },
    );
  }
}

async function readPin(pin: PinSource, env: NodeJS.ProcessEnv, token: string): Promise<Secret> {
  if ('env' in pin) {
    const v = env[pin.env];
    if (v === undefined || v === '') {
      throw new CertdError('E_SOURCE', `reading the PIN of ${token}: environment variable ${pin.env} is not set (pin_env)`, { permanent: true });
    }
    return new Secret(v);
  }
  let st;
  try {
    st = await stat(pin.file);
  } catch (err) {
    throw new CertdError('E_SOURCE', `reading the PIN of ${token}: ${pin.file}: ${(err as NodeJS.ErrnoException).code ?? messageOf(err)} (pin_file)`, { cause: err, permanent: true });
  }
  if ((st.mode & 0o007) !== 0) {
    throw new CertdError('E_SOURCE', `reading the PIN of ${token}: ${pin.file} is readable by every user (mode 0${(st.mode & 0o777).toString(8)}); chmod 600 it (0640 with a group)`, { permanent: true });
  }
  const bytes = await readFile(pin.file);
  try {
    if (bytes.length === 0) throw new CertdError('E_SOURCE', `reading the PIN of ${token}: ${pin.file} is empty (pin_file)`, { permanent: true });
    // The key URI names this file as its pin-source, and libp11 (nginx's engine) sends the file
    // verbatim: a trailing newline would be a wrong PIN there. Refusing it here, before any
    // login, costs the token no failed attempt.
    if (bytes[bytes.length - 1] === 0x0a || bytes[bytes.length - 1] === 0x0d) {
      throw new CertdError(
        'E_SOURCE',
        `reading the PIN of ${token}: ${pin.file} ends with a line break, which the PKCS#11 engine of the server would send as part of the PIN; write the file without one (printf '%s' "$PIN" > file)`,
        { permanent: true },
      );
    }
    return new Secret(bytes);
  } finally {
    bytes.fill(0);
  }
}

// ---------------------------------------------------------------------------------------------
// Operations inside a session (synchronous: nothing else runs on the session meanwhile)

/** Objects and signing on one logged-in session. Valid only inside `Pkcs11Token.run`. */
export class TokenSession {
  readonly #p11: PKCS11;
  readonly #session: Handle;
  readonly #token: string;

  constructor(p11: PKCS11, session: Handle, token: string) {
    this.#p11 = p11;
    this.#session = session;
    this.#token = token;
  }

  #find(template: { type: number; value: number | string | Buffer | boolean }[]): Handle[] {
    const p11 = this.#p11;
    p11.C_FindObjectsInit(this.#session, template);
    try {
      const out: Handle[] = [];
      for (;;) {
        const batch = p11.C_FindObjects(this.#session, 64);
        out.push(...batch);
        if (batch.length < 64) return out;
      }
    } finally {
      p11.C_FindObjectsFinal(this.#session);
    }
  }

  #attr(object: Handle, type: number): Buffer {
    const [a] = this.#p11.C_GetAttributeValue(this.#session, object, [{ type }]);
    return a?.value ?? Buffer.alloc(0);
  }

  #labels(cls: number): string[] {
    const mod = pkcs11js();
    return this.#find([{ type: mod.CKA_CLASS, value: cls }]).map((h) => this.#attr(h, mod.CKA_LABEL).toString('utf8'));
  }

  #notFound(what: string, label: string, cls: number): CertdError {
    const others = this.#labels(cls);
    return new CertdError(
      'E_SOURCE',
      `finding ${what} labelled "${label}" on ${this.#token}: not found; labels of that class present: ${others.length > 0 ? others.map((l) => `"${l}"`).join(', ') : 'none'}`,
      { permanent: true, details: { label } },
    );
  }

  /**
   * The DER of the X.509 certificate labelled `label` (CKO_CERTIFICATE, CKA_VALUE). With
   * several of that label, the one that became valid last wins, so a new certificate can be
   * written next to the old one before the old one is deleted.
   */
  certificate(label: string): Buffer {
    const mod = pkcs11js();
    const handles = this.#find([
      { type: mod.CKA_CLASS, value: mod.CKO_CERTIFICATE },
      { type: mod.CKA_LABEL, value: label },
    ]);
    if (handles.length === 0) throw this.#notFound('certificate (CKO_CERTIFICATE)', label, mod.CKO_CERTIFICATE);
    const ders = handles.map((h) => this.#attr(h, mod.CKA_VALUE)).filter((d) => d.length > 0);
    if (ders.length <= 1) {
      if (!ders[0]) throw new CertdError('E_SOURCE', `reading certificate "${label}" on ${this.#token}: it has no CKA_VALUE`, { permanent: true });
      return ders[0];
    }
    const notBefore = (der: Buffer): number => {
      try {
        return new Date(new X509Certificate(der).validFrom).getTime();
      } catch {
        return 0;
      }
    };
    return ders.sort((a, b) => notBefore(b) - notBefore(a))[0]!;
  }

  /** The private key labelled `label` (CKO_PRIVATE_KEY): its handle, type and CKA_ID. */
  privateKey(label: string): TokenKey {
    const mod = pkcs11js();
    const [handle] = this.#find([
      { type: mod.CKA_CLASS, value: mod.CKO_PRIVATE_KEY },
      { type: mod.CKA_LABEL, value: label },
    ]);
    if (!handle) throw this.#notFound('private key (CKO_PRIVATE_KEY)', label, mod.CKO_PRIVATE_KEY);
    const typeBytes = this.#attr(handle, mod.CKA_KEY_TYPE);
    // CK_ULONG in host byte order (little-endian on every platform certd runs on).
    const keyType = typeBytes.length >= 4 ? typeBytes.readUInt32LE(0) : -1;
    let kind: KeyKind;
    if (keyType === mod.CKK_RSA) kind = 'rsa';
    else if (keyType === mod.CKK_EC) kind = 'ec';
    else {
      throw new CertdError('E_SOURCE', `using private key "${label}" on ${this.#token}: key type 0x${keyType.toString(16)} is neither RSA nor EC`, { permanent: true });
    }
    return { handle, label, kind, id: this.#attr(handle, mod.CKA_ID) };
  }

  /**
   * The key's public half as SPKI DER: from the RSA private key's own modulus and exponent,
   * else from a CKO_PUBLIC_KEY with the same CKA_ID (or label). Undefined when the token has
   * neither (an EC key stored without its public key).
   */
  publicKey(key: TokenKey): Buffer | undefined {
    const mod = pkcs11js();
    if (key.kind === 'rsa') {
      const spki = this.#rsaSpki(key.handle);
      if (spki) return spki;
    }
    const templates = [
      ...(key.id.length > 0 ? [[{ type: mod.CKA_CLASS, value: mod.CKO_PUBLIC_KEY }, { type: mod.CKA_ID, value: key.id }]] : []),
      [{ type: mod.CKA_CLASS, value: mod.CKO_PUBLIC_KEY }, { type: mod.CKA_LABEL, value: key.label }],
    ];
    for (const t of templates) {
      const [pub] = this.#find(t);
      if (!pub) continue;
      const spki = key.kind === 'rsa' ? this.#rsaSpki(pub) : this.#ecSpki(pub);
      if (spki) return spki;
    }
    return undefined;
  }

  #rsaSpki(object: Handle): Buffer | undefined {
    const mod = pkcs11js();
    let n: Buffer;
    let e: Buffer;
    try {
      n = this.#attr(object, mod.CKA_MODULUS);
      e = this.#attr(object, mod.CKA_PUBLIC_EXPONENT);
    } catch {
      return undefined; // CKR_ATTRIBUTE_TYPE_INVALID: this token keeps them elsewhere
    }
    if (n.length === 0 || e.length === 0) return undefined;
    const key = createPublicKey({ key: { kty: 'RSA', n: n.toString('base64url'), e: e.toString('base64url') }, format: 'jwk' });
    return key.export({ type: 'spki', format: 'der' });
  }

  #ecSpki(object: Handle): Buffer | undefined {
    const mod = pkcs11js();
    let params: Buffer;
    let point: Buffer;
    try {
      params = this.#attr(object, mod.CKA_EC_PARAMS);
      point = unwrapEcPoint(this.#attr(object, mod.CKA_EC_POINT));
    } catch {
      return undefined;
    }
    if (params.length === 0 || point.length === 0) return undefined;
    const spki = new SubjectPublicKeyInfo({
      algorithm: new AlgorithmIdentifier({ algorithm: '1.2.840.10045.2.1', parameters: new Uint8Array(params).buffer }),
      subjectPublicKey: new Uint8Array(point).buffer,
    });
    const der = Buffer.from(AsnConvert.serialize(spki));
    // Round-trip through OpenSSL so that a malformed point fails here, not in the policy.
    return createPublicKey({ key: der, format: 'der', type: 'spki' }).export({ type: 'spki', format: 'der' });
  }

  /**
   * Signs `data` with `key`: RSA with CKM_SHA256_RSA_PKCS / CKM_SHA384_RSA_PKCS (PKCS#1 v1.5
   * bytes); EC with CKM_ECDSA over the SHA-256/384 digest, returned as a DER ECDSA-Sig-Value.
   */
  sign(key: TokenKey, data: Buffer, hash: 'sha256' | 'sha384'): Buffer {
    const mod = pkcs11js();
    const p11 = this.#p11;
    const out = Buffer.alloc(1024);
    if (key.kind === 'rsa') {
      p11.C_SignInit(this.#session, { mechanism: hash === 'sha384' ? mod.CKM_SHA384_RSA_PKCS : mod.CKM_SHA256_RSA_PKCS }, key.handle);
      return Buffer.from(p11.C_Sign(this.#session, data, out));
    }
    p11.C_SignInit(this.#session, { mechanism: mod.CKM_ECDSA }, key.handle);
    const raw = p11.C_Sign(this.#session, createHash(hash).update(data).digest(), out);
    return ecdsaRawToDer(Buffer.from(raw));
  }
}

/** CKA_EC_POINT is a DER OCTET STRING around the point (PKCS#11 2.40); some tokens give it bare. */
export function unwrapEcPoint(value: Buffer): Buffer {
  if (value[0] !== 0x04 || value.length < 3) return value;
  if (value[1]! < 0x80 && value.length === 2 + value[1]!) return value.subarray(2);
  if (value[1] === 0x81 && value.length === 3 + value[2]!) return value.subarray(3);
  return value;
}

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  if (n < 0x100) return Buffer.from([0x81, n]);
  return Buffer.from([0x82, n >> 8, n & 0xff]);
}

function derInteger(bytes: Buffer): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  let v = bytes.subarray(i);
  if ((v[0] ?? 0) & 0x80) v = Buffer.concat([Buffer.from([0]), v]);
  return Buffer.concat([Buffer.from([0x02]), derLength(v.length), v]);
}

/** PKCS#11 returns ECDSA signatures as r || s; X.509 and TLS want SEQUENCE { r INTEGER, s INTEGER }. */
export function ecdsaRawToDer(raw: Buffer): Buffer {
  if (raw.length === 0 || raw.length % 2 !== 0) throw new Error(`an ECDSA signature of ${raw.length} bytes is not r || s`);
  const half = raw.length / 2;
  const body = Buffer.concat([derInteger(raw.subarray(0, half)), derInteger(raw.subarray(half))]);
  return Buffer.concat([Buffer.from([0x30]), derLength(body.length), body]);
}

/**
 * Proves that the token key belongs to `publicKey`: signs random bytes on the token and verifies
 * the signature in software. True only when it verifies.
 */
export function proveKey(session: TokenSession, key: TokenKey, publicKey: KeyObject): boolean {
  const challenge = randomBytes(32);
  const signature = session.sign(key, challenge, 'sha256');
  try {
    return verifySignature('sha256', challenge, publicKey, signature);
  } catch {
    return false;
  }
}
