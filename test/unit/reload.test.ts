import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { CertdError } from '../../src/errors.js';
import { reloadKey, runCommand, runReload, runTest } from '../../src/reload.js';

const dir = mkdtempSync('/dev/shm/certd-unit-reload-');
after(() => rmSync(dir, { recursive: true, force: true }));

describe('reload', () => {
  it('runs argv without a shell: metacharacters are plain arguments', async () => {
    const out = await runCommand(['/bin/echo', '$(id)', ';', 'rm', '-rf', '/'], 5000, 'test');
    assert.equal(out.trim(), '$(id) ; rm -rf /');
  });

  it('a failing command is E_RELOAD with the exit code and the tail of stderr', async () => {
    await assert.rejects(runCommand(['/bin/sh', '-c', 'echo first >&2; echo "nginx: [emerg] cannot load certificate" >&2; exit 1'], 5000, 'testing server config'), (err: unknown) => {
      assert.ok(err instanceof CertdError);
      assert.equal(err.code, 'E_RELOAD');
      assert.match(err.message, /^testing server config: .*exit 1: .*cannot load certificate/);
      return true;
    });
  });

  it('a hanging command is killed at its timeout', async () => {
    const t0 = Date.now();
    await assert.rejects(runCommand(['/bin/sleep', '10'], 200, 'reloading server'), /timed out after 200 ms/);
    assert.ok(Date.now() - t0 < 5000);
  });

  it('a missing binary says so', async () => {
    await assert.rejects(runCommand(['/nonexistent/nginx', '-s', 'reload'], 1000, 'reloading server'), /command not found/);
  });

  it('the test command runs before nothing else when it fails', async () => {
    const marker = join(dir, 'reloaded');
    const spec = { test: ['/bin/false'], command: ['/bin/touch', marker], timeoutMs: 2000 };
    await assert.rejects(runTest(spec));
    assert.equal(existsSync(marker), false);
    await runReload(spec);
    assert.equal(existsSync(marker), true);
  });

  it('signal: sends the configured signal to the pid in the pidfile', async () => {
    const got = join(dir, 'got-signal');
    const child = spawn(process.execPath, ['-e', `process.on('SIGHUP', () => { require('fs').writeFileSync(${JSON.stringify(got)}, 'HUP'); process.exit(0); }); setInterval(() => {}, 1000); console.log('ready')`], { stdio: ['ignore', 'pipe', 'ignore'] });
    await new Promise((r) => child.stdout.once('data', r));
    const pidfile = join(dir, 'server.pid');
    writeFileSync(pidfile, `${child.pid}\n`);
    await runReload({ signal: { pidfile, signal: 'SIGHUP' }, timeoutMs: 1000 });
    for (let i = 0; i < 100 && !existsSync(got); i++) await sleep(10);
    assert.equal(readFileSync(got, 'utf8'), 'HUP');
  });

  it('signal: a missing or bogus pidfile is a clear error', async () => {
    await assert.rejects(runReload({ signal: { pidfile: join(dir, 'absent.pid'), signal: 'SIGHUP' }, timeoutMs: 1000 }), /reading pidfile .*absent\.pid: ENOENT/);
    writeFileSync(join(dir, 'bogus.pid'), 'not a pid');
    await assert.rejects(runReload({ signal: { pidfile: join(dir, 'bogus.pid'), signal: 'SIGHUP' }, timeoutMs: 1000 }), /holds no valid pid/);
  });

  it('identical specs coalesce into one reload key, different ones do not', () => {
    const a = { command: ['nginx', '-s', 'reload'], test: ['nginx', '-t'], timeoutMs: 1 };
    assert.equal(reloadKey(a), reloadKey({ ...a, timeoutMs: 2 }));
    assert.notEqual(reloadKey(a), reloadKey({ ...a, test: undefined }));
  });
});
