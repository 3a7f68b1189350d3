import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CertdError } from '../../src/errors.js';
import { acquireLock } from '../../src/lock.js';

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
