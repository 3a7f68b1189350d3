import { pino, type Logger as PinoLogger } from 'pino';
import { scrub } from './errors.js';

/**
 * certd's logger: JSON lines (journald and CloudWatch read them as they are), or short readable
 * lines on a TTY. Redaction is by construction (Secret prints "[redacted]", Material shows only
 * public facts) and, as a last line of defence, every line passes through `scrub` before it is
 * written.
 */
export type Level = 'debug' | 'info' | 'warn' | 'error' | 'silent';

export interface Logger {
  /** How lines are written; a message may be shorter in text, where fields are hard to read. */
  readonly format?: 'json' | 'text' | undefined;
  debug(fields: Record<string, unknown>, msg: string): void;
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
  error(fields: Record<string, unknown>, msg: string): void;
  child(bindings: Record<string, unknown>): Logger;
}

export interface LogOptions {
  level?: Level;
  format?: 'json' | 'text' | 'auto';
  /** Where lines go; default process.stderr so that stdout stays for --json documents. */
  write?: (line: string) => void;
  clock?: { now(): Date };
}

/** Lines written by every logger of this process, when a capture is installed (tests). */
let capture: ((line: string) => void) | undefined;
export function captureLogs(fn: ((line: string) => void) | undefined): void {
  capture = fn;
}

function textLine(json: string): string {
  try {
    const { time, level, msg, pid: _pid, hostname: _host, ...rest } = JSON.parse(json) as Record<string, unknown>;
    const extra = Object.entries(rest)
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(' ');
    return `${String(time).slice(11, 23)} ${String(level).toUpperCase().padEnd(5)} ${String(msg)}${extra ? `  ${extra}` : ''}\n`;
  } catch {
    return json;
  }
}

export function createLogger(options: LogOptions = {}): Logger {
  const write = options.write ?? ((line: string) => void process.stderr.write(line));
  const fmt = options.format === 'auto' || options.format === undefined
    ? (process.stderr.isTTY ? 'text' : 'json')
    : options.format;
  const clock = options.clock;
  // The last line of defence: whatever reaches the stream is scrubbed before it is written.
  const destination = {
    write(chunk: string): void {
      const clean = scrub(chunk);
      capture?.(clean);
      write(fmt === 'text' ? textLine(clean) : clean);
    },
  };
  const root = pino(
    {
      level: options.level ?? 'info',
      base: null,
      messageKey: 'msg',
      formatters: { level: (label) => ({ level: label }) },
      timestamp: clock ? () => `,"time":"${clock.now().toISOString()}"` : pino.stdTimeFunctions.isoTime,
      serializers: { err: pino.stdSerializers.err, error: pino.stdSerializers.err },
    },
    destination,
  );
  const wrap = (l: PinoLogger): Logger => ({
    format: fmt,
    debug: (f, m) => l.debug(f, m),
    info: (f, m) => l.info(f, m),
    warn: (f, m) => l.warn(f, m),
    error: (f, m) => l.error(f, m),
    child: (b) => wrap(l.child(b)),
  });
  return wrap(root);
}

export const silentLogger: Logger = createLogger({ level: 'silent' });
