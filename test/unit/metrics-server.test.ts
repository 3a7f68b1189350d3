/** The Prometheus endpoint: real HTTP on 127.0.0.1, scraped and parsed as a scraper would. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Health } from '../../src/health.js';
import { silentLogger } from '../../src/log.js';
import { createPromMetrics, type MetricsServer, type PromMetrics, parseListen, serveMetrics } from '../../src/metrics-server.js';
import { samples } from '../helpers/metrics.js';

describe('metrics server', () => {
  let metrics: PromMetrics;
  let server: MetricsServer;
  let health: Health = { ok: true, problems: [], warnings: [] };

  before(async () => {
    metrics = await createPromMetrics();
    server = await serveMetrics('127.0.0.1:0', metrics, async () => health, silentLogger);
  });
  after(() => server.close());

  it('serves the certd series with their values', async () => {
    metrics.track(['web', 'api']);
    metrics.certificate('web', { notAfter: new Date('2026-06-01T00:00:00Z'), lastRotation: new Date('2026-03-01T00:00:00Z'), ready: true });
    metrics.certificate('api', { ready: false });
    metrics.rotation('web', 'deployed');
    metrics.rotation('api', 'failed');
    metrics.rotation('api', 'failed');
    metrics.sourceRequest('secrets-manager', 'GetSecretValue', 'ok');
    metrics.reload('ok');
    metrics.policyRejection('P-RSA-MIN');
    metrics.acmExport?.('api');
    const res = await fetch(`${server.url}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/plain/);
    const s = samples(await res.text());
    assert.equal(s.get('certd_certificate_not_after_timestamp_seconds{name="web"}'), Date.parse('2026-06-01T00:00:00Z') / 1000);
    assert.equal(s.get('certd_certificate_last_rotation_timestamp_seconds{name="web"}'), Date.parse('2026-03-01T00:00:00Z') / 1000);
    assert.equal(s.get('certd_certificate_ready{name="web"}'), 1);
    assert.equal(s.get('certd_certificate_ready{name="api"}'), 0);
    assert.equal(s.get('certd_rotations_total{name="web",result="deployed"}'), 1);
    assert.equal(s.get('certd_rotations_total{name="web",result="failed"}'), 0, 'tracked series start at zero');
    assert.equal(s.get('certd_rotations_total{name="api",result="failed"}'), 2);
    assert.equal(s.get('certd_source_requests_total{source="secrets-manager",operation="GetSecretValue",result="ok"}'), 1);
    assert.equal(s.get('certd_reloads_total{result="ok"}'), 1);
    assert.equal(s.get('certd_policy_rejections_total{rule="P-RSA-MIN"}'), 1);
    assert.equal(s.get('certd_acm_exports_total{name="api"}'), 1);

    metrics.forget('api');
    const after = samples(await (await fetch(`${server.url}/metrics`)).text());
    assert.equal(after.has('certd_certificate_ready{name="api"}'), false, 'a certificate removed from the config leaves no series');
    assert.equal(after.has('certd_acm_exports_total{name="api"}'), false);
  });

  it('/healthz answers 200 when healthy and 503 with the problems when not', async () => {
    health = { ok: true, problems: [], warnings: [] };
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
    health = { ok: true, problems: [], warnings: [{ name: 'web', problem: 'failed', message: 'web: last cycle failed' }] };
    const warned = await fetch(`${server.url}/healthz`);
    assert.equal(warned.status, 200, 'a warning (a failing source) is not unhealthy');
    assert.deepEqual(await warned.json(), health);
    health = { ok: false, problems: [{ name: 'web', problem: 'expiring', message: 'web: the deployed certificate expired' }], warnings: [] };
    const res = await fetch(`${server.url}/healthz`);
    assert.equal(res.status, 503);
    assert.deepEqual(await res.json(), health);
    assert.equal((await fetch(`${server.url}/nope`)).status, 404);
    assert.equal((await fetch(`${server.url}/metrics`, { method: 'POST' })).status, 405);
  });

  it('parses listen addresses of the config', () => {
    assert.deepEqual(parseListen('127.0.0.1:9464'), { host: '127.0.0.1', port: 9464 });
    assert.deepEqual(parseListen('[::1]:9464'), { host: '::1', port: 9464 });
    assert.throws(() => parseListen('9464'), /HOST:PORT/);
  });
});
