import type { Command } from '../cli.js';
import { EXIT_FAIL, EXIT_OK, EXIT_USAGE } from '../cli.js';
import { CertdError } from '../errors.js';
import { acquireLock } from '../lock.js';
import { runCycle, type CycleReport } from '../rotate.js';
import { openRuntime, shortFingerprint, table } from './common.js';

export function printCycle(report: CycleReport, json: boolean, out: (t: string) => void): void {
  if (json) {
    out(`${JSON.stringify(report, null, 2)}\n`);
    return;
  }
  const rows = [['CERTIFICATE', 'RESULT', 'FINGERPRINT', 'NOT AFTER', 'DETAIL']];
  for (const c of report.certificates) {
    const detail = c.error ? `${c.error.code}: ${c.error.message}` : (c.reason ?? (c.result === 'deployed' ? `from ${c.origin ?? '?'}` : ''));
    rows.push([c.name, c.result, shortFingerprint(c.fingerprint), c.notAfter ?? '-', detail]);
  }
  out(table(rows));
  for (const r of report.reloads) out(`reload: ${r.command}: ${r.result}${r.error ? ` (${r.error})` : ''}\n`);
  const failed = report.certificates.filter((c) => c.result === 'failed').length;
  out(`${report.certificates.length} certificate(s), ${failed} failed, ${report.durationMs} ms${report.dryRun ? ' (dry run: nothing deployed)' : ''}\n`);
}

export const rotateCommand: Command = {
  summary: 'certd rotate --now: one full cycle (fetch, check, deploy, reload, verify) now.',
  usage: 'certd rotate --now [--config F] [--cert NAME] [--dry-run] [--json]',
  help: `Options:
  --now          required: run the cycle now
  --config F     config file (default: $CERTD_CONFIG, else /etc/certd/config.yaml)
  --cert NAME    only this certificate
  --dry-run      fetch and check, report what would be deployed; change nothing
  --json         print the cycle report as JSON on stdout

A certificate that fails is reported and the others are still processed. Material that fails
the policy is never deployed; a failed reload test or verification rolls back to the previous
set. Exit 0 when every certificate is deployed or unchanged, 1 when any failed, 2 on a usage or
configuration error.`,
  options: {
    now: { type: 'boolean' },
    config: { type: 'string' },
    cert: { type: 'string' },
    'dry-run': { type: 'boolean' },
    json: { type: 'boolean' },
  },
  async run(v, _p, io) {
    if (v['now'] !== true) {
      io.err('certd rotate: --now is required (the daemon, certd run, rotates on its schedule)\n');
      return EXIT_USAGE;
    }
    const json = v['json'] === true;
    const rt = await openRuntime(v['config'], io.env);
    const lock = v['dry-run'] === true ? undefined : await acquireLock(rt.stateDir, 'certd rotate --now').catch((err: unknown) => {
      throw err instanceof CertdError ? err : new CertdError('E_LOCKED', String(err));
    });
    try {
      const progress = io.isTTY && !json && rt.certificates.length > 1
        ? (done: number, total: number) => io.err(`\r${done}/${total} certificates checked`)
        : undefined;
      const report = await runCycle(rt, { only: v['cert'] as string | undefined, dryRun: v['dry-run'] === true, onProgress: progress });
      if (progress) io.err('\n');
      printCycle(report, json, io.out);
      return report.ok ? EXIT_OK : EXIT_FAIL;
    } finally {
      await lock?.release();
      await rt.close();
    }
  },
};
