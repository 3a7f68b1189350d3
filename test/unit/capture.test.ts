/**
 * The hygiene check's reach: it searches the run's own scratch directory and the directories
 * tests registered, never every /tmp/certd-* on the machine (a checkout under /tmp/certd-x, or
 * another run's files, are not this run's doing and made the check fail).
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { SCRATCH_ENV, hygieneScanRoots } from '../helpers/capture.js';

describe('hygiene scan roots', () => {
  const capture = mkdtempSync('/dev/shm/certd-capture-test-');
  // A directory under /tmp named like a test scratch directory, holding a "secret", as a
  // checkout at /tmp/certd-checkout/ with the test peers' fake AWS key would.
  const decoy = join('/tmp', `certd-decoy-${process.pid}`);
  mkdirSync(decoy, { recursive: true });
  writeFileSync(join(decoy, 'aws-peer.ts'), 'secretAccessKey: "a-fixed-fake-key"\n');
  after(() => {
    rmSync(capture, { recursive: true, force: true });
    rmSync(decoy, { recursive: true, force: true });
  });

  it('are the run scratch directory and the registered disk directories, and nothing else', () => {
    writeFileSync(join(capture, 'disk-1.txt'), '/var/tmp/certd-registered-a\n');
    writeFileSync(join(capture, 'disk-2.txt'), '/var/tmp/certd-registered-b\n\n');
    const saved = process.env[SCRATCH_ENV];
    process.env[SCRATCH_ENV] = '/tmp/certd-testrun-x';
    try {
      const roots = hygieneScanRoots(capture).sort();
      assert.deepEqual(roots, ['/tmp/certd-testrun-x', '/var/tmp/certd-registered-a', '/var/tmp/certd-registered-b']);
      assert.ok(!roots.some((r) => r.startsWith(decoy)), 'a foreign /tmp/certd-* directory is scanned');
    } finally {
      if (saved === undefined) delete process.env[SCRATCH_ENV];
      else process.env[SCRATCH_ENV] = saved;
    }
  });

  it('the test runner gives every test process the run scratch directory as TMPDIR', () => {
    // Under scripts/run-tests.mjs both are set and equal; run alone, neither is.
    if (process.env[SCRATCH_ENV] === undefined) return;
    assert.equal(process.env['TMPDIR'], process.env[SCRATCH_ENV]);
    assert.match(process.env[SCRATCH_ENV] ?? '', /certd-testrun-/);
  });
});
