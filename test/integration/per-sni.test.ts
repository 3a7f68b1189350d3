/**
 * The tmpfs target's per-sni layout with a real nginx (Debian nginx-light) that includes the
 * generated snippet: a rotation is served with no reload at all (same worker pids, no
 * "reconfiguring" in the error log, no reload in the cycle report); client SNI that is not a
 * deployed name (`../etc`, `..`, unknown names) gets the fallback certificate, never a file
 * outside the directory (trap certificates sit exactly where a raw $ssl_server_name path would
 * lead); certd refuses SANs that are not plain DNS labels; a new name triggers one reload.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { systemClock } from '../../src/clock.js';
import type { ProviderDeps } from '../../src/contracts.js';
import { silentLogger } from '../../src/log.js';
import { Material } from '../../src/material.js';
import type { CycleReport } from '../../src/rotate.js';
import { Secret } from '../../src/secret.js';
import { tmpfsTarget } from '../../providers/tmpfs.js';
import { runCertd, shmDir, writeConfig } from '../helpers/cli.js';
import { startNginx, type RunningNginx } from '../helpers/nginx.js';
import { TestPki } from '../helpers/pki.js';
import { handshake, makeSelfSigned, type SelfSigned } from '../helpers/tls.js';

const A = 'a.persni.certd.test';
const WILD = '*.w.persni.certd.test';
const UNDER_WILD = 'x.w.persni.certd.test';
const ADDED = 'new.persni.certd.test';

const fingerprintOf = (pem: string) => new X509Certificate(pem).fingerprint256;

describe('tmpfs layout per-sni with a real nginx: rotation without reload', () => {
  const scratch = shmDir('per-sni');
  const dir = scratch.dir;
  const sni = join(dir, 'sni');
  const src = join(dir, 'src');
  let pki: TestPki;
  let nginx: RunningNginx | undefined;
  let fallback: SelfSigned;
  let trap: SelfSigned;
  let current = '';

  const config = (o: { reload?: boolean } = {}) =>
    writeConfig(
      dir,
      `state_dir: ${join(dir, 'state')}
policy: { trust_anchors: ${pki.root.certPath} }
certificates:
  - name: web
    source: { type: file, cert: ${join(src, 'cert.pem')}, key: ${join(src, 'key.pem')}, chain: ${join(src, 'chain.pem')} }
    targets:
      - { type: tmpfs, dir: ${sni}, layout: per-sni, fallback: { cert: ${fallback.certPath}, key: ${fallback.keyPath} } }
${o.reload && nginx ? `    reload:
      command: ${JSON.stringify(nginx.reloadCommand)}
      test: ${JSON.stringify(nginx.testCommand)}
    verify: { connect: "127.0.0.1:${nginx.ports[0]}", servername: ${A}, timeout: 3s }
` : ''}`,
    );
  const rotate = async (o: { reload?: boolean } = {}) => {
    const r = await runCertd(['rotate', '--now', '--config', config(o), '--json']);
    let report: CycleReport;
    try {
      report = JSON.parse(r.stdout) as CycleReport;
    } catch {
      throw new Error(`no JSON report (exit ${String(r.code)}): ${r.stderr.slice(-2000)}`);
    }
    assert.ok(!(r.stdout + r.stderr).includes('PRIVATE KEY'), 'key material in certd output');
    return { r, report };
  };
  const perSniTarget = (target: string, name: string) => {
    const values = new Map<string, unknown>();
    const deps: ProviderDeps = {
      clock: systemClock,
      log: silentLogger,
      stateDir: join(dir, `state-${name}`),
      env: process.env,
      shared: <T>(k: string, init: () => T): T => (values.has(k) ? values.get(k) : (values.set(k, init()), values.get(k))) as T,
      resolvePath: (p) => p,
    };
    return tmpfsTarget.create(tmpfsTarget.schema.parse({ type: 'tmpfs', dir: target, layout: 'per-sni' }), deps, { name, hostnames: [], renewBeforeMs: 0 });
  };
  const served = async (servername: string) => (await handshake({ port: nginx!.ports[0]!, servername })).fingerprint256;

  before(async () => {
    pki = new TestPki(join(dir, 'pki'));
    fallback = makeSelfSigned(dir, { cn: 'fallback.invalid' });
    trap = makeSelfSigned(dir, { cn: 'trap.invalid' });
    // Where `ssl_certificate .../sni/$ssl_server_name/fullchain.pem` would read for the SNI
    // "../etc" and "..": a handshake that presents the trap proves client input reached a path.
    for (const d of [join(dir, 'etc'), dir]) {
      mkdirSync(d, { recursive: true });
      cpSync(trap.certPath, join(d, 'fullchain.pem'));
      cpSync(trap.keyPath, join(d, 'privkey.pem'));
    }
    pki.publish(pki.leaf('first', { dns: [A, WILD] }), src);
    const first = await rotate();
    assert.equal(first.r.code, 0, first.r.stderr);
    current = first.report.certificates[0]!.fingerprint!;
    nginx = await startNginx({
      prefix: join(dir, 'nginx'),
      http: `include ${join(sni, 'certd-sni.conf')};`,
      servers: [{ serverName: A, body: 'ssl_protocols TLSv1.2 TLSv1.3;' }],
    });
  });

  after(async () => {
    await nginx?.stop();
    scratch.cleanup();
  });

  it('lays out one set per name, the fallback and the snippet; nginx serves by SNI', async () => {
    for (const d of [A, '_wildcard.w.persni.certd.test', '_fallback']) {
      assert.ok(existsSync(join(sni, d, 'fullchain.pem')) && existsSync(join(sni, d, 'privkey.pem')), d);
    }
    const snippet = readFileSync(join(sni, 'certd-sni.conf'), 'utf8');
    assert.match(snippet, /map \$ssl_server_name \$certd_sni \{\n {4}default _fallback;\n {4}"a\.persni\.certd\.test" "a\.persni\.certd\.test";\n {4}"~\*\^\[a-z0-9-\]\+\\\.w\\\.persni\\\.certd\\\.test\$" "_wildcard\.w\.persni\.certd\.test";\n\}/);
    assert.match(snippet, new RegExp(`ssl_certificate "${sni}/\\$certd_sni/fullchain\\.pem";`));
    assert.match(snippet, new RegExp(`ssl_certificate_key "${sni}/\\$certd_sni/privkey\\.pem";`));
    assert.equal(await served(A), current);
    assert.equal(await served(UNDER_WILD), current);
  });

  it('rotates with no reload: new leaf served, same worker pids, config not re-read', async () => {
    const pids = nginx!.workerPids();
    assert.ok(pids.length > 0);
    const logBefore = nginx!.errorLog().length;
    pki.publish(pki.leaf('second', { dns: [A, WILD] }), src);
    const { r, report } = await rotate({ reload: true });
    assert.equal(r.code, 0, r.stderr);
    const fp = report.certificates[0]!.fingerprint!;
    assert.equal(report.certificates[0]!.result, 'deployed');
    assert.notEqual(fp, current);
    assert.deepEqual(report.reloads, [], 'no reload may run for a rotation of deployed names');
    assert.equal(await served(A), fp);
    assert.equal(await served(UNDER_WILD), fp);
    assert.deepEqual(nginx!.workerPids(), pids, 'the workers changed: nginx was reloaded');
    const newLog = nginx!.errorLog().slice(logBefore);
    assert.doesNotMatch(newLog, /reconfiguring|signal 1 \(SIGHUP\)/, 'nginx re-read its configuration');
    current = fp;
  });

  it('SNI that is not a deployed name gets the fallback, never a file outside the directory', async () => {
    const fb = fingerprintOf(fallback.certPem);
    const trapFp = fingerprintOf(trap.certPem);
    assert.notEqual(fb, trapFp);
    for (const name of ['../etc', '..', 'unknown.persni.certd.test', `${A}/../..`, 'w.persni.certd.test', 'a.b.w.persni.certd.test']) {
      const got = await served(name);
      assert.notEqual(got, trapFp, `SNI ${name} read a file outside the directory`);
      assert.equal(got, fb, `SNI ${name} must get the fallback`);
    }
    assert.equal(await served(A), current);
  });

  it('refuses SANs that are not plain DNS labels, creating no directory for them', async () => {
    const target = join(dir, 'refuse');
    const t = perSniTarget(target, 'bad');
    assert.equal(t.needsReload, false);
    for (const bad of ['../evil', 'a/b.persni.certd.test', 'x..y.persni.certd.test', '*.*.persni.certd.test']) {
      const c = makeSelfSigned(dir, { cn: 'ok.persni.certd.test', sans: ['ok.persni.certd.test', bad] });
      const m = new Material({ certs: [new X509Certificate(c.certPem).raw], key: { kind: 'pem', pem: new Secret(c.keyPem) }, version: 't', origin: 'test' });
      assert.ok(m.dnsNames.includes(bad), `openssl kept the SAN ${bad}`);
      await assert.rejects(t.stage(m, AbortSignal.timeout(5000)), (err: Error) => {
        assert.match(err.message, /refused: SAN .* is not plain DNS labels/);
        assert.ok(err.message.includes(JSON.stringify(bad)));
        return true;
      });
    }
    assert.ok(!existsSync(target) || readdirSync(target).length === 0, 'a directory was created');
    assert.ok(!existsSync(join(dir, 'evil')));
  });

  it('without a fallback option the first certificate fills _fallback; needsReload follows the name set', async () => {
    const target = join(dir, 'nofallback');
    const t = perSniTarget(target, 'solo');
    const leaf = pki.leaf('solo', { dns: ['solo.persni.certd.test'] });
    const m = Material.fromBundle(Buffer.from(leaf.certPem + readFileSync(leaf.keyPath, 'utf8')), { version: '1', origin: 'test' });
    await t.stage(m, AbortSignal.timeout(5000));
    assert.equal(t.needsReload, true, 'a new name changes the snippet');
    await t.commit(AbortSignal.timeout(5000));
    assert.equal(readFileSync(join(target, '_fallback', 'fullchain.pem'), 'utf8'), m.fullchainPem);
    assert.equal(readFileSync(join(target, '_fallback', '..data', 'certd-owner'), 'utf8'), 'solo\n');
    const leaf2 = pki.leaf('solo2', { dns: ['solo.persni.certd.test'] });
    const m2 = Material.fromBundle(Buffer.from(leaf2.certPem + readFileSync(leaf2.keyPath, 'utf8')), { version: '2', origin: 'test' });
    await t.stage(m2, AbortSignal.timeout(5000));
    assert.equal(t.needsReload, false, 'same names: no reload');
    await t.rollback(AbortSignal.timeout(5000));
    assert.equal(readFileSync(join(target, 'solo.persni.certd.test', 'fullchain.pem'), 'utf8'), m.fullchainPem, 'rollback restores the set');
    assert.equal(readFileSync(join(target, '_fallback', 'fullchain.pem'), 'utf8'), m.fullchainPem, 'rollback restores the fallback');
  });

  it('a new name changes the snippet: then (and only then) nginx is reloaded once', async () => {
    pki.publish(pki.leaf('third', { dns: [A, WILD, ADDED] }), src);
    const { r, report } = await rotate({ reload: true });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(report.reloads.length, 1);
    assert.equal(report.reloads[0]!.result, 'ok');
    const fp = report.certificates[0]!.fingerprint!;
    // The old workers drain for a moment after a reload and still hold the old map.
    let got = '';
    for (let i = 0; i < 100 && got !== fp; i++) {
      got = await served(ADDED);
      if (got !== fp) await new Promise((r) => setTimeout(r, 30));
    }
    assert.equal(got, fp);
    assert.equal(await served(A), fp);
    assert.match(readFileSync(join(sni, 'certd-sni.conf'), 'utf8'), /"new\.persni\.certd\.test" "new\.persni\.certd\.test";/);
  });
});
