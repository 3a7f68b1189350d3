import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FakeClock } from '../../src/clock.js';
import { parseConfigText, type LoadedConfig } from '../../src/config.js';
import { silentLogger } from '../../src/log.js';
import { runCycle } from '../../src/rotate.js';
import { buildRuntime } from '../../src/runtime.js';
import { TestPki } from '../helpers/pki.js';

const root = mkdtempSync('/dev/shm/certd-unit-rotate-');
after(() => rmSync(root, { recursive: true, force: true }));

function loaded(yaml: string): LoadedConfig {
  return { config: parseConfigText(yaml), path: 'test.yaml', resolvePath: (p) => (p.startsWith('/') ? p : join(root, p)) };
}

describe('one cycle', () => {
  let pki: TestPki;
  before(() => {
    pki = new TestPki(join(root, 'pki'));
    pki.publish(pki.leaf('a', { dns: ['a.test'] }), join(root, 'src-a'));
    pki.publish(pki.leaf('b', { dns: ['b.test'] }), join(root, 'src-b'));
    pki.publish(pki.leaf('bad', { dns: ['bad.test'], keySpec: 'rsa-1024' }), join(root, 'src-bad'));
  });

  const yaml = (names: string[], extra = '') => `state_dir: ${root}/state
policy: { trust_anchors: ${root}/pki/root.pem }
${extra}
certificates:
${names.map((n) => `  - name: ${n}
    source: { type: file, cert: src-${n}/cert.pem, key: src-${n}/key.pem, chain: src-${n}/chain.pem }
    targets: [{ type: tmpfs, dir: ${root}/out/${n} }]`).join('\n')}
`;

  it('one refused certificate does not stop the others', async () => {
    const rt = await buildRuntime(loaded(yaml(['a', 'bad', 'b'])), { log: silentLogger });
    const report = await runCycle(rt);
    assert.deepEqual(report.certificates.map((c) => [c.name, c.result]), [['a', 'deployed'], ['bad', 'failed'], ['b', 'deployed']]);
    assert.equal(report.ok, false);
    assert.equal(report.certificates[1]?.error?.code, 'E_POLICY');
    assert.equal(existsSync(join(root, 'out/bad')), false, 'nothing of the refused certificate is written');
    assert.match(readFileSync(join(root, 'out/a/privkey.pem'), 'utf8'), /PRIVATE KEY/);
    await rt.close();
  });

  it('an unchanged second cycle writes nothing', async () => {
    const rt = await buildRuntime(loaded(yaml(['a', 'b'])), { log: silentLogger });
    const live = readlinkSync(join(root, 'out/a/..data'));
    const entries = readdirSync(join(root, 'out/a')).sort();
    const report = await runCycle(rt);
    assert.deepEqual(report.certificates.map((c) => c.result), ['unchanged', 'unchanged']);
    assert.equal(readlinkSync(join(root, 'out/a/..data')), live);
    assert.deepEqual(readdirSync(join(root, 'out/a')).sort(), entries);
    await rt.close();
  });

  it('--dry-run reports what would deploy and changes nothing', async () => {
    pki.publish(pki.leaf('a2', { dns: ['a.test'] }), join(root, 'src-a'));
    const rt = await buildRuntime(loaded(yaml(['a'])), { log: silentLogger });
    const live = readlinkSync(join(root, 'out/a/..data'));
    const stateBefore = readFileSync(join(root, 'state/certs/a.json'), 'utf8');
    const report = await runCycle(rt, { dryRun: true });
    assert.equal(report.certificates[0]?.result, 'would-deploy');
    assert.equal(readlinkSync(join(root, 'out/a/..data')), live);
    assert.equal(readFileSync(join(root, 'state/certs/a.json'), 'utf8'), stateBefore);
    const real = await runCycle(rt, { only: 'a' });
    assert.equal(real.certificates[0]?.result, 'deployed');
    assert.notEqual(readlinkSync(join(root, 'out/a/..data')), live);
    await rt.close();
  });

  it('deploys again when the target lost what was deployed, although the source is unchanged', async () => {
    const rt = await buildRuntime(loaded(yaml(['b'])), { log: silentLogger });
    const before = readFileSync(join(root, 'out/b/cert.pem'), 'utf8');
    rmSync(join(root, 'out/b'), { recursive: true, force: true });
    const report = await runCycle(rt);
    assert.equal(report.certificates[0]?.result, 'deployed');
    assert.equal(readFileSync(join(root, 'out/b/cert.pem'), 'utf8'), before);
    assert.equal((await runCycle(rt)).certificates[0]?.result, 'unchanged');
    await rt.close();
  });

  it('a source handing back the same Material: the remembered verdict still follows time, and an unchanged record is rewritten only every 10 minutes', async () => {
    const clock = new FakeClock(new Date());
    const base = await buildRuntime(loaded(yaml(['a']).replace(`state_dir: ${root}/state`, `state_dir: ${root}/state-memo`)), { log: silentLogger, clock });
    const material = await base.certificates[0]!.source.fetch({ name: 'a' }, new AbortController().signal);
    let fetches = 0;
    const same = { fetch: async () => (fetches++, material) };
    const rt = { ...base, certificates: [{ ...base.certificates[0]!, source: same }] };
    const record = () => JSON.parse(readFileSync(join(root, 'state-memo/certs/a.json'), 'utf8')) as { lastResult: { result: string; at: string } };

    assert.equal((await runCycle(rt)).certificates[0]?.result, 'deployed');
    const deployedAt = record().lastResult.at;
    await clock.advance(60_000);
    assert.equal((await runCycle(rt)).certificates[0]?.result, 'unchanged');
    assert.deepEqual([record().lastResult.result, record().lastResult.at], ['deployed', deployedAt], 'the deployment record stands: not rewritten the next cycle');
    await clock.advance(10 * 60_000);
    assert.equal((await runCycle(rt)).certificates[0]?.result, 'unchanged');
    assert.equal(record().lastResult.result, 'unchanged', 'refreshed after 10 minutes');
    const firstUnchanged = record().lastResult.at;
    assert.notEqual(firstUnchanged, deployedAt);
    await clock.advance(60_000);
    assert.equal((await runCycle(rt)).certificates[0]?.result, 'unchanged');
    assert.equal(record().lastResult.at, firstUnchanged, 'not rewritten within 10 minutes');
    await clock.advance(11 * 60_000);
    assert.equal((await runCycle(rt)).certificates[0]?.result, 'unchanged');
    assert.notEqual(record().lastResult.at, firstUnchanged, 'refreshed after 10 minutes');

    // Six days before notAfter the same object must fail min_remaining (7d): no stale verdict.
    clock.set(material.notAfter.getTime() - 6 * 86_400_000);
    const late = await runCycle(rt);
    assert.equal(late.certificates[0]?.result, 'failed');
    assert.ok(late.certificates[0]?.findings?.some((f) => f.rule === 'P-MIN-REMAINING' && f.severity === 'reject'));
    assert.equal(record().lastResult.result, 'failed');
    assert.equal(fetches, 6);
    await base.close();
  });

  it('an issuer not yet due issues again when its target lost the certificate', async () => {
    const cfg = `state_dir: ${root}/state-lost
certificates:
  - name: lost
    source: { type: local-ca, dns_names: [lost.test], ttl: 3h }
    targets: [{ type: tmpfs, dir: ${root}/out/lost }]
`;
    const rt = await buildRuntime(loaded(cfg), { log: silentLogger });
    const first = await runCycle(rt);
    assert.equal(first.certificates[0]?.result, 'deployed');
    assert.equal((await runCycle(rt)).certificates[0]?.result, 'unchanged');
    rmSync(join(root, 'out/lost'), { recursive: true, force: true });
    const again = await runCycle(rt);
    assert.equal(again.certificates[0]?.result, 'deployed');
    assert.ok(existsSync(join(root, 'out/lost/privkey.pem')));
    await rt.close();
  });

  it('--cert with an unknown name is a configuration error', async () => {
    const rt = await buildRuntime(loaded(yaml(['a'])), { log: silentLogger });
    await assert.rejects(runCycle(rt, { only: 'nope' }), /no certificate named "nope".*known: a/);
    await rt.close();
  });

  it('policy.mode warn deploys what enforce would refuse, with the findings reported', async () => {
    const rt = await buildRuntime(loaded(yaml(['bad'], 'fips_runtime: off').replace('policy: {', 'policy: { mode: warn,')), { log: silentLogger });
    const report = await runCycle(rt);
    assert.equal(report.certificates[0]?.result, 'deployed');
    assert.ok(report.certificates[0]?.findings?.some((f) => f.rule === 'P-RSA-MIN' && f.severity === 'reject'));
    await rt.close();
  });

  it('an issuer is not asked again until its certificate is due (2/3 of the ttl)', async () => {
    const clock = new FakeClock(new Date());
    const cfg = `state_dir: ${root}/state-ca
certificates:
  - name: ca-issued
    source: { type: local-ca, dns_names: [svc.test], ttl: 3h }
    targets: [{ type: tmpfs, dir: ${root}/out/ca-issued }]
`;
    const rt = await buildRuntime(loaded(cfg), { log: silentLogger, clock });
    const first = await runCycle(rt);
    assert.equal(first.certificates[0]?.result, 'deployed', JSON.stringify(first.certificates[0]));
    await clock.advance(60 * 60_000); // 1h of 3h: not due
    const second = await runCycle(rt);
    assert.equal(second.certificates[0]?.result, 'unchanged');
    assert.match(second.certificates[0]?.reason ?? '', /not due until/);
    await clock.advance(61 * 60_000); // past 2h: due
    const third = await runCycle(rt);
    assert.equal(third.certificates[0]?.result, 'deployed');
    assert.notEqual(third.certificates[0]?.fingerprint, first.certificates[0]?.fingerprint);
    await rt.close();
  });
});

/** A config of file-sourced certificates `names` with one fetch_deadline, for the lane cases. */
function laneConfig(dir: string, names: readonly string[], deadline: string): string {
  return `state_dir: ${root}/${dir}
policy: { trust_anchors: ${root}/pki-deadline/root.pem }
fetch_deadline: ${deadline}
certificates:
${names.map((n) => `  - name: ${n}
    source: { type: file, cert: src-ok/cert.pem, key: src-ok/key.pem, chain: src-ok/chain.pem }
    targets: [{ type: tmpfs, dir: ${root}/${dir}-out/${n} }]`).join('\n')}
`;
}

type Runtime = Awaited<ReturnType<typeof buildRuntime>>;
type FileSource = Runtime['certificates'][number]['source'];

/** `base` with every certificate's source in `lane`, fetching through `fetch` (given the file source). */
function inLane(base: Runtime, lane: { key: string; limit: number }, fetch: (file: FileSource, ref: Parameters<FileSource['fetch']>[0], signal: AbortSignal, name: string) => ReturnType<FileSource['fetch']>): Runtime {
  return { ...base, certificates: base.certificates.map((c) => ({ ...c, source: { lane, fetch: (ref, signal) => fetch(c.source, ref, signal, c.name) } })) };
}

describe('fetch_deadline: a source that never answers', () => {
  let pki: TestPki;
  before(() => {
    pki = new TestPki(join(root, 'pki-deadline'));
    pki.publish(pki.leaf('ok', { dns: ['ok.test'] }), join(root, 'src-ok'));
  });

  const cfg = (dir: string) => `state_dir: ${root}/${dir}
policy: { trust_anchors: ${root}/pki-deadline/root.pem }
fetch_deadline: 5s
certificates:
  - name: ok
    source: { type: file, cert: src-ok/cert.pem, key: src-ok/key.pem, chain: src-ok/chain.pem }
    targets: [{ type: tmpfs, dir: ${root}/${dir}-out/ok }]
  - name: hung
    fetch_deadline: 1s
    source: { type: file, cert: src-ok/cert.pem, key: src-ok/key.pem, chain: src-ok/chain.pem }
    targets: [{ type: tmpfs, dir: ${root}/${dir}-out/hung }]
`;

  it('ends that certificate with E_SOURCE naming fetch_deadline, even when the source ignores its signal; the others deploy, and the cycle says what it waits on', async () => {
    const base = await buildRuntime(loaded(cfg('state-deadline')), { log: silentLogger });
    let calls = 0;
    // Never settles and never looks at the signal: only the deadline can end the wait.
    const hung = { fetch: () => (calls++, new Promise<never>(() => undefined)) };
    const rt = { ...base, certificates: base.certificates.map((c) => (c.name === 'hung' ? { ...c, source: hung } : c)) };
    const waiting: string[][] = [];
    const report = await runCycle(rt, { progressEveryMs: 50, onWaiting: (p) => waiting.push(p.waiting) });
    assert.deepEqual(report.certificates.map((c) => [c.name, c.result]), [['ok', 'deployed'], ['hung', 'failed']]);
    const error = report.certificates[1]?.error;
    assert.equal(error?.code, 'E_SOURCE');
    assert.match(error?.message ?? '', /^fetching hung: no answer within fetch_deadline 1s \(1 attempt\)/, 'the certificate\'s own fetch_deadline, not the top-level 5s');
    assert.equal(calls, 1, 'no retry once the deadline has passed');
    assert.ok(waiting.some((w) => w.includes('hung')), `the cycle named what it waits on: ${JSON.stringify(waiting)}`);
    assert.deepEqual(waiting.at(-1), ['hung'], 'once ok is done, only hung is named as waiting');
    assert.equal(existsSync(join(root, 'state-deadline-out/hung')), false, 'nothing written for it');
    await base.close();
  });

  it('a discovery (ssm path) that never answers ends at fetch_deadline too, as that entry\'s failure', async () => {
    const base = await buildRuntime(loaded(cfg('state-deadline-expand')), { log: silentLogger });
    const rt = { ...base, certificates: base.certificates.map((c) => (c.name === 'hung' ? { ...c, expand: () => new Promise<never>(() => undefined) } : c)) };
    const report = await runCycle(rt);
    assert.deepEqual(report.certificates.map((c) => [c.name, c.result]), [['hung', 'failed'], ['ok', 'deployed']]);
    assert.match(report.certificates[0]?.error?.message ?? '', /^discovering certificates of hung: no answer within fetch_deadline 1s/);
    await base.close();
  });

  // A source whose calls share one quota (ACM: 10 DescribeCertificate/s, 5 ExportCertificate/s
  // per account): its client paces the calls, so a certificate queued behind many others waits
  // inside its fetch. That wait is the quota, not a hung endpoint: it must not spend the
  // certificate's fetch_deadline. The source names a lane; the cycle runs at most `limit` of the
  // lane's source steps at once and starts a certificate's deadline when its turn comes.
  it('certificates queued behind a shared quota do not spend their fetch_deadline waiting for their turn', async () => {
    const base = await buildRuntime(loaded(laneConfig('state-lane', Array.from({ length: 24 }, (_, i) => `q${i}`), '1s')), { log: silentLogger });
    // One call per 100 ms for the whole account, like the SDK's client-side rate limiter.
    let nextSlot = Date.now();
    const paced = async (): Promise<void> => {
      const at = Math.max(Date.now(), nextSlot);
      nextSlot = at + 100;
      await new Promise((r) => setTimeout(r, at - Date.now()));
    };
    let inFlight = 0;
    let most = 0;
    const rt = inLane(base, { key: 'test-quota', limit: 4 }, async (file, ref, signal) => {
      most = Math.max(most, ++inFlight);
      try {
        await paced();
        return await file.fetch(ref, signal);
      } finally {
        inFlight--;
      }
    });
    const warnings: string[] = [];
    const onWarning = (w: Error): void => void warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    const started = Date.now();
    const report = await runCycle(rt).finally(() => process.off('warning', onWarning));
    assert.deepEqual(warnings.filter((w) => /MaxListeners/.test(w)), [], 'twenty waiters do not each listen on the cycle\'s signal');
    assert.deepEqual(report.certificates.filter((c) => c.result !== 'deployed').map((c) => `${c.name}: ${c.error?.message ?? c.result}`), [], 'every certificate deployed: the 2.4 s of queueing is not charged to the 1 s deadlines');
    assert.equal(most, 4, 'at most the lane\'s limit of source steps at once');
    assert.ok(Date.now() - started >= 2_000, 'the quota still paced the calls');
    await base.close();
  });

  it('a stop ends the certificates still waiting for their lane at once, without a call to their source', async () => {
    const base = await buildRuntime(loaded(laneConfig('state-lane-stop', ['w0', 'w1', 'w2', 'w3'], '20s')), { log: silentLogger });
    const called: string[] = [];
    // Answers only when the cycle is stopped.
    const rt = inLane(base, { key: 'one-at-a-time', limit: 1 }, (_file, _ref, signal, name) => {
      called.push(name);
      return new Promise<never>((_, reject) => signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true }));
    });
    const stop = new AbortController();
    setTimeout(() => stop.abort(new Error('certd is stopping')), 200);
    const started = Date.now();
    const report = await runCycle(rt, { stop: stop.signal });
    assert.ok(Date.now() - started < 5_000, `the cycle ended soon after the stop, not at fetch_deadline (${Date.now() - started} ms)`);
    assert.equal(called.length, 1, `only the lane's holder reached its source: ${called.join(', ')}`);
    assert.deepEqual(report.certificates.map((c) => c.result), ['failed', 'failed', 'failed', 'failed']);
    await base.close();
  });

  it('a wrong-typed fetch_deadline is a config error naming the type', () => {
    assert.throws(() => parseConfigText('fetch_deadline: 30\n'), /fetch_deadline.*expected a duration string.*got number 30/s);
    assert.throws(() => parseConfigText('fetch_deadline: soon\n'), /fetch_deadline.*expected a duration string/s);
  });
});
