/**
 * The FIPS runtime probe (POLICY.md P-FIPS-RT) and its enforcement at start-up.
 *
 * `crypto.getFips()` alone proves nothing: with no FIPS provider, `setFips(true)` "succeeds" and
 * every later crypto call fails. So the verdict needs a working probe: getFips() is 1 AND
 * SHA-256 computes the right digest AND MD5 is refused; plus the kernel flag
 * /proc/sys/crypto/fips_enabled reads 1 (host FIPS).
 *
 * Two levels are proven separately, because in a container the kernel flag belongs to the host
 * (ECS/Fargate, Kubernetes) and says nothing about the crypto certd runs:
 * - `runtime`: a working FIPS provider is loaded and enforcing (the three facts above);
 *   `fips_runtime: require` asks for this;
 * - `host`: that, and the kernel flag reads 1; `fips_runtime: require-host` asks for this.
 * What OpenSSL reports (the version Node is
 * built with; the system `openssl` CLI's version and providers, which is what nginx links) is
 * evidence for the report, not part of the verdict: the CLI is another OpenSSL than Node's.
 */
import { execFileSync } from 'node:child_process';
import { createHash, getFips } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CertdError } from './errors.js';
import type { Logger } from './log.js';

export const RULE_FIPS_RT = 'P-FIPS-RT';
export const KERNEL_FIPS_FLAG = '/proc/sys/crypto/fips_enabled';

export const MISSING_PROVIDER =
  'no FIPS provider loaded (install and configure the OpenSSL FIPS provider: openssl fipsinstall, then .include fipsmodule.cnf and activate fips in OPENSSL_CONF)';
export const MISSING_SHA256 =
  'SHA-256 fails although getFips() reports 1: FIPS mode was switched on without a working FIPS provider (check OPENSSL_CONF, OPENSSL_MODULES and fipsmodule.cnf)';
export const MISSING_MD5_REFUSAL =
  'MD5 still works: non-approved algorithms are served (set default_properties = fips=yes in OPENSSL_CONF and do not activate the default provider)';
export const MISSING_KERNEL = 'kernel not in FIPS mode (fips=1 on the kernel command line)';

/** The fips_runtime levels: what start-up must prove before it touches material. */
export type FipsRuntimeMode = 'require-host' | 'require' | 'auto' | 'off';
/** True for the levels that refuse to start without FIPS (require, require-host). */
export function requiresFips(mode: string | undefined): boolean {
  return mode === 'require' || mode === 'require-host';
}

/** What a probe proved: the runtime and the host's kernel flag, the runtime alone, or nothing. */
export type FipsLevel = 'host' | 'runtime' | 'none';

/** The crypto and host facts the probe reads; tests inject their own. */
export interface FipsProbeDeps {
  getFips(): number;
  /** Hex digest of `data`; throws when the algorithm is refused or broken. */
  digest(algorithm: string, data: string): string;
  /** The content of /proc/sys/crypto/fips_enabled, or null when it cannot be read. */
  readKernelFlag(): string | null;
  /** OpenSSL version Node is built with (process.versions.openssl). */
  opensslVersion: string;
  /** Runs the `openssl` CLI; null when it is not installed. */
  opensslCli?: ((args: string[]) => string | null) | undefined;
  env: NodeJS.ProcessEnv;
}

export interface OpensslReport {
  /** The OpenSSL Node is built with. */
  node: string;
  /** $OPENSSL_CONF and $OPENSSL_MODULES as this process sees them (null when unset). */
  opensslConf: string | null;
  opensslModules: string | null;
  /** The system `openssl` CLI (the library nginx uses); null when not installed or not asked. */
  cli: {
    version: string;
    openssldir: string | null;
    modulesdir: string | null;
    /** Whether fips.so is present in MODULESDIR (installed, not necessarily configured). */
    fipsModuleInstalled: boolean;
    /** As `openssl list -providers` prints them: the id, the provider's own name and version. */
    providers: ProviderInfo[];
    fipsProviderActive: boolean;
  } | null;
}

export interface ProviderInfo {
  name: string;
  status: string;
  /** "OpenSSL FIPS Provider" (the provider's name parameter), when OpenSSL printed one. */
  fullName?: string;
  version?: string;
}

export interface FipsReport {
  /** Host FIPS: the runtime is proven AND the kernel flag reads 1 (level `host`). */
  fips: boolean;
  /** A working FIPS provider is proven (getFips 1, SHA-256 right, MD5 refused), whatever the kernel says. */
  runtimeFips: boolean;
  /** What was proven: `host` (runtime + kernel flag), `runtime` (provider only), `none`. */
  level: FipsLevel;
  runtime: { getFips: number; sha256: boolean; md5Refused: boolean };
  kernel: { fipsEnabled: 0 | 1 | null };
  openssl: OpensslReport;
  /** Why `fips` is false, one human sentence each (empty when fips is true); the runtime's reasons first, the kernel's last. */
  missing: string[];
  /** Observations that do not change the verdict (e.g. the system OpenSSL has no FIPS provider). */
  notes: string[];
}

const SHA256_ABC = 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad';

function runOpenssl(args: string[]): string | null {
  try {
    return execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 5000 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    const e = err as { stdout?: string };
    return typeof e.stdout === 'string' ? e.stdout : null;
  }
}

export const systemProbeDeps: FipsProbeDeps = {
  getFips: () => getFips(),
  digest: (algorithm, data) => createHash(algorithm).update(data).digest('hex'),
  readKernelFlag: () => {
    try {
      return readFileSync(KERNEL_FIPS_FLAG, 'utf8');
    } catch {
      return null;
    }
  },
  opensslVersion: process.versions.openssl ?? 'unknown',
  opensslCli: runOpenssl,
  env: process.env,
};

/** Parses `openssl list -providers` into name/status pairs. */
export function parseProviders(text: string): ProviderInfo[] {
  const out: ProviderInfo[] = [];
  let current: ProviderInfo | undefined;
  for (const line of text.split('\n')) {
    const id = /^ {2}(\S+)\s*$/.exec(line);
    if (id) {
      current = { name: id[1]!, status: 'unknown' };
      out.push(current);
      continue;
    }
    const status = /^\s+status:\s*(\S+)/.exec(line);
    if (status && current) current.status = status[1]!;
    const name = /^\s+name:\s*(.+?)\s*$/.exec(line);
    if (name && current) current.fullName = name[1]!;
    const version = /^\s+version:\s*(\S+)/.exec(line);
    if (version && current) current.version = version[1]!;
  }
  return out;
}

function cliReport(run: (args: string[]) => string | null): OpensslReport['cli'] {
  const va = run(['version', '-a']);
  if (va === null) return null;
  const field = (name: string): string | null => {
    const m = new RegExp(`^${name}: "?([^"\\n]*)"?`, 'm').exec(va);
    return m ? m[1]! : null;
  };
  const modulesdir = field('MODULESDIR');
  const providers = parseProviders(run(['list', '-providers']) ?? '');
  return {
    version: va.split('\n')[0]?.trim() ?? '',
    openssldir: field('OPENSSLDIR'),
    modulesdir,
    fipsModuleInstalled: modulesdir !== null && existsSync(join(modulesdir, 'fips.so')),
    providers,
    fipsProviderActive: providers.some((p) => p.name === 'fips' && p.status === 'active'),
  };
}

export interface ProbeOptions {
  /** Also ask the `openssl` CLI (slower; the report command wants it, start-up does not). */
  cli?: boolean;
}

/** The P-FIPS-RT probe. Pure apart from `deps`; never throws. */
export function probeFips(deps: FipsProbeDeps = systemProbeDeps, options: ProbeOptions = {}): FipsReport {
  let fipsFlag = 0;
  try {
    fipsFlag = deps.getFips();
  } catch {
    fipsFlag = 0;
  }
  let sha256 = false;
  try {
    sha256 = deps.digest('sha256', 'abc') === SHA256_ABC;
  } catch {
    sha256 = false;
  }
  let md5Refused = false;
  try {
    deps.digest('md5', 'abc');
  } catch {
    md5Refused = true;
  }
  const raw = deps.readKernelFlag()?.trim();
  const fipsEnabled: 0 | 1 | null = raw === undefined ? null : raw === '1' ? 1 : 0;

  const missing: string[] = [];
  if (fipsFlag !== 1) missing.push(MISSING_PROVIDER);
  else if (!sha256) missing.push(MISSING_SHA256);
  // With no FIPS provider MD5 works as a matter of course; say so only when it is news.
  if (!md5Refused && fipsFlag === 1) missing.push(MISSING_MD5_REFUSAL);
  if (fipsEnabled !== 1) {
    missing.push(fipsEnabled === null ? `${MISSING_KERNEL}; ${KERNEL_FIPS_FLAG} is missing (kernel without CONFIG_CRYPTO_FIPS, or not Linux)` : MISSING_KERNEL);
  }

  const cli = options.cli && deps.opensslCli ? cliReport(deps.opensslCli) : null;
  const notes: string[] = [];
  if (options.cli && cli === null) notes.push('the openssl CLI is not installed: the system OpenSSL (used by nginx) was not inspected');
  if (cli && !cli.fipsProviderActive) {
    notes.push(`the system OpenSSL (${cli.version}) has no active fips provider: nginx linked against it does not run FIPS-validated TLS`);
  }
  const runtimeOk = fipsFlag === 1 && sha256 && md5Refused;
  const hostOk = runtimeOk && fipsEnabled === 1;
  if (runtimeOk && !hostOk) {
    notes.push(`the FIPS runtime is proven (a working FIPS provider); the host's kernel flag ${KERNEL_FIPS_FLAG} is ${fipsEnabled === null ? 'absent' : String(fipsEnabled)}: host FIPS is not proven (in a container it belongs to the host)`);
  }
  return {
    fips: hostOk,
    runtimeFips: runtimeOk,
    level: hostOk ? 'host' : runtimeOk ? 'runtime' : 'none',
    runtime: { getFips: fipsFlag, sha256, md5Refused },
    kernel: { fipsEnabled },
    openssl: {
      node: deps.opensslVersion,
      opensslConf: deps.env['OPENSSL_CONF'] ?? null,
      opensslModules: deps.env['OPENSSL_MODULES'] ?? null,
      cli,
    },
    missing,
    notes,
  };
}

/** Whether a report meets a fips_runtime mode (auto and off accept anything). */
export function meetsMode(mode: FipsRuntimeMode, report: FipsReport): boolean {
  if (mode === 'require-host') return report.fips;
  if (mode === 'require') return report.runtimeFips;
  return true;
}

/**
 * What `certd run` and `certd rotate` call before touching any material, with the config's
 * `fips_runtime`:
 * - `require-host`: throws CertdError E_CONFIG (exit 2) unless the runtime and the kernel flag are proven;
 * - `require`: throws CertdError E_CONFIG (exit 2) unless a working FIPS provider is proven
 *   (the kernel flag is reported, not required: containers do not own it);
 * - `auto`: logs one warning when the probe fails, and goes on;
 * - `off`: probes nothing.
 * Returns the report (undefined for `off`) so the caller can publish it (metrics, status).
 */
export function enforceFipsRuntime(
  mode: FipsRuntimeMode,
  log: Logger,
  deps: FipsProbeDeps = systemProbeDeps,
  options: { warn?: boolean } = {},
): FipsReport | undefined {
  if (mode === 'off') return undefined;
  const report = probeFips(deps);
  const facts = { rule: RULE_FIPS_RT, level: report.level, runtime: report.runtime, kernel: report.kernel, openssl_conf: report.openssl.opensslConf, openssl_modules: report.openssl.opensslModules };
  if (report.fips) {
    log.info(facts, 'FIPS probe passed: FIPS runtime and host kernel flag proven');
    return report;
  }
  if (mode === 'require' && report.runtimeFips) {
    log.info(facts, `FIPS runtime probe passed (a working FIPS provider); host kernel flag ${KERNEL_FIPS_FLAG}: ${report.kernel.fipsEnabled ?? 'absent'}, not required (fips_runtime: require-host requires it)`);
    return report;
  }
  if (requiresFips(mode)) {
    const reasons = mode === 'require' ? report.missing.filter((m) => !m.startsWith(MISSING_KERNEL)) : report.missing;
    const what = mode === 'require' ? 'the runtime is not FIPS' : 'this host and runtime are not FIPS';
    throw new CertdError('E_CONFIG', `fips_runtime: ${mode}: ${what}: ${reasons.join('; ')}${fipsConfHint(report)}`, {
      permanent: true,
      details: { ...facts, missing: reasons },
    });
  }
  // Said once per process (certd run probes again on every SIGHUP; nothing has changed then).
  if (options.warn === false) {
    log.debug({ rule: RULE_FIPS_RT, missing: report.missing }, 'still running without FIPS (fips_runtime: auto)');
  } else if (log.format === 'text') {
    // On a terminal the JSON fields would make one line of 600 characters: the gist, and where the rest is.
    log.warn({}, `not FIPS (fips_runtime: auto): ${report.missing.map(gist).join('; ')}; run certd fips for how to fix it, or set fips_runtime: require to refuse`);
  } else {
    log.warn({ rule: RULE_FIPS_RT, missing: report.missing, runtime: report.runtime, kernel: report.kernel }, 'running without FIPS (fips_runtime: auto); set fips_runtime: require to refuse');
  }
  return report;
}

/** "no FIPS provider loaded (install ...)" -> "no FIPS provider loaded". */
function gist(missing: string): string {
  return missing.split(/ \(|: |; /)[0] ?? missing;
}

/** Where OpenSSL was told to look, for a refusal message: the file to check is named. */
function fipsConfHint(report: FipsReport): string {
  const conf = report.openssl.opensslConf;
  const modules = report.openssl.opensslModules;
  if (!conf && !modules) return ' (OPENSSL_CONF and OPENSSL_MODULES are unset)';
  return ` (OPENSSL_CONF=${conf ?? '(unset)'}, OPENSSL_MODULES=${modules ?? '(unset)'}: check the fipsmodule.cnf it includes, e.g. rerun openssl fipsinstall)`;
}

/** The message of a probe, for callers that report rather than throw. */
export function describeFips(report: FipsReport): string {
  if (report.fips) return 'FIPS (host): the runtime probe passed and the kernel is in FIPS mode';
  if (report.runtimeFips) return `FIPS (runtime): a working FIPS provider is proven; the host kernel flag is ${report.kernel.fipsEnabled ?? 'absent'} (host FIPS not proven)`;
  return `not FIPS: ${report.missing.join('; ')}`;
}
