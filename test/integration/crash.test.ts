/**
 * Crash consistency: `certd rotate --now` (a real child process) is SIGKILLed at random moments
 * of its deployments, hundreds of times, while a separate reader process reads the target's file
 * set about every millisecond. The source alternates between three valid pairs, so every run
 * deploys. Two lanes (each its own config, state_dir and target) run side by side.
 *
 * Must hold:
 *   - the reader that resolves `..data` once never sees a key that does not match its
 *     certificate (public keys compared with node:crypto), and never a missing file;
 *   - every run that is not killed exits 0 and leaves the source's current pair live (the
 *     crashes before it do not make it think the pair is already deployed), with at most the
 *     live and the previous versioned directories left;
 *   - the final un-killed run converges the same way.
 * Figures printed: kills, runs, reads, torn pairs seen by a naive reader that opens
 * DIR/cert.pem and DIR/privkey.pem one after the other (not asserted: that reader is wrong).
 *
 * 200 kills by default, 2,000 with CERTD_TEST_LONG=1. Three in four kills land in the deployment
 * window (measured first: from the first change certd makes in the target directory to exit),
 * the rest anywhere in the run.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, symlinkSync, watch, type FSWatcher } from 'node:fs';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { captureOutput } from '../helpers/capture.js';
import { CERTD, shmDir, writeConfig } from '../helpers/cli.js';
import { TestPki } from '../helpers/pki.js';
import type { ReaderCounts } from '../helpers/set-reader.js';

const LONG = process.env['CERTD_TEST_LONG'] === '1';
// CERTD_TEST_CRASH_KILLS overrides the count (for a quick local run); the suite never sets it.
const KILLS = Number(process.env['CERTD_TEST_CRASH_KILLS']) || (LONG ? 2000 : 200);
const READER = resolve('dist/test/helpers/set-reader.js');

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** ms from spawn to the first change in the target directory (undefined: none seen). */
  firstChange?: number;
  /** ms from spawn to exit. */
  total: number;
  stderr: string;
}

/** One certd deploying into its own directory, killed over and over: state, config and target of its own. */
class Lane {
  readonly deploy: string;
  readonly config: string;
  live = 0; // index of the pair the source points at
  onChange: (() => void) | undefined;
  watcher: FSWatcher | undefined;
  total = 0;
  window = 0;

  constructor(
    readonly root: string,
    readonly pairs: string,
    readonly fingerprints: readonly string[],
    anchors: string,
  ) {
    mkdirSync(root, { recursive: true });
    this.deploy = join(root, 'deploy');
    symlinkSync(join(pairs, PAIRS[0]!), join(root, 'current'));
    const current = join(root, 'current');
    this.config = writeConfig(root, `state_dir: ${join(root, 'state')}
policy: { trust_anchors: ${anchors} }
certificates:
  - name: web
    source: { type: file, cert: ${current}/cert.pem, key: ${current}/key.pem, chain: ${current}/chain.pem }
    targets:
      - { type: tmpfs, dir: ${this.deploy} }
`);
  }

  /** Points the source at the next pair, atomically (a symlink renamed over the old one). */
  flip(): void {
    this.live = (this.live + 1) % this.fingerprints.length;
    const tmp = join(this.root, 'current.tmp');
    symlinkSync(join(this.pairs, PAIRS[this.live]!), tmp);
    renameSync(tmp, join(this.root, 'current'));
  }

  watch(): void {
    this.watcher = watch(this.deploy, () => this.onChange?.());
  }

  /** One certd run; `killAt` decides when to SIGKILL it (undefined: never). */
  run(killAt?: { afterChange: boolean; ms: number }): Promise<Run> {
    return new Promise((resolvePromise, reject) => {
      const t0 = performance.now();
      const child = spawn(process.execPath, [CERTD, 'rotate', '--now', '--config', this.config], {
        env: { ...process.env, CERTD_LOG_FORMAT: 'json' },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
      let firstChange: number | undefined;
      let timer: NodeJS.Timeout | undefined;
      const kill = () => child.kill('SIGKILL');
      this.onChange = () => {
        if (firstChange !== undefined) return;
        firstChange = performance.now() - t0;
        if (killAt?.afterChange) timer = setTimeout(kill, killAt.ms);
      };
      if (killAt && !killAt.afterChange) timer = setTimeout(kill, killAt.ms);
      const guard = setTimeout(kill, 60_000);
      child.once('error', reject);
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        clearTimeout(guard);
        this.onChange = undefined;
        captureOutput(`certd rotate --now (crash harness, ${signal ?? `exit ${String(code)}`}) stderr`, stderr);
        resolvePromise({ code, signal, total: performance.now() - t0, stderr, ...(firstChange === undefined ? {} : { firstChange }) });
      });
    });
  }

  assertConverged(r: Run, what: string): void {
    assert.equal(r.code, 0, `${what}: exit ${String(r.code)}: ${r.stderr.slice(-1500)}`);
    const served = new X509Certificate(readFileSync(join(this.deploy, 'cert.pem'))).fingerprint256;
    assert.equal(served, this.fingerprints[this.live], `${what}: the source's current pair is not the live one`);
    const v = readdirSync(this.deploy).filter((n) => n.startsWith('..') && n !== '..data');
    assert.ok(v.length <= 2, `${what}: ${v.length} versioned directories left: ${v.join(', ')}`);
    assert.ok(!existsSync(join(this.deploy, '..data_tmp')), `${what}: a temporary link was left`);
  }

  /** A first deployment (not killed), then three measured runs: how long a run and its deployment window take. */
  async prepare(): Promise<void> {
    this.assertConverged(await this.run(), 'first deployment');
    this.watch();
    const measured: Run[] = [];
    for (let i = 0; i < 3; i++) {
      this.flip();
      const r = await this.run();
      this.assertConverged(r, `measuring run ${i + 1}`);
      measured.push(r);
    }
    const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    this.total = median(measured.map((r) => r.total));
    this.window = Math.max(5, median(measured.map((r) => r.total - (r.firstChange ?? r.total))));
  }
}

const PAIRS = ['a', 'b', 'c'];
/** Two lanes keep both cores busy: a run is mostly Node's start-up, which is single-threaded. */
const LANES = 2;

describe('crash consistency of the tmpfs target under SIGKILL', () => {
  const scratch = shmDir('crash');
  const root = scratch.dir;
  const pairs = join(root, 'pairs');
  const fingerprints: string[] = [];
  const lanes: Lane[] = [];
  let reader: ChildProcess | undefined;

  before(() => {
    const pki = new TestPki(join(root, 'pki'));
    for (const name of PAIRS) {
      const leaf = pki.leaf(name, { dns: ['crash.certd.test'] });
      pki.publish(leaf, join(pairs, name));
      fingerprints.push(leaf.fingerprint);
    }
    for (let i = 0; i < LANES; i++) lanes.push(new Lane(join(root, `lane${i}`), pairs, fingerprints, pki.root.certPath));
  });

  after(() => {
    for (const l of lanes) l.watcher?.close();
    reader?.kill('SIGKILL');
    scratch.cleanup();
  });

  it(`${KILLS} SIGKILLs during deployments: no torn or missing set for a resolving reader; every later run converges`, async () => {
    // The first deployment is not killed: from then on the set must always be there.
    await Promise.all(lanes.map((l) => l.prepare()));

    reader = spawn(process.execPath, [READER, ...lanes.map((l) => l.deploy)], { stdio: ['pipe', 'pipe', 'inherit'] });
    let readerOut = '';
    reader.stdout?.on('data', (d: Buffer) => (readerOut += d.toString()));
    const readerDone = new Promise<void>((r) => reader?.once('close', () => r()));

    let kills = 0;
    let completed = 0;
    let runs = 0;
    const started = performance.now();
    await Promise.all(lanes.map(async (lane) => {
      while (kills < KILLS) {
        assert.ok(runs < KILLS * 4, `only ${kills} of ${runs} runs were killed: the kill window is off`);
        lane.flip();
        // Three in four kills inside the deployment window, the rest anywhere in the run.
        const killAt = runs % 4 === 3
          ? { afterChange: false, ms: Math.random() * lane.total }
          : { afterChange: true, ms: Math.random() * lane.window * 0.8 };
        const r = await lane.run(killAt);
        runs++;
        if (r.signal === 'SIGKILL') {
          kills++;
        } else {
          completed++;
          lane.assertConverged(r, `run ${runs} (not killed, after ${kills} kills)`);
        }
      }
    }));
    const elapsed = (performance.now() - started) / 1000;

    // The next run, not killed, converges to the new pair.
    for (const lane of lanes) {
      lane.flip();
      lane.assertConverged(await lane.run(), 'the final run');
    }

    reader.stdin?.end();
    await readerDone;
    const counts = JSON.parse(readerOut) as ReaderCounts;
    const lane0 = lanes[0]!;
    console.log(`# crash: ${kills} kills in ${runs} runs (${completed} finished first) in ${elapsed.toFixed(0)} s on ${LANES} lanes; run ${lane0.total.toFixed(0)} ms, deployment window ${lane0.window.toFixed(0)} ms`);
    console.log(`# crash: reader: ${counts.reads} reads, ${counts.mismatched} mismatched, ${counts.missing} missing, ${counts.resolvedGone} resolved sets gone before read, ${counts.fingerprints.length} distinct leaves seen; naive two-open reads torn: ${counts.naiveTorn} (${((100 * counts.naiveTorn) / Math.max(1, counts.reads)).toFixed(3)}%)`);
    assert.equal(counts.mismatched, 0, `a resolving reader saw a key that does not match its certificate: ${counts.problems.join('; ')}`);
    assert.equal(counts.missing, 0, `a reader found a file missing: ${counts.problems.join('; ')}`);
    assert.ok(counts.reads >= kills, `the reader read only ${counts.reads} times`);
    assert.ok(counts.fingerprints.length >= 2, 'the reader never saw a rotation');
    for (const fp of counts.fingerprints) assert.ok(fingerprints.includes(fp), `the reader saw a leaf that was never a source: ${fp}`);
  });
});
