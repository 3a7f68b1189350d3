/**
 * systemd's service notification protocol (sd_notify(3)): newline-separated KEY=value lines in
 * one datagram to the AF_UNIX socket named by $NOTIFY_SOCKET.
 *
 * Node core has no unix datagram sockets, so the `unix-dgram` addon sends them. It is loaded
 * only when $NOTIFY_SOCKET is set: `certd rotate`, `validate` and friends never load a native
 * addon they do not need. The datagram leaves from this process itself; a spawned
 * `systemd-notify` would race systemd's attribution of the message (and NotifyAccess=main drops
 * messages from any other pid).
 *
 * Contract for callers (the daemon): a notifier never throws. Failures are logged (the first of
 * a run of failures at warn, the rest at debug until one send succeeds) and the call returns.
 */
import { createRequire } from 'node:module';
import { messageOf } from './errors.js';
import { createLogger, type Logger } from './log.js';

export interface Notifier {
  /** False when $NOTIFY_SOCKET is unset (or unusable): every method is then a no-op. */
  readonly enabled: boolean;
  /**
   * How often to call watchdog(): half of $WATCHDOG_USEC, when the watchdog is meant for this
   * process ($WATCHDOG_PID unset or equal to our pid); undefined otherwise.
   */
  readonly watchdogIntervalMs: number | undefined;
  /** READY=1 (start-up or a reload is complete), with an optional STATUS= line. */
  ready(status?: string): void;
  /** STATUS=text: the one line `systemctl status` shows. */
  status(text: string): void;
  /** WATCHDOG=1: a keep-alive ping; call every watchdogIntervalMs while healthy. */
  watchdog(): void;
  /** STOPPING=1: a clean shutdown has begun. */
  stopping(status?: string): void;
  /**
   * EXTEND_TIMEOUT_USEC: the start-up (or stop) timeout is at least `ms` from now. systemd
   * only ever lengthens the timeout with it, so sending a smaller value later does no harm.
   */
  extendTimeout(ms: number): void;
  /** RELOADING=1 with MONOTONIC_USEC (Type=notify-reload needs both); send ready() when done. */
  reloading(status?: string): void;
}

export interface NotifySocketAddress {
  /** What goes into sun_path: a file path, or for the abstract namespace a leading NUL byte. */
  path: string;
  abstract: boolean;
}

/** $NOTIFY_SOCKET as an address: "@name" is the abstract namespace ("\0name"). */
export function notifySocketAddress(value: string | undefined): NotifySocketAddress | undefined {
  if (value === undefined || value === '') return undefined;
  if (value.startsWith('@')) return { path: `\0${value.slice(1)}`, abstract: true };
  return { path: value, abstract: false };
}

/** Half of $WATCHDOG_USEC in ms when the watchdog is for `pid`, else undefined. */
export function watchdogIntervalMs(env: NodeJS.ProcessEnv, pid: number = process.pid): number | undefined {
  const usec = env['WATCHDOG_USEC'];
  if (usec === undefined || !/^\d+$/.test(usec) || Number(usec) === 0) return undefined;
  const forPid = env['WATCHDOG_PID'];
  if (forPid !== undefined && forPid !== '' && Number(forPid) !== pid) return undefined;
  return Math.max(1, Math.floor(Number(usec) / 2000));
}

/** A STATUS= value on one line: a newline would start a new KEY=value assignment. */
function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, ' ').trim();
}

interface DgramSocket {
  on(event: 'error', listener: (err: Error) => void): void;
  send(buf: Buffer, offset: number, length: number, path: string, callback: (err?: Error) => void): void;
  close(): void;
}
interface UnixDgram {
  createSocket(type: 'unix_dgram'): DgramSocket;
}

let unixDgram: UnixDgram | undefined;
function loadUnixDgram(): UnixDgram {
  unixDgram ??= createRequire(import.meta.url)('unix-dgram') as UnixDgram;
  return unixDgram;
}

const noop = (): void => undefined;

export const disabledNotifier: Notifier = {
  enabled: false,
  watchdogIntervalMs: undefined,
  ready: noop,
  status: noop,
  watchdog: noop,
  stopping: noop,
  extendTimeout: noop,
  reloading: noop,
};

export interface NotifierOptions {
  log?: Logger;
  /** The pid $WATCHDOG_PID is compared with (tests); default process.pid. */
  pid?: number;
}

export function createNotifier(env: NodeJS.ProcessEnv = process.env, options: NotifierOptions = {}): Notifier {
  const address = notifySocketAddress(env['NOTIFY_SOCKET']);
  if (address === undefined) return disabledNotifier;
  const log = (options.log ?? createLogger({ level: 'info' })).child({ component: 'sd-notify' });

  if (address.abstract) {
    // unix-dgram copies the path with strncpy and passes sizeof(sockaddr_un) as the address
    // length, so "\0name" becomes 108 NUL bytes: a datagram could never reach the socket the
    // service manager bound (abstract names are exact-length) and might reach another process
    // that bound the all-NUL name. Refuse rather than send into the wrong place.
    log.error(
      { notifySocket: env['NOTIFY_SOCKET'] },
      'sd_notify disabled: NOTIFY_SOCKET is in the abstract namespace, which the unix-dgram addon cannot address; give the service manager a path socket (systemd uses /run/systemd/notify)',
    );
    return disabledNotifier;
  }

  let failing = false;
  const send = (lines: string[]): void => {
    const payload = Buffer.from(lines.join('\n'), 'utf8');
    const report = (err: unknown): void => {
      const fields = { notifySocket: address.path, message: lines[0], err: messageOf(err) };
      if (failing) log.debug(fields, 'sd_notify failed');
      else log.warn(fields, 'sd_notify failed (further failures are logged at debug until one succeeds)');
      failing = true;
    };
    let socket: DgramSocket | undefined;
    try {
      // One short-lived socket per message: the addon's poll handle would otherwise keep the
      // event loop alive, and notifications are rare (start, reload, stop, a watchdog ping).
      socket = loadUnixDgram().createSocket('unix_dgram');
      socket.on('error', report);
      socket.send(payload, 0, payload.length, address.path, (err) => {
        if (err) report(err);
        else failing = false;
      });
    } catch (err) {
      report(err);
    } finally {
      try {
        socket?.close();
      } catch (err) {
        log.debug({ err: messageOf(err) }, 'closing the sd_notify socket failed');
      }
    }
  };
  const withStatus = (first: string, status: string | undefined): string[] =>
    status === undefined ? [first] : [first, `STATUS=${oneLine(status)}`];

  return {
    enabled: true,
    watchdogIntervalMs: watchdogIntervalMs(env, options.pid ?? process.pid),
    ready: (status) => send(withStatus('READY=1', status)),
    status: (text) => send([`STATUS=${oneLine(text)}`]),
    watchdog: () => send(['WATCHDOG=1']),
    stopping: (status) => send(withStatus('STOPPING=1', status)),
    extendTimeout: (ms) => send([`EXTEND_TIMEOUT_USEC=${Math.max(1, Math.ceil(ms)) * 1000}`]),
    // CLOCK_MONOTONIC in µs; process.hrtime reads the same clock on Linux.
    reloading: (status) => send([...withStatus('RELOADING=1', status), `MONOTONIC_USEC=${process.hrtime.bigint() / 1000n}`]),
  };
}

/** What attachNotifier needs of the daemon (src/daemon.ts's Daemon has it). */
export interface NotifyingDaemon {
  on(event: 'ready', listener: () => void): unknown;
  on(event: 'cycle-start', listener: (info: { boundMs: number }) => void): unknown;
  on(event: 'cycle-waiting', listener: (info: { elapsedMs: number }) => void): unknown;
  on(event: 'status', listener: (line: string) => void): unknown;
  on(event: 'reloaded', listener: () => void): unknown;
  on(event: 'stopping', listener: () => void): unknown;
  on(event: 'stopped', listener: () => void): unknown;
  status(): { phase: string };
}

/**
 * Wires a notifier to the daemon's events: READY=1 when the first cycle ended (until then
 * EXTEND_TIMEOUT_USEC when it starts, with the bound of that cycle computed from its
 * fetch_deadline, reload and verify timeouts, and again with what is left of it each time the
 * cycle reports what it waits on, so TimeoutStartSec= never kills a start-up that is still
 * within its bounds), STATUS= on each summary and progress line, RELOADING=1 then READY=1 after SIGHUP, STOPPING=1 on stop, and WATCHDOG=1 every
 * watchdogIntervalMs while the phase is 'running', from a timer on the daemon's own event loop
 * (a blocked loop stops the pings, and systemd restarts the service). The timer is unref'd and
 * cleared on 'stopped'.
 */
export function attachNotifier(daemon: NotifyingDaemon, notifier: Notifier): void {
  if (!notifier.enabled) return;
  let timer: NodeJS.Timeout | undefined;
  let ready = false;
  let bound: { at: number; ms: number } | undefined;
  daemon.on('cycle-start', (info) => {
    if (ready) return;
    bound = { at: Date.now(), ms: info.boundMs };
    notifier.extendTimeout(info.boundMs);
  });
  daemon.on('cycle-waiting', () => {
    if (ready || bound === undefined) return;
    notifier.extendTimeout(Math.max(1000, bound.ms - (Date.now() - bound.at)));
  });
  daemon.on('ready', () => {
    ready = true;
    notifier.ready();
    const every = notifier.watchdogIntervalMs;
    if (every !== undefined && timer === undefined) {
      timer = setInterval(() => {
        if (daemon.status().phase === 'running') notifier.watchdog();
      }, every);
      timer.unref();
    }
  });
  daemon.on('status', (line) => notifier.status(line));
  daemon.on('reloaded', () => {
    notifier.reloading();
    notifier.ready();
  });
  daemon.on('stopping', () => notifier.stopping());
  daemon.on('stopped', () => {
    if (timer !== undefined) clearInterval(timer);
    timer = undefined;
  });
}
