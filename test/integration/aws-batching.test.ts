// What a fleet costs: a hundred Secrets Manager and a hundred SSM certificates read through
// the real SDK from the AWS peer, in-process (buildRuntime + runCycle) for speed. The peer's
// counters are the measure: one BatchGetSecretValue per 20 secrets, one GetParameters per 10
// parameters, one GetParametersByPath page per 10 parameters of a discovered prefix on the
// first cycle, then one DescribeParameters page per 50 plus GetParameters for what changed; an
// unchanged cycle writes nothing and reloads nothing. Throttling and 5xx are absorbed by
// retries; a hung request fails its certificate only.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/config.js';
import { createLogger, type Logger, silentLogger } from '../../src/log.js';
import type { Metrics } from '../../src/metrics.js';
import { runCycle } from '../../src/rotate.js';
import { buildRuntime, type Runtime } from '../../src/runtime.js';
import { shmDir, writeConfig } from '../helpers/cli.js';
import { TestPki, type Issued } from '../helpers/pki.js';
import { startAwsPeer, type AwsPeer } from '../peers/aws-peer.js';
import { awsEnv, createSecret, putParameter, putParameterSet, putSecret } from './aws-fixtures.js';

const N = 100;

class CountingMetrics implements Metrics {
  readonly requests = new Map<string, number>();
  certificate(): void {}
  rotation(): void {}
  reload(): void {}
  policyRejection(): void {}
  sourceRequest(source: string, operation: string, result: string): void {
    const k = `${source} ${operation} ${result}`;
    this.requests.set(k, (this.requests.get(k) ?? 0) + 1);
  }
  count(prefix: string): number {
    let n = 0;
    for (const [k, v] of this.requests) if (k.startsWith(prefix)) n += v;
    return n;
  }
}

describe('AWS sources at fleet size', () => {
  const scratch = shmDir('aws-batching');
  const dir = scratch.dir;
  const savedEnv = { ...process.env };
  let peer: AwsPeer;
  let pki: TestPki;
  let leaves: Issued[];
  let metrics: CountingMetrics;
  const reloadLog = join(dir, 'reloads.log');

  const sm = (i: number) => `sm-${i}`;
  const ssm = (i: number) => `ssm-${i}`;
  const deployDir = (name: string) => join(dir, 'deploy', name);

  async function runtime(certificates: Record<string, unknown>[], extra: Record<string, unknown> = {}, fetchAttempts = 3, log: Logger = silentLogger): Promise<Runtime> {
    const path = writeConfig(dir, stringify({ state_dir: join(dir, 'state'), policy: { trust_anchors: pki.root.certPath }, certificates, ...extra }), `config-${certificates.length}-${Date.now()}.yaml`);
    metrics = new CountingMetrics();
    return buildRuntime(loadConfig(path, {}), { log, metrics, fetchAttempts });
  }

  const reload = () => ({ command: ['/bin/sh', '-c', `echo reload >> ${reloadLog}`] });
  const reloads = () => (existsSync(reloadLog) ? readFileSync(reloadLog, 'utf8').split('\n').filter(Boolean).length : 0);

  function fleet(): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (let i = 0; i < N; i++) {
      out.push({ name: sm(i), source: { type: 'secrets-manager', secret_id: `fleet/${i}`, endpoint: peer.url }, targets: [{ type: 'tmpfs', dir: deployDir(sm(i)) }], reload: reload() });
    }
    for (let i = 0; i < N; i++) {
      out.push({
        name: ssm(i),
        source: { type: 'ssm', cert_parameter: `/fleet/${i}/cert`, key_parameter: `/fleet/${i}/key`, chain_parameter: `/fleet/${i}/chain`, endpoint: peer.url },
        targets: [{ type: 'tmpfs', dir: deployDir(ssm(i)) }],
        reload: reload(),
      });
    }
    return out;
  }

  /** Added to the peer's clock: moves parameters' LastModifiedDate without waiting. */
  let clockAhead = 0;

  before(async () => {
    peer = await startAwsPeer({ now: () => Date.now() + clockAhead });
    Object.assign(process.env, awsEnv(peer));
    pki = new TestPki(join(dir, 'pki'));
    leaves = [0, 1, 2, 3].map((i) => pki.leaf(`leaf${i}`, { dns: [`host${i}.fleet.test`] }));
    for (let i = 0; i < N; i++) {
      const leaf = leaves[i % leaves.length]!;
      await createSecret(peer, `fleet/${i}`, JSON.stringify({ certificate: leaf.certPem, private_key: readFileSync(leaf.keyPath, 'utf8'), chain: pki.intermediate.certPem }));
      await putParameterSet(peer, `/fleet/${i}`, pki, leaf);
    }
  });

  after(async () => {
    await peer?.close();
    process.env = savedEnv;
    scratch.cleanup();
  });

  it('deploys 100 + 100 certificates with one read per 20 secrets and per 10 parameters', async () => {
    const rt = await runtime(fleet());
    try {
      peer.resetCalls();
      const report = await runCycle(rt);
      assert.ok(report.ok, JSON.stringify(report.certificates.filter((c) => c.result === 'failed').slice(0, 3)));
      assert.equal(report.certificates.filter((c) => c.result === 'deployed').length, 2 * N);
      const calls = { ...peer.calls };
      console.log(`first cycle, 200 certificates: ${JSON.stringify(calls)}`);
      assert.equal(calls['secretsmanager.BatchGetSecretValue'], N / 20);
      assert.equal(calls['secretsmanager.GetSecretValue'] ?? 0, 0, 'no per-certificate reads');
      assert.equal(calls['AmazonSSM.GetParameters'], (3 * N) / 10);
      assert.equal(calls['AmazonSSM.GetParameter'] ?? 0, 0);
      assert.equal(reloads(), 1, 'one coalesced reload for the whole cycle');
      assert.equal(metrics.count('secrets-manager BatchGetSecretValue ok'), N / 20);
      assert.equal(metrics.count('ssm GetParameters ok'), (3 * N) / 10);
      const deployed = readFileSync(join(deployDir(sm(5)), 'cert.pem'), 'utf8');
      assert.equal(deployed, leaves[5 % leaves.length]!.certPem);
    } finally {
      await rt.close();
    }
  });

  it('an unchanged cycle is cheap, writes nothing and reloads nothing', async () => {
    const links = new Map<string, string>();
    for (let i = 0; i < N; i++) for (const n of [sm(i), ssm(i)]) links.set(n, readlinkSync(join(deployDir(n), '..data')));
    const before = reloads();
    const rt = await runtime(fleet());
    try {
      peer.resetCalls();
      const report = await runCycle(rt);
      assert.ok(report.ok);
      assert.equal(report.certificates.filter((c) => c.result === 'unchanged').length, 2 * N);
      const calls = { ...peer.calls };
      console.log(`unchanged cycle, 200 certificates: ${JSON.stringify(calls)} (${peer.callsTotal()} requests)`);
      assert.ok((calls['secretsmanager.BatchGetSecretValue'] ?? 0) <= 5);
      assert.equal(calls['secretsmanager.GetSecretValue'] ?? 0, 0);
      assert.ok((calls['AmazonSSM.GetParameters'] ?? 0) <= 30);
      assert.equal(peer.callsTotal(), 5 + 30);
      assert.deepEqual(report.reloads, []);
      assert.equal(reloads(), before);
      for (const [n, link] of links) assert.equal(readlinkSync(join(deployDir(n), '..data')), link, `${n} was rewritten`);
    } finally {
      await rt.close();
    }
  });

  it('a new AWSCURRENT version of one secret deploys that certificate only, still batched', async () => {
    const rt = await runtime(fleet());
    try {
      const next = pki.leaf('next', { dns: ['next.fleet.test'] });
      const version = await putSecret(peer, 'fleet/7', JSON.stringify({ certificate: next.certPem, private_key: readFileSync(next.keyPath, 'utf8'), chain: pki.intermediate.certPem }));
      peer.resetCalls();
      const report = await runCycle(rt);
      assert.ok(report.ok);
      const deployed = report.certificates.filter((c) => c.result === 'deployed');
      assert.deepEqual(deployed.map((c) => c.name), [sm(7)]);
      assert.equal(deployed[0]!.version, version);
      assert.equal(deployed[0]!.fingerprint, next.fingerprint);
      assert.equal(peer.calls['secretsmanager.BatchGetSecretValue'], 5);
      assert.equal(readFileSync(join(deployDir(sm(7)), 'cert.pem'), 'utf8'), next.certPem);
    } finally {
      await rt.close();
    }
  });

  it('discovers a prefix with GetParametersByPath pages only, following NextToken through short and empty pages', async () => {
    for (let i = 0; i < 30; i++) await putParameterSet(peer, `/discover/m${i}`, pki, leaves[i % leaves.length]!);
    const entry = { name: 'disc', source: { type: 'ssm', path: '/discover', endpoint: peer.url }, targets: [{ type: 'tmpfs', dir: join(dir, 'deploy', 'disc', '{name}') }] };
    for (const shortPages of [false, true]) {
      peer.shortPages = shortPages;
      const rt = await runtime([entry]);
      try {
        peer.resetCalls();
        const report = await runCycle(rt);
        assert.ok(report.ok, JSON.stringify(report.certificates.find((c) => c.result === 'failed')));
        assert.equal(report.certificates.length, 30);
        assert.ok(report.certificates.every((c) => /^disc-m\d+$/.test(c.name)));
        const pages = peer.calls['AmazonSSM.GetParametersByPath'] ?? 0;
        console.log(`discovery of 30 certificates (90 parameters), short pages ${shortPages}: ${JSON.stringify(peer.calls)}`);
        if (!shortPages) assert.equal(pages, 9);
        else assert.ok(pages > 9, 'short pages need more requests, and every NextToken was followed');
        assert.equal(peer.callsTotal(), pages, 'no per-certificate reads');
        assert.ok(existsSync(join(dir, 'deploy', 'disc', 'm29', 'fullchain.pem')));
      } finally {
        await rt.close();
      }
    }
    peer.shortPages = false;
  });

  describe('path mode after the first cycle', () => {
    const M = 30;
    const member = (i: number) => `delta-m${i}`;
    const memberDir = (i: number) => join(dir, 'deploy', 'delta', `m${i}`);
    const entry = () => ({ name: 'delta', source: { type: 'ssm', path: '/delta', endpoint: peer.url }, targets: [{ type: 'tmpfs', dir: join(dir, 'deploy', 'delta', '{name}') }] });
    let rt: Runtime;
    /** Fingerprint per member after the first cycle. */
    const first = new Map<string, string>();
    const warnings: string[] = [];

    const results = (report: Awaited<ReturnType<typeof runCycle>>) => Object.fromEntries(report.certificates.map((c) => [c.name, c.result]));
    const links = () => new Map(readdirSync(join(dir, 'deploy', 'delta')).map((m) => [m, readlinkSync(join(dir, 'deploy', 'delta', m, '..data'))]));
    const cycle = async () => {
      peer.resetCalls();
      metrics.requests.clear();
      const report = await runCycle(rt);
      assert.ok(report.ok, JSON.stringify(report.certificates.find((c) => c.result === 'failed')));
      return { report, calls: { ...peer.calls } };
    };

    before(async () => {
      for (let i = 0; i < M; i++) await putParameterSet(peer, `/delta/m${i}`, pki, leaves[i % leaves.length]!);
      rt = await runtime([entry()], {}, 3, createLogger({ level: 'warn', format: 'json', write: (line) => void warnings.push(line) }));
      const { report, calls } = await cycle();
      assert.equal(report.certificates.filter((c) => c.result === 'deployed').length, M);
      assert.deepEqual(calls, { 'AmazonSSM.GetParametersByPath': (3 * M) / 10 }, 'the first cycle walks the path');
      for (const c of report.certificates) first.set(c.name, c.fingerprint!);
    });

    after(async () => {
      peer.shortPages = false;
      peer.clearFaults();
      await rt?.close();
    });

    it('an unchanged cycle makes DescribeParameters calls only, answers the same certificates and writes nothing', async () => {
      const before = links();
      const { report, calls } = await cycle();
      console.log(`unchanged path cycle, ${M} folders (${3 * M} parameters): ${JSON.stringify(calls)}`);
      assert.deepEqual(calls, { 'AmazonSSM.DescribeParameters': Math.ceil((3 * M) / 50) });
      assert.equal(report.certificates.length, M);
      for (const c of report.certificates) {
        assert.equal(c.result, 'unchanged', c.name);
        assert.equal(c.fingerprint, first.get(c.name), `${c.name} is the same certificate`);
      }
      assert.deepEqual(links(), before, 'no set was written');
      assert.equal(metrics.count('ssm DescribeParameters ok'), 2);
    });

    it('a new certificate and key in one folder cost one GetParameters call, and are deployed', async () => {
      const next = leaves[0]!;
      assert.notEqual(first.get(member(7)), next.fingerprint);
      await putParameter(peer, '/delta/m7/cert', next.certPem);
      await putParameter(peer, '/delta/m7/key', readFileSync(next.keyPath, 'utf8'), true);
      const { report, calls } = await cycle();
      assert.deepEqual(calls, { 'AmazonSSM.DescribeParameters': 2, 'AmazonSSM.GetParameters': 1 });
      const m7 = report.certificates.find((c) => c.name === member(7))!;
      assert.equal(m7.result, 'deployed');
      assert.equal(m7.fingerprint, next.fingerprint);
      assert.equal(m7.version, 'cert:2,key:2,chain:1');
      assert.equal(report.certificates.filter((c) => c.result === 'unchanged').length, M - 1);
      assert.equal(readFileSync(join(memberDir(7), 'cert.pem'), 'utf8'), next.certPem);
    });

    it('a new folder is discovered and read; a removed one disappears', async () => {
      await putParameterSet(peer, '/delta/m30', pki, leaves[2]!);
      for (const leaf of ['cert', 'key', 'chain']) await peer.invoke('AmazonSSM.DeleteParameter', { Name: `/delta/m3/${leaf}` });
      const { report, calls } = await cycle();
      assert.deepEqual(calls, { 'AmazonSSM.DescribeParameters': 2, 'AmazonSSM.GetParameters': 1 });
      const r = results(report);
      assert.equal(r[member(30)], 'deployed');
      assert.equal(r[member(3)], undefined, 'the removed folder is no certificate any more');
      assert.equal(report.certificates.length, M);
      assert.equal(readFileSync(join(memberDir(30), 'cert.pem'), 'utf8'), leaves[2]!.certPem);
      // Nothing left to read on the next cycle.
      assert.deepEqual((await cycle()).calls, { 'AmazonSSM.DescribeParameters': 2 });
    });

    it('a folder deleted and created again (its versions start at 1 again) is read again', async () => {
      const next = leaves[2]!;
      assert.notEqual(first.get(member(5)), next.fingerprint);
      for (const leaf of ['cert', 'key', 'chain']) await peer.invoke('AmazonSSM.DeleteParameter', { Name: `/delta/m5/${leaf}` });
      clockAhead += 2_000;
      await putParameterSet(peer, '/delta/m5', pki, next);
      const { report, calls } = await cycle();
      assert.deepEqual(calls, { 'AmazonSSM.DescribeParameters': 2, 'AmazonSSM.GetParameters': 1 });
      const m5 = report.certificates.find((c) => c.name === member(5))!;
      assert.equal(m5.version, 'cert:1,key:1,chain:1', 'the same version numbers as before');
      assert.equal(m5.result, 'deployed');
      assert.equal(m5.fingerprint, next.fingerprint);
    });

    it('follows NextToken through short and empty DescribeParameters pages', async () => {
      peer.shortPages = true;
      try {
        const { report, calls } = await cycle();
        console.log(`unchanged path cycle with short pages: ${JSON.stringify(calls)}`);
        assert.deepEqual(Object.keys(calls), ['AmazonSSM.DescribeParameters']);
        assert.ok(calls['AmazonSSM.DescribeParameters']! > 2, 'short pages need more requests');
        assert.equal(report.certificates.length, M);
        assert.ok(report.certificates.every((c) => c.result === 'unchanged'));
      } finally {
        peer.shortPages = false;
      }
    });

    it('a throttled DescribeParameters is retried by the SDK like any other call', async () => {
      const t = peer.inject({ op: 'AmazonSSM.DescribeParameters', kind: 'throttle', count: 2 });
      const { report, calls } = await cycle();
      assert.equal(t.fired, 2);
      assert.equal(peer.throttled['AmazonSSM.DescribeParameters'], 2);
      assert.deepEqual(calls, { 'AmazonSSM.DescribeParameters': 2 + 2 });
      assert.equal(metrics.count('ssm DescribeParameters ok'), 2);
      assert.ok(report.certificates.every((c) => c.result === 'unchanged'));
    });

    it('when nearly every folder changed, walks the path instead of reading folder by folder', async () => {
      // The same values again: every parameter gets a new version, no certificate changes.
      for (let i = 0; i <= M; i++) {
        if (i === 3) continue;
        for (const leaf of ['cert', 'key', 'chain']) {
          const p = (await peer.invoke('AmazonSSM.GetParameter', { Name: `/delta/m${i}/${leaf}`, WithDecryption: true })) as { Parameter: { Value: string; Type: string } };
          await putParameter(peer, `/delta/m${i}/${leaf}`, p.Parameter.Value, p.Parameter.Type === 'SecureString');
        }
      }
      const { report, calls } = await cycle();
      assert.deepEqual(calls, { 'AmazonSSM.DescribeParameters': 2, 'AmazonSSM.GetParametersByPath': (3 * M) / 10 });
      assert.equal(report.certificates.length, M);
      assert.ok(report.certificates.every((c) => c.result === 'unchanged'), JSON.stringify(results(report)));
      assert.deepEqual((await cycle()).calls, { 'AmazonSSM.DescribeParameters': 2 });
    });

    it('without ssm:DescribeParameters, warns once and keeps to the path walk', async () => {
      const denied = peer.inject({ op: 'AmazonSSM.DescribeParameters', kind: 'denied', count: Infinity });
      try {
        const { report, calls } = await cycle();
        assert.equal(denied.fired, 1);
        assert.deepEqual(calls, { 'AmazonSSM.DescribeParameters': 1, 'AmazonSSM.GetParametersByPath': (3 * M) / 10 });
        assert.ok(report.certificates.every((c) => c.result === 'unchanged'));
        assert.deepEqual((await cycle()).calls, { 'AmazonSSM.GetParametersByPath': (3 * M) / 10 }, 'not asked again');
        const refused = warnings.filter((w) => w.includes('DescribeParameters refused'));
        assert.equal(refused.length, 1, warnings.join(''));
        assert.match(refused[0]!, /access denied: the role needs ssm:DescribeParameters on \*/);
      } finally {
        denied.remove();
      }
    });
  });

  it('rides out throttling and 5xx (SDK retries) and counts the requests', async () => {
    const rt = await runtime(fleet());
    try {
      peer.resetCalls();
      const t = peer.inject({ op: 'secretsmanager.BatchGetSecretValue', kind: 'throttle', count: 2 });
      const f = peer.inject({ op: 'AmazonSSM.GetParameters', kind: '5xx', status: 503, count: 2 });
      const report = await runCycle(rt);
      assert.ok(report.ok, JSON.stringify(report.certificates.find((c) => c.result === 'failed')));
      assert.equal(t.fired, 2);
      assert.equal(f.fired, 2);
      assert.equal(peer.throttled['secretsmanager.BatchGetSecretValue'], 2);
      // Retried in place: the batches still cover everything, no fallback to single reads.
      assert.equal(peer.calls['secretsmanager.BatchGetSecretValue'], 5 + 2);
      assert.equal(peer.calls['secretsmanager.GetSecretValue'] ?? 0, 0);
      assert.equal(peer.calls['AmazonSSM.GetParameters'], 30 + 2);
      assert.equal(metrics.count('secrets-manager BatchGetSecretValue ok'), 5);
      assert.equal(metrics.count('ssm GetParameters ok'), 30);
    } finally {
      peer.clearFaults();
      await rt.close();
    }
  });

  it('a hung request times out and fails that certificate only', async () => {
    const hungDir = join(dir, 'deploy', 'hung');
    const okDir = join(dir, 'deploy', 'ok');
    await putSecret(peer, 'fleet/0', JSON.stringify({ certificate: leaves[1]!.certPem, private_key: readFileSync(leaves[1]!.keyPath, 'utf8'), chain: pki.intermediate.certPem }));
    const certs = [
      // AWSPREVIOUS is read with GetSecretValue (the batch reads AWSCURRENT only).
      { name: 'hung', source: { type: 'secrets-manager', secret_id: 'fleet/0', version_stage: 'AWSPREVIOUS', endpoint: peer.url, request_timeout: '300ms' }, targets: [{ type: 'tmpfs', dir: hungDir }] },
      { name: 'fine', source: { type: 'secrets-manager', secret_id: 'fleet/1', endpoint: peer.url, request_timeout: '300ms' }, targets: [{ type: 'tmpfs', dir: okDir }] },
    ];
    const rt = await runtime(certs, {}, 1);
    try {
      peer.resetCalls();
      peer.inject({ op: 'secretsmanager.GetSecretValue', kind: 'hang', count: Infinity });
      const t0 = Date.now();
      const report = await runCycle(rt);
      const took = Date.now() - t0;
      const hung = report.certificates.find((c) => c.name === 'hung')!;
      const fine = report.certificates.find((c) => c.name === 'fine')!;
      assert.equal(hung.result, 'failed');
      assert.match(hung.error!.message, /fetching hung from secrets-manager:fleet\/0: no answer within request_timeout/);
      assert.equal(fine.result, 'deployed');
      assert.ok(took < 15_000, `took ${took} ms`);
      assert.ok((peer.calls['secretsmanager.GetSecretValue'] ?? 0) >= 2, 'the SDK retried the timed-out request');
      assert.ok(metrics.count('secrets-manager GetSecretValue error') >= 1);
    } finally {
      peer.clearFaults();
      await rt.close();
    }
  });
});
