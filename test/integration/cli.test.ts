/** The command-line contract of DESIGN.md: exit codes, --json shapes, help. Run as a user would. */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCertd, shmDir, writeConfig } from '../helpers/cli.js';
import { TestPki } from '../helpers/pki.js';

describe('certd command line', () => {
  const scratch = shmDir('cli');
  let pki: TestPki;
  before(() => {
    pki = new TestPki(join(scratch.dir, 'pki'));
  });
  after(() => scratch.cleanup());

  it('--version is fast to answer and names the version', async () => {
    const r = await runCertd(['--version']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^certd \d+\.\d+\.\d+ \(node \d+/);
  });

  it('--help lists every command of DESIGN.md', async () => {
    const r = await runCertd(['--help']);
    assert.equal(r.code, 0);
    for (const c of ['run', 'rotate --now', 'validate', 'status', 'verify', 'fips', 'report', 'audit verify']) assert.ok(r.stdout.includes(c), c);
    const sub = await runCertd(['rotate', '--help']);
    assert.equal(sub.code, 0);
    assert.match(sub.stdout, /--dry-run/);
  });

  it('usage errors exit 2 and say what to do', async () => {
    const unknown = await runCertd(['frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command "frobnicate"/);
    const flag = await runCertd(['validate', '--cert', 'x', '--bogus']);
    assert.equal(flag.code, 2);
    assert.match(flag.stderr, /--bogus/);
    const noNow = await runCertd(['rotate']);
    assert.equal(noNow.code, 2);
    assert.match(noNow.stderr, /--now is required/);
    const noCert = await runCertd(['validate']);
    assert.equal(noCert.code, 2);
  });

  it('a configuration error exits 2 naming the key and line', async () => {
    const cfg = writeConfig(scratch.dir, 'certificates:\n  - name: web\n    sauce: {}\n', 'bad.yaml');
    const r = await runCertd(['rotate', '--now', '--config', cfg]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /certificates\[0\]\.sauce \(line 3\): unknown key/);
    const missing = await runCertd(['status', '--config', join(scratch.dir, 'nope.yaml')]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /no such file/);
  });

  it('validate --json prints the documented shape; 0 passed, 1 rejected', async () => {
    const good = pki.leaf('good', { dns: ['good.test'], keySpec: 'rsa-2048' });
    const ok = await runCertd(['validate', '--cert', good.certPath, '--key', good.keyPath, '--chain', pki.intermediate.certPath, '--trust', pki.root.certPath, '--hostname', 'good.test', '--json']);
    assert.equal(ok.code, 0, ok.stdout);
    const doc = JSON.parse(ok.stdout);
    assert.deepEqual(Object.keys(doc).sort(), ['findings', 'fingerprint', 'notAfter', 'ok']);
    assert.equal(doc.ok, true);
    assert.equal(doc.fingerprint, good.fingerprint);
    assert.ok(!Number.isNaN(Date.parse(doc.notAfter)));

    const wrongHost = await runCertd(['validate', '--cert', good.certPath, '--chain', pki.intermediate.certPath, '--hostname', 'other.test', '--json']);
    assert.equal(wrongHost.code, 1);
    const finding = JSON.parse(wrongHost.stdout).findings.find((f: { rule: string }) => f.rule === 'P-SAN');
    assert.deepEqual(Object.keys(finding).sort(), ['cert', 'message', 'rule', 'severity']);
    assert.equal(finding.severity, 'reject');
    assert.equal(finding.cert, 0);

    const garbage = join(scratch.dir, 'garbage.pem');
    writeFileSync(garbage, 'this is not a certificate\n');
    const bad = await runCertd(['validate', '--cert', garbage, '--json']);
    assert.equal(bad.code, 1);
    assert.equal(JSON.parse(bad.stdout).findings[0].rule, 'P-PARSE');
  });

  it('validate: a missing file is a usage error (2), not a finding', async () => {
    const r = await runCertd(['validate', '--cert', join(scratch.dir, 'absent.pem')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /no such file/);
  });

  it('status --json names what is deployed and never shows key material', async () => {
    const leaf = pki.leaf('st', { dns: ['st.test'] });
    const src = pki.publish(leaf, join(scratch.dir, 'src'));
    const cfg = writeConfig(scratch.dir, `state_dir: ${scratch.dir}/state
policy: { trust_anchors: ${pki.root.certPath} }
certificates:
  - name: st
    source: { type: file, cert: ${src.cert}, key: ${src.key}, chain: ${src.chain} }
    targets: [{ type: tmpfs, dir: ${scratch.dir}/out }]
`, 'st.yaml');
    const before = JSON.parse((await runCertd(['status', '--config', cfg, '--json'])).stdout);
    assert.equal(before.certificates[0].fingerprint, null);
    assert.equal(before.certificates[0].lastResult, null);
    const rot = await runCertd(['rotate', '--now', '--config', cfg, '--json']);
    assert.equal(rot.code, 0, rot.stderr);
    const st = await runCertd(['status', '--config', cfg, '--json']);
    assert.equal(st.code, 0);
    const doc = JSON.parse(st.stdout);
    assert.equal(doc.certificates[0].fingerprint, leaf.fingerprint);
    assert.equal(doc.certificates[0].lastResult, 'deployed');
    for (const out of [st.stdout, st.stderr, rot.stdout, rot.stderr]) assert.ok(!/PRIVATE KEY/.test(out));
  });
});
