/** What several commands share: loading the config, building the runtime, printing results. */
import { loadConfig, type LoadedConfig } from '../config.js';
import { createLogger, type Logger } from '../log.js';
import { buildRuntime, type Runtime, type RuntimeOptions } from '../runtime.js';

export function loggerFor(loaded: LoadedConfig | undefined, env: NodeJS.ProcessEnv): Logger {
  const level = (env['CERTD_LOG_LEVEL'] as 'debug' | 'info' | 'warn' | 'error' | undefined) ?? loaded?.config.log.level ?? 'info';
  const format = loaded?.config.log.format ?? 'auto';
  return createLogger({ level, format: env['CERTD_LOG_FORMAT'] as 'json' | 'text' | undefined ?? format });
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
