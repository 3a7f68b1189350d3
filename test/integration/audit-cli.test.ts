/**
 * The audit trail end to end: `certd rotate --now` with audit_log set writes hash-chained
 * records for deployment, reload, rotation and policy refusal; `certd audit verify` accepts the
 * untouched trail and names the record after tampering.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCertd, shmDir, writeConfig } from '../helpers/cli.js';
import { TestPki } from '../helpers/pki.js';

interface Rec { seq: number; event: string; cert?: string; result?: string; fingerprint?: string; rules?: string[] }

describe('certd audit verify over a trail written by certd rotate --now', () => {
  const scratch = shmDir('audit-cli');
  const dir = scratch.dir;
  const source = join(dir, 'source');
  const trail = join(dir, 'log', 'audit.jsonl');
  let pki: TestPki;
  let config: string;
  const fingerprints: string[] = [];

  const records = (): Rec[] => readFileSync(trail, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Rec);

  before(async () => {
    pki = new TestPki(join(dir, 'pki'));
    config = writeConfig(dir, `state_dir: ${join(dir, 'state')}
audit_log: log/audit.jsonl
policy: { trust_anchors: ${pki.root.certPath} }
certificates:
  - name: web
    source: { type: file, cert: ${join(source, 'cert.pem')}, key: ${join(source, 'key.pem')}, chain: ${join(source, 'chain.pem')} }
    targets: [ { type: tmpfs, dir: ${join(dir, 'deploy')} } ]
    reload: { command: ["true"], test: ["true"] }
`);
    for (const name of ['one', 'two']) {
      const leaf = pki.leaf(name, { dns: ['web.certd.test'] });
      pki.publish(leaf, source);
      fingerprints.push(leaf.fingerprint);
      const r = await runCertd(['rotate', '--now', '--config', config]);
      assert.equal(r.code, 0, r.stderr);
    }
    pki.publish(pki.leaf('weak', { dns: ['web.certd.test'], keySpec: 'rsa-1024' }), source);
    const refused = await runCertd(['rotate', '--now', '--config', config]);
    assert.equal(refused.code, 1, refused.stderr);
  });

  after(() => scratch.cleanup());

  it('rotations produce chained records for each step, without key material', () => {
    const recs = records();
    assert.deepEqual(recs.map((r) => r.seq), recs.map((_, i) => i + 1));
    const deployed = recs.filter((r) => r.event === 'rotation' && r.result === 'deployed').map((r) => r.fingerprint);
    assert.deepEqual(deployed, fingerprints);
    assert.equal(recs.filter((r) => r.event === 'deployment' && r.result === 'staged').length, 2);
    assert.equal(recs.filter((r) => r.event === 'reload' && r.result === 'ok').length, 2);
    const refusal = recs.find((r) => r.event === 'policy-refusal');
    assert.ok(refusal?.rules?.includes('P-RSA-MIN'), JSON.stringify(recs));
    assert.equal(recs[recs.length - 1]!.event, 'rotation');
    assert.equal(recs[recs.length - 1]!.result, 'failed');
    assert.doesNotMatch(readFileSync(trail, 'utf8'), /PRIVATE KEY|BEGIN/);
  });

  it('exits 0 for the untouched trail, by --file and by the config', async () => {
    const byFile = await runCertd(['audit', 'verify', '--file', trail]);
    assert.equal(byFile.code, 0, byFile.stderr);
    assert.match(byFile.stdout, new RegExp(`intact, ${records().length} record\\(s\\)`));
    const byConfig = await runCertd(['audit', 'verify', '--config', config, '--json']);
    assert.equal(byConfig.code, 0, byConfig.stderr);
    assert.equal(JSON.parse(byConfig.stdout).ok, true);
  });

  it('exits 1 after tampering and names the record by line and seq', async () => {
    const original = readFileSync(trail, 'utf8');
    try {
      const lines = original.split('\n');
      const i = lines.findIndex((l) => l.includes('"event":"rotation"') && l.includes('"result":"deployed"'));
      assert.ok(i >= 0);
      lines[i] = lines[i]!.replace(fingerprints[0]!, fingerprints[1]!);
      writeFileSync(trail, lines.join('\n'));
      const r = await runCertd(['audit', 'verify', '--file', trail]);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stdout, new RegExp(`BROKEN at line ${i + 1} \\(seq ${i + 1}\\): the record does not match its hash`));
      const j = await runCertd(['audit', 'verify', '--file', trail, '--json']);
      assert.equal(j.code, 1);
      assert.deepEqual(JSON.parse(j.stdout).firstBad, { line: i + 1, seq: i + 1, reason: 'the record does not match its hash: it was edited' });
    } finally {
      writeFileSync(trail, original);
    }
    assert.equal((await runCertd(['audit', 'verify', '--file', trail])).code, 0);
  });

  it('exits 2 without a trail to check', async () => {
    const bare = writeConfig(dir, `state_dir: ${join(dir, 'state2')}\n`, 'bare.yaml');
    const r = await runCertd(['audit', 'verify', '--config', bare]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /sets no audit_log/);
    assert.equal((await runCertd(['audit', 'verify', '--file', join(dir, 'missing.jsonl')])).code, 2);
    assert.equal((await runCertd(['audit', 'verify', '--bogus'])).code, 2);
  });
});
