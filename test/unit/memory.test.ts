import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { constants } from 'node:perf_hooks';
import { releaseMemorySoon } from '../../src/memory.js';

/** Major (mark-compact) collections seen while `fn` runs. */
async function majorCollections(fn: () => Promise<void>): Promise<number> {
  const seen: PerformanceEntry[] = [];
  const obs = new PerformanceObserver((list) => seen.push(...list.getEntries()));
  obs.observe({ entryTypes: ['gc'] });
  try {
    await fn();
    await new Promise((r) => setTimeout(r, 50)); // entries are delivered asynchronously
  } finally {
    obs.disconnect();
  }
  return seen.filter((e) => ((e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind) === constants.NODE_PERFORMANCE_GC_MAJOR).length;
}

describe('releaseMemorySoon', () => {
  it('runs a full collection once the process has been quiet for a second, shared by the calls made before', async () => {
    const early = await majorCollections(async () => {
      for (let i = 0; i < 5; i++) releaseMemorySoon();
      await new Promise((r) => setTimeout(r, 600));
    });
    const settled = await majorCollections(() => new Promise((r) => setTimeout(r, 900)));
    // V8 may add a collection of its own; five requests must not become five collections.
    assert.ok(settled >= 1 && settled < 5, `full collections once the process was quiet: ${settled}`);
    assert.ok(early < 5, `collections while requests kept coming: ${early}`);
  });

  it('does not keep the process alive (the timer is unref\'d)', async () => {
    const { spawnSync } = await import('node:child_process');
    const url = new URL('../../src/memory.js', import.meta.url).href;
    const child = `import { releaseMemorySoon } from '${url}'; releaseMemorySoon(); const asked = performance.now(); process.on('exit', () => console.log(Math.round(performance.now() - asked)));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', child], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const lingered = Number(r.stdout.trim());
    assert.ok(lingered >= 0 && lingered < 500, `the process exited ${lingered} ms after asking (the collection waits 1,000 ms)`);
  });
});
