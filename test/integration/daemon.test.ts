/**
 * `certd run` as a user runs it: bin/certd as a child process with a local-ca source and tmpfs
 * targets in /dev/shm, on a schedule of every second. Other certd commands run against it the
 * way an operator (or the ECS health check) would.
 */
import assert from 'node:assert/strict';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { rotateStandalone } from '../../src/commands/rotate.js';
import { CertdError } from '../../src/errors.js';
import type { CycleReport } from '../../src/rotate.js';
import { runCertd, shmDir } from '../helpers/cli.js';
import { type LogLine, spawnDaemon, waitForLog } from '../helpers/daemon.js';
import { samples } from '../helpers/metrics.js';


const scratch = shmDir('daemon');
const dir = scratch.dir;
const stateDir = join(dir, 'state');
const configPath = join(dir, 'config.yaml');

function config(extraCerts = '', top = ''): string {
  return `state_dir: ${stateDir}
schedule: "*/1 * * * * *"
jitter: 100ms
metrics: { listen: "127.0.0.1:0" }
log: { level: info, format: json }
${top}
certificates:
  - name: web
    source: { type: local-ca, dns_names: [web.certd.test], ttl: 24h }
    targets: [{ type: tmpfs, dir: ${dir}/out/web }]
${extraCerts}`;
}

/** The deployed set as a reader sees it: the key must belong to the leaf. */
function deployed(name: string): X509Certificate {
  const base = join(dir, 'out', name);
  const leaf = new X509Certificate(readFileSync(join(base, 'cert.pem')));
  const full = new X509Certificate(readFileSync(join(base, 'fullchain.pem')));
  const spki = (k: ReturnType<typeof createPublicKey>) => k.export({ type: 'spki', format: 'der' }).toString('hex');
  assert.equal(full.fingerprint256, leaf.fingerprint256, `${name}: fullchain.pem starts with cert.pem`);
  assert.equal(spki(createPublicKey(createPrivateKey(readFileSync(join(base, 'privkey.pem'))))), spki(leaf.publicKey), `${name}: privkey.pem is the leaf's key`);
  return leaf;
}

describe('certd run (child process)', () => {
  let child: ChildProcessWithoutNullStreams;
  const lines: LogLine[] = [];
  let exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  let metricsUrl = '';

  const logged = (pred: (l: LogLine) => boolean, what: string, from = 0, timeoutMs = 15_000): Promise<LogLine> => waitForLog(lines, pred, what, from, timeoutMs);

  before(async () => {
    writeFileSync(configPath, config());
    ({ child, exited } = spawnDaemon(configPath, lines, { label: 'certd run stderr', launcher: true }));
    const served = await logged((l) => l['msg'] === 'serving /metrics and /healthz', 'the metrics address');
    metricsUrl = String(served['url']);
    await logged((l) => l['msg'] === 'cycle finished' && l['trigger'] === 'start', 'the first cycle');
  });

  after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    scratch.cleanup();
  });

  it('deploys at start and listens on a 0600 control socket in state_dir', () => {
    deployed('web');
    const st = statSync(join(stateDir, 'control.sock'));
    assert.ok(st.isSocket(), 'control.sock is a unix socket');
    assert.equal(st.mode & 0o777, 0o600);
    assert.ok(existsSync(join(stateDir, 'deploy.lock')), 'the daemon holds the deployment lock');
    assert.equal(readFileSync(join(stateDir, 'deploy.lock'), 'utf8').split('\n')[0], String(child.pid));
  });

  it('runs cycles on its schedule', async () => {
    const from = lines.length;
    await logged((l) => l['msg'] === 'cycle finished' && l['trigger'] === 'schedule', 'a scheduled cycle', from, 5_000);
    const line = await logged((l) => l['step'] === 'cycle' && l['cert'] === 'web', 'a per-certificate line', from);
    assert.equal(line['result'], 'unchanged');
    assert.equal(typeof line['durationMs'], 'number');
  });

  it('rotate --now --json goes through the control socket and prints the same report', async () => {
    const from = lines.length;
    const r = await runCertd(['rotate', '--now', '--json', '--config', configPath]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as CycleReport;
    assert.equal(report.ok, true);
    assert.deepEqual(report.certificates.map((c) => [c.name, c.result]), [['web', 'unchanged']]);
    assert.equal(report.certificates[0]?.fingerprint, deployed('web').fingerprint256);
    await logged((l) => l['msg'] === 'rotate requested over control socket', 'the control request', from);
    await logged((l) => l['msg'] === 'cycle finished' && l['trigger'] === 'request', 'the requested cycle', from);

    const unknown = await runCertd(['rotate', '--now', '--cert', 'nope', '--config', configPath]);
    assert.equal(unknown.code, 2, 'an unknown --cert is a usage error, as standalone');
    assert.match(unknown.stderr, /no certificate named "nope"/);
  });

  it('a standalone cycle is refused by the lock while the daemon runs', async () => {
    // The path `certd rotate --now` takes when no daemon answers on the socket.
    const out: string[] = [];
    const io = { out: (t: string) => void out.push(t), err: (t: string) => void out.push(t), env: { ...process.env, CERTD_LOG_LEVEL: 'error' }, isTTY: false };
    await assert.rejects(
      rotateStandalone({ config: configPath, cert: undefined, dryRun: false, json: true }, io),
      (err: unknown) => err instanceof CertdError && err.code === 'E_LOCKED' && err.message.includes(`pid ${child.pid}`),
    );
    assert.deepEqual(out, [], 'nothing was deployed or printed');
  });

  it('status asks the daemon; status --health and /healthz agree that all is well', async () => {
    const s = await runCertd(['status', '--json', '--config', configPath]);
    assert.equal(s.code, 0, s.stderr);
    const doc = JSON.parse(s.stdout) as { certificates: { name: string; fingerprint: string }[]; daemon?: { pid: number; phase: string } };
    assert.equal(doc.daemon?.pid, child.pid);
    assert.equal(doc.daemon?.phase, 'running');
    assert.equal(doc.certificates[0]?.fingerprint, deployed('web').fingerprint256);
    const h = await runCertd(['status', '--health', '--config', configPath]);
    assert.equal(h.code, 0, h.stdout);
    assert.equal((await fetch(`${metricsUrl}/healthz`)).status, 200);
  });

  it('SIGHUP with a broken config logs the error and keeps serving the old one', async () => {
    writeFileSync(configPath, 'certificates:\n  - name: web\n    source: { type: nowhere }\n');
    const from = lines.length;
    child.kill('SIGHUP');
    const err = await logged((l) => l['msg'] === 'reloading the config failed; the running config stays in use', 'the refused reload', from);
    assert.match(String(err['err']), /unknown source type/);
    assert.equal(err['code'], 'E_CONFIG');
    await logged((l) => l['msg'] === 'cycle finished' && l['trigger'] === 'reload', 'the cycle SIGHUP runs, although the config was refused', lines.indexOf(err));
    await logged((l) => l['msg'] === 'cycle finished' && l['trigger'] === 'schedule', 'a cycle after the refused reload', lines.indexOf(err));
    // The config file is broken now; the same state_dir in another file still finds the daemon.
    const r = await runCertd(['rotate', '--now', '--json', '--config', writeGood()]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as CycleReport).certificates[0]?.name, 'web');
  });

  function writeGood(): string {
    const p = join(dir, 'good.yaml');
    writeFileSync(p, config());
    return p;
  }

  it('SIGHUP with a good config takes it; /metrics shows the new rotation with its real notAfter', async () => {
    writeFileSync(
      configPath,
      config(`  - name: api
    source: { type: local-ca, dns_names: [api.certd.test], ttl: 48h }
    targets: [{ type: tmpfs, dir: ${dir}/out/api }]
  - name: broken
    source: { type: file, cert: ${dir}/missing/cert.pem, key: ${dir}/missing/key.pem }
    targets: [{ type: tmpfs, dir: ${dir}/out/broken }]
`),
    );
    const from = lines.length;
    child.kill('SIGHUP');
    await logged((l) => l['msg'] === 'config reloaded', 'the reload', from);
    // The FIPS probe runs again for every new config; a host that is not FIPS hears it once.
    const fips = lines.filter((l) => l['rule'] === 'P-FIPS-RT' && l['level'] === 'warn');
    if (!lines.some((l) => l['msg'] === 'FIPS runtime probe passed')) assert.equal(fips.length, 1, 'the FIPS warning once per daemon, not per SIGHUP');
    await logged((l) => l['msg'] === 'certificate deployed' && l['cert'] === 'api', 'the deployment of api', from);
    await logged((l) => l['msg'] === 'certificate failed' && l['cert'] === 'broken', 'the failure of broken', from);

    const res = await fetch(`${metricsUrl}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    const m = samples(text);
    const api = deployed('api');
    const web = deployed('web');
    assert.equal(m.get('certd_certificate_not_after_timestamp_seconds{name="api"}'), Date.parse(api.validTo) / 1000);
    assert.equal(m.get('certd_certificate_not_after_timestamp_seconds{name="web"}'), Date.parse(web.validTo) / 1000);
    const stateApi = JSON.parse(readFileSync(join(stateDir, 'certs/api.json'), 'utf8')) as { lastGood: { deployedAt: string } };
    assert.equal(m.get('certd_certificate_last_rotation_timestamp_seconds{name="api"}'), Date.parse(stateApi.lastGood.deployedAt) / 1000);
    assert.equal(m.get('certd_rotations_total{name="api",result="deployed"}'), 1);
    assert.ok((m.get('certd_rotations_total{name="web",result="unchanged"}') ?? 0) >= 2);
    assert.equal(m.get('certd_certificate_ready{name="api"}'), 1);
    assert.equal(m.get('certd_certificate_ready{name="web"}'), 1);
    assert.equal(m.get('certd_certificate_ready{name="broken"}'), 0);
    assert.ok((m.get('certd_rotations_total{name="broken",result="failed"}') ?? 0) >= 1);
    assert.ok(text.includes('# TYPE certd_reloads_total counter'));
    assert.ok(text.includes('# TYPE certd_source_requests_total counter'));
    assert.ok(text.includes('# TYPE certd_policy_rejections_total counter'));
    assert.doesNotMatch(text, /PRIVATE KEY|BEGIN CERTIFICATE/);

    const health = await fetch(`${metricsUrl}/healthz`);
    assert.equal(health.status, 503);
    const body = (await health.json()) as { ok: boolean; problems: { name: string; problem: string }[] };
    assert.deepEqual(body.problems.map((p) => [p.name, p.problem]), [['broken', 'never-deployed']]);
    const h = await runCertd(['status', '--health', '--config', configPath]);
    assert.equal(h.code, 1);
    assert.match(h.stdout, /^broken: never deployed: last attempt at .* failed: E_SOURCE/m);
    assert.equal(h.stdout.trim().split('\n').length, 1, 'one line per problem');
  });

  it('SIGTERM stops cleanly: exit 0, complete sets on tmpfs, socket and lock gone', async () => {
    const from = lines.length;
    child.kill('SIGTERM');
    const { code, signal } = await exited;
    assert.equal(signal, null);
    assert.equal(code, 0);
    await logged((l) => l['msg'] === 'certd stopped', 'the stop', from, 1_000);
    deployed('web');
    deployed('api');
    assert.equal(existsSync(join(stateDir, 'control.sock')), false);
    assert.equal(existsSync(join(stateDir, 'deploy.lock')), false);
    const r = await runCertd(['rotate', '--now', '--json', '--config', writeGood()]);
    assert.equal(r.code, 0, 'with no daemon, rotate --now runs standalone');
    assert.equal((JSON.parse(r.stdout) as CycleReport).certificates[0]?.result, 'unchanged');
  });
});
