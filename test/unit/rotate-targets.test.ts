/**
 * What makes a cycle deploy although the source has nothing new: `rotate --now --force` (a key
 * believed compromised), and a target whose configuration changed (mode, group, dir).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Io, main } from '../../src/cli.js';
import { parseConfigText, type LoadedConfig } from '../../src/config.js';
import { createLogger, silentLogger } from '../../src/log.js';
import { runCycle } from '../../src/rotate.js';
import { buildRuntime } from '../../src/runtime.js';
import { TestPki } from '../helpers/pki.js';

const root = mkdtempSync('/dev/shm/certd-unit-rotate-targets-');
after(() => rmSync(root, { recursive: true, force: true }));

function loaded(yaml: string): LoadedConfig {
  return { config: parseConfigText(yaml), path: 'test.yaml', resolvePath: (p) => (p.startsWith('/') ? p : join(root, p)) };
}

const fingerprintOf = (dir: string): string => readFileSync(join(dir, 'cert.pem'), 'utf8');

/** The name of a group this process belongs to (root's tests run as root: any group works). */
function someGroup(): string {
  const gid = process.getgid?.() ?? 0;
  const line = readFileSync('/etc/group', 'utf8').split('\n').find((l) => l.split(':')[2] === String(gid));
  return line?.split(':')[0] ?? 'root';
}

// One PKI for the file: making one costs seconds of openssl.
before(() => {
  const pki = new TestPki(join(root, 'pki'));
  pki.publish(pki.leaf('f', { dns: ['f.test'] }), join(root, 'src-f'));
  pki.publish(pki.leaf('web', { dns: ['web.test'] }), join(root, 'src-web'));
});

describe('rotate --now --force', () => {

  const cfg = `state_dir: ${root}/state-force
fips_runtime: off
certificates:
  - name: issued
    source: { type: local-ca, dns_names: [issued.test], ttl: 24h }
    targets: [{ type: tmpfs, dir: ${root}/out/issued }]
  - name: fetched
    source: { type: file, cert: src-f/cert.pem, key: src-f/key.pem, chain: src-f/chain.pem }
    targets: [{ type: tmpfs, dir: ${root}/out/fetched }]
`;

  it("renews an issuer's certificate before it is due and deploys a source's unchanged certificate again", async () => {
    const rt = await buildRuntime(loaded(cfg), { log: silentLogger });
    const first = await runCycle(rt);
    assert.deepEqual(first.certificates.map((c) => c.result), ['deployed', 'deployed'], JSON.stringify(first.certificates.map((c) => c.error)));
    const plain = await runCycle(rt);
    assert.deepEqual(plain.certificates.map((c) => c.result), ['unchanged', 'unchanged']);
    const issuedBefore = fingerprintOf(join(root, 'out/issued'));
    const fetchedLink = readlinkSync(join(root, 'out/fetched/..data'));

    const dry = await runCycle(rt, { force: true, dryRun: true });
    assert.deepEqual(dry.certificates.map((c) => c.result), ['would-deploy', 'would-deploy']);
    assert.equal(fingerprintOf(join(root, 'out/issued')), issuedBefore, 'a dry run changes nothing');

    const forced = await runCycle(rt, { force: true });
    assert.deepEqual(forced.certificates.map((c) => [c.name, c.result]), [['issued', 'deployed'], ['fetched', 'deployed']]);
    assert.notEqual(fingerprintOf(join(root, 'out/issued')), issuedBefore, 'a new certificate (and key) was issued before it was due');
    assert.notEqual(forced.certificates[0]?.fingerprint, first.certificates[0]?.fingerprint);
    assert.equal(forced.certificates[1]?.fingerprint, first.certificates[1]?.fingerprint, 'the source still holds the same certificate');
    assert.notEqual(readlinkSync(join(root, 'out/fetched/..data')), fetchedLink, 'and it was written again');
    assert.match(forced.certificates[1]?.reason ?? '', /forced/);
    assert.deepEqual((await runCycle(rt)).certificates.map((c) => c.result), ['unchanged', 'unchanged'], 'the next plain cycle is quiet again');
    await rt.close();
  });

  it('certd rotate --now --force on the command line', async () => {
    const path = join(root, 'force.yaml');
    writeFileSync(path, cfg.replace(`state_dir: ${root}/state-force`, `state_dir: ${root}/state-force-cli`));
    let out = '';
    const io: Io = { out: (t) => void (out += t), err: () => undefined, env: { CERTD_LOG_LEVEL: 'error' }, isTTY: false };
    assert.equal(await main(['rotate', '--now', '--config', path, '--cert', 'issued', '--json'], io), 0);
    const before = JSON.parse(out) as { certificates: { fingerprint: string; result: string }[] };
    out = '';
    assert.equal(await main(['rotate', '--now', '--config', path, '--cert', 'issued', '--force', '--json'], io), 0);
    const after = JSON.parse(out) as { certificates: { fingerprint: string; result: string }[] };
    assert.equal(after.certificates[0]?.result, 'deployed');
    assert.notEqual(after.certificates[0]?.fingerprint, before.certificates[0]?.fingerprint);
  });
});

describe('a changed target configuration', () => {
  const cfg = (target: string) => `state_dir: ${root}/state-targets
policy: { trust_anchors: ${root}/pki/root.pem }
fips_runtime: off
certificates:
  - name: web
    source: { type: file, cert: src-web/cert.pem, key: src-web/key.pem, chain: src-web/chain.pem }
    targets: [{ type: tmpfs, ${target} }]
`;

  it('a new mode or group deploys again with it; a new dir deploys there and reports the old one', async () => {
    const a = join(root, 'out/web-a');
    let rt = await buildRuntime(loaded(cfg(`dir: ${a}`)), { log: silentLogger });
    assert.equal((await runCycle(rt)).certificates[0]?.result, 'deployed');
    assert.equal(statSync(join(a, 'cert.pem')).mode & 0o777, 0o644);
    assert.equal(statSync(join(a, 'privkey.pem')).mode & 0o777, 0o600);
    const issued = fingerprintOf(a);
    await rt.close();

    rt = await buildRuntime(loaded(cfg(`dir: ${a}, mode: "0640"`)), { log: silentLogger });
    const moded = await runCycle(rt);
    assert.equal(moded.certificates[0]?.result, 'deployed', 'the mode changed: deployed again');
    assert.equal(statSync(join(a, 'cert.pem')).mode & 0o777, 0o640);
    assert.equal(fingerprintOf(a), issued, 'the same certificate, not a new one');
    assert.equal((await runCycle(rt)).certificates[0]?.result, 'unchanged');
    await rt.close();

    const group = someGroup();
    rt = await buildRuntime(loaded(cfg(`dir: ${a}, mode: "0640", group: ${group}`)), { log: silentLogger });
    assert.equal((await runCycle(rt)).certificates[0]?.result, 'deployed', 'the group changed: deployed again');
    assert.equal(statSync(join(a, 'privkey.pem')).mode & 0o777, 0o640, 'the key is group-readable now');
    await rt.close();

    const b = join(root, 'out/web-b');
    const lines: string[] = [];
    rt = await buildRuntime(loaded(cfg(`dir: ${b}, mode: "0640", group: ${group}`)), { log: createLogger({ level: 'warn', format: 'json', write: (l) => void lines.push(l) }) });
    const moved = await runCycle(rt);
    assert.equal(moved.certificates[0]?.result, 'deployed');
    assert.equal(fingerprintOf(b), issued);
    assert.deepEqual(moved.certificates[0]?.leftBehind, [`tmpfs:${a}`], 'the report names the directory certd no longer manages');
    assert.ok(existsSync(join(a, 'privkey.pem')), 'nothing certd no longer manages is deleted behind the server\'s back');
    const warning = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l['step'] === 'targets');
    assert.match(String(warning?.['msg']), new RegExp(`tmpfs:${a} is no longer a target of web.*remove it`));
    const quiet = await runCycle(rt);
    assert.equal(quiet.certificates[0]?.result, 'unchanged');
    assert.equal(quiet.certificates[0]?.leftBehind, undefined, 'reported once, when the target changed');
    await rt.close();
  });
});
