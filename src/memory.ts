/**
 * Giving memory back between cycles. A cycle over a large fleet allocates tens of megabytes that
 * are garbage once it ends; an idle daemon allocates next to nothing, so V8 has no reason to run
 * the full collection that frees them, and buffers (external memory, malloc'd) that died with
 * the cycle stay resident until the next one. Two collections after a cycle give them back:
 *
 * 1. A second after the cycle: frees the cycle's garbage and the buffers it held.
 * 2. Some seconds later: gives back the young generation. A cycle grows V8's semi-spaces to their
 *    maximum (2 x 16 MiB on Node 20, more on Node 24) and V8 keeps them at that size. It shrinks
 *    them after a collection only when the allocation rate it measured over the last five seconds
 *    is low and not zero (Heap::ReduceNewSpaceSize), which an idle daemon never tells it: it
 *    allocates nothing, so the rate reads zero, and no collection comes anyway. So this one waits
 *    out that window, allocates a few kilobytes, and collects, compacting the old generation
 *    (a cycle leaves its pages a quarter empty; V8 would leave them so).
 *
 * Measured with 1,000 certificates (bench/footprint.ts, Node 20): idle RSS 134-140 MiB with
 * neither, 125-135 with the first, 95-100 with both, 90-94 with the compaction.
 *
 * Node has no API for a full collection without `--expose-gc` on the command line, which a
 * systemd unit or an ECS task should not have to carry: the flag is set at run time and the
 * function taken from a fresh context, as test runners measuring leaks do. When that is not
 * possible nothing happens (V8 still collects on its own schedule).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** After the last request, how long to wait before collecting (cycles of in-process daemons coalesce). */
const SETTLE_MS = 1000;
/** After that collection, how long until the young generation is given back (V8's window is 5 s). */
const SHRINK_AFTER_MS = 6000;

type Collect = () => void;

let collect: Collect | null | undefined;
let timer: NodeJS.Timeout | undefined;
const dropHooks: (() => void)[] = [];

function collector(): Collect | null {
  if (collect === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      const gc: unknown = runInNewContext('gc');
      collect = typeof gc === 'function' ? (gc as Collect) : null;
    } catch {
      collect = null;
    }
  }
  return collect;
}

/**
 * Registers a cache to empty before the first collection (caches that only help within a cycle,
 * such as decoded certificates).
 */
export function dropWhenIdle(drop: () => void): void {
  dropHooks.push(drop);
}

/**
 * Runs `fn` with V8 moving live objects out of sparse old-space pages in every full collection
 * (it otherwise compacts only when it judges fragmentation worth the pause). Off again after.
 */
function compacting(fn: () => void): void {
  try {
    setFlagsFromString('--compact-on-every-full-gc');
  } catch {
    // not this V8: collect without it
  }
  try {
    fn();
  } finally {
    try {
      setFlagsFromString('--no-compact-on-every-full-gc');
    } catch {
      // as above
    }
  }
}

/** A few kilobytes of short-lived objects: a non-zero allocation rate for V8 to measure. */
function allocateALittle(): number {
  let made: { n: number }[] = [];
  for (let n = 0; n < 4096; n++) made.push({ n });
  const count = made.length;
  made = [];
  return count;
}

/**
 * Asks for the two collections once the process has been quiet for a moment. Calls within that
 * moment (several daemons in one process, a burst of cycles) share them; a call between the two
 * starts over. Never keeps the process alive.
 */
export function releaseMemorySoon(): void {
  if (timer) clearTimeout(timer);
  timer = setTimeout(() => {
    for (const drop of dropHooks) drop();
    collector()?.();
    timer = setTimeout(() => {
      timer = undefined;
      if (allocateALittle() > 0) compacting(() => collector()?.());
    }, SHRINK_AFTER_MS);
    timer.unref();
  }, SETTLE_MS);
  timer.unref();
}
