/**
 * Every case of the openssl-generated corpus through the real command line: each good case
 * passes `certd validate`, each bad case is refused (or warned) with its expected rule id.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { buildCorpus, type Corpus } from '../fixtures/corpus.js';
import { runCertd, shmDir, writeConfig } from '../helpers/cli.js';

function argsFor(c: Corpus['cases'][number]): { args: string[]; env: NodeJS.ProcessEnv } {
  const args = ['validate', '--cert', c.files.cert, '--json'];
  const env: NodeJS.ProcessEnv = {};
  if (c.files.key) args.push('--key', c.files.key);
  if (c.files.chain) args.push('--chain', c.files.chain);
  if (c.files.root) args.push('--trust', c.files.root);
  for (const h of c.hostnames ?? []) args.push('--hostname', h);
  const p = c.policy ?? {};
  if (p.allowEd25519) args.push('--allow-ed25519');
  if (p.allowSelfSigned) args.push('--allow-self-signed');
  if (p.publicTrust) args.push('--public-trust');
  if (p.minRsaBits) args.push('--min-rsa-bits', String(p.minRsaBits));
  if (p.minRemainingMs !== undefined) args.push('--min-remaining', `${Math.round(p.minRemainingMs / 1000)}s`);
  if (p.renewBeforeMs !== undefined) args.push('--renew-before', `${Math.round(p.renewBeforeMs / 1000)}s`);
  if (c.passphrase !== undefined) {
    args.push('--key-passphrase-env', 'CERTD_TEST_KEY_PASSPHRASE');
    env['CERTD_TEST_KEY_PASSPHRASE'] = c.passphrase;
  }
  return { args, env };
}

describe('certd validate over the corpus', () => {
  let corpus: Corpus;
  before(async () => {
    corpus = await buildCorpus();
  });

  it('covers good cases and one bad case per rule that applies to files', () => {
    const expected = new Set(corpus.cases.map((c) => c.expect));
    for (const rule of ['pass', 'P-RSA-MIN', 'P-RSA-EXP', 'P-SIG-HASH', 'P-EC-CURVE', 'P-EC-EXPLICIT', 'P-DSA', 'P-EDDSA', 'P-SAN', 'P-EKU', 'P-LEAF-BC', 'P-VALID', 'P-KEYMATCH', 'P-CHAIN-ORDER', 'P-CHAIN-CA', 'P-CHAIN-PATHLEN', 'P-SELF-SIGNED', 'P-KEY-PEM', 'P-PARSE', 'P-EXT-CRITICAL', 'P-EXT-DUP', 'P-SAN-SYNTAX', 'P-NAME-CONSTRAINTS', 'P-EC-POINT']) {
      assert.ok(expected.has(rule as never), `no corpus case for ${rule}`);
    }
  });

  it('every case gets its expected verdict and exit code', async () => {
    const failures: string[] = [];
    // Several processes at once: each case is an independent run of the CLI.
    const queue = [...corpus.cases];
    await Promise.all(Array.from({ length: 4 }, async () => {
      for (let c = queue.shift(); c; c = queue.shift()) {
        const { args, env } = argsFor(c);
        const r = await runCertd(args, { env });
        let doc: { ok: boolean; findings: { rule: string; severity: string }[] };
        try {
          doc = JSON.parse(r.stdout);
        } catch {
          failures.push(`${c.name}: no JSON (exit ${r.code}): ${r.stderr.slice(0, 300)}`);
          continue;
        }
        if (c.expect === 'pass') {
          if (r.code !== 0 || doc.findings.some((f) => f.severity === 'reject')) failures.push(`${c.name}: expected pass, got exit ${r.code} ${JSON.stringify(doc.findings)}`);
        } else {
          const hit = doc.findings.find((f) => f.rule === c.expect && f.severity === c.severity);
          if (!hit) failures.push(`${c.name}: expected ${c.expect}/${c.severity}, got ${JSON.stringify(doc.findings.map((f) => `${f.rule}/${f.severity}`))}`);
          const wantExit = doc.findings.some((f) => f.severity === 'reject') ? 1 : 0;
          if (r.code !== wantExit) failures.push(`${c.name}: exit ${r.code}, expected ${wantExit}`);
          if (c.severity === 'reject' && r.code !== 1) failures.push(`${c.name}: a reject must exit 1`);
        }
        if (/PRIVATE KEY-----/.test(r.stdout + r.stderr)) failures.push(`${c.name}: key material in output`);
      }
    }));
    assert.deepEqual(failures, []);
  });
});

describe('hostile certificates are never deployed', () => {
  it('rotate --now refuses each RFC 5280 hostile case by its rule and writes nothing to its target', async () => {
    const corpus = await buildCorpus();
    const hostile = corpus.cases.filter((c) => ['P-EXT-CRITICAL', 'P-EXT-DUP', 'P-SAN-SYNTAX', 'P-NAME-CONSTRAINTS'].includes(c.expect) && c.files.key);
    assert.ok(hostile.length >= 10, `${hostile.length} hostile cases`);
    const scratch = shmDir('hostile');
    try {
      const entries = hostile.map((c) => `  - name: ${c.name}
    source: { type: file, cert: ${c.files.cert}, key: ${c.files.key}, chain: ${c.files.chain} }
    hostnames: [${(c.hostnames ?? []).map((h) => JSON.stringify(h)).join(', ')}]
    targets: [{ type: tmpfs, dir: ${scratch.dir}/out/${c.name} }]`);
      const cfg = writeConfig(scratch.dir, `state_dir: ${scratch.dir}/state
policy: { trust_anchors: ${hostile[0]?.files.root} }
certificates:
${entries.join('\n')}
`);
      const r = await runCertd(['rotate', '--now', '--config', cfg, '--json']);
      assert.equal(r.code, 1, r.stderr);
      const report = JSON.stringify(JSON.parse(r.stdout));
      for (const c of hostile) {
        assert.ok(report.includes(c.expect), `${c.name}: ${c.expect} not in the report`);
        assert.equal(existsSync(join(scratch.dir, 'out', c.name, 'fullchain.pem')), false, `${c.name} was deployed`);
        assert.equal(existsSync(join(scratch.dir, 'out', c.name, 'privkey.pem')), false, `${c.name}: key deployed`);
      }
      const rows = (JSON.parse(r.stdout) as { certificates: { name: string; result: string }[] }).certificates;
      for (const c of hostile) assert.notEqual(rows.find((x) => x.name === c.name)?.result, 'deployed', c.name);
    } finally {
      scratch.cleanup();
    }
  });
});
