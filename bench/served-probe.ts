/**
 * The handshake loop of scenario 3, in a process of its own so that its TLS work does not slow
 * the AWS and NGINX Plus peers that certd talks to in the benchmark's process. Over IPC:
 *   <- {id, port, servername, fingerprint, timeoutMs}
 *   -> {id, at}        epoch ms (sub-ms) when the first handshake presenting `fingerprint` ended
 *   -> {id, error}
 */
import { handshake } from '../test/helpers/tls.js';

const epochNow = (): number => performance.timeOrigin + performance.now();

process.on('message', (m: { id: number; port: number; servername: string; fingerprint: string; timeoutMs: number }) => {
  void (async () => {
    const deadline = epochNow() + m.timeoutMs;
    for (;;) {
      try {
        const r = await handshake({ port: m.port, servername: m.servername, timeoutMs: 5000 });
        if (r.fingerprint256 === m.fingerprint) {
          process.send?.({ id: m.id, at: epochNow() });
          return;
        }
      } catch {
        // a worker restarting mid-handshake: try again
      }
      if (epochNow() > deadline) {
        process.send?.({ id: m.id, error: `${m.servername} on port ${m.port} did not serve the new certificate within ${m.timeoutMs} ms` });
        return;
      }
    }
  })();
});
process.on('disconnect', () => process.exit(0));
