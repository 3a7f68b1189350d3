import type { Command } from '../cli.js';
import { EXIT_FAIL, EXIT_OK } from '../cli.js';
import { loadConfig } from '../config.js';
import { Daemon } from '../daemon.js';
import { enforceFipsRuntime } from '../fips.js';
import { attachNotifier, createNotifier } from '../sd-notify.js';
import { emptyConfigWarning, loggerFor } from './common.js';


/** A stop that does not finish in this time ends the process anyway (systemd would SIGKILL it later). */
const STOP_GRACE_MS = 120_000;

export const runCommand: Command = {
  summary: 'certd run: the daemon. Keeps every configured certificate deployed, checked and served.',
  usage: 'certd run [--config F] [--once]',
  help: `Options:
  -c, --config F   config file (default: $CERTD_CONFIG, else /etc/certd/config.yaml)
  --once           run one cycle for every certificate, then exit (0 all deployed or unchanged, 1 any failed)

What it does:
  - runs a cycle (fetch, policy check, deploy, reload, verify) at start, then on the config's
    schedule (node-cron, 5 fields or 6 with seconds) after a random delay of up to jitter;
  - sources are asked every cycle; issuers renew when due (renew_before, or two thirds of the
    lifetime); a failing certificate is retried after 1m, 2m, 4m ... at most 1h and at most a
    tenth of what its deployed certificate has left, and every cycle when nothing is deployed
    or what is deployed is about to expire;
  - holds the deployment lock of state_dir: certd rotate --now asks this daemon over
    state_dir/control.sock (mode 0600) instead of racing it;
  - serves /metrics and /healthz on metrics.listen when set;
  - logs one line per certificate and cycle (JSON, or text on a terminal with format: auto).

Signals:
  SIGHUP           re-read the config, then run a cycle of every certificate (backing off or
                   not). A config that fails to load is logged, the running one stays and the
                   cycle runs with it; /healthz ("configReload"), certd status and the metric
                   certd_config_reload_ok (0) show the refusal until a reload is taken.
                   state_dir cannot change without a restart
  SIGTERM, SIGINT  stop: no new cycle, a deployment in progress finishes, exit 0

Exit: 0 after a clean stop; 1 when the lock is held by another certd; 2 on a configuration error.`,
  options: { config: { type: 'string' }, once: { type: 'boolean' } },
  async run(v, _p, io) {
    const configPath = typeof v['config'] === 'string' ? v['config'] : undefined;
    const loaded = loadConfig(configPath, io.env);
    const log = loggerFor(loaded, io.env);
    const empty = emptyConfigWarning(loaded);
    if (empty) log.warn({ step: 'start', config: loaded.path }, empty);
    const once = v['once'] === true;
    let probed = false;
    const daemon = new Daemon({
      configPath,
      log,
      env: io.env,
      once,
      ...(once ? { metricsListen: false as const } : {}),
      // P-FIPS-RT at start and for every reloaded config (fips_runtime: require refuses it).
      preflight: async (c) => {
        enforceFipsRuntime(c.config.fips_runtime, log, undefined, { warn: !probed });
        probed = true;
      },
    });
    // systemd Type=notify: READY after the first cycle, STATUS lines, watchdog pings, STOPPING.
    // A no-op unless NOTIFY_SOCKET is set; unix-dgram is loaded only then.
    attachNotifier(daemon, createNotifier(io.env, { log }));

    let stopRequested: (signal: NodeJS.Signals) => void = () => undefined;
    const stopSignal = new Promise<NodeJS.Signals>((resolve) => (stopRequested = resolve));
    const onStop = (signal: NodeJS.Signals): void => {
      log.info({ step: 'stop', signal }, `received ${signal}`);
      stopRequested(signal);
      void daemon.stop();
    };
    const onHup = (): void => void daemon.reload();
    process.on('SIGTERM', onStop);
    process.on('SIGINT', onStop);
    process.on('SIGHUP', onHup);
    try {
      await daemon.start();
      if (once) {
        await daemon.stop();
        return daemon.status().lastCycle?.ok === true ? EXIT_OK : EXIT_FAIL;
      }
      await stopSignal;
      const timer = setTimeout(() => {
        log.error({ step: 'stop', graceMs: STOP_GRACE_MS }, 'the stop did not finish in time; exiting anyway');
        process.exit(EXIT_FAIL);
      }, STOP_GRACE_MS);
      timer.unref();
      await daemon.stop();
      clearTimeout(timer);
      return EXIT_OK;
    } finally {
      process.off('SIGTERM', onStop);
      process.off('SIGINT', onStop);
      process.off('SIGHUP', onHup);
    }
  },
};
