/**
 * Scenario 2: a fleet of certificates in one certd.
 *
 * 1,000 certificates in the AWS peer, which enforces AWS's per-operation quotas:
 *   Secrets Manager  one secret each (PEM bundle), deployed into the NGINX Plus keyval peer;
 *   SSM path mode    /bench/fleet/<name>/{cert,key} (the cert parameter holds leaf + chain),
 *                    one config entry discovering all of them, deployed to tmpfs; the cold
 *                    cycle walks GetParametersByPath (10 a page), the unchanged one compares
 *                    versions with DescribeParameters (50 a page, no values).
 * certd runs in this process (buildRuntime + runCycle, the real SDK over HTTP): a cold cycle
 * (nothing deployed), then an unchanged one. Counted: wall time, AWS calls (in total and by
 * operation), throttling answers, writes (keyval POST/PATCH; tmpfs sets deployed).
 * Baseline: what the FIPS-NGINX guides script, over 50 secrets: `aws secretsmanager
 * get-secret-value`, JSON-encode, `curl -X POST` into the keyval API.
 * Goals: unchanged cycle with at most N/20 calls, zero writes, under 1 s; per certificate,
 * >= 100x faster than the script.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { runCycle } from '../src/rotate.js';
import { buildRuntime } from '../src/runtime.js';
import { startAwsPeer } from '../test/peers/aws-peer.js';
import { startNginxPlusPeer } from '../test/peers/nginx-plus-peer.js';
import { awsEnv, awsSources, bundlePem, type CertEntry, configText, makeCa, ms, nowMs, run, type Row, type Scenario, shm, sleep, times, verdict } from './common.js';

/** The rest between the cold and the unchanged cycle: one second refills AWS's per-second buckets. */
const QUOTA_REFILL_MS = 1100;

interface CycleFigures {
  wallMs: number;
  calls: number;
  /** Calls by X-Amz-Target, e.g. {"AmazonSSM.DescribeParameters": 40}. */
  callsByOperation: Record<string, number>;
  throttled: number;
  writes: number;
  deployed: number;
  unchanged: number;
  failed: number;
  firstError?: string | undefined;
}

export const fleet: Scenario = {
  id: 2,
  title: 'Fleet of certificates',
  async run({ quick, log }) {
    const available = await awsSources();
    if (!available.secretsManager || !available.ssm) throw new Error('this tree has no secrets-manager/ssm sources (providers/index.ts)');
    const count = quick ? 200 : 1000;
    const shellCount = quick ? 10 : 50;
    const { dir, cleanup } = shm('fleet');
    const aws = await startAwsPeer({ quotas: true });
    const kv = await startNginxPlusPeer({ zones: { certs: {}, shell: {} } });
    const saved = { ...process.env };
    Object.assign(process.env, awsEnv(aws));
    const lines: string[] = [];
    const logger = createLogger({ level: 'error', write: (l) => void (lines.length < 50 && lines.push(l)) });
    try {
      const ca = await makeCa(dir, 'ca', 'ec-p256');
      log(`seeding ${count} secrets and ${count} SSM folders`);
      const sm: CertEntry[] = [];
      const acm: CertEntry[] = [];
      for (let i = 0; i < count; i++) {
        const m = await ca.issue([`c${i}.bench.example`]);
        await aws.invoke('secretsmanager.CreateSecret', { Name: `bench/c${i}`, SecretString: bundlePem(m) });
        await aws.invoke('AmazonSSM.PutParameter', { Name: `/bench/fleet/c${i}/cert`, Value: m.fullchainPem, Type: 'String', Overwrite: true });
        await aws.invoke('AmazonSSM.PutParameter', { Name: `/bench/fleet/c${i}/key`, Value: m.key.kind === 'pem' ? m.key.pem.revealString() : '', Type: 'SecureString', Overwrite: true });
        sm.push({ name: `c${i}`, source: { type: 'secrets-manager', secret_id: `bench/c${i}`, endpoint: aws.url }, targets: [{ type: 'nginx-plus-keyval', url: kv.apiUrl, zone: 'certs', keys: [`c${i}.bench.example`] }] });
        const imported = (await aws.invoke('CertificateManager.ImportCertificate', {
          Certificate: Buffer.from(m.leafPem).toString('base64'),
          PrivateKey: Buffer.from(m.key.kind === 'pem' ? m.key.pem.revealString() : '').toString('base64'),
          CertificateChain: Buffer.from(m.chainPem).toString('base64'),
        })) as { CertificateArn: string };
        acm.push({ name: `a${i}`, source: { type: 'acm', certificate_arn: imported.CertificateArn, endpoint: aws.url }, targets: [{ type: 'tmpfs', dir: join(dir, 'acm-out', `a${i}`) }] });
      }

      const measure = async (name: string, certificates: CertEntry[], writes: () => number): Promise<{ cold: CycleFigures; unchanged: CycleFigures }> => {
        const config = join(dir, `${name}.yaml`);
        writeFileSync(config, configText({ stateDir: join(dir, `state-${name}`), certificates }));
        const rt = await buildRuntime(loadConfig(config), { log: logger });
        try {
          const cycle = async (): Promise<CycleFigures> => {
            const calls0 = aws.callsTotal();
            const byOp0 = { ...aws.calls };
            const throttled0 = Object.values(aws.throttled).reduce((a, b) => a + b, 0);
            const writes0 = writes();
            const t0 = nowMs();
            const report = await runCycle(rt);
            const wallMs = nowMs() - t0;
            const by = (r: string) => report.certificates.filter((c) => c.result === r).length;
            return {
              wallMs,
              calls: aws.callsTotal() - calls0,
              callsByOperation: Object.fromEntries(Object.entries(aws.calls).map(([op, n]) => [op, n - (byOp0[op] ?? 0)]).filter(([, n]) => (n as number) > 0)),
              throttled: Object.values(aws.throttled).reduce((a, b) => a + b, 0) - throttled0,
              writes: writes() - writes0,
              deployed: by('deployed'),
              unchanged: by('unchanged'),
              failed: by('failed'),
              firstError: report.certificates.find((c) => c.error)?.error?.message,
            };
          };
          log(`${name}: cold cycle`);
          const cold = await cycle();
          // A daemon's next cycle comes at its next schedule (minutes later), not in the same
          // second: the quota buckets the cold cycle drained (SSM: 40/s, one second of burst)
          // have refilled by then. One second of rest stands for that interval.
          await sleep(QUOTA_REFILL_MS);
          log(`${name}: unchanged cycle`);
          const unchanged = await cycle();
          return { cold, unchanged };
        } finally {
          await rt.close();
        }
      };

      const kvWrites = () => kv.requests.filter((r) => (r.method === 'POST' || r.method === 'PATCH') && r.path.includes('/keyvals/certs')).length;
      const smFig = await measure('secrets-manager', sm, kvWrites);
      let tmpfsSets = 0;
      const ssmFig = await measure('ssm-path', [{ name: 'fleet', source: { type: 'ssm', path: '/bench/fleet', endpoint: aws.url }, targets: [{ type: 'tmpfs', dir: join(dir, 'ssm-out', '{name}') }] }], () => tmpfsSets);
      // tmpfs writes are the sets deployed: what the cycle reports.
      ssmFig.cold.writes = ssmFig.cold.deployed;
      ssmFig.unchanged.writes = ssmFig.unchanged.deployed;
      tmpfsSets = 0;
      // ACM: DescribeCertificate per certificate (10/s quota), ExportCertificate (5/s) only when
      // the serial or NotAfter changed: the unchanged cycle is describes only, no export, no write.
      const exports = () => aws.calls['CertificateManager.ExportCertificate'] ?? 0;
      const acmFig = await measure('acm', acm, () => 0);
      acmFig.cold.writes = acmFig.cold.deployed;
      acmFig.unchanged.writes = acmFig.unchanged.deployed;
      const exportsOf = (c: CycleFigures): number => (c.callsByOperation['CertificateManager.ExportCertificate'] as number | undefined) ?? 0;
      const acmExports = { cold: exportsOf(acmFig.cold), unchanged: exportsOf(acmFig.unchanged), total: exports() };

      // The scripted baseline, over a subset.
      log(`shell script: aws get-secret-value + curl POST into keyval, ${shellCount} secrets`);
      const shellDir = join(dir, 'shell');
      mkdirSync(shellDir);
      const script = [
        'set -e',
        `for i in $(seq 0 ${shellCount - 1}); do`,
        `  v=$(/usr/bin/aws --endpoint-url "${aws.url}" secretsmanager get-secret-value --secret-id "bench/c$i" --query SecretString --output text)`,
        `  body=$(printf '%s\\n' "$v" | python3 -c 'import json,sys; print(json.dumps({sys.argv[1]: sys.stdin.read()}))' "s$i.bench.example")`,
        `  curl -sf -X POST -H 'Content-Type: application/json' --data-binary "$body" "${kv.apiUrl}/9/http/keyvals/shell" >/dev/null`,
        'done',
        'echo done',
      ].join('\n');
      const shell = await run(['bash', '-c', script], { env: { ...process.env }, timeoutMs: 600_000 });
      const shellOk = shell.code === 0 && shell.stdout.trim() === 'done' && kv.zone('shell').size === shellCount;
      const shellPerCert = shell.wallMs / shellCount;
      const certdPerCert = smFig.cold.wallMs / count;

      const budgetCalls = count / 20;
      const rows: Row[] = [
        { measure: `secrets-manager -> keyval, cold cycle (${count})`, certd: `${ms(smFig.cold.wallMs)}, ${smFig.cold.calls} calls, ${smFig.cold.writes} writes`, against: `aws CLI + curl script (${shellCount})`, other: shellOk ? `${ms(shell.wallMs)}` : 'failed', ratio: shellOk ? `${times(shellPerCert / certdPerCert)} per cert` : 'n/a', goal: '>= 100x per cert', met: shellOk ? shellPerCert / certdPerCert >= 100 : undefined },
        { measure: 'secrets-manager -> keyval, unchanged cycle', certd: `${ms(smFig.unchanged.wallMs)}, ${smFig.unchanged.calls} calls, ${smFig.unchanged.writes} writes`, against: 'goal', other: `<= ${budgetCalls} calls, 0 writes, < 1 s`, ratio: `${times(smFig.unchanged.calls / count)} calls/cert`, goal: `<= N/20 calls, 0 writes, < 1 s`, met: smFig.unchanged.calls <= budgetCalls && smFig.unchanged.writes === 0 && smFig.unchanged.wallMs < 1000 },
        { measure: `ssm path -> tmpfs, cold cycle (${count})`, certd: `${ms(ssmFig.cold.wallMs)}, ${ssmFig.cold.calls} calls, ${ssmFig.cold.writes} sets written`, against: `aws CLI + curl script, per cert`, other: shellOk ? ms(shellPerCert) : 'failed', ratio: shellOk ? `${times(shellPerCert / (ssmFig.cold.wallMs / count))} per cert` : 'n/a' },
        { measure: 'ssm path -> tmpfs, unchanged cycle', certd: `${ms(ssmFig.unchanged.wallMs)}, ${ssmFig.unchanged.calls} calls, ${ssmFig.unchanged.writes} writes`, against: 'goal', other: `<= ${budgetCalls} calls, 0 writes, < 1 s`, ratio: `${times(ssmFig.unchanged.calls / count)} calls/cert`, goal: `<= N/20 calls, 0 writes, < 1 s`, met: ssmFig.unchanged.calls <= budgetCalls && ssmFig.unchanged.writes === 0 && ssmFig.unchanged.wallMs < 1000 },
      ];
      rows.push(
        { measure: `acm -> tmpfs, cold cycle (${count})`, certd: `${ms(acmFig.cold.wallMs)}, ${acmFig.cold.calls} calls (${acmExports.cold} exports), ${acmFig.cold.writes} sets written` },
        { measure: 'acm -> tmpfs, unchanged cycle', certd: `${ms(acmFig.unchanged.wallMs)}, ${acmFig.unchanged.calls} calls, ${acmExports.unchanged} exports, ${acmFig.unchanged.writes} writes`, against: 'goal', other: `${count} DescribeCertificate (throttled answers retried), 0 exports, 0 writes`, ratio: `${times(acmFig.unchanged.calls / count)} calls/cert`, goal: '0 exports, 0 writes, none failed', met: acmExports.unchanged === 0 && acmFig.unchanged.writes === 0 && acmFig.unchanged.failed === 0 },
      );
      const notes: string[] = [`the AWS peer enforces AWS's quotas (BatchGetSecretValue 100/s, SSM reads 40/s shared); throttling answers seen: secrets-manager ${smFig.cold.throttled + smFig.unchanged.throttled}, ssm ${ssmFig.cold.throttled + ssmFig.unchanged.throttled}`];
      notes.push(`the unchanged cycle starts ${QUOTA_REFILL_MS} ms after the cold one ends (a daemon's next cycle comes at its next schedule, once AWS's per-second quota buckets have refilled)`);
      notes.push(`ssm path calls by operation: cold ${JSON.stringify(ssmFig.cold.callsByOperation)}, unchanged ${JSON.stringify(ssmFig.unchanged.callsByOperation)}`);
      notes.push(`acm calls by operation: cold ${JSON.stringify(acmFig.cold.callsByOperation)}, unchanged ${JSON.stringify(acmFig.unchanged.callsByOperation)}; throttling answers seen: ${acmFig.cold.throttled + acmFig.unchanged.throttled} (DescribeCertificate 10/s, ExportCertificate 5/s)`);
      for (const [name, f] of [['secrets-manager', smFig], ['ssm', ssmFig], ['acm', acmFig]] as const) {
        for (const [which, c] of [['cold', f.cold], ['unchanged', f.unchanged]] as const) {
          if (c.failed > 0) notes.push(`${name} ${which} cycle: ${c.failed} certificates failed, e.g. ${c.firstError ?? '?'}`);
        }
      }
      if (!shellOk) notes.push(`the shell baseline failed (${shell.code}): ${shell.stderr.trim().slice(-300)}`);
      return {
        goal: 'unchanged cycle of 1,000: <= N/20 AWS calls, zero writes, < 1 s; cold cycle per certificate >= 100x the aws CLI + curl script',
        met: verdict(rows, quick),
        rows,
        figures: { count, shellCount, secretsManager: smFig, ssmPath: ssmFig, acm: { ...acmFig, exports: acmExports }, shell: { wallMs: shell.wallMs, ok: shellOk, perCertMs: shellPerCert }, certdPerCertMs: certdPerCert },
        notes: quick ? [...notes, `--quick: ${count} certificates (goals are judged at 1,000)`] : notes,
      };
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
      await kv.close();
      await aws.close();
      cleanup();
    }
  },
};
