/**
 * One reconcile cycle: for every certificate fetch, check, compare, stage; then one reload per
 * distinct reload spec, verify, and commit or roll back. A failure of one certificate never
 * stops the others; what is deployed is always a whole, policy-checked set.
 */
import { createHash } from 'node:crypto';
import { type ChecksCurrent, checksCurrent, checksDeployment, type DeployedSummary, isIssuer, type SourceLane, type Target } from './contracts.js';
import { creditEndpoints, type EndpointLog, endpointsOf, withEndpointLog } from './endpoints.js';
import { CertdError, messageOf } from './errors.js';
import type { Material } from './material.js';
import { checkPolicy, VALIDITY_SKEW_MS } from './policy/check.js';
import type { Finding, PolicySettings } from './policy/types.js';
import { parseCertificate } from './policy/x509.js';
import { describeReload, reloadKey, type ReloadSpec, runReload, runTest } from './reload.js';
import type { CertificateRuntime, Runtime } from './runtime.js';
import type { CertState, CycleOutcome, LastGood, RefusedMaterial } from './state.js';
import { waitForServed } from './verify.js';
import { prefetchAll } from './prefetch.js';
import { parseDuration } from './duration.js';

export interface CertificateReport {
  name: string;
  result: CycleOutcome;
  /**
   * The leaf served after this cycle: the new one when deployed, the deployed one when unchanged,
   * and for a failed certificate the last good one still served (undefined when none is).
   * `version`, `notAfter` and `origin` describe the same certificate.
   */
  fingerprint?: string | undefined;
  previousFingerprint?: string | undefined;
  version?: string | undefined;
  notAfter?: string | undefined;
  origin?: string | undefined;
  /** Why nothing was fetched or deployed ("not due until ...", "same as deployed"). */
  reason?: string | undefined;
  error?: { code: string; message: string } | undefined;
  /** A failed certificate's material that was fetched and not deployed. */
  refused?: RefusedMaterial | undefined;
  findings?: Finding[] | undefined;
  /**
   * Targets of the last deployment that are no longer configured (a changed `dir`, a removed
   * target), named once, in the cycle that deployed without them: certd no longer manages what
   * it left there, and removes nothing a server may still read.
   */
  leftBehind?: string[] | undefined;
  durationMs: number;
}

export interface CycleReport {
  ok: boolean;
  startedAt: string;
  durationMs: number;
  dryRun: boolean;
  certificates: CertificateReport[];
  reloads: { command: string; result: 'ok' | 'failed' | 'test-failed'; certificates: string[]; error?: string }[];
}

export interface CycleOptions {
  /** Only this certificate (--cert). */
  only?: string | undefined;
  dryRun?: boolean | undefined;
  /**
   * rotate --now --force: issuers issue a new certificate (and key) although theirs is not due,
   * and every other certificate is deployed again although the source has nothing new.
   */
  force?: boolean | undefined;
  signal?: AbortSignal | undefined;
  /** Skip due-time checks of issuers (rotate --now forces nothing else). */
  onProgress?: ((done: number, total: number, name: string) => void) | undefined;
  /** Called for each certificate before fetching; the daemon uses it to skip certificates not due. */
  concurrency?: number | undefined;
  /**
   * Only the certificates for which this returns true take part (after `only`); the daemon
   * leaves out certificates that are backing off after a failure.
   */
  include?: ((name: string) => boolean) | undefined;
  /**
   * A graceful stop: aborts fetches and the retry sleeps between them, never a started stage,
   * reload, verification, commit or rollback (those get `signal` only), so a cycle that is
   * stopped still ends with every target holding a whole set.
   */
  stop?: AbortSignal | undefined;
  /**
   * While certificates are still being fetched, every this many ms (default 10 s) the cycle logs
   * which ones it is waiting on and calls onWaiting: a hung source is visible long before its
   * fetch_deadline ends it.
   */
  progressEveryMs?: number | undefined;
  onWaiting?: ((p: CycleWaiting) => void) | undefined;
}

/** What a cycle still waits on (see CycleOptions.onWaiting). */
export interface CycleWaiting {
  done: number;
  total: number;
  /** The certificates being fetched now, longest first (at most 10 named). */
  waiting: string[];
  elapsedMs: number;
}

const DEFAULT_FETCH_DEADLINE = '30s';

/**
 * The longest one certificate's source step may take in a cycle: change checks, every fetch
 * attempt (each SDK attempt is bounded by request_timeout) and the pauses between retries.
 * `fetch_deadline` of the certificate, else the top-level one.
 */
export function fetchDeadline(rt: Pick<Runtime, 'loaded'>, cert: Pick<CertificateRuntime, 'config'>): { text: string; ms: number } {
  const text = cert.config?.fetch_deadline ?? rt.loaded?.config?.fetch_deadline ?? DEFAULT_FETCH_DEADLINE;
  return { text, ms: parseDuration(text) };
}

/** The longest fetch_deadline of `certs` (the prefetch step waits at most this long). */
function longestDeadline(rt: Runtime, certs: readonly CertificateRuntime[]): number {
  return Math.max(parseDuration(rt.loaded?.config?.fetch_deadline ?? DEFAULT_FETCH_DEADLINE), ...certs.map((c) => fetchDeadline(rt, c).ms));
}

/**
 * The longest a cycle over `certs` can take when every wait runs to its limit: the prefetch,
 * one fetch_deadline per round of `concurrency` workers (or of a lane's limit), and each reload (test, reload, and
 * both again to roll back) and verification. An upper bound for service managers, never a wait.
 */
export function cycleBoundMs(rt: Runtime, certs: readonly CertificateRuntime[], concurrency = 64): number {
  // A lane runs its certificates `limit` at a time: that many rounds of deadlines at most.
  const laned = new Map<string, { n: number; limit: number }>();
  for (const c of certs) {
    const lane = c.source.lane;
    if (!lane) continue;
    const l = laned.get(lane.key) ?? { n: 0, limit: Math.max(1, lane.limit) };
    l.n++;
    laned.set(lane.key, l);
  }
  const rounds = Math.max(1, Math.ceil(certs.length / concurrency), ...[...laned.values()].map((l) => Math.ceil(l.n / l.limit)));
  const reloads = new Map<string, number>();
  let verify = 0;
  for (const c of certs) {
    if (c.reload) reloads.set(reloadKey(c.reload), 4 * c.reload.timeoutMs);
    if (c.verify) verify += 2 * c.verify.timeoutMs;
  }
  const reloading = [...reloads.values()].reduce((a, b) => a + b, 0);
  return longestDeadline(rt, certs) * (rounds + 1) + reloading + verify + 15_000;
}

/** A certificate in flight through the cycle. */
interface Work {
  readonly cert: CertificateRuntime;
  readonly state: CertState;
  readonly started: number;
  report: CertificateReport;
  material?: Material;
  staged: Target[];
  /** The endpoints this certificate's steps called (see endpoints.ts). */
  endpoints?: EndpointLog;
}

async function mapLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  });
  await Promise.all(workers);
}

/**
 * The lanes of one cycle: per key, at most `limit` holders; the others wait in arrival order.
 * When `signal` aborts (certd stopping), every waiter leaves with its reason: one listener for
 * the whole cycle, however many certificates wait.
 */
class Lanes {
  private readonly lanes = new Map<string, { held: number; queue: { go: () => void; stop: (err: unknown) => void }[] }>();

  constructor(private readonly signal: AbortSignal) {
    signal.addEventListener('abort', () => {
      for (const l of this.lanes.values()) for (const w of l.queue.splice(0)) w.stop(signal.reason);
    }, { once: true });
  }

  async acquire(lane: SourceLane): Promise<() => void> {
    let l = this.lanes.get(lane.key);
    if (!l) this.lanes.set(lane.key, (l = { held: 0, queue: [] }));
    const entry = l;
    if (entry.held >= Math.max(1, lane.limit)) {
      this.signal.throwIfAborted();
      await new Promise<void>((go, stop) => entry.queue.push({ go, stop }));
    }
    entry.held++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      entry.held--;
      entry.queue.shift()?.go();
    };
  }
}

function summary(g: LastGood | undefined): DeployedSummary | undefined {
  return g ? { fingerprint: g.fingerprint, version: g.version, notBefore: g.notBefore, notAfter: g.notAfter } : undefined;
}

function errorOf(err: unknown): { code: string; message: string } {
  if (err instanceof CertdError) return { code: err.code, message: err.message };
  return { code: 'E_INTERNAL', message: messageOf(err) };
}

/**
 * One audit record (see audit.ts). Awaited so records keep the cycle's order; the sink never
 * rejects, the catch is for sinks that do.
 */
async function audit(rt: Runtime, event: Record<string, unknown>): Promise<void> {
  await rt.audit.record(event).catch((err: unknown) => rt.log.error({ err: messageOf(err) }, 'writing the audit trail failed'));
}

export async function runCycle(rt: Runtime, options: CycleOptions = {}): Promise<CycleReport> {
  const signal = options.signal ?? new AbortController().signal;
  const startedAt = rt.clock.now();
  const t0 = Date.now();
  const dryRun = options.dryRun ?? false;
  // --cert may name a configured entry or a member discovered under one (`<entry>-<member>`).
  const only = options.only;
  const named = only ? rt.certificates.filter((c) => c.name === only || (c.expand !== undefined && only.startsWith(`${c.name}-`))) : rt.certificates;
  if (options.only && named.length === 0) {
    throw new CertdError('E_CONFIG', `no certificate named "${options.only}" in ${rt.loaded.path} (known: ${rt.certificates.map((c) => c.name).join(', ') || 'none'})`);
  }
  const entries = options.include ? named.filter((c) => options.include?.(c.name)) : named;
  const fetchSignal = options.stop ? AbortSignal.any([signal, options.stop]) : signal;
  const work: Work[] = [];
  // Per certificate, the endpoints called for it by discovery and prefetch, then by its own steps.
  const called = new Map<string, EndpointLog>();
  const certs = await expandEntries(rt, entries, options, fetchSignal, work, called);
  const order = [...work.map((w) => w.cert), ...certs];
  // Batching sources read all their certificates in a few requests before the workers start.
  const prefetchBound = new AbortController();
  const prefetchTimer = setTimeout(() => prefetchBound.abort(new CertdError('E_SOURCE', 'fetch_deadline passed while prefetching')), longestDeadline(rt, certs));
  await prefetchAll(certs, rt.log, AbortSignal.any([fetchSignal, prefetchBound.signal]), called).finally(() => clearTimeout(prefetchTimer));
  let done = 0;
  const inFlight = new Map<string, number>();
  const every = options.progressEveryMs ?? 10_000;
  const ticker = setInterval(() => {
    const p: CycleWaiting = { done, total: certs.length, waiting: [...inFlight].sort((a, b) => a[1] - b[1]).slice(0, 10).map(([n]) => n), elapsedMs: Date.now() - t0 };
    const more = inFlight.size > p.waiting.length ? ` and ${inFlight.size - p.waiting.length} more` : '';
    rt.log.info({ step: 'cycle', done: p.done, total: p.total, waiting: p.waiting, elapsedMs: p.elapsedMs }, `cycle running for ${Math.round(p.elapsedMs / 1000)} s: ${p.done} of ${p.total} certificates done; waiting on ${p.waiting.join(', ')}${more}`);
    options.onWaiting?.(p);
  }, every);
  ticker.unref();
  const lanes = new Lanes(fetchSignal);
  try {
    await mapLimit(certs, options.concurrency ?? 64, async (cert) => {
      inFlight.set(cert.name, Date.now());
      const endpoints = called.get(cert.name) ?? new Map();
      const w = await withEndpointLog(endpoints, () => prepare(rt, cert, { dryRun, force: options.force === true, lanes }, signal, fetchSignal));
      w.endpoints = endpoints;
      inFlight.delete(cert.name);
      work.push(w);
      options.onProgress?.(++done, certs.length, cert.name);
    });
  } finally {
    clearInterval(ticker);
  }
  const position = new Map(order.map((c, i) => [c, i]));
  work.sort((a, b) => (position.get(a.cert) ?? 0) - (position.get(b.cert) ?? 0));

  const staged = work.filter((w) => w.staged.length > 0);
  const reloads = await reloadAndVerify(rt, staged, signal);

  for (const w of staged) {
    if (w.report.result === 'failed') continue;
    for (const t of w.staged) {
      await t.commit(signal).catch((err: unknown) => rt.log.warn({ cert: w.cert.name, target: t.description, err: messageOf(err) }, 'cleaning up after commit failed'));
    }
    w.report.result = 'deployed';
    await reportLeftBehind(rt, w);
  }
  for (const w of work) {
    if (w.report.result === 'failed') showServed(w);
    await record(rt, w, dryRun);
  }
  const reports = work.map((w) => w.report);
  return {
    ok: reports.every((r) => r.result !== 'failed'),
    startedAt: startedAt.toISOString(),
    durationMs: Date.now() - t0,
    dryRun,
    certificates: reports,
    reloads,
  };
}

/**
 * Entries whose source discovers (ssm `path`) replaced by the members found now; a failed
 * discovery becomes that entry's failure in `work`, and the other certificates go on.
 */
async function expandEntries(rt: Runtime, entries: readonly CertificateRuntime[], options: CycleOptions, signal: AbortSignal, work: Work[], called: Map<string, EndpointLog>): Promise<CertificateRuntime[]> {
  const out: CertificateRuntime[] = [];
  for (const c of entries) {
    const expand = c.expand;
    if (!expand) {
      out.push(c);
      continue;
    }
    const discovering: EndpointLog = new Map();
    try {
      const deadline = fetchDeadline(rt, c);
      const expiry = new AbortController();
      const timer = setTimeout(() => expiry.abort(new CertdError('E_SOURCE', `discovering certificates of ${c.name}: no answer within fetch_deadline ${deadline.text}; the certificates deployed before stay`)), deadline.ms);
      const bound = AbortSignal.any([signal, expiry.signal]);
      const members = await withEndpointLog(discovering, () => untilAborted(expand(bound), bound)).finally(() => clearTimeout(timer));
      const taking = members.filter((m) => (options.only === undefined || options.only === c.name || m.name === options.only) && (options.include?.(m.name) ?? true));
      creditEndpoints(called, taking.map((m) => m.name), discovering);
      out.push(...taking);
    } catch (err) {
      const state = await rt.state.get(c.name).catch(() => ({ name: c.name }) as CertState);
      const w: Work = { cert: c, state, started: Date.now(), report: { name: c.name, result: 'failed', durationMs: 0 }, staged: [], endpoints: discovering };
      fail(rt, w, err instanceof CertdError ? err : new CertdError('E_SOURCE', `discovering certificates of ${c.name}: ${messageOf(err)}`, { cause: err }));
      work.push(w);
    }
  }
  return out;
}

/**
 * A digest of how the certificate's targets are configured (dir, mode, group, owner, layout,
 * url, ...): the last deployment records it, and a different one means the targets must be
 * written again even when the certificate is the same.
 */
export function targetConfigDigest(cert: Pick<CertificateRuntime, 'config'>): string {
  return createHash('sha256').update(JSON.stringify(cert.config?.targets ?? null)).digest('hex');
}

/**
 * Why the targets need this certificate again although it may be unchanged, or undefined. A
 * record written before target digests were kept is taken as matching (no mass redeployment
 * on upgrade); its next deployment records the digest.
 */
function targetsChanged(cert: CertificateRuntime, lastGood: LastGood | undefined): string | undefined {
  if (!lastGood) return undefined;
  const now = cert.targets.map((t) => t.description);
  if (JSON.stringify(lastGood.targets) !== JSON.stringify(now)) return 'the targets changed';
  if (lastGood.targetConfig !== undefined && lastGood.targetConfig !== targetConfigDigest(cert)) return 'the target configuration changed';
  return undefined;
}

/** Targets of the last deployment this one no longer has: named in the report, the log and the audit trail. */
async function reportLeftBehind(rt: Runtime, w: Work): Promise<void> {
  const now = new Set(w.cert.targets.map((t) => t.description));
  const gone = (w.state.lastGood?.targets ?? []).filter((t) => !now.has(t));
  if (gone.length === 0) return;
  w.report.leftBehind = gone;
  for (const t of gone) {
    rt.log.warn(
      { cert: w.cert.name, step: 'targets', target: t },
      `${t} is no longer a target of ${w.cert.name}: certd deployed it elsewhere and manages nothing there any more; what it wrote there (the private key too) stays until you remove it once nothing reads it`,
    );
    await audit(rt, { event: 'target-retired', cert: w.cert.name, target: t, fingerprint: w.state.lastGood?.fingerprint });
  }
}

/** Fetch, policy, compare and stage one certificate. Never throws: failures land in the report. */
async function prepare(rt: Runtime, cert: CertificateRuntime, o: { dryRun: boolean; force: boolean; lanes?: Lanes }, signal: AbortSignal, fetchSignal: AbortSignal = signal): Promise<Work> {
  const dryRun = o.dryRun;
  const state = await rt.state.get(cert.name).catch(() => ({ name: cert.name }) as CertState);
  const w: Work = { cert, state, started: Date.now(), report: { name: cert.name, result: 'failed', durationMs: 0 }, staged: [] };
  const log = rt.log.child({ cert: cert.name });
  const deployed = summary(state.lastGood);
  w.report.previousFingerprint = deployed?.fingerprint;
  let expiryTimer: NodeJS.Timeout | undefined;
  let leaveLane: (() => void) | undefined;
  try {
    // A target that no longer serves the last good deployment (a restarted NGINX Plus, files
    // deleted behind certd's back) gets it again even when the source has nothing new.
    const lost = deployed ? await lostTargets(cert.targets, deployed.fingerprint, fetchSignal) : [];
    if (lost.length > 0) log.warn({ step: 'check', targets: lost, fingerprint: deployed?.fingerprint }, 'a target no longer holds the deployed certificate; deploying again');
    // A source sharing a quota with others waits for its turn first: that wait is not the
    // endpoint's, so the deadline starts after it.
    if (cert.source.lane && o.lanes) leaveLane = await o.lanes.acquire(cert.source.lane);
    // From here the source step has fetch_deadline in all, whatever its retries and timeouts.
    const deadline = fetchDeadline(rt, cert);
    // A timer that holds the event loop (AbortSignal.timeout's does not): a wait that nothing
    // else keeps alive must still end with this error rather than an exit mid-cycle.
    const expiry = new AbortController();
    expiryTimer = setTimeout(() => expiry.abort(new CertdError('E_SOURCE', `fetch_deadline ${deadline.text} passed`)), deadline.ms);
    const sourceStep: SourceStep = { signal: AbortSignal.any([fetchSignal, expiry.signal]), expiry: expiry.signal, deadline: deadline.text };
    const changed = targetsChanged(cert, state.lastGood);
    if (changed) log.info({ step: 'check', targets: cert.targets.map((t) => t.description) }, `${changed} since the last deployment; deploying again`);
    const again = o.force ? 'forced (rotate --now --force)' : changed;
    if (isIssuer(cert.source) && deployed && !state.pending && lost.length === 0 && again === undefined) {
      const due = cert.source.dueAt(deployed);
      if (rt.clock.now() < due) {
        Object.assign(w.report, { result: 'unchanged', fingerprint: deployed.fingerprint, version: deployed.version, notAfter: deployed.notAfter, reason: `not due until ${due.toISOString()}` });
        return w;
      }
    }
    if (checksCurrent(cert.source) && deployed && !state.pending && lost.length === 0 && again === undefined) {
      if (await isCurrentWithRetry(rt, cert, cert.source, deployed, sourceStep)) {
        Object.assign(w.report, { result: 'unchanged', fingerprint: deployed.fingerprint, version: deployed.version, notAfter: deployed.notAfter, reason: 'the source still has the deployed version' });
        return w;
      }
    }
    const material = await fetchWithRetry(rt, cert, deployed, sourceStep);
    leaveLane?.();
    Object.assign(w.report, { fingerprint: material.fingerprint, version: material.version, notAfter: material.notAfter.toISOString(), origin: material.origin });
    const findings = policyFindings(material, cert, rt.clock.now());
    const rejects = findings.filter((f) => f.severity === 'reject');
    if (findings.length > 0) w.report.findings = findings;
    for (const f of findings) {
      if (f.severity === 'reject') rt.metrics.policyRejection(f.rule);
      log.warn({ step: 'policy', rule: f.rule, severity: f.severity, certIndex: f.cert }, f.message);
    }
    if (rejects.length > 0 && cert.policy.mode === 'enforce') {
      if (!dryRun) await audit(rt, { event: 'policy-refusal', cert: cert.name, fingerprint: material.fingerprint, version: material.version, origin: material.origin, rules: rejects.map((f) => f.rule) });
      throw new CertdError('E_POLICY', `checking ${cert.name} from ${material.origin}: refused by policy: ${rejects.map((f) => `${f.rule} (${f.message})`).join('; ')}`, { details: { rules: rejects.map((f) => f.rule) } });
    }
    if (state.lastGood && state.lastGood.digest === material.digest && again === undefined && !state.pending && lost.length === 0) {
      Object.assign(w.report, { result: 'unchanged', reason: 'same as deployed' });
      return w;
    }
    if (again !== undefined && state.lastGood?.digest === material.digest) w.report.reason = `${again}: the same certificate again`;
    else if (o.force) w.report.reason = 'forced (rotate --now --force)';
    if (dryRun) {
      w.report.result = 'would-deploy';
      return w;
    }
    w.material = material;
    // Before any target changes: a run killed from here until `record` leaves this behind.
    await rt.state.put({ ...state, pending: { fingerprint: material.fingerprint, digest: material.digest, at: rt.clock.now().toISOString() } });
    for (const target of cert.targets) {
      try {
        await target.stage(material, signal);
        w.staged.push(target);
        log.info({ step: 'stage', target: target.description, fingerprint: material.fingerprint }, 'staged');
        await audit(rt, { event: 'deployment', cert: cert.name, target: target.description, result: 'staged', fingerprint: material.fingerprint, version: material.version });
      } catch (err) {
        await audit(rt, { event: 'deployment', cert: cert.name, target: target.description, result: 'failed', fingerprint: material.fingerprint, version: material.version, error: errorOf(err) });
        await rollbackTargets(rt, w, signal);
        throw err;
      }
    }
    w.report.result = 'deployed'; // provisional: reload and verify may still fail it
  } catch (err) {
    fail(rt, w, err);
  } finally {
    leaveLane?.();
    clearTimeout(expiryTimer);
    w.report.durationMs = Date.now() - w.started;
  }
  return w;
}

/**
 * checkPolicy, remembered per Material object while its verdict cannot change. A source that
 * hands back the same Material for an unchanged version (secrets-manager does) is not checked
 * again every cycle; the verdict is recomputed once time crosses any date the time rules look at
 * (P-VALID, P-MIN-REMAINING, P-EXPIRING), or when the certificate's policy object changes (a
 * config reload builds new ones).
 */
const verdicts = new WeakMap<Material, { policy: PolicySettings; hostnames: readonly string[]; findings: Finding[]; from: number; until: number }>();

function policyFindings(material: Material, cert: CertificateRuntime, now: Date): Finding[] {
  const t = now.getTime();
  const memo = verdicts.get(material);
  if (memo && memo.policy === cert.policy && memo.hostnames === cert.hostnames && t >= memo.from && t < memo.until) return memo.findings;
  const findings = checkPolicy(material.policyInput(cert.hostnames), cert.policy, now);
  verdicts.set(material, { policy: cert.policy, hostnames: cert.hostnames, findings, from: t, until: nextPolicyDate(material, cert.policy, t) });
  return findings;
}

/** The first moment after `t` at which a time rule of the policy could judge `material` differently. */
function nextPolicyDate(material: Material, policy: PolicySettings, t: number): number {
  const dates: number[] = [];
  for (const der of [material.leaf, ...material.chain]) {
    try {
      // Decoded by the policy check just before: answered from its cache.
      const x = parseCertificate(der);
      dates.push(x.notBefore.getTime() - VALIDITY_SKEW_MS, x.notAfter.getTime() + VALIDITY_SKEW_MS);
    } catch {
      return t; // unparseable: never remembered (the policy reports P-PARSE each time)
    }
  }
  const nb = material.notBefore.getTime();
  const na = material.notAfter.getTime();
  dates.push(na - policy.minRemainingMs, na - policy.renewBeforeMs, na - (na - nb) / 3);
  return Math.min(...dates.filter((d) => d > t), Number.POSITIVE_INFINITY);
}

/** Descriptions of the targets that can tell and say they do not serve `fingerprint`. */
async function lostTargets(targets: readonly Target[], fingerprint: string, signal: AbortSignal): Promise<string[]> {
  const lost: string[] = [];
  for (const t of targets) {
    if (!checksDeployment(t)) continue;
    const holds = await t.holds(fingerprint, signal).catch(() => false);
    if (!holds) lost.push(t.description);
  }
  return lost;
}

/** The signal a certificate's source calls get: the cycle's (stop) and its fetch_deadline. */
interface SourceStep {
  readonly signal: AbortSignal;
  /** Aborts when fetch_deadline has passed. */
  readonly expiry: AbortSignal;
  readonly deadline: string;
}

async function fetchWithRetry(rt: Runtime, cert: CertificateRuntime, deployed: DeployedSummary | undefined, step: SourceStep): Promise<Material> {
  return withRetry(rt, cert, () => cert.source.fetch({ name: cert.name, deployed }, step.signal), step);
}

/** `isCurrent` of a source, retried like a fetch. */
async function isCurrentWithRetry(rt: Runtime, cert: CertificateRuntime, source: ChecksCurrent, deployed: DeployedSummary, step: SourceStep): Promise<boolean> {
  return withRetry(rt, cert, () => source.isCurrent(deployed, step.signal), step);
}

/**
 * `work`, or the signal's reason once it aborts: a source that does not honour its signal
 * (a PKCS#11 call, a library without abort support) still cannot hold the cycle past its
 * deadline. The abandoned promise's outcome is ignored.
 */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    work.catch(() => undefined);
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

async function withRetry<T>(rt: Runtime, cert: CertificateRuntime, call: () => Promise<T>, step: SourceStep): Promise<T> {
  let last: unknown;
  for (let attempt = 1; ; attempt++) {
    try {
      return await untilAborted(call(), step.signal);
    } catch (err) {
      if (step.expiry.aborted) {
        const before = last === undefined ? '' : `; the attempt before failed with: ${messageOf(last)}`;
        throw new CertdError(
          'E_SOURCE',
          `fetching ${cert.name}: no answer within fetch_deadline ${step.deadline} (${attempt} attempt${attempt === 1 ? '' : 's'}${before}); the last good certificate stays; check the source's endpoint and network, or raise fetch_deadline`,
          { cause: err },
        );
      }
      last = err;
      const permanent = err instanceof CertdError && (err.permanent || err.code === 'E_PARSE' || err.code === 'E_CONFIG');
      if (permanent || attempt >= rt.fetchAttempts || step.signal.aborted) {
        throw err instanceof CertdError ? err : new CertdError('E_SOURCE', `fetching ${cert.name}: ${messageOf(err)}`, { cause: err });
      }
      const delay = Math.round(200 * 2 ** (attempt - 1) * (0.5 + Math.random()));
      rt.log.warn({ cert: cert.name, step: 'fetch', attempt, retryInMs: delay, err: messageOf(err) }, 'fetch failed; retrying');
      try {
        await rt.clock.sleep(delay, step.signal);
      } catch (err) {
        if (!step.expiry.aborted) throw err;
      }
    }
  }
}

function fail(rt: Runtime, w: Work, err: unknown): void {
  w.report.result = 'failed';
  w.report.error = errorOf(err);
  rt.log.error({ cert: w.cert.name, code: w.report.error.code }, w.report.error.message);
}

async function rollbackTargets(rt: Runtime, w: Work, signal: AbortSignal): Promise<void> {
  for (const t of [...w.staged].reverse()) {
    try {
      await t.rollback(signal);
      rt.log.warn({ cert: w.cert.name, step: 'rollback', target: t.description }, 'rolled back');
      await audit(rt, { event: 'rollback', cert: w.cert.name, target: t.description, result: 'ok', fingerprint: w.material?.fingerprint, restoredFingerprint: w.state.lastGood?.fingerprint });
    } catch (err) {
      rt.log.error({ cert: w.cert.name, step: 'rollback', target: t.description, err: messageOf(err) }, 'rollback failed');
      await audit(rt, { event: 'rollback', cert: w.cert.name, target: t.description, result: 'failed', fingerprint: w.material?.fingerprint, error: errorOf(err) });
    }
  }
  w.staged = [];
}

/** Reload once per distinct reload spec, verify each certificate, roll back what failed. */
async function reloadAndVerify(rt: Runtime, staged: Work[], signal: AbortSignal): Promise<CycleReport['reloads']> {
  const reloads: CycleReport['reloads'] = [];
  const groups = new Map<string, { spec: ReloadSpec; members: Work[] }>();
  for (const w of staged) {
    const spec = w.cert.reload;
    if (!spec || !w.staged.some((t) => t.needsReload)) continue;
    const key = reloadKey(spec);
    const g = groups.get(key) ?? { spec, members: [] };
    g.members.push(w);
    groups.set(key, g);
  }

  const reloadGroup = async (spec: ReloadSpec, members: Work[], again: boolean): Promise<boolean> => {
    const entry: CycleReport['reloads'][number] = { command: describeReload(spec), result: 'ok', certificates: members.map((m) => m.cert.name) };
    reloads.push(entry);
    const ok = await reloadOnce(spec, members, again, entry);
    await audit(rt, { event: 'reload', command: entry.command, certificates: entry.certificates, result: entry.result, again, error: entry.error });
    return ok;
  };

  const reloadOnce = async (spec: ReloadSpec, members: Work[], again: boolean, entry: CycleReport['reloads'][number]): Promise<boolean> => {
    try {
      await runTest(spec, signal);
    } catch (err) {
      entry.result = 'test-failed';
      entry.error = messageOf(err);
      rt.metrics.reload('error');
      if (!again) for (const m of members) fail(rt, m, err);
      return false;
    }
    try {
      await runReload(spec, signal);
      rt.metrics.reload('ok');
      rt.log.info({ step: 'reload', command: entry.command, certificates: entry.certificates, again }, again ? 'reloaded after rollback' : 'reloaded');
      return true;
    } catch (err) {
      entry.result = 'failed';
      entry.error = messageOf(err);
      rt.metrics.reload('error');
      if (!again) for (const m of members) fail(rt, m, err);
      return false;
    }
  };

  const needReloadAgain = new Map<string, { spec: ReloadSpec; members: Work[] }>();
  for (const [key, { spec, members }] of groups) {
    const ok = await reloadGroup(spec, members, false);
    if (!ok) {
      for (const m of members) await rollbackTargets(rt, m, signal);
      // The test failing means no reload happened; a failed reload may have half-applied.
      if (reloads[reloads.length - 1]?.result === 'failed') needReloadAgain.set(key, { spec, members });
    }
  }

  for (const w of staged) {
    if (w.report.result === 'failed' || !w.cert.verify || !w.material) continue;
    try {
      await waitForServed({ ...w.cert.verify, expected: w.material.fingerprint, certName: w.cert.name }, signal);
      rt.log.info({ cert: w.cert.name, step: 'verify', fingerprint: w.material.fingerprint }, 'served certificate verified');
      await audit(rt, { event: 'verification', cert: w.cert.name, connect: w.cert.verify.connect, servername: w.cert.verify.servername, expected: w.material.fingerprint, result: 'ok' });
    } catch (err) {
      await audit(rt, { event: 'verification', cert: w.cert.name, connect: w.cert.verify.connect, servername: w.cert.verify.servername, expected: w.material.fingerprint, result: 'failed', error: errorOf(err) });
      // Only targets the server reads at reload need one to take the rollback back in.
      const reloadNeeded = w.staged.some((t) => t.needsReload);
      fail(rt, w, err);
      await rollbackTargets(rt, w, signal);
      const spec = w.cert.reload;
      if (spec && reloadNeeded) {
        const key = reloadKey(spec);
        const g = needReloadAgain.get(key) ?? { spec, members: [] };
        g.members.push(w);
        needReloadAgain.set(key, g);
      }
    }
  }
  for (const { spec, members } of needReloadAgain.values()) {
    await reloadGroup(spec, members, true);
    // Make sure the rollback took: the previous certificate must be what is served again.
    for (const m of members) {
      const previous = m.state.lastGood?.fingerprint;
      if (!m.cert.verify || !previous) continue;
      try {
        await waitForServed({ ...m.cert.verify, expected: previous, certName: m.cert.name }, signal);
        await audit(rt, { event: 'verification', step: 'after-rollback', cert: m.cert.name, connect: m.cert.verify.connect, servername: m.cert.verify.servername, expected: previous, result: 'ok' });
      } catch (err) {
        await audit(rt, { event: 'verification', step: 'after-rollback', cert: m.cert.name, connect: m.cert.verify.connect, servername: m.cert.verify.servername, expected: previous, result: 'failed', error: errorOf(err) });
        const e = m.report.error;
        if (e) e.message += `; after the rollback: ${messageOf(err)}`;
        rt.log.error({ cert: m.cert.name, step: 'verify-rollback', err: messageOf(err) }, 'the previous certificate is not served after rollback');
      }
    }
  }
  return reloads;
}

/**
 * A failed certificate's report describes what is still served (its last good deployment); the
 * material it fetched and did not deploy moves to `refused`.
 */
function showServed(w: Work): void {
  const r = w.report;
  const good = w.state.lastGood;
  if (r.fingerprint !== undefined && r.refused === undefined) {
    r.refused = { fingerprint: r.fingerprint, version: r.version, notAfter: r.notAfter, origin: r.origin };
  }
  r.fingerprint = good?.fingerprint;
  r.version = good?.version;
  r.notAfter = good?.notAfter;
  r.origin = good?.origin;
}

async function record(rt: Runtime, w: Work, dryRun: boolean): Promise<void> {
  const r = w.report;
  const now = rt.clock.now().toISOString();
  rt.metrics.rotation(w.cert.name, r.result === 'would-deploy' ? 'unchanged' : r.result);
  if (dryRun) return;
  let lastGood = w.state.lastGood;
  if (r.result === 'deployed' && w.material) {
    const m = w.material;
    lastGood = {
      fingerprint: m.fingerprint,
      version: m.version,
      notBefore: m.notBefore.toISOString(),
      notAfter: m.notAfter.toISOString(),
      digest: m.digest,
      origin: m.origin,
      subject: m.subject,
      dnsNames: m.dnsNames,
      deployedAt: now,
      targets: w.cert.targets.map((t) => t.description),
      targetConfig: targetConfigDigest(w.cert),
    };
  }
  const failures = r.result === 'failed' ? (w.state.lastResult?.failures ?? 0) + 1 : 0;
  // An unchanged certificate whose record already says so, or says it was deployed, is not
  // rewritten every cycle (a fleet of a thousand would rewrite a thousand files, and the first
  // cycle after a mass deployment would write them all again); the record is refreshed to
  // "unchanged" with its time every 10 minutes.
  const prev = w.state.lastResult;
  const used = endpointsOf(w.endpoints ?? new Map());
  const endpoints = used.length > 0 ? { at: now, used } : w.state.endpoints;
  const quiet = r.result === 'unchanged' && (prev?.result === 'unchanged' || prev?.result === 'deployed') && !w.state.pending && lastGood === w.state.lastGood
    && JSON.stringify(prev.findings ?? null) === JSON.stringify(r.findings ?? null)
    && (used.length === 0 || JSON.stringify(used) === JSON.stringify(w.state.endpoints?.used ?? null))
    && Date.parse(now) - Date.parse(prev.at) < 10 * 60_000;
  rt.metrics.certificate(w.cert.name, {
    ...(lastGood ? { notAfter: new Date(lastGood.notAfter), lastRotation: new Date(lastGood.deployedAt) } : {}),
    ready: lastGood !== undefined && r.result !== 'failed',
  });
  if (quiet) return;
  await rt.state.put({
    name: w.cert.name,
    lastGood,
    lastResult: { result: r.result, at: now, error: r.error, ...(r.refused ? { refused: r.refused } : {}), findings: r.findings, failures },
    // A deployment this cycle attempted ended in commit or rollback; one it did not attempt
    // leaves the marker of an interrupted earlier run in place.
    ...(w.material === undefined && w.state.pending ? { pending: w.state.pending } : {}),
    ...(endpoints ? { endpoints } : {}),
  });
  await audit(rt, {
    event: 'rotation',
    cert: w.cert.name,
    result: r.result,
    // The material this rotation was about: for a failed one, the one not deployed.
    fingerprint: r.refused?.fingerprint ?? r.fingerprint,
    previousFingerprint: r.previousFingerprint,
    version: r.refused ? r.refused.version : r.version,
    origin: r.refused ? r.refused.origin : r.origin,
    error: r.error,
    rules: r.findings?.map((f) => `${f.rule}:${f.severity}`),
    targets: w.cert.targets.map((t) => t.description),
  });
}
