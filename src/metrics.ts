/**
 * The metrics certd exports, in the cert-manager tradition. Labels carry names, results and
 * rule ids only: never material. The Prometheus registry is created lazily (prom-client is
 * loaded only when metrics are served).
 */
export interface Metrics {
  certificate(name: string, facts: { notAfter?: Date; lastRotation?: Date; ready?: boolean }): void;
  rotation(name: string, result: 'deployed' | 'unchanged' | 'failed' | 'rolled-back'): void;
  sourceRequest(source: string, operation: string, result: 'ok' | 'error' | 'throttled'): void;
  reload(result: 'ok' | 'error'): void;
  policyRejection(rule: string): void;
  /** One ACM ExportCertificate answered for certificate `name` (billed per call by AWS). */
  acmExport?(name: string): void;
}

export const noMetrics: Metrics = {
  certificate: () => undefined,
  rotation: () => undefined,
  sourceRequest: () => undefined,
  reload: () => undefined,
  policyRejection: () => undefined,
};
