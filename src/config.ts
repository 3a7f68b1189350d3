import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import { z } from 'zod';
import { validate as validateCron, validateDetailed } from 'node-cron';
import { CertdError } from './errors.js';
import { configErrorMap, duration, optionalDuration } from './schema.js';
import { sourceFactories, targetFactories } from '../providers/index.js';

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected HOST:PORT');

const policySchema = z.strictObject({
  mode: z.enum(['enforce', 'warn']).default('enforce'),
  min_rsa_bits: z.number().int().min(2048, 'FIPS (SP 800-131A r2) allows no RSA below 2048 bits').default(2048),
  allow_ed25519: z.boolean().default(false),
  allow_self_signed: z.boolean().default(false),
  trust_anchors: z.string().optional(),
  public_trust: z.boolean().optional(),
  min_remaining: duration('7d'),
});

const reloadSchema = z
  .strictObject({
    command: z.array(z.string().min(1)).min(1).optional(),
    signal: z.strictObject({ pidfile: z.string(), signal: z.string().regex(/^SIG[A-Z0-9]+$/).default('SIGHUP') }).optional(),
    test: z.array(z.string().min(1)).min(1).optional(),
    timeout: duration('30s'),
  })
  .refine((r) => !(r.command && r.signal), 'give either command or signal, not both');

const verifySchema = z.strictObject({
  connect: hostPort,
  servername: z.string().min(1),
  timeout: duration('5s'),
});

function unionOf(factories: readonly { type: string; schema: z.ZodType }[], what: string) {
  const schemas = factories.map((f) => f.schema) as unknown as [z.ZodObject, ...z.ZodObject[]];
  return z.discriminatedUnion('type', schemas, {
    error: (iss) =>
      iss.code === 'invalid_union'
        ? `unknown ${what} type; expected one of: ${factories.map((f) => f.type).join(', ')}`
        : undefined,
  });
}

export function configSchema() {
  const certificate = z.strictObject({
    name: z.string().regex(/^[a-z0-9-]+$/, 'names are [a-z0-9-]+'),
    hostnames: z.array(z.string()).default([]),
    source: unionOf(sourceFactories, 'source'),
    targets: z.array(unionOf(targetFactories, 'target')).min(1, 'at least one target is needed'),
    reload: reloadSchema.optional(),
    verify: verifySchema.optional(),
    /** Overrides the top-level fetch_deadline for this certificate. */
    fetch_deadline: optionalDuration(),
  });
  return z
    .strictObject({
      policy: policySchema.prefault({}),
      fips_runtime: z.enum(['require-host', 'require', 'auto', 'off']).default('auto'),
      /**
       * AWS clients call the FIPS endpoints (`<service>-fips.<region>.amazonaws.com`). Unset:
       * AWS_USE_FIPS_ENDPOINT, else true when fips_runtime is require or require-host, else the
       * SDK's own chain. A source's use_fips_endpoint overrides it; an explicit endpoint is used as given.
       */
      use_fips_endpoint: z.boolean().optional(),
      schedule: z
        .string()
        .default('*/5 * * * *')
        .refine((s) => validateCron(s), {
          error: (iss) => `not a valid cron expression (5 fields, or 6 with seconds first): ${validateDetailed(String(iss.input)).errors.map((e) => e.message).join('; ') || String(iss.input)}`,
        }),
      jitter: duration('30s'),
      /**
       * The longest one certificate's source step may take in a cycle (all attempts, timeouts
       * and retry pauses); past it the certificate fails with E_SOURCE and keeps its last good set.
       */
      fetch_deadline: duration('30s'),
      renew_before: duration('30d'),
      state_dir: z.string().default('/run/certd'),
      metrics: z.strictObject({ listen: hostPort.optional() }).prefault({}),
      log: z
        .strictObject({ level: z.enum(['debug', 'info', 'warn', 'error']).default('info'), format: z.enum(['json', 'text', 'auto']).default('json') })
        .prefault({}),
      audit_log: z.string().optional(),
      /** `certd report`: evidence settings (all optional). */
      report: z
        .strictObject({
          nginx_binary: z.string().optional(),
          signing_key: z.string().optional(),
          history: z.number().int().min(1).max(1000).default(20),
        })
        .prefault({}),
      certificates: z.array(certificate).default([]),
    })
    .superRefine((cfg, ctx) => {
      const seen = new Set<string>();
      cfg.certificates.forEach((c, i) => {
        if (seen.has(c.name)) ctx.addIssue({ code: 'custom', path: ['certificates', i, 'name'], message: `duplicate certificate name "${c.name}"` });
        seen.add(c.name);
      });
    });
}

export type Config = z.infer<ReturnType<typeof configSchema>>;
export type CertificateConfig = Config['certificates'][number];

export interface LoadedConfig {
  readonly config: Config;
  /** The file it came from ("<env CERTD_CONFIG_YAML>" for the environment). */
  readonly path: string;
  /** Resolves relative paths in the config against the config file's folder. */
  resolvePath(p: string): string;
}

/** The config path: --config, else $CERTD_CONFIG, else /etc/certd/config.yaml. */
export function configPath(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return flag ?? env['CERTD_CONFIG'] ?? '/etc/certd/config.yaml';
}

/**
 * Reads and validates the config once. Every error names the key path and the YAML line:
 * "config /etc/certd/config.yaml: certificates[0].source.secret_id (line 12): required".
 * With no --config and $CERTD_CONFIG_YAML set, the YAML text comes from the environment
 * (containers configured by environment only).
 */
export function loadConfig(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  let text: string;
  let path: string;
  if (flag === undefined && env['CERTD_CONFIG'] === undefined && env['CERTD_CONFIG_YAML']) {
    text = env['CERTD_CONFIG_YAML'];
    path = '<env CERTD_CONFIG_YAML>';
  } else {
    path = configPath(flag, env);
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new CertdError('E_CONFIG', `reading config ${path}: ${code === 'ENOENT' ? 'no such file (give --config or set CERTD_CONFIG)' : String(code ?? err)}`, { cause: err });
    }
  }
  const config = parseConfigText(text, path);
  const base = path.startsWith('<') ? process.cwd() : dirname(resolve(path));
  return { config, path, resolvePath: (p) => (isAbsolute(p) ? p : resolve(base, p)) };
}

/**
 * Where a config that does not load keeps its state: the `state_dir` the YAML names (read
 * without the schema, so a mistake elsewhere does not hide it), else the default. Undefined when
 * the text cannot be read at all. `certd status` uses it to find a running daemon's socket.
 */
export function stateDirHint(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  let text: string;
  let base = process.cwd();
  if (flag === undefined && env['CERTD_CONFIG'] === undefined && env['CERTD_CONFIG_YAML']) {
    text = env['CERTD_CONFIG_YAML'];
  } else {
    const path = configPath(flag, env);
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      return undefined;
    }
    base = dirname(resolve(path));
  }
  let dir: unknown;
  try {
    dir = (parseDocument(text, { uniqueKeys: false }).toJS() as Record<string, unknown> | null)?.['state_dir'];
  } catch {
    dir = /^state_dir:\s*["']?([^"'#\s]+)/m.exec(text)?.[1];
  }
  const stateDir = typeof dir === 'string' && dir !== '' ? dir : '/run/certd';
  return isAbsolute(stateDir) ? stateDir : resolve(base, stateDir);
}

export function parseConfigText(text: string, path = '<config>'): Config {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const line = lineCounter.linePos(e.pos[0]).line;
    throw new CertdError('E_CONFIG', `config ${path} (line ${line}): ${e.message.split('\n')[0]}`);
  }
  // Round-tripped through JSON (the YAML core schema yields nothing JSON cannot hold): the YAML
  // reader builds scalars piece by piece, and V8 would keep each path of a 1,000-certificate
  // config as a chain of dozens of string fragments for the daemon's whole life (megabytes).
  const raw: unknown = JSON.parse(JSON.stringify(doc.toJS() ?? {}));
  const result = configSchema().safeParse(raw, { error: configErrorMap });
  if (result.success) return result.data;

  const lineOf = (p: readonly PropertyKey[]): number | undefined => {
    for (let n = p.length; n >= 0; n--) {
      const node = doc.getIn(p.slice(0, n) as unknown[], true) as { range?: [number, number, number] } | undefined;
      const pair = n > 0 ? findKeyNode(doc, p.slice(0, n)) : undefined;
      const offset = pair ?? node?.range?.[0];
      if (offset !== undefined) return lineCounter.linePos(offset).line;
    }
    return undefined;
  };
  const messages = result.error.issues.slice(0, 10).map((issue) => {
    let keyPath: PropertyKey[] = [...issue.path];
    let message = issue.message;
    if (issue.code === 'unrecognized_keys') {
      const keys = (issue as { keys: string[] }).keys;
      keyPath = [...keyPath, keys[0] ?? ''];
      message = `unknown key${keys.length > 1 ? 's' : ''} ${keys.map((k) => `"${k}"`).join(', ')}`;
    }
    const line = lineOf(keyPath);
    return `${formatPath(keyPath)}${line !== undefined ? ` (line ${line})` : ''}: ${message}`;
  });
  throw new CertdError('E_CONFIG', `config ${path}: ${messages.join('; ')}`);
}

/** The offset of a mapping key's node, so the line points at "secret_id:" not its value. */
function findKeyNode(doc: ReturnType<typeof parseDocument>, p: readonly PropertyKey[]): number | undefined {
  const parent = doc.getIn(p.slice(0, -1) as unknown[], true) as { items?: { key?: { value?: unknown; range?: number[] } }[] } | undefined;
  const last = p[p.length - 1];
  const item = parent?.items?.find((it) => it.key?.value === last);
  return item?.key?.range?.[0];
}

export function formatPath(p: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of p) out += typeof seg === 'number' ? `[${seg}]` : `${out ? '.' : ''}${String(seg)}`;
  return out || '(top level)';
}
