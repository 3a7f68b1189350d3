/**
 * The control socket's bounds, on a real unix socket with an in-test handler: a client that
 * writes requests and never reads its answers is paused and then dropped, a request line over the
 * cap is refused, connections past the limit are refused with one error line, and close() drops
 * every connection and every request still queued. No test waits on the wall clock to decide:
 * each waits for an event (an answer, a close, a log line) and then counts.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { askDaemon, CONTROL_LIMITS, type ControlHandler, type ControlLimits, type ControlServer, controlSocketPath, listenControl } from '../../src/control.js';
import { CertdError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import type { CycleReport } from '../../src/rotate.js';

const root = mkdtempSync('/dev/shm/certd-unit-control-');
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

interface Harness {
  stateDir: string;
  server: ControlServer;
  calls: { status: number; rotate: number };
  logs: Record<string, unknown>[];
  /** Resolves with the first log line matching `msg` (already logged or still to come). */
  logged(msg: RegExp): Promise<Record<string, unknown>>;
}

async function harness(limits: Partial<ControlLimits>, handler: Partial<ControlHandler> = {}, statusAnswer: unknown = { ok: true }): Promise<Harness> {
  const stateDir = join(root, `s${n++}`);
  mkdirSync(stateDir, { mode: 0o700 });
  const logs: Record<string, unknown>[] = [];
  const waiting: { re: RegExp; resolve: (l: Record<string, unknown>) => void }[] = [];
  const log = createLogger({
    level: 'debug',
    format: 'json',
    write: (line) => {
      const l = JSON.parse(line) as Record<string, unknown>;
      logs.push(l);
      for (const w of waiting.filter((x) => x.re.test(String(l['msg'])))) {
        waiting.splice(waiting.indexOf(w), 1);
        w.resolve(l);
      }
    },
  });
  const calls = { status: 0, rotate: 0 };
  const server = await listenControl(
    controlSocketPath(stateDir),
    {
      status: handler.status ?? (async () => {
        calls.status++;
        return statusAnswer;
      }),
      rotate: handler.rotate ?? (async () => {
        calls.rotate++;
        return { ok: true } as unknown as CycleReport;
      }),
    },
    log,
    { ...CONTROL_LIMITS, ...limits },
  );
  return {
    stateDir,
    server,
    calls,
    logs,
    logged: (re) => {
      const hit = logs.find((l) => re.test(String(l['msg'])));
      return hit ? Promise.resolve(hit) : new Promise((resolve) => waiting.push({ re, resolve }));
    },
  };
}

function connect(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createConnection(path);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Everything the daemon sends on `s` until it closes the connection. */
function readAll(s: Socket): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (text += d));
    s.on('error', () => undefined);
    s.on('close', () => resolve(text));
  });
}

describe('control socket bounds', { timeout: 120_000 }, () => {
  it('a client that writes requests and never reads is paused, then dropped; its requests stop being taken', async () => {
    // Answers of 64 KiB, at most 256 KiB of them unread, dropped 50 ms after the output stays full.
    const h = await harness({ maxOutputBytes: 256 * 1024, stallMs: 50 }, {}, { pad: 'x'.repeat(64 * 1024) });
    try {
      const s = await connect(h.server.path);
      s.pause(); // never reads
      const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
      s.on('error', () => undefined);
      const requests = 20_000;
      s.write('{"op":"status"}\n'.repeat(requests));
      const paused = await h.logged(/not reading its answers/);
      assert.equal(paused['step'], 'control');
      await closed;
      const dropped = await h.logged(/control client dropped/);
      assert.match(String(dropped['msg']), /left .* of answers unread/);
      // The unread output is capped at 256 KiB; the socket's own buffers hold a few answers more.
      assert.ok(h.calls.status < 100, `${h.calls.status} of ${requests} requests were answered for a client that read none`);
      // Someone else is still served.
      assert.deepEqual(await askDaemon(h.stateDir, { op: 'status' }, { timeoutMs: 10_000 }), { pad: 'x'.repeat(64 * 1024) });
    } finally {
      await h.server.close();
    }
  });

  it('queued requests per connection are bounded: reading stops while they wait', async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    let started = 0;
    const h = await harness({ maxQueuedRequests: 4 }, {
      status: async () => {
        started++;
        await gate;
        return { ok: true };
      },
    });
    try {
      const s = await connect(h.server.path);
      const all = readAll(s);
      s.write('{"op":"status"}\n'.repeat(50_000));
      const paused = await h.logged(/requests queued/);
      assert.equal(paused['queued'], 4);
      assert.equal(started, 1, 'one request at a time per connection');
      release();
      s.end();
      const answers = (await all).trim().split('\n');
      assert.equal(answers.length, 50_000, 'every request is answered once its client reads');
      assert.ok(answers.every((a) => a === '{"ok":true}'));
    } finally {
      await h.server.close();
    }
  });

  it('a request line over the cap is refused with one error line and the connection closed', async () => {
    const h = await harness({ maxRequestBytes: 1024 });
    try {
      const s = await connect(h.server.path);
      const all = readAll(s);
      s.write(`{"op":"status","pad":"${'x'.repeat(4096)}`);
      const answer = JSON.parse((await all).trim()) as { ok: boolean; error: { code: string; message: string } };
      assert.equal(answer.ok, false);
      assert.equal(answer.error.code, 'E_CONFIG');
      assert.match(answer.error.message, /control request: a line longer than 1024 bytes/);
      assert.equal(h.calls.status, 0);
      // Lines under the cap, many in one write, are fine.
      assert.deepEqual(await askDaemon(h.stateDir, { op: 'status' }, { timeoutMs: 10_000 }), { ok: true });
      const t = await connect(h.server.path);
      const many = readAll(t);
      t.end('{"op":"status"}\n'.repeat(500));
      assert.equal((await many).trim().split('\n').length, 500);
    } finally {
      await h.server.close();
    }
  });

  it('connections past the limit are refused with one error line; a freed slot is taken again', async () => {
    const h = await harness({ maxConnections: 2 });
    try {
      const a = await connect(h.server.path);
      const b = await connect(h.server.path);
      // Both are counted once the server has seen them: each answers a request.
      for (const s of [a, b]) {
        const line = new Promise<string>((resolve) => s.once('data', (d) => resolve(String(d))));
        s.write('{"op":"status"}\n');
        assert.equal((await line).trim(), '{"ok":true}');
      }
      await assert.rejects(askDaemon(h.stateDir, { op: 'status' }, { timeoutMs: 10_000 }), (err: unknown) => {
        assert.ok(err instanceof CertdError);
        assert.equal(err.code, 'E_LOCKED');
        assert.match(err.message, /the running certd has 2 control connections open \(the limit\)/);
        return true;
      });
      const refused = await h.logged(/control connection refused/);
      assert.equal(refused['limit'], 2);
      const gone = new Promise<void>((resolve) => a.once('close', () => resolve()));
      a.destroy();
      await gone;
      // The server sees the close a moment later: ask until the slot is free (an event, not a time).
      for (;;) {
        const r = await askDaemon(h.stateDir, { op: 'status' }, { timeoutMs: 10_000 }).catch((err: unknown) => err);
        if (!(r instanceof CertdError && r.code === 'E_LOCKED')) {
          assert.deepEqual(r, { ok: true });
          break;
        }
        await new Promise((resolve) => setImmediate(resolve));
      }
      b.destroy();
    } finally {
      await h.server.close();
    }
  });

  it('a refused client always reads why, even when its request crosses the refusal (no EPIPE)', async () => {
    const h = await harness({ maxConnections: 0 });
    try {
      const answers = await Promise.all(Array.from({ length: 300 }, () =>
        askDaemon(h.stateDir, { op: 'status' }, { timeoutMs: 10_000 }).then(() => 'answered', (err: unknown) => (err instanceof CertdError ? `${err.code}: ${err.message}` : String(err)))));
      const odd = answers.filter((a) => !/^E_LOCKED: control connection refused: the running certd has 0 control connections open/.test(a));
      assert.deepEqual(odd, [], 'every client was told it was refused');
      // The slow case made certain: the request is written well after the refusal went out.
      const s = createConnection(h.server.path);
      const errors: string[] = [];
      s.on('error', (err: NodeJS.ErrnoException) => errors.push(err.code ?? err.message));
      await new Promise((resolve) => s.once('connect', resolve));
      await new Promise((resolve) => setTimeout(resolve, 200));
      const text = readAll(s);
      s.write('{"op":"status"}\n');
      assert.match(await text, /control connection refused/);
      assert.deepEqual(errors, []);
    } finally {
      await h.server.close();
    }
  });

  it('close() drops every connection and the requests still queued on them', async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    let started = 0;
    const h = await harness({}, {
      status: async () => {
        started++;
        await gate;
        return { ok: true };
      },
    });
    const sockets = await Promise.all([connect(h.server.path), connect(h.server.path)]);
    const closed = sockets.map((s) => new Promise<void>((resolve) => s.once('close', () => resolve())));
    for (const s of sockets) {
      s.on('error', () => undefined);
      s.pause();
      s.write('{"op":"status"}\n'.repeat(1000));
    }
    while (started < 2) await new Promise((resolve) => setImmediate(resolve));
    await h.server.close();
    await Promise.all(closed);
    release();
    await gate;
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(started, 2, 'no queued request runs after close()');
  });
});
