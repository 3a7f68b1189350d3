/**
 * The audit trail (config `audit_log`): JSON lines, appended and fsynced one record at a time,
 * chained by SHA-256 so that editing, deleting, reordering or truncating records is detected by
 * `certd audit verify`.
 *
 * One line is `{"seq":N,"time":"...","event":"...",...fields,"prev":"<hex>","hash":"<hex>"}`:
 * - `seq` counts from 1 without gaps;
 * - `prev` is the SHA-256 of the previous line's exact bytes (without its newline); the first
 *   record of a file has GENESIS;
 * - `hash` is the SHA-256 of the line's bytes up to `,"hash"` closed by `}`: the record as
 *   written without its hash. Both are over bytes, not a re-serialisation, so no JSON
 *   canonicalisation is involved.
 * Beside the trail, `<audit_log>.head` holds `{seq, line}` of the last record written (`line`:
 * SHA-256 of its bytes), replaced atomically after each append: it reveals whole records cut
 * off the end, which a chain alone cannot. Anyone who can rewrite both files can forge a shorter
 * trail; ship the trail to write-once storage (journald forwarding, S3 object lock) for that.
 *
 * Fields are an allow-list of public facts (names, fingerprints, versions, rule ids, results,
 * times, scrubbed error messages); anything else is dropped and strings are scrubbed, so no key
 * material can reach the file. A disk that is full, read-only or denied is logged at error
 * level once per distinct error and never stops a rotation: `record()` always resolves.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { messageOf, scrub } from './errors.js';
import type { Logger } from './log.js';
import type { AuditSink } from './runtime.js';

/** `prev` of the first record of a trail. */
export const GENESIS = '0'.repeat(64);
export const HEAD_SUFFIX = '.head';

/** Field names a record may carry; every value is public (see the file comment). */
const ALLOWED_FIELDS = new Set([
  'event', 'cert', 'result', 'fingerprint', 'previousFingerprint', 'restoredFingerprint', 'expected', 'served',
  'version', 'origin', 'notAfter', 'reason', 'error', 'rules', 'targets', 'target', 'command', 'certificates',
  'again', 'step', 'connect', 'servername', 'durationMs', 'mode',
]);
/** Fields of the record itself, set by the sink. */
const RESERVED = new Set(['seq', 'time', 'prev', 'hash']);
const MAX_STRING = 2000;
const HASH_SUFFIX = /,"hash":"([0-9a-f]{64})"\}$/;

function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A value fit for the trail: scrubbed strings, finite numbers, booleans, arrays and plain objects of those. */
function publicValue(v: unknown, depth = 0): unknown {
  if (v === null || typeof v === 'boolean') return v;
  if (typeof v === 'number') return Number.isFinite(v) ? v : null;
  if (typeof v === 'string') {
    const s = scrub(v);
    return s.length > MAX_STRING ? `${s.slice(0, MAX_STRING)}…` : s;
  }
  if (depth > 3) return undefined;
  if (Array.isArray(v)) return v.map((x) => publicValue(x, depth + 1)).filter((x) => x !== undefined);
  if (typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      const clean = publicValue(x, depth + 1);
      if (clean !== undefined) out[k] = clean;
    }
    return out;
  }
  return undefined; // Buffers, KeyObjects, Secrets, class instances: never written
}

/** The allow-listed, scrubbed fields of an event, and the names that were dropped. */
export function auditFields(event: Record<string, unknown>): { fields: Record<string, unknown>; dropped: string[] } {
  const fields: Record<string, unknown> = {};
  const dropped: string[] = [];
  for (const [k, v] of Object.entries(event)) {
    if (v === undefined) continue;
    if (!ALLOWED_FIELDS.has(k) || RESERVED.has(k)) {
      dropped.push(k);
      continue;
    }
    const clean = publicValue(v);
    if (clean === undefined) dropped.push(k);
    else fields[k] = clean;
  }
  return { fields, dropped };
}

/** Serialises one record: returns the line (no newline). */
export function encodeRecord(seq: number, time: string, fields: Record<string, unknown>, prev: string): string {
  const body = JSON.stringify({ seq, time, ...fields, prev });
  const hash = sha256(body);
  return `${body.slice(0, -1)},"hash":"${hash}"}`;
}

interface Tail {
  /** Bytes of the last line (no newline), or undefined for an empty file. */
  lastLine: Buffer | undefined;
  /** seq of the last line that parses, 0 when none. */
  lastSeq: number;
  /** The file does not end with a newline (a torn write). */
  torn: boolean;
}

function seqOf(line: Buffer): number | undefined {
  try {
    const v = JSON.parse(line.toString('utf8')) as { seq?: unknown };
    return typeof v.seq === 'number' && Number.isSafeInteger(v.seq) ? v.seq : undefined;
  } catch {
    return undefined;
  }
}

function splitLines(text: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= text.length; i++) {
    if (i === text.length || text[i] === 0x0a) {
      out.push(text.subarray(start, i));
      start = i + 1;
    }
  }
  return out;
}

/** The last line of an open file and the last seq in it, read from the end in growing chunks. */
async function readTail(fh: FileHandle): Promise<Tail> {
  const { size } = await fh.stat();
  if (size === 0) return { lastLine: undefined, lastSeq: 0, torn: false };
  for (let chunk = 64 * 1024; ; chunk *= 4) {
    const start = Math.max(0, size - chunk);
    const buf = Buffer.alloc(size - start);
    await fh.read(buf, 0, buf.length, start);
    const torn = buf[buf.length - 1] !== 0x0a;
    const all = splitLines(torn ? buf : buf.subarray(0, buf.length - 1));
    // The first piece of a chunk that does not start the file may be cut by the chunk boundary.
    const whole = start === 0 ? all : all.slice(1);
    const lastLine = whole[whole.length - 1];
    let lastSeq: number | undefined;
    for (let i = whole.length - 1; i >= 0 && lastSeq === undefined; i--) lastSeq = seqOf(whole[i]!);
    if ((lastLine !== undefined && lastSeq !== undefined) || start === 0) return { lastLine, lastSeq: lastSeq ?? 0, torn };
  }
}

interface Head {
  seq: number;
  line: string;
}

async function readHead(path: string): Promise<Head | undefined> {
  try {
    const v = JSON.parse(await readFile(path + HEAD_SUFFIX, 'utf8')) as Partial<Head>;
    if (typeof v.seq === 'number' && typeof v.line === 'string') return { seq: v.seq, line: v.line };
  } catch {
    // absent or unreadable: verification reports it; the writer just goes on
  }
  return undefined;
}

async function writeHead(path: string, head: Head): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.head.${randomBytes(4).toString('hex')}`);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(`${JSON.stringify(head)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path + HEAD_SUFFIX);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

/** One queue per file, shared by every sink of this process (a SIGHUP builds a new runtime). */
const queues = new Map<string, Promise<void>>();

export interface FileAuditSinkOptions {
  /** Wall clock for `time`; the runtime passes its own. */
  now?: () => Date;
}

export class FileAuditSink implements AuditSink {
  readonly path: string;
  readonly #log: Logger;
  readonly #now: () => Date;
  /** Errors already logged (by code), so a full disk is one loud line, not one per record. */
  readonly #reported = new Set<string>();

  constructor(path: string, log: Logger, options: FileAuditSinkOptions = {}) {
    this.path = path;
    this.#log = log;
    this.#now = options.now ?? (() => new Date());
  }

  /** Appends one record. Never rejects: failures are logged (once per distinct error). */
  record(event: Record<string, unknown>): Promise<void> {
    const previous = queues.get(this.path) ?? Promise.resolve();
    const next = previous.then(() => this.#append(event));
    queues.set(this.path, next);
    void next.finally(() => {
      if (queues.get(this.path) === next) queues.delete(this.path);
    });
    return next;
  }

  async #append(event: Record<string, unknown>): Promise<void> {
    const { fields, dropped } = auditFields(event);
    if (dropped.length > 0) this.#log.warn({ audit: this.path, dropped }, 'audit record fields outside the allow-list were dropped');
    try {
      await mkdir(dirname(this.path), { recursive: true, mode: 0o750 });
      // 'a+': O_APPEND for the write (whole lines land at the end even with another writer) and
      // readable, so the chain continues from what is really on disk.
      const fh = await open(this.path, 'a+', 0o600);
      try {
        const regular = (await fh.stat()).isFile();
        const tail = regular ? await readTail(fh) : { lastLine: undefined, lastSeq: 0, torn: false };
        const head = regular ? await readHead(this.path) : undefined;
        if (head && head.seq > tail.lastSeq) {
          this.#log.error(
            { audit: this.path, headSeq: head.seq, lastSeq: tail.lastSeq },
            'the audit trail is shorter than its head file records: records were removed from its end; the gap stays visible in the chain',
          );
        }
        // After a cut the sequence continues past the head, so the gap is part of the record.
        const seq = Math.max(tail.lastSeq, head?.seq ?? 0) + 1;
        const prev = tail.lastLine === undefined ? GENESIS : sha256(tail.lastLine);
        const line = encodeRecord(seq, this.#now().toISOString(), fields, prev);
        // A torn last line (a write cut short) is closed first so this record stands on its own line.
        const { bytesWritten } = await fh.write(`${tail.torn ? '\n' : ''}${line}\n`);
        if (bytesWritten !== Buffer.byteLength(line) + 1 + (tail.torn ? 1 : 0)) throw Object.assign(new Error('short write'), { code: 'ESHORT' });
        await fh.sync();
        if (regular) await writeHead(this.path, { seq, line: sha256(line) });
      } finally {
        await fh.close();
      }
      if (this.#reported.size > 0) {
        this.#reported.clear();
        this.#log.warn({ audit: this.path }, 'the audit trail is writable again');
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? messageOf(err);
      if (!this.#reported.has(code)) {
        this.#reported.add(code);
        const why = code === 'ENOSPC' ? 'the disk is full' : code === 'EROFS' ? 'the file system is read-only' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : 'it failed';
        this.#log.error(
          { audit: this.path, code, err: messageOf(err), event: fields['event'] },
          `AUDIT TRAIL NOT WRITTEN: ${why}; rotations go on without audit records until it is fixed`,
        );
      }
    }
  }
}

export interface AuditRecord {
  seq: number;
  time: string;
  event: string;
  prev: string;
  hash: string;
  [field: string]: unknown;
}

export interface AuditVerification {
  ok: boolean;
  /** Records read and intact before the first bad one (all of them when ok). */
  records: number;
  firstBad?: { line: number; seq: number | null; reason: string };
  /** What the head file says, when there is one. */
  head?: { seq: number; matches: boolean } | undefined;
  /** Facts that do not break the chain but limit what it proves. */
  warnings: string[];
}

interface Parsed {
  line: number;
  bytes: Buffer;
  record?: AuditRecord;
  problem?: string;
}

function parseLine(bytes: Buffer, line: number): Parsed {
  const text = bytes.toString('utf8');
  if (text === '') return { line, bytes, problem: 'empty line' };
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { line, bytes, problem: 'not a JSON record (damaged or cut short)' };
  }
  const r = v as Partial<AuditRecord> | null;
  if (!r || typeof r !== 'object' || typeof r.seq !== 'number' || typeof r.prev !== 'string' || typeof r.hash !== 'string') {
    return { line, bytes, problem: 'not an audit record (seq, prev or hash missing)' };
  }
  return { line, bytes, record: r as AuditRecord };
}

/**
 * Checks a trail: every line parses, its hash covers its content, `prev` is the hash of the line
 * before, `seq` runs 1, 2, 3 ... and the head file (when present) is not ahead of the file.
 * Names the first bad record with its line number, seq and why.
 */
export async function verifyAuditFile(path: string): Promise<AuditVerification> {
  const data = await readFile(path);
  const warnings: string[] = [];
  const torn = data.length > 0 && data[data.length - 1] !== 0x0a;
  const body = data.length > 0 && !torn ? data.subarray(0, data.length - 1) : data;
  const parts = body.length > 0 || torn ? splitLines(body) : [];
  const parsed = parts.map((b, i) => parseLine(b, i + 1));
  const seqsAhead = parsed.map((p) => p.record?.seq);
  const bad = (p: Parsed, seq: number | null, reason: string, records: number): AuditVerification => ({
    ok: false,
    records,
    firstBad: { line: p.line, seq, reason },
    warnings,
  });

  let prevBytes: Buffer | undefined;
  let expected = 1;
  for (const [i, p] of parsed.entries()) {
    if (p.problem || !p.record) return bad(p, null, `${p.problem ?? 'unreadable'} (expected seq ${expected})`, i);
    const r = p.record;
    const text = p.bytes.toString('utf8');
    const m = HASH_SUFFIX.exec(text);
    if (!m || m[1] !== r.hash) return bad(p, r.seq, 'the hash field is not the last field of the record', i);
    if (sha256(`${text.slice(0, m.index)}}`) !== r.hash) return bad(p, r.seq, 'the record does not match its hash: it was edited', i);
    if (i === parsed.length - 1 && torn) return bad(p, r.seq, 'the last record has no newline: the file was cut short', i);
    if (r.seq !== expected) {
      if (r.seq < expected) return bad(p, r.seq, `out of order: seq ${r.seq} where seq ${expected} was expected (records reordered or repeated)`, i);
      const later = seqsAhead.slice(i + 1).includes(expected);
      return later
        ? bad(p, r.seq, `out of order: seq ${r.seq} where seq ${expected} was expected; seq ${expected} comes later (records reordered)`, i)
        : bad(p, r.seq, `seq ${r.seq} where seq ${expected} was expected: ${r.seq - expected} record(s) missing (deleted)`, i);
    }
    const wantPrev = prevBytes === undefined ? GENESIS : sha256(prevBytes);
    if (r.prev !== wantPrev) {
      return bad(p, r.seq, prevBytes === undefined
        ? 'the first record does not start the chain (prev is not the genesis value): records before it were removed'
        : 'prev is not the hash of the line before: that record was edited or replaced', i);
    }
    prevBytes = p.bytes;
    expected = r.seq + 1;
  }

  const records = parsed.length;
  const head = await readHead(path);
  let headInfo: AuditVerification['head'];
  if (!head) {
    if (records > 0) warnings.push(`no head file (${path}${HEAD_SUFFIX}): records cut off the end of the trail could not be detected`);
  } else {
    const at = parsed.find((p) => p.record?.seq === head.seq);
    const matches = at !== undefined && sha256(at.bytes) === head.line;
    headInfo = { seq: head.seq, matches };
    const lastSeq = expected - 1;
    if (head.seq > lastSeq) {
      return {
        ok: false,
        records,
        firstBad: { line: records + 1, seq: lastSeq + 1, reason: `missing: the trail ends at seq ${lastSeq} but its head file records seq ${head.seq}: ${head.seq - lastSeq} record(s) cut off the end` },
        head: headInfo,
        warnings,
      };
    }
    if (!matches && at) {
      return { ok: false, records, firstBad: { line: at.line, seq: head.seq, reason: 'the record differs from the one the head file recorded when it was written' }, head: headInfo, warnings };
    }
    // head.seq < lastSeq: the head write after an append did not happen (a crash); harmless.
  }
  return { ok: true, records, head: headInfo, warnings };
}

/** The records of a trail that parse, oldest first (for the report's history; no verification). */
export async function readAuditRecords(path: string): Promise<AuditRecord[]> {
  const text = await readFile(path, 'utf8');
  const out: AuditRecord[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    try {
      const r = JSON.parse(line) as AuditRecord;
      if (typeof r.seq === 'number') out.push(r);
    } catch {
      // damaged lines are verification's business
    }
  }
  return out;
}
