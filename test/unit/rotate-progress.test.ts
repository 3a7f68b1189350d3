/** Progress of `certd rotate --now`: shown to a human on a terminal, never in --json or piped output. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { progressReporter } from '../../src/commands/rotate.js';

function io(isTTY: boolean): { isTTY: boolean; err: (t: string) => void; written: string[] } {
  const written: string[] = [];
  return { isTTY, err: (t) => void written.push(t), written };
}

describe('rotate --now progress', () => {
  it('is shown on a TTY for several certificates, on stderr', () => {
    const tty = io(true);
    const report = progressReporter(tty, false, 3);
    assert.ok(report);
    report(1, 3);
    report(3, 3);
    assert.deepEqual(tty.written, ['\r1/3 certificates checked', '\r3/3 certificates checked']);
  });

  it('is not shown with --json, when piped, or for one certificate', () => {
    assert.equal(progressReporter(io(true), true, 3), undefined, '--json');
    assert.equal(progressReporter(io(false), false, 3), undefined, 'piped');
    assert.equal(progressReporter(io(true), false, 1), undefined, 'one certificate');
  });
});
