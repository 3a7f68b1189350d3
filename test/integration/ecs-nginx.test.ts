// The ECS task as shipped, with a real nginx: the task definition's certd config (certd-init's
// CERTD_CONFIG_YAML) and deploy/ecs/nginx/certd.conf run here as written, with only what must
// change on this machine substituted: the tmpfs mount points (/run/certd, /run/certd-deploy,
// /etc/nginx/certd), the listen address, and the AWS endpoint (the Secrets Manager peer). certd
// runs as the task's user (uid:gid from the task definition), nginx's master as root and its
// worker as an unprivileged user in the shared group, as in the official nginx image. With
// `$ssl_server_name` in ssl_certificate_key the worker reads privkey.pem at handshake time, so
// this is where a key the worker cannot read shows up.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runCertd, shmDir } from '../helpers/cli.js';
import { freePort, NGINX, requireNginx } from '../helpers/nginx.js';
import { TestPki } from '../helpers/pki.js';
import { handshake } from '../helpers/tls.js';
import { DEFAULT_TEST_CREDENTIALS, startAwsPeer, type AwsPeer } from '../peers/aws-peer.js';
import { createSecret, secretJson } from './aws-fixtures.js';

interface ContainerDefinition {
  name: string;
  user?: string;
  environment?: { name: string; value: string }[];
  mountPoints?: { sourceVolume: string; containerPath: string }[];
}
interface TaskDefinition {
  containerDefinitions: ContainerDefinition[];
  volumes: { name: string; dockerVolumeConfiguration?: { driverOpts?: Record<string, string> } }[];
}

const task = JSON.parse(readFileSync(resolve('deploy/ecs/task-definition.json'), 'utf8')) as TaskDefinition;
const NGINX_CONF = resolve('deploy/ecs/nginx/certd.conf');
const container = (name: string): ContainerDefinition => {
  const c = task.containerDefinitions.find((x) => x.name === name);
  assert.ok(c, `the task definition has no ${name} container`);
  return c;
};
const configYaml = (name: string): string => {
  const v = container(name).environment?.find((e) => e.name === 'CERTD_CONFIG_YAML')?.value;
  assert.ok(v, `${name}: no CERTD_CONFIG_YAML`);
  return v;
};
/** "10001:101" as numbers. */
const userOf = (name: string): { uid: number; gid: number } => {
  const m = /^(\d+):(\d+)$/.exec(container(name).user ?? '');
  assert.ok(m, `${name}: user must be "uid:gid" (numeric), got ${JSON.stringify(container(name).user)}`);
  return { uid: Number(m[1]), gid: Number(m[2]) };
};
/** A volume's tmpfs mount options: mode, uid, gid. */
const volumeOpts = (name: string): { mode: number; uid: number; gid: number } => {
  const o = task.volumes.find((v) => v.name === name)?.dockerVolumeConfiguration?.driverOpts?.['o'] ?? '';
  const kv = new Map(o.split(',').map((p) => p.split('=') as [string, string]));
  return { mode: parseInt(kv.get('mode') ?? '755', 8), uid: Number(kv.get('uid') ?? 0), gid: Number(kv.get('gid') ?? 0) };
};
/** The name of group `gid` in /etc/group (nginx's `user` directive takes names). */
const groupName = (gid: number): string | undefined =>
  readFileSync('/etc/group', 'utf8').split('\n').map((l) => l.split(':')).find((f) => f[2] === String(gid))?.[0];

describe('ECS task as shipped: certd and nginx with a non-root worker', () => {
  let shm: ReturnType<typeof shmDir>;
  let peer: AwsPeer;
  let pki: TestPki;
  let leafFingerprint: string;
  const state = (): string => join(shm.dir, 'run-certd');
  const deploy = (): string => join(shm.dir, 'run-certd-deploy');

  /** The container's config with the mount points moved to this test's tmpfs directories. */
  const localConfig = (name: string): string => {
    const yaml = configYaml(name);
    assert.match(yaml, /\/run\/certd-deploy\//);
    return yaml.replaceAll('/run/certd-deploy', deploy()).replace(/\/run\/certd\b/g, state());
  };
  const env = (): NodeJS.ProcessEnv => {
    const e: NodeJS.ProcessEnv = {
      ...process.env,
      CERTD_CONFIG_YAML: localConfig('certd-init'),
      AWS_ENDPOINT_URL: peer.url,
      AWS_ACCESS_KEY_ID: DEFAULT_TEST_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: DEFAULT_TEST_CREDENTIALS.secretAccessKey,
      HOME: shm.dir,
    };
    delete e['CERTD_CONFIG'];
    delete e['AWS_PROFILE'];
    return e;
  };
  /** Fresh, empty volumes as ECS mounts them (tmpfs with the task's mode, uid and gid). */
  const freshVolumes = (): void => {
    for (const [dir, volume] of [[state(), 'certd-state'], [deploy(), 'certd-deploy']] as const) {
      execFileSync('rm', ['-rf', dir]);
      mkdirSync(dir);
      const o = volumeOpts(volume);
      chownSync(dir, o.uid, o.gid);
      chmodSync(dir, o.mode);
    }
  };

  before(async () => {
    requireNginx();
    shm = shmDir('ecs-nginx');
    chmodSync(shm.dir, 0o755); // the mount points' parent: reachable by certd's and nginx's users
    peer = await startAwsPeer();
    pki = new TestPki(join(shm.dir, 'pki'));
    const leaf = pki.leaf('web', { dns: ['web.example.com'] });
    leafFingerprint = leaf.fingerprint;
    const secretId = /secret_id: (\S+)/.exec(configYaml('certd-init'))?.[1];
    assert.ok(secretId, 'the task config names a secret');
    await createSecret(peer, secretId, secretJson(pki, leaf));
  });
  after(async () => {
    await peer?.close();
    shm?.cleanup();
  });

  it('`group:` on a target as a user outside that group is a clear E_TARGET error naming the directory, the group and the fix', async () => {
    freshVolumes();
    const { uid } = userOf('certd-init');
    // The classic mistake: the task's user with its own primary group, not the shared one.
    chownSync(state(), uid, uid);
    const r = await runCertd(['rotate', '--now'], { env: env(), uid, gid: uid });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const out = r.stdout + r.stderr;
    const group = /group: "?(\w+)"?/.exec(configYaml('certd-init'))?.[1];
    assert.ok(group, 'the task config sets group: on its target');
    assert.match(out, /E_TARGET/);
    assert.match(out, new RegExp(`deploying web to ${deploy()}/web\\.example\\.com: cannot give the files to group "${group}"`));
    assert.match(out, new RegExp(`certd runs as uid ${uid} \\(not root\\) and is not a member of group ${group}`));
    assert.match(out, /run certd as root or as a member of that group/);
    assert.doesNotMatch(out, /EPERM: operation not permitted, fchown/);
    assert.equal(existsSync(join(deploy(), 'web.example.com', 'privkey.pem')), false, 'nothing half-deployed');
  });

  it("certd-init deploys as the task's user, and nginx's non-root worker serves the certificate over TLS", async () => {
    freshVolumes();
    const { uid, gid } = userOf('certd-init');
    assert.notEqual(uid, 0, 'certd runs as root in the task definition');
    assert.deepEqual(userOf('certd'), { uid, gid }, 'certd-init and certd run as the same user');
    const r = await runCertd(['rotate', '--now'], { env: env(), uid, gid });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const key = statSync(join(deploy(), 'web.example.com', 'privkey.pem'));
    assert.equal(key.mode & 0o777, 0o640);
    assert.equal(key.gid, volumeOpts('certd-deploy').gid, "privkey.pem's group is the deploy volume's (nginx's)");

    // The nginx container: the official image's nginx.conf (its `user` is an unprivileged user in
    // the shared group) with the shipped server config in conf.d, the deploy volume at
    // /etc/nginx/certd.
    // The deploy volume's group is nginx's (gid 101 in the official image): the worker's group.
    const workerGid = volumeOpts('certd-deploy').gid;
    const workerGroup = groupName(workerGid);
    if (workerGroup === undefined) throw new Error(`no group with gid ${workerGid} in /etc/group: nginx's user directive needs its name`);
    const port = await freePort();
    const prefix = join(shm.dir, 'nginx');
    mkdirSync(join(prefix, 'tmp'), { recursive: true });
    const shipped = readFileSync(NGINX_CONF, 'utf8');
    assert.match(shipped, /ssl_certificate_key\s+\/etc\/nginx\/certd\/\$certd_name\/privkey\.pem;/, 'the key is loaded per handshake');
    assert.match(shipped, /listen 443 ssl;/);
    const confd = join(prefix, 'certd.conf');
    writeFileSync(confd, shipped.replaceAll('/etc/nginx/certd/', `${deploy()}/`).replace('listen 443 ssl;', `listen 127.0.0.1:${port} ssl;`));
    const main = join(prefix, 'nginx.conf');
    writeFileSync(
      main,
      `user nobody ${workerGroup};
worker_processes 1;
daemon off;
pid ${join(prefix, 'nginx.pid')};
error_log ${join(prefix, 'error.log')} info;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${join(prefix, 'tmp')};
  proxy_temp_path ${join(prefix, 'tmp')};
  include ${confd};
}
`,
    );
    execFileSync(NGINX, ['-p', prefix, '-c', main, '-t', '-q'], { stdio: ['ignore', 'ignore', 'pipe'] });
    const nginx: ChildProcess = spawn(NGINX, ['-p', prefix, '-c', main], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    nginx.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const errorLog = (): string => (existsSync(join(prefix, 'error.log')) ? readFileSync(join(prefix, 'error.log'), 'utf8') : '');
    try {
      let served: Awaited<ReturnType<typeof handshake>> | undefined;
      let last: unknown;
      for (let i = 0; i < 100 && served === undefined; i++) {
        if (nginx.exitCode !== null) throw new Error(`nginx exited: ${stderr}${errorLog()}`);
        served = await handshake({ port, servername: 'web.example.com', ca: pki.root.certPem }).catch((err: unknown) => {
          last = err;
          return undefined;
        });
        if (served === undefined) await sleep(50);
      }
      assert.ok(served, `no TLS handshake: ${String(last)}\nnginx error log:\n${errorLog()}`);
      assert.equal(served.fingerprint256, leafFingerprint);
      assert.equal(served.authorized, true);
      // The worker that served it is not root.
      const masterPid = Number(readFileSync(join(prefix, 'nginx.pid'), 'utf8').trim());
      const workers = execFileSync('ps', ['-o', 'uid=', '--ppid', String(masterPid)], { encoding: 'utf8' }).split('\n').map((l) => l.trim()).filter((l) => l !== '');
      assert.ok(workers.length > 0 && workers.every((w) => w !== '0'), `worker uids: ${workers.join(', ')}`);
      assert.doesNotMatch(errorLog(), /Permission denied|cannot load certificate/);
    } finally {
      nginx.kill('SIGTERM');
      if (nginx.exitCode === null) await new Promise((r) => nginx.once('exit', r));
    }
  });
});
