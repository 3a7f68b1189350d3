/**
 * What a user sees of bin/certd's output streams: a reader that goes away (`| head`), the log
 * settings of the environment, and the FIPS warning on a host that is not FIPS.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, describe, it } from 'node:test';
import { CERTD, runCertd, shmDir, writeConfig } from '../helpers/cli.js';
import { captureOutput } from '../helpers/capture.js';

const scratch = shmDir('cli-output');
after(() => scratch.cleanup());

const config = writeConfig(
  scratch.dir,
  `state_dir: ${scratch.dir}/state
fips_runtime: auto
log: { level: error, format: json }
certificates:
${['a', 'b', 'c'].map((n) => `  - name: ${n}
    source: { type: local-ca, dns_names: [${n}.certd.test], ttl: 24h }
    targets: [{ type: tmpfs, dir: ${scratch.dir}/out/${n} }]`).join('\n')}
`,
);

describe('certd output streams', () => {
  it('a closed stdout (certd ... | head) ends quietly: no EPIPE, no stack trace', async () => {
    // The reader is gone before certd writes anything, as `| head -0` or a quick `| head -1` does.
    const child = spawn(process.execPath, [CERTD, 'status', '--json', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CERTD_LOG_FORMAT: 'json' } });
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
    captureOutput('certd status | head stderr', stderr);
    assert.doesNotMatch(stderr, /EPIPE|Unhandled 'error' event|\n {4}at /, stderr);
    assert.equal(stderr, '');
    assert.equal(code, 0);
  });

  it('CERTD_LOG_LEVEL and CERTD_LOG_FORMAT override the config; the FIPS warning is one short line in text', async () => {
    const r = await runCertd(['rotate', '--now'], { env: { CERTD_CONFIG: config, CERTD_LOG_LEVEL: 'info', CERTD_LOG_FORMAT: 'text' } });
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.ok(lines.every((l) => !l.startsWith('{')), 'text lines, not the config\'s JSON');
    assert.ok(lines.some((l) => / INFO {2}staged /.test(l)), 'info lines, not only the config\'s errors');
    const fips = lines.filter((l) => /FIPS/.test(l));
    if (fips.some((l) => /probe passed/.test(l))) return; // a FIPS host: nothing to warn about
    assert.equal(fips.length, 1, fips.join('\n'));
    assert.ok(fips[0]!.length <= 200, `the warning is one readable line, not ${fips[0]!.length} characters:\n${fips[0]}`);
    assert.match(fips[0]!, /WARN .*not FIPS.*certd fips/);
  });
});
