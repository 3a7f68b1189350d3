/** File-system helpers for targets: tmpfs detection, atomic writes, owner lookup. */
import { readFileSync } from 'node:fs';
import { mkdir, open, rename, statfs, unlink } from 'node:fs/promises';
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
