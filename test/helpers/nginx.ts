/**
 * A real nginx (Debian nginx-light) started by a test on 127.0.0.1, with its own prefix,
 * config, pid file and logs in a temp directory. Fails loudly when nginx is not installed.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const NGINX = '/usr/sbin/nginx';

export function requireNginx(): void {
  if (!existsSync(NGINX)) {
    throw new Error(`${NGINX} not found: install Debian's nginx-light (apt-get install -y nginx-light); the test command does this when run as root`);
  }
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface NginxServerBlock {
  /** server_name; also the SNI tests use. */
  serverName: string;
  /** Lines inside the server block after listen/server_name (ssl_certificate ..., ssl_protocols ...). */
  body: string;
  port?: number;
}

export interface NginxOptions {
  /** Working directory for conf, logs and pid (a temp dir of the test). */
  prefix: string;
  servers: NginxServerBlock[];
  /** Extra lines at http level (map, js_set ...). */
  http?: string;
  /** Extra lines at main level (load_module, env ...). */
  main?: string;
  /** Environment for nginx and its -t / -s reload (OPENSSL_CONF, SOFTHSM2_CONF ...). */
  env?: NodeJS.ProcessEnv;
}

export interface RunningNginx {
  readonly prefix: string;
  readonly conf: string;
  readonly ports: number[];
  /** argv certd's config can use: [nginx, -p, prefix, -c, conf, -s, reload] */
  readonly reloadCommand: string[];
  readonly testCommand: string[];
  masterPid(): number;
  /** Pids of the current worker processes (children of the master). */
  workerPids(): number[];
  reload(): void;
  writeConfig(servers: NginxServerBlock[]): void;
  errorLog(): string;
  stop(): Promise<void>;
}

function render(o: NginxOptions, ports: number[], servers: NginxServerBlock[]): string {
  const root = process.getuid?.() === 0 ? 'user root;\n' : '';
  const blocks = servers
    .map((s, i) => `  server {\n    listen 127.0.0.1:${ports[i]} ssl;\n    server_name ${s.serverName};\n    ${s.body.trim().split('\n').join('\n    ')}\n  }`)
    .join('\n');
  return `${root}${o.main ?? ''}
worker_processes 1;
daemon off;
master_process on;
pid ${join(o.prefix, 'nginx.pid')};
error_log ${join(o.prefix, 'error.log')} info;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${join(o.prefix, 'tmp')};
  proxy_temp_path ${join(o.prefix, 'tmp')};
  ${o.http ?? ''}
${blocks}
}
`;
}

export async function startNginx(o: NginxOptions): Promise<RunningNginx> {
  requireNginx();
  mkdirSync(join(o.prefix, 'tmp'), { recursive: true });
  mkdirSync(join(o.prefix, 'logs'), { recursive: true });
  const ports: number[] = [];
  for (const s of o.servers) ports.push(s.port ?? (await freePort()));
  const conf = join(o.prefix, 'nginx.conf');
  writeFileSync(conf, render(o, ports, o.servers));
  const env = { ...process.env, ...o.env };
  const base = [NGINX, '-p', o.prefix, '-c', conf];
  execFileSync(NGINX, [...base.slice(1), '-t', '-q'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const child: ChildProcess = spawn(NGINX, base.slice(1), { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const pidFile = join(o.prefix, 'nginx.pid');
  for (let i = 0; i < 100 && !existsSync(pidFile); i++) {
    if (child.exitCode !== null) throw new Error(`nginx exited at start: ${stderr}`);
    await sleep(20);
  }
  // Wait until every port accepts connections.
  const { connect } = await import('node:net');
  for (const port of ports) {
    for (let i = 0; ; i++) {
      const ok = await new Promise<boolean>((res) => {
        const s = connect(port, '127.0.0.1', () => { s.destroy(); res(true); });
        s.once('error', () => res(false));
      });
      if (ok) break;
      if (i > 100) throw new Error(`nginx did not listen on ${port}: ${stderr}`);
      await sleep(20);
    }
  }
  const masterPid = (): number => Number(readFileSync(pidFile, 'utf8').trim());
  return {
    prefix: o.prefix,
    conf,
    ports,
    reloadCommand: [...base, '-s', 'reload'],
    testCommand: [...base, '-t', '-q'],
    masterPid,
    workerPids() {
      const out = execFileSync('ps', ['-o', 'pid=', '--ppid', String(masterPid())], { encoding: 'utf8' });
      return out.split('\n').map((l) => Number(l.trim())).filter((n) => n > 0);
    },
    reload() {
      execFileSync(NGINX, [...base.slice(1), '-s', 'reload'], { env });
    },
    writeConfig(servers) {
      writeFileSync(conf, render(o, ports, servers));
    },
    errorLog: () => (existsSync(join(o.prefix, 'error.log')) ? readFileSync(join(o.prefix, 'error.log'), 'utf8') : ''),
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGQUIT');
      for (let i = 0; i < 100 && child.exitCode === null; i++) await sleep(20);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}
