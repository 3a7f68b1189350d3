/**
 * One process of scenario 5's simulated fleet: runs a Daemon per config path given on the
 * command line, each with its own runtime, SDK clients, schedule and state_dir, exactly as
 * `certd run` builds them. Talks to its parent over IPC:
 *   -> {type:'ready', daemons, failedCertificates, firstError}     every daemon's first cycle ended
 *   <- {type:'expect', versions: {cert: VersionId}}                 the versions of a mass rotation
 *   -> {type:'done', daemon, at}                                    a daemon deployed all of them
 *   -> {type:'cycle', daemon, failed, throttled, firstError}        a cycle ended with failures
 *   <- {type:'stop'}                                                stop every daemon, then exit
 */
import { Daemon } from '../src/daemon.js';
import { createLogger } from '../src/log.js';
import type { CycleReport } from '../src/rotate.js';

const configs = process.argv.slice(2);
const send = (m: unknown): void => void process.send?.(m);
let expected: Record<string, string> | undefined;
const done = new Set<number>();
/** Per daemon, the certificates already seen at their expected version. */
const seen = new Map<number, Set<string>>();

const log = createLogger({ level: 'error', write: () => undefined });
const daemons = configs.map((configPath) => new Daemon({ configPath, log, controlSocket: false, metricsListen: false }));

function onCycle(i: number, report: CycleReport): void {
  const failed = report.certificates.filter((c) => c.result === 'failed');
  if (failed.length > 0) {
    send({ type: 'cycle', daemon: i, failed: failed.length, throttled: failed.filter((c) => /throttl/i.test(c.error?.message ?? '')).length, firstError: failed[0]?.error?.message });
  }
  if (!expected || done.has(i)) return;
  const mine = seen.get(i) ?? new Set<string>();
  seen.set(i, mine);
  for (const c of report.certificates) {
    if (c.result !== 'failed' && c.version !== undefined && c.version === expected[c.name]) mine.add(c.name);
  }
  if (mine.size === Object.keys(expected).length) {
    done.add(i);
    send({ type: 'done', daemon: i, at: Date.now() });
  }
}

daemons.forEach((d, i) => d.on('cycle', (report) => onCycle(i, report)));

process.on('message', (m: { type: string; versions?: Record<string, string> }) => {
  if (m.type === 'expect') {
    expected = m.versions;
    seen.clear();
    done.clear();
  } else if (m.type === 'stop') {
    void Promise.all(daemons.map((d) => d.stop().catch(() => undefined))).then(() => process.exit(0));
  }
});

const started = await Promise.allSettled(daemons.map((d) => d.start()));
let failedCertificates = 0;
let firstError: string | undefined;
daemons.forEach((d, i) => {
  const s = started[i];
  if (s?.status === 'rejected') {
    firstError ??= s.reason instanceof Error ? s.reason.message : String(s.reason);
    return;
  }
  const failed = d.status().lastCycle?.failed ?? [];
  failedCertificates += failed.length;
});
send({ type: 'ready', daemons: daemons.length, startFailures: started.filter((s) => s.status === 'rejected').length, failedCertificates, firstError });
