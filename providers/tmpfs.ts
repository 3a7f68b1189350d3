/**
 * Target `tmpfs`: the file set of DESIGN.md in a memory-backed directory, swapped as one unit.
 *
 * Layout (as Kubernetes' atomic writer):
 *   dir/..2026-11-22T10.15.00.123Z-ab12cd/   one complete, versioned set
 *   dir/..data -> ..2026-11-22T...            the live set: ONE symlink, replaced by rename(2)
 *   dir/fullchain.pem -> ..data/fullchain.pem (and cert.pem, chain.pem, privkey.pem|privkey.uri,
 *                        and nginx-ssl.conf for a key in an HSM)
 * A reader that resolves `..data` once sees either the old set or the new one, never a mix.
 *
 * `layout: per-sni` keeps one such set per server name plus an nginx snippet that selects it by
 * SNI at handshake time, so nginx needs no reload for a rotation (see sni-layout.ts).
 */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants, existsSync, readFileSync, readlinkSync } from 'node:fs';
import { lchown, lstat, mkdir, open, readdir, readlink, realpath, rename, rm, symlink, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import type { ChecksDeployment, DescribesDeployment, Material, Target, TargetFactory } from '../src/contracts.js';
import { CertdError, messageOf } from '../src/errors.js';
import { gidOf, isMemoryBacked, uidOf, checkDirChain } from '../src/fsutil.js';
import { leafFingerprintOfPem } from '../src/material.js';
import { pathString } from '../src/schema.js';
import { Serial } from './serial.js';
import { checkSnippetDir, SniLayout } from './sni-layout.js';

/**
 * A `dir` with a `..` segment is refused at config load: where keys land must be readable from
 * the config as written, not depend on what the segments before `..` resolve to at run time.
 */
const targetDir = pathString.refine((d) => !d.split(/[\\/]+/).includes('..'), {
  message: 'must not contain ".." segments: give the directory the keys go to as it is (an absolute path)',
});

const schema = z.strictObject({
  type: z.literal('tmpfs'),
  dir: targetDir,
  owner: z.string().optional(),
  group: z.string().optional(),
  /** Mode of the certificate files; keys are always 0600 (0640 with `group`). */
  mode: z.string().regex(/^0?[0-7]{3}$/).default('0644'),
  allow_disk: z.boolean().default(false),
  /**
   * single: the file set in `dir`; the server reloads to pick it up.
   * per-sni: `dir/<name>/` per DNS SAN and `dir/certd-sni.conf` to include at nginx's http level;
   * a rotation is served with no reload (nginx's workers read the files: set `group`).
   */
  layout: z.enum(['single', 'per-sni']).default('single'),
  /** per-sni: served for names not deployed (PEM files); default: the first certificate deployed into dir. */
  fallback: z.strictObject({ cert: pathString, key: pathString }).optional(),
}).superRefine((c, ctx) => {
  if (c.fallback !== undefined && c.layout !== 'per-sni') {
    ctx.addIssue({ code: 'custom', path: ['fallback'], message: 'fallback applies to layout: per-sni only' });
  }
  if (c.layout === 'per-sni') {
    try {
      checkSnippetDir(c.dir);
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['dir'], message: messageOf(err) });
    }
  }
});

export const DATA_LINK = '..data';
const TMP_LINK = '..data_tmp';
const CERT_FILES = ['fullchain.pem', 'cert.pem', 'chain.pem', 'nginx-ssl.conf'] as const;
const KEY_FILES = ['privkey.pem', 'privkey.uri'] as const;

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === 'ENOENT';
}

async function readLinkOrNull(path: string): Promise<string | null> {
  try {
    return await readlink(path);
  } catch (err) {
    if (isNotFound(err) || (err as NodeJS.ErrnoException).code === 'EINVAL') return null;
    throw err;
  }
}

// O_EXCL already refuses an existing name, symlinks included; O_NOFOLLOW says so to every reader.
const CREATE_NEW = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;

async function writeNew(path: string, data: string | Buffer, mode: number, uid?: number, gid?: number): Promise<void> {
  const fh = await open(path, CREATE_NEW, mode);
  try {
    await fh.writeFile(data);
    await fh.chmod(mode); // the umask must not loosen or tighten what was asked
    if (uid !== undefined || gid !== undefined) await fh.chown(uid ?? -1, gid ?? -1);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * nginx directives for a key held in an HSM, to `include` in a server block. The URI is
 * percent-encoded (no `"`, `;`, `$` or space of its own); a `dir` that nginx would misread
 * inside quotes is refused rather than escaped.
 */
export function nginxSslSnippet(dir: string, uri: string): string {
  const quote = (v: string): string => {
    if (/["\\$\x00-\x1f]/.test(v)) throw new Error(`cannot write ${JSON.stringify(v)} into an nginx directive (it holds a quote, backslash, $ or control character)`);
    return `"${v}"`;
  };
  return `ssl_certificate ${quote(join(dir, 'fullchain.pem'))};\nssl_certificate_key ${quote(`engine:pkcs11:${uri}`)};\n`;
}

/**
 * The files of one set, by name. The key's content is produced only when written. With `dir`
 * (where the set is linked), a key in an HSM also gets `nginx-ssl.conf` (see nginxSslSnippet).
 */
export function fileSet(material: Material, dir?: string): Map<string, () => string | Buffer> {
  const files = new Map<string, () => string | Buffer>([
    ['fullchain.pem', () => material.fullchainPem],
    ['cert.pem', () => material.leafPem],
    ['chain.pem', () => material.chainPem],
  ]);
  if (material.key.kind === 'pem') {
    const pem = material.key.pem;
    files.set('privkey.pem', () => pem.reveal());
  } else {
    files.set('privkey.uri', () => `${material.key.kind === 'pkcs11' ? material.key.uri : ''}\n`);
    if (dir !== undefined && material.key.kind === 'pkcs11') {
      const uri = material.key.uri;
      files.set('nginx-ssl.conf', () => nginxSslSnippet(dir, uri));
    }
  }
  return files;
}

export interface AtomicDirOptions {
  readonly dir: string;
  readonly certMode: number;
  readonly keyMode: number;
  readonly uid?: number | undefined;
  readonly gid?: number | undefined;
  readonly allowDisk: boolean;
  /** For messages: which certificate this directory serves. */
  readonly certName: string;
}

/**
 * One directory whose whole content is replaced atomically. Used by the tmpfs target (one
 * set per certificate) and reusable by layouts that keep several sets.
 */
export class AtomicDir {
  readonly #o: AtomicDirOptions;
  #previous: string | null | undefined; // undefined: nothing staged
  #staged: string | undefined;

  constructor(options: AtomicDirOptions) {
    this.#o = options;
  }

  get dir(): string {
    return this.#o.dir;
  }

  async #prepareDir(): Promise<void> {
    const { dir, allowDisk, certName } = this.#o;
    const fs = await isMemoryBacked(dir).catch((err: unknown) => {
      throw new CertdError('E_TARGET', `deploying ${certName} to ${dir}: cannot inspect the file system: ${messageOf(err)}`, { cause: err });
    });
    // Before mkdir too: a redirected ancestor must not even get directories created through it.
    await checkDirChain(dir, `deploying ${certName} to ${dir}`);
    if (!fs.memory && !allowDisk) {
      throw new CertdError(
        'E_TARGET',
        `deploying ${certName} to ${dir}: ${fs.checked} is not tmpfs or ramfs (statfs type 0x${fs.type.toString(16)}); private keys must not land on disk. Mount a tmpfs there (or use /run, /dev/shm), or set allow_disk: true if you accept keys on disk`,
        { permanent: true },
      );
    }
    await mkdir(dir, { recursive: true, mode: 0o755 });
    const st = await lstat(dir);
    if (!st.isDirectory()) {
      throw new CertdError('E_TARGET', `deploying ${certName} to ${dir}: not a directory (a symlink or file is in the way)`, { permanent: true });
    }
    await checkDirChain(dir, `deploying ${certName} to ${dir}`);
  }

  /** Removes a temp link and every set but `keep` (leftovers of an interrupted run, old sets). */
  async #cleanStale(keep: ReadonlySet<string>): Promise<void> {
    const { dir } = this.#o;
    await unlink(join(dir, TMP_LINK)).catch(() => undefined);
    const versions = (await readdir(dir)).filter((n) => n.startsWith('..') && n !== DATA_LINK && n !== TMP_LINK);
    for (const v of versions) {
      if (keep.has(v)) continue;
      await rm(join(this.#o.dir, v), { recursive: true, force: true });
    }
  }

  async #point(version: string): Promise<void> {
    const { dir } = this.#o;
    await unlink(join(dir, TMP_LINK)).catch(() => undefined);
    await symlink(version, join(dir, TMP_LINK));
    await rename(join(dir, TMP_LINK), join(dir, DATA_LINK));
  }

  async #linkFiles(names: readonly string[]): Promise<void> {
    const { dir } = this.#o;
    for (const name of [...CERT_FILES, ...KEY_FILES]) {
      const link = join(dir, name);
      const want = names.includes(name);
      const current = await readLinkOrNull(link);
      if (want && current !== `${DATA_LINK}/${name}`) {
        await rm(link, { force: true });
        await symlink(`${DATA_LINK}/${name}`, link);
      } else if (!want && current !== null) {
        await unlink(link);
      }
    }
  }

  /** Writes `files` as a new set and makes it live. Rolls itself back on any failure. */
  async stage(files: Map<string, () => string | Buffer>): Promise<void> {
    const { dir, certName, certMode, keyMode, uid, gid } = this.#o;
    if (this.#previous !== undefined) throw new CertdError('E_INTERNAL', `deploying ${certName} to ${dir}: a set is already staged`);
    let previous: string | null;
    try {
      await this.#prepareDir();
      previous = await readLinkOrNull(join(dir, DATA_LINK));
      await this.#cleanStale(new Set(previous ? [previous] : []));
    } catch (err) {
      // A read-only or vanished file system fails here, before anything changed: still E_TARGET.
      if (err instanceof CertdError) throw err;
      throw new CertdError('E_TARGET', `deploying ${certName} to ${dir}: ${messageOf(err)}`, { cause: err });
    }
    const version = `..${new Date().toISOString().replace(/:/g, '.')}-${randomBytes(3).toString('hex')}`;
    const path = join(dir, version);
    try {
      await mkdir(path, { mode: 0o755 });
      for (const [name, content] of files) {
        const isKey = name.startsWith('privkey');
        const file = join(path, name);
        await writeNew(file, content(), isKey ? keyMode : certMode, uid, gid);
      }
      if (uid !== undefined || gid !== undefined) await lchown(path, uid ?? -1, gid ?? -1);
      await this.#point(version);
      await this.#linkFiles([...files.keys()]);
    } catch (err) {
      // Put back what was live; the half-written set is removed.
      if (previous) await this.#point(previous).catch(() => undefined);
      await this.#linkFiles(previous ? await readdir(join(dir, previous)).catch(() => []) : []).catch(() => undefined);
      if (!previous) await unlink(join(dir, DATA_LINK)).catch(() => undefined);
      await rm(path, { recursive: true, force: true }).catch(() => undefined);
      throw new CertdError('E_TARGET', `deploying ${certName} to ${dir}: ${messageOf(err)}`, { cause: err });
    }
    this.#previous = previous;
    this.#staged = version;
  }

  async commit(): Promise<void> {
    if (this.#staged === undefined) return;
    const keep = new Set([this.#staged, ...(this.#previous ? [this.#previous] : [])]);
    this.#previous = undefined;
    this.#staged = undefined;
    await this.#cleanStale(keep).catch(() => undefined);
  }

  async rollback(): Promise<void> {
    const { dir, certName } = this.#o;
    if (this.#staged === undefined) return;
    const previous = this.#previous;
    const staged = this.#staged;
    try {
      if (previous) {
        await this.#point(previous);
        await this.#linkFiles(await readdir(join(dir, previous)));
      } else {
        await this.#linkFiles([]);
        await unlink(join(dir, DATA_LINK)).catch(() => undefined);
      }
      await rm(join(dir, staged), { recursive: true, force: true });
    } catch (err) {
      throw new CertdError('E_TARGET', `rolling back ${certName} in ${dir}: ${messageOf(err)}`, { cause: err });
    } finally {
      this.#previous = undefined;
      this.#staged = undefined;
    }
  }

  /** The live set's path, or null when nothing is deployed. */
  async live(): Promise<string | null> {
    const v = await readLinkOrNull(join(this.#o.dir, DATA_LINK));
    return v ? join(this.#o.dir, v) : null;
  }
}

export const tmpfsTarget = {
  type: 'tmpfs',
  schema,
  create(config, deps, cert): Target & DescribesDeployment & Partial<ChecksDeployment> {
    const dir = resolve(deps.resolvePath(config.dir));
    const uid = config.owner === undefined ? undefined : uidOf(config.owner);
    const gid = config.group === undefined ? undefined : gidOf(config.group);
    if (config.owner !== undefined && uid === undefined) {
      throw new CertdError('E_CONFIG', `certificate ${cert.name}: tmpfs target ${dir}: unknown user "${config.owner}"`);
    }
    if (config.group !== undefined && gid === undefined) {
      throw new CertdError('E_CONFIG', `certificate ${cert.name}: tmpfs target ${dir}: unknown group "${config.group}"`);
    }
    const dirOptions: AtomicDirOptions = {
      dir,
      certMode: parseInt(config.mode, 8),
      keyMode: config.group === undefined ? 0o600 : 0o640,
      uid,
      gid,
      allowDisk: config.allow_disk,
      certName: cert.name,
    };
    if (config.layout === 'per-sni') {
      checkSnippetDir(dir);
      const layout = new SniLayout({
        dir,
        certName: cert.name,
        atomicDir: (sub) => new AtomicDir({ ...dirOptions, dir: sub }),
        fileSet,
        fallback: config.fallback && { cert: deps.resolvePath(config.fallback.cert), key: deps.resolvePath(config.fallback.key) },
        log: deps.log,
        lock: deps.shared(`tmpfs-per-sni:${dir}`, () => new Serial()),
      });
      return {
        description: `tmpfs:${dir} (per-sni)`,
        get needsReload() {
          return layout.reloadNeeded;
        },
        stage: (material) => layout.stage(material),
        commit: () => layout.commit(),
        rollback: () => layout.rollback(),
        async deployment() {
          const fs = await isMemoryBacked(dir).catch(() => undefined);
          return { type: 'tmpfs', dir, ...(await layout.deployment()), memoryBacked: fs?.memory ?? false };
        },
      };
    }
    const atomic = new AtomicDir(dirOptions);
    return {
      description: `tmpfs:${dir}`,
      needsReload: true,
      stage: (material) => atomic.stage(fileSet(material, dir)),
      commit: () => atomic.commit(),
      rollback: () => atomic.rollback(),
      async holds(fingerprint) {
        // Synchronous on purpose: a few small reads from a memory-backed directory take
        // microseconds, while four trips through libuv's thread pool per certificate made this
        // check most of an unchanged cycle over 1,000 certificates.
        let live: string;
        try {
          live = join(dir, readlinkSync(join(dir, DATA_LINK)));
        } catch {
          return false;
        }
        const hasKey = KEY_FILES.some((f) => existsSync(join(live, f)));
        if (!hasKey) return false;
        try {
          return leafFingerprintOfPem(readFileSync(join(live, 'cert.pem'), 'utf8')) === fingerprint;
        } catch {
          return false;
        }
      },
      async deployment() {
        const live = await atomic.live();
        const fs = await isMemoryBacked(dir).catch(() => undefined);
        const files: Record<string, string> = {};
        if (live) {
          for (const name of await readdir(live)) {
            const st = await lstat(join(live, name));
            files[join(dir, name)] = `0${(st.mode & 0o777).toString(8)}`;
          }
        }
        return { type: 'tmpfs', dir, live, files, memoryBacked: fs?.memory ?? false, statfsType: fs ? `0x${fs.type.toString(16)}` : undefined };
      },
    };
  },
} satisfies TargetFactory<typeof schema>;
