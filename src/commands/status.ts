import type { Command } from '../cli.js';
import { EXIT_OK } from '../cli.js';
import { loadConfig } from '../config.js';
import { StateStore, type CertState } from '../state.js';
import { shortFingerprint, table } from './common.js';

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
  rules: string[];
  configured: boolean;
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
    rules: (s.lastResult?.findings ?? []).map((f) => `${f.rule}:${f.severity}`),
    configured,
  };
}

export async function readStatus(configFlag: unknown, env: NodeJS.ProcessEnv): Promise<StatusEntry[]> {
  const loaded = loadConfig(typeof configFlag === 'string' ? configFlag : undefined, env);
  const store = new StateStore(loaded.resolvePath(loaded.config.state_dir));
  const names = loaded.config.certificates.map((c) => c.name);
  const entries: StatusEntry[] = [];
  for (const name of names) entries.push(statusEntry(await store.get(name), true));
  for (const s of await store.all()) if (!names.includes(s.name)) entries.push(statusEntry(s, false));
  return entries;
}

export const statusCommand: Command = {
  summary: 'certd status: what is deployed for each certificate and how its last cycle ended.',
  usage: 'certd status [--config F] [--json]',
  help: `Options:
  --config F   config file (default: $CERTD_CONFIG, else /etc/certd/config.yaml)
  --json       {"certificates": [{"name","fingerprint","notAfter","version","lastResult",...}]}

Reads the last-good records in state_dir; shows no key material. Exit 0.`,
  options: { config: { type: 'string' }, json: { type: 'boolean' } },
  async run(v, _p, io) {
    const entries = await readStatus(v['config'], io.env);
    if (v['json'] === true) {
      io.out(`${JSON.stringify({ certificates: entries }, null, 2)}\n`);
      return EXIT_OK;
    }
    const rows = [['CERTIFICATE', 'DEPLOYED', 'NOT AFTER', 'VERSION', 'LAST RESULT', 'DETAIL']];
    for (const e of entries) {
      rows.push([
        e.name + (e.configured ? '' : ' (not in config)'),
        shortFingerprint(e.fingerprint ?? undefined),
        e.notAfter ?? '-',
        e.version ?? '-',
        e.lastResult ? `${e.lastResult} at ${e.lastAt}` : 'never run',
        e.error ? `${e.error.code}: ${e.error.message}` : e.targets.join(', '),
      ]);
    }
    io.out(table(rows));
    return EXIT_OK;
  },
};
