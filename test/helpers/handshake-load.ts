/**
 * Continuous TLS handshakes from a worker thread: `clients` loops, each making a new connection
 * per handshake (no keep-alive, no session reuse), until stopped. Running them off the test's
 * event loop keeps the load from slowing the certd cycle the test drives in its own thread.
 * Each handshake is recorded with its start and end (epoch milliseconds, comparable across
 * threads) and the leaf's fingerprint, or the error's message.
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { handshake } from './tls.js';

export interface HandshakeRecord {
  start: number;
  end: number;
  fingerprint?: string;
  error?: string;
}

interface LoadOptions {
  port: number;
  servername: string;
  clients: number;
}

/** Epoch milliseconds with sub-millisecond precision, the same clock in every thread. */
export const epochMs = (): number => performance.timeOrigin + performance.now();

export function startHandshakeLoad(o: LoadOptions): { stop(): Promise<HandshakeRecord[]> } {
  const worker = new Worker(new URL(import.meta.url), { workerData: { kind: 'certd-handshake-load', ...o } });
  const done = new Promise<HandshakeRecord[]>((resolve, reject) => {
    worker.once('message', (m: HandshakeRecord[]) => resolve(m));
    worker.once('error', reject);
  });
  return {
    async stop() {
      worker.postMessage('stop');
      const records = await done;
      await worker.terminate();
      return records;
    },
  };
}

const data = workerData as (LoadOptions & { kind?: string }) | undefined;
if (!isMainThread && data?.kind === 'certd-handshake-load') {
  let stopped = false;
  parentPort?.on('message', () => (stopped = true));
  const records: HandshakeRecord[] = [];
  const loop = async (): Promise<void> => {
    while (!stopped) {
      const start = epochMs();
      try {
        const r = await handshake({ port: data.port, servername: data.servername, timeoutMs: 5000 });
        records.push({ start, end: epochMs(), fingerprint: r.fingerprint256 });
      } catch (err) {
        records.push({ start, end: epochMs(), error: (err as Error).message });
      }
    }
  };
  await Promise.all(Array.from({ length: data.clients }, loop));
  parentPort?.postMessage(records);
}
