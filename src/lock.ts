/**
 * The deployment lock: one certd deploys into a state directory at a time. A lock file holds
 * the owner's pid; a lock whose owner is gone (crash, SIGKILL) is taken over.
 */
import { link, open, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { CertdError } from './errors.js';
import { secureStateDir } from './fsutil.js';
import type { Tightened } from './fsutil.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface Lock {
  release(): Promise<void>;
}

/**
 * Takes the lock of `stateDir`, after making sure nobody but certd can write there (see
 * secureStateDir: loose modes are tightened and passed to `onTightened`, foreign owners refused).
 */
export async function acquireLock(stateDir: string, purpose: string, onTightened?: (t: readonly Tightened[]) => void): Promise<Lock> {
  const tightened = await secureStateDir(stateDir);
  if (tightened.length > 0) onTightened?.(tightened);
  const path = join(stateDir, 'deploy.lock');
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fh = await open(path, 'wx', 0o600);
      await fh.writeFile(`${process.pid}\n${purpose}\n`);
      await fh.close();
      return {
        release: async () => {
          const owner = await readFile(path, 'utf8').catch(() => '');
          if (owner.startsWith(`${process.pid}\n`)) await unlink(path).catch(() => undefined);
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const [pidText, what] = (await readFile(path, 'utf8').catch(() => '')).split('\n');
      const pid = Number(pidText);
      if (Number.isInteger(pid) && pid > 0 && alive(pid)) {
        throw new CertdError('E_LOCKED', `another certd (pid ${pid}, ${what || 'unknown'}) is deploying from ${stateDir}; wait for it, or if it hangs stop it`, { details: { pid } });
      }
      // Stale: its owner died without releasing it. Move it aside atomically rather than
      // unlinking by name: another certd may have replaced the stale file with its own fresh
      // lock since we read it, and that one must survive.
      const aside = `${path}.stale-${process.pid}-${attempt}`;
      try {
        await rename(path, aside);
      } catch {
        continue;
      }
      const moved = (await readFile(aside, 'utf8').catch(() => '')).split('\n')[0];
      if (moved !== pidText) await link(aside, path).catch(() => undefined);
      await unlink(aside).catch(() => undefined);
    }
  }
  throw new CertdError('E_LOCKED', `could not take the deployment lock ${path}`);
}

/** The one warning for state-directory modes certd had to tighten. */
export function warnTightened(log: { warn(obj: object, msg: string): void }, tightened: readonly Tightened[]): void {
  log.warn(
    { step: 'state_dir', tightened: tightened.map((t) => ({ path: t.path, mode: `0${t.from.toString(8)}` })) },
    `state_dir: removed group/other access from ${tightened.map((t) => `${t.path} (was 0${t.from.toString(8)})`).join(', ')}; keep it 0700: another user could replace last-good records`,
  );
}
