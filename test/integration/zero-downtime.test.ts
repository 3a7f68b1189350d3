/**
 * Zero downtime: several client loops make TLS handshakes without pause (no keep-alive: a new
 * connection each time) while certd rotates, and
 *   - not one handshake fails;
 *   - every leaf served is the one deployed before the rotation in progress or the new one
 *     (for a handshake that spans rotations: any deployed from the one before it started to
 *     the newest when it ended).
 * Against a real nginx, through reload and verification (the cycle in-process: runCycle on a
 * runtime built from a config file, as `certd rotate --now` does, minus process start-up), and
 * against the NGINX Plus API peer's TLS listener that serves from the key-value zone certd
 * pushes to. Figures printed: handshakes and rotations.
 */
import assert from 'node:assert/strict';
import { renameSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { runCycle } from '../../src/rotate.js';
import { buildRuntime, type Runtime } from '../../src/runtime.js';
import '../helpers/capture.js';
import { shmDir, writeConfig } from '../helpers/cli.js';
import { startNginx, type RunningNginx } from '../helpers/nginx.js';
import { TestPki } from '../helpers/pki.js';
import { epochMs, startHandshakeLoad, type HandshakeRecord } from '../helpers/handshake-load.js';
import { startNginxPlusPeer, type NginxPlusPeer } from '../peers/nginx-plus-peer.js';
import type { TlsListener } from '../peers/peer-kit.js';

const LONG = process.env['CERTD_TEST_LONG'] === '1';
const ROTATIONS = LONG ? 300 : 50;
const CLIENTS = 4;
const NAME = 'zd.certd.test';
const PAIRS = ['a', 'b', 'c', 'd'];

/** Logs of the in-process runtimes: captured for the hygiene check, not printed. */
const log = createLogger({ level: 'info', format: 'json', write: () => undefined });

interface Tally {
  handshakes: number;
  failures: string[];
  wrong: string[];
}

/**
 * Client loops (a worker thread) against `port` while `rotate` runs. `rotate` calls `started`
 * just before the k-th rotation changes anything, with the leaf it deploys (deployed[k];
 * deployed[0] is what is live before). A handshake that began after n rotations had started
 * and ended after m may see deployed[n-1 .. m]: the previous or the new leaf of any rotation
 * it overlapped.
 */
async function underLoad(port: number, first: string, rotate: (started: (fp: string) => void) => Promise<void>): Promise<Tally> {
  const deployed = [first];
  const startedAt = [Number.NEGATIVE_INFINITY];
  const load = startHandshakeLoad({ port, servername: NAME, clients: CLIENTS });
  let records: HandshakeRecord[];
  try {
    await rotate((fp) => {
      startedAt.push(epochMs());
      deployed.push(fp);
    });
  } finally {
    records = await load.stop();
  }
  const count = (t: number) => startedAt.filter((s) => s <= t).length - 1;
  const tally: Tally = { handshakes: records.length, failures: [], wrong: [] };
  for (const r of records) {
    if (r.error !== undefined) {
      tally.failures.push(r.error);
      continue;
    }
    const n = count(r.start);
    const m = count(r.end);
    if (!deployed.slice(Math.max(0, n - 1), m + 1).includes(r.fingerprint ?? '')) {
      tally.wrong.push(`${r.fingerprint} (deployed by rotation ${deployed.lastIndexOf(r.fingerprint ?? '', m)}) during rotations ${n}..${m}`);
    }
  }
  return tally;
}

describe('zero downtime while certd rotates', () => {
  const scratch = shmDir('zero-downtime');
  const root = scratch.dir;
  const current = join(root, 'current');
  let pki: TestPki;
  const fingerprints: string[] = [];
  let at = 0;

  /** Points the file source at the next pair (a symlink renamed over the old one) and returns its leaf. */
  const flip = (): string => {
    at = (at + 1) % PAIRS.length;
    symlinkSync(join(root, 'pairs', PAIRS[at]!), join(root, 'current.tmp'));
    renameSync(join(root, 'current.tmp'), current);
    return fingerprints[at]!;
  };
  const source = () => `{ type: file, cert: ${current}/cert.pem, key: ${current}/key.pem, chain: ${current}/chain.pem }`;
  const runtime = async (name: string, body: string): Promise<Runtime> =>
    buildRuntime(loadConfig(writeConfig(root, `state_dir: ${join(root, 'state')}
policy: { trust_anchors: ${pki.root.certPath} }
certificates:
${body}`, `${name}.yaml`)), { log });

  before(() => {
    pki = new TestPki(join(root, 'pki'));
    for (const p of PAIRS) {
      const leaf = pki.leaf(p, { dns: [NAME] });
      pki.publish(leaf, join(root, 'pairs', p));
      fingerprints.push(leaf.fingerprint);
    }
    symlinkSync(join(root, 'pairs', PAIRS[0]!), current);
  });
  after(() => scratch.cleanup());

  describe('a real nginx, reloaded for every rotation', () => {
    let nginx: RunningNginx;
    const deploy = join(root, 'nginx-deploy');

    before(async () => {
      const first = await runtime('nginx-first', `  - name: web
    source: ${source()}
    targets: [ { type: tmpfs, dir: ${deploy} } ]
`);
      const r = await runCycle(first);
      await first.close();
      assert.equal(r.certificates[0]?.result, 'deployed', JSON.stringify(r.certificates[0]?.error));
      nginx = await startNginx({
        prefix: join(root, 'nginx'),
        servers: [{ serverName: NAME, body: `ssl_certificate ${deploy}/fullchain.pem;\nssl_certificate_key ${deploy}/privkey.pem;\nssl_protocols TLSv1.2 TLSv1.3;` }],
      });
    });
    after(async () => nginx?.stop());

    // nginx -t is left out only to keep the test short: it runs before the reload and changes nothing served.
    it(`${ROTATIONS} rotations with reload and verify: no failed handshake, only the previous or the new leaf`, async () => {
      const rt = await runtime('nginx', `  - name: web
    source: ${source()}
    targets: [ { type: tmpfs, dir: ${deploy} } ]
    reload:
      command: ${JSON.stringify(nginx.reloadCommand)}
    verify: { connect: "127.0.0.1:${nginx.ports[0]}", servername: ${NAME}, timeout: 5s }
`);
      const t0 = performance.now();
      let reloads = 0;
      const tally = await underLoad(nginx.ports[0]!, fingerprints[0]!, async (started) => {
        for (let i = 0; i < ROTATIONS; i++) {
          started(flip());
          const r = await runCycle(rt);
          assert.equal(r.certificates[0]?.result, 'deployed', `rotation ${i + 1}: ${JSON.stringify(r.certificates[0]?.error)}`);
          reloads += r.reloads.filter((x) => x.result === 'ok').length;
          // A rotation ends when nginx has retired the workers of the configuration before it
          // (they may accept a connection for a moment after the new ones serve); the next one
          // starts only then, so "previous" means the leaf of the rotation before.
          for (let t = 0; nginx.workerPids().length > 1; t++) {
            assert.ok(t < 200, 'nginx kept old workers for 4 s');
            await sleep(20);
          }
        }
      }).finally(() => rt.close());
      const s = (performance.now() - t0) / 1000;
      console.log(`# zero-downtime nginx: ${tally.handshakes} handshakes by ${CLIENTS} clients during ${ROTATIONS} rotations (${reloads} reloads) in ${s.toFixed(1)} s; ${tally.failures.length} failed, ${tally.wrong.length} unexpected leaves`);
      assert.equal(reloads, ROTATIONS);
      assert.deepEqual(tally.failures.slice(0, 10), [], `${tally.failures.length} handshakes failed`);
      assert.deepEqual(tally.wrong, []);
      assert.ok(tally.handshakes >= ROTATIONS * CLIENTS, `only ${tally.handshakes} handshakes: the clients did not keep up the load`);
    });
  });

  describe('the NGINX Plus API peer, serving from the key-value zone certd pushes to', () => {
    let peer: NginxPlusPeer;
    let tls: TlsListener;
    before(async () => {
      peer = await startNginxPlusPeer();
      tls = await peer.startTls({ zone: 'certs' });
    });
    after(async () => peer?.close());

    // No verify step here: the client loops are the verification, and a push needs no reload.
    it(`${ROTATIONS} pushes (POST, then 409 and PATCH): no failed handshake, only the previous or the new leaf`, async () => {
      const body = `  - name: kv
    source: ${source()}
    targets: [ { type: nginx-plus-keyval, url: "${peer.apiUrl}", zone: certs } ]
`;
      const rt = await runtime('keyval', body);
      const first = await runCycle(rt);
      assert.equal(first.certificates[0]?.result, 'deployed', JSON.stringify(first.certificates[0]?.error));
      const writes = peer.requests.length;
      const t0 = performance.now();
      const tally = await underLoad(tls.port, first.certificates[0]!.fingerprint!, async (started) => {
        for (let i = 0; i < ROTATIONS; i++) {
          started(flip());
          const r = await runCycle(rt);
          assert.equal(r.certificates[0]?.result, 'deployed', `push ${i + 1}: ${JSON.stringify(r.certificates[0]?.error)}`);
          assert.deepEqual(r.reloads, []);
          // A push takes a few milliseconds: leave the clients time to handshake between two.
          await sleep(20);
        }
      }).finally(() => rt.close());
      const s = (performance.now() - t0) / 1000;
      const patches = peer.requests.slice(writes).filter((q) => q.method === 'PATCH' && q.status === 204).length;
      console.log(`# zero-downtime keyval: ${tally.handshakes} handshakes by ${CLIENTS} clients during ${ROTATIONS} pushes (${patches} PATCH 204) in ${s.toFixed(1)} s; ${tally.failures.length} failed, ${tally.wrong.length} unexpected leaves`);
      assert.equal(patches, ROTATIONS, 'one PATCH per push');
      assert.deepEqual(tally.failures.slice(0, 10), [], `${tally.failures.length} handshakes failed`);
      assert.deepEqual(tally.wrong, []);
      assert.ok(tally.handshakes >= ROTATIONS * CLIENTS);
    });
  });
});
