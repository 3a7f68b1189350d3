/**
 * The audit trail's hash chain: an untouched trail verifies, and each way of tampering with it
 * (edit, edit with a recomputed hash, delete, reorder, cut mid-record, cut whole records off the
 * end) is named at the first bad record. A full disk never makes record() reject.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { FileAuditSink, GENESIS, HEAD_SUFFIX, readAuditRecords, verifyAuditFile } from '../../src/audit.js';
import { createLogger, silentLogger } from '../../src/log.js';

const root = mkdtempSync('/dev/shm/certd-unit-audit-');
after(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
/** A fresh trail of `count` records written through the sink, concurrently (the sink serialises). */
async function trail(count = 6): Promise<string> {
  const path = join(root, `t${++n}`, 'audit.jsonl');
  const sink = new FileAuditSink(path, silentLogger);
  await Promise.all(Array.from({ length: count }, (_, i) => sink.record({ event: 'rotation', cert: `c${i + 1}`, result: 'deployed', fingerprint: `FP${i + 1}` })));
  return path;
}

const lines = (path: string): string[] => readFileSync(path, 'utf8').split('\n').slice(0, -1);
const write = (path: string, ls: string[]): void => writeFileSync(path, ls.map((l) => `${l}\n`).join(''));
const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

describe('audit trail', () => {
  it('an untouched trail verifies; records are chained, numbered and in the order they were recorded', async () => {
    const path = await trail(6);
    const v = await verifyAuditFile(path);
    assert.deepEqual({ ok: v.ok, records: v.records, firstBad: v.firstBad }, { ok: true, records: 6, firstBad: undefined });
    assert.deepEqual(v.head, { seq: 6, matches: true });
    assert.deepEqual(v.warnings, []);
    const recs = await readAuditRecords(path);
    assert.deepEqual(recs.map((r) => r.seq), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(recs.map((r) => r['cert']), ['c1', 'c2', 'c3', 'c4', 'c5', 'c6']);
    assert.equal(recs[0]!.prev, GENESIS);
    const ls = lines(path);
    assert.equal(recs[1]!.prev, sha256(ls[0]!));
    // hash: SHA-256 of the line as written without its hash field
    assert.equal(recs[2]!.hash, sha256(ls[2]!.replace(/,"hash":"[0-9a-f]{64}"\}$/, '}')));
    assert.ok(typeof recs[0]!.time === 'string' && !Number.isNaN(Date.parse(recs[0]!.time)));
  });

  it('a new sink continues the chain from the last line on disk', async () => {
    const path = await trail(3);
    await new FileAuditSink(path, silentLogger).record({ event: 'reload', result: 'ok', command: 'nginx -s reload' });
    const v = await verifyAuditFile(path);
    assert.equal(v.ok, true, JSON.stringify(v));
    assert.equal(v.records, 4);
    assert.equal((await readAuditRecords(path))[3]!.prev, sha256(lines(path)[2]!));
  });

  it('editing a line is named at that line', async () => {
    const path = await trail(6);
    const ls = lines(path);
    ls[2] = ls[2]!.replace('"FP3"', '"FPX"');
    write(path, ls);
    const v = await verifyAuditFile(path);
    assert.equal(v.ok, false);
    assert.deepEqual({ line: v.firstBad?.line, seq: v.firstBad?.seq }, { line: 3, seq: 3 });
    assert.match(v.firstBad!.reason, /does not match its hash: it was edited/);
    assert.equal(v.records, 2);
  });

  it('an edit that recomputes the record\'s own hash is caught by the next record\'s prev', async () => {
    const path = await trail(6);
    const ls = lines(path);
    const body = ls[2]!.replace(/,"hash":"[0-9a-f]{64}"\}$/, '}').replace('"FP3"', '"FPX"');
    ls[2] = `${body.slice(0, -1)},"hash":"${sha256(body)}"}`;
    write(path, ls);
    const v = await verifyAuditFile(path);
    assert.deepEqual({ ok: v.ok, line: v.firstBad?.line, seq: v.firstBad?.seq }, { ok: false, line: 4, seq: 4 });
    assert.match(v.firstBad!.reason, /prev is not the hash of the line before/);
  });

  it('deleting a line is named where the record is missing', async () => {
    const path = await trail(6);
    const ls = lines(path);
    ls.splice(2, 1);
    write(path, ls);
    const v = await verifyAuditFile(path);
    assert.deepEqual({ ok: v.ok, line: v.firstBad?.line, seq: v.firstBad?.seq }, { ok: false, line: 3, seq: 4 });
    assert.match(v.firstBad!.reason, /seq 4 where seq 3 was expected: 1 record\(s\) missing/);
  });

  it('deleting the first line is caught too', async () => {
    const path = await trail(4);
    write(path, lines(path).slice(1));
    const v = await verifyAuditFile(path);
    assert.deepEqual({ ok: v.ok, line: v.firstBad?.line, seq: v.firstBad?.seq }, { ok: false, line: 1, seq: 2 });
  });

  it('reordering two lines is named at the first of them', async () => {
    const path = await trail(6);
    const ls = lines(path);
    [ls[1], ls[2]] = [ls[2]!, ls[1]!];
    write(path, ls);
    const v = await verifyAuditFile(path);
    assert.deepEqual({ ok: v.ok, line: v.firstBad?.line, seq: v.firstBad?.seq }, { ok: false, line: 2, seq: 3 });
    assert.match(v.firstBad!.reason, /out of order: seq 3 where seq 2 was expected/);
  });

  it('truncating the file inside a record names that record', async () => {
    const path = await trail(6);
    const size = readFileSync(path).length;
    truncateSync(path, size - 20);
    const v = await verifyAuditFile(path);
    assert.deepEqual({ ok: v.ok, line: v.firstBad?.line }, { ok: false, line: 6 });
    assert.match(v.firstBad!.reason, /cut short/);
    assert.match(v.firstBad!.reason, /expected seq 6/);
  });

  it('truncating only the final newline is caught', async () => {
    const path = await trail(3);
    truncateSync(path, readFileSync(path).length - 1);
    const v = await verifyAuditFile(path);
    assert.deepEqual({ ok: v.ok, line: v.firstBad?.line, seq: v.firstBad?.seq }, { ok: false, line: 3, seq: 3 });
  });

  it('cutting whole records off the end is caught by the head file', async () => {
    const path = await trail(6);
    write(path, lines(path).slice(0, 4));
    const v = await verifyAuditFile(path);
    assert.deepEqual({ ok: v.ok, line: v.firstBad?.line, seq: v.firstBad?.seq }, { ok: false, line: 5, seq: 5 });
    assert.match(v.firstBad!.reason, /ends at seq 4 but its head file records seq 6: 2 record\(s\) cut off the end/);
  });

  it('after a cut, the next record keeps the gap visible instead of papering over it', async () => {
    const path = await trail(5);
    write(path, lines(path).slice(0, 3));
    const logs: string[] = [];
    await new FileAuditSink(path, createLogger({ level: 'debug', format: 'json', write: (l) => void logs.push(l) })).record({ event: 'rotation', cert: 'x', result: 'unchanged' });
    assert.ok(logs.some((l) => /"level":"error"/.test(l) && /removed from its end/.test(l)), logs.join(''));
    const v = await verifyAuditFile(path);
    assert.deepEqual({ ok: v.ok, line: v.firstBad?.line, seq: v.firstBad?.seq }, { ok: false, line: 4, seq: 6 });
  });

  it('without its head file a trail still verifies, with a warning saying what that cannot prove', async () => {
    const path = await trail(3);
    unlinkSync(path + HEAD_SUFFIX);
    const v = await verifyAuditFile(path);
    assert.equal(v.ok, true);
    assert.match(v.warnings.join(' '), /no head file/);
  });

  it('writes only allow-listed public fields, scrubbed: no key material can reach the file', async () => {
    const path = join(root, 'secrets', 'audit.jsonl');
    const logs: string[] = [];
    const sink = new FileAuditSink(path, createLogger({ level: 'debug', format: 'json', write: (l) => void logs.push(l) }));
    const pem = `-----BEGIN ${'PRIVATE'} KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END ${'PRIVATE'} KEY-----`;
    await sink.record({
      event: 'rotation',
      cert: 'web',
      result: 'failed',
      privateKey: pem,
      key: Buffer.from('secret'),
      error: { code: 'E_SOURCE', message: `fetching: got ${pem} with pin=1234` },
    });
    const text = readFileSync(path, 'utf8');
    assert.doesNotMatch(text, /PRIVATE KEY|MIIEvQ|1234/);
    const [rec] = await readAuditRecords(path);
    assert.equal(rec!['privateKey'], undefined);
    assert.equal(rec!['key'], undefined);
    assert.equal((rec!['error'] as { code: string }).code, 'E_SOURCE');
    assert.ok(logs.some((l) => /dropped/.test(l) && /privateKey/.test(l)));
    assert.equal((await verifyAuditFile(path)).ok, true);
  });

  it('a full disk (/dev/full) logs one error per distinct error and record() still resolves', async () => {
    const logs: string[] = [];
    const sink = new FileAuditSink('/dev/full', createLogger({ level: 'debug', format: 'json', write: (l) => void logs.push(l) }));
    await sink.record({ event: 'rotation', cert: 'a', result: 'deployed' });
    await sink.record({ event: 'rotation', cert: 'b', result: 'deployed' });
    await Promise.all([sink.record({ event: 'reload', result: 'ok' }), sink.record({ event: 'reload', result: 'ok' })]);
    const errors = logs.filter((l) => /"level":"error"/.test(l));
    assert.equal(errors.length, 1, logs.join(''));
    assert.match(errors[0]!, /ENOSPC/);
    assert.match(errors[0]!, /AUDIT TRAIL NOT WRITTEN: the disk is full/);
    assert.equal(existsSync(`/dev/full${HEAD_SUFFIX}`), false);
  });

  it('an unwritable path (a file where a folder should be) is logged and never thrown', async () => {
    const file = join(root, 'plain-file');
    writeFileSync(file, 'x');
    const logs: string[] = [];
    const sink = new FileAuditSink(join(file, 'audit.jsonl'), createLogger({ level: 'debug', format: 'json', write: (l) => void logs.push(l) }));
    await assert.doesNotReject(sink.record({ event: 'rotation', cert: 'a', result: 'deployed' }));
    assert.equal(logs.filter((l) => /"level":"error"/.test(l) && /ENOTDIR|EEXIST/.test(l)).length, 1, logs.join(''));
  });
});
