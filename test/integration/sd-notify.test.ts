// sd_notify against real unix datagram listeners: the notifier in this process, the notifier in
// a child process (the sender's pid is what NotifyAccess=main checks, read here with
// SO_PASSCRED by an independent Python listener), the abstract namespace, and the watchdog
// interval.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { attachNotifier, createNotifier, notifySocketAddress, watchdogIntervalMs } from '../../src/sd-notify.js';
import { Daemon } from '../../src/daemon.js';
import { createLogger } from '../../src/log.js';
import { startAwsPeer } from '../peers/aws-peer.js';
import { awsEnv } from './aws-fixtures.js';

interface DgramSocket {
  on(event: 'message', listener: (buf: Buffer) => void): void;
  on(event: 'error', listener: (err: Error) => void): void;
  bind(path: string): void;
  send(buf: Buffer, offset: number, length: number, path: string, callback: (err?: Error) => void): void;
  close(): void;
}
const unix = createRequire(import.meta.url)('unix-dgram') as { createSocket(type: 'unix_dgram'): DgramSocket };

const moduleUrl = new URL('../../src/sd-notify.js', import.meta.url).href;

/** A bound unix datagram socket that collects what it receives. */
function listen(path: string): { messages: string[]; next(n: number, ms?: number): Promise<string[]>; close(): void } {
  const messages: string[] = [];
  const socket = unix.createSocket('unix_dgram');
  let bindError: Error | undefined;
  socket.on('error', (err) => (bindError = err));
  socket.on('message', (buf) => messages.push(buf.toString('utf8')));
  socket.bind(path);
  if (bindError) throw bindError;
  return {
    messages,
    async next(n, ms = 5000) {
      const deadline = Date.now() + ms;
      while (messages.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      return messages.slice(0, n);
    },
    close: () => socket.close(),
  };
}

function runNode(script: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; pid: number; stderr: string; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, pid: child.pid ?? -1, stderr, stdout }));
  });
}

/** The script a daemon would run: the module's calls in a fresh process, then a clean exit. */
const CHILD_SCRIPT = `
import { createNotifier } from ${JSON.stringify(moduleUrl)};
const n = createNotifier();
n.ready('serving 2 certificates');
n.watchdog();
n.status('line one\\nWATCHDOG=1');
n.stopping();
console.log(JSON.stringify({ enabled: n.enabled, watchdogIntervalMs: n.watchdogIntervalMs ?? null, pid: process.pid }));
`;

describe('sd_notify', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'certd-notify-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('sends READY, STATUS, WATCHDOG, STOPPING and RELOADING datagrams to a path socket', async () => {
    const path = join(dir, 'notify.sock');
    const listener = listen(path);
    try {
      const n = createNotifier({ NOTIFY_SOCKET: path });
      assert.equal(n.enabled, true);
      n.ready('serving 3 certificates');
      n.status('rotating web');
      n.watchdog();
      n.reloading();
      n.stopping();
      const got = await listener.next(5);
      assert.deepEqual(got.slice(0, 3), ['READY=1\nSTATUS=serving 3 certificates', 'STATUS=rotating web', 'WATCHDOG=1']);
      assert.match(got[3] ?? '', /^RELOADING=1\nMONOTONIC_USEC=\d+$/);
      assert.equal(got[4], 'STOPPING=1');
    } finally {
      listener.close();
    }
  });

  it('works from a child process, which exits on its own (no handle keeps it alive)', async () => {
    const path = join(dir, 'child.sock');
    const listener = listen(path);
    try {
      const r = await runNode(CHILD_SCRIPT, { ...process.env, NOTIFY_SOCKET: path, WATCHDOG_USEC: '30000000' });
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout) as { enabled: boolean; watchdogIntervalMs: number | null };
      assert.deepEqual(out, { enabled: true, watchdogIntervalMs: 15000, pid: r.pid });
      const got = await listener.next(4);
      // A newline in a status must not smuggle in another assignment.
      assert.deepEqual(got, ['READY=1\nSTATUS=serving 2 certificates', 'WATCHDOG=1', 'STATUS=line one WATCHDOG=1', 'STOPPING=1']);
    } finally {
      listener.close();
    }
  });

  it("the datagram carries the child's own pid in SCM_CREDENTIALS (what NotifyAccess=main checks)", async () => {
    const path = join(dir, 'cred.sock');
    // An independent listener: Python's socket module with SO_PASSCRED, as systemd reads it.
    const py = spawn('python3', ['-c', `
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.bind(sys.argv[1])
print("bound", flush=True)
s.settimeout(10)
msg, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(12))
pid = [struct.unpack("iII", d)[0] for (l, t, d) in anc if l == socket.SOL_SOCKET and t == socket.SCM_CREDENTIALS]
print(repr(msg.decode()), pid[0] if pid else -1, flush=True)
`, path], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<void>((resolve) => py.once('exit', () => resolve()));
    let out = '';
    let err = '';
    py.stdout.on('data', (d: Buffer) => (out += d.toString()));
    py.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const spawned = await new Promise<boolean>((resolve) => {
      py.once('error', () => resolve(false));
      py.once('spawn', () => resolve(true));
    });
    assert.ok(spawned, 'python3 is needed for this listener: apt-get install -y python3');
    for (let i = 0; i < 200 && !out.includes('bound'); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(out.includes('bound'), `python listener did not start: ${err}`);
    const r = await runNode(`
import { createNotifier } from ${JSON.stringify(moduleUrl)};
createNotifier().ready();
console.log(process.pid);
`, { ...process.env, NOTIFY_SOCKET: path });
    assert.equal(r.code, 0, r.stderr);
    await exited;
    const line = out.split('\n').find((l) => l.startsWith("'"));
    assert.equal(line, `'READY=1' ${r.stdout.trim()}`, `python saw: ${out} ${err}`);
  });

  it('is a no-op, and loads no native addon, when NOTIFY_SOCKET is unset', async () => {
    const r = await runNode(`
import { createRequire } from 'node:module';
import { createNotifier } from ${JSON.stringify(moduleUrl)};
const n = createNotifier({});
n.ready('x'); n.status('y'); n.watchdog(); n.stopping(); n.reloading();
const loaded = Object.keys(createRequire(import.meta.url).cache).filter((k) => k.includes('unix-dgram') || k.endsWith('.node'));
console.log(JSON.stringify({ enabled: n.enabled, wd: n.watchdogIntervalMs ?? null, loaded }));
`, { ...process.env, NOTIFY_SOCKET: '' });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { enabled: false, wd: null, loaded: [] });
    // The same process with the variable set does load it: the check above can fail.
    const withSocket = await runNode(`
import { createRequire } from 'node:module';
import { createNotifier } from ${JSON.stringify(moduleUrl)};
createNotifier().ready();
console.log(JSON.stringify(Object.keys(createRequire(import.meta.url).cache).filter((k) => k.includes('unix-dgram')).length > 0));
`, { ...process.env, NOTIFY_SOCKET: join(dir, 'nobody-listens.sock') });
    assert.equal(withSocket.stdout.trim(), 'true', withSocket.stderr);
  });

  it('never throws when nobody listens: it logs the failure once at warn', () => {
    const lines: string[] = [];
    const log = createLogger({ level: 'debug', format: 'json', write: (l) => lines.push(l) });
    const n = createNotifier({ NOTIFY_SOCKET: join(dir, 'absent.sock') }, { log });
    assert.doesNotThrow(() => {
      n.ready();
      n.watchdog();
      n.watchdog();
    });
    const records = lines.map((l) => JSON.parse(l) as { level: string; msg: string; err?: string });
    assert.equal(records.filter((r) => r.level === 'warn').length, 1, lines.join(''));
    assert.equal(records.filter((r) => r.level === 'debug' && r.msg === 'sd_notify failed').length, 2);
    assert.match(records[0]?.err ?? '', /send -(2|111)/); // ENOENT or ECONNREFUSED from sendmsg(2)
  });

  it('attached to a real Daemon: READY=1 after the first cycle, STATUS lines, WATCHDOG=1 pings, STOPPING=1', async () => {
    const path = join(dir, 'daemon.sock');
    const listener = listen(path);
    const shm = mkdtempSync('/dev/shm/certd-notify-');
    try {
      const config = join(shm, 'config.yaml');
      writeFileSync(config, `state_dir: ${join(shm, 'state')}
fips_runtime: off
certificates:
  - name: web
    source: { type: local-ca, dns_names: [web.example.test] }
    targets:
      - { type: tmpfs, dir: ${join(shm, 'web')} }
`);
      const env = { NOTIFY_SOCKET: path, WATCHDOG_USEC: '100000' };
      const log = createLogger({ level: 'silent' });
      const daemon = new Daemon({ configPath: config, log, env, metricsListen: false, controlSocket: false });
      attachNotifier(daemon, createNotifier(env, { log }));
      await daemon.start();
      await new Promise((r) => setTimeout(r, 300)); // a few 50 ms watchdog periods
      await daemon.stop();
      const got = listener.messages;
      assert.ok(got.includes('READY=1'), JSON.stringify(got));
      assert.ok(got.some((m) => m.startsWith('STATUS=')), JSON.stringify(got));
      assert.ok(got.filter((m) => m === 'WATCHDOG=1').length >= 2, JSON.stringify(got));
      assert.equal(got[got.length - 1], 'STOPPING=1', JSON.stringify(got));
      assert.ok(got.indexOf('READY=1') < got.indexOf('WATCHDOG=1'), 'no ping before READY');
    } finally {
      listener.close();
      rmSync(shm, { recursive: true, force: true });
    }
  });

  it("a first cycle waiting on a hung AWS endpoint: EXTEND_TIMEOUT_USEC with the cycle's bound before READY=1, STATUS names what it waits on, READY=1 once fetch_deadline ends the wait", async () => {
    const path = join(dir, 'hung.sock');
    const listener = listen(path);
    const shm = mkdtempSync('/dev/shm/certd-notify-hung-');
    const peer = await startAwsPeer();
    const saved: Record<string, string | undefined> = {};
    for (const [k, v] of Object.entries(awsEnv(peer))) {
      saved[k] = process.env[k];
      process.env[k] = v;
    }
    const fault = peer.inject({ kind: 'hang', count: Infinity });
    try {
      const config = join(shm, 'config.yaml');
      writeFileSync(config, `state_dir: ${join(shm, 'state')}
fips_runtime: off
fetch_deadline: 1500ms
certificates:
  - name: fast
    source: { type: local-ca, dns_names: [fast.example.test] }
    targets: [{ type: tmpfs, dir: ${join(shm, 'fast')} }]
  - name: hung
    source: { type: secrets-manager, secret_id: never/answers, region: ${peer.region}, endpoint: "${peer.url}", request_timeout: 10s }
    targets: [{ type: tmpfs, dir: ${join(shm, 'hung')} }]
`);
      const env = { NOTIFY_SOCKET: path };
      const log = createLogger({ level: 'silent' });
      const daemon = new Daemon({ configPath: config, log, env, metricsListen: false, controlSocket: false, progressEveryMs: 200 });
      attachNotifier(daemon, createNotifier(env, { log }));
      const t0 = Date.now();
      await daemon.start();
      const ms = Date.now() - t0;
      const phase = daemon.status().phase;
      await daemon.stop();
      const got = listener.messages;
      const ready = got.indexOf('READY=1');
      assert.ok(ready > 0, JSON.stringify(got));
      const extensions = got.map((m, i) => [m, i] as const).filter(([m]) => m.startsWith('EXTEND_TIMEOUT_USEC='));
      assert.ok(extensions.length >= 2, `the cycle start and at least one progress tick extend the timeout: ${JSON.stringify(got)}`);
      assert.ok(extensions.every(([, i]) => i < ready), 'no EXTEND_TIMEOUT_USEC after READY=1');
      const first = Number(extensions[0]![0].split('=')[1]);
      assert.ok(first >= 2 * 1_500_000, `the first extension covers the fetch_deadline rounds: ${first} µs`);
      assert.ok(got.some((m) => /^STATUS=.*waiting on hung/.test(m)), `a STATUS line names the hung certificate: ${JSON.stringify(got)}`);
      assert.ok(fault.fired >= 1, 'the endpoint was asked');
      assert.ok(ms < first / 1000, `start-up took ${ms} ms, within the bound certd announced (${first / 1000} ms)`);
      assert.equal(phase, 'running');
    } finally {
      fault.remove();
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      await peer.close();
      listener.close();
      rmSync(shm, { recursive: true, force: true });
    }
  });

  describe('abstract namespace', () => {
    it('maps "@name" to a leading NUL byte', () => {
      assert.deepEqual(notifySocketAddress('@certd/notify'), { path: '\0certd/notify', abstract: true });
      assert.deepEqual(notifySocketAddress('/run/systemd/notify'), { path: '/run/systemd/notify', abstract: false });
      assert.equal(notifySocketAddress(''), undefined);
      assert.equal(notifySocketAddress(undefined), undefined);
    });

    it('unix-dgram cannot address it: every abstract name collapses to the same all-NUL address', async () => {
      // Why the notifier refuses abstract sockets: a listener bound to "\0certd-a-<pid>" gets a
      // datagram addressed to "\0certd-b-<pid>". Should the addon learn exact-length abstract
      // addresses, this test fails and the notifier can be enabled for them.
      const listener = listen(`\0certd-a-${process.pid}`);
      try {
        const sender = unix.createSocket('unix_dgram');
        const buf = Buffer.from('READY=1');
        await new Promise<void>((resolve, reject) => sender.send(buf, 0, buf.length, `\0certd-b-${process.pid}`, (err) => (err ? reject(err) : resolve())));
        sender.close();
        assert.deepEqual(await listener.next(1, 2000), ['READY=1']);
      } finally {
        listener.close();
      }
    });

    it('so the notifier is disabled for "@name", says why, and never throws', () => {
      const lines: string[] = [];
      const log = createLogger({ level: 'info', format: 'json', write: (l) => lines.push(l) });
      const n = createNotifier({ NOTIFY_SOCKET: `@certd-notify-${process.pid}`, WATCHDOG_USEC: '10000000' }, { log });
      assert.equal(n.enabled, false);
      assert.equal(n.watchdogIntervalMs, undefined);
      assert.doesNotThrow(() => n.ready('x'));
      assert.equal(lines.length, 1);
      assert.match(lines[0] ?? '', /abstract namespace.*path socket/);
    });
  });

  describe('watchdog interval', () => {
    it('is half of WATCHDOG_USEC when WATCHDOG_PID is unset or ours', () => {
      assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '20000000' }, 42), 10_000);
      assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '20000000', WATCHDOG_PID: '42' }, 42), 10_000);
      assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '20000000', WATCHDOG_PID: '43' }, 42), undefined);
      assert.equal(watchdogIntervalMs({}, 42), undefined);
      assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '0' }, 42), undefined);
      assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: 'soon' }, 42), undefined);
    });

    it('is on the notifier, for this process only', () => {
      const path = join(dir, 'wd.sock');
      assert.equal(createNotifier({ NOTIFY_SOCKET: path, WATCHDOG_USEC: '6000000' }).watchdogIntervalMs, 3000);
      assert.equal(createNotifier({ NOTIFY_SOCKET: path, WATCHDOG_USEC: '6000000', WATCHDOG_PID: String(process.pid) }).watchdogIntervalMs, 3000);
      assert.equal(createNotifier({ NOTIFY_SOCKET: path, WATCHDOG_USEC: '6000000', WATCHDOG_PID: '1' }).watchdogIntervalMs, undefined);
      assert.equal(createNotifier({ WATCHDOG_USEC: '6000000' }).watchdogIntervalMs, undefined);
    });
  });

  it('`certd run` itself (Type=notify): READY=1 after the first cycle, STATUS, WATCHDOG=1, then STOPPING=1 on SIGTERM', async () => {
    const dir = mkdtempSync('/dev/shm/certd-sdnotify-run-');
    const sock = join(dir, 'notify.sock');
    const listener = listen(sock);
    const config = join(dir, 'config.yaml');
    writeFileSync(config, `state_dir: ${dir}/state
schedule: "0 0 1 1 *"
certificates:
  - name: notified
    source: { type: local-ca, dns_names: [notify.test], ttl: 1h }
    targets: [{ type: tmpfs, dir: ${dir}/out }]
`);
    const child = spawn(process.execPath, [join(process.cwd(), 'bin/certd'), 'run', '--config', config], {
      env: { ...process.env, NOTIFY_SOCKET: sock, WATCHDOG_USEC: '200000', CERTD_LOG_FORMAT: 'json' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    try {
      const deadline = Date.now() + 20_000;
      const has = (re: RegExp) => listener.messages.some((m) => re.test(m));
      while (!(has(/^READY=1/m) && has(/^WATCHDOG=1/m)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.ok(has(/^READY=1/m), `no READY=1; got ${JSON.stringify(listener.messages)}; ${stderr}`);
      assert.ok(has(/^STATUS=.+/m), 'a STATUS= line');
      assert.ok(has(/^WATCHDOG=1/m), 'watchdog pings at half of WATCHDOG_USEC');
      const code = await new Promise<number | null>((resolve) => {
        child.once('exit', resolve);
        child.kill('SIGTERM');
      });
      assert.equal(code, 0, stderr);
      assert.ok(has(/^STOPPING=1/m), 'STOPPING=1 before exit');
      const ready = listener.messages.findIndex((m) => /^READY=1/m.test(m));
      const stopping = listener.messages.findIndex((m) => /^STOPPING=1/m.test(m));
      assert.ok(ready < stopping);
      const extend = listener.messages.findIndex((m) => /^EXTEND_TIMEOUT_USEC=\d+$/m.test(m));
      assert.ok(extend >= 0 && extend < ready, `EXTEND_TIMEOUT_USEC before READY=1: ${JSON.stringify(listener.messages)}`);
    } finally {
      child.kill('SIGKILL');
      listener.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
