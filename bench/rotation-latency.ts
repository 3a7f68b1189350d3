/**
 * Scenario 3: rotation latency, from a new AWSCURRENT version of a secret to the first TLS
 * handshake that presents it.
 *
 * Secrets Manager is the AWS peer (test/peers/aws-peer.ts, real SDK, SigV4, JSON 1.1); the
 * server is a real nginx (tmpfs target, `nginx -t` then `nginx -s reload`, verify on), or the
 * NGINX Plus keyval peer serving TLS from its zone (no reload). Each rotation writes a new
 * version with PutSecretValue, then asks certd, while a handshake loop watches for the new leaf:
 *   fresh      `certd rotate --now --cert web` as a new process (no daemon running);
 *   daemon     a running `certd run` asked over its control socket ({"op":"rotate","cert":"web"});
 *   keyval     the same daemon, certificate `kv` deployed into the keyval zone;
 *   shell      what the FIPS-NGINX guides script: `aws secretsmanager get-secret-value` into the
 *              file nginx reads, `nginx -t`, `nginx -s reload` (Debian's AWS CLI, same peer).
 * Median and p95 over 20 rotations each (shell: 5). Goals: < 150 ms through the daemon to
 * tmpfs + nginx, < 50 ms for keyval (medians).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { askDaemon } from '../src/control.js';
import type { Material } from '../src/material.js';
import { startAwsPeer } from '../test/peers/aws-peer.js';
import { startNginxPlusPeer } from '../test/peers/nginx-plus-peer.js';
import { startNginx } from '../test/helpers/nginx.js';
import { awsEnv, bundlePem, configText, epochNow, makeCa, median, ms, quantile, run, runCertd, type Row, type Scenario, shm, startDaemon, startProbe, times, verdict } from './common.js';

interface Sample {
  served: number;
  returned: number;
}

function stats(samples: readonly Sample[]): { medianServed: number; p95Served: number; medianReturned: number; p95Returned: number; n: number } {
  const s = samples.map((x) => x.served);
  const r = samples.map((x) => x.returned);
  return { medianServed: median(s), p95Served: quantile(s, 0.95), medianReturned: median(r), p95Returned: quantile(r, 0.95), n: samples.length };
}

export const rotationLatency: Scenario = {
  id: 3,
  title: 'Rotation latency',
  async run({ quick, log }) {
    const n = quick ? 5 : 20;
    const nShell = quick ? 2 : 5;
    const { dir, cleanup } = shm('latency');
    const aws = await startAwsPeer();
    const kvPeer = await startNginxPlusPeer({ zones: { certs: {} } });
    const kvTls = await kvPeer.startTls({ zone: 'certs' });
    const env = { ...awsEnv(aws), CERTD_LOG_LEVEL: 'warn' };
    const probe = await startProbe();
    let nginx: Awaited<ReturnType<typeof startNginx>> | undefined;
    let daemon: ReturnType<typeof startDaemon> | undefined;
    try {
      const ca = await makeCa(dir, 'ca', 'ec-p256');
      const put = async (id: string, m: Material): Promise<void> => {
        await aws.invoke('secretsmanager.PutSecretValue', { SecretId: id, SecretString: bundlePem(m) });
      };
      const fresh = async (host: string): Promise<Material> => ca.issue([host]);
      for (const id of ['web', 'kv', 'shell']) {
        await aws.invoke('secretsmanager.CreateSecret', { Name: `bench/${id}`, SecretString: bundlePem(await fresh(`${id}.bench.example`)) });
      }

      const out = join(dir, 'out', 'web');
      const shellDir = join(dir, 'shell');
      mkdirSync(shellDir, { recursive: true });
      const stateDir = join(dir, 'state');
      const web = (extra: Record<string, unknown>) => ({ name: 'web', source: { type: 'secrets-manager', secret_id: 'bench/web', endpoint: aws.url }, targets: [{ type: 'tmpfs', dir: out }], ...extra });
      const kv = (port: number) => ({
        name: 'kv',
        source: { type: 'secrets-manager', secret_id: 'bench/kv', endpoint: aws.url },
        targets: [{ type: 'nginx-plus-keyval', url: kvPeer.apiUrl, zone: 'certs', keys: ['kv.bench.example'] }],
        verify: { connect: `127.0.0.1:${port}`, servername: 'kv.bench.example' },
      });

      // nginx needs the files before it starts: deploy once without reload or verify.
      const bootstrap = join(dir, 'bootstrap.yaml');
      writeFileSync(bootstrap, configText({ stateDir, certificates: [web({}), kv(kvTls.port)] }));
      const first = await runCertd(['rotate', '--now', '--config', bootstrap], { env });
      if (first.code !== 0) throw new Error(`the first deployment failed: ${first.stderr.trim().slice(-600)}`);
      const shellBundle = join(shellDir, 'bundle.pem');
      writeFileSync(shellBundle, bundlePem(await fresh('shell.bench.example')), { mode: 0o600 });
      nginx = await startNginx({
        prefix: join(dir, 'nginx'),
        servers: [
          { serverName: 'web.bench.example', body: `ssl_certificate ${out}/fullchain.pem;\nssl_certificate_key ${out}/privkey.pem;\nssl_protocols TLSv1.2 TLSv1.3;` },
          { serverName: 'shell.bench.example', body: `ssl_certificate ${shellBundle};\nssl_certificate_key ${shellBundle};\nssl_protocols TLSv1.2 TLSv1.3;` },
        ],
      });
      const [webPort, shellPort] = nginx.ports as [number, number];
      const config = join(dir, 'config.yaml');
      writeFileSync(config, configText({
        stateDir,
        certificates: [
          web({ reload: { command: nginx.reloadCommand, test: nginx.testCommand }, verify: { connect: `127.0.0.1:${webPort}`, servername: 'web.bench.example' } }),
          kv(kvTls.port),
        ],
      }));

      /** One rotation: a new version, then `trigger`, while handshakes watch for the new leaf. */
      const rotateOnce = async (id: string, port: number, host: string, trigger: () => Promise<void>): Promise<Sample> => {
        const m = await fresh(host);
        await put(`bench/${id}`, m);
        const t0 = epochNow();
        let returned = 0;
        const [served] = await Promise.all([
          probe.served(port, host, m.fingerprint),
          trigger().then(() => (returned = epochNow())),
        ]);
        return { served: served - t0, returned: returned - t0 };
      };

      log(`fresh process: ${n} rotations`);
      const freshSamples: Sample[] = [];
      for (let i = 0; i < n; i++) {
        freshSamples.push(await rotateOnce('web', webPort, 'web.bench.example', async () => {
          const r = await runCertd(['rotate', '--now', '--config', config, '--cert', 'web', '--json'], { env });
          if (r.code !== 0) throw new Error(`certd rotate --now failed: ${r.stderr.trim().slice(-600)}`);
        }));
      }

      daemon = startDaemon(config, env);
      await daemon.firstCycle;
      const ask = async (cert: string): Promise<void> => {
        const report = (await askDaemon(stateDir, { op: 'rotate', cert })) as { ok?: boolean; certificates?: { result: string; error?: { message: string } }[] } | undefined;
        if (!report?.ok || report.certificates?.[0]?.result !== 'deployed') throw new Error(`the daemon's rotation of ${cert} did not deploy: ${JSON.stringify(report?.certificates?.[0] ?? report)}`);
      };
      log(`daemon, tmpfs + nginx reload: ${n} rotations`);
      const daemonSamples: Sample[] = [];
      for (let i = 0; i < n; i++) daemonSamples.push(await rotateOnce('web', webPort, 'web.bench.example', () => ask('web')));
      log(`daemon, keyval: ${n} rotations`);
      const kvSamples: Sample[] = [];
      for (let i = 0; i < n; i++) kvSamples.push(await rotateOnce('kv', kvTls.port, 'kv.bench.example', () => ask('kv')));

      log(`shell script (aws CLI + nginx -t + reload): ${nShell} rotations`);
      const script = [
        'set -e',
        `/usr/bin/aws --endpoint-url "${aws.url}" secretsmanager get-secret-value --secret-id bench/shell --query SecretString --output text > "${shellBundle}.new"`,
        `chmod 600 "${shellBundle}.new"`,
        `mv "${shellBundle}.new" "${shellBundle}"`,
        `${nginx.testCommand.join(' ')}`,
        `${nginx.reloadCommand.join(' ')}`,
      ].join('\n');
      const shellSamples: Sample[] = [];
      let shellNote: string | undefined;
      try {
        for (let i = 0; i < nShell; i++) {
          shellSamples.push(await rotateOnce('shell', shellPort, 'shell.bench.example', async () => {
            const r = await run(['bash', '-c', script], { env: { ...process.env, ...env }, timeoutMs: 60_000 });
            if (r.code !== 0) throw new Error(`the shell rotation failed: ${r.stderr.trim().slice(-400)}`);
          }));
        }
      } catch (err) {
        shellNote = `the shell baseline could not run (${err instanceof Error ? err.message : String(err)}); is Debian's awscli installed?`;
      }
      if (daemon.errors.length > 0) throw new Error(`certd run logged errors: ${daemon.errors[0]}`);
      // The floor of the reload path: the two nginx commands certd's cycle runs, timed alone.
      const nginxCommands: number[] = [];
      for (let i = 0; i < 5; i++) {
        const t = await run(nginx.testCommand);
        const r = await run(nginx.reloadCommand);
        if (t.code === 0 && r.code === 0) nginxCommands.push(t.wallMs + r.wallMs);
      }

      const f = stats(freshSamples);
      const d = stats(daemonSamples);
      const k = stats(kvSamples);
      const s = stats(shellSamples);
      const rows: Row[] = [
        { measure: 'daemon, tmpfs + nginx: new version to served (median / p95)', certd: `${ms(d.medianServed)} / ${ms(d.p95Served)}`, against: 'aws CLI + nginx -t + reload script', other: `${ms(s.medianServed)} / ${ms(s.p95Served)}`, ratio: times(s.medianServed / d.medianServed), goal: '< 150 ms', met: d.medianServed < 150 },
        { measure: 'daemon, keyval: new version to served (median / p95)', certd: `${ms(k.medianServed)} / ${ms(k.p95Served)}`, against: 'aws CLI + nginx -t + reload script', other: `${ms(s.medianServed)}`, ratio: times(s.medianServed / k.medianServed), goal: '< 50 ms', met: k.medianServed < 50 },
        { measure: 'certd rotate --now (fresh process): to served (median / p95)', certd: `${ms(f.medianServed)} / ${ms(f.p95Served)}`, against: 'aws CLI + nginx -t + reload script', other: `${ms(s.medianServed)}`, ratio: times(s.medianServed / f.medianServed) },
        { measure: 'daemon, tmpfs + nginx: until the cycle returned (verified)', certd: `${ms(d.medianReturned)} / ${ms(d.p95Returned)}`, against: 'certd rotate --now returned', other: `${ms(f.medianReturned)} / ${ms(f.p95Returned)}`, ratio: times(f.medianReturned / d.medianReturned) },
      ];
      const notes = [`${n} rotations per certd path, ${shellSamples.length} for the shell script; each a new certificate; served = the end of the first handshake presenting the new leaf (a handshake loop in a separate process runs meanwhile, so latencies are over-stated by up to one handshake); certd's cycle also runs nginx -t before the reload and verifies with three handshakes before it returns`];
      notes.push(`nginx -t plus nginx -s reload alone (spawn to exit, median of ${nginxCommands.length}): ${ms(median(nginxCommands))}; the tmpfs path cannot be served sooner than that`);
      if (shellNote) notes.push(shellNote);
      return {
        goal: 'new version to first handshake serving it: < 150 ms through the daemon (tmpfs + nginx reload), < 50 ms for keyval (medians)',
        met: verdict(rows),
        rows,
        figures: { fresh: f, daemon: d, keyval: k, shell: s, nginxTestAndReloadMs: median(nginxCommands), samples: { fresh: freshSamples, daemon: daemonSamples, keyval: kvSamples, shell: shellSamples } },
        notes,
      };
    } finally {
      probe.close();
      await daemon?.stop();
      await nginx?.stop();
      await kvTls.close();
      await kvPeer.close();
      await aws.close();
      cleanup();
    }
  },
};
