/**
 * A new user's first minutes: a fresh clone, the README's first command, and the test command
 * that CI runs being exactly the README's second one.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';

const repo = resolve('.');
const clone = mkdtempSync(join(tmpdir(), 'certd-clone-'));
after(() => rmSync(clone, { recursive: true, force: true }));

describe('a fresh clone', () => {
  it('README names the two set-up commands and .ci/run runs exactly the test one', () => {
    const readme = readFileSync(join(repo, 'README.md'), 'utf8');
    assert.match(readme, /^npm run demo\b/m);
    assert.match(readme, /^npm test\b/m);
    const ci = readFileSync(join(repo, '.ci/run'), 'utf8').split('\n').filter((l) => l.trim() && !l.startsWith('#') && !l.startsWith('set ') && !l.startsWith('cd '));
    assert.deepEqual(ci, ['npm test']);
  });

  it('`npm run demo` deploys the embedded default as written in the README', () => {
    execFileSync('git', ['clone', '--quiet', '--depth', '1', `file://${repo}`, clone]);
    rmSync('/dev/shm/certd-demo', { recursive: true, force: true });
    const r = spawnSync('npm', ['run', 'demo', '--silent'], {
      cwd: clone,
      encoding: 'utf8',
      env: { ...process.env, npm_config_prefer_offline: 'true', npm_config_audit: 'false', npm_config_fund: 'false' },
      timeout: 300_000,
    });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /demo\s+deployed/);
    assert.match(r.stdout, /passes the policy/);
    const key = '/dev/shm/certd-demo/demo/privkey.pem';
    assert.ok(existsSync(key));
    assert.equal(statSync(key).mode & 0o777, 0o600);
    assert.ok(!r.stdout.includes('PRIVATE KEY') && !r.stderr.includes('PRIVATE KEY'));
    rmSync('/dev/shm/certd-demo', { recursive: true, force: true });
  });
});
