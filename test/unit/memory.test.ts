import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { constants } from 'node:perf_hooks';
import { dropWhenIdle, releaseMemorySoon } from '../../src/memory.js';

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

  it('empties the registered caches before it collects', async () => {
    let dropped = 0;
    dropWhenIdle(() => dropped++);
    releaseMemorySoon();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(dropped, 0, 'nothing is dropped while the process may still be busy');
    await new Promise((r) => setTimeout(r, 1200));
    assert.equal(dropped, 1);
  });

  it('gives back the young generation a busy cycle grew and compacts the old one, once the process is quiet', async () => {
    const { spawn } = await import('node:child_process');
    const url = new URL('../../src/memory.js', import.meta.url).href;
    // Long-lived objects with a quarter of them then dropped: old-space pages three-quarters
    // full, which V8 leaves as they are. Then a "cycle": enough short-lived objects for V8 to
    // grow its semi-spaces to their maximum.
    const child = `import { releaseMemorySoon } from '${url}'; import { getHeapSpaceStatistics } from 'node:v8';
      const space = (n) => getHeapSpaceStatistics().find((s) => s.space_name === n);
      const now = () => ({ young: space('new_space').space_size, slack: space('old_space').space_size - space('old_space').space_used_size });
      let old = []; for (let i = 0; i < 300000; i++) old.push({ i, s: 'x' + i });
      gc(); gc();
      old = old.filter((_, i) => i % 4 !== 0);
      let keep = []; for (let i = 0; i < 3e6; i++) { keep.push({ i, s: 'x' + i }); if (keep.length > 1e5) keep = []; }
      keep = null;
      gc();
      const busy = now();
      releaseMemorySoon();
      setTimeout(() => console.log(JSON.stringify({ busy, idle: now(), kept: old.length })), 8000);`;
    const out = await new Promise<string>((resolve, reject) => {
      const p = spawn(process.execPath, ['--expose-gc', '--input-type=module', '-e', child], { stdio: ['ignore', 'pipe', 'inherit'] });
      let text = '';
      p.stdout.on('data', (d: Buffer) => (text += d.toString()));
      p.on('error', reject);
      p.on('close', (code) => (code === 0 ? resolve(text) : reject(new Error(`child exited ${code}`))));
    });
    const { busy, idle, kept } = JSON.parse(out) as { busy: { young: number; slack: number }; idle: { young: number; slack: number }; kept: number };
    const MiB = 1024 * 1024;
    assert.equal(kept, 225000);
    assert.ok(busy.young >= 8 * MiB, `the busy part grew the young generation to ${busy.young / MiB} MiB`);
    assert.ok(idle.young <= 2 * MiB, `young generation once idle: ${idle.young / MiB} MiB (was ${busy.young / MiB} MiB)`);
    assert.ok(busy.slack >= 4 * MiB, `the dropped objects left ${busy.slack / MiB} MiB free inside old-space pages`);
    assert.ok(idle.slack <= busy.slack / 3, `free space inside old-space pages once idle: ${idle.slack / MiB} MiB (was ${busy.slack / MiB} MiB)`);
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
