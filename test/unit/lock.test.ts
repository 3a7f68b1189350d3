import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CertdError } from '../../src/errors.js';
import { acquireLock } from '../../src/lock.js';
import { runCertd } from '../helpers/cli.js';

const dir = mkdtempSync('/dev/shm/certd-unit-lock-');
after(() => rmSync(dir, { recursive: true, force: true }));

describe('deployment lock', () => {
  it('one holder at a time; the second is told who holds it', async () => {
    const a = await acquireLock(dir, 'first');
    await assert.rejects(acquireLock(dir, 'second'), (err: unknown) => err instanceof CertdError && err.code === 'E_LOCKED' && err.message.includes(`pid ${process.pid}, first`));
    await a.release();
    const b = await acquireLock(dir, 'third');
    await b.release();
  });

  it("takes over a lock whose owner died, and leaves no stale file behind", async () => {
    writeFileSync(join(dir, 'deploy.lock'), '2147483646\ncrashed run\n');
    const l = await acquireLock(dir, 'after crash');
    assert.match(readFileSync(join(dir, 'deploy.lock'), 'utf8'), new RegExp(`^${process.pid}\\n`));
    await l.release();
    assert.deepEqual(readdirSync(dir).filter((n) => n.startsWith('deploy.lock')), []);
  });

  it('releasing does not remove a lock that another process holds now', async () => {
    const l = await acquireLock(dir, 'mine');
    writeFileSync(join(dir, 'deploy.lock'), '1\nsomeone else\n');
    await l.release();
    assert.match(readFileSync(join(dir, 'deploy.lock'), 'utf8'), /^1\n/);
    rmSync(join(dir, 'deploy.lock'));
  });
});

describe('state_dir ownership and modes', () => {
  const fresh = (): string => mkdtempSync(join(dir, 'state-'));

  it('a state_dir open to group and others is closed to 0700, and the caller told', async () => {
    const sd = fresh();
    mkdirSync(join(sd, 'certs'));
    chmodSync(sd, 0o777);
    chmodSync(join(sd, 'certs'), 0o777);
    const told: string[] = [];
    const l = await acquireLock(sd, 'loose', (t) => told.push(...t.map((x) => `${x.path}:${x.from.toString(8)}`)));
    await l.release();
    assert.equal(statSync(sd).mode & 0o777, 0o700);
    assert.equal(statSync(join(sd, 'certs')).mode & 0o777, 0o700);
    assert.deepEqual(told.sort(), [`${sd}:777`, `${join(sd, 'certs')}:777`].sort());
    // A second start has nothing to say.
    const again: unknown[] = [];
    await (await acquireLock(sd, 'tight', (t) => again.push(...t))).release();
    assert.deepEqual(again, []);
  });

  it('state_dir/certs owned by another user is refused, naming the path and the fix; nothing is changed', async () => {
    assert.equal(process.getuid?.(), 0, 'this test changes file owners: run the suite as root (as scripts/test.sh does)');
    const sd = fresh();
    mkdirSync(join(sd, 'certs'));
    chmodSync(join(sd, 'certs'), 0o777);
    chownSync(join(sd, 'certs'), 4242, 4242);
    await assert.rejects(acquireLock(sd, 'foreign'), (err: unknown) =>
      err instanceof CertdError && err.code === 'E_CONFIG' && err.message.includes(`${join(sd, 'certs')} is owned by uid 4242`) && err.message.includes('chown -R 0'));
    assert.equal(statSync(join(sd, 'certs')).mode & 0o777, 0o777, 'a foreign directory is not touched');
    assert.equal(existsSync(join(sd, 'deploy.lock')), false, 'no lock taken');
    // A record file planted by another user is refused too.
    const sd2 = fresh();
    mkdirSync(join(sd2, 'certs'));
    writeFileSync(join(sd2, 'certs', 'web.json'), '{}');
    chownSync(join(sd2, 'certs', 'web.json'), 4242, 4242);
    await assert.rejects(acquireLock(sd2, 'planted'), /web\.json is owned by uid 4242/);
  });

  it('a symlinked state directory, or a parent anyone can write to, is refused', async () => {
    const sd = fresh();
    mkdirSync(join(sd, 'elsewhere'));
    mkdirSync(join(sd, 'state'));
    symlinkSync(join(sd, 'elsewhere'), join(sd, 'state', 'certs'));
    await assert.rejects(acquireLock(join(sd, 'state'), 'symlink'), (err: unknown) => err instanceof CertdError && err.code === 'E_CONFIG' && /certs is a symlink/.test(err.message));
    const open = fresh();
    chmodSync(open, 0o777);
    await assert.rejects(acquireLock(join(open, 'state'), 'open parent'), (err: unknown) => err instanceof CertdError && err.code === 'E_CONFIG' && /writable by group and others/.test(err.message));
  });

  it('certd rotate --now on a foreign-owned state_dir exits 2 with the message', async () => {
    const sd = fresh();
    mkdirSync(join(sd, 'state', 'certs'), { recursive: true });
    chownSync(join(sd, 'state', 'certs'), 4242, 4242);
    const cfg = join(sd, 'config.yaml');
    writeFileSync(cfg, `state_dir: ${join(sd, 'state')}\ncertificates:\n  - name: web\n    source: { type: local-ca, dns_names: [web.test] }\n    targets: [{ type: tmpfs, dir: ${join(sd, 'out')} }]\n`);
    const r = await runCertd(['rotate', '--now', '--config', cfg]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /state_dir .* is owned by uid 4242/);
    assert.equal(existsSync(join(sd, 'out')), false, 'nothing deployed');
  });
});
