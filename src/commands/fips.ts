import type { Command } from '../cli.js';
import { EXIT_FAIL, EXIT_OK } from '../cli.js';
import { probeFips, systemProbeDeps, type FipsReport } from '../fips.js';

function human(r: FipsReport): string {
  const yes = (b: boolean): string => (b ? 'yes' : 'no');
  const cli = r.openssl.cli;
  const lines = [
    `FIPS: ${r.fips ? 'yes' : 'NO'}`,
    `runtime: getFips()=${r.runtime.getFips}  SHA-256 works: ${yes(r.runtime.sha256)}  MD5 refused: ${yes(r.runtime.md5Refused)}`,
    `kernel: fips_enabled=${r.kernel.fipsEnabled ?? 'unreadable'}`,
    `openssl (node): ${r.openssl.node}  OPENSSL_CONF=${r.openssl.opensslConf ?? '(unset)'}  OPENSSL_MODULES=${r.openssl.opensslModules ?? '(unset)'}`,
    cli
      ? `openssl (system): ${cli.version}; providers: ${cli.providers.map((p) => `${p.name} (${p.status})`).join(', ') || 'none listed'}; fips.so installed: ${yes(cli.fipsModuleInstalled)}`
      : 'openssl (system): CLI not installed',
    ...r.missing.map((m) => `missing: ${m}`),
    ...r.notes.map((n) => `note: ${n}`),
  ];
  return `${lines.join('\n')}\n`;
}

export const fipsCommand: Command = {
  summary: "certd fips: this host's and runtime's FIPS state (rule P-FIPS-RT).",
  usage: 'certd fips [--json]',
  help: `Options:
  --json   {"fips": bool, "runtime": {"getFips", "sha256", "md5Refused"}, "kernel": {"fipsEnabled"},
            "openssl": {...}, "missing": ["..."], "notes": ["..."]}

FIPS means all of: crypto.getFips() is 1, SHA-256 works, MD5 is refused (a working probe:
getFips() alone proves nothing), and /proc/sys/crypto/fips_enabled reads 1. The system openssl
CLI's providers are shown as evidence (nginx uses that library) but do not change the verdict.
Exit 0 when FIPS, 1 when not.`,
  options: { json: { type: 'boolean' } },
  async run(v, _p, io) {
    const report = probeFips({ ...systemProbeDeps, env: io.env }, { cli: true });
    io.out(v['json'] === true ? `${JSON.stringify(report, null, 2)}\n` : human(report));
    return report.fips ? EXIT_OK : EXIT_FAIL;
  },
};
