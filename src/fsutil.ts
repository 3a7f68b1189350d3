/** File-system helpers: tmpfs detection, atomic writes, owner lookup, who can redirect a path. */
import { readFileSync } from 'node:fs';
import { chmod, lstat, mkdir, open, readdir, realpath, rename, statfs, unlink } from 'node:fs/promises';
import { CertdError } from './errors.js';
import type { ErrorCode } from './errors.js';
import { dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';

export const TMPFS_MAGIC = 0x01021994;
export const RAMFS_MAGIC = 0x858458f6;

/** The nearest existing ancestor of `path` (itself if it exists). */
async function nearestExisting(path: string): Promise<string> {
  let p = resolve(path);
  for (;;) {
    try {
      await statfs(p);
      return p;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || p === dirname(p)) throw err;
      p = dirname(p);
    }
  }
}

/** True when `path` (or, if it does not exist yet, where it would be created) is tmpfs or ramfs. */
export async function isMemoryBacked(path: string): Promise<{ memory: boolean; type: number; checked: string }> {
  const checked = await nearestExisting(path);
  const { type } = await statfs(checked);
  // statfs reports the magic as a signed or unsigned number depending on the platform.
  const t = type >>> 0;
  return { memory: t === TMPFS_MAGIC || t === RAMFS_MAGIC, type: t, checked };
}

/** Writes a file by temp file + fsync + rename, so readers see the old or the new content. */
export async function writeFileAtomic(path: string, data: string | Buffer, mode = 0o600): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = join(dirname(path), `.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

function lookupId(file: string, name: string): number | undefined {
  if (/^\d+$/.test(name)) return Number(name);
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const [n, , id] = line.split(':');
    if (n === name && id !== undefined) return Number(id);
  }
  return undefined;
}

/** Numeric uid for a user name (or number), from /etc/passwd. */
export function uidOf(user: string): number | undefined {
  return lookupId('/etc/passwd', user);
}

/** Numeric gid for a group name (or number), from /etc/group. */
export function gidOf(group: string): number | undefined {
  return lookupId('/etc/group', group);
}

/**
 * Refuses a target directory that someone other than root or certd could redirect or swap:
 * every existing ancestor of `dir` as written, every component of its real path, and `dir`
 * itself must be owned by root or by certd's uid and not writable by group or others (unless
 * the sticky bit is set, as on /tmp and /dev/shm). A symlink on the way is accepted only when
 * root or certd owns it (its destination is then checked through the real path); `dir` itself
 * must be a real directory. Ownership of a parent is what matters: whoever owns it can rename
 * a symlink into the place of the next component between this check and the write.
 * About two lstat calls per path component: cheap enough for every stage.
 */
export async function checkDirChain(dir: string, doing: string, uid = process.getuid?.() ?? 0, code: ErrorCode = 'E_TARGET'): Promise<void> {
  const trusted = (owner: number): boolean => owner === 0 || owner === uid;
  const refuse = (why: string): never => {
    throw new CertdError(code, `${doing}: refused: ${why}; certd writes keys and records only where nobody but root and certd can redirect them`, { permanent: true });
  };
  const ancestors = (p: string): string[] => {
    const out: string[] = [];
    for (let q = p; ; q = dirname(q)) {
      out.unshift(q);
      if (dirname(q) === q) return out;
    }
  };
  const abs = resolve(dir);
  // The real path of the nearest existing ancestor, with the part still to be created after it.
  let real = abs;
  for (let q = abs, rest = ''; ; rest = join(q.slice(dirname(q).length), rest), q = dirname(q)) {
    const r = await realpath(q).catch(() => undefined);
    if (r !== undefined) {
      real = join(r, rest);
      break;
    }
    if (dirname(q) === q) break;
  }
  const seen = new Set<string>();
  for (const p of [...ancestors(abs), ...ancestors(real)]) {
    if (seen.has(p)) continue;
    seen.add(p);
    const st = await lstat(p).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    });
    if (!st) continue;
    if (st.isSymbolicLink()) {
      if (p === abs) refuse(`${p} is a symlink (the target directory must be a real directory)`);
      if (!trusted(st.uid)) refuse(`${p} is a symlink owned by uid ${st.uid}, neither root nor certd (uid ${uid})`);
      continue;
    }
    if (!st.isDirectory()) refuse(`${p} is not a directory`);
    if (!trusted(st.uid)) refuse(`${p} is owned by uid ${st.uid}, neither root nor certd (uid ${uid})`);
    if ((st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0) {
      const who = (st.mode & 0o022) === 0o022 ? 'group and others' : st.mode & 0o020 ? 'its group' : 'others';
      refuse(`${p} is writable by ${who} (mode 0${(st.mode & 0o7777).toString(8)}) without the sticky bit`);
    }
  }
}

/** A state-directory entry whose mode certd tightened, for a warning. */
export interface Tightened {
  readonly path: string;
  readonly from: number;
}

/**
 * Makes `stateDir` safe to keep last-good records and the lock in, or refuses it. Its parents
 * must be as checkDirChain requires; the directory and every directory inside it must be a real
 * directory owned by certd's user (or root). Group or world access on those certd owns is removed (mode
 * 0700) and returned, so that the caller can say so; an entry owned by another user is refused
 * (E_CONFIG): whoever owns it can replace the records certd trusts on the next start.
 */
export async function secureStateDir(stateDir: string, uid = process.getuid?.() ?? 0): Promise<Tightened[]> {
  const dir = resolve(stateDir);
  await checkDirChain(dirname(dir), `using state_dir ${dir}`, uid, 'E_CONFIG');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tightened: Tightened[] = [];
  const fix = `chown -R ${uid} ${dir} && chmod -R go-rwx ${dir}, or point state_dir at a directory certd's user owns`;
  const visit = async (path: string, depth: number): Promise<void> => {
    const st = await lstat(path);
    if (st.isSymbolicLink()) throw new CertdError('E_CONFIG', `using state_dir ${dir}: refused: ${path} is a symlink; state_dir and its directories must be real directories (${fix})`, { permanent: true });
    if (st.uid !== uid && st.uid !== 0) {
      throw new CertdError('E_CONFIG', `using state_dir ${dir}: refused: ${path} is owned by uid ${st.uid}, not certd's uid ${uid}; another user could replace the last-good records certd trusts. Fix: ${fix}`, { permanent: true });
    }
    if (!st.isDirectory()) return;
    if ((st.mode & 0o077) !== 0) {
      if (st.uid !== uid) throw new CertdError('E_CONFIG', `using state_dir ${dir}: refused: ${path} is root's and open to others (mode 0${(st.mode & 0o7777).toString(8)}); certd (uid ${uid}) cannot close it. Fix: ${fix}`, { permanent: true });
      await chmod(path, 0o700);
      tightened.push({ path, from: st.mode & 0o7777 });
    }
    // Records live one level down (certs/, local-ca/); nothing certd writes is deeper than two.
    if (depth >= 2) return;
    for (const name of await readdir(path)) await visit(join(path, name), depth + 1);
  };
  await visit(dir, 0);
  return tightened;
}
