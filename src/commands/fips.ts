import type { Command } from '../cli.js';
import { EXIT_FAIL, EXIT_OK } from '../cli.js';
import { KERNEL_FIPS_FLAG, probeFips, systemProbeDeps, type FipsReport } from '../fips.js';

function human(r: FipsReport): string {
  const yes = (b: boolean): string => (b ? 'yes' : 'no');
  const cli = r.openssl.cli;
  const lines = [
    `FIPS: ${r.fips ? 'yes' : 'NO'}`,
    `proven: ${r.level === 'host' ? 'host (FIPS runtime and kernel flag)' : r.level === 'runtime' ? 'runtime only (a working FIPS provider; the host kernel flag is not set)' : 'nothing'}`,
    `runtime: ${r.runtimeFips ? 'FIPS' : 'NOT FIPS'}: getFips()=${r.runtime.getFips}  SHA-256 works: ${yes(r.runtime.sha256)}  MD5 refused: ${yes(r.runtime.md5Refused)}`,
    `host: ${KERNEL_FIPS_FLAG}=${r.kernel.fipsEnabled ?? 'absent'}`,
    `openssl (node): ${r.openssl.node}  OPENSSL_CONF=${r.openssl.opensslConf ?? '(unset)'}  OPENSSL_MODULES=${r.openssl.opensslModules ?? '(unset)'}`,
    cli
      ? `openssl (system): ${cli.version}; providers: ${cli.providers.map((p) => `${p.name} (${[p.fullName, p.version, p.status].filter(Boolean).join(' ')})`).join(', ') || 'none listed'}; fips.so installed: ${yes(cli.fipsModuleInstalled)}`
      : 'openssl (system): CLI not installed',
    ...r.missing.map((m) => `missing: ${m}`),
    ...r.notes.map((n) => `note: ${n}`),
  ];
  return `${lines.join('\n')}\n`;
}

export const fipsCommand: Command = {
  summary: "certd fips: this host's and runtime's FIPS state (rule P-FIPS-RT).",
  usage: 'certd fips [--json] [--runtime]',
  help: `Options:
  --json      {"fips": bool, "runtimeFips": bool, "level": "host"|"runtime"|"none",
               "runtime": {"getFips", "sha256", "md5Refused"}, "kernel": {"fipsEnabled"},
               "openssl": {...}, "missing": ["..."], "notes": ["..."]}
  --runtime   exit 0 when the FIPS runtime is proven, whatever the kernel flag says
              (what fips_runtime: require asks for; a container does not own the kernel flag)

Two levels, reported separately:
  runtime   crypto.getFips() is 1, SHA-256 works, MD5 is refused (a working probe: getFips()
            alone proves nothing): a working FIPS provider is loaded and enforcing.
  host      that, and /proc/sys/crypto/fips_enabled reads 1 ("FIPS: yes").
The system openssl CLI's providers (name and version as OpenSSL prints them) are shown as
evidence (nginx uses that library) but do not change the verdict.
Exit 0 when host FIPS (with --runtime: when the runtime is proven), 1 when not.`,
  options: { json: { type: 'boolean' }, runtime: { type: 'boolean' } },
  async run(v, _p, io) {
    const report = probeFips({ ...systemProbeDeps, env: io.env }, { cli: true });
    io.out(v['json'] === true ? `${JSON.stringify(report, null, 2)}\n` : human(report));
    const ok = v['runtime'] === true ? report.runtimeFips : report.fips;
    return ok ? EXIT_OK : EXIT_FAIL;
  },
};
