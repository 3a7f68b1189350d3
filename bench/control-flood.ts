/**
 * Scenario 6: the control socket under a flood of clients that write requests and never read
 * the answers. One `certd run` (one local-ca certificate, tmpfs target) is started; once its first
 * cycle is done, FLOODERS clients each write `{"op":"status"}` lines (and one writes dry-run
 * rotate requests) as fast as the daemon takes them, for 12 s (past the 10 s after which the
 * daemon drops a client that leaves its answers unread), reading nothing; EXTRA more clients try
 * to connect on top. The daemon's RSS (/proc/<pid>/status VmRSS) is sampled every 250 ms. Then a
 * fresh set of flooders connects, and one second into their flood, SIGTERM: the time until the
 * process has exited (SIGKILL after 30 s, reported as such).
 *
 * A flooder writes with backpressure of its own (it waits for 'drain'), so what grows is the
 * daemon, never this process. A safety stop ends the flood early when the daemon passes 1 GiB.
 */
import { join } from 'node:path';
import { createConnection, type Socket } from 'node:net';
import { configText, memoryOf, mib, ms, nowMs, type Row, type Scenario, shm, sleep, startDaemon, times, verdict } from './common.js';
import { writeFileSync } from 'node:fs';

const FLOODERS = 4;
const EXTRA = 64;
const SAFETY_RSS = 1024 * 1024 * 1024;

interface Flooder {
  socket: Socket;
  /** Bytes the daemon's side took (write callbacks that succeeded). */
  written: number;
  /** The daemon closed the connection while the flood was on. */
  closedByDaemon: boolean;
}

function flood(path: string, line: string, stop: AbortSignal): Flooder {
  const socket = createConnection(path);
  const f: Flooder = { socket, written: 0, closedByDaemon: false };
  const batch = line.repeat(Math.ceil(16384 / line.length));
  socket.pause(); // never read: answers pile up on the daemon's side
  socket.on('error', () => undefined);
  socket.on('close', () => {
    if (!stop.aborted) f.closedByDaemon = true;
  });
  const pump = (): void => {
    while (!stop.aborted && !socket.destroyed) {
      const ok = socket.write(batch, (err) => {
        if (!err) f.written += batch.length;
      });
      if (!ok) {
        socket.once('drain', pump);
        return;
      }
    }
  };
  socket.on('connect', pump);
  return f;
}

/** Connects and reports the first line the daemon sends (the refusal), or '' when it accepted and said nothing. */
function probe(path: string): Promise<{ socket: Socket; first: Promise<string> }> {
  return new Promise((resolve) => {
    const socket = createConnection(path);
    socket.on('error', () => undefined);
    const first = new Promise<string>((r) => {
      let text = '';
      socket.setEncoding('utf8');
      socket.on('data', (d: string) => {
        text += d;
        if (text.includes('\n')) r(text.slice(0, text.indexOf('\n')));
      });
      socket.on('close', () => r(text));
      setTimeout(() => r(text), 2000).unref();
    });
    socket.on('connect', () => resolve({ socket, first }));
    socket.on('error', () => resolve({ socket, first }));
  });
}

export const controlFlood: Scenario = {
  id: 6,
  title: 'control socket: non-reading flood, RSS and SIGTERM',
  async run({ quick, log }) {
    // Longer than CONTROL_LIMITS.stallMs (10 s), so that the drop shows.
    const floodMs = quick ? 5_000 : 12_000;
    const scratch = shm('flood');
    try {
      const stateDir = join(scratch.dir, 'state');
      const config = join(scratch.dir, 'config.yaml');
      writeFileSync(config, configText({
        stateDir,
        logLevel: 'warn',
        certificates: [{ name: 'web', source: { type: 'local-ca', dns_names: ['web.flood.certd.test'], ttl: '24h' }, targets: [{ type: 'tmpfs', dir: join(scratch.dir, 'out') }] }],
      }));
      const daemon = startDaemon(config);
      try {
        await daemon.firstCycle;
        await sleep(3_000);
        const before = memoryOf(daemon.pid).rss;
        log(`daemon pid ${daemon.pid}, RSS ${mib(before)}; flooding for ${floodMs} ms`);
        const path = join(stateDir, 'control.sock');
        const stop = new AbortController();
        const flooders = [
          ...Array.from({ length: FLOODERS }, () => flood(path, '{"op":"status"}\n', stop.signal)),
          flood(path, '{"op":"rotate","dryRun":true}\n', stop.signal),
        ];
        await sleep(200);
        const extra = await Promise.all(Array.from({ length: EXTRA }, () => probe(path)));
        const firsts = await Promise.all(extra.map((e) => e.first));
        const refused = firsts.filter((l) => /"ok":false/.test(l)).length;
        for (const e of extra) e.socket.destroy();
        let peak = before;
        let safety = false;
        const t0 = nowMs();
        while (nowMs() - t0 < floodMs) {
          await sleep(250);
          const rss = memoryOf(daemon.pid).rss;
          peak = Math.max(peak, rss);
          if (rss > SAFETY_RSS) {
            safety = true;
            log(`RSS ${mib(rss)} passed the safety stop of ${mib(SAFETY_RSS)}: flood ended early`);
            break;
          }
        }
        const during = memoryOf(daemon.pid).rss;
        const written = flooders.reduce((n, f) => n + f.written, 0);
        const dropped = flooders.filter((f) => f.closedByDaemon).length;
        log(`RSS ${mib(during)} at the end of the flood (peak ${mib(peak)}); flooders wrote ${mib(written)}, ${dropped} of ${flooders.length} dropped by the daemon; ${refused} of ${EXTRA} extra connections refused`);
        // SIGTERM with a flood on: fresh flooders (the first ones may have been dropped).
        const fresh = Array.from({ length: FLOODERS }, () => flood(path, '{"op":"status"}\n', stop.signal));
        await sleep(1_000);
        const t1 = nowMs();
        process.kill(daemon.pid, 'SIGTERM');
        const killer = setTimeout(() => process.kill(daemon.pid, 'SIGKILL'), 30_000);
        const end = await daemon.exited;
        clearTimeout(killer);
        const exitMs = nowMs() - t1;
        stop.abort();
        for (const f of [...flooders, ...fresh]) f.socket.destroy();
        const killed = end.signal === 'SIGKILL';
        log(`exited ${killed ? 'only when SIGKILLed after 30 s' : `with code ${String(end.code)}`} ${ms(exitMs)} after SIGTERM`);
        const rows: Row[] = [
          { measure: 'daemon RSS before the flood', certd: mib(before) },
          { measure: `daemon RSS after ${(floodMs / 1000).toFixed(0)} s of ${flooders.length} non-reading clients`, certd: mib(during), against: 'before', other: mib(before), ratio: times(during / before), goal: '< 2x before', met: during < 2 * before && !safety },
          { measure: 'peak RSS during the flood', certd: mib(peak) },
          { measure: 'request bytes the flooders got in', certd: mib(written) },
          { measure: 'flooding clients dropped by the daemon', certd: `${dropped} of ${flooders.length}` },
          { measure: `extra connections refused (${EXTRA} on top of the flood)`, certd: `${refused} of ${EXTRA}` },
          { measure: 'time to exit after SIGTERM, flood still on', certd: killed ? '> 30 s (SIGKILLed)' : ms(exitMs), goal: '< 5 s', met: !killed && exitMs < 5_000 },
        ];
        return {
          goal: 'RSS under a non-reading flood stays within 2x of idle; SIGTERM exits within 5 s',
          met: verdict(rows),
          rows,
          figures: { rssBefore: before, rssAfter: during, rssPeak: peak, ratio: during / before, safetyStop: safety, bytesWritten: written, dropped, flooders: flooders.length, extra: EXTRA, refused, exitMs, exitCode: end.code, exitSignal: end.signal, floodMs },
          notes: safety ? [`the flood was stopped early: the daemon passed ${mib(SAFETY_RSS)}`] : [],
        };
      } finally {
        await daemon.stop();
      }
    } finally {
      scratch.cleanup();
    }
  },
};
