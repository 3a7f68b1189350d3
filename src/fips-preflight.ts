/**
 * The FIPS pre-flight's verdict, run by bin/certd-launch when Node could not start with the
 * environment's FIPS settings (OPENSSL_CONF, OPENSSL_MODULES, --enable-fips/--force-fips):
 * this process runs without them and decides from the config's `fips_runtime`.
 *
 * - require, require-host: exit 2, naming OPENSSL_CONF, OpenSSL's own error and the fix;
 *   nothing is fetched or deployed.
 * - auto: a warning on stderr, exit 0; the launcher starts certd without the FIPS environment
 *   (certd then reports the runtime as not FIPS, as auto does).
 * - off: exit 0 silently.
 *
 * A config that cannot be read is not a reason to go on without FIPS: it exits 2 as well
 * (the config named). No config at all (the default path missing, no --config) means the
 * schema's default, auto.
 */
import { existsSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { loadConfig, configPath } from './config.js';
import { messageOf } from './errors.js';

/** --config F, --config=F, -c F, -cF, as the CLI's parser takes them; the first wins. */
export function configFlag(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? '';
    if (a === '--') return undefined;
    if (a === '--config' || a === '-c') return args[i + 1];
    if (a.startsWith('--config=')) return a.slice('--config='.length);
    if (a.startsWith('-c') && a.length > 2 && !a.startsWith('--')) return a.slice(2);
  }
  return undefined;
}

/** OpenSSL's lines of what Node printed, without Node's own stack noise; at most 6. */
export function opensslLines(output: string): string[] {
  const lines = output.split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
  const useful = lines.filter((l) => /error|openssl|fips|provider|self.?test|config/i.test(l) && !/^at |node:internal/.test(l));
  return (useful.length > 0 ? useful : lines).slice(0, 6).map((l) => (l.length > 300 ? `${l.slice(0, 300)}...` : l));
}

export interface PreflightVerdict {
  readonly code: 0 | 2;
  readonly message?: string;
}

export function preflightVerdict(args: readonly string[], env: NodeJS.ProcessEnv): PreflightVerdict {
  const conf = env['CERTD_PREFLIGHT_OPENSSL_CONF'] || '(not set)';
  const options = env['CERTD_PREFLIGHT_NODE_OPTIONS'] || '(not set)';
  const openssl = opensslLines(env['CERTD_PREFLIGHT_ERROR'] ?? '');
  const what =
    `Node cannot start with this FIPS environment (OPENSSL_CONF=${conf}, OPENSSL_MODULES=${env['CERTD_PREFLIGHT_OPENSSL_MODULES'] || '(not set)'}, NODE_OPTIONS=${options})` +
    (openssl.length > 0 ? `; OpenSSL says:\n  ${openssl.join('\n  ')}` : '');
  const fix =
    'fix: check that the fipsmodule.cnf the OPENSSL_CONF includes belongs to this fips.so ' +
    '(re-run `openssl fipsinstall -module <OPENSSL_MODULES>/fips.so -out <fipsmodule.cnf>` after any change to the provider), ' +
    'and that OPENSSL_MODULES names the folder holding fips.so';
  const flag = configFlag(args);
  let mode: string;
  try {
    const noConfig = flag === undefined && env['CERTD_CONFIG'] === undefined && !env['CERTD_CONFIG_YAML'] && !existsSync(configPath(undefined, env));
    mode = noConfig ? 'auto' : loadConfig(flag, env).config.fips_runtime;
  } catch (err) {
    return { code: 2, message: `certd: ${what}\ncertd: and the config did not load (${messageOf(err)}), so certd does not start without FIPS\ncertd: ${fix}\n` };
  }
  switch (mode) {
    case 'require':
    case 'require-host':
      return { code: 2, message: `certd: FIPS self-test failed: ${what}\ncertd: fips_runtime is ${mode}: certd does not start; nothing was fetched or deployed\ncertd: ${fix}\n` };
    case 'auto':
      return { code: 0, message: `certd: warning: FIPS not active: ${what}\ncertd: fips_runtime is auto: starting without OPENSSL_CONF and --enable-fips; set fips_runtime: require to refuse instead\n` };
    default:
      return { code: 0 };
  }
}

// Run as a program by bin/certd-launch.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const verdict = preflightVerdict(process.argv.slice(2), process.env);
  if (verdict.message) process.stderr.write(verdict.message);
  process.exitCode = verdict.code;
}
