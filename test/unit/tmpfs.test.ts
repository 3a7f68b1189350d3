import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { AtomicDir } from '../../providers/tmpfs.js';
import { CertdError } from '../../src/errors.js';
import { isMemoryBacked } from '../../src/fsutil.js';

const root = mkdtempSync('/dev/shm/certd-unit-tmpfs-');
after(() => rmSync(root, { recursive: true, force: true }));

function files(tag: string): Map<string, () => string> {
  return new Map([
    ['fullchain.pem', () => `fullchain ${tag}`],
    ['cert.pem', () => `cert ${tag}`],
    ['chain.pem', () => `chain ${tag}`],
    ['privkey.pem', () => `key ${tag}`],
  ]);
}

function read(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of ['fullchain.pem', 'cert.pem', 'chain.pem', 'privkey.pem']) out[f] = readFileSync(join(dir, f), 'utf8');
  return out;
}

const opts = (dir: string, extra: Partial<ConstructorParameters<typeof AtomicDir>[0]> = {}) =>
  ({ dir, certMode: 0o644, keyMode: 0o600, allowDisk: false, certName: 'web', ...extra });

describe('tmpfs target: one atomic set', () => {
  it('detects tmpfs and disk', async () => {
    assert.equal((await isMemoryBacked('/dev/shm')).memory, true);
    assert.equal((await isMemoryBacked('/dev/shm/does/not/exist/yet')).memory, true);
    assert.equal((await isMemoryBacked('/var/tmp')).memory, false);
  });

  it('stages a set behind one symlink with the key 0600 and commit keeps only live + previous', async () => {
    const dir = join(root, 'a');
    const a = new AtomicDir(opts(dir));
    for (const tag of ['1', '2', '3']) {
      await a.stage(files(tag));
      await a.commit();
    }
    assert.deepEqual(read(dir), { 'fullchain.pem': 'fullchain 3', 'cert.pem': 'cert 3', 'chain.pem': 'chain 3', 'privkey.pem': 'key 3' });
    assert.equal(lstatSync(join(dir, 'cert.pem')).isSymbolicLink(), true);
    assert.equal(readlinkSync(join(dir, 'cert.pem')), '..data/cert.pem');
    assert.equal(statSync(join(dir, 'privkey.pem')).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'cert.pem')).mode & 0o777, 0o644);
    assert.equal(readdirSync(dir).filter((n) => n.startsWith('..2')).length, 2);
  });

  it('rollback restores exactly the previous set and removes the staged one', async () => {
    const dir = join(root, 'b');
    const a = new AtomicDir(opts(dir));
    await a.stage(files('old'));
    await a.commit();
    const live = readlinkSync(join(dir, '..data'));
    await a.stage(files('new'));
    assert.equal(read(dir)['cert.pem'], 'cert new');
    await a.rollback();
    assert.equal(readlinkSync(join(dir, '..data')), live);
    assert.deepEqual(read(dir), { 'fullchain.pem': 'fullchain old', 'cert.pem': 'cert old', 'chain.pem': 'chain old', 'privkey.pem': 'key old' });
    assert.equal(readdirSync(dir).filter((n) => n.startsWith('..2')).length, 1);
  });

  it('rollback of a first deployment leaves nothing behind', async () => {
    const dir = join(root, 'c');
    const a = new AtomicDir(opts(dir));
    await a.stage(files('first'));
    await a.rollback();
    assert.deepEqual(readdirSync(dir), []);
  });

  it('a key file with group is 0640 and the cert mode is honoured', async () => {
    const dir = join(root, 'd');
    const a = new AtomicDir(opts(dir, { keyMode: 0o640, certMode: 0o640, gid: 0 }));
    await a.stage(files('g'));
    await a.commit();
    assert.equal(statSync(join(dir, 'privkey.pem')).mode & 0o777, 0o640);
    assert.equal(statSync(join(dir, 'fullchain.pem')).mode & 0o777, 0o640);
  });

  it('refuses a directory on disk unless allow_disk, and creates nothing there', async () => {
    const disk = join('/var/tmp', `certd-unit-${process.pid}`);
    const a = new AtomicDir(opts(disk));
    await assert.rejects(a.stage(files('x')), (err: unknown) => err instanceof CertdError && err.code === 'E_TARGET' && /not tmpfs or ramfs/.test(err.message));
    assert.equal(existsSync(disk), false);
    const allowed = new AtomicDir(opts(disk, { allowDisk: true }));
    try {
      await allowed.stage(files('x'));
      await allowed.commit();
      assert.equal(read(disk)['cert.pem'], 'cert x');
    } finally {
      rmSync(disk, { recursive: true, force: true });
    }
  });

  it('cleans up what an interrupted run left behind', async () => {
    const dir = join(root, 'e');
    const a = new AtomicDir(opts(dir));
    await a.stage(files('1'));
    await a.commit();
    // A crash mid-stage leaves a half-written set and a temp link.
    const { mkdirSync, symlinkSync, writeFileSync } = await import('node:fs');
    mkdirSync(join(dir, '..2000-01-01T00.00.00.000Z-dead00'));
    writeFileSync(join(dir, '..2000-01-01T00.00.00.000Z-dead00', 'cert.pem'), 'torn');
    symlinkSync('..2000-01-01T00.00.00.000Z-dead00', join(dir, '..data_tmp'));
    await a.stage(files('2'));
    await a.commit();
    assert.equal(existsSync(join(dir, '..data_tmp')), false);
    assert.equal(existsSync(join(dir, '..2000-01-01T00.00.00.000Z-dead00')), false);
    assert.equal(read(dir)['privkey.pem'], 'key 2');
  });

  it('a failing write leaves the previous set live', async () => {
    const dir = join(root, 'f');
    const a = new AtomicDir(opts(dir));
    await a.stage(files('good'));
    await a.commit();
    const broken = files('bad');
    broken.set('privkey.pem', () => {
      throw new Error('disk full');
    });
    await assert.rejects(a.stage(broken), /disk full/);
    assert.deepEqual(read(dir)['cert.pem'], 'cert good');
    assert.equal(readdirSync(dir).filter((n) => n.startsWith('..2')).length, 1);
  });
});
