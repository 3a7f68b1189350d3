/**
 * The daemon under a FakeClock and a hand-driven ticker: no test waits on the wall clock. The
 * certificates come from an in-test Source (a real CA issuing real leaves) and go to an in-test
 * Target that writes complete sets into a /dev/shm directory, swapped with one rename.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FakeClock } from '../../src/clock.js';
import type { FetchRef, Source, Target } from '../../src/contracts.js';
import { askDaemon } from '../../src/control.js';
import { BACKOFF_BASE_MS, Daemon, type DaemonOptions, type LiveStatus, ManualTicker, nextAttempt } from '../../src/daemon.js';
import { CertdError } from '../../src/errors.js';
import { type CaSigner, issueLeaf, selfSignedCa } from '../../src/issuer.js';
import { createLogger } from '../../src/log.js';
import type { Material } from '../../src/material.js';
import type { CycleReport } from '../../src/rotate.js';
import { buildRuntime } from '../../src/runtime.js';
import { softwareSigner } from '../../providers/local-ca.js';
import { type Io, main } from '../../src/cli.js';
import { samples } from '../helpers/metrics.js';

const DAY = 86_400_000;
const HOUR = 3_600_000;
const MINUTE = 60_000;
const root = mkdtempSync('/dev/shm/certd-unit-daemon-');
after(() => rmSync(root, { recursive: true, force: true }));

let ca: CaSigner;
before(async () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  let der: Buffer | undefined;
  ca = softwareSigner(privateKey, async () => der!, 'test-ca');
  // Valid long before and after the fake clock's dates, so backdated leaves chain correctly.
  der = await selfSignedCa(ca, publicKey.export({ type: 'spki', format: 'der' }), 'certd daemon test CA', 20 * 365 * DAY, new Date('2020-01-01T00:00:00Z'), AbortSignal.timeout(10_000));
});

interface Deferred<T = void> {
  promise: Promise<T>;
  resolve: (v: T) => void;
}
function deferred<T = void>(): Deferred<T> {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** Lets pending I/O callbacks and promise chains run, without any timer. */
async function settle(rounds = 30): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
}

/** A source that issues real leaves from the test CA; it can fail, or hold until released. */
class TestSource implements Source {
  readonly fetched: Date[] = [];
  failing = false;
  hold: { started: Deferred; release: Deferred } | undefined;
  aborted = 0;
  #material: Material | undefined;

  constructor(
    readonly name: string,
    readonly clock: FakeClock,
    readonly ttlMs: number,
    readonly issuedAt: () => Date = () => clock.now(),
  ) {}

  /** The next fetch issues a new certificate (until then the same one is returned). */
  renew(): void {
    this.#material = undefined;
  }

  async fetch(_ref: FetchRef, signal: AbortSignal): Promise<Material> {
    this.fetched.push(this.clock.now());
    const hold = this.hold;
    if (hold) {
      hold.started.resolve();
      await new Promise<void>((resolve, reject) => {
        if (signal.aborted) return reject(signal.reason);
        signal.addEventListener('abort', () => reject(signal.reason), { once: true });
        void hold.release.promise.then(resolve);
      }).catch((err: unknown) => {
        this.aborted++;
        throw new CertdError('E_SOURCE', `fetching test:${this.name}: aborted`, { cause: err });
      });
    }
    if (this.failing) throw new CertdError('E_SOURCE', `fetching test:${this.name}: service unavailable`);
    this.#material ??= await issueLeaf(ca, { dnsNames: [`${this.name}.certd.test`], ttlMs: this.ttlMs, keyType: 'ec-p256', now: this.issuedAt() }, `test:${this.name}`, signal);
    return this.#material;
  }
}

/**
 * A target writing fullchain.pem and privkey.pem into a versioned directory, made live by one
 * rename of the `current` symlink. `gate` pauses a stage between the two files.
 */
class TestTarget implements Target {
  readonly description: string;
  readonly needsReload = false;
  readonly stageSignals: AbortSignal[] = [];
  staging = 0;
  maxStaging = 0;
  gate: { reached: Deferred; release: Deferred } | undefined;
  #previous: string | null = null;
  #staged: string | undefined;
  #n = 0;

  constructor(readonly dir: string) {
    this.description = `test:${dir}`;
  }

  async stage(m: Material, signal: AbortSignal): Promise<void> {
    this.stageSignals.push(signal);
    this.staging++;
    this.maxStaging = Math.max(this.maxStaging, this.staging);
    try {
      await mkdir(this.dir, { recursive: true });
      const previous = await readlink(join(this.dir, 'current')).catch(() => null);
      const version = `v${Date.now()}-${++this.#n}`;
      await mkdir(join(this.dir, version));
      await writeFile(join(this.dir, version, 'fullchain.pem'), m.fullchainPem);
      const gate = this.gate;
      if (gate) {
        gate.reached.resolve();
        await gate.release.promise;
      }
      // A real target using `signal` for its I/O would give up here if it were aborted.
      if (signal.aborted) throw new CertdError('E_TARGET', `deploying to ${this.dir}: aborted mid-stage`);
      await writeFile(join(this.dir, version, 'privkey.pem'), m.key.kind === 'pem' ? m.key.pem.reveal() : '', { mode: 0o600 });
      await symlink(version, join(this.dir, 'current.tmp'));
      await rename(join(this.dir, 'current.tmp'), join(this.dir, 'current'));
      this.#previous = previous;
      this.#staged = version;
    } finally {
      this.staging--;
    }
  }

  async commit(): Promise<void> {
    if (this.#previous) await rm(join(this.dir, this.#previous), { recursive: true, force: true });
    this.#previous = null;
    this.#staged = undefined;
  }

  async rollback(): Promise<void> {
    if (this.#staged === undefined) return;
    if (this.#previous) {
      await symlink(this.#previous, join(this.dir, 'current.tmp'));
      await rename(join(this.dir, 'current.tmp'), join(this.dir, 'current'));
    } else {
      await rm(join(this.dir, 'current'), { force: true });
    }
    await rm(join(this.dir, this.#staged), { recursive: true, force: true });
    this.#staged = undefined;
  }
}

/** What a reader of the target sees: the live set must be whole (the key belongs to the leaf). */
function liveSet(dir: string): { fingerprint: string } {
  const live = join(dir, readlinkSync(join(dir, 'current')));
  const fullchain = readFileSync(join(live, 'fullchain.pem'), 'utf8');
  const leaf = new X509Certificate(fullchain);
  const key = createPrivateKey(readFileSync(join(live, 'privkey.pem')));
  const spki = (k: ReturnType<typeof createPublicKey>) => k.export({ type: 'spki', format: 'der' }).toString('hex');
  assert.equal(spki(createPublicKey(key)), spki(leaf.publicKey), `the live set in ${dir} holds a key that is not the leaf's`);
  return { fingerprint: leaf.fingerprint256 };
}

interface CertSpec {
  name: string;
  ttlMs?: number;
  issuedAt?: (clock: FakeClock) => Date;
}

/** The test config; top-level keys in `extra` replace the defaults. */
function configYaml(dir: string, certs: readonly string[], extra = ''): string {
  const overridden = new Set(extra.split('\n').map((l) => /^([a-z_]+):/.exec(l)?.[1]).filter(Boolean));
  const defaults = [`state_dir: ${dir}/state`, 'schedule: "*/5 * * * *"', 'jitter: 0s', 'renew_before: 30d', 'policy: { min_remaining: 1m }', 'log: { level: debug }'];
  return `${defaults.filter((l) => !overridden.has(l.split(':')[0])).join('\n')}
${extra}
certificates:
${certs
  .map(
    (n) => `  - name: ${n}
    hostnames: [${n}.certd.test]
    source: { type: file, cert: unused.pem, key: unused.pem }
    targets: [{ type: tmpfs, dir: ${dir}/unused-${n} }]`,
  )
  .join('\n')}
`;
}

interface Harness {
  daemon: Daemon;
  clock: FakeClock;
  ticker: ManualTicker;
  expressions: string[];
  sources: Map<string, TestSource>;
  targets: Map<string, TestTarget>;
  logs: string[];
  dir: string;
  configPath: string;
  stateDir: string;
  addCert(spec: CertSpec): void;
  logged(msg: string): Record<string, unknown>[];
}

let harnessCount = 0;

function harness(certs: CertSpec[], o: { extra?: string; options?: Partial<DaemonOptions> } = {}): Harness {
  const dir = join(root, `h${++harnessCount}`);
  mkdirSync(dir, { recursive: true });
  const clock = new FakeClock('2026-03-01T00:00:00Z');
  const ticker = new ManualTicker();
  const expressions: string[] = [];
  const sources = new Map<string, TestSource>();
  const targets = new Map<string, TestTarget>();
  const logs: string[] = [];
  const configPath = join(dir, 'config.yaml');
  const addCert = (spec: CertSpec): void => {
    const issuedAt = spec.issuedAt;
    sources.set(spec.name, new TestSource(spec.name, clock, spec.ttlMs ?? 90 * DAY, issuedAt ? () => issuedAt(clock) : undefined));
    targets.set(spec.name, new TestTarget(join(dir, 'out', spec.name)));
  };
  certs.forEach(addCert);
  writeFileSync(configPath, configYaml(dir, certs.map((c) => c.name), o.extra));
  const daemon = new Daemon({
    configPath,
    clock,
    env: {},
    log: createLogger({ level: 'debug', format: 'json', write: (line) => void logs.push(line) }),
    random: () => 0,
    fetchAttempts: 1,
    ticker: (expression) => {
      expressions.push(expression);
      return ticker;
    },
    // The config's providers are replaced by the in-test pair, certificate by certificate.
    buildRuntime: async (loaded, options) => {
      const rt = await buildRuntime(loaded, options);
      return {
        ...rt,
        certificates: rt.certificates.map((c) => ({ ...c, source: sources.get(c.name)!, targets: [targets.get(c.name)!] })),
      };
    },
    ...o.options,
  });
  return {
    daemon,
    clock,
    ticker,
    expressions,
    sources,
    targets,
    logs,
    dir,
    configPath,
    stateDir: join(dir, 'state'),
    addCert,
    logged: (msg) => logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['msg'] === msg),
  };
}

const src = (h: Harness, name: string): TestSource => h.sources.get(name)!;
const tgt = (h: Harness, name: string): TestTarget => h.targets.get(name)!;

describe('certd run: the schedule', () => {
  it('runs a first cycle at start, then one per tick; sources are asked every cycle', async () => {
    const h = harness([{ name: 'web' }]);
    const cycles: CycleReport[] = [];
    h.daemon.on('cycle', (r) => cycles.push(r));
    let ready = 0;
    h.daemon.on('ready', () => ready++);
    await h.daemon.start();
    assert.equal(ready, 1, 'ready after the first cycle');
    assert.deepEqual(h.expressions, ['*/5 * * * *'], 'the config schedule drives the ticker');
    assert.equal(src(h, 'web').fetched.length, 1);
    assert.equal(cycles[0]?.certificates[0]?.result, 'deployed');
    const first = liveSet(tgt(h, 'web').dir).fingerprint;

    await h.clock.advance(5 * MINUTE);
    await h.ticker.tick();
    await h.clock.advance(5 * MINUTE);
    await h.ticker.tick();
    assert.equal(src(h, 'web').fetched.length, 3, 'a source is fetched on every tick');
    assert.deepEqual(cycles.map((c) => c.certificates[0]?.result), ['deployed', 'unchanged', 'unchanged']);
    assert.equal(liveSet(tgt(h, 'web').dir).fingerprint, first);

    const line = h.logged('certificate checked').at(-1);
    assert.equal(line?.['cert'], 'web');
    assert.equal(line?.['step'], 'cycle');
    assert.equal(line?.['result'], 'unchanged');
    assert.equal(typeof line?.['durationMs'], 'number');
    await h.daemon.stop();
  });

  it('waits a random delay within [0, jitter] before each cycle', async () => {
    const h = harness([{ name: 'web' }], { extra: 'jitter: 30s', options: { random: Math.random } });
    await h.daemon.start();
    const starts: number[] = [];
    h.daemon.on('cycle-start', () => starts.push(h.clock.now().getTime()));
    const delays: number[] = [];
    for (let i = 0; i < 20; i++) {
      const tickAt = h.clock.now().getTime();
      const done = h.ticker.tick();
      await settle(); // the jitter sleep is registered with the clock
      await h.clock.advance(30_000);
      await done;
      assert.equal(starts.length, i + 1, `tick ${i}: the cycle ran`);
      delays.push(starts[i]! - tickAt);
    }
    for (const d of delays) assert.ok(d >= 0 && d <= 30_000, `delay ${d} ms is within [0, 30s]`);
    assert.ok(new Set(delays).size > 5, `the delays are spread: ${delays.join(', ')}`);
    await h.daemon.stop();
  });

  it('does not start the cycle before its jitter has passed', async () => {
    const h = harness([{ name: 'web' }], { extra: 'jitter: 30s', options: { random: () => 0.5 } });
    await h.daemon.start();
    let started = false;
    h.daemon.on('cycle-start', () => (started = true));
    const done = h.ticker.tick();
    await settle();
    await h.clock.advance(14_999);
    await settle();
    assert.equal(started, false, 'still waiting at 14.999 s of a 15 s delay');
    assert.equal(src(h, 'web').fetched.length, 1);
    await h.clock.advance(1);
    await done;
    assert.equal(started, true);
    assert.equal(src(h, 'web').fetched.length, 2);
    await h.daemon.stop();
  });
});

describe('certd run: per-certificate due times', () => {
  it('a failing certificate backs off; one whose deployment is expiring is retried every tick', async () => {
    const h = harness([
      { name: 'steady', ttlMs: 400 * DAY },
      // Issued 385 days ago for 400: 15 days left, within renew_before (30d).
      { name: 'expiring', ttlMs: 400 * DAY, issuedAt: (clock) => new Date(clock.now().getTime() - 385 * DAY) },
    ]);
    await h.daemon.start();
    const steady = src(h, 'steady');
    const expiring = src(h, 'expiring');
    assert.equal(steady.fetched.length, 1);
    assert.equal(expiring.fetched.length, 1);
    steady.failing = true;
    expiring.failing = true;
    const counts = (): [number, number] => [steady.fetched.length, expiring.fetched.length];

    await h.ticker.tick(); // t=0: both fail; steady waits 1m, expiring every tick
    assert.deepEqual(counts(), [2, 2]);
    const s = h.daemon.status().schedules.find((x) => x.name === 'steady');
    assert.equal(s?.failures, 1);
    assert.equal(s?.nextAttempt, new Date(h.clock.now().getTime() + BACKOFF_BASE_MS).toISOString());
    assert.equal(h.daemon.status().schedules.find((x) => x.name === 'expiring')?.nextAttempt, null);

    await h.clock.advance(30_000);
    await h.ticker.tick(); // t=30s
    assert.deepEqual(counts(), [2, 3], 'steady is backing off, expiring is retried');
    await h.clock.advance(30_000);
    await h.ticker.tick(); // t=60s: steady due again; second failure doubles the wait to 2m
    assert.deepEqual(counts(), [3, 4]);
    await h.clock.advance(60_000);
    await h.ticker.tick(); // t=120s
    assert.deepEqual(counts(), [3, 5]);
    await h.clock.advance(60_000);
    await h.ticker.tick(); // t=180s
    assert.deepEqual(counts(), [4, 6]);
    assert.equal(h.daemon.status().schedules.find((x) => x.name === 'steady')?.failures, 3);
    assert.ok(h.logged('certificate failed; backing off').some((l) => l['cert'] === 'steady'));

    steady.failing = false;
    await h.clock.advance(4 * MINUTE);
    await h.ticker.tick(); // steady recovers: unchanged, no more backoff
    assert.deepEqual(counts(), [5, 7]);
    await h.clock.advance(1000);
    await h.ticker.tick();
    assert.deepEqual(counts(), [6, 8], 'after a success the certificate is fetched every tick again');
    assert.equal(h.daemon.status().schedules.find((x) => x.name === 'steady')?.nextAttempt, null);
    await h.daemon.stop();
  });

  it('caps the backoff at min(1h, a tenth of what the deployed certificate has left)', async () => {
    const h = harness([{ name: 'short', ttlMs: 5 * HOUR }], { extra: 'renew_before: 30m' });
    await h.daemon.start();
    const state = JSON.parse(readFileSync(join(h.stateDir, 'certs/short.json'), 'utf8')) as { lastGood: { notAfter: string } };
    const notAfter = new Date(state.lastGood.notAfter).getTime();
    src(h, 'short').failing = true;
    let capped = 0;
    for (let i = 1; i <= 8; i++) {
      const before = src(h, 'short').fetched.length;
      await h.ticker.tick();
      assert.equal(src(h, 'short').fetched.length, before + 1, `attempt ${i} happened when due`);
      const now = h.clock.now().getTime();
      const next = new Date(h.daemon.status().schedules[0]!.nextAttempt!).getTime();
      const cap = Math.min(HOUR, (notAfter - now) / 10);
      const gap = next - now;
      assert.ok(gap <= cap, `attempt ${i}: waits ${gap} ms, at most the cap ${cap} ms`);
      assert.equal(gap, Math.floor(Math.min(BACKOFF_BASE_MS * 2 ** (i - 1), cap)));
      if (gap < BACKOFF_BASE_MS * 2 ** (i - 1)) capped++;
      await h.clock.advance(gap - 1);
      await h.ticker.tick();
      assert.equal(src(h, 'short').fetched.length, before + 1, `attempt ${i}: not retried before its time`);
      await h.clock.advance(1);
    }
    assert.ok(capped >= 2, 'the cap, not the doubling, decided the later waits');
    await h.daemon.stop();
  });

  it('nextAttempt: the rule in numbers', () => {
    const now = new Date('2026-03-01T00:00:00Z');
    const deployed = (leftMs: number, lifetimeMs = 400 * DAY) => ({
      notBefore: new Date(now.getTime() + leftMs - lifetimeMs).toISOString(),
      notAfter: new Date(now.getTime() + leftMs).toISOString(),
    });
    const base = { now, renewBeforeMs: 30 * DAY, random: () => 0 };
    assert.equal(nextAttempt({ ...base, result: 'unchanged', failures: 0, deployed: deployed(100 * DAY) }), 0);
    assert.equal(nextAttempt({ ...base, result: 'failed', failures: 1, deployed: undefined }), 0, 'nothing deployed: every tick');
    assert.equal(nextAttempt({ ...base, result: 'failed', failures: 9, deployed: deployed(10 * DAY) }), 0, 'expiring: every tick');
    assert.equal(nextAttempt({ ...base, result: 'failed', failures: 1, deployed: deployed(100 * DAY) }), now.getTime() + MINUTE);
    assert.equal(nextAttempt({ ...base, result: 'failed', failures: 30, deployed: deployed(100 * DAY) }), now.getTime() + HOUR, 'at most 1h');
    const jittered = nextAttempt({ ...base, random: () => 0.999, result: 'failed', failures: 30, deployed: deployed(100 * DAY) });
    assert.ok(jittered <= now.getTime() + HOUR && jittered >= now.getTime() + 0.8 * HOUR, 'jitter only shortens the wait');
    assert.equal(
      nextAttempt({ ...base, renewBeforeMs: 10 * MINUTE, result: 'failed', failures: 30, deployed: deployed(2 * HOUR, 3 * HOUR) }),
      now.getTime() + 12 * MINUTE,
      'a tenth of the 2h left',
    );
  });
});

describe('certd run: no overlap, reload, stop', () => {
  it('a tick during a running cycle is skipped; a socket request waits its turn', async () => {
    const h = harness([{ name: 'slow' }]);
    await h.daemon.start();
    const slow = src(h, 'slow');
    slow.hold = { started: deferred(), release: deferred() };
    let skipped = 0;
    h.daemon.on('tick-skipped', () => skipped++);

    const first = h.ticker.tick();
    await slow.hold.started.promise;
    const second = h.ticker.tick();
    const outcome = await Promise.race([second.then(() => 'returned'), settle().then(() => 'still waiting')]);
    assert.equal(outcome, 'returned', 'a tick during a running cycle returns at once instead of queueing');
    assert.equal(skipped, 1);
    assert.equal(h.logged('previous cycle still running; skipping this scheduled cycle').length, 1);
    assert.equal(slow.fetched.length, 2, 'the skipped tick fetched nothing');
    assert.ok(h.daemon.status().cycle, 'status shows the running cycle');

    let answered = false;
    const requested = askDaemon(h.stateDir, { op: 'rotate' }).then((r) => {
      answered = true;
      return r as CycleReport;
    });
    await settle();
    assert.equal(answered, false, 'the request waits for the running cycle');
    slow.hold.release.resolve();
    await first;
    const report = await requested;
    assert.equal(report.certificates[0]?.name, 'slow');
    assert.equal(slow.fetched.length, 3);
    assert.equal(tgt(h, 'slow').maxStaging, 1);
    slow.hold = undefined;
    await h.ticker.tick();
    assert.equal(slow.fetched.length, 4, 'the next tick runs normally');
    await h.daemon.stop();
  });

  it('reload() with a bad config keeps the running one; a good one is taken between cycles', async () => {
    const h = harness([{ name: 'one' }], { extra: 'audit_log: audit.jsonl' });
    await h.daemon.start();
    const failures: Error[] = [];
    h.daemon.on('reload-failed', (e) => failures.push(e));

    writeFileSync(h.configPath, configYaml(h.dir, ['one', 'two'], 'schedule: "every minute please"'));
    assert.equal(await h.daemon.reload(), false);
    assert.match(failures[0]?.message ?? '', /schedule.*not a valid cron expression/);
    const logged = h.logged('reloading the config failed; the running config stays in use');
    assert.equal(logged.length, 1);
    assert.match(String(logged[0]?.['err']), /not a valid cron expression/);

    writeFileSync(h.configPath, 'certificates: [ {name: one\n');
    assert.equal(await h.daemon.reload(), false, 'broken YAML is refused too');

    assert.equal(src(h, 'one').fetched.length, 3, 'each refused reload still ran a cycle, with the running config');
    await h.ticker.tick();
    assert.equal(src(h, 'one').fetched.length, 4, 'the old config keeps running');
    assert.deepEqual(h.expressions, ['*/5 * * * *']);

    h.addCert({ name: 'two' });
    writeFileSync(h.configPath, configYaml(h.dir, ['one', 'two'], 'schedule: "*/10 * * * *"\naudit_log: audit.jsonl'));
    assert.equal(await h.daemon.reload(), true);
    assert.deepEqual(h.expressions, ['*/5 * * * *', '*/10 * * * *'], 'a new schedule re-arms the ticker');
    assert.equal(src(h, 'two').fetched.length, 1, 'the reload ran a cycle with the new config');
    await h.ticker.tick();
    assert.equal(src(h, 'two').fetched.length, 2);
    liveSet(tgt(h, 'two').dir);
    await h.daemon.stop();
    const audit = readFileSync(join(h.dir, 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(
      audit.filter((r) => ['daemon-start', 'config-reload', 'daemon-stop'].includes(String(r['event']))).map((r) => [r['event'], r['result']]),
      [['daemon-start', undefined], ['config-reload', 'refused'], ['config-reload', 'refused'], ['config-reload', 'ok'], ['daemon-stop', undefined]],
      "the daemon's lifecycle is in the audit trail",
    );
  });

  it('stop() mid-cycle aborts fetches but lets a started stage finish: every target holds a whole set', async () => {
    const h = harness([{ name: 'a' }, { name: 'b' }]);
    await h.daemon.start();
    const before = { a: liveSet(tgt(h, 'a').dir).fingerprint, b: liveSet(tgt(h, 'b').dir).fingerprint };

    src(h, 'a').renew();
    tgt(h, 'a').gate = { reached: deferred(), release: deferred() };
    src(h, 'b').hold = { started: deferred(), release: deferred() };
    const tick = h.ticker.tick();
    await tgt(h, 'a').gate!.reached.promise; // a's new set is half written
    await src(h, 'b').hold!.started.promise; // b is still fetching

    let stopped = false;
    const stopping = h.daemon.stop().then(() => (stopped = true));
    await settle();
    assert.equal(src(h, 'b').aborted, 1, "b's fetch was aborted");
    assert.equal(stopped, false, 'stop waits for the stage in progress');
    assert.equal(liveSet(tgt(h, 'a').dir).fingerprint, before.a, 'meanwhile readers see the whole previous set');

    tgt(h, 'a').gate!.release.resolve();
    await stopping;
    await tick;
    assert.equal(tgt(h, 'a').stageSignals.at(-1)?.aborted, false, 'the stage was never handed an aborted signal');
    const after = liveSet(tgt(h, 'a').dir).fingerprint;
    assert.notEqual(after, before.a, 'a holds its complete new set');
    assert.equal(liveSet(tgt(h, 'b').dir).fingerprint, before.b, 'b holds its complete previous set');
    const stateA = JSON.parse(readFileSync(join(h.stateDir, 'certs/a.json'), 'utf8')) as { lastGood: { fingerprint: string } };
    assert.equal(stateA.lastGood.fingerprint, after, 'the new deployment was committed and recorded');
    assert.equal(existsSync(join(h.stateDir, 'deploy.lock')), false, 'the lock is released');
    assert.equal(existsSync(join(h.stateDir, 'control.sock')), false, 'the socket is removed');
    assert.equal(h.ticker.running, false, 'nothing is scheduled any more');
  });
});

describe('certd run: control socket and lock', () => {
  it('answers rotate and status over a 0600 socket, replacing a stale socket file', async () => {
    const h = harness([{ name: 'a' }, { name: 'b' }]);
    mkdirSync(h.stateDir, { recursive: true });
    writeFileSync(join(h.stateDir, 'control.sock'), 'left over by a crash');
    await h.daemon.start();
    const st = statSync(join(h.stateDir, 'control.sock'));
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);

    const progress: number[] = [];
    const report = (await askDaemon(h.stateDir, { op: 'rotate', progress: true }, { onProgress: (p) => progress.push(p.done) })) as CycleReport;
    assert.deepEqual(report.certificates.map((c) => [c.name, c.result]), [['a', 'unchanged'], ['b', 'unchanged']]);
    assert.deepEqual(progress.sort(), [1, 2]);
    assert.equal(h.logged('rotate requested over control socket').length, 1);

    const one = (await askDaemon(h.stateDir, { op: 'rotate', cert: 'b', dryRun: true })) as CycleReport;
    assert.deepEqual(one.certificates.map((c) => c.name), ['b']);
    assert.equal(one.dryRun, true);
    await assert.rejects(askDaemon(h.stateDir, { op: 'rotate', cert: 'nope' }), (err: unknown) => err instanceof CertdError && err.code === 'E_CONFIG' && /no certificate named "nope"/.test(err.message));

    const live = (await askDaemon(h.stateDir, { op: 'status' })) as LiveStatus;
    assert.equal(live.daemon.phase, 'running');
    assert.equal(live.daemon.pid, process.pid);
    assert.deepEqual(live.certificates.map((c) => c.name), ['a', 'b']);
    assert.equal(live.health.ok, true);

    const second = harness([{ name: 'a' }]);
    writeFileSync(second.configPath, configYaml(h.dir, ['a'])); // same state_dir
    await assert.rejects(second.daemon.start(), (err: unknown) => err instanceof CertdError && err.code === 'E_LOCKED');
    assert.ok(await askDaemon(h.stateDir, { op: 'status' }), 'the refused second daemon left the first one reachable');

    await h.daemon.stop();
    assert.equal(await askDaemon(h.stateDir, { op: 'status' }), undefined, 'no daemon: the caller works standalone');
  });

  it('--once runs one cycle and schedules nothing', async () => {
    const h = harness([{ name: 'a' }], { options: { once: true } });
    await h.daemon.start();
    assert.equal(src(h, 'a').fetched.length, 1);
    assert.deepEqual(h.expressions, []);
    assert.equal(existsSync(join(h.stateDir, 'control.sock')), false);
    assert.equal(h.daemon.status().lastCycle?.ok, true);
    await h.daemon.stop();
    assert.equal(existsSync(join(h.stateDir, 'deploy.lock')), false);
  });
});

describe('certd run: what SIGHUP does and what the daemon shows', () => {
  async function scrape(url: string): Promise<Map<string, number>> {
    return samples(await (await fetch(`${url}/metrics`)).text());
  }
  async function certdStatus(argv: string[]): Promise<{ code: number; out: string; err: string }> {
    let out = '';
    let err = '';
    const io: Io = { out: (t) => void (out += t), err: (t) => void (err += t), env: {}, isTTY: false };
    return { code: await main(['status', ...argv], io), out, err };
  }

  it('a reload runs a cycle, taken or refused; a refused one shows in /healthz, certd_config_reload_ok and status, which still answers from the daemon', async () => {
    const h = harness([{ name: 'one' }], { options: { metricsListen: '127.0.0.1:0' } });
    await h.daemon.start();
    try {
      const url = h.daemon.status().metrics!;
      assert.equal((await scrape(url)).get('certd_config_reload_ok'), 1);
      assert.equal(src(h, 'one').fetched.length, 1);

      // Broken on disk, state_dir still readable in it: the running config stays, a cycle runs.
      writeFileSync(h.configPath, configYaml(h.dir, ['one'], 'schedule: "every minute please"'));
      assert.equal(await h.daemon.reload(), false);
      assert.equal(src(h, 'one').fetched.length, 2, 'SIGHUP ran a cycle although the new config was refused');
      assert.equal(h.daemon.status().lastCycle?.trigger, 'reload');
      assert.equal((await scrape(url)).get('certd_config_reload_ok'), 0);
      const res = await fetch(`${url}/healthz`);
      assert.equal(res.status, 200, 'the running config still deploys and serves');
      const body = (await res.json()) as { ok: boolean; configReload: { ok: boolean; error: { code: string; message: string } } };
      assert.equal(body.configReload.ok, false);
      assert.equal(body.configReload.error.code, 'E_CONFIG');
      assert.match(body.configReload.error.message, /schedule.*not a valid cron expression/);

      const json = await certdStatus(['--config', h.configPath, '--json']);
      assert.equal(json.code, 0, json.err);
      assert.match(json.err, /schedule.*not a valid cron expression/, 'why the file does not load');
      assert.match(json.err, /showing the running certd's state/);
      const doc = JSON.parse(json.out) as { certificates: { name: string; fingerprint: string | null }[]; daemon: LiveStatus['daemon'] };
      assert.equal(doc.daemon.pid, process.pid);
      assert.deepEqual(doc.certificates.map((c) => c.name), ['one']);
      assert.ok(doc.certificates[0]?.fingerprint);
      assert.equal(doc.daemon.configReload?.ok, false);
      const text = await certdStatus(['--config', h.configPath]);
      assert.equal(text.code, 0, text.err);
      assert.match(text.out, /config reload at \S+ refused: E_CONFIG: .*not a valid cron expression.*; still running the config loaded at/);
      const health = await certdStatus(['--config', h.configPath, '--health']);
      assert.equal(health.code, 0, 'the health check answers from the daemon too');

      writeFileSync(h.configPath, configYaml(h.dir, ['one']));
      assert.equal(await h.daemon.reload(), true);
      assert.equal(src(h, 'one').fetched.length, 3, 'and a taken one ran a cycle');
      assert.equal((await scrape(url)).get('certd_config_reload_ok'), 1);
      assert.equal(((await (await fetch(`${url}/healthz`)).json()) as { configReload: { ok: boolean } }).configReload.ok, true);
    } finally {
      await h.daemon.stop();
    }
  });

  it('status and certd_certificate_next_attempt_timestamp_seconds tell when each certificate is tried next', async () => {
    const h = harness([{ name: 'fine' }, { name: 'flaky' }], { options: { metricsListen: '127.0.0.1:0' } });
    h.ticker.next = new Date('2026-03-01T00:00:30Z');
    await h.daemon.start();
    try {
      src(h, 'flaky').failing = true;
      await h.ticker.tick(); // flaky fails with a healthy deployment: backs off 1m
      const next = (name: string) => h.daemon.status().schedules.find((c) => c.name === name)?.nextRun;
      assert.equal(next('fine'), '2026-03-01T00:00:30.000Z', 'the next scheduled cycle');
      assert.equal(next('flaky'), '2026-03-01T00:01:00.000Z', 'not before its backoff ends');
      const m = await scrape(h.daemon.status().metrics!);
      assert.equal(m.get('certd_certificate_next_attempt_timestamp_seconds{name="fine"}'), Date.parse('2026-03-01T00:00:30Z') / 1000);
      assert.equal(m.get('certd_certificate_next_attempt_timestamp_seconds{name="flaky"}'), Date.parse('2026-03-01T00:01:00Z') / 1000);
      const text = await certdStatus(['--config', h.configPath]);
      assert.equal(text.code, 0, text.err);
      assert.match(text.out, /NEXT ATTEMPT/);
      assert.match(text.out, /^fine .*2026-03-01T00:00:30\.000Z/m);
      assert.match(text.out, /^flaky .*2026-03-01T00:01:00\.000Z/m);
      const json = JSON.parse((await certdStatus(['--config', h.configPath, '--json'])).out) as { certificates: { name: string; nextRun: string | null }[] };
      assert.deepEqual(json.certificates.map((c) => [c.name, c.nextRun]), [['fine', '2026-03-01T00:00:30.000Z'], ['flaky', '2026-03-01T00:01:00.000Z']]);
    } finally {
      await h.daemon.stop();
    }
  });

  it('rotate --force over the control socket deploys again what is unchanged', async () => {
    const h = harness([{ name: 'same' }]);
    await h.daemon.start();
    try {
      const before = readlinkSync(join(tgt(h, 'same').dir, 'current'));
      const plain = (await askDaemon(h.stateDir, { op: 'rotate' })) as CycleReport;
      assert.equal(plain.certificates[0]?.result, 'unchanged');
      const forced = (await askDaemon(h.stateDir, { op: 'rotate', force: true })) as CycleReport;
      assert.equal(forced.certificates[0]?.result, 'deployed');
      assert.notEqual(readlinkSync(join(tgt(h, 'same').dir, 'current')), before);
      liveSet(tgt(h, 'same').dir);
    } finally {
      await h.daemon.stop();
    }
  });
});
