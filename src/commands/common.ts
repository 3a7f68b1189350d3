/** What several commands share: loading the config, building the runtime, printing results. */
import type { Io } from '../cli.js';
import { loadConfig, type LoadedConfig } from '../config.js';
import { CertdError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { buildRuntime, type Runtime, type RuntimeOptions } from '../runtime.js';

const LEVELS = ['debug', 'info', 'warn', 'error'] as const;
const FORMATS = ['json', 'text', 'auto'] as const;

function oneOf<T extends string>(env: NodeJS.ProcessEnv, name: string, allowed: readonly T[]): T | undefined {
  const value = env[name];
  if (value === undefined || value === '') return undefined;
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new CertdError('E_CONFIG', `reading the environment: ${name} "${value}": expected one of ${allowed.join(', ')} (or unset it to use the config's log settings)`);
}

/** CERTD_LOG_LEVEL and CERTD_LOG_FORMAT, checked: a value certd does not know is a usage error (exit 2). */
export function logEnv(env: NodeJS.ProcessEnv): { level?: (typeof LEVELS)[number]; format?: (typeof FORMATS)[number] } {
  const level = oneOf(env, 'CERTD_LOG_LEVEL', LEVELS);
  const format = oneOf(env, 'CERTD_LOG_FORMAT', FORMATS);
  return { ...(level ? { level } : {}), ...(format ? { format } : {}) };
}

/** The config's log settings, overridden by CERTD_LOG_LEVEL and CERTD_LOG_FORMAT. */
export function loggerFor(loaded: LoadedConfig | undefined, env: NodeJS.ProcessEnv): Logger {
  const fromEnv = logEnv(env);
  return createLogger({ level: fromEnv.level ?? loaded?.config.log.level ?? 'info', format: fromEnv.format ?? loaded?.config.log.format ?? 'auto' });
}

/** The line every command that deploys or reports prints for a config without certificates. */
export function emptyConfigWarning(loaded: LoadedConfig): string | undefined {
  if (loaded.config.certificates.length > 0) return undefined;
  return `config ${loaded.path} configures no certificates: certd has nothing to deploy (add entries under "certificates:", see config.example.yaml)`;
}

export function warnIfEmpty(loaded: LoadedConfig, io: Pick<Io, 'err'>): void {
  const warning = emptyConfigWarning(loaded);
  if (warning) io.err(`warning: ${warning}\n`);
}

export async function openRuntime(configFlag: unknown, env: NodeJS.ProcessEnv, extra: Partial<RuntimeOptions> = {}): Promise<Runtime> {
  const loaded = loadConfig(typeof configFlag === 'string' ? configFlag : undefined, env);
  const log = extra.log ?? loggerFor(loaded, env);
  return buildRuntime(loaded, { env, ...extra, log });
}

/** A fixed-width table for humans. */
export function table(rows: string[][]): string {
  if (rows.length === 0) return '';
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return `${rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n')}\n`;
}

export function shortFingerprint(fp: string | undefined): string {
  return fp ? `${fp.slice(0, 23)}…` : '-';
}
