import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { type CertState, StateStore } from '../../src/state.js';

const scratch = mkdtempSync(join(tmpdir(), 'certd-state-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const record = (name: string, at: string): CertState => ({ name, lastResult: { result: 'unchanged', at, failures: 0 } });

describe('StateStore', () => {
  it('writes one JSON file per certificate and reads it back', async () => {
    const dir = join(scratch, 'plain');
    const store = new StateStore(dir);
    assert.deepEqual(await store.get('web'), { name: 'web' }, 'no record yet');
    await store.put(record('web', '2026-01-01T00:00:00.000Z'));
    assert.deepEqual(JSON.parse(readFileSync(join(dir, 'certs', 'web.json'), 'utf8')), record('web', '2026-01-01T00:00:00.000Z'));
    // Without `remember`, what is on disk is what get answers.
    writeFileSync(join(dir, 'certs', 'web.json'), JSON.stringify(record('web', '2026-02-02T00:00:00.000Z')));
    assert.equal((await store.get('web')).lastResult?.at, '2026-02-02T00:00:00.000Z');
    assert.deepEqual((await store.all()).map((s) => s.name), ['web']);
  });

  it('with remember, reads each record from disk once and then from what it wrote or read', async () => {
    const dir = join(scratch, 'remember');
    mkdirSync(join(dir, 'certs'), { recursive: true });
    writeFileSync(join(dir, 'certs', 'a.json'), JSON.stringify(record('a', '2026-01-01T00:00:00.000Z')));
    const store = new StateStore(dir, { remember: true });
    assert.equal((await store.get('a')).lastResult?.at, '2026-01-01T00:00:00.000Z');
    assert.deepEqual(await store.get('b'), { name: 'b' });
    // Changed behind the store's back (only the lock holder writes, so this does not happen in
    // certd): the store answers from memory, which shows it did not read again.
    writeFileSync(join(dir, 'certs', 'a.json'), JSON.stringify(record('a', '2026-03-03T00:00:00.000Z')));
    writeFileSync(join(dir, 'certs', 'b.json'), JSON.stringify(record('b', '2026-03-03T00:00:00.000Z')));
    assert.equal((await store.get('a')).lastResult?.at, '2026-01-01T00:00:00.000Z');
    assert.deepEqual(await store.get('b'), { name: 'b' });
    // Its own writes reach both the file and what it answers.
    await store.put(record('a', '2026-04-04T00:00:00.000Z'));
    assert.equal((await store.get('a')).lastResult?.at, '2026-04-04T00:00:00.000Z');
    assert.equal(JSON.parse(readFileSync(join(dir, 'certs', 'a.json'), 'utf8')).lastResult.at, '2026-04-04T00:00:00.000Z');
  });

  it('with remember, hands out copies: a caller changing its record changes nothing else', async () => {
    const store = new StateStore(join(scratch, 'copies'), { remember: true });
    await store.put(record('a', '2026-01-01T00:00:00.000Z'));
    const first = (await store.get('a')) as { lastResult: { at: string } };
    first.lastResult.at = 'changed';
    assert.equal((await store.get('a')).lastResult?.at, '2026-01-01T00:00:00.000Z');
  });

  it('with remember, forgets a record whose write failed, so the file is read again', async () => {
    const dir = join(scratch, 'failed-write');
    const store = new StateStore(dir, { remember: true });
    await store.put(record('a', '2026-01-01T00:00:00.000Z'));
    // The certs directory replaced by a file: the write fails.
    rmSync(join(dir, 'certs'), { recursive: true });
    writeFileSync(join(dir, 'certs'), 'not a directory');
    await assert.rejects(store.put(record('a', '2026-05-05T00:00:00.000Z')));
    rmSync(join(dir, 'certs'));
    mkdirSync(join(dir, 'certs'));
    writeFileSync(join(dir, 'certs', 'a.json'), JSON.stringify(record('a', '2026-06-06T00:00:00.000Z')));
    assert.equal((await store.get('a')).lastResult?.at, '2026-06-06T00:00:00.000Z');
  });
});
