/**
 * `certd run`: the reconcile loop. A schedule (node-cron, with jitter) drives cycles; each
 * certificate has its own next attempt (a failing one backs off, capped by what its deployed
 * certificate has left); a control socket lets `certd rotate --now` and `certd status` ask the
 * daemon instead of racing it; metrics and /healthz are served when configured.
 *
 * Guarantees:
 *   - cycles never overlap: a tick that finds a cycle running (or waiting out its jitter) is
 *     skipped and logged; requests over the socket wait their turn;
 *   - the deployment lock of state_dir is held from start to stop;
 *   - `reload()` (SIGHUP) swaps in a new config only when it loads and builds completely, and
 *     only between cycles; a bad config is logged and the running one stays;
 *   - `stop()` (SIGTERM) schedules nothing more, aborts fetches and sleeps, lets a started
 *     stage/reload/verify/rollback finish, then closes everything and releases the lock.
 *
 * Integrations (sd_notify, audit, ...) watch the daemon through its events, see DaemonEvents.
 */
import { EventEmitter } from 'node:events';
import { createTask, type ScheduledTask } from 'node-cron';
import { type Clock, systemClock } from './clock.js';
import { loadConfig, type LoadedConfig } from './config.js';
import type { DeployedSummary } from './contracts.js';
import { controlSocketPath, type ControlServer, listenControl, type Progress, type RotateRequest } from './control.js';
import { parseDuration } from './duration.js';
import { CertdError, messageOf } from './errors.js';
import { type Health, isExpiring } from './health.js';
import { acquireLock, type Lock, warnTightened } from './lock.js';
import { dropWhenIdle, releaseMemorySoon } from './memory.js';
import { type Logger } from './log.js';
import { noMetrics } from './metrics.js';
import type { MetricsServer, PromMetrics } from './metrics-server.js';
import { forgetDecodedCertificates } from './policy/x509.js';
import { type CycleReport, type CycleWaiting, cycleBoundMs, runCycle } from './rotate.js';
import { buildRuntime, type Runtime, type RuntimeOptions } from './runtime.js';
import type { CertState, CycleOutcome } from './state.js';
import { healthOfConfig, statusEntries, type StatusEntry } from './commands/status.js';

/** What calls `onTick` on the schedule: node-cron in production, a hand-driven one in tests. */
export interface Ticker {
  /** Starts calling `onTick` at each scheduled time, until `stop`. */
  start(onTick: () => Promise<void>): void;
  stop(): void;
  /** When the next scheduled cycle starts (before its jitter), or null when none is scheduled. */
  nextRun?(): Date | null;
}

/** The production ticker. node-cron's own messages go to certd's log, not to stdout. */
export function cronTicker(expression: string, log: Logger): Ticker {
  let task: ScheduledTask | undefined;
  const cronLog = {
    info: (m: string) => log.debug({ step: 'schedule' }, m),
    debug: (m: string | Error) => log.debug({ step: 'schedule' }, String(m)),
    warn: (m: string) => log.warn({ step: 'schedule' }, m),
    error: (m: string | Error, e?: Error) => log.error({ step: 'schedule', err: messageOf(e ?? m) }, String(m)),
  };
  return {
    start(onTick) {
      task = createTask(expression, () => void onTick(), { name: 'certd-cycle', logger: cronLog });
      void task.start();
    },
    stop() {
      void task?.destroy();
      task = undefined;
    },
    nextRun() {
      return task?.getNextRun() ?? null;
    },
  };
}

/** A ticker driven by hand: `tick()` runs what a scheduled time would, and returns when it is done. */
export class ManualTicker implements Ticker {
  #onTick: (() => Promise<void>) | undefined;
  /** What nextRun() answers while started (tests set it). */
  next: Date | null = null;

  nextRun(): Date | null {
    return this.#onTick ? this.next : null;
  }

  get running(): boolean {
    return this.#onTick !== undefined;
  }

  start(onTick: () => Promise<void>): void {
    this.#onTick = onTick;
  }

  stop(): void {
    this.#onTick = undefined;
  }

  tick(): Promise<void> {
    return this.#onTick ? this.#onTick() : Promise.resolve();
  }
}

export type CycleTrigger = 'start' | 'schedule' | 'request' | 'reload';

/** How the last SIGHUP ended: the new config taken, or refused (the running one stays). */
export interface ConfigReload {
  readonly ok: boolean;
  readonly at: string;
  /** The file that was read. */
  readonly path: string;
  readonly error?: { readonly code: string; readonly message: string } | undefined;
  /** When the config in use was loaded (start, or the last reload that was taken). */
  readonly runningSince: string;
}

/** /healthz and `{"op":"status"}`'s health: health.ts's verdict, with how the last reload ended. */
export type DaemonHealth = Health & { readonly configReload: ConfigReload | null };

/** The first retry delay after a failure; it doubles with each consecutive failure. */
export const BACKOFF_BASE_MS = 60_000;
/** The longest a failing certificate waits between attempts. */
export const BACKOFF_MAX_MS = 3_600_000;

/**
 * When a certificate may be tried again after a cycle ended with `result` (epoch ms; 0: at the
 * next tick). Retrying lives here and in the cycle's fetch retries, nowhere else.
 *   - not failed: the next tick (sources are asked every cycle; issuers skip by their dueAt);
 *   - failed with nothing deployed, or with what is deployed expiring (health.ts's isExpiring):
 *     the next tick, because nothing (or soon nothing) valid is being served;
 *   - failed with a healthy deployment: 1m·2^(failures-1), capped at min(1h, remaining/10) where
 *     remaining is what the deployed certificate has left, so there are always about ten more
 *     attempts before it expires; minus up to 20% jitter, so the cap itself is never exceeded.
 */
export function nextAttempt(o: {
  result: CycleOutcome;
  failures: number;
  deployed: Pick<DeployedSummary, 'notBefore' | 'notAfter'> | undefined;
  renewBeforeMs: number;
  now: Date;
  random: () => number;
}): number {
  if (o.result !== 'failed' || !o.deployed || isExpiring(o.deployed, o.renewBeforeMs, o.now)) return 0;
  const remaining = new Date(o.deployed.notAfter).getTime() - o.now.getTime();
  const cap = Math.min(BACKOFF_MAX_MS, remaining / 10);
  const delay = Math.min(BACKOFF_BASE_MS * 2 ** Math.max(0, o.failures - 1), cap);
  return o.now.getTime() + Math.floor(delay * (1 - 0.2 * o.random()));
}

export interface DaemonStatus {
  readonly pid: number;
  readonly config: string;
  readonly phase: 'new' | 'starting' | 'running' | 'stopping' | 'stopped';
  readonly startedAt: string | null;
  readonly schedule: string | null;
  readonly jitterMs: number;
  /** The cycle in progress, if any. */
  readonly cycle: { readonly trigger: CycleTrigger; readonly since: string } | null;
  readonly lastCycle: { readonly trigger: CycleTrigger; readonly startedAt: string; readonly durationMs: number; readonly ok: boolean; readonly failed: readonly string[] } | null;
  /**
   * Per configured certificate: consecutive failures, the end of its backoff (nextAttempt; null:
   * not backing off) and nextRun, when the daemon next tries it: the next scheduled cycle, or
   * the end of the backoff when that is later (null: nothing scheduled).
   */
  readonly schedules: readonly { readonly name: string; readonly failures: number; readonly nextAttempt: string | null; readonly nextRun: string | null }[];
  /** The last SIGHUP's outcome (null: none since start). */
  readonly configReload: ConfigReload | null;
  readonly metrics: string | null;
  readonly controlSocket: string | null;
}

/** What `{"op":"status"}` answers and `certd status --json` prints when a daemon runs. */
export interface LiveStatus {
  readonly certificates: StatusEntry[];
  readonly health: DaemonHealth;
  readonly daemon: DaemonStatus;
}

/**
 * The daemon's events, for integrations. Listeners run synchronously inside the daemon; one
 * that throws is logged and otherwise ignored.
 *   ready        the first cycle ended (whatever its result); socket and metrics are up.
 *                sd_notify: READY=1.
 *   cycle-start  a cycle begins (after its jitter), with the certificates taking part.
 *   cycle        a cycle ended; `report` is what `certd rotate --json` prints.
 *   status       a one-line summary after each state change. sd_notify: STATUS=<line>.
 *   tick-skipped a scheduled time found a cycle still running.
 *   reloaded     a new config is in use (SIGHUP). sd_notify: RELOADING=1 ... READY=1 if wanted.
 *   reload-failed  the new config was refused; the old one keeps running.
 *   (after either, a cycle runs: trigger 'reload')
 *   stopping     stop() began. sd_notify: STOPPING=1.
 *   stopped      everything is closed and the lock released.
 * Liveness (sd_notify WATCHDOG=1): ping from a timer on the same event loop while
 * `status().phase` is 'running'; a blocked loop then stops the pings.
 */
export interface DaemonEvents {
  ready: [status: DaemonStatus];
  /**
   * boundMs: the longest the cycle can take, from its certificates' fetch_deadline and their
   * reload and verify timeouts (sd_notify's EXTEND_TIMEOUT_USEC during start-up).
   */
  'cycle-start': [info: { trigger: CycleTrigger; certificates: string[]; boundMs: number }];
  /** A cycle still fetching: logged every 10 s with what it waits on; `line` is for STATUS=. */
  'cycle-waiting': [info: CycleWaiting & { line: string }];
  cycle: [report: CycleReport, trigger: CycleTrigger];
  status: [line: string];
  'tick-skipped': [];
  reloaded: [config: LoadedConfig];
  'reload-failed': [error: Error];
  stopping: [];
  stopped: [];
}

export interface DaemonOptions {
  /** --config (else $CERTD_CONFIG, else /etc/certd/config.yaml; or $CERTD_CONFIG_YAML). */
  configPath?: string | undefined;
  log: Logger;
  clock?: Clock | undefined;
  env?: NodeJS.ProcessEnv | undefined;
  /** Overrides `metrics.listen`; false serves no metrics. */
  metricsListen?: string | false | undefined;
  /** Default true: listen on state_dir/control.sock. */
  controlSocket?: boolean | undefined;
  /** Default: node-cron. */
  ticker?: ((expression: string) => Ticker) | undefined;
  /** In [0, 1): jitter and backoff spread. Default Math.random. */
  random?: (() => number) | undefined;
  /** Run the first cycle only; schedule nothing (certd run --once). */
  once?: boolean | undefined;
  /** Runs on every config before it is used, at start and on reload; throwing refuses it (fips_runtime: require). */
  preflight?: ((loaded: LoadedConfig) => Promise<void>) | undefined;
  /** Attempts per fetch within a cycle (runtime default 3). */
  fetchAttempts?: number | undefined;
  /** How often a running cycle logs what it waits on (default 10 s; tests shorten it). */
  progressEveryMs?: number | undefined;
  /** Builds the runtime of a config (default buildRuntime); tests hand in their own providers here. */
  buildRuntime?: ((loaded: LoadedConfig, options: RuntimeOptions) => Promise<Runtime>) | undefined;
}

// Decoded certificates help within a cycle; between cycles they only hold memory.
dropWhenIdle(forgetDecodedCertificates);

interface Schedule {
  failures: number;
  /** Epoch ms; 0: the next tick. */
  at: number;
}

export class Daemon extends EventEmitter<DaemonEvents> {
  readonly #o: DaemonOptions;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #random: () => number;
  readonly #stop = new AbortController();
  #phase: DaemonStatus['phase'] = 'new';
  #loaded: LoadedConfig | undefined;
  #rt: Runtime | undefined;
  #lock: Lock | undefined;
  #ticker: Ticker | undefined;
  #control: ControlServer | undefined;
  #metrics: PromMetrics | undefined;
  #metricsServer: MetricsServer | undefined;
  #startedAt: Date | undefined;
  #starting: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  #reloading: Promise<boolean> = Promise.resolve(true);
  /** Work that must not overlap (cycles, the config swap) runs through this chain. */
  #chain: Promise<void> = Promise.resolve();
  #pending = 0;
  #current: { trigger: CycleTrigger; since: string } | null = null;
  #last: DaemonStatus['lastCycle'] = null;
  #configReload: ConfigReload | null = null;
  #configSince: Date | undefined;
  readonly #schedules = new Map<string, Schedule>();

  constructor(options: DaemonOptions) {
    super();
    this.#o = options;
    this.#clock = options.clock ?? systemClock;
    this.#log = options.log;
    this.#random = options.random ?? Math.random;
  }

  get #env(): NodeJS.ProcessEnv {
    return this.#o.env ?? process.env;
  }

  /**
   * Loads the config, takes the lock, opens the socket and metrics, runs the first cycle (all
   * certificates, no jitter) and arms the schedule. Throws E_CONFIG for a bad config and
   * E_LOCKED when another certd deploys from the same state_dir; nothing stays open then.
   */
  start(): Promise<void> {
    if (this.#phase !== 'new') throw new CertdError('E_INTERNAL', 'the daemon was already started');
    this.#phase = 'starting';
    this.#starting = this.#start().catch(async (err: unknown) => {
      await this.#teardown();
      this.#phase = 'stopped';
      throw err;
    });
    return this.#starting;
  }

  async #start(): Promise<void> {
    const loaded = loadConfig(this.#o.configPath, this.#env);
    await this.#o.preflight?.(loaded);
    const listen = this.#o.metricsListen === false ? undefined : (this.#o.metricsListen ?? loaded.config.metrics.listen);
    if (listen !== undefined) {
      const { createPromMetrics } = await import('./metrics-server.js');
      this.#metrics = await createPromMetrics();
    }
    const rt = await this.#build(loaded);
    this.#lock = await acquireLock(rt.stateDir, 'certd run', (t) => warnTightened(this.#log, t)).catch(async (err: unknown) => {
      await rt.close();
      throw err;
    });
    this.#rt = rt;
    this.#loaded = loaded;
    this.#startedAt = this.#clock.now();
    this.#configSince = this.#startedAt;
    this.#metrics?.configReload(true);
    this.#metrics?.nextAttempts(() => this.#nextRuns());
    await this.#initMetrics(rt, []);
    if (listen !== undefined && this.#metrics) {
      const { serveMetrics } = await import('./metrics-server.js');
      this.#metricsServer = await serveMetrics(listen, this.#metrics, () => this.health(), this.#log);
    }
    if ((this.#o.controlSocket ?? true) && !this.#o.once) {
      this.#control = await listenControl(controlSocketPath(rt.stateDir), {
        rotate: (request, onProgress) => this.#requested(request, onProgress),
        status: () => this.liveStatus(),
      }, this.#log);
    }
    this.#log.info(
      { step: 'start', config: loaded.path, schedule: this.#o.once ? null : loaded.config.schedule, jitter: loaded.config.jitter, certificates: rt.certificates.map((c) => c.name), stateDir: rt.stateDir, controlSocket: this.#control?.path ?? null, pid: process.pid },
      'certd started',
    );
    await this.#audit(rt, { event: 'daemon-start', certificates: rt.certificates.map((c) => c.name), reason: `certd run, pid ${process.pid}, config ${loaded.path}` });
    await this.#exclusive(async () => {
      if (!this.#stop.signal.aborted) await this.#cycle('start', {});
    });
    if (this.#stop.signal.aborted) return;
    if (!this.#o.once) this.#arm(loaded.config.schedule);
    this.#phase = 'running';
    this.#emit('ready', this.status());
  }

  async #build(loaded: LoadedConfig): Promise<Runtime> {
    const options: RuntimeOptions = {
      log: this.#log,
      clock: this.#clock,
      env: this.#env,
      metrics: this.#metrics ?? noMetrics,
      ...(this.#o.fetchAttempts !== undefined ? { fetchAttempts: this.#o.fetchAttempts } : {}),
    };
    return (this.#o.buildRuntime ?? buildRuntime)(loaded, options);
  }

  #arm(expression: string): void {
    this.#ticker?.stop();
    this.#ticker = (this.#o.ticker ?? ((e: string) => cronTicker(e, this.#log)))(expression);
    this.#ticker.start(() => this.#onTick());
  }

  /** Gauges start from the state files, so a restart does not reset what dashboards show. */
  async #initMetrics(rt: Runtime, previous: readonly string[]): Promise<void> {
    const names = rt.certificates.map((c) => c.name);
    for (const gone of previous.filter((n) => !names.includes(n))) this.#metrics?.forget(gone);
    this.#metrics?.track(names);
    for (const name of names) {
      const s = await rt.state.get(name).catch(() => ({ name }) as CertState);
      const good = s.lastGood;
      rt.metrics.certificate(name, {
        ...(good ? { notAfter: new Date(good.notAfter), lastRotation: new Date(good.deployedAt) } : {}),
        ready: good !== undefined && s.lastResult?.result !== 'failed',
      });
    }
  }

  /** Runs `fn` after everything queued before it; never two at once. */
  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    this.#pending++;
    const run = this.#chain.then(async () => {
      try {
        return await fn();
      } finally {
        this.#pending--;
      }
    });
    this.#chain = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  async #onTick(): Promise<void> {
    if (this.#stop.signal.aborted || this.#phase !== 'running') return;
    if (this.#pending > 0) {
      this.#log.warn({ step: 'schedule', running: this.#current?.trigger ?? 'waiting' }, 'previous cycle still running; skipping this scheduled cycle');
      this.#emit('tick-skipped');
      return;
    }
    await this.#exclusive(async () => {
      const rt = this.#rt;
      if (!rt) return;
      const jitterMs = parseDuration(rt.loaded.config.jitter);
      const delay = Math.floor(this.#random() * jitterMs);
      if (delay > 0) {
        this.#log.debug({ step: 'schedule', jitterMs: delay }, 'waiting out the jitter');
        try {
          await this.#clock.sleep(delay, this.#stop.signal);
        } catch {
          return; // stopping
        }
      }
      const now = this.#clock.now().getTime();
      const due = (name: string): boolean => (this.#schedules.get(name)?.at ?? 0) <= now;
      const waiting = rt.certificates.filter((c) => !due(c.name));
      for (const c of waiting) {
        const s = this.#schedules.get(c.name);
        this.#log.debug({ cert: c.name, step: 'schedule', failures: s?.failures, nextAttempt: new Date(s?.at ?? 0).toISOString() }, 'backing off after failures; not tried this cycle');
      }
      if (waiting.length === rt.certificates.length && waiting.length > 0) {
        this.#log.info({ step: 'schedule', backingOff: waiting.map((c) => c.name) }, 'no certificate due this cycle');
        return;
      }
      await this.#cycle('schedule', { include: due });
    }).catch((err: unknown) => this.#log.error({ step: 'cycle', err: messageOf(err) }, 'the cycle failed unexpectedly'));
  }

  async #requested(request: RotateRequest, onProgress: ((p: Progress) => void) | undefined): Promise<CycleReport> {
    this.#log.info({ step: 'control', cert: request.cert ?? null, dryRun: request.dryRun === true, force: request.force === true }, 'rotate requested over control socket');
    return this.#exclusive(async () => {
      if (this.#stop.signal.aborted) throw new CertdError('E_LOCKED', 'certd run is stopping; run certd rotate --now again once it has stopped');
      return this.#cycle('request', {
        only: request.cert,
        dryRun: request.dryRun === true,
        force: request.force === true,
        onProgress: onProgress && ((done, total, name) => onProgress({ done, total, name })),
      });
    });
  }

  async #cycle(
    trigger: CycleTrigger,
    o: { only?: string | undefined; dryRun?: boolean; force?: boolean; include?: (name: string) => boolean; onProgress?: ((done: number, total: number, name: string) => void) | undefined },
  ): Promise<CycleReport> {
    const rt = this.#rt;
    if (!rt) throw new CertdError('E_INTERNAL', 'the daemon has no runtime');
    const startedAt = this.#clock.now();
    this.#current = { trigger, since: startedAt.toISOString() };
    const taking = rt.certificates.map((c) => c.name).filter((n) => (o.only === undefined || n === o.only) && (o.include?.(n) ?? true));
    this.#emit('cycle-start', { trigger, certificates: taking, boundMs: cycleBoundMs(rt, rt.certificates.filter((c) => taking.includes(c.name))) });
    this.#emit('status', this.#statusLine());
    try {
      const onWaiting = (p: CycleWaiting): void => {
        const line = `${this.#statusLine()}: ${p.done} of ${p.total} done after ${Math.round(p.elapsedMs / 1000)} s, waiting on ${p.waiting.join(', ')}`;
        this.#emit('cycle-waiting', { ...p, line });
        this.#emit('status', line);
      };
      const report = await runCycle(rt, {
        only: o.only,
        dryRun: o.dryRun,
        force: o.force,
        include: o.include,
        onProgress: o.onProgress,
        onWaiting,
        stop: this.#stop.signal,
        ...(this.#o.progressEveryMs !== undefined ? { progressEveryMs: this.#o.progressEveryMs } : {}),
      });
      if (!report.dryRun) await this.#reschedule(rt, report);
      logCycle(rt.log, report, trigger);
      const failed = report.certificates.filter((c) => c.result === 'failed').map((c) => c.name);
      this.#last = { trigger, startedAt: report.startedAt, durationMs: report.durationMs, ok: report.ok, failed };
      if (!report.dryRun) this.#metrics?.cycle(report.ok, this.#clock.now());
      this.#current = null;
      this.#emit('cycle', report, trigger);
      this.#emit('status', this.#statusLine());
      releaseMemorySoon();
      return report;
    } finally {
      this.#current = null;
    }
  }

  async #reschedule(rt: Runtime, report: CycleReport): Promise<void> {
    const renewBeforeMs = parseDuration(rt.loaded.config.renew_before);
    const now = this.#clock.now();
    for (const c of report.certificates) {
      const s = await rt.state.get(c.name).catch(() => ({ name: c.name }) as CertState);
      const failures = c.result === 'failed' ? (s.lastResult?.failures ?? 1) : 0;
      const at = nextAttempt({ result: c.result, failures, deployed: s.lastGood, renewBeforeMs, now, random: this.#random });
      this.#schedules.set(c.name, { failures, at });
      if (at > 0) {
        rt.log.warn({ cert: c.name, step: 'schedule', failures, nextAttempt: new Date(at).toISOString() }, 'certificate failed; backing off');
      } else if (c.result === 'failed') {
        rt.log.warn({ cert: c.name, step: 'schedule', failures }, s.lastGood ? 'certificate failed and what is deployed is expiring; retrying every cycle' : 'certificate failed and nothing is deployed; retrying every cycle');
      }
    }
  }

  #statusLine(): string {
    const rt = this.#rt;
    const n = rt?.certificates.length ?? 0;
    const cycle = this.#current ? `cycle running (${this.#current.trigger})` : 'idle';
    const last = this.#last
      ? `last cycle ${this.#last.startedAt}: ${this.#last.failed.length === 0 ? 'ok' : `${this.#last.failed.length} failed (${this.#last.failed.join(', ')})`}`
      : 'no cycle yet';
    return `${n} certificate(s); ${cycle}; ${last}`;
  }

  #emit<K extends keyof DaemonEvents>(event: K, ...args: DaemonEvents[K]): void {
    try {
      (this.emit as (e: K, ...a: DaemonEvents[K]) => boolean)(event, ...args);
    } catch (err) {
      this.#log.error({ step: 'event', event, err: messageOf(err) }, 'a daemon event listener failed');
    }
  }

  /**
   * Re-reads the config (SIGHUP). Returns true when the new config is in use, false when it was
   * refused (logged; the running config stays). state_dir cannot change while running (the lock
   * and the socket live there); metrics.listen changes take effect at the next start.
   */
  reload(): Promise<boolean> {
    this.#reloading = this.#reloading.then(() => this.#reload(), () => this.#reload());
    return this.#reloading;
  }

  async #reload(): Promise<boolean> {
    // A SIGHUP during the first cycle is taken once start-up has finished, not dropped.
    if (this.#phase === 'starting') await this.#starting?.catch(() => undefined);
    const old = this.#rt;
    if (!old || this.#phase !== 'running') {
      this.#log.warn({ step: 'reload' }, 'not reloading: the daemon is not running');
      return false;
    }
    this.#log.info({ step: 'reload', config: this.#loaded?.path }, 'reloading the config');
    let rt: Runtime;
    let loaded: LoadedConfig;
    try {
      loaded = loadConfig(this.#o.configPath, this.#env);
      if (loaded.resolvePath(loaded.config.state_dir) !== old.stateDir) {
        throw new CertdError('E_CONFIG', `config ${loaded.path}: state_dir cannot change while certd runs (it holds the lock and the control socket of ${old.stateDir}); restart certd to move it`);
      }
      await this.#o.preflight?.(loaded);
      rt = await this.#build(loaded);
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      const code = err instanceof CertdError ? err.code : 'E_INTERNAL';
      this.#log.error({ step: 'reload', code, err: messageOf(err) }, 'reloading the config failed; the running config stays in use');
      await this.#audit(old, { event: 'config-reload', result: 'refused', error: { code, message: messageOf(err) } });
      this.#configReload = { ok: false, at: this.#clock.now().toISOString(), path: this.#loaded?.path ?? '', error: { code, message: messageOf(err) }, runningSince: (this.#configSince ?? this.#clock.now()).toISOString() };
      this.#metrics?.configReload(false);
      this.#emit('reload-failed', e);
      await this.#cycleAfterReload();
      return false;
    }
    const swapped = await this.#exclusive(async () => {
      if (this.#stop.signal.aborted) return false;
      this.#rt = rt;
      this.#loaded = loaded;
      await old.close().catch((err: unknown) => this.#log.warn({ step: 'reload', err: messageOf(err) }, 'closing the previous runtime failed'));
      return true;
    });
    if (!swapped) {
      await rt.close();
      return false;
    }
    const names = rt.certificates.map((c) => c.name);
    for (const name of [...this.#schedules.keys()]) if (!names.includes(name)) this.#schedules.delete(name);
    await this.#initMetrics(rt, old.certificates.map((c) => c.name));
    const before = old.loaded.config;
    if (loaded.config.schedule !== before.schedule) this.#arm(loaded.config.schedule);
    const listenNow = this.#o.metricsListen === false ? undefined : (this.#o.metricsListen ?? loaded.config.metrics.listen);
    const listenBefore = this.#o.metricsListen === false ? undefined : (this.#o.metricsListen ?? before.metrics.listen);
    if (listenNow !== listenBefore) this.#log.warn({ step: 'reload', listen: listenNow ?? null }, 'metrics.listen changes take effect when certd restarts');
    this.#log.info({ step: 'reload', config: loaded.path, schedule: loaded.config.schedule, certificates: names }, 'config reloaded');
    await this.#audit(rt, { event: 'config-reload', result: 'ok', certificates: names });
    this.#configSince = this.#clock.now();
    this.#configReload = { ok: true, at: this.#configSince.toISOString(), path: loaded.path, runningSince: this.#configSince.toISOString() };
    this.#metrics?.configReload(true);
    this.#emit('reloaded', loaded);
    this.#emit('status', this.#statusLine());
    await this.#cycleAfterReload();
    return true;
  }

  /**
   * SIGHUP means "look again now" (a PIN fixed, a secret replaced, a config edited): a cycle
   * of every certificate, backoff or not, with whichever config is now in use.
   */
  async #cycleAfterReload(): Promise<void> {
    await this.#exclusive(async () => {
      if (!this.#stop.signal.aborted && this.#phase === 'running') await this.#cycle('reload', {});
    }).catch((err: unknown) => this.#log.error({ step: 'cycle', err: messageOf(err) }, 'the cycle after the reload failed unexpectedly'));
  }

  /** nextRun of every configured certificate (see DaemonStatus.schedules). */
  #nextRuns(): { name: string; at: Date | null }[] {
    const tick = this.#phase === 'running' ? (this.#ticker?.nextRun?.() ?? null) : null;
    return (this.#rt?.certificates ?? []).map((c) => {
      const backoff = this.#schedules.get(c.name)?.at ?? 0;
      if (tick === null) return { name: c.name, at: null };
      return { name: c.name, at: backoff > tick.getTime() ? new Date(backoff) : tick };
    });
  }

  /**
   * Stops cleanly: no new cycles, fetches and sleeps aborted, a started deployment finished,
   * then the socket, metrics and runtime closed and the lock released. Idempotent.
   */
  stop(): Promise<void> {
    this.#stopping ??= this.#stopNow();
    return this.#stopping;
  }

  async #stopNow(): Promise<void> {
    const wasRunning = this.#phase !== 'new' && this.#phase !== 'stopped';
    this.#phase = this.#phase === 'new' ? 'stopped' : 'stopping';
    if (!wasRunning) return;
    this.#log.info({ step: 'stop', cycleRunning: this.#current !== null }, this.#current ? 'stopping: letting the running cycle finish' : 'stopping');
    this.#emit('stopping');
    this.#ticker?.stop();
    this.#stop.abort(new CertdError('E_INTERNAL', 'certd is stopping'));
    await this.#starting?.catch(() => undefined);
    await this.#chain;
    await this.#reloading.catch(() => undefined);
    await this.#chain;
    if (this.#rt && this.#lock) await this.#audit(this.#rt, { event: 'daemon-stop', certificates: this.#rt.certificates.map((c) => c.name) });
    await this.#teardown();
    this.#phase = 'stopped';
    this.#log.info({ step: 'stop' }, 'certd stopped');
    this.#emit('stopped');
  }

  async #teardown(): Promise<void> {
    this.#ticker?.stop();
    this.#ticker = undefined;
    await this.#control?.close().catch((err: unknown) => this.#log.warn({ step: 'stop', err: messageOf(err) }, 'closing the control socket failed'));
    this.#control = undefined;
    await this.#metricsServer?.close().catch(() => undefined);
    this.#metricsServer = undefined;
    await this.#rt?.close().catch((err: unknown) => this.#log.warn({ step: 'stop', err: messageOf(err) }, 'closing the runtime failed'));
    await this.#lock?.release().catch(() => undefined);
    this.#lock = undefined;
  }

  /** Daemon lifecycle in the audit trail (audit_log): who deployed when, under which config. */
  async #audit(rt: Runtime, event: Record<string, unknown>): Promise<void> {
    await rt.audit.record(event).catch((err: unknown) => this.#log.error({ step: 'audit', err: messageOf(err) }, 'writing the audit trail failed'));
  }

  /** The health rule of health.ts over the configured certificates' state files. */
  async health(): Promise<DaemonHealth> {
    const loaded = this.#rt?.loaded;
    const h = loaded ? await healthOfConfig(loaded, this.#clock.now()) : { ok: false, problems: [], warnings: [] };
    return { ...h, configReload: this.#configReload };
  }

  status(): DaemonStatus {
    const rt = this.#rt;
    return {
      pid: process.pid,
      config: this.#loaded?.path ?? this.#o.configPath ?? '',
      phase: this.#phase,
      startedAt: this.#startedAt?.toISOString() ?? null,
      schedule: this.#o.once ? null : (this.#loaded?.config.schedule ?? null),
      jitterMs: this.#loaded ? parseDuration(this.#loaded.config.jitter) : 0,
      cycle: this.#current,
      lastCycle: this.#last,
      schedules: (() => {
        const next = new Map(this.#nextRuns().map((n) => [n.name, n.at]));
        return (rt?.certificates ?? []).map((c) => {
          const s = this.#schedules.get(c.name);
          return { name: c.name, failures: s?.failures ?? 0, nextAttempt: s && s.at > 0 ? new Date(s.at).toISOString() : null, nextRun: next.get(c.name)?.toISOString() ?? null };
        });
      })(),
      configReload: this.#configReload,
      metrics: this.#metricsServer?.url ?? null,
      controlSocket: this.#control?.path ?? null,
    };
  }

  async liveStatus(): Promise<LiveStatus> {
    const loaded = this.#loaded;
    const daemon = this.status();
    const next = new Map(daemon.schedules.map((c) => [c.name, c.nextRun]));
    const entries = loaded ? await statusEntries(loaded) : [];
    return {
      certificates: entries.map((e) => (e.configured ? { ...e, nextRun: next.get(e.name) ?? null } : e)),
      health: await this.health(),
      daemon,
    };
  }
}

/** One line per certificate (certificate, step, duration, result) and one for the cycle. */
export function logCycle(log: Logger, report: CycleReport, trigger: CycleTrigger): void {
  for (const c of report.certificates) {
    const fields = {
      cert: c.name,
      step: 'cycle',
      trigger,
      result: c.result,
      durationMs: c.durationMs,
      fingerprint: c.fingerprint,
      notAfter: c.notAfter,
      ...(c.refused ? { refusedFingerprint: c.refused.fingerprint } : {}),
      ...(c.reason ? { reason: c.reason } : {}),
      ...(c.error ? { code: c.error.code, error: c.error.message } : {}),
    };
    if (c.result === 'failed') log.error(fields, 'certificate failed');
    else log.info(fields, c.result === 'deployed' ? 'certificate deployed' : 'certificate checked');
  }
  const count = (r: CycleOutcome): number => report.certificates.filter((c) => c.result === r).length;
  log.info(
    { step: 'cycle', trigger, durationMs: report.durationMs, dryRun: report.dryRun, certificates: report.certificates.length, deployed: count('deployed'), unchanged: count('unchanged'), failed: count('failed'), reloads: report.reloads.map((r) => `${r.command}: ${r.result}`) },
    report.ok ? 'cycle finished' : 'cycle finished with failures',
  );
}
