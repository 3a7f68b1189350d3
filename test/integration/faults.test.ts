/**
 * Faults, each injected for real: the NGINX Plus API and APISIX Admin API peers answering 5xx,
 * racing writers (409) and going down; a real `nginx -t` failing; verification seeing another
 * certificate; the tmpfs directory becoming read-only, or full. In every case:
 *   - nothing bad or partial is deployed: the previous complete set stays live (and served);
 *   - the failure shows in `certd status --json` (lastResult failed, the error code) and in the
 *     log (one error line naming the certificate and the code);
 *   - once the fault clears, the next cycle deploys.
 * The daemon (`certd run`) keeps running through a failing cycle, and /metrics shows it.
 * AWS sources (throttling, 5xx, hangs past the timeout, closed connections) through the AWS
 * peer's faults: the last good deployment stays until the source answers again.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { runCycle, type CycleReport } from '../../src/rotate.js';
import { buildRuntime } from '../../src/runtime.js';
import { captureOutput } from '../helpers/capture.js';
import { CERTD, runCertd, shmDir, writeConfig } from '../helpers/cli.js';
import { freePort, startNginx, type RunningNginx } from '../helpers/nginx.js';
import { TestPki, type Issued } from '../helpers/pki.js';
import { handshake, makeSelfSigned } from '../helpers/tls.js';
import { startApisixPeer, type ApisixPeer } from '../peers/apisix-peer.js';
import { startAwsPeer, type AwsPeer } from '../peers/aws-peer.js';
import { awsEnv, createSecret, putSecret, secretJson } from './aws-fixtures.js';
import { startNginxPlusPeer, type NginxPlusPeer } from '../peers/nginx-plus-peer.js';
import type { TlsListener } from '../peers/peer-kit.js';

const API_KEY = 'faults-apisix-admin-key-5d1f0c9e';
const KEY_ENV = 'CERTD_TEST_FAULTS_APISIX_KEY';

interface StatusDoc {
  certificates: { name: string; fingerprint: string | null; lastResult: string | null; error: { code: string; message: string } | null }[];
}

describe('faults: the previous set stays, the failure is visible, the next cycle converges', () => {
  const scratch = shmDir('faults');
  const root = scratch.dir;
  const lines: string[] = [];
  const log = createLogger({ level: 'info', format: 'json', write: (l) => void lines.push(l) });
  const env = { ...process.env, [KEY_ENV]: API_KEY };
  const mounts: string[] = [];
  let pki: TestPki;
  let n = 0;

  /** A fresh leaf for `name`, published where its file source reads. */
  const issue = (name: string, dns: string[]): Issued => {
    const leaf = pki.leaf(`${name}-${++n}`, { dns });
    pki.publish(leaf, join(root, 'src', name));
    return leaf;
  };
  const source = (name: string) => `{ type: file, cert: ${join(root, 'src', name, 'cert.pem')}, key: ${join(root, 'src', name, 'key.pem')}, chain: ${join(root, 'src', name, 'chain.pem')} }`;
  const config = (file: string, body: string) => writeConfig(root, `state_dir: ${join(root, 'state')}
policy: { trust_anchors: ${pki.root.certPath} }
certificates:
${body}`, `${file}.yaml`);

  /** One cycle in this process, as `certd rotate --now` runs it; the log lines it wrote are returned too. */
  const cycle = async (path: string, fetchAttempts = 2): Promise<{ report: CycleReport; log: string[] }> => {
    const from = lines.length;
    const rt = await buildRuntime(loadConfig(path, env), { log, env, fetchAttempts });
    try {
      return { report: await runCycle(rt), log: lines.slice(from) };
    } finally {
      await rt.close();
    }
  };
  const status = async (path: string, name: string) => {
    const r = await runCertd(['status', '--config', path, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const entry = (JSON.parse(r.stdout) as StatusDoc).certificates.find((c) => c.name === name);
    assert.ok(entry, `status has no ${name}`);
    return entry;
  };
  /** The shared assertions of a failed cycle. */
  const assertFailedVisibly = async (path: string, name: string, got: { report: CycleReport; log: string[] }, code: string, previous: string) => {
    const c = got.report.certificates.find((x) => x.name === name);
    assert.equal(c?.result, 'failed', `${name}: ${JSON.stringify(c)}`);
    assert.equal(c?.error?.code, code, c?.error?.message);
    assert.ok(
      got.log.some((l) => {
        const j = JSON.parse(l) as Record<string, unknown>;
        return j['level'] === 'error' && j['cert'] === name && j['code'] === code;
      }),
      `no error log line for ${name} with ${code}`,
    );
    const s = await status(path, name);
    assert.equal(s.lastResult, 'failed');
    assert.equal(s.error?.code, code);
    assert.equal(s.fingerprint, previous, 'status must still name what is really deployed');
  };
  const assertDeployed = (got: { report: CycleReport }, name: string, leaf: Issued) => {
    const c = got.report.certificates.find((x) => x.name === name);
    assert.equal(c?.result, 'deployed', `${name}: ${JSON.stringify(c?.error)}`);
    assert.equal(c?.fingerprint, leaf.fingerprint);
  };

  before(() => {
    pki = new TestPki(join(root, 'pki'));
  });
  after(() => {
    for (const m of mounts.reverse()) {
      try {
        execFileSync('umount', ['-l', m]);
      } catch {
        // already gone
      }
    }
    scratch.cleanup();
  });

  describe('NGINX Plus API (keyval)', () => {
    let peer: NginxPlusPeer;
    let tls: TlsListener;
    let path: string;
    let live: Issued;
    const NAME = 'kv.faults.certd.test';
    const served = async () => (await handshake({ port: tls.port, servername: NAME })).fingerprint256;
    /** Sends requests until an injected fault no longer answers one (faults are consumed per request). */
    const drain = async () => {
      for (let i = 0; i < 1000; i++) {
        const ok = await fetch(`${peer.url}/api/`).then((r) => r.ok, () => false);
        if (ok) return;
      }
      throw new Error('the fault did not clear');
    };

    before(async () => {
      peer = await startNginxPlusPeer();
      tls = await peer.startTls({ zone: 'certs' });
      path = config('keyval', `  - name: kv
    source: ${source('kv')}
    targets: [ { type: nginx-plus-keyval, url: "${peer.apiUrl}", zone: certs, timeout: 2s } ]
`);
      live = issue('kv', [NAME]);
      assertDeployed(await cycle(path), 'kv', live);
      assert.equal(await served(), live.fingerprint);
    });
    after(async () => peer?.close());

    for (const fault of [{ kind: '5xx', status: 503 }, { kind: '5xx', status: 500 }, { kind: 'down' }] as const) {
      it(`${fault.kind}${'status' in fault ? ` ${fault.status}` : ''}: the zone keeps the previous value, E_TARGET shown, then converges`, async () => {
        const before = new Map(peer.zone('certs'));
        const next = issue('kv', [NAME]);
        peer.inject({ ...fault, count: 200 });
        const got = await cycle(path);
        await assertFailedVisibly(path, 'kv', got, 'E_TARGET', live.fingerprint);
        await drain();
        assert.deepEqual(new Map(peer.zone('certs')), before, 'the zone changed');
        assert.equal(await served(), live.fingerprint);
        assertDeployed(await cycle(path), 'kv', next);
        assert.equal(await served(), next.fingerprint);
        live = next;
      });
    }

    it('409 race: another writer adds the key first; certd overwrites it with PATCH and the new leaf is served', async () => {
      const RACE = 'race.faults.certd.test';
      const leaf = issue('kv-race', [RACE]);
      const p = config('keyval-race', `  - name: kv-race
    source: ${source('kv-race')}
    targets: [ { type: nginx-plus-keyval, url: "${peer.apiUrl}", zone: certs } ]
`);
      const from = peer.requests.length;
      peer.inject({ kind: 'conflict-race', raceValue: 'raced-by-another-writer' });
      assertDeployed(await cycle(p), 'kv-race', leaf);
      const trail = peer.requests.slice(from).map((q) => `${q.method} ${q.status}`);
      assert.ok(trail.includes('POST 409') && trail.includes('PATCH 204'), trail.join(', '));
      assert.notEqual(peer.zone('certs').get(RACE), 'raced-by-another-writer');
      assert.equal((await handshake({ port: tls.port, servername: RACE })).fingerprint256, leaf.fingerprint);
    });
  });

  describe('APISIX Admin API', () => {
    let peer: ApisixPeer;
    let tls: TlsListener;
    let path: string;
    let live: Issued;
    const NAME = 'gw.faults.certd.test';
    const served = async () => (await handshake({ port: tls.port, servername: NAME })).fingerprint256;
    const drain = async () => {
      for (let i = 0; i < 1000; i++) {
        const ok = await fetch(`${peer.url}/apisix/admin/ssls/gw`, { headers: { 'x-api-key': API_KEY } }).then((r) => r.status < 500, () => false);
        if (ok) return;
      }
      throw new Error('the fault did not clear');
    };

    before(async () => {
      peer = await startApisixPeer({ apiKey: API_KEY });
      tls = await peer.startTls();
      path = config('apisix', `  - name: gw
    source: ${source('gw')}
    targets: [ { type: apisix, url: "${peer.url}", api_key_env: ${KEY_ENV}, timeout: 2s } ]
`);
      live = issue('gw', [NAME]);
      assertDeployed(await cycle(path), 'gw', live);
      assert.equal(await served(), live.fingerprint);
    });
    after(async () => peer?.close());

    for (const fault of [{ kind: '5xx', status: 503 }, { kind: 'down' }] as const) {
      it(`${fault.kind}: the SSL object keeps the previous pair, E_TARGET shown, then converges`, async () => {
        const before = peer.ssl('gw');
        const next = issue('gw', [NAME]);
        peer.inject({ ...fault, count: 200 });
        const got = await cycle(path);
        await assertFailedVisibly(path, 'gw', got, 'E_TARGET', live.fingerprint);
        await drain();
        assert.equal(peer.ssl('gw')?.cert, before?.cert);
        assert.equal(peer.ssl('gw')?.key, before?.key);
        assert.equal(await served(), live.fingerprint);
        assertDeployed(await cycle(path), 'gw', next);
        assert.equal(await served(), next.fingerprint);
        live = next;
      });
    }
  });

  describe('a real nginx: its config test fails, or verification sees another certificate', () => {
    let nginx: RunningNginx;
    let decoy: TlsServer;
    let decoyPort = 0;
    const deploy = join(root, 'ngx-deploy');
    const extra = join(root, 'ngx-extra.conf');
    const NAME = 'ngx.faults.certd.test';
    let live: Issued;
    const served = async () => (await handshake({ port: nginx.ports[0]!, servername: NAME })).fingerprint256;
    /**
     * After a reload nginx's old workers may still take a connection for a moment after the new
     * ones serve (the master signals them after starting the new ones): wait for the new leaf.
     */
    const servedSoon = async (fp: string) => {
      for (let i = 0; (await served()) !== fp; i++) {
        assert.ok(i < 100, `nginx does not serve ${fp}`);
        await sleep(20);
      }
    };
    const ngxConfig = (verifyPort?: number) => config('nginx', `  - name: ngx
    source: ${source('ngx')}
    targets: [ { type: tmpfs, dir: ${deploy} } ]
    reload:
      command: ${JSON.stringify(nginx.reloadCommand)}
      test: ${JSON.stringify(nginx.testCommand)}
    verify: { connect: "127.0.0.1:${verifyPort ?? nginx.ports[0]}", servername: ${NAME}, timeout: 2s }
`);

    before(async () => {
      live = issue('ngx', [NAME]);
      writeFileSync(extra, '');
      assertDeployed(await cycle(config('nginx-first', `  - name: ngx
    source: ${source('ngx')}
    targets: [ { type: tmpfs, dir: ${deploy} } ]
`)), 'ngx', live);
      nginx = await startNginx({
        prefix: join(root, 'nginx'),
        http: `include ${extra};`,
        servers: [{ serverName: NAME, body: `ssl_certificate ${deploy}/fullchain.pem;\nssl_certificate_key ${deploy}/privkey.pem;` }],
      });
      const other = makeSelfSigned(root, { cn: NAME });
      decoy = createTlsServer({ key: other.keyPem, cert: other.certPem }, (s) => s.end());
      await new Promise<void>((resolve) => decoy.listen(0, '127.0.0.1', resolve));
      decoyPort = (decoy.address() as AddressInfo).port;
      assert.equal(await served(), live.fingerprint);
    });
    after(async () => {
      await new Promise<void>((resolve) => decoy?.close(() => resolve()));
      await nginx?.stop();
    });

    it('nginx -t fails (a broken include): no reload, the previous set back in place, E_RELOAD shown, then converges', async () => {
      const next = issue('ngx', [NAME]);
      writeFileSync(extra, 'this_is_not_a_directive on;\n');
      const path = ngxConfig();
      const got = await cycle(path);
      await assertFailedVisibly(path, 'ngx', got, 'E_RELOAD', live.fingerprint);
      assert.equal(got.report.reloads[0]?.result, 'test-failed');
      assert.match(got.report.certificates[0]?.error?.message ?? '', /unknown directive "this_is_not_a_directive"/);
      assert.equal(new X509Certificate(readFileSync(join(deploy, 'cert.pem'))).fingerprint256, live.fingerprint);
      assert.equal(await served(), live.fingerprint);
      writeFileSync(extra, '');
      assertDeployed(await cycle(path), 'ngx', next);
      await servedSoon(next.fingerprint);
      live = next;
    });

    it('verification sees another certificate: rolled back, reloaded again, E_VERIFY shown, then converges', async () => {
      const next = issue('ngx', [NAME]);
      const wrong = ngxConfig(decoyPort);
      const got = await cycle(wrong);
      await assertFailedVisibly(wrong, 'ngx', got, 'E_VERIFY', live.fingerprint);
      assert.equal(got.report.reloads.length, 2, 'one reload for the new set, one after the rollback');
      assert.equal(await served(), live.fingerprint);
      assertDeployed(await cycle(ngxConfig()), 'ngx', next);
      await servedSoon(next.fingerprint);
      live = next;
    });
  });

  describe('the tmpfs directory read-only or full', () => {
    const mnt = join(root, 'mnt');
    const dir = join(mnt, 'web');
    const NAME = 'fs.faults.certd.test';
    let path: string;
    let live: Issued;
    const liveCert = () => new X509Certificate(readFileSync(join(dir, 'cert.pem'))).fingerprint256;
    /** The live set is whole: its key matches its certificate and every file is there. */
    const assertWholeSet = () => {
      for (const f of ['fullchain.pem', 'cert.pem', 'chain.pem', 'privkey.pem']) assert.ok(readFileSync(join(dir, f)).length > 0, f);
      const cert = new X509Certificate(readFileSync(join(dir, 'cert.pem')));
      assert.ok(cert.checkPrivateKey(createPrivateKey(readFileSync(join(dir, 'privkey.pem')))), 'the live key does not match the live certificate');
      const versions = readdirSync(dir).filter((v) => v.startsWith('..') && v !== '..data');
      assert.ok(versions.length <= 2, `versions left: ${versions.join(', ')}`);
      for (const v of versions) assert.equal(readdirSync(join(dir, v)).length, 4, `${v} is not a whole set`);
    };

    before(async () => {
      if (process.getuid?.() !== 0) throw new Error('faults.test.ts mounts tmpfs file systems: run the tests as root');
      execFileSync('mkdir', ['-p', mnt]);
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0755', 'tmpfs', mnt]);
      mounts.push(mnt);
      path = config('fs', `  - name: fs
    source: ${source('fs')}
    targets: [ { type: tmpfs, dir: ${dir} } ]
`);
      live = issue('fs', [NAME]);
      assertDeployed(await cycle(path), 'fs', live);
    });

    it('read-only (remounted ro): E_TARGET, the previous set intact, then converges once writable', async () => {
      const next = issue('fs', [NAME]);
      assertDeployed(await cycle(path), 'fs', next); // two versions now: live and previous
      live = next;
      const after = issue('fs', [NAME]);
      execFileSync('mount', ['-o', 'remount,ro', mnt]);
      let got;
      try {
        got = await cycle(path);
      } finally {
        execFileSync('mount', ['-o', 'remount,rw', mnt]);
      }
      await assertFailedVisibly(path, 'fs', got, 'E_TARGET', live.fingerprint);
      assert.match(got.report.certificates[0]?.error?.message ?? '', /EROFS|read-only/i);
      assert.equal(liveCert(), live.fingerprint);
      assertWholeSet();
      assertDeployed(await cycle(path), 'fs', after);
      assertWholeSet();
      live = after;
    });

    it('full (ENOSPC part-way through the new set): E_TARGET, no partial set left, then converges once space is freed', async () => {
      const next = issue('fs', [NAME]);
      // The set before the live one goes first (certd would free it at the start of the stage),
      // then the file system is filled, leaving room for about half of a set.
      const liveVersion = readlinkSync(join(dir, '..data'));
      for (const v of readdirSync(dir)) if (v.startsWith('..2') && v !== liveVersion) rmSync(join(dir, v), { recursive: true });
      const filler = join(mnt, 'filler');
      const fd = openSync(filler, 'w');
      const chunk = Buffer.alloc(4096, 1);
      try {
        for (;;) writeSync(fd, chunk);
      } catch (err) {
        assert.equal((err as NodeJS.ErrnoException).code, 'ENOSPC');
      } finally {
        closeSync(fd);
      }
      execFileSync('truncate', ['-s', `-${2 * 4096}`, filler]);
      const got = await cycle(path);
      await assertFailedVisibly(path, 'fs', got, 'E_TARGET', live.fingerprint);
      assert.match(got.report.certificates[0]?.error?.message ?? '', /ENOSPC|no space/i);
      assert.equal(liveCert(), live.fingerprint);
      assertWholeSet();
      rmSync(filler);
      assertDeployed(await cycle(path), 'fs', next);
      assertWholeSet();
      live = next;
    });
  });

  describe('AWS Secrets Manager answering with faults (the AWS peer, through the real SDK)', () => {
    let peer: AwsPeer;
    let path: string;
    let live: Issued;
    const NAME = 'sm.faults.certd.test';
    const dir = join(root, 'sm-deploy');
    const saved: Record<string, string | undefined> = {};
    const liveCert = () => new X509Certificate(readFileSync(join(dir, 'cert.pem'))).fingerprint256;
    const put = async (leaf: Issued) => putSecret(peer, 'faults/web', secretJson(pki, leaf));

    before(async () => {
      peer = await startAwsPeer();
      // The SDK's credential chain reads this process's environment.
      for (const [k, v] of Object.entries(awsEnv(peer))) {
        saved[k] = process.env[k];
        process.env[k] = v;
      }
      live = pki.leaf(`sm-${++n}`, { dns: [NAME] });
      await createSecret(peer, 'faults/web', secretJson(pki, live));
      path = config('sm', `  - name: sm
    source: { type: secrets-manager, secret_id: faults/web, region: ${peer.region}, endpoint: "${peer.url}", request_timeout: 500ms }
    targets: [ { type: tmpfs, dir: ${dir} } ]
`);
      const got = await cycle(path);
      assert.equal(got.report.certificates[0]?.result, 'deployed', JSON.stringify(got.report.certificates[0]?.error));
    });
    after(async () => {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      await peer?.close();
    });

    for (const fault of [
      { kind: 'throttle', message: /throttl/i },
      { kind: '5xx', status: 503, message: /503|unavailable|internal|server/i },
      { kind: 'hang', message: /no answer within request_timeout|timed? ?out/i },
      // The SDK reports a connection closed without an answer like a request that timed out.
      { kind: 'close', message: /socket|closed|reset|ECONNRESET|hang up|connection|no answer within request_timeout/i },
    ] as const) {
      it(`${fault.kind} on every request: E_SOURCE shown, the last good set stays, then converges`, async () => {
        const next = pki.leaf(`sm-${++n}`, { dns: [NAME] });
        await put(next);
        const handle = peer.inject({ kind: fault.kind, count: Infinity, ...('status' in fault ? { status: fault.status } : {}) });
        const t0 = performance.now();
        let got;
        try {
          got = await cycle(path, 1);
        } finally {
          handle.remove();
        }
        const ms = performance.now() - t0;
        await assertFailedVisibly(path, 'sm', got, 'E_SOURCE', live.fingerprint);
        assert.match(got.report.certificates[0]?.error?.message ?? '', fault.message);
        assert.ok(handle.fired >= 1, 'the fault never fired');
        assert.ok(ms < 30_000, `the failing cycle took ${ms.toFixed(0)} ms`);
        assert.equal(liveCert(), live.fingerprint);
        const ok = await cycle(path);
        assert.equal(ok.report.certificates[0]?.result, 'deployed', JSON.stringify(ok.report.certificates[0]?.error));
        assert.equal(liveCert(), next.fingerprint);
        live = next;
      });
    }

    it('a blip (two throttled answers, then a closed connection) is absorbed by retries: deployed in one cycle', async () => {
      const next = pki.leaf(`sm-${++n}`, { dns: [NAME] });
      await put(next);
      peer.inject({ kind: 'throttle', count: 2 });
      peer.inject({ kind: 'close', count: 1 });
      const got = await cycle(path);
      assert.equal(got.report.certificates[0]?.result, 'deployed', JSON.stringify(got.report.certificates[0]?.error));
      assert.equal(liveCert(), next.fingerprint);
      live = next;
    });

    it('an endpoint that accepts and never answers: `certd rotate --now` ends at fetch_deadline (not 4 SDK attempts x request_timeout x retries), names it, and the last good set stays', async () => {
      const next = pki.leaf(`sm-${++n}`, { dns: [NAME] });
      await put(next);
      // request_timeout 2s: without a deadline 4 SDK attempts x 2 s x 3 fetches (plus pauses) is 24 s or more.
      const slow = config('sm-deadline', `  - name: sm
    fetch_deadline: 1500ms
    source: { type: secrets-manager, secret_id: faults/web, region: ${peer.region}, endpoint: "${peer.url}", request_timeout: 2s }
    targets: [ { type: tmpfs, dir: ${dir} } ]
`);
      const handle = peer.inject({ kind: 'hang', count: Infinity });
      const t0 = performance.now();
      let r;
      try {
        r = await runCertd(['rotate', '--now', '--config', slow, '--json'], { timeoutMs: 60_000 });
      } finally {
        handle.remove();
      }
      const ms = performance.now() - t0;
      assert.equal(r.code, 1, r.stderr);
      const row = (JSON.parse(r.stdout) as CycleReport).certificates[0];
      assert.equal(row?.error?.code, 'E_SOURCE');
      assert.match(row?.error?.message ?? '', /^fetching sm: no answer within fetch_deadline 1500ms/);
      assert.equal(row?.fingerprint, live.fingerprint, 'the row shows the certificate still served');
      assert.match(r.stderr, /fetch_deadline 1500ms/, 'the log says it too');
      assert.ok(handle.fired >= 1, 'the fault never fired');
      assert.ok(ms < 12_000, `certd rotate took ${ms.toFixed(0)} ms with a 1500ms fetch_deadline`);
      assert.equal(liveCert(), live.fingerprint);
      const ok = await cycle(path);
      assert.equal(ok.report.certificates[0]?.result, 'deployed', JSON.stringify(ok.report.certificates[0]?.error));
      live = next;
    });
  });

  describe('the daemon through a failing cycle', () => {
    let peer: NginxPlusPeer;
    let daemon: ChildProcess | undefined;
    let stderr = '';
    let metricsUrl = '';
    const NAME = 'daemon.faults.certd.test';

    before(async () => {
      peer = await startNginxPlusPeer();
    });
    after(async () => {
      if (daemon && daemon.exitCode === null) daemon.kill('SIGKILL');
      captureOutput('certd run (faults) stderr', stderr);
      await peer?.close();
    });

    const metric = async (line: RegExp): Promise<number | undefined> => {
      const text = await (await fetch(`${metricsUrl}/metrics`)).text();
      captureOutput('GET /metrics (faults)', text);
      const m = text.split('\n').map((l) => line.exec(l)).find((x) => x !== null);
      return m ? Number(m[1]) : undefined;
    };

    it('certd run keeps running, /metrics and status show the failure, and the next cycle deploys', async () => {
      const port = await freePort();
      metricsUrl = `http://127.0.0.1:${port}`;
      const path = writeConfig(root, `state_dir: ${join(root, 'daemon-state')}
policy: { trust_anchors: ${pki.root.certPath} }
schedule: "0 0 1 1 *"
jitter: 0s
metrics: { listen: "127.0.0.1:${port}" }
certificates:
  - name: kvd
    source: ${source('kvd')}
    targets: [ { type: nginx-plus-keyval, url: "${peer.apiUrl}", zone: certs, timeout: 2s } ]
`, 'daemon.yaml');
      const first = issue('kvd', [NAME]);
      daemon = spawn(process.execPath, [CERTD, 'run', '--config', path], { env: { ...process.env, CERTD_LOG_FORMAT: 'json' }, stdio: ['ignore', 'ignore', 'pipe'] });
      daemon.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
      const ready = /^certd_certificate_ready\{name="kvd"\} (\d+)/;
      for (let i = 0; ; i++) {
        const v = await metric(ready).catch(() => undefined);
        if (v === 1) break;
        assert.ok(i < 200 && daemon.exitCode === null, `the daemon did not deploy: ${stderr.slice(-2000)}`);
        await sleep(50);
      }
      assert.ok(peer.zone('certs').get(NAME)?.includes(first.certPem.trim().split('\n')[1]!));

      const next = issue('kvd', [NAME]);
      peer.inject({ kind: '5xx', status: 503, count: 200 });
      const r = await runCertd(['rotate', '--now', '--config', path, '--json']);
      assert.equal(r.code, 1, r.stderr);
      const report = JSON.parse(r.stdout) as CycleReport;
      assert.equal(report.certificates[0]?.error?.code, 'E_TARGET');
      assert.equal(daemon.exitCode, null, 'the daemon stopped');
      assert.equal(await metric(ready), 0);
      assert.ok(((await metric(/^certd_rotations_total\{name="kvd",result="failed"\} (\d+)/)) ?? 0) >= 1);
      assert.ok(((await metric(/^certd_cycles_total\{result="failed"\} (\d+)/)) ?? 0) >= 1);
      const s = await status(path, 'kvd');
      assert.equal(s.lastResult, 'failed');
      assert.equal(s.error?.code, 'E_TARGET');
      assert.equal(s.fingerprint, first.fingerprint);
      assert.ok(stderr.split('\n').some((l) => l.includes('"cert":"kvd"') && l.includes('"code":"E_TARGET"')), 'no error line in the daemon log');

      for (let i = 0; i < 1000 && !(await fetch(`${peer.url}/api/`).then((x) => x.ok, () => false)); i++);
      const ok = await runCertd(['rotate', '--now', '--config', path, '--json']);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal((JSON.parse(ok.stdout) as CycleReport).certificates[0]?.fingerprint, next.fingerprint);
      assert.equal(await metric(ready), 1);
      daemon.kill('SIGTERM');
      const code = await new Promise<number | null>((resolve) => (daemon?.exitCode !== null ? resolve(daemon?.exitCode ?? null) : daemon.once('exit', (c) => resolve(c))));
      assert.equal(code, 0, stderr.slice(-2000));
      assert.ok(!existsSync(join(root, 'daemon-state', 'control.sock')), 'the control socket was left behind');
    });
  });
});
