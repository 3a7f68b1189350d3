/**
 * When certd counts as healthy. One rule serves `certd status --health` (the ECS health check),
 * the daemon's `/healthz` and its choice of which failing certificates to retry every cycle.
 *
 * Healthy means: every configured certificate is serving a valid certificate that is not about
 * to expire. A configured certificate is a problem (unhealthy) when
 *   - it has never been deployed (no last-good record), or
 *   - what is deployed is expiring: its notAfter is within `urgentMargin` (below).
 * Its last cycle having failed (a source down, bad material refused, a rolled-back deployment)
 * is a warning: the last good deployment keeps serving, and a health check that failed on it
 * would turn a source outage into a serving outage (ECS replaces the task, and the new task has
 * nothing to serve while the source is down). A failure that lasts shows as `expiring` in time.
 * Certificates in the state directory that are no longer configured are ignored.
 */
import type { DeployedSummary } from './contracts.js';
import type { CertState } from './state.js';

export interface HealthProblem {
  readonly name: string;
  readonly problem: 'never-deployed' | 'failed' | 'expiring';
  /** One line for humans: "web: last cycle failed at ...: E_SOURCE: ...". */
  readonly message: string;
}

export interface Health {
  /** No problems (warnings allowed). */
  readonly ok: boolean;
  /** What makes certd unhealthy: never-deployed or expiring. */
  readonly problems: readonly HealthProblem[];
  /** Failed last cycles while a valid last-good certificate is still served ('failed'). */
  readonly warnings: readonly HealthProblem[];
}

/**
 * How close to its notAfter a deployed certificate counts as expiring: renew_before, but at most
 * a sixth of its lifetime. A sixth is half of the window in which issuers renew (they renew at
 * two thirds of the lifetime when renew_before is longer than that), so a short-lived issued
 * certificate is flagged only after half its renewal window has passed without a renewal, and
 * never in the moment between becoming due and the next cycle renewing it.
 */
export function urgentMargin(deployed: Pick<DeployedSummary, 'notBefore' | 'notAfter'>, renewBeforeMs: number): number {
  const lifetime = new Date(deployed.notAfter).getTime() - new Date(deployed.notBefore).getTime();
  return Math.min(renewBeforeMs, Math.max(0, lifetime) / 6);
}

export function isExpiring(deployed: Pick<DeployedSummary, 'notBefore' | 'notAfter'>, renewBeforeMs: number, now: Date): boolean {
  return new Date(deployed.notAfter).getTime() - now.getTime() <= urgentMargin(deployed, renewBeforeMs);
}

/** The problems and warnings of the configured certificates `names`, given their state records. */
export function healthOf(names: readonly string[], states: ReadonlyMap<string, CertState>, renewBeforeMs: number, now: Date): Health {
  const problems: HealthProblem[] = [];
  const warnings: HealthProblem[] = [];
  for (const name of names) {
    const s = states.get(name);
    const good = s?.lastGood;
    const last = s?.lastResult;
    if (!good) {
      const why = last?.error ? `: last attempt at ${last.at} failed: ${last.error.code}: ${last.error.message}` : last ? '' : ' (no cycle has run yet)';
      problems.push({ name, problem: 'never-deployed', message: `${name}: never deployed${why}` });
      continue;
    }
    if (last?.result === 'failed') {
      const err = last.error ? `: ${last.error.code}: ${last.error.message}` : '';
      warnings.push({ name, problem: 'failed', message: `${name}: last cycle failed at ${last.at}${err} (still serving ${good.fingerprint.slice(0, 23)}…, not after ${good.notAfter})` });
    }
    if (isExpiring(good, renewBeforeMs, now)) {
      const left = new Date(good.notAfter).getTime() - now.getTime();
      problems.push({
        name,
        problem: 'expiring',
        message: left <= 0 ? `${name}: the deployed certificate expired at ${good.notAfter}` : `${name}: the deployed certificate expires at ${good.notAfter} and has not been renewed`,
      });
    }
  }
  return { ok: problems.length === 0, problems, warnings };
}
