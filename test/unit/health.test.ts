/** The health rule shared by `certd status --health`, /healthz and the daemon's retry choice. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { healthOf, isExpiring, urgentMargin } from '../../src/health.js';
import type { CertState } from '../../src/state.js';

const DAY = 86_400_000;
const HOUR = 3_600_000;
const now = new Date('2026-03-01T00:00:00Z');

function good(name: string, leftMs: number, lifetimeMs: number): CertState {
  const notAfter = new Date(now.getTime() + leftMs);
  return {
    name,
    lastGood: {
      fingerprint: 'AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99',
      version: '1',
      notBefore: new Date(notAfter.getTime() - lifetimeMs).toISOString(),
      notAfter: notAfter.toISOString(),
      digest: 'd',
      origin: 'test',
      subject: 'CN=x',
      dnsNames: [],
      deployedAt: now.toISOString(),
      targets: [],
    },
    lastResult: { result: 'unchanged', at: now.toISOString(), failures: 0 },
  };
}

describe('health', () => {
  it('expiring means within renew_before, at most a sixth of the lifetime', () => {
    assert.equal(urgentMargin(good('a', 0, 365 * DAY).lastGood!, 30 * DAY), 30 * DAY, 'long-lived: renew_before');
    assert.equal(urgentMargin(good('a', 0, 24 * HOUR).lastGood!, 30 * DAY), 4 * HOUR, 'a 24h issued certificate: its last 4 hours');
    assert.equal(isExpiring(good('a', 29 * DAY, 365 * DAY).lastGood!, 30 * DAY, now), true);
    assert.equal(isExpiring(good('a', 31 * DAY, 365 * DAY).lastGood!, 30 * DAY, now), false);
    // Issuers renew a 24h certificate at 16h (8h left): it is not "expiring" yet then.
    assert.equal(isExpiring(good('a', 8 * HOUR, 24 * HOUR).lastGood!, 30 * DAY, now), false);
    assert.equal(isExpiring(good('a', 3 * HOUR, 24 * HOUR).lastGood!, 30 * DAY, now), true);
  });

  it('names every configured certificate that is never deployed, failed or expiring, and ignores the rest', () => {
    const failed: CertState = {
      ...good('failed', 200 * DAY, 365 * DAY),
      lastResult: { result: 'failed', at: now.toISOString(), failures: 2, error: { code: 'E_SOURCE', message: 'fetching secrets-manager:web: access denied' } },
    };
    const states = new Map<string, CertState>([
      ['ok', good('ok', 200 * DAY, 365 * DAY)],
      ['failed', failed],
      ['old', good('old', 10 * DAY, 365 * DAY)],
      ['expired', good('expired', -DAY, 365 * DAY)],
      ['gone', good('gone', -DAY, 365 * DAY)],
    ]);
    const h = healthOf(['ok', 'failed', 'old', 'expired', 'never'], states, 30 * DAY, now);
    assert.equal(h.ok, false);
    assert.deepEqual(h.problems.map((p) => [p.name, p.problem]), [
      ['old', 'expiring'],
      ['expired', 'expiring'],
      ['never', 'never-deployed'],
    ]);
    assert.match(h.problems[1]!.message, /expired at/);
    assert.deepEqual(h.warnings.map((p) => [p.name, p.problem]), [['failed', 'failed']]);
    assert.deepEqual(healthOf(['ok'], states, 30 * DAY, now), { ok: true, problems: [], warnings: [] });
  });

  it('a failing source while a valid last-good certificate is served is a warning, not unhealthy', () => {
    const failed: CertState = {
      ...good('web', 200 * DAY, 365 * DAY),
      lastResult: { result: 'failed', at: now.toISOString(), failures: 5, error: { code: 'E_SOURCE', message: 'fetching secrets-manager:prod/web/tls: connect ECONNREFUSED' } },
    };
    const h = healthOf(['web'], new Map([['web', failed]]), 30 * DAY, now);
    assert.equal(h.ok, true);
    assert.deepEqual(h.problems, []);
    assert.equal(h.warnings.length, 1);
    assert.match(h.warnings[0]!.message, /^web: last cycle failed at .*E_SOURCE: fetching secrets-manager:prod\/web\/tls: connect ECONNREFUSED \(still serving AA:BB/);
    // The same failure once the served certificate is about to expire: unhealthy (expiring), and still warned.
    const late: CertState = { ...failed, lastGood: good('web', 2 * DAY, 365 * DAY).lastGood! };
    const h2 = healthOf(['web'], new Map([['web', late]]), 30 * DAY, now);
    assert.equal(h2.ok, false);
    assert.deepEqual(h2.problems.map((p) => p.problem), ['expiring']);
    assert.deepEqual(h2.warnings.map((p) => p.problem), ['failed']);
  });
});
