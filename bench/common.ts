/**
 * What every benchmark scenario shares: the result shape the runner prints and stores, timing
 * and statistics, scratch directories on tmpfs, running certd and shell scripts as processes,
 * and a fast issuer of real X.509 pairs (CA keys made by the openssl CLI, leaves signed here).
 *
 * Benchmarks measure; they never fail. A scenario returns figures, each comparison measured in
 * the same run, and for each goal whether it was met.
 */
import { spawn } from 'node:child_process';
import { createPrivateKey, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { issueLeaf, type LeafKeyType } from '../src/issuer.js';
import type { Material } from '../src/material.js';
import { encodePem } from '../src/policy/pem.js';
import { softwareSigner } from '../providers/local-ca.js';

/** The repository root (this file runs from dist/bench/). */
export const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const CERTD = join(ROOT, 'bin', 'certd');

export interface RunOptions {
  /** The reduced variant (`--quick`): fewer items and repetitions, same measurements. */
  readonly quick: boolean;
  /** Progress lines for the person watching (stderr). */
  log(line: string): void;
}

/** One line of the results table. */
export interface Row {
  /** What is measured ("certd: policy checks/s"). */
  readonly measure: string;
  /** certd's figure, formatted with its unit. */
  readonly certd: string;
  /** The alternative or reference measured in the same run, when there is one. */
  readonly against?: string | undefined;
  /** The alternative's figure. */
  readonly other?: string | undefined;
  /** "38.2x" (how many times better certd is), when there is a comparison. */
  readonly ratio?: string | undefined;
  /** The goal in words ("≥ 50x"), when this row has one. */
  readonly goal?: string | undefined;
  readonly met?: boolean | undefined;
}

export interface ScenarioResult {
  readonly id: number;
  readonly title: string;
  /** The scenario's goals in one sentence. */
  readonly goal: string;
  /** All goals met; null when a goal could not be measured on this machine or tree. */
  readonly met: boolean | null;
  readonly rows: Row[];
  /** Every raw figure, for results.json. */
  readonly figures: Record<string, unknown>;
  /** What the reader must know (substitutions, what was not measured and why). */
  readonly notes: string[];
  readonly seconds: number;
}

export interface Scenario {
  readonly id: number;
  readonly title: string;
  run(options: RunOptions): Promise<Omit<ScenarioResult, 'id' | 'title' | 'seconds'>>;
}

/** Overall verdict: false if any goal failed, null if none failed but some were not measured. */
export function verdict(rows: readonly Row[], unmeasured = false): boolean | null {
  if (rows.some((r) => r.met === false)) return false;
  return unmeasured ? null : true;
}

export function median(xs: readonly number[]): number {
  return quantile(xs, 0.5);
}

/** Nearest-rank quantile (p95 of 20 samples is the 19th smallest). */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil(q * s.length));
  return s[Math.min(s.length, rank) - 1] as number;
}

export function nowMs(): number {
  return performance.now();
}

export function ms(x: number): string {
  if (!Number.isFinite(x)) return 'n/a';
  if (x >= 10_000) return `${(x / 1000).toFixed(1)} s`;
  if (x >= 1000) return `${(x / 1000).toFixed(2)} s`;
  if (x >= 100) return `${x.toFixed(0)} ms`;
  if (x >= 10) return `${x.toFixed(1)} ms`;
  return `${x.toFixed(2)} ms`;
}

export function rate(perSecond: number, unit: string): string {
  if (!Number.isFinite(perSecond)) return 'n/a';
  const v = perSecond >= 100 ? perSecond.toFixed(0) : perSecond >= 10 ? perSecond.toFixed(1) : perSecond.toFixed(2);
  return `${v} ${unit}/s`;
}

export function times(x: number): string {
  if (!Number.isFinite(x)) return 'n/a';
  return x >= 100 ? `${x.toFixed(0)}x` : x >= 10 ? `${x.toFixed(1)}x` : `${x.toFixed(2)}x`;
}

export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** A scratch directory on tmpfs; the returned function removes it. */
export function shm(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join('/dev/shm', `certd-bench-${prefix}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface ProcessResult {
  code: number | null;
  stdout: string;
  stderr: string;
  wallMs: number;
}

/** Runs a program to its end, timing from spawn to exit. Never throws for a non-zero exit. */
export function run(argv: readonly string[], o: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number; input?: string } = {}): Promise<ProcessResult> {
  return new Promise((done, fail) => {
    const t0 = nowMs();
    const child = spawn(argv[0] as string, argv.slice(1), { env: o.env ?? process.env, cwd: o.cwd ?? ROOT, stdio: [o.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 600_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      fail(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr, wallMs: nowMs() - t0 });
    });
    if (child.stdin) {
      child.stdin.on('error', () => undefined); // a program that exits without reading its input
      child.stdin.end(o.input);
    }
  });
}

/** bin/certd as a fresh process, as a user or a timer unit starts it. */
export function runCertd(args: readonly string[], o: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<ProcessResult> {
  return run([process.execPath, CERTD, ...args], { env: { ...process.env, CERTD_LOG_FORMAT: 'json', ...o.env }, ...(o.timeoutMs ? { timeoutMs: o.timeoutMs } : {}) });
}

/** Fails with a clear message when a tool the comparison needs is missing. */
export async function requireTool(argv: readonly string[], debianPackage: string): Promise<void> {
  try {
    const r = await run(argv, { timeoutMs: 30_000 });
    if (r.code === 0) return;
  } catch {
    // handled below
  }
  throw new Error(`${argv[0]} is needed for this comparison: install Debian's ${debianPackage} (apt-get install -y ${debianPackage})`);
}

export function openssl(args: readonly string[]): Promise<ProcessResult> {
  return run(['openssl', ...args], { timeoutMs: 60_000 });
}

async function opensslOk(args: readonly string[], what: string): Promise<string> {
  const r = await openssl(args);
  if (r.code !== 0) throw new Error(`openssl ${what} failed: ${r.stderr.trim()}`);
  return r.stdout;
}

export function pemToDer(pem: string): Buffer {
  const body = pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, '');
  return Buffer.from(body, 'base64');
}

export type CaKeyType = 'ec-p256' | 'ec-p384' | 'rsa-2048';

/** A root and an intermediate made by the openssl CLI; leaves are signed by the intermediate here. */
export interface BenchCa {
  readonly name: string;
  readonly rootPem: string;
  readonly rootPath: string;
  readonly intermediatePem: string;
  readonly intermediatePath: string;
  readonly intermediateDer: Buffer;
  issue(dnsNames: readonly string[], keyType?: LeafKeyType, ttlMs?: number): Promise<Material>;
}

function genKeyArgs(type: CaKeyType): string[] {
  return type === 'rsa-2048'
    ? ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048']
    : ['genpkey', '-algorithm', 'EC', '-pkeyopt', `ec_paramgen_curve:${type === 'ec-p256' ? 'P-256' : 'P-384'}`];
}

/**
 * A two-level CA whose keys and certificates the openssl CLI makes (an implementation
 * independent of the one certd parses with). Leaves are issued in this process, signed with the
 * intermediate's key, so that a thousand of them take a second rather than minutes of openssl.
 */
export async function makeCa(dir: string, name: string, type: CaKeyType): Promise<BenchCa> {
  const p = (f: string) => join(dir, `${name}-${f}`);
  await opensslOk([...genKeyArgs(type), '-out', p('root.key')], 'genpkey');
  await opensslOk(['req', '-x509', '-new', '-key', p('root.key'), '-sha256', '-days', '3650', '-subj', `/CN=certd bench root ${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-addext', 'subjectKeyIdentifier=hash',
    '-out', p('root.pem')], 'req -x509');
  await opensslOk([...genKeyArgs(type), '-out', p('int.key')], 'genpkey');
  await opensslOk(['req', '-new', '-key', p('int.key'), '-subj', `/CN=certd bench intermediate ${name}`, '-out', p('int.csr')], 'req');
  writeFileSync(p('int.ext'), 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n');
  await opensslOk(['x509', '-req', '-in', p('int.csr'), '-CA', p('root.pem'), '-CAkey', p('root.key'), '-set_serial', `0x${randomBytes(12).toString('hex')}`,
    '-days', '1825', '-sha256', '-extfile', p('int.ext'), '-out', p('int.pem')], 'x509 -req');
  const intermediatePem = readFileSync(p('int.pem'), 'utf8');
  const intermediateDer = pemToDer(intermediatePem);
  const signer = softwareSigner(createPrivateKey(readFileSync(p('int.key'))), async () => intermediateDer, `bench:${name}`);
  rmSync(p('root.key'));
  return {
    name,
    rootPem: readFileSync(p('root.pem'), 'utf8'),
    rootPath: p('root.pem'),
    intermediatePem,
    intermediatePath: p('int.pem'),
    intermediateDer,
    issue: (dnsNames, keyType = 'ec-p256', ttlMs = 90 * 86_400_000) =>
      issueLeaf(signer, { dnsNames, ttlMs, keyType, now: new Date() }, `bench:${name}`, AbortSignal.timeout(30_000)),
  };
}

/** PEM of a material as a secret holds it: key, leaf, chain. */
export function bundlePem(m: Material, withKey = true): string {
  const key = withKey && m.key.kind === 'pem' ? m.key.pem.revealString() : '';
  return `${key}${m.fullchainPem}`;
}

/** The JSON secret format (certificate, private_key, chain) of DESIGN.md. */
export function bundleJson(m: Material): string {
  if (m.key.kind !== 'pem') throw new Error('bench materials hold PEM keys');
  return JSON.stringify({ certificate: m.leafPem, private_key: m.key.pem.revealString(), chain: m.chainPem });
}

export { encodePem };

/** The machine the figures come from. */
export async function machine(): Promise<Record<string, unknown>> {
  const os = await import('node:os');
  const cpus = os.cpus();
  let nginx = 'absent';
  let opensslVersion = 'absent';
  try {
    nginx = (await run(['/usr/sbin/nginx', '-v'], { timeoutMs: 5000 })).stderr.trim();
  } catch {
    // reported as absent
  }
  try {
    opensslVersion = (await run(['openssl', 'version'], { timeoutMs: 5000 })).stdout.trim();
  } catch {
    // reported as absent
  }
  return {
    cpuModel: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    memoryBytes: os.totalmem(),
    memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    node: process.version,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    openssl: opensslVersion,
    nginx,
    date: new Date().toISOString(),
    loadAverage: os.loadavg().map((x) => Number(x.toFixed(2))),
  };
}

export function sleep(msDelay: number): Promise<void> {
  return new Promise((r) => setTimeout(r, msDelay));
}

/** A certificate entry of certd's config, as plain data (JSON is YAML). */
export type CertEntry = Record<string, unknown> & { name: string };

/** certd's config text: JSON, which YAML reads as it is. */
export function configText(o: { stateDir: string; certificates: readonly CertEntry[]; schedule?: string; jitter?: string; policy?: Record<string, unknown>; logLevel?: string }): string {
  return `${JSON.stringify({
    policy: o.policy ?? {},
    fips_runtime: 'off',
    schedule: o.schedule ?? '0 0 1 1 *',
    jitter: o.jitter ?? '0s',
    state_dir: o.stateDir,
    log: { level: o.logLevel ?? 'info', format: 'json' },
    certificates: o.certificates,
  }, null, 2)}\n`;
}

/** Writes a material as the three files of a `file` source and returns that source's config. */
export function writeFileSource(dir: string, m: Material): { type: 'file'; cert: string; key: string; chain: string } {
  const files = { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem'), chain: join(dir, 'chain.pem') };
  const key = m.key.kind === 'pem' ? m.key.pem.revealString() : '';
  // The key first and renamed into place last is not needed: a cycle reads the three together
  // only when the benchmark asks for one, after all three are written.
  writeFileSync(files.key, key, { mode: 0o600 });
  writeFileSync(files.cert, m.leafPem);
  writeFileSync(files.chain, m.chainPem);
  return { type: 'file', ...files };
}

/** Whether this tree has the AWS sources (they load lazily; listing them costs nothing). */
export async function awsSources(): Promise<{ secretsManager: boolean; ssm: boolean }> {
  const { sourceFactories } = await import('../providers/index.js');
  const types = new Set(sourceFactories.map((f) => f.type));
  return { secretsManager: types.has('secrets-manager'), ssm: types.has('ssm') };
}

/** VmRSS and VmHWM of a process, in bytes. */
/**
 * Memory of a process in bytes: rss and hwm (VmRSS, VmHWM) count every resident page, the Node
 * binary's shared code and data included; uss (Private_Clean + Private_Dirty of smaps_rollup) is
 * what the process alone holds, what the host gets back when it exits.
 */
export function memoryOf(pid: number): { rss: number; hwm: number; uss: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (text: string, field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? Number.NaN) * 1024;
  let rollup = '';
  try {
    rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  } catch {
    // a kernel without smaps_rollup (before 4.14): uss is NaN, reported as n/a
  }
  return { rss: kb(status, 'VmRSS'), hwm: kb(status, 'VmHWM'), uss: kb(rollup, 'Private_Clean') + kb(rollup, 'Private_Dirty') };
}

export interface RunningDaemon {
  readonly pid: number;
  /** Resolves when the first cycle has ended (the daemon logs "cycle finished"). */
  readonly firstCycle: Promise<void>;
  /** Lines logged so far that are errors (level >= 50). */
  readonly errors: string[];
  /** Resolves when the process has exited, however it ended. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop(): Promise<void>;
}

/** `certd run --config F` as its own process, as systemd starts it. */
export function startDaemon(configPath: string, env: NodeJS.ProcessEnv = {}, node = process.execPath): RunningDaemon {
  const child = spawn(node, [CERTD, 'run', '--config', configPath], {
    // The end of the first cycle is read from its "cycle finished" line, logged at info.
    env: { ...process.env, CERTD_LOG_FORMAT: 'json', ...env, CERTD_LOG_LEVEL: 'info' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const errors: string[] = [];
  let buffer = '';
  let stderrTail = '';
  const firstCycle = new Promise<void>((resolveCycle, rejectCycle) => {
    child.stderr.on('data', (d: Buffer) => {
      buffer += d.toString();
      stderrTail = (stderrTail + d.toString()).slice(-2000);
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.includes('"msg":"cycle finished')) resolveCycle();
        if (/"level":(50|60)/.test(line) && errors.length < 20) errors.push(line.slice(0, 400));
      }
    });
    child.once('exit', (code) => rejectCycle(new Error(`certd run exited (${code}) before its first cycle ended: ${stderrTail.trim().slice(-600)}`)));
  });
  firstCycle.catch(() => undefined);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  return {
    pid: child.pid ?? -1,
    firstCycle,
    errors,
    exited,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** The environment that points the AWS SDK and the AWS CLI at a local peer, and nowhere else. */
export function awsEnv(peer: { url: string; region: string }): NodeJS.ProcessEnv {
  return {
    AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE',
    AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
    AWS_REGION: peer.region,
    AWS_DEFAULT_REGION: peer.region,
    AWS_CONFIG_FILE: '/nonexistent/certd-bench-aws-config',
    AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/certd-bench-aws-credentials',
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_PAGER: '',
  };
}

/** Wall-clock milliseconds with sub-millisecond precision, comparable between processes. */
export function epochNow(): number {
  return performance.timeOrigin + performance.now();
}

export interface ServedProbe {
  /** Resolves with epochNow() of the end of the first handshake that presented `fingerprint`. */
  served(port: number, servername: string, fingerprint: string, timeoutMs?: number): Promise<number>;
  close(): void;
}

/** The handshake loop in its own process (bench/served-probe.ts). */
export async function startProbe(): Promise<ServedProbe> {
  const { fork } = await import('node:child_process');
  const child = fork(fileURLToPath(new URL('./served-probe.js', import.meta.url)), [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const waiting = new Map<number, { resolve: (at: number) => void; reject: (err: Error) => void }>();
  child.on('message', (m: { id: number; at?: number; error?: string }) => {
    const w = waiting.get(m.id);
    waiting.delete(m.id);
    if (m.at !== undefined) w?.resolve(m.at);
    else w?.reject(new Error(m.error ?? 'the probe failed'));
  });
  let next = 0;
  return {
    served(port, servername, fingerprint, timeoutMs = 30_000) {
      const id = next++;
      return new Promise((resolve, reject) => {
        waiting.set(id, { resolve, reject });
        child.send({ id, port, servername, fingerprint, timeoutMs });
      });
    },
    close() {
      child.disconnect();
    },
  };
}

/** A handshake loop until `servername` on `port` presents `fingerprint`; resolves with the time it did. */
export async function waitServed(port: number, servername: string, fingerprint: string, timeoutMs = 30_000): Promise<number> {
  const { handshake } = await import('../test/helpers/tls.js');
  const deadline = nowMs() + timeoutMs;
  for (;;) {
    try {
      const r = await handshake({ port, servername, timeoutMs: 5000 });
      if (r.fingerprint256 === fingerprint) return nowMs();
    } catch {
      // a worker restarting mid-handshake: try again
    }
    if (nowMs() > deadline) throw new Error(`${servername} on port ${port} did not serve ${fingerprint.slice(0, 23)}… within ${timeoutMs} ms`);
  }
}
