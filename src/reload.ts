/** Telling the server to pick up new material: a test command, then a command or a signal. */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { CertdError, scrub } from './errors.js';

export interface ReloadSpec {
  readonly command?: readonly string[] | undefined;
  readonly signal?: { readonly pidfile: string; readonly signal: string } | undefined;
  readonly test?: readonly string[] | undefined;
  readonly timeoutMs: number;
}

/** Identical specs are coalesced into one reload per cycle. */
export function reloadKey(spec: ReloadSpec): string {
  return JSON.stringify([spec.command ?? null, spec.signal ?? null, spec.test ?? null]);
}

export function describeReload(spec: ReloadSpec): string {
  if (spec.command) return spec.command.join(' ');
  if (spec.signal) return `kill -${spec.signal.signal.replace(/^SIG/, '')} $(cat ${spec.signal.pidfile})`;
  return '(none)';
}

/** Runs argv without a shell; a non-zero exit or a timeout is a CertdError E_RELOAD with stderr. */
export function runCommand(argv: readonly string[], timeoutMs: number, doing: string, signal?: AbortSignal): Promise<string> {
  const [file, ...args] = argv;
  if (!file) return Promise.reject(new CertdError('E_CONFIG', `${doing}: empty command`));
  return new Promise((resolvePromise, reject) => {
    execFile(file, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1 << 20, ...(signal ? { signal } : {}) }, (err, stdout, stderr) => {
      if (!err) return resolvePromise(String(stdout));
      const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string };
      const detail = e.killed
        ? `timed out after ${timeoutMs} ms`
        : e.code === 'ENOENT'
          ? `${file}: command not found`
          : `exit ${String(e.code)}: ${scrub(String(stderr || stdout).trim()).split('\n').slice(-3).join(' | ')}`;
      reject(new CertdError('E_RELOAD', `${doing}: ${argv.join(' ')}: ${detail}`, { cause: err }));
    });
  });
}

export async function runTest(spec: ReloadSpec, signal?: AbortSignal): Promise<void> {
  if (spec.test) await runCommand(spec.test, spec.timeoutMs, 'testing server config', signal);
}

export async function runReload(spec: ReloadSpec, signal?: AbortSignal): Promise<void> {
  if (spec.command) {
    await runCommand(spec.command, spec.timeoutMs, 'reloading server', signal);
    return;
  }
  if (spec.signal) {
    let pid: number;
    try {
      pid = Number((await readFile(spec.signal.pidfile, 'utf8')).trim());
    } catch (err) {
      throw new CertdError('E_RELOAD', `reloading server: reading pidfile ${spec.signal.pidfile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
    }
    if (!Number.isInteger(pid) || pid <= 1) {
      throw new CertdError('E_RELOAD', `reloading server: pidfile ${spec.signal.pidfile} holds no valid pid`);
    }
    try {
      process.kill(pid, spec.signal.signal as NodeJS.Signals);
    } catch (err) {
      throw new CertdError('E_RELOAD', `reloading server: sending ${spec.signal.signal} to pid ${pid} (from ${spec.signal.pidfile}): ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
    }
  }
}
