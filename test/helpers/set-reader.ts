/**
 * A reader of tmpfs targets' file sets, run as its own process (node set-reader.js DIR...) next
 * to certd processes that are being killed: it reads every set over and over (pausing about a
 * millisecond between rounds, so that it leaves CPU to certd) until its stdin closes, then
 * prints its counts, summed over the directories, as one JSON line on stdout. It reads two ways:
 *   - as documented (DESIGN.md): resolve `..data` once, then read cert.pem and privkey.pem from
 *     that versioned directory: the pair must always match;
 *   - naively: open DIR/cert.pem, then DIR/privkey.pem (each through the `..data` symlink): a
 *     swap between the two opens can pair the old certificate with the new key. Counted only.
 * The key PEM never leaves this process; only counts and fingerprints are printed.
 */
import { createHash, createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as pause } from 'node:timers/promises';

export interface ReaderCounts {
  /** Iterations (each one resolved read plus one naive read). */
  reads: number;
  /** Resolved reads whose key did not match the certificate. MUST be 0. */
  mismatched: number;
  /** `..data`, DIR/cert.pem or DIR/privkey.pem missing, or a file that does not parse. MUST be 0. */
  missing: number;
  /** A resolved version directory removed before it was read (the reader re-resolves). */
  resolvedGone: number;
  /** Naive two-open reads that paired a certificate with another set's key. A figure. */
  naiveTorn: number;
  /** Distinct certificate fingerprints seen live. */
  fingerprints: string[];
  /** First problems, for the failure message (paths and error codes only). */
  problems: string[];
}

const spkiCache = new Map<string, string>();

function spkiOf(pem: string, kind: 'cert' | 'key'): string {
  const cached = spkiCache.get(pem);
  if (cached !== undefined) return cached;
  const der = kind === 'cert'
    ? new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' })
    : createPublicKey(createPrivateKey(pem)).export({ type: 'spki', format: 'der' });
  const h = createHash('sha256').update(der).digest('hex');
  if (spkiCache.size > 64) spkiCache.clear();
  spkiCache.set(pem, h);
  return h;
}

function code(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).name;
}

export async function readLoop(dirs: readonly string[], stop: () => boolean): Promise<ReaderCounts> {
  const c: ReaderCounts = { reads: 0, mismatched: 0, missing: 0, resolvedGone: 0, naiveTorn: 0, fingerprints: [], problems: [] };
  const seen = new Set<string>();
  const problem = (p: string) => {
    if (c.problems.length < 10) c.problems.push(p);
  };
  while (!stop()) {
    for (const dir of dirs) readOnce(dir, c, seen, problem);
    await pause(1);
  }
  return c;
}

function readOnce(dir: string, c: ReaderCounts, seen: Set<string>, problem: (p: string) => void): void {
  {
    c.reads++;
    // The documented way.
    for (let attempt = 0; attempt < 5; attempt++) {
      let version: string;
      try {
        version = readlinkSync(join(dir, '..data'));
      } catch (err) {
        c.missing++;
        problem(`readlink ..data: ${code(err)}`);
        break;
      }
      let cert: string;
      let key: string;
      try {
        cert = readFileSync(join(dir, version, 'cert.pem'), 'utf8');
        key = readFileSync(join(dir, version, 'privkey.pem'), 'utf8');
      } catch (err) {
        if (code(err) === 'ENOENT') {
          c.resolvedGone++;
          continue;
        }
        c.missing++;
        problem(`${version}: ${code(err)}`);
        break;
      }
      try {
        if (spkiOf(cert, 'cert') !== spkiOf(key, 'key')) {
          c.mismatched++;
          problem(`${version}: the key does not match the certificate`);
        }
        const fp = new X509Certificate(cert).fingerprint256;
        if (!seen.has(fp)) {
          seen.add(fp);
          c.fingerprints.push(fp);
        }
      } catch (err) {
        c.missing++;
        problem(`${version}: unreadable set (${code(err)})`);
      }
      break;
    }
    // The naive way.
    try {
      const cert = readFileSync(join(dir, 'cert.pem'), 'utf8');
      const key = readFileSync(join(dir, 'privkey.pem'), 'utf8');
      if (spkiOf(cert, 'cert') !== spkiOf(key, 'key')) c.naiveTorn++;
    } catch (err) {
      c.missing++;
      problem(`naive read: ${code(err)}`);
    }
  }
}

// Run as a program: node set-reader.js DIR...
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const dirs = process.argv.slice(2);
  if (dirs.length === 0) {
    process.stderr.write('usage: set-reader.js DIR...\n');
    process.exit(2);
  }
  let stopped = false;
  process.stdin.on('data', () => undefined);
  process.stdin.on('end', () => (stopped = true));
  process.stdin.on('close', () => (stopped = true));
  const counts = await readLoop(dirs, () => stopped);
  process.stdout.write(`${JSON.stringify(counts)}\n`);
}
