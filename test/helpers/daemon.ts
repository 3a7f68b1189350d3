// `certd run` as a child process for integration tests: its JSON log parsed line by line into an
// array the test reads, a wait for a line that names what it waited for, and the whole stderr
// handed to the suite's secret-hygiene check once the daemon has exited.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { captureOutput } from './capture.js';
import { certdCommand } from './cli.js';

export type LogLine = Record<string, unknown>;

export interface DaemonChild {
  child: ChildProcessWithoutNullStreams;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Starts `certd run --config configPath` (JSON log at info unless `env` says otherwise); every
 * stderr line is pushed to `lines` (parsed, or `{ raw }` when it is not JSON). `label` names the
 * log in the hygiene check's findings.
 */
export function spawnDaemon(configPath: string, lines: LogLine[], opts: { label: string; env?: NodeJS.ProcessEnv; launcher?: boolean }): DaemonChild {
  const cmd = certdCommand(['run', '--config', configPath], opts.launcher);
  const child = spawn(cmd.file, cmd.args, {
    env: { ...process.env, CERTD_LOG_FORMAT: 'json', CERTD_LOG_LEVEL: 'info', ...cmd.env, ...opts.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let buffer = '';
  let all = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    all += chunk;
    buffer += chunk;
    let nl: number;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      try {
        lines.push(JSON.parse(line) as LogLine);
      } catch {
        lines.push({ raw: line });
      }
    }
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  // The whole log in one piece, for the suite's secret-hygiene check.
  void exited.then(() => captureOutput(opts.label, all));
  return { child, exited };
}

/** Waits (polling the log) for a line matching `pred` among those after `from`. */
export async function waitForLog(lines: readonly LogLine[], pred: (l: LogLine) => boolean, what: string, from: number, timeoutMs: number): Promise<LogLine> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = lines.slice(from).find(pred);
    if (hit) return hit;
    if (Date.now() > deadline) {
      throw new Error(`the daemon did not log ${what} within ${timeoutMs} ms; its last lines:\n${lines.slice(-15).map((l) => JSON.stringify(l)).join('\n')}`);
    }
    await sleep(25);
  }
}
