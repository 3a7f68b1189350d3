import { open } from 'node:fs/promises';
import { CertdError } from './errors.js';

/** Inputs larger than this are refused (P-PARSE): no certificate bundle is a megabyte. */
export const MAX_INPUT_BYTES = 1024 * 1024;

/**
 * Reads a file of certificate or key material, refusing anything over MAX_INPUT_BYTES without
 * reading it all. `doing` names the operation for the error ("reading private key of web").
 */
export async function readInput(path: string, doing: string): Promise<Buffer> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const hint = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied (certd needs read access)' : String(code);
    throw new CertdError('E_SOURCE', `${doing}: ${path}: ${hint}`, { cause: err, permanent: code === 'ENOENT' || code === 'EACCES' });
  }
  try {
    const { size } = await handle.stat();
    if (size > MAX_INPUT_BYTES) {
      throw new CertdError('E_PARSE', `${doing}: ${path} is ${size} bytes; inputs over ${MAX_INPUT_BYTES} bytes are refused (P-PARSE)`, { permanent: true });
    }
    // Sized from stat, not at the limit: a megabyte per read, a few per certificate and cycle,
    // fragments the allocator and the daemon's RSS never comes back down.
    let buf = Buffer.alloc(Math.min(Math.max(size + 1, 16 * 1024), MAX_INPUT_BYTES + 1));
    let total = 0;
    for (;;) {
      if (total === buf.length) {
        // The file grew after stat (or stat gave no size): read on into a larger buffer.
        const larger = Buffer.alloc(Math.min(buf.length * 2, MAX_INPUT_BYTES + 1));
        buf.copy(larger, 0, 0, total);
        buf.fill(0);
        buf = larger;
      }
      const { bytesRead } = await handle.read(buf, total, buf.length - total, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > MAX_INPUT_BYTES) {
        throw new CertdError('E_PARSE', `${doing}: ${path} is over ${MAX_INPUT_BYTES} bytes (P-PARSE)`, { permanent: true });
      }
    }
    const out = Buffer.from(buf.subarray(0, total));
    buf.fill(0);
    return out;
  } finally {
    await handle.close();
  }
}
