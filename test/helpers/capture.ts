/**
 * What the whole test run printed, and which secrets it made, for the secret-hygiene check that
 * runs last (test/unit/zz-hygiene.test.ts).
 *
 * scripts/run-tests.mjs sets CERTD_TEST_CAPTURE_DIR (on tmpfs) for every test process. Into it:
 *   out-<pid>.log        every stdout/stderr of a certd child (runCertd), every log line of an
 *                        in-process certd logger (captureLogs), and any other output a test
 *                        hands to captureOutput (/metrics scrapes, status documents)
 *   secrets-<pid>.jsonl  {"kind","value"} per secret a helper created: private key PEMs (pki.ts,
 *                        tls.ts, openssl-ca.ts), PINs (softhsm.ts), API keys (apisix peer)
 *   disk-<pid>.txt       disk-backed directories tests let certd write to (allow_disk tests)
 * It also sets TMPDIR (and CERTD_TEST_SCRATCH_DIR) to a directory of this run alone, so every
 * scratch directory a test makes with os.tmpdir() is the run's own: the hygiene check scans that
 * and the registered disk directories, never anything else on the machine (another run's files,
 * or a checkout that happens to live under /tmp).
 * Without the variable every function here does nothing, so a test file run alone still works.
 * One file per process: appends from one process never interleave with another's.
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { captureLogs } from '../../src/log.js';

export const CAPTURE_ENV = 'CERTD_TEST_CAPTURE_DIR';
export const SCRATCH_ENV = 'CERTD_TEST_SCRATCH_DIR';

export type SecretKind = 'private-key' | 'pin' | 'api-key' | 'aws-secret-key';

export function captureDir(): string | undefined {
  const dir = process.env[CAPTURE_ENV];
  if (dir === undefined || dir === '') return undefined;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

function append(file: string, text: string): void {
  const dir = captureDir();
  if (dir === undefined) return;
  appendFileSync(join(dir, `${file}-${process.pid}.${file === 'secrets' ? 'jsonl' : file === 'disk' ? 'txt' : 'log'}`), text, { mode: 0o600 });
}

/** Output certd produced (or a test read from certd: a scrape, a status document). */
export function captureOutput(what: string, text: string): void {
  if (text === '') return;
  append('out', `\n### ${what.replace(/\n/g, ' ')}\n${text}${text.endsWith('\n') ? '' : '\n'}`);
}

/** A secret a test created; the hygiene check looks for it (and its encodings) in every output. */
export function registerSecret(kind: SecretKind, value: string | Buffer): void {
  const v = Buffer.isBuffer(value) ? value.toString('utf8') : value;
  if (v === '') return;
  append('secrets', `${JSON.stringify({ kind, value: v })}\n`);
}

/** A disk-backed directory a test let certd deploy into (allow_disk: true). */
export function registerDiskDir(path: string): void {
  append('disk', `${path}\n`);
}

// Every certd logger in this process writes through createLogger's destination: what it writes
// (after scrubbing, exactly as it would reach journald) is captured too. Silent loggers write nothing.
if (captureDir() !== undefined) captureLogs((line) => captureOutput('in-process log', line));

/**
 * The disk-backed directories the hygiene check searches for key files: the run's own scratch
 * directory (TMPDIR of every test process) and the directories tests registered. Nothing else:
 * what other processes keep under /tmp is not this run's doing.
 */
export function hygieneScanRoots(dir: string | undefined = captureDir()): string[] {
  const roots = new Set<string>();
  const scratch = process.env[SCRATCH_ENV];
  if (scratch !== undefined && scratch !== '') roots.add(scratch);
  if (dir !== undefined && existsSync(dir)) {
    for (const f of readdirSync(dir).filter((x) => x.startsWith('disk-'))) {
      for (const line of readFileSync(join(dir, f), 'utf8').split('\n')) if (line !== '') roots.add(line);
    }
  }
  return [...roots];
}
