/** Runs bin/certd as a child process, as a user would; async so in-test servers keep serving. */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { captureOutput } from './capture.js';

export const CERTD = resolve('bin/certd');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * How to start certd: `node bin/certd` (this test's Node), or with `launcher` bin/certd as a
 * program, as systemd and ECS start it (the FIPS pre-flight of bin/certd-launch, then exec of
 * this test's Node through CERTD_NODE).
 */
export function certdCommand(args: readonly string[], launcher = false): { file: string; args: string[]; env: NodeJS.ProcessEnv } {
  return launcher ? { file: CERTD, args: [...args], env: { CERTD_NODE: process.execPath } } : { file: process.execPath, args: [CERTD, ...args], env: {} };
}

export function runCertd(args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; uid?: number; gid?: number; launcher?: boolean } = {}): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    const cmd = certdCommand(args, opts.launcher);
    const child = spawn(cmd.file, cmd.args, {
      env: { ...process.env, CERTD_LOG_FORMAT: 'json', ...cmd.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      // As another user (the test runs as root): supplementary groups are dropped with it.
      ...(opts.uid === undefined ? {} : { uid: opts.uid }),
      ...(opts.gid === undefined ? {} : { gid: opts.gid }),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      captureOutput(`certd ${args.join(' ')} (exit ${String(code)}) stdout`, stdout);
      captureOutput(`certd ${args.join(' ')} (exit ${String(code)}) stderr`, stderr);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

/** A scratch directory on tmpfs (/dev/shm), removed by the returned cleanup. */
export function shmDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join('/dev/shm', `certd-${prefix}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function writeConfig(dir: string, yaml: string, name = 'config.yaml'): string {
  const path = join(dir, name);
  writeFileSync(path, yaml);
  return path;
}
