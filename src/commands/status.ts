import type { Command, Io } from '../cli.js';
import { EXIT_FAIL, EXIT_OK } from '../cli.js';
import { loadConfig, type LoadedConfig, stateDirHint } from '../config.js';
import { askDaemon } from '../control.js';
import type { DaemonStatus, LiveStatus } from '../daemon.js';
import { parseDuration } from '../duration.js';
import { CertdError, messageOf } from '../errors.js';
import { type Health, healthOf } from '../health.js';
import { configuredNames } from '../discovery.js';
import { describeEndpoint, type EndpointUse } from '../endpoints.js';
import { StateStore, type CertState, type RefusedMaterial } from '../state.js';
import { shortFingerprint, table, warnIfEmpty } from './common.js';

export interface StatusEntry {
  name: string;
  fingerprint: string | null;
  notAfter: string | null;
  version: string | null;
  origin: string | null;
  deployedAt: string | null;
  targets: readonly string[];
  lastResult: string | null;
  lastAt: string | null;
  error: { code: string; message: string } | null;
  /** When the last cycle failed: the material it fetched and did not deploy (`fingerprint` is still served). */
  refused: RefusedMaterial | null;
  rules: string[];
  /** The AWS endpoints of the last cycle that called AWS: host, service, and fips | standard | custom. */
  endpoints: readonly EndpointUse[];
  endpointsAt: string | null;
  configured: boolean;
  /** When the running daemon next tries it (only in a daemon's answer; see DaemonStatus.schedules). */
  nextRun?: string | null;
}

export function statusEntry(s: CertState, configured: boolean): StatusEntry {
  return {
    name: s.name,
    fingerprint: s.lastGood?.fingerprint ?? null,
    notAfter: s.lastGood?.notAfter ?? null,
    version: s.lastGood?.version ?? null,
    origin: s.lastGood?.origin ?? null,
    deployedAt: s.lastGood?.deployedAt ?? null,
    targets: s.lastGood?.targets ?? [],
    lastResult: s.lastResult?.result ?? null,
    lastAt: s.lastResult?.at ?? null,
    error: s.lastResult?.error ?? null,
    refused: s.lastResult?.refused ?? null,
    rules: (s.lastResult?.findings ?? []).map((f) => `${f.rule}:${f.severity}`),
    endpoints: s.endpoints?.used ?? [],
    endpointsAt: s.endpoints?.at ?? null,
    configured,
  };
}

/** Every configured certificate, then records of certificates no longer configured. */
export async function statusEntries(loaded: LoadedConfig): Promise<StatusEntry[]> {
  const store = new StateStore(loaded.resolvePath(loaded.config.state_dir));
  const all = await store.all();
  const names = configuredNames(loaded.config.certificates, all.map((s) => s.name));
  const entries: StatusEntry[] = [];
  for (const name of names) entries.push(statusEntry(all.find((s) => s.name === name) ?? { name }, true));
  for (const s of all) if (!names.includes(s.name)) entries.push(statusEntry(s, false));
  return entries;
}

export async function readStatus(configFlag: unknown, env: NodeJS.ProcessEnv): Promise<StatusEntry[]> {
  return statusEntries(loadConfig(typeof configFlag === 'string' ? configFlag : undefined, env));
}

/** health.ts's rule over the state files of `loaded` (what the daemon's /healthz answers too). */
export async function healthOfConfig(loaded: LoadedConfig, now: Date): Promise<Health> {
  const store = new StateStore(loaded.resolvePath(loaded.config.state_dir));
  const all = await store.all();
  // A discovering entry with no member yet is a problem too: it has deployed nothing.
  const names = configuredNames(loaded.config.certificates, all.map((s) => s.name));
  for (const e of loaded.config.certificates) {
    if (!names.some((n) => n === e.name || n.startsWith(`${e.name}-`))) names.push(e.name);
  }
  const states = new Map<string, CertState>(all.map((s) => [s.name, s]));
  return healthOf(names, states, parseDuration(loaded.config.renew_before), now);
}

/** The running daemon's view of `loaded`'s state_dir, or undefined when none answers. */
async function askLive(loaded: LoadedConfig): Promise<LiveStatus | undefined> {
  const answer = await askDaemon(loaded.resolvePath(loaded.config.state_dir), { op: 'status' }, { timeoutMs: 5_000 });
  return answer as LiveStatus | undefined;
}

export const statusCommand: Command = {
  summary: 'certd status: what is deployed for each certificate and how its last cycle ended.',
  usage: 'certd status [--config F] [--json] [--health]',
  help: `Options:
  -c, --config F   config file (default: $CERTD_CONFIG, else /etc/certd/config.yaml)
  --json           {"certificates": [{"name","fingerprint","notAfter","version","lastResult",
                   "endpoints": [{"service","host","kind": "fips"|"standard"|"custom"}],...}],
                   "daemon": {...}} (daemon: the running certd's live state, when one answers)
  --health         a health check: healthy means every configured certificate serves a valid
                   certificate that is not about to expire. One line per problem, exit 1 when
                   there is any: a certificate never deployed, or what is deployed expires within
                   renew_before (at most a sixth of its lifetime, so short-lived issued
                   certificates are judged fairly). A failed last cycle while the last good
                   certificate is still served (a source outage) is a warning: printed as
                   "warning: ...", exit 0. With --json: {"ok", "problems": [{"name","problem",
                   "message"}], "warnings": [...]}.

The AWS endpoints each certificate's last cycle called (FIPS or not) are listed under the table.
Reads the last-good records in state_dir and asks a running certd (certd run) over its control
socket for its live state: when each certificate is tried next, and how the last SIGHUP ended.
When the config file does not load (a broken edit), certd status says why and still shows the
running certd's state (found through the state_dir the file names, else /run/certd); the exit
code is then the daemon's answer's. Shows no key material. Exit 0 (with --health: 0 healthy, 1 not).`,
  options: { config: { type: 'string' }, json: { type: 'boolean' }, health: { type: 'boolean' } },
  async run(v, _p, io) {
    const flag = typeof v['config'] === 'string' ? v['config'] : undefined;
    const json = v['json'] === true;
    let loaded: LoadedConfig;
    try {
      loaded = loadConfig(flag, io.env);
    } catch (err) {
      // A config broken on disk must not hide what the running daemon is doing.
      const live = err instanceof CertdError && err.code === 'E_CONFIG' ? await askByHint(flag, io.env) : undefined;
      if (!live) throw err;
      io.err(`certd status: ${messageOf(err)}\ncertd status: showing the running certd's state (pid ${live.daemon.pid}, still running the config it loaded at ${live.daemon.configReload?.runningSince ?? live.daemon.startedAt ?? '?'})\n`);
      return v['health'] === true ? printHealth(live.health, json, io) : printLive(live, json, io);
    }
    warnIfEmpty(loaded, io);
    if (v['health'] === true) {
      // From the state files, not the socket: the check must work whether or not the daemon answers.
      return printHealth(await healthOfConfig(loaded, new Date()), json, io, loaded.config.certificates.length);
    }
    const live = await askLive(loaded).catch((err: unknown) => {
      io.err(`certd status: the running certd did not answer (${messageOf(err)}); showing the state files\n`);
      return undefined;
    });
    if (live) return printLive(live, json, io);
    const entries = await statusEntries(loaded);
    if (json) io.out(`${JSON.stringify({ certificates: entries }, null, 2)}\n`);
    else io.out(certificateTable(entries, false));
    return EXIT_OK;
  },
};

/** The daemon of the state_dir a config that does not load names, if one answers. */
async function askByHint(flag: string | undefined, env: NodeJS.ProcessEnv): Promise<LiveStatus | undefined> {
  const stateDir = stateDirHint(flag, env);
  if (!stateDir) return undefined;
  const answer = await askDaemon(stateDir, { op: 'status' }, { timeoutMs: 5_000 }).catch(() => undefined);
  return answer as LiveStatus | undefined;
}

function printHealth(health: Health, json: boolean, io: Io, count?: number): number {
  if (json) io.out(`${JSON.stringify(health, null, 2)}\n`);
  else {
    const lines = health.ok ? [`ok: ${count ?? 'every'} certificate(s) deployed and current`] : health.problems.map((p) => p.message);
    io.out([...lines, ...(health.warnings ?? []).map((w) => `warning: ${w.message}`)].map((l) => `${l}\n`).join(''));
  }
  return health.ok ? EXIT_OK : EXIT_FAIL;
}

function printLive(live: LiveStatus, json: boolean, io: Io): number {
  if (json) {
    io.out(`${JSON.stringify({ certificates: live.certificates, daemon: live.daemon }, null, 2)}\n`);
    return EXIT_OK;
  }
  io.out(daemonLine(live.daemon));
  io.out(certificateTable(live.certificates, true));
  for (const c of live.daemon.schedules) {
    if (c.nextAttempt) io.out(`${c.name}: ${c.failures} consecutive failure(s); backing off until ${c.nextAttempt}\n`);
  }
  return EXIT_OK;
}

function certificateTable(entries: readonly StatusEntry[], live: boolean): string {
  const rows = [['CERTIFICATE', 'DEPLOYED', 'NOT AFTER', 'VERSION', 'LAST RESULT', ...(live ? ['NEXT ATTEMPT'] : []), 'DETAIL']];
  for (const e of entries) {
    rows.push([
      e.name + (e.configured ? '' : ' (not in config)'),
      shortFingerprint(e.fingerprint ?? undefined),
      e.notAfter ?? '-',
      e.version ?? '-',
      e.lastResult ? `${e.lastResult} at ${e.lastAt}` : 'never run',
      ...(live ? [e.nextRun ?? '-'] : []),
      e.error ? `${e.refused ? `refused ${shortFingerprint(e.refused.fingerprint)}: ` : ''}${e.error.code}: ${e.error.message}` : e.targets.join(', '),
    ]);
  }
  // Under the table: one line per certificate that called AWS (hosts are long).
  const endpoints = entries.filter((e) => e.endpoints.length > 0).map((e) => `${e.name}: AWS endpoints ${e.endpoints.map(describeEndpoint).join(', ')} (cycle of ${e.endpointsAt ?? '?'})\n`);
  return table(rows) + (endpoints.length > 0 ? `\n${endpoints.join('')}` : '');
}

function daemonLine(d: DaemonStatus): string {
  const cycle = d.cycle ? `cycle running since ${d.cycle.since} (${d.cycle.trigger})` : 'idle';
  const last = d.lastCycle ? `last cycle ${d.lastCycle.startedAt} ${d.lastCycle.ok ? 'ok' : `failed: ${d.lastCycle.failed.join(', ')}`}` : 'no cycle yet';
  const r = d.configReload;
  const reload = r && !r.ok ? `config reload at ${r.at} refused: ${r.error?.code ?? 'E_CONFIG'}: ${r.error?.message ?? '?'}; still running the config loaded at ${r.runningSince}\n` : '';
  return `certd run: pid ${d.pid}, ${d.phase}, schedule "${d.schedule ?? '-'}", ${cycle}, ${last}\n${reload}\n`;
}
