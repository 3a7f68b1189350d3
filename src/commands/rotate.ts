import type { Command, Io } from '../cli.js';
import { EXIT_FAIL, EXIT_OK, EXIT_USAGE } from '../cli.js';
import { loadConfig } from '../config.js';
import { askDaemon } from '../control.js';
import { CertdError } from '../errors.js';
import { enforceFipsRuntime } from '../fips.js';
import { acquireLock, warnTightened } from '../lock.js';
import { runCycle, type CycleReport } from '../rotate.js';
import { openRuntime, shortFingerprint, table, warnIfEmpty } from './common.js';

export function printCycle(report: CycleReport, json: boolean, out: (t: string) => void): void {
  if (json) {
    out(`${JSON.stringify(report, null, 2)}\n`);
    return;
  }
  // FINGERPRINT and NOT AFTER are what is served; a failed row names what it refused in DETAIL.
  const rows = [['CERTIFICATE', 'RESULT', 'FINGERPRINT', 'NOT AFTER', 'DETAIL']];
  for (const c of report.certificates) {
    const refused = c.refused ? `refused ${shortFingerprint(c.refused.fingerprint)}: ` : '';
    const detail = c.error ? `${refused}${c.error.code}: ${c.error.message}` : (c.reason ?? (c.result === 'deployed' ? `from ${c.origin ?? '?'}` : ''));
    rows.push([c.name, c.result, shortFingerprint(c.fingerprint), c.notAfter ?? '-', detail]);
  }
  out(table(rows));
  for (const c of report.certificates) {
    for (const t of c.leftBehind ?? []) out(`${c.name}: no longer deployed to ${t}; what certd wrote there stays: remove it once nothing reads it\n`);
  }
  for (const r of report.reloads) out(`reload: ${r.command}: ${r.result}${r.error ? ` (${r.error})` : ''}\n`);
  const failed = report.certificates.filter((c) => c.result === 'failed').length;
  out(`${report.certificates.length} certificate(s), ${failed} failed, ${report.durationMs} ms${report.dryRun ? ' (dry run: nothing deployed)' : ''}\n`);
}

export const rotateCommand: Command = {
  summary: 'certd rotate --now: one full cycle (fetch, check, deploy, reload, verify) now.',
  usage: 'certd rotate --now [--config F] [--cert NAME] [--force] [--dry-run] [--json]',
  help: `Options:
  --now              required: run the cycle now
  -c, --config F     config file (default: $CERTD_CONFIG, else /etc/certd/config.yaml)
  --cert NAME        only this certificate
  --force            deploy although nothing changed: issuers (local-ca, pkcs11-ca, kms-ca,
                     aws-private-ca) issue a new certificate and key before theirs is due (a key
                     believed compromised), and every other certificate is written to its
                     targets again
  --dry-run          fetch and check, report what would be deployed; change nothing
  --json             print the cycle report as JSON on stdout

A certificate that fails is reported and the others are still processed. Material that fails
the policy is never deployed; a failed reload test or verification rolls back to the previous
set. Exit 0 when every certificate is deployed or unchanged, 1 when any failed, 2 on a usage or
configuration error.

When certd run is running on the same state_dir, the cycle is asked of it over its control
socket (state_dir/control.sock) and its report printed here, with the same output and exit
codes; otherwise the cycle runs in this process under the deployment lock. Progress is shown
on a terminal for more than one certificate, never with --json or when piped.`,
  options: {
    now: { type: 'boolean' },
    config: { type: 'string' },
    cert: { type: 'string' },
    'dry-run': { type: 'boolean' },
    force: { type: 'boolean' },
    json: { type: 'boolean' },
  },
  async run(v, _p, io) {
    if (v['now'] !== true) {
      io.err('certd rotate: --now is required (the daemon, certd run, rotates on its schedule)\n');
      return EXIT_USAGE;
    }
    const request: RotateArgs = { config: v['config'] as string | undefined, cert: v['cert'] as string | undefined, dryRun: v['dry-run'] === true, force: v['force'] === true, json: v['json'] === true };
    return (await rotateViaDaemon(request, io)) ?? rotateStandalone(request, io);
  },
};

export interface RotateArgs {
  config: string | undefined;
  cert: string | undefined;
  dryRun: boolean;
  /** --force: see CycleOptions.force. */
  force?: boolean | undefined;
  json: boolean;
}

/**
 * Progress goes to stderr only for a human watching: stdout is a TTY, the output is not --json,
 * and more than one certificate is processed. Otherwise undefined: no progress at all.
 */
export function progressReporter(io: Pick<Io, 'isTTY' | 'err'>, json: boolean, certificates: number): ((done: number, total: number) => void) | undefined {
  if (!io.isTTY || json || certificates <= 1) return undefined;
  return (done, total) => io.err(`\r${done}/${total} certificates checked`);
}

/**
 * Asks a running `certd run` (same state_dir) to run the cycle, so the two never race. Returns
 * the exit code, or undefined when no daemon listens (then the caller works standalone).
 */
export async function rotateViaDaemon(a: RotateArgs, io: Io): Promise<number | undefined> {
  const loaded = loadConfig(a.config, io.env);
  warnIfEmpty(loaded, io);
  const count = a.cert === undefined ? loaded.config.certificates.length : 1;
  const progress = progressReporter(io, a.json, count);
  const answer = await askDaemon(
    loaded.resolvePath(loaded.config.state_dir),
    { op: 'rotate', ...(a.cert !== undefined ? { cert: a.cert } : {}), dryRun: a.dryRun, ...(a.force ? { force: true } : {}), progress: progress !== undefined },
    { onProgress: progress && ((p) => progress(p.done, p.total)) },
  );
  if (answer === undefined) return undefined;
  if (progress) io.err('\n');
  const report = answer as CycleReport;
  printCycle(report, a.json, io.out);
  return report.ok ? EXIT_OK : EXIT_FAIL;
}

/** The cycle in this process, under the deployment lock (refused while a daemon holds it). */
export async function rotateStandalone(a: RotateArgs, io: Io): Promise<number> {
  const json = a.json;
  const rt = await openRuntime(a.config, io.env);
  try {
    // P-FIPS-RT: before any material is fetched (fips_runtime: require refuses with exit 2).
    enforceFipsRuntime(rt.loaded.config.fips_runtime, rt.log);
  } catch (err) {
    await rt.close();
    throw err;
  }
  const lock = a.dryRun ? undefined : await acquireLock(rt.stateDir, 'certd rotate --now', (t) => warnTightened(rt.log, t)).catch((err: unknown) => {
    throw err instanceof CertdError ? err : new CertdError('E_LOCKED', String(err));
  });
  try {
    const progress = progressReporter(io, json, a.cert === undefined ? rt.certificates.length : 1);
    const report = await runCycle(rt, { only: a.cert, dryRun: a.dryRun, force: a.force === true, onProgress: progress });
    if (progress) io.err('\n');
    printCycle(report, json, io.out);
    return report.ok ? EXIT_OK : EXIT_FAIL;
  } finally {
    await lock?.release();
    await rt.close();
  }
}
