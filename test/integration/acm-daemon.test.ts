/**
 * The acm source under `certd run`: one daemon, cycles every second against the AWS peer's ACM.
 * Scheduled unchanged cycles cost one DescribeCertificate each and no export; a renewal costs
 * exactly one export; certd_acm_exports_total on /metrics counts what ACM billed.
 */
import assert from 'node:assert/strict';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { shmDir } from '../helpers/cli.js';
import { type LogLine, spawnDaemon, waitForLog } from '../helpers/daemon.js';
import { samples } from '../helpers/metrics.js';
import { TestPki, type Issued } from '../helpers/pki.js';
import { startAwsPeer, type AwsPeer } from '../peers/aws-peer.js';
import { awsEnv } from './aws-fixtures.js';


describe('acm source under certd run', () => {
  const scratch = shmDir('acm-daemon');
  const dir = scratch.dir;
  let peer: AwsPeer;
  let pki: TestPki;
  let arn: string;
  let child: ChildProcessWithoutNullStreams;
  let exited: Promise<unknown>;
  let metricsUrl = '';
  const lines: LogLine[] = [];

  const importCert = async (leaf: Issued, certificateArn?: string): Promise<string> =>
    ((await peer.invoke('CertificateManager.ImportCertificate', {
      Certificate: Buffer.from(leaf.certPem).toString('base64'),
      PrivateKey: readFileSync(leaf.keyPath).toString('base64'),
      CertificateChain: Buffer.from(pki.intermediate.certPem).toString('base64'),
      ...(certificateArn ? { CertificateArn: certificateArn } : {}),
    })) as { CertificateArn: string }).CertificateArn;

  const logged = (pred: (l: LogLine) => boolean, what: string, from = 0, timeoutMs = 20_000): Promise<LogLine> => waitForLog(lines, pred, what, from, timeoutMs);
  const cycles = (from: number) => lines.slice(from).filter((l) => l['msg'] === 'cycle finished').length;
  const scrape = async () => samples(await (await fetch(`${metricsUrl}/metrics`)).text());
  const leaves: Record<string, Issued> = {};

  before(async () => {
    peer = await startAwsPeer();
    pki = new TestPki(join(dir, 'pki'));
    leaves['a'] = pki.leaf('acm-daemon-a', { dns: ['d.acm.certd.test'] });
    leaves['b'] = pki.leaf('acm-daemon-b', { dns: ['d.acm.certd.test'] });
    arn = await importCert(leaves['a']!);
    writeFileSync(join(dir, 'anchors.pem'), pki.root.certPem);
    const configPath = join(dir, 'config.yaml');
    writeFileSync(configPath, `state_dir: ${join(dir, 'state')}
schedule: "*/1 * * * * *"
jitter: 100ms
metrics: { listen: "127.0.0.1:0" }
log: { level: info, format: json }
policy: { trust_anchors: ${join(dir, 'anchors.pem')} }
certificates:
  - name: web
    source: { type: acm, certificate_arn: "${arn}", endpoint: "${peer.url}" }
    targets: [{ type: tmpfs, dir: ${join(dir, 'out', 'web')} }]
`);
    ({ child, exited } = spawnDaemon(configPath, lines, { label: 'certd run (acm) stderr', env: { ...awsEnv(peer) } }));
    metricsUrl = String((await logged((l) => l['msg'] === 'serving /metrics and /healthz', 'the metrics address'))['url']);
    await logged((l) => l['msg'] === 'cycle finished' && l['trigger'] === 'start', 'the first cycle');
  });

  after(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
    await peer?.close();
    scratch.cleanup();
  });

  it('scheduled unchanged cycles describe only; a renewal is exported once; /metrics counts exports', async () => {
    assert.equal(readFileSync(join(dir, 'out', 'web', 'cert.pem'), 'utf8'), leaves['a']!.certPem);
    assert.equal(peer.acm.exportsOf(arn), 1);
    peer.resetCalls();
    const from = lines.length;
    while (cycles(from) < 3) await sleep(50);
    assert.equal(peer.calls['CertificateManager.ExportCertificate'] ?? 0, 0, 'unchanged cycles never export');
    assert.ok((peer.calls['CertificateManager.DescribeCertificate'] ?? 0) >= 3);
    let s = await scrape();
    assert.equal(s.get('certd_acm_exports_total{name="web"}'), 1);

    await importCert(leaves['b']!, arn);
    const renewed = lines.length;
    await logged((l) => l['msg'] === 'cycle finished' && lines.slice(renewed).some((x) => x['step'] === 'stage'), 'a cycle deploying the renewal', renewed);
    while (cycles(renewed) < 3) await sleep(50);
    assert.equal(readFileSync(join(dir, 'out', 'web', 'cert.pem'), 'utf8'), leaves['b']!.certPem);
    assert.equal(peer.acm.exportsOf(arn), 2, 'one export for the renewal, none after');
    s = await scrape();
    assert.equal(s.get('certd_acm_exports_total{name="web"}'), 2);
    assert.ok((s.get('certd_source_requests_total{source="acm",operation="DescribeCertificate",result="ok"}') ?? 0) >= 6);
  });
});
