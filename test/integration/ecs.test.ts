// The ECS sidecar's command lines, run on this machine (no Docker engine here): the Dockerfile's
// ENTRYPOINT/CMD/HEALTHCHECK and the task definition's commands and health check are parsed and
// run as they are, with bin/certd standing in for `certd` and the config in CERTD_CONFIG_YAML
// (a local CA, a tmpfs target in /dev/shm).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { captureOutput } from '../helpers/capture.js';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseConfigText } from '../../src/config.js';
import { certdCommand, runCertd, shmDir } from '../helpers/cli.js';
import { issueLeafWithOpenssl, makeCa, makeKey } from '../helpers/openssl-ca.js';

const DOCKERFILE = resolve('deploy/ecs/Dockerfile');
const TASK_DEFINITION = resolve('deploy/ecs/task-definition.json');

interface Dockerfile {
  stages: number;
  /** Instructions of the last stage, continuation lines joined. */
  final: { op: string; args: string }[];
  entrypoint: string[];
  cmd: string[];
  healthcheck: string[];
  user: string;
}

function parseDockerfile(text: string): Dockerfile {
  const lines = text.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  const instructions = lines.map((l) => {
    const m = /^(\w+)\s+(.*)$/.exec(l);
    return { op: (m?.[1] ?? l).toUpperCase(), args: m?.[2] ?? '' };
  });
  const froms = instructions.map((ins, i) => (ins.op === 'FROM' ? i : -1)).filter((i) => i >= 0);
  const final = instructions.slice(froms[froms.length - 1] ?? 0);
  const execForm = (op: string): string[] => {
    const ins = final.filter((i) => i.op === op).pop();
    assert.ok(ins, `the final stage has no ${op}`);
    const json = op === 'HEALTHCHECK' ? /\bCMD\s+(\[.*\])\s*$/.exec(ins.args)?.[1] : ins.args;
    assert.ok(json !== undefined && json.startsWith('['), `${op} must use the exec form (a JSON array): ${ins.args}`);
    return JSON.parse(json) as string[];
  };
  return {
    stages: froms.length,
    final,
    entrypoint: execForm('ENTRYPOINT'),
    cmd: execForm('CMD'),
    healthcheck: execForm('HEALTHCHECK'),
    user: final.filter((i) => i.op === 'USER').pop()?.args ?? 'root',
  };
}

interface ContainerDefinition {
  name: string;
  image: string;
  essential: boolean;
  command?: string[];
  environment?: { name: string; value: string }[];
  healthCheck?: { command: string[] };
  mountPoints?: { sourceVolume: string; containerPath: string; readOnly?: boolean }[];
  dependsOn?: { containerName: string; condition: string }[];
}
interface TaskDefinition {
  family: string;
  containerDefinitions: ContainerDefinition[];
  volumes?: { name: string }[];
  requiresCompatibilities?: string[];
}

/** A container's argv as Docker builds it: ENTRYPOINT + (command, else CMD); certd -> bin/certd, started as a program. */
function argvOf(docker: Dockerfile, c: ContainerDefinition): string[] {
  return [...docker.entrypoint, ...(c.command ?? docker.cmd)];
}
/** ECS health check command: ["CMD", argv...] (or CMD-SHELL, not used here). */
function healthArgv(c: ContainerDefinition): string[] {
  const cmd = c.healthCheck?.command ?? [];
  assert.equal(cmd[0], 'CMD', `${c.name}: health check must be ["CMD", ...] (exec form): ${JSON.stringify(cmd)}`);
  return cmd.slice(1);
}
function asLocal(argv: string[]): string[] {
  assert.equal(argv[0], 'certd', `expected a certd command line: ${JSON.stringify(argv)}`);
  return argv.slice(1);
}

describe('ECS sidecar files', () => {
  const docker = parseDockerfile(readFileSync(DOCKERFILE, 'utf8'));
  const task = JSON.parse(readFileSync(TASK_DEFINITION, 'utf8')) as TaskDefinition;
  const certdContainers = task.containerDefinitions.filter((c) => /\/certd:/.test(c.image));

  it('the Dockerfile is multi-stage, installs production deps only, runs as non-root, checks health', () => {
    assert.ok(docker.stages >= 2, `stages: ${docker.stages}`);
    const text = readFileSync(DOCKERFILE, 'utf8');
    assert.match(text, /npm ci --omit=dev/);
    assert.match(text, /FROM \$\{NODE_IMAGE\}|FROM node:24-bookworm-slim/);
    assert.match(text, /ARG NODE_IMAGE=node:24-bookworm-slim/);
    assert.ok(!/^(root|0)(:|$)/.test(docker.user), `USER ${docker.user}`);
    assert.deepEqual([...docker.entrypoint, ...docker.cmd], ['certd', 'run']);
    assert.deepEqual(docker.healthcheck, ['certd', 'status', '--health']);
    // No compiler in the runtime stage.
    assert.ok(!docker.final.some((i) => i.op === 'RUN' && /g\+\+|make|python3/.test(i.args)), 'compilers in the runtime stage');
  });

  it('task-definition.json has what ECS requires, and every mount names a volume', () => {
    assert.equal(typeof task.family, 'string');
    assert.match(task.family, /^[A-Za-z0-9_-]{1,255}$/);
    assert.ok(Array.isArray(task.containerDefinitions) && task.containerDefinitions.length > 0);
    for (const c of task.containerDefinitions) {
      assert.equal(typeof c.name, 'string', 'containerDefinitions[].name');
      assert.equal(typeof c.image, 'string', `${c.name}: image`);
      assert.equal(typeof c.essential, 'boolean', `${c.name}: essential`);
      for (const m of c.mountPoints ?? []) assert.ok(task.volumes?.some((v) => v.name === m.sourceVolume), `${c.name}: volume ${m.sourceVolume} is not defined`);
      for (const d of c.dependsOn ?? []) assert.ok(task.containerDefinitions.some((o) => o.name === d.containerName), `${c.name}: depends on unknown ${d.containerName}`);
    }
    assert.ok(task.containerDefinitions.some((c) => c.essential));
    assert.ok(task.containerDefinitions.some((c) => /nginx/.test(c.image)));
    assert.ok(certdContainers.length >= 1);
    const daemon = certdContainers.find((c) => argvOf(docker, c).join(' ') === 'certd run');
    assert.ok(daemon, 'a container runs certd run');
    assert.deepEqual(healthArgv(daemon), ['certd', 'status', '--health']);
  });

  it("the task definition's CERTD_CONFIG_YAML is a valid certd config", () => {
    for (const c of certdContainers) {
      const yaml = c.environment?.find((e) => e.name === 'CERTD_CONFIG_YAML')?.value;
      assert.ok(yaml, `${c.name}: no CERTD_CONFIG_YAML`);
      const config = parseConfigText(yaml, `${c.name} CERTD_CONFIG_YAML`);
      assert.ok(config.certificates.length > 0);
    }
  });

  describe('the command lines, run here', () => {
    let shm: ReturnType<typeof shmDir>;
    let envFor: (failing: boolean, base?: string) => NodeJS.ProcessEnv;
    before(() => {
      shm = shmDir('ecs');
      const yaml = (failing: boolean, base: string): string => `fips_runtime: auto
state_dir: ${join(base, 'state')}
certificates:
  - name: web
    source: { type: local-ca, dns_names: [web.example.test] }
    targets:
      - { type: tmpfs, dir: ${join(base, 'deploy', 'web.example.test')} }
${failing ? `  - name: broken
    source: { type: file, cert: ${join(shm.dir, 'absent.pem')}, key: ${join(shm.dir, 'absent.key')} }
    targets:
      - { type: tmpfs, dir: ${join(shm.dir, 'deploy', 'broken')} }
` : ''}`;
      envFor = (failing, base = shm.dir) => {
        const env: NodeJS.ProcessEnv = { ...process.env, CERTD_CONFIG_YAML: yaml(failing, base) };
        delete env['CERTD_CONFIG'];
        return env;
      };
    });
    after(() => shm.cleanup());

    it('certd-init (rotate --now) deploys, then the health check passes', async () => {
      const init = task.containerDefinitions.find((c) => c.name === 'certd-init');
      assert.ok(init);
      const argv = asLocal(argvOf(docker, init));
      assert.deepEqual(argv, ['rotate', '--now']);
      const r = await runCertd(argv, { launcher: true, env: envFor(false) });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      for (const f of ['fullchain.pem', 'privkey.pem', 'cert.pem', 'chain.pem']) {
        assert.ok(existsSync(join(shm.dir, 'deploy', 'web.example.test', f)), f);
      }
      for (const health of [docker.healthcheck, healthArgv(task.containerDefinitions.find((c) => c.name === 'certd')!)]) {
        const h = await runCertd(asLocal(health), { launcher: true, env: envFor(false) });
        assert.equal(h.code, 0, `${health.join(' ')}: ${h.stdout}${h.stderr}`);
      }
    });

    it('the health check fails when a certificate fails', async () => {
      const r = await runCertd(asLocal(argvOf(docker, task.containerDefinitions.find((c) => c.name === 'certd-init')!)), { launcher: true, env: envFor(true) });
      assert.equal(r.code, 1, r.stdout + r.stderr);
      const h = await runCertd(asLocal(docker.healthcheck), { launcher: true, env: envFor(true) });
      assert.notEqual(h.code, 0, h.stdout + h.stderr);
      assert.match(h.stdout + h.stderr, /broken/);
    });

    it('a source outage while the last good set is served: the health check passes with a warning, and certd-init lets nginx start', async () => {
      // A file source that works, then goes away (a Secrets Manager outage as certd sees it).
      const base = join(shm.dir, 'outage');
      mkdirSync(base);
      const ca = makeCa(base, 'Outage Test Root', 'ec-p256');
      const key = makeKey('ec-p256');
      const leaf = { certPath: join(base, 'web.pem'), keyPath: join(base, 'web.key') };
      writeFileSync(leaf.certPath, issueLeafWithOpenssl(base, ca, key, { cn: 'web.example.test', sans: ['web.example.test'], days: 90 }) + ca.certPem);
      writeFileSync(leaf.keyPath, key, { mode: 0o600 });
      const yaml = `fips_runtime: auto
state_dir: ${join(base, 'state')}
certificates:
  - name: web
    source: { type: file, cert: ${leaf.certPath}, key: ${leaf.keyPath} }
    targets:
      - { type: tmpfs, dir: ${join(base, 'deploy', 'web.example.test')} }
`;
      const env: NodeJS.ProcessEnv = { ...process.env, CERTD_CONFIG_YAML: yaml };
      delete env['CERTD_CONFIG'];
      const init = task.containerDefinitions.find((c) => c.name === 'certd-init')!;
      const first = await runCertd(asLocal(argvOf(docker, init)), { env, launcher: true });
      assert.equal(first.code, 0, first.stdout + first.stderr);
      // The source goes down.
      rmSync(leaf.certPath);
      rmSync(leaf.keyPath);
      const again = await runCertd(asLocal(argvOf(docker, init)), { env, launcher: true });
      assert.equal(again.code, 1, again.stdout + again.stderr);
      assert.ok(existsSync(join(base, 'deploy', 'web.example.test', 'privkey.pem')), 'the last good set is still deployed');
      for (const health of [docker.healthcheck, healthArgv(task.containerDefinitions.find((c) => c.name === 'certd')!)]) {
        const h = await runCertd(asLocal(health), { env, launcher: true });
        assert.equal(h.code, 0, `${health.join(' ')} must pass while the last good certificate is served: ${h.stdout}${h.stderr}`);
        assert.match(h.stdout, /warning: web: last cycle failed at .*E_SOURCE/);
      }
      const json = await runCertd([...asLocal(docker.healthcheck), '--json'], { env, launcher: true });
      const parsed = JSON.parse(json.stdout) as { ok: boolean; problems: unknown[]; warnings: { name: string; problem: string }[] };
      assert.equal(parsed.ok, true);
      assert.deepEqual(parsed.warnings.map((w) => [w.name, w.problem]), [['web', 'failed']]);
      // certd-init failing (a source down) must not keep nginx or the daemon from starting: they
      // start once it has finished, whatever its exit code, and serve what is there.
      for (const name of ['nginx', 'certd']) {
        const c = task.containerDefinitions.find((x) => x.name === name)!;
        const dep = c.dependsOn?.find((d) => d.containerName === 'certd-init');
        assert.equal(dep?.condition, 'COMPLETE', `${name} must start when certd-init has completed, even unsuccessfully`);
      }
    });

    it('the sidecar (certd run) starts from the environment config, stays healthy and stops on SIGTERM', async () => {
      const sidecar = task.containerDefinitions.find((c) => c.name === 'certd')!;
      const argv = asLocal(argvOf(docker, sidecar));
      // A fresh state_dir: healthy only once this daemon has deployed, not from an earlier run.
      const base = join(shm.dir, 'sidecar');
      mkdirSync(base);
      const env = envFor(false, base);
      const before = await runCertd(asLocal(docker.healthcheck), { env, launcher: true });
      assert.notEqual(before.code, 0, 'healthy before the daemon ran');
      const cmd = certdCommand(argv, true);
      const child = spawn(cmd.file, cmd.args, { env: { ...env, ...cmd.env, CERTD_LOG_FORMAT: 'json' }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<string>((r) => child.once('exit', (code, signal) => r(`${code ?? signal}`)));
      void exited.then(() => captureOutput(`certd ${argv.join(' ')} stderr`, stderr));
      try {
        let healthy = false;
        for (let i = 0; i < 100 && !healthy && child.exitCode === null; i++) {
          const h = await runCertd(asLocal(docker.healthcheck), { env, launcher: true });
          healthy = h.code === 0;
          if (!healthy) await new Promise((r) => setTimeout(r, 100));
        }
        assert.ok(healthy, `never healthy; daemon stderr:\n${stderr}`);
        assert.equal(child.exitCode, null, `the daemon exited: ${stderr}`);
      } finally {
        child.kill('SIGTERM');
      }
      assert.equal(await exited, '0', stderr);
      assert.ok(existsSync(join(base, 'deploy', 'web.example.test', 'fullchain.pem')));
    });
  });
});
