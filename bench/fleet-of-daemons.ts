/**
 * Scenario 5: a fleet of daemons sharing one AWS account's quotas.
 *
 * 200 daemons (50 in quick mode... see below), each with 50 certificates read from Secrets
 * Manager and deployed to tmpfs, every daemon its own runtime, SDK clients, schedule, jitter and
 * state_dir (in-process Daemon instances, spread over a few worker processes: 200 Node processes
 * would not fit 2 cores). They serve the same 50 secrets, as the hosts behind one service do.
 * The AWS peer enforces AWS's quotas (BatchGetSecretValue 100/s, GetSecretValue 10,000/s).
 * Measured: the fleet's first cycle (all daemons start at once, no jitter on the first cycle);
 * then a mass rotation (a new AWSCURRENT version of every secret): certificates whose cycle
 * failed (throttling must not fail one), the time until every daemon has deployed every new
 * version, and the AWS calls and throttling answers on the way.
 * Goals: no throttling error fails a certificate; every daemon serves the new versions within
 * one schedule interval plus the jitter.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startAwsPeer } from '../test/peers/aws-peer.js';
import { awsEnv, bundlePem, configText, makeCa, ms, nowMs, type Row, type Scenario, shm, times, verdict } from './common.js';

interface WorkerMessage {
  type: 'ready' | 'done' | 'cycle';
  daemon?: number;
  at?: number;
  daemons?: number;
  startFailures?: number;
  failedCertificates?: number;
  failed?: number;
  throttled?: number;
  firstError?: string;
}

export const fleetOfDaemons: Scenario = {
  id: 5,
  title: 'Fleet of daemons',
  async run({ quick, log }) {
    const daemonCount = quick ? 40 : 200;
    const certsPerDaemon = 50;
    const workersCount = quick ? 2 : 4;
    // A cron with seconds; the goal is one interval plus the jitter.
    const schedule = quick ? '*/15 * * * * *' : '0 * * * * *';
    const intervalMs = quick ? 15_000 : 60_000;
    const jitterMs = quick ? 5_000 : 30_000;
    const { dir, cleanup } = shm('daemons');
    const aws = await startAwsPeer({ quotas: true });
    const workers: ChildProcess[] = [];
    try {
      const ca = await makeCa(dir, 'ca', 'ec-p256');
      for (let j = 0; j < certsPerDaemon; j++) {
        await aws.invoke('secretsmanager.CreateSecret', { Name: `fleet/s${j}`, SecretString: bundlePem(await ca.issue([`s${j}.fleet.example`])) });
      }
      const configs: string[] = [];
      for (let d = 0; d < daemonCount; d++) {
        const base = join(dir, `d${d}`);
        mkdirSync(base);
        const certificates = Array.from({ length: certsPerDaemon }, (_, j) => ({
          name: `s${j}`,
          source: { type: 'secrets-manager', secret_id: `fleet/s${j}`, endpoint: aws.url },
          targets: [{ type: 'tmpfs', dir: join(base, 'out', `s${j}`) }],
        }));
        const config = join(base, 'config.yaml');
        writeFileSync(config, configText({ stateDir: join(base, 'state'), certificates, schedule, jitter: `${jitterMs / 1000}s`, logLevel: 'error' }));
        configs.push(config);
      }

      const workerPath = fileURLToPath(new URL('./daemon-fleet-worker.js', import.meta.url));
      const doneAt = new Map<number, number>();
      let failedCycles = 0;
      let failedCertificates = 0;
      let throttledFailures = 0;
      let firstError: string | undefined;
      let phase: 'start' | 'rotation' = 'start';
      const startFailed = { certificates: 0, throttled: 0 };
      const ready: Promise<WorkerMessage>[] = [];
      log(`${daemonCount} daemons x ${certsPerDaemon} certificates in ${workersCount} processes: first cycle`);
      const calls0 = aws.callsTotal();
      const t0 = nowMs();
      const per = Math.ceil(daemonCount / workersCount);
      for (let w = 0; w < workersCount; w++) {
        const mine = configs.slice(w * per, (w + 1) * per);
        const offset = w * per;
        const child = fork(workerPath, mine, { env: { ...process.env, ...awsEnv(aws) }, stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
        let stderr = '';
        child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
        workers.push(child);
        ready.push(new Promise((resolve, reject) => {
          child.on('message', (m: WorkerMessage) => {
            if (m.type === 'ready') resolve(m);
            else if (m.type === 'done' && m.daemon !== undefined && m.at !== undefined) doneAt.set(offset + m.daemon, m.at);
            else if (m.type === 'cycle') {
              if (phase === 'start') {
                startFailed.certificates += m.failed ?? 0;
                startFailed.throttled += m.throttled ?? 0;
              } else {
                failedCycles++;
                failedCertificates += m.failed ?? 0;
                throttledFailures += m.throttled ?? 0;
              }
              firstError ??= m.firstError;
            }
          });
          child.once('exit', (code) => reject(new Error(`a fleet worker exited (${code}) before its daemons were ready: ${stderr.trim().slice(-600)}`)));
        }));
      }
      const readies = await Promise.all(ready);
      const startMs = nowMs() - t0;
      const startCalls = aws.callsTotal() - calls0;
      const startThrottles = { ...aws.throttled };
      const startErrors = readies.reduce((a, r) => a + (r.startFailures ?? 0), 0);
      if (startErrors > 0) throw new Error(`${startErrors} daemons failed to start: ${readies.find((r) => r.firstError)?.firstError ?? '?'}`);

      log('mass rotation: a new version of every secret');
      phase = 'rotation';
      aws.resetCalls();
      const versions: Record<string, string> = {};
      for (let j = 0; j < certsPerDaemon; j++) {
        const out = (await aws.invoke('secretsmanager.PutSecretValue', { SecretId: `fleet/s${j}`, SecretString: bundlePem(await ca.issue([`s${j}.fleet.example`])) })) as { VersionId: string };
        versions[`s${j}`] = out.VersionId;
      }
      const rotatedAt = Date.now();
      for (const w of workers) w.send({ type: 'expect', versions });
      const limitMs = intervalMs + jitterMs;
      const deadline = rotatedAt + limitMs + 90_000;
      while (doneAt.size < daemonCount && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
      const latencies = [...doneAt.values()].map((at) => at - rotatedAt);
      const allDone = doneAt.size === daemonCount;
      const worstMs = allDone ? Math.max(...latencies) : Number.NaN;
      const rotationCalls = aws.callsTotal();
      const rotationThrottled = Object.values(aws.throttled).reduce((a, b) => a + b, 0);
      const batchCalls = aws.calls['secretsmanager.BatchGetSecretValue'] ?? 0;
      const getCalls = aws.calls['secretsmanager.GetSecretValue'] ?? 0;
      const minimumCalls = daemonCount * Math.ceil(certsPerDaemon / 20);

      const rows: Row[] = [
        { measure: `mass rotation: all ${daemonCount} daemons serve the new versions`, certd: allDone ? ms(worstMs) : `${doneAt.size}/${daemonCount} within ${ms(limitMs + 90_000)}`, against: 'one interval + jitter', other: ms(limitMs), ratio: allDone ? `${times(worstMs / limitMs)} of it` : 'n/a', goal: '<= interval + jitter', met: allDone && worstMs <= limitMs },
        { measure: 'mass rotation: certificates failed (throttling among them)', certd: `${failedCertificates} (${throttledFailures})`, against: 'throttling answers from AWS', other: String(rotationThrottled), goal: 'no throttling failure', met: throttledFailures === 0 },
        { measure: 'mass rotation: AWS calls until all served', certd: `${rotationCalls} (${batchCalls} batch, ${getCalls} single)`, against: 'one batch per 20 secrets per daemon and cycle', other: String(minimumCalls), ratio: times(rotationCalls / minimumCalls) },
        { measure: `fleet start: ${daemonCount} daemons' first cycles at once`, certd: `${ms(startMs)}, ${startCalls} calls`, against: 'throttling answers', other: String(Object.values(startThrottles).reduce((a, b) => a + b, 0)), ratio: `${startFailed.certificates} certs failed (${startFailed.throttled} throttled)` },
      ];
      const notes = [
        `${daemonCount} daemons in ${workersCount} processes on ${(await import('node:os')).cpus().length} cores; schedule "${schedule}", jitter ${jitterMs / 1000}s; a daemon counts as done when one of its cycles has reported every certificate at its new VersionId`,
        `median daemon done after ${allDone ? ms([...latencies].sort((a, b) => a - b)[Math.floor(latencies.length / 2)] ?? Number.NaN) : 'n/a'}`,
      ];
      if (firstError) notes.push(`first failure seen: ${firstError}`);
      if (failedCycles > 0) notes.push(`${failedCycles} daemon cycles ended with failures after the rotation`);
      return {
        goal: 'after a mass rotation: no throttling error fails a certificate, and every daemon serves the new versions within one schedule interval plus jitter',
        met: verdict(rows),
        rows,
        figures: { daemonCount, certsPerDaemon, workersCount, schedule, intervalMs, jitterMs, startMs, startCalls, startThrottles, startFailed, rotationCalls, rotationThrottled, batchCalls, getCalls, minimumCalls, failedCertificates, throttledFailures, latencies, allDone, worstMs, throttledByOp: aws.throttled },
        notes,
      };
    } finally {
      await Promise.all(workers.map((w) => new Promise<void>((resolve) => {
        if (w.exitCode !== null || w.signalCode !== null) return resolve();
        const timer = setTimeout(() => w.kill('SIGKILL'), 60_000);
        w.once('exit', () => {
          clearTimeout(timer);
          resolve();
        });
        if (w.connected) w.send({ type: 'stop' });
        else w.kill('SIGTERM');
      })));
      await aws.close();
      cleanup();
    }
  },
};
