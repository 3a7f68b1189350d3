// What a fleet costs: a hundred Secrets Manager and a hundred SSM certificates read through
// the real SDK from the AWS peer, in-process (buildRuntime + runCycle) for speed. The peer's
// counters are the measure: one BatchGetSecretValue per 20 secrets, one GetParameters per 10
// parameters, one GetParametersByPath page per 10 parameters of a discovered prefix; an
// unchanged cycle writes nothing and reloads nothing. Throttling and 5xx are absorbed by
// retries; a hung request fails its certificate only.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/config.js';
import { silentLogger } from '../../src/log.js';
import type { Metrics } from '../../src/metrics.js';
import { runCycle } from '../../src/rotate.js';
import { buildRuntime, type Runtime } from '../../src/runtime.js';
import { shmDir, writeConfig } from '../helpers/cli.js';
import { TestPki, type Issued } from '../helpers/pki.js';
import { startAwsPeer, type AwsPeer } from '../peers/aws-peer.js';
import { awsEnv, createSecret, putParameterSet, putSecret } from './aws-fixtures.js';

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

  async function runtime(certificates: Record<string, unknown>[], extra: Record<string, unknown> = {}, fetchAttempts = 3): Promise<Runtime> {
    const path = writeConfig(dir, stringify({ state_dir: join(dir, 'state'), policy: { trust_anchors: pki.root.certPath }, certificates, ...extra }), `config-${certificates.length}-${Date.now()}.yaml`);
    metrics = new CountingMetrics();
    return buildRuntime(loadConfig(path, {}), { log: silentLogger, metrics, fetchAttempts });
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

  before(async () => {
    peer = await startAwsPeer();
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
