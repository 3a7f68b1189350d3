/**
 * Config entries that stand for many certificates (a Discovering source, see contracts.ts):
 * each cycle asks the source what exists now and turns the entry into one certificate per
 * member, named `<entry>-<member>`, whose targets, reload, verify and hostnames have `{name}`
 * replaced by the member's sanitised name (`dir: /run/certd/{name}`).
 *
 * Members are built once per name and kept, so their targets (and the rollback state those
 * hold within a cycle) are the same objects from cycle to cycle, as for configured ones.
 */
import type { CertificateConfig } from './config.js';
import type { Discovering, Source } from './contracts.js';
import { CertdError } from './errors.js';
import type { CertificateRuntime } from './runtime.js';

export const NAME_PLACEHOLDER = '{name}';

/** A discovered name as it appears in a certificate name: [a-z0-9-], no leading/trailing "-". */
export function sanitiseName(raw: string): string {
  return raw.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/-{2,}/g, '-').replace(/^-+|-+$/g, '');
}

/** `value` with `{name}` replaced in every string, however deep. */
export function substituteName<T>(value: T, name: string): T {
  if (typeof value === 'string') return value.split(NAME_PLACEHOLDER).join(name) as T;
  if (Array.isArray(value)) return value.map((v) => substituteName(v, name)) as T;
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substituteName(v, name)])) as T;
  }
  return value;
}

export type Expand = (signal: AbortSignal) => Promise<readonly CertificateRuntime[]>;

/**
 * The `expand` of an entry whose source discovers. Throws E_CONFIG at build time when the
 * targets do not use `{name}`: every member would overwrite the same place.
 * `build` makes a certificate runtime from a config and a given source (runtime.ts).
 */
export function discoveryOf(
  entry: CertificateConfig,
  source: Source & Discovering,
  build: (config: CertificateConfig, source: Source) => CertificateRuntime,
  where: (what: string) => string,
): Expand {
  if (!JSON.stringify(entry.targets).includes(NAME_PLACEHOLDER)) {
    throw new CertdError('E_CONFIG', where(`the source finds many certificates, so the targets must use ${NAME_PLACEHOLDER} (e.g. dir: /run/certd/${NAME_PLACEHOLDER}) to give each its own place`));
  }
  const members = new Map<string, CertificateRuntime>();
  return async (signal) => {
    const raw = await source.discover(signal);
    const seen = new Map<string, string>();
    const out: CertificateRuntime[] = [];
    for (const r of raw) {
      const name = sanitiseName(r);
      if (name === '') throw new CertdError('E_SOURCE', `discovering certificates of ${entry.name}: "${r}" leaves no usable name ([a-z0-9-])`, { permanent: true });
      const other = seen.get(name);
      if (other !== undefined) {
        throw new CertdError('E_SOURCE', `discovering certificates of ${entry.name}: "${other}" and "${r}" both become ${entry.name}-${name}; rename one`, { permanent: true });
      }
      seen.set(name, r);
      let member = members.get(r);
      if (!member) {
        const config: CertificateConfig = substituteName({ ...entry, name: `${entry.name}-${name}` }, name);
        // The source config is the entry's own (it was validated as given); only its member differs.
        member = build({ ...config, source: entry.source }, source.member(r));
        members.set(r, member);
      }
      out.push(member);
    }
    return out;
  };
}

/** True for an entry that stands for discovered members: its targets use `{name}`. */
export function isDiscoveringEntry(entry: Pick<CertificateConfig, 'targets'>): boolean {
  return JSON.stringify(entry.targets).includes(NAME_PLACEHOLDER);
}

/**
 * The certificate names the config stands for, given the names that have state: configured
 * entries, and for a discovering entry its members (`<entry>-...`) plus the entry itself when a
 * failed discovery left a record under its name.
 */
export function configuredNames(entries: readonly CertificateConfig[], stateNames: readonly string[]): string[] {
  const out: string[] = [];
  for (const e of entries) {
    if (!isDiscoveringEntry(e)) {
      out.push(e.name);
      continue;
    }
    if (stateNames.includes(e.name)) out.push(e.name);
    out.push(...stateNames.filter((n) => n.startsWith(`${e.name}-`)).sort());
  }
  return [...new Set(out)];
}
