/** Helpers shared by the rule modules: recording findings and wording them. */
import type { Finding, RuleId, Severity } from './types.js';
import type { ParsedCertificate } from './x509.js';

export type Report = (rule: RuleId, severity: Severity, cert: number, message: string) => void;

export function collector(): { findings: Finding[]; report: Report } {
  const findings: Finding[] = [];
  return {
    findings,
    report: (rule, severity, cert, message) => {
      findings.push({ rule, severity, cert, message });
    },
  };
}

/** "leaf" or "certificate 2 (Example Issuing CA)": how messages name a certificate. */
export function label(index: number, cert?: ParsedCertificate): string {
  if (index === 0) return 'leaf';
  const name = cert ? (cert.subject.commonName ?? cert.subject.text) : '';
  return name ? `certificate ${index} (${name})` : `certificate ${index}`;
}

export const DAY_MS = 86_400_000;

/** "3.2 days", "41 days", "5 hours": for messages, not for computation. */
export function duration(ms: number): string {
  const abs = Math.abs(ms);
  if (abs < DAY_MS) {
    const hours = abs / 3_600_000;
    return hours < 1 ? `${Math.round(abs / 60_000)} minutes` : `${hours.toFixed(1)} hours`;
  }
  const days = abs / DAY_MS;
  return days < 10 ? `${days.toFixed(1)} days` : `${Math.round(days)} days`;
}
