/**
 * `certd run` (bin/certd as a child process) against hostile control-socket clients: clients that
 * write requests as fast as the daemon takes them and never read an answer, a request line over
 * the cap, more connections than the limit, and SIGTERM while a flood is on. Each step waits for
 * what the daemon logs or answers; the only deadlines are generous ones on events that must come
 * (bench/control-flood.ts measures RSS and the time to exit).
 */
import assert from 'node:assert/strict';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CONTROL_LIMITS } from '../../src/control.js';
import { runCertd, shmDir } from '../helpers/cli.js';
import { type LogLine, spawnDaemon, waitForLog } from '../helpers/daemon.js';


const scratch = shmDir('control-flood');
const dir = scratch.dir;
const stateDir = join(dir, 'state');
const configPath = join(dir, 'config.yaml');
const socketPath = join(stateDir, 'control.sock');

function rssOf(pid: number): number {
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? Number.NaN) * 1024;
}

interface Flooder {
  socket: Socket;
  /** Resolves the first time the daemon's side is full (a write must wait for 'drain'). */
  saturated: Promise<void>;
  stop(): void;
}

/** Writes `line` without end and reads nothing; waits for 'drain' itself, so only certd can grow. */
function flood(line: string): Flooder {
  const socket = createConnection(socketPath);
  let stopped = false;
  let full: () => void = () => undefined;
  const saturated = new Promise<void>((resolve) => (full = resolve));
  const batch = line.repeat(1024);
  socket.pause();
  socket.on('error', () => undefined);
  const pump = (): void => {
    while (!stopped && !socket.destroyed) {
      if (!socket.write(batch)) {
        full();
        socket.once('drain', pump);
        return;
      }
    }
  };
  socket.on('connect', pump);
  return {
    socket,
    saturated,
    stop: () => {
      stopped = true;
      socket.destroy();
    },
  };
}

function connect(): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createConnection(socketPath);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

describe('control socket under a hostile flood (certd run child process)', { timeout: 180_000 }, () => {
  let child: ChildProcessWithoutNullStreams;
  const lines: LogLine[] = [];
  let exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  const flooders: Flooder[] = [];

  const logged = (pred: (l: LogLine) => boolean, what: string, from = 0, timeoutMs = 30_000): Promise<LogLine> => waitForLog(lines, pred, what, from, timeoutMs);

  before(async () => {
    writeFileSync(configPath, `state_dir: ${stateDir}
schedule: "0 0 1 1 *"
log: { level: info, format: json }
certificates:
  - name: web
    source: { type: local-ca, dns_names: [web.flood.certd.test], ttl: 24h }
    targets: [{ type: tmpfs, dir: ${dir}/out/web }]
`);
    ({ child, exited } = spawnDaemon(configPath, lines, { label: 'certd run stderr (control flood)' }));
    await logged((l) => l['msg'] === 'cycle finished' && l['trigger'] === 'start', 'the first cycle');
  });

  after(async () => {
    for (const f of flooders) f.stop();
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    scratch.cleanup();
  });

  it('non-reading clients are paused, then dropped; RSS stays bounded; others are still answered', async () => {
    const rssBefore = rssOf(child.pid!);
    const from = lines.length;
    for (let i = 0; i < 3; i++) flooders.push(flood('{"op":"status"}\n'));
    flooders.push(flood('{"op":"rotate","dryRun":true}\n'));
    await logged((l) => /control client is not reading its answers/.test(String(l['msg'])), 'that it paused a client', from);
    // Another client is answered while the flood is on.
    const s = await runCertd(['status', '--json', '--config', configPath]);
    assert.equal(s.code, 0, s.stderr);
    assert.equal((JSON.parse(s.stdout) as { daemon?: { pid: number } }).daemon?.pid, child.pid);
    // The stall limit (10 s) ends each flooder.
    const dropped = await logged((l) => /control client dropped: it left \d+ bytes of answers unread for 10000 ms/.test(String(l['msg'])), 'that it dropped a client', from, CONTROL_LIMITS.stallMs + 30_000);
    assert.equal(dropped['level'], 'warn');
    await Promise.all(flooders.map((f) => (f.socket.destroyed ? undefined : new Promise<void>((resolve) => f.socket.once('close', () => resolve())))));
    const rssAfter = rssOf(child.pid!);
    // Before the bound, 10 s of this flood took the daemon from 85 MiB to 1 GiB (bench scenario 6).
    assert.ok(rssAfter < rssBefore + 200 * 1024 * 1024, `RSS ${rssBefore} -> ${rssAfter} bytes under the flood`);
    flooders.length = 0;
  });

  it('a request line over the cap is refused with one error line', async () => {
    const s = await connect();
    const answer = new Promise<string>((resolve) => {
      let text = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => (text += d));
      s.on('error', () => undefined);
      s.on('close', () => resolve(text));
    });
    s.write(`{"op":"status","x":"${'x'.repeat(CONTROL_LIMITS.maxRequestBytes + 1024)}`);
    const doc = JSON.parse((await answer).trim()) as { ok: boolean; error: { code: string; message: string } };
    assert.deepEqual(doc, { ok: false, error: { code: 'E_CONFIG', message: `control request: a line longer than ${CONTROL_LIMITS.maxRequestBytes} bytes` } });
  });

  it(`connections past the limit (${CONTROL_LIMITS.maxConnections}) are refused; certd status says why and shows the state files`, async () => {
    const idle: Socket[] = [];
    try {
      // Each is counted once the daemon answered on it. The daemon may not have seen the close
      // of an earlier client yet: a refused one is tried again.
      while (idle.length < CONTROL_LIMITS.maxConnections) {
        const s = await connect();
        const line = new Promise<string>((resolve) => s.once('data', (d) => resolve(String(d))));
        s.write('{"op":"status"}\n');
        const answer = await line;
        if (/control connections open \(the limit\)/.test(answer)) {
          s.destroy();
          await sleep(50);
          continue;
        }
        assert.match(answer, /"daemon"/);
        idle.push(s);
      }
      // status says so and falls back to the state files.
      const r = await runCertd(['status', '--json', '--config', configPath]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, new RegExp(`the running certd did not answer \\(control connection refused: the running certd has ${CONTROL_LIMITS.maxConnections} control connections open \\(the limit\\)`));
      const doc = JSON.parse(r.stdout) as { certificates: { name: string }[]; daemon?: unknown };
      assert.equal(doc.daemon, undefined);
      assert.equal(doc.certificates[0]?.name, 'web');
    } finally {
      for (const s of idle) s.destroy();
    }
  });

  it('SIGTERM during a flood: certd run exits 0, the socket file gone', async () => {
    for (let i = 0; i < 4; i++) flooders.push(flood('{"op":"status"}\n'));
    await Promise.all(flooders.map((f) => f.saturated));
    child.kill('SIGTERM');
    // A generous deadline on an event that must come (before the bound it never did: the daemon
    // spun at 100% CPU until SIGKILL).
    const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const end = await exited;
    clearTimeout(killer);
    assert.deepEqual(end, { code: 0, signal: null }, 'certd run exited by itself, with 0');
    assert.ok(lines.some((l) => l['msg'] === 'certd stopped'));
    await assert.rejects(connect(), /ENOENT|ECONNREFUSED/);
  });
});
