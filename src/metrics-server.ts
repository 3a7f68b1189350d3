/**
 * The Prometheus side of `Metrics` and the HTTP endpoint that serves it: `/metrics` (text
 * exposition format) and `/healthz` (200 healthy, 503 not; the rule is health.ts's). prom-client
 * is imported only here, and this module only when `metrics.listen` is set.
 *
 * Series (labels carry certificate names, source types, operations, results and rule ids only):
 *   certd_certificate_not_after_timestamp_seconds{name}     notAfter of what is deployed
 *   certd_certificate_last_rotation_timestamp_seconds{name} when it was deployed
 *   certd_certificate_ready{name}                           1: deployed and last cycle did not fail
 *   certd_rotations_total{name,result}                      deployed | unchanged | failed | rolled-back
 *   certd_source_requests_total{source,operation,result}    ok | error | throttled
 *   certd_reloads_total{result}                             ok | error
 *   certd_policy_rejections_total{rule}                     POLICY.md rule ids
 *   certd_certificate_next_attempt_timestamp_seconds{name}  when the daemon next tries it (status's nextRun)
 *   certd_config_reload_ok                                  1: the last SIGHUP's config was taken (or none yet); 0: refused
 *   certd_cycles_total{result}, certd_last_cycle_timestamp_seconds
 * plus prom-client's default process and Node.js series.
 */
import { createServer, type Server } from 'node:http';
import type { Counter, Gauge, Registry } from 'prom-client';
import { CertdError, messageOf } from './errors.js';
import type { Health } from './health.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';

export interface PromMetrics extends Metrics {
  readonly registry: Registry;
  /** Creates the series of these certificates (zero counts, ready 0) so that rates and alerts see them from the start. */
  track(names: readonly string[]): void;
  /** Drops every series of a certificate that left the config. */
  forget(name: string): void;
  /** One finished cycle. */
  cycle(ok: boolean, at: Date): void;
  /** How the last config reload ended (1 at start). */
  configReload(ok: boolean): void;
  /** Where certd_certificate_next_attempt_timestamp_seconds is read from, at each scrape. */
  nextAttempts(read: () => readonly { name: string; at: Date | null }[]): void;
  render(): Promise<{ contentType: string; body: string }>;
}

const ROTATION_RESULTS = ['deployed', 'unchanged', 'failed', 'rolled-back'] as const;

const seconds = (d: Date): number => d.getTime() / 1000;

export async function createPromMetrics(): Promise<PromMetrics> {
  const prom = await import('prom-client');
  const registry = new prom.Registry();
  prom.collectDefaultMetrics({ register: registry });
  const gauge = (name: string, help: string, labelNames: string[]): Gauge => new prom.Gauge({ name, help, labelNames, registers: [registry] });
  const counter = (name: string, help: string, labelNames: string[]): Counter => new prom.Counter({ name, help, labelNames, registers: [registry] });

  const notAfter = gauge('certd_certificate_not_after_timestamp_seconds', 'notAfter of the deployed certificate, as a Unix time.', ['name']);
  const lastRotation = gauge('certd_certificate_last_rotation_timestamp_seconds', 'When the deployed certificate was deployed, as a Unix time.', ['name']);
  const ready = gauge('certd_certificate_ready', '1 when the certificate is deployed and its last cycle did not fail, else 0.', ['name']);
  const rotations = counter('certd_rotations_total', 'Certificates processed by cycles, by result.', ['name', 'result']);
  const sourceRequests = counter('certd_source_requests_total', 'Requests made by sources to where certificates are kept.', ['source', 'operation', 'result']);
  const reloads = counter('certd_reloads_total', 'Server reloads (test command and reload), by result.', ['result']);
  const rejections = counter('certd_policy_rejections_total', 'Findings that refused material, by POLICY.md rule id.', ['rule']);
  const cycles = counter('certd_cycles_total', 'Finished cycles; failed when any certificate failed.', ['result']);
  const lastCycle = gauge('certd_last_cycle_timestamp_seconds', 'When the last cycle finished, as a Unix time.', []);
  const reloadOk = gauge('certd_config_reload_ok', '1 when the config read at the last SIGHUP was taken (or there was none since start), 0 when it was refused and the previous one still runs.', []);
  let readNext: (() => readonly { name: string; at: Date | null }[]) | undefined;
  // Read at each scrape: the next scheduled time moves on by itself, between cycles.
  new prom.Gauge({
    name: 'certd_certificate_next_attempt_timestamp_seconds',
    help: 'When the daemon next tries the certificate (the next scheduled cycle, or the end of its backoff when later), as a Unix time.',
    labelNames: ['name'],
    registers: [registry],
    collect() {
      this.reset();
      for (const n of readNext?.() ?? []) if (n.at) this.labels({ name: n.name }).set(seconds(n.at));
    },
  });
  for (const result of ['ok', 'error'] as const) reloads.labels({ result }).inc(0);
  for (const result of ['ok', 'failed'] as const) cycles.labels({ result }).inc(0);

  return {
    registry,
    certificate(name, facts) {
      if (facts.notAfter) notAfter.labels({ name }).set(seconds(facts.notAfter));
      if (facts.lastRotation) lastRotation.labels({ name }).set(seconds(facts.lastRotation));
      if (facts.ready !== undefined) ready.labels({ name }).set(facts.ready ? 1 : 0);
    },
    rotation(name, result) {
      rotations.labels({ name, result }).inc();
    },
    sourceRequest(source, operation, result) {
      sourceRequests.labels({ source, operation, result }).inc();
    },
    reload(result) {
      reloads.labels({ result }).inc();
    },
    policyRejection(rule) {
      rejections.labels({ rule }).inc();
    },
    track(names) {
      for (const name of names) {
        for (const result of ROTATION_RESULTS) rotations.labels({ name, result }).inc(0);
      }
    },
    forget(name) {
      notAfter.remove({ name });
      lastRotation.remove({ name });
      ready.remove({ name });
      for (const result of ROTATION_RESULTS) rotations.remove({ name, result });
    },
    cycle(ok, at) {
      cycles.labels({ result: ok ? 'ok' : 'failed' }).inc();
      lastCycle.set(seconds(at));
    },
    configReload(ok) {
      reloadOk.set(ok ? 1 : 0);
    },
    nextAttempts(read) {
      readNext = read;
    },
    async render() {
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
  };
}

export interface MetricsServer {
  /** "http://127.0.0.1:9464" with the port actually bound (listen on port 0 picks one). */
  readonly url: string;
  close(): Promise<void>;
}

/** "127.0.0.1:9464", "[::1]:9464", "localhost:9464" (the config's hostPort form). */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(listen);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new CertdError('E_CONFIG', `metrics.listen "${listen}": expected HOST:PORT`);
  return { host: m[1] ?? m[2] ?? '127.0.0.1', port };
}

export async function serveMetrics(listen: string, metrics: PromMetrics, health: () => Promise<Health>, log: Logger): Promise<MetricsServer> {
  const { host, port } = parseListen(listen);
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    const reply = async (): Promise<void> => {
      if (path === '/metrics') {
        const { contentType, body } = await metrics.render();
        res.writeHead(200, { 'content-type': contentType }).end(req.method === 'HEAD' ? undefined : body);
      } else if (path === '/healthz') {
        const h = await health();
        res.writeHead(h.ok ? 200 : 503, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(req.method === 'HEAD' ? undefined : `${JSON.stringify(h)}\n`);
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics or /healthz\n');
      }
    };
    reply().catch((err: unknown) => {
      log.error({ step: 'metrics', path, err: messageOf(err) }, 'serving a metrics request failed');
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('internal error\n');
    });
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new CertdError('E_CONFIG', `metrics.listen ${listen}: ${messageOf(err)}`, { cause: err })));
    server.listen(port, host, () => resolve());
  });
  const address = server.address();
  const boundPort = typeof address === 'object' && address ? address.port : port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${boundPort}`;
  log.info({ step: 'metrics', url }, 'serving /metrics and /healthz');
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
